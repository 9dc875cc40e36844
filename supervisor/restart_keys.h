/* restart_keys.h - the settings a reload cannot change (restart_keys.c). */
#ifndef MQFORK_SUPERVISOR_RESTART_KEYS_H
#define MQFORK_SUPERVISOR_RESTART_KEYS_H

#include "conf/config.h"

/* Log each setting that differs between the RUNNING configuration and the
 * reloaded WANT and that only a restart applies (the broker's, user,
 * plugins), with the value kept; then swap those settings between the two,
 * so that WANT, which the daemon goes on with, holds the running ones.
 * Returns how many were logged. */
unsigned restart_keys_keep(struct conf *running, struct conf *want);

#endif
