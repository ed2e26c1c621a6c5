"""ELF inspection with pyelftools: headers, program headers and the s390 exec-time PGSTE decision."""
import io
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError as PyElfError
from elftools.elf.elffile import ELFFile

from .errors import ElfError

PT_S390_PGSTE = 0x70000000
PT_LOPROC, PT_HIPROC = 0x70000000, 0x7FFFFFFF
EM_S390, EM_AARCH64, EM_X86_64 = 22, 183, 62
EM_S390_OLD = 0xA390  # the pre-ABI s390 number, still accepted by s390's elf_check_arch
BINPRM_BUF_SIZE = 256
ARCH_MACHINE = {"s390": EM_S390, "arm64": EM_AARCH64, "x86_64": EM_X86_64}
ARCH_BIG_ENDIAN = {"s390": True, "arm64": False, "x86_64": False}
# pyelftools knows no name for the s390 PGSTE header; the kernel's is this.
EXTRA_PT_NAMES = {PT_S390_PGSTE: "PT_S390_PGSTE"}
PT_NAME_TO_NUM = {"PT_NULL": 0, "PT_LOAD": 1, "PT_DYNAMIC": 2, "PT_INTERP": 3, "PT_NOTE": 4, "PT_SHLIB": 5,
                  "PT_PHDR": 6, "PT_TLS": 7, "PT_GNU_EH_FRAME": 0x6474E550, "PT_GNU_STACK": 0x6474E551,
                  "PT_GNU_RELRO": 0x6474E552, "PT_GNU_PROPERTY": 0x6474E553}


@dataclass
class ElfReport:
    path: str
    elfclass: int
    endian: str
    machine: int
    machine_name: str
    type: str
    phdrs: list = field(default_factory=list)
    pgste_requested: bool = False
    alloc_pgste: bool = False
    exec_restarts: int = 0
    reason: str = ""
    header_bytes: int = 0  # ELF header plus program header table

    def to_json(self) -> dict:
        return {"path": self.path, "class": self.elfclass, "endian": self.endian, "machine": self.machine,
                "machine_name": self.machine_name, "type": self.type, "phdrs": self.phdrs,
                "pgste_requested": self.pgste_requested, "alloc_pgste": self.alloc_pgste,
                "exec_restarts": self.exec_restarts, "reason": self.reason}


def _ptype_number(p_type) -> int:
    if isinstance(p_type, int):
        return p_type
    return PT_NAME_TO_NUM.get(p_type, -1)


def _ptype_name(p_type) -> str:
    if isinstance(p_type, int):
        return EXTRA_PT_NAMES.get(p_type, f"0x{p_type:08x}")
    return str(p_type)


def inspect_bytes(data: bytes, path: str, allocate_pgste: bool = False) -> ElfReport:
    return inspect_stream(io.BytesIO(data), path, allocate_pgste)


def inspect_stream(stream, path: str, allocate_pgste: bool = False) -> ElfReport:
    try:
        elf = ELFFile(stream)
        h = elf.header
        phdrs = []
        for seg in elf.iter_segments():
            s = seg.header
            num = _ptype_number(s["p_type"])
            phdrs.append({"type": num, "type_name": _ptype_name(s["p_type"]), "offset": s["p_offset"],
                          "vaddr": s["p_vaddr"], "filesz": s["p_filesz"], "memsz": s["p_memsz"],
                          "flags": s["p_flags"]})
    except (PyElfError, ValueError, TypeError, KeyError, EOFError, OverflowError, AttributeError) as exc:
        raise ElfError(path, f"not a readable ELF file ({exc or type(exc).__name__})") from None
    except Exception as exc:  # construct's StreamError and friends
        raise ElfError(path, f"not a readable ELF file ({type(exc).__name__}: {exc})") from None
    machine_num = h["e_machine"] if isinstance(h["e_machine"], int) else _machine_number(h["e_machine"])
    report = ElfReport(path=path, elfclass=elf.elfclass, endian="little" if elf.little_endian else "big",
                       machine=machine_num, machine_name=str(h["e_machine"]), type=str(h["e_type"]),
                       phdrs=phdrs, header_bytes=h["e_phoff"] + h["e_phnum"] * h["e_phentsize"])
    decide(report, allocate_pgste)
    return report


def _machine_number(name: str) -> int:
    return {"EM_S390": EM_S390, "EM_S390_OLD": EM_S390_OLD, "EM_AARCH64": EM_AARCH64,
            "EM_X86_64": EM_X86_64}.get(name, -1)


def decide(r: ElfReport, allocate_pgste: bool) -> None:
    """arch_elf_pt_proc and init_new_context, for an exec from a process without PGSTEs."""
    r.pgste_requested = any(p["type"] == PT_S390_PGSTE for p in r.phdrs)
    if r.machine not in (EM_S390, EM_S390_OLD):
        r.reason = f"{r.machine_name} is not s390: page tables carry no PGSTEs there"
        return
    if allocate_pgste:
        r.alloc_pgste = True
        r.reason = ("vm.allocate_pgste=1 gives every new mm PGSTEs, so exec needs no restart"
                    + (" and the PT_S390_PGSTE header changes nothing" if r.pgste_requested else ""))
    elif r.pgste_requested:
        r.alloc_pgste, r.exec_restarts = True, 1
        r.reason = ("the PT_S390_PGSTE program header makes exec set TIF_PGSTE and restart once, "
                    "so the new mm allocates page tables with PGSTEs")
    else:
        r.reason = "no PT_S390_PGSTE program header and vm.allocate_pgste=0: 2K page tables without PGSTEs"


def inspect_file(path, allocate_pgste: bool = False) -> ElfReport:
    try:
        with open(path, "rb") as f:  # pyelftools reads lazily: a large binary costs only its headers
            return inspect_stream(f, str(path), allocate_pgste)
    except OSError as exc:
        raise ElfError(path, exc.strerror or str(exc)) from None


def _elf_check_arch(buf: bytes, machine: int, arch: str) -> bool:
    """asm/elf.h elf_check_arch: s390 takes EM_S390 or EM_S390_OLD and only ELFCLASS64; arm64 and x86_64 compare
    e_machine alone (32-bit binaries are compat_binfmt_elf's)."""
    if arch == "s390":
        return machine in (EM_S390, EM_S390_OLD) and buf[4] == 2
    return machine == ARCH_MACHINE[arch]


def exec_accepts(data: bytes, arch: str, page_size: int = 4096) -> tuple[bool, bool]:
    """load_elf_binary up to the arch hook (docs/model.md section 5, as v6.6 has it), through pyelftools:
    (accepted, pgste)."""
    # prepare_binprm: the header is read into a zero-padded BINPRM_BUF_SIZE buffer, so a short file is judged on
    # zeros past its end; load_elf_phdrs then reads the program headers from the file itself.
    buf = bytes(data[:BINPRM_BUF_SIZE]).ljust(BINPRM_BUF_SIZE, b"\0")
    if buf[:4] != b"\x7fELF":
        return False, False
    # The kernel reads a 64-bit header in its own byte order whatever EI_CLASS and EI_DATA say; make pyelftools do
    # the same. Nor does it look at section headers: hide them so pyelftools does not chase a truncated table.
    hdr = bytearray(buf[:64])
    hdr[4] = 2
    hdr[5] = 2 if ARCH_BIG_ENDIAN[arch] else 1
    hdr[40:48] = bytes(8)  # e_shoff
    hdr[60:64] = bytes(4)  # e_shnum, e_shstrndx
    try:
        elf = ELFFile(io.BytesIO(bytes(hdr)))
        h = elf.header
        machine = h["e_machine"] if isinstance(h["e_machine"], int) else _machine_number(h["e_machine"])
        if h["e_type"] not in ("ET_EXEC", "ET_DYN") or not _elf_check_arch(buf, machine, arch):
            return False, False
        size = h["e_phnum"] * 56  # load_elf_phdrs: 0 < size <= min(65536, ELF_MIN_ALIGN), ELF_MIN_ALIGN = PAGE_SIZE
        if h["e_phentsize"] != 56 or size == 0 or size > min(65536, page_size):
            return False, False
        off = h["e_phoff"]
        if off > len(data) or size > len(data) - off:  # elf_read's short read: NULL, so -ENOEXEC
            return False, False
        # p_type raw: pyelftools names it per e_machine (0x70000000 is PT_AARCH64_ARCHEXT on arm64)
        word = elf.structs.Elf_word("p_type")
        pgste = any(word.parse(bytes(data[off + 56 * i:off + 56 * i + 4])) == PT_S390_PGSTE
                    for i in range(h["e_phnum"]))
        return True, pgste
    except Exception:
        return False, False
