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

The order: with symmetry (pids, cpus and VMs interchangeable in the digest) an operation's rank is its
template row in ALPHABET, which a renaming of pids, cpus or VMs keeps (the argument needs that); so two
operations of one row (walk_step on cpu 0 and on cpu 1) are never pruned against each other. Without
symmetry the rank is the alphabet index."""
from ..names import OP_NUMBER

NAMES = {v: k for k, v in OP_NUMBER.items()}
RCU = {"rcu_lock", "rcu_unlock"}
READS_SYSCTL = {"exec", "fork", "sysctl_allocate_pgste"}


def independent(a, x) -> bool:
    """a and x: alphabet rows (opcode, args...)."""
    na, nx = NAMES.get(int(a[0])), NAMES.get(int(x[0]))
    if na is None or nx is None:
        return False
    if "sysctl_allocate_pgste" in (na, nx):
        other = nx if na == "sysctl_allocate_pgste" else na
        return other not in READS_SYSCTL
    ca, cx = int(a[1]), int(x[1])  # the rest name a cpu first
    if na in RCU and nx in RCU:
        return ca != cx
    pair = {na, nx}
    if "walk_step" in pair:
        other, co = (nx, cx) if na == "walk_step" else (na, ca)
        cw = ca if na == "walk_step" else cx
        if other in RCU:
            return True
        if other in ("walk_step", "walk_begin"):
            return co != cw
        return False
    if "walk_begin" in pair and pair & RCU:
        return ca != cx
    return False


def relation(rows, templates, symmetric: bool):
    """(key, indep): each operation's rank, and the n x n independence matrix as bytes."""
    n = len(rows)
    key = tuple(templates) if symmetric else tuple(range(n))
    indep = bytearray(n * n)
    for i in range(n):
        for j in range(n):
            if i != j and independent(rows[i], rows[j]):
                indep[i * n + j] = 1
    return key, bytes(indep)
