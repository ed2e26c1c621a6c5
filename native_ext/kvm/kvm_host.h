/* kvm/kvm_host.h: what generic KVM (kvm/kvm_main.c) and the arch KVM code (arch/<arch>/kvm/) share, as the
 * kernel's include/linux/kvm_host.h: the arch ops table, the memslot look-ups, arch/kvm_pgtable.c's stage 2. */
#ifndef PTF_KVM_HOST_H
#define PTF_KVM_HOST_H
#include "ptf.h"

enum { BC_PGTABLE, BC_CAN_MAP, BC_HAS_PMD, BC_HAS_PUD, BC_NONE }; /* arm64.stage2_block_check */
enum { RC_NONE, RC_ROOT };                                         /* kvm.release_check */

/* enum kvm_mr_change */
enum { KVM_MR_CREATE, KVM_MR_DELETE, KVM_MR_MOVE };

/* The arch side of KVM, one table per arch (e->kvm_ops, chosen by ptf_init): generic KVM never tests e->arch.
 * A NULL hook is the generic behaviour its comment gives. */
struct kvm_arch_ops {
	bool vm_type_ipa_size; /* KVM_CREATE_VM's type is KVM_VM_TYPE_ARM_IPA_SIZE; elsewhere a type is -EINVAL */
	bool mmu_notifier;     /* kvm_init_mmu_notifier registers KVM's notifier (v6.6 s390 registers none) */
	bool vcpu_holds_mm;    /* a vCPU's guest fault always holds mm_users (else kvm.fault_holds_mm decides) */
	bool fault_in_efault;  /* a failed host fault-in is -EFAULT whatever its errno but -EBUSY (s390 gmap_fault) */
	int (*enable_mm)(struct engine *e, int mm); /* before the VM is set up (s390_enable_sie); NULL: nothing */
	int (*init_vm)(struct engine *e, struct vm *v, uint64_t type);   /* kvm_arch_init_vm's guest tables */
	void (*destroy_vm)(struct engine *e, struct vm *v);              /* kvm_arch_destroy_vm's */
	bool (*access_ok)(const struct engine *e, uint64_t hva, uint64_t len);
	void (*flush_shadow_memslot)(struct engine *e, struct vm *v, const struct memslot *old); /* NULL: nothing */
	int (*prepare_memory_region)(struct engine *e, struct vm *v, const struct memslot *new, int change);
	/* kvm_arch_commit_memory_region, before the slot changes: nonzero (it would wait) changes nothing; NULL: 0 */
	int (*commit_memory_region)(struct engine *e, struct vm *v, struct memslot old, struct memslot new);
	int (*gfn_to_hva)(const struct vm *v, uint64_t gpa, uint64_t *hva); /* NULL: the memslot's hva */
	int (*fault_lock)(struct engine *e, struct vm *v, uint64_t hva, bool write); /* NULL: mmap_read_lock */
	int (*page_fault)(struct engine *e, struct vm *v, struct cpu *c);  /* the map under mmu_lock */
	void (*unmap_gfn_range)(struct engine *e, struct vm *v, uint64_t gpa, uint64_t end); /* notifier zap */
	/* The notifier zap with its yield points (arm64 stage2_apply_range: cond_resched_rwlock_write between chunks):
	 * the zap of [gpa, end) up to its first yield, returning where it yielded (end: it did not). NULL: the zap
	 * has no yield the model stops at. _resume: the rest after the yield, from the root taken before it. */
	uint64_t (*unmap_gfn_range_to_yield)(struct engine *e, struct vm *v, uint64_t gpa, uint64_t end);
	void (*unmap_gfn_range_resume)(struct engine *e, struct vm *v, struct tref root, uint64_t gpa, uint64_t end);
	void (*flush_shadow_all)(struct engine *e, struct vm *v);          /* mmu_notifier release */
	/* a fault on a memslot marked KVM_MEMSLOT_INVALID: < 0 its result, else it goes on as no memslot
	 * (KVM_PFN_NOSLOT: cpu->noslot); NULL: -EFAULT */
	int (*invalid_slot_fault)(const struct engine *e);
};

static inline int vm_index(const struct engine *e, const struct vm *v) { return (int)(v - e->vms); }

static inline struct memslot *slot_for(struct vm *v, uint64_t gpa)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		if (v->slots[i].used && gpa >= v->slots[i].gpa && gpa - v->slots[i].gpa < v->slots[i].len)
			return &v->slots[i];
	return NULL;
}

/* fault_supports_stage2_huge_mapping: congruent gpa/hva and the whole block inside the slot. */
static inline bool slot_allows(const struct memslot *s, uint64_t hva, uint64_t size)
{
	if ((s->gpa & (size - 1)) != (s->hva & (size - 1)))
		return false;
	uint64_t start = hva & ~(size - 1);
	return start >= s->hva && start + size <= s->hva + s->len;
}

/* kvm/kvm_main.c: what the dispatcher (engine.c) calls */
bool kvm_mm_not_current(const struct engine *e, uint64_t vmi);
int kvm_create_vm(struct engine *e, uint64_t vmi, uint64_t pid, uint64_t ipa_bits);
int __kvm_set_memory_region(struct engine *e, const uint64_t *a);
int kvm_faultin_pfn(struct engine *e, int cpu, uint64_t vmi, uint64_t gpa, bool write);
int kvm_mmu_finish_page_fault(struct engine *e, int cpu);
int kvm_destroy_vm(struct engine *e, uint64_t vmi);
void kvm_abort_faults(struct engine *e);
void kvm_destroy_all(struct engine *e);
void kvm_coherence_check(struct engine *e);

/* arch/kvm_pgtable.c: the stage-2 tables arm64 and x86 keep in the model, through the generic walker */
struct stage2_map_cfg {
	bool pgtable;           /* kvm_pgtable_stage2_map picks the levels (arm64.stage2_block_check=pgtable) */
	bool split_keeps_pages; /* a block split into a table maps the same pages (x86 tdp_mmu_split_huge_page) */
	int min_block;          /* the lowest level a block may take (KVM_PGTABLE_MIN_BLOCK_LEVEL) */
};
int kvm_stage2_init(struct engine *e, struct vm *v, unsigned ipa_bits);
void kvm_stage2_free(struct engine *e, struct vm *v);
void kvm_stage2_unmap(struct engine *e, struct vm *v, uint64_t gpa, uint64_t end, bool free_empty_tables);
void kvm_stage2_unmap_root(struct engine *e, struct vm *v, struct tref root, uint64_t gpa, uint64_t end,
			   bool free_empty_tables);
int kvm_stage2_mmio_map(struct engine *e, struct vm *v, struct cpu *c);
int kvm_stage2_fault_stale(struct engine *e, struct vm *v, const struct cpu *c, bool retry_by_hva);
int kvm_stage2_fault_map(struct engine *e, struct vm *v, struct cpu *c, uint64_t size,
			 const struct stage2_map_cfg *cfg);

#endif
