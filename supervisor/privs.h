/* privs.h - running as the configured `user:` instead of root.
 *
 * The choice (see engine.h, engine_start): the supervisor creates the
 * segment as root, hands it to the user's group, and then drops the whole
 * process to the user and group before it forks the first worker. Workers
 * therefore never hold root, not even during handler set-up, and nothing
 * in the supervisor needs root afterwards: it forks and kills its own
 * children, unlinks its own segment, and re-reads the configuration file
 * (which must be readable by the user) on SIGHUP. */
#ifndef MQFORK_SUPERVISOR_PRIVS_H
#define MQFORK_SUPERVISOR_PRIVS_H

#include <stdbool.h>
#include <sys/types.h>

/* Look USER up. *DROP says whether a drop is due (we are root and USER is
 * not); when we are not root, USER must be who we already are. 0, or -1
 * (logged). */
int privs_plan(const char *user, bool *drop, uid_t *uid, gid_t *gid);

/* Become UID:GID with no supplementary groups, for good (a later attempt
 * to regain root is checked to fail). 0, or -1 (logged). */
int privs_drop(uid_t uid, gid_t gid);

#endif
