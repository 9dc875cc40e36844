/* voice_udp.c - see voice_udp.h. */
#include "proto/voice_udp.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

static const char *const drop_names[VOICE_DROP_COUNT] = {
    [VOICE_OK] = "ok",
    [VOICE_SHORT] = "short",
    [VOICE_BAD_TYPE] = "bad_type",
    [VOICE_BAD_LENGTH] = "bad_length",
    [VOICE_UNKNOWN] = "unknown_ssrc",
    [VOICE_REPLAYED] = "replayed",
};

const char *voice_drop_name(enum voice_drop d)
{
    return d < VOICE_DROP_COUNT ? drop_names[d] : "?";
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

enum voice_drop voice_hdr_parse(const uint8_t *buf, size_t len, struct voice_hdr *h)
{
    if (len < VOICE_HDR_LEN)
        return VOICE_SHORT;
    h->type = buf[0];
    h->flags = buf[1];
    h->payload_len = (uint16_t)(buf[2] << 8 | buf[3]);
    h->ssrc = be32(buf + 4);
    h->timestamp = be32(buf + 8);
    h->sequence = be32(buf + 12);
    if (h->type != VOICE_TYPE)
        return VOICE_BAD_TYPE;
    if (len != VOICE_HDR_LEN + (size_t)h->payload_len)
        return VOICE_BAD_LENGTH;
    return VOICE_OK;
}

void voice_hdr_build(uint8_t out[VOICE_HDR_LEN], const uint8_t nonce[VOICE_HDR_LEN],
                     uint16_t payload_len, uint32_t timestamp, uint32_t sequence)
{
    memcpy(out, nonce, VOICE_HDR_LEN);
    out[2] = (uint8_t)(payload_len >> 8);
    out[3] = (uint8_t)payload_len;
    put_be32(out + 8, timestamp);
    put_be32(out + 12, sequence);
}

uint32_t voice_nonce_ssrc(const uint8_t nonce[VOICE_HDR_LEN])
{
    return be32(nonce + 4);
}

int voice_cipher_init(struct voice_cipher *c, const uint8_t key[VOICE_KEY_LEN])
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx || EVP_EncryptInit_ex(ctx, EVP_aes_128_ctr(), NULL, key, NULL) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        c->ctx = NULL;
        return -1;
    }
    c->ctx = ctx;
    return 0;
}

int voice_cipher_apply(struct voice_cipher *c, const uint8_t hdr[VOICE_HDR_LEN], const uint8_t *in,
                       uint8_t *out, size_t len)
{
    int n = 0;
    /* Only the counter block changes: the key schedule stays in the context. */
    if (!c->ctx || len > INT32_MAX || EVP_EncryptInit_ex(c->ctx, NULL, NULL, NULL, hdr) != 1 ||
        EVP_EncryptUpdate(c->ctx, out, &n, in, (int)len) != 1 || (size_t)n != len)
        return -1;
    return 0;
}

void voice_cipher_free(struct voice_cipher *c)
{
    EVP_CIPHER_CTX_free(c->ctx);
    c->ctx = NULL;
}

void voice_hex(const uint8_t *bytes, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * len] = '\0';
}

int voice_unhex(const char *text, uint8_t *bytes, size_t len)
{
    size_t got = 0;
    if (strlen(text) != 2 * len || OPENSSL_hexstr2buf_ex(bytes, len, &got, text, '\0') != 1 ||
        got != len)
        return -1;
    return 0;
}
