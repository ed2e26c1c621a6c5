/* search/check.c: ptfuzz check's search, in C: breadth first over every sequence of alphabet operations up to a
 * depth, each state reached once (by its digest), so the first violation found has a shortest trace.
 *
 * Memory: the search keeps no states, only the tree of first discoveries (a parent index and an alphabet
 * index per state, 6 bytes) and the set of digests seen (8 bytes a slot, at most half full). A state is
 * rebuilt when it is expanded: its parent's state is kept from the previous expansion when consecutive
 * nodes share it (they are stored in the order their parents were expanded, so they mostly do), else
 * its path is replayed from the initial state. Each successor then costs one restore (ptf_copy from the
 * expanded state), one step and one digest; a successor whose digest equals its parent's (the operation
 * failed, or changed nothing that matters) needs no restore and no further look.
 *
 * Every new state also gets the end-of-trace treatment (actors abandoned, VMs destroyed, processes
 * exit, RCU drained, the pool audited) on the copy that is about to be thrown away, so that "no
 * violation" means what `ptfuzz replay` means by it: no violation during the operations or at teardown. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ptf.h"
#include "search/check.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int engine_new(struct checker *k, struct engine *e)
{
	int ret = ptf_init(e, k->arch, k->knobs, k->config);
	e->elfs = k->elfs;
	e->elf_lens = k->elf_lens;
	e->nelfs = k->nelfs;
	return ret;
}

/* digests are keys in an open-addressing set; 0 marks an empty slot, so digest 0 is stored as 1 */
static int seen_insert(struct checker *k, uint64_t d)
{
	if (!d)
		d = 1;
	if (2 * (k->seen_n + 1) > k->seen_cap) {
		size_t cap = k->seen_cap ? k->seen_cap * 2 : 1 << 16;
		uint64_t *t = calloc(cap, sizeof(*t));
		if (!t)
			return -ENOMEM;
		for (size_t i = 0; i < k->seen_cap; i++) {
			uint64_t v = k->seen[i];
			if (!v)
				continue;
			size_t j = (size_t)(v * 0x9e3779b97f4a7c15ull >> 17) & (cap - 1);
			while (t[j])
				j = (j + 1) & (cap - 1);
			t[j] = v;
		}
		free(k->seen);
		k->seen = t;
		k->seen_cap = cap;
	}
	size_t j = (size_t)(d * 0x9e3779b97f4a7c15ull >> 17) & (k->seen_cap - 1);
	while (k->seen[j]) {
		if (k->seen[j] == d)
			return 0;
		j = (j + 1) & (k->seen_cap - 1);
	}
	k->seen[j] = d;
	k->seen_n++;
	return 1;
}

static int node_add(struct checker *k, uint32_t parent, uint16_t op)
{
	if (k->nnodes == k->capnodes) {
		size_t cap = k->capnodes ? k->capnodes * 2 : 1 << 16;
		uint32_t *p = realloc(k->parent, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		k->parent = p;
		uint16_t *o = realloc(k->op, cap * sizeof(*o));
		if (!o)
			return -ENOMEM;
		k->op = o;
		k->capnodes = cap;
	}
	k->parent[k->nnodes] = parent;
	k->op[k->nnodes] = op;
	k->nnodes++;
	return 0;
}

static int digest(struct checker *k, struct engine *e, uint64_t *out)
{
	return ptf_digest_sym(e, &k->ds, k->use_groups ? (const int (*)[2])k->groups : NULL, out);
}

/* The alphabet indices from the initial state to node n, into path (returns the length). */
static int node_path(const struct checker *k, uint32_t n, uint16_t *path)
{
	int len = 0;
	for (uint32_t i = n; i != 0; i = k->parent[i])
		path[len++] = k->op[i];
	for (int i = 0; i < len / 2; i++) {
		uint16_t t = path[i];
		path[i] = path[len - 1 - i];
		path[len - 1 - i] = t;
	}
	return len;
}

static void found(struct checker *k, uint32_t node, int op, const struct engine *e, bool teardown)
{
	k->vlen = node_path(k, node, k->vpath);
	if (op >= 0)
		k->vpath[k->vlen++] = (uint16_t)op;
	k->vkind = e->viol;
	k->vop = e->viol_op;
	k->vteardown = teardown;
	memcpy(k->vmsg, e->viol_msg, sizeof(k->vmsg));
	k->status = CHECK_VIOLATION;
}

/* The end-of-trace verdict of the state in e (which it consumes). */
static void teardown_check(struct checker *k, struct engine *e, uint32_t node, int op)
{
	if (!k->finish)
		return;
	ptf_finish(e, true);
	if (e->viol)
		found(k, node, op, e, true);
}

int checker_init(struct checker *k)
{
	k->root = calloc(1, sizeof(struct engine));
	k->snap = calloc(1, sizeof(struct engine));
	k->work = calloc(1, sizeof(struct engine));
	k->parent_state = calloc(1, sizeof(struct engine));
	if (!k->root || !k->snap || !k->work || !k->parent_state)
		return -ENOMEM;
	int ret = engine_new(k, k->root);
	if (ret)
		return ret;
	if ((ret = engine_new(k, k->snap)) || (ret = engine_new(k, k->work)) || (ret = engine_new(k, k->parent_state)))
		return ret;
	k->cached_parent = UINT32_MAX;
	const char *env = getenv("PTFUZZ_CHECK_SAME");
	k->same_test = !env || strcmp(env, "0");
	env = getenv("PTFUZZ_CHECK_NOOP");
	k->noop_test = !env || strcmp(env, "0");
	uint64_t d;
	if ((ret = digest(k, k->root, &d)) || (ret = seen_insert(k, d)) < 0 || (ret = node_add(k, 0, 0)))
		return ret;
	k->distinct = 1;
	k->layer_lo = 0;
	k->layer_hi = 1;
	k->cursor = 0;
	k->depth = 0;
	k->done_depth = 0;
	k->status = CHECK_RUNNING;
	if ((ret = ptf_copy(k->work, k->root)))
		return ret;
	teardown_check(k, k->work, 0, -1);
	if (k->status == CHECK_RUNNING && k->max_depth == 0)
		k->status = CHECK_EXHAUSTED;
	return 0;
}

/* Rebuild node n's state into k->snap. */
static int rebuild(struct checker *k, uint32_t n)
{
	uint32_t p = k->parent[n];
	int ret;
	if (n == 0)
		return ptf_copy(k->snap, k->root);
	if (p != k->cached_parent) {
		/* replay the parent's path from the initial state, and keep it for its other children */
		uint16_t path[CHECK_MAX_DEPTH + 1];
		int len = node_path(k, p, path);
		if ((ret = ptf_copy(k->parent_state, k->root)))
			return ret;
		for (int i = 0; i < len; i++) {
			k->parent_state->op_index = (uint32_t)i;
			ptf_step(k->parent_state, &k->alpha[(size_t)path[i] * (OP_ARGS + 1)]);
		}
		k->replays++;
		k->cached_parent = p;
	}
	if ((ret = ptf_copy(k->snap, k->parent_state)))
		return ret;
	k->snap->op_index = (uint32_t)k->depth - 1;
	ptf_step(k->snap, &k->alpha[(size_t)k->op[n] * (OP_ARGS + 1)]);
	return 0;
}

static int expand(struct checker *k, uint32_t n)
{
	int ret = rebuild(k, n);
	uint64_t pd, d;
	if (ret || (ret = digest(k, k->snap, &pd)))
		return ret;
	bool dirty = true, store = k->depth + 1 < k->max_depth;
	for (int a = 0; a < k->nalpha; a++) {
		if (k->noop_test && ptf_noop(k->snap, &k->alpha[(size_t)a * (OP_ARGS + 1)])) {
			k->generated++; /* decided without a step: it would fail and change nothing */
			continue;
		}
		if (dirty && (ret = ptf_copy(k->work, k->snap)))
			return ret;
		dirty = false;
		k->work->op_index = (uint32_t)k->depth;
		uint64_t waits = k->work->st.waits;
		ptf_step(k->work, &k->alpha[(size_t)a * (OP_ARGS + 1)]);
		k->generated++;
		k->blocked += k->work->st.waits != waits; /* it waited: nothing changed, counted apart */
		if (k->work->viol) {
			found(k, n, a, k->work, false);
			return 0;
		}
		if (k->same_test && ptf_same(k->work, k->snap))
			continue; /* nothing changed (a byte compare, cheaper than a digest): work stands for snap */
		if ((ret = digest(k, k->work, &d)))
			return ret;
		if (d == pd)
			continue; /* nothing that matters changed: work still stands for the parent */
		dirty = true;
		if ((ret = seen_insert(k, d)) <= 0) {
			if (ret < 0)
				return ret;
			continue;
		}
		k->distinct++;
		if (store && (ret = node_add(k, n, (uint16_t)a)))
			return ret;
		teardown_check(k, k->work, n, a);
		if (k->status != CHECK_RUNNING)
			return 0;
	}
	return 0;
}

int checker_run(struct checker *k, double seconds)
{
	double deadline = now() + seconds;
	while (k->status == CHECK_RUNNING) {
		if (k->cursor == k->layer_hi) {
			/* the layer is done: every sequence one longer has been checked */
			k->done_depth = k->depth + 1;
			k->depth++;
			k->layer_lo = k->layer_hi;
			k->layer_hi = k->nnodes;
			k->cursor = k->layer_lo;
			if (k->depth >= k->max_depth || k->layer_lo == k->layer_hi) {
				k->fixpoint = k->layer_lo == k->layer_hi && k->depth < k->max_depth;
				if (k->fixpoint)
					k->done_depth = k->max_depth; /* nothing new can be reached by longer sequences */
				k->status = CHECK_EXHAUSTED;
				break;
			}
		}
		if (k->max_states && k->distinct >= k->max_states) {
			k->status = CHECK_FULL;
			break;
		}
		int ret = expand(k, (uint32_t)k->cursor);
		if (ret)
			return ret;
		if (k->status != CHECK_RUNNING)
			break;
		k->cursor++;
		if (now() >= deadline)
			break;
	}
	return 0;
}

void checker_fini(struct checker *k)
{
	engine_free(k->root);
	engine_free(k->snap);
	engine_free(k->work);
	engine_free(k->parent_state);
	digest_scratch_free(&k->ds);
	free(k->seen);
	free(k->parent);
	free(k->op);
	k->root = k->snap = k->work = k->parent_state = NULL;
	k->seen = NULL;
	k->parent = NULL;
	k->op = NULL;
}
