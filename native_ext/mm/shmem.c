/* mm/shmem.c: shmem objects (a page cache indexed by page offset), the shared-memory fault path (do_read_fault with
 * do_fault_around and filemap_map_pages, do_shared_fault, finish_fault, do_set_pmd, wp_page_shared); MADV_COLLAPSE of shmem
 * is khugepaged.c's. Functions are named after the v6.6 kernel functions they model (docs/model-notes.md). */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"
#include "mm/internal.h"

enum { NOPAGE = 2 }; /* VM_FAULT_NOPAGE (VM_FAULT_FALLBACK: mm/internal.h) */


/* ---- the page cache ---- */

struct shm_obj *shmem_obj(struct engine *e, int obj)
{
	e->shm[obj].used = true;
	return &e->shm[obj];
}

/* The block with index bi (page offset / pages per block), or NULL; *pos: where it belongs. */
struct shm_blk *blk_find(struct shm_obj *o, uint64_t bi, uint32_t *pos)
{
	uint32_t lo = 0, hi = o->nblk;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (o->blk[mid].index < bi)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (pos)
		*pos = lo;
	return lo < o->nblk && o->blk[lo].index == bi ? &o->blk[lo] : NULL;
}

/* The block with index bi, inserted (empty) where it belongs when the object has none; NULL when memory runs out.
 * The page cache's xarray slot for shmem and hugetlbfs alike. */
struct shm_blk *blk_get(struct shm_obj *o, uint64_t bi)
{
	uint32_t pos;
	struct shm_blk *b = blk_find(o, bi, &pos);
	if (b)
		return b;
	if (o->nblk == o->capblk) {
		uint32_t n = o->capblk ? o->capblk * 2 : 8;
		struct shm_blk *p = realloc(o->blk, (size_t)n * sizeof(*p));
		if (!p)
			return NULL;
		o->blk = p;
		o->capblk = n;
	}
	memmove(&o->blk[pos + 1], &o->blk[pos], (size_t)(o->nblk - pos) * sizeof(*o->blk));
	o->blk[pos] = (struct shm_blk){ bi, 0, NULL };
	o->nblk++;
	return &o->blk[pos];
}

/* filemap_get_entry: the first 4K frame of the page at index (0: a hole), and its folio. */
uint64_t shmem_lookup(struct engine *e, int obj, uint64_t index, struct compound **folio)
{
	struct shm_blk *b = blk_find(&e->shm[obj], index / e->shm_pages, NULL);
	uint64_t i = index % e->shm_pages, pfn = 0;
	if (b)
		pfn = b->huge ? b->huge + i * page_frames(e) : b->pfn ? b->pfn[i] : 0;
	if (folio)
		*folio = pfn ? data_lookup(e, pfn) : NULL;
	return pfn;
}

/* shmem_get_folio_gfp(SGP_CACHE): the page at index; a miss allocates a small page (shmem_is_huge is false under
 * the default shmem_enabled=never, so a fault never allocates a huge one) and adds it to the cache. 0: no memory. */
static uint64_t shmem_get_folio(struct engine *e, int obj, uint64_t index)
{
	uint64_t pfn = shmem_lookup(e, obj, index, NULL);
	if (pfn)
		return pfn;
	struct shm_obj *o = shmem_obj(e, obj);
	struct shm_blk *b = blk_get(o, index / e->shm_pages);
	if (!b)
		return 0;
	if (!b->pfn && !(b->pfn = calloc(e->shm_pages, sizeof(uint64_t))))
		return 0;
	pfn = data_alloc(e, page_frames(e));
	if (!pfn)
		return 0;
	data_lookup(e, pfn)->shm = (uint8_t)(obj + 1);
	b->pfn[index % e->shm_pages] = pfn;
	return pfn;
}

/* folio_put of the cache's last reference: the page is freed; a page some live leaf still maps is
 * freed-page-mapped. */
void shmem_free_folio(struct engine *e, uint64_t pfn)
{
	struct compound *c = data_lookup(e, pfn);
	const struct viol_focus at = { .has = VF_PFN, .pfn = pfn };
	if (!c)
		return;
	if (c->freed) {
		violate_at(e, V_DOUBLE_FREE, &at, "shmem page pfn 0x%llx freed twice", (unsigned long long)pfn);
		return;
	}
	c->freed = 1;
	e->st.data_pages -= cpd_nr(c);
	emit(e, EV_DATA_FREE, c->pfn, cpd_nr(c), 0, 0);
	if (c->live > 0)
		violate_at(e, V_FREED_PAGE_MAPPED, &at, "shmem page pfn 0x%llx freed by its object while %d live leaves "
			   "still map it", (unsigned long long)pfn, c->live);
	else if (c->mapcount)
		violate_at(e, V_ENGINE_ASSERT, &at, "shmem page pfn 0x%llx freed with mapcount %d but no live leaf",
			   (unsigned long long)pfn, c->mapcount);
}

/* shmem_evict_inode at the end of the trace, once every mm has gone: each object lets go of its pages. */
void shmem_release_all(struct engine *e)
{
	for (int obj = 0; obj < NR_FILES; obj++) {
		struct shm_obj *o = &e->shm[obj];
		for (uint32_t k = 0; k < o->nblk; k++) {
			struct shm_blk *b = &o->blk[k];
			if (b->huge)
				shmem_free_folio(e, b->huge);
			for (uint64_t i = 0; b->pfn && i < e->shm_pages; i++)
				if (b->pfn[i])
					shmem_free_folio(e, b->pfn[i]);
			free(b->pfn);
		}
		free(o->blk);
		memset(o, 0, sizeof(*o));
	}
}

/* ptf_fini: the memory only. */
void shmem_fini(struct engine *e)
{
	for (int obj = 0; obj < NR_FILES; obj++) {
		for (uint32_t k = 0; k < e->shm[obj].nblk; k++)
			free(e->shm[obj].blk[k].pfn);
		free(e->shm[obj].blk);
		memset(&e->shm[obj], 0, sizeof(e->shm[obj]));
	}
}

/* ---- the shared fault path ---- */

/* transhuge_vma_suitable: the PMD block at addr lies inside the VMA and, for a file VMA, the VMA's start and
 * vm_pgoff are congruent modulo the PMD size (IS_ALIGNED((vm_start >> PAGE_SHIFT) - vm_pgoff, HPAGE_PMD_NR)). */
bool transhuge_vma_suitable(const struct engine *e, const struct vma *v, uint64_t addr)
{
	uint64_t pmd = pmd_size(e), haddr = addr & ~(pmd - 1);
	if (v->shm && ((v->start / e->geom.page_size - v->pgoff) & (e->shm_pages - 1)))
		return false;
	return haddr >= v->start && haddr + pmd > haddr && haddr + pmd <= v->end;
}

static uint64_t pmd_entry(struct engine *e, struct vm_fault *vmf)
{
	return entry_get(e, vmf->pmd_tbl, vmf->pmd_idx);
}

static bool pmd_none(struct engine *e, struct vm_fault *vmf)
{
	return e->geom.fmt->kind(e->pmd_lvl, pmd_entry(e, vmf)) == E_EMPTY;
}

/* pte_alloc_one into vmf->prealloc_pte */
static int prealloc_pte(struct engine *e, struct vm_fault *vmf)
{
	if (vmf->prealloc.blk >= 0)
		return 0;
	return alloc_table_for(e, vmf->mm, pte_level(e), &vmf->prealloc);
}

/* pmd_install: the preallocated table goes into the empty pmd. */
static void pmd_install(struct engine *e, struct vm_fault *vmf)
{
	const struct entry_fmt *f = e->geom.fmt;
	entry_write(e, vmf->pmd_tbl, e->pmd_lvl, vmf->pmd_idx, f->table(e->pmd_lvl, tref_phys(vmf->prealloc)));
	table_set_linked(e, vmf->prealloc, true);
	vmf->prealloc = TREF_NONE;
}

/* do_set_pmd: a PMD leaf for the PMD-size folio (head) over the block of addr, when transhuge_vma_suitable and the
 * pmd is still none; no deposit (arch_needs_pgtable_deposit is only true on ppc). mm.file_pmd_nohuge=ptes:
 * vma_thp_disabled refuses (6.12, 6.6.60). */
int do_set_pmd(struct engine *e, struct vm_fault *vmf, uint64_t head, bool write)
{
	const struct entry_fmt *f = e->geom.fmt;
	uint64_t haddr = vmf->addr & ~(pmd_size(e) - 1);
	if (e->knob[K_FILE_PMD_NOHUGE] == 1 && (vmf->v->flags & VMA_NOHUGE))
		return FALLBACK;
	if (!transhuge_vma_suitable(e, vmf->v, haddr) || !pmd_none(e, vmf))
		return FALLBACK;
	entry_write(e, vmf->pmd_tbl, e->pmd_lvl, vmf->pmd_idx, f->leaf(e->pmd_lvl, head << 12, write));
	data_lookup(e, head)->mapcount++; /* folio_add_file_rmap_pmd */
	emit(e, EV_LEAF_SET, e->pmd_lvl, haddr, head, vmf->mm);
	vmf->pfn = head + ((vmf->addr - haddr) >> 12);
	vmf->size = pmd_size(e);
	return 0;
}

/* The PTE table under the pmd (it holds one now). */
struct tref pte_table(struct engine *e, struct vm_fault *vmf)
{
	return tref_from_phys(e, e->geom.fmt->addr(e->pmd_lvl, pmd_entry(e, vmf)));
}

static uint32_t pte_index(const struct engine *e, uint64_t addr)
{
	return (uint32_t)(addr / e->geom.page_size) & (e->geom.lv[pte_level(e)].entries - 1);
}

/* set_pte_range for one page: a file rmap entry (folio_add_file_rmap_ptes), writable for a write fault. */
static void set_pte(struct engine *e, struct vm_fault *vmf, struct tref pte, uint64_t addr, uint64_t pfn, bool write)
{
	int pl = pte_level(e);
	entry_write(e, pte, pl, pte_index(e, addr), e->geom.fmt->leaf(pl, pfn << 12, write));
	data_lookup(e, pfn)->mapcount++;
	emit(e, EV_LEAF_SET, pl, addr, pfn, vmf->mm);
}

/* filemap_map_pages over page offsets [start, end] (one PTE table's worth): the first cached folio that
 * next_uptodate_folio can trylock decides filemap_map_pmd (a PMD-size folio with the pmd none: do_set_pmd; else
 * the preallocated table is installed); then filemap_map_folio_range maps every cached, unlocked page whose PTE is
 * none, read-only. NOPAGE when the faulting page got mapped. */
static int filemap_map_pages(struct engine *e, struct vm_fault *vmf, uint64_t start, uint64_t end)
{
	const struct vma *v = vmf->v;
	struct compound *c;
	uint64_t first = end + 1;
	for (uint64_t i = start; i <= end && first > end; i++)
		if (shmem_lookup(e, vmf->obj, i, &c) && !folio_locked(e, c->pfn))
			first = i;
	if (first > end)
		return 0;
	if (e->geom.fmt->kind(e->pmd_lvl, pmd_entry(e, vmf)) == E_LEAF)
		return NOPAGE;
	shmem_lookup(e, vmf->obj, first, &c);
	if (pmd_none(e, vmf) && cpd_nr(c) == e->shm_pages * page_frames(e) && !do_set_pmd(e, vmf, c->pfn, false))
		return NOPAGE;
	if (pmd_none(e, vmf)) {
		if (vmf->prealloc.blk < 0)
			return 0;
		pmd_install(e, vmf);
	}
	struct tref pte = pte_table(e, vmf);
	int ret = 0, pl = pte_level(e);
	for (uint64_t i = first; i <= end; i++) {
		uint64_t pfn = shmem_lookup(e, vmf->obj, i, &c);
		if (!pfn || folio_locked(e, c->pfn))
			continue;
		uint64_t a = v->start + (i - v->pgoff) * e->geom.page_size;
		if (e->geom.fmt->kind(pl, entry_get(e, pte, pte_index(e, a))) != E_EMPTY)
			continue;
		set_pte(e, vmf, pte, a, pfn, false);
		if (a == vmf->addr) {
			vmf->pfn = pfn;
			vmf->size = e->geom.page_size;
			ret = NOPAGE;
		}
	}
	return ret;
}

/* do_fault_around: fault_around_bytes (64K) worth of pages, aligned, clipped to the VMA and to the PTE table. */
static int do_fault_around(struct engine *e, struct vm_fault *vmf)
{
	uint64_t page = e->geom.page_size, nr = 65536 / page, ptrs = e->geom.lv[pte_level(e)].entries;
	uint64_t pte_off = pte_index(e, vmf->addr), vma_off = vmf->pgoff - vmf->v->pgoff;
	uint64_t vma_pages = (vmf->v->end - vmf->v->start) / page;
	uint64_t from = pte_off & ~(nr - 1), lo = pte_off - (pte_off < vma_off ? pte_off : vma_off);
	if (lo > from)
		from = lo;
	uint64_t to = from + nr;
	if (to > ptrs)
		to = ptrs;
	if (to > pte_off + vma_pages - vma_off)
		to = pte_off + vma_pages - vma_off;
	if (pmd_none(e, vmf)) {
		int ret = prealloc_pte(e, vmf);
		if (ret)
			return ret;
	}
	return filemap_map_pages(e, vmf, vmf->pgoff + from - pte_off, vmf->pgoff + (to - 1) - pte_off);
}

/* __do_fault (a table preallocated while the pmd is none) -> shmem_fault -> finish_fault: a PMD-size folio with the
 * pmd none tries do_set_pmd; else the table is installed and one PTE set (VM_SHARED: the page itself, no COW). */
static int do_fault_page(struct engine *e, struct vm_fault *vmf)
{
	if (pmd_none(e, vmf)) {
		int ret = prealloc_pte(e, vmf);
		if (ret)
			return ret;
	}
	uint64_t pfn = shmem_get_folio(e, vmf->obj, vmf->pgoff);
	if (!pfn)
		return -ENOMEM;
	struct compound *c = data_lookup(e, pfn);
	if (pmd_none(e, vmf)) {
		if (cpd_nr(c) > page_frames(e) && !do_set_pmd(e, vmf, c->pfn, vmf->write))
			return 0;
		pmd_install(e, vmf);
	}
	struct tref pte = pte_table(e, vmf);
	if (e->geom.fmt->kind(pte_level(e), entry_get(e, pte, pte_index(e, vmf->addr))) == E_EMPTY)
		set_pte(e, vmf, pte, vmf->addr, pfn, vmf->write);
	vmf->pfn = pfn;
	vmf->size = e->geom.page_size;
	return 0;
}

/* do_read_fault: fault-around first (should_fault_around: more than one page in 64K), ->fault if that did not map
 * the page; do_shared_fault: ->fault and finish_fault with a writable PTE. */
static int do_fault_file(struct engine *e, struct vm_fault *vmf)
{
	if (!vmf->write && 65536 / e->geom.page_size > 1) {
		int ret = do_fault_around(e, vmf);
		if (ret < 0)
			return ret;
		if (ret == NOPAGE)
			return 0;
	}
	return do_fault_page(e, vmf);
}

/* handle_mm_fault for a shmem VMA: __handle_mm_fault (shmem has no huge_fault: a write to a read-only PMD leaf is
 * wp_huge_pmd's __split_huge_pmd, which zaps a file PMD, then the PTE path), handle_pte_fault (a write to a
 * read-only PTE: do_wp_page -> wp_page_shared -> wp_page_reuse, no notifier), do_fault. A fault that would lock a
 * folio an rmap walker holds (shmem_fault's folio_lock, wp_page_shared's) waits: -EBUSY, before any change. */
int do_shmem_fault(struct engine *e, int mm, const struct vma *v, uint64_t addr, bool write, uint64_t *pfn_out,
		   uint64_t *size_out)
{
	const struct entry_fmt *f = e->geom.fmt;
	int ml = e->pmd_lvl, pl = pte_level(e), lvl = -1;
	struct vm_fault vmf = { mm, v->shm - 1, v, addr, vma_pgoff_at(e, v, addr), write, TREF_NONE, 0, TREF_NONE,
				0, 0 };
	struct tref t;
	uint32_t i;
	uint64_t mapped;
	int k = host_lookup(e, mm, addr, &lvl, &mapped, &t, &i);
	if (!(k == E_LEAF && (!write || f->writable(lvl, entry_get(e, t, i))))) {
		struct compound *c;
		int ret = shmem_lookup(e, vmf.obj, vmf.pgoff, &c) ? lock_would_wait(e, LC_FOLIO, c->pfn, LM_WRITE) : 0;
		if (ret)
			return ret; /* shmem_fault's folio_lock */
	}
	int ret = pt_slot(e, mm, addr, ml, &vmf.pmd_tbl, &vmf.pmd_idx, &lvl); /* p4d_alloc, pud_alloc, pmd_alloc */
	if (ret)
		return ret;
	if (lvl != ml)
		return -EFAULT;
	uint64_t pmdval = pmd_entry(e, &vmf);
	if (f->kind(ml, pmdval) == E_LEAF) {
		uint64_t sz = pmd_size(e);
		if (!write || f->writable(ml, pmdval)) {
			*pfn_out = (f->addr(ml, pmdval) >> 12) + ((addr & (sz - 1)) >> 12);
			*size_out = sz;
			return 0;
		}
		ret = split_huge_pmd(e, mm, addr); /* wp_huge_pmd: zaps the file PMD, VM_FAULT_FALLBACK */
		if (ret || e->viol)
			return ret;
	}
	if (!pmd_none(e, &vmf)) { /* handle_pte_fault */
		struct tref pte = pte_table(e, &vmf);
		uint32_t pi = pte_index(e, addr);
		uint64_t ent = entry_get(e, pte, pi);
		if (f->kind(pl, ent) == E_LEAF) {
			if (write && !f->writable(pl, ent)) /* wp_page_reuse */
				entry_write(e, pte, pl, pi, f->leaf(pl, f->addr(pl, ent), true));
			*pfn_out = f->addr(pl, ent) >> 12;
			*size_out = e->geom.page_size;
			return 0;
		}
	}
	ret = do_fault_file(e, &vmf);
	if (vmf.prealloc.blk >= 0)
		pte_free(e, mm, vmf.prealloc); /* do_fault: the preallocated table was not used */
	if (ret)
		return ret;
	*pfn_out = vmf.pfn;
	*size_out = vmf.size;
	return 0;
}
