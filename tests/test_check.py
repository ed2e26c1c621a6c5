"""ptfuzz check: the persistent engine (step, digest, clone, restore), the canonical digest and the search."""
import json
import random

import pytest

from ptfuzz import _engine
from ptfuzz import trace as tracemod
from ptfuzz.search.check import ELFS, CheckVerdict, alphabet, check, domains
from ptfuzz.engine import CONFIG_ORDER, replay
from ptfuzz.names import ARCH_NAMES, OP_NUMBER, knob_vector

from conftest import ROOT

CONFIG = tuple(int(tracemod.CONFIG_DEFAULTS[k]) for k in CONFIG_ORDER)
A = 0x200000000  # check's address slot 0 on s390
PMD = 1 << 20


def engine(arch="s390", knobs=None):
    return _engine.Engine(ARCH_NAMES.index(arch), knob_vector(arch, knobs or {}), CONFIG, tuple(ELFS[arch]))


def op(name, *args):
    return (OP_NUMBER[name], *args)


def steps(e, *ops):
    return [e.step(o) for o in ops]


# ---- the search ----

def test_finds_u7_at_its_corpus_length_and_nothing_shorter(tmp_path):
    u7 = tracemod.load(ROOT / "corpus" / "regressions" / "arm64" / "stage2-block-illegal-u7.msgpack")
    r = check("arm64", u7.knobs, len(u7.ops), pids=1, corpus=tmp_path)
    assert r.verdict is CheckVerdict.VIOLATION and r.violation.kind == "stage2-block-illegal"
    assert r.depth == len(r.trace.ops) == len(u7.ops)
    filed = tracemod.load(r.path)  # filed like fuzz: regressions/ARCH/KIND-HASH8.msgpack, with expect
    assert r.path.parent == tmp_path / "regressions" / "arm64" and r.path.name.startswith("stage2-block-illegal-")
    assert replay(filed).matches(filed) and filed.knobs == u7.knobs
    # breadth first: no sequence one shorter has the violation
    shorter = check("arm64", u7.knobs, len(u7.ops) - 1, pids=1)
    assert shorter.verdict is CheckVerdict.EXHAUSTED and shorter.depth == len(u7.ops) - 1


def test_symmetry_and_teardown_do_not_change_the_verdict():
    knobs = {"s390.pgste_decision": "convert-late", "mm.pmd_recheck": "no"}  # U5, 6 operations
    a = check("s390", knobs, 6, pids=1)
    b = check("s390", knobs, 6, pids=1, symmetry=False)
    assert (a.verdict, a.depth, a.violation.kind) == (b.verdict, b.depth, b.violation.kind) == \
        (CheckVerdict.VIOLATION, 6, "lost-update")
    two = check("s390", {}, 3, pids=2)
    flat = check("s390", {}, 3, pids=2, symmetry=False)
    assert two.verdict is flat.verdict is CheckVerdict.EXHAUSTED and two.distinct < flat.distinct


def test_defaults_exhaust_with_exit_0_and_json(cli):
    r = cli("check", "--arch", "x86_64", "--depth", "3", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["verdict"] == "exhausted" and rec["depth"] == 3
    assert rec["violation"] is None and rec["path"] is None
    assert rec["states"] > rec["distinct"] > 1 and rec["seconds"] >= 0
    human = cli("check", "--arch", "s390", "--depth", "2")
    assert human.returncode == 0 and "no violation in any sequence of <= 2 operations" in human.stdout


def test_violation_exit_1_writes_the_trace(cli, tmp_path):
    r = cli("check", "--arch", "s390", "--knob", "s390.pgste_decision=elf-no-restart", "--depth", "3", "--json",
            "--corpus", tmp_path / "out")
    assert r.returncode == 1, r.stderr
    rec = json.loads(r.stdout)
    assert rec["verdict"] == "violation" and rec["depth"] == 1
    assert rec["violation"]["kind"] == "pgste-table-missing" and rec["violation"]["op"] == "exec(1, 0)"
    assert rec["path"].startswith(str(tmp_path / "out" / "regressions" / "s390" / "pgste-table-missing-"))
    assert cli("replay", rec["path"]).returncode == 0  # the filed trace expects what it shows


def test_time_running_out_exits_3_with_the_bound_reached(cli):
    r = cli("check", "--arch", "s390", "--depth", "20", "--time", "0.3", "--json")
    assert r.returncode == 3, r.stderr
    rec = json.loads(r.stdout)
    assert rec["verdict"] == "timeout" and 0 <= rec["depth"] < 20 and rec["violation"] is None


@pytest.mark.parametrize("args", [["--depth", "65"], ["--addrs", "9"], ["--knob", "nope=1"]])
def test_bad_usage_is_exit_2_and_one_line(cli, args):
    r = cli("check", "--arch", "arm64", *args)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("ptfuzz: ")


def test_alphabet_covers_every_pid_cpu_and_vm_alike():
    d = domains("s390", {}, 2, 2, 1, 4)
    rows = alphabet("s390", d)
    forks = [r[1:3] for r in rows if r[0] == OP_NUMBER["fork"]]
    assert sorted(forks) == [[1, 2], [2, 1]]
    walks = [r[1] for r in rows if r[0] == OP_NUMBER["walk_step"]]
    assert walks == [0, 1]
    assert any(r[0] == OP_NUMBER["exec"] and r[2] == (1 << 64) - 1 for r in rows)  # elf -1
    assert any(r[0] == OP_NUMBER["mmap"] and r[2] == 1 << 42 for r in rows)  # above the 3-level asce_limit


# ---- the digest ----

def test_digest_equal_for_commuting_faults_and_renamed_tables():
    base = [op("exec", 1, -1), op("exec", 2, -1), op("mmap", 1, A, PMD, 0), op("mmap", 2, A, PMD, 0)]
    a, b = engine(), engine()
    steps(a, *base, op("fault", 1, A, 1), op("fault", 2, A, 1))
    steps(b, *base, op("fault", 2, A, 1), op("fault", 1, A, 1))
    # the tables and data pages were allocated in the other order: other numbers, the same state
    assert a.digest() == b.digest()
    # tables freed through RCU and data pages freed: nothing reachable is left of them
    c, d = engine(), engine()
    steps(c, op("exec", 1, -1), op("mmap", 1, A, PMD, 0), op("fault", 1, A, 1), op("munmap", 1, A, PMD),
          op("rcu_gp"))
    steps(d, op("exec", 1, -1), op("mmap", 1, A, PMD, 0), op("munmap", 1, A, PMD))
    assert c.digest() == d.digest()


def test_digest_differs_where_the_future_differs():
    def after(*ops):
        e = engine()
        steps(e, op("exec", 1, -1), op("mmap", 1, A, PMD, 0), *ops)
        return e.digest()
    plain = after()
    assert after(op("fault", 1, A, 1)) != after(op("fault", 1, A, 0))   # a data page, or the zero page
    assert after(op("rcu_lock", 0)) != plain                              # a reader: grace periods wait
    assert after(op("walk_begin", 0, 1, A)) != plain                      # an actor in flight
    assert after(op("madvise", 1, A, PMD, 1)) != plain                    # VM_HUGEPAGE
    # a callback that waits for a reader, and one that does not
    waiting = after(op("fault", 1, A, 1), op("rcu_lock", 0), op("munmap", 1, A, PMD))
    free = after(op("fault", 1, A, 1), op("munmap", 1, A, PMD), op("rcu_lock", 0))
    assert waiting != free
    # pids are not interchangeable unless the caller says so
    x, y = engine(), engine()
    x.step(op("exec", 1, -1))
    y.step(op("exec", 2, -1))
    assert x.digest() != y.digest()
    groups = ((1, 3), (0, 1), (0, 1))
    assert x.digest(groups) == y.digest(groups)


# ---- save and restore ----

def test_snapshot_restore_round_trip_reproduces_the_future():
    prefix = [op("exec", 1, 0), op("mmap", 1, A, PMD, 0), op("fault", 1, A, 1), op("vm_create", 0, 1, 0),
              op("memslot", 0, 0, 0, A, PMD), op("guest_fault", 0, 0, 1), op("walk_begin", 0, 1, A)]
    suffix = [op("walk_step", 0), op("munmap", 1, A, PMD), op("walk_step", 0), op("rcu_gp"), op("walk_end", 0),
              op("rcu_gp"), op("fault", 1, A, 1)]
    e = engine()
    steps(e, *prefix)
    snap = e.clone()
    first = (steps(e, *suffix), e.digest(), e.violation())
    e.restore(snap)
    assert e.same_tables(snap) and e.digest() == snap.digest()
    assert (steps(e, *suffix), e.digest(), e.violation()) == first
    # the copy owns its memory: the original can go, and the copy runs on
    again = snap.clone()
    del snap, e
    assert (steps(again, *suffix), again.digest(), again.violation()) == first


def test_fast_digest_and_copy_match_the_full_ones():
    """The occupancy bitmaps let digests and copies skip untouched table words: hold them to the full versions
    on random walks over the alphabet (a table write that bypassed entry_write would show here)."""
    rng = random.Random(7)
    for arch in ARCH_NAMES:
        rows = alphabet(arch, domains(arch, {}, 2, 2, 1, 2))
        for _ in range(12):
            e, other = engine(arch), engine(arch)
            for _ in range(24):
                e.step(rows[rng.randrange(len(rows))])
                if rng.random() < 0.3:
                    other.step(rows[rng.randrange(len(rows))])
                if e.violation():
                    break
            try:
                _engine.debug_full(True)
                full = e.digest()
            finally:
                _engine.debug_full(False)
            assert e.digest() == full
            other.restore(e)  # into an engine with other tables: only the touched chunks are copied
            assert other.same_tables(e) and other.digest() == full


# ---- review findings (each crashed or merged states that behave differently) ----

def test_sixteen_concatenated_64k_pgds_copy_and_free_exactly():
    """A 64K-granule stage 2 at IPA 46 has 16 concatenated pgd tables: 256 4K pages in one block (a uint8_t
    count wrapped to 0: the snapshot copy overflowed and every vm_destroy leaked 256 pages of accounting)."""
    cfg = (65536, 48, 0, 1024, 48)
    e = _engine.Engine(ARCH_NAMES.index("arm64"), knob_vector("arm64", {}), cfg, ())
    assert steps(e, op("exec", 1, -1), op("vm_create", 0, 1, 46), op("mmap", 1, 1 << 30, 1 << 21, 0),
                 op("memslot", 0, 0, 0, 1 << 30, 1 << 21), op("guest_fault", 0, 0, 1)) == [0] * 5
    c = e.clone()
    c.restore(e)
    assert c.digest() == e.digest()
    assert steps(e, op("vm_destroy", 0)) == [0]
    for _ in range(6):  # 1024 table pages: a leak of 256 a cycle runs out in four
        assert steps(e, op("vm_create", 0, 1, 46), op("vm_destroy", 0)) == [0, 0]


def test_vm_create_checks_its_vm_index():
    e = engine("x86_64")
    assert steps(e, op("exec", 1, -1), op("vm_create", 1 << 40, 1, 0)) == [0, -22]


def _x86(ops):
    e = engine("x86_64")
    assert all(r == 0 for r in steps(e, *ops)), ops
    return e


def test_invalidation_windows_break_vm_and_cpu_symmetry():
    """A held window's pending ends are counted per VM index, and the next notifying operation goes to the
    lowest-index armed cpu: states that differ only there must not share a digest under symmetry. (Two
    MADV_DONTNEEDs: both hold mmap_lock for read, so the second runs beside the first one's window.)"""
    a, b, m = 1 << 30, 1 << 31, 1 << 21

    def two_vms(first, second, hvas):
        return _x86([op("exec", 1, -1), op("mmap", 1, a, m, 0), op("mmap", 1, b, m, 0), op("vm_create", 0, 1, 0),
                     op("vm_create", 1, 1, 0), op("memslot", 0, 0, 0, hvas[0], m), op("memslot", 1, 0, 0, hvas[1], m),
                     op("inval_hold", 0), op("madvise", 1, first, m, 0), op("inval_hold", 1),
                     op("madvise", 1, second, m, 0),
                     op("rcu_lock", 0)])
    groups = ((1, 2), (0, 2), (0, 2))
    s1, s2 = two_vms(a, b, (a, b)), two_vms(b, a, (b, a))
    assert s1.digest(groups) != s2.digest(groups)
    assert s1.step(op("inval_end", 0)) == s2.step(op("inval_end", 0)) == 0
    assert s1.digest(groups) != s2.digest(groups)  # (they part here, so they must have differed before)

    def armed_twice(rcu_cpu):
        return _x86([op("exec", 1, -1), op("mmap", 1, a, m, 0), op("vm_create", 0, 1, 0), op("memslot", 0, 0, 0, a, m),
                     op("inval_hold", 0), op("inval_hold", 1), op("rcu_lock", rcu_cpu)])
    groups = ((1, 2), (0, 2), (0, 1))
    assert armed_twice(0).digest(groups) != armed_twice(1).digest(groups)


def test_digest_of_a_window_is_the_same_in_every_process():
    """A cpu in an invalidation window kept its stale walker fields raw in the digest, struct tref padding
    included, which assignments leave undefined: the same trace digested differently from process to process
    (found when `gen` started emitting windows that stay armed at a trace's end)."""
    import subprocess
    import sys
    code = ("from dataclasses import replace; from ptfuzz.search.gen import generate; from ptfuzz.engine import replay\n"
            "out = []\n"
            "for arch in ('arm64', 'x86_64'):\n"
            "    for seed in range(12):\n"
            "        t = generate(arch, 400, seed)\n"
            "        out += [replay(replace(t, ops=t.ops[:n])).digest for n in range(25, 401, 25)]\n"
            "print(' '.join(out))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    from ptfuzz.search.gen import generate
    held = sum(bool((generate(arch, 400, seed).ops[:, 0] == OP_NUMBER["inval_hold"]).any())
               for arch in ("arm64", "x86_64") for seed in range(12))
    assert held >= 6  # the workloads do hold windows: the comparison is not vacuous
    assert runs[0] == runs[1]
