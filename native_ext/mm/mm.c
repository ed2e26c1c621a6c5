/* mm.c: processes, mms, VMAs and the host mm paths (mmap, munmap, madvise, fault, split, exec, fork, exit).
 * Functions are named after the v6.6 kernel functions they model (docs/model-notes.md has the table). */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"

#define STACK_BYTES (128ull << 10)

enum { FALLBACK = 1 }; /* VM_FAULT_FALLBACK: the huge path gave up, the PTE path goes on */

static uint64_t page_frames(const struct engine *e) { return e->geom.page_size >> 12; }
static uint64_t pmd_size(const struct engine *e) { return level_size(&e->geom, e->pmd_lvl); }
static int pte_level(const struct engine *e) { return e->geom.nlevels - 1; }

/* ZERO_PAGE(vaddr): s390 colours its zero page by the address bits below 512K (zero_page_mask). */
static uint64_t my_zero_pfn(const struct engine *e, uint64_t addr)
{
	return e->arch == ARCH_S390 ? ZERO_PFN + ((addr >> 12) & 127) : ZERO_PFN;
}

/* mm_forbids_zeropage: s390 (v6.6) maps no zero page into an mm with PGSTEs in use (mm_has_pgste). */
static bool mm_forbids_zeropage(const struct engine *e, const struct mm *m)
{
	return e->arch == ARCH_S390 && m->has_pgste;
}

/* ---- mm lifetime ---- */

/* mm_alloc + pgd_alloc: top is the level of the top table (-1: what exec gets; s390 3 levels). */
int mm_new(struct engine *e, bool alloc_pgste, int top, int *out)
{
	int id;
	for (id = 0; id < MAX_MMS && e->mms[id].used; id++)
		;
	if (id == MAX_MMS)
		return -ENOMEM;
	struct mm *m = &e->mms[id];
	memset(m, 0, sizeof(*m));
	if (id >= e->mm_hwm)
		e->mm_hwm = id + 1;
	e->frag_dirty = true;
	m->frag_list = -1;
	m->alloc_pgste = alloc_pgste;
	m->pgt.mm = (int16_t)id;
	m->pgt.top = top >= 0 ? top : e->arch == ARCH_S390 ? 2 : 0;
	while (e->geom.lv[m->pgt.top].folded)
		m->pgt.top++;
	const struct level_geom *tl = &e->geom.lv[m->pgt.top];
	int ret = table_alloc(e, id, m->pgt.top, (int)((tl->table_bytes + 4095) / 4096), &m->pgt.root);
	if (ret)
		return ret;
	table_set_linked(e, m->pgt.root, true);
	emit(e, EV_TABLE_ALLOC, m->pgt.top, tref_phys(m->pgt.root), id, 0);
	if (e->arch == ARCH_S390) /* init_new_context: the asce_limit of the top level */
		m->asce_limit = m->pgt.top == 2 ? 1ull << 42 : m->pgt.top == 1 ? 1ull << 53 : e->task_size;
	else
		m->asce_limit = e->task_size;
	m->used = true;
	m->users = 1;
	*out = id;
	return 0;
}

void mm_get(struct engine *e, int mm) { e->mms[mm].count++; }

/* mmdrop: the pgd goes when nothing points at the mm any more. */
void mm_drop(struct engine *e, int mm)
{
	struct mm *m = &e->mms[mm];
	if (m->count > 0)
		m->count--;
	if (m->users > 0 || m->count > 0 || !m->used)
		return;
	if (m->pgt.root.blk >= 0) {
		table_free(e, m->pgt.root, TABLE_FREE_NOW, m->pgt.top, mm);
		m->pgt.root = TREF_NONE;
	}
	free(m->vmas);
	m->vmas = NULL;
	m->nvma = 0;
	m->used = false;
}

static void exit_mmap(struct engine *e, int mm)
{
	struct mm *m = &e->mms[mm];
	kvm_release(e, mm);
	/* unmap_vmas + free_pgtables, VMA by VMA: only tables under some VMA exist */
	int n = m->nvma;
	m->nvma = 0;
	for (int i = 0; i < n && !e->viol; i++)
		unmap_range(e, mm, m->vmas[i].start, m->vmas[i].end, true);
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

void mm_put_users(struct engine *e, int mm)
{
	struct mm *m = &e->mms[mm];
	if (--m->users > 0)
		return;
	exit_mmap(e, mm);
	m->count++;
	mm_drop(e, mm);
}

/* ---- VMAs ---- */

/* The first VMA ending above addr (nvma if none): find_vma. */
static int vma_index_after(struct mm *m, uint64_t addr)
{
	int lo = 0, hi = m->nvma;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (m->vmas[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct vma *vma_find(struct mm *m, uint64_t addr)
{
	int i = vma_index_after(m, addr);
	return i < m->nvma && m->vmas[i].start <= addr ? &m->vmas[i] : NULL;
}

static bool vma_overlaps(struct mm *m, uint64_t start, uint64_t end)
{
	int i = vma_index_after(m, start);
	return i < m->nvma && m->vmas[i].start < end;
}

static int vma_insert_at(struct mm *m, int pos, struct vma v)
{
	if (m->nvma >= MAX_VMAS)
		return -ENOMEM;
	struct vma *p = realloc(m->vmas, (size_t)(m->nvma + 1) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	m->vmas = p;
	memmove(&p[pos + 1], &p[pos], (size_t)(m->nvma - pos) * sizeof(*p));
	p[pos] = v;
	m->nvma++;
	return 0;
}

static void vma_remove_at(struct mm *m, int pos)
{
	memmove(&m->vmas[pos], &m->vmas[pos + 1], (size_t)(m->nvma - pos - 1) * sizeof(struct vma));
	m->nvma--;
}

static uint64_t hugetlb_size(const struct engine *e, const struct vma *v)
{
	int lvl = (v->flags & VMA_HUGETLB_PMD) ? e->pmd_lvl : pud_level(&e->geom);
	return level_size(&e->geom, lvl);
}

/* is_mergeable_anon_vma: may the range (src_anon, from VMA src, NULL for a new range) merge into VMA tgt?
 * v6.6 tests list_is_singular() on tgt's anon_vma_chain, which is empty when tgt was never faulted, so a
 * range with an anon_vma does not merge into such a VMA; 6.16+ (mm.merge_unfaulted=yes) tests the chain of
 * the VMA whose anon_vma the merged one keeps (vma_had_uncowed_parents). tgt NULL: the prev/next check. */
static bool uncowed_parents(const struct vma *v) { return v && v->anon && v->cloned; }

static bool is_mergeable_anon_vma(const struct engine *e, uint32_t src_anon, const struct vma *src,
				  const struct vma *tgt, uint32_t tgt_anon)
{
	if (tgt && e->knob[K_MERGE_UNFAULTED] == 1) {
		if (!tgt_anon && src_anon)
			return !uncowed_parents(src);
		if (tgt_anon && !src_anon)
			return !uncowed_parents(tgt);
		return src_anon == tgt_anon;
	}
	bool singular = tgt && tgt->anon && !tgt->cloned;
	if ((!src_anon || !tgt_anon) && (!tgt || singular))
		return true;
	return src_anon == tgt_anon;
}

/* is_mergeable_vma: equal flags and file; a VMA that would be removed must not have vm_ops->close (hugetlb) */
static bool is_mergeable_vma(const struct vma *v, uint32_t flags, uint32_t file, bool may_remove)
{
	return v->flags == flags && v->file == file && !(may_remove && (v->flags & VMA_HUGETLB));
}

/* linear_page_index: the file page offset that addr maps in v (vm_pgoff counts pages of the arch's size). */
uint64_t vma_pgoff_at(const struct engine *e, const struct vma *v, uint64_t addr)
{
	return v->pgoff + (addr - v->start) / e->geom.page_size;
}

/* can_vma_merge_after / can_vma_merge_before: a file VMA merges only where the file offsets continue
 * (prev->vm_pgoff + vma_pages(prev) == pgoff; next->vm_pgoff == pgoff + pglen): lo's offsets, run on to
 * boundary, must reach hi_pgoff there. Anonymous VMAs always continue (vm_pgoff = addr >> PAGE_SHIFT and
 * no mremap here), so only shmem VMAs are checked (is_mergeable_vma has already matched the files). */
static bool pgoff_continues(const struct engine *e, const struct vma *lo, uint64_t boundary, uint64_t hi_pgoff)
{
	return !lo->shm || vma_pgoff_at(e, lo, boundary) == hi_pgoff;
}

/* dup_anon_vma: the expanding VMA takes the anon_vma of the one it absorbs. */
static void dup_anon_vma(struct vma *dst, const struct vma *src)
{
	if (src->anon && !dst->anon) {
		dst->anon = src->anon;
		dst->anon_root = src->anon_root;
		dst->cloned = src->cloned;
	}
}

/* find_mergeable_anon_vma -> reusable_anon_vma: a compatible neighbour's (next first) anon_vma whose chain is
 * singular, or NULL. */
static const struct vma *find_mergeable_anon_vma(struct mm *m, const struct vma *v)
{
	int i = (int)(v - m->vmas);
	const struct vma *n = i + 1 < m->nvma ? &m->vmas[i + 1] : NULL;
	const struct vma *p = i > 0 ? &m->vmas[i - 1] : NULL;
	if (n && n->start == v->end && n->flags == v->flags && n->file == v->file && n->anon && !n->cloned)
		return n;
	if (p && p->end == v->start && p->flags == v->flags && p->file == v->file && p->anon && !p->cloned)
		return p;
	return NULL;
}

/* anon_vma_prepare: reuse a compatible neighbour's anon_vma, else a new one (its own root). Taking the reused
 * anon_vma's lock for write waits for an rmap walker that holds its root for read: -EBUSY, nothing changed. */
static int anon_vma_prepare(struct engine *e, struct mm *m, struct vma *v)
{
	if (v->anon)
		return 0;
	const struct vma *r = find_mergeable_anon_vma(m, v);
	int ret = r ? rmap_lock_wait(e, RL_ANON, r->anon_root) : 0;
	if (ret)
		return ret;
	if (r) {
		v->anon = r->anon;
		v->anon_root = r->anon_root;
	} else {
		v->anon = v->anon_root = ++e->next_anon;
	}
	v->cloned = 0;
	return 0;
}

static int split_huge_pmd_if_needed(struct engine *e, int mm, const struct vma *v, uint64_t addr);

/* __split_vma: hugetlb VMAs split only at huge-page boundaries (hugetlb_vm_op_split); a THP across the
 * new boundary is split first (vma_adjust_trans_huge). */
static int vma_split_at(struct engine *e, int mm, uint64_t addr)
{
	struct mm *m = &e->mms[mm];
	struct vma *v = vma_find(m, addr);
	if (!v || v->start == addr)
		return 0;
	if ((v->flags & VMA_HUGETLB) && (addr & (hugetlb_size(e, v) - 1)))
		return -EINVAL;
	if (m->nvma >= MAX_VMAS)
		return -ENOMEM;
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
	bool mn = next && is_mergeable_vma(next, nv->flags, nv->file, true) &&
		  is_mergeable_anon_vma(e, 0, NULL, next, next->anon) && pgoff_continues(e, nv, nv->end, next->pgoff);
	bool mp;
	if (e->knob[K_MERGE_UNFAULTED] == 1) /* vma_merge_new_range: both sides, then prev against next */
		mp = prev && is_mergeable_vma(prev, nv->flags, nv->file, false) &&
		     is_mergeable_anon_vma(e, 0, NULL, prev, prev->anon) &&
		     (!mn || is_mergeable_anon_vma(e, prev->anon, prev, NULL, next->anon));
	else /* mmap_region: prev is checked against the anon_vma of the next it would absorb */
		mp = prev && is_mergeable_vma(prev, nv->flags, nv->file, false) &&
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
	bool mp = start == cur.start && prev && is_mergeable_vma(prev, newflags, cur.file, false) &&
		  is_mergeable_anon_vma(e, cur.anon, &cur, prev, prev->anon) &&
		  pgoff_continues(e, prev, prev->end, cur.pgoff);
	bool mn = end == cur.end && next && is_mergeable_vma(next, newflags, cur.file, true) &&
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

/* ---- table freeing ---- */

void crst_free(struct engine *e, int mm, struct tref t)
{
	bool rcu = e->knob[K_TABLE_FREE] == TF_RCU && mm >= 0;
	table_free(e, t, rcu ? TABLE_FREE_RCU : TABLE_FREE_NOW, e->blocks[t.blk].level[0], mm);
}

/* The PTE-table frees generic mm code makes; what each does is the arch's (struct mm_ops). */
/* pte_free_tlb: an unlinked PTE table that walkers may still see (free_pte_range, reclaim, retract) */
void pte_free_tlb(struct engine *e, int mm, struct tref t, uint64_t vmaddr)
{
	e->mm_ops->pte_free_tlb(e, mm, t, vmaddr);
}

/* pte_free_defer (mm/pgtable-generic.c): a table a lockless walker may still use goes after a grace period */
void pte_free_defer(struct engine *e, int mm, struct tref t, uint64_t vmaddr)
{
	e->mm_ops->pte_free_defer(e, mm, t, vmaddr);
}

/* pte_free: a table no walker can reach (a deposit, or one never linked) goes back at once, no RCU. */
void pte_free(struct engine *e, int mm, struct tref t)
{
	e->mm_ops->pte_free(e, mm, t);
}

/* Unlink the table an entry points at and free it through the table-free path. */
static void free_child_table(struct engine *e, struct walk_ctx *ctx)
{
	const struct entry_fmt *f = ctx->g->fmt;
	int mm = ctx->pgt->mm;
	struct tref child = tref_from_phys(e, f->addr(ctx->level, ctx->old));
	entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->empty(ctx->level));
	table_set_linked(e, child, false);
	if (child_level(ctx->g, ctx->level) == ctx->g->nlevels - 1)
		pte_free_tlb(e, mm, child, ctx->addr);
	else
		crst_free(e, mm, child);
}

/* ---- lookups and table allocation ---- */

struct lookup_arg { int stop; int level; uint64_t entry; struct tref tbl; uint32_t idx; uint64_t addr; };

static int lookup_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct lookup_arg *a = ctx->arg;
	(void)visit;
	if (ctx->level > a->stop)
		return 1;
	a->level = ctx->level;
	a->entry = ctx->old;
	a->tbl = ctx->tbl;
	a->idx = ctx->idx;
	a->addr = ctx->addr;
	return 0;
}

/* The deepest entry mapping addr: its kind, level and location; pfn of the 4K page for a leaf. */
int host_lookup(struct engine *e, int mm, uint64_t addr, int *level, uint64_t *pfn,
		struct tref *tbl, uint32_t *idx)
{
	struct lookup_arg a = { e->geom.nlevels - 1, -1, 0, TREF_NONE, 0, 0 };
	struct walker w = { lookup_visit, &a, WALK_LEAF | WALK_TABLE_PRE, 0 };
	pt_walk(e, &e->mms[mm].pgt, &e->geom, addr, addr + 1, &w);
	if (a.level < 0)
		return E_EMPTY;
	if (level)
		*level = a.level;
	if (tbl)
		*tbl = a.tbl;
	if (idx)
		*idx = a.idx;
	enum entry_kind k = e->geom.fmt->kind(a.level, a.entry);
	if (k == E_LEAF && pfn)
		*pfn = (e->geom.fmt->addr(a.level, a.entry) >> 12) + ((addr - a.addr) >> 12);
	return k;
}

/* The entry at a given level on the way to addr (empty when the walk stops above it). */
uint64_t host_entry_at(struct engine *e, int mm, uint64_t addr, int level, struct tref *tbl, uint32_t *idx)
{
	struct lookup_arg a = { level, -1, 0, TREF_NONE, 0, 0 };
	struct walker w = { lookup_visit, &a, WALK_LEAF | WALK_TABLE_PRE, 0 };
	pt_walk(e, &e->mms[mm].pgt, &e->geom, addr, addr + 1, &w);
	if (a.level != level)
		return e->geom.fmt->empty(level);
	if (tbl)
		*tbl = a.tbl;
	if (idx)
		*idx = a.idx;
	return a.entry;
}

int alloc_table_for(struct engine *e, int mm, int level, struct tref *out)
{
	if (level == e->geom.nlevels - 1 && e->mm_ops->pte_alloc_one)
		return e->mm_ops->pte_alloc_one(e, mm, out); /* s390: page_table_alloc */
	const struct level_geom *lv = &e->geom.lv[level];
	int ret = table_alloc(e, mm, level, (int)((lv->table_bytes + 4095) / 4096), out);
	if (!ret)
		emit(e, EV_TABLE_ALLOC, level, tref_phys(*out), mm, 0);
	return ret;
}

struct slot_arg { int mm; int target; struct tref tbl; uint32_t idx; int level; int ret; };

/* p4d_alloc / pud_alloc / pmd_alloc / pte_alloc: tables down to the target level, then stop at the entry
 * for the address (or at a leaf above it). */
static int slot_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct slot_arg *a = ctx->arg;
	struct engine *e = ctx->e;
	const struct entry_fmt *f = ctx->g->fmt;
	(void)visit;
	enum entry_kind k = f->kind(ctx->level, ctx->old);
	if (ctx->level >= a->target || k == E_LEAF) {
		a->tbl = ctx->tbl;
		a->idx = ctx->idx;
		a->level = ctx->level;
		return 1;
	}
	if (k == E_TABLE)
		return 0;
	struct tref t;
	int lvl = child_level(ctx->g, ctx->level);
	a->ret = alloc_table_for(e, a->mm, lvl, &t);
	if (a->ret)
		return 1;
	entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->table(ctx->level, tref_phys(t)));
	table_set_linked(e, t, true);
	return 0;
}

/* The slot of the entry at level target for addr, allocating the tables above it. */
int pt_slot(struct engine *e, int mm, uint64_t addr, int target, struct tref *tbl, uint32_t *idx, int *level)
{
	struct slot_arg a = { mm, target, TREF_NONE, 0, -1, 0 };
	struct walker w = { slot_visit, &a, WALK_LEAF | WALK_TABLE_PRE, 0 };
	pt_walk(e, &e->mms[mm].pgt, &e->geom, addr, addr + 1, &w);
	if (a.ret)
		return a.ret;
	if (a.level < 0) {
		violate(e, V_ENGINE_ASSERT, "no page-table slot for va 0x%llx in mm %d", (unsigned long long)addr, mm);
		return -EFAULT;
	}
	*tbl = a.tbl;
	*idx = a.idx;
	*level = a.level;
	return 0;
}

/* A PMD leaf that owns a deposited table: an anonymous THP or the huge zero page (not hugetlb, not a shmem folio:
 * do_set_pmd deposits nothing). */
static bool pmd_has_deposit(struct engine *e, uint64_t pmdval)
{
	uint64_t pfn = e->geom.fmt->addr(e->pmd_lvl, pmdval) >> 12;
	if (pfn == HUGE_ZERO_PFN)
		return true;
	struct compound *c = data_lookup(e, pfn);
	return c && !c->hugetlb && !c->shm;
}

/* A PMD leaf of a shmem folio (a file THP). */
static bool pmd_is_file(struct engine *e, uint64_t pmdval)
{
	struct compound *c = data_lookup(e, e->geom.fmt->addr(e->pmd_lvl, pmdval) >> 12);
	return c && c->shm;
}

/* zap_deposited_table: withdraw the PMD's deposit and pte_free it. */
static void zap_deposited_table(struct engine *e, int mm, struct tref pmd_tbl)
{
	struct tref t = pgtable_trans_huge_withdraw(e, pmd_tbl);
	if (t.blk >= 0)
		pte_free(e, mm, t);
}

/* ---- zapping leaves and freeing tables over a range ---- */

struct unmap_arg { uint64_t start, end; bool free_tables; struct mm *m; int mm; };
static int __split_huge_pmd(struct engine *e, int mm, uint64_t addr);

/* unmap_page_range (zap_pte_range, zap_huge_pmd) and free_pgtables over one range. */
static int unmap_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct unmap_arg *a = ctx->arg;
	struct engine *e = ctx->e;
	const struct entry_fmt *f = ctx->g->fmt;
	uint64_t size = level_size(ctx->g, ctx->level);

	if (visit == WALK_LEAF) {
		if (f->kind(ctx->level, ctx->old) != E_LEAF)
			return 0;
		/* zap_pmd_range: a THP the range covers partly is split and the walk descends into it; a
		 * hugetlb leaf stays whole (hugetlb ranges are aligned up front) */
		if (ctx->addr < a->start || ctx->addr + size > a->end) {
			if (ctx->level == e->pmd_lvl && (pmd_has_deposit(e, ctx->old) || pmd_is_file(e, ctx->old)))
				__split_huge_pmd(e, a->mm, ctx->addr); /* a file PMD is zapped whole */
			return e->viol ? -EFAULT : 0;
		}
		uint64_t pfn = f->addr(ctx->level, ctx->old) >> 12;
		bool deposit = ctx->level == e->pmd_lvl && pmd_has_deposit(e, ctx->old);
		entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->empty(ctx->level));
		emit(e, EV_LEAF_ZAP, ctx->level, ctx->addr, pfn, a->mm);
		if (deposit)
			zap_deposited_table(e, a->mm, ctx->tbl);
		data_put(e, pfn);
		return e->viol ? -EFAULT : 0;
	}
	/* TABLE_POST: the table no longer covers any VMA */
	if (!a->free_tables)
		return 0;
	uint64_t cov_end = ctx->addr + size;
	if (cov_end < ctx->addr)
		cov_end = ~0ull;
	if (vma_overlaps(a->m, ctx->addr, cov_end))
		return 0;
	/* parts of the table this walk did not cover may still map something (exit goes VMA by VMA) */
	struct tref child = tref_from_phys(e, ctx->g->fmt->addr(ctx->level, ctx->old));
	if (e->blocks[child.blk].nonempty[child.half])
		return 0;
	free_child_table(e, ctx);
	return e->viol ? -EFAULT : 0;
}

int unmap_range(struct engine *e, int mm, uint64_t start, uint64_t end, bool free_tables)
{
	struct mm *m = &e->mms[mm];
	struct unmap_arg a = { start, end, free_tables, m, mm };
	struct walker w = { unmap_visit, &a, WALK_LEAF | WALK_TABLE_POST | WALK_SKIP_EMPTY, 0 };
	return pt_walk(e, &m->pgt, &e->geom, start, end, &w);
}

/* mm/pt_reclaim.c (6.14+): zap_pte_range frees a PTE table whose whole PMD range it zapped (it is empty
 * then): pmd cleared, free_pte -> pte_free_tlb, the RCU table-free path. */
static void reclaim_pt(struct engine *e, int mm, uint64_t start, uint64_t end)
{
	const struct geom *g = &e->geom;
	int ml = e->pmd_lvl;
	uint64_t pmd = pmd_size(e);
	for (uint64_t b = (start + pmd - 1) & ~(pmd - 1); b >= start && b + pmd <= end && b + pmd > b && !e->viol;
	     b += pmd) {
		struct tref tbl;
		uint32_t idx;
		uint64_t ent = host_entry_at(e, mm, b, ml, &tbl, &idx);
		if (g->fmt->kind(ml, ent) != E_TABLE)
			continue;
		struct tref pte = tref_from_phys(e, g->fmt->addr(ml, ent));
		if (e->blocks[pte.blk].nonempty[pte.half])
			continue;
		entry_write(e, tbl, ml, idx, g->fmt->empty(ml));
		table_set_linked(e, pte, false);
		pte_free_tlb(e, mm, pte, b);
	}
}

/* zap_page_range_single: the range's notifiers, its leaves zapped, the tables kept (or reclaimed). */
static void zap_page_range_single(struct engine *e, int mm, const struct vma *v, uint64_t start, uint64_t end)
{
	kvm_notify_range(e, mm, start, end);
	unmap_range(e, mm, start, end, false);
	if (e->knob[K_PT_RECLAIM] == 1 && !(v->flags & VMA_HUGETLB) && !e->viol)
		reclaim_pt(e, mm, start, end);
}

/* ---- THP split ---- */

/* __split_huge_pmd (+ __split_huge_pmd_locked, __split_huge_zero_page_pmd): notify the block, withdraw the
 * deposited table, fill it with PTEs for the same pages (zero-page PTEs for the huge zero page; the
 * compound stays a compound, the write bit is kept) and populate the PMD with it. -EINVAL: no THP there. */
static int __split_huge_pmd(struct engine *e, int mm, uint64_t addr)
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
		kvm_notify_range(e, mm, base, base + size);
		entry_write(e, tbl, ml, idx, g->fmt->empty(ml));
		emit(e, EV_LEAF_ZAP, ml, base, head, mm);
		data_put(e, head);
		return 0;
	}
	if (!pmd_has_deposit(e, old))
		return -EINVAL;
	uint64_t head = g->fmt->addr(ml, old) >> 12;
	bool zero = head == HUGE_ZERO_PFN, write = g->fmt->writable(ml, old);
	kvm_notify_range(e, mm, base, base + size);
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
	table_set_linked(e, t, true);
	emit(e, EV_LEAF_ZAP, ml, base, head, mm);
	emit(e, EV_LEAF_SET, pl, base, zero ? my_zero_pfn(e, base) : head, mm);
	return 0;
}

int split_huge_pmd(struct engine *e, int mm, uint64_t addr)
{
	return __split_huge_pmd(e, mm, addr);
}

/* split_huge_pmd_if_needed: an unaligned boundary inside a block the VMA covers splits a THP there. */
static int split_huge_pmd_if_needed(struct engine *e, int mm, const struct vma *v, uint64_t addr)
{
	uint64_t pmd = pmd_size(e), down = addr & ~(pmd - 1);
	if (!(addr & (pmd - 1)) || (v->flags & VMA_HUGETLB) || down < v->start || down + pmd > v->end)
		return 0;
	int ret = __split_huge_pmd(e, mm, addr);
	return ret == -EINVAL ? 0 : ret;
}

int do_split(struct engine *e, int mm, uint64_t addr)
{
	struct mm *m = &e->mms[mm];
	struct vma *v = vma_find(m, addr);
	if (!v || (v->flags & VMA_HUGETLB))
		return -EINVAL;
	return __split_huge_pmd(e, mm, addr);
}

/* ---- faults ---- */

static void set_out(const struct engine *e, uint64_t addr, uint64_t leaf_pfn, int level, uint64_t *pfn, uint64_t *size)
{
	uint64_t sz = level_size(&e->geom, level);
	*pfn = leaf_pfn + ((addr & (sz - 1)) >> 12);
	*size = sz;
}

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
	kvm_notify_range(e, mm, base, base + sz);
	entry_write(e, tbl, level, idx, g->fmt->leaf(level, head << 12, true));
	data_lookup(e, head)->mapcount = 1;
	emit(e, EV_LEAF_SET, level, base, head, mm);
	data_put(e, old); /* page_remove_rmap: the old page loses this mapping (not the zero page) */
	set_out(e, addr, head, level, pfn, size);
	return 0;
}

/* do_wp_page / hugetlb_wp: reuse a page nobody else maps (wp_can_reuse_anon_folio: refcount 1, here
 * the mapcount of the whole folio, and folio_trylock: a folio an rmap walker holds, with its reference, is
 * copied), else copy. */
static int do_wp_page(struct engine *e, int mm, struct vma *v, uint64_t addr, struct tref tbl, uint32_t idx,
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

/* do_anonymous_page: the zero page for a read (unless mm_forbids_zeropage), else a new page; a new page
 * needs the VMA's anon_vma. */
static int do_anonymous_page(struct engine *e, int mm, struct vma *v, uint64_t addr, bool write, struct tref tbl,
			     uint32_t idx, uint64_t *pfn, uint64_t *size)
{
	const struct geom *g = &e->geom;
	int pl = pte_level(e);
	struct mm *m = &e->mms[mm];
	if (!write && !mm_forbids_zeropage(e, m)) {
		uint64_t z = my_zero_pfn(e, addr);
		entry_write(e, tbl, pl, idx, g->fmt->leaf(pl, z << 12, false));
		emit(e, EV_LEAF_SET, pl, addr, z, mm);
		set_out(e, addr, z, pl, pfn, size);
		return 0;
	}
	int ret = anon_vma_prepare(e, m, v);
	if (ret)
		return ret;
	uint64_t head = data_alloc(e, page_frames(e));
	if (!head)
		return -ENOMEM;
	entry_write(e, tbl, pl, idx, g->fmt->leaf(pl, head << 12, true));
	data_lookup(e, head)->mapcount = 1;
	emit(e, EV_LEAF_SET, pl, addr, head, mm);
	set_out(e, addr, head, pl, pfn, size);
	return 0;
}

/* do_huge_pmd_anonymous_page: anon_vma_prepare, then the huge zero page for a read
 * (transparent_hugepage/use_zero_page=1) or a new THP, each with its deposited PTE table. */
static int do_huge_pmd_anonymous_page(struct engine *e, int mm, struct vma *v, uint64_t addr, bool write,
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
static int do_huge_pmd_wp_page(struct engine *e, int mm, uint64_t addr, struct tref tbl, uint32_t idx,
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
			kvm_notify_range(e, mm, base, base + sz);
			entry_write(e, tbl, ml, idx, g->fmt->leaf(ml, head << 12, true));
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

static bool thp_fault_allowed(struct engine *e, struct mm *m, const struct vma *v, uint64_t addr)
{
	uint64_t pmd = pmd_size(e), base = addr & ~(pmd - 1);
	/* hugepage_vma_check (sysfs "madvise": VM_HUGEPAGE needed), transhuge_vma_suitable; s390 marks the
	 * VMAs of an mm with PGSTEs VM_NOHUGEPAGE (thp_split_mm) */
	return (v->flags & VMA_THP) && !(v->flags & VMA_NOHUGE) && base >= v->start && base + pmd <= v->end &&
	       !(m->has_pgste && e->knob[K_THP_IN_PGSTE] == 0);
}

/* hugetlb_fault: hugetlb_no_page (a new page, read-only for a read of a private mapping) or hugetlb_wp. */
static int hugetlb_fault(struct engine *e, int mm, struct vma *v, uint64_t addr, bool write, uint64_t *pfn,
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

/* handle_mm_fault: returns 0 and the 4K frame mapped at addr (new or existing) and the leaf size. */
int do_fault(struct engine *e, int mm, uint64_t addr, bool write, uint64_t *pfn_out, uint64_t *size_out)
{
	struct mm *m = &e->mms[mm];
	const struct geom *g = &e->geom;
	addr &= ~(g->page_size - 1);
	struct vma *v = vma_find(m, addr);
	if (!v)
		return -EFAULT;
	if (v->flags & VMA_HUGETLB)
		return hugetlb_fault(e, mm, v, addr, write, pfn_out, size_out);
	if (v->shm)
		return do_shmem_fault(e, mm, v, addr, write, pfn_out, size_out);
	int ml = e->pmd_lvl, pl = pte_level(e), lvl;
	struct tref tbl;
	uint32_t idx;
	/* __handle_mm_fault: p4d_alloc, pud_alloc, pmd_alloc */
	int ret = pt_slot(e, mm, addr, ml, &tbl, &idx, &lvl);
	if (ret)
		return ret;
	uint64_t pmdval = entry_get(e, tbl, idx);
	enum entry_kind k = g->fmt->kind(lvl, pmdval);
	if (lvl == ml && k == E_EMPTY && thp_fault_allowed(e, m, v, addr)) {
		ret = do_huge_pmd_anonymous_page(e, mm, v, addr, write, tbl, idx, pfn_out, size_out);
		if (ret != FALLBACK)
			return ret;
	} else if (k == E_LEAF) {
		if (!write || g->fmt->writable(lvl, pmdval)) {
			set_out(e, addr, g->fmt->addr(lvl, pmdval) >> 12, lvl, pfn_out, size_out);
			return 0;
		}
		ret = do_huge_pmd_wp_page(e, mm, addr, tbl, idx, pfn_out, size_out);
		if (ret != FALLBACK)
			return ret;
	}
	/* handle_pte_fault */
	ret = pt_slot(e, mm, addr, pl, &tbl, &idx, &lvl);
	if (ret)
		return ret;
	uint64_t pte = entry_get(e, tbl, idx);
	if (g->fmt->kind(lvl, pte) == E_EMPTY)
		return do_anonymous_page(e, mm, v, addr, write, tbl, idx, pfn_out, size_out);
	if (write && !g->fmt->writable(lvl, pte))
		return do_wp_page(e, mm, v, addr, tbl, idx, lvl, pfn_out, size_out);
	set_out(e, addr, g->fmt->addr(lvl, pte) >> 12, lvl, pfn_out, size_out);
	return 0;
}

/* ---- MADV_COLLAPSE (mm/khugepaged.c) ---- */

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
	kvm_notify_range(e, mm, base, base + sz);
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
static int madvise_collapse(struct engine *e, int mm, int vi, uint64_t start, uint64_t end, uint64_t *prev_end)
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

/* ---- madvise ---- */

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
static int do_madvise(struct engine *e, int mm, uint64_t start, uint64_t len_in, uint64_t advice)
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

/* ---- mmap, munmap ---- */

static int proc_mm(struct engine *e, uint64_t pid)
{
	if (pid >= MAX_PIDS || !e->procs[pid].exists)
		return -ESRCH;
	return e->procs[pid].mm;
}

/* do_vmi_align_munmap: split the VMAs at the edges, remove them, then (munmap(2) only: mmap_write_downgrade,
 * always since e4bd84c069f2 "mm: Always downgrade mmap_lock if requested", v6.5) notify, zap and free the tables;
 * mmap_region's do_vmi_munmap never downgrades, so a MAP_FIXED mmap notifies under the write lock. */
static int detach_range(struct engine *e, int mm, uint64_t start, uint64_t end, bool downgrade)
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
	kvm_notify_range(e, mm, start, end);
	int w = 0;
	for (int i = 0; i < m->nvma; i++)
		if (!(m->vmas[i].start >= start && m->vmas[i].end <= end))
			m->vmas[w++] = m->vmas[i];
	m->nvma = w;
	unmap_range(e, mm, start, end, true);
	return 0;
}

/* ksys_mmap_pgoff (hugetlb: len rounded up to the huge page size), do_mmap, get_unmapped_area (MAP_FIXED;
 * hugetlb: prepare_hugepage_range; s390: check_asce_limit upgrades), mmap_region. obj >= 0: MAP_SHARED of
 * shmem object obj at page offset pgoff (do_mmap's offset overflow check, file_mmap_ok: -EOVERFLOW). */
static int do_mmap(struct engine *e, int mm, uint64_t addr, uint64_t len, uint64_t flags, int obj, uint64_t pgoff)
{
	struct mm *m = &e->mms[mm];
	uint64_t page = e->geom.page_size, task = e->task_size, hs = 0;
	int hlvl = -1;
	if (flags & 6) {
		/* MAP_HUGETLB with MAP_HUGE_SHIFT's size log: bit1 log2(PMD_SIZE), bit2 log2(PUD_SIZE), the config's
		 * (a folded level has its parent's shift, so lv[2] is PUD_SHIFT: PGDIR_SHIFT at 3 levels, PMD_SHIFT at 2),
		 * both bits the two logs ORed as mmap(2) gets them (docs/trace-ext.md). ksys_mmap_pgoff -> hstate_sizelog:
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
	struct vma v = { .start = addr, .end = addr + len };
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
	ret = detach_range(e, mm, addr, addr + len, false);
	if (ret || e->viol)
		return ret == -EBUSY ? ret : ret ? -ENOMEM : 0; /* mmap_region: a failed do_vmi_munmap is -ENOMEM */
	if (flags & 6)
		v.file = ++e->next_file; /* MAP_HUGETLB: a new hugetlbfs file (hugetlb_file_setup) */
	if (obj >= 0)
		shmem_obj(e, obj); /* the object exists from its first mapping on */
	if ((ret = vma_link_new(e, m, v)) || !(flags & 1))
		return ret;
	/* bit0: MADV_HUGEPAGE right after the mmap, as the crosscheck helper does it */
	return madvise_walk_vmas(e, mm, addr, addr + len, madvise_huge);
}

/* do_vmi_munmap: start aligned, len rounded up, inside TASK_SIZE; nothing mapped there is 0. */
static int op_munmap(struct engine *e, int mm, uint64_t start, uint64_t len)
{
	uint64_t page = e->geom.page_size, task = e->task_size;
	int ret = lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_WRITE); /* __vm_munmap: mmap_write_lock_killable */
	if (ret)
		return ret;
	if ((start & (page - 1)) || start > task || len > task - start)
		return -EINVAL;
	uint64_t end = start + ((len + page - 1) & ~(page - 1));
	if (end == start)
		return -EINVAL;
	return detach_range(e, mm, start, end, true);
}

/* ---- fork: dup_mmap, copy_page_range ---- */

struct copy_arg { int src, dst; int ret; };

/* copy_p4d/pud/pmd/pte_range: the child gets a table wherever the parent has one in the VMA's range (even an
 * empty one); copy_present_pte and copy_hugetlb_page_range write-protect writable leaves on both sides and
 * add a mapping; copy_huge_pmd gives the child its own deposited table. */
static int copy_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct copy_arg *a = ctx->arg;
	struct engine *e = ctx->e;
	const struct entry_fmt *f = ctx->g->fmt;
	struct tref dt;
	uint32_t di;
	int dl;
	if (visit == WALK_TABLE_PRE) {
		a->ret = pt_slot(e, a->dst, ctx->addr, child_level(ctx->g, ctx->level), &dt, &di, &dl);
		return a->ret ? 1 : 0;
	}
	if (f->kind(ctx->level, ctx->old) != E_LEAF)
		return 0;
	a->ret = pt_slot(e, a->dst, ctx->addr, ctx->level, &dt, &di, &dl);
	if (a->ret)
		return 1;
	if (dl != ctx->level || f->kind(dl, entry_get(e, dt, di)) != E_EMPTY) {
		violate(e, V_ENGINE_ASSERT, "fork: the child's level-%d slot for va 0x%llx is taken", ctx->level,
			(unsigned long long)ctx->addr);
		return 1;
	}
	uint64_t phys = f->addr(ctx->level, ctx->old), pfn = phys >> 12;
	if (ctx->level == e->pmd_lvl && pmd_has_deposit(e, ctx->old)) {
		struct tref dep;
		a->ret = alloc_table_for(e, a->dst, pte_level(e), &dep);
		if (a->ret)
			return 1;
		pgtable_trans_huge_deposit(e, dt, dep);
	}
	if (!is_zero_pfn(pfn)) {
		struct compound *c = data_lookup(e, pfn);
		if (!c) {
			violate(e, V_ENGINE_ASSERT, "fork: va 0x%llx maps pfn 0x%llx, no data page",
				(unsigned long long)ctx->addr, (unsigned long long)pfn);
			return 1;
		}
		c->mapcount++;
	}
	if (f->writable(ctx->level, ctx->old))
		entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->leaf(ctx->level, phys, false));
	entry_write(e, dt, ctx->level, di, f->leaf(ctx->level, phys, false));
	emit(e, EV_LEAF_SET, ctx->level, ctx->addr, pfn, a->dst);
	return e->viol ? 1 : 0;
}

/* copy_page_range: only where vma_needs_copy says so (an anon_vma; v6.6 copies hugetlb lazily too); the
 * parent's range is notified (MMU_NOTIFY_PROTECTION_PAGE for a COW mapping; copy_hugetlb_page_range
 * notifies the VMA too). */
static int copy_page_range(struct engine *e, int src, int dst, const struct vma *v)
{
	if (!v->anon)
		return 0;
	kvm_notify_range(e, src, v->start, v->end);
	struct copy_arg a = { src, dst, 0 };
	struct walker w = { copy_visit, &a, WALK_LEAF | WALK_TABLE_PRE | WALK_SKIP_EMPTY, 0 };
	pt_walk(e, &e->mms[src].pgt, &e->geom, v->start, v->end, &w);
	return a.ret;
}

static int op_fork(struct engine *e, uint64_t parent, uint64_t child)
{
	int pm = proc_mm(e, parent);
	if (pm < 0)
		return pm;
	if (child >= MAX_PIDS)
		return -EINVAL;
	if (e->procs[child].exists)
		return -EEXIST;
	if (e->procs[child].pending)
		return -EEXIST; /* the pid of a fork that a window stopped */
	struct proc *pp = &e->procs[parent];
	struct mm *src = &e->mms[pm];
	/* dup_mmap: mmap_write_lock_killable(oldmm), vma_start_write of every VMA it copies; anon_vma_fork locks each
	 * anon_vma root for write, and a file VMA is inserted into i_mmap under i_mmap_rwsem for write */
	int ret = lock_acquire(e, LC_MMAP, (uint64_t)pm, LM_WRITE);
	if (!ret)
		ret = lock_acquire(e, LC_VMA, (uint64_t)pm, LM_WRITE);
	for (int i = 0; !ret && i < src->nvma; i++)
		ret = vma_rmap_wait(e, &src->vmas[i]);
	if (ret)
		return ret;
	bool alloc_pgste = e->sysctl_pgste || pp->tif_pgste || src->alloc_pgste;
	if (e->arch != ARCH_S390 || e->knob[K_PGSTE_DECISION] == PD_CONVERT_LATE)
		alloc_pgste = false;
	else if (e->knob[K_PGSTE_DECISION] == PD_SYSCTL_ONLY)
		alloc_pgste = e->sysctl_pgste;
	/* dup_mm copies asce_limit: s390's child gets one CRST of the parent's level (pgd_alloc) */
	int nm;
	ret = mm_new(e, alloc_pgste, src->pgt.top, &nm);
	if (ret)
		return ret;
	struct mm *dst = &e->mms[nm];
	src = &e->mms[pm];
	dst->def_nohuge = src->def_nohuge; /* mm_init: def_flags & VM_INIT_DEF_MASK */
	if (src->nvma) {
		dst->vmas = malloc((size_t)src->nvma * sizeof(struct vma));
		if (!dst->vmas) {
			mm_put_users(e, nm);
			return -ENOMEM;
		}
		dst->nvma = src->nvma;
	}
	for (int i = 0; i < src->nvma; i++) { /* vm_area_dup + anon_vma_fork (the new anon_vma keeps the root) */
		struct vma v = src->vmas[i];
		v.cloned = v.anon != 0;
		v.anon = v.anon ? ++e->next_anon : 0;
		dst->vmas[i] = v;
	}
	for (int i = 0; i < src->nvma && !e->viol; i++) {
		struct vma v = src->vmas[i];
		if ((ret = copy_page_range(e, pm, nm, &v))) {
			mm_put_users(e, nm);
			return ret;
		}
	}
	/* a window stopped dup_mmap (a COW range's notifier): the child does not run until inval_end */
	int w = inval_window_of_current(e);
	e->procs[child] = (struct proc){ w < 0, nm, pp->tif_pgste, w >= 0 };
	if (w >= 0)
		e->cpus[w].inval_child = (uint32_t)child + 1;
	return 0;
}

/* ---- exec ---- */

int op_exec(struct engine *e, int pid, int64_t elf)
{
	struct proc *p = &e->procs[pid];
	if (p->pending)
		return -EEXIST; /* the pid of a fork that a window stopped: taken, not yet running */
	int old = p->exists ? p->mm : -1;
	if (!p->exists)
		p->tif_pgste = false; /* a new task (model choice: no parent to inherit TIF_PGSTE from) */
	int decision = e->arch == ARCH_S390 ? e->knob[K_PGSTE_DECISION] : PD_SYSCTL_ONLY;
	bool restarted = false;
	struct elf_info info = { 0 };
	if (elf >= e->nelfs)
		return -ENOEXEC;
	static const int machine[ARCH_NR] = { 22, 183, 62 };
	if (old >= 0 && (elf < 0 || !elf_parse(e->elfs[elf], e->elf_lens[elf], machine[e->arch], e->arch == ARCH_S390,
					       &info, e->geom.page_size))) {
		/* an exec that reaches exec_mmap: mmap_read_lock_killable(old_mm), then mmput(old_mm), whose exit_mmap
		 * may wait; an exec that fails earlier does neither */
		int ret = lock_would_wait(e, LC_MMAP, (uint64_t)old, LM_READ);
		if (ret || (ret = exit_mmap_wait(e, old)))
			return ret;
	}
again:;
	bool flags_say = e->sysctl_pgste || p->tif_pgste || (old >= 0 && e->mms[old].alloc_pgste);
	bool alloc_pgste = decision == PD_CONVERT_LATE ? false :
			   decision == PD_SYSCTL_ONLY ? e->sysctl_pgste : flags_say;
	if (e->arch != ARCH_S390)
		alloc_pgste = false;
	int nm, ret = mm_new(e, alloc_pgste, -1, &nm);
	if (ret)
		return ret;
	/* fs/exec.c: the stack and its argument page exist before binfmt_elf looks at the file */
	struct mm *m = &e->mms[nm];
	m->def_nohuge = old >= 0 && e->mms[old].def_nohuge; /* mm_init: def_flags & VM_INIT_DEF_MASK */
	uint64_t pfn, size;
	struct vma stack = { .start = e->stack_top - STACK_BYTES, .end = e->stack_top, .flags = VMA_STACK };
	if (m->def_nohuge)
		stack.flags |= VMA_NOHUGE; /* setup_arg_pages: vm_flags |= mm->def_flags */
	ret = vma_insert_at(m, 0, stack);
	if (!ret)
		ret = do_fault(e, nm, e->stack_top - e->geom.page_size, true, &pfn, &size);
	if (!ret && elf >= 0) {
		ret = elf_parse(e->elfs[elf], e->elf_lens[elf], machine[e->arch], e->arch == ARCH_S390, &info,
			      e->geom.page_size);
	}
	if (!ret && info.pgste && e->arch == ARCH_S390 && !flags_say) {
		if (decision == PD_ELF_RESTART) {
			p->tif_pgste = true;
			ret = -EAGAIN;
		} else if (decision == PD_ELF_NO_RESTART) {
			p->tif_pgste = true;
			m->alloc_pgste = true;
			e->frag_dirty = true;
			emit(e, EV_PGSTE, nm, 1, 0, 0);
		}
	}
	if (ret) {
		mm_put_users(e, nm);
		if (ret == -EAGAIN && !restarted) {
			restarted = true;
			emit(e, EV_RESTART, pid, 0, 0, 0);
			goto again;
		}
		return ret;
	}
	if (old >= 0)
		mm_put_users(e, old);
	p->exists = true;
	p->mm = nm;
	return 0;
}

/* A user page fault's lock (v6.6 do_user_addr_fault, arm64 do_page_fault, s390 do_exception): lock_vma_under_rcu
 * first, which takes only that VMA's read lock and serves an anonymous VMA that has an anon_vma, unless a writer
 * has write-locked it (vma_start_write); else lock_mm_and_find_vma: mmap_lock for read. */
int lock_mm_and_find_vma(struct engine *e, int mm, uint64_t addr)
{
	const struct vma *v = vma_find(&e->mms[mm], addr);
	bool anonymous = v && !v->shm && !(v->flags & VMA_HUGETLB) && v->anon;
	if (anonymous && lock_holder(e, LC_VMA, (uint64_t)mm, LM_READ, addr, addr + 1, NULL) < 0)
		return lock_acquire_range(e, LC_VMA, (uint64_t)mm, LM_READ, addr, addr + 1);
	return lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_READ);
}

int op_mm(struct engine *e, const uint64_t *op)
{
	const uint64_t *a = op + 1;
	if (op[0] == OP_SYSCTL_ALLOCATE_PGSTE) {
		if (e->arch != ARCH_S390)
			return -ENOSYS;
		e->sysctl_pgste = a[0] != 0;
		return 0;
	}
	if (op[0] == OP_EXEC)
		return a[0] < MAX_PIDS ? op_exec(e, (int)a[0], (int64_t)a[1]) : -EINVAL;
	if (op[0] == OP_FORK)
		return op_fork(e, a[0], a[1]);
	int mm = proc_mm(e, a[0]);
	if (mm < 0)
		return mm;
	switch (op[0]) {
	case OP_EXIT: {
		/* exit_mm: mmap_read_lock (the core-dump barrier), then mmput */
		int ret = lock_would_wait(e, LC_MMAP, (uint64_t)mm, LM_READ);
		if (ret || (ret = exit_mmap_wait(e, mm)))
			return ret;
		e->procs[a[0]].exists = false;
		e->procs[a[0]].tif_pgste = false; /* a thread flag: it goes with the task */
		mm_put_users(e, mm);
		return 0;
	}
	case OP_MMAP:
		return do_mmap(e, mm, a[1], a[2], a[3], -1, 0);
	case OP_SHM_MMAP: /* MAP_SHARED | MAP_FIXED of the object, read and write */
		return a[3] < MAX_SHM ? do_mmap(e, mm, a[1], a[2], 0, (int)a[3], a[4]) : -EINVAL;
	case OP_MUNMAP:
		return op_munmap(e, mm, a[1], a[2]);
	case OP_MADVISE:
		return do_madvise(e, mm, a[1], a[2], a[3]);
	case OP_FAULT: {
		uint64_t pfn, size;
		int ret = lock_mm_and_find_vma(e, mm, a[1]);
		return ret ? ret : do_fault(e, mm, a[1], a[2] != 0, &pfn, &size);
	}
	case OP_SPLIT: {
		/* split_huge_pmd as a path under mmap_lock for read calls it (the trace names no syscall) */
		int ret = lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_READ);
		if (ret)
			return ret;
		struct vma *v = vma_find(&e->mms[mm], a[1]);
		if (!v)
			return -EFAULT;
		return do_split(e, mm, a[1]);
	}
	}
	return -ENOSYS;
}

/* ---- the counters' audit (end of trace): a walk recounts what the counters say ---- */

struct audit_arg { uint64_t bytes, leaves; };

static uint64_t deposits_of(struct engine *e, struct tref pmd_tbl)
{
	uint64_t n = 0;
	for (int32_t d = e->blocks[pmd_tbl.blk].dep_head - 1; d >= 0 && n <= (uint64_t)e->ndeps; d = e->deps[d].next)
		n++;
	return n;
}

static int audit_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct audit_arg *a = ctx->arg;
	struct engine *e = ctx->e;
	int mm = ctx->pgt->mm;
	if (visit == WALK_LEAF) {
		if (ctx->level == e->pmd_lvl && ctx->g->fmt->kind(ctx->level, ctx->old) == E_LEAF)
			a->leaves++;
		return 0;
	}
	int cl = child_level(ctx->g, ctx->level);
	struct tref child = tref_from_phys(e, ctx->g->fmt->addr(ctx->level, ctx->old));
	a->bytes += pt_level_bytes(e, mm, cl);
	if (cl == e->pmd_lvl)
		a->bytes += deposits_of(e, child) * pt_level_bytes(e, mm, pte_level(e));
	return 0;
}

/* mm_pgtables_bytes and the PMD-leaf count of every live mm against a walk of its tables. */
void mm_audit(struct engine *e)
{
	for (int mm = 0; mm < MAX_MMS && !e->viol; mm++) {
		struct mm *m = &e->mms[mm];
		if (!m->used || m->dead || m->pgt.root.blk < 0)
			continue;
		struct audit_arg a = { 0, 0 };
		if (m->pgt.top == e->pmd_lvl)
			a.bytes += deposits_of(e, m->pgt.root) * pt_level_bytes(e, mm, pte_level(e));
		struct walker w = { audit_visit, &a, WALK_LEAF | WALK_TABLE_PRE | WALK_SKIP_EMPTY, 0 };
		pt_walk(e, &m->pgt, &e->geom, 0, ~0ull, &w);
		if (a.bytes != m->pt_bytes || a.leaves != m->pmd_leaves)
			violate(e, V_ENGINE_ASSERT, "mm %d counts %llu page-table bytes and %llu PMD leaves, its tables "
				"hold %llu and %llu", mm, (unsigned long long)m->pt_bytes,
				(unsigned long long)m->pmd_leaves, (unsigned long long)a.bytes,
				(unsigned long long)a.leaves);
	}
}

/* ---- figures for the crosscheck driver ---- */

struct fig_arg { uint64_t lo; uint64_t **buf; size_t *len, *cap; int ret; };

static int fig_push(struct fig_arg *a, uint64_t v)
{
	if (*a->len == *a->cap) {
		size_t n = *a->cap ? *a->cap * 2 : 256;
		uint64_t *p = realloc(*a->buf, n * sizeof(*p));
		if (!p)
			return a->ret = -ENOMEM;
		*a->buf = p;
		*a->cap = n;
	}
	(*a->buf)[(*a->len)++] = v;
	return 0;
}

static int fig_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct fig_arg *a = ctx->arg;
	(void)visit;
	if (ctx->level == ctx->e->pmd_lvl && ctx->addr >= a->lo && ctx->g->fmt->kind(ctx->level, ctx->old) == E_LEAF)
		return fig_push(a, ctx->addr);
	return 0;
}

/* After an operation: for each live pid, [pid, mm_pgtables_bytes, n, n PMD-leaf addresses in [lo, hi)]. */
int ptf_figures(struct engine *e, uint64_t lo, uint64_t hi, uint64_t **buf, size_t *len, size_t *cap)
{
	struct fig_arg a = { lo, buf, len, cap, 0 };
	size_t count_at = *len;
	uint64_t n = 0;
	if (fig_push(&a, 0))
		return a.ret;
	for (int pid = 0; pid < MAX_PIDS; pid++) {
		if (!e->procs[pid].exists)
			continue;
		struct mm *m = &e->mms[e->procs[pid].mm];
		n++;
		if (fig_push(&a, (uint64_t)pid) || fig_push(&a, m->pt_bytes) || fig_push(&a, 0))
			return a.ret;
		size_t nb_at = *len - 1;
		if (m->pmd_leaves && hi > lo) {
			struct walker w = { fig_visit, &a, WALK_LEAF | WALK_SKIP_EMPTY, e->pmd_lvl + 1 };
			pt_walk(e, &m->pgt, &e->geom, lo, hi, &w);
			if (a.ret)
				return a.ret;
		}
		(*buf)[nb_at] = *len - nb_at - 1;
	}
	(*buf)[count_at] = n;
	return 0;
}
