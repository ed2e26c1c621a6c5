"""State-aware trace generation for fuzzing, driven by a stream of choices (random, atheris bytes, hypothesis)."""
import random
from dataclasses import dataclass, field

import numpy as np

from .gen import s390_elf
from .names import OP_NUMBER, OP_WIDTH
from .trace import Trace

U64 = (1 << 64) - 1


class Choices:
    """Where decisions come from (random, or bytes from atheris and hypothesis); one below() call each."""

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
    def __init__(self, seed: int):
        self._random = random.Random(seed).random

    def below(self, n: int) -> int:
        return int(self._random() * n) if n > 1 else 0


class RecordingChoices(RandomChoices):
    """Random decisions, recorded in ByteChoices' encoding: the bytes replay the same trace (seed corpora)."""

    def __init__(self, seed: int):
        super().__init__(seed)
        self.bytes = bytearray()

    def below(self, n: int) -> int:
        v = super().below(n)
        if n > 1:
            self.bytes += v.to_bytes(ByteChoices.width(n), "little")
        return v


class ByteChoices(Choices):
    """Decisions read from a byte string (atheris, replayable findings): any bytes decode to a valid trace,
    so libFuzzer's byte-level mutations are structure-aware mutations of the decision stream."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def exhausted(self) -> bool:
        return self.pos >= len(self.data)

    @staticmethod
    def width(n: int) -> int:
        return 1 if n <= 1 << 8 else 2 if n <= 1 << 16 else 4

    def below(self, n: int) -> int:
        if n <= 1:
            return 0
        width = self.width(n)
        chunk = self.data[self.pos:self.pos + width]
        self.pos += width
        return int.from_bytes(chunk.ljust(width, b"\0"), "little") % n


@dataclass
class Layout:
    """Sizes of the arch as the engine has them, and where the generator puts things."""
    page: int
    pmd: int
    pud: int | None
    region: int
    base: int
    ipas: tuple

    @classmethod
    def of(cls, arch: str, config: dict) -> "Layout":
        from .cli.geometry import stage1_geometry
        g = stage1_geometry(arch, config)
        region = max(g["pud_size"] or 0, 4 * g["pmd_size"])
        ipas = (0, 32, 33, 36, 40, 44, 48) if arch == "arm64" else (0,)
        return cls(g["page_size"], g["pmd_size"], g["pud_size"], region, 4 * region, ipas)


@dataclass
class State:
    pids: dict = field(default_factory=dict)      # pid -> list of (addr, len, flags); flags SHM + obj: shared memory
    vms: dict = field(default_factory=dict)       # vm -> (pid, [(slot, gpa, hva, len)])
    cpus: dict = field(default_factory=dict)      # cpu -> (kind, ...): walk, rmap, gfault, inval
    shm: dict = field(default_factory=dict)       # obj -> [(pgoff, pages)] that some process mapped


SHM = 8  # State.pids flags of a shm_mmap: SHM + obj


class FuzzGen:
    NPIDS, NVMS, NCPUS, NREGIONS, NOBJS = 3, 2, 4, 3, 2

    def __init__(self, arch: str, choices: Choices, config: dict | None = None, layout: Layout | None = None):
        self.arch, self.c = arch, choices
        self.L = layout or Layout.of(arch, config or {})
        self.s = State()
        self.rows: list[list[int]] = []

    # ---- emission ----
    def op(self, name: str, *args: int) -> None:
        row = [OP_NUMBER[name], *[a & U64 for a in args]]
        row.extend([0] * (OP_WIDTH - len(row)))
        self.rows.append(row)

    # ---- picks ----
    def region(self) -> int:
        return self.L.base + self.c.below(self.NREGIONS) * self.L.region

    def mapping(self, pid):
        maps = self.s.pids.get(pid)
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
        return self.c.pick(sorted(self.s.pids)) if self.s.pids else 1

    def idle_cpu(self):
        idle = [c for c in range(self.NCPUS) if c not in self.s.cpus]
        return self.c.pick(idle) if idle else None

    # ---- operations ----
    def do_exec(self):
        pid = 1 + self.c.below(self.NPIDS)
        if self.arch == "s390":
            if self.c.chance(15):
                self.op("sysctl_allocate_pgste", self.c.below(2))
            elf = self.c.pick([-1, 0, 0, 1, 2])
        else:
            elf = -1
        self.op("exec", pid, elf)
        self.s.pids[pid] = []

    def do_mmap(self):
        pid, L = self.pid(), self.L
        base = self.region()
        m = self.mapping(pid)
        if m and m[2] < SHM and self.c.rarely(15):
            # right after an earlier mapping, with its flags: vma_merge (hugetlb never merges)
            length = L.page * (1 + self.c.below(16)) if m[2] < 2 else m[1]
            self.op("mmap", pid, m[0] + m[1], length, m[2])
            self.s.pids[pid].append((m[0] + m[1], length, m[2]))
            return
        kind = self.c.below(5)
        if kind == 0:  # THP-eligible
            addr, length, flags = base + self.c.below(2) * L.pmd, L.pmd * (1 + self.c.below(2)), 1
        elif kind == 1:  # a few pages
            addr, length, flags = base + self.c.below(4) * L.page, L.page * (1 + self.c.below(16)), 0
        elif kind == 2:  # plain, pmd-sized
            addr, length, flags = base, L.pmd * (1 + self.c.below(2)), 0
        elif kind == 3:  # hugetlb at PMD
            addr, length, flags = base, L.pmd, 2
        else:  # hugetlb at PUD where it exists
            addr, length, flags = (base, L.pud, 4) if L.pud else (base, L.pmd, 2)
        if self.arch == "s390" and self.c.chance(3):
            addr = (1 << 42) + (addr - L.base)  # above 4 TiB: the mm upgrades
        self.op("mmap", pid, addr, length, flags)
        self.s.pids.setdefault(pid, []).append((addr, length, flags))

    def do_fault(self, pid=None, addr=None):
        pid = pid if pid is not None else self.pid()
        addr = addr if addr is not None else self.addr_in(pid)
        if self.c.rarely(20):  # a read, then a write: the zero page (or a shared page read-only), then COW or reuse
            self.op("fault", pid, addr, 0)
            self.op("fault", pid, addr, 1)
            return
        self.op("fault", pid, addr, self.c.below(2))

    def do_shm(self, pid=None):
        """MAP_SHARED of one of a few shmem objects, often a range another process maps already (shared memory
        between processes), at a block-aligned address or one page off, with a page offset that is congruent to
        it or not; then maybe a fault in it and a MADV_COLLAPSE of it (collapse_file, retract_page_tables)."""
        pid = pid if pid is not None else self.pid()
        L = self.L
        ptrs = L.pmd // L.page
        obj = self.c.below(self.NOBJS)
        ranges = self.s.shm.get(obj)
        if ranges and self.c.chance(70):
            pgoff, pages = self.c.pick(ranges)
        else:
            pgoff = self.c.pick([0, 0, ptrs, self.c.below(4)])
            pages = self.c.pick([ptrs, ptrs, 2 * ptrs, 1 + self.c.below(16)])
        addr = self.region() + self.c.pick([0, 0, L.pmd, L.page])
        self.op("shm_mmap", pid, addr, pages * L.page, obj, pgoff)
        self.s.pids.setdefault(pid, []).append((addr, pages * L.page, SHM + obj))
        self.s.shm.setdefault(obj, []).append((pgoff, pages))
        if self.c.chance(40):
            self.do_fault(pid, addr + self.c.below(pages) * L.page)
        if self.c.chance(30):
            self.op("madvise", pid, addr, pages * L.page, 3)
        return addr, pages * L.page

    def do_vm_on_shm(self):
        """A VM whose guest memory is shared memory (QEMU's memory-backend-memfd, share=on): its process maps an
        object, a memslot covers the mapping and the guest touches it; other processes may map the object too."""
        if not self.s.vms or self.c.chance(30):
            vm, pid = self.c.below(self.NVMS), self.pid()
            self.op("vm_create", vm, pid, self.c.pick(self.L.ipas))
            self.s.vms[vm] = (pid, [])
        vm = self.c.pick(sorted(self.s.vms))
        pid, slots = self.s.vms[vm]
        hva, length = self.do_shm(pid)
        align = 1 << 20 if self.arch == "s390" else self.L.page
        hva, length = hva // align * align, max(align, length // align * align)
        slot = self.c.below(4)
        gpa = slot * self.L.region
        self.set_memslot(vm, slot, gpa, hva, length)
        self.op("guest_fault", vm, gpa + self.c.below(length // self.L.page) * self.L.page, self.c.below(2))

    def disturb(self, pid, addr, kind=None):
        """The operations that race with an in-flight actor at (pid, addr); on arm64 and x86_64 now and then
        stopped between its invalidate_range_start and _end (inval_hold on an idle cpu; do_actor ends it),
        most often when the actor is a guest fault, whose commit is what the window is about."""
        L = self.L
        pmd_base = addr & ~(L.pmd - 1)
        held = False
        if self.arch != "s390" and self.c.rarely(60 if kind == "gfault" else 15):
            cpu = self.idle_cpu()
            if cpu is not None:
                self.op("inval_hold", cpu)
                self.s.cpus[cpu] = ("inval",)
                held = True
        # a held window takes one of the changes that notify and unmap or replace the page
        k = self.c.pick((0, 1, 2, 3, 7)) if held else self.c.below(9)
        if k == 0:
            self.op("munmap", pid, addr & ~(L.page - 1), L.page)
        elif k == 1:
            self.op("munmap", pid, pmd_base, L.pmd)
        elif k == 2:
            self.op("madvise", pid, pmd_base, L.pmd, 0)
        elif k == 3:
            self.op("madvise", pid, pmd_base, L.pmd, 1)
            self.op("madvise", pid, pmd_base, L.pmd, 3)
        elif k == 4:
            self.op("split", pid, addr)
        elif k == 5:
            self.op("exit", pid)
            self.s.pids.pop(pid, None)
        elif k == 6:
            vm = self.c.below(self.NVMS)
            self.op("vm_create", vm, pid, self.c.pick(self.L.ipas))
            self.s.vms.setdefault(vm, (pid, []))
        elif k == 7:
            self.op("mmap", pid, pmd_base, L.pmd, self.c.below(2))
            self.op("fault", pid, addr, 1)
        else:
            self.op("rcu_gp")
        return held

    def do_actor(self):
        cpu = self.idle_cpu()
        busy = [c for c in self.s.cpus]
        if busy and (cpu is None or self.c.chance(60)):
            cpu = self.c.pick(busy)
            kind, *rest = self.s.cpus[cpu]
            if kind == "inval":  # the stopped host thread runs its _end calls, or another actor goes first
                others = [b for b in busy if self.s.cpus[b][0] != "inval"]
                if not others or self.c.chance(40):
                    self.op("inval_end", cpu)
                    del self.s.cpus[cpu]
                    return
                cpu = self.c.pick(others)
                kind, *rest = self.s.cpus[cpu]
            if self.c.chance(45):
                pid, addr = (rest[0], rest[1]) if kind != "gfault" else (rest[2], rest[3])
                if self.disturb(pid, addr, kind) and kind == "gfault" and self.c.chance(50):
                    self.op("guest_fault_commit", cpu)  # inside the window the disturbance opened
                    del self.s.cpus[cpu]
                return
            if kind == "walk":
                if self.c.chance(75):
                    self.op("walk_step", cpu)
                    return
                self.op("walk_end", cpu)
            elif kind == "rmap":
                self.op("rmap_commit", cpu)
            else:
                self.op("guest_fault_commit", cpu)
            del self.s.cpus[cpu]
            return
        pid = self.pid()
        addr = self.addr_in(pid)
        k = self.c.below(3)
        if k == 0:
            self.op("walk_begin", cpu, pid, addr)
            self.s.cpus[cpu] = ("walk", pid, addr)
            for _ in range(self.c.below(3)):  # descend now: the walker holds a lower table for what comes next
                self.op("walk_step", cpu)
        elif k == 1:
            if self.c.chance(60):
                self.do_fault(pid, addr)
            self.op("rmap_begin", cpu, pid, addr)
            self.s.cpus[cpu] = ("rmap", pid, addr)
        else:
            target = self.slot_target()
            if target is None:
                return self.do_vm()
            vm, gpa, hva, vpid = target
            self.op("guest_fault_begin", cpu, vm, gpa, self.c.below(2))
            self.s.cpus[cpu] = ("gfault", vm, gpa, vpid, hva)

    def set_memslot(self, vm, slot, gpa, hva, length):
        """A slot's hva and size never change (__kvm_set_memory_region: -22), so a slot number already in use
        with others is deleted first; the same hva and size at a new gpa is a move."""
        pid, slots = self.s.vms[vm]
        old = next((s for s in slots if s[0] == slot), None)
        if old is not None and (old[2], old[3]) != (hva, length):
            self.op("memslot", vm, slot, 0, 0, 0)
        self.op("memslot", vm, slot, gpa, hva, length)
        self.s.vms[vm] = (pid, [s for s in slots if s[0] != slot] + [(slot, gpa, hva, length)])

    def slot_target(self):
        vms = [(vm, v) for vm, v in self.s.vms.items() if v[1]]
        if not vms:
            return None
        vm, (pid, slots) = self.c.pick(vms)
        _, gpa, hva, length = self.c.pick(slots)
        off = self.c.pick([0, self.L.page, self.c.below(length // self.L.page) * self.L.page])
        off = min(off, length - self.L.page)
        return vm, gpa + off, hva + off, pid

    def do_vm(self):
        if self.c.rarely(15):
            return self.do_vm_on_shm()
        if not self.s.vms or self.c.chance(20):
            vm, pid = self.c.below(self.NVMS), self.pid()
            self.op("vm_create", vm, pid, self.c.pick(self.L.ipas))
            self.s.vms[vm] = (pid, [])
            return
        vm = self.c.pick(sorted(self.s.vms))
        pid, slots = self.s.vms[vm]
        k = self.c.below(10)
        if k < 4 or not slots:
            m = self.mapping(pid)
            hva, length = (m[0], m[1]) if m else (self.region(), self.L.pmd)
            align = 1 << 20 if self.arch == "s390" else self.L.page
            length = max(align, self.c.pick([length, self.L.pmd, 16 * self.L.page]) // align * align)
            hva = hva // align * align
            slot = self.c.below(4)
            gpa = slot * self.L.region + self.c.pick([0, 0, align])
            self.set_memslot(vm, slot, gpa, hva, length)
        elif k < 9:
            target = self.slot_target()
            if target:
                self.op("guest_fault", target[0], target[1], self.c.below(2))
        else:
            self.op("vm_destroy", vm)
            del self.s.vms[vm]

    def do_misc(self):
        k = self.c.below(7)
        pid = self.pid()
        if k == 0:
            m = self.mapping(pid)
            if m and self.c.rarely(50):  # fork of written memory: COW on both sides
                self.op("fault", pid, self.addr_in(pid), 1)
            self.op("fork", pid, 1 + self.c.below(self.NPIDS))
        elif k == 1:
            self.op("exit", pid)
            self.s.pids.pop(pid, None)
        elif k == 2:
            self.op("rcu_gp")
        elif k == 3:
            cpu = self.c.below(self.NCPUS)
            self.op("rcu_lock", cpu)
            self.op("rcu_unlock", cpu)
        else:
            m = self.mapping(pid)
            if m:
                # the mapping, or a range running past it into a hole or the next mapping (madvise_walk_vmas)
                start, length = self.c.pick([(m[0], m[1]), (m[0], m[1]), (m[0], m[1] + self.L.region),
                                             (m[0] & ~(self.L.pmd - 1), m[1] + self.L.pmd)])
                self.op("madvise", pid, start, length, self.c.below(4))

    def step(self):
        k = self.c.below(100)
        if not self.s.pids or k < 6:
            self.do_exec()
        elif k < 18:
            self.do_mmap()
        elif k < 24:
            self.do_shm()
        elif k < 40:
            self.do_fault()
        elif k < 68:
            self.do_actor()
        elif k < 90:
            self.do_vm()
        else:
            self.do_misc()

    def trace(self, max_ops: int, knobs: dict, config: dict | None = None) -> Trace:
        n = 1 + self.c.below(max_ops)
        while len(self.rows) < n:
            self.step()
            if isinstance(self.c, ByteChoices) and self.c.exhausted() and self.rows:
                break
        rows = self.rows[:max_ops]
        ops = np.array(rows, dtype=np.uint64) if rows else np.zeros((0, OP_WIDTH), dtype=np.uint64)
        elfs = [s390_elf(True), s390_elf(False), s390_elf(False)[:40]] if self.arch == "s390" else []
        return Trace(self.arch, ops, config=dict(config or {}), knobs=dict(knobs), elfs=elfs)


def seed_inputs(arch: str, count: int, max_ops: int = 32, config: dict | None = None, first: int = 0):
    """Decision streams of random traces (seeds first, first+1, ...), for libFuzzer's starting corpus."""
    layout = Layout.of(arch, config or {})
    for seed in range(first, first + count):
        rec = RecordingChoices(seed)
        FuzzGen(arch, rec, config, layout).trace(max_ops, {}, config)
        yield bytes(rec.bytes)


def fuzz_trace(arch: str, choices: Choices, max_ops: int, knobs: dict, config: dict | None = None,
               layout: Layout | None = None) -> Trace:
    return FuzzGen(arch, choices, config, layout).trace(max_ops, knobs, config)
