#!/usr/bin/env python3
"""package.py: packages fuzz/*_fuzzer.py as OSS-Fuzz's compile_python_fuzzer does, without Docker, and runs each.

    python fuzz/package.py fuzz/*_fuzzer.py --out build/pyinstaller/out --runs 5000

The steps are those of OSS-Fuzz's infra/base-images/base-builder/compile_python_fuzzer and of the Python
branch of its `compile` script: `pyinstaller --onefile` into OUT as NAME.pkg (left non-executable, since
OSS-Fuzz finds fuzz targets by their executable bit), atheris' sanitizer runtime with libFuzzer copied
to OUT/sanitizer_with_fuzzer.so (the UBSan one: the local coverage build has no ASan), and the execution
wrapper OUT/NAME that preloads it and runs the package. Where OSS-Fuzz runs `pip3 install .` with its
coverage flags, this stages the checkout's ptfuzz with the coverage-instrumented engine that
`make setup` built and installed (ptfuzz/_engine_cov*.so), so that the bundle carries that engine as ptfuzz._engine.

Each packaged fuzzer is then run from a seed corpus for --runs executions (the engine's edge counters
must reach libFuzzer, and libFuzzer must report engine functions as new coverage), and once on an input
that crashes it: a decision stream that decodes to a violating trace under an unsafe knob.
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the checkout's ptfuzz (the one `make setup` installed, editable)
from ptfuzz.engine import replay  # noqa: E402
from ptfuzz.search.campaign import native_engine_so  # noqa: E402
from ptfuzz.search.fuzzgen import ByteChoices, RecordingChoices, seed_inputs, trace_gen  # noqa: E402

# The section -fsanitize=fuzzer-no-link puts the edge counters in (every engine build names the registration
# function, for the semantic features, so the section is the mark of the coverage build).
COUNTERS_SECTION = b"__sancov_cntrs"
# One unsafe variant per arch whose violation a short random trace reaches (as in tests/test_fuzz.py).
CRASH_KNOBS = {"s390": {"mm.table_free": "immediate"}, "arm64": {"kvm.fault_holds_mm": "no"},
               "x86_64": {"kvm.invalidate_retry": "none"}}
MAX_OPS = 32  # ptfuzz.search.atheris_target's default (PTFUZZ_MAX_OPS)
# The packaged fuzzer must stand alone: nothing from this process may point it at another engine or runtime.
SCRUB = ("PTFUZZ_ENGINE_SO", "LD_PRELOAD", "PYTHONPATH", "PYTHONHOME", "PTFUZZ_KNOBS", "PTFUZZ_CONFIG",
         "PTFUZZ_MAX_OPS", "PTFUZZ_FEATURES", "PTFUZZ_INBOX", "PTFUZZ_ARCH", "PTFUZZ_KNOWN")

# The extra PyInstaller arguments .clusterfuzzlite/build.sh gives compile_python_fuzzer: a fuzzer never draws
# a plot, and ptfuzz.cli (which the generator imports for the geometry) reaches matplotlib through
# `variants --plot`: 12 of 79 MB of the bundle.
# The corpus' regressions go into the bundle: target_env.py treats their violations as known, not crashes.
PYINSTALLER_ARGS = ["--exclude-module", "matplotlib", "--add-data",
                    f"{ROOT / 'corpus' / 'regressions'}:corpus/regressions"]

# compile_python_fuzzer's wrapper, as it writes it but with "$@" quoted (the first comment is how OSS-Fuzz
# recognises a target).
WRAPPER = """#!/bin/sh
# LLVMFuzzerTestOneInput for fuzzer detection.
this_dir=$(dirname "$0")
chmod +x $this_dir/{package}
LD_PRELOAD=$this_dir/sanitizer_with_fuzzer.so \\
ASAN_OPTIONS=$ASAN_OPTIONS:symbolize=1:external_symbolizer_path=$this_dir/llvm-symbolizer:detect_leaks=0 \\
$this_dir/{package} "$@"
"""


class PackageError(Exception):
    """A step failed: the message says which and why, on one line."""


def stage(site: Path, engine_so: Path) -> None:
    """A ptfuzz package tree as `pip3 install .` with the coverage flags would leave it."""
    if COUNTERS_SECTION not in engine_so.read_bytes():
        raise PackageError(f"{engine_so}: not built with -fsanitize=fuzzer-no-link (no libFuzzer counters)")
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(ROOT / "ptfuzz", site / "ptfuzz",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "ptfuzz-host"))
    # installed by make setup as _engine_cov*.so; in the bundle it is the engine, ptfuzz._engine
    shutil.copy2(engine_so, site / "ptfuzz" / engine_so.name.replace("_engine_cov", "_engine", 1))


def compile_python_fuzzer(fuzzer: Path, out: Path, work: Path, site: Path) -> Path:
    name = fuzzer.name.removesuffix(".py")
    package = f"{name}.pkg"
    work.mkdir(parents=True, exist_ok=True)
    # cwd is the work directory, so that the checkout (the current directory of `make`) is not on
    # PyInstaller's path ahead of the staged package with the instrumented engine
    r = subprocess.run([sys.executable, "-m", "PyInstaller", "--distpath", str(out), "--workpath", str(work / name),
                        "--specpath", str(work), "--onefile", "--name", package, "--paths", str(site),
                        "--noconfirm", "--log-level", "WARN", *PYINSTALLER_ARGS, str(fuzzer.resolve())],
                       cwd=work, capture_output=True, text=True)
    if r.returncode != 0:
        raise PackageError(f"pyinstaller {fuzzer}: {(r.stderr.strip().splitlines() or ['failed'])[-1]}")
    (out / package).chmod(0o644)
    wrapper = out / name
    wrapper.write_text(WRAPPER.format(package=package))
    wrapper.chmod(0o755)
    return wrapper


def sanitizer_runtime(out: Path) -> None:
    import atheris
    shutil.copy2(Path(atheris.path()) / "ubsan_with_fuzzer.so", out / "sanitizer_with_fuzzer.so")


def crashing_input(arch: str, knobs: dict | None = None) -> tuple[bytes, str]:
    """Recorded decisions of the first random trace that violates under these knobs (the arch's unsafe knob
    by default), checked to decode to a violating trace again the way the target decodes them."""
    knobs = CRASH_KNOBS[arch] if knobs is None else knobs
    gen = trace_gen(arch, knobs, {})
    for seed in range(100_000):
        rec = RecordingChoices(seed)
        if gen.run(rec, MAX_OPS).violation is None:
            continue
        data = bytes(rec.bytes)
        v = replay(gen.run(ByteChoices(data), MAX_OPS).trace).violation
        if v is not None:
            return data, v.kind
    raise PackageError(f"no crashing input for {arch} under {knobs}")


def run(wrapper: Path, args: list[str], env_extra: dict, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env.update(env_extra)
    return subprocess.run([str(wrapper), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def check(wrapper: Path, arch: str, runs: int, tmp: Path) -> dict:
    corpus = tmp / "corpus"
    corpus.mkdir(parents=True)
    for i, data in enumerate(seed_inputs(arch, 64, MAX_OPS)):
        (corpus / f"seed-{i:03d}").write_bytes(data)
    # -print_coverage=1: at exit libFuzzer lists every instrumented function with its covered edges, by
    # source file: the evidence that the counters it fed on are the engine's (native_ext/*.c)
    r = run(wrapper, [f"-runs={runs}", "-seed=1", "-max_len=2048", "-len_control=0", "-print_final_stats=1",
                      "-print_coverage=1", f"-artifact_prefix={tmp}/", str(corpus)], {}, tmp)
    log = r.stdout + r.stderr
    if r.returncode != 0:
        raise PackageError(f"{wrapper.name}: exit {r.returncode} after -runs={runs}: {log.strip().splitlines()[-1:]}")
    # the engine's module is the first (registered at import); the generator's semantic features follow
    loaded = re.search(r"INFO: Loaded \d+ modules\s+\(\d+ inline 8-bit counters\): (.*)", log)
    modules = [int(n) for n in re.findall(r"(\d+) \[0x", loaded.group(1))] if loaded else []
    executed = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    coverage = [int(c) for c in re.findall(r"^#\d+\s+\w+\s+cov: (\d+)", log, re.M)]
    funcs = re.findall(r"^(UN)?COVERED_FUNC: hits: \d+ edges: (\d+)/(\d+) \S+ \S*native_ext/", log, re.M)
    covered = [f for f in funcs if not f[0]]
    result = {"fuzzer": wrapper.name, "arch": arch, "executions": int(executed.group(1)) if executed else 0,
              "native_counters": modules[0] if modules else 0, "modules": modules, "coverage": max(coverage, default=0),
              "engine_functions": [len(covered), len(funcs)],
              "engine_edges": [sum(int(f[1]) for f in covered), sum(int(f[2]) for f in funcs)],
              "python_instrumented": "Instrumenting ptfuzz" in log}
    if result["native_counters"] < 500 or not covered:
        raise PackageError(f"{wrapper.name}: the engine's coverage did not reach libFuzzer "
                           f"({result['native_counters']} counters, {len(covered)} engine functions covered)")
    data, kind = crashing_input(arch)
    crash = tmp / f"crash-{arch}"
    crash.write_bytes(data)
    # nothing on record here: the input's violation may be one the bundled regressions hold (U1 is)
    r = run(wrapper, [str(crash)], {"PTFUZZ_KNOBS": json.dumps(CRASH_KNOBS[arch]), "PTFUZZ_KNOWN": ""}, tmp)
    log = r.stdout + r.stderr
    if r.returncode == 0 or f"Violation: {kind}" not in log:
        raise PackageError(f"{wrapper.name}: the crashing input did not crash it (exit {r.returncode}, "
                           f"expected {kind}): {log.strip().splitlines()[-1:]}")
    result["crash"] = {"kind": kind, "exit_code": r.returncode, "knobs": CRASH_KNOBS[arch], "bytes": len(data)}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fuzzers", nargs="+", type=Path, help="fuzz/*_fuzzer.py")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "pyinstaller" / "out", help="OSS-Fuzz's $OUT")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "pyinstaller" / "work", help="PyInstaller's work")
    ap.add_argument("--engine-so", type=Path, default=None, help="the instrumented engine (default: ptfuzz/_engine_cov*.so from make setup)")
    ap.add_argument("--runs", type=int, default=5000, help="executions per packaged fuzzer")
    ap.add_argument("--json", action="store_true", help="one JSON object per fuzzer")
    a = ap.parse_args()
    try:
        if importlib.util.find_spec("PyInstaller") is None:
            raise PackageError("PyInstaller is not installed (pip install 'ptfuzz[package]')")
        engine_so = a.engine_so or native_engine_so()
        if engine_so is None:
            raise PackageError("no coverage-instrumented engine (ptfuzz/_engine_cov*.so): `make setup` builds it (needs clang)")
        out, work = a.out.resolve(), a.work.resolve()
        out.mkdir(parents=True, exist_ok=True)
        stage(work / "site", Path(engine_so))
        sanitizer_runtime(out)
        for fuzzer in a.fuzzers:
            wrapper = compile_python_fuzzer(fuzzer, out, work, work / "site")
            arch = wrapper.name.removesuffix("_fuzzer")
            with tempfile.TemporaryDirectory(prefix=f"ptfuzz-package-{arch}-") as tmp:
                res = check(wrapper, arch, a.runs, Path(tmp))
            if a.json:
                print(json.dumps(res), flush=True)
            else:
                print(f"{res['fuzzer']}: {res['executions']:,} executions, coverage {res['coverage']} from "
                      f"{res['native_counters']:,} engine counters, engine functions covered "
                      f"{res['engine_functions'][0]}/{res['engine_functions'][1]}, edges "
                      f"{res['engine_edges'][0]}/{res['engine_edges'][1]}; crash input: {res['crash']['kind']} "
                      f"(exit {res['crash']['exit_code']}); {out / wrapper.name}", flush=True)
    except PackageError as exc:
        print(f"package.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
