"""CI report files: JUnit XML for replay runs and SARIF 2.1.0 for findings (GitHub code scanning)."""
import hashlib
import json
import os
import shlex
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import __version__
from ..errors import UsageError
from ..search.minimize import minimize
from ..names import VIOLATION_RULES
from ..trace import atomic_write, op_text

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"

# The oracle's rules (docs/violations.md), from the engine's table: a code-scanning alert shows them as the rule's
# text.
RULES = {
    **VIOLATION_RULES,
    # Not a violation kind: replay's word for a recorded counterexample that no longer reproduces.
    "expect-unmet": "A trace that records a violation replays without it: the model or its oracle changed.",
}


def check_writable(option: str, path: Path) -> Path:
    """Fail before any work is done when an output file could not be written at the end."""
    parent = path.parent
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory, not a file")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):  # the file itself is replaced, so only the directory counts
        raise UsageError(f"{option} {path}: not writable")
    return path


def _write(option: str, path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write: {exc.strerror or exc}") from None


# ---- JUnit ----

@dataclass
class TestCase:
    """One replayed trace: a failure carries the violation (or the unmet expectation) as its message."""
    name: str
    classname: str
    seconds: float
    failure: str | None = None
    failure_type: str | None = None
    details: str = ""

    __test__ = False  # not a pytest test class, whatever the name says


def junit_xml(suite: str, cases: list[TestCase], seconds: float) -> bytes:
    failures = sum(c.failure is not None for c in cases)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "skipped": "0",
              "time": f"{seconds:.3f}"}
    root = ET.Element("testsuites", name=suite, **counts)
    ts = ET.SubElement(root, "testsuite", name=suite, **counts,
                       timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"), hostname=socket.gethostname())
    for c in cases:
        tc = ET.SubElement(ts, "testcase", name=c.name, classname=c.classname, time=f"{c.seconds:.6f}", file=c.name)
        if c.failure is not None:
            f = ET.SubElement(tc, "failure", message=c.failure, type=c.failure_type or "failure")
            f.text = c.details or c.failure
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(path: Path, suite: str, cases: list[TestCase], seconds: float) -> None:
    _write("--junit", path, junit_xml(suite, cases, seconds))


# ---- SARIF ----

@dataclass
class SarifResult:
    """One finding: rule = violation kind, location = the trace file, message = what happened and the trace."""
    kind: str
    summary: str
    trace_path: Path
    trace_lines: list[str]
    fingerprint: dict = field(default_factory=dict)
    properties: dict = field(default_factory=dict)

    def text(self) -> str:
        return "\n".join([self.summary, *self.trace_lines])


def trace_lines(ops, limit: int = 64) -> list[str]:
    """A trace's operations as numbered lines, the last `limit` of them for a long one."""
    first = max(0, len(ops) - limit)
    lines = [f"  [{i}] {op_text(row)}" for i, row in enumerate(ops[first:], start=first)]
    return ([f"  ... {first} earlier operations"] if first else []) + lines


def finding_result(f, arch: str, knobs: dict) -> SarifResult:
    """A fuzz campaign's finding (ptfuzz.search.campaign.Finding): its minimized trace is the message."""
    knob_text = ", ".join(f"{k}={v}" for k, v in knobs.items()) or "defaults"
    summary = f"{f.kind} at {f.op} on {arch}, knobs {knob_text}, found after {f.seconds:.1f}s: {f.message}"
    lines = [f"Minimized trace ({len(f.trace.ops)} operations, from {f.ops_before}):", *trace_lines(f.trace.ops),
             f"Replay: ptfuzz replay {shlex.quote(str(f.path))} --steps"]
    # the campaign's own deduplication key, so that the same bug found again is the same alert
    key = fingerprint(f.kind, arch, sorted(knobs.items()), f.op)
    return SarifResult(f.kind, summary, Path(f.path), lines, fingerprint={"ptfuzzFinding/v1": key},
                       properties={"arch": arch, "knobs": knobs, "op": f.op, "seconds": round(f.seconds, 3),
                                   "executions": f.executions, "ops": len(f.trace.ops)})


# Minimizing replays the operations up to the violation a few hundred times (0.02 s for 1,400 of them
# here); past this many a SARIF message shows those operations as they are, so that a CI step never
# stalls on a long workload.
MINIMIZE_LIMIT = 10_000


def failure_text(trace, result) -> str | None:
    """Why a trace did not match its expect, in one line (None when it matched)."""
    if result.matches(trace):
        return None
    want, v = trace.expected_kind(), result.violation
    if v is None:
        return f"expected {want}, but the trace replays clean"
    return f"expected {want or 'clean'}, got {v.kind} at op {v.op_index}: {v.op}: {v.message}"


def replay_result(path: Path, trace, result, knobs: dict) -> SarifResult:
    """A replayed trace that did not match its expect: its violation with a minimized counterexample (the
    --knob overrides in `knobs`), or the recorded violation it no longer shows."""
    v = result.violation
    props = {"arch": trace.arch, "knobs": result.knobs, "expected": trace.expected_kind() or "clean"}
    if v is None:
        return SarifResult("expect-unmet", f"{path}: {failure_text(trace, result)}", path,
                           ["Trace:", *trace_lines(trace.ops)], properties=props,
                           fingerprint={"ptfuzzReplay/v1": fingerprint("expect-unmet", str(path))})
    if v.op_index < MINIMIZE_LIMIT:
        small, _ = minimize(replace(trace, meta=None, expect=None), knobs)
        ops, what = small.ops, f"Minimized trace ({len(small.ops)} of {len(trace.ops)} operations):"
    else:
        ops, what = trace.ops[: v.op_index + 1], f"Operations up to the violation (op {v.op_index}):"
    knob_text = ", ".join(f"{k}={val}" for k, val in result.knobs.items()) or "defaults"
    summary = f"{v.kind} at op {v.op_index} ({v.op}) on {trace.arch}, knobs {knob_text}: {v.message}"
    again = shlex.join(["ptfuzz", "replay", str(path), *(f"--knob={k}={val}" for k, val in knobs.items()), "--steps"])
    return SarifResult(v.kind, summary, path, [what, *trace_lines(ops), f"Replay: {again}"],
                       properties={**props, "op_index": v.op_index},
                       fingerprint={"ptfuzzReplay/v1": fingerprint(v.kind, str(path), sorted(knobs.items()))})


def replay_case(path: Path, trace, result, seconds: float, steps: list[str] | None = None) -> TestCase:
    """A replayed trace as a JUnit testcase; with --steps a failure's text is the step log."""
    why = failure_text(trace, result)
    return TestCase(str(path), f"ptfuzz.replay.{trace.arch}", seconds, why,
                    result.violation.kind if result.violation else "expect-unmet",
                    "\n".join(steps) if why and steps else why or "")


def artifact_uri(path: Path) -> tuple[str, str | None]:
    """A path relative to the working directory (the repository root in CI) where possible: code scanning
    matches alerts by repository-relative paths; anything outside becomes an absolute file: URI."""
    p = Path(os.path.abspath(path))
    try:
        return p.relative_to(Path.cwd()).as_posix(), "%SRCROOT%"
    except ValueError:
        return p.as_uri(), None


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def sarif_doc(results: list[SarifResult], command_line: str) -> dict:
    kinds = sorted({r.kind for r in results})
    rules = [{"id": k, "name": "".join(w.capitalize() for w in k.replace("-", " ").split()),
              "shortDescription": {"text": RULES.get(k, k)}, "fullDescription": {"text": RULES.get(k, k)},
              "help": {"text": f"{RULES.get(k, k)} Replay the trace with `ptfuzz replay TRACE --steps` "
                               "to read every operation and what it changed."},
              "defaultConfiguration": {"level": "warning" if k == "expect-unmet" else "error"}} for k in kinds]
    out = []
    for r in results:
        uri, base = artifact_uri(r.trace_path)
        location = {"uri": uri, **({"uriBaseId": base} if base else {})}
        out.append({
            "ruleId": r.kind,
            "ruleIndex": kinds.index(r.kind),
            "level": "warning" if r.kind == "expect-unmet" else "error",
            "message": {"text": r.text()},
            # A trace is binary msgpack; GitHub still wants a startLine to place the alert (its rule GH1003).
            "locations": [{"physicalLocation": {"artifactLocation": location, "region": {"startLine": 1}}}],
            "partialFingerprints": r.fingerprint or {"ptfuzzResult/v1": fingerprint(r.kind, uri)},
            "properties": r.properties,
        })
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {"name": "ptfuzz", "version": __version__, "semanticVersion": __version__,
                                "rules": rules}},
            "invocations": [{"commandLine": command_line, "executionSuccessful": True}],
            "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().as_uri() + "/"}},
            "results": out,
        }],
    }


def write_sarif(path: Path, results: list[SarifResult], command_line: str) -> None:
    doc = sarif_doc(results, command_line)
    _write("--sarif", path, (json.dumps(doc, indent=2) + "\n").encode())
