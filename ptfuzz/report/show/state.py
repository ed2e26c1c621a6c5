"""The engine's state at an operation (_engine.dump), and what a violation names in it (Focus)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ... import _engine
from ...engine import Violation, config_tuple
from ...names import ARCH_NAMES, knob_vector
from ...trace import Trace


def dump_state(trace: Trace, knobs: dict | None, n: int) -> dict:
    """_engine.dump of the first n operations: the state they leave, before any teardown."""
    effective = {**trace.knobs, **(knobs or {})}
    ops = np.ascontiguousarray(trace.ops[:n], dtype=np.uint64).reshape(-1, 6)
    out = _engine.dump(ARCH_NAMES.index(trace.arch), knob_vector(trace.arch, effective), config_tuple(trace),
                       tuple(bytes(b) for b in trace.elfs), ops)
    return out


@dataclass
class Focus:
    """What the violation names: tables (addresses), guest and host addresses, pfns, a stage-2 level."""
    kind: str = ""
    message: str = ""
    tables: set[int] = field(default_factory=set)
    vm: int | None = None
    mm: int | None = None
    gpa: int | None = None
    hva: int | None = None
    pfns: set[int] = field(default_factory=set)
    entry: tuple[int, int] | None = None  # (table address, index)
    s2_level: int | None = None
    size: int | None = None

    def names_table(self, addr: int) -> bool:
        return addr in self.tables or (addr & ~0x7ff) in self.tables


def violation_focus(v: Violation) -> Focus:
    """What the violation concerns, from the engine's record of it (Violation.focus), not from its message."""
    f = v.focus
    return Focus(v.kind, v.message, tables={f["table"]} if "table" in f else set(), vm=f.get("vm"), mm=f.get("mm"),
                 gpa=f.get("gpa"), hva=f.get("hva"), pfns={f["pfn"]} if "pfn" in f else set(),
                 entry=(f["table"], f["entry"]) if "entry" in f else None, s2_level=f.get("s2_level"),
                 size=f.get("size"))
