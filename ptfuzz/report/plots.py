"""Figures: time-to-bug survival curves across fuzzing trials (ptfuzz variants --plot, bench B3), with matplotlib."""
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, the same output on a laptop and in CI
from matplotlib.figure import Figure  # noqa: E402

FORMATS = {".svg": "svg", ".png": "png"}
FLOOR = 1e-3  # seconds: where the time axis starts at the latest (it is logarithmic: it has no zero)
STYLES = ["-", "--", "-.", ":"]


def seconds_text(s: float) -> str:
    return "< 1 ms" if s < 0.0005 else f"{s * 1000:.0f} ms" if s < 1 else f"{s:.3g} s"


def axis_start(rows: list[dict]) -> float:
    """A decade at or below the fastest finding (the random engine finds some bugs within microseconds)."""
    fastest = min((t for r in rows for t in r["times"] if t is not None and t > 0), default=FLOOR)
    return min(FLOOR, 10 ** math.floor(math.log10(fastest)))


def survival_curve(times: list, budget: float, start: float) -> tuple[list[float], list[float]]:
    """The fraction of trials still without a finding, as step points from `start` to the budget. All
    trials are censored at the same budget, so the Kaplan-Meier estimate is this plain fraction. Times
    below the axis (a finding within the clock's resolution) drop just inside it, where they can be seen."""
    n = len(times)
    found = sorted(max(t, start * 1.25) for t in times if t is not None)
    xs, ys = [start], [1.0]
    for i, t in enumerate(found, start=1):
        xs.append(t)
        ys.append(1 - i / n)
    xs.append(budget)
    ys.append(ys[-1])
    return xs, ys


def survival_plot(rows: list[dict], path, caption: str) -> Path:
    """Draw time-to-first-finding survival curves and write them to path (.svg or .png).

    rows: one per variant, {"label": str, "times": [seconds, or None for a trial that found nothing
    within the budget], "budget": seconds}. Variants that never found anything are named in a note under
    the axes rather than drawn: their curves would all lie on top of each other at 100%."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: the file name must end in {' or '.join(FORMATS)}")
    drawn = [r for r in rows if any(t is not None for t in r["times"])]
    never = [r["label"] for r in rows if not any(t is not None for t in r["times"])]
    budget = max((r["budget"] for r in rows), default=1.0)
    start = axis_start(rows)

    fig = Figure(figsize=(11, 5.8), layout="constrained")
    ax = fig.add_subplot()
    colors = matplotlib.colormaps["tab10"].colors
    for i, r in enumerate(drawn):
        xs, ys = survival_curve(r["times"], r["budget"], start)
        k, n = sum(t is not None for t in r["times"]), len(r["times"])
        ordered = sorted(t for t in r["times"] if t is not None)
        median = ordered[(n + 1) // 2 - 1] if 2 * k >= n else None
        label = f"{r['label']}  ({k}/{n}, median {seconds_text(median) if median is not None else '> budget'})"
        color, style = colors[i % len(colors)], STYLES[(i // len(colors)) % len(STYLES)]
        # earlier curves wider, so that one drawn over an identical one still shows at its edges
        width = 1.5 + 2.5 * (len(drawn) - 1 - i) / max(1, len(drawn) - 1)
        ax.step(xs, [100 * y for y in ys], where="post", color=color, linestyle=style, linewidth=width, label=label)
        if ys[-1] > 0:  # trials still without a finding at the budget: censored, marked as in survival plots
            ax.plot([r["budget"]], [100 * ys[-1]], marker="|", markersize=14, markeredgewidth=2.5, color=color)
    ax.axvline(budget, color="0.5", linewidth=0.8, linestyle=":")
    ax.annotate(f"budget {seconds_text(budget)}", (budget, 101), ha="right", va="bottom", fontsize=8, color="0.35")
    ax.set_xscale("log")
    ax.set_xlim(start, budget * 1.3)
    ax.set_ylim(-3, 108)
    ax.set_xlabel("seconds from the start of the campaign (log scale)")
    ax.set_ylabel("trials without a violation yet (%)")
    ax.set_title("Time to the first violation, per design variant")
    ax.grid(True, which="major", color="0.9")
    if drawn:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
                  title="variant (trials that found one, median time)", title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "no violation in any trial", transform=ax.transAxes, ha="center", color="0.4")
    notes = [caption]
    if never:
        notes.append("No violation in any trial: " + "; ".join(never) + ".")
    fig.text(0.0, -0.13, "\n".join(textwrap.fill(n, 150) for n in notes), fontsize=8, va="top", ha="left",
             transform=ax.transAxes, color="0.2")
    fig.get_layout_engine().set(h_pad=0.35)
    # a fixed date keeps the file the same for the same figures (no timestamp churn in a diff)
    metadata = {"Date": None} if fmt == "svg" else {"Software": "ptfuzz, matplotlib"}
    # SVG text stays text (selectable, searchable, a third of the size) instead of glyph outlines
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(path, format=fmt, dpi=150, metadata=metadata, bbox_inches="tight")
    return path
