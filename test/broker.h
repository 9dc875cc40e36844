/* broker.h - the integration-test harness for MQTT: a private mosquitto on a
 * free loopback port (optionally with a password file, extra configuration
 * lines such as a plugin, and a TLS listener whose test CA and certificates
 * it makes with the openssl command), and the few process helpers tests need
 * to run clients against it with deadlines. */
#ifndef MQFORK_TEST_BROKER_H
#define MQFORK_TEST_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define BROKER_PATH_MAX 256

struct broker_opts {
    bool tls;             /* add a TLS listener (tls_port) with a fresh test CA */
    bool require_cert;    /* TLS clients must present a certificate from that CA */
    const char *username; /* with password: a password file, anonymous refused */
    const char *password;
    const char *const *more_users; /* NULL-ended name, password, ...: also in that file */
    const char *extra_conf;        /* lines added before the listeners (plugin, acl_file) */
    bool persistent;               /* persistence on, its database in the private dir */
};

struct broker {
    pid_t pid;                  /* the running mosquitto, 0 when none */
    int port;                   /* plain listener on 127.0.0.1 */
    int tls_port;               /* TLS listener on 127.0.0.1, 0 when none */
    char dir[BROKER_PATH_MAX];  /* private temp dir, removed by broker_stop */
    char conf[BROKER_PATH_MAX]; /* mosquitto.conf */
    char log[BROKER_PATH_MAX];  /* mosquitto's stderr */
    /* Set when tls: the CA clients should trust, and a client certificate
     * (CN=mqfork-test-client) for require_cert. The server certificate is
     * for CN=localhost with subjectAltName DNS:localhost, IP:127.0.0.1. */
    char ca_file[BROKER_PATH_MAX];
    char server_cert[BROKER_PATH_MAX];
    char server_key[BROKER_PATH_MAX];
    char client_cert[BROKER_PATH_MAX];
    char client_key[BROKER_PATH_MAX];
    pid_t janitor;  /* removes dir if the test dies without broker_stop */
    int janitor_fd; /* the janitor waits for this pipe end to close */
};

/* Make the temp dir, configuration and certificates, start mosquitto and wait
 * until every listener accepts connections. o may be NULL (plain, anonymous).
 * Returns 0, or -1 after saying why on stderr (everything cleaned up). */
int broker_start(struct broker *b, const struct broker_opts *o);

/* SIGTERM, reap, remove the temp dir. Safe on a stopped or killed broker. */
void broker_stop(struct broker *b);

/* SIGKILL and reap, keeping the dir and ports for broker_restart_same_port. */
void broker_kill(struct broker *b);

/* SIGTERM and reap, keeping the dir: a clean stop, after which a persistent
 * broker has saved its sessions for broker_restart_same_port. */
void broker_terminate(struct broker *b);

/* Start mosquitto again with the same configuration and ports; waits until it
 * accepts connections. Returns 0 or -1. */
int broker_restart_same_port(struct broker *b);

/* A child process a test runs, with its stdout readable line by line. It gets
 * SIGKILL if the test dies, so nothing outlives a crashed test. */
struct proc {
    pid_t pid;
    int out; /* read end of the child's stdout, -1 when not captured */
    size_t len;
    char buf[8192];
};

/* Start argv[0] (a path) with stdout on a pipe when capture is true, stderr
 * inherited so its messages land in the test log. Returns 0 or -1. */
int proc_spawn(struct proc *p, char *const argv[], bool capture);

/* Read the next line of the child's stdout (newline removed) into line.
 * Returns its length, or -1 on end of file or when timeout_ms passes first. */
int proc_line(struct proc *p, char *line, size_t size, int timeout_ms);

/* Wait for the child to exit, at most timeout_ms. Returns 0 and sets *status
 * (waitpid form) when it exited, -1 when it is still running. */
int proc_wait(struct proc *p, int timeout_ms, int *status);

/* Send sig, then reap with proc_wait (SIGKILL if it ignores sig for 5 s). */
void proc_stop(struct proc *p, int sig);

#endif
