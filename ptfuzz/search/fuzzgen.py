"""Trace generation: the engine's generator (native_ext/search/gen.c), driven by random seeds or decision bytes.

One generator serves every engine: random seeds (`ptfuzz fuzz --engine random`, seed corpora), bytes from
atheris and hypothesis (any bytes decode to a valid trace, so byte mutations are decision mutations), and
the workloads of `ptfuzz gen`. It runs in C, deciding against the live engine after each operation, so a
generated trace comes with its outcome: the trace replays to exactly that result."""
import enum
import random
from dataclasses import dataclass

import numpy as np

from .. import _engine
from ..engine import CONFIG_ORDER
from ..names import ARCH_NAMES, OP_WIDTH, VIOLATION_KINDS, knob_vector
from ..trace import CONFIG_DEFAULTS, Trace
from .elfimage import s390_elf

U64 = (1 << 64) - 1


class Profile(enum.IntEnum):
    """gen.h's enum gen_profile_id: what a trace is for."""
    FUZZ = 0      # up to max_ops operations, stopping at the first violation
    WORKLOAD = 1  # exactly max_ops operations that mostly succeed, VMs on anonymous memory only


class Choices:
    """Where decisions come from. The C generator takes the seed or the bytes; below() decides in Python,
    for crosscheck's host-only generator (crosscheck.HostGen, with RandomChoices)."""

    def below(self, n: int) -> int:
        raise NotImplementedError

    def chance(self, percent: int) -> bool:
        return self.below(100) < percent

    def rarely(self, percent: int) -> bool:
        """Like chance, but a zero decision (what exhausted bytes read as, and what hypothesis shrinks towards)
        says no: a branch added later does not change what the simplest inputs do."""
        return self.below(100) >= 100 - percent

    def pick(self, seq):
        return seq[self.below(len(seq))]


class RandomChoices(Choices):
    """Decisions from a seed (in C: xoshiro256**; in Python: random.Random)."""

    def __init__(self, seed: int):
        self.seed = seed
        self._random = None  # the C generator takes the seed alone: seeding a Mersenne Twister per trace cost 10%

    def below(self, n: int) -> int:
        if self._random is None:
            self._random = random.Random(self.seed).random
        return int(self._random() * n) if n > 1 else 0


class RecordingChoices(RandomChoices):
    """Random decisions, recorded in ByteChoices' encoding once a trace is generated: the bytes replay the
    same trace (seed corpora)."""

    def __init__(self, seed: int):
        super().__init__(seed)
        self.bytes = b""


class ByteChoices(Choices):
    """Decisions read from a byte string, by the C generator only: below(n) takes 1, 2 or 4 little-endian
    bytes (n <= 2^8, 2^16, more) modulo n, zeros past the end (gen.c, struct choices)."""

    def __init__(self, data: bytes):
        self.data = bytes(data)


@dataclass
class Layout:
    """Where the generator puts things, as gen.c's gen_layout computes it from the engine's geometry:
    regions of a PUD or 4 PMDs from 4 regions up, vm_create's ipa choices. check's address slots and
    crosscheck's host generator take theirs from here."""
    page: int
    pmd: int
    pud: int | None
    region: int
    base: int
    ipas: tuple

    @classmethod
    def of(cls, arch: str, config: dict) -> "Layout":
        L = trace_gen(arch, {}, config).layout()
        return cls(L["page"], L["pmd"], L["pud"] or None, L["region"], L["base"], tuple(L["ipas"]))


def generator_elfs(arch: str) -> list[bytes]:
    """The ELF images a generated trace carries: exec's elf 0 has PT_S390_PGSTE, 1 not, 2 is truncated."""
    return [s390_elf(True), s390_elf(False), s390_elf(False)[:40]] if arch == "s390" else []


@dataclass
class Generated:
    """One generated trace and what the engine saw while generating it."""
    trace: Trace
    violation: str | None  # the kind, when the trace (or its teardown) violates
    op_index: int
    message: str


class TraceGen:
    """The C generator for one arch, knob set and config; run() is one trace."""

    def __init__(self, arch: str, knobs: dict | None = None, config: dict | None = None,
                 profile: Profile = Profile.FUZZ, engine_module=None):
        """engine_module: another build of the C engine to generate with (atheris' unguided share runs on the
        uninstrumented one while the worker's own is the coverage build); the traces are the same."""
        self.arch, self.knobs, self.config, self.profile = arch, dict(knobs or {}), dict(config or {}), profile
        cfg = {**CONFIG_DEFAULTS, **self.config}
        self.elfs = generator_elfs(arch)
        self._gen = (engine_module or _engine).Generator(ARCH_NAMES.index(arch), knob_vector(arch, self.knobs),
                                                         tuple(int(cfg[k]) for k in CONFIG_ORDER), tuple(self.elfs),
                                                         int(profile))

    def raw(self, choices: Choices, max_ops: int, teardown: bool = True):
        """(packed ops, violation number, op index, message, recorded bytes): no Trace built (atheris' path)."""
        if isinstance(choices, ByteChoices):
            return self._gen.run(choices.data, max_ops, teardown=teardown)
        if isinstance(choices, RandomChoices):
            out = self._gen.run(choices.seed & U64, max_ops, record=isinstance(choices, RecordingChoices),
                                teardown=teardown)
            if isinstance(choices, RecordingChoices):
                choices.bytes = out[4]
            return out
        raise TypeError(f"the generator takes ByteChoices or RandomChoices, not {type(choices).__name__}")

    def layout(self) -> dict:
        return self._gen.layout()

    def trace_of(self, packed: bytes, meta: dict | None = None) -> Trace:
        ops = np.frombuffer(packed, dtype=np.uint64).reshape(-1, OP_WIDTH).copy()
        return Trace(self.arch, ops, config=dict(self.config), knobs=dict(self.knobs), elfs=list(self.elfs),
                     meta=meta)

    def run(self, choices: Choices, max_ops: int, teardown: bool = True, meta: dict | None = None) -> Generated:
        packed, viol, idx, msg, _ = self.raw(choices, max_ops, teardown)
        return Generated(self.trace_of(packed, meta), VIOLATION_KINDS[viol - 1] if viol else None, idx, msg)


_cache: dict = {}


def trace_gen(arch: str, knobs: dict | None = None, config: dict | None = None,
              profile: Profile = Profile.FUZZ) -> TraceGen:
    """A TraceGen, kept for the next call with the same arguments (campaigns generate millions)."""
    key = (arch, tuple(sorted((knobs or {}).items())), tuple(sorted((config or {}).items())), int(profile))
    g = _cache.get(key)
    if g is None:
        if len(_cache) > 64:
            _cache.clear()
        g = _cache[key] = TraceGen(arch, knobs, config, profile)
    return g


def fuzz_trace(arch: str, choices: Choices, max_ops: int, knobs: dict, config: dict | None = None) -> Trace:
    """One fuzz trace from these decisions."""
    return trace_gen(arch, knobs, config).run(choices, max_ops).trace


def seed_inputs(arch: str, count: int, max_ops: int = 32, config: dict | None = None, first: int = 0,
                knobs: dict | None = None):
    """Decision streams of random traces (seeds first, first+1, ...), for libFuzzer's starting corpus. The
    decisions are taken against the engine under these knobs; under others the same bytes may decode to
    another trace (the live state differs), which for a starting corpus does not matter."""
    g = trace_gen(arch, knobs, config)
    for seed in range(first, first + count):
        rec = RecordingChoices(seed)
        g.raw(rec, max_ops)
        yield bytes(rec.bytes)
