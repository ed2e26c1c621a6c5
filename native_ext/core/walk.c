/* core/walk.c: geometry as data, the per-arch entry formats, and the one generic table walker. */
#include <string.h>
#include "ptf.h"

/* ---- s390: region (R1/R2/R3), segment and page entries ---- */
#define S390_INVALID_CRST 0x20ull
#define S390_LARGE 0x400ull
#define S390_PROTECT 0x200ull
#define S390_PAGE_PROTECT 0x200ull
#define S390_PAGE_INVALID 0x400ull
#define S390_PAGE_PRESENT 0x001ull
#define S390_PAGE_READ 0x010ull
#define S390_PAGE_WRITE 0x020ull
#define S390_PAGE_DIRTY 0x008ull
#define S390_PAGE_YOUNG 0x004ull
enum { S390_R1, S390_R2, S390_R3, S390_SEG, S390_PTE };

static uint64_t s390_region_type(int level)
{
	return (uint64_t)(3 - level) << 2; /* R1 0x0c, R2 0x08, R3 0x04 */
}

static uint64_t s390_empty(int level)
{
	if (level == S390_PTE)
		return S390_PAGE_INVALID;
	if (level == S390_SEG)
		return S390_INVALID_CRST;
	return s390_region_type(level) | S390_INVALID_CRST;
}

static uint64_t s390_table(int level, uint64_t phys)
{
	if (level == S390_SEG)
		return phys;
	return phys | s390_region_type(level) | 0x03; /* table length: full */
}

static uint64_t s390_leaf(int level, uint64_t phys, bool write)
{
	if (level == S390_PTE)
		return phys | S390_PAGE_PRESENT | S390_PAGE_READ | S390_PAGE_YOUNG |
		       (write ? S390_PAGE_WRITE | S390_PAGE_DIRTY : S390_PAGE_PROTECT);
	uint64_t prot = write ? 0 : S390_PROTECT;
	if (level == S390_SEG)
		return phys | S390_LARGE | prot;
	return phys | s390_region_type(level) | S390_LARGE | prot;
}

static enum entry_kind s390_kind(int level, uint64_t e)
{
	if (level == S390_PTE)
		return (e & S390_PAGE_INVALID) ? E_EMPTY : E_LEAF;
	if (e & S390_INVALID_CRST)
		return E_EMPTY;
	return (e & S390_LARGE) ? E_LEAF : E_TABLE;
}

static uint64_t s390_addr(int level, uint64_t e)
{
	if (level == S390_SEG && !(e & S390_LARGE))
		return e & ~0x7ffull; /* a 2K-aligned page-table origin */
	return e & ~0xfffull;
}

static bool s390_writable(int level, uint64_t e)
{
	return level == S390_PTE ? (e & S390_PAGE_WRITE) != 0 : !(e & S390_PROTECT);
}

static const struct entry_fmt s390_fmt = {
	s390_empty, s390_table, s390_leaf, s390_kind, s390_addr, s390_writable,
};

static const struct geom s390_geom = {
	.nlevels = 5,
	.lv = {
		{ "region-first", 53, 2048, 16384, false, false },
		{ "region-second", 42, 2048, 16384, false, false },
		{ "region-third", 31, 2048, 16384, false, true },
		{ "segment", 20, 2048, 16384, false, true },
		{ "page", 12, 256, 2048, false, true },
	},
	.fmt = &s390_fmt,
	.page_size = 4096,
	.pmd_shift = 20,
	.pud_shift = 31,
};

/* ---- arm64: descriptors (valid bit 0; bit 1: table above the last level, page at it) ---- */
#define ARM64_VALID 1ull
#define ARM64_TABLE 2ull
#define ARM64_AF (1ull << 10)
#define ARM64_RDONLY (1ull << 7)
#define ARM64_OA_MASK 0x0000fffffffff000ull

#define ARM64_FMT(name, last)                                                              \
	static uint64_t name##_empty(int level) { (void)level; return 0; }                    \
	static uint64_t name##_table(int level, uint64_t phys)                                \
	{ (void)level; return phys | ARM64_VALID | ARM64_TABLE; }                             \
	static uint64_t name##_leaf(int level, uint64_t phys, bool write)                     \
	{                                                                                     \
		return phys | ARM64_VALID | ARM64_AF | (level == (last) ? ARM64_TABLE : 0) |  \
		       (write ? 0 : ARM64_RDONLY);                                            \
	}                                                                                     \
	static enum entry_kind name##_kind(int level, uint64_t e)                             \
	{                                                                                     \
		if (!(e & ARM64_VALID))                                                       \
			return E_EMPTY;                                                       \
		return level == (last) || !(e & ARM64_TABLE) ? E_LEAF : E_TABLE;              \
	}                                                                                     \
	static uint64_t name##_addr(int level, uint64_t e) { (void)level; return e & ARM64_OA_MASK; } \
	static bool name##_writable(int level, uint64_t e) { (void)level; return !(e & ARM64_RDONLY); } \
	static const struct entry_fmt name = { name##_empty, name##_table, name##_leaf, name##_kind, name##_addr, \
					       name##_writable };

ARM64_FMT(arm64_s1_fmt, 4) /* pgd, p4d, pud, pmd, pte */
ARM64_FMT(arm64_s2_fmt, 3) /* hardware levels 0..3 */

/* ---- x86_64: stage-1 PTEs and EPT entries ---- */
#define X86_P 1ull
#define X86_RW 2ull
#define X86_US 4ull
#define X86_A 0x20ull
#define X86_D 0x40ull
#define X86_PS 0x80ull
#define X86_ADDR 0x000ffffffffff000ull

static uint64_t x86_empty(int level) { (void)level; return 0; }
static uint64_t x86_table(int level, uint64_t phys) { (void)level; return phys | X86_P | X86_RW | X86_US | X86_A; }
static uint64_t x86_leaf(int level, uint64_t phys, bool write)
{
	return phys | X86_P | X86_US | X86_A | (write ? X86_RW | X86_D : 0) | (level < 4 ? X86_PS : 0);
}
static enum entry_kind x86_kind(int level, uint64_t e)
{
	if (!(e & X86_P))
		return E_EMPTY;
	return level == 4 || (e & X86_PS) ? E_LEAF : E_TABLE;
}
static uint64_t x86_addr(int level, uint64_t e) { (void)level; return e & X86_ADDR; }
static bool x86_writable(int level, uint64_t e) { (void)level; return (e & X86_RW) != 0; }
static const struct entry_fmt x86_fmt = { x86_empty, x86_table, x86_leaf, x86_kind, x86_addr, x86_writable };

#define EPT_RWX 7ull
#define EPT_WB (6ull << 3)
static uint64_t ept_table(int level, uint64_t phys) { (void)level; return phys | EPT_RWX; }
static uint64_t ept_leaf(int level, uint64_t phys, bool write)
{
	return phys | (write ? EPT_RWX : 5ull) | EPT_WB | (level < 3 ? X86_PS : 0);
}
static enum entry_kind ept_kind(int level, uint64_t e)
{
	if (!(e & EPT_RWX))
		return E_EMPTY;
	return level == 3 || (e & X86_PS) ? E_LEAF : E_TABLE;
}
static bool ept_writable(int level, uint64_t e) { (void)level; return (e & 2ull) != 0; }
static const struct entry_fmt ept_fmt = { x86_empty, ept_table, ept_leaf, ept_kind, x86_addr, ept_writable };

static const char *const generic_names[5] = { "pgd", "p4d", "pud", "pmd", "pte" };

/* arm64 stage 1: the pgd sits at hardware level 4 - levels; the pud exists only with 4 levels,
 * the pmd with 3 or more, the p4d never (pgtable-nop4d/nopud/nopmd). 52-bit VA is ARM64_VA_BITS_52,
 * which v6.6 offers with 64K pages only (FEAT_LVA): 3 levels and a 1024-entry pgd. */
static int geom_arm64(struct geom *g, uint64_t granule, uint64_t va_bits)
{
	int page_shift = granule == 4096 ? 12 : granule == 16384 ? 14 : granule == 65536 ? 16 : 0;
	static const int ok[][2] = { { 12, 39 }, { 12, 48 }, { 14, 36 }, { 14, 47 }, { 14, 48 }, { 16, 42 }, { 16, 48 }, { 16, 52 } };
	bool supported = false;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		supported |= ok[i][0] == page_shift && (uint64_t)ok[i][1] == va_bits;
	if (!supported)
		return -EINVAL;
	int B = page_shift - 3, levels = (int)(va_bits - 4) / B;
	bool present[5] = { true, false, levels == 4, levels >= 3, true };
	int hw_shift[5] = { B * levels + 3, 0, 2 * B + page_shift, B + page_shift, page_shift };
	memset(g, 0, sizeof(*g));
	g->nlevels = 5;
	g->fmt = &arm64_s1_fmt;
	g->page_size = granule;
	for (int i = 0; i < 5; i++) {
		struct level_geom *lv = &g->lv[i];
		lv->name = generic_names[i];
		lv->folded = !present[i];
		/* a folded level is a pass-through: one entry, the parent's shift */
		lv->shift = (uint8_t)(present[i] ? hw_shift[i] : g->lv[i - 1].shift);
		lv->entries = present[i] ? 1u << B : 1;
		lv->table_bytes = present[i] ? (uint32_t)granule : 0;
		lv->leaf_ok = present[i] && (i == 4 || lv->shift == hw_shift[3] ||
					     (granule == 4096 && lv->shift == hw_shift[2]));
	}
	g->lv[0].entries = 1u << (va_bits - g->lv[0].shift);
	g->lv[0].table_bytes = g->lv[0].entries * 8u; /* PGD_SIZE: smaller than a page at 16K/48 */
	g->pmd_shift = (uint8_t)hw_shift[3];
	g->pud_shift = granule == 4096 ? (uint8_t)hw_shift[2] : 0;
	return 0;
}

/* x86_64: pgd, p4d, pud, pmd, pte; without LA57 the p4d folds into the pgd at run time. */
static int geom_x86(struct geom *g, bool la57)
{
	static const uint8_t shifts[5] = { 48, 39, 30, 21, 12 };
	memset(g, 0, sizeof(*g));
	g->nlevels = 5;
	g->fmt = &x86_fmt;
	g->page_size = 4096;
	for (int i = 0; i < 5; i++) {
		struct level_geom *lv = &g->lv[i];
		lv->name = generic_names[i];
		lv->shift = shifts[i];
		lv->entries = 512;
		lv->table_bytes = 4096;
		lv->leaf_ok = i >= 2;
	}
	g->pmd_shift = 21;
	g->pud_shift = 30;
	if (!la57) {
		g->lv[0].shift = 39;
		g->lv[1].folded = true;
		g->lv[1].entries = 1;
		g->lv[1].table_bytes = 0;
	}
	return 0;
}

/* config: granule, va_bits, la57, max_table_pages, pa_bits */
int geom_stage1(struct geom *g, enum arch arch, const uint64_t *config)
{
	switch (arch) {
	case ARCH_S390:
		*g = s390_geom;
		return 0;
	case ARCH_ARM64:
		return geom_arm64(g, config[0], config[1]);
	case ARCH_X86_64:
		return geom_x86(g, config[2] != 0);
	default:
		return -EINVAL;
	}
}

/* KVM stage 2 (arm64, from the IPA size) and TDP (x86_64, 4-level EPT); s390 has the gmap instead. */
int geom_stage2(struct geom *g, enum arch arch, const uint64_t *config, unsigned ipa_bits,
		int *start_level, int *pgd_pages)
{
	memset(g, 0, sizeof(*g));
	g->nlevels = 4;
	if (arch == ARCH_X86_64) {
		g->fmt = &ept_fmt;
		g->page_size = 4096;
		for (int i = 0; i < 4; i++)
			g->lv[i] = (struct level_geom){ "ept", (uint8_t)(39 - 9 * i), 512, 4096, false, i >= 1 };
		*start_level = 0;
		*pgd_pages = 1;
		return 0;
	}
	if (arch != ARCH_ARM64)
		return -ENOSYS;
	uint64_t granule = config[0];
	int page_shift = granule == 4096 ? 12 : granule == 16384 ? 14 : 16;
	int B = page_shift - 3;
	/* kvm_set_ipa_limit: the host's PARange, capped at 48 bits unless PAGE_SIZE is 64K (v6.6: 52-bit
	 * IPA needs 64K pages and FEAT_LPA; LPA2 for 4K/16K is 6.9+). kvm_init_stage2_mmu: 0 means
	 * KVM_PHYS_SHIFT (40); anything above the limit or below 32 is -EINVAL. */
	unsigned limit = granule == 65536 && config[4] == 52 ? 52 : 48;
	if (ipa_bits == 0)
		ipa_bits = 40;
	if (ipa_bits < 32 || ipa_bits > limit)
		return -EINVAL;
	int levels = (int)(ipa_bits - 8) / B;
	if (levels < 2)
		levels = 2;
	if (levels > 4)
		levels = 4;
	int start = 4 - levels;
	int shift_start = B * (4 - start) + 3;
	int extra = (int)ipa_bits - page_shift - B * levels; /* log2 of concatenated tables */
	int pages = extra > 0 ? 1 << extra : 1;
	if (pages > 16)
		return -EINVAL;
	int min_block = granule == 4096 ? 1 : 2;
	g->fmt = &arm64_s2_fmt;
	g->page_size = granule;
	for (int i = 0; i < 4; i++) {
		struct level_geom *lv = &g->lv[i];
		lv->name = "stage2";
		lv->shift = (uint8_t)(B * (4 - i) + 3);
		lv->entries = 1u << B;
		lv->table_bytes = (uint32_t)granule;
		lv->folded = i < start;
		lv->leaf_ok = i == 3 || (i >= start && i >= min_block);
	}
	g->lv[start].entries = 1u << (ipa_bits - shift_start);
	g->lv[start].table_bytes = (uint32_t)(pages * granule);
	*start_level = start;
	*pgd_pages = pages;
	return 0;
}

const struct entry_fmt *stage2_fmt(enum arch arch)
{
	return arch == ARCH_X86_64 ? &ept_fmt : arch == ARCH_ARM64 ? &arm64_s2_fmt : &s390_fmt;
}

uint64_t level_size(const struct geom *g, int level)
{
	return 1ull << g->lv[level].shift;
}

/* The next level that has tables of its own; folded levels are pass-through. */
int child_level(const struct geom *g, int level)
{
	int l = level + 1;
	while (l < g->nlevels - 1 && g->lv[l].folded)
		l++;
	return l;
}

/* The level that holds PMD-size leaves, and PUD-size ones (-1: no such size on this geometry). */
int pmd_level(const struct geom *g)
{
	return level_for_size(g, 1ull << g->pmd_shift);
}

int pud_level(const struct geom *g)
{
	return g->pud_shift ? level_for_size(g, 1ull << g->pud_shift) : -1;
}

int level_for_size(const struct geom *g, uint64_t size)
{
	for (int l = g->nlevels - 1; l >= 0; l--)
		if (!g->lv[l].folded && level_size(g, l) == size)
			return l;
	return -1;
}

struct walk_data {
	struct engine *e;
	struct pgtable *pgt;
	const struct geom *g;
	struct walker *w;
	uint64_t start, end;
};

static int walk_table(struct walk_data *d, struct tref tbl, int level, uint64_t addr);

static int visit(struct walk_data *d, struct walk_ctx *ctx, unsigned flag)
{
	if (!(d->w->flags & flag))
		return 0;
	return d->w->cb(ctx, flag);
}

/* As kvm_pgtable's __kvm_pgtable_visit: a visitor may turn an empty entry into a
 * table at LEAF time, and the walk then descends into it. */
static int walk_entry(struct walk_data *d, struct walk_ctx *ctx)
{
	const struct entry_fmt *f = d->g->fmt;
	bool last = ctx->level == d->g->nlevels - 1;
	bool table = !last && f->kind(ctx->level, ctx->old) == E_TABLE;
	int ret;

	/* visitors may change the entry: read it again before descending */
	ret = visit(d, ctx, table ? WALK_TABLE_PRE : WALK_LEAF);
	ctx->old = entry_get(d->e, ctx->tbl, ctx->idx);
	table = !last && f->kind(ctx->level, ctx->old) == E_TABLE;
	if (ret || !table)
		return ret;

	int clevel = child_level(d->g, ctx->level);
	if (d->w->depth_limit && clevel >= d->w->depth_limit)
		return 0;
	struct tref child = tref_from_phys(d->e, f->addr(ctx->level, ctx->old));
	if (child.blk < 0 || !tref_alive(d->e, child)) {
		violate(d->e, V_ENGINE_ASSERT, "level-%d entry 0x%llx points at no live table",
			ctx->level, (unsigned long long)ctx->old);
		return -EFAULT;
	}
	ret = walk_table(d, child, clevel, ctx->addr);
	if (ret)
		return ret;
	ctx->old = entry_get(d->e, ctx->tbl, ctx->idx);
	return visit(d, ctx, WALK_TABLE_POST);
}

static int walk_table(struct walk_data *d, struct tref tbl, int level, uint64_t base)
{
	const struct level_geom *lv = &d->g->lv[level];
	unsigned flags = d->w->flags;
	const struct block *b = &d->e->blocks[tbl.blk];
	bool last = level == d->g->nlevels - 1;
	if ((flags & WALK_SKIP_EMPTY) && !b->nonempty[tbl.half])
		return 0;
	if (last && !(flags & WALK_LEAF))
		return 0;
	uint64_t lo = d->start > base ? d->start : base;
	struct walk_ctx ctx = { .e = d->e, .pgt = d->pgt, .g = d->g, .tbl = tbl,
				.level = level, .end = d->end, .arg = d->w->arg };
	/* Most entries a skipping walk passes are the canonical empty value: tell them without the indirect
	 * kind() call, which then sees only the rest (and still decides for any other empty encoding). */
	uint64_t empty = (flags & WALK_SKIP_EMPTY) ? d->g->fmt->empty(level) : 0;
	unsigned sh = block_chunk_shift(b);
	for (uint32_t idx = (uint32_t)((lo - base) >> lv->shift); idx < lv->entries; idx++) {
		uint64_t ea = base + ((uint64_t)idx << lv->shift);
		if (ea >= d->end)
			break;
		/* a chunk entry_write never touched holds only empty entries: nothing to visit there (the
		 * bits are read afresh: a visitor may have written, and the pool may have moved) */
		if ((flags & WALK_SKIP_EMPTY) && !(d->e->blocks[tbl.blk].occ[tbl.half] >> (idx >> sh) & 1)) {
			idx |= (1u << sh) - 1;
			continue;
		}
		ctx.idx = idx;
		ctx.addr = ea;
		ctx.old = entry_get(d->e, tbl, idx);
		if ((flags & WALK_SKIP_EMPTY) && (ctx.old == empty || d->g->fmt->kind(level, ctx.old) == E_EMPTY))
			continue;
		int ret = walk_entry(d, &ctx);
		if (ret)
			return ret;
	}
	return 0;
}

/* Visit every entry that maps any part of [addr, end), from the top table down. */
int pt_walk(struct engine *e, struct pgtable *pgt, const struct geom *g,
	    uint64_t addr, uint64_t end, struct walker *w)
{
	struct walk_data d = { e, pgt, g, w, addr, end };
	if (end <= addr || pgt->root.blk < 0)
		return 0;
	return walk_table(&d, pgt->root, pgt->top, 0);
}
