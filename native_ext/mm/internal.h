/* mm/internal.h: what the mm/ files share among themselves and nobody else calls (as the kernel's mm/internal.h). */
#ifndef PTF_MM_INTERNAL_H
#define PTF_MM_INTERNAL_H
#include "ptf.h"

#define STACK_BYTES (128ull << 10)

enum { FALLBACK = 1 }; /* VM_FAULT_FALLBACK: the huge path gave up, the PTE path goes on */

static inline uint64_t page_frames(const struct engine *e) { return e->geom.page_size >> 12; }
static inline uint64_t pmd_size(const struct engine *e) { return level_size(&e->geom, e->pmd_lvl); }
static inline int pte_level(const struct engine *e) { return e->geom.nlevels - 1; }

/* ZERO_PAGE(vaddr): the arch's (s390 colours it by address) */
static inline uint64_t my_zero_pfn(const struct engine *e, uint64_t addr)
{
	return e->mm_ops->zero_pfn ? e->mm_ops->zero_pfn(e, addr) : ZERO_PFN;
}

/* mm_forbids_zeropage: the arch's (s390: an mm with PGSTEs in use) */
static inline bool mm_forbids_zeropage(const struct engine *e, const struct mm *m)
{
	return e->mm_ops->mm_forbids_zeropage && e->mm_ops->mm_forbids_zeropage(e, m);
}

/* an actor may begin on a cpu only when it is idle (mm/gup.c, mm/rmap.c, mm/mmu_notifier.c) */
static inline int idle_cpu(struct engine *e, uint64_t cpu)
{
	return e->cpus[cpu].actor == A_NONE ? 0 : -EBUSY;
}

static inline void set_out(const struct engine *e, uint64_t addr, uint64_t leaf_pfn, int level, uint64_t *pfn,
			   uint64_t *size)
{
	uint64_t sz = level_size(&e->geom, level);
	*pfn = leaf_pfn + ((addr & (sz - 1)) >> 12);
	*size = sz;
}

/* mm/vma.c */
bool vma_overlaps(struct mm *m, uint64_t start, uint64_t end);
int vma_insert_at(struct mm *m, int pos, struct vma v);
void vma_remove_at(struct mm *m, int pos);
bool is_mergeable_anon_vma(const struct engine *e, uint32_t src_anon, const struct vma *src,
				  const struct vma *tgt, uint32_t tgt_anon);
bool is_mergeable_vma(const struct vma *v, uint32_t flags, uint32_t file);
bool pgoff_continues(const struct engine *e, const struct vma *lo, uint64_t boundary, uint64_t hi_pgoff);
void dup_anon_vma(struct vma *dst, const struct vma *src);
const struct vma *find_mergeable_anon_vma(struct mm *m, const struct vma *v);

/* mm/pgtable.c */
bool pmd_has_deposit(struct engine *e, uint64_t pmdval);
bool pmd_is_file(struct engine *e, uint64_t pmdval);

/* mm/rmap.c */
int anon_vma_prepare(struct engine *e, struct mm *m, struct vma *v);

/* mm/hugetlb.c */
/* VM_MAYSHARE hugetlb: a MAP_SHARED mapping of a hugetlbfs file (hugetlb_mmap), which may share PMD tables */
static inline bool hugetlb_shared(const struct vma *v)
{
	return (v->flags & VMA_HUGETLB) && v->shm;
}
uint64_t hugetlb_size(const struct engine *e, const struct vma *v);
bool unmap_hugepage_vma(struct engine *e, int mm, const struct vma *v, uint64_t start, uint64_t end);
void hugetlb_vm_op_split(struct engine *e, int mm, const struct vma *v, uint64_t addr);
uint64_t hugetlb_unshare_for_move(struct engine *e, int mm, uint64_t addr);
void adjust_range_if_pmd_sharing_possible(const struct engine *e, const struct vma *v, uint64_t *start,
					  uint64_t *end);
int hugetlb_fault(struct engine *e, int mm, struct vma *v, uint64_t addr, bool write, uint64_t *pfn,
			 uint64_t *size);

/* mm/huge_memory.c */
void zap_deposited_table(struct engine *e, int mm, struct tref pmd_tbl);
int __split_huge_pmd(struct engine *e, int mm, uint64_t addr);
int split_huge_pmd_if_needed(struct engine *e, int mm, const struct vma *v, uint64_t addr);
int do_huge_pmd_anonymous_page(struct engine *e, int mm, struct vma *v, uint64_t addr, bool write,
				      struct tref tbl, uint32_t idx, uint64_t *pfn, uint64_t *size);
int do_huge_pmd_wp_page(struct engine *e, int mm, uint64_t addr, struct tref tbl, uint32_t idx,
			       uint64_t *pfn, uint64_t *size);
bool thp_fault_allowed(struct engine *e, struct mm *m, const struct vma *v, uint64_t addr);

/* mm/memory.c */
void zap_page_range_single(struct engine *e, int mm, const struct vma *v, uint64_t start, uint64_t end);
int do_wp_page(struct engine *e, int mm, struct vma *v, uint64_t addr, struct tref tbl, uint32_t idx,
		      int level, uint64_t *pfn, uint64_t *size);

/* mm/shmem.c: the fault state its paths and collapse_pte_mapped_thp share (struct vm_fault) */
struct vm_fault {
	int mm, obj;
	const struct vma *v;
	uint64_t addr, pgoff;   /* the page's address and its page offset in the object (linear_page_index) */
	bool write;
	struct tref pmd_tbl;    /* the table holding the pmd entry for addr */
	uint32_t pmd_idx;
	struct tref prealloc;   /* vmf->prealloc_pte */
	uint64_t pfn, size;     /* what ends up mapped at addr */
};
struct shm_blk *blk_find(struct shm_obj *o, uint64_t bi, uint32_t *pos);
struct shm_blk *blk_get(struct shm_obj *o, uint64_t bi);
void shmem_free_folio(struct engine *e, uint64_t pfn);
int do_set_pmd(struct engine *e, struct vm_fault *vmf, uint64_t head, bool write);
struct tref pte_table(struct engine *e, struct vm_fault *vmf);

/* hugepage_init: without has_transparent_hugepage() (s390 without EDAT-1) THP is TRANSPARENT_HUGEPAGE_UNSUPPORTED */
static inline bool thp_unsupported(const struct engine *e)
{
	return e->arch == ARCH_S390 && e->knob[K_THP_HW] == 1;
}

/* mm/khugepaged.c */
int madvise_collapse(struct engine *e, int mm, int vi, uint64_t start, uint64_t end, uint64_t *prev_end);

/* mm/mmap.c */
void exit_mmap(struct engine *e, int mm);
bool unmap_hugepage_range_vmas(struct engine *e, int mm, uint64_t start, uint64_t end, bool downgrade);
int vma_split_at(struct engine *e, int mm, uint64_t addr);
int do_vmi_munmap(struct engine *e, int mm, uint64_t start, uint64_t len, bool downgrade);
int copy_vma(struct engine *e, int mm, const struct vma *src, uint64_t addr, uint64_t len, uint64_t pgoff,
	     bool *need_rmap_locks);
bool copy_vma_need_rmap_locks(struct engine *e, int mm, const struct vma *src, uint64_t addr, uint64_t len,
			      uint64_t pgoff);



#endif
