/* prom_check.h - whether a text is a valid Prometheus text exposition
 * (format 0.0.4), as a scraper or `promtool check metrics` reads it: for the
 * fuzz harness of mqforkstat -p, which must stay valid whatever a crafted
 * segment holds. */
#ifndef MQFORK_TEST_PROM_CHECK_H
#define MQFORK_TEST_PROM_CHECK_H

#include <stddef.h>

/* NULL when TEXT (LEN bytes) is a valid exposition: every line a HELP, a
 * TYPE or a sample; names and label names well formed; label values and
 * help texts UTF-8 with only the format's escapes; no label twice in a
 * sample; each family's TYPE once, before its samples, and its samples
 * together; no series twice. Otherwise what is wrong, with the line in
 * WHERE (WHERE_LEN bytes). */
const char *prom_check(const char *text, size_t len, char *where, size_t where_len);

#endif
