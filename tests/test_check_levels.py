"""ptfuzz check --jobs, --por and --shard (native_ext/search/lvl.c, ptfuzz/search/parallel.py): --por's rules hold
on random states, the levels with and without it, the CLI, Ctrl-C and time limits. Every unsafe variant and safe
control in every mode: test_check_matrix.py. Small depths only; no timing asserts."""
import json
import random

import pytest

from ptfuzz import _engine
from ptfuzz.search import por as pormod
from ptfuzz.search.check import CheckVerdict, alphabet, check, domains
from ptfuzz.names import ARCH_NAMES, OP_NUMBER, OP_WIDTH, knob_vector

from test_check import CONFIG, ELFS
from test_check_matrix import CONTROLS as MATRIX_CONTROLS, UNSAFE as MATRIX_UNSAFE

def test_por_keeps_states_with_two_cpus_and_without_symmetry():
    """Where --por prunes most (two cpus: RCU sections and walkers on either), every depth's states stay."""
    for symmetry in (True, False):
        base = check("x86_64", {}, 5, pids=1, cpus=2, symmetry=symmetry, jobs=2)
        r = check("x86_64", {}, 5, pids=1, cpus=2, symmetry=symmetry, por=True)
        assert r.levels == base.levels and r.pruned > 0
        assert r.states + r.pruned == base.states


def _commutes(e, a, x):
    """From e: a then x and x then a give the same results, digest and violation kind; a violation of a from e
    is a's violation after x too."""
    p, q = e.clone(), e.clone()
    ra = [p.step(a)]
    if p.violation():
        rb = (q.step(x), q.step(a))
        return q.violation() is not None and q.violation()[0] == p.violation()[0] and rb[1] == ra[0]
    ra.append(p.step(x))
    rb = (q.step(x), q.step(a))
    vp, vq = p.violation(), q.violation()
    return ra == list(rb[::-1]) and p.digest() == q.digest() and (vp and vp[0]) == (vq and vq[0])


def _random_states(rng, arch, knobs, rows, n, execs):
    """n random reachable states without a violation (each pid exec'd first with probability execs)."""
    exec_rows = {int(r[1]): r for r in rows if pormod.NAMES[int(r[0])] == "exec" and int(r[2]) == (1 << 64) - 1}
    out = []
    while len(out) < n:
        e = _engine.Engine(ARCH_NAMES.index(arch), knob_vector(arch, knobs), CONFIG, tuple(ELFS[arch]))
        ops = [r for pid, r in sorted(exec_rows.items()) if rng.random() < execs]
        ops += [rows[rng.randrange(len(rows))] for _ in range(rng.randrange(16))]
        for o in ops:
            if e.violation():
                break
            e.step(o)
        if not e.violation():
            out.append(e)
    return out


def test_independent_operations_commute_on_random_states():
    """Every pair the relation calls independent from every state (ALWAYS), from random reachable states: both
    orders give the same digest, the same results and the same violation (por.py's rules, tested as well as
    argued)."""
    rng = random.Random(3)
    pairs = 0
    for arch in ARCH_NAMES:
        rows = alphabet(arch, domains(arch, {}, 2, 2, 1, 2))
        ind = [(i, j) for i in range(len(rows)) for j in range(len(rows))
               if i < j and pormod.independent(rows[i], rows[j]) == pormod.ALWAYS]
        assert ind, arch
        for e in _random_states(rng, arch, {}, rows, 25, 0.3):
            for i, j in rng.sample(ind, min(12, len(ind))):
                assert _commutes(e, rows[i], rows[j]), (arch, rows[i], rows[j])
                pairs += 1
    assert pairs > 500


KNOB_SETS = [(a, {}) for a in ARCH_NAMES] + [(u[1], u[2]) for u in MATRIX_UNSAFE if not u[0].endswith("1pid")] + \
    [(c[1], c[2]) for c in MATRIX_CONTROLS]


@pytest.mark.parametrize("arch,knobs", KNOB_SETS, ids=[f"{a}-{'-'.join(f'{k}={v}' for k, v in kn.items()) or 'defaults'}"
                                                       for a, kn in KNOB_SETS])
def test_processes_apart_commute_on_random_states(arch, knobs):
    """The state-dependent rule (APART: two processes' own operations, lvl.c lvl_por_apart), from random reachable
    states of three processes on every knob set of the matrix: wherever the condition holds (the pids apart in the
    state, the second operation queued no RCU callback), both orders agree. And the condition is not vacuous: it
    holds for many pairs, and fails for others (a VM, an actor, a fork, shared memory, a queued callback)."""
    rng = random.Random(hash((arch, tuple(sorted(knobs.items())))) & 0xffff)
    rows = alphabet(arch, domains(arch, {}, 3, 2, 1, 3))
    ind = [(i, j) for i in range(len(rows)) for j in range(len(rows))
           if i != j and pormod.independent(rows[i], rows[j]) == pormod.APART]
    held = failed = 0
    for e in _random_states(rng, arch, knobs, rows, 30, 0.8):
        for i, j in rng.sample(ind, min(60, len(ind))):
            u = e.clone()
            u.step(rows[j])
            if u.violation() or not e.por_apart(u, int(rows[i][1]), int(rows[j][1])):
                failed += 1
                continue
            assert _commutes(e, rows[i], rows[j]), (arch, knobs, rows[i], rows[j])
            held += 1
    assert held > 150 and failed > 150, (held, failed)


def test_processes_apart_condition():
    """lvl_pids_apart's links, one at a time, from two exec'd processes: apart; a fork, shared memory, an armed
    invalidation window each make them not apart, a VM or a walker does not; a munmap that queues an RCU callback
    fails the whole condition."""
    def fresh(pids=(1, 2)):
        e = _engine.Engine(ARCH_NAMES.index("x86_64"), knob_vector("x86_64", {}), CONFIG, ())
        for pid in pids:
            assert e.step(op("exec", pid, -1)) == 0
        return e
    addr, pmd = 1 << 32, 1 << 21
    e = fresh()
    assert e.por_apart(e.clone(), 1, 2) and not e.por_apart(e.clone(), 1, 1) and not e.por_apart(e.clone(), 1, 3)
    for pids, link in (((1,), (["mmap", 1, addr, pmd, 0], ["fault", 1, addr, 1], ["fork", 1, 2])),
                       ((1, 2), (["shm_mmap", 2, addr, pmd, 0, 0],)), ((1, 2), (["inval_hold", 0],))):
        e = fresh(pids)
        for o in link:
            assert e.step(op(*o)) == 0, o
        assert not e.por_apart(e.clone(), 1, 2), link
    for link in ((["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, addr, pmd]), (["walk_begin", 0, 2, addr],)):
        e = fresh()
        for o in (["mmap", 1, addr, pmd, 0],) + link:
            assert e.step(op(*o)) == 0, o
        assert e.por_apart(e.clone(), 1, 2), link
    e = fresh()  # no link: apart, until pid 2's operation queues an RCU callback (the digest keeps their order)
    for o in (["mmap", 2, addr, pmd, 0], ["fault", 2, addr, 1], ["mmap", 1, addr, pmd, 0]):
        assert e.step(op(*o)) == 0, o
    assert e.por_apart(e.clone(), 1, 2)
    u = e.clone()
    assert u.step(op("munmap", 2, addr, pmd)) == 0
    assert not e.por_apart(u, 1, 2)


def op(name, *args):
    row = [OP_NUMBER[name], *[a & ((1 << 64) - 1) for a in args]]
    return row + [0] * (OP_WIDTH - len(row))


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


@pytest.mark.parametrize("switch,unsafe", [
    ("PTFUZZ_CHECK_SAME", ("s390", {"s390.pgste_decision": "convert-late", "mm.pmd_recheck": "no"}, 6)),
    ("PTFUZZ_CHECK_NOOP", ("x86_64", {"mm.table_free": "immediate"}, 7))])
def test_shortcuts_for_unchanged_steps_change_no_count(monkeypatch, switch, unsafe):
    """ptf_same (snap.c) spares the digest of a step that changed nothing, ptf_noop (engine.c) the step of an
    operation whose precondition fails (no such process, no such actor on the cpu, a busy cpu): with each and
    without it (SWITCH=0), both searches see the same states, depth by depth, and the same counterexample."""
    def both(*args, **kw):
        out = []
        for flag in ("0", "1"):
            monkeypatch.setenv(switch, flag)
            out.append([(r.verdict, r.depth, r.distinct, r.states, r.levels, r.blocked,
                         None if r.trace is None else [list(o) for o in r.trace.ops])
                        for r in (check(*args, **kw), check(*args, **kw, jobs=2))])
        return out
    for arch in ("s390", "arm64", "x86_64"):
        off, on = both(arch, {}, 4, pids=2, cpus=2)
        assert off == on, arch
    arch, knobs, depth = unsafe
    off, on = both(arch, knobs, depth, pids=1)
    assert off == on and off[0][0] is CheckVerdict.VIOLATION


def test_an_operation_decided_without_a_step_would_have_changed_nothing():
    """ptf_noop's soundness, differentially: from states along random walks over check's alphabet (every arch, 2
    pids, 2 cpus, a VM), every operation it calls a no-op, stepped on a copy, fails, finds nothing and leaves the
    digest as it was; and it does call some of them no-ops (an alphabet of processes' and actors' operations)."""
    from test_check import engine
    rng = random.Random(7)
    for arch in ("s390", "arm64", "x86_64"):
        rows = alphabet(arch, domains(arch, {}, 2, 2, 1, 2))
        noops = 0
        for _ in range(40):
            e = engine(arch)
            for _ in range(rng.randrange(1, 10)):
                d = e.digest()
                for r in rows:
                    if e.noop(r):
                        noops += 1
                        w = e.clone()
                        assert w.step(r) < 0 and w.violation() is None and w.digest() == d, (arch, r)
                r = rng.choice(rows[:1]) if rng.random() < 0.2 else rng.choice(rows)
                e.step(r)
                if e.violation():
                    break
        assert noops > 1000, arch


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


def test_an_operation_the_rules_do_not_know_is_dependent_and_stops_the_state_dependent_rule(monkeypatch):
    """An opcode por.py has no rule for (one a later merge adds) is dependent on every operation, and an alphabet
    that holds one prunes no APART pair: its states may link processes in ways lvl_pids_apart does not know."""
    rows = alphabet("x86_64", domains("x86_64", {}, 2, 1, 1, 1))
    templates: list = []
    alphabet("x86_64", domains("x86_64", {}, 2, 1, 1, 1), templates)
    _, indep = pormod.relation(rows, templates, True)
    assert pormod.APART in indep and pormod.apart_allowed(rows)
    new = max(OP_NUMBER.values()) + 1
    monkeypatch.setitem(pormod.NAMES, new, "some_new_operation")
    stranger = [new, 0, 1, 0, 0, 0][:OP_WIDTH] + [0] * max(0, OP_WIDTH - 6)
    assert all(pormod.independent(stranger, r) == pormod.DEPENDENT == pormod.independent(r, stranger) for r in rows)
    _, indep = pormod.relation(rows + [stranger], templates + [(999, ())], True)
    assert pormod.APART not in indep and pormod.ALWAYS in indep
