"""crosscheck: the model held against the running kernel, operation by operation, on host-only traces."""
from __future__ import annotations

import enum
import hashlib
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import trace as tracemod
from .. import engine
from ..errors import UsageError
from ..search.fuzzgen import Layout, RandomChoices
from .host import Host, HostError, HostInfo, host_supported
from ..search.minimize import shrink
from ..names import KNOBS, OP_NUMBER
from ..trace import Trace, op_text, op_to_list

# The host operations: what a process can do to its own address space, and what the helper does for real.
HOST_OPS = ("exec", "fork", "exit", "mmap", "shm_mmap", "hugetlb_mmap", "munmap", "madvise", "fault", "mremap")
# The private window every generated address lies in: PGD slot 64 on x86_64 (4-level and la57) and
# arm64 48-bit, far from the helper's own mappings and from the model's exec stack at the top of the
# address space, so that page-table bytes of the window compare without either side's other tables.
WINDOW = 0x200000000000
WINDOW_SPAN = 3 << 30  # the generator's mappings in the first 1 GiB, its shared hugetlb ones (PUD-aligned) above
# Shared hugetlb mappings (hugetlb_mmap): PUD-size, PUD-aligned, so that PMD tables are shared (want_pmd_share);
# these with 4K pages, where PUD_SIZE is 1 GiB; share_size and window_end give every geometry's
HUGETLB_BASE, HUGETLB_SPAN = WINDOW + (1 << 30), 2 << 30
# Huge pages crosscheck adds to the pool (vm.nr_hugepages) for hugetlb_mmap's faults, and gives back at the end:
# a trace faults at most one huge page per operation, and the files are emptied between traces
HUGETLB_POOL = 64
HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}


class Figure(str, enum.Enum):
    """What is compared after every operation."""
    RESULT = "result"          # 0 or -errno
    PIDS = "processes"         # which pids have an address space
    PT_BYTES = "pt_bytes"      # VmPTE against the model's table bytes (deposits included), per process
    PMD_MAPPED = "pmd_mapped"  # which 2 MiB blocks of the window are PMD-mapped, per process


@dataclass
class Step:
    """One side's figures after one operation."""
    result: int
    procs: dict[int, tuple[int, tuple[int, ...]]]  # pid -> (window table bytes, PMD-mapped blocks)

    def to_doc(self) -> dict:
        return {"result": self.result,
                "procs": {str(p): {"pt_bytes": b, "pmd_mapped": list(blocks)} for p, (b, blocks) in self.procs.items()}}


@dataclass
class Disagreement:
    op_index: int
    op: str
    figure: Figure
    pid: int | None
    model: object
    kernel: object

    def to_doc(self) -> dict:
        return {"op_index": self.op_index, "op": self.op, "figure": self.figure.value, "pid": self.pid,
                "model": self.model, "kernel": self.kernel}

    def text(self) -> str:
        who = f" of pid {self.pid}" if self.pid is not None else ""
        return f"op {self.op_index} {self.op}: {self.figure.value}{who}: model {self.model}, kernel {self.kernel}"


def compare(model: list[Step], kernel: list[Step], ops: np.ndarray) -> Disagreement | None:
    """The first figure that differs, in operation order; within an operation: result, processes, bytes, blocks."""
    for i, (m, k) in enumerate(zip(model, kernel)):
        op = op_text(ops[i])
        if m.result != k.result:
            return Disagreement(i, op, Figure.RESULT, None, m.result, k.result)
        if sorted(m.procs) != sorted(k.procs):
            return Disagreement(i, op, Figure.PIDS, None, sorted(m.procs), sorted(k.procs))
        for pid in sorted(m.procs):
            if m.procs[pid][0] != k.procs[pid][0]:
                return Disagreement(i, op, Figure.PT_BYTES, pid, m.procs[pid][0], k.procs[pid][0])
            if m.procs[pid][1] != k.procs[pid][1]:
                return Disagreement(i, op, Figure.PMD_MAPPED, pid, [hex(a) for a in m.procs[pid][1]],
                                    [hex(a) for a in k.procs[pid][1]])
    if len(model) != len(kernel):
        i = min(len(model), len(kernel))
        return Disagreement(i, op_text(ops[i]), Figure.RESULT, None, "stopped" if len(model) == i else "ran",
                            "stopped" if len(kernel) == i else "ran")
    return None


def shares_pmd_tables(arch: str, page: int) -> bool:
    """v6.6 selects ARCH_WANT_HUGE_PMD_SHARE on x86 and on arm64 with 4K or 16K pages; not on s390 or arm64 64K."""
    return arch != "s390" and page <= 16384


def share_size(arch: str, layout: Layout) -> int:
    """PUD_SIZE as PMD sharing uses it: what one entry of the level above the PMD tables maps, PMD_SIZE times the
    entries of a table (1 GiB with 4K pages, 64 GiB with arm64's 16K); 1 GiB where nothing is shared
    (shares_pmd_tables). The generator's whole-range hugetlb mappings are this size."""
    if not shares_pmd_tables(arch, layout.page):
        return 1 << 30
    return layout.pmd * (layout.page // 8)


def hugetlb_range(arch: str, layout: Layout) -> tuple[int, int]:
    """(base, span) of the generator's shared hugetlb mappings: two PUD ranges above the first one of the window."""
    pud = share_size(arch, layout)
    return WINDOW + pud, 2 * pud


def window_end(arch: str, config: dict) -> int:
    """The end of the window the figures cover: WINDOW + WINDOW_SPAN with 4K pages, 192 GiB with 16K."""
    base, span = hugetlb_range(arch, Layout.of(arch, config))
    return max(WINDOW + WINDOW_SPAN, base + span)


# ---- the two sides ----

# /proc/vmstat's counts of huge pages this host's kernel tried and failed to allocate (a fault or khugepaged fell back
# to small pages, or the huge zero page could not be had): the model always gets its huge page
THP_FAILURES = ("thp_fault_fallback", "thp_file_fallback", "thp_collapse_alloc_failed", "thp_zero_page_alloc_failed")


def thp_failures() -> int:
    """This host's THP allocation failures so far (0 where /proc/vmstat says nothing of them)."""
    try:
        text = Path("/proc/vmstat").read_text()
    except OSError:
        return 0
    counts = dict(line.split() for line in text.splitlines() if line.count(" ") == 1)
    return sum(int(counts.get(name, 0)) for name in THP_FAILURES)


class KernelSide:
    """Runs a trace for real through the helper; every process it created is gone afterwards. thp_failed: the
    host failed to allocate a huge page during the last run (another process's memory, not the trace, decided it)."""
    thp_failed = False

    def __init__(self, host: Host, lo: int = WINDOW, hi: int = WINDOW + WINDOW_SPAN):
        self.host, self.lo, self.hi = host, lo, hi

    def run(self, ops: np.ndarray) -> list[Step]:
        failures = thp_failures()
        try:
            return self._run(ops)
        finally:
            self.thp_failed = thp_failures() > failures

    def _run(self, ops: np.ndarray) -> list[Step]:
        live: set[int] = set()
        steps = []
        self.host.shm_reset()  # every trace starts with empty shm objects, as the model's do
        try:
            for row in ops:
                name, *args = op_to_list(row)
                if name == "exec":
                    args = args[:1]  # elf -1: an ordinary executable, which the helper's fresh child is
                r = self.host.op(name, *args)
                if r == 0 and name == "exec":
                    live.add(args[0])
                elif r == 0 and name == "fork":
                    live.add(args[1])
                elif r == 0 and name == "exit":
                    live.discard(args[0])
                steps.append(Step(r, {pid: self.host.figures(pid, self.lo, self.hi) for pid in sorted(live)}))
        finally:
            for pid in sorted(live):
                self.host.op("exit", pid)
        return steps


class ModelSide:
    """Runs a trace in the engine with the host's config and knobs; table bytes relative to a fresh exec."""

    def __init__(self, arch: str, config: dict, knobs: dict, lo: int = WINDOW, hi: int = WINDOW + WINDOW_SPAN):
        self.arch, self.config, self.knobs, self.lo, self.hi = arch, config, knobs, lo, hi
        # The model's exec builds the stack and its tables; they lie outside the window, and fork copies
        # them as the kernel does, so every process carries the same constant the helper subtracts too.
        _, figs = engine.replay_figures(self.trace(tracemod.ops_from_list([["exec", 0, -1]])), lo, hi)
        self.baseline = figs[0][0][0]

    def trace(self, ops: np.ndarray) -> Trace:
        return Trace(self.arch, ops, config=dict(self.config), knobs=dict(self.knobs))

    def run(self, ops: np.ndarray) -> list[Step]:
        result, figs = engine.replay_figures(self.trace(ops), self.lo, self.hi, steps=True)
        return [Step(int(r), {pid: (b - self.baseline, tuple(blocks)) for pid, (b, blocks) in sorted(f.items())})
                for r, f in zip(result.op_results, figs)]


# ---- the host and what it shows ----

@dataclass
class HostFacts:
    arch: str
    release: str
    info: HostInfo
    probes: dict[str, int]
    config: dict
    knobs: dict                      # knobs the probes set (newer-kernel behaviour), before --knob
    notes: list[str] = field(default_factory=list)
    hugetlb: str | None = "not set up"  # why traces cannot use hugetlb_mmap here; None: they can

    def describe(self) -> str:
        knobs = ", ".join(f"{k}={v}" for k, v in self.knobs.items()) or "none"
        return (f"host: Linux {self.release} {self.arch}, {'5' if self.info.la57 else '4'}-level "
                f"(va_bits {self.info.va_bits}), PMD scan by {self.info.method}; knobs from probes: {knobs}")


# Behaviour newer than v6.6 that a probe shows, and the knob that models it. A probe missing from a
# helper's answer, or a knob this engine does not have, sets nothing.
PROBE_KNOBS = [
    ("pt_reclaim", "mm.pt_reclaim", "yes",
     "MADV_DONTNEED of a whole PTE table freed it (CONFIG_PT_RECLAIM, Linux 6.14+)"),
    ("huge_zero_wp_pmd", "mm.huge_zero_wp", "thp",
     "a write to the huge zero page maps a new THP instead of splitting the PMD (Linux 6.13+)"),
    ("collapse_readonly", "mm.collapse_readonly", "yes",
     "MADV_COLLAPSE collapsed a block holding only none and zero-page PTEs (Linux 6.18+)"),
    ("merge_unfaulted", "mm.merge_unfaulted", "yes",
     "a faulted VMA merged into its never-faulted neighbour (Linux 6.16+ is_mergeable_anon_vma)"),
    ("file_pmd_nohuge", "mm.file_pmd_nohuge", "ptes",
     "a PMD-size shmem folio faulted in a NOHUGEPAGE VMA was mapped by PTEs (2b0f922323cc, 6.12, 6.6.60+)"),
    ("collapse_pmd_alloc", "mm.collapse_pmd_alloc", "yes",
     "MADV_COLLAPSE of shmem with no PMD table in the caller mapped the folio (seen on 6.18)"),
    ("collapse_subblock", "mm.collapse_subblock", "ok",
     "MADV_COLLAPSE of a range inside one block succeeded (seen on 7.2; v6.6 answers -22)"),
    ("collapse_pmd_none", "mm.collapse_pmd_none", "continue",
     "MADV_COLLAPSE went on past an empty pmd and collapsed the next block (seen on 7.2)"),
    ("mremap_multi_vma", "mremap.move_multi_vma", "yes",
     "mremap moved a range running past its VMA (remap_move, Linux 6.17+; v6.6 answers -14)"),
    ("file_retract_caller", "mm.file_retract", "caller",
     "MADV_COLLAPSE of shmem over the caller's empty pmd failed and left another process's table "
     "(6.1-6.4 retract_page_tables: the caller's mapping only)"),
]


# Probes that are short traces, run on the kernel side like any other (no helper code of their own): each gives
# the rows of a trace in the window (lo, page, pmd) and what its kernel steps show (1) or not (0). Their answers join
# the helper's probes, and PROBE_KNOBS turns them into knobs.
def _probe_subblock(lo, page, pmd):
    rows = [["exec", 1, -1], ["mmap", 1, lo, 2 * pmd, 1], ["fault", 1, lo, 0], ["madvise", 1, lo + page, page, 3]]
    return rows, lambda steps: steps[1].result == 0 and steps[-1].result == 0


def _probe_pmd_none(lo, page, pmd):
    rows = [["exec", 1, -1], ["mmap", 1, lo, 2 * pmd, 0], ["fault", 1, lo + 2 * pmd - page, 1],
            ["madvise", 1, lo, 2 * pmd, 3]]
    return rows, lambda steps: lo + pmd in steps[-1].procs.get(1, (0, ()))[1]


def _probe_file_retract(lo, page, pmd):
    rows = [["exec", 1, -1], ["mmap", 1, lo + 2 * pmd, pmd, 0], ["fault", 1, lo + 2 * pmd, 1],
            ["shm_mmap", 1, lo, pmd, 0, 0], ["fork", 1, 2], ["fault", 2, lo, 0], ["madvise", 1, lo, pmd, 3]]
    return rows, lambda steps: (steps[4].result == 0 and steps[-1].result == -22
                                and lo not in steps[-1].procs.get(1, (0, ()))[1])


def _probe_mremap_multi(lo, page, pmd):
    rows = [["exec", 1, -1], ["mmap", 1, lo, page, 0], ["mremap", 1, lo, pmd, lo + 4 * pmd, pmd]]
    return rows, lambda steps: steps[-1].result == 0


TRACE_PROBES = (("collapse_subblock", _probe_subblock), ("collapse_pmd_none", _probe_pmd_none),
                ("file_retract_caller", _probe_file_retract), ("mremap_multi_vma", _probe_mremap_multi))


def trace_probes(side: "KernelSide", info: HostInfo, lo: int = WINDOW) -> dict[str, int]:
    """The answers of TRACE_PROBES on this kernel side (each trace cleans up after itself)."""
    out = {}
    for name, make in TRACE_PROBES:
        rows, shows = make(lo, info.page_size, info.pmd_size)
        out[name] = int(bool(shows(side.run(tracemod.ops_from_list(rows)))))
    return out


class HugetlbPool:
    """HUGETLB_POOL huge pages added to vm.nr_hugepages for the run (root only) and given back afterwards.
    reason: None when the pages are there, else why hugetlb_mmap traces are skipped. read() and write(n) reach the
    sysctl: this host's file by default, a guest's through its helper (crossguest.py); they raise OSError or
    ValueError (HostError from a helper) when they cannot."""
    PATH = Path("/proc/sys/vm/nr_hugepages")

    def __init__(self, pages: int = HUGETLB_POOL, read=None, write=None):
        self.pages, self.old, self.reason = pages, None, None
        self.read = read or (lambda: int(self.PATH.read_text()))
        self.write = write or (lambda n: self.PATH.write_text(str(n)))
        try:
            old = self.read()
            self.write(old + pages)
            self.old = old
            got = self.read()
            if got < old + pages:
                self.reason = f"the kernel gave only {got - old} of {pages} huge pages (vm.nr_hugepages)"
        except (OSError, ValueError, HostError) as e:
            self.reason = f"cannot add {pages} huge pages to vm.nr_hugepages: {getattr(e, 'strerror', None) or e}"
        if self.reason:
            self.restore()

    def restore(self) -> None:
        if self.old is not None:
            try:
                self.write(self.old)
            except (OSError, ValueError, HostError):
                pass
            self.old = None


def hugetlb_setup(facts: HostFacts, host: Host, pool=HugetlbPool, where: str = "") -> None:
    """facts.hugetlb (None: generated traces map shared hugetlb) and its note: the helper's hugetlbfs files, then
    HUGETLB_POOL huge pages from pool(); the pool is given back when the helper closes."""
    if not facts.info.hugetlb_files:
        facts.hugetlb = "the helper has no hugetlbfs files (memfd_create MFD_HUGETLB failed)"
    else:
        p = pool()
        host.on_close.append(p.restore)
        facts.hugetlb = p.reason
    if facts.hugetlb:
        facts.notes.append(f"no shared hugetlb mappings in generated traces: {facts.hugetlb}")
    else:
        facts.notes.append(f"shared hugetlb mappings (PMD sharing) on {HUGETLB_POOL} huge pages added to "
                           f"{where}vm.nr_hugepages for the run")


def host_facts(host: Host) -> HostFacts:
    import platform
    info = host.hello()
    probes = {**host.probe(), **trace_probes(KernelSide(host), info)}
    arch = HOST_ARCH[platform.machine()]
    config = {"la57": bool(info.la57)} if arch == "x86_64" else {"granule": info.page_size, "va_bits": info.va_bits}
    known = {k.name for k in KNOBS if arch in k.arches}
    knobs, notes = {}, []
    for probe, knob, value, why in PROBE_KNOBS:
        if probes.get(probe) and knob in known:
            knobs[knob] = value
            notes.append(f"{knob}={value}: {why}")
        elif probes.get(probe):
            notes.append(f"the host shows {probe} but the model has no {knob} knob: disagreements expected")
    facts = HostFacts(arch, platform.release(), info, probes, config, knobs, notes)
    hugetlb_setup(facts, host)
    return facts


# ---- generation ----

class HostGen:
    """A host-only generator: processes, mappings, faults, madvise, fork and exit in the crosscheck window.
    It decides in Python (crosscheck runs tens of traces a second, bound by the real kernel), with the
    picks of the engine's generator (gen.c) over its own record of what it mapped."""
    shm = "shm_mmap" in OP_NUMBER  # shm_mmap among the mappings (crosscheck --kvm's generator maps anonymous memory only)
    NPIDS, NREGIONS = 3, 4
    mremap = True  # mremap among the changes (crosscheck --kvm's helper has no mremap: its generator leaves it out)

    def __init__(self, arch: str, choices, layout: Layout, hugetlb: bool = False):
        self.arch, self.c = arch, choices
        self.hugetlb = hugetlb and "hugetlb_mmap" in OP_NUMBER  # shared hugetlb mappings (PMD sharing)
        self.L = replace(layout, base=WINDOW, region=8 * layout.pmd)
        self.pud = share_size(arch, layout)
        self.hbase, self.hspan = hugetlb_range(arch, layout)
        self.pids: dict = {}  # pid -> list of (addr, len, flags) it mapped
        self.rows: list[list] = []  # [name, args...], as a trace's list form has them

    def op(self, name: str, *args: int) -> None:
        self.rows.append([name, *args])

    def region(self) -> int:
        return self.L.base + self.c.below(self.NREGIONS) * self.L.region

    def mapping(self, pid, plain: bool = False):
        maps = [m for m in self.pids.get(pid, ()) if not (plain and m[2] == 2)]
        return self.c.pick(maps) if maps else None

    def addr_in(self, pid) -> int:
        m = self.mapping(pid)
        if m is None:
            return self.region()
        addr, length, _ = m
        pages = length // self.L.page
        index = self.c.pick([0, pages - 1, self.c.below(pages)]) if pages > 1 else 0
        return addr + index * self.L.page

    def pid(self) -> int:
        return self.c.pick(sorted(self.pids)) if self.pids else 1

    def do_fault(self):
        pid = self.pid()
        addr = self.addr_in(pid)
        if self.c.rarely(20):  # a read, then a write: the zero page, then COW or reuse
            self.op("fault", pid, addr, 0)
            self.op("fault", pid, addr, 1)
            return
        self.op("fault", pid, addr, self.c.below(2))

    def do_exec(self):
        pid = 1 + self.c.below(self.NPIDS)
        self.op("exec", pid, -1)
        self.pids[pid] = []

    def do_hugetlb(self):
        """A shared mapping of one of two hugetlbfs files: mostly a whole PUD-aligned range (1 GiB with 4K pages, 64 GiB
        with 16K: its PMD table shared with the other mappers of the same offsets), sometimes a few huge pages or an
        offset hugetlbfs refuses."""
        pid, L = self.pid(), self.L
        pud = self.pud
        addr = self.hbase + self.c.below(self.hspan // pud) * pud
        length = self.c.pick([pud, pud, pud, L.pmd * (1 + self.c.below(4))])
        pgoff = self.c.pick([0, 0, 0, pud // 2 // L.page, 1])
        file = self.c.below(2)
        self.op("hugetlb_mmap", pid, addr, length, file, pgoff)
        self.pids.setdefault(pid, []).append((addr, length, 2))
        blocks = min(length, 8 * L.pmd) // L.pmd
        for _ in range(self.c.below(3)):  # the huge pages of a few of its blocks
            self.op("fault", pid, addr + self.c.below(blocks) * L.pmd, self.c.below(2))
        if self.c.chance(50):  # a second process with the same offsets: a forked child, or its own mapping
            other = 1 + self.c.below(self.NPIDS + 1)
            if other == pid:
                return
            if self.c.chance(50) or other not in self.pids:
                self.op("fork", pid, other)
                if other not in self.pids:
                    self.pids[other] = list(self.pids.get(pid, []))
                oaddr = addr
            else:
                oaddr = self.hbase + self.c.below(self.hspan // pud) * pud
                self.op("hugetlb_mmap", other, oaddr, length, file, pgoff)
                self.pids[other].append((oaddr, length, 2))
            self.op("fault", other, oaddr + self.c.below(blocks) * L.pmd, self.c.below(2))

    def do_mmap(self):
        pid, L = self.pid(), self.L
        if self.hugetlb and self.c.chance(15):
            return self.do_hugetlb()
        base = self.region() + self.c.below(4) * L.pmd
        if self.shm and self.c.chance(25):  # shared memory: one of a few objects, at a page offset that may or may not align
            obj = self.c.below(3)
            pgoff = self.c.pick([0, 0, L.pmd // L.page, self.c.below(8)])
            length = self.c.pick([L.pmd, 2 * L.pmd, L.page * (1 + self.c.below(16))])
            self.op("shm_mmap", pid, base, length, obj, pgoff)
            self.pids.setdefault(pid, []).append((base, length, 0))
            return
        kind = self.c.below(3)
        if kind == 0:
            addr, length = base, L.pmd * (1 + self.c.below(2))
        elif kind == 1:
            addr, length = base + self.c.below(4) * L.page, L.page * (1 + self.c.below(16))
        else:  # beside or over an earlier mapping: merges, splits, MAP_FIXED replacement. Not over a hugetlb one:
            # v6.6's mmap_region turns the failed split (misaligned) into -12, 6.12+ returns its -22
            m = self.mapping(pid, plain=True)
            addr = max(WINDOW, m[0] + self.c.pick([m[1], -L.page, m[1] // 2 // L.page * L.page])) if m else base
            length = L.page * (1 + self.c.below(8))
        flags = 1 if self.c.chance(50) else 0
        self.op("mmap", pid, addr, length, flags)
        self.pids.setdefault(pid, []).append((addr, length, flags))

    def do_madvise(self):
        pid = self.pid()
        m = self.mapping(pid)
        if not m:
            return self.do_mmap()
        L = self.L
        # page-granular edges split VMAs, and a later advice over the rest may merge them again
        start = self.c.pick([m[0], m[0] & ~(L.pmd - 1), m[0] + L.page, m[0] + m[1] - L.page])
        length = self.c.pick([m[1], L.pmd, L.page, 2 * L.pmd, m[1] + L.page, max(L.page, m[1] - L.page)])
        self.op("madvise", pid, start, length, self.c.below(4))
        if self.c.chance(30):  # then a fault at a block start: THP only where one VMA holds the block
            self.op("fault", pid, m[0] & ~(L.pmd - 1), self.c.below(2))

    def do_split_and_merge(self):
        """Split a page off a mapping, fault the rest, give it the same flags again: whether the two VMAs
        merge (is_mergeable_anon_vma) decides whether a THP fits the first block."""
        pid, L = self.pid(), self.L
        base, advice = self.region(), self.c.pick([1, 1, 2])
        self.op("mmap", pid, base, 2 * L.pmd, 0)
        self.pids.setdefault(pid, []).append((base, 2 * L.pmd, 0))
        self.op("madvise", pid, base, L.page, advice)
        self.op("fault", pid, base + L.pmd + self.c.below(L.pmd // L.page) * L.page, 1)
        self.op("madvise", pid, base + L.page, 2 * L.pmd - L.page, advice)
        self.op("fault", pid, base, self.c.below(2))

    def do_mremap(self):
        """mremap, as gen.c's gen_mremap picks it: a mapping or a PMD block of it moved to another region (a whole
        PTE table moves on x86_64 and arm64: move_normal_pmd), shrunk or grown in place, a piece moved next to its
        own mapping (copy_vma merges it or not), moved and resized at once."""
        pid, L = self.pid(), self.L
        m = self.mapping(pid, plain=True)  # not a shared hugetlb one: the model has no move_hugetlb_page_tables
        if not m:
            return self.do_mmap()
        addr, length, flags = m
        to = self.region() + self.c.below(2) * L.pmd
        k = self.c.below(6)
        if k == 0:
            old, olen, new, nlen = addr, length, to, length
        elif k == 1:
            old, olen, new, nlen = addr & ~(L.pmd - 1), L.pmd, to, L.pmd
        elif k == 2:
            old, olen, new, nlen = addr, length, addr, self.c.pick([L.page, length - L.pmd if length > L.pmd else L.page])
        elif k == 3:
            old, olen, new, nlen = addr, length, addr, length + self.c.pick([L.page, 4 * L.page, L.pmd])
        elif k == 4:
            olen = self.c.pick([L.page, length])
            old, new, nlen = addr, addr + length + self.c.pick([0, L.page]), self.c.pick([L.page, length])
        else:
            old, olen, new = addr, length, to
            nlen = self.c.pick([L.page, max(L.page, length // 2 // L.page * L.page), length + L.pmd])
        old = max(old, WINDOW)
        self.op("mremap", pid, old, olen, new, nlen)
        if new != old:  # what moved is a mapping at its new place now (the record is a superset, as for munmap)
            self.pids.setdefault(pid, []).append((new, min(olen, nlen) or nlen, flags))
        if self.c.chance(40):  # a fault there: a THP or a PTE at the new place, or the moved page
            self.op("fault", pid, new + self.c.pick([0, L.page]), self.c.below(2))

    def step(self):
        k = self.c.below(100)
        pid = self.pid()
        if self.pids and self.c.chance(3):
            self.do_split_and_merge()
        elif self.mremap and self.pids and self.c.chance(8):
            self.do_mremap()
        elif not self.pids or k < 7:
            self.do_exec()
        elif k < 27:
            self.do_mmap()
        elif k < 55:
            self.do_fault()
        elif k < 62:  # read then write: the zero page, then COW
            addr = self.addr_in(pid)
            self.op("fault", pid, addr, 0)
            self.op("fault", pid, addr, 1)
        elif k < 80:
            self.do_madvise()
        elif k < 88:
            m = self.mapping(pid)
            if m:
                cut = self.c.pick([m[0], m[0] + self.L.page])
                self.op("munmap", pid, cut, self.c.pick([self.L.page, m[1], self.L.pmd]))
        elif k < 96:
            child = 1 + self.c.below(self.NPIDS + 1)
            self.op("fork", pid, child)
            if child not in self.pids:
                self.pids[child] = list(self.pids.get(pid, []))
        else:
            self.op("exit", pid)
            self.pids.pop(pid, None)


def generate(arch: str, config: dict, seed: int, nops: int, hugetlb: bool = False) -> Trace:
    """A random host-only trace of exactly nops operations, all addresses in the window; hugetlb: with shared
    hugetlb mappings too (the host has the files and the huge pages)."""
    gen = HostGen(arch, RandomChoices(seed), Layout.of(arch, config), hugetlb)
    while len(gen.rows) < nops:
        gen.step()
    ops = tracemod.ops_from_list(gen.rows[:nops])
    return Trace(arch, ops, config=dict(config), meta={"found_by": "ptfuzz crosscheck", "seed": seed})


def hugetlb_use(trace: Trace, kernel: list[Step]) -> tuple[bool, bool]:
    """(the trace maps shared hugetlb, the kernel showed PMD sharing): sharing is a process whose figures show a
    PMD-mapped block of the hugetlb range it never faulted since its exec (a fork copies no shared hugetlb entry:
    vma_needs_copy, so a child sees the parent's pages only through a shared PMD table)."""
    rows = [op_to_list(r) for r in trace.ops]
    if not any(r[0] == "hugetlb_mmap" for r in rows):
        return False, False
    layout = Layout.of(trace.arch, trace.config)
    pmd, (base, span) = layout.pmd, hugetlb_range(trace.arch, layout)
    faulted: dict[int, set] = {}
    for row, step in zip(rows, kernel):
        name, *args = row
        if name == "exec" or name == "fork":
            faulted[args[0] if name == "exec" else args[1]] = set()
        elif name == "exit":
            faulted.pop(args[0], None)
        elif name == "fault":
            faulted.setdefault(args[0], set()).add(args[1] & ~(pmd - 1))
        for pid, (_, blocks) in step.procs.items():
            if any(base <= b < base + span and b not in faulted.get(pid, ()) for b in blocks):
                return True, True
    return True, False


# ---- the check ----

# What the real side may make resident for one trace: every fault (and every write after a fork) can
# allocate at most one PMD-size THP, so a trace is refused when its faults could exceed this.
MAX_RESIDENT = 4 << 30


def check_host_trace(trace: Trace, where: str, arch: str, pmd_size: int = 2 << 20, hugetlb: str | None = None) -> None:
    """Only host operations of the host's own arch can run on both sides, within a memory bound; hugetlb_mmap only
    where the host has hugetlbfs files and huge pages (hugetlb: why not, None when it has)."""
    if trace.arch != arch:
        raise UsageError(f"{where}: a {trace.arch} trace; this host runs {arch} traces only")
    faults = int((trace.ops[:, 0] == OP_NUMBER["fault"]).sum()) if len(trace.ops) else 0
    if faults * pmd_size > MAX_RESIDENT:
        raise UsageError(f"{where}: {faults} faults could make {faults * pmd_size >> 30} GiB resident on this "
                         f"machine; crosscheck runs traces of at most {MAX_RESIDENT // pmd_size} faults")
    for i, row in enumerate(trace.ops):
        name, *args = op_to_list(row)
        if name not in HOST_OPS:
            raise UsageError(f"{where}: ops[{i}]: {name} is not a host operation ({', '.join(HOST_OPS)})")
        if name == "exec" and args[1] != -1:
            raise UsageError(f"{where}: ops[{i}]: exec of an ELF image: crosscheck runs elf -1 only")
        if name == "hugetlb_mmap" and hugetlb:
            raise UsageError(f"{where}: ops[{i}]: hugetlb_mmap cannot run here: {hugetlb}")


@dataclass
class Outcome:
    name: str
    trace: Trace
    disagreement: Disagreement | None
    model: list[Step]
    kernel: list[Step]
    path: Path | None = None
    minimized_from: int | None = None
    unstable: bool = False

    @property
    def agree(self) -> bool:
        return self.disagreement is None


class Checker:
    """One helper, one model configuration; checks traces and files the disagreements it can reproduce."""

    def __init__(self, host: Host, facts: HostFacts, knobs: dict, out: Path, minimize: bool = True):
        self.host, self.facts, self.out, self.minimize = host, facts, out, minimize
        self.knobs = {**facts.knobs, **knobs}
        hi = window_end(facts.arch, facts.config)
        self.model = ModelSide(facts.arch, facts.config, self.knobs, WINDOW, hi)
        self.kernel = KernelSide(host, WINDOW, hi)

    # what a filed disagreement says of itself (crosscheck --kvm's checker files under its own name)
    found_by, subdir, prefix = "ptfuzz crosscheck", None, "crosscheck"

    def use(self, host) -> None:
        """After a reboot: the same checker on a fresh helper."""
        self.host = host
        self.kernel = type(self.kernel)(host, self.kernel.lo, self.kernel.hi)

    def disagreement(self, ops: np.ndarray):
        model, kernel = self.model.run(ops), self.kernel.run(ops)
        return compare(model, kernel, ops), model, kernel

    def valid(self, trace: Trace, name: str) -> None:
        """Raise UsageError for a candidate the kernel side cannot run (minimizing skips it)."""

    def meta_extra(self) -> dict:
        return {"probes": self.facts.probes}

    def check(self, trace: Trace, name: str) -> Outcome:
        ops = trace.ops
        d, model, kernel = self.disagreement(ops)
        if d is None:
            return Outcome(name, trace, None, model, kernel)
        # The kernel is not deterministic everywhere (khugepaged may collapse a block between two
        # operations; a huge page the host cannot allocate now, its memory taken or fragmented by other
        # processes, falls back to small pages): a disagreement counts only if a second real run shows it
        # again, with every huge page it asked for allocated.
        d2, _, kernel2 = self.disagreement(ops)
        if d2 is None or d2.to_doc() != d.to_doc() or getattr(self.kernel, "thp_failed", False):
            return Outcome(name, trace, None, model, kernel, unstable=True)
        small, before = ops, None
        if self.minimize:
            def keeps(candidate):
                try:
                    self.valid(replace(trace, ops=candidate), name)
                    got = self.disagreement(candidate)[0]
                except (HostError, UsageError):
                    return False  # e.g. an address the helper refuses: not a smaller witness
                return got is not None and got.figure == d.figure
            small = shrink(ops[: d.op_index + 1], keeps)
            before = len(ops)
            d, model, kernel = self.disagreement(small)
            if d is None:  # could not be reproduced in small: keep the original
                small, before = ops, None
                d, model, kernel = self.disagreement(ops)
        out = Outcome(name, replace(trace, ops=small), d, model, kernel, minimized_from=before)
        out.path = self.file(out)
        return out

    def file(self, o: Outcome) -> Path:
        figures = [{"op": i, "text": op_text(o.trace.ops[i]), "model": m.to_doc(), "kernel": k.to_doc()}
                   for i, (m, k) in enumerate(zip(o.model, o.kernel))]
        meta = {"found_by": self.found_by, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "crosscheck": {"first_disagreement": o.disagreement.to_doc(), "figures": figures,
                               "host": self.facts.describe(), **self.meta_extra()}}
        if o.minimized_from is not None:
            meta["minimized_from"] = o.minimized_from
        t = Trace(o.trace.arch, o.trace.ops, config=dict(self.facts.config), knobs=dict(self.knobs), meta=meta)
        digest = hashlib.sha256(tracemod.dumps(replace(t, meta=None))).hexdigest()[:8]
        path = self.out / (self.subdir or t.arch) / f"{self.prefix}-{digest}.msgpack"
        tracemod.save(t, path)
        return path


def open_host() -> tuple[Host, HostFacts]:
    reason = host_supported()
    if reason:
        raise UsageError(reason)
    host = Host()
    try:
        return host, host_facts(host)
    except BaseException:
        host.close()
        raise


def seeds(seed: int, n: int) -> list[int]:
    """The per-trace seeds of --gen N --seed S: trace i of a run is the same whatever N is."""
    rng = random.Random(seed)
    return [rng.getrandbits(48) for _ in range(n)]

