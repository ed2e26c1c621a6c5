/* elf.c: the ELF header checks binfmt_elf makes before the arch hook sees PT_S390_PGSTE. */
#include <string.h>
#include "ptf.h"

#define PT_S390_PGSTE 0x70000000u

static uint64_t rd(const uint8_t *p, int n, bool be)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = be ? v << 8 | p[i] : v | (uint64_t)p[i] << (8 * i);
	return v;
}

/* 0 and *out filled when exec would accept the image, -ENOEXEC otherwise. */
int elf_parse(const uint8_t *buf, size_t len, int want_machine, bool be, struct elf_info *out)
{
	memset(out, 0, sizeof(*out));
	if (len < 64 || memcmp(buf, "\x7f" "ELF", 4) != 0 || buf[4] != 2 /* ELFCLASS64 */)
		return -ENOEXEC;
	out->type = (int)rd(buf + 16, 2, be);
	out->machine = (int)rd(buf + 18, 2, be);
	out->big_endian = be;
	uint64_t phoff = rd(buf + 32, 8, be);
	uint64_t phentsize = rd(buf + 54, 2, be);
	uint64_t phnum = rd(buf + 56, 2, be);
	if ((out->type != 2 && out->type != 3) || out->machine != want_machine)
		return -ENOEXEC;
	if (phentsize != 56 || phnum < 1 || phnum * 56 > 4096)
		return -ENOEXEC;
	if (phoff > len || phnum * 56 > len - phoff)
		return -ENOEXEC;
	for (uint64_t i = 0; i < phnum; i++) {
		uint32_t type = (uint32_t)rd(buf + phoff + i * 56, 4, be);
		if (type == PT_S390_PGSTE)
			out->pgste = true;
	}
	return 0;
}
