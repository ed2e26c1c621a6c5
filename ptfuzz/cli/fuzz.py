"""ptfuzz fuzz: a fuzz campaign against one arch and a set of knobs."""
from pathlib import Path

import typer
from rich.console import Console

from ..errors import UsageError
from ..fuzz import Campaign
from ..trace import op_text
from . import app
from .common import check_arch, parse_knobs, print_json

ENGINES = ("random",)


@app.command()
def fuzz(arch: str = typer.Option(..., "--arch", help="s390, arm64 or x86_64."),
         engine: str = typer.Option("random", "--engine", help="Trace generator: random (state-aware)."),
         knob: list[str] = typer.Option(None, "--knob", help="Design variant: NAME=VALUE (repeatable)."),
         seconds: float = typer.Option(60.0, "--time", help="Stop after this many seconds."),
         runs: int = typer.Option(None, "--runs", help="Stop after this many executions."),
         max_ops: int = typer.Option(64, "--max-ops", min=1, help="Longest generated trace."),
         seed: int = typer.Option(0, "--seed", help="First seed; runs are deterministic per seed."),
         corpus: Path = typer.Option(Path("corpus"), "--corpus", help="Findings go to CORPUS/regressions/ARCH/."),
         keep_going: bool = typer.Option(False, "--keep-going", help="Continue after the first finding."),
         json_out: bool = typer.Option(False, "--json", help="One JSON object per finding, then a summary.")):
    """Generate traces, replay them, minimize and file every new unique violation.

    Examples:

      ptfuzz fuzz --arch s390 --time 30

      ptfuzz fuzz --arch s390 --knob mm.table_free=immediate --time 10 --corpus /tmp/c
    """
    check_arch(arch)
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r}: available engines are {', '.join(ENGINES)}")
    knobs = parse_knobs(arch, knob)
    from ..engine import MODELLED
    if arch not in MODELLED:
        from ..errors import NotModelledError
        raise NotModelledError(f"arch {arch} is not modelled yet")
    c = Campaign(arch, knobs, corpus, max_ops=max_ops, seed=seed, keep_going=keep_going)
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=True)
    interrupted = False
    try:
        with console.status("fuzzing...") as status:
            while c.elapsed < seconds and (runs is None or c.executions < runs):
                f = c.run_one()
                if c.executions % 200 == 0 and not json_out:
                    status.update(f"{c.elapsed:5.1f}s  execs {c.executions}  "
                                  f"{c.executions / max(c.elapsed, 1e-9):,.0f}/s  findings {len(c.findings)}")
                if f is None:
                    continue
                if json_out:
                    print_json({"kind": f.kind, "op": f.op, "path": str(f.path), "ops": len(f.trace.ops),
                                "ops_before": f.ops_before, "knobs": knobs})
                else:
                    out.print(f"[red]finding[/] {f.kind} at {f.op}: {len(f.trace.ops)} ops "
                              f"(from {f.ops_before}), written to {f.path}")
                    for i, row in enumerate(f.trace.ops):
                        out.print(f"  [{i}] {op_text(row)}", markup=False)
                if not keep_going:
                    break
    except KeyboardInterrupt:
        interrupted = True
    summary = {"arch": arch, "knobs": knobs, "executions": c.executions, "seconds": round(c.elapsed, 2),
               "execs_per_second": round(c.executions / max(c.elapsed, 1e-9), 1),
               "findings": len(c.findings), "interrupted": interrupted}
    if json_out:
        print_json(summary)
    else:
        out.print(f"{c.executions} executions in {c.elapsed:.1f}s "
                  f"({summary['execs_per_second']:,.0f}/s), {len(c.findings)} finding(s)"
                  + (" (interrupted)" if interrupted else ""))
    raise typer.Exit(1 if c.findings else (130 if interrupted else 0))
