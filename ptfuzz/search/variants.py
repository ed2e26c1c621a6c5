"""The design variants to try per arch: every knob alternative alone, plus the combinations that matter."""
from pathlib import Path

from .. import releases
from ..engine import replay
from ..names import KNOB_BY_NAME, KNOBS
from ..zoo import BUGS
from .campaign import Campaign, run_campaign

# Variants unsafe only in combination, and combinations that make an unsafe knob safe again.
COMBINATIONS = {
    "s390": [{"s390.pgste_decision": "convert-late", "mm.pmd_recheck": "no"},
             {"s390.thp_in_pgste_mm": "allow", "s390.defer_gmap_unlink": "yes"},
             {"s390.pt_alloc": "full-page", "s390.defer_gmap_unlink": "yes"}],
    # U6: in v6.6 only PT reclaim unlinks a PTE table under an rmap walker (the rmap locks exclude the rest)
    "arm64": [{"mm.pmd_recheck": "no", "mm.pt_reclaim": "yes"},
              {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"}],
    "x86_64": [{"kvm.fault_holds_mm": "no", "kvm.release_check": "root"}],
}


def variants(arch: str, base: dict | None = None) -> list[dict]:
    """The knob sets to try, each to be applied over `base` (the v6.6 defaults when None, or a release's
    preset): {} first, every other value of every knob, then the combinations and the bug zoo's rows; one that
    changes nothing over `base` or repeats an earlier one is left out."""
    base = base or {}

    def effective(v: dict) -> tuple:
        full = {k.name: k.default(arch) for k in KNOBS if arch in k.arches} | base | v
        return tuple(sorted(full.items()))

    out, seen = [], set()
    candidates = [{}] + [{k.name: v} for k in KNOBS if arch in k.arches for v in k.values
                         if v != base.get(k.name, k.default(arch))]
    # the bug zoo's pre-fix designs whose knobs this arch has, with the older paths some need (docs/history.md)
    zoo = [b.knobs for b in BUGS if all(arch in KNOB_BY_NAME[k].arches for k in b.knobs)]
    for v in candidates + COMBINATIONS.get(arch, []) + zoo:
        if effective(v) not in seen:
            seen.add(effective(v))
            out.append(v)
    return out


# The random and hypothesis engines seed each run (and each batch) with seed + executions, so trials one
# seed apart would replay each other's traces shifted by one: their seeds are a million runs apart. atheris
# hands its seed to libFuzzer (-seed=seed*1000+job+1, a 32-bit number) and seeds its corpus from it, so
# consecutive seeds are independent there and large ones would overflow.
TRIAL_SEED_STRIDE = {"atheris": 1}
DEFAULT_STRIDE = 1_000_000


def trial_seed(engine: str, trial: int) -> int:
    """The campaign seed of trial number `trial` (0 for the first, as a single `ptfuzz fuzz` run)."""
    return trial * TRIAL_SEED_STRIDE.get(engine, DEFAULT_STRIDE)


def median_time(times: list[float | None]) -> float | None:
    """The time by which half the trials had found a violation (the survival curve's 50% point); None when
    fewer than half found one within the budget. `times` holds None for a trial censored at the budget."""
    if not times:
        return None
    ordered = sorted(times, key=lambda t: float("inf") if t is None else t)
    return ordered[(len(ordered) + 1) // 2 - 1]


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


def by_release(versions: list[str]) -> list[str]:
    return sorted(versions, key=releases.parse_version)


def kinds_summary(found: dict, versions: list[str]) -> list[dict]:
    """found: (arch, kind) -> releases it was found on; one record per (arch, kind)."""
    return [{"arch": arch, "kind": kind, "affects": by_release(list(vs)),
             "not_reached": [v for v in versions if v not in vs]}
            for (arch, kind), vs in sorted(found.items())]


def release_replays(t, versions: list[str], extra: dict, presets: dict, found: dict) -> dict:
    """Trace t replayed under each release preset (the knobs t sets give way to the release's, `extra` goes over
    both): per release the violation kind reached, or None. presets caches (arch, release) -> preset; found
    collects (arch, kind) -> the releases it was reached on."""
    reached = {}
    for v in versions:
        p = presets.get((t.arch, v))
        if p is None:
            p = presets[t.arch, v] = releases.preset(t.arch, v, "--kernel-versions")
        r = replay(t, {**{k: p.value(k) for k in t.knobs}, **p.knobs, **extra})
        reached[v] = r.violation.kind if r.violation else None
        if r.violation:
            found.setdefault((t.arch, r.violation.kind), set()).add(v)
    return reached
