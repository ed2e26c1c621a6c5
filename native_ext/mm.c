/* mm.c: processes, mms, VMAs and the host mm paths (mmap, munmap, madvise, fault, split, exec, fork, exit). */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"

#define STACK_BYTES (128ull << 10)


/* ---- mm lifetime ---- */

int mm_new(struct engine *e, bool alloc_pgste, int *out)
{
	int id;
	for (id = 0; id < MAX_MMS && e->mms[id].used; id++)
		;
	if (id == MAX_MMS)
		return -ENOMEM;
	struct mm *m = &e->mms[id];
	memset(m, 0, sizeof(*m));
	e->frag_dirty = true;
	m->frag_list = -1;
	m->alloc_pgste = alloc_pgste;
	m->pgt.mm = (int16_t)id;
	m->pgt.top = e->arch == ARCH_S390 ? 2 : 0;
	while (e->geom.lv[m->pgt.top].folded)
		m->pgt.top++;
	const struct level_geom *top = &e->geom.lv[m->pgt.top];
	int ret = table_alloc(e, id, m->pgt.top, (int)((top->table_bytes + 4095) / 4096), &m->pgt.root);
	if (ret)
		return ret;
	table_set_linked(e, m->pgt.root, true);
	emit(e, EV_TABLE_ALLOC, m->pgt.top, tref_phys(m->pgt.root), id, 0);
	m->asce_limit = e->arch == ARCH_S390 ? 1ull << 42 : e->task_size;
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
		emit(e, EV_TABLE_FREE, m->pgt.top, tref_phys(m->pgt.root), mm, 0);
		e->st.tables_freed++;
		block_release(e, m->pgt.root.blk);
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

/* The first VMA ending above addr (nvma if none). */
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

/* Split VMAs so that start and end are boundaries; -ENOMEM when the map count is exhausted. */
static int vma_split_at(struct engine *e, struct mm *m, uint64_t addr)
{
	struct vma *v = vma_find(m, addr);
	if (!v || v->start == addr)
		return 0;
	struct vma tail = *v;
	tail.start = addr;
	if (v->flags & (VMA_HUGETLB_PMD | VMA_HUGETLB_PUD)) {
		/* hugetlb_vm_op_split: only at huge-page boundaries */
		int lvl = (v->flags & VMA_HUGETLB_PMD) ? pmd_level(&e->geom) : pud_level(&e->geom);
		if (addr & (level_size(&e->geom, lvl) - 1))
			return -EINVAL;
	}
	int pos = (int)(v - m->vmas);
	if (m->nvma >= MAX_VMAS)
		return -ENOMEM;
	m->vmas[pos].end = addr;
	return vma_insert_at(m, pos + 1, tail);
}

static void vma_remove_range(struct mm *m, uint64_t start, uint64_t end)
{
	int w = 0;
	for (int i = 0; i < m->nvma; i++)
		if (!(m->vmas[i].start >= start && m->vmas[i].end <= end))
			m->vmas[w++] = m->vmas[i];
	m->nvma = w;
}

/* ---- table freeing ---- */

void crst_free(struct engine *e, int mm, struct tref t)
{
	(void)mm;
	e->st.tables_freed++;
	if (e->knob[K_TABLE_FREE] == TF_RCU && mm >= 0) {
		call_rcu_table(e, CB_FREE_BLOCK, t.blk, 0);
	} else {
		emit(e, EV_TABLE_FREE, e->blocks[t.blk].level[0], tref_phys(t), mm, 0);
		block_release(e, t.blk);
	}
}

/* pte_free_tlb (defer=false) or pte_free_defer (defer=true) of an unlinked PTE table. */
void pte_table_free(struct engine *e, int mm, struct tref t, uint64_t vmaddr, bool defer)
{
	e->st.tables_freed++;
	if (e->arch == ARCH_S390) {
		bool unlink = defer ? e->knob[K_DEFER_GMAP_UNLINK] == 1 : e->mms[mm].alloc_pgste;
		if (unlink)
			gmap_unlink_table(e, mm, t, vmaddr);
		s390_pte_free(e, mm, t, defer || e->knob[K_TABLE_FREE] == TF_RCU, defer);
		return;
	}
	if (defer || e->knob[K_TABLE_FREE] == TF_RCU) {
		if (defer)
			emit(e, EV_TABLE_DEFER, e->geom.nlevels - 1, tref_phys(t), mm, 0);
		call_rcu_table(e, CB_FREE_BLOCK, t.blk, 0);
	} else {
		emit(e, EV_TABLE_FREE, e->geom.nlevels - 1, tref_phys(t), mm, 0);
		block_release(e, t.blk);
	}
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
		pte_table_free(e, mm, child, ctx->addr, false);
	else
		crst_free(e, mm, child);
}

/* ---- zapping leaves and freeing tables over a range ---- */

struct unmap_arg { uint64_t start, end; bool free_tables; struct mm *m; int mm; };
static int split_pmd_leaf(struct engine *e, int mm, uint64_t addr);

static int unmap_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct unmap_arg *a = ctx->arg;
	struct engine *e = ctx->e;
	const struct entry_fmt *f = ctx->g->fmt;
	uint64_t size = level_size(ctx->g, ctx->level);

	if (visit == WALK_LEAF) {
		if (f->kind(ctx->level, ctx->old) != E_LEAF)
			return 0;
		/* a THP straddling the range is split and the walk descends into it; a leaf that
		 * cannot be split stays whole (hugetlb ranges are checked for alignment up front) */
		if (ctx->addr < a->start || ctx->addr + size > a->end) {
			split_pmd_leaf(e, a->mm, ctx->addr);
			return 0;
		}
		uint64_t pfn = f->addr(ctx->level, ctx->old) >> 12;
		entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->empty(ctx->level));
		emit(e, EV_LEAF_ZAP, ctx->level, ctx->addr, pfn, a->mm);
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
	struct walker w = { unmap_visit, &a, WALK_LEAF | WALK_TABLE_POST | WALK_SKIP_EMPTY };
	return pt_walk(e, &m->pgt, &e->geom, start, end, &w);
}

/* ---- lookups and mapping ---- */

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
	struct walker w = { lookup_visit, &a, WALK_LEAF | WALK_TABLE_PRE };
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
	struct walker w = { lookup_visit, &a, WALK_LEAF | WALK_TABLE_PRE };
	pt_walk(e, &e->mms[mm].pgt, &e->geom, addr, addr + 1, &w);
	if (a.level != level)
		return e->geom.fmt->empty(level);
	if (tbl)
		*tbl = a.tbl;
	if (idx)
		*idx = a.idx;
	return a.entry;
}

static int alloc_table_for(struct engine *e, int mm, int level, struct tref *out)
{
	if (level == e->geom.nlevels - 1 && e->arch == ARCH_S390)
		return s390_pte_alloc(e, mm, out);
	const struct level_geom *lv = &e->geom.lv[level];
	int ret = table_alloc(e, mm, level, (int)((lv->table_bytes + 4095) / 4096), out);
	if (!ret)
		emit(e, EV_TABLE_ALLOC, level, tref_phys(*out), mm, 0);
	return ret;
}

struct map_arg { int mm; int target; uint64_t leaf; bool mapped; int ret; };

/* Allocate tables down to the target level, then install the leaf into an empty slot. */
static int map_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct map_arg *a = ctx->arg;
	struct engine *e = ctx->e;
	const struct entry_fmt *f = ctx->g->fmt;
	enum entry_kind k = f->kind(ctx->level, ctx->old);
	(void)visit;
	if (k == E_LEAF) {
		a->mapped = true;
		return 1;
	}
	if (ctx->level == a->target) {
		entry_write(e, ctx->tbl, ctx->level, ctx->idx, a->leaf);
		return 1;
	}
	if (ctx->level > a->target) {
		a->ret = -EINVAL;
		return 1;
	}
	struct tref t;
	int lvl = child_level(ctx->g, ctx->level);
	int ret = alloc_table_for(e, a->mm, lvl, &t);
	if (ret) {
		a->ret = ret;
		return 1;
	}
	entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->table(ctx->level, tref_phys(t)));
	table_set_linked(e, t, true);
	return 0;
}

/* handle_mm_fault: returns 0 and the pfn mapped at addr (new or existing). */
int do_fault(struct engine *e, int mm, uint64_t addr, bool write, uint64_t *pfn_out, uint64_t *size_out)
{
	struct mm *m = &e->mms[mm];
	const struct geom *g = &e->geom;
	addr &= ~(g->page_size - 1);
	struct vma *v = vma_find(m, addr);
	if (!v)
		return -EFAULT;
	int target = g->nlevels - 1;
	if (v->flags & VMA_HUGETLB_PMD)
		target = pmd_level(g);
	else if (v->flags & VMA_HUGETLB_PUD)
		target = pud_level(g);
	else if ((v->flags & VMA_THP) && !(v->flags & VMA_NOHUGE) &&
		 !(m->has_pgste && e->knob[K_THP_IN_PGSTE] == 0)) {
		uint64_t pmd = level_size(g, pmd_level(g));
		uint64_t base = addr & ~(pmd - 1);
		int lvl = -1;
		int k = host_lookup(e, mm, addr, &lvl, NULL, NULL, NULL);
		if (base >= v->start && base + pmd <= v->end && k == E_EMPTY && lvl <= pmd_level(g))
			target = pmd_level(g);
	}
	uint64_t size = level_size(g, target);
	int lvl;
	uint64_t pfn;
	if (host_lookup(e, mm, addr, &lvl, &pfn, NULL, NULL) == E_LEAF) {
		*pfn_out = pfn;
		*size_out = level_size(g, lvl);
		return 0;
	}
	uint64_t head = data_alloc(e, size >> 12); /* pfns count 4K frames on every arch */
	if (!head)
		return -ENOMEM;
	struct map_arg a = { mm, target, g->fmt->leaf(target, head << 12, write), false, 0 };
	struct walker w = { map_visit, &a, WALK_LEAF };
	pt_walk(e, &m->pgt, g, addr, addr + 1, &w);
	if (a.ret || a.mapped) {
		/* nothing got mapped: the fresh page goes straight back */
		struct compound *c = data_lookup(e, head);
		c->mapcount = 1;
		data_put(e, head);
		if (a.ret)
			return a.ret;
		host_lookup(e, mm, addr, &lvl, &pfn, NULL, NULL);
		*pfn_out = pfn;
		*size_out = level_size(g, lvl);
		return 0;
	}
	data_lookup(e, head)->mapcount = 1;
	emit(e, EV_LEAF_SET, target, addr & ~(size - 1), head, mm);
	*pfn_out = head + ((addr & (size - 1)) >> 12);
	*size_out = size;
	return 0;
}

/* split_huge_pmd: the PMD leaf becomes a PTE table mapping the same compound. */
static int split_pmd_leaf(struct engine *e, int mm, uint64_t addr);

int do_split(struct engine *e, int mm, uint64_t addr)
{
	struct mm *m = &e->mms[mm];
	struct vma *v = vma_find(m, addr);
	if (!v || (v->flags & (VMA_HUGETLB_PMD | VMA_HUGETLB_PUD)))
		return -EINVAL;
	return split_pmd_leaf(e, mm, addr);
}

/* __split_huge_pmd, also for a THP whose VMA is already gone (unmap of part of it). */
static int split_pmd_leaf(struct engine *e, int mm, uint64_t addr)
{
	const struct geom *g = &e->geom;
	int lvl;
	struct tref tbl;
	uint32_t idx;
	uint64_t pfn;
	if (host_lookup(e, mm, addr, &lvl, &pfn, &tbl, &idx) != E_LEAF || lvl != pmd_level(g))
		return -EINVAL;
	uint64_t pmd = level_size(g, lvl);
	uint64_t base = addr & ~(pmd - 1);
	uint64_t old = entry_get(e, tbl, idx);
	uint64_t head = g->fmt->addr(lvl, old) >> 12;
	kvm_notify_range(e, mm, base, base + pmd);
	struct tref t;
	int ret = alloc_table_for(e, mm, g->nlevels - 1, &t);
	if (ret)
		return ret;
	int pl = g->nlevels - 1;
	uint32_t n = g->lv[pl].entries;
	uint64_t frames = g->page_size >> 12;
	for (uint32_t i = 0; i < n; i++)
		entry_write(e, t, pl, i, g->fmt->leaf(pl, (head + i * frames) << 12, true));
	data_lookup(e, head)->mapcount += n - 1;
	entry_write(e, tbl, lvl, idx, g->fmt->table(lvl, tref_phys(t)));
	table_set_linked(e, t, true);
	emit(e, EV_LEAF_ZAP, lvl, base, head, mm);
	emit(e, EV_LEAF_SET, pl, base, head, n);
	return 0;
}

/* MADV_COLLAPSE of one PMD block mapped by a PTE table. */
static int collapse_block(struct engine *e, int mm, uint64_t base)
{
	const struct geom *g = &e->geom;
	int pl = g->nlevels - 1, ml = pmd_level(g);
	struct tref pmd_tbl;
	uint32_t pmd_idx;
	uint64_t pmd = host_entry_at(e, mm, base, ml, &pmd_tbl, &pmd_idx);
	if (g->fmt->kind(ml, pmd) != E_TABLE)
		return 0; /* nothing mapped there, or already huge */
	struct tref pte_tbl = tref_from_phys(e, g->fmt->addr(ml, pmd));
	uint64_t pmd_size = level_size(g, ml);
	kvm_notify_range(e, mm, base, base + pmd_size);
	uint64_t head = data_alloc(e, pmd_size >> 12);
	if (!head)
		return -ENOMEM;
	uint32_t n = g->lv[pl].entries;
	uint64_t *pte = tref_mem(e, pte_tbl);
	for (uint32_t i = 0; i < n && !e->viol; i++) {
		if (g->fmt->kind(pl, pte[i]) != E_LEAF)
			continue;
		uint64_t pfn = g->fmt->addr(pl, pte[i]) >> 12;
		entry_write(e, pte_tbl, pl, i, g->fmt->empty(pl));
		data_put(e, pfn);
	}
	entry_write(e, pmd_tbl, ml, pmd_idx, g->fmt->leaf(ml, head << 12, true));
	data_lookup(e, head)->mapcount = 1;
	table_set_linked(e, pte_tbl, false);
	emit(e, EV_LEAF_SET, ml, base, head, mm);
	pte_table_free(e, mm, pte_tbl, base, true);
	return 0;
}

/* ---- operations ---- */

static int proc_mm(struct engine *e, uint64_t pid)
{
	if (pid >= MAX_PIDS || !e->procs[pid].exists)
		return -ESRCH;
	return e->procs[pid].mm;
}

static int check_range(struct engine *e, uint64_t addr, uint64_t len)
{
	if (len == 0 || (addr | len) & (e->geom.page_size - 1))
		return -EINVAL;
	if (addr + len < addr || addr + len > e->task_size)
		return -ENOMEM;
	return 0;
}

/* do_vmi_munmap: split the VMAs at the edges, notify, remove them, zap and free the tables. */
static int detach_range(struct engine *e, int mm, uint64_t addr, uint64_t len)
{
	struct mm *m = &e->mms[mm];
	int ret = vma_split_at(e, m, addr);
	if (!ret)
		ret = vma_split_at(e, m, addr + len);
	if (ret)
		return ret;
	kvm_notify_range(e, mm, addr, addr + len);
	vma_remove_range(m, addr, addr + len);
	unmap_range(e, mm, addr, addr + len, true);
	return 0;
}

static int op_mmap(struct engine *e, int mm, uint64_t addr, uint64_t len, uint64_t flags)
{
	struct mm *m = &e->mms[mm];
	int ret = check_range(e, addr, len);
	if (ret)
		return ret;
	if ((flags & 6) == 6)
		return -EINVAL;
	if (flags & 6) {
		int lvl = (flags & 2) ? pmd_level(&e->geom) : pud_level(&e->geom);
		if (lvl < 0 || !e->geom.lv[lvl].leaf_ok)
			return -EINVAL;
		uint64_t hs = level_size(&e->geom, lvl);
		if ((addr | len) & (hs - 1))
			return -EINVAL;
	}
	if (e->arch == ARCH_S390 && addr + len > m->asce_limit) {
		ret = s390_upgrade(e, mm, addr + len);
		if (ret)
			return ret;
	}
	ret = detach_range(e, mm, addr, len);
	if (ret || e->viol)
		return ret;
	struct vma v = { addr, addr + len, 0 };
	if (flags & 1)
		v.flags |= VMA_THP;
	if (flags & 2)
		v.flags |= VMA_HUGETLB_PMD;
	if (flags & 4)
		v.flags |= VMA_HUGETLB_PUD;
	if (m->def_nohuge)
		v.flags |= VMA_NOHUGE;
	int pos = 0;
	while (pos < m->nvma && m->vmas[pos].start < addr)
		pos++;
	return vma_insert_at(m, pos, v);
}

static int op_munmap(struct engine *e, int mm, uint64_t addr, uint64_t len)
{
	int ret = check_range(e, addr, len);
	if (ret)
		return ret == -ENOMEM ? -EINVAL : ret;
	return detach_range(e, mm, addr, len);
}

/* Does [start, end) cut a hugetlb VMA anywhere but at a huge-page boundary? */
static bool hugetlb_misaligned(struct engine *e, struct mm *m, uint64_t start, uint64_t end)
{
	for (int i = 0; i < m->nvma; i++) {
		struct vma *v = &m->vmas[i];
		if (!(v->flags & (VMA_HUGETLB_PMD | VMA_HUGETLB_PUD)) || v->end <= start || v->start >= end)
			continue;
		int lvl = (v->flags & VMA_HUGETLB_PMD) ? pmd_level(&e->geom) : pud_level(&e->geom);
		uint64_t hs = level_size(&e->geom, lvl);
		if (((start > v->start ? start : v->start) | (end < v->end ? end : v->end)) & (hs - 1))
			return true;
	}
	return false;
}

static int op_madvise(struct engine *e, int mm, uint64_t addr, uint64_t len, uint64_t advice)
{
	struct mm *m = &e->mms[mm];
	const struct geom *g = &e->geom;
	int ret = check_range(e, addr, len);
	if (ret)
		return ret == -ENOMEM ? -EINVAL : ret;
	uint64_t end = addr + len;
	bool pgste_forbids = m->has_pgste && e->knob[K_THP_IN_PGSTE] == 0;
	switch (advice) {
	case 0: /* DONTNEED */
		if (hugetlb_misaligned(e, m, addr, end))
			return -EINVAL; /* madvise_dontneed_free_valid_vma */
		kvm_notify_range(e, mm, addr, end);
		unmap_range(e, mm, addr, end, false);
		return 0;
	case 1:
	case 2:
		if (advice == 1 && pgste_forbids)
			return 0;
		if ((ret = vma_split_at(e, m, addr)) || (ret = vma_split_at(e, m, end)))
			return ret;
		for (int i = 0; i < m->nvma; i++) {
			struct vma *v = &m->vmas[i];
			if (v->start < addr || v->end > end || (v->flags & (VMA_HUGETLB_PMD | VMA_HUGETLB_PUD)))
				continue;
			if (advice == 1)
				v->flags = (v->flags | VMA_THP) & ~VMA_NOHUGE;
			else
				v->flags = (v->flags | VMA_NOHUGE) & ~VMA_THP;
		}
		return 0;
	default: { /* COLLAPSE */
		if (pgste_forbids)
			return -EINVAL;
		uint64_t pmd = level_size(g, pmd_level(g));
		for (uint64_t b = (addr + pmd - 1) & ~(pmd - 1); b + pmd <= end && b + pmd > b; b += pmd) {
			struct vma *v = vma_find(m, b);
			if (!v || b + pmd > v->end || !(v->flags & VMA_THP) || (v->flags & VMA_NOHUGE))
				continue;
			ret = collapse_block(e, mm, b);
			if (ret || e->viol)
				return ret;
		}
		return 0;
	}
	}
}

int op_exec(struct engine *e, int pid, int64_t elf)
{
	struct proc *p = &e->procs[pid];
	int old = p->exists ? p->mm : -1;
	int decision = e->arch == ARCH_S390 ? e->knob[K_PGSTE_DECISION] : PD_SYSCTL_ONLY;
	bool restarted = false;
	struct elf_info info = { 0 };
	if (elf >= e->nelfs)
		return -ENOEXEC;
again:;
	bool flags_say = e->sysctl_pgste || p->tif_pgste || (old >= 0 && e->mms[old].alloc_pgste);
	bool alloc_pgste = decision == PD_CONVERT_LATE ? false :
			   decision == PD_SYSCTL_ONLY ? e->sysctl_pgste : flags_say;
	if (e->arch != ARCH_S390)
		alloc_pgste = false;
	int nm, ret = mm_new(e, alloc_pgste, &nm);
	if (ret)
		return ret;
	/* fs/exec.c: the stack and its argument page exist before binfmt_elf looks at the file */
	struct mm *m = &e->mms[nm];
	uint64_t pfn, size;
	ret = vma_insert_at(m, 0, (struct vma){ e->stack_top - STACK_BYTES, e->stack_top, 0 });
	if (!ret)
		ret = do_fault(e, nm, e->stack_top - e->geom.page_size, true, &pfn, &size);
	if (!ret && elf >= 0) {
		static const int machine[ARCH_NR] = { 22, 183, 62 };
		ret = elf_parse(e->elfs[elf], e->elf_lens[elf], machine[e->arch], e->arch == ARCH_S390, &info);
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

static int op_fork(struct engine *e, uint64_t parent, uint64_t child)
{
	int pm = proc_mm(e, parent);
	if (pm < 0)
		return pm;
	if (child >= MAX_PIDS)
		return -EINVAL;
	if (e->procs[child].exists)
		return -EEXIST;
	struct proc *pp = &e->procs[parent];
	struct mm *src = &e->mms[pm];
	bool alloc_pgste = e->sysctl_pgste || pp->tif_pgste || src->alloc_pgste;
	if (e->arch != ARCH_S390 || e->knob[K_PGSTE_DECISION] == PD_CONVERT_LATE)
		alloc_pgste = false;
	else if (e->knob[K_PGSTE_DECISION] == PD_SYSCTL_ONLY)
		alloc_pgste = e->sysctl_pgste;
	int nm, ret = mm_new(e, alloc_pgste, &nm);
	if (ret)
		return ret;
	struct mm *dst = &e->mms[nm];
	src = &e->mms[pm];
	if (e->arch == ARCH_S390 && src->asce_limit > dst->asce_limit &&
	    (ret = s390_upgrade(e, nm, src->asce_limit))) {
		mm_put_users(e, nm);
		return ret;
	}
	if (src->nvma) {
		dst->vmas = malloc((size_t)src->nvma * sizeof(struct vma));
		if (!dst->vmas) {
			mm_put_users(e, nm);
			return -ENOMEM;
		}
		memcpy(dst->vmas, src->vmas, (size_t)src->nvma * sizeof(struct vma));
		dst->nvma = src->nvma;
	}
	dst->def_nohuge = src->def_nohuge;
	e->procs[child] = (struct proc){ true, nm, pp->tif_pgste };
	return 0;
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
	case OP_EXIT:
		e->procs[a[0]].exists = false;
		mm_put_users(e, mm);
		return 0;
	case OP_MMAP:
		return op_mmap(e, mm, a[1], a[2], a[3]);
	case OP_MUNMAP:
		return op_munmap(e, mm, a[1], a[2]);
	case OP_MADVISE:
		return op_madvise(e, mm, a[1], a[2], a[3]);
	case OP_FAULT: {
		uint64_t pfn, size;
		return do_fault(e, mm, a[1], a[2] != 0, &pfn, &size);
	}
	case OP_SPLIT: {
		struct vma *v = vma_find(&e->mms[mm], a[1]);
		if (!v)
			return -EFAULT;
		return do_split(e, mm, a[1]);
	}
	}
	return -ENOSYS;
}
