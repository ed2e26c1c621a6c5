"""What each fuzz/*_fuzzer.py sets up before it hands over to ptfuzz.atheris_target, under OSS-Fuzz or run directly."""
import importlib.util
import os
from pathlib import Path

# The symbol a -fsanitize=fuzzer-no-link object calls to register its edge counters with libFuzzer.
COUNTERS_SYMBOL = b"__sanitizer_cov_8bit_counters_init"


def engine_has_counters() -> bool:
    """Whether the C engine this process will load (PTFUZZ_ENGINE_SO, or the package's own, as inside a
    PyInstaller bundle) was built with libFuzzer's coverage counters."""
    import ptfuzz  # noqa: F401  (first: it loads PTFUZZ_ENGINE_SO, which find_spec must then see)
    spec = importlib.util.find_spec("ptfuzz._engine")
    origin = spec.origin if spec is not None else None
    return bool(origin) and os.path.isfile(origin) and COUNTERS_SYMBOL in Path(origin).read_bytes()


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
    # With the engine's own edge counters (OSS-Fuzz builds it with its coverage flags), the generator is
    # left uninstrumented as in `ptfuzz fuzz`: Python tracing costs more than half the executions, and
    # atheris cannot instrument the modules of a PyInstaller bundle anyway (they have no source loader).
    if engine_has_counters():
        os.environ.setdefault("PTFUZZ_PY_COVERAGE", "0")
