"""build_seed_corpus.py: writes libFuzzer seed inputs (recorded decision streams) to a directory or a zip.

    python fuzz/build_seed_corpus.py s390_fuzzer_seed_corpus.zip --arch s390 --count 200
"""
import argparse
import sys
import zipfile
from pathlib import Path

try:
    from ptfuzz.search.fuzzgen import seed_inputs
except ImportError:
    # A checkout whose ptfuzz is not installed. Not first on the path: under OSS-Fuzz the source tree
    # has no built engine, and would shadow the package that `pip3 install .` built.
    sys.path.append(str(Path(__file__).resolve().parent.parent))
    from ptfuzz.search.fuzzgen import seed_inputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="a directory, or a .zip file")
    ap.add_argument("--arch", default="s390", choices=["s390", "arm64", "x86_64"])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--max-ops", type=int, default=32)
    a = ap.parse_args()
    seeds = list(seed_inputs(a.arch, a.count, a.max_ops))
    if a.out.suffix == ".zip":
        with zipfile.ZipFile(a.out, "w") as z:
            for i, data in enumerate(seeds):
                z.writestr(f"seed-{i:04d}", data)
    else:
        a.out.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(seeds):
            (a.out / f"seed-{i:04d}").write_bytes(data)
    print(f"{len(seeds)} seeds for {a.arch} written to {a.out}")


if __name__ == "__main__":
    main()
