"""The TLB model (issue 20, docs/model-notes.md "The TLB"): tlb_access fills a cpu's TLB, every kernel path that takes a
translation away flushes it before the page or table is freed, and the digest tells TLB contents apart."""
import pytest

from conftest import M, W, events_at, kind, results, run

ARCHES = ["x86_64", "arm64", "s390"]
S390_BASE = 0x10000000


def base(arch):
    return S390_BASE if arch == "s390" else W


def start(arch, thp=0):
    """exec pid 1, a 4 MiB mapping at the base, its first page written, and cpu 0 reading it through the TLB."""
    b = base(arch)
    return [["exec", 1, -1], ["mmap", 1, b, 4 * M, thp], ["fault", 1, b, 1], ["tlb_access", 0, 1, b, 0]]


@pytest.mark.parametrize("arch", ARCHES)
def test_tlb_access_translates_mapped_pages_and_faults_elsewhere(arch):
    b = base(arch)
    ops = start(arch) + [["tlb_access", 0, 1, b + 0x1000, 0],  # mapped VMA, no page: the access would fault
                         ["tlb_access", 0, 1, b, 1],           # a written page is writable
                         ["tlb_access", 0, 9, b, 0],           # no such process
                         ["tlb_access", 16, 1, b, 0]]          # no such cpu
    assert results(run(ops, arch=arch))[3:] == [0, -14, 0, -3, -22]


def test_tlb_access_waits_on_a_cpu_a_kernel_path_is_stopped_on():
    ops = start("x86_64") + [["walk_begin", 1, 1, W], ["tlb_access", 1, 1, W, 0], ["walk_end", 1],
                             ["tlb_access", 1, 1, W, 0]]
    assert results(run(ops, arch="x86_64"))[4:] == [0, -16, 0, 0]


# Every path that takes a translation away, run after cpus 0 and 1 cached it: each flushes before it frees, so
# the defaults stay clean (the pre-fix designs of issue 20's bugs are what leave an entry behind: docs/history.md).
PATHS = {
    "munmap": [["munmap", 1, "B", 2 * M]],
    "dontneed": [["madvise", 1, "B", 2 * M, 0]],
    "munmap-part": [["munmap", 1, "B", 0x1000]],
    "exit": [["exit", 1]],
    "exec": [["exec", 1, -1]],
    "cow-after-fork": [["fork", 1, 2], ["fault", 1, "B", 1], ["exit", 2]],
    "cow-of-the-child": [["fork", 1, 2], ["tlb_access", 1, 2, "B", 0], ["fault", 2, "B", 1], ["exit", 1]],
    "rmap": [["rmap_begin", 2, 1, "B"], ["rmap_commit", 2]],
    "collapse-then-unmap": [["madvise", 1, "B", 2 * M, 1], ["madvise", 1, "B", 2 * M, 3], ["munmap", 1, "B", 2 * M]],
    "map-fixed-over": [["mmap", 1, "B", 2 * M, 0]],
}


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_path_flushes_before_it_frees(arch, path):
    b = base(arch)
    ops = start(arch) + [["tlb_access", 1, 1, b, 1]]
    ops += [[v if v != "B" else b for v in op] for op in PATHS[path]]
    r = run(ops, arch=arch)
    assert kind(r) is None, r.violation


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_thp_split_and_zap_flush_the_block(arch):
    ops = [["exec", 1, -1], ["mmap", 1, W, 4 * M, 1], ["fault", 1, W, 1], ["tlb_access", 0, 1, W + 0x5000, 1],
           ["split", 1, W], ["tlb_access", 0, 1, W + 0x5000, 1], ["munmap", 1, W, 0x1000],
           ["fault", 1, W + 2 * M, 1], ["tlb_access", 1, 1, W + 2 * M, 0], ["madvise", 1, W + 2 * M, 2 * M, 0]]
    r = run(ops, arch=arch)
    assert results(r)[3:] == [0, 0, 0, 0, 0, 0, 0] and kind(r) is None


def test_the_digest_tells_tlb_contents_apart():
    from ptfuzz.engine import replay
    from conftest import trace
    plain = start("x86_64")[:3]
    d = {name: replay(trace(ops), teardown=False).digest for name, ops in {
        "none": plain, "cpu0": plain + [["tlb_access", 0, 1, W, 0]], "cpu0-again": plain + [["tlb_access", 0, 1, W, 0]],
        "cpu1": plain + [["tlb_access", 1, 1, W, 0]], "miss": plain + [["tlb_access", 0, 1, W + 0x1000, 0]]}.items()}
    assert d["cpu0"] == d["cpu0-again"]
    assert len({d["none"], d["cpu0"], d["cpu1"]}) == 3
    # a missed access still caches the walk (the table entries it went through), as paging-structure caches do
    assert d["miss"] != d["none"]


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_fork_flushes_the_parents_writable_entries(arch):
    """dup_mmap's flush_tlb_mm(oldmm): a store through the parent's cached writable entry after fork would bypass
    COW; the flushed TLB walks to the write-protected PTE and faults (-14), and after the COW fault it is writable."""
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 1], ["tlb_access", 0, 1, W, 1],
           ["fork", 1, 2], ["tlb_access", 0, 1, W, 1], ["fault", 1, W, 1], ["tlb_access", 0, 1, W, 1]]
    assert results(run(ops, arch=arch))[3:] == [0, 0, -14, 0, 0]


def test_a_file_pmd_split_flushes_the_block():
    """__split_huge_pmd_locked of a file PMD clears it with pmdp_huge_clear_flush: the cached 2 MiB translation goes
    with it (the page stays in the page cache, so only the flush tells)."""
    ops = [["exec", 1, -1], ["shm_mmap", 1, W, 2 * M, 0, 0], ["fault", 1, W, 1], ["madvise", 1, W, 2 * M, 1],
           ["madvise", 1, W, 2 * M, 3], ["tlb_access", 0, 1, W + 0x3000, 0], ["split", 1, W],
           ["tlb_access", 0, 1, W + 0x3000, 0]]
    assert results(run(ops, arch="x86_64"))[5:] == [0, 0, -14]


@pytest.mark.parametrize("knobs", [{}, {"mm.file_retract": "caller"}])
def test_shmem_collapse_and_retract_flush_each_mm(knobs):
    """collapse_file unmaps the old small pages from every mm (try_to_unmap_one's flush) and frees them; the caller's
    and the other mapping's PTE tables go by pmdp_collapse_flush (v6.6: retract_page_tables for the others and
    collapse_pte_mapped_thp for the caller; 6.1: the caller's collapse_and_free_pmd). Both cpus cached the walk."""
    ops = [["exec", 1, -1], ["exec", 2, -1], ["shm_mmap", 1, W, 2 * M, 0, 0], ["shm_mmap", 2, W, 2 * M, 0, 0],
           ["fault", 1, W, 1], ["fault", 2, W, 0], ["tlb_access", 0, 1, W, 0], ["tlb_access", 1, 2, W, 0],
           ["madvise", 1, W, 2 * M, 1], ["madvise", 1, W, 2 * M, 3], ["rcu_gp"], ["tlb_access", 1, 2, W, 0]]
    r = run(ops, arch="x86_64", knobs=knobs)
    assert kind(r) is None, r.violation
    assert results(r)[-1] == -14  # the other mapping's table was retracted, and its cpu no longer walks into it


def test_s390_convert_late_flushes_the_segment_it_replaces():
    """s390.pgste_decision=convert-late (v3.15-v4.5): vm_create copies each 2K PTE table into a full page and frees
    the old one; the segment entry's exchange (pmdp_xchg: IDTE) flushes the walk that cached the old table."""
    a = S390_BASE
    ops = [["exec", 1, -1], ["mmap", 1, a, M, 0], ["fault", 1, a, 1], ["tlb_access", 0, 1, a, 0],
           ["vm_create", 0, 1, 0], ["rcu_gp"], ["tlb_access", 0, 1, a, 0]]
    r = run(ops, arch="s390", knobs={"s390.pgste_decision": "convert-late"})
    assert results(r) == [0] * 7 and kind(r) is None


@pytest.mark.parametrize("knobs,want", [({}, None), ({"mm.tlb_gather": "none"}, "pfn"),
                                        ({"mm.tlb_gather": "none", "mm.table_free": "immediate"}, "pfn")])
def test_without_mmu_gather_a_zap_frees_pages_a_tlb_still_translates_to(knobs, want):
    ops = start("x86_64") + [["munmap", 1, W, 2 * M]]
    r = run(ops, arch="x86_64", knobs=knobs)
    assert (kind(r), want) in ((None, None), ("stale-tlb", "pfn"))
    if want:
        assert r.violation.op_index == 4 and "cpu 0 still caches a translation" in r.violation.message


@pytest.mark.parametrize("table_free,want", [("rcu", None), ("immediate", "table page")])
def test_without_mmu_gather_only_rcu_table_free_keeps_a_table_from_a_walk_cache(table_free, want):
    """A missed access caches the walk (no page); munmap frees the PTE table: at once with mm.table_free=immediate,
    under cpu 0's walk cache; after a grace period (after the flush) with RCU table freeing."""
    ops = [["exec", 1, -1], ["mmap", 1, W, 2 * M, 0], ["fault", 1, W, 0], ["tlb_access", 0, 1, W + 0x1000, 0],
           ["munmap", 1, W, 2 * M], ["rcu_gp"]]
    r = run(ops, arch="x86_64", knobs={"mm.tlb_gather": "none", "mm.table_free": table_free})
    assert results(r)[3] == -14
    if want:
        assert kind(r) == "stale-tlb" and r.violation.message.startswith(want) and r.violation.op_index == 4
    else:
        assert kind(r) is None


@pytest.mark.parametrize("knobs,retracted", [({}, 2), ({"mm.file_retract": "caller"}, 1)])
def test_retracted_tables_are_flushed_from_the_walk_caches(knobs, retracted):
    """Both mappings' PTE tables are empty (DONTNEED) but cached by a missed access's walk; the collapse retracts
    them (v6.6: retract_page_tables for the other mm, collapse_pte_mapped_thp for the caller; 6.1: only the
    caller's, collapse_and_free_pmd) with pmdp_collapse_flush, the only flush that reaches those walk entries
    (no page is unmapped); the tables go after a grace period."""
    ops = [["exec", 1, -1], ["exec", 2, -1], ["shm_mmap", 1, W, 2 * M, 0, 0], ["shm_mmap", 2, W, 2 * M, 0, 0],
           ["fault", 2, W, 0], ["madvise", 2, W, 0x1000, 0], ["tlb_access", 1, 2, W, 0],
           ["fault", 1, W + 0x1000, 1], ["madvise", 1, W + 0x1000, 0x1000, 0], ["tlb_access", 0, 1, W + 0x1000, 0],
           ["madvise", 1, W, 2 * M, 1], ["madvise", 1, W, 2 * M, 3], ["rcu_gp"]]
    r = run(ops, arch="x86_64", knobs=knobs)
    assert kind(r) is None, r.violation
    assert len(events_at(r, 11, 17)) == retracted  # EV_RETRACT


def test_collapse_pte_mapped_thp_flushes_the_table_it_takes_away():
    """A page-cache THP mapped by PTEs (mm.file_pmd_nohuge=ptes in a NOHUGEPAGE VMA, after a split) and cached by
    cpu 0; MADV_COLLAPSE's collapse_pte_mapped_thp clears the PTEs and the pmd (pmdp_collapse_flush) and frees the
    table after a grace period: no walk cache still points into it."""
    ops = [["exec", 1, -1], ["shm_mmap", 1, W, 2 * M, 0, 0], ["fault", 1, W, 1], ["madvise", 1, W, 2 * M, 1],
           ["madvise", 1, W, 2 * M, 3], ["madvise", 1, W, 2 * M, 2], ["split", 1, W], ["fault", 1, W + 0x2000, 1],
           ["tlb_access", 0, 1, W + 0x2000, 0], ["madvise", 1, W, 2 * M, 1], ["madvise", 1, W, 2 * M, 3], ["rcu_gp"]]
    r = run(ops, arch="x86_64", knobs={"mm.file_pmd_nohuge": "ptes"})
    assert kind(r) is None, r.violation
    assert len(events_at(r, 10, 17)) == 1  # EV_RETRACT: the caller's table
