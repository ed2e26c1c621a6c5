"""The engine's state at an operation (_engine.dump), and what a violation names in it (Focus)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ... import _engine
from ...engine import config_tuple
from ...names import ARCH_NAMES, knob_vector
from ...trace import Trace


def dump_state(trace: Trace, knobs: dict | None, n: int) -> dict:
    """_engine.dump of the first n operations: the state they leave, before any teardown."""
    effective = {**trace.knobs, **(knobs or {})}
    ops = np.ascontiguousarray(trace.ops[:n], dtype=np.uint64).reshape(-1, 6)
    out = _engine.dump(ARCH_NAMES.index(trace.arch), knob_vector(trace.arch, effective), config_tuple(trace),
                       tuple(bytes(b) for b in trace.elfs), ops)
    return out


NUM = r"(0x[0-9a-f]+|\d+)"


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


def _num(s: str) -> int:
    return int(s, 16) if s.startswith("0x") else int(s)


def parse_focus(kind: str, message: str) -> Focus:
    """The addresses, levels and pfns of a violation message (the engine's messages, docs/violations.md)."""
    f = Focus(kind, message)
    for pat in (rf"table(?: page)?(?: half)? (?:at )?{NUM}", rf"root {NUM}", rf"lists page {NUM}"):
        f.tables |= {_num(m) for m in re.findall(pat, message)}
    if m := re.search(rf"entry (\d+) of level-(\d+) table {NUM}", message):
        f.entry = (_num(m.group(3)), int(m.group(1)))
    if m := re.search(r"\bvm (\d+)", message):
        f.vm = int(m.group(1))
    if m := re.search(r"\bmm (\d+)", message):
        f.mm = int(m.group(1))
    if m := re.search(rf"(?:gpa|guest segment) {NUM}", message):
        f.gpa = _num(m.group(1))
    if m := re.search(rf"hva {NUM}", message):
        f.hva = _num(m.group(1))
    f.pfns = {_num(m) for m in re.findall(rf"pfn {NUM}", message)}
    if m := re.search(r"stage-2 level (\d+)", message):
        f.s2_level = int(m.group(1))
    if m := re.search(rf"{NUM}-byte", message):
        f.size = _num(m.group(1))
    return f
