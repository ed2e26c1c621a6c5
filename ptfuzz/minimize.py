"""Old import path of ptfuzz.search.minimize, kept only for ptfuzz/crosscheck.py (`from .minimize import shrink`),
which its owner moves to `from .search.minimize import shrink`; remove this module then."""
from .search.minimize import shrink

__all__ = ["shrink"]
