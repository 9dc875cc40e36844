/* mqfork-device-udp.c - a simulated device's audio channel, byte for byte
 * as the firmware's (doc/VOICE.md): uplink datagrams built from the session's
 * nonce and encrypted with AES-128-CTR; downlink datagrams checked, their
 * sequence numbers compared with the last accepted one (lower or equal:
 * out of order, dropped; a jump: lost), decrypted, decoded, timed for
 * jitter and optionally saved to a WAV file. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tools/mqfork-device.h"

#define MAX_FRAME_MS 120 /* the longest Opus frame */
#define GRACE_FRAMES 4   /* after tts stop, wait this many frame periods of quiet */
#define NEW_BURST_US US  /* a gap this long starts a new burst: not jitter */

static uint8_t dgram[VOICE_MAX_DGRAM]; /* one device at a time: one thread */
static uint8_t plain[VOICE_MAX_DGRAM];
static int16_t pcm[48000 * MAX_FRAME_MS / 1000 * 2];

static int open_socket(struct device *d, char *why, size_t whylen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV}, *ai;
    char port[8];
    snprintf(port, sizeof(port), "%u", d->hello.port);
    int rc = getaddrinfo(d->hello.server, port, &hints, &ai);
    if (rc != 0) {
        snprintf(why, whylen, "%s: %s", d->hello.server, gai_strerror(rc));
        return -1;
    }
    d->udp_fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int on = 1;
    if (d->udp_fd < 0 || connect(d->udp_fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
        setsockopt(d->udp_fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) < 0 ||
        loop_watch_udp(d) < 0) {
        snprintf(why, whylen, "%s port %s: %s", d->hello.server, port, strerror(errno));
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    return 0;
}

int chan_open(struct device *d, char *why, size_t whylen)
{
    const struct voice_audio *a = &d->hello.downlink;
    int err;
    d->seq_up = d->seq_down = 0;
    d->last_rx_us = 0;
    if (open_socket(d, why, whylen) < 0)
        return -1;
    if (voice_cipher_init(&d->cipher, d->hello.key) < 0) {
        snprintf(why, whylen, "AES-128-CTR set-up failed");
        return -1;
    }
    d->dec = opus_decoder_create(a->sample_rate, a->channels, &err);
    d->dec_frame = a->sample_rate / 1000 * MAX_FRAME_MS;
    if (!d->dec) {
        snprintf(why, whylen, "opus decoder at %d Hz: %s", a->sample_rate, opus_strerror(err));
        return -1;
    }
    if (d->sim->o.save_dir) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s.wav", d->sim->o.save_dir, d->id);
        d->wav_fd = wav_open(path, a->sample_rate, a->channels);
        if (d->wav_fd < 0) {
            snprintf(why, whylen, "%s: %s", path, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* The header: the nonce with payload_len, timestamp (the frame's place in
 * the uplink, in ms: (sequence - 1) * 60) and sequence (from 1). */
void chan_send_frame(struct device *d)
{
    const struct recording *r = &d->sim->rec;
    uint16_t len = r->len[d->frame];
    uint32_t seq = ++d->seq_up, ts = (uint32_t)(d->frames_total * DEV_FRAME_MS);
    hist_add(&d->st.late, now_us() - d->due);
    voice_hdr_build(dgram, d->hello.nonce, len, ts, seq);
    if (voice_cipher_apply(&d->cipher, dgram, r->data + r->off[d->frame], dgram + VOICE_HDR_LEN,
                           len) < 0) {
        dev_fail(d, "AES-128-CTR failed");
        return;
    }
    d->frames_total++;
    if (send(d->udp_fd, dgram, VOICE_HDR_LEN + (size_t)len, 0) < 0)
        d->st.send_errors++; /* full buffer, or an ICMP error from an earlier one */
    else
        d->st.sent++;
}

int64_t chan_grace_us(const struct device *d)
{
    return (int64_t)GRACE_FRAMES * d->hello.downlink.frame_ms * 1000;
}

/* Jitter: how far the gap since the previous packet is from what the
 * sequence numbers say it should be (frames x frame period). Measured on
 * the kernel's arrival times, so a busy simulator does not add its own. */
static void time_arrival(struct device *d, int64_t at_us, uint32_t seq)
{
    if (d->last_rx_us) {
        int64_t gap = at_us - d->last_rx_us;
        int64_t want = (int64_t)(seq - d->last_rx_seq) * d->hello.downlink.frame_ms * 1000;
        if (gap < want + NEW_BURST_US)
            hist_add(&d->st.jitter, gap > want ? gap - want : want - gap);
    }
    d->last_rx_us = at_us;
    d->last_rx_seq = seq;
}

static void play(struct device *d, const uint8_t *opus, size_t len)
{
    int n = opus_decode(d->dec, opus, (opus_int32)len, pcm, d->dec_frame, 0);
    if (n < 0) {
        d->st.undecodable++;
        return;
    }
    if (d->wav_fd >= 0 &&
        wav_append(d->wav_fd, pcm, (size_t)n * (size_t)d->hello.downlink.channels) == 0)
        d->st.saved += (uint64_t)n;
}

/* One downlink datagram, checked as the firmware checks it (and the ssrc
 * too: a datagram of another session is a server bug worth counting). */
static void on_datagram(struct device *d, size_t n, int64_t at_us)
{
    struct voice_hdr h;
    if (voice_hdr_parse(dgram, n, &h) != VOICE_OK || h.ssrc != voice_nonce_ssrc(d->hello.nonce)) {
        d->st.bad++;
        return;
    }
    if (h.sequence <= d->seq_down) {
        d->st.ooo++;
        return;
    }
    d->st.lost += h.sequence - d->seq_down - 1;
    d->seq_down = h.sequence;
    d->st.received++;
    d->st.after_abort += d->aborted;
    int64_t now = now_us();
    if (d->state == DEV_REPLY && !d->got_audio) {
        hist_add(&d->st.reply, now - d->t_stop);
        if (d->sim->o.verbose)
            dev_log(d, "< audio (the answer's first packet)");
    }
    d->got_audio = true;
    d->t_heard = now;
    dev_heard_speech(d);
    time_arrival(d, at_us, h.sequence);
    if (voice_cipher_apply(&d->cipher, dgram, dgram + VOICE_HDR_LEN, plain, h.payload_len) < 0)
        d->st.undecodable++;
    else
        play(d, plain, h.payload_len);
    if (d->state == DEV_REPLY)
        dev_reply_timer(
            d, now + (d->tts_stopped ? chan_grace_us(d) : (int64_t)(d->sim->o.wait_s * US)));
}

/* The kernel's arrival time (CLOCK_REALTIME: used only for differences),
 * or the time now on that clock if the kernel gave none. */
static int64_t arrival(struct msghdr *mh)
{
    struct timespec ts;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS) {
            memcpy(&ts, CMSG_DATA(c), sizeof(ts));
            return (int64_t)ts.tv_sec * US + ts.tv_nsec / 1000;
        }
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * US + ts.tv_nsec / 1000;
}

void dev_udp_readable(struct device *d)
{
    while (d->udp_fd >= 0) {
        union {
            char buf[CMSG_SPACE(sizeof(struct timespec))];
            struct cmsghdr align;
        } ctl;
        struct iovec iov = {dgram, sizeof(dgram)};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = ctl.buf,
                            .msg_controllen = sizeof(ctl)};
        ssize_t n = recvmsg(d->udp_fd, &mh, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == ECONNREFUSED)
            continue; /* an ICMP error for an earlier send: the next read goes on */
        if (n < 0)
            return;
        on_datagram(d, (size_t)n, arrival(&mh));
    }
}

void chan_close(struct device *d)
{
    if (d->udp_fd >= 0) {
        loop_unwatch(d->sim, d->udp_fd);
        close(d->udp_fd);
        d->udp_fd = -1;
    }
    voice_cipher_free(&d->cipher);
    if (d->dec) {
        opus_decoder_destroy(d->dec);
        d->dec = NULL;
    }
    if (d->wav_fd >= 0) {
        wav_close(d->wav_fd, d->st.saved * (uint64_t)d->hello.downlink.channels);
        d->wav_fd = -1;
    }
}
