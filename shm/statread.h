/* statread.h - reading named counter blocks out of a mapped segment that may
 * be damaged or crafted: every directory entry and field table is copied out
 * of the mapping first and checked against the stats area's real size with
 * overflow-safe arithmetic, and only the checked copy is used to find data.
 * Used by mqforkstat and by tests that look at the figures. */
#ifndef MQFORK_SHM_STATREAD_H
#define MQFORK_SHM_STATREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/statblock.h"

struct segment;

/* Blocks published in S's directory, or -1 when the directory is damaged. */
int stats_dir_count(const struct segment *s);

/* Check the whole directory of S, every entry and field table: 0, or -1
 * (damaged). Blocks published later are checked as they are read. */
int stats_check(const struct segment *s);

/* A checked copy of directory entry I of S: 0, or -1 (damaged). */
int stats_entry(const struct segment *s, unsigned i, struct stats_block_entry *out);

/* Copy and check the field table of E (E->nfields entries into OUT): 0, or
 * -1 (damaged). */
int stats_fields(const struct segment *s, const struct stats_block_entry *e,
                 struct stats_field *out);

/* Copy the data of E (E->size bytes into DST), every instance through its
 * seqlock, summed as the fields F say. False when an instance stayed busy
 * for TRIES attempts. */
bool stats_read(const struct segment *s, const struct stats_block_entry *e,
                const struct stats_field *f, void *dst, int tries);

/* The entry of the block named NAME: 0, or -1 (no such block, or damaged). */
int stats_find(const struct segment *s, const char *name, struct stats_block_entry *out);

/* The field named NAME in the table F of N, or NULL. */
const struct stats_field *stats_field_find(const struct stats_field *f, unsigned n,
                                           const char *name);

/* The integer value of F (counter, gauge, state, timestamp) in DATA. */
uint64_t stats_field_raw(const struct stats_field *f, const void *data);

/* Copy the data of block NAME of S, which must be LEN bytes, into DST (all
 * instances summed): 0, or -1 (no such block, another size, damaged or
 * busy). For tests and tools that know a block's struct. */
int stats_copy(const struct segment *s, const char *name, void *dst, size_t len);

/* The value of field FIELD of block BLOCK in S, read through its seqlock:
 * 0, or -1 (no such block or field, damaged, or busy). For tests. */
int stats_value(const struct segment *s, const char *block, const char *field, uint64_t *out);

#endif
