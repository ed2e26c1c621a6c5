"""Issue 21's matrix: every unsafe variant (U1-U15, M1) in every search mode, {--no-por, --por} x {1 job, 2 jobs,
2 shards + --merge}, gives the same verdict and the same shortest length (and, but for shards, the same
counterexample); every safe control the same verdict and, but for shards, the same distinct states.

The cases run with two pids where that is affordable, so that --por's state-dependent rule (operations of two
processes that share nothing, search/lvl.c lvl_pids_apart) prunes; pruned > 0 is asserted where it must fire.
The whole matrix took ~40 minutes on 2 shared cores (M1 alone 25, U1-U15 12, the controls 1): `make check-matrix` (PTFUZZ_CHECK_MATRIX=full) runs it, and CI's
check-matrix job; the suite runs the cases marked quick: U1 (one pid), U2, U3, U5 (two pids), U7 (two pids), U9
(one pid), U12 (one pid), and every safe control at depth 4."""
import io
import os

import pytest
from rich.console import Console

from ptfuzz.search.check import CheckVerdict, check
from ptfuzz.search.shards import merge_dir, write_result
from ptfuzz.zoo import SAFE_CONTROLS

FULL = os.environ.get("PTFUZZ_CHECK_MATRIX") == "full"
MODES = [(por, mode) for por in (False, True) for mode in ("1 job", "2 jobs", "2 shards")]

# (id, arch, knobs, shortest length, domains, quick): docs/check.md's lengths; two pids unless the search is too big
UNSAFE = [("U1", "s390", {"mm.table_free": "immediate"}, 7, {"pids": 2}, False),
          ("U1-1pid", "s390", {"mm.table_free": "immediate"}, 7, {"pids": 1}, True),
          ("U2", "s390", {"s390.pgste_decision": "elf-no-restart"}, 1, {"pids": 2}, True),
          ("U3", "s390", {"s390.pt_alloc": "fragments-always"}, 1, {"pids": 2}, True),
          ("U4", "s390", {"s390.thp_in_pgste_mm": "allow"}, 6, {"pids": 2}, False),
          ("U4-1pid", "s390", {"s390.thp_in_pgste_mm": "allow"}, 6, {"pids": 1}, False),
          ("U5", "s390", {"s390.pgste_decision": "convert-late", "mm.pmd_recheck": "no"}, 6, {"pids": 2}, True),
          ("U6", "arm64", {"mm.pmd_recheck": "no", "mm.pt_reclaim": "yes"}, 6, {"pids": 2}, False),
          ("U7", "arm64", {"arm64.stage2_block_check": "none"}, 5, {"pids": 2}, True),
          ("U8", "arm64", {"arm64.thp_size": "vma-naive"}, 6, {"pids": 2}, False),
          ("U9", "arm64", {"kvm.invalidate_retry": "none"}, 7, {"pids": 2}, False),
          ("U9-1pid", "arm64", {"kvm.invalidate_retry": "none"}, 7, {"pids": 1}, True),
          ("U10", "arm64", {"kvm.fault_holds_mm": "no"}, 7, {"pids": 2}, False),
          ("U11", "x86_64", {"kvm.invalidate_retry": "none"}, 7, {"pids": 2}, False),
          ("U11-1pid", "x86_64", {"kvm.invalidate_retry": "none"}, 7, {"pids": 1}, False),
          ("U12", "x86_64", {"mm.table_free": "immediate"}, 7, {"pids": 2}, False),
          ("U12-1pid", "x86_64", {"mm.table_free": "immediate"}, 7, {"pids": 1}, True),
          ("U13", "x86_64", {"kvm.fault_holds_mm": "no"}, 7, {"pids": 2}, False),
          ("U14", "arm64", {"kvm.invalidate_retry": "seq-only"}, 8, {"pids": 1, "cpus": 2}, False),
          ("U15", "x86_64", {"kvm.invalidate_retry": "seq-only"}, 8, {"pids": 1, "cpus": 2}, False),
          ("M1", "s390", {}, 7, {"pids": 2, "cpus": 0}, False)]
# where the state-dependent rule must prune: two processes, and states where nothing links them
PRUNES = {"U1", "U4", "U5", "U6", "U7", "U8", "U9", "U10", "U11", "U12", "U13", "M1"}
# docs/bench.md's safe controls: every one at depth 4 in the suite, three deeper in the full matrix
_CONTROL_KNOBS = SAFE_CONTROLS
CONTROLS = [(f"{a}-{'-'.join(f'{k}={v}' for k, v in kn.items()) or 'defaults'}-d4", a, kn, 4, True)
            for a, kn in _CONTROL_KNOBS] + \
    [("s390-defer_gmap_unlink-d5", "s390", {"s390.defer_gmap_unlink": "yes"}, 5, False),
     ("arm64-defaults-d6", "arm64", {}, 6, False), ("x86_64-defaults-d6", "x86_64", {}, 6, False)]


def _cases(rows, quick_at):
    return [pytest.param(*r[:quick_at], id=r[0], marks=() if r[quick_at] or FULL else pytest.mark.skip(
        reason="the full matrix: make check-matrix (PTFUZZ_CHECK_MATRIX=full)")) for r in rows]


def search(arch, knobs, depth, dom, por, mode, tmp_path):
    """One mode: (verdict, depth, kind, ops or None, distinct or None, pruned). Shards: both shards, merged
    by --merge's code, whose verdict and length are the answer."""
    if mode != "2 shards":
        r = check(arch, knobs, depth, **dom, jobs=2 if mode == "2 jobs" else 1, por=por, seconds=3600)
        return (r.verdict, r.depth, r.violation.kind if r.violation else None,
                [list(o) for o in r.trace.ops] if r.trace is not None else None, r.distinct, r.pruned)
    d = tmp_path / f"shards-{int(por)}"
    pruned = 0
    for i in range(2):
        r = check(arch, knobs, depth, **dom, jobs=1, por=por, shard=(i, 2), seconds=3600)
        write_result(d, r, {k: dom.get(k) for k in ("pids", "cpus", "vms", "addrs")})
        pruned += r.pruned
    buf = io.StringIO()
    code = merge_dir(d, Console(file=buf, width=400, color_system=None))
    text = buf.getvalue()
    if code == 0:
        assert f"bound proved: no violation in any sequence of <= {depth} operations" in text, text
        return CheckVerdict.EXHAUSTED, depth, None, None, None, pruned
    assert code == 1, text
    line = next(s for s in text.splitlines() if s.startswith("violation "))
    words = line.split()
    assert "a shortest counterexample" in line, text  # every shard searched the depths below it
    return CheckVerdict.VIOLATION, int(words[3]), words[1], None, None, pruned


@pytest.mark.parametrize("uid,arch,knobs,length,dom", _cases(UNSAFE, 5))
def test_unsafe_variant_in_every_mode(uid, arch, knobs, length, dom, tmp_path):
    got = {m: search(arch, knobs, length, dom, *m, tmp_path) for m in MODES}
    ref = got[(False, "1 job")]  # check.c, the one-process search
    assert ref[0] is CheckVerdict.VIOLATION and ref[1] == length, (uid, ref[:3])
    for m, g in got.items():
        assert g[:3] == ref[:3], (uid, m, g[:3], ref[:3])
        if g[3] is not None:
            assert g[3] == ref[3], (uid, m)  # the same least counterexample, not only its length
        if not m[0]:
            assert g[5] == 0, (uid, m)
    if uid in PRUNES:
        assert got[(True, "1 job")][5] > 0, uid


@pytest.mark.parametrize("cid,arch,knobs,depth", _cases(CONTROLS, 4))
def test_safe_control_in_every_mode(cid, arch, knobs, depth, tmp_path, monkeypatch):
    dom = {"pids": 2}
    got = {m: search(arch, knobs, depth, dom, *m, tmp_path) for m in MODES}
    ref = got[(False, "1 job")]
    assert ref[0] is CheckVerdict.EXHAUSTED and ref[1] == depth, (cid, ref[:3])
    for m, g in got.items():
        assert g[:3] == ref[:3], (cid, m)
        if not m[0]:
            assert g[5] == 0, (cid, m)
        if m[1] != "2 shards":
            assert g[4] == ref[4], (cid, m, g[4], ref[4])  # distinct states: promised but for shards
    monkeypatch.setenv("PTFUZZ_POR_APART", "0")  # the static rules alone prune less: the state-dependent rule fires
    static = check(arch, knobs, depth, **dom, jobs=1, por=True)
    assert (static.verdict, static.distinct) == (ref[0], ref[4]) and got[(True, "1 job")][5] > static.pruned, cid
