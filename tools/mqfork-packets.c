/* mqfork-packets - turn PCM into Opus packets for the load generator and the
 * demo: s16le PCM on stdin, packets on stdout, each prefixed by its length
 * as a 2-byte big-endian number (the framing opus.encode answers with and
 * mqfork-load -f reads).
 *
 *   mqfork-packets [-r RATE] [-c CHANNELS] [-m FRAME_MS] [-b BITRATE] < pcm > packets */
#include <getopt.h>
#include <opus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void)
{
    fprintf(stderr, "usage: mqfork-packets [-r RATE] [-c CHANNELS] [-m FRAME_MS] [-b BITRATE] "
                    "< pcm > packets\n");
    return 2;
}

int main(int argc, char **argv)
{
    int rate = 16000, channels = 1, bitrate = 24000;
    double frame_ms = 60;
    int opt;
    while ((opt = getopt(argc, argv, "r:c:m:b:h")) != -1) {
        switch (opt) {
        case 'r':
            rate = atoi(optarg);
            break;
        case 'c':
            channels = atoi(optarg);
            break;
        case 'm':
            frame_ms = atof(optarg);
            break;
        case 'b':
            bitrate = atoi(optarg);
            break;
        default:
            return usage();
        }
    }
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
