"""Reading a trace file without holding it whole: the top-level map walked in place, its small values decoded by
msgpack, the ops section located (packed: checked a chunk at a time, then copied once or streamed to the
engine; list: decoded by the engine straight into packed rows, no Python list per operation)."""
import io
import os
from dataclasses import dataclass

import msgpack
import numpy as np

from .. import _engine
from ..errors import TraceError
from ..names import OP_WIDTH
from .format import ELF_COLS, OpsSection, check_ops, explain_op, ops_from_list

OP_BYTES = 8 * OP_WIDTH
# One chunk of a file read at a time: about 21,845 packed operations, or some 65,000 list-form ones.
# Not a multiple of 48 on purpose: operations straddle chunk ends in every real run, not only in tests.
CHUNK_BYTES = 1 << 20
# The shortest well-formed list-form operation (["exit", 1]: fixarray, fixstr of 4, fixint) bounds how many
# rows a declared array length can need before its bytes have been seen.
MIN_LIST_OP = 7
_ARRAY = {0xdc: 3, 0xdd: 5}
_BIN = {0xc4: 2, 0xc5: 3, 0xc6: 5}


def _be(b: bytes) -> int:
    return int.from_bytes(b, "big")


@dataclass(frozen=True)
class OpsFile:
    """Where a validated packed section lies: bytes [offset, offset + 48 * nops) of path, as it was when
    validated (identity: device, inode, size, mtime), so that a run never reads a file that changed since."""
    path: str
    offset: int
    nops: int
    identity: tuple

    def open(self):
        """The file, opened again and checked to be the one validated; the caller closes it."""
        try:
            f = open(self.path, "rb")
        except OSError as exc:
            raise TraceError(self.path, "", exc.strerror or str(exc)) from None
        if _identity(f) != self.identity:
            f.close()
            raise TraceError(self.path, "", "changed on disk since it was validated")
        return f

    def map(self) -> np.ndarray:
        """The operations, mapped read-only (pages are read when touched, and are the page cache's)."""
        if not self.nops:
            return np.zeros((0, OP_WIDTH), dtype=np.uint64)
        with self.open() as f:
            return np.memmap(f, dtype="<u8", mode="r", offset=self.offset, shape=(self.nops, OP_WIDTH))


def _identity(f) -> tuple:
    st = os.fstat(f.fileno())
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class _PackedSection(OpsSection):
    packed = True

    def __init__(self, reader, offset: int, length: int):
        self.reader, self.offset, self.length = reader, offset, length

    def read(self, nelfs: int, stream: bool):
        if self.length % OP_BYTES:
            raise ValueError(f"ops_packed: length {self.length} is not a multiple of {OP_BYTES}")
        nops = self.length // OP_BYTES
        r = self.reader
        if not stream or r.identity is None:
            ops = np.empty((nops, OP_WIDTH), dtype="<u8")
            r.readinto(self.offset, memoryview(ops).cast("B"))  # the one copy: file to array
            check_ops(ops, nelfs)
            return ops if ops.dtype == np.uint64 else ops.astype(np.uint64)  # a big-endian host
        # stream: check a chunk at a time, keep nothing
        rows = CHUNK_BYTES // OP_BYTES
        buf = np.empty((rows, OP_WIDTH), dtype="<u8")
        for start in range(0, nops, rows):
            n = min(rows, nops - start)
            r.readinto(self.offset + start * OP_BYTES, memoryview(buf[:n]).cast("B"))
            check_ops(buf[:n], nelfs, base=start)
        return OpsFile(r.path, self.offset, nops, r.identity)


class _ListSection(OpsSection):
    packed = False

    def __init__(self, ops: np.ndarray | None, error: str | None):
        self.ops, self.error = ops, error

    def read(self, nelfs: int, stream: bool):
        if self.error:
            raise ValueError(self.error)
        check_ops(self.ops, nelfs)
        return self.ops


class _Reader:
    """Positioned reads of a file (or of bytes in memory), and msgpack decoding from a position, with every
    error a TraceError that names the byte offset."""

    def __init__(self, f, path, identity):
        self.f, self.path, self.identity = f, str(path), identity
        self.size = f.seek(0, os.SEEK_END)

    def read(self, pos: int, n: int) -> bytes:
        self.f.seek(pos)
        return self.f.read(n)

    def readinto(self, pos: int, view) -> None:
        self.f.seek(pos)
        got = 0
        while got < len(view):
            n = self.f.readinto(view[got:])
            if not n:
                raise TraceError(self.path, "", f"not a msgpack trace (truncated msgpack: the file ends at byte "
                                 f"offset {pos + got}, inside a value that runs to byte offset {pos + len(view)})")
            got += n

    def fail(self, what: str, pos: int):
        raise TraceError(self.path, "", f"not a msgpack trace ({what} at byte offset {pos})")

    def _unpacker(self):
        # every declared length is bounded by the bytes that exist, so nothing is allocated on a lie
        n = max(self.size, 1)
        return msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=n, max_bin_len=n, max_str_len=n,
                                max_array_len=n, max_map_len=n, max_ext_len=n)

    def objects(self, pos: int, count: int, keep: bool):
        """Decode (keep) or skip count msgpack objects from pos: (the objects, the position after them)."""
        u, fed, step, out = self._unpacker(), pos, 1 << 12, []
        while len(out) < count:
            try:
                if keep:
                    out.append(u.unpack())
                else:
                    u.skip()
                    out.append(None)
                continue
            except msgpack.OutOfData:
                data = self.read(fed, step)
                if not data:
                    self.fail("truncated msgpack", fed)
                u.feed(data)
                fed += len(data)
                step = min(step * 2, CHUNK_BYTES)
            except (ValueError, msgpack.UnpackException, RecursionError, TypeError) as exc:
                what = str(exc) or type(exc).__name__
                if "depth" in what.lower() or isinstance(exc, (msgpack.StackError, RecursionError)):
                    what = "nested deeper than the format allows"
                elif "incomplete" in what.lower():
                    what = "truncated msgpack"
                self.fail(what, pos + u.tell())
        return out, pos + u.tell()

    def one(self, pos: int):
        (obj,), end = self.objects(pos, 1, True)
        return obj, end

    def header(self, pos: int, small: range, sizes: dict) -> tuple[int, int] | None:
        """(count or length, header bytes) when the object at pos is of a kind with that header, else None."""
        head = self.read(pos, 5)
        if not head:
            return None
        b = head[0]
        if b in small:
            return b - small.start, 1
        if b in sizes:
            hl = sizes[b]
            if len(head) < hl:
                self.fail("truncated msgpack", pos)
            return _be(head[1:hl]), hl
        return None

    def list_ops(self, pos: int) -> tuple[_ListSection, int]:
        """The ops array at pos, decoded by the engine a chunk at a time into packed rows; an item the engine
        does not take is decoded by msgpack and packed or explained as ops_from_list would."""
        count, hl = self.header(pos, range(0x90, 0xa0), _ARRAY)
        at = pos + hl
        # a declared length is believed only as far as the bytes after it could hold operations
        out = np.empty((min(count, (self.size - at) // MIN_LIST_OP + 1), OP_WIDTH), dtype=np.uint64)
        row = 0
        while row < count:
            data = self.read(at, CHUNK_BYTES)
            if row < len(out):
                k, used, bad = _engine.decode_ops(data, out, row, min(count, len(out)) - row, ELF_COLS)
                row += k
                at += used
                if row == count or (not bad and k and len(data) == CHUNK_BYTES):
                    continue
            # an item the fast path does not take, or one cut by the end of the file
            (item,), nxt = self.objects(at, 1, True)
            try:
                packed = ops_from_list([item])
            except ValueError:
                _, end = self.objects(nxt, count - row - 1, False)
                return _ListSection(None, explain_op(row, item)), end
            if row == len(out):
                out = np.concatenate([out, np.empty_like(out[:max(1, len(out))])])
            out[row] = packed[0]
            row += 1
            at = nxt
        return _ListSection(out[:count], None), at


def read(f, path) -> dict:
    """The decoded top-level map of the trace in f (a file, or io.BytesIO), its ops value an OpsSection that
    reads from f while it is open; TraceError on malformed msgpack."""
    identity = None if isinstance(f, io.BytesIO) else _identity(f)
    r = _Reader(f, path, identity)
    entries = r.header(0, range(0x80, 0x90), {0xde: 3, 0xdf: 5})
    if entries is None:  # not a map: decoded whole, for from_map to say so
        doc, pos = r.one(0)
    else:
        count, pos = entries
        doc = {}
        for _ in range(count):
            key, pos = r.one(pos)
            value = None
            if key == "ops_packed":
                bin_ = r.header(pos, range(0), _BIN)
                if bin_ is not None:
                    length, hl = bin_
                    if pos + hl + length > r.size:
                        r.fail(f"truncated msgpack: ops_packed declares {length} bytes from byte offset {pos + hl}, "
                               f"the file ends at byte offset {r.size}", pos)
                    value, pos = _PackedSection(r, pos + hl, length), pos + hl + length
            elif key == "ops" and r.header(pos, range(0x90, 0xa0), _ARRAY) is not None:
                value, pos = r.list_ops(pos)
            if value is None:
                value, pos = r.one(pos)
            try:
                doc[key] = value
            except TypeError as exc:
                r.fail(str(exc), pos)
    if pos != r.size:
        raise TraceError(path, "", f"trailing bytes after the trace map (byte offset {pos} of {r.size})")
    return doc
