/* mqforkstat_prom.h - what the two halves of the -p output share: writing
 * families, series, escaped label values, numbers and histograms in the
 * Prometheus text exposition format (version 0.0.4). */
#ifndef MQFORK_TOOLS_MQFORKSTAT_PROM_H
#define MQFORK_TOOLS_MQFORKSTAT_PROM_H

#include <stdbool.h>
#include <stdio.h>

#include "tools/mqforkstat.h"

#define NS_PER_S        1e9
#define PROM_LABELS_LEN 512 /* a series' own labels, escaped */

/* The label naming the mqfork instance on every series. Not "instance":
 * Prometheus sets that one on every scraped target itself (host:port) and,
 * without honor_labels, renames ours to exported_instance. */
#define PROM_INSTANCE_LABEL "mqfork_instance"

/* Copy V (at most MAX bytes, maybe unterminated) into DST escaped as a
 * label value: backslash, double quote and newline. */
void prom_escape(char *dst, size_t len, const char *v, size_t max);
void label_value(FILE *out, const char *v, size_t max);

/* # HELP and # TYPE of family NAME. */
void family(FILE *out, const char *name, const char *type, const char *help);

/* `name{mqfork_instance="x"` — the caller adds its labels and closes the brace. */
void series(FILE *out, const struct snap *s, const char *name);

/* Whole numbers in full (a %g would round a large counter), others short. */
void number(FILE *out, double v);

/* The samples of histogram H of family NAME with the series' own LABELS
 * (escaped, each starting with a comma; "" for none). */
void prom_hist(FILE *out, const struct snap *s, const char *name, const char *labels,
               const struct stats_hist *h);

/* The kinds' and workers' families (mqforkstat_prom_tables.c). */
void prom_tables(FILE *out, const struct snap *s);

/* Whether NAME is a family prom_tables or the instance part writes. */
bool prom_fixed_family(const char *name);

#endif
