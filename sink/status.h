/*
 * What the sink reports on its admin port (common/admin.h): ready when the
 * schema is migrated, the writer is not failing, and Postgres and Kafka
 * answer; and its metrics: what it wrote, and how far behind it is.
 *
 * Postgres and Kafka are asked by a watcher thread (common/watch.h), each
 * within a bound, Postgres on a connection of its own (never the writer's,
 * which a frozen Postgres can hold for ever), so that a probe never waits on
 * the network: /healthz and /readyz are answered at once, whatever Postgres
 * or Kafka do.
 */
#ifndef INGEST_SINK_STATUS_H
#define INGEST_SINK_STATUS_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "prom.h"

struct evbuffer;

typedef struct sink_metrics {
    atomic_uint_fast64_t records;    /* consumed records whose batch committed */
    atomic_uint_fast64_t rows;       /* rows new to `events` */
    atomic_uint_fast64_t duplicates; /* rows already there (redelivered, or a client's retry) */
    atomic_uint_fast64_t dead;       /* records sent to the dead-letter topic */
    atomic_uint_fast64_t batches;    /* committed transactions */
    atomic_uint_fast64_t failures;   /* failed write attempts (each retried) */
    prom_histogram batch_duration;   /* one committed batch, first attempt to commit */

    /* Per partition of the topic: the next offset Postgres holds, -1 when not ours. Under `lock`. */
    pthread_mutex_t lock;
    int64_t *next;
    int n_next;
} sink_metrics;

struct sink_writer;

typedef struct sink_status {
    const char *pg_dsn;
    const char *topic;
    rd_kafka_t *consumer;
    const atomic_int *migrated;       /* 1 once the schema is there */
    const struct sink_writer *writer; /* failing while it cannot write */
    sink_metrics metrics;

    struct watch *watcher;
    int pg_answers, kafka_answers; /* the watcher's last answers, for logging changes: its thread only */
} sink_status;

void sink_metrics_init(sink_metrics *m);
void sink_metrics_free(sink_metrics *m);
/* Partition p is ours from offset `next` on (-1 to forget it). 0 or -ENOMEM. */
int sink_metrics_set_next(sink_metrics *m, int32_t p, int64_t next);
/* Forget every partition (revoked). */
void sink_metrics_forget_all(sink_metrics *m);

/*
 * Start asking Postgres and Kafka: once now, on the calling thread (two
 * seconds at most), then every second from a watcher thread. The fields
 * above the metrics must be set, and stay valid until
 * sink_status_unwatch(). 0, or -1 with the reason in err.
 */
int sink_status_watch(sink_status *st, char *err, size_t errlen);
/* Stop the watcher; no probe may ask any more. No-op when it never started. */
void sink_status_unwatch(sink_status *st);

/*
 * Why the sink is not ready, or NULL when it is: an admin_handlers.not_ready
 * for a sink_status. Reads flags and the watcher's last answer; never
 * blocks.
 */
const char *sink_status_not_ready(void *sink_status);

/* Everything /metrics shows: an admin_handlers.metrics for a sink_status. */
void sink_status_metrics(void *sink_status, struct evbuffer *out);

#endif
