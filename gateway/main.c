/*
 * The gateway: settings, the shared queue, the Kafka producer, and the HTTP
 * I/O threads, each with its own event loop and SO_REUSEPORT socket so both
 * cores take connections. Stops on SIGTERM/SIGINT: refuse new requests,
 * finish those in flight, drain the queue into Kafka, flush, exit 0.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "admin.h"
#include "app.h"
#include "gateway.h"
#include "grpc.h"
#include "http.h"
#include "udp.h"
#include "log.h"
#include "net.h"
#include "producer.h"
#include "queue.h"
#include "status.h"

typedef struct io_thread {
    pthread_t tid;
    int index;
    int started;
    struct event_base *base;
    gw_http_front *http;
} io_thread;

static void *io_main(void *arg)
{
    io_thread *t = arg;
    char name[16];

    /* Named, so top -H and perf tell the threads apart. */
    snprintf(name, sizeof(name), "gw-http-%d", t->index);
    pthread_setname_np(pthread_self(), name);
    event_base_loop(t->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until no request waits for Kafka and no gRPC call is open, or the deadline. */
static void wait_in_flight(io_thread *io, int n, gw_grpc_front *grpc, long long deadline)
{
    for (;;) {
        size_t pending = 0, calls = gw_grpc_front_pending(grpc);
        for (int i = 0; i < n; i++)
            pending += io[i].http ? gw_http_front_pending(io[i].http) : 0;
        if ((pending == 0 && calls == 0) || mono_ms() >= deadline) {
            if (pending) {
                /* Answered, not cut off: 503, the events may still arrive. A moment for the answers to go. */
                LOG_WARN("gateway", "stopping with %zu requests still waiting for Kafka; answering them 503",
                         pending);
                for (int i = 0; i < n; i++)
                    if (io[i].http)
                        gw_http_front_stop_waiting(io[i].http);
                for (int t = 0; t < 25; t++) {
                    size_t left = 0;
                    for (int i = 0; i < n; i++)
                        left += io[i].http ? gw_http_front_pending(io[i].http) : 0;
                    if (left == 0)
                        break;
                    usleep(20000);
                }
                usleep(50000);
            }
            if (calls)
                LOG_WARN("gateway",
                         "stopping with %zu gRPC calls still open; those waiting for Kafka are answered "
                         "UNAVAILABLE, the others cancelled",
                         calls);
            return;
        }
        usleep(20000);
    }
}

int main(int argc, char **argv)
{
    gateway_config cfg;
    gateway gw;
    io_thread *io = NULL;
    producer *prod = NULL;
    udp_front *udp = NULL;
    admin_server *admin = NULL;
    gateway_status gst = {0};
    gw_grpc_front *grpc = NULL;
    char errbuf[512], host[256];
    int status = 1, rc, n_io = 0;

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
    /* Every address is checked before anything starts, so a typo is one clear line and exit status 2. */
    const struct {
        const char *flag, *addr;
    } listeners[] = {
        {"--http-addr", cfg.http_addr},
        {"--udp-addr", cfg.udp_addr},
        {"--grpc-addr", cfg.grpc_addr},
        {"--admin-addr", cfg.admin_addr},
    };
    for (size_t i = 0; i < sizeof(listeners) / sizeof(listeners[0]); i++) {
        struct sockaddr_storage ss;
        socklen_t sslen;
        if (net_parse_addr(listeners[i].addr, &ss, &sslen, errbuf, sizeof(errbuf)) != 0) {
            fprintf(stderr, "gateway: %s %s\n", listeners[i].flag, errbuf);
            status = 2;
            goto out;
        }
    }
    if (cfg.gateway_id[0] == '\0') {
        app_hostname(host, sizeof(host));
        free(cfg.gateway_id);
        if ((cfg.gateway_id = strdup(host)) == NULL)
            goto out;
    }

    gw.cfg = &cfg;
    ing_event_limits_default(&gw.lim);
    gw.lim.max_event_bytes = cfg.max_event_bytes;
    gw.lim.max_request_bytes = cfg.max_request_bytes;
    gw.lim.max_batch_events = (size_t)cfg.max_batch_events;
    atomic_init(&gw.stopping, 0);
    if ((gw.q = queue_new((size_t)cfg.queue_capacity, (size_t)cfg.queue_high_water)) == NULL) {
        LOG_ERROR("gateway", "cannot create the queue");
        goto out;
    }

    if ((prod = producer_new(gw.q, cfg.kafka_bootstrap, cfg.kafka_topic, &cfg.kafka_props,
                             (int)cfg.producer_threads, errbuf, sizeof(errbuf))) == NULL) {
        fprintf(stderr, "gateway: %s\n", errbuf);
        status = 2;
        goto out;
    }
    /*
     * Readiness follows Kafka from here on: asked once now (a second at
     * most, so /readyz and Health/Check are right from the first request),
     * then once a second by a thread, so no probe ever waits on the network.
     */
    gst.gw = &gw;
    gst.prod = prod;
    gateway_status_watch(&gst, 1000);
    /* Loops are woken from the delivery report thread: libevent must know about threads. */
    evthread_use_pthreads();
    if ((io = calloc((size_t)cfg.http_threads, sizeof(*io))) == NULL)
        goto out;
    /*
     * SO_REUSEPORT would also let this process share a port that another
     * gateway already serves, silently splitting its traffic: bind once
     * without it first, so a port in use is an error at start.
     */
    int probe = net_bind(cfg.http_addr, SOCK_STREAM, 0, errbuf, sizeof(errbuf));
    if (probe < 0) {
        fprintf(stderr, "gateway: --http-addr %s\n", errbuf);
        goto out;
    }
    close(probe);
    for (; n_io < cfg.http_threads; n_io++) {
        int fd = net_bind(cfg.http_addr, SOCK_STREAM, 1, errbuf, sizeof(errbuf));
        if (fd < 0) {
            fprintf(stderr, "gateway: --http-addr %s\n", errbuf);
            goto out;
        }
        if ((io[n_io].base = event_base_new()) == NULL ||
            (io[n_io].http = gw_http_front_new(io[n_io].base, fd, &gw)) == NULL) {
            LOG_ERROR("gateway", "cannot start HTTP I/O thread %d", n_io);
            n_io++;
            goto out;
        }
    }

    for (int i = 0; i < n_io; i++) {
        io[i].index = i;
        if (pthread_create(&io[i].tid, NULL, io_main, &io[i]) != 0) {
            LOG_ERROR("gateway", "cannot start HTTP I/O thread %d", i);
            goto out;
        }
        io[i].started = 1;
    }

    if ((udp = udp_front_start(&gw, errbuf, sizeof(errbuf))) == NULL) {
        fprintf(stderr, "gateway: --udp-addr %s\n", errbuf);
        goto out;
    }
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
    if ((grpc = gw_grpc_front_start(&gw, cfg.grpc_addr, (int)cfg.grpc_threads, errbuf, sizeof(errbuf))) ==
        NULL) {
        fprintf(stderr, "gateway: --grpc-addr %s\n", errbuf);
        goto out;
    }
    LOG_INFO("gateway", "grpc=%s grpc_threads=%lld", cfg.grpc_addr, (long long)cfg.grpc_threads);
    LOG_INFO(
        "gateway",
        "started id=%s http=%s http_threads=%lld producer_threads=%lld kafka=%s topic=%s queue_capacity=%lld "
        "queue_high_water=%lld",
        cfg.gateway_id, cfg.http_addr, (long long)cfg.http_threads, (long long)cfg.producer_threads,
        cfg.kafka_bootstrap, cfg.kafka_topic, (long long)cfg.queue_capacity, (long long)cfg.queue_high_water);

    int sig = app_wait_signal();
    long long deadline = mono_ms() + cfg.shutdown_timeout_ms;
    LOG_INFO("gateway", "stopping signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");

    /* 1. Refuse new work, 2. let waiting requests get their answers, 3. drain and flush. */
    atomic_store(&gw.stopping, 1);
    for (int i = 0; i < n_io; i++)
        gw_http_front_stop_accepting(io[i].http);
    udp_front_stop(udp);
    udp = NULL;
    gw_grpc_front_stop_accepting(grpc);
    wait_in_flight(io, n_io, grpc, deadline);
    queue_close(gw.q);
    long long left_ms = deadline - mono_ms();
    int undelivered = producer_stop(prod, left_ms > 0 ? (int)left_ms : 0);
    if (undelivered)
        LOG_WARN("kafka", "%d messages not delivered by the shutdown timeout", undelivered);
    status = 0;

out:
    gateway_status_unwatch(&gst);
    udp_front_stop(udp);
    admin_stop(admin);
    if (gw.q)
        queue_close(gw.q);
    for (int i = 0; i < n_io; i++)
        if (io[i].started) {
            event_base_loopexit(io[i].base, NULL);
            pthread_join(io[i].tid, NULL);
        }
    /* Loops stopped: abort what still waits, then let the last delivery reports come and free it all. */
    for (int i = 0; i < n_io; i++)
        gw_http_front_close(io[i].http);
    gw_grpc_front_close(grpc);
    if (prod) {
        producer_stop(prod, 0);
        producer_free(prod);
    }
    gw_grpc_front_free(grpc);
    for (int i = 0; i < n_io; i++) {
        gw_http_front_free(io[i].http);
        if (io[i].base)
            event_base_free(io[i].base);
    }
    free(io);
    queue_free(gw.q);
    if (status == 0)
        LOG_INFO("gateway", "stopped");
    config_free(&gateway_config_program, &cfg);
    return status;
}
