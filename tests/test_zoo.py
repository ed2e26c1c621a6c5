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
