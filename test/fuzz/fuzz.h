/* fuzz.h - what every libFuzzer harness in test/fuzz shares: cutting the
 * fuzzer's bytes into fields (each in its own exact-size allocation, so the
 * sanitizers see any read past it), and a check that aborts with its reason,
 * which libFuzzer reports as a crash. */
#ifndef MQFORK_TEST_FUZZ_H
#define MQFORK_TEST_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A property the code under test must keep; a broken one is a finding. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The unread rest of the input. */
struct fuzz_in {
    const uint8_t *p;
    size_t n;
};

/* The next byte, or 0 when the input is used up. */
static inline uint8_t fuzz_byte(struct fuzz_in *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

/* The next 16-bit number (big-endian), 0 when the input is used up. */
static inline uint16_t fuzz_u16(struct fuzz_in *in)
{
    uint16_t hi = fuzz_byte(in);
    return (uint16_t)(hi << 8 | fuzz_byte(in));
}

static inline void *fuzz_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

/* The bytes up to the next NUL (which is consumed) or the end, as a string
 * in an allocation of exactly its length + 1. */
static inline char *fuzz_str(struct fuzz_in *in)
{
    const uint8_t *nul = memchr(in->p, 0, in->n);
    size_t len = nul ? (size_t)(nul - in->p) : in->n;
    char *s = fuzz_xmalloc(len + 1);
    memcpy(s, in->p, len);
    s[len] = '\0';
    in->p += len + (nul != NULL);
    in->n -= len + (nul != NULL);
    return s;
}

/* A 16-bit length (cut to what is left), then that many bytes, in an
 * allocation of exactly that size. */
static inline uint8_t *fuzz_bytes(struct fuzz_in *in, size_t *len)
{
    size_t want = fuzz_u16(in);
    *len = want < in->n ? want : in->n;
    uint8_t *b = fuzz_xmalloc(*len);
    memcpy(b, in->p, *len);
    in->p += *len;
    in->n -= *len;
    return b;
}

/* How many continuation bytes follow lead byte C in UTF-8; -1: not a lead. */
static inline int fuzz_utf8_more(uint8_t c)
{
    if (c < 0x80)
        return 0;
    if (c >= 0xc2 && c < 0xe0)
        return 1;
    if ((c & 0xf0) == 0xe0)
        return 2;
    if (c >= 0xf0 && c < 0xf5)
        return 3;
    return -1;
}

/* The code point of the well-formed UTF-8 sequence at S (LEN > 0 bytes
 * left) into *CP: its length, or 0 when it is not well-formed (no overlong
 * forms, no surrogates, nothing past U+10FFFF). */
static inline size_t fuzz_utf8_next(const uint8_t *s, size_t len, uint32_t *cp)
{
    int more = fuzz_utf8_more(s[0]);
    if (more < 0 || len <= (size_t)more)
        return 0;
    *cp = more ? s[0] & (0x3fu >> more) : s[0];
    for (int k = 1; k <= more; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        *cp = *cp << 6 | (s[k] & 0x3fu);
    }
    if ((more == 2 && (*cp < 0x800 || (*cp >= 0xd800 && *cp < 0xe000))) ||
        (more == 3 && (*cp < 0x10000 || *cp > 0x10ffff)))
        return 0;
    return (size_t)more + 1;
}

/* Whether S (LEN bytes) is well-formed UTF-8. */
static inline bool fuzz_utf8(const uint8_t *s, size_t len)
{
    uint32_t cp;
    for (size_t i = 0, n; i < len; i += n)
        if (!(n = fuzz_utf8_next(s + i, len - i, &cp)))
            return false;
    return true;
}

#endif
