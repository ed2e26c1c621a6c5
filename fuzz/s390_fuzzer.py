#!/usr/bin/env python3
"""libFuzzer-style atheris target for s390, as OSS-Fuzz and ClusterFuzzLite run it (a violation is a crash)."""
import sys

from target_env import prepare

prepare("s390")

from ptfuzz.search.atheris_target import main  # noqa: E402  (after prepare: it reads the environment at import)

if __name__ == "__main__":
    main(sys.argv)
