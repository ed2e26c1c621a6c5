/* search/check.h: the bounded model checker's state (check.c), shared with its Python binding (pyengine.c). */
#ifndef PTF_CHECK_H
#define PTF_CHECK_H

#include "ptf.h"

#define CHECK_MAX_DEPTH 64
#define CHECK_MAX_ALPHABET 65535

enum check_status { CHECK_RUNNING, CHECK_VIOLATION, CHECK_EXHAUSTED, CHECK_FULL };

struct checker {
	/* the run: set by the caller before checker_init */
	enum arch arch;
	int knobs[K_NR];
	uint64_t config[CONFIG_NR];
	const uint8_t *const *elfs;
	const size_t *elf_lens;
	int nelfs;
	const uint64_t *alpha; /* nalpha operations of OP_ARGS + 1 words */
	int nalpha;
	int max_depth;
	int groups[3][2];      /* interchangeable pids, cpus, vms: [lo, hi) each (digest.c, symmetry) */
	bool use_groups;
	bool finish;           /* the teardown verdict of every new state */
	uint64_t max_states;   /* 0: no bound; else stop (CHECK_FULL) at this many distinct states */
	bool same_test;        /* ptf_same before each digest (checker_init: on unless PTFUZZ_CHECK_SAME=0) */
	bool noop_test;        /* ptf_noop before each step (checker_init: on unless PTFUZZ_CHECK_NOOP=0) */

	/* the search */
	struct engine *root, *snap, *work, *parent_state;
	uint32_t cached_parent;
	struct digest_scratch ds;
	uint64_t *seen;
	size_t seen_cap, seen_n;
	uint32_t *parent;
	uint16_t *op;
	size_t nnodes, capnodes;
	size_t layer_lo, layer_hi, cursor; /* the layer being expanded; the next one grows after it */
	int depth;                         /* the depth of the states being expanded */
	int done_depth;                    /* every sequence of at most this many operations is checked */
	bool fixpoint;                     /* a layer added no new state: longer sequences reach nothing new */
	uint64_t generated, distinct, replays;
	uint64_t blocked; /* generated steps that would have waited for a lock (changed nothing) */
	enum check_status status;

	/* the first violation: its path (alphabet indices) and what the engine said */
	uint16_t vpath[CHECK_MAX_DEPTH + 1];
	int vlen;
	int vkind;
	uint32_t vop;
	bool vteardown;
	char vmsg[256];
};

/* snap.c: true when two states are the same (equal digests, the same future): a cheaper test than two
 * digests for a step that changed nothing */
bool ptf_same(const struct engine *a, const struct engine *b);

int checker_init(struct checker *k);
int checker_run(struct checker *k, double seconds);
void checker_fini(struct checker *k);

#endif
