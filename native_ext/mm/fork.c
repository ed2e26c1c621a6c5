/* mm/fork.c: the process lifecycle over mms: fork (copy_process, dup_mmap), exec (bprm_execve), exit_mm, mmput. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

void mmput(struct engine *e, int mm)
{
	struct mm *m = &e->mms[mm];
	if (--m->users > 0)
		return;
	exit_mmap(e, mm);
	m->count++;
	mmdrop(e, mm);
}

struct copy_arg { int src, dst; int ret; };

/* copy_p4d/pud/pmd/pte_range: the child gets a table wherever the parent has one in the VMA's range (even an
 * empty one); copy_present_pte and copy_hugetlb_page_range write-protect writable leaves on both sides and
 * add a mapping; copy_huge_pmd gives the child its own deposited table. */
static int copy_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct copy_arg *a = ctx->arg;
	struct engine *e = ctx->e;
	const struct entry_fmt *f = ctx->g->fmt;
	struct tref dt;
	uint32_t di;
	int dl;
	if (visit == WALK_TABLE_PRE) {
		a->ret = pt_slot(e, a->dst, ctx->addr, child_level(ctx->g, ctx->level), &dt, &di, &dl);
		return a->ret ? 1 : 0;
	}
	if (f->kind(ctx->level, ctx->old) != E_LEAF)
		return 0;
	a->ret = pt_slot(e, a->dst, ctx->addr, ctx->level, &dt, &di, &dl);
	if (a->ret)
		return 1;
	if (dl != ctx->level || f->kind(dl, entry_get(e, dt, di)) != E_EMPTY) {
		violate(e, V_ENGINE_ASSERT, "fork: the child's level-%d slot for va 0x%llx is taken", ctx->level,
			(unsigned long long)ctx->addr);
		return 1;
	}
	uint64_t phys = f->addr(ctx->level, ctx->old), pfn = phys >> 12;
	if (ctx->level == e->pmd_lvl && pmd_has_deposit(e, ctx->old)) {
		struct tref dep;
		a->ret = alloc_table_for(e, a->dst, pte_level(e), &dep);
		if (a->ret)
			return 1;
		pgtable_trans_huge_deposit(e, dt, dep);
	}
	if (!is_zero_pfn(pfn)) {
		struct compound *c = data_lookup(e, pfn);
		if (!c) {
			violate_at(e, V_ENGINE_ASSERT, &(struct viol_focus){ .has = VF_PFN, .pfn = pfn },
				"fork: va 0x%llx maps pfn 0x%llx, no data page",
				(unsigned long long)ctx->addr, (unsigned long long)pfn);
			return 1;
		}
		c->mapcount++;
	}
	if (f->writable(ctx->level, ctx->old))
		entry_write(e, ctx->tbl, ctx->level, ctx->idx, f->leaf(ctx->level, phys, false));
	entry_write(e, dt, ctx->level, di, f->leaf(ctx->level, phys, false));
	emit(e, EV_LEAF_SET, ctx->level, ctx->addr, pfn, a->dst);
	return e->viol ? 1 : 0;
}

/* copy_page_range: only where vma_needs_copy says so (an anon_vma; v6.6 copies hugetlb lazily too); the
 * parent's range is notified (MMU_NOTIFY_PROTECTION_PAGE for a COW mapping; copy_hugetlb_page_range
 * notifies the VMA too). */
static int copy_page_range(struct engine *e, int src, int dst, const struct vma *v)
{
	if (!v->anon)
		return 0;
	mmu_notifier_invalidate_range(e, src, v->start, v->end);
	struct copy_arg a = { src, dst, 0 };
	struct walker w = { copy_visit, &a, WALK_LEAF | WALK_TABLE_PRE | WALK_SKIP_EMPTY, 0 };
	pt_walk(e, &e->mms[src].pgt, &e->geom, v->start, v->end, &w);
	return a.ret;
}

/* dup_mmap: the child's VMAs (vm_area_dup + anon_vma_fork: the new anon_vma keeps the root), then each one's
 * tables (copy_page_range). The locks it takes are taken by copy_process before the child's mm exists. */
static int dup_mmap(struct engine *e, int pm, int nm)
{
	struct mm *src = &e->mms[pm], *dst = &e->mms[nm];
	if (src->nvma) {
		dst->vmas = malloc((size_t)src->nvma * sizeof(struct vma));
		if (!dst->vmas)
			return -ENOMEM;
		dst->nvma = src->nvma;
	}
	for (int i = 0; i < src->nvma; i++) {
		struct vma v = src->vmas[i];
		v.cloned = v.anon != 0;
		v.anon = v.anon ? ++e->next_anon : 0;
		dst->vmas[i] = v;
	}
	for (int i = 0; i < src->nvma && !e->viol; i++) {
		struct vma v = src->vmas[i];
		int ret = copy_page_range(e, pm, nm, &v);
		if (ret)
			return ret;
	}
	flush_tlb_mm(e, pm); /* the parent's PTEs were write-protected */
	return 0;
}

int copy_process(struct engine *e, uint64_t parent, uint64_t child)
{
	int pm = proc_mm(e, parent);
	if (pm < 0)
		return pm;
	if (child >= MAX_PIDS)
		return -EINVAL;
	if (e->procs[child].exists)
		return -EEXIST;
	if (e->procs[child].pending)
		return -EEXIST; /* the pid of a fork that a window stopped */
	struct proc *pp = &e->procs[parent];
	struct mm *src = &e->mms[pm];
	/* dup_mmap: mmap_write_lock_killable(oldmm), vma_start_write of every VMA it copies; anon_vma_fork locks each
	 * anon_vma root for write, and a file VMA is inserted into i_mmap under i_mmap_rwsem for write */
	int ret = lock_acquire(e, LC_MMAP, (uint64_t)pm, LM_WRITE);
	if (!ret)
		ret = lock_acquire(e, LC_VMA, (uint64_t)pm, LM_WRITE);
	for (int i = 0; !ret && i < src->nvma; i++)
		ret = vma_rmap_wait(e, &src->vmas[i]);
	if (ret)
		return ret;
	bool alloc_pgste = e->sysctl_pgste || pp->tif_pgste || src->alloc_pgste;
	if (!e->mm_ops->pgste || e->knob[K_PGSTE_DECISION] == PD_CONVERT_LATE)
		alloc_pgste = false;
	else if (e->knob[K_PGSTE_DECISION] == PD_SYSCTL_ONLY)
		alloc_pgste = e->sysctl_pgste;
	/* dup_mm copies asce_limit: s390's child gets one CRST of the parent's level (pgd_alloc) */
	int nm;
	ret = mm_alloc(e, alloc_pgste, src->pgt.top, &nm);
	if (ret)
		return ret;
	struct mm *dst = &e->mms[nm];
	src = &e->mms[pm];
	dst->def_nohuge = src->def_nohuge; /* mm_init: def_flags & VM_INIT_DEF_MASK */
	if ((ret = dup_mmap(e, pm, nm))) {
		mmput(e, nm);
		return ret;
	}
	/* a window stopped dup_mmap (a COW range's notifier): the child does not run until inval_end */
	int w = inval_window_of_current(e);
	e->procs[child] = (struct proc){ w < 0, nm, pp->tif_pgste, w >= 0 };
	if (w >= 0)
		e->cpus[w].inval_child = (uint32_t)child + 1;
	return 0;
}

int bprm_execve(struct engine *e, int pid, int64_t elf)
{
	struct proc *p = &e->procs[pid];
	if (p->pending)
		return -EEXIST; /* the pid of a fork that a window stopped: taken, not yet running */
	int old = p->exists ? p->mm : -1;
	if (!p->exists)
		p->tif_pgste = false; /* a new task (model choice: no parent to inherit TIF_PGSTE from) */
	const struct mm_ops *arch = e->mm_ops;
	int decision = arch->pgste ? e->knob[K_PGSTE_DECISION] : PD_SYSCTL_ONLY;
	bool restarted = false;
	struct elf_info info = { 0 };
	if (elf >= e->nelfs)
		return -ENOEXEC;
	if (old >= 0 && (elf < 0 || !elf_parse(e->elfs[elf], e->elf_lens[elf], arch->elf_machine, arch->elf_big_endian,
					       &info, e->geom.page_size))) {
		/* an exec that reaches exec_mmap: mmap_read_lock_killable(old_mm), then mmput(old_mm), whose exit_mmap
		 * may wait; an exec that fails earlier does neither */
		int ret = lock_would_wait(e, LC_MMAP, (uint64_t)old, LM_READ);
		if (ret || (ret = exit_mmap_wait(e, old)))
			return ret;
	}
again:;
	bool flags_say = e->sysctl_pgste || p->tif_pgste || (old >= 0 && e->mms[old].alloc_pgste);
	bool alloc_pgste = decision == PD_CONVERT_LATE ? false :
			   decision == PD_SYSCTL_ONLY ? e->sysctl_pgste : flags_say;
	if (!arch->pgste)
		alloc_pgste = false;
	int nm, ret = mm_alloc(e, alloc_pgste, -1, &nm);
	if (ret)
		return ret;
	/* fs/exec.c: the stack and its argument page exist before binfmt_elf looks at the file */
	struct mm *m = &e->mms[nm];
	m->def_nohuge = old >= 0 && e->mms[old].def_nohuge; /* mm_init: def_flags & VM_INIT_DEF_MASK */
	uint64_t pfn, size;
	struct vma stack = { .start = e->stack_top - STACK_BYTES, .end = e->stack_top, .flags = VMA_STACK };
	if (m->def_nohuge)
		stack.flags |= VMA_NOHUGE; /* setup_arg_pages: vm_flags |= mm->def_flags */
	ret = vma_insert_at(m, 0, stack);
	if (!ret)
		ret = handle_mm_fault(e, nm, e->stack_top - e->geom.page_size, true, &pfn, &size);
	if (!ret && elf >= 0) {
		ret = elf_parse(e->elfs[elf], e->elf_lens[elf], arch->elf_machine, arch->elf_big_endian, &info,
			      e->geom.page_size);
	}
	if (!ret && info.pgste && arch->pgste && !flags_say) {
		if (decision == PD_ELF_RESTART) {
			p->tif_pgste = true;
			ret = -EAGAIN;
		} else if (decision == PD_ELF_NO_RESTART) {
			p->tif_pgste = true;
			m->alloc_pgste = true;
			e->frag_dirty = true;
			emit(e, EV_PGSTE, nm, 1, 0, 0);
		}
	}
	if (ret) {
		mmput(e, nm);
		if (ret == -EAGAIN && !restarted) {
			restarted = true;
			emit(e, EV_RESTART, pid, 0, 0, 0);
			goto again;
		}
		return ret;
	}
	if (old >= 0)
		mmput(e, old);
	p->exists = true;
	p->mm = nm;
	return 0;
}

/* exit_mm (kernel/exit.c): mmap_read_lock (the core-dump barrier), then mmput; an exit_mmap that would wait
 * leaves the task as it was. */
int exit_mm(struct engine *e, int pid)
{
	int mm = e->procs[pid].mm;
	int ret = lock_would_wait(e, LC_MMAP, (uint64_t)mm, LM_READ);
	if (ret || (ret = exit_mmap_wait(e, mm)))
		return ret;
	e->procs[pid].exists = false;
	e->procs[pid].tif_pgste = false; /* a thread flag: it goes with the task */
	mmput(e, mm);
	return 0;
}
