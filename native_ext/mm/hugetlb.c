/* mm/hugetlb.c: hugetlb VMAs: their page size and hugetlb_fault. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

uint64_t hugetlb_size(const struct engine *e, const struct vma *v)
{
	int lvl = (v->flags & VMA_HUGETLB_PMD) ? e->pmd_lvl : pud_level(&e->geom);
	return level_size(&e->geom, lvl);
}

/* hugetlb_fault: hugetlb_no_page (a new page, read-only for a read of a private mapping) or hugetlb_wp. */
int hugetlb_fault(struct engine *e, int mm, struct vma *v, uint64_t addr, bool write, uint64_t *pfn,
			 uint64_t *size)
{
	const struct geom *g = &e->geom;
	int target = (v->flags & VMA_HUGETLB_PMD) ? e->pmd_lvl : pud_level(g), lvl;
	struct tref tbl;
	uint32_t idx;
	int ret = pt_slot(e, mm, addr, target, &tbl, &idx, &lvl); /* huge_pte_alloc */
	if (ret)
		return ret;
	if (lvl != target)
		return -EFAULT;
	uint64_t ent = entry_get(e, tbl, idx), sz = level_size(g, target);
	if (g->fmt->kind(target, ent) == E_TABLE) {
		violate(e, V_ENGINE_ASSERT, "hugetlb fault at va 0x%llx finds a page table at the hugetlb level",
			(unsigned long long)addr);
		return -EFAULT;
	}
	if (g->fmt->kind(target, ent) == E_LEAF) {
		if (write && !g->fmt->writable(target, ent))
			return do_wp_page(e, mm, v, addr, tbl, idx, target, pfn, size);
		set_out(e, addr, g->fmt->addr(target, ent) >> 12, target, pfn, size);
		return 0;
	}
	ret = anon_vma_prepare(e, &e->mms[mm], v);
	if (ret)
		return ret;
	uint64_t head = data_alloc(e, sz >> 12);
	if (!head)
		return -ENOMEM;
	struct compound *c = data_lookup(e, head);
	c->hugetlb = 1;
	c->mapcount = 1;
	entry_write(e, tbl, target, idx, g->fmt->leaf(target, head << 12, write));
	emit(e, EV_LEAF_SET, target, addr & ~(sz - 1), head, mm);
	set_out(e, addr, head, target, pfn, size);
	return 0;
}
