"""ELF inspection on real s390x binaries, and pyelftools against the engine's own header parser."""
import json
import random
import struct

import pytest

from conftest import ROOT
from ptfuzz import _engine
from ptfuzz.engine import replay
from ptfuzz.elfinfo import ARCH_BIG_ENDIAN, ARCH_MACHINE, exec_accepts, inspect_file
from ptfuzz.search.gen import s390_elf
from ptfuzz.trace import Trace, ops_from_list

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
    for arch, page in (("s390", 4096), ("arm64", 4096), ("arm64", 65536), ("x86_64", 4096)):
        py = exec_accepts(data, arch, page)
        c = _engine.elf_check(data, ARCH_MACHINE[arch], ARCH_BIG_ENDIAN[arch], page)
        assert py == tuple(c), (arch, page, data[:80].hex(), py, c)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_parsers_agree_on_fixtures(path):
    agree(path.read_bytes())


def test_parsers_agree_on_mutated_headers():
    rng = random.Random(1234)
    seeds = [p.read_bytes()[:512] for p in FIXTURES] + [s390_elf(True), s390_elf(False)]
    fields = [(4, 1), (5, 1), (16, 2), (18, 2), (32, 8), (54, 2), (56, 2), (64, 4), (120, 4)]
    machines = [22, 0xA390, 62, 183]
    for i in range(4000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.6 and len(data) > 64:
                off, n = rng.choice(fields)
                if off + n <= len(data):
                    val = rng.choice([0, 1, 2, 3, *machines, 56, 64, 4096, 0x70000000, rng.getrandbits(8 * n)])
                    data[off:off + n] = (val % (1 << 8 * n)).to_bytes(n, rng.choice(["big", "little"]))
            elif rng.random() < 0.5:
                data = data[: rng.randint(0, len(data))]
            elif data:
                data[rng.randrange(len(data))] = rng.getrandbits(8)
        agree(bytes(data))


# ---- load_elf_binary as v6.6 has it (docs/model.md section 5, and where v6.6 differs from it) ----

def elf_image(machine=22, be=True, elfclass=2, phnum=1, phoff=64, types=(1,), length=None) -> bytes:
    """An ET_EXEC header and phnum program headers at phoff (p_type from types, the rest PT_NULL)."""
    o = ">" if be else "<"
    e = bytearray(max(64, phoff + 56 * phnum))
    e[0:7] = b"\x7fELF" + bytes([elfclass, 2 if be else 1, 1])
    struct.pack_into(o + "HHIQQQIHHHHHH", e, 16, 2, machine, 1, 0x1000, phoff, 0, 0, 64, 56, phnum, 64, 0, 0)
    for i, t in enumerate(types):
        struct.pack_into(o + "I", e, phoff + 56 * i, t)
    return bytes(e if length is None else e[:length])


def both(data, arch, page_size=4096):
    py = exec_accepts(data, arch, page_size)
    assert py == tuple(_engine.elf_check(data, ARCH_MACHINE[arch], ARCH_BIG_ENDIAN[arch], page_size)), (arch, py)
    return py


def test_s390_elf_check_arch_takes_em_s390_old_and_only_elfclass64():
    # asm/elf.h: (e_machine == EM_S390 || e_machine == EM_S390_OLD) && e_ident[EI_CLASS] == ELF_CLASS
    assert both(elf_image(0xA390, types=(1, 0x70000000), phnum=2), "s390") == (True, True)
    assert both(elf_image(0xA390), "x86_64") == (False, False)
    assert both(elf_image(22, elfclass=1), "s390") == (False, False)
    # arm64 and x86_64 compare e_machine alone: the class byte is not looked at (docs/model.md section 5 says "class 64")
    assert both(elf_image(62, be=False, elfclass=1), "x86_64") == (True, False)
    assert both(elf_image(183, be=False, elfclass=0), "arm64") == (True, False)


def test_s390_exec_of_an_em_s390_old_binary_restarts_for_its_pgste_header():
    old = elf_image(0xA390, types=(1, 0x70000000), phnum=2)
    t = Trace("s390", ops_from_list([["exec", 1, 0], ["vm_create", 0, 1, 0]]), elfs=[old])
    r = replay(t, steps=True)
    assert [int(x) for x in r.op_results[:r.executed]] == [0, 0] and [e for e in r.events if e[1] == 12]


def test_header_is_read_from_a_zero_padded_256_byte_buffer():
    # prepare_binprm: memset(bprm->buf, 0, BINPRM_BUF_SIZE) then kernel_read; a 60-byte file still has e_phnum,
    # and its one program header (at offset 0, inside the file) is read from the file
    short = elf_image(phoff=0, types=(), length=60)  # p_type is the magic
    assert len(short) == 60 and both(short, "s390") == (True, False)
    # cut before e_phnum, the padding's zeros make it 0: load_elf_phdrs refuses size 0
    assert both(elf_image(phoff=0, types=(), length=56), "s390") == (False, False)
    assert both(b"\x7fELF", "s390") == (False, False) and both(b"", "x86_64") == (False, False)


def test_phdr_table_limit_is_the_page_size_and_a_short_read_is_enoexec():
    # load_elf_phdrs: size <= 65536 and size <= ELF_MIN_ALIGN (PAGE_SIZE); 73 * 56 = 4088, 74 * 56 = 4144
    assert both(elf_image(phnum=73), "s390")[0] and not both(elf_image(phnum=74), "s390")[0]
    arm = elf_image(183, be=False, phnum=74)
    assert not both(arm, "arm64", 4096)[0] and both(arm, "arm64", 16384)[0]
    assert both(elf_image(183, be=False, phnum=1170), "arm64", 65536)[0]  # 65520 bytes
    assert not both(elf_image(183, be=False, phnum=1171), "arm64", 65536)[0]
    # and in exec: the engine's limit is its geometry's page size
    ops = [["exec", 1, 0]]
    for cfg, want in (({}, -8), ({"granule": 16384}, 0)):
        r = replay(Trace("arm64", ops_from_list(ops), elfs=[arm], config=cfg), steps=True)
        assert int(r.op_results[0]) == want, cfg
    # a table that runs past the end of the file: elf_read's -EIO is dropped, load_elf_binary returns -ENOEXEC
    cut = elf_image(phnum=2, types=(1, 0x70000000), length=64 + 56 + 20)
    assert both(cut, "s390") == (False, False)
    r = replay(Trace("s390", ops_from_list([["exec", 1, 0]]), elfs=[cut]), steps=True)
    assert int(r.op_results[0]) == -8
