"""mremap as v6.6 does it (native_ext/mm/mremap.c, docs/model-notes.md "mremap"): moves keep the pages, whole PTE
tables move where the arch has HAVE_MOVE_PMD (x86_64, arm64) and PTE by PTE on s390, THP and hugetlb leaves move
whole, the in-place forms, the hold, the rmap-lock waits of the fix, and the flushes that keep TLBs clean."""
import pytest

from conftest import M, W, figs, kind, results, run, translate

S390_BASE = 0x10000000


def base(arch):
    return S390_BASE if arch == "s390" else W


def pmd(arch):
    return M if arch == "s390" else 2 * M


@pytest.mark.parametrize("arch", ["x86_64", "arm64", "s390"])
def test_a_move_keeps_the_pages_and_empties_the_old_range(arch):
    b, p = base(arch), pmd(arch)
    ops = [["exec", 1, -1], ["mmap", 1, b, p, 0], ["fault", 1, b, 1], ["fault", 1, b + 0x3000, 1]]
    before = translate(ops, [(1, b), (1, b + 0x3000)], arch=arch)
    moved = ops + [["mremap", 1, b, p, b + 8 * p, p]]
    after = translate(moved, [(1, b + 8 * p), (1, b + 8 * p + 0x3000), (1, b)], arch=arch)
    assert after[:2] == before and after[2] == (1 << 64) - 1  # the old address translates to nothing


@pytest.mark.parametrize("arch,whole", [("x86_64", True), ("arm64", True), ("s390", False)])
def test_the_pte_table_moves_whole_only_with_have_move_pmd(arch, whole):
    """x86_64 and arm64 select HAVE_MOVE_PMD: move_normal_pmd relinks the PTE table (no new one); s390 does not:
    move_ptes fills a new PTE table and the old one is freed with the old range."""
    b, p = base(arch), pmd(arch)
    ops = [["exec", 1, -1], ["mmap", 1, b, p, 0], ["fault", 1, b, 1], ["mremap", 1, b, p, b + p, p]]
    r = run(ops, arch=arch)
    assert results(r) == [0, 0, 0, 0] and kind(r) is None
    allocs = [ev for ev in r.events if ev[0] == 3 and ev[1] == 0]  # EV_TABLE_ALLOC during the mremap
    assert (not allocs) == whole, allocs


def test_a_thp_moves_as_a_pmd_leaf():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 1], ["fault", 1, W, 1], ["mremap", 1, W, 2 * M, W + 8 * M, 2 * M],
           ["fault", 1, W + 8 * M, 1], ["munmap", 1, W + 8 * M, 2 * M]]
    r, f = figs(ops)
    assert results(r) == [0] * 6 and kind(r) is None
    assert f[2][1][1] == (W,) and f[3][1][1] == (W + 8 * M,)  # PMD-mapped there, then here (the deposit went along)


def test_a_partial_thp_move_splits_it_first():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 1], ["fault", 1, W, 1], ["mremap", 1, W, M, W + 8 * M, M]]
    r, f = figs(ops)
    assert results(r) == [0] * 4 and kind(r) is None and f[3][1][1] == ()


def test_in_place_shrink_and_growth():
    ops = [["exec", 1, -1], ["mmap", 1, W, 0x4000, 0], ["fault", 1, W + 0x3000, 1],
           ["mremap", 1, W, 0x4000, W, 0x1000],          # shrink: the tail unmapped
           ["fault", 1, W + 0x3000, 1],                  # gone
           ["mremap", 1, W, 0x1000, W, 0x8000],          # grow where it is
           ["fault", 1, W + 0x7000, 1],
           ["mmap", 1, W + 0x9000, 0x1000, 0],
           ["mremap", 1, W, 0x8000, W, 0x10000],         # a VMA in the way, no MREMAP_MAYMOVE
           ["mremap", 1, W, 0x10000, W, 0x20000],        # old_len past the VMA
           ["mremap", 1, W + 0x100000, 0x1000, W + 0x100000, 0x2000],  # no VMA
           ["mremap", 1, W + 1, 0x1000, W + 1, 0x2000]]  # unaligned
    assert results(run(ops, arch="x86_64")) == [0, 0, 0, 0, -14, 0, 0, 0, -12, -14, -14, -22]


def test_fixed_moves_refuse_overlap_and_replace_the_target():
    ops = [["exec", 1, -1], ["mmap", 1, W, 4 * M, 0], ["fault", 1, W, 1], ["mmap", 1, W + 8 * M, 2 * M, 0],
           ["fault", 1, W + 8 * M, 1],
           ["mremap", 1, W, 2 * M, W + M, 2 * M],              # overlapping ranges
           ["mremap", 1, W, 2 * M, W + 8 * M + 0x1000, 2 * M],  # unaligned target is fine if page-aligned
           ["mremap", 1, W + 2 * M, 2 * M, W + 8 * M + 0x800, 2 * M]]  # not page-aligned
    r = run(ops, arch="x86_64")
    assert results(r) == [0, 0, 0, 0, 0, -22, 0, -22] and kind(r) is None


def test_hugetlb_rules():
    h = 2 * M
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * h, 2], ["fault", 1, W, 1],
           ["mremap", 1, W, h, W, 2 * h],              # growth: -22
           ["mremap", 1, W, h, W + 8 * h + 0x1000, h],  # target not huge-aligned: -22
           ["mremap", 1, W + 0x1000, h, W + 8 * h, h],  # source not huge-aligned: -22
           ["mremap", 1, W, 2 * h, W + 8 * h, 1],       # lengths rounded to the huge page: a 2M move, then a shrink
           ["fault", 1, W + 8 * h, 0]]
    before = translate(ops[:3], [(1, W)])
    assert results(run(ops, arch="x86_64")) == [0, 0, 0, -22, -22, -22, 0, 0]
    assert translate(ops, [(1, W + 8 * h)]) == before


def test_multi_vma_moves_are_6_17s():
    ops = [["exec", 1, -1], ["mmap", 1, W, 0x1000, 0], ["mmap", 1, W + 0x3000, 0x1000, 0], ["fault", 1, W + 0x3000, 1],
           ["mremap", 1, W, 0x4000, W + 8 * M, 0x4000], ["fault", 1, W + 8 * M + 0x3000, 0]]
    assert results(run(ops, arch="x86_64"))[4] == -14
    r = run(ops, arch="x86_64", knobs={"mremap.move_multi_vma": "yes"})
    assert results(r)[4:] == [0, 0] and kind(r) is None


@pytest.mark.parametrize("arch", ["x86_64", "arm64", "s390"])
def test_a_move_flushes_the_old_range(arch):
    """Cpus cached the old address (and the walk to it): after the move and the unmap of the new range, no TLB
    holds the freed page."""
    b, p = base(arch), pmd(arch)
    ops = [["exec", 1, -1], ["mmap", 1, b, p, 0], ["fault", 1, b, 1], ["tlb_access", 0, 1, b, 1],
           ["mremap", 1, b, p, b + 8 * p, p], ["tlb_access", 1, 1, b + 8 * p, 0], ["munmap", 1, b + 8 * p, p]]
    r = run(ops, arch=arch)
    assert results(r) == [0] * 7 and kind(r) is None


def test_the_hold_keeps_mmap_lock_until_mremap_end():
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 1], ["mremap_hold", 1],
           ["mremap", 1, W, 2 * M, W + 8 * M, 2 * M],
           ["mmap", 1, W + 32 * M, 0x1000, 0],  # mmap_lock for write: waits
           ["tlb_access", 0, 1, W + 8 * M, 0],  # no lock: the moved page is there
           ["mremap_end", 1], ["mmap", 1, W + 32 * M, 0x1000, 0], ["mremap_end", 1]]
    assert results(run(ops, arch="x86_64")) == [0, 0, 0, 0, 0, -16, 0, 0, 0, -22]


def test_the_fixed_table_move_waits_for_an_rmap_walker():
    """97113eb39fa7: move_normal_pmd takes the rmap locks for write, which an rmap walker holds for read (-16,
    nothing moved); before it (read), a new VMA's move takes none."""
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 1], ["rmap_begin", 0, 1, W], ["mremap_hold", 1],
           ["mremap", 1, W, 2 * M, W + 8 * M, 2 * M]]
    assert results(run(ops, arch="x86_64"))[-1] == -16
    assert results(run(ops, arch="x86_64", knobs={"mremap.move_pgt_rmap": "read"}))[-1] == 0
    # without the hold the old range's unmap would wait for the walker too, whatever the knob
    no_hold = ops[:4] + ops[5:]
    assert results(run(no_hold, arch="x86_64", knobs={"mremap.move_pgt_rmap": "read"}))[-1] == -16
    # a PTE-by-PTE move (not PMD-aligned) needs no rmap lock for a new VMA
    pte = ops[:5] + [["mremap", 1, W, 2 * M, W + 8 * M + 0x1000, 2 * M]]
    assert results(run(pte, arch="x86_64"))[-1] == 0
