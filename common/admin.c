#include "admin.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/thread.h>

#include "log.h"
#include "mono.h"
#include "net.h"

/*
 * Probes and scrapes are few and small: these bound what a client of the
 * admin port can make it hold (a 2 GiB body, or an endless header line, once
 * grew the process by 2.4 GB and kept this thread busy), and the connections
 * it can keep open.
 */
#define ADMIN_MAX_HEADERS     (8 * 1024)
#define ADMIN_MAX_BODY        1024
#define ADMIN_MAX_CONNECTIONS 64
#define ADMIN_TIMEOUT_S       5

/* A connection evhttp accepted; oldest first on the server's list. */
typedef struct admin_conn {
    struct admin_server *a;
    struct evhttp_connection *evcon;
    struct admin_conn *prev, *next;
} admin_conn;

/* A bufferevent new_bev() made, waiting for track() to find its connection. */
typedef struct new_conn {
    struct admin_server *a;
    struct bufferevent *bev;
} new_conn;

struct admin_server {
    struct event_base *base;
    struct evhttp *http;
    pthread_t tid;
    admin_handlers h;
    admin_conn *oldest, *newest;
    size_t n_conns;
    int spare_fd; /* for accept failing with EMFILE (net_accept_shed) */
    struct event *resume;
    long long accept_log_ms;
    unsigned long accept_errors;
};

static void reply(struct evhttp_request *req, int code, const char *ctype, struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    evhttp_send_reply(req, code,
                      code == 200   ? "OK"
                      : code == 404 ? "Not Found"
                      : code == 405 ? "Method Not Allowed"
                                    : "Service Unavailable",
                      body);
}

static void handle(struct evhttp_request *req, void *arg)
{
    admin_server *a = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    struct evbuffer *b = evbuffer_new();
    const char *why;

    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET &&
        evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
        evbuffer_add_printf(b, "only GET and HEAD are served here\n");
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply(req, 405, "text/plain; charset=utf-8", b);
    } else if (path && strcmp(path, "/healthz") == 0) {
        evbuffer_add_printf(b, "ok\n");
        reply(req, 200, "text/plain; charset=utf-8", b);
    } else if (path && strcmp(path, "/readyz") == 0) {
        if ((why = a->h.not_ready ? a->h.not_ready(a->h.ctx) : NULL) == NULL) {
            evbuffer_add_printf(b, "ready\n");
            reply(req, 200, "text/plain; charset=utf-8", b);
        } else {
            evbuffer_add_printf(b, "not ready: %s\n", why);
            reply(req, 503, "text/plain; charset=utf-8", b);
        }
    } else if (path && strcmp(path, "/metrics") == 0 && a->h.metrics) {
        a->h.metrics(a->h.ctx, b);
        reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", b);
    } else {
        evbuffer_add_printf(b, "not found: /healthz, /readyz and /metrics are served here\n");
        reply(req, 404, "text/plain; charset=utf-8", b);
    }
    evbuffer_free(b);
}

/*
 * The connection cap. evhttp (libevent 2.1) has none, and tells nothing of
 * the connections it accepts but through their bufferevent, whose callback
 * argument is the connection once evhttp has set it up: new_bev() makes
 * that bufferevent (holding a reference, so it outlives an early close),
 * track() finds the connection on the next turn of the loop. At the cap the
 * oldest connection is closed rather than the new one, so a fresh probe is
 * answered even while someone holds every slot.
 */
static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
    admin_conn *c = arg;
    admin_server *a = c->a;
    (void)evcon;

    if (c->prev)
        c->prev->next = c->next;
    else
        a->oldest = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        a->newest = c->prev;
    a->n_conns--;
    free(c);
}

static void track(evutil_socket_t fd, short what, void *arg)
{
    new_conn *n = arg;
    admin_server *a = n->a;
    void (*read_cb)(struct bufferevent *, void *) = NULL;
    void *evcon = NULL;
    admin_conn *c;
    (void)fd;
    (void)what;

    /* evhttp's callbacks gone: it closed the connection already (bufferevent_free clears them). */
    bufferevent_getcb(n->bev, &read_cb, NULL, NULL, &evcon);
    if (read_cb != NULL && evcon != NULL) {
        if (a->n_conns >= ADMIN_MAX_CONNECTIONS)
            evhttp_connection_free(a->oldest->evcon); /* conn_closed() unlinks it */
        if ((c = calloc(1, sizeof(*c))) == NULL) {
            evhttp_connection_free(evcon);
        } else {
            c->a = a;
            c->evcon = evcon;
            c->prev = a->newest;
            if (a->newest)
                a->newest->next = c;
            else
                a->oldest = c;
            a->newest = c;
            a->n_conns++;
            evhttp_connection_set_closecb(evcon, conn_closed, c);
        }
    }
    bufferevent_decref(n->bev);
    free(n);
}

static struct bufferevent *new_bev(struct event_base *base, void *arg)
{
    admin_server *a = arg;
    /* As evhttp makes its own: no close on free, evhttp closes the socket. */
    struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
    new_conn *n = calloc(1, sizeof(*n));
    struct timeval now = {0, 0};

    if (bev == NULL || n == NULL) {
        free(n);
        return bev; /* evhttp makes one itself when NULL; such a connection goes uncounted */
    }
    n->a = a;
    n->bev = bev;
    bufferevent_incref(bev);
    if (event_base_once(base, -1, EV_TIMEOUT, track, n, &now) != 0) {
        bufferevent_decref(bev);
        free(n);
    }
    return bev;
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evconnlistener_enable(arg);
}

/* The server of this admin thread: the listener's callback argument is evhttp's, not ours. */
static _Thread_local admin_server *this_admin;

/* evhttp's listener, out of descriptors: shed the connection (or rest), log once a second, never spin. */
static void accept_error(struct evconnlistener *l, void *arg)
{
    admin_server *a = this_admin;
    (void)arg;
    int err = EVUTIL_SOCKET_ERROR();
    long long now = mono_ms();

    a->accept_errors++;
    if (now - a->accept_log_ms >= 1000) {
        LOG_WARN("admin", "accept: %s (%lu times since the last such line)",
                 evutil_socket_error_to_string(err), a->accept_errors);
        a->accept_log_ms = now;
        a->accept_errors = 0;
    }
    if ((err == EMFILE || err == ENFILE) && net_accept_shed(evconnlistener_get_fd(l), &a->spare_fd))
        return;
    struct timeval tv = {0, 100000};
    evconnlistener_disable(l);
    event_free(a->resume);
    if ((a->resume = evtimer_new(a->base, resume_cb, l)) != NULL)
        evtimer_add(a->resume, &tv);
}

static void *admin_main(void *arg)
{
    admin_server *a = arg;

    pthread_setname_np(pthread_self(), a->h.thread_name ? a->h.thread_name : "admin");
    this_admin = a;
    event_base_loop(a->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

admin_server *admin_start(const char *addr, const admin_handlers *h, char *err, size_t errlen)
{
    admin_server *a = calloc(1, sizeof(*a));
    int fd = -1;

    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->h = *h;
    a->spare_fd = net_spare_fd();
    evthread_use_pthreads();
    if ((fd = net_bind(addr, SOCK_STREAM, 0, err, errlen)) < 0)
        goto fail;
    struct evhttp_bound_socket *bound = NULL;
    if ((a->base = event_base_new()) == NULL || (a->http = evhttp_new(a->base)) == NULL ||
        (bound = evhttp_accept_socket_with_handle(a->http, fd)) == NULL) {
        snprintf(err, errlen, "%s: cannot serve", addr);
        goto fail;
    }
    fd = -1;
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(bound), accept_error);
    evhttp_set_gencb(a->http, handle, a);
    /* Other methods reach handle(), which answers 405 (evhttp itself would say 501). */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
    evhttp_set_timeout(a->http, ADMIN_TIMEOUT_S);
    evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADERS);
    evhttp_set_max_body_size(a->http, ADMIN_MAX_BODY);
    evhttp_set_bevcb(a->http, new_bev, a);
    if (pthread_create(&a->tid, NULL, admin_main, a) != 0) {
        snprintf(err, errlen, "cannot start the admin thread");
        goto fail;
    }
    LOG_INFO("admin", "listening addr=%s", addr);
    return a;

fail:
    if (fd >= 0)
        evutil_closesocket(fd);
    if (a->spare_fd >= 0)
        close(a->spare_fd);
    if (a->http)
        evhttp_free(a->http);
    if (a->base)
        event_base_free(a->base);
    free(a);
    return NULL;
}

void admin_stop(admin_server *a)
{
    if (a == NULL)
        return;
    event_base_loopexit(a->base, NULL);
    pthread_join(a->tid, NULL);
    /* Connections still open are freed with evhttp: their conn_closed() runs then. */
    evhttp_free(a->http);
    if (a->resume)
        event_free(a->resume);
    if (a->spare_fd >= 0)
        close(a->spare_fd);
    event_base_free(a->base);
    free(a);
}
