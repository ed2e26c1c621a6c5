"""ELF inspection on real s390x binaries, and pyelftools against the engine's own header parser."""
import json
import random

import pytest

from conftest import ROOT
from ptfuzz import _engine
from ptfuzz.elfinfo import ARCH_BIG_ENDIAN, ARCH_MACHINE, exec_accepts, inspect_file
from ptfuzz.gen import s390_elf

FIX = ROOT / "tests" / "fixtures" / "elf"
FIXTURES = sorted(p for p in FIX.iterdir() if p.suffix in (".elf", ".so"))


def test_pgste_fixture_asks_for_pgstes_and_restarts():
    r = inspect_file(FIX / "s390x-pgste.elf")
    assert r.machine == 22 and r.endian == "big" and r.elfclass == 64
    assert [p["type_name"] for p in r.phdrs] == ["PT_LOAD", "PT_S390_PGSTE"]
    assert (r.pgste_requested, r.alloc_pgste, r.exec_restarts) == (True, True, 1)


def test_plain_fixture_gets_no_pgstes():
    r = inspect_file(FIX / "s390x-plain.elf")
    assert (r.pgste_requested, r.alloc_pgste, r.exec_restarts) == (False, False, 0)


def test_allocate_pgste_sysctl_needs_no_restart():
    for name in ("s390x-pgste.elf", "s390x-plain.elf"):
        r = inspect_file(FIX / name, allocate_pgste=True)
        assert (r.alloc_pgste, r.exec_restarts) == (True, 0)


def test_cli_json_and_not_an_elf(cli):
    r = cli("elf-inspect", FIX / "s390x-pgste.elf", "--json")
    rec = json.loads(r.stdout)
    assert r.returncode == 0 and rec["exec_restarts"] == 1 and rec["phdrs"][1]["type"] == 0x70000000
    r = cli("elf-inspect", FIX / "not-elf.txt")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not-elf.txt" in r.stderr
    r = cli("elf-inspect", FIX / "not-elf.txt", "--json")
    assert r.returncode == 2 and set(json.loads(r.stdout)) == {"path", "error"}


def test_emitted_trace_execs_the_binary_and_creates_a_vm(cli, tmp_path):
    assert cli("elf-inspect", FIX / "s390x-pgste.elf", "--emit-trace", "t.msgpack").returncode == 0
    r = cli("replay", "t.msgpack", "--steps")
    assert r.returncode == 0
    assert "exec(1, 0) = 0" in r.stdout and "vm_create(0, 1, 0) = 0" in r.stdout and "restart" in r.stdout
    assert cli("elf-inspect", FIX / "s390x-plain.elf", "--emit-trace", "p.msgpack").returncode == 0
    assert "vm_create(0, 1, 0) = -22" in cli("replay", "p.msgpack", "--steps").stdout


def agree(data: bytes):
    for arch in ("s390", "arm64", "x86_64"):
        py = exec_accepts(data, arch)
        c = _engine.elf_check(data, ARCH_MACHINE[arch], ARCH_BIG_ENDIAN[arch])
        assert py == tuple(c), (arch, data[:80].hex(), py, c)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_parsers_agree_on_fixtures(path):
    agree(path.read_bytes())


def test_parsers_agree_on_mutated_headers():
    rng = random.Random(1234)
    seeds = [p.read_bytes()[:512] for p in FIXTURES] + [s390_elf(True), s390_elf(False)]
    fields = [(4, 1), (5, 1), (16, 2), (18, 2), (32, 8), (54, 2), (56, 2), (64, 4), (120, 4)]
    for i in range(4000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.6 and len(data) > 64:
                off, n = rng.choice(fields)
                if off + n <= len(data):
                    val = rng.choice([0, 1, 2, 3, 22, 56, 62, 183, 64, 4096, 0x70000000, rng.getrandbits(8 * n)])
                    data[off:off + n] = (val % (1 << 8 * n)).to_bytes(n, rng.choice(["big", "little"]))
            elif rng.random() < 0.5:
                data = data[: rng.randint(0, len(data))]
            elif data:
                data[rng.randrange(len(data))] = rng.getrandbits(8)
        agree(bytes(data))
