"""ptfuzz variants: fuzz every design variant of an arch and print which are safe and which are not."""
import sys
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..errors import UsageError
from ..fuzz import ENGINES, Campaign
from ..reports import check_writable
from ..variants import median_time, trial_seed
from ..variants import variants as all_variants
from . import app
from .common import check_arch, print_json
from .fuzz import run_campaign

PLOT_SUFFIXES = (".svg", ".png")


def seconds_text(s: float) -> str:
    return f"{s:.2f}s" if s >= 0.1 else f"{s * 1000:.1f}ms"


def knob_label(knobs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in knobs.items()) or "(defaults)"


def run_trials(arch: str, knobs: dict, engine: str, budget: float, trials: int, max_ops: int, corpus: Path,
               max_runs: int | None = None) -> dict:
    """One campaign per trial, each with its own seed, stopped at its first finding or at the budget (seconds,
    and executions when `max_runs` is given: with the random engine that makes the verdict independent of load)."""
    runs, first = [], None
    for trial in range(trials):
        c = Campaign(arch, knobs, corpus, max_ops=max_ops, seed=trial_seed(engine, trial))
        interrupted = run_campaign(c, engine, budget, max_runs, 1, False)
        if interrupted:
            raise KeyboardInterrupt
        f = c.findings[0] if c.findings else None
        runs.append({"seed": c.seed, "seconds": round(f.seconds, 6) if f else None,
                     "executions": f.executions if f else c.executions, "kind": f.kind if f else None})
        if f and (first is None or f.seconds < first.seconds):
            first = f
    times = [r["seconds"] for r in runs]
    return {"arch": arch, "knobs": knobs, "verdict": "unsafe" if first else "safe",
            "kind": first.kind if first else None, "seconds": median_time(times),
            "executions": sum(r["executions"] for r in runs), "ops": len(first.trace.ops) if first else None,
            "path": str(first.path) if first else None, "trials": trials,
            "found": sum(t is not None for t in times), "runs": runs}


@app.command()
def variants(arch: str = typer.Option(..., "--arch", help="s390, arm64 or x86_64."),
             time_per_variant: float = typer.Option(10.0, "--time-per-variant",
                                                    help="Budget per variant and trial, seconds."),
             runs_per_variant: int = typer.Option(None, "--runs-per-variant", min=1,
                                                  help="Also stop each trial after this many executions "
                                                       "(with --engine random, a verdict that does not "
                                                       "depend on machine speed)."),
             engine: str = typer.Option("random", "--engine", help=f"One of {', '.join(ENGINES)}."),
             max_ops: int = typer.Option(32, "--max-ops", min=1, help="Longest generated trace."),
             trials: int = typer.Option(1, "--trials", min=1,
                                        help="Campaigns per variant, each with its own seed (for --plot)."),
             plot: Path = typer.Option(None, "--plot", help="Write time-to-bug survival curves: FILE.svg or FILE.png."),
             corpus: Path = typer.Option(None, "--corpus", help="Keep the counterexamples here (default: discard)."),
             json_out: bool = typer.Option(False, "--json", help="One JSON object per variant.")):
    """Every knob alternative (and the combinations that matter) against the fuzzer: the mailing-list table.

    With --trials N each variant gets N campaigns with their own seeds; the time to the first finding is
    recorded (censored at the budget), and --plot draws it as survival curves.

    Examples:

      ptfuzz variants --arch s390

      ptfuzz variants --arch arm64 --time-per-variant 5 --json

      ptfuzz variants --arch s390 --time-per-variant 600 --runs-per-variant 20000 --json

      ptfuzz variants --arch s390 --time-per-variant 5 --trials 10 --plot s390.svg
    """
    check_arch(arch)
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r}: one of {', '.join(ENGINES)}")
    if plot is not None:
        if plot.suffix.lower() not in PLOT_SUFFIXES:
            raise UsageError(f"--plot {plot}: the file name must end in .svg or .png")
        check_writable("--plot", plot)
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    if plot is not None and trials < 3 and not json_out:
        Console(stderr=True, highlight=False).print(
            f"ptfuzz: note: survival curves need several trials per variant (--trials {trials})", markup=False)
    budget = f"{time_per_variant:g}s" + (f" or {runs_per_variant:,} runs" if runs_per_variant else "")
    each = f"{budget} each" + (f", {trials} trials" if trials > 1 else "")
    table = Table(title=f"design variants on {arch} ({each}, {engine})")
    for col in ("knobs", "verdict", "violation", "found after", "executions", "counterexample"):
        table.add_column(col, overflow="fold")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for knobs in all_variants(arch):
            row = run_trials(arch, knobs, engine, time_per_variant, trials, max_ops, corpus or Path(tmp),
                             runs_per_variant)
            if not corpus:
                row["path"] = None  # the temporary directory is gone when the command ends
            rows.append(row)
            if json_out:
                print_json(row)
                continue
            unsafe = row["verdict"] == "unsafe"
            median = "-" if row["seconds"] is None else seconds_text(row["seconds"])
            table.add_row(knob_label(knobs), "[red]unsafe[/]" if unsafe else "[green]safe[/]", row["kind"] or "-",
                          median + (f" ({row['found']}/{trials})" if trials > 1 and unsafe else ""),
                          f"{row['executions']:,}", f"{row['ops']} ops" if unsafe else f"none in {budget}")
    if not json_out:
        console.print(table)
    if plot is not None:
        from ..plots import survival_plot  # matplotlib only when a plot is asked for
        seeds = ", ".join(str(trial_seed(engine, t)) for t in range(min(trials, 3))) + (", ..." if trials > 3 else "")
        caption = (f"ptfuzz variants --arch {arch}: engine {engine}, budget {time_per_variant:g} s per trial, "
                   f"{trials} trial(s) per variant with seeds {seeds}; at most {max_ops} operations per trace; "
                   "a trial that found nothing is censored at the budget.")
        plot_rows = [{"label": knob_label(r["knobs"]), "times": [t["seconds"] for t in r["runs"]],
                      "budget": time_per_variant} for r in rows]
        try:
            survival_plot(plot_rows, plot, caption)
        except OSError as exc:
            raise UsageError(f"--plot {plot}: cannot write: {exc.strerror or exc}") from None
        if not json_out:
            console.print(f"survival curves written to {plot}", markup=False)
