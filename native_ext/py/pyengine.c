/* py/pyengine.c: the persistent engine (Engine: step, digest, violation, clone, restore, finish), the
 * bounded model checker (Checker) and the trace generator (Generator) as Python types; marshalling only,
 * the work is in snap.c, digest.c, check.c and gen.c. */
#include "py/pyengine.h" /* first: Python.h sets the feature macros */
#include <stdlib.h>
#include <string.h>
#include "search/check.h"
#include "search/gen.h"
#include "search/lvl.h"

/* ---- Engine ---- */

typedef struct {
	PyObject_HEAD
	struct engine *e;
	struct elfset elfs;
} EngineObject;

static PyTypeObject EngineType;

static int Engine_init(EngineObject *self, PyObject *args, PyObject *kw)
{
	int arch;
	PyObject *knobs_obj, *config_obj, *elfs_obj;
	static char *names[] = { "arch", "knobs", "config", "elfs", NULL };
	if (!PyArg_ParseTupleAndKeywords(args, kw, "iO!O!O!", names, &arch, &PyTuple_Type, &knobs_obj, &PyTuple_Type,
					 &config_obj, &PyTuple_Type, &elfs_obj))
		return -1;
	int knobs[K_NR];
	uint64_t config[CONFIG_NR];
	if (engine_args(arch, knobs_obj, config_obj, knobs, config))
		return -1;
	if (self->e) { /* __init__ called again */
		engine_free(self->e);
		self->e = NULL;
		elfset_clear(&self->elfs);
	}
	if (elfset_from(&self->elfs, elfs_obj))
		return -1;
	self->e = engine_create(arch, knobs, config, &self->elfs);
	return self->e ? 0 : -1;
}

static void Engine_dealloc(EngineObject *self)
{
	engine_free(self->e);
	elfset_clear(&self->elfs);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ready(EngineObject *self)
{
	if (!self->e) {
		PyErr_SetString(PyExc_RuntimeError, "Engine not initialised");
		return -1;
	}
	return 0;
}

/* An operation (opcode, arg...) with at most 5 arguments (missing ones are 0) into op: 0, or -1 with an exception. */
static int parse_op(PyObject *arg, uint64_t op[OP_ARGS + 1])
{
	PyObject *seq = PySequence_Fast(arg, "an operation is a sequence (opcode, args...)");
	if (!seq)
		return -1;
	Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
	memset(op, 0, (OP_ARGS + 1) * sizeof(uint64_t));
	if (n < 1 || n > OP_ARGS + 1) {
		Py_DECREF(seq);
		PyErr_SetString(PyExc_ValueError, "an operation is an opcode and at most 5 arguments");
		return -1;
	}
	for (Py_ssize_t i = 0; i < n; i++) {
		PyObject *v = PySequence_Fast_GET_ITEM(seq, i);
		long long s = PyLong_AsLongLong(v);
		if (s == -1 && PyErr_Occurred()) {
			PyErr_Clear();
			s = (long long)PyLong_AsUnsignedLongLong(v);
			if (PyErr_Occurred()) {
				Py_DECREF(seq);
				return -1;
			}
		}
		op[i] = (uint64_t)s; /* -1 (elf) wraps to ~0, as the packed trace form has it */
	}
	Py_DECREF(seq);
	return 0;
}

/* step(op) -> result */
static PyObject *Engine_step(EngineObject *self, PyObject *arg)
{
	uint64_t op[OP_ARGS + 1];
	if (ready(self) || parse_op(arg, op))
		return NULL;
	if (self->e->viol) {
		PyErr_SetString(PyExc_RuntimeError, "the trace stopped at its first violation");
		return NULL;
	}
	return PyLong_FromLong(ptf_step(self->e, op));
}

/* noop(op) -> bool: ptf_noop, what the search skips without a step (tests) */
static PyObject *Engine_noop(EngineObject *self, PyObject *arg)
{
	uint64_t op[OP_ARGS + 1];
	if (ready(self) || parse_op(arg, op))
		return NULL;
	return PyBool_FromLong(ptf_noop(self->e, op));
}

/* digest(groups=None) -> int; groups: ((pid_lo, pid_hi), (cpu_lo, cpu_hi), (vm_lo, vm_hi)) interchangeable */
static int parse_groups(PyObject *obj, int groups[3][2])
{
	if (!PyArg_ParseTuple(obj, "(ii)(ii)(ii)", &groups[0][0], &groups[0][1], &groups[1][0], &groups[1][1],
			      &groups[2][0], &groups[2][1]))
		return -1;
	static const int limit[3] = { MAX_PIDS, MAX_CPUS, MAX_VMS };
	for (int i = 0; i < 3; i++)
		if (groups[i][0] < 0 || groups[i][1] > limit[i] || groups[i][0] > groups[i][1]) {
			PyErr_SetString(PyExc_ValueError, "symmetry group out of range");
			return -1;
		}
	return 0;
}

static PyObject *Engine_digest(EngineObject *self, PyObject *args)
{
	PyObject *g = Py_None;
	if (ready(self) || !PyArg_ParseTuple(args, "|O", &g))
		return NULL;
	int groups[3][2];
	if (g != Py_None && parse_groups(g, groups))
		return NULL;
	struct digest_scratch s = { 0 };
	uint64_t d;
	int ret = ptf_digest_sym(self->e, &s, g != Py_None ? (const int (*)[2])groups : NULL, &d);
	digest_scratch_free(&s);
	if (ret)
		return raise_errno(ret);
	return PyLong_FromUnsignedLongLong(d);
}

/* violation() -> None or (kind index, op index, message) */
static PyObject *Engine_violation(EngineObject *self, PyObject *noargs)
{
	(void)noargs;
	if (ready(self))
		return NULL;
	if (!self->e->viol)
		Py_RETURN_NONE;
	return Py_BuildValue("(iIs)", (int)self->e->viol, self->e->viol_op, self->e->viol_msg);
}

/* por_apart(after, p1, p2) -> bool: --por's condition (search/lvl.c lvl_por_apart) for an operation of p1 tried
 * from this state and one of p2 that took it to after (tests) */
static PyObject *Engine_por_apart(EngineObject *self, PyObject *args)
{
	PyObject *u;
	unsigned long long p1, p2;
	if (ready(self) || !PyArg_ParseTuple(args, "O!KK", &EngineType, &u, &p1, &p2) || ready((EngineObject *)u))
		return NULL;
	return PyBool_FromLong(lvl_por_apart(self->e, ((EngineObject *)u)->e, p1, p2));
}

static PyObject *Engine_clone(EngineObject *self, PyObject *noargs)
{
	(void)noargs;
	if (ready(self))
		return NULL;
	EngineObject *c = (EngineObject *)EngineType.tp_alloc(&EngineType, 0);
	if (!c)
		return NULL;
	if (elfset_from(&c->elfs, self->elfs.tuple) || !(c->e = calloc(1, sizeof(*c->e)))) {
		if (!PyErr_Occurred())
			PyErr_NoMemory();
		Py_DECREF(c);
		return NULL;
	}
	int ret = ptf_copy(c->e, self->e);
	elfset_bind(c->e, &c->elfs);
	if (ret) {
		Py_DECREF(c);
		return raise_errno(ret);
	}
	return (PyObject *)c;
}

/* The other engine a two-engine method takes, or NULL with TypeError (also when self is not ready). */
static EngineObject *other_engine(EngineObject *self, PyObject *other, const char *method)
{
	if (ready(self))
		return NULL;
	if (!PyObject_TypeCheck(other, &EngineType) || !((EngineObject *)other)->e) {
		PyErr_Format(PyExc_TypeError, "%s takes an Engine", method);
		return NULL;
	}
	return (EngineObject *)other;
}

/* restore(other): this engine becomes a copy of other (a snapshot taken with clone) */
static PyObject *Engine_restore(EngineObject *self, PyObject *other)
{
	EngineObject *o = other_engine(self, other, "restore");
	if (!o)
		return NULL;
	if (o == self)
		Py_RETURN_NONE;
	struct elfset fresh = { 0 };
	if (elfset_from(&fresh, o->elfs.tuple)) {
		elfset_clear(&fresh);
		return NULL;
	}
	int ret = ptf_copy(self->e, o->e);
	elfset_clear(&self->elfs);
	self->elfs = fresh;
	elfset_bind(self->e, &self->elfs);
	if (ret)
		return raise_errno(ret);
	Py_RETURN_NONE;
}

/* finish(teardown=True): the end-of-trace checks (and teardown); the verdict is then in violation() */
static PyObject *Engine_finish(EngineObject *self, PyObject *args)
{
	int teardown = 1;
	if (ready(self) || !PyArg_ParseTuple(args, "|p", &teardown))
		return NULL;
	ptf_finish(self->e, teardown);
	Py_RETURN_NONE;
}

/* same_tables(other) -> bool: both pools hold the same blocks, bookkeeping and words (tests: a restore is exact) */
static PyObject *Engine_same_tables(EngineObject *self, PyObject *other)
{
	EngineObject *o = other_engine(self, other, "same_tables");
	if (!o)
		return NULL;
	const struct engine *a = self->e, *b = o->e;
	if (a->nblocks != b->nblocks || a->free_blocks != b->free_blocks)
		Py_RETURN_FALSE;
	for (int32_t i = 0; i < a->nblocks; i++) {
		struct block x = a->blocks[i], y = b->blocks[i];
		if (!x.used && !y.used)
			continue;
		if (!x.mem || !y.mem || x.pages != y.pages || memcmp(x.mem, y.mem, (size_t)x.pages * 4096))
			Py_RETURN_FALSE;
		x.mem = y.mem = NULL;
		if (memcmp(&x, &y, sizeof(x)))
			Py_RETURN_FALSE;
	}
	Py_RETURN_TRUE;
}

static PyObject *Engine_get_op_index(EngineObject *self, void *closure)
{
	(void)closure;
	if (ready(self))
		return NULL;
	return PyLong_FromUnsignedLong(self->e->op_index);
}

static PyMethodDef Engine_methods[] = {
	{ "step", (PyCFunction)Engine_step, METH_O, "step((opcode, args...)) -> result (0 or -errno)" },
	{ "digest", (PyCFunction)Engine_digest, METH_VARARGS, "digest(groups=None) -> the canonical state digest" },
	{ "violation", (PyCFunction)Engine_violation, METH_NOARGS, "violation() -> None or (kind, op_index, message)" },
	{ "clone", (PyCFunction)Engine_clone, METH_NOARGS, "clone() -> an independent copy of the whole state" },
	{ "restore", (PyCFunction)Engine_restore, METH_O, "restore(other): become a copy of other" },
	{ "finish", (PyCFunction)Engine_finish, METH_VARARGS, "finish(teardown=True): end-of-trace checks" },
	{ "same_tables", (PyCFunction)Engine_same_tables, METH_O, "same_tables(other) -> bool (tests)" },
	{ "noop", (PyCFunction)Engine_noop, METH_O, "noop((opcode, args...)) -> the step would change nothing (tests)" },
	{ "por_apart", (PyCFunction)Engine_por_apart, METH_VARARGS,
	  "por_apart(after, p1, p2) -> --por's condition for p1's operation and p2's, which led to after (tests)" },
	{ NULL, NULL, 0, NULL },
};

static PyGetSetDef Engine_getset[] = {
	{ "op_index", (getter)Engine_get_op_index, NULL, "operations executed so far", NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

static PyTypeObject EngineType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "ptfuzz._engine.Engine",
	.tp_basicsize = sizeof(EngineObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Engine(arch, knobs, config, elfs): one model state that steps, digests, clones and restores.",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Engine_init,
	.tp_dealloc = (destructor)Engine_dealloc,
	.tp_methods = Engine_methods,
	.tp_getset = Engine_getset,
};

/* ---- Checker ---- */

typedef struct {
	PyObject_HEAD
	struct checker k;
	struct elfset elfs;
	uint64_t *alpha;
	bool ready;
} CheckerObject;

/* Checker(arch, knobs, config, elfs, alphabet, depth, groups=None, finish=True, max_states=0)
 * alphabet: packed operations (bytes, 48 per operation) */
static int Checker_init(CheckerObject *self, PyObject *args, PyObject *kw)
{
	int arch, depth, finish = 1;
	unsigned long long max_states = 0;
	PyObject *knobs_obj, *config_obj, *elfs_obj, *groups = Py_None;
	Py_buffer alpha;
	static char *names[] = { "arch", "knobs", "config", "elfs", "alphabet", "depth", "groups", "finish",
				 "max_states", NULL };
	if (self->ready) {
		PyErr_SetString(PyExc_RuntimeError, "a Checker is initialised once");
		return -1;
	}
	if (!PyArg_ParseTupleAndKeywords(args, kw, "iO!O!O!y*i|OpK", names, &arch, &PyTuple_Type, &knobs_obj,
					 &PyTuple_Type, &config_obj, &PyTuple_Type, &elfs_obj, &alpha, &depth,
					 &groups, &finish, &max_states))
		return -1;
	struct checker *k = &self->k;
	int ret = -1;
	size_t width = 8 * (OP_ARGS + 1);
	if (engine_args(arch, knobs_obj, config_obj, k->knobs, k->config))
		goto out;
	if (alpha.len % width || alpha.len == 0 || (size_t)alpha.len / width > CHECK_MAX_ALPHABET) {
		PyErr_SetString(PyExc_ValueError, "alphabet: 1 to 65535 packed operations");
		goto out;
	}
	if (depth < 0 || depth > CHECK_MAX_DEPTH) {
		PyErr_Format(PyExc_ValueError, "depth: 0 to %d", CHECK_MAX_DEPTH);
		goto out;
	}
	if (groups != Py_None) {
		if (parse_groups(groups, k->groups))
			goto out;
		k->use_groups = true;
	}
	if (elfset_from(&self->elfs, elfs_obj))
		goto out;
	if (!(self->alpha = malloc((size_t)alpha.len))) {
		PyErr_NoMemory();
		goto out;
	}
	memcpy(self->alpha, alpha.buf, (size_t)alpha.len);
	k->arch = (enum arch)arch;
	k->elfs = self->elfs.ptr;
	k->elf_lens = self->elfs.len;
	k->nelfs = self->elfs.n;
	k->alpha = self->alpha;
	k->nalpha = (int)((size_t)alpha.len / width);
	k->max_depth = depth;
	k->finish = finish;
	k->max_states = max_states;
	self->ready = true; /* from here on dealloc must fini */
	int err = checker_init(k);
	if (err) {
		raise_errno(err);
		goto out;
	}
	ret = 0;
out:
	PyBuffer_Release(&alpha);
	return ret;
}

static void Checker_dealloc(CheckerObject *self)
{
	if (self->ready)
		checker_fini(&self->k);
	free(self->alpha);
	elfset_clear(&self->elfs);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

/* run(seconds) -> status: search for about that long (one state's successors at a time), without the GIL */
static PyObject *Checker_run(CheckerObject *self, PyObject *args)
{
	double seconds;
	if (!PyArg_ParseTuple(args, "d", &seconds))
		return NULL;
	if (!self->ready) {
		PyErr_SetString(PyExc_RuntimeError, "Checker not initialised");
		return NULL;
	}
	int ret;
	Py_BEGIN_ALLOW_THREADS
	ret = checker_run(&self->k, seconds);
	Py_END_ALLOW_THREADS
	if (ret)
		return raise_errno(ret);
	return PyLong_FromLong(self->k.status);
}

/* stats() -> dict: status, depth (being expanded), done_depth, generated, blocked, distinct, queue, fixpoint */
static PyObject *Checker_stats(CheckerObject *self, PyObject *noargs)
{
	(void)noargs;
	struct checker *k = &self->k;
	if (!self->ready) {
		PyErr_SetString(PyExc_RuntimeError, "Checker not initialised");
		return NULL;
	}
	unsigned long long queue = (unsigned long long)(k->layer_hi - k->cursor) +
				   (unsigned long long)(k->nnodes - k->layer_hi);
	return Py_BuildValue("{s:i,s:i,s:i,s:K,s:K,s:K,s:K,s:K,s:O,s:K}", "status", (int)k->status, "depth", k->depth,
			     "done_depth", k->done_depth, "generated", (unsigned long long)k->generated,
			     "blocked", (unsigned long long)k->blocked, "distinct",
			     (unsigned long long)k->distinct, "queue", queue, "replays",
			     (unsigned long long)k->replays, "fixpoint", k->fixpoint ? Py_True : Py_False,
			     "seen_bytes", (unsigned long long)(k->seen_cap * 8 + k->capnodes * 6));
}

/* violation() -> None or (path: list of alphabet indices, kind, op_index, message, at_teardown) */
static PyObject *Checker_violation(CheckerObject *self, PyObject *noargs)
{
	(void)noargs;
	struct checker *k = &self->k;
	if (!self->ready || k->status != CHECK_VIOLATION)
		Py_RETURN_NONE;
	PyObject *path = PyList_New(k->vlen);
	for (int i = 0; path && i < k->vlen; i++)
		PyList_SET_ITEM(path, i, PyLong_FromLong(k->vpath[i]));
	if (!path)
		return NULL;
	return Py_BuildValue("(NiIsO)", path, k->vkind, k->vop, k->vmsg, k->vteardown ? Py_True : Py_False);
}

static PyMethodDef Checker_methods[] = {
	{ "run", (PyCFunction)Checker_run, METH_VARARGS, "run(seconds) -> status (0 running, 1 violation, "
	  "2 exhausted, 3 state bound reached)" },
	{ "stats", (PyCFunction)Checker_stats, METH_NOARGS, "stats() -> the search's counters" },
	{ "violation", (PyCFunction)Checker_violation, METH_NOARGS,
	  "violation() -> None or (path, kind, op_index, message, at_teardown)" },
	{ NULL, NULL, 0, NULL },
};

static PyTypeObject CheckerType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "ptfuzz._engine.Checker",
	.tp_basicsize = sizeof(CheckerObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Checker(arch, knobs, config, elfs, alphabet, depth, groups=None, finish=True, max_states=0): "
		  "breadth-first search of every alphabet sequence up to depth.",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Checker_init,
	.tp_dealloc = (destructor)Checker_dealloc,
	.tp_methods = Checker_methods,
};

/* ---- Generator ---- */

typedef struct {
	PyObject_HEAD
	int arch, profile;
	int knobs[K_NR];
	uint64_t config[CONFIG_NR];
	struct elfset elfs;
	struct gen_layout layout; /* from the engine __init__ builds to check the configuration */
} GeneratorObject;

/* Generator(arch, knobs, config, elfs, profile): profile 0 fuzz, 1 workload (gen.h) */
static int Generator_init(GeneratorObject *self, PyObject *args, PyObject *kw)
{
	PyObject *knobs_obj, *config_obj, *elfs_obj;
	static char *names[] = { "arch", "knobs", "config", "elfs", "profile", NULL };
	if (!PyArg_ParseTupleAndKeywords(args, kw, "iO!O!O!i", names, &self->arch, &PyTuple_Type, &knobs_obj,
					 &PyTuple_Type, &config_obj, &PyTuple_Type, &elfs_obj, &self->profile))
		return -1;
	if (self->profile < 0 || self->profile >= GEN_NPROFILES) {
		PyErr_SetString(PyExc_ValueError, "unknown generator profile");
		return -1;
	}
	if (self->elfs.ptr) { /* run() reads the ELF images: they must outlive every call */
		PyErr_SetString(PyExc_RuntimeError, "a Generator is initialised once");
		return -1;
	}
	if (engine_args(self->arch, knobs_obj, config_obj, self->knobs, self->config))
		return -1;
	if (elfset_from(&self->elfs, elfs_obj))
		return -1;
	struct engine *e = engine_create(self->arch, self->knobs, self->config, &self->elfs); /* checked once, here */
	if (!e)
		return -1;
	gen_layout(e, &self->layout);
	engine_free(e);
	return 0;
}

static void Generator_dealloc(GeneratorObject *self)
{
	elfset_clear(&self->elfs);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

/* run(source, max_ops, record=False, teardown=True) -> (ops, violation, op_index, message, recorded)
 * source: bytes (decisions, ByteChoices' encoding) or an int (a seed); ops: packed words (48 bytes an
 * operation); violation: 0 or the engine's violation number; recorded: the decisions a seed made, in the
 * byte encoding (record=True), else None. */
static PyObject *Generator_run(GeneratorObject *self, PyObject *args, PyObject *kw)
{
	PyObject *source;
	Py_ssize_t max_ops;
	int record = 0, teardown = 1;
	static char *names[] = { "source", "max_ops", "record", "teardown", NULL };
	if (!PyArg_ParseTupleAndKeywords(args, kw, "On|pp", names, &source, &max_ops, &record, &teardown))
		return NULL;
	if (max_ops < 0) {
		PyErr_SetString(PyExc_ValueError, "max_ops must not be negative");
		return NULL;
	}
	if (!self->elfs.ptr) {
		PyErr_SetString(PyExc_RuntimeError, "Generator not initialised");
		return NULL;
	}
	struct choices c;
	Py_buffer data = { 0 };
	bool have_data = false;
	if (PyLong_Check(source)) {
		unsigned long long seed = PyLong_AsUnsignedLongLongMask(source);
		if (PyErr_Occurred())
			return NULL;
		choices_random(&c, seed, record);
	} else {
		if (PyObject_GetBuffer(source, &data, PyBUF_SIMPLE) < 0)
			return NULL;
		have_data = true;
		choices_bytes(&c, data.buf, (size_t)data.len);
	}
	struct engine *e = engine_create(self->arch, self->knobs, self->config, &self->elfs);
	PyObject *result = NULL;
	struct gen_result r = { 0 };
	/* the GIL stays held: the semantic feature counters are one table for the process */
	int ret = e ? ptf_generate(e, (enum gen_profile_id)self->profile, &c, (size_t)max_ops, teardown, &r) : 0;
	if (e && ret)
		raise_errno(ret);
	else if (e) /* else engine_create raised */
		result = Py_BuildValue("(y#iIsO)", r.rows ? (const char *)r.rows : "", (Py_ssize_t)(r.nrows * (OP_ARGS + 1) * 8),
				       (int)r.viol, r.viol_op, e->viol_msg, Py_None);
	if (result && c.record) {
		PyObject *rec = PyBytes_FromStringAndSize((const char *)c.rec, (Py_ssize_t)c.nrec);
		if (!rec)
			Py_CLEAR(result);
		else
			PyTuple_SetItem(result, 4, rec); /* steals rec, releases the None */
	}
	free(r.rows);
	choices_free(&c);
	engine_free(e);
	if (have_data)
		PyBuffer_Release(&data);
	return result;
}

/* layout() -> dict: where the generator puts things (gen_layout): page, pmd, pud (0: none), region, base,
 * align (memslots), ipas */
static PyObject *Generator_layout(GeneratorObject *self, PyObject *noargs)
{
	(void)noargs;
	const struct gen_layout *L = &self->layout;
	if (!self->elfs.ptr) {
		PyErr_SetString(PyExc_RuntimeError, "Generator not initialised");
		return NULL;
	}
	PyObject *ipas = PyTuple_New((Py_ssize_t)L->nipas);
	for (size_t i = 0; ipas && i < L->nipas; i++) {
		PyObject *v = PyLong_FromUnsignedLongLong(L->ipas[i]);
		if (!v)
			Py_CLEAR(ipas);
		else
			PyTuple_SET_ITEM(ipas, (Py_ssize_t)i, v);
	}
	if (!ipas)
		return NULL;
	return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:N}", "page", (unsigned long long)L->page,
			     "pmd", (unsigned long long)L->pmd, "pud", (unsigned long long)L->pud,
			     "region", (unsigned long long)L->region, "base", (unsigned long long)L->base,
			     "align", (unsigned long long)L->align, "ipas", ipas);
}

static PyMethodDef Generator_methods[] = {
	{ "layout", (PyCFunction)Generator_layout, METH_NOARGS, "layout() -> where the generator puts things" },
	{ "run", (PyCFunction)(void (*)(void))Generator_run, METH_VARARGS | METH_KEYWORDS,
	  "run(source, max_ops, record=False, teardown=True) -> (ops, violation, op_index, message, recorded)" },
	{ NULL, NULL, 0, NULL },
};

static PyTypeObject GeneratorType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "ptfuzz._engine.Generator",
	.tp_basicsize = sizeof(GeneratorObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Generator(arch, knobs, config, elfs, profile): traces decided against the live engine (gen.c).",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Generator_init,
	.tp_dealloc = (destructor)Generator_dealloc,
	.tp_methods = Generator_methods,
};

/* debug_full(flag): digests hash every table word and copies copy every word, ignoring the occupancy
 * bitmaps, so that tests can hold the fast paths to the slow ones. */
static PyObject *py_debug_full(PyObject *self, PyObject *args)
{
	int flag;
	(void)self;
	if (!PyArg_ParseTuple(args, "p", &flag))
		return NULL;
	ptf_digest_full_scan = ptf_copy_full = flag;
	Py_RETURN_NONE;
}

/* features_register() -> bool: the generator's semantic features now count as libFuzzer coverage (False: no
 * libFuzzer runtime in this process) */
static PyObject *py_features_register(PyObject *self, PyObject *noargs)
{
	(void)self;
	(void)noargs;
	return PyBool_FromLong(ptf_features_register() == 0);
}

static PyMethodDef functions[] = {
	{ "debug_full", py_debug_full, METH_VARARGS, "debug_full(flag): ignore occupancy bitmaps (tests)" },
	{ "features_register", py_features_register, METH_NOARGS,
	  "features_register() -> bool: count the generator's semantic features as libFuzzer coverage" },
	{ NULL, NULL, 0, NULL },
};

/* Called from PyInit__engine. */
int pyengine_add_types(PyObject *m)
{
	if (PyType_Ready(&EngineType) < 0 || PyType_Ready(&CheckerType) < 0 || PyType_Ready(&GeneratorType) < 0)
		return -1;
	Py_INCREF(&GeneratorType);
	if (PyModule_AddObject(m, "Generator", (PyObject *)&GeneratorType) < 0) {
		Py_DECREF(&GeneratorType);
		return -1;
	}
	if (PyModule_AddIntConstant(m, "GEN_FEATURES", (long)ptf_features_count) < 0)
		return -1;
	Py_INCREF(&EngineType);
	if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
		Py_DECREF(&EngineType);
		return -1;
	}
	if (PyModule_AddFunctions(m, functions) < 0)
		return -1;
	Py_INCREF(&CheckerType);
	if (PyModule_AddObject(m, "Checker", (PyObject *)&CheckerType) < 0) {
		Py_DECREF(&CheckerType);
		return -1;
	}
	return 0;
}
