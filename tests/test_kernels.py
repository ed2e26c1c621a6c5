"""ptfuzz kernels and crosscheck --kernel: the catalogue, the cache, the initramfs, the pipelined protocol,
and (where QEMU and a fetched kernel are here) a foreign kernel booted for a few traces."""
import json
import os
import platform
import shutil
import subprocess

import pytest

from ptfuzz.crosscheck import kernels as K
from ptfuzz.crosscheck.crossguest import parse_figall
from ptfuzz.crosscheck.guest import cpio_newc
from ptfuzz.crosscheck.host import HostError, compile_host, host_supported

W = 0x200000000000


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PTFUZZ_KERNELS", str(tmp_path / "kernels"))
    return tmp_path / "kernels"


def test_catalogue_names_arch_release_and_suites():
    for name, spec in K.CATALOG.items():
        arch, release = name.split("-")[:2]
        assert spec.deb_arch == arch and spec.release == release and spec.suites
        assert spec.arch == {"arm64": "arm64", "s390x": "s390"}[arch]
    for want in ("arm64-6.1", "arm64-6.12", "arm64-7.2", "arm64-7.2-16k", "s390x-6.1", "s390x-6.12", "s390x-7.2"):
        assert want in K.CATALOG
    assert K.CATALOG["arm64-7.2-16k"].meta == "linux-image-arm64-16k"


def test_unknown_and_unfetched_kernels_say_what_to_do(cache):
    with pytest.raises(K.KernelError, match="unknown kernel 'arm64-2.6'.*--kernel-image"):
        K.spec_of("arm64-2.6")
    with pytest.raises(K.KernelError, match="not fetched: ptfuzz kernels fetch s390x-6.1"):
        K.load("s390x-6.1")


def test_missing_tools_name_the_package_and_the_command(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda cmd: None)
    with pytest.raises(K.KernelError, match=r"qemu-system-s390x is not installed: apt-get install -y qemu-system-misc"):
        K.qemu_binary("s390")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("PTFUZZ_CC_ARM64", raising=False)
    with pytest.raises(K.KernelError, match=r"aarch64-linux-gnu-gcc .*gcc-aarch64-linux-gnu libc6-dev-arm64-cross"):
        K.cross_cc("arm64")
    assert ("qemu-system-aarch64", "qemu-system-arm") in K.missing_tools()


def test_a_cached_kernel_is_listed_with_its_exact_versions_and_removed(cache):
    d = cache / "arm64-6.1"
    d.mkdir(parents=True)
    (d / "vmlinuz").write_bytes(b"\0" * 0x38 + b"ARM\x64" + b"\0" * 64)
    doc = {"name": "arm64-6.1", "release": "6.1.0-57-arm64", "version": "6.1.192-3", "image": "vmlinuz",
           "config": None, "packages": [{"package": "linux-image-6.1.0-57-arm64", "version": "6.1.192-3"}]}
    (d / "kernel.json").write_text(json.dumps(doc))
    k = K.load("arm64-6.1")
    assert (k.arch, k.release, k.version) == ("arm64", "6.1.0-57-arm64", "6.1.192-3")
    assert K.guess_arch(k.image) == "arm64"
    row = next(r for r in K.listing() if r["name"] == "arm64-6.1")
    assert row["fetched"] and row["packages"][0]["version"] == "6.1.192-3"
    assert K.remove("arm64-6.1") and not d.exists() and not K.remove("arm64-6.1")


def test_a_users_own_image_needs_its_arch(tmp_path):
    img = tmp_path / "Image"
    img.write_bytes(b"\0" * 200)
    with pytest.raises(K.KernelError, match="--kernel-arch"):
        K.from_image(img, None)
    assert K.from_image(img, "s390").arch == "s390"
    with pytest.raises(K.KernelError, match="no such file"):
        K.from_image(tmp_path / "nope", "arm64")


def test_kernels_cli_lists_without_network(cli, tmp_path):
    env_cache = tmp_path / "k"
    r = subprocess.run([os.sys.executable, "-m", "ptfuzz", "kernels", "list", "--json"], capture_output=True,
                       text=True, env={**os.environ, "PTFUZZ_KERNELS": str(env_cache)}, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert {x["name"] for x in rows[:-1]} == set(K.CATALOG) and not any(x["fetched"] for x in rows[:-1])
    assert rows[-1]["cache"] == str(env_cache)
    r = cli("kernels", "fetch", "arm64-0.1")
    assert r.returncode == 2 and "unknown kernel" in r.stderr


def test_cpio_newc_is_what_cpio_reads(tmp_path):
    data = cpio_newc([("dev", 0o040755, b""), ("init", 0o100755, b"#!hello\n")])
    assert data.startswith(b"070701") and len(data) % 4 == 0
    if shutil.which("cpio"):
        out = subprocess.run(["cpio", "-t"], input=data, capture_output=True)
        assert out.stdout.decode().split() == ["dev", "init"]
        subprocess.run(["cpio", "-id", "--quiet"], input=data, cwd=tmp_path, check=True)
        assert (tmp_path / "init").read_bytes() == b"#!hello\n" and os.access(tmp_path / "init", os.X_OK)


def test_without_thp_drops_every_thp_request():
    from ptfuzz.crosscheck.crossguest import without_thp
    from ptfuzz.trace import Trace, op_to_list, ops_from_list
    t = Trace("s390", ops_from_list([["exec", 1, -1], ["mmap", 1, W, 1 << 20, 1], ["madvise", 1, W, 4096, 1],
                                     ["madvise", 1, W, 4096, 3], ["madvise", 1, W, 4096, 0], ["fault", 1, W, 1]]))
    got = [op_to_list(r) for r in without_thp(t).ops]
    assert got == [["exec", 1, -1], ["mmap", 1, W, 1 << 20, 0], ["madvise", 1, W, 4096, 2],
                   ["madvise", 1, W, 4096, 0], ["madvise", 1, W, 4096, 0], ["fault", 1, W, 1]]


def test_parse_figall():
    assert parse_figall("F 0") == {}
    assert parse_figall(f"F 2 1 12288 1 {W} 3 0 0") == {1: (12288, (W,)), 3: (0, ())}
    with pytest.raises(HostError):
        parse_figall("F 2 1 12288 1")


# ---- shared hugetlb in a guest: its pool and facts, without QEMU ----

class FakeGuest:
    """What guest_hugetlb asks of a guest: the helper's hugepages / set_hugepages N, and on_close."""

    def __init__(self, pages=0, gives=None, fails=False):
        self.pages, self.gives, self.fails, self.on_close, self.asked = pages, gives, fails, [], []

    def request(self, line):
        self.asked.append(line)
        if line.startswith("set_hugepages"):
            if self.fails:
                raise HostError("guest arm64-x: set_hugepages: /proc/sys/vm/nr_hugepages: Permission denied")
            want = int(line.split()[1])
            self.pages = want if self.gives is None else min(want, self.pages + self.gives)
        return f"ok {self.pages}"


def _facts(arch="arm64", page=4096, files=8):
    from ptfuzz.crosscheck.compare import HostFacts
    from ptfuzz.crosscheck.host import HostInfo
    info = HostInfo(page, page * page // 8 if arch == "arm64" else 1 << 20, False, "scan", 0, 48, files)
    return HostFacts(arch, "6.12.0", info, {}, {"granule": page, "va_bits": 48} if arch == "arm64" else {}, {}, [])


def test_guest_hugetlb_adds_the_pool_to_the_guests_nr_hugepages_as_the_host_does():
    from ptfuzz.crosscheck.compare import HUGETLB_POOL
    from ptfuzz.crosscheck.crossguest import guest_hugetlb
    g, facts = FakeGuest(pages=3), _facts()
    guest_hugetlb(facts, g)
    assert facts.hugetlb is None and g.pages == 3 + HUGETLB_POOL and g.asked[1] == f"set_hugepages {3 + HUGETLB_POOL}"
    assert facts.notes[-1].startswith("shared hugetlb mappings (PMD sharing) on 64 huge pages added to the guest's ")
    assert len(g.on_close) == 1  # the pool's restore, dropped by Guest.close: it goes with the guest


@pytest.mark.parametrize("kw,arch,page,why", [
    ({"files": 0}, "arm64", 4096, "no hugetlbfs files"),
    ({"gives": 10}, "arm64", 4096, "the kernel gave only 10 of 64 huge pages"),
    ({"fails": True}, "arm64", 4096, "cannot add 64 huge pages to vm.nr_hugepages: .*Permission denied"),
    ({}, "s390", 4096, "s390 shares no PMD tables"),
    ({}, "arm64", 65536, "64K pages shares no PMD tables"),
])
def test_guest_hugetlb_gives_the_reason_when_traces_cannot_share(kw, arch, page, why):
    import re
    from ptfuzz.crosscheck.crossguest import guest_hugetlb
    files = kw.pop("files", 8)
    g, facts = FakeGuest(**kw), _facts(arch, page, files)
    guest_hugetlb(facts, g)
    assert facts.hugetlb and re.search(why, facts.hugetlb), facts.hugetlb
    assert facts.notes[-1] == f"no shared hugetlb mappings in generated traces: {facts.hugetlb}"
    assert g.pages == 0  # nothing left added


def test_with_16k_pages_hugetlb_mappings_cover_64_gib_pud_ranges():
    from ptfuzz.crosscheck.compare import WINDOW, WINDOW_SPAN, generate, seeds, window_end
    from ptfuzz.crosscheck.crossguest import guest_hugetlb
    from ptfuzz.trace import op_to_list
    facts = _facts(page=16384)
    facts.config["va_bits"] = 47
    guest_hugetlb(facts, FakeGuest())
    assert facts.hugetlb is None and "64 GiB PUD range" in facts.notes[-1]
    U = 64 << 30  # PMD_SIZE 32 MiB times 2048 entries: what a 16K kernel's want_pmd_share needs inside the VMA
    assert window_end("arm64", facts.config) == WINDOW + 3 * U
    assert window_end("arm64", {"granule": 4096, "va_bits": 48}) == WINDOW + WINDOW_SPAN
    maps = [op_to_list(r) for s in seeds(2, 60) for r in generate("arm64", facts.config, s, 24, True).ops
            if op_to_list(r)[0] == "hugetlb_mmap"]
    assert maps and all(m[2] in (WINDOW + U, WINDOW + 2 * U) for m in maps)
    assert any(m[3] == U for m in maps)


def test_generated_guest_traces_map_shared_hugetlb_only_when_the_guest_has_it():
    from ptfuzz.crosscheck.compare import seeds
    from ptfuzz.crosscheck.crossguest import generate_for
    from ptfuzz.names import OP_NUMBER
    facts = _facts()
    facts.probes = {"thp_enabled": 1}
    hugetlb = OP_NUMBER["hugetlb_mmap"]

    def count():
        return sum(int((generate_for(facts, s, 24).ops[:, 0] == hugetlb).any()) for s in seeds(1, 40))
    facts.hugetlb = None
    assert count() > 5
    facts.hugetlb = "not set up"
    assert count() == 0


def test_guest_memory_holds_the_pool(tmp_path):
    from ptfuzz.crosscheck.guest import MEMORY_MB, guest_memory_mb
    for page, key, extra in ((4096, "CONFIG_ARM64_4K_PAGES", 128), (16384, "CONFIG_ARM64_16K_PAGES", 2048),
                             (65536, "CONFIG_ARM64_64K_PAGES", 0)):
        (tmp_path / f"config-{page}").write_text(f"{key}=y\n")
        k = K.Kernel("k", "arm64", tmp_path / "vmlinuz", config=tmp_path / f"config-{page}")
        assert guest_memory_mb(k) == MEMORY_MB + extra
    assert guest_memory_mb(K.Kernel("s", "s390", tmp_path / "vmlinuz")) == MEMORY_MB


def test_hugetlb_use_counts_a_process_seeing_pages_it_never_faulted():
    from ptfuzz.crosscheck.compare import HUGETLB_BASE as H, Step, hugetlb_use
    from ptfuzz.trace import Trace, ops_from_list
    M2 = 2 << 20
    rows = [["exec", 1, -1], ["hugetlb_mmap", 1, H, 1 << 30, 0, 0], ["fault", 1, H, 1], ["fork", 1, 2],
            ["fault", 2, H + M2, 0]]
    t = Trace("arm64", ops_from_list(rows), config={"granule": 4096, "va_bits": 48})
    own = [Step(0, {1: (0, ())}), Step(0, {1: (0, ())}), Step(0, {1: (8192, (H,))}),
           Step(0, {1: (8192, (H,)), 2: (0, ())}), Step(0, {1: (8192, (H,)), 2: (8192, (H + M2,))})]
    assert hugetlb_use(t, own) == (True, False)  # each process sees what it faulted: tables of their own
    shared = own[:4] + [Step(0, {1: (8192, (H, H + M2)), 2: (8192, (H, H + M2))})]
    assert hugetlb_use(t, shared) == (True, True)  # the child sees the parent's page: one PMD table
    plain = Trace("arm64", ops_from_list(rows[:1]), config=t.config)
    assert hugetlb_use(plain, own[:1]) == (False, False)


HOST_HELPER = host_supported() is None and platform.machine() == "x86_64"


@pytest.mark.skipif(not HOST_HELPER, reason="the helper runs here on x86_64 Linux only")
def test_helper_figall_and_killall_pipeline_on_the_host():
    helper = compile_host()
    req = "\n".join(["exec 1", f"mmap 1 {W} 4096 0", f"fault 1 {W} 1", "fork 1 2", f"figall {W} {W + (1 << 30)}",
                     "killall", f"figall {W} {W + (1 << 30)}", "hello", "quit", "hello"]) + "\n"
    out = subprocess.run([str(helper)], input=req, capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert out[:4] == ["r 0"] * 4
    figs = parse_figall(out[4])
    assert sorted(figs) == [1, 2] and figs[1][0] == figs[2][0] > 0  # fork copied the table (anon_vma)
    assert out[5:7] == ["r 0", "F 0"]
    assert out[7].startswith("ok ") and "guest=0" in out[7] and len(out) == 8  # nothing after quit


# ---- a foreign kernel under QEMU: a few traces, the same comparison ----

BOOT, WHY = K.first_bootable(("arm64-6.1", "s390x-6.1", "arm64-7.2", "s390x-7.2", "arm64-6.12"))


@pytest.mark.skipif(BOOT is None, reason=f"no foreign kernel to boot here ({WHY}); make kernel-tools kernels")
def test_a_foreign_kernel_boots_and_agrees_on_a_few_traces(tmp_path):
    from ptfuzz.crosscheck.compare import seeds
    from ptfuzz.crosscheck.crossguest import GuestChecker, generate_for, open_guest
    guest, facts = open_guest(BOOT)
    with guest:
        assert facts.arch == BOOT.arch and facts.info.pmd_size > 0 and guest.boot_seconds < 120
        assert facts.probes["guest"] == 1 and facts.probes["thp_enabled"] in (1, -1)  # madvise, as on the host
        checker = GuestChecker(guest, facts, {}, tmp_path, minimize=False)
        for i, s in enumerate(seeds(7, 3)):
            o = checker.check(generate_for(facts, s, 16), f"t{i}")
            assert o.agree, o.disagreement.text()
    assert guest._proc is None  # torn down


ARM64, WHY_ARM64 = K.first_bootable(("arm64-6.12", "arm64-7.2", "arm64-6.1"))  # 4K pages


@pytest.mark.skipif(ARM64 is None, reason=f"no arm64 4K kernel to boot here ({WHY_ARM64}); make kernel-tools kernels")
def test_an_arm64_guest_shares_hugetlb_pmd_tables_as_the_model_does():
    """The guest's pool (vm.nr_hugepages) and hugetlbfs files: a forked child's fault shares the parent's PMD table and
    sees its page, a DONTNEED unshares the whole PUD range; every figure as the model has it."""
    from ptfuzz.crosscheck.compare import HUGETLB_BASE as H, HUGETLB_POOL, ModelSide, compare, hugetlb_use
    from ptfuzz.crosscheck.crossguest import GuestKernelSide, open_guest
    from ptfuzz.trace import Trace, ops_from_list
    M2 = 2 << 20
    rows = [["exec", 1, -1], ["hugetlb_mmap", 1, H, 1 << 30, 0, 0], ["fault", 1, H, 1], ["fork", 1, 2],
            ["fault", 2, H + M2, 0], ["madvise", 2, H + 4 * M2, M2, 0], ["fault", 2, H + M2, 1]]
    guest, facts = open_guest(ARM64)
    with guest:
        assert facts.hugetlb is None, facts.hugetlb
        assert int(guest.request("hugepages").split()[1]) >= HUGETLB_POOL
        ops = ops_from_list(rows)
        kernel = GuestKernelSide(guest, W, W + (3 << 30)).run(ops)
        model = ModelSide(facts.arch, facts.config, facts.knobs).run(ops)
        assert compare(model, kernel, ops) is None
        assert kernel[4].procs[2][1] == (H, H + M2) and kernel[5].procs[2][1] == ()
        assert hugetlb_use(Trace("arm64", ops, config=facts.config), kernel) == (True, True)
    assert guest._proc is None


@pytest.mark.skipif(BOOT is None, reason=f"no foreign kernel to boot here ({WHY})")
def test_a_guest_that_does_not_answer_is_killed(tmp_path):
    from ptfuzz.crosscheck.guest import Guest
    g = Guest(BOOT, timeout=5)
    proc = g._proc
    with pytest.raises(HostError, match="did not answer"):
        g._readline("nothing was asked")
    assert proc.poll() is not None and g._proc is None


def test_probe_knobs_for_s390_releases():
    from ptfuzz.crosscheck.crossguest import _pgste_decision, _pt_alloc, has_thp
    assert _pt_alloc({"pte_table_bytes": 1984}) == "fragments"       # 6.1: two 2K tables per page
    assert _pt_alloc({"pte_table_bytes": 4352}) == "full-page"       # 6.7+
    assert _pt_alloc({"pte_table_bytes": -1}) is None
    assert _pgste_decision({"pte_table_bytes": 1984, "pgste_table_bytes": 4096}) == "elf-restart"
    assert _pgste_decision({"pte_table_bytes": 1984, "pgste_table_bytes": 2048}) == "sysctl-only"
    assert _pgste_decision({"pte_table_bytes": 4096, "pgste_table_bytes": 4096}) is None  # cannot tell
    assert _pgste_decision({"pte_table_bytes": 1984, "pgste_table_bytes": -1}) is None   # no /init-pgste
    assert not has_thp({"thp_enabled": -1}) and has_thp({"thp_enabled": 1})


@pytest.mark.skipif(BOOT is None, reason=f"no foreign kernel to boot here ({WHY})")
def test_qemu_does_not_outlive_a_killed_ptfuzz():
    import signal
    import sys
    import time
    code = ("import sys; from ptfuzz.crosscheck import kernels, guest\n"
            f"g = guest.Guest(kernels.load({BOOT.name!r}))\n"
            "print(g._proc.pid, flush=True); sys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        qemu = int(p.stdout.readline())
        os.kill(p.pid, signal.SIGKILL)  # no close(), no finally: only PR_SET_PDEATHSIG is left
        p.wait()
        for _ in range(100):
            try:  # gone, or a zombie waiting for whoever adopted it
                if open(f"/proc/{qemu}/stat").read().rsplit(")", 1)[1].split()[0] in "ZX":
                    break
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.1)
        else:
            os.kill(qemu, signal.SIGKILL)
            pytest.fail("QEMU outlived the process that started it")
    finally:
        p.kill()
