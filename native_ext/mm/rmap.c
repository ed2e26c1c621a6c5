/* mm/rmap.c: anon_vma_prepare, the rmap walker actor and the rmap locks it holds (anon_vma root, i_mmap_rwsem). */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

/* anon_vma_prepare: reuse a compatible neighbour's anon_vma, else a new one (its own root). Taking the reused
 * anon_vma's lock for write waits for an rmap walker that holds its root for read: -EBUSY, nothing changed. */
int anon_vma_prepare(struct engine *e, struct mm *m, struct vma *v)
{
	if (v->anon)
		return 0;
	const struct vma *r = find_mergeable_anon_vma(m, v);
	int ret = r ? rmap_lock_wait(e, RL_ANON, r->anon_root) : 0;
	if (ret)
		return ret;
	if (r) {
		v->anon = r->anon;
		v->anon_root = r->anon_root;
	} else {
		v->anon = v->anon_root = ++e->next_anon;
	}
	v->cloned = 0;
	return 0;
}
