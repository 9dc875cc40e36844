/* mqfork-bench - measure the engine against its goals and against the limit
 * (the same work done in one process, without IPC), and print the figures
 * with their ratios. Drives the engine API directly: no broker involved.
 *
 *   mqfork-bench [-s SECONDS] [-n ROUND_TRIPS] [-w WORKERS]
 *
 * Goals (issue 2, 2-core machine): idle round trip p50 <= 15 us and p99 <=
 * 60 us; saturated test.echo throughput >= 300,000 jobs/s with 2 workers;
 * idle pool <= 1% of a core; supervisor RSS <= 20 MB besides the segment;
 * a replacement worker ready within 50 ms (p99) of a crash. Issue 4:
 * opus.decode of 60 ms 16 kHz mono speech through the pool >= 1.5 x the
 * frames/s of one process decoding in a loop (opus.encode measured alike).
 * Issue "seams": the event loop holds 100,000 timers, and arming one and
 * firing one each cost under 1 us. */
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <opus.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "shm/procstat.h"
#include "shm/segment.h"
#include "test/fixture.h"
#include "tools/bench.h"
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

double bench_percentile(double *v, size_t n, double q)
{
    qsort(v, n, sizeof(*v), cmp_double);
    size_t i = (size_t)(q * (double)n);
    return v[i < n ? i : n - 1];
}

void bench_row(const char *what, double value, const char *unit, const char *cmp, double goal)
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
    bench_row("p50", bench_percentile(lat, n, 0.50), "us", "<=", 15);
    bench_row("p99", bench_percentile(lat, n, 0.99), "us", "<=", 60);
    free(lat);
}

/* The limit: the handler called in a loop in this process. */
static double limit_echo_rate(double seconds)
{
    uint8_t in[PAYLOAD] = {1}, out[PAYLOAD];
    void *ctx = NULL; /* test.echo has no init() */
    uint64_t n = 0;
    double t0 = fixture_now(), t;
    do {
        for (int i = 0; i < 10000; i++) {
            struct mqfork_job j = {.in = in, .in_len = PAYLOAD, .out = out, .out_cap = PAYLOAD};
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
    bench_row("pool jobs/s", rate, "jobs/s", ">=", 300000);
    printf("  %-28s %12.0f jobs/s (one process, no IPC); pool/limit %.3f\n", "limit", limit,
           rate / limit);
    if (refused || b->failed)
        printf("  refused %lu, failed %lu\n", (unsigned long)refused, (unsigned long)b->failed);
}

static uint64_t proc_cpu_ticks(int pid)
{
    struct procstat ps;
    return procstat_read(pid, &ps) == 0 ? ps.cpu_ticks : 0;
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
    bench_row("CPU of one core", pct, "%", "<=", 1);
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
    bench_row("RSS besides the segment", (double)(anon + file) / 1024.0, "MB", "<=", 20);
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
    bench_row("p50", bench_percentile(t, rounds, 0.5), "ms", "<=", 50);
    bench_row("p99", bench_percentile(t, rounds, 0.99), "ms", "<=", 50);
    free(t);
}

/* ---- opus.decode / opus.encode: 60 ms of 16 kHz mono speech per job ---- */

#define OPUS_RATE    16000
#define OPUS_FRAME   960 /* samples in 60 ms */
#define OPUS_MAX_PKT 4000
#define OPUS_STREAMS 64

struct opus_bench {
    struct fixture f;
    int dec, enc;
    uint64_t answered, failed;
    int16_t *pcm; /* whole frames of speech */
    size_t frames;
    uint8_t (*pkt)[OPUS_MAX_PKT]; /* the speech as 60 ms packets */
    size_t *pkt_len;
    const char *source;
    char keys[OPUS_STREAMS][8]; /* stream keys */
    size_t next[OPUS_STREAMS];  /* each stream's next frame */
    size_t turn;                /* whose frame comes next */
};

/* Real speech from espeak-ng through sox, as the tests use; NULL if either
 * tool is missing. */
static int16_t *speak(size_t *samples)
{
    FILE *p = popen("espeak-ng -v en -s 150 --stdout 'Benchmarks measure what the pool can do. "
                    "Every frame of speech is decoded by one of the workers.' 2>/dev/null | "
                    "sox -t wav - -r 16000 -c 1 -b 16 -e signed-integer -t raw - 2>/dev/null",
                    "r");
    if (!p)
        return NULL;
    size_t cap = 16 * OPUS_RATE, n = 0, got;
    int16_t *pcm = malloc(cap * sizeof(*pcm));
    while ((got = fread(pcm + n, sizeof(*pcm), cap - n, p)) > 0)
        if ((n += got) == cap)
            pcm = realloc(pcm, (cap *= 2) * sizeof(*pcm));
    if (pclose(p) != 0 || n < OPUS_RATE) {
        free(pcm);
        return NULL;
    }
    *samples = n;
    return pcm;
}

/* Without espeak-ng: 6 s of a speech-like signal, a buzz whose pitch glides
 * between 100 and 180 Hz through two moving formant-ish resonances, switched
 * on and off at a syllable rate of about 4 Hz, plus a little noise. */
static int16_t *synth_speech(size_t *samples)
{
    size_t n = 6 * OPUS_RATE;
    int16_t *pcm = malloc(n * sizeof(*pcm));
    double phase = 0, y1 = 0, y2 = 0;
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        double t = (double)i / OPUS_RATE;
        double f0 = 140 + 40 * sin(2 * M_PI * 0.7 * t);
        phase += f0 / OPUS_RATE;
        double buzz = phase - floor(phase) - 0.5;
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        double noise = ((double)(x & 0xffff) / 65536.0 - 0.5) * 0.05;
        double fc = 700 + 500 * sin(2 * M_PI * 1.3 * t), r = 0.97;
        double y = buzz + noise + 2 * r * cos(2 * M_PI * fc / OPUS_RATE) * y1 - r * r * y2;
        y2 = y1, y1 = y;
        double env = fmax(0, sin(2 * M_PI * 4 * t));
        pcm[i] = (int16_t)fmax(-32767, fmin(32767, 600 * y * env));
    }
    *samples = n;
    return pcm;
}

static void opus_bench_material(struct opus_bench *o)
{
    size_t samples = 0;
    o->pcm = speak(&samples);
    o->source = "espeak-ng speech";
    if (!o->pcm) {
        o->pcm = synth_speech(&samples);
        o->source = "synthetic speech-like signal (espeak-ng or sox missing)";
    }
    o->frames = samples / OPUS_FRAME;
    o->pkt = malloc(o->frames * sizeof(*o->pkt));
    o->pkt_len = malloc(o->frames * sizeof(*o->pkt_len));
    int err;
    OpusEncoder *enc = opus_encoder_create(OPUS_RATE, 1, OPUS_APPLICATION_VOIP, &err);
    opus_encoder_ctl(enc, OPUS_SET_COMPLEXITY(5)); /* opus.encode's default */
    for (size_t i = 0; i < o->frames; i++) {
        int len = opus_encode(enc, o->pcm + i * OPUS_FRAME, OPUS_FRAME, o->pkt[i], OPUS_MAX_PKT);
        o->pkt_len[i] = len > 0 ? (size_t)len : 0;
    }
    opus_encoder_destroy(enc);
}

static void opus_on_done(void *ctx, const struct engine_outcome *out)
{
    struct opus_bench *o = ctx;
    o->answered++;
    o->failed += out->status != JOB_OK;
}

/* Frame I of stream S: streams start at different places in the speech. */
static size_t opus_frame_of(const struct opus_bench *o, size_t s, size_t i)
{
    return (s * 13 + i) % o->frames;
}

/* Frames done, seconds taken and CPU seconds used (supervisor, workers),
 * summed over slices. */
struct tally {
    double frames, seconds, cpu_sup, cpu_workers;
};

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static double workers_cpu_s(const struct opus_bench *o, unsigned workers)
{
    uint64_t ticks = 0;
    for (unsigned i = 0; i < workers; i++)
        ticks += proc_cpu_ticks(engine_worker_pid(o->f.e, i));
    return (double)ticks / (double)sysconf(_SC_CLK_TCK);
}

/* One slice of jobs from OPUS_STREAMS streams, round-robin, keeping the pool
 * saturated. Between top-ups the supervisor sleeps as the daemon would
 * (engine_turn(-1)): on two cores, a spinning supervisor would take the
 * CPU the workers need. */
static void opus_pool_slice(struct opus_bench *o, bool decode, double seconds, struct tally *t)
{
    uint64_t start = o->answered;
    double sup0 = self_cpu_s(), work0 = workers_cpu_s(o, o->f.conf.workers.max);
    double t0 = fixture_now(), now;
    while ((now = fixture_now()) - t0 < seconds) {
        while (engine_outstanding(o->f.e) < 8 * OPUS_STREAMS) {
            size_t s = o->turn++ % OPUS_STREAMS, k = opus_frame_of(o, s, o->next[s]);
            struct engine_job j = {
                .kind = (uint32_t)(decode ? o->dec : o->enc),
                .payload =
                    decode ? (const void *)o->pkt[k] : (const void *)(o->pcm + k * OPUS_FRAME),
                .len = decode ? o->pkt_len[k] : OPUS_FRAME * 2,
                .stream = o->keys[s],
                .stream_len = strlen(o->keys[s]),
                .priority = PRIO_NORMAL,
                .done = opus_on_done,
                .ctx = o,
            };
            if (engine_submit(o->f.e, &j, NULL) != JOB_OK)
                break;
            o->next[s]++;
        }
        engine_turn(o->f.e, -1);
    }
    t->frames += (double)(o->answered - start);
    t->seconds += now - t0;
    t->cpu_sup += self_cpu_s() - sup0;
    t->cpu_workers += workers_cpu_s(o, o->f.conf.workers.max) - work0;
    while (engine_outstanding(o->f.e))
        engine_turn(o->f.e, -1);
}

/* One slice of the limit: this process running libopus in a loop over the
 * same frames, from one decoder or encoder. */
static void opus_limit_slice(const struct opus_bench *o, bool decode, double seconds,
                             struct tally *t)
{
    int err;
    OpusDecoder *dec = opus_decoder_create(OPUS_RATE, 1, &err);
    OpusEncoder *enc = opus_encoder_create(OPUS_RATE, 1, OPUS_APPLICATION_VOIP, &err);
    opus_encoder_ctl(enc, OPUS_SET_COMPLEXITY(5));
    int16_t pcm[OPUS_FRAME];
    uint8_t pkt[OPUS_MAX_PKT];
    uint64_t n = 0, errors = 0;
    double t0 = fixture_now(), now, cpu0 = self_cpu_s();
    do {
        for (int i = 0; i < 20; i++, n++) {
            size_t k = n % o->frames;
            int r = decode
                        ? opus_decode(dec, o->pkt[k], (opus_int32)o->pkt_len[k], pcm, OPUS_FRAME, 0)
                        : opus_encode(enc, o->pcm + k * OPUS_FRAME, OPUS_FRAME, pkt, OPUS_MAX_PKT);
            errors += r < 0;
        }
        now = fixture_now();
    } while (now - t0 < seconds);
    opus_decoder_destroy(dec);
    opus_encoder_destroy(enc);
    if (errors)
        printf("  limit: %lu libopus errors\n", (unsigned long)errors);
    t->frames += (double)n;
    t->seconds += now - t0;
    t->cpu_sup += self_cpu_s() - cpu0; /* the limit's own CPU */
}

/* Pool and limit alternate in half-second slices, so that load from other
 * processes on the machine weighs on both alike. */
static void opus_report(struct opus_bench *o, bool decode, double seconds, unsigned workers)
{
    const char *name = decode ? "opus.decode" : "opus.encode";
    uint64_t failed = o->failed;
    struct tally pool = {0}, limit = {0};
    for (double done = 0; done < seconds; done += 0.5) {
        opus_pool_slice(o, decode, 0.5, &pool);
        opus_limit_slice(o, decode, 0.5, &limit);
    }
    double pool_rate = pool.frames / pool.seconds, limit_rate = limit.frames / limit.seconds;
    printf("%s: 60 ms 16 kHz mono frames of %s, %u workers, %d streams, %.0f s\n", name, o->source,
           workers, OPUS_STREAMS, pool.seconds);
    bench_row("pool frames/s (1.5 x limit)", pool_rate, "fr/s", ">=", 1.5 * limit_rate);
    printf("  %-28s %12.0f fr/s   (one process %s in a loop); pool/limit %.2f\n", "limit",
           limit_rate, decode ? "decoding" : "encoding", pool_rate / limit_rate);
    /* On a shared machine the rates move with other load; frames per CPU
     * second of the workers do not, and show what the pool costs. */
    printf("  %-28s supervisor %.2f + workers %.2f cores; %.0f frames per worker CPU s "
           "(limit %.0f)\n",
           "pool CPU", pool.cpu_sup / pool.seconds, pool.cpu_workers / pool.seconds,
           pool.frames / pool.cpu_workers, limit.frames / limit.cpu_sup);
    if (o->failed != failed)
        printf("  failed %lu\n", (unsigned long)(o->failed - failed));
}

/* Its own pool, so the sections above run exactly as before. */
static void bench_opus(double seconds, unsigned workers)
{
    struct opus_bench o = {0};
    opus_bench_material(&o);
    for (size_t s = 0; s < OPUS_STREAMS; s++)
        snprintf(o.keys[s], sizeof(o.keys[s]), "s%zu", s);
    fixture_init(&o.f, "bench-opus", 0);
    o.f.conf.workers.min = o.f.conf.workers.max = workers;
    o.f.conf.limits.slab_mb = 64;
    o.f.conf.streams.max = 4 * OPUS_STREAMS;
    fixture_add_kind(&o.f, "opus.decode", "opus.decode", NULL, &o.dec);
    fixture_add_kind(&o.f, "opus.encode", "opus.encode", NULL, &o.enc);
    fixture_start(&o.f);
    opus_report(&o, true, seconds, workers);
    opus_report(&o, false, seconds, workers);
    fixture_free(&o.f);
    free(o.pcm);
    free(o.pkt);
    free(o.pkt_len);
}

int main(int argc, char **argv)
{
    double seconds = 3;
    size_t trips = 20000;
    unsigned workers = 2;
    static const struct option longs[] = {
        {"seconds", required_argument, NULL, 's'}, {"round-trips", required_argument, NULL, 'n'},
        {"workers", required_argument, NULL, 'w'}, {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "s:n:w:Vh", longs, NULL)) != -1) {
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
        case 'V':
            printf("mqfork-bench %s\n", MQFORK_VERSION);
            return 0;
        default:
            fprintf(opt == 'h' ? stdout : stderr,
                    "usage: mqfork-bench [-s|--seconds SECONDS] [-n|--round-trips ROUND_TRIPS]\n"
                    "                    [-w|--workers WORKERS] [-V|--version] [-h|--help]\n");
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
    printf("\n");
    bench_timers(100000, seconds);
    printf("\n");
    bench_opus(seconds, workers);
    bench_lifecycle(seconds, workers);
    return 0;
}
