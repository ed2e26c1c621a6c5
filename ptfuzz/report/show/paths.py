"""The kernel functions of the paths an operation takes, for the op list and the violation panel."""
from __future__ import annotations

from ...names import EVENT_NAMES
from ...trace import op_to_list
from ..render import NO_OWNER

# ---------------------------------------------------------------------------------------------------------
# The kernel functions of the paths an operation takes (v6.6 names; the model's C functions carry the same
# names, docs/model-notes.md has the table). One place: the op list, the violation panel and the tests use it.

KERNEL_PATHS: dict[str, dict[str, list[str]]] = {
    # operation (or "madvise/ADVICE"): arch ("*" for all) -> the entry path
    "sysctl_allocate_pgste": {"*": ["proc_dointvec (vm.allocate_pgste)"]},
    "exec": {"*": ["do_execveat_common", "bprm_mm_init", "setup_arg_pages", "load_elf_binary", "exec_mmap"],
             "s390": ["do_execveat_common", "bprm_mm_init", "init_new_context", "setup_arg_pages",
                      "load_elf_binary", "arch_elf_pt_proc (PT_S390_PGSTE)", "exec_mmap"]},
    "fork": {"*": ["copy_process", "dup_mmap", "copy_page_range", "copy_pte_range / copy_huge_pmd"]},
    "exit": {"*": ["do_exit", "exit_mm", "mmput", "exit_mmap", "mmu_notifier_release", "unmap_vmas",
                   "free_pgtables"]},
    "mmap": {"*": ["do_mmap", "mmap_region", "vma_merge"],
             "s390": ["do_mmap", "arch_get_unmapped_area (crst_table_upgrade)", "mmap_region", "vma_merge"]},
    "shm_mmap": {"*": ["do_mmap", "mmap_region", "shmem_mmap"]},
    "hugetlb_mmap": {"*": ["ksys_mmap_pgoff", "do_mmap", "mmap_region", "hugetlbfs_file_mmap",
                           "hugetlb_reserve_pages (hugetlb_vma_lock_alloc)"]},
    "unshare_hold": {"*": ["unmap_region", "unmap_vmas", "__unmap_hugepage_range_final", "huge_pmd_unshare",
                           "i_mmap_unlock_write",
                           "(the next munmap that unshared a hugetlb PMD table stops here, before free_pgtables)"]},
    "unshare_end": {"*": ["free_pgtables", "tlb_finish_mmu"]},
    "munmap": {"*": ["do_vmi_munmap", "unmap_region", "unmap_vmas", "free_pgtables", "pte_free_tlb"]},
    "madvise/0": {"*": ["do_madvise", "madvise_walk_vmas", "madvise_dontneed_single_vma",
                        "zap_page_range_single"]},
    "madvise/1": {"*": ["do_madvise", "madvise_walk_vmas", "hugepage_madvise", "madvise_update_vma"]},
    "madvise/2": {"*": ["do_madvise", "madvise_walk_vmas", "hugepage_madvise", "madvise_update_vma"]},
    "madvise/3": {"*": ["do_madvise", "madvise_collapse", "hpage_collapse_scan_pmd", "collapse_huge_page",
                        "pgtable_trans_huge_deposit"]},
    "fault": {"*": ["handle_mm_fault", "__handle_mm_fault"]},
    "split": {"*": ["split_huge_pmd", "__split_huge_pmd", "pgtable_trans_huge_withdraw"]},
    "rcu_lock": {"*": ["rcu_read_lock"]},
    "rcu_unlock": {"*": ["rcu_read_unlock"]},
    "rcu_gp": {"*": ["synchronize_rcu", "rcu_do_batch"]},
    "walk_begin": {"*": ["get_user_pages_fast", "lockless_pages_from_mm", "local_irq_save"],
                   "s390": ["get_user_pages_fast", "gup_fast_permitted", "lockless_pages_from_mm",
                            "local_irq_save"]},
    "walk_step": {"*": ["gup_pgd_range \u2026 gup_pte_range (one entry per step)"]},
    "walk_end": {"*": ["local_irq_restore"]},
    "rmap_begin": {"*": ["try_to_unmap", "rmap_walk_anon", "page_vma_mapped_walk"]},
    "unmap_mapping_begin": {"*": ["unmap_mapping_range", "zap_page_range_single", "zap_pte_range (the pmd read)"]},
    "rmap_commit": {"*": ["page_vma_mapped_walk (pmd recheck under the PTL)", "try_to_unmap_one",
                          "ptep_clear_flush"]},
    "vm_create": {"s390": ["kvm_arch_init_vm", "s390_enable_sie", "thp_split_mm", "gmap_create"],
                  "arm64": ["kvm_arch_init_vm", "kvm_init_stage2_mmu", "kvm_pgtable_stage2_init"],
                  "x86_64": ["kvm_arch_init_vm", "kvm_mmu_init_vm", "kvm_tdp_mmu_alloc_root"]},
    "memslot": {"s390": ["__kvm_set_memory_region", "kvm_set_memslot", "kvm_arch_prepare_memory_region",
                         "kvm_arch_commit_memory_region (gmap_map_segment / gmap_unmap_segment)"],
                "*": ["__kvm_set_memory_region", "kvm_set_memslot", "kvm_invalidate_memslot",
                      "kvm_arch_flush_shadow_memslot", "kvm_arch_prepare_memory_region"]},
    "guest_fault": {"s390": ["kvm_s390_handle_dat_fault", "gmap_fault", "fixup_user_fault", "__gmap_link"],
                    "arm64": ["kvm_handle_guest_abort", "user_mem_abort", "__gfn_to_pfn_memslot",
                              "transparent_hugepage_adjust", "kvm_pgtable_stage2_map"],
                    "x86_64": ["kvm_tdp_page_fault", "kvm_faultin_pfn", "kvm_mmu_hugepage_adjust",
                               "kvm_tdp_mmu_map"]},
    "guest_fault_begin": {"s390": ["kvm_s390_handle_dat_fault", "gmap_fault", "fixup_user_fault"],
                          "arm64": ["kvm_handle_guest_abort", "user_mem_abort", "mmu_invalidate_seq (snapshot)",
                                    "__gfn_to_pfn_memslot"],
                          "x86_64": ["kvm_tdp_page_fault", "kvm_faultin_pfn", "mmu_invalidate_seq (snapshot)"]},
    "guest_fault_commit": {"s390": ["__gmap_link"],
                           "arm64": ["user_mem_abort (mmu_lock)", "mmu_invalidate_retry",
                                     "transparent_hugepage_adjust", "get_user_mapping_size",
                                     "kvm_pgtable_stage2_map"],
                           "x86_64": ["kvm_tdp_page_fault (mmu_lock)", "is_page_fault_stale",
                                      "kvm_mmu_hugepage_adjust", "host_pfn_mapping_level", "kvm_tdp_mmu_map"]},
    "inval_hold": {"*": ["mmu_notifier_invalidate_range_start", "kvm_mmu_notifier_invalidate_range_start",
                         "kvm_mmu_invalidate_begin", "kvm_unmap_gfn_range",
                         "(the next notifying host change stops here, before _end)"]},
    "inval_end": {"*": ["mmu_notifier_invalidate_range_end", "kvm_mmu_notifier_invalidate_range_end",
                        "kvm_mmu_invalidate_end"]},
    "frag_hold": {"s390": ["page_table_free", "spin_lock_bh(&mm->context.lock)", "atomic_xor_bits",
                           "(the next page_table_free of a 2K half stops here, before its list work)"]},
    "walk_pin": {"*": ["gup_pte_range", "try_grab_folio", "pte_val(pte) != pte_val(*ptep)",
                       "pmd_val(pmd) != pmd_val(*pmdp) (gup.fast_pmd_recheck=yes)"]},
    "collapse_hold": {"*": ["collapse_huge_page", "pmdp_collapse_flush", "__collapse_huge_page_isolate",
                            "(the next anonymous collapse stops here, before __collapse_huge_page_copy)"]},
    "tlb_access": {"*": ["(hardware) TLB lookup", "page-table walk from the walk cache or the pgd",
                         "TLB and walk-cache fill"]},
    "collapse_end": {"*": ["__collapse_huge_page_copy", "pgtable_trans_huge_deposit", "set_pmd_at",
                           "mmap_write_unlock"]},
    "mremap": {"*": ["SYSCALL mremap", "mremap_to", "move_vma", "copy_vma", "move_page_tables",
                     "move_pgt_entry (move_normal_pmd / move_normal_pud / move_huge_pmd)", "move_ptes",
                     "flush_tlb_range", "do_vmi_munmap"]},
    "mremap_hold": {"*": ["move_vma", "(the next move stops here, after move_page_tables, before do_vmi_munmap)"]},
    "mremap_end": {"*": ["do_vmi_munmap (the old range)", "mmap_write_unlock"]},
    "khugepaged": {"*": ["khugepaged_scan_mm_slot", "hpage_collapse_scan_file", "collapse_file",
                         "retract_page_tables", "collapse_pte_mapped_thp (install_pmd=false)",
                         "mmu_notifier_invalidate_range_start/end (mm.collapse_file_notify=start-end)"]},
    "frag_end": {"s390": ["page_table_free (list_add / list_del)", "spin_unlock_bh(&mm->context.lock)",
                          "atomic_xor_bits (fixed: the pending bit)", "__free_page"]},
    "vm_destroy": {"s390": ["kvm_arch_destroy_vm", "gmap_remove", "gmap_free"],
                   "arm64": ["kvm_arch_destroy_vm", "kvm_free_stage2_pgd", "kvm_pgtable_stage2_destroy"],
                   "x86_64": ["kvm_arch_destroy_vm", "kvm_mmu_uninit_tdp_mmu"]},
}

# What an engine event says the path went through: event name -> arch ("*" for all) -> function.
EVENT_PATHS: dict[str, dict[str, str]] = {
    "table_free": {"*": "pte_free_tlb / tlb_remove_table", "s390": "page_table_free"},
    "table_rcu": {"*": "tlb_remove_table (call_rcu)", "s390": "page_table_free_rcu"},
    "table_defer": {"*": "pte_free_defer"},
    "rcu_run": {"*": "tlb_remove_table_rcu", "s390": "__tlb_remove_table"},
    "leaf_zap": {"*": "zap_pte_range / zap_huge_pmd"},
    "data_free": {"*": "folio_put"},
    "upgrade": {"s390": "crst_table_upgrade"},
    "gmap_link": {"s390": "__gmap_link"},
    "gmap_unlink": {"s390": "gmap_unlink"},
    "notify": {"*": "mmu_notifier_invalidate_range_start", "s390": "gmap_unlink"},
    "exec_restart": {"s390": "load_elf_binary restart (TIF_PGSTE)"},
    "pgste": {"s390": "s390_enable_sie (page_table_realloc)"},
    "s2_leaf": {"arm64": "stage2_map_walker_try_leaf", "x86_64": "tdp_mmu_map_handle_target_level"},
    "s2_zap": {"arm64": "stage2_unmap_walker", "x86_64": "tdp_mmu_zap_leafs"},
    "shm_collapse": {"*": "collapse_file"},
    "retract": {"*": "retract_page_tables"},
}
# Table allocation by (arch family, level name): the kernel allocator that runs.
ALLOC_PATHS: dict[str, str] = {
    "pgd": "pgd_alloc", "p4d": "__p4d_alloc", "pud": "__pud_alloc", "pmd": "__pmd_alloc",
    "pte": "__pte_alloc (pte_alloc_one)", "region-first": "crst_table_alloc", "region-second": "crst_table_alloc",
    "region-third": "crst_table_alloc", "segment": "__pmd_alloc (crst_table_alloc)",
    "page": "__pte_alloc (page_table_alloc)",
    "gmap": "gmap_alloc_table", "arm64-stage2": "stage2_map_walk_table_pre (kvm_mmu_memory_cache_alloc)",
    "x86_64-stage2": "tdp_mmu_alloc_sp",
}
# Leaves installed, by whether the level holds PTEs, PMD or PUD leaves.
LEAF_PATHS: dict[str, str] = {"pte": "set_pte_at", "pmd": "set_pmd_at", "pud": "set_pud_at"}

# What the oracle that fired checks (the model's own function, named like the kernel's invariants).
ORACLES: dict[str, str] = {
    "uaf-table": "tref_deref: the table's generation changed since the actor took the pointer",
    "double-free": "block_release / s390_pte_free: freed while not allocated",
    "table-leak": "ptf_finish: a table survived teardown and RCU drain",
    "fragment-corrupt": "s390_frag_check: the fragment list against the tables that exist",
    "pgste-table-missing": "s390_frag_check: a 2K table in an mm with alloc_pgste",
    "gmap-dangling": "gmap_check: each linked guest segment must share the host's current PTE table",
    "lost-update": "entry_write: a write into a table no longer linked into its mm",
    "freed-page-mapped": "data_put: a page freed while live leaves map it",
    "stage2-block-illegal": "s2_check_install: block size against the stage-2 levels",
    "stage2-oversize": "s2_check_install: the block against the host leaf and the memslot",
    "stage2-stale": "s2_check_install / kvm_coherence_check: the pfn the host maps at the hva",
    "stage2-after-release": "kvm_stage2_fault_stale: the stage-2 root the fault took is gone",
    "gup-stale-pin": "collapse_huge_page_copy: a page it copies and drops is held by a GUP-fast walker's grab",
    "stale-tlb": "tlb_check / tlb_access: a cached translation to a freed page or walk entry into a freed table",
    "engine-assert": "the engine's own consistency checks",
}

# Where a design variant changes the path: (operation, knob, value) -> (function, what the variant does there).
KNOB_PATHS: dict[tuple[str, str, str], tuple[str | tuple[str, ...], str]] = {
    ("guest_fault_commit", "kvm.invalidate_retry", "none"): (("mmu_invalidate_retry", "is_page_fault_stale"),
                                                             "not checked"),
    ("guest_fault", "kvm.invalidate_retry", "none"): ("transparent_hugepage_adjust", "no mmu_invalidate_retry"),
    ("guest_fault_commit", "kvm.invalidate_retry", "seq-only"): (("mmu_invalidate_retry", "is_page_fault_stale"),
                                                                 "mmu_invalidate_seq only, not in_progress"),
    ("guest_fault", "kvm.invalidate_retry", "seq-only"): ("transparent_hugepage_adjust",
                                                          "mmu_invalidate_seq only, not in_progress"),
    ("guest_fault_commit", "arm64.thp_size", "vma-naive"): ("get_user_mapping_size", "skipped: the VMA decides"),
    ("guest_fault", "arm64.thp_size", "vma-naive"): ("transparent_hugepage_adjust", "the VMA decides"),
    ("guest_fault", "arm64.stage2_block_check", "none"): ("kvm_pgtable_stage2_map", "block at the size's level"),
    ("rmap_commit", "mm.pmd_recheck", "no"): ("page_vma_mapped_walk (pmd recheck under the PTL)",
                                              "no pmd recheck"),
    ("munmap", "mm.table_free", "immediate"): ("pte_free_tlb", "freed at once, no RCU"),
    ("exit", "mm.table_free", "immediate"): ("free_pgtables", "tables freed at once, no RCU"),
    ("madvise/3", "s390.defer_gmap_unlink", "yes"): ("collapse_huge_page", "pte_free_defer unlinks the gmap"),
}

ZERO_BASE = 1 << 34  # ptf.h ZERO_PFN_BASE: the huge zero page; the 4K zero page(s) follow at + 2^18
LINK_STATES = ("private", "linked", "unlinked", "deposited")
HALF_STATES = ("free", "allocated", "pending")


def kernel_path(arch: str, row, events: list[tuple], geo: list[tuple] | None = None, knobs: dict | None = None,
                walker_level: int | None = None) -> list[str]:
    """The kernel functions an operation went through: its entry path (as the knobs change it), then what
    its events show. walker_level: the level a walk_step reads (the gup_*_range function that runs)."""
    name, *args = op_to_list(row)
    key = f"madvise/{args[3]}" if name == "madvise" else name
    paths = KERNEL_PATHS.get(key, {})
    out = list(paths.get(arch) or paths.get("*") or [])
    if key == "madvise/3" and any(EVENT_NAMES[ev[1]] == "shm_collapse" for ev in events if ev[1] < len(EVENT_NAMES)):
        out = [*out[:2], "hpage_collapse_scan_file"]  # a shmem block: collapse_file, not collapse_huge_page
    if name == "walk_step" and walker_level is not None and geo:
        generic = ("pgd", "p4d", "pud", "pmd", "pte")[walker_level] if walker_level < 5 else "pte"
        out = [f"gup_{generic}_range ({geo[walker_level][0]} entry)"]
    for (op_key, knob, value), (fns, note) in KNOB_PATHS.items():
        if op_key != key or (knobs or {}).get(knob) != value:
            continue
        for fn in (fns,) if isinstance(fns, str) else fns:
            if fn in out:
                out[out.index(fn)] = f"{fn} [{note}: {knob}={value}]"
    level_names = [g[0] for g in geo] if geo else None
    for ev in events:
        ev_name = EVENT_NAMES[ev[1]] if ev[1] < len(EVENT_NAMES) else ""
        fn = None
        if ev_name == "table_alloc":
            if ev[4] == NO_OWNER:
                fn = ALLOC_PATHS["gmap" if arch == "s390" else f"{arch}-stage2"]
            elif level_names and 0 <= ev[2] < len(level_names):
                fn = ALLOC_PATHS.get(level_names[ev[2]])
        elif ev_name == "leaf_set" and geo and 0 <= ev[2] < len(geo):
            page = 1 << geo[-1][1]
            size = 1 << geo[ev[2]][1]  # a PTE, a PMD-size leaf (PTRS_PER_PTE pages) or bigger (PUD)
            kind = "pte" if size == page else "pmd" if size == page * geo[-1][2] else "pud"
            fn = LEAF_PATHS[kind]
            if name in ("fault", "guest_fault", "guest_fault_begin"):
                fn = {"pte": "do_anonymous_page / do_wp_page", "pmd": "do_huge_pmd_anonymous_page",
                      "pud": "hugetlb_fault"}[kind]
        elif ev_name == "table_rcu" and "pte_free_defer" in out:
            fn = "call_rcu (pte_free_now)"  # pte_free_defer's grace period: not page_table_free_rcu (no gmap_unlink)
        else:
            table = EVENT_PATHS.get(ev_name, {})
            fn = table.get(arch) or table.get("*")
        if fn and fn not in out:
            out.append(fn)
    return out
