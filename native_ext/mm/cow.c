/* mm/cow.c: the write fault on a mapped read-only page (mm/memory.c's do_wp_page and wp_page_copy), shared by the
 * PTE, THP and hugetlb fault paths: below them all, so that hugetlb.c need not call back into memory.c. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

/* wp_page_copy: a new page replaces the zero-page or shared leaf; the range is notified (KVM zaps). */
static int wp_page_copy(struct engine *e, int mm, struct vma *v, uint64_t addr, struct tref tbl, uint32_t idx,
			int level, uint64_t *pfn, uint64_t *size)
{
	const struct geom *g = &e->geom;
	uint64_t sz = level_size(g, level), base = addr & ~(sz - 1);
	uint64_t old = g->fmt->addr(level, entry_get(e, tbl, idx)) >> 12;
	int ret = anon_vma_prepare(e, &e->mms[mm], v);
	if (ret)
		return ret;
	uint64_t head = data_alloc(e, sz >> 12);
	if (!head)
		return -ENOMEM;
	if (v->flags & VMA_HUGETLB)
		data_lookup(e, head)->hugetlb = 1;
	mmu_notifier_invalidate_range(e, mm, base, base + sz);
	entry_write(e, tbl, level, idx, g->fmt->leaf(level, head << 12, true));
	flush_tlb_range(e, mm, base, base + sz); /* ptep_clear_flush (huge_ptep_clear_flush) before the old page goes */
	data_lookup(e, head)->mapcount = 1;
	emit(e, EV_LEAF_SET, level, base, head, mm);
	data_put(e, old); /* page_remove_rmap: the old page loses this mapping (not the zero page) */
	set_out(e, addr, head, level, pfn, size);
	return 0;
}

/* do_wp_page / hugetlb_wp: reuse a page nobody else maps (wp_can_reuse_anon_folio: refcount 1, here
 * the mapcount of the whole folio, and folio_trylock: a folio an rmap walker holds, with its reference, is
 * copied), else copy. */
int do_wp_page(struct engine *e, int mm, struct vma *v, uint64_t addr, struct tref tbl, uint32_t idx,
		      int level, uint64_t *pfn, uint64_t *size)
{
	const struct geom *g = &e->geom;
	uint64_t ent = entry_get(e, tbl, idx), phys = g->fmt->addr(level, ent);
	if (!is_zero_pfn(phys >> 12)) {
		struct compound *c = data_lookup(e, phys >> 12);
		if (c && c->mapcount == 1 && !folio_locked(e, c->pfn)) {
			entry_write(e, tbl, level, idx, g->fmt->leaf(level, phys, true)); /* wp_page_reuse */
			set_out(e, addr, phys >> 12, level, pfn, size);
			return 0;
		}
	}
	return wp_page_copy(e, mm, v, addr, tbl, idx, level, pfn, size);
}
