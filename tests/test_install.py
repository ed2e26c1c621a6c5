"""The package as a user installs it: a non-editable install into a fresh venv works from inside a checkout,
and every process ptfuzz starts imports the installed package, not the source tree beside it."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.environ.get("PTFUZZ_ASAN") == "1",
                                reason="make asan: the installed package would load the plain engine")


def source_files() -> list[str]:
    """What a clone holds: the tracked files (and new ones not yet committed), no build products."""
    r = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout: cannot tell sources from build products")
    return [f for f in r.stdout.splitlines() if (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A copy of the checkout, a wheel built from it, and a fresh venv with only that wheel installed.

    The venv reaches the dependencies (typer, atheris, ...) through a .pth line naming this venv's
    site-packages, which adds the directory but does not run its .pth files, so the editable ptfuzz
    installed here stays invisible there."""
    base = tmp_path_factory.mktemp("install")
    clone = base / "clone"
    for f in source_files():
        (clone / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, clone / f)
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(clone)], check=True, capture_output=True, timeout=600)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "ptfuzz-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    *map(str, wheels.glob("ptfuzz-*.whl"))], check=True, capture_output=True, timeout=300)
    return clone, venv


def test_installed_package_is_used_from_inside_the_checkout(installed):
    clone, venv = installed
    r = subprocess.run([str(venv / "bin" / "python"), "-c", "import ptfuzz, ptfuzz._engine; print(ptfuzz.__file__)"],
                       cwd=venv, capture_output=True, text=True)
    assert r.returncode == 0 and str(venv) in r.stdout, r.stdout + r.stderr


def test_fuzz_workers_import_the_installed_package(installed):
    """The atheris workers are Python children: standing in the checkout (whose ptfuzz/ has no built
    engine) they must still import the installed package and find the counterexample."""
    clone, venv = installed
    r = subprocess.run([str(venv / "bin" / "ptfuzz"), "fuzz", "--arch", "s390", "--knob", "mm.table_free=immediate",
                        "--time", "60", "--corpus", "findings", "--json"], cwd=clone, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 1, r.stdout + r.stderr
    finding = json.loads(r.stdout.splitlines()[0])
    assert finding["kind"] == "uaf-table"
    assert (clone / finding["path"]).is_file()
