"""Fuzz campaigns: engines that propose traces, and the one place findings are deduplicated, minimized and filed."""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import trace as tracemod
from ..engine import replay
from ..errors import UsageError
from .fuzzgen import ByteChoices, RandomChoices, trace_gen
from .minimize import minimize
from ..names import knob_vector
from ..procs import deferred_interrupts, module_command
from ..trace import Trace, op_text

# The coverage-instrumented engine for atheris workers: `make setup` builds it with clang and installs it
# beside the plain one, as ptfuzz/_engine_cov*.so (loaded as ptfuzz._engine through PTFUZZ_ENGINE_SO).
PACKAGE_DIR = Path(__file__).resolve().parent.parent
COVERAGE_ENGINE_GLOB = "_engine_cov*.so"


def finding_key(arch: str, knobs: dict, t: Trace, r) -> tuple[str, str]:
    """What makes a finding unique: its kind, the knobs in effect (defaults filled in), and the operation it
    happened at; also the operation's name."""
    idx = r.violation.op_index
    op_name = op_text(t.ops[idx]).split("(")[0] if idx < len(t.ops) else "teardown"
    return json.dumps([r.violation.kind, knob_vector(arch, knobs), op_name]), op_name


@dataclass
class Known:
    """A finding on record: its kind, the operation, the first trace file that shows it, the oracle's words."""
    kind: str
    op: str
    path: Path | None
    message: str


def known_findings(arch: str, traces, config: dict | None = None) -> dict[str, Known]:
    """The violations these (path, trace) pairs replay to, by finding key; traces of another arch or config
    (granule, VA size...) are skipped: the key names neither, and a violation known under one geometry is
    not known under another."""
    want = {**tracemod.CONFIG_DEFAULTS, **(config or {})}
    out: dict[str, Known] = {}
    for path, t in traces:
        if t.arch == arch and t.full_config() == want:
            r = replay(t)
            if r.violation is not None:
                key, op_name = finding_key(arch, t.knobs, t, r)
                out.setdefault(key, Known(r.violation.kind, op_name, path, r.violation.message))
    return out


def known_keys(arch: str, traces, config: dict | None = None) -> set[str]:
    """The keys of the violations these traces replay to (known_findings without the files)."""
    return set(known_findings(arch, ((None, t) for t in traces), config))


@dataclass
class Finding:
    kind: str
    op: str
    path: Path
    trace: Trace
    ops_before: int
    seconds: float
    executions: int
    message: str = ""
    minimize_stats: object = None


@dataclass
class Campaign:
    arch: str
    knobs: dict
    corpus: Path
    config: dict = field(default_factory=dict)
    max_ops: int = 32
    seed: int = 0
    executions: int = 0
    coverage: int = 0
    started: float = field(default_factory=time.monotonic)
    seen: set = field(default_factory=set)
    findings: list = field(default_factory=list)
    # atheris: the generator's semantic features as coverage too (gen.c); None: only when the engine's
    # coverage build is missing, since beside the engine's edges they cost executions and bought no
    # shorter time to bug (bench B3F)
    features: bool | None = None
    known: dict = field(default_factory=dict)  # finding key -> Known (learn_known)
    met: list = field(default_factory=list)    # the Known findings this campaign reached: not filed, not new

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def key(self, t: Trace, r, knobs: dict | None = None) -> tuple[str, str]:
        return finding_key(self.arch, self.knobs if knobs is None else knobs, t, r)

    @property
    def known_hits(self) -> int:
        return len(self.met)

    def learn_known(self, files) -> int:
        """Trace files whose violations are already on record (the corpus' regressions of this arch): a
        finding with the same key is known, so a CI campaign fails only on what the corpus lacks. M1,
        for one, is what v6.6 does on s390 defaults, and the corpus keeps it as an expected regression."""
        found = known_findings(self.arch, ((f, tracemod.load(f)) for f in files), self.config)
        for key, k in found.items():
            self.known.setdefault(key, k)
        return len(found)

    def on_record(self, key: str) -> bool:
        """Whether a finding is on record; the first time the campaign meets one, it goes into met."""
        k = self.known.get(key)
        if k is not None and key not in self.seen:
            self.seen.add(key)
            self.met.append(k)
        return k is not None

    def consider(self, t: Trace) -> Finding | None:
        """A trace an engine flagged: replay it here, dedupe by kind, knobs and operation, minimize, file."""
        r = replay(t)
        if r.violation is None:
            return None
        key, op_name = self.key(t, r)
        if key in self.seen or self.on_record(key):
            return None
        self.seen.add(key)
        found_at, execs = self.elapsed, self.executions
        small, st = minimize(replace(t, meta=None))
        small.meta = {"found_by": "ptfuzz fuzz", "seed": self.seed, "minimized_from": st.ops_before,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        digest = hashlib.sha256(tracemod.dumps(replace(small, meta=None))).hexdigest()[:8]
        path = self.corpus / "regressions" / self.arch / f"{r.violation.kind}-{digest}.msgpack"
        message = replay(small).violation.message  # the oracle's words for the trace the user will read
        f = Finding(r.violation.kind, op_name, path, small, st.ops_before, found_at, execs, message, st)
        with deferred_interrupts():  # on disk and counted, or neither: the exit code must not lie
            tracemod.save(small, path)
            self.findings.append(f)
        return f


class RandomEngine:
    """State-aware random generation, no feedback: the baseline and the fastest to start."""
    name = "random"

    def __init__(self, c: Campaign, jobs: int = 1):
        self.c = c
        self.gen = trace_gen(c.arch, c.knobs, c.config)

    def batches(self, deadline: float, max_runs: int | None):
        c = self.c
        while time.monotonic() < deadline and (max_runs is None or c.executions < max_runs):
            choices = RandomChoices(c.seed + c.executions)
            packed, violation = self.gen.raw(choices, c.max_ops)[:2]  # the outcome comes with the trace
            c.executions += 1
            if violation:
                yield [self.gen.trace_of(packed)]
            elif c.executions % 256 == 0:
                yield []

    def close(self):
        pass


class HypothesisEngine:
    """Hypothesis draws the decision stream as bytes; on a violation its shrinker simplifies them before ours runs."""
    name = "hypothesis"

    def __init__(self, c: Campaign, jobs: int = 1):
        self.c = c
        self.gen = trace_gen(c.arch, c.knobs, c.config)

    def batches(self, deadline: float, max_runs: int | None):
        from hypothesis import HealthCheck, Phase, given, seed, settings
        from hypothesis.errors import Flaky
        from hypothesis import strategies as st
        c = self.c

        class Found(Exception):
            pass

        found: list = []
        batch = 0
        while time.monotonic() < deadline and (max_runs is None or c.executions < max_runs):
            @seed(c.seed + batch)
            @settings(max_examples=200, deadline=None, database=None, derandomize=False,
                      phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
                      report_multiple_bugs=False)
            # Hypothesis favours short byte strings (from min_size=8 a trace averaged 4.6 operations, and
            # U11/U12 went unfound in 20,000 executions); 4 bytes per operation allowed reach ~17 operations.
            @given(st.binary(min_size=min(1024, 4 * c.max_ops), max_size=1024))
            def prop(data):
                if time.monotonic() >= deadline or held.pending is not None:
                    return
                g = self.gen.run(ByteChoices(data), c.max_ops)
                c.executions += 1
                if g.violation is not None:
                    t = g.trace
                    if not self.known(t, replay(t)):
                        found.append(t)
                        raise Found()

            # Hypothesis is not written to be interrupted anywhere (a KeyboardInterrupt inside its own code
            # can be lost), so a signal is only noted while it runs: the remaining examples return at
            # once, and the signal is raised here when hypothesis has returned.
            with deferred_interrupts() as held:
                try:
                    prop()
                except Found:
                    pass
                except Flaky:
                    # the signal (or the deadline) came between the failing call and hypothesis's replay of it,
                    # whose early return does not fail again: the finding stands
                    if not found:
                        raise
            batch += 1
            yield [found[-1]] if found else []
            found.clear()

    def known(self, t, r) -> bool:
        key = self.c.key(t, r)[0]
        return key in self.c.seen or self.c.on_record(key)

    def close(self):
        pass


def native_engine_so() -> Path | None:
    sos = sorted(PACKAGE_DIR.glob(COVERAGE_ENGINE_GLOB))
    return sos[0] if sos else None


STATUS = re.compile(r"#(\d+)\s+\w+\s+(?:cov: (\d+))?")


class AtherisEngine:
    """libFuzzer through atheris, in worker processes sharing one corpus directory (-reload)."""
    name = "atheris"

    def __init__(self, c: Campaign, jobs: int = 1):
        import atheris
        self.c, self.jobs = c, max(1, jobs)
        self.work = Path(tempfile.mkdtemp(prefix="ptfuzz-atheris-"))
        self.inbox = self.work / "inbox"
        self.inbox.mkdir()
        self.shared = c.corpus / "libfuzzer" / c.arch  # kept across runs: coverage corpus
        self.shared.mkdir(parents=True, exist_ok=True)
        self.native = native_engine_so()
        self.preload = Path(atheris.path()) / "ubsan_with_fuzzer.so"
        self.procs: list = []
        self.logs: list = []
        self.execs = [0] * self.jobs

    def env(self) -> dict:
        env = dict(os.environ, PTFUZZ_ARCH=self.c.arch, PTFUZZ_KNOBS=json.dumps(self.c.knobs),
                   PTFUZZ_CONFIG=json.dumps(self.c.config), PTFUZZ_MAX_OPS=str(self.c.max_ops),
                   PTFUZZ_INBOX=str(self.inbox))
        # libFuzzer's runtime preloaded: the coverage build's counters and the generator's semantic
        # features (gen.c) register with it; without the coverage build, the features are all it sees
        env["LD_PRELOAD"] = str(self.preload)
        features = self.c.features if self.c.features is not None else self.native is None
        env["PTFUZZ_FEATURES"] = "1" if features else "0"
        if self.native:
            env["PTFUZZ_ENGINE_SO"] = str(self.native)
        return env

    def seed_corpus(self):
        from .fuzzgen import seed_inputs
        if any(self.shared.iterdir()):
            return
        first = 1_000_000 + 64 * self.c.seed  # each campaign seed starts from its own random traces
        for i, data in enumerate(seed_inputs(self.c.arch, 64, self.c.max_ops, self.c.config, first, self.c.knobs)):
            tracemod.atomic_write(self.shared / f"seed-{i:03d}", data)

    def start(self, seconds: float, max_runs: int | None):
        self.seed_corpus()
        args = [f"-max_total_time={max(1, int(seconds))}", "-len_control=0", "-max_len=2048",
                "-print_final_stats=1", "-reload=1", "-timeout=10", "-rss_limit_mb=4096",
                f"-artifact_prefix={self.work}/"]
        if max_runs is not None:
            args.append(f"-runs={max(1, max_runs // self.jobs)}")
        for j in range(self.jobs):
            log = open(self.work / f"worker{j}.log", "w+b")
            cmd = module_command("ptfuzz.search.atheris_target", str(self.shared), *args, f"-seed={self.c.seed * 1000 + j + 1}")
            # the worker's unguided share (atheris_target.py): random traces from its own seeds, its executions
            # (guided and unguided) counted in a file of its own
            env = dict(self.env(), PTFUZZ_UNGUIDED_SEED=str((self.c.seed * 1000 + j + 1) << 32),
                       PTFUZZ_STATS=str(self.work / f"executions{j}"))
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                               stdin=subprocess.DEVNULL, start_new_session=True))
            self.logs.append(log)

    def poll_status(self):
        cov = 0
        for j, log in enumerate(self.logs):
            log.seek(0)
            tail = log.read()[-4096:].decode(errors="replace")
            for m in STATUS.finditer(tail):
                self.execs[j] = int(m.group(1))
                cov = max(cov, int(m.group(2) or 0))
            try:  # libFuzzer's count is the guided inputs only; the worker's own adds the unguided share
                self.execs[j] = max(self.execs[j], int((self.work / f"executions{j}").read_text() or 0))
            except (OSError, ValueError):
                pass
        self.c.executions = sum(self.execs)
        self.c.coverage = max(self.c.coverage, cov)

    def batches(self, deadline: float, max_runs: int | None):
        self.start(deadline - time.monotonic(), max_runs)
        done = set()
        while True:
            time.sleep(0.2)
            self.poll_status()
            new = []
            for p in sorted(self.inbox.glob("*.msgpack")):
                if p not in done:
                    done.add(p)
                    t = tracemod.load(p)
                    self.c.executions = max(self.c.executions, int((t.meta or {}).get("executions", 1)))
                    new.append(t)
            yield new
            if all(proc.poll() is not None for proc in self.procs):
                self.poll_status()
                return

    def worker_failure(self) -> str | None:
        for j, proc in enumerate(self.procs):
            if proc.returncode not in (0, None, -2, -15) or (proc.returncode == 0 and not self.execs[j]):
                self.logs[j].seek(0)
                return self.logs[j].read()[-2000:].decode(errors="replace")
        return None

    def close(self):
        # Signal every worker first and then wait for all of them against one deadline, so that
        # stopping N workers takes as long as the slowest one, not the sum; a second Ctrl-C must not
        # leave workers or the work directory behind.
        with deferred_interrupts():
            for proc in self.procs:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + 3
            for proc in self.procs:
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
            for log in self.logs:
                log.close()
            shutil.rmtree(self.work, ignore_errors=True)


ENGINES = {"atheris": AtherisEngine, "hypothesis": HypothesisEngine, "random": RandomEngine}


def run_campaign(c: Campaign, engine_name: str, seconds: float, runs: int | None, jobs: int, keep_going: bool,
                 on_finding=None, on_progress=None, stop_when=None) -> bool:
    """Drive one engine until time, runs or (without keep_going) the first finding; True if interrupted.
    stop_when(campaign): a test that ends the campaign instead (bench B3: the first finding of a kind)."""
    engine = None
    deadline = time.monotonic() + seconds
    try:
        with deferred_interrupts():  # an engine is made whole (its work directory, its workers) or not at all
            engine = ENGINES[engine_name](c, jobs=jobs)
        for batch in engine.batches(deadline, runs):
            for t in batch:
                with deferred_interrupts():  # a finding is filed and reported, or neither
                    f = c.consider(t)
                    if f and on_finding:
                        on_finding(f)
            if on_progress:
                on_progress()
            if stop_when(c) if stop_when else c.findings and not keep_going:
                break
        failure = getattr(engine, "worker_failure", lambda: None)()
        if failure and not c.findings:
            raise UsageError(f"the atheris worker failed: {failure.strip().splitlines()[-1]}")
        return False
    except KeyboardInterrupt:
        return True
    finally:
        if engine is not None:
            engine.close()
