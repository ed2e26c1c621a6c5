/* mm/khugepaged.c: MADV_COLLAPSE: anonymous (hpage_collapse_scan_pmd, collapse_huge_page) and shmem
 * (hpage_collapse_scan_file, collapse_file, retract_page_tables, collapse_pte_mapped_thp), and the result mapping
 * (scan_result to errno, in one place). */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

/* ---- Z5 (gup.fast_pmd_recheck): collapse_huge_page stopped between isolate and copy ----
 * collapse_hold arms a cpu; the next anonymous collapse_huge_page stops on it after pmdp_collapse_flush and
 * __collapse_huge_page_isolate (the pmd cleared, the pages' references checked), before
 * __collapse_huge_page_copy (A_COLLAPSE, ptf.h); collapse_end does the copy, the deposit and the PMD leaf. The
 * stopped thread holds mmap_lock for write (and the VMA's write lock): while it is held every operation waits
 * (-16, nothing done) but RCU sections and grace periods, the GUP-fast walker's steps and grab (no lock), and the
 * frag and collapse holds. The held operation (MADV_COLLAPSE) goes on at once: a later block of it first finishes
 * the held one (collapse_window_flush), the order the kernel's has. */

static int collapse_window_held(const struct engine *e)
{
	for (int i = 0; i < MAX_CPUS; i++)
		if (e->cpus[i].actor == A_COLLAPSE && e->cpus[i].walk_done)
			return i;
	return -1;
}

/* The fields a held collapse uses (ptf.h, A_COLLAPSE), as an armed or ended hold leaves them. */
static void collapse_hold_clear(struct cpu *c)
{
	c->walk_done = false;
	c->mm = 0;
	c->addr = 0;
	c->tbl = c->pmd_tbl = TREF_NONE;
	c->pmd_idx = 0;
	c->pfn = 0;
}

int collapse_hold(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_NONE)
		return -EBUSY;
	c->actor = A_COLLAPSE;
	collapse_hold_clear(c);
	return 0;
}

int collapse_window_wait(struct engine *e, uint64_t opcode)
{
	switch (opcode) {
	case OP_RCU_LOCK: case OP_RCU_UNLOCK: case OP_RCU_GP: case OP_WALK_BEGIN: case OP_WALK_STEP: case OP_WALK_END:
	case OP_WALK_PIN: case OP_COLLAPSE_HOLD: case OP_COLLAPSE_END: case OP_FRAG_HOLD: case OP_FRAG_END:
	case OP_SYSCTL_ALLOCATE_PGSTE:
		return 0;
	default:
		break;
	}
	int cpu = collapse_window_held(e);
	if (cpu < 0)
		return 0;
	struct held_lock h = { .cls = LC_MMAP, .mode = LM_WRITE, .id = (uint64_t)e->cpus[cpu].mm, .hi = ~0ull };
	return lock_wait(e, cpu, LC_MMAP, (uint64_t)e->cpus[cpu].mm, LM_WRITE, &h);
}

/* __collapse_huge_page_copy and what follows it: each old page copied into the THP, its PTE cleared and the page
 * dropped; a page a GUP-fast walker grabbed after the isolation is copied away from under its pin
 * (gup-stale-pin). Then the old PTE table is deposited and the PMD leaf set. */
static void collapse_huge_page_copy(struct engine *e, int mm, uint64_t base, struct tref pmd_tbl, uint32_t pmd_idx,
				    struct tref pte_tbl, uint64_t head)
{
	const struct geom *g = &e->geom;
	int pl = pte_level(e), ml = e->pmd_lvl;
	uint32_t n = g->lv[pl].entries;
	uint64_t *pte = tref_mem(e, pte_tbl);
	for (uint32_t i = 0; i < n && !e->viol; i++) { /* __collapse_huge_page_copy_succeeded */
		if (g->fmt->kind(pl, pte[i]) != E_LEAF)
			continue;
		uint64_t pfn = g->fmt->addr(pl, pte[i]) >> 12;
		for (int w = 0; w < MAX_CPUS; w++)
			if (e->cpus[w].actor == A_WALK && e->cpus[w].pfn == pfn && pfn) {
				violate_at(e, V_GUP_STALE_PIN, &(struct viol_focus){ .has = VF_MM | VF_PFN | VF_HVA, .mm = mm,
					   .pfn = pfn, .hva = base + ((uint64_t)i << g->lv[pl].shift) },
					   "collapse_huge_page copies and drops pfn 0x%llx (va 0x%llx, mm %d), which GUP-fast "
					   "walker cpu %d grabbed after the collapse isolated it: writes through the pin are lost",
					   (unsigned long long)pfn, (unsigned long long)(base + ((uint64_t)i << g->lv[pl].shift)),
					   mm, w);
				return;
			}
		entry_write(e, pte_tbl, pl, i, g->fmt->empty(pl));
		data_put(e, pfn);
	}
	pgtable_trans_huge_deposit(e, pmd_tbl, pte_tbl);
	entry_write(e, pmd_tbl, ml, pmd_idx, g->fmt->leaf(ml, head << 12, true));
	data_lookup(e, head)->mapcount = 1;
	emit(e, EV_LEAF_SET, ml, base, head, mm);
}

int collapse_end(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_COLLAPSE)
		return -EINVAL;
	if (c->walk_done) {
		collapse_huge_page_copy(e, c->mm, c->addr, c->pmd_tbl, c->pmd_idx, c->tbl, c->pfn);
		mmdrop(e, c->mm);
	}
	c->actor = A_NONE;
	collapse_hold_clear(c);
	e->locks_grew = true;
	return 0;
}

/* collapse_huge_page (anonymous): a new THP, the PMD cleared and notified, the old pages dropped, the old PTE
 * table deposited (not freed) and the PMD leaf set. anon_vma_lock_write waits for an rmap walker holding the
 * VMA's anon_vma root, and tlb_remove_table_sync_one for IRQs-off GUP-fast walkers, which the sequential model
 * cannot do: with either in flight the collapse does not start (SCAN_WAIT). __collapse_huge_page_isolate fails
 * the block (SCAN_PAGE_COUNT) when a GUP-fast walker holds one of its pages; collapse_hold stops it after that. */
static int collapse_huge_page(struct engine *e, int mm, uint64_t base, struct tref pmd_tbl, uint32_t pmd_idx)
{
	const struct geom *g = &e->geom;
	int pl = pte_level(e), ml = e->pmd_lvl;
	int held = collapse_window_held(e);
	if (held >= 0 && e->cpus[held].mm == mm) { /* this operation's previous block: its copy comes first */
		e->mms[mm].count++;
		collapse_end(e, held);
		e->mms[mm].count--;
	}
	const struct vma *v = vma_find(&e->mms[mm], base);
	/* mmap_read_unlock, then mmap_write_lock, vma_start_write, anon_vma_lock_write; after the pmd is cleared
	 * tlb_remove_table_sync_one's IPI waits for every IRQs-off GUP-fast walker */
	lock_release(e, LC_MMAP, (uint64_t)mm);
	if (lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_WRITE) ||
	    (v && lock_acquire_range(e, LC_VMA, (uint64_t)mm, LM_WRITE, v->start, v->end)) ||
	    (v && v->anon && lock_acquire(e, LC_ANON_VMA, v->anon_root, LM_WRITE)) ||
	    (e->knob[K_COLLAPSE_GUP_SYNC] == 0 && lock_would_wait(e, LC_IRQS_OFF, 0, LM_WRITE)))
		return SCAN_WAIT;
	uint64_t pmdval = entry_get(e, pmd_tbl, pmd_idx);
	struct tref pte_tbl = tref_from_phys(e, g->fmt->addr(ml, pmdval));
	const uint64_t *ptes = tref_mem(e, pte_tbl);
	for (uint32_t i = 0; i < g->lv[pl].entries; i++) /* __collapse_huge_page_isolate: page_count, GUP's grab */
		if (g->fmt->kind(pl, ptes[i]) == E_LEAF)
			for (int w = 0; w < MAX_CPUS; w++)
				if (e->cpus[w].actor == A_WALK && e->cpus[w].pfn &&
				    e->cpus[w].pfn == g->fmt->addr(pl, ptes[i]) >> 12)
					return SCAN_PAGE_COUNT;
	uint64_t sz = pmd_size(e);
	uint64_t head = data_alloc(e, sz >> 12);
	if (!head)
		return SCAN_ALLOC_HUGE_PAGE_FAIL;
	mmu_notifier_invalidate_range(e, mm, base, base + sz);
	entry_write(e, pmd_tbl, ml, pmd_idx, g->fmt->empty(ml)); /* pmdp_collapse_flush */
	flush_tlb_range(e, mm, base, base + sz);
	table_set_state(e, pte_tbl, L_PRIVATE);
	int cpu = -1;
	for (int i = 0; i < MAX_CPUS && cpu < 0 && inval_window_of_current(e) < 0; i++) /* a thread stops once: an */
		if (e->cpus[i].actor == A_COLLAPSE && !e->cpus[i].walk_done)  /* invalidation window that took this */
			cpu = i;                                                   /* operation stopped it before here */
	if (cpu >= 0) { /* collapse_hold: stop here, isolated, before the copy */
		struct cpu *c = &e->cpus[cpu];
		c->walk_done = true;
		c->mm = mm;
		c->addr = base;
		c->pmd_tbl = pmd_tbl;
		c->pmd_idx = pmd_idx;
		c->tbl = pte_tbl;
		c->pfn = head;
		c->seq = e->op_index; /* the running operation's own later locks do not wait for it */
		mmgrab(e, mm);
		e->locks_grew = true;
	} else {
		collapse_huge_page_copy(e, mm, base, pmd_tbl, pmd_idx, pte_tbl, head);
	}
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
 * collapse_pte_mapped_thp) ask it: THP supported at all (s390.thp_hw), no VM_NOHUGEPAGE (s390: thp_split_mm gives
 * every VMA of an mm with PGSTEs one), no hugetlb (VM_NO_KHUGEPAGED), transhuge_vma_suitable at the VMA's last block; shmem: shmem_is_huge
 * with force (sysfs shmem_enabled and the mount's huge= ignored); anonymous: an anon_vma. */
static bool hugepage_vma_check(struct engine *e, const struct mm *m, const struct vma *v)
{
	uint64_t pmd = pmd_size(e);
	if (thp_unsupported(e) || (v->flags & (VMA_NOHUGE | VMA_HUGETLB)) ||
	    (m->has_pgste && e->knob[K_THP_IN_PGSTE] == 0) || v->end - v->start < pmd ||
	    !transhuge_vma_suitable(e, v, v->end - pmd))
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
			r = hpage_collapse_scan_file(e, mm, v, addr, false);
			lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_READ);
		} else {
			r = hpage_collapse_scan_pmd(e, mm, addr);
		}
		if (r == SCAN_PTE_MAPPED_HUGEPAGE && !e->viol) {
			r = collapse_pte_mapped_thp(e, mm, addr, true);
			lock_release_all(e, LC_FOLIO); /* unlock_page of the PMD-size folio */
		}
		if (r == SCAN_SUCCEED || r == SCAN_PMD_MAPPED) {
			thps++;
			continue;
		}
		last_fail = r;
		if (r == SCAN_PMD_NONE && e->knob[K_COLLAPSE_PMD_NONE] == 1)
			continue; /* 7.2: on to the next block */
		if (r != SCAN_PMD_NULL && r != SCAN_PAGE_RO && r != SCAN_PAGE_COUNT && r != SCAN_PAGE_LOCK &&
		    r != SCAN_PAGE_LRU && r != SCAN_PAGE_COMPOUND && r != SCAN_PAGE_NULL)
			break; /* SCAN_PMD_NONE (anonymous), SCAN_TRUNCATED, SCAN_WAIT and the rest end the walk */
	}
	if (e->viol)
		return -EFAULT;
	if (hend < hstart && e->knob[K_COLLAPSE_SUBBLOCK] == 1)
		return 0; /* 7.2: a range inside one block has nothing to collapse */
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
		flush_tlb_page(e, it.mm, addr); /* try_to_unmap_one's ptep_clear_flush */
		emit(e, EV_LEAF_ZAP, lvl, addr, pfn, it.mm);
		data_put(e, pfn);
	}
}

/* collapse_and_free_pmd (6.1-6.4, mm.file_retract=caller): under mmap_lock for write, notify the block (not before
 * f268f6cf875f: mm.collapse_file_notify=none), pmdp_collapse_flush, tlb_remove_table_sync_one (collapse_file checked
 * that no IRQs-off walker is inside), mm_dec_nr_ptes and pte_free at once; then, for MADV_COLLAPSE's own mapping,
 * set_huge_pmd maps the new folio read-only (install). */
static int collapse_and_free_pmd(struct engine *e, int mm, const struct vma *v, uint64_t addr, uint64_t head,
				 bool install)
{
	const struct entry_fmt *f = e->geom.fmt;
	int ml = e->pmd_lvl;
	struct vm_fault vmf = { mm, v->shm - 1, v, addr, vma_pgoff_at(e, v, addr), false, TREF_NONE, 0, TREF_NONE, 0, 0 };
	uint64_t pmdval = host_entry_at(e, mm, addr, ml, &vmf.pmd_tbl, &vmf.pmd_idx);
	struct tref pte = tref_from_phys(e, f->addr(ml, pmdval));
	if (e->knob[K_COLLAPSE_FILE_NOTIFY] == CN_START_END)
		mmu_notifier_invalidate_range(e, mm, addr, addr + pmd_size(e));
	if (e->blocks[pte.blk].nonempty[pte.half]) {
		violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_TABLE | VF_MM | VF_HVA, .table = tref_phys(pte),
			   .mm = mm, .hva = addr }, "collapse_and_free_pmd: the PTE table 0x%llx of mm %d at 0x%llx still maps "
			"pages", (unsigned long long)tref_phys(pte), mm, (unsigned long long)addr);
		return SCAN_FAIL;
	}
	entry_write(e, vmf.pmd_tbl, ml, vmf.pmd_idx, f->empty(ml));
	flush_tlb_range(e, mm, addr, addr + pmd_size(e)); /* pmdp_collapse_flush */
	table_set_linked(e, pte, false);
	emit(e, EV_RETRACT, (uint64_t)mm, addr, tref_phys(pte), (uint64_t)vmf.obj);
	pte_free(e, mm, pte);
	if (e->viol)
		return SCAN_FAIL;
	if (!install)
		return SCAN_SUCCEED;
	return do_set_pmd(e, &vmf, head, false) ? SCAN_FAIL : SCAN_SUCCEED; /* set_huge_pmd */
}

/* retract_page_tables(mapping, pgoff, target_mm, target_addr, hpage, cc) of 6.1-6.4: for MADV_COLLAPSE "it's not
 * MADV_COLLAPSE's job to collapse other mappings", so only the caller's own VMA: its find_pmd_or_thp_or_none result
 * is the answer (no PMD table: SCAN_PMD_NULL, an empty pmd: SCAN_PMD_NONE, a leaf: SCAN_PMD_MAPPED); a PTE table is
 * retracted when mmap_write_trylock succeeds (else SCAN_PTE_MAPPED_HUGEPAGE: madvise_collapse's
 * collapse_pte_mapped_thp does it). Other mms keep their (emptied) tables, queued for khugepaged. For khugepaged
 * (cc->is_khugepaged: all) every mapping's table is retracted the same way and no PMD is installed. */
static int retract_page_tables_target(struct engine *e, int obj, uint64_t pgoff, int mm, uint64_t target, uint64_t head,
				      bool all)
{
	uint64_t pmd = pmd_size(e);
	int ml = e->pmd_lvl, result = SCAN_FAIL;
	struct file_rmap it = { 0, -1 };
	while (rmap_next(e, obj, pgoff, &it) && !e->viol) {
		struct mm *m = &e->mms[it.mm];
		const struct vma *v = &m->vmas[it.vi];
		uint64_t addr = v->start + (pgoff - v->pgoff) * e->geom.page_size;
		bool is_target = it.mm == mm && addr == target;
		if ((!all && !is_target) || v->anon || (addr & (pmd - 1)) || v->end < addr + pmd)
			continue;
		int lvl = -1;
		struct tref t;
		uint32_t i;
		int r, k = host_lookup(e, it.mm, addr, &lvl, NULL, &t, &i);
		if (lvl < ml)
			r = SCAN_PMD_NULL;
		else if (lvl == ml)
			r = k == E_EMPTY ? SCAN_PMD_NONE : SCAN_PMD_MAPPED;
		else if (lock_holder(e, LC_MMAP, (uint64_t)it.mm, LM_WRITE, 0, ~0ull, NULL) >= 0)
			r = SCAN_PTE_MAPPED_HUGEPAGE; /* mmap_write_trylock failed: khugepaged_add_pte_mapped_thp */
		else if (m->users == 0)
			r = SCAN_ANY_PROCESS;
		else
			r = collapse_and_free_pmd(e, it.mm, v, addr, head, !all);
		if (is_target)
			result = r;
	}
	return result;
}

/* retract_page_tables(mapping, pgoff): i_mmap for read; for EVERY VMA of every mm mapping the block, with no
 * anon_vma, the block PMD-aligned and inside the VMA, a PTE table at the pmd and the mm's users not gone (no
 * VM_NOHUGEPAGE, hugepage_vma_check or mm_has_pgste test): notify the block (mm.collapse_file_notify),
 * pmdp_collapse_flush (s390: the gmap only with allow_gmap_hpage_1m, not modelled), mm_dec_nr_ptes, pte_free_defer. */
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
		if (e->knob[K_COLLAPSE_FILE_NOTIFY] == CN_START_END)
			mmu_notifier_invalidate_range(e, it.mm, addr, addr + pmd);
		struct tref pte = tref_from_phys(e, f->addr(ml, pmdval));
		if (e->blocks[pte.blk].nonempty[pte.half]) {
			violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_TABLE | VF_MM | VF_HVA,
				   .table = tref_phys(pte), .mm = it.mm, .hva = addr }, "retract_page_tables: the PTE table 0x%llx of mm %d at 0x%llx still maps "
				"pages", (unsigned long long)tref_phys(pte), it.mm, (unsigned long long)addr);
			return;
		}
		entry_write(e, pmd_tbl, ml, pmd_idx, f->empty(ml)); /* pmdp_collapse_flush */
		flush_tlb_range(e, it.mm, addr, addr + pmd);
		table_set_linked(e, pte, false);
		emit(e, EV_RETRACT, (uint64_t)it.mm, addr, tref_phys(pte), (uint64_t)obj);
		pte_free_defer(e, it.mm, pte, addr);
	}
}

/* collapse_file(mm, addr, file, start): for each page offset of the block, a hole (all holes: SCAN_TRUNCATED) or a
 * page that is trylocked (SCAN_PAGE_LOCK), isolated and unmapped from every mm (try_to_unmap; pages already unmapped
 * stay so when a later one fails), whose only references must then be ours (SCAN_PAGE_COUNT); then the new
 * PMD-size folio replaces them in the cache, retract_page_tables runs and the old pages are freed (no mapping has
 * them: try_to_unmap notified each, before f268f6cf875f too). MADV_COLLAPSE turns success into
 * SCAN_PTE_MAPPED_HUGEPAGE; khugepaged keeps SCAN_SUCCEED. */
static int collapse_file(struct engine *e, int mm, int obj, uint64_t start, uint64_t addr, bool khugepaged)
{
	uint64_t n = e->shm_pages;
	struct shm_obj *o = &e->shm[obj];
	struct shm_blk *b = blk_find(o, start / n, NULL);
	bool caller_only = e->knob[K_FILE_RETRACT] == 1;
	if (b && b->huge)
		return SCAN_PTE_MAPPED_HUGEPAGE;
	uint64_t present = 0;
	for (uint64_t i = 0; b && b->pfn && i < n; i++)
		present += b->pfn[i] != 0;
	if (!present)
		return SCAN_TRUNCATED;
	/* 6.1-6.4 retract under i_mmap_lock_write, and tlb_remove_table_sync_one's IPI waits for IRQs-off walkers: checked
	 * before anything changes, since the model's operation either runs or waits */
	if (caller_only && (lock_would_wait(e, LC_I_MMAP, (uint64_t)obj, LM_WRITE) ||
			    (e->knob[K_COLLAPSE_GUP_SYNC] == 0 && lock_would_wait(e, LC_IRQS_OFF, 0, LM_WRITE))))
		return SCAN_WAIT;
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
	/* the new folio is locked throughout; retract_page_tables runs under i_mmap_lock_read (6.1-6.4: write) */
	if (lock_acquire(e, LC_FOLIO, head, LM_WRITE) ||
	    lock_acquire(e, LC_I_MMAP, (uint64_t)obj, caller_only ? LM_WRITE : LM_READ)) {
		violate(e, V_ENGINE_ASSERT, "collapse_file: a lock on the new folio of object %d is held", obj);
		return SCAN_FAIL;
	}
	int result = khugepaged ? SCAN_SUCCEED : SCAN_PTE_MAPPED_HUGEPAGE; /* !cc->is_khugepaged */
	if (caller_only) {
		int r = retract_page_tables_target(e, obj, start, mm, addr, head, khugepaged);
		result = khugepaged ? SCAN_SUCCEED : r;
	} else {
		retract_page_tables(e, obj, start);
	}
	lock_release(e, LC_I_MMAP, (uint64_t)obj);
	lock_release(e, LC_FOLIO, head);
	for (uint64_t i = 0; i < n && !e->viol; i++) /* the old folios go */
		if (old[i])
			shmem_free_folio(e, old[i]);
	free(old);
	return e->viol ? SCAN_FAIL : result;
}

/* hpage_collapse_scan_file: the page cache only, never the caller's tables: a PMD-size folio already is
 * SCAN_PTE_MAPPED_HUGEPAGE; a page an rmap walker holds is off the LRU (SCAN_PAGE_LRU, -11); holes are fine for
 * MADV_COLLAPSE (no max_ptes_none); then collapse_file. */
int hpage_collapse_scan_file(struct engine *e, int mm, const struct vma *v, uint64_t addr, bool khugepaged)
{
	int obj = v->shm - 1;
	uint64_t start = vma_pgoff_at(e, v, addr), n = e->shm_pages;
	struct shm_blk *b = blk_find(&e->shm[obj], start / n, NULL);
	if (b && b->huge)
		return SCAN_PTE_MAPPED_HUGEPAGE;
	for (uint64_t i = 0; b && b->pfn && i < n; i++)
		if (b->pfn[i] && folio_locked(e, b->pfn[i]))
			return SCAN_PAGE_LRU;
	return collapse_file(e, mm, obj, start, addr, khugepaged);
}

/* collapse_pte_mapped_thp(mm, addr, install_pmd): already PMD-mapped is done; the PMD-size folio is locked
 * (find_lock_page: an rmap walker holding it makes this wait, -EBUSY); an empty pmd gets the PMD leaf (set_huge_pmd ->
 * do_set_pmd, read-only: vmf.flags = 0); a PTE table is checked (every present PTE maps the folio's page for that
 * offset, else SCAN_FAIL), notified (not before f268f6cf875f: mm.collapse_file_notify=none), cleared and freed with
 * pte_free_defer, then the leaf goes in; no PMD table is SCAN_PMD_NULL. khugepaged (install_pmd false, and every
 * kernel before 6.1) leaves the pmd empty for the next fault to map. */
int collapse_pte_mapped_thp(struct engine *e, int mm, uint64_t addr, bool install_pmd)
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
		bool v6_1 = e->knob[K_FILE_RETRACT] == 1;
		/* 6.1: madvise_collapse's mmap_write_lock, i_mmap_lock_write (8d3c106e19e8; not before it), and
		 * collapse_and_free_pmd's IPI; checked before anything changes */
		if (v6_1 && (lock_would_wait(e, LC_MMAP, (uint64_t)mm, LM_WRITE) ||
			     (e->knob[K_RETRACT_LOCKS] == 0 && lock_would_wait(e, LC_I_MMAP, (uint64_t)vmf.obj, LM_WRITE)) ||
			     (e->knob[K_COLLAPSE_GUP_SYNC] == 0 && lock_would_wait(e, LC_IRQS_OFF, 0, LM_WRITE))))
			return SCAN_WAIT;
		if (e->knob[K_COLLAPSE_FILE_NOTIFY] == CN_START_END)
			mmu_notifier_invalidate_range(e, mm, haddr, haddr + pmd);
		for (uint32_t i = 0; i < ptrs && !e->viol; i++) { /* step 2 */
			if (f->kind(pl, p[i]) == E_EMPTY)
				continue;
			entry_write(e, pte, pl, i, f->empty(pl));
			data_put(e, head);
		}
		entry_write(e, vmf.pmd_tbl, ml, vmf.pmd_idx, f->empty(ml)); /* step 4: pmdp_collapse_flush */
		flush_tlb_range(e, mm, haddr, haddr + pmd);
		table_set_linked(e, pte, false);
		emit(e, EV_RETRACT, (uint64_t)mm, haddr, tref_phys(pte), (uint64_t)vmf.obj);
		if (v6_1)
			pte_free(e, mm, pte); /* collapse_and_free_pmd: at once, after the IPI */
		else
			pte_free_defer(e, mm, pte, haddr);
		if (e->viol)
			return SCAN_FAIL;
	}
	if (!install_pmd)
		return SCAN_SUCCEED;
	return do_set_pmd(e, &vmf, head, false) ? SCAN_FAIL : SCAN_SUCCEED; /* step 5: set_huge_pmd */
}

/* khugepaged_scan_mm_slot for the one PMD block of addr (khugepaged visits every block of every mm it has in turn;
 * the trace says which it reaches now), on a system whose sysfs lets it collapse the VMA (hugepage_vma_check with
 * enforce_sysfs; the model has no sysfs): mmap_read_trylock (-EBUSY), then a file VMA scans its page cache
 * (hpage_collapse_scan_file, collapse_file; retract_page_tables over every mapping) and a PMD-size folio already in
 * the cache (SCAN_PTE_MAPPED_HUGEPAGE) goes on with collapse_pte_mapped_thp(mm, addr, install_pmd=false), which
 * leaves the pmd empty; an anonymous VMA scans its PTEs as MADV_COLLAPSE does (khugepaged's max_ptes_* and young
 * limits only make it collapse less). */
int khugepaged_scan_mm_slot(struct engine *e, int mm, uint64_t addr)
{
	struct mm *m = &e->mms[mm];
	uint64_t pmd = pmd_size(e), haddr = addr & ~(pmd - 1);
	int r = lock_would_wait(e, LC_MMAP, (uint64_t)mm, LM_READ);
	if (r || (r = lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_READ)))
		return r;
	const struct vma *v = vma_find(m, haddr);
	if (!v || haddr < v->start || haddr + pmd > v->end || !hugepage_vma_check(e, m, v))
		return -EINVAL;
	if (v->shm) { /* mmap_read_unlock around the page-cache collapse, as in madvise_collapse */
		lock_release(e, LC_MMAP, (uint64_t)mm);
		r = hpage_collapse_scan_file(e, mm, v, haddr, true);
		lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_READ);
		if (r == SCAN_PTE_MAPPED_HUGEPAGE && !e->viol) {
			r = collapse_pte_mapped_thp(e, mm, haddr, false);
			lock_release_all(e, LC_FOLIO);
		}
	} else {
		r = hpage_collapse_scan_pmd(e, mm, haddr);
	}
	if (e->viol)
		return -EFAULT;
	return r == SCAN_SUCCEED || r == SCAN_PMD_MAPPED ? 0 : madvise_collapse_errno(r);
}
