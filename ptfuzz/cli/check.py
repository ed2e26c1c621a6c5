"""ptfuzz check: exhaustive bounded model checking of every operation sequence up to a depth."""
import shlex
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from .. import releases
from ..search.check import DEFAULTS, CheckVerdict, check as run_check, domains
from ..errors import UsageError
from ..trace import op_text
from .app import app
from .common import KERNEL_VERSION_HELP, check_arch, parse_knobs, preset_knobs, print_json

EXIT = {CheckVerdict.EXHAUSTED: 0, CheckVerdict.VIOLATION: 1, CheckVerdict.TIMEOUT: 3}


@app.command()
def check(arch: str = typer.Option(..., "--arch", help="s390, arm64 or x86_64."),
          knob: list[str] = typer.Option(None, "--knob", help="Design variant: NAME=VALUE (repeatable)."),
          kernel_version: str = typer.Option(None, "--kernel-version", help=KERNEL_VERSION_HELP),
          depth: int = typer.Option(8, "--depth", help="Longest operation sequence to explore (0-64)."),
          pids: int = typer.Option(DEFAULTS["pids"], "--pids", help="Processes in the alphabet (1-8)."),
          cpus: int = typer.Option(DEFAULTS["cpus"], "--cpus", help="CPUs for walkers, rmap and guest faults (0-8)."),
          vms: int = typer.Option(DEFAULTS["vms"], "--vms", help="VMs (0-4)."),
          addrs: int = typer.Option(DEFAULTS["addrs"], "--addrs", help="Address slots: PUD-aligned base, next PMD, "
                                    "next PUD, (s390) 4 TiB."),
          seconds: float = typer.Option(60.0, "--time", help="Stop after this many seconds (exit 3)."),
          json_out: bool = typer.Option(False, "--json", help="One JSON object with the result."),
          corpus: Path = typer.Option(Path("corpus"), "--corpus",
                                      help="A violation goes to CORPUS/regressions/ARCH/KIND-HASH8.msgpack.")):
    """Explore every sequence of at most DEPTH operations, breadth first: the first violation is a shortest one.

    The operations come from a small alphabet, each state is explored once (by the engine's digest), and
    "exhausted" is a bound to quote.

    Exit 0: every sequence explored, no violation. 1: a violation. 2: bad usage.
    3: time ran out first, or Ctrl-C (the bound reached so far is reported).

    Examples:

      ptfuzz check --arch s390

      ptfuzz check --arch arm64 --knob kvm.invalidate_retry=none --depth 7

      ptfuzz check --arch x86_64 --pids 1 --depth 9 --time 600 --json

      ptfuzz check --arch x86_64 --kernel-version 6.14 --pids 1 --depth 7
    """
    check_arch(arch)
    if kernel_version is not None:
        releases.check_version(kernel_version)
    parse_knobs(arch, knob)
    if seconds <= 0:
        raise UsageError(f"--time {seconds:g}: must be positive")
    if not 0 <= depth <= 64:
        raise UsageError(f"--depth {depth}: 0 to 64")
    domains(arch, {}, pids, cpus, vms, addrs)  # bad sizes fail here, before any output
    knobs = preset_knobs(arch, knob, kernel_version)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=True)
    spinner = Spinner("dots", Text("checking..."))
    live = Live(spinner, console=err, refresh_per_second=8, transient=True, redirect_stdout=False,
                redirect_stderr=False) if not json_out and err.is_terminal else None
    logged = [0.0]

    def on_progress(p):
        line = (f"{p.seconds:5.1f}s  depth {min(p.depth + 1, depth)}/{depth}  states {p.generated:,}  "
                f"distinct {p.distinct:,}  {p.rate:,.0f}/s  queue {p.queue:,}")
        if live is not None:
            spinner.update(text=Text(line))
        elif p.seconds - logged[0] >= 10:  # a log (CI, a pipe) gets a line every 10 s instead
            logged[0] = p.seconds
            err.print(f"ptfuzz: {line.strip()}", markup=False)

    if live is not None:
        live.start()
    elif not json_out:
        err.print(f"ptfuzz: checking {arch} to depth {depth} for at most {seconds:g}s, knobs "
                  f"{', '.join(f'{k}={v}' for k, v in knobs.items()) or 'default'}", markup=False)
    try:
        r = run_check(arch, knobs, depth, pids=pids, cpus=cpus, vms=vms, addrs=addrs, seconds=seconds,
                      corpus=corpus, on_progress=on_progress)
    except OSError as exc:
        raise UsageError(f"--corpus {corpus}: cannot write: {exc.strerror or exc}") from None
    finally:
        if live is not None:
            live.stop()
    if json_out:
        print_json({**r.to_json(), **({"kernel_version": releases.check_version(kernel_version)}
                                      if kernel_version else {})})
        raise typer.Exit(EXIT[r.verdict])
    rate = f"{r.states / max(r.seconds, 1e-9):,.0f} states/s"
    alpha = f"{r.alphabet} operations ({pids} pid{'s' * (pids != 1)}, {cpus} cpu{'s' * (cpus != 1)}, " \
            f"{vms} vm{'s' * (vms != 1)}, {addrs} address slot{'s' * (addrs != 1)})"
    if r.verdict is CheckVerdict.VIOLATION:
        v = r.violation
        out.print(f"[red]violation[/] {v.kind} in {r.depth} operation{'s' * (r.depth != 1)}, a shortest "
                  f"counterexample over {alpha}{' (at teardown)' if r.at_teardown else ''}")
        out.print(f"  {v.message}", markup=False)
        for i, row in enumerate(r.trace.ops):
            out.print(f"  [{i}] {op_text(row)}", markup=False)
        if r.path is not None:
            out.print(f"  written to {r.path}", markup=False)
            out.print(f"  replay: ptfuzz replay {shlex.quote(str(r.path))} --steps", markup=False)
    elif r.verdict is CheckVerdict.EXHAUSTED:
        how = " (a fixpoint: longer sequences reach no new state)" if r.fixpoint else ""
        out.print(f"[green]exhausted[/]: no violation in any sequence of <= {r.depth} operations over {alpha} "
                  f"({r.distinct:,} distinct states){how}")
    else:
        why = {"interrupted": "interrupted", "state bound": "the state bound was reached"}.get(r.reason, "time ran out")
        out.print(f"[yellow]timeout[/] ({why}): no violation in any sequence of <= {r.depth} operations over "
                  f"{alpha} ({r.distinct:,} distinct states so far)")
    blocked = f" ({r.blocked:,} of them blocked: an operation waiting for a lock)" if r.blocked else ""
    out.print(f"{r.states:,} states{blocked}, {r.distinct:,} distinct, {r.seconds:.1f}s, {rate}", markup=False)
    raise typer.Exit(EXIT[r.verdict])
