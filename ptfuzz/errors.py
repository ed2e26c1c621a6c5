"""The exception hierarchy: every error a user can cause, turned into one line and exit 2 by the CLI."""


class PtfuzzError(Exception):
    """Bad input or usage: the CLI prints str(self) on one line and exits 2."""

    exit_code = 2


class UsageError(PtfuzzError):
    """A command-line value is wrong (unknown knob, bad arch, ...)."""


class TraceError(PtfuzzError):
    """A trace file is malformed: names the file, the key or operation index, and the problem."""

    def __init__(self, path, where, what):
        self.path, self.where, self.what = str(path), where, what
        prefix = f"{self.path}: {where}: " if where else f"{self.path}: "
        super().__init__(prefix + what)


class ElfError(PtfuzzError):
    """A file is not a readable ELF image."""

    def __init__(self, path, what):
        self.path, self.what = str(path), what
        super().__init__(f"{path}: {what}")

