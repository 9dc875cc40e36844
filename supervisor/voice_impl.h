/* voice_impl.h - the voice gateway's private state, shared by its parts:
 *
 *   voice.c        the source: configuration, control messages from the
 *                  devices (MQTT), session events to the backend, the
 *                  session's start and end
 *   voice_table.c  the sessions: slots, and the indexes by ssrc and by
 *                  device id
 *   voice_up.c     the UDP socket: datagrams in (checked, decrypted,
 *                  relayed, decoded in the pool) and out (in batches)
 *   voice_down.c   what the backend sends a device: audio paced by a timer
 *                  per session, control messages in order with it
 *   voice_stt.c    utterances: the decoded uplink from listen start to stop,
 *                  transcribed in the pool (uplink recognize)
 *   voice_vad.c    where utterances end in auto listen mode: speech.vad
 *                  over windows of the newest audio
 *   voice_say.c    text the backend wants spoken: sentences synthesized in
 *                  the pool, then encoded and played as any downlink
 *   voice_stats.c  the figures, block "voice"
 *
 * A session lives in one slot from hello to its end. Jobs and timers refer
 * to it by slot and generation, so an outcome that comes back after its
 * session ended finds that out instead of a freed pointer. */
#ifndef MQFORK_SUPERVISOR_VOICE_IMPL_H
#define MQFORK_SUPERVISOR_VOICE_IMPL_H

#include <cJSON.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"
#include "conf/config.h"
#include "proto/voice_json.h"
#include "proto/voice_udp.h"
#include "shm/stats.h"
#include "supervisor/loop.h"
#include "supervisor/mqtt.h"

struct engine;
struct stats_block;
struct stt_queue;
struct stt_job;
struct up_job;

#define VOICE_DEVICE_MAX   128 /* bytes of a device id (its MQTT client id) */
#define VOICE_TOPIC_MAX    512
#define VOICE_OPUS_MAX     1275  /* the largest Opus packet of one frame */
#define VOICE_SEND_BATCH   64    /* datagrams per sendmmsg */
#define VOICE_CONCEAL      4     /* lost uplink packets concealed before the next: 240 ms */
#define VOICE_DECODE_BATCH 16    /* entries (packets, losses) of a decode job at most */
#define VOICE_UP_RATE      16000 /* the uplink as decoded: 16 kHz mono s16le */

/* Up to ROOM bytes of LEN of decoded uplink at PCM (NULL: silence) into
 * DST; returns how many. */
static inline size_t voice_pcm_fill(uint8_t *dst, size_t room, const uint8_t *pcm, size_t len)
{
    size_t take = room < len ? room : len;
    if (pcm)
        memcpy(dst, pcm, take);
    else
        memset(dst, 0, take);
    return take;
}

enum voice_end {
    END_GOODBYE,  /* the device said goodbye */
    END_SERVER,   /* the backend said goodbye */
    END_IDLE,     /* voice.idle_s without a datagram or message */
    END_REPLACED, /* a new hello from the same device */
    END_SHUTDOWN, /* the daemon stops */
    END_COUNT
};

enum voice_refusal { REFUSED_FULL, REFUSED_BAD_HELLO, REFUSED_BAD_DEVICE, REFUSED_COUNT };

/* The figures of block "voice" (voice_stats.c names them). */
struct voice_figures {
    uint64_t active, started, ended[END_COUNT], refused[REFUSED_COUNT];
    uint64_t control_in, control_bad, control_unknown, forwarded, forwards_other;
    uint64_t dgrams_in, bytes_in, dgrams_out, bytes_out, send_errors;
    uint64_t drops[VOICE_DROP_COUNT], lost, concealed;
    uint64_t relayed, decoded, decode_failed, decode_jobs, pcm_out;
    uint64_t utterances, utterances_cut, transcripts, transcripts_empty, stt_failed, stt_replays;
    uint64_t stt_quarantined;
    uint64_t utterances_silent, endpoints, vad_jobs, vad_failed, silence_ms, stt_parts,
        stt_part_words;
    uint64_t says, sentences, say_failed;
    uint64_t down_frames, down_underruns, down_overflow, down_aborted, down_bad;
    struct stats_hist decode_latency, down_lateness, stt_latency, say_first_audio;
};

/* One entry of a session's downlink queue. Audio still being encoded in
 * the pool holds its place as OUT_PENDING, so nothing queued after it (a
 * tts stop) can overtake it; its packets are put in after it, and it is
 * then skipped as OUT_DONE. OUT_ANNOUNCE is the control message ahead of
 * a part of the audio (a sentence's tts sentence_start): an abort drops it
 * with that audio, where it keeps the backend's own control messages. */
/* OUT_SAY_START: a say's tts start, after which the next audio frame is the
 * say's first (say_first_audio). */
enum voice_out_kind {
    OUT_AUDIO,
    OUT_CONTROL,
    OUT_GOODBYE,
    OUT_PENDING,
    OUT_DONE,
    OUT_ANNOUNCE,
    OUT_SAY_START
};

struct voice_out {
    struct voice_out *next;
    uint8_t kind;   /* enum voice_out_kind */
    uint16_t len;   /* of data */
    uint8_t data[]; /* the Opus packet, or the JSON text (NUL-terminated) */
};

struct voice_session {
    struct voice *owner;
    uint32_t slot, gen; /* gen: raised each time the slot is reused */
    bool live;
    char device[VOICE_DEVICE_MAX + 1];
    char id[VOICE_SESSION_LEN + 1];
    uint8_t key[VOICE_KEY_LEN], nonce[VOICE_HDR_LEN];
    uint32_t ssrc;
    struct voice_cipher cipher;
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } peer;
    socklen_t peer_len; /* 0: no valid datagram yet */
    uint32_t up_seq;    /* the last uplink sequence accepted */
    uint32_t unheard;   /* samples of packets the pool refused: silence before the next */
    uint32_t frame_max; /* samples of the longest packet decoded: a concealed one's most */
    uint64_t seen_ns;   /* the last datagram or message */
    struct loop_timer idle;
    /* downlink */
    struct voice_out *q_head, *q_tail;
    uint32_t q_frames;     /* audio entries queued */
    uint32_t down_seq;     /* the last sent */
    uint32_t epoch;        /* raised by an abort: audio encoded for before is dropped */
    uint32_t say_parts;    /* synthesis and encode jobs of the speech being made */
    uint64_t say_asked_ns; /* when the say being spoken came (mono_ns) */
    bool say_first_due;    /* its tts start has left: the next audio frame is its first */
    uint64_t next_ns;      /* when the next frame is due while pacing; else 0 */
    struct loop_timer pace;
    /* decoded uplink waiting to be published as one batch */
    uint8_t *pcm;
    uint32_t pcm_len;
    uint32_t jobs;     /* decode and encode jobs in flight */
    uint32_t decoding; /* of which decode jobs */
    /* frames that came while a decode job was in the pool: its next (voice_up.c) */
    struct up_job *batch;
    uint8_t *seq; /* the batch's packets, as opus.decode's sequence */
    /* the utterance being heard (voice_stt.c) */
    uint8_t *utt;
    uint8_t *preroll;     /* the newest audio while not listening (voice_stt.c); NULL: none yet */
    uint16_t preroll_len; /* bytes of it */
    uint32_t utt_len;
    bool listening, closing; /* closing: listen stop came, decodes still in flight */
    uint64_t heard;          /* samples decoded so far: the session's stream time */
    uint64_t utt_start;      /* where the audio kept for the utterance begins */
    struct stt_queue *stt;   /* with the recognizer, in order; NULL: none yet */
    /* parts of the utterance recognized while it goes on
     * (voice.stt_part_ms), whose words wait in s->stt for its end */
    uint32_t parts;           /* handed to the recognizer since the utterance began */
    uint64_t part_from;       /* where the words not yet kept begin */
    struct stt_job *part_out; /* the part with the recognizer; NULL: none */
    uint64_t part_upto;       /* where the last part's audio ended */
    /* endpointing, in auto and realtime listen mode (voice_vad.c) */
    bool endpointing;    /* the utterance ends after voice.vad_silence_ms of silence */
    bool voiced;         /* the detector heard speech in this utterance */
    bool vad_busy;       /* a speech.vad job is in flight (one at a time) */
    uint64_t vad_done;   /* stream time up to which the detector has answered */
    uint64_t voiced_end; /* where the latest speech it heard ended */
};

struct voice {
    const struct conf *conf;
    const struct conf_voice *vc;
    struct engine *engine;
    struct loop *loop;
    struct mqtt *mqtt;
    struct mqtt_sink up_sink, back_sink; /* devices' messages; the backend's */
    struct mqtt_sink fwd_sink;           /* other instances' (voice.topics.up is shared) */
    bool shared;                         /* voice.topics.up is a $share subscription */
    int decode_kind, encode_kind, stt_kind, tts_kind, vad_kind; /* job kinds, -1: none */
    bool draining;
    unsigned modes; /* enum conf_uplink, as started (changes need a restart) */
    /* the sessions (voice_table.c) */
    struct voice_session **slot;
    uint32_t nslots, free_top, *free_list;
    uint32_t *by_ssrc, *by_device; /* open addressing: slot + 1, 0 = empty */
    uint32_t index_mask;
    /* UDP (voice_up.c) */
    int fd;
    struct loop_watch *watch;
    struct loop_hook hook;   /* sends what the round queued */
    struct mmsghdr *out_msg; /* VOICE_SEND_BATCH */
    struct iovec *out_iov;
    uint8_t (*out_buf)[VOICE_HDR_LEN + VOICE_OPUS_MAX];
    union {
        struct sockaddr sa;
        struct sockaddr_in6 in6;
    } * out_addr;
    unsigned nout;
    void *in_buf;              /* what one recvmmsg reads */
    struct up_job *spare_jobs; /* decode jobs done, for the next ones */
    unsigned nspare;
    /* figures (voice_stats.c) */
    struct voice_figures n;
    struct stats_block *stats;
    bool changed;
    struct log_rate bad_control_log, bad_dgram_log, bad_answer_log;
};

/* voice.c */
/* "voice/{device}/x" with the session's device: 0, or -1 when too long. */
int voice_topic(const char *tmpl, const char *device, char *out, size_t len);
/* DEVICE's id from TOPIC, which PATTERN names it in with WILDCARD ("+" or
 * "{device}") as one whole level: 0, or -1 when TOPIC does not fit. */
int voice_device_of(const char *pattern, const char *wildcard, const char *topic, char *out,
                    size_t len);
/* Publish JSON to DEVICE (its p2p topic). */
void voice_to_device(struct voice *v, const char *device, const char *json);
/* A session event for the backend: TYPE, session_id and device; the caller
 * may add fields before voice_event_send publishes and frees it. */
cJSON *voice_event_new(const struct voice_session *s, const char *type);
void voice_event_send(struct voice *v, const struct voice_session *s, cJSON *event);
/* End S for WHY: goodbye to the device unless it said it, one ended event. */
void voice_end_session(struct voice *v, struct voice_session *s, enum voice_end why);
/* A session's idle timer (ctx: the session). */
void voice_idle_fired(void *ctx);

/* voice_table.c */
int voice_table_init(struct voice *v);
void voice_table_free(struct voice *v);
struct voice_session *voice_session_new(struct voice *v, const char *device);
void voice_session_free(struct voice *v, struct voice_session *s);
struct voice_session *voice_by_ssrc(const struct voice *v, uint32_t ssrc);
struct voice_session *voice_by_device(const struct voice *v, const char *device);
/* The live session of SLOT if its generation is still GEN, else NULL. */
struct voice_session *voice_by_slot(const struct voice *v, uint32_t slot, uint32_t gen);
/* voice_by_slot for a job's outcome, counting the job as back (s->jobs). */
struct voice_session *voice_job_back(struct voice *v, uint32_t slot, uint32_t gen);
/* A job of SLOT's session (generation GEN) in a log line, as an
 * engine_describe_fn writes it: WHAT it does, its device and session.
 * DEVICE, when the job kept one, names it after the session ended. */
void voice_job_describe(const struct voice *v, uint32_t slot, uint32_t gen, const char *device,
                        const char *what, char *buf, size_t len);

/* voice_up.c */
int voice_udp_open(struct voice *v);
void voice_udp_close(struct voice *v);
/* Encrypt and queue one datagram to S's device; sent before the loop sleeps. */
void voice_udp_send(struct voice *v, struct voice_session *s, const uint8_t *opus, size_t len);
/* Send the datagrams queued (sendmmsg). */
void voice_udp_flush(struct voice *v);
/* Publish the decoded uplink S holds as one batch. */
void voice_up_flush_pcm(struct voice *v, struct voice_session *s);
/* S ends: the frames waiting for its job in the pool go to the pool now. */
void voice_up_end(struct voice *v, struct voice_session *s);

/* voice_down.c */
/* The backend's messages (ctx: the voice): play, say_pcm, ctl. */
void voice_down_message(void *ctx, const struct mqtt_message *m);
void voice_down_abort(struct voice *v, struct voice_session *s);
void voice_down_clear(struct voice_session *s);
/* Queue a control message for S's device, in order with its audio; it
 * leaves with voice_down_kick (which may end S: a goodbye). */
void voice_down_control(struct voice *v, struct voice_session *s, const char *json);
/* The same for a say's tts start (the time to its first audio is measured). */
void voice_down_say_start(struct voice *v, struct voice_session *s, const char *json);
void voice_down_kick(struct voice *v, struct voice_session *s);
/* Encode LEN bytes of PCM (downlink rate) for S in the pool and queue the
 * packets, with BEFORE (malloc'd JSON, or NULL; taken) ahead of them; SAY:
 * part of a say. 0, or -1 when refused (counted). */
int voice_down_pcm(struct voice *v, struct voice_session *s, const uint8_t *pcm, size_t len,
                   char *before, bool say);
/* A session's pacing timer (ctx: the session): the next frame is due. */
void voice_pace_fired(void *ctx);

/* voice_stt.c */
/* Listen start (in MODE) or stop from S's device. */
void voice_stt_listen(struct voice *v, struct voice_session *s, bool start,
                      enum voice_listen_mode mode);
/* Decoded uplink of S (its decode job finished: s->decoding counts the rest);
 * PCM NULL: LEN bytes of silence. */
void voice_stt_audio(struct voice *v, struct voice_session *s, const uint8_t *pcm, size_t len);
/* S ends: what it heard is still transcribed. */
void voice_stt_end(struct voice *v, struct voice_session *s);
/* The utterance of S ends at stream time UPTO (heard at most): transcribed,
 * and what came after it starts the next. */
void voice_stt_cut(struct voice *v, struct voice_session *s, uint64_t upto);
/* Forget the audio of S's utterance before stream time FROM: silence. */
void voice_stt_trim(struct voice *v, struct voice_session *s, uint64_t from);

/* voice_vad.c */
/* A window of S's newest audio to speech.vad, when enough came since the
 * last and none is in flight. */
void voice_vad_check(struct voice *v, struct voice_session *s);

/* voice_say.c */
void voice_say_message(struct voice *v, struct voice_session *s, const struct mqtt_message *m);
/* The speech being made for S is all queued (or cut): tts stop is queued
 * to follow it. */
void voice_say_done(struct voice *v, struct voice_session *s);

/* voice_stats.c */
int voice_stats_add(struct voice *v);
void voice_stats_publish(struct voice *v);

#endif
