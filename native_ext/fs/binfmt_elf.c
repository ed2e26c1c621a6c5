/* fs/binfmt_elf.c: the ELF header checks binfmt_elf makes before the arch hook sees PT_S390_PGSTE. */
#include <string.h>
#include "ptf.h"

#define PT_S390_PGSTE 0x70000000u
#define EM_S390 22
#define EM_S390_OLD 0xA390
#define BINPRM_BUF_SIZE 256
#define ELF_PHDR_SIZE 56 /* sizeof(struct elf_phdr), ELFCLASS64 */

static uint64_t rd(const uint8_t *p, int n, bool be)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = be ? v << 8 | p[i] : v | (uint64_t)p[i] << (8 * i);
	return v;
}

/* elf_check_arch: s390 (asm/elf.h) takes EM_S390 or the old EM_S390_OLD, and only ELFCLASS64; arm64 and x86_64
 * compare e_machine alone (their 32-bit binaries are compat_binfmt_elf's, which the model does not have). */
static bool elf_check_arch(const uint8_t *hdr, int machine, int want_machine)
{
	if (want_machine == EM_S390)
		return (machine == EM_S390 || machine == EM_S390_OLD) && hdr[4] == 2 /* ELFCLASS64 */;
	return machine == want_machine;
}

/* load_elf_binary up to the arch hook, for the image buf[0, len): 0 and *out filled when exec gets that far,
 * -ENOEXEC otherwise. prepare_binprm reads the header into a zero-padded BINPRM_BUF_SIZE buffer, so a file
 * shorter than the ELF header is judged on zeros past its end; load_elf_phdrs reads the program headers from
 * the file itself (a short read: NULL, so -ENOEXEC, not elf_read's -EIO) after checking e_phentsize and the
 * table size (0 < size <= min(65536, ELF_MIN_ALIGN); ELF_MIN_ALIGN is the page size on all three arches). */
int elf_parse(const uint8_t *buf, size_t len, int want_machine, bool be, struct elf_info *out, uint64_t page_size)
{
	uint8_t h[BINPRM_BUF_SIZE] = { 0 };
	memset(out, 0, sizeof(*out));
	memcpy(h, buf, len < sizeof(h) ? len : sizeof(h));
	if (memcmp(h, "\x7f" "ELF", 4) != 0)
		return -ENOEXEC;
	out->type = (int)rd(h + 16, 2, be);
	out->machine = (int)rd(h + 18, 2, be);
	out->big_endian = be;
	uint64_t phoff = rd(h + 32, 8, be);
	uint64_t phentsize = rd(h + 54, 2, be);
	uint64_t phnum = rd(h + 56, 2, be);
	if (out->type != 2 && out->type != 3) /* ET_EXEC, ET_DYN */
		return -ENOEXEC;
	if (!elf_check_arch(h, out->machine, want_machine))
		return -ENOEXEC;
	uint64_t size = phnum * ELF_PHDR_SIZE, limit = page_size < 65536 ? page_size : 65536;
	if (phentsize != ELF_PHDR_SIZE || size == 0 || size > limit)
		return -ENOEXEC;
	if (phoff > len || size > len - phoff)
		return -ENOEXEC;
	for (uint64_t i = 0; i < phnum; i++) {
		uint32_t type = (uint32_t)rd(buf + phoff + i * ELF_PHDR_SIZE, 4, be);
		if (type == PT_S390_PGSTE)
			out->pgste = true;
	}
	return 0;
}
