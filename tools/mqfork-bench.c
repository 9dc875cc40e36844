/* mqfork-bench - measure the engine against its goals and against the limit
 * (the same work done in one process, without IPC), and print the figures
 * with their ratios. Drives the engine API directly: no broker involved.
 *
 *   mqfork-bench [-s SECONDS] [-n ROUND_TRIPS] [-w WORKERS]
 *
 * Goals (issue 2, 2-core machine): idle round trip p50 <= 15 us and p99 <=
 * 60 us; saturated test.echo throughput >= 300,000 jobs/s with 2 workers;
 * idle pool <= 1% of a core; supervisor RSS <= 20 MB besides the segment;
 * a replacement worker ready within 50 ms (p99) of a crash. */
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "test/fixture.h"
#include "worker/handler.h"

#define PAYLOAD 64

struct bench {
    struct fixture f;
    uint64_t answered;
    uint64_t failed;
    double last_done;
};

static void on_done(void *ctx, const struct engine_outcome *o)
{
    struct bench *b = ctx;
    b->answered++;
    b->failed += o->status != JOB_OK;
    b->last_done = fixture_now();
}

static enum job_status submit_echo(struct bench *b, const uint8_t *payload)
{
    struct engine_job j = {
        .kind = (uint32_t)b->f.echo,
        .payload = payload,
        .len = PAYLOAD,
        .priority = PRIO_NORMAL,
        .done = on_done,
        .ctx = b,
    };
    return engine_submit(b->f.e, &j, NULL);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(double *v, size_t n, double q)
{
    qsort(v, n, sizeof(*v), cmp_double);
    size_t i = (size_t)(q * (double)n);
    return v[i < n ? i : n - 1];
}

static void row(const char *what, double value, const char *unit, const char *cmp, double goal)
{
    bool lower_is_better = cmp[0] == '<';
    double ratio = goal ? value / goal : 0;
    bool met = lower_is_better ? value <= goal : value >= goal;
    printf("  %-28s %12.1f %-7s goal %s %-10.0f ratio %5.2f  %s\n", what, value, unit, cmp, goal,
           ratio, met ? "met" : "MISSED");
}

/* One job at a time through an otherwise idle pool. */
static void bench_round_trip(struct bench *b, size_t n)
{
    uint8_t payload[PAYLOAD] = {0};
    double *lat = calloc(n, sizeof(*lat));
    for (size_t i = 0; i < n + n / 10; i++) {
        uint64_t before = b->answered;
        double t0 = fixture_now();
        submit_echo(b, payload);
        while (b->answered == before)
            engine_turn(b->f.e, -1);
        if (i >= n / 10) /* the first tenth warms caches up */
            lat[i - n / 10] = (b->last_done - t0) * 1e6;
    }
    printf("idle round trip: test.echo %d B, one job at a time, %zu jobs\n", PAYLOAD, n);
    row("p50", percentile(lat, n, 0.50), "us", "<=", 15);
    row("p99", percentile(lat, n, 0.99), "us", "<=", 60);
    free(lat);
}

/* The limit: the handler called in a loop in this process. */
static double limit_echo_rate(double seconds)
{
    uint8_t in[PAYLOAD] = {1}, out[PAYLOAD];
    void *ctx = handler_test_echo.setup(NULL);
    uint64_t n = 0;
    double t0 = fixture_now(), t;
    do {
        for (int i = 0; i < 10000; i++) {
            struct handler_job j = {.in = in, .in_len = PAYLOAD, .out = out, .out_cap = PAYLOAD};
            handler_test_echo.run(ctx, &j);
            __asm__ __volatile__("" ::"r"(out) : "memory");
        }
        n += 10000;
        t = fixture_now();
    } while (t - t0 < seconds);
    return (double)n / (t - t0);
}

static void bench_throughput(struct bench *b, double seconds, unsigned workers)
{
    uint8_t payload[PAYLOAD] = {0};
    const size_t keep = 8192;
    uint64_t start_answered = b->answered, refused = 0;
    double t0 = fixture_now(), t;
    while ((t = fixture_now()) - t0 < seconds) {
        while (engine_outstanding(b->f.e) < keep)
            refused += submit_echo(b, payload) != JOB_OK;
        engine_turn(b->f.e, 0);
    }
    double rate = (double)(b->answered - start_answered) / (t - t0);
    while (engine_outstanding(b->f.e))
        engine_turn(b->f.e, -1);
    double limit = limit_echo_rate(1.0);
    printf("saturated throughput: test.echo %d B, %u workers, %.0f s\n", PAYLOAD, workers, seconds);
    row("pool jobs/s", rate, "jobs/s", ">=", 300000);
    printf("  %-28s %12.0f jobs/s (one process, no IPC); pool/limit %.3f\n", "limit", limit,
           rate / limit);
    if (refused || b->failed)
        printf("  refused %lu, failed %lu\n", (unsigned long)refused, (unsigned long)b->failed);
}

static uint64_t proc_cpu_ticks(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return ut + st;
}

static uint64_t pool_cpu_ticks(struct bench *b, unsigned workers)
{
    uint64_t t = proc_cpu_ticks(getpid());
    for (unsigned i = 0; i < workers; i++)
        t += proc_cpu_ticks(engine_worker_pid(b->f.e, i));
    return t;
}

static void bench_idle(struct bench *b, unsigned workers, double seconds)
{
    /* let the spinners park first */
    double settle = fixture_now() + 0.2;
    while (fixture_now() < settle)
        engine_turn(b->f.e, 50000000);
    uint64_t c0 = pool_cpu_ticks(b, workers);
    double t0 = fixture_now(), end = t0 + seconds;
    while (fixture_now() < end)
        engine_turn(b->f.e, -1);
    uint64_t c1 = pool_cpu_ticks(b, workers);
    double pct = (double)(c1 - c0) / (double)sysconf(_SC_CLK_TCK) / (fixture_now() - t0) * 100;
    printf("idle pool: supervisor + %u workers, %.0f s\n", workers, seconds);
    row("CPU of one core", pct, "%", "<=", 1);
}

static void bench_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long anon = 0, file = 0, shmem = 0;
    while (f && fgets(line, sizeof(line), f)) {
        sscanf(line, "RssAnon: %ld", &anon);
        sscanf(line, "RssFile: %ld", &file);
        sscanf(line, "RssShmem: %ld", &shmem);
    }
    if (f)
        fclose(f);
    printf("supervisor memory (this process: the engine plus the benchmark's own)\n");
    row("RSS besides the segment", (double)(anon + file) / 1024.0, "MB", "<=", 20);
    printf("  %-28s %12.1f MB (segment pages touched)\n", "shared", (double)shmem / 1024.0);
}

/* Kill a worker, time until the pool is back to its target. */
static void bench_respawn(struct bench *b, unsigned rounds)
{
    double *t = calloc(rounds, sizeof(*t));
    for (unsigned i = 0; i < rounds; i++) {
        int pid = engine_worker_pid(b->f.e, 0);
        double t0 = fixture_now();
        kill(pid, SIGKILL);
        while (engine_worker_pid(b->f.e, 0) == pid || !fixture_pool_ready(&b->f, NULL))
            engine_turn(b->f.e, 1000000);
        t[i] = (fixture_now() - t0) * 1e3;
        /* live past stable_s so each kill is a "first crash" */
        double until = fixture_now() + b->f.conf.workers.stable_s + 0.01;
        while (fixture_now() < until)
            engine_turn(b->f.e, 5000000);
    }
    printf("respawn after a crash: %u kills of worker 0, time until it takes jobs again\n", rounds);
    row("p50", percentile(t, rounds, 0.5), "ms", "<=", 50);
    row("p99", percentile(t, rounds, 0.99), "ms", "<=", 50);
    free(t);
}

int main(int argc, char **argv)
{
    double seconds = 3;
    size_t trips = 20000;
    unsigned workers = 2;
    int opt;
    while ((opt = getopt(argc, argv, "s:n:w:h")) != -1) {
        switch (opt) {
        case 's':
            seconds = atof(optarg);
            break;
        case 'n':
            trips = (size_t)atol(optarg);
            break;
        case 'w':
            workers = (unsigned)atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: mqfork-bench [-s SECONDS] [-n ROUND_TRIPS] [-w WORKERS]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (seconds <= 0 || trips == 0 || workers == 0) {
        fprintf(stderr, "mqfork-bench: -s, -n and -w must be positive\n");
        return 2;
    }
    struct bench b = {0};
    fixture_init(&b.f, "bench", 0);
    b.f.conf.workers.min = b.f.conf.workers.max = workers;
    b.f.conf.workers.stable_s = 0.05;
    b.f.conf.limits.slab_mb = 64;
    fixture_start(&b.f);
    printf("mqfork-bench: %ld cores online\n\n", sysconf(_SC_NPROCESSORS_ONLN));
    bench_round_trip(&b, trips);
    bench_throughput(&b, seconds, workers);
    bench_idle(&b, workers, 2);
    bench_rss();
    bench_respawn(&b, 50);
    fixture_free(&b.f);
    return 0;
}
