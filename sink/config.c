/* The sink's one settings table: flags, INGEST_* variables and --help. */
#include <stddef.h>

#include "sink.h"

#define OFF(m) offsetof(sink_config, m)

static const config_entry entries[] = {
    CONFIG_COMMON_ENTRIES(sink_config),
    {"kafka-topic", CONFIG_STRING, "events", OFF(kafka_topic), "Topic the events are consumed from", 0, 0,
     NULL},
    {"kafka-group", CONFIG_STRING, "ingest-sink", OFF(kafka_group), "Consumer group of the sinks", 0, 0,
     NULL},
    {"dlq-topic", CONFIG_STRING, "events.dlq", OFF(dlq_topic), "Topic of the dead letters", 0, 0, NULL},
    {"admin-addr", CONFIG_STRING, "[::]:8082", OFF(admin_addr),
     "Admin listen address (host:port, [ipv6]:port; [::] is IPv4 and IPv6, 0.0.0.0 without IPv6): "
     "/metrics, /healthz, /readyz (Postgres and Kafka reachable, writing)",
     0, 0, NULL},
    {"batch-rows", CONFIG_INT, "5000", OFF(batch_rows), "Rows written to Postgres in one transaction at most",
     1, 1000000, NULL},
    {"batch-timeout", CONFIG_DURATION, "200ms", OFF(batch_timeout_ms),
     "Longest a consumed record waits for its batch to fill", 1, 3600000, NULL},
    {"pg-retry-max", CONFIG_DURATION, "5s", OFF(pg_retry_max_ms),
     "Longest back-off between attempts while Postgres is down or failing", 10, 3600000, NULL},
    {"pg-dsn", CONFIG_STRING, "postgresql://127.0.0.1:5432/ingest", OFF(pg_dsn),
     "Postgres connection string (libpq URI or key=value)", 0, 0, NULL},
};

const config_program sink_config_program = {
    .name = "sink",
    .summary = "Consumes Envelopes from Kafka and writes them to Postgres, exactly once.",
    .entries = entries,
    .n_entries = sizeof(entries) / sizeof(entries[0]),
    .props_offset = OFF(kafka_props),
};
