/*
 * The writer: a thread that writes one batch to Postgres while the consumer
 * fills the next, so that consuming and decoding overlap Postgres's work
 * (perf/sink: they took turns). Depth one: the consumer waits when both are
 * full. Each batch is one transaction (sink_pg_write_batch: rows and
 * offsets together, dead letters acknowledged before the commit) on the
 * writer's own connection.
 *
 * A failed attempt (Postgres down or failing) is retried with back-off
 * (--pg-retry-max) until it commits, and meanwhile sink_writer_failing()
 * says so, for the consumer to pause and for /readyz. Under a drain
 * (revoke, stop) or after sink_writer_stop(), a failed batch is dropped
 * instead: its offsets were not stored, so the next reader of its
 * partitions starts before it. Dropped, never lost.
 *
 * Threads: the consumer's thread calls submit, wait and drain; any thread
 * may call sink_writer_failing() and sink_writer_stop().
 */
#ifndef INGEST_SINK_WRITER_H
#define INGEST_SINK_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "dlq.h"
#include "status.h"

typedef struct sink_writer sink_writer;

/*
 * Start the writer thread for records of `topic`, into Postgres at
 * `pg_dsn` (both borrowed: they must outlive the writer), waiting at most
 * retry_max_ms between attempts. Dead letters go through `dlq`, and every
 * committed batch is counted in `m` (both borrowed too). NULL with the
 * reason in err.
 */
sink_writer *sink_writer_new(const char *pg_dsn, const char *topic, int64_t retry_max_ms, sink_dlq *dlq,
                             sink_metrics *m, char *err, size_t errlen);

/*
 * Finish the batch in hand (dropped if it fails once sink_writer_stop() was
 * called), join the thread, close the connection. NULL is a no-op.
 */
void sink_writer_free(sink_writer *w);

/* Wait until the writer holds no batch: 0, or -ETIMEDOUT after timeout_ms. */
int sink_writer_wait(sink_writer *w, int timeout_ms);

/*
 * Hand *b to the writer and give the caller back an empty batch in its
 * place (memory reused). Only when the writer holds none (after
 * sink_writer_wait() returned 0); a no-op for an empty *b.
 */
void sink_writer_submit(sink_writer *w, batch *b);

/*
 * Write everything held, one attempt each: the writer's batch, then *b
 * (a revoke, a stop). What fails is dropped, and so is *b when the batch
 * before it was: a later batch of the same partitions would store offsets
 * past a dropped one. Returns once the writer is idle; *b is then empty.
 * Does not serve the consumer meanwhile: fine inside a rebalance callback.
 */
void sink_writer_drain(sink_writer *w, batch *b);

/* 1 while the last attempt failed (Postgres down or failing). Any thread; never blocks. */
int sink_writer_failing(const sink_writer *w);

/* From now on a failed batch is dropped, not retried, and a back-off wait ends now (stop). Any thread. */
void sink_writer_stop(sink_writer *w);

#endif
