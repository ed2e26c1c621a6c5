"""Workload generation: random but state-aware traces (processes, mappings, faults, THP, VMs, walkers)."""
import struct

import numpy as np

from .names import OP_NUMBER, OP_WIDTH
from .trace import Trace

MiB = 1 << 20
# Where generated mappings live: below the s390 3-level limit, away from the stack.
MAP_BASE = 0x10000000
MAP_SLOTS = 64  # 64 slots of 4 MiB each


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


class Generator:
    """Emits operations that mostly succeed: live pids, mapped addresses, idle or busy cpus as needed.

    Shared memory: a few shmem objects, mapped by several processes at shared page offsets (aligned or not), read
    and written, collapsed. VMs sit on anonymous memory only: on s390 a VM over shared memory that another
    process collapses is BENCH.md M1, a violation under the defaults, and a workload must run to its end."""
    NOBJS = 3

    def __init__(self, arch: str, seed: int, config: dict | None = None):
        from .cli.geometry import stage1_geometry
        geo = stage1_geometry(arch, config or {})
        self.arch = arch
        self.rng = np.random.default_rng(seed)
        self.page = geo["page_size"]
        self.pmd = geo["pmd_size"]
        self.pids: list[int] = []
        self.maps: dict[int, list[tuple[int, int]]] = {}      # anonymous mappings (and VM memory)
        self.shm_maps: dict[int, list[tuple[int, int]]] = {}  # shared-memory mappings
        self.anon_flags: dict[tuple[int, int], int] = {}
        self.cpu_state = ["idle"] * 16
        self.vms: dict[int, int] = {}
        self.slots: dict[tuple[int, int], tuple[int, int]] = {}  # (vm, slot) -> (hva, len)
        self.rows: list[list[int]] = []

    def r(self, n: int) -> int:
        return int(self.rng.integers(n))

    def op(self, name: str, *args: int) -> None:
        row = [OP_NUMBER[name], *[a & ((1 << 64) - 1) for a in args]]
        row.extend([0] * (OP_WIDTH - len(row)))
        self.rows.append(row)

    def addr_in(self, pid: int, shared: bool = False) -> int:
        maps = (self.maps.get(pid) or []) + ((self.shm_maps.get(pid) or []) if shared else [])
        if not maps:
            return MAP_BASE
        start, length = maps[self.r(len(maps))]
        return start + self.r(length // self.page) * self.page

    def step(self) -> None:
        r = self.r(100)
        if not self.pids or r < 3:
            pid = self.r(8)
            self.op("exec", pid, self.r(3) - 1 if self.arch == "s390" else -1)  # -1, 0 (pgste), 1 (plain)
            if pid not in self.pids:
                self.pids.append(pid)
            self.maps[pid] = []
            return
        pid = self.pids[self.r(len(self.pids))]
        if r < 15:
            maps = self.maps.get(pid)
            if maps and self.r(5) == 0:  # right after an earlier mapping, with its flags: vma_merge
                start, length = maps[self.r(len(maps))]
                addr, flags, length = start + length, self.anon_flags.get((pid, start), 0), (1 + self.r(16)) * self.page
            else:
                slot = self.r(MAP_SLOTS)
                length = (1 + self.r(4)) * self.pmd if self.r(2) else (1 + self.r(64)) * self.page
                addr, flags = MAP_BASE + slot * 4 * self.pmd, self.r(2)
            self.op("mmap", pid, addr, length, flags)
            self.maps.setdefault(pid, []).append((addr, length))
            self.anon_flags[(pid, addr)] = flags
        elif r < 19:
            self.shm(pid)
        elif r < 55:
            addr = self.addr_in(pid, shared=True)
            if self.r(8) == 0:  # a read, then a write: the zero page (a shared page read-only), then COW or reuse
                self.op("fault", pid, addr, 0)
            self.op("fault", pid, addr, self.r(2))
        elif r < 60:
            addr = self.addr_in(pid, shared=True) & ~(self.pmd - 1)
            self.op("munmap", pid, addr, self.pmd)
        elif r < 65:
            addr = self.addr_in(pid, shared=True) & ~(self.pmd - 1)
            # now and then over a hole or the next mapping too (madvise_walk_vmas: -12 after the mapped parts)
            self.op("madvise", pid, addr, self.pmd * (1 + 3 * (self.r(4) == 0)), self.r(4))
        elif r < 67:
            self.op("split", pid, self.addr_in(pid))
        elif r < 80:
            self.walker(pid)
        elif r < 85:
            self.rmap(pid)
        elif r < 97:
            self.kvm(pid)
        elif r < 98:
            child = self.r(8)
            if child not in self.pids:
                if self.maps.get(pid):  # fork of written memory: COW on both sides
                    self.op("fault", pid, self.addr_in(pid), 1)
                self.op("fork", pid, child)
                self.pids.append(child)
                self.maps[child] = list(self.maps.get(pid, []))
                self.shm_maps[child] = list(self.shm_maps.get(pid, []))
        elif r < 99:
            self.op("rcu_gp")
        else:
            self.op("exit", pid)
            self.pids.remove(pid)

    def shm(self, pid: int) -> None:
        """shm_mmap of one of a few objects, in the shared-memory half of the map slots: the page offset of a slot
        is fixed per object, so processes share pages; one mapping in four starts a page off (PTE-mapped)."""
        obj, slot = self.r(self.NOBJS), self.r(MAP_SLOTS // 4)
        pgoff = slot * 4 * self.pmd // self.page
        off = self.page if self.r(4) == 0 else 0
        length = (1 + self.r(2)) * self.pmd
        addr = MAP_BASE + (MAP_SLOTS + slot) * 4 * self.pmd + off
        self.op("shm_mmap", pid, addr, length, obj, pgoff)
        self.shm_maps.setdefault(pid, []).append((addr, length))
        if self.r(4) == 0:
            self.op("madvise", pid, addr - off, length, 3)

    def walker(self, pid: int) -> None:
        cpu = self.r(4)
        state = self.cpu_state[cpu]
        if state == "idle":
            self.op("walk_begin", cpu, pid, self.addr_in(pid))
            self.cpu_state[cpu] = "walk"
        elif state == "walk":
            if self.r(4):
                self.op("walk_step", cpu)
            else:
                self.op("walk_end", cpu)
                self.cpu_state[cpu] = "idle"
        else:
            self.op("rcu_gp")

    def rmap(self, pid: int) -> None:
        cpu = 4 + self.r(4)
        if self.cpu_state[cpu] == "idle":
            self.op("rmap_begin", cpu, pid, self.addr_in(pid, shared=True))
            self.cpu_state[cpu] = "rmap"
        else:
            self.op("rmap_commit", cpu)
            self.cpu_state[cpu] = "idle"

    def kvm(self, pid: int) -> None:
        vm = self.r(2)
        if vm not in self.vms:
            self.op("vm_create", vm, pid, 0)
            self.vms[vm] = pid
            return
        if self.arch != "s390" and self.r(8) == 0:
            return self.window()
        r = self.r(10)
        owner = self.vms[vm]
        if r < 3:
            addr = self.addr_in(owner) & ~(self.pmd - 1)
            slot, gpa, length = self.r(4), self.r(4) * 64 * self.pmd, self.pmd * (1 + self.r(2))
            if self.slots.get((vm, slot), (addr, length)) != (addr, length):
                self.op("memslot", vm, slot, 0, 0, 0)  # a slot's hva and size never change: delete it first
            self.op("memslot", vm, slot, gpa, addr, length)
            self.slots[(vm, slot)] = (addr, length)
        elif r < 9:
            cpu = 8 + self.r(4)
            gpa = self.r(4) * 64 * self.pmd + self.r(self.pmd // self.page) * self.page
            if self.cpu_state[cpu] == "idle" and self.r(2):
                self.op("guest_fault_begin", cpu, vm, gpa, 1)
                self.cpu_state[cpu] = "gfault"
            elif self.cpu_state[cpu] == "gfault":
                self.op("guest_fault_commit", cpu)
                self.cpu_state[cpu] = "idle"
            else:
                self.op("guest_fault", vm, gpa, self.r(2))
        else:
            self.op("vm_destroy", vm)
            del self.vms[vm]
            self.slots = {k: v for k, v in self.slots.items() if k[0] != vm}

    def window(self) -> None:
        """An invalidation window on cpus 12..15: inval_hold stops the next host change that notifies a VM between
        invalidate_range_start and _end, inval_end lets it finish (arm64 and x86_64 only)."""
        cpu = 12 + self.r(4)
        if self.cpu_state[cpu] == "idle":
            self.op("inval_hold", cpu)
            self.cpu_state[cpu] = "inval"
        else:
            self.op("inval_end", cpu)
            self.cpu_state[cpu] = "idle"


def generate(arch: str, nops: int, seed: int = 0, knobs: dict | None = None, config: dict | None = None) -> Trace:
    g = Generator(arch, seed, config)
    while len(g.rows) < nops:
        g.step()
    ops = np.array(g.rows[:nops], dtype=np.uint64) if nops else np.zeros((0, OP_WIDTH), dtype=np.uint64)
    elfs = [s390_elf(True), s390_elf(False)] if arch == "s390" else []
    return Trace(arch, ops, config=dict(config or {}), knobs=dict(knobs or {}), elfs=elfs,
                 meta={"found_by": "gen", "seed": seed})
