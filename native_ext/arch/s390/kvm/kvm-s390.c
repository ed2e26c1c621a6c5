/* arch/s390/kvm/kvm-s390.c: s390's KVM behind struct kvm_arch_ops (s390_kvm_ops): s390_enable_sie and the gmap
 * at VM creation, the memslot checks and commit (gmap_map_segment / gmap_unmap_segment), gmap_fault's halves;
 * the gmap itself is arch/s390/gmap.c's. v6.6 s390 registers no mmu notifier: its gmap learns of host changes
 * through gmap_unlink. */
#include "ptf.h"
#include "arch/s390/gmap.h"
#include "kvm/kvm_host.h"

/* kvm_arch_init_vm: "if (type) goto out_err;" was checked before (no CONFIG_KVM_S390_UCONTROL); the gmap */
static int kvm_arch_init_vm(struct engine *e, struct vm *v, uint64_t type)
{
	return gmap_create(e, v);
}

/* kvm_arch_prepare_memory_region (CREATE and MOVE): hva and size 1 MiB aligned, the end below mem_limit =
 * TASK_SIZE_MAX; the gpa is not checked */
static int kvm_arch_prepare_memory_region(struct engine *e, struct vm *v, const struct memslot *new, int change)
{
	if (change == KVM_MR_DELETE)
		return 0;
	if ((new->hva | new->len) & ((1ull << 20) - 1) || new->gpa + new->len > v->mem_limit)
		return -EINVAL;
	return 0;
}

/* kvm_arch_commit_memory_region (old.used false: KVM_MR_CREATE, new.used false: KVM_MR_DELETE, both:
 * KVM_MR_MOVE), under mmap_write_lock(gmap->mm): the error is dropped (pr_warn), so a slot whose
 * gmap_map_segment failed (a gpa that is not 1 MiB aligned: kvm_arch_prepare_memory_region does not check it)
 * exists and its guest faults fail; a MOVE whose unmap of the old range fails maps nothing. */
static int kvm_arch_commit_memory_region(struct engine *e, struct vm *v, struct memslot old, struct memslot new)
{
	int ret = lock_would_wait(e, LC_MMAP, (uint64_t)v->mm, LM_WRITE);
	if (ret)
		return ret;
	int rc = 0;
	if (old.used)
		rc = gmap_unmap_segment(e, v, old.gpa, old.len);
	if (new.used && !rc)
		gmap_map_segment(e, v, new.hva, new.gpa, new.len);
	return 0;
}

/* gmap_fault's second half, under the mmap_read_lock its first took: __gmap_link (an mm whose exit_mmap ran
 * has no tables to link: -EFAULT) */
static int gmap_fault_link(struct engine *e, struct vm *v, struct cpu *c)
{
	return e->mms[c->mm].dead ? -EFAULT : __gmap_link(e, v, c->gpa, c->hva);
}

const struct kvm_arch_ops s390_kvm_ops = {
	.vcpu_holds_mm = true,
	.fault_in_efault = true,
	.enable_mm = s390_enable_sie,
	.init_vm = kvm_arch_init_vm,
	.destroy_vm = gmap_destroy,
	.prepare_memory_region = kvm_arch_prepare_memory_region,
	.commit_memory_region = kvm_arch_commit_memory_region,
	.gfn_to_hva = __gmap_translate, /* gmap_fault: the gmap's guest_to_host, not the memslot */
	.page_fault = gmap_fault_link,
};
