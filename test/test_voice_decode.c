/* test_voice_decode.c - what the voice gateway decodes in its pool is, bit
 * for bit, what an independent libopus decoder makes of the same packets,
 * with packets dropped on purpose concealed the same way.
 *
 * This test is the device: it says hello through a real mosquitto to a real
 * mqforkd (uplink: decode), encrypts 60 ms Opus frames of a known signal
 * with the session's key and sends them over UDP, leaving gaps in the
 * sequence, then says goodbye; it collects voice/{device}/pcm. The
 * reference decodes the packets it sent, concealing min(gap, 4) frames of
 * the last packet's length before each one that follows a gap. Then the
 * daemon's counters: lost, concealed, decoded.
 *
 * Then the same packets from a new session in one burst while the workers
 * are stopped (SIGSTOP): the frames that come while the session's first job
 * is in the pool go together in a few jobs (voice.decode_jobs), and the PCM
 * is still bit for bit the reference's, concealment included.
 *
 * Then a reload to limits.max_pending 1 and a burst the pool must refuse
 * most of: each refused packet is silence of its length in the PCM (no
 * hole), and counted as decode_failed.
 *
 *   test_voice_decode MQFORKD MQFORKSTAT */
#include <arpa/inet.h>
#include <math.h>
#include <mosquitto.h>
#include <opus/opus.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "proto/voice_json.h"
#include "proto/voice_udp.h"
#include "test/broker.h"
#include "test/run.h"
#include "test/t.h"

#define FRAMES  48
#define FRAME   960 /* 60 ms at 16 kHz */
#define CONCEAL 4   /* what the gateway asks opus.decode to conceal at most */
#define DEVICE  "dev-bits"

/* Sequence numbers never sent: gaps of 1, 3 and 6 (more than CONCEAL). */
static bool dropped(uint32_t seq)
{
    return seq == 9 || (seq >= 17 && seq <= 19) || (seq >= 30 && seq <= 35);
}

struct client {
    pthread_mutex_t mu;
    char hello[4096];
    size_t hello_len;
    uint8_t *pcm;
    size_t pcm_len, pcm_cap;
};

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    struct client *c = obj;
    pthread_mutex_lock(&c->mu);
    if (strstr(msg->topic, "devices/p2p/") && !c->hello_len &&
        (size_t)msg->payloadlen < sizeof(c->hello)) {
        memcpy(c->hello, msg->payload, (size_t)msg->payloadlen);
        c->hello_len = (size_t)msg->payloadlen;
    } else if (strstr(msg->topic, "/pcm")) {
        if (c->pcm_len + (size_t)msg->payloadlen > c->pcm_cap) {
            c->pcm_cap = 2 * (c->pcm_len + (size_t)msg->payloadlen);
            c->pcm = realloc(c->pcm, c->pcm_cap);
        }
        memcpy(c->pcm + c->pcm_len, msg->payload, (size_t)msg->payloadlen);
        c->pcm_len += (size_t)msg->payloadlen;
    }
    pthread_mutex_unlock(&c->mu);
}

static size_t locked_len(struct client *c, bool hello)
{
    pthread_mutex_lock(&c->mu);
    size_t n = hello ? c->hello_len : c->pcm_len;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static bool wait_len(struct client *c, bool hello, size_t want, int limit_ms)
{
    for (int t = 0; t < limit_ms / 10; t++) {
        if (locked_len(c, hello) >= want)
            return true;
        usleep(10000);
    }
    return false;
}

/* The packets: two tones under a swell, as speech-like as a test needs. */
static int encode_all(uint8_t pkt[FRAMES + 1][1500], int len[FRAMES + 1])
{
    int err;
    OpusEncoder *e = opus_encoder_create(16000, 1, OPUS_APPLICATION_VOIP, &err);
    T_REQUIRE(e, "encoder");
    for (int f = 1; f <= FRAMES; f++) {
        int16_t pcm[FRAME];
        for (int i = 0; i < FRAME; i++) {
            double t = ((f - 1) * FRAME + i) / 16000.0;
            pcm[i] =
                (int16_t)lrint(9000 * (0.6 + 0.4 * sin(2 * M_PI * 3 * t)) *
                               (0.6 * sin(2 * M_PI * 310 * t) + 0.4 * sin(2 * M_PI * 970 * t)));
        }
        len[f] = opus_encode(e, pcm, FRAME, pkt[f], 1500);
        T_REQUIRE(len[f] > 0, "encode frame %d", f);
    }
    opus_encoder_destroy(e);
    return 0;
}

/* What an independent decoder makes of the packets sent. */
static size_t reference(uint8_t pkt[FRAMES + 1][1500], const int len[FRAMES + 1], int16_t *out,
                        int *concealed)
{
    int err;
    size_t at = 0;
    uint32_t last = 0;
    OpusDecoder *d = opus_decoder_create(16000, 1, &err);
    for (uint32_t seq = 1; seq <= FRAMES; seq++) {
        if (dropped(seq))
            continue;
        uint32_t gap = seq - last - 1;
        opus_int32 frame = 0;
        opus_decoder_ctl(d, OPUS_GET_LAST_PACKET_DURATION(&frame));
        for (uint32_t i = 0; i < gap && i < CONCEAL && frame > 0; i++) {
            at += (size_t)opus_decode(d, NULL, 0, out + at, frame, 0);
            (*concealed)++;
        }
        at += (size_t)opus_decode(d, pkt[seq], len[seq], out + at, 5760, 0);
        last = seq;
    }
    opus_decoder_destroy(d);
    return at;
}

/* PKT (LEN bytes) as the session's datagram SEQ. */
static void send_one(int fd, int port, struct voice_server_hello *h, struct voice_cipher *c,
                     const uint8_t *pkt, int len, uint32_t seq)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    uint8_t d[16 + 1500];
    voice_hdr_build(d, h->nonce, (uint16_t)len, (seq - 1) * 60, seq);
    voice_cipher_apply(c, d, pkt, d + 16, (size_t)len);
    T_CHECK(sendto(fd, d, 16 + (size_t)len, 0, (struct sockaddr *)&sa, sizeof(sa)) > 0, "send");
}

static void send_all(int fd, int port, struct voice_server_hello *h, uint8_t pkt[FRAMES + 1][1500],
                     const int len[FRAMES + 1])
{
    struct voice_cipher c;
    T_REQUIRE(voice_cipher_init(&c, h->key) == 0, "cipher");
    for (uint32_t seq = 1; seq <= FRAMES; seq++) {
        if (dropped(seq))
            continue;
        send_one(fd, port, h, &c, pkt[seq], len[seq], seq);
        usleep(2000); /* a loopback burst must not outrun the socket buffer */
    }
    voice_cipher_free(&c);
}

/* A UDP port nobody has now. */
static int free_udp_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    T_REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
                  getsockname(fd, (struct sockaddr *)&sa, &sl) == 0,
              "a free port");
    close(fd);
    return ntohs(sa.sin_port);
}

static void start_daemon(struct proc *p, const char *mqforkd, const char *dir, const char *instance,
                         int broker_port, int udp_port)
{
    char conf[256], cmd[600];
    snprintf(conf, sizeof(conf), "%s/d.yaml", dir);
    FILE *f = fopen(conf, "w");
    T_REQUIRE(f, "config");
    fprintf(f,
            "instance: %s\nbroker: {host: 127.0.0.1, port: %d}\nworkers: {min: 2, max: 2}\n"
            "voice:\n  port: %d\n  uplink: [decode]\n  pcm_batch_ms: 60\n",
            instance, broker_port, udp_port);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "exec %s -c %s 2>&1", mqforkd, conf);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    T_REQUIRE(proc_spawn(p, argv, true) == 0, "daemon started");
    char line[1024];
    bool up = false;
    for (int i = 0; i < 200 && !up; i++)
        up =
            proc_line(p, line, sizeof(line), 100) >= 0 && strstr(line, "subscribed to voice/+/ctl");
    T_REQUIRE(up, "the daemon subscribes");
}

/* A hello from the device: its reply, parsed into *H. */
static void say_hello(struct mosquitto *m, struct client *c, struct voice_server_hello *h)
{
    const char *hello = "{\"type\":\"hello\",\"version\":3,\"transport\":\"udp\",\"audio_params\":"
                        "{\"format\":\"opus\",\"sample_rate\":16000,\"channels\":1,"
                        "\"frame_duration\":60}}";
    pthread_mutex_lock(&c->mu);
    c->hello_len = 0;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < 20 && !locked_len(c, true); i++) {
        mosquitto_publish(m, NULL, "xiaozhi/" DEVICE "/up", (int)strlen(hello), hello, 0, false);
        wait_len(c, true, 1, 500);
    }
    char why[256] = "none";
    T_REQUIRE(locked_len(c, true) &&
                  voice_server_hello_parse(c->hello, c->hello_len, h, why, sizeof(why)) == 0,
              "a hello reply: %s", why);
}

/* SIG to every worker of the daemon PID (its children). */
static void signal_workers(pid_t pid, int sig)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
    FILE *f = fopen(path, "r");
    int child, n = 0;
    while (f && fscanf(f, "%d", &child) == 1)
        n += kill(child, sig) == 0;
    if (f)
        fclose(f);
    T_REQUIRE(n > 0, "signal %d to the workers of pid %d", sig, (int)pid);
}

/* The packets again from a new session, all at once while the workers are
 * stopped: the first frame's job waits in a worker's ring, and the others
 * collect behind it, a job for every VOICE_DECODE_BATCH (16) entries of
 * packets and losses. The PCM is the reference's all the same. */
static void check_batched(struct proc *daemon, struct mosquitto *m, struct client *cl,
                          struct voice_server_hello *h, int fd, int port,
                          uint8_t pkt[FRAMES + 1][1500], const int len[FRAMES + 1],
                          const int16_t *want, size_t samples, int concealed,
                          const char *mqforkstat, const char *instance)
{
    say_hello(m, cl, h);
    long in0 = run_figure(mqforkstat, instance, "voice.datagrams_in");
    long jobs0 = run_figure(mqforkstat, instance, "voice.decode_jobs");
    long dec0 = run_figure(mqforkstat, instance, "voice.decoded");
    long fail0 = run_figure(mqforkstat, instance, "voice.decode_failed");
    long conc0 = run_figure(mqforkstat, instance, "voice.concealed");
    size_t before = locked_len(cl, false);
    struct voice_cipher c;
    T_REQUIRE(voice_cipher_init(&c, h->key) == 0, "cipher");
    signal_workers(daemon->pid, SIGSTOP);
    for (uint32_t seq = 1; seq <= FRAMES; seq++)
        if (!dropped(seq))
            send_one(fd, port, h, &c, pkt[seq], len[seq], seq);
    /* a job's attempt may run 1 s: they go on well before that */
    for (int t = 0;
         t < 40 && run_figure(mqforkstat, instance, "voice.datagrams_in") < in0 + FRAMES - 10; t++)
        usleep(5000);
    signal_workers(daemon->pid, SIGCONT);
    voice_cipher_free(&c);
    T_CHECK(wait_len(cl, false, before + samples * 2, 15000), "all PCM of the burst: %zu of %zu",
            locked_len(cl, false) - before, samples * 2);
    pthread_mutex_lock(&cl->mu);
    T_CHECK(cl->pcm_len == before + samples * 2 && !memcmp(cl->pcm + before, want, samples * 2),
            "batched, the PCM equals an independent decode (%zu vs %zu bytes)",
            cl->pcm_len - before, samples * 2);
    pthread_mutex_unlock(&cl->mu);
    long jobs = run_figure(mqforkstat, instance, "voice.decode_jobs") - jobs0;
    long decoded = run_figure(mqforkstat, instance, "voice.decoded") - dec0;
    T_CHECK(jobs >= 2 && jobs <= 6, "%d frames while the pool was stopped went in %ld jobs",
            FRAMES - 10, jobs);
    T_CHECK(decoded == FRAMES - 10 &&
                run_figure(mqforkstat, instance, "voice.decode_failed") == fail0,
            "every frame of the burst decoded: %ld of %d", decoded, FRAMES - 10);
    T_CHECK(run_figure(mqforkstat, instance, "voice.concealed") - conc0 == concealed,
            "batched, as many concealed: %ld, want %d",
            run_figure(mqforkstat, instance, "voice.concealed") - conc0, concealed);
}

/* Every packet again, as sequence FRAMES + 1 on, in one burst while the
 * workers are stopped, which the daemon (limits.max_pending 1 by now) must
 * refuse part of: the first job waits in a worker's ring, one full batch
 * behind it is the one pending, and the next are refused. Then one more
 * once the pool is idle: a refused packet becomes silence, so the PCM
 * grows by one frame per packet sent and none is missing. */
static void check_refused(struct proc *daemon, int fd, int port, struct voice_server_hello *h,
                          struct client *cl, uint8_t pkt[FRAMES + 1][1500],
                          const int len[FRAMES + 1], const char *mqforkstat, const char *instance)
{
    struct voice_cipher c;
    T_REQUIRE(voice_cipher_init(&c, h->key) == 0, "cipher");
    size_t before = locked_len(cl, false);
    long failed0 = run_figure(mqforkstat, instance, "voice.decode_failed");
    long answered0 = run_figure(mqforkstat, instance, "voice.decoded") + failed0;
    long in0 = run_figure(mqforkstat, instance, "voice.datagrams_in");
    signal_workers(daemon->pid, SIGSTOP);
    for (uint32_t f = 1; f <= FRAMES; f++)
        send_one(fd, port, h, &c, pkt[f], len[f], FRAMES + f);
    for (int t = 0; t < 40 && run_figure(mqforkstat, instance, "voice.datagrams_in") < in0 + FRAMES;
         t++)
        usleep(5000);
    signal_workers(daemon->pid, SIGCONT);
    bool idle = false; /* every packet of the burst decoded or refused */
    for (int t = 0; t < 300 && !idle; t++, usleep(50000))
        idle = run_figure(mqforkstat, instance, "voice.decoded") +
                   run_figure(mqforkstat, instance, "voice.decode_failed") >=
               answered0 + FRAMES;
    T_CHECK(idle, "the burst is answered");
    send_one(fd, port, h, &c, pkt[1], len[1], 2 * FRAMES + 1);
    voice_cipher_free(&c);
    size_t want = before + (size_t)(FRAMES + 1) * FRAME * 2;
    T_CHECK(wait_len(cl, false, want, 15000), "refused packets are silence: %zu of %zu bytes",
            locked_len(cl, false), want);
    long failed = run_figure(mqforkstat, instance, "voice.decode_failed") - failed0;
    T_CHECK(failed > 0 && failed < FRAMES, "a burst with max_pending 1 is partly refused: %ld",
            failed);
}

/* limits.max_pending to 1 by reload (SIGHUP), once the daemon says so. */
static void reload_max_pending_1(struct proc *p, const char *dir)
{
    char conf[256], line[1024];
    snprintf(conf, sizeof(conf), "%s/d.yaml", dir);
    FILE *f = fopen(conf, "a");
    T_REQUIRE(f && fprintf(f, "limits: {max_pending: 1}\n") > 0 && fclose(f) == 0, "config");
    T_REQUIRE(kill(p->pid, SIGHUP) == 0, "SIGHUP");
    bool done = false;
    for (int i = 0; i < 300 && !done; i++)
        done = proc_line(p, line, sizeof(line), 100) >= 0 && strstr(line, "reload: routes");
    T_REQUIRE(done, "the daemon reloads");
}

int main(int argc, char **argv)
{
    T_REQUIRE(argc == 3, "usage: test_voice_decode MQFORKD MQFORKSTAT");
    static uint8_t pkt[FRAMES + 1][1500];
    static int len[FRAMES + 1];
    static int16_t want[(FRAMES + CONCEAL * 3) * 5760];
    static struct client c = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct broker b;
    struct proc daemon;
    char dir[] = "/tmp/test_voice_decode.XXXXXX", instance[64];
    T_REQUIRE(mkdtemp(dir), "temp dir");
    snprintf(instance, sizeof(instance), "vdec-%d", (int)getpid());
    mosquitto_lib_init();
    T_REQUIRE(broker_start(&b, NULL) == 0, "private mosquitto");
    int udp_port = free_udp_port();
    start_daemon(&daemon, argv[1], dir, instance, b.port, udp_port);

    struct mosquitto *m = mosquitto_new(DEVICE, true, &c);
    mosquitto_message_callback_set(m, on_message);
    T_REQUIRE(mosquitto_connect(m, "127.0.0.1", b.port, 30) == 0 &&
                  mosquitto_subscribe(m, NULL, "devices/p2p/" DEVICE, 0) == 0 &&
                  mosquitto_subscribe(m, NULL, "voice/" DEVICE "/pcm", 0) == 0 &&
                  mosquitto_loop_start(m) == 0,
              "the device connects");
    usleep(200000); /* SUBACK: the hello is sent again below until answered */
    struct voice_server_hello h;
    say_hello(m, &c, &h);

    encode_all(pkt, len);
    int concealed = 0;
    size_t samples = reference(pkt, len, want, &concealed);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    send_all(fd, udp_port, &h, pkt, len);
    /* a batch of one frame: every packet's PCM (and what it conceals) is
     * published as it is decoded, none waits for the goodbye */
    T_CHECK(wait_len(&c, false, samples * 2, 10000), "all PCM arrives: %zu of %zu bytes",
            locked_len(&c, false), samples * 2);
    pthread_mutex_lock(&c.mu);
    T_CHECK(c.pcm_len == samples * 2 && !memcmp(c.pcm, want, samples * 2),
            "the pool's PCM equals an independent decode with the same concealment (%zu vs %zu "
            "bytes)",
            c.pcm_len, samples * 2);
    pthread_mutex_unlock(&c.mu);
    T_CHECK(run_figure(argv[2], instance, "voice.lost") == 10, "voice.lost %ld, want 10",
            run_figure(argv[2], instance, "voice.lost"));
    T_CHECK(run_figure(argv[2], instance, "voice.concealed") == concealed,
            "voice.concealed %ld, want %d", run_figure(argv[2], instance, "voice.concealed"),
            concealed);
    T_CHECK(run_figure(argv[2], instance, "voice.decoded") == FRAMES - 10, "voice.decoded %ld",
            run_figure(argv[2], instance, "voice.decoded"));

    check_batched(&daemon, m, &c, &h, fd, udp_port, pkt, len, want, samples, concealed, argv[2],
                  instance);
    reload_max_pending_1(&daemon, dir);
    check_refused(&daemon, fd, udp_port, &h, &c, pkt, len, argv[2], instance);

    close(fd);
    mosquitto_loop_stop(m, true);
    mosquitto_destroy(m);
    proc_stop(&daemon, SIGTERM);
    broker_stop(&b);
    mosquitto_lib_cleanup();
    free(c.pcm);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    T_CHECK(system(cmd) == 0, "remove %s", dir);
    T_DONE();
}
