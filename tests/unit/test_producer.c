/*
 * gateway/producer: the way back from librdkafka's delivery reports to the
 * request that waits (ack_wait, ack_inbox), the Kafka record a queued event
 * becomes (produce_msg), and the producer itself against librdkafka's mock
 * cluster: an in-process Kafka that speaks the real protocol, so
 * idempotence, acks=all, delivery reports, failures and timeouts are
 * librdkafka's own, with no broker to run.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "envelope.h"
#include "event.h"
#include "log.h"
#include "producer.h"
#include "queue.h"

/* With the broker down on purpose, librdkafka's connection errors are expected: not logged. */
#define QUIET "log_level", "2"

/* The Kafka protocol's ProduceRequest key (librdkafka's RD_KAFKAP_Produce is not in its public headers). */
#define API_PRODUCE 0

static ing_event_limits lim;

/* ---------------------------------------------------------------------------------------------- */
/* Waiting for done() on a loop                                                                   */
/* ---------------------------------------------------------------------------------------------- */

typedef struct waiter {
    atomic_int calls;
    atomic_int error;
    atomic_size_t too_large, too_large_limit; /* the wait's, when done() ran */
    pthread_t thread;                         /* where done() ran */
    int order[8];                             /* ids of waits in the order their done() ran */
    int n_order;
} waiter;

typedef struct tagged {
    waiter *x;
    int id;
} tagged;

static void done_cb(ack_wait *w)
{
    waiter *x = w->ctx;
    x->thread = pthread_self();
    atomic_store(&x->error, atomic_load(&w->error));
    atomic_store(&x->too_large, atomic_load(&w->too_large));
    atomic_store(&x->too_large_limit, atomic_load(&w->too_large_limit));
    atomic_fetch_add(&x->calls, 1);
    ack_wait_free(w);
}

static void done_tagged(ack_wait *w)
{
    tagged *t = w->ctx;
    if (t->x->n_order < 8)
        t->x->order[t->x->n_order++] = t->id;
    atomic_fetch_add(&t->x->calls, 1);
    ack_wait_free(w);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run `base` on this thread until x->calls reaches `want` (bounded, so a broken producer fails, not hangs).
 */
static int loop_until(struct event_base *base, waiter *x, int want, int limit_ms)
{
    long long end = now_ms() + limit_ms;

    while (atomic_load(&x->calls) < want && now_ms() < end) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
    return atomic_load(&x->calls) >= want;
}

/* ---------------------------------------------------------------------------------------------- */
/* ack_wait and ack_inbox                                                                         */
/* ---------------------------------------------------------------------------------------------- */

static void test_ack_wait_counting(void **state)
{
    struct event_base *base = event_base_new();
    ack_inbox *inbox = ack_inbox_new(base);
    waiter x = {0};
    (void)state;

    assert_non_null(inbox);
    ack_wait *w = ack_wait_new(3, inbox, done_cb, &x);
    assert_non_null(w);
    assert_int_equal(atomic_load(&w->remaining), 3);
    assert_ptr_equal(w->ctx, &x);

    ack_wait_report(w, RD_KAFKA_RESP_ERR_NO_ERROR);
    ack_wait_report(w, RD_KAFKA_RESP_ERR_NO_ERROR);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(atomic_load(&x.calls), 0);

    /* The last report posts the wait; done() runs on the loop, not inside the report. */
    ack_wait_report(w, RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(atomic_load(&x.calls), 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(atomic_load(&x.calls), 1);
    assert_int_equal(atomic_load(&x.error), 0);
    assert_true(pthread_equal(x.thread, pthread_self()));

    /* Once only. */
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(atomic_load(&x.calls), 1);
    ack_inbox_free(inbox);
    event_base_free(base);
}

static void test_ack_wait_first_error_kept(void **state)
{
    struct event_base *base = event_base_new();
    ack_inbox *inbox = ack_inbox_new(base);
    waiter x = {0};
    (void)state;

    ack_wait *w = ack_wait_new(4, inbox, done_cb, &x);
    ack_wait_report(w, RD_KAFKA_RESP_ERR_NO_ERROR);
    ack_wait_report(w, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    ack_wait_report(w, RD_KAFKA_RESP_ERR_NO_ERROR);
    ack_wait_report(w, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(atomic_load(&x.calls), 1);
    assert_int_equal(atomic_load(&x.error), RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    ack_inbox_free(inbox);
    event_base_free(base);
}

/* Reports from many threads at once (librdkafka's), done() once on the loop's thread. */
#define REPORTERS    4
#define PER_REPORTER 2000

typedef struct reporter {
    ack_wait *w;
    int fail_at; /* report this one as an error; -1: none */
} reporter;

static void *report_main(void *arg)
{
    reporter *r = arg;
    for (int i = 0; i < PER_REPORTER; i++)
        ack_wait_report(r->w,
                        i == r->fail_at ? RD_KAFKA_RESP_ERR__MSG_TIMED_OUT : RD_KAFKA_RESP_ERR_NO_ERROR);
    return NULL;
}

static void test_ack_wait_too_large_wins(void **state)
{
    waiter x = {0};
    ack_wait *w = ack_wait_new(4, NULL, done_cb, &x);
    char text[256];
    (void)state;

    /* Whatever failed first, a record Kafka can never take decides: no retry would help. */
    ack_wait_report(w, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    ack_wait_report_too_large(w, 5000, 4096);
    ack_wait_report_too_large(w, 7000, 0); /* the first one's figures stay */
    ack_wait_report(w, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
    assert_int_equal(atomic_load(&x.calls), 1);
    assert_int_equal(atomic_load(&x.error), RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    assert_int_equal(atomic_load(&x.too_large), 5000);
    assert_int_equal(atomic_load(&x.too_large_limit), 4096);
    ack_wait_too_large_text(5000, 4096, text, sizeof(text));
    assert_non_null(strstr(text, "too large for the Kafka topic (its record is 5000 bytes"));
    assert_non_null(strstr(text, "more than the 4096 it takes"));
    ack_wait_too_large_text(5000, 0, text, sizeof(text));
    assert_null(strstr(text, "it takes"));
}

static void test_max_message_bytes(void **state)
{
    (void)state;
    size_t env = envelope_max_size(1 << 20, 64, 128, 4);
    size_t rec = producer_max_message_bytes(1 << 20, 64, "gw-1");

    /* The Envelope, then the key and headers again (the subject may be the key): twice the event. */
    assert_true(rec > env + (1 << 20));
    assert_true(rec < env + (1 << 20) + 4096);
    assert_true(producer_max_message_bytes(1 << 20, 64, "a-longer-gateway-id") > rec);
    assert_true(producer_max_message_bytes(4096, 64, "gw-1") < 16384);
}

static void test_ack_wait_threads(void **state)
{
    struct event_base *base = event_base_new();
    ack_inbox *inbox = ack_inbox_new(base);
    pthread_t t[REPORTERS];
    reporter r[REPORTERS];
    (void)state;

    for (int round = 0; round < 2; round++) {
        waiter x = {0};
        ack_wait *w = ack_wait_new(REPORTERS * PER_REPORTER, inbox, done_cb, &x);
        for (int i = 0; i < REPORTERS; i++) {
            /* Second round: one report in thousands fails, and that must not be lost. */
            r[i] = (reporter){.w = w, .fail_at = round == 1 && i == 2 ? PER_REPORTER / 2 : -1};
            assert_int_equal(pthread_create(&t[i], NULL, report_main, &r[i]), 0);
        }
        for (int i = 0; i < REPORTERS; i++)
            pthread_join(t[i], NULL);
        assert_true(loop_until(base, &x, 1, 5000));
        event_base_loop(base, EVLOOP_NONBLOCK);
        assert_int_equal(atomic_load(&x.calls), 1);
        assert_true(pthread_equal(x.thread, pthread_self()));
        assert_int_equal(atomic_load(&x.error), round == 0 ? 0 : RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    }
    ack_inbox_free(inbox);
    event_base_free(base);
}

/*
 * Without an inbox (gRPC's waits): done() runs once, at once, on the thread
 * that counted the last report, whichever of the reporters that is, and a
 * failure among thousands of reports is still the one it sees.
 */
static void test_ack_wait_direct_threads(void **state)
{
    pthread_t t[REPORTERS];
    reporter r[REPORTERS];
    (void)state;

    for (int round = 0; round < 2; round++) {
        waiter x = {0};
        ack_wait *w = ack_wait_new(REPORTERS * PER_REPORTER, NULL, done_cb, &x);
        for (int i = 0; i < REPORTERS; i++) {
            r[i] = (reporter){.w = w, .fail_at = round == 1 && i == 1 ? PER_REPORTER - 1 : -1};
            assert_int_equal(pthread_create(&t[i], NULL, report_main, &r[i]), 0);
        }
        for (int i = 0; i < REPORTERS; i++)
            pthread_join(t[i], NULL);
        /* Every reporter has returned: done() ran already, inside one of them. */
        assert_int_equal(atomic_load(&x.calls), 1);
        int on_reporter = 0;
        for (int i = 0; i < REPORTERS; i++)
            on_reporter |= pthread_equal(x.thread, t[i]) != 0;
        assert_true(on_reporter);
        assert_int_equal(atomic_load(&x.error), round == 0 ? 0 : RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    }
}

/* A direct wait's done() does not run before its last report, and runs on the caller's thread then. */
static void test_ack_wait_direct_last_report(void **state)
{
    waiter x = {0};
    (void)state;

    ack_wait *w = ack_wait_new(2, NULL, done_cb, &x);
    ack_wait_report(w, RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(atomic_load(&x.calls), 0);
    ack_wait_report(w, RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(atomic_load(&x.calls), 1);
    assert_true(pthread_equal(x.thread, pthread_self()));
    assert_int_equal(atomic_load(&x.error), 0);
}

/* With the loop on its own thread, a report from another thread wakes it, and done() runs there. */
typedef struct loop_thread {
    struct event_base *base;
    pthread_t tid;
} loop_thread;

static void *loop_main(void *arg)
{
    loop_thread *l = arg;
    event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void test_ack_inbox_wakes_loop(void **state)
{
    loop_thread l = {.base = event_base_new()};
    ack_inbox *inbox = ack_inbox_new(l.base);
    waiter x = {0};
    (void)state;

    assert_int_equal(pthread_create(&l.tid, NULL, loop_main, &l), 0);
    ack_wait *w = ack_wait_new(2, inbox, done_cb, &x);
    ack_wait_report(w, RD_KAFKA_RESP_ERR_NO_ERROR);
    ack_wait_report(w, RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int i = 0; i < 5000 && atomic_load(&x.calls) == 0; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&x.calls), 1);
    event_base_loopbreak(l.base);
    pthread_join(l.tid, NULL);
    assert_true(pthread_equal(x.thread, l.tid));
    ack_inbox_free(inbox);
    event_base_free(l.base);
}

static void test_ack_inbox_order(void **state)
{
    struct event_base *base = event_base_new();
    ack_inbox *inbox = ack_inbox_new(base);
    waiter x = {0};
    tagged t[3] = {{&x, 1}, {&x, 2}, {&x, 3}};
    (void)state;

    ack_wait *w1 = ack_wait_new(1, inbox, done_tagged, &t[0]);
    ack_wait *w2 = ack_wait_new(1, inbox, done_tagged, &t[1]);
    ack_wait *w3 = ack_wait_new(1, inbox, done_tagged, &t[2]);
    /* Completed in the order 2, 1, 3: answered in that order, the oldest completion first. */
    ack_wait_report(w2, RD_KAFKA_RESP_ERR_NO_ERROR);
    ack_wait_report(w1, RD_KAFKA_RESP_ERR_NO_ERROR);
    ack_wait_report(w3, RD_KAFKA_RESP_ERR_NO_ERROR);
    ack_inbox_drain(inbox);
    assert_int_equal(atomic_load(&x.calls), 3);
    assert_int_equal(x.order[0], 2);
    assert_int_equal(x.order[1], 1);
    assert_int_equal(x.order[2], 3);
    /* Drained: the loop has nothing more to run. */
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(atomic_load(&x.calls), 3);
    ack_inbox_drain(inbox);
    ack_inbox_free(inbox);
    ack_inbox_free(NULL);
    ack_wait_free(NULL);
    event_base_free(base);
}

/* ---------------------------------------------------------------------------------------------- */
/* produce_msg                                                                                    */
/* ---------------------------------------------------------------------------------------------- */

static void set(ing_event *ev, const char *name, const char *value)
{
    ing_event_error err;
    if (ing_event_set_attr(ev, name, strlen(name), value, strlen(value), &lim, &err) != 0)
        fail_msg("%s: %s", name, err.message);
}

/* A validated event with an id; "name=value" pairs for the rest. */
static void make_event(ing_event *ev, const char *id, const char *const *attrs)
{
    ing_event_error err;

    ing_event_init(ev);
    if (id)
        set(ev, "id", id);
    set(ev, "source", "/sensors/7");
    set(ev, "type", "com.example.reading");
    for (; attrs && *attrs; attrs += 2)
        set(ev, attrs[0], attrs[1]);
    if (ing_event_validate(ev, &lim, -1, &err) != 0)
        fail_msg("invalid: %s", err.message);
    assert_int_equal(ing_event_assign_id(ev), 0);
}

static const char *attr_string(const Ingest__V1__CloudEvent *ce, const char *key)
{
    for (size_t i = 0; i < ce->n_attributes; i++)
        if (strcmp(ce->attributes[i]->key, key) == 0)
            return ce->attributes[i]->value->ce_string;
    return NULL;
}

static void test_produce_msg_fields(void **state)
{
    ing_event ev;
    static const char *const attrs[] = {"subject", "room-1", "tenant", "acme", NULL};
    (void)state;

    make_event(&ev, "ev-1", attrs);
    unsigned char *data = (unsigned char *)strdup("{\"t\":21.5}");
    ing_event_set_data(&ev, EVENT_DATA_JSON, data, strlen((char *)data));
    ack_wait *w = ack_wait_new(1, NULL, done_cb, NULL);

    produce_msg *m =
        produce_msg_new(&ev, 1700000000123456789LL, ENVELOPE_HTTP, "10.0.0.9:5555", "gw-a", "billing", w);
    assert_non_null(m);
    assert_ptr_equal(m->wait, w);
    assert_string_equal(m->ce_id, "ev-1");
    assert_string_equal(m->ce_source, "/sensors/7");
    assert_string_equal(m->ce_type, "com.example.reading");
    assert_string_equal(m->key, "room-1");
    /* The strings are the message's own: the event may go. */
    ing_event_clear(&ev);
    assert_string_equal(m->ce_id, "ev-1");

    Ingest__V1__Envelope *env = envelope_decode(m->value, m->value_len);
    assert_non_null(env);
    assert_int_equal(env->received_unix_nanos, 1700000000123456789LL);
    assert_int_equal(env->protocol, INGEST__V1__PROTOCOL__PROTOCOL_HTTP);
    assert_string_equal(env->peer, "10.0.0.9:5555");
    assert_string_equal(env->gateway_id, "gw-a");
    assert_string_equal(env->principal, "billing");
    assert_non_null(env->event);
    assert_string_equal(env->event->id, "ev-1");
    assert_string_equal(env->event->source, "/sensors/7");
    assert_string_equal(env->event->type, "com.example.reading");
    assert_string_equal(attr_string(env->event, "subject"), "room-1");
    assert_string_equal(attr_string(env->event, "tenant"), "acme");
    assert_int_equal(env->event->data_case, INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA);
    assert_string_equal(env->event->text_data, "{\"t\":21.5}");
    envelope_free(env);
    produce_msg_free(m);
    ack_wait_free(w);
    produce_msg_free(NULL);
}

static void test_produce_msg_key_choice(void **state)
{
    static const char *const none[] = {NULL};
    static const char *const subject[] = {"subject", "sub-9", NULL};
    static const char *const both[] = {"subject", "sub-9", "partitionkey", "pk-3", NULL};
    static const char *const pk_only[] = {"partitionkey", "pk-4", NULL};
    static const struct {
        const char *const *attrs;
        const char *key;
    } cases[] = {{none, "/sensors/7"}, {subject, "sub-9"}, {both, "pk-3"}, {pk_only, "pk-4"}};
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ing_event ev;
        make_event(&ev, NULL, cases[i].attrs);
        produce_msg *m = produce_msg_new(&ev, 1, ENVELOPE_UDP, NULL, NULL, NULL, NULL);
        assert_non_null(m);
        assert_string_equal(m->key, cases[i].key);
        assert_null(m->wait);
        /* The id the gateway assigned travels as the header and in the Envelope. */
        assert_int_equal(strlen(m->ce_id), EVENT_ID_LEN);
        assert_string_equal(m->ce_id, ev.id);
        Ingest__V1__Envelope *env = envelope_decode(m->value, m->value_len);
        assert_non_null(env);
        assert_string_equal(env->event->id, ev.id);
        assert_int_equal(env->protocol, INGEST__V1__PROTOCOL__PROTOCOL_UDP);
        envelope_free(env);
        produce_msg_free(m);
        ing_event_clear(&ev);
    }
}

static void test_produce_msg_binary_data(void **state)
{
    ing_event ev;
    static const char *const attrs[] = {"datacontenttype", "application/octet-stream", NULL};
    unsigned char bytes[] = {0, 1, 2, 0xff, 0};
    (void)state;

    make_event(&ev, "b-1", attrs);
    unsigned char *data = malloc(sizeof(bytes));
    memcpy(data, bytes, sizeof(bytes));
    ing_event_set_data(&ev, EVENT_DATA_BINARY, data, sizeof(bytes));
    produce_msg *m = produce_msg_new(&ev, 5, ENVELOPE_GRPC, "[::1]:1", "gw", NULL, NULL);
    assert_non_null(m);
    Ingest__V1__Envelope *env = envelope_decode(m->value, m->value_len);
    assert_non_null(env);
    assert_int_equal(env->event->data_case, INGEST__V1__CLOUD_EVENT__DATA_BINARY_DATA);
    assert_int_equal(env->event->binary_data.len, sizeof(bytes));
    assert_memory_equal(env->event->binary_data.data, bytes, sizeof(bytes));
    assert_string_equal(attr_string(env->event, "datacontenttype"), "application/octet-stream");
    assert_int_equal(env->protocol, INGEST__V1__PROTOCOL__PROTOCOL_GRPC);
    envelope_free(env);
    produce_msg_free(m);
    ing_event_clear(&ev);
}

static void test_produce_msg_without_id(void **state)
{
    ing_event ev;
    ing_event_error err;
    (void)state;

    /*
     * Was a bug, fixed with this test: gateway/producer.c:138 (produce_msg_new) takes strlen(ev->id)
     * (and of the key) before envelope_encode() has checked the event, so an
     * event without an id is a NULL dereference (SIGSEGV), where producer.h
     * promises NULL for "an event that cannot be encoded" and
     * envelope_encode() would say -EINVAL. Every caller assigns an id first
     * today, so it is latent; the check should come first.
     */
    ing_event_init(&ev);
    set(&ev, "source", "/s");
    set(&ev, "type", "t");
    assert_int_equal(ing_event_validate(&ev, &lim, -1, &err), 0);
    assert_null(produce_msg_new(&ev, 1, ENVELOPE_HTTP, NULL, NULL, NULL, NULL));
    ing_event_clear(&ev);
}

/* ---------------------------------------------------------------------------------------------- */
/* The producer against librdkafka's mock cluster                                                 */
/* ---------------------------------------------------------------------------------------------- */

/* One mock cluster for every test (a cluster per test costs a second of librdkafka's timers each). */
static rd_kafka_t *mock_rk; /* only carries the mock cluster */
static rd_kafka_mock_cluster_t *mock;
static const char *bootstraps;

typedef struct kfx {
    char topic[32]; /* a fresh one per test */
    struct event_base *base;
    ack_inbox *inbox;
    queue *q;
    producer *p;
} kfx;

static int group_setup(void **state)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    (void)state;

    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    if ((mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err))) == NULL) {
        fprintf(stderr, "rd_kafka_new: %s\n", err);
        return -1;
    }
    if ((mock = rd_kafka_mock_cluster_new(mock_rk, 1)) == NULL)
        return -1;
    bootstraps = rd_kafka_mock_cluster_bootstraps(mock);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    return 0;
}

static int kafka_setup(void **state)
{
    static int seq;
    kfx *k = calloc(1, sizeof(*k));

    snprintf(k->topic, sizeof(k->topic), "events-%d", ++seq);
    if (rd_kafka_mock_topic_create(mock, k->topic, 1, 1) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    k->base = event_base_new();
    k->inbox = ack_inbox_new(k->base);
    k->q = queue_new(1024, 1000);
    *state = k;
    return 0;
}

static int kafka_teardown(void **state)
{
    kfx *k = *state;

    if (k->p) {
        queue_close(k->q);
        producer_stop(k->p, 0);
        producer_free(k->p);
    }
    /* Messages a failed test left in the queue. */
    void *left[64];
    size_t n;
    while ((n = queue_pop_n(k->q, left, 64, 0)) > 0)
        for (size_t i = 0; i < n; i++)
            produce_msg_free(left[i]);
    /* Every wait has come back by now (the producer is gone): run what was posted. */
    ack_inbox_drain(k->inbox);
    ack_inbox_free(k->inbox);
    event_base_free(k->base);
    queue_free(k->q);
    /* The cluster as the next test expects it. */
    rd_kafka_mock_broker_set_up(mock, 1);
    rd_kafka_mock_clear_request_errors(mock, API_PRODUCE);
    free(k);
    return 0;
}

static producer *start_max(kfx *k, const char *const *props_kv, size_t message_max_bytes)
{
    char *keys[8], *values[8];
    config_props props = {keys, values, 0};
    char err[512] = "";

    for (; props_kv && *props_kv; props_kv += 2, props.n++) {
        keys[props.n] = (char *)props_kv[0];
        values[props.n] = (char *)props_kv[1];
    }
    k->p = producer_new(k->q, NULL, bootstraps, k->topic, &props, 1, message_max_bytes, err, sizeof(err));
    if (k->p == NULL)
        fail_msg("producer_new: %s", err);
    return k->p;
}

static producer *start(kfx *k, const char *const *props_kv)
{
    return start_max(k, props_kv, 0);
}

/* Queue n messages ("m-0", "m-1", ...) that wait on w (or nobody). */
static void push_n(kfx *k, int n, ack_wait *w, int first)
{
    for (int i = first; i < first + n; i++) {
        ing_event ev;
        char id[32], pk[32];
        snprintf(id, sizeof(id), "m-%d", i);
        snprintf(pk, sizeof(pk), "k%d", i % 5);
        const char *const attrs[] = {"partitionkey", pk, NULL};
        make_event(&ev, id, attrs);
        unsigned char *data = (unsigned char *)strdup("{\"n\":1}");
        ing_event_set_data(&ev, EVENT_DATA_JSON, data, 7);
        produce_msg *m = produce_msg_new(&ev, 42, ENVELOPE_HTTP, "127.0.0.1:9", "gw-test", NULL, w);
        assert_non_null(m);
        assert_int_equal(queue_push(k->q, m), 0);
        ing_event_clear(&ev);
    }
}

static const char *header(rd_kafka_message_t *m, const char *name, char *out, size_t size)
{
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t len;

    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(h, name, &v, &len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    snprintf(out, size, "%.*s", (int)len, (const char *)v);
    return out;
}

/* Read the topic back from the mock cluster and check every record as the contract has it. */
static void check_topic(kfx *k, int n)
{
    char err[512], v[128], want[32];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int got = 0;

    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, err, sizeof(err)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    assert_non_null(c);
    rd_kafka_topic_t *t = rd_kafka_topic_new(c, k->topic, NULL);
    assert_int_equal(rd_kafka_consume_start(t, 0, RD_KAFKA_OFFSET_BEGINNING), 0);
    long long end = now_ms() + 5000;
    while (got < n && now_ms() < end) {
        rd_kafka_message_t *m = rd_kafka_consume(t, 0, 100);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            /* In order: one partition, one worker, an idempotent producer. */
            snprintf(want, sizeof(want), "m-%d", got);
            assert_string_equal(header(m, "ce_id", v, sizeof(v)), want);
            assert_string_equal(header(m, "ce_source", v, sizeof(v)), "/sensors/7");
            assert_string_equal(header(m, "ce_type", v, sizeof(v)), "com.example.reading");
            assert_string_equal(header(m, "content-type", v, sizeof(v)), "application/x-protobuf");
            snprintf(want, sizeof(want), "k%d", got % 5);
            assert_int_equal(m->key_len, strlen(want));
            assert_memory_equal(m->key, want, m->key_len);
            Ingest__V1__Envelope *env = envelope_decode(m->payload, m->len);
            assert_non_null(env);
            snprintf(want, sizeof(want), "m-%d", got);
            assert_string_equal(env->event->id, want);
            assert_string_equal(env->gateway_id, "gw-test");
            assert_string_equal(env->event->text_data, "{\"n\":1}");
            envelope_free(env);
            got++;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consume_stop(t, 0);
    rd_kafka_topic_destroy(t);
    rd_kafka_destroy(c);
    assert_int_equal(got, n);
}

static void test_producer_delivers(void **state)
{
    kfx *k = *state;
    waiter x = {0};
    const int n = 200;

    start_max(k, NULL, 3 << 20);
    assert_int_equal(producer_message_max_bytes(k->p), 3 << 20);
    ack_wait *w = ack_wait_new((unsigned)n, k->inbox, done_cb, &x);
    push_n(k, n, w, 0);
    assert_true(loop_until(k->base, &x, 1, 8000));
    assert_int_equal(atomic_load(&x.error), 0);
    const producer_stats *st = producer_get_stats(k->p);
    assert_int_equal(atomic_load(&st->produced), n);
    assert_int_equal(atomic_load(&st->delivered), n);
    assert_int_equal(atomic_load(&st->failed), 0);
    assert_int_equal(queue_depth(k->q), 0);
    assert_non_null(producer_handle(k->p));

    /* A second request's messages, and some nobody waits for, go too. */
    waiter y = {0};
    ack_wait *w2 = ack_wait_new(3, k->inbox, done_cb, &y);
    push_n(k, 2, NULL, n);
    push_n(k, 3, w2, n + 2);
    assert_true(loop_until(k->base, &y, 1, 8000));
    assert_int_equal(atomic_load(&y.error), 0);
    assert_int_equal(atomic_load(&x.calls), 1);

    queue_close(k->q);
    assert_int_equal(producer_stop(k->p, 5000), 0);
    assert_int_equal(atomic_load(&st->delivered), n + 5);
    check_topic(k, n + 5);
    producer_free(k->p);
    k->p = NULL;
}

/* Queue one message of `data_len` bytes of data, waiting on w (or nobody). */
static void push_big(kfx *k, size_t data_len, ack_wait *w)
{
    ing_event ev;
    make_event(&ev, "big-1", NULL);
    unsigned char *data = malloc(data_len + 1);
    memset(data, 'b', data_len);
    data[data_len] = '\0';
    ing_event_set_data(&ev, EVENT_DATA_BINARY, data, data_len);
    produce_msg *m = produce_msg_new(&ev, 42, ENVELOPE_UDP, "127.0.0.1:9", "gw-test", NULL, w);
    assert_non_null(m);
    assert_int_equal(queue_push(k->q, m), 0);
    ing_event_clear(&ev);
}

static atomic_int too_large_drops, too_large_protocol;

static void count_drop(void *arg, int protocol)
{
    (void)arg;
    atomic_store(&too_large_protocol, protocol);
    atomic_fetch_add(&too_large_drops, 1);
}

static void test_producer_too_large_for_librdkafka(void **state)
{
    kfx *k = *state;
    waiter x = {0}, y = {0};
    static const char *const props[] = {"message.max.bytes", "1000", QUIET, NULL};

    /* The operator's message.max.bytes wins over ours, and a record over it is too_large, not retried. */
    start_max(k, props, 1 << 20);
    assert_int_equal(producer_message_max_bytes(k->p), 1000);
    atomic_store(&too_large_drops, 0);
    producer_on_too_large(k->p, count_drop, NULL);
    ack_wait *w = ack_wait_new(1, k->inbox, done_cb, &x);
    push_big(k, 2000, w);
    assert_true(loop_until(k->base, &x, 1, 8000));
    assert_int_equal(atomic_load(&x.error), RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    assert_true(atomic_load(&x.too_large) > 2000);
    assert_int_equal(atomic_load(&x.too_large_limit), 1000);
    /* Nobody waits for this one: its protocol's drop. */
    push_big(k, 2000, NULL);
    long long end = now_ms() + 5000;
    while (atomic_load(&too_large_drops) == 0 && now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&too_large_drops), 1);
    assert_int_equal(atomic_load(&too_large_protocol), ENVELOPE_UDP);
    /* And the next one, small, goes. */
    ack_wait *w2 = ack_wait_new(1, k->inbox, done_cb, &y);
    push_big(k, 100, w2);
    assert_true(loop_until(k->base, &y, 1, 8000));
    assert_int_equal(atomic_load(&y.error), 0);
}

static void test_producer_too_large_for_the_broker(void **state)
{
    kfx *k = *state;
    waiter x = {0}, y = {0};

    /* The broker's refusal (the topic's max.message.bytes), not known to the gateway: no limit said. */
    rd_kafka_mock_push_request_errors(mock, API_PRODUCE, 1, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    start(k, NULL);
    atomic_store(&too_large_drops, 0);
    producer_on_too_large(k->p, count_drop, NULL);
    ack_wait *w = ack_wait_new(1, k->inbox, done_cb, &x);
    push_big(k, 3000, w);
    assert_true(loop_until(k->base, &x, 1, 8000));
    assert_int_equal(atomic_load(&x.error), RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    assert_true(atomic_load(&x.too_large) > 3000);
    assert_int_equal(atomic_load(&x.too_large_limit), 0);
    assert_int_equal(atomic_load(&too_large_drops), 0);
    /* The producer goes on. */
    ack_wait *w2 = ack_wait_new(1, k->inbox, done_cb, &y);
    push_big(k, 100, w2);
    assert_true(loop_until(k->base, &y, 1, 8000));
    assert_int_equal(atomic_load(&y.error), 0);
}

static void test_producer_broker_down(void **state)
{
    kfx *k = *state;
    waiter x = {0};
    static const char *const props[] = {"message.timeout.ms", "300", QUIET, NULL};

    /* No broker answers: every message times out, and the request hears of it. */
    rd_kafka_mock_broker_set_down(mock, 1);
    start(k, props);
    ack_wait *w = ack_wait_new(10, k->inbox, done_cb, &x);
    push_n(k, 10, w, 0);
    assert_true(loop_until(k->base, &x, 1, 8000));
    assert_int_equal(atomic_load(&x.error), RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    const producer_stats *st = producer_get_stats(k->p);
    assert_int_equal(atomic_load(&st->failed), 10);
    assert_int_equal(atomic_load(&st->delivered), 0);
}

static void test_producer_refused_by_broker(void **state)
{
    kfx *k = *state;
    waiter x = {0};

    /* The broker refuses the produce requests with a permanent error. */
    rd_kafka_mock_push_request_errors(
        mock, API_PRODUCE, 8, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    start(k, NULL);
    ack_wait *w = ack_wait_new(5, k->inbox, done_cb, &x);
    push_n(k, 5, w, 0);
    assert_true(loop_until(k->base, &x, 1, 8000));
    assert_int_not_equal(atomic_load(&x.error), 0);
    assert_int_equal(atomic_load(&producer_get_stats(k->p)->failed), 5);
}

static void test_producer_retries_transient_errors(void **state)
{
    kfx *k = *state;
    waiter x = {0};

    /* Retriable errors (a leader moving, a broker not yet in sync) are librdkafka's to retry: delivered. */
    rd_kafka_mock_push_request_errors(mock, API_PRODUCE, 3, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                                      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
    start(k, NULL);
    ack_wait *w = ack_wait_new(20, k->inbox, done_cb, &x);
    push_n(k, 20, w, 0);
    assert_true(loop_until(k->base, &x, 1, 8000));
    assert_int_equal(atomic_load(&x.error), 0);
    queue_close(k->q);
    assert_int_equal(producer_stop(k->p, 5000), 0);
    /* Exactly once: the idempotent producer's retries made no duplicates. */
    check_topic(k, 20);
    assert_int_equal(atomic_load(&producer_get_stats(k->p)->delivered), 20);
}

static void test_producer_stop_drains_queue(void **state)
{
    kfx *k = *state;
    const int n = 300;

    /* Queued before the producer even starts, and the queue closed (producer_stop's contract). */
    push_n(k, n, NULL, 0);
    queue_close(k->q);
    start(k, NULL);
    assert_int_equal(producer_stop(k->p, 5000), 0);
    const producer_stats *st = producer_get_stats(k->p);
    assert_int_equal(atomic_load(&st->produced), n);
    assert_int_equal(atomic_load(&st->delivered), n);
    assert_int_equal(queue_depth(k->q), 0);
    check_topic(k, n);
    /* Stopping twice is harmless. */
    assert_int_equal(producer_stop(k->p, 0), 0);
}

static void test_producer_stop_undelivered(void **state)
{
    kfx *k = *state;
    waiter x = {0};

    static const char *const props[] = {QUIET, NULL};

    /* Kafka down at stop: stop gives up after its timeout and says how many are left... */
    rd_kafka_mock_broker_set_down(mock, 1);
    start(k, props);
    ack_wait *w = ack_wait_new(5, k->inbox, done_cb, &x);
    push_n(k, 5, w, 0);
    queue_close(k->q);
    assert_true(producer_stop(k->p, 200) >= 5);
    assert_int_equal(atomic_load(&x.calls), 0);
    /* ...and freeing it reports them failed, so no request waits forever. */
    producer_free(k->p);
    k->p = NULL;
    assert_true(loop_until(k->base, &x, 1, 2000));
    assert_int_equal(atomic_load(&x.error), RD_KAFKA_RESP_ERR__PURGE_QUEUE);
}

static void test_producer_local_queue_full(void **state)
{
    kfx *k = *state;
    waiter x = {0};
    static const char *const props[] = {"queue.buffering.max.messages", "5", QUIET, NULL};

    /*
     * Kafka down and librdkafka's own queue full: the worker waits for room
     * (nothing is failed while the gateway runs)...
     */
    rd_kafka_mock_broker_set_down(mock, 1);
    start(k, props);
    ack_wait *w = ack_wait_new(30, k->inbox, done_cb, &x);
    push_n(k, 30, w, 0);
    usleep(300 * 1000);
    const producer_stats *st = producer_get_stats(k->p);
    assert_int_equal(atomic_load(&st->produced), 5);
    assert_int_equal(atomic_load(&st->failed), 0);
    assert_int_equal(atomic_load(&x.calls), 0);

    /* ...until stop: then what librdkafka cannot take fails at the deadline, and stop returns. */
    queue_close(k->q);
    assert_true(producer_stop(k->p, 300) >= 5);
    assert_int_equal(atomic_load(&st->failed), 25);
    producer_free(k->p);
    k->p = NULL;
    assert_true(loop_until(k->base, &x, 1, 2000));
    /* The first failure was the worker's give-up. */
    assert_int_equal(atomic_load(&x.error), RD_KAFKA_RESP_ERR__TIMED_OUT);
}

static void test_producer_stop_bounded_by_timeout(void **state)
{
    kfx *k = *state;
    static const char *const props[] = {"queue.buffering.max.messages", "5", QUIET, NULL};

    /*
     * Was a bug, fixed with this test: gateway/producer.c:323-329 (producer_stop) spends the timeout
     * twice: workers blocked on a full librdkafka queue give up only at
     * now + timeout_ms (line 323), and then rd_kafka_flush() (line 329) is
     * given a fresh timeout_ms. With Kafka down and the local queue full,
     * producer_stop(p, 1000) takes about 2 s; main.c passes what is left of
     * --shutdown-timeout, so a stop takes up to twice that setting (past a
     * Kubernetes grace period, into SIGKILL). The flush should get only
     * what is left of the one deadline.
     */
    rd_kafka_mock_broker_set_down(mock, 1);
    start(k, props);
    push_n(k, 30, NULL, 0);
    usleep(100 * 1000);
    queue_close(k->q);
    long long t0 = now_ms();
    producer_stop(k->p, 1000);
    long long took = now_ms() - t0;
    /* A bound the call promises, with room for a slow machine; not a speed measurement. */
    if (took > 1600)
        fail_msg("producer_stop(p, 1000) took %lld ms", took);
}

static void test_producer_bad_property(void **state)
{
    kfx *k = *state;
    char *keys[] = {"linger.ms", "no.such.property"}, *values[] = {"1", "x"};
    config_props props = {keys, values, 2};
    char err[512] = "";

    assert_null(producer_new(k->q, NULL, bootstraps, k->topic, &props, 1, 0, err, sizeof(err)));
    if (strstr(err, "no.such.property") == NULL)
        fail_msg("message does not name the property: %s", err);

    /* A known property with a value librdkafka refuses. */
    char *keys2[] = {"acks"}, *values2[] = {"maybe"};
    config_props props2 = {keys2, values2, 1};
    err[0] = '\0';
    assert_null(producer_new(k->q, NULL, bootstraps, k->topic, &props2, 1, 0, err, sizeof(err)));
    if (strstr(err, "acks") == NULL)
        fail_msg("message does not name the property: %s", err);

    /* A property that conflicts with the contract's idempotence is refused by librdkafka at creation. */
    char *keys3[] = {"max.in.flight.requests.per.connection"}, *values3[] = {"100"};
    config_props props3 = {keys3, values3, 1};
    err[0] = '\0';
    assert_null(producer_new(k->q, NULL, bootstraps, k->topic, &props3, 1, 0, err, sizeof(err)));
    assert_true(strlen(err) > 0);

    producer_free(NULL);
    assert_int_equal(producer_stop(NULL, 0), 0);
}

int main(void)
{
    /* Delivery reports wake loops from librdkafka's threads: libevent must know about threads. */
    evthread_use_pthreads();
    ing_event_limits_default(&lim);
    log_set_level(LOG_LEVEL_ERROR);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ack_wait_counting),
        cmocka_unit_test(test_ack_wait_first_error_kept),
        cmocka_unit_test(test_ack_wait_too_large_wins),
        cmocka_unit_test(test_max_message_bytes),
        cmocka_unit_test(test_ack_wait_threads),
        cmocka_unit_test(test_ack_wait_direct_threads),
        cmocka_unit_test(test_ack_wait_direct_last_report),
        cmocka_unit_test(test_ack_inbox_wakes_loop),
        cmocka_unit_test(test_ack_inbox_order),
        cmocka_unit_test(test_produce_msg_fields),
        cmocka_unit_test(test_produce_msg_key_choice),
        cmocka_unit_test(test_produce_msg_binary_data),
        cmocka_unit_test(test_produce_msg_without_id),
        cmocka_unit_test_setup_teardown(test_producer_delivers, kafka_setup, kafka_teardown),
        cmocka_unit_test_setup_teardown(test_producer_broker_down, kafka_setup, kafka_teardown),
        cmocka_unit_test_setup_teardown(test_producer_refused_by_broker, kafka_setup, kafka_teardown),
        cmocka_unit_test_setup_teardown(test_producer_too_large_for_librdkafka, kafka_setup, kafka_teardown),
        cmocka_unit_test_setup_teardown(test_producer_too_large_for_the_broker, kafka_setup, kafka_teardown),
        cmocka_unit_test_setup_teardown(test_producer_retries_transient_errors, kafka_setup, kafka_teardown),
        cmocka_unit_test_setup_teardown(test_producer_stop_drains_queue, kafka_setup, kafka_teardown),
        cmocka_unit_test_setup_teardown(test_producer_stop_undelivered, kafka_setup, kafka_teardown),
        cmocka_unit_test_setup_teardown(test_producer_local_queue_full, kafka_setup, kafka_teardown),
        cmocka_unit_test_setup_teardown(test_producer_stop_bounded_by_timeout, kafka_setup, kafka_teardown),
        cmocka_unit_test_setup_teardown(test_producer_bad_property, kafka_setup, kafka_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
