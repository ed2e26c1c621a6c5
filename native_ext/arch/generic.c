/* arch/generic.c: the arm64 and x86 hooks behind struct mm_ops (asm-generic/pgalloc.h): whole-page PTE tables
 * freed through the table pool, after a grace period when the table_free knob says RCU; one zero page. */
#include "ptf.h"

/* pte_free: at once; nobody can reach the table */
static void generic_pte_free(struct engine *e, int mm, struct tref t)
{
	table_free(e, t, TABLE_FREE_NOW, e->geom.nlevels - 1, mm);
}

/* __pte_free_tlb: tlb_remove_table, RCU-delayed (MMU_GATHER_RCU_TABLE_FREE) or immediate per the knob */
static void generic_pte_free_tlb(struct engine *e, int mm, struct tref t, uint64_t vmaddr)
{
	(void)vmaddr;
	table_free(e, t, e->knob[K_TABLE_FREE] == TF_RCU ? TABLE_FREE_RCU : TABLE_FREE_NOW, e->geom.nlevels - 1, mm);
}

/* pte_free_defer (mm/pgtable-generic.c): call_rcu(pte_free_now) */
static void generic_pte_free_defer(struct engine *e, int mm, struct tref t, uint64_t vmaddr)
{
	(void)vmaddr;
	emit(e, EV_TABLE_DEFER, e->geom.nlevels - 1, tref_phys(t), mm, 0);
	table_free(e, t, TABLE_FREE_RCU, 0, 0);
}

#define GENERIC_MM_OPS \
	.pte_free = generic_pte_free, \
	.pte_free_tlb = generic_pte_free_tlb, \
	.pte_free_defer = generic_pte_free_defer, \
	.rcu_callback = { [CB_FREE_BLOCK] = tlb_remove_table_rcu }, \
	.have_move_pmd = true, .have_move_pud = true /* x86 and arm64 select both (s390 neither) */

const struct mm_ops arm64_mm_ops = { GENERIC_MM_OPS, .elf_machine = 183 /* EM_AARCH64 */ };
const struct mm_ops x86_64_mm_ops = { GENERIC_MM_OPS, .elf_machine = 62 /* EM_X86_64 */ };
