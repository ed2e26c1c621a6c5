"""The bug zoo (ptfuzz/zoo.py, docs/history.md): each modelled bug's counterexample violates with its pre-fix knob, is
clean with the fix, cannot lose an operation, and the docs and `ptfuzz knobs` name it."""
import json
from dataclasses import replace

import numpy as np
import pytest

from conftest import ROOT
from ptfuzz import trace as tracemod
from ptfuzz.engine import replay
from ptfuzz.names import KNOB_BY_NAME
from ptfuzz.zoo import BUGS

MODELLED = [b for b in BUGS if b.modelled]
HISTORY = (ROOT / "docs" / "history.md").read_text()


def regression(bug):
    (path,) = [p for k in bug.kinds for p in (ROOT / "corpus" / "regressions" / bug.arch).glob(f"{k}-{bug.id.lower()}.msgpack")]
    return tracemod.load(path)


def test_every_zoo_knob_value_exists_and_its_default_is_the_fix():
    for b in BUGS:
        k = KNOB_BY_NAME[b.knob]
        assert b.value in k.values and b.value != k.default(b.arch), b.id
        for name, value in b.also.items():
            assert value in KNOB_BY_NAME[name].values


@pytest.mark.parametrize("bug", MODELLED, ids=lambda b: b.id)
def test_counterexample_needs_the_pre_fix_design_and_every_operation(bug):
    t = regression(bug)
    assert t.knobs == bug.knobs and len(t.ops) == bug.min_ops
    v = replay(t).violation
    assert v is not None and v.kind in bug.kinds
    fixed = dict(t.knobs, **{bug.knob: KNOB_BY_NAME[bug.knob].default(bug.arch)})
    assert replay(replace(t, knobs=fixed)).violation is None  # the fix alone closes it
    for i in range(len(t.ops)):  # one-minimal
        w = replay(replace(t, ops=np.delete(t.ops, i, axis=0))).violation
        assert w is None or w.kind != v.kind, f"{bug.id}: op {i} is not needed"


@pytest.mark.parametrize("bug", BUGS, ids=lambda b: b.id)
def test_history_tells_each_bug(bug):
    assert f"## {bug.id}" in HISTORY and bug.commit in HISTORY and f"{bug.knob}={bug.value}" in HISTORY


def test_knobs_names_each_fix(cli):
    r = cli("knobs", "--json")
    assert r.returncode == 0, r.stderr
    fixes = {k["name"]: k["fixes"] for k in json.loads(r.stdout)}
    for b in BUGS:
        assert any(f["commit"] == b.commit and f["value"] == b.value for f in fixes[b.knob])


def test_variants_try_every_zoo_row_whose_knobs_the_arch_has():
    from ptfuzz.search.variants import variants
    for b in BUGS:
        assert b.knobs in variants(b.arch), b.id  # with the older paths it needs (also), not only its knob alone


# Z3 (mm.collapse_file_notify): the khugepaged operation and why the row needs it
T, M = 1 << 40, 1 << 21
Z3_OPS = [["exec", 1, -1], ["shm_mmap", 1, T, 2 * M, 0, 0], ["shm_mmap", 1, T + 8 * M, 2 * M, 0, 0],
          ["fault", 1, T, 0], ["madvise", 1, T + 8 * M, 2 * M, 3], ["vm_create", 0, 1, 0],
          ["memslot", 0, 0, 0, T, 2 * M], ["guest_fault", 0, 0, 0]]
Z3_KNOBS = {"mm.file_retract": "caller", "mm.collapse_file_notify": "none"}


def test_z3_madvise_collapse_maps_the_pmd_again_so_the_pre_fix_design_stays_coherent():
    from conftest import trace
    # MADV_COLLAPSE's collapse_pte_mapped_thp(install_pmd) maps the folio by a PMD at once: stage 2's page is
    # still what the host maps at the hva, so only khugepaged's empty pmd shows the missing notifier
    r = replay(trace(Z3_OPS + [["madvise", 1, T, 2 * M, 3]], "x86_64", Z3_KNOBS), teardown=False,
               probes=np.array([[1, T]], dtype=np.uint64))
    assert r.violation is None and int(r.translations[0]) != 2 ** 64 - 1
    r = replay(trace(Z3_OPS + [["khugepaged", 1, T]], "x86_64", Z3_KNOBS), steps=True, teardown=False,
               probes=np.array([[1, T]], dtype=np.uint64))
    assert int(r.op_results[len(Z3_OPS)]) == 0 and int(r.translations[0]) == 2 ** 64 - 1  # the pmd is left empty


def test_khugepaged_operation_results():
    from conftest import results, trace
    ops = [["exec", 1, -1], ["khugepaged", 1, T], ["mmap", 1, T, 4096, 0], ["khugepaged", 1, T],
           ["khugepaged", 9, T], ["shm_mmap", 1, T + 8 * M, 2 * M, 0, 0], ["fault", 1, T + 8 * M, 1],
           ["khugepaged", 1, T + 8 * M + 4096]]
    r = replay(trace(ops, "x86_64"), steps=True)
    # no VMA, a VMA smaller than the block: -22; no such pid: -3; a shmem block with a page: collapsed (0), and
    # with the default paths every mapping's table is retracted, so the next fault maps the block by a PMD
    assert r.violation is None and results(r)[1:] == [-22, 0, -22, -3, 0, 0, 0]
