#!/bin/bash -eu
# build.sh: the engine with the image's sanitizer and coverage flags, then one packaged fuzzer per arch.
#
# OSS-Fuzz's `compile` puts the sanitizer ($SANITIZER_FLAGS) and -fsanitize=fuzzer-no-link ($COVERAGE_FLAGS)
# in CFLAGS, and setuptools compiles and links the C engine with $CC $CFLAGS: `pip3 install .` alone gives
# ptfuzz._engine libFuzzer's edge counters (and ASan's checks in an address build). PyInstaller then bundles
# that engine; fuzz/target_env.py sees its counters and leaves the generator uninstrumented, as
# `ptfuzz fuzz` does. `make fuzz-package` runs these same steps locally, without Docker.
pip3 install .
for fuzzer in fuzz/*_fuzzer.py; do
  name=$(basename "$fuzzer" .py)
  # a fuzzer never draws a plot: matplotlib (reached through ptfuzz.cli) would be 12 of its 79 MB; the
  # corpus' regressions go in so that known violations (M1 on s390 defaults) are not reported as crashes
  compile_python_fuzzer "$fuzzer" --exclude-module matplotlib --add-data corpus/regressions:corpus/regressions
  python3 fuzz/build_seed_corpus.py "$OUT/${name}_seed_corpus.zip" --arch "${name%_fuzzer}" --count 200
  # the options `ptfuzz fuzz` gives its workers: inputs are decision streams, longer ones are longer traces
  printf '[libfuzzer]\nmax_len = 2048\nlen_control = 0\n' > "$OUT/${name}.options"
done
