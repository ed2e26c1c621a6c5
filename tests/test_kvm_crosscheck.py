"""crosscheck --kvm: traces with VMs in the model and for real through /dev/kvm. The comparison, the generator and
the model's retry everywhere; one hand-written trace per compared behaviour, a short generated run, and the
clean-up on this host only where /dev/kvm works; and in an arm64 guest under QEMU (--kvm --kernel), where the
guest's own KVM runs the VMs, when QEMU, the cross compiler and an arm64 kernel are here."""
import json
import os
import signal
import subprocess
import sys
import time

from dataclasses import replace

import numpy as np
import pytest

from ptfuzz import engine
from ptfuzz import trace as tracemod
from ptfuzz.crosscheck import kvm as kvmmod
from ptfuzz.crosscheck.compare import seeds
from ptfuzz.crosscheck.kernels import first_bootable
from ptfuzz.crosscheck.kvm import (KVM_OPS, GuestAccess, KStep, KvmFacts, KvmHost, KvmKernelSide, KvmModelSide,
                                   check_kvm_trace, generate_kvm, kcompare, kvm_supported)
from ptfuzz.errors import UsageError
from ptfuzz.trace import Trace, op_to_list, ops_from_list

W = 0x200000000000  # the crosscheck window
PAGE, PMD = 4096, 2 << 20
REASON = kvm_supported()
on_kvm = pytest.mark.skipif(REASON is not None, reason=f"no usable /dev/kvm: {REASON}")
FACTS = KvmFacts("x86_64", "test", 12, 32764, ["kvm"], "N", None, {"la57": False}, {}, [])


def run_both(rows):
    """(model steps, kernel steps) of a hand-written trace, and the first disagreement."""
    ops = ops_from_list(rows)
    check_kvm_trace(Trace("x86_64", ops), "test")
    with KvmHost() as h:
        kernel = KvmKernelSide(h).run(ops)
    model = KvmModelSide({"la57": False}, {}).run(ops)
    return model, kernel, kcompare(model, kernel, ops)


# ---- everywhere ----

def test_kcompare_names_the_first_figure_that_differs():
    ops = ops_from_list([["exec", 1, -1], ["guest_fault", 0, 0, 0], ["guest_fault", 0, 0, 0]])
    ok = GuestAccess(0, 7, 7, True, "hlt")
    same = [KStep(0), KStep(0, ok), KStep(0, ok)]
    assert kcompare([KStep(0), KStep(0), KStep(0)], same, ops) is None
    d = kcompare([KStep(0), KStep(-14), KStep(0)], same, ops)
    assert (d.op_index, d.figure, d.model, d.kernel) == (1, "result", -14, 0)
    stale = [KStep(0), KStep(0, ok), KStep(0, GuestAccess(0, 7, 0, False, "hlt"))]
    d = kcompare([KStep(0)] * 3, stale, ops)  # the guest read old data: the model has it coherent
    assert (d.op_index, d.figure) == (2, "coherence") and "guest saw 0x7, host maps 0x0" in d.text()
    d = kcompare([KStep(0), KStep(0, violation="stage2_stale")], same, ops)
    assert (d.op_index, d.figure, d.model, d.kernel) == (1, "violation", "stage2_stale", "coherent")


def test_generated_traces_run_here_and_are_reproducible():
    seen = set()
    for s in seeds(1, 60):
        t = generate_kvm(FACTS, s, 30)
        assert np.array_equal(t.ops, generate_kvm(FACTS, s, 30).ops)
        check_kvm_trace(t, "gen")  # only what the helper runs: anonymous memory in the window, low gpas
        tracemod.loads(tracemod.dumps(t))
        for row in t.ops:
            name, *a = op_to_list(row)
            seen.add(name)
            if name == "memslot":  # no TDP here: [2^48, 2^52) cannot be compared and is not generated
                assert not (1 << 48 <= a[2] < (1 << 52) - (1 << 30)) or a[2] + a[4] > 1 << 52
    assert seen == set(KVM_OPS)


def test_only_runnable_traces_are_accepted():
    def bad(rows, text):
        with pytest.raises(UsageError, match=text):
            check_kvm_trace(Trace("x86_64", ops_from_list(rows)), "t")
    bad([["exec", 1, -1], ["guest_fault_begin", 0, 0, 0, 0]], "guest_fault_begin cannot run for real")
    bad([["exec", 1, -1], ["mmap", 1, W, PMD, 2]], "anonymous memory")
    bad([["exec", 1, -1], ["fault", 1, 0x1000, 1]], "outside")
    bad([["exec", 1, -1], ["vm_create", 0, 1, 0], ["guest_fault", 0, 0xFFFFF000, 0]], "paging off")
    bad([["exec", 1, -1], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0xFFFF0000, W, 1 << 20]], "code page")
    with pytest.raises(UsageError, match="runs x86_64 traces here"):
        check_kvm_trace(Trace("arm64", ops_from_list([["exec", 1, -1]])), "t")


def test_the_model_takes_a_retried_guest_fault_again_as_kvm_run_does():
    """A write after a read of the zero page: the COW inside the fault moves mmu_invalidate_seq, the one pass
    the engine runs answers -11, and KVM_RUN would re-enter the guest and fault again (RET_PF_RETRY)."""
    rows = [["exec", 1, -1], ["mmap", 1, W, PMD, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, W, PMD],
            ["guest_fault", 0, 0, 0], ["guest_fault", 0, 0, 1]]
    one_pass = engine.replay(Trace("x86_64", ops_from_list(rows)), steps=True).op_results
    assert int(one_pass[5]) == -11
    assert [s.result for s in KvmModelSide({"la57": False}, {}).run(ops_from_list(rows))] == [0] * 6


def test_no_usable_kvm_is_one_line_and_exit_2(cli, monkeypatch):
    monkeypatch.setattr(kvmmod.os.path, "exists", lambda p: False if p == "/dev/kvm" else os.path.lexists(p))
    with pytest.raises(UsageError, match="needs /dev/kvm"):
        kvmmod.open_kvm()
    for args in (["--kernel-image", "Image"], ["--kernel", "s390x-7.2"], ["--kernel", "nosuch"]):
        r = cli("crosscheck", "--kvm", *args, "--gen", 1)  # nothing is fetched or booted
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "arm64" in r.stderr or "unknown kernel" in r.stderr


# ---- on this host's /dev/kvm ----

@on_kvm
def test_memslot_errnos_are_kvms():
    rows = [["exec", 1, -1], ["mmap", 1, W, 2 * PMD, 0], ["vm_create", 0, 1, 0], ["vm_create", 0, 1, 0],
            ["vm_create", 1, 1, 40],                         # x86: a VM type other than 0
            ["memslot", 0, 0, 0x800, W, PMD],                 # gpa not page-aligned
            ["memslot", 0, 0, 0, W + 0x10, PMD],              # hva not page-aligned
            ["memslot", 0, 0, 0, W, PMD + 0x10],              # size not page-aligned
            ["memslot", 0, 0, 0, W, PMD],
            ["memslot", 0, 1, PMD - PAGE, W, PAGE],           # overlaps slot 0 in gpa
            ["memslot", 0, 1, PMD, W, PAGE],                  # an hva may back two slots
            ["memslot", 0, 0, 0, W + PAGE, PMD],              # a slot's hva never changes
            ["memslot", 0, 0, 4 * PMD, W, PMD],               # a move
            ["memslot", 0, 0, 4 * PMD, W, 0],                 # a delete
            ["memslot", 0, 0, 4 * PMD, W, 0],                 # deleting what is not there
            ["memslot", 0, 2, 0, (1 << 63) - PAGE, 2 * PAGE],  # access_ok: the end wraps past 2^63
            ["memslot", 3, 0, 0, W, PMD]]                     # no such VM (the trace's bookkeeping)
    model, kernel, d = run_both(rows)
    assert [s.result for s in kernel] == [0, 0, 0, -17, -22, -22, -22, -22, 0, -17, 0, -22, 0, 0, -22, -22, -2]
    assert d is None, d.text()


@on_kvm
def test_guest_faults_without_backing_are_efault():
    rows = [["exec", 1, -1], ["mmap", 1, W, PMD, 0], ["vm_create", 0, 1, 0],
            ["memslot", 0, 0, 0, W + 4 * PMD, PMD],  # an hva nothing maps
            ["guest_fault", 0, 0, 0], ["guest_fault", 0, PAGE, 1],
            ["guest_fault", 0, 8 * PMD, 0],           # a gpa no memslot holds (KVM: an MMIO exit)
            ["memslot", 0, 1, 2 * PMD, W, PMD], ["guest_fault", 0, 2 * PMD, 1],
            ["munmap", 1, W, PMD], ["guest_fault", 0, 2 * PMD, 0]]  # the mapping went: the notifier zapped
    model, kernel, d = run_both(rows)
    assert [s.result for s in kernel] == [0, 0, 0, 0, -14, -14, -14, 0, 0, 0, -14]
    assert d is None, d.text()


@on_kvm
def test_the_guest_sees_what_the_host_maps_after_host_changes():
    rows = [["exec", 1, -1], ["mmap", 1, W, PMD, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, W, PMD],
            ["fault", 1, W, 1],                 # 3: the host writes stamp(4)
            ["guest_fault", 0, 0, 0],           # 5: ... which the guest reads
            ["madvise", 1, W, PAGE, 0],         # MADV_DONTNEED
            ["guest_fault", 0, 0, 0],           # 7: zero, not the old page
            ["guest_fault", 0, PAGE, 1],        # 8: the guest writes stamp(8)
            ["fork", 1, 2], ["fault", 1, W + PAGE, 1],  # 10: the owner breaks COW with stamp(10)
            ["guest_fault", 0, PAGE, 0],        # 11: the guest follows the owner's new page
            ["mmap", 1, W + PAGE, PAGE, 0],     # a remap: a new zero page at the hva
            ["guest_fault", 0, PAGE, 0]]        # 13
    model, kernel, d = run_both(rows)
    assert d is None, d.text()
    st = kvmmod.stamp
    seen = {i: kernel[i].access.guest for i in (5, 7, 8, 11, 13)}
    assert seen == {5: st(4), 7: 0, 8: st(8), 11: st(10), 13: 0}
    assert all(kernel[i].coherent() for i in seen)


@on_kvm
def test_vm_ioctls_after_the_owner_exited_are_eio():
    rows = [["exec", 1, -1], ["mmap", 1, W, PMD, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, W, PMD],
            ["guest_fault", 0, 0, 1], ["fork", 1, 2], ["vm_create", 1, 2, 0],
            ["exit", 1], ["memslot", 0, 1, PMD, W, PAGE], ["guest_fault", 0, 0, 0], ["vm_destroy", 0],
            ["exec", 2, -1], ["guest_fault", 1, 0, 0], ["memslot", 1, 0, 0, W, PAGE], ["vm_destroy", 1],
            ["vm_destroy", 1]]
    model, kernel, d = run_both(rows)
    assert [s.result for s in kernel] == [0, 0, 0, 0, 0, 0, 0, 0, -5, -5, 0, 0, -5, -5, 0, -2]
    assert d is None, d.text()


def kvm_helpers(binary):
    """Live processes running this helper binary."""
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink(f"/proc/{p}/exe") == str(binary):
                    found.append(int(p))
            except OSError:
                pass
    return found


@on_kvm
def test_a_short_generated_run_and_nothing_left_behind(cli):
    r = cli("crosscheck", "--kvm", "--gen", 40, "--seed", 1, "--json", "-o", "out")
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    summary = lines[-1]
    assert summary["traces"] == 40 and summary["kvm"] and summary["traces_per_second"] > 0, r.stderr
    assert summary["guest_accesses"] in ("mmu", "emulated") and "guest accesses" in summary["host"]
    for row in lines[:-1]:
        if not row["agree"]:  # the one release difference this host shows: access_ok ends at USER_PTR_MAX (6.12+)
            d = row["first_disagreement"]
            assert d["op"].startswith("memslot") and (d["model"], d["kernel"]) == (0, -22), d
            gpa, hva, size = (int(x, 0) for x in d["op"][len("memslot("):-1].split(", ")[2:])
            assert hva + size > (1 << 47) - PAGE
    assert r.returncode == (1 if summary["disagree"] else 0)
    binary = kvmmod.find_kvm_binary()
    h = KvmHost()
    h.op("exec", 1)
    h.op("mmap", 1, W, PMD, 0)
    h.op("vm_create", 0, 1, 0)
    h.op("fork", 1, 2)
    assert len(kvm_helpers(binary)) >= 3
    h.close()
    time.sleep(0.2)
    assert kvm_helpers(binary) == []


@on_kvm
def test_ctrl_c_ends_the_run_and_reaps_everything(tmp_path):
    binary = kvmmod.find_kvm_binary()
    p = subprocess.Popen([sys.executable, "-m", "ptfuzz", "crosscheck", "--kvm", "--gen", "100000", "--json",
                          "-o", "out"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + 30
    while not kvm_helpers(binary) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group, helpers included
    out, err = p.communicate(timeout=60)
    summary = json.loads(out.splitlines()[-1])
    assert summary["interrupted"] and summary["traces"] > 0, err
    time.sleep(0.2)
    assert kvm_helpers(binary) == []


# ---- arm64: the generator and the model (everywhere), then a guest's own KVM under QEMU ----

FACTS64 = KvmFacts("arm64", "test", 12, 32767, [], None, None, {"granule": 4096, "va_bits": 48}, {}, [],
                   page=4096, guest="arm64-test")
FACTS64_16K = replace(FACTS64, config={"granule": 16384, "va_bits": 48}, page=16384)


@pytest.mark.parametrize("facts", [FACTS64, FACTS64_16K], ids=["4k", "16k"])
def test_arm64_generated_traces_are_valid_for_the_arm64_model(facts):
    seen = set()
    code = kvmmod.reserved_gpa("arm64", facts.page)
    assert code == (1 << 32) - 2 * facts.page
    for s in seeds(3, 40):
        t = generate_kvm(facts, s, 30)
        assert t.arch == "arm64" and t.config == facts.config
        check_kvm_trace(t, "gen", "arm64", facts.page)
        r = engine.replay(t, steps=True)  # the arm64 engine with the guest's geometry takes every operation
        assert r.violation is None and len(r.op_results) == len(t.ops)
        seen.update(op_to_list(row)[0] for row in t.ops)
    assert {"vm_create", "memslot", "guest_fault", "vm_destroy"} <= seen
    with pytest.raises(UsageError, match="code page"):
        check_kvm_trace(Trace("arm64", ops_from_list([["exec", 1, -1], ["vm_create", 0, 1, 0],
                                                      ["memslot", 0, 0, code, W, facts.page]])), "t",
                        "arm64", facts.page)


def test_arm64_task_size_max_and_collapse_subblock_knobs():
    """arm64.task_size_max=52: access_ok's bound is 2^52 on a 52-bit-VA build running with 48 bits (Debian's
    6.12+ 4K/16K kernels), 2^va_bits by default. mm.collapse_subblock=ok: MADV_COLLAPSE of a VMA part with no
    whole PMD block returns 0 (seen on 7.2), v6.6 -EINVAL."""
    cfg = {"granule": 4096, "va_bits": 48}
    rows = [["exec", 1, -1], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, 1 << 48, PAGE],
            ["memslot", 0, 1, 1 << 30, (1 << 52) - PAGE, PAGE], ["memslot", 0, 2, 1 << 31, 1 << 52, PAGE]]
    t = Trace("arm64", ops_from_list(rows), config=cfg)
    assert [int(x) for x in engine.replay(t, steps=True).op_results][2:] == [-22, -22, -22]
    assert [int(x) for x in engine.replay(t, {"arm64.task_size_max": "52"}, steps=True).op_results][2:] == [0, 0, -22]
    rows = [["exec", 1, -1], ["mmap", 1, W, 2 * PMD, 1], ["madvise", 1, W + PAGE, PAGE, 3],  # no anon_vma yet
            ["fault", 1, W + PMD, 0], ["madvise", 1, W + PAGE, PAGE, 3], ["madvise", 1, W, PAGE, 3]]
    for arch, config in (("arm64", cfg), ("x86_64", {})):
        t = Trace(arch, ops_from_list(rows), config=config)
        assert [int(x) for x in engine.replay(t, steps=True).op_results][2:] == [-22, 0, -22, 0]
        assert [int(x) for x in engine.replay(t, {"mm.collapse_subblock": "ok"}, steps=True).op_results][2:] == \
            [-22, 0, 0, 0]


ARM64, WHY64 = first_bootable(("arm64-7.2", "arm64-6.12", "arm64-6.1"))
on_arm64_guest = pytest.mark.skipif(ARM64 is None, reason=f"no arm64 guest to boot here ({WHY64}); "
                                    "make kernel-tools, ptfuzz kernels fetch arm64-7.2")


@pytest.fixture(scope="module")
def arm64_side():
    """One booted guest (ptfuzz-kvm as /init, ptfuzz-host beside it) and its facts for the module's tests."""
    side = kvmmod.open_kvm_guest(ARM64)
    yield side
    side.host.close()
    assert side.host._proc is None


def run_guest(side, rows):
    ops = ops_from_list(rows)
    check_kvm_trace(Trace("arm64", ops), "test", "arm64", side.facts.page)
    kernel = kvmmod.KvmGuestKernelSide(side.host).run(ops)
    model = KvmModelSide(side.facts.config, side.facts.knobs, "arm64", s2_pages=side.facts.s2_tables).run(ops)
    return model, kernel, kcompare(model, kernel, ops)


@on_arm64_guest
def test_arm64_guest_memslot_errnos_and_guest_faults(arm64_side):
    f = arm64_side.facts
    assert f.arch == "arm64" and f.api == 12 and f.guest == ARM64.name and f.nr_memslots > 0
    assert arm64_side.host.boot_seconds < 120
    P = f.page
    pmd = P * (P // 8)
    rows = [["exec", 1, -1], ["mmap", 1, W, 2 * pmd, 0], ["vm_create", 0, 1, 0],
            ["vm_create", 1, 1, 52],                          # arm64: an IPA size past the limit
            ["memslot", 0, 0, P // 2, W, pmd],                # gpa not page-aligned
            ["memslot", 0, 0, 1 << 40, W, pmd],               # past the 40-bit IPA space: -EFAULT
            ["memslot", 0, 0, 0, W, pmd],
            ["memslot", 0, 1, pmd - P, W, P],                 # overlaps slot 0 in gpa
            ["memslot", 0, 2, 0, (1 << 63) - P, 2 * P],       # access_ok
            ["memslot", 0, 3, 8 * pmd, W + 4 * pmd, pmd],     # an hva nothing maps
            ["guest_fault", 0, 8 * pmd, 0],                   # ... KVM_RUN fails with -EFAULT
            ["guest_fault", 0, 16 * pmd, 0],                  # no memslot: an MMIO exit
            ["fault", 1, W, 1], ["guest_fault", 0, 0, 0],     # 12, 13: the guest reads the host's stamp
            ["guest_fault", 0, P, 1], ["fault", 1, W + P, 0],  # 14: the guest writes, the host reads
            ["madvise", 1, W, P, 0], ["guest_fault", 0, 0, 0],  # 17: zero after MADV_DONTNEED
            ["fork", 1, 2], ["fault", 1, W + P, 1], ["guest_fault", 0, P, 0],  # 20: follows the owner's COW
            ["exit", 1], ["memslot", 0, 1, pmd, W, P], ["guest_fault", 0, 0, 0],  # -EIO: the mm has gone
            ["vm_destroy", 0], ["vm_destroy", 0]]
    model, kernel, d = run_guest(arm64_side, rows)
    assert d is None, d.text()
    assert [s.result for s in kernel] == [0, 0, 0, -22, -22, -14, 0, -17, -22, 0, -14, -14, 0, 0, 0, 0, 0, 0,
                                          0, 0, 0, 0, -5, -5, 0, -2]
    st = kvmmod.stamp
    assert {i: kernel[i].access.guest for i in (13, 14, 17, 20)} == {13: st(12), 14: st(14), 17: 0, 20: st(19)}
    assert kernel[-1].s2_pages == 0  # every VM gone: no stage-2 table left
    assert model[-1].s2_pages == (0 if f.s2_tables else None)  # compared from 6.9 on (change_pte)


@on_arm64_guest
def test_arm64_guest_stage2_table_pages_are_the_models(arm64_side):
    P = arm64_side.facts.page
    pmd = P * (P // 8)
    rows = [["exec", 1, -1], ["mmap", 1, W, 4 * pmd, 0], ["vm_create", 0, 1, 0], ["vm_create", 1, 1, 36],
            ["memslot", 0, 0, 0, W, 4 * pmd], ["memslot", 1, 0, 1 << 31, W, 4 * pmd],
            ["guest_fault", 0, 0, 1], ["guest_fault", 0, 3 * pmd, 0], ["guest_fault", 1, (1 << 31) + P, 1]]
    model, kernel, d = run_guest(arm64_side, rows)
    assert d is None, d.text()
    assert kernel[-1].s2_pages > 0
    if arm64_side.facts.s2_tables:
        assert kernel[-1].s2_pages == model[-1].s2_pages


@on_arm64_guest
def test_arm64_guest_short_generated_run_from_the_cli(cli):
    r = cli("crosscheck", "--kvm", "--kernel", ARM64.name, "--gen", 8, "--seed", 1, "--json", "-o", "out")
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["traces"] == 8 and summary["kvm"] and summary["kernel"] == ARM64.name, r.stderr
    assert summary["agree"] == 8 and r.returncode == 0, r.stdout
    assert summary["boot_seconds"] > 0 and summary["traces_per_second"] > 0


def test_a_vma_split_inside_a_block_notifies_the_block():
    """v6.6 __split_vma -> vma_adjust_trans_huge -> split_huge_pmd_address: where a PMD table exists (mm_find_pmd),
    __split_huge_pmd opens its mmu_notifier range over the whole block before it finds no THP to split, so KVM
    zaps the block's stage-2 range: a munmap of one page drops the guest's mapping of another page of the block
    (measured on arm64 7.2 by SecPageTables: the emptied level-3 table is freed), and mmu_invalidate_seq moves
    twice (the block, then the page)."""
    from ptfuzz.report.show.state import dump_state
    cfg = {"granule": 4096, "va_bits": 48}
    rows = [["exec", 1, -1], ["mmap", 1, W, 2 * PMD, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, W, 2 * PMD],
            ["guest_fault", 0, PMD + 0x1ff000, 0], ["munmap", 1, W + PMD + 0x112000, PAGE]]
    t = Trace("arm64", ops_from_list(rows), config=cfg)
    before, after = (dump_state(t, None, n)["state"]["vms"][0] for n in (5, 6))
    assert len(before["tables"]) == 3 and len(after["tables"]) == 1  # the level-2 and level-3 tables went
    assert after["invalidate_seq"] - before["invalidate_seq"] == 2
    rows[-1] = ["munmap", 1, W + 0x112000, PAGE]  # a split inside the other block leaves this one mapped
    t = Trace("arm64", ops_from_list(rows), config=cfg)
    assert len(dump_state(t, None, 6)["state"]["vms"][0]["tables"]) == 3
