"""What each fuzz/*_fuzzer.py sets up before it hands over to ptfuzz.search.atheris_target, under OSS-Fuzz or run directly."""
import os
from pathlib import Path


def regressions_dir() -> Path:
    """The corpus' regressions: bundled into a PyInstaller package (--add-data), else the checkout's."""
    import sys
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent))
    return base / "corpus" / "regressions"


def prepare(arch: str) -> None:
    os.environ.setdefault("PTFUZZ_ARCH", arch)
    # A violation the corpus already holds (M1 on s390 defaults) is an expected regression, not a crash:
    # CI fuzzing reports only what the corpus lacks, as `make fuzz-ci` does with --known.
    if regressions_dir().is_dir():
        os.environ.setdefault("PTFUZZ_KNOWN", str(regressions_dir()))
    os.environ.pop("PTFUZZ_INBOX", None)  # under OSS-Fuzz a finding must crash so that the input is kept
