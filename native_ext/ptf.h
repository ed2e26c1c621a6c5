/* ptf.h: the page-table model's types, shared by every engine source file, and each layer's entry points, by file
 * (what fewer files share has its own header: mm/internal.h, kvm/kvm_host.h, arch/s390/pgalloc.h and gmap.h). */
#ifndef PTF_H
#define PTF_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <errno.h>

#define MAX_PIDS 64
#define MAX_CPUS 16
#define MAX_VMS 16
#define MAX_SLOTS 32
#define MAX_MMS 160
#define MAX_SHM 16      /* shmem objects 0..15 (docs/trace-format.md, shm_mmap) */
#define MAX_HFILE 8     /* hugetlbfs files 0..7 (hugetlb_mmap): page caches MAX_SHM.. of engine.shm */
#define NR_FILES (MAX_SHM + MAX_HFILE)
#define MAX_VMAS 1024
#define MAX_LEVELS 5
#define OP_ARGS 5

enum arch { ARCH_S390, ARCH_ARM64, ARCH_X86_64, ARCH_NR };

/* Opcodes: the numbering is the trace format's (docs/trace-format.md). */
enum opcode {
	OP_SYSCTL_ALLOCATE_PGSTE, OP_EXEC, OP_FORK, OP_EXIT, OP_MMAP, OP_MUNMAP,
	OP_MADVISE, OP_FAULT, OP_SPLIT, OP_RCU_LOCK, OP_RCU_UNLOCK, OP_RCU_GP,
	OP_WALK_BEGIN, OP_WALK_STEP, OP_WALK_END, OP_RMAP_BEGIN, OP_RMAP_COMMIT,
	OP_VM_CREATE, OP_MEMSLOT, OP_GUEST_FAULT, OP_GUEST_FAULT_BEGIN,
	OP_GUEST_FAULT_COMMIT, OP_VM_DESTROY, OP_SHM_MMAP, OP_INVAL_HOLD, OP_INVAL_END,
	OP_UNMAP_MAPPING_BEGIN, /* Z2: unmap_mapping_range's zap stopped after its pmd read */
	OP_FRAG_HOLD, OP_FRAG_END, /* Z4: s390 page_table_free stopped inside mm->context.lock */
	OP_WALK_PIN, OP_COLLAPSE_HOLD, OP_COLLAPSE_END, /* Z5: GUP-fast's grab, collapse_huge_page stopped before its copy */
	OP_TLB_ACCESS, /* issue 20: a user access on a cpu, through (and filling) its TLB */
	OP_MREMAP, OP_MREMAP_HOLD, OP_MREMAP_END, /* issue 20: mremap, and a move stopped before its old range's unmap */
	OP_KHUGEPAGED, /* Z3: khugepaged's pass over one PMD block of an mm (collapse_pte_mapped_thp without install_pmd) */
	OP_HUGETLB_MMAP, /* issue 20: MAP_SHARED of a hugetlbfs file (PMD sharing) */
	OP_UNSHARE_HOLD, OP_UNSHARE_END, /* issue 20: a munmap that unshared a hugetlb PMD stopped before free_pgtables */
	OP_NR
};

enum violation {
	V_NONE, V_UAF_TABLE, V_DOUBLE_FREE, V_TABLE_LEAK, V_FRAGMENT_CORRUPT,
	V_PGSTE_TABLE_MISSING, V_GMAP_DANGLING, V_LOST_UPDATE, V_FREED_PAGE_MAPPED,
	V_STAGE2_BLOCK_ILLEGAL, V_STAGE2_OVERSIZE, V_STAGE2_STALE,
	V_STAGE2_AFTER_RELEASE, V_STAGE2_MMIO_OVER_LEAF, V_KERNEL_BUG, V_GUP_STALE_PIN, V_STALE_TLB, V_ENGINE_ASSERT,
	V_NR
};

enum knob {
	K_TABLE_FREE, K_PMD_RECHECK, K_PGSTE_DECISION, K_PT_ALLOC, K_THP_IN_PGSTE,
	K_DEFER_GMAP_UNLINK, K_INVALIDATE_RETRY, K_FAULT_HOLDS_MM, K_RELEASE_CHECK,
	K_STAGE2_BLOCK_CHECK, K_THP_SIZE, K_PT_RECLAIM, K_HUGE_ZERO_WP, K_COLLAPSE_RO, K_MERGE_UNFAULTED,
	K_FILE_PMD_NOHUGE, K_COLLAPSE_PMD_ALLOC, K_MEMSLOT_ACCESS_OK, K_COLLAPSE_SUBBLOCK, K_COLLAPSE_PMD_NONE,
	K_FILE_RETRACT, K_COLLAPSE_GUP_SYNC, K_RETRACT_LOCKS, K_THP_HW, K_TASK_SIZE_MAX,
	/* issue 19's KVM zoo rows (Z6-Z9) */
	K_FAULT_SEQ_SNAPSHOT, K_S2_UNMAP_YIELD_RECHECK, K_INVALID_SLOT_FAULT, K_USER_PT_WALK,
	K_FRAG_RELEASE, /* Z4: s390.frag_release */
	K_GUP_FAST_PMD_RECHECK, /* Z5: gup.fast_pmd_recheck (0 yes, 1 no) */
	K_TLB_GATHER, /* issue 20: mm.tlb_gather (0 gather, 1 none) */
	K_MREMAP_MOVE_PGT_RMAP, /* issue 20: mremap.move_pgt_rmap */
	K_MREMAP_MULTI_VMA,     /* mremap.move_multi_vma (0 no: v6.6, 1 yes: 6.17+) */
	K_COLLAPSE_FILE_NOTIFY, /* Z3: mm.collapse_file_notify (0 start-end, 1 none) */
	K_HUGETLB_UNSHARE_FLUSH, /* issue 20: hugetlb.unshare_flush */
	K_NR
};
/* Knob values are indices into the knob's value list (core/names.c knob_defs). */
enum { TF_RCU, TF_IMMEDIATE };
enum { PD_ELF_RESTART, PD_SYSCTL_ONLY, PD_ELF_NO_RESTART, PD_CONVERT_LATE };
enum { PA_FRAGMENTS, PA_FULL_PAGE, PA_FRAGMENTS_ALWAYS };
enum { IR_SEQ, IR_NONE, IR_SEQ_ONLY }; /* kvm.invalidate_retry */
enum { FS_BEFORE_UNLOCK, FS_AFTER_UNLOCK }; /* kvm.fault_seq_snapshot */
enum { UY_YES, UY_NO };                   /* kvm.s2_unmap_yield_recheck */
enum { IS_RETRY, IS_MMIO };               /* kvm.invalid_slot_fault */
enum { UW_IRQS_OFF, UW_UNPROTECTED };     /* kvm.user_pt_walk */
enum { FR_FIXED, FR_PRE_C2C224932FD0 }; /* s390.frag_release (Z4) */
enum { MR_WRITE, MR_READ };             /* mremap.move_pgt_rmap: 97113eb39fa7 (v5.14) and before it */
enum { CN_START_END, CN_NONE };         /* mm.collapse_file_notify (Z3) */
enum { UF_FIXED, UF_PRE_A4A118F2EEAD }; /* hugetlb.unshare_flush (issue 20) */

struct knob_def {
	const char *name;
	const char *values[5];
	int default_value[ARCH_NR]; /* -1: the knob does not apply to that arch */
	const char *description;
};
extern const struct knob_def knob_defs[K_NR];

struct op_def { const char *name; int nargs; };
extern const struct op_def op_defs[OP_NR];
extern const char *const violation_names[V_NR];
/* What a violation concerns, as numbers (the message names them too): for the reports (ptfuzz show). Each field
 * counts only when its VF_ bit is in has. */
enum { VF_TABLE = 1, VF_ENTRY = 2, VF_VM = 4, VF_MM = 8, VF_GPA = 16, VF_HVA = 32, VF_PFN = 64, VF_S2_LEVEL = 128,
       VF_SIZE = 256 };
struct viol_focus {
	unsigned has;
	uint64_t table;         /* a table's physical address (the half's, for an s390 2K table) */
	uint32_t entry;         /* VF_ENTRY: the entry of that table */
	int vm, mm, s2_level;
	uint64_t gpa, hva, pfn, size;
};
extern const char *const violation_rules[V_NR];
extern const char *const arch_names[ARCH_NR];

/* ---- geometry: data, not code ---- */
enum entry_kind { E_EMPTY, E_TABLE, E_LEAF };

struct level_geom {
	const char *name;
	uint8_t shift;        /* VA bits below one entry of this level */
	uint32_t entries;     /* entries per table (1 when folded) */
	uint32_t table_bytes; /* bytes of one table; 0 when folded */
	bool folded;
	bool leaf_ok;         /* host leaves (THP / hugetlb) may live here */
};

struct entry_fmt {
	uint64_t (*empty)(int level);
	uint64_t (*table)(int level, uint64_t phys);
	uint64_t (*leaf)(int level, uint64_t phys, bool write);
	enum entry_kind (*kind)(int level, uint64_t e);
	uint64_t (*addr)(int level, uint64_t e);
	bool (*writable)(int level, uint64_t e); /* a leaf that allows writes (pte_write / pmd_write) */
};

struct geom {
	int nlevels;                 /* index nlevels-1 is the page level */
	struct level_geom lv[MAX_LEVELS];
	const struct entry_fmt *fmt;
	uint64_t page_size;
	uint8_t pmd_shift, pud_shift; /* THP/hugetlb PMD size; hugetlb PUD size (0: none) */
};

/* ---- table pool ---- */
enum { H_FREE, H_ALLOC, H_PENDING };
struct tref { int32_t blk; uint8_t half; uint32_t gen; };
#define TREF_NONE ((struct tref){ -1, 0, 0 })

struct block {
	uint64_t *mem;
	uint32_t gen[2];
	uint16_t pages;     /* 4K pages in this block: 1, 4 for a CRST, up to 256 for 16 concatenated 64K stage-2 pgds */
	uint8_t used;
	uint8_t half[2];    /* H_*; a whole-page table uses half 0 */
	uint8_t frag;       /* 2K-fragment page */
	uint8_t pgste;      /* full page with PGSTEs in the upper 2K */
	uint8_t active;     /* pte_free_defer: freed halves wait for RCU */
	uint8_t listed;     /* on its mm's fragment reuse list */
	uint8_t linked[2];  /* L_*: private, linked into a live page table, unlinked, deposited */
	int8_t level[2];
	int16_t mm[2];      /* owning mm, -1 for gmap / stage-2 tables */
	uint32_t nonempty[2]; /* entries that are not empty, kept by entry_write */
	uint32_t leaves[2];   /* entries that are leaves, kept by entry_write */
	int32_t next_free;
	int32_t list_next, list_prev;
	int32_t dep_head;   /* a PMD table: 1 + index of its newest deposit (pmd_huge_pte), 0: none */
	/* a hugetlb PMD table: the mms besides its owner (mm[0]) whose pud links it, huge_pmd_share's get_page (v6.6
	 * keeps the count in the page's refcount: page_count - 1) */
	uint32_t pmd_share;
	/* per half, 64 bits over its words (block_chunk_shift): a clear bit means every word there still
	 * holds what the table was initialised with; entry_write sets them. The digest and the snapshot
	 * copy look only at set chunks, so a write into table memory must go through entry_write. */
	uint64_t occ[2];
};
/* log2 of the words one occupancy bit covers: a half (2K fragment) or the whole block is 64 chunks */
static inline unsigned block_chunk_shift(const struct block *b)
{
	return (unsigned)__builtin_ctz(b->frag ? 256u : (unsigned)b->pages * 512u) - 6;
}
/* Table states (block.linked): a private table is being built or taken apart by one kernel path;
 * writes into an unlinked or deposited table are lost updates. */
enum { L_PRIVATE, L_LINKED, L_UNLINKED, L_DEPOSITED };

/* huge_pmd_share: a pud of mm links the shared hugetlb PMD table blk, which another link or its owner (the block's mm)
 * also has; one record per link beyond the owner's (block.pmd_share counts them), in the order they were made */
struct pmd_link { int32_t blk; int32_t mm; };

/* pgtable_trans_huge_deposit: the PTE tables preallocated for huge PMD leaves, a LIFO per PMD table */
struct deposit { struct tref t; int32_t next; };

/* ---- data pages ---- */
/* One record per compound: 16 bytes, as B5 (docs/bench.md) replays a million of them. data_alloc keeps every
 * field in range: pfn + nr <= ZERO_PFN_BASE (2^34) so pfn fits 40 bits; nr is a power of two up to 2^31
 * (what the former uint32_t nr could hold), stored as its order; shm is 0..MAX_SHM. mapcount and live keep
 * 32 bits: one page may be mapped by ptes of every mm (a 512M THP is 8192 ptes, times MAX_MMS). */
#define CPD_PFN_BITS 40
#define CPD_ORDER_BITS 5
#define CPD_SHM_BITS 5
#define CPD_MAX_ORDER 31
struct compound {
	uint64_t pfn : CPD_PFN_BITS;     /* first page; compounds are handed out in increasing pfn order */
	uint64_t order : CPD_ORDER_BITS; /* 1 << order 4K pages in the compound (cpd_nr) */
	uint64_t freed : 1;
	uint64_t hugetlb : 1;            /* a hugetlb page: no deposit, never split */
	uint64_t shm : CPD_SHM_BITS;     /* 1 + the shmem object whose page cache holds it: freed by the cache, not by unmapping */
	int32_t mapcount; /* maintained by the kernel paths */
	int32_t live;     /* maintained by the oracle: leaves in linked tables */
};
#define DATA_PFN_BASE (1ull << 24) /* data pages live above the table pool's addresses */
/* The zero pages: never allocated, never freed, never counted as data. The huge zero page sits at a
 * base aligned to every PMD size; the 4K zero page (128 colours on s390, ZERO_PAGE(vaddr)) after it. */
#define ZERO_PFN_BASE (1ull << 34)
#define HUGE_ZERO_PFN ZERO_PFN_BASE
#define ZERO_PFN (ZERO_PFN_BASE + (1ull << 18))
#define ZERO_PFN_END (ZERO_PFN + (1ull << 18))
_Static_assert(sizeof(struct compound) == 16, "struct compound: 16 bytes (B5)");
_Static_assert(ZERO_PFN_BASE <= 1ull << CPD_PFN_BITS, "data pfns (below ZERO_PFN_BASE) fit compound.pfn");
_Static_assert(CPD_MAX_ORDER < 1 << CPD_ORDER_BITS, "compound.order holds every order data_alloc accepts");
_Static_assert(NR_FILES < 1 << CPD_SHM_BITS, "compound.shm holds 1 + every shmem object and hugetlbfs file");
static inline uint32_t cpd_nr(const struct compound *c)
{
	return 1u << c->order;
}

/* ---- processes, mms, VMAs ---- */
/* VM_HUGEPAGE, VM_HUGETLB (two sizes), VM_NOHUGEPAGE, VM_GROWSDOWN (the exec stack) */
enum { VMA_THP = 1, VMA_HUGETLB_PMD = 2, VMA_HUGETLB_PUD = 4, VMA_NOHUGE = 8, VMA_STACK = 16 };
#define VMA_HUGETLB (VMA_HUGETLB_PMD | VMA_HUGETLB_PUD)
struct vma {
	uint64_t start, end;
	uint32_t flags;
	uint32_t anon;   /* anon_vma identity, 0: none yet (anon_vma_prepare sets it) */
	uint32_t file;   /* vm_file: 0 anonymous, else the hugetlbfs file of one MAP_HUGETLB mmap, or SHM_FILE(obj) */
	uint8_t cloned;  /* anon_vma_chain is not singular: forked from a parent VMA with an anon_vma */
	uint8_t shm;     /* MAP_SHARED of file shm - 1 (0: not shared): a shmem object (< MAX_SHM), or with VMA_HUGETLB_PMD
			  * hugetlbfs file shm - 1 - MAX_SHM (VM_MAYSHARE: PMD sharing); never an anon_vma */
	uint32_t anon_root; /* anon_vma->root: the lock an rmap walker of the VMA's pages holds (anon_vma_fork keeps it) */
	uint64_t pgoff;  /* vm_pgoff, in pages (shmem VMAs only; anonymous VMAs never need it here) */
};
/* The file identity of shmem object obj: one struct file shared by every mapping (the crosscheck helper's memfd). */
#define SHM_FILE(obj) (0x80000000u | (uint32_t)(obj))

/* ---- shmem objects: a page cache indexed by page offset, a block of PTRS_PER_PTE pages at a time ---- */
struct shm_blk {
	uint64_t index;  /* pgoff / pages per block */
	uint64_t huge;   /* a PMD-size folio's head pfn (after collapse_file), 0: small pages */
	uint64_t *pfn;   /* small pages: the 4K frame of each page offset's page, 0 for a hole */
};
struct shm_obj { bool used; struct shm_blk *blk; uint32_t nblk, capblk; };

struct pgtable {
	int top;          /* level index of the top table */
	struct tref root;
	int16_t mm;       /* owning mm, -1 for gmap/stage-2 */
};

struct mm {
	bool used;
	int users;        /* mm_users */
	int count;        /* mm_count: actors and VMs that still point at it */
	bool dead;        /* exit_mmap has run */
	struct pgtable pgt;
	uint64_t asce_limit;
	bool alloc_pgste, has_pgste, def_nohuge;
	struct vma *vmas;
	int nvma;
	int32_t frag_list;  /* head block of the fragment reuse list */
	int n_frag_tables;  /* 2K PTE tables owned (oracle) */
	uint64_t pt_bytes;  /* mm_pgtables_bytes: linked and deposited PTE/PMD/PUD tables that are not folded */
	uint64_t pmd_leaves; /* PMD-level leaves in linked tables it owns (THP, huge zero page, hugetlb) */
};

/* pending: fork's child while the fork is stopped in an invalidation window (dup_mmap has not returned): the pid
 * is taken, but no operation sees a process there until inval_end. */
struct proc { bool exists; int mm; bool tif_pgste; bool pending; };

/* ---- locks held across operations (core/locking.c) ---- */
/* What a split operation holds between its halves, as its kernel path holds it: mmap_lock, a range of VMAs
 * write-locked (vma_start_write), the anon_vma root's rwsem, i_mmap_rwsem, a folio lock, kvm->srcu (read side),
 * the kvm reference of a vCPU in KVM_RUN, mn_active_invalidate_count, IRQs off (GUP-fast), and the mm_users
 * reference of a host thread a window stopped (exit_mmap waits for it; only reported). A lock is read
 * (shared) or write (exclusive); the sleeping ones make a conflicting acquirer wait. */
enum lock_class { LC_MMAP, LC_VMA, LC_ANON_VMA, LC_I_MMAP, LC_FOLIO, LC_SRCU, LC_KVM, LC_MN_ACTIVE, LC_IRQS_OFF,
		  LC_MM_USERS, LC_SLOTS /* issue 19 (Z8) */, LC_CONTEXT /* s390 mm->context.lock (Z4: a held page_table_free) */,
		  LC_NR };
enum lock_mode { LM_READ = 1, LM_WRITE = 2 };
/* id: the mm (mmap_lock, VMAs), anon_vma root, shmem object, folio head pfn, VM or cpu; [lo, hi): the VMA range.
 * No implicit padding: struct cpu is hashed as bytes (digest.c). */
struct held_lock { uint8_t cls, mode, pad[6]; uint64_t id, lo, hi; };
#define MAX_HELD 6
#define MAX_CPU_LOCKS (MAX_HELD + MAX_VMS + 4) /* what one cpu holds at most: cpu_locks */

/* A_INVAL: a host thread stopped between mmu_notifier_invalidate_range_start and _end (inval_hold, docs/trace-format.md)
 * A_FRAG (s390, Z4): a thread stopped inside page_table_free between its atomic_xor_bits and its list work, holding
 * mm->context.lock (frag_hold .. frag_end; arch/s390/pgalloc.c). It reuses the walker's fields: walk_done = held (an
 * operation reached the armed cpu), mm and tbl = the 2K half being freed (tbl's gen the half's after the xor),
 * level = 1 when the xor's mask was zero (the other half free: the pre-fix page_table_free frees the page after
 * its list work), addr = the stopped operation's opcode (wait events name it).
 * A_WALK also keeps, from its step through the pmd into a PTE table, pmd_tbl, pmd_idx and pmd_seen (the pmd value
 * gup_pte_range compares after the grab), and pfn: the page walk_pin grabbed (0: none), dropped at walk_end.
 * A_COLLAPSE (Z5): collapse_huge_page stopped after pmdp_collapse_flush and __collapse_huge_page_isolate, before
 * __collapse_huge_page_copy (collapse_hold .. collapse_end): walk_done = held, mm, addr = the block, pmd_tbl and
 * pmd_idx = the cleared pmd, tbl = the PTE table, pfn = the new THP's head, seq = the index of the operation it
 * stopped (compared with the running one's only, like inval_op). */
/* A_MREMAP (issue 20): move_vma stopped after move_page_tables, before the old range's unmap (mremap_hold ..
 * mremap_end): walk_done = held, mm, addr and size = the old range, [gpa, hva) = the source VMA, pfn and folio =
 * the new range's address and length (both VMAs write-locked), seq = the index of the operation it stopped. */
/* A_UNSHARE (issue 20): a munmap of shared hugetlb VMAs stopped after unmap_vmas (where __unmap_hugepage_range
 * unshared a PMD table and dropped i_mmap_rwsem), before free_pgtables and tlb_finish_mmu (unshare_hold ..
 * unshare_end, mm/hugetlb.c): walk_done = held, mm, addr .. hva = the munmap range, gpa .. size = the range its
 * tlb_finish_mmu flushes, seq = the index of the operation it stopped. */
enum actor_kind { A_NONE, A_WALK, A_RMAP, A_GFAULT, A_INVAL, A_FRAG, A_COLLAPSE, A_MREMAP, A_UNSHARE };
struct cpu {
	int rcu_nest;
	uint64_t section;   /* id of the current (or last) outermost section */
	enum actor_kind actor;
	/* walk */
	int mm;
	uint64_t addr;
	int level;
	struct tref tbl;
	bool walk_done;
	/* rmap: the pointers it took, and what it holds until commit (the rmap lock for read, the folio lock) */
	struct tref pmd_tbl;
	uint32_t pmd_idx;
	uint64_t pmd_seen;
	uint8_t lock_kind;   /* RL_* */
	uint32_t lock_id;    /* anon_vma root, or shmem object */
	uint64_t folio;      /* head pfn of the folio it locked */
	/* guest fault */
	int vm;
	uint64_t gpa, hva, size;
	uint64_t pfn;
	uint64_t seq;
	bool holds_mm, write, vma_thp;
	struct tref s2_root;    /* the stage-2 root the fault will install into */
	bool late_faultin;      /* kvm.fault_seq_snapshot=after-unlock: the seq snapshot and fault-in wait for the commit */
	bool noslot;            /* x86 kvm.invalid_slot_fault=mmio: an invalid memslot read as none (KVM_PFN_NOSLOT) */
	/* invalidation window (A_INVAL): armed until a host operation notifies, then held until inval_end */
	bool inval_held;
	uint32_t inval_op;                 /* the operation whose invalidate_range_end calls this cpu holds */
	uint16_t inval_began[MAX_VMS];     /* kvm_mmu_invalidate_begin calls whose _end is pending, per VM */
	uint16_t inval_active[MAX_VMS];    /* mn_active_invalidate_count increments pending, per VM */
	uint64_t inval_mms[(MAX_MMS + 63) / 64]; /* the mms whose notifier calls are pending */
	struct held_lock inval_locks[MAX_HELD];  /* what the stopped operation holds until inval_end */
	uint32_t inval_nlocks;
	uint32_t inval_opcode;                   /* the stopped operation (names the holder) */
	uint32_t inval_child;                    /* 1 + a fork's child pid, published at inval_end; 0: none */
	uint32_t inval_pad;
	/* a window that stopped its thread at the first yield inside a stage-2 unmap (arm64 stage2_apply_range's
	 * cond_resched_rwlock_write): the rest of that unmap runs at inval_end. Scalars only (the digest hashes the
	 * record as bytes); vm1 0: no stop pending. */
	struct inval_mid {
		uint64_t gpa, end;     /* the rest of the slot's stage-2 range */
		uint64_t root;         /* tref_phys of the stage-2 root the unmap began with ... */
		uint32_t root_gen;     /* ... and its generation */
		int32_t vm1;
	} inval_mid;
	/* a window that stopped a memslot DELETE in its INVALID phase (kvm_invalidate_memslot swapped the invalid
	 * copy in; kvm_arch_flush_shadow_memslot and the final swap run at inval_end); vm1 0: none */
	struct inval_slot { int32_t vm1, slot; } inval_slot;
};

/* The rmap lock an rmap walker holds for read: the anon_vma root (anon_vma->root->rwsem) or i_mmap_rwsem. */
enum { RL_NONE, RL_ANON, RL_FILE };

struct memslot { bool used; uint64_t gpa, hva, len; };

struct gmap_link { uint64_t gaddr, vmaddr; };
/* guest_to_host (gmap_map_segment): [gaddr, gaddr + len) -> [vmaddr, vmaddr + len), in 1 MiB segments. Each
 * extent is one aligned memslot's range, so MAX_SLOTS extents (and one more while a range is cut) suffice. */
struct gmap_g2h { uint64_t gaddr, vmaddr, len; };
#define MAX_G2H (2 * MAX_SLOTS + 2)

struct vm {
	bool used;
	int mm;
	struct pgtable s2;     /* gmap (s390) or stage 2 / TDP */
	bool root_freed;       /* the stage-2 root is gone: arm64 release (kvm_free_stage2_pgd), kvm_destroy_vm */
	bool released;         /* mmu_notifier release ran (exit_mmap): the VM gets no more invalidations */
	struct geom geom;      /* stage-2 geometry */
	int start_level, pgd_pages;
	uint64_t invalidate_seq;
	int invalidate_in_progress;
	uint64_t invalidate_range_start, invalidate_range_end; /* hva range, union of the open invalidations */
	int mn_active_invalidate_count; /* invalidate_range_start calls without their _end: memslot updates wait */
	struct memslot slots[MAX_SLOTS];
	struct gmap_link *links; /* s390 host_to_guest */
	int nlinks, caplinks;
	struct gmap_g2h g2h[MAX_G2H]; /* s390 guest_to_host */
	int ng2h;
	uint64_t mem_limit, asce_end; /* s390 kvm->arch.mem_limit, gmap->asce_end */
	int faults_in_flight;
	int32_t invalid_slot1;   /* 1 + the memslot a DELETE has marked KVM_MEMSLOT_INVALID (stopped by a window); 0: none */
};

/* ---- RCU ---- */
enum cb_kind { CB_FRAG_PENDING, CB_FREE_BLOCK, CB_NR };
struct rcu_cb {
	enum cb_kind kind;
	int32_t blk;
	uint8_t half;
	uint64_t wait_section[MAX_CPUS]; /* 0: no wait on that cpu */
};

/* ---- the arch hooks generic code calls (as arm64 kvm/hyp/pgtable.c's mm_ops): one table per arch, chosen by
 * ptf_init, so that mm/, core/rcu.c and the oracle never branch on the arch for these ---- */
struct engine;
typedef void (*rcu_callback_t)(struct engine *e, int32_t blk, int half);
struct mm_ops {
	int (*pte_alloc_one)(struct engine *e, int mm, struct tref *out); /* NULL: a plain table_alloc */
	void (*pte_free)(struct engine *e, int mm, struct tref t);
	void (*pte_free_tlb)(struct engine *e, int mm, struct tref t, uint64_t vmaddr);
	void (*pte_free_defer)(struct engine *e, int mm, struct tref t, uint64_t vmaddr);
	int (*crst_table_upgrade)(struct engine *e, int mm, uint64_t end); /* NULL: the top level is fixed */
	rcu_callback_t rcu_callback[CB_NR]; /* what a grace period runs, by callback kind */
	uint64_t (*zero_pfn)(const struct engine *e, uint64_t addr); /* ZERO_PAGE(vaddr); NULL: the one zero page */
	bool (*mm_forbids_zeropage)(const struct engine *e, const struct mm *m); /* NULL: never */
	uint64_t (*init_new_context)(const struct engine *e, const struct mm *m); /* asce_limit; NULL: TASK_SIZE */
	bool (*gup_fast_permitted)(const struct engine *e, int mm, uint64_t addr); /* NULL: always */
	bool pgste;                /* page tables may carry PGSTEs (s390): alloc_pgste and its decisions apply */
	bool have_move_pmd, have_move_pud; /* CONFIG_HAVE_MOVE_PMD / _PUD: mremap moves whole tables (x86, arm64) */
	int pgd_top;               /* the top level of a new mm's pgd (s390: a 3-level region-third table) */
	int elf_machine;           /* e_machine binfmt_elf's elf_check_arch accepts */
	bool elf_big_endian;
};
extern const struct mm_ops s390_mm_ops, arm64_mm_ops, x86_64_mm_ops;

/* The mm side's notifier calls (mmu_notifier_ops): KVM's subscription, reached without mm/ calling into kvm/. */
struct mmu_notifier_ops {
	void (*invalidate_range)(struct engine *e, int mm, uint64_t start, uint64_t end); /* _start + _end */
	void (*invalidate_range_end_held)(struct engine *e, int cpu); /* the _end calls a stopped thread held */
	void (*release)(struct engine *e, int mm);                       /* exit_mmap's mmu_notifier_release */
	int (*end_held_wait)(struct engine *e, int cpu); /* would inval_end wait (-16)? 0: it can run */
};
extern const struct mmu_notifier_ops kvm_mmu_notifier_ops;

/* The arch side of KVM (kvm/kvm_host.h): arch/s390/kvm/kvm-s390.c, arch/arm64/kvm/mmu.c, arch/x86/kvm/mmu/tdp_mmu.c */
struct kvm_arch_ops;
extern const struct kvm_arch_ops s390_kvm_ops, arm64_kvm_ops, x86_64_kvm_ops;

/* ---- the CPUs' TLBs (core/tlb.c) ---- */
/* What one cpu caches (issue 20): leaf translations and, as x86's paging-structure caches and arm64's walk
 * cache do, the table entries a walk went through. Each cpu's entries are kept in fill order, oldest first (a
 * full TLB drops its oldest: a real one may drop any entry at any time, and dropping is always safe), so that
 * the array is its own canonical form for the digest. Scalars only, no padding: hashed as bytes. */
#define TLB_NR 8
enum { TLBE_NONE, TLBE_LEAF, TLBE_TABLE };
struct tlb_entry {
	uint8_t kind, level, write, pad;
	int32_t mm;
	uint64_t va;     /* the first VA the cached entry maps: aligned to its level's size */
	uint64_t target; /* TLBE_LEAF: the leaf's first 4K frame; TLBE_TABLE: the physical address of the table it
			  * points at */
	uint32_t gen;    /* TLBE_TABLE: that table's generation when it was cached (reuse changes it) */
	uint32_t pad2;
};
_Static_assert(sizeof(struct tlb_entry) == 32, "struct tlb_entry: no padding (hashed as bytes)");

/* ---- --steps events ---- */
enum event {
	EV_TABLE_ALLOC, EV_TABLE_FREE, EV_TABLE_RCU, EV_TABLE_DEFER, EV_RCU_RUN,
	EV_LEAF_SET, EV_LEAF_ZAP, EV_DATA_FREE, EV_UPGRADE, EV_GMAP_LINK,
	EV_GMAP_UNLINK, EV_NOTIFY, EV_RESTART, EV_PGSTE, EV_S2_LEAF, EV_S2_ZAP,
	EV_SHM_COLLAPSE, EV_RETRACT, EV_WAIT, EV_NR
};
extern const char *const event_names[EV_NR];
struct event_rec { uint32_t op; uint32_t type; uint64_t a, b, c, d; };

struct stats {
	uint64_t pages_in_use, pages_peak;
	uint64_t tables_allocated, tables_freed, rcu_callbacks;
	uint64_t data_pages, data_pages_peak;
	uint64_t waits;        /* operations that would have waited for a lock another actor holds */
	uint64_t results[128]; /* by -errno */
};

struct engine {
	enum arch arch;
	int knob[K_NR];
	struct geom geom;
	uint64_t task_size, stack_top;
	uint64_t max_table_pages;
	unsigned pa_bits;              /* arm64 config pa_bits (ID_AA64MMFR0_EL1.PARange): kvm_set_ipa_limit */

	struct block *blocks;
	int32_t nblocks, capblocks, free_blocks;

	struct compound *cpd;
	uint64_t ncpd, capcpd, next_pfn, last_cpd; /* last_cpd: data_lookup's one-entry cache */
	const struct entry_fmt *s2_fmt; /* entry format of gmap / stage-2 / TDP tables */
	const struct mm_ops *mm_ops;    /* the arch's page-table hooks */
	const struct mmu_notifier_ops *mn_ops; /* the notifier subscribers' calls (KVM's) */
	const struct kvm_arch_ops *kvm_ops;    /* the arch's KVM hooks */

	struct proc procs[MAX_PIDS];
	struct mm mms[MAX_MMS];
	int mm_hwm;                    /* no mm slot at or above this was ever used (mm_new; scans stop here) */
	struct cpu cpus[MAX_CPUS + 1]; /* the last one runs synchronous guest_fault */
	struct tlb_entry tlb[MAX_CPUS][TLB_NR]; /* each cpu's TLB, oldest first, TLBE_NONE after the last */
	uint32_t tlb_used;             /* entries in all TLBs: the post-step check looks only when there are some */
	/* the mmu_gather a zap runs under (tlb_gather_mmu .. tlb_finish_mmu): what it frees on the way is freed after
	 * its flush in the kernel, so the free-time check lets entries of that mm and range be; never open between
	 * operations */
	struct mmu_gather { int32_t mm; uint32_t active /* 1: open; 2: mm.tlb_gather=none */; uint64_t start, end; } gather;
	struct vm vms[MAX_VMS];
	bool sysctl_pgste;
	uint64_t next_section;

	struct rcu_cb *cbs;
	size_t ncbs, capcbs;

	struct deposit *deps;
	int32_t ndeps, capdeps, free_deps;
	struct pmd_link *pmd_links;    /* shared hugetlb PMD tables' links (mm/hugetlb.c) */
	int32_t npmd_links, cappmd_links;
	uint32_t next_anon, next_file; /* anon_vma and hugetlbfs file identities */
	struct shm_obj shm[NR_FILES];  /* shmem objects, then hugetlbfs files (MAX_SHM + file) */
	uint32_t shm_pages;            /* pages per shmem block (PTRS_PER_PTE: a PMD-size folio) */
	int pmd_lvl;                   /* the level of PMD-size leaves (pmd_level of the stage-1 geometry) */

	const uint8_t *const *elfs;
	const size_t *elf_lens;
	int nelfs;

	/* the current operation and the first violation */
	uint32_t op_index;
	enum violation viol;
	uint32_t viol_op;
	char viol_msg[256];
	struct viol_focus viol_focus;

	/* the running operation: its opcode, its cpu (an actor's own locks never make it wait) and the locks it
	 * holds now, which an invalidation window that stops it keeps until inval_end */
	uint32_t cur_opcode;
	int self_cpu;
	struct held_lock cur[MAX_HELD];
	int ncur;
	bool locks_grew;  /* this operation added a holder: lockdep looks */

	/* where the post-step oracle must look: set by structural changes, whatever the knobs */
	bool frag_dirty, gmap_dirty;

	bool steps;
	struct event_rec *events;
	size_t nevents, capevents;

	struct stats st;
};

/* engine.c; config: granule, va_bits, la57, max_table_pages, pa_bits (trace.py config_tuple) */
#define CONFIG_NR 5
int ptf_init(struct engine *e, enum arch arch, const int *knobs, const uint64_t *config);
void ptf_fini(struct engine *e);
void engine_free(struct engine *e); /* ptf_fini and free: an engine on the heap */
int ptf_step(struct engine *e, const uint64_t *op);
/* would ptf_step change nothing and find nothing (a precondition of the operation fails)? false: not known */
bool ptf_noop(const struct engine *e, const uint64_t *op);
int ptf_finish(struct engine *e, bool teardown);
int ptf_selftest(int which);
uint64_t ptf_translate(struct engine *e, uint64_t pid, uint64_t va);
/* search/digest.c: the canonical state digest (see the comment there for what it covers and why) */
uint64_t ptf_digest(struct engine *e);
struct digest_scratch { uint32_t *blk_id; int32_t *blk_ctx; uint32_t *cpd_id, *anon_id, *file_id;
			size_t cap_blk, cap_ctx, cap_cpd, cap_anon, cap_file; };
int ptf_digest_sym(struct engine *e, struct digest_scratch *s, const int groups[3][2], uint64_t *out);
void digest_scratch_free(struct digest_scratch *s);
extern int ptf_digest_full_scan, ptf_copy_full; /* tests: ignore the occupancy bitmaps */
/* search/snap.c: dst becomes an independent copy of src (save and restore) */
int ptf_copy(struct engine *dst, const struct engine *src);
/* core/report.c */
void violate(struct engine *e, enum violation v, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* violate, with what the violation concerns (f: a compound literal at the call site) */
void violate_at(struct engine *e, enum violation v, const struct viol_focus *f, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void emit(struct engine *e, enum event t, uint64_t a, uint64_t b, uint64_t c, uint64_t d);

/* core/pool.c: table pages, data pages */
int table_alloc(struct engine *e, int mm, int level, int pages, struct tref *out);
const struct entry_fmt *block_fmt(struct engine *e, const struct block *b, int half);
void block_release(struct engine *e, int32_t blk);
/* How table_free gives a table back: at once with an EV_TABLE_FREE event, at once without one (an allocation
 * unwound before anyone saw the tables), after a grace period (call_rcu), or not at all here: the arch's
 * own allocator returns it (s390's 2K fragments, page_table_free and friends), table_free only counts it. */
enum table_free { TABLE_FREE_NOW, TABLE_FREE_SILENT, TABLE_FREE_RCU, TABLE_FREE_BY_ARCH };
void table_free(struct engine *e, struct tref t, enum table_free how, int level, uint64_t owner);
void tlb_remove_table_rcu(struct engine *e, int32_t blk, int half);
/* The memory of a table (a 2K half of a fragment page); hot in every walk, so inline. */
static inline uint64_t *tref_mem(struct engine *e, struct tref t)
{
	struct block *b = &e->blocks[t.blk];
	return b->mem + (b->frag ? t.half * 256u : 0);
}
uint64_t *tref_deref(struct engine *e, struct tref t, const char *who);
struct tref tref_from_phys(struct engine *e, uint64_t phys);
/* Table addresses are synthetic but stable: block b lives at (b+1) * 16 KiB,
 * so a CRST (4 pages) and the two 2K halves of a PTE page all get distinct
 * origins that fit the entry formats' origin masks. Inline: rcu.c and the report paths use it below pool.c. */
static inline uint64_t tref_phys(struct tref t)
{
	return ((uint64_t)t.blk + 1) << 14 | (uint64_t)t.half << 11;
}
bool tref_alive(struct engine *e, struct tref t);
uint64_t data_alloc(struct engine *e, uint64_t nr);
struct compound *data_lookup(struct engine *e, uint64_t pfn);
uint64_t compound_index(const struct engine *e, uint64_t pfn);
void data_put(struct engine *e, uint64_t pfn);
void entry_write(struct engine *e, struct tref t, int level, uint32_t idx, uint64_t val);
void table_set_linked(struct engine *e, struct tref t, bool linked);
void table_set_state(struct engine *e, struct tref t, int state);
uint64_t pt_level_bytes(struct engine *e, int mm, int level);
bool is_zero_pfn(uint64_t pfn);
bool page_alive(struct engine *e, uint64_t pfn);
void pgtable_trans_huge_deposit(struct engine *e, struct tref pmd_tbl, struct tref pte);
struct tref pgtable_trans_huge_withdraw(struct engine *e, struct tref pmd_tbl);

/* core/tlb.c: the CPUs' TLBs (filled by tlb_access), the flushes kernel paths issue, and the check that no TLB
 * still translates to a freed page or through a freed table */
int tlb_access(struct engine *e, int cpu, uint64_t pid, uint64_t addr, bool write);
void flush_tlb_range(struct engine *e, int mm, uint64_t start, uint64_t end);
void flush_tlb_page(struct engine *e, int mm, uint64_t addr);
void flush_tlb_mm(struct engine *e, int mm);
void tlb_gather_mmu(struct engine *e, int mm, uint64_t start, uint64_t end);
void tlb_finish_mmu(struct engine *e);
void tlb_forget_mm(struct engine *e, int mm);
void tlb_check(struct engine *e);
/* core/pool.c: the TLB side of a free (each data page and table page checked as it goes back) */
bool tlb_entry_counts(const struct engine *e, const struct tlb_entry *t);
void tlb_caching_cpus(const struct engine *e, uint8_t kind, uint64_t lo, uint64_t hi, char *buf, size_t cap);
static inline int tlb_len(const struct engine *e, int cpu)
{
	int n = 0;
	while (n < TLB_NR && e->tlb[cpu][n].kind != TLBE_NONE)
		n++;
	return n;
}

/* core/rcu.c */
void rcu_enter(struct engine *e, int cpu);
void rcu_exit(struct engine *e, int cpu);
void call_rcu_table(struct engine *e, enum cb_kind kind, int32_t blk, int half);
void rcu_gp(struct engine *e, bool drain);

/* core/walk.c: geometry, entry formats, the generic walker */
int geom_stage1(struct geom *g, enum arch arch, const uint64_t *config);
int geom_stage2(struct geom *g, enum arch arch, const uint64_t *config, unsigned ipa_bits,
		int *start_level, int *pgd_pages);
const struct entry_fmt *stage2_fmt(enum arch arch);
struct walk_ctx;
typedef int (*walk_fn)(struct walk_ctx *ctx, unsigned visit);
enum { WALK_LEAF = 1, WALK_TABLE_PRE = 2, WALK_TABLE_POST = 4,
       WALK_SKIP_EMPTY = 8 /* the visitor has nothing to do with empty entries */ };
struct walker { walk_fn cb; void *arg; unsigned flags;
	int depth_limit; /* 0: none; else tables at levels >= depth_limit are not walked */ };
struct walk_ctx {
	struct engine *e;
	struct pgtable *pgt;
	const struct geom *g;
	struct tref tbl;     /* table holding the entry */
	uint32_t idx;
	int level;
	uint64_t addr;       /* first VA the entry maps */
	uint64_t end;        /* end of the walk */
	uint64_t old;        /* entry value when visited */
	void *arg;
};
int pt_walk(struct engine *e, struct pgtable *pgt, const struct geom *g,
	    uint64_t addr, uint64_t end, struct walker *w);
uint64_t level_size(const struct geom *g, int level);
/* the VA span a TLB entry maps (core/tlb.c, core/pool.c) */
static inline uint64_t tlb_entry_span(const struct engine *e, const struct tlb_entry *t)
{
	return 1ull << e->geom.lv[t->level].shift; /* level_size, without a call into core/walk.c */
}
int child_level(const struct geom *g, int level);
int level_for_size(const struct geom *g, uint64_t size);
int pmd_level(const struct geom *g);
int pud_level(const struct geom *g);
static inline uint64_t entry_get(struct engine *e, struct tref t, uint32_t idx)
{
	return tref_mem(e, t)[idx];
}

/* MADV_COLLAPSE scan results (mm/khugepaged.c), the ones the model reaches; SCAN_WAIT is the model's own: a path
 * that would wait for an actor (an IRQs-off walker, an rmap walker's lock). */
enum scan_result { SCAN_FAIL, SCAN_SUCCEED, SCAN_PMD_NULL, SCAN_PMD_NONE, SCAN_PMD_MAPPED, SCAN_PAGE_RO,
		   SCAN_ALLOC_HUGE_PAGE_FAIL, SCAN_WAIT, SCAN_PAGE_LOCK, SCAN_PAGE_LRU, SCAN_PAGE_COUNT,
		   SCAN_PAGE_NULL, SCAN_PAGE_COMPOUND, SCAN_TRUNCATED, SCAN_PTE_MAPPED_HUGEPAGE, SCAN_VMA_CHECK,
		   SCAN_ANY_PROCESS };

/* mm/: what the dispatcher, kvm/, arch/ and the search call (what only mm/ shares: mm/internal.h) */
/* the task's mm, or -ESRCH */
static inline int proc_mm(const struct engine *e, uint64_t pid)
{
	if (pid >= MAX_PIDS || !e->procs[pid].exists)
		return -ESRCH;
	return e->procs[pid].mm;
}
/* mm/mm_struct.c */
int mm_alloc(struct engine *e, bool alloc_pgste, int top, int *out);
void mmgrab(struct engine *e, int mm);
void mmdrop(struct engine *e, int mm);
/* mm/vma.c; find_vma is here, inline: every path looks VMAs up, and mm/vma.c is another file than theirs */
/* The first VMA ending above addr (nvma if none): find_vma. */
static inline int vma_index_after(struct mm *m, uint64_t addr)
{
	int lo = 0, hi = m->nvma;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (m->vmas[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}
static inline struct vma *vma_find(struct mm *m, uint64_t addr)
{
	int i = vma_index_after(m, addr);
	return i < m->nvma && m->vmas[i].start <= addr ? &m->vmas[i] : NULL;
}
uint64_t vma_pgoff_at(const struct engine *e, const struct vma *v, uint64_t addr);
/* mm/pgtable.c */
uint64_t host_entry_at(struct engine *e, int mm, uint64_t addr, int level, struct tref *tbl, uint32_t *idx);
int host_lookup(struct engine *e, int mm, uint64_t addr, int *level, uint64_t *pfn, struct tref *tbl, uint32_t *idx);
int alloc_table_for(struct engine *e, int mm, int level, struct tref *out);
int pt_slot(struct engine *e, int mm, uint64_t addr, int target, struct tref *tbl, uint32_t *idx, int *level);
void pte_free_tlb(struct engine *e, int mm, struct tref t, uint64_t vmaddr);
void pte_free_defer(struct engine *e, int mm, struct tref t, uint64_t vmaddr);
void pte_free(struct engine *e, int mm, struct tref t);
void crst_table_free(struct engine *e, int mm, struct tref t);
/* mm/gup.c: the GUP-fast walker, as interleavable steps */
int walk_begin(struct engine *e, int cpu, uint64_t pid, uint64_t addr);
int walk_step(struct engine *e, int cpu);
void actor_end(struct engine *e, int cpu);
/* Z5: GUP-fast's grab (mm/gup.c) and collapse_huge_page stopped before its copy (mm/khugepaged.c) */
int walk_pin(struct engine *e, int cpu);
int collapse_hold(struct engine *e, int cpu);
int collapse_end(struct engine *e, int cpu);
int collapse_window_wait(struct engine *e, uint64_t opcode);
/* mm/mremap.c (issue 20) */
int sys_mremap(struct engine *e, int mm, uint64_t addr, uint64_t old_len, uint64_t new_len, uint64_t new_addr,
	       bool fixed);
int mremap_hold(struct engine *e, int cpu);
int mremap_end(struct engine *e, int cpu);
/* mm/mmap.c: the munmap that unshared a hugetlb PMD table, held before free_pgtables (issue 20) */
int unshare_hold(struct engine *e, int cpu);
int unshare_end(struct engine *e, int cpu);
/* mm/rmap.c: the rmap walker and the rmap locks */
int rmap_begin(struct engine *e, int cpu, uint64_t pid, uint64_t addr);
int unmap_mapping_begin(struct engine *e, int cpu, uint64_t pid, uint64_t addr);
int rmap_commit(struct engine *e, int cpu);
bool folio_locked(const struct engine *e, uint64_t head);
int rmap_lock_wait(struct engine *e, int kind, uint32_t id);
int vma_rmap_wait(struct engine *e, const struct vma *v);
/* mm/mmu_notifier.c: the invalidation window */
int inval_hold(struct engine *e, int cpu);
int inval_end(struct engine *e, int cpu);
int inval_window_for(struct engine *e, int mm);
int inval_window_of_current(const struct engine *e);
int inval_window_holder(const struct engine *e, int mm);
void inval_window_forget_vm(struct engine *e, int vm);
/* mm/huge_memory.c */
int split_huge_pmd(struct engine *e, int mm, uint64_t addr);
int do_split(struct engine *e, int mm, uint64_t addr);
/* mm/memory.c */
int handle_mm_fault(struct engine *e, int mm, uint64_t addr, bool write, uint64_t *pfn, uint64_t *size);
int unmap_range(struct engine *e, int mm, uint64_t start, uint64_t end, bool free_tables);
int lock_mm_and_find_vma(struct engine *e, int mm, uint64_t addr);
/* mm/mmap.c */
#define DO_MMAP_THEN_HUGEPAGE 1 /* do_mmap's "mapped; now the MADV_HUGEPAGE the operation asked for" */
int do_mmap(struct engine *e, int mm, uint64_t addr, uint64_t len, uint64_t flags, int obj, uint64_t pgoff);
int __vm_munmap(struct engine *e, int mm, uint64_t start, uint64_t len);
int exit_mmap_wait(struct engine *e, int mm);
/* mm/madvise.c */
int do_madvise(struct engine *e, int mm, uint64_t start, uint64_t len_in, uint64_t advice);
int madvise_hugepage_range(struct engine *e, int mm, uint64_t start, uint64_t end);
/* mm/fork.c */
int copy_process(struct engine *e, uint64_t parent, uint64_t child);
int bprm_execve(struct engine *e, int pid, int64_t elf);
int exit_mm(struct engine *e, int pid);
void mmput(struct engine *e, int mm);
/* oracle/audit.c */
void mm_audit(struct engine *e);
int ptf_figures(struct engine *e, uint64_t lo, uint64_t hi, uint64_t **buf, size_t *len, size_t *cap);

/* mm/shmem.c, and khugepaged's file collapse (mm/khugepaged.c) */
struct shm_obj *shmem_obj(struct engine *e, int obj);
uint64_t shmem_lookup(struct engine *e, int obj, uint64_t index, struct compound **folio);
void shmem_release_all(struct engine *e);
void shmem_fini(struct engine *e);
bool transhuge_vma_suitable(const struct engine *e, const struct vma *v, uint64_t addr);
int do_shmem_fault(struct engine *e, int mm, const struct vma *v, uint64_t addr, bool write, uint64_t *pfn_out,
		   uint64_t *size_out);
int hpage_collapse_scan_file(struct engine *e, int mm, const struct vma *v, uint64_t addr, bool khugepaged);
int collapse_pte_mapped_thp(struct engine *e, int mm, uint64_t addr, bool install_pmd);
int khugepaged_scan_mm_slot(struct engine *e, int mm, uint64_t addr);

/* core/locking.c */
extern const char *const lock_names[LC_NR];
int lock_acquire(struct engine *e, enum lock_class cls, uint64_t id, enum lock_mode mode);
int lock_acquire_range(struct engine *e, enum lock_class cls, uint64_t id, enum lock_mode mode, uint64_t lo,
		       uint64_t hi);
int lock_would_wait(struct engine *e, enum lock_class cls, uint64_t id, enum lock_mode mode);
int lock_holder(const struct engine *e, enum lock_class cls, uint64_t id, enum lock_mode mode, uint64_t lo, uint64_t hi,
		struct held_lock *held);
int lock_wait(struct engine *e, int cpu, enum lock_class cls, uint64_t id, enum lock_mode mode,
	      const struct held_lock *held);
void lock_release(struct engine *e, enum lock_class cls, uint64_t id);
void lock_release_all(struct engine *e, enum lock_class cls);
void lock_downgrade(struct engine *e, enum lock_class cls, uint64_t id);
int cpu_locks(const struct engine *e, int cpu, struct held_lock *out);
void inval_window_keep_locks(struct engine *e, int cpu);
void lockdep_check(struct engine *e);

static inline void mmu_notifier_invalidate_range(struct engine *e, int mm, uint64_t start, uint64_t end)
{
	e->mn_ops->invalidate_range(e, mm, start, end);
}
static inline void mmu_notifier_invalidate_range_end_held(struct engine *e, int cpu)
{
	e->mn_ops->invalidate_range_end_held(e, cpu);
}
static inline void mmu_notifier_release(struct engine *e, int mm)
{
	e->mn_ops->release(e, mm);
}

/* fs/binfmt_elf.c */
struct elf_info { int machine; bool big_endian; bool pgste; int type; };
int elf_parse(const uint8_t *buf, size_t len, int want_machine, bool big_endian, struct elf_info *out,
	      uint64_t page_size);

#endif
