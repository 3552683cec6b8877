/*
 * Retrying with back-off: an attempt and, while it fails, a wait that doubles
 * from a first delay up to a cap. One helper for every loop that waits for
 * something outside the process to come back (Postgres down at start, at a
 * partition assignment, under a batch), so that each waits the same way and
 * each stops at once when told to: a wait ends as soon as another thread
 * calls backoff_wake(), not when its delay runs out.
 *
 * A backoff serves one retry loop at a time (one thread); backoff_wake() may
 * be called from any thread.
 */
#ifndef INGEST_BACKOFF_H
#define INGEST_BACKOFF_H

#include <pthread.h>
#include <stdint.h>

typedef struct backoff {
    int64_t first_ms, max_ms;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* on CLOCK_MONOTONIC: a wait never stretches when the wall clock is set back */
} backoff;

/* Delays from first_ms (>= 1), doubling up to max_ms (>= first_ms). 0, or -EINVAL / -errno of pthreads. */
int backoff_init(backoff *b, int64_t first_ms, int64_t max_ms);
void backoff_destroy(backoff *b);

/* The wait after the n-th failed attempt in a row (n >= 1): first_ms * 2^(n-1), at most max_ms. */
int64_t backoff_delay_ms(const backoff *b, unsigned n);

/*
 * attempt(arg) until it returns 0, waiting backoff_delay_ms(n) after the
 * n-th failure. give_up(arg) (NULL: never) is asked after each failed
 * attempt and again after each wait; once it says yes, no further attempt
 * is made. give_up runs under b's lock: it must only read flags (atomics),
 * never block. Returns 0, or the last attempt's non-zero code when it gave
 * up.
 */
int backoff_retry(backoff *b, int (*attempt)(void *arg), int (*give_up)(void *arg), void *arg);

/*
 * Any thread: after changing what give_up() reads, so that a wait in
 * progress asks it again now rather than when its delay ends. A wake that
 * comes while no wait is in progress is not lost: give_up() is asked before
 * every wait.
 */
void backoff_wake(backoff *b);

#endif
