"""ptfuzz knobs: the design variants the engine models."""
import sys
import typer
from rich.console import Console
from rich.table import Table

from ..names import KNOBS
from ..releases import boundaries, boundary_text
from ..zoo import BY_KNOB, fix_text
from .app import app
from .common import check_arch, print_json


@app.command()
def knobs(arch: str = typer.Option(None, "--arch", help="Only knobs that apply to this arch."),
          json_out: bool = typer.Option(False, "--json", help="A JSON list of knobs.")):
    """Every knob with its values, default (v6.6), arches, releases that changed it, the fix it undoes, description.

    Examples:

      ptfuzz knobs --arch s390

      ptfuzz knobs --json
    """
    if arch:
        check_arch(arch)
    rows = [k for k in KNOBS if arch is None or arch in k.arches]
    if json_out:
        print_json([{"name": k.name, "values": list(k.values),
                     "default": k.default(arch) if arch else {a: k.default(a) for a in k.arches},
                     "arches": k.arches, "releases": boundaries(k.name),
                     "fixes": [{"bug": b.id, "value": b.value, "commit": b.commit, "subject": b.subject,
                                "fixed": b.fixed} for b in BY_KNOB.get(k.name, ())],
                     "description": k.description}
                    for k in rows])
        return
    table = Table(title="knobs")
    for col in ("name", "values", "default", "arches", "releases", "fixes", "description"):
        table.add_column(col, overflow="fold")
    for k in rows:
        defaults = {k.default(a) for a in k.arches}
        default = k.default(arch) if arch else (defaults.pop() if len(defaults) == 1 else
                                                 ", ".join(f"{a}: {k.default(a)}" for a in k.arches))
        table.add_row(k.name, " | ".join(k.values), default, ", ".join(k.arches), boundary_text(k.name) or "-",
                      fix_text(k.name) or "-", k.description)
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160).print(table)
