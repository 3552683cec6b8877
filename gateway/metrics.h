/*
 * The gateway's counters: requests, events and refusals by protocol and
 * reason, and request latency by protocol. Atomics, bumped once per request
 * (never per event), written out by gateway_metrics_write() at scrape time.
 *
 * A "request" is an HTTP request, a UDP datagram or a gRPC message (or a
 * connection closed at accept: too_many_connections). A refusal
 * is "rejected" when the request itself is at fault (bad input, auth) and
 * "dropped" when the gateway could not take it (overload, shutdown, Kafka).
 */
#ifndef INGEST_GATEWAY_METRICS_H
#define INGEST_GATEWAY_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "prom.h"
#include "quota.h"
#include "reason.h"

/*
 * One principal's counters, by name: kept for the gateway's life in a list
 * that only grows (names come only from auth files, so it is bounded), so
 * that a reload which builds new principals keeps counting where the old
 * ones were.
 */
typedef struct gw_principal_stats {
    struct gw_principal_stats *next; /* set before the entry is published, never changed */
    char name[65];
    atomic_uint_fast64_t events;                /* accepted into the queue */
    atomic_uint_fast64_t refused[GW_N_REASONS]; /* requests refused, by reason */
    /*
     * Its quotas' token buckets (quota.h), here so that a reload neither
     * refills nor forgets them. `anonymous` has per-source-address tables
     * instead, made by gw_auth_swap() when its rules first set that quota
     * (only the reloading thread writes these pointers).
     */
    gw_bucket events_bucket, bytes_bucket;
    gw_ip_buckets *events_ips, *bytes_ips;
} gw_principal_stats;

typedef struct gateway_metrics {
    atomic_uint_fast64_t requests[GW_N_PROTOCOLS];
    atomic_uint_fast64_t events[GW_N_PROTOCOLS]; /* accepted into the queue */
    atomic_uint_fast64_t refused[GW_N_PROTOCOLS][GW_N_REASONS];
    prom_histogram latency[GW_N_PROTOCOLS];
    /* Connections open now, on all of a protocol's threads: what --max-connections caps (HTTP). */
    atomic_size_t connections[GW_N_PROTOCOLS];
    /* TLS handshakes that failed or timed out (HTTP only, so far: gRPC has no TLS yet). */
    atomic_uint_fast64_t tls_handshake_failures[GW_N_PROTOCOLS];
    _Atomic(gw_principal_stats *) principals; /* the registry: pushed at the head, never removed */
    /* Reloads of one item each (reload.h): [0] put in force, [1] failed (the old one kept). */
    atomic_uint_fast64_t config_reloads[2];
} gateway_metrics;

/* The counters of principal `name`, found or added (any thread); NULL on no memory. */
gw_principal_stats *gateway_metrics_principal(gateway_metrics *m, const char *name);
/* At the end: free the registry. */
void gateway_metrics_principals_free(gateway_metrics *m);
/* n events of a principal's request went into the queue; one of its requests refused. NULL p: none. */
void gateway_metrics_principal_events(gw_principal_stats *p, size_t n);
void gateway_metrics_principal_refused(gw_principal_stats *p, gw_reason r);

/* One request answered or handled; started_ns from prom_now_ns() (0: no latency sample). */
void gateway_metrics_request(gateway_metrics *m, gw_protocol p, uint64_t started_ns);
/* n requests handled together, all started at started_ns. */
void gateway_metrics_requests(gateway_metrics *m, gw_protocol p, uint64_t started_ns, size_t n);
/* n events of one request went into the queue. */
void gateway_metrics_events(gateway_metrics *m, gw_protocol p, size_t n);
/* One request refused, for reason r. */
void gateway_metrics_refused(gateway_metrics *m, gw_protocol p, gw_reason r);
/* n requests refused for reason r, counted elsewhere (the kernel's UDP drops). */
void gateway_metrics_refused_n(gateway_metrics *m, gw_protocol p, gw_reason r, uint64_t n);
uint64_t gateway_metrics_refused_count(const gateway_metrics *m, gw_protocol p, gw_reason r);

/* ingest_requests_total, ingest_events_received_total, ingest_rejected_total, ingest_dropped_total,
 * ingest_connections, ingest_tls_handshake_failures_total, ingest_config_reloads_total,
 * ingest_request_duration_seconds, ingest_principal_events_total and ingest_principal_refused_total, in
 * the Prometheus text format. */
void gateway_metrics_write(const gateway_metrics *m, struct evbuffer *out);

#endif
