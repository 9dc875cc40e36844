/* voice_udp.h - the audio datagrams of xiaozhi voice devices (doc/VOICE.md):
 * the 16-byte header, and AES-128-CTR with the header as the counter
 * block. Pure functions over bytes, plus one OpenSSL context per session.
 *
 *  byte 0     1      2..3         4..7   8..11      12..15
 *       type  flags  payload_len  ssrc   timestamp  sequence   payload
 *       0x01  0x00   big-endian   (from the session's nonce)   big-endian
 *
 * There is no MAC: a datagram that parses and decrypts is still hostile. */
#ifndef MQFORK_PROTO_VOICE_UDP_H
#define MQFORK_PROTO_VOICE_UDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VOICE_HDR_LEN   16
#define VOICE_KEY_LEN   16
#define VOICE_TYPE      0x01
#define VOICE_MAX_DGRAM (VOICE_HDR_LEN + 65535)

struct voice_hdr {
    uint8_t type, flags;
    uint16_t payload_len;
    uint32_t ssrc, timestamp, sequence;
};

/* Why a datagram was dropped before it reached a session. The names
 * (voice_drop_name) are counter names, part of the statistics contract. */
enum voice_drop {
    VOICE_OK = 0,
    VOICE_SHORT,      /* shorter than the header */
    VOICE_BAD_TYPE,   /* type is not 0x01 */
    VOICE_BAD_LENGTH, /* length is not 16 + payload_len */
    VOICE_UNKNOWN,    /* ssrc names no session */
    VOICE_REPLAYED,   /* sequence not above the last accepted one: replayed or late */
    VOICE_DROP_COUNT
};

const char *voice_drop_name(enum voice_drop d);

/* Parse the header of the LEN-byte datagram BUF into *H. */
enum voice_drop voice_hdr_parse(const uint8_t *buf, size_t len, struct voice_hdr *h);

/* Write the header of a packet into OUT: NONCE (the session's 16 bytes)
 * with payload_len, timestamp and sequence set. */
void voice_hdr_build(uint8_t out[VOICE_HDR_LEN], const uint8_t nonce[VOICE_HDR_LEN],
                     uint16_t payload_len, uint32_t timestamp, uint32_t sequence);

/* The ssrc a nonce carries (bytes 4..7, big-endian). */
uint32_t voice_nonce_ssrc(const uint8_t nonce[VOICE_HDR_LEN]);

/* A session's cipher: the key set once, the counter block per packet. */
struct voice_cipher {
    void *ctx; /* EVP_CIPHER_CTX */
};

int voice_cipher_init(struct voice_cipher *c, const uint8_t key[VOICE_KEY_LEN]);
/* Encrypt or decrypt (the same in CTR mode) LEN bytes from IN to OUT with
 * the counter block HDR. 0, or -1. */
int voice_cipher_apply(struct voice_cipher *c, const uint8_t hdr[VOICE_HDR_LEN], const uint8_t *in,
                       uint8_t *out, size_t len);
void voice_cipher_free(struct voice_cipher *c);

/* Lower-case hex of LEN bytes into OUT (2 * LEN + 1 bytes), and back:
 * voice_unhex returns 0 when TEXT is exactly 2 * LEN hex digits. */
void voice_hex(const uint8_t *bytes, size_t len, char *out);
int voice_unhex(const char *text, uint8_t *bytes, size_t len);

#endif
