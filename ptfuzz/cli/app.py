"""The ptfuzz Typer app, and how its help is laid out. Every command module registers on it (`from .app import
app`); this module imports none of them."""
import inspect

import typer
from rich.markup import escape

app = typer.Typer(
    name="ptfuzz",
    help="""Replay and fuzz operation traces against a model of Linux page-table management.

    Examples:
      ptfuzz fuzz --arch s390 --time 60 --known corpus/regressions
      ptfuzz replay corpus/regressions/s390/gmap-dangling-m1.msgpack --steps
      ptfuzz show corpus/regressions/s390/gmap-dangling-m1.msgpack -o m1.html

    Every command has --help with examples, and --json for scripts.
    """,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Keeps the app a group of commands when only one of them is registered (_register)."""


def help_text(doc: str | None) -> str | None:
    """A command's help as --help shows it: the summary, then the examples, then the rest. Typer's rich help
    keeps a docstring's line breaks, so each prose paragraph becomes one line (the terminal wraps it); the
    examples (paragraphs of `ptfuzz ...` lines, after "Examples:") become one per line, two spaces in (the
    markup in front keeps Typer from taking the indent away) and not dimmed as the prose is."""
    if not isinstance(doc, str):
        return doc
    paras = [p for p in inspect.cleandoc(doc).split("\n\n") if p.strip()]
    summary = " ".join(line.strip() for line in paras[0].splitlines())
    examples, prose = [], []
    for para in paras[1:]:
        lines = [line.strip() for line in para.splitlines()]
        head, colon, rest = lines[0].partition(":")
        if colon and head in ("Example", "Examples"):
            lines = [rest.strip(), *lines[1:]]
        elif not all(line.startswith("ptfuzz ") for line in lines):
            prose.append(" ".join(lines))
            continue
        examples += [line for line in lines if line]
    shown = [f"[not dim]  {escape(e)}[/not dim]" for e in examples]
    parts = [summary] + (["Examples:\n" + "\n".join(shown)] if examples else []) + prose
    return "\n\n".join(parts)


def lay_out_help(t: typer.Typer) -> None:
    t.info.help = help_text(t.info.help)
    for c in t.registered_commands:
        c.help = help_text(c.help or inspect.getdoc(c.callback))
    for g in t.registered_groups:
        lay_out_help(g.typer_instance)
