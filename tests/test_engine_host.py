"""The host model v2 against v6.6, rule by rule (docs/model-notes.md names the kernel function of each test)."""
import pytest

from conftest import NONE, G, K, M, W, events_at, figs, kind, results, run, trace, translate
from ptfuzz.engine import replay, replay_figures

A = 0x10000000      # s390
EV_ALLOC, EV_FREE, EV_RCU, EV_LEAF_SET, EV_NOTIFY, EV_S2_ZAP = 0, 1, 2, 5, 11, 15


def window_bytes(f, i, pid=1, base=1):
    """Page-table bytes of pid after op i, less what it had after op `base` (the exec's stack tables)."""
    return f[i][pid][0] - f[base][pid][0]


def blocks(f, i, pid=1):
    return f[i][pid][1]


X = "x86_64"
BOTH = ["x86_64", "arm64"]


# ---- 1. madvise as madvise_walk_vmas, do_madvise's argument checks ----

@pytest.mark.parametrize("arch", BOTH)
def test_madvise_hole_is_enomem_after_the_mapped_parts(arch):
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["mmap", 1, W + 4 * M, 2 * M, 0], ["fault", 1, W, 1],
           ["fault", 1, W + 4 * M, 1], ["madvise", 1, W, 6 * M, 0]]
    r = run(ops, arch=arch)
    assert results(r)[-1] == -12
    assert translate(ops, [(1, W), (1, W + 4 * M)], arch) == [NONE, NONE]  # both VMAs were zapped


def test_madvise_past_the_last_vma_is_enomem_even_when_the_first_part_is_done():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 1], ["madvise", 1, W, 4 * M, 0],
           ["madvise", 1, W + 8 * M, 4 * K, 0], ["madvise", 1, W + 8 * M, 4 * K, 1]]
    assert results(run(ops, arch=X))[3:] == [-12, -12, -12]
    assert translate(ops, [(1, W)]) == [NONE]


def test_madvise_hugepage_applies_to_every_vma_around_a_hole():
    # the advice reaches the VMA after the hole: its THP fault maps a PMD block
    r, f = figs([["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["mmap", 1, W + 4 * M, 2 * M, 0],
                 ["madvise", 1, W, 6 * M, 1], ["fault", 1, W + 4 * M, 1], ["fault", 1, W, 1]])
    assert results(r)[3:] == [-12, 0, 0]
    assert blocks(f, 5) == (W, W + 4 * M)


def test_madvise_error_of_one_vma_ends_the_walk():
    # COLLAPSE: the first VMA has no anon_vma (-22); the walk stops, the second is not collapsed
    r, f = figs([["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["mmap", 1, W + 2 * M, 2 * M, 1],
                 ["fault", 1, W + 2 * M, 0], ["split", 1, W + 2 * M], ["fault", 1, W + 2 * M + 4 * K, 1],
                 ["madvise", 1, W, 4 * M, 3]])
    assert results(r)[-1] == -22 and blocks(f, 6) == ()


def test_do_madvise_argument_checks_follow_the_kernel():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 1], ["fault", 1, W + 4 * K, 1],
           ["madvise", 1, W + 1, 4 * K, 0],             # start not page aligned: -EINVAL
           ["madvise", 1, W + 64 * M, 0, 0],            # len 0: 0, even where nothing is mapped
           ["madvise", 1, W, (1 << 64) - 1, 0],          # len rounds up to 0: -EINVAL
           ["madvise", 1, W, (1 << 64) - W, 0],          # end wraps: -EINVAL
           ["madvise", 1, 1 << 63, 4 * K, 0],          # beyond TASK_SIZE: no VMA, -ENOMEM
           ["madvise", 1, W, 1, 0]]                      # len 1 is rounded up to a page
    assert results(run(ops, arch=X))[4:] == [-22, 0, -22, -22, -12, 0]
    assert translate(ops, [(1, W), (1, W + 4 * K)]) == [NONE, translate(ops[:4], [(1, W + 4 * K)])[0]]


def test_munmap_and_mmap_argument_checks():
    r = run([["exec", 1, -1], ["munmap", 1, W + 1, 4 * K], ["munmap", 1, W, 0], ["munmap", 1, W, 4 * K],
             ["mmap", 1, W, 5, 0], ["munmap", 1, W, 1], ["mmap", 1, W, 0, 0], ["mmap", 1, W + 1, 4 * K, 0],
             ["mmap", 1, (1 << 47) - 4 * K, 8 * K, 0], ["munmap", 1, (1 << 47), 4 * K]], arch=X)
    # misaligned -22, len 0 -22, a hole 0; len 5 is a page; past TASK_SIZE -12 (mmap) / -22 (munmap)
    assert results(r)[1:] == [-22, -22, 0, 0, 0, -22, -22, -12, -22]


# ---- 2. VMA merging and splitting ----

def test_adjacent_vmas_with_equal_flags_merge():
    # two 1M THP mmaps make one VMA that holds a whole PMD block
    r, f = figs([["exec", 1, -1], ["mmap", 1, W, M, 1], ["mmap", 1, W + M, M, 1], ["fault", 1, W, 1],
                 ["mmap", 1, W + 4 * M, M, 1], ["mmap", 1, W + 5 * M, M, 0], ["fault", 1, W + 4 * M, 1]])
    assert blocks(f, 3) == (W,) and blocks(f, 6) == (W,)  # different flags: no merge, no block


def test_vmas_with_different_anon_vmas_do_not_merge():
    # both halves written (two anon_vmas), then given equal flags: two VMAs, so no VMA holds the block
    ops = [["exec", 1, -1], ["mmap", 1, W, M, 0], ["mmap", 1, W + M, M, 1], ["fault", 1, W, 1],
           ["fault", 1, W + M, 1], ["madvise", 1, W, M, 1], ["madvise", 1, W, 2 * M, 3]]
    assert results(run(ops, arch=X))[-1] == -22
    # an unfaulted range merges into a faulted neighbour (is_mergeable_anon_vma(NULL, X, singular chain))
    ops2 = [["exec", 1, -1], ["mmap", 1, W, M, 0], ["mmap", 1, W + M, M, 1], ["fault", 1, W + M, 1],
            ["madvise", 1, W, M, 1], ["madvise", 1, W, 2 * M, 3]]
    r, f = figs(ops2)
    assert results(r)[-1] == 0 and blocks(f, 5) == (W,)


def test_faulted_range_does_not_merge_into_an_unfaulted_neighbour():
    # v6.6 is_mergeable_anon_vma checks the neighbour's anon_vma_chain, empty when it was never faulted
    ops = [["exec", 1, -1], ["mmap", 1, W, M, 0], ["mmap", 1, W + M, M, 1], ["fault", 1, W, 1],
           ["madvise", 1, W, M, 1], ["fault", 1, W + M, 1], ["madvise", 1, W, 2 * M, 3]]
    assert results(run(ops, arch=X))[-1] == -22  # still two VMAs: madvise_collapse refuses the 1M VMA


def test_a_forked_vma_does_not_merge_with_a_new_mapping():
    ops = [["exec", 1, -1], ["mmap", 1, W, M, 1], ["fault", 1, W, 1], ["fork", 1, 2], ["mmap", 2, W + M, M, 1],
           ["fault", 2, W + M, 1], ["madvise", 2, W, 2 * M, 3], ["mmap", 1, W + M, M, 1], ["fault", 1, W + M, 1],
           ["madvise", 1, W, 2 * M, 3]]
    r, f = figs(ops)
    assert results(r)[6] == -22 and results(r)[9] == 0  # the child's VMA has a cloned anon_vma chain
    assert blocks(f, 9) == (W,) and blocks(f, 9, pid=2) == ()


def test_madvise_that_changes_no_flag_splits_nothing():
    r, f = figs([["exec", 1, -1], ["mmap", 1, W, 4 * M, 1], ["fault", 1, W, 1],
                 ["madvise", 1, W + 4 * K, 8 * K, 1], ["madvise", 1, W + 4 * K, 8 * K, 2]])
    assert blocks(f, 3) == (W,)   # HUGEPAGE on a VM_HUGEPAGE VMA: no split, the THP stays
    assert blocks(f, 4) == ()     # NOHUGEPAGE: a new VMA boundary inside the THP splits it
    assert events_at(r, 4, EV_NOTIFY)


@pytest.mark.parametrize("op", [["munmap", 1, W + 4 * K, 4 * K], ["mmap", 1, W + M, 4 * K, 0],
                                ["madvise", 1, W, M, 2]])
def test_a_vma_boundary_inside_a_thp_splits_the_pmd(op):
    ops = [["exec", 1, -1], ["mmap", 1, W, 4 * M, 1], ["fault", 1, W + 8 * K, 1], op]
    r, f = figs(ops)
    assert blocks(f, 2) == (W,) and blocks(f, 3) == ()
    assert window_bytes(f, 3) == window_bytes(f, 2)  # the deposit became the PTE table
    assert translate(ops, [(1, W + 8 * K)]) == translate(ops[:3], [(1, W + 8 * K)])


# ---- 3. zero pages ----

@pytest.mark.parametrize("arch", BOTH)
def test_read_fault_maps_the_zero_page_and_a_write_copies(arch):
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 0], ["fault", 1, W + 4 * 4096, 0]]
    r = run(ops, arch=arch)
    z = translate(ops, [(1, W), (1, W + 4 * 4096)], arch)
    assert z[0] == z[1] and r.stats["data_pages_peak"] == run(ops[:2], arch=arch).stats["data_pages_peak"]
    w = ops + [["fault", 1, W, 1]]
    r = run(w, arch=arch)
    assert translate(w, [(1, W)], arch)[0] not in (z[0], NONE)
    assert events_at(r, 4, EV_NOTIFY)  # wp_page_copy notifies the page


def test_zero_page_read_sets_no_anon_vma_but_a_write_does():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 0], ["madvise", 1, W, 2 * M, 3],
           ["fault", 1, W + 4 * K, 1], ["madvise", 1, W, 2 * M, 3]]
    r, f = figs(ops)
    assert results(r)[3:] == [-22, 0, 0] and blocks(f, 5) == (W,)


def test_huge_zero_page_for_a_read_in_a_thp_block():
    ops = [["exec", 1, -1], ["mmap", 1, W, 4 * M, 1], ["fault", 1, W + 8 * K, 0], ["madvise", 1, W, 2 * M, 3]]
    r, f = figs(ops)
    assert blocks(f, 2) == (W,) and window_bytes(f, 2) == 3 * 4096  # PUD, PMD, the deposit
    assert results(r)[3] == 0  # do_huge_pmd_anonymous_page did anon_vma_prepare; already PMD-mapped
    assert r.stats["data_pages_peak"] == run(ops[:2], arch=X).stats["data_pages_peak"]
    z = translate(ops, [(1, W), (1, W + 8 * K)])
    assert z[1] == z[0] + 2


def test_write_to_the_huge_zero_page_falls_back_to_ptes():
    ops = [["exec", 1, -1], ["mmap", 1, W, 4 * M, 1], ["fault", 1, W, 0], ["fault", 1, W + 12 * K, 1]]
    r, f = figs(ops)
    assert blocks(f, 3) == () and window_bytes(f, 3) == 3 * 4096  # split onto the deposited table
    before = translate(ops[:3], [(1, W + 4 * K)])[0]
    after = translate(ops, [(1, W + 4 * K), (1, W + 12 * K)])
    zero = translate([["exec", 1, -1], ["mmap", 1, W, 4 * K, 0], ["fault", 1, W, 0]], [(1, W)])[0]
    assert after[0] == zero and before != zero and after[1] not in (zero, NONE)
    assert r.stats["tables_allocated"] == run(ops[:3], arch=X).stats["tables_allocated"]
    assert len(events_at(r, 3, EV_NOTIFY)) == 2  # __split_huge_pmd's block, wp_page_copy's page


def test_zero_pages_are_never_freed_nor_counted():
    r = run([["exec", 1, -1], ["mmap", 1, W, 4 * M, 1], ["fault", 1, W, 0], ["mmap", 1, W + 4 * M, M, 0],
             ["fault", 1, W + 4 * M, 0], ["fork", 1, 2], ["munmap", 1, W, 8 * M], ["exit", 2]], arch=X)
    assert kind(r) is None and r.stats["data_pages_peak"] == 1  # only the stack's argument page


def test_s390_mm_with_pgstes_maps_no_zero_page():
    ops = [["exec", 1, 0], ["mmap", 1, A, M, 0], ["fault", 1, A, 0], ["vm_create", 0, 1, 0],
           ["fault", 1, A + 4 * K, 0], ["fault", 1, A + 8 * K, 1]]
    got = translate(ops, [(1, A), (1, A + 4 * K)], arch="s390")
    assert got[0] - got[0] % 128 != got[1] - got[1] % 128  # before: a zero page; after has_pgste: data
    r = run(ops, arch="s390")
    assert r.stats["data_pages_peak"] == 3


def test_s390_zero_page_is_coloured_by_address():
    ops = [["exec", 1, -1], ["mmap", 1, A, M, 0], ["fault", 1, A, 0], ["fault", 1, A + 4 * K, 0],
           ["fault", 1, A + 128 * 4 * K, 0]]
    z = translate(ops, [(1, A), (1, A + 4 * K), (1, A + 128 * 4 * K)], arch="s390")
    assert z[1] == z[0] + 1 and z[2] == z[0]


def test_cow_of_a_zero_page_notifies_the_vm():
    # the stage-2 maps the host's zero page read-only; the host's COW zaps it (no stale stage-2)
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, W, 2 * M],
           ["guest_fault", 0, 0, 0], ["fault", 1, W, 1]]
    for arch in BOTH:
        r = run(ops, arch=arch)
        assert kind(r) is None and events_at(r, 5, EV_S2_ZAP)


# ---- 4. deposited PTE tables ----

@pytest.mark.parametrize("arch", BOTH)
def test_thp_owns_a_deposited_table_counted_and_freed_at_once(arch):
    r, f = figs([["exec", 1, -1], ["mmap", 1, W, 4 * M, 1], ["fault", 1, W, 1], ["munmap", 1, W, 4 * M]], arch)
    assert window_bytes(f, 2) == 3 * 4096 and blocks(f, 2) == (W,)
    assert f[3][1][0] == f[1][1][0]
    # the deposit goes back now (pte_free); only the PMD and PUD tables go through RCU
    assert len(events_at(r, 3, EV_RCU)) == 2 and events_at(r, 3, EV_FREE)


def test_split_and_zap_use_the_deposit():
    ops = [["exec", 1, -1], ["mmap", 1, W, 4 * M, 1], ["fault", 1, W, 1], ["split", 1, W], ["fault", 1, W + 2 * M, 1],
           ["madvise", 1, W + 2 * M, 4 * K, 0]]
    r, f = figs(ops)
    assert not events_at(r, 3, EV_ALLOC) and not events_at(r, 5, EV_ALLOC)  # withdrawn, not allocated
    assert window_bytes(f, 5) == 4 * 4096 and blocks(f, 5) == ()


def test_s390_deposit_is_a_2k_fragment():
    # s390's pgtable_trans_huge_deposit takes what page_table_alloc hands out: a 2K half of a 4K page
    r, f = figs([["exec", 1, -1], ["mmap", 1, A, 2 * M, 1], ["fault", 1, A, 1], ["fault", 1, A + M, 0]],
                arch="s390", lo=A, hi=A + 2 * M)
    stack = [ev for ev in r.events if ev[0] == 0 and ev[1] == EV_ALLOC and ev[2] == 4]
    deposits = [ev for ev in r.events if ev[0] in (2, 3) and ev[1] == EV_ALLOC and ev[2] == 4]
    assert [ev[5] for ev in deposits] == [2048, 2048]
    assert deposits[0][3] >> 14 == stack[0][3] >> 14  # the other half of the stack's PTE page
    assert f[3][1][0] - f[1][1][0] == 16384 + 2 * 2048  # a segment table and two 2K PTE tables
    assert blocks(f, 3) == (A, A + M)


def test_s390_pgtables_bytes_count_2k_per_pte_table_and_puds_only_above_three_levels():
    r, f = figs([["exec", 1, 0], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["mmap", 1, 1 << 50, M, 0]],
                arch="s390", lo=0, hi=0)
    assert f[0][1][0] == 16384 + 2048  # the stack: a segment table, a 4K PGSTE page table counted as 2K
    assert f[2][1][0] - f[0][1][0] == 16384 + 2048
    assert f[3][1][0] - f[2][1][0] == 16384  # the old 3-level top became a counted region-third table


# ---- 5. fork ----

def test_fork_copies_tables_only_where_there_is_an_anon_vma():
    r, f = figs([["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 0], ["mmap", 1, W + 4 * M, 2 * M, 0],
                 ["fault", 1, W + 4 * M, 1], ["fork", 1, 2]])
    # the read-only VMA (zero page, no anon_vma) re-faults in the child; the written one is copied
    assert window_bytes(f, 5, pid=2, base=5) == 0
    assert f[5][2][0] == f[5][1][0] - 4096  # all of the parent's tables but the zero page's PTE table
    assert len(events_at(r, 5, EV_NOTIFY)) == 2  # the stack and the written VMA


def test_fork_write_protects_both_sides():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 1], ["fork", 1, 2]]
    page = translate(ops, [(1, W)])[0]
    after = ops + [["fault", 1, W, 1], ["fault", 2, W, 1]]
    got = translate(after, [(1, W), (2, W)])
    # the parent's write copies (the page is mapped twice); then the child maps it alone and reuses it
    assert got[0] != page and got[1] == page
    reuse = ops + [["exit", 2], ["fault", 1, W, 1]]
    assert translate(reuse, [(1, W)]) == [page]  # wp_can_reuse_anon_folio: mapped once again, reused
    r = run(reuse, arch=X)
    assert not events_at(r, 5, EV_NOTIFY)


def test_fork_shares_a_pmd_mapped_thp_with_a_new_deposit():
    ops = [["exec", 1, -1], ["mmap", 1, W, 4 * M, 1], ["fault", 1, W, 1], ["fault", 1, W + 2 * M, 0], ["fork", 1, 2],
           ["fault", 2, W + 4 * K, 1], ["fault", 1, W + 2 * M, 1]]
    r, f = figs(ops)
    assert f[4][2] == f[4][1] and blocks(f, 4, pid=2) == (W, W + 2 * M)
    assert [ev[5] for ev in events_at(r, 4, EV_ALLOC)].count(0) >= 2
    # the child's write: split (the THP is shared), then a 4K COW; the parent keeps its PMD
    assert blocks(f, 5, pid=2) == (W + 2 * M,) and blocks(f, 5) == (W, W + 2 * M)
    assert blocks(f, 6) == (W,)  # the parent's write to the huge zero page falls back to PTEs
    got = translate(ops, [(1, W + 4 * K), (2, W + 4 * K), (2, W + 8 * K)])
    assert got[0] != got[1] and got[2] == got[0] + 1


def test_fork_after_exit_reuses_a_thp():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 1], ["fault", 1, W, 1], ["fork", 1, 2], ["exit", 2],
           ["fault", 1, W, 1]]
    r, f = figs(ops)
    assert blocks(f, 5) == (W,) and not events_at(r, 5, EV_NOTIFY)  # do_huge_pmd_wp_page reuses it


def test_fork_notifies_the_parents_copied_ranges():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, W, 2 * M],
           ["guest_fault", 0, 0, 1], ["fork", 1, 2]]
    for arch in BOTH:
        r = run(ops, arch=arch)
        assert events_at(r, 5, EV_S2_ZAP) and kind(r) is None


def test_fork_of_hugetlb_shares_the_huge_page():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 2], ["fault", 1, W, 1], ["fork", 1, 2], ["fault", 2, W, 1]]
    r, f = figs(ops)
    assert blocks(f, 3, pid=2) == (W,) and f[3][2][0] == f[3][1][0]
    got = translate(ops, [(1, W), (2, W)])
    assert got[0] != got[1] and events_at(r, 4, EV_NOTIFY)  # hugetlb_wp copies


def test_s390_fork_child_top_is_one_crst_of_the_parents_level():
    r = run([["exec", 1, -1], ["mmap", 1, 1 << 50, M, 0], ["fork", 1, 2]], arch="s390", teardown=False)
    child = [ev for ev in events_at(r, 2, EV_ALLOC)]
    assert child[0][2] == 1  # a region-second table: the child's top, one CRST
    assert [ev[2] for ev in child[1:]] == [2, 3, 4]  # the stack's region-third, segment, page tables


# ---- 6. hugetlb ----

def test_hugetlb_mmap_rounds_the_length_up_and_needs_an_aligned_address():
    r = run([["exec", 1, -1], ["mmap", 1, W, 4 * K, 2], ["fault", 1, W + M, 1], ["mmap", 1, W + 4 * M + 4 * K, 2 * M, 2],
             ["mmap", 1, W + 8 * M, 3 * M, 2], ["fault", 1, W + 11 * M, 1], ["mmap", 1, W + 4 * K, 4 * K, 0],
             ["munmap", 1, W + 4 * K, 4 * K], ["mmap", 1, W, 4 * K, 4]], arch=X)
    # MAP_FIXED over part of a hugetlb page: do_vmi_munmap's split is -22, which mmap_region makes -12
    assert results(r)[1:] == [0, 0, -22, 0, 0, -12, -22, 0]


def test_hugetlb_dontneed_needs_an_aligned_start_and_rounds_the_end_down():
    ops = [["exec", 1, -1], ["mmap", 1, W, 4 * M, 2], ["fault", 1, W, 1], ["fault", 1, W + 2 * M, 1],
           ["madvise", 1, W + 4 * K, 2 * M, 0], ["madvise", 1, W, 2 * M + 4 * K, 0], ["madvise", 1, W + 2 * M, 4 * K, 0]]
    r = run(ops, arch=X)
    assert results(r)[4:] == [-22, 0, 0]
    assert translate(ops, [(1, W), (1, W + 2 * M)])[0] == NONE
    assert translate(ops, [(1, W + 2 * M)]) != [NONE]  # [2M, 2M+4K) rounds down to nothing


# ---- 7. x86_64 la57 ----

def test_la57_task_size():
    top = (1 << 56) - 4 * K
    ops = [["exec", 1, -1], ["mmap", 1, top - 2 * M, 2 * M, 0], ["fault", 1, top - 4 * K, 1], ["mmap", 1, top, 4 * K, 0],
           ["mmap", 1, 1 << 47, 4 * K, 0]]
    assert results(run(ops, arch=X, config={"la57": True})) == [0, 0, 0, -12, 0]
    assert results(run(ops, arch=X)) == [0, -12, -14, -12, -12]


# ---- 8. mm.pt_reclaim ----

@pytest.mark.parametrize("arch", ["x86_64", "arm64", "s390"])
def test_pt_reclaim_frees_the_pte_tables_dontneed_empties(arch):
    base, pmd = (A, M) if arch == "s390" else (W, 2 * M)
    ops = [["exec", 1, -1], ["mmap", 1, base, 4 * pmd, 0], ["fault", 1, base, 1], ["fault", 1, base + pmd, 1],
           ["fault", 1, base + 3 * pmd - 4096, 1], ["madvise", 1, base + pmd // 2, 3 * pmd, 0]]
    pte = 2048 if arch == "s390" else 4096
    r, f = figs(ops, arch, lo=base, hi=base + 4 * pmd)
    assert f[5][1][0] == f[4][1][0]  # default: DONTNEED keeps the tables
    r, f = figs(ops, arch, {"mm.pt_reclaim": "yes"}, lo=base, hi=base + 4 * pmd)
    # only the PTE tables whose whole PMD range was zapped: [pmd, 2pmd) and [2pmd, 3pmd), not the first
    assert f[4][1][0] - f[5][1][0] == 2 * pte
    assert len(events_at(r, 5, EV_RCU)) == 2 and kind(r) is None
    assert events_at(r, 5, EV_NOTIFY) or arch == "s390"  # s390's gmap learns through gmap_unlink


def test_pt_reclaim_tables_wait_for_lockless_walkers():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 1], ["walk_begin", 0, 1, W], ["walk_step", 0],
           ["walk_step", 0], ["walk_step", 0], ["madvise", 1, W, 2 * M, 0], ["rcu_gp"], ["walk_step", 0]]
    assert kind(run(ops, {"mm.pt_reclaim": "yes"}, arch=X)) is None
    assert kind(run(ops, {"mm.pt_reclaim": "yes", "mm.table_free": "immediate"}, arch=X)) == "uaf-table"


# ---- 9. MADV_COLLAPSE ----

def test_collapse_ignores_vm_hugepage_but_not_vm_nohugepage():
    r, f = figs([["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 1], ["madvise", 1, W, 2 * M, 3],
                 ["mmap", 1, W + 4 * M, 2 * M, 1], ["madvise", 1, W + 4 * M, 2 * M, 2], ["fault", 1, W + 4 * M, 1],
                 ["madvise", 1, W + 4 * M, 2 * M, 3]])
    assert results(r)[3] == 0 and blocks(f, 3) == (W,) and results(r)[7] == -22


def test_collapse_needs_an_anon_vma():
    assert results(run([["exec", 1, -1], ["mmap", 1, W, 2 * M, 1], ["madvise", 1, W, 2 * M, 3]], arch=X))[-1] == -22


def test_collapse_per_block_results():
    # [W, W+2M): no PMD table under a PUD entry? no: same PMD table; so use a fresh PUD range for PMD_NULL
    far = W + 4 * G
    ops = [["exec", 1, -1], ["mmap", 1, W, 8 * M, 0], ["fault", 1, W + 2 * M, 1],
           ["fault", 1, W + 4 * M, 0],                 # only the zero page: SCAN_PAGE_RO, the walk goes on
           ["madvise", 1, W, 8 * M, 3]]                # W: empty pmd -> SCAN_PMD_NONE ends the walk
    r, f = figs(ops)
    assert results(r)[-1] == -22 and blocks(f, 4) == ()
    ops2 = [["exec", 1, -1], ["mmap", 1, far - 2 * G, 2 * G + 4 * M, 0], ["fault", 1, far + 2 * M, 1],
            ["fault", 1, far, 0], ["madvise", 1, far - 2 * M, 6 * M, 3]]
    r, f = figs(ops2)
    # far-2M: no PMD table (a PUD entry of its own): SCAN_PMD_NULL, the walk goes on; far: zero page only,
    # SCAN_PAGE_RO; far+2M: collapsed
    assert results(r)[-1] == -22 and blocks(f, 4) == (far + 2 * M,)
    ops3 = [["exec", 1, -1], ["mmap", 1, W, 4 * M, 1], ["fault", 1, W, 0], ["fault", 1, W + 2 * M, 1],
            ["madvise", 1, W, 4 * M, 3], ["madvise", 1, W + 4 * K, 4 * K, 3], ["madvise", 1, W + 4 * K, 2 * M, 3]]
    r = run(ops3, arch=X)
    # already PMD-mapped: success; a range inside one block: -22 (no whole block, "negative" count);
    # a range holding no whole block but reaching the next: 0 blocks, 0
    assert results(r)[4:] == [0, -22, 0]


def test_collapse_deposits_the_old_pte_table():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 1], ["fault", 1, W + M, 1],
           ["madvise", 1, W, 2 * M, 3], ["split", 1, W], ["munmap", 1, W, 2 * M]]
    r, f = figs(ops)
    assert blocks(f, 4) == (W,) and window_bytes(f, 4) == window_bytes(f, 3)
    assert not events_at(r, 4, EV_FREE) and not events_at(r, 4, EV_RCU) and events_at(r, 4, EV_NOTIFY)
    assert not events_at(r, 5, EV_ALLOC)  # the split takes the old table back
    assert kind(r) is None


def test_collapse_waits_for_a_gup_fast_walker():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 1], ["walk_begin", 0, 1, W],
           ["madvise", 1, W, 2 * M, 3], ["walk_end", 0], ["madvise", 1, W, 2 * M, 3]]
    assert results(run(ops, arch=X))[4:] == [-16, 0, 0]


# ---- 10. replay_figures ----

def test_replay_figures_shape_and_agreement_with_replay():
    ops = [["exec", 1, -1], ["mmap", 1, W, 4 * M, 1], ["fault", 1, W, 1], ["fork", 1, 2], ["exit", 1], ["exit", 2]]
    t = trace(ops)
    r, f = replay_figures(t, W, W + 4 * M)
    assert len(f) == r.executed == 6 and f[-1] == {} and set(f[3]) == {1, 2} and set(f[4]) == {2}
    assert r.digest == replay(t).digest
    assert replay_figures(t, W + 2 * M, W + 4 * M)[1][2][1][1] == ()  # the window filters blocks
    with pytest.raises(ValueError):
        replay_figures(t, 5, 4)


@pytest.mark.parametrize("arch,config,levels", [
    ("x86_64", {}, 3), ("x86_64", {"la57": True}, 3), ("arm64", {}, 3), ("arm64", {"va_bits": 39}, 2),
    ("arm64", {"granule": 16384, "va_bits": 36}, 1), ("arm64", {"granule": 65536, "va_bits": 42}, 1)])
def test_pt_bytes_count_pud_pmd_pte_that_are_not_folded(arch, config, levels):
    page = config.get("granule", 4096)
    far = 1 << 35  # its own top-level entry in every geometry
    r, f = figs([["exec", 1, -1], ["mmap", 1, far, 4 * M, 0], ["fault", 1, far, 1]], arch, config=config,
                lo=far, hi=far + 4 * M)
    assert f[0][1][0] == levels * page      # the stack: no pgd, no p4d, no folded level
    assert f[2][1][0] - f[1][1][0] == levels * page


def test_figures_do_not_change_plain_replay():
    from ptfuzz.search.gen import generate
    for seed in range(3):
        t = generate("x86_64", 300, seed)
        r, f = replay_figures(t, 0, 1 << 47)
        assert r.digest == replay(t).digest and len(f) == r.executed
        pid_bytes = [v[0] for fig in f for v in fig.values()]
        assert all(b % 4096 == 0 for b in pid_bytes)


# ---- s390 details on the same paths ----

def test_s390_asce_upgrade_is_all_or_nothing():
    # 9 pages after exec; 3 -> 5 levels needs two more CRSTs (8 pages): only one fits
    ops = [["exec", 1, -1], ["mmap", 1, 1 << 60, M, 0], ["mmap", 1, 1 << 50, M, 0], ["fault", 1, 1 << 50, 1]]
    r = run(ops, arch="s390", config={"max_table_pages": 13}, teardown=False)
    assert results(r) == [0, -12, 0, -12]  # the 4-level upgrade fits; its region-third table does not
    assert [ev[3] for ev in r.events if ev[1] == 8] == [4]
    assert kind(run(ops, arch="s390", config={"max_table_pages": 13})) is None


def test_s390_def_flags_are_inherited_by_exec_and_fork():
    # VM_NOHUGEPAGE in def_flags reaches the new mm's mappings (mm_init), so MADV_COLLAPSE refuses them; an
    # explicit MADV_HUGEPAGE in an mm without PGSTEs in use (bit0) still clears it
    ops = [["exec", 1, 0], ["vm_create", 0, 1, 0], ["fork", 1, 2], ["exec", 1, 1], ["mmap", 1, A, M, 0],
           ["fault", 1, A, 1], ["madvise", 1, A, M, 3], ["mmap", 2, A, M, 0], ["fault", 2, A, 1],
           ["madvise", 2, A, M, 3], ["mmap", 1, A + 4 * M, 2 * M, 1], ["fault", 1, A + 4 * M, 1]]
    r, f = figs(ops, arch="s390", lo=A, hi=A + 8 * M)
    assert results(r) == [0] * 6 + [-22, 0, 0, -22, 0, 0] and blocks(f, 11) == (A + 4 * M,)
    fresh = [["exec", 1, 1], ["mmap", 1, A, M, 0], ["fault", 1, A, 1], ["madvise", 1, A, M, 3]]
    assert results(run(fresh, arch="s390"))[-1] == 0


# ---- knobs for behaviour newer than v6.6 (found by crosscheck on a 6.18 host) ----

def test_huge_zero_wp_knob():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 1], ["fault", 1, W, 0], ["fault", 1, W + 4 * K, 1]]
    r, f = figs(ops)
    assert blocks(f, 3) == ()  # v6.6: split, then a 4K COW
    r, f = figs(ops, knobs={"mm.huge_zero_wp": "thp"})
    assert blocks(f, 3) == (W,) and window_bytes(f, 3) == window_bytes(f, 2)  # 6.13+: a THP, the deposit stays
    assert events_at(r, 3, EV_NOTIFY) and kind(r) is None


def test_collapse_readonly_knob():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 1], ["fault", 1, W, 0], ["madvise", 1, W, 4 * K, 0],
           ["madvise", 1, W, 2 * M, 3]]
    assert results(run(ops, arch=X))[-1] == -22  # v6.6: only zero-page PTEs, SCAN_PAGE_RO
    r, f = figs(ops, knobs={"mm.collapse_readonly": "yes"})
    assert results(r)[-1] == 0 and blocks(f, 4) == (W,)


def test_collapse_subblock_knob():
    ops = [["exec", 1, -1], ["mmap", 1, W, 4 * M, 1], ["fault", 1, W, 0], ["madvise", 1, W + 4 * K, 4 * K, 3]]
    assert results(run(ops, arch=X))[-1] == -22  # v6.6: hstart past hend, a "negative" block count
    r, f = figs(ops, knobs={"mm.collapse_subblock": "ok"})
    assert results(r)[-1] == 0 and blocks(f, 3) == blocks(f, 2)  # 7.2: nothing to do (the huge zero page stays)
    # what is not inside one block keeps its v6.6 result: a NOHUGEPAGE VMA is still refused
    bad = ops[:2] + [["madvise", 1, W, 4 * M, 2], ["madvise", 1, W + 4 * K, 4 * K, 3]]
    assert results(run(bad, arch=X, knobs={"mm.collapse_subblock": "ok"}))[-1] == -22


def test_collapse_pmd_none_knob():
    ops = [["exec", 1, -1], ["mmap", 1, W, 4 * M, 0], ["fault", 1, W + 4 * M - 4 * K, 1],
           ["madvise", 1, W, 4 * M, 3]]
    r, f = figs(ops)
    assert results(r)[-1] == -22 and blocks(f, 3) == ()  # v6.6: SCAN_PMD_NONE at W ends the walk
    r, f = figs(ops, knobs={"mm.collapse_pmd_none": "continue"})
    assert results(r)[-1] == -22 and blocks(f, 3) == (W + 2 * M,)  # 7.2: on to the next block, collapsed


def test_merge_unfaulted_knob():
    ops = [["exec", 1, -1], ["mmap", 1, W, M, 1], ["mmap", 1, W + M, M, 0], ["fault", 1, W + M, 1],
           ["madvise", 1, W + M, M, 1], ["madvise", 1, W, 2 * M, 3]]
    assert results(run(ops, arch=X))[-1] == -22  # v6.6: the faulted range stays out of its unfaulted prev
    r, f = figs(ops, knobs={"mm.merge_unfaulted": "yes"})
    assert results(r)[-1] == 0 and blocks(f, 5) == (W,)
    # a forked (cloned-chain) range still does not merge
    fork = [["exec", 1, -1], ["mmap", 1, W, M, 1], ["mmap", 1, W + M, M, 0], ["fault", 1, W + M, 1], ["fork", 1, 2],
            ["munmap", 2, W, M], ["mmap", 2, W, M, 1], ["madvise", 2, W + M, M, 1], ["madvise", 2, W, 2 * M, 3]]
    assert results(run(fork, {"mm.merge_unfaulted": "yes"}, arch=X))[-1] == -22


# ---- round-3 corners (issue 16): each as v6.6 has it ----

def test_s390_unaligned_map_fixed_above_asce_limit_still_upgrades():
    """s390 arch_get_unmapped_area with MAP_FIXED goes straight to check_asce_limit ("addr + len > asce_limit &&
    addr + len <= TASK_SIZE": crst_table_upgrade), before get_unmapped_area's offset_in_page -EINVAL: the upgrade
    stays. The sum is unsigned, so a range that wraps to above the limit upgrades too, then fails (-ENOMEM)."""
    ops = [["exec", 1, -1], ["mmap", 1, (1 << 42) + 2 * K, M, 0], ["mmap", 1, (1 << 53) - M + 1, 2 * M, 0],
           ["mmap", 1, 1 << 42, M, 0]]
    r = run(ops, arch="s390", teardown=False)
    assert results(r) == [0, -22, -22, 0] and kind(r) is None
    assert [(ev[0], ev[3]) for ev in r.events if ev[1] == 8] == [(1, 4), (2, 5)]
    r = run([["exec", 1, -1], ["mmap", 1, (1 << 64) - (1 << 43), 1 << 44, 0]], arch="s390", teardown=False)
    assert results(r) == [0, -12] and [(ev[0], ev[3]) for ev in r.events if ev[1] == 8] == [(1, 4)]
    # a hugetlb mapping checks its alignment first (prepare_hugepage_range): no upgrade
    r = run([["exec", 1, -1], ["mmap", 1, (1 << 42) + M // 2, M, 2]], arch="s390", teardown=False)
    assert results(r) == [0, -22] and not [ev for ev in r.events if ev[1] == 8]
    assert kind(run(ops, arch="s390")) is None


# ---- Z5 (gup.fast_pmd_recheck): GUP-fast's grab against a collapse held between isolate and copy ----

Z5_WALK = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 1], ["walk_begin", 0, 1, W], ["walk_step", 0],
           ["walk_step", 0], ["walk_step", 0]]
NO_IPI = {"mm.collapse_gup_sync": "none"}


@pytest.mark.parametrize("recheck,want", [("yes", -11), ("no", 0)])
def test_walk_pin_rechecks_the_pmd_only_with_the_fix(recheck, want):
    ops = Z5_WALK + [["collapse_hold", 1], ["madvise", 1, W, 2 * M, 3], ["walk_pin", 0], ["walk_end", 0],
                     ["collapse_end", 1]]
    r = run(ops, dict(NO_IPI, **{"gup.fast_pmd_recheck": recheck}), arch="x86_64")
    assert results(r)[7:11] == [0, 0, want, 0] and kind(r) is None  # the grab is dropped before the copy


def test_walk_pin_held_across_the_copy_is_a_stale_pin():
    ops = Z5_WALK + [["collapse_hold", 1], ["madvise", 1, W, 2 * M, 3], ["walk_pin", 0], ["collapse_end", 1]]
    r = run(ops, dict(NO_IPI, **{"gup.fast_pmd_recheck": "no"}), arch="x86_64")
    assert kind(r) == "gup-stale-pin" and r.violation.op_index == 10


def test_walk_pin_before_the_collapse_fails_its_isolation_and_the_hold_makes_others_wait():
    ops = Z5_WALK + [["walk_pin", 0], ["madvise", 1, W, 2 * M, 3], ["walk_end", 0], ["collapse_hold", 1],
                     ["madvise", 1, W, 2 * M, 3], ["fault", 1, W + 4 * K, 1], ["munmap", 1, W, 2 * M], ["rcu_gp"],
                     ["walk_begin", 2, 1, W], ["walk_end", 2], ["collapse_end", 1], ["collapse_end", 1],
                     ["fault", 1, W + 4 * K, 1]]
    r = run(ops, NO_IPI, arch="x86_64")
    assert results(r)[7:] == [0, -11, 0, 0, 0, -16, -16, 0, 0, 0, 0, -22, 0] and kind(r) is None
