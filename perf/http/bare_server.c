/*
 * The HTTP baseline of perf/http: a libevent evhttp server that answers every
 * POST with 202 and a small JSON body shaped like the gateway's, and does
 * nothing else. What wrk gets from it is what this machine's loopback, kernel
 * and libevent allow; the gateway's figures are read against it.
 *
 * Like the gateway, it runs N I/O threads, each with its own event_base and
 * evhttp on a listener of its own bound with SO_REUSEPORT, so the kernel
 * spreads connections over the threads and no state is shared.
 *
 * With --tls-cert and --tls-key it speaks TLS instead (perf/http/run --tls):
 * libevent's OpenSSL bufferevents under the same evhttp, as the gateway's
 * HTTP port does, and nothing more: the handshake, then the 202. Its
 * context is OpenSSL's defaults with the gateway's protocol floor (TLS 1.2)
 * and TLS 1.2 cipher list, so both negotiate the same suite and key exchange.
 *
 * Usage: http_bare_server [--addr 127.0.0.1:PORT] [--threads N] [--tls-cert PEM --tls-key PEM]
 * Stops on SIGTERM or SIGINT and prints the requests it answered to stderr.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_THREADS 64

/* The gateway answers one event with its id; the same size here. */
static const char reply[] = "{\"accepted\":1,\"ids\":[\"01936f3e-8a4b-7c2d-9e1f-0a2b3c4d5e6f\"]}";

typedef struct worker {
    pthread_t tid;
    SSL_CTX *tls; /* NULL: plaintext */
    struct event_base *base;
    struct evhttp *http;
    atomic_ulong answered;
    atomic_ulong resumed; /* TLS: answers on a resumed session */
} worker;

static void on_request(struct evhttp_request *req, void *arg)
{
    worker *w = arg;
    struct evbuffer *out;

    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        evhttp_send_error(req, 405, NULL);
        return;
    }
    out = evhttp_request_get_output_buffer(req);
    evbuffer_add_reference(out, reply, sizeof(reply) - 1, NULL, NULL);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, 202, "Accepted", NULL);
    atomic_fetch_add_explicit(&w->answered, 1, memory_order_relaxed);
    if (w->tls) {
        SSL *ssl = bufferevent_openssl_get_ssl(
            evhttp_connection_get_bufferevent(evhttp_request_get_connection(req)));
        if (ssl && SSL_session_reused(ssl))
            atomic_fetch_add_explicit(&w->resumed, 1, memory_order_relaxed);
    }
}

/* evhttp's connections under TLS: a server-side OpenSSL bufferevent, the fd set by evhttp. */
static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
    worker *w = arg;
    SSL *ssl = SSL_new(w->tls);
    struct bufferevent *bev;

    if (ssl == NULL)
        return NULL;
    bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL)
        SSL_free(ssl);
    else
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

static SSL_CTX *tls_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        char why[256];
        ERR_error_string_n(ERR_peek_last_error(), why, sizeof(why));
        fprintf(stderr, "bare_server: TLS with %s and %s: %s\n", cert, key, why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static void *worker_main(void *arg)
{
    worker *w = arg;

    event_base_dispatch(w->base);
    return NULL;
}

static int parse_addr(const char *s, struct sockaddr_in *sin)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    long port;

    if (!colon || (size_t)(colon - s) >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    port = strtol(colon + 1, NULL, 10);
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((unsigned short)port);
    if (port <= 0 || port > 65535 || inet_pton(AF_INET, host, &sin->sin_addr) != 1)
        return -EINVAL;
    return 0;
}

static int worker_start(worker *w, const struct sockaddr_in *sin)
{
    struct evconnlistener *lev;

    if ((w->base = event_base_new()) == NULL || (w->http = evhttp_new(w->base)) == NULL)
        return -ENOMEM;
    /* The listener is owned by the evhttp (freed by evhttp_free). */
    lev = evconnlistener_new_bind(w->base, NULL, NULL,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT, 1024,
                                  (const struct sockaddr *)sin, sizeof(*sin));
    if (lev == NULL || evhttp_bind_listener(w->http, lev) == NULL) {
        if (lev)
            evconnlistener_free(lev);
        return errno ? -errno : -EIO;
    }
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_POST | EVHTTP_REQ_GET | EVHTTP_REQ_PUT);
    evhttp_set_gencb(w->http, on_request, w);
    if (w->tls) {
        /*
         * OpenSSL writes evhttp's headers and body as two records: without
         * TCP_NODELAY (as the gateway sets) the second waits for the
         * client's delayed ACK, 40 ms. Accepted sockets inherit it.
         */
        int one = 1;
        setsockopt(evconnlistener_get_fd(lev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        evhttp_set_bevcb(w->http, tls_bev, w);
    }
    if (pthread_create(&w->tid, NULL, worker_main, w) != 0)
        return -EAGAIN;
    return 0;
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:18090", *cert = NULL, *key = NULL;
    SSL_CTX *tls = NULL;
    int nthreads = 2, started = 0, status = 1, sig;
    worker *workers = NULL;
    struct sockaddr_in sin;
    unsigned long total = 0, resumed = 0;
    sigset_t set;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc)
            addr = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            nthreads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc)
            cert = argv[++i];
        else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc)
            key = argv[++i];
        else {
            fprintf(stderr,
                    "usage: %s [--addr 127.0.0.1:PORT] [--threads N] [--tls-cert PEM --tls-key PEM]\n",
                    argv[0]);
            return 2;
        }
    }
    if (nthreads < 1 || nthreads > MAX_THREADS || parse_addr(addr, &sin) != 0) {
        fprintf(stderr, "bare_server: bad --addr or --threads (1..%d)\n", MAX_THREADS);
        return 2;
    }
    if ((cert == NULL) != (key == NULL)) {
        fprintf(stderr, "bare_server: --tls-cert and --tls-key go together\n");
        return 2;
    }
    if (cert && (tls = tls_ctx(cert, key)) == NULL)
        return 1;

    /* Signals are taken by sigwait() below only, never by a loop thread. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* event_base_loopbreak() from the main thread needs libevent's locks. */
    if (evthread_use_pthreads() != 0 || (workers = calloc((size_t)nthreads, sizeof(*workers))) == NULL)
        goto fail;

    for (; started < nthreads; started++) {
        int rc;
        workers[started].tls = tls;
        rc = worker_start(&workers[started], &sin);
        if (rc != 0) {
            fprintf(stderr, "bare_server: cannot listen on %s: %s\n", addr, strerror(-rc));
            goto fail;
        }
    }
    fprintf(stderr, "bare_server: listening on %s with %d threads%s\n", addr, nthreads, tls ? ", TLS" : "");

    sigdelset(&set, SIGPIPE);
    sigwait(&set, &sig);
    status = 0;

fail:
    for (int i = 0; workers && i < nthreads; i++) {
        worker *w = &workers[i];
        if (i < started && w->base) {
            event_base_loopbreak(w->base);
            pthread_join(w->tid, NULL);
        }
        total += atomic_load(&w->answered);
        resumed += atomic_load(&w->resumed);
        if (w->http)
            evhttp_free(w->http);
        if (w->base)
            event_base_free(w->base);
    }
    free(workers);
    SSL_CTX_free(tls);
    if (status == 0)
        fprintf(stderr, "bare_server: answered %lu requests%s", total, tls ? "" : "\n");
    if (status == 0 && tls)
        fprintf(stderr, ", %lu of them on resumed TLS sessions\n", resumed);
    return status;
}
