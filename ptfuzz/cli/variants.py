"""ptfuzz variants: fuzz every design variant of an arch and print which are safe and which are not; or, with
--kernel-versions, one row per Linux release preset and which releases each counterexample kind affects."""
import sys
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .. import releases
from .. import trace as tracemod
from ..errors import UsageError
from ..search.campaign import ENGINES
from ..report.ci import check_writable
from ..search.variants import by_release, kinds_summary, release_replays, run_trials, trial_seed
from ..search.variants import variants as all_variants
from .app import app
from .common import check_arch, parse_knobs, print_json, trace_files

PLOT_SUFFIXES = (".svg", ".png")


def seconds_text(s: float) -> str:
    return f"{s:.2f}s" if s >= 0.1 else f"{s * 1000:.1f}ms"


def knob_label(knobs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in knobs.items()) or "(defaults)"


def release_label(version: str) -> str:
    return f"kernel {version}"


def kinds_table(title: str, kinds: list[dict], reached: str, missed: str) -> Table:
    table = Table(title=title)
    for col in ("arch", "violation", reached, missed):
        table.add_column(col, overflow="fold")
    for k in kinds:
        table.add_row(k["arch"], k["kind"], ", ".join(k["affects"]) or "-", ", ".join(k["not_reached"]) or "-")
    return table


def replay_releases(paths: list[Path], versions: list[str], arch: str | None, items: list[str] | None,
                    json_out: bool, console: Console) -> None:
    """Every trace replayed under every release preset (the knobs the trace sets give way to the release's,
    --knob goes over both): which releases still reach its violation. Deterministic, and as fast as a replay."""
    traces = [(f, tracemod.load(f)) for f in trace_files(paths)]
    for path, t in traces:
        if arch is not None and t.arch != arch:
            raise UsageError(f"--arch {arch}: {path} is a {t.arch} trace")
    presets, found, rows = {}, {}, []
    for path, t in traces:
        reached = release_replays(t, versions, parse_knobs(t.arch, items), presets, found)
        rows.append({"trace": str(path), "arch": t.arch, "expected": t.expected_kind(), "trace_knobs": t.knobs,
                     "releases": reached})
    kinds = kinds_summary(found, versions)
    if json_out:
        for row in rows:
            print_json(row)
        print_json({"mode": "replay", "kernel_versions": versions, "kinds": kinds})
        return
    what = f" with {', '.join(items)}" if items else ""
    table = Table(title=f"traces replayed as {', '.join(release_label(v) for v in versions)}{what}")
    for col in ("trace", "arch", "found with", "expected", "reached on", "not reached on"):
        table.add_column(col, overflow="fold")
    for row in rows:
        hits = [f"{v} ({k})" if k != row["expected"] else v for v, k in row["releases"].items() if k]
        table.add_row(row["trace"], row["arch"], knob_label(row["trace_knobs"]), row["expected"] or "clean",
                      ", ".join(hits) or "-", ", ".join(v for v, k in row["releases"].items() if not k) or "-")
    console.print(table)
    if kinds:
        console.print(kinds_table("counterexample kinds by release", kinds, "reached on", "not reached on"))
    else:
        console.print("no violation on any of these releases", markup=False)


def check_fuzz_options(engine: str, plot: Path | None, trials: int, json_out: bool) -> None:
    """--engine and --plot when fuzzing (after --arch and --knob), and a note when --plot has few trials."""
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r}: one of {', '.join(ENGINES)}")
    if plot is not None:
        if plot.suffix.lower() not in PLOT_SUFFIXES:
            raise UsageError(f"--plot {plot}: the file name must end in .svg or .png")
        check_writable("--plot", plot)
    if plot is not None and trials < 3 and not json_out:
        Console(stderr=True, highlight=False).print(
            f"ptfuzz: note: survival curves need several trials per variant (--trials {trials})", markup=False)


def run_cases(arch: str, cases: list[tuple], engine: str, time_per_variant: float, runs_per_variant: int | None,
              trials: int, max_ops: int, corpus: Path | None, versions: list[str] | None, json_out: bool,
              table: Table, budget: str) -> tuple[list[dict], dict]:
    """Each case's trials, printed as JSON or added to the table as it ends; the rows, and per (arch, kind)
    the releases it was found on."""
    rows, found = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, knobs, shown, release in cases:
            row = run_trials(arch, knobs, engine, time_per_variant, trials, max_ops, corpus or Path(tmp),
                             runs_per_variant)
            row["knobs"] = shown
            if release is not None:
                row["kernel_version"] = release
            if not corpus:
                row["path"] = None  # the temporary directory is gone when the command ends
            row["label"] = label
            rows.append(row)
            for r in row["runs"]:
                if r["kind"] and versions is not None:
                    found.setdefault((arch, r["kind"]), set()).add(release)
            if json_out:
                print_json({k: v for k, v in row.items() if k != "label"})
                continue
            unsafe = row["verdict"] == "unsafe"
            median = "-" if row["seconds"] is None else seconds_text(row["seconds"])
            cells = [label] + ([knob_label(shown).replace("(defaults)", "-")] if versions is not None else [])
            table.add_row(*cells, "[red]unsafe[/]" if unsafe else "[green]safe[/]", row["kind"] or "-",
                          median + (f" ({row['found']}/{trials})" if trials > 1 and unsafe else ""),
                          f"{row['executions']:,}", f"{row['ops']} ops" if unsafe else f"none in {budget}")
    return rows, found


def variant_cases(arch: str, versions: list[str] | None, kernel_version: str | None, extra: dict) -> list[tuple]:
    """(label, knobs run, knobs reported, release): a knob variant over the base, or a release's preset
    (each preset named on stderr)."""
    if versions is not None:
        cases = []
        for v in versions:
            p = releases.preset(arch, v, "--kernel-versions")
            print(f"ptfuzz: {p.describe(extra)}", file=sys.stderr)
            cases.append((release_label(v), {**p.knobs, **extra}, {**p.knobs, **extra}, v))
    else:
        base = {}
        if kernel_version is not None:
            p = releases.preset(arch, kernel_version)
            print(f"ptfuzz: {p.describe(extra)}", file=sys.stderr)
            base = p.knobs
        base = {**base, **extra}
        default = f"({release_label(kernel_version)})" if kernel_version else "(defaults)"
        cases = [(knob_label(delta) if delta else default, {**base, **delta}, delta, kernel_version)
                 for delta in all_variants(arch, base)]
    return cases


def variants_table(arch: str, versions: list[str] | None, kernel_version: str | None, each: str,
                   engine: str) -> Table:
    if versions is not None:
        table = Table(title=f"Linux releases on {arch} ({each}, {engine})")
        cols = ("release", "knobs (besides the v6.6 defaults)", "verdict", "violation", "found after", "executions",
                "counterexample")
    else:
        over = f" over {release_label(kernel_version)}" if kernel_version else ""
        table = Table(title=f"design variants on {arch}{over} ({each}, {engine})")
        cols = ("knobs", "verdict", "violation", "found after", "executions", "counterexample")
    for col in cols:
        table.add_column(col, overflow="fold")
    return table


def write_plot(plot: Path, rows: list[dict], arch: str, engine: str, time_per_variant: float, trials: int,
               max_ops: int, json_out: bool, console: Console) -> None:
    """--plot: the trials' times to the first finding as survival curves."""
    from ..report.plots import survival_plot  # matplotlib only when a plot is asked for
    seeds = ", ".join(str(trial_seed(engine, t)) for t in range(min(trials, 3))) + (", ..." if trials > 3 else "")
    caption = (f"ptfuzz variants --arch {arch}: engine {engine}, budget {time_per_variant:g} s per trial, "
               f"{trials} trial(s) per variant with seeds {seeds}; at most {max_ops} operations per trace; "
               "a trial that found nothing is censored at the budget.")
    plot_rows = [{"label": r["label"], "times": [t["seconds"] for t in r["runs"]],
                  "budget": time_per_variant} for r in rows]
    try:
        survival_plot(plot_rows, plot, caption)
    except OSError as exc:
        raise UsageError(f"--plot {plot}: cannot write: {exc.strerror or exc}") from None
    if not json_out:
        console.print(f"survival curves written to {plot}", markup=False)


@app.command()
def variants(arch: str = typer.Option(None, "--arch", help="s390, arm64 or x86_64 (with --replay: optional, "
                                      "the traces' own)."),
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
             knob: list[str] = typer.Option(None, "--knob", help="NAME=VALUE over every variant, release preset or "
                                            "replayed trace (repeatable): a what-if to compare releases under."),
             kernel_version: str = typer.Option(None, "--kernel-version",
                                                help="Vary every knob around this Linux release's preset instead "
                                                     "of the v6.6 defaults (6.6 to 6.19, or e.g. 6.6.60)."),
             kernel_versions: str = typer.Option(None, "--kernel-versions",
                                                 help="Releases, comma-separated, or 'all': one campaign per "
                                                      "release preset (the budget options apply to each), then "
                                                      "which releases each counterexample kind was found on."),
             replay_paths: list[Path] = typer.Option(None, "--replay",
                                                     help="With --kernel-versions: replay these traces (files or "
                                                          "directories) under every release instead of fuzzing: "
                                                          "which releases still reach each counterexample."),
             json_out: bool = typer.Option(False, "--json", help="One JSON object per variant (per release, per "
                                           "trace with --replay; then a summary with --kernel-versions).")):
    """Every knob alternative (and the combinations that matter) against the fuzzer: the mailing-list table.

    With --trials N each variant gets N campaigns with their own seeds; the time to the first finding is
    recorded (censored at the budget), and --plot draws it as survival curves.

    With --kernel-versions the rows are Linux releases (their knob presets, docs/releases.md) instead of
    knob variants, and a second table says which releases each counterexample kind affects.

    Examples:

      ptfuzz variants --arch s390

      ptfuzz variants --arch arm64 --time-per-variant 5 --json

      ptfuzz variants --arch s390 --time-per-variant 600 --runs-per-variant 20000 --json

      ptfuzz variants --arch s390 --time-per-variant 5 --trials 10 --plot s390.svg

      ptfuzz variants --arch x86_64 --kernel-version 6.14 --time-per-variant 5

      ptfuzz variants --arch s390 --kernel-versions 6.6,6.6.60,6.12,6.18 --runs-per-variant 5000

      ptfuzz variants --kernel-versions all --replay corpus/regressions

      ptfuzz variants --kernel-versions 6.13,6.14 --replay lost-update.msgpack --knob mm.pmd_recheck=no
    """
    if kernel_version is not None and kernel_versions is not None:
        raise UsageError("--kernel-version and --kernel-versions: give one (a base release to vary knobs around, "
                         "or the releases to compare)")
    if replay_paths and kernel_versions is None:
        raise UsageError("--replay replays traces under each of --kernel-versions: give that too")
    versions = by_release(releases.parse_versions(kernel_versions)) if kernel_versions is not None else None
    if kernel_version is not None:
        kernel_version = releases.check_version(kernel_version)
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    if replay_paths:
        if plot is not None:
            raise UsageError("--plot draws fuzzing trials: not with --replay")
        if arch is not None:
            check_arch(arch)
        replay_releases(replay_paths, versions, arch, knob, json_out, console)
        return
    if arch is None:
        raise UsageError("--arch: required (s390, arm64 or x86_64) unless --replay gives the traces")
    check_arch(arch)
    extra = parse_knobs(arch, knob)
    check_fuzz_options(engine, plot, trials, json_out)
    cases = variant_cases(arch, versions, kernel_version, extra)
    budget = f"{time_per_variant:g}s" + (f" or {runs_per_variant:,} runs" if runs_per_variant else "")
    each = f"{budget} each" + (f", {trials} trials" if trials > 1 else "")
    table = variants_table(arch, versions, kernel_version, each, engine)
    rows, found = run_cases(arch, cases, engine, time_per_variant, runs_per_variant, trials, max_ops, corpus,
                            versions, json_out, table, budget)
    kinds = kinds_summary(found, versions) if versions is not None else None
    if json_out and kinds is not None:
        print_json({"mode": "fuzz", "arch": arch, "kernel_versions": versions, "kinds": kinds})
    if not json_out:
        console.print(table)
        if kinds == []:
            console.print(f"no violation found on any of these releases within {budget}", markup=False)
        elif kinds is not None:
            console.print(kinds_table(f"counterexample kinds by release (fuzzing, {budget} per release)", kinds,
                                      "found on", "not found on (within the budget)"))
    if plot is not None:
        write_plot(plot, rows, arch, engine, time_per_variant, trials, max_ops, json_out, console)
