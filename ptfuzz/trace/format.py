"""The trace format: the schema (operations, argument kinds, config, knobs, expect), the Trace record, the list and
packed forms of operations and their validation, and the map a file holds (docs/trace-format.md)."""
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _engine
from ..names import ARCH_NAMES, KNOB_BY_NAME, OP_NUMBER, OP_WIDTH, OPS, VIOLATION_KINDS

FORMAT = "ptfuzz-trace"
VERSION = 1
TOP_KEYS = {"format", "version", "arch", "config", "knobs", "elfs", "ops", "ops_packed", "expect", "meta"}
U64_MAX = (1 << 64) - 1

# Argument kinds per operation (docs/trace-format.md); their ranges are checked when a file is read.
ARG_KINDS: dict[str, tuple[str, ...]] = {
    "sysctl_allocate_pgste": ("bool",),
    "exec": ("pid", "elf"),
    "fork": ("pid", "pid"),
    "exit": ("pid",),
    "mmap": ("pid", "u64", "u64", "flags"),
    "munmap": ("pid", "u64", "u64"),
    "madvise": ("pid", "u64", "u64", "advice"),
    "fault": ("pid", "u64", "bool"),
    "split": ("pid", "u64"),
    "rcu_lock": ("cpu",),
    "rcu_unlock": ("cpu",),
    "rcu_gp": (),
    "walk_begin": ("cpu", "pid", "u64"),
    "walk_step": ("cpu",),
    "walk_end": ("cpu",),
    "rmap_begin": ("cpu", "pid", "u64"),
    "rmap_commit": ("cpu",),
    "vm_create": ("vm", "pid", "ipa"),
    "memslot": ("vm", "slot", "u64", "u64", "u64"),
    "guest_fault": ("vm", "u64", "bool"),
    "guest_fault_begin": ("cpu", "vm", "u64", "bool"),
    "guest_fault_commit": ("cpu",),
    "vm_destroy": ("vm",),
    "shm_mmap": ("pid", "u64", "u64", "obj", "u64"),
    "inval_hold": ("cpu",),
    "inval_end": ("cpu",),
    "unmap_mapping_begin": ("cpu", "pid", "u64"),
    "frag_hold": ("cpu",),
    "frag_end": ("cpu",),
    "walk_pin": ("cpu",),
    "collapse_hold": ("cpu",),
    "collapse_end": ("cpu",),
    "tlb_access": ("cpu", "pid", "u64", "bool"),
    "mremap": ("pid", "u64", "u64", "u64", "u64"),
    "mremap_hold": ("cpu",),
    "mremap_end": ("cpu",),
    "khugepaged": ("pid", "u64"),
    "hugetlb_mmap": ("pid", "u64", "u64", "hfile", "u64"),
    "unshare_hold": ("cpu",),
    "unshare_end": ("cpu",),
}
KIND_MAX = {"bool": 1, "pid": 63, "cpu": 15, "vm": 15, "slot": 31, "flags": 7, "advice": 3, "obj": 15,
            "hfile": 7, "u64": U64_MAX}
KIND_TEXT = {"bool": "0 or 1", "pid": "a pid 0..63", "cpu": "a cpu 0..15", "vm": "a vm 0..15",
             "slot": "a slot 0..31", "flags": "flags 0..7", "advice": "advice 0..3", "obj": "an object 0..15", "hfile": "a hugetlbfs file 0..7",
             "u64": "an integer 0..2^64-1", "ipa": "ipa_bits 0 or 32..52", "elf": "-1 or an index into elfs"}

CONFIG_RULES: dict[str, dict[str, Any]] = {
    "granule": {"arches": {"arm64"}, "type": int, "values": {4096, 16384, 65536}},
    "va_bits": {"arches": {"arm64"}, "type": int, "values": {36, 39, 42, 47, 48, 52}},
    "pa_bits": {"arches": {"arm64"}, "type": int, "values": {48, 52}},
    "la57": {"arches": {"x86_64"}, "type": bool, "values": {True, False}},
    "max_table_pages": {"arches": set(ARCH_NAMES), "type": int, "values": None},
}
ARM64_VA_BITS = {4096: {39, 48}, 16384: {36, 47, 48}, 65536: {42, 48, 52}}
CONFIG_DEFAULTS = {"granule": 4096, "va_bits": 48, "la57": False, "max_table_pages": 262144, "pa_bits": 48}

assert [n for n, _ in OPS] == list(ARG_KINDS), "trace schema and engine disagree on the operations"
assert all(len(ARG_KINDS[n]) == k for n, k in OPS), "trace schema and engine disagree on argument counts"


def _column_limits():
    """Per opcode and argument column: the largest value allowed (unused columns must be 0)."""
    hi = np.zeros((len(OPS), OP_WIDTH), dtype=np.uint64)
    for i, (name, _) in enumerate(OPS):
        hi[i, 0] = U64_MAX
        for j, kind in enumerate(ARG_KINDS[name], start=1):
            hi[i, j] = KIND_MAX.get(kind, U64_MAX)
    return hi


_HI = _column_limits()
_ELF_COL = {i: ARG_KINDS[n].index("elf") + 1 for i, (n, _) in enumerate(OPS) if "elf" in ARG_KINDS[n]}
_IPA_COL = {i: ARG_KINDS[n].index("ipa") + 1 for i, (n, _) in enumerate(OPS) if "ipa" in ARG_KINDS[n]}
# The same rules as the engine's check_packed and decode_ops take them: per opcode the column maxima, the
# columns of an elf index and of ipa_bits, and the column allowed to be -1 in list form.
_LIMITS = np.ascontiguousarray(_HI).tobytes()
_SPECIAL = bytes(b for i in range(len(OPS)) for b in (_ELF_COL.get(i, 0), _IPA_COL.get(i, 0)))
ELF_COLS = bytes(_ELF_COL.get(i, 0) for i in range(len(OPS)))


@dataclass
class Trace:
    arch: str
    ops: np.ndarray  # (n, 6) uint64: opcode and 5 arguments
    config: dict = field(default_factory=dict)
    knobs: dict = field(default_factory=dict)
    elfs: list = field(default_factory=list)
    expect: dict | None = None
    meta: dict | None = None
    packed: bool = False

    def full_config(self) -> dict:
        return {**CONFIG_DEFAULTS, **self.config}

    def op_list(self) -> list[list]:
        return [op_to_list(row) for row in self.ops]

    def expected_kind(self) -> str | None:
        e = self.expect or {"verdict": "clean"}
        return e.get("kind") if e.get("verdict") == "violation" else None


class FileTrace(Trace):
    """A validated packed trace whose operations stay in its file (load(path, stream=True)): the engine
    streams them from `source` (packed.OpsFile) a chunk at a time, and `ops` maps them read-only the first
    time something needs them at random (steps, reports). dataclasses.replace gives a copy without a source,
    which runs from that mapping like any Trace."""

    source = None

    def __init__(self, *args, source=None, **kwargs):
        self.source = source
        super().__init__(*args, **kwargs)

    @property
    def ops(self) -> np.ndarray:
        if self._ops is None:
            self._ops = self.source.map()
        return self._ops

    @ops.setter
    def ops(self, value) -> None:
        self._ops = value


class OpsSection:
    """The ops or ops_packed value of a trace read from a file (trace/packed.py): read(nelfs, stream) decodes and
    checks it, giving the (n, 6) array, or with stream where it lies in the file; ValueError when malformed."""

    packed: bool

    def read(self, nelfs: int, stream: bool):
        raise NotImplementedError


def op_to_list(row) -> list:
    code = int(row[0])
    name = OPS[code][0]
    args = [int(a) for a in row[1:1 + OPS[code][1]]]
    if code in _ELF_COL and args[_ELF_COL[code] - 1] == U64_MAX:
        args[_ELF_COL[code] - 1] = -1
    return [name, *args]


def op_text(row) -> str:
    name, *args = op_to_list(row)
    shown = [hex(a) if kind == "u64" and a >= 4096 else str(a) for a, kind in zip(args, ARG_KINDS[name])]
    return f"{name}({', '.join(shown)})"


def explain_op(i: int, op) -> str:
    """Why list-form operation i is malformed (the engine's packer only says where)."""
    if not isinstance(op, (list, tuple)) or not op or not isinstance(op[0], str):
        return f"ops[{i}]: an operation is an array starting with its name"
    name = op[0]
    code = OP_NUMBER.get(name)
    if code is None:
        return f"ops[{i}]: unknown operation {name!r}"
    want, args = OPS[code][1], op[1:]
    if len(args) != want:
        return f'ops[{i}]: "{name}" takes {want} argument{"s" * (want != 1)}, got {len(args)}'
    for a in args:
        if type(a) is not int:
            return f'ops[{i}]: "{name}" arguments must be integers, got {a!r}'
    return f'ops[{i}]: "{name}" argument outside 0..2^64-1 ({", ".join(map(str, args))})'


def ops_from_list(ops: list) -> np.ndarray:
    """[["mmap", 1, ...], ...] -> (n, 6) uint64; a malformed operation raises ValueError("ops[i]: ...")."""
    packed, bad = _engine.pack_ops(ops, OP_NUMBER, _ELF_COL)
    if packed is None:
        raise ValueError(explain_op(bad, ops[bad]))
    return np.frombuffer(packed, dtype=np.uint64).reshape(-1, OP_WIDTH)


def check_ops(arr: np.ndarray, nelfs: int, base: int = 0) -> None:
    """Range checks on the packed form (in C, a few nanoseconds an operation); the first bad one raises
    ValueError("ops[base + i]: ..."), worded by _check_chunk."""
    arr = np.require(arr, dtype=np.uint64, requirements=["C", "A"])  # the engine reads whole aligned words
    bad = _engine.check_packed(arr, _LIMITS, _SPECIAL, nelfs)
    if bad >= 0:
        _check_chunk(arr[bad:bad + 1], nelfs, base + bad)
        raise AssertionError(f"ops[{base + bad}]: the engine's range check and the trace layer's disagree")


def _check_chunk(arr: np.ndarray, nelfs: int, base: int) -> None:
    codes = arr[:, 0]
    bad = codes >= len(OPS)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"ops[{base + i}]: unknown opcode {int(codes[i])}")
    hi = _HI[codes.astype(np.intp)]
    over = arr > hi
    for code, col in _ELF_COL.items():
        rows = codes == code
        v = arr[:, col]
        over[:, col] &= ~(rows & (v == U64_MAX))
        over[:, col] |= rows & (v >= nelfs) & (v != U64_MAX)
    for code, col in _IPA_COL.items():
        v = arr[:, col]
        bad_ipa = ~((v == 0) | ((v >= 32) & (v <= 52)))
        over[:, col] = np.where(codes == code, bad_ipa, over[:, col])
    if over.any():
        i = int(np.argmax(over.any(axis=1)))
        code = int(codes[i])
        name = OPS[code][0]
        col = int(np.argmax(over[i]))
        kinds = ARG_KINDS[name]
        if col > len(kinds):
            raise ValueError(f'ops[{base + i}]: "{name}" unused argument {col} must be 0')
        kind = kinds[col - 1]
        value = int(arr[i, col])
        if kind == "elf" and value == U64_MAX:
            value = -1
        raise ValueError(f'ops[{base + i}]: "{name}" argument {col} is {value}, expected {KIND_TEXT[kind]}')


def check_config(arch: str, config: Any) -> dict:
    if not isinstance(config, dict):
        raise ValueError("config: must be a map")
    for key, value in config.items():
        rule = CONFIG_RULES.get(key)
        if rule is None:
            raise ValueError(f"config: unknown key {key!r}")
        if arch not in rule["arches"]:
            raise ValueError(f"config.{key}: does not apply to {arch}")
        if type(value) is not rule["type"]:
            raise ValueError(f"config.{key}: must be {rule['type'].__name__}")
        if rule["values"] is not None and value not in rule["values"]:
            raise ValueError(f"config.{key}: {value!r} is not one of {sorted(rule['values'])}")
        if key == "max_table_pages" and not 1 <= value <= 1 << 32:
            raise ValueError(f"config.max_table_pages: {value} is outside 1..2^32")
    if arch == "arm64":
        g = config.get("granule", 4096)
        v = config.get("va_bits", 48)
        if v not in ARM64_VA_BITS[g]:
            raise ValueError(f"config: va_bits {v} is not supported with granule {g}")
        if config.get("pa_bits", 48) == 52 and g != 65536:  # v6.6: ARM64_PA_BITS_52 depends on ARM64_64K_PAGES
            raise ValueError(f"config: pa_bits 52 needs granule 65536, not {g}")
    return dict(config)


def check_knobs(arch: str, knobs: Any, where: str = "knobs") -> dict:
    if not isinstance(knobs, dict):
        raise ValueError(f"{where}: must be a map")
    for name, value in knobs.items():
        k = KNOB_BY_NAME.get(name)
        if k is None:
            raise ValueError(f"{where}: unknown knob {name!r}")
        if arch not in k.arches:
            raise ValueError(f"{where}.{name}: does not apply to {arch}")
        if value not in k.values:
            raise ValueError(f"{where}.{name}: {value!r} is not one of {', '.join(k.values)}")
    return dict(knobs)


def _check_expect(expect: Any) -> dict:
    if not isinstance(expect, dict) or expect.get("verdict") not in ("clean", "violation"):
        raise ValueError('expect: must be {"verdict": "clean"} or {"verdict": "violation", "kind": KIND}')
    if expect["verdict"] == "clean" and set(expect) != {"verdict"}:
        raise ValueError('expect: a clean verdict takes no other key')
    if expect["verdict"] == "violation":
        if set(expect) != {"verdict", "kind"} or expect["kind"] not in VIOLATION_KINDS:
            raise ValueError(f"expect.kind: must be one of {', '.join(VIOLATION_KINDS)}")
    return dict(expect)


def from_map(doc: Any, stream: bool = False) -> Trace:
    """Validate a decoded trace map; ValueError("where: what") on the first problem. stream: a packed section
    read from a file stays there (a FileTrace)."""
    if not isinstance(doc, dict):
        raise ValueError("a trace is one msgpack map")
    for key in doc:
        if key not in TOP_KEYS:
            raise ValueError(f"unknown top-level key {key!r}")
    if doc.get("format") != FORMAT:
        raise ValueError(f'format: must be "{FORMAT}"')
    if doc.get("version") != VERSION or type(doc.get("version")) is not int:
        raise ValueError(f"version: must be {VERSION}")
    arch = doc.get("arch")
    if arch not in ARCH_NAMES:
        raise ValueError(f"arch: must be one of {', '.join(ARCH_NAMES)}")
    config = check_config(arch, doc.get("config", {}))
    knobs = check_knobs(arch, doc.get("knobs", {}))
    elfs = doc.get("elfs", [])
    if not isinstance(elfs, list) or not all(isinstance(b, bytes) for b in elfs):
        raise ValueError("elfs: must be an array of bin")
    if ("ops" in doc) == ("ops_packed" in doc):
        raise ValueError('exactly one of "ops" and "ops_packed" is required')
    section = doc.get("ops", doc.get("ops_packed"))
    source = None
    if isinstance(section, OpsSection):  # read from a file: decoded or checked there
        ops = section.read(len(elfs), stream)
        packed = section.packed
        if not isinstance(ops, np.ndarray):
            source, ops = ops, None
    elif "ops" in doc:
        if not isinstance(doc["ops"], list):
            raise ValueError("ops: must be an array")
        ops = ops_from_list(doc["ops"])
        packed = False
    else:
        raw = doc["ops_packed"]
        if not isinstance(raw, bytes):
            raise ValueError("ops_packed: must be bin")
        if len(raw) % (8 * OP_WIDTH):
            raise ValueError(f"ops_packed: length {len(raw)} is not a multiple of {8 * OP_WIDTH}")
        ops = np.frombuffer(raw, dtype="<u8").reshape(-1, OP_WIDTH)
        if ops.dtype != np.uint64:  # a big-endian host needs its own copy
            ops = ops.astype(np.uint64)
        packed = True
    if not isinstance(section, OpsSection):
        check_ops(ops, len(elfs))
    expect = _check_expect(doc["expect"]) if "expect" in doc else None
    meta = doc.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise ValueError("meta: must be a map")
    if source is not None:
        return FileTrace(arch, None, config, knobs, list(elfs), expect, meta, packed, source=source)
    return Trace(arch, ops, config, knobs, list(elfs), expect, meta, packed)


def to_map(trace: Trace, packed: bool | None = None) -> dict:
    packed = trace.packed if packed is None else packed
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "arch": trace.arch}
    if trace.config:
        doc["config"] = dict(trace.config)
    if trace.knobs:
        doc["knobs"] = dict(trace.knobs)
    if trace.elfs:
        doc["elfs"] = list(trace.elfs)
    if packed:
        doc["ops_packed"] = np.ascontiguousarray(trace.ops, dtype="<u8").tobytes()
    else:
        doc["ops"] = trace.op_list()
    if trace.expect is not None:
        doc["expect"] = dict(trace.expect)
    if trace.meta is not None:
        doc["meta"] = dict(trace.meta)
    return doc
