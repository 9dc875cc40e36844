/* voice_up.c - the voice gateway's UDP socket, in the event loop.
 *
 * In: each wake-up reads datagrams in batches (recvmmsg) until the socket
 * is empty. A datagram is checked (voice_hdr_parse), tied to its session by
 * ssrc, held to a rising sequence, decrypted in place with the session's
 * cipher, and then relayed to the backend (voice/{device}/opus) and/or
 * decoded in the pool with the session as the stream, as voice.uplink says.
 * Whatever fails is dropped and counted by reason; a gap in sequence is
 * counted as lost and concealed by the decoder. A packet the pool refuses
 * (overloaded) becomes silence of its length before the next one's PCM:
 * concealing it would cost the pool a decode just when it has none to
 * spare, and every refusal would make the next job heavier. The device's
 * address is the one its latest valid datagram came from (NAT rebinding).
 *
 * Out: voice_udp_send encrypts a packet into the round's batch, which a
 * before-sleep hook sends with one sendmmsg. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <opus.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shm/clock.h"
#include "supervisor/engine.h"
#include "supervisor/voice_impl.h"

#define RECV_BATCH 32
#define RECV_BUF   2048 /* a datagram longer than this is cut: its length is then wrong */

/* A decode job: frames of one session in arrival order, as opus.decode's
 * sequence (each entry a 2-byte length and a packet; an empty entry a lost
 * packet to conceal). While a job of the session is in the pool, the frames
 * that come meanwhile collect in the next one (voice_session.batch, its
 * bytes in voice_session.seq) instead of each becoming a job: it goes when
 * the one in the pool is back, or when it is full, to wait for its turn in
 * the engine. Frames are decoded in the same order and as late as they
 * would have been one to a job, and a pool that falls behind pays the cost
 * of a job once for many frames, so it catches up instead of refusing. */
#define BATCH_BYTES 2048 /* of its sequence */
#define SPARE_JOBS  1024 /* finished jobs kept for reuse, so a job costs no malloc */
_Static_assert(VOICE_DECODE_BATCH >= 1 + VOICE_CONCEAL, "a packet and its losses fit a job");
_Static_assert(BATCH_BYTES >= 2 * (1 + VOICE_CONCEAL) + VOICE_OPUS_MAX, "so do their bytes");

struct up_job {
    struct up_job *next_spare;
    struct voice *v;
    uint32_t slot, gen;
    uint32_t silence;         /* samples refused before it */
    uint32_t entries, frames; /* entries; of which packets */
    uint32_t len;             /* bytes of the sequence */
    uint32_t out_max;         /* the most its answer can hold */
    uint32_t samples;         /* of its packets: silence in their place if it fails */
    uint64_t arrived_ns[VOICE_DECODE_BATCH]; /* of each packet; 0: a loss */
    uint16_t packet_samples[VOICE_DECODE_BATCH];
    char device[VOICE_DEVICE_MAX + 1]; /* for PCM that outlives its session */
};

static void describe_decode(const void *ctx, char *buf, size_t len)
{
    const struct up_job *j = ctx;
    voice_job_describe(j->v, j->slot, j->gen, j->device, "decode", buf, len);
}

/* ---- uplink ------------------------------------------------------------------- */

static void publish_pcm(struct voice *v, const char *device, const void *pcm, size_t len)
{
    char topic[VOICE_TOPIC_MAX];
    if (voice_topic(v->vc->topics.pcm, device, topic, sizeof(topic)) == 0) {
        mqtt_publish(v->mqtt, topic, pcm, len, 0, false, NULL, 0);
        v->n.pcm_out++;
    }
}

void voice_up_flush_pcm(struct voice *v, struct voice_session *s)
{
    publish_pcm(v, s->device, s->pcm, s->pcm_len);
    s->pcm_len = 0;
}

/* Decoded audio (NULL: LEN bytes of silence) joins the session's batch,
 * published when it is full. */
static void add_pcm(struct voice *v, struct voice_session *s, const uint8_t *pcm, size_t len)
{
    size_t batch = (size_t)v->vc->pcm_batch_ms * (VOICE_UP_RATE / 1000) * 2;
    if (!s->pcm && !(s->pcm = malloc(batch)))
        return;
    while (len) {
        size_t take = voice_pcm_fill(s->pcm + s->pcm_len, batch - s->pcm_len, pcm, len);
        pcm = pcm ? pcm + take : NULL;
        s->pcm_len += (uint32_t)take;
        len -= take;
        if (s->pcm_len == batch)
            voice_up_flush_pcm(v, s);
    }
}

/* S heard LEN bytes of PCM (NULL: silence): the backend's and the
 * recognizer's. */
static void hear(struct voice *v, struct voice_session *s, const uint8_t *pcm, size_t len)
{
    add_pcm(v, s, pcm, len);
    voice_stt_audio(v, s, pcm, len);
}

static struct up_job *job_new(struct voice *v, struct voice_session *s)
{
    struct up_job *j = v->spare_jobs;
    if (j)
        v->spare_jobs = j->next_spare, v->nspare--;
    else if (!(j = malloc(sizeof(*j))))
        return NULL;
    j->v = v;
    j->slot = s->slot;
    j->gen = s->gen;
    j->silence = j->entries = j->frames = j->len = j->out_max = j->samples = 0;
    return j;
}

static void job_free(struct voice *v, struct up_job *j)
{
    if (v->nspare >= SPARE_JOBS) {
        free(j);
        return;
    }
    j->next_spare = v->spare_jobs;
    v->spare_jobs = j;
    v->nspare++;
}

static void free_spare_jobs(struct voice *v)
{
    for (struct up_job *j = v->spare_jobs, *next; j; j = next) {
        next = j->next_spare;
        free(j);
    }
    v->spare_jobs = NULL;
    v->nspare = 0;
}

/* The answer to J (opus.decode's sequence framing: one entry per entry
 * asked for, whole PCM samples) is checked whole before any of it is used:
 * a worker's answer is not trusted (doc/DESIGN.md, principle 1). */
static bool answer_ok(const struct up_job *j, const struct engine_outcome *o)
{
    size_t at = 0;
    for (uint32_t i = 0; i < j->entries; i++) {
        if (o->len - at < 2)
            return false;
        size_t n = (size_t)o->data[at] << 8 | o->data[at + 1];
        if (n % 2 || n > o->len - at - 2)
            return false;
        at += 2 + n;
    }
    return at == o->len;
}

/* Entry I of J's answer, N bytes of PCM at PCM: counted, and heard by S,
 * or, when S ended meanwhile, appended to ORPHAN (*OLEN bytes so far). A
 * packet that was not valid Opus is silence of its length. */
static void take_entry(struct voice *v, struct voice_session *s, const struct up_job *j, uint32_t i,
                       const uint8_t *pcm, size_t n, uint8_t *orphan, size_t *olen)
{
    if (!j->arrived_ns[i]) {
        v->n.concealed += n > 0;
    } else if (n) {
        v->n.decoded++;
        stats_hist_add(&v->n.decode_latency, mono_ns() - j->arrived_ns[i]);
    } else {
        v->n.decode_failed++;
        pcm = NULL;
        n = (size_t)j->packet_samples[i] * 2;
    }
    if (s)
        hear(v, s, pcm, n);
    else if (orphan && pcm)
        memcpy(orphan + *olen, pcm, n), *olen += n;
}

/* The PCM of J's answer O, entry by entry. S NULL: its session ended with
 * J in the pool, and the PCM goes alone. */
static void take_answer(struct voice *v, struct voice_session *s, const struct up_job *j,
                        const struct engine_outcome *o)
{
    uint8_t *orphan = s ? NULL : malloc(o->len);
    size_t at = 0, olen = 0;
    for (uint32_t i = 0; i < j->entries; i++) {
        size_t n = (size_t)o->data[at] << 8 | o->data[at + 1];
        take_entry(v, s, j, i, o->data + at + 2, n, orphan, &olen);
        at += 2 + n;
    }
    if (orphan && olen)
        publish_pcm(v, j->device, orphan, olen);
    free(orphan);
}

static void batch_submit(struct voice *v, struct voice_session *s);

static void on_decoded(void *ctx, const struct engine_outcome *o)
{
    struct up_job *j = ctx;
    struct voice *v = j->v;
    struct voice_session *s = voice_job_back(v, j->slot, j->gen);
    /* s->decoding still counts J: the utterance does not end halfway */
    if (s && j->silence)
        hear(v, s, NULL, (size_t)j->silence * 2);
    bool ok = o->status == JOB_OK && answer_ok(j, o);
    if (ok) {
        take_answer(v, s, j, o);
    } else {
        if (o->status == JOB_OK)
            log_rated(&v->bad_answer_log, LOG_LVL_WARN,
                      "voice: a decode answer of %zu bytes is not the sequence asked for: its "
                      "frames are silence",
                      o->len);
        v->n.decode_failed += j->frames; /* the decoder state is reset with the next packet */
        if (s)
            hear(v, s, NULL, (size_t)j->samples * 2);
    }
    if (s) {
        s->decoding--;
        if (!s->decoding && s->batch)
            batch_submit(v, s);         /* what came meanwhile: its turn */
        voice_stt_audio(v, s, NULL, 0); /* an utterance waiting for its last frames ends */
    }
    v->changed = true;
    job_free(v, j);
}

/* Samples in Opus packet P as decoded (per channel), 0 when its table of
 * contents is not valid (the decoder then says why). */
static uint32_t packet_samples(const uint8_t *p, size_t len)
{
    int n = opus_packet_get_nb_samples(p, (opus_int32)len, VOICE_UP_RATE);
    return n > 0 ? (uint32_t)n : 0;
}

/* S's batch goes to the pool. Its answer's room is what its packets decode
 * to, and each loss as long as the longest packet so far (what the decoder
 * conceals it with is the last one's length): 2 KiB for a 60 ms frame
 * rather than the 120 ms any packet could need, so the slab holds that much
 * more backlog. Refused: its packets are silence before the next job's PCM
 * (concealing them would cost the pool a decode just when it has none to
 * spare). */
static void batch_submit(struct voice *v, struct voice_session *s)
{
    struct up_job *j = s->batch;
    s->batch = NULL;
    j->silence = s->unheard;
    memcpy(j->device, s->device, sizeof(j->device));
    struct engine_job job = {
        .kind = (uint32_t)v->decode_kind,
        .payload = s->seq,
        .len = j->len,
        .out_max = j->out_max,
        .stream = s->id,
        .stream_len = strlen(s->id),
        .priority = PRIO_HIGH,
        .timeout_ms = 1000,
        .retries = 2,
        .done = on_decoded,
        .describe = describe_decode,
        .ctx = j,
    };
    if (engine_submit(v->engine, &job, NULL) != JOB_OK) {
        v->n.decode_failed += j->frames; /* refused: overloaded or shutting down */
        s->unheard += j->samples;
        job_free(v, j);
        return;
    }
    s->unheard = 0;
    s->jobs++;
    s->decoding++;
    v->n.decode_jobs++;
}

static void batch_put(struct voice_session *s, const uint8_t *data, size_t len, uint64_t arrived,
                      uint32_t samples)
{
    struct up_job *j = s->batch;
    s->seq[j->len] = (uint8_t)(len >> 8);
    s->seq[j->len + 1] = (uint8_t)(len & 0xff);
    if (len)
        memcpy(s->seq + j->len + 2, data, len);
    j->len += 2 + (uint32_t)len;
    j->arrived_ns[j->entries] = arrived;
    j->packet_samples[j->entries] = (uint16_t)samples;
    j->entries++;
}

/* Packet OPUS of S, after LOST packets lost: into S's batch, which goes at
 * once unless a job of S is in the pool. */
static void decode(struct voice *v, struct voice_session *s, const uint8_t *opus, size_t len,
                   uint32_t lost, uint64_t now)
{
    uint32_t samples = packet_samples(opus, len);
    uint32_t conceal = lost < VOICE_CONCEAL ? lost : VOICE_CONCEAL;
    struct up_job *j = s->batch;
    if (j && (j->entries + conceal + 1 > VOICE_DECODE_BATCH ||
              j->len + 2 * (conceal + 1) + len > BATCH_BYTES))
        batch_submit(v, s); /* full: it waits in the engine behind the job in the pool */
    if (!s->seq)
        s->seq = malloc(BATCH_BYTES);
    if (!s->batch && (!s->seq || !(s->batch = job_new(v, s)))) {
        v->n.decode_failed++;
        s->unheard += samples;
        return;
    }
    j = s->batch;
    if (samples > s->frame_max)
        s->frame_max = samples;
    for (uint32_t i = 0; i < conceal; i++)
        batch_put(s, NULL, 0, 0, 0);
    batch_put(s, opus, len, now, samples);
    j->frames++;
    j->samples += samples;
    j->out_max += 2 * (1 + conceal) + 2 * (samples + conceal * s->frame_max);
    if (!s->decoding)
        batch_submit(v, s);
}

void voice_up_end(struct voice *v, struct voice_session *s)
{
    if (s->batch)
        batch_submit(v, s);
}

static void relay(struct voice *v, struct voice_session *s, const uint8_t *opus, size_t len)
{
    char topic[VOICE_TOPIC_MAX];
    if (voice_topic(v->vc->topics.opus, s->device, topic, sizeof(topic)) == 0) {
        mqtt_publish(v->mqtt, topic, opus, len, 0, false, NULL, 0);
        v->n.relayed++;
    }
}

/* The device's address follows its latest datagram that passed the checks. */
static void follow_peer(struct voice_session *s, const struct sockaddr_storage *from, socklen_t len)
{
    if (len <= sizeof(s->peer) && (len != s->peer_len || memcmp(&s->peer, from, len) != 0)) {
        memcpy(&s->peer, from, len);
        s->peer_len = len;
    }
}

static void on_datagram(struct voice *v, uint8_t *d, size_t len, bool cut,
                        const struct sockaddr_storage *from, socklen_t flen, uint64_t now)
{
    struct voice_hdr h;
    struct voice_session *s = NULL;
    v->n.dgrams_in++;
    v->n.bytes_in += len;
    enum voice_drop why = cut ? VOICE_BAD_LENGTH : voice_hdr_parse(d, len, &h);
    if (why == VOICE_OK && !(s = voice_by_ssrc(v, h.ssrc)))
        why = VOICE_UNKNOWN;
    if (why == VOICE_OK && h.sequence <= s->up_seq)
        why = VOICE_REPLAYED;
    if (why == VOICE_OK &&
        voice_cipher_apply(&s->cipher, d, d + VOICE_HDR_LEN, d + VOICE_HDR_LEN, h.payload_len) < 0)
        why = VOICE_BAD_LENGTH; /* the cipher refused it: cannot happen with a valid length */
    if (why != VOICE_OK) {
        v->n.drops[why]++;
        return;
    }
    uint32_t lost = h.sequence - s->up_seq - 1;
    v->n.lost += lost;
    s->up_seq = h.sequence;
    s->seen_ns = now;
    follow_peer(s, from, flen);
    if (v->modes & UPLINK_RELAY)
        relay(v, s, d + VOICE_HDR_LEN, h.payload_len);
    if (v->modes & UPLINK_DECODE)
        decode(v, s, d + VOICE_HDR_LEN, h.payload_len, lost, now);
}

/* Read until the socket is empty; a batch at a time. */
static void on_readable(void *ctx, int events)
{
    struct voice *v = ctx;
    uint8_t(*buf)[RECV_BUF] = v->in_buf;
    struct sockaddr_storage from[RECV_BATCH];
    struct iovec iov[RECV_BATCH];
    struct mmsghdr msg[RECV_BATCH];
    int n;
    do {
        for (int i = 0; i < RECV_BATCH; i++) {
            iov[i] = (struct iovec){buf[i], RECV_BUF};
            msg[i].msg_hdr = (struct msghdr){.msg_name = &from[i],
                                             .msg_namelen = sizeof(from[i]),
                                             .msg_iov = &iov[i],
                                             .msg_iovlen = 1};
        }
        n = recvmmsg(v->fd, msg, RECV_BATCH, MSG_DONTWAIT, NULL);
        uint64_t now = loop_now_ns(v->loop);
        for (int i = 0; i < n; i++)
            on_datagram(v, buf[i], msg[i].msg_len, msg[i].msg_hdr.msg_flags & MSG_TRUNC, &from[i],
                        msg[i].msg_hdr.msg_namelen, now);
        v->changed |= n > 0;
    } while (n == RECV_BATCH);
}

/* ---- downlink datagrams ---------------------------------------------------------- */

void voice_udp_send(struct voice *v, struct voice_session *s, const uint8_t *opus, size_t len)
{
    if (!s->peer_len || len > VOICE_OPUS_MAX) {
        v->n.down_bad++; /* no address yet (the device sends first), or not a packet */
        return;
    }
    unsigned i = v->nout++;
    uint8_t *d = v->out_buf[i];
    s->down_seq++;
    voice_hdr_build(d, s->nonce, (uint16_t)len, (s->down_seq - 1) * v->vc->downlink_frame_ms,
                    s->down_seq);
    voice_cipher_apply(&s->cipher, d, opus, d + VOICE_HDR_LEN, len);
    v->out_iov[i] = (struct iovec){d, VOICE_HDR_LEN + len};
    memcpy(&v->out_addr[i], &s->peer, s->peer_len);
    v->out_msg[i].msg_hdr = (struct msghdr){.msg_name = &v->out_addr[i],
                                            .msg_namelen = s->peer_len,
                                            .msg_iov = &v->out_iov[i],
                                            .msg_iovlen = 1};
    v->n.down_frames++;
    v->n.bytes_out += VOICE_HDR_LEN + len;
    if (v->nout == VOICE_SEND_BATCH)
        voice_udp_flush(v);
}

void voice_udp_flush(struct voice *v)
{
    unsigned done = 0;
    while (done < v->nout) {
        int n = sendmmsg(v->fd, v->out_msg + done, v->nout - done, MSG_DONTWAIT);
        if (n <= 0) {
            /* a full socket buffer or an unreachable peer: these are lost */
            v->n.send_errors += v->nout - done;
            break;
        }
        v->n.dgrams_out += (unsigned)n;
        done += (unsigned)n;
    }
    v->nout = 0;
    v->changed = true;
}

static bool before_sleep(void *ctx)
{
    struct voice *v = ctx;
    if (v->nout)
        voice_udp_flush(v);
    if (v->changed)
        voice_stats_publish(v);
    return false;
}

/* ---- the socket ------------------------------------------------------------------- */

static int bind_socket(const struct conf_voice *vc)
{
    char port[8];
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_DGRAM,
                             .ai_flags = AI_NUMERICHOST | AI_PASSIVE},
                    *ai = NULL;
    snprintf(port, sizeof(port), "%d", vc->port);
    int rc = getaddrinfo(vc->bind, port, &hints, &ai);
    if (rc != 0) {
        log_error("voice: udp %s:%d: %s", vc->bind, vc->port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int buf = 4 << 20; /* bursts of thousands of devices */
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    }
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        log_error("voice: udp %s:%d: %s", vc->bind, vc->port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

int voice_udp_open(struct voice *v)
{
    v->out_msg = calloc(VOICE_SEND_BATCH, sizeof(*v->out_msg));
    v->out_iov = calloc(VOICE_SEND_BATCH, sizeof(*v->out_iov));
    v->out_buf = calloc(VOICE_SEND_BATCH, sizeof(*v->out_buf));
    v->out_addr = calloc(VOICE_SEND_BATCH, sizeof(*v->out_addr));
    v->in_buf = calloc(RECV_BATCH, RECV_BUF);
    if (!v->out_msg || !v->out_iov || !v->out_buf || !v->out_addr || !v->in_buf)
        return -1;
    if ((v->fd = bind_socket(v->vc)) < 0)
        return -1;
    if (!(v->watch = loop_watch(v->loop, v->fd, POLLIN, true, on_readable, v)))
        return -1;
    v->hook = (struct loop_hook){.before_sleep = before_sleep, .ctx = v};
    loop_hook_add(v->loop, &v->hook);
    return 0;
}

void voice_udp_close(struct voice *v)
{
    if (v->hook.before_sleep)
        loop_hook_remove(v->loop, &v->hook);
    if (v->watch)
        loop_cancel(v->loop, v->watch);
    if (v->fd >= 0)
        close(v->fd);
    free(v->out_msg);
    free(v->out_iov);
    free(v->out_buf);
    free(v->out_addr);
    free(v->in_buf);
    free_spare_jobs(v);
}
