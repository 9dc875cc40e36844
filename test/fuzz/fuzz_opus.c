/* fuzz_opus.c - libFuzzer harness for the codec handlers (opus.decode and
 * opus.encode) through the public handler API, as the supervisor and the
 * workers call them: check() with any params, then out_bound, state_size
 * and init (two workers), then run() on a few jobs of any bytes, each with
 * an output buffer of exactly the capacity the supervisor reserves, and
 * with no stream state, a fresh one, or one carried over from the job
 * before (possibly run by the other worker). Every answer must be a known
 * status within the buffer; an encoder's packets must add up and decode.
 *
 * Input: FLAGS, PARAMS \0 (lines "key=value"), then up to 8 jobs: JOBFLAGS
 * + INPUT (2-byte length + bytes). FLAGS bit 0: opus.encode (else decode).
 * JOBFLAGS bit 0: no stream; bit 1: the state is fresh (the stream is new or
 * was reset); bit 2: run on worker 1 (else 0). */
#include <opus.h>

#include "fuzz.h"
#include "worker/handler.h"

#define MAX_PARAMS 16
#define MAX_JOBS   8

/* ---- params and check() --------------------------------------------------- */

struct params {
    struct mqfork_param item[MAX_PARAMS];
    struct mqfork_params view;
};

/* "key=value" lines of TEXT (modified in place) into *P. */
static void parse_params(char *text, struct params *p)
{
    p->view = (struct mqfork_params){.items = p->item};
    for (char *line = strtok(text, "\n"); line && p->view.count < MAX_PARAMS;
         line = strtok(NULL, "\n")) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        p->item[p->view.count++] = (struct mqfork_param){.key = line, .value = eq + 1};
    }
}

struct check_host {
    struct mqfork_check api;
    const struct params *params;
    unsigned problems;
};

static void problem(struct mqfork_check *c, const struct mqfork_param *about, const char *fmt, ...)
{
    struct check_host *h = (struct check_host *)c;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    FUZZ_CHECK(vsnprintf(msg, sizeof(msg), fmt, ap) > 0);
    va_end(ap);
    FUZZ_CHECK(!about || (about >= h->params->item && about < h->params->item + MAX_PARAMS));
    h->problems++;
}

/* ---- one job ------------------------------------------------------------ */

/* An encoder's output: length-prefixed packets that fill it exactly, each
 * a valid Opus packet. */
static void check_packets(const uint8_t *out, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        FUZZ_CHECK(len - pos >= 2);
        size_t n = (size_t)out[pos] << 8 | out[pos + 1];
        FUZZ_CHECK(n >= 1 && n <= len - pos - 2);
        FUZZ_CHECK(opus_packet_get_nb_frames(out + pos + 2, (opus_int32)n) >= 1);
        pos += 2 + n;
    }
}

static void check_answer(const struct mqfork_handler *h, enum mqfork_status st,
                         const struct mqfork_job *job)
{
    FUZZ_CHECK(st == MQFORK_OK || st == MQFORK_FILTERED || st == MQFORK_BAD_INPUT ||
               st == MQFORK_FAILED);
    FUZZ_CHECK(job->out_len <= job->out_cap);
    if (st == MQFORK_FILTERED)
        FUZZ_CHECK(job->out_len == 0);
    if (st == MQFORK_BAD_INPUT || st == MQFORK_FAILED)
        FUZZ_CHECK(job->out_len < job->out_cap &&
                   strnlen((const char *)job->out, job->out_cap) == job->out_len);
    if (st == MQFORK_OK && h == &handler_opus_encode)
        check_packets(job->out, job->out_len);
    /* The supervisor sized the buffer from the input: whole frames fit. */
    if (st == MQFORK_BAD_INPUT)
        FUZZ_CHECK(strncmp((const char *)job->out, "too many frames", 15) != 0);
    if (st == MQFORK_OK && h == &handler_opus_decode)
        FUZZ_CHECK(job->out_len % 2 == 0);
}

/* What a worker is: the handler's context for it. */
struct run {
    const struct mqfork_handler *h;
    struct mqfork_out_bound bound;
    void *ctx[2];
    uint8_t *state;
};

static void run_job(struct run *r, uint8_t flags, const uint8_t *in, size_t in_len)
{
    struct mqfork_job job = {
        .in = in,
        .in_len = in_len,
        .out_cap = handler_out_capacity(r->h->out_bound ? &r->bound : NULL, in_len),
        .state = flags & 1 ? NULL : r->state,
        .state_fresh = flags & 2,
    };
    job.out = fuzz_xmalloc(job.out_cap);
    enum mqfork_status st = r->h->run(r->ctx[flags >> 2 & 1], &job);
    check_answer(r->h, st, &job);
    free(job.out);
}

/* ---- the input ------------------------------------------------------------ */

static void run_jobs(struct run *r, struct fuzz_in *in)
{
    bool started = false;
    for (unsigned i = 0; i < MAX_JOBS && in->n > 0; i++) {
        uint8_t flags = fuzz_byte(in);
        if (!(flags & 1) && !started)
            flags |= 2; /* a stream's first job always comes with a fresh state */
        started |= !(flags & 1);
        size_t len;
        uint8_t *bytes = fuzz_bytes(in, &len);
        run_job(r, flags, bytes, len);
        free(bytes);
    }
}

/* The workers of the last input's handler and params: a worker inits its
 * handlers once and runs every job with them, so they are kept while the
 * inputs name the same handler and params. */
static struct {
    const struct mqfork_handler *h;
    char *text, *parsed; /* the params as given, and cut into P */
    struct params p;
    void *ctx[2];
} workers;

static void workers_stop(void)
{
    for (unsigned w = 0; workers.h && w < 2; w++)
        workers.h->fini(workers.ctx[w]);
    free(workers.text);
    free(workers.parsed);
    memset(&workers, 0, sizeof(workers));
}

/* check() the params TEXT (taken over), then start two workers for them. */
static void workers_start(const struct mqfork_handler *h, char *text)
{
    workers.h = h;
    workers.text = strdup(text);
    workers.parsed = text;
    parse_params(text, &workers.p);
    struct check_host host = {.api.problem = problem, .params = &workers.p};
    h->check(&workers.p.view, &host.api);
    /* Params that failed check() never reach a worker; the handler must
     * still be safe with them (its defaults stand in). */
    struct mqfork_init init = {.params = &workers.p.view};
    for (unsigned w = 0; w < 2; w++) {
        init.worker = w;
        workers.ctx[w] = h->init(&init);
        FUZZ_CHECK(workers.ctx[w] != NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    const struct mqfork_handler *h =
        fuzz_byte(&in) & 1 ? &handler_opus_encode : &handler_opus_decode;
    char *text = fuzz_str(&in);
    if (h != workers.h || strcmp(text, workers.text)) {
        workers_stop();
        workers_start(h, text);
    } else {
        free(text);
    }
    struct run r = {.h = h, .ctx = {workers.ctx[0], workers.ctx[1]}};
    h->out_bound(&workers.p.view, &r.bound);
    size_t state = h->state_size(&workers.p.view);
    FUZZ_CHECK(state > 0 && state < (1u << 20));
    r.state = fuzz_xmalloc(state);
    memset(r.state, 0xa5, state);
    run_jobs(&r, &in);
    free(r.state);
    return 0;
}
