#!/bin/bash -eu
# build.sh: builds the engine with the image's sanitizer and coverage flags, then one fuzzer per arch.
export PTFUZZ_SANITIZE="${SANITIZER_FLAGS_address:+address},fuzzer-no-link"
CC="$CC" CFLAGS="$CFLAGS" pip3 install .
for fuzzer in fuzz/*_fuzzer.py; do
  name=$(basename "$fuzzer" .py)
  compile_python_fuzzer "$fuzzer"
  python3 fuzz/build_seed_corpus.py "$OUT/${name}_seed_corpus.zip" --arch "${name%_fuzzer}" --count 200
done
