/* kvm.c: VMs, memslots and the guest-fault protocol (s390 gmap; stage 2 and TDP build on the same steps). */
#include <string.h>
#include <stdlib.h>
#include "ptf.h"

#define SYNC_CPU MAX_CPUS

static struct vm *vm_get(struct engine *e, uint64_t vm)
{
	return vm < MAX_VMS && e->vms[vm].used ? &e->vms[vm] : NULL;
}

static int vm_create(struct engine *e, uint64_t vmi, uint64_t pid, uint64_t ipa_bits)
{
	(void)ipa_bits;
	if (e->vms[vmi].used)
		return -EEXIST;
	if (pid >= MAX_PIDS || !e->procs[pid].exists)
		return -ESRCH;
	int mm = e->procs[pid].mm;
	struct vm *v = &e->vms[vmi];
	if (e->arch != ARCH_S390)
		return -ENOSYS;
	int ret = s390_enable_sie(e, mm);
	if (ret)
		return ret;
	memset(v, 0, sizeof(*v));
	v->mm = mm;
	ret = gmap_create(e, v);
	if (ret)
		return ret;
	v->used = true;
	mm_get(e, mm); /* kvm->mm: mmgrab */
	return 0;
}

static void zap_slot(struct engine *e, struct vm *v, struct memslot *s)
{
	if (e->arch == ARCH_S390)
		gmap_unmap(e, v, s->gpa, s->len);
}

static int memslot(struct engine *e, const uint64_t *a)
{
	struct vm *v = vm_get(e, a[0]);
	if (!v)
		return -ENOENT;
	uint64_t slot = a[1], gpa = a[2], hva = a[3], len = a[4];
	struct memslot *s = &v->slots[slot];
	if (len == 0) {
		if (!s->used)
			return -ENOENT;
		zap_slot(e, v, s);
		s->used = false;
		return 0;
	}
	uint64_t align = e->arch == ARCH_S390 ? 1ull << 20 : e->geom.page_size;
	if ((gpa | hva | len) & (align - 1) || gpa + len < gpa || hva + len < hva ||
	    hva + len > e->task_size)
		return -EINVAL;
	if (e->arch == ARCH_S390 && gpa + len > (1ull << 42))
		return -EINVAL;
	for (int i = 0; i < MAX_SLOTS; i++) {
		struct memslot *o = &v->slots[i];
		if (i != (int)slot && o->used && o->gpa < gpa + len && gpa < o->gpa + o->len)
			return -EINVAL;
	}
	if (s->used)
		zap_slot(e, v, s);
	*s = (struct memslot){ true, gpa, hva, len };
	return 0;
}

static struct memslot *slot_for(struct vm *v, uint64_t gpa)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		if (v->slots[i].used && gpa >= v->slots[i].gpa && gpa - v->slots[i].gpa < v->slots[i].len)
			return &v->slots[i];
	return NULL;
}

static int fault_begin(struct engine *e, int cpu, uint64_t vmi, uint64_t gpa, bool write)
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
	if (m->dead)
		return -EFAULT;
	uint64_t hva = s->hva + (gpa - s->gpa);
	struct vma *vma = vma_find(m, hva);
	if (!vma)
		return -EFAULT;
	uint64_t size = e->geom.page_size;
	c->seq = v->invalidate_seq;
	uint64_t pfn, host_size;
	int ret = do_fault(e, v->mm, hva, write, &pfn, &host_size);
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
	c->holds_mm = false;
	v->faults_in_flight++;
	mm_get(e, v->mm);
	return 0;
}

static void fault_end(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	struct vm *v = &e->vms[c->vm];
	v->faults_in_flight--;
	c->actor = A_NONE;
	if (c->holds_mm)
		mm_put_users(e, c->mm);
	mm_drop(e, c->mm);
}

static int fault_commit(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_GFAULT)
		return -EINVAL;
	struct vm *v = &e->vms[c->vm];
	int ret = -ENOSYS;
	if (e->arch == ARCH_S390)
		ret = e->mms[c->mm].dead ? -EFAULT : gmap_link(e, v, c->gpa, c->hva);
	fault_end(e, cpu);
	return ret;
}

static int vm_destroy(struct engine *e, uint64_t vmi)
{
	struct vm *v = vm_get(e, vmi);
	if (!v)
		return -ENOENT;
	if (v->faults_in_flight)
		return -EBUSY;
	if (e->arch == ARCH_S390)
		gmap_destroy(e, v);
	v->used = false;
	mm_drop(e, v->mm);
	return 0;
}

int op_kvm(struct engine *e, const uint64_t *op)
{
	const uint64_t *a = op + 1;
	int ret;
	switch (op[0]) {
	case OP_VM_CREATE:
		return vm_create(e, a[0], a[1], a[2]);
	case OP_MEMSLOT:
		return memslot(e, a);
	case OP_GUEST_FAULT:
		ret = fault_begin(e, SYNC_CPU, a[0], a[1], a[2] != 0);
		return ret ? ret : fault_commit(e, SYNC_CPU);
	case OP_GUEST_FAULT_BEGIN:
		if (a[0] >= MAX_CPUS)
			return -EINVAL;
		return fault_begin(e, (int)a[0], a[1], a[2], a[3] != 0);
	case OP_GUEST_FAULT_COMMIT:
		if (a[0] >= MAX_CPUS)
			return -EINVAL;
		return fault_commit(e, (int)a[0]);
	case OP_VM_DESTROY:
		return vm_destroy(e, a[0]);
	}
	return -ENOSYS;
}

/* invalidate_range_start/end: the s390 gmap learns of host changes through gmap_unlink instead. */
void kvm_notify_range(struct engine *e, int mm, uint64_t start, uint64_t end)
{
	(void)e; (void)mm; (void)start; (void)end;
}

/* mmu_notifier_release from exit_mmap. */
void kvm_release(struct engine *e, int mm)
{
	(void)e; (void)mm;
}

void kvm_abort_faults(struct engine *e)
{
	for (int cpu = 0; cpu <= MAX_CPUS; cpu++)
		if (e->cpus[cpu].actor == A_GFAULT)
			fault_end(e, cpu);
}

/* Teardown: every VM goes. */
void kvm_destroy_all(struct engine *e)
{
	for (int i = 0; i < MAX_VMS; i++)
		if (e->vms[i].used)
			vm_destroy(e, (uint64_t)i);
}
