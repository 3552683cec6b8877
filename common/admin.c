#include "admin.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>

#include "log.h"
#include "net.h"

struct admin_server {
    struct event_base *base;
    struct evhttp *http;
    pthread_t tid;
    admin_handlers h;
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

static void *admin_main(void *arg)
{
    admin_server *a = arg;

    pthread_setname_np(pthread_self(), a->h.thread_name ? a->h.thread_name : "admin");
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
    evthread_use_pthreads();
    if ((fd = net_bind(addr, SOCK_STREAM, 0, err, errlen)) < 0)
        goto fail;
    if ((a->base = event_base_new()) == NULL || (a->http = evhttp_new(a->base)) == NULL ||
        evhttp_accept_socket(a->http, fd) != 0) {
        snprintf(err, errlen, "%s: cannot serve", addr);
        goto fail;
    }
    fd = -1;
    evhttp_set_gencb(a->http, handle, a);
    /* Other methods reach handle(), which answers 405 (evhttp itself would say 501). */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
    evhttp_set_timeout(a->http, 10);
    if (pthread_create(&a->tid, NULL, admin_main, a) != 0) {
        snprintf(err, errlen, "cannot start the admin thread");
        goto fail;
    }
    LOG_INFO("admin", "listening addr=%s", addr);
    return a;

fail:
    if (fd >= 0)
        evutil_closesocket(fd);
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
    evhttp_free(a->http);
    event_base_free(a->base);
    free(a);
}
