"""ptfuzz check --jobs, --por and --shard (native_ext/search/lvl.c, ptfuzz/search/parallel.py): the same
verdicts, shortest lengths and distinct states as the one-process search (check.c), on every unsafe variant
and every safe control of docs/bench.md. Small depths only; no timing asserts."""
import json
import random

import pytest

from ptfuzz import _engine
from ptfuzz.search import por as pormod
from ptfuzz.search.check import CheckVerdict, alphabet, check, domains
from ptfuzz.names import ARCH_NAMES, knob_vector

from test_check import CONFIG, ELFS

# docs/check.md's shortest counterexamples: (id, arch, knobs, length, extra domains)
UNSAFE = [("U1", "s390", {"mm.table_free": "immediate"}, 7, {}),
          ("U2", "s390", {"s390.pgste_decision": "elf-no-restart"}, 1, {}),
          ("U3", "s390", {"s390.pt_alloc": "fragments-always"}, 1, {}),
          ("U4", "s390", {"s390.thp_in_pgste_mm": "allow"}, 6, {}),
          ("U5", "s390", {"s390.pgste_decision": "convert-late", "mm.pmd_recheck": "no"}, 6, {}),
          ("U6", "arm64", {"mm.pmd_recheck": "no", "mm.pt_reclaim": "yes"}, 6, {}),
          ("U7", "arm64", {"arm64.stage2_block_check": "none"}, 5, {}),
          ("U8", "arm64", {"arm64.thp_size": "vma-naive"}, 6, {}),
          ("U9", "arm64", {"kvm.invalidate_retry": "none"}, 7, {}),
          ("U10", "arm64", {"kvm.fault_holds_mm": "no"}, 7, {}),
          ("U11", "x86_64", {"kvm.invalidate_retry": "none"}, 7, {}),
          ("U12", "x86_64", {"mm.table_free": "immediate"}, 7, {}),
          ("U13", "x86_64", {"kvm.fault_holds_mm": "no"}, 7, {})]
# the three long searches: the smallest alphabet that still holds them (each at its docs/check.md length)
LONG = [("U14", "arm64", {"kvm.invalidate_retry": "seq-only"}, 8, {"cpus": 2}),
        ("U15", "x86_64", {"kvm.invalidate_retry": "seq-only"}, 8, {"cpus": 2}),
        ("M1", "s390", {}, 7, {"pids": 2, "cpus": 0})]
CONTROLS = [("arm64", {}), ("x86_64", {}), ("s390", {"s390.defer_gmap_unlink": "yes"}),
            ("s390", {"s390.pt_alloc": "full-page", "s390.defer_gmap_unlink": "yes"}),
            ("s390", {"s390.pgste_decision": "sysctl-only"}), ("s390", {"s390.pgste_decision": "convert-late"}),
            ("s390", {"s390.defer_gmap_unlink": "yes", "s390.thp_in_pgste_mm": "allow"}),
            ("arm64", {"arm64.stage2_block_check": "can-map-block-size"}),
            ("arm64", {"arm64.stage2_block_check": "has-pmd"}), ("arm64", {"arm64.stage2_block_check": "has-pud"}),
            ("x86_64", {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"}),
            ("arm64", {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"}),
            ("x86_64", {"mm.pt_reclaim": "yes"})]


def summary(r):
    return r.verdict, r.depth, r.violation.kind if r.violation else None


@pytest.mark.parametrize("uid,arch,knobs,length,extra", UNSAFE, ids=[u[0] for u in UNSAFE])
def test_unsafe_variants_at_their_length_with_and_without_por_jobs_and_shards(uid, arch, knobs, length, extra):
    kw = {"pids": 1, **extra}
    base = check(arch, knobs, length, **kw)  # check.c: the reference
    assert base.verdict is CheckVerdict.VIOLATION and base.depth == length, uid
    for opts in ({"jobs": 2}, {"jobs": 1, "por": True}):  # and 2 jobs with --por: the shards below
        r = check(arch, knobs, length, **kw, **opts)
        assert summary(r) == summary(base), (uid, opts)
        assert [list(o) for o in r.trace.ops] == [list(o) for o in base.trace.ops]  # the same least path
    shards = [check(arch, knobs, length, **kw, jobs=2, por=True, shard=(i, 2)) for i in range(2)]
    found = [s for s in shards if s.verdict is CheckVerdict.VIOLATION]
    assert found and min(s.depth for s in found) == length, uid
    assert all(s.verdict is CheckVerdict.EXHAUSTED or s.depth == length for s in shards)


@pytest.mark.parametrize("uid,arch,knobs,length,extra", LONG, ids=[u[0] for u in LONG])
def test_long_variants_at_their_length_with_por_two_jobs(uid, arch, knobs, length, extra):
    kw = {"pids": 1, **extra}
    r = check(arch, knobs, length, **kw, jobs=2, por=True, seconds=900)
    assert r.verdict is CheckVerdict.VIOLATION and r.depth == length, (uid, r.verdict, r.depth)
    assert r.violation.kind == ("gmap-dangling" if uid == "M1" else "stage2-stale")


@pytest.mark.parametrize("arch,knobs", CONTROLS, ids=[f"{a}-{'-'.join(f'{k}={v}' for k, v in kn.items()) or 'defaults'}"
                                                     for a, kn in CONTROLS])
def test_safe_controls_same_states_with_and_without_por_and_jobs(arch, knobs):
    depth = 4
    base = check(arch, knobs, depth, pids=2)
    for opts in ({"jobs": 2}, {"jobs": 1, "por": True}, {"jobs": 2, "por": True}):
        r = check(arch, knobs, depth, pids=2, **opts)
        assert (r.verdict, r.depth, r.distinct) == (base.verdict, base.depth, base.distinct), opts
        if not opts.get("por"):
            assert r.states == base.states
        else:
            assert r.states + r.pruned == base.states
    assert base.verdict is CheckVerdict.EXHAUSTED


def test_por_keeps_states_with_two_cpus_and_without_symmetry():
    """Where --por prunes most (two cpus: RCU sections and walkers on either), every depth's states stay."""
    for symmetry in (True, False):
        base = check("x86_64", {}, 5, pids=1, cpus=2, symmetry=symmetry, jobs=2)
        r = check("x86_64", {}, 5, pids=1, cpus=2, symmetry=symmetry, por=True)
        assert r.levels == base.levels and r.pruned > 0
        assert r.states + r.pruned == base.states


def test_independent_operations_commute_on_random_states():
    """Every pair the relation calls independent, from random reachable states: both orders give the same
    digest, the same results and the same violation (por.py's rules, tested as well as argued)."""
    rng = random.Random(3)
    pairs = 0
    for arch in ARCH_NAMES:
        rows = alphabet(arch, domains(arch, {}, 2, 2, 1, 2))
        ind = [(i, j) for i in range(len(rows)) for j in range(len(rows))
               if i < j and pormod.independent(rows[i], rows[j])]
        assert ind, arch
        for _ in range(25):
            e = _engine.Engine(ARCH_NAMES.index(arch), knob_vector(arch, {}), CONFIG, tuple(ELFS[arch]))
            for _ in range(rng.randrange(14)):
                e.step(rows[rng.randrange(len(rows))])
            if e.violation():
                continue
            for i, j in rng.sample(ind, min(12, len(ind))):
                a, b = e.clone(), e.clone()
                ra = (a.step(rows[i]), a.step(rows[j]))
                rb = (b.step(rows[j]), b.step(rows[i]))
                assert ra == rb[::-1] and a.digest() == b.digest() and a.violation() == b.violation(), \
                    (arch, rows[i], rows[j])
                pairs += 1
    assert pairs > 500


def test_cli_jobs_shards_and_merge(cli, tmp_path):
    args = ["check", "--arch", "s390", "--knob", "s390.pgste_decision=convert-late", "--knob", "mm.pmd_recheck=no",
            "--pids", "1", "--depth", "6", "--por", "--shard-dir", tmp_path / "shards", "--corpus", tmp_path / "c"]
    codes = [cli(*args, "--shard", f"{i}/3", "--jobs", "2", "--json").returncode for i in range(3)]
    assert 1 in codes and set(codes) <= {0, 1}
    files = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert files == ["shard-0-of-3.json", "shard-1-of-3.json", "shard-2-of-3.json"]  # no temporary left
    m = cli("check", "--merge", tmp_path / "shards")
    assert m.returncode == 1, m.stderr
    assert "bound proved: no violation in any sequence of <= 5 operations" in m.stdout
    assert "violation lost-update in 6 operations" in m.stdout and "a shortest counterexample" in m.stdout
    (tmp_path / "shards" / "shard-1-of-3.json").unlink()
    m = cli("check", "--merge", tmp_path / "shards")
    assert m.returncode == 1 and "missing shards: 1" in m.stdout and "not proved shortest" in m.stdout
    ok = cli("check", "--arch", "x86_64", "--pids", "1", "--depth", "3", "--jobs", "2", "--json")
    rec = json.loads(ok.stdout)
    assert ok.returncode == 0 and rec["jobs"] == 2 and rec["verdict"] == "exhausted"


@pytest.mark.parametrize("args", [["--arch", "arm64", "--jobs", "0"], ["--arch", "arm64", "--shard", "2/2"],
                                  ["--arch", "arm64", "--shard", "x"], ["--merge", "/nonexistent-dir"],
                                  ["--depth", "3"]])
def test_bad_usage_of_the_new_options_is_exit_2_and_one_line(cli, args):
    r = cli("check", *args)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("ptfuzz: ")


def test_merge_refuses_mixed_searches(cli, tmp_path):
    for i, depth in ((0, "3"), (1, "4")):
        cli("check", "--arch", "x86_64", "--pids", "1", "--depth", depth, "--shard", f"{i}/2", "--shard-dir", tmp_path)
    r = cli("check", "--merge", tmp_path)
    assert r.returncode == 2 and "different searches" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_time_limit_and_workers_torn_down():
    import multiprocessing
    r = check("s390", {}, 20, pids=2, jobs=2, seconds=0.5)
    assert r.verdict is CheckVerdict.TIMEOUT and r.reason == "time" and 0 <= r.depth < 20
    assert multiprocessing.active_children() == []


def test_byte_compare_of_unchanged_steps_changes_no_count(monkeypatch):
    """ptf_same (snap.c) spares the digest of a step that changed nothing: with it and without it
    (PTFUZZ_CHECK_SAME=0), both searches see the same states, depth by depth, and the same counterexample."""
    def both(*args, **kw):
        out = []
        for flag in ("0", "1"):
            monkeypatch.setenv("PTFUZZ_CHECK_SAME", flag)
            out.append([(r.verdict, r.depth, r.distinct, r.states, r.levels,
                         None if r.trace is None else [list(o) for o in r.trace.ops])
                        for r in (check(*args, **kw), check(*args, **kw, jobs=2))])
        return out
    for arch in ("s390", "arm64", "x86_64"):
        off, on = both(arch, {}, 4, pids=2, cpus=2)
        assert off == on, arch
    off, on = both("s390", {"s390.pgste_decision": "convert-late", "mm.pmd_recheck": "no"}, 6, pids=1)
    assert off == on and off[0][0] is CheckVerdict.VIOLATION


def children(pid: int) -> list[int]:
    """The live children of pid, from /proc (no pgrep: under `make asan` LD_PRELOAD reaches every tool it starts)."""
    import os
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(entry))
    return kids


def test_ctrl_c_stops_the_workers_and_reports_the_bound(tmp_path):
    """SIGINT to a --jobs 2 search: exit 3, interrupted, the bound of the last finished depth, and no process of
    its group left (the workers are torn down)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    p = subprocess.Popen([sys.executable, "-m", "ptfuzz", "check", "--arch", "s390", "--depth", "30", "--jobs", "2",
                          "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                         start_new_session=True)
    try:
        for _ in range(600):  # until both workers run (children of the driver)
            kids = children(p.pid)
            if len(kids) >= 2:
                break
            time.sleep(0.05)
        assert len(kids) >= 2
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 3, err
    rec = json.loads(out)
    assert rec["verdict"] == "timeout" and rec["interrupted"] and rec["stopped_by"] == "interrupted"
    assert 0 <= rec["depth"] < 30
    for _ in range(100):
        try:
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("a worker outlived the search")
