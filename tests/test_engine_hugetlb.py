"""MAP_SHARED hugetlbfs mappings and PMD sharing (issue 20): huge_pmd_share, huge_pmd_unshare, the split's unshare,
the unshare hold and hugetlb.unshare_flush, against v6.6 rule by rule (docs/model-notes.md, "hugetlb PMD sharing")."""
import pytest

from conftest import G, M, W, events_at, figs, kind, results, run

P = 2 * M  # PMD_SIZE on x86_64 and arm64/4K; PUD_SIZE is G there
T = 4096   # one page table (a PUD or PMD table)
EV_LEAF_ZAP = 6  # enum event (native_ext/ptf.h)
PRE = {"hugetlb.unshare_flush": "before-a4a118f2eead"}


def blocks(f, i, pid):
    return f[i][pid][1] if pid in f[i] else None


def tables(f, i, pid):
    return f[i][pid][0] if pid in f[i] else None


# ---- mapping ----

def test_hugetlb_mmap_rounds_up_to_the_huge_page_and_wants_an_aligned_offset():
    r, f = figs([["exec", 1, -1], ["hugetlb_mmap", 1, W, 4096, 0, 0], ["hugetlb_mmap", 1, W + 4 * P, P, 0, 1],
                 ["hugetlb_mmap", 1, W + 4 * P, P, 0, 512], ["hugetlb_mmap", 1, W + 1, P, 0, 0],
                 ["hugetlb_mmap", 1, W, P, 8, 0], ["fault", 1, W + P - 4096, 1]])
    # a page is a huge page; pgoff 1 is not huge-page aligned (hugetlbfs_file_mmap, after the unmap); the address
    # must be (prepare_hugepage_range); file 8 does not exist
    assert results(r) == [0, 0, -22, 0, -22, -22, 0]
    assert blocks(f, 6, 1) == (W,)


def test_shared_faults_map_the_files_page_writable_and_fork_copies_no_table():
    r, f = figs([["exec", 1, -1], ["hugetlb_mmap", 1, W, G, 0, 0], ["fault", 1, W, 0], ["fork", 1, 2],
                 ["fault", 2, W, 1], ["fault", 1, W, 1]])
    assert results(r) == [0] * 6 and kind(r) is None
    # vma_needs_copy: no anon_vma in a shared mapping, nothing copied; the child's fault shares the parent's table
    assert blocks(f, 3, 2) == () and blocks(f, 4, 2) == (W,)
    # the child's fault allocates its PUD table only (level 2); the parent's made a PUD and a PMD table (level 3)
    assert [e[2] for e in r.events if e[1] == 0 and e[0] == 2] == [2, 3]
    assert [e[2] for e in r.events if e[1] == 0 and e[0] == 4] == [2]


def test_a_second_process_shares_the_pmd_table_and_sees_the_first_ones_pages():
    ops = [["exec", 1, -1], ["hugetlb_mmap", 1, W, G, 0, 0], ["fault", 1, W, 1], ["fault", 1, W + 3 * P, 1],
           ["fork", 1, 2], ["fault", 2, W + 5 * P, 0], ["fault", 1, W + 7 * P, 1]]
    r, f = figs(ops)
    assert kind(r) is None
    # the child's fault links the parent's PMD table (mm_inc_nr_pmds: it counts it too) and so maps every page the
    # parent faulted, and later ones, without a fault of its own
    assert blocks(f, 5, 2) == (W, W + 3 * P, W + 5 * P) == blocks(f, 5, 1)
    assert blocks(f, 6, 2) == (W, W + 3 * P, W + 5 * P, W + 7 * P)
    assert tables(f, 5, 2) == tables(f, 5, 1)


def test_another_mapping_of_the_same_offsets_shares_at_another_pud_but_not_other_offsets_or_files():
    base = [["exec", 1, -1], ["exec", 2, -1], ["hugetlb_mmap", 1, W, G, 0, 0], ["fault", 1, W + P, 1]]
    r, f = figs(base + [["hugetlb_mmap", 2, W + 4 * G, G, 0, 0], ["fault", 2, W + 4 * G, 0]])
    assert blocks(f, 5, 2) == (W + 4 * G, W + 4 * G + P)  # page_table_shareable: same pmd_index, same offsets
    for other in (["hugetlb_mmap", 2, W + 4 * G, G, 1, 0],        # another file
                  ["hugetlb_mmap", 2, W + 4 * G, G, 0, 512]):     # the same file one huge page further
        r, f = figs(base + [other, ["fault", 2, W + 4 * G, 0]])
        assert blocks(f, 5, 2) == (W + 4 * G,)


def test_sharing_wants_the_whole_pud_range_inside_the_vma():
    r, f = figs([["exec", 1, -1], ["exec", 2, -1], ["hugetlb_mmap", 1, W, G, 0, 0], ["fault", 1, W + P, 1],
                 ["hugetlb_mmap", 2, W, G - P, 0, 0], ["fault", 2, W, 0]])
    assert blocks(f, 5, 2) == (W,)  # vma_shareable: [W, W + G) is not inside [W, W + G - 2M): a table of its own
    assert tables(f, 5, 2) == tables(f, 5, 1)


def test_one_mm_may_share_its_own_table_through_two_mappings():
    r, f = figs([["exec", 1, -1], ["hugetlb_mmap", 1, W, G, 0, 0], ["hugetlb_mmap", 1, W + 2 * G, G, 0, 0],
                 ["fault", 1, W, 1], ["fault", 1, W + 2 * G + P, 1], ["munmap", 1, W, G],
                 ["fault", 1, W + 2 * G + 2 * P, 1]])
    assert kind(r) is None
    assert blocks(f, 4, 1) == (W, W + P, W + 2 * G, W + 2 * G + P)
    assert tables(f, 4, 1) == tables(f, 3, 1) + T  # counted once per pud that links it
    assert blocks(f, 6, 1) == (W + 2 * G, W + 2 * G + P, W + 2 * G + 2 * P)


def test_hugetlb_mappings_never_merge_at_mmap():
    # two halves of the PUD range with contiguous offsets of one file: merged, they would cover the PUD range and
    # another process's fault would share their table (and see the page at W + 2M); mmap_region tries the merge
    # with do_mmap's vm_flags, which lack the VM_HUGETLB | VM_DONTEXPAND hugetlbfs_file_mmap adds
    half = G // 2
    r, f = figs([["exec", 1, -1], ["hugetlb_mmap", 1, W, half, 0, 0], ["hugetlb_mmap", 1, W + half, half, 0, half // 4096],
                 ["fault", 1, W + P, 1], ["exec", 2, -1], ["hugetlb_mmap", 2, W + 4 * G, G, 0, 0],
                 ["fault", 2, W + 4 * G, 0]])
    assert results(r) == [0] * 7 and blocks(f, 6, 2) == (W + 4 * G,)


# ---- unsharing ----

def test_split_hugetlb_vmas_never_merge_again_so_a_part_shares_nothing():
    # crosscheck against 6.18 (gen seed 2): MADV_HUGEPAGE on the first huge page splits the VMA; a second
    # MADV_HUGEPAGE over both parts gives them equal flags, but hugetlb VMAs carry VM_DONTEXPAND (VM_SPECIAL) and
    # vma_merge refuses them: two VMAs stay, neither covers the PUD range, and the child's fault shares no table
    ops = [["exec", 3, -1], ["hugetlb_mmap", 3, W, G, 0, 0], ["madvise", 3, W, P, 1], ["fault", 3, W + G - 4096, 0],
           ["madvise", 3, W, G + 4096, 1], ["fork", 3, 4], ["fault", 4, W, 0]]
    r, f = figs(ops)
    assert results(r) == [0, 0, 0, 0, -12, 0, 0] and kind(r) is None
    assert blocks(f, 6, 4) == (W,) and blocks(f, 6, 3) == (W + G - P,)


def test_dontneed_of_one_huge_page_unshares_the_whole_pud_range():
    ops = [["exec", 1, -1], ["hugetlb_mmap", 1, W, G, 0, 0], ["fault", 1, W, 1], ["fault", 1, W + P, 1],
           ["fork", 1, 2], ["fault", 2, W, 0], ["madvise", 2, W + 4 * P, P, 0], ["fault", 2, W + P, 0]]
    r, f = figs(ops)
    assert kind(r) is None
    assert blocks(f, 6, 2) == () and tables(f, 6, 2) == tables(f, 5, 2) - T  # pud cleared, mm_dec_nr_pmds
    assert blocks(f, 6, 1) == (W, W + P)                                       # the parent keeps the table
    assert blocks(f, 7, 2) == (W, W + P)                                       # a fault shares it again


def test_a_split_inside_the_pud_range_unshares_it_first():
    ops = [["exec", 1, -1], ["hugetlb_mmap", 1, W, G, 0, 0], ["fault", 1, W, 1], ["fork", 1, 2],
           ["fault", 2, W, 0], ["munmap", 1, W + G // 2, P], ["fault", 1, W + P, 1], ["fault", 2, W + 2 * P, 1]]
    r, f = figs(ops)
    assert kind(r) is None
    # hugetlb_vm_op_split -> hugetlb_unshare_pmds: the parent (the table's owner) leaves it to the child
    assert blocks(f, 5, 1) == () and blocks(f, 5, 2) == (W,)
    assert blocks(f, 6, 1) == (W + P,)                       # its VMA no longer covers the PUD: a table of its own
    assert blocks(f, 7, 2) == (W, W + 2 * P)


def test_the_last_sharer_frees_the_table_and_every_count_comes_back():
    ops = [["exec", 1, -1], ["hugetlb_mmap", 1, W, G, 0, 0], ["fault", 1, W, 1], ["fork", 1, 2],
           ["fault", 2, W, 0], ["fork", 2, 3], ["fault", 3, W + P, 1], ["exit", 1], ["munmap", 2, W, G],
           ["fault", 3, W + 2 * P, 1], ["exit", 3]]
    r, f = figs(ops)
    assert results(r) == [0] * len(ops) and kind(r) is None  # the end-of-trace audit recounts bytes and leaves
    assert blocks(f, 9, 3) == (W, W + P, W + 2 * P)


def test_an_unmap_zaps_every_huge_page_of_a_table_and_skips_a_pud_range_without_one():
    # __unmap_hugepage_range: hugetlb_walk finds no PMD table in the first PUD range (address |= last_addr_mask),
    # then zaps each huge page of the second one's table; the pages stay in the file (a new mapping sees them)
    ops = [["exec", 1, -1], ["hugetlb_mmap", 1, W, 2 * G, 0, 0], ["fault", 1, W + G + P, 1],
           ["fault", 1, W + G + 3 * P, 1], ["fault", 1, W + 2 * G - P, 1], ["munmap", 1, W, 2 * G],
           ["hugetlb_mmap", 1, W + 4 * G, 2 * G, 0, 0], ["fault", 1, W + 5 * G + 3 * P, 0]]
    r, f = figs(ops)
    assert results(r) == [0] * len(ops) and kind(r) is None
    assert blocks(f, 4, 1) == (W + G + P, W + G + 3 * P, W + 2 * G - P)
    assert blocks(f, 5, 1) == ()
    assert len(events_at(r, 5, EV_LEAF_ZAP)) == 3


@pytest.mark.parametrize("arch,config", [("s390", {}), ("arm64", {"granule": 65536, "va_bits": 48})])
def test_no_sharing_without_arch_want_huge_pmd_share(arch, config):
    from conftest import trace
    from ptfuzz.engine import replay_figures
    pmd = 1 << 20 if arch == "s390" else 512 * M
    region = 2 << 30 if arch == "s390" else 4 << 40
    base = 0x10000000000 if arch == "s390" else W
    ops = [["exec", 1, -1], ["hugetlb_mmap", 1, base, region, 0, 0], ["fault", 1, base, 1], ["fork", 1, 2],
           ["fault", 2, base + pmd, 1]]
    r, f = replay_figures(trace(ops, arch, None, config), base, base + 2 * region, steps=True)
    assert r.violation is None
    assert f[4][2][1] == (base + pmd,)  # the child's own table: only its own page


# ---- the unshare hold and hugetlb.unshare_flush (Z10) ----

Z10 = [["exec", 1, -1], ["hugetlb_mmap", 1, W, G, 0, 0], ["fault", 1, W, 0], ["fork", 1, 3], ["fault", 3, W, 0],
       ["tlb_access", 0, 3, W, 0], ["unshare_hold", 0], ["munmap", 3, W, G], ["munmap", 1, W, G], ["rcu_gp"]]


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_the_unshare_flush_before_i_mmap_rwsem_is_dropped_is_what_keeps_the_pmd_table_out_of_the_tlb(arch):
    r = run(Z10, knobs=PRE, arch=arch)
    assert kind(r) == "stale-tlb" and r.violation.op_index == 9 and "cpu 0" in r.violation.message
    assert kind(run(Z10, arch=arch)) is None                                     # v6.6: flushed at the unshare
    assert kind(run(Z10[:6] + Z10[7:], knobs=PRE, arch=arch)) is None            # no hold: tlb_finish_mmu flushes
    assert kind(run(Z10[:5] + Z10[6:], knobs=PRE, arch=arch)) is None            # nothing cached


def test_the_held_munmap_keeps_mmap_lock_for_read():
    ops = Z10[:7] + [["munmap", 3, W, G], ["exit", 3], ["munmap", 3, W + 4 * G, P], ["fault", 3, W + 4 * G, 0],
                     ["hugetlb_mmap", 1, W + 4 * G, G, 0, 0], ["unshare_end", 1], ["unshare_end", 0],
                     ["exit", 3], ["unshare_end", 0]]
    r = run(ops, arch="x86_64")
    # exit (free_pgtables' mmap_lock for write) and munmap of the held mm wait; a fault (for read: no VMA there)
    # and another mm run; unshare_end on another cpu is -22, then the hold ends and exit goes; a cpu with no hold -22
    assert results(r)[7:] == [0, -16, -16, -14, 0, -22, 0, 0, -22]
    assert kind(r) is None


def test_an_armed_hold_takes_only_a_munmap_that_unshared_shared_hugetlb_only():
    base = [["exec", 1, -1], ["hugetlb_mmap", 1, W, G, 0, 0], ["fault", 1, W, 1], ["unshare_hold", 0]]
    r = run(base + [["munmap", 1, W, G], ["exit", 1], ["unshare_end", 0]], arch="x86_64")
    assert results(r)[4:] == [0, 0, 0]  # nothing shared: no stop, exit runs, the armed hold is cancelled
