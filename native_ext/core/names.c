/* core/names.c: the names the trace format and the CLI share with the engine. */
#include "ptf.h"

const char *const arch_names[ARCH_NR] = { "s390", "arm64", "x86_64" };

const struct op_def op_defs[OP_NR] = {
	{ "sysctl_allocate_pgste", 1 }, { "exec", 2 }, { "fork", 2 }, { "exit", 1 },
	{ "mmap", 4 }, { "munmap", 3 }, { "madvise", 4 }, { "fault", 3 },
	{ "split", 2 }, { "rcu_lock", 1 }, { "rcu_unlock", 1 }, { "rcu_gp", 0 },
	{ "walk_begin", 3 }, { "walk_step", 1 }, { "walk_end", 1 },
	{ "rmap_begin", 3 }, { "rmap_commit", 1 }, { "vm_create", 3 },
	{ "memslot", 5 }, { "guest_fault", 3 }, { "guest_fault_begin", 4 },
	{ "guest_fault_commit", 1 }, { "vm_destroy", 1 }, { "shm_mmap", 5 },
	{ "inval_hold", 1 }, { "inval_end", 1 }, { "unmap_mapping_begin", 3 },
	{ "frag_hold", 1 }, { "frag_end", 1 },
	{ "walk_pin", 1 }, { "collapse_hold", 1 }, { "collapse_end", 1 },
	{ "tlb_access", 4 },
	{ "mremap", 5 }, { "mremap_hold", 1 }, { "mremap_end", 1 },
	{ "khugepaged", 2 },
	{ "hugetlb_mmap", 5 }, { "unshare_hold", 1 }, { "unshare_end", 1 },
};

const char *const violation_names[V_NR] = {
	"none", "uaf-table", "double-free", "table-leak", "fragment-corrupt",
	"pgste-table-missing", "gmap-dangling", "lost-update", "freed-page-mapped",
	"stage2-block-illegal", "stage2-oversize", "stage2-stale",
	"stage2-after-release", "stage2-mmio-over-leaf", "kernel-bug", "gup-stale-pin", "stale-tlb", "engine-assert",
};

/* Each violation kind's rule, one sentence (docs/violations.md; SARIF shows it as the rule's text). */
const char *const violation_rules[V_NR] = {
	"No violation.",
	"An actor dereferenced a page-table page that was freed since it took the pointer.",
	"A table, fragment or data page was freed twice.",
	"After teardown and RCU drain, a table page is still in use.",
	"s390 fragment bookkeeping disagrees with the tables that exist.",
	"An mm with alloc_pgste owns a PTE table without PGSTE space.",
	"A gmap segment entry points at a PTE table that is freed, or no longer the host's table.",
	"An actor wrote into a page table that is no longer linked into its mm.",
	"A live host leaf maps a data page that was freed.",
	"A stage-2 leaf sits at a level that cannot hold a block of its size.",
	"A stage-2 leaf is larger than the host leaf backing it, or breaks its memslot.",
	"A stage-2 leaf maps a pfn that the host does not map at the corresponding hva.",
	"A guest fault installed into, or walked, a stage-2 whose root was freed.",
	"A guest fault wrote an MMIO SPTE over a present stage-2 leaf (no zap: the TDP MMU never expects that change).",
	"A kernel path reached a BUG_ON or VM_BUG_ON of the design it runs.",
	"A collapse copied and dropped a page a GUP-fast walker grabbed after the collapse isolated it (writes through the pin are lost).",
	"A cpu's TLB still translates to a freed page, or its walk cache still points into a freed page table: no flush reached it before the free.",
	"The engine's own consistency check failed (a bug in ptfuzz).",
};

/* The --steps events (enum event), by name. */
const char *const event_names[EV_NR] = {
	"table_alloc", "table_free", "table_rcu", "table_defer", "rcu_run", "leaf_set", "leaf_zap", "data_free",
	"upgrade", "gmap_link", "gmap_unlink", "notify", "exec_restart", "pgste", "s2_leaf", "s2_zap",
	"shm_collapse", "retract", "wait",
};

#define ALL { 0, 0, 0 }
#define S390_ONLY { 0, -1, -1 }
#define KVM_ARCHES { -1, 0, 0 }
#define ARM64_ONLY { -1, 0, -1 }
#define X86_64_ONLY { -1, -1, 0 }

const struct knob_def knob_defs[K_NR] = {
	[K_TABLE_FREE] = { "mm.table_free", { "rcu", "immediate" }, ALL,
		"immediate: tables removed from a live mm go straight back to the pool "
		"(no MMU_GATHER_RCU_TABLE_FREE); unsafe with lockless walkers and rmap" },
	[K_PMD_RECHECK] = { "mm.pmd_recheck", { "yes", "no" }, ALL,
		"no: rmap commit writes into whatever table it found at begin (pre-v6.5 "
		"shape); unsafe with collapse or table replacement" },
	[K_PGSTE_DECISION] = { "s390.pgste_decision",
		{ "elf-restart", "sysctl-only", "elf-no-restart", "convert-late" }, S390_ONLY,
		"sysctl-only: only vm.allocate_pgste counts (v4.5-4.11); elf-no-restart: "
		"the ELF flag is applied to the mm already built; convert-late: vm_create "
		"converts existing 2K tables to pgste tables in place (v3.15-v4.5)" },
	[K_PT_ALLOC] = { "s390.pt_alloc", { "fragments", "full-page", "fragments-always" },
		S390_ONLY,
		"full-page: every PTE table is a 4K page (v6.7+); fragments-always: even "
		"pgste mms get 2K fragments (a bug)" },
	[K_THP_IN_PGSTE] = { "s390.thp_in_pgste_mm", { "forbid", "allow" }, S390_ONLY,
		"allow: THP stays possible after has_pgste" },
	[K_DEFER_GMAP_UNLINK] = { "s390.defer_gmap_unlink", { "no", "yes" }, S390_ONLY,
		"yes: pte_free_defer also does gmap_unlink (the safer design discussed in review)" },
	[K_INVALIDATE_RETRY] = { "kvm.invalidate_retry", { "seq", "none", "seq-only" }, KVM_ARCHES,
		"none: commit installs without checking mmu_invalidate_seq/in_progress; seq-only: commit compares "
		"only mmu_invalidate_seq, not mmu_invalidate_in_progress (what mainline's in-progress check defends "
		"against: a fault that commits inside an invalidation window, between invalidate_range_start and _end)" },
	[K_FAULT_HOLDS_MM] = { "kvm.fault_holds_mm", { "yes", "no" }, KVM_ARCHES,
		"no: an in-flight guest fault does not keep exit_mmap from running" },
	[K_RELEASE_CHECK] = { "kvm.release_check", { "none", "root" }, KVM_ARCHES,
		"root: a commit that finds its VM released by mmu_notifier release (exit_mmap) retries (-11); "
		"a design v6.6 has on neither arch: arm64 frees the stage-2 root, x86 zaps every SPTE and keeps its "
		"roots valid, and both rely on the in-flight fault holding the mm (kvm.fault_holds_mm)" },
	[K_STAGE2_BLOCK_CHECK] = { "arm64.stage2_block_check",
		{ "pgtable", "can-map-block-size", "has-pmd", "has-pud", "none" }, ARM64_ONLY,
		"pgtable (v6.6): no stage-2 level test in user_mem_abort; kvm_pgtable_stage2_map maps the candidate "
		"range with the largest block each level allows (a PUD-size candidate on a 2-level stage 2 becomes "
		"512 level-2 blocks). The 2019 designs: can-map-block-size: a PUD block iff one start-level entry "
		"covers it; has-pmd: iff stage 2 has more than 2 levels; has-pud: iff it has 4; none: a PUD-size "
		"candidate is installed at the level of that size even when stage 2 starts below it" },
	[K_THP_SIZE] = { "arm64.thp_size", { "walk", "vma-naive" }, ARM64_ONLY,
		"vma-naive: a 4K candidate in a THP-eligible VMA is mapped as a PMD block "
		"without walking the host tables" },
	[K_PT_RECLAIM] = { "mm.pt_reclaim", { "no", "yes" }, ALL,
		"yes: MADV_DONTNEED frees the PTE tables it empties, through the RCU table-free "
		"path, as Linux 6.14+ CONFIG_PT_RECLAIM does (x86_64 in mainline; elsewhere a what-if)" },
	[K_HUGE_ZERO_WP] = { "mm.huge_zero_wp", { "split", "thp" }, ALL,
		"thp: a write fault on the huge zero page maps a new THP in its place (Linux 6.13+ "
		"do_huge_zero_wp_pmd), where v6.6 splits the PMD and copies one 4K page" },
	[K_COLLAPSE_RO] = { "mm.collapse_readonly", { "no", "yes" }, ALL,
		"yes: MADV_COLLAPSE also collapses a block with no writable PTE (only none, zero-page "
		"or COW-shared ones; Linux 6.18+ dropped SCAN_PAGE_RO), where v6.6 fails it with -22" },
	[K_MERGE_UNFAULTED] = { "mm.merge_unfaulted", { "no", "yes" }, ALL,
		"yes: a range with an anon_vma merges into an equal-flagged neighbour that has none (Linux "
		"6.16+ is_mergeable_anon_vma checks the source's anon_vma_chain), where v6.6 checks the "
		"neighbour's, empty when it was never faulted, and refuses" },
	[K_FILE_PMD_NOHUGE] = { "mm.file_pmd_nohuge", { "map", "ptes" }, ALL,
		"ptes: do_set_pmd refuses to map a PMD-size page-cache folio with a PMD leaf in a VMA with "
		"VM_NOHUGEPAGE, which then maps it with PTEs (2b0f922323cc, Linux 6.12 and 6.6.60+: \"s390 KVM "
		"cannot tolerate any PMD mappings\"); v6.6 maps it by a PMD leaf whatever the VMA's flags" },
	[K_COLLAPSE_PMD_ALLOC] = { "mm.collapse_pmd_alloc", { "no", "yes" }, ALL,
		"yes: MADV_COLLAPSE of a shmem block in a caller with no PMD table there allocates the tables and maps "
		"the PMD-size folio (seen on Linux 6.18 by crosscheck), where v6.6's collapse_pte_mapped_thp fails the "
		"block with SCAN_PMD_NULL (-22, after the cache was collapsed and the other mms retracted)" },
	[K_MEMSLOT_ACCESS_OK] = { "kvm.memslot_access_ok", { "sign", "user-ptr-max" }, X86_64_ONLY,
		"user-ptr-max: a memslot's hva range must end at or below TASK_SIZE_MAX (access_ok against USER_PTR_MAX, "
		"Linux 6.12's \"x86: fix user address masking non-canonical speculation issue\"; seen on 6.18 by "
		"crosscheck --kvm), where v6.6's valid_user_address only asks that the end be below 2^63" },
	[K_COLLAPSE_SUBBLOCK] = { "mm.collapse_subblock", { "einval", "ok" }, ALL,
		"ok: MADV_COLLAPSE of a range that holds no whole PMD block (inside one block) succeeds with nothing to "
		"do (seen on Linux 7.2 by crosscheck), where v6.6's madvise_collapse compares its count of collapsed "
		"blocks with a \"negative\" block count and returns -22" },
	[K_COLLAPSE_PMD_NONE] = { "mm.collapse_pmd_none", { "stop", "continue" }, ALL,
		"continue: MADV_COLLAPSE goes on to the next block after an anonymous block whose pmd entry is empty "
		"(seen on Linux 7.2 by crosscheck), where v6.6's madvise_collapse ends the walk on SCAN_PMD_NONE" },
	[K_FILE_RETRACT] = { "mm.file_retract", { "all", "caller" }, ALL,
		"caller: MADV_COLLAPSE of shmem retracts only the caller's own PTE table, under i_mmap_rwsem for write "
		"and mmap_write_trylock, frees it at once after tlb_remove_table_sync_one and answers with the "
		"caller's pmd (an empty one: -22), leaving other mms to khugepaged (Linux 6.1-6.4 retract_page_tables "
		"and collapse_and_free_pmd); v6.5+ retracts every mm and installs the caller's PMD leaf" },
	[K_COLLAPSE_GUP_SYNC] = { "mm.collapse_gup_sync", { "ipi", "none" }, ALL,
		"none: collapse_huge_page (and 6.1's collapse_and_free_pmd) clear the pmd and reuse or free the PTE "
		"table without tlb_remove_table_sync_one, so nothing waits for an IRQs-off GUP-fast walker inside it: "
		"the design before 2ba99c5e0881 \"mm/khugepaged: fix GUP-fast interaction by sending IPI\" (v6.1)" },
	[K_RETRACT_LOCKS] = { "mm.retract_locks", { "full", "pre-8d3c106e19e8" }, ALL,
		"pre-8d3c106e19e8: with mm.file_retract=caller (6.1's paths), collapse_pte_mapped_thp removes a PTE table "
		"under mmap_lock and the folio lock only, without i_mmap_rwsem for write, so a walk that holds only "
		"i_mmap_rwsem (unmap_mapping_range's zap) may be inside the table it frees: the design before 8d3c106e19e8 "
		"\"mm/khugepaged: take the right locks for page table retraction\" (v6.1). full: v6.1's locks (v6.6's "
		"paths, mm.file_retract=all, take i_mmap_rwsem for read and free through RCU)" },
	[K_THP_HW] = { "s390.thp_hw", { "edat1", "none" }, S390_ONLY,
		"none: has_transparent_hugepage() is false (a machine without EDAT-1, as QEMU's TCG s390x): hugepage_init "
		"marks THP unsupported, so hugepage_vma_check refuses every VMA: faults map 4K pages and MADV_COLLAPSE is "
		"-22 (madvise(MADV_HUGEPAGE) still sets VM_HUGEPAGE); edat1: THP as the model has it elsewhere" },
	[K_TASK_SIZE_MAX] = { "arm64.task_size_max", { "va-bits", "52" }, ARM64_ONLY,
		"52: TASK_SIZE_MAX (1 << VA_BITS, the build's CONFIG_ARM64_VA_BITS) is 2^52 while the kernel runs with "
		"48-bit VA (vabits_actual: no LPA2 / LVA), as Debian's 4K and 16K kernels since 6.12 are built (52-bit VA "
		"with 4K and 16K pages needs LPA2, Linux 6.9+); it bounds access_ok, so a memslot's hva range may end "
		"past 2^48. va-bits: TASK_SIZE_MAX is 2^va_bits, the build's VA size equal to the running one" },
	/* issue 19's KVM zoo rows (Z6-Z9) */
	[K_FAULT_SEQ_SNAPSHOT] = { "kvm.fault_seq_snapshot", { "before-unlock", "after-unlock" }, ARM64_ONLY,
		"after-unlock: user_mem_abort reads mmu_invalidate_seq (and faults the page in, __gfn_to_pfn_memslot) "
		"after mmap_read_unlock, so a munmap and mmap between vma_lookup and that read go unseen and the "
		"mapping size taken from the old VMA (a hugetlb block) is mapped over the new VMA's smaller page: the "
		"design before 13ec9308a857 \"KVM: arm64: Retry fault if vma_lookup() results become invalid\" (v6.3)" },
	[K_S2_UNMAP_YIELD_RECHECK] = { "kvm.s2_unmap_yield_recheck", { "yes", "no" }, ARM64_ONLY,
		"no: the stage-2 unmap (stage2_apply_range, unmap_stage2_range before it) that yields mmu_lock between "
		"chunks (cond_resched_rwlock_write) goes on from the table pointer it took before the yield, though "
		"kvm_free_stage2_pgd (mmu_notifier release from kvm_destroy_vm) freed the stage 2 meanwhile; yes rereads "
		"mmu->pgt each chunk and stops: the design before 0c428a6a9256 \"kvm: arm/arm64: Fix use after free of "
		"stage2 page table\" (v4.12)" },
	[K_INVALID_SLOT_FAULT] = { "kvm.invalid_slot_fault", { "retry", "mmio" }, X86_64_ONLY,
		"mmio: a guest fault on a memslot that a DELETE or MOVE has marked KVM_MEMSLOT_INVALID (between "
		"kvm_invalidate_memslot's swap and kvm_arch_flush_shadow_memslot) reads it as no memslot, KVM_PFN_NOSLOT, "
		"and installs an MMIO SPTE over the gfn's SPTE, present or not; retry returns RET_PF_RETRY: the design "
		"before e0c378684b65 \"KVM: x86/mmu: Retry page faults that hit an invalid memslot\" (v5.12)" },
	[K_USER_PT_WALK] = { "kvm.user_pt_walk", { "irqs-off", "unprotected" }, ARM64_ONLY,
		"unprotected: get_user_mapping_size walks the host tables without local_irq_save (the model's walk is "
		"one step inside the commit, so that half cannot show) and asserts the leaf it finds "
		"(VM_BUG_ON(!(pte & PTE_VALID))) where irqs-off replays the fault (-EAGAIN): the design before "
		"e86fc1a3a3e9 \"KVM: arm64: Disable interrupts while walking userspace PTs\" (v6.3); v6.6's retry check "
		"runs first, so it shows only with kvm.invalidate_retry=none" },
	[K_FRAG_RELEASE] = { "s390.frag_release", { "fixed", "pre-c2c224932fd0" }, S390_ONLY,
		"pre-c2c224932fd0: page_table_free of a 2K half clears only the half's allocated bit (atomic_xor_bits "
		"1U << bit) before its list work under mm->context.lock, so a concurrent __tlb_remove_table (the RCU "
		"callback of the other half) can free the 4K page before the list_del: the design before c2c224932fd0 "
		"\"s390/mm: fix 2KB pgtable release race\" (v5.17), whose page_table_free also marks the half pending "
		"(0x11) until the list work is done" },
	[K_GUP_FAST_PMD_RECHECK] = { "gup.fast_pmd_recheck", { "yes", "no" }, ALL,
		"no: GUP-fast (gup_pte_range) rechecks only the pte after try_grab_folio, not that the pmd still "
		"points at the PTE table it walked, so a pin taken after collapse_huge_page cleared the pmd and isolated "
		"the page succeeds and the collapse copies the page away from it: the design before 70cbc3cc78a9 "
		"\"mm: gup: fix the fast GUP race against THP collapse\" (v6.0). Reachable with mm.collapse_gup_sync=none "
		"(before v6.1), whose collapse does not wait for the IRQs-off walker" },
	[K_TLB_GATHER] = { "mm.tlb_gather", { "gather", "none" }, ALL,
		"none: a zap (munmap, MADV_DONTNEED, exit) frees each page and table as it clears it and flushes the "
		"range once at the end, with no mmu_gather to hold the frees until after the flush: another cpu's "
		"TLB or walk cache may then still translate to a page or into a table already given back. The design "
		"mmu_gather (tlb_gather_mmu / tlb_finish_mmu, tlb_remove_page, tlb_remove_table) exists to exclude; "
		"not a Linux release" },
	[K_MREMAP_MOVE_PGT_RMAP] = { "mremap.move_pgt_rmap", { "write", "read" }, KVM_ARCHES,
		"read: mremap's whole-table moves (move_normal_pmd / move_normal_pud) take the rmap locks (anon_vma, "
		"i_mmap_rwsem, for write) only when copy_vma asked for them (need_rmap_locks: never for a new VMA), so "
		"an rmap walker holding them for read is not excluded: the design before 97113eb39fa7 \"mm/mremap: hold "
		"the rmap lock in write mode when moving page table entries\" (v5.14, CVE-2022-41222). "
		"x86_64 and arm64 only: s390 has no HAVE_MOVE_PMD" },
	[K_MREMAP_MULTI_VMA] = { "mremap.move_multi_vma", { "no", "yes" }, ALL,
		"yes: a move that does not resize (MREMAP_FIXED, old_len == new_len) moves every VMA in the old range, "
		"one by one, the gaps between them kept (remap_move, \"mm/mremap: permit mremap() move of multiple "
		"VMAs\", Linux 6.17); v6.6 moves one VMA and fails (-14) a range that runs past it. With it come 6.17's "
		"earlier checks: the new range's (check_mremap_params) before the VMA lookup, and a move's or growth's "
		"checks against the VMA (check_prep_vma) before mremap_to unmaps anything" },
	[K_COLLAPSE_FILE_NOTIFY] = { "mm.collapse_file_notify", { "start-end", "none" }, ALL,
		"none: khugepaged's file paths (collapse_pte_mapped_thp, retract_page_tables; 6.1's collapse_and_free_pmd) "
		"clear the PTEs and the pmd and free the PTE table without mmu_notifier_invalidate_range_start/end, so a "
		"secondary MMU (KVM's stage 2) keeps mapping pages the mm no longer maps: the design before f268f6cf875f "
		"\"mm/khugepaged: invoke MMU notifiers in shmem/file collapse paths\" (v6.1). It shows where the pmd is "
		"left empty: khugepaged's collapse (the khugepaged operation), not MADV_COLLAPSE, which maps the folio by "
		"a PMD again at once" },
	[K_HUGETLB_UNSHARE_FLUSH] = { "hugetlb.unshare_flush", { "fixed", "before-a4a118f2eead" }, KVM_ARCHES,
		"before-a4a118f2eead: __unmap_hugepage_range does not flush the TLB after a huge_pmd_unshare (no "
		"tlb_flush_pmd_range, no force_flush): the unmapping mm's entries for the shared PMD table stay cached "
		"until the caller's tlb_finish_mmu, after i_mmap_rwsem is dropped, so the last other sharer can free the "
		"PMD table (and the page be reused) while this mm's TLB still walks through it: the design from "
		"24669e58477e (v3.6) until a4a118f2eead \"hugetlbfs: flush TLBs correctly after huge_pmd_unshare\" (v5.16). "
		"s390 shares no PMD tables" },
};
