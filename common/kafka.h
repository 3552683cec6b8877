/*
 * librdkafka configuration shared by the gateway's producer and the sink's
 * consumer: our defaults first, then every --kafka.<property> the operator
 * gave, so any property (TLS, SASL, tuning) can be set without code.
 */
#ifndef INGEST_KAFKA_H
#define INGEST_KAFKA_H

#include <librdkafka/rdkafka.h>

#include "config.h"

/* A property and its value: a NULL-terminated list of these gives defaults. */
typedef struct kafka_prop {
    const char *key;
    const char *value;
} kafka_prop;

/* The producer defaults of the contract: idempotent, acks=all, lz4, linger 5 ms. */
extern const kafka_prop kafka_producer_defaults[];

/*
 * A new configuration: bootstrap.servers, then `defaults`, then `props`.
 * NULL with a message naming the property in errbuf when librdkafka refuses
 * one. The caller owns the result until rd_kafka_new() takes it.
 */
rd_kafka_conf_t *kafka_conf_new(const char *bootstrap, const kafka_prop *defaults, const config_props *props,
                                char *errbuf, size_t errlen);

/*
 * A new producer or consumer on kafka_conf_new()'s configuration. NULL with
 * the reason in errbuf (a refused property is named).
 */
rd_kafka_t *kafka_new(rd_kafka_type_t type, const char *bootstrap, const kafka_prop *defaults,
                      const config_props *props, char *errbuf, size_t errlen);

/*
 * Ask the cluster for its metadata within timeout_ms and log the answer:
 * 0 when reachable, else librdkafka's error code (negative).
 */
int kafka_probe(rd_kafka_t *rk, int timeout_ms);

#endif
