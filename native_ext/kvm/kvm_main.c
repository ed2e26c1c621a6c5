/* kvm/kvm_main.c: generic KVM (virt/kvm/kvm_main.c): VMs, memslots, the guest-fault entry and the mmu_notifier side;
 * the arch's part (s390 gmap, arm64 stage 2, x86 TDP: arch/<arch>/kvm/) is reached only through e->kvm_ops. */
#include <string.h>
#include <stdlib.h>
#include "ptf.h"
#include "kvm/kvm_host.h"


static struct vm *vm_get(struct engine *e, uint64_t vm)
{
	return vm < MAX_VMS && e->vms[vm].used ? &e->vms[vm] : NULL;
}

/* ---- VMs and memslots ---- */

/* KVM_CREATE_VM's type (the trace's third vm_create argument) in kvm_arch_init_vm, before anything else is set
 * up: x86 "if (type) return -EINVAL;" (v6.8 replaced it by kvm_is_vm_type_supported); s390 without
 * CONFIG_KVM_S390_UCONTROL (the distribution and defconfig choice) "if (type) goto out_err;" with rc -EINVAL,
 * before s390_enable_sie, so the mm is not converted. arm64 reads it as KVM_VM_TYPE_ARM_IPA_SIZE
 * (kvm_init_stage2_mmu). */
static int kvm_arch_vm_type(const struct engine *e, uint64_t type)
{
	return !e->kvm_ops->vm_type_ipa_size && type ? -EINVAL : 0;
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

/* kvm_create_vm (KVM_CREATE_VM): kvm_arch_init_vm's type check, the arch's mm preparation, the mmu notifier's
 * registration (kvm_init_mmu_notifier), the arch's guest tables; kvm->mm holds an mmgrab. */
int kvm_create_vm(struct engine *e, uint64_t vmi, uint64_t pid, uint64_t ipa_bits)
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
	if (e->kvm_ops->enable_mm && (ret = e->kvm_ops->enable_mm(e, mm)))
		return ret;
	/* kvm_create_vm -> kvm_init_mmu_notifier -> mmu_notifier_register: mmap_write_lock(current->mm) (s390 registers
	 * no notifier in v6.6); the stage 2 set up before it is undone when it cannot finish: waiting changes nothing */
	if (e->kvm_ops->mmu_notifier && (ret = lock_would_wait(e, LC_MMAP, (uint64_t)mm, LM_WRITE)))
		return ret;
	/* ... whose mm_take_all_locks takes every VMA's i_mmap_rwsem and anon_vma root for write */
	for (int i = 0; e->kvm_ops->mmu_notifier && i < e->mms[mm].nvma; i++)
		if ((ret = vma_rmap_wait(e, &e->mms[mm].vmas[i])))
			return ret;
	memset(v, 0, sizeof(*v));
	v->mm = mm;
	ret = e->kvm_ops->init_vm(e, v, ipa_bits);
	if (ret)
		return ret;
	v->used = true;
	mmgrab(e, mm); /* kvm->mm: mmgrab */
	return 0;
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
		violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_VM, .vm = (int)vi },
			   "vm %d: memslot update waits for nobody (in flight %d, active %d)",
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
		/* kvm_invalidate_memslot: the KVM_MEMSLOT_INVALID copy is active now. A window (inval_hold) stops a
		 * DELETE here, before kvm_arch_flush_shadow_memslot; inval_end finishes it (kvm_memslot_delete_resume).
		 * The ioctl holds slots_lock and its kvm reference meanwhile. */
		int cpu = change == KVM_MR_DELETE && e->kvm_ops->mmu_notifier ? inval_window_for(e, v->mm) : -1;
		if (cpu >= 0) {
			v->invalid_slot1 = (int32_t)(s - v->slots) + 1;
			e->cpus[cpu].inval_slot.vm1 = vm_index(e, v) + 1;
			e->cpus[cpu].inval_slot.slot = (int32_t)(s - v->slots);
			return 0;
		}
		if (e->kvm_ops->flush_shadow_memslot) /* kvm_arch_flush_shadow_memslot */
			e->kvm_ops->flush_shadow_memslot(e, v, s);
	}
	if ((ret = e->kvm_ops->prepare_memory_region(e, v, new, change))) /* kvm_arch_prepare_memory_region */
		return ret;
	if (change == KVM_MR_CREATE && (ret = kvm_swap_active_memslots_wait(e, v)))
		return ret;
	struct memslot old = *s, cur = change == KVM_MR_DELETE ? (struct memslot){ 0 } : *new;
	if (e->kvm_ops->commit_memory_region && (ret = e->kvm_ops->commit_memory_region(e, v, old, cur)))
		return ret;
	*s = cur;
	return 0;
}

/* inval_end of a DELETE stopped in its INVALID phase: would the rest wait? kvm_swap_active_memslots of the final
 * (slot-less) set waits for the open invalidations and, through synchronize_srcu, for faults in flight. */
static int kvm_memslot_delete_wait(struct engine *e, int cpu)
{
	const struct cpu *c = &e->cpus[cpu];
	if (!c->inval_slot.vm1)
		return 0;
	return kvm_swap_active_memslots_wait(e, &e->vms[c->inval_slot.vm1 - 1]);
}

/* ... and the rest: kvm_arch_flush_shadow_memslot of the old slot, kvm_prepare_memory_region (nothing for a
 * DELETE), the final swap without the slot. */
static void kvm_memslot_delete_resume(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	struct vm *v = &e->vms[c->inval_slot.vm1 - 1];
	struct memslot *s = &v->slots[c->inval_slot.slot];
	memset(&c->inval_slot, 0, sizeof(c->inval_slot));
	if (e->kvm_ops->flush_shadow_memslot)
		e->kvm_ops->flush_shadow_memslot(e, v, s);
	if (e->kvm_ops->commit_memory_region && e->kvm_ops->commit_memory_region(e, v, *s, (struct memslot){ 0 }))
		violate(e, V_ENGINE_ASSERT, "vm %d: a stopped memslot DELETE's commit would wait", vm_index(e, v));
	*s = (struct memslot){ 0 };
	v->invalid_slot1 = 0;
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
	bool access_ok = !e->kvm_ops->access_ok || e->kvm_ops->access_ok(e, hva, len);
	if ((len | gpa | hva) & (page - 1) || !access_ok || gpa + len < gpa || len / page > (1ull << 31) - 1)
		return -EINVAL;
	/* kvm_vm_ioctl_set_memory_region: mutex_lock(&kvm->slots_lock), the ioctl's kvm file reference (a window
	 * that stopped a DELETE keeps both) */
	int ret;
	if ((ret = lock_acquire(e, LC_SLOTS, a[0], LM_WRITE)) || (ret = lock_acquire(e, LC_KVM, a[0], LM_READ)))
		return ret;
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

/* ---- the guest-fault protocol ---- */

/* The vCPU is in flight: what its commit needs, and the references it holds until then. */
static void kvm_fault_in_flight(struct engine *e, struct cpu *c, struct vm *v, uint64_t vmi, uint64_t gpa,
				uint64_t hva, uint64_t size, uint64_t pfn, bool write, bool vma_thp)
{
	c->actor = A_GFAULT;
	c->vm = (int)vmi;
	c->mm = v->mm;
	c->gpa = gpa;
	c->hva = hva;
	c->size = size;
	c->pfn = pfn;
	c->write = write;
	c->vma_thp = vma_thp;
	c->s2_root = v->s2.root;
	/* the vCPU thread is a CLONE_VM thread of the VMM: it holds mm_users on every arch (kvm.fault_holds_mm=no is
	 * the what-if where it does not, on arm64 and x86_64) */
	c->holds_mm = e->kvm_ops->vcpu_holds_mm || e->knob[K_FAULT_HOLDS_MM] == 0;
	if (c->holds_mm)
		e->mms[v->mm].users++; /* mmget */
	v->faults_in_flight++;
	mmgrab(e, v->mm);
}

/* The first half of a vCPU's guest fault, up to the host page faulted in (kvm_faultin_pfn, v6.6 x86's name;
 * arm64 user_mem_abort's __gfn_to_pfn_memslot, s390 gmap_fault's fixup_user_fault): the memslot, the mmap_lock,
 * the candidate size, the invalidation sequence snapshot, handle_mm_fault. The vCPU is then in flight. */
int kvm_faultin_pfn(struct engine *e, int cpu, uint64_t vmi, uint64_t gpa, bool write)
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
	/* a memslot a DELETE has marked KVM_MEMSLOT_INVALID: x86 __kvm_faultin_pfn retries (RET_PF_RETRY, since
	 * e0c378684b65) or, before it (kvm.invalid_slot_fault=mmio), reads it as no memslot: KVM_PFN_NOSLOT, an MMIO
	 * SPTE at the commit; arm64's gfn_to_hva_memslot_prot gives KVM_HVA_ERR_BAD, an MMIO exit (-EFAULT) */
	bool noslot = false;
	if (v->invalid_slot1 && s == &v->slots[v->invalid_slot1 - 1]) {
		int r = e->kvm_ops->invalid_slot_fault ? e->kvm_ops->invalid_slot_fault(e) : -EFAULT;
		if (r < 0)
			return r;
		noslot = true;
	}
	if (noslot) {
		c->seq = v->invalidate_seq;
		c->late_faultin = false;
		kvm_fault_in_flight(e, c, v, vmi, gpa, 0, e->geom.page_size, 0, write, false);
		c->noslot = true;
		return 0;
	}
	c->noslot = false;
	uint64_t hva = s->hva + (gpa - s->gpa);
	/* the mmap_lock a guest fault takes before its host fault-in: s390 gmap_fault holds mmap_read_lock(gmap->mm)
	 * from before __gmap_translate to the end of __gmap_link (the commit; cpu_locks keeps it); arm64
	 * user_mem_abort takes it around vma_lookup; x86 only when hva_to_pfn_fast cannot serve the fault */
	int ret = e->kvm_ops->fault_lock ? e->kvm_ops->fault_lock(e, v, hva, write)
					 : lock_acquire(e, LC_MMAP, (uint64_t)v->mm, LM_READ);
	if (ret)
		return ret;
	if (e->kvm_ops->gfn_to_hva && e->kvm_ops->gfn_to_hva(v, gpa, &hva))
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
	/* kvm.fault_seq_snapshot=after-unlock (arm64 before 13ec9308a857): user_mem_abort read mmu_invalidate_seq
	 * after mmap_read_unlock, then faulted the page in: both move to the commit (kvm_faultin_pfn_late); the size
	 * stays the one vma_lookup gave here. A one-shot guest_fault (cpu MAX_CPUS) has nothing between the two
	 * halves: it faults in here, so a wait (-16) still changes nothing. */
	c->late_faultin = e->knob[K_FAULT_SEQ_SNAPSHOT] == FS_AFTER_UNLOCK && cpu != MAX_CPUS;
	bool late = c->late_faultin;
	uint64_t pfn = 0, host_size;
	if (!late) {
		c->seq = v->invalidate_seq;
		ret = handle_mm_fault(e, v->mm, hva, write, &pfn, &host_size);
		if (ret && e->kvm_ops->fault_in_efault && ret != -EBUSY)
			ret = -EFAULT; /* gmap_fault: a failed fixup_user_fault is -EFAULT, whatever its errno (-16: it waits) */
		if (ret)
			return ret;
	}
	kvm_fault_in_flight(e, c, v, vmi, gpa, hva, size, pfn, write,
			    (vma->flags & VMA_THP) && !(vma->flags & VMA_NOHUGE));
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

/* kvm.fault_seq_snapshot=after-unlock: what the pre-13ec9308a857 user_mem_abort did after mmap_read_unlock,
 * before taking mmu_lock: mmu_seq = kvm->mmu_invalidate_seq, then __gfn_to_pfn_memslot (GUP takes mmap_read_lock
 * itself: waiting changes nothing, the fault stays in flight). A failed fault-in (the VMA is gone) is -EFAULT. */
static int kvm_faultin_pfn_late(struct engine *e, struct cpu *c)
{
	struct vm *v = &e->vms[c->vm];
	int ret = lock_acquire(e, LC_MMAP, (uint64_t)c->mm, LM_READ);
	if (ret)
		return ret;
	if (e->mms[c->mm].dead)
		return -EFAULT;
	c->seq = v->invalidate_seq;
	uint64_t host_size;
	ret = handle_mm_fault(e, c->mm, c->hva, c->write, &c->pfn, &host_size);
	return ret == -EBUSY ? ret : ret ? -EFAULT : 0;
}

/* The second half, under mmu_lock: the arch's map (e->kvm_ops->page_fault: user_mem_abort, kvm_tdp_mmu_map,
 * gmap_fault's __gmap_link), then the page and the vCPU's references are released (kvm_mmu_finish_page_fault,
 * 6.13 x86's name for that release). */
int kvm_mmu_finish_page_fault(struct engine *e, int cpu)
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
	if (c->late_faultin && (ret = kvm_faultin_pfn_late(e, c))) {
		if (ret != -EBUSY)
			fault_end(e, cpu);
		return ret;
	}
	ret = e->kvm_ops->page_fault(e, &e->vms[c->vm], c);
	fault_end(e, cpu);
	return ret;
}

/* kvm_destroy_vm, at the VM fd's last reference */
int kvm_destroy_vm(struct engine *e, uint64_t vmi)
{
	struct vm *v = vm_get(e, vmi);
	if (!v)
		return -ENOENT;
	/* the last kvm reference: a memslot ioctl stopped by a window holds its file's */
	int wret;
	if (v->invalid_slot1 && (wret = lock_would_wait(e, LC_KVM, vmi, LM_WRITE)))
		return wret;
	/* the last kvm reference: a vCPU in KVM_RUN holds its file's */
	if (v->faults_in_flight) {
		int ret = lock_would_wait(e, LC_KVM, vmi, LM_WRITE);
		if (!ret)
			violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_VM, .vm = (int)vmi },
				   "vm %d: %d faults in flight and no vCPU holds the VM",
				(int)vmi, v->faults_in_flight);
		return ret ? ret : -EBUSY;
	}
	/* kvm_destroy_vm: mmu_notifier_unregister, then "mn_active_invalidate_count may remain unbalanced": the
	 * ends a held window owes this VM are never delivered (the window does not make destroy wait) */
	inval_window_forget_vm(e, (int)vmi);
	e->kvm_ops->destroy_vm(e, v);
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
static bool kvm_mm_has_notifiers(const struct engine *e, int mm)
{
	if (!e->kvm_ops->mmu_notifier)
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

/* __kvm_handle_hva_range for one VM: mmu_lock and on_lock = kvm_mmu_invalidate_begin when a memslot overlaps
 * [start, end), and the handler kvm_unmap_gfn_range zaps the overlapping stage-2 range. stop_cpu >= 0: a held
 * window that stops this thread at the zap's first yield (arm64 stage2_apply_range): the rest of that zap is
 * recorded for inval_end (kvm_invalidate_resume). The model makes the host change together with the starts, so
 * every other start (later memslots, later VMs) runs now, as without a stop: only the stopped zap's later chunks
 * wait, and its VM, in progress, retries every fault meanwhile. */
static void kvm_handle_hva_range(struct engine *e, int vi, uint64_t start, uint64_t end, uint16_t *began,
				 int *stop_cpu)
{
	struct vm *v = &e->vms[vi];
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
		uint64_t gpa = s->gpa + (lo - s->hva), gend = s->gpa + (hi - s->hva);
		if (*stop_cpu < 0 || !e->kvm_ops->unmap_gfn_range_to_yield) {
			e->kvm_ops->unmap_gfn_range(e, v, gpa, gend);
			continue;
		}
		struct tref root = v->s2.root;
		uint64_t at = e->kvm_ops->unmap_gfn_range_to_yield(e, v, gpa, gend);
		if (at == gend)
			continue;
		struct inval_mid *m = &e->cpus[*stop_cpu].inval_mid;
		m->gpa = at, m->end = gend;
		m->root = tref_phys(root), m->root_gen = root.gen;
		m->vm1 = vi + 1;
		*stop_cpu = -1; /* one stop */
	}
}

/* kvm_mmu_notifier_invalidate_range_start, for every VM of the mm: mn_active_invalidate_count++ always (memslot
 * updates wait for it); then __kvm_handle_hva_range. A range no memslot overlaps leaves in_progress, the range
 * and mmu_invalidate_seq alone. What it did per VM goes to began[] and active[], for the matching _end. */
static void kvm_mmu_notifier_invalidate_range_start(struct engine *e, int mm, uint64_t start, uint64_t end,
						    uint16_t *began, uint16_t *active, int stop_cpu)
{
	for (int vi = 0; vi < MAX_VMS; vi++) {
		struct vm *v = &e->vms[vi];
		if (!vm_subscribed(v, mm))
			continue;
		v->mn_active_invalidate_count++;
		active[vi]++;
		kvm_handle_hva_range(e, vi, start, end, began, &stop_cpu);
	}
}

/* inval_end of a thread stopped at a yield inside the stage-2 unmap: the rest of that zap, from the root it took
 * before the yield (kvm.s2_unmap_yield_recheck decides whether it rereads it), before the held ends. */
static void kvm_invalidate_resume(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	struct inval_mid m = c->inval_mid;
	memset(&c->inval_mid, 0, sizeof(c->inval_mid));
	struct tref root = tref_from_phys(e, m.root);
	root.gen = m.root_gen;
	e->kvm_ops->unmap_gfn_range_resume(e, &e->vms[m.vm1 - 1], root, m.gpa, m.end);
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
static void kvm_notify_range(struct engine *e, int mm, uint64_t start, uint64_t end)
{
	if (!e->kvm_ops->mmu_notifier)
		return;
	emit(e, EV_NOTIFY, (uint64_t)mm, start, end, 0);
	uint16_t began[MAX_VMS] = { 0 }, active[MAX_VMS] = { 0 };
	int cpu = kvm_mm_has_notifiers(e, mm) ? inval_window_for(e, mm) : -1;
	/* a window stops its thread at the first yield of its stage-2 unmaps, once (a later notification of the
	 * same operation runs its start now, its ends held) */
	int stop = cpu >= 0 && !e->cpus[cpu].inval_mid.vm1 ? cpu : -1;
	kvm_mmu_notifier_invalidate_range_start(e, mm, start, end, began, active, stop);
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
static void kvm_invalidate_end_held(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->inval_slot.vm1)
		kvm_memslot_delete_resume(e, cpu);
	if (c->inval_mid.vm1)
		kvm_invalidate_resume(e, cpu);
	if (e->viol)
		return;
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
static void kvm_release(struct engine *e, int mm)
{
	if (!e->kvm_ops->mmu_notifier)
		return;
	for (int vi = 0; vi < MAX_VMS; vi++) {
		struct vm *v = &e->vms[vi];
		if (!v->used || v->mm != mm || v->released)
			continue;
		e->kvm_ops->flush_shadow_all(e, v);
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
			kvm_destroy_vm(e, (uint64_t)i);
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
		violate_at(e, V_STAGE2_STALE, &(struct viol_focus){ .has = VF_VM | VF_GPA | VF_PFN, .vm = a->vi,
			   .gpa = ctx->addr, .pfn = pfn }, "coherence: vm %d maps gpa %#llx to pfn %#llx, the host %s",
			a->vi, (unsigned long long)ctx->addr, (unsigned long long)pfn,
			k != E_LEAF ? "maps nothing there" : "maps another page there");
		return 1;
	}
	return 0;
}

/* The coherence oracle: every stage-2 leaf translates to what the host maps at the matching hva. */
void kvm_coherence_check(struct engine *e)
{
	if (!e->kvm_ops->mmu_notifier) /* s390's gmap follows the host through gmap_unlink (arch/s390/gmap.c:gmap_check) */
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
	.end_held_wait = kvm_memslot_delete_wait,
	.release = kvm_release,
};
