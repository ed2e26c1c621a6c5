"""The atheris (libFuzzer) target: bytes -> decision stream -> trace -> replay; usable standalone and under OSS-Fuzz.

Environment: PTFUZZ_ARCH (s390), PTFUZZ_KNOBS and PTFUZZ_CONFIG (JSON maps), PTFUZZ_MAX_OPS (32), and
PTFUZZ_INBOX: a directory where each new unique violation is written as a trace and fuzzing goes on.
Without PTFUZZ_INBOX a violation raises, which libFuzzer (and OSS-Fuzz) report as a crash with its input,
unless it is on record: PTFUZZ_KNOWN lists trace files or directories (os.pathsep-separated) whose
violations are known, as `ptfuzz fuzz --known` does (M1 on s390 defaults is an expected regression).

Structure-aware mutation comes from the decoding, not from a custom mutator: every byte string decodes
to a valid, state-aware trace, so libFuzzer's byte mutations are mutations of generator decisions. That
keeps working when a sanitizer runtime is preloaded, where atheris ignores Python custom mutators.

Guided and unguided sampling mixed (PTFUZZ_UNGUIDED, default 8, with PTFUZZ_INBOX and the coverage build): after
each input libFuzzer runs, the worker also generates that many fresh random traces (seeds from PTFUZZ_UNGUIDED_SEED
on), on the uninstrumented engine so that libFuzzer credits no input with their coverage. Why (docs/fuzzing.md):
libFuzzer keeps the inputs that reach new engine edges, and those are mostly traces that tear more state down (its
corpus, on Z2's knobs, ran 4.8 execs a trace where the generator's own random traces run 1.8) rather than the deep interleavings
the bugs need; the random share keeps the generator's tuned distribution in every campaign. PTFUZZ_STATS: a file
where the worker writes its executions, guided and unguided, now and then.
"""
import json
import os
import sys

import atheris

# Import the heavy, uninteresting modules first so that only the generator is instrumented.
import numpy  # noqa: F401
from pathlib import Path

from ptfuzz import trace as tracemod
from ptfuzz.engine import replay
from ptfuzz.search.campaign import finding_key, known_keys

# The generator runs in C (native_ext/search/gen.c). libFuzzer's features: the engine's edges when it is the
# coverage build (PTFUZZ_ENGINE_SO), and with PTFUZZ_FEATURES=1 the generator's semantic features (abstract
# states reached, gen.c; off by default: bench B3F measured no shorter time to bug, and 35% fewer
# executions a second); both need libFuzzer's runtime preloaded (LD_PRELOAD), as `ptfuzz fuzz` does.
from ptfuzz import _engine
from ptfuzz.search.fuzzgen import ByteChoices, RandomChoices, TraceGen, trace_gen

FEATURES = os.environ.get("PTFUZZ_FEATURES", "0") == "1" and _engine.features_register()

ARCH = os.environ.get("PTFUZZ_ARCH", "s390")
KNOBS = json.loads(os.environ.get("PTFUZZ_KNOBS", "{}"))
CONFIG = json.loads(os.environ.get("PTFUZZ_CONFIG", "{}"))
MAX_OPS = int(os.environ.get("PTFUZZ_MAX_OPS", "32"))
INBOX = os.environ.get("PTFUZZ_INBOX")
GEN = trace_gen(ARCH, KNOBS, CONFIG)


def _known(spec: str) -> set:
    files = []
    for part in filter(None, spec.split(os.pathsep)):
        p = Path(part)
        files += sorted(p.rglob("*.msgpack")) if p.is_dir() else [p]
    return known_keys(ARCH, (tracemod.load(f) for f in files), CONFIG)


KNOWN = _known(os.environ.get("PTFUZZ_KNOWN", ""))
_seen: set = set()
_runs = 0
_unguided = 0
STATS = os.environ.get("PTFUZZ_STATS")


def _plain_generator():
    """The generator on the uninstrumented engine (ptfuzz/_engine*.so, loaded beside the coverage build under the
    same module name but not registered), or None when the worker runs that engine already (no coverage build:
    its semantic features would credit the unguided traces to libFuzzer's input) or mixing is off."""
    if INBOX is None or not os.environ.get("PTFUZZ_ENGINE_SO") or UNGUIDED <= 0:
        return None
    import importlib.util
    here = Path(__file__).resolve().parent.parent
    sos = [p for p in sorted(here.glob("_engine.*.so")) + sorted(here.glob("_engine.so"))]
    if not sos:
        return None
    spec = importlib.util.spec_from_file_location("ptfuzz._engine", sos[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return TraceGen(ARCH, KNOBS, CONFIG, engine_module=module)


UNGUIDED = int(os.environ.get("PTFUZZ_UNGUIDED", "8"))
UNGUIDED_SEED = int(os.environ.get("PTFUZZ_UNGUIDED_SEED", "0"))
PLAIN = _plain_generator()


class Violation(Exception):
    """Raised in OSS-Fuzz mode so that libFuzzer records the input as a crash."""


def _found(packed: bytes, how: str) -> None:
    t = GEN.trace_of(packed)
    r = replay(t)
    key, op = finding_key(ARCH, KNOBS, t, r)
    if key in KNOWN:
        return
    if INBOX is None:
        raise Violation(f"{r.violation.kind} at {op}: {r.violation.message}")
    if key in _seen:
        return
    _seen.add(key)
    t.meta = {"found_by": f"ptfuzz fuzz --engine atheris{how}", "key": key, "executions": _runs + _unguided}
    tracemod.save(t, os.path.join(INBOX, f"{os.getpid()}-{len(_seen)}.msgpack"))


def TestOneInput(data: bytes) -> None:
    global _runs, _unguided
    _runs += 1
    packed, violation = GEN.raw(ByteChoices(data), MAX_OPS)[:2]
    if violation:
        _found(packed, "")
    for _ in range(UNGUIDED if PLAIN is not None else 0):
        packed, violation = PLAIN.raw(RandomChoices(UNGUIDED_SEED + _unguided), MAX_OPS)[:2]
        _unguided += 1
        if violation:
            _found(packed, " (unguided share)")
    if STATS and _runs % 1024 == 0:
        tracemod.atomic_write(Path(STATS), f"{_runs + _unguided}\n".encode())


def main(argv=None) -> None:
    atheris.Setup(list(argv or sys.argv), TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
