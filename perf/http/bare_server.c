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
 * Usage: http_bare_server [--addr 127.0.0.1:PORT] [--threads N]
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
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>

#define MAX_THREADS 64

/* The gateway answers one event with its id; the same size here. */
static const char reply[] = "{\"accepted\":1,\"ids\":[\"01936f3e-8a4b-7c2d-9e1f-0a2b3c4d5e6f\"]}";

typedef struct worker {
    pthread_t tid;
    struct event_base *base;
    struct evhttp *http;
    atomic_ulong answered;
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
    if (pthread_create(&w->tid, NULL, worker_main, w) != 0)
        return -EAGAIN;
    return 0;
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:18090";
    int nthreads = 2, started = 0, status = 1, sig;
    worker *workers = NULL;
    struct sockaddr_in sin;
    unsigned long total = 0;
    sigset_t set;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc)
            addr = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            nthreads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--addr 127.0.0.1:PORT] [--threads N]\n", argv[0]);
            return 2;
        }
    }
    if (nthreads < 1 || nthreads > MAX_THREADS || parse_addr(addr, &sin) != 0) {
        fprintf(stderr, "bare_server: bad --addr or --threads (1..%d)\n", MAX_THREADS);
        return 2;
    }

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
        int rc = worker_start(&workers[started], &sin);
        if (rc != 0) {
            fprintf(stderr, "bare_server: cannot listen on %s: %s\n", addr, strerror(-rc));
            goto fail;
        }
    }
    fprintf(stderr, "bare_server: listening on %s with %d threads\n", addr, nthreads);

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
        if (w->http)
            evhttp_free(w->http);
        if (w->base)
            event_base_free(w->base);
    }
    free(workers);
    if (status == 0)
        fprintf(stderr, "bare_server: answered %lu requests\n", total);
    return status;
}
