/* arch/x86/kvm/mmu/tdp_mmu.c: x86's TDP MMU behind struct kvm_arch_ops (x86_64_kvm_ops): kvm_tdp_mmu_map with
 * the mapping level kvm_mmu_max_mapping_level allows, kvm_tdp_mmu_zap_leafs, kvm_tdp_mmu_zap_all, the memslot
 * checks and hva_to_pfn_fast; the tables themselves are arch/kvm_pgtable.c's. */
#include "ptf.h"
#include "kvm/kvm_host.h"

/* kvm_arch_init_vm: "if (type) return -EINVAL;" was checked before; the one TDP root */
static int kvm_tdp_mmu_init_vm(struct engine *e, struct vm *v, uint64_t type)
{
	return kvm_stage2_init(e, v, (unsigned)type);
}

/* kvm_tdp_mmu_zap_leafs: a block is zapped whole; tables stay ("no 'struct kvm_mmu_page' will be freed") until
 * the VM goes */
static void kvm_tdp_mmu_zap_leafs(struct engine *e, struct vm *v, uint64_t gpa, uint64_t end)
{
	kvm_stage2_unmap(e, v, gpa, end, false);
}

/* kvm_arch_flush_shadow_memslot: v6.6 zaps every SPTE of the VM (kvm_mmu_zap_all_fast, which invalidates all
 * roots: the model keeps its one root and zaps the leaves; the per-slot zap is 6.12's KVM_X86_QUIRK_SLOT_ZAP_ALL) */
static void kvm_arch_flush_shadow_memslot(struct engine *e, struct vm *v, const struct memslot *old)
{
	kvm_tdp_mmu_zap_leafs(e, v, 0, 1ull << 48);
}

/* kvm_arch_prepare_memory_region (CREATE and MOVE): base_gfn + npages - 1 > kvm_mmu_max_gfn(): 48 physical
 * address bits under the 4-level TDP */
static int kvm_arch_prepare_memory_region(struct engine *e, struct vm *v, const struct memslot *new, int change)
{
	if (change == KVM_MR_DELETE)
		return 0;
	return new->gpa + new->len > 1ull << 48 ? -EINVAL : 0;
}

/* access_ok (asm/uaccess_64.h __access_ok, memory_size not a constant): v6.6 valid_user_address(hva + len), the
 * end as a long >= 0, and no wrap; 6.12+ (kvm.memslot_access_ok=user-ptr-max): the end <= USER_PTR_MAX */
static bool access_ok(const struct engine *e, uint64_t hva, uint64_t len)
{
	if (e->knob[K_MEMSLOT_ACCESS_OK] == 1)
		return hva + len >= hva && hva + len <= e->task_size;
	return hva + len >= hva && (int64_t)(hva + len) >= 0;
}

/* The mmap_lock x86 takes only when hva_to_pfn_fast (GUP-fast: a present leaf, writable for a write) cannot
 * serve the fault and get_user_pages_unlocked takes it. */
static int hva_to_pfn_lock(struct engine *e, struct vm *v, uint64_t hva, bool write)
{
	int hl;
	uint64_t hpfn;
	struct tref t;
	uint32_t i;
	if (host_lookup(e, v->mm, hva, &hl, &hpfn, &t, &i) == E_LEAF &&
	    (!write || e->geom.fmt->writable(hl, entry_get(e, t, i))))
		return 0;
	return lock_acquire(e, LC_MMAP, (uint64_t)v->mm, LM_READ);
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

/* __kvm_faultin_pfn on a KVM_MEMSLOT_INVALID memslot: "Retry the page fault if the gfn hit a memslot that is being
 * deleted or moved. This ensures any existing SPTEs for the old memslot will be zapped before KVM inserts a new
 * MMIO SPTE for the gfn." (RET_PF_RETRY, e0c378684b65). Before it (kvm.invalid_slot_fault=mmio),
 * kvm_is_visible_memslot said no for the invalid slot: KVM_PFN_NOSLOT, the gfn handled as MMIO. */
static int kvm_invalid_slot_fault(const struct engine *e)
{
	return e->knob[K_INVALID_SLOT_FAULT] == IS_MMIO ? 1 : -EAGAIN;
}

/* kvm_tdp_page_fault under mmu_lock: is_page_fault_stale (mmu_invalidate_retry_hva), the level, kvm_tdp_mmu_map;
 * a KVM_PFN_NOSLOT fault maps an MMIO SPTE at 4K (tdp_mmu_map_handle_target_level: make_mmio_spte) */
static int kvm_tdp_mmu_map(struct engine *e, struct vm *v, struct cpu *c)
{
	int ret = kvm_stage2_fault_stale(e, v, c, !c->noslot);
	if (ret)
		return ret < 0 ? ret : 0;
	if (c->noslot)
		return kvm_stage2_mmio_map(e, v, c);
	uint64_t size = kvm_mmu_max_mapping_size(e, v, slot_for(v, c->gpa), c->hva);
	const struct stage2_map_cfg cfg = { false, true, 1 };
	return kvm_stage2_fault_map(e, v, c, size, &cfg);
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

const struct kvm_arch_ops x86_64_kvm_ops = {
	.mmu_notifier = true,
	.init_vm = kvm_tdp_mmu_init_vm,
	.destroy_vm = kvm_stage2_free,
	.access_ok = access_ok,
	.flush_shadow_memslot = kvm_arch_flush_shadow_memslot,
	.prepare_memory_region = kvm_arch_prepare_memory_region,
	.fault_lock = hva_to_pfn_lock,
	.page_fault = kvm_tdp_mmu_map,
	.invalid_slot_fault = kvm_invalid_slot_fault,
	.unmap_gfn_range = kvm_tdp_mmu_zap_leafs,
	.flush_shadow_all = kvm_tdp_mmu_zap_all, /* kvm_mmu_zap_all: the roots stay */
};
