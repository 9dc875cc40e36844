/* mqforkstat_snap.c - read an instance's segment: attach with a message an
 * operator can act on when that fails, list the instances in /dev/shm, and
 * copy the statistics block by block through their seqlocks. Sizes come
 * from the checked geometry of the attach and the checked copies of the
 * block directory (shm/statread.h), never from the mapping itself. */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shm/statread.h"
#include "tools/mqforkstat.h"

#define SHM_DIR    "/dev/shm"
#define SHM_PREFIX "mqfork."

/* Instances named after "no such instance"; -l lists them all. */
#define SUGGEST_MAX 8

static size_t instance_names(char ***names_out);

static uint64_t clock_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- snapshot */

static void take_kinds(struct snap *s, const struct segment *seg)
{
    unsigned max = seg->max_kinds;
    for (unsigned i = 0; i < max; i++) {
        const struct stats_kind *src = &seg->kinds[i];
        /* A peek, so unused slots cost no copy; the seqlock copy decides. */
        if (__atomic_load_n(&src->used, __ATOMIC_RELAXED) == 0)
            continue;
        struct snap_kind *k = &s->kinds[s->nkinds++];
        k->index = i;
        k->busy = !seqlock_read(&src->lock, &k->k, src, sizeof(*src), SNAP_TRIES);
        k->k.name[STATS_NAME_LEN - 1] = '\0';
        k->k.handler[STATS_NAME_LEN - 1] = '\0';
        if (!k->busy && !k->k.used)
            s->nkinds--; /* released between the peek and the copy */
    }
}

/* A worker slot has two writers, each with its own lock: copy both halves. */
static bool copy_worker(struct stats_worker *dst, const struct stats_worker *src)
{
    size_t half = offsetof(struct stats_worker, self_lock);
    if (!seqlock_read(&src->lock, dst, src, half, SNAP_TRIES))
        return false;
    return seqlock_read(&src->self_lock, (char *)dst + half, (const char *)src + half,
                        sizeof(*src) - half, SNAP_TRIES);
}

static void take_workers(struct snap *s, const struct segment *seg)
{
    unsigned max = seg->max_workers;
    for (unsigned i = 0; i < max; i++) {
        const struct stats_worker *src = &seg->workers_stats[i];
        if (__atomic_load_n(&src->state, __ATOMIC_RELAXED) == WORKER_EMPTY)
            continue;
        struct snap_worker *w = &s->workers[s->nworkers++];
        w->slot = i;
        w->busy = !copy_worker(&w->w, src);
        if (!w->busy && w->w.state == WORKER_EMPTY)
            s->nworkers--;
    }
}

/* Block I of the directory: its checked entry and table, and its data. */
static int take_block(struct snap_block *b, const struct segment *seg, unsigned i)
{
    if (stats_entry(seg, i, &b->e) < 0) {
        errno = EBADMSG;
        return -1;
    }
    b->fields = calloc(b->e.nfields ? b->e.nfields : 1, sizeof(*b->fields));
    /* 8-byte aligned, as the checked field offsets are: histograms are read in place */
    b->data = calloc(1, b->e.size ? b->e.size : 1);
    if (!b->fields || !b->data) {
        errno = ENOMEM;
        return -1;
    }
    if (stats_fields(seg, &b->e, b->fields) < 0) {
        errno = EBADMSG;
        return -1;
    }
    b->busy = !stats_read(seg, &b->e, b->fields, b->data, SNAP_TRIES);
    return 0;
}

static int take_blocks(struct snap *s, const struct segment *seg)
{
    int n = stats_dir_count(seg);
    if (n < 0) {
        errno = EBADMSG;
        return -1;
    }
    s->blocks = calloc(n ? (size_t)n : 1, sizeof(*s->blocks));
    if (!s->blocks) {
        errno = ENOMEM;
        return -1;
    }
    for (int i = 0; i < n; i++) {
        s->nblocks++;
        if (take_block(&s->blocks[i], seg, (unsigned)i) < 0)
            return -1;
    }
    return 0;
}

int snap_take(struct snap *s, const struct segment *seg)
{
    memset(s, 0, sizeof(*s));
    s->kinds = calloc(seg->max_kinds ? seg->max_kinds : 1, sizeof(*s->kinds));
    s->workers = calloc(seg->max_workers ? seg->max_workers : 1, sizeof(*s->workers));
    if (!s->kinds || !s->workers) {
        snap_free(s);
        errno = ENOMEM;
        return -1;
    }
    /* The header is written once, before the daemon publishes anything. */
    memcpy(&s->hdr, seg->hdr, sizeof(s->hdr));
    s->hdr.instance[SEG_INSTANCE_LEN - 1] = '\0';
    s->hdr.version[sizeof(s->hdr.version) - 1] = '\0';
    s->generation = atomic_load_explicit(&seg->hdr->generation, memory_order_relaxed);
    s->alive = seg_owner_alive(seg->hdr);
    s->mono_ns = clock_ns(CLOCK_MONOTONIC);
    s->real_ns = clock_ns(CLOCK_REALTIME);
    if (take_blocks(s, seg) < 0) {
        int saved = errno;
        snap_free(s);
        errno = saved;
        return -1;
    }
    s->events_busy =
        !seqlock_read(&seg->events->lock, &s->ev, seg->events, sizeof(s->ev), SNAP_TRIES);
    take_kinds(s, seg);
    take_workers(s, seg);
    return 0;
}

void snap_free(struct snap *s)
{
    for (unsigned i = 0; i < s->nblocks; i++) {
        free(s->blocks[i].fields);
        free(s->blocks[i].data);
    }
    free(s->blocks);
    free(s->kinds);
    free(s->workers);
    s->blocks = NULL;
    s->nblocks = 0;
    s->kinds = NULL;
    s->workers = NULL;
}

const struct snap_block *snap_block(const struct snap *s, const char *name)
{
    for (unsigned i = 0; i < s->nblocks; i++)
        if (!s->blocks[i].busy && strcmp(s->blocks[i].e.name, name) == 0)
            return &s->blocks[i];
    return NULL;
}

const char *snap_kind_name(const struct snap *s, uint32_t index)
{
    for (unsigned i = 0; i < s->nkinds; i++)
        if (s->kinds[i].index == index && !s->kinds[i].busy)
            return s->kinds[i].k.name;
    return NULL;
}

/* ---- attaching */

static void explain_access(const char *instance, FILE *err)
{
    char path[128];
    struct stat st;
    snprintf(path, sizeof(path), SHM_DIR "/" SHM_PREFIX "%s", instance);
    if (stat(path, &st) < 0) {
        fprintf(err, "mqforkstat: instance '%s': may not read %s\n", instance, path);
        return;
    }
    const struct group *gr = getgrgid(st.st_gid);
    const struct passwd *pw = getpwuid(st.st_uid);
    char gname[64], uname[64];
    snprintf(gname, sizeof(gname), "%s", gr ? gr->gr_name : "?");
    snprintf(uname, sizeof(uname), "%s", pw ? pw->pw_name : "?");
    if (!gr)
        snprintf(gname, sizeof(gname), "%u", (unsigned)st.st_gid);
    fprintf(err,
            "mqforkstat: instance '%s': this user may not read %s (mode %03o, owner %s, group "
            "%s); run as %s or as a member of group '%s'\n",
            instance, path, (unsigned)(st.st_mode & 0777), uname, gname, uname, gname);
}

/* After "no such instance": the way to list them, and those that exist. */
static void suggest_instances(FILE *err)
{
    char **names;
    size_t n = instance_names(&names);
    if (n == 0) {
        fprintf(err, "mqforkstat: no instance exists (no " SHM_DIR "/" SHM_PREFIX
                     "*: is mqforkd running?)\n");
        return;
    }
    fprintf(err, "mqforkstat: instances (mqforkstat -l for their state):");
    for (size_t i = 0; i < n; i++) {
        if (i < SUGGEST_MAX)
            fprintf(err, " %s", names[i]);
        free(names[i]);
    }
    if (n > SUGGEST_MAX)
        fprintf(err, " and %zu more", n - SUGGEST_MAX);
    fputc('\n', err);
    free(names);
}

static void explain(const char *instance, int err_no, uint32_t found, FILE *err)
{
    if (err_no == ENOENT) {
        fprintf(err, "mqforkstat: no such instance '%s' (no " SHM_DIR "/" SHM_PREFIX "%s)\n",
                instance, instance);
        suggest_instances(err);
    } else if (err_no == EACCES || err_no == EPERM)
        explain_access(instance, err);
    else if (err_no == EPROTO && found)
        fprintf(err,
                "mqforkstat: instance '%s': its segment has layout version %u, this mqforkstat "
                "reads version %u (the daemon is another version of mqfork)\n",
                instance, found, SEG_LAYOUT_VERSION);
    else if (err_no == EBADMSG)
        fprintf(err,
                "mqforkstat: instance '%s': " SHM_DIR "/" SHM_PREFIX
                "%s is damaged (a region or a statistics block it names does not fit the "
                "file); not reading it\n",
                instance, instance);
    else if (err_no == EPROTO)
        fprintf(err,
                "mqforkstat: instance '%s': " SHM_DIR "/" SHM_PREFIX
                "%s is not an mqfork segment (wrong magic or a damaged header)\n",
                instance, instance);
    else
        fprintf(err, "mqforkstat: instance '%s': %s\n", instance, strerror(err_no));
}

int stat_attach(struct segment *seg, const char *instance, bool stale_is_error, FILE *err)
{
    uint32_t found = 0;
    if (seg_attach(seg, instance, &found) < 0) {
        if (err)
            explain(instance, errno, found, err);
        return -1;
    }
    if (stale_is_error && !seg_owner_alive(seg->hdr)) {
        if (err)
            fprintf(err,
                    "mqforkstat: instance '%s': the daemon (pid %d) is gone; the segment is "
                    "stale\n",
                    instance, (int)seg->hdr->pid);
        seg_close(seg, false);
        return -1;
    }
    return 0;
}

/* ---- listing */

static void format_duration(char *buf, size_t len, double s)
{
    unsigned long t = s > 0 ? (unsigned long)s : 0;
    if (t >= 86400)
        snprintf(buf, len, "%lud%02luh%02lum", t / 86400, t / 3600 % 24, t / 60 % 60);
    else if (t >= 3600)
        snprintf(buf, len, "%luh%02lum%02lus", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%lum%02lus", t / 60, t % 60);
}

static void list_one(FILE *out, const char *instance)
{
    struct segment seg;
    uint32_t found = 0;
    if (seg_attach(&seg, instance, &found) < 0) {
        const char *why = errno == EACCES    ? "no-permission"
                          : errno == EPROTO  ? "other-version"
                          : errno == EBADMSG ? "damaged"
                                             : "unreadable";
        fprintf(out, "%-24s %8s %-13s %s\n", instance, "-", why, "-");
        return;
    }
    char up[32];
    double s = (double)(clock_ns(CLOCK_REALTIME) - seg.hdr->start_realtime_ns) / 1e9;
    format_duration(up, sizeof(up), s);
    fprintf(out, "%-24s %8d %-13s %s\n", instance, (int)seg.hdr->pid,
            seg_owner_alive(seg.hdr) ? "alive" : "stale", up);
    seg_close(&seg, false);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The instance names in /dev/shm, sorted, in *NAMES (each and the array
 * for the caller to free). Returns how many; 0 with *NAMES NULL if none. */
static size_t instance_names(char ***names_out)
{
    char **names = NULL;
    size_t n = 0;
    DIR *d = opendir(SHM_DIR);
    for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d)) {
        if (strncmp(e->d_name, SHM_PREFIX, strlen(SHM_PREFIX)) != 0 ||
            e->d_name[strlen(SHM_PREFIX)] == '\0')
            continue;
        char **more = realloc(names, (n + 1) * sizeof(*names));
        if (!more)
            break;
        names = more;
        names[n] = strdup(e->d_name + strlen(SHM_PREFIX));
        n += names[n] != NULL;
    }
    if (d)
        closedir(d);
    if (n > 1)
        qsort(names, n, sizeof(*names), by_name);
    *names_out = names;
    return n;
}

int stat_list(FILE *out)
{
    if (access(SHM_DIR, R_OK | X_OK) < 0) {
        fprintf(stderr, "mqforkstat: %s: %s\n", SHM_DIR, strerror(errno));
        return 1;
    }
    char **names;
    size_t n = instance_names(&names);
    fprintf(out, "%-24s %8s %-13s %s\n", "INSTANCE", "PID", "STATE", "UPTIME");
    for (size_t i = 0; i < n; i++) {
        list_one(out, names[i]);
        free(names[i]);
    }
    free(names);
    return 0;
}
