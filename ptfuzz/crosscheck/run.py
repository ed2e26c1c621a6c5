"""run.py: one crosscheck run: traces checked one after another, a guest that stops booted again, outcomes counted."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .compare import Checker, generate, hugetlb_use, open_host, seeds
from .host import HostError


@dataclass
class RunResult:
    agreed: int = 0
    unstable: int = 0
    disagreements: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # guest runs only: {"trace": name, "error": text}
    interrupted: bool = False
    elapsed: float = 0.0
    hugetlb: int = 0   # traces with a hugetlb_mmap (for disagreements: their minimized form)
    sharing: int = 0   # ... in which a process saw hugetlb pages it never faulted: a shared PMD table (hugetlb_use)

    @property
    def checked(self) -> int:
        return self.agreed + len(self.disagreements)


@dataclass
class Side:
    """The kernel side of a run: this host, or a guest (with how to generate for it and how to boot it again)."""
    host: object
    facts: object
    checker_cls: type = Checker
    describe: object = None
    generate_for: object = None  # guest: facts, seed, nops -> Trace
    reboot: object = None        # guest: old Guest -> new Guest

    @property
    def guest(self) -> bool:
        return self.reboot is not None


def host_side() -> Side:
    host, facts = open_host()
    return Side(host, facts, Checker, facts.describe)


def run(side: Side, checker, loaded: list, gen: int, seed: int, nops: int, on_outcome=None, on_error=None) -> RunResult:
    """Check the loaded (name, Trace) pairs, then gen generated traces; on_outcome(outcome, done, total) after each
    one, on_error(name, exc) when a guest stopped (it is booted again and the run goes on). Ctrl-C ends the run
    with what was checked."""
    work = list(loaded) + [(f"gen:{seed}:{i}", None) for i in range(gen)]
    per_trace = seeds(seed, gen)
    r = RunResult()
    started = time.monotonic()
    try:
        for n, (name, t) in enumerate(work):
            if t is None:
                i = n - len(loaded)
                t = (side.generate_for(side.facts, per_trace[i], nops) if side.generate_for else
                     generate(side.facts.arch, side.facts.config, per_trace[i], nops, not side.facts.hugetlb))
            try:
                o = checker.check(t, name)
            except HostError as exc:
                if not side.guest:
                    raise
                r.errors.append({"trace": name, "error": str(exc)})
                if on_error:
                    on_error(name, exc)
                side.host.close(kill=True)
                side.host = side.reboot(side.host)
                checker.use(side.host)
                continue
            r.agreed += o.agree
            r.unstable += o.unstable
            uses, shares = hugetlb_use(o.trace, o.kernel)
            r.hugetlb += uses
            r.sharing += shares
            if not o.agree:
                r.disagreements.append(o)
            if on_outcome:
                on_outcome(o, n + 1, len(work))
    except KeyboardInterrupt:
        r.interrupted = True
    r.elapsed = time.monotonic() - started
    return r
