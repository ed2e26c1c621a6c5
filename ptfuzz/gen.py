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
    """Emits operations that mostly succeed: live pids, mapped addresses, idle or busy cpus as needed."""

    def __init__(self, arch: str, seed: int, config: dict | None = None):
        from .cli.geometry import stage1_geometry
        geo = stage1_geometry(arch, config or {})
        self.arch = arch
        self.rng = np.random.default_rng(seed)
        self.page = geo["page_size"]
        self.pmd = geo["pmd_size"]
        self.pids: list[int] = []
        self.maps: dict[int, list[tuple[int, int]]] = {}
        self.cpu_state = ["idle"] * 16
        self.vms: dict[int, int] = {}
        self.rows: list[list[int]] = []

    def r(self, n: int) -> int:
        return int(self.rng.integers(n))

    def op(self, name: str, *args: int) -> None:
        row = [OP_NUMBER[name], *[a & ((1 << 64) - 1) for a in args]]
        row.extend([0] * (OP_WIDTH - len(row)))
        self.rows.append(row)

    def addr_in(self, pid: int) -> int:
        maps = self.maps.get(pid)
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
            slot = self.r(MAP_SLOTS)
            length = (1 + self.r(4)) * self.pmd if self.r(2) else (1 + self.r(64)) * self.page
            addr = MAP_BASE + slot * 4 * self.pmd
            self.op("mmap", pid, addr, length, self.r(2))
            self.maps.setdefault(pid, []).append((addr, length))
        elif r < 55:
            self.op("fault", pid, self.addr_in(pid), self.r(2))
        elif r < 60:
            addr = self.addr_in(pid) & ~(self.pmd - 1)
            self.op("munmap", pid, addr, self.pmd)
        elif r < 65:
            addr = self.addr_in(pid) & ~(self.pmd - 1)
            self.op("madvise", pid, addr, self.pmd, self.r(4))
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
                self.op("fork", pid, child)
                self.pids.append(child)
                self.maps[child] = list(self.maps.get(pid, []))
        elif r < 99:
            self.op("rcu_gp")
        else:
            self.op("exit", pid)
            self.pids.remove(pid)

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
            self.op("rmap_begin", cpu, pid, self.addr_in(pid))
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
        r = self.r(10)
        owner = self.vms[vm]
        if r < 3:
            addr = self.addr_in(owner) & ~(self.pmd - 1)
            self.op("memslot", vm, self.r(4), self.r(4) * 64 * self.pmd, addr, self.pmd * (1 + self.r(2)))
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


def generate(arch: str, nops: int, seed: int = 0, knobs: dict | None = None, config: dict | None = None) -> Trace:
    g = Generator(arch, seed, config)
    while len(g.rows) < nops:
        g.step()
    ops = np.array(g.rows[:nops], dtype=np.uint64) if nops else np.zeros((0, OP_WIDTH), dtype=np.uint64)
    elfs = [s390_elf(True), s390_elf(False)] if arch == "s390" else []
    return Trace(arch, ops, config=dict(config or {}), knobs=dict(knobs or {}), elfs=elfs,
                 meta={"found_by": "gen", "seed": seed})
