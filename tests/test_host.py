"""The crosscheck helper against the running kernel: real processes, real page tables, exact figures."""
import os
import platform
import time
from pathlib import Path

import pytest

from ptfuzz.crosscheck.host import BINARY_NAME, Host, HostError, compile_host, host_supported

_reason = host_supported()
if _reason:
    print(f"test_host.py skipped: {_reason}")
    pytest.skip(_reason, allow_module_level=True)

W = 0x200000000000  # the crosscheck window: PGD slot 64 (x86_64 4-level), empty in every helper process
M2, G = 1 << 21, 1 << 30
PAGE = os.sysconf("SC_PAGE_SIZE")
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.fixture(scope="session")
def binary(tmp_path_factory):
    """The helper built with the package, else compiled from the source tree by host.py's fallback."""
    import ptfuzz.crosscheck.host

    built = Path(ptfuzz.crosscheck.host.__file__).with_name(BINARY_NAME)
    if built.is_file() and os.access(built, os.X_OK):
        return built
    return compile_host(cache=tmp_path_factory.mktemp("host"))


@pytest.fixture
def host(binary):
    with Host(binary) as h:
        yield h


def one_page_tables():
    """Tables for the first page of an empty PGD slot: PUD, PMD and PTE (VmPTE counts no PGD/P4D)."""
    if platform.machine() == "x86_64" or PAGE == 4096:
        return 3 * PAGE
    pytest.skip(f"no exact figure derived for {platform.machine()} with {PAGE}-byte pages")


def test_hello_describes_this_host(host):
    info = host.hello()
    assert info.page_size == PAGE
    if platform.machine() == "x86_64":
        assert info.page_size == 4096 and info.pmd_size == 2 * 1024 * 1024
        assert info.la57 == (info.va_bits > 47)
    assert info.pmd_size == PAGE * (PAGE // 8)
    assert info.method in ("scan", "kpageflags")
    assert info.baseline > 0  # the helper's own text, data and stack need tables too


def test_fresh_and_forked_processes_have_no_window_tables(host):
    assert host.op("exec", 0) == 0
    assert host.figures(0, W, W + 64 * G) == (0, ())
    assert host.op("fork", 0, 1) == 0
    assert host.figures(1, W, W + 64 * G) == (0, ())
    assert host.op("fork", 1, 2) == 0
    assert host.op("exit", 1) == 0  # 2 outlives its parent and keeps the same figure
    assert host.figures(2, W, W + 64 * G) == (0, ())


def test_write_fault_allocates_one_table_per_level_and_munmap_frees_them(host):
    host.op("exec", 0)
    assert host.op("mmap", 0, W, 4 * M2, 0) == 0
    assert host.figures(0, W, W + 4 * M2) == (0, ())  # mmap alone allocates nothing
    assert host.op("fault", 0, W, 1) == 0
    assert host.figures(0, W, W + 4 * M2) == (one_page_tables(), ())
    assert host.op("fault", 0, W + M2 - PAGE, 1) == 0  # same PTE table
    assert host.figures(0, W, W + 4 * M2)[0] == one_page_tables()
    assert host.op("munmap", 0, W, 4 * M2) == 0
    # free_pgtables: nothing else in the PGD slot, so PTE, PMD and PUD tables all go
    assert host.figures(0, W, W + 4 * M2) == (0, ())


def test_results_of_operations_on_holes(host):
    host.op("exec", 0)
    assert host.op("fault", 0, W, 0) == -14  # SIGSEGV, caught
    assert host.op("fault", 0, W, 1) == -14
    assert host.op("madvise", 0, W, PAGE, 0) == -12  # ENOMEM: no mapping there
    assert host.op("munmap", 0, W, PAGE) == 0
    assert host.op("mmap", 0, W + 1, PAGE, 0) == -22
    assert host.op("exit", 5) == -3
    assert host.op("mmap", 5, W, PAGE, 0) == -3
    host.op("exec", 1)
    assert host.op("fork", 0, 1) == -17
    assert host.op("fork", 7, 8) == -3
    assert host.figures(0, W, W + M2) == (0, ())


def test_the_helper_refuses_what_could_harm_itself(host):
    host.op("exec", 0)
    with pytest.raises(HostError, match="outside"):
        host.op("mmap", 0, 0x400000, PAGE, 0)
    with pytest.raises(HostError, match="outside"):
        host.op("munmap", 0, (1 << 46) - PAGE, 2 * PAGE)
    with pytest.raises(HostError, match="64 GiB"):
        host.op("mmap", 0, W, 65 * G, 0)
    with pytest.raises(HostError, match="pid"):
        host.op("exec", 64)
    with pytest.raises(HostError, match="unknown"):
        host.request("bogus 1")
    assert host.op("exec", 0) == 0  # still answering


def test_thp_write_fault_is_pmd_mapped(host):
    if "[never]" in THP.read_text():
        pytest.skip(f"THP disabled on this host ({THP}: {THP.read_text().strip()})")
    before = vmstat("thp_fault_fallback")
    host.op("exec", 0)
    assert host.op("mmap", 0, W, 4 * M2, 1) == 0  # bit0: MADV_HUGEPAGE
    assert host.op("fault", 0, W + 12345, 1) == 0
    tables, blocks = host.figures(0, W, W + 4 * M2)
    if not blocks and vmstat("thp_fault_fallback") > before:
        pytest.skip("no free huge page: the kernel fell back to small pages")
    assert blocks == (W,)
    assert tables == one_page_tables()  # PUD + PMD + the PTE table deposited with the THP
    assert host.op("fork", 0, 1) == 0  # fork copies the PMD entry, and the deposit with it
    assert host.figures(1, W, W + 4 * M2) == (tables, (W,))
    assert host.op("madvise", 0, W, PAGE, 0) == 0  # DONTNEED of part of it splits the PMD
    assert host.figures(0, W, W + 4 * M2) == (one_page_tables(), ())


@pytest.mark.skipif(os.geteuid() != 0, reason="the kpageflags fallback needs root (PFNs in pagemap)")
def test_kpageflags_fallback_finds_the_same_blocks(binary, monkeypatch):
    if "[never]" in THP.read_text():
        pytest.skip(f"THP disabled on this host ({THP}: {THP.read_text().strip()})")
    monkeypatch.setenv("PTFUZZ_HOST_METHOD", "kpageflags")
    with Host(binary) as h:
        assert h.hello().method == "kpageflags"
        h.op("exec", 0)
        h.op("mmap", 0, W, 4 * M2, 1)
        h.op("fault", 0, W + M2, 0)  # the huge zero page
        h.op("fault", 0, W, 1)
        blocks = h.figures(0, W, W + 4 * M2)[1]
        if len(blocks) < 2:
            pytest.skip("no free huge page: the kernel fell back to small pages")
        assert blocks == (W, W + M2)


def test_fork_copies_the_tables_of_written_memory(host):
    host.op("exec", 0)
    host.op("mmap", 0, W, 4 * M2, 0)
    host.op("fault", 0, W, 1)
    host.op("fault", 0, W + 3 * M2, 1)
    parent = host.figures(0, W, W + 4 * M2)
    assert parent[0] == one_page_tables() + PAGE  # a second PTE table
    assert host.op("fork", 0, 1) == 0
    assert host.figures(1, W, W + 4 * M2) == parent
    assert host.op("fault", 1, W, 1) == 0  # COW: a new page, same tables
    assert host.figures(1, W, W + 4 * M2) == parent
    assert host.op("exit", 0) == 0
    assert host.figures(1, W, W + 4 * M2) == parent


def test_shm_objects_are_shared_between_processes(host):
    host.op("exec", 0)
    host.op("exec", 1)
    assert host.op("shm_mmap", 0, W, M2, 3, 0) == 0
    assert host.op("shm_mmap", 1, W + G, M2, 3, 0) == 0
    assert host.op("fault", 0, W, 1) == 0
    assert host.op("fault", 1, W + G, 0) == 0
    assert host.figures(0, W, W + 2 * G)[0] == one_page_tables()
    assert host.figures(1, W, W + 2 * G)[0] == one_page_tables()


def test_probe_reports_host_behaviour(host):
    p = host.probe()
    for key in ("pt_reclaim", "zero_page", "pagemap_scan", "thp_write_pmd", "collapse", "pte_write_bytes"):
        assert key in p
    assert p["pt_reclaim"] in (0, 1)
    assert p["pte_write_bytes"] == one_page_tables()
    assert p["munmap_bytes"] == 0


def test_no_process_outlives_the_helper(binary):
    h = Host(binary)
    h.op("exec", 0)
    h.op("fork", 0, 1)
    h.op("fork", 1, 2)
    h.op("exit", 1)  # 2 now belongs to the helper's root (a subreaper)
    h.op("exec", 3)
    pids = [h.root_pid] + [h.os_pid(p) for p in (0, 2, 3)]
    h.close()
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [p for p in pids if Path(f"/proc/{p}").exists()] == []
    with pytest.raises(HostError, match="closed"):
        h.op("exec", 0)


def test_a_missing_helper_is_a_clear_error(tmp_path):
    with pytest.raises(HostError, match="missing"):
        compile_host(tmp_path / "nope.c", cache=tmp_path)
    with pytest.raises(HostError, match="cannot start"):
        Host(tmp_path / "nope")


def vmstat(key):
    for line in Path("/proc/vmstat").read_text().splitlines():
        k, v = line.split()
        if k == key:
            return int(v)
    return 0


def test_shared_hugetlb_mappings_share_pmd_tables_as_the_model_does(binary):
    """PMD sharing on this kernel (issue 20), through crosscheck's set-up (huge pages added to vm.nr_hugepages and
    given back): a forked child's fault shares the parent's table, a DONTNEED unshares the whole PUD range, a split
    inside it unshares the owner; every figure as the model has it."""
    from ptfuzz.crosscheck.compare import KernelSide, ModelSide, compare, host_facts
    from ptfuzz.trace import ops_from_list
    rows = [["exec", 1, -1], ["hugetlb_mmap", 1, W, G, 0, 0], ["fault", 1, W, 1], ["fork", 1, 2],
            ["fault", 2, W + M2, 0], ["madvise", 2, W + 4 * M2, M2, 0], ["fault", 2, W + M2, 1],
            ["munmap", 1, W + G // 2, M2], ["fault", 1, W, 0], ["exit", 2], ["hugetlb_mmap", 1, W, M2, 0, 1]]
    before = int(Path("/proc/sys/vm/nr_hugepages").read_text())
    with Host(binary) as h:
        facts = host_facts(h)
        if facts.hugetlb:
            pytest.skip(f"no shared hugetlb here: {facts.hugetlb}")
        ops = ops_from_list(rows)
        kernel = KernelSide(h).run(ops)
        model = ModelSide(facts.arch, facts.config, facts.knobs).run(ops)
        assert compare(model, kernel, ops) is None
        assert kernel[4].procs[2][1] == (W, W + M2)  # the child sees the parent's page: the table is shared
        assert kernel[5].procs[2][1] == () and kernel[-1].result == -22
    assert int(Path("/proc/sys/vm/nr_hugepages").read_text()) == before  # the pool given back
