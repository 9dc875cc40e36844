/* speech.c - mqfork_speech.so: speech.transcribe and speech.vad
 * (pocketsphinx) and speech.synthesize (flite, espeak-ng), one plugin so
 * that a daemon without speech links none of it. */
#include "speech.h"

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

uint64_t speech_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int speech_json_escape(char *out, size_t cap, size_t *pos, const char *s, size_t len)
{
    size_t at = *pos;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        size_t n;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            n = 2;
        } else if (ch < 0x20) {
            n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", ch);
        } else {
            esc[0] = (char)ch;
            n = 1;
        }
        if (at + n > cap)
            return -1;
        memcpy(out + at, esc, n);
        at += n;
    }
    *pos = at;
    return 0;
}

int speech_utf8_valid(const uint8_t *s, size_t len, size_t *chars)
{
    size_t n = 0;
    for (size_t i = 0; i < len; n++) {
        uint8_t b = s[i];
        size_t more;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xe0) == 0xc0) {
            more = 1;
            cp = b & 0x1f;
        } else if ((b & 0xf0) == 0xe0) {
            more = 2;
            cp = b & 0x0f;
        } else if ((b & 0xf8) == 0xf0) {
            more = 3;
            cp = b & 0x07;
        } else {
            return 0;
        }
        if (i + more >= len)
            return 0;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t least[] = {0, 0x80, 0x800, 0x10000};
        if (cp < least[more] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += more + 1;
    }
    *chars = n;
    return 1;
}

int speech_check_path(const struct mqfork_params *p, const char *key, const char *fallback, int dir,
                      struct mqfork_check *c)
{
    const struct mqfork_param *param = mqfork_param_find(p, key);
    const char *path = param ? param->value : fallback;
    struct stat st;
    if (stat(path, &st) < 0) {
        c->problem(c, param, "%s: %s: %s%s", key, path, strerror(errno),
                   param ? "" : " (the default; apt-get install pocketsphinx-en-us)");
        return -1;
    }
    if (dir && !S_ISDIR(st.st_mode)) {
        c->problem(c, param, "%s: %s: not a directory", key, path);
        return -1;
    }
    if (!dir && !S_ISREG(st.st_mode)) {
        c->problem(c, param, "%s: %s: not a regular file", key, path);
        return -1;
    }
    if (access(path, dir ? R_OK | X_OK : R_OK) < 0) {
        c->problem(c, param, "%s: %s: %s", key, path, strerror(errno));
        return -1;
    }
    return 0;
}

static int register_speech(struct mqfork_registry *r)
{
    if (r->add(r, &speech_transcribe) < 0 || r->add(r, &speech_synthesize) < 0 ||
        r->add(r, &speech_vad) < 0)
        return -1;
    return 0;
}

MQFORK_PLUGIN(register_speech)
