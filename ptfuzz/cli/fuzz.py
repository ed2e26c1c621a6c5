"""ptfuzz fuzz: a fuzz campaign against one arch and a set of knobs."""
import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from .. import releases
from ..errors import UsageError
from ..search.campaign import ENGINES, Campaign, native_engine_so, run_campaign
from ..report.ci import check_writable, finding_result, write_sarif
from ..trace import op_text
from .app import app
from .common import KERNEL_VERSION_HELP, check_arch, preset_knobs, print_json, trace_files


def replay_command(path: Path) -> str:
    """The command that replays a filed finding step by step (its knobs are in the file)."""
    return f"ptfuzz replay {shlex.quote(str(path))} --steps"


def show_command(path: Path) -> str:
    """The command that draws a finding's page tables (ptfuzz show), into NAME.html in this directory."""
    return f"ptfuzz show {shlex.quote(str(path))} -o {shlex.quote(Path(path).with_suffix('.html').name)}"


def on_record_fields(k) -> dict:
    """A finding on record that the campaign met (fuzz.Known), as --json reports it and the summary prints it."""
    return {"kind": k.kind, "op": k.op, "path": str(k.path), "message": k.message,
            "replay": replay_command(k.path), "show": show_command(k.path)}


def check_options(arch: str, engine: str, jobs: int, features: bool | None, sarif: Path | None) -> None:
    """fuzz's option checks that need no knob preset, in the order they are reported."""
    check_arch(arch)
    if sarif is not None:
        check_writable("--sarif", sarif)
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r}: one of {', '.join(ENGINES)}")
    if jobs > 1 and engine != "atheris":
        raise UsageError("--jobs runs atheris workers sharing one corpus: use it with --engine atheris")
    if features is not None and engine != "atheris":
        raise UsageError("--semantic-features feeds libFuzzer: use it with --engine atheris")


def print_finding(to: Console, f) -> None:
    """A finding as the terminal shows it: what, where it is filed, its operations, how to replay and draw it."""
    to.print(f"[red]finding[/] {f.kind} at {f.op} after {f.seconds:.1f}s: {len(f.trace.ops)} ops "
             f"(from {f.ops_before}), written to {f.path}")
    to.print(f"  {f.message}", markup=False)
    for i, row in enumerate(f.trace.ops):
        to.print(f"  [{i}] {op_text(row)}", markup=False)
    to.print(f"  replay: {replay_command(f.path)}", markup=False)
    to.print(f"  draw:   {show_command(f.path)}", markup=False)


def print_summary(out: Console, c: Campaign, summary: dict, interrupted: bool) -> None:
    """The campaign's last lines: executions, coverage, findings, and each finding on record it met."""
    out.print(f"{c.executions:,} executions in {c.elapsed:.1f}s ({summary['execs_per_second']:,.0f}/s), "
              f"coverage {c.coverage}, {len(c.findings)} finding(s)" +
              (f", {c.known_hits} already on record" if c.known_hits else "") +
              (" (interrupted)" if interrupted else "") + (":" if c.met else ""))
    for k in map(on_record_fields, c.met):  # what each one is, where, and how to look at it
        out.print(Text.assemble(("on record", "yellow"), f" {k['kind']} at {k['op']}: {k['path']}"))
        out.print(f"  {k['message']}", markup=False)
        out.print(f"  replay: {k['replay']}", markup=False)
        out.print(f"  draw:   {k['show']}", markup=False)


@app.command()
def fuzz(arch: str = typer.Option(..., "--arch", help="s390, arm64 or x86_64."),
         engine: str = typer.Option("atheris", "--engine", help="atheris (coverage-guided), hypothesis, or random."),
         knob: list[str] = typer.Option(None, "--knob", help="Design variant: NAME=VALUE (repeatable)."),
         kernel_version: str = typer.Option(None, "--kernel-version", help=KERNEL_VERSION_HELP),
         seconds: float = typer.Option(60.0, "--time", help="Stop after this many seconds."),
         runs: int = typer.Option(None, "--runs", help="Stop after this many executions."),
         max_ops: int = typer.Option(64, "--max-ops", min=1, help="Longest generated trace."),
         seed: int = typer.Option(0, "--seed", help="Seed of the first run."),
         corpus: Path = typer.Option(Path("corpus"), "--corpus", help="Findings go to CORPUS/regressions/ARCH/."),
         jobs: int = typer.Option(1, "--jobs", min=1, help="Parallel workers sharing one corpus (atheris)."),
         keep_going: bool = typer.Option(False, "--keep-going", help="Continue after the first finding."),
         json_out: bool = typer.Option(False, "--json", help="One JSON object per finding, then a summary."),
         sarif: Path = typer.Option(None, "--sarif", help="Also write the findings as SARIF 2.1.0 (code scanning)."),
         known: list[Path] = typer.Option(None, "--known", help="Traces (files or directories) whose violations "
                                          "are on record: the same finding is not new (repeatable)."),
         features: bool = typer.Option(None, "--semantic-features/--no-semantic-features",
                                       help="atheris: count the abstract states the generator reaches as coverage "
                                            "(default: only without the engine's coverage build).")):
    """Generate state-aware traces, replay them, minimize and file every new unique violation.

    Exit 0 when nothing was found, 1 when something was. Ctrl-C (or SIGTERM) stops the campaign within
    a couple of seconds; every finding already reported is on disk, and the exit code says whether any was.

    Examples:

      ptfuzz fuzz --arch s390 --time 30

      ptfuzz fuzz --arch arm64 --knob kvm.invalidate_retry=none --time 10 --corpus /tmp/c

      ptfuzz fuzz --arch x86_64 --engine hypothesis --runs 2000 --json

      ptfuzz fuzz --arch s390 --time 300 --sarif fuzz.sarif

      ptfuzz fuzz --arch s390 --time 60 --known corpus/regressions --corpus out

      ptfuzz fuzz --arch arm64 --knob arm64.thp_size=vma-naive --semantic-features --time 30

      ptfuzz fuzz --arch x86_64 --kernel-version 6.14 --time 60
    """
    check_options(arch, engine, jobs, features, sarif)
    knobs = preset_knobs(arch, knob, kernel_version)  # last of the checks: it names the release on stderr
    release = {"kernel_version": releases.check_version(kernel_version)} if kernel_version else {}
    c = Campaign(arch, knobs, corpus, max_ops=max_ops, seed=seed, features=features)
    if known:
        c.learn_known(trace_files(known))
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=True)
    if engine == "atheris" and native_engine_so() is None:
        err.print("ptfuzz: warning: no coverage-instrumented engine build (needs clang; `make setup` builds it): "
                  "atheris sees the generator's semantic features only, not the engine's edges")

    # One live display on stderr; while it runs, everything meant for the terminal is printed through
    # its console, so that rich clears the status line, prints above it and redraws it. (A second
    # Console on stdout would bypass the live display: rich unwraps its stdout proxy.)
    spinner = Spinner("dots", Text("fuzzing..."))
    live = Live(spinner, console=err, refresh_per_second=8, transient=True,
                redirect_stdout=False, redirect_stderr=False) if not json_out and err.is_terminal else None

    def on_finding(f):
        if json_out:
            print_json({"kind": f.kind, "op": f.op, "path": str(f.path), "ops": len(f.trace.ops),
                        "ops_before": f.ops_before, "seconds": round(f.seconds, 3), "executions": f.executions,
                        "message": f.message, "replay": replay_command(f.path), "show": show_command(f.path),
                        "knobs": knobs, **release})
        else:
            print_finding(live.console if live is not None and out.is_terminal else out, f)

    logged = [0.0]

    def on_progress():
        line = (f"{c.elapsed:5.1f}s  execs {c.executions:,}  {c.executions / max(c.elapsed, 1e-9):,.0f}/s  "
                f"cov {c.coverage}  findings {len(c.findings)}")
        if live is not None:
            spinner.update(text=Text(line))
        elif c.elapsed - logged[0] >= 10:  # a log (CI, a pipe) gets a progress line every 10 s instead
            logged[0] = c.elapsed
            err.print(f"ptfuzz: {line.strip()}", markup=False)

    if live is not None:
        live.start()
    else:
        err.print(f"ptfuzz: fuzzing {arch} with {engine} for {seconds:g}s, knobs {', '.join(f'{k}={v}' for k, v in knobs.items()) or 'default'}, "
                  f"findings to {corpus / 'regressions' / arch}", markup=False)
    try:
        interrupted = run_campaign(c, engine, seconds, runs, jobs, keep_going, on_finding, on_progress)
    finally:
        if live is not None:
            live.stop()
    summary = {"arch": arch, "engine": engine, "knobs": knobs, "executions": c.executions,
               "seconds": round(c.elapsed, 2), "execs_per_second": round(c.executions / max(c.elapsed, 1e-9), 1),
               "coverage": c.coverage, "findings": len(c.findings), "known": c.known_hits,
               "interrupted": interrupted, "on_record": [on_record_fields(k) for k in c.met], **release}
    if json_out:
        print_json(summary)
    else:
        print_summary(out, c, summary, interrupted)
    if sarif is not None:
        write_sarif(sarif, [finding_result(f, arch, knobs) for f in c.findings], shlex.join(["ptfuzz", *sys.argv[1:]]))
    raise typer.Exit(1 if c.findings else 0)  # also when interrupted: what was found is what counts
