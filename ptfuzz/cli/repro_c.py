"""ptfuzz repro-c: a trace as a standalone C program that performs it on a real kernel."""
import json
import sys
from pathlib import Path

import typer

from .. import trace as tracemod
from ..crosscheck.repro import ARCHES, compile_repro, generate
from ..errors import UsageError
from .app import app


@app.command("repro-c")
def repro_c(
    path: Path = typer.Argument(..., metavar="TRACE", help="A trace file."),
    out: Path = typer.Option(None, "-o", "--output", help="Write the C program here (default: stdout; with "
                             "--compile, TRACE's name with .c in the current directory)."),
    arch: str = typer.Option(None, "--arch", help=f"Target: {', '.join(ARCHES)} (default: the trace's arch, s390 "
                             "being s390x)."),
    compile_: bool = typer.Option(False, "--compile", help="Also compile it with the arch's compiler (cc here, "
                                  "else aarch64-linux-gnu-gcc or s390x-linux-gnu-gcc) next to the C file."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout: source, binary, arch, "
                                  "skipped operations, build command."),
):
    """Write a trace as one standalone C program (as syzkaller's prog2c does for its programs).

    Examples:

      ptfuzz repro-c crosscheck-out/x86_64/crosscheck-1a2b3c4d.msgpack -o r.c --compile

      ptfuzz repro-c corpus/regressions/s390/gmap-dangling-m1.msgpack --arch s390x -o m1-repro.c --compile

      ptfuzz repro-c t.msgpack --arch arm64 --json

    The program performs the trace's operations in order on the running kernel, one real process per trace pid, and
    prints one line per operation: INDEX OPERATION(ARGS) = RESULT, the result 0 or -errno as the model writes it;
    then every live process's page-table bytes (VmPTE minus a fresh process's) and PMD-mapped blocks. What each
    operation does is the crosscheck helpers' own code (ptfuzz_ops.h, and ptfuzz_kvm_ops.h for VM operations),
    inlined: the file needs nothing of ptfuzz. Operations with no real-kernel definition (walk, rmap, RCU and
    invalidation steps, split, the sysctl) become a comment and a `skipped` line, and are listed on stderr.
    """
    trace = tracemod.load(path)
    repro = generate(trace, str(path), arch)
    for i, text, why in repro.skipped:
        print(f"ptfuzz: {path}: ops[{i}] {text}: skipped in the reproducer ({why})", file=sys.stderr)
    if compile_ and out is None:
        out = Path(path.stem + ".c")
    if out is not None:
        try:
            out.write_text(repro.source)
        except OSError as e:
            raise UsageError(f"-o {out}: {e.strerror}") from None
    binary = None
    if compile_:
        binary = compile_repro(repro, out, out.with_suffix(""))
    build = repro.build_command(str(out) if out else "REPRO.c", str(out.with_suffix("")) if out else "repro")
    if json_out:
        doc = {"trace": str(path), "arch": repro.arch, "ops": repro.ops, "source": str(out) if out else None,
               "binary": str(binary) if binary else None, "build_command": build,
               "skipped": [{"op_index": i, "op": t, "why": w} for i, t, w in repro.skipped]}
        if out is None:
            doc["c"] = repro.source
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    if out is None:
        sys.stdout.write(repro.source)
        return
    print(f"{out}: {repro.ops} operations for {repro.arch}" + (f", {len(repro.skipped)} skipped" if repro.skipped else ""))
    if binary is not None:
        print(f"{binary}: built with {' '.join(repro.compiler)}")
