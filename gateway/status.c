#include "status.h"

#include <event2/buffer.h>

#include "prom.h"

const char *gateway_status_not_ready(void *arg)
{
    gateway_status *st = arg;
    const struct rd_kafka_metadata *md = NULL;

    if (atomic_load(&st->gw->stopping))
        return "shutting down";
    if (queue_above_high_water(st->gw->q))
        return "the queue is above its high-water mark";
    /* A metadata request for no topic: answered by any broker that is up, without touching the data path. */
    if (rd_kafka_metadata(producer_handle(st->prod), 0, NULL, &md, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return "Kafka not reachable";
    rd_kafka_metadata_destroy(md);
    return NULL;
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
