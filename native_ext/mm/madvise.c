/* mm/madvise.c: do_madvise over VMAs: DONTNEED, HUGEPAGE, NOHUGEPAGE, COLLAPSE (khugepaged.c). */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

/* madvise_update_vma -> vma_modify_flags -> vma_merge, else split_vma at start and end. *prev_end: the end
 * of the VMA that now covers [start, end) (madvise_walk_vmas goes on from there). */
static int madvise_update_vma(struct engine *e, int mm, int i, uint64_t start, uint64_t end, uint32_t newflags,
			      uint64_t *prev_end)
{
	struct mm *m = &e->mms[mm];
	struct vma cur = m->vmas[i];
	*prev_end = cur.end;
	if (cur.flags == newflags)
		return 0; /* nothing changes: nothing is split */
	if (cur.flags & VMA_HUGETLB) {
		uint64_t hs = hugetlb_size(e, &cur);
		if ((start > cur.start && (start & (hs - 1))) || (end < cur.end && (end & (hs - 1))))
			return -EINVAL;
	}
	struct vma *prev = i > 0 && m->vmas[i - 1].end == cur.start ? &m->vmas[i - 1] : NULL;
	struct vma *next = i + 1 < m->nvma && m->vmas[i + 1].start == cur.end ? &m->vmas[i + 1] : NULL;
	bool mp = start == cur.start && prev && is_mergeable_vma(prev, newflags, cur.file) &&
		  is_mergeable_anon_vma(e, cur.anon, &cur, prev, prev->anon) &&
		  pgoff_continues(e, prev, prev->end, cur.pgoff);
	bool mn = end == cur.end && next && is_mergeable_vma(next, newflags, cur.file) &&
		  is_mergeable_anon_vma(e, cur.anon, &cur, next, next->anon) &&
		  pgoff_continues(e, &cur, end, next->pgoff);
	/* vma_merge and __split_vma take the rmap locks for write (vma_prepare); a flags change of the whole VMA
	 * with no merge takes none */
	int ret = mp || mn || start > cur.start || end < cur.end ? vma_rmap_wait(e, &cur) : 0;
	if (!ret && mp)
		ret = vma_rmap_wait(e, prev);
	if (!ret && mn)
		ret = vma_rmap_wait(e, next);
	if (ret)
		return ret;
	/* vma_adjust_trans_huge: a THP across a new boundary is split */
	if (start > cur.start)
		ret = split_huge_pmd_if_needed(e, mm, &cur, start);
	if (!ret && end < cur.end)
		ret = split_huge_pmd_if_needed(e, mm, &cur, end);
	if (ret || e->viol)
		return ret;
	if (mp && mn && is_mergeable_anon_vma(e, prev->anon, prev, NULL, next->anon)) {
		prev->end = next->end;
		dup_anon_vma(prev, next);
		dup_anon_vma(prev, &cur);
		*prev_end = prev->end;
		vma_remove_at(m, i + 1);
		vma_remove_at(m, i);
		return 0;
	}
	if (mp) {
		prev->end = end;
		dup_anon_vma(prev, &cur);
		if (end == cur.end) {
			vma_remove_at(m, i);
		} else {
			m->vmas[i].pgoff = vma_pgoff_at(e, &cur, end);
			m->vmas[i].start = end;
		}
		*prev_end = end;
		return 0;
	}
	if (mn) {
		next->start = start;
		next->pgoff = vma_pgoff_at(e, &cur, start);
		dup_anon_vma(next, &cur);
		*prev_end = next->end;
		if (start == cur.start)
			vma_remove_at(m, i);
		else
			m->vmas[i].end = start;
		return 0;
	}
	if (start > cur.start && (ret = vma_split_at(e, mm, start)))
		return ret;
	if (end < cur.end && (ret = vma_split_at(e, mm, end)))
		return ret;
	struct vma *v = vma_find(m, start);
	v->flags = newflags;
	*prev_end = v->end;
	return 0;
}

typedef int (*madvise_visit)(struct engine *e, int mm, int vi, uint64_t start, uint64_t end, uint64_t *prev_end);

/* madvise_dontneed_free: hugetlb needs an aligned start and rounds the end down
 * (madvise_dontneed_free_valid_vma), then madvise_dontneed_single_vma. */
static int madvise_dontneed(struct engine *e, int mm, int vi, uint64_t start, uint64_t end, uint64_t *prev_end)
{
	struct vma v = e->mms[mm].vmas[vi];
	*prev_end = v.end;
	if (v.flags & VMA_HUGETLB) {
		uint64_t hs = hugetlb_size(e, &v);
		if (start & (hs - 1))
			return -EINVAL;
		end &= ~(hs - 1);
		if (end <= start)
			return 0;
	}
	zap_page_range_single(e, mm, &v, start, end);
	return 0;
}

/* hugepage_madvise (s390: ignored in an mm with PGSTEs, unless THP stays allowed there), then
 * madvise_update_vma. */
static int madvise_hugepage(struct engine *e, int mm, int vi, uint64_t start, uint64_t end, uint64_t *prev_end,
			    bool huge)
{
	struct mm *m = &e->mms[mm];
	uint32_t flags = m->vmas[vi].flags;
	if (!huge)
		flags = (flags | VMA_NOHUGE) & ~VMA_THP;
	else if (!(m->has_pgste && e->knob[K_THP_IN_PGSTE] == 0))
		flags = (flags | VMA_THP) & ~VMA_NOHUGE;
	int ret = madvise_update_vma(e, mm, vi, start, end, flags, prev_end);
	return ret == -ENOMEM ? -EAGAIN : ret;
}

static int madvise_huge(struct engine *e, int mm, int vi, uint64_t start, uint64_t end, uint64_t *prev_end)
{
	return madvise_hugepage(e, mm, vi, start, end, prev_end, true);
}

static int madvise_nohuge(struct engine *e, int mm, int vi, uint64_t start, uint64_t end, uint64_t *prev_end)
{
	return madvise_hugepage(e, mm, vi, start, end, prev_end, false);
}

/* madvise_walk_vmas: the advice for each VMA's part of the range; a hole, or no VMA at or after the
 * address, is -ENOMEM once the mapped parts are done; a VMA's error ends the walk. */
static int madvise_walk_vmas(struct engine *e, int mm, uint64_t start, uint64_t end, madvise_visit visit)
{
	struct mm *m = &e->mms[mm];
	int unmapped_error = 0;
	int i = vma_index_after(m, start);
	for (;;) {
		if (i >= m->nvma)
			return -ENOMEM;
		struct vma *v = &m->vmas[i];
		if (start < v->start) {
			unmapped_error = -ENOMEM;
			start = v->start;
			if (start >= end)
				break;
		}
		uint64_t tmp = v->end < end ? v->end : end;
		uint64_t prev_end = v->end;
		int err = visit(e, mm, i, start, tmp, &prev_end);
		if (err || e->viol)
			return err;
		start = tmp > prev_end ? tmp : prev_end;
		if (start >= end)
			break;
		i = vma_index_after(m, prev_end);
	}
	return unmapped_error;
}

/* do_madvise: start must be page aligned, len is rounded up (a len_in that rounds to 0 is -EINVAL), an end
 * that wraps is -EINVAL, len 0 is 0; no TASK_SIZE check (past it there is no VMA: -ENOMEM). */
int do_madvise(struct engine *e, int mm, uint64_t start, uint64_t len_in, uint64_t advice)
{
	uint64_t page = e->geom.page_size;
	if (start & (page - 1))
		return -EINVAL;
	uint64_t len = (len_in + page - 1) & ~(page - 1);
	if (len_in && !len)
		return -EINVAL;
	uint64_t end = start + len;
	if (end < start)
		return -EINVAL;
	if (end == start)
		return 0;
	/* madvise_need_mmap_write: DONTNEED and COLLAPSE take mmap_lock for read, HUGEPAGE and NOHUGEPAGE for write */
	int ret = lock_acquire(e, LC_MMAP, (uint64_t)mm, (advice & 3) == 1 || (advice & 3) == 2 ? LM_WRITE : LM_READ);
	if (ret)
		return ret;
	static const madvise_visit visits[4] = { madvise_dontneed, madvise_huge, madvise_nohuge, madvise_collapse };
	return madvise_walk_vmas(e, mm, start, end, visits[advice & 3]);
}

/* MADV_HUGEPAGE over [start, end) with no checks of its own: the mmap operation's bit0 (the crosscheck helper
 * calls madvise right after mmap, on the range it just mapped) */
int madvise_hugepage_range(struct engine *e, int mm, uint64_t start, uint64_t end)
{
	return madvise_walk_vmas(e, mm, start, end, madvise_huge);
}
