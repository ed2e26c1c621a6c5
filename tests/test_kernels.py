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

def _bootable():
    for name in ("arm64-6.1", "s390x-6.1", "arm64-7.2", "s390x-7.2", "arm64-6.12"):
        try:
            k = K.load(name)
            K.qemu_binary(k.arch)
            K.cross_cc(k.arch)
            return k, None
        except K.KernelError as exc:
            why = str(exc)
    return None, why


BOOT, WHY = _bootable()


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
