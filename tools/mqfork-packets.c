/* mqfork-packets - turn PCM into Opus packets for the load generator and the
 * demo: s16le PCM on stdin, packets on stdout, each prefixed by its length
 * as a 2-byte big-endian number (the framing opus.encode answers with and
 * mqfork-load -f reads).
 *
 *   mqfork-packets [-r RATE] [-c CHANNELS] [-m FRAME_MS] [-b BITRATE] < pcm > packets
 * (--help for the long names). */
#include <getopt.h>
#include <opus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/numarg.h"

static void usage(FILE *f)
{
    fputs("usage: mqfork-packets [options] < pcm > packets\n"
          "  -r, --rate RATE          input sample rate in Hz (16000)\n"
          "  -c, --channels N         1 or 2, interleaved (1)\n"
          "  -m, --frame-ms MS        frame duration: 2.5, 5, 10, 20, 40 or 60 (60)\n"
          "  -b, --bitrate BITS       bits per second (24000)\n"
          "  -V, --version            print the version\n"
          "  -h, --help               this help\n",
          f);
}

struct options {
    long rate, channels, bitrate;
    double frame_ms;
};

/* 0 with O filled, -1 when done (help, version), or 2 for a usage error. */
static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longs[] = {
        {"rate", required_argument, NULL, 'r'},
        {"channels", required_argument, NULL, 'c'},
        {"frame-ms", required_argument, NULL, 'm'},
        {"bitrate", required_argument, NULL, 'b'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct options){.rate = 16000, .channels = 1, .bitrate = 24000, .frame_ms = 60};
    int opt;
    while ((opt = getopt_long(argc, argv, "r:c:m:b:Vh", longs, NULL)) != -1) {
        bool ok = opt == 'r'   ? parse_long(optarg, 1, 48000, &o->rate)
                  : opt == 'c' ? parse_long(optarg, 1, 2, &o->channels)
                  : opt == 'm' ? parse_double(optarg, 2.5, &o->frame_ms) && o->frame_ms <= 120
                  : opt == 'b' ? parse_long(optarg, 500, 512000, &o->bitrate)
                               : false;
        if (opt == 'V')
            printf("mqfork-packets %s\n", MQFORK_VERSION);
        else if (opt == 'h')
            usage(stdout);
        if (opt == 'V' || opt == 'h')
            return -1;
        if (!ok) {
            if (opt != '?')
                fprintf(stderr, "mqfork-packets: bad value for -%c: %s\n", opt, optarg);
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "mqfork-packets: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;
    int rc = parse_options(argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    int rate = (int)o.rate, channels = (int)o.channels, bitrate = (int)o.bitrate;
    double frame_ms = o.frame_ms;
    int err;
    OpusEncoder *enc = opus_encoder_create(rate, channels, OPUS_APPLICATION_VOIP, &err);
    if (!enc) {
        fprintf(stderr, "mqfork-packets: %s (rate %d, channels %d)\n", opus_strerror(err), rate,
                channels);
        return 2;
    }
    opus_encoder_ctl(enc, OPUS_SET_BITRATE(bitrate));
    int samples = (int)(rate * frame_ms / 1000);
    size_t frame_bytes = (size_t)samples * (size_t)channels * 2;
    opus_int16 *pcm = malloc(frame_bytes);
    unsigned char packet[4000];
    size_t frames = 0;
    while (fread(pcm, 1, frame_bytes, stdin) == frame_bytes) {
        int n = opus_encode(enc, pcm, samples, packet, (opus_int32)sizeof(packet));
        if (n < 0) {
            fprintf(stderr, "mqfork-packets: %s\n", opus_strerror(n));
            return 1;
        }
        unsigned char len[2] = {(unsigned char)(n >> 8), (unsigned char)n};
        fwrite(len, 1, 2, stdout);
        fwrite(packet, 1, (size_t)n, stdout);
        frames++;
    }
    fprintf(stderr, "mqfork-packets: %zu frames of %.1f ms\n", frames, frame_ms);
    free(pcm);
    opus_encoder_destroy(enc);
    return 0;
}
