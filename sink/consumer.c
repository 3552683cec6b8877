#include "consumer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "kafka.h"
#include "log.h"
#include "pg.h"
#include "mono.h"

struct sink_consumer {
    const sink_config *cfg;
    rd_kafka_t *rk;
    sink_writer *writer; /* from the subscription on */
    sink_metrics *metrics;
    backoff retry;  /* reading the stored offsets at an assignment */
    PGconn *pg;     /* the main thread's: the stored offsets at each assignment */
    batch b;        /* the batch being filled */
    int paused;     /* the assigned partitions are paused */
    int subscribed; /* and not closed yet */
    atomic_int stop;
};

static void set_paused(sink_consumer *c, int pause)
{
    rd_kafka_topic_partition_list_t *parts = NULL;

    if (c->paused == pause || rd_kafka_assignment(c->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    if (pause)
        rd_kafka_pause_partitions(c->rk, parts);
    else
        rd_kafka_resume_partitions(c->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    c->paused = pause;
    LOG_INFO("sink", "%s consumption", pause ? "paused" : "resumed");
}

/*
 * Wait until the writer has finished its batch. While it cannot write,
 * pause consumption and keep serving the group; with `serve` 0 (inside a
 * rebalance callback) just wait.
 */
static void wait_writer(sink_consumer *c, int serve)
{
    while (sink_writer_wait(c->writer, 50) != 0) {
        if (!serve)
            continue;
        if (sink_writer_failing(c->writer))
            set_paused(c, 1);
        /* Rebalances are served here; paused partitions bring nothing, what was fetched joins the batch. */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 0);
        if (m) {
            if (!m->err &&
                batch_add(&c->b, m->partition, m->offset, m->key, m->key_len, m->payload, m->len) != 0)
                LOG_ERROR("sink", "out of memory");
            rd_kafka_message_destroy(m);
        }
    }
}

/* Hand the filled batch to the writer (after the one before it is written). */
static void submit(sink_consumer *c, int serve)
{
    wait_writer(c, serve);
    if (c->b.n == 0)
        return;
    sink_writer_submit(c->writer, &c->b);
    if (c->paused && !sink_writer_failing(c->writer))
        set_paused(c, 0);
}

/* What an assignment needs from Postgres: each partition's stored next offset. */
typedef struct stored {
    sink_consumer *c;
    int64_t *next; /* [max] */
    int max;
} stored;

static int load_stored(void *arg)
{
    stored *st = arg;
    sink_consumer *c = st->c;
    char err[512];
    PGconn *pg;

    /* Memory, like Postgres, may come back: retried the same way. */
    if (st->next == NULL && (st->next = calloc((size_t)(st->max ? st->max : 1), sizeof(*st->next))) == NULL) {
        LOG_ERROR("sink", "out of memory reading the stored offsets, will retry");
        return -ENOMEM;
    }
    if ((pg = sink_pg_connect(&c->pg, c->cfg->pg_dsn)) == NULL)
        return -EIO;
    if (sink_pg_load_offsets(pg, c->cfg->kafka_topic, st->next, st->max, err, sizeof(err)) != 0) {
        LOG_WARN("pg", "cannot read stored offsets, will retry: %s", err);
        return -EIO;
    }
    return 0;
}

static int stopping(void *arg)
{
    return atomic_load(&((stored *)arg)->c->stop);
}

/* On assignment, start each partition where Postgres says its rows end. */
static void on_assign(sink_consumer *c, rd_kafka_topic_partition_list_t *parts)
{
    stored st = {.c = c};

    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition + 1 > st.max)
            st.max = parts->elems[i].partition + 1;
    if (backoff_retry(&c->retry, load_stored, stopping, &st) != 0) {
        free(st.next); /* stopping: the partitions are left unassigned, as they will be revoked */
        return;
    }
    for (int i = 0; i < parts->cnt; i++) {
        int p = parts->elems[i].partition;
        parts->elems[i].offset = st.next[p] >= 0 ? st.next[p] : RD_KAFKA_OFFSET_BEGINNING;
        LOG_INFO("sink", "assigned topic=%s partition=%d from_offset=%" PRId64, parts->elems[i].topic, p,
                 st.next[p]);
        sink_metrics_set_next(c->metrics, p, st.next[p] >= 0 ? st.next[p] : 0);
    }
    free(st.next);
    rd_kafka_assign(c->rk, parts);
    c->paused = 0;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque)
{
    sink_consumer *c = opaque;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        on_assign(c, parts);
    } else {
        /* Write what we have of them once; if that fails, the next owner reads it again from Postgres's
         * offsets. */
        sink_writer_drain(c->writer, &c->b);
        LOG_INFO("sink", "partitions revoked count=%d", parts->cnt);
        sink_metrics_forget_all(c->metrics);
        rd_kafka_assign(rk, NULL);
        c->paused = 0;
    }
}

sink_consumer *sink_consumer_new(const sink_config *cfg, sink_metrics *m, char *err, size_t errlen)
{
    sink_consumer *c = calloc(1, sizeof(*c));
    const kafka_prop defaults[] = {{"group.id", cfg->kafka_group},
                                   {"enable.auto.commit", "false"},
                                   {"auto.offset.reset", "earliest"},
                                   {NULL, NULL}};
    char why[512];
    int rc;

    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->cfg = cfg;
    c->metrics = m;
    batch_init(&c->b);
    if ((rc = backoff_init(&c->retry, cfg->pg_retry_max_ms < 100 ? cfg->pg_retry_max_ms : 100,
                           cfg->pg_retry_max_ms)) != 0) {
        snprintf(err, errlen, "back-off: %s", strerror(-rc));
        free(c);
        return NULL;
    }
    rd_kafka_conf_t *conf = kafka_conf_new(cfg->kafka_bootstrap, defaults, &cfg->kafka_props, err, errlen);
    if (conf == NULL)
        goto fail;
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, c);
    if ((c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why))) == NULL) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka consumer: %s", why);
        goto fail;
    }
    return c;

fail:
    sink_consumer_free(c);
    return NULL;
}

void sink_consumer_close(sink_consumer *c)
{
    if (c->subscribed)
        rd_kafka_consumer_close(c->rk);
    c->subscribed = 0;
}

void sink_consumer_free(sink_consumer *c)
{
    if (c == NULL)
        return;
    if (c->rk) {
        sink_consumer_close(c);
        rd_kafka_destroy(c->rk);
    }
    if (c->pg)
        PQfinish(c->pg);
    batch_free(&c->b);
    backoff_destroy(&c->retry);
    free(c);
}

rd_kafka_t *sink_consumer_handle(sink_consumer *c)
{
    return c->rk;
}

int sink_consumer_subscribe(sink_consumer *c, sink_writer *w, PGconn *pg)
{
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_resp_err_t err;

    c->writer = w;
    if (c->pg)
        PQfinish(c->pg);
    c->pg = pg;
    rd_kafka_topic_partition_list_add(sub, c->cfg->kafka_topic, RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(c->rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) {
        LOG_ERROR("kafka", "subscribe %s: %s", c->cfg->kafka_topic, rd_kafka_err2str(err));
        return -EIO;
    }
    c->subscribed = 1;
    return 0;
}

int sink_consumer_run(sink_consumer *c)
{
    long long first_at = 0;

    while (!atomic_load(&c->stop)) {
        long long wait = 100;
        if (c->b.n) {
            wait = first_at + c->cfg->batch_timeout_ms - mono_ms();
            if (wait < 0)
                wait = 0;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, (int)wait);
        if (m) {
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    LOG_WARN("kafka", "consume: %s", rd_kafka_message_errstr(m));
            } else {
                if (c->b.n == 0)
                    first_at = mono_ms();
                if (batch_add(&c->b, m->partition, m->offset, m->key, m->key_len, m->payload, m->len) != 0) {
                    LOG_ERROR("sink", "out of memory");
                    rd_kafka_message_destroy(m);
                    return -ENOMEM;
                }
            }
            rd_kafka_message_destroy(m);
        }
        if (c->b.n &&
            ((long long)c->b.n >= c->cfg->batch_rows || mono_ms() - first_at >= c->cfg->batch_timeout_ms))
            submit(c, 1);
        else if (c->paused && !sink_writer_failing(c->writer))
            set_paused(c, 0);
    }
    /* A clean stop writes what it has, once. */
    sink_writer_drain(c->writer, &c->b);
    return 0;
}

void sink_consumer_stop(sink_consumer *c)
{
    atomic_store(&c->stop, 1);
    backoff_wake(&c->retry);
}
