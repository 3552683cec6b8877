/*
 * gRPC: Publish, PublishStream and Health/Check on the C core: the server,
 * its completion-queue threads, the calls it asks the core for, the stop.
 * A call's state machine is grpc_call.c, the timer thread grpc_timer.c.
 */
#include "grpc_int.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <grpc/credentials.h>

#include "front.h"
#include "log.h"
#include "mono.h"
#include "tls.h"

const char *const gw_grpc_method_paths[N_METHODS] = {
    "/ingest.v1.Ingest/Publish", "/ingest.v1.Ingest/PublishStream", "/grpc.health.v1.Health/Check", NULL};

/* Ask the core for the next call of method m. */
void gw_grpc_arm(gw_grpc_front *g, method m)
{
    gcall *c = gw_grpc_call_new(g, m);
    grpc_call_error e;

    if (c == NULL) {
        LOG_ERROR("grpc", "out of memory: cannot take more calls");
        return;
    }
    gw_grpc_front_lock(g);
    g->armed++;
    gw_grpc_front_unlock(g);
    if (m == M_OTHER)
        e = grpc_server_request_call(g->server, &c->call, &c->details, &c->md, g->cq, g->cq, &c->o_new);
    else
        e = grpc_server_request_registered_call(g->server, g->reg[m], &c->call, &c->deadline, &c->md, NULL,
                                                g->cq, g->cq, &c->o_new);
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("grpc", "cannot request a call: %s", grpc_call_error_to_string(e));
        gw_grpc_front_lock(g);
        g->armed--;
        pthread_cond_broadcast(&g->change);
        gw_grpc_front_unlock(g);
        gw_grpc_call_unref(c);
    }
}

static void *cq_main(void *arg)
{
    cq_thread *t = arg;
    gw_grpc_front *g = t->g;
    char name[16];

    snprintf(name, sizeof(name), "gw-grpc-%d", t->index);
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        op *o = ev.tag;
        if (o->kind == OP_SHUTDOWN) {
            gw_grpc_front_lock(g);
            g->shutdown_done = 1;
            pthread_cond_broadcast(&g->change);
            gw_grpc_front_unlock(g);
        } else if (o->kind == OP_NEW) {
            gw_grpc_on_new(o->call, ev.success);
        } else {
            gw_grpc_on_op(o, ev.success);
        }
    }
    return NULL;
}

/* --- the front ------------------------------------------------------------------------------------- */

/*
 * The core's own log lines. Since 1.65 it writes them with abseil's logging,
 * which a C program cannot hook (gpr_set_log_function is gone), in abseil's
 * format on stderr. So it is silent (GRPC_VERBOSITY=NONE) unless the
 * gateway logs at debug, or the operator set GRPC_VERBOSITY: one format on
 * stderr for log collectors, and what matters to an operator (a port in use,
 * a failed call) the gateway reports itself. Read by grpc_init(), once; the
 * threads already running (librdkafka's, libevent's) never read the
 * environment, so the setenv races with no getenv.
 */
static void core_log_init(void)
{
    setenv("GRPC_VERBOSITY", log_current_level >= LOG_LEVEL_DEBUG ? "ERROR" : "NONE", 0);
}

/*
 * The core takes no cipher list per server, only this process-wide one, read
 * by grpc_init() as GRPC_VERBOSITY is. It goes to SSL_CTX_set_cipher_list(),
 * as --tls-ciphers does on the HTTP port (which has checked it already), so
 * one setting governs both ports: TLS 1.2's list, TLS 1.3 OpenSSL's suites.
 * The gateway makes no outgoing gRPC connection it could also affect.
 */
static void core_tls_init(const gateway_config *cfg)
{
    if (cfg->tls_cert[0])
        setenv("GRPC_SSL_CIPHER_SUITES", cfg->tls_ciphers, 1);
}

/*
 * The port's credentials: plaintext, or TLS from --tls-cert's files, which
 * tls.c loaded and checked (gw->tls). The core fetches the certificate
 * config from tls.c before each new connection's handshake, so a reload's
 * new certificate (reload.h) is what the next client sees, while open
 * connections keep theirs. The core's OpenSSL context is its own: TLS 1.2
 * and 1.3 (its defaults, not settable through this API), the TLS 1.2
 * ciphers of GRPC_SSL_CIPHER_SUITES (set from --tls-ciphers before
 * grpc_init), ALPN h2.
 */
static grpc_server_credentials *port_credentials(const gateway *gw, char *err, size_t errlen)
{
    const gateway_config *cfg = gw->cfg;
    grpc_ssl_client_certificate_request_type req;
    grpc_server_credentials *creds = NULL;

    if (gw->tls == NULL)
        return grpc_insecure_server_credentials_create();
    /* optional: a certificate sent must verify, as on the HTTP port; none sent is fine. */
    if (strcmp(cfg->tls_client_auth, "require") == 0)
        req = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    else if (strcmp(cfg->tls_client_auth, "optional") == 0)
        req = GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
    else
        req = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
    grpc_ssl_server_credentials_options *opts =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(req, gw_tls_grpc_fetch, gw->tls);
    if (opts)
        creds = grpc_ssl_server_credentials_create_with_options(opts);
    if (creds == NULL)
        snprintf(err, errlen, "--tls-cert %s: the gRPC core refuses the certificate or key", cfg->tls_cert);
    return creds;
}

static grpc_arg int_arg(const char *key, long long v)
{
    grpc_arg a = {.type = GRPC_ARG_INTEGER, .key = (char *)key};

    a.value.integer = v > INT32_MAX ? INT32_MAX : (int)v;
    return a;
}

/*
 * What one client may make the core hold or do, bounded here because the
 * core's defaults are for trusted peers: unlimited streams and connections,
 * 8 KiB of metadata but no hard cap, an 8 MiB window per stream grown by BDP
 * probes. The numbers are in docs/operating.md.
 */
size_t gw_grpc_server_args(const gateway *gw, grpc_resource_quota *quota, grpc_arg *args)
{
    const gateway_config *cfg = gw->cfg;
    size_t n = 0;

    /* The request limit is the message limit; and no SO_REUSEPORT, so that a port in use is an error. */
    args[n++] = int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (long long)gw->lim.max_request_bytes);
    args[n++] = int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0);
    /*
     * Metadata: our clients send a path, a content type and perhaps a token.
     * Past the soft limit a request is refused at random, past the hard one
     * always, and the header block is not buffered past it (CVE-2023-33953).
     */
    args[n++] = int_arg(GRPC_ARG_MAX_METADATA_SIZE, GW_GRPC_MAX_METADATA_SOFT);
    args[n++] = int_arg(GRPC_ARG_ABSOLUTE_MAX_METADATA_SIZE, GW_GRPC_MAX_METADATA_HARD);
    /* The core's buffers, windows and per-call arenas come out of the budget's inbound share. */
    args[n].type = GRPC_ARG_POINTER;
    args[n].key = GRPC_ARG_RESOURCE_QUOTA;
    args[n].value.pointer.p = quota;
    args[n++].value.pointer.vtable = grpc_resource_quota_arg_vtable();
    args[n++] = int_arg(GRPC_ARG_MAX_CONCURRENT_STREAMS, GW_GRPC_MAX_STREAMS);
    args[n++] = int_arg(GRPC_ARG_MAX_ALLOWED_INCOMING_CONNECTIONS, cfg->max_connections);
    /*
     * No BDP probing, and a stream window of 64 KiB: a stream that stalls
     * mid-message holds what its window let in, not the 8 MiB the probes
     * would grow it to. The core still opens the window to the rest of a
     * message it has been asked to read, so one large message costs one
     * round trip per window, not one per 64 KiB.
     */
    args[n++] = int_arg(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args[n++] = int_arg(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, GW_GRPC_STREAM_WINDOW);
    /*
     * A connection's read buffer grows with the rate its peer sends at (to 4 MiB and more), and stays
     * grown: a header block streamed at 500 MB/s left the gateway 80 MiB larger. Reads past this are
     * simply more reads.
     */
    args[n++] = int_arg(GRPC_ARG_TCP_MAX_READ_BUFFER_SIZE, GW_GRPC_READ_BUFFER);
    /*
     * Keepalive: a client may ping at most every 10 s without data (twice
     * too often and the connection is closed: ENHANCE_YOUR_CALM), and the
     * gateway pings an idle peer every 2 min, so one that vanished without
     * a FIN frees its connection within 20 s of the next ping.
     */
    args[n++] = int_arg(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
    args[n++] = int_arg(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
    args[n++] = int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, 120000);
    args[n++] = int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
    args[n++] = int_arg(GRPC_ARG_MAX_CONNECTION_IDLE_MS, cfg->grpc_max_connection_idle_ms);
    /*
     * A connection that sends nothing, or stops half way through a TLS
     * handshake or the preface, holds a descriptor and the core's buffers:
     * 120 s by the core's default (60 s measured for a plaintext one).
     */
    args[n++] = int_arg(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, cfg->grpc_handshake_timeout_ms);
    if (cfg->grpc_max_connection_age_ms > 0) {
        args[n++] = int_arg(GRPC_ARG_MAX_CONNECTION_AGE_MS, cfg->grpc_max_connection_age_ms);
        /* A stream open at the GOAWAY has this long to end; then it is cancelled and its client retries. */
        args[n++] = int_arg(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, GW_GRPC_AGE_GRACE_MS);
    }
    assert(n <= GW_GRPC_SERVER_ARGS);
    return n;
}

gw_grpc_front *gw_grpc_front_start(gateway *gw, const char *addr, int threads, char *err, size_t errlen)
{
    gw_grpc_front *g = calloc(1, sizeof(*g));
    grpc_arg args[GW_GRPC_SERVER_ARGS];
    grpc_channel_args chargs = {0, args};

    if (g == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    core_log_init();
    core_tls_init(gw->cfg);
    grpc_init();
    g->gw = gw;
    g->io = &gw_grpc_core_io;
    pthread_mutex_init(&g->lock, NULL);
    mono_cond_init(&g->cond);
    mono_cond_init(&g->change);
    g->shutdown_op = (op){OP_SHUTDOWN, NULL};
    g->unary_read_cap = gw->budget.inbound / 4 / gw->lim.max_request_bytes;
    if (g->unary_read_cap < 1)
        g->unary_read_cap = 1;

    /* The server takes its own reference to the quota. */
    grpc_resource_quota *quota = grpc_resource_quota_create("gateway");
    grpc_resource_quota_resize(quota, gw->budget.inbound);
    chargs.num_args = gw_grpc_server_args(gw, quota, args);
    g->server = grpc_server_create(&chargs, NULL);
    grpc_resource_quota_unref(quota);
    g->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(g->server, g->cq, NULL);
    /* Every method's messages are read by the gateway, unary ones too (UNARY_READ_GRACE_MS says why). */
    for (int m = 0; m < M_OTHER; m++) {
        g->reg[m] =
            grpc_server_register_method(g->server, gw_grpc_method_paths[m], NULL, GRPC_SRM_PAYLOAD_NONE, 0);
        if (g->reg[m] == NULL) {
            snprintf(err, errlen, "cannot register %s", gw_grpc_method_paths[m]);
            goto fail;
        }
    }
    /* ":port" means every address, as for HTTP and UDP; the core's resolver wants a host: "[::]" is both
     * families. */
    char any[64];
    if (addr[0] == ':' && strlen(addr) < sizeof(any) - 4) {
        snprintf(any, sizeof(any), "[::]%s", addr);
        addr = any;
    }
    grpc_server_credentials *creds = port_credentials(gw, err, errlen);
    if (creds == NULL)
        goto fail;
    int port = grpc_server_add_http2_port(g->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        snprintf(err, errlen, "%s: cannot listen (the address is in use or not valid)", addr);
        goto fail;
    }
    grpc_server_start(g->server);
    if (gw_grpc_probe_start(g, addr, port, err, errlen) != 0)
        goto fail;
    for (int m = 0; m < N_METHODS; m++)
        for (int i = 0; i < (m == M_PUBLISH || m == M_STREAM ? ARMED_PER_METHOD : 1); i++)
            gw_grpc_arm(g, (method)m);

    if (pthread_create(&g->timer, NULL, gw_grpc_timer_main, g) != 0) {
        snprintf(err, errlen, "cannot start the gRPC timer thread");
        goto fail;
    }
    g->timer_started = 1;
    if ((g->threads = calloc((size_t)threads, sizeof(*g->threads))) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (; g->n_threads < threads; g->n_threads++) {
        cq_thread *t = &g->threads[g->n_threads];
        t->g = g;
        t->index = g->n_threads;
        if (pthread_create(&t->tid, NULL, cq_main, t) != 0) {
            snprintf(err, errlen, "cannot start gRPC thread %d", t->index);
            goto fail;
        }
        t->started = 1;
    }
    return g;

fail:
    gw_grpc_front_close(g);
    gw_grpc_front_free(g);
    return NULL;
}

/* Calls open now, each with a reference; *n of them. NULL when none (or no memory). */
static gcall **open_calls(gw_grpc_front *g, size_t *n)
{
    gcall **open = NULL;

    *n = 0;
    gw_grpc_front_lock(g);
    for (gcall *c = g->a_head; c; c = c->a_next)
        (*n)++;
    if (*n && (open = malloc(*n * sizeof(*open))) != NULL) {
        *n = 0;
        for (gcall *c = g->a_head; c; c = c->a_next) {
            gw_grpc_call_ref(c);
            open[(*n)++] = c;
        }
    }
    gw_grpc_front_unlock(g);
    if (open == NULL)
        *n = 0;
    return open;
}

/*
 * The stop's time is up: calls still waiting for Kafka are answered
 * UNAVAILABLE (their events may yet arrive; a retry with the same ids is
 * safe) rather than cut off.
 */
static void grpc_abort_waiting(void *self)
{
    gw_grpc_front *g = self;
    size_t n;
    gcall **open = open_calls(g, &n);

    for (size_t i = 0; i < n; i++) {
        gcall *c = open[i];
        gw_grpc_call_lock(c);
        for (gw_grpc_ack *a = c->acks.head; a; a = a->next)
            if (a->state == GW_GRPC_ACK_WAITING) {
                a->state = GW_GRPC_ACK_FAILED;
                ((gack *)a)->err = ACK_STOPPED;
            }
        gw_grpc_pump(c);
        gw_grpc_call_unlock(c);
        gw_grpc_call_unref(c);
    }
    free(open);
}

/* ... and get a moment to send it: until no call is live, or grace_ms. */
static void answer_waiting(gw_grpc_front *g, int grace_ms)
{
    struct timespec ts;

    grpc_abort_waiting(g);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += grace_ms / 1000;
    ts.tv_nsec += (long)(grace_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    gw_grpc_front_lock(g);
    while (g->live > 0)
        if (gw_grpc_front_timedwait(g, &g->change, &ts) != 0)
            break;
    gw_grpc_front_unlock(g);
}

void gw_grpc_front_stop_accepting(gw_grpc_front *g)
{
    gcall **open;
    size_t n;

    if (g == NULL || g->server == NULL || atomic_exchange(&g->shutting, 1))
        return;
    /* The listener is about to close on purpose: that is no stall to report. */
    gw_grpc_probe_stop(g);
    grpc_server_shutdown_and_notify(g->server, g->cq, &g->shutdown_op);
    /* Streams blocked in a read hear of the stop only if told: each sends what it owes, then its status. */
    open = open_calls(g, &n);
    for (size_t i = 0; i < n; i++) {
        gw_grpc_call_lock(open[i]);
        gw_grpc_pump(open[i]);
        gw_grpc_call_unlock(open[i]);
        gw_grpc_call_unref(open[i]);
    }
    free(open);
}

size_t gw_grpc_front_pending(gw_grpc_front *g)
{
    size_t n;

    if (g == NULL)
        return 0;
    gw_grpc_front_lock(g);
    n = g->live;
    gw_grpc_front_unlock(g);
    return n;
}

void gw_grpc_front_close(gw_grpc_front *g)
{
    if (g == NULL || g->closed)
        return;
    g->closed = 1;
    gw_grpc_probe_stop(g);
    if (g->server) {
        int threads_run = g->n_threads > 0;
        if (!atomic_load(&g->shutting)) {
            atomic_store(&g->shutting, 1);
            grpc_server_shutdown_and_notify(g->server, g->cq, &g->shutdown_op);
        }
        if (threads_run)
            answer_waiting(g, 500);
        grpc_server_cancel_all_calls(g->server);
        if (threads_run) {
            gw_grpc_front_lock(g);
            while (!g->shutdown_done || g->live > 0 || g->armed > 0)
                gw_grpc_front_timedwait(g, &g->change, NULL);
            gw_grpc_front_unlock(g);
        } else {
            /* Failed before any thread ran: drain the queue here. */
            for (;;) {
                grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
                if (ev.type != GRPC_OP_COMPLETE)
                    break;
                op *o = ev.tag;
                if (o->kind == OP_SHUTDOWN)
                    break;
                if (o->kind == OP_NEW)
                    gw_grpc_on_new(o->call, 0);
            }
        }
        grpc_completion_queue_shutdown(g->cq);
    }
    for (int i = 0; i < g->n_threads; i++)
        if (g->threads[i].started)
            pthread_join(g->threads[i].tid, NULL);
    if (g->server) {
        if (g->n_threads == 0)
            while (grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
                   GRPC_QUEUE_SHUTDOWN)
                ;
        grpc_server_destroy(g->server);
        grpc_completion_queue_destroy(g->cq);
        g->server = NULL;
        g->cq = NULL;
    }
    if (g->timer_started) {
        gw_grpc_front_lock(g);
        g->timer_stop = 1;
        pthread_cond_signal(&g->cond);
        gw_grpc_front_unlock(g);
        pthread_join(g->timer, NULL);
        g->timer_started = 0;
    }
}

void gw_grpc_front_free(gw_grpc_front *g)
{
    if (g == NULL)
        return;
    /* Acks still on the timer list: their waits have all come back, the list holds the last reference. */
    gw_grpc_front_lock(g);
    while (g->t_head) {
        gack *a = g->t_head;
        gw_grpc_timer_unlink_locked(g, a);
        gw_grpc_ack_unref(a);
    }
    gw_grpc_front_unlock(g);
    free(g->threads);
    pthread_cond_destroy(&g->cond);
    pthread_cond_destroy(&g->change);
    pthread_mutex_destroy(&g->lock);
    free(g);
    grpc_shutdown();
}

static void grpc_stop_accepting(void *self)
{
    gw_grpc_front_stop_accepting(self);
}

static size_t grpc_pending(void *self)
{
    return gw_grpc_front_pending(self);
}

static void grpc_close(void *self)
{
    gw_grpc_front_close(self);
}

static void grpc_free(void *self)
{
    gw_grpc_front_free(self);
}

const gw_front_ops gw_grpc_front_ops = {
    .name = "grpc",
    .stop_accepting = grpc_stop_accepting,
    .pending = grpc_pending,
    .abort_waiting = grpc_abort_waiting,
    .close = grpc_close,
    .free = grpc_free,
};
