/* search/lvl.c: one worker of ptfuzz check's level-synchronous search (--jobs, --shard, --por).
 *
 * check.c is the one-process search. This is the same breadth-first search cut into levels, so that N
 * processes can share it: the states of each level (and the set of digests seen) are partitioned by digest
 * (owner = a hash of the digest mod N). Each level, every worker
 *   1. rebuilds each of its frontier states (a stack of engines, one per depth: the frontier is sorted by
 *      path, so consecutive states share all but their last operation and a rebuild is one copy and one
 *      step), and
 *   2. steps every alphabet operation from it, digests the successor and, unless the digest is its
 *      parent's, one this worker already knows (owned and seen, or sent at an earlier level) or one it
 *      already sent this level, appends (digest, path) to the buffer of the digest's owner and gives the
 *      successor its end-of-trace verdict (teardown), as check.c gives it to a new state;
 *   3. writes each buffer to its owner (lvl_write: a file the driver names), and then
 *   4. merges what every worker sent it (lvl_merge): digests it has seen are dropped, and of the paths
 *      that reach a new digest the lexicographically least is kept. The new states, sorted by path, are
 *      the next level.
 * The driver (ptfuzz/search/parallel.py) runs the levels and decides, between them, what was found.
 *
 * Why the result is the one-process search's: check.c stores each state under the first path that
 * reaches it, parents in order and operations in alphabet order, which is the lexicographically least
 * shortest path; here every worker sends the least of its own paths (it expands in path order) and the
 * owner keeps the least of those, so every state has the same path, the same depth and the same teardown
 * verdict, and the set of states of each level is the same (distinct counts agree). The first violation
 * is also the same one: check.c meets violations in path order (a step's, or the teardown's of a new state
 * at its least path); each worker stops at its first, which is its least, and the driver takes the least
 * of those. A state two workers send gets two teardowns; the verdict is the state's, so they agree.
 *
 * --por prunes, at a state reached by operation x, every operation a with key[a] < key[x] that is
 * independent of x (indep[a][x]): the sequence ... a x reaches what ... x a reaches, and is explored.
 * docs/check.md argues why this keeps every state at its depth (so verdicts, shortest lengths and
 * distinct counts are unchanged) and which operations are independent.
 *
 * Called from Python through ctypes (the symbols below are the only ones this file exports). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "ptf.h"
#include "search/check.h"
#include "search/lvl.h"


/* digest sets and maps: open addressing, 0 is the empty slot (digests are never 0: see norm) */
struct dmap {
	uint64_t *key;
	uint32_t *val; /* NULL for a set */
	size_t cap, n;
	bool vals;
};

static inline uint64_t norm(uint64_t d)
{
	return d ? d : 1;
}

static inline size_t slot_of(uint64_t d, size_t cap)
{
	return (size_t)(d * 0x9e3779b97f4a7c15ull >> 17) & (cap - 1);
}

static int dmap_grow(struct dmap *m)
{
	size_t cap = m->cap ? m->cap * 2 : 1 << 12;
	uint64_t *k = calloc(cap, sizeof(*k));
	uint32_t *v = m->vals ? malloc(cap * sizeof(*v)) : NULL;
	if (!k || (m->vals && !v)) {
		free(k);
		free(v);
		return -ENOMEM;
	}
	for (size_t i = 0; i < m->cap; i++) {
		if (!m->key[i])
			continue;
		size_t j = slot_of(m->key[i], cap);
		while (k[j])
			j = (j + 1) & (cap - 1);
		k[j] = m->key[i];
		if (v)
			v[j] = m->val[i];
	}
	free(m->key);
	free(m->val);
	m->key = k;
	m->val = v;
	m->cap = cap;
	return 0;
}

/* the slot of d: holding d, or the empty one where it would go */
static inline size_t dmap_slot(const struct dmap *m, uint64_t d)
{
	size_t j = slot_of(d, m->cap);
	while (m->key[j] && m->key[j] != d)
		j = (j + 1) & (m->cap - 1);
	return j;
}

static inline bool dmap_has(const struct dmap *m, uint64_t d)
{
	return m->cap && m->key[dmap_slot(m, d)] == d;
}

/* 1: inserted, 0: there already (*val its value), <0 ENOMEM */
static int dmap_put(struct dmap *m, uint64_t d, uint32_t v, uint32_t *old)
{
	if (2 * (m->n + 1) > m->cap && dmap_grow(m))
		return -ENOMEM;
	size_t j = dmap_slot(m, d);
	if (m->key[j] == d) {
		if (old && m->vals)
			*old = m->val[j];
		return 0;
	}
	m->key[j] = d;
	if (m->vals)
		m->val[j] = v;
	m->n++;
	return 1;
}

static inline void dmap_set(struct dmap *m, uint64_t d, uint32_t v)
{
	m->val[dmap_slot(m, d)] = v;
}

static void dmap_clear(struct dmap *m)
{
	if (m->key)
		memset(m->key, 0, m->cap * sizeof(*m->key));
	m->n = 0;
}

static void dmap_free(struct dmap *m)
{
	free(m->key);
	free(m->val);
	m->key = NULL;
	m->val = NULL;
	m->cap = m->n = 0;
}

struct buf {
	uint8_t *p;
	size_t n, cap;
};

static int buf_add(struct buf *b, const void *src, size_t n)
{
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 1 << 16;
		while (cap < b->n + n)
			cap *= 2;
		uint8_t *p = realloc(b->p, cap);
		if (!p)
			return -ENOMEM;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, src, n);
	b->n += n;
	return 0;
}

struct lvl {
	enum arch arch;
	int knobs[K_NR];
	uint64_t config[CONFIG_NR];
	const uint8_t *const *elfs;
	const size_t *elf_lens;
	int nelfs;
	const uint64_t *alpha;
	int nalpha;
	int groups[3][2];
	bool use_groups, finish;
	bool same_test; /* ptf_same before the digest (PTFUZZ_CHECK_SAME=0 turns it off: bench B8's "before") */
	bool noop_test; /* ptf_noop before the step (PTFUZZ_CHECK_NOOP=0 turns it off: bench B8's "before") */
	int nw, self;
	const uint16_t *key;  /* --por: the order operations commute into, and */
	const uint8_t *indep; /* nalpha x nalpha: 1 where two operations are independent */

	struct engine *stack[CHECK_MAX_DEPTH + 1]; /* stack[i]: the state after cur[0..i-1], i <= valid */
	uint16_t cur[CHECK_MAX_DEPTH + 1];
	int valid;
	struct engine *work;
	struct digest_scratch ds;
	struct dmap known; /* owned digests seen, and digests sent at earlier levels */
	struct dmap sent;  /* this level's digests sent (value: unused) */
	struct dmap cand;  /* lvl_merge: new digest -> candidate index */

	int k;          /* the frontier's depth */
	size_t fn;      /* its states: digests and paths (k each), sorted by path */
	uint64_t *fdig;
	uint16_t *fpath;
	struct buf *out; /* one per owner: records of (digest, path of k + 1) */

	uint64_t generated, blocked, emitted, pruned, teardowns, unchanged;
	volatile uint64_t *progress; /* generated, for the driver's progress line (shared memory) */

	/* this pass's first violation: in a step of depth k + 1 or at the teardown of a state it reached (or, at
	 * depth 0, the initial state's teardown) */
	int v_kind, v_len;
	bool v_teardown;
	uint32_t v_op;
	uint16_t v_path[CHECK_MAX_DEPTH + 1];
	char v_msg[256];
};

static void found(struct lvl *L, const uint16_t *p, int a, bool teardown)
{
	memcpy(L->v_path, p, (size_t)L->k * 2);
	L->v_len = L->k;
	if (a >= 0)
		L->v_path[L->v_len++] = (uint16_t)a;
	L->v_kind = L->work->viol;
	L->v_op = L->work->viol_op;
	L->v_teardown = teardown;
	memcpy(L->v_msg, L->work->viol_msg, sizeof(L->v_msg));
}

static uint64_t mix(uint64_t d, uint64_t salt)
{
	d ^= salt;
	d ^= d >> 31;
	d *= 0xbf58476d1ce4e5b9ull;
	d ^= d >> 29;
	d *= 0x94d049bb133111ebull;
	return d ^ (d >> 32);
}

/* which worker owns a digest, and which of N shards a state belongs to (independent hashes) */
static inline int owner_of(const struct lvl *L, uint64_t d)
{
	return L->nw == 1 ? 0 : (int)(mix(d, 0x5851f42d4c957f2dull) % (uint64_t)L->nw);
}

int lvl_shard_of(uint64_t d, int n)
{
	return (int)(mix(norm(d), 0x2545f4914f6cdd1dull) % (uint64_t)n);
}

static int engine_new(struct lvl *L, struct engine **out)
{
	struct engine *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	int ret = ptf_init(e, L->arch, L->knobs, L->config);
	e->elfs = L->elfs;
	e->elf_lens = L->elf_lens;
	e->nelfs = L->nelfs;
	*out = e;
	return ret;
}

static int digest(struct lvl *L, struct engine *e, uint64_t *out)
{
	int ret = ptf_digest_sym(e, &L->ds, L->use_groups ? (const int (*)[2])L->groups : NULL, out);
	*out = norm(*out);
	return ret;
}

static inline const uint64_t *op_of(const struct lvl *L, int a)
{
	return &L->alpha[(size_t)a * (OP_ARGS + 1)];
}

void lvl_free(struct lvl *L)
{
	if (!L)
		return;
	for (int i = 0; i <= CHECK_MAX_DEPTH; i++)
		if (L->stack[i]) {
			ptf_fini(L->stack[i]);
			free(L->stack[i]);
		}
	if (L->work) {
		ptf_fini(L->work);
		free(L->work);
	}
	digest_scratch_free(&L->ds);
	dmap_free(&L->known);
	dmap_free(&L->sent);
	dmap_free(&L->cand);
	free(L->fdig);
	free(L->fpath);
	if (L->out)
		for (int i = 0; i < L->nw; i++)
			free(L->out[i].p);
	free(L->out);
	free(L);
}

/* A worker. The arrays passed in (knobs, config, elfs, alpha, groups, key, indep) must outlive it.
 * groups: 6 ints or NULL; key and indep: NULL without --por. Worker `self` of nw starts with the initial
 * state in its frontier if it owns its digest. */
struct lvl *lvl_new(int arch, const int *knobs, const uint64_t *config, const uint8_t *const *elfs,
			    const size_t *elf_lens, int nelfs, const uint64_t *alpha, int nalpha, const int *groups,
			    int finish, int nw, int self, const uint16_t *key, const uint8_t *indep,
			    volatile uint64_t *progress)
{
	if (nw < 1 || self < 0 || self >= nw || nalpha < 1 || nalpha > CHECK_MAX_ALPHABET)
		return NULL;
	struct lvl *L = calloc(1, sizeof(*L));
	if (!L)
		return NULL;
	L->arch = (enum arch)arch;
	memcpy(L->knobs, knobs, sizeof(L->knobs));
	memcpy(L->config, config, sizeof(L->config));
	L->elfs = elfs;
	L->elf_lens = elf_lens;
	L->nelfs = nelfs;
	L->alpha = alpha;
	L->nalpha = nalpha;
	if (groups) {
		memcpy(L->groups, groups, sizeof(L->groups));
		L->use_groups = true;
	}
	L->finish = finish;
	L->nw = nw;
	L->self = self;
	L->key = key;
	L->indep = key ? indep : NULL;
	L->progress = progress;
	L->sent.vals = false;
	const char *env = getenv("PTFUZZ_CHECK_SAME");
	L->same_test = !env || strcmp(env, "0");
	env = getenv("PTFUZZ_CHECK_NOOP");
	L->noop_test = !env || strcmp(env, "0");
	L->cand.vals = true;
	uint64_t d;
	if (!(L->out = calloc((size_t)nw, sizeof(*L->out))) || engine_new(L, &L->stack[0]) || engine_new(L, &L->work) ||
	    digest(L, L->stack[0], &d)) {
		lvl_free(L);
		return NULL;
	}
	L->valid = 0;
	L->k = 0;
	if (owner_of(L, d) == self) {
		/* the initial state's path is empty, but held in a buffer like any other (never a NULL to memcpy) */
		if (!(L->fdig = malloc(sizeof(*L->fdig))) || !(L->fpath = malloc(sizeof(*L->fpath))) ||
		    dmap_put(&L->known, d, 0, NULL) < 0) {
			lvl_free(L);
			return NULL;
		}
		L->fdig[0] = d;
		L->fn = 1;
	}
	return L;
}

/* Make stack[k] the state after path p (k operations), reusing the prefix it shares with the last one. */
static int rebuild(struct lvl *L, const uint16_t *p, int k)
{
	int l = 0;
	while (l < L->valid && l < k && L->cur[l] == p[l])
		l++;
	for (int j = l; j < k; j++) {
		int ret;
		if (!L->stack[j + 1] && (ret = engine_new(L, &L->stack[j + 1])))
			return ret;
		if ((ret = ptf_copy(L->stack[j + 1], L->stack[j])))
			return ret;
		L->stack[j + 1]->op_index = (uint32_t)j;
		ptf_step(L->stack[j + 1], op_of(L, p[j]));
		L->cur[j] = p[j];
	}
	L->valid = k;
	return 0;
}

/* --por's conditional rule (POR_APART in indep, docs/check.md "State-dependent independence"): two operations of
 * pids p1 != p2 that touch only their own process (mmap, munmap, madvise, fault, split: por.py's PID_LOCAL) commute
 * from a state where nothing links the two processes. Each then reads and writes only its own mm, its VMAs, tables
 * and data pages, the pool's free list head and page count, the data pfn counter and the anon_vma and file
 * identity counters (all renamed by the digest, and allocation order is all they differ in), and appends RCU
 * callbacks (the caller checks that the later one appended none). Links that would let one see the other:
 * - one mm (no: a process has its own after exec or fork; CLONE_VM does not exist here), or a fork child still
 *   pending (a window: excluded below);
 * - a window on any cpu, armed or held (A_INVAL, A_FRAG, A_COLLAPSE): an armed one stops whichever operation
 *   reaches it first, whatever its pid (mmu_notifier.c, khugepaged.c), and a held one holds locks and mm
 *   references of the operation it stopped. The other actors are fine: a walker, an rmap walker or a guest fault
 *   in flight is changed only by its own cpu's operations and by those of its own mm or VM (a table or page of
 *   that mm freed, the VM's invalidate_seq bumped), and an operation that waits for one (a lock it holds, IRQs
 *   off) waits alike in either order, since the other process's operation does not change the actor;
 * - a VM is not a link: the mmu notifiers reach only the VMs on the mm that changes (kvm_main.c, v->mm == mm),
 *   and a VM's tables are its own (pool allocation order aside, which the digest renames);
 * - shared memory (a shmem VMA in either mm): the page cache is one object, and MADV_COLLAPSE's retract and
 *   try_to_unmap walk every mm that maps it (khugepaged.c rmap_next);
 * - a forked anon_vma (the same anon_vma root) or hugetlbfs file in both: COW pages and their mapcounts, which a
 *   write fault and an unmap read (do_wp_page's reuse test);
 * - the pool's capacity: table_alloc fails past max_table_pages, so the second of two allocations could fail in one
 *   order only; a margin far above what one operation allocates keeps both orders clear of it. */
#define POR_POOL_MARGIN 8192

bool lvl_pids_apart(const struct engine *e, uint64_t p1, uint64_t p2)
{
	if (p1 == p2 || p1 >= MAX_PIDS || p2 >= MAX_PIDS)
		return false;
	const struct proc *a = &e->procs[p1], *b = &e->procs[p2];
	if (!a->exists || !b->exists || a->pending || b->pending || a->mm == b->mm || a->mm < 0 || b->mm < 0 ||
	    a->mm >= MAX_MMS || b->mm >= MAX_MMS)
		return false;
	if (e->st.pages_in_use + POR_POOL_MARGIN > e->max_table_pages)
		return false;
	for (int c = 0; c <= MAX_CPUS; c++)
		if (e->cpus[c].actor != A_NONE && e->cpus[c].actor != A_WALK && e->cpus[c].actor != A_RMAP &&
		    e->cpus[c].actor != A_GFAULT)
			return false;
	const struct mm *ma = &e->mms[a->mm], *mb = &e->mms[b->mm];
	for (int i = 0; i < ma->nvma; i++)
		if (ma->vmas[i].shm)
			return false;
	for (int j = 0; j < mb->nvma; j++)
		if (mb->vmas[j].shm)
			return false;
	for (int i = 0; i < ma->nvma; i++) {
		const struct vma *v = &ma->vmas[i];
		for (int j = 0; j < mb->nvma; j++) {
			const struct vma *w = &mb->vmas[j];
			if ((v->anon_root && v->anon_root == w->anon_root) || (v->anon && v->anon == w->anon) ||
			    (v->file && v->file == w->file))
				return false;
		}
	}
	return true;
}

/* The whole POR_APART condition for operations of p1 and p2 tried from q, where u is q after p2's (the one on the
 * stored path): the pids are apart at q, and p2's operation queued no RCU callback (else p1's, if it queues one,
 * would go after it in one order and before it in the other: the queue's order is in the digest). */
bool lvl_por_apart(const struct engine *q, const struct engine *u, uint64_t p1, uint64_t p2)
{
	return u->ncbs == q->ncbs && lvl_pids_apart(q, p1, p2);
}

/* May --por skip operation a at the state reached by last (stack[k], from its parent stack[k - 1])? apart caches,
 * per pid, lvl_pids_apart(parent, pid, last's pid): -1 unknown. */
static bool por_skips(struct lvl *L, int a, int last, int8_t *apart)
{
	if (L->key[a] >= L->key[last])
		return false;
	uint8_t r = L->indep[(size_t)a * (size_t)L->nalpha + (size_t)last];
	if (r != POR_APART)
		return r == POR_ALWAYS;
	uint64_t pa = op_of(L, a)[1], px = op_of(L, last)[1];
	if (pa >= MAX_PIDS)
		return false;
	if (apart[pa] < 0)
		apart[pa] = lvl_por_apart(L->stack[L->k - 1], L->stack[L->k], pa, px);
	return apart[pa];
}

/* One pass over the frontier: teardown verdicts, and (expand) successors into the owners' buffers.
 * Returns 0 or a negative errno; what was found is read with lvl_stats and lvl_violation. */
int lvl_pass(struct lvl *L, int expand)
{
	const int k = L->k;
	const size_t rec = 8 + 2 * (size_t)(k + 1);
	uint8_t r[8 + 2 * (CHECK_MAX_DEPTH + 1)];
	L->v_kind = 0;
	for (int i = 0; i < L->nw; i++)
		L->out[i].n = 0;
	dmap_clear(&L->sent);
	int ret;
	for (size_t i = 0; i < L->fn; i++) {
		const uint16_t *p = &L->fpath[i * (size_t)k];
		struct engine *s;
		if ((ret = rebuild(L, p, k)))
			return ret;
		s = L->stack[k];
		if (L->finish && k == 0) { /* the initial state's verdict; every later state's when it is sent */
			if ((ret = ptf_copy(L->work, s)))
				return ret;
			ptf_finish(L->work, true);
			L->teardowns++;
			if (L->work->viol) {
				found(L, p, -1, true);
				return 0;
			}
		}
		if (!expand)
			continue;
		uint64_t pd = L->fdig[i], d;
		bool dirty = true;
		int last = k ? p[k - 1] : -1;
		int8_t apart[MAX_PIDS];
		memset(apart, -1, sizeof(apart));
		for (int a = 0; a < L->nalpha; a++) {
			if (last >= 0 && L->indep && por_skips(L, a, last, apart)) {
				L->pruned++;
				continue;
			}
			if (L->noop_test && ptf_noop(s, op_of(L, a))) {
				L->generated++; /* decided without a step: it would fail and change nothing */
				L->unchanged++;
				continue;
			}
			if (dirty && (ret = ptf_copy(L->work, s)))
				return ret;
			dirty = false;
			L->work->op_index = (uint32_t)k;
			uint64_t waits = L->work->st.waits;
			ptf_step(L->work, op_of(L, a));
			L->generated++;
			L->blocked += L->work->st.waits != waits;
			if (L->work->viol) {
				found(L, p, a, false);
				return 0; /* every later path of ours is greater */
			}
			if (L->same_test && ptf_same(L->work, s)) {
				L->unchanged++; /* nothing changed: no digest needed, and work still stands for s */
				continue;
			}
			if ((ret = digest(L, L->work, &d)))
				return ret;
			if (d == pd) {
				L->unchanged++;
				continue;
			}
			dirty = true;
			if (dmap_has(&L->known, d))
				continue;
			if ((ret = dmap_put(&L->sent, d, 0, NULL)) <= 0) {
				if (ret < 0)
					return ret;
				continue;
			}
			memcpy(r, &d, 8);
			memcpy(r + 8, p, (size_t)k * 2);
			memcpy(r + 8 + 2 * (size_t)k, &(uint16_t){ (uint16_t)a }, 2);
			if ((ret = buf_add(&L->out[owner_of(L, d)], r, rec)))
				return ret;
			L->emitted++;
			if (L->finish) { /* its end-of-trace verdict, on the copy about to be thrown away */
				ptf_finish(L->work, true);
				L->teardowns++;
				if (L->work->viol) {
					found(L, p, a, true);
					return 0;
				}
			}
		}
		if (L->progress)
			*L->progress = L->generated;
	}
	/* what we sent to others is known from now on (what we own, lvl_merge adds) */
	for (size_t j = 0; j < L->sent.cap; j++) {
		uint64_t d = L->sent.key[j];
		if (d && owner_of(L, d) != L->self && dmap_put(&L->known, d, 0, NULL) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Write the records for owner o to fd. */
int lvl_write(struct lvl *L, int o, int fd)
{
	if (o < 0 || o >= L->nw)
		return -EINVAL;
	return write_all(fd, L->out[o].p, L->out[o].n);
}

static const uint16_t *sort_paths;
static int sort_len;

static int by_path(const void *a, const void *b)
{
	const uint16_t *x = &sort_paths[(size_t)*(const uint32_t *)a * (size_t)sort_len];
	const uint16_t *y = &sort_paths[(size_t)*(const uint32_t *)b * (size_t)sort_len];
	for (int i = 0; i < sort_len; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

static bool path_less(const uint16_t *x, const uint16_t *y, int n)
{
	for (int i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] < y[i];
	return false;
}

struct cands {
	uint64_t *dig;
	uint16_t *path;
	size_t n, cap;
};

/* Read one file of records (paths of len) into the candidates: digests known are dropped, and of two paths
 * to one new digest the least is kept. */
static int cands_read(struct lvl *L, struct cands *c, int fd, int len)
{
	const size_t rec = 8 + 2 * (size_t)len;
	struct stat st;
	if (fstat(fd, &st))
		return -errno;
	size_t size = (size_t)st.st_size, got = 0;
	if (size % rec)
		return -EINVAL;
	uint8_t *data = malloc(size ? size : 1);
	if (!data)
		return -ENOMEM;
	int ret = 0;
	while (got < size) {
		ssize_t n = read(fd, data + got, size - got);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			ret = n < 0 ? -errno : -EIO;
			goto out;
		}
		got += (size_t)n;
	}
	for (size_t off = 0; off < size; off += rec) {
		uint64_t d;
		uint16_t path[CHECK_MAX_DEPTH + 1];
		memcpy(&d, data + off, 8);
		memcpy(path, data + off + 8, 2 * (size_t)len);
		if (dmap_has(&L->known, d))
			continue;
		uint32_t old = 0;
		int put = dmap_put(&L->cand, d, (uint32_t)c->n, &old);
		if (put < 0) {
			ret = -ENOMEM;
			goto out;
		}
		if (put == 0) { /* another worker's path to the same state: keep the least */
			if (path_less(path, &c->path[(size_t)old * len], len))
				memcpy(&c->path[(size_t)old * len], path, 2 * (size_t)len);
			continue;
		}
		if (c->n == c->cap) {
			size_t cap = c->cap ? 2 * c->cap : 1024;
			uint64_t *nd = realloc(c->dig, cap * sizeof(*nd));
			if (nd)
				c->dig = nd;
			uint16_t *np = realloc(c->path, cap * (size_t)len * 2);
			if (np)
				c->path = np;
			if (!nd || !np) {
				ret = -ENOMEM;
				goto out;
			}
			c->cap = cap;
		}
		c->dig[c->n] = d;
		memcpy(&c->path[c->n * (size_t)len], path, 2 * (size_t)len);
		c->n++;
	}
out:
	free(data);
	return ret;
}

/* Merge the records sent to this worker (nfds files of records one longer than the frontier's paths) into
 * the next frontier. Returns the number of new states, or a negative errno. */
long lvl_merge(struct lvl *L, const int *fds, int nfds)
{
	const int len = L->k + 1;
	struct cands c = { 0 };
	uint32_t *order = NULL;
	long ret = 0;
	dmap_clear(&L->cand);
	for (int f = 0; f < nfds && !ret; f++)
		ret = cands_read(L, &c, fds[f], len);
	for (size_t i = 0; i < c.n && !ret; i++)
		if (dmap_put(&L->known, c.dig[i], 0, NULL) < 0)
			ret = -ENOMEM;
	if (ret)
		goto out;
	size_t cn = c.n;
	order = malloc((cn ? cn : 1) * sizeof(*order));
	uint64_t *fdig = malloc((cn ? cn : 1) * sizeof(*fdig));
	uint16_t *fpath = malloc((cn ? cn : 1) * (size_t)len * 2);
	if (!order || !fdig || !fpath) {
		free(fdig);
		free(fpath);
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < cn; i++)
		order[i] = (uint32_t)i;
	sort_paths = c.path;
	sort_len = len;
	qsort(order, cn, sizeof(*order), by_path);
	for (size_t i = 0; i < cn; i++) {
		fdig[i] = c.dig[order[i]];
		memcpy(&fpath[i * (size_t)len], &c.path[(size_t)order[i] * len], 2 * (size_t)len);
	}
	free(L->fdig);
	free(L->fpath);
	L->fdig = fdig;
	L->fpath = fpath;
	L->fn = cn;
	L->k = len;
	ret = (long)cn;
out:
	free(c.dig);
	free(c.path);
	free(order);
	return ret;
}

/* --shard I/N: keep only the frontier states of shard I. Returns how many are kept. */
long lvl_shard_keep(struct lvl *L, int i, int n)
{
	size_t kept = 0;
	for (size_t j = 0; j < L->fn; j++) {
		if (lvl_shard_of(L->fdig[j], n) != i)
			continue;
		L->fdig[kept] = L->fdig[j];
		memmove(&L->fpath[kept * (size_t)L->k], &L->fpath[j * (size_t)L->k], 2 * (size_t)L->k);
		kept++;
	}
	L->fn = kept;
	return (long)kept;
}

/* counters: generated, blocked, emitted, pruned, teardowns, frontier size, depth, known, unchanged */
void lvl_stats(const struct lvl *L, uint64_t out[9])
{
	out[8] = L->unchanged;
	out[0] = L->generated;
	out[1] = L->blocked;
	out[2] = L->emitted;
	out[3] = L->pruned;
	out[4] = L->teardowns;
	out[5] = L->fn;
	out[6] = (uint64_t)L->k;
	out[7] = L->known.n;
}

/* This pass's first violation: returns its kind (0: none), the path, op_index, message and whether it was
 * at teardown into the buffers. */
int lvl_violation(const struct lvl *L, uint16_t *path, int *len, uint32_t *op, char *msg, int *teardown)
{
	if (!L->v_kind)
		return 0;
	memcpy(path, L->v_path, (size_t)L->v_len * 2);
	*len = L->v_len;
	*op = L->v_op;
	*teardown = L->v_teardown;
	memcpy(msg, L->v_msg, 256);
	return L->v_kind;
}
