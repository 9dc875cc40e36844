/* mqforkstat_serve.c - mqforkstat --listen ADDRESS:PORT: the -p exposition
 * over HTTP for Prometheus, without node_exporter. It answers GET /metrics
 * and nothing else, reading the segment read-only at each request, so the
 * daemon never sees it. Everything a client controls is bounded: the
 * request head (REQ_MAX bytes), the connections at once (CONN_MAX; more
 * are answered 503 and closed), the time a connection may take (CONN_S,
 * request and response together); each connection carries one request.
 * One thread, one poll loop: a slow client cannot stall another. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "tools/mqforkstat.h"

#define REQ_MAX  4096 /* a request head, line and headers; more is refused */
#define CONN_MAX 16
#define CONN_S   5
#define BACKLOG  32

/* One client: its request as it arrives, then the response as it leaves. */
struct conn {
    int fd; /* -1: a free slot */
    time_t deadline;
    char req[REQ_MAX];
    size_t req_len;
    char *out; /* the whole response, once the request is read */
    size_t out_len, out_off;
    bool sent; /* all of it: what the client still sends is read and dropped */
};

struct server {
    const char *instance;
    int lfd;
    struct conn conns[CONN_MAX];
    struct log_rate refused_log;
};

static time_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/* ADDRESS:PORT ("127.0.0.1:9420", "[::1]:9420") into a listening socket,
 * or -1 with the reason on stderr. */
static int listen_on(const char *spec)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    size_t hlen = colon ? (size_t)(colon - spec) : 0;
    if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
        spec++;
        hlen -= 2;
    }
    if (!colon || hlen == 0 || hlen >= sizeof(host) || !colon[1]) {
        fprintf(stderr, "mqforkstat: --listen wants ADDRESS:PORT (127.0.0.1:9420), not '%s'\n",
                spec);
        return -1;
    }
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *ai;
    int rc = getaddrinfo(host, colon + 1, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "mqforkstat: --listen %s: %s (a numeric address and port)\n", spec,
                gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, BACKLOG) < 0) {
        fprintf(stderr, "mqforkstat: --listen %s: %s\n", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

static void conn_close(struct conn *c)
{
    close(c->fd);
    free(c->out);
    c->fd = -1;
    c->out = NULL;
}

/* The response: STATUS ("404 Not Found"), with BODY of LEN bytes. */
static void respond(struct conn *c, const char *status, const char *type, const char *body,
                    size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "%sConnection: close\r\n\r\n",
                     status, type, len, strncmp(status, "405", 3) ? "" : "Allow: GET\r\n");
    c->out = malloc((size_t)n + len);
    if (!c->out) {
        conn_close(c);
        return;
    }
    memcpy(c->out, head, (size_t)n);
    memcpy(c->out + n, body, len);
    c->out_len = (size_t)n + len;
    c->out_off = 0;
}

static void respond_text(struct conn *c, const char *status, const char *text)
{
    respond(c, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* The body of GET /metrics: -p's exposition of a fresh snapshot, or why
 * there is none (503: the daemon is not there to be scraped). */
static void respond_metrics(struct server *sv, struct conn *c)
{
    char why[512] = "";
    FILE *err = fmemopen(why, sizeof(why) - 1, "w");
    struct segment seg;
    int rc = stat_attach(&seg, sv->instance, true, err);
    if (err)
        fclose(err);
    if (rc < 0) {
        /* Its first line: what follows names the other instances, which
         * are none of a scraper's business. */
        why[strcspn(why, "\n")] = '\0';
        strcat(why, "\n");
        respond_text(c, "503 Service Unavailable", why);
        return;
    }
    struct snap s;
    rc = snap_take(&s, &seg);
    seg_close(&seg, false);
    if (rc < 0) {
        respond_text(c, "500 Internal Server Error", "mqforkstat: cannot copy the statistics\n");
        return;
    }
    char *body = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&body, &len);
    rc = out ? out_prom(out, &s) : -1;
    if (out && fclose(out) != 0)
        rc = -1;
    snap_free(&s);
    if (rc < 0)
        respond_text(c, "500 Internal Server Error", "mqforkstat: out of memory\n");
    else
        respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, len);
    free(body);
}

/* The request head is complete: answer it. Only "GET /metrics" (a query
 * string allowed, and ignored) is served. */
static void answer(struct server *sv, struct conn *c)
{
    char method[8], target[256], version[16];
    c->req[c->req_len] = '\0';
    if (sscanf(c->req, "%7s %255s %15s", method, target, version) != 3 ||
        strncmp(version, "HTTP/1.", 7) != 0) {
        log_rated(&sv->refused_log, LOG_LVL_WARN, "--listen: a request that is not HTTP/1.x");
        respond_text(c, "400 Bad Request", "not an HTTP/1.x request\n");
    } else if (strcmp(method, "GET") != 0) {
        log_rated(&sv->refused_log, LOG_LVL_WARN, "--listen: a method other than GET refused");
        respond_text(c, "405 Method Not Allowed", "only GET /metrics is served\n");
    } else if (strcmp(target, "/metrics") != 0 && strncmp(target, "/metrics?", 9) != 0) {
        for (char *p = target; *p; p++) /* the client's bytes, not a terminal's commands */
            if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                *p = '?';
        log_rated(&sv->refused_log, LOG_LVL_WARN, "--listen: no such path: %s", target);
        respond_text(c, "404 Not Found", "only GET /metrics is served\n");
    } else {
        respond_metrics(sv, c);
    }
}

/* Bytes of the request came in (or the client went away). */
static void on_readable(struct server *sv, struct conn *c)
{
    char drop[REQ_MAX];
    char *to = c->sent ? drop : c->req + c->req_len;
    size_t room = c->sent ? sizeof(drop) : REQ_MAX - 1 - c->req_len;
    ssize_t n = recv(c->fd, to, room, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        conn_close(c);
        return;
    }
    if (n < 0 || c->sent)
        return;
    c->req_len += (size_t)n;
    c->req[c->req_len] = '\0';
    if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n")) {
        answer(sv, c);
    } else if (c->req_len >= REQ_MAX - 1) {
        log_rated(&sv->refused_log, LOG_LVL_WARN, "--listen: a request head over %d bytes",
                  REQ_MAX);
        respond_text(c, "431 Request Header Fields Too Large", "request head too large\n");
    }
}

/* Once the response is out, the connection is half-closed and the rest of
 * what the client sent is read away: closing with unread bytes would reset
 * the connection and could lose the response (a 431) on its way. */
static void on_writable(struct conn *c)
{
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n < 0) {
        conn_close(c);
    } else if ((c->out_off += (size_t)n) == c->out_len) {
        c->sent = true;
        shutdown(c->fd, SHUT_WR);
    }
}

/* A new client in a free slot; with none free it gets 503 at once. */
static void on_accept(struct server *sv)
{
    int fd = accept4(sv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    for (size_t i = 0; i < CONN_MAX; i++) {
        struct conn *c = &sv->conns[i];
        if (c->fd < 0) {
            *c = (struct conn){.fd = fd, .deadline = now_s() + CONN_S};
            return;
        }
    }
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                               "Connection: close\r\n\r\n";
    log_rated(&sv->refused_log, LOG_LVL_WARN, "--listen: %d connections open; one more refused",
              CONN_MAX);
    ssize_t w = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    close(fd);
}

/* One round of the poll loop: wait, then serve what is ready and close
 * what ran out of time. */
static int serve_round(struct server *sv)
{
    struct pollfd pfd[CONN_MAX + 1] = {{.fd = sv->lfd, .events = POLLIN}};
    time_t now = now_s(), next = now + CONN_S;
    for (size_t i = 0; i < CONN_MAX; i++) {
        struct conn *c = &sv->conns[i];
        bool writing = c->out && !c->sent;
        pfd[i + 1] = (struct pollfd){.fd = c->fd, .events = writing ? POLLOUT : POLLIN};
        if (c->fd >= 0 && c->deadline < next)
            next = c->deadline;
    }
    int timeout_ms = next > now ? (int)(next - now) * 1000 : 0;
    if (poll(pfd, CONN_MAX + 1, timeout_ms) < 0 && errno != EINTR) {
        fprintf(stderr, "mqforkstat: poll: %s\n", strerror(errno));
        return -1;
    }
    now = now_s();
    for (size_t i = 0; i < CONN_MAX; i++) {
        struct conn *c = &sv->conns[i];
        if (c->fd >= 0 && pfd[i + 1].revents & (POLLOUT | POLLHUP | POLLERR) && c->out && !c->sent)
            on_writable(c);
        else if (c->fd >= 0 && pfd[i + 1].revents & (POLLIN | POLLHUP | POLLERR))
            on_readable(sv, c);
        if (c->fd >= 0 && now >= c->deadline && c->sent) {
            conn_close(c);
        } else if (c->fd >= 0 && now >= c->deadline) {
            log_rated(&sv->refused_log, LOG_LVL_WARN, "--listen: a client took over %d s", CONN_S);
            conn_close(c);
        }
    }
    if (pfd[0].revents & POLLIN)
        on_accept(sv);
    return 0;
}

int serve_metrics(const char *instance, const char *spec)
{
    struct server sv = {.instance = instance, .lfd = listen_on(spec)};
    if (sv.lfd < 0)
        return 1;
    for (size_t i = 0; i < CONN_MAX; i++)
        sv.conns[i].fd = -1;
    log_set_tag("mqforkstat");
    log_info("serving instance '%s' at http://%s/metrics", instance, spec);
    while (serve_round(&sv) == 0)
        ;
    close(sv.lfd);
    return 1;
}
