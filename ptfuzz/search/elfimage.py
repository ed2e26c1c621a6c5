"""The ELF images generated traces carry (exec operations name one by index)."""
import struct

def s390_elf(pgste: bool) -> bytes:
    """A minimal big-endian s390x ET_EXEC header with a PT_LOAD and, optionally, PT_S390_PGSTE."""
    phnum = 2 if pgste else 1
    e = bytearray(64 + 56 * phnum)
    e[0:7] = b"\x7fELF\x02\x02\x01"
    struct.pack_into(">HHIQQQIHHHHHH", e, 16, 2, 22, 1, 0x1000, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    struct.pack_into(">IIQQQQQQ", e, 64, 1, 5, 0, 0x1000, 0x1000, 0x100, 0x100, 0x1000)
    if pgste:
        struct.pack_into(">IIQQQQQQ", e, 120, 0x70000000, 4, 0, 0, 0, 0, 0, 8)
    return bytes(e)
