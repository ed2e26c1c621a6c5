/* arch/s390/gmap.c: s390_enable_sie and the classic gmap (v6.6 arch/s390/mm/gmap.c): guest segment entries
 * that point at the host's PTE tables, host_to_guest and guest_to_host. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "arch/s390/gmap.h"

enum { R1, R2, R3, SEG, PTE };
#define SEG_SIZE (1ull << 20)

/* ---- s390_enable_sie ---- */

struct convert_arg { int mm; int ret; };

/* page_table_realloc (v3.15-v4.5): replace each 2K table by a 4K pgste table, in place. */
static int convert_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct convert_arg *a = ctx->arg;
	struct engine *e = ctx->e;
	(void)visit;
	if (ctx->level != SEG || e->geom.fmt->kind(SEG, ctx->old) != E_TABLE)
		return 0;
	struct tref old = tref_from_phys(e, e->geom.fmt->addr(SEG, ctx->old));
	if (!e->blocks[old.blk].frag)
		return 0; /* already a full page */
	struct tref nt;
	int ret = e->mm_ops->pte_alloc_one(e, a->mm, &nt); /* page_table_alloc */
	if (ret) {
		a->ret = ret;
		return ret;
	}
	uint64_t *src = tref_mem(e, old);
	for (uint32_t i = 0; i < 256; i++)
		entry_write(e, nt, PTE, i, src[i]);
	entry_write(e, ctx->tbl, SEG, ctx->idx, e->geom.fmt->table(SEG, tref_phys(nt)));
	table_set_linked(e, old, false);
	table_set_linked(e, nt, true);
	flush_tlb_range(e, a->mm, ctx->addr, ctx->addr + level_size(&e->geom, SEG)); /* pmdp_xchg's IDTE */
	pte_free_tlb(e, a->mm, old, ctx->addr);
	return e->viol ? -EFAULT : 0;
}

/* thp_split_mm: every VMA NOHUGEPAGE (vm_flags_mod, hugetlb ones too), every huge PMD split (THP and huge zero
 * page), and NOHUGEPAGE for future mappings (def_flags). */
static void thp_split_mm(struct engine *e, int mm)
{
	struct mm *m = &e->mms[mm];
	m->def_nohuge = true;
	for (int i = 0; i < m->nvma && !e->viol; i++) {
		struct vma *v = &m->vmas[i];
		v->flags = (v->flags | VMA_NOHUGE) & ~VMA_THP;
		if (v->flags & VMA_HUGETLB)
			continue;
		for (uint64_t a = v->start & ~(SEG_SIZE - 1); a < v->end && !e->viol; a += SEG_SIZE)
			do_split(e, mm, a < v->start ? v->start : a);
	}
}

/* s390_enable_sie (v4.5+: needs alloc_pgste); convert-late is the v3.15-v4.5 one, which split the THPs before
 * page_table_realloc converted the tables. */
int s390_enable_sie(struct engine *e, int mm)
{
	struct mm *m = &e->mms[mm];
	if (m->has_pgste)
		return 0;
	bool convert = !m->alloc_pgste;
	if (convert && e->knob[K_PGSTE_DECISION] != PD_CONVERT_LATE)
		return -EINVAL;
	int ret = lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_WRITE); /* mmap_write_lock(mm) */
	if (ret)
		return ret;
	if (e->knob[K_THP_IN_PGSTE] == 0)
		thp_split_mm(e, mm);
	if (convert && !e->viol) {
		m->alloc_pgste = true;
		e->frag_dirty = true;
		struct convert_arg a = { mm, 0 };
		struct walker w = { convert_visit, &a, WALK_TABLE_PRE | WALK_SKIP_EMPTY, 0 };
		pt_walk(e, &m->pgt, &e->geom, 0, e->task_size, &w);
		emit(e, EV_PGSTE, mm, 2, 0, 0);
		if (a.ret)
			return a.ret;
	}
	m->has_pgste = true;
	return 0;
}

/* ---- the gmap: guest segment entries point at the host's PTE tables ---- */

/* kvm_arch_init_vm: mem_limit = TASK_SIZE_MAX (-PAGE_SIZE: sclp.hamax is unlimited here), then
 * gmap_create(mm, mem_limit - 1) -> gmap_alloc, which picks the ASCE type from the limit: a limit at or above
 * _REGION1_SIZE (2^53) gives a region-first root and asce_end -1UL, so the gmap of every VM is 5-level. */
int gmap_create(struct engine *e, struct vm *v)
{
	v->mem_limit = e->task_size; /* TASK_SIZE_MAX */
	uint64_t limit = v->mem_limit - 1;
	int top = limit < 1ull << 31 ? SEG : limit < 1ull << 42 ? R3 : limit < 1ull << 53 ? R2 : R1;
	v->asce_end = top == R1 ? ~0ull : (1ull << (e->geom.lv[top].shift + 11)) - 1;
	v->geom = e->geom;
	v->geom.nlevels = 4; /* the segment level is the gmap's last: its entries are host tables */
	v->s2.top = top;
	v->s2.mm = -1;
	int ret = table_alloc(e, -1, top, 4, &v->s2.root);
	if (!ret)
		emit(e, EV_TABLE_ALLOC, (uint64_t)top, tref_phys(v->s2.root), -1, 0);
	return ret;
}

struct gmap_walk_arg { bool alloc; int ret; bool found; struct tref tbl; uint32_t idx; };

/* __gmap_link's descent (alloc: gmap_alloc_table for each invalid region entry, a CRST that lives until
 * gmap_free) and gmap_table_walk(gmap, gaddr, 1) (no alloc: stop at an invalid entry). The walk covers one
 * address, so each level visits the one entry that maps it; the segment level is the gmap's last. */
static int gmap_walk_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct gmap_walk_arg *a = ctx->arg;
	const struct entry_fmt *f = ctx->g->fmt;
	if (visit != WALK_LEAF)
		return 0;
	if (ctx->level == ctx->g->nlevels - 1) {
		a->found = true;
		a->tbl = ctx->tbl;
		a->idx = ctx->idx;
		return 1;
	}
	if (f->kind(ctx->level, ctx->old) != E_EMPTY || !a->alloc)
		return 1;
	struct tref t;
	int lvl = child_level(ctx->g, ctx->level);
	a->ret = table_alloc(ctx->e, -1, lvl, 4, &t);
	if (a->ret)
		return 1;
	emit(ctx->e, EV_TABLE_ALLOC, (uint64_t)lvl, tref_phys(t), -1, 0);
	entry_write(ctx->e, ctx->tbl, ctx->level, ctx->idx, f->table(ctx->level, tref_phys(t)));
	return 0; /* the walker reads the entry again and descends into the new table */
}

/* The gmap segment entry for gaddr: 0, -ENOENT (no table on the way, or gaddr past asce_end), -ENOMEM. */
static int gmap_table_walk(struct engine *e, struct vm *v, uint64_t gaddr, bool alloc, struct tref *tbl,
			   uint32_t *idx)
{
	struct gmap_walk_arg a = { alloc, 0, false, TREF_NONE, 0 };
	struct walker w = { gmap_walk_visit, &a, WALK_LEAF | WALK_TABLE_PRE, 0 };
	gaddr &= ~(SEG_SIZE - 1);
	if (gaddr > v->asce_end)
		return -ENOENT;
	pt_walk(e, &v->s2, &v->geom, gaddr, gaddr + 1, &w);
	if (a.ret)
		return a.ret;
	if (!a.found)
		return -ENOENT;
	*tbl = a.tbl;
	*idx = a.idx;
	return 0;
}

static int link_add(struct vm *v, uint64_t gaddr, uint64_t vmaddr)
{
	if (v->nlinks == v->caplinks) {
		int n = v->caplinks ? v->caplinks * 2 : 16;
		struct gmap_link *p = realloc(v->links, (size_t)n * sizeof(*p));
		if (!p)
			return -ENOMEM;
		v->links = p;
		v->caplinks = n;
	}
	v->links[v->nlinks++] = (struct gmap_link){ gaddr, vmaddr };
	return 0;
}

/* __gmap_link: the gmap's region and segment tables first (they stay even if the link then fails), then the
 * host's: a large pud or pmd cannot be linked (-EFAULT); then, if the guest segment entry is empty, the host
 * segment goes into host_to_guest, keyed by vmaddr >> PMD_SHIFT: radix_tree_insert fails with -EEXIST when
 * that host segment is linked to another guest segment already (one guest segment per host segment). */
int __gmap_link(struct engine *e, struct vm *v, uint64_t gaddr, uint64_t vmaddr)
{
	const struct entry_fmt *f = e->geom.fmt;
	gaddr &= ~(SEG_SIZE - 1);
	vmaddr &= ~(SEG_SIZE - 1);
	struct tref st;
	uint32_t sidx;
	int ret = gmap_table_walk(e, v, gaddr, true, &st, &sidx);
	if (ret)
		return ret == -ENOENT ? -EFAULT : ret;
	int lvl = -1;
	int k = host_lookup(e, v->mm, vmaddr, &lvl, NULL, NULL, NULL);
	if (k == E_LEAF && lvl <= SEG)
		return -EFAULT; /* large pmds/puds cannot be handled (allow_gmap_hpage_1m is not modelled) */
	if (lvl < SEG)
		return -EAGAIN; /* the host table vanished since the fault: retry */
	if (f->kind(SEG, entry_get(e, st, sidx)) != E_EMPTY)
		return 0;
	uint64_t hseg = host_entry_at(e, v->mm, vmaddr, SEG, NULL, NULL);
	if (f->kind(SEG, hseg) != E_TABLE)
		return -EAGAIN;
	for (int i = 0; i < v->nlinks; i++)
		if (v->links[i].vmaddr == vmaddr)
			return -EEXIST; /* radix_tree_insert(&gmap->host_to_guest, vmaddr >> PMD_SHIFT, table) */
	ret = link_add(v, gaddr, vmaddr);
	if (ret)
		return ret;
	entry_write(e, st, SEG, sidx, hseg);
	e->gmap_dirty = true;
	emit(e, EV_GMAP_LINK, gaddr, vmaddr, f->addr(SEG, hseg), (uint64_t)(v - e->vms));
	return 0;
}

static void gmap_clear_link(struct engine *e, struct vm *v, int i)
{
	struct tref st;
	uint32_t sidx;
	if (gmap_table_walk(e, v, v->links[i].gaddr, false, &st, &sidx) == 0)
		entry_write(e, st, SEG, sidx, e->geom.fmt->empty(SEG));
	emit(e, EV_GMAP_UNLINK, v->links[i].gaddr, v->links[i].vmaddr, 0, (uint64_t)(v - e->vms));
	v->links[i] = v->links[--v->nlinks];
}

/* __gmap_unlink_by_vmaddr: host_to_guest[vmaddr] goes, and the guest segment entry it named is emptied,
 * whichever guest segment that is. */
static void gmap_unlink_by_vmaddr(struct engine *e, struct vm *v, uint64_t vmaddr)
{
	for (int i = v->nlinks - 1; i >= 0; i--)
		if (v->links[i].vmaddr == vmaddr)
			gmap_clear_link(e, v, i);
}

/* gmap_unlink: every gmap of the mm forgets the segment whose host table goes away. */
void gmap_unlink(struct engine *e, int mm, struct tref t, uint64_t vmaddr)
{
	(void)t;
	vmaddr &= ~(SEG_SIZE - 1);
	for (int vi = 0; vi < MAX_VMS; vi++) {
		struct vm *v = &e->vms[vi];
		if (v->used && v->mm == mm)
			gmap_unlink_by_vmaddr(e, v, vmaddr);
	}
}

/* ---- guest_to_host: the per-VM guest -> host segment map of gmap_map_segment, kept as ranges ---- */

/* __gmap_unmap_by_gaddr for every segment of [to, to + len): guest_to_host forgets it, and the host segment it
 * named is unlinked by vmaddr (__gmap_unlink_by_vmaddr), even when another guest segment holds that link. A range
 * cut out of the middle of an extent leaves two; -ENOMEM (nothing changed) when there is no room for that. */
static int g2h_remove(struct engine *e, struct vm *v, uint64_t to, uint64_t len)
{
	uint64_t end = to + len;
	for (int i = 0; i < v->ng2h; i++) {
		struct gmap_g2h x = v->g2h[i];
		if (x.gaddr < to && x.gaddr + x.len > end && v->ng2h == MAX_G2H)
			return -ENOMEM;
	}
	for (int i = v->ng2h - 1; i >= 0; i--) {
		struct gmap_g2h x = v->g2h[i];
		uint64_t lo = x.gaddr > to ? x.gaddr : to, hi = x.gaddr + x.len < end ? x.gaddr + x.len : end;
		if (lo >= hi)
			continue;
		for (int l = v->nlinks - 1; l >= 0; l--) {
			uint64_t h = v->links[l].vmaddr;
			if (h >= x.vmaddr + (lo - x.gaddr) && h < x.vmaddr + (hi - x.gaddr))
				gmap_clear_link(e, v, l); /* moves the last link, already looked at, to l */
		}
		v->g2h[i] = v->g2h[--v->ng2h];
		if (x.gaddr < lo)
			v->g2h[v->ng2h++] = (struct gmap_g2h){ x.gaddr, x.vmaddr, lo - x.gaddr };
		if (hi < x.gaddr + x.len)
			v->g2h[v->ng2h++] = (struct gmap_g2h){ hi, x.vmaddr + (hi - x.gaddr), x.gaddr + x.len - hi };
	}
	return 0;
}

/* gmap_unmap_segment */
int gmap_unmap_segment(struct engine *e, struct vm *v, uint64_t to, uint64_t len)
{
	if ((to | len) & (SEG_SIZE - 1))
		return -EINVAL;
	if (len == 0 || to + len < to)
		return -EINVAL;
	return g2h_remove(e, v, to, len);
}

/* gmap_map_segment: the old translations of [to, to + len) go (and their links), then the new ones; -EINVAL
 * unless from, to and len are 1 MiB aligned and both ranges fit (TASK_SIZE_MAX, asce_end). */
int gmap_map_segment(struct engine *e, struct vm *v, uint64_t from, uint64_t to, uint64_t len)
{
	if ((from | to | len) & (SEG_SIZE - 1))
		return -EINVAL;
	if (len == 0 || from + len < from || to + len < to || from + len - 1 > e->task_size ||
	    to + len - 1 > v->asce_end)
		return -EINVAL;
	int ret = g2h_remove(e, v, to, len);
	if (!ret && v->ng2h == MAX_G2H)
		ret = -ENOMEM; /* radix_tree_insert failed: gmap_unmap_segment(to, len), -ENOMEM */
	if (ret)
		return ret;
	v->g2h[v->ng2h++] = (struct gmap_g2h){ to, from, len };
	return 0;
}

/* __gmap_translate: "vmaddr = radix_tree_lookup(&gmap->guest_to_host, gaddr >> PMD_SHIFT); return vmaddr ?
 * (vmaddr | (gaddr & ~PMD_MASK)) : -EFAULT;". A segment that gmap_map_segment stored for host address 0 (a memslot
 * at userspace_addr 0: radix_tree_insert stores the NULL item and succeeds) reads back as NULL: -EFAULT, as where
 * there is no segment. Nothing can link host segment 0 then, so guest_to_host's other users need no such case. */
int __gmap_translate(const struct vm *v, uint64_t gaddr, uint64_t *vmaddr)
{
	for (int i = 0; i < v->ng2h; i++)
		if (gaddr >= v->g2h[i].gaddr && gaddr - v->g2h[i].gaddr < v->g2h[i].len) {
			*vmaddr = v->g2h[i].vmaddr + (gaddr - v->g2h[i].gaddr);
			return *vmaddr < SEG_SIZE ? -EFAULT : 0;
		}
	return -EFAULT;
}

static int gmap_free_visit(struct walk_ctx *ctx, unsigned visit)
{
	(void)visit;
	struct engine *e = ctx->e;
	struct tref t = tref_from_phys(e, e->geom.fmt->addr(ctx->level, ctx->old));
	entry_write(e, ctx->tbl, ctx->level, ctx->idx, e->geom.fmt->empty(ctx->level));
	table_free(e, t, TABLE_FREE_NOW, child_level(ctx->g, ctx->level), -1);
	return 0;
}

/* gmap_remove: the gmap's own tables (crst_list) are freed at once, as gmap_free does, with both radix trees. */
void gmap_destroy(struct engine *e, struct vm *v)
{
	while (v->nlinks)
		gmap_clear_link(e, v, v->nlinks - 1);
	v->ng2h = 0;
	struct walker w = { gmap_free_visit, NULL, WALK_TABLE_POST | WALK_SKIP_EMPTY, 0 };
	pt_walk(e, &v->s2, &v->geom, 0, ~0ull, &w);
	table_free(e, v->s2.root, TABLE_FREE_NOW, v->s2.top, -1);
	v->s2.root = TREF_NONE;
	free(v->links);
	v->links = NULL;
	v->nlinks = v->caplinks = 0;
}

/* The gmap oracle: each linked guest segment shares the host's current table for its segment. */
int gmap_check(struct engine *e)
{
	const struct entry_fmt *f = e->geom.fmt;
	for (int vi = 0; vi < MAX_VMS; vi++) {
		struct vm *v = &e->vms[vi];
		if (!v->used)
			continue;
		for (int i = 0; i < v->nlinks; i++) {
			struct tref st;
			uint32_t sidx;
			if (gmap_table_walk(e, v, v->links[i].gaddr, false, &st, &sidx))
				continue;
			uint64_t ge = entry_get(e, st, sidx);
			if (f->kind(SEG, ge) != E_TABLE)
				continue;
			struct tref gt = tref_from_phys(e, f->addr(SEG, ge));
			struct block *b = gt.blk >= 0 ? &e->blocks[gt.blk] : NULL;
			bool live = b && b->used && b->half[gt.half] == H_ALLOC;
			struct tref ht = TREF_NONE;
			uint32_t hidx;
			int lvl = -1;
			int k = e->mms[v->mm].used && !e->mms[v->mm].dead ?
				host_lookup(e, v->mm, v->links[i].vmaddr, &lvl, NULL, &ht, &hidx) : E_EMPTY;
			(void)k;
			bool same = lvl == PTE && ht.blk == gt.blk && ht.half == gt.half;
			if (!live || !same) {
				violate_at(e, V_GMAP_DANGLING, &(struct viol_focus){ .has = VF_VM | VF_GPA | VF_TABLE | VF_HVA, .vm = vi,
				   .gpa = v->links[i].gaddr, .table = tref_phys(gt), .hva = v->links[i].vmaddr },
				   "vm %d guest segment 0x%llx points at page table 0x%llx, "
					"which %s the host's table for hva 0x%llx", vi,
					(unsigned long long)v->links[i].gaddr, (unsigned long long)tref_phys(gt),
					live ? "is no longer" : "has been freed and is not",
					(unsigned long long)v->links[i].vmaddr);
				return -1;
			}
		}
	}
	return 0;
}
