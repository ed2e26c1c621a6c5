"""Workload generation (`ptfuzz gen`, benchmarks) and the ELF images generated traces carry."""
import struct

from .trace import Trace


def s390_elf(pgste: bool) -> bytes:
    """A minimal big-endian s390x ET_EXEC header with a PT_LOAD and, optionally, PT_S390_PGSTE."""
    phnum = 2 if pgste else 1
    e = bytearray(64 + 56 * phnum)
    e[0:7] = b"\x7fELF\x02\x02\x01"
    struct.pack_into(">HHIQQQIHHHHHH", e, 16, 2, 22, 1, 0x1000, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    struct.pack_into(">IIQQQQQQ", e, 64, 1, 5, 0, 0x1000, 0x1000, 0x100, 0x100, 0x1000)
    if pgste:
        struct.pack_into(">IIQQQQQQ", e, 120, 0x70000000, 4, 0, 0, 0, 0, 0, 8)
    return bytes(e)


def generate(arch: str, nops: int, seed: int = 0, knobs: dict | None = None, config: dict | None = None) -> Trace:
    """A workload of exactly nops operations from the engine's generator (gen.c, the workload profile):
    processes, mappings, faults, THP, shared memory, walkers, rmap walkers, VMs on anonymous memory (on s390
    a VM over shared memory that another process collapses is BENCH.md M1, a violation under the defaults,
    and a workload must run to its end), invalidation windows on arm64 and x86_64. The decisions are taken
    against the engine under these knobs, so the trace's operations mostly succeed."""
    from .fuzzgen import Profile, RandomChoices, trace_gen
    return trace_gen(arch, knobs, config, Profile.WORKLOAD).run(
        RandomChoices(seed), nops, teardown=False, meta={"found_by": "gen", "seed": seed}).trace
