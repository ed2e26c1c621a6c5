"""The s390 engine through the Python API: geometry, fragments, RCU, operation results and every detector."""
import pytest

from conftest import A, G, K, M, kind, results, run
from ptfuzz.engine import stage1_geometry


def test_geometry_matches_the_kernel():
    g = stage1_geometry("s390", {})
    names = [lv["name"] for lv in g["per_level"]]
    assert names == ["region-first", "region-second", "region-third", "segment", "page"]
    assert [lv["shift"] for lv in g["per_level"]] == [53, 42, 31, 20, 12]
    assert [lv["table_bytes"] for lv in g["per_level"]] == [16384] * 4 + [2048]
    assert g["per_level"][-1]["entries"] == 256
    assert g["leaf_sizes"] == [2 * G, 1 * M, 4 * K]


def test_exec_builds_three_levels_and_the_stack():
    r = run([["exec", 1, -1]], teardown=False)
    allocs = [e for e in r.events if e[1] == 0]  # table_alloc: region-third, segment, page
    assert [e[2] for e in allocs] == [2, 3, 4]
    assert r.stats["data_pages_peak"] == 1


def test_two_pte_tables_share_one_page():
    r = run([["exec", 1, -1], ["mmap", 1, A, 2 * M, 0], ["fault", 1, A, 1], ["fault", 1, A + M, 1]], teardown=False)
    # region-third (16K) + segment x2 (32K) + one page holding three 2K tables... the stack's half and A's half share
    frag_allocs = [e for e in r.events if e[1] == 0 and e[2] == 4]
    pages = {e[3] >> 12 for e in frag_allocs}
    assert len(frag_allocs) == 3 and len(pages) == 2


def test_full_page_knob_gives_every_table_its_own_page():
    r = run([["exec", 1, -1], ["mmap", 1, A, 2 * M, 0], ["fault", 1, A, 1], ["fault", 1, A + M, 1]],
            {"s390.pt_alloc": "full-page"}, teardown=False)
    frag_allocs = [e for e in r.events if e[1] == 0 and e[2] == 4]
    assert len({e[3] >> 12 for e in frag_allocs}) == 3


def test_pgste_mm_gets_4k_tables_with_pgstes():
    r = run([["exec", 1, 0], ["mmap", 1, A, M, 0], ["fault", 1, A, 1]], teardown=False)
    assert [e[5] for e in r.events if e[1] == 0 and e[2] == 4][-1] == 4097  # 4K with PGSTEs


def test_freed_half_is_not_reused_before_a_grace_period():
    ops = [["exec", 1, -1], ["mmap", 1, A, 4 * M, 0], ["fault", 1, A, 1], ["fault", 1, A + M, 1],
           ["munmap", 1, A + M, M], ["fault", 1, A + 2 * M, 1]]
    r = run(ops, teardown=False)
    allocs = [e[3] for e in r.events if e[1] == 0 and e[2] == 4]
    freed = [e[2] for e in r.events if e[1] == 2]  # queued for RCU
    assert allocs[-1] not in freed
    r2 = run(ops[:5] + [["rcu_gp"], ops[5]], teardown=False)
    allocs2 = [e[3] for e in r2.events if e[1] == 0 and e[2] == 4]
    assert allocs2[-1] == allocs2[2]  # the half came back after the grace period


def test_rcu_callbacks_wait_for_every_reader():
    ops = [["exec", 1, -1], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["rcu_lock", 2], ["munmap", 1, A, M],
           ["rcu_gp"]]
    r = run(ops, teardown=False)
    assert not [e for e in r.events if e[1] == 4]  # no callback ran
    r = run(ops + [["rcu_unlock", 2], ["rcu_gp"]], teardown=False)
    assert [e for e in r.events if e[1] == 4 and e[0] == 7]


def test_results_are_errnos_not_violations():
    r = run([["walk_step", 1], ["exec", 1, -1], ["fault", 1, A, 1], ["mmap", 1, A + 1, M, 0],
             ["mmap", 1, A, M, 6], ["munmap", 9, A, M], ["vm_create", 0, 1, 0], ["mmap", 1, A, M, 2],
             ["fault", 1, A, 1], ["split", 1, A], ["exec", 1, 5 - 5], ["rcu_unlock", 0]])
    assert kind(r) is None
    assert results(r) == [-22, 0, -14, -22, -22, -3, -22, 0, 0, -22, 0, -22]


def test_exec_restart_on_pgste_header():
    r = run([["exec", 1, 0], ["vm_create", 0, 1, 0]])
    assert results(r) == [0, 0]
    assert [e for e in r.events if e[1] == 12]  # exec_restart


def test_sysctl_only_ignores_the_header():
    r = run([["exec", 1, 0], ["vm_create", 0, 1, 0], ["sysctl_allocate_pgste", 1], ["exec", 2, 1],
             ["vm_create", 1, 2, 0]], {"s390.pgste_decision": "sysctl-only"})
    assert results(r) == [0, -22, 0, 0, 0] and kind(r) is None


def test_fork_inherits_alloc_pgste():
    r = run([["exec", 1, 0], ["fork", 1, 2], ["vm_create", 0, 2, 0], ["exec", 3, 1], ["fork", 3, 4],
             ["vm_create", 1, 4, 0]])
    assert results(r) == [0, 0, 0, 0, 0, -22]


def test_upgrade_to_four_and_five_levels():
    r = run([["exec", 1, -1], ["mmap", 1, 1 << 42, M, 0], ["mmap", 1, 1 << 60, M, 0], ["fault", 1, 1 << 60, 1]],
            teardown=False)
    ups = [e for e in r.events if e[1] == 8]
    assert [e[3] for e in ups] == [4, 5]


def test_thp_fault_split_and_collapse():
    r = run([["exec", 1, -1], ["mmap", 1, A, 2 * M, 1], ["fault", 1, A, 1], ["split", 1, A],
             ["madvise", 1, A, 2 * M, 3]], teardown=False)
    sets = [(e[0], e[2]) for e in r.events if e[1] == 5]
    assert (2, 3) in sets and (3, 4) in sets and (4, 3) in sets  # huge, split to PTEs, collapsed back


def test_thp_hw_none_maps_4k_and_refuses_collapse():
    ops = [["exec", 1, -1], ["mmap", 1, A, 2 * M, 1], ["fault", 1, A, 1], ["madvise", 1, A, M, 3],
           ["madvise", 1, A + 4 * M, M, 1]]
    r = run(ops, teardown=False)
    assert results(r) == [0, 0, 0, 0, -12] and any(e[1] == 5 and e[2] == 3 for e in r.events)  # a segment leaf
    r = run(ops, knobs={"s390.thp_hw": "none"}, teardown=False)
    # no EDAT-1: the fault maps a 4K page (no segment leaf), MADV_COLLAPSE -22; MADV_HUGEPAGE still checks the range
    assert results(r) == [0, 0, 0, -22, -12] and not any(e[1] == 5 and e[2] == 3 for e in r.events)


def test_vm_create_splits_thp_and_refuses_collapse():
    r = run([["exec", 1, 0], ["mmap", 1, A, 2 * M, 1], ["fault", 1, A, 1], ["vm_create", 0, 1, 0],
             ["madvise", 1, A, 2 * M, 1], ["madvise", 1, A, 2 * M, 3], ["fault", 1, A + M, 1]])
    assert results(r) == [0, 0, 0, 0, 0, -22, 0]
    assert [e for e in r.events if e[0] == 3 and e[1] == 5 and e[2] == 4]  # split by s390_enable_sie
    assert not [e for e in r.events if e[0] == 6 and e[1] == 5 and e[2] == 3]  # no THP after has_pgste


def test_gmap_link_and_unlink():
    r = run([["exec", 1, 0], ["mmap", 1, A, M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, M],
             ["guest_fault", 0, 0, 1], ["munmap", 1, A, M]], teardown=False)
    assert [e for e in r.events if e[1] == 9 and e[0] == 4]
    assert [e for e in r.events if e[1] == 10 and e[0] == 5]
    assert kind(r) is None


def test_memslot_rules():
    """__kvm_set_memory_region, then s390's kvm_arch_prepare_memory_region: hva and size 1 MiB aligned, the end
    below mem_limit = TASK_SIZE_MAX; the gpa alignment is not checked (v1: -22 for all three, a 2^42 limit)."""
    r = run([["exec", 1, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, M], ["memslot", 0, 1, 0, A, M],
             ["memslot", 0, 2, M, A + 4 * K, M], ["memslot", 0, 2, M, A, M + 4 * K], ["memslot", 0, 3, 1 << 42, A, M],
             ["memslot", 0, 4, 16 * M + 4 * K, A, M], ["memslot", 0, 5, (1 << 64) - 2 * M, A, M],
             ["memslot", 0, 6, (1 << 64) - M, A, M], ["memslot", 0, 0, 0, 0, 0], ["memslot", 0, 0, 0, 0, 0],
             ["memslot", 5, 0, 0, A, M]])
    # a page-aligned end that does not wrap is at most TASK_SIZE_MAX: only the wrap check (-22) is left
    assert results(r) == [0, 0, 0, -17, -22, -22, 0, 0, 0, -22, 0, -22, -2]


# ---- the gmap as v6.6 builds it (kvm_arch_init_vm, gmap_alloc, __gmap_link, gmap_map_segment) ----

GMAP = (1 << 64) - 1  # the owner of gmap tables in events (mm -1)


def gmap_tables(r, op, ev=0):
    return [e[2] for e in r.events if e[0] == op and e[1] == ev and e[4] == GMAP]


def test_gmap_is_five_levels_and_vm_destroy_frees_every_table():
    # mem_limit = TASK_SIZE_MAX, gmap_create(mm, mem_limit - 1): a region-first root; the first link allocates
    # region-second, region-third and segment tables (gmap_alloc_table), a second link in the same region-third
    # range none; gmap_free returns the four CRSTs
    ops = [["exec", 1, 0], ["mmap", 1, A, 4 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, 4 * M],
           ["guest_fault", 0, 0, 1], ["guest_fault", 0, 3 * M, 1], ["vm_destroy", 0]]
    r = run(ops, teardown=False)
    assert results(r) == [0] * 7 and kind(r) is None
    assert gmap_tables(r, 2) == [0] and gmap_tables(r, 4) == [1, 2, 3] and gmap_tables(r, 5) == []
    assert sorted(gmap_tables(r, 6, ev=1)) == [0, 1, 2, 3]
    r = run(ops[:-1])  # teardown destroys the VM: no table is left behind
    assert kind(r) is None and r.stats["tables_allocated"] == r.stats["tables_freed"]


def test_gmap_link_tables_stay_when_the_host_pmd_is_large():
    # __gmap_link allocates the gmap's tables before it looks at the host pmd, and a large one is -EFAULT
    ops = [["exec", 1, 0], ["vm_create", 0, 1, 0], ["mmap", 1, A, 2 * M, 2], ["memslot", 0, 0, 0, A, 2 * M],
           ["guest_fault", 0, 0, 1]]
    r = run(ops, teardown=False)
    assert results(r) == [0, 0, 0, 0, -14] and gmap_tables(r, 4) == [1, 2, 3]


def test_guest_faults_translate_through_guest_to_host():
    # kvm_arch_prepare_memory_region checks hva and size (1 MiB), not the gpa; kvm_arch_commit_memory_region's
    # gmap_map_segment then fails on the gpa and the error is dropped: the slot exists, __gmap_translate -EFAULT
    ops = [["exec", 1, 0], ["mmap", 1, A, 4 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 4 * K, A, M],
           ["guest_fault", 0, 4 * K, 1], ["guest_fault", 0, 64 * K, 0],
           # KVM_MR_MOVE to an aligned gpa: gmap_unmap_segment of the old, misaligned range fails, so nothing is mapped
           ["memslot", 0, 0, 2 * M, A, M], ["guest_fault", 0, 2 * M, 1],
           ["memslot", 0, 0, 0, 0, 0], ["memslot", 0, 0, 2 * M, A, M], ["guest_fault", 0, 2 * M + 8 * K, 1],
           ["memslot", 0, 1, 8 * M + 4 * K, A + M, 3 * M], ["guest_fault", 0, 9 * M, 1]]
    r = run(ops)
    assert results(r) == [0, 0, 0, 0, -14, -14, 0, -14, 0, 0, 0, 0, -14] and kind(r) is None
    links = [(e[0], e[2], e[3]) for e in r.events if e[1] == 9]
    assert links == [(10, 2 * M, A)]  # the guest segment at 2M shares the host's table for A


def test_one_guest_segment_per_host_segment():
    # two slots on the same hva: the second guest segment's __gmap_link finds vmaddr >> PMD_SHIFT in
    # host_to_guest already: radix_tree_insert -EEXIST
    ops = [["exec", 1, 0], ["mmap", 1, A, M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, M],
           ["memslot", 0, 1, M, A, M], ["guest_fault", 0, 0, 1], ["guest_fault", 0, M + 4 * K, 1],
           ["guest_fault", 0, 8 * K, 0],
           # deleting the unlinked slot: __gmap_unmap_by_gaddr unlinks the host segment by vmaddr, which is the
           # link of the other slot's guest segment; then whichever guest segment faults first holds it
           ["memslot", 0, 1, 0, 0, 0], ["memslot", 0, 1, M, A, M], ["guest_fault", 0, M, 1], ["guest_fault", 0, 0, 1],
           ["guest_fault", 0, M + 8 * K, 1]]
    r = run(ops)
    assert results(r) == [0, 0, 0, 0, 0, 0, -17, 0, 0, 0, 0, -17, 0] and kind(r) is None
    assert [(e[0], e[2]) for e in r.events if e[1] == 10 and e[0] < len(ops)] == [(8, 0)]  # guest segment 0


def test_gup_fast_refuses_addresses_at_or_above_asce_limit():
    # gup_fast_permitted: end <= mm->context.asce_limit; a 3-level mm ends at 4 TiB until crst_table_upgrade
    ops = [["exec", 1, -1], ["walk_begin", 0, 1, 1 << 42], ["walk_begin", 0, 1, (1 << 42) - 1], ["walk_end", 0],
           ["mmap", 1, 1 << 42, M, 0], ["walk_begin", 0, 1, 1 << 42], ["walk_step", 0], ["walk_end", 0],
           ["walk_begin", 0, 1, 1 << 53]]
    r = run(ops)
    assert results(r) == [0, -14, 0, 0, 0, 0, 0, 0, -14] and kind(r) is None


def test_tif_pgste_belongs_to_the_task():
    # arch_elf_pt_proc sets TIF_PGSTE on the task and nothing clears it: a later exec of the same task keeps
    # PGSTEs, a forked child has it too; the task that exited is gone, a new one at that pid has no flag
    ops = [["exec", 1, 0], ["exec", 1, -1], ["vm_create", 0, 1, 0], ["fork", 1, 2], ["exit", 1], ["exec", 2, -1],
           ["vm_create", 1, 2, 0], ["exec", 1, 1], ["vm_create", 2, 1, 0]]
    r = run(ops)
    assert results(r) == [0, 0, 0, 0, 0, 0, 0, 0, -22] and kind(r) is None


def test_forked_child_of_a_vm_may_clear_nohugepage():
    # s390_enable_sie puts VM_NOHUGEPAGE in def_flags; fork copies it (mm_init) but not has_pgste, so the child's
    # new mapping is NOHUGEPAGE (COLLAPSE -22) until hugepage_madvise clears it, and its fault maps a THP; in the
    # parent (mm_has_pgste) MADV_HUGEPAGE is ignored and the fault maps 4K
    ops = [["exec", 1, 0], ["vm_create", 0, 1, 0], ["fork", 1, 2], ["mmap", 2, A, M, 0], ["madvise", 2, A, M, 3],
           ["madvise", 2, A, M, 1], ["fault", 2, A, 1], ["mmap", 1, A, M, 0], ["madvise", 1, A, M, 1],
           ["fault", 1, A, 1]]
    r = run(ops)
    assert results(r) == [0, 0, 0, 0, -22, 0, 0, 0, 0, 0] and kind(r) is None
    assert [e[2] for e in r.events if e[1] == 5 and e[0] in (6, 9)] == [3, 4]  # a segment leaf, then a page


def test_vm_destroy_busy_while_fault_in_flight():
    r = run([["exec", 1, 0], ["mmap", 1, A, M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, M],
             ["guest_fault_begin", 3, 0, 0, 1], ["vm_destroy", 0], ["guest_fault_commit", 3], ["vm_destroy", 0]])
    assert results(r) == [0, 0, 0, 0, 0, -16, 0, 0]


def test_replay_is_deterministic():
    from ptfuzz.search.gen import generate
    from ptfuzz.engine import replay
    t = generate("s390", 2000, 7)
    a, b = replay(t), replay(t)
    assert a.digest == b.digest and a.stats == b.stats


# ---- each detector: a trace that must trigger it, and its safe twin ----

DETECTORS = [
    ("uaf-table", [["exec", 1, -1], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["walk_begin", 0, 1, A],
                   ["walk_step", 0], ["munmap", 1, A, M], ["walk_step", 0]],
     {"mm.table_free": "immediate"}, {}),
    # the rmap walker holds the anon_vma lock munmap needs (-16), but PT reclaim frees the table without it
    ("uaf-table", [["exec", 1, -1], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["rmap_begin", 0, 1, A],
                   ["madvise", 1, A, M, 0], ["rmap_commit", 0]],
     {"mm.table_free": "immediate", "mm.pmd_recheck": "no", "mm.pt_reclaim": "yes"}, {"mm.pt_reclaim": "yes"}),
    ("pgste-table-missing", [["exec", 1, 0]], {"s390.pgste_decision": "elf-no-restart"}, {}),
    ("pgste-table-missing", [["sysctl_allocate_pgste", 1], ["exec", 1, -1]],
     {"s390.pt_alloc": "fragments-always"}, {}),
    ("gmap-dangling", [["exec", 1, 0], ["mmap", 1, A, M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, M],
                       ["guest_fault", 0, 0, 1], ["madvise", 1, A, M, 1], ["madvise", 1, A, M, 3]],
     # v2: an anonymous collapse deposits the old table (no pte_free_defer), so defer_gmap_unlink does not
     # help here; the safe twin is the default, where THP stays forbidden in a pgste mm
     {"s390.thp_in_pgste_mm": "allow"}, {}),
    ("lost-update", [["exec", 1, -1], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["rmap_begin", 0, 1, A],
                     ["vm_create", 0, 1, 0], ["rmap_commit", 0]],
     {"s390.pgste_decision": "convert-late", "mm.pmd_recheck": "no"}, {"s390.pgste_decision": "convert-late"}),
    ("lost-update", [["exec", 1, -1], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["rmap_begin", 0, 1, A],
                     ["madvise", 1, A, M, 0], ["rmap_commit", 0]],
     {"mm.pmd_recheck": "no", "mm.pt_reclaim": "yes"}, {"mm.pt_reclaim": "yes"}),
    # M1: on defaults (the "bad" knobs are none); s390.defer_gmap_unlink=yes is the design that closes it
    ("gmap-dangling", [["exec", 1, 0], ["vm_create", 0, 1, 0], ["shm_mmap", 1, A, M, 0, 0], ["memslot", 0, 0, 0, A, M],
                       ["guest_fault", 0, 0, 1], ["exec", 2, -1], ["shm_mmap", 2, 2 * A, M, 0, 0],
                       ["madvise", 2, 2 * A, M, 3]],
     {}, {"s390.defer_gmap_unlink": "yes"}),
]


@pytest.mark.parametrize("want,ops,bad,safe", DETECTORS, ids=[f"{d[0]}-{i}" for i, d in enumerate(DETECTORS)])
def test_detector_and_safe_twin(want, ops, bad, safe):
    r = run(ops, bad)
    assert kind(r) == want, r.violation
    assert r.violation.op_index == len(ops) - 1 or want == "pgste-table-missing"
    assert kind(run(ops, safe)) is None


def test_table_leak_is_detected_without_rcu_drain_and_teardown():
    # no-teardown skips the audit entirely: nothing is reported even though tables remain
    r = run([["exec", 1, -1]], teardown=False)
    assert kind(r) is None and r.stats["tables_freed"] == 0


def test_every_table_is_returned_at_teardown():
    from ptfuzz.search.gen import generate
    from ptfuzz.engine import replay
    for seed in range(20):
        r = replay(generate("s390", 500, seed))
        assert kind(r) is None
        assert r.stats["tables_allocated"] >= 1


@pytest.mark.parametrize("name", ["table-leak", "double-free", "freed-page-mapped", "fragment-corrupt", "uaf-table"])
def test_detectors_on_corrupted_state(name):
    """Detectors that no s390 knob reaches, driven from a deliberately corrupted engine state."""
    from ptfuzz import _engine
    from ptfuzz.names import VIOLATION_KINDS
    index = VIOLATION_KINDS.index(name) + 1
    assert _engine.selftest(index) == index


# ---- round-3 corners (issue 16): each as v6.6 has it ----

def test_memslot_has_no_access_ok_on_s390():
    """s390 selects ALTERNATE_USER_ADDRESS_SPACE: asm-generic __access_ok is true, so __kvm_set_memory_region
    takes an hva range that wraps; kvm_arch_prepare_memory_region checks only 1 MiB alignment and the gpa end.
    gmap_map_segment then refuses "from + len < from" at commit, the error is dropped (pr_warn): the slot exists and
    translates nothing."""
    ops = [["exec", 1, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, (1 << 64) - M, M],
           ["memslot", 0, 1, 4 * M, (1 << 64) - M, 2 * M], ["guest_fault", 0, 4 * K, 1], ["memslot", 0, 0, 0, 0, 0]]
    r = run(ops)
    assert results(r) == [0, 0, 0, 0, -14, 0] and kind(r) is None


def test_vm_type_must_be_zero_before_s390_enable_sie():
    """kvm_arch_init_vm without CONFIG_KVM_S390_UCONTROL: "if (type) goto out_err;" (-EINVAL) before
    s390_enable_sie, so the failed create splits no THP; the type-0 create then does (thp_split_mm)."""
    ops = [["exec", 1, 0], ["mmap", 1, A, 2 * M, 1], ["fault", 1, A, 1], ["vm_create", 0, 1, 40], ["vm_create", 0, 1, 0]]
    r = run(ops, teardown=False)  # 40: a value a trace file may hold (ipa_bits 0 or 32..52); 1 is UCONTROL's
    assert results(r) == [0, 0, 0, -22, 0] and kind(r) is None
    assert not [e for e in r.events if e[0] == 3] and [e for e in r.events if e[0] == 4 and e[1] == 5 and e[2] == 4]


def test_gmap_fault_turns_a_fault_in_error_into_efault():
    """gmap_fault: "if (fixup_user_fault(...)) { rc = -EFAULT; goto out_up; }": a host fault that fails for want
    of a page table (-ENOMEM from handle_mm_fault) is -EFAULT to the guest fault; __gmap_link's own -ENOMEM (the
    gmap's tables) is returned as it is. The host fault itself says -12."""
    ops = [["exec", 1, 0], ["mmap", 1, A, M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, M]]
    for pages, want in ((18, -14), (24, -12), (None, 0)):
        cfg = {"max_table_pages": pages} if pages else None
        assert results(run(ops + [["guest_fault", 0, 0, 1]], config=cfg))[-1] == want, pages
    assert results(run(ops + [["fault", 1, A, 1]], config={"max_table_pages": 18}))[-1] == -12


def test_memslot_at_host_address_0_leaves_its_first_segment_untranslatable():
    """gmap_map_segment stores "(void *) from + off" in guest_to_host: for a slot at userspace_addr 0 the first
    segment's item is NULL, and __gmap_translate ("vmaddr ? ... : -EFAULT") cannot tell it from no segment; the
    next segment (host 1 MiB) translates. The host maps address 0 (mmap_min_addr is not modelled; root's
    CAP_SYS_RAWIO passes it), and its own fault there works: only the guest's translation fails."""
    ops = [["exec", 1, 0], ["mmap", 1, 0, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 4 * M, 0, 2 * M],
           ["guest_fault", 0, 4 * M + 4 * K, 1], ["guest_fault", 0, 5 * M + 4 * K, 1], ["guest_fault", 0, 4 * M, 0],
           ["fault", 1, 4 * K, 1]]
    r = run(ops)
    assert results(r) == [0, 0, 0, 0, -14, 0, -14, 0] and kind(r) is None
    assert [(e[2], e[3]) for e in r.events if e[1] == 9] == [(5 * M, M)]  # gmap link: guest 5M -> host 1M


# ---- Z4 (s390.frag_release): a page_table_free held between its atomic_xor_bits and its list work ----

Z4_PREFIX = [["exec", 0, -1], ["mmap", 0, A + M, M, 1], ["fault", 0, A + M, 1], ["munmap", 0, (1 << 42) - M, M],
             ["frag_hold", 1], ["munmap", 0, A + M, M]]
PRE_Z4 = {"s390.frag_release": "pre-c2c224932fd0"}


@pytest.mark.parametrize("knobs", [{}, PRE_Z4], ids=["fixed", "pre-fix"])
def test_frag_hold_holds_mm_context_lock(knobs):
    """While the held page_table_free has its list work pending, an operation that could take mm->context.lock
    waits (-16, nothing done); RCU, GUP-fast walks and the frag operations go on; frag_end finishes it."""
    ops = Z4_PREFIX + [["fault", 0, A, 1], ["mmap", 0, A, M, 0], ["exec", 1, -1], ["exit", 0], ["walk_begin", 0, 0, A],
                       ["walk_end", 0], ["frag_hold", 2], ["frag_end", 2], ["frag_end", 1], ["frag_end", 1],
                       ["fault", 0, A + 2 * M, 1]]
    r = run(ops, knobs)
    assert results(r)[6:] == [-16, -16, -16, -16, 0, 0, 0, 0, 0, -22, -14] and kind(r) is None


def test_frag_hold_race_frees_the_listed_page_only_before_the_fix():
    ops = Z4_PREFIX + [["rcu_gp"], ["frag_end", 1]]
    assert kind(run(ops, PRE_Z4)) == "fragment-corrupt"
    r = run(ops)
    assert kind(r) is None and results(r) == [0] * 8
    frees = [e for e in r.events if e[1] == 1 and e[2] == 4 and e[5] == 4096]  # the 4K page goes at frag_end
    assert len(frees) == 1


def test_frag_hold_held_operation_finishes_its_list_work_before_its_next_free():
    """exit_mmap holds at the THP's deposit, then frees the stack's table (page_table_free_rcu, the same
    mm->context.lock): the list work comes first, and the hold is over (frag_end: -22)."""
    ops = [["exec", 0, -1], ["mmap", 0, A + M, M, 1], ["fault", 0, A + M, 1], ["frag_hold", 1], ["exit", 0],
           ["frag_end", 1], ["rcu_gp"]]
    for knobs in ({}, PRE_Z4):
        r = run(ops, knobs)
        assert results(r) == [0, 0, 0, 0, 0, -22, 0] and kind(r) is None


def test_frag_hold_is_s390_only():
    assert results(run([["frag_hold", 0]], arch="arm64")) == [-38]
