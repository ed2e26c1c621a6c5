"""Reading and writing trace files: load (validated; packed operations optionally streamed from the file),
loads, dumps, save and the atomic write under them."""
import io
import os
import tempfile
from pathlib import Path

import msgpack

from ..errors import TraceError
from ..procs import deferred_interrupts
from .format import Trace, from_map, to_map
from .packed import read as read_file


def trace_error(path, exc: ValueError) -> TraceError:
    """A validation message "where: what" becomes the one-line error naming the file."""
    where, _, what = str(exc).partition(": ")
    if not what:
        where, what = "", where
    return TraceError(path, where, what)


def _read(f, path, stream: bool) -> Trace:
    doc = read_file(f, path)
    try:
        return from_map(doc, stream)
    except ValueError as exc:
        raise trace_error(path, exc) from None


def loads(data: bytes, path="<bytes>") -> Trace:
    return _read(io.BytesIO(data), path, False)


def load(path, stream: bool = False) -> Trace:
    """Read and validate a trace file. stream: a packed trace's operations stay in the file (checked a chunk
    at a time here, run a chunk at a time by the engine): a FileTrace, whose memory does not grow with it."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise TraceError(path, "", exc.strerror or str(exc)) from None
    with f:
        return _read(f, path, stream)


def dumps(trace: Trace, packed: bool | None = None) -> bytes:
    return msgpack.packb(to_map(trace, packed), use_bin_type=True)


def atomic_write(path, data: bytes) -> None:
    """Write to a temporary file beside the target and rename: a reader never sees half a file, and a
    Ctrl-C during the write is held until the file is complete (or the temporary is gone)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with deferred_interrupts():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 is for the temporary, not for the result
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def save(trace: Trace, path, packed: bool | None = None) -> None:
    atomic_write(path, dumps(trace, packed))
