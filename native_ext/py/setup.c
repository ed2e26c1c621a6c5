/* py/setup.c: the binding's one engine set-up (arguments, ELF images, ptf_init) and its one errno-to-exception map. */
#include "py/pyengine.h" /* first: Python.h sets the feature macros */
#include <stdlib.h>
#include <string.h>

/* Engine errors become Python exceptions here and nowhere else. */
PyObject *raise_errno(int err)
{
	if (err == -ENOSYS)
		PyErr_SetString(PyExc_NotImplementedError, "not modelled on this architecture");
	else if (err == -ENOMEM)
		PyErr_NoMemory();
	else
		PyErr_Format(PyExc_ValueError, "engine rejected the configuration (errno %d)", -err);
	return NULL;
}

int elfset_from(struct elfset *s, PyObject *tuple)
{
	Py_ssize_t n = PyTuple_GET_SIZE(tuple);
	s->ptr = calloc((size_t)n + 1, sizeof(*s->ptr));
	s->len = calloc((size_t)n + 1, sizeof(*s->len));
	if (!s->ptr || !s->len) {
		PyErr_NoMemory();
		return -1;
	}
	for (Py_ssize_t i = 0; i < n; i++) {
		PyObject *b = PyTuple_GET_ITEM(tuple, i);
		if (!PyBytes_Check(b)) {
			PyErr_SetString(PyExc_TypeError, "elfs must be bytes");
			return -1;
		}
		s->ptr[i] = (const uint8_t *)PyBytes_AS_STRING(b);
		s->len[i] = (size_t)PyBytes_GET_SIZE(b);
	}
	Py_INCREF(tuple);
	s->tuple = tuple;
	s->n = (int)n;
	return 0;
}

void elfset_clear(struct elfset *s)
{
	free(s->ptr);
	free(s->len);
	Py_CLEAR(s->tuple);
	s->ptr = NULL;
	s->len = NULL;
}

void elfset_bind(struct engine *e, const struct elfset *s)
{
	e->elfs = s->ptr;
	e->elf_lens = s->len;
	e->nelfs = s->n;
}

/* (arch, knobs tuple, config tuple) -> C values, with one error message for all of them */
int engine_args(int arch, PyObject *knobs_obj, PyObject *config_obj, int *knobs, uint64_t *config)
{
	if (arch < 0 || arch >= ARCH_NR || PyTuple_GET_SIZE(knobs_obj) != K_NR ||
	    PyTuple_GET_SIZE(config_obj) != CONFIG_NR) {
		PyErr_SetString(PyExc_ValueError, "bad engine arguments");
		return -1;
	}
	for (int i = 0; i < K_NR; i++)
		knobs[i] = (int)PyLong_AsLong(PyTuple_GET_ITEM(knobs_obj, i));
	for (int i = 0; i < CONFIG_NR; i++)
		config[i] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(config_obj, i));
	return PyErr_Occurred() ? -1 : 0;
}

struct engine *engine_create(int arch, const int *knobs, const uint64_t *config, const struct elfset *elfs)
{
	struct engine *e = malloc(sizeof(*e)); /* ptf_init clears it: calloc's clearing was a second memset a trace */
	if (!e) {
		PyErr_NoMemory();
		return NULL;
	}
	int ret = ptf_init(e, (enum arch)arch, knobs, config);
	if (ret) {
		engine_free(e);
		raise_errno(ret);
		return NULL;
	}
	elfset_bind(e, elfs);
	return e;
}

struct engine *engine_from_args(PyObject *args, PyObject **rest, struct elfset *elfs)
{
	if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 4) {
		PyErr_SetString(PyExc_TypeError, "expected (arch, knobs, config, elfs, ...)");
		return NULL;
	}
	int arch;
	PyObject *knobs_obj, *config_obj, *elfs_obj;
	PyObject *head = PyTuple_GetSlice(args, 0, 4);
	int ok = head && PyArg_ParseTuple(head, "iO!O!O!", &arch, &PyTuple_Type, &knobs_obj, &PyTuple_Type,
					  &config_obj, &PyTuple_Type, &elfs_obj);
	Py_XDECREF(head); /* args still holds every object parsed out of it */
	int knobs[K_NR];
	uint64_t config[CONFIG_NR];
	if (!ok || engine_args(arch, knobs_obj, config_obj, knobs, config))
		return NULL;
	struct engine *e = NULL;
	if (elfset_from(elfs, elfs_obj) || !(e = engine_create(arch, knobs, config, elfs)) ||
	    !(*rest = PyTuple_GetSlice(args, 4, PyTuple_GET_SIZE(args)))) {
		engine_free(e);
		elfset_clear(elfs);
		return NULL;
	}
	return e;
}
