"""The atheris (libFuzzer) target: bytes -> decision stream -> trace -> replay; usable standalone and under OSS-Fuzz.

Environment: PTFUZZ_ARCH (s390), PTFUZZ_KNOBS and PTFUZZ_CONFIG (JSON maps), PTFUZZ_MAX_OPS (32), and
PTFUZZ_INBOX: a directory where each new unique violation is written as a trace and fuzzing goes on.
Without PTFUZZ_INBOX a violation raises, which libFuzzer (and OSS-Fuzz) report as a crash with its input,
unless it is on record: PTFUZZ_KNOWN lists trace files or directories (os.pathsep-separated) whose
violations are known, as `ptfuzz fuzz --known` does (M1 on s390 defaults is an expected regression).

Structure-aware mutation comes from the decoding, not from a custom mutator: every byte string decodes
to a valid, state-aware trace, so libFuzzer's byte mutations are mutations of generator decisions. That
keeps working when a sanitizer runtime is preloaded, where atheris ignores Python custom mutators.
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
from ptfuzz.search.fuzzgen import ByteChoices, trace_gen

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


class Violation(Exception):
    """Raised in OSS-Fuzz mode so that libFuzzer records the input as a crash."""


def TestOneInput(data: bytes) -> None:
    global _runs
    _runs += 1
    packed, violation = GEN.raw(ByteChoices(data), MAX_OPS)[:2]
    if not violation:
        return
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
    t.meta = {"found_by": "ptfuzz fuzz --engine atheris", "key": key, "executions": _runs}
    tracemod.save(t, os.path.join(INBOX, f"{os.getpid()}-{len(_seen)}.msgpack"))


def main(argv=None) -> None:
    atheris.Setup(list(argv or sys.argv), TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
