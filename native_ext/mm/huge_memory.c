/* mm/huge_memory.c: PMD-size THP: the huge anonymous fault and its write-protect fault, split_huge_pmd, the
 * deposited PTE table of a huge PMD. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

/* zap_deposited_table: withdraw the PMD's deposit and pte_free it. */
void zap_deposited_table(struct engine *e, int mm, struct tref pmd_tbl)
{
	struct tref t = pgtable_trans_huge_withdraw(e, pmd_tbl);
	if (t.blk >= 0)
		pte_free(e, mm, t);
}

/* __split_huge_pmd (+ __split_huge_pmd_locked, __split_huge_zero_page_pmd): notify the block, withdraw the
 * deposited table, fill it with PTEs for the same pages (zero-page PTEs for the huge zero page; the
 * compound stays a compound, the write bit is kept) and populate the PMD with it. -EINVAL: no THP there. */
int __split_huge_pmd(struct engine *e, int mm, uint64_t addr)
{
	const struct geom *g = &e->geom;
	int lvl, ml = e->pmd_lvl, pl = pte_level(e);
	struct tref tbl;
	uint32_t idx;
	uint64_t pfn;
	if (host_lookup(e, mm, addr, &lvl, &pfn, &tbl, &idx) != E_LEAF || lvl != ml)
		return -EINVAL;
	uint64_t old = entry_get(e, tbl, idx);
	uint64_t size = level_size(g, ml), base = addr & ~(size - 1);
	if (pmd_is_file(e, old)) {
		/* __split_huge_pmd_locked of a file VMA: the PMD is cleared and the page unmapped there (the next fault
		 * maps it again); no PTE table */
		uint64_t head = g->fmt->addr(ml, old) >> 12;
		mmu_notifier_invalidate_range(e, mm, base, base + size);
		entry_write(e, tbl, ml, idx, g->fmt->empty(ml));
		flush_tlb_range(e, mm, base, base + size); /* pmdp_huge_clear_flush */
		emit(e, EV_LEAF_ZAP, ml, base, head, mm);
		data_put(e, head);
		return 0;
	}
	if (!pmd_has_deposit(e, old))
		return -EINVAL;
	uint64_t head = g->fmt->addr(ml, old) >> 12;
	bool zero = head == HUGE_ZERO_PFN, write = g->fmt->writable(ml, old);
	mmu_notifier_invalidate_range(e, mm, base, base + size);
	struct tref t = pgtable_trans_huge_withdraw(e, tbl);
	if (t.blk < 0)
		return -EFAULT;
	uint32_t n = g->lv[pl].entries;
	uint64_t frames = page_frames(e);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t va = base + (uint64_t)i * g->page_size;
		uint64_t p = zero ? my_zero_pfn(e, va) : head + i * frames;
		entry_write(e, t, pl, i, g->fmt->leaf(pl, p << 12, write && !zero));
	}
	if (!zero)
		data_lookup(e, head)->mapcount += n - 1;
	entry_write(e, tbl, ml, idx, g->fmt->table(ml, tref_phys(t)));
	flush_tlb_range(e, mm, base, base + size); /* pmdp_invalidate before the PTEs go in */
	table_set_linked(e, t, true);
	emit(e, EV_LEAF_ZAP, ml, base, head, mm);
	emit(e, EV_LEAF_SET, pl, base, zero ? my_zero_pfn(e, base) : head, mm);
	return 0;
}

int split_huge_pmd(struct engine *e, int mm, uint64_t addr)
{
	return __split_huge_pmd(e, mm, addr);
}

/* split_huge_pmd_if_needed: an unaligned boundary inside a block the VMA covers splits a THP there. With no THP
 * there the block is still notified: split_huge_pmd_address calls __split_huge_pmd wherever mm_find_pmd finds
 * the PMD entry (a PMD table exists; the entry itself is not looked at), and __split_huge_pmd opens its
 * mmu_notifier range over the block before it takes the PMD lock and finds nothing to split. So KVM zaps the
 * block's stage-2 range (and moves mmu_invalidate_seq) when a VMA is split inside it. */
int split_huge_pmd_if_needed(struct engine *e, int mm, const struct vma *v, uint64_t addr)
{
	uint64_t pmd = pmd_size(e), down = addr & ~(pmd - 1);
	if (!(addr & (pmd - 1)) || (v->flags & VMA_HUGETLB) || down < v->start || down + pmd > v->end)
		return 0;
	int ret = __split_huge_pmd(e, mm, addr);
	if (ret == -EINVAL) {
		int lvl = -1;
		host_lookup(e, mm, addr, &lvl, NULL, NULL, NULL);
		if (lvl >= e->pmd_lvl) /* mm_find_pmd: pgd, p4d and pud present */
			mmu_notifier_invalidate_range(e, mm, down, down + pmd);
		return 0;
	}
	return ret;
}

int do_split(struct engine *e, int mm, uint64_t addr)
{
	struct mm *m = &e->mms[mm];
	struct vma *v = vma_find(m, addr);
	if (!v || (v->flags & VMA_HUGETLB))
		return -EINVAL;
	return __split_huge_pmd(e, mm, addr);
}

/* do_huge_pmd_anonymous_page: anon_vma_prepare, then the huge zero page for a read
 * (transparent_hugepage/use_zero_page=1) or a new THP, each with its deposited PTE table. */
int do_huge_pmd_anonymous_page(struct engine *e, int mm, struct vma *v, uint64_t addr, bool write,
				      struct tref tbl, uint32_t idx, uint64_t *pfn, uint64_t *size)
{
	const struct geom *g = &e->geom;
	int ml = e->pmd_lvl;
	struct mm *m = &e->mms[mm];
	uint64_t sz = pmd_size(e), base = addr & ~(sz - 1);
	int ret = anon_vma_prepare(e, m, v);
	if (ret)
		return ret;
	bool zero = !write && !mm_forbids_zeropage(e, m);
	uint64_t head = zero ? HUGE_ZERO_PFN : data_alloc(e, sz >> 12);
	if (!head)
		return FALLBACK;
	struct tref dep;
	ret = alloc_table_for(e, mm, pte_level(e), &dep); /* pte_alloc_one */
	if (ret) {
		if (!zero) {
			data_lookup(e, head)->mapcount = 1;
			data_put(e, head);
		}
		return ret;
	}
	pgtable_trans_huge_deposit(e, tbl, dep);
	entry_write(e, tbl, ml, idx, g->fmt->leaf(ml, head << 12, !zero));
	if (!zero)
		data_lookup(e, head)->mapcount = 1;
	emit(e, EV_LEAF_SET, ml, base, head, mm);
	set_out(e, addr, head, ml, pfn, size);
	return 0;
}

/* do_huge_pmd_wp_page: the huge zero page falls back (split, then do_wp_page on the PTE); a THP nobody else
 * maps is reused; a shared one is split and the fault goes on at the PTE level. */
int do_huge_pmd_wp_page(struct engine *e, int mm, uint64_t addr, struct tref tbl, uint32_t idx,
			       uint64_t *pfn, uint64_t *size)
{
	const struct geom *g = &e->geom;
	int ml = e->pmd_lvl;
	uint64_t phys = g->fmt->addr(ml, entry_get(e, tbl, idx));
	if ((phys >> 12) == HUGE_ZERO_PFN && e->knob[K_HUGE_ZERO_WP] == 1) {
		/* do_huge_zero_wp_pmd (6.13+): a new THP replaces the huge zero page, the deposit stays */
		uint64_t sz = pmd_size(e), base = addr & ~(sz - 1);
		uint64_t head = data_alloc(e, sz >> 12);
		if (head) {
			mmu_notifier_invalidate_range(e, mm, base, base + sz);
			entry_write(e, tbl, ml, idx, g->fmt->leaf(ml, head << 12, true));
			flush_tlb_range(e, mm, base, base + sz); /* pmdp_huge_clear_flush */
			data_lookup(e, head)->mapcount = 1;
			emit(e, EV_LEAF_SET, ml, base, head, mm);
			set_out(e, addr, head, ml, pfn, size);
			return 0;
		}
	}
	if ((phys >> 12) != HUGE_ZERO_PFN) {
		struct compound *c = data_lookup(e, phys >> 12);
		int ret = c ? lock_would_wait(e, LC_FOLIO, c->pfn, LM_WRITE) : 0;
		if (ret)
			return ret; /* folio_trylock failed: do_huge_pmd_wp_page sleeps in folio_lock */
		if (c && c->mapcount == 1) {
			entry_write(e, tbl, ml, idx, g->fmt->leaf(ml, phys, true));
			set_out(e, addr, phys >> 12, ml, pfn, size);
			return 0;
		}
	}
	int ret = __split_huge_pmd(e, mm, addr);
	return ret ? ret : FALLBACK;
}

bool thp_fault_allowed(struct engine *e, struct mm *m, const struct vma *v, uint64_t addr)
{
	uint64_t pmd = pmd_size(e), base = addr & ~(pmd - 1);
	/* hugepage_vma_check (sysfs "madvise": VM_HUGEPAGE needed), transhuge_vma_suitable; s390 marks the
	 * VMAs of an mm with PGSTEs VM_NOHUGEPAGE (thp_split_mm) */
	return (v->flags & VMA_THP) && !(v->flags & VMA_NOHUGE) && base >= v->start && base + pmd <= v->end &&
	       !(m->has_pgste && e->knob[K_THP_IN_PGSTE] == 0) && !thp_unsupported(e);
}
