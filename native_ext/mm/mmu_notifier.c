/* mm/mmu_notifier.c: the invalidation window, a host thread stopped between its invalidate_range_start and _end
 * calls (inval_hold, inval_end) and what the window holds meanwhile. */
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

/* inval_hold: the cpu waits for the next host operation that notifies a VM (an mmu_notifier subscriber) and
 * stops that operation's thread after its invalidate_range_start calls and its host change, before the
 * matching _end calls (docs/model.md section 7). Only arm64 and x86_64 have KVM mmu notifiers. */
int inval_hold(struct engine *e, int cpu)
{
	if (e->arch == ARCH_S390)
		return -ENOSYS;
	int ret = idle_cpu(e, cpu);
	if (ret)
		return ret;
	struct cpu *c = &e->cpus[cpu];
	c->actor = A_INVAL;
	c->inval_held = false;
	memset(c->inval_began, 0, sizeof(c->inval_began));
	memset(c->inval_active, 0, sizeof(c->inval_active));
	memset(c->inval_mms, 0, sizeof(c->inval_mms));
	memset(c->inval_locks, 0, sizeof(c->inval_locks));
	memset(&c->inval_mid, 0, sizeof(c->inval_mid));
	memset(&c->inval_slot, 0, sizeof(c->inval_slot));
	c->inval_nlocks = c->inval_opcode = c->inval_child = 0;
	return 0;
}

/* The cpu whose window takes this notification of mm: the one already holding the current operation's ends,
 * else the lowest armed cpu, which now holds this operation (every later notification of it, of any mm, too). */
int inval_window_for(struct engine *e, int mm)
{
	int cpu = inval_window_of_current(e);
	for (int i = 0; i < MAX_CPUS && cpu < 0; i++) {
		struct cpu *c = &e->cpus[i];
		if (c->actor == A_INVAL && !c->inval_held) {
			c->inval_held = true;
			c->inval_op = e->op_index;
			cpu = i;
		}
	}
	if (cpu >= 0)
		inval_window_keep_locks(e, cpu); /* the stopped operation keeps what it holds now */
	if (cpu >= 0 && !(e->cpus[cpu].inval_mms[mm / 64] >> (mm % 64) & 1)) {
		e->cpus[cpu].inval_mms[mm / 64] |= 1ull << (mm % 64);
		mmgrab(e, mm); /* the stopped thread's reference (the mm outlives the window) */
	}
	return cpu;
}

/* The cpu whose window stopped the running operation, or -1. */
int inval_window_of_current(const struct engine *e)
{
	for (int i = 0; i < MAX_CPUS; i++) {
		const struct cpu *c = &e->cpus[i];
		if (c->actor == A_INVAL && c->inval_held && c->inval_op == e->op_index)
			return i;
	}
	return -1;
}

/* The cpu whose stopped host thread holds this mm, or -1. Its exit_mmap waits for that thread: for the
 * operation's own mm the thread holds mm_users until it finishes (after the ends); retract_page_tables holds
 * i_mmap_rwsem for read, which free_pgtables' unlink_file_vma waits for. */
int inval_window_holder(const struct engine *e, int mm)
{
	for (int i = 0; i < MAX_CPUS; i++) {
		const struct cpu *c = &e->cpus[i];
		if (c->actor == A_INVAL && c->inval_held && (c->inval_mms[mm / 64] >> (mm % 64) & 1))
			return i;
	}
	return -1;
}

/* kvm_destroy_vm: the VM left the notifier list; no held end is delivered to it (nor to a VM later created in its
 * place). */
void inval_window_forget_vm(struct engine *e, int vm)
{
	for (int i = 0; i < MAX_CPUS; i++)
		if (e->cpus[i].actor == A_INVAL)
			e->cpus[i].inval_began[vm] = e->cpus[i].inval_active[vm] = 0;
}

/* inval_end: the stopped thread runs its invalidate_range_end calls and finishes the operation; on an armed
 * cpu that no operation reached it cancels the hold. */
int inval_end(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	if (c->actor != A_INVAL)
		return -EINVAL;
	int ret = c->inval_held && e->mn_ops->end_held_wait ? e->mn_ops->end_held_wait(e, cpu) : 0;
	if (ret)
		return ret; /* the stopped thread would wait (a memslot DELETE's final swap): nothing changes */
	if (c->inval_held)
		mmu_notifier_invalidate_range_end_held(e, cpu);
	c->actor = A_NONE;
	c->inval_held = false;
	if (c->inval_child) { /* dup_mmap returns: fork's child runs */
		e->procs[c->inval_child - 1].exists = true;
		e->procs[c->inval_child - 1].pending = false;
	}
	for (int mm = 0; mm < MAX_MMS; mm++)
		if (c->inval_mms[mm / 64] >> (mm % 64) & 1)
			mmdrop(e, mm);
	memset(c->inval_mms, 0, sizeof(c->inval_mms));
	memset(c->inval_locks, 0, sizeof(c->inval_locks));
	c->inval_nlocks = c->inval_opcode = c->inval_child = 0;
	return 0;
}
