/* mqfork-device-audio.c - the device simulator's audio files: reads the
 * recording (WAV or raw s16le at 16 kHz, or a generated tone), encodes it
 * once with the firmware's Opus settings into the packets every device
 * sends, and writes what a device received as a WAV file. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/mqfork-device.h"

#define MAX_FILE    (512L << 20)
#define MAX_PACKET  1500
#define TONE_S      3
#define TONE_HZ     440.0
#define TONE_AMP    8000.0
#define WAV_HDR_LEN 44

struct pcm {
    int16_t *s;
    size_t n;
};

static int say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int say(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "mqfork-device: %s\n", buf);
    return -1;
}

static int read_file(const char *path, uint8_t **buf, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        return say("%s: %s", path, strerror(errno));
    }
    if (st.st_size > MAX_FILE || !(*buf = malloc((size_t)st.st_size + 1))) {
        close(fd);
        return say("%s: too large", path);
    }
    ssize_t got = 0;
    while (got < st.st_size) {
        ssize_t r = read(fd, *buf + got, (size_t)(st.st_size - got));
        if (r <= 0) {
            close(fd);
            free(*buf);
            return say("%s: %s", path, r < 0 ? strerror(errno) : "short read");
        }
        got += r;
    }
    close(fd);
    *len = (size_t)got;
    return 0;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

/* Check the fmt chunk: 16-bit PCM (plain or WAVE_FORMAT_EXTENSIBLE) at 16 kHz. */
static int wav_format(const char *path, const uint8_t *f, uint32_t len, int *channels)
{
    if (len < 16)
        return say("%s: fmt chunk too short", path);
    uint16_t tag = le16(f), ch = le16(f + 2), bits = le16(f + 14);
    uint32_t rate = le32(f + 4);
    if (tag == 0xfffe && len >= 26)
        tag = le16(f + 24); /* the subformat GUID starts with the format tag */
    if (tag != 1 || bits != 16 || ch == 0)
        return say("%s: not 16-bit PCM (format %u, %u bits)", path, tag, bits);
    if (rate != DEV_RATE)
        return say("%s: %u Hz; only 16000 Hz is read (convert: sox IN -r 16000 -b 16 OUT.wav)",
                   path, rate);
    *channels = ch;
    return 0;
}

/* Walk the RIFF chunks to fmt and data; mix the channels down to mono. */
static int parse_wav(const char *path, const uint8_t *b, size_t len, struct pcm *out)
{
    int channels = 0;
    if (len < 12 || memcmp(b, "RIFF", 4) || memcmp(b + 8, "WAVE", 4))
        return say("%s: not a RIFF WAVE file", path);
    for (size_t at = 12; at + 8 <= len;) {
        uint32_t clen = le32(b + at + 4);
        const uint8_t *c = b + at + 8;
        size_t avail = len - at - 8 < clen ? len - at - 8 : clen;
        if (!memcmp(b + at, "fmt ", 4) && wav_format(path, c, (uint32_t)avail, &channels) < 0)
            return -1;
        if (!memcmp(b + at, "data", 4)) {
            if (!channels)
                return say("%s: data before fmt", path);
            out->n = avail / 2 / (size_t)channels;
            if (!(out->s = malloc(out->n * 2 + 2)))
                return say("%s: out of memory", path);
            for (size_t i = 0; i < out->n; i++) {
                long sum = 0;
                for (int k = 0; k < channels; k++)
                    sum += (int16_t)le16(c + 2 * (i * (size_t)channels + (size_t)k));
                out->s[i] = (int16_t)(sum / channels);
            }
            return 0;
        }
        at += 8 + (size_t)clen + (clen & 1);
    }
    return say("%s: no data chunk", path);
}

static int load_pcm(const char *path, struct pcm *out)
{
    uint8_t *b = NULL;
    size_t len = 0;
    if (read_file(path, &b, &len) < 0)
        return -1;
    size_t plen = strlen(path);
    int rc = 0;
    if (plen > 4 && !strcasecmp(path + plen - 4, ".wav")) {
        rc = parse_wav(path, b, len, out);
    } else if (!(out->s = malloc(len + 2))) {
        rc = say("%s: out of memory", path);
    } else {
        out->n = len / 2;
        for (size_t i = 0; i < out->n; i++)
            out->s[i] = (int16_t)le16(b + 2 * i);
    }
    free(b);
    if (rc == 0 && out->n == 0) {
        free(out->s);
        rc = say("%s: no audio in it", path);
    }
    return rc;
}

static void make_tone(struct pcm *out)
{
    out->n = (size_t)TONE_S * DEV_RATE;
    out->s = malloc(out->n * 2);
    for (size_t i = 0; out->s && i < out->n; i++)
        out->s[i] = (int16_t)lrint(TONE_AMP * sin(2 * M_PI * TONE_HZ * (double)i / DEV_RATE));
}

/* The firmware's encoder (AS_OPUS_ENC_CONFIG in its audio_service.h):
 * 16 kHz mono, 60 ms, application audio, bitrate auto, complexity 0, VBR
 * and DTX on, no FEC. */
static OpusEncoder *firmware_encoder(void)
{
    int err;
    OpusEncoder *e = opus_encoder_create(DEV_RATE, 1, OPUS_APPLICATION_AUDIO, &err);
    if (!e)
        return NULL;
    opus_encoder_ctl(e, OPUS_SET_BITRATE(OPUS_AUTO));
    opus_encoder_ctl(e, OPUS_SET_COMPLEXITY(0));
    opus_encoder_ctl(e, OPUS_SET_VBR(1));
    opus_encoder_ctl(e, OPUS_SET_DTX(1));
    opus_encoder_ctl(e, OPUS_SET_INBAND_FEC(0));
    return e;
}

/* Every whole frame, the last one padded with silence. */
static int encode(struct recording *r, const struct pcm *p)
{
    OpusEncoder *e = firmware_encoder();
    r->frames = (p->n + DEV_FRAME_SAMPLES - 1) / DEV_FRAME_SAMPLES;
    r->data = malloc(r->frames * MAX_PACKET);
    r->off = calloc(r->frames, sizeof(*r->off));
    r->len = calloc(r->frames, sizeof(*r->len));
    if (!e || !r->data || !r->off || !r->len) {
        opus_encoder_destroy(e);
        return say("out of memory");
    }
    size_t at = 0;
    for (size_t f = 0; f < r->frames; f++) {
        int16_t frame[DEV_FRAME_SAMPLES] = {0};
        size_t from = f * DEV_FRAME_SAMPLES;
        size_t n = p->n - from < DEV_FRAME_SAMPLES ? p->n - from : DEV_FRAME_SAMPLES;
        memcpy(frame, p->s + from, n * 2);
        int len = opus_encode(e, frame, DEV_FRAME_SAMPLES, r->data + at, MAX_PACKET);
        if (len < 0) {
            opus_encoder_destroy(e);
            return say("opus_encode: %s", opus_strerror(len));
        }
        r->off[f] = at;
        r->len[f] = (uint16_t)len;
        at += (size_t)len;
    }
    opus_encoder_destroy(e);
    return 0;
}

/* SILENCE_S of digital silence after P, as a device hears a quiet room:
 * its encoder's DTX makes it a few bytes a frame. */
static int add_silence(struct pcm *p, double silence_s)
{
    size_t more = (size_t)(silence_s * DEV_RATE);
    int16_t *s = more ? realloc(p->s, (p->n + more) * 2) : p->s;
    if (!s)
        return say("out of memory");
    memset(s + p->n, 0, more * 2);
    p->s = s;
    p->n += more;
    return 0;
}

int recording_load(struct recording *r, const char *file, double silence_s)
{
    struct pcm p = {0};
    memset(r, 0, sizeof(*r));
    r->name = file ? file : "tone";
    if (file ? load_pcm(file, &p) < 0 : (make_tone(&p), !p.s))
        return -1;
    r->speech_frames = (p.n + DEV_FRAME_SAMPLES - 1) / DEV_FRAME_SAMPLES;
    int rc = add_silence(&p, silence_s) < 0 ? -1 : encode(r, &p);
    free(p.s);
    return rc;
}

void recording_free(struct recording *r)
{
    free(r->data);
    free(r->off);
    free(r->len);
    memset(r, 0, sizeof(*r));
}

static void put32(uint8_t *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, 4);
}

static void put16(uint8_t *p, uint16_t v)
{
    v = htole16(v);
    memcpy(p, &v, 2);
}

int wav_open(const char *path, int rate, int channels)
{
    uint8_t h[WAV_HDR_LEN] = "RIFF\0\0\0\0WAVEfmt ";
    put32(h + 16, 16);
    put16(h + 20, 1); /* PCM */
    put16(h + 22, (uint16_t)channels);
    put32(h + 24, (uint32_t)rate);
    put32(h + 28, (uint32_t)(rate * channels * 2)); /* bytes per second */
    put16(h + 32, (uint16_t)(channels * 2));        /* block align */
    put16(h + 34, 16);                              /* bits per sample */
    memcpy(h + 36, "data", 4);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0 && write(fd, h, sizeof(h)) != (ssize_t)sizeof(h)) {
        close(fd);
        return -1;
    }
    return fd;
}

int wav_append(int fd, const int16_t *pcm, size_t samples)
{
    uint8_t buf[4096];
    while (samples > 0) {
        size_t n = samples < sizeof(buf) / 2 ? samples : sizeof(buf) / 2;
        for (size_t i = 0; i < n; i++)
            put16(buf + 2 * i, (uint16_t)pcm[i]);
        if (write(fd, buf, n * 2) != (ssize_t)(n * 2))
            return -1;
        pcm += n;
        samples -= n;
    }
    return 0;
}

/* Fix the RIFF and data sizes now that the length (SAMPLES values, all
 * channels counted) is known. */
int wav_close(int fd, uint64_t samples)
{
    uint8_t b[4];
    uint64_t bytes = samples * 2;
    int rc = 0;
    if (bytes > UINT32_MAX - 36)
        bytes = UINT32_MAX - 36;
    put32(b, (uint32_t)(36 + bytes));
    rc |= pwrite(fd, b, 4, 4) == 4 ? 0 : -1;
    put32(b, (uint32_t)bytes);
    rc |= pwrite(fd, b, 4, 40) == 4 ? 0 : -1;
    return close(fd) == 0 ? rc : -1;
}
