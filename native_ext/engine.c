/* engine.c: set-up, the operation dispatcher, the per-step oracle, teardown and audit (the digest: digest.c). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ptf.h"

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
	e->mm_ops = arch == ARCH_S390 ? &s390_mm_ops : &generic_mm_ops;
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
	lockdep_check(e);
}

int ptf_step(struct engine *e, const uint64_t *op)
{
	int ret;
	e->cur_opcode = (uint32_t)op[0];
	e->self_cpu = -1;
	e->ncur = 0;
	if (op[0] <= OP_SPLIT || op[0] == OP_SHM_MMAP)
		ret = op_mm(e, op);
	else if (op[0] <= OP_RMAP_COMMIT || op[0] == OP_INVAL_HOLD || op[0] == OP_INVAL_END)
		ret = op_actor(e, op);
	else if (op[0] < OP_NR)
		ret = op_kvm(e, op);
	else
		ret = -ENOSYS;
	if (ret > 0)
		ret = 0;
	e->st.results[-ret < 128 ? -ret : 127]++;
	oracle(e);
	e->op_index++;
	return ret;
}

/* Abandon actors, tear everything down, drain RCU; whatever is still in the pool leaked. */
int ptf_finish(struct engine *e, bool teardown)
{
	if (e->viol)
		return 0;
	actors_abandon(e);
	mm_audit(e);
	kvm_coherence_check(e);
	if (!teardown || e->viol)
		return 0;
	kvm_destroy_all(e);
	for (int pid = 0; pid < MAX_PIDS && !e->viol; pid++) {
		if (!e->procs[pid].exists)
			continue;
		e->procs[pid].exists = false;
		mm_put_users(e, e->procs[pid].mm);
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
			violate(e, V_ENGINE_ASSERT, "after teardown data page pfn 0x%llx (%u x 4K%s) is still allocated, "
				"mapcount %d", (unsigned long long)c->pfn, cpd_nr(c), c->shm ? ", shmem" : "", c->mapcount);
			return 0;
		}
	}
	for (int32_t i = 0; i < e->nblocks; i++) {
		struct block *b = &e->blocks[i];
		if (b->used) {
			violate(e, V_TABLE_LEAK, "after teardown and RCU drain the level-%d table at 0x%llx "
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
		mm_new(e, false, -1, &mm);
		uint64_t pfn = data_alloc(e, 1);
		entry_write(e, e->mms[mm].pgt.root, 2, 0, e->geom.fmt->leaf(2, pfn << 12, true));
		data_lookup(e, pfn)->mapcount = 1;
		data_put(e, pfn);
		break;
	}
	case V_FRAGMENT_CORRUPT: { /* a full page left on the reuse list */
		mm_new(e, false, -1, &mm);
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
