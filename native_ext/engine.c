/* engine.c: set-up, the operation table (one handler per opcode) and ptf_step, the per-step oracle, teardown. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "arch/s390/pgalloc.h"
#include "arch/s390/gmap.h"
#include "kvm/kvm_host.h"

/* config: granule, va_bits, la57, max_table_pages, pa_bits */
int ptf_init(struct engine *e, enum arch arch, const int *knobs, const uint64_t *config)
{
	memset(e, 0, sizeof(*e));
	e->arch = arch;
	e->free_blocks = -1;
	e->free_deps = -1;
	for (int k = 0; k < K_NR; k++)
		e->knob[k] = knobs[k];
	e->max_table_pages = config[3];
	/* pa_bits (arm64): 48, or 52 on a host with FEAT_LPA, which v6.6 uses with 64K pages only */
	e->pa_bits = (unsigned)config[4];
	if (arch == ARCH_ARM64 && config[4] != 48 && !(config[4] == 52 && config[0] == 65536))
		return -EINVAL;
	for (int i = 0; i < MAX_MMS; i++)
		e->mms[i].pgt.root = TREF_NONE;
	e->self_cpu = -1;
	int ret = geom_stage1(&e->geom, arch, config);
	if (ret)
		return ret;
	e->s2_fmt = stage2_fmt(arch);
	static const struct mm_ops *const arch_mm_ops[ARCH_NR] = { &s390_mm_ops, &arm64_mm_ops, &x86_64_mm_ops };
	e->mm_ops = arch_mm_ops[arch];
	e->mn_ops = &kvm_mmu_notifier_ops;
	static const struct kvm_arch_ops *const arch_kvm_ops[ARCH_NR] = { &s390_kvm_ops, &arm64_kvm_ops,
									  &x86_64_kvm_ops };
	e->kvm_ops = arch_kvm_ops[arch];
	e->pmd_lvl = pmd_level(&e->geom);
	e->shm_pages = e->geom.lv[e->geom.nlevels - 1].entries; /* HPAGE_PMD_NR */
	switch (arch) {
	case ARCH_S390:
		e->task_size = 0ull - 4096;
		e->stack_top = 1ull << 42;
		break;
	case ARCH_ARM64:
		/* TASK_SIZE_64 is 2^vabits_actual; STACK_TOP is DEFAULT_MAP_WINDOW_64 = 2^VA_BITS_MIN, and
		 * VA_BITS_MIN is 48 when VA_BITS is 52 (asm/memory.h, asm/processor.h) */
		e->task_size = 1ull << config[1];
		e->stack_top = 1ull << (config[1] > 48 ? 48 : config[1]);
		break;
	case ARCH_X86_64:
		/* TASK_SIZE_MAX: 2^47 or, with LA57, 2^56, less a page; exec's stack stays below 2^47
		 * (STACK_TOP = DEFAULT_MAP_WINDOW) */
		e->stack_top = (1ull << 47) - 4096;
		e->task_size = config[2] ? (1ull << 56) - 4096 : e->stack_top;
		break;
	default:
		return -EINVAL;
	}
	return 0;
}

void ptf_fini(struct engine *e)
{
	for (int32_t i = 0; i < e->nblocks; i++)
		free(e->blocks[i].mem);
	free(e->blocks);
	for (int i = 0; i < MAX_MMS; i++)
		free(e->mms[i].vmas);
	for (int i = 0; i < MAX_VMS; i++)
		free(e->vms[i].links);
	shmem_fini(e);
	free(e->cpd);
	free(e->deps);
	free(e->pmd_links);
	free(e->cbs);
	free(e->events);
	memset(e, 0, sizeof(*e));
}

static void oracle(struct engine *e)
{
	if (e->viol)
		return;
	if (e->arch == ARCH_S390) {
		if (e->frag_dirty && s390_frag_check(e))
			return;
		if (e->gmap_dirty)
			gmap_check(e);
	}
	e->frag_dirty = e->gmap_dirty = false;
	if (e->locks_grew)
		lockdep_check(e);
	tlb_check(e);
}

/* ---- the operations: one handler per opcode, each decoding its arguments into the kernel path it names ---- */


static int op_sysctl_allocate_pgste(struct engine *e, const uint64_t *a)
{
	if (e->arch != ARCH_S390)
		return -ENOSYS;
	e->sysctl_pgste = a[0] != 0;
	return 0;
}

static int op_exec(struct engine *e, const uint64_t *a)
{
	return a[0] < MAX_PIDS ? bprm_execve(e, (int)a[0], (int64_t)a[1]) : -EINVAL;
}

static int op_fork(struct engine *e, const uint64_t *a)
{
	return copy_process(e, a[0], a[1]);
}

static int op_exit(struct engine *e, const uint64_t *a)
{
	int mm = proc_mm(e, a[0]);
	return mm < 0 ? mm : exit_mm(e, (int)a[0]);
}

/* mmap and shm_mmap; flags bit0 asks for MADV_HUGEPAGE on the new range right after it */
static int mmap_op(struct engine *e, int mm, const uint64_t *a, int obj, uint64_t pgoff)
{
	int ret = do_mmap(e, mm, a[1], a[2], obj < 0 ? a[3] : 0, obj, pgoff);
	return ret == DO_MMAP_THEN_HUGEPAGE ? madvise_hugepage_range(e, mm, a[1], a[1] + a[2]) : ret;
}

static int op_mmap(struct engine *e, const uint64_t *a)
{
	int mm = proc_mm(e, a[0]);
	return mm < 0 ? mm : mmap_op(e, mm, a, -1, 0);
}

/* MAP_SHARED | MAP_FIXED of the object, read and write */
static int op_shm_mmap(struct engine *e, const uint64_t *a)
{
	int mm = proc_mm(e, a[0]);
	if (mm < 0)
		return mm;
	return a[3] < MAX_SHM ? mmap_op(e, mm, a, (int)a[3], a[4]) : -EINVAL;
}

/* MAP_SHARED | MAP_FIXED of hugetlbfs file a[3] (PMD_SIZE pages), read and write, at page offset a[4] */
static int op_hugetlb_mmap(struct engine *e, const uint64_t *a)
{
	int mm = proc_mm(e, a[0]);
	if (mm < 0)
		return mm;
	/* ksys_mmap_pgoff rounds len up to the file's huge page size (PMD_SIZE: flags bit1 says so to do_mmap) */
	return a[3] < MAX_HFILE ? do_mmap(e, mm, a[1], a[2], 2, MAX_SHM + (int)a[3], a[4]) : -EINVAL;
}

static int op_unshare_hold(struct engine *e, const uint64_t *a)
{
	return unshare_hold(e, (int)a[0]);
}

static int op_unshare_end(struct engine *e, const uint64_t *a)
{
	return unshare_end(e, (int)a[0]);
}

static int op_munmap(struct engine *e, const uint64_t *a)
{
	int mm = proc_mm(e, a[0]);
	return mm < 0 ? mm : __vm_munmap(e, mm, a[1], a[2]);
}

static int op_madvise(struct engine *e, const uint64_t *a)
{
	int mm = proc_mm(e, a[0]);
	return mm < 0 ? mm : do_madvise(e, mm, a[1], a[2], a[3]);
}

/* a user fault: lock_mm_and_find_vma, then handle_mm_fault */
static int op_fault(struct engine *e, const uint64_t *a)
{
	int mm = proc_mm(e, a[0]);
	if (mm < 0)
		return mm;
	uint64_t pfn, size;
	int ret = lock_mm_and_find_vma(e, mm, a[1]);
	return ret ? ret : handle_mm_fault(e, mm, a[1], a[2] != 0, &pfn, &size);
}

/* split_huge_pmd as a path under mmap_lock for read calls it (the trace names no syscall) */
static int op_split(struct engine *e, const uint64_t *a)
{
	int mm = proc_mm(e, a[0]);
	if (mm < 0)
		return mm;
	int ret = lock_acquire(e, LC_MMAP, (uint64_t)mm, LM_READ);
	if (ret)
		return ret;
	struct vma *v = vma_find(&e->mms[mm], a[1]);
	if (!v)
		return -EFAULT;
	return do_split(e, mm, a[1]);
}

/* the actors' operations name a cpu first (rcu_gp excepted) */
static int op_rcu_lock(struct engine *e, const uint64_t *a)
{
	rcu_enter(e, (int)a[0]);
	return 0;
}

/* only the explicit sections: an actor's own section ends with the actor */
static int op_rcu_unlock(struct engine *e, const uint64_t *a)
{
	struct cpu *c = &e->cpus[a[0]];
	if (c->rcu_nest <= (c->actor == A_WALK || c->actor == A_RMAP))
		return -EINVAL;
	rcu_exit(e, (int)a[0]);
	return 0;
}

static int op_rcu_gp(struct engine *e, const uint64_t *a)
{
	rcu_gp(e, false);
	return 0;
}

static int op_walk_begin(struct engine *e, const uint64_t *a)
{
	return walk_begin(e, (int)a[0], a[1], a[2]);
}

static int op_walk_step(struct engine *e, const uint64_t *a)
{
	return walk_step(e, (int)a[0]);
}

static int op_walk_end(struct engine *e, const uint64_t *a)
{
	actor_end(e, (int)a[0]); /* op_handlers: the cpu runs a walker */
	return 0;
}

static int op_rmap_begin(struct engine *e, const uint64_t *a)
{
	return rmap_begin(e, (int)a[0], a[1], a[2]);
}

static int op_unmap_mapping_begin(struct engine *e, const uint64_t *a)
{
	return unmap_mapping_begin(e, (int)a[0], a[1], a[2]);
}

static int op_rmap_commit(struct engine *e, const uint64_t *a)
{
	return rmap_commit(e, (int)a[0]);
}

static int op_inval_hold(struct engine *e, const uint64_t *a)
{
	return inval_hold(e, (int)a[0]);
}

static int op_inval_end(struct engine *e, const uint64_t *a)
{
	return inval_end(e, (int)a[0]);
}

static int op_frag_hold(struct engine *e, const uint64_t *a)
{
	return frag_hold(e, (int)a[0]);
}

static int op_frag_end(struct engine *e, const uint64_t *a)
{
	return frag_end(e, (int)a[0]);
}

static int op_walk_pin(struct engine *e, const uint64_t *a)
{
	return walk_pin(e, (int)a[0]);
}

static int op_collapse_hold(struct engine *e, const uint64_t *a)
{
	return collapse_hold(e, (int)a[0]);
}

static int op_collapse_end(struct engine *e, const uint64_t *a)
{
	return collapse_end(e, (int)a[0]);
}

/* a user access on a cpu no kernel path is stopped on (a walker with IRQs off, a thread holding a lock there:
 * op_handlers' idle) */
static int op_tlb_access(struct engine *e, const uint64_t *a)
{
	return tlb_access(e, (int)a[0], a[1], a[2], a[3] != 0);
}

/* mremap(pid, old_addr, old_len, new_addr, new_len): MREMAP_MAYMOVE | MREMAP_FIXED to new_addr, or in place
 * (flags 0: shrink or grow where it is) when new_addr == old_addr */
static int op_mremap(struct engine *e, const uint64_t *a)
{
	int mm = proc_mm(e, a[0]);
	return mm < 0 ? mm : sys_mremap(e, mm, a[1], a[2], a[4], a[3], a[3] != a[1]);
}

static int op_mremap_hold(struct engine *e, const uint64_t *a)
{
	return mremap_hold(e, (int)a[0]);
}

static int op_mremap_end(struct engine *e, const uint64_t *a)
{
	return mremap_end(e, (int)a[0]);
}

/* khugepaged's pass over the PMD block of addr in pid's mm (Z3) */
static int op_khugepaged(struct engine *e, const uint64_t *a)
{
	int mm = proc_mm(e, a[0]);
	return mm < 0 ? mm : khugepaged_scan_mm_slot(e, mm, a[1]);
}

static int op_vm_create(struct engine *e, const uint64_t *a)
{
	return kvm_create_vm(e, a[0], a[1], a[2]);
}

static int op_memslot(struct engine *e, const uint64_t *a)
{
	if (kvm_mm_not_current(e, a[0]))
		return -EIO;
	return __kvm_set_memory_region(e, a);
}

/* a fault on the synchronous cpu: begin and commit in one operation */
static int op_guest_fault(struct engine *e, const uint64_t *a)
{
	if (kvm_mm_not_current(e, a[0]))
		return -EIO;
	int ret = kvm_faultin_pfn(e, MAX_CPUS, a[0], a[1], a[2] != 0);
	return ret ? ret : kvm_mmu_finish_page_fault(e, MAX_CPUS);
}

static int op_guest_fault_begin(struct engine *e, const uint64_t *a)
{
	if (kvm_mm_not_current(e, a[1]))
		return -EIO;
	return kvm_faultin_pfn(e, (int)a[0], a[1], a[2], a[3] != 0);
}

static int op_guest_fault_commit(struct engine *e, const uint64_t *a)
{
	return kvm_mmu_finish_page_fault(e, (int)a[0]);
}

static int op_vm_destroy(struct engine *e, const uint64_t *a)
{
	return kvm_destroy_vm(e, a[0]);
}

/* The operations that start an actor holding locks across operations: their step checks the lock order after */
static bool lock_taking(uint64_t opcode)
{
	return opcode == OP_WALK_BEGIN || opcode == OP_RMAP_BEGIN || opcode == OP_GUEST_FAULT_BEGIN ||
	       opcode == OP_UNMAP_MAPPING_BEGIN;
}

/* cpu: the first argument names a cpu, checked once here (-EINVAL) */
static const struct op_handler {
	int (*fn)(struct engine *e, const uint64_t *a);
	bool cpu;               /* a[0] names a cpu (-EINVAL beyond MAX_CPUS) */
	bool pid;               /* a[0] names a process, which must exist: -ESRCH before anything is touched */
	enum actor_kind needs;  /* A_NONE, or the actor cpu a[0] must be running (the operation continues it): -EINVAL */
	bool idle;              /* cpu a[0] must run no actor (the operation starts one there, or a user access): -EBUSY */
} op_handlers[OP_NR] = {
	[OP_SYSCTL_ALLOCATE_PGSTE] = { op_sysctl_allocate_pgste }, [OP_EXEC] = { op_exec }, [OP_FORK] = { op_fork },
	[OP_EXIT] = { op_exit, .pid = true }, [OP_MMAP] = { op_mmap, .pid = true },
	[OP_MUNMAP] = { op_munmap, .pid = true }, [OP_MADVISE] = { op_madvise, .pid = true },
	[OP_FAULT] = { op_fault, .pid = true }, [OP_SPLIT] = { op_split, .pid = true },
	[OP_SHM_MMAP] = { op_shm_mmap, .pid = true },
	[OP_RCU_LOCK] = { op_rcu_lock, true }, [OP_RCU_UNLOCK] = { op_rcu_unlock, true }, [OP_RCU_GP] = { op_rcu_gp },
	[OP_WALK_BEGIN] = { op_walk_begin, true, .idle = true }, [OP_WALK_STEP] = { op_walk_step, true, .needs = A_WALK },
	[OP_WALK_END] = { op_walk_end, true, .needs = A_WALK }, [OP_RMAP_BEGIN] = { op_rmap_begin, true, .idle = true },
	[OP_UNMAP_MAPPING_BEGIN] = { op_unmap_mapping_begin, true, .idle = true },
	[OP_RMAP_COMMIT] = { op_rmap_commit, true, .needs = A_RMAP }, [OP_INVAL_HOLD] = { op_inval_hold, true },
	[OP_INVAL_END] = { op_inval_end, true, .needs = A_INVAL },
	[OP_VM_CREATE] = { op_vm_create }, [OP_MEMSLOT] = { op_memslot }, [OP_GUEST_FAULT] = { op_guest_fault },
	[OP_GUEST_FAULT_BEGIN] = { op_guest_fault_begin, true },
	[OP_GUEST_FAULT_COMMIT] = { op_guest_fault_commit, true, .needs = A_GFAULT },
	[OP_VM_DESTROY] = { op_vm_destroy },
	[OP_FRAG_HOLD] = { op_frag_hold, true }, [OP_FRAG_END] = { op_frag_end, true, .needs = A_FRAG },
	[OP_WALK_PIN] = { op_walk_pin, true, .needs = A_WALK }, [OP_COLLAPSE_HOLD] = { op_collapse_hold, true, .idle = true },
	[OP_COLLAPSE_END] = { op_collapse_end, true, .needs = A_COLLAPSE }, [OP_TLB_ACCESS] = { op_tlb_access, true, .idle = true },
	[OP_MREMAP] = { op_mremap, .pid = true }, [OP_MREMAP_HOLD] = { op_mremap_hold, true, .idle = true },
	[OP_MREMAP_END] = { op_mremap_end, true, .needs = A_MREMAP },
	[OP_KHUGEPAGED] = { op_khugepaged, .pid = true },
	[OP_HUGETLB_MMAP] = { op_hugetlb_mmap, .pid = true }, [OP_UNSHARE_HOLD] = { op_unshare_hold, true, .idle = true },
	[OP_UNSHARE_END] = { op_unshare_end, true, .needs = A_UNSHARE },
};

/* The dispatcher's preconditions (op_handlers' pid, needs and idle): the errno of an operation that cannot start, found
 * before it touches anything (each handler and kernel path checks the same again for its other callers). */
static int op_precondition(const struct engine *e, const struct op_handler *h, const uint64_t *a)
{
	if (h->pid && proc_mm(e, a[0]) < 0)
		return -ESRCH;
	if (h->needs != A_NONE && e->cpus[a[0]].actor != h->needs)
		return -EINVAL;
	if (h->idle && e->cpus[a[0]].actor != A_NONE)
		return -EBUSY;
	return 0;
}

/* Would ptf_step(e, op) certainly change nothing (ptf_same) and find nothing? True when a precondition fails and no
 * held page_table_free or collapse window could make the operation wait (-EBUSY, counted as a wait) instead. The
 * search then counts the successor without stepping a copy (docs/check.md): the step would only count its errno,
 * and the oracle after it would see the state it saw after the parent's step. False means "not known". */
bool ptf_noop(const struct engine *e, const uint64_t *op)
{
	if (op[0] >= OP_NR)
		return false;
	const struct op_handler *h = &op_handlers[op[0]];
	if (h->cpu && op[1] >= MAX_CPUS)
		return false;
	if (lock_taking(op[0]))
		return false; /* its step checks lock order (lockdep_check) on the state as it is: let it */
	for (int cpu = 0; cpu < MAX_CPUS; cpu++)
		if (e->cpus[cpu].actor == A_FRAG || e->cpus[cpu].actor == A_COLLAPSE)
			return false;
	return op_precondition(e, h, op + 1) != 0;
}

int ptf_step(struct engine *e, const uint64_t *op)
{
	int ret;
	e->cur_opcode = (uint32_t)op[0];
	e->self_cpu = -1;
	e->ncur = 0;
	e->locks_grew = lock_taking(op[0]);
	if (op[0] >= OP_NR)
		ret = -ENOSYS;
	else if (op_handlers[op[0]].cpu && op[1] >= MAX_CPUS)
		ret = -EINVAL;
	else if ((ret = frag_window_wait(e, op[0])) != 0)
		; /* a page_table_free held inside mm->context.lock (Z4): the operation waits, nothing done */
	else if ((ret = collapse_window_wait(e, op[0])) != 0)
		; /* a collapse_huge_page held before its copy, mmap_lock for write (Z5): the same */
	else if ((ret = op_precondition(e, &op_handlers[op[0]], op + 1)) != 0)
		; /* no such process, no such actor on the cpu, or a busy cpu: nothing done */
	else
		ret = op_handlers[op[0]].fn(e, op + 1);
	if (ret > 0)
		ret = 0;
	e->st.results[-ret < 128 ? -ret : 127]++;
	oracle(e);
	e->op_index++;
	return ret;
}

/* End of trace: walkers end, rmap actors abort, held invalidations end, explicit sections close. */
static void actors_abandon(struct engine *e)
{
	for (int cpu = 0; cpu < MAX_CPUS; cpu++) /* a held collapse copies while the walkers still hold their pins */
		if (e->cpus[cpu].actor == A_COLLAPSE)
			collapse_end(e, cpu);
	for (int cpu = 0; cpu < MAX_CPUS; cpu++) {
		struct cpu *c = &e->cpus[cpu];
		if (c->actor == A_WALK || c->actor == A_RMAP)
			actor_end(e, cpu);
		if (c->actor == A_INVAL)
			inval_end(e, cpu);
		if (c->actor == A_FRAG)
			frag_end(e, cpu);
		if (c->actor == A_COLLAPSE)
			collapse_end(e, cpu);
		if (c->actor == A_UNSHARE)
			unshare_end(e, cpu);
		c->rcu_nest = 0;
	}
	for (int cpu = 0; cpu < MAX_CPUS; cpu++) /* a held mremap unmaps its old range once the walkers are gone */
		if (e->cpus[cpu].actor == A_MREMAP)
			mremap_end(e, cpu);
}

/* The release of an engine on the heap: ptf_fini, then its memory (its ELF table is its owner's). */
void engine_free(struct engine *e)
{
	if (!e)
		return;
	ptf_fini(e);
	free(e);
}

/* Abandon actors, tear everything down, drain RCU; whatever is still in the pool leaked. */
int ptf_finish(struct engine *e, bool teardown)
{
	if (e->viol)
		return 0;
	e->self_cpu = -1; /* no operation runs: every actor's locks count */
	actors_abandon(e);
	kvm_abort_faults(e);
	for (int cpu = 0; cpu < MAX_CPUS; cpu++) /* a window a fault in flight or a later window kept waiting (a memslot
						    DELETE's final swap) ends now */
		if (e->cpus[cpu].actor == A_INVAL)
			inval_end(e, cpu);
	mm_audit(e);
	kvm_coherence_check(e);
	if (!teardown || e->viol)
		return 0;
	kvm_destroy_all(e);
	for (int pid = 0; pid < MAX_PIDS && !e->viol; pid++) {
		if (!e->procs[pid].exists)
			continue;
		e->procs[pid].exists = false;
		mmput(e, e->procs[pid].mm);
	}
	if (!e->viol)
		shmem_release_all(e); /* every mapping is gone: the objects let go of their pages */
	for (int guard = 0; e->ncbs && !e->viol && guard < 1000; guard++)
		rcu_gp(e, true);
	if (e->viol)
		return 0;
	for (uint64_t i = 0; i < e->ncpd; i++) {
		const struct compound *c = &e->cpd[i];
		if (!c->freed) {
			violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_PFN, .pfn = c->pfn },
				   "after teardown data page pfn 0x%llx (%u x 4K%s) is still allocated, "
				"mapcount %d", (unsigned long long)c->pfn, cpd_nr(c), c->shm ? ", shmem" : "", c->mapcount);
			return 0;
		}
	}
	for (int32_t i = 0; i < e->nblocks; i++) {
		struct block *b = &e->blocks[i];
		if (b->used) {
			violate_at(e, V_TABLE_LEAK, &(struct viol_focus){ .has = VF_TABLE | VF_MM,
				   .table = tref_phys((struct tref){ i, 0, 0 }), .mm = b->mm[0] },
				   "after teardown and RCU drain the level-%d table at 0x%llx "
				"(mm %d) is still in use", b->level[0],
				(unsigned long long)tref_phys((struct tref){ i, 0, 0 }), b->mm[0]);
			break;
		}
	}
	return 0;
}

/* The 4K frame the process maps at va, or ~0 when nothing is mapped there. */
uint64_t ptf_translate(struct engine *e, uint64_t pid, uint64_t va)
{
	int level;
	uint64_t pfn;
	if (pid >= MAX_PIDS || !e->procs[pid].exists || va >= e->task_size)
		return ~0ull;
	if (host_lookup(e, e->procs[pid].mm, va, &level, &pfn, NULL, NULL) != E_LEAF)
		return ~0ull;
	return pfn;
}

/* Drive one detector from a deliberately corrupted state (detectors no s390 knob reaches yet). */
int ptf_selftest(int which)
{
	static const int knobs[K_NR];
	uint64_t config[5] = { 4096, 48, 0, 1024, 48 };
	struct engine *e = calloc(1, sizeof(*e));
	struct tref t;
	int mm, got = -1;
	if (!e || ptf_init(e, ARCH_S390, knobs, config))
		goto out;
	switch (which) {
	case V_TABLE_LEAK: /* a table nobody owns survives teardown */
		table_alloc(e, -1, 3, 4, &t);
		ptf_finish(e, true);
		break;
	case V_DOUBLE_FREE:
		table_alloc(e, -1, 3, 4, &t);
		block_release(e, t.blk);
		block_release(e, t.blk);
		break;
	case V_FREED_PAGE_MAPPED: { /* a kernel path drops a mapping it never removed */
		mm_alloc(e, false, -1, &mm);
		uint64_t pfn = data_alloc(e, 1);
		entry_write(e, e->mms[mm].pgt.root, 2, 0, e->geom.fmt->leaf(2, pfn << 12, true));
		data_lookup(e, pfn)->mapcount = 1;
		data_put(e, pfn);
		break;
	}
	case V_FRAGMENT_CORRUPT: { /* a full page left on the reuse list */
		mm_alloc(e, false, -1, &mm);
		struct tref a, b;
		page_table_alloc(e, mm, &a);
		page_table_alloc(e, mm, &b);
		e->blocks[a.blk].listed = 1;
		e->mms[mm].frag_list = a.blk;
		s390_frag_check(e);
		break;
	}
	case V_UAF_TABLE:
		table_alloc(e, -1, 3, 4, &t);
		block_release(e, t.blk);
		tref_deref(e, t, "selftest");
		break;
	case V_ENGINE_ASSERT: /* lockdep: two stopped operations both hold mm 0's mmap_lock, one for write */
		for (int cpu = 0; cpu < 2; cpu++) {
			struct cpu *c = &e->cpus[cpu];
			c->actor = A_INVAL;
			c->inval_held = true;
			c->inval_nlocks = 1;
			c->inval_locks[0] = (struct held_lock){ .cls = LC_MMAP, .mode = cpu ? LM_READ : LM_WRITE, .hi = ~0ull };
		}
		lockdep_check(e);
		break;
	}
	got = e->viol;
	ptf_fini(e);
out:
	free(e);
	return got;
}
