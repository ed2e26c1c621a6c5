"""The TLB model (issue 20, docs/model-notes.md "The TLB"): tlb_access fills a cpu's TLB, every kernel path that takes a
translation away flushes it before the page or table is freed, and the digest tells TLB contents apart."""
import pytest

from conftest import M, W, kind, results, run

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
