"""ptfuzz replay: run trace files and check their expectations."""
import shlex
import sys
import time
from collections import deque
from pathlib import Path

import typer
from rich.console import Console

from .. import releases
from .. import trace as tracemod
from ..engine import replay as run_replay
from ..report.render import human_report, json_record, steps_lines, summary_table
from ..report.ci import check_writable, replay_case, replay_result, write_junit, write_sarif
from .app import app
from .common import KERNEL_VERSION_HELP, parse_knobs, print_json, release_trace_knobs, trace_files

@app.command()
def replay(
    paths: list[Path] = typer.Argument(..., help="Trace files or directories (every *.msgpack under them)."),
    knob: list[str] = typer.Option(None, "--knob", help="Override a knob: NAME=VALUE (repeatable)."),
    kernel_version: str = typer.Option(None, "--kernel-version", help=KERNEL_VERSION_HELP + " Knobs the trace "
                                       "sets give way to the release's values."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per trace on stdout."),
    steps: bool = typer.Option(False, "--steps", help="Print every operation, its result and what it changed "
                               "(with --json: a steps list per trace)."),
    no_teardown: bool = typer.Option(False, "--no-teardown", help="Skip teardown and the leak audit."),
    junit: Path = typer.Option(None, "--junit", help="Also write a JUnit XML report: a testcase per trace."),
    sarif: Path = typer.Option(None, "--sarif", help="Also write SARIF 2.1.0: a result per trace that did not "
                               "match its expect (code scanning)."),
):
    """Replay traces; exit 0 iff every trace matched its expect.

    Examples:

      ptfuzz replay corpus/

      ptfuzz replay corpus/regressions/s390/uaf-table-u1.msgpack --steps

      ptfuzz replay t.msgpack --knob mm.table_free=immediate --json

      ptfuzz replay corpus/ --junit replay.xml --sarif replay.sarif

      ptfuzz replay corpus/regressions/s390/gmap-dangling-m1.msgpack --kernel-version 6.6.60 --json
    """
    if kernel_version is not None:
        kernel_version = releases.check_version(kernel_version)
    for option, path in (("--junit", junit), ("--sarif", sarif)):
        if path is not None:
            check_writable(option, path)
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    files = trace_files(paths)
    # Validate everything before running anything; a packed trace's operations stay in its file (checked
    # here a chunk at a time, run a chunk at a time), so memory does not grow with the trace.
    traces = deque((f, tracemod.load(f, stream=True)) for f in files)
    rows, cases, findings, all_ok = [], [], [], True
    presets = {}  # --kernel-version: one per arch
    started = time.perf_counter()
    while traces:
        path, trace = traces.popleft()  # whatever a report maps of it goes when the next one starts
        if kernel_version is None:
            knobs = parse_knobs(trace.arch, knob)
        else:
            knobs = release_trace_knobs(path, trace, knob, kernel_version, presets)
        t0 = time.perf_counter()
        result = run_replay(trace, knobs, steps=steps, teardown=not no_teardown)
        seconds = time.perf_counter() - t0
        ok = result.matches(trace)
        all_ok &= ok
        if junit is not None:
            cases.append(replay_case(path, trace, result, seconds, steps_lines(trace, result) if steps else None))
        if sarif is not None and not ok:
            findings.append(replay_result(path, trace, result, knobs))
        if json_out:
            rec = json_record(path, trace, result, steps=steps)
            if kernel_version is not None:
                rec["kernel_version"] = kernel_version
            print_json(rec)
            continue
        if steps:
            for line in steps_lines(trace, result):
                console.print(line, markup=False)
        human_report(console, path, trace, result)
        rows.append((path, trace.arch, result.ops, result.verdict.value, trace.expected_kind() or "clean", ok))
    if junit is not None:
        write_junit(junit, "ptfuzz replay", cases, time.perf_counter() - started)
    if sarif is not None:
        write_sarif(sarif, findings, shlex.join(["ptfuzz", *sys.argv[1:]]))
    if not json_out and len(rows) > 1:
        console.print(summary_table(rows))
    raise typer.Exit(0 if all_ok else 1)
