/*
 * What the sink reports on its admin port (common/admin.h): ready when the
 * schema is migrated, the writer is not failing, and Postgres and Kafka are
 * reachable. Metrics come with the operability issue.
 */
#ifndef INGEST_SINK_STATUS_H
#define INGEST_SINK_STATUS_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>

typedef struct sink_status {
    const char *pg_dsn;
    rd_kafka_t *consumer;
    atomic_int *migrated; /* 1 once the schema is there */
    atomic_int *failing;  /* 1 while the writer cannot write */
} sink_status;

/* Why the sink is not ready, or NULL when it is: an admin_handlers.not_ready for a sink_status. */
const char *sink_status_not_ready(void *sink_status);

#endif
