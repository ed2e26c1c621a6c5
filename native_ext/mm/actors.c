/* mm/actors.c: the GUP-fast walker, the rmap walker and the invalidation window, split into interleavable steps
 * (engine.c decodes their operations; RCU read-side sections are core/rcu.c). */
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

static int idle_cpu(struct engine *e, uint64_t cpu)
{
	return e->cpus[cpu].actor == A_NONE ? 0 : -EBUSY;
}

int walk_begin(struct engine *e, int cpu, uint64_t pid, uint64_t addr)
{
	int ret = idle_cpu(e, cpu);
	if (ret)
		return ret;
	if (pid >= MAX_PIDS || !e->procs[pid].exists)
		return -ESRCH;
	struct cpu *c = &e->cpus[cpu];
	int mm = e->procs[pid].mm;
	if (addr >= e->task_size)
		return -EFAULT;
	/* gup_fast_permitted (s390: below asce_limit); else the kernel's slow path, which the walker does not have */
	if (e->mm_ops->gup_fast_permitted && !e->mm_ops->gup_fast_permitted(e, mm, addr))
		return -EFAULT;
	rcu_enter(e, cpu); /* local_irq_save: GUP-fast is an RCU reader */
	mmgrab(e, mm);
	c->actor = A_WALK;
	c->mm = mm;
	c->addr = addr;
	c->level = e->mms[mm].pgt.top;
	c->tbl = e->mms[mm].pgt.root;
	c->walk_done = false;
	return 0;
}

int walk_step(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_WALK)
		return -EINVAL;
	if (c->walk_done)
		return -ENOENT;
	const struct geom *g = &e->geom;
	uint64_t *mem = tref_deref(e, c->tbl, "GUP-fast walker");
	if (!mem)
		return 0;
	const struct level_geom *lv = &g->lv[c->level];
	uint64_t ent = mem[(c->addr >> lv->shift) & (lv->entries - 1)];
	if (c->level < g->nlevels - 1 && g->fmt->kind(c->level, ent) == E_TABLE) {
		c->tbl = tref_from_phys(e, g->fmt->addr(c->level, ent));
		c->level = child_level(g, c->level);
	} else {
		c->walk_done = true;
	}
	return 0;
}

void actor_end(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	rcu_exit(e, cpu);
	mmdrop(e, c->mm);
	c->actor = A_NONE;
}

/* ---- what an rmap walker holds from begin to commit ---- */

static enum lock_class rmap_class(int kind) { return kind == RL_ANON ? LC_ANON_VMA : LC_I_MMAP; }

/* Would taking this rmap lock for write wait: the anon_vma root's rwsem (RL_ANON, by anon_vma root) or a shmem
 * object's i_mmap_rwsem (RL_FILE, by object), held by an rmap walker or by a host operation a window stopped?
 * -EBUSY naming the holder, or 0. */
int rmap_lock_wait(struct engine *e, int kind, uint32_t id)
{
	return lock_would_wait(e, rmap_class(kind), id, LM_WRITE);
}

/* Is this folio (head pfn) locked by an rmap walker or a stopped host operation? The walker's caller (reclaim,
 * migration) also took it off the LRU, which is what hpage_collapse_scan_pmd/_file look at first (SCAN_PAGE_LRU). */
bool folio_locked(const struct engine *e, uint64_t head)
{
	return lock_holder(e, LC_FOLIO, head, LM_WRITE, 0, ~0ull, NULL) >= 0;
}

/* Would taking this VMA's rmap locks for write wait? vma_prepare (split, merge, expand), free_pgtables'
 * unlink_anon_vmas and unlink_file_vma, anon_vma_fork and dup_mmap's i_mmap insertion: the anon_vma root first
 * (anon_vma_lock_write), then i_mmap_rwsem; -EBUSY naming the holder, or 0. */
int vma_rmap_wait(struct engine *e, const struct vma *v)
{
	int ret = v->anon ? rmap_lock_wait(e, RL_ANON, v->anon_root) : 0;
	return ret ? ret : v->shm ? rmap_lock_wait(e, RL_FILE, v->shm - 1u) : 0;
}

/* rmap_begin: the rmap walk starts from a mapped folio (folio_referenced / try_to_unmap get a page, not an
 * address): an address with no PTE table, no present PTE, or the zero page (on no rmap) is -ENOENT and holds
 * nothing. Otherwise the walker takes the folio lock (a second walker on the same folio would wait: -EBUSY),
 * the rmap lock for read (folio_lock_anon_vma_read: the anon_vma root; rmap_walk_file: i_mmap_rwsem), an RCU
 * read-side section, the PTE table and the pmd value it saw (page_vma_mapped_walk's map_pte). */
int rmap_begin(struct engine *e, int cpu, uint64_t pid, uint64_t addr)
{
	int ret = idle_cpu(e, cpu);
	if (ret)
		return ret;
	if (pid >= MAX_PIDS || !e->procs[pid].exists)
		return -ESRCH;
	const struct geom *g = &e->geom;
	struct cpu *c = &e->cpus[cpu];
	int mm = e->procs[pid].mm, pl = g->nlevels - 1, ml = pmd_level(g);
	if (addr >= e->task_size)
		return -EFAULT;
	struct tref pmd_tbl;
	uint32_t pmd_idx;
	uint64_t pmd = host_entry_at(e, mm, addr, ml, &pmd_tbl, &pmd_idx);
	if (g->fmt->kind(ml, pmd) != E_TABLE)
		return -ENOENT;
	struct tref pte_tbl = tref_from_phys(e, g->fmt->addr(ml, pmd));
	uint32_t idx = (uint32_t)(addr >> g->lv[pl].shift) & (g->lv[pl].entries - 1);
	uint64_t pte = entry_get(e, pte_tbl, idx);
	/* rmap starts from a mapped folio: the zero page is on no rmap */
	if (g->fmt->kind(pl, pte) != E_LEAF || is_zero_pfn(g->fmt->addr(pl, pte) >> 12))
		return -ENOENT;
	const struct compound *folio = data_lookup(e, g->fmt->addr(pl, pte) >> 12);
	if (!folio)
		return -ENOENT;
	/* folio_lock (its caller's), then folio_lock_anon_vma_read / rmap_walk_file's i_mmap_lock_read */
	if ((ret = lock_would_wait(e, LC_FOLIO, folio->pfn, LM_WRITE)))
		return ret;
	const struct vma *v = vma_find(&e->mms[mm], addr);
	int kind = !v ? RL_NONE : v->shm ? RL_FILE : v->anon ? RL_ANON : RL_NONE;
	uint32_t id = !v ? 0 : v->shm ? v->shm - 1u : v->anon_root;
	if (kind != RL_NONE && (ret = lock_would_wait(e, rmap_class(kind), id, LM_READ)))
		return ret;
	c->lock_kind = (uint8_t)kind;
	c->lock_id = id;
	c->folio = folio->pfn;
	rcu_enter(e, cpu);
	mmgrab(e, mm);
	c->actor = A_RMAP;
	c->mm = mm;
	c->addr = addr;
	c->tbl = pte_tbl;
	c->pmd_tbl = pmd_tbl;
	c->pmd_idx = pmd_idx;
	c->pmd_seen = pmd;
	return 0;
}

/* page_vma_mapped_walk + try_to_unmap_one under the PTL. */
int rmap_commit(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_RMAP)
		return -EINVAL;
	const struct geom *g = &e->geom;
	int pl = g->nlevels - 1, ret = 0;
	if (e->knob[K_PMD_RECHECK] == 0) {
		uint64_t *pmd = tref_deref(e, c->pmd_tbl, "rmap walker (pmd recheck)");
		if (!pmd || pmd[c->pmd_idx] != c->pmd_seen) {
			ret = -EAGAIN;
			goto out;
		}
	}
	uint64_t *pte = tref_deref(e, c->tbl, "rmap walker");
	if (!pte)
		goto out;
	uint32_t idx = (uint32_t)(c->addr >> g->lv[pl].shift) & (g->lv[pl].entries - 1);
	uint64_t old = pte[idx];
	uint64_t page = c->addr & ~(g->page_size - 1);
	/* what try_to_unmap_one holds at its notifier: the walker's folio lock and rmap lock (a window that stops
	 * it keeps them) */
	e->self_cpu = cpu;
	struct held_lock hs[MAX_CPU_LOCKS];
	int n = cpu_locks(e, cpu, hs);
	for (int i = 0; i < n; i++)
		lock_acquire(e, (enum lock_class)hs[i].cls, hs[i].id, (enum lock_mode)hs[i].mode);
	mmu_notifier_invalidate_range(e, c->mm, page, page + g->page_size); /* try_to_unmap_one notifies */
	entry_write(e, c->tbl, pl, idx, g->fmt->empty(pl));
	if (g->fmt->kind(pl, old) == E_LEAF) {
		emit(e, EV_LEAF_ZAP, pl, c->addr & ~(g->page_size - 1), g->fmt->addr(pl, old) >> 12, c->mm);
		data_put(e, g->fmt->addr(pl, old) >> 12);
	}
out:
	actor_end(e, cpu);
	return ret;
}

/* ---- the invalidation window: a host thread stopped between invalidate_range_start and _end ---- */

/* inval_hold: the cpu waits for the next host operation that notifies a VM (an mmu_notifier subscriber) and
 * stops that operation's thread after its invalidate_range_start calls and its host change, before the
 * matching _end calls (docs/model.md section 7). Only arm64 and x86_64 have KVM mmu notifiers. */
int inval_hold(struct engine *e, int cpu)
{
	if (e->arch == ARCH_S390)
		return -ENOSYS;
	int ret = idle_cpu(e, cpu);
	if (ret)
		return ret;
	struct cpu *c = &e->cpus[cpu];
	c->actor = A_INVAL;
	c->inval_held = false;
	memset(c->inval_began, 0, sizeof(c->inval_began));
	memset(c->inval_active, 0, sizeof(c->inval_active));
	memset(c->inval_mms, 0, sizeof(c->inval_mms));
	memset(c->inval_locks, 0, sizeof(c->inval_locks));
	c->inval_nlocks = c->inval_opcode = c->inval_child = 0;
	return 0;
}

/* The cpu whose window takes this notification of mm: the one already holding the current operation's ends,
 * else the lowest armed cpu, which now holds this operation (every later notification of it, of any mm, too). */
int inval_window_for(struct engine *e, int mm)
{
	int cpu = inval_window_of_current(e);
	for (int i = 0; i < MAX_CPUS && cpu < 0; i++) {
		struct cpu *c = &e->cpus[i];
		if (c->actor == A_INVAL && !c->inval_held) {
			c->inval_held = true;
			c->inval_op = e->op_index;
			cpu = i;
		}
	}
	if (cpu >= 0)
		inval_window_keep_locks(e, cpu); /* the stopped operation keeps what it holds now */
	if (cpu >= 0 && !(e->cpus[cpu].inval_mms[mm / 64] >> (mm % 64) & 1)) {
		e->cpus[cpu].inval_mms[mm / 64] |= 1ull << (mm % 64);
		mmgrab(e, mm); /* the stopped thread's reference (the mm outlives the window) */
	}
	return cpu;
}

/* The cpu whose window stopped the running operation, or -1. */
int inval_window_of_current(const struct engine *e)
{
	for (int i = 0; i < MAX_CPUS; i++) {
		const struct cpu *c = &e->cpus[i];
		if (c->actor == A_INVAL && c->inval_held && c->inval_op == e->op_index)
			return i;
	}
	return -1;
}

/* The cpu whose stopped host thread holds this mm, or -1. Its exit_mmap waits for that thread: for the
 * operation's own mm the thread holds mm_users until it finishes (after the ends); retract_page_tables holds
 * i_mmap_rwsem for read, which free_pgtables' unlink_file_vma waits for. */
int inval_window_holder(const struct engine *e, int mm)
{
	for (int i = 0; i < MAX_CPUS; i++) {
		const struct cpu *c = &e->cpus[i];
		if (c->actor == A_INVAL && c->inval_held && (c->inval_mms[mm / 64] >> (mm % 64) & 1))
			return i;
	}
	return -1;
}

/* vm_destroy: the VM left the notifier list; no held end is delivered to it (nor to a VM later created in its
 * place). */
void inval_window_forget_vm(struct engine *e, int vm)
{
	for (int i = 0; i < MAX_CPUS; i++)
		if (e->cpus[i].actor == A_INVAL)
			e->cpus[i].inval_began[vm] = e->cpus[i].inval_active[vm] = 0;
}

/* inval_end: the stopped thread runs its invalidate_range_end calls and finishes the operation; on an armed
 * cpu that no operation reached it cancels the hold. */
int inval_end(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_INVAL)
		return -EINVAL;
	if (c->inval_held)
		mmu_notifier_invalidate_range_end_held(e, cpu);
	c->actor = A_NONE;
	c->inval_held = false;
	if (c->inval_child) { /* dup_mmap returns: fork's child runs */
		e->procs[c->inval_child - 1].exists = true;
		e->procs[c->inval_child - 1].pending = false;
	}
	for (int mm = 0; mm < MAX_MMS; mm++)
		if (c->inval_mms[mm / 64] >> (mm % 64) & 1)
			mmdrop(e, mm);
	memset(c->inval_mms, 0, sizeof(c->inval_mms));
	memset(c->inval_locks, 0, sizeof(c->inval_locks));
	c->inval_nlocks = c->inval_opcode = c->inval_child = 0;
	return 0;
}

/* End of trace: walkers end, rmap actors abort, held invalidations end, explicit sections close. */
void actors_abandon(struct engine *e)
{
	for (int cpu = 0; cpu < MAX_CPUS; cpu++) {
		struct cpu *c = &e->cpus[cpu];
		if (c->actor == A_WALK || c->actor == A_RMAP)
			actor_end(e, cpu);
		if (c->actor == A_INVAL)
			inval_end(e, cpu);
		c->rcu_nest = 0;
	}
}
