/* The gateway's one settings table: flags, INGEST_* variables and --help. */
#include <stddef.h>

#include "gateway.h"

#define OFF(m) offsetof(gateway_config, m)

static const config_entry entries[] = {
    CONFIG_COMMON_ENTRIES(gateway_config),
    {"kafka-topic", CONFIG_STRING, "events", OFF(kafka_topic), "Topic the events are produced to", 0, 0,
     NULL},
    {"gateway-id", CONFIG_STRING, "", OFF(gateway_id),
     "This instance's name in every Envelope (empty: the host name)", 0, 0, NULL},
    {"queue-capacity", CONFIG_INT, "65536", OFF(queue_capacity),
     "Events the shared worker queue holds at most", 1, 16777216, NULL},
    {"queue-high-water", CONFIG_INT, "52428", OFF(queue_high_water),
     "Queue depth from which new requests are refused (HTTP 429), at most the capacity", 1, 16777216, NULL},
    {"shutdown-timeout", CONFIG_DURATION, "30s", OFF(shutdown_timeout_ms),
     "Longest a stop may take to drain the queue and flush Kafka", 0, 3600000, NULL},
};

const config_program gateway_config_program = {
    .name = "gateway",
    .summary = "Accepts CloudEvents over HTTP, UDP and gRPC and produces them to Kafka.",
    .entries = entries,
    .n_entries = sizeof(entries) / sizeof(entries[0]),
    .props_offset = OFF(kafka_props),
};
