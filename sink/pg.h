/*
 * Writing a batch to Postgres, exactly once: its rows (COPY into a staging
 * table, then INSERT ... ON CONFLICT DO NOTHING into `events`) and the next
 * offset of each of its partitions (`ingest_offsets`) commit in one
 * transaction. Rows Postgres refuses for their data are found by splitting
 * the batch under savepoints, and become dead letters; the rest is written.
 */
#ifndef INGEST_PG_H
#define INGEST_PG_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "batch.h"

/*
 * Called before COMMIT with the batch's dead letters (rec->dead set): they
 * must be safely elsewhere (the DLQ topic) before the offsets move past
 * them. Returns 0, or non-zero to roll the batch back.
 */
typedef int (*sink_pg_dead_fn)(const batch *b, void *arg);

/*
 * A usable connection in *slot: the one there while it is still good, else
 * a new one (the old one closed), logged. NULL when Postgres does not
 * answer (logged; *slot then holds the failed connection, for the next
 * call to replace). Blocks as long as libpq does: the DSN's connect_timeout
 * and keepalives bound it. The thread that owns the slot only.
 */
PGconn *sink_pg_connect(PGconn **slot, const char *dsn);

/*
 * Does Postgres answer? A connection of its own, made without blocking and
 * given up after timeout_ms whatever the network does (a server that
 * accepts TCP but says nothing included), then closed. 0 when a session
 * could start; -ETIMEDOUT, -EIO (refused, or failed: err says why),
 * -ENOMEM. Only the name lookup is not bounded (libpq resolves names
 * synchronously): the caller must bear that, as a watcher does. Any thread.
 */
int sink_pg_ping(const char *dsn, int timeout_ms, char *err, size_t errlen);

/*
 * Write `b` (records of `topic`). Returns 0 when committed; -EIO when
 * Postgres is unreachable or failing, or memory ran out (retry later:
 * nothing was written). err says why.
 */
int sink_pg_write_batch(PGconn *pg, const char *topic, batch *b, sink_pg_dead_fn dead, void *arg, char *err,
                        size_t errlen);

/*
 * The stored next offsets of `topic`: fills next[p] for p < n_partitions
 * (-1 where none is stored). 0, or -EIO.
 */
int sink_pg_load_offsets(PGconn *pg, const char *topic, int64_t *next, int n_partitions, char *err,
                         size_t errlen);

#endif
