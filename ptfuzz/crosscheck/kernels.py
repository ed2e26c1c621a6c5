"""Foreign-arch kernels for `ptfuzz crosscheck --kernel NAME`: fetched from Debian's archives by package name into a
per-user cache, with a separate apt state directory so that the system's apt sources and status stay untouched.

A kernel NAME is ARCH-RELEASE[-FLAVOR]: the Debian suite(s) that carry that release and the flavour of
`linux-image-FLAVOR` (a meta package) are in CATALOG. fetch follows the meta package's Depends down to the package
that holds /boot/vmlinuz-*, downloads that chain with `apt-get download`, extracts the image and its config with
`dpkg-deb -x` and records every package's exact version and sha256 in kernel.json. Nothing is installed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PtfuzzError
from .host import cache_dir

DEBIAN = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class KernelError(PtfuzzError):
    """A kernel cannot be fetched, found or booted, or a tool it needs is missing."""


@dataclass(frozen=True)
class Suite:
    uri: str
    name: str


@dataclass(frozen=True)
class KernelSpec:
    name: str
    arch: str             # ptfuzz's arch name: arm64, s390
    deb_arch: str         # Debian's: arm64, s390x
    release: str          # the upstream major.minor the suite must carry
    flavor: str           # linux-image-FLAVOR is the meta package
    suites: tuple[Suite, ...]
    note: str = ""

    @property
    def meta(self) -> str:
        return f"linux-image-{self.flavor}"


def _spec(name, arch, deb_arch, release, flavor, *suites, note=""):
    return KernelSpec(name, arch, deb_arch, release, flavor, tuple(Suite(u, s) for u, s in suites), note)


BOOKWORM = ((DEBIAN, "bookworm"), (DEBIAN_SECURITY, "bookworm-security"))
TRIXIE = ((DEBIAN, "trixie"), (DEBIAN_SECURITY, "trixie-security"))
SID = ((DEBIAN, "sid"),)
CATALOG: dict[str, KernelSpec] = {s.name: s for s in [
    _spec("arm64-6.1", "arm64", "arm64", "6.1", "arm64", *BOOKWORM),
    _spec("arm64-6.12", "arm64", "arm64", "6.12", "arm64", *TRIXIE),
    _spec("arm64-6.12-16k", "arm64", "arm64", "6.12", "arm64-16k", *TRIXIE),
    _spec("arm64-7.2", "arm64", "arm64", "7.2", "arm64", *SID),
    _spec("arm64-7.2-16k", "arm64", "arm64", "7.2", "arm64-16k", *SID),
    _spec("s390x-6.1", "s390", "s390x", "6.1", "s390x", *BOOKWORM),
    _spec("s390x-6.12", "s390", "s390x", "6.12", "s390x", (DEBIAN, "bookworm-backports"),
          note="trixie's s390x kernel files were not served when this was written: bookworm-backports"),
    _spec("s390x-7.2", "s390", "s390x", "7.2", "s390x", *SID),
]}

# ---- tools ----

# What each arch needs on the machine that runs crosscheck: (command, Debian package).
QEMU = {"arm64": ("qemu-system-aarch64", "qemu-system-arm"), "s390": ("qemu-system-s390x", "qemu-system-misc")}
CROSS_CC = {"arm64": ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu libc6-dev-arm64-cross"),
            "s390": ("s390x-linux-gnu-gcc", "gcc-s390x-linux-gnu libc6-dev-s390x-cross")}
NATIVE = {"arm64": "aarch64", "s390": "s390x"}
FETCH_TOOLS = (("apt-get", "apt"), ("dpkg-deb", "dpkg"))


def install_hint(packages: str) -> str:
    return f"apt-get install -y {packages}  (or: make kernel-tools)"


def qemu_binary(arch: str) -> str:
    """The QEMU system emulator for arch, or KernelError naming the package that provides it."""
    cmd, pkg = QEMU[arch]
    found = shutil.which(cmd)
    if not found:
        raise KernelError(f"{cmd} is not installed: {install_hint(pkg)}")
    return found


def cross_cc(arch: str) -> list[str]:
    """The C compiler that builds static binaries for arch: the native cc on such a machine, else the cross gcc."""
    import platform
    env = os.environ.get(f"PTFUZZ_CC_{arch.upper()}")
    if env:
        return env.split()
    if platform.machine() == NATIVE[arch]:
        return [os.environ.get("CC") or "cc"]
    cmd, pkg = CROSS_CC[arch]
    if not shutil.which(cmd):
        raise KernelError(f"{cmd} (a cross compiler for {arch}) is not installed: {install_hint(pkg)}")
    return [cmd]


def missing_tools(arches=("arm64", "s390")) -> list[tuple[str, str]]:
    """(command, package) for each tool crosscheck --kernel needs that this machine lacks."""
    out = []
    for arch in arches:
        for cmd, pkg in (QEMU[arch], CROSS_CC[arch]):
            if arch == "arm64" and cmd.endswith("gcc") and os.uname().machine == "aarch64":
                continue
            if not shutil.which(cmd):
                out.append((cmd, pkg))
    for cmd, pkg in FETCH_TOOLS:
        if not shutil.which(cmd):
            out.append((cmd, pkg))
    return out


# ---- the cache ----

def kernels_dir() -> Path:
    return Path(os.environ.get("PTFUZZ_KERNELS") or cache_dir() / "kernels")


@dataclass
class Kernel:
    """A fetched (or user-given) kernel: the image QEMU boots and what it is."""
    name: str
    arch: str
    image: Path
    release: str = ""     # uname -r as Debian names it, e.g. 6.1.0-50-arm64
    version: str = ""     # the Debian package version, e.g. 6.1.176-1
    packages: list = field(default_factory=list)
    config: Path | None = None

    @property
    def dir(self) -> Path:
        return self.image.parent

    def config_value(self, key: str) -> str | None:
        if not self.config or not self.config.is_file():
            return None
        m = re.search(rf"^{re.escape(key)}=(.*)$", self.config.read_text(errors="replace"), re.M)
        return m.group(1).strip('"') if m else None


def spec_of(name: str) -> KernelSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise KernelError(f"unknown kernel {name!r}: one of {', '.join(CATALOG)} "
                          f"(or a kernel image of your own: --kernel-image PATH)") from None


def load(name: str) -> Kernel:
    """A fetched kernel, or KernelError saying how to fetch it."""
    spec = spec_of(name)
    d = kernels_dir() / name
    meta = d / "kernel.json"
    if not meta.is_file():
        raise KernelError(f"kernel {name} is not fetched: ptfuzz kernels fetch {name}")
    doc = json.loads(meta.read_text())
    image = d / doc["image"]
    if not image.is_file():
        raise KernelError(f"kernel {name}: {image} is missing: ptfuzz kernels fetch --force {name}")
    return Kernel(name, spec.arch, image, doc.get("release", ""), doc.get("version", ""), doc.get("packages", []),
                  d / doc["config"] if doc.get("config") else None)


def first_bootable(names) -> tuple[Kernel | None, str | None]:
    """The first of names that is fetched and has its QEMU and cross compiler here (tests that boot one), else None
    and why the last one is not."""
    why = "no kernel named"
    for name in names:
        try:
            k = load(name)
            qemu_binary(k.arch)
            cross_cc(k.arch)
            return k, None
        except KernelError as exc:
            why = str(exc)
    return None, why


def from_image(path: Path, arch: str | None) -> Kernel:
    """A user's own kernel image (arm64 Image, or an s390 bzImage-like image); arch from --kernel-arch or its bytes."""
    path = Path(path)
    if not path.is_file():
        raise KernelError(f"--kernel-image {path}: no such file")
    if arch is None:
        arch = guess_arch(path)
        if arch is None:
            raise KernelError(f"--kernel-image {path}: cannot tell its arch: give --kernel-arch arm64|s390")
    if arch not in QEMU:
        raise KernelError(f"--kernel-arch {arch}: crosscheck boots arm64 or s390 kernels")
    config = next(iter(sorted(path.parent.glob("config-*"))), None)
    return Kernel(f"image:{path.name}", arch, path.resolve(), config=config)


def guess_arch(path: Path) -> str | None:
    import gzip
    head = path.open("rb").read(1 << 16)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path) as f:
                head = f.read(1 << 16)
        except OSError:
            return None
    if head[0x38:0x3c] == b"ARM\x64":
        return "arm64"
    if b"S390EP" in head or head[:4] == b"\x00\x08\x00\x00":  # s390 image: IPL PSW at 0
        return "s390"
    return None


def listing() -> list[dict]:
    """Every catalogue name (fetched or not) and every other directory in the cache."""
    root = kernels_dir()
    rows = []
    for name, spec in CATALOG.items():
        row = {"name": name, "arch": spec.arch, "suites": " ".join(s.name for s in spec.suites), "fetched": False}
        meta = root / name / "kernel.json"
        if meta.is_file():
            doc = json.loads(meta.read_text())
            size = sum(f.stat().st_size for f in (root / name).rglob("*") if f.is_file())
            row.update(fetched=True, release=doc.get("release"), version=doc.get("version"), bytes=size,
                       packages=doc.get("packages"), path=str(root / name / doc["image"]))
        rows.append(row)
    return rows


def remove(name: str) -> bool:
    spec_of(name)
    d = kernels_dir() / name
    if not d.exists():
        return False
    shutil.rmtree(d)
    return True


def remove_apt_state() -> bool:
    d = kernels_dir() / "apt"
    if not d.exists():
        return False
    shutil.rmtree(d)
    return True


# ---- apt, with a state directory of its own ----

class Apt:
    """apt-get and apt-cache on one set of suites for one Debian arch, all state under `root`."""

    def __init__(self, root: Path, deb_arch: str, suites: tuple[Suite, ...]):
        self.root, self.deb_arch, self.suites = root, deb_arch, suites
        for sub in ("etc/apt.conf.d", "etc/preferences.d", "etc/sources.list.d", "etc/trusted.gpg.d",
                    "state/lists/partial", "cache/archives/partial"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "state/status").touch()
        keyring = KEYRING if os.path.isfile(KEYRING) else None
        signed = f" [signed-by={keyring}]" if keyring else ""
        (root / "etc/sources.list").write_text(
            "".join(f"deb{signed} {s.uri} {s.name} main\n" for s in suites))
        r = root.as_posix()
        (root / "apt.conf").write_text("\n".join([
            f'Dir::Etc "{r}/etc";', f'Dir::Etc::Parts "{r}/etc/apt.conf.d";',
            f'Dir::Etc::sourcelist "{r}/etc/sources.list";', f'Dir::Etc::sourceparts "{r}/etc/sources.list.d";',
            f'Dir::Etc::preferencesparts "{r}/etc/preferences.d";', 'Dir::Etc::trustedparts "/etc/apt/trusted.gpg.d";',
            f'Dir::State "{r}/state";', f'Dir::State::status "{r}/state/status";', f'Dir::Cache "{r}/cache";',
            f'APT::Architecture "{deb_arch}";', f'APT::Architectures {{ "{deb_arch}"; }};',
            'Acquire::Languages "none";', 'Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";',
            # sid's Release may be past its Valid-Until on a mirror that froze it; the signature is still checked
            'Acquire::Check-Valid-Until "false";', 'APT::Sandbox::User "root";', ""]))

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 900) -> str:
        env = {**os.environ, "APT_CONFIG": str(self.root / "apt.conf"), "LC_ALL": "C"}
        try:
            r = subprocess.run(list(args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise KernelError(f"{args[0]} is not installed: ptfuzz kernels needs Debian's apt and dpkg") from None
        except subprocess.TimeoutExpired:
            raise KernelError(f"{' '.join(args[:2])} took more than {timeout:g} s") from None
        if r.returncode != 0:
            last = [ln for ln in (r.stderr or r.stdout).splitlines() if ln.strip()][-3:]
            raise KernelError(f"{' '.join(args[:3])} failed: {' | '.join(last) or f'exit {r.returncode}'}")
        return r.stdout

    def update(self) -> None:
        self.run("apt-get", "update", "-q")

    def candidate(self, pkg: str) -> str | None:
        out = self.run("apt-cache", "policy", pkg)
        m = re.search(r"Candidate: (\S+)", out)
        return m.group(1) if m and m.group(1) != "(none)" else None

    def depends(self, pkg: str) -> list[str]:
        out = self.run("apt-cache", "depends", "--important", "--no-pre-depends", pkg)
        return [m.group(1) for m in re.finditer(r"^\s+Depends: (\S+)", out, re.M)]


def resolve_chain(apt: Apt, spec: KernelSpec) -> list[tuple[str, str]]:
    """[(package, version)] from the meta package down every linux-image-*/linux-binary-* Depends."""
    out, todo, seen = [], [spec.meta], set()
    while todo:
        pkg = todo.pop(0)
        if pkg in seen:
            continue
        seen.add(pkg)
        version = apt.candidate(pkg)
        if version is None:
            raise KernelError(f"{spec.name}: {pkg} is not in {', '.join(s.name for s in spec.suites)} "
                              f"for {spec.deb_arch}")
        out.append((pkg, version))
        todo += [d for d in apt.depends(pkg) if re.match(r"linux-(image|binary)-\d", d)]
    meta_version = out[0][1]
    if not re.match(rf"{re.escape(spec.release)}\.", meta_version):
        raise KernelError(f"{spec.name}: {spec.meta} in {', '.join(s.name for s in spec.suites)} is {meta_version}, "
                          f"not Linux {spec.release}")
    return out


def fetch(name: str, force: bool = False, log=lambda s: None) -> Kernel:
    """Downloads and unpacks NAME's kernel image into the cache (nothing is installed); returns it."""
    spec = spec_of(name)
    if not force:
        try:
            return load(name)
        except KernelError:
            pass
    for cmd, pkg in FETCH_TOOLS:
        if not shutil.which(cmd):
            raise KernelError(f"{cmd} is not installed: {install_hint(pkg)}")
    root = kernels_dir()
    key = "+".join(s.name for s in spec.suites) + "-" + spec.deb_arch
    apt = Apt(root / "apt" / key, spec.deb_arch, spec.suites)
    t0 = time.monotonic()
    log(f"{name}: apt-get update ({', '.join(s.name for s in spec.suites)}, {spec.deb_arch})")
    apt.update()
    chain = resolve_chain(apt, spec)
    log(f"{name}: " + ", ".join(f"{p} {v}" for p, v in chain))
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        apt.run("apt-get", "download", "-q", *(f"{p}={v}" for p, v in chain), cwd=staging)
        debs = sorted(staging.glob("*.deb"))
        packages, image, config, release = [], None, None, ""
        for (pkg, version) in chain:
            deb = next((d for d in debs if d.name.startswith(f"{pkg}_")), None)
            if deb is None:
                raise KernelError(f"{name}: apt-get download gave no {pkg}_*.deb")
            packages.append({"package": pkg, "version": version, "arch": spec.deb_arch, "file": deb.name,
                             "bytes": deb.stat().st_size, "sha256": hashlib.sha256(deb.read_bytes()).hexdigest()})
            x = staging / "x"
            for f, release_of in _extract_boot(deb, x):
                if f.name.startswith("vmlinu") and image is None:
                    image, release = f, release_of
                elif f.name.startswith("config") and config is None:
                    config = f
        if image is None:
            raise KernelError(f"{name}: no /boot/vmlinu* in {', '.join(p for p, _ in chain)}")
        final = root / name
        tmp = staging / "kernel"
        tmp.mkdir()
        shutil.move(str(image), tmp / "vmlinuz")
        if config:
            shutil.move(str(config), tmp / "config")
        doc = {"name": name, "arch": spec.arch, "deb_arch": spec.deb_arch, "release": release,
               "version": chain[-1][1], "image": "vmlinuz", "config": "config" if config else None,
               "suites": [f"{s.uri} {s.name}" for s in spec.suites], "packages": packages,
               "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "seconds": round(time.monotonic() - t0, 1)}
        (tmp / "kernel.json").write_text(json.dumps(doc, indent=1) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load(name)


def _extract_boot(deb: Path, dest: Path) -> list[tuple[Path, str]]:
    """The kernel image and config of a .deb, with the release they are for: /boot/vmlinuz-RELEASE (up to
    trixie) or /usr/lib/modules/RELEASE/vmlinuz (sid's linux-binary-*). Modules are not extracted: the guest
    boots with none."""
    dest.mkdir(parents=True, exist_ok=True)
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest), "--wildcards", "./boot/vmlinu*", "./boot/config-*",
                    "./usr/lib/modules/*/vmlinu*", "./usr/lib/modules/*/config*"],
                   stdin=tar.stdout, capture_output=True, text=True)  # patterns a package lacks are errors: ignored
    tar.stdout.close()
    tar.wait()
    found = []
    boot = dest / "boot"
    if boot.is_dir():
        found += [(f, f.name.split("-", 1)[1]) for f in sorted(boot.iterdir()) if "-" in f.name]
    mods = dest / "usr/lib/modules"
    if mods.is_dir():
        found += [(f, d.name) for d in sorted(mods.iterdir()) for f in sorted(d.iterdir()) if f.is_file()]
    return found
