/* search/lvl.h: one worker of the level-synchronous check (lvl.c), as py/level.c drives it. */
#ifndef SEARCH_LVL_H
#define SEARCH_LVL_H
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

struct lvl;
struct engine;
/* --por's independence bytes: indep[a * nalpha + x] */
enum { POR_DEPENDENT = 0, POR_ALWAYS = 1, POR_APART = 2 /* when lvl_pids_apart(parent, pid of a, pid of x) */ };
/* Nothing links processes p1 and p2 in e (lvl.c says what links them): their own operations commute. */
bool lvl_pids_apart(const struct engine *e, uint64_t p1, uint64_t p2);
/* ... and u (q after an operation of p2) queued no RCU callback: POR_APART's whole condition */
bool lvl_por_apart(const struct engine *q, const struct engine *u, uint64_t p1, uint64_t p2);
/* A worker owning the states whose digest hashes to self (of nw); NULL on failure. groups: 3 (lo, hi) pairs or NULL;
 * key and indep: the --por order and independence matrix, or NULL; progress: a counter it bumps, or NULL. */
struct lvl *lvl_new(int arch, const int *knobs, const uint64_t *config, const uint8_t *const *elfs,
		    const size_t *elf_lens, int nelfs, const uint64_t *alpha, int nalpha, const int *groups,
		    int finish, int nw, int self, const uint16_t *key, const uint8_t *indep, volatile uint64_t *progress);
void lvl_free(struct lvl *L);
int lvl_pass(struct lvl *L, int expand);          /* 0 or -errno */
int lvl_write(struct lvl *L, int o, int fd);      /* 0 or -errno */
long lvl_merge(struct lvl *L, const int *fds, int nfds); /* states kept, or -errno */
long lvl_shard_keep(struct lvl *L, int i, int n);
int lvl_shard_of(uint64_t d, int n);
void lvl_stats(const struct lvl *L, uint64_t out[9]);
/* path: CHECK_MAX_DEPTH + 1 entries; msg: 256 bytes */
int lvl_violation(const struct lvl *L, uint16_t *path, int *len, uint32_t *op, char *msg, int *teardown);
#endif
