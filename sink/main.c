/*
 * The sink: consume Envelopes from Kafka in a consumer group (consumer.c),
 * write them to Postgres in batches that commit rows and offsets together
 * (writer.c, pg.c), send what cannot be written to the dead-letter topic
 * (dlq.c), and report on the admin port (status.c). Postgres down: pause
 * the partitions, retry with back-off, resume by itself.
 *
 * This file is the glue: the settings, the start (in the order each part
 * needs the others), the stop, and the schema's migrations before any of it
 * consumes.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <libpq-fe.h>

#include "admin.h"
#include "app.h"
#include "backoff.h"
#include "consumer.h"
#include "dlq.h"
#include "kafka.h"
#include "log.h"
#include "migrate.h"
#include "net.h"
#include "pg.h"
#include "sink.h"
#include "status.h"
#include "writer.h"

typedef struct sink {
    sink_config cfg;
    sink_dlq *dlq;
    sink_writer *writer;
    sink_consumer *consumer;
    PGconn *pg;    /* the main thread's, for the migrations; then the consumer's */
    backoff retry; /* the migrations, while Postgres is not there */
    int retry_ready;
    atomic_int stop;
    atomic_int migrated;
    admin_server *admin;
    sink_status status;
} sink;

static void *signal_main(void *arg)
{
    sink *s = arg;
    int sig = app_wait_signal();

    /* main() ends this thread with a signal of its own once stop is set: that one is no news. */
    if (!atomic_exchange(&s->stop, 1))
        LOG_INFO("sink", "stopping signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    backoff_wake(&s->retry);
    sink_consumer_stop(s->consumer);
    sink_writer_stop(s->writer);
    return NULL;
}

static int migrate_once(void *arg)
{
    sink *s = arg;
    char err[512];
    PGconn *pg = sink_pg_connect(&s->pg, s->cfg.pg_dsn);

    if (pg == NULL)
        return -EIO;
    if (migrate(pg, err, sizeof(err)) < 0) {
        LOG_WARN("pg", "migration failed, will retry: %s", err);
        return -EIO;
    }
    return 0;
}

static int stopping(void *arg)
{
    return atomic_load(&((sink *)arg)->stop);
}

int main(int argc, char **argv)
{
    static sink s;
    char errbuf[512];
    int status = 1, rc, started = 0;
    pthread_t sig_thread;

    app_block_signals();
    sink_metrics_init(&s.status.metrics);
    if ((rc = app_config_load(&sink_config_program, &s.cfg, argc, argv, &s.cfg.log_level,
                              &s.cfg.log_format)) >= 0) {
        status = rc;
        goto out;
    }
    /* The admin port is all it serves, but its cap should be what refuses connections, not EMFILE. */
    app_raise_nofile();
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
    /* Checked before anything starts; "[::]" becomes "0.0.0.0" here on a host without IPv6. */
    if ((rc = net_listen_addr("--admin-addr", &s.cfg.admin_addr, SOCK_STREAM, 0, errbuf, sizeof(errbuf))) !=
        0) {
        fprintf(stderr, "sink: --admin-addr %s\n", errbuf);
        status = rc == -EINVAL ? 2 : 1;
        goto out;
    }
    /* 100 ms first, as the writer's: a blip costs little; the cap is the operator's. */
    if ((rc = backoff_init(&s.retry, s.cfg.pg_retry_max_ms < 100 ? s.cfg.pg_retry_max_ms : 100,
                           s.cfg.pg_retry_max_ms)) != 0) {
        fprintf(stderr, "sink: back-off: %s\n", strerror(-rc));
        goto out;
    }
    s.retry_ready = 1;
    if ((s.consumer = sink_consumer_new(&s.cfg, &s.status.metrics, errbuf, sizeof(errbuf))) == NULL) {
        fprintf(stderr, "sink: %s\n", errbuf);
        status = 2;
        goto out;
    }
    if ((s.dlq = sink_dlq_new(s.cfg.kafka_bootstrap, &s.cfg.kafka_props, s.cfg.dlq_topic, s.cfg.kafka_topic,
                              errbuf, sizeof(errbuf))) == NULL) {
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
    s.status.consumer = sink_consumer_handle(s.consumer);
    s.status.migrated = &s.migrated;
    s.status.writer = s.writer;
    if (sink_status_watch(&s.status, errbuf, sizeof(errbuf)) != 0) {
        fprintf(stderr, "sink: %s\n", errbuf);
        goto out;
    }
    admin_handlers ah = {.thread_name = "sink-admin",
                         .not_ready = sink_status_not_ready,
                         .metrics = sink_status_metrics,
                         .ctx = &s.status};
    if ((s.admin = admin_start(s.cfg.admin_addr, &ah, errbuf, sizeof(errbuf))) == NULL) {
        fprintf(stderr, "sink: --admin-addr %s\n", errbuf);
        goto out;
    }
    if (pthread_create(&sig_thread, NULL, signal_main, &s) != 0) {
        fprintf(stderr, "sink: cannot start the signal thread\n");
        goto out;
    }
    started = 1;

    LOG_INFO("sink", "started kafka=%s topic=%s group=%s dlq=%s batch_rows=%lld batch_timeout_ms=%lld",
             s.cfg.kafka_bootstrap, s.cfg.kafka_topic, s.cfg.kafka_group, s.cfg.dlq_topic,
             (long long)s.cfg.batch_rows, (long long)s.cfg.batch_timeout_ms);
    kafka_probe(sink_consumer_handle(s.consumer), 5000);

    /* The schema first, under its advisory lock, however long Postgres takes to come. */
    if (backoff_retry(&s.retry, migrate_once, stopping, &s) != 0) {
        status = 0; /* stopped while waiting for Postgres */
        goto stop;
    }
    atomic_store(&s.migrated, 1);

    /* The consumer reads the stored offsets on the connection that migrated. */
    rc = sink_consumer_subscribe(s.consumer, s.writer, s.pg);
    s.pg = NULL;
    if (rc != 0)
        goto stop;
    if (sink_consumer_run(s.consumer) == 0)
        status = 0;
    sink_consumer_close(s.consumer);

stop:
    atomic_store(&s.stop, 1);
    pthread_kill(sig_thread, SIGTERM);
    pthread_join(sig_thread, NULL);
out:
    admin_stop(s.admin);
    sink_status_unwatch(&s.status);
    /* The consumer before the writer: leaving the group writes what it holds, through the writer. */
    sink_consumer_free(s.consumer);
    sink_writer_free(s.writer);
    sink_dlq_free(s.dlq);
    if (s.pg)
        PQfinish(s.pg);
    if (s.retry_ready)
        backoff_destroy(&s.retry);
    sink_metrics_free(&s.status.metrics);
    config_free(&sink_config_program, &s.cfg);
    /* Only a sink that started has stopped: --help, --version and bad settings say nothing of the kind. */
    if (started && status == 0)
        LOG_INFO("sink", "stopped");
    return status;
}
