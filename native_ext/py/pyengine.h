/* py/pyengine.h: what the CPython binding's files share (py/setup.c: the engine set-up; py/stream.c: operations).
 * An engine is built from the binding's arguments in one place, fed operations from a buffer in memory or a
 * section of a trace file read in chunks, by one step loop. Python-facing only: ptf.h never sees a PyObject. */
#ifndef PYENGINE_H
#define PYENGINE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "ptf.h"

#define OP_BYTES (8 * (OP_ARGS + 1))

/* The ELF images, shared by an engine and its clones (the engine only reads them). */
struct elfset {
	PyObject *tuple; /* of bytes: owns the memory the pointers point into */
	const uint8_t **ptr;
	size_t *len;
	int n;
};
/* 0, or -1 with an exception set (clear s either way: it may hold part of the arrays) */
int elfset_from(struct elfset *s, PyObject *tuple);
void elfset_clear(struct elfset *s);
void elfset_bind(struct engine *e, const struct elfset *s);

/* (arch, knobs, config) as C values: 0, or -1 with ValueError */
int engine_args(int arch, PyObject *knobs_obj, PyObject *config_obj, int *knobs, uint64_t *config);
/* The one engine set-up: a calloc'd engine after ptf_init, its ELF table bound to elfs (which must outlive
 * it); NULL with an exception set. Release it with engine_free, then the elfset with elfset_clear. */
struct engine *engine_create(int arch, const int *knobs, const uint64_t *config, const struct elfset *elfs);
/* args[0:4] = (arch, knobs, config, elfs): engine_create from them, *elfs (zeroed by the caller) filled; *rest
 * a new reference to args[4:], for the caller's own PyArg_ParseTuple. NULL with an exception set (and *elfs
 * cleared) on error. */
struct engine *engine_from_args(PyObject *args, PyObject **rest, struct elfset *elfs);

/* Where operations come from. From memory: a buffer of whole packed operations. From a file: bytes
 * [off, off + 48 * nops) of fd, read with pread into a chunk of chunk_bytes bytes at a time (any size from
 * 48 up: an operation split by a chunk's end is carried over to the next one), so that a trace of any length
 * costs one chunk of memory. */
struct op_source {
	Py_buffer view;           /* memory: the buffer (view.buf NULL for a file) */
	int fd;
	uint64_t off, nops;
	uint8_t *chunk;
	size_t chunk_bytes, have, used; /* bytes read into chunk, bytes of it handed out */
	uint64_t pos;             /* file offset of the next read */
	int err;                  /* 0, an errno from pread, or -1: the file ended first */
};

/* obj: a buffer, or (fd, offset, nops[, chunk_bytes]). 0, or -1 with an exception set. */
int op_source_open(PyObject *obj, struct op_source *s);
void op_source_close(struct op_source *s);
/* The next run of whole operations (at most max); 0 at the end or on a read error (s->err). Needs no GIL. */
size_t op_source_next(struct op_source *s, const uint64_t **ops, size_t max);
/* After op_source_next returned 0 early: an exception naming the byte offset where reading stopped. */
PyObject *op_source_error(struct op_source *s);

/* The one step loop (run() and dump()): what it records while it runs the operations of a source. */
struct step_loop {
	int8_t *res;              /* each operation's result, or NULL */
	bool figures;             /* ptf_figures after each operation into fig_buf */
	uint64_t fig_lo, fig_hi;
	uint64_t *fig_buf;
	size_t fig_len, fig_cap;
	int fig_err;
	size_t executed;
	uint64_t viol_words[OP_ARGS + 1]; /* the operation that violated, when viol_in_op */
	bool viol_in_op;
};
/* ptf_step over every operation of src until one violates or the source ends (or fails: src->err), with the
 * GIL released. */
void step_loop_run(struct engine *e, struct op_source *src, struct step_loop *l);

PyObject *raise_errno(int err); /* py/setup.c: an engine errno as the Python exception for it */

#endif
