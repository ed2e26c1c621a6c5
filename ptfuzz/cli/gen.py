"""ptfuzz gen: write a random, realistic workload trace."""
from pathlib import Path

import typer

from .. import trace as tracemod
from ..search.gen import generate
from .app import app
from .common import check_arch


@app.command()
def gen(arch: str = typer.Option(..., "--arch", help="s390, arm64 or x86_64."),
        ops: int = typer.Option(..., "--ops", min=0, help="Number of operations."),
        seed: int = typer.Option(0, "--seed", help="Same seed, same file."),
        packed: bool = typer.Option(False, "--packed", help="Packed operation form."),
        output: Path = typer.Option(..., "-o", "--output", help="The trace file to write.")):
    """Write a workload trace for benchmarks and demos (processes, mappings, THP, VMs, walkers).

    Example: ptfuzz gen --arch s390 --ops 100000 --seed 1 --packed -o w.msgpack
    """
    check_arch(arch)
    tracemod.save(generate(arch, ops, seed), output, packed=packed)
