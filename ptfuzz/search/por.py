"""--por: which alphabet operations are independent, and the order they commute into.

Two operations a and x are independent when neither reads what the other writes and what they both write
commutes (counters incremented, labels the digest renames): from any state, a then x and x then a give the
same digest, each returns and violates as it would alone, and the oracle, run after each, sees the same
final state. native_ext/search/lvl.c then explores only one of the two orders (a state reached by x skips
every independent a ordered before x); docs/check.md has the argument that this keeps every state at its
breadth-first depth, and, for each rule below, what the operations read and write in the engine.

The rules (engine functions cited are the operations' whole footprint):
- sysctl_allocate_pgste writes e->sysctl_pgste and reads nothing; only exec (bprm_execve) and fork
  (copy_process) read it (mm/fork.c): it is independent of every other operation.
- rcu_lock(c) (rcu_enter) reads and writes cpus[c].rcu_nest, writes cpus[c].section and bumps
  e->next_section (a section label; the digest keeps only which callback waits for which cpu);
  rcu_unlock(c) reads cpus[c].rcu_nest and cpus[c].actor, writes cpus[c].rcu_nest. On different cpus any
  two of them are independent.
- walk_step(c) reads cpus[c]'s walker fields (actor, walk_done, tbl, level, addr) and table memory and
  liveness, and writes cpus[c].tbl, .level, .walk_done: independent of rcu_lock and rcu_unlock on any cpu
  (they touch neither), of walk_step on another cpu, and of walk_begin on another cpu (walk_begin writes
  its own cpu, the mm's reference count, which no walker step reads, and an RCU section label).
- rcu_lock and rcu_unlock on cpu c are independent of walk_begin on another cpu (walk_begin reads its
  own cpu, the process and its mm's root; rcu_unlock reads only its own cpu).

- From some states only (APART, docs/check.md "State-dependent independence"): two operations of different pids
  among mmap, munmap, madvise, fault, split, exec and exit (exec against exec or exit excepted: mm slots), where
  native_ext/search/lvl.c's lvl_por_apart holds at the state both were tried from: nothing links the two
  processes (shared memory, a forked anon_vma or hugetlbfs file, a window on any cpu) and the second queued no
  RCU callback.
Any operation these rules do not name (one added to the engine later) is dependent on every other, and while
the alphabet holds an operation outside LINKS_REVIEWED no APART pair is pruned at all: the new operation could
link two processes in a way lvl_pids_apart does not test.

The order: with symmetry (pids, cpus and VMs interchangeable in the digest) an operation's rank is its class
under relabelling: its template row in ALPHABET and its arguments but the pid, cpu and VM ones (check.py's
alphabet), which a renaming of pids, cpus or VMs keeps (the argument needs that); so two operations that differ
only in those (walk_step on cpu 0 and on cpu 1, fault of pid 1 and of pid 2 at one address) are never pruned
against each other, while mmap of pid 1 without THP and of pid 2 with it are. Without symmetry the rank is the
alphabet index."""
import os

from ..names import OP_NUMBER

NAMES = {v: k for k, v in OP_NUMBER.items()}
RCU = {"rcu_lock", "rcu_unlock"}
READS_SYSCTL = {"exec", "fork", "sysctl_allocate_pgste"}
# Operations of one process that touch only its own mm (engine.c: op_mmap, op_munmap, op_madvise, op_fault, op_split
# start from proc_mm(pid); exec (bprm_execve) replaces the process's mm, exit (exit_mm) drops it): two of them on
# different pids commute where nothing links the two processes (lvl.c lvl_pids_apart, evaluated at the state both
# were tried from). Not here: fork (the child's pid is another process's), shm_mmap (the shmem object), and every
# operation of a cpu or a VM. An operation added later is in none of these sets, so it is dependent on everything.
PID_LOCAL = {"mmap", "munmap", "madvise", "fault", "split", "exec", "exit"}
# exec takes the lowest free mm slot (mm_new) and exit frees one: exec against exec or exit could give another slot
# in the other order, and the digest keeps slots raw (several paths walk the mms in slot order)
SLOT_ORDER = {frozenset(("exec",)), frozenset(("exec", "exit"))}
KNOWN = RCU | READS_SYSCTL | PID_LOCAL | {"walk_step", "walk_begin"}
DEPENDENT, ALWAYS, APART = 0, 1, 2  # lvl.h's POR_DEPENDENT, POR_ALWAYS, POR_APART
# The operations whose states lvl_pids_apart knows: the only ways they link two processes are the ones it tests
# (fork's anon_vma and hugetlbfs file, shared memory, windows, ...). An operation added later may link processes
# in a new way (a hugetlb PMD table shared between mms, say) that lvl_pids_apart cannot see: while the alphabet
# holds one outside this set, no APART pair is pruned (relation below), until someone reviews it and adds it here.
LINKS_REVIEWED = {"sysctl_allocate_pgste", "exec", "fork", "exit", "mmap", "munmap", "madvise", "fault", "split",
                  "rcu_lock", "rcu_unlock", "rcu_gp", "walk_begin", "walk_step", "walk_end", "rmap_begin",
                  "rmap_commit", "vm_create", "memslot", "guest_fault", "guest_fault_begin", "guest_fault_commit",
                  "vm_destroy", "shm_mmap", "inval_hold", "inval_end", "unmap_mapping_begin", "frag_hold", "frag_end",
                  "walk_pin", "collapse_hold", "collapse_end",
                  # issue 20: a TLB entry is one cpu's, for one mm; fills (this operation only) may evict another
                  # mm's entry, but the processes' own operations only drop their own mm's entries, in place
                  # (core/tlb.c tlb_filter keeps the others' order), and mm_new's tlb_forget_mm only a dead slot's
                  "tlb_access",
                  # issue 20's mremap moves one process's own VMAs and tables (shared memory, the only way its
                  # pages reach another mm, already makes the pids not apart); a held move is an actor
                  # lvl_pids_apart does not accept; Z3's khugepaged collapses one process's block (a shmem block
                  # reaches other mms only through the shared memory the test refuses)
                  "mremap", "mremap_hold", "mremap_end", "khugepaged",
                  # hugetlb_mmap's VMA is a file mapping (vma.shm names its hugetlbfs page cache), which
                  # lvl_pids_apart refuses like shared memory; a held unshare is an actor it does not accept
                  "hugetlb_mmap", "unshare_hold", "unshare_end"}


def independent(a, x) -> int:
    """a and x: alphabet rows (opcode, args...). ALWAYS: from every state; APART: from a state where their pids
    are apart (lvl.c decides at the parent); DEPENDENT: never pruned against each other."""
    na, nx = NAMES.get(int(a[0])), NAMES.get(int(x[0]))
    if na not in KNOWN or nx not in KNOWN:
        return DEPENDENT
    if na in PID_LOCAL and nx in PID_LOCAL:
        return APART if int(a[1]) != int(x[1]) and frozenset((na, nx)) not in SLOT_ORDER else DEPENDENT
    if "sysctl_allocate_pgste" in (na, nx):
        other = nx if na == "sysctl_allocate_pgste" else na
        return int(other not in READS_SYSCTL)
    if na in PID_LOCAL or nx in PID_LOCAL:
        return DEPENDENT
    ca, cx = int(a[1]), int(x[1])  # the rest name a cpu first
    if na in RCU and nx in RCU:
        return int(ca != cx)
    pair = {na, nx}
    if "walk_step" in pair:
        other, co = (nx, cx) if na == "walk_step" else (na, ca)
        cw = ca if na == "walk_step" else cx
        if other in RCU:
            return ALWAYS
        if other in ("walk_step", "walk_begin"):
            return int(co != cw)
        return DEPENDENT
    if "walk_begin" in pair and pair & RCU:
        return int(ca != cx)
    return DEPENDENT


def apart_allowed(rows) -> bool:
    """May APART pairs be pruned over this alphabet: does lvl_pids_apart know every operation's links?"""
    return all(NAMES.get(int(r[0])) in LINKS_REVIEWED for r in rows)


def relation(rows, templates, symmetric: bool):
    """(key, indep): each operation's rank, and the n x n independence matrix as bytes (DEPENDENT, ALWAYS or
    APART per pair)."""
    n = len(rows)
    if symmetric:  # the rank of each operation's class (row, arguments but pids, cpus and VMs): dense, in row order
        order = {c: r for r, c in enumerate(sorted(set(templates)))}
        key = tuple(order[c] for c in templates)
    else:
        key = tuple(range(n))
    static_only = os.environ.get("PTFUZZ_POR_APART") == "0" or not apart_allowed(rows)  # PTFUZZ_POR_APART=0: B8's
    # "before", the static rules alone
    indep = bytearray(n * n)
    for i in range(n):
        for j in range(n):
            if i != j:
                r = independent(rows[i], rows[j])
                indep[i * n + j] = DEPENDENT if static_only and r == APART else r
    return key, bytes(indep)
