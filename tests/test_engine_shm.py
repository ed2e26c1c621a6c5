"""Shared memory (shmem objects, shm_mmap, shared faults, MADV_COLLAPSE of shmem with retract_page_tables) and what
an rmap walker holds, against v6.6 rule by rule (docs/model-notes.md names the kernel function of each test)."""
import pytest

from conftest import NONE, K, M, W, events_at, figs, kind, results, run, trace, translate
from ptfuzz.engine import replay

A = 0x10000000      # s390
P = 2 * M           # the x86_64 PMD size
EV_ALLOC, EV_FREE, EV_LEAF_SET, EV_LEAF_ZAP, EV_DATA_FREE, EV_GMAP_UNLINK, EV_NOTIFY, EV_S2_ZAP = 0, 1, 5, 6, 7, 10, 11, 15
EV_SHM_COLLAPSE, EV_RETRACT = 16, 17


def blocks(f, i, pid):
    return f[i][pid][1] if pid in f[i] else ()


# ---- shm_mmap ----

def test_shm_mmap_argument_checks_follow_do_mmap():
    r = run([["exec", 1, -1], ["shm_mmap", 1, W, 0, 0, 0], ["shm_mmap", 1, W + 1, P, 0, 0],
             ["shm_mmap", 1, W, P, 0, (1 << 64) - 16], ["shm_mmap", 1, W, P, 0, 1 << 51],
             ["shm_mmap", 1, W, P, 0, (1 << 51) - 1024], ["shm_mmap", 9, W, P, 0, 0], ["shm_mmap", 1, W, P, 15, 7]],
            arch="x86_64")
    # len 0 -22; unaligned -22; pgoff + pages wraps -75 (offset overflow); past MAX_LFS_FILESIZE -75 (file_mmap_ok)
    assert results(r) == [0, -22, -22, -75, -75, 0, -3, 0]


def test_shared_faults_map_the_objects_page_in_every_process():
    ops = [["exec", 1, -1], ["exec", 2, -1], ["shm_mmap", 1, W, P, 3, 0], ["shm_mmap", 2, W + 8 * P, P, 3, 16],
           ["fault", 1, W + 16 * 4 * K, 1], ["fault", 2, W + 8 * P, 0], ["fault", 2, W + 8 * P + 4 * K, 0]]
    t1, t2, t3 = translate(ops, [(1, W + 64 * K), (2, W + 8 * P), (2, W + 8 * P + 4 * K)])
    assert t1 == t2 and t3 not in (t1, NONE)  # page offset 16 is one page; 17 is another, allocated by the read


def test_read_maps_read_only_and_a_write_reuses_the_page_without_notifying():
    ops = [["exec", 1, -1], ["shm_mmap", 1, W, P, 0, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, W, P],
           ["fault", 1, W, 0], ["guest_fault", 0, 0, 0], ["fault", 1, W, 1]]
    r = run(ops, arch="x86_64")
    assert kind(r) is None
    assert not events_at(r, 6, EV_NOTIFY) and not events_at(r, 6, EV_LEAF_SET)  # wp_page_shared -> wp_page_reuse
    assert translate(ops[:5], [(1, W)]) == translate(ops, [(1, W)])


def test_read_fault_maps_cached_neighbours_around_it():
    # do_fault_around: 64K aligned, clipped to the VMA (and the PTE table); cached pages only, read-only
    ops = [["exec", 1, -1], ["exec", 2, -1], ["shm_mmap", 1, W, P, 0, 0]] + \
          [["fault", 1, W + i * 4 * K, 1] for i in (0, 3, 15, 16)] + \
          [["shm_mmap", 2, W + 4 * K, P, 0, 1], ["fault", 2, W + 8 * K, 0]]
    r = run(ops, arch="x86_64")
    mapped = [ev[3] for ev in events_at(r, 8, EV_LEAF_SET)]
    # pid 2 maps offset 1 at W+4K, so offset n at W+4n K. A read at offset 2 (pte 2): the window is ptes
    # max(0, 2 - 1)..min(0+16, 512, ...) - 1 = 1..16, offsets 1..16, of which 3, 15 and 16 are cached; then
    # ->fault allocates offset 2 (do_fault_around found the faulting page missing)
    assert mapped == [W + 12 * K, W + 60 * K, W + 64 * K, W + 8 * K]


def test_no_fault_around_with_64k_pages():
    ops = [["exec", 1, -1], ["shm_mmap", 1, W, 1 << 29, 0, 0], ["fault", 1, W + (1 << 16), 1], ["fault", 1, W, 0]]
    r = run(ops, arch="arm64", config={"granule": 65536, "va_bits": 48})
    assert len(events_at(r, 3, EV_LEAF_SET)) == 1


def test_shm_vmas_never_get_an_anon_vma_and_fork_copies_no_table():
    ops = [["exec", 1, -1], ["shm_mmap", 1, W, P, 0, 0], ["fault", 1, W, 1], ["fork", 1, 2], ["fault", 2, W, 1]]
    r, f = figs(ops)
    assert f[3][2][0] == f[1][1][0]  # the child has none of the parent's tables for it: vma_needs_copy says no
    assert f[4][2][0] == f[4][1][0]  # it re-faults the same page, which is never copied
    assert not events_at(r, 4, EV_NOTIFY) and translate(ops, [(1, W)]) == translate(ops, [(2, W)])


def test_dontneed_on_shm_zaps_and_the_cache_keeps_the_page():
    ops = [["exec", 1, -1], ["shm_mmap", 1, W, P, 0, 0], ["fault", 1, W, 1], ["madvise", 1, W, P, 0],
           ["munmap", 1, W, P], ["shm_mmap", 1, W + 4 * P, P, 0, 0], ["fault", 1, W + 4 * P, 0]]
    r = run(ops, arch="x86_64")
    assert events_at(r, 3, EV_LEAF_ZAP) and not [ev for ev in r.events if ev[1] == EV_DATA_FREE and ev[0] < 7]
    assert translate(ops[:3], [(1, W)]) == translate(ops, [(1, W + 4 * P)])
    # the object lets go of its pages at the end of the trace, after every mapping is gone
    assert [ev for ev in r.events if ev[1] == EV_DATA_FREE and ev[0] == 7 and ev[3] == 1]


def test_shm_pages_are_freed_only_by_the_object():
    # DONTNEED and munmap drop mappings; without teardown nothing frees the page
    ops = [["exec", 1, -1], ["shm_mmap", 1, W, P, 0, 0], ["fault", 1, W, 1], ["munmap", 1, W, P]]
    r = replay(trace(ops), steps=True, teardown=False)
    assert kind(r) is None and not [ev for ev in r.events if ev[1] == EV_DATA_FREE and ev[3] == 1]


def test_shm_vmas_merge_only_where_the_file_offsets_continue():
    # MADV_COLLAPSE needs a VMA holding the whole block: two halves merge into one only with contiguous pgoff
    half = P // 2
    for obj2, pgoff2, ok in ((0, half // (4 * K), 0), (0, half // (4 * K) + 1, -22), (1, half // (4 * K), -22)):
        ops = [["exec", 1, -1], ["shm_mmap", 1, W, half, 0, 0], ["shm_mmap", 1, W + half, half, obj2, pgoff2],
               ["fault", 1, W, 1], ["madvise", 1, W, P, 3]]
        assert results(run(ops, arch="x86_64"))[-1] == ok, (obj2, pgoff2)


def test_split_and_merge_of_shm_vmas_keep_the_file_offsets():
    # NOHUGEPAGE on one page splits the VMA in three; HUGEPAGE over all of it merges them again: the pieces'
    # vm_pgoff must still continue, or the collapse would find no VMA holding the block
    ops = [["exec", 1, -1], ["shm_mmap", 1, W, 2 * P, 0, 0], ["fault", 1, W + P, 1], ["madvise", 1, W + P, 4 * K, 2],
           ["madvise", 1, W, 2 * P, 1], ["madvise", 1, W + P, P, 3], ["fault", 1, W + P + 4 * K, 0]]
    r, f = figs(ops)
    assert results(r)[3:] == [0, 0, 0, 0] and blocks(f, 6, 1) == (W + P,)
    head, sub = translate(ops, [(1, W + P), (1, W + P + 4 * K)])
    assert sub == head + 1 and head % 512 == 0  # offsets 512.. are one PMD-size folio


# ---- do_set_pmd, split, zap of a file PMD ----

COLLAPSED = [["exec", 1, -1], ["exec", 2, -1], ["shm_mmap", 1, W, P, 0, 0], ["fault", 1, W + 4 * K, 1],
             ["madvise", 1, W, P, 3]]


def test_a_pmd_size_folio_is_mapped_by_a_pmd_only_where_the_vma_allows():
    ops = COLLAPSED + [["shm_mmap", 2, W + 4 * P, P, 0, 0], ["fault", 2, W + 4 * P + 8 * K, 0],
                       ["shm_mmap", 2, W + 8 * P + 4 * K, P, 0, 0], ["fault", 2, W + 8 * P + 8 * K, 0],
                       ["shm_mmap", 2, W + 12 * P, P // 2, 0, 0], ["fault", 2, W + 12 * P, 0]]
    r, f = figs(ops)
    assert blocks(f, 4, 1) == (W,)            # the caller's own mapping: a PMD leaf before madvise returns
    assert blocks(f, 6, 2) == (W + 4 * P,)    # congruent and inside the VMA: do_set_pmd, no deposit
    assert blocks(f, 10, 2) == (W + 4 * P,)   # not congruent, or the VMA shorter than the block: PTEs
    head = translate(COLLAPSED, [(1, W)])[0]
    sub = translate(ops, [(2, W + 8 * P + 8 * K), (2, W + 12 * P)])
    assert sub == [head + 1, head]
    assert f[6][2][0] == f[5][2][0] + 8 * K  # a pud and a pmd table for the leaf: no PTE table, no deposit


def test_caller_pmd_is_read_only_and_a_write_zaps_and_refaults_it():
    ops = COLLAPSED + [["fault", 1, W, 1]]
    r, f = figs(ops)
    assert [ev[3] for ev in events_at(r, 5, EV_LEAF_ZAP)] == [W] and blocks(f, 5, 1) == (W,)
    assert events_at(r, 5, EV_NOTIFY)  # __split_huge_pmd notifies the block


def test_split_and_partial_dontneed_of_a_file_pmd_zap_it_whole():
    for extra in (["split", 1, W + 8 * K], ["madvise", 1, W + 8 * K, 4 * K, 0], ["munmap", 1, W + P - 4 * K, 4 * K]):
        ops = COLLAPSED + [extra]
        r, f = figs(ops)
        assert results(r)[-1] == 0 and blocks(f, 5, 1) == (), extra
        assert translate(ops, [(1, W + 4 * K)]) == [NONE]
        assert f[5][1][0] == f[4][1][0]  # no PTE table: a file PMD split leaves the pmd none


def test_file_pmd_nohuge_knob_maps_ptes_in_a_nohugepage_vma():
    ops = COLLAPSED + [["shm_mmap", 2, W + 4 * P, P, 0, 0], ["madvise", 2, W + 4 * P, P, 2],
                       ["fault", 2, W + 4 * P, 0]]
    assert blocks(figs(ops)[1], 7, 2) == (W + 4 * P,)  # v6.6: do_set_pmd has no VM_NOHUGEPAGE test
    assert blocks(figs(ops, knobs={"mm.file_pmd_nohuge": "ptes"})[1], 7, 2) == ()


# ---- MADV_COLLAPSE of shmem ----

def test_collapse_retracts_every_mm_mapping_the_block():
    ops = [["exec", 1, -1], ["exec", 2, -1], ["exec", 3, -1], ["shm_mmap", 1, W, P, 0, 0],
           ["shm_mmap", 2, W + 4 * P, P, 0, 0], ["madvise", 2, W + 4 * P, P, 2],
           ["shm_mmap", 3, W + 8 * P + 4 * K, P, 0, 1], ["fault", 1, W, 1], ["fault", 2, W + 4 * P + 4 * K, 1],
           ["fault", 3, W + 8 * P + 8 * K, 1], ["madvise", 1, W, P, 3]]
    r, f = figs(ops)
    retracted = sorted((ev[2], ev[3]) for ev in events_at(r, 10, EV_RETRACT))
    # pid 1 (caller) and pid 2 (VM_NOHUGEPAGE: not checked) lose their PTE tables; pid 3 is not congruent and
    # keeps its table, with its PTEs of the block unmapped
    assert [va for _, va in retracted] == [W, W + 4 * P]
    assert f[10][2][0] == f[9][2][0] - 4 * K and f[10][3][0] == f[9][3][0]
    assert translate(ops, [(3, W + 8 * P + 8 * K), (2, W + 4 * P + 4 * K)]) == [NONE, NONE]
    assert len(events_at(r, 10, EV_LEAF_ZAP)) == 3 and blocks(f, 10, 1) == (W,)


def test_collapse_per_block_results():
    base = [["exec", 1, -1], ["exec", 2, -1], ["shm_mmap", 1, W, 4 * P, 0, 0], ["fault", 1, W + P, 1],
            ["fault", 1, W + 3 * P, 1]]
    # an all-hole block (the first) is SCAN_TRUNCATED: -22 and the walk stops before the next
    r, f = figs(base + [["madvise", 1, W, 2 * P, 3]])
    assert results(r)[-1] == -22 and blocks(f, 5, 1) == ()
    # a block whose pmd has a table, and one never touched but under an existing pmd table: both succeed
    r, f = figs(base + [["fault", 1, W + 2 * P + 8 * K, 1], ["madvise", 1, W + P, 2 * P, 3]])
    assert results(r)[-1] == 0 and blocks(f, 6, 1) == (W + P, W + 2 * P)
    # already a PMD-size folio, PTE-mapped nowhere in the caller: success (collapse_pte_mapped_thp installs)
    r, f = figs(base + [["madvise", 1, W + P, P, 3], ["madvise", 1, W + P, P, 0], ["madvise", 1, W + P, P, 3]])
    assert results(r)[-3:] == [0, 0, 0] and blocks(f, 7, 1) == (W + P,)


def test_collapse_without_a_pmd_table_in_the_caller_still_collapses_and_retracts_the_others():
    ops = [["exec", 1, -1], ["exec", 2, -1], ["shm_mmap", 1, W, P, 0, 0], ["fault", 1, W, 1],
           ["shm_mmap", 2, W + (1 << 40), P, 0, 0], ["madvise", 2, W + (1 << 40), P, 3], ["fault", 2, W + (1 << 40), 0]]
    r, f = figs(ops, hi=W + (1 << 41))
    assert results(r)[5:] == [-22, 0]                  # SCAN_PMD_NULL: the block fails, the walk goes on
    assert [ev[2] for ev in events_at(r, 5, EV_RETRACT)] == [0] and events_at(r, 5, EV_SHM_COLLAPSE)
    assert blocks(f, 6, 2) == (W + (1 << 40),)         # the next fault maps the folio by a PMD


def test_collapse_pmd_alloc_knob_maps_the_folio_in_a_caller_without_tables():
    ops = [["exec", 1, -1], ["exec", 2, -1], ["shm_mmap", 1, W, P, 0, 0], ["fault", 1, W, 1],
           ["shm_mmap", 2, W + 4 * P, P, 0, 0], ["madvise", 2, W + 4 * P, P, 3]]
    r, f = figs(ops)
    assert results(r)[-1] == -22 and blocks(f, 5, 2) == ()  # v6.6: SCAN_PMD_NULL
    r, f = figs(ops, knobs={"mm.collapse_pmd_alloc": "yes"})
    assert results(r)[-1] == 0 and blocks(f, 5, 2) == (W + 4 * P,) and f[5][2][0] == f[4][2][0] + 8 * K


def test_file_retract_caller_knob_retracts_only_the_callers_table():
    # the parent has a PMD table but an empty pmd at the block; the child read a page of it (a PTE table)
    ops = [["exec", 1, -1], ["mmap", 1, W + 2 * P, P, 0], ["fault", 1, W + 2 * P, 1], ["shm_mmap", 1, W, P, 0, 0],
           ["fork", 1, 2], ["fault", 2, W, 0], ["madvise", 1, W, P, 3]]
    r, f = figs(ops)
    # v6.6: every mm's table is retracted and the caller gets the leaf
    assert results(r)[-1] == 0 and blocks(f, 6, 1) == (W,)
    assert [ev[2] for ev in events_at(r, 6, EV_RETRACT)] == [1]  # mm 1: the child
    r, f = figs(ops, knobs={"mm.file_retract": "caller"})
    # 6.1: the cache collapses, the caller's empty pmd answers SCAN_PMD_NONE (-22), the child keeps its table
    assert results(r)[-1] == -22 and blocks(f, 6, 1) == () and events_at(r, 6, EV_SHM_COLLAPSE)
    assert events_at(r, 6, EV_RETRACT) == [] and f[6][2][0] == f[5][2][0]
    # a caller with a PTE table there: collapse_and_free_pmd frees it at once, set_huge_pmd maps the folio
    mine = ops[:4] + [["fault", 1, W, 0], ["fork", 1, 2], ["fault", 2, W, 0], ["madvise", 1, W, P, 3]]
    r, f = figs(mine, knobs={"mm.file_retract": "caller"})
    assert results(r)[-1] == 0 and blocks(f, 7, 1) == (W,) and blocks(f, 7, 2) == ()
    assert [ev[2] for ev in events_at(r, 7, EV_RETRACT)] == [0] and events_at(r, 7, EV_FREE)  # mm 0: the caller
    assert kind(replay(trace(mine, "x86_64", {"mm.file_retract": "caller"}))) is None


def test_collapse_refuses_nohugepage_and_incongruent_vmas():
    ops = [["exec", 1, -1], ["shm_mmap", 1, W, P, 0, 0], ["madvise", 1, W, P, 2], ["fault", 1, W, 1],
           ["madvise", 1, W, P, 3], ["shm_mmap", 1, W + 4 * P, P, 0, 1], ["fault", 1, W + 4 * P, 1],
           ["madvise", 1, W + 4 * P, P, 3], ["shm_mmap", 1, W + 8 * P, P, 0, 0], ["madvise", 1, W + 8 * P, P, 1],
           ["madvise", 1, W + 8 * P, P, 3]]
    # VM_NOHUGEPAGE and a VMA whose start and pgoff are not congruent: hugepage_vma_check -22; VM_HUGEPAGE and
    # shmem_enabled=never are ignored (shmem_is_huge with force)
    assert [results(run(ops, arch="x86_64"))[i] for i in (4, 7, 10)] == [-22, -22, 0]


def test_collapse_notifies_every_vm_mapping_the_pages():
    ops = [["exec", 1, -1], ["exec", 2, -1], ["shm_mmap", 1, W, P, 0, 0], ["vm_create", 0, 1, 0],
           ["memslot", 0, 0, 0, W, P], ["guest_fault", 0, 4 * K, 1], ["shm_mmap", 2, W, P, 0, 0],
           ["fault", 2, W, 1], ["madvise", 2, W, P, 3], ["guest_fault", 0, 4 * K, 1]]
    for arch in ("x86_64", "arm64"):
        r = run(ops, arch=arch)
        assert kind(r) is None and events_at(r, 8, EV_S2_ZAP), arch  # try_to_unmap_one's notifier


def test_old_pages_are_freed_by_collapse_and_the_folio_at_the_end():
    r = run(COLLAPSED, arch="x86_64")
    freed = [ev for ev in r.events if ev[1] == EV_DATA_FREE]
    assert [(ev[0], ev[3]) for ev in freed if ev[0] == 4] == [(4, 1)]
    assert [ev[3] for ev in freed if ev[0] == 5] == [1, 1, 512]  # teardown: the stack pages, the shmem folio


# ---- s390: retract_page_tables and the gmap (docs/bench.md M1) ----

M1 = [["exec", 1, 0], ["vm_create", 0, 1, 0], ["shm_mmap", 1, A, M, 0, 0], ["memslot", 0, 0, 0, A, M],
      ["guest_fault", 0, 0, 1], ["exec", 2, -1], ["shm_mmap", 2, 2 * A, M, 0, 0], ["madvise", 2, 2 * A, M, 3]]


def test_m1_retract_frees_a_table_the_gmap_links():
    r = run(M1)
    assert kind(r) == "gmap-dangling" and r.violation.op_index == 7
    assert [ev[2] for ev in events_at(r, 7, EV_RETRACT)] == [0]  # P's table, whatever P's VM_NOHUGEPAGE says
    assert results(r)[7] == -22  # Q itself has no pmd table there: SCAN_PMD_NULL, after the damage


@pytest.mark.parametrize("change", [
    {"knobs": {"s390.defer_gmap_unlink": "yes"}},
    {"op": (2, ["shm_mmap", 1, A, M, 0, 1])},                                   # not congruent
    {"op": (2, ["shm_mmap", 1, A + 4 * K, M - 4 * K, 0, 1])},                   # block not inside the VMA
])
def test_m1_controls_are_clean(change):
    ops = [list(o) for o in M1]
    if "op" in change:
        ops[change["op"][0]] = change["op"][1]
    r = run(ops, change.get("knobs"))
    assert kind(r) is None
    if "knobs" in change:
        assert events_at(r, 7, EV_GMAP_UNLINK)


@pytest.mark.parametrize("knobs", [{"s390.pgste_decision": "sysctl-only"}, {"s390.pgste_decision": "convert-late"},
                                   {"s390.pt_alloc": "full-page"}])
def test_m1_is_reached_under_the_bench_controls_that_keep_defer_gmap_unlink_off(knobs):
    ops = [["sysctl_allocate_pgste", 1]] + [list(o) for o in M1]
    ops[1] = ["exec", 1, 1]  # a plain ELF: the sysctl (or convert-late's vm_create) gives the VM process PGSTEs
    assert kind(run(ops, knobs)) == "gmap-dangling"
    assert kind(run(ops, {**knobs, "s390.defer_gmap_unlink": "yes"})) is None


def test_pgste_mm_maps_a_pmd_size_folio_by_a_pmd_and_the_guest_cannot_link_it():
    # v6.6 do_set_pmd has no VM_NOHUGEPAGE test: P refaults the collapsed folio as a PMD leaf; __gmap_link -14
    ops = [list(o) for o in M1] + [["guest_fault", 0, 0, 1]]
    r = run(ops, {"s390.defer_gmap_unlink": "yes"})
    assert results(r)[-1] == -14
    r = run(ops, {"s390.defer_gmap_unlink": "yes", "mm.file_pmd_nohuge": "ptes"})
    assert results(r)[-1] == 0


# ---- what an rmap walker holds ----

def test_rmap_begin_needs_a_mapped_page_and_then_holds_nothing():
    ops = [["exec", 1, -1], ["mmap", 1, W, P, 0], ["rmap_begin", 0, 1, W], ["fault", 1, W, 0],
           ["rmap_begin", 0, 1, W], ["munmap", 1, W, P]]
    assert results(run(ops, arch="x86_64"))[2:] == [-2, 0, -2, 0]  # no table; the zero page: on no rmap


ANON = [["exec", 1, -1], ["mmap", 1, W, 2 * P, 0], ["fault", 1, W, 1], ["fault", 1, W + P, 1], ["rmap_begin", 0, 1, W]]


@pytest.mark.parametrize("op,want", [
    (["munmap", 1, W + P, 4 * K], -16),                 # __split_vma + unlink_anon_vmas of the walker's anon_vma
    (["mmap", 1, W + P, 4 * K, 0], -16),                # MAP_FIXED replacement
    (["mmap", 1, W + 2 * P, P, 0], -16),                # vma_expand of the walker's VMA
    (["mmap", 1, W + 4 * P, P, 0], 0),                  # a VMA of its own
    (["madvise", 1, W + P, 4 * K, 2], -16),             # a split (vma_prepare)
    (["madvise", 1, W, 2 * P, 1], 0),                   # a flags change of the whole VMA, no merge: no lock
    (["fork", 1, 2], -16),                              # anon_vma_fork
    (["exit", 1], -16),                                 # exit_mmap's free_pgtables
    (["exec", 1, -1], -16),                             # exec_mmap's mmput of the old mm
    (["exec", 1, 2], -8),                               # ... but an exec that fails first does not wait
    (["madvise", 1, W, P, 3], -11),                     # the walker's folio is off the LRU: SCAN_PAGE_LRU
    (["madvise", 1, W + P, P, 3], -16),                 # collapse_huge_page: anon_vma_lock_write
    (["madvise", 1, W, 2 * P, 0], 0),                   # zap takes neither lock
    (["fault", 1, W + 4 * K, 1], 0),
    (["rmap_begin", 1, 1, W], -16),                     # folio_lock: the other walker holds it
    (["rmap_begin", 1, 1, W + P], 0),                   # read locks do not exclude each other
])
def test_rmap_walker_exclusions_anon(op, want):
    r = run(ANON + [op, ["rmap_commit", 0], op], arch="x86_64")
    res = results(r)
    assert kind(r) is None and res[5] == want, res
    if want == -16:
        assert res[6] == 0 and res[7] in (0, -11, -2)  # once the walker is done the path runs


def test_rmap_walker_lock_is_the_anon_vma_root_shared_with_forked_children():
    ops = [["exec", 1, -1], ["mmap", 1, W, P, 0], ["fault", 1, W, 1], ["fork", 1, 2], ["fault", 2, W + 4 * K, 1],
           ["rmap_begin", 0, 2, W + 4 * K], ["munmap", 1, W, P], ["exit", 2], ["rmap_commit", 0], ["exit", 2]]
    assert results(run(ops, arch="x86_64"))[5:] == [0, -16, -16, 0, 0]


def test_write_fault_copies_a_folio_a_walker_holds_instead_of_reusing_it():
    ops = [["exec", 1, -1], ["mmap", 1, W, P, 0], ["fault", 1, W, 1], ["fork", 1, 2], ["exit", 2],
           ["rmap_begin", 0, 1, W], ["fault", 1, W, 1]]
    r = run(ops, arch="x86_64")
    assert events_at(r, 6, EV_LEAF_SET)  # wp_can_reuse_anon_folio: folio_trylock fails, wp_page_copy
    assert not events_at(run(ops[:5] + ops[6:], arch="x86_64"), 5, EV_LEAF_SET)


SHM = [["exec", 1, -1], ["exec", 2, -1], ["shm_mmap", 1, W, P, 0, 0], ["fault", 1, W, 1],
       ["shm_mmap", 2, W + 4 * P, P, 0, 0], ["shm_mmap", 2, W + 8 * P, P, 1, 0], ["rmap_begin", 0, 1, W]]


@pytest.mark.parametrize("op,want", [
    (["shm_mmap", 2, W + 12 * P, P, 0, 0], -16),        # vma_link: i_mmap_rwsem of the object for write
    (["shm_mmap", 2, W + 12 * P, P, 1, 0], 0),          # another object
    (["munmap", 2, W + 4 * P, P], -16),                 # another mm's VMA of the object: unlink_file_vma
    (["exit", 2], -16),
    (["fork", 2, 3], -16),                              # dup_mmap inserts the child's VMA into i_mmap
    (["fault", 2, W + 4 * P, 0], -16),                  # shmem_fault's folio_lock
    (["fault", 2, W + 4 * P + 4 * K, 1], 0),            # another page
    (["fault", 1, W, 1], 0),                            # the walker's own mapping, already writable
    (["madvise", 2, W + 4 * P, P, 3], -11),             # hpage_collapse_scan_file: off the LRU
    (["madvise", 2, W + 4 * P, P, 0], 0),
])
def test_rmap_walker_exclusions_shm(op, want):
    r = run(SHM + [op, ["rmap_commit", 0], op], arch="x86_64")
    res = results(r)
    assert kind(r) is None and res[7] == want, res
    if want == -16:
        assert res[8] == 0 and res[9] == 0


def test_collapse_of_another_block_runs_beside_a_walker():
    # retract_page_tables takes i_mmap_rwsem for read only: another block of the object collapses
    ops = [["exec", 1, -1], ["shm_mmap", 1, W, 2 * P, 0, 0], ["fault", 1, W, 1], ["fault", 1, W + P, 1],
           ["rmap_begin", 0, 1, W], ["madvise", 1, W + P, P, 3], ["rmap_commit", 0]]
    r = run(ops, arch="x86_64")
    assert results(r)[5:] == [0, 0] and events_at(r, 5, EV_RETRACT)


def test_guest_fault_commit_waits_when_its_mmput_would_run_exit_mmap():
    ops = [["exec", 1, -1], ["mmap", 1, W, P, 0], ["fault", 1, W + 4 * K, 1], ["vm_create", 0, 1, 0],
           ["memslot", 0, 0, 0, W, P], ["guest_fault_begin", 1, 0, 0, 1], ["rmap_begin", 0, 1, W + 4 * K],
           ["exit", 1], ["guest_fault_commit", 1], ["rmap_commit", 0], ["guest_fault_commit", 1]]
    # the walker's try_to_unmap_one notified the VM meanwhile: the commit then retries (-11)
    assert results(run(ops, arch="x86_64"))[7:] == [0, -16, 0, -11]


def test_model_notes_name_tests_that_exist():
    """Every test docs/model-notes.md names for a rule exists (the table is the drift guard's index)."""
    import re
    from conftest import ROOT
    files = {"host": "test_engine_host.py", "s390": "test_engine_s390.py", "kvm": "test_engine_kvm.py",
             "shm": "test_engine_shm.py", "test_properties": "test_properties.py"}
    defs = {k: set(re.findall(r"^def (test_\w+)", (ROOT / "tests" / f).read_text(), re.M)) for k, f in files.items()}
    missing, named = [], 0
    for row in (ROOT / "docs" / "model-notes.md").read_text().splitlines():
        if not row.startswith("|"):
            continue
        prefix = None  # "shm:test_a, test_b": the prefix carries over a cell's comma-separated list
        for part in re.split(r",\s*|;\s*", row.rstrip("|").split("|")[-1]):
            m = re.match(r"\s*(?:(host|s390|kvm|shm|test_properties):)?(test_\w+)", part)
            if not m:
                prefix = None
                continue
            prefix = m.group(1) or prefix
            if prefix:
                named += 1
                if m.group(2) not in defs[prefix]:
                    missing.append(f"{prefix}:{m.group(2)}")
    assert named > 100 and not missing, missing
