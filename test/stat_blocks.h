/* stat_blocks.h - named counter blocks that only test_stat knows: a plain
 * one ("stattest") added to a running engine, and a per-worker one
 * ("plugin.stattest") declared before the workers fork, with known
 * figures, and what mqforkstat must print for them although it knows
 * nothing of their fields. */
#ifndef MQFORK_TEST_STAT_BLOCKS_H
#define MQFORK_TEST_STAT_BLOCKS_H

#include <stdbool.h>

struct fixture;

/* Declare the per-worker block; before fixture_start. */
void stat_blocks_declare(struct fixture *f);

/* Add the plain block to F's running engine and publish its figures, and
 * have two other processes write slots 0 and 1 of the per-worker block;
 * false when something refused. */
bool stat_blocks_add(struct fixture *f);

/* Lines -1 must print for them (whole lines). */
extern const char *const stat_blocks_text[];

/* Lines -p must print for them; %s is the instance name. */
extern const char *const stat_blocks_prom[];

/* Whether NAME (of a -1 line) belongs to one of them. */
bool stat_blocks_own(const char *name);

#endif
