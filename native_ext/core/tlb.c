/* core/tlb.c: the CPUs' TLBs (the hardware: what an access caches, what each flush drops) and the check that no
 * cpu still translates to a freed page or walks through a freed page table (issue 20, docs/model-notes.md "TLB").
 *
 * A kernel path flushes where the kernel does (flush_tlb_range, ptep_clear_flush, pmdp_collapse_flush,
 * tlb_finish_mmu, ...) and nowhere else: a missing or misplaced flush is what this model is for. The flushes
 * reach every cpu: arm64 broadcasts its TLBI; x86 IPIs the cpus in mm_cpumask, and a cpu that left the mm
 * lazily either gets the IPI (freed_tables) or cannot use its stale entries until switch_mm flushes them, which
 * for what an access can reach is the same. s390's IPTE/IDTE clear an entry and flush it in one instruction:
 * paths call the flush beside the clear. */
#include <stdio.h>
#include <string.h>
#include "ptf.h"

/* Drop the entries drop() picks, the others keeping their order. */
static void tlb_filter(struct engine *e, bool (*drop)(const struct engine *, const struct tlb_entry *, const void *),
		       const void *arg)
{
	if (!e->tlb_used)
		return;
	for (int c = 0; c < MAX_CPUS; c++) {
		struct tlb_entry *t = e->tlb[c];
		int n = tlb_len(e, c), k = 0;
		for (int i = 0; i < n; i++) {
			if (drop(e, &t[i], arg)) {
				e->tlb_used--;
				continue;
			}
			t[k++] = t[i];
		}
		for (int i = k; i < n; i++)
			memset(&t[i], 0, sizeof(t[i]));
	}
}

struct flush_arg { int mm; uint64_t start, end; };

static bool flush_drop(const struct engine *e, const struct tlb_entry *t, const void *arg)
{
	const struct flush_arg *a = arg;
	if (t->mm != a->mm)
		return false;
	uint64_t end = t->va + tlb_entry_span(e, t);
	return t->va < a->end && (end > a->start || end < t->va);
}

/* flush_tlb_range (and tlb_finish_mmu's flush of its gathered range): every cpu drops mm's leaf and walk-cache
 * entries that map any part of [start, end). */
void flush_tlb_range(struct engine *e, int mm, uint64_t start, uint64_t end)
{
	struct flush_arg a = { mm, start, end };
	tlb_filter(e, flush_drop, &a);
}

void flush_tlb_page(struct engine *e, int mm, uint64_t addr)
{
	uint64_t page = addr & ~(e->geom.page_size - 1);
	flush_tlb_range(e, mm, page, page + e->geom.page_size);
}

void flush_tlb_mm(struct engine *e, int mm)
{
	flush_tlb_range(e, mm, 0, ~0ull);
}

/* tlb_gather_mmu .. tlb_finish_mmu around a zap (unmap_region, zap_page_range_single, exit_mmap: fullmm is the
 * whole mm): the pages and tables the zap frees go back after the flush of its range (tlb_batch_pages_flush and
 * tlb_table_flush follow tlb_flush_mmu_tlbonly), so the free-time check does not count entries the flush will
 * drop. arm64's v6.6 fullmm tlb_flush flushes only when tables were freed ("the ASID allocator won't reallocate
 * our ASID without invalidating the entire TLB"): a batch flushed inside exit's unmap_vmas frees pages a retired
 * ASID still names, which the checks allow for a torn-down mm; the final flush is flush_tlb_mm. */
void tlb_gather_mmu(struct engine *e, int mm, uint64_t start, uint64_t end)
{
	/* mm.tlb_gather=none: the range is remembered for the final flush, but nothing waits for it */
	e->gather = (struct mmu_gather){ mm, e->knob[K_TLB_GATHER] == 0 ? 1u : 2u, start, end };
}

void tlb_finish_mmu(struct engine *e)
{
	if (e->gather.active)
		flush_tlb_range(e, e->gather.mm, e->gather.start, e->gather.end);
	memset(&e->gather, 0, sizeof(e->gather));
}

void tlb_forget_mm(struct engine *e, int mm)
{
	flush_tlb_mm(e, mm);
}

/* Cache one entry on cpu: replace the entry for the same level and VA, else append, dropping the oldest of a
 * full TLB. */
static void tlb_fill(struct engine *e, int cpu, const struct tlb_entry *n)
{
	struct tlb_entry *t = e->tlb[cpu];
	int len = tlb_len(e, cpu);
	for (int i = 0; i < len; i++)
		if (t[i].mm == n->mm && t[i].kind == n->kind && t[i].level == n->level && t[i].va == n->va) {
			memmove(&t[i], &t[i + 1], (size_t)(len - i - 1) * sizeof(*t));
			len--;
			e->tlb_used--;
			break;
		}
	if (len == TLB_NR) {
		memmove(&t[0], &t[1], (size_t)(TLB_NR - 1) * sizeof(*t));
		len--;
		e->tlb_used--;
	}
	t[len] = *n;
	if (len + 1 < TLB_NR)
		memset(&t[len + 1], 0, sizeof(*t));
	e->tlb_used++;
}

static bool leaf_page_freed(struct engine *e, uint64_t pfn)
{
	const struct compound *c = data_lookup(e, pfn);
	return c && c->freed;
}

static bool table_freed(struct engine *e, const struct tlb_entry *t)
{
	struct tref r = tref_from_phys(e, t->target);
	r.gen = t->gen;
	return !tref_alive(e, r);
}

/* The hardware's walk for addr: from the deepest table entry the walk cache holds for it (stale or not: that is
 * what hardware does), else from the mm's pgd; each table entry on the way and the leaf are cached. */
static int hw_walk(struct engine *e, int cpu, int mm, uint64_t addr, bool write)
{
	const struct geom *g = &e->geom;
	const struct entry_fmt *f = g->fmt;
	struct pgtable *p = &e->mms[mm].pgt;
	struct tref tbl = p->root;
	int level = p->top, len = tlb_len(e, cpu);
	const struct tlb_entry *wc = NULL;
	for (int i = 0; i < len; i++) {
		const struct tlb_entry *t = &e->tlb[cpu][i];
		if (t->kind == TLBE_TABLE && t->mm == mm && t->va == (addr & ~(tlb_entry_span(e, t) - 1)) &&
		    (!wc || t->level > wc->level))
			wc = t;
	}
	if (wc) {
		if (table_freed(e, wc)) {
			violate_at(e, V_STALE_TLB, &(struct viol_focus){ .has = VF_TABLE | VF_MM | VF_HVA,
				   .table = wc->target, .mm = mm, .hva = addr },
				   "cpu %d walks va 0x%llx of mm %d through its cached level-%d entry into table 0x%llx, "
				   "which was freed", cpu, (unsigned long long)addr, mm, wc->level,
				   (unsigned long long)wc->target);
			return -EFAULT;
		}
		tbl = tref_from_phys(e, wc->target);
		level = child_level(g, wc->level);
	} else if (tbl.blk < 0) {
		return -EFAULT;
	}
	for (;;) {
		const struct level_geom *lv = &g->lv[level];
		uint64_t slot = addr >> lv->shift;
		if (level == p->top && !wc && slot >= lv->entries)
			return -EFAULT; /* above what the top table maps (s390's asce limit) */
		uint32_t idx = (uint32_t)(slot & (lv->entries - 1));
		uint64_t ent = entry_get(e, tbl, idx);
		uint64_t va = addr & ~(level_size(g, level) - 1);
		enum entry_kind k = f->kind(level, ent);
		if (level < g->nlevels - 1 && k == E_TABLE) {
			struct tref child = tref_from_phys(e, f->addr(level, ent));
			tlb_fill(e, cpu, &(struct tlb_entry){ .kind = TLBE_TABLE, .level = (uint8_t)level, .mm = mm,
					  .va = va, .target = f->addr(level, ent), .gen = child.gen });
			tbl = child;
			level = child_level(g, level);
			continue;
		}
		if (k != E_LEAF || (write && !f->writable(level, ent)))
			return -EFAULT; /* the access faults: the trace's fault operation handles that */
		tlb_fill(e, cpu, &(struct tlb_entry){ .kind = TLBE_LEAF, .level = (uint8_t)level, .mm = mm, .va = va,
				  .target = f->addr(level, ent) >> 12, .write = f->writable(level, ent) });
		return 0;
	}
}

/* tlb_access: a thread of pid running on cpu loads (or stores to) addr: a TLB hit translates at once (a store needs
 * a writable entry), a miss walks. -14 when the access would fault; nothing is faulted in. */
int tlb_access(struct engine *e, int cpu, uint64_t pid, uint64_t addr, bool write)
{
	int mm = proc_mm(e, pid);
	if (mm < 0)
		return mm;
	if (addr >= e->task_size)
		return -EFAULT;
	int len = tlb_len(e, cpu);
	for (int i = 0; i < len; i++) {
		const struct tlb_entry *t = &e->tlb[cpu][i];
		if (t->kind != TLBE_LEAF || t->mm != mm || addr < t->va || addr - t->va >= tlb_entry_span(e, t) ||
		    (write && !t->write))
			continue;
		uint64_t pfn = t->target + ((addr - t->va) >> 12);
		if (leaf_page_freed(e, pfn))
			violate_at(e, V_STALE_TLB, &(struct viol_focus){ .has = VF_PFN | VF_MM | VF_HVA, .pfn = pfn,
				   .mm = mm, .hva = addr },
				   "cpu %d's access to va 0x%llx of mm %d uses a TLB entry that translates to pfn 0x%llx, "
				   "which was freed", cpu, (unsigned long long)addr, mm, (unsigned long long)pfn);
		return 0;
	}
	return hw_walk(e, cpu, mm, addr, write);
}

/* After each operation: no cpu may still cache a translation to a freed page or a walk entry into a freed
 * table. Entries of an mm whose teardown is done (arm64's retired ASID) cannot be used: not counted. */
void tlb_check(struct engine *e)
{
	if (e->gather.active) { /* every zap finishes its gather inside its operation */
		if (!e->viol)
			violate(e, V_ENGINE_ASSERT, "an mmu_gather of mm %d was left open after the operation",
				e->gather.mm);
		memset(&e->gather, 0, sizeof(e->gather));
	}
	if (!e->tlb_used || e->viol)
		return;
	for (int c = 0; c < MAX_CPUS; c++) {
		int len = tlb_len(e, c);
		for (int i = 0; i < len; i++) {
			const struct tlb_entry *t = &e->tlb[c][i];
			if (!tlb_entry_counts(e, t))
				continue;
			bool leaf = t->kind == TLBE_LEAF;
			if (leaf ? !leaf_page_freed(e, t->target) : !table_freed(e, t))
				continue;
			char cpus[96];
			uint64_t lo = t->target, hi = lo + 1;
			tlb_caching_cpus(e, t->kind, lo, hi, cpus, sizeof(cpus));
			if (leaf)
				violate_at(e, V_STALE_TLB, &(struct viol_focus){ .has = VF_PFN | VF_MM | VF_HVA,
					   .pfn = t->target, .mm = t->mm, .hva = t->va },
					   "pfn 0x%llx is freed while cpu %s still caches its translation (va 0x%llx of "
					   "mm %d): no flush reached it", (unsigned long long)t->target, cpus,
					   (unsigned long long)t->va, t->mm);
			else
				violate_at(e, V_STALE_TLB, &(struct viol_focus){ .has = VF_TABLE | VF_MM | VF_HVA,
					   .table = t->target, .mm = t->mm, .hva = t->va },
					   "table 0x%llx is freed while cpu %s still caches the level-%d entry pointing at "
					   "it (va 0x%llx of mm %d): no flush reached its walk cache",
					   (unsigned long long)t->target, cpus, t->level, (unsigned long long)t->va, t->mm);
			return;
		}
	}
}
