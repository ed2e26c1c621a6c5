"""crosscheck --kernel: the model held against a foreign-arch kernel booted under QEMU (ptfuzz/guest.py).

The same comparison as on the host (ptfuzz/crosscheck.py: each operation's result, VmPTE bytes of every
process, PMD-mapped blocks), with a trace pipelined into the guest whole. The probe runs inside the guest,
so each release gets the knobs its own behaviour calls for (PROBE_KNOBS, plus GUEST_PROBE_KNOBS here).
"""
from __future__ import annotations

import numpy as np

from .compare import (HUGETLB_POOL, PROBE_KNOBS, WINDOW, WINDOW_SPAN, Checker, HostFacts, HugetlbPool, KernelSide, Step,
                      generate, hugetlb_setup, share_size, shares_pmd_tables, trace_probes, window_end)
from .guest import Guest
from .host import HostError, HostInfo
from .kernels import Kernel
from ..names import KNOBS
from ..search.fuzzgen import Layout
from ..trace import Trace, op_to_list, ops_from_list


def _pt_alloc(probes: dict) -> str | None:
    b = probes.get("pte_table_bytes", -1)
    if b is None or b < 0:
        return None
    return "full-page" if b >= 3072 else "fragments"


def _pgste_decision(probes: dict) -> str | None:
    """Up to 6.6 (2K fragments) an exec'd PT_S390_PGSTE program gets whole-page tables if the ELF header
    counts (elf-restart, v6.6), 2K fragments if only vm.allocate_pgste does (sysctl-only); with whole pages
    for every table (6.7+) the probe cannot tell."""
    plain, pgste = probes.get("pte_table_bytes", -1), probes.get("pgste_table_bytes", -1)
    if plain is None or pgste is None or plain < 0 or pgste < 0 or plain >= 3072:
        return None
    return "elf-restart" if pgste >= 3072 else "sysctl-only"


# (knob, arch, function of the probes giving the value or None, why)
GUEST_PROBE_KNOBS = [
    ("s390.pt_alloc", "s390", _pt_alloc,
     "PageTables grew by {pte_table_bytes} bytes per PTE table: 2K fragments up to 6.6, a whole page from 6.7 "
     "(arch/s390/mm/pgalloc.c:page_table_alloc)"),
    ("s390.pgste_decision", "s390", _pgste_decision,
     "an exec'd program with PT_S390_PGSTE got {pgste_table_bytes} bytes of PageTables per PTE table, others "
     "{pte_table_bytes} (arch/s390/include/asm/elf.h:arch_elf_pt_proc, mmu_context.h:init_new_context)"),
]


def guest_facts(guest: Guest) -> HostFacts:
    info = guest.hello()
    kv = dict(x.split("=", 1) for x in guest.request("hello").split()[5:] if "=" in x)
    probes = guest.probe()
    if has_thp(probes):  # the trace probes are all MADV_COLLAPSE: nothing to see without THP
        probes.update(trace_probes(GuestKernelSide(guest, WINDOW, WINDOW + WINDOW_SPAN), info))
    arch = guest.kernel.arch
    config = {"granule": info.page_size, "va_bits": info.va_bits} if arch == "arm64" else {}
    known = {k.name for k in KNOBS if arch in k.arches}
    knobs, notes = {}, []
    thp_only = {"huge_zero_wp_pmd", "collapse_readonly", "file_pmd_nohuge", "collapse_pmd_alloc", "collapse_subblock",
                "collapse_pmd_none", "file_retract_caller"}
    for probe, knob, value, why in PROBE_KNOBS:
        if probe in thp_only and not has_thp(probes):
            continue  # the probe saw no PMD mapping because there is no THP at all: it says nothing
        if probes.get(probe) == 1 and knob in known:
            knobs[knob] = value
            notes.append(f"{knob}={value}: {why}")
        elif probes.get(probe) == 1:
            notes.append(f"the guest shows {probe} but the model has no {knob} knob: disagreements expected")
    for knob, for_arch, fn, why in GUEST_PROBE_KNOBS:
        if arch != for_arch or knob not in known:
            continue
        value = fn(probes)
        if value is not None:
            default = next(k for k in KNOBS if k.name == knob).default(arch)
            if value != default:
                knobs[knob] = value
            notes.append(f"{knob}={value}: " + why.format(**probes))
    if not has_thp(probes) and "s390.thp_hw" in known:
        knobs["s390.thp_hw"] = "none"
        notes.append("s390.thp_hw=none: no /sys/kernel/mm/transparent_hugepage, so has_transparent_hugepage() is false "
                     "(no EDAT-1, which QEMU's TCG lacks): faults map 4K pages and MADV_COLLAPSE is -22")
    elif not has_thp(probes):
        notes.append("no THP in this kernel (no /sys/kernel/mm/transparent_hugepage) and the model has no knob for that "
                     "on this arch, so generated traces carry no MADV_HUGEPAGE (mmap flag bit 0 cleared, advice 1 "
                     "becomes 2) and no MADV_COLLAPSE (advice 3 becomes 0); given traces are checked as they are")
    if arch == "s390":
        notes.append("vm.allocate_pgste " + ("absent (7.2 has none)" if probes.get("allocate_pgste", -1) < 0
                                             else f"= {probes['allocate_pgste']}"))
    facts = HostFacts(arch, kv.get("release", "?"), info, probes, config, knobs, notes)
    guest_hugetlb(facts, guest)
    return facts


def guest_pool(guest: Guest, pages: int = HUGETLB_POOL) -> HugetlbPool:
    """HugetlbPool on the guest's vm.nr_hugepages, through its helper (requests hugepages, set_hugepages N)."""
    def read() -> int:
        return int(guest.request("hugepages").split()[1])

    def write(n: int) -> None:
        guest.request(f"set_hugepages {int(n)}")
    return HugetlbPool(pages, read, write)


def no_pmd_sharing(arch: str, page_size: int) -> str | None:
    """Why this guest's kernel shares no hugetlb PMD tables (v6.6 selects ARCH_WANT_HUGE_PMD_SHARE on arm64 with 4K
    or 16K pages, not on s390), or None."""
    if shares_pmd_tables(arch, page_size):
        return None
    if arch == "s390":
        return "s390 shares no PMD tables (no ARCH_WANT_HUGE_PMD_SHARE), so there is no PMD sharing to check"
    return f"arm64 with {page_size >> 10}K pages shares no PMD tables (no ARCH_WANT_HUGE_PMD_SHARE)"


def guest_hugetlb(facts: HostFacts, guest: Guest) -> None:
    """facts.hugetlb and its note, as on the host (hugetlb_setup): the guest helper's hugetlbfs files and
    HUGETLB_POOL huge pages added to the guest's vm.nr_hugepages (its memory is sized for them: guest_memory_mb)."""
    why = no_pmd_sharing(facts.arch, facts.info.page_size)
    if why:
        facts.hugetlb = why
        facts.notes.append(f"no shared hugetlb mappings in generated traces: {why}")
        return
    hugetlb_setup(facts, guest, lambda: guest_pool(guest), "the guest's ")
    if not facts.hugetlb and facts.info.page_size > 4096:
        facts.notes.append(f"with {facts.info.page_size >> 10}K pages a PMD table is shared across a whole "
                           f"{share_size(facts.arch, Layout.of(facts.arch, facts.config)) >> 30} GiB PUD range: the generator's "
                           f"hugetlb mappings are that size, in a window of {window_end(facts.arch, facts.config) - WINDOW >> 30} GiB")


def reboot(old: Guest, facts: HostFacts) -> Guest:
    """A fresh guest after one stopped, with the huge pages of the first one's pool again."""
    guest = type(old)(old.kernel, timeout=old.timeout)
    if facts.hugetlb is None:
        pool = guest_pool(guest)
        if pool.reason:
            guest.close(kill=True)
            raise HostError(f"{old.kernel.name}: a guest booted again: {pool.reason}")
    return guest


def has_thp(probes: dict) -> bool:
    return probes.get("thp_enabled", 0) != -1


def without_thp(trace: Trace) -> Trace:
    """The same trace with no THP request in it: for a kernel without THP, which the model cannot be told."""
    rows = []
    for row in trace.ops:
        op = op_to_list(row)
        if op[0] == "mmap":
            op[4] &= ~1
        elif op[0] == "madvise":
            op[4] = {1: 2, 3: 0}.get(op[4], op[4])
        rows.append(op)
    meta = dict(trace.meta or {}, without_thp=True)
    return Trace(trace.arch, ops_from_list(rows), config=dict(trace.config), knobs=dict(trace.knobs), meta=meta)


def generate_for(facts: HostFacts, seed: int, nops: int) -> Trace:
    t = generate(facts.arch, facts.config, seed, nops, facts.hugetlb is None)
    return t if has_thp(facts.probes) or facts.knobs.get("s390.thp_hw") == "none" else without_thp(t)


def describe(facts: HostFacts, guest: Guest) -> str:
    knobs = ", ".join(f"{k}={v}" for k, v in facts.knobs.items()) or "none"
    return (f"guest {guest.kernel.name}: Linux {facts.release} {facts.arch} under QEMU (booted in "
            f"{guest.boot_seconds:.1f} s), page {facts.info.page_size}, va_bits {facts.info.va_bits}, PMD scan by "
            f"{facts.info.method}; knobs from the guest's probes: {knobs}")


class GuestKernelSide(KernelSide):
    """A whole trace in one write: each operation, then `figall` (every live process's figures)."""

    def run(self, ops: np.ndarray) -> list[Step]:
        lines = ["shm_reset"]
        for row in ops:
            name, *args = op_to_list(row)
            if name == "exec":
                args = args[:1]  # elf -1: an ordinary executable, which the helper's fresh child is
            lines += [" ".join([name, *(str(int(a)) for a in args)]), f"figall {self.lo} {self.hi}"]
        lines.append("killall")
        replies = self.host.pipeline(lines)
        first_error = next((r for r in replies if r.startswith("e ")), None)
        if first_error is not None:
            raise HostError(f"guest {self.host.kernel.name}: {first_error[2:]}")
        steps = []
        for i in range(len(ops)):
            res, fig = replies[1 + 2 * i], replies[2 + 2 * i]
            if not res.startswith("r ") or not fig.startswith("F "):
                raise HostError(f"guest {self.host.kernel.name}: unexpected replies {res!r}, {fig[:60]!r}")
            steps.append(Step(int(res[2:]), parse_figall(fig)))
        return steps


def parse_figall(reply: str) -> dict[int, tuple[int, tuple[int, ...]]]:
    f = reply.split()
    try:
        n, k, out = int(f[1]), 2, {}
        for _ in range(n):
            pid, vm, nb = int(f[k]), int(f[k + 1]), int(f[k + 2])
            out[pid] = (vm, tuple(int(x) for x in f[k + 3:k + 3 + nb]))
            k += 3 + nb
        if k != len(f):
            raise ValueError
        return out
    except (IndexError, ValueError):
        raise HostError(f"malformed figall reply {reply[:80]!r}") from None


class GuestChecker(Checker):
    def __init__(self, guest: Guest, facts: HostFacts, knobs: dict, out, minimize: bool = True):
        super().__init__(guest, facts, knobs, out, minimize)
        self.kernel = GuestKernelSide(guest, WINDOW, window_end(facts.arch, facts.config))


def open_guest(kernel: Kernel, timeout: float = 60.0) -> tuple[Guest, HostFacts]:
    guest = Guest(kernel, timeout=timeout)
    try:
        return guest, guest_facts(guest)
    except BaseException:
        guest.close(kill=True)
        raise


__all__ = ["GuestChecker", "GuestKernelSide", "guest_facts", "guest_hugetlb", "open_guest", "reboot", "describe",
           "HostInfo"]
