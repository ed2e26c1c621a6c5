"""The minimizer: delta debugging over operations, then argument simplification; the result is 1-minimal."""
import time
from dataclasses import dataclass, replace

import numpy as np

from ..engine import replay
from ..trace import ARG_KINDS, Trace
from ..names import OPS


@dataclass
class MinimizeStats:
    ops_before: int
    ops_after: int
    replays: int
    seconds: float
    one_minimal: bool


class _Oracle:
    def __init__(self, trace: Trace, kind: str, knobs: dict | None):
        self.trace, self.kind, self.knobs, self.replays = trace, kind, knobs, 0

    def __call__(self, ops: np.ndarray) -> bool:
        self.replays += 1
        r = replay(replace(self.trace, ops=ops), self.knobs)
        return r.violation is not None and r.violation.kind == self.kind


def _ddmin(ops: np.ndarray, keeps) -> np.ndarray:
    n = 2
    while len(ops) >= 2:
        chunk = max(1, len(ops) // n)
        reduced = False
        for start in range(0, len(ops), chunk):
            candidate = np.concatenate([ops[:start], ops[start + chunk:]])
            if len(candidate) and keeps(candidate):
                ops, n, reduced = candidate, max(n - 1, 2), True
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(len(ops), n * 2)
    return ops


def _one_minimal(ops: np.ndarray, keeps) -> np.ndarray:
    i = 0
    while i < len(ops):
        candidate = np.delete(ops, i, axis=0)
        if len(candidate) and keeps(candidate):
            ops = candidate
        else:
            i += 1
    return ops


def _simplify_args(ops: np.ndarray, keeps) -> np.ndarray:
    ops = ops.copy()
    for i in range(len(ops)):
        kinds = ARG_KINDS[OPS[int(ops[i, 0])][0]]
        for j, kind in enumerate(kinds, start=1):
            if kind in ("elf", "ipa"):
                continue
            for value in (0, 1):
                if int(ops[i, j]) <= value:
                    break
                candidate = ops.copy()
                candidate[i, j] = value
                if keeps(candidate):
                    ops = candidate
                    break
    return ops


def shrink(ops: np.ndarray, keeps) -> np.ndarray:
    """The smallest operations array found that keeps(ops) still holds for: 1-minimal by construction."""
    ops = _ddmin(ops, keeps)
    ops = _one_minimal(ops, keeps)
    ops = _simplify_args(ops, keeps)
    return _one_minimal(ops, keeps)


def minimize(trace: Trace, knobs: dict | None = None) -> tuple[Trace, MinimizeStats]:
    """Shrink a violating trace keeping its violation kind."""
    t0 = time.monotonic()
    first = replay(trace, knobs)
    if first.violation is None:
        raise ValueError("the trace shows no violation: nothing to minimize")
    keeps = _Oracle(trace, first.violation.kind, knobs)
    ops = shrink(trace.ops[: first.violation.op_index + 1], keeps)
    one_minimal = all(not keeps(np.delete(ops, i, axis=0)) for i in range(len(ops))) if len(ops) > 1 else True
    meta = dict(trace.meta or {})
    meta["minimized_from"] = len(trace.ops)
    out = replace(trace, ops=ops, knobs={**trace.knobs, **(knobs or {})}, meta=meta,
                  expect={"verdict": "violation", "kind": first.violation.kind}, packed=False)
    return out, MinimizeStats(len(trace.ops), len(ops), keeps.replays, time.monotonic() - t0, one_minimal)
