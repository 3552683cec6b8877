/*
 * The sink's admin port: /healthz (alive) and /readyz (Postgres and Kafka
 * reachable, the schema migrated, the writer not failing), for probes and
 * for operators. Metrics come with the operability issue.
 */
#ifndef INGEST_SINK_ADMIN_H
#define INGEST_SINK_ADMIN_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>

typedef struct sink_admin sink_admin;

typedef struct sink_admin_state {
    const char *pg_dsn;
    rd_kafka_t *consumer;
    atomic_int *migrated; /* 1 once the schema is there */
    atomic_int *failing;  /* 1 while the writer cannot write */
} sink_admin_state;

/* Serve on `addr` from a thread of its own. NULL with a message in err. */
sink_admin *sink_admin_start(const char *addr, const sink_admin_state *st, char *err, size_t errlen);
void sink_admin_stop(sink_admin *a);

#endif
