/* py/module.c: the thin CPython binding of the engine (marshalling only; the set-up and errno mapping: py/setup.c). */
#include "py/pyengine.h" /* first: Python.h sets the feature macros */
#include <stdlib.h>
#include <string.h>

static PyObject *stats_dict(struct engine *e)
{
	PyObject *results = PyDict_New();
	if (!results)
		return NULL;
	for (int i = 0; i < 128; i++) {
		if (!e->st.results[i])
			continue;
		PyObject *k = PyLong_FromLong(-i), *v = PyLong_FromUnsignedLongLong(e->st.results[i]);
		if (!k || !v || PyDict_SetItem(results, k, v)) {
			Py_XDECREF(k);
			Py_XDECREF(v);
			Py_DECREF(results);
			return NULL;
		}
		Py_DECREF(k);
		Py_DECREF(v);
	}
	return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:N}",
		"page_table_bytes_peak", (unsigned long long)e->st.pages_peak * 4096,
		"tables_allocated", (unsigned long long)e->st.tables_allocated,
		"tables_freed", (unsigned long long)e->st.tables_freed,
		"rcu_callbacks", (unsigned long long)e->st.rcu_callbacks,
		"data_pages_peak", (unsigned long long)e->st.data_pages_peak,
		"waits", (unsigned long long)e->st.waits,
		"results", results);
}

/* What the violation concerns (struct viol_focus) as a dict of the fields it has (a negative vm, mm or level is
 * none: a stage-2 table's owner is mm -1); None without a violation. */
static PyObject *focus_dict(const struct engine *e)
{
	if (!e->viol)
		Py_RETURN_NONE;
	const struct viol_focus *f = &e->viol_focus;
	static const struct { unsigned bit; const char *name; } fields[] = {
		{ VF_TABLE, "table" }, { VF_ENTRY, "entry" }, { VF_VM, "vm" }, { VF_MM, "mm" }, { VF_GPA, "gpa" },
		{ VF_HVA, "hva" }, { VF_PFN, "pfn" }, { VF_S2_LEVEL, "s2_level" }, { VF_SIZE, "size" },
	};
	const long long sign[] = { 0, 0, f->vm, f->mm, 0, 0, 0, f->s2_level, 0 };
	const uint64_t values[] = { f->table, f->entry, (uint64_t)f->vm, (uint64_t)f->mm, f->gpa, f->hva, f->pfn,
				    (uint64_t)f->s2_level, f->size };
	PyObject *d = PyDict_New();
	for (size_t i = 0; d && i < sizeof(fields) / sizeof(fields[0]); i++) {
		if (!(f->has & fields[i].bit) || sign[i] < 0)
			continue;
		PyObject *v = PyLong_FromUnsignedLongLong(values[i]);
		if (!v || PyDict_SetItemString(d, fields[i].name, v))
			Py_CLEAR(d);
		Py_XDECREF(v);
	}
	return d;
}

static PyObject *events_list(struct engine *e)
{
	PyObject *list = PyList_New((Py_ssize_t)e->nevents);
	if (!list)
		return NULL;
	for (size_t i = 0; i < e->nevents; i++) {
		struct event_rec *r = &e->events[i];
		PyObject *t = Py_BuildValue("(IIKKKK)", r->op, r->type, (unsigned long long)r->a,
					    (unsigned long long)r->b, (unsigned long long)r->c,
					    (unsigned long long)r->d);
		if (!t) {
			Py_DECREF(list);
			return NULL;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, t);
	}
	return list;
}

/* The figures buffer (ptf_figures per executed operation) as a list of {pid: (pt_bytes, (block, ...))}. */
static PyObject *figures_list(const uint64_t *buf, size_t len, size_t nops)
{
	PyObject *list = PyList_New(0);
	size_t i = 0;
	for (size_t op = 0; list && op < nops && i < len; op++) {
		PyObject *d = PyDict_New();
		uint64_t n = buf[i++];
		for (uint64_t k = 0; d && k < n; k++) {
			uint64_t pid = buf[i], bytes = buf[i + 1], nb = buf[i + 2];
			i += 3;
			PyObject *blocks = PyTuple_New((Py_ssize_t)nb);
			for (uint64_t b = 0; blocks && b < nb; b++)
				PyTuple_SET_ITEM(blocks, (Py_ssize_t)b, PyLong_FromUnsignedLongLong(buf[i + b]));
			i += nb;
			PyObject *key = PyLong_FromUnsignedLongLong(pid);
			PyObject *val = blocks ? Py_BuildValue("(KN)", (unsigned long long)bytes, blocks) : NULL;
			if (!key || !val || PyDict_SetItem(d, key, val)) {
				Py_XDECREF(key);
				Py_XDECREF(val);
				Py_CLEAR(d);
				break;
			}
			Py_DECREF(key);
			Py_DECREF(val);
		}
		if (!d || PyList_Append(list, d)) {
			Py_XDECREF(d);
			Py_CLEAR(list);
			break;
		}
		Py_DECREF(d);
	}
	return list;
}

/* run(arch, knobs, config, elfs, ops, steps, teardown[, probes[, figures]]) -> dict
 * ops: packed words, or (fd, offset, nops[, chunk_bytes]) to read them from a file a chunk at a time.
 * figures: None or (lo, hi): after every operation, each live pid's page-table bytes and PMD-mapped
 * blocks in [lo, hi) (the result's "figures"). "violation_op": the packed words of the operation that
 * violated (None when none did, or teardown did), so a streamed trace needs no second read to name it. */
static PyObject *py_run(PyObject *self, PyObject *args)
{
	int steps, teardown;
	PyObject *rest = NULL, *ops_obj, *fig_obj = Py_None, *result = NULL;
	Py_buffer probes = { 0 };
	struct op_source src = { 0 };
	struct elfset elfs = { 0 };
	struct step_loop l = { 0 };
	(void)self;
	struct engine *e = engine_from_args(args, &rest, &elfs);
	if (!e)
		return NULL;
	unsigned long long fig_lo = 0, fig_hi = 0;
	if (!PyArg_ParseTuple(rest, "Opp|z*O", &ops_obj, &steps, &teardown, &probes, &fig_obj))
		goto out;
	l.figures = fig_obj != Py_None;
	if ((l.figures && !PyArg_ParseTuple(fig_obj, "KK", &fig_lo, &fig_hi)) || op_source_open(ops_obj, &src))
		goto out;
	l.fig_lo = fig_lo;
	l.fig_hi = fig_hi;
	e->steps = steps;
	size_t nops = (size_t)src.nops;
	PyObject *op_results = PyBytes_FromStringAndSize(NULL, steps ? (Py_ssize_t)nops : 0);
	if (!op_results)
		goto out;
	l.res = steps ? (int8_t *)PyBytes_AS_STRING(op_results) : NULL;
	step_loop_run(e, &src, &l);
	size_t executed = l.executed;
	if (l.fig_err || (src.err && !e->viol)) {
		if (l.fig_err)
			PyErr_NoMemory();
		else
			op_source_error(&src);
		Py_DECREF(op_results);
		goto out;
	}
	uint64_t digest = ptf_digest(e);
	/* probes: (pid, va) pairs translated after the last operation, before teardown */
	size_t nprobes = probes.buf ? (size_t)probes.len / 16 : 0;
	PyObject *translations = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)nprobes * 8);
	if (!translations) {
		Py_DECREF(op_results);
		goto out;
	}
	uint64_t *tr = (uint64_t *)PyBytes_AS_STRING(translations);
	for (size_t i = 0; i < nprobes; i++)
		tr[i] = ptf_translate(e, ((const uint64_t *)probes.buf)[2 * i], ((const uint64_t *)probes.buf)[2 * i + 1]);
	e->op_index = (uint32_t)nops;
	ptf_finish(e, teardown);
	result = Py_BuildValue("{s:n,s:i,s:I,s:s,s:N,s:K,s:N,s:N,s:N,s:N,s:N,s:N}",
		"executed", (Py_ssize_t)executed,
		"violation", (int)e->viol,
		"op_index", e->viol_op,
		"message", e->viol_msg,
		"focus", focus_dict(e),
		"digest", (unsigned long long)digest,
		"stats", stats_dict(e),
		"op_results", op_results,
		"events", steps ? events_list(e) : (Py_INCREF(Py_None), Py_None),
		"translations", translations,
		"figures", l.figures ? figures_list(l.fig_buf, l.fig_len, executed) : (Py_INCREF(Py_None), Py_None),
		"violation_op", l.viol_in_op ? PyBytes_FromStringAndSize((const char *)l.viol_words, sizeof(l.viol_words))
					     : (Py_INCREF(Py_None), Py_None));
out:
	op_source_close(&src);
	free(l.fig_buf);
	engine_free(e);
	elfset_clear(&elfs);
	Py_XDECREF(rest);
	if (probes.buf)
		PyBuffer_Release(&probes);
	return result;
}

static PyObject *py_tables(PyObject *self, PyObject *noargs)
{
	(void)self; (void)noargs;
	PyObject *ops = PyList_New(OP_NR), *knobs = PyList_New(K_NR), *viols = PyList_New(V_NR);
	PyObject *arches = PyList_New(ARCH_NR), *locks = PyList_New(LC_NR), *rules = PyList_New(V_NR);
	PyObject *events = PyList_New(EV_NR);
	if (!ops || !knobs || !viols || !arches || !locks || !rules || !events)
		goto fail;
	for (int i = 0; i < V_NR; i++)
		PyList_SET_ITEM(rules, i, PyUnicode_FromString(violation_rules[i]));
	for (int i = 0; i < EV_NR; i++)
		PyList_SET_ITEM(events, i, PyUnicode_FromString(event_names[i]));
	for (int i = 0; i < LC_NR; i++)
		PyList_SET_ITEM(locks, i, PyUnicode_FromString(lock_names[i]));
	for (int i = 0; i < OP_NR; i++)
		PyList_SET_ITEM(ops, i, Py_BuildValue("(si)", op_defs[i].name, op_defs[i].nargs));
	for (int i = 0; i < V_NR; i++)
		PyList_SET_ITEM(viols, i, PyUnicode_FromString(violation_names[i]));
	for (int i = 0; i < ARCH_NR; i++)
		PyList_SET_ITEM(arches, i, PyUnicode_FromString(arch_names[i]));
	for (int i = 0; i < K_NR; i++) {
		const struct knob_def *k = &knob_defs[i];
		PyObject *vals = PyList_New(0);
		for (int j = 0; j < 5 && k->values[j]; j++) {
			PyObject *s = PyUnicode_FromString(k->values[j]);
			PyList_Append(vals, s);
			Py_DECREF(s);
		}
		PyList_SET_ITEM(knobs, i, Py_BuildValue("(sN(iii)s)", k->name, vals, k->default_value[0],
							k->default_value[1], k->default_value[2],
							k->description));
	}
	return Py_BuildValue("{s:N,s:N,s:N,s:N,s:N,s:N,s:N}", "ops", ops, "knobs", knobs, "violations", viols,
			     "arches", arches, "locks", locks, "rules", rules, "events", events);
fail:
	Py_XDECREF(ops); Py_XDECREF(knobs); Py_XDECREF(viols); Py_XDECREF(arches); Py_XDECREF(locks);
	Py_XDECREF(rules); Py_XDECREF(events);
	return NULL;
}

/* elf_check(image, machine, big_endian, page_size=4096) -> (accepted, pgste) */
static PyObject *py_elf_check(PyObject *self, PyObject *args)
{
	Py_buffer buf;
	int machine, be;
	unsigned long long page_size = 4096;
	(void)self;
	if (!PyArg_ParseTuple(args, "y*ip|K", &buf, &machine, &be, &page_size))
		return NULL;
	struct elf_info info;
	int ret = elf_parse(buf.buf, (size_t)buf.len, machine, be, &info, page_size);
	PyBuffer_Release(&buf);
	return Py_BuildValue("(OO)", ret == 0 ? Py_True : Py_False, info.pgste ? Py_True : Py_False);
}

static PyObject *levels_list(const struct geom *g)
{
	PyObject *list = PyList_New(g->nlevels);
	if (!list)
		return NULL;
	for (int i = 0; i < g->nlevels; i++)
		PyList_SET_ITEM(list, i, Py_BuildValue("(sIIIOO)", g->lv[i].name, (unsigned)g->lv[i].shift,
			g->lv[i].entries, g->lv[i].table_bytes, g->lv[i].folded ? Py_True : Py_False,
			g->lv[i].leaf_ok ? Py_True : Py_False));
	return list;
}

/* geometry(arch, config) -> ([(name, shift, entries, table_bytes, folded, leaf_ok)], pmd_shift, pud_shift) */
static PyObject *py_geometry(PyObject *self, PyObject *args)
{
	int arch;
	unsigned long long config[5];
	(void)self;
	if (!PyArg_ParseTuple(args, "i(KKKKK)", &arch, &config[0], &config[1], &config[2], &config[3], &config[4]))
		return NULL;
	struct geom g;
	uint64_t cfg[5] = { config[0], config[1], config[2], config[3], config[4] };
	int ret = arch >= 0 && arch < ARCH_NR ? geom_stage1(&g, (enum arch)arch, cfg) : -EINVAL;
	if (ret)
		return raise_errno(ret);
	PyObject *list = levels_list(&g);
	return list ? Py_BuildValue("(Nii)", list, g.pmd_shift, g.pud_shift) : NULL;
}

static PyObject *py_selftest(PyObject *self, PyObject *args)
{
	int which;
	(void)self;
	if (!PyArg_ParseTuple(args, "i", &which))
		return NULL;
	return PyLong_FromLong(ptf_selftest(which));
}

/* pack_ops(ops, codes, elf_columns) -> (bytes, bad_index): list-form operations to packed words.
 * codes maps a name to its opcode; elf_columns maps an opcode to the argument column allowed to be -1.
 * On the first malformed operation it returns (None, index) and the trace layer explains why. */
static PyObject *py_pack_ops(PyObject *self, PyObject *args)
{
	PyObject *ops, *codes, *elf_cols;
	(void)self;
	if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &ops, &PyDict_Type, &codes, &PyDict_Type, &elf_cols))
		return NULL;
	Py_ssize_t n = PyList_GET_SIZE(ops);
	PyObject *out = PyBytes_FromStringAndSize(NULL, n * 8 * (OP_ARGS + 1));
	if (!out)
		return NULL;
	uint64_t *w = (uint64_t *)PyBytes_AS_STRING(out);
	memset(w, 0, (size_t)n * 8 * (OP_ARGS + 1));
	for (Py_ssize_t i = 0; i < n; i++, w += OP_ARGS + 1) {
		PyObject *op = PyList_GET_ITEM(ops, i);
		if (!(PyList_Check(op) || PyTuple_Check(op)) || PySequence_Fast_GET_SIZE(op) < 1)
			goto bad;
		PyObject *name = PySequence_Fast_GET_ITEM(op, 0);
		if (!PyUnicode_Check(name))
			goto bad;
		PyObject *code_obj = PyDict_GetItemWithError(codes, name);
		if (!code_obj) {
			if (PyErr_Occurred())
				PyErr_Clear();
			goto bad;
		}
		long code = PyLong_AsLong(code_obj);
		if (code < 0 || code >= OP_NR || PySequence_Fast_GET_SIZE(op) != op_defs[code].nargs + 1)
			goto bad;
		PyObject *elf_obj = PyDict_GetItem(elf_cols, code_obj);
		long elf_col = elf_obj ? PyLong_AsLong(elf_obj) : -1;
		w[0] = (uint64_t)code;
		for (int j = 1; j <= op_defs[code].nargs; j++) {
			PyObject *a = PySequence_Fast_GET_ITEM(op, j);
			if (!PyLong_CheckExact(a))
				goto bad;
			unsigned long long v = PyLong_AsUnsignedLongLong(a);
			if (v == (unsigned long long)-1 && PyErr_Occurred()) {
				PyErr_Clear();
				if (j != elf_col || PyLong_AsLongLong(a) != -1) {
					PyErr_Clear();
					goto bad;
				}
				v = ~0ull;
			}
			w[j] = v;
		}
		continue;
bad:
		Py_DECREF(out);
		return Py_BuildValue("(On)", Py_None, i);
	}
	return Py_BuildValue("(Nn)", out, (Py_ssize_t)-1);
}

/* geometry2(arch, config, ipa_bits) -> (levels, start_level, pgd_pages) for KVM stage 2 / TDP */
static PyObject *py_geometry2(PyObject *self, PyObject *args)
{
	int arch;
	unsigned ipa;
	unsigned long long config[5];
	(void)self;
	if (!PyArg_ParseTuple(args, "i(KKKKK)I", &arch, &config[0], &config[1], &config[2], &config[3], &config[4], &ipa))
		return NULL;
	struct geom g;
	int start, pages;
	uint64_t cfg[5] = { config[0], config[1], config[2], config[3], config[4] };
	int ret = arch >= 0 && arch < ARCH_NR ? geom_stage2(&g, (enum arch)arch, cfg, ipa, &start, &pages) : -EINVAL;
	if (ret)
		return raise_errno(ret);
	PyObject *list = levels_list(&g);
	return list ? Py_BuildValue("(Nii)", list, start, pages) : NULL;
}

PyObject *py_dump(PyObject *self, PyObject *args); /* dump.c */
PyObject *py_check_packed(PyObject *self, PyObject *args); /* stream.c */
PyObject *py_decode_ops(PyObject *self, PyObject *args);
static PyMethodDef methods[] = {
	{ "check_packed", py_check_packed, METH_VARARGS,
	  "check_packed(ops, limits, special, nelfs) -> index of the first operation out of range, or -1" },
	{ "decode_ops", py_decode_ops, METH_VARARGS,
	  "decode_ops(data, out, row, count, elf_cols) -> (decoded, used, bad): list-form msgpack to packed rows" },
	{ "geometry2", py_geometry2, METH_VARARGS, "geometry2(arch, config, ipa_bits) -> (levels, start, pgd_pages)" },
	{ "pack_ops", py_pack_ops, METH_VARARGS, "pack_ops(ops, codes, elf_columns) -> (bytes, bad_index)" },
	{ "selftest", py_selftest, METH_VARARGS, "selftest(kind) -> the violation a corrupted state produces" },
	{ "geometry", py_geometry, METH_VARARGS, "geometry(arch, config) -> levels" },
	{ "run", py_run, METH_VARARGS,
	  "run(arch, knobs, config, elfs, ops | (fd, offset, nops[, chunk]), steps, teardown[, probes[, figures]]) -> dict" },
	{ "dump", py_dump, METH_VARARGS, "dump(arch, knobs, config, elfs, ops) -> the state after ops, no teardown" },
	{ "tables", py_tables, METH_NOARGS, "The engine's op, knob, violation and arch tables." },
	{ "elf_check", py_elf_check, METH_VARARGS, "elf_check(image, machine, big_endian, page_size=4096) -> (accepted, pgste)" },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef moduledef = {
	PyModuleDef_HEAD_INIT, "ptfuzz._engine", "The ptfuzz page-table engine.", -1, methods,
	NULL, NULL, NULL, NULL,
};

int pyengine_add_types(PyObject *m); /* pyengine.c: Engine, Checker */
int level_add_types(PyObject *m); /* level.c: LevelWorker, shard_of */

PyMODINIT_FUNC PyInit__engine(void)
{
	PyObject *m = PyModule_Create(&moduledef);
	if (m && (pyengine_add_types(m) < 0 || level_add_types(m) < 0))
		Py_CLEAR(m);
	return m;
}
