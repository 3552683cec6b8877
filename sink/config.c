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
