"""ptfuzz kernels: the foreign-arch kernels (and the tools) that `ptfuzz crosscheck --kernel NAME` needs."""
from pathlib import Path

import typer

from ..crosscheck import kernels as K
from ..errors import UsageError
from .app import app
from .common import print_json

kernels_app = typer.Typer(
    name="kernels", no_args_is_help=True, add_completion=False,
    help="""Fetch, list and remove the kernels crosscheck --kernel boots under QEMU (Debian's packages,
    cached per user; nothing is installed).

    Examples:

      ptfuzz kernels list

      ptfuzz kernels fetch arm64-6.1 s390x-6.1

      ptfuzz kernels tools
    """)
app.add_typer(kernels_app, name="kernels")


def _names(names: list[str] | None, all_: bool) -> list[str]:
    if all_:
        return list(K.CATALOG)
    if not names:
        raise UsageError(f"name a kernel ({', '.join(K.CATALOG)}) or give --all")
    for n in names:
        K.spec_of(n)
    return names


@kernels_app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="One JSON object per kernel.")):
    """Every kernel name, whether it is fetched, its exact Debian version, and the tools crosscheck lacks.

    Examples:

      ptfuzz kernels list

      ptfuzz kernels list --json
    """
    rows = K.listing()
    missing = K.missing_tools()
    if json_out:
        for r in rows:
            print_json(r)
        print_json({"cache": str(K.kernels_dir()), "missing_tools": [{"command": c, "package": p} for c, p in missing]})
        return
    print(f"cache: {K.kernels_dir()}")
    for r in rows:
        if r["fetched"]:
            pk = r["packages"][-1]
            print(f"  {r['name']:<16} {r['release']:<26} {pk['package']} {pk['version']} "
                  f"({r['bytes'] / 1e6:.1f} MB)")
        else:
            print(f"  {r['name']:<16} {'not fetched':<26} from {r['suites']}")
    if missing:
        pkgs = " ".join(dict.fromkeys(p for _, p in missing))
        print(f"missing tools: {', '.join(c for c, _ in missing)}: {K.install_hint(pkgs)}")
    else:
        print("tools: QEMU and the cross compilers for arm64 and s390 are installed")


@kernels_app.command()
def fetch(
    names: list[str] = typer.Argument(None, help="Kernel names (ptfuzz kernels list)."),
    all_: bool = typer.Option(False, "--all", help="Every kernel of the catalogue."),
    force: bool = typer.Option(False, "--force", help="Fetch again even when cached (the suite may be newer)."),
):
    """Download NAME's kernel package(s) from Debian's archives into the cache.

    The image, its config and the exact package versions (kernel.json) are kept; a separate apt state
    directory is used, and nothing is installed.

    Examples:

      ptfuzz kernels fetch arm64-6.1 s390x-6.1

      ptfuzz kernels fetch --all
    """
    failed = []
    for name in _names(names, all_):
        try:
            k = K.fetch(name, force=force, log=lambda s: print(f"  {s}"))
        except K.KernelError as exc:
            if not all_:
                raise
            print(f"{name}: {exc}")
            failed.append(name)
            continue
        print(f"{name}: Linux {k.release} ({k.version}) in {k.dir}")
    if failed:
        raise typer.Exit(1)


@kernels_app.command()
def remove(
    names: list[str] = typer.Argument(None, help="Kernel names to remove from the cache."),
    all_: bool = typer.Option(False, "--all", help="Every kernel, the apt state and the built helpers."),
):
    """Delete fetched kernels from the cache.

    Examples:

      ptfuzz kernels remove arm64-7.2

      ptfuzz kernels remove --all
    """
    for name in _names(names, all_):
        print(f"{name}: {'removed' if K.remove(name) else 'not fetched'}")
    if all_:
        import shutil
        if K.remove_apt_state():
            print("apt state: removed")
        helpers = K.kernels_dir() / "helpers"
        if helpers.exists():
            shutil.rmtree(helpers)
            print("built helpers: removed")


@kernels_app.command()
def tools(arch: list[str] = typer.Option(None, "--arch", help="arm64 or s390 (default both).")):
    """Say which tools crosscheck --kernel lacks here, and the command that installs them.

    The tools are QEMU and the cross compilers; exit 1 when any is missing.

    Examples:

      ptfuzz kernels tools

      ptfuzz kernels tools --arch s390
    """
    arches = tuple(arch or ("arm64", "s390"))
    for a in arches:
        if a not in K.QEMU:
            raise UsageError(f"--arch {a}: arm64 or s390")
    missing = K.missing_tools(arches)
    if not missing:
        print("all installed")
        return
    for c, p in missing:
        print(f"missing: {c} (package {p})")
    print(K.install_hint(" ".join(dict.fromkeys(p for _, p in missing))))
    raise typer.Exit(1)


@kernels_app.command()
def show(name: str = typer.Argument(..., help="A fetched kernel's name.")):
    """The cached kernel's record: image path, release, packages with versions and sha256.

    Examples:

      ptfuzz kernels show s390x-6.1
    """
    k = K.load(name)
    doc = (k.dir / "kernel.json").read_text()
    print(doc.rstrip())


__all__ = ["kernels_app", "Path"]
