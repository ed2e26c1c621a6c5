"""Shared helpers: build s390 traces from op lists and replay them."""
import sys
from pathlib import Path

import numpy as np
import pytest

from ptfuzz.engine import replay, replay_figures
from ptfuzz.search.gen import s390_elf
from ptfuzz.trace import Trace, ops_from_list

ROOT = Path(__file__).resolve().parent.parent
K, M, G = 1 << 10, 1 << 20, 1 << 30
A = 0x10000000
ELFS = [s390_elf(True), s390_elf(False)]
W = 0x200000000000  # the crosscheck window on x86_64 and arm64/48
NONE = (1 << 64) - 1


def trace(ops, arch="x86_64", knobs=None, config=None):
    return Trace(arch, ops_from_list(ops), knobs=dict(knobs or {}), elfs=ELFS, config=dict(config or {}))


def run(ops, knobs=None, steps=True, teardown=True, arch="s390", config=None):
    return replay(trace(ops, arch, knobs, config), steps=steps, teardown=teardown)


def figs(ops, arch="x86_64", knobs=None, config=None, lo=W, hi=W + 64 * G):
    """(result, figures after every op in [lo, hi)) with results and events recorded."""
    return replay_figures(trace(ops, arch, knobs, config), lo, hi, steps=True)


def translate(ops, pairs, arch="x86_64", knobs=None, config=None):
    """The probes' (pid, va) translations at the end of a clean trace, before teardown."""
    r = replay(trace(ops, arch, knobs, config), teardown=False, probes=np.array(pairs, dtype=np.uint64))
    assert r.violation is None, r.violation
    return [int(x) for x in r.translations]


def events_at(r, op, kind_):
    return [ev for ev in r.events if ev[0] == op and ev[1] == kind_]


def results(r):
    return [int(x) for x in r.op_results[: r.executed]]


def kind(r):
    return r.violation.kind if r.violation else None


@pytest.fixture
def cli(tmp_path):
    """Run the CLI in a subprocess, the way a user does."""
    import subprocess

    def call(*args, input=None):
        return subprocess.run([sys.executable, "-m", "ptfuzz", *map(str, args)], capture_output=True, text=True,
                              cwd=tmp_path, input=input, timeout=120)
    return call
