# Makefile: every developer and CI entry point; `make` alone lists the targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := pyproject.toml setup.py $(shell find native_ext -name "*.[ch]") $(wildcard ptfuzz/crosscheck/ptfuzz_*.[ch])
ARCH ?= s390
TIME ?= 60

ASAN_ENV = PYTHONPATH=$(CURDIR)/build/asan PTFUZZ_ASAN=1 \
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

.DEFAULT_GOAL := help
.PHONY: help setup run fuzz fuzz-ci test asan check-matrix bench profile corpus figures fixtures clean identity kernel-tools kernels crosscheck-kernels

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

FUZZ_SO_STAMP := build/fuzz/.installed

$(STAMP): $(SOURCES)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# The coverage-instrumented engine for atheris: clang's -fsanitize=fuzzer-no-link, built in build/fuzz and
# installed into the package as ptfuzz/_engine_cov*.so (gitignored), where `ptfuzz fuzz` looks for it: installed
# code never looks into a checkout. Without clang (and no way to install it) fuzzing still works, on
# Python-level coverage, and says so.
$(FUZZ_SO_STAMP): $(SOURCES) | $(STAMP)
	@command -v clang >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get update -qq && apt-get install -y -qq clang >/dev/null; } || true; }
	@if command -v clang >/dev/null; then \
		rm -rf build/fuzz build/fuzz-tmp && mkdir -p build/fuzz && \
		CC=clang LDSHARED="clang -shared" PTFUZZ_SANITIZE=fuzzer-no-link \
		$(BIN)/python setup.py -q build_ext --build-lib build/fuzz --build-temp build/fuzz-tmp 2>/dev/null && \
		rm -f ptfuzz/_engine_cov*.so && for so in build/fuzz/ptfuzz/_engine*.so; do \
			cp "$$so" "ptfuzz/$$(basename "$$so" | sed 's/^_engine/_engine_cov/')"; done && \
		touch $@; \
	else echo "warning: clang not available: atheris will fuzz with Python-level coverage only"; fi

setup: $(STAMP) $(FUZZ_SO_STAMP) ## create .venv, build the engine into it, and the coverage build for atheris

run: setup ## the main job: a fuzz campaign on the default s390 model (TIME=60 ARCH=s390)
	@# findings corpus/regressions holds (M1 on s390 defaults) are reported as on record; a new one fails
	$(BIN)/ptfuzz fuzz --arch $(ARCH) --time $(TIME) --corpus fuzz-out --known corpus/regressions

fuzz: run ## same as run

fuzz-ci: setup ## short campaigns on every arch with default knobs; fails on findings corpus/ lacks (FUZZ_CI_TIME=60)
	@for arch in s390 arm64 x86_64; do \
		$(BIN)/ptfuzz fuzz --arch $$arch --time $${FUZZ_CI_TIME:-60} --corpus fuzz-ci-out --known corpus/regressions \
		|| exit 1; done

test: setup ## run the test suite
	$(BIN)/python -m pytest -q -rs

asan: $(STAMP) ## build the engine with ASan+UBSan and run the whole suite against it
	rm -rf build/asan build/asan-tmp && mkdir -p build/asan
	cp -r ptfuzz build/asan/ && rm -f build/asan/ptfuzz/*.so
	PTFUZZ_SANITIZE=address,undefined $(BIN)/python setup.py -q build_ext --build-lib build/asan --build-temp build/asan-tmp
	cd build/asan && $(ASAN_ENV) ../../$(BIN)/python -c \
		"import ptfuzz._engine as e; assert 'build/asan' in e.__file__, e.__file__"
	cd build/asan && $(ASAN_ENV) ../../$(BIN)/python -m pytest -q -p no:cacheprovider $(CURDIR)/tests

check-matrix: $(STAMP) ## every U1-U15, M1 and safe control in every check mode (--por or not, jobs, shards; ~40 min)
	PTFUZZ_CHECK_MATRIX=full $(BIN)/python -m pytest -q -rs tests/test_check_matrix.py

bench: $(STAMP) ## the docs/bench.md figures B1-B8 into bench/results.json (BENCH_QUICK=1: minutes; BENCH_ONLY=B1,B5)
	$(BIN)/python bench/run.py

BASE ?= HEAD
identity: $(STAMP) ## behaviour unchanged since BASE (default HEAD): corpus, generated traces, check (bench/identity.py)
	rm -rf build/identity-base && git worktree prune && git worktree add -f --detach build/identity-base $(BASE) >/dev/null
	cd build/identity-base && ../../$(BIN)/python setup.py -q build_ext --inplace 2>/dev/null
	cd build/identity-base && IDENTITY_ROOT=. PYTHONPATH=. ../../$(BIN)/python ../../bench/identity.py record ../identity-base.jsonl
	$(BIN)/python bench/identity.py record build/identity-work.jsonl
	git worktree remove --force build/identity-base
	$(BIN)/python bench/identity.py compare build/identity-base.jsonl build/identity-work.jsonl

profile: $(STAMP) ## where the engine's nanoseconds per operation go, per arch (callgrind; bench/README.md)
	$(BIN)/python bench/profile.py

corpus: $(STAMP) ## rewrite corpus/*.msgpack from corpus/make_corpus.py
	$(BIN)/python corpus/make_corpus.py

figures: $(STAMP) ## redraw docs/m1.svg, the README's picture of M1, with ptfuzz show
	$(BIN)/ptfuzz show corpus/regressions/s390/gmap-dangling-m1.msgpack -o docs/m1.svg

fixtures: ## rebuild the ELF test fixtures (needs binutils-s390x-linux-gnu)
	tests/fixtures/elf/make.sh

# crosscheck --kernel: QEMU and cross compilers from Debian's packages (root), kernels into ~/.cache/ptfuzz/kernels
# (docs/kernels.md). Not part of `make test`: its guest tests skip, saying why, when these are absent.
KERNELS ?= arm64-6.1 arm64-6.12 arm64-7.2 arm64-7.2-16k s390x-6.1 s390x-6.12 s390x-7.2
XC_GEN ?= 1000
KERNEL_TOOLS = qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-s390x-linux-gnu libc6-dev-s390x-cross

kernel-tools: ## install QEMU for aarch64 and s390x and the cross compilers crosscheck --kernel needs (apt, root)
	@if command -v qemu-system-aarch64 >/dev/null && command -v qemu-system-s390x >/dev/null && \
		command -v aarch64-linux-gnu-gcc >/dev/null && command -v s390x-linux-gnu-gcc >/dev/null; then \
		echo "kernel-tools: installed"; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "kernel-tools: needs root and apt-get: apt-get install $(KERNEL_TOOLS) qemu-system-misc" >&2; exit 1; \
	else \
		apt-get update -qq && s390=qemu-system-misc && \
		{ apt-cache show qemu-system-s390x >/dev/null 2>&1 && s390=qemu-system-s390x; true; } && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(KERNEL_TOOLS) $$s390 >/dev/null; \
	fi

kernels: setup kernel-tools ## fetch the kernels crosscheck --kernel boots (KERNELS="arm64-6.1 ...")
	$(BIN)/ptfuzz kernels fetch $(KERNELS)

crosscheck-kernels: kernels ## crosscheck --gen XC_GEN --seed 1 against each of KERNELS under QEMU, one at a time
	@for k in $(KERNELS); do nice -n 10 $(BIN)/ptfuzz crosscheck --kernel $$k --gen $(XC_GEN) --seed 1 \
		-o crosscheck-out/$$k || exit 1; done

clean: ## remove build products (keeps .venv)
	rm -rf build *.egg-info ptfuzz/*.so .pytest_cache fuzz-out fuzz-ci-out
include mk/pyinstaller.mk
