"""The ptfuzz command line: one Typer app; errors become one line and an exit code here, and only here."""
import sys

import typer

from ..errors import PtfuzzError
from ..procs import restore_interrupts

app = typer.Typer(
    name="ptfuzz",
    help="Replay and fuzz operation traces against a model of Linux page-table management.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from . import (check, crosscheck, elf, fuzz, gen, geometry, knobs, minimize, replay, show,  # noqa: F401
                   trace, variants)


def main() -> None:
    restore_interrupts()
    _register()
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
