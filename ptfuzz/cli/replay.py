"""ptfuzz replay: run trace files and check their expectations."""
import sys
from pathlib import Path

import typer
from rich.console import Console

from .. import trace as tracemod
from ..engine import replay as run_replay
from ..render import human_report, json_record, steps_lines, summary_table
from . import app
from .common import parse_knobs, print_json, trace_files


@app.command()
def replay(
    paths: list[Path] = typer.Argument(..., help="Trace files or directories (every *.msgpack under them)."),
    knob: list[str] = typer.Option(None, "--knob", help="Override a knob: NAME=VALUE (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per trace on stdout."),
    steps: bool = typer.Option(False, "--steps", help="Print every operation, its result and what it changed."),
    no_teardown: bool = typer.Option(False, "--no-teardown", help="Skip teardown and the leak audit."),
):
    """Replay traces; exit 0 iff every trace matched its expect.

    Examples:

      ptfuzz replay corpus/

      ptfuzz replay corpus/regressions/s390/uaf-table-u1.msgpack --steps

      ptfuzz replay t.msgpack --knob mm.table_free=immediate --json
    """
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    files = trace_files(paths)
    traces = [(f, tracemod.load(f)) for f in files]  # validate everything before running anything
    rows, all_ok = [], True
    for path, trace in traces:
        knobs = parse_knobs(trace.arch, knob)
        result = run_replay(trace, knobs, steps=steps, teardown=not no_teardown)
        ok = result.matches(trace)
        all_ok &= ok
        if json_out:
            print_json(json_record(path, trace, result))
            continue
        if steps:
            for line in steps_lines(trace, result):
                console.print(line, markup=False)
        human_report(console, path, trace, result)
        rows.append((path, trace.arch, result.ops, result.verdict.value, trace.expected_kind() or "clean", ok))
    if not json_out and len(rows) > 1:
        console.print(summary_table(rows))
    raise typer.Exit(0 if all_ok else 1)
