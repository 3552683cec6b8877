#include "status.h"

#include <event2/buffer.h>

#include <unistd.h>

#include "log.h"
#include "prom.h"

/*
 * The brokers the cluster has when one answers a metadata request for no
 * topic (no data path work) within timeout_ms; 0 when none does.
 */
static int kafka_answers(producer *prod, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    int brokers;

    if (rd_kafka_metadata(producer_handle(prod), 0, NULL, &md, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;
    brokers = md->broker_cnt > 0 ? md->broker_cnt : 1;
    rd_kafka_metadata_destroy(md);
    return brokers;
}

static void set_reachable(gateway_status *st, int brokers)
{
    int ok = brokers > 0;

    if (atomic_exchange(&st->gw->kafka_reachable, ok) != ok) {
        if (ok)
            LOG_INFO("kafka", "reachable brokers=%d", brokers);
        else
            LOG_WARN("kafka", "not reachable: the gateway reports not ready");
    }
}

static void *watch_main(void *arg)
{
    gateway_status *st = arg;

    pthread_setname_np(pthread_self(), "gw-kafka-watch");
    while (!atomic_load(&st->quit)) {
        /* A second between questions, in steps short enough for a quick stop. */
        for (int i = 0; i < 10 && !atomic_load(&st->quit); i++)
            usleep(100000);
        if (!atomic_load(&st->quit))
            set_reachable(st, kafka_answers(st->prod, 1000));
    }
    return NULL;
}

int gateway_status_watch(gateway_status *st, int timeout_ms)
{
    atomic_init(&st->quit, 0);
    atomic_store(&st->gw->kafka_reachable, -1);
    set_reachable(st, kafka_answers(st->prod, timeout_ms));
    if (pthread_create(&st->watcher, NULL, watch_main, st) != 0)
        return -1;
    st->watching = 1;
    return 0;
}

void gateway_status_unwatch(gateway_status *st)
{
    if (!st->watching)
        return;
    atomic_store(&st->quit, 1);
    pthread_join(st->watcher, NULL);
    st->watching = 0;
}

const char *gateway_not_ready(gateway *gw)
{
    if (atomic_load(&gw->stopping))
        return "shutting down";
    if (queue_above_high_water(gw->q))
        return "the queue is above its high-water mark";
    if (atomic_load(&gw->kafka_reachable) != 1)
        return "Kafka not reachable";
    return NULL;
}

const char *gateway_status_not_ready(void *arg)
{
    return gateway_not_ready(((gateway_status *)arg)->gw);
}

void gateway_status_metrics(void *arg, struct evbuffer *out)
{
    gateway_status *st = arg;
    const producer_stats *ps = producer_get_stats(st->prod);

    gateway_metrics_write(&st->gw->metrics, out);
    prom_family(out, "ingest_queue_depth", "gauge", "Events in the shared queue, waiting for the producer");
    prom_sample_u64(out, "ingest_queue_depth", NULL, queue_depth(st->gw->q));
    prom_family(out, "ingest_queue_capacity", "gauge", "Events the shared queue holds at most");
    prom_sample_u64(out, "ingest_queue_capacity", NULL, queue_capacity(st->gw->q));
    prom_family(out, "ingest_queue_high_water", "gauge", "Queue depth from which requests are refused");
    prom_sample_u64(out, "ingest_queue_high_water", NULL, queue_high_water(st->gw->q));
    prom_family(out, "ingest_kafka_produced_total", "counter", "Records handed to librdkafka");
    prom_sample_u64(out, "ingest_kafka_produced_total", NULL, atomic_load(&ps->produced));
    prom_family(out, "ingest_kafka_delivered_total", "counter", "Records Kafka acknowledged");
    prom_sample_u64(out, "ingest_kafka_delivered_total", NULL, atomic_load(&ps->delivered));
    prom_family(out, "ingest_kafka_failed_total", "counter",
                "Records librdkafka refused or could not deliver");
    prom_sample_u64(out, "ingest_kafka_failed_total", NULL, atomic_load(&ps->failed));
}
