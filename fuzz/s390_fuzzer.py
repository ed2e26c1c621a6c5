#!/usr/bin/env python3
"""libFuzzer-style atheris target for s390, as OSS-Fuzz and ClusterFuzzLite run it (a violation is a crash)."""
import os
import sys

os.environ.setdefault("PTFUZZ_ARCH", "s390")
os.environ.pop("PTFUZZ_INBOX", None)  # under OSS-Fuzz a finding must crash so that the input is kept

from ptfuzz.atheris_target import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv)
