/* config_keys.c - what the configuration is: the table of keys of each
 * mapping (type, range, field), the defaults, and freeing a struct conf. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config_impl.h"

/* Field position in struct conf (C) or struct conf_route (R). */
#define C(f) .offset = offsetof(struct conf, f), .size = sizeof(((struct conf *)0)->f)
#define R(f) .offset = offsetof(struct conf_route, f), .size = sizeof(((struct conf_route *)0)->f)

/* clang-format off */
#define STR(n, at, fl, chk) {.name = n, .kind = KEY_STRING, at, .flags = fl, .check = chk}
#define INT(n, at, lo, hi)  {.name = n, .kind = KEY_INT, at, .imin = lo, .imax = hi}
#define NUM(n, at, lo, hi)  {.name = n, .kind = KEY_NUMBER, at, .dmin = lo, .dmax = hi}
#define BOOL(n, at)         {.name = n, .kind = KEY_BOOL, at}
#define CHOICE(n, at, list) {.name = n, .kind = KEY_CHOICE, at, .choices = list}
#define ENUM(n, at, list)   {.name = n, .kind = KEY_ENUM, at, .choices = list}
#define MAP(n, table)       {.name = n, .kind = KEY_MAP, .sub = table}
/* clang-format on */

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const protocols[] = {"5", "3.1.1", NULL};
/* Indexed by enum conf_priority. */
static const char *const priorities[] = {"high", "normal", "low", NULL};

static const struct key tls_keys[] = {
    STR("ca_file", C(broker.tls.ca_file), KEY_NULLABLE, NULL),
    STR("cert_file", C(broker.tls.cert_file), KEY_NULLABLE, NULL),
    STR("key_file", C(broker.tls.key_file), KEY_NULLABLE, NULL),
    BOOL("verify", C(broker.tls.verify)),
    {0},
};

static const struct key broker_keys[] = {
    STR("host", C(broker.host), 0, NULL),
    INT("port", C(broker.port), 1, 65535),
    CHOICE("protocol", C(broker.protocol), protocols),
    STR("client_id", C(broker.client_id), KEY_NULLABLE, NULL),
    STR("username", C(broker.username), KEY_NULLABLE | KEY_EMPTY_OK, NULL),
    STR("password", C(broker.password), KEY_NULLABLE | KEY_EMPTY_OK, NULL),
    INT("keepalive_s", C(broker.keepalive_s), 5, 3600),
    BOOL("clean_session", C(broker.clean_session)),
    INT("session_expiry_s", C(broker.session_expiry_s), 0, UINT32_MAX),
    NUM("reconnect_min_s", C(broker.reconnect_min_s), 0.01, 86400),
    NUM("reconnect_max_s", C(broker.reconnect_max_s), 0.01, 86400),
    STR("status_topic", C(broker.status_topic), KEY_NULLABLE, check_topic),
    INT("max_outbound", C(broker.max_outbound), 1, 10000000),
    {.name = "tls", .kind = KEY_MAP, .sub = tls_keys, C(broker.tls_enabled), .flags = KEY_MARK},
    {0},
};

static const struct key workers_keys[] = {
    INT("min", C(workers.min), 1, 1024),
    INT("max", C(workers.max), 1, 1024),
    INT("inflight", C(workers.inflight), 1, 1024),
    INT("inflight_us", C(workers.inflight_us), 1, 10000000),
    INT("short_reserve", C(workers.short_reserve), 0, 1023),
    INT("max_jobs", C(workers.max_jobs), 0, LLONG_MAX),
    INT("max_rss_mb", C(workers.max_rss_mb), 0, 1048576),
    NUM("backoff_max_s", C(workers.backoff_max_s), 0.01, 600),
    NUM("stable_s", C(workers.stable_s), 0.01, 86400),
    {0},
};

static const struct key limits_keys[] = {
    INT("max_payload", C(limits.max_payload), 1, 16777216),
    INT("max_pending", C(limits.max_pending), 1, 10000000),
    INT("slab_mb", C(limits.slab_mb), 1, 65536),
    {0},
};

static const struct key streams_keys[] = {
    INT("max", C(streams.max), 1, 1000000),
    NUM("idle_s", C(streams.idle_s), 0.1, 86400),
    {0},
};

static const struct key scaling_keys[] = {
    BOOL("enabled", C(scaling.enabled)),
    NUM("interval_s", C(scaling.interval_s), 0.01, 86400),
    NUM("up_cooldown_s", C(scaling.up_cooldown_s), 0.01, 86400),
    NUM("down_cooldown_s", C(scaling.down_cooldown_s), 0.01, 86400),
    INT("step", C(scaling.step), 1, 1024),
    NUM("up_load", C(scaling.up_load), 0, 1),
    NUM("up_cpu", C(scaling.up_cpu), 0, 1),
    NUM("up_p95_ms", C(scaling.up_p95_ms), 0, 3600000),
    NUM("up_pending_per_worker", C(scaling.up_pending_per_worker), 0, 1000000),
    NUM("down_load", C(scaling.down_load), 0, 1),
    NUM("down_cpu", C(scaling.down_cpu), 0, 1),
    NUM("down_p95_ms", C(scaling.down_p95_ms), 0, 3600000),
    {0},
};

static const struct key errors_keys[] = {
    STR("topic", C(errors_topic), 0, check_topic),
    {0},
};

/* One alert's thresholds; fire's range is its figure's. */
#define ALERT_KEYS(f, hi)                                                                          \
    static const struct key alert_##f##_keys[] = {                                                 \
        NUM("fire", C(alerts.rule[f].fire), 0, hi),                                                \
        NUM("resolve", C(alerts.rule[f].resolve), 0, hi),                                          \
        {0},                                                                                       \
    }
ALERT_KEYS(ALERT_PENDING, 1e9);
ALERT_KEYS(ALERT_ERROR_RATE, 1);
ALERT_KEYS(ALERT_P99_MS, 3600000);
ALERT_KEYS(ALERT_CPU, 1);
ALERT_KEYS(ALERT_MEMORY_MB, 1e9);

#define ALERT(f, n)                                                                                \
    {                                                                                              \
        .name = n, .kind = KEY_MAP, .sub = alert_##f##_keys, C(alerts.rule[f].enabled),            \
        .flags = KEY_MARK                                                                          \
    }

static const char *const alert_names[] = {
    [ALERT_PENDING] = "pending", [ALERT_ERROR_RATE] = "error_rate", [ALERT_P99_MS] = "p99_ms",
    [ALERT_CPU] = "cpu",         [ALERT_MEMORY_MB] = "memory_mb",
};

const char *conf_alert_name(enum conf_alert_figure f)
{
    return (unsigned)f < ALERT_COUNT ? alert_names[f] : "invalid";
}

static const struct key alerts_keys[] = {
    STR("topic", C(alerts.topic), 0, check_topic),
    NUM("interval_s", C(alerts.interval_s), 0.05, 3600),
    ALERT(ALERT_PENDING, "pending"),
    ALERT(ALERT_ERROR_RATE, "error_rate"),
    ALERT(ALERT_P99_MS, "p99_ms"),
    ALERT(ALERT_CPU, "cpu"),
    ALERT(ALERT_MEMORY_MB, "memory_mb"),
    {0},
};

#define V(f) C(voice.f)
static const struct key voice_topic_keys[] = {
    STR("up", V(topics.up), 0, check_device_filter),
    STR("down", V(topics.down), 0, check_device_topic),
    STR("events", V(topics.events), 0, check_device_topic),
    STR("opus", V(topics.opus), 0, check_device_topic),
    STR("pcm", V(topics.pcm), 0, check_device_topic),
    STR("play", V(topics.play), 0, check_device_topic),
    STR("say_pcm", V(topics.say_pcm), 0, check_device_topic),
    STR("ctl", V(topics.ctl), 0, check_device_topic),
    STR("stt", V(topics.stt), 0, check_device_topic),
    STR("say", V(topics.say), 0, check_device_topic),
    STR("forward", V(topics.forward), 0, check_device_topic),
    {0},
};

static const struct key voice_keys[] = {
    STR("bind", V(bind), 0, NULL),
    INT("port", V(port), 1, 65535),
    STR("public_host", V(public_host), KEY_NULLABLE, NULL),
    INT("public_port", V(public_port), 0, 65535),
    MAP("topics", voice_topic_keys),
    INT("max_sessions", V(max_sessions), 1, 1000000),
    NUM("idle_s", V(idle_s), 1, 86400),
    {.name = "uplink", .kind = KEY_STRINGS, V(uplink), .check = check_uplink},
    INT("pcm_batch_ms", V(pcm_batch_ms), 60, 6000),
    INT("max_utterance_s", V(max_utterance_s), 1, 300),
    INT("vad_silence_ms", V(vad_silence_ms), 200, 10000),
    INT("stt_part_ms", V(stt_part_ms), 0, 10000),
    STR("say_voice", V(say_voice), KEY_NULLABLE, NULL),
    INT("downlink_rate", V(downlink_rate), 8000, 48000),
    INT("downlink_frame_ms", V(downlink_frame_ms), 20, 60),
    INT("queue_frames", V(queue_frames), 1, 100000),
    {0},
};

const struct key top_keys[] = {
    STR("instance", C(instance), 0, check_instance),
    CHOICE("log_level", C(log_level), log_levels),
    STR("user", C(user), KEY_NULLABLE, NULL),
    NUM("shutdown_timeout_s", C(shutdown_timeout_s), 0, 86400),
    MAP("broker", broker_keys),
    MAP("workers", workers_keys),
    MAP("limits", limits_keys),
    MAP("streams", streams_keys),
    MAP("scaling", scaling_keys),
    MAP("errors", errors_keys),
    MAP("alerts", alerts_keys),
    {.name = "voice", .kind = KEY_MAP, .sub = voice_keys, C(voice.enabled), .flags = KEY_MARK},
    {.name = "plugins", .kind = KEY_PLUGINS},
    {.name = "routes", .kind = KEY_ROUTES},
    {0},
};

static const struct key route_correlate_keys[] = {
    STR("key", R(correlate.key), 0, NULL),
    {.name = "parts", .kind = KEY_STRINGS, R(correlate.parts), .check = check_part_name},
    INT("window_ms", R(correlate.window_ms), 1, 3600000),
    INT("max_open", R(correlate.max_open), 1, 10000000),
    {0},
};

static const struct key route_cache_keys[] = {
    NUM("ttl_s", R(cache.ttl_s), 0.001, 31536000),
    INT("max_mb", R(cache.max_mb), 1, 65536),
    {0},
};

/* Applied to a struct conf_route. */
const struct key route_keys[] = {
    STR("name", R(name), KEY_REQUIRED, check_route_name),
    /* check_filter explains what is wrong with an empty filter */
    {.name = "subscribe",
     .kind = KEY_STRINGS,
     R(subscribe),
     .flags = KEY_REQUIRED | KEY_EMPTY_OK,
     .check = check_filter},
    INT("qos", R(qos), 0, 2),
    STR("job", R(job), KEY_REQUIRED, NULL),
    STR("reply", R(reply), KEY_NULLABLE, NULL),
    {.name = "reply_allow", .kind = KEY_STRINGS, R(reply_allow), .check = check_allow_filter},
    STR("stream", R(stream), KEY_NULLABLE, NULL),
    ENUM("priority", R(priority), priorities),
    INT("timeout_ms", R(timeout_ms), 1, 3600000),
    INT("deadline_ms", R(deadline_ms), 0, 3600000),
    INT("retries", R(retries), 0, 100),
    {.name = "retry_on", .kind = KEY_STRINGS, R(retry_on), .check = check_retry_cause},
    INT("backoff_ms", R(backoff_ms), 0, 3600000),
    INT("backoff_max_ms", R(backoff_max_ms), 1, 3600000),
    {.name = "cache",
     .kind = KEY_MAP,
     .sub = route_cache_keys,
     R(cache.enabled),
     .flags = KEY_MARK},
    {.name = "correlate",
     .kind = KEY_MAP,
     .sub = route_correlate_keys,
     R(correlate.enabled),
     .flags = KEY_MARK},
    {.name = "params", .kind = KEY_PARAMS},
    {0},
};

/* ---- defaults */

void route_defaults(struct conf_route *r)
{
    *r = (struct conf_route){
        .qos = 0,
        .priority = PRIO_NORMAL,
        .timeout_ms = 10000,
        .deadline_ms = 0,
        .retries = 2,
        .retry_causes = RETRY_CRASHED | RETRY_TIMEOUT,
        .backoff_ms = 0,
        .backoff_max_ms = 30000,
        .cache = {.ttl_s = 60, .max_mb = 16},
        .correlate = {.max_open = 10000},
    };
}

void conf_defaults(struct conf *c)
{
    *c = (struct conf){
        .instance = xstrdup("default"),
        .log_level = xstrdup("info"),
        .shutdown_timeout_s = 30,
        .broker =
            {
                .host = xstrdup("127.0.0.1"),
                .port = 1883,
                .protocol = xstrdup("5"),
                .keepalive_s = 30,
                .clean_session = true,
                .session_expiry_s = 0,
                .reconnect_min_s = 0.5,
                .reconnect_max_s = 30,
                .max_outbound = 10000,
                .tls = {.verify = true},
            },
        .workers =
            {
                .min = 2,
                .max = 8,
                .inflight = 32,
                .inflight_us = 2000,
                .short_reserve = 1,
                .max_jobs = 0,
                .max_rss_mb = 0,
                .backoff_max_s = 2,
                .stable_s = 10,
            },
        .limits = {.max_payload = 65536, .max_pending = 65536, .slab_mb = 64},
        .streams = {.max = 1024, .idle_s = 60},
        .voice =
            {
                .bind = xstrdup("127.0.0.1"),
                .port = 8884,
                .topics =
                    {
                        .up = xstrdup("xiaozhi/+/up"),
                        .down = xstrdup("devices/p2p/{device}"),
                        .events = xstrdup("voice/{device}/events"),
                        .opus = xstrdup("voice/{device}/opus"),
                        .pcm = xstrdup("voice/{device}/pcm"),
                        .play = xstrdup("voice/{device}/play"),
                        .say_pcm = xstrdup("voice/{device}/say_pcm"),
                        .ctl = xstrdup("voice/{device}/ctl"),
                        .stt = xstrdup("voice/{device}/stt"),
                        .say = xstrdup("voice/{device}/say"),
                        .forward = xstrdup("mqfork/voice/{device}/forward"),
                    },
                .max_sessions = 1000,
                .idle_s = 120,
                .uplink_modes = UPLINK_RELAY,
                .pcm_batch_ms = 600,
                .max_utterance_s = 15,
                .vad_silence_ms = 800,
                .stt_part_ms = 2000,
                .downlink_rate = 24000,
                .downlink_frame_ms = 60,
                .queue_frames = 500,
            },
        .scaling =
            {
                .enabled = true,
                .interval_s = 10,
                .up_cooldown_s = 30,
                .down_cooldown_s = 60,
                .step = 1,
                .up_load = 0.70,
                .up_cpu = 0.60,
                .up_p95_ms = 50,
                .up_pending_per_worker = 3,
                .down_load = 0.30,
                .down_cpu = 0.30,
                .down_p95_ms = 10,
            },
        .errors_topic = xstrdup("mqfork/errors"),
        .alerts = {.topic = xstrdup("mqfork/alerts"), .interval_s = 10},
    };
    for (int f = 0; f < ALERT_COUNT; f++)
        c->alerts.rule[f].resolve = -1; /* check_alerts: 80% of fire */
}

static void strings_free(struct conf_strings *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->items[i]);
    free(l->items);
}

static void route_free(struct conf_route *r)
{
    free(r->name);
    strings_free(&r->subscribe);
    free(r->job);
    free(r->reply);
    strings_free(&r->reply_allow);
    free(r->stream);
    strings_free(&r->retry_on);
    free(r->correlate.key);
    strings_free(&r->correlate.parts);
    for (size_t i = 0; i < r->params.count; i++) {
        free(r->params.items[i].key);
        free(r->params.items[i].value);
    }
    free(r->params.items);
}

static void voice_free(struct conf_voice *v)
{
    char **topics[] = {&v->topics.up,   &v->topics.down, &v->topics.events,  &v->topics.opus,
                       &v->topics.pcm,  &v->topics.play, &v->topics.say_pcm, &v->topics.ctl,
                       &v->topics.stt,  &v->topics.say,  &v->topics.forward, &v->bind,
                       &v->public_host, &v->say_voice};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++)
        free(*topics[i]);
    strings_free(&v->uplink);
}

void conf_free(struct conf *c)
{
    free(c->path);
    free(c->instance);
    free(c->log_level);
    free(c->user);
    struct conf_broker *b = &c->broker;
    free(b->host);
    free(b->protocol);
    free(b->client_id);
    free(b->username);
    free(b->password);
    free(b->status_topic);
    free(b->tls.ca_file);
    free(b->tls.cert_file);
    free(b->tls.key_file);
    free(c->errors_topic);
    free(c->alerts.topic);
    voice_free(&c->voice);
    for (size_t i = 0; i < c->nplugins; i++)
        free(c->plugins[i].path);
    free(c->plugins);
    for (size_t i = 0; i < c->nroutes; i++)
        route_free(&c->routes[i]);
    free(c->routes);
    memset(c, 0, sizeof(*c));
}

int conf_priority_parse(const char *s)
{
    for (int i = 0; i < PRIO_COUNT; i++)
        if (!strcmp(s, priorities[i]))
            return i;
    return -1;
}

const char *conf_priority_name(enum conf_priority p)
{
    return (unsigned)p < PRIO_COUNT ? priorities[p] : "invalid";
}
