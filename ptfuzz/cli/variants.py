"""ptfuzz variants: fuzz every design variant of an arch and print which are safe and which are not."""
import sys
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..fuzz import ENGINES, Campaign
from ..variants import variants as all_variants
from . import app
from .common import check_arch, print_json
from .fuzz import run_campaign


@app.command()
def variants(arch: str = typer.Option(..., "--arch", help="s390, arm64 or x86_64."),
             time_per_variant: float = typer.Option(10.0, "--time-per-variant", help="Budget per variant, seconds."),
             engine: str = typer.Option("random", "--engine", help=f"One of {', '.join(ENGINES)}."),
             max_ops: int = typer.Option(32, "--max-ops", min=1, help="Longest generated trace."),
             corpus: Path = typer.Option(None, "--corpus", help="Keep the counterexamples here (default: discard)."),
             json_out: bool = typer.Option(False, "--json", help="One JSON object per variant.")):
    """Every knob alternative (and the combinations that matter) against the fuzzer: the mailing-list table.

    Examples: ptfuzz variants --arch s390 ; ptfuzz variants --arch arm64 --time-per-variant 5 --json
    """
    check_arch(arch)
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"design variants on {arch} ({time_per_variant:g}s each, {engine})")
    for col in ("knobs", "verdict", "violation", "found after", "executions", "counterexample"):
        table.add_column(col, overflow="fold")
    with tempfile.TemporaryDirectory() as tmp:
        for knobs in all_variants(arch):
            c = Campaign(arch, knobs, corpus or Path(tmp), max_ops=max_ops)
            run_campaign(c, engine, time_per_variant, None, 1, False)
            f = c.findings[0] if c.findings else None
            row = {"arch": arch, "knobs": knobs, "verdict": "unsafe" if f else "safe",
                   "kind": f.kind if f else None, "seconds": round(f.seconds, 3) if f else None,
                   "executions": f.executions if f else c.executions,
                   "ops": len(f.trace.ops) if f else None, "path": str(f.path) if f and corpus else None}
            if json_out:
                print_json(row)
                continue
            name = ", ".join(f"{k}={v}" for k, v in knobs.items()) or "(defaults)"
            table.add_row(name, "[red]unsafe[/]" if f else "[green]safe[/]", row["kind"] or "-",
                          f"{f.seconds:.2f}s" if f else "-", f"{row['executions']:,}",
                          f"{row['ops']} ops" if f else f"none in {time_per_variant:g}s")
    if not json_out:
        console.print(table)
