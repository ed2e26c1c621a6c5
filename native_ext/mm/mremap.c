/* mm/mremap.c: mremap(2) as v6.6 does it: the syscall's checks, shrinking and growing in place, mremap_to and
 * move_vma (copy_vma, move_page_tables, the old range's unmap), and mremap_hold/mremap_end, which stop a move
 * between its move_page_tables and that unmap. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

enum pgt_entry { NORMAL_PMD, HPAGE_PMD, NORMAL_PUD, HPAGE_PUD };


/* What move_page_tables carries from move_vma (the kernel's arguments): the mm, the source VMA's rmap locks
 * and whether copy_vma asked for them (need_rmap_locks). */
struct move_ctl {
	int mm;
	bool need_rmap_locks, hugetlb, anon_vma_kind; /* anon_vma_kind: vma_is_anonymous (pmd_move_must_withdraw) */
	uint32_t anon_root; /* 0: no anon_vma */
	uint8_t shm;        /* 1 + the shmem object whose i_mmap_rwsem is the file rmap lock, 0: none */
};

/* The level above the PMD that has tables of its own: PUD_SIZE's level (-1 with two levels, where
 * move_normal_pud is compiled out: CONFIG_PGTABLE_LEVELS > 2). */
static int move_pud_level(const struct engine *e)
{
	for (int l = e->pmd_lvl - 1; l >= 0; l--)
		if (!e->geom.lv[l].folded)
			return l;
	return -1;
}

/* get_extent: the step to the next size boundary of the source or the destination, whichever is nearer. */
static uint64_t get_extent(uint64_t size, uint64_t old_addr, uint64_t old_end, uint64_t new_addr)
{
	uint64_t mask = ~(size - 1), next = (old_addr + size) & mask, extent = next - old_addr;
	if (extent > old_end - old_addr)
		extent = old_end - old_addr;
	next = (new_addr + size) & mask;
	if (extent > next - new_addr)
		extent = next - new_addr;
	return extent;
}

/* should the table move take the rmap locks? v6.6 (97113eb39fa7, mremap.move_pgt_rmap=write): always for the
 * NORMAL_PMD/NORMAL_PUD moves; before it (=read) only when copy_vma asked (need_rmap_locks), as for the others */
static bool should_take_rmap_locks(const struct engine *e, const struct move_ctl *mc, enum pgt_entry entry)
{
	if ((entry == NORMAL_PMD || entry == NORMAL_PUD) && e->knob[K_MREMAP_MOVE_PGT_RMAP] == MR_WRITE)
		return true;
	return mc->need_rmap_locks;
}

/* take_rmap_locks: i_mmap_rwsem, then the anon_vma root, for write. The model takes them as "would they wait":
 * the callers ask before anything changes (mremap_rmap_wait), so here they only say which were needed. */
static int take_rmap_locks(struct engine *e, const struct move_ctl *mc)
{
	int ret = mc->shm ? rmap_lock_wait(e, RL_FILE, mc->shm - 1u) : 0;
	return ret ? ret : mc->anon_root ? rmap_lock_wait(e, RL_ANON, mc->anon_root) : 0;
}

/* The entry at level lvl for addr when the walk reaches that level's table (get_old_pud / get_old_pmd: NULL
 * when a level above is none); false otherwise. */
static bool old_entry(struct engine *e, int mm, uint64_t addr, int lvl, uint64_t *val, struct tref *tbl,
		      uint32_t *idx)
{
	*tbl = TREF_NONE;
	*val = host_entry_at(e, mm, addr, lvl, tbl, idx);
	return tbl->blk >= 0 && e->geom.fmt->kind(lvl, *val) != E_EMPTY;
}

/* move_normal_pmd takes the two pmd locks, not the PTE table's lock: an rmap walker that took that lock (and
 * rechecked the pmd under it: page_vma_mapped_walk, v6.5+) before the move goes on with its pte in the moved
 * table, undisturbed. The model's walker rechecks at rmap_commit (mm.pmd_recheck=yes), which stands for that
 * recheck because every other path that changes the pmd of a table (collapse, retract) takes the PTE lock too; so
 * the pmd the walker rechecked follows the table here. */
static void pmd_moved_under_ptl(struct engine *e, struct tref ot, uint32_t oi, struct tref nt, uint32_t ni)
{
	for (int i = 0; i < MAX_CPUS; i++) {
		struct cpu *c = &e->cpus[i];
		if (c->actor == A_RMAP && c->pmd_tbl.blk == ot.blk && c->pmd_tbl.half == ot.half &&
		    c->pmd_tbl.gen == ot.gen && c->pmd_idx == oi) {
			c->pmd_tbl = nt;
			c->pmd_idx = ni;
		}
	}
}

/* move_normal_pmd / move_normal_pud: the whole lower table moves, under the two pmd (pud) locks: the old entry
 * cleared, the new one populated with the same table, then flush_tlb_range over the old entry's span. Not when
 * the new entry is populated (WARN_ON_ONCE). v6.6 has no "racing with collapse" recheck (6.12's). */
static bool move_normal_table(struct engine *e, int mm, int lvl, uint64_t old_addr, struct tref ot, uint32_t oi,
			      struct tref nt, uint32_t ni)
{
	const struct entry_fmt *f = e->geom.fmt;
	uint64_t val = entry_get(e, ot, oi);
	if (f->kind(lvl, entry_get(e, nt, ni)) != E_EMPTY)
		return false;
	entry_write(e, ot, lvl, oi, f->empty(lvl));
	entry_write(e, nt, lvl, ni, val);
	flush_tlb_range(e, mm, old_addr, old_addr + level_size(&e->geom, lvl));
	if (lvl == e->pmd_lvl)
		pmd_moved_under_ptl(e, ot, oi, nt, ni);
	return true;
}

/* move_huge_pmd (mm/huge_memory.c): a PMD leaf moves whole; pmd_move_must_withdraw: between two PMD tables (two
 * split pmd locks) the deposit of an anonymous VMA's leaf follows it; flush_pmd_tlb_range over the old PMD. */
static bool move_huge_pmd(struct engine *e, const struct move_ctl *mc, uint64_t old_addr, struct tref ot,
			  uint32_t oi, struct tref nt, uint32_t ni)
{
	const struct entry_fmt *f = e->geom.fmt;
	int ml = e->pmd_lvl;
	if (f->kind(ml, entry_get(e, nt, ni)) != E_EMPTY)
		return false;
	uint64_t pmd = entry_get(e, ot, oi);
	entry_write(e, ot, ml, oi, f->empty(ml));
	bool other_table = ot.blk != nt.blk || ot.half != nt.half;
	if (other_table && mc->anon_vma_kind && pmd_has_deposit(e, pmd)) {
		struct tref dep = pgtable_trans_huge_withdraw(e, ot);
		if (dep.blk >= 0)
			pgtable_trans_huge_deposit(e, nt, dep);
	}
	entry_write(e, nt, ml, ni, pmd);
	flush_tlb_range(e, mc->mm, old_addr, old_addr + pmd_size(e));
	return true;
}

/* move_ptes: PTE by PTE under both PTE locks (and the rmap locks when need_rmap_locks); a present pte moved
 * makes it flush_tlb_range the old extent before the locks drop (eb66ae030829). Moved ptes keep their value
 * (move_pte is the identity but on MIPS: s390's coloured zero page keeps its colour). */
static void move_ptes(struct engine *e, int mm, struct tref old_tbl, uint64_t old_addr, uint64_t extent,
		      struct tref new_tbl, uint64_t new_addr)
{
	const struct geom *g = &e->geom;
	int pl = pte_level(e);
	const struct entry_fmt *f = g->fmt;
	uint32_t mask = g->lv[pl].entries - 1;
	bool force_flush = false;
	for (uint64_t off = 0; off < extent; off += g->page_size) {
		uint32_t oi = (uint32_t)((old_addr + off) >> g->lv[pl].shift) & mask;
		uint32_t ni = (uint32_t)((new_addr + off) >> g->lv[pl].shift) & mask;
		uint64_t pte = entry_get(e, old_tbl, oi);
		if (f->kind(pl, pte) == E_EMPTY)
			continue;
		entry_write(e, old_tbl, pl, oi, f->empty(pl));
		force_flush |= f->kind(pl, pte) == E_LEAF;
		entry_write(e, new_tbl, pl, ni, pte);
	}
	if (force_flush)
		flush_tlb_range(e, mm, old_addr, old_addr + extent);
}

/* move_hugetlb_page_tables (mm/hugetlb.c): the notifier over the old range, hugetlb_vma_lock_write and
 * i_mmap_lock_write, each huge pte moved (huge_pte_alloc at the new address), then flush_hugetlb_tlb_range over
 * the old range. A shared PMD table is not moved: huge_pmd_unshare drops this mm's link and the PUD range is
 * skipped, and the flush then covers the PUD ranges (adjust_range_if_pmd_sharing_possible's range, issue 20); the
 * new address's huge_pte_alloc does not share here (a model simplification: the moved entries get a table of
 * their own). */
static uint64_t move_hugetlb_page_tables(struct engine *e, int mm, int lvl, uint64_t old_addr, uint64_t new_addr,
					 uint64_t len)
{
	const struct entry_fmt *f = e->geom.fmt;
	uint64_t sz = level_size(&e->geom, lvl), old_end = old_addr + len, done = 0, lo = old_addr, hi = old_end;
	mmu_notifier_invalidate_range(e, mm, old_addr, old_end);
	for (; done < len; done += sz) {
		uint64_t val, ps = lvl == e->pmd_lvl ? hugetlb_unshare_for_move(e, mm, old_addr + done) : 0;
		struct tref ot, nt;
		uint32_t oi, ni;
		int got;
		if (ps) { /* old_addr |= last_addr_mask: the rest of the PUD range */
			uint64_t base = (old_addr + done) & ~(ps - 1);
			lo = base < lo ? base : lo;
			hi = base + ps > hi ? base + ps : hi;
			done = base + ps - old_addr - sz;
			continue;
		}
		if (!old_entry(e, mm, old_addr + done, lvl, &val, &ot, &oi))
			continue;
		if (pt_slot(e, mm, new_addr + done, lvl, &nt, &ni, &got) || got != lvl)
			break;
		entry_write(e, ot, lvl, oi, f->empty(lvl));
		entry_write(e, nt, lvl, ni, val);
	}
	flush_tlb_range(e, mm, lo, hi);
	return done < len ? done : len;
}

/* One PMD-size (or smaller) extent of move_page_tables below the PUD step: HPAGE_PMD, NORMAL_PMD, or a split and
 * move_ptes. false: an allocation failed (the loop breaks). */
static bool move_pmd_extent(struct engine *e, const struct move_ctl *mc, uint64_t old_addr, uint64_t new_addr,
			    uint64_t extent)
{
	int ml = e->pmd_lvl, pl = pte_level(e), got;
	const struct entry_fmt *f = e->geom.fmt;
	uint64_t pmd;
	struct tref ot, nt, pte_tbl;
	uint32_t oi, ni;
	if (!old_entry(e, mc->mm, old_addr, ml, &pmd, &ot, &oi))
		return true; /* get_old_pmd: nothing mapped there */
	if (pt_slot(e, mc->mm, new_addr, ml, &nt, &ni, &got) || got != ml)
		return false; /* alloc_new_pmd */
	if (f->kind(ml, pmd) == E_LEAF) {
		if (extent == pmd_size(e) && move_huge_pmd(e, mc, old_addr, ot, oi, nt, ni))
			return true;
		__split_huge_pmd(e, mc->mm, old_addr);
	} else if (e->mm_ops->have_move_pmd && extent == pmd_size(e)) {
		if (move_normal_table(e, mc->mm, ml, old_addr, ot, oi, nt, ni))
			return true;
	}
	pmd = entry_get(e, ot, oi);
	if (f->kind(ml, pmd) != E_TABLE)
		return true; /* pmd_none after the split of a file PMD */
	if (pt_slot(e, mc->mm, new_addr, pl, &pte_tbl, &ni, &got) || got != pl)
		return false; /* pte_alloc */
	move_ptes(e, mc->mm, tref_from_phys(e, f->addr(ml, pmd)), old_addr, extent, pte_tbl, new_addr);
	return true;
}

/* move_page_tables: hugetlb VMAs through move_hugetlb_page_tables; else the notifier range over the old range
 * (MMU_NOTIFY_UNMAP), then extent by extent: a whole PUD table (NORMAL_PUD, CONFIG_HAVE_MOVE_PUD), a THP
 * (HPAGE_PMD), a whole PTE table (NORMAL_PMD, CONFIG_HAVE_MOVE_PMD), or PTE by PTE. Returns the length moved. */
static uint64_t move_page_tables(struct engine *e, const struct move_ctl *mc, int hlvl, uint64_t old_addr,
				 uint64_t new_addr, uint64_t len)
{
	if (!len)
		return 0;
	if (mc->hugetlb)
		return move_hugetlb_page_tables(e, mc->mm, hlvl, old_addr, new_addr, len);
	uint64_t old_end = old_addr + len, extent, start = old_addr;
	int ul = move_pud_level(e), got;
	mmu_notifier_invalidate_range(e, mc->mm, old_addr, old_end);
	for (; old_addr < old_end && !e->viol; old_addr += extent, new_addr += extent) {
		if (ul >= 0) {
			uint64_t pud, psz = level_size(&e->geom, ul);
			struct tref ot, nt;
			uint32_t oi, ni;
			extent = get_extent(psz, old_addr, old_end, new_addr);
			if (!old_entry(e, mc->mm, old_addr, ul, &pud, &ot, &oi))
				continue; /* get_old_pud */
			if (pt_slot(e, mc->mm, new_addr, ul, &nt, &ni, &got) || got != ul)
				break; /* alloc_new_pud */
			/* a PUD leaf here is hugetlb's (handled above) or devmap's: none in the model */
			if (e->geom.fmt->kind(ul, pud) == E_TABLE && e->mm_ops->have_move_pud && extent == psz &&
			    move_normal_table(e, mc->mm, ul, old_addr, ot, oi, nt, ni))
				continue;
		}
		extent = get_extent(pmd_size(e), old_addr, old_end, new_addr);
		if (!move_pmd_extent(e, mc, old_addr, new_addr, extent))
			break;
	}
	return old_addr > old_end ? len : old_addr - start;
}

/* Would move_page_tables take the rmap locks, and would they wait? The model asks before anything changes: a dry
 * run of the loop's choices (the destination taken as empty, as the unmap before it leaves it), -EBUSY naming the
 * holder, or 0. move_hugetlb_page_tables' i_mmap_rwsem is a hugetlbfs file's, which no walker of the model holds. */
static int move_page_tables_wait(struct engine *e, const struct move_ctl *mc, uint64_t old_addr, uint64_t new_addr,
				 uint64_t len)
{
	if (mc->hugetlb || !len)
		return 0;
	const struct entry_fmt *f = e->geom.fmt;
	uint64_t old_end = old_addr + len, extent, val;
	int ul = move_pud_level(e), ml = e->pmd_lvl;
	struct tref t;
	uint32_t idx;
	bool need = false;
	for (; old_addr < old_end; old_addr += extent, new_addr += extent) {
		if (ul >= 0) {
			uint64_t psz = level_size(&e->geom, ul);
			extent = get_extent(psz, old_addr, old_end, new_addr);
			if (!old_entry(e, mc->mm, old_addr, ul, &val, &t, &idx))
				continue;
			if (f->kind(ul, val) == E_TABLE && e->mm_ops->have_move_pud && extent == psz) {
				need |= should_take_rmap_locks(e, mc, NORMAL_PUD);
				continue;
			}
		}
		extent = get_extent(pmd_size(e), old_addr, old_end, new_addr);
		if (!old_entry(e, mc->mm, old_addr, ml, &val, &t, &idx))
			continue;
		enum pgt_entry kind = f->kind(ml, val) == E_LEAF ? HPAGE_PMD : NORMAL_PMD;
		bool whole = extent == pmd_size(e) && (kind == HPAGE_PMD || e->mm_ops->have_move_pmd);
		need |= whole ? should_take_rmap_locks(e, mc, kind) : mc->need_rmap_locks; /* move_ptes' own rule */
	}
	return need ? take_rmap_locks(e, mc) : 0;
}

/* The cpu armed by mremap_hold, or -1 */
static int mremap_window_armed(const struct engine *e)
{
	for (int i = 0; i < MAX_CPUS; i++)
		if (e->cpus[i].actor == A_MREMAP && !e->cpus[i].walk_done)
			return i;
	return -1;
}

static struct move_ctl move_ctl_of(int mm, const struct vma *src)
{
	return (struct move_ctl){ .mm = mm, .hugetlb = (src->flags & VMA_HUGETLB) != 0,
				  .anon_vma_kind = !src->shm && !(src->flags & VMA_HUGETLB),
				  .anon_root = src->anon ? src->anon_root : 0, .shm = src->shm };
}

/* Would move_vma wait? Asked before anything of the mremap changes (mremap_to's unmaps included): the table
 * moves' rmap locks (need_rmap_locks as copy_vma will say it) and, unless an armed mremap_hold defers it, the old
 * range's unmap (__split_vma, unlink_anon_vmas, unlink_file_vma). copy_vma's own rmap locks are not asked: they
 * are taken and dropped before move_page_tables, so an rmap walker that holds them for read in the model is one
 * that began after them (its state, a pmd and a PTE table, does not depend on copy_vma). */
static int move_vma_wait(struct engine *e, int mm, const struct vma *src, uint64_t old_addr, uint64_t old_len,
			 uint64_t new_len, uint64_t new_addr)
{
	struct move_ctl mc = move_ctl_of(mm, src);
	mc.need_rmap_locks = copy_vma_need_rmap_locks(e, mm, src, new_addr, new_len, vma_pgoff_at(e, src, old_addr));
	int ret = move_page_tables_wait(e, &mc, old_addr, new_addr, old_len);
	return ret || mremap_window_armed(e) >= 0 ? ret : vma_rmap_wait(e, src);
}

/* move_vma: vma_start_write, copy_vma, move_page_tables (on a short move: the entries moved back and the new
 * range unmapped instead, -ENOMEM), then do_vmi_munmap of the old range, or, on a cpu mremap_hold armed, stop
 * before that unmap (mremap_end does it). */
static int move_vma(struct engine *e, int mm, const struct vma *vma, uint64_t old_addr, uint64_t old_len,
		    uint64_t new_len, uint64_t new_addr)
{
	struct vma src = *vma;
	struct move_ctl mc = move_ctl_of(mm, &src);
	int hold = mremap_window_armed(e);
	int ret = lock_acquire_range(e, LC_VMA, (uint64_t)mm, LM_WRITE, src.start, src.end);
	if (ret || (ret = copy_vma(e, mm, &src, new_addr, new_len, vma_pgoff_at(e, &src, old_addr), &mc.need_rmap_locks)))
		return ret;
	int hlvl = mc.hugetlb ? ((src.flags & VMA_HUGETLB_PMD) ? e->pmd_lvl : pud_level(&e->geom)) : -1;
	uint64_t moved = move_page_tables(e, &mc, hlvl, old_addr, new_addr, old_len);
	if (e->viol)
		return 0;
	if (moved < old_len) {
		/* move the entries back, then unmap the new area instead of the old */
		mc.need_rmap_locks = true;
		move_page_tables(e, &mc, hlvl, new_addr, old_addr, moved);
		do_vmi_munmap(e, mm, new_addr, new_len, false);
		return -ENOMEM;
	}
	if (hold >= 0 && inval_window_of_current(e) < 0) {
		/* stopped before the old range's unmap, mmap_lock and the two VMAs write-locked (a thread that an
		 * invalidation window stopped at move_page_tables' notifier is stopped there only) */
		struct cpu *c = &e->cpus[hold];
		c->walk_done = true;
		c->mm = mm;
		c->addr = old_addr;
		c->size = old_len;
		c->gpa = src.start;
		c->hva = src.end;
		c->pfn = new_addr;
		c->folio = new_len;
		c->seq = e->op_index;
		mmgrab(e, mm);
		return 0;
	}
	do_vmi_munmap(e, mm, old_addr, old_len, false); /* a failure here only recounts (VM_ACCOUNT) */
	return 0;
}

/* vma_to_resize: the VMA at addr; a zero old_len only for a shared mapping; the old range inside the VMA; growth
 * not past vm_pgoff's range, nor for VM_DONTEXPAND (hugetlbfs sets it). mlock_future_ok and may_expand_vm's
 * rlimits are not modelled. */
static int vma_to_resize(struct engine *e, int mm, uint64_t addr, uint64_t old_len, uint64_t new_len,
			 struct vma **out)
{
	struct vma *v = vma_find(&e->mms[mm], addr);
	if (!v)
		return -EFAULT;
	if (!old_len && !v->shm)
		return -EINVAL; /* "attempted to duplicate a private mapping with mremap" */
	if (old_len > v->end - addr)
		return -EFAULT;
	*out = v;
	if (new_len == old_len)
		return 0;
	uint64_t pgoff = vma_pgoff_at(e, v, addr);
	if (pgoff + new_len / e->geom.page_size < pgoff)
		return -EINVAL;
	return (v->flags & VMA_HUGETLB) ? -EFAULT : 0;
}

/* get_unmapped_area(..., MAP_FIXED) for a range the caller checked against TASK_SIZE: the arch's (s390:
 * check_asce_limit may upgrade the page table, which can fail with -ENOMEM), then addr > TASK_SIZE - len. */
static int get_unmapped_area_fixed(struct engine *e, int mm, uint64_t addr, uint64_t len)
{
	uint64_t task = e->task_size;
	if (len > task)
		return -ENOMEM;
	if (e->mm_ops->crst_table_upgrade && addr + len > e->mms[mm].asce_limit && addr + len <= task) {
		int ret = e->mm_ops->crst_table_upgrade(e, mm, addr + len);
		if (ret)
			return ret;
	}
	return addr > task - len ? -ENOMEM : 0;
}

/* Would mremap_to's unmaps wait? do_munmap of the new range, then of the shrunk tail: each VMA they touch. */
static int mremap_to_wait(struct engine *e, int mm, uint64_t addr, uint64_t old_len, uint64_t new_addr,
			  uint64_t new_len)
{
	struct mm *m = &e->mms[mm];
	int ret = 0;
	for (int i = vma_index_after(m, new_addr); !ret && i < m->nvma && m->vmas[i].start < new_addr + new_len; i++)
		ret = vma_rmap_wait(e, &m->vmas[i]);
	for (int i = vma_index_after(m, addr + new_len); !ret && old_len > new_len && i < m->nvma &&
	     m->vmas[i].start < addr + old_len; i++)
		ret = vma_rmap_wait(e, &m->vmas[i]);
	return ret;
}

/* mremap_to (MREMAP_MAYMOVE | MREMAP_FIXED): new_addr page-aligned, the new range inside TASK_SIZE and apart from
 * the old one (-EINVAL), the new range unmapped, a shrink's tail unmapped, vma_to_resize, get_unmapped_area
 * with MAP_FIXED, move_vma. */
static int mremap_to(struct engine *e, int mm, uint64_t addr, uint64_t old_len, uint64_t new_addr, uint64_t new_len)
{
	uint64_t task = e->task_size;
	if (new_addr & (e->geom.page_size - 1))
		return -EINVAL;
	if (new_len > task || new_addr > task - new_len)
		return -EINVAL;
	if (addr + old_len > new_addr && new_addr + new_len > addr)
		return -EINVAL;
	const struct vma *src = vma_find(&e->mms[mm], addr);
	int ret = mremap_to_wait(e, mm, addr, old_len, new_addr, new_len);
	if (!ret && src && (old_len <= src->end - addr || !old_len))
		ret = move_vma_wait(e, mm, src, addr, old_len < new_len ? old_len : new_len, new_len, new_addr);
	if (ret || (ret = do_vmi_munmap(e, mm, new_addr, new_len, false)))
		return ret;
	if (old_len > new_len) {
		if ((ret = do_vmi_munmap(e, mm, addr + new_len, old_len - new_len, false)))
			return ret;
		old_len = new_len;
	}
	struct vma *v;
	if ((ret = vma_to_resize(e, mm, addr, old_len, new_len, &v)))
		return ret;
	if ((ret = get_unmapped_area_fixed(e, mm, new_addr, new_len)))
		return ret;
	return move_vma(e, mm, v, addr, old_len, new_len, new_addr);
}

/* remap_move (6.17+, mremap.move_multi_vma=yes): a move without resize, VMA by VMA over [addr, addr + len): no
 * gap at the start (-EFAULT), each VMA's part moved by mremap_to to the destination at the same distance from the
 * previous one's end as in the source. Every VMA kind the model has (anonymous, shmem, hugetlb) may go with
 * others (vma_multi_allowed). */
static int remap_move(struct engine *e, int mm, uint64_t addr, uint64_t len, uint64_t new_addr)
{
	struct mm *m = &e->mms[mm];
	uint64_t end = addr + len, cur = addr, target = new_addr, last_end = 0;
	bool seen = false;
	int ret = -EFAULT;
	for (;;) {
		int i = vma_index_after(m, cur);
		if (i >= m->nvma || m->vmas[i].start >= end)
			break;
		const struct vma *v = &m->vmas[i];
		if (!seen && addr < v->start)
			return -EFAULT; /* no gap permitted at the start of the range */
		uint64_t a = v->start > addr ? v->start : addr, l = (end < v->end ? end : v->end) - a;
		uint64_t offset = seen ? v->start - last_end : 0;
		last_end = v->end;
		if (v->flags & VMA_HUGETLB) { /* check_prep_vma: align_hugetlb */
			uint64_t hs = hugetlb_size(e, v);
			l = (l + hs - 1) & ~(hs - 1);
			if ((a & (hs - 1)) || ((target + offset) & (hs - 1)))
				return -EINVAL;
		}
		if ((ret = mremap_to(e, mm, a, l, target + offset, l)) || e->viol)
			return ret;
		seen = true;
		target += offset + l;
		cur = last_end;
	}
	return seen ? 0 : ret;
}

/* The in-place growth of a VMA that old_len reaches the end of: vma_expandable (no VMA in the extension,
 * get_unmapped_area with MAP_FIXED over the grown VMA) and vma_merge of the extension, which extends the VMA
 * and absorbs next when it touches the new end and could merge. -ENOMEM when it cannot (no MREMAP_MAYMOVE). */
static int mremap_expand(struct engine *e, int mm, struct vma *v, uint64_t delta)
{
	struct mm *m = &e->mms[mm];
	uint64_t end = v->end + delta;
	if (end < v->end || vma_overlaps(m, v->end, end) || get_unmapped_area_fixed(e, mm, v->start, end - v->start))
		return -ENOMEM;
	int pos = (int)(v - m->vmas);
	struct vma *next = pos + 1 < m->nvma && m->vmas[pos + 1].start == end ? &m->vmas[pos + 1] : NULL;
	bool mn = next && is_mergeable_vma(next, v->flags, v->file) &&
		  is_mergeable_anon_vma(e, v->anon, v, next, next->anon) && pgoff_continues(e, v, end, next->pgoff);
	int ret = vma_rmap_wait(e, v); /* vma_prepare: the anon_vma and i_mmap for write */
	if (!ret && mn)
		ret = vma_rmap_wait(e, next);
	if (ret)
		return ret;
	v->end = mn ? next->end : end;
	if (mn) {
		dup_anon_vma(v, next);
		vma_remove_at(m, pos + 1);
	}
	return 0;
}

/* SYSCALL_DEFINE5(mremap): addr page-aligned, lengths rounded up to pages, new_len not 0 (-EINVAL);
 * mmap_write_lock; vma_lookup (-EFAULT); a hugetlb VMA's lengths rounded to its page size, addr and new_addr
 * aligned to it and no growth (-EINVAL); fixed: mremap_to; else a shrink unmaps the tail (mmap_lock downgraded),
 * a growth expands in place or fails (-ENOMEM: no MREMAP_MAYMOVE). 0 on success (the syscall's address). */
int sys_mremap(struct engine *e, int mm, uint64_t addr, uint64_t old_len, uint64_t new_len, uint64_t new_addr,
	       bool fixed)
{
	uint64_t page = e->geom.page_size;
	if (addr & (page - 1))
		return -EINVAL;
	old_len = (old_len + page - 1) & ~(page - 1);
	new_len = (new_len + page - 1) & ~(page - 1);
	if (!new_len)
		return -EINVAL;
	int ret = lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_WRITE);
	if (ret)
		return ret;
	bool v617 = e->knob[K_MREMAP_MULTI_VMA] == 1;
	if (v617 && fixed) { /* 6.17+ check_mremap_params: the new range's checks come first */
		uint64_t task = e->task_size;
		if ((new_addr & (page - 1)) || new_len > task || new_addr > task - new_len ||
		    (addr + old_len > new_addr && new_addr + new_len > addr))
			return -EINVAL;
		if (old_len == new_len)
			return remap_move(e, mm, addr, old_len, new_addr); /* vrm_move_only: no VMA lookup */
	}
	struct vma *v = vma_find(&e->mms[mm], addr);
	if (!v)
		return -EFAULT;
	if (v->flags & VMA_HUGETLB) {
		uint64_t hs = hugetlb_size(e, v);
		old_len = (old_len + hs - 1) & ~(hs - 1);
		new_len = (new_len + hs - 1) & ~(hs - 1);
		if ((addr & (hs - 1)) || (new_addr & (hs - 1)) || new_len > old_len)
			return -EINVAL;
	}
	/* 6.17+ check_prep_vma: a move or a growth is checked against the VMA before anything is unmapped (a
	 * shrinking move by the length it will move) */
	if (v617 && (fixed || new_len > old_len) &&
	    (ret = vma_to_resize(e, mm, addr, old_len < new_len ? old_len : new_len, new_len, &v)))
		return ret;
	if (fixed)
		return mremap_to(e, mm, addr, old_len, new_addr, new_len);
	if (old_len >= new_len) {
		/* do_vmi_munmap(addr + new_len, old_len - new_len, downgrade): its error counts only for a real shrink */
		ret = do_vmi_munmap(e, mm, addr + new_len, old_len - new_len, true);
		return ret < 0 && old_len != new_len ? ret : 0;
	}
	if ((ret = vma_to_resize(e, mm, addr, old_len, new_len, &v)))
		return ret;
	if (old_len != v->end - addr)
		return -ENOMEM;
	return mremap_expand(e, mm, v, new_len - old_len);
}

/* mremap_hold: arm the cpu; the next move_vma stops on it after move_page_tables, before the old range's
 * unmap, holding mmap_lock for write and the two VMAs write-locked (mremap_end finishes it). */
int mremap_hold(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_NONE)
		return -EBUSY;
	c->actor = A_MREMAP;
	c->walk_done = false;
	c->mm = 0;
	c->addr = c->size = c->gpa = c->hva = c->pfn = c->folio = c->seq = 0;
	return 0;
}

/* mremap_end: the held move unmaps its old range (do_vmi_munmap, which waits for an rmap walker holding the
 * VMA's rmap locks: -EBUSY, still held); on an armed cpu no move reached, the hold is cancelled. */
int mremap_end(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_MREMAP)
		return -EINVAL;
	if (c->walk_done) {
		int mm = c->mm;
		e->self_cpu = cpu; /* its own mmap_lock and VMA locks do not make it wait */
		const struct vma *v = vma_find(&e->mms[mm], c->addr);
		int ret = v ? vma_rmap_wait(e, v) : 0;
		if (ret)
			return ret;
		do_vmi_munmap(e, mm, c->addr, c->size, false);
		mmdrop(e, mm);
	}
	c->actor = A_NONE;
	c->walk_done = false;
	c->mm = 0;
	c->addr = c->size = c->gpa = c->hva = c->pfn = c->folio = c->seq = 0;
	e->locks_grew = true;
	return 0;
}
