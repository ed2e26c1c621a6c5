"""Shared helpers: build s390 traces from op lists and replay them."""
import sys
from pathlib import Path

import pytest

from ptfuzz.engine import replay
from ptfuzz.gen import s390_elf
from ptfuzz.trace import Trace, ops_from_list

ROOT = Path(__file__).resolve().parent.parent
K, M, G = 1 << 10, 1 << 20, 1 << 30
A = 0x10000000
ELFS = [s390_elf(True), s390_elf(False)]


def run(ops, knobs=None, steps=True, teardown=True, arch="s390", config=None):
    t = Trace(arch, ops_from_list(ops), knobs=dict(knobs or {}), elfs=ELFS, config=dict(config or {}))
    return replay(t, steps=steps, teardown=teardown)


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
