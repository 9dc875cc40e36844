/* mqfork-device.h - the device simulator's shared types: its options, the
 * recording it plays, one simulated device with its counters, and what each
 * of its files offers the others (tools/mqfork-device*.c). */
#ifndef MQFORK_TOOLS_DEVICE_H
#define MQFORK_TOOLS_DEVICE_H

#include <mosquitto.h>
#include <opus/opus.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/voice_json.h"
#include "proto/voice_udp.h"

#define DEV_RATE          16000 /* uplink: 16 kHz mono 60 ms, as the firmware */
#define DEV_FRAME_MS      60
#define DEV_FRAME_SAMPLES (DEV_RATE / 1000 * DEV_FRAME_MS)
#define DEV_KEEPALIVE_S   240 /* the firmware's default */
#define DEV_ID_MAX        96
#define DEV_TOPIC_MAX     256
#define US                1000000LL

/* ---- options (mqfork-device.c) ------------------------------------------ */

struct opts {
    const char *host;
    int port;
    const char *user, *pass;
    long devices, id_start;
    double ramp_s, duration_s; /* duration 0: no limit */
    long loops;                /* 0: until duration */
    const char *prefix, *topic_up, *topic_down;
    bool subscribe;
    const char *audio; /* NULL: the built-in tone */
    const char *save_dir;
    bool json;
    enum voice_listen_mode mode;
    double hello_timeout_s, wait_s;
    double silence_s; /* > 0: silence after the recording, no listen stop */
    long abort_ms;    /* >= 0: abort this long after a tts's first frame */
    int verbose;
    bool timestamps; /* -v lines start with the wall clock time */
    long table_max;
};

/* ---- the recording, encoded once (mqfork-device-audio.c) ----------------- */

struct recording {
    const char *name;
    uint8_t *data; /* the Opus packets back to back */
    size_t *off;
    uint16_t *len;
    size_t frames;
    size_t speech_frames; /* the file's (or tone's); the rest is --silence */
};

/* Load FILE (.wav: 16-bit PCM at 16 kHz, channels mixed down; anything else:
 * raw s16le 16 kHz mono) or, with FILE NULL, make a 3 s tone; add
 * SILENCE_S of silence; encode it with the firmware's encoder settings. 0,
 * or -1 after saying why. */
int recording_load(struct recording *r, const char *file, double silence_s);
void recording_free(struct recording *r);

/* A WAV file written as it goes: a header with sizes fixed on close. */
int wav_open(const char *path, int rate, int channels);
int wav_append(int fd, const int16_t *pcm, size_t samples);
int wav_close(int fd, uint64_t samples);

/* ---- counters (mqfork-device-report.c) ----------------------------------- */

/* Microseconds in log-linear buckets (1 us exact below 64, then 32 buckets
 * per power of two: about 3% resolution). */
struct hist {
    uint32_t *b; /* NULL until the first value */
    uint64_t n;
};

void hist_add(struct hist *h, int64_t us);
int64_t hist_quantile(const struct hist *h, double q); /* -1 when empty */
void hist_merge(struct hist *into, const struct hist *from);
void hist_free(struct hist *h);

enum json_kind { JK_STT, JK_TTS, JK_LLM, JK_OTHER, JK_COUNT };

struct dev_stats {
    uint64_t sent, send_errors;                     /* uplink datagrams */
    uint64_t received, lost, ooo, bad, undecodable; /* downlink datagrams */
    uint64_t bad_json;
    uint64_t aborts, after_abort; /* aborts sent; downlink datagrams accepted after them */
    uint64_t json[JK_COUNT];
    uint64_t saved;     /* samples written to the WAV */
    int64_t hello_us;   /* hello sent -> reply, -1 when none */
    struct hist jitter; /* |inter-arrival - frame period| of the downlink */
    struct hist reply;  /* listen stop -> first downlink packet */
    struct hist stt;    /* listen stop -> the transcript (stt) */
    struct hist late;   /* uplink frames sent behind their schedule */
};

/* ---- one device (mqfork-device-dev.c) ------------------------------------ */

enum dev_state {
    DEV_IDLE,       /* waiting for its turn in the ramp */
    DEV_CONNECTING, /* TCP + CONNECT sent, no CONNACK yet */
    DEV_SUBSCRIBING,
    DEV_HELLO,     /* hello sent, waiting for the reply */
    DEV_STREAMING, /* listen start sent, frames going out at real-time pace */
    DEV_REPLY,     /* listen stop sent, receiving the answer */
    DEV_CLOSING,   /* goodbye and DISCONNECT queued */
    DEV_DONE,
    DEV_FAILED,
};

struct sim;

struct device {
    struct sim *sim;
    long index;
    char id[DEV_ID_MAX];
    char topic_up[DEV_TOPIC_MAX], topic_down[DEV_TOPIC_MAX];
    enum dev_state state;
    char reason[160]; /* why it failed */
    struct mosquitto *mosq;
    int mqtt_fd, udp_fd, wav_fd;
    uint32_t watched; /* epoll events registered for mqtt_fd */
    struct voice_server_hello hello;
    struct voice_cipher cipher;
    OpusDecoder *dec;
    int dec_frame; /* samples per channel of the longest downlink frame */
    int64_t due;   /* timer, in the heap when heap_pos >= 0 */
    long heap_pos;
    int64_t t_hello, t_stream0, t_stop, t_heard; /* t_heard: last downlink */
    size_t frame;                                /* next frame of the recording */
    uint64_t frames_total;                       /* uplink frames this session */
    long loop;
    uint32_t seq_up, seq_down;
    int64_t last_rx_us;
    uint32_t last_rx_seq;
    bool got_audio; /* a downlink packet since listen stop */
    bool spoke;     /* tts started since listen stop */
    bool tts_stopped;
    int64_t abort_at; /* when the abort of this turn is due (0: none) */
    bool aborted;     /* it was sent */
    bool reaped;      /* finished and its resources released */
    struct dev_stats st;
};

/* The whole run: every device, the loop and its timer heap. */
struct sim {
    struct opts o;
    struct recording rec;
    struct device *devs;
    long n, finished, failed;
    int ep, sigfd;
    struct device **heap;
    long heap_len;
    int64_t t0, t_end;
    double cpu0;  /* CPU seconds used before t0 (encoding the recording) */
    int stopping; /* signals received */
};

int64_t now_us(void);

void dev_init(struct sim *s, struct device *d, long index);
void dev_start(struct device *d);        /* its ramp slot came */
void dev_timer(struct device *d);        /* its due time came */
void dev_udp_readable(struct device *d); /* datagrams waiting */
void dev_stop(struct device *d);         /* SIGINT: wind down now */
void dev_heard_speech(struct device *d); /* a downlink frame was accepted */
/* Awaiting the answer: the timer at DUE, or at the abort if that is sooner. */
void dev_reply_timer(struct device *d, int64_t due);
void dev_fail(struct device *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A -v line on stderr, "<id> <what>", after the wall clock time with -T. */
void dev_log(const struct device *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dev_free(struct device *d);

/* ---- the audio channel (mqfork-device-udp.c) ---------------------------- */

/* Open the UDP socket to the hello reply's server, the cipher, and the
 * decoder and WAV file for the downlink. 0, or -1 with a reason in WHY. */
int chan_open(struct device *d, char *why, size_t whylen);
void chan_send_frame(struct device *d); /* the recording's frame d->frame */
int64_t chan_grace_us(const struct device *d);
void chan_close(struct device *d);

/* ---- the event loop (mqfork-device-loop.c) ------------------------------- */

int loop_init(struct sim *s);
void loop_run(struct sim *s);
void loop_fini(struct sim *s);
void timer_set(struct device *d, int64_t due);
void timer_clear(struct device *d);
/* Watch the device's MQTT socket as libmosquitto now wants (it may have
 * opened, closed or replaced it, or have bytes to write). */
void loop_mqtt_sync(struct device *d);
int loop_watch_udp(struct device *d);
void loop_unwatch(struct sim *s, int fd);
void loop_mqtt_close(struct device *d); /* stop watching and destroy the client */

/* ---- output (mqfork-device-report.c) ------------------------------------- */

/* The table or JSON summary on stdout, with the CPU time the run took. */
void report_print(struct sim *s);
double cpu_seconds(void); /* of this process, user + system */

#endif
