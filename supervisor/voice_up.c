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

/* What a decode job needs to find its session again. */
struct up_job {
    struct voice *v;
    uint32_t slot, gen;
    uint32_t concealed;
    uint32_t silence; /* samples refused before this packet */
    uint64_t arrived_ns;
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
        size_t take = batch - s->pcm_len < len ? batch - s->pcm_len : len;
        if (pcm)
            memcpy(s->pcm + s->pcm_len, pcm, take), pcm += take;
        else
            memset(s->pcm + s->pcm_len, 0, take);
        s->pcm_len += (uint32_t)take;
        len -= take;
        if (s->pcm_len == batch)
            voice_up_flush_pcm(v, s);
    }
}

static void on_decoded(void *ctx, const struct engine_outcome *o)
{
    struct up_job *j = ctx;
    struct voice *v = j->v;
    struct voice_session *s = voice_job_back(v, j->slot, j->gen);
    bool ok = o->status == JOB_OK;
    if (s && j->silence) { /* before decoding-- : the session is not done yet */
        add_pcm(v, s, NULL, (size_t)j->silence * 2);
        voice_stt_audio(v, s, NULL, (size_t)j->silence * 2);
    }
    if (s)
        s->decoding--;
    if (ok) {
        v->n.decoded++;
        v->n.concealed += j->concealed;
        stats_hist_add(&v->n.decode_latency, mono_ns() - j->arrived_ns);
        if (s)
            add_pcm(v, s, o->data, o->len);
        else /* the session ended with this in flight: its PCM goes alone */
            publish_pcm(v, j->device, o->data, o->len);
    } else {
        v->n.decode_failed++; /* the decoder state is reset with the next packet */
    }
    if (s)
        voice_stt_audio(v, s, ok ? o->data : NULL, ok ? o->len : 0);
    v->changed = true;
    free(j);
}

/* Samples in Opus packet P as decoded (per channel), 0 when its table of
 * contents is not valid (the decoder then says why). */
static uint32_t packet_samples(const uint8_t *p, size_t len)
{
    int n = opus_packet_get_nb_samples(p, (opus_int32)len, VOICE_UP_RATE);
    return n > 0 ? (uint32_t)n : 0;
}

/* The most PCM a decode job can write: this packet, and CONCEALED before it
 * each as long as the last one decoded (handler_opus.c), which is at most
 * the longest this session sent. It keeps a job's slab block at 2 KiB for a
 * 60 ms frame instead of the 32 KiB any packet could need (five of 120 ms),
 * so the slab holds 16 times the backlog. 0: the route's own bound. */
static uint32_t decode_out_max(struct voice_session *s, uint32_t samples, uint32_t concealed)
{
    if (!samples)
        return 0;
    if (samples > s->frame_max)
        s->frame_max = samples;
    return (samples + concealed * s->frame_max) * 2;
}

static void decode(struct voice *v, struct voice_session *s, const uint8_t *opus, size_t len,
                   uint32_t lost, uint64_t now)
{
    uint32_t samples = packet_samples(opus, len);
    struct up_job *j = malloc(sizeof(*j));
    if (!j) {
        v->n.decode_failed++;
        s->unheard += samples;
        return;
    }
    *j = (struct up_job){.v = v,
                         .slot = s->slot,
                         .gen = s->gen,
                         .concealed = lost < VOICE_CONCEAL ? lost : VOICE_CONCEAL,
                         .silence = s->unheard,
                         .arrived_ns = now};
    memcpy(j->device, s->device, sizeof(j->device));
    struct engine_job job = {
        .kind = (uint32_t)v->decode_kind,
        .payload = opus,
        .len = len,
        .out_max = decode_out_max(s, samples, j->concealed),
        .stream = s->id,
        .stream_len = strlen(s->id),
        .priority = PRIO_HIGH,
        .timeout_ms = 1000,
        .retries = 2,
        .meta = {.lost = lost},
        .done = on_decoded,
        .describe = describe_decode,
        .ctx = j,
    };
    if (engine_submit(v->engine, &job, NULL) != JOB_OK) {
        v->n.decode_failed++;  /* refused: overloaded or shutting down */
        s->unheard += samples; /* silence in its place, so the PCM has no hole */
        free(j);
        return;
    }
    s->unheard = 0;
    s->jobs++;
    s->decoding++;
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
}
