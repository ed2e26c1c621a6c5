/* core/pool.c: table pages with generations, data pages, and the one entry-write path the oracle watches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ptf.h"

#define PAGE_BYTES 4096u

struct tref tref_from_phys(struct engine *e, uint64_t phys)
{
	int64_t blk = (int64_t)(phys >> 14) - 1;
	struct tref t = TREF_NONE;
	if (blk < 0 || blk >= e->nblocks)
		return t;
	t.blk = (int32_t)blk;
	t.half = (phys >> 11) & 1;
	t.gen = e->blocks[blk].gen[t.half];
	return t;
}

/* ---- the TLB side of a free (core/tlb.c holds the TLBs): mmu_gather's rule, flush before free ---- */

/* An entry that counts: of an mm not torn down, and not one an open mmu_gather will flush before its frees. */
bool tlb_entry_counts(const struct engine *e, const struct tlb_entry *t)
{
	if (e->mms[t->mm].dead || !e->mms[t->mm].used)
		return false;
	const struct mmu_gather *g = &e->gather;
	if (g->active != 1 || g->mm != t->mm)
		return true;
	uint64_t end = t->va + tlb_entry_span(e, t);
	return !(t->va < g->end && (end > g->start || end < t->va));
}

/* The cpus caching an entry like t (same kind and target) that counts, as "0,3" (empty: none). */
void tlb_caching_cpus(const struct engine *e, uint8_t kind, uint64_t lo, uint64_t hi, char *buf, size_t cap)
{
	size_t n = 0;
	buf[0] = 0;
	for (int o = 0; o < MAX_CPUS; o++)
		for (int j = 0, l = tlb_len(e, o); j < l; j++) {
			const struct tlb_entry *u = &e->tlb[o][j];
			uint64_t ulo = u->target, uhi = kind == TLBE_LEAF ? ulo + (tlb_entry_span(e, u) >> 12) : ulo + 1;
			if (u->kind == kind && ulo < hi && uhi > lo && tlb_entry_counts(e, u) && n + 4 < cap) {
				n += (size_t)snprintf(buf + n, cap - n, "%s%d", n ? "," : "", o);
				break;
			}
		}
}

/* At the free of a data page (the compound going back): the cpus whose TLB still translates to it. */
static void tlb_check_free_page(struct engine *e, const struct compound *c)
{
	if (!e->tlb_used || e->viol)
		return;
	char cpus[96];
	tlb_caching_cpus(e, TLBE_LEAF, c->pfn, c->pfn + cpd_nr(c), cpus, sizeof(cpus));
	if (cpus[0])
		violate_at(e, V_STALE_TLB, &(struct viol_focus){ .has = VF_PFN, .pfn = c->pfn },
			   "pfn 0x%llx is freed while cpu %s still caches a translation to it: no flush reached it first",
			   (unsigned long long)c->pfn, cpus);
}

/* At the release of a table page: the cpus whose walk cache still points into it. */
static void tlb_check_free_table(struct engine *e, int32_t blk)
{
	if (!e->tlb_used || e->viol)
		return;
	char cpus[96];
	uint64_t phys = tref_phys((struct tref){ blk, 0, 0 });
	tlb_caching_cpus(e, TLBE_TABLE, phys, phys + (1u << 14), cpus, sizeof(cpus));
	if (cpus[0])
		violate_at(e, V_STALE_TLB, &(struct viol_focus){ .has = VF_TABLE, .table = phys },
			   "table page 0x%llx is freed while cpu %s still caches a walk entry pointing into it: no flush "
			   "reached its walk cache first", (unsigned long long)phys, cpus);
}

bool tref_alive(struct engine *e, struct tref t)
{
	if (t.blk < 0 || t.blk >= e->nblocks)
		return false;
	struct block *b = &e->blocks[t.blk];
	return b->used && b->gen[t.half] == t.gen;
}


/* Every dereference of a remembered table pointer goes through here. */
uint64_t *tref_deref(struct engine *e, struct tref t, const char *who)
{
	if (!tref_alive(e, t)) {
		violate_at(e, V_UAF_TABLE, &(struct viol_focus){ .has = VF_TABLE, .table = tref_phys(t) },
			"%s dereferenced table at 0x%llx, freed since it took the pointer",
			who, (unsigned long long)tref_phys(t));
		return NULL;
	}
	return tref_mem(e, t);
}


static int grow(void **p, size_t elem, uint64_t *cap, uint64_t need)
{
	if (need <= *cap)
		return 0;
	uint64_t n = *cap ? *cap * 2 : 64;
	while (n < need)
		n *= 2;
	void *q = realloc(*p, n * elem);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

/* Every entry of a new table empty. s390's empty entries are not 0, and a one-word loop here was a third of
 * the engine's instructions (a 4-page CRST is 2,048 entries): seed 8 entries, then double them with memcpy,
 * which the C library does in vector registers. n is a multiple of 8 (256 entries per 2K half). */
static void fill_entries(uint64_t *mem, uint64_t empty, size_t n)
{
	if (!empty) {
		memset(mem, 0, n * 8);
		return;
	}
	for (size_t i = 0; i < 8 && i < n; i++)
		mem[i] = empty;
	for (size_t done = 8; done < n; done *= 2)
		memcpy(mem + done, mem, (done < n - done ? done : n - done) * 8);
}

int table_alloc(struct engine *e, int mm, int level, int pages, struct tref *out)
{
	if (e->st.pages_in_use + (uint64_t)pages > e->max_table_pages)
		return -ENOMEM;
	int32_t id = e->free_blocks;
	if (id >= 0) {
		e->free_blocks = e->blocks[id].next_free;
	} else {
		uint64_t cap = (uint64_t)e->capblocks;
		if (grow((void **)&e->blocks, sizeof(struct block), &cap, (uint64_t)e->nblocks + 1))
			return -ENOMEM;
		e->capblocks = (int32_t)cap;
		id = e->nblocks++;
		memset(&e->blocks[id], 0, sizeof(struct block));
	}
	struct block *b = &e->blocks[id];
	uint32_t g0 = b->gen[0], g1 = b->gen[1];
	memset(b, 0, sizeof(*b));
	b->gen[0] = g0;
	b->gen[1] = g1;
	b->mem = malloc((size_t)pages * PAGE_BYTES);
	if (!b->mem) {
		b->next_free = e->free_blocks;
		e->free_blocks = id;
		return -ENOMEM;
	}
	b->pages = (uint16_t)pages;
	b->used = 1;
	b->half[0] = H_ALLOC;
	b->level[0] = b->level[1] = (int8_t)level;
	b->mm[0] = b->mm[1] = (int16_t)mm;
	b->list_next = b->list_prev = -1;
	fill_entries(b->mem, (mm >= 0 ? e->geom.fmt : e->s2_fmt)->empty(level), (size_t)pages * PAGE_BYTES / 8);
	e->st.pages_in_use += pages;
	if (e->st.pages_in_use > e->st.pages_peak)
		e->st.pages_peak = e->st.pages_in_use;
	e->st.tables_allocated++;
	*out = (struct tref){ id, 0, b->gen[0] };
	return 0;
}

/* The block's memory goes back to the pool: every pointer into it is stale. */
void block_release(struct engine *e, int32_t id)
{
	struct block *b = &e->blocks[id];
	if (!b->used) {
		violate_at(e, V_DOUBLE_FREE, &(struct viol_focus){ .has = VF_TABLE, .table = tref_phys((struct tref){ id, 0, 0 }) },
			   "table page at 0x%llx freed twice",
			(unsigned long long)tref_phys((struct tref){ id, 0, 0 }));
		return;
	}
	if (b->dep_head)
		violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_TABLE, .table = tref_phys((struct tref){ id, 0, 0 }) },
			   "PMD table at 0x%llx freed with PTE tables still deposited in it",
			(unsigned long long)tref_phys((struct tref){ id, 0, 0 }));
	tlb_check_free_table(e, id);
	e->st.pages_in_use -= b->pages;
	e->frag_dirty = e->gmap_dirty = true;
	free(b->mem);
	b->mem = NULL;
	b->used = 0;
	b->gen[0]++;
	b->gen[1]++;
	b->half[0] = b->half[1] = H_FREE;
	b->next_free = e->free_blocks;
	e->free_blocks = id;
}

/* A compound of nr pages (a power of two), naturally aligned; 0 when memory runs out: the record array cannot
 * grow, or the data pfns [DATA_PFN_BASE, ZERO_PFN_BASE) are used up (pfns are never reused). */
/* Every page table given back is counted here, once (stats.tables_freed), whichever way it goes. */
void table_free(struct engine *e, struct tref t, enum table_free how, int level, uint64_t owner)
{
	e->st.tables_freed++;
	switch (how) {
	case TABLE_FREE_NOW:
		emit(e, EV_TABLE_FREE, (uint64_t)level, tref_phys(t), owner, 0);
		block_release(e, t.blk);
		break;
	case TABLE_FREE_SILENT:
		block_release(e, t.blk);
		break;
	case TABLE_FREE_RCU:
		call_rcu_table(e, CB_FREE_BLOCK, t.blk, 0);
		break;
	case TABLE_FREE_BY_ARCH:
		break;
	}
}

/* tlb_remove_table_rcu: the RCU callback of a table freed with TABLE_FREE_RCU (CB_FREE_BLOCK) */
void tlb_remove_table_rcu(struct engine *e, int32_t blk, int half)
{
	(void)half;
	block_release(e, blk);
}

uint64_t data_alloc(struct engine *e, uint64_t nr)
{
	if (!nr || (nr & (nr - 1)) || nr > 1ull << CPD_MAX_ORDER) {
		violate(e, V_ENGINE_ASSERT, "data_alloc of %llu pages: not a power of two up to 2^%d",
			(unsigned long long)nr, CPD_MAX_ORDER);
		return 0;
	}
	if (grow((void **)&e->cpd, sizeof(struct compound), &e->capcpd, e->ncpd + 1))
		return 0;
	if (e->next_pfn < DATA_PFN_BASE)
		e->next_pfn = DATA_PFN_BASE;
	uint64_t pfn = (e->next_pfn + nr - 1) & ~(nr - 1);
	if (pfn + nr > ZERO_PFN_BASE)
		return 0; /* the zero pages and nothing else live at and above ZERO_PFN_BASE */
	e->next_pfn = pfn + nr;
	e->cpd[e->ncpd++] = (struct compound){ .pfn = pfn, .order = (unsigned)__builtin_ctzll(nr) };
	e->st.data_pages += nr;
	if (e->st.data_pages > e->st.data_pages_peak)
		e->st.data_pages_peak = e->st.data_pages;
	return pfn;
}

/* is_zero_pfn (and is_huge_zero_pfn): the zero pages are never allocated, freed or counted. */
bool is_zero_pfn(uint64_t pfn)
{
	return pfn >= ZERO_PFN_BASE && pfn < ZERO_PFN_END;
}

/* A page a leaf may map: a zero page, or a data page not freed (the oracles' notion of "exists"). */
bool page_alive(struct engine *e, uint64_t pfn)
{
	if (is_zero_pfn(pfn))
		return true;
	struct compound *c = data_lookup(e, pfn);
	return c && !c->freed;
}

/* The index of the compound holding pfn (the last one starting at or below it), or ncpd for none; reads no
 * cache and writes nothing, so the digest can use it on a const engine. */
uint64_t compound_index(const struct engine *e, uint64_t pfn)
{
	if (pfn < DATA_PFN_BASE || pfn >= e->next_pfn)
		return e->ncpd; /* tables, the zero pages, nothing allocated yet */
	uint64_t lo = 0, hi = e->ncpd;
	while (lo < hi) {
		uint64_t mid = (lo + hi) / 2;
		if (e->cpd[mid].pfn <= pfn)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0 || pfn - e->cpd[lo - 1].pfn >= cpd_nr(&e->cpd[lo - 1]))
		return e->ncpd;
	return lo - 1;
}

/* The compound holding pfn, through a one-entry cache. */
struct compound *data_lookup(struct engine *e, uint64_t pfn)
{
	struct compound *last = e->last_cpd < e->ncpd ? &e->cpd[e->last_cpd] : NULL;
	if (last && pfn >= last->pfn && pfn - last->pfn < cpd_nr(last))
		return last; /* walks over one THP ask for the same compound 512 times */
	uint64_t i = compound_index(e, pfn);
	if (i == e->ncpd)
		return NULL;
	e->last_cpd = i;
	return &e->cpd[i];
}

/* A kernel path dropped one mapping of the page (page_remove_rmap + folio_put): an anonymous or hugetlb page is
 * freed with its last mapping, a shmem page stays in its object's page cache. */
void data_put(struct engine *e, uint64_t pfn)
{
	struct compound *c = data_lookup(e, pfn);
	if (!c)
		return;
	if (c->freed) {
		violate_at(e, V_DOUBLE_FREE, &(struct viol_focus){ .has = VF_PFN, .pfn = pfn },
			"data page pfn 0x%llx freed twice", (unsigned long long)pfn);
		return;
	}
	if (c->shm) { /* the page cache keeps a shmem page: its object frees it (collapse_file, end of trace) */
		if (--c->mapcount < 0)
			violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_PFN, .pfn = pfn },
				   "shmem page pfn 0x%llx unmapped more often than mapped",
				(unsigned long long)pfn);
		return;
	}
	if (--c->mapcount > 0)
		return;
	c->freed = 1;
	tlb_check_free_page(e, c);
	e->st.data_pages -= cpd_nr(c);
	emit(e, EV_DATA_FREE, c->pfn, cpd_nr(c), 0, 0);
	if (c->live > 0)
		violate_at(e, V_FREED_PAGE_MAPPED, &(struct viol_focus){ .has = VF_PFN, .pfn = pfn },
			   "data page pfn 0x%llx freed while %d live leaves still map it",
			(unsigned long long)pfn, c->live);
}

const struct entry_fmt *block_fmt(struct engine *e, const struct block *b, int half)
{
	return b->mm[half] >= 0 ? e->geom.fmt : e->s2_fmt;
}

static void live_adjust(struct engine *e, int level, uint64_t val, int delta)
{
	const struct entry_fmt *f = e->geom.fmt;
	struct compound *c = data_lookup(e, f->addr(level, val) >> 12);
	if (c)
		c->live += delta;
}

/* A PMD leaf came or went in a shared hugetlb PMD table (mm/hugetlb.c, huge_pmd_share): every mm whose pud links it
 * besides its owner sees it too. */
static void pmd_share_leaves(struct engine *e, int32_t blk, int delta)
{
	for (int32_t k = 0; k < e->npmd_links; k++)
		if (e->pmd_links[k].blk == blk)
			e->mms[e->pmd_links[k].mm].pmd_leaves += (uint64_t)(int64_t)delta;
}

/* The one place a host page-table entry changes: the oracle's eyes. */
void entry_write(struct engine *e, struct tref t, int level, uint32_t idx, uint64_t val)
{
	struct block *b = &e->blocks[t.blk];
	uint64_t *slot = &tref_mem(e, t)[idx];
	const struct entry_fmt *f = block_fmt(e, b, t.half);
	enum entry_kind was = f->kind(level, *slot), now = f->kind(level, val);
	b->nonempty[t.half] += (now != E_EMPTY) - (was != E_EMPTY);
	b->leaves[t.half] += (now == E_LEAF) - (was == E_LEAF);
	if (b->mm[t.half] >= 0) {
		if (b->linked[t.half] == L_UNLINKED || b->linked[t.half] == L_DEPOSITED)
			violate_at(e, V_LOST_UPDATE, &(struct viol_focus){ .has = VF_TABLE | VF_ENTRY | VF_MM, .table = tref_phys(t),
				   .entry = idx, .mm = b->mm[t.half] }, "write of 0x%llx into entry %u of level-%d table 0x%llx, "
				"which is no longer linked into mm %d%s", (unsigned long long)val, idx, level,
				(unsigned long long)tref_phys(t), b->mm[t.half],
				b->linked[t.half] == L_DEPOSITED ? " (it is a deposited table)" : "");
		if (b->linked[t.half] == L_LINKED) {
			if (was == E_LEAF)
				live_adjust(e, level, *slot, -1);
			if (now == E_LEAF)
				live_adjust(e, level, val, +1);
			if (level == e->pmd_lvl && was != now && (was == E_LEAF || now == E_LEAF)) {
				e->mms[b->mm[t.half]].pmd_leaves += now == E_LEAF ? 1 : -1;
				if (b->pmd_share) /* a shared hugetlb PMD table: its other links see it too */
					pmd_share_leaves(e, t.blk, now == E_LEAF ? 1 : -1);
			}
		}
	}
	*slot = val;
	b->occ[t.half] |= 1ull << (idx >> block_chunk_shift(b));
}

/* mm_inc_nr_ptes / pmds / puds: what one table at this level adds to mm_pgtables_bytes. The pgd and
 * p4d are never counted, nor are folded levels (pgtable-nopud/nopmd, s390's mm_pud_folded by
 * asce_limit); a table counts PTRS_PER_* entries of 8 bytes (2K for an s390 PTE table, PGSTEs or not). */
uint64_t pt_level_bytes(struct engine *e, int mm, int level)
{
	if (mm < 0 || level < 2 || level == e->mms[mm].pgt.top || e->geom.lv[level].folded)
		return 0;
	return e->geom.lv[level].table_bytes;
}

static bool state_counted(int state)
{
	return state == L_LINKED || state == L_DEPOSITED;
}

/* L_PRIVATE (new, or withdrawn), L_LINKED, L_UNLINKED, L_DEPOSITED. Leaves count as live only in
 * linked tables; linked and deposited tables count in the mm's page-table bytes. */
void table_set_state(struct engine *e, struct tref t, int state)
{
	struct block *b = &e->blocks[t.blk];
	int was = b->linked[t.half];
	if (b->pmd_share && state != L_LINKED)
		violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_TABLE, .table = tref_phys(t) },
			   "PMD table 0x%llx unlinked while %u other puds still share it", (unsigned long long)tref_phys(t),
			   b->pmd_share);
	b->linked[t.half] = (uint8_t)state;
	e->gmap_dirty = true;
	int mm = b->mm[t.half];
	if (mm < 0)
		return;
	int level = b->level[t.half];
	if (state_counted(was) != state_counted(state)) {
		uint64_t bytes = pt_level_bytes(e, mm, level);
		if (state_counted(state))
			e->mms[mm].pt_bytes += bytes;
		else
			e->mms[mm].pt_bytes -= bytes;
	}
	if ((was == L_LINKED) == (state == L_LINKED) || !b->leaves[t.half])
		return;
	int delta = state == L_LINKED ? 1 : -1;
	uint32_t n = e->geom.lv[level].entries;
	uint64_t *m = tref_mem(e, t);
	for (uint32_t i = 0; i < n; i++) {
		if (e->geom.fmt->kind(level, m[i]) != E_LEAF)
			continue;
		live_adjust(e, level, m[i], delta);
		if (level == e->pmd_lvl)
			e->mms[mm].pmd_leaves += delta;
	}
}

void table_set_linked(struct engine *e, struct tref t, bool linked)
{
	table_set_state(e, t, linked ? L_LINKED : L_UNLINKED);
}

/* pgtable_trans_huge_deposit: the PTE table joins the PMD table's list (pmd_huge_pte), newest first. */
void pgtable_trans_huge_deposit(struct engine *e, struct tref pmd_tbl, struct tref pte)
{
	int32_t id = e->free_deps;
	if (id >= 0) {
		e->free_deps = e->deps[id].next;
	} else {
		uint64_t cap = (uint64_t)e->capdeps;
		if (grow((void **)&e->deps, sizeof(struct deposit), &cap, (uint64_t)e->ndeps + 1)) {
			violate(e, V_ENGINE_ASSERT, "out of memory depositing a page table");
			return;
		}
		e->capdeps = (int32_t)cap;
		id = e->ndeps++;
	}
	struct block *pb = &e->blocks[pmd_tbl.blk];
	e->deps[id] = (struct deposit){ pte, pb->dep_head - 1 };
	pb->dep_head = id + 1;
	table_set_state(e, pte, L_DEPOSITED);
}

/* pgtable_trans_huge_withdraw: the newest deposit of that PMD table, now private to the caller. */
struct tref pgtable_trans_huge_withdraw(struct engine *e, struct tref pmd_tbl)
{
	struct block *pb = &e->blocks[pmd_tbl.blk];
	if (!pb->dep_head) {
		violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_TABLE, .table = tref_phys(pmd_tbl) },
			   "no PTE table deposited in the PMD table at 0x%llx",
			(unsigned long long)tref_phys(pmd_tbl));
		return TREF_NONE;
	}
	int32_t id = pb->dep_head - 1;
	struct tref t = e->deps[id].t;
	pb->dep_head = e->deps[id].next + 1;
	e->deps[id].next = e->free_deps;
	e->free_deps = id;
	table_set_state(e, t, L_PRIVATE);
	return t;
}
