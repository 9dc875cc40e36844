/* lock.h - who runs an instance: an flock on <lock dir>/<instance>.lock,
 * held for the daemon's whole life. Unlike a segment header, which any
 * local user can forge in /dev/shm, the lock lives in a directory only the
 * daemon's user (or root) may write, and the kernel drops it when the
 * daemon dies, however it dies.
 *
 * The lock directory is /run/mqfork for root (the unit's RuntimeDirectory),
 * else $XDG_RUNTIME_DIR/mqfork, else /tmp/mqfork-<uid>; it must be a real
 * directory owned by root or by us and writable by no one else. */
#ifndef MQFORK_SHM_LOCK_H
#define MQFORK_SHM_LOCK_H

#include <sys/types.h>

/* Take INSTANCE's lock. Returns its descriptor (keep it open; close to
 * release), or -1: errno EEXIST when another live process holds it (its
 * pid in *HOLDER when known, else 0), or another errno with a sentence in
 * WHY. */
int instance_lock(const char *instance, pid_t *holder, char *why, size_t whylen);

#endif
