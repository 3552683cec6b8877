/*
 * The gateway: settings, the shared queue, the Kafka producer, and the front
 * ends (HTTP, UDP, gRPC), each of which owns its threads and is driven
 * through one lifecycle (front.h). Stops on SIGTERM/SIGINT: refuse new
 * requests, finish those in flight, drain the queue into Kafka, flush, exit 0.
 * SIGHUP (and --reload-interval) reloads the certificates and --auth-file (reload.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef INGEST_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#include "admin.h"
#include "admit.h"
#include "envelope.h"
#include "app.h"
#include "front.h"
#include "gateway.h"
#include "grpc.h"
#include "http.h"
#include "udp.h"
#include "log.h"
#include "net.h"
#include "producer.h"
#include "reload.h"
#include "queue.h"
#include "status.h"
#include "spooler.h"
#include "mono.h"
#include "cors.h"
#include "tls.h"

/* Descriptors kept for all but the HTTP and gRPC connections (see main). */
#define FD_RESERVE 256

/*
 * jemalloc: give memory back to the kernel a second after it is freed
 * (dirty pages, then muzzy ones at once), from a background thread, so RSS
 * falls after a burst of large bodies instead of staying at its peak
 * (jemalloc's default waits 10 s, and only while the program allocates).
 * Set with mallctl, not the malloc_conf symbol, which would interpose on the
 * library's own (tests/symbols).
 */
static void malloc_settings(void)
{
#ifdef INGEST_JEMALLOC
    ssize_t dirty = 1000, muzzy = 0;
    bool on = true;
    unsigned narenas = 0;
    size_t len = sizeof(narenas);
    char name[64];

    /* The default for arenas made later, then each made already (those not yet in use refuse: EFAULT). */
    if (mallctl("arenas.dirty_decay_ms", NULL, NULL, &dirty, sizeof(dirty)) != 0 ||
        mallctl("arenas.muzzy_decay_ms", NULL, NULL, &muzzy, sizeof(muzzy)) != 0 ||
        mallctl("background_thread", NULL, NULL, &on, sizeof(on)) != 0 ||
        mallctl("arenas.narenas", &narenas, &len, NULL, 0) != 0) {
        LOG_WARN("gateway",
                 "cannot set jemalloc's decay: memory freed after a burst returns to the system later");
        return;
    }
    for (unsigned i = 0; i < narenas; i++) {
        snprintf(name, sizeof(name), "arena.%u.dirty_decay_ms", i);
        mallctl(name, NULL, NULL, &dirty, sizeof(dirty));
        snprintf(name, sizeof(name), "arena.%u.muzzy_decay_ms", i);
        mallctl(name, NULL, NULL, &muzzy, sizeof(muzzy));
    }
#endif
}

/*
 * The stop's deadline came with requests still waiting for Kafka: they are
 * answered (503 / UNAVAILABLE: the events may still arrive), not cut off,
 * and get a moment for the answers to go out.
 */
static void answer_the_rest(gateway *gw, gw_front *fronts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t left = fronts[i].ops->pending(fronts[i].self);
        if (left)
            LOG_WARN("gateway",
                     "stopping with %zu %s requests still open; those waiting for Kafka are answered now "
                     "(503 / UNAVAILABLE), the others cancelled",
                     left, fronts[i].ops->name);
        fronts[i].ops->abort_waiting(fronts[i].self);
    }
    gw_fronts_wait_idle(gw, fronts, n, mono_ms() + 500);
}

/* How long the stop waits for the spool to make the last appends durable before it may leave them there. */
#define SETTLE_MS 1000

/*
 * With --spool=always and Kafka not reachable, a request waiting for Kafka
 * would wait out the whole --shutdown-timeout for nothing: its records are
 * in the spool, and the next start sends them. So, a round at a time: once
 * what was appended is durable (persisted requests are answered by that)
 * and their answers had a round to go out, what still waits for Kafka is
 * answered as at the deadline (503 / UNAVAILABLE). Requests still being
 * read finish as before. Kafka reachable: the wait of every stop.
 */
static size_t wait_idle_spooled(gateway *gw, gw_front *fronts, size_t n, long long deadline)
{
    int settled = 0;

    for (;;) {
        long long now = mono_ms(), until = now + 200 < deadline ? now + 200 : deadline;
        size_t pending = gw_fronts_wait_idle(gw, fronts, n, until);
        if (pending == 0 || until >= deadline)
            return pending;
        if (atomic_load(&gw->kafka_reachable) == 1) {
            settled = 0;
            continue;
        }
        if (settled)
            for (size_t i = 0; i < n; i++)
                fronts[i].ops->abort_waiting(fronts[i].self);
        settled = gw_spooler_settle(gw->spooler, 200);
    }
}

/* A record nobody waited for, refused by Kafka for its size: its protocol's too_large drop. */
static void count_too_large(void *arg, int protocol)
{
    gw_protocol p = protocol == ENVELOPE_UDP ? GW_UDP : protocol == ENVELOPE_GRPC ? GW_GRPC : GW_HTTP;

    gw_admit_count_refused(arg, p, GW_R_too_large);
}

/* --auth-file again (reload.h): parsed and linked to the principals' counters, or the old rules stay. */
static void *auth_reload_load(void *arg, char *err, size_t errlen)
{
    gateway *gw = arg;
    gw_auth *next = gw_auth_load(gw->cfg->auth_file, err, errlen);

    if (next && gw_auth_link(gw, next) != 0) {
        snprintf(err, errlen, "%s: out of memory", gw->cfg->auth_file);
        gw_auth_release(next);
        return NULL;
    }
    return next;
}

static void auth_reload_swap(void *arg, void *next)
{
    gw_auth_swap(arg, next); /* linked: cannot fail */
}

int main(int argc, char **argv)
{
    gateway_config cfg;
    gateway gw;
    producer *prod = NULL;
    gw_front fronts[3];
    size_t n_fronts = 0;
    admin_server *admin = NULL;
    gw_reloader *reloader = NULL;
    gateway_status gst = {0};
    gw_auth *auth = NULL;
    char errbuf[512], host[256];
    int status = 1, rc, gw_ready = 0;

    memset(&cfg, 0, sizeof(cfg));
    memset(&gw, 0, sizeof(gw));
    app_block_signals();
    if ((rc = app_config_load(&gateway_config_program, &cfg, argc, argv, &cfg.log_level, &cfg.log_format)) >=
        0) {
        status = rc;
        goto out;
    }
    if (cfg.queue_high_water > cfg.queue_capacity) {
        fprintf(stderr, "gateway: --queue-high-water (%lld) must not exceed --queue-capacity (%lld)\n",
                (long long)cfg.queue_high_water, (long long)cfg.queue_capacity);
        status = 2;
        goto out;
    }
    if ((size_t)cfg.max_batch_events > (size_t)cfg.queue_capacity) {
        fprintf(stderr, "gateway: --max-batch-events (%lld) must not exceed --queue-capacity (%lld)\n",
                (long long)cfg.max_batch_events, (long long)cfg.queue_capacity);
        status = 2;
        goto out;
    }
    if (cfg.max_event_bytes > cfg.max_request_bytes) {
        fprintf(stderr, "gateway: --max-event-bytes (%zu) must not exceed --max-request-bytes (%zu)\n",
                cfg.max_event_bytes, cfg.max_request_bytes);
        status = 2;
        goto out;
    }
    if (gw_budget_init(&gw.budget, cfg.memory_budget, cfg.max_request_bytes, errbuf, sizeof(errbuf)) != 0) {
        fprintf(stderr, "gateway: --memory-budget: %s\n", errbuf);
        status = 2;
        goto out;
    }
    /*
     * Every address is checked before anything starts, so a typo is one clear line and exit status 2;
     * and "[::]" becomes "0.0.0.0" here on a host without IPv6, once for all of a listener's sockets.
     */
    const struct {
        const char *flag;
        char **addr;
        int type, flags;
    } listeners[] = {
        {"--http-addr", &cfg.http_addr, SOCK_STREAM, 0},
        {"--udp-addr", &cfg.udp_addr, SOCK_DGRAM, 0},
        {"--grpc-addr", &cfg.grpc_addr, SOCK_STREAM, NET_LISTEN_GRPC_CORE},
        {"--admin-addr", &cfg.admin_addr, SOCK_STREAM, 0},
    };
    for (size_t i = 0; i < sizeof(listeners) / sizeof(listeners[0]); i++) {
        if ((rc = net_listen_addr(listeners[i].flag, listeners[i].addr, listeners[i].type, listeners[i].flags,
                                  errbuf, sizeof(errbuf))) != 0) {
            fprintf(stderr, "gateway: %s %s\n", listeners[i].flag, errbuf);
            status = rc == -EINVAL ? 2 : 1;
            goto out;
        }
    }
    /* Certificates are read before anything starts: a bad file is one line naming it, and exit status 2. */
    if (gw_tls_open(&cfg, &gw.tls, errbuf, sizeof(errbuf)) != 0) {
        fprintf(stderr, "gateway: %s\n", errbuf);
        status = 2;
        goto out;
    }
    /* The principals too: a mistake in the file is one line naming the file and its line, and exit status 2.
     */
    if ((auth = gw_auth_from_config(&cfg, errbuf, sizeof(errbuf))) == NULL) {
        fprintf(stderr, "gateway: %s%s\n", cfg.auth_file[0] && !cfg.auth_token[0] ? "--auth-file " : "",
                errbuf);
        status = 2;
        goto out;
    }
    if (gw.tls)
        LOG_INFO("gateway", "tls=on (http, grpc) cert=%s client_auth=%s (admin stays plaintext)",
                 cfg.tls_cert, cfg.tls_client_auth);
    /* A mistyped origin would never match: one line and exit status 2, not pages silently blocked. */
    gw_cors cors;
    if (gw_cors_init(&cors, cfg.cors_origins, cfg.cors_credentials, errbuf, sizeof(errbuf)) != 0) {
        fprintf(stderr, "gateway: %s\n", errbuf);
        status = 2;
        goto out;
    }
    if (cors.on)
        LOG_INFO("gateway", "cors=on origins=%s credentials=%s", cfg.cors_origins,
                 cfg.cors_credentials ? "true" : "false");
    gw_cors_free(&cors);
    if (cfg.gateway_id[0] == '\0') {
        app_hostname(host, sizeof(host));
        free(cfg.gateway_id);
        if ((cfg.gateway_id = strdup(host)) == NULL)
            goto out;
    }

    /*
     * Descriptors: one per connection on the HTTP and gRPC ports, and a
     * reserve for the admin port, Kafka's sockets and the loops' own. When
     * --max-connections does not fit, the cap is lowered to what does, so a
     * connection flood meets the cap (closed at accept, counted) and never
     * EMFILE, which would refuse the admin port's probes too.
     */
    malloc_settings();
    unsigned long nofile = app_raise_nofile();
    if (nofile && nofile != (unsigned long)-1) {
        unsigned long fit = nofile > 2 * FD_RESERVE ? (nofile - FD_RESERVE) / 2 : nofile / 4;
        if ((unsigned long)cfg.max_connections > fit) {
            LOG_WARN("gateway",
                     "--max-connections=%lld does not fit the descriptor limit (%lu) on two TCP ports with "
                     "%d in reserve: using %lu",
                     (long long)cfg.max_connections, nofile, FD_RESERVE, fit);
            cfg.max_connections = (int64_t)(fit ? fit : 1);
        }
    }

    gw.cfg = &cfg;
    ing_event_limits_default(&gw.lim);
    gw.lim.max_event_bytes = cfg.max_event_bytes;
    gw.lim.max_request_bytes = cfg.max_request_bytes;
    gw.lim.max_batch_events = (size_t)cfg.max_batch_events;
    if (gateway_init(&gw) != 0) {
        LOG_ERROR("gateway", "cannot set up");
        goto out;
    }
    gw_ready = 1;
    rc = gw_auth_swap(&gw, auth);
    auth = NULL; /* the gateway's now (or released) */
    if (rc != 0) {
        LOG_ERROR("gateway", "out of memory setting up the principals");
        goto out;
    }
    if ((gw.q = queue_new((size_t)cfg.queue_capacity, (size_t)cfg.queue_high_water)) == NULL) {
        LOG_ERROR("gateway", "cannot create the queue");
        goto out;
    }
    /* The spool before anything listens: a directory that cannot be used is one line and exit status 2. */
    if (gw_spooler_open(&gw, &gw.spooler, errbuf, sizeof(errbuf)) != 0) {
        fprintf(stderr, "gateway: --spool-dir %s\n", errbuf);
        status = 2;
        goto out;
    }
    /* A segment past RLIMIT_FSIZE is a write error (EFBIG) the gateway reports and outlives, not a kill. */
    if (gw.spooler)
        signal(SIGXFSZ, SIG_IGN);
    /*
     * With a spool, librdkafka retries a record until Kafka takes it (its
     * default gives up after 5 minutes): one that timed out would stay in
     * the spool unsent until the next start. The queue and the budget bound
     * what waits; a stop leaves the rest to the next start's replay.
     */
    if (gw.spooler && !config_props_has(&cfg.kafka_props, "message.timeout.ms") &&
        !config_props_has(&cfg.kafka_props, "delivery.timeout.ms") &&
        config_props_set(&cfg.kafka_props, "message.timeout.ms", "0") != 0) {
        LOG_ERROR("gateway", "out of memory");
        goto out;
    }

    size_t record_max =
        producer_max_message_bytes(gw.lim.max_event_bytes, gw.lim.max_extensions, cfg.gateway_id);
    if ((prod = producer_new(gw.q, &gw.budget, cfg.kafka_bootstrap, cfg.kafka_topic, &cfg.kafka_props,
                             (int)cfg.producer_threads, record_max, errbuf, sizeof(errbuf))) == NULL) {
        fprintf(stderr, "gateway: %s\n", errbuf);
        status = 2;
        goto out;
    }
    producer_on_too_large(prod, count_too_large, &gw);
    if (gw.spooler && gw_spooler_start(gw.spooler, prod, gw.q, errbuf, sizeof(errbuf)) != 0) {
        fprintf(stderr, "gateway: %s\n", errbuf);
        goto out;
    }
    if (producer_message_max_bytes(prod) < record_max)
        LOG_WARN(
            "kafka",
            "--kafka.message.max.bytes=%zu is less than the largest record --max-event-bytes=%zu can make "
            "(%zu): larger events are refused with too_large (413)",
            producer_message_max_bytes(prod), gw.lim.max_event_bytes, record_max);
    /*
     * Readiness follows Kafka from here on: asked once now (a second at
     * most, so /readyz and Health/Check are right from the first request),
     * then once a second by a thread, so no probe ever waits on the network.
     */
    gst.gw = &gw;
    gst.prod = prod;
    gst.record_max = record_max;
    gateway_status_watch(&gst, 1000);
    /* The front ends, each started whole or not at all; the stop goes through the same list. */
    gw_http_front *http = gw_http_front_start(&gw, errbuf, sizeof(errbuf));
    if (http == NULL) {
        fprintf(stderr, "gateway: --http-addr %s\n", errbuf);
        goto out;
    }
    fronts[n_fronts++] = (gw_front){&gw_http_front_ops, http};
    udp_front *udp = udp_front_start(&gw, errbuf, sizeof(errbuf));
    if (udp == NULL) {
        fprintf(stderr, "gateway: --udp-addr %s\n", errbuf);
        goto out;
    }
    fronts[n_fronts++] = (gw_front){&udp_front_ops, udp};
    admin_handlers ah = {.thread_name = "gw-admin",
                         .not_ready = gateway_status_not_ready,
                         .metrics = gateway_status_metrics,
                         .ctx = &gst};
    if ((admin = admin_start(cfg.admin_addr, &ah, errbuf, sizeof(errbuf))) == NULL) {
        fprintf(stderr, "gateway: --admin-addr %s\n", errbuf);
        goto out;
    }
    LOG_INFO("gateway", "udp=%s udp_threads=%lld admin=%s", cfg.udp_addr, (long long)cfg.udp_threads,
             cfg.admin_addr);
    /*
     * As HTTP and UDP do, a port in use is an error. Given a wildcard, the
     * gRPC core itself binds [::] and, when that fails for any reason,
     * 0.0.0.0 (add_wildcard_addrs_to_server): a port another process holds
     * on [::] alone would leave it listening on IPv4 only, saying nothing.
     */
    int probe = net_bind(cfg.grpc_addr, SOCK_STREAM, 0, errbuf, sizeof(errbuf));
    if (probe < 0) {
        fprintf(stderr, "gateway: --grpc-addr %s\n", errbuf);
        goto out;
    }
    close(probe);
    gw_grpc_front *grpc =
        gw_grpc_front_start(&gw, cfg.grpc_addr, (int)cfg.grpc_threads, errbuf, sizeof(errbuf));
    if (grpc == NULL) {
        fprintf(stderr, "gateway: --grpc-addr %s\n", errbuf);
        goto out;
    }
    fronts[n_fronts++] = (gw_front){&gw_grpc_front_ops, grpc};
    LOG_INFO("gateway", "grpc=%s grpc_threads=%lld", cfg.grpc_addr, (long long)cfg.grpc_threads);
    /* What SIGHUP and --reload-interval read again: each item loads whole or changes nothing. */
    if ((reloader = gw_reloader_new(&gw.metrics)) == NULL) {
        LOG_ERROR("gateway", "cannot set up reloads: out of memory");
        goto out;
    }
    if (gw.tls) {
        const char *files[4];
        gw_tls_files(gw.tls, files);
        if (gw_reloader_add(reloader, "TLS certificates", files, gw_tls_reload_load, gw_tls_reload_swap,
                            gw.tls) != 0) {
            LOG_ERROR("gateway", "cannot set up reloads: out of memory");
            goto out;
        }
    }
    if (cfg.auth_file[0]) {
        const char *files[] = {cfg.auth_file, NULL};
        if (gw_reloader_add(reloader, "auth file", files, auth_reload_load, auth_reload_swap, &gw) != 0) {
            LOG_ERROR("gateway", "cannot set up reloads: out of memory");
            goto out;
        }
    }
    if (gw_reloader_start(reloader, cfg.reload_interval_ms, errbuf, sizeof(errbuf)) != 0) {
        fprintf(stderr, "gateway: --reload-interval: %s\n", errbuf);
        goto out;
    }
    LOG_INFO(
        "gateway",
        "started id=%s http=%s http_threads=%lld producer_threads=%lld kafka=%s topic=%s queue_capacity=%lld "
        "queue_high_water=%lld",
        cfg.gateway_id, cfg.http_addr, (long long)cfg.http_threads, (long long)cfg.producer_threads,
        cfg.kafka_bootstrap, cfg.kafka_topic, (long long)cfg.queue_capacity, (long long)cfg.queue_high_water);

    int sig;
    while ((sig = app_wait_signal_or_hup()) == SIGHUP) {
        LOG_INFO("gateway", "reloading signal=SIGHUP");
        gw_reloader_reload_all(reloader);
    }
    long long deadline = mono_ms() + cfg.shutdown_timeout_ms;
    LOG_INFO("gateway", "stopping signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");

    /* 1. Refuse new work, 2. let waiting requests get their answers, 3. drain and flush. */
    atomic_store(&gw.stopping, 1);
    for (size_t i = 0; i < n_fronts; i++)
        fronts[i].ops->stop_accepting(fronts[i].self);
    if ((gw.spooler ? wait_idle_spooled(&gw, fronts, n_fronts, deadline)
                    : gw_fronts_wait_idle(&gw, fronts, n_fronts, deadline)) > 0)
        answer_the_rest(&gw, fronts, n_fronts);
    queue_close(gw.q);
    gw_spooler_stop_replay(gw.spooler);
    long long left_ms = deadline - mono_ms();
    /*
     * Kafka not reachable, and every record queued or in librdkafka's buffer
     * durable in the spool (appended before it was queued, or replayed from
     * it): nothing is gained by waiting. What is in memory is dropped
     * unacked (purged: its reports ack nothing) and the next start replays
     * it. A record not durable yet is waited for, never dropped: when the
     * spool does not settle in time, the drain below as without a spool.
     */
    if (gw.spooler && atomic_load(&gw.kafka_reachable) != 1 &&
        gw_spooler_settle(gw.spooler, left_ms < SETTLE_MS ? (left_ms > 0 ? (int)left_ms : 0) : SETTLE_MS)) {
        int undelivered = producer_stop(prod, 0);
        LOG_WARN(
            "spool",
            "Kafka not reachable: stopping without waiting for it; %d records in memory left to the spool, "
            "which holds %" PRIu64 " unacknowledged for the next start to send",
            undelivered, gw_spooler_records(gw.spooler));
    } else {
        int undelivered = producer_stop(prod, left_ms > 0 ? (int)left_ms : 0);
        if (undelivered)
            LOG_WARN("kafka", "%d messages not delivered by the shutdown timeout", undelivered);
    }
    status = 0;

out:
    gw_reloader_free(reloader);
    gateway_status_unwatch(&gst);
    admin_stop(admin);
    if (gw.q)
        queue_close(gw.q);
    gw_spooler_stop_replay(gw.spooler);
    /* Threads stopped, what still waits aborted; then the last delivery reports come, and all is freed. */
    for (size_t i = 0; i < n_fronts; i++) {
        fronts[i].ops->stop_accepting(fronts[i].self);
        fronts[i].ops->close(fronts[i].self);
    }
    if (prod) {
        producer_stop(prod, 0);
        producer_free(prod);
    }
    /* After the producer's last reports (they ack), before the inboxes the persisted waits post to go. */
    gw_spooler_free(gw.spooler);
    gw.spooler = NULL;
    for (size_t i = 0; i < n_fronts; i++)
        fronts[i].ops->free(fronts[i].self);
    queue_free(gw.q);
    if (gw_ready)
        gateway_destroy(&gw);
    if (status == 0 && gw_ready)
        LOG_INFO("gateway", "stopped"); /* not after --help */
    gw_tls_free(gw.tls);
    gw_auth_release(auth);
    config_free(&gateway_config_program, &cfg);
    return status;
}
