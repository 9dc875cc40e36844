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

#include "shm/clock.h"
#include "shm/statread.h"
#include "tools/mqforkstat.h"

struct live {
    const char *instance;
    double interval_s;
    struct segment seg;
    bool attached;
    dev_t dev; /* of the attached segment, to notice a replacement */
    ino_t ino;
    char why[256]; /* why the view is waiting */
    int top;       /* scrolled: first row of the view below the header on screen */
    int rows;      /* of the view at the last redraw */
};

/* The view is 80 columns wide whatever the terminal, and taller than most
 * screens: the rows are laid out from 0 and the screen shows them from
 * `top` on (the arrow and page keys move it). */
#define VIEW_COLS 80
#define HEAD_ROWS 2 /* the header and state lines stay on screen */

struct screen {
    int row; /* the next row of the view */
    int top; /* first row of the scrolled part on screen */
};

/* The screen line of view row ROW, or -1 when it is not on screen. */
static int screen_line(const struct screen *sc, int row)
{
    int line = row < HEAD_ROWS ? row : row - sc->top;
    return line >= (row < HEAD_ROWS ? 0 : HEAD_ROWS) && line < LINES ? line : -1;
}

static void put(struct screen *sc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct screen *sc, const char *fmt, ...)
{
    int line = screen_line(sc, sc->row++);
    if (line < 0)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    int width = COLS < VIEW_COLS ? COLS : VIEW_COLS;
    mvaddnstr(line, 0, buf, width > 0 ? width : 0);
}

static void title(struct screen *sc, const char *text)
{
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
    attron(A_REVERSE);
    put(sc, "mqforkstat  '%s'  pid %d  v%s  up %s  gen %llu  %s%*s", s->hdr.instance,
        (int)s->hdr.pid, s->hdr.version, uptime(up, sizeof(up), snap_uptime_s(s)),
        (unsigned long long)s->generation, clock_of(now, sizeof(now), s->real_ns), VIEW_COLS, "");
    attroff(A_REVERSE);
    put(sc, "state %s   refresh %gs   q quits, arrows and PgUp/PgDn scroll",
        s->alive ? "running" : "GONE", l->interval_s);
}

/* Count, p50, p90, p99 and max of H, each %8s wide; dashes when empty. */
static const char *hist_cols(char *buf, size_t len, const struct stats_hist *h)
{
    char b[4][16];
    if (h->count == 0) {
        snprintf(buf, len, "%9d %8s %8s %8s %8s", 0, "-", "-", "-", "-");
        return buf;
    }
    snprintf(buf, len, "%9llu %8s %8s %8s %8s", (unsigned long long)h->count,
             dur(b[0], 16, stats_hist_percentile(h, 0.5)),
             dur(b[1], 16, stats_hist_percentile(h, 0.9)),
             dur(b[2], 16, stats_hist_percentile(h, 0.99)), dur(b[3], 16, h->max_ns));
    return buf;
}

/* A field's value as the view shows it, at most 11 columns. */
static const char *field_cell(char *buf, size_t len, const struct snap *s,
                              const struct snap_block *b, const struct stats_field *f)
{
    if (f->type == STATS_STATE)
        return field_state(buf, len, f, b->data);
    if (f->type == STATS_TIMESTAMP)
        snprintf(buf, len, "%.1fs ago", field_age_s(s, f, b->data));
    else if (f->divide == 1)
        snprintf(buf, len, "%llu", (unsigned long long)stats_field_raw(f, b->data));
    else
        snprintf(buf, len, "%.1f", field_value(f, b->data));
    return buf;
}

/* A block: its counters and gauges two to a row, a histogram to a row
 * (the first under a heading of its columns). */
static void draw_block(struct screen *sc, const struct snap *s, const struct snap_block *b)
{
    char head[96], cell[2][STATS_STATES_LEN], cols[64];
    snprintf(head, sizeof(head), "%s%s", b->e.name, b->busy ? "  (busy)" : "");
    if (!b->busy && (b->e.flags & STATS_BLOCK_PER_WORKER))
        snprintf(head, sizeof(head), "%s  (sum of %u worker slots)", b->e.name, b->e.instances);
    title(sc, head);
    const struct stats_field *pending = NULL; /* the left half of a row */
    bool hist_head = false;
    for (uint32_t i = 0; !b->busy && i < b->e.nfields; i++) {
        const struct stats_field *f = &b->fields[i];
        if (f->type == STATS_HISTOGRAM) {
            if (!hist_head)
                put(sc, "  %-20s %9s %8s %8s %8s %8s", "", "count", "p50", "p90", "p99", "max");
            hist_head = true;
            put(sc, "  %-20.20s %s", f->name,
                hist_cols(cols, sizeof(cols), field_hist(f, b->data)));
        } else if (!pending) {
            pending = f;
        } else {
            put(sc, "  %-25.25s %11.11s  %-25.25s %11.11s", pending->name,
                field_cell(cell[0], sizeof(cell[0]), s, b, pending), f->name,
                field_cell(cell[1], sizeof(cell[1]), s, b, f));
            pending = NULL;
        }
    }
    if (pending)
        put(sc, "  %-25.25s %11.11s", pending->name,
            field_cell(cell[0], sizeof(cell[0]), s, b, pending));
}

static void draw_kind(struct screen *sc, const struct snap_kind *sk)
{
    if (sk->busy) {
        put(sc, "  #%-13u (busy)", (unsigned)sk->index);
        return;
    }
    const struct stats_kind *k = &sk->k;
    char d[6][16];
    if (k->total.count == 0 && k->wait.count == 0) {
        put(sc, "  %-14.14s %9d %8s %8s %8s %8s %8s %8s", k->name, 0, "-", "-", "-", "-", "-", "-");
        return;
    }
    put(sc, "  %-14.14s %9llu %8s %8s %8s %8s %8s %8s", k->name, (unsigned long long)k->total.count,
        dur(d[0], 16, stats_hist_percentile(&k->wait, 0.5)),
        dur(d[1], 16, stats_hist_percentile(&k->wait, 0.99)),
        dur(d[2], 16, stats_hist_percentile(&k->run, 0.5)),
        dur(d[3], 16, stats_hist_percentile(&k->run, 0.99)), dur(d[4], 16, k->run.max_ns),
        dur(d[5], 16, stats_hist_percentile(&k->total, 0.99)));
}

static void draw_latency(struct screen *sc, const struct snap *s)
{
    title(sc, "latency per kind (-1 has every percentile)");
    put(sc, "  %-14s %9s %8s %8s %8s %8s %8s %8s", "kind", "answered", "wait p50", "wait p99",
        "run p50", "run p99", "run max", "tot p99");
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
    put(sc, "  %4u %7d %-8s %9llu %5llu %4u %-11.11s %8s %5.1f %7.1f", (unsigned)sw->slot,
        (int)w->pid, worker_state_name(w->state), (unsigned long long)w->jobs_done,
        (unsigned long long)w->failures, (unsigned)w->inflight, kind ? kind : "-",
        age ? dur(a, sizeof(a), age) : "-", (double)w->cpu_permille / 10.0,
        (double)w->rss_kb / 1024.0);
}

static void draw_workers(struct screen *sc, const struct snap *s)
{
    title(sc, "workers");
    put(sc, "  %4s %7s %-8s %9s %5s %4s %-11s %8s %5s %7s", "slot", "pid", "state", "jobs", "fail",
        "infl", "job", "age", "cpu%", "rss MiB");
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

/* Every named block, then the tables; returns the rows of the view. */
static int draw(const struct live *l, const struct snap *s)
{
    struct screen sc = {.top = l->top};
    erase();
    draw_header(&sc, l, s);
    for (unsigned i = 0; i < s->nblocks; i++) {
        sc.row++;
        draw_block(&sc, s, &s->blocks[i]);
    }
    sc.row++;
    draw_latency(&sc, s);
    sc.row++;
    draw_workers(&sc, s);
    sc.row++;
    draw_events(&sc, s);
    refresh();
    return sc.row;
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
        l->rows = draw(l, &s);
        snap_free(&s);
        return;
    }
    if (l->attached) {
        snprintf(l->why, sizeof(l->why), "instance '%s': %s", l->instance,
                 errno == EBADMSG ? "its segment is damaged; not reading it" : strerror(errno));
        seg_close(&l->seg, false);
        l->attached = false;
    }
    draw_waiting(l);
}

static double now_s(void)
{
    return (double)mono_ns() / 1e9;
}

/* Move the view by key C; false when C is no scrolling key. */
static bool scroll_view(struct live *l, int c)
{
    int page = LINES - HEAD_ROWS > 1 ? LINES - HEAD_ROWS - 1 : 1;
    int last = l->rows - LINES > 0 ? l->rows - LINES : 0;
    int top;
    switch (c) {
    case KEY_UP:
    case 'k':
        top = l->top - 1;
        break;
    case KEY_DOWN:
    case 'j':
        top = l->top + 1;
        break;
    case KEY_PPAGE:
        top = l->top - page;
        break;
    case KEY_NPAGE:
    case ' ':
        top = l->top + page;
        break;
    case KEY_HOME:
        top = 0;
        break;
    case KEY_END:
        top = last;
        break;
    default:
        return false;
    }
    l->top = top < 0 ? 0 : top > last ? last : top;
    return true;
}

/* Wait for the next refresh; false when the user quit. */
static bool wait_key(struct live *l, double until)
{
    for (;;) {
        double left = until - now_s();
        if (left <= 0)
            return true;
        timeout((int)(left * 1000) + 1);
        int c = getch();
        if (c == 'q' || c == 'Q')
            return false;
        if (c == KEY_RESIZE || c == ERR || scroll_view(l, c))
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
    while (wait_key(&l, now_s() + interval_s));
    if (l.attached)
        seg_close(&l.seg, false);
    endwin();
    delscreen(scr);
    return 0;
}
