/*
 * The gateway: settings, the shared queue and the Kafka producer. The
 * protocol front ends (HTTP, UDP, gRPC) attach to these in their own issues;
 * today it starts, checks that Kafka answers, and stops cleanly on SIGTERM.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "gateway.h"
#include "kafka.h"
#include "log.h"
#include "queue.h"

int main(int argc, char **argv)
{
    gateway_config cfg;
    rd_kafka_t *rk = NULL;
    queue *q = NULL;
    char errbuf[512], host[256];
    int status = 1, rc;

    memset(&cfg, 0, sizeof(cfg));
    app_block_signals();
    if ((rc = app_config_load(&gateway_config_program, &cfg, argc, argv, &cfg.log_level, &cfg.log_format)) >=
        0) {
        status = rc;
        goto out;
    }
    if (cfg.queue_high_water > cfg.queue_capacity) {
        fprintf(stderr, "gateway: --queue-high-water (%lld) must not exceed --queue-capacity (%lld)\n",
                (long long)cfg.queue_high_water, (long long)cfg.queue_capacity);
        status = 2;
        goto out;
    }
    if (cfg.gateway_id[0] == '\0') {
        app_hostname(host, sizeof(host));
        free(cfg.gateway_id);
        if ((cfg.gateway_id = strdup(host)) == NULL)
            goto out;
    }

    if ((q = queue_new((size_t)cfg.queue_capacity, (size_t)cfg.queue_high_water)) == NULL) {
        LOG_ERROR("gateway", "cannot create the queue");
        goto out;
    }
    if ((rk = kafka_new(RD_KAFKA_PRODUCER, cfg.kafka_bootstrap, kafka_producer_defaults, &cfg.kafka_props,
                        errbuf, sizeof(errbuf))) == NULL) {
        fprintf(stderr, "gateway: %s\n", errbuf);
        status = 2;
        goto out;
    }

    LOG_INFO("gateway", "started id=%s kafka=%s topic=%s queue_capacity=%lld queue_high_water=%lld",
             cfg.gateway_id, cfg.kafka_bootstrap, cfg.kafka_topic, (long long)cfg.queue_capacity,
             (long long)cfg.queue_high_water);
    kafka_probe(rk, 5000);

    int sig = app_wait_signal();
    LOG_INFO("gateway", "stopping signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    queue_close(q);
    if (rd_kafka_flush(rk, (int)cfg.shutdown_timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        LOG_WARN("kafka", "flush timed out with %d messages unsent", rd_kafka_outq_len(rk));
    LOG_INFO("gateway", "stopped");
    status = 0;

out:
    if (rk)
        rd_kafka_destroy(rk);
    queue_free(q);
    config_free(&gateway_config_program, &cfg);
    return status;
}
