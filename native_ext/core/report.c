/* core/report.c: how every layer reports: the first violation (its message and focus), --steps events. It calls
 * nothing of the engine's, so any file may report without depending on the files above it. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "ptf.h"

static void vviolate(struct engine *e, enum violation v, const struct viol_focus *f, const char *fmt, va_list ap)
{
	if (e->viol)
		return;
	e->viol = v;
	e->viol_op = e->op_index;
	e->viol_focus = f ? *f : (struct viol_focus){ 0 };
	vsnprintf(e->viol_msg, sizeof(e->viol_msg), fmt, ap);
}

void violate(struct engine *e, enum violation v, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vviolate(e, v, NULL, fmt, ap);
	va_end(ap);
}

void violate_at(struct engine *e, enum violation v, const struct viol_focus *f, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vviolate(e, v, f, fmt, ap);
	va_end(ap);
}

void emit(struct engine *e, enum event t, uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
	if (!e->steps)
		return;
	if (e->nevents == e->capevents) {
		size_t n = e->capevents ? e->capevents * 2 : 256;
		struct event_rec *p = realloc(e->events, n * sizeof(*p));
		if (!p)
			return;
		e->events = p;
		e->capevents = n;
	}
	e->events[e->nevents++] = (struct event_rec){ e->op_index, t, a, b, c, d };
}
