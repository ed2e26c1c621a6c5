"""crosscheck --kernel: the model held against a foreign-arch kernel booted under QEMU (ptfuzz/guest.py).

The same comparison as on the host (ptfuzz/crosscheck.py: each operation's result, VmPTE bytes of every
process, PMD-mapped blocks), with a trace pipelined into the guest whole. The probe runs inside the guest,
so each release gets the knobs its own behaviour calls for (PROBE_KNOBS, plus GUEST_PROBE_KNOBS here).
"""
from __future__ import annotations

import numpy as np

from .compare import PROBE_KNOBS, WINDOW, WINDOW_SPAN, Checker, HostFacts, KernelSide, Step
from .guest import Guest
from .host import HostError, HostInfo
from .kernels import Kernel
from ..names import KNOBS
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
    arch = guest.kernel.arch
    config = {"granule": info.page_size, "va_bits": info.va_bits} if arch == "arm64" else {}
    known = {k.name for k in KNOBS if arch in k.arches}
    knobs, notes = {}, []
    thp_only = {"huge_zero_wp_pmd", "collapse_readonly", "file_pmd_nohuge", "collapse_pmd_alloc"}
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
    if has_thp(probes) and "mm.collapse_subpmd" in known:
        probe_collapse_subpmd(GuestKernelSide(guest, WINDOW, WINDOW + WINDOW_SPAN), info.page_size, knobs, notes)
    if not has_thp(probes):
        notes.append("no THP in this kernel (no /sys/kernel/mm/transparent_hugepage: has_transparent_hugepage() "
                      "is false, as on s390 without EDAT-1, which QEMU's TCG lacks); the model has no knob for that, so "
                      "generated traces carry no MADV_HUGEPAGE (mmap flag bit 0 cleared, advice 1 becomes 2) and no "
                      "MADV_COLLAPSE (advice 3 becomes 0); given traces are checked as they are")
    if arch == "s390":
        notes.append("vm.allocate_pgste " + ("absent (7.2 has none)" if probes.get("allocate_pgste", -1) < 0
                                             else f"= {probes['allocate_pgste']}"))
    facts = HostFacts(arch, kv.get("release", "?"), info, probes, config, knobs, notes)
    return facts


def probe_collapse_subpmd(side, page: int, knobs: dict, notes: list) -> None:
    """A probe run as a trace (side.run(ops): the guest's or host's helper): MADV_COLLAPSE of one page inside a
    MADV_HUGEPAGE mapping of two PMD blocks, after a read fault in the other block (the VMA needs an anon_vma,
    else hugepage_vma_check fails it first). No whole block is in the range: v6.6 returns -EINVAL (thps against
    the wrapped (hend - hstart) >> HPAGE_PMD_SHIFT), a later madvise_collapse 0 ("if (hstart >= hend) return
    0"), which mm.collapse_subpmd=zero models."""
    pmd = page * (page // 8)
    base = WINDOW
    ops = ops_from_list([["exec", 1, -1], ["mmap", 1, base, 2 * pmd, 1], ["fault", 1, base + pmd, 0],
                         ["madvise", 1, base + page, page, 3]])
    if side.run(ops)[-1].result == 0:
        knobs["mm.collapse_subpmd"] = "zero"
        notes.append("mm.collapse_subpmd=zero: MADV_COLLAPSE of a range holding no whole PMD block returned 0 "
                     "(v6.6: -EINVAL; seen on 7.2, not on 6.18)")


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
    from .compare import generate
    t = generate(facts.arch, facts.config, seed, nops)
    return t if has_thp(facts.probes) else without_thp(t)


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
        self.kernel = GuestKernelSide(guest, WINDOW, WINDOW + WINDOW_SPAN)

    def use(self, guest: Guest) -> None:
        """After a reboot: the same checker on a fresh guest (the kernel side needs the window, too)."""
        self.host = guest
        self.kernel = GuestKernelSide(guest, WINDOW, WINDOW + WINDOW_SPAN)


def open_guest(kernel: Kernel, timeout: float = 60.0) -> tuple[Guest, HostFacts]:
    guest = Guest(kernel, timeout=timeout)
    try:
        return guest, guest_facts(guest)
    except BaseException:
        guest.close(kill=True)
        raise


__all__ = ["GuestChecker", "GuestKernelSide", "guest_facts", "open_guest", "describe", "HostInfo"]
