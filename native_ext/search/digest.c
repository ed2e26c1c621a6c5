/* search/digest.c: the state digest: a hash of everything that decides what any future operation does, and
 * nothing else, so that `ptfuzz check` may treat two states with one digest as one.
 *
 * The promise (soundness): two states with equal digests give the same result, the same violation kind
 * and again equal digests for every future sequence of operations, teardown included (up to 64-bit hash
 * collisions). Messages are not promised: they print table addresses and pfns, which the digest renames.
 *
 * Canonical names instead of allocation order. Table addresses (block numbers), data pfns, anon_vma and
 * hugetlbfs file identities, RCU section ids and mmu_invalidate_seq are handed out by counters and free
 * lists, so the same structure reached in another order has other numbers. The engine only ever compares
 * them for equality (a table, a compound, an anon_vma root) or asks for their liveness; it never orders
 * them or does arithmetic across them (pfn arithmetic stays inside one compound, which is naturally
 * aligned: data_alloc aligns to the compound's size, and the stage-2 paths round a pfn down only inside
 * a host leaf at least that big). So they are hashed under a renaming:
 * - blocks are numbered in the order a deterministic traversal first reaches them: mms by slot, each
 *   mm's root then depth-first through table entries in index order, deposits after their PMD table,
 *   the mm's fragment reuse list in list order, the shmem objects, the RCU callbacks in queue order,
 *   each VM's own tables (numbered per VM, see symmetry), the actors; free blocks are named by their
 *   position on the free list (a stale pointer to one may see it reused: the next allocations take the
 *   list in order, so the name says which allocation will reuse it); a pointer outside the pool is raw;
 * - compounds are numbered by first reference (leaf entries, shmem page caches, actors); a pfn is
 *   (compound, offset). Never-referenced live compounds are hashed after, in pfn order (the teardown
 *   audit sees them). Freed compounds nobody references are left out: pfns are never reused
 *   (data_alloc only moves up), so nothing can reach them again. next_pfn is left out for the same
 *   reason: a future allocation is a fresh pfn in either state, aligned to its own size;
 * - anon_vma and hugetlbfs file identities by first appearance; fresh ones are always new;
 * - RCU: a callback waits for cpu i iff cpu i is still in the section it was in when the callback was
 *   queued (rcu.c cb_ready); section ids only ever grow, so that relation, per callback and cpu, is all
 *   that matters, and section ids are not hashed;
 * - mmu_invalidate_seq is only compared with the snapshot an in-flight guest fault took (kvm/kvm_main.c
 *   s2_fault_commit), and only grows: the fault's "changed since" bit replaces both numbers;
 * - table generations only decide whether a remembered pointer is alive (tref_alive): a dead pointer
 *   stays dead, because generations only grow, so a pointer is hashed as alive (and which table) or dead.
 *
 * Raw (not renamed): mm slots (mm_new takes the lowest free slot, and several paths walk the mms in slot
 * order: the shmem rmap, retract_page_tables), pids, cpus, VMs and shmem object numbers (operations name
 * them), addresses, knob and config values (fixed for a run and not hashed), and every field of struct
 * mm, struct cpu and struct vm that is not renamed above: those three are hashed as a byte copy with the
 * renamed fields rewritten, so a field added to them later is in the digest until someone proves it may
 * be renamed or dropped.
 *
 * Left out: statistics (except pages_in_use, which the pool's capacity check reads), op_index, the --steps
 * events, the oracle's dirty hints (false between operations), data_lookup's cache, stale fields of an
 * unused mm, VM or memslot and of an idle actor (mm_new, vm_create and every *_begin overwrite them),
 * the contents of free table halves (table_alloc and init_pte_half rewrite every entry), allocation
 * capacities, and the free list's order beyond what names its referenced members.
 *
 * Symmetry (ptf_digest_sym): the caller may name groups of pids, cpus and VMs that its operations use
 * interchangeably (every operation on one has its twin on the others). The engine treats a pid only as
 * an index into procs (an mm is reached through the slot it holds, and slots stay raw); a cpu as an
 * index into cpus plus the RCU relation; a VM as an index plus its guest faults' references; loops over
 * them are existence tests, except the end-of-trace teardown, which destroys every VM, aborts every actor
 * and exits every process in index order: each of those tears down its own objects, and shared objects
 * (shmem pages, COW pages, RCU callbacks) are released when their last user is, whichever goes first, so
 * the verdict does not depend on that order. A group's members are hashed as records without their
 * index and sorted; a reference to a member (a guest fault's VM) uses its rank in that order (ties by
 * index: a tie can only cost a merge, never make one). Tables a VM owns are named per VM, so that two VMs
 * with the same tables give the same record; a stage-2 table reached from outside its own VM (never, in
 * the engine) turns VM symmetry off for that digest. */
#include <stdlib.h>
#include <string.h>
#include "ptf.h"

#define TAG_FREE 0x80000000u  /* a free block, by free-list position */
#define TAG_LOCAL 0x40000000u /* a stage-2 / gmap table, numbered inside its VM */
#define TAG_RAW 0xc0000000u   /* a block number outside the pool */
#define PFN_CANON (1ull << 63) /* a renamed pfn: compound << 32 | offset */
#define REC_DEFAULT 0xdefa017ull    /* the record of an unused VM, an idle cpu, a pid that never ran */

/* A strong 64-bit mix: the digest is a set key for millions of states. */
static inline uint64_t mix(uint64_t h, uint64_t w)
{
	w *= 0x9e3779b97f4a7c15ull;
	w ^= w >> 29;
	h ^= w;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 31;
	return h;
}

/* A struct's bytes: four independent lanes (a 1 KB struct vm is 128 words: one chain of mixes would be the
 * digest's longest dependency), folded into h at the end. */
static uint64_t mix_bytes(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t l[4] = { 0x243f6a8885a308d3ull, 0x13198a2e03707344ull, 0xa4093822299f31d0ull, 0x082efa98ec4e6c89ull };
	uint64_t w[4];
	for (; n >= 32; n -= 32, b += 32) {
		memcpy(w, b, 32);
		for (int i = 0; i < 4; i++) {
			l[i] ^= w[i] * 0x9e3779b97f4a7c15ull;
			l[i] = (l[i] << 27 | l[i] >> 37) * 0xbf58476d1ce4e5b9ull;
		}
	}
	for (int i = 0; i < 4; i++)
		h = mix(h, l[i]);
	for (; n >= 8; n -= 8, b += 8) {
		memcpy(w, b, 8);
		h = mix(h, w[0]);
	}
	if (n) {
		w[0] = 0;
		memcpy(w, b, n);
		h = mix(h, w[0] ^ (uint64_t)n << 56);
	}
	return h;
}

/* Tests set this to hash every word of every table, to hold the occupancy bitmaps to account. */
int ptf_digest_full_scan;

struct canon {
	struct engine *e;
	struct digest_scratch *s;
	uint64_t *h;          /* where the traversal hashes: the global hash or the current record */
	uint32_t next_blk, next_local, next_cpd, next_anon, next_file;
	int vm_ctx;           /* the VM whose tables are being named, -1 outside */
	bool vm_sym_broken;
};

static int grow_u32(uint32_t **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 256;
	while (n < need)
		n *= 2;
	uint32_t *q = realloc(*p, n * sizeof(*q));
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

static uint32_t visit_block(struct canon *c, int32_t blk);

/* One entry of a table at this level: table pointers and data pfns by their canonical names. */
static uint64_t canon_pfn(struct canon *c, uint64_t pfn);

static void hash_entry(struct canon *c, const struct entry_fmt *f, int level, uint32_t idx, uint64_t v)
{
	enum entry_kind k = f->kind(level, v);
	uint64_t phys = f->addr(level, v);
	if (k == E_TABLE) {
		struct tref t = tref_from_phys(c->e, phys);
		uint32_t id = t.blk >= 0 ? visit_block(c, t.blk) : TAG_RAW;
		*c->h = mix(mix(mix(*c->h, (uint64_t)idx << 2 | 1), v ^ phys),
			    t.blk >= 0 ? (uint64_t)id << 1 | (phys >> 11 & 1) : phys);
	} else if (k == E_LEAF) {
		*c->h = mix(mix(mix(*c->h, (uint64_t)idx << 2 | 2), v ^ phys), canon_pfn(c, phys >> 12));
	} else {
		*c->h = mix(mix(*c->h, (uint64_t)idx << 2 | 3), v);
	}
}

static void hash_compound(struct canon *c, const struct compound *cp)
{
	uint64_t f[3] = { cpd_nr(cp), /* the value, not the order: the layout is not the state */
			  (uint64_t)(uint32_t)cp->mapcount << 32 | (uint32_t)cp->live,
			  (uint64_t)cp->freed << 16 | (uint64_t)cp->hugetlb << 8 | cp->shm };
	*c->h = mix(mix(mix(*c->h, f[0]), f[1]), f[2]);
}

/* A pfn as (compound number, offset); zero pages, table addresses and holes stay raw. */
static uint64_t canon_pfn(struct canon *c, uint64_t pfn)
{
	uint64_t i = compound_index(c->e, pfn); /* data_lookup's cache is not the digest's to touch */
	if (i == c->e->ncpd)
		return pfn;
	const struct compound *cp = &c->e->cpd[i];
	if (!c->s->cpd_id[i]) {
		c->s->cpd_id[i] = ++c->next_cpd;
		hash_compound(c, cp);
	}
	return PFN_CANON | (uint64_t)c->s->cpd_id[i] << 32 | (pfn - cp->pfn);
}

static uint32_t canon_anon(struct canon *c, uint32_t anon)
{
	if (!anon || anon > c->e->next_anon)
		return anon;
	if (!c->s->anon_id[anon])
		c->s->anon_id[anon] = ++c->next_anon;
	return c->s->anon_id[anon];
}

static uint32_t canon_file(struct canon *c, uint32_t file)
{
	if (!file || (file & 0x80000000u) || file > c->e->next_file)
		return file; /* none, or a shmem object's file: SHM_FILE(obj) is fixed */
	if (!c->s->file_id[file])
		c->s->file_id[file] = ++c->next_file;
	return c->s->file_id[file];
}

/* trefs are copied by struct assignment, so their padding is whatever it was: rewrite all the bytes */
static void canon_tref_clear(struct tref *t)
{
	memset(t, 0, sizeof(*t));
}

/* A remembered pointer: none, dead, or alive and which table half. */
static void canon_tref(struct canon *c, struct tref *t)
{
	struct tref v = *t;
	canon_tref_clear(t);
	if (v.blk < 0) {
		t->blk = -1;
		return;
	}
	if (!tref_alive(c->e, v)) {
		t->blk = -2;
		return;
	}
	t->blk = (int32_t)visit_block(c, v.blk);
	t->half = v.half;
	t->gen = 1;
}

/* A table the first time it is reached: its name, its bookkeeping, its entries, its deposits. */
static uint32_t visit_block(struct canon *c, int32_t blk)
{
	struct engine *e = c->e;
	if (blk < 0 || blk >= e->nblocks)
		return TAG_RAW | ((uint32_t)blk & 0x1fffffffu);
	uint32_t *id = &c->s->blk_id[blk];
	struct block *b = &e->blocks[blk];
	if (*id) {
		if ((*id & TAG_RAW) == TAG_LOCAL && c->s->blk_ctx[blk] != c->vm_ctx) {
			/* another VM's table: its local name is ambiguous here, so qualify it by its VM, whose
			 * index then must not be sorted away */
			c->vm_sym_broken = true;
			return TAG_RAW | 0x20000000u | (uint32_t)c->s->blk_ctx[blk] << 20 | (*id & 0xfffffu);
		}
		return *id;
	}
	if (b->mm[0] < 0 && c->vm_ctx >= 0) {
		*id = TAG_LOCAL | ++c->next_local;
		c->s->blk_ctx[blk] = c->vm_ctx;
	} else {
		*id = ++c->next_blk;
		c->s->blk_ctx[blk] = -1;
	}
	uint32_t name = *id;
	/* a free half's bookkeeping is stale: page_table_alloc rewrites it (and init_pte_half its words) */
	uint64_t meta[5] = {
		(uint64_t)b->pages | (uint64_t)b->used << 8 | (uint64_t)b->frag << 16 | (uint64_t)b->pgste << 24 |
			(uint64_t)b->active << 32 | (uint64_t)b->listed << 40 | (uint64_t)b->half[0] << 48 |
			(uint64_t)b->half[1] << 56,
		0, 0, 0, 0,
	};
	for (int h = 0; h < 2; h++)
		if (b->half[h] != H_FREE) {
			meta[1 + 2 * h] = (uint64_t)b->linked[h] | (uint64_t)(uint8_t)b->level[h] << 8 |
					  (uint64_t)(uint16_t)b->mm[h] << 16;
			meta[2 + 2 * h] = (uint64_t)b->nonempty[h] | (uint64_t)b->leaves[h] << 32;
		}
	*c->h = mix(*c->h, 0x7ab1e000ull | name);
	*c->h = mix_bytes(*c->h, meta, sizeof(meta));
	for (int half = 0; b->mem && half < (b->frag ? 2 : 1); half++) {
		if (b->half[half] == H_FREE)
			continue;
		const struct entry_fmt *f = block_fmt(e, b, half);
		int level = b->level[half];
		uint64_t empty = f->empty(level);
		const uint64_t *m = b->mem + (b->frag ? half * 256u : 0);
		size_t words = b->frag ? 256 : (size_t)b->pages * 512;
		/* host tables have the geometry's entry count (a small pgd; an s390 PTE table's upper 2K are
		 * PGSTEs or unused); stage-2 tables are all entries */
		size_t n = b->mm[half] >= 0 && level >= 0 && level < e->geom.nlevels ? e->geom.lv[level].entries : words;
		if (n > words)
			n = words;
		*c->h = mix(*c->h, 0x4a1f0000ull | (uint64_t)half);
		uint64_t fill = b->pgste ? 0 : empty; /* what the words past the entries start as */
		/* only chunks entry_write touched can differ from the initial words, which the bookkeeping
		 * hashed above (level, format, pgste) determines */
		unsigned sh = block_chunk_shift(b);
		uint64_t bits = ptf_digest_full_scan ? ~0ull : b->occ[half];
		while (bits) {
			size_t lo = (size_t)__builtin_ctzll(bits) << sh, hi = lo + ((size_t)1 << sh);
			bits &= bits - 1;
			if (hi > words)
				hi = words;
			for (size_t i = lo; i < hi; i++) {
				if (i < n) {
					if (m[i] != empty)
						hash_entry(c, f, level, (uint32_t)i, m[i]);
				} else if (m[i] != fill) {
					*c->h = mix(mix(*c->h, (uint64_t)i << 2), m[i]);
				}
			}
		}
	}
	/* pgtable_trans_huge_deposit's LIFO: withdraw takes them in this order */
	int guard = 0;
	for (int32_t d = b->dep_head - 1; d >= 0 && d < e->ndeps && guard++ <= e->ndeps; d = e->deps[d].next) {
		struct tref t = e->deps[d].t;
		canon_tref(c, &t);
		*c->h = mix(mix(*c->h, 0xde9000ull), (uint64_t)(uint32_t)t.blk << 32 | (uint64_t)t.half << 8 | t.gen);
	}
	/* huge_pmd_share's links (mm/hugetlb.c), in the order they were made: an unshare of the owner hands the
	 * table to the first */
	for (int32_t k = 0; b->pmd_share && k < e->npmd_links; k++)
		if (e->pmd_links[k].blk == blk)
			*c->h = mix(*c->h, 0x5a4e0000ull | (uint64_t)(uint32_t)e->pmd_links[k].mm);
	*c->h = mix(*c->h, 0xe0d0000ull | name);
	return name;
}

static void hash_mm(struct canon *c, int i)
{
	struct engine *e = c->e;
	if (!e->mms[i].used)
		return; /* the used slots are named below: an unused one's fields are dead (mm_new clears them) */
	struct mm m = e->mms[i];
	*c->h = mix(*c->h, 0x33000000ull | (uint64_t)i);
	canon_tref(c, &m.pgt.root);
	const struct vma *vmas = m.vmas;
	m.vmas = NULL;
	int32_t head = m.frag_list;
	m.frag_list = head >= 0 ? (int32_t)visit_block(c, head) : -1;
	*c->h = mix_bytes(*c->h, &m, sizeof(m));
	for (int j = 0; j < m.nvma; j++) {
		const struct vma *v = &vmas[j];
		uint64_t w[7] = { v->start, v->end, (uint64_t)v->flags << 32 | canon_anon(c, v->anon),
				  (uint64_t)canon_file(c, v->file) << 32 | canon_anon(c, v->anon_root),
				  (uint64_t)v->cloned << 8 | v->shm, v->pgoff, 0 };
		*c->h = mix_bytes(*c->h, w, sizeof(w));
	}
	/* the fragment reuse list, in order: page_table_alloc takes its head */
	int guard = 0;
	for (int32_t blk = head; blk >= 0 && blk < e->nblocks && guard++ <= e->nblocks; blk = e->blocks[blk].list_next)
		*c->h = mix(*c->h, 0xf1a90000ull | visit_block(c, blk));
}

static void hash_shm(struct canon *c)
{
	struct engine *e = c->e;
	for (int obj = 0; obj < NR_FILES; obj++) {
		const struct shm_obj *o = &e->shm[obj];
		if (!o->used && !o->nblk)
			continue;
		*c->h = mix(mix(*c->h, 0x5a000000ull | (uint64_t)obj), (uint64_t)o->used << 32 | o->nblk);
		for (uint32_t k = 0; k < o->nblk; k++) {
			const struct shm_blk *b = &o->blk[k];
			*c->h = mix(mix(*c->h, b->index), b->huge ? canon_pfn(c, b->huge) : 0);
			for (uint32_t i = 0; b->pfn && i < e->shm_pages; i++)
				if (b->pfn[i])
					*c->h = mix(mix(*c->h, i), canon_pfn(c, b->pfn[i]));
			*c->h = mix(*c->h, b->pfn ? 0xa11 : 0);
		}
	}
}

/* A VM as a record: its own tables named inside it (no index: the caller adds it outside a group). */
static uint64_t vm_record(struct canon *c, int vi)
{
	struct engine *e = c->e;
	if (!e->vms[vi].used)
		return REC_DEFAULT; /* vm_create clears every field */
	struct vm v = e->vms[vi];
	uint64_t h = 0x766d0000ull, *saved = c->h;
	c->h = &h;
	c->vm_ctx = vi;
	c->next_local = 0;
	canon_tref(c, &v.s2.root);
	const struct gmap_link *links = v.links;
	v.links = NULL;
	v.caplinks = 0;
	v.invalidate_seq = 0; /* only an in-flight fault's "changed since" bit matters (cpu record) */
	/* memslots by field, the used ones only (an unused slot's fields are dead, and padding is unknown) */
	for (int s = 0; s < MAX_SLOTS; s++)
		if (v.slots[s].used)
			h = mix(mix(mix(mix(h, 0x5107ull << 32 | (uint64_t)s), v.slots[s].gpa), v.slots[s].hva), v.slots[s].len);
	memset(v.slots, 0, sizeof(v.slots));
	/* the stage-2 geometry by value (level_geom is built from compound literals: padding unknown) */
	const struct geom *g = &e->vms[vi].geom;
	h = mix(mix(h, (uint64_t)g->nlevels), g->page_size << 16 | (uint64_t)g->pmd_shift << 8 | g->pud_shift);
	for (int l = 0; l < g->nlevels && l < MAX_LEVELS; l++)
		h = mix(h, (uint64_t)g->lv[l].shift | (uint64_t)g->lv[l].entries << 8 | (uint64_t)g->lv[l].table_bytes << 40 |
			       (uint64_t)g->lv[l].folded << 62 | (uint64_t)g->lv[l].leaf_ok << 63);
	memset(&v.geom, 0, sizeof(v.geom));
	/* the rest as bytes, around the (now zero) slot array */
	const size_t so = offsetof(struct vm, slots), se = so + sizeof(v.slots);
	h = mix_bytes(mix_bytes(h, &v, so), (const uint8_t *)&v + se, sizeof(v) - se);
	for (int i = 0; i < v.nlinks; i++) /* host_to_guest, in array order (gmap_clear_link swaps) */
		h = mix(mix(h, links[i].gaddr), links[i].vmaddr);
	c->vm_ctx = -1;
	c->h = saved;
	return h;
}

/* The pmd an rmap walker or a GUP-fast walker took (compared raw with the live entry: the recheck) and its locks
 * (an rmap walker's only), or a held collapse's cleared pmd. */
static void canon_cpu_pmd(struct canon *c, struct cpu *k, bool rmap, bool coll)
{
	const struct engine *e = c->e;
	if (!rmap) { /* the rmap walker's locks: stale on a walker's or a collapse's cpu */
		k->lock_kind = 0;
		k->lock_id = 0;
		k->folio = 0;
	}
	if (coll)
		k->pmd_seen = 0;
	canon_tref(c, &k->pmd_tbl);
	/* the pmd value is compared raw with the live entry (the recheck): rename the table it
	 * points at as entries are renamed, ABA on a reused table included */
	const struct entry_fmt *f = e->geom.fmt;
	uint64_t phys = f->addr(e->pmd_lvl, k->pmd_seen);
	struct tref t = tref_from_phys(c->e, phys);
	if (f->kind(e->pmd_lvl, k->pmd_seen) == E_TABLE && t.blk >= 0)
		k->pmd_seen = ((uint64_t)visit_block(c, t.blk) << 32 | (k->pmd_seen ^ phys)) ^
			      (phys >> 11 & 1) << 12;
	if (k->lock_kind == RL_ANON)
		k->lock_id = canon_anon(c, k->lock_id);
	if (rmap)
		k->folio = canon_pfn(c, k->folio);
}

/* A cpu's TLB (issue 20), in its fill order: leaf frames and the tables walk entries point at by their canonical
 * names (a freed or reused table as dead); 0 for an empty TLB. */
static uint64_t tlb_record(struct canon *c, int ci)
{
	struct engine *e = c->e;
	if (ci >= MAX_CPUS || e->tlb[ci][0].kind == TLBE_NONE)
		return 0;
	uint64_t h = 0x71b0000ull;
	for (int i = 0; i < TLB_NR && e->tlb[ci][i].kind != TLBE_NONE; i++) {
		const struct tlb_entry *t = &e->tlb[ci][i];
		uint64_t target;
		if (t->kind == TLBE_LEAF) {
			target = canon_pfn(c, t->target);
		} else {
			struct tref r = tref_from_phys(e, t->target);
			r.gen = t->gen;
			target = !tref_alive(e, r) ? ~0ull : (uint64_t)visit_block(c, r.blk) << 1 | r.half;
		}
		h = mix(mix(mix(h, (uint64_t)t->kind << 40 | (uint64_t)t->level << 32 | (uint64_t)t->write << 24 |
				     (uint32_t)t->mm), t->va), target);
	}
	return h;
}

/* A held mremap (A_MREMAP) keeps its ranges as they are: the old range and source VMA, the new range (ptf.h). */
static void canon_mremap(struct cpu *k, const struct cpu *real)
{
	k->gpa = real->gpa;
	k->hva = real->hva;
	k->size = real->size;
	k->pfn = real->pfn;
	k->folio = real->folio;
}

/* A cpu as a record: a copy of struct cpu with the fields its actor uses renamed and the ones it does not
 * use (stale from an earlier actor) cleared; any other field stays raw. Then the RCU callbacks that wait
 * for it. */
static uint64_t cpu_record(struct canon *c, int ci, const uint32_t *vm_label)
{
	struct engine *e = c->e;
	const struct cpu *real = &e->cpus[ci];
	static const struct cpu zero;
	uint64_t tlb = tlb_record(c, ci);
	if (real->actor == A_NONE && !real->rcu_nest && !memcmp(real, &zero, sizeof(zero)) && !tlb)
		return REC_DEFAULT; /* a cpu nothing ever ran on (section 0 too: no callback can wait for it) */
	struct cpu k = *real;
	uint64_t h = 0xc9000000ull, *saved = c->h;
	c->h = &h;
	k.section = 0; /* replaced by the callback relation below */
	bool known = k.actor == A_NONE || k.actor == A_WALK || k.actor == A_RMAP || k.actor == A_GFAULT ||
		     k.actor == A_INVAL || k.actor == A_FRAG || k.actor == A_COLLAPSE || k.actor == A_MREMAP ||
		     k.actor == A_UNSHARE;
	if (known) {
		bool walk = k.actor == A_WALK, rmap = k.actor == A_RMAP, gf = k.actor == A_GFAULT;
		bool frag = k.actor == A_FRAG; /* Z4: a held page_table_free keeps mm, tbl, walk_done and level (ptf.h);
						* addr only names the stopped operation in wait events */
		bool coll = k.actor == A_COLLAPSE; /* Z5: mm, addr, walk_done, tbl, pmd_tbl/pmd_idx, pfn (ptf.h); a walker
						     * also its pmd_* (the recheck) and pfn (its grab) */
		bool uns = k.actor == A_UNSHARE; /* issue 20: mm, walk_done, the range addr .. hva (ptf.h) */
		/* an invalidation window: what it holds is kept (per-VM counts raw: windows turn VM symmetry
		 * off); inval_op is only compared with the running operation's index, which between operations
		 * it never equals, so it is cleared. Any other cpu: the window fields are dead (every reader
		 * tests for A_INVAL, and inval_hold resets them), so they are cleared. The stale actor fields of a window's cpu are
		 * cleared below like an idle cpu's: kept raw they held struct tref padding that assignments
		 * leave undefined, and the digest differed from process to process. */
		if (k.actor == A_INVAL) {
			k.inval_op = 0;
		} else {
			k.inval_held = false;
			k.inval_op = 0;
			memset(k.inval_began, 0, sizeof(k.inval_began));
			memset(k.inval_active, 0, sizeof(k.inval_active));
			memset(k.inval_mms, 0, sizeof(k.inval_mms));
			memset(k.inval_locks, 0, sizeof(k.inval_locks));
			memset(&k.inval_mid, 0, sizeof(k.inval_mid));
			memset(&k.inval_slot, 0, sizeof(k.inval_slot));
			k.inval_nlocks = k.inval_opcode = k.inval_child = 0;
		}
		bool mrem = k.actor == A_MREMAP; /* issue 20: mm, addr, size, walk_done, gpa/hva, pfn/folio (ptf.h) */
		if (!walk && !rmap && !gf && !frag && !coll && !mrem && !uns)
			k.mm = 0;
		if (!walk && !rmap && !coll && !mrem && !uns)
			k.addr = 0;
		if (!walk && !frag && !coll && !mrem && !uns) {
			k.level = 0;
			k.walk_done = false;
		}
		if (coll || mrem)
			k.level = 0;
		if (walk || rmap || frag || coll)
			canon_tref(c, &k.tbl);
		else
			canon_tref_clear(&k.tbl);
		if (rmap || walk || coll) {
			canon_cpu_pmd(c, &k, rmap, coll);
		} else {
			canon_tref_clear(&k.pmd_tbl);
			k.pmd_idx = 0;
			k.pmd_seen = 0;
			k.lock_kind = 0;
			k.lock_id = 0;
			k.folio = 0;
		}
		if (gf) {
			bool vm_ok = k.vm >= 0 && k.vm < MAX_VMS;
			/* "invalidated since": only grows; a late fault-in (kvm.fault_seq_snapshot) has no snapshot yet */
			k.seq = !k.late_faultin && vm_ok && e->vms[k.vm].invalidate_seq != k.seq;
			k.vm = vm_ok ? (int)vm_label[k.vm] : k.vm;
			k.pfn = canon_pfn(c, k.pfn);
			bool alive = tref_alive(e, k.s2_root);
			canon_tref_clear(&k.s2_root); /* only its liveness is ever asked */
			k.s2_root.blk = alive ? 1 : -2;
		} else {
			k.vm = 0;
			k.gpa = k.size = k.seq = 0, k.hva = uns ? real->hva : 0; /* a held munmap's end: a plain number */
			k.pfn = (walk || coll) && k.pfn ? canon_pfn(c, k.pfn) : 0;
			k.holds_mm = k.write = k.vma_thp = k.late_faultin = k.noslot = false;
			canon_tref_clear(&k.s2_root);
		}
		if (mrem) /* the held move's ranges: plain numbers (seq is only compared with the running index) */
			canon_mremap(&k, real);
	}
	/* an actor this file does not know keeps every field raw: fewer merges, never a wrong one */
	if (!memcmp(&k, &zero, sizeof(k)) && !tlb)
		h = REC_DEFAULT; /* an idle cpu outside any section: most of them, most of the time */
	else
		h = mix(mix_bytes(h, &k, sizeof(k)), tlb);
	if (ci < MAX_CPUS) /* which queued callbacks wait for this cpu (cb_ready) */
		for (size_t i = 0; i < e->ncbs; i++) {
			uint64_t w = e->cbs[i].wait_section[ci];
			if (w && real->rcu_nest && real->section == w)
				h = mix(h, 0xcb000000ull | i);
		}
	c->h = saved;
	return h;
}

static uint64_t proc_record(const struct engine *e, int pid)
{
	const struct proc *p = &e->procs[pid];
	if (!p->exists && !p->tif_pgste && !p->pending)
		return REC_DEFAULT;
	/* a pid that does not exist has no mm (exec and fork look at exists first), unless it is a stopped fork's
	 * child (pending: its mm is built); TIF_PGSTE is kept */
	bool has_mm = p->exists || p->pending;
	return mix(mix(0x9c000000ull, (uint64_t)p->pending << 2 | (uint64_t)p->exists << 1 | p->tif_pgste),
		   has_mm ? (uint64_t)p->mm : ~0ull);
}

struct rec { uint64_t h; int idx; };

static int rec_cmp(const void *a, const void *b)
{
	const struct rec *x = a, *y = b;
	if (x->h != y->h)
		return x->h < y->h ? -1 : 1;
	return x->idx - y->idx;
}

/* Entities of one kind: group members sorted by record, the rest by index. labels[i]: i's name. */
static uint64_t hash_records(uint64_t h, struct rec *r, int n, const int *group, uint32_t *labels)
{
	int lo = group ? group[0] : 0, hi = group ? group[1] : 0;
	if (lo < 0 || hi > n || lo >= hi)
		lo = hi = 0;
	for (int i = 0; i < n; i++)
		if (labels)
			labels[i] = (uint32_t)i;
	if (hi - lo > 1) {
		for (int i = lo + 1; i < hi; i++) /* groups are a handful: insertion sort */
			for (int j = i; j > lo && rec_cmp(&r[j - 1], &r[j]) > 0; j--) {
				struct rec t = r[j];
				r[j] = r[j - 1];
				r[j - 1] = t;
			}
		for (int i = lo; i < hi; i++) {
			if (labels)
				labels[r[i].idx] = 0x10000u | (uint32_t)(i - lo);
			h = mix(h, r[i].h);
		}
	}
	/* the rest by index; an entity in its default state (REC_DEFAULT: unused, idle) is named by its
	 * absence, so the digest does not pay for the 64 pids and 17 cpus that are mostly idle */
	for (int i = 0; i < n; i++)
		if (!(i >= lo && i < hi && hi - lo > 1) && r[i].h != REC_DEFAULT)
			h = mix(mix(h, (uint64_t)i + 1), r[i].h);
	return h;
}

int ptf_digest_sym(struct engine *e, struct digest_scratch *s, const int groups[3][2], uint64_t *out)
{
	if (grow_u32(&s->blk_id, &s->cap_blk, (size_t)e->nblocks + 1) ||
	    grow_u32((uint32_t **)(void *)&s->blk_ctx, &s->cap_ctx, (size_t)e->nblocks + 1) ||
	    grow_u32(&s->cpd_id, &s->cap_cpd, (size_t)e->ncpd + 1) ||
	    grow_u32(&s->anon_id, &s->cap_anon, (size_t)e->next_anon + 1) ||
	    grow_u32(&s->file_id, &s->cap_file, (size_t)e->next_file + 1))
		return -ENOMEM;
	memset(s->blk_id, 0, ((size_t)e->nblocks + 1) * sizeof(uint32_t));
	memset(s->cpd_id, 0, ((size_t)e->ncpd + 1) * sizeof(uint32_t));
	memset(s->anon_id, 0, ((size_t)e->next_anon + 1) * sizeof(uint32_t));
	memset(s->file_id, 0, ((size_t)e->next_file + 1) * sizeof(uint32_t));
	uint64_t h = 0x9e3779b97f4a7c15ull;
	struct canon c = { e, s, &h, 0, 0, 0, 0, 0, -1, false };

	/* free blocks: named by free-list position, before anything can point at them */
	uint32_t pos = 0;
	for (int32_t b = e->free_blocks; b >= 0 && b < e->nblocks && pos <= (uint32_t)e->nblocks; b = e->blocks[b].next_free)
		if (!s->blk_id[b])
			s->blk_id[b] = TAG_FREE | pos++;

	h = mix(mix(h, (uint64_t)e->sysctl_pgste << 8 | (uint64_t)e->viol), e->st.pages_in_use);
	for (int i = 0; i < e->mm_hwm && i < MAX_MMS; i++)
		hash_mm(&c, i);
	hash_shm(&c);
	for (size_t i = 0; i < e->ncbs; i++) {
		const struct rcu_cb *cb = &e->cbs[i];
		uint32_t id = visit_block(&c, cb->blk);
		h = mix(h, 0xcb0000000000ull | (uint64_t)cb->kind << 40 | (uint64_t)id << 1 | cb->half);
	}

	struct rec vr[MAX_VMS], cr[MAX_CPUS + 1], pr[MAX_PIDS];
	uint32_t vm_label[MAX_VMS];
	for (int i = 0; i < MAX_VMS; i++)
		vr[i] = (struct rec){ vm_record(&c, i), i };
	const int *vg = groups ? groups[2] : NULL, *cg = groups ? groups[1] : NULL;
	if (c.vm_sym_broken)
		vg = NULL;
	/* An invalidation window breaks both symmetries: a held cpu's pending ends are counted per VM index
	 * (inval_began/inval_active, hashed raw), and the next notifying operation is taken by the
	 * lowest-index armed cpu (inval_window_for), an ordered choice, not an existence test. */
	for (int i = 0; i <= MAX_CPUS; i++)
		if (e->cpus[i].actor == A_INVAL)
			vg = cg = NULL;
	h = hash_records(mix(h, 0x766d5ull), vr, MAX_VMS, vg, vm_label);
	for (int i = 0; i <= MAX_CPUS; i++)
		cr[i] = (struct rec){ cpu_record(&c, i, vm_label), i };
	h = hash_records(mix(h, 0xc9a5ull), cr, MAX_CPUS + 1, cg, NULL);
	for (int i = 0; i < MAX_PIDS; i++)
		pr[i] = (struct rec){ proc_record(e, i), i };
	h = hash_records(mix(h, 0x9c5ull), pr, MAX_PIDS, groups ? groups[0] : NULL, NULL);

	/* what no traversal reached: tables (private to a path that is not running: none between
	 * operations), then live compounds nobody maps (the teardown audit would see them) */
	for (int32_t b = 0; b < e->nblocks; b++)
		if (e->blocks[b].used && !s->blk_id[b])
			h = mix(h, 0x0e9a0000ull | visit_block(&c, b));
	for (uint64_t i = 0; i < e->ncpd; i++)
		if (!s->cpd_id[i] && !e->cpd[i].freed) {
			s->cpd_id[i] = ++c.next_cpd;
			h = mix(h, 0xc0de0000ull);
			hash_compound(&c, &e->cpd[i]);
		}
	*out = mix(h, 0x5eedull);
	return 0;
}

void digest_scratch_free(struct digest_scratch *s)
{
	free(s->blk_id);
	free(s->blk_ctx);
	free(s->cpd_id);
	free(s->anon_id);
	free(s->file_id);
	memset(s, 0, sizeof(*s));
}

/* The digest replay reports: no symmetry (a trace's pids are not interchangeable in general). */
uint64_t ptf_digest(struct engine *e)
{
	struct digest_scratch s = { 0 };
	uint64_t h = 0;
	if (ptf_digest_sym(e, &s, NULL, &h))
		h = 0;
	digest_scratch_free(&s);
	return h;
}
