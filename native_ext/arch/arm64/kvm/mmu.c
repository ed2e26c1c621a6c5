/* arch/arm64/kvm/mmu.c: arm64's KVM stage 2 behind struct kvm_arch_ops (arm64_kvm_ops): the IPA-size VM type,
 * memslot checks, user_mem_abort's choice of the mapping size, kvm_unmap_gfn_range and the release's
 * kvm_free_stage2_pgd; the tables themselves are arch/kvm_pgtable.c's. */
#include "ptf.h"
#include "kvm/kvm_host.h"

/* kvm_arch_init_vm -> kvm_init_stage2_mmu: the type is KVM_VM_TYPE_ARM_IPA_SIZE */
static int kvm_init_stage2_mmu(struct engine *e, struct vm *v, uint64_t type)
{
	return kvm_stage2_init(e, v, (unsigned)type);
}

/* kvm_unmap_gfn_range -> kvm_pgtable_stage2_unmap: a table left with no valid entry is freed at once */
static void kvm_unmap_gfn_range(struct engine *e, struct vm *v, uint64_t gpa, uint64_t end)
{
	kvm_stage2_unmap(e, v, gpa, end, true);
}

/* stage2_range_addr_end: chunks of kvm_granule_size(KVM_PGTABLE_MIN_BLOCK_LEVEL) (1 GiB with 4K pages, 32 MiB with
 * 16K, 512 MiB with 64K) */
static uint64_t stage2_range_addr_end(const struct engine *e, const struct vm *v, uint64_t addr, uint64_t end)
{
	(void)v;
	int shift = __builtin_ctzll(e->geom.page_size), level = shift == 12 ? 1 : 2;
	uint64_t size = 1ull << (shift + (shift - 3) * (3 - level));
	uint64_t boundary = (addr + size) & ~(size - 1);
	return boundary - 1 < end - 1 ? boundary : end;
}

/* The notifier's kvm_unmap_gfn_range -> __unmap_stage2_range(may_block) -> stage2_apply_range(resched): each chunk
 * reads pgt = mmu->pgt ("if (!pgt) return -EINVAL;", a WARN_ON in __unmap_stage2_range) and unmaps it; between
 * chunks cond_resched_rwlock_write drops mmu_lock: the first such yield returns here (a held window stops there). */
static uint64_t kvm_unmap_gfn_range_to_yield(struct engine *e, struct vm *v, uint64_t gpa, uint64_t end)
{
	for (uint64_t addr = gpa, next; addr != end; addr = next) {
		if (v->root_freed)
			return end;
		next = stage2_range_addr_end(e, v, addr, end);
		kvm_stage2_unmap(e, v, addr, next, true);
		if (next != end)
			return next;
	}
	return end;
}

/* The chunks after the yield. v6.6 (kvm.s2_unmap_yield_recheck=yes, since 0c428a6a9256): pgt is reread each
 * chunk, and a stage 2 that kvm_free_stage2_pgd freed meanwhile (mmu->pgt = NULL; a VM created in the slot since
 * is another struct kvm) ends the walk. Before it (no): unmap_stage2_range went on from the pgd pointer it took
 * before cond_resched_lock, into the freed tables. */
static void kvm_unmap_gfn_range_resume(struct engine *e, struct vm *v, struct tref root, uint64_t gpa, uint64_t end)
{
	for (uint64_t addr = gpa, next; addr != end; addr = next) {
		if (e->knob[K_S2_UNMAP_YIELD_RECHECK] == UY_YES &&
		    (!v->used || v->root_freed || v->s2.root.blk != root.blk || v->s2.root.half != root.half ||
		     v->s2.root.gen != root.gen))
			return;
		next = stage2_range_addr_end(e, v, addr, end);
		kvm_stage2_unmap_root(e, v, root, addr, next, true);
		if (e->viol)
			return;
	}
}

/* kvm_arch_flush_shadow_memslot (DELETE and MOVE): unmap_stage2_range of the old slot's IPA range */
static void kvm_arch_flush_shadow_memslot(struct engine *e, struct vm *v, const struct memslot *old)
{
	kvm_unmap_gfn_range(e, v, old->gpa, old->gpa + old->len);
}

/* kvm_arch_prepare_memory_region (CREATE and MOVE): base_gfn + npages > kvm_phys_size >> PAGE_SHIFT is outside
 * the IPA space; then mmap_read_lock(current->mm) to look at the VMAs behind the slot. */
static int kvm_arch_prepare_memory_region(struct engine *e, struct vm *v, const struct memslot *new, int change)
{
	if (change == KVM_MR_DELETE)
		return 0;
	const struct level_geom *lv = &v->geom.lv[v->start_level];
	if (new->gpa + new->len > 1ull << (lv->shift + __builtin_ctz(lv->entries)))
		return -EFAULT;
	return lock_would_wait(e, LC_MMAP, (uint64_t)v->mm, LM_READ);
}

/* access_ok (asm/uaccess.h, then asm-generic/access_ok.h): (u65)hva + len <= TASK_SIZE_MAX = 1 << VA_BITS, VA_BITS
 * being the build's CONFIG_ARM64_VA_BITS: 2^va_bits when the build's VA size is the running one, 2^52 for a 52-bit
 * build running with 48 bits (arm64.task_size_max=52) */
static bool access_ok(const struct engine *e, uint64_t hva, uint64_t len)
{
	uint64_t max = e->knob[K_TASK_SIZE_MAX] == 1 ? 1ull << 52 : e->task_size;
	return len <= max && hva <= max - len;
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

/* user_mem_abort's mapping size (vma_pagesize): the VMA's, then transparent_hugepage_adjust for a page-size
 * fault the memslot lets be a PMD block (get_user_mapping_size: the host leaf, now; "the userspace PTs are
 * gone": replay, -EAGAIN), then a 2019 design's PUD-block decision. */
static int user_mem_abort_size(struct engine *e, struct vm *v, const struct cpu *c, uint64_t *size)
{
	const struct geom *g = &e->geom;
	uint64_t page = g->page_size, pmd = 1ull << g->pmd_shift;
	struct memslot *s = slot_for(v, c->gpa);
	if (*size == page && s && slot_allows(s, c->hva, pmd)) {
		if (e->knob[K_THP_SIZE] == 1) {
			if (c->vma_thp)
				*size = pmd; /* vma-naive: the VMA says THP, the host tables are not asked */
		} else {
			int hl;
			uint64_t hpfn;
			if (host_lookup(e, v->mm, c->hva, &hl, &hpfn, NULL, NULL) != E_LEAF) {
				/* kvm.user_pt_walk=unprotected, before e86fc1a3a3e9: VM_BUG_ON(!(pte & PTE_VALID)) */
				if (e->knob[K_USER_PT_WALK] == UW_UNPROTECTED) {
					violate_at(e, V_KERNEL_BUG, &(struct viol_focus){ .has = VF_VM | VF_HVA,
						   .vm = vm_index(e, v), .hva = c->hva },
						   "vm %d: get_user_mapping_size finds no valid host leaf at hva %#llx: "
						   "VM_BUG_ON(!(pte & PTE_VALID))", vm_index(e, v),
						   (unsigned long long)c->hva);
					return -EFAULT;
				}
				return -EAGAIN; /* "the userspace PTs are gone... Replay the fault" */
			}
			if (level_size(g, hl) >= pmd)
				*size = pmd;
		}
	}
	if (e->knob[K_STAGE2_BLOCK_CHECK] != BC_PGTABLE && *size > pmd && !pud_block_allowed(e, v, *size))
		*size = pmd;
	return 0;
}

/* user_mem_abort, under mmu_lock: the retry check, the size, kvm_pgtable_stage2_map(pgt, fault_ipa,
 * vma_pagesize, ...) */
static int user_mem_abort(struct engine *e, struct vm *v, struct cpu *c)
{
	int ret = kvm_stage2_fault_stale(e, v, c, false);
	if (ret)
		return ret < 0 ? ret : 0;
	uint64_t size = c->size;
	if ((ret = user_mem_abort_size(e, v, c, &size)))
		return ret;
	const struct stage2_map_cfg cfg = { e->knob[K_STAGE2_BLOCK_CHECK] == BC_PGTABLE, false,
					    e->geom.page_size == 4096 ? 1 : 2 };
	return kvm_stage2_fault_map(e, v, c, size, &cfg);
}

const struct kvm_arch_ops arm64_kvm_ops = {
	.vm_type_ipa_size = true,
	.mmu_notifier = true,
	.init_vm = kvm_init_stage2_mmu,
	.destroy_vm = kvm_stage2_free,
	.access_ok = access_ok,
	.flush_shadow_memslot = kvm_arch_flush_shadow_memslot,
	.prepare_memory_region = kvm_arch_prepare_memory_region,
	.page_fault = user_mem_abort,
	.unmap_gfn_range = kvm_unmap_gfn_range,
	.unmap_gfn_range_to_yield = kvm_unmap_gfn_range_to_yield,
	.unmap_gfn_range_resume = kvm_unmap_gfn_range_resume,
	.flush_shadow_all = kvm_stage2_free, /* kvm_uninit_stage2_mmu -> kvm_free_stage2_pgd: pgt = NULL */
};
