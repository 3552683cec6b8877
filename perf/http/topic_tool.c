/*
 * The Kafka side of perf/http's bookkeeping, in milliseconds rather than a
 * JVM start per call: a private topic per run, and the sum of its end
 * offsets, read before and after each case to check that Kafka holds every
 * event the benchmark reports.
 *
 *   http_topic BOOTSTRAP create TOPIC PARTITIONS
 *   http_topic BOOTSTRAP offsets TOPIC      prints the sum of the partitions' high watermarks
 *   http_topic BOOTSTRAP delete TOPIC
 *
 * The high watermark is the next offset to be written: with one broker,
 * acks=all and no transactions, the records a topic received since it was
 * created.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#define TIMEOUT_MS 10000
/*
 * The topic's max.message.bytes, as deploy/local/up sets it
 * (TOPIC_MAX_MESSAGE_BYTES): the largest record a gateway with the default
 * --max-event-bytes can make, with room (docs/operating.md).
 */
#define TOPIC_MAX_MESSAGE_BYTES "2162688"

/* Run one admin request and wait for its result event; NULL on timeout. */
static rd_kafka_event_t *admin_wait(rd_kafka_queue_t *q)
{
    return rd_kafka_queue_poll(q, TIMEOUT_MS + 5000);
}

static int topic_create(rd_kafka_t *rk, const char *topic, int partitions)
{
    char errbuf[256];
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, 1, errbuf, sizeof(errbuf));
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_event_t *ev = NULL;
    int rc = 1;

    if (!nt || rd_kafka_NewTopic_set_config(nt, "max.message.bytes", TOPIC_MAX_MESSAGE_BYTES)) {
        fprintf(stderr, "http_topic: %s\n", nt ? "max.message.bytes refused" : errbuf);
        goto out;
    }
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    if ((ev = admin_wait(q)) == NULL || rd_kafka_event_error(ev)) {
        fprintf(stderr, "http_topic: create %s: %s\n", topic,
                ev ? rd_kafka_event_error_string(ev) : "timed out");
        goto out;
    }
    size_t n;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    if (n != 1 || rd_kafka_topic_result_error(res[0])) {
        fprintf(stderr, "http_topic: create %s: %s\n", topic,
                n ? rd_kafka_topic_result_error_string(res[0]) : "?");
        goto out;
    }
    rc = 0;
out:
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    return rc;
}

static int topic_delete(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_DeleteTopic_t *dt = rd_kafka_DeleteTopic_new(topic);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_event_t *ev;
    int rc = 1;

    rd_kafka_DeleteTopics(rk, &dt, 1, NULL, q);
    if ((ev = admin_wait(q)) == NULL || rd_kafka_event_error(ev)) {
        fprintf(stderr, "http_topic: delete %s: %s\n", topic,
                ev ? rd_kafka_event_error_string(ev) : "timed out");
    } else {
        size_t n;
        const rd_kafka_topic_result_t **res =
            rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &n);
        if (n == 1 && rd_kafka_topic_result_error(res[0]) == RD_KAFKA_RESP_ERR_NO_ERROR)
            rc = 0;
        else
            fprintf(stderr, "http_topic: delete %s: %s\n", topic,
                    n ? rd_kafka_topic_result_error_string(res[0]) : "?");
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_DeleteTopic_destroy(dt);
    return rc;
}

static int topic_offsets(rd_kafka_t *rk, const char *topic)
{
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    int64_t sum = 0;
    int rc = 1;

    if (!rkt || rd_kafka_metadata(rk, 0, rkt, &md, TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
        goto fail;
    if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0)
        goto fail;
    for (int p = 0; p < md->topics[0].partition_cnt; p++) {
        int64_t lo, hi;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, topic, md->topics[0].partitions[p].id, &lo, &hi, TIMEOUT_MS);
        if (err) {
            fprintf(stderr, "http_topic: offsets %s[%d]: %s\n", topic, p, rd_kafka_err2str(err));
            goto out;
        }
        sum += hi;
    }
    printf("%" PRId64 "\n", sum);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "http_topic: no metadata for topic %s\n", topic);
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return rc;
}

int main(int argc, char **argv)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    char errbuf[512];
    int rc;

    if (argc < 4 || (strcmp(argv[2], "create") == 0 && argc != 5)) {
        fprintf(stderr, "usage: %s BOOTSTRAP create TOPIC PARTITIONS | offsets TOPIC | delete TOPIC\n",
                argv[0]);
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], errbuf, sizeof(errbuf)) != RD_KAFKA_CONF_OK ||
        (rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, sizeof(errbuf))) == NULL) {
        fprintf(stderr, "http_topic: %s\n", errbuf);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    if (strcmp(argv[2], "create") == 0)
        rc = topic_create(rk, argv[3], atoi(argv[4]));
    else if (strcmp(argv[2], "offsets") == 0)
        rc = topic_offsets(rk, argv[3]);
    else if (strcmp(argv[2], "delete") == 0)
        rc = topic_delete(rk, argv[3]);
    else {
        fprintf(stderr, "http_topic: unknown command %s\n", argv[2]);
        rc = 2;
    }
    rd_kafka_destroy(rk);
    return rc;
}
