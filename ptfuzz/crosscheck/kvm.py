"""crosscheck --kvm: traces with VMs, run in the model and for real through /dev/kvm (x86_64), compared per operation.

The kernel side is the ptfuzz-kvm helper (ptfuzz_kvm.c): one real process per trace pid, every VM operation in
the process that created the VM (kvm->mm == current->mm), or in the helper's root once that process has exited
or exec'd (KVM's -EIO for a foreign mm). A guest_fault is a KVM_RUN of a tiny 32-bit guest (paging off) that
loads or stores 32 bits at the gpa. Compared after each operation: the result (every memslot errno, every guest
fault's, the host operations'), and after a guest access that completed, its coherence: what the guest read (or
wrote) is what the VM's owner maps at the hva now. A stale stage-2 / shadow mapping shows as the guest reading
old data; the model stands for it with the stage2_stale oracle, so the model's side of that figure is "no
violation at this operation".
"""
from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import engine
from .. import trace as tracemod
from ..errors import UsageError
from ..search.fuzzgen import Layout, RandomChoices
from ..trace import Trace, op_text, op_to_list
from .compare import Checker, HostGen
from .guest import REPLY_HEADS, Guest, build_helper, build_initramfs
from .host import Host, HostError, compile_host

BINARY_NAME = "ptfuzz-kvm"
SOURCE = Path(__file__).resolve().with_name("ptfuzz_kvm.c")
KVM_OPS = ("exec", "fork", "exit", "mmap", "munmap", "madvise", "fault", "vm_create", "memslot", "guest_fault",
           "vm_destroy")
# The helper's guest code page: gpa [CODE_GPA, 2^32) in a slot (100) the trace cannot name (x86_64); on arm64 the
# code page is at 2^32 - 2 pages and the page above it, in no memslot, is where the guest reports (MMIO).
CODE_GPA = 0xFFFFF000
WIN_LO, WIN_HI = 1 << 44, 1 << 46
MAX_FAULTS = 2048  # at most 2 MiB resident per fault
# The first release without KVM's .change_pte() (set_pte_at_notify): from it on, stage-2 table pages compare.
CHANGE_PTE_GONE = (6, 9)


def reserved_gpa(arch: str = "x86_64", page: int = 4096) -> int:
    """The lowest gpa of the helper's own: [it, 2^32) holds its guest code (and on arm64 its MMIO page)."""
    return CODE_GPA if arch == "x86_64" else (1 << 32) - 2 * page


# ---- the helper ----

def kvm_supported() -> str | None:
    """None when crosscheck --kvm can run here, else the reason (one line)."""
    import sys
    if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
        return f"crosscheck --kvm runs on x86_64 Linux (this is {sys.platform} {platform.machine()})"
    if not os.path.exists("/dev/kvm"):
        return "crosscheck --kvm needs /dev/kvm, which this machine does not have (no KVM, or the module is not loaded)"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"crosscheck --kvm cannot open /dev/kvm: {e.strerror} (add the user to the kvm group?)"
    os.close(fd)
    return None


def compile_kvm(cache: Path | None = None) -> Path:
    """The helper, compiled into the per-user cache (keyed by source and compiler) on first use."""
    return compile_host(SOURCE, cache, name=BINARY_NAME, static=False)


def find_kvm_binary() -> Path:
    built = Path(__file__).with_name(BINARY_NAME)
    if built.is_file() and os.access(built, os.X_OK):
        return built
    return compile_kvm()


@dataclass(frozen=True)
class GuestAccess:
    result: int
    guest: int      # what the guest read (or wrote)
    host: int       # what the owner maps at the hva after the run
    present: bool   # whether it maps a page there
    exit: str       # how the run ended: hlt (completed), mmio (no memslot), errno, ...


class KvmRequests:
    """The KVM helper's own requests, over whatever line transport the class it is mixed into has (request)."""

    def reset(self) -> None:
        self.request("reset")

    def guest_fault(self, vm: int, gpa: int, write: int, stamp: int) -> GuestAccess:
        line = f"guest_fault {int(vm)} {int(gpa)} {int(write)} {int(stamp)}"
        return parse_access(self.request(line), line)


class KvmHost(KvmRequests, Host):
    """One running ptfuzz-kvm: the same line transport as the host helper."""

    def __init__(self, binary=None, timeout: float = 30.0):
        super().__init__(binary if binary is not None else find_kvm_binary(), timeout)

    def hello(self) -> dict:
        return parse_kv(self.request("hello"), "hello")

    def probe(self) -> dict:
        """How this host serves the guest's accesses: a few reads, then the vCPU's insn_emulation and pf_fixed."""
        return parse_kv(self.request("probe"), "probe")


def parse_kv(reply: str, what: str) -> dict:
    head, *kv = reply.split()
    if head != "ok":
        raise HostError(f"{BINARY_NAME}: malformed {what} reply {reply!r}")
    out = {}
    for k, v in (x.split("=", 1) for x in kv if "=" in x):
        try:
            out[k] = int(v)
        except ValueError:
            out[k] = v
    return out


def parse_access(reply: str, line: str) -> GuestAccess:
    f = reply.split()
    if len(f) != 6 or f[0] != "g":
        raise HostError(f"{BINARY_NAME}: expected a guest access for {line!r}, got {' '.join(f)!r}")
    return GuestAccess(int(f[1]), int(f[2]), int(f[3]), f[4] == "1", f[5])


# ---- the machine ----

def _param(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


@dataclass
class KvmFacts:
    arch: str
    release: str
    api: int
    nr_memslots: int
    modules: list[str]
    tdp_mmu: str | None
    tdp: str | None       # ept / npt when a vendor module says so
    config: dict
    knobs: dict
    notes: list
    guest_path: str = "mmu"  # how the guest's accesses are served: "mmu" (page faults) or "emulated"
    probe: dict = None
    page: int = 4096
    guest: str | None = None   # crosscheck --kvm --kernel: the guest kernel's name (its description: kernel_line)
    kernel_line: str | None = None
    thp: bool = True
    s2_tables: bool = False  # SecPageTables is compared with the model's stage-2 table pages (arm64 guests)

    def describe(self) -> str:
        if self.guest is not None:
            return self.kernel_line

        mmu = ("TDP MMU" if self.tdp_mmu == "Y" and self.tdp == "Y" else
               f"shadow MMU (kvm.tdp_mmu={self.tdp_mmu or '?'}, two-dimensional paging "
               f"{'on' if self.tdp == 'Y' else 'off' if self.tdp == 'N' else 'not offered'})")
        p = self.probe or {}
        path = (f"guest accesses {self.guest_path} (insn_emulation {p.get('insn_emulation')}, pf_fixed "
                f"{p.get('pf_fixed')} over {p.get('runs')} runs)" if p else f"guest accesses {self.guest_path}")
        return (f"host: Linux {self.release} {self.arch}, /dev/kvm api {self.api} "
                f"({', '.join(self.modules) or 'kvm'}), {mmu}, {self.nr_memslots} memslots per VM, {path}")


def kvm_facts(host: KvmHost) -> KvmFacts:
    hello = host.hello()
    modules = sorted(m for m in os.listdir("/sys/module") if m.startswith("kvm")) if os.path.isdir("/sys/module") else []
    tdp = None
    for vendor, knob in (("kvm_intel", "ept"), ("kvm_amd", "npt")):
        v = _param(f"/sys/module/{vendor}/parameters/{knob}")
        if v is not None:
            tdp = "Y" if v in ("Y", "1") else "N"
    tdp_mmu = _param("/sys/module/kvm/parameters/tdp_mmu")
    notes = []
    if tdp != "Y":
        notes.append("no two-dimensional paging here: KVM builds shadow page tables, so the model's TDP table "
                     "bytes, leaf sizes and zaps are not visible; results and guest-visible coherence are compared")
        notes.append("shadow paging accepts gpas up to 2^52 (kvm_mmu_max_gfn without tdp_enabled); the model's "
                     "v6.6 TDP limit is 2^48: memslots in between disagree by design (not generated)")
    probe = host.probe()
    emulated = probe.get("pf_fixed", 0) == 0 and probe.get("insn_emulation", 0) >= 3 * probe.get("runs", 1)
    if emulated:
        notes.append("the guest's instructions are emulated here (every one counted by insn_emulation, no page "
                     "fault fixed): its loads and stores are the emulator's copies through the hva, so no "
                     "shadow or TDP mapping is built and a stale one cannot show; coherence is still compared "
                     "(the emulator's view of the host mm), the stage2-stale oracle's mapping cannot be")
        notes.append("an emulated access whose hva is not mapped exits as MMIO (like a gpa without memslot) "
                     "rather than failing KVM_RUN with EFAULT: both count as -14")
    if "kvm_pvm" in modules:
        notes.append("kvm_pvm (PVM) is the vendor module: it runs only PVM-aware 64-bit guests natively")
    la57 = False  # the window and every gpa lie far below 2^47: 4- and 5-level hosts give the same results
    # the host operations' knobs, from the host helper's probes, as plain crosscheck sets them
    knobs = {}
    try:
        from .compare import host_facts
        with Host() as h:
            hf = host_facts(h)
        knobs = dict(hf.knobs)
        notes = hf.notes + notes
    except HostError as e:
        notes.append(f"the host probes did not run ({e}): no knobs from them")
    if probe_user_ptr_max(host):
        knobs["kvm.memslot_access_ok"] = "user-ptr-max"
        notes.append("kvm.memslot_access_ok=user-ptr-max: a memslot ending past TASK_SIZE_MAX is refused (6.12+)")
    return KvmFacts("x86_64", platform.release(), hello.get("api", 0), hello.get("nr_memslots", 0), modules,
                    tdp_mmu, tdp, {"la57": la57}, knobs, notes, "emulated" if emulated else "mmu", probe)


def probe_user_ptr_max(host: "KvmHost") -> bool:
    """Does KVM_SET_USER_MEMORY_REGION refuse a slot whose hva range ends at 2^47, one page past TASK_SIZE_MAX on a
    4-level host? v6.6's access_ok takes any end below 2^63; since 6.12 the end must be at most USER_PTR_MAX
    (TASK_SIZE_MAX: a range ending at 2^47 - 4096 is still taken, measured on 6.18)."""
    top = 1 << 47
    ops = tracemod.ops_from_list([["exec", 1, -1], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, top - 8192, 8192]])
    return KvmKernelSide(host).run(ops)[-1].result == -22


def probe_task_size_max(side, page: int, va_bits: int, knobs: dict, notes: list) -> None:
    """arm64: does KVM_SET_USER_MEMORY_REGION take an hva range ending past 2^va_bits? access_ok's bound is
    TASK_SIZE_MAX = 1 << VA_BITS, the build's CONFIG_ARM64_VA_BITS: 2^52 for a 52-bit build running with 48."""
    top = 1 << va_bits
    ops = tracemod.ops_from_list([["exec", 1, -1], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, top, page]])
    r = side.run(ops)[-1].result
    if r == 0 and va_bits < 52:
        knobs["arm64.task_size_max"] = "52"
        notes.append(f"arm64.task_size_max=52: a memslot at hva 2^{va_bits} was taken: TASK_SIZE_MAX is 2^52 "
                     f"(CONFIG_ARM64_VA_BITS=52, running with {va_bits}-bit VA)")


# ---- what can run ----

def check_kvm_trace(trace: Trace, where: str, arch: str = "x86_64", page: int = 4096) -> None:
    """Only the operations the helper runs for real, with addresses it accepts (arch, page: the kernel side's)."""
    if trace.arch != arch:
        raise UsageError(f"{where}: a {trace.arch} trace; crosscheck --kvm runs {arch} traces here")
    code = reserved_gpa(arch, page)
    faults = 0
    for i, row in enumerate(trace.ops):
        name, *a = op_to_list(row)
        if name not in KVM_OPS:
            raise UsageError(f"{where}: ops[{i}]: {name} cannot run for real here ({', '.join(KVM_OPS)})")
        if name == "exec" and a[1] != -1:
            raise UsageError(f"{where}: ops[{i}]: exec of an ELF image: crosscheck runs elf -1 only")
        if name == "mmap" and a[3] & ~1:
            raise UsageError(f"{where}: ops[{i}]: mmap flags {a[3]}: --kvm maps anonymous memory (bit0 only)")
        if name in ("mmap", "munmap", "madvise", "fault"):
            size = 4 if name == "fault" else a[2]
            if not (WIN_LO <= a[1] and a[1] + size <= WIN_HI):
                raise UsageError(f"{where}: ops[{i}]: address {a[1]:#x} outside [2^44, 2^46)")
        if name == "madvise" and a[3] > 3:
            raise UsageError(f"{where}: ops[{i}]: advice {a[3]}: 0..3 only")
        if name == "memslot" and a[4] and a[2] < 1 << 32 and a[2] + a[4] > code:
            raise UsageError(f"{where}: ops[{i}]: memslot over gpa {code:#x}, the helper's guest code page")
        if name == "guest_fault" and a[1] >= code:
            raise UsageError(f"{where}: ops[{i}]: gpa {a[1]:#x}: the guest runs with paging off, below {code:#x}")
        if name == "vm_create" and a[0] >= 16:
            raise UsageError(f"{where}: ops[{i}]: vm {a[0]} out of range")
        faults += name in ("fault", "guest_fault")
    if faults > MAX_FAULTS:
        raise UsageError(f"{where}: {faults} faults; crosscheck --kvm runs traces of at most {MAX_FAULTS}")


# ---- the two sides ----

@dataclass
class KStep:
    result: int
    access: GuestAccess | None = None   # kernel side, for a guest_fault
    violation: str | None = None        # model side: the oracle that stopped the model here
    s2_pages: int | None = None         # in a guest, after the trace's last operation: stage-2 table pages

    def coherent(self) -> bool | None:
        """Kernel side, after a guest access that completed: does the guest see what the owner maps at the hva?"""
        return None if self.access is None else self.access.guest == self.access.host

    def to_doc(self) -> dict:
        d = {"result": self.result}
        if self.access is not None:
            d.update(guest=self.access.guest, host=self.access.host, present=self.access.present,
                     exit=self.access.exit)
        if self.violation:
            d["violation"] = self.violation
        if self.s2_pages is not None:
            d["s2_pages"] = self.s2_pages
        return d


def stamp(i: int) -> int:
    """The 32-bit value a write at operation i stores: distinct per operation, never 0."""
    return 0x5A000000 | (i + 1)


class KvmKernelSide:
    def __init__(self, host: KvmHost):
        self.host = host

    def run(self, ops: np.ndarray) -> list[KStep]:
        steps = []
        try:
            for i, row in enumerate(ops):
                name, *a = op_to_list(row)
                if name == "exec":
                    a = a[:1]
                if name == "fault":
                    a = [*a, stamp(i)]
                if name == "guest_fault":
                    g = self.host.guest_fault(*a, stamp(i))
                    steps.append(KStep(g.result, g if g.result == 0 else None))
                    continue
                steps.append(KStep(self.host.op(name, *a)))
        finally:
            self.host.reset()  # every process killed and reaped, every VM and vCPU fd closed
        return steps


class KvmModelSide:
    """The engine, with one difference of protocol: a trace's guest_fault is one pass of the fault handler, and
    -11 (EAGAIN: an invalidation moved the sequence or is open) means the vCPU takes the fault again, which
    KVM_RUN does without returning (RET_PF_RETRY). So a guest_fault the model answers -11 is run again, up to
    MAX_RETRIES times, and its result is the last pass's."""
    MAX_RETRIES = 3

    def __init__(self, config: dict, knobs: dict, arch: str = "x86_64", s2_pages: bool = False):
        self.config, self.knobs, self.arch, self.s2 = config, knobs, arch, s2_pages

    def replay(self, ops: np.ndarray):
        return engine.replay(Trace(self.arch, ops, config=dict(self.config), knobs=dict(self.knobs)), steps=True)

    def run(self, ops: np.ndarray) -> list[KStep]:
        retries: dict[int, int] = {}
        while True:
            origin = [i for i in range(len(ops)) for _ in range(1 + retries.get(i, 0))]
            r = self.replay(ops[origin] if len(ops) else ops)
            last: dict[int, int] = {}
            for j, x in enumerate(r.op_results):
                last[origin[j]] = int(x)
            again = next((i for i in sorted(last) if last[i] == -11 and retries.get(i, 0) < self.MAX_RETRIES
                          and op_to_list(ops[i])[0] == "guest_fault"), None)
            if again is None:
                break
            retries[again] = retries.get(again, 0) + 1
        steps = [KStep(last[i]) for i in sorted(last)]
        if r.violation is not None and r.violation.op_index < len(origin):
            i = origin[r.violation.op_index]
            steps = steps[: i + 1]
            steps[-1] = replace(steps[-1], violation=r.violation.kind)
        elif self.s2 and steps:
            steps[-1] = replace(steps[-1], s2_pages=self.s2_pages(ops[origin] if len(ops) else ops, ops, steps))
        return steps

    def s2_pages(self, expanded: np.ndarray, ops: np.ndarray, steps: list[KStep]) -> int:
        """The stage-2 table pages SecPageTables counts after the trace: every live VM's root (its concatenated
        pages) and tables, as the engine's state has them, plus, in each VM whose vCPU entered the guest, the
        tables on the path to the helper's code page (2^32 - 2 pages, mapped by a page: user_mem_abort on a 4K
        shmem page) that the model's tree lacks. The code page is never unmapped, so the kernel keeps its path:
        a table it shares with the trace's mappings stays where the model may free it, and the union counts it
        once either way."""
        from ..report.show.state import dump_state
        state = dump_state(Trace(self.arch, expanded, config=dict(self.config), knobs=dict(self.knobs)), None,
                           len(expanded))["state"]
        ran: dict[int, bool] = {}
        for row, st in zip(ops, steps):
            name, *a = op_to_list(row)
            if name == "vm_create" and st.result == 0:
                ran[a[0]] = False
            elif name == "guest_fault" and st.result not in (-2, -5) and a[0] in ran:
                ran[a[0]] = True  # KVM_RUN passed the mm check: the vCPU fetched from the code page
            elif name == "vm_destroy":
                ran.pop(a[0], None)
        pages, code = 0, reserved_gpa(self.arch, int(self.config.get("granule", 4096)))
        for vmi, v in state["vms"].items():
            if v is None or v.get("root_freed") or v.get("root") is None:
                continue
            pages += v["pgd_pages"] + len(v["tables"]) - 1
            if ran.get(int(vmi)):
                have = {(t["level"], t["va"]) for t in v["tables"]}
                for level in range(v["start_level"] + 1, 4):
                    _, shift, entries = v["geometry"][level][:3]
                    if (level, code & ~((entries << shift) - 1)) not in have:
                        pages += 1
        return pages


@dataclass
class KDisagreement:
    op_index: int
    op: str
    figure: str   # result | coherence | stopped
    model: object
    kernel: object

    def to_doc(self) -> dict:
        return {"op_index": self.op_index, "op": self.op, "figure": self.figure, "pid": None,
                "model": self.model, "kernel": self.kernel}

    def text(self) -> str:
        return f"op {self.op_index} {self.op}: {self.figure}: model {self.model}, kernel {self.kernel}"


def kcompare(model: list[KStep], kernel: list[KStep], ops: np.ndarray) -> KDisagreement | None:
    """The first figure that differs, in operation order: the result, then a guest access's coherence (the model
    stands for a stale mapping with its stage2_stale oracle, which stops it: any violation is reported)."""
    for i, (m, k) in enumerate(zip(model, kernel)):
        op = op_text(ops[i])
        if m.result != k.result:
            return KDisagreement(i, op, "result", m.result, k.result)
        coherent = k.coherent()
        seen = ("coherent" if coherent else f"guest saw {k.access.guest:#x}, host maps {k.access.host:#x}"
                if coherent is not None else "ran")
        if m.violation:
            return KDisagreement(i, op, "violation", m.violation, seen)
        if coherent is False:
            return KDisagreement(i, op, "coherence", "coherent", seen)
        if m.s2_pages is not None and k.s2_pages is not None and m.s2_pages != k.s2_pages:
            return KDisagreement(i, op, "s2_tables", m.s2_pages, k.s2_pages)
    if len(model) != len(kernel):
        i = min(len(model), len(kernel))
        return KDisagreement(i, op_text(ops[i]), "stopped", "stopped" if len(model) == i else "ran",
                             "stopped" if len(kernel) == i else "ran")
    return None


class KvmChecker(Checker):
    """Checks traces with VMs; files the disagreements a second real run repeats, minimized (Checker's protocol,
    with the KVM sides, their comparison and the --kvm validation)."""
    found_by, subdir, prefix = "ptfuzz crosscheck --kvm", "x86_64-kvm", "crosscheck-kvm"

    def __init__(self, host: KvmHost, facts: KvmFacts, knobs: dict, out: Path, minimize: bool = True):
        self.host, self.facts, self.out, self.minimize = host, facts, out, minimize
        self.knobs = {**facts.knobs, **knobs}
        self.model = KvmModelSide(facts.config, self.knobs, facts.arch, s2_pages=facts.s2_tables)
        self.kernel = (KvmGuestKernelSide if facts.guest else KvmKernelSide)(host)
        if facts.guest:
            self.subdir = f"{facts.guest}-kvm"

    def use(self, host) -> None:
        """After a reboot: the same checker on a fresh guest."""
        self.host = host
        self.kernel = KvmGuestKernelSide(host)

    def disagreement(self, ops: np.ndarray):
        model, kernel = self.model.run(ops), self.kernel.run(ops)
        return kcompare(model, kernel, ops), model, kernel

    def valid(self, trace: Trace, name: str) -> None:
        check_kvm_trace(trace, name, self.facts.arch, self.facts.page)

    def meta_extra(self) -> dict:
        return {}


# ---- generation ----

class KvmGen(HostGen):
    """HostGen's processes and mappings (anonymous only), plus VMs of those processes: memslots over their
    mappings and beside them, guest accesses at low gpas, VMs used after their owner exited or exec'd."""
    NVMS, NSLOTS = 3, 4
    shm = False
    mremap = False  # the KVM helper serves no mremap (the host helper does: crosscheck without --kvm)
    GPA_STEP = 0x1000000  # slot i's usual gpa: 16 MiB apart, 2 MiB aligned

    def __init__(self, arch, choices, layout, tdp: bool = True, va_bits: int = 48):
        super().__init__(arch, choices, layout)
        self.tdp, self.va_bits = tdp, va_bits
        self.code = reserved_gpa(arch, layout.page)
        self.vms: dict[int, int] = {}          # vm -> owner pid
        self.slots: dict[tuple, tuple] = {}    # (vm, slot) -> (gpa, hva, len)

    def vm(self) -> int:
        return self.c.pick(sorted(self.vms)) if self.vms and self.c.chance(90) else self.c.below(self.NVMS)

    def owner_with_memory(self) -> int:
        mapped = [p for p in sorted(self.pids) if self.pids[p]]
        return self.c.pick(mapped) if mapped and self.c.chance(85) else self.pid()

    def do_vm_create(self):
        """A VM of a process, usually with memory to give it and a first memslot over it."""
        vm, pid, L = self.c.below(self.NVMS), self.owner_with_memory(), self.L
        if not self.pids.get(pid) and self.c.chance(80):
            addr, length = self.region() + self.c.below(4) * L.pmd, L.pmd * (1 + self.c.below(2))
            flags = self.c.below(2)
            self.op("mmap", pid, addr, length, flags)
            self.pids.setdefault(pid, []).append((addr, length, flags))
        # x86: any type is -EINVAL; arm64: the IPA size (32..the host's limit, 0 for 40 bits)
        types = [32, 40, 52] if self.arch == "x86_64" else [32, 36, 40, 44, 48, 52, 31]
        self.op("vm_create", vm, pid, self.c.pick(types) if self.c.rarely(20) else 0)
        if vm not in self.vms:
            self.vms[vm] = pid
            for key in [key for key in self.slots if key[0] == vm]:
                del self.slots[key]
        if self.c.chance(80):
            self.do_memslot(vm)

    def do_memslot(self, vm=None):
        vm, L = self.vm() if vm is None else vm, self.L
        slot = self.c.below(self.NSLOTS)
        owner = self.vms.get(vm, self.pid())
        m = self.mapping(owner)
        old = self.slots.get((vm, slot))
        k = self.c.below(100)
        if old and k < 15:  # delete, or move to another gpa
            if self.c.chance(50):
                self.op("memslot", vm, slot, old[0], old[1], 0)
                self.slots.pop((vm, slot), None)
            else:
                gpa = self.c.pick([old[0] + L.pmd, old[0] + L.page, (slot + 8) * self.GPA_STEP])
                self.op("memslot", vm, slot, gpa, old[1], old[2])
                self.slots[(vm, slot)] = (gpa, old[1], old[2])
            return
        if old and k < 20:  # a changed hva or size: -EINVAL
            self.op("memslot", vm, slot, old[0], old[1] + self.c.pick([L.page, 0]), old[2] + self.c.pick([0, L.page]))
            return
        base = slot * self.GPA_STEP
        if m:
            hva, length = m[0], m[1]
            if self.c.chance(25):
                length = self.c.pick([L.page, length + L.pmd, max(L.page, length // 2 // L.page * L.page)])
            # congruent with the hva within a 2 MiB block (where a huge mapping could go), or not
            gpa = base + self.c.pick([hva & (L.pmd - 1), hva & (L.pmd - 1), 0, L.page])
        else:
            hva, length, gpa = self.region(), L.pmd, base
        if self.slots and self.c.rarely(12):  # over another slot's gpa: -EEXIST
            gpa = self.c.pick(list(self.slots.values()))[0]
        r = self.c.below(100)
        odd = r < 14
        if r < 3:
            gpa |= 0x800  # misaligned
        elif r < 6:
            hva += 0x10  # misaligned
        elif r < 10:
            # the top of the gpa space: 2^48 under the TDP MMU the model has, 2^52 under a shadow MMU, where
            # [2^48, 2^52) cannot be compared (kvm_mmu_max_gfn) and is not generated
            tops = [1 << 47, (1 << 48) - length, 1 << 52, (1 << 64) - length]
            if self.arch == "arm64":  # the IPA size: 40 bits by default, 32..48 as vm_create asked
                tops += [(1 << 40) - length, 1 << 40, (1 << 36) - length, (1 << 32) + (1 << 31)]
            gpa = self.c.pick(tops + ([1 << 48, 1 << 51, (1 << 52) - length] if self.tdp else []))
        elif r < 14:
            # the top of user space (not below it: the model's stack lies there, the helper's does not)
            top = 1 << self.va_bits
            hva = self.c.pick([top - length, top, (1 << 63) - length, 1 << 63]
                              + ([(1 << 47) - length, 1 << 47] if top != 1 << 47 else []))
        elif r < 20:
            hva = self.region() + self.c.below(8) * L.pmd  # maybe nothing mapped there
        self.op("memslot", vm, slot, gpa, hva, length)
        if not odd and vm in self.vms:
            self.slots[(vm, slot)] = (gpa, hva, length)

    def slot_page(self, vm):
        """A page of one of vm's slots: (gpa, hva), or None."""
        L = self.L
        mine = [s for (v, _), s in sorted(self.slots.items()) if v == vm]
        if not mine:
            return None
        gpa, hva, length = self.c.pick(mine)
        pages = max(1, length // L.page)
        off = self.c.pick([0, (pages - 1) * L.page, self.c.below(pages) * L.page])
        return (gpa + off, hva + off) if gpa + off < self.code else None

    def do_guest_fault(self):
        L = self.L
        backed = sorted({v for v, _ in self.slots})
        vm = self.c.pick(backed) if backed and self.c.chance(90) else self.vm()
        at = self.slot_page(vm) if self.c.chance(90) else None
        gpa = at[0] if at else self.c.below(64) * L.page + self.c.pick([0, 4 * self.GPA_STEP])
        if self.c.rarely(15):  # a read, then a write
            self.op("guest_fault", vm, gpa, 0)
            self.op("guest_fault", vm, gpa, 1)
            return
        self.op("guest_fault", vm, gpa, self.c.below(2))

    def do_coherence(self):
        """The guest touches a page, the owner changes what the hva maps, the guest reads it again: a stale
        mapping would show the old data."""
        live = [v for v, p in sorted(self.vms.items()) if p in self.pids and self.slot_page(v)]
        if not live:
            return self.do_guest_fault()
        vm = self.c.pick(live)
        gpa, hva = self.slot_page(vm)
        owner, L = self.vms[vm], self.L
        self.op("guest_fault", vm, gpa, self.c.below(2))
        change = self.c.below(6)
        if change == 0:
            self.op("fault", owner, hva, 1)  # the host writes: the guest must read the new value
        elif change == 1:
            self.op("madvise", owner, hva, L.page, 0)  # MADV_DONTNEED: the guest must read zero
        elif change == 2:  # fork, then a write in the owner breaks COW: the guest must follow the owner
            child = 1 + self.c.below(self.NPIDS + 1)
            self.op("fork", owner, child)
            if child not in self.pids:
                self.pids[child] = list(self.pids.get(owner, []))
            self.op("fault", owner if self.c.chance(70) else child, hva, 1)
        elif change == 3:  # a remap: a new anonymous page at the same hva
            self.op("mmap", owner, hva, L.page, 0)
        elif change == 4:  # gone: the guest access fails
            self.op("munmap", owner, hva, L.page)
        else:  # a write through the guest, then the host reads what the guest wrote
            self.op("guest_fault", vm, gpa, 1)
            self.op("fault", owner, hva, 0)
        self.op("guest_fault", vm, gpa, 0)

    def step(self):
        k = self.c.below(100)
        if not self.pids or k < 45:
            return super().step()
        if not self.vms or k < 50:
            return self.do_vm_create()
        if k < 64:
            return self.do_memslot()
        if k < 80:
            return self.do_guest_fault()
        if k < 97:
            return self.do_coherence()
        vm = self.vm()
        self.op("vm_destroy", vm)
        self.vms.pop(vm, None)
        for key in [key for key in self.slots if key[0] == vm]:
            del self.slots[key]


def generate_kvm(facts: KvmFacts, seed: int, nops: int) -> Trace:
    gen = KvmGen(facts.arch, RandomChoices(seed), Layout.of(facts.arch, facts.config), tdp=facts.tdp == "Y",
                 va_bits=facts.config.get("va_bits", 47) if facts.arch == "arm64" else 47)
    while len(gen.rows) < nops:
        gen.step()
    ops = tracemod.ops_from_list(gen.rows[:nops])
    t = Trace(facts.arch, ops, config=dict(facts.config), meta={"found_by": "ptfuzz crosscheck --kvm", "seed": seed})
    if facts.guest is not None and not facts.thp:
        from .crossguest import without_thp
        t = without_thp(t)
    return t


def open_kvm():
    """The --kvm side of a run; UsageError (exit 2) with one line when /dev/kvm is absent or unusable."""
    from .run import Side
    reason = kvm_supported()
    if reason:
        raise UsageError(reason)
    try:
        host = KvmHost()
    except HostError as e:
        raise UsageError(str(e)) from None
    try:
        facts = kvm_facts(host)
    except HostError as e:
        host.close()
        raise UsageError(f"crosscheck --kvm: /dev/kvm is not usable: {e}") from None
    return Side(host, facts, KvmChecker, facts.describe, generate_kvm)


# ---- in a guest under QEMU: crosscheck --kvm --kernel NAME (arm64) ----

class KvmGuest(KvmRequests, Guest):
    """A guest whose /init is ptfuzz-kvm built static for its arch, with ptfuzz-host beside it (/ptfuzz-host, which
    `host` hands the console to, for crosscheck's host probes). The guest's own KVM (nested under TCG) runs the VMs."""
    ready = "ptfuzz-kvm ready"
    reply_heads = REPLY_HEADS + ("g ",)

    def __init__(self, kernel, timeout: float = 60.0, **kw):
        super().__init__(kernel, timeout=timeout, **kw)
        try:
            self.page = int(self.kvm_hello()["page"])
            self.baseline_kb = self.sec_page_tables()  # no VM yet: what SecPageTables counts besides KVM's
        except BaseException:
            self.close(kill=True)
            raise

    def initramfs(self, kernel) -> Path:
        self.helper = build_helper(kernel.arch, SOURCE, name=BINARY_NAME)
        return build_initramfs(self.helper, beside={"ptfuzz-host": build_helper(kernel.arch)})

    def kvm_hello(self) -> dict:
        return parse_kv(self.request("hello"), "hello")

    def kvm_probe(self) -> dict:
        return parse_kv(self.request("probe"), "probe")

    def sec_page_tables(self) -> int:
        """SecPageTables in kB (after vm.stat_refresh): the stage-2 table pages of every VM in the guest."""
        return int(parse_kv(self.request("secpt"), "secpt")["secpt"])

    def host_facts(self):
        """crosscheck --kernel's guest facts (the host probes and their knobs), from the guest's ptfuzz-host, which
        takes the console from `host` to its `quit`."""
        from .crossguest import guest_facts
        if self.request("host") != "ok host":
            raise HostError(f"{self.kernel.name}: ptfuzz-kvm did not hand the console to ptfuzz-host")
        facts = guest_facts(self)
        self._write(b"quit\n", "quit")
        r = self._readline("host")
        if r != "r 0":
            raise HostError(f"{self.kernel.name}: the guest's ptfuzz-host ended with {r!r}")
        return facts


class KvmGuestKernelSide(KvmKernelSide):
    """A whole trace in one write (a round trip into a TCG guest costs more than the operation), then `secpt`
    (SecPageTables, once it holds still: every VM's stage-2 table pages, less the baseline the guest had with no
    VM) and `reset`."""

    def run(self, ops: np.ndarray) -> list[KStep]:
        lines, kinds = [], []
        for i, row in enumerate(ops):
            name, *a = op_to_list(row)
            if name == "exec":
                a = a[:1]
            if name in ("fault", "guest_fault"):
                a = [*a, stamp(i)]
            lines.append(" ".join([name, *(str(int(x)) for x in a)]))
            kinds.append(name)
        lines += ["secpt", "reset"]
        replies = self.host.pipeline(lines)
        bad = next((r for r in replies if r.startswith("e ")), None)
        if bad is not None:
            raise HostError(f"guest {self.host.kernel.name}: {bad[2:]}")
        steps = []
        for line, kind, reply in zip(lines, kinds, replies):
            if kind == "guest_fault":
                g = parse_access(reply, line)
                steps.append(KStep(g.result, g if g.result == 0 else None))
            elif reply.startswith("r "):
                steps.append(KStep(int(reply[2:])))
            else:
                raise HostError(f"guest {self.host.kernel.name}: unexpected reply {reply!r} to {line!r}")
        kb = parse_kv(replies[len(kinds)], "secpt")["secpt"]
        if steps and kb >= 0:
            steps[-1] = replace(steps[-1], s2_pages=(kb - self.host.baseline_kb) * 1024 // self.host.page)
        return steps


def kvm_guest_facts(guest: KvmGuest) -> KvmFacts:
    from .crossguest import describe, has_thp
    hf = guest.host_facts()
    hello = guest.kvm_hello()
    if hello.get("api", 0) <= 0:
        raise HostError(f"{guest.kernel.name}: the guest has no usable /dev/kvm")
    probe = guest.kvm_probe()
    notes = list(hf.notes)
    notes.append("the guest's KVM runs nested under QEMU's TCG (virtualization=on): its stage 2 is built by "
                 "user_mem_abort as on hardware; a guest access is an AArch64 load or store at the gpa with the "
                 "MMU off, reported by an MMIO store to a gpa no memslot holds")
    release = tuple(int(x) for x in re.findall(r"\d+", hf.release)[:2]) or (0, 0)
    s2 = guest.baseline_kb >= 0 and release >= CHANGE_PTE_GONE
    if s2:
        notes.append(f"stage-2 table pages: SecPageTables (less the {guest.baseline_kb} kB it counts with no VM) "
                     "after each trace's last operation, against the model's live stage-2 tables plus the tables "
                     "of the helper's code page in each VM whose vCPU ran")
    elif guest.baseline_kb >= 0:
        notes.append("stage-2 table pages are not compared on this release: before 6.9 a COW's set_pte_at_notify "
                     "reaches KVM's change_pte, whose kvm_set_spte_gfn maps the new page read-only in stage 2 "
                     "where the tables exist (keeping a table the model frees), which the model does not have "
                     "(docs/model-notes.md, Not modelled); SecPageTables is still measured (kernel side, s2_pages)")
    else:
        notes.append("no SecPageTables in this guest's /proc/meminfo: stage-2 table pages are not compared")
    knobs = dict(hf.knobs)
    side = KvmGuestKernelSide(guest)
    probe_task_size_max(side, hf.info.page_size, hf.config.get("va_bits", 48), knobs, notes)
    facts = KvmFacts(guest.kernel.arch, hf.release, hello.get("api", 0), hello.get("nr_memslots", 0), [], None,
                     None, dict(hf.config), knobs, notes, "mmu", probe, page=hf.info.page_size,
                     guest=guest.kernel.name, thp=has_thp(hf.probes), s2_tables=s2)
    facts.kernel_line = describe(hf, guest) + f"; /dev/kvm api {facts.api}, {facts.nr_memslots} memslots per VM"
    return facts


def open_kvm_guest(kernel, timeout: float = 60.0):
    """The --kvm --kernel side: a booted guest and its facts; the guest is killed on any error."""
    from .run import Side
    if kernel.arch != "arm64":
        raise UsageError(f"crosscheck --kvm --kernel runs arm64 kernels ({kernel.name} is {kernel.arch})")
    guest = KvmGuest(kernel, timeout=timeout)
    try:
        facts = kvm_guest_facts(guest)
    except BaseException:
        guest.close(kill=True)
        raise
    side = Side(guest, facts, KvmChecker, None, generate_kvm, lambda old: KvmGuest(old.kernel, timeout=old.timeout))
    side.describe = lambda: facts.kernel_line
    return side
