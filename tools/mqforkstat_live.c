/* mqforkstat_live.c - the live view: a full-screen ncurses page redrawn
 * every -w seconds from a fresh snapshot, in the manner of top and
 * varnishstat. It quits on `q`, redraws at once on a resize, and follows the
 * instance across daemon restarts: when the daemon dies or its segment is
 * replaced it lets go and waits for the instance to come back. */
#include <curses.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tools/mqforkstat.h"

struct live {
    const char *instance;
    double interval_s;
    struct segment seg;
    bool attached;
    dev_t dev; /* of the attached segment, to notice a replacement */
    ino_t ino;
    char why[256]; /* why the view is waiting */
};

/* The rows written so far on this redraw. */
struct screen {
    int row;
};

static void put(struct screen *sc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct screen *sc, const char *fmt, ...)
{
    if (sc->row >= LINES)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    mvaddnstr(sc->row++, 0, buf, COLS > 0 ? COLS : 0);
}

static void title(struct screen *sc, const char *text)
{
    if (sc->row >= LINES)
        return;
    attron(A_BOLD);
    put(sc, "%s", text);
    attroff(A_BOLD);
}

/* A duration, short: 850ns, 12.3us, 4.56ms, 1.20s. */
static const char *dur(char *buf, size_t len, uint64_t ns)
{
    if (ns < 1000)
        snprintf(buf, len, "%lluns", (unsigned long long)ns);
    else if (ns < 1000000)
        snprintf(buf, len, "%.1fus", (double)ns / 1e3);
    else if (ns < 1000000000)
        snprintf(buf, len, "%.2fms", (double)ns / 1e6);
    else
        snprintf(buf, len, "%.2fs", (double)ns / 1e9);
    return buf;
}

static const char *uptime(char *buf, size_t len, double s)
{
    unsigned long t = s > 0 ? (unsigned long)s : 0;
    snprintf(buf, len, "%lud %02lu:%02lu:%02lu", t / 86400, t / 3600 % 24, t / 60 % 60, t % 60);
    return buf;
}

static const char *clock_of(char *buf, size_t len, uint64_t realtime_ns)
{
    time_t t = (time_t)(realtime_ns / 1000000000u);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%H:%M:%S", &tm);
    return buf;
}

/* ---- sections */

static void draw_header(struct screen *sc, const struct live *l, const struct snap *s)
{
    char up[32], now[16];
    const struct stats_global *g = &s->g;
    attron(A_REVERSE);
    put(sc,
        "mqforkstat  instance '%s'  pid %d  v%s  up %s  generation %llu  %s  refresh %gs  q quits",
        s->hdr.instance, (int)s->hdr.pid, s->hdr.version, uptime(up, sizeof(up), snap_uptime_s(s)),
        (unsigned long long)s->generation, clock_of(now, sizeof(now), s->real_ns), l->interval_s);
    attroff(A_REVERSE);
    if (s->global_busy) {
        put(sc, "state     (busy: the global block is being written)");
        return;
    }
    put(sc,
        "state     %s  %s  mqtt %s, %llu reconnects, %u queued, %llu in / %llu out, %llu dropped",
        s->alive ? "running" : "GONE", verdict_name(g->verdict),
        g->mqtt_connected ? "connected" : "disconnected", (unsigned long long)g->mqtt_reconnects,
        (unsigned)g->mqtt_queue, (unsigned long long)g->mqtt_msgs_in,
        (unsigned long long)g->mqtt_msgs_out, (unsigned long long)g->mqtt_dropped);
}

static void draw_pool(struct screen *sc, const struct snap *s)
{
    const struct stats_global *g = &s->g;
    if (s->global_busy)
        return;
    put(sc,
        "pool      live %u  busy %u  idle %u   min %u  target %u  max %u   spawned %llu  crashed "
        "%llu  timeouts %llu  recycled %llu",
        g->workers_live, g->workers_busy, g->workers_idle, g->workers_min, g->workers_target,
        g->workers_max, (unsigned long long)g->spawned, (unsigned long long)g->crashed,
        (unsigned long long)g->killed_timeout, (unsigned long long)g->recycled);
}

static void draw_flow(struct screen *sc, const struct snap *s)
{
    const struct stats_global *g = &s->g;
    if (s->global_busy)
        return;
    uint64_t refused = 0;
    for (unsigned i = 0; i < JOB_STATUS_COUNT; i++)
        refused += g->refused[i];
    put(sc, "flow      arrivals/s  %10.1f %10.1f %10.1f    (1 s, 10 s, 60 s)   %s",
        (double)g->arrival_mrate[0] / 1e3, (double)g->arrival_mrate[1] / 1e3,
        (double)g->arrival_mrate[2] / 1e3, verdict_name(g->verdict));
    put(sc, "          answers/s   %10.1f %10.1f %10.1f", (double)g->completion_mrate[0] / 1e3,
        (double)g->completion_mrate[1] / 1e3, (double)g->completion_mrate[2] / 1e3);
    put(sc,
        "          pending high %u normal %u low %u   in flight %u   refused %llu   expired %llu   "
        "accepted %llu  completed %llu  failed %llu",
        g->pending[0], g->pending[1], g->pending[2], g->inflight, (unsigned long long)refused,
        (unsigned long long)g->expired, (unsigned long long)g->accepted,
        (unsigned long long)g->completed, (unsigned long long)g->failed);
}

/* Count, p50, p90, p99 and max of H, each %9s wide; dashes when empty. */
static const char *hist_cols(char *buf, size_t len, const struct stats_hist *h)
{
    char b[4][16];
    if (h->count == 0) {
        snprintf(buf, len, "%9d %9s %9s %9s %9s", 0, "-", "-", "-", "-");
        return buf;
    }
    snprintf(buf, len, "%9llu %9s %9s %9s %9s", (unsigned long long)h->count,
             dur(b[0], 16, stats_hist_percentile(h, 0.5)),
             dur(b[1], 16, stats_hist_percentile(h, 0.9)),
             dur(b[2], 16, stats_hist_percentile(h, 0.99)), dur(b[3], 16, h->max_ns));
    return buf;
}

static void draw_kind(struct screen *sc, const struct snap_kind *sk)
{
    if (sk->busy) {
        put(sc, "  #%-20u (busy)", (unsigned)sk->index);
        return;
    }
    const struct stats_hist *t = &sk->k.total;
    char w[96], r[96], p99[16];
    /* Of total only the tail: the full five columns would not fit the width. */
    put(sc, "  %-20.20s %s  %s  %9s", sk->k.name, hist_cols(w, sizeof(w), &sk->k.wait),
        hist_cols(r, sizeof(r), &sk->k.run),
        t->count ? dur(p99, sizeof(p99), stats_hist_percentile(t, 0.99)) : "-");
}

/* The title's group labels line up with draw_kind's columns. */
static void draw_latency(struct screen *sc, const struct snap *s)
{
    title(sc, "latency                ------------------ queue wait -------------------  "
              "------------------- run time --------------------  - total -");
    put(sc, "  %-20s %9s %9s %9s %9s %9s  %9s %9s %9s %9s %9s  %9s", "kind", "count", "p50", "p90",
        "p99", "max", "count", "p50", "p90", "p99", "max", "p99");
    for (unsigned i = 0; i < s->nkinds; i++)
        draw_kind(sc, &s->kinds[i]);
}

static void draw_worker(struct screen *sc, const struct snap *s, const struct snap_worker *sw)
{
    if (sw->busy) {
        put(sc, "  %4u  (busy)", (unsigned)sw->slot);
        return;
    }
    const struct stats_worker *w = &sw->w;
    uint64_t age = worker_job_age_ns(s, sw);
    const char *kind = age ? snap_kind_name(s, w->cur_kind) : NULL;
    char a[16];
    put(sc, "  %4u %8d %-9s %10llu %6llu %5u  %-20.20s %9s %6.1f %9.1f", (unsigned)sw->slot,
        (int)w->pid, worker_state_name(w->state), (unsigned long long)w->jobs_done,
        (unsigned long long)w->failures, (unsigned)w->inflight, kind ? kind : "-",
        age ? dur(a, sizeof(a), age) : "-", (double)w->cpu_permille / 10.0,
        (double)w->rss_kb / 1024.0);
}

static void draw_workers(struct screen *sc, const struct snap *s)
{
    title(sc, "workers");
    put(sc, "  %4s %8s %-9s %10s %6s %5s  %-20s %9s %6s %9s", "slot", "pid", "state", "jobs",
        "fail", "infl", "job", "age", "cpu%", "rss MiB");
    for (unsigned i = 0; i < s->nworkers; i++)
        draw_worker(sc, s, &s->workers[i]);
}

static void draw_events(struct screen *sc, const struct snap *s)
{
    const struct stats_events *ev = &s->ev;
    char when[16], cause[32];
    title(sc, "scaling (newest first)");
    if (s->events_busy)
        put(sc, "  (busy)");
    for (uint64_t i = 0; !s->events_busy && i < ev->scales && i < STATS_RING_LEN; i++) {
        const struct stats_scale *e = &ev->scale[(ev->scales - 1 - i) % STATS_RING_LEN];
        put(sc, "  %s  %u -> %u  %.*s", clock_of(when, sizeof(when), e->time_ns), (unsigned)e->from,
            (unsigned)e->to, (int)sizeof(e->reason), e->reason);
    }
    title(sc, "crashes (newest first)");
    for (uint64_t i = 0; !s->events_busy && i < ev->crashes && i < STATS_RING_LEN; i++) {
        const struct stats_crash *c = &ev->crash[(ev->crashes - 1 - i) % STATS_RING_LEN];
        crash_cause(cause, sizeof(cause), c);
        put(sc, "  %s  slot %-3u pid %-8d %-10s kind %.*s",
            clock_of(when, sizeof(when), c->time_ns), (unsigned)c->slot, (int)c->pid, cause,
            STATS_NAME_LEN, c->kind[0] ? c->kind : "-");
    }
}

static void draw(const struct live *l, const struct snap *s)
{
    struct screen sc = {0};
    erase();
    draw_header(&sc, l, s);
    draw_pool(&sc, s);
    draw_flow(&sc, s);
    sc.row++;
    draw_latency(&sc, s);
    sc.row++;
    draw_workers(&sc, s);
    sc.row++;
    draw_events(&sc, s);
    refresh();
}

static void draw_waiting(const struct live *l)
{
    struct screen sc = {0};
    erase();
    attron(A_REVERSE);
    put(&sc, "mqforkstat  waiting for instance '%s'...  q quits", l->instance);
    attroff(A_REVERSE);
    put(&sc, "%s", l->why);
    refresh();
}

/* ---- following the instance */

static void try_attach(struct live *l)
{
    FILE *f = fmemopen(l->why, sizeof(l->why), "w");
    int rc = stat_attach(&l->seg, l->instance, true, f);
    if (f)
        fclose(f);
    l->why[sizeof(l->why) - 1] = '\0';
    l->why[strcspn(l->why, "\n")] = '\0';
    /* the one-shot modes' prefix says nothing on this screen */
    if (strncmp(l->why, "mqforkstat: ", 12) == 0)
        memmove(l->why, l->why + 12, strlen(l->why + 12) + 1);
    struct stat st;
    if (rc < 0 || fstat(l->seg.fd, &st) < 0) {
        if (rc == 0)
            seg_close(&l->seg, false);
        return;
    }
    l->attached = true;
    l->dev = st.st_dev;
    l->ino = st.st_ino;
}

/* Let go when the daemon died or a new one replaced the segment. */
static void check_attached(struct live *l)
{
    char path[128];
    struct stat st;
    snprintf(path, sizeof(path), "/dev/shm/mqfork.%s", l->instance);
    bool replaced = stat(path, &st) < 0 || st.st_dev != l->dev || st.st_ino != l->ino;
    if (!replaced && seg_owner_alive(l->seg.hdr))
        return;
    seg_close(&l->seg, false);
    l->attached = false;
}

static void show(struct live *l)
{
    if (l->attached)
        check_attached(l);
    if (!l->attached)
        try_attach(l);
    struct snap s;
    if (l->attached && snap_take(&s, &l->seg) == 0) {
        draw(l, &s);
        snap_free(&s);
    } else {
        draw_waiting(l);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait for the next refresh; false when the user quit. */
static bool wait_key(double until)
{
    for (;;) {
        double left = until - now_s();
        if (left <= 0)
            return true;
        timeout((int)(left * 1000) + 1);
        int c = getch();
        if (c == 'q' || c == 'Q')
            return false;
        if (c == KEY_RESIZE || c == ERR)
            return true;
    }
}

int live_run(const char *instance, double interval_s)
{
    SCREEN *scr = newterm(NULL, stdout, stdin);
    if (!scr) {
        fprintf(stderr, "mqforkstat: cannot drive this terminal (TERM=%s); use -1, -j or -p\n",
                getenv("TERM") ? getenv("TERM") : "");
        return 1;
    }
    cbreak();
    noecho();
    keypad(stdscr, TRUE);
    curs_set(0);
    struct live l = {.instance = instance, .interval_s = interval_s};
    do
        show(&l);
    while (wait_key(now_s() + interval_s));
    if (l.attached)
        seg_close(&l.seg, false);
    endwin();
    delscreen(scr);
    return 0;
}
