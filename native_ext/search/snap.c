/* search/snap.c: save and restore of the whole model state (ptfuzz check explores from saved states).
 *
 * ptf_copy(dst, src) makes dst an independent copy of src. The fixed part of struct engine is copied
 * as bytes (in spans: the mm and VM arrays slot by slot, skipping slots unused on both sides, whose
 * fields are dead), so fields added to procs, mms, cpus, vms or the engine are copied without anyone
 * touching this file; only the heap arrays the struct points at are listed here: the table pool
 * (blocks and each block's memory), compounds, RCU callbacks, deposits, each mm's VMAs, each VM's gmap
 * links, each shmem object's blocks and their page arrays, and the --steps events. A new pointer
 * member needs a line here (tests/test_check.py copies, frees the original and runs the copy on, which
 * ASan turns into a report if a pointer is shared).
 *
 * dst's own buffers are reused where they are big enough (a restore in the search loop must not cost a
 * malloc per table), and of a table only the chunks either side wrote are copied (block.occ). On ENOMEM
 * dst is left holding only memory it owns (safe to ptf_fini), not a copy. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "search/check.h"

/* Make buf (capacity *cap elements) hold src's n elements, growing it to at least want. */
static int fill(void **buf, uint64_t *cap, const void *src, uint64_t n, uint64_t want, size_t elem)
{
	if (want < n)
		want = n;
	if (*cap < n || !*buf) {
		void *p = realloc(*buf, (size_t)(want ? want : 1) * elem);
		if (!p)
			return -ENOMEM;
		*buf = p;
		*cap = want ? want : 1;
	}
	if (n)
		memcpy(*buf, src, (size_t)n * elem);
	return 0;
}

/* Tests set this to copy every table word, to hold the occupancy bitmaps to account. */
int ptf_copy_full;

/* Two blocks whose memory was initialised alike (table_alloc's empty entries of one level and format, an
 * s390 PGSTE area zeroed, init_pte_half's empty halves): the words outside their occupancy chunks agree. */
static bool same_initial_words(const struct block *a, const struct block *b)
{
	return a->pages == b->pages && a->frag == b->frag && a->pgste == b->pgste && a->level[0] == b->level[0] &&
	       a->level[1] == b->level[1] && (a->mm[0] < 0) == (b->mm[0] < 0) && (a->mm[1] < 0) == (b->mm[1] < 0);
}

static int copy_blocks(struct engine *dst, const struct engine *src)
{
	if ((uint64_t)dst->capblocks < (uint64_t)src->nblocks || !dst->blocks) {
		int32_t want = src->capblocks > src->nblocks ? src->capblocks : src->nblocks + 1;
		struct block *p = realloc(dst->blocks, (size_t)want * sizeof(*p));
		if (!p)
			return -ENOMEM;
		for (int32_t i = dst->nblocks; i < want; i++)
			p[i].mem = NULL;
		dst->blocks = p;
		dst->capblocks = want;
	}
	for (int32_t i = src->nblocks; i < dst->nblocks; i++) {
		free(dst->blocks[i].mem);
		dst->blocks[i].mem = NULL;
	}
	int32_t have = dst->nblocks; /* blocks [0, have) hold dst's old memory (or NULL) */
	dst->nblocks = src->nblocks;
	for (int32_t i = 0; i < src->nblocks; i++) {
		struct block *d = &dst->blocks[i];
		const struct block *s = &src->blocks[i];
		struct block old = i < have ? *d : (struct block){ .mem = NULL };
		uint64_t *mem = old.mem;
		*d = *s;
		d->mem = NULL;
		if (!s->mem) {
			free(mem);
			continue;
		}
		if (mem && old.pages != s->pages) {
			free(mem);
			mem = NULL;
		}
		bool fresh = !mem;
		if (fresh && !(mem = malloc((size_t)s->pages * 4096))) {
			for (int32_t j = i + 1; j < have; j++)
				free(dst->blocks[j].mem);
			for (int32_t j = i + 1; j < src->nblocks; j++)
				dst->blocks[j].mem = NULL;
			return -ENOMEM;
		}
		d->mem = mem;
		if (fresh || ptf_copy_full || !same_initial_words(&old, s)) {
			memcpy(mem, s->mem, (size_t)s->pages * 4096);
			continue;
		}
		/* both started from the same initial words: only chunks either side wrote can differ */
		unsigned sh = block_chunk_shift(s);
		for (int half = 0; half < (s->frag ? 2 : 1); half++) {
			uint64_t bits = s->occ[half] | old.occ[half];
			size_t base = s->frag ? (size_t)half * 256 : 0;
			while (bits) {
				size_t lo = base + ((size_t)__builtin_ctzll(bits) << sh);
				bits &= bits - 1;
				memcpy(mem + lo, s->mem + lo, sizeof(uint64_t) << sh);
			}
		}
	}
	return 0;
}

/* One mm slot: the struct, and its VMA array into dst's own buffer. */
static int copy_mm(struct mm *d, const struct mm *s)
{
	struct vma *buf = d->vmas;
	int room = buf ? d->nvma : 0; /* mm/vma.c reallocs the array to the exact count */
	*d = *s;
	d->vmas = NULL;
	d->nvma = 0;
	if (!s->vmas) {
		free(buf);
		return 0;
	}
	/* src may hold an array with nvma 0 (exit_mmap keeps it): keep that shape, with one element */
	int n = s->nvma ? s->nvma : 1;
	if (!buf || room < n) {
		struct vma *p = realloc(buf, (size_t)n * sizeof(*p));
		if (!p) {
			free(buf);
			return -ENOMEM;
		}
		buf = p;
	}
	memcpy(buf, s->vmas, (size_t)s->nvma * sizeof(struct vma));
	d->vmas = buf;
	d->nvma = s->nvma;
	return 0;
}

/* One VM slot: the struct, and its gmap links into dst's own buffer. */
static int copy_vm(struct vm *d, const struct vm *s)
{
	struct gmap_link *buf = d->links;
	uint64_t cap = buf ? (uint64_t)d->caplinks : 0;
	*d = *s;
	d->links = NULL;
	d->nlinks = d->caplinks = 0;
	if (!s->links) {
		free(buf);
		return 0;
	}
	int ret = fill((void **)&buf, &cap, s->links, (uint64_t)s->nlinks, (uint64_t)s->caplinks, sizeof(*buf));
	d->links = buf;
	d->caplinks = (int)cap;
	if (!ret)
		d->nlinks = s->nlinks;
	return ret;
}

/* The shmem objects' block arrays and page arrays, into a dst whose own were released (shmem_fini). */
static int copy_shm(struct engine *dst, const struct engine *src)
{
	for (int obj = 0; obj < NR_FILES; obj++) {
		struct shm_obj *d = &dst->shm[obj];
		const struct shm_obj *s = &src->shm[obj];
		if (!s->blk)
			continue;
		uint32_t capblk = s->capblk > s->nblk ? s->capblk : s->nblk + 1;
		if (!(d->blk = calloc(capblk, sizeof(struct shm_blk))))
			return -ENOMEM;
		d->capblk = capblk;
		for (uint32_t k = 0; k < s->nblk; k++) {
			d->blk[k] = s->blk[k];
			d->blk[k].pfn = NULL;
			d->nblk = k + 1;
			if (!s->blk[k].pfn)
				continue;
			if (!(d->blk[k].pfn = malloc((size_t)src->shm_pages * sizeof(uint64_t))))
				return -ENOMEM;
			memcpy(d->blk[k].pfn, s->blk[k].pfn, (size_t)src->shm_pages * sizeof(uint64_t));
		}
	}
	return 0;
}

/* memcpy of the bytes [from, to) of struct engine */
#define COPY_SPAN(dst, src, from, to) \
	memcpy((char *)(dst) + (from), (const char *)(src) + (from), (size_t)((to) - (from)))

int ptf_copy(struct engine *dst, const struct engine *src)
{
	if (dst == src)
		return 0;
	/* dst's heap side, before the copy overwrites its pointers */
	struct block *blocks = dst->blocks;
	int32_t nblocks = dst->nblocks, capblocks = dst->capblocks;
	struct compound *cpd = dst->cpd;
	uint64_t capcpd = dst->capcpd;
	struct rcu_cb *cbs = dst->cbs;
	size_t capcbs = dst->capcbs;
	struct deposit *deps = dst->deps;
	int32_t capdeps = dst->capdeps;
	struct pmd_link *pmd_links = dst->pmd_links;
	int32_t cappmd_links = dst->cappmd_links;
	struct event_rec *events = dst->events;
	size_t capevents = dst->capevents;
	int dst_hwm = dst->mm_hwm;
	shmem_fini(dst); /* shmem page arrays are few in a search: dst's go, src's are copied */

	/* The struct in three spans around the mm and VM arrays, which go slot by slot: a slot unused on
	 * both sides is dead (mm_new and vm_create clear it; every loop over them tests used), and those
	 * two arrays are most of the struct's 40 KB. */
	const size_t mms = offsetof(struct engine, mms), mms_end = mms + sizeof(dst->mms);
	const size_t vms = offsetof(struct engine, vms), vms_end = vms + sizeof(dst->vms);
	_Static_assert(offsetof(struct engine, mms) < offsetof(struct engine, vms), "span order");
	COPY_SPAN(dst, src, 0, mms);
	COPY_SPAN(dst, src, mms_end, vms);
	COPY_SPAN(dst, src, vms_end, sizeof(*dst));

	/* First hand dst its own buffers back, empty: from here on it is safe to ptf_fini. */
	dst->blocks = blocks;
	dst->nblocks = nblocks;
	dst->capblocks = capblocks;
	dst->cpd = cpd;
	dst->capcpd = capcpd;
	dst->ncpd = 0;
	dst->cbs = cbs;
	dst->capcbs = capcbs;
	dst->ncbs = 0;
	dst->deps = deps;
	dst->capdeps = capdeps;
	dst->ndeps = 0;
	dst->pmd_links = pmd_links;
	dst->cappmd_links = cappmd_links;
	dst->npmd_links = 0;
	dst->events = events;
	dst->capevents = capevents;
	dst->nevents = 0;
	for (int obj = 0; obj < NR_FILES; obj++) {
		dst->shm[obj].blk = NULL;
		dst->shm[obj].nblk = dst->shm[obj].capblk = 0;
	}
	int ret = 0;
	int hwm = src->mm_hwm > dst_hwm ? src->mm_hwm : dst_hwm; /* slots above were never used on either side */
	for (int i = 0; i < hwm && i < MAX_MMS; i++)
		if ((src->mms[i].used || dst->mms[i].used || src->mms[i].vmas || dst->mms[i].vmas) &&
		    copy_mm(&dst->mms[i], &src->mms[i]))
			ret = -ENOMEM;
	for (int i = 0; i < MAX_VMS; i++)
		if ((src->vms[i].used || dst->vms[i].used || src->vms[i].links || dst->vms[i].links) &&
		    copy_vm(&dst->vms[i], &src->vms[i]))
			ret = -ENOMEM;
	if (!ret)
		ret = copy_blocks(dst, src);
	if (!ret)
		ret = fill((void **)&dst->cpd, &dst->capcpd, src->cpd, src->ncpd, src->capcpd, sizeof(struct compound));
	if (!ret)
		dst->ncpd = src->ncpd;
	uint64_t cap = dst->capcbs;
	if (!ret && !(ret = fill((void **)&dst->cbs, &cap, src->cbs, src->ncbs, src->capcbs, sizeof(struct rcu_cb))))
		dst->ncbs = src->ncbs;
	dst->capcbs = (size_t)cap;
	cap = (uint64_t)dst->capdeps;
	if (!ret && !(ret = fill((void **)&dst->deps, &cap, src->deps, (uint64_t)src->ndeps, (uint64_t)src->capdeps,
				 sizeof(struct deposit))))
		dst->ndeps = src->ndeps;
	dst->capdeps = (int32_t)cap;
	cap = (uint64_t)dst->cappmd_links;
	if (!ret && src->npmd_links &&
	    !(ret = fill((void **)&dst->pmd_links, &cap, src->pmd_links, (uint64_t)src->npmd_links,
			 (uint64_t)src->cappmd_links, sizeof(struct pmd_link))))
		dst->npmd_links = src->npmd_links;
	dst->cappmd_links = (int32_t)cap;
	cap = dst->capevents;
	if (!ret && src->nevents &&
	    !(ret = fill((void **)&dst->events, &cap, src->events, src->nevents, src->capevents, sizeof(struct event_rec))))
		dst->nevents = src->nevents;
	dst->capevents = (size_t)cap;

	return ret ? ret : copy_shm(dst, src);
}

/* ---- ptf_same: has a step changed nothing? ----
 *
 * The search steps every alphabet operation from every state, and most of them (63-65% on the defaults)
 * fail with an errno and change nothing; proving that by the digest costs a canonical traversal of the whole
 * state. ptf_same(a, b) compares the two states as bytes instead, in the shape ptf_copy copies them: the
 * struct in spans, the used mm and VM slots, and the heap arrays, table memory by the chunks either side
 * wrote. It leaves out only what the digest leaves out and every step rewrites: the operation's scratch
 * (op_index, cur_opcode, self_cpu, the held-lock list cur/ncur, locks_grew), data_lookup's cache
 * (last_cpd), the statistics (but pages_in_use, which the digest hashes), the --steps events, and the heap
 * arrays' addresses and capacities, whose contents are compared. So "same" implies equal digests (the digest
 * is a function of the compared bytes), and a field added to the engine later is compared (a pointer, which
 * differs between any two engines, makes ptf_same say "changed", which only costs a digest). */

struct span {
	size_t off, len;
};

#define SPAN(f) { offsetof(struct engine, f), sizeof(((struct engine *)0)->f) }

static int span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

static bool bytes_same(const struct engine *a, const struct engine *b)
{
	static struct span skip[] = {
		SPAN(blocks), SPAN(capblocks), SPAN(cpd), SPAN(capcpd), SPAN(last_cpd), SPAN(cbs), SPAN(capcbs),
		SPAN(deps), SPAN(capdeps), SPAN(op_index), SPAN(cur_opcode), SPAN(self_cpu), SPAN(cur), SPAN(ncur),
		SPAN(locks_grew), SPAN(events), SPAN(nevents), SPAN(capevents), SPAN(st), SPAN(mms), SPAN(vms),
		SPAN(shm), SPAN(pmd_links), SPAN(cappmd_links),
	};
	static bool sorted;
	const size_t n = sizeof(skip) / sizeof(skip[0]);
	if (!sorted) { /* racy only in the sense that two threads would sort alike */
		qsort(skip, n, sizeof(skip[0]), span_cmp);
		sorted = true;
	}
	size_t at = 0;
	for (size_t i = 0; i <= n; i++) {
		size_t end = i < n ? skip[i].off : sizeof(struct engine);
		if (end > at && memcmp((const char *)a + at, (const char *)b + at, end - at))
			return false;
		if (i < n && skip[i].off + skip[i].len > at)
			at = skip[i].off + skip[i].len;
	}
	return a->st.pages_in_use == b->st.pages_in_use;
}

static bool mm_same(const struct mm *a, const struct mm *b)
{
	const size_t vo = offsetof(struct mm, vmas), ve = vo + sizeof(a->vmas);
	if (memcmp(a, b, vo) || memcmp((const char *)a + ve, (const char *)b + ve, sizeof(*a) - ve))
		return false;
	if (!a->vmas != !b->vmas)
		return false;
	return !a->nvma || !memcmp(a->vmas, b->vmas, (size_t)a->nvma * sizeof(struct vma));
}

static bool vm_same(const struct vm *a, const struct vm *b)
{
	const size_t lo = offsetof(struct vm, links), le = offsetof(struct vm, caplinks) + sizeof(a->caplinks);
	_Static_assert(offsetof(struct vm, links) < offsetof(struct vm, caplinks), "links before caplinks");
	if (memcmp(a, b, lo) || memcmp((const char *)a + le, (const char *)b + le, sizeof(*a) - le))
		return false;
	if (a->nlinks != b->nlinks || !a->links != !b->links)
		return false;
	return !a->nlinks || !memcmp(a->links, b->links, (size_t)a->nlinks * sizeof(struct gmap_link));
}

static bool blocks_same(const struct engine *a, const struct engine *b)
{
	const size_t mo = offsetof(struct block, mem), me = mo + sizeof(((struct block *)0)->mem);
	for (int32_t i = 0; i < a->nblocks; i++) {
		const struct block *x = &a->blocks[i], *y = &b->blocks[i];
		if (memcmp(x, y, mo) || memcmp((const char *)x + me, (const char *)y + me, sizeof(*x) - me))
			return false;
		if (!x->mem != !y->mem)
			return false;
		if (!x->mem)
			continue;
		/* the same bookkeeping (compared above), so the same initial words: only written chunks can differ */
		unsigned sh = block_chunk_shift(x);
		for (int half = 0; half < (x->frag ? 2 : 1); half++) {
			uint64_t bits = ptf_copy_full ? ~0ull : x->occ[half] | y->occ[half];
			size_t base = x->frag ? (size_t)half * 256 : 0, words = x->frag ? 256 : (size_t)x->pages * 512;
			while (bits) {
				size_t lo = (size_t)__builtin_ctzll(bits) << sh, len = (size_t)1 << sh;
				bits &= bits - 1;
				if (lo >= words)
					break;
				if (lo + len > words)
					len = words - lo;
				if (memcmp(x->mem + base + lo, y->mem + base + lo, len * sizeof(uint64_t)))
					return false;
			}
		}
	}
	return true;
}

static bool shm_same(const struct engine *a, const struct engine *b)
{
	for (int obj = 0; obj < NR_FILES; obj++) {
		const struct shm_obj *x = &a->shm[obj], *y = &b->shm[obj];
		if (x->used != y->used || x->nblk != y->nblk || !x->blk != !y->blk)
			return false;
		for (uint32_t k = 0; k < x->nblk; k++) {
			const struct shm_blk *p = &x->blk[k], *q = &y->blk[k];
			if (p->index != q->index || p->huge != q->huge || !p->pfn != !q->pfn)
				return false;
			if (p->pfn && memcmp(p->pfn, q->pfn, (size_t)a->shm_pages * sizeof(uint64_t)))
				return false;
		}
	}
	return true;
}

/* true: a and b are the same state (equal digests, the same future); false: they may differ */
bool ptf_same(const struct engine *a, const struct engine *b)
{
	if (a->nblocks != b->nblocks || a->ncpd != b->ncpd || a->ncbs != b->ncbs || a->ndeps != b->ndeps ||
	    a->npmd_links != b->npmd_links ||
	    a->mm_hwm != b->mm_hwm || !bytes_same(a, b))
		return false;
	for (int i = 0; i < a->mm_hwm && i < MAX_MMS; i++)
		if ((a->mms[i].used || b->mms[i].used || a->mms[i].vmas || b->mms[i].vmas) && !mm_same(&a->mms[i], &b->mms[i]))
			return false;
	for (int i = 0; i < MAX_VMS; i++)
		if ((a->vms[i].used || b->vms[i].used) && !vm_same(&a->vms[i], &b->vms[i]))
			return false;
	/* (an empty array may be NULL, which memcmp must not see even for 0 bytes) */
	if ((a->ncpd && memcmp(a->cpd, b->cpd, (size_t)a->ncpd * sizeof(struct compound))) ||
	    (a->ncbs && memcmp(a->cbs, b->cbs, a->ncbs * sizeof(struct rcu_cb))) ||
	    (a->ndeps && memcmp(a->deps, b->deps, (size_t)a->ndeps * sizeof(struct deposit))) ||
	    (a->npmd_links && memcmp(a->pmd_links, b->pmd_links, (size_t)a->npmd_links * sizeof(struct pmd_link))))
		return false;
	return blocks_same(a, b) && shm_same(a, b);
}
