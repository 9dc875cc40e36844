/* handler_opus.c - the codec handlers: opus.decode (one Opus packet in, PCM
 * s16le out; or a sequence of packets in, the PCM of each out) and
 * opus.encode (whole frames of PCM s16le in, packets out, each prefixed with
 * its length as a 2-byte big-endian number).
 *
 * With a stream, the libopus state lives in the stream's slot in shared
 * memory (doc/DESIGN.md, principle 5): a small header of ours, then the state
 * itself, so whichever worker takes the stream's next job continues it.
 * Without a stream, each worker keeps one private decoder or encoder and
 * resets it before every job, so independent jobs stay independent.
 *
 * Their params are described in opus_params.h, checked in opus_params.c.
 */
#include <limits.h>
#include <opus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqfork/handler.h"
#include "worker/handler.h"
#include "worker/opus_params.h"

/* ---- sizes --------------------------------------------------------------- */

#define MAX_PACKET_MS 120 /* the most audio one Opus packet can hold */

static size_t samples_per_ms(const struct opus_params *o)
{
    return (size_t)o->rate / 1000;
}

static size_t frame_samples(const struct opus_params *o) /* per channel */
{
    return (size_t)o->rate * (size_t)o->frame_us / 1000000;
}

static size_t frame_bytes(const struct opus_params *o)
{
    return frame_samples(o) * (size_t)o->channels * 2;
}

/* Longest packet we let the encoder write for one frame: what 512 kbit/s
 * (the top of the bitrate param) fills in a frame, and never more than the
 * format allows (1275 bytes per 20 ms frame, plus a code-3 header). Tying it
 * to the bitrate keeps short frames from reserving kilobytes of slab each. */
static size_t packet_cap(const struct opus_params *o)
{
    size_t by_rate = (size_t)512000 / 8 * (size_t)o->frame_us / 1000000;
    size_t n20 = o->frame_us <= 20000 ? 1 : (size_t)o->frame_us / 20000;
    size_t by_format = 1275 * n20 + 7;
    return by_rate < by_format ? by_rate : by_format;
}

/* Any packet decodes to at most 120 ms, whatever its size; so does each
 * packet concealed before it, and each entry of a sequence (after its
 * length). */
static void decode_out_bound(const struct mqfork_params *p, struct mqfork_out_bound *b)
{
    struct opus_params o = opus_params_of(p, false);
    size_t most = MAX_PACKET_MS * samples_per_ms(&o) * (size_t)o.channels * 2;
    size_t fixed = o.sequence ? (size_t)o.sequence * (2 + most) : (1 + (size_t)o.conceal) * most;
    *b = (struct mqfork_out_bound){.fixed = (uint32_t)fixed};
}

/* Each whole frame of input becomes at most one length-prefixed packet. */
static void encode_out_bound(const struct mqfork_params *p, struct mqfork_out_bound *b)
{
    struct opus_params o = opus_params_of(p, true);
    uint64_t per_frame = 2 + packet_cap(&o), fb = frame_bytes(&o);
    *b = (struct mqfork_out_bound){.per_in_q16 = (uint32_t)((per_frame * 65536 + fb - 1) / fb)};
}

/* ---- stream slots ---------------------------------------------------------- */

/* What sits in front of the libopus state in a stream slot. It names the
 * handler and params the state was made for: stream keys are per kind, but
 * a slot whose header does not match is re-initialized rather than trusted. */
struct slot_header {
    uint32_t magic;
    int32_t rate, channels, frame_us, bitrate, complexity, application;
};

#define SLOT_HEADER 64 /* keeps the libopus state 64-byte aligned */
_Static_assert(sizeof(struct slot_header) <= SLOT_HEADER, "slot header fits");

#define DECODE_MAGIC 0x4f505344u /* "OPSD" */
#define ENCODE_MAGIC 0x4f505345u /* "OPSE" */

static struct slot_header header_for(const struct opus_params *o, uint32_t magic)
{
    struct slot_header h;
    memset(&h, 0, sizeof(h)); /* no stray padding bytes in the comparison */
    h.magic = magic;
    h.rate = o->rate;
    h.channels = o->channels;
    if (magic == ENCODE_MAGIC) {
        h.frame_us = o->frame_us;
        h.bitrate = o->bitrate;
        h.complexity = o->complexity;
        h.application = o->application;
    }
    return h;
}

static bool slot_matches(const void *slot, const struct slot_header *want)
{
    return memcmp(slot, want, sizeof(*want)) == 0;
}

static size_t decode_state_size(const struct mqfork_params *p)
{
    struct opus_params o = opus_params_of(p, false);
    return SLOT_HEADER + (size_t)opus_decoder_get_size(o.channels);
}

static size_t encode_state_size(const struct mqfork_params *p)
{
    struct opus_params o = opus_params_of(p, true);
    return SLOT_HEADER + (size_t)opus_encoder_get_size(o.channels);
}

/* ---- shared by both handlers ----------------------------------------------- */

struct opus_ctx {
    struct opus_params o;
    struct slot_header header; /* what a slot of ours starts with */
    void *codec;               /* the worker's own decoder or encoder, for jobs without a stream */
    int16_t *pcm;              /* scratch: aligned samples in host byte order */
};

static bool is_keepalive(const struct mqfork_job *job)
{
    static const char *const words[] = {"keepalive", "ping", "pong"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t n = strlen(words[i]);
        if (job->in_len == n && memcmp(job->in, words[i], n) == 0)
            return true;
    }
    return false;
}

/* Samples are s16le on the wire. Going through scratch also spares libopus
 * a payload that might not be 2-byte aligned. */
static void pcm_from_le(int16_t *dst, const uint8_t *src, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(dst, src, n * 2);
#else
    for (size_t i = 0; i < n; i++)
        dst[i] = (int16_t)(src[2 * i] | src[2 * i + 1] << 8);
#endif
}

static void pcm_to_le(uint8_t *dst, const int16_t *src, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(dst, src, n * 2);
#else
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = (uint8_t)((uint16_t)src[i] & 0xff);
        dst[2 * i + 1] = (uint8_t)((uint16_t)src[i] >> 8);
    }
#endif
}

static void ctx_free(struct opus_ctx *c)
{
    if (c) {
        free(c->pcm);
        free(c->codec);
        free(c);
    }
}

static void opus_fini(void *ctx)
{
    ctx_free(ctx);
}

static struct opus_ctx *ctx_new(const struct mqfork_params *p, bool encode, size_t scratch_samples)
{
    struct opus_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->o = opus_params_of(p, encode);
    c->header = header_for(&c->o, encode ? ENCODE_MAGIC : DECODE_MAGIC);
    c->pcm = calloc(scratch_samples, sizeof(*c->pcm));
    size_t size = encode ? (size_t)opus_encoder_get_size(c->o.channels)
                         : (size_t)opus_decoder_get_size(c->o.channels);
    c->codec = calloc(1, size);
    if (!c->pcm || !c->codec) {
        ctx_free(c);
        return NULL;
    }
    return c;
}

/* ---- opus.decode ------------------------------------------------------------- */

static void *decode_init(const struct mqfork_init *in)
{
    const struct mqfork_params *p = in->params;
    struct opus_params o = opus_params_of(p, false);
    size_t most = MAX_PACKET_MS * samples_per_ms(&o) * (size_t)o.channels;
    struct opus_ctx *c = ctx_new(p, false, most);
    if (c && opus_decoder_init(c->codec, c->o.rate, c->o.channels) != OPUS_OK) {
        ctx_free(c);
        return NULL;
    }
    return c;
}

/* The decoder for this job: the stream's, made ready if it is new or
 * suspect, or the worker's own, reset so no earlier job leaks into it. */
static OpusDecoder *job_decoder(struct opus_ctx *c, struct mqfork_job *job)
{
    if (!job->state) {
        opus_decoder_ctl((OpusDecoder *)c->codec, OPUS_RESET_STATE);
        return c->codec;
    }
    OpusDecoder *dec = (OpusDecoder *)((uint8_t *)job->state + SLOT_HEADER);
    if (job->state_fresh || !slot_matches(job->state, &c->header)) {
        memset(job->state, 0, SLOT_HEADER); /* a crash during init leaves it unmatched */
        if (opus_decoder_init(dec, c->o.rate, c->o.channels) != OPUS_OK)
            return NULL;
        memcpy(job->state, &c->header, sizeof(c->header));
    }
    return dec;
}

/* Is a payload of LEN bytes exactly one frame of PCM (2.5 to 60 ms)? */
static bool plausible_pcm(const struct opus_params *o, size_t len)
{
    for (size_t i = 0; i < OPUS_FRAME_SIZES; i++) {
        size_t samples = (size_t)o->rate * (size_t)opus_frame_us[i] / 1000000;
        if (len == samples * (size_t)o->channels * 2)
            return true;
    }
    return false;
}

static enum mqfork_status decode_failed(struct opus_ctx *c, struct mqfork_job *job, int err)
{
    if (c->o.fallback_pcm && plausible_pcm(&c->o, job->in_len) && job->in_len <= job->out_cap) {
        memcpy(job->out, job->in, job->in_len);
        job->out_len = job->in_len;
        return MQFORK_OK;
    }
    mqfork_job_error(job, "not a valid Opus packet (%zu bytes): %s", job->in_len,
                     opus_strerror(err));
    return MQFORK_BAD_INPUT;
}

/* Append N decoded samples per channel to the job's output. */
static enum mqfork_status append_pcm(struct opus_ctx *c, struct mqfork_job *job, int n)
{
    size_t samples = (size_t)n * (size_t)c->o.channels;
    if (job->out_len + samples * 2 > job->out_cap) { /* cannot happen: out_bound covers it */
        mqfork_job_error(job, "decoded audio does not fit the output buffer");
        return MQFORK_FAILED;
    }
    pcm_to_le(job->out + job->out_len, c->pcm, samples);
    job->out_len += samples * 2;
    return MQFORK_OK;
}

/* The packets lost before this one, as long as the last decoded: the last
 * from this packet's FEC data when asked for, the rest by concealment. */
static int conceal(struct opus_ctx *c, OpusDecoder *dec, struct mqfork_job *job)
{
    opus_int32 frame = 0;
    opus_decoder_ctl(dec, OPUS_GET_LAST_PACKET_DURATION(&frame));
    if (frame <= 0)
        return 0; /* nothing decoded yet: no length to conceal with */
    uint32_t most = (uint32_t)c->o.conceal;
    uint32_t lost = job->meta.lost < most ? job->meta.lost : most;
    for (uint32_t i = 0; i < lost; i++) {
        bool fec = c->o.fec && i == lost - 1;
        int n = opus_decode(dec, fec ? job->in : NULL, fec ? (opus_int32)job->in_len : 0, c->pcm,
                            frame, fec);
        if (n < 0)
            n = opus_decode(dec, NULL, 0, c->pcm, frame, 0); /* no FEC in it after all */
        if (n < 0 || append_pcm(c, job, n) != MQFORK_OK)
            return -1;
    }
    return 0;
}

/* ---- sequences (param sequence) ---- */

/* One entry of a sequence: its bytes, and where the next one starts. */
struct entry {
    const uint8_t *data;
    size_t len, next;
};

/* The entry at AT of the job's input: false when the input ends inside it. */
static bool entry_at(const struct mqfork_job *job, size_t at, struct entry *e)
{
    if (job->in_len - at < 2)
        return false;
    e->len = (size_t)job->in[at] << 8 | job->in[at + 1];
    e->data = job->in + at + 2;
    e->next = at + 2 + e->len;
    return e->len <= job->in_len - at - 2;
}

/* A sequence must be whole and short enough before any of it is decoded:
 * a bad one leaves the stream's state as it was. */
static bool sequence_ok(const struct opus_ctx *c, struct mqfork_job *job)
{
    struct entry e = {.next = 0};
    size_t n = 0;
    while (e.next < job->in_len) {
        if (!entry_at(job, e.next, &e)) {
            mqfork_job_error(job, "sequence: entry %zu is cut short (%zu bytes in all)", n + 1,
                             job->in_len);
            return false;
        }
        if (++n > (size_t)c->o.sequence) {
            mqfork_job_error(job, "sequence: more than %d entries", c->o.sequence);
            return false;
        }
    }
    return true;
}

/* Samples of entry E decoded: a packet, or a loss concealed as long as the
 * last packet (from NEXT's FEC data when asked for and NEXT is a packet);
 * 0 for a packet that is not valid Opus or a loss with nothing before it. */
static int decode_entry(struct opus_ctx *c, OpusDecoder *dec, const struct entry *e,
                        const struct entry *next)
{
    if (e->len) {
        int n = opus_decode(dec, e->data, (opus_int32)e->len, c->pcm,
                            MAX_PACKET_MS * (int)samples_per_ms(&c->o), 0);
        return n > 0 ? n : 0;
    }
    opus_int32 frame = 0;
    opus_decoder_ctl(dec, OPUS_GET_LAST_PACKET_DURATION(&frame));
    if (frame <= 0)
        return 0;
    int n = -1;
    if (c->o.fec && next && next->len)
        n = opus_decode(dec, next->data, (opus_int32)next->len, c->pcm, frame, 1);
    if (n < 0) /* no FEC in it after all */
        n = opus_decode(dec, NULL, 0, c->pcm, frame, 0);
    return n > 0 ? n : 0;
}

static enum mqfork_status decode_sequence(struct opus_ctx *c, OpusDecoder *dec,
                                          struct mqfork_job *job)
{
    struct entry e, next;
    bool more = job->in_len > 0 && entry_at(job, 0, &e);
    while (more) {
        more = e.next < job->in_len && entry_at(job, e.next, &next);
        size_t at = job->out_len;
        if (at + 2 > job->out_cap) { /* cannot happen: out_bound covers it */
            mqfork_job_error(job, "decoded audio does not fit the output buffer");
            return MQFORK_FAILED;
        }
        job->out_len += 2;
        int n = decode_entry(c, dec, &e, more ? &next : NULL);
        if (n && append_pcm(c, job, n) != MQFORK_OK)
            return MQFORK_FAILED;
        size_t bytes = job->out_len - at - 2;
        job->out[at] = (uint8_t)(bytes >> 8);
        job->out[at + 1] = (uint8_t)(bytes & 0xff);
        e = next;
    }
    return MQFORK_OK;
}

static enum mqfork_status decode_run(void *ctx, struct mqfork_job *job)
{
    struct opus_ctx *c = ctx;
    job->out_len = 0;
    if (is_keepalive(job))
        return MQFORK_FILTERED;
    if (job->in_len == 0 && !c->o.sequence) {
        mqfork_job_error(job, "empty payload: one Opus packet was expected");
        return MQFORK_BAD_INPUT;
    }
    if (job->in_len > INT32_MAX)
        return decode_failed(c, job, OPUS_INVALID_PACKET);
    if (c->o.sequence && !sequence_ok(c, job))
        return MQFORK_BAD_INPUT;
    OpusDecoder *dec = job_decoder(c, job);
    if (!dec) {
        mqfork_job_error(job, "cannot initialize the stream's Opus decoder");
        return MQFORK_FAILED;
    }
    if (c->o.sequence)
        return decode_sequence(c, dec, job);
    if (job->state && job->meta.lost && c->o.conceal && conceal(c, dec, job) < 0)
        return MQFORK_FAILED;
    int most = MAX_PACKET_MS * (int)samples_per_ms(&c->o);
    int n = opus_decode(dec, job->in, (opus_int32)job->in_len, c->pcm, most, 0);
    if (n < 0)
        return decode_failed(c, job, n);
    return append_pcm(c, job, n);
}

/* ---- opus.encode ------------------------------------------------------------- */

/* Settings beyond opus_encoder_init; they survive OPUS_RESET_STATE. */
static int configure_encoder(OpusEncoder *enc, const struct opus_params *o)
{
    if (opus_encoder_ctl(enc, OPUS_SET_BITRATE(o->bitrate)) != OPUS_OK ||
        opus_encoder_ctl(enc, OPUS_SET_COMPLEXITY(o->complexity)) != OPUS_OK)
        return -1;
    return 0;
}

static int init_encoder(OpusEncoder *enc, const struct opus_params *o)
{
    if (opus_encoder_init(enc, o->rate, o->channels, o->application) != OPUS_OK)
        return -1;
    return configure_encoder(enc, o);
}

static void *encode_init(const struct mqfork_init *in)
{
    const struct mqfork_params *p = in->params;
    struct opus_params o = opus_params_of(p, true);
    struct opus_ctx *c = ctx_new(p, true, frame_samples(&o) * (size_t)o.channels);
    if (c && init_encoder(c->codec, &c->o) < 0) {
        ctx_free(c);
        return NULL;
    }
    return c;
}

static OpusEncoder *job_encoder(struct opus_ctx *c, struct mqfork_job *job)
{
    if (!job->state) {
        opus_encoder_ctl((OpusEncoder *)c->codec, OPUS_RESET_STATE);
        return c->codec;
    }
    OpusEncoder *enc = (OpusEncoder *)((uint8_t *)job->state + SLOT_HEADER);
    if (job->state_fresh || !slot_matches(job->state, &c->header)) {
        memset(job->state, 0, SLOT_HEADER);
        if (init_encoder(enc, &c->o) < 0)
            return NULL;
        memcpy(job->state, &c->header, sizeof(c->header));
    }
    return enc;
}

/* Whole frames only: anything else is the sender's mistake, said precisely. */
static bool encode_input_ok(const struct opus_ctx *c, struct mqfork_job *job)
{
    size_t fb = frame_bytes(&c->o);
    if (job->in_len == 0)
        mqfork_job_error(job, "empty payload: whole frames of PCM s16le were expected");
    else if (job->in_len % 2)
        mqfork_job_error(job, "odd length (%zu bytes): PCM s16le comes in 2-byte samples",
                         job->in_len);
    else if (job->in_len % fb)
        mqfork_job_error(job,
                         "partial frame: %zu bytes is not a whole number of %g ms frames of %zu "
                         "bytes (%zu bytes left over)",
                         job->in_len, c->o.frame_us / 1000.0, fb, job->in_len % fb);
    else if (job->in_len / fb * (2 + packet_cap(&c->o)) > job->out_cap)
        mqfork_job_error(job, "too many frames (%zu) for one job", job->in_len / fb);
    else
        return true;
    return false;
}

static enum mqfork_status encode_run(void *ctx, struct mqfork_job *job)
{
    struct opus_ctx *c = ctx;
    job->out_len = 0;
    if (is_keepalive(job))
        return MQFORK_FILTERED;
    if (!encode_input_ok(c, job))
        return MQFORK_BAD_INPUT;
    OpusEncoder *enc = job_encoder(c, job);
    if (!enc) {
        mqfork_job_error(job, "cannot initialize the stream's Opus encoder");
        return MQFORK_FAILED;
    }
    size_t fb = frame_bytes(&c->o), fs = frame_samples(&c->o), cap = packet_cap(&c->o), pos = 0;
    for (size_t off = 0; off < job->in_len; off += fb) {
        pcm_from_le(c->pcm, job->in + off, fs * (size_t)c->o.channels);
        int n = opus_encode(enc, c->pcm, (int)fs, job->out + pos + 2, (opus_int32)cap);
        if (n < 0) {
            mqfork_job_error(job, "Opus encoder failed on frame %zu: %s", off / fb,
                             opus_strerror(n));
            return MQFORK_FAILED;
        }
        job->out[pos] = (uint8_t)(n >> 8);
        job->out[pos + 1] = (uint8_t)(n & 0xff);
        pos += 2 + (size_t)n;
    }
    job->out_len = pos;
    return MQFORK_OK;
}

static void decode_check(const struct mqfork_params *p, struct mqfork_check *c)
{
    struct opus_params o;
    opus_parse_params(p, false, &o, c);
}

static void encode_check(const struct mqfork_params *p, struct mqfork_check *c)
{
    struct opus_params o;
    opus_parse_params(p, true, &o, c);
}

const struct mqfork_handler handler_opus_decode = {
    .abi = MQFORK_HANDLER_ABI,
    .name = "opus.decode",
    .check = decode_check,
    .out_bound = decode_out_bound,
    .state_size = decode_state_size,
    .init = decode_init,
    .fini = opus_fini,
    .run = decode_run,
};

const struct mqfork_handler handler_opus_encode = {
    .abi = MQFORK_HANDLER_ABI,
    .name = "opus.encode",
    .check = encode_check,
    .out_bound = encode_out_bound,
    .state_size = encode_state_size,
    .init = encode_init,
    .fini = opus_fini,
    .run = encode_run,
};
