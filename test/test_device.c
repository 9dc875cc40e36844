/* test_device.c - mqfork-device against a tiny voice server inside this
 * test (proto/voice_*), through a private mosquitto: the server answers
 * each hello on the device's p2p topic, checks the encrypted uplink
 * (sequence, timestamps, ssrc, pace) and that it decodes to the recording,
 * and paces a downlink at 60 ms with one replayed packet, one lost and one
 * malformed, which the simulator must count as such, time, and save as a
 * WAV equal to an independent decode. Then a device whose hello goes
 * unanswered, and one whose reply is broken, must fail with exit status 1.
 *
 * The broker loads mqfork_p2p.so (the second argument), so the devices
 * subscribe to nothing, as real ones; without it (mosquitto-dev missing at
 * build time) they fall back to --subscribe, which is said on stderr. The
 * unanswered hello uses --subscribe either way, so that path is run too.
 * Every wait is for an event, bounded by a deadline. */
#include <arpa/inet.h>
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <mosquitto.h>
#include <opus/opus.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/voice_json.h"
#include "proto/voice_udp.h"
#include "test/broker.h"
#include "test/t.h"

#define UP_FRAMES   24 /* the recording: 1.44 s at 16 kHz */
#define UP_SAMPLES  (UP_FRAMES * 960)
#define DOWN_RATE   24000
#define DOWN_FRAME  1440 /* 60 ms at 24 kHz */
#define DOWN_FRAMES 15
#define LOST_SEQ    10 /* never sent to dev-2 */
#define MAX_DEV     2
#define PKT_MAX     1500

struct sess {
    char id[32];
    bool hello, start, stop, goodbye, auto_mode;
    uint8_t key[16], nonce[16];
    struct voice_cipher c;
    struct sockaddr_storage peer;
    socklen_t peer_len;
    uint32_t last_seq;
    int bad_seq, bad_ts, bad_ssrc;
    int64_t first_up_us, last_up_us;
    uint8_t up[UP_FRAMES + 8][PKT_MAX];
    int up_len[UP_FRAMES + 8];
    int nup;
    int next_down; /* next downlink slot, 0 = not speaking yet */
    int64_t down_t0;
};

/* NULL with the p2p plugin (it ends the simulator's argv there), else
 * --subscribe. */
static char *p2p_fallback;

struct srv {
    struct mosquitto *m;
    int udp, port;
    struct sess s[MAX_DEV];
    int nsess, goodbyes;
    bool suback, all_goodbye;               /* every session has said goodbye */
    uint8_t down[DOWN_FRAMES + 1][PKT_MAX]; /* the downlink's Opus, by sequence */
    int down_len[DOWN_FRAMES + 1];
    char out[65536]; /* the simulator's stdout */
    size_t out_len;
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int16_t recording[UP_SAMPLES];

/* Two tones under a slow swell: easy to recognise after Opus. */
static void make_recording(const char *path)
{
    for (int i = 0; i < UP_SAMPLES; i++) {
        double t = i / 16000.0, env = 0.6 + 0.4 * sin(2 * M_PI * 2 * t);
        recording[i] = (int16_t)lrint(
            12000 * env * (0.6 * sin(2 * M_PI * 300 * t) + 0.4 * sin(2 * M_PI * 1100 * t)));
    }
    uint8_t h[44] =
        "RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\x7d\0\0\x02\0\x10\0data";
    uint32_t data = UP_SAMPLES * 2, riff = 36 + data;
    memcpy(h + 4, &riff, 4);
    memcpy(h + 40, &data, 4);
    FILE *f = fopen(path, "wb");
    T_REQUIRE(f && fwrite(h, 44, 1, f) == 1 && fwrite(recording, 2, UP_SAMPLES, f) == UP_SAMPLES &&
                  fclose(f) == 0,
              "write %s", path);
}

/* The downlink: a 24 kHz tone, one packet per 60 ms frame. */
static void make_downlink(struct srv *v)
{
    int err;
    OpusEncoder *e = opus_encoder_create(DOWN_RATE, 1, OPUS_APPLICATION_AUDIO, &err);
    T_REQUIRE(e, "encoder");
    for (int f = 1; f <= DOWN_FRAMES; f++) {
        int16_t pcm[DOWN_FRAME];
        for (int i = 0; i < DOWN_FRAME; i++)
            pcm[i] = (int16_t)lrint(
                9000 * sin(2 * M_PI * 500 * ((f - 1) * DOWN_FRAME + i) / (double)DOWN_RATE));
        v->down_len[f] = opus_encode(e, pcm, DOWN_FRAME, v->down[f], PKT_MAX);
        T_REQUIRE(v->down_len[f] > 0, "encode downlink frame %d", f);
    }
    opus_encoder_destroy(e);
}

static struct sess *find(struct srv *v, const char *id)
{
    for (int i = 0; i < v->nsess; i++)
        if (!strcmp(v->s[i].id, id))
            return &v->s[i];
    return NULL;
}

static void publish(struct srv *v, const char *id, char *json)
{
    char topic[128];
    snprintf(topic, sizeof(topic), "devices/p2p/%s", id);
    T_CHECK(json && mosquitto_publish(v->m, NULL, topic, (int)strlen(json), json, 0, false) == 0,
            "publish to %s", topic);
    free(json);
}

/* A hello: a session with a fresh key and nonce; "bad-" devices get a
 * reply without key or nonce. */
static void on_hello(struct srv *v, const char *id)
{
    if (!strncmp(id, "bad-", 4)) {
        publish(v, id,
                strdup("{\"type\":\"hello\",\"transport\":\"udp\",\"udp\":{\"server\":"
                       "\"127.0.0.1\",\"port\":1}}"));
        return;
    }
    T_REQUIRE(v->nsess < MAX_DEV && !find(v, id), "one hello from %s", id);
    struct sess *s = &v->s[v->nsess++];
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->hello = true;
    for (int i = 0; i < 16; i++) {
        s->key[i] = (uint8_t)rand();
        s->nonce[i] = (uint8_t)rand();
    }
    s->nonce[0] = 1, s->nonce[1] = 0, s->nonce[7] = (uint8_t)v->nsess; /* distinct ssrc */
    T_REQUIRE(voice_cipher_init(&s->c, s->key) == 0, "cipher");
    char sid[48];
    snprintf(sid, sizeof(sid), "sess-%s", id);
    struct voice_hello_reply r = {.session_id = sid,
                                  .server = "127.0.0.1",
                                  .port = (uint16_t)v->port,
                                  .downlink = {DOWN_RATE, 1, 60}};
    memcpy(r.key, s->key, 16);
    memcpy(r.nonce, s->nonce, 16);
    publish(v, id, voice_hello_json(&r));
}

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    struct srv *v = obj;
    char id[32], why[256];
    struct voice_msg vm;
    T_REQUIRE(sscanf(msg->topic, "xiaozhi/%31[^/]/up", id) == 1, "topic %s", msg->topic);
    T_CHECK(voice_msg_parse(msg->payload, (size_t)msg->payloadlen, &vm, why, sizeof(why)) == 0,
            "%s sent what a device sends: %s", id, why);
    struct sess *s = find(v, id);
    if (vm.type == VOICE_MSG_HELLO) {
        T_CHECK(vm.audio.sample_rate == 16000 && vm.audio.channels == 1 && vm.audio.frame_ms == 60,
                "hello: 16 kHz mono 60 ms");
        on_hello(v, id);
        return;
    }
    T_REQUIRE(s, "%s has a session", id);
    char sid[48];
    snprintf(sid, sizeof(sid), "sess-%s", id);
    T_CHECK(!strcmp(vm.session_id, sid), "%s: session id %s", id, vm.session_id);
    if (vm.type == VOICE_MSG_LISTEN && vm.listen == VOICE_LISTEN_START) {
        s->start = true;
        s->auto_mode = vm.mode == VOICE_MODE_AUTO;
    } else if (vm.type == VOICE_MSG_LISTEN && vm.listen == VOICE_LISTEN_STOP) {
        s->stop = true;
        publish(v, id, voice_stt_json(sid, "what the server heard"));
        publish(v, id, strdup("{\"type\":\"llm\",\"emotion\":\"happy\"}"));
        publish(v, id, voice_tts_json(sid, "start", NULL));
        s->next_down = 1;
        s->down_t0 = now_us() + 20000;
    } else if (vm.type == VOICE_MSG_GOODBYE) {
        s->goodbye = true;
        v->all_goodbye = ++v->goodbyes == v->nsess;
    }
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *granted)
{
    ((struct srv *)obj)->suback = true;
}

static void on_uplink(struct srv *v, const uint8_t *d, ssize_t n, struct sockaddr_storage *from,
                      socklen_t flen)
{
    struct voice_hdr h;
    T_REQUIRE(voice_hdr_parse(d, (size_t)n, &h) == VOICE_OK, "uplink datagram parses");
    struct sess *s = NULL;
    for (int i = 0; i < v->nsess; i++)
        if (voice_nonce_ssrc(v->s[i].nonce) == h.ssrc)
            s = &v->s[i];
    T_REQUIRE(s && s->nup < UP_FRAMES + 8, "uplink ssrc %08x names a session", h.ssrc);
    s->bad_seq += h.sequence != s->last_seq + 1;
    s->bad_ts += h.timestamp != (h.sequence - 1) * 60;
    s->bad_ssrc += memcmp(d, s->nonce, 2) != 0;
    s->last_seq = h.sequence;
    s->last_up_us = now_us();
    if (!s->nup)
        s->first_up_us = s->last_up_us;
    T_REQUIRE(voice_cipher_apply(&s->c, d, d + 16, s->up[s->nup], h.payload_len) == 0, "decrypt");
    s->up_len[s->nup++] = h.payload_len;
    memcpy(&s->peer, from, flen);
    s->peer_len = flen;
}

static void send_down(struct srv *v, struct sess *s, uint32_t seq, uint8_t type)
{
    uint8_t d[16 + PKT_MAX];
    voice_hdr_build(d, s->nonce, (uint16_t)v->down_len[seq], (seq - 1) * 60, seq);
    d[0] = type;
    T_REQUIRE(voice_cipher_apply(&s->c, d, v->down[seq], d + 16, (size_t)v->down_len[seq]) == 0,
              "encrypt");
    T_CHECK(sendto(v->udp, d, 16 + (size_t)v->down_len[seq], 0, (struct sockaddr *)&s->peer,
                   s->peer_len) > 0,
            "sendto: %s", strerror(errno));
}

/* Slot k goes out at down_t0 + (k - 1) * 60 ms: sequence k, except that
 * dev-2 loses LOST_SEQ, gets sequence 5 again after 6 and a datagram of
 * type 2 with 3. After the last, tts stop. */
static void pace_downlink(struct srv *v, int64_t now)
{
    for (int i = 0; i < v->nsess; i++) {
        struct sess *s = &v->s[i];
        bool odd = i == 1;
        while (s->next_down && s->next_down <= DOWN_FRAMES &&
               now >= s->down_t0 + (s->next_down - 1) * 60000LL) {
            uint32_t seq = (uint32_t)s->next_down++;
            if (!odd || seq != LOST_SEQ)
                send_down(v, s, seq, VOICE_TYPE);
            if (odd && seq == 6)
                send_down(v, s, 5, VOICE_TYPE);
            if (odd && seq == 3)
                send_down(v, s, 3, 2);
        }
        if (s->next_down == DOWN_FRAMES + 1) {
            char sid[48];
            snprintf(sid, sizeof(sid), "sess-%s", s->id);
            publish(v, s->id, voice_tts_json(sid, "stop", NULL));
            s->next_down++;
        }
    }
}

static int64_t next_due(const struct srv *v)
{
    int64_t due = now_us() + 1000000;
    for (int i = 0; i < v->nsess; i++) {
        const struct sess *s = &v->s[i];
        if (s->next_down && s->next_down <= DOWN_FRAMES) {
            int64_t t = s->down_t0 + (s->next_down - 1) * 60000LL;
            due = t < due ? t : due;
        }
    }
    return due;
}

static void mqtt_events(struct srv *v, short revents)
{
    if (revents & POLLOUT)
        mosquitto_loop_write(v->m, 1);
    if (revents & POLLIN)
        mosquitto_loop_read(v->m, 1);
    mosquitto_loop_misc(v->m);
}

static void udp_events(struct srv *v)
{
    uint8_t d[16 + PKT_MAX];
    struct sockaddr_storage from;
    socklen_t flen = sizeof(from);
    ssize_t n;
    while ((n = recvfrom(v->udp, d, sizeof(d), MSG_DONTWAIT, (struct sockaddr *)&from, &flen)) >
           0) {
        on_uplink(v, d, n, &from, flen);
        flen = sizeof(from);
    }
}

/* Serve until OUT_FD (the simulator's stdout) closes, or DONE for a
 * subscription (OUT_FD -1); false at the deadline. */
static bool serve(struct srv *v, int out_fd, bool *done, int timeout_ms)
{
    int64_t deadline = now_us() + (int64_t)timeout_ms * 1000;
    while (!(done && *done)) {
        int64_t now = now_us(), due = next_due(v);
        if (now >= deadline)
            return false;
        pace_downlink(v, now);
        struct pollfd p[3] = {
            {mosquitto_socket(v->m), POLLIN | (mosquitto_want_write(v->m) ? POLLOUT : 0), 0},
            {v->udp, POLLIN, 0},
            {out_fd, POLLIN, 0},
        };
        int64_t wait = (due < deadline ? due : deadline) - now_us();
        poll(p, out_fd >= 0 ? 3 : 2, wait < 0 ? 0 : (int)((wait + 999) / 1000));
        mqtt_events(v, p[0].revents);
        if (p[1].revents & POLLIN)
            udp_events(v);
        if (out_fd >= 0 && (p[2].revents & (POLLIN | POLLHUP))) {
            ssize_t r = read(out_fd, v->out + v->out_len, sizeof(v->out) - 1 - v->out_len);
            if (r <= 0)
                return true;
            v->out_len += (size_t)r;
            v->out[v->out_len] = '\0';
        }
    }
    return true;
}

static void srv_start(struct srv *v, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    v->udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    T_REQUIRE(v->udp >= 0 && bind(v->udp, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
                  getsockname(v->udp, (struct sockaddr *)&sa, &len) == 0,
              "udp socket");
    v->port = ntohs(sa.sin_port);
    v->m = mosquitto_new("test-voice-server", true, v);
    mosquitto_message_callback_set(v->m, on_message);
    mosquitto_subscribe_callback_set(v->m, on_subscribe);
    T_REQUIRE(mosquitto_connect(v->m, "127.0.0.1", port, 60) == 0 &&
                  mosquitto_subscribe(v->m, NULL, "xiaozhi/+/up", 0) == 0,
              "server connects");
    T_REQUIRE(serve(v, -1, &v->suback, 5000), "SUBACK within 5 s");
}

/* ---- the checks ------------------------------------------------------------ */

/* Run the simulator with ARGV while serving; its JSON summary. */
static cJSON *run_sim(struct srv *v, char **argv, int *status)
{
    struct proc p;
    v->out_len = 0;
    v->out[0] = '\0';
    T_REQUIRE(proc_spawn(&p, argv, true) == 0, "spawn %s", argv[0]);
    bool ok = serve(v, p.out, NULL, 30000);
    T_CHECK(ok, "the simulator finished within 30 s");
    if (!ok)
        proc_stop(&p, SIGKILL);
    T_REQUIRE(ok && proc_wait(&p, 5000, status) == 0, "the simulator exits");
    cJSON *o = cJSON_Parse(v->out);
    T_REQUIRE(o, "one JSON summary on stdout: %s", v->out);
    return o;
}

static double num(const cJSON *o, const char *name)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(n) ? n->valuedouble : -1;
}

static const char *str(const cJSON *o, const char *name)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(n) ? n->valuestring : "";
}

/* The best normalised correlation of A and B delayed by 0..MAXLAG. */
static double correlation(const int16_t *a, const int16_t *b, int n, int maxlag)
{
    double best = 0;
    for (int lag = 0; lag <= maxlag; lag++) {
        double ab = 0, aa = 0, bb = 0;
        for (int i = 0; i + lag < n; i++) {
            ab += (double)a[i] * b[i + lag];
            aa += (double)a[i] * a[i];
            bb += (double)b[i + lag] * b[i + lag];
        }
        if (aa > 0 && bb > 0 && ab / sqrt(aa * bb) > best)
            best = ab / sqrt(aa * bb);
    }
    return best;
}

/* What the server saw of one device: its messages, its uplink in order
 * and at real-time pace, and the recording in it after an independent
 * decode. */
static void check_uplink(struct sess *s)
{
    static int16_t pcm[UP_SAMPLES + 960];
    int err, at = 0;
    T_CHECK(s->hello && s->start && s->auto_mode && s->stop && s->goodbye,
            "%s: hello, listen start (auto), listen stop, goodbye", s->id);
    T_CHECK(s->nup == UP_FRAMES, "%s: %d uplink packets, want %d", s->id, s->nup, UP_FRAMES);
    T_CHECK(!s->bad_seq && !s->bad_ts && !s->bad_ssrc,
            "%s: sequence from 1 by 1 (%d wrong), timestamps (seq-1)*60 (%d wrong), header "
            "from the nonce (%d wrong)",
            s->id, s->bad_seq, s->bad_ts, s->bad_ssrc);
    /* Not faster than real time (by less than a frame: this end's wake-ups
     * may be late, but a device that does not pace is off by seconds). */
    T_CHECK(s->last_up_us - s->first_up_us >= (UP_FRAMES - 2) * 60000LL,
            "%s: real-time pace: %lld us from first to last", s->id,
            (long long)(s->last_up_us - s->first_up_us));
    OpusDecoder *d = opus_decoder_create(16000, 1, &err);
    for (int i = 0; d && i < s->nup && at + 960 <= UP_SAMPLES + 960; i++) {
        int n = opus_decode(d, s->up[i], s->up_len[i], pcm + at, 960, 0);
        T_CHECK(n == 960, "%s: uplink packet %d decodes to 60 ms (%d)", s->id, i + 1, n);
        at += n > 0 ? n : 0;
    }
    opus_decoder_destroy(d);
    double c = correlation(recording, pcm, at < UP_SAMPLES ? at : UP_SAMPLES, 960);
    T_CHECK(c > 0.9, "%s: the uplink decodes to the recording (correlation %.3f)", s->id, c);
}

static void check_wav(const char *dir, const struct srv *v, int i)
{
    char path[600];
    static uint8_t buf[44 + DOWN_FRAMES * DOWN_FRAME * 2 + 16];
    static int16_t want[DOWN_FRAMES * DOWN_FRAME];
    snprintf(path, sizeof(path), "%s/dev-%d.wav", dir, i + 1);
    FILE *f = fopen(path, "rb");
    size_t len = f ? fread(buf, 1, sizeof(buf), f) : 0;
    if (f)
        fclose(f);
    int err, n = 0, frames = i == 1 ? DOWN_FRAMES - 1 : DOWN_FRAMES;
    OpusDecoder *d = opus_decoder_create(DOWN_RATE, 1, &err);
    for (int seq = 1; d && seq <= DOWN_FRAMES; seq++)
        if (i != 1 || seq != LOST_SEQ)
            n += opus_decode(d, v->down[seq], v->down_len[seq], want + n, DOWN_FRAME, 0);
    opus_decoder_destroy(d);
    uint32_t riff, fmtlen, rate, bps, data;
    uint16_t pcm, ch, align, bits;
    memcpy(&riff, buf + 4, 4), memcpy(&fmtlen, buf + 16, 4), memcpy(&pcm, buf + 20, 2);
    memcpy(&ch, buf + 22, 2), memcpy(&rate, buf + 24, 4), memcpy(&bps, buf + 28, 4);
    memcpy(&align, buf + 32, 2), memcpy(&bits, buf + 34, 2), memcpy(&data, buf + 40, 4);
    T_CHECK(len == 44 + (size_t)frames * DOWN_FRAME * 2, "%s: %zu bytes", path, len);
    T_CHECK(!memcmp(buf, "RIFF", 4) && !memcmp(buf + 8, "WAVEfmt ", 8) &&
                !memcmp(buf + 36, "data", 4) && riff == len - 8 && fmtlen == 16 && pcm == 1 &&
                ch == 1 && rate == DOWN_RATE && bps == DOWN_RATE * 2 && align == 2 && bits == 16 &&
                data == len - 44,
            "%s: a 24 kHz mono 16-bit WAV header with its sizes", path);
    T_CHECK(n == frames * DOWN_FRAME && len >= 44 && !memcmp(buf + 44, want, len - 44),
            "%s: equal to an independent decode of the packets accepted", path);
}

/* What the simulator reported of one device's downlink. */
static void check_device(const cJSON *dev, int i)
{
    int odd = i == 1;
    char id[16];
    snprintf(id, sizeof(id), "dev-%d", i + 1);
    const cJSON *json = cJSON_GetObjectItemCaseSensitive(dev, "json");
    T_CHECK(!strcmp(str(dev, "id"), id) && !strcmp(str(dev, "result"), "ok"), "%s ok: %s", id,
            str(dev, "reason"));
    T_CHECK(num(dev, "sent") == UP_FRAMES && num(dev, "send_errors") == 0, "%s: sent %g", id,
            num(dev, "sent"));
    T_CHECK(num(dev, "received") == DOWN_FRAMES - odd && num(dev, "lost") == odd &&
                num(dev, "out_of_order") == odd && num(dev, "bad") == odd &&
                num(dev, "undecodable") == 0,
            "%s: received %g lost %g out of order %g bad %g", id, num(dev, "received"),
            num(dev, "lost"), num(dev, "out_of_order"), num(dev, "bad"));
    T_CHECK(
        num(dev, "jitter_p50_ms") >= 0 && num(dev, "jitter_p99_ms") >= num(dev, "jitter_p50_ms"),
        "%s: jitter p50 %g p99 %g ms", id, num(dev, "jitter_p50_ms"), num(dev, "jitter_p99_ms"));
    T_CHECK(num(dev, "reply_p50_ms") > 0 && num(dev, "hello_ms") > 0, "%s: reply and hello times",
            id);
    T_CHECK(num(json, "stt") == 1 && num(json, "tts") == 2 && num(json, "llm") == 1,
            "%s: stt, tts start and stop, llm counted", id);
    T_CHECK(num(dev, "saved_samples") == (DOWN_FRAMES - odd) * DOWN_FRAME, "%s: %g samples saved",
            id, num(dev, "saved_samples"));
}

static void test_session(struct srv *v, const char *sim, int port, const char *dir)
{
    char ports[16], wav[512], out[512];
    snprintf(ports, sizeof(ports), "%d", port);
    snprintf(wav, sizeof(wav), "%s/speech.wav", dir);
    snprintf(out, sizeof(out), "%s/heard", dir);
    make_recording(wav);
    char *argv[] = {(char *)sim, "-p", ports, "-n", "2", "--ramp", "0.1",        "-a",
                    wav,         "-w", out,   "-W", "5", "-j",     p2p_fallback, NULL};
    int status;
    cJSON *o = run_sim(v, argv, &status);
    T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status 0 (%d)", status);
    /* The goodbyes travel through the broker, the summary does not: the
     * simulator may have exited before the last goodbye reaches us. */
    T_CHECK(v->all_goodbye || serve(v, -1, &v->all_goodbye, 5000),
            "every device's goodbye within 5 s of its exit");
    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(o, "devices");
    const cJSON *tot = cJSON_GetObjectItemCaseSensitive(o, "total");
    T_REQUIRE(cJSON_GetArraySize(devs) == 2 && v->nsess == 2, "two devices, two sessions");
    for (int i = 0; i < 2; i++) {
        check_device(cJSON_GetArrayItem(devs, i), i);
        check_uplink(find(v, i ? "dev-2" : "dev-1"));
        check_wav(out, v, i);
    }
    T_CHECK(num(tot, "ok") == 2 && num(tot, "failed") == 0 && num(tot, "sent") == 2 * UP_FRAMES &&
                num(tot, "received") == 2 * DOWN_FRAMES - 1 && num(tot, "lost") == 1,
            "totals");
    cJSON_Delete(o);
}

/* A hello nobody answers, and a broken reply: failed, exit status 1. */
static void test_failures(struct srv *v, const char *sim, int port)
{
    char ports[16];
    snprintf(ports, sizeof(ports), "%d", port);
    static const struct {
        const char *prefix, *topic, *reason;
        bool subscribe;
    } cases[] = {
        {"ghost-", "nobody/{device}/up", "no hello reply within 1 s", true},
        {"bad-", "xiaozhi/{device}/up", "bad hello reply: udp.key", false},
    };
    for (size_t i = 0; i < 2; i++) {
        char *argv[] = {(char *)sim,
                        "-p",
                        ports,
                        "-i",
                        (char *)cases[i].prefix,
                        "-t",
                        (char *)cases[i].topic,
                        "--hello-timeout",
                        "1",
                        "-j",
                        cases[i].subscribe ? "--subscribe" : p2p_fallback,
                        NULL};
        int status;
        cJSON *o = run_sim(v, argv, &status);
        const cJSON *dev = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "devices"), 0);
        T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1, "%s: exit status 1 (%d)",
                cases[i].prefix, status);
        T_CHECK(!strcmp(str(dev, "result"), "failed") &&
                    strstr(str(dev, "reason"), cases[i].reason),
                "%s failed: %s", cases[i].prefix, str(dev, "reason"));
        cJSON_Delete(o);
    }
}

int main(int argc, char **argv)
{
    T_REQUIRE(argc == 2 || argc == 3, "usage: test_device MQFORK-DEVICE [MQFORK_P2P.SO]");
    struct broker b;
    static struct srv v;
    char dir[] = "/tmp/test_device.XXXXXX", plugin[BROKER_PATH_MAX + 16] = "";
    struct broker_opts o = {.extra_conf = plugin};
    T_REQUIRE(mkdtemp(dir), "temp dir");
    if (argc == 3) {
        snprintf(plugin, sizeof(plugin), "plugin %s\n", argv[2]);
    } else {
        p2p_fallback = "--subscribe";
        fprintf(stderr, "test_device: no mqfork_p2p.so: devices use --subscribe\n");
    }
    mosquitto_lib_init();
    T_REQUIRE(broker_start(&b, &o) == 0, "private mosquitto");
    make_downlink(&v);
    srv_start(&v, b.port);
    test_session(&v, argv[1], b.port, dir);
    test_failures(&v, argv[1], b.port);
    mosquitto_destroy(v.m);
    broker_stop(&b);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    T_CHECK(system(cmd) == 0, "remove %s", dir);
    mosquitto_lib_cleanup();
    T_DONE();
}
