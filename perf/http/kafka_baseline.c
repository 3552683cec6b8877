/*
 * The Kafka baseline of perf/http: the same Envelopes the gateway makes,
 * produced straight to the same broker with librdkafka, as fast as one
 * thread can, with the gateway's producer settings (kafka_producer_defaults:
 * idempotent, acks=all, lz4, linger 5 ms; --kafka.<prop>=v on top, as the
 * gateway takes them). What it reaches is what this broker on this machine
 * absorbs; the gateway's batch figure is read against it.
 *
 * The events come from an NDJSON file (the bodies wrk sends), parsed and
 * validated with the gateway's own code once; each one produced gets a fresh
 * UUIDv7 and receive time and is encoded anew with envelope_encode(), with
 * the contract's key and headers, so records match the gateway's byte for
 * byte in kind and the per-event encoding cost is paid here too.
 *
 * Usage: http_kafka_baseline --events FILE --topic T [--bootstrap B]
 *            [--duration SECONDS] [--count N] [--kafka.<prop>=<value> ...]
 * Produces for SECONDS or N events, whichever ends first, then waits for
 * every delivery report. The last line is machine-readable:
 *   RESULT delivered=N failed=N seconds=S events_per_s=X bytes=N
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "app.h"
#include "envelope.h"
#include "event.h"
#include "events_file.h"
#include "kafka.h"

#define MAX_PROPS 32

typedef struct counts {
    uint64_t delivered;
    uint64_t failed;
    char first_error[256];
} counts;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t unix_nanos(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    counts *c = opaque;

    (void)rk;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        c->delivered++;
        return;
    }
    if (c->failed++ == 0)
        snprintf(c->first_error, sizeof(c->first_error), "%s", rd_kafka_err2str(m->err));
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s --events FILE --topic T [--bootstrap 127.0.0.1:9092] [--duration 10] [--count N]\n"
            "          [--kafka.<property>=<value> ...]\n",
            argv0);
}

/* Produce one event as the gateway does: fresh id, Envelope, key, headers. */
static rd_kafka_resp_err_t produce_one(rd_kafka_t *rk, rd_kafka_topic_t *rkt, ing_event *ev,
                                       envelope_meta *meta, uint64_t *bytes)
{
    uint8_t *buf;
    size_t len;
    const char *key;
    rd_kafka_resp_err_t err;

    meta->received_unix_nanos = unix_nanos();
    if (ing_event_new_id(ev) != 0 || envelope_encode(ev, meta, &buf, &len) != 0)
        return RD_KAFKA_RESP_ERR__FAIL;
    key = ing_event_kafka_key(ev);
    for (;;) {
        err = rd_kafka_producev(
            rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_VALUE(buf, len),
            RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_HEADER("ce_id", ev->id, -1),
            RD_KAFKA_V_HEADER("ce_source", ev->source, -1), RD_KAFKA_V_HEADER("ce_type", ev->type, -1),
            RD_KAFKA_V_HEADER("content-type", "application/x-protobuf", -1), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        /* librdkafka's own queue is the back-pressure: serve reports, retry. */
        rd_kafka_poll(rk, 1);
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        free(buf);
    else
        *bytes += len;
    return err;
}

int main(int argc, char **argv)
{
    const char *events_path = NULL, *topic = NULL, *bootstrap = "127.0.0.1:9092";
    double duration = 10;
    uint64_t max_count = UINT64_MAX, produced = 0, bytes = 0;
    char *keys[MAX_PROPS], *values[MAX_PROPS], errbuf[512], host[256];
    config_props props = {keys, values, 0};
    ing_event_limits lim;
    ing_event_batch batch;
    ing_event_error err;
    envelope_meta meta = {0, ENVELOPE_HTTP, "127.0.0.1:40000", NULL, NULL};
    counts c = {0, 0, ""};
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    int status = 1;

    ing_event_limits_default(&lim);
    ing_event_batch_init(&batch);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--events") == 0 && i + 1 < argc)
            events_path = argv[++i];
        else if (strcmp(a, "--topic") == 0 && i + 1 < argc)
            topic = argv[++i];
        else if (strcmp(a, "--bootstrap") == 0 && i + 1 < argc)
            bootstrap = argv[++i];
        else if (strcmp(a, "--duration") == 0 && i + 1 < argc)
            duration = atof(argv[++i]);
        else if (strcmp(a, "--count") == 0 && i + 1 < argc)
            max_count = strtoull(argv[++i], NULL, 10);
        else if (strncmp(a, "--kafka.", 8) == 0 && strchr(a, '=') && props.n < MAX_PROPS) {
            /* argv outlives props: point into it, NUL-terminating the key in place. */
            char *eq = strchr(argv[i], '=');
            *eq = '\0';
            keys[props.n] = argv[i] + 8;
            values[props.n++] = eq + 1;
        } else {
            usage(argv[0]);
            return 2;
        }
    }
    if (!events_path || !topic || duration <= 0) {
        usage(argv[0]);
        return 2;
    }

    if (perf_load_events(events_path, &lim, &batch, errbuf, sizeof(errbuf)) != 0) {
        fprintf(stderr, "kafka_baseline: %s\n", errbuf);
        goto out;
    }
    for (size_t i = 0; i < batch.n; i++) {
        if (ing_event_validate(&batch.ev[i], &lim, (long)i, &err) != 0) {
            fprintf(stderr, "kafka_baseline: event %zu: %s\n", i, err.message);
            goto out;
        }
    }
    app_hostname(host, sizeof(host));
    meta.gateway_id = host;

    if ((conf = kafka_conf_new(bootstrap, kafka_producer_defaults, &props, errbuf, sizeof(errbuf))) == NULL) {
        fprintf(stderr, "kafka_baseline: %s\n", errbuf);
        status = 2;
        goto out;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, &c);
    if ((rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, sizeof(errbuf))) == NULL) {
        fprintf(stderr, "kafka_baseline: %s\n", errbuf);
        goto out;
    }
    conf = NULL; /* rd_kafka_new took it */
    if ((rkt = rd_kafka_topic_new(rk, topic, NULL)) == NULL) {
        fprintf(stderr, "kafka_baseline: topic %s: %s\n", topic, rd_kafka_err2str(rd_kafka_last_error()));
        goto out;
    }
    /* Metadata and the idempotent producer id before the clock starts, as a
     * gateway that has been running has them. */
    if (kafka_probe(rk, 10000) != 0) {
        fprintf(stderr, "kafka_baseline: Kafka at %s does not answer\n", bootstrap);
        goto out;
    }

    double t0 = now_s(), deadline = t0 + duration;
    while (produced < max_count) {
        rd_kafka_resp_err_t e = produce_one(rk, rkt, &batch.ev[produced % batch.n], &meta, &bytes);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "kafka_baseline: produce: %s\n", rd_kafka_err2str(e));
            break;
        }
        produced++;
        /* Delivery reports and the clock, every 256 events. */
        if ((produced & 255) == 0) {
            rd_kafka_poll(rk, 0);
            if (now_s() >= deadline)
                break;
        }
    }
    if (rd_kafka_flush(rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        fprintf(stderr, "kafka_baseline: flush timed out with %d undelivered\n", rd_kafka_outq_len(rk));
    double secs = now_s() - t0;

    if (c.failed)
        fprintf(stderr, "kafka_baseline: %llu failed, first: %s\n", (unsigned long long)c.failed,
                c.first_error);
    printf("RESULT delivered=%llu failed=%llu seconds=%.3f events_per_s=%.0f bytes=%llu\n",
           (unsigned long long)c.delivered, (unsigned long long)c.failed, secs, (double)c.delivered / secs,
           (unsigned long long)bytes);
    status = c.delivered == produced && c.failed == 0 ? 0 : 1;

out:
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (rk)
        rd_kafka_destroy(rk);
    if (conf)
        rd_kafka_conf_destroy(conf);
    ing_event_batch_clear(&batch);
    return status;
}
