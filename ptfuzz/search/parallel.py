"""The level-synchronous search of `ptfuzz check --jobs N`, `--shard I/N` and `--por`: N worker processes, each
owning the states (and the seen digests) whose digest hashes to it; the C side is native_ext/search/lvl.c, one
_engine.LevelWorker per worker (native_ext/py/level.c).

Each level the driver tells every worker to expand its part of the frontier (pass), waits for all of them,
decides what was found at this depth, and tells them to merge what they sent each other (through files in
a private temporary directory) into the next level. Workers are forked (they run only this module's loop
and the C code, never the caller's threads' locks: they print nothing), ignore SIGINT (the driver handles Ctrl-C),
die with the driver (PR_SET_PDEATHSIG), and are always terminated and joined when the search ends, however
it ends."""
import ctypes
import mmap
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field

from .. import _engine


@dataclass
class Spec:
    """Everything a worker needs to build its engines (picklable)."""
    arch: int
    knobs: tuple
    config: tuple
    elfs: tuple
    alphabet: bytes       # packed rows, 8 * (OP_ARGS + 1) bytes each
    nalpha: int
    groups: tuple | None  # ((lo, hi), (lo, hi), (lo, hi)) or None
    finish: bool
    key: tuple | None = None      # --por: the commuting order, and
    indep: bytes | None = None    # nalpha * nalpha independence bytes


class _Worker:
    """The C worker of one process, and what its stats and violation mean."""

    def __init__(self, spec: Spec, nw: int, me: int, progress=None):
        self.h = _engine.LevelWorker(spec.arch, spec.knobs, spec.config, tuple(bytes(e) for e in spec.elfs),
                                     spec.alphabet, spec.nalpha,
                                     tuple(v for g in spec.groups for v in g) if spec.groups else None,
                                     bool(spec.finish), nw, me, spec.key, spec.indep, progress, me)

    def stats(self):
        return dict(zip(("generated", "blocked", "emitted", "pruned", "teardowns", "frontier", "depth", "known",
                         "unchanged"), self.h.stats()))

    def violation(self):
        return self.h.violation()


def _die_with_parent():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn, spec: Spec, nw: int, me: int, tmp: str, shm_name: str | None):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    _die_with_parent()
    progress = None
    if shm_name is not None:
        fd = os.open(shm_name, os.O_RDWR)
        progress = mmap.mmap(fd, 8 * nw)
        os.close(fd)
    try:
        w = _Worker(spec, nw, me, progress)
    except MemoryError as exc:
        conn.send(("error", str(exc)))
        return
    conn.send(("ready",))
    try:
        while True:
            try:
                msg = conn.recv()
            except EOFError:
                return
            cmd = msg[0]
            try:
                if cmd == "pass":
                    w.h.expand(int(msg[1]))
                    k = w.stats()["depth"]
                    for o in range(nw):
                        fd = os.open(os.path.join(tmp, f"{k}-{me}-{o}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                        try:
                            w.h.write(o, fd)
                        finally:
                            os.close(fd)
                    conn.send(("passed", {**w.stats(), "cpu": time.process_time()}, w.violation()))
                elif cmd == "merge":
                    k = w.stats()["depth"]
                    names = [os.path.join(tmp, f"{k}-{src}-{me}") for src in range(nw)]
                    fds = [os.open(n, os.O_RDONLY) for n in names]
                    try:
                        n = w.h.merge(fds)
                    finally:
                        for fd in fds:
                            os.close(fd)
                        for n_ in names:
                            os.unlink(n_)
                    conn.send(("merged", n))
                elif cmd == "shard":
                    conn.send(("kept", w.h.shard_keep(msg[1], msg[2])))
                elif cmd == "stop":
                    return
            except OSError as exc:
                conn.send(("error", exc.strerror or str(exc)))
                return
    finally:
        w.h.close()
        if progress is not None:
            progress.close()


@dataclass
class Outcome:
    status: str                 # "violation", "exhausted", "time", "interrupted", "state bound"
    done_depth: int             # every sequence of at most this many operations is checked
    depth: int                  # the depth being worked on when it stopped
    generated: int = 0
    blocked: int = 0
    distinct: int = 0
    pruned: int = 0
    unchanged: int = 0              # successors whose digest is their parent's (an errno, nothing changed)
    worker_cpu: list = field(default_factory=list)  # each worker's CPU seconds at its last finished level
    fixpoint: bool = False
    violation: tuple | None = None  # (path, kind, op_index, message, at_teardown)
    split_depth: int | None = None  # --shard: the depth the search split at
    levels: list = field(default_factory=list)  # distinct states per depth (0, 1, ...)


def _less(a, b):
    return b is None or (a is not None and a[0] < b[0])


class _Pool:
    """The worker processes, always torn down."""

    def __init__(self, spec: Spec, jobs: int):
        ctx = mp.get_context("fork")  # no re-import of __main__ (spawn, forkserver): any caller can search
        self.tmp = tempfile.mkdtemp(prefix="ptfuzz-check-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.shm_name = os.path.join(self.tmp, "progress")
        with open(self.shm_name, "wb") as f:
            f.write(b"\0" * 8 * jobs)
        fd = os.open(self.shm_name, os.O_RDWR)
        self.progress = mmap.mmap(fd, 8 * jobs)
        os.close(fd)
        self.jobs = jobs
        self.procs, self.conns = [], []
        try:
            for me in range(jobs):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker_main, args=(child, spec, jobs, me, self.tmp, self.shm_name),
                                daemon=True, name=f"ptfuzz-check-{me}")
                p.start()
                child.close()
                self.procs.append(p)
                self.conns.append(parent)
            for msg in self.gather(None):
                if msg[0] != "ready":
                    raise RuntimeError(f"check: worker: {msg[1]}")
        except BaseException:
            self.close()
            raise

    def generated(self) -> int:
        return sum(int.from_bytes(self.progress[8 * i:8 * i + 8], "little") for i in range(self.jobs))

    def send(self, msg):
        for c in self.conns:
            c.send(msg)

    def gather(self, deadline, on_wait=None):
        """Every worker's answer, or TimeoutError at the deadline."""
        out = [None] * len(self.conns)
        left = set(range(len(self.conns)))
        while left:
            timeout = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            ready = mpc.wait([self.conns[i] for i in left], timeout)
            for c in ready:
                i = self.conns.index(c)
                try:
                    out[i] = c.recv()
                except EOFError:
                    raise RuntimeError(f"check: worker {i} died (exit {self.procs[i].exitcode})") from None
                if out[i][0] == "error":
                    raise RuntimeError(f"check: worker {i}: {out[i][1]}")
                left.discard(i)
            if left and deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
            if left and on_wait:
                on_wait()
        return out

    def close(self):
        for c in self.conns:
            try:
                c.send(("stop",))
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(0.5)
            if p.is_alive():
                p.terminate()
                p.join(2)
                if p.is_alive():
                    p.kill()
                    p.join()
        for c in self.conns:
            c.close()
        self.procs, self.conns = [], []
        try:
            self.progress.close()
        except (BufferError, ValueError):
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def search(spec: Spec, max_depth: int, *, jobs: int = 1, seconds: float = 60.0, shard: tuple | None = None,
           max_states: int = 0, on_progress=None) -> Outcome:
    """Breadth-first search to max_depth over jobs processes. shard=(i, n): only the states of shard i past
    the split depth (the first depth with at least 8n states; every shard searches the depths before it
    alike). A KeyboardInterrupt ends the search with status "interrupted" and the bound reached."""
    started = time.monotonic()
    deadline = started + seconds
    out = Outcome("time", 0, 0)
    pool = None
    base = {"generated": 0}

    def progress():
        if on_progress:
            on_progress(out.depth, out.done_depth, base["generated"] + pool.generated(), out.distinct,
                        time.monotonic() - started)
    try:
        pool = _Pool(spec, jobs)
        k = 0
        split = shard is None
        out.distinct, out.levels = 1, [1]
        while True:
            # pass k: (at k = 0, the initial state's teardown) every successor of depth k + 1, and the
            # teardown of every state it reaches first; then every sequence of at most k + 1 is checked
            out.depth = k
            pool.send(("pass", k < max_depth))
            res = pool.gather(deadline, progress)
            stats = [r[1] for r in res]
            out.generated = sum(s["generated"] for s in stats)
            out.blocked = sum(s["blocked"] for s in stats)
            out.pruned = sum(s["pruned"] for s in stats)
            out.unchanged = sum(s["unchanged"] for s in stats)
            out.worker_cpu = [round(s["cpu"], 3) for s in stats]
            found = None
            for r in res:
                if r[2] is not None and _less(r[2], found):
                    found = r[2]
            if found is not None:
                out.status, out.violation = "violation", found
                break
            if k == max_depth:  # max_depth 0: the initial state's teardown was all
                out.status = "exhausted"
                break
            out.done_depth = k + 1
            pool.send(("merge",))
            new = sum(r[1] for r in pool.gather(deadline, progress))
            k += 1
            if not split and k < max_depth and (new >= 8 * shard[1] or k + 1 == max_depth):
                pool.send(("shard", shard[0], shard[1]))
                new = sum(r[1] for r in pool.gather(deadline, progress))
                split, out.split_depth = True, k
            out.distinct += new
            out.levels.append(new)
            if k == max_depth:  # the last level is counted, not expanded
                out.status = "exhausted"
                break
            if new == 0:
                out.status, out.fixpoint, out.done_depth = "exhausted", True, max_depth
                break
            if max_states and out.distinct >= max_states:
                out.status = "state bound"
                break
            if on_progress:
                progress()
    except TimeoutError:
        out.status = "time"
    except KeyboardInterrupt:
        out.status = "interrupted"
    finally:
        if pool is not None:
            if out.status in ("time", "interrupted"):
                out.generated = max(out.generated, pool.generated())
            pool.close()
    return out
