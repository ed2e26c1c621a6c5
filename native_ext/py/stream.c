/* py/stream.c: operations on their way into the engine without Python objects per operation: a packed section
 * read from its file in chunks (struct op_source), the one step loop that runs them, the range check of packed
 * words, and list-form msgpack arrays decoded straight into packed words. The trace layer (trace.py) explains whatever these reject. */
#include "py/pyengine.h" /* first: Python.h sets the feature macros */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int op_source_open(PyObject *obj, struct op_source *s)
{
	memset(s, 0, sizeof(*s));
	s->fd = -1;
	if (!PyTuple_Check(obj)) {
		if (PyObject_GetBuffer(obj, &s->view, PyBUF_SIMPLE))
			return -1;
		if (s->view.len % OP_BYTES) {
			PyBuffer_Release(&s->view);
			s->view.buf = NULL;
			PyErr_SetString(PyExc_ValueError, "bad engine arguments");
			return -1;
		}
		s->nops = (uint64_t)s->view.len / OP_BYTES;
		return 0;
	}
	unsigned long long off, nops;
	Py_ssize_t chunk = 1 << 20;
	if (!PyArg_ParseTuple(obj, "iKK|n", &s->fd, &off, &nops, &chunk))
		return -1;
	if (s->fd < 0 || chunk < OP_BYTES || nops > UINT64_MAX / OP_BYTES || off > UINT64_MAX - nops * OP_BYTES) {
		PyErr_SetString(PyExc_ValueError, "bad operation source");
		return -1;
	}
	s->off = s->pos = off;
	s->nops = nops;
	s->chunk_bytes = (size_t)chunk;
	s->chunk = malloc(s->chunk_bytes);
	if (!s->chunk) {
		PyErr_NoMemory();
		return -1;
	}
	return 0;
}

void op_source_close(struct op_source *s)
{
	if (s->view.buf)
		PyBuffer_Release(&s->view);
	free(s->chunk);
	memset(s, 0, sizeof(*s));
}

size_t op_source_next(struct op_source *s, const uint64_t **ops, size_t max)
{
	if (!s->chunk) { /* memory: everything at once */
		size_t n = (size_t)s->nops - s->used;
		n = n < max ? n : max;
		*ops = (const uint64_t *)s->view.buf + s->used * (OP_ARGS + 1);
		s->used += n;
		return n;
	}
	/* an operation split by the last read's end moves to the front and is completed by this one */
	memmove(s->chunk, s->chunk + s->used, s->have - s->used);
	s->have -= s->used;
	s->used = 0;
	uint64_t end = s->off + s->nops * OP_BYTES;
	while (s->have < s->chunk_bytes && s->pos < end) {
		size_t want = s->chunk_bytes - s->have;
		if (want > end - s->pos)
			want = (size_t)(end - s->pos);
		ssize_t r = pread(s->fd, s->chunk + s->have, want, (off_t)s->pos);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			s->err = r < 0 ? errno : -1;
			return 0;
		}
		s->have += (size_t)r;
		s->pos += (uint64_t)r;
	}
	size_t n = s->have / OP_BYTES;
	n = n < max ? n : max;
	s->used = n * OP_BYTES;
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	for (uint64_t *w = (uint64_t *)s->chunk; w < (uint64_t *)(s->chunk + s->used); w++)
		*w = __builtin_bswap64(*w); /* the file is little-endian */
#endif
	*ops = (const uint64_t *)s->chunk;
	return n;
}

PyObject *op_source_error(struct op_source *s)
{
	if (s->err > 0) {
		errno = s->err;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	PyErr_Format(PyExc_EOFError, "the file ends at byte offset %llu, inside operations that run to byte offset %llu",
		     (unsigned long long)s->pos, (unsigned long long)(s->off + s->nops * OP_BYTES));
	return NULL;
}

void step_loop_run(struct engine *e, struct op_source *src, struct step_loop *l)
{
	Py_BEGIN_ALLOW_THREADS
	const uint64_t *chunk;
	size_t n;
	while (!e->viol && (n = op_source_next(src, &chunk, SIZE_MAX))) {
		const uint64_t *op = chunk;
		for (size_t i = 0; i < n && !e->viol; i++, l->executed++, op += OP_ARGS + 1) {
			int r = ptf_step(e, op);
			if (l->res)
				l->res[l->executed] = (int8_t)r;
			if (l->figures && !l->fig_err)
				l->fig_err = ptf_figures(e, l->fig_lo, l->fig_hi, &l->fig_buf, &l->fig_len, &l->fig_cap);
			if (e->viol) {
				memcpy(l->viol_words, op, sizeof(l->viol_words));
				l->viol_in_op = true;
			}
		}
	}
	Py_END_ALLOW_THREADS
}

/* check_packed(ops, limits, special, nelfs) -> index of the first operation out of range, or -1.
 * limits: per opcode the 6 largest values allowed (uint64); special: per opcode the argument column of an
 * elf index (-1 or < nelfs) and of ipa_bits (0 or 32..52), 0 for none. trace.py builds both from docs/trace-format.md's
 * table, and says what is wrong with the operation this finds. */
PyObject *py_check_packed(PyObject *self, PyObject *args)
{
	Py_buffer ops, lim, sp;
	unsigned long long nelfs;
	(void)self;
	if (!PyArg_ParseTuple(args, "y*y*y*K", &ops, &lim, &sp, &nelfs))
		return NULL;
	Py_ssize_t bad = -1;
	if (ops.len % OP_BYTES || lim.len != (Py_ssize_t)sizeof(uint64_t) * OP_NR * (OP_ARGS + 1) ||
	    sp.len != 2 * OP_NR) {
		PyErr_SetString(PyExc_ValueError, "bad check_packed arguments");
		goto out;
	}
	const uint64_t *w = ops.buf, *lim64 = lim.buf;
	const uint8_t *special = sp.buf;
	for (Py_ssize_t i = 0; i < sp.len; i++)
		if (special[i] > OP_ARGS) { /* a column index: 1..OP_ARGS, 0 for none */
			PyErr_SetString(PyExc_ValueError, "bad check_packed arguments");
			goto out;
		}
	size_t n = (size_t)ops.len / OP_BYTES;
	/* The plain columns of every opcode are compared branch-free against their maxima (a special column's
	 * maximum is lifted to 2^64-1 there); the few opcodes with a special column take the slow test too. */
	uint64_t hi[OP_NR][OP_ARGS + 1];
	memcpy(hi, lim64, sizeof(hi));
	for (int c = 0; c < OP_NR; c++)
		for (int k = 0; k < 2; k++)
			if (special[2 * c + k])
				hi[c][special[2 * c + k]] = ~0ull;
	Py_BEGIN_ALLOW_THREADS
	for (size_t i = 0; i < n; i++, w += OP_ARGS + 1) {
		uint64_t code = w[0];
		if (code >= OP_NR) {
			bad = (Py_ssize_t)i;
			break;
		}
		const uint64_t *h = hi[code];
		bool over = (w[1] > h[1]) | (w[2] > h[2]) | (w[3] > h[3]) | (w[4] > h[4]) | (w[5] > h[5]);
		int ec = special[2 * code], ic = special[2 * code + 1];
		if (ec && !(w[ec] == ~0ull || w[ec] < nelfs))
			over = true;
		if (ic && !(w[ic] == 0 || (w[ic] >= 32 && w[ic] <= 52)))
			over = true;
		if (over) {
			bad = (Py_ssize_t)i;
			break;
		}
	}
	Py_END_ALLOW_THREADS
out:
	PyBuffer_Release(&ops);
	PyBuffer_Release(&lim);
	PyBuffer_Release(&sp);
	return PyErr_Occurred() ? NULL : PyLong_FromSsize_t(bad);
}

/* ---- list form: msgpack arrays ["name", int, ...] to packed words ---- */

/* The longest well-formed operation: an array32 header, a str8 name of 21 bytes, 5 uint64 arguments. An
 * incomplete item shorter than this may be completed by the next chunk; a longer one is not an operation. */
#define LIST_OP_MAX (5 + 2 + 21 + 5 * 9)

static uint64_t be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

enum { DEC_OK, DEC_MORE, DEC_BAD };

/* One msgpack integer at *p: DEC_OK with its value (negative ones as int64), or DEC_MORE / DEC_BAD. */
static int dec_int(const uint8_t **p, const uint8_t *end, int64_t *sv, uint64_t *uv, bool *neg)
{
	const uint8_t *q = *p;
	if (q >= end)
		return DEC_MORE;
	uint8_t b = *q;
	int n;
	*neg = false;
	if (b <= 0x7f) {
		*uv = b;
		*p = q + 1;
		return DEC_OK;
	}
	if (b >= 0xe0) {
		*sv = (int8_t)b;
		*neg = true;
		*p = q + 1;
		return DEC_OK;
	}
	if (b >= 0xcc && b <= 0xcf)
		n = 1 << (b - 0xcc);
	else if (b >= 0xd0 && b <= 0xd3)
		n = 1 << (b - 0xd0);
	else
		return DEC_BAD;
	if (end - q < 1 + n)
		return DEC_MORE;
	uint64_t v = be(q + 1, n);
	if (b <= 0xcf) {
		*uv = v;
	} else {
		int64_t s = n == 8 ? (int64_t)v : (int64_t)(v << (64 - 8 * n)) >> (64 - 8 * n);
		if (s < 0) {
			*sv = s;
			*neg = true;
		} else {
			*uv = (uint64_t)s;
		}
	}
	*p = q + 1 + n;
	return DEC_OK;
}

/* Operation names by an open-addressed hash of length, first and last byte: one or two probes a name. */
#define NAME_SLOTS 128
static int8_t name_slot[NAME_SLOTS];
static uint8_t name_len[OP_NR];

static unsigned name_hash(const char *s, unsigned len)
{
	return (len * 31u + (uint8_t)s[0] * 7u + (uint8_t)s[len - 1]) % NAME_SLOTS;
}

static void op_names_init(void)
{
	memset(name_slot, -1, sizeof(name_slot));
	for (int c = 0; c < OP_NR; c++) {
		name_len[c] = (uint8_t)strlen(op_defs[c].name);
		unsigned h = name_hash(op_defs[c].name, name_len[c]);
		while (name_slot[h] >= 0)
			h = (h + 1) % NAME_SLOTS;
		name_slot[h] = (int8_t)c;
	}
}

static int op_lookup(const char *name, unsigned len)
{
	for (unsigned h = name_hash(name, len); name_slot[h] >= 0; h = (h + 1) % NAME_SLOTS) {
		int c = name_slot[h];
		if (name_len[c] == len && !memcmp(op_defs[c].name, name, len))
			return c;
	}
	return -1;
}

static int dec_op(const uint8_t **p, const uint8_t *end, const uint8_t *elf_cols, uint64_t *row)
{
	const uint8_t *q = *p;
	if (q >= end)
		return DEC_MORE;
	uint8_t b = *q;
	uint64_t n;
	int hl;
	if ((b & 0xf0) == 0x90)
		n = b & 15, hl = 1;
	else if (b == 0xdc || b == 0xdd)
		hl = b == 0xdc ? 3 : 5, n = end - q >= hl ? be(q + 1, hl - 1) : 0;
	else
		return DEC_BAD;
	if (end - q < hl)
		return DEC_MORE;
	if (n < 1 || n > OP_ARGS + 1)
		return DEC_BAD;
	q += hl;
	if (q >= end)
		return DEC_MORE;
	b = *q;
	uint64_t len;
	if ((b & 0xe0) == 0xa0)
		len = b & 31, hl = 1;
	else if (b == 0xd9 || b == 0xda || b == 0xdb)
		hl = b == 0xd9 ? 2 : b == 0xda ? 3 : 5, len = end - q >= hl ? be(q + 1, hl - 1) : 0;
	else
		return DEC_BAD;
	if (end - q < hl)
		return DEC_MORE;
	if (len > 21)
		return DEC_BAD;
	if ((uint64_t)(end - q) < hl + len)
		return DEC_MORE;
	int code = len ? op_lookup((const char *)q + hl, (unsigned)len) : -1;
	if (code < 0 || n - 1 != (uint64_t)op_defs[code].nargs)
		return DEC_BAD;
	q += hl + len;
	memset(row, 0, OP_BYTES);
	row[0] = (uint64_t)code;
	for (int j = 1; j <= op_defs[code].nargs; j++) {
		int64_t sv = 0;
		uint64_t uv = 0;
		bool neg;
		int r = dec_int(&q, end, &sv, &uv, &neg);
		if (r != DEC_OK)
			return r;
		if (neg && !(sv == -1 && j == elf_cols[code]))
			return DEC_BAD;
		row[j] = neg ? ~0ull : uv;
	}
	*p = q;
	return DEC_OK;
}

/* decode_ops(data, out, row, count, elf_cols) -> (decoded, used, bad): list-form operations (msgpack arrays,
 * one after another from data[0]) into packed rows of the writable uint64 buffer out from row on, at most
 * count of them. used: the bytes the decoded ones took. bad: True when the item at data[used] is not a
 * well-formed operation (trace.py decodes it to say why); False when count are done or data ends inside an
 * operation (the caller passes more bytes from data[used]). elf_cols: per opcode the argument that may be -1. */
PyObject *py_decode_ops(PyObject *self, PyObject *args)
{
	Py_buffer data, out, ec;
	Py_ssize_t row, count;
	(void)self;
	if (!PyArg_ParseTuple(args, "y*w*nny*", &data, &out, &row, &count, &ec))
		return NULL;
	PyObject *result = NULL;
	Py_ssize_t rows = out.len / OP_BYTES;
	if (row < 0 || count < 0 || row > rows || count > rows - row || ec.len != OP_NR) {
		PyErr_SetString(PyExc_ValueError, "bad decode_ops arguments");
		goto out;
	}
	if (!name_len[0])
		op_names_init(); /* under the GIL: once */
	const uint8_t *p = data.buf, *start = p, *end = p + data.len;
	uint64_t *w = (uint64_t *)out.buf + (size_t)row * (OP_ARGS + 1);
	Py_ssize_t done = 0;
	int r = DEC_OK;
	Py_BEGIN_ALLOW_THREADS
	for (; done < count; done++, w += OP_ARGS + 1) {
		const uint8_t *q = p;
		r = dec_op(&q, end, ec.buf, w);
		if (r == DEC_MORE && end - p >= LIST_OP_MAX)
			r = DEC_BAD; /* too long to be an operation, whatever follows */
		if (r != DEC_OK)
			break;
		p = q;
	}
	Py_END_ALLOW_THREADS
	result = Py_BuildValue("(nnO)", done, (Py_ssize_t)(p - start), r == DEC_BAD ? Py_True : Py_False);
out:
	PyBuffer_Release(&data);
	PyBuffer_Release(&out);
	PyBuffer_Release(&ec);
	return result;
}
