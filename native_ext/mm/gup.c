/* mm/gup.c: GUP-fast (lockless_pages_from_mm) as an interleavable walker: begin under local_irq_save (an RCU
 * reader), one table level per step, end (engine.c decodes its operations). */
#include "ptf.h"
#include "mm/internal.h"

int walk_begin(struct engine *e, int cpu, uint64_t pid, uint64_t addr)
{
	int ret = idle_cpu(e, cpu);
	if (ret)
		return ret;
	if (pid >= MAX_PIDS || !e->procs[pid].exists)
		return -ESRCH;
	struct cpu *c = &e->cpus[cpu];
	int mm = e->procs[pid].mm;
	if (addr >= e->task_size)
		return -EFAULT;
	/* gup_fast_permitted (s390: below asce_limit); else the kernel's slow path, which the walker does not have */
	if (e->mm_ops->gup_fast_permitted && !e->mm_ops->gup_fast_permitted(e, mm, addr))
		return -EFAULT;
	rcu_enter(e, cpu); /* local_irq_save: GUP-fast is an RCU reader */
	mmgrab(e, mm);
	c->actor = A_WALK;
	c->mm = mm;
	c->addr = addr;
	c->level = e->mms[mm].pgt.top;
	c->tbl = e->mms[mm].pgt.root;
	c->walk_done = false;
	c->pmd_tbl = TREF_NONE;
	c->pmd_idx = 0;
	c->pmd_seen = 0;
	c->pfn = 0;
	return 0;
}

int walk_step(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_WALK)
		return -EINVAL;
	if (c->walk_done)
		return -ENOENT;
	const struct geom *g = &e->geom;
	uint64_t *mem = tref_deref(e, c->tbl, "GUP-fast walker");
	if (!mem)
		return 0;
	const struct level_geom *lv = &g->lv[c->level];
	uint64_t ent = mem[(c->addr >> lv->shift) & (lv->entries - 1)];
	if (c->level < g->nlevels - 1 && g->fmt->kind(c->level, ent) == E_TABLE) {
		if (c->level == e->pmd_lvl) { /* gup_pmd_range's pmd = pmdp_get_lockless(pmdp), for the recheck */
			c->pmd_tbl = c->tbl;
			c->pmd_idx = (uint32_t)((c->addr >> lv->shift) & (lv->entries - 1));
			c->pmd_seen = ent;
		}
		c->tbl = tref_from_phys(e, g->fmt->addr(c->level, ent));
		c->level = child_level(g, c->level);
	} else {
		c->walk_done = true;
	}
	return 0;
}

/* walk_pin: the walker goes down to its PTE table (the steps it has not taken yet), reads the pte and grabs the page
 * it maps (gup_pte_range: try_grab_folio), then rechecks: the pte
 * (pte_val(pte) != pte_val(*ptep): read and grabbed in this one operation, it cannot differ) and, since 70cbc3cc78a9
 * (gup.fast_pmd_recheck=yes), the pmd it walked through (pmd_val(pmd) != pmd_val(*pmdp)): on a change the page is
 * put back and GUP-fast fails (-11, the slow path's business); with no page to grab it fails (-14). A failure grabs
 * nothing, so the walker stays as if it had not read the pte yet (the kernel's returns; its later read is this
 * walker's, as a slower one's would be). The grab lasts until walk_end. */
int walk_pin(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	const struct geom *g = &e->geom;
	int pl = pte_level(e);
	if (c->actor != A_WALK || c->pfn)
		return -EINVAL;
	while (c->level != pl && !c->walk_done && !e->viol)
		walk_step(e, cpu);
	if (e->viol)
		return 0;
	int ret = 0;
	uint64_t *mem = c->level == pl && c->pmd_tbl.blk >= 0 ? tref_deref(e, c->tbl, "GUP-fast walker") : NULL;
	if (e->viol)
		return 0;
	uint64_t pte = mem ? mem[(c->addr >> g->lv[pl].shift) & (g->lv[pl].entries - 1)] : 0;
	if (!mem || g->fmt->kind(pl, pte) != E_LEAF || !data_lookup(e, g->fmt->addr(pl, pte) >> 12)) {
		ret = -EFAULT; /* a PMD leaf or nothing above the PTEs, an empty pte, the zero page: not this path's */
	} else if (e->knob[K_GUP_FAST_PMD_RECHECK] == 0) {
		uint64_t *pmd = tref_deref(e, c->pmd_tbl, "GUP-fast walker");
		if (!pmd)
			return 0;
		if (pmd[c->pmd_idx] != c->pmd_seen)
			ret = -EAGAIN; /* gup_put_folio: the pmd changed under the walker */
	}
	if (ret) /* nothing grabbed: as if the walker had not read the pte yet (it stays; walk_end ends it) */
		return ret;
	c->pfn = g->fmt->addr(pl, pte) >> 12;
	return 0;
}

void actor_end(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	c->pfn = 0; /* walk_end: the caller is done with the pages it grabbed */
	rcu_exit(e, cpu);
	mmdrop(e, c->mm);
	c->actor = A_NONE;
}
