# Makefile: every developer and CI entry point; `make` alone lists the targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := pyproject.toml setup.py $(wildcard native_ext/*.c native_ext/*.h)
ARCH ?= s390
TIME ?= 60

ASAN_ENV = PYTHONPATH=$(CURDIR)/build/asan \
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

.DEFAULT_GOAL := help
.PHONY: help setup run fuzz test asan bench corpus fixtures clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): $(SOURCES)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: $(STAMP) ## create .venv and build the engine into it (pip install -e .)

run: $(STAMP) ## the main job: a fuzz campaign on the default s390 model (TIME=60 ARCH=s390)
	$(BIN)/ptfuzz fuzz --arch $(ARCH) --time $(TIME) --corpus fuzz-out

fuzz: run ## same as run

test: $(STAMP) ## run the test suite
	$(BIN)/python -m pytest -q

asan: $(STAMP) ## build the engine with ASan+UBSan and run the whole suite against it
	rm -rf build/asan build/asan-tmp && mkdir -p build/asan
	cp -r ptfuzz build/asan/ && rm -f build/asan/ptfuzz/*.so
	PTFUZZ_SANITIZE=address,undefined $(BIN)/python setup.py -q build_ext --build-lib build/asan --build-temp build/asan-tmp
	cd build/asan && $(ASAN_ENV) ../../$(BIN)/python -c \
		"import ptfuzz._engine as e; assert 'build/asan' in e.__file__, e.__file__"
	cd build/asan && $(ASAN_ENV) ../../$(BIN)/python -m pytest -q -p no:cacheprovider $(CURDIR)/tests

bench: $(STAMP) ## run the benchmarks (BENCH.md) and write bench/results.json
	$(BIN)/python bench/run.py

corpus: $(STAMP) ## rewrite corpus/*.msgpack from corpus/make_corpus.py
	$(BIN)/python corpus/make_corpus.py

fixtures: ## rebuild the ELF test fixtures (needs binutils-s390x-linux-gnu)
	tests/fixtures/elf/make.sh

clean: ## remove build products (keeps .venv)
	rm -rf build *.egg-info ptfuzz/*.so .pytest_cache fuzz-out
