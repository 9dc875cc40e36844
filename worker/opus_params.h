/* opus_params.h - the params of opus.decode and opus.encode
 * (handler_opus.c), checked and parsed by opus_params.c.
 *
 * Params (all optional):
 *   both:   sample_rate  8000, 12000, 16000 (default), 24000, 48000
 *           channels     1 (default) or 2
 *   decode: conceal      0 (default) to 8: with a stream, a job whose
 *                        meta.lost says packets were lost right before it
 *                        first gets up to this many of them concealed, each
 *                        as long as the last packet decoded, so the PCM
 *                        timeline has no holes (each job's output room grows
 *                        by that many packets' worth)
 *           fec          true or false (default): the last packet concealed
 *                        is rebuilt from this one's in-band FEC data rather
 *                        than by libopus's packet loss concealment
 *           fallback     none (default) or pcm: an invalid packet whose size
 *                        is exactly one frame of PCM (2.5 to 60 ms at the
 *                        route's rate and channels) is passed through
 *                        unchanged, as the gateway we replace did.
 *           sequence     0 (default): the input is one packet; 1 to 64: it is
 *                        a sequence of at most this many entries in
 *                        opus.encode's framing (a 2-byte big-endian length,
 *                        then that many bytes), decoded in order in one job.
 *                        An empty entry is a packet lost, concealed as long
 *                        as the last packet decoded (rebuilt from the next
 *                        entry's FEC data with fec, when that is the next
 *                        packet); meta.lost and conceal do not apply. The
 *                        output is in the same framing, one entry for each
 *                        entry in: its PCM, empty for a packet that is not
 *                        valid Opus (no fallback) or a loss with nothing
 *                        decoded before it. One job then carries what would
 *                        be many (a voice session's backlog): the cost of a
 *                        job is paid once.
 *   encode: frame_ms     2.5, 5, 10, 20, 40, 60 (default)
 *           bitrate      auto (default) or 500..512000 bits/s
 *           complexity   0..10, default 5: about half the CPU of libopus's
 *                        own default of 10 for little audible loss in speech
 *           application  voip (default), audio or lowdelay
 */
#ifndef MQFORK_WORKER_OPUS_PARAMS_H
#define MQFORK_WORKER_OPUS_PARAMS_H

#include <stdbool.h>

#include "mqfork/handler.h"

struct opus_params {
    int rate, channels;
    bool fec, fallback_pcm;                         /* decode */
    int conceal;                                    /* decode */
    int sequence;                                   /* decode: entries at most, 0: one packet */
    int frame_us, bitrate, complexity, application; /* encode */
};

/* The frame durations opus.encode takes, in microseconds. */
#define OPUS_FRAME_SIZES 6
extern const int opus_frame_us[OPUS_FRAME_SIZES];

/* Parse P into *O, defaults first; every problem goes to CHECK when it is
 * not NULL (a bad value then leaves its default in place). */
void opus_parse_params(const struct mqfork_params *p, bool encode, struct opus_params *o,
                       struct mqfork_check *check);

/* Params that passed check() (the engine refuses a kind otherwise); should
 * they not, the defaults stand in for the bad values rather than garbage. */
struct opus_params opus_params_of(const struct mqfork_params *p, bool encode);

#endif
