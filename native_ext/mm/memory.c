/* mm/memory.c: handle_mm_fault and the PTE-level fault paths, zapping and freeing tables over a range
 * (unmap_vmas, free_pgtables), lock_mm_and_find_vma. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

/* Unlink the table an entry points at and free it through the table-free path. */
static void free_child_table(struct engine *e, struct walk_ctx *ctx)
{
	const struct entry_fmt *f = ctx->g->fmt;
	int mm = ctx->pgt->mm;
	struct tref child = tref_from_phys(e, f->addr(ctx->level, ctx->old));
	entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->empty(ctx->level));
	table_set_linked(e, child, false);
	if (child_level(ctx->g, ctx->level) == ctx->g->nlevels - 1)
		pte_free_tlb(e, mm, child, ctx->addr);
	else
		crst_table_free(e, mm, child);
}

struct unmap_arg { uint64_t start, end; bool free_tables; struct mm *m; int mm; };

/* unmap_page_range (zap_pte_range, zap_huge_pmd) and free_pgtables over one range. */
static int unmap_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct unmap_arg *a = ctx->arg;
	struct engine *e = ctx->e;
	const struct entry_fmt *f = ctx->g->fmt;
	uint64_t size = level_size(ctx->g, ctx->level);

	if (visit == WALK_LEAF) {
		if (f->kind(ctx->level, ctx->old) != E_LEAF)
			return 0;
		/* zap_pmd_range: a THP the range covers partly is split and the walk descends into it; a
		 * hugetlb leaf stays whole (hugetlb ranges are aligned up front) */
		if (ctx->addr < a->start || ctx->addr + size > a->end) {
			if (ctx->level == e->pmd_lvl && (pmd_has_deposit(e, ctx->old) || pmd_is_file(e, ctx->old)))
				__split_huge_pmd(e, a->mm, ctx->addr); /* a file PMD is zapped whole */
			return e->viol ? -EFAULT : 0;
		}
		uint64_t pfn = f->addr(ctx->level, ctx->old) >> 12;
		bool deposit = ctx->level == e->pmd_lvl && pmd_has_deposit(e, ctx->old);
		entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->empty(ctx->level));
		emit(e, EV_LEAF_ZAP, ctx->level, ctx->addr, pfn, a->mm);
		if (deposit)
			zap_deposited_table(e, a->mm, ctx->tbl);
		data_put(e, pfn);
		return e->viol ? -EFAULT : 0;
	}
	/* TABLE_POST: the table no longer covers any VMA */
	if (!a->free_tables)
		return 0;
	uint64_t cov_end = ctx->addr + size;
	if (cov_end < ctx->addr)
		cov_end = ~0ull;
	if (vma_overlaps(a->m, ctx->addr, cov_end))
		return 0;
	/* parts of the table this walk did not cover may still map something (exit goes VMA by VMA) */
	struct tref child = tref_from_phys(e, ctx->g->fmt->addr(ctx->level, ctx->old));
	if (e->blocks[child.blk].nonempty[child.half])
		return 0;
	free_child_table(e, ctx);
	return e->viol ? -EFAULT : 0;
}

int unmap_range(struct engine *e, int mm, uint64_t start, uint64_t end, bool free_tables)
{
	struct mm *m = &e->mms[mm];
	struct unmap_arg a = { start, end, free_tables, m, mm };
	struct walker w = { unmap_visit, &a, WALK_LEAF | WALK_TABLE_POST | WALK_SKIP_EMPTY, 0 };
	return pt_walk(e, &m->pgt, &e->geom, start, end, &w);
}

/* mm/pt_reclaim.c (6.14+): zap_pte_range frees a PTE table whose whole PMD range it zapped (it is empty
 * then): pmd cleared, free_pte -> pte_free_tlb, the RCU table-free path. */
static void reclaim_pt(struct engine *e, int mm, uint64_t start, uint64_t end)
{
	const struct geom *g = &e->geom;
	int ml = e->pmd_lvl;
	uint64_t pmd = pmd_size(e);
	for (uint64_t b = (start + pmd - 1) & ~(pmd - 1); b >= start && b + pmd <= end && b + pmd > b && !e->viol;
	     b += pmd) {
		struct tref tbl;
		uint32_t idx;
		uint64_t ent = host_entry_at(e, mm, b, ml, &tbl, &idx);
		if (g->fmt->kind(ml, ent) != E_TABLE)
			continue;
		struct tref pte = tref_from_phys(e, g->fmt->addr(ml, ent));
		if (e->blocks[pte.blk].nonempty[pte.half])
			continue;
		entry_write(e, tbl, ml, idx, g->fmt->empty(ml));
		table_set_linked(e, pte, false);
		pte_free_tlb(e, mm, pte, b);
	}
}

/* zap_page_range_single: the range's notifiers, its leaves zapped, the tables kept (or reclaimed). */
void zap_page_range_single(struct engine *e, int mm, const struct vma *v, uint64_t start, uint64_t end)
{
	uint64_t ns = start, ne = end;
	adjust_range_if_pmd_sharing_possible(e, v, &ns, &ne); /* the notifier's range only */
	mmu_notifier_invalidate_range(e, mm, ns, ne);
	tlb_gather_mmu(e, mm, start, end);
	unmap_hugepage_vma(e, mm, v, start, end); /* a shared hugetlb VMA: unshare, zap */
	unmap_range(e, mm, start, end, false);
	if (e->knob[K_PT_RECLAIM] == 1 && !(v->flags & VMA_HUGETLB) && !e->viol)
		reclaim_pt(e, mm, start, end);
	tlb_finish_mmu(e);
}

/* do_anonymous_page: the zero page for a read (unless mm_forbids_zeropage), else a new page; a new page
 * needs the VMA's anon_vma. */
static int do_anonymous_page(struct engine *e, int mm, struct vma *v, uint64_t addr, bool write, struct tref tbl,
			     uint32_t idx, uint64_t *pfn, uint64_t *size)
{
	const struct geom *g = &e->geom;
	int pl = pte_level(e);
	struct mm *m = &e->mms[mm];
	if (!write && !mm_forbids_zeropage(e, m)) {
		uint64_t z = my_zero_pfn(e, addr);
		entry_write(e, tbl, pl, idx, g->fmt->leaf(pl, z << 12, false));
		emit(e, EV_LEAF_SET, pl, addr, z, mm);
		set_out(e, addr, z, pl, pfn, size);
		return 0;
	}
	int ret = anon_vma_prepare(e, m, v);
	if (ret)
		return ret;
	uint64_t head = data_alloc(e, page_frames(e));
	if (!head)
		return -ENOMEM;
	entry_write(e, tbl, pl, idx, g->fmt->leaf(pl, head << 12, true));
	data_lookup(e, head)->mapcount = 1;
	emit(e, EV_LEAF_SET, pl, addr, head, mm);
	set_out(e, addr, head, pl, pfn, size);
	return 0;
}

/* handle_mm_fault: returns 0 and the 4K frame mapped at addr (new or existing) and the leaf size. */
int handle_mm_fault(struct engine *e, int mm, uint64_t addr, bool write, uint64_t *pfn_out, uint64_t *size_out)
{
	struct mm *m = &e->mms[mm];
	const struct geom *g = &e->geom;
	addr &= ~(g->page_size - 1);
	struct vma *v = vma_find(m, addr);
	if (!v)
		return -EFAULT;
	if (v->flags & VMA_HUGETLB)
		return hugetlb_fault(e, mm, v, addr, write, pfn_out, size_out);
	if (v->shm)
		return do_shmem_fault(e, mm, v, addr, write, pfn_out, size_out);
	int ml = e->pmd_lvl, pl = pte_level(e), lvl;
	struct tref tbl;
	uint32_t idx;
	/* __handle_mm_fault: p4d_alloc, pud_alloc, pmd_alloc */
	int ret = pt_slot(e, mm, addr, ml, &tbl, &idx, &lvl);
	if (ret)
		return ret;
	uint64_t pmdval = entry_get(e, tbl, idx);
	enum entry_kind k = g->fmt->kind(lvl, pmdval);
	if (lvl == ml && k == E_EMPTY && thp_fault_allowed(e, m, v, addr)) {
		ret = do_huge_pmd_anonymous_page(e, mm, v, addr, write, tbl, idx, pfn_out, size_out);
		if (ret != FALLBACK)
			return ret;
	} else if (k == E_LEAF) {
		if (!write || g->fmt->writable(lvl, pmdval)) {
			set_out(e, addr, g->fmt->addr(lvl, pmdval) >> 12, lvl, pfn_out, size_out);
			return 0;
		}
		ret = do_huge_pmd_wp_page(e, mm, addr, tbl, idx, pfn_out, size_out);
		if (ret != FALLBACK)
			return ret;
	}
	/* handle_pte_fault */
	ret = pt_slot(e, mm, addr, pl, &tbl, &idx, &lvl);
	if (ret)
		return ret;
	uint64_t pte = entry_get(e, tbl, idx);
	if (g->fmt->kind(lvl, pte) == E_EMPTY)
		return do_anonymous_page(e, mm, v, addr, write, tbl, idx, pfn_out, size_out);
	if (write && !g->fmt->writable(lvl, pte))
		return do_wp_page(e, mm, v, addr, tbl, idx, lvl, pfn_out, size_out);
	set_out(e, addr, g->fmt->addr(lvl, pte) >> 12, lvl, pfn_out, size_out);
	return 0;
}

/* A user page fault's lock (v6.6 do_user_addr_fault, arm64 do_page_fault, s390 do_exception): lock_vma_under_rcu
 * first, which takes only that VMA's read lock and serves an anonymous VMA that has an anon_vma, unless a writer
 * has write-locked it (vma_start_write); else lock_mm_and_find_vma: mmap_lock for read. */
int lock_mm_and_find_vma(struct engine *e, int mm, uint64_t addr)
{
	const struct vma *v = vma_find(&e->mms[mm], addr);
	bool anonymous = v && !v->shm && !(v->flags & VMA_HUGETLB) && v->anon;
	if (anonymous && lock_holder(e, LC_VMA, (uint64_t)mm, LM_READ, addr, addr + 1, NULL) < 0)
		return lock_acquire_range(e, LC_VMA, (uint64_t)mm, LM_READ, addr, addr + 1);
	return lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_READ);
}
