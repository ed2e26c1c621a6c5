/* py/level.c: LevelWorker, the binding of search/lvl.c (one worker of the level-synchronous check: --jobs, --shard). */
#include <errno.h>
#include "pyengine.h"
#include "search/check.h"
#include "search/lvl.h"

typedef struct {
	PyObject_HEAD
	struct lvl *L;
	/* lvl_new keeps pointers into these (it copies only knobs, config and groups): they live as long as L */
	struct elfset elfs;
	Py_buffer alpha, indep; /* the alphabet's packed rows; the --por independence bytes (indep.buf NULL: none) */
	uint16_t *key;          /* the --por order, or NULL */
	Py_buffer progress;     /* the shared counter cell the worker bumps (progress.buf NULL: none) */
} LevelWorkerObject;

/* A sequence of ints as a C array of n elements of size width (2, 4 or 8 bytes); NULL with an exception set. */
static void *int_array(PyObject *seq, Py_ssize_t want, int width, const char *what)
{
	PyObject *f = PySequence_Fast(seq, what);
	if (!f)
		return NULL;
	Py_ssize_t n = PySequence_Fast_GET_SIZE(f);
	void *out = n == want || want < 0 ? calloc((size_t)(n ? n : 1), (size_t)width) : NULL;
	if (!out) {
		Py_DECREF(f);
		return n == want || want < 0 ? PyErr_NoMemory() : (PyErr_Format(PyExc_ValueError, "%s: %zd values, not %zd",
										    what, n, want), NULL);
	}
	for (Py_ssize_t i = 0; i < n; i++) {
		unsigned long long v = PyLong_AsUnsignedLongLongMask(PySequence_Fast_GET_ITEM(f, i));
		if (width == 2)
			((uint16_t *)out)[i] = (uint16_t)v;
		else if (width == 4)
			((int *)out)[i] = (int)v;
		else
			((uint64_t *)out)[i] = v;
	}
	Py_DECREF(f);
	if (PyErr_Occurred()) {
		free(out);
		return NULL;
	}
	return out;
}

/* LevelWorker(arch, knobs, config, elfs, alphabet, nalpha, groups, finish, nworkers, me, key, indep,
 *             progress, progress_index) */
static int level_init(LevelWorkerObject *self, PyObject *args, PyObject *kw)
{
	int arch, nalpha, finish, nw, me, pidx = 0;
	PyObject *knobs_obj, *config_obj, *elfs_obj, *groups_obj, *key_obj, *progress_obj;
	(void)kw;
	if (self->L) {
		PyErr_SetString(PyExc_ValueError, "LevelWorker is already set up");
		return -1;
	}
	if (!PyArg_ParseTuple(args, "iOOOy*iOpiiOz*O|i", &arch, &knobs_obj, &config_obj, &elfs_obj, &self->alpha, &nalpha,
			      &groups_obj, &finish, &nw, &me, &key_obj, &self->indep, &progress_obj, &pidx))
		return -1;
	int ret = -1, *knobs = NULL, *groups = NULL;
	uint64_t *config = NULL;
	if ((size_t)self->alpha.len < (size_t)nalpha * OP_BYTES) {
		PyErr_SetString(PyExc_ValueError, "LevelWorker: the alphabet is shorter than nalpha rows");
		goto out;
	}
	if (!(knobs = int_array(knobs_obj, K_NR, 4, "knobs")) || !(config = int_array(config_obj, CONFIG_NR, 8, "config")) ||
	    (groups_obj != Py_None && !(groups = int_array(groups_obj, 6, 4, "groups"))) ||
	    (key_obj != Py_None && !(self->key = int_array(key_obj, nalpha, 2, "key"))) ||
	    elfset_from(&self->elfs, elfs_obj))
		goto out;
	if (progress_obj != Py_None) {
		if (PyObject_GetBuffer(progress_obj, &self->progress, PyBUF_WRITABLE) < 0)
			goto out;
		if (pidx < 0 || (size_t)(pidx + 1) * 8 > (size_t)self->progress.len) {
			PyErr_SetString(PyExc_ValueError, "LevelWorker: progress_index outside the progress buffer");
			goto out;
		}
	}
	volatile uint64_t *cell = self->progress.buf ? (volatile uint64_t *)self->progress.buf + pidx : NULL;
	self->L = lvl_new(arch, knobs, config, self->elfs.ptr, self->elfs.len, self->elfs.n, self->alpha.buf, nalpha,
			  groups, finish, nw, me, self->key, self->indep.buf, cell);
	if (!self->L)
		PyErr_SetString(PyExc_MemoryError, "check: a worker could not start (out of memory, or a bad configuration)");
	else
		ret = 0;
out:
	free(knobs); /* copied by lvl_new, as config and groups are */
	free(config);
	free(groups);
	return ret;
}

static void level_release(LevelWorkerObject *self)
{
	lvl_free(self->L);
	self->L = NULL;
	elfset_clear(&self->elfs);
	free(self->key);
	self->key = NULL;
	if (self->alpha.obj)
		PyBuffer_Release(&self->alpha);
	if (self->indep.obj)
		PyBuffer_Release(&self->indep);
	if (self->progress.obj)
		PyBuffer_Release(&self->progress);
}

static void level_dealloc(LevelWorkerObject *self)
{
	level_release(self);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The worker's own failures are I/O on its files (-errno): OSError, not an engine result */
static PyObject *level_error(int ret)
{
	errno = -ret;
	return PyErr_SetFromErrno(PyExc_OSError);
}

static struct lvl *live(LevelWorkerObject *self)
{
	if (!self->L)
		PyErr_SetString(PyExc_ValueError, "LevelWorker is closed");
	return self->L;
}

static PyObject *level_close(LevelWorkerObject *self, PyObject *unused)
{
	(void)unused;
	level_release(self);
	Py_RETURN_NONE;
}

/* expand(expand) -> None: one pass over this worker's part of the level (OSError on failure) */
static PyObject *level_expand(LevelWorkerObject *self, PyObject *args)
{
	int expand, ret;
	if (!live(self) || !PyArg_ParseTuple(args, "i", &expand))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	ret = lvl_pass(self->L, expand);
	Py_END_ALLOW_THREADS
	if (ret)
		return level_error(ret);
	Py_RETURN_NONE;
}

/* write(owner, fd) -> None: what this pass sent to worker owner, into fd */
static PyObject *level_write(LevelWorkerObject *self, PyObject *args)
{
	int o, fd, ret;
	if (!live(self) || !PyArg_ParseTuple(args, "ii", &o, &fd))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	ret = lvl_write(self->L, o, fd);
	Py_END_ALLOW_THREADS
	if (ret)
		return level_error(ret);
	Py_RETURN_NONE;
}

/* merge(fds) -> states kept for the next level, from what every worker sent this one */
static PyObject *level_merge(LevelWorkerObject *self, PyObject *args)
{
	PyObject *fds_obj;
	if (!live(self) || !PyArg_ParseTuple(args, "O", &fds_obj))
		return NULL;
	int *fds = int_array(fds_obj, -1, 4, "fds");
	if (!fds)
		return NULL;
	long n;
	Py_ssize_t nfds = PySequence_Size(fds_obj);
	Py_BEGIN_ALLOW_THREADS
	n = lvl_merge(self->L, fds, (int)nfds);
	Py_END_ALLOW_THREADS
	free(fds);
	return n < 0 ? level_error((int)n) : PyLong_FromLong(n);
}

/* shard_keep(i, n) -> states kept: only shard i of n from here on */
static PyObject *level_shard_keep(LevelWorkerObject *self, PyObject *args)
{
	int i, n;
	if (!live(self) || !PyArg_ParseTuple(args, "ii", &i, &n))
		return NULL;
	return PyLong_FromLong(lvl_shard_keep(self->L, i, n));
}

/* stats() -> (generated, blocked, emitted, pruned, teardowns, frontier, depth, known, unchanged) */
static PyObject *level_stats(LevelWorkerObject *self, PyObject *unused)
{
	uint64_t s[9];
	(void)unused;
	if (!live(self))
		return NULL;
	lvl_stats(self->L, s);
	return Py_BuildValue("(KKKKKKKKK)", s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]);
}

/* violation() -> None, or (path, kind, op, message, at_teardown) */
static PyObject *level_violation(LevelWorkerObject *self, PyObject *unused)
{
	uint16_t path[CHECK_MAX_DEPTH + 1];
	int n = 0, teardown = 0;
	uint32_t op = 0;
	char msg[256] = { 0 };
	(void)unused;
	if (!live(self))
		return NULL;
	int kind = lvl_violation(self->L, path, &n, &op, msg, &teardown);
	if (!kind)
		Py_RETURN_NONE;
	PyObject *p = PyList_New(n);
	for (int i = 0; p && i < n; i++)
		PyList_SET_ITEM(p, i, PyLong_FromLong(path[i]));
	return p ? Py_BuildValue("(NiIsO)", p, kind, op, msg, teardown ? Py_True : Py_False) : NULL;
}

static PyMethodDef level_methods[] = {
	{ "expand", (PyCFunction)level_expand, METH_VARARGS, "expand(expand): one pass over this worker's part" },
	{ "write", (PyCFunction)level_write, METH_VARARGS, "write(owner, fd): what this pass sent to owner" },
	{ "merge", (PyCFunction)level_merge, METH_VARARGS, "merge(fds) -> states of the next level" },
	{ "shard_keep", (PyCFunction)level_shard_keep, METH_VARARGS, "shard_keep(i, n) -> states kept" },
	{ "stats", (PyCFunction)level_stats, METH_NOARGS, "stats() -> the worker's nine counters" },
	{ "violation", (PyCFunction)level_violation, METH_NOARGS, "violation() -> None or the least one found" },
	{ "close", (PyCFunction)level_close, METH_NOARGS, "close(): free the worker" },
	{ NULL, NULL, 0, NULL },
};

static PyTypeObject LevelWorkerType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "ptfuzz._engine.LevelWorker",
	.tp_basicsize = sizeof(LevelWorkerObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "One worker of the level-synchronous check (search/lvl.c).",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)level_init,
	.tp_dealloc = (destructor)level_dealloc,
	.tp_methods = level_methods,
};

/* shard_of(digest, n) -> the shard a state belongs to */
static PyObject *py_shard_of(PyObject *self, PyObject *args)
{
	unsigned long long d;
	int n;
	(void)self;
	if (!PyArg_ParseTuple(args, "Ki", &d, &n))
		return NULL;
	if (n < 1) {
		PyErr_SetString(PyExc_ValueError, "shard_of: n must be at least 1");
		return NULL;
	}
	return PyLong_FromLong(lvl_shard_of(d, n));
}

static PyMethodDef level_functions[] = {
	{ "shard_of", py_shard_of, METH_VARARGS, "shard_of(digest, n) -> the shard a state belongs to" },
	{ NULL, NULL, 0, NULL },
};

int level_add_types(PyObject *m)
{
	if (PyType_Ready(&LevelWorkerType) < 0 || PyModule_AddFunctions(m, level_functions) < 0)
		return -1;
	Py_INCREF(&LevelWorkerType);
	if (PyModule_AddObject(m, "LevelWorker", (PyObject *)&LevelWorkerType) < 0) {
		Py_DECREF(&LevelWorkerType);
		return -1;
	}
	return 0;
}
