/* report.h - the error report: the JSON published on errors.topic for every
 * job that ends in an error or is refused. Fields: route, topic, error (a
 * job status word such as "overloaded" or "quarantined"), detail (a sentence
 * for a human), attempts, tries (what ended each attempt of a job tried
 * more than once: "crashed", "timeout", "failed"), and the request's MQTT v5
 * correlation data, base64 encoded, when there was some. A correlation key
 * dropped incomplete adds key and parts (the names of the parts it had). */
#ifndef MQFORK_PROTO_REPORT_H
#define MQFORK_PROTO_REPORT_H

#include <stddef.h>
#include <stdint.h>

struct report {
    const char *route;
    const char *topic;
    const char *error;
    const char *detail; /* need not be NUL-terminated: detail_len bytes */
    size_t detail_len;
    uint32_t attempts;
    const char *const *tries; /* ntries words, or NULL */
    size_t ntries;
    const void *correlation;
    size_t correlation_len;
    const char *key;          /* a correlation key, or NULL */
    const char *const *parts; /* with key: the nparts names of the parts it had */
    size_t nparts;
};

/* The report as a JSON text (malloc'd; the caller frees it), or NULL when
 * out of memory. Bytes of detail that are not printable are replaced. */
char *report_json(const struct report *r);

#endif
