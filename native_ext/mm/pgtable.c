/* mm/pgtable.c: the page-table primitives every mm path shares: lookups, allocation down to a level
 * (__pte_alloc and friends) and the PTE-table frees, which go through the arch's struct mm_ops. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

/* crst_table_free (s390's name; pmd_free_tlb, pud_free_tlb, p4d_free_tlb elsewhere): an upper-level table
 * free_pgtables unlinked, after a grace period when the table_free knob says RCU */
void crst_table_free(struct engine *e, int mm, struct tref t)
{
	bool rcu = e->knob[K_TABLE_FREE] == TF_RCU && mm >= 0;
	table_free(e, t, rcu ? TABLE_FREE_RCU : TABLE_FREE_NOW, e->blocks[t.blk].level[0], mm);
}

/* The PTE-table frees generic mm code makes; what each does is the arch's (struct mm_ops). */
/* pte_free_tlb: an unlinked PTE table that walkers may still see (free_pte_range, reclaim, retract) */
void pte_free_tlb(struct engine *e, int mm, struct tref t, uint64_t vmaddr)
{
	e->mm_ops->pte_free_tlb(e, mm, t, vmaddr);
}

/* pte_free_defer (mm/pgtable-generic.c): a table a lockless walker may still use goes after a grace period */
void pte_free_defer(struct engine *e, int mm, struct tref t, uint64_t vmaddr)
{
	e->mm_ops->pte_free_defer(e, mm, t, vmaddr);
}

/* pte_free: a table no walker can reach (a deposit, or one never linked) goes back at once, no RCU. */
void pte_free(struct engine *e, int mm, struct tref t)
{
	e->mm_ops->pte_free(e, mm, t);
}

struct lookup_arg { int stop; int level; uint64_t entry; struct tref tbl; uint32_t idx; uint64_t addr; };

static int lookup_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct lookup_arg *a = ctx->arg;
	(void)visit;
	if (ctx->level > a->stop)
		return 1;
	a->level = ctx->level;
	a->entry = ctx->old;
	a->tbl = ctx->tbl;
	a->idx = ctx->idx;
	a->addr = ctx->addr;
	return 0;
}

/* The deepest entry mapping addr: its kind, level and location; pfn of the 4K page for a leaf. */
int host_lookup(struct engine *e, int mm, uint64_t addr, int *level, uint64_t *pfn,
		struct tref *tbl, uint32_t *idx)
{
	struct lookup_arg a = { e->geom.nlevels - 1, -1, 0, TREF_NONE, 0, 0 };
	struct walker w = { lookup_visit, &a, WALK_LEAF | WALK_TABLE_PRE, 0 };
	pt_walk(e, &e->mms[mm].pgt, &e->geom, addr, addr + 1, &w);
	if (a.level < 0)
		return E_EMPTY;
	if (level)
		*level = a.level;
	if (tbl)
		*tbl = a.tbl;
	if (idx)
		*idx = a.idx;
	enum entry_kind k = e->geom.fmt->kind(a.level, a.entry);
	if (k == E_LEAF && pfn)
		*pfn = (e->geom.fmt->addr(a.level, a.entry) >> 12) + ((addr - a.addr) >> 12);
	return k;
}

/* The entry at a given level on the way to addr (empty when the walk stops above it). */
uint64_t host_entry_at(struct engine *e, int mm, uint64_t addr, int level, struct tref *tbl, uint32_t *idx)
{
	struct lookup_arg a = { level, -1, 0, TREF_NONE, 0, 0 };
	struct walker w = { lookup_visit, &a, WALK_LEAF | WALK_TABLE_PRE, 0 };
	pt_walk(e, &e->mms[mm].pgt, &e->geom, addr, addr + 1, &w);
	if (a.level != level)
		return e->geom.fmt->empty(level);
	if (tbl)
		*tbl = a.tbl;
	if (idx)
		*idx = a.idx;
	return a.entry;
}

int alloc_table_for(struct engine *e, int mm, int level, struct tref *out)
{
	if (level == e->geom.nlevels - 1 && e->mm_ops->pte_alloc_one)
		return e->mm_ops->pte_alloc_one(e, mm, out); /* s390: page_table_alloc */
	const struct level_geom *lv = &e->geom.lv[level];
	int ret = table_alloc(e, mm, level, (int)((lv->table_bytes + 4095) / 4096), out);
	if (!ret)
		emit(e, EV_TABLE_ALLOC, level, tref_phys(*out), mm, 0);
	return ret;
}

struct slot_arg { int mm; int target; struct tref tbl; uint32_t idx; int level; int ret; };

/* p4d_alloc / pud_alloc / pmd_alloc / pte_alloc: tables down to the target level, then stop at the entry
 * for the address (or at a leaf above it). */
static int slot_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct slot_arg *a = ctx->arg;
	struct engine *e = ctx->e;
	const struct entry_fmt *f = ctx->g->fmt;
	(void)visit;
	enum entry_kind k = f->kind(ctx->level, ctx->old);
	if (ctx->level >= a->target || k == E_LEAF) {
		a->tbl = ctx->tbl;
		a->idx = ctx->idx;
		a->level = ctx->level;
		return 1;
	}
	if (k == E_TABLE)
		return 0;
	struct tref t;
	int lvl = child_level(ctx->g, ctx->level);
	a->ret = alloc_table_for(e, a->mm, lvl, &t);
	if (a->ret)
		return 1;
	entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->table(ctx->level, tref_phys(t)));
	table_set_linked(e, t, true);
	return 0;
}

/* The slot of the entry at level target for addr, allocating the tables above it. */
int pt_slot(struct engine *e, int mm, uint64_t addr, int target, struct tref *tbl, uint32_t *idx, int *level)
{
	struct slot_arg a = { mm, target, TREF_NONE, 0, -1, 0 };
	struct walker w = { slot_visit, &a, WALK_LEAF | WALK_TABLE_PRE, 0 };
	pt_walk(e, &e->mms[mm].pgt, &e->geom, addr, addr + 1, &w);
	if (a.ret)
		return a.ret;
	if (a.level < 0) {
		violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_MM, .mm = mm },
			"no page-table slot for va 0x%llx in mm %d", (unsigned long long)addr, mm);
		return -EFAULT;
	}
	*tbl = a.tbl;
	*idx = a.idx;
	*level = a.level;
	return 0;
}

/* A PMD leaf that owns a deposited table: an anonymous THP or the huge zero page (not hugetlb, not a shmem folio:
 * do_set_pmd deposits nothing). */
bool pmd_has_deposit(struct engine *e, uint64_t pmdval)
{
	uint64_t pfn = e->geom.fmt->addr(e->pmd_lvl, pmdval) >> 12;
	if (pfn == HUGE_ZERO_PFN)
		return true;
	struct compound *c = data_lookup(e, pfn);
	return c && !c->hugetlb && !c->shm;
}

/* A PMD leaf of a shmem folio (a file THP). */
bool pmd_is_file(struct engine *e, uint64_t pmdval)
{
	struct compound *c = data_lookup(e, e->geom.fmt->addr(e->pmd_lvl, pmdval) >> 12);
	return c && c->shm && !c->hugetlb; /* a hugetlbfs file's page is hugetlb, never split */
}
