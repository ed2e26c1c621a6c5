"""The fuzz driver: generate state-aware traces, replay them, minimize and file each new unique violation."""
import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import trace as tracemod
from .engine import replay
from .gen import generate
from .minimize import minimize
from .trace import Trace, op_text


@dataclass
class Finding:
    kind: str
    op: str
    path: Path
    trace: Trace
    ops_before: int


@dataclass
class Campaign:
    arch: str
    knobs: dict
    corpus: Path
    max_ops: int = 64
    seed: int = 0
    keep_going: bool = False
    executions: int = 0
    ops_executed: int = 0
    started: float = field(default_factory=time.monotonic)
    seen: set = field(default_factory=set)
    findings: list = field(default_factory=list)

    def finding_key(self, kind: str, op_name: str) -> str:
        return json.dumps([kind, sorted(self.knobs.items()), op_name])

    def file_finding(self, trace: Trace, kind: str, op_name: str) -> Finding:
        small, st = minimize(trace)
        small.meta = {**(small.meta or {}), "found_by": "ptfuzz fuzz", "seed": trace.meta.get("seed"),
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        digest = hashlib.sha256(tracemod.dumps(replace(small, meta=None))).hexdigest()[:8]
        path = self.corpus / "regressions" / self.arch / f"{kind}-{digest}.msgpack"
        tracemod.save(small, path)
        return Finding(kind, op_name, path, small, st.ops_before)

    def run_one(self) -> Finding | None:
        seed = self.seed + self.executions
        length = 1 + (seed * 2654435761) % self.max_ops
        t = generate(self.arch, length, seed, self.knobs)
        r = replay(t)
        self.executions += 1
        self.ops_executed += r.executed
        if r.violation is None:
            return None
        op_name = op_text(t.ops[r.violation.op_index]).split("(")[0] if r.violation.op_index < len(t.ops) else "teardown"
        key = self.finding_key(r.violation.kind, op_name)
        if key in self.seen:
            return None
        self.seen.add(key)
        f = self.file_finding(t, r.violation.kind, op_name)
        self.findings.append(f)
        return f

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
