/* pyengine.h (py/setup.c, py/stream.c): what the CPython binding's files share: an engine built from the arguments run() and dump()
 * start with, and the operations they feed it (a buffer in memory, or a section of a trace file read in
 * chunks). Python-facing only: the engine itself (ptf.h) never sees a PyObject. */
#ifndef PYENGINE_H
#define PYENGINE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "ptf.h"

#define OP_BYTES (8 * (OP_ARGS + 1))

/* args[0:4] = (arch, knobs, config, elfs): a calloc'd engine after ptf_init, its ELF table pointing into
 * the bytes of elfs (which the caller's args keep alive for as long as the engine runs). *rest is a new
 * reference to args[4:], for the caller's own PyArg_ParseTuple. NULL with an exception set on error. */
struct engine *engine_from_args(PyObject *args, PyObject **rest);
void engine_free(struct engine *e);

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

PyObject *raise_errno(int err); /* py/setup.c: an engine errno as the Python exception for it */

#endif
