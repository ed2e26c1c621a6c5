"""A foreign-arch kernel under QEMU whose /init is the crosscheck helper, spoken to over the serial console.

The initramfs holds one file, /init: ptfuzz-host built static for the guest's arch. As pid 1 it mounts
/proc, /sys and /dev, puts the console in raw mode and answers the same line protocol as on the host
(ptfuzz/host.py). The guest has no network, no disk and no modules; QEMU's serial port is its stdio.

Guest is a Host: crosscheck's KernelSide and Checker run on it unchanged, and `run_trace` pipelines a
whole trace (every request written at once, figures of every live process after each operation by
`figall`), since a round trip into a TCG guest costs far more than the work it asks for.
A Guest is a context manager: QEMU is killed on close, on a time-out, on an error and on Ctrl-C.
"""
from __future__ import annotations

import hashlib
import os
import selectors
import shlex
import signal
import subprocess
import tempfile
import time
from collections import deque
from pathlib import Path

from .compare import HUGETLB_POOL, shares_pmd_tables
from .host import CFLAGS, SOURCE, Host, HostError, source_bytes
from .kernels import Kernel, KernelError, cross_cc, kernels_dir, qemu_binary

BOOT_TIMEOUT = 120.0
READY = "ptfuzz-host ready"
REPLY_HEADS = ("r ", "f ", "F ", "ok", "e ")


def build_helper(arch: str, source: Path = SOURCE, pgste: bool = False, name: str = "ptfuzz-host") -> Path:
    """ptfuzz-host (or another helper: source, name) compiled static for arch (cross-compiled on another machine),
    cached by source and compiler; pgste: linked with `ld --s390-pgste` (a PT_S390_PGSTE program header: its exec
    asks for PGSTEs)."""
    source = Path(source)
    if not source.is_file():
        raise KernelError(f"the helper's source {source} is missing: crosscheck --kernel needs a source checkout")
    cc = cross_cc(arch)
    extra = ["-static"] + (["-Wl,--s390-pgste"] if pgste else [])
    key = hashlib.sha256(source_bytes(source) + repr((cc, CFLAGS, extra)).encode()).hexdigest()[:16]
    out = kernels_dir() / "helpers" / f"{name}-{arch}{'-pgste' if pgste else ''}-{key}"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    try:
        r = subprocess.run([*cc, *CFLAGS, *extra, "-o", str(tmp), str(source)], capture_output=True, text=True,
                           timeout=300)
    except FileNotFoundError:
        raise KernelError(f"no C compiler {cc[0]} for {arch}") from None
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise KernelError(f"cannot build the {arch} helper with {' '.join(cc)}: {last}")
    os.replace(tmp, out)
    return out


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """An uncompressed newc archive of (name, mode, data) entries: what the kernel unpacks as its initramfs."""
    out = bytearray()

    def add(name: str, mode: int, data: bytes, ino: int) -> None:
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        out.extend(hdr.encode() + nb)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for i, (name, mode, data) in enumerate(entries, 1):
        add(name, mode, data, i)
    add("TRAILER!!!", 0, b"", 0)
    return bytes(out)


def build_initramfs(helper: Path, pgste: Path | None = None, beside: dict | None = None) -> Path:
    """/init (the helper), and on s390 /init-pgste (the same linked with --s390-pgste, exec'd by the probe);
    beside: more programs, {name: path} (crosscheck --kvm: /ptfuzz-host beside the KVM helper as /init)."""
    entries = [("dev", 0o040755, b""), ("proc", 0o040555, b""), ("sys", 0o040555, b""),
               ("init", 0o100755, helper.read_bytes())]
    if pgste is not None:
        entries.append(("init-pgste", 0o100755, pgste.read_bytes()))
    for name, path in sorted((beside or {}).items()):
        entries.append((name, 0o100755, Path(path).read_bytes()))
    data = cpio_newc(entries)
    # named by everything in it: two checkouts with different programs beside the same /init do not share one
    tag = "-" + hashlib.sha256(data).hexdigest()[:8] if beside else ""
    out = helper.with_name(helper.name + tag + ".cpio")
    if not out.is_file() or out.read_bytes() != data:
        tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    return out


CMDLINE = "quiet panic=-1 norandmaps rdinit=/init"
MEMORY_MB = 2048  # what a guest runs traces in, besides crosscheck's pool of huge pages


def page_size_of(kernel: Kernel) -> int:
    """The kernel's page size from its config (4K when it has none: an image of the user's own)."""
    for size, key in ((16384, "CONFIG_ARM64_16K_PAGES"), (65536, "CONFIG_ARM64_64K_PAGES")):
        if kernel.arch == "arm64" and kernel.config_value(key) == "y":
            return size
    return 4096


def guest_memory_mb(kernel: Kernel) -> int:
    """The guest's memory: MEMORY_MB, and on arm64 room for the HUGETLB_POOL PMD-size huge pages crosscheck adds to
    its vm.nr_hugepages (128 MiB with 4K pages, 2 GiB with 16K; s390 and 64K pages share no PMD tables: no pool)."""
    page = page_size_of(kernel)
    if not shares_pmd_tables(kernel.arch, page):
        return MEMORY_MB
    return MEMORY_MB + (HUGETLB_POOL * page * (page // 8) >> 20)


def qemu_command(kernel: Kernel, initrd: Path, memory_mb: int = MEMORY_MB) -> list[str]:
    qemu = qemu_binary(kernel.arch)
    common = ["-nodefaults", "-display", "none", "-no-reboot", "-m", str(memory_mb), "-smp", "1",
              "-kernel", str(kernel.image), "-initrd", str(initrd), "-serial", "stdio", "-net", "none"]
    if kernel.arch == "arm64":
        # pauth-impdef: QEMU's own pointer-auth algorithm, 3-4 times faster under TCG than the architected one;
        # lpa2=off: without FEAT_LPA2 a 52-bit-VA kernel (Debian's 6.12+ with 4K and 16K pages) runs with 48 bits
        # and 4 levels, as on most arm64 hardware; the model has 52-bit VA with 64K pages only (5-level 4K and
        # 16K/52 are rejected as configurations)
        return [qemu, "-machine", "virt,virtualization=on", "-cpu", "max,pauth-impdef=on,lpa2=off", *common,
                "-append", f"console=ttyAMA0 {CMDLINE}"]
    if kernel.arch == "s390":
        return [qemu, "-machine", "s390-ccw-virtio", "-cpu", "max", *common,
                "-append", f"console=ttysclp0 {CMDLINE}"]
    raise KernelError(f"crosscheck boots arm64 or s390 kernels, not {kernel.arch}")


def _die_with_parent() -> None:
    """In QEMU's process before exec: SIGKILL when ptfuzz dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Guest(Host):
    """One booted guest; its console speaks the helper's protocol. Many traces per boot."""

    ready = READY  # what /init says once it takes requests
    reply_heads = REPLY_HEADS

    def __init__(self, kernel: Kernel, timeout: float = 60.0, boot_timeout: float = BOOT_TIMEOUT,
                 memory_mb: int | None = None):
        self.kernel, self.timeout = kernel, timeout
        self._buf = b""
        self._info = None
        self._proc = None
        # what the run set up in the guest (crosscheck's pool of huge pages): it goes with the guest, which powers
        # off at close, so nothing is given back by request
        self.on_close: list = []
        self.console: deque[str] = deque(maxlen=200)  # what the guest said besides replies (boot log, oopses)
        self.initrd = self.initramfs(kernel)
        self.command = qemu_command(kernel, self.initrd, memory_mb or guest_memory_mb(kernel))
        self._stderr = tempfile.TemporaryFile()
        t0 = time.monotonic()
        try:
            # its own process group: a Ctrl-C in the terminal reaches ptfuzz, which then kills QEMU itself
            self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self._stderr, bufsize=0, start_new_session=True,
                                          preexec_fn=_die_with_parent)
        except OSError as e:
            raise KernelError(f"cannot start {self.command[0]}: {e.strerror}") from None
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._proc.stdout, selectors.EVENT_READ)
        try:
            self._wait_ready(boot_timeout)
        except BaseException:
            self.close(kill=True)
            raise
        self.boot_seconds = time.monotonic() - t0

    def initramfs(self, kernel: Kernel) -> Path:
        self.helper = build_helper(kernel.arch)
        return build_initramfs(self.helper, build_helper(kernel.arch, pgste=True) if kernel.arch == "s390" else None)

    # ---- transport ----

    def _qemu_said(self) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return text.splitlines()[-1] if text else ""

    def _wait_ready(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while True:
            line = self._rawline(deadline, "boot")
            if line is None:
                break
            if self.ready in line:
                return
            self.console.append(line)
        raise self._died("boot")

    def _rawline(self, deadline: float, request: str) -> str | None:
        """The next line from the console (without \\r), or None at EOF; HostError past the deadline."""
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(left):
                tail = " | ".join(list(self.console)[-3:])
                self.close(kill=True)
                raise HostError(f"{self.kernel.name}: the guest did not answer {request!r} within "
                                f"{self.timeout if request != 'boot' else BOOT_TIMEOUT:g} s"
                                + (f" (console: {tail})" if tail else ""))
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self._buf += chunk
        out, _, self._buf = self._buf.partition(b"\n")
        return out.decode(errors="replace").replace("\r", "")

    def _readline(self, request: str) -> str:
        deadline = time.monotonic() + self.timeout
        while True:
            line = self._rawline(deadline, request)
            if line is None:
                raise self._died(request)
            if line.startswith(self.reply_heads):
                return line
            self.console.append(line)  # a kernel message on the console: kept, not a reply

    def _died(self, request: str) -> HostError:
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        said = self._qemu_said()
        tail = " | ".join(x for x in list(self.console)[-4:] if x.strip())
        status = proc.returncode if proc is not None else None
        detail = said or tail or f"QEMU exit status {status}"
        if said and tail:
            detail += f" (console: {tail})"
        self.close(kill=True)
        return HostError(f"{self.kernel.name}: the guest stopped during {request!r}: {detail}")

    def _write(self, data: bytes, request: str) -> None:
        """Writes while reading: a guest that fills its console before it has read all of a long batch must
        not block QEMU against us (replies go to self._buf)."""
        fd_in, fd_out = self._proc.stdin.fileno(), self._proc.stdout.fileno()
        os.set_blocking(fd_in, False)
        view = memoryview(data)
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd_in, selectors.EVENT_WRITE)
            sel.register(fd_out, selectors.EVENT_READ)
            while view:
                left = deadline - time.monotonic()
                events = sel.select(max(left, 0)) if left > 0 else []
                if not events:
                    self.close(kill=True)
                    raise HostError(f"{self.kernel.name}: the guest took no input for {self.timeout:g} s "
                                    f"(request {request!r})")
                for key, _ in events:
                    if key.fd == fd_in:
                        try:
                            n = os.write(fd_in, view[:1 << 16])
                        except BlockingIOError:
                            continue
                        except (BrokenPipeError, OSError):
                            raise self._died(request) from None
                        view = view[n:]
                    else:
                        chunk = os.read(fd_out, 1 << 20)
                        if not chunk:
                            raise self._died(request)
                        self._buf += chunk

    def request(self, line: str) -> str:
        if self._proc is None:
            raise HostError(f"{self.kernel.name}: the guest is gone (request {line!r})")
        self._write(line.encode() + b"\n", line)
        reply = self._readline(line)
        if reply.startswith("e "):
            raise HostError(f"guest {self.kernel.name}: {reply[2:]} (request {line!r})")
        return reply

    def pipeline(self, lines: list[str]) -> list[str]:
        """Sends every line at once and returns the replies in order (an `e` reply is returned, not raised)."""
        if self._proc is None:
            raise HostError(f"{self.kernel.name}: the guest is gone")
        self._write("".join(f"{x}\n" for x in lines).encode(), lines[0] if lines else "")
        return [self._readline(x) for x in lines]

    def close(self, kill: bool = False) -> None:
        proc = self._proc
        self.on_close = []
        if proc is None:
            return
        self._proc = None
        if not kill and proc.poll() is None:
            try:
                proc.stdin.write(b"quit\n")  # the helper kills its processes and powers the guest off
            except OSError:
                pass
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=0 if kill else 10)
        except subprocess.TimeoutExpired:
            pass
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        try:
            self._sel.close()
        except Exception:
            pass
        proc.stdout.close()
        self._stderr.close()

    @property
    def root_pid(self) -> int:
        raise HostError("a guest's helper has no pid on this machine")

    def describe(self) -> str:
        return f"{self.kernel.name}: {shlex.join(self.command)}"
