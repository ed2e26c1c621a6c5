"""setup.py: builds the C engine in native_ext/ as ptfuzz._engine (the rest lives in pyproject.toml)."""
import glob
import os

from setuptools import Extension, setup

sanitize = os.environ.get("PTFUZZ_SANITIZE", "")
extra_compile = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
extra_link = []
if sanitize:
    # make asan: ASan + UBSan, aborting on the first report; the fuzzing build keeps -O2
    opt = "-O2" if sanitize == "fuzzer-no-link" else "-O1"
    flags = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all", opt, "-g"]
    extra_compile += flags
    extra_link += flags

setup(
    ext_modules=[
        Extension(
            "ptfuzz._engine",
            sources=sorted(glob.glob("native_ext/*.c")),
            depends=glob.glob("native_ext/*.h"),
            extra_compile_args=extra_compile,
            extra_link_args=extra_link,
        )
    ]
)
