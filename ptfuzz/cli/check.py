"""ptfuzz check: exhaustive bounded model checking of every operation sequence up to a depth."""
import os
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
def check(arch: str = typer.Option(None, "--arch", help="s390, arm64 or x86_64 (required unless --merge)."),
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
                                      help="A violation goes to CORPUS/regressions/ARCH/KIND-HASH8.msgpack."),
          jobs: int = typer.Option(None, "--jobs", "-j", help="Worker processes (default: every core this process "
                                   "may run on); the states and seen digests are partitioned among them."),
          por: bool = typer.Option(True, "--por/--no-por", help="Partial-order reduction: skip the second order "
                                   "of independent operations (docs/check.md; same verdicts, lengths, states)."),
          shard: str = typer.Option(None, "--shard", help="I/N: search only shard I of N (0 <= I < N), split by the "
                                    "first operations; writes SHARD_DIR/shard-I-of-N.json for --merge."),
          shard_dir: Path = typer.Option(Path("check-shards"), "--shard-dir",
                                         help="Where --shard writes its result file (atomically)."),
          merge: Path = typer.Option(None, "--merge", help="Merge the shard result files in DIR: the bound every "
                                     "shard proved and the shortest counterexample found.")):
    """Explore every sequence of at most DEPTH operations, breadth first: the first violation is a shortest one.

    The operations come from a small alphabet, each state is explored once (by the engine's digest), and
    "exhausted" is a bound to quote.

    Exit 0: every sequence explored, no violation. 1: a violation. 2: bad usage.
    3: time ran out first, or Ctrl-C (the bound reached so far is reported). --merge: 0 every shard
    exhausted the depth, 1 a violation, 3 a shard stopped short or is missing.

    Examples:

      ptfuzz check --arch s390

      ptfuzz check --arch arm64 --knob kvm.invalidate_retry=none --depth 7

      ptfuzz check --arch x86_64 --pids 1 --depth 9 --time 600 --json

      ptfuzz check --arch x86_64 --kernel-version 6.14 --pids 1 --depth 7

      ptfuzz check --arch x86_64 --pids 1 --depth 7 --jobs 1 --no-por  (the one-process search)

      ptfuzz check --arch s390 --depth 9 --shard 0/4 --shard-dir out  (one of 4 CI jobs)

      ptfuzz check --merge out
    """
    if merge is not None:
        from ..search.shards import merge_dir
        raise typer.Exit(merge_dir(merge, Console(highlight=False, soft_wrap=True)))
    jobs, shard_t = _usage(arch, knob, kernel_version, depth, pids, cpus, vms, addrs, seconds, jobs, shard)
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
                      corpus=corpus, on_progress=on_progress, jobs=jobs, por=por, shard=shard_t)
        if shard_t is not None:
            from ..search.shards import write_result
            shard_file = write_result(shard_dir, r, {"pids": pids, "cpus": cpus, "vms": vms, "addrs": addrs})
    except OSError as exc:
        where = f"--corpus {corpus}" if shard_t is None else f"--corpus {corpus} or --shard-dir {shard_dir}"
        raise UsageError(f"{where}: cannot write: {exc.strerror or exc}") from None
    finally:
        if live is not None:
            live.stop()
    if json_out:
        print_json({**r.to_json(), **({"shard_file": str(shard_file)} if shard_t is not None else {}),
                    **({"kernel_version": releases.check_version(kernel_version)}
                                      if kernel_version else {})})
        raise typer.Exit(EXIT[r.verdict])
    _print_result(out, r, pids, cpus, vms, addrs, shard_t, shard_file if shard_t is not None else None)
    raise typer.Exit(EXIT[r.verdict])


def _usage(arch, knob, kernel_version, depth, pids, cpus, vms, addrs, seconds, jobs, shard):
    """Every usage check, before any output: (jobs, shard as (i, n) or None)."""
    if arch is None:
        raise UsageError("--arch: required (s390, arm64 or x86_64), unless --merge DIR")
    check_arch(arch)
    if jobs is None:
        jobs = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if not 1 <= jobs <= 256:
        raise UsageError(f"--jobs {jobs}: 1 to 256")
    shard_t = None
    if shard is not None:
        from ..search.shards import parse_shard
        shard_t = parse_shard(shard)
    if kernel_version is not None:
        releases.check_version(kernel_version)
    parse_knobs(arch, knob)
    if seconds <= 0:
        raise UsageError(f"--time {seconds:g}: must be positive")
    if not 0 <= depth <= 64:
        raise UsageError(f"--depth {depth}: 0 to 64")
    domains(arch, {}, pids, cpus, vms, addrs)  # bad sizes fail here
    return jobs, shard_t


def _print_result(out, r, pids, cpus, vms, addrs, shard_t, shard_file):
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
    par = f", {r.jobs} jobs" if r.jobs > 1 else ""
    pruned = f", {r.pruned:,} pruned by --por" if r.por else ""
    out.print(f"{r.states:,} states{blocked}, {r.distinct:,} distinct{pruned}, {r.seconds:.1f}s, {rate}{par}",
              markup=False)
    if shard_t is not None:
        split = f"split at depth {r.split_depth}" if r.split_depth is not None else "never split (a small search)"
        out.print(f"shard {shard_t[0]}/{shard_t[1]} ({split}): result in {shard_file}", markup=False)
