/* mqfork-speech-limit.c - the limit tools/bench-speech holds the voice
 * gateway's recognition to: pocketsphinx in one process, in a bare loop,
 * over the same recordings, decoding each as speech.transcribe does (the
 * same model, one whole utterance per ps_process_raw). It prints each
 * recording's transcript (the word error rate of recognition without
 * Opus, UDP or the pool) and how fast one process goes: seconds of audio
 * per second of wall clock and of CPU.
 *
 *   mqfork-speech-limit [-r REPEAT] RAW...
 *
 * RAW: s16le 16 kHz mono (sox converts the WAVs). Output, one line each:
 *   text NAME TRANSCRIPT          (first round only)
 *   audio_s A wall_s W cpu_s C speed_wall A/W speed_cpu A/C */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <pocketsphinx.h>

#include "plugins/speech/speech.h"
#include "tools/numarg.h"

#define RATE 16000

struct raw {
    const char *name;
    int16_t *pcm;
    size_t samples;
};

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int load_raw(const char *path, struct raw *r)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) < 0 || st.st_size < 2) {
        fprintf(stderr, "mqfork-speech-limit: %s: %s\n", path, f ? "empty" : strerror(errno));
        if (f)
            fclose(f);
        return -1;
    }
    r->name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    r->samples = (size_t)st.st_size / 2;
    r->pcm = malloc(r->samples * 2);
    size_t got = r->pcm ? fread(r->pcm, 2, r->samples, f) : 0;
    fclose(f);
    if (got != r->samples) {
        fprintf(stderr, "mqfork-speech-limit: %s: short read\n", path);
        return -1;
    }
    return 0;
}

static const char *decode(ps_decoder_t *ps, const struct raw *r)
{
    int32 score;
    if (ps_start_utt(ps) < 0 || ps_process_raw(ps, r->pcm, r->samples, FALSE, TRUE) < 0 ||
        ps_end_utt(ps) < 0)
        return NULL;
    const char *hyp = ps_get_hyp(ps, &score);
    return hyp ? hyp : "";
}

int main(int argc, char **argv)
{
    long repeat = 1;
    int opt;
    while ((opt = getopt(argc, argv, "r:")) != -1)
        if (opt != 'r' || !parse_long(optarg, 1, 1000, &repeat)) {
            fprintf(stderr, "usage: mqfork-speech-limit [-r REPEAT] RAW...\n");
            return 2;
        }
    int n = argc - optind;
    struct raw *raws = calloc(n > 0 ? (size_t)n : 1, sizeof(*raws));
    if (n < 1 || !raws) {
        fprintf(stderr, "usage: mqfork-speech-limit [-r REPEAT] RAW...\n");
        return 2;
    }
    for (int i = 0; i < n; i++)
        if (load_raw(argv[optind + i], &raws[i]) < 0)
            return 1;
    cmd_ln_t *config =
        cmd_ln_init(NULL, ps_args(), TRUE, "-hmm", SPEECH_DEFAULT_HMM, "-dict", SPEECH_DEFAULT_DICT,
                    "-lm", SPEECH_DEFAULT_LM, "-logfn", "/dev/null", NULL);
    ps_decoder_t *ps = config ? ps_init(config) : NULL;
    if (!ps) {
        fprintf(stderr, "mqfork-speech-limit: pocketsphinx cannot load the model\n");
        return 1;
    }
    double audio = 0, wall0 = clock_s(CLOCK_MONOTONIC), cpu0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    for (long round = 0; round < repeat; round++)
        for (int i = 0; i < n; i++) {
            const char *hyp = decode(ps, &raws[i]);
            if (!hyp) {
                fprintf(stderr, "mqfork-speech-limit: %s: pocketsphinx failed\n", raws[i].name);
                return 1;
            }
            if (round == 0)
                printf("text %s %s\n", raws[i].name, hyp);
            audio += (double)raws[i].samples / RATE;
        }
    double wall = clock_s(CLOCK_MONOTONIC) - wall0, cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    printf("audio_s %.3f wall_s %.3f cpu_s %.3f speed_wall %.3f speed_cpu %.3f\n", audio, wall, cpu,
           audio / wall, audio / cpu);
    ps_free(ps);
    cmd_ln_free_r(config);
    for (int i = 0; i < n; i++)
        free(raws[i].pcm);
    free(raws);
    return 0;
}
