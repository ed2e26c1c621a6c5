"""ptfuzz show: a trace and its finding as one self-contained HTML page with the page-table trees drawn."""
from pathlib import Path

import typer

from .. import trace as tracemod
from ..errors import UsageError
from ..report.ci import check_writable
from ..report.show import build_report, build_svg
from ..trace import atomic_write
from .app import app
from .common import parse_knobs


@app.command()
def show(
    trace: Path = typer.Argument(..., help="The trace file to draw."),
    output: Path = typer.Option(None, "-o", "--output", help="Where to write the HTML (default: TRACE.html "
                                "beside the trace); a name ending in .svg gets the picture alone, as one SVG."),
    knob: list[str] = typer.Option(None, "--knob", help="Override a knob: NAME=VALUE (repeatable)."),
    op: int = typer.Option(None, "--op", help="Draw the page tables before and after this operation (0-based) "
                           "instead of the violating one; for a clean trace the default is the end state."),
):
    """Draw a trace's page tables around its violation: an HTML report, or with -o FILE.svg the picture alone.

    The report (no scripts, no network) has the trace with each operation's result, events and kernel path,
    and for the violating operation the page-table trees before and after it, drawn as SVG: the host mm's
    levels (folded ones as pass-throughs), the gmap or stage 2 beside it, s390 fragment pages, deposits and
    tables waiting for RCU, the offending table or entry in red.

    -o FILE.svg writes only the picture of the state after that operation, with the finding as its heading
    (docs/m1.svg is one: `make figures`); --op N-1 gives the state before operation N.

    Examples:

      ptfuzz show corpus/regressions/s390/gmap-dangling-u4.msgpack -o gmap.html

      ptfuzz show corpus/regressions/s390/gmap-dangling-m1.msgpack -o m1.svg

      ptfuzz show corpus/regressions/arm64/stage2-stale-u9.msgpack

      ptfuzz show t.msgpack --knob mm.table_free=rcu --op 5
    """
    if not trace.is_file():
        raise UsageError(f"{trace}: no such file")
    t = tracemod.load(trace)
    knobs = parse_knobs(t.arch, knob)
    out = output or trace.with_suffix(".html")
    check_writable("-o", out)
    try:
        build = build_svg if out.suffix.lower() == ".svg" else build_report
        page = build(t, knobs, op, title=trace.name)
    except ValueError as exc:
        raise UsageError(f"{trace}: {exc}") from None
    atomic_write(out, page.encode())
    typer.echo(f"{out}")
