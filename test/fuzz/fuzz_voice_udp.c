/* fuzz_voice_udp.c - libFuzzer harness for the voice devices' audio
 * datagrams (proto/voice_udp.c): any datagram through voice_hdr_parse,
 * whose verdict and fields must follow the header bytes (doc/VOICE.md); a
 * parsed one's payload through AES-128-CTR with the session's reused
 * context, which must match a fresh context's output, in place too, and
 * decrypt back; a header built from the session's nonce must parse to what
 * it was built from; and hex both ways (keys and nonces travel as hex).
 *
 * Input: KEY(16 bytes) NONCE(16 bytes) DATAGRAM(the rest). */
#include <openssl/evp.h>

#include "fuzz.h"
#include "proto/voice_udp.h"

static struct voice_cipher cipher; /* a session's: one context, reused */
static uint8_t cipher_key[VOICE_KEY_LEN];
static bool have_cipher;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static enum voice_drop check_parse(const uint8_t *d, size_t len, struct voice_hdr *h)
{
    enum voice_drop r = voice_hdr_parse(d, len, h);
    FUZZ_CHECK(strcmp(voice_drop_name(r), "?") != 0);
    if (len < VOICE_HDR_LEN) {
        FUZZ_CHECK(r == VOICE_SHORT);
        return r;
    }
    FUZZ_CHECK(h->type == d[0] && h->flags == d[1] && h->payload_len == (d[2] << 8 | d[3]));
    FUZZ_CHECK(h->ssrc == be32(d + 4) && h->timestamp == be32(d + 8) &&
               h->sequence == be32(d + 12));
    if (d[0] != VOICE_TYPE)
        FUZZ_CHECK(r == VOICE_BAD_TYPE);
    else
        FUZZ_CHECK(r ==
                   (len == VOICE_HDR_LEN + (size_t)h->payload_len ? VOICE_OK : VOICE_BAD_LENGTH));
    return r;
}

/* AES-128-CTR of IN with a context of its own, as a reference. */
static void reference_ctr(const uint8_t *key, const uint8_t *ctr, const uint8_t *in, uint8_t *out,
                          size_t len)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0;
    FUZZ_CHECK(ctx && EVP_EncryptInit_ex(ctx, EVP_aes_128_ctr(), NULL, key, ctr) == 1);
    FUZZ_CHECK(EVP_EncryptUpdate(ctx, out, &n, in, (int)len) == 1 && (size_t)n == len);
    EVP_CIPHER_CTX_free(ctx);
}

static void check_cipher(const uint8_t *key, const uint8_t *d, size_t payload_len)
{
    if (!have_cipher || memcmp(key, cipher_key, VOICE_KEY_LEN)) {
        if (have_cipher)
            voice_cipher_free(&cipher);
        FUZZ_CHECK(voice_cipher_init(&cipher, key) == 0);
        memcpy(cipher_key, key, VOICE_KEY_LEN);
        have_cipher = true;
    }
    const uint8_t *in = d + VOICE_HDR_LEN;
    uint8_t *out = fuzz_xmalloc(payload_len), *want = fuzz_xmalloc(payload_len);
    uint8_t *inplace = fuzz_xmalloc(payload_len);
    FUZZ_CHECK(voice_cipher_apply(&cipher, d, in, out, payload_len) == 0);
    reference_ctr(key, d, in, want, payload_len);
    FUZZ_CHECK(!memcmp(out, want, payload_len));
    memcpy(inplace, out, payload_len);
    FUZZ_CHECK(voice_cipher_apply(&cipher, d, inplace, inplace, payload_len) == 0);
    FUZZ_CHECK(!memcmp(inplace, in, payload_len));
    free(out);
    free(want);
    free(inplace);
}

static void check_build(const uint8_t *nonce, const struct voice_hdr *h)
{
    uint8_t out[VOICE_HDR_LEN];
    voice_hdr_build(out, nonce, h->payload_len, h->timestamp, h->sequence);
    FUZZ_CHECK(out[0] == nonce[0] && out[1] == nonce[1] && !memcmp(out + 4, nonce + 4, 4));
    FUZZ_CHECK((out[2] << 8 | out[3]) == h->payload_len &&
               be32(out + 4) == voice_nonce_ssrc(nonce));
    FUZZ_CHECK(be32(out + 8) == h->timestamp && be32(out + 12) == h->sequence);
}

/* Hex out and back; and TEXT (the datagram as a string) in, which must be
 * refused unless it is exactly 2 * LEN hex digits. */
static void check_hex(const uint8_t *bytes, size_t len, const char *text)
{
    char *hex = fuzz_xmalloc(2 * len + 1);
    uint8_t *back = fuzz_xmalloc(len);
    voice_hex(bytes, len, hex);
    FUZZ_CHECK(strlen(hex) == 2 * len && strspn(hex, "0123456789abcdef") == 2 * len);
    FUZZ_CHECK(voice_unhex(hex, back, len) == 0 && !memcmp(back, bytes, len));
    bool digits = strlen(text) == 2 * len && strspn(text, "0123456789abcdefABCDEF") == 2 * len;
    FUZZ_CHECK((voice_unhex(text, back, len) == 0) == digits);
    free(hex);
    free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 * VOICE_KEY_LEN)
        return 0;
    const uint8_t *key = data, *nonce = data + VOICE_KEY_LEN;
    size_t len = size - 2 * VOICE_KEY_LEN;
    uint8_t *d = fuzz_xmalloc(len);
    memcpy(d, data + 2 * VOICE_KEY_LEN, len);
    struct voice_hdr h;
    if (check_parse(d, len, &h) == VOICE_OK) {
        check_cipher(key, d, h.payload_len);
        check_build(nonce, &h);
    }
    char *text = fuzz_xmalloc(len + 1);
    memcpy(text, d, len);
    text[len] = '\0';
    check_hex(d, len < 64 ? len : 64, text);
    check_hex(key, VOICE_KEY_LEN, text);
    free(text);
    free(d);
    return 0;
}
