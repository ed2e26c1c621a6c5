/* core/rcu.c: read-side sections per cpu, callbacks and grace periods. A callback runs through the arch's
 * handler table (mm_ops.rcu_callback, by kind), as call_rcu runs the function it was given: rcu.c calls
 * neither the pool nor the arch code. */
#include <stdlib.h>
#include "ptf.h"

void rcu_enter(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->rcu_nest++ == 0)
		c->section = ++e->next_section;
}

void rcu_exit(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->rcu_nest > 0)
		c->rcu_nest--;
}

void call_rcu_table(struct engine *e, enum cb_kind kind, int32_t blk, int half)
{
	if (e->ncbs == e->capcbs) {
		size_t n = e->capcbs ? e->capcbs * 2 : 64;
		struct rcu_cb *p = realloc(e->cbs, n * sizeof(*p));
		if (!p) {
			violate(e, V_ENGINE_ASSERT, "out of memory queueing an RCU callback");
			return;
		}
		e->cbs = p;
		e->capcbs = n;
	}
	struct rcu_cb *cb = &e->cbs[e->ncbs++];
	cb->kind = kind;
	cb->blk = blk;
	cb->half = (uint8_t)half;
	for (int i = 0; i < MAX_CPUS; i++)
		cb->wait_section[i] = e->cpus[i].rcu_nest ? e->cpus[i].section : 0;
	e->st.rcu_callbacks++;
	emit(e, EV_TABLE_RCU, tref_phys((struct tref){ blk, (uint8_t)half, 0 }), kind, 0, 0);
}

static bool cb_ready(struct engine *e, const struct rcu_cb *cb)
{
	for (int i = 0; i < MAX_CPUS; i++)
		if (cb->wait_section[i] && e->cpus[i].rcu_nest &&
		    e->cpus[i].section == cb->wait_section[i])
			return false;
	return true;
}

static void cb_run(struct engine *e, const struct rcu_cb *cb)
{
	emit(e, EV_RCU_RUN, tref_phys((struct tref){ cb->blk, cb->half, 0 }), cb->kind, 0, 0);
	e->mm_ops->rcu_callback[cb->kind](e, cb->blk, cb->half);
}

/* A grace period: callbacks whose readers have all left their sections run, in queue order. */
void rcu_gp(struct engine *e, bool drain)
{
	size_t keep = 0, n = e->ncbs;
	struct rcu_cb *ready = malloc((n ? n : 1) * sizeof(*ready));
	size_t nready = 0;
	if (!ready) {
		violate(e, V_ENGINE_ASSERT, "out of memory running RCU callbacks");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (drain || cb_ready(e, &e->cbs[i]))
			ready[nready++] = e->cbs[i];
		else
			e->cbs[keep++] = e->cbs[i];
	}
	e->ncbs = keep;
	for (size_t i = 0; i < nready && !e->viol; i++)
		cb_run(e, &ready[i]);
	free(ready);
}
