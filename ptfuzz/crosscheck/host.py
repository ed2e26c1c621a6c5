"""Runs host operations for real on the running kernel (crosscheck's kernel side) through the ptfuzz-host helper."""
from __future__ import annotations

import hashlib
import os
import platform
import re
import selectors
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import PtfuzzError

BINARY_NAME = "ptfuzz-host"
# Shipped with the package (package data): the host build is made at install time, and foreign arches' static
# helpers are cross-compiled from it on first use (guest.py).
SOURCE = Path(__file__).resolve().with_name("ptfuzz_host.c")
# What each operation does lives in a header the helper shares with `ptfuzz repro-c`'s reproducers.
OPS_HEADER = SOURCE.with_name("ptfuzz_ops.h")
CFLAGS = ["-O2", "-Wall", "-Wextra"]
DEFAULT_TIMEOUT = 10.0


class HostError(PtfuzzError):
    """The helper cannot be built, started, or answered wrongly or too late."""


@dataclass(frozen=True)
class HostInfo:
    page_size: int
    pmd_size: int
    la57: bool
    method: str  # how PMD-mapped blocks are found: "scan" (PAGEMAP_SCAN), "kpageflags", "none"
    baseline: int = 0  # VmPTE bytes of a process with nothing in the window (subtracted by the helper)
    va_bits: int = 0  # user address bits the kernel grants (47 on x86_64 without la57)
    hugetlb_files: int = 0  # hugetlbfs files hugetlb_mmap can map (memfd_create MFD_HUGETLB), 0: none


def host_supported() -> str | None:
    """None when crosscheck can run here, else the reason (one line)."""
    if not sys.platform.startswith("linux"):
        return f"crosscheck needs Linux (this is {sys.platform})"
    machine = platform.machine()
    if machine not in ("x86_64", "aarch64"):
        return f"crosscheck runs on x86_64 or aarch64 Linux (this is {machine})"
    return None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ptfuzz"


def source_bytes(source: Path) -> bytes:
    """A C source and the project headers it includes (`#include "x.h"` next to it): what a build's cache key
    covers, so that an edit of a shared header rebuilds every helper that includes it."""
    data = Path(source).read_bytes()
    out = [data]
    for name in re.findall(rb'^#include "([^"/]+)"', data, re.M):
        header = Path(source).with_name(name.decode())
        if header.is_file():
            out.append(header.read_bytes())
    return b"".join(out)


def compile_host(source: Path = SOURCE, cache: Path | None = None, name: str = BINARY_NAME,
                 static: bool = True) -> Path:
    """Compiles a helper (this one, or crosscheck --kvm's) into a per-user cache (keyed by source and compiler)
    and returns its path; static first where it can (fewer mappings of its own), unless asked not to."""
    source = Path(source)
    if not source.is_file():
        raise HostError(f"{name} is not built and its source {source} is missing: reinstall ptfuzz")
    cc = shlex.split(os.environ.get("CC") or "cc")
    key = hashlib.sha256(source_bytes(source) + repr((cc, CFLAGS)).encode()).hexdigest()[:16]
    cache = Path(cache) if cache is not None else cache_dir()
    out = cache / f"{name}-{key}"
    if os.access(out, os.X_OK):
        return out
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HostError(f"cannot create the cache directory {cache} for {name}: {e.strerror}") from None
    # compile next to the target and rename: concurrent runs never see a half-written binary
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    last = ""
    # static first: fewer mappings of its own; without static libc, dynamic works just as well
    for extra in (["-static"], []) if static else ([],):
        try:
            r = subprocess.run([*cc, *CFLAGS, *extra, "-o", str(tmp), str(source)], capture_output=True,
                               text=True, timeout=300)
        except FileNotFoundError:
            raise HostError(f"{name} is not built and there is no C compiler ({cc[0]}) to build it") from None
        except subprocess.TimeoutExpired:
            raise HostError(f"compiling {source} with {cc[0]} took more than 300 s") from None
        if r.returncode == 0:
            os.replace(tmp, out)
            return out
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
    tmp.unlink(missing_ok=True)
    raise HostError(f"cannot compile {source} with {cc[0]}: {last}")


def helper_env() -> dict:
    """The helper's environment: ours without LD_PRELOAD. A sanitizer runtime preloaded for the engine (make asan) would
    map its shadow memory into the helper, over the address window the traces use, and the helper would refuse."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def find_binary() -> Path:
    """The helper installed with the package, else one compiled from its shipped source."""
    built = Path(__file__).with_name(BINARY_NAME)
    if built.is_file() and os.access(built, os.X_OK):
        return built
    return compile_host()


class Host:
    """One running helper: a root process and up to 64 real processes it creates on request."""

    def __init__(self, binary: str | os.PathLike | None = None, timeout: float = DEFAULT_TIMEOUT):
        reason = host_supported()
        if reason:
            raise HostError(reason)
        self.binary = Path(binary) if binary is not None else find_binary()
        self.timeout = timeout
        self._buf = b""
        self._info: HostInfo | None = None
        self.on_close: list = []  # what the run set up for this helper and gives back with it (crosscheck's pool)
        try:
            # bytes and unbuffered: a buffered text reader can hold a complete line that select()
            # cannot see, so the timeout would wait for data that has already arrived
            self._proc = subprocess.Popen([str(self.binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, bufsize=0, env=helper_env())
        except OSError as e:
            raise HostError(f"cannot start {self.binary}: {e.strerror}") from None
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._proc.stdout, selectors.EVENT_READ)

    # ---- transport ----

    def _died(self, request: str) -> HostError:
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        err = b""
        if self._proc.poll() is not None:
            os.set_blocking(self._proc.stderr.fileno(), False)
            err = self._proc.stderr.read() or b""
        why = err.decode(errors="replace").strip().splitlines()
        status = self._proc.returncode
        detail = why[-1] if why else f"exit status {status}"
        return HostError(f"{BINARY_NAME} stopped during {request!r}: {detail}")

    def request(self, line: str) -> str:
        """Sends one request line and returns the reply line; an `e` reply raises HostError."""
        if self._proc is None:
            raise HostError(f"{BINARY_NAME} is closed (request {line!r})")
        if self._proc.poll() is not None and not self._buf:
            raise self._died(line)
        try:
            self._proc.stdin.write(line.encode() + b"\n")
        except (BrokenPipeError, ValueError):
            raise self._died(line) from None
        reply = self._readline(line)
        if reply.startswith("e "):
            raise HostError(f"{BINARY_NAME}: {reply[2:]} (request {line!r})")
        return reply

    def _readline(self, request: str) -> str:
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            if not self._sel.select(self.timeout):
                # a late reply would answer the next request: this helper cannot be used any more
                self.close(kill=True)
                raise HostError(f"{BINARY_NAME} did not answer {request!r} within {self.timeout:g} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise self._died(request)
            self._buf += chunk
        out, _, self._buf = self._buf.partition(b"\n")
        return out.decode()

    # ---- requests ----

    def hello(self) -> HostInfo:
        reply = self.request("hello")
        f = reply.split()
        try:
            kv = dict(x.split("=", 1) for x in f[5:])
            self._info = HostInfo(int(f[1]), int(f[2]), f[3] == "1", kv.get("method", "none"), int(f[4]),
                                  int(kv.get("va_bits", 0)), int(kv.get("hugetlb_files", 0)))
        except (IndexError, ValueError):
            raise HostError(f"{BINARY_NAME}: malformed hello reply {reply!r}") from None
        if f[0] != "ok":
            raise HostError(f"{BINARY_NAME}: malformed hello reply {reply!r}")
        return self._info

    def probe(self) -> dict[str, int]:
        """Host behaviours measured in a throwaway process (pt_reclaim, zero_page, THP, MADV_COLLAPSE, ...)."""
        reply = self.request("probe")
        try:
            head, *items = reply.split()
            if head != "ok":
                raise ValueError
            return {k: int(v) for k, v in (x.split("=", 1) for x in items)}
        except ValueError:
            raise HostError(f"{BINARY_NAME}: malformed probe reply {reply!r}") from None

    def op(self, name: str, *args: int) -> int:
        """A host operation (exec, fork, exit, mmap, shm_mmap, hugetlb_mmap, munmap, madvise, fault): 0 or -errno."""
        line = " ".join([name, *(str(int(a)) for a in args)])
        reply = self.request(line)
        if not reply.startswith("r "):
            raise HostError(f"{BINARY_NAME}: expected a result for {line!r}, got {reply!r}")
        return int(reply[2:])

    def shm_reset(self) -> None:
        """Empties every shm object (no process may map them): a new trace starts with no page cache."""
        self.request("shm_reset")

    def figures(self, pid: int, lo: int, hi: int) -> tuple[int, tuple[int, ...]]:
        """(window page-table bytes, PMD-mapped 2 MiB block addresses in [lo, hi)) of process pid."""
        line = f"figures {int(pid)} {int(lo)} {int(hi)}"
        reply = self.request(line)
        f = reply.split()
        if f[:1] == ["r"]:  # the process does not exist
            raise HostError(f"{BINARY_NAME}: figures of process {pid}: result {f[1]}")
        try:
            if f[0] != "f" or len(f) != 3 + int(f[2]):
                raise ValueError
            return int(f[1]), tuple(int(x) for x in f[3:])
        except (IndexError, ValueError):
            raise HostError(f"{BINARY_NAME}: malformed figures reply {reply[:80]!r}") from None

    def os_pid(self, pid: int) -> int:
        """The real pid behind process pid (for tests and debugging)."""
        reply = self.request(f"pid {int(pid)}")
        if not reply.startswith("ok "):
            raise HostError(f"{BINARY_NAME}: process {pid} does not exist")
        return int(reply[3:])

    @property
    def root_pid(self) -> int:
        return self._proc.pid

    def close(self, kill: bool = False) -> None:
        """EOF on its stdin makes the helper kill and reap its processes and exit; kill it if it does not."""
        proc = getattr(self, "_proc", None)
        for undo in getattr(self, "on_close", ()):
            undo()
        self.on_close = []
        if proc is None:
            return
        self._proc = None
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            if kill:
                raise subprocess.TimeoutExpired(proc.args, 0)
            proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # its children get SIGKILL (PR_SET_PDEATHSIG) or EOF on their channel
            proc.wait()
        self._sel.close()
        proc.stdout.close()
        proc.stderr.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
