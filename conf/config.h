/* config.h - the daemon's configuration as loaded from YAML, and its loader.
 *
 * conf_load() reads a file strictly: every problem (unknown key, wrong type,
 * value out of range, contradiction) is collected as a diagnostic with
 * file:line:column instead of stopping at the first one, so `mqforkd -t` can
 * print them all. A struct conf is plain data owned by its caller. */
#ifndef MQFORK_CONF_CONFIG_H
#define MQFORK_CONF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Bounds a file must keep, so that a hostile one is refused in milliseconds
 * instead of keeping the parser (and a reload) busy for minutes: its size,
 * how deep sequences and mappings nest, and what the document amounts to
 * with every alias expanded (its scalars' bytes and one per node). Past
 * CONF_DIAGS_MAX diagnostics, more are only counted. */
#define CONF_MAX_BYTES    (1 << 20)
#define CONF_MAX_DEPTH    32
#define CONF_MAX_EXPANDED (4 << 20)
#define CONF_DIAGS_MAX    100

enum conf_priority { PRIO_HIGH = 0, PRIO_NORMAL = 1, PRIO_LOW = 2, PRIO_COUNT = 3 };

/* One `key: value` of a route's `params:` mapping, kept as text: the handler
 * named by the route parses and checks it (worker/registry.c). */
struct conf_param {
    char *key;
    char *value;
    int line, column;
};

struct conf_params {
    struct conf_param *items;
    size_t count;
};

/* A list of strings given as one string or a sequence of them. */
struct conf_strings {
    char **items;
    size_t count;
};

#define CONF_ROUTE_NAME_MAX 64 /* bytes of a route's name */

/* What a job's attempt may end in that its route retries (retry_on). */
enum conf_retry {
    RETRY_CRASHED = 1u << 0, /* its worker died */
    RETRY_TIMEOUT = 1u << 1, /* it ran past timeout_ms: its worker was killed */
    RETRY_FAILED = 1u << 2,  /* the handler answered failed */
};

/* A route's `cache:` (supervisor/cache.h). */
struct conf_cache {
    bool enabled;    /* true when a cache: mapping is present */
    double ttl_s;    /* 0.001..31536000, default 60 */
    uint32_t max_mb; /* 1..65536, default 16 */
};

/* The most filters one route subscribes to (and parts a correlation has). */
#define CONF_ROUTE_FILTERS_MAX 16

/* A route's `correlate:` (supervisor/correlate.h): the messages of its
 * filters that make the same key within window_ms become one job. */
struct conf_correlate {
    bool enabled;              /* true when a correlate: mapping is present */
    char *key;                 /* template over the matched filter's wildcards ({1}) */
    struct conf_strings parts; /* a name per subscribe filter, in their order */
    uint32_t window_ms;        /* 1..3600000, required */
    uint32_t max_open;         /* keys open at once, 1..10000000, default 10000 */
};

struct conf_route {
    char *name;                      /* 1 to CONF_ROUTE_NAME_MAX of A-Z a-z 0-9 _ . - */
    struct conf_strings subscribe;   /* 1 to CONF_ROUTE_FILTERS_MAX filters, one string or a list */
    int qos;                         /* 0..2, default 0 */
    char *job;                       /* handler name, must exist in the registry */
    char *reply;                     /* topic template, NULL = no reply */
    struct conf_strings reply_allow; /* filter templates an MQTT v5 response topic must
                                        match; none (default) = response topics are ignored */
    char *stream;                    /* stream key template, NULL = no stream */
    enum conf_priority priority;     /* default normal */
    uint32_t timeout_ms;             /* 1..3600000, default 10000 */
    uint32_t deadline_ms;            /* 0 = none, else 1..3600000 */
    uint32_t retries;                /* 0..100, default 2 */
    struct conf_strings retry_on;    /* causes retried: "crashed", "timeout", "failed" */
    unsigned retry_causes;           /* enum conf_retry bits, from retry_on; default
                                        crashed and timeout */
    uint32_t backoff_ms;             /* delay before the first retry, doubling after;
                                        0..3600000, default 0 (at once) */
    uint32_t backoff_max_ms;         /* cap of that delay, 1..3600000, default 30000 */
    struct conf_cache cache;
    struct conf_correlate correlate;
    struct conf_params params;
    int line, column;               /* where the route's mapping starts */
    int job_line, job_column;       /* where its `job:` value is */
    int params_line, params_column; /* where its `params:` value is (0: none) */
};

/* One entry of `plugins:`: a shared object of handlers, loaded before fork. */
struct conf_plugin {
    char *path;
    int line, column;
};

struct conf_tls {
    char *ca_file, *cert_file, *key_file; /* NULL = unset */
    bool verify;                          /* default true */
};

struct conf_broker {
    char *host;      /* default "127.0.0.1" */
    int port;        /* 1..65535, default 1883 */
    char *protocol;  /* "5" or "3.1.1", default "5" */
    char *client_id; /* NULL = mqforkd-<instance> */
    char *username, *password;
    uint32_t keepalive_s;      /* 5..3600, default 30 */
    bool clean_session;        /* default true */
    uint32_t session_expiry_s; /* default 0 */
    double reconnect_min_s;    /* default 0.5 */
    double reconnect_max_s;    /* default 30, must be >= reconnect_min_s */
    char *status_topic;        /* NULL = mqfork/<instance>/status */
    uint32_t max_outbound;     /* 1..10000000, default 10000 */
    bool tls_enabled;          /* true when a tls: mapping is present */
    struct conf_tls tls;
};

struct conf_workers {
    uint32_t min;      /* 1..1024, default 2 */
    uint32_t max;      /* min..1024, default 8 */
    uint32_t inflight; /* jobs queued to one worker at most: 1..1024, default 32 */
    uint32_t
        inflight_us; /* estimated work queued to one worker at most: 1..10000000, default 2000 */
    uint32_t short_reserve; /* workers a long job leaves to short ones: 0..1023, default 1 */
    uint64_t max_jobs;      /* recycle after this many jobs; 0 = never (default) */
    uint32_t max_rss_mb;    /* recycle above this RSS; 0 = never (default) */
    double backoff_max_s;   /* crash-loop respawn backoff cap, 0.01..600, default 2 */
    double stable_s; /* a worker that lived this long resets its slot's backoff, default 10 */
};

struct conf_limits {
    uint32_t max_payload; /* bytes, 1..16777216, default 65536 */
    uint32_t max_pending; /* jobs, 1..10000000, default 65536 */
    uint32_t slab_mb;     /* MiB, 1..65536, default 64 */
};

struct conf_streams {
    uint32_t max;  /* 1..1000000, default 1024 */
    double idle_s; /* default 60 */
};

struct conf_scaling {
    bool enabled;                 /* default true */
    double interval_s;            /* default 10 */
    double up_cooldown_s;         /* default 30 */
    double down_cooldown_s;       /* default 60 */
    uint32_t step;                /* default 1 */
    double up_load;               /* 0..1, default 0.70 */
    double up_cpu;                /* 0..1, default 0.60 */
    double up_p95_ms;             /* default 50 */
    double up_pending_per_worker; /* default 3 */
    double down_load;             /* 0..1, default 0.30 */
    double down_cpu;              /* 0..1, default 0.30 */
    double down_p95_ms;           /* default 10 */
};

/* The voice gateway (doc/VOICE.md): on when the file has a voice: mapping. */
enum conf_uplink {
    UPLINK_RELAY = 1u << 0,
    UPLINK_DECODE = 1u << 1,
    UPLINK_RECOGNIZE = 1u << 2, /* decode, and transcribe each utterance (speech plugin) */
};

struct conf_voice_topics {
    char *up;      /* filter the devices publish on; its one '+' is the device, default
                      "xiaozhi/+/up" ($share/GROUP/ allowed) */
    char *down;    /* to the device, default "devices/p2p/{device}" */
    char *events;  /* session events to the backend, default "voice/{device}/events" */
    char *opus;    /* uplink relay, default "voice/{device}/opus" */
    char *pcm;     /* decoded uplink, default "voice/{device}/pcm" */
    char *play;    /* downlink Opus from the backend, default "voice/{device}/play" */
    char *say_pcm; /* downlink PCM from the backend, default "voice/{device}/say_pcm" */
    char *ctl;     /* JSON for the device from the backend, default "voice/{device}/ctl" */
    char *stt; /* transcripts for the backend (uplink recognize), default "voice/{device}/stt" */
    char *say; /* text to speak, from the backend, default "voice/{device}/say" */
    char *forward; /* between instances when up is shared, default
                      "mqfork/voice/{device}/forward" */
};

struct conf_voice {
    bool enabled;
    char *bind;        /* UDP address, default "127.0.0.1" */
    int port;          /* 1..65535, default 8884 */
    char *public_host; /* udp.server of the hello reply; NULL = bind */
    int public_port;   /* 0 (default) = port */
    struct conf_voice_topics topics;
    uint32_t max_sessions;      /* 1..1000000, default 1000 */
    double idle_s;              /* default 120 */
    struct conf_strings uplink; /* "relay", "decode", "recognize"; default relay */
    unsigned uplink_modes;      /* enum conf_uplink, from uplink */
    uint32_t pcm_batch_ms;      /* multiple of 60, 60..6000, default 600 */
    uint32_t max_utterance_s;   /* audio kept for one transcript, 1..300, default 15 */
    uint32_t vad_silence_ms;    /* silence that ends an auto-mode utterance, 200..10000, 800 */
    uint32_t stt_part_ms;       /* speech recognized while it goes on, 0|500..10000, 2000; 0: off */
    char *say_voice;            /* speech.synthesize's voice for say; NULL: say is off */
    uint32_t downlink_rate;     /* 8000|12000|16000|24000|48000, default 24000 */
    uint32_t downlink_frame_ms; /* 20, 40 or 60 (default) */
    uint32_t queue_frames;      /* downlink frames held per session, 1..100000, default 500 */
};

/* The alerts: section: thresholds on the daemon's figures, each crossed
 * upward at fire and back at resolve (hysteresis), published on topic. */
enum conf_alert_figure {
    ALERT_PENDING,    /* jobs waiting in the queues */
    ALERT_ERROR_RATE, /* share of the jobs answered in the interval that failed */
    ALERT_P99_MS,     /* 99th percentile of accepted -> answered, over the interval */
    ALERT_CPU,        /* the live workers' CPU, as a share of theirs (0..1) */
    ALERT_MEMORY_MB,  /* the workers' resident memory, summed */
    ALERT_COUNT
};

struct conf_alert {
    bool enabled; /* its mapping is in the file */
    double fire;
    double resolve; /* below fire; default 80% of it */
};

struct conf_alerts {
    char *topic;       /* default "mqfork/alerts" */
    double interval_s; /* how often the figures are looked at: 0.05..3600, default 10 */
    struct conf_alert rule[ALERT_COUNT];
};

/* The name of figure F in the configuration and the alerts ("pending"). */
const char *conf_alert_name(enum conf_alert_figure f);

struct conf {
    char *path;                /* the file this was read from */
    char *instance;            /* [A-Za-z0-9_-]{1,32}, default "default" */
    char *log_level;           /* debug|info|warn|error, default "info" */
    char *user;                /* NULL = keep the starting user */
    double shutdown_timeout_s; /* default 30 */
    struct conf_broker broker;
    struct conf_workers workers;
    struct conf_limits limits;
    struct conf_streams streams;
    struct conf_scaling scaling;
    char *errors_topic; /* errors.topic, default "mqfork/errors" */
    struct conf_alerts alerts;
    struct conf_voice voice;
    struct conf_plugin *plugins;
    size_t nplugins;
    struct conf_route *routes;
    size_t nroutes;
};

/* One problem found while loading. */
struct conf_diag {
    char *file;
    int line, column; /* 1-based; 0 when the problem has no position */
    char *message;
    bool warning; /* the file still loads: likely a mistake, but runnable */
};

struct conf_diags {
    struct conf_diag *items;
    size_t count;
    /* Found when CONF_DIAGS_MAX were kept already: counted, not kept. */
    size_t omitted, omitted_errors;
};

/* Fill *c with every default, as if loaded from an empty file. */
void conf_defaults(struct conf *c);

/* Load and validate PATH into *c. Returns 0 when the file is valid (warnings
 * may still be appended to *d); otherwise -1 with every problem appended to
 * *d (and *c freed). */
int conf_load(const char *path, struct conf *c, struct conf_diags *d);

/* conf_load, and CHECK (when not NULL) adds its own problems to *d while
 * the whole file's are found: it sees every value that was valid, even
 * when others were not, so all problems are reported at once. */
typedef void (*conf_check_fn)(void *ctx, const struct conf *c, struct conf_diags *d);
int conf_load_checked(const char *path, struct conf *c, struct conf_diags *d, conf_check_fn check,
                      void *ctx);

void conf_free(struct conf *c);

/* Add a problem found outside the loader (handlers check their params in
 * worker/registry.c) to *d, at FILE:LINE:COLUMN (LINE 0: no position). */
void conf_diag(struct conf_diags *d, const char *file, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* The candidate closest to WORD that is close enough to be a likely typo,
 * or NULL. */
const char *conf_suggest(const char *word, const char *const *cands, size_t n);
void conf_diags_free(struct conf_diags *d);

/* Print each diagnostic as "file:line:column: error: message" (or
 * "warning:"), then how many more were found when some were omitted. */
void conf_diags_print(const struct conf_diags *d, FILE *out);

/* How many problems were found: those kept and those omitted. */
size_t conf_diags_total(const struct conf_diags *d);

/* "N more problems not shown (M in all)" when some were omitted, else
 * NULL. Malloc'd. */
char *conf_diags_omitted_text(const struct conf_diags *d);

/* How many of D's diagnostics are warnings. */
size_t conf_diags_warnings(const struct conf_diags *d);

/* Append a copy of S to *L. 0, or -1 when out of memory. */
int conf_strings_add(struct conf_strings *l, const char *s);

/* Whether A and B hold equal strings in the same order. */
bool conf_strings_equal(const struct conf_strings *a, const struct conf_strings *b);

/* The enum conf_retry bit named S ("crashed", "timeout", "failed"), or 0. */
unsigned conf_retry_cause(const char *s);

/* Parse a priority name ("high", "normal", "low"); -1 if unknown. */
int conf_priority_parse(const char *s);
const char *conf_priority_name(enum conf_priority p);

#endif
