"""ptfuzz: replay and fuzz operation traces against a model of Linux page-table management."""
import importlib.util
import os
import sys

__version__ = "0.1.0"

# numpy's OpenBLAS starts a thread per core that spins while idle, taking CPU from the engine on a small
# machine; ptfuzz does no linear algebra. Only a default: the environment's own setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# PTFUZZ_ENGINE_SO selects another build of the C engine (coverage-instrumented for atheris workers).
_so = os.environ.get("PTFUZZ_ENGINE_SO")
if _so and "ptfuzz._engine" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("ptfuzz._engine", _so)
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    sys.modules["ptfuzz._engine"] = _module
