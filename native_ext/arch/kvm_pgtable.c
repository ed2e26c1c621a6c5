/* arch/kvm_pgtable.c: the stage-2 tables arm64 and x86 keep in the model, through the generic walker: arm64's
 * kvm/hyp/pgtable.c walkers (kvm_pgtable_stage2_map, _unmap, _destroy), which x86's tdp_mmu.c does over tdp_iter;
 * each arch's difference is a parameter its caller passes (arch/arm64/kvm/mmu.c, arch/x86/kvm/mmu/tdp_mmu.c). */
#include "ptf.h"
#include "kvm/kvm_host.h"

static int s2_check_install(struct engine *e, struct vm *v, struct cpu *c, int level, uint64_t size,
			    uint64_t gpa, uint64_t pfn, int min_block);

/* kvm_init_stage2_mmu (arm64: the geometry of the IPA size, within kvm_set_ipa_limit) / the TDP root */
int kvm_stage2_init(struct engine *e, struct vm *v, unsigned ipa_bits)
{
	int ret = geom_stage2(&v->geom, e->arch, (uint64_t[]){ e->geom.page_size, 0, 0, 0, e->pa_bits }, ipa_bits,
			      &v->start_level, &v->pgd_pages);
	if (ret)
		return ret;
	v->s2.top = v->start_level;
	v->s2.mm = -1;
	const struct level_geom *lv = &v->geom.lv[v->start_level];
	ret = table_alloc(e, -1, v->start_level, (int)((lv->table_bytes + 4095) / 4096), &v->s2.root);
	if (!ret)
		emit(e, EV_TABLE_ALLOC, v->start_level, tref_phys(v->s2.root), ~0ull, lv->table_bytes);
	return ret;
}

/* The map walk: [ipa, end of the walk) maps the frames from pa on. goal >= 0 is the one level the leaf may take
 * (x86's fault->goal_level; the 2019 arm64 designs, which pick the level by the candidate's size); goal < 0 asks
 * every level, as kvm_pgtable_stage2_map does (arm64.stage2_block_check=pgtable). */
struct s2_map_arg {
	struct vm *v;
	struct cpu *c;
	uint64_t ipa, pa;
	int goal;
	bool write;
	bool check; /* run the install oracle on every leaf (the levels are the walk's to choose) */
	int ret;
	const struct stage2_map_cfg *cfg;
};

/* stage2_leaf_mapping_allowed -> kvm_block_mapping_supported: a level that supports blocks
 * (KVM_PGTABLE_MIN_BLOCK_LEVEL: 1 with 4K pages, 2 otherwise), a granule no bigger than what is left of the
 * range, the walk's address and its PA aligned to it. The walk's address is the range start inside the first
 * entry, not the entry's own start. */
static bool s2_leaf_allowed(const struct walk_ctx *ctx, const struct s2_map_arg *a)
{
	int last = ctx->g->nlevels - 1;
	if (a->goal >= 0)
		return ctx->level == a->goal;
	if (ctx->level != last && ctx->level < (ctx->g->page_size == 4096 ? 1 : 2))
		return false;
	uint64_t granule = level_size(ctx->g, ctx->level);
	uint64_t addr = ctx->addr > a->ipa ? ctx->addr : a->ipa;
	if (granule > ctx->end - addr)
		return false;
	return !((addr | (a->pa + (addr - a->ipa))) & (granule - 1));
}

/* stage2_map_walker_try_leaf / tdp_mmu_map_handle_target_level: write the leaf over whatever is there. A leaf
 * that already maps the same frames stops the walk (stage2_pte_needs_update ignores permission bits: -EAGAIN,
 * which ends a KVM_PGTABLE_WALK_HANDLE_FAULT walk; x86: new_spte == old_spte, RET_PF_SPURIOUS), unless the new
 * one adds write permission (arm64 takes kvm_pgtable_stage2_relax_perms on the permission fault that follows;
 * x86's make_spte gives a different SPTE). */
static int s2_map_install(struct walk_ctx *ctx, struct s2_map_arg *a)
{
	struct engine *e = ctx->e;
	const struct entry_fmt *f = ctx->g->fmt;
	uint64_t size = level_size(ctx->g, ctx->level), phys = a->pa + (ctx->addr - a->ipa);
	if (f->kind(ctx->level, ctx->old) == E_LEAF && f->addr(ctx->level, ctx->old) == phys &&
	    (!a->write || f->writable(ctx->level, ctx->old)))
		return 1;
	if (a->check && s2_check_install(e, a->v, a->c, ctx->level, size, ctx->addr, phys >> 12,
				     a->cfg->min_block))
		return 1;
	entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->leaf(ctx->level, phys, a->write));
	emit(e, EV_S2_LEAF, (uint64_t)vm_index(e, a->v), ctx->addr, ctx->level, phys >> 12);
	return 0;
}

static int s2_free_removed_visit(struct walk_ctx *ctx, unsigned visit)
{
	(void)visit;
	struct tref t = tref_from_phys(ctx->e, ctx->g->fmt->addr(ctx->level, ctx->old));
	table_free(ctx->e, t, TABLE_FREE_RCU, 0, 0);
	return 0;
}

/* A table unlinked from stage 2 goes back after a grace period, its subtree with it: arm64 free_removed_table
 * (stage2_free_removed_table_rcu_cb), x86 handle_removed_pt (call_rcu per shadow page). */
static void s2_free_removed_table(struct engine *e, const struct geom *g, struct tref t, int level)
{
	struct pgtable sub = { level, t, -1 };
	struct walker w = { s2_free_removed_visit, NULL, WALK_TABLE_POST | WALK_SKIP_EMPTY, 0 };
	pt_walk(e, &sub, g, 0, (uint64_t)g->lv[level].entries << g->lv[level].shift, &w);
	table_free(e, t, TABLE_FREE_RCU, 0, 0);
}

/* stage2_map_walker (arm64) and the kvm_tdp_mmu_map loop (x86). A table where the leaf may go is replaced by the
 * leaf and freed with its subtree (stage2_map_walk_table_pre; x86 handle_changed_spte -> handle_removed_pt). Where
 * the leaf may not go, the walk needs a table: an empty entry gets a new one; a bigger block becomes an empty
 * table on arm64 (stage2_map_walk_leaf: "accesses beyond 'end' that fall within the new table will be mapped
 * lazily") and a table mapping the same pages on x86 (tdp_mmu_split_huge_page). */
static int s2_map_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct s2_map_arg *a = ctx->arg;
	struct engine *e = ctx->e;
	const struct geom *g = ctx->g;
	const struct entry_fmt *f = g->fmt;
	bool allowed = s2_leaf_allowed(ctx, a);
	if (visit == WALK_TABLE_PRE) {
		if (!allowed)
			return 0;
		struct tref child = tref_from_phys(e, f->addr(ctx->level, ctx->old));
		int ret = s2_map_install(ctx, a);
		if (!ret)
			s2_free_removed_table(e, g, child, child_level(g, ctx->level));
		return ret;
	}
	if (allowed)
		return s2_map_install(ctx, a);
	if (ctx->level == g->nlevels - 1) {
		violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_GPA, .gpa = ctx->addr },
			"stage-2 map walk found no level for gpa %#llx",
			(unsigned long long)ctx->addr);
		return 1;
	}
	struct tref t;
	int lvl = child_level(g, ctx->level);
	a->ret = table_alloc(e, -1, lvl, (int)((g->lv[lvl].table_bytes + 4095) / 4096), &t);
	if (a->ret)
		return 1;
	emit(e, EV_TABLE_ALLOC, lvl, tref_phys(t), ~0ull, g->lv[lvl].table_bytes);
	if (f->kind(ctx->level, ctx->old) == E_LEAF) {
		uint64_t pa = f->addr(ctx->level, ctx->old);
		if (a->cfg->split_keeps_pages) {
			bool w = f->writable(ctx->level, ctx->old);
			for (uint32_t i = 0; i < g->lv[lvl].entries; i++)
				entry_write(e, t, lvl, i, f->leaf(lvl, pa + (uint64_t)i * level_size(g, lvl), w));
		} else {
			emit(e, EV_S2_ZAP, (uint64_t)vm_index(e, a->v), ctx->addr, ctx->level, pa >> 12);
		}
	}
	entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->table(ctx->level, tref_phys(t)));
	return 0;
}

/* Unmap (kvm_unmap_gfn_range): a block is unmapped whole, as stage2_unmap_walker and tdp_mmu_zap_leafs do. On
 * arm64 the walk also visits tables on the way out (KVM_PGTABLE_WALK_TABLE_POST): a table left with no valid
 * entry (page_count 1) is cleared and freed at once, mmu_lock being held for write. x86 zaps leaves only and keeps
 * its tables ("no 'struct kvm_mmu_page' will be freed") until the VM goes. */
static int s2_zap_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct engine *e = ctx->e;
	const struct entry_fmt *f = ctx->g->fmt;
	struct vm *v = ctx->arg;
	if (visit == WALK_TABLE_POST) {
		if (f->kind(ctx->level, ctx->old) != E_TABLE)
			return 0;
		struct tref t = tref_from_phys(e, f->addr(ctx->level, ctx->old));
		if (e->blocks[t.blk].nonempty[t.half])
			return 0;
		entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->empty(ctx->level));
		table_free(e, t, TABLE_FREE_NOW, child_level(ctx->g, ctx->level), ~0ull);
		return 0;
	}
	if (f->kind(ctx->level, ctx->old) != E_LEAF)
		return 0;
	entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->empty(ctx->level));
	emit(e, EV_S2_ZAP, (uint64_t)vm_index(e, v), ctx->addr, ctx->level, f->addr(ctx->level, ctx->old) >> 12);
	return 0;
}

/* kvm_pgtable_stage2_unmap (free_empty_tables: arm64's TABLE_POST visit) / kvm_tdp_mmu_zap_leafs */
void kvm_stage2_unmap(struct engine *e, struct vm *v, uint64_t gpa, uint64_t end, bool free_empty_tables)
{
	unsigned flags = WALK_LEAF | WALK_SKIP_EMPTY | (free_empty_tables ? WALK_TABLE_POST : 0);
	struct walker w = { s2_zap_visit, v, flags, 0 };
	if (!v->root_freed)
		pt_walk(e, &v->s2, &v->geom, gpa, end, &w);
}

/* The same walk from a stage-2 root the caller took before it yielded (arm64 stage2_apply_range's pgt): the
 * root must still be the VM's (the caller checked, kvm.s2_unmap_yield_recheck=yes) or it is read freed. */
void kvm_stage2_unmap_root(struct engine *e, struct vm *v, struct tref root, uint64_t gpa, uint64_t end,
			   bool free_empty_tables)
{
	if (!tref_deref(e, root, "stage2_apply_range (the stage-2 root taken before cond_resched_rwlock_write)"))
		return;
	struct pgtable p = { v->start_level, root, -1 };
	unsigned flags = WALK_LEAF | WALK_SKIP_EMPTY | (free_empty_tables ? WALK_TABLE_POST : 0);
	struct walker w = { s2_zap_visit, v, flags, 0 };
	pt_walk(e, &p, &v->geom, gpa, end, &w);
}

static int s2_free_visit(struct walk_ctx *ctx, unsigned visit)
{
	(void)visit;
	struct tref t = tref_from_phys(ctx->e, ctx->g->fmt->addr(ctx->level, ctx->old));
	entry_write(ctx->e, ctx->tbl, ctx->level, ctx->idx, ctx->g->fmt->empty(ctx->level));
	table_free(ctx->e, t, TABLE_FREE_NOW, child_level(ctx->g, ctx->level), ~0ull);
	return 0;
}

/* x86 tdp_mmu_map_handle_target_level with KVM_PFN_NOSLOT: new_spte = make_mmio_spte, written with
 * tdp_mmu_set_spte_atomic over the 4K SPTE whatever it holds. Over a present leaf that is the change the TDP MMU
 * never expects (no zap, the page's reference never dropped): stage2-mmio-over-leaf. Over an empty SPTE the model
 * writes nothing: an MMIO SPTE maps no page, and the memslot update's zap would remove it. (A huge leaf on the
 * way is zapped first by the map loop; the model leaves it to the memslot flush.) */
static int s2_mmio_visit(struct walk_ctx *ctx, unsigned visit)
{
	(void)visit;
	struct cpu *c = ctx->arg;
	struct engine *e = ctx->e;
	if (ctx->level != ctx->g->nlevels - 1 || ctx->g->fmt->kind(ctx->level, ctx->old) != E_LEAF)
		return 0;
	violate_at(e, V_STAGE2_MMIO_OVER_LEAF, &(struct viol_focus){ .has = VF_VM | VF_GPA | VF_PFN, .vm = c->vm,
		   .gpa = c->gpa, .pfn = ctx->g->fmt->addr(ctx->level, ctx->old) >> 12 },
		   "vm %d: a fault on gpa %#llx in a memslot being deleted writes an MMIO SPTE over the present leaf "
		   "mapping pfn %#llx", c->vm, (unsigned long long)c->gpa,
		   (unsigned long long)(ctx->g->fmt->addr(ctx->level, ctx->old) >> 12));
	return 1;
}

int kvm_stage2_mmio_map(struct engine *e, struct vm *v, struct cpu *c)
{
	uint64_t gpa = c->gpa & ~(e->geom.page_size - 1);
	struct walker w = { s2_mmio_visit, c, WALK_LEAF | WALK_SKIP_EMPTY, 0 };
	pt_walk(e, &v->s2, &v->geom, gpa, gpa + e->geom.page_size, &w);
	return 0;
}

/* kvm_free_stage2_pgd: every table, then the root; the VM's root pointer is cleared. */
void kvm_stage2_free(struct engine *e, struct vm *v)
{
	if (v->root_freed)
		return;
	struct walker w = { s2_free_visit, NULL, WALK_TABLE_POST | WALK_SKIP_EMPTY, 0 };
	pt_walk(e, &v->s2, &v->geom, 0, ~0ull, &w);
	table_free(e, v->s2.root, TABLE_FREE_NOW, v->start_level, ~0ull);
	v->s2.root = TREF_NONE;
	v->root_freed = true;
}

/* The legality oracle: what a stage-2 leaf of this size may be, whatever the knobs decided. */
static int s2_check_install(struct engine *e, struct vm *v, struct cpu *c, int level, uint64_t size,
			    uint64_t gpa, uint64_t pfn, int min_block)
{
	int vi = vm_index(e, v);
	uint64_t page = e->geom.page_size;
	if (level < 0 || level < v->start_level || (level < 3 && level < min_block) ||
	    (gpa & (size - 1)) || ((pfn * 4096) & (size - 1))) {
		violate_at(e, V_STAGE2_BLOCK_ILLEGAL, &(struct viol_focus){ .has = VF_VM | VF_SIZE | VF_GPA | VF_S2_LEVEL, .vm = vi,
			   .size = size, .gpa = gpa, .s2_level = level },
				"vm %d: a %#llx-byte leaf for gpa %#llx at stage-2 level %d, "
			"but stage 2 starts at level %d and blocks need level >= %d", vi,
			(unsigned long long)size, (unsigned long long)gpa, level, v->start_level, min_block);
		return -1;
	}
	struct memslot *s = slot_for(v, c->gpa);
	int hl = -1;
	uint64_t hpfn = 0;
	int k = host_lookup(e, v->mm, c->hva, &hl, &hpfn, NULL, NULL);
	uint64_t host_size = k == E_LEAF ? level_size(&e->geom, hl) : 0;
	if (size > page && (k == E_LEAF && size > host_size)) {
		violate_at(e, V_STAGE2_OVERSIZE, &(struct viol_focus){ .has = VF_VM | VF_SIZE | VF_GPA | VF_HVA, .vm = vi,
			   .size = size, .gpa = gpa, .hva = c->hva },
				"vm %d: %#llx-byte stage-2 block at gpa %#llx, but the host maps "
			"hva %#llx with a %#llx-byte leaf", vi, (unsigned long long)size, (unsigned long long)gpa,
			(unsigned long long)c->hva, (unsigned long long)host_size);
		return -1;
	}
	if (size > page && (!s || !slot_allows(s, c->hva, size))) {
		violate_at(e, V_STAGE2_OVERSIZE, &(struct viol_focus){ .has = VF_VM | VF_SIZE | VF_GPA, .vm = vi, .size = size,
			   .gpa = gpa }, "vm %d: %#llx-byte stage-2 block at gpa %#llx leaves its memslot "
			"or breaks gpa/hva congruence", vi, (unsigned long long)size, (unsigned long long)gpa);
		return -1;
	}
	if (k != E_LEAF || hpfn != c->pfn || !page_alive(e, c->pfn)) {
		violate_at(e, V_STAGE2_STALE, &(struct viol_focus){ .has = VF_VM | VF_SIZE | VF_GPA | VF_PFN | VF_HVA, .vm = vi,
			   .size = size, .gpa = c->gpa, .pfn = c->pfn, .hva = c->hva },
				"vm %d: a %#llx-byte leaf maps gpa %#llx to pfn %#llx, but the host %s at "
			"hva %#llx", vi, (unsigned long long)size, (unsigned long long)c->gpa,
			(unsigned long long)c->pfn, k != E_LEAF ? "maps nothing" : "maps another page",
			(unsigned long long)c->hva);
		return -1;
	}
	return 0;
}

/* The retry check under mmu_lock, before anything is installed. arm64 user_mem_abort: mmu_invalidate_retry,
 * -11 while any invalidation is open (in_progress) or one ended since the snapshot (seq). x86 is_page_fault_stale:
 * mmu_invalidate_retry_hva, the in-progress half only when the fault's hva lies in the open invalidations'
 * range [range_start, range_end). kvm.invalidate_retry=seq-only compares the sequence alone; none skips it. */
static bool mmu_invalidate_retry(const struct engine *e, const struct vm *v, const struct cpu *c,
				 bool by_hva)
{
	switch (e->knob[K_INVALIDATE_RETRY]) {
	case IR_NONE:
		return false;
	case IR_SEQ_ONLY:
		return v->invalidate_seq != c->seq;
	}
	if (v->invalidate_in_progress) {
		uint64_t hva = c->hva & ~(e->geom.page_size - 1); /* fault->hva: __gfn_to_hva_memslot of the gfn */
		if (!by_hva || (hva >= v->invalidate_range_start && hva < v->invalidate_range_end))
			return true;
	}
	return v->invalidate_seq != c->seq;
}

/* The checks under mmu_lock before anything is installed, common to user_mem_abort and kvm_tdp_mmu_map: the
 * invalidation retry (retry_by_hva: x86's mmu_invalidate_retry_hva), kvm.release_check=root, and the root the
 * fault began with still alive. < 0: the fault's result; > 0: a violation, the fault returns 0; 0: go on. */
int kvm_stage2_fault_stale(struct engine *e, struct vm *v, const struct cpu *c, bool retry_by_hva)
{
	if (mmu_invalidate_retry(e, v, c, retry_by_hva))
		return -EAGAIN;
	if (e->knob[K_RELEASE_CHECK] == RC_ROOT && v->released)
		return -EAGAIN;
	if (!tref_alive(e, c->s2_root)) {
		/* arm64: kvm_free_stage2_pgd set mmu->pgt to NULL; user_mem_abort dereferences it */
		violate_at(e, V_STAGE2_AFTER_RELEASE, &(struct viol_focus){ .has = VF_VM | VF_GPA | VF_TABLE,
			   .vm = vm_index(e, v), .gpa = c->gpa, .table = tref_phys(c->s2_root) },
				"vm %d: guest fault for gpa %#llx installs into stage-2 root "
			"%#llx, freed by mmu_notifier release (exit_mmap)", vm_index(e, v),
			(unsigned long long)c->gpa, (unsigned long long)tref_phys(c->s2_root));
		return 1;
	}
	return 0;
}

/* The map of a fault of this size: one leaf at the level of its size (x86's goal_level, or the level a 2019
 * arm64 design chose), checked before it is written; or, with cfg->pgtable, the levels kvm_pgtable_stage2_map
 * picks, each leaf checked. kvm_pgtable_stage2_map(pgt, fault_ipa, vma_pagesize, ...) / kvm_tdp_mmu_map. */
int kvm_stage2_fault_map(struct engine *e, struct vm *v, struct cpu *c, uint64_t size,
			 const struct stage2_map_cfg *cfg)
{
	uint64_t ipa = c->gpa & ~(size - 1), pa = (c->pfn << 12) & ~(size - 1);
	struct s2_map_arg a = { v, c, ipa, pa, -1, c->write, cfg->pgtable, 0, cfg };
	if (!cfg->pgtable) {
		int level = 3;
		while (level > 0 && level_size(&v->geom, level) < size)
			level--;
		if (s2_check_install(e, v, c, level, size, ipa, pa >> 12, cfg->min_block))
			return 0;
		a.goal = level;
	}
	struct walker w = { s2_map_visit, &a, WALK_LEAF | WALK_TABLE_PRE, 0 };
	pt_walk(e, &v->s2, &v->geom, ipa, ipa + size, &w);
	return a.ret;
}
