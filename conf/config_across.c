/* config_across.c - checks across values, once the whole file is walked:
 * contradictions (min above max), the slab against the payload limit, TLS
 * files, what the voice keys mean together, the user to run as (and whether
 * it can read the file again at a reload), a file with nothing to do. */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/config_impl.h"
#include "shm/slab.h"

/* ---- checks across values */

/* Report "A (x) RELATION B (y)" at A's value, or at B's when A is not in the
 * file; stay quiet when either value was already reported. */
static void contradiction(struct loader *ld, const char *a, double av, const char *relation,
                          const char *b, double bv)
{
    yaml_node_t *an = lookup(ld, a), *bn = lookup(ld, b);
    if ((an && was_reported(ld, an)) || (bn && was_reported(ld, bn)))
        return;
    report(ld, an ? an : bn, "%s (%.15g%s) %s %s (%.15g%s)", a, av, an ? "" : ", the default",
           relation, b, bv, bn ? "" : ", the default");
}

/* 0 when PATH is a file this process can read, else why not (an errno).
 * Relative paths are relative to the working directory, as when TLS opens them. */
static int file_unreadable(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno;
    if (S_ISDIR(st.st_mode))
        return EISDIR;
    return access(path, R_OK) == 0 ? 0 : errno;
}

static void check_tls(struct loader *ld)
{
    const struct conf_tls *t = &ld->conf->broker.tls;
    if (!t->cert_file != !t->key_file) {
        const char *given = t->cert_file ? "cert_file" : "key_file";
        const char *other = t->cert_file ? "key_file" : "cert_file";
        char path[40];
        snprintf(path, sizeof(path), "broker.tls.%s", given);
        report(ld, lookup(ld, path), "broker.tls.%s is given without broker.tls.%s", given, other);
    }
    const char *const names[] = {"ca_file", "cert_file", "key_file"};
    const char *const files[] = {t->ca_file, t->cert_file, t->key_file};
    for (size_t i = 0; i < 3; i++) {
        int err = files[i] ? file_unreadable(files[i]) : 0;
        if (!err)
            continue;
        char path[40];
        snprintf(path, sizeof(path), "broker.tls.%s", names[i]);
        report(ld, lookup(ld, path), "%s: cannot read '%s': %s", path, files[i], strerror(err));
    }
}

/* engine_start needs a slab that holds one block for the largest job. The
 * slab hands out powers of two, so a payload of 2.5 MiB takes 4 MiB. (A
 * handler's output may be larger still: worker/registry.c checks that.) */
static void check_limits(struct loader *ld)
{
    const struct conf_limits *l = &ld->conf->limits;
    size_t block = slab_block_bytes(l->max_payload);
    if (block <= (uint64_t)l->slab_mb << 20)
        return;
    yaml_node_t *pn = lookup(ld, "limits.max_payload"), *sn = lookup(ld, "limits.slab_mb");
    if ((pn && was_reported(ld, pn)) || (sn && was_reported(ld, sn)))
        return;
    if (block == l->max_payload)
        report(ld, pn ? pn : sn,
               "limits.max_payload (%u bytes) does not fit in limits.slab_mb (%u MiB)",
               l->max_payload, l->slab_mb);
    else
        report(ld, pn ? pn : sn,
               "limits.max_payload (%u bytes) does not fit in limits.slab_mb (%u MiB): it takes a "
               "block of %zu bytes",
               l->max_payload, l->slab_mb, block);
}

/* What the voice keys mean together. */
static void check_voice(struct loader *ld)
{
    struct conf_voice *v = &ld->conf->voice;
    if (v->uplink.count)
        v->uplink_modes = 0;
    for (size_t i = 0; i < v->uplink.count; i++)
        v->uplink_modes |= !strcmp(v->uplink.items[i], "relay") ? UPLINK_RELAY
                           : !strcmp(v->uplink.items[i], "decode")
                               ? UPLINK_DECODE
                               : UPLINK_RECOGNIZE | UPLINK_DECODE;
    /* An utterance travels to the recognizer as one job. */
    uint64_t utterance = (uint64_t)v->max_utterance_s * 16000 * 2;
    if ((v->uplink_modes & UPLINK_RECOGNIZE) && ld->conf->limits.max_payload < utterance)
        report(ld, lookup(ld, "limits.max_payload") ?: lookup(ld, "voice.uplink"),
               "limits.max_payload (%u bytes) cannot hold an utterance of voice.max_utterance_s "
               "(%u s: %llu bytes of 16 kHz PCM)",
               ld->conf->limits.max_payload, v->max_utterance_s, (unsigned long long)utterance);
    static const uint32_t rates[] = {8000, 12000, 16000, 24000, 48000};
    bool rate_ok = false;
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++)
        rate_ok |= v->downlink_rate == rates[i];
    if (!rate_ok)
        report(ld, lookup(ld, "voice.downlink_rate"),
               "voice.downlink_rate: %u is not an Opus rate (8000, 12000, 16000, 24000, 48000)",
               v->downlink_rate);
    if (v->downlink_frame_ms % 20)
        report(ld, lookup(ld, "voice.downlink_frame_ms"),
               "voice.downlink_frame_ms: %u is not 20, 40 or 60", v->downlink_frame_ms);
    if (v->pcm_batch_ms % 60)
        report(ld, lookup(ld, "voice.pcm_batch_ms"),
               "voice.pcm_batch_ms: %u is not a whole number of 60 ms frames", v->pcm_batch_ms);
    /* Instances sharing the devices forward what is not theirs through the
     * broker, and must not get their own forwards back (No Local). */
    if (!strncmp(v->topics.up, "$share/", 7) && strcmp(ld->conf->broker.protocol, "5") != 0)
        report(ld, lookup(ld, "voice.topics.up"),
               "voice.topics.up: a shared subscription needs broker.protocol 5");
    /* Each session may hold a stream of each kind it uses: the encoder's,
     * the decoder's and the synthesizer's (its sentences in order). */
    unsigned per = 1 + !!(v->uplink_modes & UPLINK_DECODE) + (v->say_voice != NULL);
    uint64_t streams = (uint64_t)v->max_sessions * per;
    if (ld->conf->streams.max < streams)
        report_warning(ld, lookup(ld, "voice.max_sessions") ?: lookup(ld, "voice"),
                       "voice.max_sessions: %u sessions may need %llu streams, and streams.max is "
                       "%u: past it a new session's audio is refused",
                       v->max_sessions, (unsigned long long)streams, ld->conf->streams.max);
    bool wildcard = !strcmp(v->bind, "0.0.0.0") || !strcmp(v->bind, "::");
    if (wildcard && !v->public_host)
        report(ld, lookup(ld, "voice.bind"),
               "voice.bind: %s is every address; set voice.public_host to the one devices reach",
               v->bind);
}

/* Whether PW's user (its uid, gid and groups) passes the mode bits of ST
 * for the access in WANT (S_IROTH or S_IXOTH). ACLs are not looked at. */
static bool user_may(const struct passwd *pw, const gid_t *groups, int ngroups,
                     const struct stat *st, mode_t want)
{
    if (pw->pw_uid == 0)
        return true;
    if (st->st_uid == pw->pw_uid)
        return st->st_mode & (want << 6);
    for (int i = 0; i < ngroups; i++)
        if (groups[i] == st->st_gid)
            return st->st_mode & (want << 3);
    return st->st_mode & want;
}

/* Whether PW's user may open PATH for reading: search every directory on
 * the way, read the file. True when that cannot be found out (the open
 * at start has said what is wrong with the file itself). */
static bool user_can_read(const struct passwd *pw, const char *path)
{
    gid_t groups[256];
    int ngroups = (int)(sizeof(groups) / sizeof(groups[0]));
    char *real = realpath(path, NULL);
    if (!real || getgrouplist(pw->pw_name, pw->pw_gid, groups, &ngroups) < 0) {
        free(real);
        return true;
    }
    bool ok = true;
    struct stat st;
    for (char *slash = strchr(real + 1, '/'); ok && slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        ok = stat(real, &st) < 0 || user_may(pw, groups, ngroups, &st, S_IXOTH);
        *slash = '/';
    }
    if (ok && stat(real, &st) == 0)
        ok = user_may(pw, groups, ngroups, &st, S_IROTH);
    free(real);
    return ok;
}

/* The daemon drops to USER at start: it must exist; and a SIGHUP reloads
 * the file as USER, so a file USER cannot read would make every reload
 * fail. (Keeping a way to read it as root would mean keeping a privilege
 * for the daemon's whole life, which dropping the user is there to avoid.)
 * getpwnam_r: a reload loads in a thread of its own. */
static void check_user(struct loader *ld)
{
    const struct conf *c = ld->conf;
    yaml_node_t *un = lookup(ld, "user");
    struct passwd pw, *found = NULL;
    char pwbuf[4096];
    if (!c->user || (un && was_reported(ld, un)))
        return;
    if (getpwnam_r(c->user, &pw, pwbuf, sizeof(pwbuf), &found) != 0 || !found)
        report(ld, un, "user: no such user '%s'", c->user);
    else if (!user_can_read(found, ld->path))
        report_warning(ld, un,
                       "user: '%s' cannot read %s: a reload (SIGHUP) runs as that user and "
                       "would fail; make the file readable by it or its group (chgrp, chmod "
                       "0640), or restart instead of reloading",
                       c->user, ld->path);
}

/* No route and no voice gateway: the daemon would start and do nothing
 * (an empty or forgotten routes: list). Only said of a file without
 * errors: one with errors does not start anyway. */
void check_has_work(struct loader *ld)
{
    for (size_t i = ld->diags_before; i < ld->diags->count; i++)
        if (!ld->diags->items[i].warning)
            return;
    yaml_node_t *rn = lookup(ld, "routes");
    if (ld->conf->nroutes == 0 && !ld->conf->voice.enabled && !(rn && was_reported(ld, rn)) &&
        !(rn && rn->type == YAML_SEQUENCE_NODE && list_count(rn) > 0))
        report_warning(ld, rn, "routes: none, and no voice: section: the daemon would take no job");
}

/* An alert fires at a threshold it is given, and resolves below it: at
 * 80% of it unless given. */
static void check_alerts(struct loader *ld)
{
    for (int f = 0; f < ALERT_COUNT; f++) {
        struct conf_alert *a = &ld->conf->alerts.rule[f];
        char path[32], fire[48], resolve[48];
        snprintf(path, sizeof(path), "alerts.%s", conf_alert_name(f));
        snprintf(fire, sizeof(fire), "%s.fire", path);
        snprintf(resolve, sizeof(resolve), "%s.resolve", path);
        if (a->enabled && !lookup(ld, fire)) {
            report(ld, lookup(ld, path), "%s: missing required key 'fire'", path);
            continue;
        }
        if (a->resolve < 0) {
            a->resolve = a->fire * 0.8;
            continue;
        }
        if (a->resolve >= a->fire)
            contradiction(ld, resolve, a->resolve, "must be below", fire, a->fire);
    }
}

void check_across(struct loader *ld)
{
    const struct conf *c = ld->conf;
    if (c->workers.min > c->workers.max)
        contradiction(ld, "workers.min", c->workers.min, "is greater than", "workers.max",
                      c->workers.max);
    if (c->broker.reconnect_max_s < c->broker.reconnect_min_s)
        contradiction(ld, "broker.reconnect_max_s", c->broker.reconnect_max_s, "is less than",
                      "broker.reconnect_min_s", c->broker.reconnect_min_s);
    /* Scaling down above the point of scaling up would make the pool flap. */
    const struct conf_scaling *s = &c->scaling;
    if (s->down_load > s->up_load)
        contradiction(ld, "scaling.down_load", s->down_load, "is greater than", "scaling.up_load",
                      s->up_load);
    if (s->down_cpu > s->up_cpu)
        contradiction(ld, "scaling.down_cpu", s->down_cpu, "is greater than", "scaling.up_cpu",
                      s->up_cpu);
    if (s->down_p95_ms > s->up_p95_ms)
        contradiction(ld, "scaling.down_p95_ms", s->down_p95_ms, "is greater than",
                      "scaling.up_p95_ms", s->up_p95_ms);
    check_limits(ld);
    check_alerts(ld);
    if (c->voice.enabled)
        check_voice(ld);
    if (c->broker.tls_enabled)
        check_tls(ld);
    check_user(ld);
    check_has_work(ld);
}
