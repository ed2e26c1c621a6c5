"""How ptfuzz starts Python children: always with the same ptfuzz package as the parent, wherever the user stands."""
import os
import signal
import sys
from pathlib import Path

# The directory that holds the ptfuzz package this process imported: site-packages for an installed
# package, the checkout for an editable one, build/asan under `make asan`.
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)

# `python -m MODULE` puts the current directory first on sys.path, so a user standing in a checkout
# would get the source tree (without its built engine) instead of the installed package. The child
# replaces that entry by the parent's package root before anything is imported.
_BOOT = "import sys, runpy; sys.path[0] = {root!r}; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"


def module_command(module: str, *args: str) -> list[str]:
    """argv that runs `python -m MODULE ARGS...` in a child importing the same ptfuzz as this process."""
    return [sys.executable, "-c", _BOOT.format(root=PACKAGE_ROOT, module=module), *map(str, args)]


def ptfuzz_command(*args: str) -> list[str]:
    """argv that runs the ptfuzz CLI in a child process."""
    return module_command("ptfuzz", *args)


def restore_interrupts() -> None:
    """Make Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt, even when SIGINT was inherited as ignored.

    A process started in the background by a non-interactive shell (`make test &`, some CI runners)
    inherits SIGINT as SIG_IGN, and CPython then installs no handler: SIGINT would be silently lost.
    A campaign is stopped by a signal by design, so ptfuzz always takes both.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _term)


def _term(signum, frame):
    raise KeyboardInterrupt


class deferred_interrupts:
    """A block that a signal must not cut in half (filing a finding, stopping workers): a SIGINT or
    SIGTERM that arrives inside it is held and raised as KeyboardInterrupt when the block ends."""

    def __enter__(self):
        self.pending = None
        self.saved = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.saved[sig] = signal.signal(sig, self._hold)
            except ValueError:  # not the main thread: nothing to defer
                pass
        return self

    def _hold(self, signum, frame):
        self.pending = signum

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        if self.pending is not None and exc[0] is None:
            # Deliver it now as if it had just arrived: an enclosing block holds it again, ptfuzz's own
            # handlers raise KeyboardInterrupt, a default disposition takes its default action.
            handler = self.saved.get(self.pending, signal.SIG_DFL)
            if callable(handler):
                handler(self.pending, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), self.pending)
        return False
