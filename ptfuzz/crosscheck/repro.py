"""`ptfuzz repro-c`: a trace as one standalone C program that performs its operations on a real kernel, built on the
operation definitions the crosscheck helper uses (ptfuzz_ops.h, ptfuzz_kvm_ops.h), inlined."""
from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..elfinfo import exec_accepts
from ..errors import PtfuzzError, UsageError
from ..trace import Trace, op_text, op_to_list
from .compare import HOST_OPS
from .host import CFLAGS, OPS_HEADER

KVM_HEADER = OPS_HEADER.with_name("ptfuzz_kvm_ops.h")
KVM_OPS = ("vm_create", "memslot", "guest_fault", "vm_destroy")
# --arch values: the compiler's machine names, and which trace arch each one reproduces by default
ARCHES = ("x86_64", "arm64", "s390x")
FROM_TRACE_ARCH = {"x86_64": "x86_64", "arm64": "arm64", "s390": "s390x"}
# (compiler, Debian package that provides it) per target; the native one is cc on a machine of that arch
COMPILERS = {"x86_64": ("x86_64-linux-gnu-gcc", "gcc-x86-64-linux-gnu libc6-dev-amd64-cross"),
             "arm64": ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu libc6-dev-arm64-cross"),
             "s390x": ("s390x-linux-gnu-gcc", "gcc-s390x-linux-gnu libc6-dev-s390x-cross")}
MACHINES = {"x86_64": "x86_64", "aarch64": "arm64", "s390x": "s390x"}
# The helper's window: a trace whose host ranges all lie in it keeps it (crosscheck traces do)
DEFAULT_WINDOW = (1 << 44, 1 << 46)
WINDOW_ALIGN = 1 << 20
# The operations the helpers cannot perform, and why (the reproducer prints them as skipped)
WHY_SKIPPED = {
    "sysctl_allocate_pgste": "a system-wide sysctl: the reproducer leaves the machine's settings alone",
    "split": "a kernel-internal THP split: no system call asks for exactly that",
    "rcu_lock": "an RCU read-side section is kernel-internal", "rcu_unlock": "an RCU read-side section is kernel-internal",
    "rcu_gp": "an RCU grace period is kernel-internal",
    "walk_begin": "a GUP-fast walk step cannot be paused from user space",
    "walk_step": "a GUP-fast walk step cannot be paused from user space",
    "walk_end": "a GUP-fast walk step cannot be paused from user space",
    "rmap_begin": "an rmap walk cannot be paused from user space",
    "unmap_mapping_begin": "a zap of a file's mappings cannot be paused from user space",
    "rmap_commit": "an rmap walk cannot be paused from user space",
    "guest_fault_begin": "half a guest fault cannot be paused from user space (guest_fault is whole)",
    "guest_fault_commit": "half a guest fault cannot be paused from user space (guest_fault is whole)",
    "inval_hold": "an open MMU-notifier invalidation cannot be held from user space",
    "inval_end": "an open MMU-notifier invalidation cannot be held from user space",
    "frag_hold": "a page_table_free cannot be held inside mm->context.lock from user space",
    "frag_end": "a page_table_free cannot be held inside mm->context.lock from user space",
    "walk_pin": "GUP-fast's grab between its walk and its end cannot be placed from user space",
    "collapse_hold": "a collapse cannot be held between its isolation and its copy from user space",
    "collapse_end": "a collapse cannot be held between its isolation and its copy from user space",
    "tlb_access": "a TLB fill on a chosen cpu without a fault cannot be asked for from user space (a touch faults in)",
    "mremap_hold": "an mremap cannot be held between its table moves and its unmap from user space",
    "mremap_end": "an mremap cannot be held between its table moves and its unmap from user space",
    "khugepaged": "when khugepaged reaches a block cannot be chosen from user space",
    "unshare_hold": "a munmap cannot be held between its unmap_vmas and its free_pgtables from user space",
    "unshare_end": "a munmap cannot be held between its unmap_vmas and its free_pgtables from user space",
}


class ReproError(PtfuzzError):
    """A reproducer cannot be written or compiled (unsupported arch or operations, no compiler)."""


@dataclass
class Repro:
    source: str
    arch: str
    compiler: list[str]
    flags: list[str]                       # what the build comment and --compile use
    ops: int
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (index, op text, why)
    kvm: bool = False

    def build_command(self, src: str, out: str) -> list[str]:
        return [*self.compiler, *self.flags, "-o", out, src]


def target_arch(trace: Trace, arch: str | None) -> str:
    if arch is None:
        return FROM_TRACE_ARCH[trace.arch]
    if arch not in ARCHES:
        raise UsageError(f"--arch {arch!r}: must be one of {', '.join(ARCHES)}")
    return arch


def compiler(arch: str) -> list[str]:
    """The C compiler for arch: $PTFUZZ_CC_<ARCH> or the native cc on such a machine, else the cross gcc."""
    env = os.environ.get(f"PTFUZZ_CC_{arch.upper()}")
    if env:
        return shlex.split(env)
    if MACHINES.get(platform.machine()) == arch:
        return shlex.split(os.environ.get("CC") or "cc")
    return [COMPILERS[arch][0]]


def _window(rows: list[list]) -> tuple[int, int]:
    """The helper's window when every host range of the trace lies in it, else the 1 MiB-aligned hull of those
    ranges (a corpus trace maps at 0x10000000): the program checks at start-up that none of its own mappings
    lies there, and every range outside it is refused, so MAP_FIXED never hits the program itself."""
    ranges = []
    for name, *args in rows:
        if name in ("mmap", "shm_mmap", "hugetlb_mmap", "munmap", "madvise"):
            ranges.append((args[1], args[2]))
        elif name == "fault":
            ranges.append((args[1], 1))
    ranges = [(a, n) for a, n in ranges if n and a + n <= 1 << 56]  # absurd ranges stay outside: refused
    lo, hi = DEFAULT_WINDOW
    if not ranges or all(lo <= a and a + n <= hi for a, n in ranges):
        return DEFAULT_WINDOW
    lo = min(a for a, _ in ranges) // WINDOW_ALIGN * WINDOW_ALIGN
    hi = -(-max(a + n for a, n in ranges) // WINDOW_ALIGN) * WINDOW_ALIGN
    return max(lo, WINDOW_ALIGN), hi


def _c_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _inline(path: Path) -> str:
    text = path.read_text()
    return f"/* ==== {path.name}, inlined from ptfuzz ==== */\n{text.rstrip()}\n/* ==== end of {path.name} ==== */\n"


def generate(trace: Trace, name: str, arch: str | None = None) -> Repro:
    """The reproducer of trace (name: how the program calls it) for arch (default: the trace's own)."""
    arch = target_arch(trace, arch)
    rows = [op_to_list(row) for row in trace.ops]
    kvm = any(r[0] in KVM_OPS for r in rows)
    pgste = arch == "s390x" and kvm
    skipped: list[tuple[int, str, str]] = []
    body: list[str] = []
    for i, (row, (op, *args)) in enumerate(zip(trace.ops, rows)):
        text = op_text(row)
        why = WHY_SKIPPED.get(op)
        comment = text
        if op == "exec" and args[1] != -1:
            elf = trace.elfs[args[1]] if args[1] < len(trace.elfs) else b""
            accepted, elf_pgste = exec_accepts(bytes(elf), trace.arch)
            if not accepted:
                why = f"elfs[{args[1]}] is not an image exec accepts (the model answers -8); the reproducer execs no images"
            else:
                comment += f": a fresh process, as for elfs[{args[1]}]" + (" (PT_S390_PGSTE)" if elf_pgste else "")
                pgste |= arch == "s390x" and elf_pgste
        if why is None and op not in HOST_OPS and op not in KVM_OPS:
            why = "no real-kernel definition of this operation"
        if why is not None:
            skipped.append((i, text, why))
            body.append(f"    /* [{i}] {text}: skipped, {why} */")
            body.append(f"    skip({i}, {_c_string(text)}, {_c_string(why)});")
            continue
        # five values whatever the operation: the callee may read every argument slot of a request
        vals = (args[:1] if op == "exec" else args) + ([stamp(i)] if kvm and op == "fault" else []) + [0] * 5
        values = ", ".join(f"{a & (2**64 - 1):#x}ULL" for a in vals[:5])
        call = "kvm_step" if op in KVM_OPS else "step"
        body.append(f"    /* [{i}] {comment} */")
        body.append(f"    {call}({i}, {_c_string(op)}, {_c_string(text)}, (const uint64_t[]){{{values}}});")
    lo, hi = _window(rows)
    flags = [*CFLAGS, "-static"] + (["-Wl,--s390-pgste"] if pgste else [])
    cc = compiler(arch)
    out = Path(name).stem
    head = [
        f"/* {Path(name).name}: trace {name} ({trace.arch}, {len(rows)} operations) as a standalone program, written by",
        " * `ptfuzz repro-c`: it performs the operations in order on the running kernel, one real process per trace",
        " * pid, and prints one line per operation: INDEX OPERATION(ARGS) = RESULT (0 or -errno, as ptfuzz's model",
        " * writes results; `skipped` for one that has no real-kernel definition, `error` when the program cannot",
        " * perform it), then the page-table figures of every live process (VmPTE minus a fresh process's, and its",
        " * PMD-mapped blocks). What each operation does is ptfuzz_ops.h's" + (" and ptfuzz_kvm_ops.h's" if kvm else "")
        + ", inlined below: `ptfuzz",
        " * crosscheck`'s helpers run the same code.",
        " *",
        f" * build: {shlex.join([*cc, *flags, '-o', out, Path(name).stem + '.c'])}",
        " * (static: fewer mappings of its own; `-static` may be dropped where there is no static libc)",
    ]
    if pgste:
        head.append(" * --s390-pgste: KVM_CREATE_VM needs an mm that asked for PGSTEs at exec; every process forked from"
                    " this\n * one inherits it (where the trace gives PGSTEs to some processes only).")
    if skipped:
        head.append(f" * skipped: {len(skipped)} operation(s) without a real-kernel definition (see each one below).")
    head.append(" */")
    defs = ["#define _GNU_SOURCE", '#define PTF_NAME "ptfuzz-repro"']
    if (lo, hi) != DEFAULT_WINDOW:
        defs += ["/* the trace's addresses lie here: the program's own mappings must not (checked at start-up) */",
                 f"#define WIN_LO {lo:#x}ULL", f"#define WIN_HI {hi:#x}ULL",
                 f'#define WIN_TEXT "[{lo:#x}, {hi:#x})"']
    if kvm:
        defs += ["#define PTF_CHILD_EXTRA ptf_kvm_child", "#define PTF_CHILD_START ptf_kvm_forget"]
    parts = ["\n".join(head), "\n".join(defs), _inline(OPS_HEADER)]
    if kvm:
        parts.append(_inline(KVM_HEADER))
    parts.append(MAIN_HELPERS.replace("@KVM@", KVM_STEP if kvm else ""))
    parts.append("int main(void)\n{\n    ptf_init();\n    header(" + _c_string(name) + ");\n" + "\n".join(body)
                 + "\n    footer();\n    shutdown_all(); /* kills and reaps every process, then exits */\n}\n")
    return Repro("\n\n".join(parts), arch, cc, flags, len(rows), skipped, kvm)


MAIN_HELPERS = r'''/* ==== the trace ==== */
/* Output as the helper writes it: through write(2), no stdio (no allocation after start-up). */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ptf_vline(1, fmt, ap);
    va_end(ap);
}

static void header(const char *name)
{
    say("# ptfuzz repro-c %s: page %ld, PMD %llu, va_bits %d, la57 %d, PMD scan by %s, window %s", name, page_size,
        (unsigned long long)pmd_size, va_bits, la57, method_names[method], WIN_TEXT);
}

static void show(int i, const char *text, long long r, const char *extra)
{
    if (r == PTF_FAIL)
        say("%d %s = error: %s", i, text, ptf_err);
    else
        say("%d %s = %lld%s%s", i, text, r, extra && *extra ? " " : "", extra ? extra : "");
}

__attribute__((unused)) static void step(int i, const char *name, const char *text, const uint64_t *a)
{
    show(i, text, ptf_host_op(name, a), NULL);
    reap();
}

__attribute__((unused)) static void skip(int i, const char *text, const char *why)
{
    say("%d %s = skipped: %s", i, text, why);
}
@KVM@
/* The figures the helper reports, for every live process: VmPTE minus a fresh process's, PMD-mapped blocks. */
static void footer(void)
{
    for (int s = 0; s < NPROC; s++) {
        if (!procs[s].used)
            continue;
        long long r = ptf_figures((uint64_t)s, WIN_LO, WIN_HI);
        if (r == PTF_FAIL)
            say("figures %d: error: %s", s, ptf_err);
        else if (outbuf[0] == 'f') {
            /* "f BYTES N ADDR..": the blocks in hex, as the model's reports show them */
            static char list[MAXB * 20 + 16];
            char *p = outbuf + 2, *end;
            long long bytes = strtoll(p, &end, 10);
            long n = strtol(end, &p, 10);
            size_t o = 0;
            list[0] = 0;
            for (long k = 0; k < n && o + 24 < sizeof list; k++)
                o += (size_t)snprintf(list + o, sizeof list - o, " %#llx", strtoull(p, &p, 10));
            say("figures %d: pt_bytes %lld pmd_mapped %ld%s", s, bytes, n, list);
        }
        else
            say("figures %d: %s", s, outbuf);
    }
}
'''

def stamp(i: int) -> int:
    """The 32-bit value a store at operation i writes (a guest's, or a host fault's in a trace with VMs): what a
    guest or the owner then reads names the operation."""
    return 0x50540000 | (i & 0xffff)


KVM_STEP = r'''
static void kvm_step(int i, const char *name, const char *text, const uint64_t *a)
{
    /* a guest's store writes a stamp that names the operation (as a host fault's does: repro.py's stamp) */
    long long r = ptf_kvm_op(name, a, 0x50540000u | ((unsigned)i & 0xffff));
    show(i, text, r, ptf_detail);
    reap();
}
'''


def compile_repro(repro: Repro, src: Path, out: Path) -> Path:
    """Builds src with the arch's compiler (static first, as the helper is built); ReproError with one line."""
    cc = repro.compiler
    if not shutil.which(cc[0]):
        _, pkg = COMPILERS[repro.arch]
        raise ReproError(f"{cc[0]} (a C compiler for {repro.arch}) is not installed: apt-get install -y {pkg}")
    last = ""
    for flags in (repro.flags, [f for f in repro.flags if f != "-static"]):
        try:
            r = subprocess.run([*cc, *flags, "-o", str(out), str(src)], capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise ReproError(f"compiling {src} with {cc[0]} took more than 300 s") from None
        if r.returncode == 0:
            return out
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise ReproError(f"cannot compile {src} with {' '.join(cc)}: {last}")
