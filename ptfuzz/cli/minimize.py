"""ptfuzz minimize: shrink a violating trace to a 1-minimal one with the same violation kind."""
from pathlib import Path

import typer
from rich.console import Console

from .. import trace as tracemod
from ..errors import UsageError
from ..search.minimize import minimize as run_minimize
from ..trace import op_text
from .app import app
from .common import parse_knobs, print_json


@app.command()
def minimize(trace: Path = typer.Argument(..., help="A trace that shows a violation."),
             output: Path = typer.Option(None, "-o", "--output", help="Where to write (default: TRACE.min.msgpack)."),
             knob: list[str] = typer.Option(None, "--knob", help="Override a knob: NAME=VALUE."),
             json_out: bool = typer.Option(False, "--json", help="JSON summary on stdout.")):
    """Remove operations, then simplify arguments, keeping the violation kind.

    Example: ptfuzz minimize findings.msgpack -o small.msgpack
    """
    t = tracemod.load(trace)
    knobs = parse_knobs(t.arch, knob)
    try:
        small, st = run_minimize(t, knobs)
    except ValueError as exc:
        raise UsageError(f"{trace}: {exc}") from None
    out = output or trace.with_suffix(".min.msgpack")
    tracemod.save(small, out)
    if json_out:
        print_json({"trace": str(trace), "output": str(out), "kind": small.expect["kind"],
                    "ops_before": st.ops_before, "ops_after": st.ops_after, "replays": st.replays,
                    "seconds": round(st.seconds, 3), "one_minimal": st.one_minimal})
        return
    c = Console(highlight=False, soft_wrap=True)
    c.print(f"{trace}: {st.ops_before} -> {st.ops_after} ops ({small.expect['kind']}), "
            f"{st.replays} replays, {st.seconds:.2f}s, written to {out}")
    for i, row in enumerate(small.ops):
        c.print(f"  [{i}] {op_text(row)}", markup=False)
