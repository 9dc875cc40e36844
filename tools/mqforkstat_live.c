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

/* The columns the view has room for: the terminal's, at most VIEW_COLS. */
static int view_width(void)
{
    return COLS < VIEW_COLS ? COLS : VIEW_COLS;
}

/* A column of a table. On a terminal narrower than the view the columns
 * go, the least important first (the highest DROP; 0 always stays), and
 * the table's title says how many and how to see them. */
struct col {
    const char *head;
    int width; /* negative: left-aligned */
    int drop;
};

#define MAX_COLS 12
#define CELL_LEN 24 /* a cell's text, at most 20 shown */

/* Which of the N columns fit in the view's width (a 2-column indent, one
 * space between); returns how many were dropped. */
static int cols_fit(const struct col *cols, size_t n, bool *shown)
{
    int used = 2, dropped = 0;
    for (size_t i = 0; i < n; i++) {
        shown[i] = true;
        used += abs(cols[i].width) + (i > 0);
    }
    while (used > view_width()) {
        size_t worst = n;
        for (size_t i = 0; i < n; i++)
            if (shown[i] && cols[i].drop > 0 && (worst == n || cols[i].drop > cols[worst].drop))
                worst = i;
        if (worst == n)
            break; /* only what always stays: put() cuts the rest */
        shown[worst] = false;
        used -= abs(cols[worst].width) + 1;
        dropped++;
    }
    return dropped;
}

/* One row of a table: CELLS[i] under column i, when shown. */
static void put_row(struct screen *sc, const struct col *cols, size_t n, const bool *shown,
                    char cells[][CELL_LEN])
{
    char line[256];
    size_t used = (size_t)snprintf(line, sizeof(line), " ");
    for (size_t i = 0; i < n && used < sizeof(line); i++)
        if (shown[i])
            used += (size_t)snprintf(line + used, sizeof(line) - used, " %*.*s", cols[i].width,
                                     abs(cols[i].width), cells[i]);
    put(sc, "%s", line);
}

/* A table's title (with HINT, unless what was dropped is said instead)
 * and its column heads. */
static void put_heads(struct screen *sc, const char *name, const char *hint, const struct col *cols,
                      size_t n, bool *shown)
{
    char text[160], cells[MAX_COLS][CELL_LEN];
    int dropped = cols_fit(cols, n, shown);
    if (dropped)
        snprintf(text, sizeof(text), "%s (%d column%s hidden: widen to %d, or -1)", name, dropped,
                 dropped == 1 ? "" : "s", VIEW_COLS);
    else
        snprintf(text, sizeof(text), "%s%s", name, hint);
    title(sc, text);
    for (size_t i = 0; i < n; i++)
        snprintf(cells[i], sizeof(cells[i]), "%s", cols[i].head);
    put_row(sc, cols, n, shown, cells);
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

/* The header line: instance, pid and uptime always; the clock, the
 * version and the generation as the width allows (dropped in that order
 * from the right). */
static void draw_header(struct screen *sc, const struct live *l, const struct snap *s)
{
    char up[32], now[16], line[256];
    int n = snprintf(line, sizeof(line), "mqforkstat '%.24s' pid %d up %s", s->hdr.instance,
                     (int)s->hdr.pid, uptime(up, sizeof(up), snap_uptime_s(s)));
    char extra[3][48];
    snprintf(extra[0], sizeof(extra[0]), "  %s", clock_of(now, sizeof(now), s->real_ns));
    snprintf(extra[1], sizeof(extra[1]), "  v%.16s", s->hdr.version);
    snprintf(extra[2], sizeof(extra[2]), "  gen %llu", (unsigned long long)s->generation);
    for (size_t i = 0; i < 3 && n >= 0 && (size_t)n < sizeof(line); i++)
        if (n + (int)strlen(extra[i]) <= view_width())
            n += snprintf(line + n, sizeof(line) - (size_t)n, "%s", extra[i]);
    attron(A_REVERSE);
    put(sc, "%-*s", view_width(), line);
    attroff(A_REVERSE);
    put(sc, "%s  every %gs  q quits, arrows/PgUp/PgDn scroll", s->alive ? "running" : "GONE",
        l->interval_s);
}

static const struct col hist_cols[] = {
    {"", -20, 0}, {"count", 9, 3}, {"p50", 8, 2}, {"p90", 8, 4}, {"p99", 8, 1}, {"max", 8, 5},
};
#define NHIST_COLS (sizeof(hist_cols) / sizeof(hist_cols[0]))

/* A histogram's row: its name, count, p50, p90, p99 and max; dashes when
 * empty. */
static void put_hist(struct screen *sc, const char *name, const struct stats_hist *h,
                     const bool *shown)
{
    char c[NHIST_COLS][CELL_LEN];
    snprintf(c[0], CELL_LEN, "%.20s", name);
    snprintf(c[1], CELL_LEN, "%llu", (unsigned long long)h->count);
    const double q[] = {0.5, 0.9, 0.99};
    for (size_t i = 0; i < 3; i++)
        if (h->count)
            dur(c[2 + i], CELL_LEN, stats_hist_percentile(h, q[i]));
        else
            snprintf(c[2 + i], CELL_LEN, "-");
    if (h->count)
        dur(c[5], CELL_LEN, h->max_ns);
    else
        snprintf(c[5], CELL_LEN, "-");
    put_row(sc, hist_cols, NHIST_COLS, shown, c);
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

/* A block: its counters and gauges two to a row (one on a terminal too
 * narrow for two), a histogram to a row (the first under a heading of its
 * columns). */
static void draw_block(struct screen *sc, const struct snap *s, const struct snap_block *b)
{
    char head[160], cell[2][STATS_STATES_LEN];
    bool hist_shown[NHIST_COLS];
    int dropped = cols_fit(hist_cols, NHIST_COLS, hist_shown);
    bool two = view_width() >= 78;
    snprintf(head, sizeof(head), "%s%s", b->e.name, b->busy ? "  (busy)" : "");
    if (!b->busy && (b->e.flags & STATS_BLOCK_PER_WORKER))
        snprintf(head, sizeof(head), "%s  (sum of %u worker slots)", b->e.name, b->e.instances);
    for (uint32_t i = 0; dropped && !b->busy && i < b->e.nfields; i++)
        if (b->fields[i].type == STATS_HISTOGRAM) {
            size_t n = strlen(head);
            snprintf(head + n, sizeof(head) - n, " (%d column%s hidden: widen to %d, or -1)",
                     dropped, dropped == 1 ? "" : "s", VIEW_COLS);
            break;
        }
    title(sc, head);
    const struct stats_field *pending = NULL; /* the left half of a row */
    bool hist_head = false;
    for (uint32_t i = 0; !b->busy && i < b->e.nfields; i++) {
        const struct stats_field *f = &b->fields[i];
        if (f->type == STATS_HISTOGRAM) {
            char heads[NHIST_COLS][CELL_LEN];
            for (size_t k = 0; !hist_head && k < NHIST_COLS; k++)
                snprintf(heads[k], CELL_LEN, "%s", hist_cols[k].head);
            if (!hist_head)
                put_row(sc, hist_cols, NHIST_COLS, hist_shown, heads);
            hist_head = true;
            put_hist(sc, f->name, field_hist(f, b->data), hist_shown);
        } else if (!pending && two) {
            pending = f;
        } else if (!pending) {
            put(sc, "  %-25.25s %11.11s", f->name, field_cell(cell[0], sizeof(cell[0]), s, b, f));
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

static const struct col kind_cols[] = {
    {"kind", -14, 0},  {"answered", 9, 3}, {"wait p50", 8, 5}, {"wait p99", 8, 2},
    {"run p50", 8, 4}, {"run p99", 8, 1},  {"run max", 8, 6},  {"tot p99", 8, 0},
};
#define NKIND_COLS (sizeof(kind_cols) / sizeof(kind_cols[0]))

static void draw_kind(struct screen *sc, const struct snap_kind *sk, const bool *shown)
{
    char c[NKIND_COLS][CELL_LEN];
    if (sk->busy) {
        put(sc, "  #%-13u (busy)", (unsigned)sk->index);
        return;
    }
    const struct stats_kind *k = &sk->k;
    snprintf(c[0], CELL_LEN, "%.14s", k->name);
    snprintf(c[1], CELL_LEN, "%llu", (unsigned long long)k->total.count);
    bool none = k->total.count == 0 && k->wait.count == 0;
    for (size_t i = 2; none && i < NKIND_COLS; i++)
        snprintf(c[i], CELL_LEN, "-");
    if (!none) {
        dur(c[2], CELL_LEN, stats_hist_percentile(&k->wait, 0.5));
        dur(c[3], CELL_LEN, stats_hist_percentile(&k->wait, 0.99));
        dur(c[4], CELL_LEN, stats_hist_percentile(&k->run, 0.5));
        dur(c[5], CELL_LEN, stats_hist_percentile(&k->run, 0.99));
        dur(c[6], CELL_LEN, k->run.max_ns);
        dur(c[7], CELL_LEN, stats_hist_percentile(&k->total, 0.99));
    }
    put_row(sc, kind_cols, NKIND_COLS, shown, c);
}

static void draw_latency(struct screen *sc, const struct snap *s)
{
    bool shown[NKIND_COLS];
    put_heads(sc, "latency per kind", " (-1 has every percentile)", kind_cols, NKIND_COLS, shown);
    for (unsigned i = 0; i < s->nkinds; i++)
        draw_kind(sc, &s->kinds[i], shown);
}

static const struct col worker_cols[] = {
    {"slot", 4, 0}, {"pid", 7, 3},   {"state", -8, 0}, {"jobs", 9, 5}, {"fail", 5, 4},
    {"infl", 4, 6}, {"job", -11, 2}, {"age", 8, 1},    {"cpu%", 5, 7}, {"rss MiB", 7, 8},
};
#define NWORKER_COLS (sizeof(worker_cols) / sizeof(worker_cols[0]))

static void draw_worker(struct screen *sc, const struct snap *s, const struct snap_worker *sw,
                        const bool *shown)
{
    char c[NWORKER_COLS][CELL_LEN];
    if (sw->busy) {
        put(sc, "  %4u  (busy)", (unsigned)sw->slot);
        return;
    }
    const struct stats_worker *w = &sw->w;
    uint64_t age = worker_job_age_ns(s, sw);
    const char *kind = age ? snap_kind_name(s, w->cur_kind) : NULL;
    snprintf(c[0], CELL_LEN, "%u", (unsigned)sw->slot);
    snprintf(c[1], CELL_LEN, "%d", (int)w->pid);
    snprintf(c[2], CELL_LEN, "%s", worker_state_name(w->state));
    snprintf(c[3], CELL_LEN, "%llu", (unsigned long long)w->jobs_done);
    snprintf(c[4], CELL_LEN, "%llu", (unsigned long long)w->failures);
    snprintf(c[5], CELL_LEN, "%u", (unsigned)w->inflight);
    snprintf(c[6], CELL_LEN, "%.11s", kind ? kind : "-");
    if (age)
        dur(c[7], CELL_LEN, age);
    else
        snprintf(c[7], CELL_LEN, "-");
    snprintf(c[8], CELL_LEN, "%.1f", (double)w->cpu_permille / 10.0);
    snprintf(c[9], CELL_LEN, "%.1f", (double)w->rss_kb / 1024.0);
    put_row(sc, worker_cols, NWORKER_COLS, shown, c);
}

static void draw_workers(struct screen *sc, const struct snap *s)
{
    bool shown[NWORKER_COLS];
    put_heads(sc, "workers", "", worker_cols, NWORKER_COLS, shown);
    for (unsigned i = 0; i < s->nworkers; i++)
        draw_worker(sc, s, &s->workers[i], shown);
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
