/* mm/khugepaged.c: MADV_COLLAPSE: anonymous (hpage_collapse_scan_pmd, collapse_huge_page) and shmem
 * (hpage_collapse_scan_file, collapse_file, retract_page_tables, collapse_pte_mapped_thp), and the result mapping
 * (scan_result to errno, in one place). */
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
	if (e->knob[K_COLLAPSE_SUBPMD] == 1 && hstart >= hend)
		return 0; /* mm.collapse_subpmd=zero: no whole block in the range, nothing to do */
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

/* ---- MADV_COLLAPSE of shmem (collapse_file, retract_page_tables) ---- */

/* vma_interval_tree_foreach over i_mmap: every VMA of every live mm that maps page offset index of obj, in a fixed
 * order (mm, then address). */
struct file_rmap { int mm, vi; };

static bool rmap_next(struct engine *e, int obj, uint64_t index, struct file_rmap *it)
{
	for (; it->mm < MAX_MMS; it->mm++, it->vi = -1) {
		struct mm *m = &e->mms[it->mm];
		if (!m->used || m->dead)
			continue;
		while (++it->vi < m->nvma) {
			const struct vma *v = &m->vmas[it->vi];
			if (v->shm == obj + 1 && v->pgoff <= index && index - v->pgoff < (v->end - v->start) / e->geom.page_size)
				return true;
		}
	}
	return false;
}

/* try_to_unmap of a small shmem page through the file rmap: in each mapping, page_vma_mapped_walk finds the PTE
 * (check_pte: it maps this page) and try_to_unmap_one notifies [address, +PAGE_SIZE), clears it and drops the rmap. */
static void try_to_unmap(struct engine *e, int obj, uint64_t index, uint64_t pfn)
{
	struct file_rmap it = { 0, -1 };
	while (rmap_next(e, obj, index, &it) && !e->viol) {
		const struct vma *v = &e->mms[it.mm].vmas[it.vi];
		uint64_t addr = v->start + (index - v->pgoff) * e->geom.page_size, got = 0;
		int lvl = -1;
		struct tref t;
		uint32_t i;
		if (host_lookup(e, it.mm, addr, &lvl, &got, &t, &i) != E_LEAF || got != pfn)
			continue;
		mmu_notifier_invalidate_range(e, it.mm, addr, addr + e->geom.page_size);
		entry_write(e, t, lvl, i, e->geom.fmt->empty(lvl));
		emit(e, EV_LEAF_ZAP, lvl, addr, pfn, it.mm);
		data_put(e, pfn);
	}
}

/* retract_page_tables(mapping, pgoff): i_mmap for read; for EVERY VMA of every mm mapping the block, with no
 * anon_vma, the block PMD-aligned and inside the VMA, a PTE table at the pmd and the mm's users not gone (no
 * VM_NOHUGEPAGE, hugepage_vma_check or mm_has_pgste test): notify the block, pmdp_collapse_flush (s390: the gmap
 * only with allow_gmap_hpage_1m, not modelled), mm_dec_nr_ptes, pte_free_defer. */
static void retract_page_tables(struct engine *e, int obj, uint64_t pgoff)
{
	const struct entry_fmt *f = e->geom.fmt;
	uint64_t pmd = pmd_size(e);
	int ml = e->pmd_lvl;
	struct file_rmap it = { 0, -1 };
	while (rmap_next(e, obj, pgoff, &it) && !e->viol) {
		struct mm *m = &e->mms[it.mm];
		const struct vma *v = &m->vmas[it.vi];
		if (v->anon)
			continue; /* MAP_PRIVATE that got written: never a shmem VMA here */
		uint64_t addr = v->start + (pgoff - v->pgoff) * e->geom.page_size;
		if ((addr & (pmd - 1)) || v->end < addr + pmd || addr + pmd < addr)
			continue;
		struct tref pmd_tbl;
		uint32_t pmd_idx;
		uint64_t pmdval = host_entry_at(e, it.mm, addr, ml, &pmd_tbl, &pmd_idx);
		if (f->kind(ml, pmdval) != E_TABLE) /* find_pmd_or_thp_or_none != SCAN_SUCCEED */
			continue;
		if (m->users == 0) /* hpage_collapse_test_exit */
			continue;
		mmu_notifier_invalidate_range(e, it.mm, addr, addr + pmd);
		struct tref pte = tref_from_phys(e, f->addr(ml, pmdval));
		if (e->blocks[pte.blk].nonempty[pte.half]) {
			violate(e, V_ENGINE_ASSERT, "retract_page_tables: the PTE table 0x%llx of mm %d at 0x%llx still maps "
				"pages", (unsigned long long)tref_phys(pte), it.mm, (unsigned long long)addr);
			return;
		}
		entry_write(e, pmd_tbl, ml, pmd_idx, f->empty(ml)); /* pmdp_collapse_flush */
		table_set_linked(e, pte, false);
		emit(e, EV_RETRACT, (uint64_t)it.mm, addr, tref_phys(pte), (uint64_t)obj);
		pte_free_defer(e, it.mm, pte, addr);
	}
}

/* collapse_file(mm, addr, file, start): for each page offset of the block, a hole (all holes: SCAN_TRUNCATED) or a
 * page that is trylocked (SCAN_PAGE_LOCK), isolated and unmapped from every mm (try_to_unmap; pages already unmapped
 * stay so when a later one fails), whose only references must then be ours (SCAN_PAGE_COUNT); then the new
 * PMD-size folio replaces them in the cache, retract_page_tables runs and the old pages are freed. MADV_COLLAPSE
 * turns success into SCAN_PTE_MAPPED_HUGEPAGE. */
static int collapse_file(struct engine *e, int mm, int obj, uint64_t start)
{
	uint64_t n = e->shm_pages;
	struct shm_obj *o = &e->shm[obj];
	struct shm_blk *b = blk_find(o, start / n, NULL);
	if (b && b->huge)
		return SCAN_PTE_MAPPED_HUGEPAGE;
	uint64_t present = 0;
	for (uint64_t i = 0; b && b->pfn && i < n; i++)
		present += b->pfn[i] != 0;
	if (!present)
		return SCAN_TRUNCATED;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t pfn = b->pfn[i];
		if (!pfn)
			continue; /* nr_none++: zero-filled in the new folio */
		if (folio_locked(e, pfn))
			return SCAN_PAGE_LOCK;
		/* the old folio stays locked to the end; try_to_unmap's rmap_walk_file holds i_mmap_rwsem for read */
		if (lock_acquire(e, LC_FOLIO, pfn, LM_WRITE) || lock_acquire(e, LC_I_MMAP, (uint64_t)obj, LM_READ))
			return SCAN_WAIT;
		try_to_unmap(e, obj, start + i, pfn);
		lock_release(e, LC_I_MMAP, (uint64_t)obj);
		lock_release(e, LC_FOLIO, pfn);
		if (e->viol)
			return SCAN_FAIL;
		if (data_lookup(e, pfn)->mapcount)
			return SCAN_PAGE_COUNT;
	}
	uint64_t head = data_alloc(e, n * page_frames(e)); /* alloc_charge_hpage */
	if (!head)
		return SCAN_ALLOC_HUGE_PAGE_FAIL;
	data_lookup(e, head)->shm = (uint8_t)(obj + 1);
	uint64_t *old = b->pfn;
	b->pfn = NULL;
	b->huge = head; /* xas_store of the multi-index entry */
	emit(e, EV_SHM_COLLAPSE, (uint64_t)obj, start, head, (uint64_t)mm);
	/* the new folio is locked throughout; retract_page_tables runs under i_mmap_lock_read */
	if (lock_acquire(e, LC_FOLIO, head, LM_WRITE) || lock_acquire(e, LC_I_MMAP, (uint64_t)obj, LM_READ)) {
		violate(e, V_ENGINE_ASSERT, "collapse_file: a lock on the new folio of object %d is held", obj);
		return SCAN_FAIL;
	}
	retract_page_tables(e, obj, start);
	lock_release(e, LC_I_MMAP, (uint64_t)obj);
	lock_release(e, LC_FOLIO, head);
	for (uint64_t i = 0; i < n && !e->viol; i++) /* the old folios go */
		if (old[i])
			shmem_free_folio(e, old[i]);
	free(old);
	return e->viol ? SCAN_FAIL : SCAN_PTE_MAPPED_HUGEPAGE;
}

/* hpage_collapse_scan_file: the page cache only, never the caller's tables: a PMD-size folio already is
 * SCAN_PTE_MAPPED_HUGEPAGE; a page an rmap walker holds is off the LRU (SCAN_PAGE_LRU, -11); holes are fine for
 * MADV_COLLAPSE (no max_ptes_none); then collapse_file. */
int hpage_collapse_scan_file(struct engine *e, int mm, const struct vma *v, uint64_t addr)
{
	int obj = v->shm - 1;
	uint64_t start = vma_pgoff_at(e, v, addr), n = e->shm_pages;
	struct shm_blk *b = blk_find(&e->shm[obj], start / n, NULL);
	if (b && b->huge)
		return SCAN_PTE_MAPPED_HUGEPAGE;
	for (uint64_t i = 0; b && b->pfn && i < n; i++)
		if (b->pfn[i] && folio_locked(e, b->pfn[i]))
			return SCAN_PAGE_LRU;
	return collapse_file(e, mm, obj, start);
}

/* collapse_pte_mapped_thp(mm, addr, install_pmd=true): already PMD-mapped is done; the PMD-size folio is locked
 * (find_lock_page: an rmap walker holding it makes this wait, -EBUSY); an empty pmd gets the PMD leaf (set_huge_pmd ->
 * do_set_pmd, read-only: vmf.flags = 0); a PTE table is checked (every present PTE maps the folio's page for that
 * offset, else SCAN_FAIL), notified, cleared and freed with pte_free_defer, then the leaf goes in; no PMD table is
 * SCAN_PMD_NULL. */
int collapse_pte_mapped_thp(struct engine *e, int mm, uint64_t addr)
{
	const struct entry_fmt *f = e->geom.fmt;
	uint64_t pmd = pmd_size(e), haddr = addr & ~(pmd - 1);
	int ml = e->pmd_lvl, pl = pte_level(e), lvl = -1;
	struct mm *m = &e->mms[mm];
	const struct vma *v = vma_find(m, haddr);
	if (!v || !v->shm || haddr < v->start || haddr + pmd > v->end)
		return SCAN_VMA_CHECK;
	struct vm_fault vmf = { mm, v->shm - 1, v, haddr, vma_pgoff_at(e, v, haddr), false, TREF_NONE, 0, TREF_NONE,
				0, 0 };
	int k = host_lookup(e, mm, haddr, &lvl, NULL, &vmf.pmd_tbl, &vmf.pmd_idx);
	if (lvl == ml && k == E_LEAF)
		return SCAN_PMD_MAPPED; /* the fast check, before the folio is locked */
	struct compound *c;
	if (!shmem_lookup(e, vmf.obj, vmf.pgoff, &c))
		return SCAN_PAGE_NULL;
	if (cpd_nr(c) != e->shm_pages * page_frames(e))
		return SCAN_PAGE_COMPOUND;
	if (lock_acquire(e, LC_FOLIO, c->pfn, LM_WRITE))
		return SCAN_WAIT; /* find_lock_page; released by madvise_collapse after the block */
	if (lvl < ml && e->knob[K_COLLAPSE_PMD_ALLOC] == 1) { /* newer kernels: the tables down to the pmd */
		int ret = pt_slot(e, mm, haddr, ml, &vmf.pmd_tbl, &vmf.pmd_idx, &lvl);
		if (ret || lvl != ml)
			return SCAN_FAIL;
	}
	if (lvl < ml)
		return SCAN_PMD_NULL; /* find_pmd_or_thp_or_none: no PMD table */
	uint64_t head = c->pfn;
	if (lvl > ml) { /* a PTE table: host_lookup stopped below the pmd */
		host_entry_at(e, mm, haddr, ml, &vmf.pmd_tbl, &vmf.pmd_idx);
		struct tref pte = pte_table(e, &vmf);
		uint64_t *p = tref_mem(e, pte), frames = page_frames(e);
		uint32_t ptrs = e->geom.lv[pl].entries;
		for (uint32_t i = 0; i < ptrs; i++) /* step 1 */
			if (f->kind(pl, p[i]) != E_EMPTY && (f->addr(pl, p[i]) >> 12) != head + i * frames)
				return SCAN_FAIL;
		mmu_notifier_invalidate_range(e, mm, haddr, haddr + pmd);
		for (uint32_t i = 0; i < ptrs && !e->viol; i++) { /* step 2 */
			if (f->kind(pl, p[i]) == E_EMPTY)
				continue;
			entry_write(e, pte, pl, i, f->empty(pl));
			data_put(e, head);
		}
		entry_write(e, vmf.pmd_tbl, ml, vmf.pmd_idx, f->empty(ml)); /* step 4: pmdp_collapse_flush */
		table_set_linked(e, pte, false);
		emit(e, EV_RETRACT, (uint64_t)mm, haddr, tref_phys(pte), (uint64_t)vmf.obj);
		pte_free_defer(e, mm, pte, haddr);
		if (e->viol)
			return SCAN_FAIL;
	}
	return do_set_pmd(e, &vmf, head, false) ? SCAN_FAIL : SCAN_SUCCEED; /* step 5: set_huge_pmd */
}
