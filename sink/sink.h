/* The sink's settings. */
#ifndef INGEST_SINK_H
#define INGEST_SINK_H

#include <stdint.h>

#include "config.h"

typedef struct sink_config {
    char *kafka_bootstrap;
    char *kafka_topic;
    char *kafka_group;
    char *dlq_topic;
    char *pg_dsn;
    char *admin_addr;
    int64_t batch_rows;
    int64_t batch_timeout_ms;
    int64_t pg_retry_max_ms;
    char *log_level;
    char *log_format;
    config_props kafka_props;
} sink_config;

extern const config_program sink_config_program;

#endif
