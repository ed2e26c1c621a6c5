"""Exhaustive bounded model checking: every operation sequence up to a depth over a small per-arch alphabet.

The search runs in the engine (native_ext/search/check.c): breadth first, each state once by its canonical
digest (native_ext/search/digest.c), so the first violation found has a shortest trace over the alphabet, and
"exhausted" is a bound: no violation, during the operations or at teardown, in any sequence of at most
that many operations. This module chooses the alphabet, drives the search in short slices (progress,
time limit, Ctrl-C) and files the counterexample the way `ptfuzz fuzz` files its findings.

The alphabet (ALPHABET below) is a table of operation templates per arch over abstract domains: P pids,
C cpus, V VMs, A address slots, and per-arch sizes. Its choices:
- address slots: slot 0 is PUD-aligned (hugetlb PUD pages and 1G memslots start there), slot 1 is the
  next PMD (a neighbour in the same PMD table: VMA merging, one table freed while its sibling lives),
  slot 2 the next PUD (its own PMD table), and on s390 slot 3 is 4 TiB, the 3-level asce_limit (the mm
  upgrades); every mapping is one PMD block (a THP, a segment), hugetlb PUD mappings one PUD;
- ELF images: the ordinary executable (-1) and one with PT_S390_PGSTE (s390);
- memslots: slot 0 at gpa 0 over an address slot, one PMD block (THP-sized), 16 pages (a slot too small
  for a block, so faults stay 4K and no THP adjustment runs) or, at slot 0 where the arch has PUD
  hugetlb, one PUD; guest faults at gpa 0;
- every operation on a pid, cpu or VM exists for each of them, so they are interchangeable and the digest
  may treat them symmetrically (see digest.c for why that is sound);
- operations added to the engine later slot in as rows of the table (inval_hold/inval_end: one per cpu).

Reductions, all sound (each argued where it is implemented): states deduplicated by digest, which renames
allocation-order names (digest.c); pids, cpus and VMs interchangeable (digest.c, symmetry); a successor
whose digest equals its parent's (an operation that failed with an errno and changed nothing, or changed
nothing that matters) is not a new state (check.c)."""
import enum
import hashlib
import itertools
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import _engine
from .. import trace as tracemod
from ..engine import CONFIG_ORDER, Violation, replay
from ..errors import UsageError
from .fuzzgen import Layout
from .elfimage import s390_elf
from ..names import ARCH_NAMES, OP_NUMBER, OP_WIDTH, VIOLATION_KINDS, knob_vector
from ..procs import deferred_interrupts
from ..trace import CONFIG_DEFAULTS, Trace, op_text

U64 = (1 << 64) - 1
LIMITS = {"pids": 8, "cpus": 8, "vms": 4}


class CheckVerdict(str, enum.Enum):
    VIOLATION = "violation"
    EXHAUSTED = "exhausted"
    TIMEOUT = "timeout"


class _Status(enum.IntEnum):
    """check.c's enum check_status."""
    RUNNING = 0
    VIOLATION = 1
    EXHAUSTED = 2
    FULL = 3


@dataclass(frozen=True)
class Domains:
    """The abstract values operations range over, for one arch and one alphabet size."""
    pids: tuple
    cpus: tuple
    vms: tuple
    addrs: tuple
    page: int
    pmd: int
    pud: int | None
    elfs: tuple      # exec's elf argument: -1 or an index into ELFS
    ipas: tuple      # vm_create's ipa_bits
    slot_lens: tuple  # memslot lengths over any address slot


# The template table. An argument is a literal int, a tuple of literal alternatives, or a domain name:
# pid, pid2 (another pid), cpu, vm, addr (any slot), addr0 (slot 0), pmd, pud, elf, ipa, slotlen, stack (s390:
# the PMD block holding exec's stack, below STACK_TOP = 4 TiB: the mm's first PTE table lives there).
# A row whose operation the engine lacks, or whose domain is empty (no PUD size), yields nothing.
COMMON = (
    ("exec", "pid", "elf"),
    ("fork", "pid", "pid2"),
    ("exit", "pid"),
    ("mmap", "pid", "addr", "pmd", (0, 1, 2)),   # plain, THP-eligible, hugetlb PMD
    ("mmap", "pid", "addr0", "pud", 4),          # hugetlb PUD
    ("shm_mmap", "pid", "addr", "pmd", 0, 0),
    ("munmap", "pid", "addr", "pmd"),
    ("madvise", "pid", "addr", "pmd", (0, 1, 2, 3)),
    ("fault", "pid", "addr", (0, 1)),
    ("split", "pid", "addr"),
    ("rcu_lock", "cpu"),
    ("rcu_unlock", "cpu"),
    ("rcu_gp",),
    ("walk_begin", "cpu", "pid", "addr"),
    ("walk_step", "cpu"),
    ("walk_end", "cpu"),
    ("rmap_begin", "cpu", "pid", "addr"),
    ("unmap_mapping_begin", "cpu", "pid", "addr"),
    ("rmap_commit", "cpu"),
    ("vm_create", "vm", "pid", "ipa"),
    ("memslot", "vm", 0, 0, "addr", "slotlen"),
    ("memslot", "vm", 0, 0, "addr0", "pud"),
    ("guest_fault", "vm", 0, (0, 1)),
    ("guest_fault_begin", "cpu", "vm", 0, (0, 1)),
    ("guest_fault_commit", "cpu"),
    ("vm_destroy", "vm"),
    ("inval_hold", "cpu"),   # the invalidation window, where the engine has it
    ("inval_end", "cpu"),
    ("walk_pin", "cpu"),      # GUP-fast's grab and rechecks (Z5)
    ("collapse_hold", "cpu"),  # collapse_huge_page held between isolate and copy (Z5)
    ("collapse_end", "cpu"),
    ("tlb_access", "cpu", "pid", "addr", 0),  # a read through the cpu's TLB (issue 20)
    ("mremap", "pid", "addr", "pmd", "addr", "pmd"),  # a PMD block moved to another slot (issue 20; same slot: a no-op)
    ("mremap_hold", "cpu"),  # the next move held before its old range's unmap
    ("mremap_end", "cpu"),
    ("khugepaged", "pid", "addr"),  # khugepaged's collapse of one block, the pmd left empty (Z3)
)
# arm64: two PUDs at the base, mapped, under one memslot and dropped by one DONTNEED, whose stage-2 unmap walks two
# chunks (stage2_apply_range yields mmu_lock between them: a window stops there, docs/model.md section 7; Z9)
ARM64_YIELD = (
    ("mmap", "pid", "addr0", "pud2", 0),
    ("memslot", "vm", 0, 0, "addr0", "pud2"),
    ("madvise", "pid", "addr0", "pud2", 0),
)
# arm64 and x86_64: memslot 0 deleted (KVM_MR_DELETE, whose INVALID phase a window stops at; Z8)
KVM_DELETE = (("memslot", "vm", 0, 0, 0, 0),)
# arm64 and x86_64 (issue 20): a shared hugetlbfs mapping of the PUD at slot 0 (PMD sharing wants the PUD-aligned
# range inside the VMA), its munmap whole, and that munmap held between its unshare and its free_pgtables (Z10)
HUGETLB_SHARE = (
    ("hugetlb_mmap", "pid", "addr0", "pud", 0, 0),
    ("munmap", "pid", "addr0", "pud"),
    ("unshare_hold", "cpu"),
    ("unshare_end", "cpu"),
)
ALPHABET = {
    "s390": (("sysctl_allocate_pgste", (0, 1)),) + COMMON + (
        ("munmap", "pid", "stack", "pmd"),  # the exec stack's segment: its PTE table goes by RCU (Z4)
        ("frag_hold", "cpu"),    # page_table_free held inside mm->context.lock (Z4)
        ("frag_end", "cpu"),
    ),
    "arm64": COMMON + ARM64_YIELD + KVM_DELETE + HUGETLB_SHARE,
    "x86_64": COMMON + KVM_DELETE + HUGETLB_SHARE,
}
ELFS = {"s390": (s390_elf(True),), "arm64": (), "x86_64": ()}
DEFAULTS = {"pids": 2, "cpus": 1, "vms": 1, "addrs": 1}


def domains(arch: str, config: dict, pids: int, cpus: int, vms: int, addrs: int) -> Domains:
    L = Layout.of(arch, config)
    pud = L.pud
    base = L.base  # a multiple of the PUD size (and of 4 PMDs)
    slots = [base, base + L.pmd, base + (pud or 4 * L.pmd)]
    if arch == "s390":
        slots.append(1 << 42)
    if not 1 <= addrs <= len(slots):
        raise UsageError(f"--addrs {addrs}: 1 to {len(slots)} on {arch}")
    for name, n in (("pids", pids), ("cpus", cpus), ("vms", vms)):
        if not (1 if name == "pids" else 0) <= n <= LIMITS[name]:
            raise UsageError(f"--{name} {n}: {1 if name == 'pids' else 0} to {LIMITS[name]}")
    lens = (L.pmd, 16 * L.page) if arch != "s390" else (L.pmd,)  # s390 memslots are 1 MiB multiples
    return Domains(pids=tuple(range(1, pids + 1)), cpus=tuple(range(cpus)), vms=tuple(range(vms)),
                   addrs=tuple(slots[:addrs]), page=L.page, pmd=L.pmd, pud=pud,
                   elfs=(-1, 0) if arch == "s390" else (-1,), ipas=(0, 32) if arch == "arm64" else (0,),
                   slot_lens=lens)


def _values(arg, d: Domains, pid):
    if isinstance(arg, int):
        return (arg,)
    if isinstance(arg, tuple):
        return arg
    return {
        "pid": d.pids, "cpu": d.cpus, "vm": d.vms, "addr": d.addrs, "addr0": d.addrs[:1],
        "pmd": (d.pmd,), "pud": (d.pud,) if d.pud else (), "pud2": (2 * d.pud,) if d.pud else (), "elf": d.elfs, "ipa": d.ipas, "slotlen": d.slot_lens,
        "pid2": tuple(p for p in d.pids if p != pid),
        "stack": ((1 << 42) - d.pmd,),
    }[arg]


SYMMETRIC = {"pid", "pid2", "cpu", "vm"}  # the domains the digest may relabel (ptf_digest_sym's groups)


def alphabet(arch: str, d: Domains, templates: list | None = None) -> list[list[int]]:
    """The operations (list form rows) the search tries in every state, in table order. templates, when
    given, receives each operation's class under relabelling: its row number in ALPHABET[arch] and its arguments
    with the pid, cpu and VM ones left out (--por orders operations by it: a relabelling keeps it)."""
    out: list[list[int]] = []
    for t, (name, *args) in enumerate(ALPHABET[arch]):
        if name not in OP_NUMBER:
            continue
        # pid2 depends on the pid chosen for the first argument: expand pid first
        for first in (_values(args[0], d, None) if args else ((),)):
            pid = first if args and args[0] == "pid" else None
            rest = [_values(a, d, pid) for a in args[1:]]
            for combo in itertools.product(*rest):
                row = [OP_NUMBER[name], *(([first] if args else []) + list(combo))]
                out.append([v & U64 for v in row] + [0] * (OP_WIDTH - len(row)))
                if templates is not None:
                    vals = ([first] if args else []) + list(combo)
                    templates.append((t, tuple(v for a, v in zip(args, vals) if a not in SYMMETRIC)))
    return out


@dataclass
class Progress:
    depth: int
    done_depth: int
    generated: int
    distinct: int
    queue: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.generated / max(self.seconds, 1e-9)


@dataclass
class CheckResult:
    arch: str
    knobs: dict
    verdict: CheckVerdict
    depth: int              # violation: its length; else every sequence of <= depth operations is checked
    max_depth: int
    states: int             # states generated (successors tried)
    distinct: int
    seconds: float
    alphabet: int
    blocked: int = 0        # states generated by an operation that would have waited (-16, nothing changed)
    violation: Violation | None = None
    path: Path | None = None
    trace: Trace | None = None
    at_teardown: bool = False
    interrupted: bool = False
    fixpoint: bool = False  # a depth added no new state: no longer sequence reaches anything new
    reason: str = ""        # why a timeout verdict stopped: "time", "interrupted", "state bound"
    domains: Domains | None = field(default=None, repr=False)
    jobs: int = 1
    por: bool = False
    pruned: int = 0         # --por: successors not generated (their sequence is explored in another order)
    shard: tuple | None = None     # (i, n)
    split_depth: int | None = None  # --shard: where the search split (the depths before it: searched alike)
    levels: list | None = None      # distinct new states per depth (level-synchronous search)
    worker_cpu: list | None = None  # each worker's CPU seconds (at its last finished depth)

    def to_json(self) -> dict:
        v = self.violation
        return {"verdict": self.verdict.value, "depth": self.depth, "states": self.states,
                "blocked": self.blocked, "distinct": self.distinct, "seconds": round(self.seconds, 3),
                "violation": None if v is None else {"kind": v.kind, "op_index": v.op_index, "op": v.op,
                                                     "message": v.message},
                "path": None if self.path is None else str(self.path),
                "arch": self.arch, "knobs": self.knobs, "max_depth": self.max_depth, "alphabet": self.alphabet,
                "states_per_second": round(self.states / max(self.seconds, 1e-9), 1),
                "fixpoint": self.fixpoint, "interrupted": self.interrupted, "stopped_by": self.reason or None,
                "jobs": self.jobs, "por": self.por, "pruned": self.pruned,
                "shard": None if self.shard is None else f"{self.shard[0]}/{self.shard[1]}",
                "split_depth": self.split_depth, "levels": self.levels, "worker_cpu_s": self.worker_cpu}


def check(arch: str, knobs: dict, depth: int, *, pids: int = DEFAULTS["pids"], cpus: int = DEFAULTS["cpus"],
          vms: int = DEFAULTS["vms"], addrs: int = DEFAULTS["addrs"], seconds: float = 60.0,
          corpus: Path | None = None, config: dict | None = None, symmetry: bool = True, teardown: bool = True,
          max_states: int = 1 << 25, on_progress=None, slice_seconds: float = 0.1, jobs: int = 1,
          por: bool = False, shard: tuple | None = None) -> CheckResult:
    """Search, and file the counterexample under corpus/regressions/ARCH/ (when corpus is given).

    jobs > 1, por or shard=(i, n) run the level-synchronous search (parallel.py) over jobs processes; else
    the one-process search (check.c). A KeyboardInterrupt stops the search and returns the bound reached so
    far (verdict timeout, interrupted); on_progress(Progress) is called after every slice (every level, and
    every 0.1 s while one runs, in the level-synchronous search)."""
    if not 0 <= depth <= 64:
        raise UsageError(f"--depth {depth}: 0 to 64")
    config = dict(config or {})
    d = domains(arch, config, pids, cpus, vms, addrs)
    rows = alphabet(arch, d)
    packed = np.ascontiguousarray(np.array(rows, dtype=np.uint64))
    groups = ((d.pids[0], d.pids[-1] + 1), (0, len(d.cpus)), (0, len(d.vms))) if symmetry else None
    elfs = ELFS[arch]
    full = {**CONFIG_DEFAULTS, **config}
    cfg = tuple(int(full[k]) for k in CONFIG_ORDER)
    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: at least 1")
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise UsageError(f"--shard {shard[0]}/{shard[1]}: I/N with 0 <= I < N")
    if jobs > 1 or por or shard is not None:
        return _check_levels(arch, knobs, depth, d, rows, packed, groups, elfs, cfg, config, teardown, seconds,
                             corpus, max_states, on_progress, jobs, por, shard)
    started = time.monotonic()
    checker = _engine.Checker(ARCH_NAMES.index(arch), knob_vector(arch, knobs), cfg, tuple(elfs), packed.tobytes(),
                              depth, groups, teardown, max_states)
    deadline = started + seconds
    interrupted = False
    status = _Status(checker.stats()["status"])
    try:
        while status == _Status.RUNNING:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            status = _Status(checker.run(min(slice_seconds, left)))
            if on_progress:
                st = checker.stats()
                on_progress(Progress(st["depth"], st["done_depth"], st["generated"], st["distinct"], st["queue"],
                                     time.monotonic() - started))
    except KeyboardInterrupt:
        interrupted = True
        status = _Status(checker.stats()["status"])
    elapsed = time.monotonic() - started
    st = checker.stats()
    result = CheckResult(arch, dict(knobs), CheckVerdict.TIMEOUT, st["done_depth"], depth, st["generated"],
                         st["distinct"], elapsed, len(rows), blocked=st["blocked"], interrupted=interrupted,
                         fixpoint=st["fixpoint"], domains=d)
    if status == _Status.VIOLATION:
        path, kind, _, _, at_teardown = checker.violation()
        _file(result, arch, knobs, config, elfs, rows, d, path, kind, at_teardown, corpus)
    elif status == _Status.EXHAUSTED:
        result.verdict = CheckVerdict.EXHAUSTED
        result.depth = depth
    else:
        result.reason = "interrupted" if interrupted else "state bound" if status == _Status.FULL else "time"
    return result


def _file(result, arch, knobs, config, elfs, rows, d, path, kind, at_teardown, corpus):
    """Replay the counterexample (a search and a replay that disagree is a digest bug), make result a
    violation, and file the trace under corpus (when given)."""
    ops = np.array([rows[i] for i in path], dtype=np.uint64).reshape(-1, OP_WIDTH)
    t = Trace(arch, ops, config=config, knobs=dict(knobs), elfs=list(elfs),
              expect={"verdict": "violation", "kind": VIOLATION_KINDS[kind - 1]})
    r = replay(t)
    if r.violation is None or r.violation.kind != VIOLATION_KINDS[kind - 1]:
        # the search and a plain replay disagree: the digest merged two states that differ (a bug here)
        raise RuntimeError(f"check: the counterexample {[op_text(o) for o in ops]} replays as "
                           f"{r.violation.kind if r.violation else 'clean'}, the search saw "
                           f"{VIOLATION_KINDS[kind - 1]}: the state digest is unsound")
    result.verdict, result.depth, result.violation = CheckVerdict.VIOLATION, len(path), r.violation
    result.at_teardown = at_teardown
    t.meta = {"found_by": "ptfuzz check", "depth": len(path), "alphabet": len(rows),
              "domains": {"pids": len(d.pids), "cpus": len(d.cpus), "vms": len(d.vms), "addrs": len(d.addrs)},
              "states": result.states, "distinct": result.distinct,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    result.trace = t
    if corpus is not None:
        digest = hashlib.sha256(tracemod.dumps(replace(t, meta=None))).hexdigest()[:8]
        result.path = Path(corpus) / "regressions" / arch / f"{r.violation.kind}-{digest}.msgpack"
        with deferred_interrupts():  # on disk, or not reported
            tracemod.save(t, result.path)


def _check_levels(arch, knobs, depth, d, rows, packed, groups, elfs, cfg, config, teardown, seconds, corpus,
                  max_states, on_progress, jobs, por, shard) -> CheckResult:
    """check() over the level-synchronous search (parallel.py): --jobs, --por, --shard."""
    from . import parallel, por as pormod
    key = indep = None
    if por:
        templates: list = []
        alphabet(arch, d, templates)
        key, indep = pormod.relation(rows, templates, symmetric=groups is not None)
    spec = parallel.Spec(ARCH_NAMES.index(arch), tuple(knob_vector(arch, knobs)), tuple(cfg), tuple(elfs),
                         packed.tobytes(), len(rows), groups, teardown, key, indep)
    started = time.monotonic()

    def progress(depth_now, done, generated, distinct, secs):
        if on_progress:
            on_progress(Progress(depth_now, done, generated, distinct, 0, secs))
    o = parallel.search(spec, depth, jobs=jobs, seconds=seconds, shard=shard, max_states=max_states,
                        on_progress=progress)
    result = CheckResult(arch, dict(knobs), CheckVerdict.TIMEOUT, o.done_depth, depth, o.generated, o.distinct,
                         time.monotonic() - started, len(rows), blocked=o.blocked,
                         interrupted=o.status == "interrupted", fixpoint=o.fixpoint, domains=d, jobs=jobs,
                         por=por, pruned=o.pruned, shard=shard, split_depth=o.split_depth, levels=o.levels,
                         worker_cpu=o.worker_cpu)
    if o.status == "violation":
        path, kind, _, _, at_teardown = o.violation
        _file(result, arch, knobs, config, elfs, rows, d, path, kind, at_teardown, corpus)
    elif o.status == "exhausted":
        result.verdict = CheckVerdict.EXHAUSTED
        result.depth = depth
    else:
        result.reason = o.status
    return result
