/* search/gen.c: the one trace generator (fuzzing and workloads): decide, execute, decide, against the live engine.
 *
 * Like syzkaller's executor loop, every decision is taken against the engine's state after the previous
 * operation ran: live pids, the mm's real VMAs (merged, split, partly unmapped), busy and idle cpus, VMs and
 * their memslots, the shmem ranges some process maps. So no shadow state can drift from the model, and the
 * trace it returns replays to exactly the result the generator saw (the engine is deterministic).
 *
 * Any byte string decodes to a valid trace, so libFuzzer's byte mutations are mutations of decisions; the
 * decisions and their structure are the former Python FuzzGen's (fuzzgen.py), one per below() call. */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include "search/gen.h"

/* The coverage build (-fsanitize=fuzzer-no-link) leaves this file alone: libFuzzer's features should be the
 * model's paths, not the generator's loops over pids and VMAs, whose comparison callbacks cost more than the
 * model itself (measured: 10k executions/s instrumented; see docs/fuzzing.md). */
#if defined(__clang__) && __clang_major__ >= 13
#pragma clang attribute push(__attribute__((no_sanitize("coverage"))), apply_to = function)
#define GEN_PRAGMA_PUSHED
#endif

/* ---- decisions ---- */

void choices_bytes(struct choices *c, const uint8_t *data, size_t len)
{
	memset(c, 0, sizeof(*c));
	c->data = data;
	c->len = len;
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void choices_random(struct choices *c, uint64_t seed, bool record)
{
	memset(c, 0, sizeof(*c));
	c->random = true;
	c->record = record;
	for (int i = 0; i < 4; i++)
		c->s[i] = splitmix64(&seed);
}

void choices_free(struct choices *c)
{
	free(c->rec);
	c->rec = NULL;
	c->nrec = c->caprec = 0;
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro(uint64_t *s)
{
	uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return r;
}

static unsigned width(uint32_t n)
{
	return n <= 1u << 8 ? 1 : n <= 1u << 16 ? 2 : 4;
}

static uint32_t below(struct choices *c, uint32_t n)
{
	if (n <= 1)
		return 0;
	unsigned w = width(n);
	uint32_t v = 0;
	if (c->random) {
		v = (uint32_t)(((xoshiro(c->s) >> 32) * n) >> 32);
		if (c->record && !c->nomem) {
			if (c->nrec + w > c->caprec) {
				size_t cap = c->caprec ? 2 * c->caprec : 256;
				uint8_t *p = realloc(c->rec, cap);
				if (!p) {
					c->nomem = true;
					return v;
				}
				c->rec = p;
				c->caprec = cap;
			}
			for (unsigned i = 0; i < w; i++)
				c->rec[c->nrec++] = (uint8_t)(v >> (8 * i));
		}
		return v;
	}
	for (unsigned i = 0; i < w; i++, c->pos++)
		if (c->pos < c->len)
			v |= (uint32_t)c->data[c->pos] << (8 * i);
	return v % n;
}

static bool chance(struct choices *c, unsigned percent)
{
	return below(c, 100) < percent;
}

/* Like chance, but a zero decision (what exhausted bytes read as, and what hypothesis shrinks towards) says
 * no: a branch added later does not change what the simplest inputs do. */
static bool rarely(struct choices *c, unsigned percent)
{
	return below(c, 100) >= 100 - percent;
}

static uint32_t clamp32(uint64_t n)
{
	return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

static bool exhausted(const struct choices *c)
{
	return !c->random && c->pos >= c->len;
}

#define PICK(c, ...) pick_of((c), (const uint64_t[]){ __VA_ARGS__ }, \
			     sizeof((const uint64_t[]){ __VA_ARGS__ }) / sizeof(uint64_t))
static uint64_t pick_of(struct choices *c, const uint64_t *v, size_t n)
{
	return v[below(c, (uint32_t)n)];
}

/* ---- profiles: data, not code ---- */

enum { W_EXEC, W_MMAP, W_SHM, W_FAULT, W_ACTOR, W_VM, W_MISC, W_NR };
struct gen_profile {
	uint8_t pid0, npids;    /* pids pid0 .. pid0 + npids - 1 */
	uint8_t nvms, ncpus, nregions, nobjs;
	uint8_t until[W_NR];    /* step(): a decision below 100 under until[i] (and above the previous) does i */
	bool vm_on_shm;         /* VMs whose memory is shared memory (M1 on s390 defaults: never in a workload) */
	bool shm_apart;         /* shared memory in regions of its own, above the anonymous ones */
	bool exact;             /* exactly max_ops operations, whatever the decisions; never stop at a violation */
	bool tlb;               /* user accesses through the TLB (tlb_access) after faults */
	bool hugetlb_shared;    /* MAP_SHARED hugetlbfs mappings (hugetlb_mmap: PMD sharing) among the shared memory */
};

static const struct gen_profile profiles[GEN_NPROFILES] = {
	[GEN_FUZZ] = { 1, 3, 2, 4, 3, 2, { 6, 18, 24, 40, 68, 90, 100 }, true, false, false, true, true },
	/* a replay workload (ptfuzz gen, B1, B5): mostly faults on many mappings of 8 processes, few exits */
	[GEN_WORKLOAD] = { 0, 8, 2, 12, 32, 3, { 3, 15, 19, 55, 77, 90, 100 }, false, true, true, false },
};

/* ---- semantic features ----
 * Counters libFuzzer reads as coverage (registered by ptf_features_register, as a compiler-instrumented
 * module registers its own): after each operation, one for (operation, result class, an abstract state)
 * and one for (previous operation, operation, success). The abstract state is what the model's bugs are
 * made of: RCU callbacks pending, which actors are in flight (walker, rmap walker, guest fault, a held
 * invalidation window), whether THP or hugetlb PMD leaves are mapped, tables deposited, VMs with a live
 * stage 2 or gmap links, pgste mms. An input reaching a new combination is kept even when no new engine
 * edge ran: edges say which code ran, these say in which state. */
#define FEAT_STATE (1u << 14)
#define FEAT_PAIRS ((OP_NR + 1) * OP_NR * 2) /* previous operation: one of OP_NR, or OP_NR for none */
#define GEN_NFEATURES (FEAT_STATE + FEAT_PAIRS)
static uint8_t features[GEN_NFEATURES] __attribute__((aligned(64)));
static uintptr_t feature_pcs[2 * GEN_NFEATURES]; /* libFuzzer's PC table: one (pc, flags) per counter */
static bool features_on;

const size_t ptf_features_count = GEN_NFEATURES;

int ptf_features_register(void)
{
	void (*counters_init)(uint8_t *, uint8_t *) =
		(void (*)(uint8_t *, uint8_t *))dlsym(RTLD_DEFAULT, "__sanitizer_cov_8bit_counters_init");
	void (*pcs_init)(const uintptr_t *, const uintptr_t *) =
		(void (*)(const uintptr_t *, const uintptr_t *))dlsym(RTLD_DEFAULT, "__sanitizer_cov_pcs_init");
	if (!counters_init || !pcs_init)
		return -ENOSYS; /* no libFuzzer in this process */
	if (features_on)
		return 0;
	for (size_t i = 0; i < GEN_NFEATURES; i++)
		feature_pcs[2 * i] = (uintptr_t)&features[i]; /* a distinct "pc" each */
	feature_pcs[1] = 1; /* PCFlags: the first entry opens a "function", as libFuzzer's -print_coverage expects */
	counters_init(features, features + GEN_NFEATURES);
	pcs_init(feature_pcs, feature_pcs + 2 * GEN_NFEATURES);
	features_on = true;
	return 0;
}

static unsigned result_class(int ret)
{
	switch (-ret) {
	case 0: return 0;
	case EINVAL: return 1;
	case ENOMEM: return 2;
	case EFAULT: return 3;
	case EAGAIN: return 4;
	case EEXIST: return 5;
	case ESRCH: case ENOENT: return 6;
	default: return 7;
	}
}

static uint32_t abstract_state(const struct engine *e)
{
	uint32_t s = e->ncbs ? 1 : 0;
	for (int i = 0; i < MAX_CPUS; i++) {
		const struct cpu *c = &e->cpus[i];
		if (c->actor == A_WALK || c->actor == A_RMAP || c->actor == A_GFAULT)
			s |= 2u << (c->actor - A_WALK);
		else if ((c->actor == A_INVAL && c->inval_held) ||
			 ((c->actor == A_FRAG || c->actor == A_COLLAPSE || c->actor == A_MREMAP || c->actor == A_UNSHARE) &&
			  c->walk_done))
			s |= 16; /* a held window: an invalidation's ends, or (s390) a page_table_free's list work */
	}
	for (int i = 0; i < e->mm_hwm; i++)
		if (e->mms[i].used && !e->mms[i].dead) {
			if (e->mms[i].pmd_leaves)
				s |= 32;
			if (e->mms[i].has_pgste)
				s |= 64;
		}
	for (int i = 0; i < MAX_VMS; i++)
		if (e->vms[i].used && (e->vms[i].nlinks || (!e->vms[i].root_freed && e->vms[i].faults_in_flight)))
			s |= 128;
	int32_t free_deps = 0;
	for (int32_t d = e->free_deps; d >= 0 && free_deps <= e->ndeps; d = e->deps[d].next)
		free_deps++;
	if (e->ndeps > free_deps)
		s |= 256;
	if (e->npmd_links)
		s |= 512; /* a hugetlb PMD table shared (issue 20) */
	return s;
}

static void feature_hit(uint32_t idx)
{
	if (features[idx] < 255)
		features[idx]++;
}

static void features_after(const struct engine *e, uint64_t opcode, uint64_t prev, int ret)
{
	/* 26 x 8 x 512 keys hashed into 2^14 counters: some combinations share one (direct indexing would
	 * be 104 KiB of counters that libFuzzer scans after every execution) */
	uint32_t key = (uint32_t)opcode << 12 | result_class(ret) << 9 | abstract_state(e);
	key *= 0x9e3779b1u;
	feature_hit(key >> (32 - 14));
	feature_hit(FEAT_STATE + ((uint32_t)prev * OP_NR + (uint32_t)opcode) * 2 + (ret == 0));
}

/* ---- the generator ---- */

struct gen {
	struct engine *e;
	const struct gen_profile *p;
	struct choices *c;
	uint64_t *rows;
	size_t nrows, caprows, max_rows;
	size_t blocked; /* rows whose operation would have waited for a lock (-16, nothing changed): not counted */
	bool stopped, nomem;
	struct gen_layout L;
};

struct mapping { uint64_t start, len; uint32_t flags; uint8_t shm; bool ok; };

static void op(struct gen *g, const uint64_t *w)
{
	if (g->stopped)
		return;
	if (g->nrows == g->caprows) {
		size_t cap = g->caprows ? 2 * g->caprows : 64;
		uint64_t *p = realloc(g->rows, cap * (OP_ARGS + 1) * sizeof(uint64_t));
		if (!p) {
			g->nomem = g->stopped = true;
			return;
		}
		g->rows = p;
		g->caprows = cap;
	}
	uint64_t *row = g->rows + g->nrows++ * (OP_ARGS + 1);
	memcpy(row, w, (OP_ARGS + 1) * sizeof(uint64_t));
	uint64_t waits = g->e->st.waits;
	int ret = ptf_step(g->e, row);
	g->blocked += g->e->st.waits != waits; /* a step spent waiting does not count against the trace's length */
	if (features_on && row[0] < OP_NR)
		features_after(g->e, row[0], g->nrows > 1 ? row[-(OP_ARGS + 1)] : OP_NR, ret);
	if (g->nrows >= g->max_rows || (g->e->viol && !g->p->exact))
		g->stopped = true;
}
/* OP(g, OP_FAULT, pid, addr, write): missing arguments are 0, negative ones wrap as the trace has them */
#define OP(g, code, ...) op((g), (const uint64_t[OP_ARGS + 1]){ (code), __VA_ARGS__ })
#define OP0(g, code) op((g), (const uint64_t[OP_ARGS + 1]){ (code) })

/* -- the live state, read from the engine -- */

static int pid_of_mm(const struct engine *e, int mm)
{
	for (int p = 0; p < MAX_PIDS; p++)
		if (e->procs[p].exists && e->procs[p].mm == mm)
			return p;
	return -1;
}

static int pick_pid(struct gen *g)
{
	int live[MAX_PIDS], n = 0;
	for (int p = 0; p < MAX_PIDS; p++)
		if (g->e->procs[p].exists)
			live[n++] = p;
	return n ? live[below(g->c, (uint32_t)n)] : g->p->pid0;
}

static bool any_vm(const struct gen *g)
{
	for (int i = 0; i < g->p->nvms; i++)
		if (g->e->vms[i].used)
			return true;
	return false;
}

static bool any_pid(const struct engine *e)
{
	for (int p = 0; p < MAX_PIDS; p++)
		if (e->procs[p].exists)
			return true;
	return false;
}

/* One of the pid's mappings (its VMAs, the exec stack aside); anon_only: none of shared memory. */
static struct mapping pick_mapping(struct gen *g, int pid, bool anon_only)
{
	struct mapping m = { 0 };
	if (pid < 0 || pid >= MAX_PIDS || !g->e->procs[pid].exists)
		return m;
	const struct mm *mm = &g->e->mms[g->e->procs[pid].mm];
	int idx[MAX_VMAS], n = 0;
	for (int i = 0; i < mm->nvma; i++)
		if (!(mm->vmas[i].flags & VMA_STACK) && !(anon_only && mm->vmas[i].shm))
			idx[n++] = i;
	if (!n)
		return m;
	const struct vma *v = &mm->vmas[idx[below(g->c, (uint32_t)n)]];
	return (struct mapping){ v->start, v->end - v->start, v->flags & (VMA_THP | VMA_HUGETLB), v->shm, true };
}

static uint64_t pick_region(struct gen *g)
{
	return g->L.base + below(g->c, g->p->nregions) * g->L.region;
}

static uint64_t shm_region(struct gen *g)
{
	if (!g->p->shm_apart)
		return pick_region(g);
	return g->L.base + (g->p->nregions + below(g->c, (g->p->nregions + 3) / 4)) * g->L.region;
}

static uint64_t addr_of(struct gen *g, struct mapping m)
{
	if (!m.ok)
		return pick_region(g);
	uint64_t pages = m.len / g->L.page;
	uint64_t index = pages > 1 ? PICK(g->c, 0, pages - 1, below(g->c, clamp32(pages))) : 0;
	return m.start + index * g->L.page;
}

static uint64_t addr_in(struct gen *g, int pid)
{
	return addr_of(g, pick_mapping(g, pid, false));
}

static int idle_cpu(struct gen *g)
{
	int idle[MAX_CPUS], n = 0;
	for (int i = 0; i < g->p->ncpus; i++)
		if (g->e->cpus[i].actor == A_NONE)
			idle[n++] = i;
	return n ? idle[below(g->c, (uint32_t)n)] : -1;
}

/* -- operations -- */

static void gen_exec(struct gen *g)
{
	int pid = g->p->pid0 + (int)below(g->c, g->p->npids);
	int64_t elf = -1;
	if (g->e->arch == ARCH_S390) {
		if (chance(g->c, 15))
			OP(g, OP_SYSCTL_ALLOCATE_PGSTE, below(g->c, 2));
		elf = (int64_t)PICK(g->c, (uint64_t)-1, 0, 0, 1, 2);
	}
	OP(g, OP_EXEC, (uint64_t)pid, (uint64_t)elf);
}

static void gen_mmap(struct gen *g)
{
	int pid = pick_pid(g);
	uint64_t base = pick_region(g), addr, len;
	uint32_t flags;
	struct mapping m = pick_mapping(g, pid, false);
	if (m.ok && !m.shm && rarely(g->c, 15)) {
		/* right after an earlier mapping, with its flags: vma_merge (hugetlb never merges) */
		len = m.flags < VMA_HUGETLB_PMD ? g->L.page * (1 + below(g->c, 16)) : m.len;
		OP(g, OP_MMAP, (uint64_t)pid, m.start + m.len, len, m.flags);
		return;
	}
	switch (below(g->c, 5)) {
	case 0: /* THP-eligible */
		addr = base + below(g->c, 2) * g->L.pmd, len = g->L.pmd * (1 + below(g->c, 2)), flags = VMA_THP;
		break;
	case 1: /* a few pages */
		addr = base + below(g->c, 4) * g->L.page, len = g->L.page * (1 + below(g->c, 16)), flags = 0;
		break;
	case 2: /* plain, pmd-sized */
		addr = base, len = g->L.pmd * (1 + below(g->c, 2)), flags = 0;
		break;
	case 3: /* hugetlb at PMD */
		addr = base, len = g->L.pmd, flags = VMA_HUGETLB_PMD;
		break;
	default: /* hugetlb at PUD where it exists */
		addr = base, len = g->L.pud ? g->L.pud : g->L.pmd, flags = g->L.pud ? VMA_HUGETLB_PUD : VMA_HUGETLB_PMD;
	}
	if (g->e->arch == ARCH_S390 && chance(g->c, 3))
		addr = (1ull << 42) + (addr - g->L.base); /* above 4 TiB: the mm upgrades */
	OP(g, OP_MMAP, (uint64_t)pid, addr, len, flags);
}

static void gen_fault_at(struct gen *g, int pid, uint64_t addr)
{
	if (rarely(g->c, 20)) { /* a read, then a write: the zero page (or a shared page read-only), then COW or reuse */
		OP(g, OP_FAULT, (uint64_t)pid, addr, 0);
		OP(g, OP_FAULT, (uint64_t)pid, addr, 1);
		return;
	}
	OP(g, OP_FAULT, (uint64_t)pid, addr, below(g->c, 2));
}

static void gen_fault(struct gen *g)
{
	int pid = pick_pid(g);
	uint64_t addr = addr_in(g, pid);
	gen_fault_at(g, pid, addr);
	/* the thread then uses the page on some cpu: its TLB caches the translation and the walk (issue 20) */
	if (g->p->tlb && chance(g->c, 30)) {
		int cpu = idle_cpu(g);
		if (cpu >= 0)
			OP(g, OP_TLB_ACCESS, (uint64_t)cpu, (uint64_t)pid, addr, below(g->c, 2));
	}
}

/* The (page offset, pages) of a mapping of shmem object obj that some live process has, if any. */
static bool pick_shm_range(struct gen *g, int obj, uint64_t *pgoff, uint64_t *pages)
{
	struct { uint64_t pgoff, pages; } r[64];
	int n = 0;
	for (int i = 0; i < g->e->mm_hwm && n < 64; i++) {
		const struct mm *mm = &g->e->mms[i];
		if (!mm->used || mm->dead)
			continue;
		for (int j = 0; j < mm->nvma && n < 64; j++)
			if (mm->vmas[j].shm == obj + 1)
				r[n].pgoff = mm->vmas[j].pgoff, r[n++].pages = (mm->vmas[j].end - mm->vmas[j].start) / g->L.page;
	}
	if (!n || !chance(g->c, 70))
		return false;
	int k = (int)below(g->c, (uint32_t)n);
	*pgoff = r[k].pgoff, *pages = r[k].pages;
	return true;
}

/* MAP_SHARED of one of a few shmem objects, often a range another process maps already (shared memory between
 * processes), at a block-aligned address or one page off, with a page offset that is congruent to it or not;
 * then maybe a fault in it and a MADV_COLLAPSE of it (collapse_file, retract_page_tables). */
static void gen_shm_for(struct gen *g, int pid, uint64_t *addr_out, uint64_t *len_out)
{
	uint64_t ptrs = g->L.pmd / g->L.page, pgoff, pages;
	int obj = (int)below(g->c, g->p->nobjs);
	bool shared = pick_shm_range(g, obj, &pgoff, &pages);
	if (!shared) {
		pgoff = PICK(g->c, 0, 0, ptrs, below(g->c, 4));
		pages = PICK(g->c, ptrs, ptrs, 2 * ptrs, 1 + below(g->c, 16));
	}
	uint64_t addr = shm_region(g); /* one decision per statement: C leaves the order of operands open */
	addr += PICK(g->c, 0, 0, g->L.pmd, g->L.page);
	OP(g, OP_SHM_MMAP, (uint64_t)pid, addr, pages * g->L.page, (uint64_t)obj, pgoff);
	if (chance(g->c, 40))
		gen_fault_at(g, pid, addr + below(g->c, clamp32(pages)) * g->L.page);
	/* a range another mapping has: the object's pages are collapsed under that mapping (Z2, Z3) more often */
	if (chance(g->c, shared ? 50 : 30))
		OP(g, OP_MADVISE, (uint64_t)pid, addr, pages * g->L.page, 3);
	if (addr_out)
		*addr_out = addr, *len_out = pages * g->L.page;
}

/* A fault at addr, and now and then the thread's use of the page on some cpu (its TLB caches the walk) */
static void gen_hugetlb_touch(struct gen *g, int pid, uint64_t addr)
{
	gen_fault_at(g, pid, addr);
	if (g->p->tlb && chance(g->c, 50)) {
		int cpu = idle_cpu(g);
		if (cpu >= 0)
			OP(g, OP_TLB_ACCESS, (uint64_t)cpu, (uint64_t)pid, addr, below(g->c, 2));
	}
}

/* One of the pid's shared hugetlb mappings (hugetlb_mmap), if any. */
static struct mapping pick_hugetlb(struct gen *g, int pid)
{
	struct mapping m = { 0 };
	if (pid < 0 || pid >= MAX_PIDS || !g->e->procs[pid].exists)
		return m;
	const struct mm *mm = &g->e->mms[g->e->procs[pid].mm];
	for (int i = 0, n = 0; i < mm->nvma; i++) {
		const struct vma *v = &mm->vmas[i];
		if ((v->flags & VMA_HUGETLB) && v->shm && below(g->c, (uint32_t)++n) == 0)
			m = (struct mapping){ v->start, v->end - v->start, v->flags & VMA_HUGETLB, v->shm, true };
	}
	return m;
}

/* issue 20: MAP_SHARED of one of two hugetlbfs files over a whole region (a PUD on x86_64 and arm64 with 4K
 * pages: PMD sharing wants the PUD-aligned range inside the VMA). A new mapping is faulted, and often a second
 * process (a fork, or another process mapping the file there) faults it too, sharing the first one's PMD table.
 * An existing one is faulted, dropped by MADV_DONTNEED (which unshares the whole PUD range), or unmapped, the
 * munmap now and then held after its unshare, before its free_pgtables and tlb_finish_mmu (unshare_hold: gen_actor
 * ends it). */
static void gen_hugetlb_unmap(struct gen *g, int pid, struct mapping m)
{
	int cpu = idle_cpu(g);
	if (cpu >= 0 && chance(g->c, 60))
		OP(g, OP_UNSHARE_HOLD, (uint64_t)cpu);
	OP(g, OP_MUNMAP, (uint64_t)pid, m.start, m.len);
}

/* Another pid of the profile than pid: free (for a fork) when want_free and one is, else live when one is. */
static int other_pid(struct gen *g, int pid, bool want_free)
{
	int cand[MAX_PIDS], n = 0;
	for (int p = g->p->pid0; p < g->p->pid0 + g->p->npids; p++)
		if (p != pid && g->e->procs[p].exists != want_free)
			cand[n++] = p;
	return n ? cand[below(g->c, (uint32_t)n)] : -1;
}

static void gen_hugetlb(struct gen *g)
{
	int pid = pick_pid(g);
	uint64_t pmd = g->L.pmd, blocks = g->L.region / pmd;
	struct mapping m = pick_hugetlb(g, pid);
	if (!m.ok || chance(g->c, 25)) {
		uint64_t base = pick_region(g), file = below(g->c, 2), at = base + below(g->c, clamp32(blocks)) * pmd;
		OP(g, OP_HUGETLB_MMAP, (uint64_t)pid, base, g->L.region, file, 0);
		gen_hugetlb_touch(g, pid, at);
		if (!chance(g->c, 60))
			return;
		bool fork = chance(g->c, 60);
		int other = other_pid(g, pid, fork);
		if (other < 0)
			return;
		if (fork) {
			OP(g, OP_FORK, (uint64_t)pid, (uint64_t)other);
		} else { /* the same file offsets in another process, at another region or the same */
			uint64_t obase = pick_region(g);
			OP(g, OP_HUGETLB_MMAP, (uint64_t)other, obase, g->L.region, file, 0);
			at = obase + (at - base);
		}
		gen_hugetlb_touch(g, other, at);
		if (chance(g->c, 40)) { /* one of the two goes, its munmap maybe held; then maybe the other too */
			int who = chance(g->c, 50) ? pid : other, rest = who == pid ? other : pid;
			struct mapping w = pick_hugetlb(g, who);
			if (w.ok)
				gen_hugetlb_unmap(g, who, w);
			w = pick_hugetlb(g, rest);
			if (w.ok && chance(g->c, 50)) {
				if (chance(g->c, 50))
					OP(g, OP_MUNMAP, (uint64_t)rest, w.start, w.len);
				else
					OP(g, OP_EXIT, (uint64_t)rest);
				if (chance(g->c, 50))
					OP0(g, OP_RCU_GP);
			}
		}
		return;
	}
	uint64_t at = m.start + below(g->c, clamp32(m.len / pmd)) * pmd;
	switch (below(g->c, 3)) {
	case 0:
		gen_hugetlb_touch(g, pid, at);
		break;
	case 1:
		gen_hugetlb_unmap(g, pid, m);
		break;
	default:
		OP(g, OP_MADVISE, (uint64_t)pid, at, pmd, 0);
	}
}

static void gen_shm(struct gen *g)
{
	/* s390 shares no PMD tables: its shared memory stays shmem (what M1 needs) */
	if (g->p->hugetlb_shared && g->e->arch != ARCH_S390 && chance(g->c, 40))
		gen_hugetlb(g);
	else
		gen_shm_for(g, pick_pid(g), NULL, NULL);
}

static void gen_vm_create(struct gen *g)
{
	uint64_t vm = below(g->c, g->p->nvms);
	int pid = pick_pid(g);
	OP(g, OP_VM_CREATE, vm, (uint64_t)pid, pick_of(g->c, g->L.ipas, g->L.nipas));
}

/* A VM the generator uses, or -1; *pid its owner's pid (any pid when the owner is gone). */
static int pick_vm(struct gen *g, int *pid)
{
	int vms[MAX_VMS], n = 0;
	for (int i = 0; i < g->p->nvms; i++)
		if (g->e->vms[i].used)
			vms[n++] = i;
	if (!n)
		return -1;
	int vm = vms[below(g->c, (uint32_t)n)];
	*pid = pid_of_mm(g->e, g->e->vms[vm].mm);
	if (*pid < 0)
		*pid = pick_pid(g);
	return vm;
}

/* A slot's hva and size never change (__kvm_set_memory_region: -22), so a slot number already in use with
 * others is deleted first; the same hva and size at a new gpa is a move. */
static void set_memslot(struct gen *g, int vm, int slot, uint64_t gpa, uint64_t hva, uint64_t len)
{
	const struct memslot *s = &g->e->vms[vm].slots[slot];
	if (s->used && (s->hva != hva || s->len != len))
		OP(g, OP_MEMSLOT, (uint64_t)vm, (uint64_t)slot, 0, 0, 0);
	OP(g, OP_MEMSLOT, (uint64_t)vm, (uint64_t)slot, gpa, hva, len);
}

struct target { int vm; uint64_t gpa, hva; bool ok; };

static struct target slot_target(struct gen *g)
{
	struct target t = { 0 };
	int vms[MAX_VMS], n = 0;
	for (int i = 0; i < g->p->nvms; i++) {
		const struct vm *v = &g->e->vms[i];
		for (int s = 0; v->used && s < MAX_SLOTS; s++)
			if (v->slots[s].used) {
				vms[n++] = i;
				break;
			}
	}
	if (!n)
		return t;
	t.vm = vms[below(g->c, (uint32_t)n)];
	const struct vm *v = &g->e->vms[t.vm];
	int slots[MAX_SLOTS], ns = 0;
	for (int s = 0; s < MAX_SLOTS; s++)
		if (v->slots[s].used)
			slots[ns++] = s;
	const struct memslot *s = &v->slots[slots[below(g->c, (uint32_t)ns)]];
	uint64_t pages = s->len / g->L.page;
	uint64_t off = PICK(g->c, 0, g->L.page, below(g->c, clamp32(pages)) * g->L.page);
	if (off > s->len - g->L.page)
		off = s->len - g->L.page;
	t.gpa = s->gpa + off, t.hva = s->hva + off, t.ok = true;
	return t;
}

/* A VM whose guest memory is shared memory (QEMU's memory-backend-memfd, share=on): its process maps an
 * object, a memslot covers the mapping and the guest touches it; other processes may map the object too. */
static void gen_vm_on_shm(struct gen *g)
{
	int pid, vm;
	if (!any_vm(g) || chance(g->c, 30))
		gen_vm_create(g);
	if ((vm = pick_vm(g, &pid)) < 0)
		return;
	uint64_t hva, len;
	gen_shm_for(g, pid, &hva, &len);
	hva = hva / g->L.align * g->L.align;
	len = len / g->L.align * g->L.align;
	if (len < g->L.align)
		len = g->L.align;
	int slot = (int)below(g->c, 4);
	uint64_t gpa = (uint64_t)slot * g->L.region;
	set_memslot(g, vm, slot, gpa, hva, len);
	uint64_t at = gpa + below(g->c, clamp32(len / g->L.page)) * g->L.page; /* one decision per statement: C */
	OP(g, OP_GUEST_FAULT, (uint64_t)vm, at, below(g->c, 2));             /* leaves an initializer's order open */
}

/* Issue 19's KVM races (docs/history.md Z8, Z9), on arm64 and x86_64 with an idle cpu: a thread of the VMM stopped
 * inside an invalidation of the VM's memory while another tears the VM down or faults in it. kind 0: closing the
 * VM fd while the guest's RAM (a memslot's whole range) is discarded (DONTNEED, the window stopped in its stage-2
 * unmap); kind 1: a vCPU fault on a memslot while it is being deleted (the window stopped in its INVALID phase).
 * The window ends later (gen_actor) or at the end of the trace. */
static bool gen_vm_race(struct gen *g, int vm, int pid, unsigned kind)
{
	const struct vm *v = &g->e->vms[vm];
	int slots[MAX_SLOTS], ns = 0, cpu = idle_cpu(g);
	for (int s = 0; s < MAX_SLOTS; s++)
		if (v->slots[s].used)
			slots[ns++] = s;
	if (cpu < 0 || !ns)
		return false;
	int slot = slots[below(g->c, (uint32_t)ns)];
	const struct memslot s = v->slots[slot];
	uint64_t off = PICK(g->c, 0, g->L.page, below(g->c, clamp32(s.len / g->L.page)) * g->L.page);
	if (off > s.len - g->L.page)
		off = s.len - g->L.page;
	OP(g, OP_INVAL_HOLD, (uint64_t)cpu);
	if (kind == 0) {
		OP(g, OP_MADVISE, (uint64_t)pid, s.hva, s.len, 0);
		OP(g, OP_VM_DESTROY, (uint64_t)vm);
	} else {
		OP(g, OP_MEMSLOT, (uint64_t)vm, (uint64_t)slot, 0, 0, 0);
		OP(g, OP_GUEST_FAULT, (uint64_t)vm, s.gpa + off, below(g->c, 2));
	}
	return true;
}

static void gen_vm(struct gen *g)
{
	if (g->p->vm_on_shm && rarely(g->c, 15)) {
		gen_vm_on_shm(g);
		return;
	}
	int pid, vm;
	if (!any_vm(g) || chance(g->c, 20)) {
		gen_vm_create(g);
		return;
	}
	vm = pick_vm(g, &pid);
	struct target t;
	bool slots = false;
	for (int s = 0; s < MAX_SLOTS; s++)
		slots |= g->e->vms[vm].slots[s].used;
	unsigned k = below(g->c, 10);
	if ((k < 4 || !slots) && g->e->arch != ARCH_S390 && rarely(g->c, 10)) {
		/* guest RAM of GiBs: two regions mapped and under one memslot, whose stage-2 unmap runs in chunks
		 * (arm64 stage2_apply_range: gen_vm_race's discard can stop between them) */
		uint64_t hva = pick_region(g), len = 2 * g->L.region;
		int slot = (int)below(g->c, 4);
		OP(g, OP_MMAP, (uint64_t)pid, hva, len, 0);
		set_memslot(g, vm, slot, (uint64_t)slot * g->L.region, hva, len);
		return;
	}
	if (k < 4 || !slots) {
		/* a workload keeps VM memory anonymous: shared memory under a memslot is M1's setting on s390 */
		struct mapping m = pick_mapping(g, pid, !g->p->vm_on_shm);
		uint64_t hva = m.ok ? m.start : pick_region(g), len = m.ok ? m.len : g->L.pmd;
		len = PICK(g->c, len, g->L.pmd, 16 * g->L.page) / g->L.align * g->L.align;
		if (len < g->L.align)
			len = g->L.align;
		hva = hva / g->L.align * g->L.align;
		int slot = (int)below(g->c, 4);
		uint64_t gpa = (uint64_t)slot * g->L.region + PICK(g->c, 0, 0, g->L.align);
		set_memslot(g, vm, slot, gpa, hva, len);
	} else if (k < 9) {
		if (g->e->arch != ARCH_S390 && rarely(g->c, 10) && gen_vm_race(g, vm, pid, 1))
			return;
		if ((t = slot_target(g)).ok) {
			OP(g, OP_GUEST_FAULT, (uint64_t)t.vm, t.gpa, below(g->c, 2));
			int owner = pid_of_mm(g->e, g->e->vms[t.vm].mm);
			if (owner >= 0 && rarely(g->c, 10)) /* khugepaged collapses guest memory under the running guest (Z3) */
				OP(g, OP_KHUGEPAGED, (uint64_t)owner, t.hva);
		}
	} else {
		if (g->e->arch != ARCH_S390 && rarely(g->c, 30) && gen_vm_race(g, vm, pid, 0))
			return;
		OP(g, OP_VM_DESTROY, (uint64_t)vm);
	}
}

/* The operations that race with an in-flight actor at (pid, addr); on arm64 and x86_64 now and then stopped
 * between its invalidate_range_start and _end (inval_hold on an idle cpu; gen_actor ends it), most often when
 * the actor is a guest fault, whose commit is what the window is about. */
static bool gen_disturb(struct gen *g, int pid, uint64_t addr, enum actor_kind kind, bool walker)
{
	uint64_t pmd_base = addr & ~(g->L.pmd - 1);
	bool held = false;
	if (g->e->arch != ARCH_S390 && rarely(g->c, kind == A_GFAULT ? 60 : 15)) {
		int cpu = idle_cpu(g);
		if (cpu >= 0) {
			OP(g, OP_INVAL_HOLD, (uint64_t)cpu);
			held = true;
		}
	}
	/* a held window takes one of the changes that notify and unmap or replace the page */
	/* a walker inside a PTE table, GUP-fast or rmap (a zap of a file's mappings), is what a collapse races with
	 * (Z1, Z2, Z5): a collapse of its block more often; an rmap walker's table is also what mremap moves (Z11) */
	bool in_table = walker || kind == A_RMAP;
	unsigned k = held ? (unsigned)PICK(g->c, 0, 1, 2, 3, 7) : in_table && chance(g->c, 50) ? 3 :
		     kind == A_RMAP && chance(g->c, 25) ? 8 : below(g->c, 10);
	switch (k) {
	case 0:
		OP(g, OP_MUNMAP, (uint64_t)pid, addr & ~(g->L.page - 1), g->L.page);
		break;
	case 1:
		OP(g, OP_MUNMAP, (uint64_t)pid, pmd_base, g->L.pmd);
		break;
	case 2:
		OP(g, OP_MADVISE, (uint64_t)pid, pmd_base, g->L.pmd, 0);
		break;
	case 3:
		OP(g, OP_MADVISE, (uint64_t)pid, pmd_base, g->L.pmd, 1);
		if (!held && kind == A_WALK && walker && chance(g->c, 50)) { /* Z5: the collapse stops between isolate */
			int cpu = idle_cpu(g);                                    /* and copy, under the walker */
			if (cpu >= 0) {
				OP(g, OP_COLLAPSE_HOLD, (uint64_t)cpu);
				held = true;
			}
		}
		OP(g, OP_MADVISE, (uint64_t)pid, pmd_base, g->L.pmd, 3);
		if (!held && chance(g->c, 40)) /* then the block goes: the collapse's deposit (the old PTE table) is freed */
			OP(g, OP_MUNMAP, (uint64_t)pid, pmd_base, g->L.pmd);
		break;
	case 4:
		OP(g, OP_SPLIT, (uint64_t)pid, addr);
		break;
	case 5:
		OP(g, OP_EXIT, (uint64_t)pid);
		break;
	case 6: {
		uint64_t vm = below(g->c, g->p->nvms);
		OP(g, OP_VM_CREATE, vm, (uint64_t)pid, pick_of(g->c, g->L.ipas, g->L.nipas));
		break;
	}
	case 7:
		OP(g, OP_MMAP, (uint64_t)pid, pmd_base, g->L.pmd, below(g->c, 2));
		OP(g, OP_FAULT, (uint64_t)pid, addr, 1);
		break;
	case 8: /* issue 20: the block moves away (mremap), held before its old range's unmap now and then */
		if (!held && kind == A_RMAP && chance(g->c, 60)) {
			int cpu = idle_cpu(g);
			if (cpu >= 0) {
				OP(g, OP_MREMAP_HOLD, (uint64_t)cpu);
				held = true;
			}
		}
		OP(g, OP_MREMAP, (uint64_t)pid, pmd_base, g->L.pmd, pick_region(g) + below(g->c, 2) * g->L.pmd, g->L.pmd);
		break;
	default:
		OP0(g, OP_RCU_GP);
	}
	return held;
}

/* s390 (Z4): a page_table_free held inside mm->context.lock, between its atomic_xor_bits and its list work
 * (frag_hold on an idle cpu; gen_actor ends it). The race wants one 4K page whose two 2K halves go back by the two
 * paths: a THP block's deposit (allocated while the other half is in use) freed at once by zap_deposited_table
 * (munmap or MADV_DONTNEED of the block: page_table_free, the one held), and another table of the mm freed before
 * by free_pgtables (page_table_free_rcu: its half pending until a grace period, which comes next). The other table
 * is a 4K mapping's, made here now and then just before the block's (two tables in a row share a page every other
 * time). The exec stack's table would do too, but unmapping the stack reaches a default-knob table-leak (an old
 * 3-level top after crst_table_upgrade, reported with Z4) that is not this race's, so it is left alone here. */
static void gen_frag(struct gen *g, int cpu, int pid)
{
	uint64_t pmd = g->L.pmd;
	struct mapping m = pick_mapping(g, pid, true);
	uint64_t base = m.ok ? m.start & ~(pmd - 1) : pick_region(g);
	uint64_t other = pick_region(g);
	bool fresh = other != base && chance(g->c, 60);
	if (fresh) { /* a 4K mapping's PTE table, then the block's deposit: often the two halves of one page */
		OP(g, OP_MMAP, (uint64_t)pid, other, pmd, 0);
		OP(g, OP_FAULT, (uint64_t)pid, other, 1);
	}
	if (fresh || !m.ok || !(m.flags & VMA_THP) || chance(g->c, 30)) {
		OP(g, OP_MMAP, (uint64_t)pid, base, pmd, 1);
		OP(g, OP_FAULT, (uint64_t)pid, base, 1);
	}
	if (fresh || chance(g->c, 50)) {
		struct mapping o = pick_mapping(g, pid, false);
		if (!fresh && o.ok)
			other = o.start & ~(pmd - 1);
		if (other != base)
			OP(g, OP_MUNMAP, (uint64_t)pid, other, pmd);
	}
	OP(g, OP_FRAG_HOLD, (uint64_t)cpu);
	if (chance(g->c, 75))
		OP(g, OP_MUNMAP, (uint64_t)pid, base, pmd);
	else
		OP(g, OP_MADVISE, (uint64_t)pid, base, pmd, 0);
	if (chance(g->c, 70))
		OP0(g, OP_RCU_GP);
}

/* A thread of pid reads addr on an idle cpu, through (and filling) its TLB (issue 20). */
static void gen_touch(struct gen *g, int pid, uint64_t addr)
{
	int cpu = idle_cpu(g);
	if (pid >= 0 && cpu >= 0 && g->p->tlb)
		OP(g, OP_TLB_ACCESS, (uint64_t)cpu, (uint64_t)pid, addr, 0);
}

/* The held move (issue 20): a thread reads the page of an rmap walker of its old range at its new address, the
 * walker commits (mostly), and the move unmaps its old range. */
static void gen_mremap_end(struct gen *g, int cpu, const int *busy, int nbusy)
{
	const struct engine *e = g->e;
	const struct cpu *mc = &e->cpus[cpu];
	for (int i = 0; mc->walk_done && i < nbusy; i++) {
		const struct cpu *w = &e->cpus[busy[i]];
		if (w->actor != A_RMAP || w->mm != mc->mm || w->addr < mc->addr || w->addr - mc->addr >= mc->size)
			continue;
		gen_touch(g, pid_of_mm(e, mc->mm), mc->pfn + (w->addr - mc->addr));
		if (chance(g->c, 70))
			OP(g, OP_RMAP_COMMIT, (uint64_t)busy[i]);
		break;
	}
	OP(g, OP_MREMAP_END, (uint64_t)cpu);
}

/* A held move ends (gen_mremap_end); a held munmap (issue 20) frees its tables and flushes, after a grace period or
 * not. */
static void gen_held_end(struct gen *g, int cpu, const int *busy, int nbusy)
{
	if (g->e->cpus[cpu].actor == A_MREMAP) {
		gen_mremap_end(g, cpu, busy, nbusy);
		return;
	}
	if (chance(g->c, 40))
		OP0(g, OP_RCU_GP);
	OP(g, OP_UNSHARE_END, (uint64_t)cpu);
}

static void gen_actor(struct gen *g)
{
	struct engine *e = g->e;
	int cpu = idle_cpu(g), busy[MAX_CPUS], nbusy = 0;
	for (int i = 0; i < g->p->ncpus; i++)
		if (e->cpus[i].actor != A_NONE)
			busy[nbusy++] = i;
	if (nbusy && (cpu < 0 || chance(g->c, 60))) {
		cpu = busy[below(g->c, (uint32_t)nbusy)];
		if (e->cpus[cpu].actor == A_COLLAPSE) { /* the held collapse copies, a walker at its PTE table grabbing first or not */
			for (int i = 0; i < nbusy && chance(g->c, 50); i++)
				if (e->cpus[busy[i]].actor == A_WALK) {
					OP(g, OP_WALK_PIN, (uint64_t)busy[i]);
					break;
				}
			OP(g, OP_COLLAPSE_END, (uint64_t)cpu);
			return;
		}
		if (e->cpus[cpu].actor == A_MREMAP || e->cpus[cpu].actor == A_UNSHARE) { /* a held move or munmap ends */
			gen_held_end(g, cpu, busy, nbusy);
			return;
		}
		if (e->cpus[cpu].actor == A_FRAG) { /* the held page_table_free does its list work, after a grace period or not */
			if (chance(g->c, 40))
				OP0(g, OP_RCU_GP);
			OP(g, OP_FRAG_END, (uint64_t)cpu);
			return;
		}
		if (e->cpus[cpu].actor == A_INVAL) { /* the stopped host thread runs its _end calls, or another actor goes first */
			int others[MAX_CPUS], n = 0;
			for (int i = 0; i < nbusy; i++)
				if (e->cpus[busy[i]].actor == A_WALK || e->cpus[busy[i]].actor == A_RMAP ||
				    e->cpus[busy[i]].actor == A_GFAULT)
					others[n++] = busy[i];
			if (!n || chance(g->c, 40)) {
				OP(g, OP_INVAL_END, (uint64_t)cpu);
				return;
			}
			cpu = others[below(g->c, (uint32_t)n)];
		}
		const struct cpu *c = &e->cpus[cpu];
		enum actor_kind kind = c->actor;
		if (chance(g->c, 45)) {
			int pid = kind == A_GFAULT ? pid_of_mm(e, e->vms[c->vm].mm) : pid_of_mm(e, c->mm);
			uint64_t addr = kind == A_GFAULT ? c->hva : c->addr;
			if (pid < 0)
				pid = pick_pid(g);
			/* choices must not depend on the geometry (its level): traces replay alike on 4 and 5 levels */
			bool walker = kind == A_WALK;
			bool held = gen_disturb(g, pid, addr, kind, walker);
			if (held && kind == A_GFAULT && chance(g->c, 50))
				OP(g, OP_GUEST_FAULT_COMMIT, (uint64_t)cpu); /* inside the window the disturbance opened */
			else if (held && walker && chance(g->c, 60))
				OP(g, OP_WALK_PIN, (uint64_t)cpu); /* the walker grabs inside the held collapse (Z5) */
			return;
		}
		if (kind == A_WALK && chance(g->c, 30))
			OP(g, OP_WALK_PIN, (uint64_t)cpu); /* gup_pte_range's grab and rechecks (Z5) */
		else if (kind == A_WALK)
			OP(g, chance(g->c, 75) ? OP_WALK_STEP : OP_WALK_END, (uint64_t)cpu);
		else if (kind == A_RMAP)
			OP(g, OP_RMAP_COMMIT, (uint64_t)cpu);
		else
			OP(g, OP_GUEST_FAULT_COMMIT, (uint64_t)cpu);
		return;
	}
	int pid = pick_pid(g);
	if (e->arch == ARCH_S390 && e->procs[pid].exists && chance(g->c, 15)) {
		gen_frag(g, cpu, pid);
		return;
	}
	uint64_t addr = addr_in(g, pid);
	switch (below(g->c, 3)) {
	case 0:
		OP(g, OP_WALK_BEGIN, (uint64_t)cpu, (uint64_t)pid, addr);
		for (uint32_t n = below(g->c, 4); n; n--) /* descend now (to the PTE table): the walker holds a lower table for what comes next */
			OP(g, OP_WALK_STEP, (uint64_t)cpu);
		break;
	case 1: {
		/* an rmap walk from a folio, or in a shmem mapping as often a zap of the file's mappings (hole punch:
		 * i_mmap only, no folio lock) */
		struct mapping m = pick_mapping(g, pid, false);
		bool zap = m.shm && chance(g->c, 50);
		addr = addr_of(g, m);
		if (chance(g->c, 60))
			gen_fault_at(g, pid, addr);
		OP(g, zap ? OP_UNMAP_MAPPING_BEGIN : OP_RMAP_BEGIN, (uint64_t)cpu, (uint64_t)pid, addr);
		break;
	}
	default: {
		struct target t = slot_target(g);
		if (!t.ok) {
			gen_vm(g);
			return;
		}
		OP(g, OP_GUEST_FAULT_BEGIN, (uint64_t)cpu, (uint64_t)t.vm, t.gpa, below(g->c, 2));
	}
	}
}

/* mremap of one of pid's mappings (issue 20): moved whole, or a PMD block of it, to another region (a whole PTE
 * table moves where the arch has HAVE_MOVE_PMD), shrunk or grown in place (new_addr == old_addr), a piece moved
 * next to its own VMA (copy_vma's merge), now and then with lengths that do not fit (hugetlb alignment, growth). */
static void gen_mremap(struct gen *g, int pid)
{
	struct mapping m = pick_mapping(g, pid, false);
	if (!m.ok)
		return;
	uint64_t pmd = g->L.pmd, page = g->L.page, to = pick_region(g) + below(g->c, 2) * pmd;
	switch (below(g->c, 6)) {
	case 0:
		OP(g, OP_MREMAP, (uint64_t)pid, m.start, m.len, to, m.len);
		break;
	case 1:
		OP(g, OP_MREMAP, (uint64_t)pid, m.start & ~(pmd - 1), pmd, to, pmd);
		break;
	case 2: /* in place: shrink to a page, or by a PMD */
		OP(g, OP_MREMAP, (uint64_t)pid, m.start, m.len, m.start, PICK(g->c, page, m.len > pmd ? m.len - pmd : page));
		break;
	case 3: /* in place: grow by a few pages or a PMD */
		OP(g, OP_MREMAP, (uint64_t)pid, m.start, m.len, m.start, m.len + PICK(g->c, page, 4 * page, pmd));
		break;
	case 4: /* a piece moved to right after the mapping (or a page off) */
		OP(g, OP_MREMAP, (uint64_t)pid, m.start, PICK(g->c, page, m.len), m.start + m.len + PICK(g->c, 0, page),
		   PICK(g->c, page, m.len));
		break;
	default: /* moved and resized at once, shrinking or growing */
		OP(g, OP_MREMAP, (uint64_t)pid, m.start, m.len, to, PICK(g->c, page, m.len / 2 ? m.len / 2 : page, m.len + pmd));
	}
}

static void gen_misc(struct gen *g)
{
	unsigned k = below(g->c, 8);
	int pid = pick_pid(g);
	struct mapping m;
	switch (k) {
	case 0:
		m = pick_mapping(g, pid, false);
		if (m.ok && rarely(g->c, 50)) /* fork of written memory: COW on both sides */
			OP(g, OP_FAULT, (uint64_t)pid, addr_in(g, pid), 1);
		OP(g, OP_FORK, (uint64_t)pid, (uint64_t)(g->p->pid0 + below(g->c, g->p->npids)));
		break;
	case 1:
		OP(g, OP_EXIT, (uint64_t)pid);
		break;
	case 2:
		OP0(g, OP_RCU_GP);
		break;
	case 3: {
		uint64_t cpu = below(g->c, g->p->ncpus);
		OP(g, OP_RCU_LOCK, cpu);
		OP(g, OP_RCU_UNLOCK, cpu);
		break;
	}
	case 4:
		gen_mremap(g, pid);
		break;
	default:
		m = pick_mapping(g, pid, false);
		if (m.ok && rarely(g->c, 15)) { /* khugepaged reaches one of the pid's blocks */
			OP(g, OP_KHUGEPAGED, (uint64_t)pid, addr_of(g, m));
			break;
		}
		if (m.ok) {
			/* the mapping, or a range running past it into a hole or the next mapping (madvise_walk_vmas) */
			uint64_t starts[4] = { m.start, m.start, m.start, m.start & ~(g->L.pmd - 1) };
			uint64_t lens[4] = { m.len, m.len, m.len + g->L.region, m.len + g->L.pmd };
			unsigned i = below(g->c, 4);
			OP(g, OP_MADVISE, (uint64_t)pid, starts[i], lens[i], below(g->c, 4));
		}
	}
}

static void step(struct gen *g)
{
	const uint8_t *u = g->p->until;
	/* rotated so that a zero decision (libFuzzer's inserted and erased bytes are mostly zeros) is a fault, not an
	 * exec that throws the state away (atheris' corpus on Z2's knobs ran 4.8 execs a trace, random traces 1.8) */
	unsigned k = (below(g->c, 100) + u[W_SHM]) % 100;
	if (!any_pid(g->e) || k < u[W_EXEC])
		gen_exec(g);
	else if (k < u[W_MMAP])
		gen_mmap(g);
	else if (k < u[W_SHM])
		gen_shm(g);
	else if (k < u[W_FAULT])
		gen_fault(g);
	else if (k < u[W_ACTOR])
		gen_actor(g);
	else if (k < u[W_VM])
		gen_vm(g);
	else
		gen_misc(g);
}

static const uint64_t ipas_arm64[] = { 0, 32, 33, 36, 40, 44, 48 }, ipas_other[] = { 0 };

/* Where generated traces put things: regions of a PUD or 4 PMDs (whichever is larger), from 4 regions up;
 * memslot alignment; vm_create's ipa_bits choices. check's address slots come from here too. */
void gen_layout(const struct engine *e, struct gen_layout *L)
{
	L->page = e->geom.page_size;
	L->pmd = 1ull << e->geom.pmd_shift;
	L->pud = e->geom.pud_shift ? 1ull << e->geom.pud_shift : 0;
	L->region = L->pud > 4 * L->pmd ? L->pud : 4 * L->pmd;
	L->base = 4 * L->region;
	L->align = e->arch == ARCH_S390 ? 1ull << 20 : L->page; /* s390 memslots are 1 MiB segments */
	L->ipas = e->arch == ARCH_ARM64 ? ipas_arm64 : ipas_other;
	L->nipas = e->arch == ARCH_ARM64 ? 7 : 1;
}

int ptf_generate(struct engine *e, enum gen_profile_id profile, struct choices *c, size_t max_ops,
		 bool teardown, struct gen_result *out)
{
	memset(out, 0, sizeof(*out));
	if ((unsigned)profile >= GEN_NPROFILES)
		return -EINVAL;
	struct gen g = { .e = e, .p = &profiles[profile], .c = c, .max_rows = max_ops };
	gen_layout(e, &g.L);
	size_t n = g.p->exact ? max_ops : 1 + below(c, clamp32(max_ops));
	if (!max_ops)
		g.stopped = true;
	while (!g.stopped && g.nrows - g.blocked < n) {
		step(&g);
		if (!g.p->exact && exhausted(c) && g.nrows)
			break;
	}
	if (teardown && !g.nomem) {
		e->op_index = (uint32_t)g.nrows;
		ptf_finish(e, true);
	}
	out->rows = g.rows;
	out->nrows = g.nrows;
	out->viol = e->viol;
	out->viol_op = e->viol_op;
	out->nomem = g.nomem || c->nomem;
	return out->nomem ? -ENOMEM : 0;
}

#ifdef GEN_PRAGMA_PUSHED
#pragma clang attribute pop
#endif
