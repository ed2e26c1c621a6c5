"""ptfuzz crosscheck: host operations in the model and for real on the running kernel (or a foreign-arch kernel
under QEMU: --kernel), compared after each one."""
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import trace as tracemod
from ..crosscheck.compare import check_host_trace
from ..crosscheck.run import Side, host_side, run
from ..errors import UsageError
from .app import app
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
    kvm: bool = typer.Option(False, "--kvm", help="Traces with VMs, run for real through /dev/kvm (x86_64), or "
                             "with --kernel NAME through an arm64 guest's own KVM: memslot and guest-fault results "
                             "and what the guest reads are compared."),
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

    With --kvm the traces also hold VMs (vm_create, memslot, guest_fault,
    vm_destroy) and run through /dev/kvm: a guest_fault is a KVM_RUN of a
    tiny guest that loads or stores at the gpa. Compared: every result
    (memslot errnos, guest faults, host operations, VM ioctls after the
    owner's exit) and whether the guest sees what the host maps after host
    changes. Exit 2 when /dev/kvm is absent or unusable. With --kvm
    --kernel NAME (arm64 kernels) the VMs run in the guest's own KVM
    (nested under QEMU's TCG), the KVM helper being the guest's /init.

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

      ptfuzz crosscheck --kvm --gen 1000 --seed 1

      ptfuzz crosscheck --kvm --kernel arm64-7.2 --gen 1000 --seed 1

      ptfuzz crosscheck crosscheck-out/x86_64/ --json

      ptfuzz crosscheck --gen 50 --knob mm.pt_reclaim=no -o /tmp/xc
    """
    if not paths and not gen:
        raise UsageError("nothing to check: give trace files or --gen N")
    loaded = [(str(f), tracemod.load(f)) for f in trace_files(paths or [])]  # validate all before running any
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    guest_mode = kernel is not None or kernel_image is not None
    side = _open_side(kvm, kernel, kernel_image, kernel_arch, guest_timeout, guest_mode, loaded, err)
    try:
        for name, t in loaded:
            if not kvm:
                check_host_trace(t, name, side.facts.arch, side.facts.info.pmd_size,
                                 getattr(side.facts, "hugetlb", "not on this side"))
        knobs = parse_knobs(side.facts.arch, knob)
        err.print(side.describe(), markup=False)
        for note in side.facts.notes:
            err.print(f"  {note}", markup=False)
        checker = side.checker_cls(side.host, side.facts, knobs, out, minimize=not no_minimize)
        r = _run_with_progress(side, checker, loaded, gen, seed, nops, json_out, err)
    finally:
        side.host.close()
    _summarize(side, checker, r, json_out, kvm)
    raise typer.Exit(1 if r.disagreements or r.errors else 0)


def _run_with_progress(side, checker, loaded, gen, seed, nops, json_out, err):
    """run() with a progress bar on a terminal, or a line every 100 traces in a log."""
    progress = Progress(TextColumn("crosscheck"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[bad]}"),
                        TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)
    bad = [0]

    def console():
        return progress.console if progress.live.is_started else err

    def on_outcome(o, done, total):
        bad[0] += not o.agree
        report(o, checker.knobs, json_out, console())
        progress.update(task, completed=done, bad=f"{bad[0]} disagree")
        if not err.is_terminal and not json_out and done % 100 == 0:
            err.print(f"ptfuzz: crosscheck {done}/{total}, {bad[0]} disagree")

    def on_error(name, exc):
        console().print(f"[red]error[/] {name}: {exc}", markup=True, highlight=False)

    with progress:
        task = progress.add_task("", total=len(loaded) + gen, bad="")
        return run(side, checker, loaded, gen, seed, nops, on_outcome, on_error)


def _summarize(side, checker, r, json_out: bool, kvm: bool = False) -> None:
    summary = {"traces": r.checked, "agree": r.agreed, "disagree": len(r.disagreements), "unstable": r.unstable,
               "knobs": checker.knobs, "host": side.describe(), "interrupted": r.interrupted}
    if not kvm:
        summary.update(hugetlb_traces=r.hugetlb, sharing_traces=r.sharing)
    if kvm:
        summary.update(kvm=True, seconds=round(r.elapsed, 1),
                       traces_per_second=round(r.checked / r.elapsed, 2) if r.elapsed > 0 else None,
                       figures={}, guest_accesses=side.facts.guest_path, notes=side.facts.notes)
        for o in r.disagreements:
            f = o.disagreement.figure
            summary["figures"][f] = summary["figures"].get(f, 0) + 1
    if side.guest:
        h = side.host
        summary.update(kernel=h.kernel.name, release=side.facts.release, errors=len(r.errors),
                       error_list=r.errors[:20], boot_seconds=round(h.boot_seconds, 2), seconds=round(r.elapsed, 1),
                       traces_per_second=round(r.checked / r.elapsed, 2) if r.elapsed > 0 else None)
    if json_out:
        print_json(summary)
        return
    line = f"{r.agreed}/{r.checked} traces agree on result, page-table bytes and PMD-mapped blocks"
    if kvm:
        line = (f"{r.agreed}/{r.checked} traces agree on every result and on what the guest sees "
                f"({summary['traces_per_second']} traces/s)")
    if not kvm and r.hugetlb:
        line += f"; {r.hugetlb} map shared hugetlb, {r.sharing} of them showing a shared PMD table"
    if r.unstable:
        line += (f" ({r.unstable} showed a disagreement that a second real run did not repeat, or repeated while the "
                 f"host could not allocate a huge page it asked for)")
    if side.guest:
        h = side.host
        line += (f" on {h.kernel.name} (boot {h.boot_seconds:.1f} s, {summary['traces_per_second']} traces/s"
                 + (f", {len(r.errors)} guest errors" if r.errors else "") + ")")
    print(line + (" (interrupted)" if r.interrupted else ""))


def _open_side(kvm, kernel, kernel_image, kernel_arch, guest_timeout, guest_mode, loaded, err) -> Side:
    """The kernel side: this host, a guest under QEMU, this host's /dev/kvm or an arm64 guest's KVM."""
    if kvm and kernel_image is not None:
        raise UsageError("--kvm runs on this host's /dev/kvm or in a named arm64 guest (--kernel NAME), "
                         "not with --kernel-image")
    if kvm and guest_mode:
        from ..crosscheck.kernels import spec_of
        from ..crosscheck.kvm import check_kvm_trace, open_kvm_guest
        if spec_of(kernel).arch != "arm64":  # before any fetch
            raise UsageError(f"--kvm --kernel runs arm64 kernels; {kernel} is {spec_of(kernel).arch}")
        side = open_kvm_guest(_load_kernel(kernel, err), timeout=guest_timeout)
        try:
            for name, t in loaded:
                check_kvm_trace(t, name, side.facts.arch, side.facts.page)
        except BaseException:
            side.host.close(kill=True)
            raise
    elif kvm:
        from ..crosscheck.kvm import check_kvm_trace, open_kvm
        for name, t in loaded:
            check_kvm_trace(t, name)
        side = open_kvm()
    else:
        side = _open_guest(kernel, kernel_image, kernel_arch, guest_timeout, err) if guest_mode else host_side()
    return side


def _load_kernel(name, err):
    from ..crosscheck.kernels import fetch, load, KernelError
    try:
        return load(name)
    except KernelError:
        err.print(f"ptfuzz: fetching kernel {name} (ptfuzz kernels fetch {name})", markup=False)
        return fetch(name, log=lambda s: err.print(f"  {s}", markup=False))


def _open_guest(name, image, arch, timeout, err):
    from ..crosscheck.crossguest import GuestChecker, describe, open_guest
    from ..crosscheck.kernels import from_image
    if name is not None and image is not None:
        raise UsageError("give --kernel or --kernel-image, not both")
    k = from_image(image, arch) if image is not None else _load_kernel(name, err)
    from ..crosscheck.crossguest import generate_for, reboot
    guest, facts = open_guest(k, timeout=timeout)
    side = Side(guest, facts, GuestChecker, None, generate_for, lambda old: reboot(old, facts))
    side.describe = lambda: describe(facts, side.host)
    return side


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
