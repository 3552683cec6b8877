/*
 * gateway/http: POST /v1/events, the real handler on a real loop thread, with
 * no Kafka. Requests go over TCP from the test thread. Queued events are
 * taken off the gateway's queue by the test, which plays the producer: it
 * decodes each record's Envelope, and for ack=committed it sends the delivery
 * reports itself (ack_wait_report), on time, late, failed or never.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <json-c/json.h>
#include <zlib.h>

#include "envelope.h"
#include "gateway.h"
#include "http.h"
#include "log.h"
#include "net.h"
#include "producer.h"
#include "queue.h"

#define RETRY_AFTER "7"

/* ---------------------------------------------------------------------------------------------- */
/* The gateway's HTTP front on a loop thread                                                      */
/* ---------------------------------------------------------------------------------------------- */

typedef struct hfx {
    gateway_config cfg;
    gateway gw;
    struct event_base *base;
    gw_http_loop *front;
    pthread_t thr;
    int running;
    int port;
} hfx;

typedef struct fx_opts {
    const char *auth_token;
    int64_t ack_timeout_ms;
    int64_t capacity, high_water;
    int64_t overload_wait_ms;
    const char *cors_origins;
    int cors_credentials;
} fx_opts;

static void *loop_main(void *arg)
{
    hfx *f = arg;
    event_base_loop(f->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

typedef struct loop_call {
    void (*fn)(hfx *f, void *arg);
    hfx *f;
    void *arg;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
} loop_call;

static void loop_call_cb(evutil_socket_t fd, short what, void *arg)
{
    loop_call *c = arg;
    (void)fd;
    (void)what;
    if (c->fn)
        c->fn(c->f, c->arg);
    pthread_mutex_lock(&c->lock);
    c->done = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

/* Run fn on the loop thread and wait for it (NULL: just wait until the loop has run once). */
static void on_loop(hfx *f, void (*fn)(hfx *f, void *arg), void *arg)
{
    loop_call c = {.fn = fn, .f = f, .arg = arg};
    struct timeval now = {0, 0};

    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.cond, NULL);
    assert_int_equal(event_base_once(f->base, -1, EV_TIMEOUT, loop_call_cb, &c, &now), 0);
    pthread_mutex_lock(&c.lock);
    while (!c.done)
        pthread_cond_wait(&c.cond, &c.lock);
    pthread_mutex_unlock(&c.lock);
    pthread_mutex_destroy(&c.lock);
    pthread_cond_destroy(&c.cond);
}

static int fx_start(void **state, const fx_opts *o)
{
    hfx *f = calloc(1, sizeof(*f));
    char err[256];

    if (f == NULL)
        return -1;
    f->cfg = (gateway_config){
        .kafka_bootstrap = (char *)"127.0.0.1:1",
        .kafka_topic = (char *)"events",
        .gateway_id = (char *)"gw-test",
        .http_addr = (char *)"127.0.0.1:0",
        .http_threads = 1,
        .producer_threads = 1,
        .queue_capacity = o->capacity ? o->capacity : 64,
        .queue_high_water = o->high_water ? o->high_water : 32,
        .max_event_bytes = 4096,
        .max_request_bytes = 64 * 1024,
        .max_batch_events = 8,
        .ack_timeout_ms = o->ack_timeout_ms ? o->ack_timeout_ms : 5000,
        .default_ack = (char *)"committed",
        .auth_token = (char *)(o->auth_token ? o->auth_token : ""),
        .http_idle_timeout_ms = 5000,
        .http_overload_wait_ms = o->overload_wait_ms,
        .cors_origins = (char *)(o->cors_origins ? o->cors_origins : ""),
        .cors_credentials = o->cors_credentials,
        .retry_after_s = 7,
        .shutdown_timeout_ms = 1000,
        .log_level = (char *)"error",
        .log_format = (char *)"logfmt",
    };
    /* As main.c does. */
    f->gw.cfg = &f->cfg;
    ing_event_limits_default(&f->gw.lim);
    f->gw.lim.max_event_bytes = f->cfg.max_event_bytes;
    f->gw.lim.max_request_bytes = f->cfg.max_request_bytes;
    f->gw.lim.max_batch_events = (size_t)f->cfg.max_batch_events;
    atomic_init(&f->gw.stopping, 0);
    if (gw_budget_init(&f->gw.budget, (size_t)256 << 20, f->cfg.max_request_bytes, err, sizeof(err)) != 0)
        return -1;
    if ((f->gw.q = queue_new((size_t)f->cfg.queue_capacity, (size_t)f->cfg.queue_high_water)) == NULL)
        return -1;

    int fd = net_bind("127.0.0.1:0", SOCK_STREAM, 0, err, sizeof(err));
    if (fd < 0)
        return -1;
    f->port = net_local_port(fd);
    if ((f->base = event_base_new()) == NULL || (f->front = gw_http_loop_new(f->base, fd, &f->gw)) == NULL)
        return -1;
    if (pthread_create(&f->thr, NULL, loop_main, f) != 0)
        return -1;
    f->running = 1;
    /* A loopbreak before the loop runs would be forgotten: start for sure. */
    on_loop(f, NULL, NULL);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    fx_opts o = {0};
    return fx_start(state, &o);
}

static int setup_auth(void **state)
{
    fx_opts o = {.auth_token = "s3cret"};
    return fx_start(state, &o);
}

static int setup_cors_auth(void **state)
{
    fx_opts o = {.auth_token = "s3cret", .cors_origins = "https://app.example.com", .cors_credentials = 1};
    return fx_start(state, &o);
}

static int setup_short_ack(void **state)
{
    fx_opts o = {.ack_timeout_ms = 100};
    return fx_start(state, &o);
}

static int setup_overload_wait(void **state)
{
    fx_opts o = {.overload_wait_ms = 3000};
    return fx_start(state, &o);
}

static int setup_small_queue(void **state)
{
    fx_opts o = {.capacity = 10, .high_water = 8};
    return fx_start(state, &o);
}

static void fx_stop_loop(hfx *f)
{
    if (f->running) {
        event_base_loopbreak(f->base);
        pthread_join(f->thr, NULL);
        f->running = 0;
    }
}

/* Whatever is still queued: answer its waits as a purging producer would, and free it. */
static void purge_queue(queue *q)
{
    void *items[64];
    size_t n;

    while ((n = queue_pop_n(q, items, 64, 0)) > 0)
        for (size_t i = 0; i < n; i++) {
            produce_msg *m = items[i];
            if (m->wait)
                ack_wait_report(m->wait, RD_KAFKA_RESP_ERR__PURGE_QUEUE);
            produce_msg_free(m);
        }
}

static int teardown(void **state)
{
    hfx *f = *state;

    purge_queue(f->gw.q);
    fx_stop_loop(f);
    /* main.c's order: close (abort what waits), the producer goes, then free (the last reports). */
    gw_http_loop_close(f->front);
    gw_http_loop_free(f->front);
    if (f->base)
        event_base_free(f->base);
    queue_free(f->gw.q);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* HTTP client                                                                                    */
/* ---------------------------------------------------------------------------------------------- */

typedef struct client {
    int fd;
    size_t len;
    char buf[65536];
} client;

typedef struct response {
    int status;
    char head[8192];
    char *body;
    size_t body_len;
    json_object *json; /* the body, parsed */
} response;

static client *cli_open(hfx *f)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    struct timeval tv = {5, 0};
    int one = 1;
    client *c = calloc(1, sizeof(*c));

    assert_non_null(c);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return c;
}

static void cli_close(client *c)
{
    close(c->fd);
    free(c);
}

static void cli_send(client *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            fail_msg("send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

static ssize_t cli_fill(client *c)
{
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    if (n > 0)
        c->len += (size_t)n;
    return n;
}

static const char *resp_header(const response *r, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    const char *p = strstr(r->head, "\r\n");

    while (p && p[2] != '\0') {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1, *e = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            snprintf(out, size, "%.*s", (int)(e - v), v);
            return out;
        }
        p = strstr(p, "\r\n");
    }
    return NULL;
}

static int cli_read(client *c, response *r)
{
    char *end, cl[32];

    memset(r, 0, sizeof(*r));
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
        if (cli_fill(c) <= 0)
            return -1;
    size_t hlen = (size_t)(end - c->buf) + 4;
    assert_true(hlen < sizeof(r->head));
    memcpy(r->head, c->buf, hlen);
    r->head[hlen] = '\0';
    if (sscanf(r->head, "HTTP/1.1 %d ", &r->status) != 1)
        fail_msg("not a response: %.80s", r->head);
    size_t blen = resp_header(r, "content-length", cl, sizeof(cl)) ? strtoul(cl, NULL, 10) : 0;
    while (c->len < hlen + blen)
        if (cli_fill(c) <= 0)
            return -1;
    r->body = malloc(blen + 1);
    memcpy(r->body, c->buf + hlen, blen);
    r->body[blen] = '\0';
    r->body_len = blen;
    memmove(c->buf, c->buf + hlen + blen, c->len - hlen - blen);
    c->len -= hlen + blen;
    r->json = json_tokener_parse(r->body);
    return 0;
}

static void resp_free(response *r)
{
    free(r->body);
    if (r->json)
        json_object_put(r->json);
    memset(r, 0, sizeof(*r));
}

/* Nothing comes for `ms`: an answer that must wait (for Kafka) has not been given early. */
static int cli_quiet(client *c, int ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return c->len == 0 && poll(&p, 1, ms) == 0;
}

/* Read until the server closes: 1 on EOF or reset. */
static int cli_closed(client *c)
{
    for (;;) {
        c->len = 0;
        ssize_t n = cli_fill(c);
        if (n == 0)
            return 1;
        if (n < 0)
            return errno == ECONNRESET;
    }
}

/* Send a POST with these extra header lines and body on connection c (no answer read). */
static void post_on(client *c, const char *target, const char *headers, const void *body, size_t len)
{
    char head[4096];
    int n = snprintf(head, sizeof(head), "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n%s\r\n",
                     target, len, headers ? headers : "");
    cli_send(c, head, (size_t)n);
    cli_send(c, body, len);
}

/* One request on a fresh connection, its answer read. */
static void call(hfx *f, const char *method, const char *target, const char *headers, const void *body,
                 size_t len, response *r)
{
    client *c = cli_open(f);
    char head[4096];
    int n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n%s\r\n", method,
                     target, len, headers ? headers : "");
    cli_send(c, head, (size_t)n);
    cli_send(c, body, len);
    if (cli_read(c, r) != 0)
        fail_msg("no answer to %s %s", method, target);
    cli_close(c);
}

static void post(hfx *f, const char *target, const char *headers, const char *body, response *r)
{
    call(f, "POST", target, headers, body, strlen(body), r);
}

#define CE_JSON  "Content-Type: application/cloudevents+json\r\n"
#define CE_BATCH "Content-Type: application/cloudevents-batch+json\r\n"
#define ACCEPTED "/v1/events?ack=accepted"
#define EV       "{\"source\":\"/s\",\"type\":\"t\"}"

/* ---------------------------------------------------------------------------------------------- */
/* Checking answers and what was queued                                                           */
/* ---------------------------------------------------------------------------------------------- */

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

/* The contract's error shape, with `index` only where one event is at fault (index < 0: absent). */
static void expect_error(const response *r, int status, const char *code, long index)
{
    if (r->status != status)
        fail_msg("status %d, not %d: %s", r->status, status, r->body);
    char ct[64];
    assert_non_null(resp_header(r, "content-type", ct, sizeof(ct)));
    assert_string_equal(ct, "application/json");
    if (r->json == NULL)
        fail_msg("not JSON: %s", r->body);
    json_object *e = get(r->json, "error");
    assert_non_null(e);
    assert_int_equal(json_object_object_length(r->json), 1);
    if (strcmp(json_object_get_string(get(e, "code")), code) != 0)
        fail_msg("code %s, not %s: %s", json_object_get_string(get(e, "code")), code, r->body);
    assert_true(strlen(json_object_get_string(get(e, "message"))) > 0);
    json_object *ix = get(e, "index");
    if (index < 0) {
        if (ix != NULL)
            fail_msg("unexpected index: %s", r->body);
    } else {
        if (ix == NULL || json_object_get_int64(ix) != index)
            fail_msg("index not %ld: %s", index, r->body);
    }
    char v[32];
    if (status == 429 || status == 503) {
        assert_non_null(resp_header(r, "retry-after", v, sizeof(v)));
        assert_string_equal(v, RETRY_AFTER);
    } else {
        assert_null(resp_header(r, "retry-after", v, sizeof(v)));
    }
}

static const char *error_message(const response *r)
{
    return json_object_get_string(get(get(r->json, "error"), "message"));
}

/* {"accepted": n, "ids": [...]}: the ids, into ids[]. */
static void expect_ok(const response *r, int status, size_t n, char ids[][64])
{
    if (r->status != status)
        fail_msg("status %d, not %d: %s", r->status, status, r->body);
    if (r->json == NULL)
        fail_msg("not JSON: %s", r->body);
    assert_int_equal(json_object_get_int64(get(r->json, "accepted")), n);
    json_object *a = get(r->json, "ids");
    assert_non_null(a);
    assert_int_equal(json_object_array_length(a), n);
    for (size_t i = 0; i < n && ids; i++)
        snprintf(ids[i], 64, "%s", json_object_get_string(json_object_array_get_idx(a, i)));
}

/* Take exactly n records off the queue (they are there once a request is answered 202). */
static void take(hfx *f, produce_msg **out, size_t n)
{
    size_t got = 0;
    for (int i = 0; i < 50 && got < n; i++)
        got += queue_pop_n(f->gw.q, (void **)out + got, n - got, 100);
    if (got != n)
        fail_msg("%zu records queued, not %zu", got, n);
    assert_int_equal(queue_depth(f->gw.q), 0);
}

static void free_msgs(produce_msg **m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        produce_msg_free(m[i]);
}

static Ingest__V1__Envelope *decode(const produce_msg *m)
{
    Ingest__V1__Envelope *env = envelope_decode(m->value, m->value_len);
    if (env == NULL || env->event == NULL)
        fail_msg("record %s is not an Envelope", m->ce_id);
    return env;
}

static const Ingest__V1__CloudEvent__CloudEventAttributeValue *attr_value(const Ingest__V1__CloudEvent *ce,
                                                                          const char *key)
{
    for (size_t i = 0; i < ce->n_attributes; i++)
        if (strcmp(ce->attributes[i]->key, key) == 0)
            return ce->attributes[i]->value;
    return NULL;
}

/* A string attribute's value; NULL when absent. */
static const char *attr(const Ingest__V1__CloudEvent *ce, const char *key)
{
    const Ingest__V1__CloudEvent__CloudEventAttributeValue *v = attr_value(ce, key);
    if (v == NULL)
        return NULL;
    if (v->attr_case != INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_STRING)
        fail_msg("attribute %s is not a string", key);
    return v->ce_string;
}

/* A time attribute's seconds since the epoch. */
static int64_t attr_seconds(const Ingest__V1__CloudEvent *ce, const char *key)
{
    const Ingest__V1__CloudEvent__CloudEventAttributeValue *v = attr_value(ce, key);
    if (v == NULL || v->attr_case != INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_TIMESTAMP)
        fail_msg("attribute %s is not a timestamp", key);
    return v->ce_timestamp->seconds;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static size_t pending_front(hfx *f)
{
    return gw_http_loop_pending(f->front);
}

static int wait_pending(hfx *f, size_t want)
{
    for (int i = 0; i < 5000 && pending_front(f) != want; i++)
        usleep(1000);
    return pending_front(f) == want;
}

/* ---------------------------------------------------------------------------------------------- */
/* Content modes                                                                                  */
/* ---------------------------------------------------------------------------------------------- */

static void test_structured_event(void **state)
{
    hfx *f = *state;
    response r;
    produce_msg *m[1];
    char ids[1][64];

    int64_t before = now_ns();
    post(f, ACCEPTED, CE_JSON,
         "{\"specversion\":\"1.0\",\"id\":\"e-1\",\"source\":\"/src\",\"type\":\"t.one\",\"subject\":\"sub\","
         "\"time\":\"2024-05-01T10:00:00Z\",\"tenant\":\"acme\",\"count\":3,\"data\":{\"x\":[1,2]}}",
         &r);
    expect_ok(&r, 202, 1, ids);
    assert_string_equal(ids[0], "e-1");
    resp_free(&r);
    take(f, m, 1);
    int64_t after = now_ns();

    assert_null(m[0]->wait); /* accepted: nobody waits for Kafka */
    assert_string_equal(m[0]->ce_id, "e-1");
    assert_string_equal(m[0]->ce_source, "/src");
    assert_string_equal(m[0]->ce_type, "t.one");
    assert_string_equal(m[0]->key, "sub");
    Ingest__V1__Envelope *env = decode(m[0]);
    assert_int_equal(env->protocol, INGEST__V1__PROTOCOL__PROTOCOL_HTTP);
    assert_string_equal(env->gateway_id, "gw-test");
    assert_true(strncmp(env->peer, "127.0.0.1:", 10) == 0);
    assert_true(env->received_unix_nanos >= before && env->received_unix_nanos <= after);
    assert_string_equal(env->event->id, "e-1");
    assert_string_equal(env->event->source, "/src");
    assert_string_equal(env->event->type, "t.one");
    assert_string_equal(attr(env->event, "subject"), "sub");
    assert_string_equal(attr(env->event, "tenant"), "acme");
    assert_string_equal(attr(env->event, "count"), "3");
    assert_int_equal(attr_seconds(env->event, "time"), 1714557600);
    assert_int_equal(env->event->data_case, INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA);
    assert_string_equal(env->event->text_data, "{\"x\":[1,2]}");
    envelope_free(env);
    free_msgs(m, 1);
}

static void test_structured_id_assigned(void **state)
{
    hfx *f = *state;
    response r;
    produce_msg *m[1];
    char ids[1][64];

    post(f, ACCEPTED, CE_JSON, "{\"source\":\"/src\",\"type\":\"t\"}", &r);
    expect_ok(&r, 202, 1, ids);
    resp_free(&r);
    /* A UUID the gateway made, the same in the answer and in Kafka; the key falls back to the source. */
    assert_int_equal(strlen(ids[0]), EVENT_ID_LEN);
    assert_int_equal(ids[0][14], '7');
    take(f, m, 1);
    assert_string_equal(m[0]->ce_id, ids[0]);
    assert_string_equal(m[0]->key, "/src");
    Ingest__V1__Envelope *env = decode(m[0]);
    assert_string_equal(env->event->id, ids[0]);
    assert_int_equal(env->event->data_case, INGEST__V1__CLOUD_EVENT__DATA__NOT_SET);
    envelope_free(env);
    free_msgs(m, 1);
}

static void test_batch(void **state)
{
    hfx *f = *state;
    response r;
    produce_msg *m[3];
    char ids[3][64];

    post(f, ACCEPTED, CE_BATCH,
         "[{\"id\":\"b-0\",\"source\":\"/s\",\"type\":\"t\"},{\"source\":\"/"
         "s\",\"type\":\"t\",\"data\":\"x\"},"
         "{\"id\":\"b-2\",\"source\":\"/s\",\"type\":\"t\",\"partitionkey\":\"p\"}]",
         &r);
    expect_ok(&r, 202, 3, ids);
    resp_free(&r);
    /* Ids in request order, records in the same order. */
    assert_string_equal(ids[0], "b-0");
    assert_int_equal(strlen(ids[1]), EVENT_ID_LEN);
    assert_string_equal(ids[2], "b-2");
    take(f, m, 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(m[i]->ce_id, ids[i]);
    assert_string_equal(m[2]->key, "p");
    Ingest__V1__Envelope *env = decode(m[1]);
    assert_string_equal(env->event->text_data, "\"x\"");
    envelope_free(env);
    free_msgs(m, 3);
}

static void test_application_json(void **state)
{
    hfx *f = *state;
    response r;
    produce_msg *m[2];

    /* One object: one event. */
    post(f, ACCEPTED, "Content-Type: application/json; charset=utf-8\r\n",
         "{\"id\":\"j-1\",\"source\":\"/s\",\"type\":\"t\",\"data\":null}", &r);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    assert_string_equal(m[0]->ce_id, "j-1");
    free_msgs(m, 1);

    /* An array: a batch. */
    post(f, ACCEPTED, "Content-Type: Application/JSON\r\n",
         " \n[{\"id\":\"j-2\",\"source\":\"/s\",\"type\":\"t\"},{\"id\":\"j-3\",\"source\":\"/"
         "s\",\"type\":\"t\"}]",
         &r);
    expect_ok(&r, 202, 2, NULL);
    resp_free(&r);
    take(f, m, 2);
    assert_string_equal(m[0]->ce_id, "j-2");
    assert_string_equal(m[1]->ce_id, "j-3");
    free_msgs(m, 2);
}

static void test_ndjson(void **state)
{
    hfx *f = *state;
    response r;
    produce_msg *m[3];
    char ids[3][64];

    post(f, ACCEPTED, "Content-Type: application/x-ndjson\r\n",
         "{\"id\":\"n-0\",\"source\":\"/s\",\"type\":\"t\"}\n\n{\"id\":\"n-1\",\"source\":\"/"
         "s\",\"type\":\"t\"}\r\n"
         "{\"id\":\"n-2\",\"source\":\"/s\",\"type\":\"t\",\"data\":{\"k\":true}}\n",
         &r);
    expect_ok(&r, 202, 3, ids);
    resp_free(&r);
    assert_string_equal(ids[2], "n-2");
    take(f, m, 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(m[i]->ce_id, ids[i]);
    free_msgs(m, 3);

    post(f, ACCEPTED, "Content-Type: application/ndjson\r\n",
         "{\"id\":\"n-3\",\"source\":\"/s\",\"type\":\"t\"}", &r);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    free_msgs(m, 1);
}

static void test_binary_mode(void **state)
{
    hfx *f = *state;
    response r;
    produce_msg *m[1];
    char ids[1][64];
    const char body[] = {'r', 'a', 'w', 0, (char)0xff, 'x'};

    call(f, "POST", ACCEPTED,
         "Content-Type: text/plain; charset=us-ascii\r\nce-specversion: 1.0\r\nce-id: bin-1\r\n"
         "ce-source: /dev%2Fnull\r\nCE-Type: com.example.bin\r\nce-subject: s%20one\r\n"
         "ce-time: 2024-05-01T10:00:00.5Z\r\nce-myext: caf%C3%A9%20au%20lait%\r\nce-partitionkey: pk%2F1\r\n"
         "ce-bad: %zz%4\r\n",
         body, sizeof(body), &r);
    expect_ok(&r, 202, 1, ids);
    assert_string_equal(ids[0], "bin-1");
    resp_free(&r);
    take(f, m, 1);
    /* ce-* values are percent-decoded (the CloudEvents HTTP binding); the key is the partitionkey. */
    assert_string_equal(m[0]->key, "pk/1");
    assert_string_equal(m[0]->ce_source, "/dev/null");
    assert_string_equal(m[0]->ce_type, "com.example.bin");
    Ingest__V1__Envelope *env = decode(m[0]);
    assert_string_equal(env->event->source, "/dev/null");
    assert_string_equal(attr(env->event, "subject"), "s one");
    assert_string_equal(attr(env->event, "myext"), "caf\xc3\xa9 au lait%");
    /* A '%' not followed by two hex digits stays as it is. */
    assert_string_equal(attr(env->event, "bad"), "%zz%4");
    assert_string_equal(attr(env->event, "datacontenttype"), "text/plain; charset=us-ascii");
    assert_int_equal(attr_seconds(env->event, "time"), 1714557600);
    /* The body is the data, bytes as they came. */
    assert_int_equal(env->event->data_case, INGEST__V1__CLOUD_EVENT__DATA_BINARY_DATA);
    assert_int_equal(env->event->binary_data.len, sizeof(body));
    assert_memory_equal(env->event->binary_data.data, body, sizeof(body));
    envelope_free(env);
    free_msgs(m, 1);

    /* No body: an event without data. */
    call(f, "POST", ACCEPTED, "ce-source: /s\r\nce-type: t\r\n", "", 0, &r);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    env = decode(m[0]);
    assert_int_equal(env->event->data_case, INGEST__V1__CLOUD_EVENT__DATA__NOT_SET);
    assert_null(attr(env->event, "datacontenttype"));
    envelope_free(env);
    free_msgs(m, 1);
}

static void test_binary_json_body(void **state)
{
    hfx *f = *state;
    response r;
    produce_msg *m[1];

    /* application/json with ce-* headers is binary mode: the body is the event's JSON data. */
    post(f, ACCEPTED, "Content-Type: application/json\r\nce-source: /s\r\nce-type: t\r\n", "{\"a\": [1, 2]}",
         &r);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    Ingest__V1__Envelope *env = decode(m[0]);
    assert_int_equal(env->event->data_case, INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA);
    json_object *d = json_tokener_parse(env->event->text_data);
    assert_non_null(d);
    assert_int_equal(json_object_get_int(json_object_array_get_idx(get(d, "a"), 1)), 2);
    json_object_put(d);
    assert_string_equal(attr(env->event, "datacontenttype"), "application/json");
    envelope_free(env);
    free_msgs(m, 1);

    /* A JSON content type with a body that is not JSON: refused, nothing queued. */
    post(f, ACCEPTED, "Content-Type: application/vnd.acme+json\r\nce-source: /s\r\nce-type: t\r\n",
         "{\"a\":", &r);
    expect_error(&r, 400, "malformed_json", -1);
    resp_free(&r);
    post(f, ACCEPTED, "Content-Type: application/json\r\nce-source: /s\r\nce-type: t\r\n", "{} {}", &r);
    expect_error(&r, 400, "malformed_json", -1);
    resp_free(&r);
    /*
     * A JSON type longer than 127 bytes is JSON too (tests/fuzz): it was taken
     * for bytes, and the sink, which judges the whole type, got data that
     * Postgres's jsonb refuses.
     */
    char hdrs[512];
    snprintf(hdrs, sizeof(hdrs),
             "Content-Type: application/vnd.%0150d+json\r\nce-source: /s\r\nce-type: t\r\n", 0);
    post(f, ACCEPTED, hdrs, "{\"a\":", &r);
    expect_error(&r, 400, "malformed_json", -1);
    resp_free(&r);
    assert_int_equal(queue_depth(f->gw.q), 0);
}

static void test_binary_missing_attributes(void **state)
{
    hfx *f = *state;
    response r;

    /* Neither source nor type: the message says how to send either mode. */
    post(f, ACCEPTED, "Content-Type: text/plain\r\n", "hello", &r);
    expect_error(&r, 400, "invalid_event", -1);
    assert_non_null(strstr(error_message(&r), "source"));
    assert_non_null(strstr(error_message(&r), "ce-"));
    resp_free(&r);
    /* A type without a source. */
    post(f, ACCEPTED, "Content-Type: text/plain\r\nce-type: t\r\n", "hello", &r);
    expect_error(&r, 400, "invalid_event", -1);
    assert_non_null(strstr(error_message(&r), "source"));
    resp_free(&r);
    /* An attribute that decodes to a NUL. */
    post(f, ACCEPTED, "ce-source: /s%00x\r\nce-type: t\r\n", "", &r);
    expect_error(&r, 400, "invalid_event", -1);
    resp_free(&r);
    /* A bad extension name. */
    post(f, ACCEPTED, "ce-source: /s\r\nce-type: t\r\nce-Not_Valid: 1\r\n", "", &r);
    expect_error(&r, 400, "invalid_event", -1);
    resp_free(&r);
    assert_int_equal(queue_depth(f->gw.q), 0);
}

/* gzip (RFC 1952) with zlib: deflateInit2 with windowBits 15 + 16. */
static size_t gzip(const void *in, size_t len, unsigned char *out, size_t cap)
{
    z_stream zs;

    memset(&zs, 0, sizeof(zs));
    assert_int_equal(deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t n = zs.total_out;
    deflateEnd(&zs);
    return n;
}

static void test_gzip(void **state)
{
    hfx *f = *state;
    response r;
    produce_msg *m[2];
    unsigned char z[4096];
    const char *ev = "{\"id\":\"g-1\",\"source\":\"/s\",\"type\":\"t\",\"data\":{\"text\":\"compressed\"}}";

    size_t zn = gzip(ev, strlen(ev), z, sizeof(z));
    call(f, "POST", ACCEPTED, CE_JSON "Content-Encoding: gzip\r\n", z, zn, &r);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    assert_string_equal(m[0]->ce_id, "g-1");
    Ingest__V1__Envelope *env = decode(m[0]);
    assert_string_equal(env->event->text_data, "{\"text\":\"compressed\"}");
    envelope_free(env);
    free_msgs(m, 1);

    /* x-gzip, and two gzip members one after the other (RFC 1952: one stream), as NDJSON. */
    const char *a = "{\"id\":\"g-2\",\"source\":\"/s\",\"type\":\"t\"}\n",
               *b = "{\"id\":\"g-3\",\"source\":\"/s\",\"type\":\"t\"}";
    zn = gzip(a, strlen(a), z, sizeof(z));
    zn += gzip(b, strlen(b), z + zn, sizeof(z) - zn);
    call(f, "POST", ACCEPTED, "Content-Type: application/x-ndjson\r\nContent-Encoding: X-GZIP\r\n", z, zn,
         &r);
    expect_ok(&r, 202, 2, NULL);
    resp_free(&r);
    take(f, m, 2);
    assert_string_equal(m[0]->ce_id, "g-2");
    assert_string_equal(m[1]->ce_id, "g-3");
    free_msgs(m, 2);

    /* identity is no encoding. */
    post(f, ACCEPTED, CE_JSON "Content-Encoding: identity\r\n", ev, &r);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    free_msgs(m, 1);
}

static void test_gzip_bad(void **state)
{
    hfx *f = *state;
    response r;
    unsigned char z[4096];
    const char *ev = "{\"id\":\"g-1\",\"source\":\"/s\",\"type\":\"t\"}";

    /* Not gzip at all. */
    post(f, ACCEPTED, CE_JSON "Content-Encoding: gzip\r\n", ev, &r);
    expect_error(&r, 400, "bad_encoding", -1);
    resp_free(&r);
    /* Truncated. */
    size_t zn = gzip(ev, strlen(ev), z, sizeof(z));
    call(f, "POST", ACCEPTED, CE_JSON "Content-Encoding: gzip\r\n", z, zn - 6, &r);
    expect_error(&r, 400, "bad_encoding", -1);
    resp_free(&r);
    /* Empty. */
    call(f, "POST", ACCEPTED, CE_JSON "Content-Encoding: gzip\r\n", "", 0, &r);
    expect_error(&r, 400, "bad_encoding", -1);
    resp_free(&r);
    /* Another encoding. */
    post(f, ACCEPTED, CE_JSON "Content-Encoding: br\r\n", ev, &r);
    expect_error(&r, 415, "unsupported_encoding", -1);
    resp_free(&r);

    /* Decoded over max_request_bytes (64 KiB), though small on the wire: the limit is on what it decodes to.
     */
    size_t big = 100 * 1024;
    char *json = malloc(big + 100);
    int n = snprintf(json, 100, "{\"source\":\"/s\",\"type\":\"t\",\"data\":\"");
    memset(json + n, 'a', big);
    strcpy(json + n + big, "\"}");
    unsigned char *zb = malloc(big);
    zn = gzip(json, strlen(json), zb, big);
    assert_true(zn < 4096);
    call(f, "POST", ACCEPTED, CE_JSON "Content-Encoding: gzip\r\n", zb, zn, &r);
    expect_error(&r, 413, "too_large", -1);
    resp_free(&r);
    free(zb);
    free(json);
    assert_int_equal(queue_depth(f->gw.q), 0);
}

/* ---------------------------------------------------------------------------------------------- */
/* Refusals                                                                                       */
/* ---------------------------------------------------------------------------------------------- */

static void test_not_found(void **state)
{
    hfx *f = *state;
    response r;
    static const char *const paths[] = {"/v2/events", "/v1/events/", "/", "/v1/event", "/V1/EVENTS"};

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        post(f, paths[i], CE_JSON, "{\"source\":\"/s\",\"type\":\"t\"}", &r);
        expect_error(&r, 404, "not_found", -1);
        resp_free(&r);
    }
    assert_int_equal(queue_depth(f->gw.q), 0);
}

static void test_method_not_allowed(void **state)
{
    hfx *f = *state;
    response r;
    char v[64];
    static const char *const methods[] = {"GET", "PUT", "DELETE", "PATCH", "OPTIONS"};

    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        call(f, methods[i], "/v1/events", CE_JSON, "", 0, &r);
        expect_error(&r, 405, "method_not_allowed", -1);
        assert_non_null(resp_header(&r, "allow", v, sizeof(v)));
        assert_string_equal(v, "POST");
        assert_non_null(strstr(error_message(&r), methods[i]));
        resp_free(&r);
    }
}

static void test_auth(void **state)
{
    hfx *f = *state;
    response r;
    char v[128];
    const char *ev = "{\"source\":\"/s\",\"type\":\"t\"}";
    static const char *const wrong[] = {
        "",
        "Authorization: Bearer wrong\r\n",
        "Authorization: Bearer s3cre\r\n",
        "Authorization: Bearer s3cret1\r\n",
        "Authorization: Bearer \r\n",
        "Authorization: Basic czNjcmV0\r\n",
        "Authorization: s3cret\r\n",
        "Authorization: Bearer S3CRET\r\n",
    };

    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        char h[256];
        snprintf(h, sizeof(h), CE_JSON "%s", wrong[i]);
        post(f, ACCEPTED, h, ev, &r);
        if (r.status != 401)
            fail_msg("%d for '%s'", r.status, wrong[i]);
        expect_error(&r, 401, "unauthorized", -1);
        assert_non_null(resp_header(&r, "www-authenticate", v, sizeof(v)));
        assert_true(strncmp(v, "Bearer", 6) == 0);
        resp_free(&r);
    }
    /* Before anything else: a bad body from an unknown client is still 401. */
    post(f, ACCEPTED, CE_JSON, "{not json", &r);
    expect_error(&r, 401, "unauthorized", -1);
    resp_free(&r);
    assert_int_equal(queue_depth(f->gw.q), 0);

    /* The right token; the scheme is case-insensitive (RFC 9110 11.1). */
    produce_msg *m[1];
    post(f, ACCEPTED, CE_JSON "Authorization: Bearer s3cret\r\n", ev, &r);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    free_msgs(m, 1);
    post(f, ACCEPTED, CE_JSON "Authorization: bearer s3cret\r\n", ev, &r);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    free_msgs(m, 1);
}

#define PREFLIGHT "Origin: https://app.example.com\r\nAccess-Control-Request-Method: POST\r\n"

/* A preflight carries no credentials: with a token required it is still answered. */
static void test_cors_preflight(void **state)
{
    hfx *f = *state;
    response r;
    char v[256];
    client *c = cli_open(f);
    static const char req[] = "OPTIONS /v1/events HTTP/1.1\r\nHost: t\r\n" PREFLIGHT
                              "Access-Control-Request-Headers: authorization,content-type,ce-id\r\n\r\n";
    static const char with_body[] =
        "OPTIONS /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n" PREFLIGHT "\r\nxxxxx";

    cli_send(c, req, sizeof(req) - 1);
    assert_int_equal(cli_read(c, &r), 0);
    assert_int_equal(r.status, 204);
    assert_null(resp_header(&r, "content-length", v, sizeof(v)));
    assert_null(resp_header(&r, "content-type", v, sizeof(v)));
    assert_string_equal(resp_header(&r, "access-control-allow-origin", v, sizeof(v)),
                        "https://app.example.com");
    assert_string_equal(resp_header(&r, "access-control-allow-credentials", v, sizeof(v)), "true");
    assert_string_equal(resp_header(&r, "access-control-allow-headers", v, sizeof(v)),
                        "authorization,content-type,ce-id");
    resp_free(&r);
    /* The 204 framed right: the connection goes on, and the page's POST gets CORS headers. */
    const char *ev = "{\"source\":\"/s\",\"type\":\"t\"}";
    post_on(c, ACCEPTED, CE_JSON "Origin: https://app.example.com\r\nAuthorization: Bearer s3cret\r\n", ev,
            strlen(ev));
    assert_int_equal(cli_read(c, &r), 0);
    expect_ok(&r, 202, 1, NULL);
    assert_string_equal(resp_header(&r, "access-control-allow-origin", v, sizeof(v)),
                        "https://app.example.com");
    assert_string_equal(resp_header(&r, "vary", v, sizeof(v)), "Origin");
    resp_free(&r);
    cli_close(c);
    produce_msg *m[1];
    take(f, m, 1);
    free_msgs(m, 1);
    /* With a body (browsers send none): answered at the headers, the body unread, the connection closed. */
    c = cli_open(f);
    cli_send(c, with_body, sizeof(with_body) - 1);
    assert_int_equal(cli_read(c, &r), 0);
    assert_int_equal(r.status, 204);
    assert_string_equal(resp_header(&r, "access-control-allow-origin", v, sizeof(v)),
                        "https://app.example.com");
    resp_free(&r);
    assert_true(cli_closed(c));
    cli_close(c);
    /* An origin not listed: 204 without CORS headers, which the browser reads as no. */
    call(f, "OPTIONS", "/v1/events",
         "Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n", "", 0, &r);
    assert_int_equal(r.status, 204);
    assert_null(resp_header(&r, "access-control-allow-origin", v, sizeof(v)));
    resp_free(&r);
    assert_int_equal(queue_depth(f->gw.q), 0);
}

/* The webhook handshake needs the deliveries' token; WebHook-Allowed-Rate is `*` while there are no quotas.
 */
static void test_webhook_handshake(void **state)
{
    hfx *f = *state;
    response r;
    char v[256];

    call(f, "OPTIONS", "/v1/events", "WebHook-Request-Origin: eventemitter.example.com\r\n", "", 0, &r);
    expect_error(&r, 401, "unauthorized", -1);
    assert_null(resp_header(&r, "webhook-allowed-origin", v, sizeof(v)));
    resp_free(&r);
    call(f, "OPTIONS", "/v1/events",
         "WebHook-Request-Origin: eventemitter.example.com\r\nWebHook-Request-Rate: 120\r\n"
         "Authorization: Bearer s3cret\r\n",
         "", 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "webhook-allowed-origin", v, sizeof(v)), "eventemitter.example.com");
    assert_string_equal(resp_header(&r, "webhook-allowed-rate", v, sizeof(v)), "*");
    assert_string_equal(resp_header(&r, "allow", v, sizeof(v)), "POST");
    assert_string_equal(resp_header(&r, "content-length", v, sizeof(v)), "0");
    resp_free(&r);
    call(f, "OPTIONS", "/v1/events",
         "WebHook-Request-Origin: eventemitter.example.com\r\nWebHook-Request-Rate: 0\r\n"
         "Authorization: Bearer s3cret\r\n",
         "", 0, &r);
    expect_error(&r, 400, "bad_request", -1);
    resp_free(&r);
}

static void test_unsupported_media_type(void **state)
{
    hfx *f = *state;
    response r;
    const char *ev = "{\"source\":\"/s\",\"type\":\"t\"}";
    static const char *const types[] = {
        "Content-Type: application/cloudevents+xml\r\n",
        "Content-Type: application/cloudevents+protobuf\r\n",
        "Content-Type: application/cloudevents\r\n",
        "Content-Type: application/cloudevents+json; charset=iso-8859-1\r\n",
        "Content-Type: application/json; charset=\"latin1\"\r\n",
        "Content-Type: application/x-ndjson; charset=utf-16\r\n",
    };

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        post(f, ACCEPTED, types[i], ev, &r);
        if (r.status != 415)
            fail_msg("%d for %s", r.status, types[i]);
        expect_error(&r, 415, "unsupported_media_type", -1);
        resp_free(&r);
    }
    /* A quoted utf-8 charset is fine. */
    produce_msg *m[1];
    post(f, ACCEPTED, "Content-Type: application/cloudevents+json; charset=\"UTF-8\"\r\n", ev, &r);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    free_msgs(m, 1);
}

static void test_too_large(void **state)
{
    hfx *f = *state;
    response r;
    char *body = malloc(80 * 1024);
    char v[32];

    /* The body over max_request_bytes (64 KiB): refused from its Content-Length, the connection closed. */
    memset(body, ' ', 70 * 1024);
    client *c = cli_open(f);
    post_on(c, ACCEPTED, CE_JSON, body, 70 * 1024);
    assert_int_equal(cli_read(c, &r), 0);
    expect_error(&r, 413, "too_large", -1);
    assert_non_null(resp_header(&r, "connection", v, sizeof(v)));
    assert_string_equal(v, "close");
    resp_free(&r);
    assert_true(cli_closed(c));
    cli_close(c);

    /* More events than max_batch_events (8). */
    int n = sprintf(body, "[");
    for (int i = 0; i < 9; i++)
        n += sprintf(body + n, "%s{\"source\":\"/s\",\"type\":\"t\"}", i ? "," : "");
    sprintf(body + n, "]");
    post(f, ACCEPTED, CE_BATCH, body, &r);
    expect_error(&r, 413, "too_many_events", -1);
    resp_free(&r);
    /* In NDJSON too. */
    n = 0;
    for (int i = 0; i < 9; i++)
        n += sprintf(body + n, "{\"source\":\"/s\",\"type\":\"t\"}\n");
    post(f, ACCEPTED, "Content-Type: application/x-ndjson\r\n", body, &r);
    expect_error(&r, 413, "too_many_events", -1);
    resp_free(&r);

    /* One event over max_event_bytes (4096), second in a batch: its index. */
    n = sprintf(body, "[{\"source\":\"/s\",\"type\":\"t\"},{\"source\":\"/s\",\"type\":\"t\",\"data\":\"");
    memset(body + n, 'x', 5000);
    sprintf(body + n + 5000, "\"}]");
    post(f, ACCEPTED, CE_BATCH, body, &r);
    expect_error(&r, 413, "too_large", 1);
    resp_free(&r);
    /* A binary-mode body over it. */
    memset(body, 'y', 5000);
    call(f, "POST", ACCEPTED, "Content-Type: application/octet-stream\r\nce-source: /s\r\nce-type: t\r\n",
         body, 5000, &r);
    expect_error(&r, 413, "too_large", -1);
    resp_free(&r);
    free(body);
    assert_int_equal(queue_depth(f->gw.q), 0);
}

static void test_bad_events(void **state)
{
    hfx *f = *state;
    response r;

    post(f, ACCEPTED, CE_JSON, "{\"source\":", &r);
    expect_error(&r, 400, "malformed_json", -1);
    resp_free(&r);
    post(f, ACCEPTED, CE_JSON, "", &r);
    expect_error(&r, 400, "malformed_json", -1);
    resp_free(&r);
    /* One event, invalid: no index. */
    post(f, ACCEPTED, CE_JSON, "{\"specversion\":\"2.0\",\"source\":\"/s\",\"type\":\"t\"}", &r);
    expect_error(&r, 400, "invalid_event", -1);
    assert_non_null(strstr(error_message(&r), "specversion"));
    resp_free(&r);
    /* A batch whose second event has no type: index 1, the field named; nothing of it queued. */
    post(f, ACCEPTED, CE_BATCH,
         "[{\"source\":\"/s\",\"type\":\"t\"},{\"source\":\"/s\"},{\"source\":\"/s\",\"type\":\"t\"}]", &r);
    expect_error(&r, 400, "invalid_event", 1);
    assert_non_null(strstr(error_message(&r), "type"));
    resp_free(&r);
    /* An application/json array: a batch, with indexes. */
    post(f, ACCEPTED, "Content-Type: application/json\r\n",
         "[{\"source\":\"/s\",\"type\":\"t\"},{\"source\":\"/"
         "s\",\"type\":\"t\"},{\"source\":\"\",\"type\":\"t\"}]",
         &r);
    expect_error(&r, 400, "invalid_event", 2);
    resp_free(&r);
    /* An application/json object: no index. */
    post(f, ACCEPTED, "Content-Type: application/json\r\n",
         "{\"source\":\"/s\",\"type\":\"t\",\"time\":\"yesterday\"}", &r);
    expect_error(&r, 400, "invalid_event", -1);
    assert_non_null(strstr(error_message(&r), "time"));
    resp_free(&r);
    /* NDJSON: a broken second line. */
    post(f, ACCEPTED, "Content-Type: application/x-ndjson\r\n",
         "{\"source\":\"/s\",\"type\":\"t\"}\n{\"source\":\"/s\",\"type\":}\n", &r);
    expect_error(&r, 400, "malformed_json", 1);
    resp_free(&r);
    /* A batch with no event. */
    post(f, ACCEPTED, CE_BATCH, "[]", &r);
    expect_error(&r, 400, "invalid_event", -1);
    resp_free(&r);
    post(f, ACCEPTED, "Content-Type: application/x-ndjson\r\n", "\n\n", &r);
    expect_error(&r, 400, "invalid_event", -1);
    resp_free(&r);
    /* A structured event that is an array. */
    post(f, ACCEPTED, CE_JSON, "[{\"source\":\"/s\",\"type\":\"t\"}]", &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    /* An ack that is neither. */
    post(f, "/v1/events?ack=maybe", CE_JSON, "{\"source\":\"/s\",\"type\":\"t\"}", &r);
    expect_error(&r, 400, "bad_request", -1);
    assert_non_null(strstr(error_message(&r), "maybe"));
    resp_free(&r);
    post(f, "/v1/events", CE_JSON "Ingest-Ack: sometimes\r\n", "{\"source\":\"/s\",\"type\":\"t\"}", &r);
    expect_error(&r, 400, "bad_request", -1);
    resp_free(&r);
    /* All or nothing: none of these queued anything. */
    assert_int_equal(queue_depth(f->gw.q), 0);
}

static void test_error_messages_are_json(void **state)
{
    hfx *f = *state;
    response r;

    /* What the client sent comes back in messages: escaped, so the answer stays JSON. */
    post(f, "/v1/events?ack=%22x%5C", CE_JSON, "{}", &r);
    expect_error(&r, 400, "bad_request", -1);
    resp_free(&r);
    post(f, "/v1/events?ack=\"q\\", CE_JSON, "{}", &r);
    expect_error(&r, 400, "bad_request", -1);
    assert_non_null(strstr(error_message(&r), "\"q\\"));
    resp_free(&r);
    post(f, ACCEPTED, CE_JSON "Content-Encoding: \"zip\\\r\n", "{}", &r);
    expect_error(&r, 415, "unsupported_encoding", -1);
    assert_non_null(strstr(error_message(&r), "\"zip\\"));
    resp_free(&r);
    /* Ids with quotes and backslashes come back intact. */
    char ids[1][64];
    produce_msg *m[1];
    post(f, ACCEPTED, CE_JSON, "{\"id\":\"a\\\"b\\\\c\",\"source\":\"/s\",\"type\":\"t\"}", &r);
    expect_ok(&r, 202, 1, ids);
    assert_string_equal(ids[0], "a\"b\\c");
    resp_free(&r);
    take(f, m, 1);
    assert_string_equal(m[0]->ce_id, "a\"b\\c");
    free_msgs(m, 1);
}

static void test_error_messages_utf8(void **state)
{
    hfx *f = *state;
    response r;

    /*
     * Was a bug, fixed with this test: gateway/http.c:91 (respond_error with json_escape) copies bytes
     * of the request into the error message as they are, and cuts them with
     * "%.100s"/"%.40s" (http.c:630, 468, 150) at any byte. A path with a
     * byte that is not UTF-8, or a long UTF-8 path cut inside a character,
     * gives an answer that is not JSON text (RFC 8259 8.1: UTF-8), which
     * strict clients refuse to parse. Such bytes should be replaced by
     * U+FFFD and cuts made on character boundaries.
     */
    /* "/" and 60 two-byte characters: "%.100s" cuts the 50th in half. */
    char path[256] = "/";
    for (int i = 0; i < 60; i++)
        strcat(path, "\xc3\xa9");
    post(f, path, CE_JSON, "{}", &r);
    assert_int_equal(r.status, 404);
    if (!utf8_valid(r.body, r.body_len))
        fail_msg("the 404 answer is not UTF-8");
    resp_free(&r);
    post(f, "/\xff\xfe", CE_JSON, "{}", &r);
    assert_int_equal(r.status, 404);
    if (!utf8_valid(r.body, r.body_len))
        fail_msg("the 404 answer is not UTF-8");
    resp_free(&r);
}

static void test_ack_selection(void **state)
{
    hfx *f = *state;
    response r;
    produce_msg *m[1];
    const char *ev = "{\"source\":\"/s\",\"type\":\"t\"}";
    static const struct {
        const char *target, *headers;
    } accepted[] = {
        {"/v1/events?ack=accepted", CE_JSON},
        {"/v1/events?ack=ACCEPTED", CE_JSON},
        {"/v1/events?x=1&ack=accepted&y=2", CE_JSON},
        {"/v1/events", CE_JSON "Ingest-Ack: accepted\r\n"},
        {"/v1/events", CE_JSON "ingest-ack: Accepted\r\n"},
        /* The query wins over the header. */
        {"/v1/events?ack=accepted", CE_JSON "Ingest-Ack: committed\r\n"},
    };

    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        post(f, accepted[i].target, accepted[i].headers, ev, &r);
        if (r.status != 202)
            fail_msg("%d for %s %s", r.status, accepted[i].target, accepted[i].headers);
        resp_free(&r);
        take(f, m, 1);
        assert_null(m[0]->wait);
        free_msgs(m, 1);
    }
    /* "back=" is not "ack=": the default (committed) holds, and the record waits. */
    client *c = cli_open(f);
    post_on(c, "/v1/events?back=accepted", CE_JSON, ev, strlen(ev));
    take(f, m, 1);
    assert_non_null(m[0]->wait);
    ack_wait_report(m[0]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    free_msgs(m, 1);
    assert_int_equal(cli_read(c, &r), 0);
    expect_ok(&r, 200, 1, NULL);
    resp_free(&r);
    cli_close(c);
}

static void test_keep_alive_across_errors(void **state)
{
    hfx *f = *state;
    client *c = cli_open(f);
    response r;
    produce_msg *m[1];
    const char *ev = "{\"source\":\"/s\",\"type\":\"t\"}";

    /* 4xx answers keep the connection: a client goes on with its next request. */
    post_on(c, "/nope", CE_JSON, ev, strlen(ev));
    assert_int_equal(cli_read(c, &r), 0);
    expect_error(&r, 404, "not_found", -1);
    resp_free(&r);
    post_on(c, ACCEPTED, CE_JSON, "{", 1);
    assert_int_equal(cli_read(c, &r), 0);
    expect_error(&r, 400, "malformed_json", -1);
    resp_free(&r);
    post_on(c, ACCEPTED, CE_JSON, ev, strlen(ev));
    assert_int_equal(cli_read(c, &r), 0);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    free_msgs(m, 1);
    cli_close(c);
}

/* ---------------------------------------------------------------------------------------------- */
/* Back-pressure and shutdown                                                                     */
/* ---------------------------------------------------------------------------------------------- */

static void test_overloaded(void **state)
{
    hfx *f = *state;
    response r;
    char batch[1024];

    int n = sprintf(batch, "[");
    for (int i = 0; i < 8; i++)
        n += sprintf(batch + n, "%s{\"source\":\"/s\",\"type\":\"t\"}", i ? "," : "");
    sprintf(batch + n, "]");
    /* Up to the high-water mark (32): accepted. */
    for (int i = 0; i < 4; i++) {
        post(f, ACCEPTED, CE_BATCH, batch, &r);
        expect_ok(&r, 202, 8, NULL);
        resp_free(&r);
    }
    assert_int_equal(queue_depth(f->gw.q), 32);
    /* At it: 429 with Retry-After, nothing more queued. */
    post(f, ACCEPTED, CE_JSON, "{\"source\":\"/s\",\"type\":\"t\"}", &r);
    expect_error(&r, 429, "overloaded", -1);
    resp_free(&r);
    /* Committed requests too (and nothing is left waiting). */
    post(f, "/v1/events", CE_JSON, "{\"source\":\"/s\",\"type\":\"t\"}", &r);
    expect_error(&r, 429, "overloaded", -1);
    resp_free(&r);
    assert_int_equal(queue_depth(f->gw.q), 32);
    assert_int_equal(pending_front(f), 0);

    /* Drained below the mark: accepted again. */
    produce_msg *m[32];
    take(f, m, 32);
    free_msgs(m, 32);
    post(f, ACCEPTED, CE_JSON, "{\"source\":\"/s\",\"type\":\"t\"}", &r);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    free_msgs(m, 1);
}

/*
 * Above the high-water mark a request waits for room, unread beyond itself,
 * for --http-overload-wait: taken as soon as the queue drains, refused 429
 * only when no room comes in time. Meanwhile its connection reads nothing.
 */
static void test_overloaded_waits_for_room(void **state)
{
    hfx *f = *state;
    response r;
    produce_msg *m[33];
    char batch[1024];

    int n = sprintf(batch, "[");
    for (int i = 0; i < 8; i++)
        n += sprintf(batch + n, "%s{\"source\":\"/s\",\"type\":\"t\"}", i ? "," : "");
    sprintf(batch + n, "]");
    for (int i = 0; i < 4; i++) {
        post(f, ACCEPTED, CE_BATCH, batch, &r);
        expect_ok(&r, 202, 8, NULL);
        resp_free(&r);
    }
    /* At the mark: the request is held, not answered. */
    client *c = cli_open(f);
    post_on(c, ACCEPTED, CE_JSON, EV, strlen(EV));
    assert_true(wait_pending(f, 1));
    assert_true(cli_quiet(c, 300));
    assert_int_equal(queue_depth(f->gw.q), 32);
    /* Room: it goes in, and is answered. */
    take(f, m, 32);
    free_msgs(m, 32);
    assert_int_equal(cli_read(c, &r), 0);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    assert_int_equal(pending_front(f), 0);
    take(f, m, 1);
    free_msgs(m, 1);
    cli_close(c);

    /* No room in time: 429 after the wait, with nothing queued. */
    for (int i = 0; i < 4; i++) {
        post(f, ACCEPTED, CE_BATCH, batch, &r);
        expect_ok(&r, 202, 8, NULL);
        resp_free(&r);
    }
    int64_t t0 = now_ns();
    post(f, ACCEPTED, CE_JSON, EV, &r);
    expect_error(&r, 429, "overloaded", -1);
    assert_true(now_ns() - t0 >= 2900LL * 1000000);
    resp_free(&r);
    assert_int_equal(queue_depth(f->gw.q), 32);
    assert_int_equal(pending_front(f), 0);
    take(f, m, 32);
    free_msgs(m, 32);
}

static void test_queue_full(void **state)
{
    hfx *f = *state;
    response r;
    produce_msg *m[10];
    char batch[1024];

    /* Capacity 10, high-water 8. Seven queued: below the mark, yet a batch of five does not fit. */
    int n = sprintf(batch, "[");
    for (int i = 0; i < 7; i++)
        n += sprintf(batch + n, "%s{\"source\":\"/s\",\"type\":\"t\"}", i ? "," : "");
    sprintf(batch + n, "]");
    post(f, ACCEPTED, CE_BATCH, batch, &r);
    expect_ok(&r, 202, 7, NULL);
    resp_free(&r);
    n = sprintf(batch, "[");
    for (int i = 0; i < 5; i++)
        n += sprintf(batch + n, "%s{\"source\":\"/s\",\"type\":\"t\"}", i ? "," : "");
    sprintf(batch + n, "]");
    post(f, ACCEPTED, CE_BATCH, batch, &r);
    expect_error(&r, 429, "overloaded", -1);
    resp_free(&r);
    /* All or nothing: the seven are there, none of the five. */
    take(f, m, 7);
    free_msgs(m, 7);
}

static void test_shutting_down(void **state)
{
    hfx *f = *state;
    response r;

    atomic_store(&f->gw.stopping, 1);
    post(f, ACCEPTED, CE_JSON, "{\"source\":\"/s\",\"type\":\"t\"}", &r);
    expect_error(&r, 503, "shutting_down", -1);
    resp_free(&r);
    post(f, "/v1/events", CE_JSON, "{\"source\":\"/s\",\"type\":\"t\"}", &r);
    expect_error(&r, 503, "shutting_down", -1);
    resp_free(&r);
    assert_int_equal(queue_depth(f->gw.q), 0);

    /* The queue closed under a request that passed the flag: 503 too, not 429, not 500. */
    atomic_store(&f->gw.stopping, 0);
    queue_close(f->gw.q);
    post(f, ACCEPTED, CE_JSON, "{\"source\":\"/s\",\"type\":\"t\"}", &r);
    expect_error(&r, 503, "shutting_down", -1);
    resp_free(&r);
    post(f, "/v1/events", CE_JSON, "{\"source\":\"/s\",\"type\":\"t\"}", &r);
    expect_error(&r, 503, "shutting_down", -1);
    resp_free(&r);
    assert_int_equal(pending_front(f), 0);
}

/* ---------------------------------------------------------------------------------------------- */
/* ack=committed                                                                                  */
/* ---------------------------------------------------------------------------------------------- */

static void test_committed(void **state)
{
    hfx *f = *state;
    client *c = cli_open(f);
    response r;
    produce_msg *m[2];
    char ids[2][64];
    const char *body =
        "[{\"id\":\"c-0\",\"source\":\"/s\",\"type\":\"t\"},{\"source\":\"/s\",\"type\":\"t\"}]";

    /* committed is the default. */
    post_on(c, "/v1/events", CE_BATCH, body, strlen(body));
    take(f, m, 2);
    /* One wait for the request, on each of its records. */
    assert_non_null(m[0]->wait);
    assert_ptr_equal(m[0]->wait, m[1]->wait);
    assert_true(wait_pending(f, 1));
    /* Queued is not enough: no answer before Kafka's. */
    assert_true(cli_quiet(c, 100));
    ack_wait_report(m[0]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_true(cli_quiet(c, 50));
    ack_wait_report(m[1]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(cli_read(c, &r), 0);
    expect_ok(&r, 200, 2, ids);
    assert_string_equal(ids[0], "c-0");
    assert_string_equal(ids[1], m[1]->ce_id);
    resp_free(&r);
    free_msgs(m, 2);
    assert_true(wait_pending(f, 0));

    /* The connection goes on. */
    post_on(c, "/v1/events?ack=committed", CE_JSON, EV, strlen(EV));
    take(f, m, 1);
    ack_wait_report(m[0]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    free_msgs(m, 1);
    assert_int_equal(cli_read(c, &r), 0);
    expect_ok(&r, 200, 1, NULL);
    resp_free(&r);
    cli_close(c);
}

static void test_committed_kafka_error(void **state)
{
    hfx *f = *state;
    client *c = cli_open(f);
    response r;
    produce_msg *m[3];
    const char *body = "[{\"source\":\"/s\",\"type\":\"t\"},{\"source\":\"/"
                       "s\",\"type\":\"t\"},{\"source\":\"/s\",\"type\":\"t\"}]";

    post_on(c, "/v1/events", CE_BATCH, body, strlen(body));
    take(f, m, 3);
    ack_wait_report(m[0]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    ack_wait_report(m[1]->wait, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    ack_wait_report(m[2]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    free_msgs(m, 3);
    assert_int_equal(cli_read(c, &r), 0);
    expect_error(&r, 503, "kafka_error", -1);
    assert_non_null(strstr(error_message(&r), rd_kafka_err2str(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT)));
    resp_free(&r);
    assert_true(wait_pending(f, 0));
    /* 503 keeps the connection: the client may retry on it. */
    post_on(c, ACCEPTED, CE_JSON, EV, strlen(EV));
    assert_int_equal(cli_read(c, &r), 0);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    free_msgs(m, 1);
    cli_close(c);
}

static void test_committed_too_large_for_kafka(void **state)
{
    hfx *f = *state;
    client *c = cli_open(f);
    response r;
    produce_msg *m[3];
    const char *body = "[{\"source\":\"/s\",\"type\":\"t\"},{\"source\":\"/"
                       "s\",\"type\":\"t\"},{\"source\":\"/s\",\"type\":\"t\"}]";

    /* One record the topic will never take, another failed for a while: 413, not a 503 to retry forever. */
    post_on(c, "/v1/events", CE_BATCH, body, strlen(body));
    take(f, m, 3);
    ack_wait_report(m[0]->wait, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    ack_wait_report_too_large(m[1]->wait, 1234567, 1048588);
    ack_wait_report(m[2]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    free_msgs(m, 3);
    assert_int_equal(cli_read(c, &r), 0);
    expect_error(&r, 413, "too_large", -1);
    assert_non_null(strstr(error_message(&r), "too large for the Kafka topic (its record is 1234567 bytes"));
    assert_non_null(strstr(error_message(&r), "more than the 1048588 it takes"));
    resp_free(&r);
    assert_true(wait_pending(f, 0));
    cli_close(c);
}

static void test_committed_timeout(void **state)
{
    hfx *f = *state;
    client *c = cli_open(f);
    response r;
    produce_msg *m[2];
    const char *body = "[{\"source\":\"/s\",\"type\":\"t\"},{\"source\":\"/s\",\"type\":\"t\"}]";

    /* No report within ack_timeout_ms (100): 503, the events may still arrive. */
    post_on(c, "/v1/events", CE_BATCH, body, strlen(body));
    take(f, m, 2);
    assert_int_equal(cli_read(c, &r), 0);
    expect_error(&r, 503, "ack_timeout", -1);
    assert_non_null(strstr(error_message(&r), "retry"));
    resp_free(&r);
    assert_true(wait_pending(f, 0));

    /* The reports come late: nobody is answered twice, nothing is used after it is gone. */
    ack_wait_report(m[0]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    ack_wait_report(m[1]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    free_msgs(m, 2);
    on_loop(f, NULL, NULL);
    assert_true(cli_quiet(c, 50));

    /* The connection is still good. */
    post_on(c, ACCEPTED, CE_JSON, EV, strlen(EV));
    assert_int_equal(cli_read(c, &r), 0);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    free_msgs(m, 1);

    /* One report before the timeout, the other after. */
    post_on(c, "/v1/events", CE_BATCH, body, strlen(body));
    take(f, m, 2);
    ack_wait_report(m[0]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(cli_read(c, &r), 0);
    expect_error(&r, 503, "ack_timeout", -1);
    resp_free(&r);
    ack_wait_report(m[1]->wait, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    free_msgs(m, 2);
    on_loop(f, NULL, NULL);
    assert_true(cli_quiet(c, 50));
    cli_close(c);
}

static void test_committed_client_gone(void **state)
{
    hfx *f = *state;
    client *c = cli_open(f);
    produce_msg *m[2];
    const char *body = "[{\"source\":\"/s\",\"type\":\"t\"},{\"source\":\"/s\",\"type\":\"t\"}]";

    post_on(c, "/v1/events", CE_BATCH, body, strlen(body));
    take(f, m, 2);
    assert_true(wait_pending(f, 1));
    /* The client goes while its events are on their way to Kafka: the request is forgotten... */
    cli_close(c);
    assert_true(wait_pending(f, 0));
    /* ...and the reports that come after find nobody to answer, safely. */
    ack_wait_report(m[0]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    ack_wait_report(m[1]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    free_msgs(m, 2);
    on_loop(f, NULL, NULL);

    /* The same with the reports in before the client goes, and its answer never read. */
    c = cli_open(f);
    post_on(c, "/v1/events", CE_BATCH, body, strlen(body));
    take(f, m, 2);
    ack_wait_report(m[0]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    ack_wait_report(m[1]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    free_msgs(m, 2);
    cli_close(c);
    assert_true(wait_pending(f, 0));
}

static void test_committed_pipelined(void **state)
{
    hfx *f = *state;
    client *c = cli_open(f);
    response r;
    produce_msg *m[1];
    char ids[1][64];

    /* Two committed requests in one write: one at a time, answered in order. */
    char two[512];
    const char *e1 = "{\"id\":\"p-1\",\"source\":\"/s\",\"type\":\"t\"}",
               *e2 = "{\"id\":\"p-2\",\"source\":\"/s\",\"type\":\"t\"}";
    int n = snprintf(two, sizeof(two),
                     "POST /v1/events HTTP/1.1\r\nHost: t\r\n" CE_JSON "Content-Length: %zu\r\n\r\n%s"
                     "POST /v1/events HTTP/1.1\r\nHost: t\r\n" CE_JSON "Content-Length: %zu\r\n\r\n%s",
                     strlen(e1), e1, strlen(e2), e2);
    cli_send(c, two, (size_t)n);
    take(f, m, 1);
    assert_string_equal(m[0]->ce_id, "p-1");
    /* The second is not taken before the first is answered. */
    usleep(50 * 1000);
    assert_int_equal(queue_depth(f->gw.q), 0);
    ack_wait_report(m[0]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    free_msgs(m, 1);
    assert_int_equal(cli_read(c, &r), 0);
    expect_ok(&r, 200, 1, ids);
    assert_string_equal(ids[0], "p-1");
    resp_free(&r);

    take(f, m, 1);
    assert_string_equal(m[0]->ce_id, "p-2");
    ack_wait_report(m[0]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    free_msgs(m, 1);
    assert_int_equal(cli_read(c, &r), 0);
    expect_ok(&r, 200, 1, ids);
    assert_string_equal(ids[0], "p-2");
    resp_free(&r);
    cli_close(c);
}

static void test_stop_accepting(void **state)
{
    hfx *f = *state;
    client *c = cli_open(f);
    response r;
    produce_msg *m[1];

    /* A connection accepted before, for sure: it has had an answer. */
    post_on(c, ACCEPTED, CE_JSON, EV, strlen(EV));
    assert_int_equal(cli_read(c, &r), 0);
    resp_free(&r);
    take(f, m, 1);
    free_msgs(m, 1);

    /*
     * From the test thread, as main.c does from its own. It runs on the loop:
     * two round trips there make sure it has (the first may share its turn).
     */
    gw_http_loop_stop_accepting(f->front);
    on_loop(f, NULL, NULL);
    on_loop(f, NULL, NULL);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), -1);
    assert_int_equal(errno, ECONNREFUSED);
    close(fd);

    /* The connection in progress goes on. */
    post_on(c, ACCEPTED, CE_JSON, EV, strlen(EV));
    assert_int_equal(cli_read(c, &r), 0);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    free_msgs(m, 1);
    cli_close(c);
}

/* main.c's stop: loop stopped, front closed (waiting requests aborted), the last reports, then free. */
static void test_close_with_requests_waiting(void **state)
{
    hfx *f = *state;
    client *c[3];
    produce_msg *m[3];
    const char *ev = "{\"source\":\"/s\",\"type\":\"t\"}";

    for (int i = 0; i < 3; i++) {
        c[i] = cli_open(f);
        post_on(c[i], "/v1/events", CE_JSON, ev, strlen(ev));
        take(f, m + i, 1);
    }
    assert_true(wait_pending(f, 3));
    /* One completes before the stop: its done() is posted but not yet run. */
    ack_wait_report(m[0]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    fx_stop_loop(f);
    gw_http_loop_close(f->front);
    assert_int_equal(gw_http_loop_pending(f->front), 0);
    /* The others complete after the close: as the producer's purge would report them. */
    ack_wait_report(m[1]->wait, RD_KAFKA_RESP_ERR__PURGE_QUEUE);
    ack_wait_report(m[2]->wait, RD_KAFKA_RESP_ERR_NO_ERROR);
    free_msgs(m, 3);
    /* Freeing the front runs the posted waits (ASan sees each freed once); the base closes the sockets. */
    gw_http_loop_free(f->front);
    f->front = NULL;
    event_base_free(f->base);
    f->base = NULL;
    for (int i = 0; i < 3; i++) {
        assert_true(cli_closed(c[i]));
        cli_close(c[i]);
    }
}

static void test_trailing_blank_in_header(void **state)
{
    hfx *f = *state;
    response r;
    produce_msg *m[1];

    /*
     * Was a bug, fixed with this test: the trailing-blank bug of gateway/gw_http_server.c:188 (see
     * test_http_server.c, test_header_value_trailing_blanks) as a client
     * sees it: "Ingest-Ack: accepted " is refused 400 and
     * "Content-Encoding: gzip " 415, where the blank is not part of the
     * value (RFC 9110 5.5).
     */
    post(f, "/v1/events", CE_JSON "Ingest-Ack: accepted \r\n", "{\"source\":\"/s\",\"type\":\"t\"}", &r);
    expect_ok(&r, 202, 1, NULL);
    resp_free(&r);
    take(f, m, 1);
    free_msgs(m, 1);
}

int main(void)
{
    evthread_use_pthreads();
    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_LEVEL_ERROR);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_structured_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_structured_id_assigned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_application_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ndjson, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_json_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_missing_attributes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gzip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gzip_bad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_method_not_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth, setup_auth, teardown),
        cmocka_unit_test_setup_teardown(test_cors_preflight, setup_cors_auth, teardown),
        cmocka_unit_test_setup_teardown(test_webhook_handshake, setup_cors_auth, teardown),
        cmocka_unit_test_setup_teardown(test_unsupported_media_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_messages_are_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_messages_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_selection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_across_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overloaded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overloaded_waits_for_room, setup_overload_wait, teardown),
        cmocka_unit_test_setup_teardown(test_queue_full, setup_small_queue, teardown),
        cmocka_unit_test_setup_teardown(test_shutting_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_committed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_committed_too_large_for_kafka, setup, teardown),
        cmocka_unit_test_setup_teardown(test_committed_kafka_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_committed_timeout, setup_short_ack, teardown),
        cmocka_unit_test_setup_teardown(test_committed_client_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_committed_pipelined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_accepting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_requests_waiting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trailing_blank_in_header, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
