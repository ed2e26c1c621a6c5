"""The OSS-Fuzz build path without Docker: a fuzz/*_fuzzer.py packaged with PyInstaller as compile_python_fuzzer
does runs standalone, feeds on the bundled engine's native coverage, and crashes on a violating input.

About 50 s (PyInstaller's analysis is most of it); skipped without PyInstaller or the coverage build."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from ptfuzz.search.campaign import native_engine_so

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("PyInstaller") is None,
                       reason="PyInstaller is not installed (pip install -e '.[package]')"),
    pytest.mark.skipif(native_engine_so() is None, reason="no clang: the coverage build of the engine is missing"),
    pytest.mark.skipif(os.environ.get("PTFUZZ_ASAN") == "1",
                       reason="make asan: the packaged fuzzer bundles the coverage build, not the ASan one"),
]


def test_packaged_fuzzer_runs_on_native_coverage_and_crashes(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "fuzz" / "package.py"), str(ROOT / "fuzz" / "s390_fuzzer.py"),
                        "--out", str(out), "--work", str(tmp_path / "work"), "--runs", "3000", "--json"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    res = json.loads(r.stdout.splitlines()[-1])
    # laid out as OSS-Fuzz's $OUT: the wrapper it recognises, the package, the runtime the wrapper preloads
    assert os.access(out / "s390_fuzzer", os.X_OK) and (out / "s390_fuzzer.pkg").is_file()
    assert "LLVMFuzzerTestOneInput" in (out / "s390_fuzzer").read_text()
    assert (out / "sanitizer_with_fuzzer.so").is_file()
    assert res["executions"] == 3000 and res["native_counters"] > 500
    covered, functions = res["engine_functions"]
    assert 0 < covered <= functions
    # libFuzzer's coverage is the engine's edges (the generator's semantic features stay off beside them)
    assert res["modules"] == [res["native_counters"]]
    assert res["engine_edges"][0] >= 0.95 * res["coverage"] > 0
    assert res["python_instrumented"] is False
    assert res["crash"]["kind"] == "uaf-table" and res["crash"]["exit_code"] != 0
