#include "status.h"
#include "spooler.h"

#include <stdio.h>
#include <unistd.h>

#include <event2/buffer.h>

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

/* Ask the topic's max.message.bytes again this often (in checks, a second apart): topics change. */
#define TOPIC_CHECK_EVERY 60

/*
 * Whether the topic takes the largest record our limits let in: when it
 * does not, a client's event can pass --max-event-bytes and still be
 * refused by the broker (a too_large after the fact). Said once, and again
 * only when the topic's answer changes.
 */
static void check_topic(gateway_status *st)
{
    const gateway_config *cfg = st->gw->cfg;
    size_t have = producer_topic_max_bytes(st->prod, st->timeout_ms);

    if (have == 0 || have == st->topic_max)
        return;
    st->topic_max = have;
    if (have >= st->record_max) {
        LOG_INFO("kafka", "topic %s takes records up to %zu bytes (max.message.bytes); the largest is %zu",
                 cfg->kafka_topic, have, st->record_max);
        return;
    }
    LOG_WARN("kafka",
             "topic %s takes records up to %zu bytes (max.message.bytes), but an event within "
             "--max-event-bytes=%zu can make a record of %zu: larger ones are refused with too_large (413). "
             "Set the topic's max.message.bytes to at least %zu, or lower --max-event-bytes",
             cfg->kafka_topic, have, cfg->max_event_bytes, st->record_max, st->record_max);
}

/*
 * The watcher's check. Its answer is kept in gw->kafka_reachable rather
 * than read from the watch, because gRPC's Health/Check asks with the
 * gateway alone, and may still ask after the watcher has stopped.
 */
static const char *check_kafka(void *arg)
{
    gateway_status *st = arg;

    set_reachable(st, kafka_answers(st->prod, st->timeout_ms));
    /*
     * Not on the first check, which runs on the starting thread: the
     * topic's answer is not worth a slower start. Until one comes, every
     * check asks; then once a minute.
     */
    if (st->rounds++ > 0 && atomic_load(&st->gw->kafka_reachable) == 1 && st->record_max &&
        (st->topic_max == 0 || st->rounds % TOPIC_CHECK_EVERY == 0))
        check_topic(st);
    return atomic_load(&st->gw->kafka_reachable) == 1 ? NULL : "Kafka not reachable";
}

int gateway_status_watch(gateway_status *st, int timeout_ms)
{
    char err[128];

    st->timeout_ms = timeout_ms;
    atomic_store(&st->gw->kafka_reachable, -1);
    /* Asks once now, on this thread, then once a second from the watcher's. */
    if ((st->watcher = watch_start("gw-kafka-watch", 1000, 0, check_kafka, st, err, sizeof(err))) == NULL) {
        LOG_ERROR("gateway", "%s", err);
        return -1;
    }
    return 0;
}

void gateway_status_unwatch(gateway_status *st)
{
    watch_stop(st->watcher);
    st->watcher = NULL;
}

const char *gateway_not_ready(gateway *gw)
{
    const char *why;

    if (atomic_load(&gw->stopping))
        return "shutting down";
    if (queue_above_high_water(gw->q))
        return "the queue is above its high-water mark";
    if (gw_budget_queued_full(&gw->budget))
        return "the queue holds its share of the memory budget";
    if (gw->spooler && (why = gw_spooler_not_ready(gw->spooler)) != NULL)
        return why;
    if (atomic_load(&gw->kafka_reachable) != 1)
        return "Kafka not reachable";
    if (atomic_load(&gw->grpc_stalled))
        return "the gRPC listener does not answer new clients";
    return NULL;
}

const char *gateway_status_not_ready(void *arg)
{
    return gateway_not_ready(((gateway_status *)arg)->gw);
}

/* From /proc/self/statm: what the pod's memory limit is measured against. 0 when it cannot be read. */
static uint64_t resident_bytes(void)
{
    unsigned long long size, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
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
    const gw_budget *b = &st->gw->budget;
    prom_family(out, "ingest_memory_budget_bytes", "gauge",
                "--memory-budget's shares: librdkafka's buffer, queued records, bodies and acks");
    prom_sample_u64(out, "ingest_memory_budget_bytes", "share=\"kafka\"", b->kafka);
    prom_sample_u64(out, "ingest_memory_budget_bytes", "share=\"queued\"", b->queued);
    prom_sample_u64(out, "ingest_memory_budget_bytes", "share=\"inbound\"", b->inbound);
    prom_family(out, "ingest_memory_used_bytes", "gauge", "Bytes held now in a share of the memory budget");
    prom_sample_u64(out, "ingest_memory_used_bytes", "share=\"queued\"", atomic_load(&b->queued_used));
    prom_sample_u64(out, "ingest_memory_used_bytes", "share=\"inbound\"", atomic_load(&b->inbound_used));
    prom_family(out, "ingest_memory_inbound_peak_bytes", "gauge", "The most the inbound share has held");
    prom_sample_u64(out, "ingest_memory_inbound_peak_bytes", NULL, atomic_load(&b->inbound_peak));
    prom_family(out, "process_resident_memory_bytes", "gauge", "Resident set size of the process");
    prom_sample_u64(out, "process_resident_memory_bytes", NULL, resident_bytes());
    prom_family(out, "ingest_kafka_produced_total", "counter", "Records handed to librdkafka");
    prom_sample_u64(out, "ingest_kafka_produced_total", NULL, atomic_load(&ps->produced));
    prom_family(out, "ingest_kafka_delivered_total", "counter", "Records Kafka acknowledged");
    prom_sample_u64(out, "ingest_kafka_delivered_total", NULL, atomic_load(&ps->delivered));
    prom_family(out, "ingest_kafka_failed_total", "counter",
                "Records librdkafka refused or could not deliver");
    prom_sample_u64(out, "ingest_kafka_failed_total", NULL, atomic_load(&ps->failed));
    if (st->gw->spooler)
        gw_spooler_metrics(st->gw->spooler, out);
}
