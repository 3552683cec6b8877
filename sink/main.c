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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "admin.h"
#include "status.h"
#include "app.h"
#include "batch.h"
#include "dlq.h"
#include "kafka.h"
#include "log.h"
#include "migrate.h"
#include "net.h"
#include "pg.h"
#include "sink.h"
#include "writer.h"

typedef struct sink {
    sink_config cfg;
    rd_kafka_t *consumer;
    sink_dlq *dlq;
    sink_writer *writer;
    PGconn *pg; /* the main thread's: stored offsets at assignment, migrations */
    batch b;    /* the batch being filled */
    int paused;
    atomic_int stop;
    atomic_int migrated;
    admin_server *admin;
    sink_status status;
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

static PGconn *connected(sink *s)
{
    return sink_pg_connect(&s->pg, s->cfg.pg_dsn);
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

/*
 * Wait until the writer has finished its batch. While it cannot write,
 * pause consumption and keep serving the group; with `serve` 0 (inside a
 * rebalance callback) just wait.
 */
static void wait_writer(sink *s, int serve)
{
    while (sink_writer_wait(s->writer, 50) != 0) {
        if (!serve)
            continue;
        if (sink_writer_failing(s->writer))
            set_paused(s, 1);
        /* Rebalances are served here; paused partitions bring nothing, what was fetched joins the batch. */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(s->consumer, 0);
        if (m) {
            if (!m->err &&
                batch_add(&s->b, m->partition, m->offset, m->key, m->key_len, m->payload, m->len) != 0)
                LOG_ERROR("sink", "out of memory");
            rd_kafka_message_destroy(m);
        }
    }
}

/* Hand the filled batch to the writer (after the one before it is written). */
static void submit(sink *s, int serve)
{
    wait_writer(s, serve);
    if (s->b.n == 0)
        return;
    sink_writer_submit(s->writer, &s->b);
    if (s->paused && !sink_writer_failing(s->writer))
        set_paused(s, 0);
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
        PGconn *pg = connected(s);
        if (pg && sink_pg_load_offsets(pg, s->cfg.kafka_topic, next, max, err, sizeof(err)) == 0)
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
        sink_metrics_set_next(&s->status.metrics, p, next[p] >= 0 ? next[p] : 0);
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
        sink_writer_drain(s->writer, &s->b);
        LOG_INFO("sink", "partitions revoked count=%d", parts->cnt);
        sink_metrics_forget_all(&s->status.metrics);
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
    sink_writer_stop(s->writer);
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
            submit(s, 1);
        else if (s->paused && !sink_writer_failing(s->writer))
            set_paused(s, 0);
    }
    /* A clean stop writes what it has, once. */
    sink_writer_drain(s->writer, &s->b);
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
    sink_metrics_init(&s.status.metrics);
    if ((rc = app_config_load(&sink_config_program, &s.cfg, argc, argv, &s.cfg.log_level,
                              &s.cfg.log_format)) >= 0) {
        status = rc;
        goto out;
    }
    /* A DSN libpq cannot even parse is a setting's fault: say so now, not as an endless retry. */
    char *dsn_err = NULL;
    PQconninfoOption *dsn_opts = PQconninfoParse(s.cfg.pg_dsn, &dsn_err);
    if (dsn_opts == NULL) {
        fprintf(stderr, "sink: --pg-dsn: %s", dsn_err ? dsn_err : "cannot be parsed\n");
        PQfreemem(dsn_err);
        status = 2;
        goto out;
    }
    PQconninfoFree(dsn_opts);
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (net_parse_addr(s.cfg.admin_addr, &ss, &sslen, errbuf, sizeof(errbuf)) != 0) {
        fprintf(stderr, "sink: --admin-addr %s\n", errbuf);
        status = 2;
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
    if ((s.dlq = sink_dlq_new(s.cfg.kafka_bootstrap, s.cfg.dlq_topic, s.cfg.kafka_topic, errbuf,
                              sizeof(errbuf))) == NULL) {
        fprintf(stderr, "sink: dead-letter producer: %s\n", errbuf);
        status = 2;
        goto out;
    }
    if ((s.writer = sink_writer_new(s.cfg.pg_dsn, s.cfg.kafka_topic, s.cfg.pg_retry_max_ms, s.dlq,
                                    &s.status.metrics, errbuf, sizeof(errbuf))) == NULL) {
        fprintf(stderr, "sink: %s\n", errbuf);
        goto out;
    }
    s.status.pg_dsn = s.cfg.pg_dsn;
    s.status.topic = s.cfg.kafka_topic;
    s.status.consumer = s.consumer;
    s.status.migrated = &s.migrated;
    s.status.writer = s.writer;
    admin_handlers ah = {.thread_name = "sink-admin",
                         .not_ready = sink_status_not_ready,
                         .metrics = sink_status_metrics,
                         .ctx = &s.status};
    if ((s.admin = admin_start(s.cfg.admin_addr, &ah, errbuf, sizeof(errbuf))) == NULL) {
        fprintf(stderr, "sink: --admin-addr %s\n", errbuf);
        goto out;
    }
    pthread_create(&sig_thread, NULL, signal_main, &s);

    LOG_INFO("sink", "started kafka=%s topic=%s group=%s dlq=%s batch_rows=%lld batch_timeout_ms=%lld",
             s.cfg.kafka_bootstrap, s.cfg.kafka_topic, s.cfg.kafka_group, s.cfg.dlq_topic,
             (long long)s.cfg.batch_rows, (long long)s.cfg.batch_timeout_ms);
    kafka_probe(s.consumer, 5000);

    /* The schema first, under its advisory lock, however long Postgres takes to come. */
    long long backoff = 100;
    for (;;) {
        PGconn *pg = connected(&s);
        if (pg && migrate(pg, errbuf, sizeof(errbuf)) >= 0) {
            atomic_store(&s.migrated, 1);
            break;
        }
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
    admin_stop(s.admin);
    if (s.consumer)
        rd_kafka_destroy(s.consumer);
    /* The consumer left the group above, its revoke written through the writer: the writer may go. */
    sink_writer_free(s.writer);
    sink_dlq_free(s.dlq);
    if (s.pg)
        PQfinish(s.pg);
    batch_free(&s.b);
    sink_metrics_free(&s.status.metrics);
    config_free(&sink_config_program, &s.cfg);
    if (status == 0)
        LOG_INFO("sink", "stopped");
    return status;
}
