"""crosscheck: the model against the running kernel. The comparison, the generator and bad input here;
the agreement itself on this host in the tests marked `host`."""
import json
import platform

import numpy as np
import pytest

from ptfuzz import trace as tracemod
from ptfuzz.crosscheck.compare import (HOST_OPS, WINDOW, WINDOW_SPAN, Figure, Step, compare, generate, seeds)
from ptfuzz.crosscheck.host import host_supported
from ptfuzz.trace import Trace, op_to_list, ops_from_list

HOST = host_supported() is None and platform.machine() == "x86_64"
on_host = pytest.mark.skipif(not HOST, reason=f"crosscheck runs here on x86_64 Linux only ({host_supported() or platform.machine()})")
OPS = ops_from_list([["exec", 1, -1], ["mmap", 1, WINDOW, 1 << 21, 1], ["fault", 1, WINDOW, 1]])


def test_compare_names_the_first_figure_that_differs():
    same = [Step(0, {1: (0, ())}), Step(0, {1: (0, ())}), Step(0, {1: (12288, (WINDOW,))})]
    assert compare(same, same, OPS) is None
    bytes_differ = same[:2] + [Step(0, {1: (8192, (WINDOW,))})]
    d = compare(same, bytes_differ, OPS)
    assert (d.op_index, d.figure, d.pid, d.model, d.kernel) == (2, Figure.PT_BYTES, 1, 12288, 8192)
    blocks_differ = same[:2] + [Step(0, {1: (12288, ())})]
    d = compare(same, blocks_differ, OPS)
    assert (d.figure, d.model, d.kernel) == (Figure.PMD_MAPPED, [hex(WINDOW)], [])
    result_first = [same[0], Step(-12, {1: (4096, ())}), same[2]]
    d = compare(same, result_first, OPS)  # the result is compared before the figures of the same operation
    assert (d.op_index, d.figure, d.model, d.kernel) == (1, Figure.RESULT, 0, -12)
    d = compare(same, [same[0], Step(0, {}), same[2]], OPS)
    assert d.figure == Figure.PIDS and "op 1 mmap" in d.text()


def test_generated_traces_are_host_only_in_the_window_and_reproducible():
    for s in seeds(1, 40):
        t = generate("x86_64", {}, s, 30)
        assert len(t.ops) == 30 and np.array_equal(t.ops, generate("x86_64", {}, s, 30).ops)
        tracemod.loads(tracemod.dumps(t))  # a valid trace file
        for row in t.ops:
            name, *args = op_to_list(row)
            assert name in HOST_OPS
            if name in ("mmap", "shm_mmap", "munmap", "madvise", "fault"):
                assert WINDOW <= args[1] < WINDOW + WINDOW_SPAN
    assert seeds(7, 3) == seeds(7, 10)[:3]  # trace i of --gen N is the same whatever N is


def test_bad_input_is_one_line_and_exit_2(cli, tmp_path):
    r = cli("crosscheck")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--gen" in r.stderr
    tracemod.save(Trace("x86_64", ops_from_list([["exec", 1, -1], ["walk_begin", 0, 1, WINDOW]])), tmp_path / "w.msgpack")
    r = cli("crosscheck", "w.msgpack")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    if HOST:
        assert "ops[1]: walk_begin is not a host operation" in r.stderr
    many = [["exec", 1, -1], ["mmap", 1, WINDOW, 1 << 30, 1]] + [["fault", 1, WINDOW + (i << 21), 1] for i in range(3000)]
    tracemod.save(Trace("x86_64", ops_from_list(many)), tmp_path / "m.msgpack")
    r = cli("crosscheck", "m.msgpack")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    if HOST:
        assert "3000 faults could make 5 GiB resident" in r.stderr
    tracemod.save(Trace("s390", ops_from_list([["exec", 1, -1]])), tmp_path / "s.msgpack")
    r = cli("crosscheck", "s.msgpack")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr


@on_host
def test_generated_traces_agree_with_this_kernel(cli):
    """What CI proves on x86_64 hosts: the model and the running kernel agree on random host traces,
    fork and shared memory included (the 1000-trace run is bench B7)."""
    r = cli("crosscheck", "--gen", 60, "--seed", 1, "--json", "-o", "out")
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    bad = [row for row in lines[:-1] if not row["agree"]]
    assert r.returncode == 0 and not bad, (bad[:3], r.stderr)
    assert lines[-1]["traces"] == lines[-1]["agree"] == 60


@on_host
def test_a_knob_against_the_host_is_a_minimized_disagreement(cli, tmp_path):
    """Forcing the model to the other side of a behaviour the host probes (PT reclaim) must disagree on
    page-table bytes at the DONTNEED, and the filed trace must be minimal and carry both sides' figures."""
    from ptfuzz.crosscheck.host import Host
    with Host() as h:
        reclaims = bool(h.probe().get("pt_reclaim"))
    knob = "mm.pt_reclaim=" + ("no" if reclaims else "yes")
    ops = [["exec", 1, -1], ["mmap", 1, WINDOW + (8 << 20), 4 << 20, 0], ["fault", 1, WINDOW + (8 << 20) + 4096, 1],
           ["fault", 1, WINDOW + (11 << 20), 1], ["mmap", 1, WINDOW + (64 << 20), 8192, 0],
           ["madvise", 1, WINDOW + (8 << 20), 2 << 20, 0], ["fault", 1, WINDOW + (11 << 20), 0]]
    tracemod.save(Trace("x86_64", ops_from_list(ops)), tmp_path / "t.msgpack")
    r = cli("crosscheck", "t.msgpack", "--knob", knob, "--json", "-o", "out")
    assert r.returncode == 1, r.stdout + r.stderr
    row = json.loads(r.stdout.splitlines()[0])
    d = row["first_disagreement"]
    assert d["figure"] == "pt_bytes" and d["op"].startswith("madvise") and abs(d["model"] - d["kernel"]) == 4096
    filed = tracemod.load(tmp_path / row["path"])
    names = [op_to_list(o)[0] for o in filed.ops]
    assert names == ["exec", "mmap", "fault", "madvise"] and row["minimized_from"] == len(ops)
    figures = filed.meta["crosscheck"]["figures"]
    assert len(figures) == 4 and figures[-1]["model"]["procs"] != figures[-1]["kernel"]["procs"]
    assert filed.knobs["mm.pt_reclaim"] == knob.split("=")[1]
    # replaying the filed trace with the same knob reproduces it; with the host's own behaviour it agrees
    assert cli("crosscheck", row["path"], "--knob", knob).returncode == 1
    assert cli("crosscheck", row["path"], "--knob", "mm.pt_reclaim=" + ("yes" if reclaims else "no")).returncode == 0


B = WINDOW + (32 << 20)
M2 = 2 << 20
# One trace per behaviour newer than v6.6 that the host probes: the figure it changes comes out
# differently under the two values of its knob.
PROBED = {
    "mm.pt_reclaim": [["exec", 1, -1], ["mmap", 1, B, M2, 0], ["fault", 1, B, 1], ["madvise", 1, B, M2, 0]],
    "mm.huge_zero_wp": [["exec", 1, -1], ["mmap", 1, B, M2, 1], ["fault", 1, B, 0], ["fault", 1, B, 1]],
    "mm.collapse_readonly": [["exec", 1, -1], ["mmap", 1, B, M2, 0], ["fault", 1, B, 1], ["madvise", 1, B, 4096, 0],
                             ["fault", 1, B + 4096, 0], ["madvise", 1, B, M2, 3]],
    "mm.merge_unfaulted": [["exec", 1, -1], ["mmap", 1, B, 2 * M2, 0], ["madvise", 1, B, 4096, 1],
                           ["fault", 1, B + 3 * (M2 // 2), 1], ["madvise", 1, B + 4096, 2 * M2 - 4096, 1],
                           ["fault", 1, B, 0]],
}


@on_host
@pytest.mark.parametrize("knob", sorted(PROBED))
def test_probed_knobs_make_the_model_agree(cli, tmp_path, knob):
    """The knob the host's probe sets is the one value under which the model agrees with this kernel."""
    from ptfuzz.names import KNOB_BY_NAME
    tracemod.save(Trace("x86_64", ops_from_list(PROBED[knob])), tmp_path / "t.msgpack")
    r = cli("crosscheck", "t.msgpack", "--json", "--no-minimize")
    summary = json.loads(r.stdout.splitlines()[-1])
    assert r.returncode == 0, r.stdout + r.stderr
    chosen = summary["knobs"].get(knob, KNOB_BY_NAME[knob].default("x86_64"))
    other = next(v for v in KNOB_BY_NAME[knob].values if v != chosen)
    r = cli("crosscheck", "t.msgpack", "--json", "--no-minimize", "--knob", f"{knob}={other}")
    if r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["unstable"]:
        pytest.skip("the host did not repeat itself (crosscheck counted the trace unstable: a huge page it could not "
                    "allocate now, or khugepaged between operations)")
    assert r.returncode == 1, r.stdout + r.stderr
    assert json.loads(r.stdout.splitlines()[0])["first_disagreement"]["op_index"] == len(PROBED[knob]) - 1


def test_a_kernel_run_that_could_not_allocate_a_huge_page_says_so(monkeypatch):
    """KernelSide.run notes whether the host's THP allocation failures (/proc/vmstat) grew during the run, so that
    Checker.check counts such a disagreement as unstable instead of blaming the model."""
    from ptfuzz.crosscheck import compare

    class FakeHost:
        def shm_reset(self):
            pass

        def op(self, name, *args):
            return 0

        def figures(self, pid, lo, hi):
            return None

    counter = iter(range(100))
    for grows, expect in ((True, True), (False, False)):
        monkeypatch.setattr(compare, "thp_failures", (lambda: next(counter)) if grows else (lambda: 7))
        side = compare.KernelSide(FakeHost())
        side.run(ops_from_list([["exec", 1, -1], ["mmap", 1, WINDOW, 2 << 20, 1]]))
        assert side.thp_failed is expect
