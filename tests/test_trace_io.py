"""Trace I/O: round trips in every form, and every malformed-input rule of docs/trace-format.md."""
import json

import msgpack
import numpy as np
import pytest

from conftest import A, M
from ptfuzz import trace as tracemod
from ptfuzz.errors import TraceError
from ptfuzz.search.gen import generate
from ptfuzz.engine import replay


def doc(**over):
    d = {"format": "ptfuzz-trace", "version": 1, "arch": "s390", "ops": [["exec", 1, -1], ["mmap", 1, A, M, 1]]}
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def load(d) -> tracemod.Trace:
    return tracemod.loads(msgpack.packb(d, use_bin_type=True), "x.msgpack")


def test_list_and_packed_round_trip(tmp_path):
    t = generate("s390", 300, 3)
    for packed in (False, True):
        p = tmp_path / f"t{packed}.msgpack"
        tracemod.save(t, p, packed=packed)
        back = tracemod.load(p)
        assert back.packed == packed
        assert np.array_equal(back.ops, t.ops) and back.elfs == t.elfs and back.meta == t.meta
        assert replay(back).digest == replay(t).digest


def test_json_round_trip():
    t = generate("s390", 100, 4)
    j = json.loads(json.dumps(tracemod.to_json_doc(t)))
    back = tracemod.from_json_doc(j)
    assert np.array_equal(back.ops, t.ops) and back.elfs == t.elfs
    assert tracemod.dumps(back, packed=False) == tracemod.dumps(t, packed=False)


def test_elf_minus_one_survives_packing():
    t = load(doc())
    packed = tracemod.loads(tracemod.dumps(t, packed=True))
    assert packed.op_list()[0] == ["exec", 1, -1]


BAD = [
    (doc(format="nope"), "format"),
    (doc(version=2), "version"),
    (doc(arch="mips"), "arch"),
    (doc(extra=1), "unknown top-level key"),
    (doc(config={"granule": 4096}), "config.granule: does not apply to s390"),
    (doc(config={"max_table_pages": "many"}), "config.max_table_pages"),
    (doc(knobs={"mm.table_free": "sometimes"}), "knobs.mm.table_free"),
    (doc(knobs={"kvm.invalidate_retry": "none"}), "does not apply to s390"),
    (doc(knobs={"no.such": "x"}), "unknown knob"),
    (doc(ops=[["mmap", 1, A, M]]), 'ops[0]: "mmap" takes 4 arguments, got 3'),
    (doc(ops=[["exec", 1, -1], ["frobnicate", 1]]), "ops[1]: unknown operation"),
    (doc(ops=[["exec", 64, -1]]), "ops[0]"),
    (doc(ops=[["exec", 1, 0]]), "index into elfs"),
    (doc(ops=[["rcu_lock", 16]]), "cpu"),
    (doc(ops=[["inval_hold", 16]]), "cpu"),
    (doc(ops=[["inval_end", 1, 2]]), 'ops[0]: "inval_end" takes 1 argument, got 2'),
    (doc(ops=None, ops_packed=np.array([[25, 16, 0, 0, 0, 0]], "<u8").tobytes()), "cpu"),
    (doc(ops=[["vm_create", 16, 1, 0]]), "vm"),
    (doc(ops=[["vm_create", 0, 1, 31]]), "ipa_bits"),
    (doc(ops=[["memslot", 0, 32, 0, 0, 0]]), "slot"),
    (doc(ops=[["mmap", 1, A, M, 8]]), "flags"),
    (doc(ops=[["madvise", 1, A, M, 4]]), "advice"),
    (doc(ops=[["shm_mmap", 1, A, M, 16, 0]]), "an object 0..15"),
    (doc(ops=[["shm_mmap", 1, A, M, 0]]), 'ops[0]: "shm_mmap" takes 5 arguments, got 4'),
    (doc(ops=None, ops_packed=np.array([[23, 1, A, M, 16, 0]], "<u8").tobytes()), "an object 0..15"),
    (doc(ops=[["fault", 1, A, 2]]), "0 or 1"),
    (doc(ops=[["fault", 1, -5, 1]]), "outside 0..2^64-1"),
    (doc(ops=[["fault", 1, -(1 << 63), 1]]), "outside 0..2^64-1"),
    (doc(ops=[["fault", 1, 1.5, 1]]), "integers"),
    (doc(ops=[7]), "ops[0]"),
    (doc(ops_packed=b"\0" * 48), "exactly one"),
    (doc(ops=None, ops_packed=b"\0" * 47), "multiple of 48"),
    (doc(ops=None, ops_packed=np.array([[99, 0, 0, 0, 0, 0]], "<u8").tobytes()), "unknown opcode 99"),
    (doc(ops=None, ops_packed=np.array([[3, 1, 5, 0, 0, 0]], "<u8").tobytes()), "unused argument 2 must be 0"),
    (doc(expect={"verdict": "violation", "kind": "bogus"}), "expect.kind"),
    (doc(expect={"verdict": "maybe"}), "expect"),
    (doc(elfs=["text"]), "elfs"),
    ([1, 2, 3], "one msgpack map"),
]


@pytest.mark.parametrize("d,fragment", BAD, ids=[f[1][:30] for f in BAD])
def test_malformed_is_one_clear_error(d, fragment):
    with pytest.raises(TraceError) as e:
        load(d)
    msg = str(e.value)
    assert msg.startswith("x.msgpack: ") and fragment in msg and "\n" not in msg


def test_garbage_truncated_trailing_and_deep():
    good = msgpack.packb(doc(), use_bin_type=True)
    cases = {
        b"\xc1\xc1\xc1": "not a msgpack trace",
        good[:-3]: "truncated",
        good + b"\x00": "trailing bytes",
        b"\x91" * 100000 + b"\x00": "deeper",
    }
    for data, fragment in cases.items():
        with pytest.raises(TraceError) as e:
            tracemod.loads(data, "y")
        assert fragment in str(e.value), (fragment, str(e.value))


def test_lying_lengths_are_rejected_fast_without_allocating():
    import tracemalloc
    lies = [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff\x00",
            b"\xdb\x7f\xff\xff\xff", b"\x81\xa6ops_pa\xc6\x7f\xff\xff\xff"]
    tracemalloc.start()
    for data in lies:
        with pytest.raises(TraceError):
            tracemod.loads(data, "z")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20


def test_written_files_are_atomic(tmp_path):
    p = tmp_path / "a" / "t.msgpack"
    tracemod.save(load(doc()), p)
    assert p.exists() and not [f for f in p.parent.iterdir() if f.name.endswith(".tmp")]
