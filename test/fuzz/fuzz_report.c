/* fuzz_report.c - libFuzzer harness for proto/report.c: an error report
 * built from any route, topic, error word, worker-written detail and
 * correlation data must be a JSON object (cJSON reads it back) holding
 * exactly those values, the detail made printable and the correlation data
 * base64 encoded; and valid UTF-8 whenever what went in was.
 *
 * Input: ROUTE \0 TOPIC \0 ERROR \0 FLAGS ATTEMPTS(4 bytes)
 *        DETAIL(2-byte length + bytes) CORRELATION(2-byte length + bytes)
 * FLAGS: bit 0 no route (NULL), bit 1 no topic, bit 2 no detail. */
#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "fuzz.h"
#include "proto/report.h"

static const char *field(const cJSON *o, const char *name)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    FUZZ_CHECK(cJSON_IsString(f));
    return f->valuestring;
}

/* Printable ASCII stays, anything else became '?'. */
static void check_detail(const char *got, const struct report *r)
{
    FUZZ_CHECK(strlen(got) == (r->detail ? r->detail_len : 0));
    for (size_t i = 0; r->detail && i < r->detail_len; i++) {
        char c = r->detail[i];
        FUZZ_CHECK(got[i] == (c >= 0x20 && c < 0x7f ? c : '?'));
    }
}

static void check_correlation(const cJSON *o, const struct report *r)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "correlation_data");
    if (!r->correlation_len) {
        FUZZ_CHECK(f == NULL);
        return;
    }
    const char *b64 = field(o, "correlation_data");
    size_t n = strlen(b64);
    FUZZ_CHECK(n == 4 * ((r->correlation_len + 2) / 3));
    unsigned char *raw = fuzz_xmalloc(n / 4 * 3);
    FUZZ_CHECK(EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n) == (int)(n / 4 * 3));
    FUZZ_CHECK(!memcmp(raw, r->correlation, r->correlation_len));
    free(raw);
}

static void check_report(const char *json, const struct report *r)
{
    cJSON *o = cJSON_ParseWithOpts(json, NULL, true);
    FUZZ_CHECK(cJSON_IsObject(o));
    FUZZ_CHECK(!strcmp(field(o, "route"), r->route ? r->route : ""));
    FUZZ_CHECK(!strcmp(field(o, "topic"), r->topic ? r->topic : ""));
    FUZZ_CHECK(!strcmp(field(o, "error"), r->error));
    check_detail(field(o, "detail"), r);
    const cJSON *attempts = cJSON_GetObjectItemCaseSensitive(o, "attempts");
    FUZZ_CHECK(cJSON_IsNumber(attempts) && attempts->valuedouble == r->attempts);
    check_correlation(o, r);
    cJSON_Delete(o);
}

static bool utf8_or_null(const char *s)
{
    return !s || fuzz_utf8((const uint8_t *)s, strlen(s));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    char *route = fuzz_str(&in), *topic = fuzz_str(&in), *error = fuzz_str(&in);
    uint8_t flags = fuzz_byte(&in);
    struct report r = {
        .route = flags & 1 ? NULL : route,
        .topic = flags & 2 ? NULL : topic,
        .error = error,
    };
    r.attempts = (uint32_t)fuzz_u16(&in) << 16;
    r.attempts |= fuzz_u16(&in);
    uint8_t *detail = fuzz_bytes(&in, &r.detail_len);
    r.detail = flags & 4 ? NULL : (const char *)detail;
    uint8_t *corr = fuzz_bytes(&in, &r.correlation_len);
    r.correlation = corr;
    char *json = report_json(&r);
    FUZZ_CHECK(json != NULL);
    check_report(json, &r);
    if (utf8_or_null(r.route) && utf8_or_null(r.topic) && utf8_or_null(r.error))
        FUZZ_CHECK(fuzz_utf8((const uint8_t *)json, strlen(json)));
    free(json);
    free(route);
    free(topic);
    free(error);
    free(detail);
    free(corr);
    return 0;
}
