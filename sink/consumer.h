/*
 * The consumer: the sink's Kafka consumer in its group, on the main thread.
 * It fills a batch with the records it polls (each decoded into its row, or
 * marked dead, as it is added) and hands the batch to the writer when it
 * holds --batch-rows records or its first one has waited --batch-timeout.
 *
 * On assignment each partition starts from the offset Postgres stores for
 * it (sink_pg_load_offsets, retried with back-off while Postgres is away),
 * never from the group's own commits. On revoke what is held is written
 * once (sink_writer_drain), so the next owner finds Postgres's offsets
 * right. While the writer cannot write, its partitions are paused, and the
 * group is still served (rebalances, heartbeats), so the consumer stays in
 * its group however long Postgres is down.
 *
 * Threads: every call but sink_consumer_stop() and sink_consumer_handle()
 * on one thread, the main one, which also runs the rebalance callbacks
 * (from inside librdkafka's poll).
 */
#ifndef INGEST_SINK_CONSUMER_H
#define INGEST_SINK_CONSUMER_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>

#include "sink.h"
#include "status.h"
#include "writer.h"

typedef struct sink_consumer sink_consumer;

/*
 * A consumer in cfg->kafka_group for cfg->kafka_topic, not subscribed yet:
 * made first, so that a bad kafka.* setting is named before anything
 * starts. cfg and the metrics are borrowed: they must outlive it. NULL with
 * the reason in err.
 */
sink_consumer *sink_consumer_new(const sink_config *cfg, sink_metrics *m, char *err, size_t errlen);

/*
 * Leave the group if it joined (its revoke writes what is held once: the
 * writer must still run), then free. NULL is a no-op.
 */
void sink_consumer_free(sink_consumer *c);

/*
 * librdkafka's handle, for questions that do not consume: metadata,
 * cached watermarks. Any thread, until sink_consumer_free().
 */
rd_kafka_t *sink_consumer_handle(sink_consumer *c);

/*
 * Join the group, handing batches to `w` (borrowed: it must outlive the
 * consumer). pg is the main thread's connection (it reads the stored
 * offsets at each assignment); the consumer takes ownership of it, NULL
 * included (then it connects when it needs to). 0, or -EIO (logged).
 */
int sink_consumer_subscribe(sink_consumer *c, sink_writer *w, PGconn *pg);

/*
 * Consume and hand batches to the writer until sink_consumer_stop(), then
 * write what is held, once. 0, or -ENOMEM (logged) when a record could not
 * be kept.
 */
int sink_consumer_run(sink_consumer *c);

/* Make sink_consumer_run() return soon, and end a back-off wait now. Any thread. */
void sink_consumer_stop(sink_consumer *c);

/*
 * Leave the group now (the revoke writes what is held once). Called after
 * sink_consumer_run(); sink_consumer_free() does it when not done.
 */
void sink_consumer_close(sink_consumer *c);

#endif
