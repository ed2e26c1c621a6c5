"""Old import path of ptfuzz.search.fuzzgen, kept only for ptfuzz/crosscheck.py (`from .fuzzgen import Layout,
RandomChoices`), which its owner moves to `from .search.fuzzgen import ...`; remove this module then."""
from .search.fuzzgen import Layout, RandomChoices

__all__ = ["Layout", "RandomChoices"]
