/* py/setup.c: an engine from the binding's arguments (arch, knobs, config, elfs), its release, and engine errnos
 * as Python exceptions: below module.c and dump.c, which both start a run with them. */
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

struct engine *engine_from_args(PyObject *args, PyObject **rest)
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
	if (!ok)
		return NULL;
	if (arch < 0 || arch >= ARCH_NR || PyTuple_GET_SIZE(knobs_obj) != K_NR ||
	    PyTuple_GET_SIZE(config_obj) != CONFIG_NR) {
		PyErr_SetString(PyExc_ValueError, "bad engine arguments");
		return NULL;
	}
	int knobs[K_NR];
	uint64_t config[CONFIG_NR];
	for (int i = 0; i < K_NR; i++)
		knobs[i] = (int)PyLong_AsLong(PyTuple_GET_ITEM(knobs_obj, i));
	for (int i = 0; i < CONFIG_NR; i++)
		config[i] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(config_obj, i));
	if (PyErr_Occurred())
		return NULL;
	Py_ssize_t nelfs = PyTuple_GET_SIZE(elfs_obj);
	const uint8_t **elfs = calloc((size_t)nelfs + 1, sizeof(*elfs));
	size_t *lens = calloc((size_t)nelfs + 1, sizeof(*lens));
	struct engine *e = calloc(1, sizeof(*e));
	if (!elfs || !lens || !e) {
		PyErr_NoMemory();
		goto fail;
	}
	for (Py_ssize_t i = 0; i < nelfs; i++) {
		PyObject *b = PyTuple_GET_ITEM(elfs_obj, i);
		if (!PyBytes_Check(b)) {
			PyErr_SetString(PyExc_TypeError, "elfs must be bytes");
			goto fail;
		}
		elfs[i] = (const uint8_t *)PyBytes_AS_STRING(b);
		lens[i] = (size_t)PyBytes_GET_SIZE(b);
	}
	int ret = ptf_init(e, (enum arch)arch, knobs, config);
	if (ret) {
		ptf_fini(e);
		raise_errno(ret);
		goto fail;
	}
	e->elfs = elfs;
	e->elf_lens = lens;
	e->nelfs = (int)nelfs;
	*rest = PyTuple_GetSlice(args, 4, PyTuple_GET_SIZE(args));
	if (*rest)
		return e;
	engine_free(e);
	return NULL;
fail:
	free(e);
	free(elfs);
	free(lens);
	return NULL;
}

void engine_free(struct engine *e)
{
	if (!e)
		return;
	void *elfs = (void *)e->elfs, *lens = (void *)e->elf_lens; /* ptf_fini clears the pointers */
	ptf_fini(e);
	free(e);
	free(elfs);
	free(lens);
}
