/* arch/s390/pgalloc.h: what arch/s390/pgalloc.c offers beyond s390_mm_ops (asm/pgalloc.h): the dispatcher's
 * fragment oracle and the gmap's table conversion. */
#ifndef PTF_S390_PGALLOC_H
#define PTF_S390_PGALLOC_H
#include "ptf.h"

int page_table_alloc(struct engine *e, int mm, struct tref *out);
void __tlb_remove_table(struct engine *e, int32_t blk, int half);
int crst_table_upgrade(struct engine *e, int mm, uint64_t end);
int s390_frag_check(struct engine *e);
/* Z4 (s390.frag_release): page_table_free stopped between its atomic_xor_bits and its list work */
int frag_hold(struct engine *e, int cpu);
int frag_end(struct engine *e, int cpu);
int frag_window_wait(struct engine *e, uint64_t opcode);

#endif
