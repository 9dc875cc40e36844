/* report.c - build error reports as JSON with cJSON (see report.h). */
#include "proto/report.h"

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

/* A worker's error text comes from a process that may be wild: keep only
 * printable ASCII so the report is always valid, readable JSON. */
static char *printable_copy(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    out[len] = '\0';
    return out;
}

static char *base64(const void *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

char *report_json(const struct report *r)
{
    cJSON *o = cJSON_CreateObject();
    char *detail = printable_copy(r->detail ? r->detail : "", r->detail ? r->detail_len : 0);
    char *corr = r->correlation_len ? base64(r->correlation, r->correlation_len) : NULL;
    char *text = NULL;
    if (o && detail && (!r->correlation_len || corr) &&
        cJSON_AddStringToObject(o, "route", r->route ? r->route : "") &&
        cJSON_AddStringToObject(o, "topic", r->topic ? r->topic : "") &&
        cJSON_AddStringToObject(o, "error", r->error) &&
        cJSON_AddStringToObject(o, "detail", detail) &&
        cJSON_AddNumberToObject(o, "attempts", r->attempts) &&
        (!r->ntries ||
         cJSON_AddItemToObject(o, "tries", cJSON_CreateStringArray(r->tries, (int)r->ntries))) &&
        (!corr || cJSON_AddStringToObject(o, "correlation_data", corr)) &&
        (!r->key ||
         (cJSON_AddStringToObject(o, "key", r->key) &&
          cJSON_AddItemToObject(o, "parts", cJSON_CreateStringArray(r->parts, (int)r->nparts)))))
        text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    free(detail);
    free(corr);
    return text;
}
