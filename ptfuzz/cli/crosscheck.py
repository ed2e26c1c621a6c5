"""ptfuzz crosscheck: host operations in the model and for real on the running kernel (or a foreign-arch kernel
under QEMU: --kernel), compared after each one."""
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import trace as tracemod
from ..crosscheck import Checker, check_host_trace, generate, open_host, seeds
from ..host import HostError
from ..errors import UsageError
from . import app
from .common import parse_knobs, print_json, trace_files


@app.command()
def crosscheck(
    paths: list[Path] = typer.Argument(None, help="Host-only traces (files or directories) to check."),
    gen: int = typer.Option(0, "--gen", min=0, help="Also check N random host-only traces."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated traces."),
    nops: int = typer.Option(24, "--ops", min=1, max=1000, help="Operations per generated trace."),
    knob: list[str] = typer.Option(None, "--knob", help="Override a knob: NAME=VALUE (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per trace, then a summary."),
    out: Path = typer.Option(Path("crosscheck-out"), "-o", "--out", help="Disagreements go to OUT/ARCH/."),
    no_minimize: bool = typer.Option(False, "--no-minimize", help="File disagreements as found."),
    kernel: str = typer.Option(None, "--kernel", help="Check against this kernel under QEMU instead of the running "
                               "one: a name `ptfuzz kernels list` shows (fetched on first use)."),
    kernel_image: Path = typer.Option(None, "--kernel-image", help="Check against a kernel image of your own "
                                      "under QEMU (arm64 Image or s390 image)."),
    kernel_arch: str = typer.Option(None, "--kernel-arch", help="The arch of --kernel-image: arm64 or s390 "
                                    "(else told from the image)."),
    guest_timeout: float = typer.Option(60.0, "--guest-timeout", min=1.0,
                                        help="Seconds a guest may take to answer one trace's requests."),
):
    """Hold the model against the kernel this machine runs.

    Each host operation (exec with elf -1, mmap, shm_mmap, munmap, madvise,
    fault, fork, exit) runs in the model and in real child processes; after
    each one the result, every process's page-table bytes (VmPTE) and its
    PMD-mapped blocks are compared. Kernel behaviour newer than v6.6 that the
    host shows sets the matching knobs (printed first). Disagreements are
    minimized and written to OUT/ARCH/crosscheck-HASH8.msgpack.

    Safe on a user's machine: only the helper's own child processes are
    touched, in a private address window; a trace may make at most 4 GiB
    resident and every request to the helper has a time limit.

    With --kernel NAME (or --kernel-image PATH) the kernel side is a guest
    under QEMU whose /init is the helper, built static for its arch; traces
    are pipelined over the serial console, many per boot, and the probe runs
    in the guest, so each release gets its own knobs. A guest that stops is
    booted again and the run goes on (the trace counts as an error).
    See `ptfuzz kernels` for fetching kernels and the tools they need.

    Exit 0 when every trace agrees, 1 on any disagreement, 2 on bad input or
    on a host it cannot run on.

    Examples:

      ptfuzz crosscheck --gen 1000 --seed 1

      ptfuzz crosscheck --kernel arm64-6.1 --gen 1000 --seed 1

      ptfuzz crosscheck crosscheck-out/x86_64/ --json

      ptfuzz crosscheck --gen 50 --knob mm.pt_reclaim=no -o /tmp/xc
    """
    if not paths and not gen:
        raise UsageError("nothing to check: give trace files or --gen N")
    files = trace_files(paths or [])
    loaded = [(str(f), tracemod.load(f)) for f in files]  # validate everything before running anything
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    guest_mode = kernel is not None or kernel_image is not None
    if guest_mode:
        from ..crossguest import generate_for
        host, facts, checker_cls, describe = _open_guest(kernel, kernel_image, kernel_arch, guest_timeout, err)
    else:
        host, facts = open_host()
        checker_cls, describe = Checker, facts.describe
    t_start = time.monotonic()
    errors = []
    try:
        for name, t in loaded:
            check_host_trace(t, name, facts.arch, facts.info.pmd_size)
        knobs = parse_knobs(facts.arch, knob)
        err.print(describe(), markup=False)
        for note in facts.notes:
            err.print(f"  {note}", markup=False)
        checker = checker_cls(host, facts, knobs, out, minimize=not no_minimize)
        work = [(name, t) for name, t in loaded]
        work += [(f"gen:{seed}:{i}", None) for i in range(gen)]
        per_trace = seeds(seed, gen)
        agreed = unstable = 0
        disagreements = []
        progress = Progress(TextColumn("crosscheck"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[bad]}"),
                            TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)
        interrupted = False
        t_start = time.monotonic()
        with progress:
            task = progress.add_task("", total=len(work), bad="")
            try:
                for n, (name, t) in enumerate(work):
                    if t is None:
                        i = n - len(loaded)
                        t = (generate_for(facts, per_trace[i], nops) if guest_mode else
                             generate(facts.arch, facts.config, per_trace[i], nops))
                    try:
                        o = checker.check(t, name)
                    except HostError as exc:
                        if not guest_mode:
                            raise
                        # the guest stopped or hung: note it, boot a fresh one and go on
                        errors.append({"trace": name, "error": str(exc)})
                        con = progress.console if progress.live.is_started else err
                        con.print(f"[red]error[/] {name}: {exc}", markup=True, highlight=False)
                        host.close(kill=True)
                        host = _reboot(host)
                        checker.use(host)
                        progress.update(task, advance=1)
                        continue
                    agreed += o.agree
                    unstable += o.unstable
                    if not o.agree:
                        disagreements.append(o)
                    report(o, checker.knobs, json_out, progress.console if progress.live.is_started else err)
                    progress.update(task, advance=1, bad=f"{len(disagreements)} disagree")
                    if not err.is_terminal and not json_out and (n + 1) % 100 == 0:
                        err.print(f"ptfuzz: crosscheck {n + 1}/{len(work)}, {len(disagreements)} disagree")
            except KeyboardInterrupt:
                interrupted = True
        elapsed = time.monotonic() - t_start
    finally:
        host.close()
    checked = agreed + len(disagreements)
    summary = {"traces": checked, "agree": agreed, "disagree": len(disagreements), "unstable": unstable,
               "knobs": checker.knobs, "host": describe(), "interrupted": interrupted}
    if guest_mode:
        summary.update(kernel=host.kernel.name, release=facts.release, errors=len(errors), error_list=errors[:20],
                       boot_seconds=round(host.boot_seconds, 2), seconds=round(elapsed, 1),
                       traces_per_second=round(checked / elapsed, 2) if elapsed > 0 else None)
    if json_out:
        print_json(summary)
    else:
        line = f"{agreed}/{checked} traces agree on result, page-table bytes and PMD-mapped blocks"
        if unstable:
            line += f" ({unstable} showed a disagreement that a second real run did not repeat)"
        if guest_mode:
            line += (f" on {host.kernel.name} (boot {host.boot_seconds:.1f} s, {summary['traces_per_second']} "
                     f"traces/s" + (f", {len(errors)} guest errors" if errors else "") + ")")
        print(line + (" (interrupted)" if interrupted else ""))
    raise typer.Exit(1 if disagreements or errors else 0)


def _open_guest(name, image, arch, timeout, err):
    from ..crossguest import GuestChecker, describe, open_guest
    from ..kernels import fetch, from_image, load, KernelError
    if name is not None and image is not None:
        raise UsageError("give --kernel or --kernel-image, not both")
    if image is not None:
        k = from_image(image, arch)
    else:
        try:
            k = load(name)
        except KernelError:
            err.print(f"ptfuzz: fetching kernel {name} (ptfuzz kernels fetch {name})", markup=False)
            k = fetch(name, log=lambda s: err.print(f"  {s}", markup=False))
    guest, facts = open_guest(k, timeout=timeout)
    return guest, facts, GuestChecker, lambda: describe(facts, guest)


def _reboot(old):
    from ..guest import Guest
    return Guest(old.kernel, timeout=old.timeout)


def report(o, knobs, json_out: bool, console) -> None:
    if json_out:
        print_json({"trace": o.name, "ops": len(o.trace.ops), "agree": o.agree,
                    "first_disagreement": o.disagreement.to_doc() if o.disagreement else None,
                    "path": str(o.path) if o.path else None, "minimized_from": o.minimized_from,
                    "unstable": o.unstable, "knobs": knobs})
        return
    if o.agree:
        return
    console.print(f"[red]disagree[/] {o.name}: {o.disagreement.text()}")
    console.print(f"  {len(o.trace.ops)} ops" + (f" (from {o.minimized_from})" if o.minimized_from else "") +
                  f", written to {o.path}", markup=False)
    for i, row in enumerate(o.trace.ops):
        console.print(f"  [{i}] {tracemod.op_text(row)}", markup=False)
