"""ptfuzz trace: show, convert and validate trace files."""
import json
from pathlib import Path

import typer
from rich.console import Console

from .. import trace as tracemod
from ..errors import TraceError
from ..trace import op_text
from .app import app
from .common import print_json

trace_app = typer.Typer(help="""Show, convert (msgpack <-> JSON) and validate trace files.

    Examples:
      ptfuzz trace show corpus/regressions/s390/gmap-dangling-m1.msgpack
      ptfuzz trace to-json t.msgpack -o t.json
      ptfuzz trace from-json t.json -o t.msgpack
    """, no_args_is_help=True)
app.add_typer(trace_app, name="trace")


@trace_app.command("show")
def show(paths: list[Path] = typer.Argument(..., help="Trace files.")):
    """Human view: header, knobs, expectation and every operation.

    Example: ptfuzz trace show corpus/seeds/s390/exec-pgste-restart.msgpack
    """
    console = Console(highlight=False, soft_wrap=True)
    for p in paths:
        t = tracemod.load(p)
        console.print(f"{p}: arch {t.arch}, {len(t.ops)} ops ({'packed' if t.packed else 'list'} form)", markup=False)
        for label, value in (("config", t.config), ("knobs", t.knobs), ("expect", t.expect), ("meta", t.meta)):
            if value:
                console.print(f"  {label}: {json.dumps(value, default=str)}", markup=False)
        for i, b in enumerate(t.elfs):
            console.print(f"  elfs[{i}]: {len(b)} bytes", markup=False)
        for i, row in enumerate(t.ops):
            console.print(f"  [{i:4d}] {op_text(row)}", markup=False)


@trace_app.command("to-json")
def to_json(path: Path = typer.Argument(..., help="A trace file."),
            output: Path = typer.Option(None, "-o", "--output", help="Write here instead of stdout.")):
    """Lossless JSON view of a trace (ELF images as base64).

    Example: ptfuzz trace to-json t.msgpack -o t.json
    """
    doc = tracemod.to_json_doc(tracemod.load(path))
    text = json.dumps(doc, indent=1) + "\n"
    if output:
        tracemod.atomic_write(output, text.encode())
    else:
        typer.echo(text, nl=False)


@trace_app.command("from-json")
def from_json(path: Path = typer.Argument(..., help="A JSON trace."),
              output: Path = typer.Option(..., "-o", "--output", help="The msgpack file to write."),
              packed: bool = typer.Option(False, "--packed", help="Store the operations in packed form.")):
    """Convert the JSON view back to msgpack, validating it on the way.

    Example: ptfuzz trace from-json t.json -o t.msgpack --packed
    """
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise TraceError(path, "", exc.strerror or str(exc)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TraceError(path, "", f"not JSON ({exc})") from None
    t = tracemod.from_json_doc(doc, path)
    tracemod.save(t, output, packed=packed)


@trace_app.command("validate")
def validate(paths: list[Path] = typer.Argument(..., help="Trace files."),
             json_out: bool = typer.Option(False, "--json", help="One JSON object per file.")):
    """Validate only; exit 2 on the first malformed file.

    Example: ptfuzz trace validate corpus/seeds/s390/*.msgpack
    """
    for p in paths:
        t = tracemod.load(p)
        if json_out:
            print_json({"trace": str(p), "valid": True, "arch": t.arch, "ops": len(t.ops)})
        else:
            typer.echo(f"{p}: ok ({t.arch}, {len(t.ops)} ops)")
