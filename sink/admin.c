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
#include <libpq-fe.h>

#include "log.h"
#include "net.h"

struct sink_admin {
    struct event_base *base;
    struct evhttp *http;
    pthread_t tid;
    sink_admin_state st;
    char dsn_probe[2048];
};

static void reply(struct evhttp_request *req, int code, const char *body)
{
    struct evbuffer *b = evbuffer_new();

    evbuffer_add(b, body, strlen(body));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; charset=utf-8");
    evhttp_send_reply(req, code, code == 200 ? "OK" : code == 404 ? "Not Found" : "Service Unavailable", b);
    evbuffer_free(b);
}

/* Why the sink is not ready, or NULL when it is. */
static const char *not_ready(sink_admin *a)
{
    const struct rd_kafka_metadata *md = NULL;

    if (!atomic_load(a->st.migrated))
        return "schema not migrated yet";
    if (atomic_load(a->st.failing))
        return "cannot write to Postgres";
    if (PQping(a->dsn_probe) != PQPING_OK)
        return "Postgres not reachable";
    if (rd_kafka_metadata(a->st.consumer, 0, NULL, &md, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return "Kafka not reachable";
    rd_kafka_metadata_destroy(md);
    return NULL;
}

static void handle(struct evhttp_request *req, void *arg)
{
    sink_admin *a = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    const char *why;
    char body[160];

    if (path && strcmp(path, "/healthz") == 0) {
        reply(req, 200, "ok\n");
    } else if (path && strcmp(path, "/readyz") == 0) {
        if ((why = not_ready(a)) == NULL) {
            reply(req, 200, "ready\n");
        } else {
            snprintf(body, sizeof(body), "not ready: %s\n", why);
            reply(req, 503, body);
        }
    } else {
        reply(req, 404, "not found: /healthz and /readyz are served here\n");
    }
}

static void *admin_main(void *arg)
{
    sink_admin *a = arg;

    pthread_setname_np(pthread_self(), "sink-admin");
    event_base_loop(a->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

sink_admin *sink_admin_start(const char *addr, const sink_admin_state *st, char *err, size_t errlen)
{
    sink_admin *a = calloc(1, sizeof(*a));
    int fd = -1;

    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->st = *st;
    /* A probe must not hang the probe: a short connect timeout on the operator's DSN. */
    snprintf(a->dsn_probe, sizeof(a->dsn_probe), "%s", st->pg_dsn);
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
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
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

void sink_admin_stop(sink_admin *a)
{
    if (a == NULL)
        return;
    event_base_loopexit(a->base, NULL);
    pthread_join(a->tid, NULL);
    evhttp_free(a->http);
    event_base_free(a->base);
    free(a);
}
