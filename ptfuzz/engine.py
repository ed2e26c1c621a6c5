"""The high-level API: run a Trace through the C engine and describe the outcome."""
from dataclasses import dataclass, field

import numpy as np

from . import _engine
from .errors import TraceError, UsageError
from .names import ARCH_NAMES, VIOLATION_KINDS, Verdict, errno_name, knob_vector
from .trace import CONFIG_DEFAULTS, Trace, op_text
from .trace import packed as tracefile

CONFIG_ORDER = ("granule", "va_bits", "la57", "max_table_pages", "pa_bits")


@dataclass
class Violation:
    kind: str
    op_index: int
    op: str
    message: str
    # what it concerns, as the engine recorded it (struct viol_focus): table, entry, vm, mm, gpa, hva, pfn,
    # s2_level, size, each present only when the violation names it
    focus: dict = field(default_factory=dict)


@dataclass
class ReplayResult:
    arch: str
    ops: int
    executed: int
    verdict: Verdict
    violation: Violation | None
    knobs: dict
    stats: dict
    digest: str
    op_results: list[int] | None = None
    events: list[tuple] | None = field(default=None, repr=False)
    translations: np.ndarray | None = field(default=None, repr=False)

    def matches(self, trace: Trace) -> bool:
        want = trace.expected_kind()
        got = self.violation.kind if self.violation else None
        return want == got


def config_tuple(trace: Trace) -> tuple:
    cfg = trace.full_config()
    return tuple(int(cfg[k]) for k in CONFIG_ORDER)


def _run(trace: Trace, knobs: dict | None, steps: bool, teardown: bool, probes: np.ndarray | None,
         figures: tuple[int, int] | None):
    effective = {**trace.knobs, **(knobs or {})}
    extra: tuple = ()
    if probes is not None or figures is not None:
        extra = (None if probes is None else np.ascontiguousarray(probes, dtype=np.uint64),)
    if figures is not None:
        extra += ((int(figures[0]), int(figures[1])),)
    head = (ARCH_NAMES.index(trace.arch), knob_vector(trace.arch, effective), config_tuple(trace),
            tuple(bytes(b) for b in trace.elfs))
    source = getattr(trace, "source", None)
    if source is None:
        # aligned as well: a FileTrace's mapping of its file starts wherever the section does
        ops = np.require(trace.ops, dtype=np.uint64, requirements=["C", "A"])
        nops = len(ops)
        out = _engine.run(*head, ops, steps, teardown, *extra)
    else:  # a FileTrace: its operations come from the file a chunk at a time, never all in memory
        nops = source.nops
        with source.open() as f:
            try:
                out = _engine.run(*head, (f.fileno(), source.offset, nops, tracefile.CHUNK_BYTES), steps, teardown, *extra)
            except (OSError, EOFError) as exc:
                raise TraceError(source.path, "ops_packed", str(exc)) from None
    violation = None
    if out["violation"]:
        idx = out["op_index"]
        words = out.get("violation_op")  # the engine's copy: a streamed trace is not read again for it
        op = np.frombuffer(words, dtype=np.uint64) if words else trace.ops[idx] if idx < nops else None
        violation = Violation(VIOLATION_KINDS[out["violation"] - 1], idx,
                              op_text(op) if op is not None else "(teardown)", out["message"], out.get("focus") or {})
    stats = out["stats"]
    stats["results"] = {errno_name(k): v for k, v in sorted(stats["results"].items(), reverse=True)}
    result = ReplayResult(
        arch=trace.arch, ops=nops, executed=out["executed"],
        verdict=Verdict.VIOLATION if violation else Verdict.CLEAN, violation=violation,
        knobs=effective, stats=stats, digest=f"{out['digest']:016x}",
        op_results=list(np.frombuffer(out["op_results"], dtype=np.int8)) if steps else None,
        events=out["events"],
        translations=np.frombuffer(out["translations"], dtype=np.uint64) if probes is not None else None,
    )
    return result, out.get("figures")  # an engine built before replay_figures has no "figures"


def replay(trace: Trace, knobs: dict | None = None, steps: bool = False, teardown: bool = True,
           probes: np.ndarray | None = None) -> ReplayResult:
    """Run every operation; stop at the first violation; tear down and audit unless told not to.

    probes: an (n, 2) uint64 array of (pid, va); the result's translations give the 4K frame each maps
    after the last operation (2^64-1 where nothing is mapped)."""
    return _run(trace, knobs, steps, teardown, probes, None)[0]


def replay_figures(trace: Trace, lo: int, hi: int, knobs: dict | None = None, steps: bool = False,
                   teardown: bool = True) -> tuple[ReplayResult, list[dict[int, tuple[int, tuple[int, ...]]]]]:
    """replay, and after every executed operation the figures the crosscheck driver compares with the
    running kernel: for each live pid, (page-table bytes as mm_pgtables_bytes counts them, i.e. VmPTE in
    bytes: PUD/PMD/PTE tables that are not folded, deposited tables included, never the pgd or p4d;
    the addresses of PMD-mapped blocks in [lo, hi): THP, huge zero page, hugetlb PMD, ascending)."""
    if not 0 <= lo <= hi < 1 << 64:
        raise ValueError(f"window [{lo:#x}, {hi:#x}) is not a range of addresses")
    return _run(trace, knobs, steps, teardown, None, (lo, hi))


def stage1_geometry(arch: str, config: dict) -> dict:
    cfg = {**CONFIG_DEFAULTS, **config}
    levels, pmd_shift, pud_shift = _engine.geometry(ARCH_NAMES.index(arch), tuple(int(cfg[k]) for k in CONFIG_ORDER))
    page = 1 << levels[-1][1]
    leaf_sizes = sorted({1 << shift for _, shift, _, _, folded, leaf in levels if leaf and not folded}, reverse=True)
    return {
        "arch": arch, "stage": 1, "levels": sum(1 for lv in levels if not lv[4]), "start_level": 0,
        "pgd_pages": 1, "folded": [lv[0] for lv in levels if lv[4]], "leaf_sizes": leaf_sizes,
        "page_size": page, "pmd_size": 1 << pmd_shift, "pud_size": (1 << pud_shift) if pud_shift else None,
        "per_level": [{"name": n, "shift": s, "entries": e, "table_bytes": b, "folded": f}
                      for n, s, e, b, f, _ in levels],
    }


def stage2_geometry(arch: str, config: dict, ipa_bits: int) -> dict:
    cfg = {**CONFIG_DEFAULTS, **config}
    try:
        levels, start, pages = _engine.geometry2(ARCH_NAMES.index(arch), tuple(int(cfg[k]) for k in CONFIG_ORDER),
                                                 ipa_bits)
    except NotImplementedError:
        raise UsageError(f"{arch} has no stage-2 geometry (s390 guests use the gmap)") from None
    except ValueError:
        raise UsageError(f"--ipa-bits {ipa_bits}: not a supported IPA size for this granule") from None
    page = 1 << levels[-1][1]
    leaf_sizes = sorted({1 << lv[1] for lv in levels if lv[5]}, reverse=True)
    return {
        "arch": arch, "stage": 2, "levels": len(levels) - start, "start_level": start, "pgd_pages": pages,
        "ipa_bits": ipa_bits or 40, "folded": [], "leaf_sizes": leaf_sizes, "page_size": page,
        "per_level": [{"level": i, "shift": s, "entries": e, "table_bytes": b}
                      for i, (_, s, e, b, folded, _) in enumerate(levels) if not folded],
    }
