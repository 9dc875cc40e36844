/* mqfork-voice-limit-answer.c - mode answer of mqfork-voice-limit: the
 * backend of tools/bench-voice's downlink measurement. Each device's
 * listen stop (voice/{device}/events) is answered at once with tts start,
 * the PCM of -a FILE on voice/{device}/say_pcm and tts stop, in that order
 * (QoS 1 on one connection), so one process keeps up with every device where
 * a mosquitto_pub per message would not on a busy machine. */
#include <cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/mqfork-voice-limit.h"
#include "tools/sigfd.h"

struct answer {
    void *pcm;
    long len;
    uint64_t answered, other;
};

static struct answer ans;

static bool is_listen_stop(const struct mosquitto_message *msg)
{
    cJSON *o = cJSON_ParseWithLength(msg->payload, (size_t)msg->payloadlen);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(o, "state");
    bool yes = cJSON_IsString(type) && !strcmp(type->valuestring, "listen") &&
               cJSON_IsString(state) && !strcmp(state->valuestring, "stop");
    cJSON_Delete(o);
    return yes;
}

static void on_event(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    static const char start[] = "{\"type\":\"tts\",\"state\":\"start\"}";
    static const char stop[] = "{\"type\":\"tts\",\"state\":\"stop\"}";
    const char *dev = msg->topic + strlen("voice/"), *end = strrchr(msg->topic, '/');
    char ctl[DEV_TOPIC_MAX], say[DEV_TOPIC_MAX];
    if (strncmp(msg->topic, "voice/", 6) || !end || end <= dev || !is_listen_stop(msg)) {
        ans.other++;
        return;
    }
    snprintf(ctl, sizeof(ctl), "voice/%.*s/ctl", (int)(end - dev), dev);
    snprintf(say, sizeof(say), "voice/%.*s/say_pcm", (int)(end - dev), dev);
    mosquitto_publish(m, NULL, ctl, (int)strlen(start), start, 1, false);
    mosquitto_publish(m, NULL, say, (int)ans.len, ans.pcm, 1, false);
    mosquitto_publish(m, NULL, ctl, (int)strlen(stop), stop, 1, false);
    ans.answered++;
}

static void load_pcm(const char *path)
{
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f || fseek(f, 0, SEEK_END) < 0 || (ans.len = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET) < 0 ||
        !(ans.pcm = malloc((size_t)ans.len)) ||
        fread(ans.pcm, 1, (size_t)ans.len, f) != (size_t)ans.len)
        die("answer: -a FILE: the PCM to answer with cannot be read");
    fclose(f);
}

/* Answers until SIGTERM or SIGINT; prints how many answers went out. */
int run_answer(const struct lopts *o)
{
    struct mq q = {0};
    load_pcm(o->audio);
    sigfd = signals_fd();
    mq_open(&q, o, "voice/+/events");
    mosquitto_message_callback_set(q.m, on_event);
    puts("ready");
    fflush(stdout);
    while (!q.lost && !stopping)
        mq_step(&q, 100, -1);
    printf("{\"answered\":%" PRIu64 ",\"other\":%" PRIu64 "}\n", ans.answered, ans.other);
    int rc = q.lost ? 1 : 0;
    mosquitto_disconnect(q.m);
    mosquitto_destroy(q.m);
    free(ans.pcm);
    return rc;
}
