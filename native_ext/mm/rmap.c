/* mm/rmap.c: anon_vma_prepare, the rmap locks (anon_vma root, i_mmap_rwsem) and the rmap walker actor that holds
 * them from begin to commit (try_to_unmap: page_vma_mapped_walk + try_to_unmap_one). */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

/* anon_vma_prepare: reuse a compatible neighbour's anon_vma, else a new one (its own root). Taking the reused
 * anon_vma's lock for write waits for an rmap walker that holds its root for read: -EBUSY, nothing changed. */
int anon_vma_prepare(struct engine *e, struct mm *m, struct vma *v)
{
	if (v->anon)
		return 0;
	const struct vma *r = find_mergeable_anon_vma(m, v);
	int ret = r ? rmap_lock_wait(e, RL_ANON, r->anon_root) : 0;
	if (ret)
		return ret;
	if (r) {
		v->anon = r->anon;
		v->anon_root = r->anon_root;
	} else {
		v->anon = v->anon_root = ++e->next_anon;
	}
	v->cloned = 0;
	return 0;
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

/* The PTE table an rmap-side walk reaches at addr: pid's pmd entry there (-ENOENT without a PTE table). */
static int walk_to_pte_table(struct engine *e, uint64_t pid, uint64_t addr, struct cpu *c)
{
	const struct geom *g = &e->geom;
	if (pid >= MAX_PIDS || !e->procs[pid].exists)
		return -ESRCH;
	if (addr >= e->task_size)
		return -EFAULT;
	int mm = e->procs[pid].mm, ml = pmd_level(g);
	uint64_t pmd = host_entry_at(e, mm, addr, ml, &c->pmd_tbl, &c->pmd_idx);
	if (g->fmt->kind(ml, pmd) != E_TABLE)
		return -ENOENT;
	c->mm = mm;
	c->addr = addr;
	c->tbl = tref_from_phys(e, g->fmt->addr(ml, pmd));
	c->pmd_seen = pmd;
	return 0;
}

/* The walker w found becomes the cpu's actor, holding its rmap lock (kind, id), its folio (0: none) and, when
 * rcu, an RCU read-side section. */
static int rmap_walker_start(struct engine *e, int cpu, const struct cpu *w, int kind, uint32_t id, uint64_t folio,
			     bool rcu)
{
	struct cpu *c = &e->cpus[cpu];
	*c = *w;
	c->lock_kind = (uint8_t)kind;
	c->lock_id = id;
	c->folio = folio;
	if (rcu)
		rcu_enter(e, cpu);
	mmgrab(e, c->mm);
	c->actor = A_RMAP;
	return 0;
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
	const struct geom *g = &e->geom;
	struct cpu w = e->cpus[cpu];
	int pl = g->nlevels - 1;
	if ((ret = walk_to_pte_table(e, pid, addr, &w)))
		return ret;
	uint32_t idx = (uint32_t)(addr >> g->lv[pl].shift) & (g->lv[pl].entries - 1);
	uint64_t pte = entry_get(e, w.tbl, idx);
	/* rmap starts from a mapped folio: the zero page is on no rmap */
	if (g->fmt->kind(pl, pte) != E_LEAF || is_zero_pfn(g->fmt->addr(pl, pte) >> 12))
		return -ENOENT;
	const struct compound *folio = data_lookup(e, g->fmt->addr(pl, pte) >> 12);
	if (!folio)
		return -ENOENT;
	/* folio_lock (its caller's), then folio_lock_anon_vma_read / rmap_walk_file's i_mmap_lock_read */
	if ((ret = lock_would_wait(e, LC_FOLIO, folio->pfn, LM_WRITE)))
		return ret;
	const struct vma *v = vma_find(&e->mms[w.mm], addr);
	int kind = !v ? RL_NONE : v->shm ? RL_FILE : v->anon ? RL_ANON : RL_NONE;
	uint32_t id = !v ? 0 : v->shm ? v->shm - 1u : v->anon_root;
	if (kind != RL_NONE && (ret = lock_would_wait(e, rmap_class(kind), id, LM_READ)))
		return ret;
	return rmap_walker_start(e, cpu, &w, kind, id, folio->pfn, true);
}

/* unmap_mapping_begin: unmap_mapping_range of a shmem page (hole punch, truncate), stopped in zap_pte_range after
 * it read the pmd and before pte_offset_map_lock takes the table's lock. It holds i_mmap_rwsem for read and no
 * folio lock. v6.6's pte_offset_map_lock reads the pmd under rcu_read_lock and rechecks it under the lock (commit:
 * -11 when it moved); 6.1-6.4's (mm.file_retract=caller) do neither, so the table it read may be freed under it.
 * rmap_commit finishes it: the page at addr is zapped (notified, cleared, its mapping dropped); the page cache
 * itself is not touched (the truncation of the object's pages is not modelled). */
int unmap_mapping_begin(struct engine *e, int cpu, uint64_t pid, uint64_t addr)
{
	int ret = idle_cpu(e, cpu);
	if (ret)
		return ret;
	struct cpu w = e->cpus[cpu];
	if ((ret = walk_to_pte_table(e, pid, addr, &w)))
		return ret;
	const struct vma *v = vma_find(&e->mms[w.mm], addr);
	if (!v || !v->shm || addr < v->start)
		return -EINVAL; /* a file mapping's range only */
	if ((ret = lock_would_wait(e, LC_I_MMAP, v->shm - 1u, LM_READ)))
		return ret;
	return rmap_walker_start(e, cpu, &w, RL_FILE, v->shm - 1u, 0, e->knob[K_FILE_RETRACT] == 0);
}

/* page_vma_mapped_walk + try_to_unmap_one under the PTL. */
int rmap_commit(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_RMAP)
		return -EINVAL;
	const struct geom *g = &e->geom;
	int pl = g->nlevels - 1, ret = 0;
	/* the zap walker of 6.1 (no folio, mm.file_retract=caller) has the pre-6.5 pte_offset_map_lock: no recheck */
	if (e->knob[K_PMD_RECHECK] == 0 && (c->folio || e->knob[K_FILE_RETRACT] == 0)) {
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
	flush_tlb_page(e, c->mm, c->addr); /* ptep_clear_flush: the address this walker knows the page by */
	if (g->fmt->kind(pl, old) == E_LEAF) {
		emit(e, EV_LEAF_ZAP, pl, c->addr & ~(g->page_size - 1), g->fmt->addr(pl, old) >> 12, c->mm);
		data_put(e, g->fmt->addr(pl, old) >> 12);
	}
out:
	actor_end(e, cpu);
	return ret;
}
