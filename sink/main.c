/*
 * The sink: consume Envelopes from Kafka in a consumer group, write them to
 * Postgres in batches that commit rows and offsets together (pg.c), send
 * what cannot be written to the dead-letter topic, and resume each assigned
 * partition from the offset stored in Postgres. Postgres down: pause the
 * partitions, retry with back-off, resume by itself.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "app.h"
#include "batch.h"
#include "kafka.h"
#include "log.h"
#include "migrate.h"
#include "pg.h"
#include "sink.h"

typedef struct sink {
    sink_config cfg;
    rd_kafka_t *consumer;
    rd_kafka_t *dlq;
    rd_kafka_topic_t *dlq_topic;
    PGconn *pg;
    batch b;
    int paused;
    atomic_int stop;
} sink;

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Server notices ("relation already exists, skipping") at debug level, not on stderr. */
static void pg_notice(void *arg, const char *message)
{
    (void)arg;
    LOG_DEBUG("pg", "%s", message);
}

/* A usable connection, or NULL (logged) when Postgres does not answer. */
static PGconn *pg_connected(sink *s)
{
    if (s->pg && PQstatus(s->pg) == CONNECTION_OK)
        return s->pg;
    if (s->pg)
        PQfinish(s->pg);
    s->pg = PQconnectdb(s->cfg.pg_dsn);
    if (PQstatus(s->pg) != CONNECTION_OK) {
        LOG_WARN("pg", "not reachable: %s", PQerrorMessage(s->pg));
        return NULL;
    }
    PQsetNoticeProcessor(s->pg, pg_notice, NULL);
    LOG_INFO("pg", "connected server_version=%d", PQserverVersion(s->pg));
    return s->pg;
}

/* The dead letters of a batch, produced and acknowledged before its offsets commit. */
static int produce_dead(const batch *b, void *arg)
{
    sink *s = arg;
    char part[16], off[24];

    for (size_t i = 0; i < b->n; i++) {
        const batch_rec *r = &b->rec[i];
        if (!r->dead)
            continue;
        snprintf(part, sizeof(part), "%" PRId32, r->partition);
        snprintf(off, sizeof(off), "%" PRId64, r->offset);
        rd_kafka_headers_t *h = rd_kafka_headers_new(4);
        rd_kafka_header_add(h, "ingest_error", -1, r->dead, -1);
        rd_kafka_header_add(h, "ingest_topic", -1, s->cfg.kafka_topic, -1);
        rd_kafka_header_add(h, "ingest_partition", -1, part, -1);
        rd_kafka_header_add(h, "ingest_offset", -1, off, -1);
        rd_kafka_resp_err_t err =
            rd_kafka_producev(s->dlq, RD_KAFKA_V_RKT(s->dlq_topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_VALUE(r->value, r->value_len), RD_KAFKA_V_KEY(r->key, r->key_len),
                              RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
        if (err) {
            rd_kafka_headers_destroy(h);
            LOG_WARN("dlq", "produce: %s", rd_kafka_err2str(err));
            return -1;
        }
    }
    /* Acknowledged by Kafka, or the batch is not committed. */
    if (rd_kafka_flush(s->dlq, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        LOG_WARN("dlq", "not acknowledged in time");
        return -1;
    }
    return 0;
}

static void set_paused(sink *s, int pause)
{
    rd_kafka_topic_partition_list_t *parts = NULL;

    if (s->paused == pause || rd_kafka_assignment(s->consumer, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    if (pause)
        rd_kafka_pause_partitions(s->consumer, parts);
    else
        rd_kafka_resume_partitions(s->consumer, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    s->paused = pause;
    LOG_INFO("sink", "%s consumption", pause ? "paused" : "resumed");
}

/* One attempt at the pending batch. 0 when written (or nothing to write), -EIO to retry. */
static int flush_once(sink *s)
{
    char err[512];
    PGconn *pg;

    if (s->b.n == 0)
        return 0;
    if ((pg = pg_connected(s)) == NULL)
        return -EIO;
    if (pg_write_batch(pg, s->cfg.kafka_topic, &s->b, produce_dead, s, err, sizeof(err)) != 0) {
        LOG_WARN("pg", "batch of %zu not written, will retry: %s", s->b.n, err);
        return -EIO;
    }
    LOG_DEBUG("sink", "wrote batch records=%zu rows=%zu", s->b.n, s->b.rows);
    batch_clear(&s->b);
    return 0;
}

/* Write the pending batch, retrying with back-off while paused; 0, or -1 when stopping first. */
static int flush(sink *s)
{
    long long backoff = 100;

    while (flush_once(s) != 0) {
        set_paused(s, 1);
        /* Keep serving the group (rebalances) while waiting; paused partitions bring nothing. */
        long long until = mono_ms() + backoff;
        while (mono_ms() < until) {
            if (atomic_load(&s->stop))
                return -1;
            rd_kafka_message_t *m = rd_kafka_consumer_poll(s->consumer, 50);
            if (m) {
                if (!m->err &&
                    batch_add(&s->b, m->partition, m->offset, m->key, m->key_len, m->payload, m->len) != 0)
                    LOG_ERROR("sink", "out of memory");
                rd_kafka_message_destroy(m);
            }
        }
        backoff = backoff * 2 > s->cfg.pg_retry_max_ms ? s->cfg.pg_retry_max_ms : backoff * 2;
    }
    set_paused(s, 0);
    return 0;
}

/* On assignment, start each partition where Postgres says its rows end. */
static void on_assign(sink *s, rd_kafka_topic_partition_list_t *parts)
{
    char err[512];
    int max = 0;

    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition + 1 > max)
            max = parts->elems[i].partition + 1;
    int64_t *next = calloc((size_t)(max ? max : 1), sizeof(*next));
    long long backoff = 100;
    for (;;) {
        PGconn *pg = pg_connected(s);
        if (pg && pg_load_offsets(pg, s->cfg.kafka_topic, next, max, err, sizeof(err)) == 0)
            break;
        if (pg)
            LOG_WARN("pg", "cannot read stored offsets, will retry: %s", err);
        if (atomic_load(&s->stop)) {
            free(next);
            return;
        }
        sleep_ms(backoff);
        backoff = backoff * 2 > s->cfg.pg_retry_max_ms ? s->cfg.pg_retry_max_ms : backoff * 2;
    }
    for (int i = 0; i < parts->cnt; i++) {
        int p = parts->elems[i].partition;
        parts->elems[i].offset = next[p] >= 0 ? next[p] : RD_KAFKA_OFFSET_BEGINNING;
        LOG_INFO("sink", "assigned topic=%s partition=%d from_offset=%" PRId64, parts->elems[i].topic, p,
                 next[p]);
    }
    free(next);
    rd_kafka_assign(s->consumer, parts);
    s->paused = 0;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque)
{
    sink *s = opaque;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        on_assign(s, parts);
    } else {
        /* Write what we have of them once; if that fails, the next owner reads it again from Postgres's
         * offsets. */
        if (flush_once(s) != 0)
            batch_clear(&s->b);
        LOG_INFO("sink", "partitions revoked count=%d", parts->cnt);
        rd_kafka_assign(rk, NULL);
        s->paused = 0;
    }
}

static void *signal_main(void *arg)
{
    sink *s = arg;
    int sig = app_wait_signal();

    LOG_INFO("sink", "stopping signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    atomic_store(&s->stop, 1);
    return NULL;
}

static int run(sink *s)
{
    long long first_at = 0;

    while (!atomic_load(&s->stop)) {
        long long wait = 100;
        if (s->b.n) {
            wait = first_at + s->cfg.batch_timeout_ms - mono_ms();
            if (wait < 0)
                wait = 0;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(s->consumer, (int)wait);
        if (m) {
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    LOG_WARN("kafka", "consume: %s", rd_kafka_message_errstr(m));
            } else {
                if (s->b.n == 0)
                    first_at = mono_ms();
                if (batch_add(&s->b, m->partition, m->offset, m->key, m->key_len, m->payload, m->len) != 0) {
                    LOG_ERROR("sink", "out of memory");
                    rd_kafka_message_destroy(m);
                    return -1;
                }
            }
            rd_kafka_message_destroy(m);
        }
        if (s->b.n &&
            ((long long)s->b.n >= s->cfg.batch_rows || mono_ms() - first_at >= s->cfg.batch_timeout_ms))
            if (flush(s) != 0)
                break;
    }
    /* A clean stop writes what it has, once. */
    flush_once(s);
    return 0;
}

int main(int argc, char **argv)
{
    static sink s;
    char errbuf[512];
    int status = 1, rc;
    pthread_t sig_thread;

    app_block_signals();
    batch_init(&s.b);
    if ((rc = app_config_load(&sink_config_program, &s.cfg, argc, argv, &s.cfg.log_level,
                              &s.cfg.log_format)) >= 0) {
        status = rc;
        goto out;
    }
    char group[256];
    snprintf(group, sizeof(group), "%s", s.cfg.kafka_group);
    const kafka_prop consumer_defaults[] = {{"group.id", group},
                                            {"enable.auto.commit", "false"},
                                            {"auto.offset.reset", "earliest"},
                                            {NULL, NULL}};
    rd_kafka_conf_t *conf =
        kafka_conf_new(s.cfg.kafka_bootstrap, consumer_defaults, &s.cfg.kafka_props, errbuf, sizeof(errbuf));
    if (conf == NULL) {
        fprintf(stderr, "sink: %s\n", errbuf);
        status = 2;
        goto out;
    }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, &s);
    if ((s.consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errbuf, sizeof(errbuf))) == NULL) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "sink: kafka consumer: %s\n", errbuf);
        status = 2;
        goto out;
    }
    if ((s.dlq = kafka_new(RD_KAFKA_PRODUCER, s.cfg.kafka_bootstrap, kafka_producer_defaults, NULL, errbuf,
                           sizeof(errbuf))) == NULL) {
        fprintf(stderr, "sink: dead-letter producer: %s\n", errbuf);
        status = 2;
        goto out;
    }
    s.dlq_topic = rd_kafka_topic_new(s.dlq, s.cfg.dlq_topic, NULL);
    pthread_create(&sig_thread, NULL, signal_main, &s);

    LOG_INFO("sink", "started kafka=%s topic=%s group=%s dlq=%s batch_rows=%lld batch_timeout_ms=%lld",
             s.cfg.kafka_bootstrap, s.cfg.kafka_topic, s.cfg.kafka_group, s.cfg.dlq_topic,
             (long long)s.cfg.batch_rows, (long long)s.cfg.batch_timeout_ms);
    kafka_probe(s.consumer, 5000);

    /* The schema first, under its advisory lock, however long Postgres takes to come. */
    long long backoff = 100;
    for (;;) {
        PGconn *pg = pg_connected(&s);
        if (pg && migrate(pg, errbuf, sizeof(errbuf)) >= 0)
            break;
        if (pg)
            LOG_WARN("pg", "migration failed, will retry: %s", errbuf);
        if (atomic_load(&s.stop))
            goto stopped;
        sleep_ms(backoff);
        backoff = backoff * 2 > s.cfg.pg_retry_max_ms ? s.cfg.pg_retry_max_ms : backoff * 2;
    }

    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, s.cfg.kafka_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(s.consumer, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) {
        LOG_ERROR("kafka", "subscribe %s: %s", s.cfg.kafka_topic, rd_kafka_err2str(err));
        goto stopped;
    }
    if (run(&s) == 0)
        status = 0;
    rd_kafka_consumer_close(s.consumer);
    goto joined;

stopped:
    status = 0;
joined:
    atomic_store(&s.stop, 1);
    pthread_kill(sig_thread, SIGTERM);
    pthread_join(sig_thread, NULL);
out:
    if (s.consumer)
        rd_kafka_destroy(s.consumer);
    if (s.dlq_topic)
        rd_kafka_topic_destroy(s.dlq_topic);
    if (s.dlq) {
        rd_kafka_flush(s.dlq, 5000);
        rd_kafka_destroy(s.dlq);
    }
    if (s.pg)
        PQfinish(s.pg);
    batch_free(&s.b);
    config_free(&sink_config_program, &s.cfg);
    if (status == 0)
        LOG_INFO("sink", "stopped");
    return status;
}
