"""Reading traces at scale: packed operations streamed from the file give exactly the whole-file result, list form
is decoded in C to the same rows, and broken files fail in one line naming the byte offset."""
import os
import subprocess
import sys
from dataclasses import replace

import msgpack
import numpy as np
import pytest

from conftest import ROOT
from ptfuzz import _engine
from ptfuzz.trace import packed as tracefile
from ptfuzz import trace as tracemod
from ptfuzz.engine import replay
from ptfuzz.errors import TraceError
from ptfuzz.search.gen import generate
from ptfuzz.names import OP_NUMBER

REGRESSIONS = sorted((ROOT / "corpus" / "regressions").rglob("*.msgpack"))


def outcome(r):
    v = r.violation
    return (r.verdict, r.executed, r.ops, r.digest, r.stats, None if v is None else (v.kind, v.op_index, v.op, v.message))


def packed_copy(path, tmp_path):
    t = tracemod.load(path)
    out = tmp_path / f"{path.stem}-packed.msgpack"
    tracemod.save(t, out, packed=True)
    return t, out


@pytest.mark.parametrize("path", REGRESSIONS[:6], ids=lambda p: p.stem)
def test_streamed_replay_equals_whole_replay(path, tmp_path):
    t, p = packed_copy(path, tmp_path)
    streamed = tracemod.load(p, stream=True)
    assert isinstance(streamed, tracemod.FileTrace) and streamed.source.nops == len(t.ops)
    whole = replay(t, steps=True)
    got = replay(streamed, steps=True)
    assert outcome(got) == outcome(whole)
    assert got.op_results == whole.op_results and got.events == whole.events
    assert got.matches(t)  # the regression's expected violation, at the same operation


@pytest.mark.parametrize("chunk", [48, 100, 4096 + 7])
def test_chunk_boundaries_that_split_operations_change_nothing(chunk, tmp_path, monkeypatch):
    t = generate("s390", 3000, 11)
    p = tmp_path / "g.msgpack"
    tracemod.save(t, p, packed=True)
    whole = replay(t)
    monkeypatch.setattr(tracefile, "CHUNK_BYTES", chunk)  # 100 and 4103 are not multiples of 48
    streamed = replay(tracemod.load(p, stream=True))
    assert outcome(streamed) == outcome(whole)
    for kn in ({"mm.table_free": "immediate"}, {"s390.pt_alloc": "fragments-always"}):
        assert outcome(replay(tracemod.load(p, stream=True), kn)) == outcome(replay(t, kn))


def test_stream_validates_every_chunk_before_running(tmp_path, monkeypatch):
    ops = np.zeros((50, 6), dtype=np.uint64)
    ops[:, 0] = OP_NUMBER["rcu_gp"]
    ops[37] = [OP_NUMBER["rcu_lock"], 16, 0, 0, 0, 0]  # cpu 16: out of range, in the 13th chunk of 3
    p = tmp_path / "bad.msgpack"
    tracemod.save(tracemod.Trace("s390", ops, packed=True), p)
    monkeypatch.setattr(tracefile, "CHUNK_BYTES", 3 * 48)
    with pytest.raises(TraceError) as e:
        tracemod.load(p, stream=True)
    assert "ops[37]" in str(e.value) and "cpu" in str(e.value)


def test_a_copy_of_a_streamed_trace_runs_its_own_operations(tmp_path):
    t, p = packed_copy(REGRESSIONS[0], tmp_path)
    streamed = tracemod.load(p, stream=True)
    shorter = replace(streamed, ops=streamed.ops[:1])  # what minimize does: the copy has no file source
    assert replay(shorter).ops == 1 and replay(shorter).digest == replay(replace(t, ops=t.ops[:1])).digest


def test_truncated_packed_file_is_one_line_with_the_byte_offset(tmp_path, cli):
    _, p = packed_copy(REGRESSIONS[0], tmp_path)
    data = p.read_bytes()
    p.write_bytes(data[:-20])
    for stream in (False, True):
        with pytest.raises(TraceError) as e:
            tracemod.load(p, stream=stream)
        msg = str(e.value)
        assert "truncated" in msg and "byte offset" in msg and "\n" not in msg
    r = cli("replay", p)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "byte offset" in r.stderr and "Traceback" not in r.stderr


def test_corrupt_list_item_names_its_index_and_the_rest_must_still_parse(tmp_path):
    doc = {"format": "ptfuzz-trace", "version": 1, "arch": "s390", "ops": [["exec", 1, -1], ["frob", 1], ["exit", 1]]}
    good = msgpack.packb(doc, use_bin_type=True)
    p = tmp_path / "l.msgpack"
    p.write_bytes(good)
    with pytest.raises(TraceError, match=r"ops\[1\]: unknown operation"):
        tracemod.load(p)
    p.write_bytes(good[:-2])  # a bad item and a truncated file: the file's structure is reported first
    with pytest.raises(TraceError, match="truncated msgpack at byte offset"):
        tracemod.load(p)


def test_file_changed_after_validation_is_refused(tmp_path):
    t, p = packed_copy(REGRESSIONS[0], tmp_path)
    streamed = tracemod.load(p, stream=True)
    tracemod.save(replace(t, ops=t.ops[:3]), p)  # replaced, as every ptfuzz writer does (rename)
    with pytest.raises(TraceError, match="changed on disk"):
        replay(streamed)


def test_engine_stream_stops_with_the_offset_where_the_file_ended(tmp_path):
    p = tmp_path / "raw"
    p.write_bytes(np.zeros((3, 6), dtype="<u8").tobytes())  # three sysctl_allocate_pgste 0
    from ptfuzz.engine import config_tuple
    from ptfuzz.names import knob_vector
    t = tracemod.Trace("s390", np.zeros((0, 6), dtype=np.uint64))
    with open(p, "rb") as f, pytest.raises(EOFError, match="byte offset 144"):
        _engine.run(0, knob_vector("s390", {}), config_tuple(t), (), (f.fileno(), 0, 5, 100), False, True)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
@pytest.mark.skipif(os.environ.get("PTFUZZ_ASAN") == "1", reason="ASan's quarantine keeps freed memory resident")
def test_streamed_memory_does_not_grow_with_the_trace(tmp_path):
    """B5's property in miniature: 40x the operations (46 MiB of them), the same peak RSS within a few MiB."""
    rss = {}
    for n in (25_000, 1_000_000):
        ops = np.zeros((n, 6), dtype=np.uint64)
        ops[:, 0] = OP_NUMBER["rcu_gp"]  # the model stays the same size
        p = tmp_path / f"{n}.msgpack"
        tracemod.save(tracemod.Trace("s390", ops, packed=True), p)
        # VmHWM: this process's own peak (ru_maxrss would start from the forking test process's)
        code = ("import sys;from ptfuzz import trace;from ptfuzz.engine import replay;"
                "r=replay(trace.load(sys.argv[1],stream=True));assert r.executed==int(sys.argv[2]);"
                "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
        out = subprocess.run([sys.executable, "-c", code, str(p), str(n)], capture_output=True, text=True, check=True)
        rss[n] = int(out.stdout) * 1024
    assert rss[1_000_000] - rss[25_000] < 8 << 20, rss


def _hand_packed(items) -> bytes:
    """A list-form trace whose operations use msgpack encodings our writer never picks."""
    head = msgpack.packb({"format": "ptfuzz-trace", "version": 1, "arch": "s390"}, use_bin_type=True)
    body = b"\xdc" + len(items).to_bytes(2, "big") + b"".join(items)
    return bytes([head[0] + 1]) + head[1:] + msgpack.packb("ops") + body


def test_list_decoder_takes_every_integer_and_header_encoding():
    items = [
        b"\x93\xa4exec\x01\xff",  # -1 as negative fixint
        b"\xdc\x00\x05\xd9\x04mmap\xd3" + (1).to_bytes(8, "big", signed=True) + b"\xce\x10\x00\x00\x00"
        b"\xcf" + (1 << 21).to_bytes(8, "big") + b"\x01",  # array16, str8, int64 1, uint32, uint64
        b"\x94\xa5fault\xd0\x01\xcd\x10\x00\xcc\x01",  # int8 1, uint16, uint8 1
        b"\x93\xa4exec\x02\xd3" + (-1).to_bytes(8, "big", signed=True),  # -1 as int64
    ]
    t = tracemod.loads(_hand_packed(items), "h.msgpack")
    assert t.op_list() == [["exec", 1, -1], ["mmap", 1, 1 << 28, 1 << 21, 1], ["fault", 1, 4096, 1], ["exec", 2, -1]]


@pytest.mark.parametrize("item,fragment", [
    (b"\x93\xa4exec\x01\xfe", "outside 0..2^64-1"),  # -2
    (b"\x93\xa4exec\x01\xc3", "integers"),  # true
    (b"\x93\xa4exec\x01\xcb" + b"\0" * 8, "integers"),  # a float
    (b"\x92\xc4\x04exec\x01", "starting with its name"),  # a bin name
    (b"\x92\xa4exek\x01", "unknown operation"),
    (b"\x94\xa4exec\x01\xff\x00", "takes 2 arguments, got 3"),
    (b"\x07", "starting with its name"),
])
def test_list_decoder_rejections_read_as_before(item, fragment):
    with pytest.raises(TraceError) as e:
        tracemod.loads(_hand_packed([b"\x92\xa4exit\x01", item]), "h.msgpack")
    assert "ops[1]" in str(e.value) and fragment in str(e.value)


@pytest.mark.parametrize("arch", ["s390", "arm64", "x86_64"])
def test_list_form_decodes_to_the_rows_the_python_path_packs(arch):
    t = generate(arch, 4000, 5)
    data = tracemod.dumps(t, packed=False)
    doc = msgpack.unpackb(data, raw=False)
    assert np.array_equal(tracemod.loads(data).ops, tracemod.ops_from_list(doc["ops"]))


def test_list_form_loading_builds_no_python_list_per_operation(tmp_path):
    import tracemalloc
    t = generate("x86_64", 60_000, 2)
    p = tmp_path / "l.msgpack"
    tracemod.save(t, p, packed=False)
    tracemalloc.start()
    back = tracemod.load(p)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert np.array_equal(back.ops, t.ops)
    assert peak < back.ops.nbytes + (3 << 20), (peak, back.ops.nbytes)  # lists would be ~4x the rows


def test_replay_cli_streams_and_reports_like_before(tmp_path, cli):
    t, p = packed_copy(REGRESSIONS[0], tmp_path)
    r = cli("replay", p, "--json")
    assert r.returncode == 0, r.stderr
    import json
    rec = json.loads(r.stdout)
    w = replay(t)
    assert rec["violation"]["op_index"] == w.violation.op_index and rec["violation"]["op"] == w.violation.op
    assert rec["digest"] == w.digest and rec["ops"] == len(t.ops)
    assert os.path.getsize(p) > 0


def _reference(data: bytes):
    """The whole-document reading the streaming one replaced: msgpack.unpackb, then from_map."""
    n = len(data)
    doc = msgpack.unpackb(data, raw=False, strict_map_key=False, max_bin_len=n, max_str_len=n,
                          max_array_len=n, max_map_len=n, max_ext_len=n)
    return tracemod.from_map(doc)


def test_mutated_files_are_read_exactly_as_the_whole_document_reader_reads_them():
    from hypothesis import given, settings, strategies as st
    seeds = [tracemod.dumps(generate("s390", 12, s), packed=p) for s in (1, 2) for p in (False, True)]

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.sampled_from(seeds), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
           st.integers(0, 40))
    def check(seed, flips, cut):
        data = bytearray(seed)
        for pos, byte in flips:
            data[pos % len(data)] = byte
        data = bytes(data[:len(data) - cut] if cut < 8 else data)
        try:
            want = _reference(data)
        except Exception:  # noqa: BLE001 - any rejection by the reference
            want = None
        try:
            got = tracemod.loads(data, "m.msgpack")
        except TraceError as e:
            assert "\n" not in str(e)
            got = None
        assert (got is None) == (want is None), (data, got, want)
        if got is not None:
            assert np.array_equal(got.ops, want.ops) and got.elfs == want.elfs and got.knobs == want.knobs
    check()
