/* mm/vma.c: the VMA array: lookup (find_vma), insertion and removal, and the merge tests (anon_vma, pgoff). */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

bool vma_overlaps(struct mm *m, uint64_t start, uint64_t end)
{
	int i = vma_index_after(m, start);
	return i < m->nvma && m->vmas[i].start < end;
}

int vma_insert_at(struct mm *m, int pos, struct vma v)
{
	if (m->nvma >= MAX_VMAS)
		return -ENOMEM;
	struct vma *p = realloc(m->vmas, (size_t)(m->nvma + 1) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	m->vmas = p;
	memmove(&p[pos + 1], &p[pos], (size_t)(m->nvma - pos) * sizeof(*p));
	p[pos] = v;
	m->nvma++;
	return 0;
}

void vma_remove_at(struct mm *m, int pos)
{
	memmove(&m->vmas[pos], &m->vmas[pos + 1], (size_t)(m->nvma - pos - 1) * sizeof(struct vma));
	m->nvma--;
}

/* is_mergeable_anon_vma: may the range (src_anon, from VMA src, NULL for a new range) merge into VMA tgt?
 * v6.6 tests list_is_singular() on tgt's anon_vma_chain, which is empty when tgt was never faulted, so a
 * range with an anon_vma does not merge into such a VMA; 6.16+ (mm.merge_unfaulted=yes) tests the chain of
 * the VMA whose anon_vma the merged one keeps (vma_had_uncowed_parents). tgt NULL: the prev/next check. */
static bool uncowed_parents(const struct vma *v) { return v && v->anon && v->cloned; }

bool is_mergeable_anon_vma(const struct engine *e, uint32_t src_anon, const struct vma *src,
				  const struct vma *tgt, uint32_t tgt_anon)
{
	if (tgt && e->knob[K_MERGE_UNFAULTED] == 1) {
		if (!tgt_anon && src_anon)
			return !uncowed_parents(src);
		if (tgt_anon && !src_anon)
			return !uncowed_parents(tgt);
		return src_anon == tgt_anon;
	}
	bool singular = tgt && tgt->anon && !tgt->cloned;
	if ((!src_anon || !tgt_anon) && (!tgt || singular))
		return true;
	return src_anon == tgt_anon;
}

/* is_mergeable_vma: equal flags and file, and no hugetlb VMA: hugetlbfs_file_mmap gives every one VM_DONTEXPAND,
 * which is VM_SPECIAL, and vma_merge returns NULL for VM_SPECIAL flags before it looks at a neighbour (mm/mmap.c) */
bool is_mergeable_vma(const struct vma *v, uint32_t flags, uint32_t file)
{
	return v->flags == flags && v->file == file && !(flags & VMA_HUGETLB);
}

/* linear_page_index: the file page offset that addr maps in v (vm_pgoff counts pages of the arch's size). */
uint64_t vma_pgoff_at(const struct engine *e, const struct vma *v, uint64_t addr)
{
	return v->pgoff + (addr - v->start) / e->geom.page_size;
}

/* can_vma_merge_after / can_vma_merge_before: a VMA merges only where the offsets continue
 * (prev->vm_pgoff + vma_pages(prev) == pgoff; next->vm_pgoff == pgoff + pglen): lo's offsets, run on to
 * boundary, must reach hi_pgoff there. An anonymous VMA's vm_pgoff is its address's at mmap, which mremap
 * carries to the new address (copy_vma), so moved anonymous VMAs need the check too. */
bool pgoff_continues(const struct engine *e, const struct vma *lo, uint64_t boundary, uint64_t hi_pgoff)
{
	return vma_pgoff_at(e, lo, boundary) == hi_pgoff;
}

/* dup_anon_vma: the expanding VMA takes the anon_vma of the one it absorbs. */
void dup_anon_vma(struct vma *dst, const struct vma *src)
{
	if (src->anon && !dst->anon) {
		dst->anon = src->anon;
		dst->anon_root = src->anon_root;
		dst->cloned = src->cloned;
	}
}

/* find_mergeable_anon_vma -> reusable_anon_vma: a compatible neighbour's (next first) anon_vma whose chain is
 * singular, or NULL. */
const struct vma *find_mergeable_anon_vma(struct mm *m, const struct vma *v)
{
	int i = (int)(v - m->vmas);
	const struct vma *n = i + 1 < m->nvma ? &m->vmas[i + 1] : NULL;
	const struct vma *p = i > 0 ? &m->vmas[i - 1] : NULL;
	if (n && n->start == v->end && n->flags == v->flags && n->file == v->file && n->anon && !n->cloned)
		return n;
	if (p && p->end == v->start && p->flags == v->flags && p->file == v->file && p->anon && !p->cloned)
		return p;
	return NULL;
}
