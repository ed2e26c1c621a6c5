/* core/locking.c: what split operations hold between their halves, who would wait for it, and lockdep's check. */
#include <string.h>
#include "ptf.h"

/* The kernel's names, for the wait report and the lockdep message (exported to Python by _engine.tables()). */
const char *const lock_names[LC_NR] = {
	[LC_MMAP] = "mmap_lock", [LC_VMA] = "vma_lock", [LC_ANON_VMA] = "anon_vma->root->rwsem",
	[LC_I_MMAP] = "i_mmap_rwsem", [LC_FOLIO] = "folio_lock", [LC_SRCU] = "kvm->srcu", [LC_KVM] = "kvm reference",
	[LC_MN_ACTIVE] = "mn_active_invalidate_count", [LC_IRQS_OFF] = "irqs_off", [LC_MM_USERS] = "mm_users",
	[LC_SLOTS] = "kvm->slots_lock",
	[LC_CONTEXT] = "mm->context.lock",
};

static struct held_lock held(enum lock_class cls, enum lock_mode mode, uint64_t id, uint64_t lo, uint64_t hi)
{
	return (struct held_lock){ .cls = (uint8_t)cls, .mode = (uint8_t)mode, .id = id, .lo = lo, .hi = hi };
}

/* The classes each actor can hold (cpu_locks): lock_holder skips an actor that cannot hold the one asked for, so an
 * acquisition costs a few compares per busy cpu on the hot path. */
#define LCB(c) (1u << (c))
static const unsigned actor_classes[] = {
	[A_NONE] = 0,
	[A_WALK] = LCB(LC_IRQS_OFF),
	[A_RMAP] = LCB(LC_FOLIO) | LCB(LC_ANON_VMA) | LCB(LC_I_MMAP),
	[A_GFAULT] = LCB(LC_SRCU) | LCB(LC_KVM) | LCB(LC_MMAP),
	[A_INVAL] = ~0u,
	[A_FRAG] = LCB(LC_CONTEXT),
	[A_COLLAPSE] = LCB(LC_MMAP),
	[A_MREMAP] = LCB(LC_MMAP) | LCB(LC_VMA),
	[A_UNSHARE] = LCB(LC_MMAP),
};

/* What a cpu's actor holds now, derived from its state (nothing but the window's set is stored):
 * - GUP-fast (walk_begin .. walk_end): IRQs off (local_irq_save in lockless_pages_from_mm), so an IPI that
 *   waits for every cpu (tlb_remove_table_sync_one) waits for it;
 * - an rmap walker (rmap_begin .. rmap_commit): the folio lock its caller took, and the rmap lock for read
 *   (folio_lock_anon_vma_read: the anon_vma root; rmap_walk_file: i_mmap_rwsem);
 * - a vCPU in a guest fault (guest_fault_begin .. commit): kvm->srcu for read (kvm_arch_vcpu_ioctl_run), the
 *   kvm reference of its vCPU file, and on s390 the mm's mmap_lock for read (gmap_fault holds it from
 *   fixup_user_fault to __gmap_link);
 * - an invalidation window (a host operation stopped between invalidate_range_start and _end): what that
 *   operation held at its notifier, and mn_active_invalidate_count for every VM its starts reached. */
int cpu_locks(const struct engine *e, int cpu, struct held_lock *out)
{
	const struct cpu *c = &e->cpus[cpu];
	int n = 0;
	switch (c->actor) {
	case A_WALK:
		out[n++] = held(LC_IRQS_OFF, LM_READ, (uint64_t)cpu, 0, ~0ull);
		break;
	case A_RMAP: /* unmap_mapping_begin's walker holds no folio (c->folio 0) */
		if (c->folio)
			out[n++] = held(LC_FOLIO, LM_WRITE, c->folio, 0, ~0ull);
		if (c->lock_kind != RL_NONE)
			out[n++] = held(c->lock_kind == RL_ANON ? LC_ANON_VMA : LC_I_MMAP, LM_READ, c->lock_id, 0, ~0ull);
		break;
	case A_GFAULT:
		out[n++] = held(LC_SRCU, LM_READ, (uint64_t)c->vm, 0, ~0ull);
		out[n++] = held(LC_KVM, LM_READ, (uint64_t)c->vm, 0, ~0ull);
		if (e->arch == ARCH_S390)
			out[n++] = held(LC_MMAP, LM_READ, (uint64_t)c->mm, 0, ~0ull);
		break;
	case A_INVAL:
		if (!c->inval_held)
			break;
		for (uint32_t i = 0; i < c->inval_nlocks && i < MAX_HELD; i++)
			out[n++] = c->inval_locks[i];
		for (int vi = 0; vi < MAX_VMS; vi++)
			if (c->inval_active[vi])
				out[n++] = held(LC_MN_ACTIVE, LM_READ, (uint64_t)vi, 0, ~0ull);
		break;
	case A_FRAG: /* s390 page_table_free stopped inside spin_lock_bh(&mm->context.lock) */
		if (c->walk_done)
			out[n++] = held(LC_CONTEXT, LM_WRITE, (uint64_t)c->mm, 0, ~0ull);
		break;
	case A_COLLAPSE: /* collapse_huge_page stopped before its copy: mmap_lock for write */
		if (c->walk_done)
			out[n++] = held(LC_MMAP, LM_WRITE, (uint64_t)c->mm, 0, ~0ull);
		break;
	case A_MREMAP: /* move_vma stopped before its old range's unmap: mmap_lock for write, both VMAs write-locked */
		if (c->walk_done) {
			out[n++] = held(LC_MMAP, LM_WRITE, (uint64_t)c->mm, 0, ~0ull);
			out[n++] = held(LC_VMA, LM_WRITE, (uint64_t)c->mm, c->gpa, c->hva);
			out[n++] = held(LC_VMA, LM_WRITE, (uint64_t)c->mm, c->pfn, c->pfn + c->folio);
		}
		break;
	case A_UNSHARE: /* a munmap stopped after its hugetlb unshare: mmap_lock for read (downgraded) */
		if (c->walk_done)
			out[n++] = held(LC_MMAP, LM_READ, (uint64_t)c->mm, 0, ~0ull);
		break;
	default:
		break;
	}
	return n;
}

static bool conflicts(const struct held_lock *a, const struct held_lock *b)
{
	if (a->cls != b->cls || a->id != b->id || (a->mode != LM_WRITE && b->mode != LM_WRITE))
		return false;
	if (a->cls == LC_IRQS_OFF)
		return false; /* no lock: only an IPI waits for it, and asks for it by name */
	return a->lo < b->hi && b->lo < a->hi;
}

/* The first cpu (in index order) whose actor holds something this acquisition conflicts with, or -1; the running
 * operation's own cpu, and the window that stopped it, are never one. An IPI (LC_IRQS_OFF asked with LM_WRITE) waits for any IRQs-off cpu. */
int lock_holder(const struct engine *e, enum lock_class cls, uint64_t id, enum lock_mode mode, uint64_t lo, uint64_t hi,
		struct held_lock *out)
{
	struct held_lock want = held(cls, mode, id, lo, hi), hs[MAX_CPU_LOCKS];
	for (int cpu = 0; cpu < MAX_CPUS; cpu++) {
		const struct cpu *c = &e->cpus[cpu];
		if (cpu == e->self_cpu || c->actor == A_NONE)
			continue;
		if (!(actor_classes[c->actor] & LCB(cls)) || (c->actor == A_INVAL && !c->inval_held))
			continue;
		if (c->actor == A_INVAL && c->inval_op == e->op_index)
			continue; /* the window that stopped the running operation holds that operation's own locks */
		if ((c->actor == A_COLLAPSE || c->actor == A_MREMAP || c->actor == A_UNSHARE) && c->seq == e->op_index)
			continue; /* likewise a collapse (Z5), a move or a munmap (issue 20) held by the running operation */
		int n = cpu_locks(e, cpu, hs);
		for (int i = 0; i < n; i++) {
			bool hit = cls == LC_IRQS_OFF ? hs[i].cls == LC_IRQS_OFF : conflicts(&want, &hs[i]);
			if (hit) {
				if (out)
					*out = hs[i];
				return cpu;
			}
		}
	}
	return -1;
}

/* The operation that began what a cpu holds: its actor's first half, or the operation a window stopped. */
static uint32_t holder_opcode(const struct engine *e, int cpu)
{
	const struct cpu *c = &e->cpus[cpu];
	switch (c->actor) {
	case A_WALK:
		return OP_WALK_BEGIN;
	case A_RMAP:
		return c->folio ? OP_RMAP_BEGIN : OP_UNMAP_MAPPING_BEGIN;
	case A_GFAULT:
		return OP_GUEST_FAULT_BEGIN;
	case A_INVAL:
		return c->inval_opcode;
	case A_FRAG:
		return (uint32_t)c->addr;
	case A_COLLAPSE:
		return OP_MADVISE;
	case A_MREMAP:
		return OP_MREMAP;
	case A_UNSHARE:
		return OP_MUNMAP;
	default:
		return OP_NR;
	}
}

/* The operation would wait: it changes nothing, the wait event names the holder, and its result is -EBUSY (the
 * trace may try it again once the holder is done). */
int lock_wait(struct engine *e, int cpu, enum lock_class cls, uint64_t id, enum lock_mode mode,
	      const struct held_lock *h)
{
	e->st.waits++;
	emit(e, EV_WAIT, (uint64_t)cls | (uint64_t)mode << 8 | (uint64_t)h->mode << 16, id, (uint64_t)cpu,
	     holder_opcode(e, cpu));
	return -EBUSY;
}

/* Would this acquisition wait? -EBUSY (reported) if so, else 0; nothing is recorded. */
int lock_would_wait(struct engine *e, enum lock_class cls, uint64_t id, enum lock_mode mode)
{
	struct held_lock h;
	int cpu = lock_holder(e, cls, id, mode, 0, ~0ull, &h);
	return cpu < 0 ? 0 : lock_wait(e, cpu, cls, id, mode, &h);
}

/* Take a lock for the running operation: -EBUSY (reported, nothing recorded) when a holder conflicts; else it
 * joins the operation's set, which a window that stops the operation keeps. */
int lock_acquire_range(struct engine *e, enum lock_class cls, uint64_t id, enum lock_mode mode, uint64_t lo,
		       uint64_t hi)
{
	struct held_lock h;
	int cpu = lock_holder(e, cls, id, mode, lo, hi, &h);
	if (cpu >= 0)
		return lock_wait(e, cpu, cls, id, mode, &h);
	for (int i = 0; i < e->ncur; i++) {
		struct held_lock *c = &e->cur[i];
		/* a VMA range apart from the one held (mremap write-locks its source VMA and unmaps the target range)
		 * is one more entry, while there is room: their hull would cover VMAs neither touches */
		bool apart = cls == LC_VMA && (hi < c->lo || lo > c->hi) && e->ncur < MAX_HELD;
		if (c->cls == cls && c->id == id && !apart) {
			if (mode > c->mode)
				c->mode = (uint8_t)mode;
			if (lo < c->lo)
				c->lo = lo;
			if (hi > c->hi)
				c->hi = hi;
			return 0;
		}
	}
	if (e->ncur < MAX_HELD)
		e->cur[e->ncur++] = held(cls, mode, id, lo, hi);
	else
		violate(e, V_ENGINE_ASSERT, "an operation holds more than %d locks", MAX_HELD);
	return 0;
}

int lock_acquire(struct engine *e, enum lock_class cls, uint64_t id, enum lock_mode mode)
{
	return lock_acquire_range(e, cls, id, mode, 0, ~0ull);
}

void lock_release(struct engine *e, enum lock_class cls, uint64_t id)
{
	for (int i = 0; i < e->ncur; i++)
		if (e->cur[i].cls == cls && e->cur[i].id == id) {
			e->cur[i] = e->cur[--e->ncur];
			return;
		}
}

void lock_release_all(struct engine *e, enum lock_class cls)
{
	for (int i = 0; i < e->ncur;)
		if (e->cur[i].cls == cls)
			e->cur[i] = e->cur[--e->ncur];
		else
			i++;
}

/* mmap_write_downgrade */
void lock_downgrade(struct engine *e, enum lock_class cls, uint64_t id)
{
	for (int i = 0; i < e->ncur; i++)
		if (e->cur[i].cls == cls && e->cur[i].id == id)
			e->cur[i].mode = LM_READ;
}

/* A window stops the running operation at this notifier: it keeps what the operation holds now (merged with what
 * it held at the operation's earlier notifiers). */
void inval_window_keep_locks(struct engine *e, int cpu)
{
	struct cpu *c = &e->cpus[cpu];
	c->inval_opcode = e->cur_opcode;
	e->locks_grew = true;
	for (int i = 0; i < e->ncur; i++) {
		const struct held_lock *h = &e->cur[i];
		uint32_t j = 0;
		while (j < c->inval_nlocks && !(c->inval_locks[j].cls == h->cls && c->inval_locks[j].id == h->id &&
						  !(h->cls == LC_VMA && (h->hi < c->inval_locks[j].lo || h->lo > c->inval_locks[j].hi))))
			j++; /* VMA ranges apart stay apart, as in lock_acquire_range */
		if (j == c->inval_nlocks) {
			if (j == MAX_HELD)
				continue;
			c->inval_locks[c->inval_nlocks++] = *h;
			continue;
		}
		struct held_lock *k = &c->inval_locks[j];
		if (h->mode > k->mode)
			k->mode = h->mode;
		if (h->lo < k->lo)
			k->lo = h->lo;
		if (h->hi > k->hi)
			k->hi = h->hi;
	}
}

/* lockdep's question after every operation that added a holder (an actor's first half, a window taking an
 * operation; releases cannot make a conflict): do two cpus hold locks that exclude each other? The acquisitions
 * above make that impossible, so a hit is a bug in the model (engine-assert). */
void lockdep_check(struct engine *e)
{
	struct held_lock hs[MAX_CPUS][MAX_CPU_LOCKS];
	int n[MAX_CPUS], busy[MAX_CPUS], nb = 0;
	for (int cpu = 0; cpu < MAX_CPUS; cpu++) {
		enum actor_kind a = e->cpus[cpu].actor;
		if (a == A_NONE || a == A_WALK)
			continue;
		n[cpu] = cpu_locks(e, cpu, hs[cpu]);
		if (n[cpu])
			busy[nb++] = cpu;
	}
	for (int x = 0; x < nb; x++)
		for (int y = x + 1; y < nb; y++) {
			int a = busy[x], b = busy[y];
			for (int i = 0; i < n[a]; i++)
				for (int j = 0; j < n[b]; j++)
					if (conflicts(&hs[a][i], &hs[b][j])) {
						violate(e, V_ENGINE_ASSERT, "lockdep: cpu %d and cpu %d both hold %s %#llx "
							"(%s and %s)", a, b, lock_names[hs[a][i].cls],
							(unsigned long long)hs[a][i].id,
							hs[a][i].mode == LM_WRITE ? "write" : "read",
							hs[b][j].mode == LM_WRITE ? "write" : "read");
						return;
					}
		}
}
