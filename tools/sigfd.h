/* sigfd.h - SIGINT and SIGTERM as a descriptor a tool's loop polls, so a
 * stop request is just another event and no handler state is needed;
 * SIGPIPE ignored. Shared by mqfork-load and mqfork-voice-limit. */
#ifndef MQFORK_TOOLS_SIGFD_H
#define MQFORK_TOOLS_SIGFD_H

#include <signal.h>
#include <sys/signalfd.h>

static inline int signals_fd(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

#endif
