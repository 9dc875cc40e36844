/* proctitle.c - the process title that ps shows ("mqforkd: worker 3").
 * Linux shows a process's command line from the memory of its argv; with
 * main's argv we overwrite that memory (only as much as argv held, so
 * nothing else is clobbered). The short name for top comes from prctl. */
#include <string.h>
#include <sys/prctl.h>

#include "worker/worker.h"

static char *title_area;
static size_t title_len;

void proctitle_init(int argc, char **argv)
{
    if (argc < 1 || !argv[0])
        return;
    char *end = argv[0] + strlen(argv[0]);
    for (int i = 1; i < argc; i++)
        if (argv[i] == end + 1)
            end = argv[i] + strlen(argv[i]);
    title_area = argv[0];
    title_len = (size_t)(end - argv[0]);
}

void proctitle_set(const char *title)
{
    if (title_area && title_len) {
        size_t n = strlen(title);
        if (n > title_len)
            n = title_len;
        memcpy(title_area, title, n);
        memset(title_area + n, 0, title_len - n + 1);
    }
    /* The short name has 15 characters: keep the part after "mqforkd: ". */
    const char *prefix = "mqforkd: ";
    size_t plen = strlen(prefix);
    prctl(PR_SET_NAME, strncmp(title, prefix, plen) == 0 ? title + plen : title);
}
