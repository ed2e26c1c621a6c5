"""Workload generation (`ptfuzz gen`, benchmarks): the engine's generator under the workload profile."""
from ..trace import Trace
from .elfimage import s390_elf
from .fuzzgen import Profile, RandomChoices, trace_gen

__all__ = ["generate", "s390_elf"]  # s390_elf lives in elfimage; importers of gen keep it


def generate(arch: str, nops: int, seed: int = 0, knobs: dict | None = None, config: dict | None = None) -> Trace:
    """A workload of exactly nops operations from the engine's generator (gen.c, the workload profile):
    processes, mappings, faults, THP, shared memory, walkers, rmap walkers, VMs on anonymous memory (on s390
    a VM over shared memory that another process collapses is docs/bench.md M1, a violation under the defaults,
    and a workload must run to its end), invalidation windows on arm64 and x86_64. The decisions are taken
    against the engine under these knobs, so the trace's operations mostly succeed."""
    return trace_gen(arch, knobs, config, Profile.WORKLOAD).run(
        RandomChoices(seed), nops, teardown=False, meta={"found_by": "gen", "seed": seed}).trace
