/* arch/s390/gmap.h: the classic gmap of arch/s390/gmap.c (asm/gmap.h), for s390's KVM (arch/s390/kvm/), the PTE-table
 * frees that unlink it (arch/s390/pgalloc.c) and the dispatcher's gmap oracle. */
#ifndef PTF_S390_GMAP_H
#define PTF_S390_GMAP_H
#include "ptf.h"

int s390_enable_sie(struct engine *e, int mm);
void gmap_unlink(struct engine *e, int mm, struct tref t, uint64_t vmaddr);
int gmap_create(struct engine *e, struct vm *v);
int __gmap_link(struct engine *e, struct vm *v, uint64_t gaddr, uint64_t vmaddr);
int gmap_map_segment(struct engine *e, struct vm *v, uint64_t from, uint64_t to, uint64_t len);
int gmap_unmap_segment(struct engine *e, struct vm *v, uint64_t to, uint64_t len);
int __gmap_translate(const struct vm *v, uint64_t gaddr, uint64_t *vmaddr);
void gmap_destroy(struct engine *e, struct vm *v);
int gmap_check(struct engine *e);

#endif
