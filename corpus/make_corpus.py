"""make_corpus.py: the hand-written corpus, as source; `make corpus` writes every .msgpack from it."""
import hashlib
import sys
from dataclasses import replace
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ptfuzz import trace as tracemod  # noqa: E402
from ptfuzz.search.gen import s390_elf  # noqa: E402
from ptfuzz.trace import Trace, ops_from_list  # noqa: E402

HERE = Path(__file__).resolve().parent
K, M, G = 1 << 10, 1 << 20, 1 << 30
A = 0x10000000  # a quiet place for mappings
PGSTE_ELF, PLAIN_ELF = s390_elf(True), s390_elf(False)
BAD_ELF = PLAIN_ELF[:16] + b"\x00\x09" + PLAIN_ELF[18:]  # ET_DYN? no: e_type 9, not executable
ELFS = [PGSTE_ELF, PLAIN_ELF, BAD_ELF]



def shmem_seed(base: int, P: int) -> list:
    """Shared memory on one arch (P: its PMD size): shared faults and fault-around, a write to a read-only PTE and
    PMD, fork (the child re-faults), DONTNEED (the cache keeps the page), merging by file offset, MADV_COLLAPSE
    retracting every aligned mapping of the block, a misaligned mapping of the folio by PTEs, munmap and exit."""
    return [
        ["exec", 1, -1], ["shm_mmap", 1, base, 2 * P, 0, 0], ["fault", 1, base, 0], ["fault", 1, base + 4 * K, 1],
        ["fault", 1, base, 1], ["exec", 2, -1], ["shm_mmap", 2, base, P, 0, 0], ["fault", 2, base + 8 * K, 0],
        ["fork", 2, 3], ["fault", 3, base, 0], ["madvise", 2, base, P, 0], ["fault", 2, base, 0],
        ["shm_mmap", 1, base + 2 * P, P, 0, 2 * P // (4 * K)], ["shm_mmap", 1, base + 3 * P, P, 1, 0],
        ["munmap", 1, base + P, 4 * K], ["madvise", 1, base, P, 3], ["fault", 2, base, 0], ["fault", 2, base, 1],
        ["shm_mmap", 3, base + 4 * K, P, 0, 0], ["fault", 3, base + 8 * K, 0], ["madvise", 3, base, 4 * P, 3],
        ["shm_mmap", 2, base + P, P, 0, 1], ["madvise", 2, base, 2 * P, 2], ["exit", 3], ["exit", 2],
        ["munmap", 1, base, 4 * P],
    ]


# name -> (ops, knobs, expected kind or None, note[, extra meta])
S390 = {
    # ---- seeds: clean under the knobs given ----
    "seeds/s390/exec-plain-4k": ([
        ["exec", 1, -1], ["mmap", 1, A, 64 * K, 0], ["fault", 1, A, 1], ["fault", 1, A + 4 * K, 0],
        ["fault", 1, A, 1], ["fault", 1, A + 64 * K, 1], ["munmap", 1, A, 64 * K], ["exit", 1],
    ], {}, None, "4K faults, an already-mapped fault, a fault outside every VMA (-14), munmap, exit"),
    "seeds/s390/exec-pgste-restart": ([
        ["exec", 1, 0], ["vm_create", 0, 1, 0], ["exec", 2, 1], ["vm_create", 1, 2, 0],
    ], {}, None, "PT_S390_PGSTE restarts exec once and vm_create works; a plain ELF gets 2K tables and vm_create -22"),
    "seeds/s390/sysctl-allocate-pgste": ([
        ["sysctl_allocate_pgste", 1], ["exec", 1, 1], ["mmap", 1, A, 1 * M, 0], ["fault", 1, A, 1],
        ["vm_create", 0, 1, 0], ["sysctl_allocate_pgste", 0],
    ], {}, None, "vm.allocate_pgste=1 gives a plain binary PGSTE tables"),
    "seeds/s390/pgste-inherited": ([
        ["exec", 1, 0], ["fork", 1, 2], ["vm_create", 0, 2, 0], ["exec", 2, 1], ["vm_create", 1, 2, 0],
        ["fork", 1, 2], ["fork", 9, 3],
    ], {}, None, "alloc_pgste is inherited by fork and sticky across exec; fork onto a live pid -17, from a dead one -3"),
    "seeds/s390/asce-upgrade": ([
        ["exec", 1, -1], ["mmap", 1, 1 << 42, 2 * M, 0], ["fault", 1, (1 << 42) + 4 * K, 1],
        ["mmap", 1, 1 << 60, 1 * M, 0], ["fault", 1, 1 << 60, 0], ["fork", 1, 2], ["fault", 2, 1 << 60, 1],
        ["mmap", 1, (1 << 64) - 8 * K, 8 * K, 0], ["munmap", 1, 1 << 60, 1 * M],
    ], {}, None, "mappings above 4 TiB and 8 PiB upgrade the mm to 4 and 5 levels; fork keeps the level; past TASK_SIZE -12"),
    "seeds/s390/fragments-reuse": ([
        ["exec", 1, -1], ["mmap", 1, A, 4 * M, 0], ["fault", 1, A, 1], ["fault", 1, A + M, 1],
        ["fault", 1, A + 2 * M, 1], ["munmap", 1, A + M, M], ["fault", 1, A + 3 * M, 1], ["rcu_gp"],
        ["mmap", 1, A + M, M, 0], ["fault", 1, A + M, 1], ["munmap", 1, A, 4 * M],
    ], {}, None, "2K halves share pages; a freed half waits for RCU before it is reused"),
    "seeds/s390/thp-collapse-split": ([
        ["exec", 1, -1], ["mmap", 1, A, 4 * M, 1], ["fault", 1, A, 1], ["split", 1, A],
        ["madvise", 1, A, 2 * M, 3], ["fault", 1, A + 2 * M, 0], ["madvise", 1, A + 2 * M + 64 * K, 64 * K, 0],
        ["madvise", 1, A, 4 * M, 2], ["fault", 1, A + 3 * M, 1], ["madvise", 1, A, 4 * M, 1],
        ["madvise", 1, A, 4 * M, 3], ["split", 1, A + 3 * M], ["munmap", 1, A + 512 * K, 1 * M],
        ["rcu_gp"],
    ], {}, None, "THP at segment level: huge fault, split, collapse, DONTNEED inside a THP, NOHUGEPAGE, partial munmap"),
    "seeds/s390/mmap-over-part-of-thp": ([
        ["exec", 5, -1], ["mmap", 5, A, M, 1], ["fault", 5, A + 768 * K, 0], ["mmap", 5, A, 72 * K, 0],
        ["fault", 5, A + 4 * K, 1],
    ], {}, None, "MAP_FIXED over the first 72K of a THP splits it first; exit then unmaps VMA by VMA"),
    "seeds/s390/hugetlb": ([
        ["exec", 1, -1], ["mmap", 1, A, 2 * M, 2], ["fault", 1, A + 5 * K, 1], ["mmap", 1, 2 * G, 2 * G, 4],
        ["fault", 1, 2 * G + M, 0], ["mmap", 1, A + 4 * K, 1 * M, 2], ["munmap", 1, A + M, 4 * K],
        ["split", 1, A], ["munmap", 1, 2 * G, 2 * G],
    ], {}, None, "hugetlb at segment (1 MiB) and region-third (2 GiB) level; misaligned -22; no split"),
    "seeds/s390/walker-rcu": ([
        ["exec", 1, -1], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["walk_begin", 0, 1, A],
        ["walk_step", 0], ["walk_step", 0], ["munmap", 1, A, M], ["rcu_gp"], ["walk_step", 0], ["walk_step", 0],
        ["walk_step", 0], ["walk_end", 0], ["rcu_gp"], ["walk_step", 0], ["walk_begin", 0, 5, A],
    ], {}, None, "a lockless walker keeps freed tables alive until its section ends and a grace period passes"),
    "seeds/s390/rcu-explicit": ([
        ["exec", 1, -1], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["rcu_lock", 3], ["rcu_lock", 3],
        ["munmap", 1, A, M], ["rcu_gp"], ["rcu_unlock", 3], ["rcu_gp"], ["rcu_unlock", 3], ["rcu_gp"],
        ["rcu_unlock", 3],
    ], {}, None, "nested explicit read-side sections hold back callbacks; an unbalanced unlock is -22"),
    "seeds/s390/rmap": ([
        ["exec", 1, -1], ["mmap", 1, A, 2 * M, 1], ["fault", 1, A + 2 * M - 4 * K, 1], ["mmap", 1, A + 4 * M, M, 0],
        ["fault", 1, A + 4 * M, 1], ["rmap_begin", 1, 1, A + 4 * M], ["rmap_commit", 1],
        ["fault", 1, A + 4 * M, 1], ["rmap_begin", 2, 1, A + 4 * M], ["munmap", 1, A + 4 * M, M],
        ["rmap_commit", 2], ["rmap_begin", 2, 1, A], ["rmap_commit", 4],
    ], {}, None, "rmap unmaps a PTE; munmap of the walker's VMA waits for the anon_vma lock the walker holds "
                 "(-16); rmap_begin on a PMD-mapped THP is -2, rmap_commit on an idle cpu -22"),
    "seeds/s390/rmap-vs-collapse": ([
        ["exec", 1, -1], ["mmap", 1, A, M, 1], ["madvise", 1, A, M, 2], ["fault", 1, A, 1],
        ["madvise", 1, A, M, 1], ["rmap_begin", 0, 1, A], ["madvise", 1, A, M, 3], ["rmap_commit", 0], ["rcu_gp"],
    ], {}, None, "MADV_COLLAPSE under an rmap walker: the walker's folio is off the LRU, the block fails with -11 and "
                 "its PTE table stays"),
    "seeds/s390/gmap": ([
        ["exec", 1, 0], ["mmap", 1, A, 4 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, 2 * M],
        ["memslot", 0, 1, 2 * M, A + 2 * M, 2 * M], ["guest_fault", 0, 4 * K, 1], ["guest_fault", 0, M, 0],
        ["guest_fault_begin", 2, 0, 2 * M, 1], ["vm_destroy", 0], ["guest_fault_commit", 2],
        ["munmap", 1, A, M], ["guest_fault", 0, 0, 1], ["memslot", 0, 1, 0, 0, 0], ["memslot", 0, 2, M, A, M],
        ["memslot", 0, 3, 8 * M, A + 4 * K, M], ["guest_fault", 0, 64 * M, 0], ["vm_destroy", 0],
    ], {}, None, "gmap: memslots, guest faults linking host PTE tables, gmap_unlink on munmap, vm_destroy -16 in flight"),
    "seeds/s390/gmap-segments": ([
        ["exec", 1, 0], ["mmap", 1, A, 4 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, 2 * M],
        ["memslot", 0, 1, 2 * M, A, M], ["memslot", 0, 2, 8 * M + 4 * K, A + 2 * M, M], ["guest_fault", 0, 4 * K, 1],
        ["guest_fault", 0, 2 * M, 1], ["guest_fault", 0, 8 * M + 8 * K, 1], ["memslot", 0, 1, 0, 0, 0],
        ["guest_fault", 0, 0, 0], ["walk_begin", 0, 1, 1 << 42], ["exit", 1], ["exec", 1, 1], ["vm_create", 1, 1, 0],
    ], {}, None, "the v6.6 gmap: five levels; guest_to_host only for 1 MiB aligned slots (a misaligned gpa: the slot "
                 "is created, its faults -14); one guest segment per host segment (-17), and deleting the refused "
                 "slot unlinks the other's; GUP-fast at asce_limit -14; TIF_PGSTE goes with the task that exits"),
    "seeds/s390/vm-splits-thp": ([
        ["exec", 1, 0], ["mmap", 1, A, 2 * M, 1], ["fault", 1, A, 1], ["vm_create", 0, 1, 0],
        ["madvise", 1, A, 2 * M, 1], ["madvise", 1, A, 2 * M, 3], ["mmap", 1, A + 2 * M, M, 1],
        ["fault", 1, A + 2 * M, 1], ["memslot", 0, 0, 0, A, 2 * M], ["guest_fault", 0, 0, 1], ["vm_destroy", 0],
    ], {}, None, "s390_enable_sie splits THPs and marks the mm NOHUGEPAGE; HUGEPAGE is ignored, COLLAPSE -22"),
    "seeds/s390/exec-errors": ([
        ["exec", 1, -1], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["exec", 1, 2], ["fault", 1, A, 0],
        ["mmap", 1, A + 1, M, 0], ["mmap", 1, A, 0, 0], ["mmap", 1, A, M, 6], ["munmap", 3, A, M],
        ["walk_step", 7], ["walk_end", 7], ["rmap_commit", 7], ["guest_fault_commit", 7], ["vm_destroy", 3],
        ["memslot", 3, 0, 0, A, M], ["split", 1, A + 8 * M], ["exit", 4],
    ], {}, None, "a malformed ELF is -8 and leaves the old mm; every failed precondition is an errno, not a violation"),
    "seeds/s390/exit-in-flight": ([
        ["exec", 1, 0], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["walk_begin", 0, 1, A], ["walk_step", 0],
        ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, M], ["guest_fault_begin", 1, 0, 0, 1], ["exit", 1],
        ["walk_step", 0], ["guest_fault_commit", 1], ["walk_step", 0],
    ], {}, None, "exit while a walker and a guest fault are in flight: the pgd outlives them (mmdrop)"),
    "seeds/s390/convert-late-control": ([
        ["exec", 1, -1], ["mmap", 1, A, 2 * M, 0], ["fault", 1, A, 1], ["fault", 1, A + M, 1],
        ["rmap_begin", 0, 1, A], ["vm_create", 0, 1, 0], ["rmap_commit", 0], ["memslot", 0, 0, 0, A, 2 * M],
        ["guest_fault", 0, 0, 1],
    ], {"s390.pgste_decision": "convert-late"}, None, "safe control: convert-late alone (the pmd recheck catches the swap)"),
    "seeds/s390/full-page-control": ([
        ["exec", 1, -1], ["mmap", 1, A, 4 * M, 0], ["fault", 1, A, 1], ["fault", 1, A + M, 1],
        ["walk_begin", 0, 1, A + M], ["walk_step", 0], ["walk_step", 0], ["munmap", 1, A + M, M],
        ["walk_step", 0], ["walk_end", 0], ["rcu_gp"], ["exec", 2, 0], ["vm_create", 0, 2, 0],
    ], {"s390.pt_alloc": "full-page"}, None, "safe control: every PTE table a 4K page (v6.7+)"),
    "seeds/s390/sysctl-only-control": ([
        ["exec", 1, 0], ["vm_create", 0, 1, 0], ["sysctl_allocate_pgste", 1], ["exec", 2, 1],
        ["vm_create", 1, 2, 0],
    ], {"s390.pgste_decision": "sysctl-only"}, None, "safe control: only the sysctl counts, the ELF header is ignored"),
    "seeds/s390/zero-pages-and-pgste": ([
        ["exec", 1, 0], ["mmap", 1, A, 2 * M, 1], ["fault", 1, A, 0], ["fault", 1, A + M + 4 * K, 0],
        ["mmap", 1, A + 4 * M, M, 0], ["fault", 1, A + 4 * M, 0], ["fork", 1, 2], ["fault", 2, A + 4 * M, 1],
        ["vm_create", 0, 1, 0], ["fault", 1, A + 4 * M + 4 * K, 0], ["fault", 1, A + M, 1], ["exit", 2],
    ], {}, None, "the huge zero page (a 2K deposit), coloured zero pages, vm_create splits the huge zero PMD; with PGSTEs no zero page"),
    "seeds/s390/shmem": (shmem_seed(A, M), {}, None,
        "shared memory: faults (fault-around maps cached neighbours), write to read-only PTE (reuse) and PMD (zap, "
        "refault), fork re-faults, DONTNEED keeps the page, VMAs merge by file offset, MADV_COLLAPSE retracts "
        "every aligned mapping and maps the caller's PMD, a misaligned mapping maps the folio by PTEs"),
    "seeds/s390/rmap-locks": ([
        ["exec", 1, -1], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["rmap_begin", 0, 1, A], ["munmap", 1, A, 4 * K],
        ["mmap", 1, A, 4 * K, 0], ["fork", 1, 2], ["exit", 1], ["madvise", 1, A + 64 * K, 4 * K, 2],
        ["mmap", 1, A + M, M, 0], ["fault", 1, A + 4 * K, 1], ["madvise", 1, A, M, 3], ["fault", 1, A, 1],
        ["rmap_commit", 0], ["munmap", 1, A, 4 * K],
        ["shm_mmap", 1, A + 4 * M, M, 2, 0], ["fault", 1, A + 4 * M, 1], ["rmap_begin", 1, 1, A + 4 * M],
        ["exec", 3, -1], ["shm_mmap", 3, A, M, 2, 0], ["fault", 1, A + 4 * M, 1], ["fault", 1, A + 4 * M + 4 * K, 1],
        ["madvise", 1, A + 4 * M, M, 3], ["rmap_begin", 2, 1, A + 4 * M], ["exit", 1], ["rmap_commit", 1],
        ["shm_mmap", 3, A, M, 2, 0], ["exit", 1],
    ], {}, None, "what an rmap walker holds (anon_vma root or i_mmap_rwsem for read, the folio lock): munmap, "
                 "MAP_FIXED, fork, exit, a VMA split or merge and shm_mmap of the object wait (-16); collapse finds "
                 "its page off the LRU (-11); a second walker on the folio waits"),
    "seeds/s390/m1-defer-gmap-unlink-control": ([
        ["exec", 1, 0], ["vm_create", 0, 1, 0], ["shm_mmap", 1, A, M, 0, 0], ["memslot", 0, 0, 0, A, M],
        ["guest_fault", 0, 0, 1], ["exec", 2, -1], ["shm_mmap", 2, 2 * A, M, 0, 0], ["madvise", 2, 2 * A, M, 3],
        ["guest_fault", 0, 0, 1], ["rcu_gp"],
    ], {"s390.defer_gmap_unlink": "yes"}, None,
        "safe control for M1: pte_free_defer that also gmap_unlinks; the guest refaults onto the PMD leaf (-14)"),
    "seeds/s390/m1-incongruent-control": ([
        ["exec", 1, 0], ["vm_create", 0, 1, 0], ["shm_mmap", 1, A, M, 0, 1], ["memslot", 0, 0, 0, A, M],
        ["guest_fault", 0, 0, 1], ["exec", 2, -1], ["shm_mmap", 2, 2 * A, M, 0, 0], ["madvise", 2, 2 * A, M, 3],
        ["guest_fault", 0, 0, 1],
    ], {}, None, "control for M1: the VM's mapping is not congruent with the block (pgoff 1), so retract_page_tables "
                 "skips it; collapse_file only unmaps its PTEs and the gmap keeps the host's table"),
    "seeds/s390/pt-reclaim-gmap": ([
        ["exec", 1, 0], ["mmap", 1, A, 4 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, 4 * M],
        ["guest_fault", 0, 0, 1], ["guest_fault", 0, M, 1], ["madvise", 1, A, 2 * M, 0], ["guest_fault", 0, 0, 1],
        ["rcu_gp"],
    ], {"mm.pt_reclaim": "yes"}, None, "safe control: PT reclaim frees the emptied PTE tables of a pgste mm through the RCU path, which gmap_unlinks"),

    # ---- regressions: minimal counterexamples for docs/bench.md U1-U5 ----
    "regressions/s390/uaf-table-u1": ([
        ["exec", 1, -1], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["walk_begin", 0, 1, A], ["walk_step", 0],
        ["munmap", 1, A, M], ["walk_step", 0],
    ], {"mm.table_free": "immediate"}, "uaf-table",
        "U1: munmap frees the segment table at once; the walker that loaded its pointer reads freed memory"),
    "regressions/s390/pgste-table-missing-u2": ([
        ["exec", 1, 0],
    ], {"s390.pgste_decision": "elf-no-restart"}, "pgste-table-missing",
        "U2: the stack page tables exist before binfmt_elf sees PT_S390_PGSTE; flagging the built mm leaves a 2K table"),
    "regressions/s390/pgste-table-missing-u3": ([
        ["sysctl_allocate_pgste", 1], ["exec", 1, -1],
    ], {"s390.pt_alloc": "fragments-always"}, "pgste-table-missing",
        "U3: a pgste mm handed a 2K fragment has no room for PGSTEs"),
    "regressions/s390/gmap-dangling-u4": ([
        ["exec", 1, 0], ["mmap", 1, A, M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, M],
        ["guest_fault", 0, 0, 1], ["madvise", 1, A, M, 1], ["madvise", 1, A, M, 3],
    ], {"s390.thp_in_pgste_mm": "allow"}, "gmap-dangling",
        "U4: collapse frees the PTE table through pte_free_defer, which does not gmap_unlink"),
    "regressions/s390/lost-update-u5": ([
        ["exec", 1, -1], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["rmap_begin", 0, 1, A],
        ["vm_create", 0, 1, 0], ["rmap_commit", 0],
    ], {"s390.pgste_decision": "convert-late", "mm.pmd_recheck": "no"}, "lost-update",
        "U5: vm_create swaps the 2K table for a pgste table under an rmap walker that does not recheck the pmd"),
    "regressions/s390/gmap-dangling-m1": ([
        ["exec", 1, 0], ["vm_create", 0, 1, 0], ["shm_mmap", 1, A, M, 0, 0], ["memslot", 0, 0, 0, A, M],
        ["guest_fault", 0, 0, 1], ["exec", 2, -1], ["shm_mmap", 2, 2 * A, M, 0, 0], ["madvise", 2, 2 * A, M, 3],
    ], {}, "gmap-dangling",
        "M1, v6.6 mainline: Q's MADV_COLLAPSE of shmem object 0 runs collapse_file -> retract_page_tables, which "
        "visits every VMA mapping the block (vma_interval_tree_foreach), VM process P's included, and checks only "
        "anon_vma, alignment, the pmd and mm_users (no VM_NOHUGEPAGE, hugepage_vma_check or mm_has_pgste): "
        "pmdp_collapse_flush (s390: gmap_pmdp_idte_global only with allow_gmap_hpage_1m) then pte_free_defer, "
        "whose comment and WARN_ON_ONCE(mm_has_pgste(mm)) say it does not gmap_unlink as page_table_free_rcu, "
        "gmap_unlink's only caller, does: P's gmap segment entry points at the freed PTE table",
        {"defaults_violate": True, "fixed_by": {"s390.defer_gmap_unlink": "yes"}}),
    "regressions/s390/gmap-dangling-{hash}": ([
        ["exec", 1, 0], ["mmap", 1, A, M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, M],
        ["guest_fault", 0, 0, 1], ["madvise", 1, A, M, 1], ["madvise", 1, A, M, 3],
    ], {"s390.defer_gmap_unlink": "yes", "s390.thp_in_pgste_mm": "allow"}, "gmap-dangling",
        "docs/bench.md's control defer_gmap_unlink=yes with thp_in_pgste_mm=allow is unsafe in v2: an anonymous collapse "
        "deposits the old PTE table (collapse_huge_page), no pte_free_defer, so nothing unlinks the gmap"),
    "regressions/s390/fragment-corrupt-z4": ([
        ["exec", 0, -1], ["mmap", 0, A + M, M, 1], ["fault", 0, A + M, 1], ["munmap", 0, (1 << 42) - M, M],
        ["frag_hold", 1], ["munmap", 0, A + M, M], ["rcu_gp"],
    ], {"s390.frag_release": "pre-c2c224932fd0"}, "fragment-corrupt",
        "Z4 (c2c224932fd0, v5.17): the THP's deposit takes the free upper half of the page whose lower half is the "
        "stack's PTE table; munmap of the stack's segment frees that with page_table_free_rcu (pending); the THP's "
        "munmap frees the deposit with page_table_free, held after its atomic_xor_bits (frag_hold), which pre-fix "
        "cleared only the allocated bit; the grace period's __tlb_remove_table finds the byte zero and frees the page "
        "while it is still on mm->context.pgtable_list, before the held list_del. Fixed (0x11), the half stays "
        "pending and frag_end frees the page after its list work"),
}


T = 1 << 40  # arm64/x86_64 mappings start at 1 TiB: inside every supported VA size but 36 bits
H = 0x800000000  # 32 GiB: below 2^36 for the 16K/36 configuration


# U14/U15: a guest fault commits between munmap's invalidate_range_start and _end (inval_hold; a 64K slot: no THP walk)
WINDOW_RACE = [
    ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 64 * K],
    ["guest_fault_begin", 0, 0, 0, 1], ["inval_hold", 1], ["munmap", 1, T, 2 * M], ["guest_fault_commit", 0],
    ["inval_end", 1],
]


def kvm_seeds(arch: str, base: int) -> dict:
    """Paths shared by arm64 and x86_64: mm, THP, walkers, rmap, and the KVM fault protocol."""
    p = f"seeds/{arch}/"
    return {
        p + "mm-thp-walkers": ([
            ["exec", 1, -1], ["mmap", 1, base, 8 * M, 1], ["fault", 1, base, 1], ["split", 1, base],
            ["madvise", 1, base, 2 * M, 3], ["fault", 1, base + 2 * M + 4 * K, 0], ["madvise", 1, base, 8 * M, 2],
            ["fault", 1, base + 4 * M, 1], ["madvise", 1, base, 8 * M, 1], ["walk_begin", 0, 1, base + 4 * M],
            ["walk_step", 0], ["walk_step", 0], ["walk_step", 0], ["madvise", 1, base + 4 * M, 2 * M, 3],
            ["walk_step", 0], ["rmap_begin", 1, 1, base + 2 * M + 4 * K], ["munmap", 1, base + 3 * M, M],
            ["rmap_commit", 1], ["rcu_gp"], ["walk_end", 0], ["rcu_gp"], ["fork", 1, 2], ["fault", 2, base, 1],
            ["exit", 2], ["madvise", 1, base, 8 * M, 0], ["sysctl_allocate_pgste", 1],
        ], {}, None, "THP fault, split, collapse, NOHUGEPAGE, walkers and rmap against collapse and munmap; no PGSTEs here (-38)"),
        p + "kvm-fault-protocol": ([
            ["exec", 1, -1], ["mmap", 1, base, 8 * M, 1], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, base, 4 * M],
            ["memslot", 0, 1, 64 * M + 4 * K, base + 4 * M, 4 * M], ["fault", 1, base, 1], ["guest_fault", 0, 0, 1],
            ["guest_fault", 0, 64 * M + 8 * K, 1], ["guest_fault_begin", 2, 0, 2 * M, 1], ["munmap", 1, base + 2 * M, 2 * M],
            ["guest_fault_commit", 2], ["guest_fault_begin", 3, 0, 4 * K, 0], ["split", 1, base], ["guest_fault_commit", 3],
            ["guest_fault", 0, 4 * K, 1], ["madvise", 1, base, 2 * M, 0], ["memslot", 0, 1, 0, 0, 0],
            ["guest_fault_begin", 4, 0, 8 * K, 1], ["memslot", 0, 2, 128 * M, base, 2 * M], ["vm_destroy", 0],
            ["guest_fault_commit", 4], ["vm_destroy", 0],
        ], {}, None, "memslots, THP-backed blocks, incongruent slot demoted to 4K, invalidations forcing -11 retries, vm_destroy -16"),
        p + "kvm-exit-in-flight": ([
            ["exec", 1, -1], ["mmap", 1, base, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, base, 2 * M],
            ["guest_fault", 0, 0, 1], ["guest_fault_begin", 0, 0, 4 * K, 1], ["exit", 1], ["guest_fault_commit", 0],
            ["guest_fault", 0, 8 * K, 1], ["vm_destroy", 0],
        ], {}, None, "exit while a guest fault is in flight: the fault holds mm_users, exit_mmap and release run after it"),
        p + "zero-page-cow-fork": ([
            ["exec", 1, -1], ["mmap", 1, base, 4 * M, 1], ["fault", 1, base, 0], ["fault", 1, base + 2 * M, 1],
            ["mmap", 1, base + 4 * M, 2 * M, 0], ["fault", 1, base + 4 * M, 0], ["fault", 1, base + 4 * M + 4 * K, 1],
            ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, base, 8 * M], ["guest_fault", 0, 4 * M + 8 * K, 0],
            ["fork", 1, 2], ["fault", 2, base + 2 * M, 1], ["fault", 1, base + 4 * K, 1], ["fault", 1, base + 4 * M + 8 * K, 1],
            ["exit", 2], ["fault", 1, base + 4 * M + 4 * K, 1], ["guest_fault", 0, 4 * M + 8 * K, 1],
            ["madvise", 1, base, 4 * M, 3], ["madvise", 1, base + 4 * M, 2 * M, 3], ["munmap", 1, base, 8 * M],
        ], {}, None, "zero pages and the huge zero page, COW after fork (split, copy, reuse once the child is gone), "
                     "the VM sees every COW; collapse after it"),
        p + "kvm-invalidation-window": ([
            ["exec", 1, -1], ["mmap", 1, base, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, base, 64 * K],
            ["guest_fault_begin", 0, 0, 0, 1], ["guest_fault_begin", 2, 0, 32 * K, 1], ["inval_hold", 1],
            ["munmap", 1, base, 4 * K], ["guest_fault_commit", 0], ["guest_fault_commit", 2],
            ["memslot", 0, 1, 4 * M, base, 64 * K], ["exit", 1], ["inval_end", 1], ["guest_fault", 0, 32 * K, 1],
            ["memslot", 0, 1, 4 * M, base, 64 * K], ["inval_hold", 3], ["madvise", 1, base + 4 * K, 60 * K, 0],
        ], {}, None, "the invalidation window (inval_hold): a commit inside it retries (-11; on x86 only for an hva "
                     "in the open range: the fault at 32K commits), a memslot update and exit_mmap wait (-16); "
                     "the window still open at the end of the trace is ended"),
        p + "shmem": (shmem_seed(base, 2 * M), {}, None,
            "shared memory as on s390, with 2M blocks"),
        p + "shmem-guest": ([
            ["exec", 1, -1], ["shm_mmap", 1, base, 4 * M, 0, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, base, 4 * M],
            ["guest_fault", 0, 4 * K, 1], ["guest_fault", 0, 2 * M + 4 * K, 0], ["exec", 2, -1],
            ["shm_mmap", 2, base, 4 * M, 0, 0], ["fault", 2, base + 8 * K, 1], ["madvise", 2, base, 4 * M, 3],
            ["guest_fault", 0, 4 * K, 1], ["madvise", 1, base, 2 * M, 0], ["guest_fault", 0, 8 * K, 0],
            ["exit", 2], ["vm_destroy", 0],
        ], {}, None, "a VM over shared memory another process collapses: try_to_unmap and retract_page_tables "
                     "notify the VM, whose next fault maps the PMD-size folio as a block"),
        p + "vma-merge-madvise-walk": ([
            ["exec", 1, -1], ["mmap", 1, base, M, 1], ["mmap", 1, base + M, M, 1], ["fault", 1, base, 1],
            ["mmap", 1, base + 4 * M, M, 0], ["mmap", 1, base + 5 * M, M, 1], ["fault", 1, base + 5 * M, 1],
            ["madvise", 1, base + 4 * M, M, 1], ["madvise", 1, base, 8 * M, 3], ["madvise", 1, base + 16 * M, 0, 0],
            ["madvise", 1, base + 8 * M, 4 * K, 0], ["madvise", 1, base, 8 * M, 2], ["madvise", 1, base + 4 * K, 4 * K, 2],
            ["mmap", 1, base + 2 * M, 4 * M, 2], ["madvise", 1, base + 2 * M + 4 * K, 2 * M, 0], ["madvise", 1, base, 8 * M, 0],
        ], {}, None, "vma_merge of equal-flag neighbours, madvise_walk_vmas over holes (-12), hugetlb DONTNEED "
                     "(misaligned start -22, end rounded down), a no-op NOHUGEPAGE splits nothing"),
    }


ARM64 = {
    **kvm_seeds("arm64", T),
    "seeds/arm64/hugetlb-stage2-blocks": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * G, 4], ["mmap", 1, T + 2 * G, 4 * M, 2], ["vm_create", 0, 1, 40],
        ["memslot", 0, 0, G, T, 2 * G], ["memslot", 0, 1, 4 * G, T + 2 * G, 4 * M], ["guest_fault", 0, G + 5 * M, 1],
        ["guest_fault", 0, 4 * G + 3 * M, 0], ["vm_create", 1, 1, 32], ["memslot", 1, 0, 0, T, G],
        ["guest_fault", 1, 4 * K, 1], ["vm_create", 2, 1, 49], ["mmap", 1, T + 3 * G, 2 * M, 4],
        ["munmap", 1, T, G], ["guest_fault", 0, G + 5 * M, 1],
    ], {}, None, "hugetlb PUD and PMD: a 1G block at ipa 40 (start level 1); at ipa 32 (start level 2) "
                 "kvm_pgtable_stage2_map maps the 1G candidate as 512 level-2 blocks; ipa 49 -22 (a 48-bit PARange)"),
    "seeds/arm64/dontneed-inside-hugetlb": ([
        ["exec", 3, -1], ["mmap", 3, 5 * G, G, 4], ["vm_create", 1, 3, 32], ["memslot", 1, 0, 0, 5 * G, 64 * K],
        ["guest_fault", 1, 0, 0], ["madvise", 3, 5 * G + 342 * M, 2 * M, 0], ["madvise", 3, 5 * G, G, 0],
    ], {}, None, "found by ptfuzz fuzz: DONTNEED of 2M inside a 1G hugetlb page is -22, not a zap of the whole page"),
    "seeds/arm64/folded-4k-39": ([
        ["exec", 1, -1], ["mmap", 1, 1 << 37, 2 * G, 4], ["fault", 1, (1 << 37) + 8 * K, 1], ["mmap", 1, G, 4 * M, 1],
        ["fault", 1, G, 1], ["fault", 1, G + 2 * M + 4 * K, 1], ["walk_begin", 0, 1, G + 2 * M], ["walk_step", 0],
        ["walk_step", 0], ["walk_step", 0], ["walk_end", 0], ["munmap", 1, G, 4 * M], ["mmap", 1, 1 << 39, 4 * K, 0],
    ], {}, None, "3 levels with p4d and pud folded into the pgd: 1G hugetlb at the pgd, THP at the pmd; past TASK_SIZE -12"),
    "seeds/arm64/folded-16k-36": ([
        ["exec", 1, -1], ["mmap", 1, H, 64 * M, 1], ["fault", 1, H, 1], ["fault", 1, H + 32 * M + 16 * K, 1],
        ["split", 1, H], ["madvise", 1, H, 64 * M, 3], ["mmap", 1, H + 4 * K, 16 * K, 0], ["mmap", 1, H, 32 * M, 4],
        ["vm_create", 0, 1, 36], ["memslot", 0, 0, 0, H + 32 * M, 32 * M], ["guest_fault", 0, 16 * K, 1],
    ], {}, None, "2 levels at 16K/36: pud and pmd fold into the pgd, 32M THP leaves live in the pgd; no PUD hugetlb (-22)"),
    "seeds/arm64/folded-64k-42": ([
        ["exec", 1, -1], ["mmap", 1, T, G, 1], ["fault", 1, T, 1], ["fault", 1, T + 512 * M + 64 * K, 0],
        ["walk_begin", 0, 1, T + 512 * M], ["walk_step", 0], ["walk_step", 0], ["munmap", 1, T + 512 * M, 512 * M],
        ["walk_step", 0], ["walk_end", 0], ["vm_create", 0, 1, 44], ["memslot", 0, 0, 0, T, 512 * M],
        ["guest_fault", 0, 64 * K, 1],
    ], {}, None, "2 levels at 64K/42: 512M THP in the pgd, a 512M stage-2 block at ipa 44"),
    "seeds/arm64/stage2-block-has-pmd-control": ([
        ["exec", 1, -1], ["mmap", 1, T, G, 4], ["vm_create", 0, 1, 32], ["memslot", 0, 0, 0, T, G], ["guest_fault", 0, 0, 1],
    ], {"arm64.stage2_block_check": "has-pmd"}, None, "safe control: has-pmd never maps a PUD block on 2 levels"),
    "seeds/arm64/stage2-block-has-pud-control": ([
        ["exec", 1, -1], ["mmap", 1, T, G, 4], ["vm_create", 0, 1, 32], ["memslot", 0, 0, 0, T, G], ["guest_fault", 0, 0, 1],
        ["vm_create", 1, 1, 40], ["memslot", 1, 0, 0, T, G], ["guest_fault", 1, 0, 1],
    ], {"arm64.stage2_block_check": "has-pud"}, None, "safe control: has-pud only maps PUD blocks on 4 levels"),
    "seeds/arm64/stage2-block-can-map-block-size-control": ([
        ["exec", 1, -1], ["mmap", 1, T, G, 4], ["vm_create", 0, 1, 32], ["memslot", 0, 0, 0, T, G], ["guest_fault", 0, 0, 1],
        ["vm_create", 1, 1, 40], ["memslot", 1, 0, 0, T, G], ["guest_fault", 1, 0, 1],
    ], {"arm64.stage2_block_check": "can-map-block-size"}, None,
        "safe control: the helper proposed in review maps a PUD block only where one start-level entry covers it "
        "(one 2M block at ipa 32, a 1G block at ipa 40)"),
    "seeds/arm64/release-check-root-control": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
        ["guest_fault_begin", 0, 0, 0, 1], ["exit", 1], ["guest_fault_commit", 0],
    ], {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"}, None,
        "safe control: a commit that finds its VM released retries (-11) instead of using the freed stage 2"),
    "seeds/arm64/lpa-64k-52": ([
        ["exec", 1, -1], ["mmap", 1, 1 << 50, 1024 * M, 1], ["fault", 1, 1 << 50, 1], ["vm_create", 0, 1, 52],
        ["memslot", 0, 0, (1 << 52) - 1024 * M, 1 << 50, 1024 * M], ["guest_fault", 0, (1 << 52) - 1024 * M, 1],
        ["guest_fault", 0, (1 << 52) - 512 * M + 64 * K, 0], ["mmap", 1, 1 << 52, 64 * K, 0],
        ["munmap", 1, 1 << 50, 1024 * M], ["vm_destroy", 0],
    ], {}, None, "64K pages on a FEAT_LPA/LVA host (pa_bits 52, va_bits 52): a mapping above 2^48, a 52-bit IPA "
                 "(3 levels, a 1024-entry level-1 table) with 512M blocks; mmap at 2^52 -12"),
    "seeds/arm64/pmd-recheck-no-control": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 1], ["madvise", 1, T, 2 * M, 2], ["fault", 1, T, 1],
        ["madvise", 1, T, 2 * M, 1], ["rmap_begin", 0, 1, T], ["madvise", 1, T, 2 * M, 3], ["rmap_commit", 0],
    ], {"mm.pmd_recheck": "no"}, None,
        "docs/bench.md's U6 (mm.pmd_recheck=no alone) is safe in v6.6: the walker's folio is off the LRU and locked, so "
        "MADV_COLLAPSE fails that block (-11) and never swaps the table (collapse_huge_page would also wait for "
        "the anon_vma lock the walker holds)"),
    "regressions/arm64/lost-update-u6": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["fault", 1, T, 1], ["rmap_begin", 0, 1, T],
        ["madvise", 1, T, 2 * M, 0], ["rmap_commit", 0],
    ], {"mm.pmd_recheck": "no", "mm.pt_reclaim": "yes"}, "lost-update",
        "U6, redefined: with the rmap and folio locks of v6.6 nothing frees a PTE table under an rmap walker but PT "
        "reclaim (6.14+), which zaps and frees the emptied table under the PMD lock and PTL only; without the pmd "
        "recheck (v6.13's pte_offset_map_rw_nolock) the walker writes the freed table. pmd_recheck=no alone is "
        "seeds/arm64/pmd-recheck-no-control"),
    "regressions/arm64/stage2-block-illegal-u7": ([
        ["exec", 1, -1], ["mmap", 1, T, G, 4], ["vm_create", 0, 1, 32], ["memslot", 0, 0, 0, T, G], ["guest_fault", 0, 0, 1],
    ], {"arm64.stage2_block_check": "none"}, "stage2-block-illegal",
        "U7: ipa 32 gives 2 levels starting at level 2; a 1G hugetlb page is mapped as a level-1 block that cannot exist"),
    "regressions/arm64/stage2-oversize-u8": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["fault", 1, T, 1], ["madvise", 1, T, 2 * M, 1],
        ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M], ["guest_fault", 0, 0, 1],
    ], {"arm64.thp_size": "vma-naive"}, "stage2-oversize",
        "U8: the VMA is THP-eligible but the host maps 4K pages; trusting the VMA maps a 2M block over them"),
    "regressions/arm64/stage2-stale-u9": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 64 * K],
        ["guest_fault_begin", 0, 0, 0, 1], ["munmap", 1, T, 2 * M], ["guest_fault_commit", 0],
    ], {"kvm.invalidate_retry": "none"}, "stage2-stale",
        "U9: munmap invalidates between the host fault and the install; without the sequence check a freed page is mapped (a 64K slot: no THP walk)"),
    "regressions/arm64/stage2-after-release-u10": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
        ["guest_fault_begin", 0, 0, 0, 1], ["exit", 1], ["guest_fault_commit", 0],
    ], {"kvm.fault_holds_mm": "no"}, "stage2-after-release",
        "U10: exit_mmap runs under an in-flight fault that holds no mm_users; release frees the stage-2 it installs into"),
    "regressions/arm64/stage2-stale-u14": (WINDOW_RACE, {"kvm.invalidate_retry": "seq-only"}, "stage2-stale",
        "U14: munmap runs invalidate_range_start (zap, in_progress++) and frees the page, and is stopped before _end "
        "(inval_hold); the fault that faulted the page in before it commits inside the window: the sequence has not "
        "moved, so a commit that checks only mmu_invalidate_seq installs the freed page. v6.6 user_mem_abort's "
        "mmu_invalidate_retry also checks in_progress (-11); the same race without the window is caught by the "
        "sequence alone"),
    # issue 19's KVM zoo rows (Z6-Z9)
    "regressions/arm64/kernel-bug-z6": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
        ["guest_fault_begin", 0, 0, 0, 0], ["munmap", 1, T, 2 * M], ["guest_fault_commit", 0],
    ], {"kvm.user_pt_walk": "unprotected", "kvm.invalidate_retry": "none"}, "kernel-bug",
        "Z6 (e86fc1a3a3e9, v6.3), with the retry check removed (kvm.invalidate_retry=none): a 4K fault in a slot "
        "that allows a PMD block commits after munmap; get_user_mapping_size finds no valid host leaf and the "
        "pre-fix VM_BUG_ON(!(pte & PTE_VALID)) fires. Fixed (irqs-off), the fault is replayed (-11). With v6.6's "
        "retry check the commit retries first and the knob alone changes nothing"),
    "regressions/arm64/stage2-oversize-z7": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 2], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
        ["guest_fault_begin", 0, 0, 0, 0], ["mmap", 1, T, 2 * M, 0], ["guest_fault_commit", 0],
    ], {"kvm.fault_seq_snapshot": "after-unlock"}, "stage2-oversize",
        "Z7 (13ec9308a857, v6.3): user_mem_abort sizes the fault from the hugetlb VMA (2M) and drops mmap_lock; a "
        "MAP_FIXED mmap replaces the VMA with a 4K one (its invalidation bumps mmu_invalidate_seq); the pre-fix fault "
        "reads the sequence only now, faults in a 4K page, passes mmu_invalidate_retry and maps a 2M block over "
        "it. Fixed (before-unlock), the snapshot predates the change and the commit retries (-11)"),
    "regressions/arm64/uaf-table-z9": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * G, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * G],
        ["inval_hold", 0], ["madvise", 1, T, 2 * G, 0], ["vm_destroy", 0],
    ], {"kvm.s2_unmap_yield_recheck": "no"}, "uaf-table",
        "Z9 (0c428a6a9256, v4.12): MADV_DONTNEED of 2 GiB invalidates the memslot; the stage-2 unmap does the first "
        "1 GiB chunk and yields mmu_lock (cond_resched), where the window stops it; closing the VM fd frees the stage 2 "
        "(mmu_notifier_unregister -> release -> kvm_free_stage2_pgd); the window ends at teardown and the pre-fix "
        "unmap goes on from the pgd pointer it took before the yield: a freed table. Fixed (yes), stage2_apply_range "
        "rereads mmu->pgt, finds it NULL and stops"),
}
X86_ZOO = {
    "regressions/x86_64/stage2-mmio-over-leaf-z8": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
        ["guest_fault", 0, 0, 0], ["inval_hold", 0], ["memslot", 0, 0, 0, 0, 0], ["guest_fault", 0, 0, 0],
    ], {"kvm.invalid_slot_fault": "mmio"}, "stage2-mmio-over-leaf",
        "Z8 (e0c378684b65, v5.12): a read fault maps gpa 0; KVM_SET_USER_MEMORY_REGION deletes the memslot and is "
        "stopped in its INVALID phase (kvm_invalidate_memslot swapped the KVM_MEMSLOT_INVALID copy in, "
        "kvm_arch_flush_shadow_memslot not yet run); a fault on gpa 0 reads the invalid slot as none "
        "(KVM_PFN_NOSLOT) and writes an MMIO SPTE over the present SPTE. Fixed (retry), __kvm_faultin_pfn returns "
        "RET_PF_RETRY (-11)"),
}

X86 = {
    **kvm_seeds("x86_64", T),
    "seeds/x86_64/la57-and-1g": ([
        ["exec", 1, -1], ["mmap", 1, 1 << 46, 2 * G, 4], ["fault", 1, (1 << 46) + G + 4 * K, 1], ["vm_create", 0, 1, 0],
        ["memslot", 0, 0, 4 * G, 1 << 46, 2 * G], ["guest_fault", 0, 5 * G + 8 * K, 1], ["mmap", 1, T, 4 * M, 2],
        ["memslot", 0, 1, 8 * G + 4 * K, T, 4 * M], ["guest_fault", 0, 8 * G + 4 * K + 2 * M, 1],
    ], {}, None, "a 1G TDP leaf over 1G hugetlb; a 2M hugetlb page in an incongruent slot is demoted to 4K"),
    "seeds/x86_64/pt-reclaim-control": ([
        ["exec", 1, -1], ["mmap", 1, T, 8 * M, 0], ["fault", 1, T, 1], ["fault", 1, T + 2 * M, 1],
        ["fault", 1, T + 6 * M - 4 * K, 1], ["walk_begin", 0, 1, T + 2 * M], ["walk_step", 0], ["walk_step", 0],
        ["walk_step", 0], ["rmap_begin", 1, 1, T + 6 * M - 4 * K], ["vm_create", 0, 1, 0],
        ["memslot", 0, 0, 0, T, 8 * M], ["guest_fault", 0, 2 * M, 1], ["madvise", 1, T + M, 6 * M, 0],
        ["walk_step", 0], ["rmap_commit", 1], ["walk_end", 0], ["rcu_gp"], ["guest_fault", 0, 2 * M, 1],
    ], {"mm.pt_reclaim": "yes"}, None,
        "safe control: PT reclaim (6.14+) frees the PTE tables DONTNEED empties through RCU, under a walker, an rmap "
        "walker (pmd recheck -11) and a VM"),
    "seeds/x86_64/block-over-4k-table": ([
        ["exec", 1, -1], ["vm_create", 0, 1, 0], ["mmap", 1, 6 * G, 2 * M, 0], ["memslot", 0, 0, G, 6 * G, 2 * M],
        ["guest_fault", 0, G + 4 * K, 0], ["madvise", 1, 6 * G, 2 * M, 1], ["madvise", 1, 6 * G, 2 * M, 3],
        ["guest_fault", 0, G, 0],
    ], {}, None, "found by ptfuzz fuzz: a THP-backed fault where a 4K stage-2 table still hangs (the TDP zap keeps "
                 "tables): the 2M leaf replaces the table, which goes through RCU (tdp_mmu_map_handle_target_level)"),
    "seeds/x86_64/release-check-root-control": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
        ["guest_fault_begin", 0, 0, 0, 1], ["exit", 1], ["guest_fault_commit", 0],
    ], {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"}, None,
        "safe control: a commit that finds its VM released retries (-11); v6.6 has no such check (U13)"),
    "regressions/x86_64/stage2-stale-u11": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 64 * K],
        ["guest_fault_begin", 0, 0, 0, 1], ["munmap", 1, T, 2 * M], ["guest_fault_commit", 0],
    ], {"kvm.invalidate_retry": "none"}, "stage2-stale", "U11: as U9, on the TDP MMU"),
    "regressions/x86_64/stage2-stale-u15": (WINDOW_RACE, {"kvm.invalidate_retry": "seq-only"}, "stage2-stale",
        "U15: U14 on the TDP MMU; v6.6 is_page_fault_stale -> mmu_invalidate_retry_hva retries (-11) because the "
        "fault's hva lies in the open invalidation's range (seeds/x86_64/kvm-invalidation-window: outside it, it "
        "commits)"),
    "regressions/x86_64/stage2-stale-u13": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
        ["guest_fault_begin", 0, 0, 0, 1], ["exit", 1], ["guest_fault_commit", 0],
    ], {"kvm.fault_holds_mm": "no"}, "stage2-stale",
        "U13: exit_mmap runs under an in-flight fault that holds no mm_users; release (kvm_mmu_zap_all) zaps every SPTE "
        "but keeps the root valid and leaves mmu_invalidate_seq alone, so is_page_fault_stale does not fire; "
        "host_pfn_mapping_level sees the emptied host tables and says 4K; the commit installs the page unmap_vmas freed"),
    "regressions/x86_64/uaf-table-u12": ([
        ["exec", 1, -1], ["mmap", 1, T, M, 0], ["fault", 1, T, 1], ["walk_begin", 0, 1, T], ["walk_step", 0],
        ["walk_step", 0], ["munmap", 1, T, M], ["walk_step", 0],
    ], {"mm.table_free": "immediate"}, "uaf-table", "U12: munmap frees the pmd table at once under a GUP-fast walker"),
    "regressions/x86_64/gup-stale-pin-z5": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["fault", 1, T, 0], ["walk_begin", 0, 1, T], ["walk_pin", 0],
        ["fault", 1, T, 1], ["collapse_hold", 1], ["madvise", 1, T, 2 * M, 3], ["walk_pin", 0],
    ], {"mm.collapse_gup_sync": "none", "gup.fast_pmd_recheck": "no"}, "gup-stale-pin",
        "Z5 (70cbc3cc78a9, v6.0): the GUP-fast walker goes down to the PTE table (its first grab finds the zero page "
        "and takes nothing); a write fault maps a page; MADV_COLLAPSE clears the pmd and isolates "
        "the page without waiting for it (mm.collapse_gup_sync=none, before v6.1) and is held before its copy; the "
        "walker grabs the page and rechecks only the pte, still there; at the end the held collapse copies the page "
        "away from under the pin (gup-stale-pin, at teardown). Fixed (yes), the grab sees the cleared pmd and fails "
        "(-11); with the IPI (ipi) the collapse waits for the walker (-16)"),
    "regressions/x86_64/uaf-table-z1": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["fault", 1, T, 0], ["walk_begin", 0, 1, T], ["walk_pin", 0],
        ["fault", 1, T, 1], ["madvise", 1, T, 2 * M, 3], ["exec", 1, -1], ["walk_step", 0],
    ], {"mm.collapse_gup_sync": "none"}, "uaf-table",
        "Z1 (2ba99c5e0881, v6.1): the GUP-fast walker reaches the PTE table (walk_pin's steps; its grab of the zero "
        "page fails, -14, and it stays there); collapse_huge_page clears the pmd and deposits that table without "
        "tlb_remove_table_sync_one's IPI; exec's exit_mmap frees the deposit at once (zap_deposited_table: pte_free) "
        "and the walker reads it. Fixed (ipi), the collapse waits for the IRQs-off walker (-16)"),
    "regressions/x86_64/uaf-table-z2": ([
        ["exec", 1, -1], ["shm_mmap", 1, T, 2 * M, 0, 0], ["shm_mmap", 1, T + 8 * M, 2 * M, 0, 0], ["fault", 1, T + 8 * M, 0],
        ["madvise", 1, T, 2 * M, 3], ["unmap_mapping_begin", 0, 1, T + 8 * M], ["madvise", 1, T + 8 * M, 2 * M, 3],
        ["rmap_commit", 0],
    ], {"mm.file_retract": "caller", "mm.retract_locks": "pre-8d3c106e19e8"}, "uaf-table",
        "Z2 (8d3c106e19e8, v6.1): 6.1's MADV_COLLAPSE retracts only the caller's mapping, so the second mapping of the "
        "object keeps its (emptied) PTE table; a hole punch's zap "
        "(unmap_mapping_range: i_mmap_rwsem for read, no folio lock) reads that pmd; collapse_pte_mapped_thp without "
        "i_mmap_rwsem for write frees the table at once; the zap takes the freed table's lock. Fixed (full), the "
        "collapse waits for the zap's i_mmap_rwsem (-16)"),
    "regressions/x86_64/stale-tlb-z11": ([
        ["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["fault", 1, T, 1], ["rmap_begin", 0, 1, T], ["mremap_hold", 1],
        ["mremap", 1, T, 2 * M, T + 2 * M, 2 * M], ["tlb_access", 2, 1, T + 2 * M, 0], ["rmap_commit", 0],
    ], {"mremap.move_pgt_rmap": "read"}, "stale-tlb",
        "Z11 (97113eb39fa7, v5.14): an rmap walker (try_to_unmap) holds the anon_vma for read and the PTE table at T "
        "(its lock, after its pmd recheck); mremap moves the block's whole PTE table to T + 2M (move_normal_pmd, "
        "under the pmd locks only) without the rmap locks, as copy_vma made a new VMA (need_rmap_locks false), and "
        "flushes the old range; a thread on cpu 2 reads T + 2M through the moved table and caches the translation; "
        "the walker clears the pte and flushes T only (ptep_clear_flush), and the page is freed: cpu 2 still "
        "translates to it (stale-tlb). Fixed (write), the table move takes the anon_vma for write and waits for the "
        "walker (-16). The move is held before its old range's unmap (mremap_hold), which would wait for the walker too"),
    **X86_ZOO,  # issue 19's KVM zoo rows
}

CONFIGS = {"seeds/arm64/lpa-64k-52": {"granule": 65536, "va_bits": 52, "pa_bits": 52},
           "seeds/arm64/folded-4k-39": {"va_bits": 39}, "seeds/arm64/folded-16k-36": {"granule": 16384, "va_bits": 36},
           "seeds/arm64/folded-64k-42": {"granule": 65536, "va_bits": 42}, "seeds/x86_64/la57-and-1g": {"la57": True}}


def build() -> list[Path]:
    written = []
    for arch, table in (("s390", S390), ("arm64", ARM64), ("x86_64", X86)):
        written += [write(arch, name, *entry) for name, entry in table.items()]
    return written


def write(arch, name, ops, knobs, kind, note, extra_meta=None) -> Path:
    if True:
        expect = {"verdict": "violation", "kind": kind} if kind else {"verdict": "clean"}
        uses_elf = any(op[0] == "exec" and op[2] >= 0 for op in ops)
        meta = {"found_by": "hand-written", "note": note, **(extra_meta or {})}
        t = Trace(arch, ops_from_list(ops), config=CONFIGS.get(name, {}), knobs=knobs,
                  elfs=ELFS if uses_elf else [], expect=expect, meta=meta)
        if name.endswith("{hash}"):  # a finding's name, as ptfuzz fuzz gives it
            digest = hashlib.sha256(tracemod.dumps(replace(t, meta=None))).hexdigest()[:8]
            name = name.replace("{hash}", digest)
        path = HERE / f"{name}.msgpack"
        tracemod.save(t, path)
        return path


if __name__ == "__main__":
    for p in build():
        print(p.relative_to(HERE))
