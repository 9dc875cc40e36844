/* speech.h - what the two handlers of mqfork_speech.so share. */
#ifndef MQFORK_SPEECH_H
#define MQFORK_SPEECH_H

#include <stddef.h>
#include <stdint.h>

#include <mqfork/handler.h>

/* pocketsphinx-en-us's model: speech.transcribe's default, and what the
 * speech benchmark's bare loop (tools/mqfork-speech-limit.c) loads. */
#define SPEECH_MODEL_DIR    "/usr/share/pocketsphinx/model/en-us/"
#define SPEECH_DEFAULT_HMM  SPEECH_MODEL_DIR "en-us"
#define SPEECH_DEFAULT_DICT SPEECH_MODEL_DIR "cmudict-en-us.dict"
#define SPEECH_DEFAULT_LM   SPEECH_MODEL_DIR "en-us.lm.bin"

extern const struct mqfork_handler speech_transcribe;
extern const struct mqfork_handler speech_synthesize;
extern const struct mqfork_handler speech_vad;

/* Monotonic time in nanoseconds. */
uint64_t speech_now_ns(void);

/* Append S (LEN bytes) to OUT (capacity CAP, *POS bytes used) as the body of
 * a JSON string, escaped. Returns 0, or -1 (nothing appended past *POS) when
 * it does not fit. */
int speech_json_escape(char *out, size_t cap, size_t *pos, const char *s, size_t len);

/* Whether S (LEN bytes) is well-formed UTF-8; *CHARS gets its code points. */
int speech_utf8_valid(const uint8_t *s, size_t len, size_t *chars);

/* Report a param KEY (FALLBACK when absent) that names a file (or, DIR, a
 * directory) that cannot be read: 0, or -1 when reported. */
int speech_check_path(const struct mqfork_params *p, const char *key, const char *fallback, int dir,
                      struct mqfork_check *c);

#endif
