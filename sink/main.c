/*
 * The sink: settings, and a check that Postgres and Kafka answer. The
 * consumer, the COPY batches and the dead letters come with the sink issue;
 * today it starts, reports what it reaches, and stops cleanly on SIGTERM.
 */
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "app.h"
#include "kafka.h"
#include "log.h"
#include "sink.h"

/* Connect once to say whether Postgres answers; the sink retries later, so this is not fatal. */
static void pg_probe(const char *dsn)
{
    PGconn *pg = PQconnectdb(dsn);

    if (PQstatus(pg) == CONNECTION_OK)
        LOG_INFO("pg", "reachable server_version=%d", PQserverVersion(pg));
    else
        LOG_WARN("pg", "not reachable yet: %s", PQerrorMessage(pg));
    PQfinish(pg);
}

int main(int argc, char **argv)
{
    sink_config cfg;
    rd_kafka_t *rk = NULL;
    char errbuf[512];
    int status = 1, rc;

    memset(&cfg, 0, sizeof(cfg));
    app_block_signals();
    if ((rc = app_config_load(&sink_config_program, &cfg, argc, argv, &cfg.log_level, &cfg.log_format)) >=
        0) {
        status = rc;
        goto out;
    }
    const kafka_prop consumer_defaults[] = {{"group.id", cfg.kafka_group}, {NULL, NULL}};
    if ((rk = kafka_new(RD_KAFKA_CONSUMER, cfg.kafka_bootstrap, consumer_defaults, &cfg.kafka_props, errbuf,
                        sizeof(errbuf))) == NULL) {
        fprintf(stderr, "sink: %s\n", errbuf);
        status = 2;
        goto out;
    }

    LOG_INFO("sink", "started kafka=%s topic=%s group=%s", cfg.kafka_bootstrap, cfg.kafka_topic,
             cfg.kafka_group);
    kafka_probe(rk, 5000);
    pg_probe(cfg.pg_dsn);

    int sig = app_wait_signal();
    LOG_INFO("sink", "stopping signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    status = 0;

out:
    if (rk)
        rd_kafka_destroy(rk);
    config_free(&sink_config_program, &cfg);
    return status;
}
