/*
 * A watcher: a thread that runs a readiness check every period and
 * publishes its answer atomically, so that probes (/readyz, gRPC's
 * Health/Check) read an answer instead of asking the network themselves. A
 * probe is then answered at once whatever Kafka or Postgres do, and a
 * frozen dependency can never hold up the thread that serves probes.
 *
 *   watch_start()   first check on the calling thread, then the thread;
 *   watch_reason()  any thread, never blocks: the last answer;
 *   watch_stop()    wakes the thread at once (a condition variable, not a
 *                   sleep) and joins it; a check in progress finishes first.
 */
#ifndef INGEST_WATCH_H
#define INGEST_WATCH_H

#include <stddef.h>

/*
 * Why the program is not ready, or NULL when it is. Runs on the watcher
 * thread (the first call on watch_start()'s caller), one call at a time; it
 * may wait on the network, for a bounded time. The string must outlive the
 * watch: a literal.
 */
typedef const char *(*watch_check_fn)(void *ctx);

typedef struct watch watch;

/* What watch_reason() says once the last answer is older than stale_ms. */
#define WATCH_STALE_REASON "the readiness check is overdue"

/*
 * Check now on the calling thread, then every period_ms (between the end of
 * one check and the start of the next) on a thread named thread_name (at
 * most 15 bytes). stale_ms > 0: an answer older than that (a check that
 * hangs past its own bound) reads as WATCH_STALE_REASON; 0: answers never
 * go stale. NULL with the reason in err when the thread cannot start.
 */
watch *watch_start(const char *thread_name, int period_ms, int stale_ms, watch_check_fn check, void *ctx,
                   char *err, size_t errlen);

/* The last answer: NULL when ready. Any thread; never blocks. */
const char *watch_reason(watch *w);

/* Stop the thread and free w. No probe may read w any more. NULL is a no-op. */
void watch_stop(watch *w);

#endif
