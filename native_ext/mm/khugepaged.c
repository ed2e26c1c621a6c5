/* mm/khugepaged.c: MADV_COLLAPSE of anonymous memory (hpage_collapse_scan_pmd, collapse_huge_page) and its
 * result mapping (scan_result to errno, in one place); file collapse is in shmem.c for now. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

/* collapse_huge_page (anonymous): a new THP, the PMD cleared and notified, the old pages dropped, the old PTE
 * table deposited (not freed) and the PMD leaf set. anon_vma_lock_write waits for an rmap walker holding the
 * VMA's anon_vma root, and tlb_remove_table_sync_one for IRQs-off GUP-fast walkers, which the sequential model
 * cannot do: with either in flight the collapse does not start (SCAN_WAIT). */
static int collapse_huge_page(struct engine *e, int mm, uint64_t base, struct tref pmd_tbl, uint32_t pmd_idx)
{
	const struct geom *g = &e->geom;
	int pl = pte_level(e), ml = e->pmd_lvl;
	const struct vma *v = vma_find(&e->mms[mm], base);
	/* mmap_read_unlock, then mmap_write_lock, vma_start_write, anon_vma_lock_write; after the pmd is cleared
	 * tlb_remove_table_sync_one's IPI waits for every IRQs-off GUP-fast walker */
	lock_release(e, LC_MMAP, (uint64_t)mm);
	if (lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_WRITE) ||
	    (v && lock_acquire_range(e, LC_VMA, (uint64_t)mm, LM_WRITE, v->start, v->end)) ||
	    (v && v->anon && lock_acquire(e, LC_ANON_VMA, v->anon_root, LM_WRITE)) ||
	    lock_would_wait(e, LC_IRQS_OFF, 0, LM_WRITE))
		return SCAN_WAIT;
	uint64_t sz = pmd_size(e);
	uint64_t head = data_alloc(e, sz >> 12);
	if (!head)
		return SCAN_ALLOC_HUGE_PAGE_FAIL;
	mmu_notifier_invalidate_range(e, mm, base, base + sz);
	uint64_t pmdval = entry_get(e, pmd_tbl, pmd_idx);
	struct tref pte_tbl = tref_from_phys(e, g->fmt->addr(ml, pmdval));
	entry_write(e, pmd_tbl, ml, pmd_idx, g->fmt->empty(ml)); /* pmdp_collapse_flush */
	table_set_state(e, pte_tbl, L_PRIVATE);
	uint32_t n = g->lv[pl].entries;
	uint64_t *pte = tref_mem(e, pte_tbl);
	for (uint32_t i = 0; i < n && !e->viol; i++) { /* __collapse_huge_page_copy_succeeded */
		if (g->fmt->kind(pl, pte[i]) != E_LEAF)
			continue;
		uint64_t pfn = g->fmt->addr(pl, pte[i]) >> 12;
		entry_write(e, pte_tbl, pl, i, g->fmt->empty(pl));
		data_put(e, pfn);
	}
	pgtable_trans_huge_deposit(e, pmd_tbl, pte_tbl);
	entry_write(e, pmd_tbl, ml, pmd_idx, g->fmt->leaf(ml, head << 12, true));
	data_lookup(e, head)->mapcount = 1;
	emit(e, EV_LEAF_SET, ml, base, head, mm);
	/* anon_vma_unlock_write, mmap_write_unlock; madvise_collapse takes mmap_lock for read again */
	if (v && v->anon)
		lock_release(e, LC_ANON_VMA, v->anon_root);
	lock_release(e, LC_VMA, (uint64_t)mm);
	lock_release(e, LC_MMAP, (uint64_t)mm);
	lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_READ);
	return SCAN_SUCCEED;
}

/* hpage_collapse_scan_pmd as MADV_COLLAPSE runs it (no max_ptes_none/shared/referenced limits):
 * find_pmd_or_thp_or_none, then the PTEs: none and zero-page PTEs count as none; a page an rmap walker holds
 * is off the LRU (SCAN_PAGE_LRU, before SCAN_PAGE_LOCK); a block with no writable PTE is SCAN_PAGE_RO. */
static int hpage_collapse_scan_pmd(struct engine *e, int mm, uint64_t base)
{
	const struct geom *g = &e->geom;
	int ml = e->pmd_lvl, pl = pte_level(e), lvl = -1;
	struct tref tbl;
	uint32_t idx;
	int k = host_lookup(e, mm, base, &lvl, NULL, &tbl, &idx);
	if (lvl < ml)
		return SCAN_PMD_NULL; /* mm_find_pmd: no PMD table */
	if (lvl == ml)
		return k == E_EMPTY ? SCAN_PMD_NONE : SCAN_PMD_MAPPED;
	uint64_t pmdval = host_entry_at(e, mm, base, ml, &tbl, &idx);
	uint64_t *pte = tref_mem(e, tref_from_phys(e, g->fmt->addr(ml, pmdval)));
	bool writable = false;
	for (uint32_t i = 0; i < g->lv[pl].entries; i++) {
		if (g->fmt->kind(pl, pte[i]) != E_LEAF || is_zero_pfn(g->fmt->addr(pl, pte[i]) >> 12))
			continue;
		if (g->fmt->writable(pl, pte[i]))
			writable = true;
		const struct compound *c = data_lookup(e, g->fmt->addr(pl, pte[i]) >> 12);
		if (c && folio_locked(e, c->pfn))
			return SCAN_PAGE_LRU;
	}
	if (!writable && e->knob[K_COLLAPSE_RO] == 0)
		return SCAN_PAGE_RO;
	return collapse_huge_page(e, mm, base, tbl, idx);
}

/* madvise_collapse_errno */
static int madvise_collapse_errno(int r)
{
	switch (r) {
	case SCAN_ALLOC_HUGE_PAGE_FAIL:
		return -ENOMEM;
	case SCAN_WAIT:
		return -EBUSY;
	case SCAN_PAGE_COUNT:
	case SCAN_PAGE_LOCK:
	case SCAN_PAGE_LRU:
		return -EAGAIN;
	default:
		return -EINVAL;
	}
}

/* hugepage_vma_check(vma, vm_flags, smaps=false, in_pf=false, enforce_sysfs=false), as MADV_COLLAPSE (and
 * collapse_pte_mapped_thp) ask it: no VM_NOHUGEPAGE (s390: thp_split_mm gives every VMA of an mm with PGSTEs
 * one), no hugetlb (VM_NO_KHUGEPAGED), transhuge_vma_suitable at the VMA's last block; shmem: shmem_is_huge
 * with force (sysfs shmem_enabled and the mount's huge= ignored); anonymous: an anon_vma. */
static bool hugepage_vma_check(struct engine *e, const struct mm *m, const struct vma *v)
{
	uint64_t pmd = pmd_size(e);
	if ((v->flags & (VMA_NOHUGE | VMA_HUGETLB)) || (m->has_pgste && e->knob[K_THP_IN_PGSTE] == 0) ||
	    v->end - v->start < pmd || !transhuge_vma_suitable(e, v, v->end - pmd))
		return false;
	return v->shm || v->anon;
}

/* madvise_collapse for one VMA's part of the range: hugepage_vma_check, then block by block: a file VMA scans its
 * page cache (hpage_collapse_scan_file, collapse_file, retract_page_tables) and SCAN_PTE_MAPPED_HUGEPAGE goes on
 * with collapse_pte_mapped_thp(install_pmd) in the caller's mm; an anonymous one scans its PTEs. Whitelisted
 * failures go on to the next block, the rest end the walk. */
int madvise_collapse(struct engine *e, int mm, int vi, uint64_t start, uint64_t end, uint64_t *prev_end)
{
	struct mm *m = &e->mms[mm];
	struct vma *v = &m->vmas[vi];
	uint64_t pmd = pmd_size(e);
	*prev_end = v->end;
	if (!hugepage_vma_check(e, m, v))
		return -EINVAL;
	uint64_t hstart = (start + pmd - 1) & ~(pmd - 1), hend = end & ~(pmd - 1);
	uint64_t thps = 0;
	int last_fail = SCAN_FAIL;
	for (uint64_t addr = hstart; addr < hend && !e->viol; addr += pmd) {
		int r;
		if (v->shm) { /* mmap_read_unlock around the page-cache collapse, then collapse_pte_mapped_thp under it */
			lock_release(e, LC_MMAP, (uint64_t)mm);
			r = hpage_collapse_scan_file(e, mm, v, addr);
			lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_READ);
		} else {
			r = hpage_collapse_scan_pmd(e, mm, addr);
		}
		if (r == SCAN_PTE_MAPPED_HUGEPAGE && !e->viol) {
			r = collapse_pte_mapped_thp(e, mm, addr);
			lock_release_all(e, LC_FOLIO); /* unlock_page of the PMD-size folio */
		}
		if (r == SCAN_SUCCEED || r == SCAN_PMD_MAPPED) {
			thps++;
			continue;
		}
		last_fail = r;
		if (r != SCAN_PMD_NULL && r != SCAN_PAGE_RO && r != SCAN_PAGE_COUNT && r != SCAN_PAGE_LOCK &&
		    r != SCAN_PAGE_LRU && r != SCAN_PAGE_COMPOUND && r != SCAN_PAGE_NULL)
			break; /* SCAN_PMD_NONE (anonymous), SCAN_TRUNCATED, SCAN_WAIT and the rest end the walk */
	}
	if (e->viol)
		return -EFAULT;
	uint64_t want = (hend - hstart) / pmd; /* "negative" (a range inside one block) never matches */
	return hend >= hstart && thps == want ? 0 : madvise_collapse_errno(last_fail);
}
