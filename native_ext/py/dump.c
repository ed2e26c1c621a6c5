/* py/dump.c: the engine's state after some operations, as plain Python data, for `ptfuzz show`.
 *
 * dump(arch, knobs, config, elfs, ops) runs the operations exactly as run() does (stopping at the first
 * violation), with no teardown and no end-of-trace checks, and returns the page-table trees of every mm
 * and every VM (gmap, stage 2, TDP), read with the one walker (pt_walk) over the geometry data, plus the
 * table pool (fragment halves, PGSTE pages, deposits, table states), pending RCU frees and in-flight
 * actors. Nothing here changes the state it reads. */
#include "py/pyengine.h" /* first: Python.h sets the feature macros */
#include <stdlib.h>
#include <string.h>

PyObject *py_dump(PyObject *self, PyObject *args);

/* Builders that steal their arguments: a NULL anywhere makes the whole result NULL. */
static int set_item(PyObject *d, const char *key, PyObject *v)
{
	if (!v)
		return -1;
	int r = PyDict_SetItemString(d, key, v);
	Py_DECREF(v);
	return r;
}

static int append(PyObject *list, PyObject *v)
{
	if (!v)
		return -1;
	int r = PyList_Append(list, v);
	Py_DECREF(v);
	return r;
}

static PyObject *u64(uint64_t v) { return PyLong_FromUnsignedLongLong(v); }
static PyObject *boolean(bool v) { return PyBool_FromLong(v); }

static PyObject *geom_list(const struct geom *g)
{
	PyObject *list = PyList_New(0);
	for (int i = 0; list && i < g->nlevels; i++)
		if (append(list, Py_BuildValue("(sIIIOO)", g->lv[i].name, (unsigned)g->lv[i].shift, g->lv[i].entries,
					       g->lv[i].table_bytes, g->lv[i].folded ? Py_True : Py_False,
					       g->lv[i].leaf_ok ? Py_True : Py_False)))
			Py_CLEAR(list);
	return list;
}

/* ---- one tree: a table per record, its non-empty entries in index order ---- */

struct tree_arg {
	PyObject *tables; /* list of table dicts, parents before children */
	PyObject *by_addr; /* phys -> the table's entry list */
	int err;
};

static int new_table(struct tree_arg *a, uint64_t phys, int level, PyObject *parent, uint64_t va)
{
	PyObject *t = PyDict_New(), *entries = PyList_New(0), *key = u64(phys);
	int r = -1;
	if (t && entries && key && !set_item(t, "addr", u64(phys)) && !set_item(t, "level", PyLong_FromLong(level)) &&
	    !set_item(t, "va", u64(va)) && !PyDict_SetItemString(t, "parent", parent) &&
	    !PyDict_SetItemString(t, "entries", entries) && !PyDict_SetItem(a->by_addr, key, entries) &&
	    !PyList_Append(a->tables, t))
		r = 0;
	Py_XDECREF(t);
	Py_XDECREF(entries);
	Py_XDECREF(key);
	return r;
}

/* WALK_TABLE_PRE and WALK_LEAF over non-empty entries: record the entry, and a table record for its child.
 * Entry tuples: (index, kind, target, va, writable); kind 1 a table (target: its address; at a gmap's last
 * level, the host PTE table it shares), 2 a leaf (target: pfn of its first 4K frame). */
static int tree_visit(struct walk_ctx *ctx, unsigned visit)
{
	struct tree_arg *a = ctx->arg;
	const struct entry_fmt *f = ctx->g->fmt;
	enum entry_kind k = f->kind(ctx->level, ctx->old);
	if (k == E_EMPTY)
		return 0;
	uint64_t target = f->addr(ctx->level, ctx->old);
	PyObject *key = u64(tref_phys(ctx->tbl));
	PyObject *entries = key ? PyDict_GetItemWithError(a->by_addr, key) : NULL;
	Py_XDECREF(key);
	if (!entries || append(entries, Py_BuildValue("(IiKKO)", ctx->idx, (int)k,
			(unsigned long long)(k == E_LEAF ? target >> 12 : target), (unsigned long long)ctx->addr,
			f->writable(ctx->level, ctx->old) ? Py_True : Py_False)))
		goto fail;
	if (visit == WALK_TABLE_PRE) {
		PyObject *parent = Py_BuildValue("(KI)", (unsigned long long)tref_phys(ctx->tbl), ctx->idx);
		int r = parent ? new_table(a, target, child_level(ctx->g, ctx->level), parent, ctx->addr) : -1;
		Py_XDECREF(parent);
		if (r)
			goto fail;
	}
	return 0;
fail:
	a->err = -1;
	return 1;
}

/* The tree under pgt as a list of table dicts (empty when the root is gone). */
static PyObject *tree(struct engine *e, struct pgtable *pgt, const struct geom *g)
{
	struct tree_arg a = { PyList_New(0), PyDict_New(), 0 };
	if (!a.tables || !a.by_addr)
		goto fail;
	if (pgt->root.blk < 0) {
		Py_DECREF(a.by_addr);
		return a.tables;
	}
	if (new_table(&a, tref_phys(pgt->root), pgt->top, Py_None, 0))
		goto fail;
	struct walker w = { tree_visit, &a, WALK_LEAF | WALK_TABLE_PRE | WALK_SKIP_EMPTY, 0 };
	pt_walk(e, pgt, g, 0, ~0ull, &w);
	if (a.err)
		goto fail;
	Py_DECREF(a.by_addr);
	return a.tables;
fail:
	Py_XDECREF(a.tables);
	Py_XDECREF(a.by_addr);
	return NULL;
}

/* ---- the rest of the state ---- */

static PyObject *mm_dict(struct engine *e, int mm)
{
	struct mm *m = &e->mms[mm];
	PyObject *d = PyDict_New(), *vmas = PyList_New(0), *pids = PyList_New(0);
	if (!d || !vmas || !pids)
		goto fail;
	for (int i = 0; i < m->nvma; i++)
		if (append(vmas, Py_BuildValue("(KKIIiK)", (unsigned long long)m->vmas[i].start,
					       (unsigned long long)m->vmas[i].end, m->vmas[i].flags, m->vmas[i].anon,
					       (int)m->vmas[i].shm - 1, (unsigned long long)m->vmas[i].pgoff)))
			goto fail;
	for (int pid = 0; pid < MAX_PIDS; pid++)
		if (e->procs[pid].exists && e->procs[pid].mm == mm && append(pids, PyLong_FromLong(pid)))
			goto fail;
	if (set_item(d, "top", PyLong_FromLong(m->pgt.top)) ||
	    set_item(d, "root", m->pgt.root.blk >= 0 ? u64(tref_phys(m->pgt.root)) : (Py_INCREF(Py_None), Py_None)) ||
	    set_item(d, "asce_limit", u64(m->asce_limit)) || set_item(d, "alloc_pgste", boolean(m->alloc_pgste)) ||
	    set_item(d, "has_pgste", boolean(m->has_pgste)) || set_item(d, "dead", boolean(m->dead)) ||
	    set_item(d, "users", PyLong_FromLong(m->users)) || set_item(d, "count", PyLong_FromLong(m->count)) ||
	    set_item(d, "pt_bytes", u64(m->pt_bytes)) || set_item(d, "vmas", vmas) || set_item(d, "pids", pids) ||
	    set_item(d, "tables", tree(e, &m->pgt, &e->geom)))
		goto fail_d;
	return d;
fail:
	Py_XDECREF(vmas);
	Py_XDECREF(pids);
fail_d:
	Py_XDECREF(d);
	return NULL;
}

static PyObject *vm_dict(struct engine *e, struct vm *v)
{
	PyObject *d = PyDict_New(), *slots = PyList_New(0), *links = PyList_New(0);
	if (!d || !slots || !links)
		goto fail;
	for (int i = 0; i < MAX_SLOTS; i++)
		if (v->slots[i].used && append(slots, Py_BuildValue("(iKKK)", i, (unsigned long long)v->slots[i].gpa,
				(unsigned long long)v->slots[i].hva, (unsigned long long)v->slots[i].len)))
			goto fail;
	for (int i = 0; i < v->nlinks; i++)
		if (append(links, Py_BuildValue("(KK)", (unsigned long long)v->links[i].gaddr,
						(unsigned long long)v->links[i].vmaddr)))
			goto fail;
	if (set_item(d, "mm", PyLong_FromLong(v->mm)) || set_item(d, "top", PyLong_FromLong(v->s2.top)) ||
	    set_item(d, "root", v->s2.root.blk >= 0 ? u64(tref_phys(v->s2.root)) : (Py_INCREF(Py_None), Py_None)) ||
	    set_item(d, "root_freed", boolean(v->root_freed)) ||
	    set_item(d, "start_level", PyLong_FromLong(e->arch == ARCH_S390 ? v->s2.top : v->start_level)) ||
	    set_item(d, "pgd_pages", PyLong_FromLong(e->arch == ARCH_S390 ? 1 : v->pgd_pages)) ||
	    set_item(d, "invalidate_seq", u64(v->invalidate_seq)) ||
	    set_item(d, "invalidate_in_progress", PyLong_FromLong(v->invalidate_in_progress)) ||
	    set_item(d, "invalidate_range", Py_BuildValue("(KK)", (unsigned long long)v->invalidate_range_start,
						      (unsigned long long)v->invalidate_range_end)) ||
	    set_item(d, "mn_active_invalidate_count", PyLong_FromLong(v->mn_active_invalidate_count)) ||
	    set_item(d, "faults_in_flight", PyLong_FromLong(v->faults_in_flight)) ||
	    set_item(d, "geometry", geom_list(&v->geom)) || set_item(d, "slots", slots) || set_item(d, "links", links) ||
	    set_item(d, "tables", tree(e, &v->s2, &v->geom)))
		goto fail_d;
	return d;
fail:
	Py_XDECREF(slots);
	Py_XDECREF(links);
fail_d:
	Py_XDECREF(d);
	return NULL;
}

/* Every block in use: (addr, pages, frag, pgste, active, listed, halves, deposits); a half is
 * (state H_*, level, owner mm or -1, table state L_*, non-empty entries); deposits: PTE tables in this PMD
 * table's pmd_huge_pte list, newest first. */
static PyObject *blocks_list(struct engine *e)
{
	PyObject *list = PyList_New(0);
	for (int32_t i = 0; list && i < e->nblocks; i++) {
		struct block *b = &e->blocks[i];
		if (!b->used)
			continue;
		PyObject *deps = PyList_New(0);
		int n = 0;
		for (int32_t d = b->dep_head - 1; deps && d >= 0 && n <= e->ndeps; d = e->deps[d].next, n++)
			if (append(deps, u64(tref_phys(e->deps[d].t))))
				Py_CLEAR(deps);
		PyObject *h[2];
		for (int k = 0; k < 2; k++)
			h[k] = Py_BuildValue("(iiiiI)", b->half[k], b->level[k], b->mm[k], b->linked[k], b->nonempty[k]);
		if (!deps || !h[0] || !h[1] ||
		    append(list, Py_BuildValue("{s:K,s:i,s:O,s:O,s:O,s:O,s:(NN),s:N}",
				"addr", (unsigned long long)tref_phys((struct tref){ i, 0, 0 }), "pages", b->pages,
				"frag", b->frag ? Py_True : Py_False, "pgste", b->pgste ? Py_True : Py_False,
				"active", b->active ? Py_True : Py_False, "listed", b->listed ? Py_True : Py_False,
				"halves", h[0], h[1], "deposits", deps))) {
			Py_XDECREF(deps);
			Py_CLEAR(list);
		}
	}
	return list;
}

/* In-flight actors with the table pointers they hold, and whether those are still valid. */
static PyObject *cpus_list(struct engine *e)
{
	static const char *const kinds[] = { "none", "walk", "rmap", "guest_fault", "inval", "frag", "collapse",
					     "mremap", "unshare" };
	PyObject *list = PyList_New(0);
	for (int i = 0; list && i <= MAX_CPUS; i++) {
		struct cpu *c = &e->cpus[i];
		if (c->actor == A_NONE && !c->rcu_nest)
			continue;
		PyObject *d = NULL;
		switch (c->actor) {
		case A_WALK:
			d = Py_BuildValue("{s:i,s:s,s:i,s:i,s:K,s:i,s:K,s:O,s:O,s:K}", "cpu", i, "actor", kinds[c->actor],
					  "rcu_nest", c->rcu_nest, "mm", c->mm, "addr", (unsigned long long)c->addr,
					  "level", c->level, "table", (unsigned long long)tref_phys(c->tbl),
					  "table_alive", tref_alive(e, c->tbl) ? Py_True : Py_False,
					  "done", c->walk_done ? Py_True : Py_False, "pinned", (unsigned long long)c->pfn);
			break;
		case A_RMAP:
			d = Py_BuildValue("{s:i,s:s,s:i,s:i,s:K,s:K,s:O,s:K,s:I,s:O}", "cpu", i, "actor", kinds[c->actor],
					  "rcu_nest", c->rcu_nest, "mm", c->mm, "addr", (unsigned long long)c->addr,
					  "table", (unsigned long long)tref_phys(c->tbl),
					  "table_alive", tref_alive(e, c->tbl) ? Py_True : Py_False,
					  "pmd_table", (unsigned long long)tref_phys(c->pmd_tbl), "pmd_index", c->pmd_idx,
					  "pmd_table_alive", tref_alive(e, c->pmd_tbl) ? Py_True : Py_False);
			break;
		case A_GFAULT:
			d = Py_BuildValue("{s:i,s:s,s:i,s:i,s:i,s:K,s:K,s:K,s:K,s:O,s:K,s:O}", "cpu", i,
					  "actor", kinds[c->actor], "rcu_nest", c->rcu_nest, "mm", c->mm, "vm", c->vm,
					  "gpa", (unsigned long long)c->gpa, "hva", (unsigned long long)c->hva,
					  "size", (unsigned long long)c->size, "pfn", (unsigned long long)c->pfn,
					  "write", c->write ? Py_True : Py_False,
					  "s2_root", (unsigned long long)(e->arch == ARCH_S390 ? 0 : tref_phys(c->s2_root)),
					  "s2_root_alive", e->arch == ARCH_S390 || tref_alive(e, c->s2_root) ? Py_True : Py_False);
			break;
		case A_INVAL: { /* held: the VMs whose invalidate_range_end calls wait for inval_end */
			PyObject *vms = PyList_New(0);
			for (int vi = 0; vms && vi < MAX_VMS; vi++)
				if (c->inval_active[vi] && append(vms, Py_BuildValue("(iII)", vi, c->inval_began[vi],
										     c->inval_active[vi])))
					Py_CLEAR(vms);
			d = vms ? Py_BuildValue("{s:i,s:s,s:i,s:O,s:N}", "cpu", i, "actor", kinds[c->actor], "rcu_nest",
						c->rcu_nest, "held", c->inval_held ? Py_True : Py_False, "pending_ends", vms)
				: NULL;
			break;
		}
		case A_FRAG: /* s390 page_table_free held after its atomic_xor_bits (Z4) */
			d = Py_BuildValue("{s:i,s:s,s:i,s:O,s:i,s:K}", "cpu", i, "actor", kinds[c->actor], "rcu_nest",
					  c->rcu_nest, "held", c->walk_done ? Py_True : Py_False, "mm", c->mm,
					  "table", (unsigned long long)(c->walk_done ? tref_phys(c->tbl) : 0));
			break;
		case A_MREMAP: /* move_vma held before its old range's unmap (issue 20) */
			d = Py_BuildValue("{s:i,s:s,s:i,s:O,s:i,s:K,s:K}", "cpu", i, "actor", kinds[c->actor], "rcu_nest",
					  c->rcu_nest, "held", c->walk_done ? Py_True : Py_False, "mm", c->mm,
					  "addr", (unsigned long long)c->addr, "len", (unsigned long long)c->size);
			break;
		case A_COLLAPSE: /* collapse_huge_page held before its copy (Z5) */
			d = Py_BuildValue("{s:i,s:s,s:i,s:O,s:i,s:K}", "cpu", i, "actor", kinds[c->actor], "rcu_nest",
					  c->rcu_nest, "held", c->walk_done ? Py_True : Py_False, "mm", c->mm,
					  "addr", (unsigned long long)c->addr);
			break;
		case A_UNSHARE: /* a munmap held after its hugetlb unshare, before free_pgtables (issue 20) */
			d = Py_BuildValue("{s:i,s:s,s:i,s:O,s:i,s:K,s:K}", "cpu", i, "actor", kinds[c->actor], "rcu_nest",
					  c->rcu_nest, "held", c->walk_done ? Py_True : Py_False, "mm", c->mm,
					  "addr", (unsigned long long)c->addr, "end", (unsigned long long)c->hva);
			break;
		default:
			d = Py_BuildValue("{s:i,s:s,s:i}", "cpu", i, "actor", kinds[0], "rcu_nest", c->rcu_nest);
		}
		if (append(list, d))
			Py_CLEAR(list);
	}
	return list;
}

static PyObject *rcu_list(struct engine *e)
{
	PyObject *list = PyList_New(0);
	for (size_t i = 0; list && i < e->ncbs; i++) {
		struct rcu_cb *cb = &e->cbs[i];
		if (append(list, Py_BuildValue("(Ks)", (unsigned long long)tref_phys((struct tref){ cb->blk, cb->half, 0 }),
					       cb->kind == CB_FRAG_PENDING ? "half" : "table")))
			Py_CLEAR(list);
	}
	return list;
}

/* Every shmem object's page cache: (obj, [(block index, head pfn of a PMD-size folio or 0, 4K pages cached)]). */
static PyObject *shm_list(struct engine *e)
{
	PyObject *list = PyList_New(0);
	for (int obj = 0; list && obj < NR_FILES; obj++) { /* hugetlbfs files: MAX_SHM + file */
		const struct shm_obj *o = &e->shm[obj];
		if (!o->used)
			continue;
		PyObject *blks = PyList_New(0);
		for (uint32_t i = 0; blks && i < o->nblk; i++) {
			const struct shm_blk *b = &o->blk[i];
			unsigned cached = 0;
			for (uint32_t j = 0; !b->huge && b->pfn && j < e->shm_pages; j++)
				cached += b->pfn[j] != 0;
			if (append(blks, Py_BuildValue("(KKI)", (unsigned long long)b->index, (unsigned long long)b->huge,
						       b->huge ? e->shm_pages : cached)))
				Py_CLEAR(blks);
		}
		if (!blks || append(list, Py_BuildValue("(iN)", obj, blks)))
			Py_CLEAR(list);
	}
	return list;
}

static PyObject *state_dict(struct engine *e)
{
	PyObject *d = PyDict_New(), *procs = PyDict_New(), *mms = PyDict_New(), *vms = PyDict_New();
	if (!d || !procs || !mms || !vms)
		goto fail;
	if (set_item(d, "procs", procs) || set_item(d, "mms", mms) || set_item(d, "vms", vms))
		goto fail_d; /* d owns them now, or they are gone */
	for (int pid = 0; pid < MAX_PIDS; pid++) {
		if (!e->procs[pid].exists)
			continue;
		PyObject *k = PyLong_FromLong(pid), *v = Py_BuildValue("{s:i,s:O}", "mm", e->procs[pid].mm,
			"tif_pgste", e->procs[pid].tif_pgste ? Py_True : Py_False);
		int r = k && v ? PyDict_SetItem(procs, k, v) : -1;
		Py_XDECREF(k);
		Py_XDECREF(v);
		if (r)
			goto fail_d;
	}
	for (int mm = 0; mm < MAX_MMS; mm++) {
		if (!e->mms[mm].used)
			continue;
		PyObject *k = PyLong_FromLong(mm), *v = mm_dict(e, mm);
		int r = k && v ? PyDict_SetItem(mms, k, v) : -1;
		Py_XDECREF(k);
		Py_XDECREF(v);
		if (r)
			goto fail_d;
	}
	for (int vi = 0; vi < MAX_VMS; vi++) {
		if (!e->vms[vi].used)
			continue;
		PyObject *k = PyLong_FromLong(vi), *v = vm_dict(e, &e->vms[vi]);
		int r = k && v ? PyDict_SetItem(vms, k, v) : -1;
		Py_XDECREF(k);
		Py_XDECREF(v);
		if (r)
			goto fail_d;
	}
	if (set_item(d, "geometry", geom_list(&e->geom)) || set_item(d, "pmd_level", PyLong_FromLong(e->pmd_lvl)) ||
	    set_item(d, "page_size", u64(e->geom.page_size)) || set_item(d, "blocks", blocks_list(e)) ||
	    set_item(d, "rcu", rcu_list(e)) || set_item(d, "cpus", cpus_list(e)) || set_item(d, "shm", shm_list(e)) ||
	    set_item(d, "sysctl_allocate_pgste", boolean(e->sysctl_pgste)))
		goto fail_d;
	return d;
fail:
	Py_XDECREF(procs);
	Py_XDECREF(mms);
	Py_XDECREF(vms);
fail_d:
	Py_XDECREF(d);
	return NULL;
}

/* dump(arch, knobs, config, elfs, ops) -> dict: run() without teardown, then the state. */
PyObject *py_dump(PyObject *self, PyObject *args)
{
	PyObject *rest = NULL, *ops_obj, *result = NULL;
	struct op_source src = { 0 };
	struct elfset elfs = { 0 };
	(void)self;
	struct engine *e = engine_from_args(args, &rest, &elfs);
	if (!e)
		return NULL;
	if (!PyArg_ParseTuple(rest, "O", &ops_obj) || op_source_open(ops_obj, &src))
		goto out;
	PyObject *op_results = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)src.nops);
	if (!op_results)
		goto out;
	struct step_loop l = { .res = (int8_t *)PyBytes_AS_STRING(op_results) };
	step_loop_run(e, &src, &l);
	size_t executed = l.executed;
	if (src.err && !e->viol) {
		op_source_error(&src);
		Py_DECREF(op_results);
		goto out;
	}
	if (_PyBytes_Resize(&op_results, (Py_ssize_t)executed))
		goto out; /* it freed op_results */
	/* The violation the operations produced; a walk of a corrupted state may record one of its own. */
	enum violation viol = e->viol;
	uint32_t viol_op = e->viol_op;
	char msg[sizeof(e->viol_msg)];
	memcpy(msg, e->viol_msg, sizeof(msg));
	PyObject *state = state_dict(e);
	if (!state) {
		Py_DECREF(op_results);
		goto out;
	}
	result = Py_BuildValue("{s:n,s:i,s:I,s:s,s:N,s:N,s:s}", "executed", (Py_ssize_t)executed,
			       "violation", (int)viol, "op_index", viol_op, "message", msg, "op_results", op_results,
			       "state", state, "walk_error", !viol && e->viol ? e->viol_msg : "");
out:
	op_source_close(&src);
	engine_free(e);
	elfset_clear(&elfs);
	Py_XDECREF(rest);
	return result;
}
