"""ptfuzz elf-inspect: what exec would decide about PGSTEs for a binary."""
from pathlib import Path

import numpy as np
import typer
from rich.console import Console

from .. import trace as tracemod
from ..elfinfo import inspect_file
from ..errors import ElfError
from ..names import OP_NUMBER
from ..trace import Trace
from .app import app
from .common import print_json


def exec_trace(data: bytes, report, path: str) -> Trace:
    ops = np.array([[OP_NUMBER["exec"], 1, 0, 0, 0, 0], [OP_NUMBER["vm_create"], 0, 1, 0, 0, 0]], dtype=np.uint64)
    return Trace("s390", ops, elfs=[data[:report.header_bytes]], expect={"verdict": "clean"},
                 meta={"found_by": "elf-inspect", "note": f"exec of {Path(path).name} then vm_create"})


@app.command("elf-inspect")
def elf_inspect(
    files: list[Path] = typer.Argument(..., help="ELF files."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per file."),
    allocate_pgste: bool = typer.Option(False, "--allocate-pgste", help="Assume vm.allocate_pgste=1."),
    emit_trace: Path = typer.Option(None, "--emit-trace", help="Write a trace that execs the (first) binary and creates a VM."),
):
    """Class, byte order, machine, program headers and the PGSTE decision of each binary.

    Examples:

      ptfuzz elf-inspect /usr/bin/qemu-system-s390x

      ptfuzz elf-inspect tests/fixtures/elf/s390x-pgste.elf --json --emit-trace t.msgpack
    """
    console = Console(highlight=False, soft_wrap=True)
    failed = False
    for i, f in enumerate(files):
        try:
            r = inspect_file(f, allocate_pgste)
        except ElfError as exc:
            if not json_out:
                raise
            print_json({"path": str(f), "error": exc.what})
            failed = True
            continue
        if json_out:
            print_json(r.to_json())
        else:
            console.print(f"{r.path}: ELF{r.elfclass} {r.endian}-endian {r.machine_name} ({r.machine}) {r.type}")
            for p in r.phdrs:
                console.print(f"  {p['type_name']:<18} offset {p['offset']:#x} vaddr {p['vaddr']:#x} "
                              f"filesz {p['filesz']:#x} memsz {p['memsz']:#x} flags {p['flags']:#x}")
            console.print(f"  pgste_requested={r.pgste_requested} alloc_pgste={r.alloc_pgste} "
                          f"exec_restarts={r.exec_restarts}")
            console.print(f"  {r.reason}")
        if emit_trace and i == 0:
            if r.machine != 22:
                raise ElfError(f, "--emit-trace needs an s390 binary")
            data = Path(f).read_bytes()[: r.header_bytes]
            tracemod.save(exec_trace(data, r, str(f)), emit_trace)
    raise typer.Exit(2 if failed else 0)
