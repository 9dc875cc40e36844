/* privs.c - look up the configured user and drop to it (see privs.h). */
#include "supervisor/privs.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common/log.h"

int privs_plan(const char *user, bool *drop, uid_t *uid, gid_t *gid)
{
    errno = 0;
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        log_error("user '%s': %s", user, errno ? strerror(errno) : "no such user");
        return -1;
    }
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    *drop = geteuid() == 0 && pw->pw_uid != 0;
    if (geteuid() != 0 && geteuid() != pw->pw_uid) {
        log_error("user '%s' is configured, but mqforkd runs as uid %d and is not root: "
                  "start it as root or as that user",
                  user, (int)geteuid());
        return -1;
    }
    return 0;
}

int privs_drop(uid_t uid, gid_t gid)
{
    if (setgroups(1, &gid) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
        log_error("cannot drop privileges to uid %d gid %d: %s", (int)uid, (int)gid,
                  strerror(errno));
        return -1;
    }
    if (setuid(0) == 0) {
        log_error("privileges were not dropped: root could be regained");
        return -1;
    }
    /* A uid change makes the process undumpable; with nothing privileged
     * left, let crashing workers leave core files again. */
    prctl(PR_SET_DUMPABLE, 1);
    log_info("running as uid %d gid %d", (int)uid, (int)gid);
    return 0;
}
