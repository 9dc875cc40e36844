/* fuzz_mqtt_v5.c - libFuzzer harness for an MQTT v5 request's response
 * topic and correlation data, from the message to the reply: a message
 * with any topic, payload and properties goes through routes_on_message
 * (supervisor/routes.c) for one route with any filter, templates and
 * reply_allow. The engine and the MQTT client are stand-ins: the engine
 * accepts or refuses and answers at once with any outcome, the client
 * checks what is published: every routed message ends in exactly its one
 * reply or error report, only ever to a topic a broker takes (an unrouted
 * one is only counted); a reply goes to the response topic when
 * reply_allow takes it, else where the reply template says; an error
 * report is the JSON of report.h; the correlation data comes back byte for
 * byte.
 *
 * The properties are a real libmosquitto list, read the way
 * on_mosq_message (supervisor/mqtt.c) reads them; a response topic that
 * libmosquitto refuses to put in a message never arrives.
 *
 * Input: FLAGS OUTCOME QOS ATTEMPTS, then FILTER \0 REPLY \0 STREAM \0
 * REPLY_ALLOW \0 (filter templates, one a line) TOPIC \0 RESPONSE_TOPIC \0,
 * then CORRELATION, RESULT and PAYLOAD (each a 2-byte length + bytes).
 * FLAGS: bit 0 a response topic, bit 1 correlation data, bit 2 a reply
 * template, bit 3 a stream template, bit 4 reply_allow. OUTCOME: a job
 * status; bit 7 set: the engine refuses the job with it. */
#include <cjson/cJSON.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "fuzz.h"
#include "proto/job.h"
#include "proto/topic.h"
#include "shm/statblock.h"
#include "supervisor/engine.h"
#include "supervisor/routes.h"

#define ERRORS_TOPIC "fuzz/errors"
#define ROUTE_NAME   "fuzzroute"
#define TOPIC_MAX    1024 /* routes.c's buffer for a reply topic */
#define MAX_ALLOW    4

/* What one message is, and what it came to. */
static struct {
    const struct mqtt_message *msg;
    uint8_t outcome;
    uint8_t attempts;
    const uint8_t *result;
    size_t result_len;
    engine_done_fn done; /* of the job submitted; the job itself was on the stack */
    void *ctx;
    unsigned submits, publishes, refusals;
    char *topic; /* of the last publish */
    void *payload;
    size_t len;
    int qos;
} now;

static enum job_status outcome_status(void)
{
    return (enum job_status)(now.outcome % JOB_STATUS_COUNT);
}

/* Whether the engine refuses the job (with outcome_status()): with an
 * error, as engine_submit does, never with JOB_OK or JOB_FILTERED. */
static bool refused(void)
{
    return now.outcome & 0x80 && outcome_status() != JOB_OK && outcome_status() != JOB_FILTERED;
}

/* ---- the stand-ins ----------------------------------------------------- */

int engine_add_kind(struct engine *e, const char *name, const char *handler,
                    const struct conf_params *params)
{
    return 0;
}

int engine_kind_by_name(const struct engine *e, const char *name)
{
    return 0;
}

enum job_status engine_submit(struct engine *e, const struct engine_job *j, uint64_t *id)
{
    now.submits++;
    now.done = j->done;
    now.ctx = j->ctx;
    FUZZ_CHECK(j->payload == now.msg->payload && j->len == now.msg->len);
    FUZZ_CHECK(!j->stream || strlen(j->stream) == j->stream_len);
    return refused() ? outcome_status() : JOB_OK;
}

void engine_count_refusal(struct engine *e, uint32_t kind, enum job_status reason)
{
    FUZZ_CHECK(reason == JOB_E_BAD_INPUT);
    now.refusals++;
}

/* The routes' block: instance 0's head, then its data. */
static _Alignas(64) uint8_t block[STATS_BLOCK_HEAD + 256];
static size_t unrouted_at = SIZE_MAX; /* offset of mqtt_unrouted in its data */

struct stats_block *engine_add_block(struct engine *e, const struct stats_block_spec *spec)
{
    FUZZ_CHECK(spec->size <= sizeof(block) - STATS_BLOCK_HEAD);
    memset(block, 0, sizeof(block));
    for (unsigned i = 0; i < spec->nfields; i++)
        if (!strcmp(spec->fields[i].name, "mqtt_unrouted"))
            unrouted_at = spec->fields[i].offset;
    return (struct stats_block *)block;
}

static uint64_t unrouted(void)
{
    uint64_t n;
    FUZZ_CHECK(unrouted_at != SIZE_MAX);
    memcpy(&n, block + STATS_BLOCK_HEAD + unrouted_at, sizeof(n));
    return n;
}

int mqtt_subscribe(struct mqtt *m, const char *filter, int qos, struct mqtt_sink *sink)
{
    return 0;
}

void mqtt_unsubscribe(struct mqtt *m, const char *filter, struct mqtt_sink *sink)
{
}

static bool same_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (!alen || !memcmp(a, b, alen));
}

/* Kept for check_outcome, which knows what was due. */
void mqtt_publish(struct mqtt *m, const char *topic, const void *payload, size_t len, int qos,
                  bool retain, const void *correlation, size_t correlation_len)
{
    FUZZ_CHECK(now.publishes++ == 0);
    FUZZ_CHECK(!retain && !topic_publish_problem(topic, strlen(topic)));
    FUZZ_CHECK(
        same_bytes(correlation, correlation_len, now.msg->correlation, now.msg->correlation_len));
    now.topic = strdup(topic);
    now.payload = fuzz_xmalloc(len);
    memcpy(now.payload, payload, len);
    now.len = len;
    now.qos = qos;
}

/* ---- one message ------------------------------------------------------- */

/* The last publish was an error report about this message, with ERROR: the
 * JSON of report.h on errors.topic. */
static void check_report(enum job_status error)
{
    FUZZ_CHECK(now.publishes == 1 && !strcmp(now.topic, ERRORS_TOPIC) && now.qos == 1);
    cJSON *o = cJSON_ParseWithLengthOpts(now.payload, now.len, NULL, false);
    FUZZ_CHECK(cJSON_IsObject(o));
    const cJSON *route = cJSON_GetObjectItemCaseSensitive(o, "route");
    const cJSON *topic = cJSON_GetObjectItemCaseSensitive(o, "topic");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(o, "error");
    const cJSON *corr = cJSON_GetObjectItemCaseSensitive(o, "correlation_data");
    FUZZ_CHECK(cJSON_IsString(route) && !strcmp(route->valuestring, ROUTE_NAME));
    FUZZ_CHECK(cJSON_IsString(topic) && !strcmp(topic->valuestring, now.msg->topic));
    FUZZ_CHECK(cJSON_IsString(err) && !strcmp(err->valuestring, job_status_name(error)));
    FUZZ_CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "attempts")));
    FUZZ_CHECK(!corr == !now.msg->correlation_len);
    if (corr) {
        FUZZ_CHECK(cJSON_IsString(corr));
        size_t n = strlen(corr->valuestring);
        unsigned char *raw = fuzz_xmalloc(n / 4 * 3 + 3);
        int got = EVP_DecodeBlock(raw, (const unsigned char *)corr->valuestring, (int)n);
        FUZZ_CHECK(got >= (int)now.msg->correlation_len);
        FUZZ_CHECK(!memcmp(raw, now.msg->correlation, now.msg->correlation_len));
        free(raw);
    }
    cJSON_Delete(o);
}

/* Whether one of R's reply_allow filters, filled from LV, takes the
 * response topic RT of a request on TOPIC. */
static bool allowed(const struct conf_route *r, const char *topic, const struct topic_levels *lv,
                    const char *rt)
{
    char filter[TOPIC_MAX];
    bool ok = false;
    for (size_t i = 0; i < r->reply_allow.count && !strpbrk(topic, "+#"); i++)
        ok |= topic_expand(r->reply_allow.items[i], lv, filter, sizeof(filter)) >= 0 &&
              topic_match(filter, rt, NULL);
    return ok;
}

/* Where a reply to MSG should go for route R matched with LV, into *TO
 * (NULL: no reply): the response topic when reply_allow takes it, else the
 * reply template expanded. False when the message must be refused. */
static bool expected_reply(const struct conf_route *r, const struct mqtt_message *msg,
                           const struct topic_levels *lv, char **to)
{
    const char *rt = msg->response_topic;
    *to = NULL;
    if (rt && r->reply_allow.count) {
        *to = strdup(rt);
        return !topic_publish_problem(rt, strlen(rt)) && allowed(r, msg->topic, lv, rt);
    }
    if (!r->reply)
        return true;
    *to = fuzz_xmalloc(TOPIC_MAX);
    return topic_expand(r->reply, lv, *to, TOPIC_MAX) >= 0 &&
           !topic_publish_problem(*to, strlen(*to));
}

/* Answer the accepted job at once with the outcome the input chose. */
static void answer(void)
{
    struct engine_outcome o = {
        .status = outcome_status(),
        .data = now.result,
        .len = now.result_len,
        .attempts = now.attempts,
    };
    now.done(now.ctx, &o);
}

/* The accepted job's answer: its reply, nothing, or its error report. */
static void check_answer(const struct conf_route *r, const char *reply)
{
    enum job_status st = outcome_status();
    FUZZ_CHECK(now.publishes == 0);
    answer();
    if (st == JOB_FILTERED || (st == JOB_OK && !reply)) {
        FUZZ_CHECK(now.publishes == 0);
    } else if (st == JOB_OK) {
        FUZZ_CHECK(now.publishes == 1 && !strcmp(now.topic, reply) && now.qos == r->qos);
        FUZZ_CHECK(same_bytes(now.payload, now.len, now.result, now.result_len));
    } else {
        check_report(st);
    }
}

/* What routes_on_message must have done with MSG. */
static void check_outcome(const struct conf_route *r, const struct mqtt_message *msg)
{
    struct topic_levels lv;
    char stream[ENGINE_STREAM_KEY_MAX + 1], *reply;
    if (!topic_match(r->subscribe.items[0], msg->topic, &lv)) {
        FUZZ_CHECK(now.submits == 0 && now.publishes == 0 && unrouted() == 1);
        return;
    }
    FUZZ_CHECK(unrouted() == 0);
    bool ok = expected_reply(r, msg, &lv, &reply);
    ok = ok && (!r->stream || topic_expand(r->stream, &lv, stream, sizeof(stream)) >= 0);
    FUZZ_CHECK(now.submits == ok && now.refusals == !ok);
    if (!ok)
        check_report(JOB_E_BAD_INPUT);
    else if (refused())
        check_report(outcome_status());
    else
        check_answer(r, reply);
    free(reply);
}

/* The message's properties as a broker would deliver them, read back as
 * on_mosq_message reads them. False when libmosquitto refuses them. */
static bool with_properties(struct mqtt_message *msg, const char *response, const uint8_t *corr,
                            size_t corr_len, char **rt_out, void **corr_out)
{
    mosquitto_property *props = NULL;
    uint16_t len = 0;
    bool ok = (!response ||
               mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, response) == 0) &&
              (!corr || mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, corr,
                                                      (uint16_t)corr_len) == 0);
    *rt_out = NULL;
    *corr_out = NULL;
    if (ok && props) {
        mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, rt_out, false);
        mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, corr_out, &len, false);
    }
    mosquitto_property_free_all(&props);
    msg->response_topic = *rt_out;
    msg->correlation = *corr_out;
    msg->correlation_len = len;
    return ok;
}

static void run(struct conf *c, struct mqtt_message *msg)
{
    struct routes *r = routes_new(c, NULL, NULL);
    FUZZ_CHECK(r != NULL);
    FUZZ_CHECK(routes_attach(r, NULL) == 0);
    routes_on_message(r, msg);
    check_outcome(&c->routes[0], msg);
    routes_free(r);
}

static char *optional(char *s, bool present)
{
    if (present)
        return s;
    free(s);
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    uint8_t flags = fuzz_byte(&in);
    memset(&now, 0, sizeof(now));
    now.outcome = fuzz_byte(&in);
    struct conf_route route = {.name = ROUTE_NAME, .job = "test.echo", .qos = fuzz_byte(&in) % 3};
    now.attempts = fuzz_byte(&in);
    char *filter = fuzz_str(&in);
    route.subscribe = (struct conf_strings){.items = &filter, .count = 1};
    route.reply = optional(fuzz_str(&in), flags & 4);
    route.stream = optional(fuzz_str(&in), flags & 8);
    char *allow_text = fuzz_str(&in), *allow[MAX_ALLOW];
    route.reply_allow = (struct conf_strings){.items = allow, .count = 0};
    for (char *line = strtok(allow_text, "\n"); line && route.reply_allow.count < MAX_ALLOW;
         line = strtok(NULL, "\n"))
        allow[route.reply_allow.count++] = line;
    if (!(flags & 16))
        route.reply_allow.count = 0;
    char *topic = fuzz_str(&in), *response = optional(fuzz_str(&in), flags & 1);
    size_t corr_len;
    uint8_t *corr = fuzz_bytes(&in, &corr_len), *payload;
    uint8_t *result = fuzz_bytes(&in, &now.result_len);
    now.result = result;
    struct mqtt_message msg = {.topic = topic};
    payload = fuzz_bytes(&in, &msg.len);
    msg.payload = payload;
    struct conf c = {.errors_topic = ERRORS_TOPIC, .routes = &route, .nroutes = 1};
    char *rt;
    void *cd;
    now.msg = &msg;
    if (with_properties(&msg, response, flags & 2 ? corr : NULL, corr_len, &rt, &cd))
        run(&c, &msg);
    free(rt);
    free(cd);
    free(now.topic);
    free(now.payload);
    free(filter);
    free(route.reply);
    free(route.stream);
    free(allow_text);
    free(topic);
    free(response);
    free(corr);
    free(result);
    free(payload);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_LVL_ERROR);
    return 0;
}
