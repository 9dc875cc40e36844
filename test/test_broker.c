/* test_broker.c - tests the MQTT test harness and mqfork-load together: a
 * private mosquitto (plain, with a password, with TLS), the echo server that
 * benchmarks use as the limit, loss-free matching at full speed and under
 * 3.1.1, pacing within 2%, and a broker that dies under load making the tool
 * exit with an error instead of hanging. Usage: test_broker PATH/mqfork-load */
#include "broker.h"
#include "t.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/wait.h>

#define MAX_ARGS 48
#define RUN_MS   60000
#define READY_MS 10000

/* Everything a test needs to address a broker listener. */
struct target {
    const char *tool;
    char host[32];
    char port[16];
    const char *cafile, *cert, *key, *user, *pass;
};

static void target_plain(struct target *t, const char *tool, const struct broker *b)
{
    *t = (struct target){.tool = tool};
    snprintf(t->host, sizeof(t->host), "127.0.0.1");
    snprintf(t->port, sizeof(t->port), "%d", b->port);
}

/* argv: the tool, the connection options of t, then the NULL-ended extras. */
static void build_argv(const char *argv[MAX_ARGS], const struct target *t, va_list ap)
{
    int n = 0;
    argv[n++] = t->tool;
    argv[n++] = "-H";
    argv[n++] = t->host;
    argv[n++] = "-p";
    argv[n++] = t->port;
    if (t->cafile) {
        argv[n++] = "--cafile";
        argv[n++] = t->cafile;
    }
    if (t->cert) {
        argv[n++] = "--cert";
        argv[n++] = t->cert;
        argv[n++] = "--key";
        argv[n++] = t->key;
    }
    if (t->user) {
        argv[n++] = "-u";
        argv[n++] = t->user;
        argv[n++] = "-P";
        argv[n++] = t->pass;
    }
    for (const char *a; n < MAX_ARGS - 1 && (a = va_arg(ap, const char *));)
        argv[n++] = a;
    argv[n] = NULL;
}

static int spawn(struct proc *p, const struct target *t, ...)
{
    const char *argv[MAX_ARGS];
    va_list ap;
    va_start(ap, t);
    build_argv(argv, t, ap);
    va_end(ap);
    return proc_spawn(p, (char *const *)argv, true);
}

/* Start an echo server on filter and wait for its "ready" (subscribed). */
static bool echo_start(struct proc *p, const struct target *t, const char *filter)
{
    char line[256];
    if (spawn(p, t, "--echo-server", "-t", filter, NULL) < 0)
        return false;
    if (proc_line(p, line, sizeof(line), READY_MS) < 0 || strcmp(line, "ready") != 0) {
        proc_stop(p, SIGKILL);
        return false;
    }
    return true;
}

/* Wait for the tool's final JSON line (skipping interim lines) and its exit.
 * Returns the parsed report or NULL; *status gets the exit status. */
static cJSON *load_result(struct proc *p, int *status)
{
    char line[4096];
    cJSON *j = NULL;
    while (!j && proc_line(p, line, sizeof(line), RUN_MS) >= 0)
        if (line[0] == '{')
            j = cJSON_Parse(line);
    if (proc_wait(p, RUN_MS, status) < 0) {
        proc_stop(p, SIGKILL);
        *status = -1;
    }
    return j;
}

/* Run mqfork-load to completion with the extra arguments; NULL-ended. */
static cJSON *load_run(const struct target *t, int *status, ...)
{
    const char *argv[MAX_ARGS];
    struct proc p;
    va_list ap;
    va_start(ap, status);
    build_argv(argv, t, ap);
    va_end(ap);
    if (proc_spawn(&p, (char *const *)argv, true) < 0)
        return NULL;
    return load_result(&p, status);
}

static double num(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static bool exited(int status, int code)
{
    return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == code;
}

static void report(const char *what, const cJSON *j)
{
    fprintf(stderr,
            "%s: sent %.0f answered %.0f lost %.0f send %.1f/s answer %.1f/s p50 %.3f "
            "p99 %.3f max %.3f ms\n",
            what, num(j, "sent"), num(j, "answered"), num(j, "lost"), num(j, "send_rate"),
            num(j, "answer_rate"), num(j, "p50_ms"), num(j, "p99_ms"), num(j, "max_ms"));
}

/* As fast as the window allows: every request answered, none lost. */
static void test_saturated(const struct target *t)
{
    int status;
    cJSON *j =
        load_run(t, &status, "-t", "load/%d/in", "-D", "8", "-n", "2000", "-r", "0", "-j", NULL);
    T_REQUIRE(j, "no JSON report from mqfork-load -r 0");
    report("saturated", j);
    T_CHECK(exited(status, 0), "exit status %d", status);
    T_CHECK(num(j, "sent") == 2000, "sent %.0f", num(j, "sent"));
    T_CHECK(num(j, "answered") == num(j, "sent"), "answered %.0f", num(j, "answered"));
    T_CHECK(num(j, "lost") == 0, "lost %.0f", num(j, "lost"));
    T_CHECK(num(j, "duplicates") == 0, "duplicates %.0f", num(j, "duplicates"));
    cJSON_Delete(j);
}

/* Paced by the clock: the achieved rate is the asked one. */
static void test_paced(const struct target *t)
{
    int status;
    cJSON *j =
        load_run(t, &status, "-t", "load/%d/in", "-D", "4", "-n", "1000", "-r", "1000", "-j", NULL);
    T_REQUIRE(j, "no JSON report from mqfork-load -r 1000");
    report("1000/s", j);
    T_CHECK(exited(status, 0), "exit status %d", status);
    T_CHECK(num(j, "answered") == 1000 && num(j, "lost") == 0, "answered %.0f lost %.0f",
            num(j, "answered"), num(j, "lost"));
    double rate = num(j, "send_rate");
    T_CHECK(rate > 980 && rate < 1020, "send rate %.1f/s, asked 1000/s", rate);
    cJSON_Delete(j);
}

/* 3.1.1 has no correlation data: matching by order still accounts for all,
 * and a v5 response topic set by the load tool is honoured by the echo. */
static void test_order_and_response_topic(const struct target *t)
{
    int status;
    cJSON *j = load_run(t, &status, "-V", "311", "-t", "load/1/in", "-n", "300", "-j", NULL);
    T_REQUIRE(j, "no JSON report from mqfork-load -V 311");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "match");
    T_CHECK(cJSON_IsString(m) && !strcmp(m->valuestring, "order"), "3.1.1 must match by order");
    T_CHECK(num(j, "answered") == 300 && num(j, "lost") == 0, "3.1.1: answered %.0f lost %.0f",
            num(j, "answered"), num(j, "lost"));
    cJSON_Delete(j);

    j = load_run(t, &status, "-t", "load/%d/in", "-D", "3", "--response-topic", "back/%d", "-T",
                 "back/+", "-n", "300", "-j", NULL);
    T_REQUIRE(j, "no JSON report with --response-topic");
    T_CHECK(num(j, "answered") == 300 && num(j, "lost") == 0,
            "response topic: answered %.0f lost %.0f", num(j, "answered"), num(j, "lost"));
    cJSON_Delete(j);
}

static void test_usage(const struct target *t)
{
    int status;
    cJSON *j = load_run(t, &status, "-n", "10", NULL); /* no -t */
    T_CHECK(!j && exited(status, 2), "missing -t: status %d, want exit 2", status);
    j = load_run(t, &status, "-t", "x/in", "-r", "fast", NULL);
    T_CHECK(!j && exited(status, 2), "bad -r: status %d, want exit 2", status);
    cJSON_Delete(j);
}

/* The broker dies under load: the tool must report and exit 1, promptly. */
static void test_broker_dies(struct broker *b, const struct target *t, struct proc *echo)
{
    struct proc p;
    char line[4096];
    int status;

    T_REQUIRE(spawn(&p, t, "-t", "load/%d/in", "-D", "4", "-r", "1000", "-n", "1000000", "-i",
                    "0.1", "-j", NULL) == 0,
              "spawn");
    /* The first interim line shows it is sending; then pull the plug. */
    T_REQUIRE(proc_line(&p, line, sizeof(line), READY_MS) > 0, "no interim line");
    broker_kill(b);
    cJSON *j = load_result(&p, &status);
    T_CHECK(exited(status, 1), "broker gone: status %d, want exit 1", status);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    T_CHECK(cJSON_IsString(err) && strstr(err->valuestring, "lost"),
            "the report must say the connection was lost");
    cJSON_Delete(j);
    T_CHECK(proc_wait(echo, RUN_MS, &status) == 0 && exited(status, 1),
            "echo server must exit 1 when the broker goes");

    /* Nobody listening: a connection failure, exit 1 at once. */
    j = load_run(t, &status, "-t", "load/1/in", "-n", "1", "-j", NULL);
    T_CHECK(!j && exited(status, 1), "no broker: status %d, want exit 1", status);

    /* The harness brings the broker back on the same port. */
    T_REQUIRE(broker_restart_same_port(b) == 0, "restart on port %d", b->port);
    T_REQUIRE(echo_start(echo, t, "load/+/in"), "echo server after restart");
    j = load_run(t, &status, "-t", "load/%d/in", "-n", "200", "-j", NULL);
    T_CHECK(j && num(j, "answered") == 200, "after restart: answered %.0f", num(j, "answered"));
    cJSON_Delete(j);
}

static void test_plain(const char *tool)
{
    struct broker b;
    struct target t;
    struct proc echo;

    T_REQUIRE(broker_start(&b, NULL) == 0, "plain broker");
    target_plain(&t, tool, &b);
    T_REQUIRE(echo_start(&echo, &t, "load/+/in"), "echo server");
    test_saturated(&t);
    test_paced(&t);
    test_order_and_response_topic(&t);
    test_usage(&t);
    test_broker_dies(&b, &t, &echo);
    proc_stop(&echo, SIGTERM);
    broker_stop(&b);
}

/* Password file: the right one works, a wrong one is refused with exit 1. */
static void test_password(const char *tool)
{
    struct broker_opts o = {.username = "mqfork", .password = "s3cret"};
    struct broker b;
    struct target t;
    struct proc echo;
    int status;

    T_REQUIRE(broker_start(&b, &o) == 0, "broker with a password file");
    target_plain(&t, tool, &b);
    t.user = o.username;
    t.pass = o.password;
    T_REQUIRE(echo_start(&echo, &t, "pw/+/in"), "echo server with password");
    cJSON *j = load_run(&t, &status, "-t", "pw/1/in", "-n", "100", "-j", NULL);
    T_CHECK(j && num(j, "answered") == 100, "password: answered %.0f", num(j, "answered"));
    cJSON_Delete(j);
    t.pass = "wrong";
    j = load_run(&t, &status, "-t", "pw/1/in", "-n", "1", "-j", NULL);
    T_CHECK(!j && exited(status, 1), "wrong password: status %d, want exit 1", status);
    proc_stop(&echo, SIGTERM);
    broker_stop(&b);
}

/* TLS with the harness's test CA and a required client certificate. */
static void test_tls(const char *tool)
{
    struct broker_opts o = {.tls = true, .require_cert = true};
    struct broker b;
    struct target t;
    struct proc echo;
    int status;

    T_REQUIRE(broker_start(&b, &o) == 0, "TLS broker");
    t = (struct target){
        .tool = tool, .cafile = b.ca_file, .cert = b.client_cert, .key = b.client_key};
    snprintf(t.host, sizeof(t.host), "localhost");
    snprintf(t.port, sizeof(t.port), "%d", b.tls_port);
    T_REQUIRE(echo_start(&echo, &t, "tls/+/in"), "TLS echo server");
    cJSON *j = load_run(&t, &status, "-t", "tls/%d/in", "-D", "2", "-n", "500", "-j", NULL);
    T_REQUIRE(j, "no JSON report over TLS");
    report("tls", j);
    T_CHECK(num(j, "answered") == 500 && num(j, "lost") == 0, "TLS: answered %.0f lost %.0f",
            num(j, "answered"), num(j, "lost"));
    cJSON_Delete(j);

    /* The certificate names 127.0.0.1 as well, so verification passes. */
    snprintf(t.host, sizeof(t.host), "127.0.0.1");
    j = load_run(&t, &status, "-t", "tls/1/in", "-n", "50", "-j", NULL);
    T_CHECK(j && num(j, "answered") == 50, "TLS by IP: answered %.0f", num(j, "answered"));
    cJSON_Delete(j);

    /* Without a client certificate the broker refuses us. */
    t.cert = t.key = NULL;
    j = load_run(&t, &status, "-t", "tls/1/in", "-n", "1", "-j", NULL);
    T_CHECK(!j && exited(status, 1), "no client cert: status %d, want exit 1", status);
    proc_stop(&echo, SIGTERM);
    broker_stop(&b);
}

int main(int argc, char **argv)
{
    T_REQUIRE(argc == 2, "usage: test_broker PATH/mqfork-load");
    test_plain(argv[1]);
    test_password(argv[1]);
    test_tls(argv[1]);
    T_DONE();
}
