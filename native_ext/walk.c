/* walk.c: geometry as data, the per-arch entry formats, and the one generic table walker. */
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

static const struct entry_fmt s390_fmt = {
	s390_empty, s390_table, s390_leaf, s390_kind, s390_addr,
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
};

int geom_stage1(struct geom *g, enum arch arch, const uint64_t *config)
{
	(void)config;
	if (arch != ARCH_S390)
		return -ENOSYS;
	*g = s390_geom;
	return 0;
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

	struct tref child = tref_from_phys(d->e, f->addr(ctx->level, ctx->old));
	if (child.blk < 0 || !tref_alive(d->e, child)) {
		violate(d->e, V_ENGINE_ASSERT, "level-%d entry 0x%llx points at no live table",
			ctx->level, (unsigned long long)ctx->old);
		return -EFAULT;
	}
	ret = walk_table(d, child, child_level(d->g, ctx->level), ctx->addr);
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
	for (uint32_t idx = (uint32_t)((lo - base) >> lv->shift); idx < lv->entries; idx++) {
		uint64_t ea = base + ((uint64_t)idx << lv->shift);
		if (ea >= d->end)
			break;
		ctx.idx = idx;
		ctx.addr = ea;
		ctx.old = entry_get(d->e, tbl, idx);
		if ((flags & WALK_SKIP_EMPTY) && d->g->fmt->kind(level, ctx.old) == E_EMPTY)
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
