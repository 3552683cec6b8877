#include "producer.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "envelope.h"
#include "log.h"
#include "mono.h"

/* Messages a worker takes from the queue at once. */
#define WORKER_BATCH 256
/* Empty 1 ms polls before a worker sleeps until woken. */
#define WORKER_IDLE_POLLS 100
/*
 * The longest peer text a record carries: the front ends' buffers (gRPC's,
 * the largest, is 128 bytes).
 */
#define PEER_MAX 128
/*
 * On top of key, value and headers: librdkafka counts at most 36 bytes of a
 * record's framing and 10 per header; a batch's header is 61 bytes. So a
 * batch of the largest record fits in message.max.bytes as well.
 */
#define RECORD_SLACK 256

struct ack_inbox {
    pthread_mutex_t lock;
    ack_wait *head;
    struct event *wake;
};

struct producer {
    queue *q;
    gw_budget *budget; /* its queued share gets back what is handed to librdkafka; may be NULL */
    rd_kafka_t *rk;
    rd_kafka_topic_t *topic;
    pthread_t *workers;
    int n_workers;
    pthread_t poller;
    int poller_started;
    atomic_int stopping;
    atomic_llong give_up_at; /* monotonic ms after which a full librdkafka queue fails messages; 0: never */
    size_t msg_max;          /* librdkafka's message.max.bytes */
    atomic_size_t topic_max; /* the topic's max.message.bytes, once the broker said; 0 before */
    void (*on_too_large)(void *arg, int protocol);
    void *on_too_large_arg;
    atomic_llong too_large_logged_ms;
    void (*on_spooled)(void *arg, uint64_t seq, rd_kafka_resp_err_t err);
    void *on_spooled_arg;
    producer_stats stats;
};

/*
 * With a spool, a record's opaque is one of these, so that its delivery
 * report can ack its spool sequence number too. A record without a
 * spool_seq (the spooler's dead letters) has a NULL opaque.
 */
typedef struct spooled {
    void *inner; /* what msg_opaque() would have been */
    uint64_t seq;
} spooled;

/*
 * The opaque of a record nobody waits for: which protocol's it is, so that
 * a refusal for its size is counted as that protocol's drop.
 */
static const char unwaited[4];

static void *msg_opaque(const produce_msg *m)
{
    return m->wait ? (void *)m->wait : (void *)&unwaited[m->protocol & 3];
}

static int opaque_unwaited(const void *opaque, int *protocol)
{
    uintptr_t o = (uintptr_t)opaque, base = (uintptr_t)unwaited;

    if (o < base || o >= base + sizeof(unwaited))
        return 0;
    *protocol = (int)(o - base);
    return 1;
}

ack_wait *ack_wait_new(unsigned n, ack_inbox *inbox, void (*done)(ack_wait *w), void *ctx)
{
    ack_wait *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    atomic_init(&w->remaining, n);
    atomic_init(&w->error, 0);
    atomic_init(&w->too_large, 0);
    atomic_init(&w->too_large_limit, 0);
    w->inbox = inbox;
    w->done = done;
    w->ctx = ctx;
    return w;
}

void ack_wait_free(ack_wait *w)
{
    free(w);
}

static void inbox_post(ack_inbox *inbox, ack_wait *w)
{
    pthread_mutex_lock(&inbox->lock);
    w->next = inbox->head;
    inbox->head = w;
    pthread_mutex_unlock(&inbox->lock);
    event_active(inbox->wake, EV_READ, 0);
}

void ack_wait_report(ack_wait *w, rd_kafka_resp_err_t err)
{
    if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
        atomic_store(&w->error, (int)err);
    } else if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        int none = 0;
        atomic_compare_exchange_strong(&w->error, &none, (int)err);
    }
    if (atomic_fetch_sub(&w->remaining, 1) == 1) {
        if (w->inbox)
            inbox_post(w->inbox, w);
        else
            w->done(w);
    }
}

void ack_wait_report_too_large(ack_wait *w, size_t bytes, size_t limit)
{
    size_t none = 0;

    /* The first such record's figures; both are set before the report that may end the wait. */
    if (atomic_compare_exchange_strong(&w->too_large, &none, bytes))
        atomic_store(&w->too_large_limit, limit);
    ack_wait_report(w, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
}

void ack_wait_too_large_text(size_t bytes, size_t limit, char *buf, size_t size)
{
    char lim[64] = "";

    if (limit)
        snprintf(lim, sizeof(lim), ", more than the %zu it takes", limit);
    snprintf(buf, size,
             "an event is too large for the Kafka topic (its record is %zu bytes with key and headers%s); it "
             "was not stored, and sent again as is it never will be",
             bytes, lim);
}

void ack_inbox_drain(ack_inbox *inbox)
{
    ack_wait *list, *rev = NULL;

    pthread_mutex_lock(&inbox->lock);
    list = inbox->head;
    inbox->head = NULL;
    pthread_mutex_unlock(&inbox->lock);
    /* Oldest first: the list was built by pushing on its head. */
    while (list) {
        ack_wait *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev) {
        ack_wait *next = rev->next;
        rev->done(rev);
        rev = next;
    }
}

static void inbox_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ack_inbox_drain(arg);
}

ack_inbox *ack_inbox_new(struct event_base *base)
{
    ack_inbox *inbox = calloc(1, sizeof(*inbox));

    if (inbox == NULL)
        return NULL;
    pthread_mutex_init(&inbox->lock, NULL);
    /* Never added, only activated: event_active() from another thread needs evthread_use_pthreads(). */
    if ((inbox->wake = event_new(base, -1, 0, inbox_wake_cb, inbox)) == NULL) {
        ack_inbox_free(inbox);
        return NULL;
    }
    return inbox;
}

void ack_inbox_free(ack_inbox *inbox)
{
    if (inbox == NULL)
        return;
    if (inbox->wake)
        event_free(inbox->wake);
    pthread_mutex_destroy(&inbox->lock);
    free(inbox);
}

produce_msg *produce_msg_new(const ing_event *ev, int64_t received_unix_nanos, int protocol, const char *peer,
                             const char *gateway_id, const char *principal, ack_wait *wait)
{
    envelope_meta meta = {.received_unix_nanos = received_unix_nanos,
                          .protocol = (envelope_protocol)protocol,
                          .peer = peer,
                          .gateway_id = gateway_id,
                          .principal = principal};
    size_t ce_len, vlen = envelope_size(ev, &meta, &ce_len);
    if (vlen == 0)
        return NULL; /* no id, source or type */
    const char *key = ing_event_kafka_key(ev);
    size_t klen = strlen(key), ilen = strlen(ev->id), slen = strlen(ev->source), tlen = strlen(ev->type);
    size_t held = sizeof(produce_msg) + klen + ilen + slen + tlen + 4 + vlen;
    produce_msg *m = malloc(held);
    char *p;

    if (m == NULL)
        return NULL;
    m->wait = wait;
    m->protocol = protocol;
    m->spool_seq = 0;
    m->topic = NULL;
    m->held = held;
    p = m->strings;
#define PLACE(field, src, len)                                                                               \
    do {                                                                                                     \
        m->field = memcpy(p, src, len + 1);                                                                  \
        m->field##_len = len;                                                                                \
        p += len + 1;                                                                                        \
    } while (0)
    PLACE(key, key, klen);
    PLACE(ce_id, ev->id, ilen);
    PLACE(ce_source, ev->source, slen);
    PLACE(ce_type, ev->type, tlen);
#undef PLACE
    m->value = (uint8_t *)p;
    m->value_len = vlen;
    envelope_write(ev, &meta, ce_len, m->value);
    return m;
}

void produce_msg_free(produce_msg *m)
{
    free(m);
}

/* A record's bytes as librdkafka and the broker count them, but its framing: key, value, headers. */
static size_t record_bytes(const rd_kafka_message_t *msg)
{
    size_t n = msg->len + msg->key_len;
    rd_kafka_headers_t *h = NULL;
    const char *name;
    const void *v;
    size_t vlen;

    if (rd_kafka_message_headers(msg, &h) == RD_KAFKA_RESP_ERR_NO_ERROR)
        for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &v, &vlen) == RD_KAFKA_RESP_ERR_NO_ERROR; i++)
            n += strlen(name) + vlen;
    return n;
}

/*
 * A record that Kafka will never take, whatever the retries: the waiter is
 * told so (too_large), and a record nobody waits for is counted as its
 * protocol's drop, and logged once a second at most.
 */
static void too_large(producer *p, void *opaque, size_t bytes, size_t limit)
{
    int protocol;

    if (opaque_unwaited(opaque, &protocol)) {
        long long now = mono_ms(), last = atomic_load(&p->too_large_logged_ms);
        if (now - last >= 1000 && atomic_compare_exchange_strong(&p->too_large_logged_ms, &last, now)) {
            char why[256];
            ack_wait_too_large_text(bytes, limit, why, sizeof(why));
            LOG_WARN("kafka", "dropped a record nobody waited for: %s", why);
        }
        if (p->on_too_large)
            p->on_too_large(p->on_too_large_arg, protocol);
    } else if (opaque) {
        ack_wait_report_too_large(opaque, bytes, limit);
    }
}

/* Delivery reports, on the poller thread (rd_kafka_poll). */
static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    producer *p = opaque;
    void *priv = msg->_private;
    uint64_t seq = 0;
    int protocol;
    (void)rk;

    if (p->on_spooled && priv) {
        spooled *s = priv;
        priv = s->inner;
        seq = s->seq;
        free(s);
    }
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        atomic_fetch_add_explicit(&p->stats.delivered, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&p->stats.failed, 1, memory_order_relaxed);
        LOG_DEBUG("kafka", "delivery failed: %s", rd_kafka_err2str(msg->err));
    }
    /* The broker's refusal: over the topic's max.message.bytes (or the broker's). */
    if (msg->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
        too_large(p, priv, record_bytes(msg), atomic_load(&p->topic_max));
    else if (priv && !opaque_unwaited(priv, &protocol))
        ack_wait_report(priv, msg->err);
    if (seq)
        p->on_spooled(p->on_spooled_arg, seq, msg->err);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)opaque;
    LOG_WARN("kafka", "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* No memory for a spooled record's wrapper: it fails as a refusal would (its spool record stays). */
static void produce_failed(producer *p, produce_msg *m, rd_kafka_resp_err_t err)
{
    atomic_fetch_add_explicit(&p->stats.failed, 1, memory_order_relaxed);
    if (m->wait)
        ack_wait_report(m->wait, err);
    if (m->spool_seq)
        p->on_spooled(p->on_spooled_arg, m->spool_seq, err);
    if (p->budget)
        gw_budget_sub_queued(p->budget, m->held);
    produce_msg_free(m);
}

/* Hand one message to librdkafka; on a full local queue, wait for room rather than fail. */
static void produce_one(producer *p, produce_msg *m)
{
    void *opaque = msg_opaque(m);
    spooled *sw = NULL;

    if (p->on_spooled) {
        /* With a spool every opaque is a wrapper (see struct spooled). */
        if ((sw = malloc(sizeof(*sw))) == NULL) {
            produce_failed(p, m, RD_KAFKA_RESP_ERR__FAIL);
            return;
        }
        sw->inner = opaque;
        sw->seq = m->spool_seq;
        opaque = sw;
    }
    for (;;) {
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
        rd_kafka_header_add(hdrs, "ce_id", 5, m->ce_id, (ssize_t)m->ce_id_len);
        rd_kafka_header_add(hdrs, "ce_source", 9, m->ce_source, (ssize_t)m->ce_source_len);
        rd_kafka_header_add(hdrs, "ce_type", 7, m->ce_type, (ssize_t)m->ce_type_len);
        rd_kafka_header_add(hdrs, "content-type", 12, "application/x-protobuf", 22);
        /* Copied: librdkafka keeps value and key in its own message, one allocation. */
        rd_kafka_resp_err_t err =
            m->topic
                ? rd_kafka_producev(
                      p->rk, RD_KAFKA_V_TOPIC(m->topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                      RD_KAFKA_V_VALUE(m->value, m->value_len), RD_KAFKA_V_KEY(m->key, m->key_len),
                      RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END)
                : rd_kafka_producev(p->rk, RD_KAFKA_V_RKT(p->topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_VALUE(m->value, m->value_len),
                                    RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_HEADERS(hdrs),
                                    RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            atomic_fetch_add_explicit(&p->stats.produced, 1, memory_order_relaxed);
            break;
        }
        rd_kafka_headers_destroy(hdrs); /* not taken on failure */
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            long long give_up = atomic_load(&p->give_up_at);
            if (give_up == 0 || mono_ms() < give_up) {
                /*
                 * The poller serves delivery reports; this only waits for room. Not
                 * rd_kafka_flush(), which waits for everything outstanding (perf/grpc).
                 */
                usleep(1000);
                continue;
            }
            err = RD_KAFKA_RESP_ERR__TIMED_OUT; /* stopping, and Kafka takes nothing */
        }
        atomic_fetch_add_explicit(&p->stats.failed, 1, memory_order_relaxed);
        if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
            /* librdkafka's own refusal: over message.max.bytes (an operator's, smaller than ours). */
            size_t bytes = m->value_len + m->key_len + m->ce_id_len + m->ce_source_len + m->ce_type_len + 55;
            too_large(p, msg_opaque(m), bytes, p->msg_max);
        } else {
            LOG_WARN("kafka", "produce refused: %s", rd_kafka_err2str(err));
            if (m->wait)
                ack_wait_report(m->wait, err);
        }
        free(sw);
        if (sw && m->spool_seq)
            p->on_spooled(p->on_spooled_arg, m->spool_seq, err);
        break;
    }
    if (p->budget)
        gw_budget_sub_queued(p->budget, m->held);
    produce_msg_free(m);
}

/*
 * Until the queue is closed and empty: what was queued is never dropped here.
 * Busy, the worker takes what accumulated every millisecond (or at once when
 * a batch is waiting) instead of being woken for each event: librdkafka
 * lingers 5 ms anyway, and a wake-up per event cost a fifth of the gateway's
 * CPU (perf/README.md). Idle for a while, it sleeps until the next push.
 */
static void *worker_main(void *arg)
{
    producer *p = arg;
    void *items[WORKER_BATCH];
    int idle = 0;

    pthread_setname_np(pthread_self(), "gw-producer");
    while (!queue_drained(p->q)) {
        size_t n = idle < WORKER_IDLE_POLLS ? queue_pop_lazy(p->q, items, WORKER_BATCH, 1)
                                            : queue_pop_n(p->q, items, WORKER_BATCH, -1);
        idle = n ? 0 : idle + 1;
        for (size_t i = 0; i < n; i++)
            produce_one(p, items[i]);
    }
    return NULL;
}

static void *poller_main(void *arg)
{
    producer *p = arg;

    pthread_setname_np(pthread_self(), "gw-delivery");
    while (!atomic_load(&p->stopping))
        rd_kafka_poll(p->rk, 100);
    return NULL;
}

size_t producer_max_message_bytes(size_t max_event_bytes, size_t max_extensions, const char *gateway_id)
{
    size_t gwlen = gateway_id ? strlen(gateway_id) : 0;
    /* Key, ce_id, ce_source, ce_type: distinct attributes of the event, but the key may be its source. */
    size_t key_headers = max_event_bytes + EVENT_ATTR_MAX + (5 + 9 + 7 + 12) + 22;

    return envelope_max_size(max_event_bytes, max_extensions, PEER_MAX, gwlen) + key_headers + RECORD_SLACK;
}

producer *producer_new(queue *q, gw_budget *budget, const char *bootstrap, const char *topic,
                       const config_props *props, int threads, size_t message_max_bytes, char *errbuf,
                       size_t errlen)
{
    producer *p = calloc(1, sizeof(*p));
    rd_kafka_conf_t *conf = NULL;

    if (p == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    p->q = q;
    p->budget = budget;
    if ((conf = kafka_conf_new(bootstrap, kafka_producer_defaults, props, errbuf, errlen)) == NULL)
        goto fail;
    /*
     * librdkafka's buffer is the budget's kafka share, not its own default
     * (1 GiB): large events at a high rate grew the process past the pod's
     * limit. An operator's --kafka.queue.buffering.max.kbytes still wins.
     */
    if (budget && !config_props_has(props, "queue.buffering.max.kbytes")) {
        char kb[32];
        snprintf(kb, sizeof(kb), "%zu", budget->kafka / 1024 ? budget->kafka / 1024 : 1);
        if (rd_kafka_conf_set(conf, "queue.buffering.max.kbytes", kb, errbuf, errlen) != RD_KAFKA_CONF_OK)
            goto fail;
    }
    /*
     * Every event our limits let in must fit in a record librdkafka takes:
     * its default (1,000,000) is under a 1 MiB event. An operator's
     * --kafka.message.max.bytes still wins; a record over it is a too_large.
     */
    if (message_max_bytes && !config_props_has(props, "message.max.bytes")) {
        char v[32];
        snprintf(v, sizeof(v), "%zu", message_max_bytes);
        if (rd_kafka_conf_set(conf, "message.max.bytes", v, errbuf, errlen) != RD_KAFKA_CONF_OK)
            goto fail;
    }
    {
        char v[32];
        size_t vlen = sizeof(v);
        if (rd_kafka_conf_get(conf, "message.max.bytes", v, &vlen) == RD_KAFKA_CONF_OK)
            p->msg_max = strtoull(v, NULL, 10);
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, p);
    if ((p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, errlen)) == NULL)
        goto fail;
    conf = NULL; /* rd_kafka_new took it */
    if ((p->topic = rd_kafka_topic_new(p->rk, topic, NULL)) == NULL) {
        snprintf(errbuf, errlen, "topic %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
        goto fail;
    }
    if (pthread_create(&p->poller, NULL, poller_main, p) != 0) {
        snprintf(errbuf, errlen, "cannot start the delivery report thread");
        goto fail;
    }
    p->poller_started = 1;
    if ((p->workers = calloc((size_t)threads, sizeof(*p->workers))) == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    for (; p->n_workers < threads; p->n_workers++) {
        if (pthread_create(&p->workers[p->n_workers], NULL, worker_main, p) != 0) {
            snprintf(errbuf, errlen, "cannot start producer thread %d", p->n_workers);
            goto fail;
        }
    }
    return p;

fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    queue_close(q);
    producer_stop(p, 0);
    producer_free(p);
    return NULL;
}

int producer_stop(producer *p, int timeout_ms)
{
    int left = 0;

    if (p == NULL)
        return 0;
    long long deadline = mono_ms() + (timeout_ms > 0 ? timeout_ms : 1);
    atomic_store(&p->give_up_at, deadline);
    for (int i = 0; i < p->n_workers; i++)
        pthread_join(p->workers[i], NULL);
    p->n_workers = 0;
    if (p->rk) {
        /* rd_kafka_flush serves delivery reports itself; the poller may too, both are safe. */
        /* One budget for both: what the workers took of it is not given again. */
        long long budget = deadline - mono_ms();
        if (rd_kafka_flush(p->rk, budget > 0 ? (int)budget : 0) != RD_KAFKA_RESP_ERR_NO_ERROR)
            left = rd_kafka_outq_len(p->rk);
    }
    atomic_store(&p->stopping, 1);
    if (p->poller_started) {
        pthread_join(p->poller, NULL);
        p->poller_started = 0;
    }
    return left;
}

void producer_free(producer *p)
{
    if (p == NULL)
        return;
    if (p->rk) {
        /* Undelivered messages get their delivery report (purged) before the handle goes. */
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(p->rk, 0);
    }
    if (p->topic)
        rd_kafka_topic_destroy(p->topic);
    if (p->rk)
        rd_kafka_destroy(p->rk);
    free(p->workers);
    free(p);
}

const producer_stats *producer_get_stats(const producer *p)
{
    return &p->stats;
}

size_t producer_message_max_bytes(const producer *p)
{
    return p->msg_max;
}

void producer_on_too_large(producer *p, void (*cb)(void *arg, int protocol), void *arg)
{
    p->on_too_large = cb;
    p->on_too_large_arg = arg;
}

void producer_on_spooled(producer *p, void (*cb)(void *arg, uint64_t seq, rd_kafka_resp_err_t err), void *arg)
{
    p->on_spooled_arg = arg;
    p->on_spooled = cb;
}

size_t producer_topic_max_bytes(producer *p, int timeout_ms)
{
    const char *name = rd_kafka_topic_name(p->topic);
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, name);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(p->rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_queue_t *rq = rd_kafka_queue_new(p->rk);
    rd_kafka_event_t *ev = NULL;
    size_t found = 0;
    char err[256];

    if (res == NULL || opts == NULL || rq == NULL)
        goto out;
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, err, sizeof(err));
    rd_kafka_DescribeConfigs(p->rk, &res, 1, opts, rq);
    /* Not answered in time: the request is dropped with its queue. */
    if ((ev = rd_kafka_queue_poll(rq, timeout_ms)) == NULL)
        goto out;
    const rd_kafka_DescribeConfigs_result_t *r = rd_kafka_event_DescribeConfigs_result(ev);
    size_t n_res = 0, n_cfg = 0;
    const rd_kafka_ConfigResource_t **rs = r ? rd_kafka_DescribeConfigs_result_resources(r, &n_res) : NULL;
    if (rd_kafka_event_error(ev) || n_res != 1 || rd_kafka_ConfigResource_error(rs[0])) {
        LOG_DEBUG("kafka", "topic %s: no max.message.bytes: %s", name,
                  rd_kafka_event_error(ev)      ? rd_kafka_event_error_string(ev)
                  : n_res == 1 && rs[0] != NULL ? rd_kafka_ConfigResource_error_string(rs[0])
                                                : "no answer");
        goto out;
    }
    const rd_kafka_ConfigEntry_t **cs = rd_kafka_ConfigResource_configs(rs[0], &n_cfg);
    for (size_t i = 0; i < n_cfg; i++) {
        const char *v = rd_kafka_ConfigEntry_value(cs[i]);
        if (strcmp(rd_kafka_ConfigEntry_name(cs[i]), "max.message.bytes") == 0 && v != NULL)
            found = strtoull(v, NULL, 10);
    }
    if (found)
        atomic_store(&p->topic_max, found);

out:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (rq)
        rd_kafka_queue_destroy(rq);
    if (opts)
        rd_kafka_AdminOptions_destroy(opts);
    if (res)
        rd_kafka_ConfigResource_destroy(res);
    return found;
}

rd_kafka_t *producer_handle(producer *p)
{
    return p->rk;
}
