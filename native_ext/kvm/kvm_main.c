/* kvm/kvm_main.c: VMs, memslots, the guest-fault protocol and the mmu_notifier side: s390 gmap, arm64 stage 2, x86 TDP. */
#include <string.h>
#include <stdlib.h>
#include "ptf.h"

#define SYNC_CPU MAX_CPUS
enum { BC_PGTABLE, BC_CAN_MAP, BC_HAS_PMD, BC_HAS_PUD, BC_NONE }; /* arm64.stage2_block_check */
enum { RC_NONE, RC_ROOT };                                         /* kvm.release_check */

static struct vm *vm_get(struct engine *e, uint64_t vm)
{
	return vm < MAX_VMS && e->vms[vm].used ? &e->vms[vm] : NULL;
}

static int vm_index(struct engine *e, struct vm *v) { return (int)(v - e->vms); }

static int s2_check_install(struct engine *e, struct vm *v, struct cpu *c, int level, uint64_t size,
			    uint64_t gpa, uint64_t pfn);

/* ---- stage-2 page tables, through the generic walker ---- */

/* kvm_init_stage2_mmu (arm64: the geometry of the IPA size, within kvm_set_ipa_limit) / the TDP root */
static int s2_create(struct engine *e, struct vm *v, unsigned ipa_bits)
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
	if (a->check && s2_check_install(e, a->v, a->c, ctx->level, size, ctx->addr, phys >> 12))
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
		violate(e, V_ENGINE_ASSERT, "stage-2 map walk found no level for gpa %#llx",
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
		if (e->arch == ARCH_X86_64) {
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

static void s2_zap(struct engine *e, struct vm *v, uint64_t gpa, uint64_t end)
{
	unsigned flags = WALK_LEAF | WALK_SKIP_EMPTY | (e->arch == ARCH_ARM64 ? WALK_TABLE_POST : 0);
	struct walker w = { s2_zap_visit, v, flags, 0 };
	if (!v->root_freed)
		pt_walk(e, &v->s2, &v->geom, gpa, end, &w);
}

static int tdp_zap_all_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct engine *e = ctx->e;
	const struct entry_fmt *f = ctx->g->fmt;
	struct vm *v = ctx->arg;
	if (visit == WALK_LEAF) {
		if (f->kind(ctx->level, ctx->old) != E_LEAF)
			return 0;
		entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->empty(ctx->level));
		emit(e, EV_S2_ZAP, (uint64_t)vm_index(e, v), ctx->addr, ctx->level,
		     f->addr(ctx->level, ctx->old) >> 12);
		return 0;
	}
	struct tref t = tref_from_phys(e, f->addr(ctx->level, ctx->old));
	entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->empty(ctx->level));
	table_free(e, t, TABLE_FREE_RCU, 0, 0);
	return 0;
}

/* kvm_mmu_zap_all -> kvm_tdp_mmu_zap_all -> tdp_mmu_zap_root: every SPTE zapped, every child table freed through
 * RCU (handle_removed_pt), the root kept and still valid (only kvm_tdp_mmu_invalidate_all_roots sets role.invalid,
 * and release does not call it), so is_page_fault_stale does not fire for a fault that began before. */
static void kvm_tdp_mmu_zap_all(struct engine *e, struct vm *v)
{
	struct walker w = { tdp_zap_all_visit, v, WALK_LEAF | WALK_TABLE_POST | WALK_SKIP_EMPTY, 0 };
	pt_walk(e, &v->s2, &v->geom, 0, ~0ull, &w);
}

static int s2_free_visit(struct walk_ctx *ctx, unsigned visit)
{
	(void)visit;
	struct tref t = tref_from_phys(ctx->e, ctx->g->fmt->addr(ctx->level, ctx->old));
	entry_write(ctx->e, ctx->tbl, ctx->level, ctx->idx, ctx->g->fmt->empty(ctx->level));
	table_free(ctx->e, t, TABLE_FREE_NOW, child_level(ctx->g, ctx->level), ~0ull);
	return 0;
}

/* kvm_free_stage2_pgd: every table, then the root; the VM's root pointer is cleared. */
static void s2_destroy(struct engine *e, struct vm *v)
{
	if (v->root_freed)
		return;
	struct walker w = { s2_free_visit, NULL, WALK_TABLE_POST | WALK_SKIP_EMPTY, 0 };
	pt_walk(e, &v->s2, &v->geom, 0, ~0ull, &w);
	table_free(e, v->s2.root, TABLE_FREE_NOW, v->start_level, ~0ull);
	v->s2.root = TREF_NONE;
	v->root_freed = true;
}

/* ---- VMs and memslots ---- */

/* KVM_CREATE_VM's type (the trace's third vm_create argument) in kvm_arch_init_vm, before anything else is set
 * up: x86 "if (type) return -EINVAL;" (v6.8 replaced it by kvm_is_vm_type_supported); s390 without
 * CONFIG_KVM_S390_UCONTROL (the distribution and defconfig choice) "if (type) goto out_err;" with rc -EINVAL,
 * before s390_enable_sie, so the mm is not converted. arm64 reads it as KVM_VM_TYPE_ARM_IPA_SIZE (s2_create). */
static int kvm_arch_vm_type(const struct engine *e, uint64_t type)
{
	return e->arch != ARCH_ARM64 && type ? -EINVAL : 0;
}

/* kvm_vm_ioctl and kvm_vcpu_ioctl begin with "if (kvm->mm != current->mm || kvm->vm_dead) return -EIO;" (vm_dead:
 * KVM_BUG_ON, not modelled). The caller of a VM operation is the process that created the VM, and an mm belongs
 * to one process (the model has no CLONE_VM), so current->mm is still kvm->mm iff some process's mm is the VM's:
 * after that process's exit, or its exec to a new mm, none is, and every later VM and vCPU ioctl is -EIO.
 * Closing the fd (vm_destroy) is no ioctl. A vCPU already inside KVM_RUN (guest_fault_commit) passed the check. */
bool kvm_mm_not_current(const struct engine *e, uint64_t vmi)
{
	if (vmi >= MAX_VMS || !e->vms[vmi].used)
		return false; /* no such VM: the operation's own -ENOENT */
	for (int p = 0; p < MAX_PIDS; p++)
		if (e->procs[p].exists && e->procs[p].mm == e->vms[vmi].mm)
			return false;
	return true;
}

int vm_create(struct engine *e, uint64_t vmi, uint64_t pid, uint64_t ipa_bits)
{
	if (vmi >= MAX_VMS) /* run() validates traces first; Engine.step and the checker's alphabet do not */
		return -EINVAL;
	if (e->vms[vmi].used)
		return -EEXIST;
	if (pid >= MAX_PIDS || !e->procs[pid].exists)
		return -ESRCH;
	int mm = e->procs[pid].mm, ret;
	struct vm *v = &e->vms[vmi];
	if ((ret = kvm_arch_vm_type(e, ipa_bits)))
		return ret;
	if (e->arch == ARCH_S390 && (ret = s390_enable_sie(e, mm)))
		return ret;
	/* kvm_create_vm -> kvm_init_mmu_notifier -> mmu_notifier_register: mmap_write_lock(current->mm) (s390 registers
	 * no notifier in v6.6); the stage 2 set up before it is undone when it cannot finish: waiting changes nothing */
	if (e->arch != ARCH_S390 && (ret = lock_would_wait(e, LC_MMAP, (uint64_t)mm, LM_WRITE)))
		return ret;
	/* ... whose mm_take_all_locks takes every VMA's i_mmap_rwsem and anon_vma root for write */
	for (int i = 0; e->arch != ARCH_S390 && i < e->mms[mm].nvma; i++)
		if ((ret = vma_rmap_wait(e, &e->mms[mm].vmas[i])))
			return ret;
	memset(v, 0, sizeof(*v));
	v->mm = mm;
	ret = e->arch == ARCH_S390 ? gmap_create(e, v) : s2_create(e, v, (unsigned)ipa_bits);
	if (ret)
		return ret;
	v->used = true;
	mmgrab(e, mm); /* kvm->mm: mmgrab */
	return 0;
}

/* enum kvm_mr_change */
enum { KVM_MR_CREATE, KVM_MR_DELETE, KVM_MR_MOVE };

/* kvm_arch_flush_shadow_memslot, called by kvm_invalidate_memslot for DELETE and MOVE before the arch checks:
 * arm64 unmaps the slot's IPA range (unmap_stage2_range); x86 v6.6 zaps every SPTE of the VM
 * (kvm_mmu_zap_all_fast, which invalidates all roots: the model keeps its one root and zaps the leaves; the
 * per-slot zap is 6.12's KVM_X86_QUIRK_SLOT_ZAP_ALL); s390's is empty (it unmaps at commit). */
static void kvm_arch_flush_shadow_memslot(struct engine *e, struct vm *v, const struct memslot *old)
{
	if (e->arch == ARCH_ARM64)
		s2_zap(e, v, old->gpa, old->gpa + old->len);
	else if (e->arch == ARCH_X86_64)
		s2_zap(e, v, 0, 1ull << 48);
}

/* kvm_arch_prepare_memory_region, for CREATE and MOVE (a DELETE passes every arch). */
static int kvm_arch_prepare_memory_region(struct engine *e, struct vm *v, const struct memslot *new, int change)
{
	if (change == KVM_MR_DELETE)
		return 0;
	switch (e->arch) {
	case ARCH_S390: /* hva and size 1 MiB aligned, the end below mem_limit = TASK_SIZE_MAX; the gpa is not checked */
		if ((new->hva | new->len) & ((1ull << 20) - 1) || new->gpa + new->len > v->mem_limit)
			return -EINVAL;
		return 0;
	case ARCH_ARM64: { /* base_gfn + npages > kvm_phys_size >> PAGE_SHIFT: outside the IPA space */
		const struct level_geom *lv = &v->geom.lv[v->start_level];
		if (new->gpa + new->len > 1ull << (lv->shift + __builtin_ctz(lv->entries)))
			return -EFAULT;
		/* then mmap_read_lock(current->mm) to look at the VMAs behind the slot */
		return lock_would_wait(e, LC_MMAP, (uint64_t)v->mm, LM_READ);
	}
	default: /* base_gfn + npages - 1 > kvm_mmu_max_gfn(): 48 physical address bits under the 4-level TDP */
		return new->gpa + new->len > 1ull << 48 ? -EINVAL : 0;
	}
}

/* kvm_swap_active_memslots waits for mn_active_invalidate_count to drop to 0 (an invalidate_range_start
 * without its _end: inval_hold), then synchronize_srcu waits for in-flight guest faults: -16, nothing done. */
static int kvm_swap_active_memslots_wait(struct engine *e, struct vm *v)
{
	uint64_t vi = (uint64_t)vm_index(e, v);
	int ret = v->mn_active_invalidate_count ? lock_would_wait(e, LC_MN_ACTIVE, vi, LM_WRITE) : 0;
	if (!ret && v->faults_in_flight)
		ret = lock_would_wait(e, LC_SRCU, vi, LM_WRITE);
	if (!ret && (v->faults_in_flight || v->mn_active_invalidate_count))
		violate(e, V_ENGINE_ASSERT, "vm %d: memslot update waits for nobody (in flight %d, active %d)",
			(int)vi, v->faults_in_flight, v->mn_active_invalidate_count);
	return ret;
}

/* kvm_set_memslot: DELETE and MOVE first invalidate the old slot (the swap, then the flush), so an arch check
 * that fails afterwards leaves the old range zapped and the slot as it was; CREATE swaps after the checks. */
static int kvm_set_memslot(struct engine *e, struct vm *v, struct memslot *s, const struct memslot *new, int change)
{
	int ret;
	if (change != KVM_MR_CREATE) {
		if ((ret = kvm_swap_active_memslots_wait(e, v)))
			return ret;
		kvm_arch_flush_shadow_memslot(e, v, s);
	}
	if ((ret = kvm_arch_prepare_memory_region(e, v, new, change)))
		return ret;
	if (change == KVM_MR_CREATE && (ret = kvm_swap_active_memslots_wait(e, v)))
		return ret;
	/* s390's commit: gmap_map_segment / gmap_unmap_segment under mmap_write_lock(gmap->mm) */
	if (e->arch == ARCH_S390 && (ret = lock_would_wait(e, LC_MMAP, (uint64_t)v->mm, LM_WRITE)))
		return ret;
	struct memslot old = *s;
	*s = change == KVM_MR_DELETE ? (struct memslot){ 0 } : *new;
	kvm_arch_commit_memory_region(e, v, old, *s); /* arch/s390/gmap.c: gmap_unmap_segment / gmap_map_segment */
	return 0;
}

/* access_ok(userspace_addr, memory_size) as each arch has it in v6.6 (untagged_addr changes no address the trace
 * can give: x86 without LAM and s390 keep it, arm64 clears bits 56-63, which access_ok refuses anyway).
 * x86_64 (asm/uaccess_64.h __access_ok, memory_size not a constant): valid_user_address(hva + len), i.e. the
 * end as a long is >= 0 (below 2^63), and no wrap; no TASK_SIZE(_MAX) test. arm64 (asm/uaccess.h, then
 * asm-generic/access_ok.h): (u65)hva + len <= TASK_SIZE_MAX = 2^VA_BITS, VA_BITS being CONFIG_ARM64_VA_BITS
 * (2^va_bits when the build's VA size is the running one; arm64.task_size_max=52 for a 52-bit build running
 * with 48 bits). s390 selects
 * ALTERNATE_USER_ADDRESS_SPACE, so asm-generic __access_ok is true: no test at all (gmap_map_segment checks the
 * range at commit and its error is dropped). */
static bool kvm_access_ok(const struct engine *e, uint64_t hva, uint64_t len)
{
	switch (e->arch) {
	case ARCH_X86_64: /* v6.6: valid_user_address is (long)x >= 0; 6.12+: x <= USER_PTR_MAX (TASK_SIZE_MAX) */
		if (e->knob[K_MEMSLOT_ACCESS_OK] == 1)
			return hva + len >= hva && hva + len <= e->task_size;
		return hva + len >= hva && (int64_t)(hva + len) >= 0;
	case ARCH_ARM64: { /* TASK_SIZE_MAX is 1 << VA_BITS, the build's VA size (arm64.task_size_max) */
		uint64_t max = e->knob[K_TASK_SIZE_MAX] == 1 ? 1ull << 52 : e->task_size;
		return len <= max && hva <= max - len;
	}
	default:
		return true;
	}
}

/* __kvm_set_memory_region (KVM_SET_USER_MEMORY_REGION; the trace has no flags, so no KVM_MR_FLAGS_ONLY) */
int __kvm_set_memory_region(struct engine *e, const uint64_t *a)
{
	struct vm *v = vm_get(e, a[0]);
	if (!v)
		return -ENOENT;
	uint64_t slot = a[1], gpa = a[2], hva = a[3], len = a[4], page = e->geom.page_size;
	if (slot >= MAX_SLOTS)
		return -EINVAL;
	/* general sanity checks, a delete included: page-aligned size, gpa and hva; access_ok(hva, size); no
	 * wrap of the gpa range; at most KVM_MEM_MAX_NR_PAGES */
	if ((len | gpa | hva) & (page - 1) || !kvm_access_ok(e, hva, len) || gpa + len < gpa ||
	    len / page > (1ull << 31) - 1)
		return -EINVAL;
	struct memslot *s = &v->slots[slot];
	struct memslot new = { true, gpa, hva, len };
	int change;
	if (len == 0) {
		if (!s->used)
			return -EINVAL; /* deleting a slot that does not exist */
		change = KVM_MR_DELETE;
	} else if (!s->used) {
		change = KVM_MR_CREATE;
	} else {
		if (hva != s->hva || len != s->len)
			return -EINVAL; /* a slot's hva and size never change */
		if (gpa == s->gpa)
			return 0; /* nothing to change: nothing is zapped */
		change = KVM_MR_MOVE;
	}
	if (change != KVM_MR_DELETE) /* kvm_check_memslot_overlap: in gpa; an hva may back two slots */
		for (int i = 0; i < MAX_SLOTS; i++) {
			const struct memslot *o = &v->slots[i];
			if (i != (int)slot && o->used && o->gpa < gpa + len && gpa < o->gpa + o->len)
				return -EEXIST;
		}
	return kvm_set_memslot(e, v, s, &new, change);
}

static struct memslot *slot_for(struct vm *v, uint64_t gpa)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		if (v->slots[i].used && gpa >= v->slots[i].gpa && gpa - v->slots[i].gpa < v->slots[i].len)
			return &v->slots[i];
	return NULL;
}

/* fault_supports_stage2_huge_mapping: congruent gpa/hva and the whole block inside the slot. */
static bool slot_allows(const struct memslot *s, uint64_t hva, uint64_t size)
{
	if ((s->gpa & (size - 1)) != (s->hva & (size - 1)))
		return false;
	uint64_t start = hva & ~(size - 1);
	return start >= s->hva && start + size <= s->hva + s->len;
}

/* ---- the guest-fault protocol ---- */

/* The mmap_lock a guest fault takes before its host fault-in: s390 gmap_fault holds mmap_read_lock(gmap->mm) from
 * before __gmap_translate to the end of __gmap_link (the commit; cpu_locks keeps it); arm64 user_mem_abort takes it
 * around vma_lookup; x86 needs it only when hva_to_pfn_fast (GUP-fast: a present leaf, writable for a write)
 * cannot serve the fault and get_user_pages_unlocked takes it. */
static int fault_begin_lock(struct engine *e, struct vm *v, uint64_t hva, bool write)
{
	if (e->arch == ARCH_X86_64) {
		int hl;
		uint64_t hpfn;
		struct tref t;
		uint32_t i;
		if (host_lookup(e, v->mm, hva, &hl, &hpfn, &t, &i) == E_LEAF &&
		    (!write || e->geom.fmt->writable(hl, entry_get(e, t, i))))
			return 0;
	}
	return lock_acquire(e, LC_MMAP, (uint64_t)v->mm, LM_READ);
}

int fault_begin(struct engine *e, int cpu, uint64_t vmi, uint64_t gpa, bool write)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_NONE)
		return -EBUSY;
	struct vm *v = vm_get(e, vmi);
	if (!v)
		return -ENOENT;
	struct memslot *s = slot_for(v, gpa);
	if (!s)
		return -EFAULT;
	struct mm *m = &e->mms[v->mm];
	if (m->dead || v->released)
		return -EFAULT;
	uint64_t hva = s->hva + (gpa - s->gpa);
	int ret = fault_begin_lock(e, v, hva, write);
	if (ret)
		return ret;
	if (e->arch == ARCH_S390 && __gmap_translate(v, gpa, &hva))
		return -EFAULT; /* gmap_fault: the gmap's guest_to_host, not the memslot */
	struct vma *vma = vma_find(m, hva);
	if (!vma)
		return -EFAULT;
	const struct geom *g = &e->geom;
	uint64_t size = g->page_size;
	if (vma->flags & VMA_HUGETLB_PUD)
		size = 1ull << g->pud_shift;
	else if (vma->flags & VMA_HUGETLB_PMD)
		size = 1ull << g->pmd_shift;
	if (size > 1ull << g->pmd_shift && !slot_allows(s, hva, size))
		size = 1ull << g->pmd_shift;
	if (size > g->page_size && !slot_allows(s, hva, size))
		size = g->page_size;
	c->seq = v->invalidate_seq;
	uint64_t pfn, host_size;
	ret = handle_mm_fault(e, v->mm, hva, write, &pfn, &host_size);
	if (ret && e->arch == ARCH_S390 && ret != -EBUSY)
		ret = -EFAULT; /* gmap_fault: a failed fixup_user_fault is -EFAULT, whatever its errno (-16: it waits) */
	if (ret)
		return ret;
	c->actor = A_GFAULT;
	c->vm = (int)vmi;
	c->mm = v->mm;
	c->gpa = gpa;
	c->hva = hva;
	c->size = size;
	c->pfn = pfn;
	c->write = write;
	c->vma_thp = (vma->flags & VMA_THP) && !(vma->flags & VMA_NOHUGE);
	c->s2_root = v->s2.root;
	/* the vCPU thread is a CLONE_VM thread of the VMM: it holds mm_users on every arch (kvm.fault_holds_mm=no is
	 * the what-if where it does not, on arm64 and x86_64) */
	c->holds_mm = e->arch == ARCH_S390 || e->knob[K_FAULT_HOLDS_MM] == 0;
	if (c->holds_mm)
		e->mms[v->mm].users++; /* mmget */
	v->faults_in_flight++;
	mmgrab(e, v->mm);
	return 0;
}

static void fault_end(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	struct vm *v = &e->vms[c->vm];
	v->faults_in_flight--;
	c->actor = A_NONE;
	if (c->holds_mm)
		mmput(e, c->mm); /* mmput: may run exit_mmap now */
	mmdrop(e, c->mm);
}

/* The legality oracle: what a stage-2 leaf of this size may be, whatever the knobs decided. */
static int s2_check_install(struct engine *e, struct vm *v, struct cpu *c, int level, uint64_t size,
			    uint64_t gpa, uint64_t pfn)
{
	int vi = vm_index(e, v);
	int min_block = e->arch == ARCH_ARM64 ? (e->geom.page_size == 4096 ? 1 : 2) : 1;
	uint64_t page = e->geom.page_size;
	if (level < 0 || level < v->start_level || (level < 3 && level < min_block) ||
	    (gpa & (size - 1)) || ((pfn * 4096) & (size - 1))) {
		violate(e, V_STAGE2_BLOCK_ILLEGAL, "vm %d: a %#llx-byte leaf for gpa %#llx at stage-2 level %d, "
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
		violate(e, V_STAGE2_OVERSIZE, "vm %d: %#llx-byte stage-2 block at gpa %#llx, but the host maps "
			"hva %#llx with a %#llx-byte leaf", vi, (unsigned long long)size, (unsigned long long)gpa,
			(unsigned long long)c->hva, (unsigned long long)host_size);
		return -1;
	}
	if (size > page && (!s || !slot_allows(s, c->hva, size))) {
		violate(e, V_STAGE2_OVERSIZE, "vm %d: %#llx-byte stage-2 block at gpa %#llx leaves its memslot "
			"or breaks gpa/hva congruence", vi, (unsigned long long)size, (unsigned long long)gpa);
		return -1;
	}
	if (k != E_LEAF || hpfn != c->pfn || !page_alive(e, c->pfn)) {
		violate(e, V_STAGE2_STALE, "vm %d: a %#llx-byte leaf maps gpa %#llx to pfn %#llx, but the host %s at "
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
static bool mmu_invalidate_retry(const struct engine *e, const struct vm *v, const struct cpu *c)
{
	switch (e->knob[K_INVALIDATE_RETRY]) {
	case IR_NONE:
		return false;
	case IR_SEQ_ONLY:
		return v->invalidate_seq != c->seq;
	}
	if (v->invalidate_in_progress) {
		uint64_t hva = c->hva & ~(e->geom.page_size - 1); /* fault->hva: __gfn_to_hva_memslot of the gfn */
		if (e->arch != ARCH_X86_64 || (hva >= v->invalidate_range_start && hva < v->invalidate_range_end))
			return true;
	}
	return v->invalidate_seq != c->seq;
}

/* The 2019 designs of the PUD-block decision (arm64.stage2_block_check other than pgtable): may a PUD-size candidate
 * stay one PUD-size leaf? If not it becomes one PMD-size leaf. */
static bool pud_block_allowed(struct engine *e, struct vm *v, uint64_t size)
{
	int levels = 4 - v->start_level;
	switch (e->knob[K_STAGE2_BLOCK_CHECK]) {
	case BC_HAS_PMD:
		return levels > 2;
	case BC_HAS_PUD:
		return levels == 4;
	case BC_NONE:
		return true;
	default: /* can-map-block-size */
		return size >= 1ull << e->geom.pmd_shift && level_size(&v->geom, v->start_level) >= size;
	}
}

/* kvm_mmu_max_mapping_level (x86): the largest level the memslot allows at the gfn (lpage_info's disallow_lpage:
 * gpa and hva congruent, the block inside the slot), capped by host_pfn_mapping_level: the host leaf at the hva,
 * now, under mmu_lock, whatever the VMA (hugetlb too). An empty host entry is PG_LEVEL_4K: x86 never replays
 * the fault for it (arm64's get_user_mapping_size does). */
static uint64_t kvm_mmu_max_mapping_size(struct engine *e, struct vm *v, const struct memslot *s, uint64_t hva)
{
	const struct geom *g = &e->geom;
	uint64_t page = g->page_size, max = page;
	if (!s)
		return page;
	if (slot_allows(s, hva, 1ull << g->pud_shift))
		max = 1ull << g->pud_shift;
	else if (slot_allows(s, hva, 1ull << g->pmd_shift))
		max = 1ull << g->pmd_shift;
	if (max == page)
		return page;
	int hl;
	uint64_t hpfn;
	uint64_t host = host_lookup(e, v->mm, hva, &hl, &hpfn, NULL, NULL) == E_LEAF ? level_size(g, hl) : page;
	return host < max ? host : max;
}

static int s2_fault_commit(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	struct vm *v = &e->vms[c->vm];
	const struct geom *g = &e->geom;
	uint64_t page = g->page_size, pmd = 1ull << g->pmd_shift, size = c->size;
	/* under mmu_lock */
	if (mmu_invalidate_retry(e, v, c))
		return -EAGAIN;
	if (e->knob[K_RELEASE_CHECK] == RC_ROOT && v->released)
		return -EAGAIN;
	if (!tref_alive(e, c->s2_root)) {
		/* arm64: kvm_free_stage2_pgd set mmu->pgt to NULL; user_mem_abort dereferences it */
		violate(e, V_STAGE2_AFTER_RELEASE, "vm %d: guest fault for gpa %#llx installs into stage-2 root "
			"%#llx, freed by mmu_notifier release (exit_mmap)", vm_index(e, v),
			(unsigned long long)c->gpa, (unsigned long long)tref_phys(c->s2_root));
		return 0;
	}
	struct memslot *s = slot_for(v, c->gpa);
	if (e->arch == ARCH_X86_64) {
		size = kvm_mmu_max_mapping_size(e, v, s, c->hva);
	} else if (size == page && s && slot_allows(s, c->hva, pmd)) {
		/* transparent_hugepage_adjust */
		if (e->knob[K_THP_SIZE] == 1) {
			if (c->vma_thp)
				size = pmd; /* vma-naive: the VMA says THP, the host tables are not asked */
		} else {
			/* get_user_mapping_size: the host leaf, now; "the userspace PTs are gone": replay (-EAGAIN) */
			int hl;
			uint64_t hpfn;
			if (host_lookup(e, v->mm, c->hva, &hl, &hpfn, NULL, NULL) != E_LEAF)
				return -EAGAIN;
			if (level_size(g, hl) >= pmd)
				size = pmd;
		}
	}
	bool pgtable = e->arch == ARCH_ARM64 && e->knob[K_STAGE2_BLOCK_CHECK] == BC_PGTABLE;
	if (e->arch == ARCH_ARM64 && !pgtable && size > pmd && !pud_block_allowed(e, v, size))
		size = pmd;
	uint64_t ipa = c->gpa & ~(size - 1), pa = (c->pfn << 12) & ~(size - 1);
	struct s2_map_arg a = { v, c, ipa, pa, -1, c->write, pgtable, 0 };
	if (!pgtable) {
		/* one leaf at the level of its size: x86's goal_level, or the level a 2019 design chose */
		int level = 3;
		while (level > 0 && level_size(&v->geom, level) < size)
			level--;
		if (s2_check_install(e, v, c, level, size, ipa, pa >> 12))
			return 0;
		a.goal = level;
	}
	/* kvm_pgtable_stage2_map(pgt, fault_ipa, vma_pagesize, ...) / kvm_tdp_mmu_map */
	struct walker w = { s2_map_visit, &a, WALK_LEAF | WALK_TABLE_PRE, 0 };
	pt_walk(e, &v->s2, &v->geom, ipa, ipa + size, &w);
	return a.ret;
}

int fault_commit(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_GFAULT)
		return -EINVAL;
	/* its mmput would run exit_mmap, which would wait: the fault stays in flight (its own mmap_lock is released
	 * before: gmap_fault's mmap_read_unlock) */
	e->self_cpu = cpu;
	int ret = c->holds_mm ? exit_mmap_wait(e, c->mm) : 0;
	if (ret)
		return ret;
	if (e->arch == ARCH_S390)
		ret = e->mms[c->mm].dead ? -EFAULT : __gmap_link(e, &e->vms[c->vm], c->gpa, c->hva);
	else
		ret = s2_fault_commit(e, cpu);
	fault_end(e, cpu);
	return ret;
}

int vm_destroy(struct engine *e, uint64_t vmi)
{
	struct vm *v = vm_get(e, vmi);
	if (!v)
		return -ENOENT;
	/* the last kvm reference: a vCPU in KVM_RUN holds its file's */
	if (v->faults_in_flight) {
		int ret = lock_would_wait(e, LC_KVM, vmi, LM_WRITE);
		if (!ret)
			violate(e, V_ENGINE_ASSERT, "vm %d: %d faults in flight and no vCPU holds the VM",
				(int)vmi, v->faults_in_flight);
		return ret ? ret : -EBUSY;
	}
	/* kvm_destroy_vm: mmu_notifier_unregister, then "mn_active_invalidate_count may remain unbalanced": the
	 * ends a held window owes this VM are never delivered (the window does not make destroy wait) */
	inval_window_forget_vm(e, (int)vmi);
	if (e->arch == ARCH_S390)
		gmap_destroy(e, v);
	else
		s2_destroy(e, v);
	v->used = false;
	mmdrop(e, v->mm);
	return 0;
}

/* ---- the mmu_notifier side ---- */

/* Is the VM subscribed to the mm's notifiers (kvm_init_mmu_notifier until mmu_notifier_release unhooks it)? */
static bool vm_subscribed(const struct vm *v, int mm)
{
	return v->used && v->mm == mm && !v->released;
}

/* mm_has_notifiers: some VM of the mm gets its invalidations (s390 has no KVM mmu notifier: its gmap learns
 * of host changes through gmap_unlink). */
bool kvm_mm_has_notifiers(const struct engine *e, int mm)
{
	if (e->arch == ARCH_S390)
		return false;
	for (int vi = 0; vi < MAX_VMS; vi++)
		if (vm_subscribed(&e->vms[vi], mm))
			return true;
	return false;
}

/* kvm_mmu_invalidate_begin (v6.3-6.7): the first open invalidation sets the hva range, later ones widen it. */
static void kvm_mmu_invalidate_begin(struct vm *v, uint64_t start, uint64_t end)
{
	if (++v->invalidate_in_progress == 1) {
		v->invalidate_range_start = start;
		v->invalidate_range_end = end;
	} else {
		if (start < v->invalidate_range_start)
			v->invalidate_range_start = start;
		if (end > v->invalidate_range_end)
			v->invalidate_range_end = end;
	}
}

/* kvm_mmu_notifier_invalidate_range_start, for every VM of the mm: mn_active_invalidate_count++ always (memslot
 * updates wait for it); then __kvm_handle_hva_range takes mmu_lock and calls on_lock = kvm_mmu_invalidate_begin
 * only when a memslot overlaps [start, end), and the handler kvm_unmap_gfn_range zaps the overlapping stage-2
 * range. A range no memslot overlaps leaves in_progress, the range and mmu_invalidate_seq alone. What it did
 * per VM goes to began[] and active[], for the matching _end. */
static void kvm_mmu_notifier_invalidate_range_start(struct engine *e, int mm, uint64_t start, uint64_t end,
						    uint16_t *began, uint16_t *active)
{
	for (int vi = 0; vi < MAX_VMS; vi++) {
		struct vm *v = &e->vms[vi];
		if (!vm_subscribed(v, mm))
			continue;
		v->mn_active_invalidate_count++;
		active[vi]++;
		bool locked = false;
		for (int i = 0; i < MAX_SLOTS; i++) {
			struct memslot *s = &v->slots[i];
			if (!s->used || s->hva >= end || s->hva + s->len <= start)
				continue;
			if (!locked) {
				locked = true;
				kvm_mmu_invalidate_begin(v, start, end);
				began[vi]++;
			}
			uint64_t lo = start > s->hva ? start : s->hva;
			uint64_t hi = end < s->hva + s->len ? end : s->hva + s->len;
			s2_zap(e, v, s->gpa + (lo - s->hva), s->gpa + (hi - s->hva));
		}
	}
}

/* kvm_mmu_notifier_invalidate_range_end for one VM, n_began times kvm_mmu_invalidate_end (seq++, then
 * in_progress--: a fault that snapshotted the old sequence retries), and the mn_active_invalidate_count
 * decrements that let a waiting memslot update go on. The memslots cannot have changed since the start. */
static void kvm_mmu_notifier_invalidate_range_end(struct vm *v, unsigned n_began, unsigned n_active)
{
	v->invalidate_seq += n_began;
	v->invalidate_in_progress -= (int)n_began;
	v->mn_active_invalidate_count -= (int)n_active;
}

/* mmu_notifier_invalidate_range_start, the host change, mmu_notifier_invalidate_range_end, as every host path
 * calls them (the caller makes its change after this returns; nothing else runs in between, so ending now is
 * the same as ending after the change). When a cpu holds an invalidation window (inval_hold) and this
 * operation is the one it stopped, the ends wait on that cpu for inval_end. */
void kvm_notify_range(struct engine *e, int mm, uint64_t start, uint64_t end)
{
	if (e->arch == ARCH_S390)
		return;
	emit(e, EV_NOTIFY, (uint64_t)mm, start, end, 0);
	uint16_t began[MAX_VMS] = { 0 }, active[MAX_VMS] = { 0 };
	int cpu = kvm_mm_has_notifiers(e, mm) ? inval_window_for(e, mm) : -1;
	kvm_mmu_notifier_invalidate_range_start(e, mm, start, end, began, active);
	for (int vi = 0; vi < MAX_VMS; vi++) {
		if (!active[vi])
			continue;
		if (cpu < 0) {
			kvm_mmu_notifier_invalidate_range_end(&e->vms[vi], began[vi], active[vi]);
			continue;
		}
		e->cpus[cpu].inval_began[vi] += began[vi];
		e->cpus[cpu].inval_active[vi] += active[vi];
	}
}

/* inval_end: the held invalidate_range_end calls run now. */
void kvm_invalidate_end_held(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	for (int vi = 0; vi < MAX_VMS; vi++) {
		if (c->inval_active[vi])
			kvm_mmu_notifier_invalidate_range_end(&e->vms[vi], c->inval_began[vi], c->inval_active[vi]);
		c->inval_began[vi] = c->inval_active[vi] = 0;
	}
}

/* mmu_notifier_release from exit_mmap (kvm_mmu_notifier_release -> kvm_flush_shadow_all ->
 * kvm_arch_flush_shadow_all), then the subscription is unhooked (mn_hlist_release): no later invalidation reaches
 * the VM. arm64 frees the stage 2 (kvm_uninit_stage2_mmu -> kvm_free_stage2_pgd: pgt = NULL); x86 zaps every SPTE
 * and keeps its roots (kvm_mmu_zap_all). Neither touches mmu_invalidate_seq. */
void kvm_release(struct engine *e, int mm)
{
	if (e->arch == ARCH_S390)
		return;
	for (int vi = 0; vi < MAX_VMS; vi++) {
		struct vm *v = &e->vms[vi];
		if (!v->used || v->mm != mm || v->released)
			continue;
		if (e->arch == ARCH_X86_64)
			kvm_tdp_mmu_zap_all(e, v);
		else
			s2_destroy(e, v);
		v->released = true;
	}
}

void kvm_abort_faults(struct engine *e)
{
	for (int cpu = 0; cpu <= MAX_CPUS; cpu++)
		if (e->cpus[cpu].actor == A_GFAULT)
			fault_end(e, cpu);
}

void kvm_destroy_all(struct engine *e)
{
	for (int i = 0; i < MAX_VMS; i++)
		if (e->vms[i].used)
			vm_destroy(e, (uint64_t)i);
}

struct coherence_arg { struct vm *v; int vi; };

static int coherence_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct coherence_arg *a = ctx->arg;
	struct engine *e = ctx->e;
	(void)visit;
	if (ctx->g->fmt->kind(ctx->level, ctx->old) != E_LEAF)
		return 0;
	uint64_t pfn = ctx->g->fmt->addr(ctx->level, ctx->old) >> 12;
	struct memslot *s = slot_for(a->v, ctx->addr);
	int hl;
	uint64_t hpfn = 0;
	int k = s ? host_lookup(e, a->v->mm, s->hva + (ctx->addr - s->gpa), &hl, &hpfn, NULL, NULL) : E_EMPTY;
	if (k != E_LEAF || hpfn != pfn || !page_alive(e, pfn)) {
		violate(e, V_STAGE2_STALE, "coherence: vm %d maps gpa %#llx to pfn %#llx, the host %s",
			a->vi, (unsigned long long)ctx->addr, (unsigned long long)pfn,
			k != E_LEAF ? "maps nothing there" : "maps another page there");
		return 1;
	}
	return 0;
}

/* The coherence oracle: every stage-2 leaf translates to what the host maps at the matching hva. */
void kvm_coherence_check(struct engine *e)
{
	if (e->arch == ARCH_S390)
		return;
	for (int vi = 0; vi < MAX_VMS && !e->viol; vi++) {
		struct vm *v = &e->vms[vi];
		if (!v->used || v->root_freed)
			continue;
		struct coherence_arg a = { v, vi };
		struct walker w = { coherence_visit, &a, WALK_LEAF | WALK_SKIP_EMPTY, 0 };
		pt_walk(e, &v->s2, &v->geom, 0, ~0ull, &w);
	}
}

/* KVM's mmu_notifier subscription (kvm_mmu_notifier_ops): what the mm side reaches through e->mn_ops */
const struct mmu_notifier_ops kvm_mmu_notifier_ops = {
	.invalidate_range = kvm_notify_range,
	.invalidate_range_end_held = kvm_invalidate_end_held,
	.release = kvm_release,
};
