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
		c->tbl = tref_from_phys(e, g->fmt->addr(c->level, ent));
		c->level = child_level(g, c->level);
	} else {
		c->walk_done = true;
	}
	return 0;
}

void actor_end(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	rcu_exit(e, cpu);
	mmdrop(e, c->mm);
	c->actor = A_NONE;
}
