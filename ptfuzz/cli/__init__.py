"""The ptfuzz command line: registers the command modules on the Typer app (cli/app.py) and runs it; errors
become one line and an exit code here, and only here."""
import importlib
import importlib.util
import sys

import typer

from ..errors import PtfuzzError
from ..procs import restore_interrupts
from .app import app, lay_out_help

__all__ = ["app", "main"]


def _names() -> set:
    return {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands} | {
        g.name for g in app.registered_groups}


def _register(argv: list[str]) -> None:
    """Import the module of the command being run (ptfuzz/cli/NAME.py registering NAME), or every module when
    that is not it (help, a typo, a command named otherwise): a replay then pays neither the time nor the
    memory of modules it does not use (about 0.1 s and 10 MiB, B1 and B5)."""
    name = next((a for a in argv if not a.startswith("-")), "")
    if name.isidentifier() and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        importlib.import_module(f"{__name__}.{name}")
        if name in _names():
            return
    from . import check, crosscheck, elf, fuzz, gen, geometry, kernels, knobs, minimize, replay, repro_c, show, trace, variants  # noqa: F401


def main() -> None:
    restore_interrupts()
    _register(sys.argv[1:])
    lay_out_help(app)
    try:
        rc = app(standalone_mode=False)
    except PtfuzzError as exc:
        print(f"ptfuzz: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("ptfuzz: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("ptfuzz: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        # Typer's (vendored click) usage errors carry their own message; anything else is a bug in ptfuzz.
        if callable(getattr(exc, "format_message", None)):
            message = exc.format_message()
            if message:  # no_args_is_help has already printed the help
                print(f"ptfuzz: {message}", file=sys.stderr)
            sys.exit(2)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)
