/* search/gen.h: the trace generator (gen.c): decisions from bytes or a seeded PRNG, made against the live engine. */
#ifndef PTF_GEN_H
#define PTF_GEN_H

#include "ptf.h"

/* What the generator is for: a fuzz input (short, stops at the first violation) or a workload (exactly n
 * operations that mostly succeed, VMs on anonymous memory only, run to the end whatever happens). */
enum gen_profile_id { GEN_FUZZ, GEN_WORKLOAD, GEN_NPROFILES };

/* Where decisions come from. Bytes: ByteChoices' encoding (fuzzgen.py): below(n) reads 1, 2 or 4
 * little-endian bytes (n <= 2^8, 2^16, more) modulo n, zeros past the end; below(1) reads nothing.
 * Random: xoshiro256** from a seed, and when rec is set each decision is appended in the byte encoding, so
 * the bytes replay the same trace (seed corpora). */
struct choices {
	const uint8_t *data;
	size_t len, pos;
	bool random;
	uint64_t s[4];
	uint8_t *rec;
	size_t nrec, caprec;
	bool record, nomem;
};

struct gen_result {
	uint64_t *rows;        /* nrows operations of OP_ARGS + 1 words, as the trace holds them */
	size_t nrows;
	enum violation viol;   /* the engine's first violation (teardown included when asked) */
	uint32_t viol_op;
	bool nomem;
};

struct gen_layout { uint64_t page, pmd, pud, region, base, align; const uint64_t *ipas; size_t nipas; };
void gen_layout(const struct engine *e, struct gen_layout *L);

void choices_bytes(struct choices *c, const uint8_t *data, size_t len);
void choices_random(struct choices *c, uint64_t seed, bool record);
void choices_free(struct choices *c);

/* Generate into e (fresh from ptf_init, ELF images bound): fuzz, up to max_ops operations (1 + a decision
 * below max_ops, fewer when the bytes run out or a violation stops it); workload, exactly max_ops. */
int ptf_generate(struct engine *e, enum gen_profile_id profile, struct choices *c, size_t max_ops,
		 bool teardown, struct gen_result *out);


/* Semantic features (gen.c): register the generator's abstract-state counters with the libFuzzer in this
 * process (found by symbol: atheris' runtime); -ENOSYS when there is none. Counting starts then. */
int ptf_features_register(void);
extern const size_t ptf_features_count;

#endif
