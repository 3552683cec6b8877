/*
 * The dead letters: records that are not an Envelope, or whose row Postgres
 * refuses for its data, go to the dead-letter topic (--dlq-topic) as they
 * came (key and value), with headers saying why and from where:
 * ingest_error, ingest_topic, ingest_partition, ingest_offset.
 *
 * A batch's dead letters are acknowledged by Kafka before the batch
 * commits (sink_dlq_send is the sink_pg_dead_fn the writer passes to
 * sink_pg_write_batch), so the offsets stored in Postgres never move past a
 * record that is neither a row nor a dead letter.
 */
#ifndef INGEST_SINK_DLQ_H
#define INGEST_SINK_DLQ_H

#include <stddef.h>

#include "batch.h"
#include "config.h"

typedef struct sink_dlq sink_dlq;

/*
 * A producer for `dlq_topic`, its records marked as coming from
 * `source_topic` (borrowed: it must outlive the dlq). The contract's
 * producer defaults (idempotent, acks=all), then the operator's kafka.*
 * properties, as the consumer gets them: a cluster that needs TLS or SASL
 * needs it for dead letters too. NULL with the reason in err.
 */
sink_dlq *sink_dlq_new(const char *bootstrap, const config_props *props, const char *dlq_topic,
                       const char *source_topic, char *err, size_t errlen);

/*
 * Produce every dead letter of `b` (rec->dead set) and wait until Kafka has
 * acknowledged them all (30 s at most). 0, or -EIO when one was refused or
 * not acknowledged in time (logged): the batch must not commit. `dlq` is a
 * sink_dlq. One thread at a time: the writer's.
 */
int sink_dlq_send(const batch *b, void *dlq);

/* Flush what is still in flight (5 s at most) and free. NULL is a no-op. */
void sink_dlq_free(sink_dlq *d);

#endif
