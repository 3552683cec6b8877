#include "dlq.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <librdkafka/rdkafka.h>

#include "kafka.h"
#include "log.h"

struct sink_dlq {
    rd_kafka_t *rk;
    rd_kafka_topic_t *topic;
    const char *source_topic;
};

/*
 * A dead letter is the record as it came (up to its topic's max.message.bytes:
 * 2 MiB + 64 KiB as deploy/local/up makes the topics, for a gateway at 1 MiB
 * events) with the ingest_* headers added: past librdkafka's default
 * message.max.bytes of 1,000,000, which would refuse the largest ones. The
 * dead-letter topic's own limit decides; --kafka.message.max.bytes still wins.
 */
#define DLQ_MESSAGE_MAX_BYTES "8388608"

static const kafka_prop *dlq_defaults(void)
{
    static kafka_prop defaults[32];

    if (defaults[0].key == NULL) {
        size_t n = 0;
        for (; kafka_producer_defaults[n].key && n < sizeof(defaults) / sizeof(defaults[0]) - 2; n++)
            defaults[n] = kafka_producer_defaults[n];
        defaults[n] = (kafka_prop){"message.max.bytes", DLQ_MESSAGE_MAX_BYTES};
    }
    return defaults;
}

sink_dlq *sink_dlq_new(const char *bootstrap, const config_props *props, const char *dlq_topic,
                       const char *source_topic, char *err, size_t errlen)
{
    sink_dlq *d = calloc(1, sizeof(*d));

    if (d == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->source_topic = source_topic;
    if ((d->rk = kafka_new(RD_KAFKA_PRODUCER, bootstrap, dlq_defaults(), props, err, errlen)) == NULL)
        goto fail;
    if ((d->topic = rd_kafka_topic_new(d->rk, dlq_topic, NULL)) == NULL) {
        snprintf(err, errlen, "topic %s: %s", dlq_topic, rd_kafka_err2str(rd_kafka_last_error()));
        goto fail;
    }
    return d;

fail:
    sink_dlq_free(d);
    return NULL;
}

int sink_dlq_send(const batch *b, void *arg)
{
    sink_dlq *d = arg;
    char part[16], off[24];

    for (size_t i = 0; i < b->n; i++) {
        const batch_rec *r = &b->rec[i];
        if (!r->dead)
            continue;
        snprintf(part, sizeof(part), "%" PRId32, r->partition);
        snprintf(off, sizeof(off), "%" PRId64, r->offset);
        rd_kafka_headers_t *h = rd_kafka_headers_new(4);
        rd_kafka_header_add(h, "ingest_error", -1, r->dead, -1);
        rd_kafka_header_add(h, "ingest_topic", -1, d->source_topic, -1);
        rd_kafka_header_add(h, "ingest_partition", -1, part, -1);
        rd_kafka_header_add(h, "ingest_offset", -1, off, -1);
        rd_kafka_resp_err_t err =
            rd_kafka_producev(d->rk, RD_KAFKA_V_RKT(d->topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_VALUE(r->value, r->value_len), RD_KAFKA_V_KEY(r->key, r->key_len),
                              RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
        if (err) {
            rd_kafka_headers_destroy(h); /* not taken on failure */
            LOG_WARN("dlq", "produce: %s", rd_kafka_err2str(err));
            return -EIO;
        }
    }
    /* Acknowledged by Kafka, or the batch is not committed. */
    if (rd_kafka_flush(d->rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        LOG_WARN("dlq", "not acknowledged in time");
        return -EIO;
    }
    return 0;
}

void sink_dlq_free(sink_dlq *d)
{
    if (d == NULL)
        return;
    if (d->topic)
        rd_kafka_topic_destroy(d->topic);
    if (d->rk) {
        rd_kafka_flush(d->rk, 5000);
        rd_kafka_destroy(d->rk);
    }
    free(d);
}
