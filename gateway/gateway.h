/* The gateway's settings and the pieces its front ends share. */
#ifndef INGEST_GATEWAY_H
#define INGEST_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct gateway_config {
    char *kafka_bootstrap;
    char *kafka_topic;
    char *gateway_id;
    int64_t queue_capacity;
    int64_t queue_high_water;
    int64_t shutdown_timeout_ms;
    char *log_level;
    char *log_format;
    config_props kafka_props;
} gateway_config;

extern const config_program gateway_config_program;

#endif
