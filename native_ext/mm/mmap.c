/* mm/mmap.c: mmap and munmap (mm/mmap.c, mm/vma.c's split and link), exit_mmap; a munmap held after its hugetlb
 * unshare (unshare_hold, issue 20). */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

void exit_mmap(struct engine *e, int mm)
{
	struct mm *m = &e->mms[mm];
	mmu_notifier_release(e, mm);
	/* unmap_vmas + free_pgtables, VMA by VMA: only tables under some VMA exist */
	int n = m->nvma;
	m->nvma = 0;
	tlb_gather_mmu(e, mm, 0, ~0ull); /* fullmm */
	for (int i = 0; i < n && !e->viol; i++) {
		unmap_hugepage_vma(e, mm, &m->vmas[i], m->vmas[i].start, m->vmas[i].end); /* unshare, zap */
		unmap_range(e, mm, m->vmas[i].start, m->vmas[i].end, true);
	}
	tlb_finish_mmu(e);
	m->dead = true;
	e->frag_dirty = e->gmap_dirty = true;
}

/* Would dropping this mm_users reference (the last) wait? exit_mmap takes mmap_lock for read (unmap_vmas), then for
 * write (free_pgtables), whose unlink_anon_vmas and unlink_file_vma take every VMA's anon_vma root and
 * i_mmap_rwsem for write; and a host thread a window stopped still holds the mm. -EBUSY naming the holder, or 0. */
int exit_mmap_wait(struct engine *e, int mm)
{
	struct mm *m = &e->mms[mm];
	if (m->users != 1)
		return 0;
	int ret = lock_would_wait(e, LC_MMAP, (uint64_t)mm, LM_WRITE);
	for (int i = 0; !ret && i < m->nvma; i++)
		ret = vma_rmap_wait(e, &m->vmas[i]);
	if (ret)
		return ret;
	int cpu = inval_window_holder(e, mm);
	if (cpu < 0)
		return 0;
	struct held_lock h = { .cls = LC_MM_USERS, .mode = LM_READ, .id = (uint64_t)mm, .hi = ~0ull };
	return lock_wait(e, cpu, LC_MM_USERS, (uint64_t)mm, LM_WRITE, &h);
}

/* __split_vma: hugetlb VMAs split only at huge-page boundaries (hugetlb_vm_op_split); a THP across the
 * new boundary is split first (vma_adjust_trans_huge). */
int vma_split_at(struct engine *e, int mm, uint64_t addr)
{
	struct mm *m = &e->mms[mm];
	struct vma *v = vma_find(m, addr);
	if (!v || v->start == addr)
		return 0;
	if ((v->flags & VMA_HUGETLB) && (addr & (hugetlb_size(e, v) - 1)))
		return -EINVAL;
	if (m->nvma >= MAX_VMAS)
		return -ENOMEM;
	hugetlb_vm_op_split(e, mm, v, addr); /* the PUD range around addr unshared (PMD sharing) */
	int ret = split_huge_pmd_if_needed(e, mm, v, addr);
	if (ret)
		return ret;
	int pos = (int)(v - m->vmas);
	struct vma tail = *v;
	tail.start = addr;
	tail.pgoff = vma_pgoff_at(e, v, addr); /* new->vm_pgoff += (addr - vma->vm_start) >> PAGE_SHIFT */
	m->vmas[pos].end = addr;
	return vma_insert_at(m, pos + 1, tail);
}

/* mmap_region's "attempt to expand an old mapping": may the new range merge with next (can_vma_merge_before)
 * and with prev (can_vma_merge_after)? prev/next are the neighbours as they are once the range is unmapped. */
static void vma_link_plan(const struct engine *e, const struct vma *prev, const struct vma *next,
			  const struct vma *nv, bool *mp_out, bool *mn_out)
{
	if (nv->flags & VMA_HUGETLB) { /* mmap_region tries with do_mmap's vm_flags, before hugetlbfs_file_mmap adds */
		*mp_out = *mn_out = false; /* VM_HUGETLB | VM_DONTEXPAND: never a hugetlb neighbour's */
		return;
	}
	bool mn = next && is_mergeable_vma(next, nv->flags, nv->file) &&
		  is_mergeable_anon_vma(e, 0, NULL, next, next->anon) && pgoff_continues(e, nv, nv->end, next->pgoff);
	bool mp;
	if (e->knob[K_MERGE_UNFAULTED] == 1) /* vma_merge_new_range: both sides, then prev against next */
		mp = prev && is_mergeable_vma(prev, nv->flags, nv->file) &&
		     is_mergeable_anon_vma(e, 0, NULL, prev, prev->anon) &&
		     (!mn || is_mergeable_anon_vma(e, prev->anon, prev, NULL, next->anon));
	else /* mmap_region: prev is checked against the anon_vma of the next it would absorb */
		mp = prev && is_mergeable_vma(prev, nv->flags, nv->file) &&
		     is_mergeable_anon_vma(e, mn ? next->anon : 0, mn ? next : NULL, prev, prev->anon);
	*mp_out = mp && pgoff_continues(e, prev, prev->end, nv->pgoff);
	*mn_out = mn;
}

/* mmap_region's merge of a new range with its neighbours (vma_expand), else a new VMA. */
static int vma_link_new(struct engine *e, struct mm *m, struct vma nv)
{
	int pos = vma_index_after(m, nv.start);
	struct vma *prev = pos > 0 && m->vmas[pos - 1].end == nv.start ? &m->vmas[pos - 1] : NULL;
	struct vma *next = pos < m->nvma && m->vmas[pos].start == nv.end ? &m->vmas[pos] : NULL;
	bool mp, mn;
	vma_link_plan(e, prev, next, &nv, &mp, &mn);
	if (mp) {
		prev->end = mn ? next->end : nv.end;
		if (mn) {
			dup_anon_vma(prev, next);
			vma_remove_at(m, pos);
		}
		return 0;
	}
	if (mn) {
		next->start = nv.start;
		next->pgoff = nv.pgoff; /* vm_pgoff = next->vm_pgoff - pglen */
		return 0;
	}
	return vma_insert_at(m, pos, nv);
}

/* Would mmap_region of nv wait for an rmap walker? The unmap of what it replaces (__split_vma's vma_prepare,
 * free_pgtables' unlink_anon_vmas and unlink_file_vma), the expansion of a neighbour (vma_expand's
 * vma_prepare) and the insertion of a file VMA into i_mmap (vma_link) take those locks for write. */
static int mmap_region_wait(struct engine *e, struct mm *m, const struct vma *nv)
{
	int ret = nv->shm ? rmap_lock_wait(e, RL_FILE, nv->shm - 1u) : 0;
	int i = vma_index_after(m, nv->start);
	for (int j = i; !ret && j < m->nvma && m->vmas[j].start < nv->end; j++)
		ret = vma_rmap_wait(e, &m->vmas[j]);
	if (ret)
		return ret;
	struct vma p, n;
	bool hp = false, hn = false;
	if (i < m->nvma && m->vmas[i].start < nv->start) { /* the piece of a VMA split at the start */
		p = m->vmas[i];
		p.end = nv->start;
		hp = true;
	} else if (i > 0 && m->vmas[i - 1].end == nv->start) {
		p = m->vmas[i - 1];
		hp = true;
	}
	int k = vma_index_after(m, nv->end);
	if (k < m->nvma && m->vmas[k].start <= nv->end) {
		n = m->vmas[k];
		if (n.start < nv->end) { /* the piece of a VMA split at the end */
			n.pgoff = vma_pgoff_at(e, &n, nv->end);
			n.start = nv->end;
		}
		hn = true;
	}
	bool mp, mn;
	vma_link_plan(e, hp ? &p : NULL, hn ? &n : NULL, nv, &mp, &mn);
	ret = mp ? vma_rmap_wait(e, &p) : 0;
	return ret ? ret : mn ? vma_rmap_wait(e, &n) : 0;
}

/* do_vmi_align_munmap: split the VMAs at the edges, remove them, then (munmap(2) only: mmap_write_downgrade,
 * always since e4bd84c069f2 "mm: Always downgrade mmap_lock if requested", v6.5) notify, zap and free the tables;
 * mmap_region's do_vmi_munmap never downgrades, so a MAP_FIXED mmap notifies under the write lock. */
static int do_vmi_align_munmap(struct engine *e, int mm, uint64_t start, uint64_t end, bool downgrade)
{
	struct mm *m = &e->mms[mm];
	if (!vma_overlaps(m, start, end))
		return 0;
	int ret = 0;
	for (int i = vma_index_after(m, start); !ret && i < m->nvma && m->vmas[i].start < end; i++)
		ret = vma_rmap_wait(e, &m->vmas[i]); /* __split_vma, unlink_anon_vmas, unlink_file_vma */
	if (ret)
		return ret;
	ret = vma_split_at(e, mm, start);
	if (!ret)
		ret = vma_split_at(e, mm, end);
	if (ret || e->viol)
		return ret;
	if (downgrade)
		lock_downgrade(e, LC_MMAP, (uint64_t)mm); /* vma_end_write_all too: the detached VMAs are out of the tree */
	else
		lock_acquire_range(e, LC_VMA, (uint64_t)mm, LM_WRITE, start, end); /* vma_start_write: the detached VMAs */
	mmu_notifier_invalidate_range(e, mm, start, end);
	bool held = unmap_hugepage_range_vmas(e, mm, start, end, downgrade); /* shared hugetlb: unshare, zap */
	int w = 0;
	for (int i = 0; i < m->nvma; i++)
		if (!(m->vmas[i].start >= start && m->vmas[i].end <= end))
			m->vmas[w++] = m->vmas[i];
	m->nvma = w;
	if (held)
		return 0; /* stopped before free_pgtables (unshare_hold): unshare_end does the rest */
	tlb_gather_mmu(e, mm, start, end); /* unmap_region */
	unmap_range(e, mm, start, end, true);
	tlb_finish_mmu(e);
	return 0;
}

/* ksys_mmap_pgoff (hugetlb: len rounded up to the huge page size), do_mmap, get_unmapped_area (MAP_FIXED;
 * hugetlb: prepare_hugepage_range; s390: check_asce_limit upgrades), mmap_region. obj >= 0: MAP_SHARED of
 * shmem object obj at page offset pgoff (do_mmap's offset overflow check, file_mmap_ok: -EOVERFLOW). */
int do_mmap(struct engine *e, int mm, uint64_t addr, uint64_t len, uint64_t flags, int obj, uint64_t pgoff)
{
	struct mm *m = &e->mms[mm];
	uint64_t page = e->geom.page_size, task = e->task_size, hs = 0;
	int hlvl = -1;
	if (flags & 6) {
		/* MAP_HUGETLB with MAP_HUGE_SHIFT's size log: bit1 log2(PMD_SIZE), bit2 log2(PUD_SIZE), the config's
		 * (a folded level has its parent's shift, so lv[2] is PUD_SHIFT: PGDIR_SHIFT at 3 levels, PMD_SHIFT at 2),
		 * both bits the two logs ORed as mmap(2) gets them (docs/trace-format.md). ksys_mmap_pgoff -> hstate_sizelog:
		 * -EINVAL without an hstate of that size. The hstates the model has: PMD_SIZE, and PUD_SIZE where it is a
		 * leaf level of its own (pud_shift; arm64 hugetlbpage_init adds it with 4K pages only). arm64 16K/36 and
		 * 64K/42 fold the pmd: PUD_SIZE is PMD_SIZE, one hstate, a PMD-size hugetlb VMA. */
		unsigned log = ((flags & 2) ? e->geom.pmd_shift : 0u) | ((flags & 4) ? e->geom.lv[2].shift : 0u);
		hlvl = log == e->geom.pmd_shift ? e->pmd_lvl : e->geom.pud_shift && log == e->geom.pud_shift ?
		       pud_level(&e->geom) : -1;
		if (hlvl < 0 || !e->geom.lv[hlvl].leaf_ok)
			return -EINVAL; /* hstate_sizelog: no such huge page size */
		hs = level_size(&e->geom, hlvl);
		len = (len + hs - 1) & ~(hs - 1);
	}
	/* vm_mmap_pgoff: mmap_write_lock_killable, then do_mmap and every check in it */
	int ret = lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_WRITE);
	if (ret)
		return ret;
	if (!len)
		return -EINVAL;
	len = (len + page - 1) & ~(page - 1);
	if (!len)
		return -ENOMEM;
	if (obj >= 0 && pgoff + len / page < pgoff)
		return -EOVERFLOW; /* do_mmap: offset overflow? */
	if (len > task)
		return -ENOMEM;
	if (hs && (addr & (hs - 1)))
		return -EINVAL;
	/* s390 arch_get_unmapped_area (and hugetlb_get_unmapped_area after prepare_hugepage_range) with MAP_FIXED goes
	 * straight to check_asce_limit: "addr + len > asce_limit && addr + len <= TASK_SIZE" upgrades, whether or
	 * not addr is page-aligned (get_unmapped_area's offset_in_page -EINVAL comes after) and in wrapped unsigned
	 * arithmetic as written */
	bool upgrade = e->mm_ops->crst_table_upgrade && addr + len > m->asce_limit && addr + len <= task;
	/* what fails after get_unmapped_area: the MAP_FIXED checks, then file_mmap_ok (MAX_LFS_FILESIZE) */
	const uint64_t max_lfs = (1ull << 63) - 1;
	int late = addr > task - len ? -ENOMEM : (addr & (page - 1)) ? -EINVAL :
		   obj >= 0 && (len > max_lfs || pgoff > ((max_lfs - len) / page)) ? -EOVERFLOW : 0;
	/* vm_pgoff: an anonymous mapping's is addr >> PAGE_SHIFT (mmap_region: pgoff = addr >> PAGE_SHIFT), which
	 * mremap carries along to the moved VMA; a hugetlbfs file's starts at 0 */
	struct vma v = { .start = addr, .end = addr + len, .pgoff = flags & 6 ? 0 : addr / page };
	if (hlvl >= 0)
		v.flags |= hlvl == e->pmd_lvl ? VMA_HUGETLB_PMD : VMA_HUGETLB_PUD;
	if (obj >= 0) {
		v.shm = (uint8_t)(obj + 1);
		v.file = SHM_FILE(obj);
		v.pgoff = pgoff;
	}
	if (m->def_nohuge)
		v.flags |= VMA_NOHUGE; /* vm_flags |= mm->def_flags */
	ret = late ? 0 : mmap_region_wait(e, m, &v); /* a lock mmap_region takes for write is held: nothing changes */
	if (ret)
		return ret;
	if (upgrade) {
		ret = e->mm_ops->crst_table_upgrade(e, mm, addr + len);
		if (ret)
			return ret;
	}
	if (late)
		return late;
	ret = do_vmi_align_munmap(e, mm, addr, addr + len, false);
	if (ret || e->viol)
		return ret == -EBUSY ? ret : ret ? -ENOMEM : 0; /* mmap_region: a failed do_vmi_munmap is -ENOMEM */
	if (obj >= MAX_SHM && pgoff % (hs / page))
		return -EINVAL; /* hugetlbfs_file_mmap (call_mmap, after the unmap): vm_pgoff not huge-page aligned */
	if ((flags & 6) && obj < 0)
		v.file = ++e->next_file; /* MAP_HUGETLB: a new hugetlbfs file (hugetlb_file_setup) */
	if (obj >= 0)
		shmem_obj(e, obj); /* the object exists from its first mapping on */
	if ((ret = vma_link_new(e, m, v)) || !(flags & 1))
		return ret;
	return DO_MMAP_THEN_HUGEPAGE; /* bit0: the caller's MADV_HUGEPAGE follows, as the crosscheck helper does it */
}

/* do_vmi_munmap: start aligned, len rounded up, inside TASK_SIZE; nothing mapped there is 0. Then
 * do_vmi_align_munmap; downgrade: munmap(2) and mremap's shrink (do_munmap, mremap_to and move_vma: false). */
int do_vmi_munmap(struct engine *e, int mm, uint64_t start, uint64_t len, bool downgrade)
{
	uint64_t page = e->geom.page_size, task = e->task_size;
	if ((start & (page - 1)) || start > task || len > task - start)
		return -EINVAL;
	uint64_t end = start + ((len + page - 1) & ~(page - 1));
	if (end == start)
		return -EINVAL;
	return do_vmi_align_munmap(e, mm, start, end, downgrade);
}

/* __vm_munmap: mmap_write_lock_killable, then do_vmi_munmap */
int __vm_munmap(struct engine *e, int mm, uint64_t start, uint64_t len)
{
	int ret = lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_WRITE);
	return ret ? ret : do_vmi_munmap(e, mm, start, len, true);
}

/* copy_vma: mremap's new VMA. vma_merge with the neighbours of [addr, addr + len) (can_vma_merge_after /
 * _before: same flags and file, a compatible anon_vma, continuing vm_pgoff; both only when prev's and next's
 * anon_vmas are compatible too), need_rmap_locks when the merged VMA's vm_pgoff is not above the source's (rmap
 * may meet it before the source); else a copy of src (anon_vma_clone: the same anon_vma) linked at addr, and
 * need_rmap_locks false: the new VMA comes after the old one in rmap order. An anonymous VMA not yet faulted
 * takes addr's pgoff, to merge more. src is a copy: the merge may absorb the source VMA itself. */
static struct vma copy_vma_new(const struct engine *e, const struct vma *src, uint64_t addr, uint64_t len,
				uint64_t pgoff)
{
	struct vma nv = *src;
	if (!src->shm && !(src->flags & VMA_HUGETLB) && !src->anon)
		pgoff = addr / e->geom.page_size;
	nv.start = addr;
	nv.end = addr + len;
	nv.pgoff = pgoff;
	return nv;
}

/* vma_merge's choice for copy_vma's range nv (from src) between prev and next (NULL: none adjacent); returns what
 * need_rmap_locks becomes */
static bool copy_vma_plan(const struct engine *e, const struct vma *src, const struct vma *nv, const struct vma *prev,
		   const struct vma *next, bool *mp_out, bool *mn_out)
{
	bool mp = prev && is_mergeable_vma(prev, nv->flags, nv->file) &&
		  is_mergeable_anon_vma(e, nv->anon, src, prev, prev->anon) && pgoff_continues(e, prev, nv->start, nv->pgoff);
	bool mn = next && is_mergeable_vma(next, nv->flags, nv->file) &&
		  is_mergeable_anon_vma(e, nv->anon, src, next, next->anon) && pgoff_continues(e, nv, nv->end, next->pgoff);
	if (mp && mn && !is_mergeable_anon_vma(e, prev->anon, prev, NULL, next->anon))
		mn = false; /* vma_merge: prev and next must agree too, else prev alone */
	*mp_out = mp;
	*mn_out = mn;
	return mp ? prev->pgoff <= src->pgoff : mn ? nv->pgoff <= src->pgoff : false;
}

/* need_rmap_locks as copy_vma will say it once [addr, addr + len) is unmapped (mremap_to's do_munmap first): the
 * VMAs around it then are the pieces left of those that reach into it or touch it. */
bool copy_vma_need_rmap_locks(struct engine *e, int mm, const struct vma *src, uint64_t addr, uint64_t len,
			      uint64_t pgoff)
{
	struct mm *m = &e->mms[mm];
	struct vma nv = copy_vma_new(e, src, addr, len, pgoff), p, n;
	const struct vma *pv = addr ? vma_find(m, addr - 1) : NULL, *nx = vma_find(m, nv.end);
	if (pv) {
		p = *pv;
		p.end = addr;
	}
	if (nx) {
		n = *nx;
		n.pgoff = vma_pgoff_at(e, nx, nv.end);
		n.start = nv.end;
	}
	bool mp, mn;
	return copy_vma_plan(e, src, &nv, pv ? &p : NULL, nx ? &n : NULL, &mp, &mn);
}

int copy_vma(struct engine *e, int mm, const struct vma *src, uint64_t addr, uint64_t len, uint64_t pgoff,
	     bool *need_rmap_locks)
{
	struct mm *m = &e->mms[mm];
	struct vma nv = copy_vma_new(e, src, addr, len, pgoff);
	pgoff = nv.pgoff;
	int pos = vma_index_after(m, addr);
	if (pos < m->nvma && m->vmas[pos].start < nv.end)
		return -ENOMEM; /* "should never get here": the range was unmapped */
	struct vma *prev = pos > 0 && m->vmas[pos - 1].end == addr ? &m->vmas[pos - 1] : NULL;
	struct vma *next = pos < m->nvma && m->vmas[pos].start == nv.end ? &m->vmas[pos] : NULL;
	bool mp, mn;
	*need_rmap_locks = copy_vma_plan(e, src, &nv, prev, next, &mp, &mn);
	if (mp) {
		prev->end = mn ? next->end : nv.end;
		dup_anon_vma(prev, &nv);
		if (mn) {
			dup_anon_vma(prev, next);
			vma_remove_at(m, pos);
		}
		return 0;
	}
	if (mn) {
		next->start = addr;
		next->pgoff = pgoff;
		dup_anon_vma(next, &nv);
		return 0;
	}
	return vma_insert_at(m, pos, nv);
}

/* ---- the unshare hold (issue 20): a munmap stopped between its hugetlb unshare and its free_pgtables ----
 * unshare_hold arms a cpu; the next munmap whose unmap_vmas unshared a hugetlb PMD table (every VMA in its range a
 * shared hugetlb one, whose pages the page cache keeps: the model frees other pages at the zap, the kernel only
 * after tlb_finish_mmu's flush) stops there, holding mmap_lock for read (munmap downgraded it) and nothing of the
 * hugetlb vma_lock and i_mmap_rwsem, which __unmap_hugepage_range_final dropped (A_UNSHARE, ptf.h). Whatever needs
 * that mm's mmap_lock for write waits (-16); everything else runs, the other sharers' munmap and exit too.
 * unshare_end runs the rest: free_pgtables over the range, then tlb_finish_mmu's flush of it. */
int unshare_hold(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_NONE)
		return -EBUSY;
	c->actor = A_UNSHARE;
	c->walk_done = false;
	c->mm = 0;
	c->addr = c->hva = c->gpa = c->size = 0;
	c->seq = 0;
	return 0;
}

/* unmap_vmas' part for the shared hugetlb VMAs of [start, end) (do_vmi_align_munmap, before the VMAs leave the
 * list); then, for a munmap (downgrade: munmap(2), not mmap_region's) that unshared and unmaps nothing else, the
 * stop on an armed cpu. true: stopped, the caller does no more (unshare_end frees and flushes). */
bool unmap_hugepage_range_vmas(struct engine *e, int mm, uint64_t start, uint64_t end, bool downgrade)
{
	struct mm *m = &e->mms[mm];
	bool unshared = false, only_shared = true;
	for (int i = vma_index_after(m, start); i < m->nvma && m->vmas[i].start < end && !e->viol; i++) {
		unshared |= unmap_hugepage_vma(e, mm, &m->vmas[i], start, end);
		only_shared &= hugetlb_shared(&m->vmas[i]);
	}
	if (!unshared || !only_shared || !downgrade || e->viol)
		return false;
	int cpu = -1;
	for (int i = 0; i < MAX_CPUS && cpu < 0; i++)
		if (e->cpus[i].actor == A_UNSHARE && !e->cpus[i].walk_done)
			cpu = i;
	if (cpu < 0)
		return false;
	struct cpu *c = &e->cpus[cpu];
	c->walk_done = true;
	c->mm = mm;
	c->addr = start;
	c->hva = end;
	c->seq = e->op_index;
	mmgrab(e, mm); /* the stopped thread's own mm, kept until unshare_end */
	e->locks_grew = true;
	return true;
}

int unshare_end(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_UNSHARE)
		return -EINVAL;
	if (c->walk_done) {
		int mm = c->mm;
		tlb_gather_mmu(e, mm, c->addr, c->hva);    /* unmap_region's, open since before unmap_vmas */
		unmap_range(e, mm, c->addr, c->hva, true); /* free_pgtables: the leaves went in unmap_vmas */
		tlb_finish_mmu(e);
		mmdrop(e, mm);
	}
	c->actor = A_NONE;
	c->walk_done = false;
	c->mm = 0;
	c->addr = c->hva = c->gpa = c->size = 0;
	c->seq = 0;
	e->locks_grew = true;
	return 0;
}
