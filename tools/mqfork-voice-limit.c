/* mqfork-voice-limit - the limits tools/bench-voice measures mqforkd's voice
 * gateway against, and the load it drives it with. One small program, a
 * few modes, each doing the least that the job takes:
 *
 *   decode  one process decoding the devices' Opus packets (the recording of
 *           mqfork-device -a, encoded with the firmware's settings) in a loop
 *           with one libopus decoder: frames/s, as one JSON line
 *   relay   the bare relay: a libmosquitto client and a UDP socket in one
 *           poll loop. Each datagram is read (recvmmsg, 32 at a time),
 *           parsed, tied to its session by ssrc, held to a rising sequence,
 *           decrypted (AES-128-CTR, the session's key) and published at QoS 0
 *           to its device's topic: what the daemon does for uplink "relay",
 *           without the daemon. Its sessions are made up from their index
 *           (bench_session), so it needs no hello
 *   blast   the devices and the backend of the relay measurement, closed
 *           loop: N sessions (by hello to mqforkd, or made up for the bare
 *           relay), datagrams sent round-robin over them while fewer than
 *           WINDOW are unanswered, each relayed message received on the
 *           backend's filter answering one and checked against the packet
 *           sent; relayed/s over the run, as one JSON line
 *   hello   N hellos from N device ids (one MQTT connection), the sessions
 *           then left idle: the memory measurement
 *   sink    a backend that counts the messages on a filter (decoded PCM)
 *   answer  a backend that answers each listen stop with tts start, the PCM
 *           of -a FILE on say_pcm and tts stop (mqfork-voice-limit-answer.c)
 *   hist    a histogram of block "voice" bucket by bucket (percentiles of a
 *           window are the difference of two)
 *
 * Usage: mqfork-voice-limit MODE [options]; -h for the options. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <netdb.h>
#include <opus/opus.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proto/voice_json.h"
#include "proto/voice_udp.h"
#include "shm/clock.h"
#include "shm/segment.h"
#include "shm/statread.h"
#include "shm/stats.h"
#include "tools/mqfork-device.h"
#include "tools/mqfork-voice-limit.h"
#include "tools/numarg.h"
#include "tools/sigfd.h"

#define BATCH     32
#define DGRAM_MAX 2048

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* ---- decode: the decoding limit -------------------------------------------- */

static int run_decode(const struct lopts *o)
{
    struct recording r;
    if (recording_load(&r, o->audio, 0) < 0)
        return 1;
    int err;
    OpusDecoder *dec = opus_decoder_create(DEV_RATE, 1, &err);
    if (!dec)
        die("opus_decoder_create");
    int16_t pcm[DEV_FRAME_SAMPLES];
    uint64_t n = 0, errors = 0, t0 = mono_ns(), t;
    double c0 = cpu_s();
    do {
        for (int i = 0; i < 50; i++, n++) {
            size_t k = n % r.frames;
            errors += opus_decode(dec, r.data + r.off[k], r.len[k], pcm, DEV_FRAME_SAMPLES, 0) < 0;
        }
    } while ((t = mono_ns()) - t0 < (uint64_t)(o->seconds * 1e9));
    double secs = (double)(t - t0) / 1e9, cpu = cpu_s() - c0;
    printf("{\"frames\":%" PRIu64 ",\"seconds\":%.3f,\"frames_per_s\":%.0f,"
           "\"frames_per_cpu_s\":%.0f,\"errors\":%" PRIu64 ",\"packets\":%zu}\n",
           n, secs, (double)n / secs, cpu > 0 ? (double)n / cpu : 0, errors, r.frames);
    opus_decoder_destroy(dec);
    recording_free(&r);
    return errors ? 1 : 0;
}

/* ---- relay: the bare relay -------------------------------------------------- */

static int udp_socket(const char *host, long port, bool bind_it, struct sockaddr_storage *addr,
                      socklen_t *alen)
{
    char p[16];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM}, *ai;
    snprintf(p, sizeof(p), "%ld", port);
    if (getaddrinfo(host, p, &hints, &ai) != 0)
        die("cannot resolve the UDP address");
    int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int buf = 4 << 20; /* as the daemon's */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    if (fd < 0 || (bind_it && bind(fd, ai->ai_addr, ai->ai_addrlen) < 0))
        die("cannot bind the UDP port");
    memcpy(addr, ai->ai_addr, ai->ai_addrlen);
    *alen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return fd;
}

static int run_relay(const struct lopts *o)
{
    struct session *ss = calloc((size_t)o->sessions, sizeof(*ss));
    if (!ss)
        die("out of memory");
    for (long i = 0; i < o->sessions; i++) {
        bench_session(&ss[i], i);
        snprintf(ss[i].id, sizeof(ss[i].id), "%s%ld", o->prefix, i + 1);
        topic_of(ss[i].topic, sizeof(ss[i].topic), o->topic, ss[i].id);
    }
    struct sockaddr_storage addr;
    socklen_t alen;
    int fd = udp_socket(o->host, o->udp_port, true, &addr, &alen);
    sigfd = signals_fd();
    struct mq q = {0};
    mq_open(&q, o, NULL);
    puts("ready");
    fflush(stdout);
    static uint8_t buf[BATCH][DGRAM_MAX];
    struct iovec iov[BATCH];
    struct mmsghdr msg[BATCH];
    uint64_t in = 0, relayed = 0, dropped = 0;
    while (!q.lost && !stopping) {
        if (!(mq_step(&q, 100, fd) & POLLIN))
            continue;
        int n;
        do {
            for (int i = 0; i < BATCH; i++) {
                iov[i] = (struct iovec){buf[i], DGRAM_MAX};
                msg[i].msg_hdr = (struct msghdr){.msg_iov = &iov[i], .msg_iovlen = 1};
            }
            n = recvmmsg(fd, msg, BATCH, MSG_DONTWAIT, NULL);
            for (int i = 0; i < n; i++) {
                struct voice_hdr h;
                uint8_t *d = buf[i];
                struct session *s;
                in++;
                /* ssrc i + 1 is session i: the bare relay's whole table */
                if (voice_hdr_parse(d, msg[i].msg_len, &h) != VOICE_OK || h.ssrc < 1 ||
                    h.ssrc > (uint32_t)o->sessions || h.sequence <= (s = &ss[h.ssrc - 1])->seq ||
                    voice_cipher_apply(&s->cipher, d, d + VOICE_HDR_LEN, d + VOICE_HDR_LEN,
                                       h.payload_len) < 0) {
                    dropped++;
                    continue;
                }
                s->seq = h.sequence;
                if (mosquitto_publish(q.m, NULL, s->topic, h.payload_len, d + VOICE_HDR_LEN, 0,
                                      false) == MOSQ_ERR_SUCCESS)
                    relayed++;
            }
        } while (n == BATCH);
    }
    fprintf(stderr,
            "mqfork-voice-limit relay: %" PRIu64 " datagrams in, %" PRIu64 " relayed, %" PRIu64
            " dropped\n",
            in, relayed, dropped);
    int rc = q.lost ? 1 : 0; /* before the disconnect, which calls on_disconnect */
    mosquitto_disconnect(q.m);
    mosquitto_destroy(q.m);
    return rc;
}

/* ---- hello: sessions by hello ------------------------------------------------ */

static const char hello_json[] =
    "{\"type\":\"hello\",\"version\":3,\"transport\":\"udp\",\"features\":{\"mcp\":true},"
    "\"audio_params\":{\"format\":\"opus\",\"sample_rate\":16000,\"channels\":1,"
    "\"frame_duration\":60}}";

struct hellos {
    const struct lopts *o;
    struct session *ss;
    long replies, bad;
};

static struct hellos *hello_app;

static void on_reply(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    struct hellos *h = hello_app;
    long i = session_of(msg->topic, h->o->prefix, h->o->sessions);
    struct voice_server_hello r;
    char why[200];
    if (i < 0 || h->ss[i].ready)
        return;
    if (voice_server_hello_parse(msg->payload, (size_t)msg->payloadlen, &r, why, sizeof(why)) < 0 ||
        voice_cipher_init(&h->ss[i].cipher, r.key) < 0) {
        h->bad++;
        return;
    }
    memcpy(h->ss[i].nonce, r.nonce, sizeof(r.nonce));
    h->ss[i].ready = true;
    h->replies++;
}

/* Hello from each of the N device ids; their replies read on
 * devices/p2p/+ until all came or 20 s passed. */
static void say_hello(struct mq *q, struct hellos *h)
{
    const struct lopts *o = h->o;
    char topic[DEV_TOPIC_MAX];
    hello_app = h;
    mosquitto_message_callback_set(q->m, on_reply);
    for (long i = 0; i < o->sessions && !q->lost; i++) {
        snprintf(h->ss[i].id, sizeof(h->ss[i].id), "%s%ld", o->prefix, i + 1);
        topic_of(topic, sizeof(topic), "xiaozhi/{device}/up", h->ss[i].id);
        mosquitto_publish(q->m, NULL, topic, (int)strlen(hello_json), hello_json, 0, false);
        if (i % 256 == 255)
            mq_step(q, 0, -1); /* keep the socket moving, and read replies */
    }
    uint64_t until = mono_ns() + 20 * NS;
    while (h->replies + h->bad < o->sessions && !q->lost && mono_ns() < until)
        mq_step(q, 10, -1);
}

static int run_hello(const struct lopts *o)
{
    struct hellos h = {.o = o, .ss = calloc((size_t)o->sessions, sizeof(struct session))};
    struct mq q = {0};
    if (!h.ss)
        die("out of memory");
    mq_open(&q, o, "devices/p2p/+");
    uint64_t t0 = mono_ns();
    say_hello(&q, &h);
    printf("{\"hellos\":%ld,\"replies\":%ld,\"bad\":%ld,\"seconds\":%.3f}\n", o->sessions,
           h.replies, h.bad, (double)(mono_ns() - t0) / 1e9);
    mosquitto_disconnect(q.m);
    mosquitto_destroy(q.m);
    return h.replies == o->sessions ? 0 : 1;
}

/* ---- blast: devices and backend of the relay measurement ------------------- */

struct blast {
    const struct lopts *o;
    struct session *ss;
    struct recording rec;
    uint64_t sent, relayed, corrupt, unknown, counted, outstanding, stalls;
    uint64_t t_start, t_end, last_rx;
};

static struct blast *blast_app;

/* Packet K of session I: sessions start at different places. */
static size_t packet_of(const struct blast *b, long i, uint32_t k)
{
    return ((size_t)i * 13 + k) % b->rec.frames;
}

static void on_relayed(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    struct blast *b = blast_app;
    uint64_t now = mono_ns();
    long i = session_of(msg->topic, b->o->prefix, b->o->sessions);
    if (i < 0) {
        b->unknown++;
        return;
    }
    struct session *s = &b->ss[i];
    size_t k = packet_of(b, i, s->checked++);
    if ((size_t)msg->payloadlen != b->rec.len[k] ||
        memcmp(msg->payload, b->rec.data + b->rec.off[k], b->rec.len[k]) != 0)
        b->corrupt++; /* or the one expected was lost: those after it look wrong too */
    b->relayed++;
    if (b->outstanding)
        b->outstanding--;
    b->last_rx = now;
    if (now >= b->t_start && now < b->t_end)
        b->counted++;
}

/* The sessions to blast: the relay's made-up ones (--bare), or each opened
 * by a hello; false when not every hello was answered. */
static bool blast_sessions(struct blast *b, struct mq *q)
{
    const struct lopts *o = b->o;
    if (o->bare) {
        for (long i = 0; i < o->sessions; i++)
            bench_session(&b->ss[i], i);
        return true;
    }
    struct hellos h = {.o = o, .ss = b->ss};
    mq_subscribe(q, "devices/p2p/+");
    say_hello(q, &h);
    if (h.replies < o->sessions) {
        fprintf(stderr, "mqfork-voice-limit: %ld of %ld hellos answered\n", h.replies, o->sessions);
        return false;
    }
    return true;
}

/* Up to BATCH datagrams while the window has room, each the next packet of
 * the next session in turn, into MSG (and IOV) for TO; how many. */
static int blast_batch(struct blast *b, long *turn, struct mmsghdr *msg, struct iovec *iov,
                       struct sockaddr_storage *to, socklen_t tolen)
{
    static uint8_t buf[BATCH][VOICE_HDR_LEN + 1500];
    int n = 0;
    while (b->outstanding + (uint64_t)n < (uint64_t)b->o->window && n < BATCH) {
        long i = (*turn)++ % b->o->sessions;
        struct session *s = &b->ss[i];
        size_t k = packet_of(b, i, s->seq);
        uint16_t len = b->rec.len[k];
        s->seq++;
        voice_hdr_build(buf[n], s->nonce, len, (s->seq - 1) * DEV_FRAME_MS, s->seq);
        voice_cipher_apply(&s->cipher, buf[n], b->rec.data + b->rec.off[k], buf[n] + VOICE_HDR_LEN,
                           len);
        iov[n] = (struct iovec){buf[n], VOICE_HDR_LEN + (size_t)len};
        msg[n].msg_hdr = (struct msghdr){
            .msg_name = to, .msg_namelen = tolen, .msg_iov = &iov[n], .msg_iovlen = 1};
        n++;
    }
    return n;
}

static void send_batch(int fd, struct mmsghdr *msg, int n)
{
    for (int done = 0; done < n;) {
        int r = sendmmsg(fd, msg + done, (unsigned)(n - done), 0);
        if (r <= 0)
            die("sendmmsg");
        done += r;
    }
}

static void blast_report(const struct blast *b, double hello_s)
{
    const struct lopts *o = b->o;
    double secs = (double)(b->t_end - b->t_start) / 1e9;
    printf("{\"sessions\":%ld,\"window\":%ld,\"seconds\":%.3f,\"sent\":%" PRIu64
           ",\"relayed\":%" PRIu64 ",\"lost\":%" PRIu64
           ",\"relayed_per_s\":%.0f,\"corrupt\":%" PRIu64 ",\"unknown\":%" PRIu64
           ",\"stalls\":%" PRIu64 ",\"hello_s\":%.3f}\n",
           o->sessions, o->window, secs, b->sent, b->relayed,
           b->sent > b->relayed ? b->sent - b->relayed : 0, (double)b->counted / secs, b->corrupt,
           b->unknown, b->stalls, hello_s);
}

static int run_blast(const struct lopts *o)
{
    struct blast b = {.o = o, .ss = calloc((size_t)o->sessions, sizeof(struct session))};
    struct mq q = {0};
    if (!b.ss)
        die("out of memory");
    if (recording_load(&b.rec, o->audio, 0) < 0)
        return 1;
    mq_open(&q, o, o->filter);
    uint64_t t_hello = mono_ns();
    if (!blast_sessions(&b, &q))
        return 1;
    double hello_s = (double)(mono_ns() - t_hello) / 1e9;
    blast_app = &b;
    mosquitto_message_callback_set(q.m, on_relayed);
    struct sockaddr_storage to;
    socklen_t tolen;
    int fd = udp_socket(o->host, o->udp_port, false, &to, &tolen);
    struct iovec iov[BATCH];
    struct mmsghdr msg[BATCH];
    long turn = 0;
    uint64_t t0 = mono_ns(), stop = t0 + (uint64_t)(o->seconds * 1e9), now;
    /* the first half second is warm-up, not counted */
    b.t_start = t0 + NS / 2;
    b.t_end = stop;
    b.last_rx = t0;
    while ((now = mono_ns()) < stop && !q.lost) {
        int n = blast_batch(&b, &turn, msg, iov, &to, tolen);
        send_batch(fd, msg, n);
        b.sent += (uint64_t)n;
        b.outstanding += (uint64_t)n;
        /* Lost datagrams would close the window for good: after 200 ms
         * without a relayed one, it opens again (the loss shows as sent -
         * relayed at the end). */
        if (b.outstanding && now - b.last_rx > NS / 5) {
            b.outstanding = 0;
            b.last_rx = now;
            b.stalls++;
        }
        mq_step(&q, b.outstanding >= (uint64_t)o->window ? 5 : 0, -1);
    }
    /* What is still on its way. */
    uint64_t until = mono_ns() + NS;
    while (b.relayed < b.sent && !q.lost && mono_ns() < until)
        mq_step(&q, 10, -1);
    blast_report(&b, hello_s);
    int rc = q.lost ? 1 : 0;
    mosquitto_disconnect(q.m);
    mosquitto_destroy(q.m);
    recording_free(&b.rec);
    return rc;
}

/* ---- sink: the backend of decoded PCM -------------------------------------- */

static uint64_t sink_msgs, sink_bytes;

static void on_sink(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    sink_msgs++;
    sink_bytes += (uint64_t)msg->payloadlen;
}

/* Counts what comes on FILTER until SIGTERM or SIGINT. */
static int run_sink(const struct lopts *o)
{
    struct mq q = {0};
    sigfd = signals_fd();
    mq_open(&q, o, o->filter);
    mosquitto_message_callback_set(q.m, on_sink);
    puts("ready");
    fflush(stdout);
    while (!q.lost && !stopping)
        mq_step(&q, 100, -1);
    printf("{\"messages\":%" PRIu64 ",\"bytes\":%" PRIu64 "}\n", sink_msgs, sink_bytes);
    int rc = q.lost ? 1 : 0;
    mosquitto_disconnect(q.m);
    mosquitto_destroy(q.m);
    return rc;
}

/* ---- hist: a histogram's buckets ------------------------------------------- */

/* The histogram FIELD of block "voice" of INSTANCE, bucket by bucket, so
 * that two snapshots give the percentiles of what came between them (the
 * daemon's own only cover its whole life): "count=N UPPER_NS:COUNT ...",
 * the buckets that are not empty. */
static int run_hist(const char *instance, const char *field)
{
    struct segment seg;
    struct stats_block_entry e;
    uint32_t version = 0;
    if (seg_attach(&seg, instance, &version) < 0 || stats_find(&seg, "voice", &e) < 0)
        die("no such instance, or no block voice in it");
    struct stats_field *f = calloc(e.nfields, sizeof(*f));
    uint64_t *data = calloc(1, e.size + sizeof(uint64_t));
    const struct stats_field *hf = NULL;
    if (!f || !data || stats_fields(&seg, &e, f) < 0 || !stats_read(&seg, &e, f, data, 1000) ||
        !(hf = stats_field_find(f, e.nfields, field)) || hf->type != STATS_HISTOGRAM)
        die("cannot read the histogram");
    const struct stats_hist *h = (const void *)((const char *)data + hf->offset);
    printf("count=%" PRIu64, h->count);
    for (unsigned b = 0; b < STATS_HIST_BUCKETS; b++)
        if (h->bucket[b])
            printf(" %" PRIu64 ":%" PRIu64, stats_hist_upper(b), h->bucket[b]);
    printf("\n");
    free(f);
    free(data);
    seg_close(&seg, false);
    return 0;
}

/* ---- options ----------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: mqfork-voice-limit decode [-a FILE] [-s SECONDS]\n"
        "       mqfork-voice-limit relay -p PORT -U UDP_PORT -n SESSIONS [-t TEMPLATE]\n"
        "       mqfork-voice-limit blast -p PORT -U UDP_PORT -n SESSIONS [--bare] -f FILTER\n"
        "                                [-w WINDOW] [-s SECONDS] [-a FILE]\n"
        "       mqfork-voice-limit hello -p PORT -n SESSIONS\n"
        "       mqfork-voice-limit sink -p PORT -f FILTER\n"
        "       mqfork-voice-limit answer -p PORT -a PCM_FILE\n"
        "       mqfork-voice-limit -h | --help | -V | --version\n"
        "  (each option also by its long name: --host, --port, --udp-port, --sessions,\n"
        "   --id-prefix, --audio, --seconds, --topic, --filter, --window)\n"
        "  -H HOST      broker and UDP host (127.0.0.1)     -p PORT   broker port (1883)\n"
        "  -U PORT      UDP port: the relay's, or where blast sends\n"
        "  -n N         sessions (1)                        -i PREFIX device ids (bench-)\n"
        "  -a FILE      the recording, as mqfork-device -a (default: its tone); answer:\n"
        "               PCM s16le at the downlink rate, sent as say_pcm\n"
        "  -s SECONDS   how long to decode or blast (1)\n"
        "  -t TEMPLATE  relay: where a session's packets go (bare/{device}/opus)\n"
        "  -f FILTER    blast: the backend's filter for the relayed packets; sink: what to count\n"
        "  -w WINDOW    blast: datagrams sent and not yet relayed at most (256)\n"
        "  --bare       blast: the relay's made-up sessions instead of hellos\n");
}

/* One option of a mode into O; false when its argument is bad. */
static bool set_lopt(struct lopts *o, int c, const char *arg)
{
    switch (c) {
    case 'H':
        o->host = arg;
        return true;
    case 'p':
        return parse_long(arg, 1, 65535, &o->port);
    case 'U':
        return parse_long(arg, 1, 65535, &o->udp_port);
    case 'n':
        return parse_long(arg, 1, 1000000, &o->sessions);
    case 'i':
        o->prefix = arg;
        return true;
    case 'a':
        o->audio = arg;
        return true;
    case 's':
        return parse_double(arg, 0.1, &o->seconds);
    case 't':
        o->topic = arg;
        return true;
    case 'f':
        o->filter = arg;
        return true;
    case 'w':
        return parse_long(arg, 1, 1000000, &o->window);
    case 'b':
        o->bare = true;
        return true;
    default:
        return false;
    }
}

int main(int argc, char **argv)
{
    struct lopts o = {.host = "127.0.0.1",
                      .prefix = "bench-",
                      .topic = "bare/{device}/opus",
                      .port = 1883,
                      .sessions = 1,
                      .window = 256,
                      .seconds = 1};
    static const struct option longs[] = {{"host", required_argument, NULL, 'H'},
                                          {"port", required_argument, NULL, 'p'},
                                          {"udp-port", required_argument, NULL, 'U'},
                                          {"sessions", required_argument, NULL, 'n'},
                                          {"id-prefix", required_argument, NULL, 'i'},
                                          {"audio", required_argument, NULL, 'a'},
                                          {"seconds", required_argument, NULL, 's'},
                                          {"topic", required_argument, NULL, 't'},
                                          {"filter", required_argument, NULL, 'f'},
                                          {"window", required_argument, NULL, 'w'},
                                          {"bare", no_argument, NULL, 'b'},
                                          {"help", no_argument, NULL, 'h'},
                                          {0}};
    if (argc < 2 || argv[1][0] == '-') {
        bool help = argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"));
        if (argc > 1 && (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version"))) {
            printf("mqfork-voice-limit %s\n", MQFORK_VERSION);
            return 0;
        }
        usage(help ? stdout : stderr);
        return help ? 0 : 2;
    }
    o.mode = argv[1];
    if (!strcmp(o.mode, "hist")) {
        if (argc != 4) {
            usage(stderr);
            return 2;
        }
        return run_hist(argv[2], argv[3]);
    }
    optind = 2;
    int c;
    bool ok = true;
    while ((c = getopt_long(argc, argv, "H:p:U:n:i:a:s:t:f:w:bh", longs, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 0;
        }
        ok &= set_lopt(&o, c, optarg);
    }
    bool udp = !strcmp(o.mode, "relay") || !strcmp(o.mode, "blast");
    if (!ok || optind != argc || (udp && !o.udp_port) ||
        ((!strcmp(o.mode, "blast") || !strcmp(o.mode, "sink")) && !o.filter)) {
        usage(stderr);
        return 2;
    }
    mosquitto_lib_init();
    int rc = !strcmp(o.mode, "decode")   ? run_decode(&o)
             : !strcmp(o.mode, "relay")  ? run_relay(&o)
             : !strcmp(o.mode, "blast")  ? run_blast(&o)
             : !strcmp(o.mode, "hello")  ? run_hello(&o)
             : !strcmp(o.mode, "sink")   ? run_sink(&o)
             : !strcmp(o.mode, "answer") ? run_answer(&o)
                                         : (usage(stderr), 2);
    mosquitto_lib_cleanup();
    return rc;
}
