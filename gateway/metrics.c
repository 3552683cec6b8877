#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

static const char *const protocol_names[GW_N_PROTOCOLS] = {"http", "udp", "grpc"};

/*
 * Which reasons each protocol can give, so a scrape shows them at 0 before
 * the first one happens (rate() needs the series to exist) without listing
 * combinations that cannot occur.
 */
#define R(r) (1u << GW_R_##r)
static const unsigned reasons_of[GW_N_PROTOCOLS] = {
    [GW_HTTP] = R(malformed_json) | R(invalid_event) | R(too_large) | R(too_many_events) |
                R(unsupported_media_type) | R(unsupported_encoding) | R(bad_encoding) | R(bad_request) |
                R(headers_too_large) | R(not_found) | R(method_not_allowed) | R(unauthorized) | R(forbidden) |
                R(rate_limited) | R(request_timeout) | R(overloaded) | R(too_many_connections) |
                R(shutting_down) | R(ack_timeout) | R(kafka_error) | R(internal),
    [GW_UDP] = R(malformed_json) | R(malformed_protobuf) | R(invalid_event) | R(too_large) | R(empty) |
               R(truncated) | R(unauthorized) | R(forbidden) | R(rate_limited) | R(overloaded) |
               R(shutting_down) | R(socket_buffer) | R(internal),
    [GW_GRPC] = R(malformed_protobuf) | R(invalid_event) | R(too_large) | R(too_many_events) |
                R(bad_request) | R(unauthorized) | R(forbidden) | R(rate_limited) | R(request_timeout) |
                R(overloaded) | R(shutting_down) | R(ack_timeout) | R(kafka_error) | R(internal),
};

/* The reasons ingest_principal_refused_total lists: what a principal's rules refuse (quotas add theirs). */
static const unsigned principal_reasons = R(forbidden) | R(rate_limited);

void gateway_metrics_requests(gateway_metrics *m, gw_protocol p, uint64_t started_ns, size_t n)
{
    atomic_fetch_add_explicit(&m->requests[p], n, memory_order_relaxed);
    if (started_ns)
        prom_histogram_observe_n(&m->latency[p], prom_now_ns() - started_ns, n);
}

void gateway_metrics_request(gateway_metrics *m, gw_protocol p, uint64_t started_ns)
{
    gateway_metrics_requests(m, p, started_ns, 1);
}

void gateway_metrics_events(gateway_metrics *m, gw_protocol p, size_t n)
{
    atomic_fetch_add_explicit(&m->events[p], n, memory_order_relaxed);
}

void gateway_metrics_refused(gateway_metrics *m, gw_protocol p, gw_reason r)
{
    gateway_metrics_refused_n(m, p, r, 1);
}

void gateway_metrics_refused_n(gateway_metrics *m, gw_protocol p, gw_reason r, uint64_t n)
{
    atomic_fetch_add_explicit(&m->refused[p][r], n, memory_order_relaxed);
}

uint64_t gateway_metrics_refused_count(const gateway_metrics *m, gw_protocol p, gw_reason r)
{
    return atomic_load_explicit(&m->refused[p][r], memory_order_relaxed);
}

gw_principal_stats *gateway_metrics_principal(gateway_metrics *m, const char *name)
{
    gw_principal_stats *head = atomic_load_explicit(&m->principals, memory_order_acquire), *p;

    for (;;) {
        for (p = head; p; p = p->next)
            if (strcmp(p->name, name) == 0)
                return p;
        if ((p = calloc(1, sizeof(*p))) == NULL)
            return NULL;
        snprintf(p->name, sizeof(p->name), "%s", name);
        gw_bucket_init(&p->events_bucket);
        gw_bucket_init(&p->bytes_bucket);
        p->next = head;
        if (atomic_compare_exchange_strong_explicit(&m->principals, &head, p, memory_order_release,
                                                    memory_order_acquire))
            return p;
        /* Someone else added one meanwhile (perhaps this name): look again from the new head. */
        free(p);
    }
}

void gateway_metrics_principals_free(gateway_metrics *m)
{
    gw_principal_stats *p = atomic_exchange(&m->principals, NULL);

    while (p) {
        gw_principal_stats *next = p->next;
        gw_ip_buckets_free(p->events_ips);
        gw_ip_buckets_free(p->bytes_ips);
        free(p);
        p = next;
    }
}

void gateway_metrics_principal_events(gw_principal_stats *p, size_t n)
{
    if (p)
        atomic_fetch_add_explicit(&p->events, n, memory_order_relaxed);
}

void gateway_metrics_principal_refused(gw_principal_stats *p, gw_reason r)
{
    if (p)
        atomic_fetch_add_explicit(&p->refused[r], 1, memory_order_relaxed);
}

static void write_principals(const gateway_metrics *m, struct evbuffer *out)
{
    gw_principal_stats *head =
        atomic_load_explicit(&((gateway_metrics *)m)->principals, memory_order_acquire);
    char labels[160];

    prom_family(out, "ingest_principal_events_total", "counter",
                "Events accepted into the queue, by principal (the names of --auth-file, and anonymous)");
    for (const gw_principal_stats *p = head; p; p = p->next) {
        snprintf(labels, sizeof(labels), "principal=\"%s\"", p->name);
        prom_sample_u64(out, "ingest_principal_events_total", labels,
                        atomic_load_explicit(&p->events, memory_order_relaxed));
    }
    prom_family(
        out, "ingest_principal_refused_total", "counter",
        "Requests refused by a principal's rules (forbidden: a protocol or source it may not use), by "
        "principal and reason");
    for (const gw_principal_stats *p = head; p; p = p->next)
        for (int r = 0; r < GW_N_REASONS; r++) {
            if (!(principal_reasons & (1u << r)))
                continue;
            snprintf(labels, sizeof(labels), "principal=\"%s\",reason=\"%s\"", p->name, gw_reasons[r].name);
            prom_sample_u64(out, "ingest_principal_refused_total", labels,
                            atomic_load_explicit(&p->refused[r], memory_order_relaxed));
        }
}

static void write_refused(const gateway_metrics *m, struct evbuffer *out, const char *name, int drops)
{
    char labels[96];

    for (int p = 0; p < GW_N_PROTOCOLS; p++)
        for (int r = 0; r < GW_N_REASONS; r++) {
            uint64_t v = atomic_load_explicit(&m->refused[p][r], memory_order_relaxed);
            if (gw_reasons[r].dropped != drops || (v == 0 && !(reasons_of[p] & (1u << r))))
                continue;
            snprintf(labels, sizeof(labels), "protocol=\"%s\",reason=\"%s\"", protocol_names[p],
                     gw_reasons[r].name);
            prom_sample_u64(out, name, labels, v);
        }
}

void gateway_metrics_write(const gateway_metrics *m, struct evbuffer *out)
{
    char labels[32];

    prom_family(out, "ingest_requests_total", "counter",
                "Requests handled: HTTP requests, UDP datagrams, gRPC messages");
    for (int p = 0; p < GW_N_PROTOCOLS; p++) {
        snprintf(labels, sizeof(labels), "protocol=\"%s\"", protocol_names[p]);
        prom_sample_u64(out, "ingest_requests_total", labels,
                        atomic_load_explicit(&m->requests[p], memory_order_relaxed));
    }
    prom_family(out, "ingest_events_received_total", "counter", "Events accepted into the queue for Kafka");
    for (int p = 0; p < GW_N_PROTOCOLS; p++) {
        snprintf(labels, sizeof(labels), "protocol=\"%s\"", protocol_names[p]);
        prom_sample_u64(out, "ingest_events_received_total", labels,
                        atomic_load_explicit(&m->events[p], memory_order_relaxed));
    }
    prom_family(out, "ingest_rejected_total", "counter",
                "Requests refused for what they hold (bad input, authentication), by reason");
    write_refused(m, out, "ingest_rejected_total", 0);
    prom_family(out, "ingest_dropped_total", "counter",
                "Requests the gateway could not take (overload, shutdown, Kafka, a full UDP socket buffer), "
                "by reason");
    write_refused(m, out, "ingest_dropped_total", 1);
    prom_family(out, "ingest_connections", "gauge",
                "HTTP connections open now (--max-connections caps them)");
    prom_sample_u64(out, "ingest_connections", "protocol=\"http\"",
                    atomic_load_explicit(&m->connections[GW_HTTP], memory_order_relaxed));
    /* Listed without TLS too (at 0): a dashboard's query does not depend on the port's settings. */
    prom_family(out, "ingest_tls_handshake_failures_total", "counter",
                "TLS handshakes on the HTTP port that failed (a bad or missing client certificate, no common "
                "version or cipher, plaintext on the TLS port) or timed out");
    prom_sample_u64(out, "ingest_tls_handshake_failures_total", "protocol=\"http\"",
                    atomic_load_explicit(&m->tls_handshake_failures[GW_HTTP], memory_order_relaxed));
    prom_family(out, "ingest_config_reloads_total", "counter",
                "Reloads of a file-backed setting (TLS certificates, --auth-file) on SIGHUP or "
                "--reload-interval: ok (in "
                "force), failed (the old one kept; the log says why)");
    prom_sample_u64(out, "ingest_config_reloads_total", "result=\"ok\"",
                    atomic_load_explicit(&m->config_reloads[0], memory_order_relaxed));
    prom_sample_u64(out, "ingest_config_reloads_total", "result=\"failed\"",
                    atomic_load_explicit(&m->config_reloads[1], memory_order_relaxed));
    prom_family(out, "ingest_request_duration_seconds", "histogram",
                "From a request's first byte (UDP: its receipt) to its answer (UDP: its queueing)");
    for (int p = 0; p < GW_N_PROTOCOLS; p++) {
        snprintf(labels, sizeof(labels), "protocol=\"%s\"", protocol_names[p]);
        prom_histogram_write(out, "ingest_request_duration_seconds", labels, &m->latency[p]);
    }
    write_principals(m, out);
}
