/* The gateway's settings and the pieces its front ends share. */
#ifndef INGEST_GATEWAY_H
#define INGEST_GATEWAY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "budget.h"
#include "config.h"
#include "event.h"
#include "metrics.h"
#include "queue.h"

typedef struct gateway_config {
    char *kafka_bootstrap;
    char *kafka_topic;
    char *gateway_id;
    char *http_addr;
    int64_t http_threads;
    char *admin_addr;
    char *udp_addr;
    int64_t udp_threads;
    size_t udp_rcvbuf;
    size_t udp_max_datagram;
    char *grpc_addr;
    int64_t grpc_threads;
    int64_t producer_threads;
    int64_t queue_capacity;
    int64_t queue_high_water;
    size_t max_event_bytes;
    size_t max_request_bytes;
    int64_t max_batch_events;
    int64_t ack_timeout_ms;
    char *default_ack;
    char *auth_token;
    char *auth_file;
    char *tls_cert;
    char *tls_key;
    char *tls_client_ca;
    char *tls_client_auth;
    char *tls_ciphers;
    int64_t reload_interval_ms;
    int64_t http_idle_timeout_ms;
    int64_t http_header_timeout_ms;
    size_t http_min_body_rate;
    int64_t max_connections;
    int64_t grpc_max_connection_idle_ms;
    int64_t grpc_max_connection_age_ms;
    int64_t grpc_message_timeout_ms;
    int64_t grpc_handshake_timeout_ms;
    int64_t http_overload_wait_ms;
    char *cors_origins;
    int cors_credentials;
    int64_t retry_after_s;
    int64_t shutdown_timeout_ms;
    size_t memory_budget;
    char *spool_dir;
    char *spool_mode;
    size_t spool_max_bytes;
    int64_t spool_max_age_ms;
    char *log_level;
    char *log_format;
    config_props kafka_props;
} gateway_config;

extern const config_program gateway_config_program;

/* What every front end reads: set up before the threads start, read-only after (but the flag). */
typedef struct gateway {
    const gateway_config *cfg;
    ing_event_limits lim;
    queue *q;
    gw_budget budget;             /* --memory-budget's shares (budget.h) */
    atomic_int stopping;          /* new requests are refused with 503 */
    atomic_int kafka_reachable;   /* 1 when a broker answered the last question (gateway/status.c) */
    atomic_int http_body_waiters; /* HTTP connections waiting for room for a body, on every thread */
    atomic_int grpc_stalled;      /* 1 while the gRPC listener does not answer new clients (grpc_probe.c) */
    gateway_metrics metrics;
    struct gw_spooler *spooler; /* --spool=always's (spooler.h); NULL: no spool */
    gw_auth_slot auth;          /* the principals (auth.h): swapped whole by a reload, held by each request */
    struct gw_tls *tls;         /* --tls-cert's, both ports (tls.h), swapped by a reload; NULL: plaintext */
    /* The stop's wait for the front ends to finish (gateway/front.h); the condition on CLOCK_MONOTONIC. */
    pthread_mutex_t idle_lock;
    pthread_cond_t idle;
    unsigned long idle_gen;
} gateway;

/*
 * Overload: the queue is above its high-water mark, or what it holds has
 * used up the budget's queued share. New work is refused (or held) while so.
 */
static inline int gw_overloaded(gateway *gw)
{
    return queue_above_high_water(gw->q) || gw_budget_queued_full(&gw->budget);
}

/* The gateway's shared parts that need setting up (the stop's condition variable). 0 or -1. */
int gateway_init(gateway *gw);
void gateway_destroy(gateway *gw);

#endif
