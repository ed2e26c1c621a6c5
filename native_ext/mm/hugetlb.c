/* mm/hugetlb.c: hugetlb VMAs: their page size, hugetlb_fault; for MAP_SHARED hugetlbfs files (hugetlb_mmap) the page
 * cache and PMD sharing: huge_pmd_share, huge_pmd_unshare, __unmap_hugepage_range, the split's hugetlb_unshare_pmds
 * (issue 20; the munmap held after its unshare is mm/mmap.c's). */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

uint64_t hugetlb_size(const struct engine *e, const struct vma *v)
{
	int lvl = (v->flags & VMA_HUGETLB_PMD) ? e->pmd_lvl : pud_level(&e->geom);
	return level_size(&e->geom, lvl);
}

/* ---- PMD sharing (CONFIG_ARCH_WANT_HUGE_PMD_SHARE) ---- */

/* The level whose entries point at PMD tables (the pud, or the pgd where the pud is folded); -1: the PMD table is
 * the top one (arm64 16K/36 and 64K/42), nothing to share through. */
static int pud_lvl(const struct engine *e)
{
	const struct geom *g = &e->geom;
	for (int l = e->pmd_lvl - 1; l >= 0; l--)
		if (!g->lv[l].folded)
			return child_level(g, l) == e->pmd_lvl ? l : -1;
	return -1;
}

/* v6.6 selects ARCH_WANT_HUGE_PMD_SHARE on x86 and on arm64 "if ARM64_4K_PAGES || (ARM64_16K_PAGES &&
 * !ARM64_VA_BITS_36)" (arch/arm64/Kconfig; 16K/36 has no level above the pmd anyway); s390 does not select it. */
static bool arch_want_huge_pmd_share(const struct engine *e)
{
	if (e->arch == ARCH_S390 || (e->arch == ARCH_ARM64 && e->geom.page_size > 16384))
		return false;
	return pud_lvl(e) >= 0;
}

/* PUD_SIZE as PMD sharing uses it: what one entry of the level above the PMD tables maps */
static uint64_t pud_share_size(const struct engine *e)
{
	return level_size(&e->geom, pud_lvl(e));
}

/* want_pmd_share -> vma_shareable -> __vma_aligned_range_pmd_shareable: VM_MAYSHARE, a PMD-size hstate (huge_pte_alloc
 * shares only for sz == PMD_SIZE), and the PUD_SIZE-aligned range around addr inside the VMA; the vma_lock
 * (vm_private_data) every shared hugetlb VMA gets at mmap, fork and split (hugetlb_vma_lock_alloc). */
static bool want_pmd_share(const struct engine *e, const struct vma *v, uint64_t addr)
{
	if (!arch_want_huge_pmd_share(e) || !hugetlb_shared(v) || !(v->flags & VMA_HUGETLB_PMD))
		return false;
	uint64_t ps = pud_share_size(e), start = addr & ~(ps - 1), end = start + ps;
	return end > start && start >= v->start && end <= v->end;
}

/* huge_pmd_share's get_page and pud_populate + mm_inc_nr_pmds: mm's pud entry links the table; mm counts its bytes
 * and sees its leaves. */
static int pmd_link_add(struct engine *e, int mm, struct tref t)
{
	if (e->npmd_links == e->cappmd_links) {
		int32_t n = e->cappmd_links ? e->cappmd_links * 2 : 16;
		struct pmd_link *p = realloc(e->pmd_links, (size_t)n * sizeof(*p));
		if (!p)
			return -ENOMEM;
		e->pmd_links = p;
		e->cappmd_links = n;
	}
	struct block *b = &e->blocks[t.blk];
	e->pmd_links[e->npmd_links++] = (struct pmd_link){ t.blk, mm };
	b->pmd_share++;
	e->mms[mm].pt_bytes += pt_level_bytes(e, mm, e->pmd_lvl);
	e->mms[mm].pmd_leaves += b->leaves[0];
	return 0;
}

static void pmd_link_del(struct engine *e, int32_t k)
{
	memmove(&e->pmd_links[k], &e->pmd_links[k + 1], (size_t)(e->npmd_links - k - 1) * sizeof(*e->pmd_links));
	e->npmd_links--;
}

/* huge_pmd_unshare's put_page + mm_dec_nr_pmds: mm's link goes. When mm is the table's owner (the mm that
 * allocated it, whose bytes table_set_state counts), the first other link becomes the owner. */
static void pmd_link_drop(struct engine *e, int mm, struct tref t)
{
	struct block *b = &e->blocks[t.blk];
	int32_t first = -1;
	for (int32_t k = 0; k < e->npmd_links; k++) {
		if (e->pmd_links[k].blk != t.blk)
			continue;
		if (first < 0)
			first = k;
		if (e->pmd_links[k].mm == mm) {
			first = k;
			break;
		}
	}
	if (first < 0 || (e->pmd_links[first].mm != mm && b->mm[0] != mm)) {
		violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_TABLE | VF_MM, .table = tref_phys(t), .mm = mm },
			   "huge_pmd_unshare: mm %d does not link the shared PMD table 0x%llx", mm,
			   (unsigned long long)tref_phys(t));
		return;
	}
	int newowner = e->pmd_links[first].mm;
	pmd_link_del(e, first);
	b->pmd_share--;
	e->mms[mm].pt_bytes -= pt_level_bytes(e, mm, e->pmd_lvl);
	e->mms[mm].pmd_leaves -= b->leaves[0];
	if (newowner != mm) { /* the owner left: the first sharer's link becomes the owning one */
		b->mm[0] = b->mm[1] = (int16_t)newowner;
	}
}

/* page_table_shareable: svma's address for the file offset idx, if its PMD table could serve addr: the same
 * pmd_index, the same flags (VM_LOCKED aside: the model has none), the PUD range around it inside svma, and svma's
 * vma_lock. 0: no. */
static uint64_t page_table_shareable(const struct engine *e, const struct vma *sv, const struct vma *v, uint64_t addr,
				     uint64_t idx)
{
	uint64_t page = e->geom.page_size, ps = pud_share_size(e), pmd = pmd_size(e);
	uint64_t saddr = (idx - sv->pgoff) * page + sv->start, sbase = saddr & ~(ps - 1), s_end = sbase + ps;
	if ((addr & (ps - 1)) / pmd != (saddr & (ps - 1)) / pmd || sv->flags != v->flags || sbase < sv->start ||
	    s_end > sv->end || s_end < sbase)
		return 0;
	return saddr;
}

/* huge_pmd_share: under i_mmap_rwsem for read, the first VMA of the file's i_mmap covering the offset (the model
 * walks the mms in slot order, each one's VMAs by address: which of several tables it takes does not change what
 * a process sees) whose PMD table can serve addr, then pud_populate with that table if the pud is still none. */
static int huge_pmd_share(struct engine *e, int mm, const struct vma *v, uint64_t addr, struct tref pud_tbl,
			  uint32_t pud_idx)
{
	const struct geom *g = &e->geom;
	int pl = pud_lvl(e);
	uint64_t idx = vma_pgoff_at(e, v, addr);
	for (int om = 0; om < e->mm_hwm; om++) {
		struct mm *sm = &e->mms[om];
		if (!sm->used || sm->dead)
			continue;
		for (int j = 0; j < sm->nvma; j++) {
			const struct vma *sv = &sm->vmas[j];
			uint64_t pages = (sv->end - sv->start) / g->page_size;
			if (sv == v || sv->shm != v->shm || idx < sv->pgoff || idx - sv->pgoff >= pages)
				continue;
			uint64_t saddr = page_table_shareable(e, sv, v, addr, idx);
			if (!saddr)
				continue;
			struct tref st;
			uint32_t si;
			uint64_t spud = host_entry_at(e, om, saddr, pl, &st, &si); /* hugetlb_walk(svma, saddr) */
			if (g->fmt->kind(pl, spud) != E_TABLE)
				continue;
			struct tref t = tref_from_phys(e, g->fmt->addr(pl, spud));
			if (tref_phys(t) == g->fmt->addr(pl, entry_get(e, pud_tbl, pud_idx)))
				return 0; /* (its own table, through another of its VMAs: the pud is not none then) */
			int ret = pmd_link_add(e, mm, t);
			if (ret)
				return ret;
			entry_write(e, pud_tbl, pl, pud_idx, g->fmt->table(pl, tref_phys(t)));
			return 0;
		}
	}
	return 0;
}

/* huge_pte_alloc: p4d_alloc and pud_alloc; for a PMD-size page of a VMA that wants PMD sharing and a pud that is
 * still none, huge_pmd_share; then pmd_alloc (a new PMD table if nobody's was shared). The slot of the huge entry. */
static int huge_pte_alloc(struct engine *e, int mm, const struct vma *v, uint64_t addr, int target, struct tref *tbl,
			  uint32_t *idx)
{
	const struct geom *g = &e->geom;
	int lvl, ret;
	if (target == e->pmd_lvl && want_pmd_share(e, v, addr)) {
		int pl = pud_lvl(e);
		struct tref pt;
		uint32_t pi;
		if ((ret = pt_slot(e, mm, addr, pl, &pt, &pi, &lvl)))
			return ret;
		if (lvl == pl && g->fmt->kind(pl, entry_get(e, pt, pi)) == E_EMPTY) {
			/* i_mmap_lock_read: a writer holding it across operations would make the fault wait */
			if ((ret = lock_would_wait(e, LC_I_MMAP, v->shm - 1u, LM_READ)) ||
			    (ret = huge_pmd_share(e, mm, v, addr, pt, pi)))
				return ret;
		}
	}
	if ((ret = pt_slot(e, mm, addr, target, tbl, idx, &lvl)))
		return ret;
	return lvl == target ? 0 : -EFAULT;
}

/* ---- the hugetlbfs page cache ---- */

/* filemap_lock_hugetlb_folio, else alloc_hugetlb_folio + hugetlb_add_to_page_cache: the folio at the huge page
 * holding page offset pgoff of file object fobj (MAX_SHM + file); its head pfn, 0: no memory. The cache keeps it
 * (compound.shm) until the end of the trace. */
static uint64_t hugetlb_file_folio(struct engine *e, int fobj, uint64_t pgoff, uint64_t sz)
{
	struct shm_obj *o = shmem_obj(e, fobj);
	struct shm_blk *b = blk_get(o, pgoff / e->shm_pages);
	if (!b)
		return 0;
	if (b->huge)
		return b->huge;
	uint64_t head = data_alloc(e, sz >> 12);
	if (!head)
		return 0;
	struct compound *c = data_lookup(e, head);
	c->hugetlb = 1;
	c->shm = (uint8_t)(fobj + 1);
	b->huge = head;
	return head;
}

/* hugetlb_fault: huge_pte_alloc, then hugetlb_no_page (private: a new anonymous page, read-only for a read; shared:
 * the file's page from its cache, writable for a VM_SHARED|VM_WRITE mapping whatever the access, make_huge_pte) or,
 * for a write to a read-only private leaf, hugetlb_wp. */
int hugetlb_fault(struct engine *e, int mm, struct vma *v, uint64_t addr, bool write, uint64_t *pfn,
			 uint64_t *size)
{
	const struct geom *g = &e->geom;
	int target = (v->flags & VMA_HUGETLB_PMD) ? e->pmd_lvl : pud_level(g);
	struct tref tbl;
	uint32_t idx;
	int ret = huge_pte_alloc(e, mm, v, addr, target, &tbl, &idx);
	if (ret)
		return ret;
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
	uint64_t head;
	if (hugetlb_shared(v)) {
		head = hugetlb_file_folio(e, v->shm - 1, vma_pgoff_at(e, v, addr & ~(sz - 1)), sz);
		if (!head)
			return -ENOMEM;
		data_lookup(e, head)->mapcount++; /* hugetlb_add_file_rmap */
		write = true;
	} else {
		ret = anon_vma_prepare(e, &e->mms[mm], v);
		if (ret)
			return ret;
		head = data_alloc(e, sz >> 12);
		if (!head)
			return -ENOMEM;
		struct compound *c = data_lookup(e, head);
		c->hugetlb = 1;
		c->mapcount = 1;
	}
	entry_write(e, tbl, target, idx, g->fmt->leaf(target, head << 12, write));
	emit(e, EV_LEAF_SET, target, addr & ~(sz - 1), head, mm);
	set_out(e, addr, head, target, pfn, size);
	return 0;
}

/* ---- unmapping ---- */

/* huge_pmd_unshare (i_mmap_rwsem and the vma_lock held for write): a PMD table some other link shares (v6.6:
 * page_count > 1) is not zapped here: mm's pud is cleared and its reference dropped. 1: unshared. */
static int huge_pmd_unshare(struct engine *e, int mm, uint64_t addr)
{
	const struct geom *g = &e->geom;
	int pl = pud_lvl(e);
	struct tref pt;
	uint32_t pi;
	if (pl < 0)
		return 0; /* the PMD table is the top one: nothing shares it */
	uint64_t pud = host_entry_at(e, mm, addr, pl, &pt, &pi);
	if (g->fmt->kind(pl, pud) != E_TABLE)
		return 0;
	struct tref t = tref_from_phys(e, g->fmt->addr(pl, pud));
	if (!e->blocks[t.blk].pmd_share)
		return 0;
	entry_write(e, pt, pl, pi, g->fmt->empty(pl)); /* pud_clear */
	pmd_link_drop(e, mm, t);
	return 1;
}

/* move_hugetlb_page_tables' huge_pmd_unshare (mm/mremap.c): at a PMD-size hugetlb address whose PMD table another
 * mm shares, this mm's pud is cleared and the caller skips the PUD range (nothing of it moves: a fault at the new
 * address maps the file's page again). The PUD range's size, 0 when nothing was unshared. */
uint64_t hugetlb_unshare_for_move(struct engine *e, int mm, uint64_t addr)
{
	return arch_want_huge_pmd_share(e) && huge_pmd_unshare(e, mm, addr) ? pud_share_size(e) : 0;
}

/* __unmap_hugepage_range over [start, end) of a shared hugetlb VMA (the huge-page aligned part the caller passes):
 * each huge page's entry (hugetlb_walk) is unshared with its whole PUD range (huge_pmd_unshare; address |=
 * last_addr_mask) or zapped (huge_ptep_get_and_clear, the file's page keeps its cache reference). With an unshare,
 * a4a118f2eead's tlb_flush_pmd_range + force_flush: tlb_flush_mmu_tlbonly before the caller drops i_mmap_rwsem,
 * over the gathered range (the zapped pages and the unshared PUD ranges); before that commit
 * (hugetlb.unshare_flush=before-a4a118f2eead) nothing is flushed here and the caller's tlb_finish_mmu, after the
 * unlock, flushes only its own range. Returns whether it unshared. */
static bool __unmap_hugepage_range(struct engine *e, int mm, uint64_t start, uint64_t end)
{
	const struct geom *g = &e->geom;
	int ml = e->pmd_lvl;
	int pl = pud_lvl(e);
	uint64_t sz = pmd_size(e), ps = pl >= 0 ? pud_share_size(e) : 0, lo = start, hi = end;
	bool force_flush = false;
	/* one PUD range (one PMD table) at a time: the kernel's loop walks from the pgd at every huge page, and so
	 * did this one (a third of a random trace's time went into exit's 512 walks of a 1 GiB mapping); the table,
	 * and whether it is shared, are the same at every address of the range, so one walk per range does */
	for (uint64_t addr = start; addr < end && addr >= start && !e->viol;) {
		uint64_t next = pl >= 0 ? (addr & ~(ps - 1)) + ps : end;
		if (next > end || next <= addr)
			next = end;
		struct tref tbl;
		uint32_t idx;
		/* hugetlb_walk (huge_pte_offset): no PMD table under the pud is NULL, and the loop skips the rest of the
		 * PUD range (address |= last_addr_mask, hugetlb_mask_last_page: PUD_SIZE - PMD_SIZE) */
		struct tref pmdt = TREF_NONE;
		if (pl >= 0) {
			uint64_t pud = host_entry_at(e, mm, addr, pl, &tbl, &idx);
			if (g->fmt->kind(pl, pud) != E_TABLE) {
				addr = next;
				continue;
			}
			pmdt = tref_from_phys(e, g->fmt->addr(pl, pud));
		}
		if (huge_pmd_unshare(e, mm, addr)) {
			uint64_t base = addr & ~(ps - 1);
			lo = base < lo ? base : lo;
			hi = base + ps > hi ? base + ps : hi;
			force_flush = true;
			addr = next; /* address |= last_addr_mask */
			continue;
		}
		tbl = TREF_NONE;
		host_entry_at(e, mm, addr, ml, &tbl, &idx);
		bool one = pl >= 0 && tbl.blk == pmdt.blk && tbl.half == pmdt.half; /* else a walk per address */
		for (; addr < next && !e->viol; addr += sz, idx++) {
			uint64_t ent = one ? entry_get(e, tbl, idx) : host_entry_at(e, mm, addr, ml, &tbl, &idx);
			if (g->fmt->kind(ml, ent) != E_LEAF)
				continue;
			uint64_t pfn = g->fmt->addr(ml, ent) >> 12;
			entry_write(e, tbl, ml, idx, g->fmt->empty(ml));
			emit(e, EV_LEAF_ZAP, ml, addr, pfn, mm);
			data_put(e, pfn);
		}
	}
	if (force_flush && e->knob[K_HUGETLB_UNSHARE_FLUSH] == UF_FIXED)
		flush_tlb_range(e, mm, lo, hi); /* tlb_flush_mmu_tlbonly */
	return force_flush;
}

/* __unmap_hugepage_range_final (unmap_single_vma of a shared hugetlb VMA, the part of [start, end) inside it):
 * hugetlb_vma_lock_write and i_mmap_lock_write around __unmap_hugepage_range, dropped before the caller's
 * free_pgtables and tlb_finish_mmu. The caller checked that no actor holds i_mmap_rwsem (vma_rmap_wait); the vma
 * lock no operation holds across operations. Private hugetlb VMAs (no sharing: huge_pmd_unshare is 0 for them)
 * are zapped by unmap_range's walk. */
bool unmap_hugepage_vma(struct engine *e, int mm, const struct vma *v, uint64_t start, uint64_t end)
{
	if (!hugetlb_shared(v))
		return false;
	uint64_t s = start > v->start ? start : v->start, t = end < v->end ? end : v->end;
	return s < t && __unmap_hugepage_range(e, mm, s, t);
}

/* adjust_range_if_pmd_sharing_possible: a notifier range that touches the PUD-aligned part of a VM_MAYSHARE VMA
 * grows to whole PUD ranges there (an unshare drops the mm's mapping of all of one). */
void adjust_range_if_pmd_sharing_possible(const struct engine *e, const struct vma *v, uint64_t *start,
					  uint64_t *end)
{
	if (!hugetlb_shared(v) || !arch_want_huge_pmd_share(e))
		return;
	uint64_t ps = pud_share_size(e), vs = (v->start + ps - 1) & ~(ps - 1), ve = v->end & ~(ps - 1);
	if (!(ve > vs) || *end <= vs || *start >= ve)
		return;
	if (*start > vs)
		*start &= ~(ps - 1);
	if (*end < ve)
		*end = (*end + ps - 1) & ~(ps - 1);
}

/* hugetlb_vm_op_split (v6.3+, b30c14cd6102): a split of a shared hugetlb VMA at addr that is not PUD-aligned first
 * unshares the PUD range around addr when the VMA covers it (hugetlb_unshare_pmds: under the vma lock and
 * i_mmap_rwsem for write, each PUD unshared, then flush_hugetlb_tlb_range before the unlock), since neither part
 * will cover it after the split. */
void hugetlb_vm_op_split(struct engine *e, int mm, const struct vma *v, uint64_t addr)
{
	if (!hugetlb_shared(v) || !arch_want_huge_pmd_share(e))
		return;
	uint64_t ps = pud_share_size(e), floor = addr & ~(ps - 1), ceil = floor + ps;
	if (!(addr & (ps - 1)) || floor < v->start || ceil > v->end || ceil < floor)
		return;
	mmu_notifier_invalidate_range(e, mm, floor, ceil);
	bool unshared = false;
	for (uint64_t a = floor; a < ceil && !e->viol; a += ps)
		unshared |= huge_pmd_unshare(e, mm, a) != 0;
	flush_tlb_range(e, mm, floor, ceil); /* flush_hugetlb_tlb_range */
	(void)unshared;
}
