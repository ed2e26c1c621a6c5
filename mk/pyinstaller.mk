# mk/pyinstaller.mk: the OSS-Fuzz / ClusterFuzzLite build path without Docker; the Makefile includes it
# (`include mk/pyinstaller.mk`) and defines BIN, STAMP and the setup target used here.
PYINSTALLER_OUT ?= build/pyinstaller/out
FUZZ_PACKAGE_RUNS ?= 5000

.PHONY: fuzz-package

# Installs PyInstaller when missing (pyproject.toml's `package` extra), then fuzz/package.py packages each
# fuzz/*_fuzzer.py as compile_python_fuzzer does, with the coverage build of the engine from setup, and
# runs every packaged fuzzer: FUZZ_PACKAGE_RUNS executions from seeds, then one crashing input.
fuzz-package: setup ## package fuzz/*_fuzzer.py with PyInstaller as OSS-Fuzz does and run each (FUZZ_PACKAGE_RUNS=5000)
	@$(BIN)/python -c 'import PyInstaller' 2>/dev/null || $(BIN)/pip install -q 'pyinstaller>=6'
	$(BIN)/python fuzz/package.py fuzz/*_fuzzer.py --out $(PYINSTALLER_OUT) --work build/pyinstaller/work \
		--runs $(FUZZ_PACKAGE_RUNS)
