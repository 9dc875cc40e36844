/* compose.h - turn a configuration file's bytes into a libyaml document,
 * within bounds a hostile file cannot stretch.
 *
 * libyaml's own yaml_parser_load has none: 100,000 nested '[' took it over
 * a minute, and its anchors are found by a linear search (an alias-heavy
 * file is quadratic). compose_document reads libyaml's events itself and
 * builds the same yaml_document_t (nodes, marks, styles, tags), stopping at
 * the first event nested deeper than CONF_MAX_DEPTH, and at the first alias
 * that makes the document, counted with every alias expanded, larger than
 * CONF_MAX_EXPANDED (a "billion laughs"). Anchors are found by hashing.
 * The caller bounds the length of the input (CONF_MAX_BYTES). */
#ifndef MQFORK_CONF_COMPOSE_H
#define MQFORK_CONF_COMPOSE_H

#include <stddef.h>
#include <yaml.h>

#include "conf/config.h"

/* Parse BUF (LEN bytes, from the file PATH) into *DOC. Returns 0 with *DOC
 * to be deleted by the caller; problems that do not stop the load (a second
 * document) are appended to *D. Returns -1 when nothing can be loaded (a
 * syntax error, a bound): the reason is in *D with its file:line:column,
 * and there is no document. */
int compose_document(const char *path, const char *buf, size_t len, yaml_document_t *doc,
                     struct conf_diags *d);

#endif
