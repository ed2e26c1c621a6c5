/* arch/s390/pgalloc.c: s390 page-table allocation (v6.6 arch/s390/mm/pgalloc.c): 2K PTE fragments, PGSTE
 * tables, their three ways back (page_table_free, page_table_free_rcu, pte_free_defer) and crst_table_upgrade. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "arch/s390/pgalloc.h"
#include "arch/s390/gmap.h"

enum { R1, R2, R3, SEG, PTE };
static void frag_window_flush(struct engine *e, int mm);
#define SEG_SIZE (1ull << 20)

/* ---- the per-mm fragment reuse list (mm->context.pgtable_list) ---- */

static void list_del(struct engine *e, int mm, int32_t blk)
{
	struct block *b = &e->blocks[blk];
	if (!b->listed)
		return;
	if (b->list_prev >= 0)
		e->blocks[b->list_prev].list_next = b->list_next;
	else
		e->mms[mm].frag_list = b->list_next;
	if (b->list_next >= 0)
		e->blocks[b->list_next].list_prev = b->list_prev;
	b->listed = 0;
	b->list_next = b->list_prev = -1;
}

static void list_add(struct engine *e, int mm, int32_t blk, bool tail)
{
	struct block *b = &e->blocks[blk];
	list_del(e, mm, blk);
	b->listed = 1;
	if (!tail || e->mms[mm].frag_list < 0) {
		b->list_prev = -1;
		b->list_next = e->mms[mm].frag_list;
		if (b->list_next >= 0)
			e->blocks[b->list_next].list_prev = blk;
		e->mms[mm].frag_list = blk;
		return;
	}
	int32_t t = e->mms[mm].frag_list;
	while (e->blocks[t].list_next >= 0)
		t = e->blocks[t].list_next;
	e->blocks[t].list_next = blk;
	b->list_prev = t;
	b->list_next = -1;
}

static void init_pte_half(struct engine *e, struct tref t)
{
	uint64_t *m = tref_mem(e, t);
	for (int i = 0; i < 256; i++)
		m[i] = 0x400; /* _PAGE_INVALID */
	e->blocks[t.blk].nonempty[t.half] = e->blocks[t.blk].leaves[t.half] = 0;
	e->blocks[t.blk].occ[t.half] = 0; /* every word is back to its initial value */
}

/* page_table_alloc (v6.6): reuse a listed half, else a fresh page. */
int page_table_alloc(struct engine *e, int mm, struct tref *out)
{
	struct mm *m = &e->mms[mm];
	e->frag_dirty = true;
	frag_window_flush(e, mm);
	int mode = e->knob[K_PT_ALLOC];
	bool full = mode == PA_FULL_PAGE || (m->alloc_pgste && mode != PA_FRAGMENTS_ALWAYS);
	if (!full && m->frag_list >= 0) {
		int32_t blk = m->frag_list;
		struct block *b = &e->blocks[blk];
		unsigned mask = (b->half[0] != H_FREE) | (b->half[1] != H_FREE) << 1;
		if (mask != 3) {
			int half = mask & 1;
			list_del(e, mm, blk);
			b->half[half] = H_ALLOC;
			b->mm[half] = (int16_t)mm;
			b->level[half] = PTE;
			b->linked[half] = 0;
			*out = (struct tref){ blk, (uint8_t)half, b->gen[half] };
			init_pte_half(e, *out);
			m->n_frag_tables++;
			e->st.tables_allocated++;
			emit(e, EV_TABLE_ALLOC, PTE, tref_phys(*out), mm, 2048);
			return 0;
		}
	}
	int ret = table_alloc(e, mm, PTE, 1, out);
	if (ret)
		return ret;
	struct block *b = &e->blocks[out->blk];
	if (full) {
		b->pgste = m->alloc_pgste;
		if (b->pgste)
			memset(b->mem + 256, 0, 2048); /* PGSTEs start out zero */
		emit(e, EV_TABLE_ALLOC, PTE, tref_phys(*out), mm, b->pgste ? 4097 : 4096);
		return 0;
	}
	b->frag = 1;
	b->half[1] = H_FREE;
	m->n_frag_tables++;
	list_add(e, mm, out->blk, false);
	emit(e, EV_TABLE_ALLOC, PTE, tref_phys(*out), mm, 2048);
	return 0;
}

static void frag_page_maybe_free(struct engine *e, int32_t blk)
{
	struct block *b = &e->blocks[blk];
	if (b->half[0] != H_FREE || b->half[1] != H_FREE)
		return;
	if (b->active) {
		/* pte_free_defer: the page itself waits a grace period */
		b->active = 0;
		call_rcu_table(e, CB_FREE_BLOCK, blk, 0);
	} else {
		emit(e, EV_TABLE_FREE, PTE, tref_phys((struct tref){ blk, 0, 0 }), (uint64_t)b->mm[0], 4096);
		block_release(e, blk);
	}
}

/* A half became reusable: pointers into it are stale from now on. */
static void half_reusable(struct block *b, int half)
{
	if (!b->active)
		b->gen[half]++;
}

/* Checks common to the three ways a PTE table goes back: it must be allocated. */
static struct block *pte_table_freeable(struct engine *e, struct tref t)
{
	struct block *b = &e->blocks[t.blk];
	e->frag_dirty = e->gmap_dirty = true;
	if (!b->used || b->half[t.half] != H_ALLOC) {
		violate_at(e, V_DOUBLE_FREE, &(struct viol_focus){ .has = VF_TABLE, .table = tref_phys(t) },
			   "page table 0x%llx freed while not allocated",
			(unsigned long long)tref_phys(t));
		return NULL;
	}
	return b;
}

/* A 2K half leaves its page's bookkeeping: the page goes back on the reuse list while the other half is in
 * use (at the tail when the half waits for RCU, so that it is reused last), else off it. */
static void fragment_release(struct engine *e, int mm, struct tref t, struct block *b, int state, bool tail)
{
	e->mms[mm].n_frag_tables--;
	b->half[t.half] = (uint8_t)state;
	if (b->half[!t.half] == H_ALLOC && !b->active)
		list_add(e, mm, t.blk, tail);
	else
		list_del(e, mm, t.blk);
}

/* ---- Z4 (s390.frag_release): page_table_free stopped inside mm->context.lock ----
 *
 * page_table_free of a 2K half (arch/s390/mm/pgalloc.c) takes spin_lock_bh(&mm->context.lock), flips the half's
 * bits in the page's tracking byte (atomic_xor_bits), does its list work (list_add or list_del) and unlocks; only
 * then does it free the page if the byte is zero. __tlb_remove_table (the RCU callback of a half freed by
 * page_table_free_rcu) takes no lock: it clears its pending bit and frees the page when the byte is zero. frag_hold
 * arms a cpu; the next page_table_free of a 2K half stops on it after the xor (A_FRAG, ptf.h) until frag_end.
 * - fixed (c2c224932fd0, v5.17; v6.6): the xor is 0x11 << bit, the half stays pending (H_PENDING) until the list
 *   work is done, so the callback cannot see a zero byte meanwhile; frag_end clears it and frees the page if both
 *   halves are free.
 * - pre-c2c224932fd0 (v5.16): the xor is 1 << bit, the half is free (H_FREE) at once; a callback for the other
 *   half frees the page while it is still on mm->context.pgtable_list, before the held list_del: s390_frag_check
 *   reports the listed free page (fragment-corrupt). The page is freed at frag_end only if the xor's mask was zero.
 * The held thread holds mm->context.lock and whatever its operation holds (mmap_lock, the page-table lock):
 * frag_window_wait makes every operation wait (-EBUSY, nothing done) but those that take neither: RCU sections and
 * grace periods (the callbacks take no lock), GUP-fast walks, frag_hold/frag_end and the sysctl. That over-blocks
 * (an mm not the held one has its own context.lock) but reaches no interleaving the lock forbids. The held
 * operation itself ran to its end at once: its later steps happen before the list work in the model, after it in
 * the kernel; the only ones that depend on the list work take the same lock (page_table_alloc, the three frees of
 * this mm), and those first finish the held list work (frag_window_flush), as the kernel's order has it. */

static int frag_window_held(const struct engine *e)
{
	for (int i = 0; i < MAX_CPUS; i++)
		if (e->cpus[i].actor == A_FRAG && e->cpus[i].walk_done)
			return i;
	return -1;
}

static void frag_list_work(struct engine *e, int cpu);

/* The held operation comes back to mm->context.lock: its list work comes first (kernel order). */
static void frag_window_flush(struct engine *e, int mm)
{
	int cpu = frag_window_held(e);
	if (cpu >= 0 && e->cpus[cpu].mm == mm) {
		e->mms[mm].count++; /* the running operation holds the mm: the reference goes, the mm stays (even in
				     * exit_mmap, whose mmput drops it after) */
		frag_end(e, cpu);
		e->mms[mm].count--;
	}
}

int frag_window_wait(struct engine *e, uint64_t opcode)
{
	switch (opcode) {
	case OP_RCU_LOCK: case OP_RCU_UNLOCK: case OP_RCU_GP: case OP_WALK_BEGIN: case OP_WALK_STEP: case OP_WALK_END:
	case OP_FRAG_HOLD: case OP_FRAG_END: case OP_SYSCTL_ALLOCATE_PGSTE: case OP_WALK_PIN:
	case OP_COLLAPSE_HOLD: case OP_COLLAPSE_END:
		return 0;
	default:
		break;
	}
	int cpu = frag_window_held(e);
	if (cpu < 0)
		return 0;
	struct held_lock h = { .cls = LC_CONTEXT, .mode = LM_WRITE, .id = (uint64_t)e->cpus[cpu].mm, .hi = ~0ull };
	return lock_wait(e, cpu, LC_CONTEXT, (uint64_t)e->cpus[cpu].mm, LM_WRITE, &h);
}

/* The fields a held page_table_free uses (ptf.h, A_FRAG), as an armed or ended hold leaves them. */
static void frag_hold_clear(struct cpu *c)
{
	c->walk_done = false;
	c->mm = 0;
	c->tbl = TREF_NONE;
	c->level = 0;
	c->addr = 0;
}

int frag_hold(struct engine *e, int cpu)
{
	if (e->arch != ARCH_S390)
		return -ENOSYS;
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_NONE)
		return -EBUSY;
	c->actor = A_FRAG;
	frag_hold_clear(c);
	return 0;
}

/* page_table_free of a 2K half reaching an armed cpu: the xor only, then stop. */
static bool frag_window_take(struct engine *e, int mm, struct tref t, struct block *b)
{
	int cpu = -1;
	for (int i = 0; i < MAX_CPUS && cpu < 0; i++)
		if (e->cpus[i].actor == A_FRAG && !e->cpus[i].walk_done)
			cpu = i;
	if (cpu < 0)
		return false;
	struct cpu *c = &e->cpus[cpu];
	e->mms[mm].n_frag_tables--;
	c->level = b->half[!t.half] == H_FREE; /* the xor's mask: zero when the other half has no bit set */
	b->half[t.half] = e->knob[K_FRAG_RELEASE] == FR_PRE_C2C224932FD0 ? H_FREE : H_PENDING;
	emit(e, EV_TABLE_FREE, PTE, tref_phys(t), mm, 2048);
	half_reusable(b, t.half);
	c->walk_done = true;
	c->mm = mm;
	c->tbl = (struct tref){ t.blk, t.half, b->gen[t.half] };
	c->addr = e->cur_opcode;
	mmgrab(e, mm); /* the stopped thread's reference: the mm and its pgtable_list outlive the list work */
	e->locks_grew = true;
	return true;
}

/* The rest of the held page_table_free: list_add or list_del under the lock, unlock, then (fixed) clear the pending
 * bit and free the page if the byte is zero, (pre-fix) free it if the xor's mask was zero. */
static void frag_list_work(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	struct tref t = c->tbl;
	struct block *b = &e->blocks[t.blk];
	e->frag_dirty = e->gmap_dirty = true;
	if (!b->used || !b->frag) {
		violate_at(e, V_FRAGMENT_CORRUPT, &(struct viol_focus){ .has = VF_MM | VF_TABLE, .mm = c->mm,
			   .table = tref_phys((struct tref){ t.blk, 0, 0 }) },
			   "page_table_free's list work on page 0x%llx (mm %d), which was freed after its atomic_xor_bits",
			   (unsigned long long)tref_phys((struct tref){ t.blk, 0, 0 }), c->mm);
		return;
	}
	if (b->half[!t.half] == H_ALLOC && !b->active)
		list_add(e, c->mm, t.blk, false);
	else
		list_del(e, c->mm, t.blk);
	if (e->knob[K_FRAG_RELEASE] == FR_PRE_C2C224932FD0) {
		if (c->level)
			frag_page_maybe_free(e, t.blk);
		return;
	}
	b->half[t.half] = H_FREE;
	frag_page_maybe_free(e, t.blk);
}

int frag_end(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_FRAG)
		return -EINVAL;
	if (c->walk_done) {
		frag_list_work(e, cpu);
		mmdrop(e, c->mm);
	}
	c->actor = A_NONE;
	frag_hold_clear(c);
	e->locks_grew = true;
	return 0;
}

/* The held block (listed while its list work waits), or -1. */
static int32_t frag_window_block(const struct engine *e, int mm)
{
	int cpu = frag_window_held(e);
	return cpu >= 0 && e->cpus[cpu].mm == mm ? e->cpus[cpu].tbl.blk : -1;
}

/* page_table_free (v6.6): the table goes back now; a full page to the pool, a 2K half to its page. */
static void page_table_free(struct engine *e, int mm, struct tref t)
{
	frag_window_flush(e, mm);
	struct block *b = pte_table_freeable(e, t);
	if (!b)
		return;
	if (b->frag && frag_window_take(e, mm, t, b))
		return;
	if (!b->frag) {
		b->half[0] = H_PENDING;
		emit(e, EV_TABLE_FREE, PTE, tref_phys(t), mm, 4096);
		block_release(e, t.blk);
		return;
	}
	fragment_release(e, mm, t, b, H_FREE, false);
	emit(e, EV_TABLE_FREE, PTE, tref_phys(t), mm, 2048);
	half_reusable(b, t.half);
	frag_page_maybe_free(e, t.blk);
}

/* page_table_free_rcu (v6.6, tlb_remove_table): the table goes back after a grace period; a 2K half stays
 * pending (not reusable) until __tlb_remove_table. */
static void page_table_free_rcu(struct engine *e, int mm, struct tref t)
{
	frag_window_flush(e, mm);
	struct block *b = pte_table_freeable(e, t);
	if (!b)
		return;
	if (!b->frag) {
		b->half[0] = H_PENDING;
		call_rcu_table(e, CB_FREE_BLOCK, t.blk, 0);
		return;
	}
	fragment_release(e, mm, t, b, H_PENDING, true);
	call_rcu_table(e, CB_FRAG_PENDING, t.blk, t.half);
}

/* pte_free_defer (v6.6 arch/s390/mm/pgalloc.c; _s390 here because mm/ has the generic name): the page is marked active so that neither half is reused, and the page itself waits
 * a grace period once both halves are free (frag_page_maybe_free). */
static void pte_free_defer_s390(struct engine *e, int mm, struct tref t)
{
	frag_window_flush(e, mm);
	struct block *b = pte_table_freeable(e, t);
	if (!b)
		return;
	if (!b->frag) {
		b->half[0] = H_PENDING;
		emit(e, EV_TABLE_DEFER, PTE, tref_phys(t), mm, 0);
		call_rcu_table(e, CB_FREE_BLOCK, t.blk, 0);
		return;
	}
	e->mms[mm].n_frag_tables--;
	b->active = 1;
	emit(e, EV_TABLE_DEFER, PTE, tref_phys(t), mm, 0);
	b->half[t.half] = H_FREE;
	list_del(e, mm, t.blk);
	half_reusable(b, t.half);
	frag_page_maybe_free(e, t.blk);
}

/* __tlb_remove_table for a 2K half: the pending bit goes. */
void __tlb_remove_table(struct engine *e, int32_t blk, int half)
{
	struct block *b = &e->blocks[blk];
	e->frag_dirty = e->gmap_dirty = true;
	if (!b->used || b->half[half] != H_PENDING) {
		violate_at(e, V_DOUBLE_FREE, &(struct viol_focus){ .has = VF_TABLE,
			   .table = tref_phys((struct tref){ blk, (uint8_t)half, 0 }) }, "page-table half 0x%llx released twice",
			(unsigned long long)tref_phys((struct tref){ blk, (uint8_t)half, 0 }));
		return;
	}
	b->half[half] = H_FREE;
	half_reusable(b, half);
	frag_page_maybe_free(e, blk);
}

/* The fragment oracle: what the bookkeeping says must match the tables that exist. */
int s390_frag_check(struct engine *e)
{
	for (int mm = 0; mm < MAX_MMS; mm++) {
		struct mm *m = &e->mms[mm];
		if (!m->used)
			continue;
		if (m->alloc_pgste && m->n_frag_tables > 0) {
			violate_at(e, V_PGSTE_TABLE_MISSING, &(struct viol_focus){ .has = VF_MM, .mm = mm },
				"mm %d has alloc_pgste but owns %d 2K page table(s) "
				"without PGSTE space", mm, m->n_frag_tables);
			return -1;
		}
		int guard = 0;
		int32_t held = frag_window_block(e, mm); /* its list work waits under the lock: only its freeing counts */
		for (int32_t blk = m->frag_list; blk >= 0; blk = e->blocks[blk].list_next) {
			struct block *b = &e->blocks[blk];
			if (blk == held && b->used && ++guard <= 1 << 20)
				continue;
			int alloc = (b->half[0] == H_ALLOC) + (b->half[1] == H_ALLOC);
			if (!b->used || !b->frag || b->pgste || b->active || alloc != 1 || ++guard > 1 << 20) {
				violate_at(e, V_FRAGMENT_CORRUPT, &(struct viol_focus){ .has = VF_MM | VF_TABLE, .mm = mm,
				   .table = tref_phys((struct tref){ blk, 0, 0 }) }, "mm %d lists page 0x%llx for reuse, but it is %s",
					mm, (unsigned long long)tref_phys((struct tref){ blk, 0, 0 }),
					!b->used ? "free" : !b->frag ? "not a fragment page" :
					alloc == 2 ? "full" : alloc == 0 ? "empty" : "deferred");
				return -1;
			}
		}
	}
	return 0;
}

/* ---- crst_table_upgrade ---- */

/* All or nothing: the new top tables are allocated first. The old 3-level top becomes a region-third
 * ("pud") table that mm_pgtables_bytes now counts (mm_inc_nr_puds); region-second tables are p4ds. */
int crst_table_upgrade(struct engine *e, int mm, uint64_t end)
{
	struct mm *m = &e->mms[mm];
	struct tref t[2];
	int want = 0, lvl = m->pgt.top;
	if (end <= m->asce_limit || lvl == R1)
		return 0;
	int levels = lvl == R3 ? (end > 1ull << 53 ? 2 : 1) : 1;
	for (; want < levels; want++) {
		int ret = table_alloc(e, mm, lvl - 1 - want, 4, &t[want]);
		if (ret) {
			while (want-- > 0)
				table_free(e, t[want], TABLE_FREE_SILENT, 0, 0);
			return ret;
		}
	}
	for (int i = 0; i < levels; i++) {
		int nl = m->pgt.top - 1;
		entry_write(e, t[i], nl, 0, e->geom.fmt->table(nl, tref_phys(m->pgt.root)));
		table_set_linked(e, t[i], true);
		m->pgt.root = t[i];
		m->pgt.top = nl;
		m->asce_limit = nl == R2 ? 1ull << 53 : e->task_size;
		if (nl == R2)
			m->pt_bytes += pt_level_bytes(e, mm, R3);
		emit(e, EV_UPGRADE, mm, 5 - nl, tref_phys(t[i]), m->asce_limit);
	}
	return 0;
}

/* ---- the s390 hooks behind struct mm_ops ---- */

/* pte_free (asm/pgalloc.h): page_table_free */
static void s390_pte_free(struct engine *e, int mm, struct tref t)
{
	table_free(e, t, TABLE_FREE_BY_ARCH, PTE, mm);
	page_table_free(e, mm, t);
}

/* __pte_free_tlb: page_table_free_rcu, which first unlinks the table from the gmaps when the mm has PGSTEs
 * (gmap_unlink); with table_free=immediate the model's variant frees at once (page_table_free). */
static void s390_pte_free_tlb(struct engine *e, int mm, struct tref t, uint64_t vmaddr)
{
	table_free(e, t, TABLE_FREE_BY_ARCH, PTE, mm);
	if (e->mms[mm].alloc_pgste)
		gmap_unlink(e, mm, t, vmaddr);
	if (e->knob[K_TABLE_FREE] == TF_RCU)
		page_table_free_rcu(e, mm, t);
	else
		page_table_free(e, mm, t);
}

/* pte_free_defer: v6.6's does no gmap_unlink (M1); defer_gmap_unlink=1 is the fix that adds it */
static void s390_pte_free_defer(struct engine *e, int mm, struct tref t, uint64_t vmaddr)
{
	table_free(e, t, TABLE_FREE_BY_ARCH, PTE, mm);
	if (e->knob[K_DEFER_GMAP_UNLINK] == 1)
		gmap_unlink(e, mm, t, vmaddr);
	pte_free_defer_s390(e, mm, t);
}

/* ZERO_PAGE(vaddr): s390 colours its zero page by the address bits below 512K (zero_page_mask). */
static uint64_t s390_zero_pfn(const struct engine *e, uint64_t addr)
{
	return ZERO_PFN + ((addr >> 12) & 127);
}

/* mm_forbids_zeropage: s390 (v6.6) maps no zero page into an mm with PGSTEs in use (mm_has_pgste). */
static bool s390_mm_forbids_zeropage(const struct engine *e, const struct mm *m)
{
	return m->has_pgste;
}

/* init_new_context: the asce_limit of the top level */
static uint64_t s390_init_new_context(const struct engine *e, const struct mm *m)
{
	return m->pgt.top == 2 ? 1ull << 42 : m->pgt.top == 1 ? 1ull << 53 : e->task_size;
}

/* gup_fast_permitted: end <= mm->context.asce_limit. Above it the top table does not translate the address (a
 * 3-level top would alias it into the low 4 TiB), so no lockless walk: the kernel takes the slow path (fault-in
 * under mmap_lock), which the model's walker does not have. */
static bool s390_gup_fast_permitted(const struct engine *e, int mm, uint64_t addr)
{
	return (addr & ~(e->geom.page_size - 1)) + e->geom.page_size <= e->mms[mm].asce_limit;
}

const struct mm_ops s390_mm_ops = {
	.pte_alloc_one = page_table_alloc,
	.pte_free = s390_pte_free,
	.pte_free_tlb = s390_pte_free_tlb,
	.pte_free_defer = s390_pte_free_defer,
	.crst_table_upgrade = crst_table_upgrade,
	.rcu_callback = { [CB_FRAG_PENDING] = __tlb_remove_table, [CB_FREE_BLOCK] = tlb_remove_table_rcu },
	.zero_pfn = s390_zero_pfn,
	.mm_forbids_zeropage = s390_mm_forbids_zeropage,
	.init_new_context = s390_init_new_context,
	.gup_fast_permitted = s390_gup_fast_permitted,
	.pgste = true,
	.pgd_top = 2,
	.elf_machine = 22, /* EM_S390 */
	.elf_big_endian = true,
};
