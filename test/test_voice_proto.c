/* test_voice_proto.c - the voice device protocol's pure parts: datagram
 * headers (every reason to drop one), AES-128-CTR against the NIST vector
 * and as the firmware uses it, the control messages a device sends (as
 * the firmware writes them, and broken every way), the server's replies
 * as the firmware reads them, and the device side's parse of the hello
 * reply (voice_server_hello_parse). */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/voice_json.h"
#include "proto/voice_udp.h"
#include "test/t.h"

static void test_header(void)
{
    uint8_t nonce[VOICE_HDR_LEN] = {0x01, 0x00, 0, 0, 0xde, 0xad, 0xbe, 0xef};
    uint8_t d[VOICE_HDR_LEN + 3] = {0};
    voice_hdr_build(d, nonce, 3, 0x01020304, 7);
    struct voice_hdr h;
    T_CHECK(voice_hdr_parse(d, sizeof(d), &h) == VOICE_OK, "a built header parses");
    T_CHECK(h.payload_len == 3 && h.ssrc == 0xdeadbeef && h.timestamp == 0x01020304 &&
                h.sequence == 7,
            "fields round-trip (len %u ssrc %x ts %x seq %u)", h.payload_len, h.ssrc, h.timestamp,
            h.sequence);
    T_CHECK(d[2] == 0 && d[3] == 3 && d[12] == 0 && d[15] == 7, "big-endian on the wire");
    T_CHECK(voice_nonce_ssrc(nonce) == 0xdeadbeef, "ssrc from the nonce");
    T_CHECK(voice_hdr_parse(d, 15, &h) == VOICE_SHORT, "15 bytes: short");
    T_CHECK(voice_hdr_parse(d, sizeof(d) - 1, &h) == VOICE_BAD_LENGTH, "one byte missing");
    T_CHECK(voice_hdr_parse(d, VOICE_HDR_LEN, &h) == VOICE_BAD_LENGTH, "payload missing");
    d[0] = 2;
    T_CHECK(voice_hdr_parse(d, sizeof(d), &h) == VOICE_BAD_TYPE, "type 2");
    T_CHECK(strcmp(voice_drop_name(VOICE_REPLAYED), "replayed") == 0, "drop names");
}

/* NIST SP 800-38A, F.5.1 (CTR-AES128.Encrypt), first block. */
static void test_cipher(void)
{
    uint8_t key[16], ctr[16], plain[16], want[16], out[16], back[16];
    T_REQUIRE(voice_unhex("2b7e151628aed2a6abf7158809cf4f3c", key, 16) == 0 &&
                  voice_unhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", ctr, 16) == 0 &&
                  voice_unhex("6bc1bee22e409f96e93d7e117393172a", plain, 16) == 0 &&
                  voice_unhex("874D6191B620E3261BEF6864990DB6CE", want, 16) == 0,
              "hex in either case");
    struct voice_cipher c;
    T_REQUIRE(voice_cipher_init(&c, key) == 0, "cipher");
    T_CHECK(voice_cipher_apply(&c, ctr, plain, out, 16) == 0 && memcmp(out, want, 16) == 0,
            "the NIST vector");
    T_CHECK(voice_cipher_apply(&c, ctr, out, back, 16) == 0 && memcmp(back, plain, 16) == 0,
            "CTR decrypts what it encrypted, with the context reused");
    voice_cipher_free(&c);
    char hex[33];
    voice_hex(key, 16, hex);
    T_CHECK(strcmp(hex, "2b7e151628aed2a6abf7158809cf4f3c") == 0, "lower-case hex out");
    T_CHECK(voice_unhex("2b7e", key, 16) < 0 &&
                voice_unhex("zz7e151628aed2a6abf7158809cf4f3c", key, 16) < 0,
            "bad hex refused");
}

static int parse(const char *json, struct voice_msg *m, char *why)
{
    return voice_msg_parse(json, strlen(json), m, why, 256);
}

static void test_device_messages(void)
{
    struct voice_msg m;
    char why[256];
    /* As the firmware writes it (GetHelloMessage). */
    const char *hello = "{\"type\":\"hello\",\"version\":3,\"transport\":\"udp\",\"features\":"
                        "{\"mcp\":true},\"audio_params\":{\"format\":\"opus\",\"sample_rate\":"
                        "16000,\"channels\":1,\"frame_duration\":60}}";
    T_CHECK(parse(hello, &m, why) == 0 && m.type == VOICE_MSG_HELLO, "firmware hello: %s", why);
    T_CHECK(m.audio.sample_rate == 16000 && m.audio.channels == 1 && m.audio.frame_ms == 60,
            "uplink audio params");
    static const struct {
        const char *json, *why;
    } bad[] = {
        {"{\"type\":\"hello\",\"version\":2,\"transport\":\"udp\"}", "version 2"},
        {"{\"type\":\"hello\",\"version\":3,\"transport\":\"websocket\"}", "transport"},
        {"{\"type\":\"hello\",\"version\":3.5,\"transport\":\"udp\"}", "'version'"},
        {"{\"type\":\"hello\",\"version\":3,\"transport\":\"udp\"}", "audio_params"},
        {"{\"type\":\"hello\",\"version\":3,\"transport\":\"udp\",\"audio_params\":{\"format\":"
         "\"pcm\"}}",
         "format"},
        {"{\"type\":\"hello\",\"version\":3,\"transport\":\"udp\",\"audio_params\":{\"format\":"
         "\"opus\",\"sample_rate\":44100,\"channels\":1,\"frame_duration\":60}}",
         "44100"},
        {"{\"type\":\"listen\",\"state\":\"sing\"}", "listen.state"},
        {"{\"type\":\"listen\",\"state\":\"start\",\"mode\":\"loud\"}", "listen.mode"},
        {"{\"type\":\"abort\",\"reason\":7}", "'reason'"},
        {"{\"type\":3}", "type"},
        {"[1,2]", "object"},
        {"{\"type\":\"hello\"", "JSON"},
        {"{\"type\":\"goodbye\",\"session_id\":\"0123456789012345678901234567890123456789x\"}",
         "session_id"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        T_CHECK(parse(bad[i].json, &m, why) < 0 && strstr(why, bad[i].why),
                "refused with a reason naming '%s': %s", bad[i].why, why);
    }
    T_CHECK(parse("{\"session_id\":\"s1\",\"type\":\"listen\",\"state\":\"detect\",\"mode\":"
                  "\"manual\",\"text\":\"hi\"}",
                  &m, why) == 0 &&
                m.type == VOICE_MSG_LISTEN && m.listen == VOICE_LISTEN_DETECT &&
                m.mode == VOICE_MODE_MANUAL && strcmp(m.text, "hi") == 0 &&
                strcmp(m.session_id, "s1") == 0,
            "listen detect: %s", why);
    T_CHECK(parse("{\"type\":\"abort\",\"reason\":\"wake_word_detected\"}", &m, why) == 0 &&
                m.type == VOICE_MSG_ABORT && strcmp(m.text, "wake_word_detected") == 0,
            "abort with a reason");
    T_CHECK(parse("{\"type\":\"mcp\",\"payload\":{\"jsonrpc\":\"2.0\"}}", &m, why) == 0 &&
                m.type == VOICE_MSG_MCP,
            "mcp");
    T_CHECK(parse("{\"type\":\"iot\"}", &m, why) == 0 && m.type == VOICE_MSG_OTHER, "other");
    char big[VOICE_JSON_MAX + 2];
    memset(big, ' ', sizeof(big));
    T_CHECK(voice_msg_parse(big, sizeof(big), &m, why, sizeof(why)) < 0, "too long refused");
}

/* The reply read back the way the firmware reads it (ParseServerHello). */
static void test_hello_reply(void)
{
    struct voice_hello_reply r = {
        .session_id = "abc",
        .server = "203.0.113.7",
        .port = 8884,
        .downlink = {.sample_rate = 24000, .channels = 1, .frame_ms = 60},
    };
    for (int i = 0; i < 16; i++) {
        r.key[i] = (uint8_t)(i * 17);
        r.nonce[i] = (uint8_t)(0xf0 + i);
    }
    char *json = voice_hello_json(&r);
    cJSON *o = cJSON_Parse(json);
    T_REQUIRE(o, "the reply is JSON: %s", json);
    const cJSON *udp = cJSON_GetObjectItem(o, "udp");
    const cJSON *ap = cJSON_GetObjectItem(o, "audio_params");
    uint8_t key[16], nonce[16];
    T_CHECK(!strcmp(cJSON_GetObjectItem(o, "type")->valuestring, "hello") &&
                !strcmp(cJSON_GetObjectItem(o, "transport")->valuestring, "udp") &&
                !strcmp(cJSON_GetObjectItem(o, "session_id")->valuestring, "abc") &&
                cJSON_GetObjectItem(o, "version")->valueint == 3,
            "type, transport, session_id, version");
    T_CHECK(!strcmp(cJSON_GetObjectItem(udp, "server")->valuestring, "203.0.113.7") &&
                cJSON_GetObjectItem(udp, "port")->valueint == 8884 &&
                !strcmp(cJSON_GetObjectItem(udp, "encryption")->valuestring, "aes-128-ctr"),
            "udp server, port, encryption");
    T_CHECK(voice_unhex(cJSON_GetObjectItem(udp, "key")->valuestring, key, 16) == 0 &&
                voice_unhex(cJSON_GetObjectItem(udp, "nonce")->valuestring, nonce, 16) == 0 &&
                !memcmp(key, r.key, 16) && !memcmp(nonce, r.nonce, 16),
            "key and nonce as 32 hex digits");
    T_CHECK(cJSON_GetObjectItem(ap, "sample_rate")->valueint == 24000 &&
                cJSON_GetObjectItem(ap, "frame_duration")->valueint == 60,
            "downlink audio params");
    cJSON_Delete(o);
    free(json);
    json = voice_tts_json("abc", "sentence_start", "hello \"you\"");
    T_CHECK(json && strstr(json, "\"text\":\"hello \\\"you\\\"\""), "text escaped: %s", json);
    free(json);
}

/* The hello reply as a device reads it: what voice_hello_json writes comes
 * back field for field; defaults as the firmware's; every broken reply is
 * refused with a reason. */
static void test_server_hello(void)
{
    struct voice_hello_reply r = {
        .session_id = "s-42",
        .server = "192.0.2.1",
        .port = 9000,
        .downlink = {.sample_rate = 16000, .channels = 1, .frame_ms = 60},
    };
    for (int i = 0; i < 16; i++) {
        r.key[i] = (uint8_t)(255 - i);
        r.nonce[i] = (uint8_t)(i * 3);
    }
    char *json = voice_hello_json(&r), why[256] = "";
    struct voice_server_hello h;
    T_REQUIRE(json, "reply built");
    T_CHECK(voice_server_hello_parse(json, strlen(json), &h, why, sizeof(why)) == 0,
            "our reply parses: %s", why);
    T_CHECK(!strcmp(h.session_id, "s-42") && !strcmp(h.server, "192.0.2.1") && h.port == 9000 &&
                !memcmp(h.key, r.key, 16) && !memcmp(h.nonce, r.nonce, 16),
            "session, server, port, key, nonce");
    T_CHECK(h.downlink.sample_rate == 16000 && h.downlink.frame_ms == 60, "downlink format");
    free(json);
    const char *bare = "{\"type\":\"hello\",\"transport\":\"udp\",\"udp\":{\"server\":\"h\","
                       "\"port\":1,\"key\":\"000102030405060708090a0b0c0d0e0f\",\"nonce\":"
                       "\"0100000012345678000000000000000f\"}}";
    T_CHECK(voice_server_hello_parse(bare, strlen(bare), &h, why, sizeof(why)) == 0 &&
                h.session_id[0] == '\0' && h.downlink.sample_rate == 24000 &&
                h.downlink.frame_ms == 60 && h.downlink.channels == 1 && h.nonce[7] == 0x78,
            "no session_id, no audio_params: the firmware's defaults (%s)", why);
    static const struct {
        const char *json, *why;
    } bad[] = {
        {"{\"type\":\"goodbye\"}", "type"},
        {"{\"type\":\"hello\",\"transport\":\"websocket\"}", "transport"},
        {"{\"type\":\"hello\",\"transport\":\"udp\"}", "udp object"},
        {"{\"type\":\"hello\",\"transport\":\"udp\",\"udp\":{\"port\":1}}", "udp.server"},
        {"{\"type\":\"hello\",\"transport\":\"udp\",\"udp\":{\"server\":\"h\",\"port\":0}}",
         "'port'"},
        {"{\"type\":\"hello\",\"transport\":\"udp\",\"udp\":{\"server\":\"h\",\"port\":"
         "65536}}",
         "'port'"},
        {"{\"type\":\"hello\",\"transport\":\"udp\",\"udp\":{\"server\":\"h\",\"port\":1,"
         "\"key\":\"0001\"}}",
         "udp.key"},
        {"{\"type\":\"hello\",\"transport\":\"udp\",\"udp\":{\"server\":\"h\",\"port\":1,"
         "\"key\":\"000102030405060708090a0b0c0d0e0f\",\"nonce\":"
         "\"zz00000012345678000000000000000f\"}}",
         "udp.nonce"},
        {"{\"type\":\"hello\",\"transport\":\"udp\",\"audio_params\":{\"format\":\"opus\","
         "\"sample_rate\":44100,\"channels\":1,\"frame_duration\":60}}",
         "44100"},
        {"{\"type\":\"hello\",\"session_id\":\"0123456789012345678901234567890123456789x\"}",
         "transport"},
        {"{\"type\":\"hello\",\"transport\":\"udp\",\"session_id\":"
         "\"0123456789012345678901234567890123456789x\"}",
         "session_id"},
        {"hello", "JSON"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        T_CHECK(voice_server_hello_parse(bad[i].json, strlen(bad[i].json), &h, why, sizeof(why)) <
                        0 &&
                    strstr(why, bad[i].why),
                "reply refused with a reason naming '%s': %s", bad[i].why, why);
    }
}

int main(void)
{
    test_header();
    test_cipher();
    test_device_messages();
    test_hello_reply();
    test_server_hello();
    T_DONE();
}
