/* test_opus.c - the codec handlers through the engine API, with real worker
 * processes and real speech (espeak-ng through sox): streamed decoding is bit
 * for bit what one libopus decoder gives, also with streams hopping between
 * workers; a worker killed mid-stream resets that stream and nothing else;
 * streamed encoding gives valid packets that decode back to the speech;
 * keepalives are filtered; every bad payload gets its error and the pool
 * stays up; fallback: pcm passes PCM through; check() rejects bad params;
 * sequence: several packets and losses in one job decode as one decoder
 * would, entry for entry, and a malformed sequence is refused whole.
 * (The MQTT end-to-end tests live elsewhere.) */
#include <math.h>
#include <opus.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/segment.h"
#include "test/fixture.h"
#include "test/t.h"
#include "worker/handler.h"
#include "worker/registry.h"

#define RATE          16000
#define FRAME_SAMPLES 960 /* 60 ms at 16 kHz, mono */
#define FRAME_BYTES   (FRAME_SAMPLES * 2)
#define MAX_PACKET    4000

/* SNR of the speech after encode + decode, in dB, once aligned for the
 * codec's delay. Measured 10.5 dB with the default settings (17 kbit/s
 * SILK wideband); a broken encoder (silence, noise, frames out of order or
 * from a reset state) lands at or below 0 dB. */
#define MIN_SNR_DB 6.0

struct packets {
    size_t n;
    uint8_t (*data)[MAX_PACKET];
    size_t *len;
};

struct speech {
    int16_t *pcm;
    size_t samples; /* a whole number of frames */
    struct packets pk;
};

/* ---- speech and reference codec, in this process -------------------------------- */

static void make_speech(struct speech *sp)
{
    const char *cmd = "espeak-ng -v en -s 150 --stdout "
                      "'The quick brown fox jumps over the lazy dog. "
                      "Streams of speech are decoded by any worker in the pool.' 2>/dev/null | "
                      "sox -t wav - -r 16000 -c 1 -b 16 -e signed-integer -t raw - 2>/dev/null";
    FILE *p = popen(cmd, "r");
    T_REQUIRE(p != NULL, "cannot run espeak-ng | sox");
    size_t cap = 1 << 20, n = 0;
    sp->pcm = malloc(cap * sizeof(*sp->pcm));
    size_t got;
    while ((got = fread(sp->pcm + n, sizeof(*sp->pcm), cap - n, p)) > 0) {
        n += got;
        if (n == cap)
            sp->pcm = realloc(sp->pcm, (cap *= 2) * sizeof(*sp->pcm));
    }
    int rc = pclose(p);
    T_REQUIRE(rc == 0 && n > RATE,
              "no speech from espeak-ng | sox (status %d, %zu samples): are both installed? "
              "tools/check installs them",
              rc, n);
    sp->samples = n / FRAME_SAMPLES * FRAME_SAMPLES;
}

static OpusEncoder *new_encoder(void)
{
    int err;
    OpusEncoder *enc = opus_encoder_create(RATE, 1, OPUS_APPLICATION_VOIP, &err);
    T_REQUIRE(err == OPUS_OK, "opus_encoder_create: %s", opus_strerror(err));
    /* the handler's defaults: bitrate auto, complexity 5 */
    opus_encoder_ctl(enc, OPUS_SET_COMPLEXITY(5));
    return enc;
}

static OpusDecoder *new_decoder(void)
{
    int err;
    OpusDecoder *dec = opus_decoder_create(RATE, 1, &err);
    T_REQUIRE(err == OPUS_OK, "opus_decoder_create: %s", opus_strerror(err));
    return dec;
}

/* The "real packets": the speech in 60 ms packets, encoded right here. */
static void encode_speech(struct speech *sp)
{
    OpusEncoder *enc = new_encoder();
    struct packets *pk = &sp->pk;
    pk->n = sp->samples / FRAME_SAMPLES;
    pk->data = malloc(pk->n * sizeof(*pk->data));
    pk->len = malloc(pk->n * sizeof(*pk->len));
    for (size_t i = 0; i < pk->n; i++) {
        int n =
            opus_encode(enc, sp->pcm + i * FRAME_SAMPLES, FRAME_SAMPLES, pk->data[i], MAX_PACKET);
        T_REQUIRE(n > 0, "opus_encode: %s", opus_strerror(n));
        pk->len[i] = (size_t)n;
    }
    opus_encoder_destroy(enc);
}

/* ---- outcomes with their whole output ------------------------------------------ */

struct out_rec {
    struct coll *c;
    int outcomes;
    enum job_status status;
    uint32_t attempts;
    uint8_t *data;
    size_t len;
};

struct coll {
    struct out_rec *recs;
    size_t n, submitted, answered;
};

static void coll_init(struct coll *c, size_t n)
{
    c->recs = calloc(n, sizeof(*c->recs));
    c->n = n;
    c->submitted = c->answered = 0;
    for (size_t i = 0; i < n; i++)
        c->recs[i].c = c;
}

static void coll_free(struct coll *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->recs[i].data);
    free(c->recs);
}

static void on_done(void *ctx, const struct engine_outcome *o)
{
    struct out_rec *r = ctx;
    r->outcomes++;
    r->status = o->status;
    r->attempts = o->attempts;
    free(r->data);
    r->data = malloc(o->len + 1);
    memcpy(r->data, o->data, o->len);
    r->data[o->len] = '\0'; /* error texts read as strings */
    r->len = o->len;
    r->c->answered++;
}

static enum job_status submit(struct fixture *f, struct coll *c, size_t idx, int kind,
                              const void *payload, size_t len, const char *stream, uint32_t retries)
{
    struct engine_job j = {
        .kind = (uint32_t)kind,
        .payload = payload,
        .len = len,
        .stream = stream,
        .stream_len = stream ? strlen(stream) : 0,
        .priority = PRIO_NORMAL,
        .retries = retries,
        .done = on_done,
        .ctx = &c->recs[idx],
    };
    enum job_status st = engine_submit(f->e, &j, NULL);
    c->submitted += st == JOB_OK;
    return st;
}

static bool coll_done(struct fixture *f, void *arg)
{
    struct coll *c = arg;
    return c->answered >= c->submitted && engine_outstanding(f->e) == 0;
}

static bool coll_each_once(const struct coll *c)
{
    for (size_t i = 0; i < c->submitted; i++)
        if (c->recs[i].outcomes != 1)
            return false;
    return true;
}

static uint64_t jobs_done(const struct fixture *f, unsigned slot)
{
    return engine_segment(f->e)->workers_stats[slot].jobs_done;
}

/* ---- check() ---------------------------------------------------------------------- */

struct bad_param {
    const char *handler, *key, *value, *message;
};

/* What a handler's check() reported: the count, the first message and
 * which param it was about. */
struct seen {
    struct mqfork_check api;
    unsigned count;
    char first[256];
    const struct mqfork_param *about;
};

static void note_problem(struct mqfork_check *c, const struct mqfork_param *about, const char *fmt,
                         ...)
{
    struct seen *s = (struct seen *)c;
    if (s->count++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->first, sizeof(s->first), fmt, ap);
        va_end(ap);
        s->about = about;
    }
}

static const struct mqfork_handler *handler_of(const char *name)
{
    static struct registry reg;
    if (reg.count == 0)
        T_REQUIRE(registry_init(&reg) == 0, "registry");
    const struct mqfork_handler *h = registry_find(&reg, name);
    T_REQUIRE(h && h->check, "%s is registered with a check()", name);
    return h;
}

static void test_check_params(void)
{
    static const struct bad_param bad[] = {
        {"opus.decode", "sample_rate", "44100",
         "sample_rate: '44100' is not one of 8000, 12000, 16000, 24000 or 48000"},
        {"opus.decode", "channels", "3", "channels: '3' is not one of 1 or 2"},
        {"opus.decode", "fec", "maybe", "fec: 'maybe' is not one of"},
        {"opus.decode", "fallback", "wav", "fallback: 'wav' is not one of none or pcm"},
        {"opus.decode", "colour", "red", "colour: unknown param for opus.decode"},
        {"opus.decode", "frame_ms", "20", "frame_ms: unknown param for opus.decode"},
        {"opus.encode", "sample_rate", "44100", "sample_rate: '44100' is not one of"},
        {"opus.encode", "channels", "3", "channels: '3' is not one of 1 or 2"},
        {"opus.encode", "frame_ms", "7", "frame_ms: '7' is not one of 2.5, 5, 10, 20, 40 or 60"},
        {"opus.encode", "complexity", "11", "complexity: 11 is out of range (0..10)"},
        {"opus.encode", "application", "music",
         "application: 'music' is not one of voip, audio or lowdelay"},
        {"opus.encode", "bitrate", "100", "bitrate: 100 is out of range (500..512000)"},
        {"opus.encode", "bitrate", "fast", "bitrate: expected 'auto' or bits per second"},
        {"opus.encode", "fec", "true", "fec: unknown param for opus.encode"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* a good param first, so the problem must be about the bad one */
        struct mqfork_param items[2] = {
            {.key = "channels", .value = "1"},
            {.key = bad[i].key, .value = bad[i].value},
        };
        struct mqfork_params p = {.items = items, .count = 2};
        if (strcmp(bad[i].key, "channels") == 0)
            items[0] = (struct mqfork_param){.key = "sample_rate", .value = "8000"};
        const struct mqfork_handler *h = handler_of(bad[i].handler);
        struct seen s = {.api.problem = note_problem};
        h->check(&p, &s.api);
        T_CHECK(s.count == 1, "%s %s=%s: one problem (%u)", bad[i].handler, bad[i].key,
                bad[i].value, s.count);
        T_CHECK(strncmp(s.first, bad[i].message, strlen(bad[i].message)) == 0,
                "%s %s=%s: message '%s' starts with '%s'", bad[i].handler, bad[i].key, bad[i].value,
                s.first, bad[i].message);
        T_CHECK(s.about == &items[1], "%s %s=%s: the problem is about the bad param",
                bad[i].handler, bad[i].key, bad[i].value);
    }
    struct mqfork_param good_dec[] = {{.key = "sample_rate", .value = "48000"},
                                      {.key = "channels", .value = "2"},
                                      {.key = "fec", .value = "true"},
                                      {.key = "fallback", .value = "pcm"}};
    struct mqfork_param good_enc[] = {{.key = "frame_ms", .value = "2.5"},
                                      {.key = "bitrate", .value = "24000"},
                                      {.key = "complexity", .value = "0"},
                                      {.key = "application", .value = "lowdelay"}};
    struct mqfork_params pd = {good_dec, 4}, pe = {good_enc, 4};
    struct seen s = {.api.problem = note_problem};
    handler_of("opus.decode")->check(&pd, &s.api);
    handler_of("opus.encode")->check(&pe, &s.api);
    handler_of("opus.decode")->check(NULL, &s.api);
    T_CHECK(s.count == 0, "good params pass: %s", s.first);
    struct mqfork_param two_bad[] = {{.key = "complexity", .value = "11"},
                                     {.key = "frame_ms", .value = "7"}};
    struct mqfork_params pb = {two_bad, 2};
    handler_of("opus.encode")->check(&pb, &s.api);
    T_CHECK(s.count == 2, "every problem is reported, not only the first (%u)", s.count);
    /* 120 ms of 48 kHz stereo s16le is the most one packet decodes to */
    struct mqfork_out_bound ob;
    handler_of("opus.decode")->out_bound(&pd, &ob);
    T_CHECK(handler_out_capacity(&ob, 65536) == 23040, "decode output for 48 kHz stereo");
    T_CHECK(handler_of("opus.decode")->state_size(&pd) >= (size_t)opus_decoder_get_size(2),
            "decode state_size holds a stereo decoder");
}

/* ---- decoding ------------------------------------------------------------------------ */

/* Stream S plays the packets starting from S * 7, so no two streams have
 * the same decoder state at the same step. */
static size_t stream_packet(const struct speech *sp, size_t s, size_t step)
{
    return (s * 7 + step) % sp->pk.n;
}

/* What a single libopus decoder makes of stream S, frame by frame. */
static int16_t *reference_decode(const struct speech *sp, size_t s)
{
    OpusDecoder *dec = new_decoder();
    int16_t *pcm = malloc(sp->pk.n * FRAME_BYTES);
    for (size_t i = 0; i < sp->pk.n; i++) {
        size_t k = stream_packet(sp, s, i);
        int n = opus_decode(dec, sp->pk.data[k], (opus_int32)sp->pk.len[k], pcm + i * FRAME_SAMPLES,
                            FRAME_SAMPLES, 0);
        T_REQUIRE(n == FRAME_SAMPLES, "reference decode: %d", n);
    }
    opus_decoder_destroy(dec);
    return pcm;
}

/* Submit every stream's packets, interleaved: job s + i * streams is
 * stream s's step i. */
static void submit_streams(struct fixture *f, struct coll *c, int kind, const struct speech *sp,
                           size_t streams, uint32_t retries)
{
    for (size_t i = 0; i < sp->pk.n; i++)
        for (size_t s = 0; s < streams; s++) {
            char key[24];
            snprintf(key, sizeof(key), "dev%zu", s);
            size_t k = stream_packet(sp, s, i);
            T_REQUIRE(submit(f, c, s + i * streams, kind, sp->pk.data[k], sp->pk.len[k], key,
                             retries) == JOB_OK,
                      "decode job accepted");
        }
}

/* Streams of S whose output is not bit for bit the reference's. */
static size_t streams_differing(const struct coll *c, const struct speech *sp, size_t streams)
{
    size_t differ = 0;
    for (size_t s = 0; s < streams; s++) {
        int16_t *ref = reference_decode(sp, s);
        bool same = true;
        for (size_t i = 0; i < sp->pk.n && same; i++) {
            const struct out_rec *r = &c->recs[s + i * streams];
            same = r->status == JOB_OK && r->len == FRAME_BYTES &&
                   memcmp(r->data, ref + i * FRAME_SAMPLES, FRAME_BYTES) == 0;
        }
        differ += !same;
        free(ref);
    }
    return differ;
}

/* Six streams over three workers: each stream's frames are decoded by
 * whichever worker is free, from the state in shared memory. */
static void test_decode_streams(const struct speech *sp)
{
    enum { STREAMS = 6, WORKERS = 3 };
    struct fixture f;
    fixture_init(&f, "opusdec", 0);
    f.conf.workers.min = f.conf.workers.max = WORKERS;
    f.conf.workers.inflight = 2; /* spread the streams rather than queue them on one worker */
    int dec;
    fixture_add_kind(&f, "dec", "opus.decode", NULL, &dec);
    fixture_start(&f);
    struct coll c;
    coll_init(&c, sp->pk.n * STREAMS);
    uint64_t before[WORKERS];
    for (unsigned w = 0; w < WORKERS; w++)
        before[w] = jobs_done(&f, w);
    submit_streams(&f, &c, dec, sp, STREAMS, 0);
    T_CHECK(fixture_run_until(&f, coll_done, &c, 30), "all decode jobs answered");
    T_CHECK(coll_each_once(&c), "each decode job answered once");
    size_t differ = streams_differing(&c, sp, STREAMS);
    T_CHECK(differ == 0, "%zu of %d streams differ from a direct libopus decoder", differ, STREAMS);
    for (unsigned w = 0; w < WORKERS; w++)
        T_CHECK(jobs_done(&f, w) > before[w], "worker %u decoded some frames", w);
    coll_free(&c);
    fixture_free(&f);
}

/* Without a stream, every packet is decoded from a fresh state. */
static void test_decode_stateless(const struct speech *sp)
{
    enum { N = 20 };
    struct fixture f;
    fixture_init(&f, "opusnos", 0);
    int dec;
    fixture_add_kind(&f, "dec", "opus.decode", NULL, &dec);
    fixture_start(&f);
    struct coll c;
    coll_init(&c, N);
    for (size_t i = 0; i < N; i++)
        submit(&f, &c, i, dec, sp->pk.data[i + 10], sp->pk.len[i + 10], NULL, 0);
    T_CHECK(fixture_run_until(&f, coll_done, &c, 20), "all answered");
    size_t differ = 0;
    int16_t pcm[FRAME_SAMPLES];
    for (size_t i = 0; i < N; i++) {
        OpusDecoder *d = new_decoder();
        int n = opus_decode(d, sp->pk.data[i + 10], (opus_int32)sp->pk.len[i + 10], pcm,
                            FRAME_SAMPLES, 0);
        opus_decoder_destroy(d);
        differ += n != FRAME_SAMPLES || c.recs[i].status != JOB_OK ||
                  c.recs[i].len != FRAME_BYTES || memcmp(c.recs[i].data, pcm, FRAME_BYTES) != 0;
    }
    T_CHECK(differ == 0, "%zu stateless decodes differ from a fresh decoder's", differ);
    coll_free(&c);
    fixture_free(&f);
}

static bool quarter_answered(struct fixture *f, void *coll)
{
    const struct coll *c = coll;
    return c->answered >= c->submitted / 4;
}

/* SIGKILL a worker mid-frame: its jobs are retried elsewhere and answered
 * once each; the stream it was decoding is reset (counted), and only the
 * streams reset can differ from the reference. */
static void test_decode_worker_killed(const struct speech *sp)
{
    enum { STREAMS = 16, WORKERS = 3 }; /* several jobs queued to each worker */
    struct fixture f;
    fixture_init(&f, "opuskill", 0);
    f.conf.workers.min = f.conf.workers.max = WORKERS;
    int dec;
    fixture_add_kind(&f, "dec", "opus.decode", NULL, &dec);
    fixture_start(&f);
    struct coll c;
    coll_init(&c, sp->pk.n * STREAMS);
    submit_streams(&f, &c, dec, sp, STREAMS, 3);
    T_REQUIRE(fixture_run_until(&f, quarter_answered, &c, 20), "a quarter answered");
    /* Freeze the victim wherever it is, mid-frame or between frames, and let
     * the engine keep handing it jobs: it then surely dies holding some,
     * the first of which the engine takes for the one it was running. No
     * race with a busy machine's scheduler. */
    pid_t victim = engine_worker_pid(f.e, 0);
    T_REQUIRE(victim > 0 && kill(victim, SIGSTOP) == 0, "victim stopped");
    double until = fixture_now() + 0.1;
    while (fixture_now() < until)
        engine_turn(f.e, 1000000);
    kill(victim, SIGKILL);
    T_CHECK(fixture_run_until(&f, coll_done, &c, 30), "all answered after the kill");
    T_CHECK(coll_each_once(&c), "each job answered exactly once");
    size_t ok = 0, well_formed = 0;
    for (size_t i = 0; i < c.submitted; i++) {
        ok += c.recs[i].status == JOB_OK;
        well_formed += c.recs[i].len == FRAME_BYTES;
    }
    T_CHECK(ok == c.submitted && well_formed == c.submitted,
            "all %zu OK (%zu) with 60 ms of PCM (%zu)", c.submitted, ok, well_formed);
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.crashed == 1 && g.stream_resets >= 1, "one crash (%lu), a stream reset (%lu)",
            (unsigned long)g.crashed, (unsigned long)g.stream_resets);
    size_t differ = streams_differing(&c, sp, STREAMS);
    T_CHECK(differ <= g.stream_resets, "%zu streams differ, only %lu were reset", differ,
            (unsigned long)g.stream_resets);
    coll_free(&c);
    fixture_free(&f);
}

/* ---- encoding ------------------------------------------------------------------------ */

/* Best SNR (dB) of OUT against IN over delays of 0..MAX_LAG samples. */
static double aligned_snr(const int16_t *in, const int16_t *out, size_t n, size_t max_lag)
{
    double best = -INFINITY;
    for (size_t lag = 0; lag <= max_lag; lag++) {
        double sig = 0, noise = 0;
        for (size_t i = 0; i + lag < n; i++) {
            double x = in[i], e = x - out[i + lag];
            sig += x * x;
            noise += e * e;
        }
        double snr = 10 * log10(sig / (noise > 0 ? noise : 1e-9));
        if (snr > best)
            best = snr;
    }
    return best;
}

/* Unpack one job's output: length-prefixed packets. Returns packets seen,
 * or -1 if the framing is broken. Each is checked and decoded into PCM. */
static long unpack_and_decode(const struct out_rec *r, OpusDecoder *dec, int16_t *pcm,
                              size_t *bad_packets)
{
    long count = 0;
    size_t pos = 0;
    while (pos + 2 <= r->len) {
        size_t n = (size_t)r->data[pos] << 8 | r->data[pos + 1];
        if (n == 0 || pos + 2 + n > r->len)
            return -1;
        const uint8_t *p = r->data + pos + 2;
        *bad_packets += opus_packet_get_nb_samples(p, (opus_int32)n, RATE) != FRAME_SAMPLES;
        int got = opus_decode(dec, p, (opus_int32)n, pcm + (size_t)count * FRAME_SAMPLES,
                              FRAME_SAMPLES, 0);
        *bad_packets += got != FRAME_SAMPLES;
        pos += 2 + n;
        count++;
    }
    return pos == r->len ? count : -1;
}

/* Two streams of speech through the pool, three frames per job: the
 * packets are exactly those of one libopus encoder with the same settings,
 * all valid, and they decode back to the speech. */
static void test_encode_streams(const struct speech *sp)
{
    enum { STREAMS = 2, PER_JOB = 3, WORKERS = 3 };
    struct fixture f;
    fixture_init(&f, "opusenc", 0);
    f.conf.workers.min = f.conf.workers.max = WORKERS;
    int enc;
    fixture_add_kind(&f, "enc", "opus.encode", NULL, &enc);
    fixture_start(&f);
    size_t jobs = sp->samples / FRAME_SAMPLES / PER_JOB;
    struct coll c;
    coll_init(&c, jobs * STREAMS);
    for (size_t i = 0; i < jobs; i++)
        for (size_t s = 0; s < STREAMS; s++)
            T_REQUIRE(submit(&f, &c, s + i * STREAMS, enc, sp->pcm + i * PER_JOB * FRAME_SAMPLES,
                             PER_JOB * FRAME_BYTES, s ? "mic1" : "mic0", 0) == JOB_OK,
                      "encode job accepted");
    T_CHECK(fixture_run_until(&f, coll_done, &c, 30), "all encode jobs answered");
    T_CHECK(coll_each_once(&c), "each encode job answered once");
    size_t frames = jobs * PER_JOB;
    int16_t *pcm = calloc(frames * FRAME_SAMPLES, sizeof(*pcm));
    for (size_t s = 0; s < STREAMS; s++) {
        OpusDecoder *dec = new_decoder();
        OpusEncoder *ref = new_encoder();
        size_t bad = 0, framing = 0, not_exact = 0;
        for (size_t i = 0; i < jobs; i++) {
            const struct out_rec *r = &c.recs[s + i * STREAMS];
            long got = r->status == JOB_OK
                           ? unpack_and_decode(r, dec, pcm + i * PER_JOB * FRAME_SAMPLES, &bad)
                           : -1;
            framing += got != PER_JOB;
            /* the same frames through one encoder in this process */
            uint8_t pkt[MAX_PACKET];
            size_t pos = 0;
            for (size_t k = 0; k < PER_JOB && got == PER_JOB; k++) {
                const int16_t *in = sp->pcm + (i * PER_JOB + k) * FRAME_SAMPLES;
                int n = opus_encode(ref, in, FRAME_SAMPLES, pkt, MAX_PACKET);
                size_t had = (size_t)r->data[pos] << 8 | r->data[pos + 1];
                not_exact += n < 0 || had != (size_t)n || memcmp(r->data + pos + 2, pkt, had);
                pos += 2 + had;
            }
        }
        T_CHECK(framing == 0, "stream %zu: %zu jobs without %d well-framed packets", s, framing,
                PER_JOB);
        T_CHECK(bad == 0, "stream %zu: %zu packets invalid or not 60 ms", s, bad);
        T_CHECK(not_exact == 0, "stream %zu: %zu packets differ from a direct libopus encoder's", s,
                not_exact);
        /* the codec delays the speech by a few ms: search up to 30 ms */
        double snr = aligned_snr(sp->pcm, pcm, frames * FRAME_SAMPLES, RATE * 30 / 1000);
        T_CHECK(snr >= MIN_SNR_DB, "stream %zu: SNR %.1f dB >= %.1f dB", s, snr, MIN_SNR_DB);
        if (getenv("MQFORK_TEST_VERBOSE") || s == 0)
            fprintf(stderr, "encode -> decode SNR, stream %zu: %.2f dB\n", s, snr);
        opus_decoder_destroy(dec);
        opus_encoder_destroy(ref);
    }
    free(pcm);
    coll_free(&c);
    fixture_free(&f);
}

/* ---- filtering, bad payloads, fallback ------------------------------------------------ */

struct case_ {
    int kind;
    const uint8_t *payload;
    size_t len;
    enum job_status want;
    const char *text; /* expected in the error sentence */
};

/* Random bytes that libopus rejects as a packet (most do; the seed is fixed). */
static void random_invalid(uint8_t *buf, size_t len)
{
    uint32_t x = 2463534242u;
    OpusDecoder *d = new_decoder();
    int16_t pcm[5760];
    for (int tries = 0; tries < 1000; tries++) {
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            buf[i] = (uint8_t)x;
        }
        if (opus_decode(d, buf, (opus_int32)len, pcm, 5760, 0) < 0)
            break;
    }
    opus_decoder_destroy(d);
}

/* Two real packets of different sizes joined into one 120 ms packet (code 2,
 * the first frame's length written out), then cut short of that length. */
static size_t truncated_packet(const struct speech *sp, uint8_t *buf)
{
    size_t i = 0;
    while (i + 1 < sp->pk.n && sp->pk.len[i] == sp->pk.len[i + 1])
        i++;
    OpusRepacketizer *rp = opus_repacketizer_create();
    opus_repacketizer_cat(rp, sp->pk.data[i], (opus_int32)sp->pk.len[i]);
    opus_repacketizer_cat(rp, sp->pk.data[i + 1], (opus_int32)sp->pk.len[i + 1]);
    int n = opus_repacketizer_out(rp, buf, MAX_PACKET);
    opus_repacketizer_destroy(rp);
    T_REQUIRE(n > 0, "repacketize: %s", opus_strerror(n));
    return 2 + sp->pk.len[i] / 2;
}

/* One frame of the speech that libopus cannot take for a packet. */
static const int16_t *pcm_not_opus(const struct speech *sp)
{
    OpusDecoder *d = new_decoder();
    int16_t pcm[5760];
    const int16_t *found = NULL;
    for (size_t i = 0; i < sp->samples / FRAME_SAMPLES && !found; i++) {
        const int16_t *frame = sp->pcm + i * FRAME_SAMPLES;
        if (opus_decode(d, (const uint8_t *)frame, FRAME_BYTES, pcm, 5760, 0) < 0)
            found = frame;
    }
    opus_decoder_destroy(d);
    T_REQUIRE(found, "some speech frame is not a valid Opus packet");
    return found;
}

static void test_filter_and_bad_input(const struct speech *sp)
{
    struct fixture f;
    fixture_init(&f, "opusbad", 0);
    f.conf.limits.max_payload = 8192;
    int dec, enc, decpcm;
    static struct conf_param fb[] = {{.key = "fallback", .value = "pcm"}};
    static const struct conf_params fb_params = {fb, 1};
    fixture_add_kind(&f, "dec", "opus.decode", NULL, &dec);
    fixture_add_kind(&f, "enc", "opus.encode", NULL, &enc);
    fixture_add_kind(&f, "decpcm", "opus.decode", &fb_params, &decpcm);
    fixture_start(&f);

    uint8_t random[300], cut[MAX_PACKET], big[8193] = {0};
    random_invalid(random, sizeof(random));
    size_t cut_len = truncated_packet(sp, cut);
    /* a code-3 packet of 60 ms frames that claims 3 of them: 180 ms */
    static const uint8_t too_long[] = {(uint8_t)(11 << 3 | 3), 3, 0, 0, 0, 0};
    const uint8_t *frame = (const uint8_t *)pcm_not_opus(sp);
    const uint8_t *speech = (const uint8_t *)sp->pcm;
    const struct case_ cases[] = {
        {dec, (const uint8_t *)"keepalive", 9, JOB_FILTERED, NULL},
        {dec, (const uint8_t *)"ping", 4, JOB_FILTERED, NULL},
        {dec, (const uint8_t *)"pong", 4, JOB_FILTERED, NULL},
        {enc, (const uint8_t *)"keepalive", 9, JOB_FILTERED, NULL},
        {dec, (const uint8_t *)"", 0, JOB_E_BAD_INPUT, "empty payload"},
        {dec, random, sizeof(random), JOB_E_BAD_INPUT, "not a valid Opus packet (300 bytes)"},
        {dec, cut, cut_len, JOB_E_BAD_INPUT, "not a valid Opus packet"},
        {dec, too_long, sizeof(too_long), JOB_E_BAD_INPUT, "not a valid Opus packet"},
        /* only the exact words are filtered: this one is a valid 1-frame packet */
        {dec, (const uint8_t *)"PING", 4, JOB_OK, NULL},
        {dec, frame, FRAME_BYTES, JOB_E_BAD_INPUT, "not a valid Opus packet"},
        {enc, (const uint8_t *)"", 0, JOB_E_BAD_INPUT, "empty payload"},
        {enc, speech, FRAME_BYTES + 1, JOB_E_BAD_INPUT, "odd length (1921 bytes)"},
        {enc, speech, FRAME_BYTES + 1000, JOB_E_BAD_INPUT,
         "partial frame: 2920 bytes is not a whole number of 60 ms frames of 1920 bytes"},
        {decpcm, frame, FRAME_BYTES, JOB_OK, NULL},
        {decpcm, random, sizeof(random), JOB_E_BAD_INPUT, "not a valid Opus packet"},
        {dec, sp->pk.data[0], sp->pk.len[0], JOB_OK, NULL},
        {enc, speech, 2 * FRAME_BYTES, JOB_OK, NULL},
    };
    enum { N = sizeof(cases) / sizeof(cases[0]) };
    struct coll c;
    coll_init(&c, N + 2);
    for (size_t i = 0; i < N; i++)
        T_REQUIRE(submit(&f, &c, i, cases[i].kind, cases[i].payload, cases[i].len, NULL, 0) ==
                      JOB_OK,
                  "case %zu accepted", i);
    T_CHECK(submit(&f, &c, N, dec, big, sizeof(big), NULL, 0) == JOB_E_TOO_LARGE,
            "8193 bytes over an 8192 limit is refused as too large");
    T_CHECK(fixture_run_until(&f, coll_done, &c, 20), "all answered");
    T_CHECK(coll_each_once(&c), "each answered once");
    for (size_t i = 0; i < N; i++) {
        const struct out_rec *r = &c.recs[i];
        T_CHECK(r->status == cases[i].want, "case %zu: %s, wanted %s (%s)", i,
                job_status_name(r->status), job_status_name(cases[i].want),
                r->status == JOB_OK ? "" : (const char *)r->data);
        if (cases[i].text)
            T_CHECK(strstr((const char *)r->data, cases[i].text) != NULL, "case %zu: '%s' in '%s'",
                    i, cases[i].text, (const char *)r->data);
        if (cases[i].want == JOB_FILTERED)
            T_CHECK(r->len == 0, "case %zu: a filtered frame has no output", i);
    }
    T_CHECK(c.recs[13].len == FRAME_BYTES && memcmp(c.recs[13].data, frame, FRAME_BYTES) == 0,
            "fallback: pcm passes the PCM frame through unchanged");
    /* the pool is still whole and still decodes */
    T_CHECK(submit(&f, &c, N + 1, dec, sp->pk.data[1], sp->pk.len[1], NULL, 0) == JOB_OK,
            "a good job after the bad ones is accepted");
    T_CHECK(fixture_run_until(&f, coll_done, &c, 10), "and answered");
    T_CHECK(c.recs[N + 1].status == JOB_OK && c.recs[N + 1].len == FRAME_BYTES, "and decoded");
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.crashed == 0 && engine_live_workers(f.e) == engine_target(f.e),
            "no worker died (crashed %lu)", (unsigned long)g.crashed);
    T_CHECK(g.filtered == 4, "4 frames counted as filtered (got %lu)", (unsigned long)g.filtered);
    T_CHECK(g.refused[JOB_E_TOO_LARGE] == 1, "the large one counted as refused");
    coll_free(&c);
    fixture_free(&f);
}

/* ---- sequence ---------------------------------------------------------------------- */

/* Append an entry of LEN bytes to the sequence at SEQ (*AT bytes so far). */
static void seq_put(uint8_t *seq, size_t *at, const uint8_t *data, size_t len)
{
    seq[*at] = (uint8_t)(len >> 8);
    seq[*at + 1] = (uint8_t)(len & 0xff);
    if (len) /* a loss has no bytes, and no pointer to them */
        memcpy(seq + *at + 2, data, len);
    *at += 2 + len;
}

/* Packet, loss, packet, not Opus, packet: one job's answer is what one
 * decoder makes of them, entry for entry (the one not Opus empty). */
static void test_decode_sequence(const struct speech *sp)
{
    struct fixture f;
    fixture_init(&f, "opusseq", 0);
    int dec;
    static struct conf_param sq[] = {{.key = "sequence", .value = "5"}};
    static const struct conf_params sq_params = {sq, 1};
    fixture_add_kind(&f, "dec", "opus.decode", &sq_params, &dec);
    fixture_start(&f);
    static uint8_t seq[6 * (2 + MAX_PACKET)];
    uint8_t junk[300];
    random_invalid(junk, sizeof(junk));
    size_t len = 0;
    seq_put(seq, &len, sp->pk.data[10], sp->pk.len[10]);
    seq_put(seq, &len, NULL, 0);
    seq_put(seq, &len, sp->pk.data[12], sp->pk.len[12]);
    seq_put(seq, &len, junk, sizeof(junk));
    seq_put(seq, &len, sp->pk.data[13], sp->pk.len[13]);
    size_t whole = len;
    seq_put(seq, &len, sp->pk.data[14], sp->pk.len[14]); /* a sixth entry */
    struct coll c;
    coll_init(&c, 3);
    submit(&f, &c, 0, dec, seq, whole, NULL, 0);
    submit(&f, &c, 1, dec, seq, len, NULL, 0);
    submit(&f, &c, 2, dec, seq, whole - 1, NULL, 0);
    T_CHECK(fixture_run_until(&f, coll_done, &c, 20), "all answered");
    static uint8_t want[5 * (2 + FRAME_BYTES)];
    int16_t pcm[FRAME_SAMPLES];
    size_t at = 0;
    OpusDecoder *d = new_decoder();
    const size_t order[] = {10, 0, 12, 0, 13};
    for (size_t i = 0; i < 5; i++) {
        int n = i == 3   ? 0
                : i == 1 ? opus_decode(d, NULL, 0, pcm, FRAME_SAMPLES, 0)
                         : opus_decode(d, sp->pk.data[order[i]], (opus_int32)sp->pk.len[order[i]],
                                       pcm, FRAME_SAMPLES, 0);
        seq_put(want, &at, (const uint8_t *)pcm, (size_t)n * 2);
    }
    opus_decoder_destroy(d);
    T_CHECK(c.recs[0].status == JOB_OK && c.recs[0].len == at &&
                memcmp(c.recs[0].data, want, at) == 0,
            "a sequence decodes entry for entry as one decoder does (%s, %zu of %zu bytes)",
            job_status_name(c.recs[0].status), c.recs[0].len, at);
    T_CHECK(c.recs[1].status == JOB_E_BAD_INPUT &&
                strstr((const char *)c.recs[1].data, "more than 5 entries"),
            "six entries of five: %s", (const char *)c.recs[1].data);
    T_CHECK(c.recs[2].status == JOB_E_BAD_INPUT &&
                strstr((const char *)c.recs[2].data, "entry 5 is cut short"),
            "a cut entry: %s", (const char *)c.recs[2].data);
    coll_free(&c);
    fixture_free(&f);
}

int main(void)
{
    struct speech sp;
    make_speech(&sp);
    encode_speech(&sp);
    fprintf(stderr, "speech: %.2f s, %zu packets of 60 ms\n", (double)sp.samples / RATE, sp.pk.n);
    test_check_params();
    test_decode_streams(&sp);
    test_decode_stateless(&sp);
    test_decode_worker_killed(&sp);
    test_encode_streams(&sp);
    test_filter_and_bad_input(&sp);
    test_decode_sequence(&sp);
    free(sp.pcm);
    free(sp.pk.data);
    free(sp.pk.len);
    T_DONE();
}
