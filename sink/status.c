#include "status.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "log.h"
#include "pg.h"
#include "watch.h"
#include "writer.h"

void sink_metrics_init(sink_metrics *m)
{
    memset(m, 0, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
}

void sink_metrics_free(sink_metrics *m)
{
    free(m->next);
    m->next = NULL;
    pthread_mutex_destroy(&m->lock);
}

int sink_metrics_set_next(sink_metrics *m, int32_t p, int64_t next)
{
    int rc = 0;

    if (p < 0)
        return -EINVAL;
    pthread_mutex_lock(&m->lock);
    if (p >= m->n_next) {
        int n = p + 1;
        int64_t *grown = realloc(m->next, (size_t)n * sizeof(*grown));
        if (grown == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        for (int i = m->n_next; i < n; i++)
            grown[i] = -1;
        m->next = grown;
        m->n_next = n;
    }
    m->next[p] = next;
out:
    pthread_mutex_unlock(&m->lock);
    return rc;
}

void sink_metrics_forget_all(sink_metrics *m)
{
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < m->n_next; i++)
        m->next[i] = -1;
    pthread_mutex_unlock(&m->lock);
}

/* Each question waits this long at most: a round asks both, then waits a second. */
#define CHECK_TIMEOUT_MS 1000
#define CHECK_PERIOD_MS  1000
/* Both questions are bounded, but not the name lookup (sink_pg_ping): an answer this old is none. */
#define CHECK_STALE_MS 5000

/* The watcher's check: Postgres, then Kafka, each within CHECK_TIMEOUT_MS. */
static const char *check(void *arg)
{
    sink_status *st = arg;
    const struct rd_kafka_metadata *md = NULL;
    char err[256];
    int pg, kafka;

    /* A session of its own: the writer's connection may be stuck in a frozen one for ever. */
    pg = sink_pg_ping(st->pg_dsn, CHECK_TIMEOUT_MS, err, sizeof(err)) == 0;
    if (pg != st->pg_answers) {
        if (pg)
            LOG_INFO("ready", "Postgres answers again");
        else
            LOG_WARN("ready", "Postgres does not answer: %s", err);
        st->pg_answers = pg;
    }
    kafka = rd_kafka_metadata(st->consumer, 0, NULL, &md, CHECK_TIMEOUT_MS) == RD_KAFKA_RESP_ERR_NO_ERROR;
    if (kafka)
        rd_kafka_metadata_destroy(md);
    if (kafka != st->kafka_answers) {
        if (kafka)
            LOG_INFO("ready", "Kafka answers again");
        else
            LOG_WARN("ready", "Kafka does not answer");
        st->kafka_answers = kafka;
    }
    if (!pg)
        return "Postgres not reachable";
    if (!kafka)
        return "Kafka not reachable";
    return NULL;
}

int sink_status_watch(sink_status *st, char *err, size_t errlen)
{
    /* Both taken for answering at first: only a change from that is worth a line. */
    st->pg_answers = st->kafka_answers = 1;
    st->watcher = watch_start("sink-watch", CHECK_PERIOD_MS, CHECK_STALE_MS, check, st, err, errlen);
    return st->watcher ? 0 : -1;
}

void sink_status_unwatch(sink_status *st)
{
    watch_stop(st->watcher);
    st->watcher = NULL;
}

const char *sink_status_not_ready(void *arg)
{
    sink_status *st = arg;

    /* The flags first: they are fresh, the watcher's answer is up to a second old. */
    if (!atomic_load(st->migrated))
        return "schema not migrated yet";
    if (sink_writer_failing(st->writer))
        return "cannot write to Postgres";
    return watch_reason(st->watcher);
}

static void counter(struct evbuffer *out, const char *name, const char *help, const atomic_uint_fast64_t *v)
{
    prom_family(out, name, "counter", help);
    prom_sample_u64(out, name, NULL, atomic_load_explicit(v, memory_order_relaxed));
}

void sink_status_metrics(void *arg, struct evbuffer *out)
{
    sink_status *st = arg;
    sink_metrics *m = &st->metrics;
    char labels[96];

    counter(out, "ingest_sink_records_total", "Consumed records whose batch committed", &m->records);
    counter(out, "ingest_sink_rows_written_total", "Rows written to events", &m->rows);
    counter(out, "ingest_sink_duplicates_total", "Rows already in events (redelivered, or a client's retry)",
            &m->duplicates);
    counter(out, "ingest_sink_dead_letters_total", "Records sent to the dead-letter topic", &m->dead);
    counter(out, "ingest_sink_batches_total", "Batches committed (rows and offsets in one transaction)",
            &m->batches);
    counter(out, "ingest_sink_write_failures_total", "Failed attempts to write a batch (each is retried)",
            &m->failures);
    prom_family(out, "ingest_sink_batch_duration_seconds", "histogram",
                "From a batch's first write attempt to its commit");
    prom_histogram_write(out, "ingest_sink_batch_duration_seconds", NULL, &m->batch_duration);

    /*
     * Lag: the partition's high watermark (librdkafka's cached value, from
     * the last fetch: no request on a scrape) less the next offset Postgres
     * holds. Only partitions this sink owns and has a watermark for.
     */
    prom_family(out, "ingest_sink_consumer_lag", "gauge",
                "Records in Kafka not yet in Postgres, per partition this sink owns");
    pthread_mutex_lock(&m->lock);
    for (int p = 0; p < m->n_next; p++) {
        int64_t lo, hi;
        if (m->next[p] < 0 ||
            rd_kafka_get_watermark_offsets(st->consumer, st->topic, p, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            continue;
        int64_t from = m->next[p] > lo ? m->next[p] : lo;
        snprintf(labels, sizeof(labels), "topic=\"%s\",partition=\"%d\"", st->topic, p);
        prom_sample_u64(out, "ingest_sink_consumer_lag", labels, hi > from ? (uint64_t)(hi - from) : 0);
    }
    pthread_mutex_unlock(&m->lock);
}
