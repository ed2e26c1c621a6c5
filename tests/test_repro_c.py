"""repro-c: a trace as a standalone C program. That it runs here and prints what the model and crosscheck's helpers
give (x86_64 hosts; with VMs where /dev/kvm is usable), that foreign arches' and M1's reproducers compile, and bad
input."""
import json
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ptfuzz import trace as tracemod
from ptfuzz.crosscheck.compare import KernelSide, ModelSide, generate, host_facts, seeds
from ptfuzz.crosscheck.host import OPS_HEADER, Host, helper_env, host_supported
from ptfuzz.crosscheck.repro import KVM_HEADER, ReproError, compile_repro, generate as generate_c
from ptfuzz.trace import Trace, ops_from_list

HOST = host_supported() is None and platform.machine() == "x86_64"
on_host = pytest.mark.skipif(not HOST, reason=f"reproducers run here on x86_64 Linux only ({host_supported() or platform.machine()})")

ROOT = Path(__file__).resolve().parent.parent
M1 = ROOT / "corpus/regressions/s390/gmap-dangling-m1.msgpack"
LINE = re.compile(r"^(\d+) (\w+)\((.*)\) = (-?\d+|skipped: .*|error: .*)(?: exit=(\S+).*)?$")
FIGURES = re.compile(r"^figures (\d+): pt_bytes (-?\d+) pmd_mapped (\d+)((?: 0x[0-9a-f]+)*)$")
needs = {cc: pytest.mark.skipif(shutil.which(cc) is None, reason=f"{cc} is not installed")
         for cc in ("aarch64-linux-gnu-gcc", "s390x-linux-gnu-gcc")}


def parse(stdout: str):
    """(results by operation index, {pid: (pt_bytes, blocks)}) of a reproducer's output (parse.exits: how each
    guest_fault's run ended)."""
    results, figures = {}, {}
    exits = parse.exits = {}
    for line in stdout.splitlines():
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        if m:
            r = m.group(4)
            results[int(m.group(1))] = int(r) if r.lstrip("-").isdigit() else r
            exits[int(m.group(1))] = m.group(5)
            continue
        m = FIGURES.match(line)
        assert m, f"unexpected line {line!r}"
        figures[int(m.group(1))] = (int(m.group(2)), tuple(int(a, 16) for a in m.group(4).split()))
    return results, figures


def test_the_reproducer_inlines_the_helpers_operations():
    """One definition: the helper includes ptfuzz_ops.h and a reproducer carries its text, not a copy of its own."""
    helper = OPS_HEADER.with_name("ptfuzz_host.c").read_text()
    assert '#include "ptfuzz_ops.h"' in helper and "static int do_mmap(" not in helper
    t = Trace("x86_64", ops_from_list([["exec", 1, -1], ["mmap", 1, 1 << 45, 1 << 21, 1], ["fault", 1, 1 << 45, 1]]))
    src = generate_c(t, "t.msgpack", "x86_64").source
    assert OPS_HEADER.read_text().strip() in src and KVM_HEADER.read_text().strip() not in src
    assert '#include "' not in src  # standalone: nothing of ptfuzz is included


def test_unsupported_operations_are_skipped_and_said(cli, tmp_path):
    ops = [["exec", 1, -1], ["mmap", 1, 1 << 45, 1 << 21, 0], ["walk_begin", 0, 1, 1 << 45], ["walk_step", 0],
           ["rcu_gp"]]
    tracemod.save(Trace("x86_64", ops_from_list(ops)), tmp_path / "w.msgpack")
    r = cli("repro-c", "w.msgpack", "--arch", "x86_64", "-o", "w.c", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [s["op_index"] for s in doc["skipped"]] == [2, 3, 4] and doc["source"] == "w.c"
    assert r.stderr.count("skipped in the reproducer") == 3
    src = (tmp_path / "w.c").read_text()
    assert "/* [2] walk_begin(0, 1, 0x200000000000): skipped," in src and 'skip(3, "walk_step(0)"' in src


def test_bad_input_is_one_line_and_exit_2(cli, tmp_path):
    (tmp_path / "bad.msgpack").write_bytes(b"\x81\xa6format")
    for args, what in ((("nope.msgpack",), "nope.msgpack"), (("bad.msgpack",), "bad.msgpack: "),
                       ((str(M1), "--arch", "sparc"), "--arch 'sparc'")):
        r = cli("repro-c", *args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and what in r.stderr, r.stderr


def test_a_missing_compiler_names_its_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PTFUZZ_CC_S390X", "no-such-s390x-gcc")
    repro = generate_c(tracemod.load(M1), str(M1), "s390x")
    (tmp_path / "m.c").write_text(repro.source)
    with pytest.raises(ReproError, match="no-such-s390x-gcc .*not installed: apt-get install -y gcc-s390x-linux-gnu"):
        compile_repro(repro, tmp_path / "m.c", tmp_path / "m")


@on_host
def test_host_reproducers_print_what_the_model_and_the_helper_give(cli, tmp_path):
    """Emitted, compiled with cc and run here: every operation's result is the model's and crosscheck's helper's
    on traces they agree on, and the figures at the end are the model's after the last operation."""
    with Host() as host:
        facts = host_facts(host)
        model = ModelSide(facts.arch, facts.config, facts.knobs)
        for i, s in enumerate(seeds(5, 3)):
            t = generate(facts.arch, facts.config, s, 40)
            m, k = model.run(t.ops), KernelSide(host).run(t.ops)
            assert [x.result for x in m] == [x.result for x in k]  # a trace crosscheck agrees on
            name = f"t{i}.msgpack"
            tracemod.save(t, tmp_path / name)
            r = cli("repro-c", name, "--compile", "--json")
            assert r.returncode == 0, r.stderr
            binary = json.loads(r.stdout)["binary"]
            run = subprocess.run([str(tmp_path / binary)], capture_output=True, text=True, timeout=120,
                                 env=helper_env())
            assert run.returncode == 0, run.stderr
            results, figures = parse(run.stdout)
            assert [results[j] for j in range(len(t.ops))] == [x.result for x in m], run.stdout
            assert figures == m[-1].procs, run.stdout


def kvm_unusable() -> str | None:
    if not HOST:
        return f"reproducers run here on x86_64 Linux only ({host_supported() or platform.machine()})"
    from ptfuzz.crosscheck.kvm import kvm_supported
    return kvm_supported()


@pytest.mark.skipif(kvm_unusable() is not None, reason=f"no usable /dev/kvm here: {kvm_unusable()}")
def test_kvm_reproducers_print_what_the_model_and_the_kvm_helper_give(cli, tmp_path):
    """x86_64 traces with VMs (crosscheck --kvm's generator), on which the model and crosscheck --kvm's helper
    agree, emitted with ptfuzz_kvm_ops.h inlined, compiled with cc and run here: every operation's result is the
    model's. A guest_fault is one whole KVM_RUN, which takes the fault again where the model's one pass answers
    -11 (RET_PF_RETRY): KvmModelSide bridges that as crosscheck --kvm does, and its results are what count."""
    from ptfuzz.crosscheck.kvm import KvmHost, KvmKernelSide, KvmModelSide, generate_kvm, kcompare, kvm_facts
    checked = vms = 0
    with KvmHost() as host:
        facts = kvm_facts(host)
        model = KvmModelSide(facts.config, facts.knobs, facts.arch)
        for seed in range(3, 12):
            t = generate_kvm(facts, seed, 24)
            m, k = model.run(t.ops), KvmKernelSide(host).run(t.ops)
            if kcompare(m, k, t.ops) is not None or len(m) != len(t.ops):
                continue  # only traces crosscheck --kvm agrees on (all of them, so far)
            name = f"k{seed}.msgpack"
            tracemod.save(Trace(t.arch, t.ops, config=t.config, knobs=dict(facts.knobs)), tmp_path / name)
            r = cli("repro-c", name, "--compile", "--json")
            assert r.returncode == 0, r.stderr
            assert KVM_HEADER.read_text().strip() in (tmp_path / json.loads(r.stdout)["source"]).read_text()
            run = subprocess.run([str(tmp_path / json.loads(r.stdout)["binary"])], capture_output=True, text=True,
                                 env=helper_env(),
                                 timeout=120)
            assert run.returncode == 0, run.stderr
            results, _ = parse(run.stdout)
            assert [results[j] for j in range(len(t.ops))] == [x.result for x in m], run.stdout
            vms += sum(1 for x in parse.exits.values() if x)
            checked += 1
            if checked == 3:
                break
    assert checked == 3 and vms, f"{checked} traces checked, {vms} guest accesses"


@needs["aarch64-linux-gnu-gcc"]
def test_an_arm64_vm_reproducer_cross_compiles(cli, tmp_path):
    """arm64's VM operations are ptfuzz_kvm_ops.h's too: a trace with VMs builds for arm64."""
    ops = ops_from_list([["exec", 0, -1], ["mmap", 0, 1 << 44, 1 << 21, 1], ["vm_create", 0, 0, 0],
                         ["memslot", 0, 0, 0, 1 << 44, 1 << 21], ["guest_fault", 0, 0x1000, 1],
                         ["fault", 0, 1 << 44, 0], ["vm_destroy", 0]])
    tracemod.save(Trace("arm64", ops), tmp_path / "v.msgpack")
    r = cli("repro-c", "v.msgpack", "-o", "v.c", "--compile")
    assert r.returncode == 0, r.stderr
    src = (tmp_path / "v.c").read_text()
    assert KVM_HEADER.read_text().strip() in src and "#define PTF_CHILD_START ptf_kvm_forget" in src
    elf = (tmp_path / "v").read_bytes()
    assert elf[:4] == b"\x7fELF" and elf[18:20] == (183).to_bytes(2, "little")  # EM_AARCH64


@needs["aarch64-linux-gnu-gcc"]
def test_an_arm64_reproducer_cross_compiles(cli, tmp_path):
    tracemod.save(generate("x86_64", {}, 7, 30), tmp_path / "t.msgpack")
    r = cli("repro-c", "t.msgpack", "--arch", "arm64", "-o", "a.c", "--compile")
    assert r.returncode == 0, r.stderr
    elf = (tmp_path / "a").read_bytes()
    assert elf[:4] == b"\x7fELF" and elf[18:20] == (183).to_bytes(2, "little")  # EM_AARCH64


@needs["s390x-linux-gnu-gcc"]
def test_m1s_reproducer_compiles_for_s390x_and_asks_for_pgstes(cli, tmp_path):
    """M1 holds VM operations: the s390x ones of ptfuzz_kvm_ops.h, linked with --s390-pgste (KVM_CREATE_VM
    needs an mm that asked for PGSTEs)."""
    r = cli("repro-c", M1, "--arch", "s390x", "-o", "m1.c", "--compile")
    assert r.returncode == 0 and "m1: built with" in r.stdout, r.stderr
    src = (tmp_path / "m1.c").read_text()
    assert KVM_HEADER.read_text().strip() in src and "-Wl,--s390-pgste" in src
    assert 'kvm_step(4, "guest_fault", "guest_fault(0, 0, 1)"' in src and "#define WIN_LO 0x10000000ULL" in src
    elf = (tmp_path / "m1").read_bytes()
    assert elf[:4] == b"\x7fELF" and elf[18:20] == b"\x00\x16"  # big-endian EM_S390
    phoff, phnum = int.from_bytes(elf[32:40], "big"), int.from_bytes(elf[56:58], "big")
    types = [int.from_bytes(elf[phoff + 56 * i:phoff + 56 * i + 4], "big") for i in range(phnum)]
    assert 0x70000000 in types  # PT_S390_PGSTE


def test_the_docs_reproducer_is_what_repro_c_writes_for_m1():
    """docs/m1-repro.c stays the generator's output (regenerate: docs/repro-c.md)."""
    doc = (ROOT / "docs/m1-repro.c").read_text()
    assert doc == generate_c(tracemod.load(M1), "corpus/regressions/s390/gmap-dangling-m1.msgpack", "s390x").source

