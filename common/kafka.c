#include "kafka.h"

#include <stdio.h>

#include "log.h"

const kafka_prop kafka_producer_defaults[] = {
    {"enable.idempotence", "true"},
    {"acks", "all"},
    {"compression.type", "lz4"},
    {"linger.ms", "5"},
    /*
     * The gateway's own queue is the buffer (bounded, measured, what
     * admission reads); librdkafka's only has to keep the broker busy:
     * 16,384 messages is 25 ms of produce at 650,000 a second, more than
     * the linger plus a round trip. Its default, 100,000, filled up under
     * overload with messages that went cold before they were sent: 20-40%
     * more CPU per message, in librdkafka's threads and ours alike
     * (perf/README.md, perf/http case d).
     */
    {"queue.buffering.max.messages", "16384"},
    {NULL, NULL},
};

static int set_one(rd_kafka_conf_t *conf, const char *key, const char *value, const char *origin,
                   char *errbuf, size_t errlen)
{
    char why[256];

    if (rd_kafka_conf_set(conf, key, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        snprintf(errbuf, errlen, "%s%s: %s", origin, key, why);
        return -1;
    }
    return 0;
}

/* librdkafka's own lines, in ours: syslog levels 0-3 are errors, 4 warnings, 5-6 info. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    log_level l = level <= 3   ? LOG_LEVEL_ERROR
                  : level == 4 ? LOG_LEVEL_WARN
                  : level <= 6 ? LOG_LEVEL_INFO
                               : LOG_LEVEL_DEBUG;

    LOG_AT(l, "rdkafka", "%s %s: %s", rd_kafka_name(rk), fac, buf);
}

rd_kafka_conf_t *kafka_conf_new(const char *bootstrap, const kafka_prop *defaults, const config_props *props,
                                char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    rd_kafka_conf_set_log_cb(conf, log_cb);

    if (set_one(conf, "bootstrap.servers", bootstrap, "--kafka-bootstrap: ", errbuf, errlen) != 0)
        goto fail;
    for (const kafka_prop *d = defaults; d && d->key; d++)
        if (set_one(conf, d->key, d->value, "default ", errbuf, errlen) != 0)
            goto fail;
    for (size_t i = 0; props && i < props->n; i++)
        if (set_one(conf, props->keys[i], props->values[i], "--kafka.", errbuf, errlen) != 0)
            goto fail;
    return conf;

fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_t *kafka_new(rd_kafka_type_t type, const char *bootstrap, const kafka_prop *defaults,
                      const config_props *props, char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *conf = kafka_conf_new(bootstrap, defaults, props, errbuf, errlen);
    rd_kafka_t *rk;

    if (conf == NULL)
        return NULL;
    if ((rk = rd_kafka_new(type, conf, errbuf, errlen)) == NULL)
        rd_kafka_conf_destroy(conf); /* rd_kafka_new takes it only on success */
    return rk;
}

int kafka_probe(rd_kafka_t *rk, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);

    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        LOG_WARN("kafka", "not reachable yet: %s", rd_kafka_err2str(err));
        return (int)err < 0 ? (int)err : -(int)err;
    }
    LOG_INFO("kafka", "reachable brokers=%d", md->broker_cnt);
    rd_kafka_metadata_destroy(md);
    return 0;
}
