/* oracle/audit.c: the end-of-trace audit (a walk recounts what the counters say) and the figures the
 * crosscheck driver reads. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

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
			violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_MM, .mm = mm },
				"mm %d counts %llu page-table bytes and %llu PMD leaves, its tables "
				"hold %llu and %llu", mm, (unsigned long long)m->pt_bytes,
				(unsigned long long)m->pmd_leaves, (unsigned long long)a.bytes,
				(unsigned long long)a.leaves);
	}
}

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
