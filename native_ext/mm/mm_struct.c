/* mm/mm_struct.c: an mm_struct's own lifetime (kernel/fork.c's mm_alloc, mmgrab, mmdrop): the pgd and the VMA array.
 * Below every mm path, so that the walkers (gup.c, rmap.c) may hold and drop an mm without calling up. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

/* mm_alloc + pgd_alloc: top is the level of the top table (-1: what exec gets; s390 3 levels). */
int mm_alloc(struct engine *e, bool alloc_pgste, int top, int *out)
{
	int id;
	for (id = 0; id < MAX_MMS && e->mms[id].used; id++)
		;
	if (id == MAX_MMS)
		return -ENOMEM;
	struct mm *m = &e->mms[id];
	memset(m, 0, sizeof(*m));
	tlb_forget_mm(e, id); /* a new ASID / PCID: what the slot's last mm left cached cannot translate for this one */
	if (id >= e->mm_hwm)
		e->mm_hwm = id + 1;
	e->frag_dirty = true;
	m->frag_list = -1;
	m->alloc_pgste = alloc_pgste;
	m->pgt.mm = (int16_t)id;
	m->pgt.top = top >= 0 ? top : e->mm_ops->pgd_top;
	while (e->geom.lv[m->pgt.top].folded)
		m->pgt.top++;
	const struct level_geom *tl = &e->geom.lv[m->pgt.top];
	int ret = table_alloc(e, id, m->pgt.top, (int)((tl->table_bytes + 4095) / 4096), &m->pgt.root);
	if (ret)
		return ret;
	table_set_linked(e, m->pgt.root, true);
	emit(e, EV_TABLE_ALLOC, m->pgt.top, tref_phys(m->pgt.root), id, 0);
	m->asce_limit = e->mm_ops->init_new_context ? e->mm_ops->init_new_context(e, m) : e->task_size;
	m->used = true;
	m->users = 1;
	*out = id;
	return 0;
}

void mmgrab(struct engine *e, int mm) { e->mms[mm].count++; }

/* mmdrop: the pgd goes when nothing points at the mm any more. */
void mmdrop(struct engine *e, int mm)
{
	struct mm *m = &e->mms[mm];
	if (m->count > 0)
		m->count--;
	if (m->users > 0 || m->count > 0 || !m->used)
		return;
	if (m->pgt.root.blk >= 0) {
		table_free(e, m->pgt.root, TABLE_FREE_NOW, m->pgt.top, mm);
		m->pgt.root = TREF_NONE;
	}
	free(m->vmas);
	m->vmas = NULL;
	m->nvma = 0;
	m->used = false;
}
