/*
 * The bounded multi-producer multi-consumer queue that every protocol front
 * end feeds and the Kafka workers drain.
 *
 * Capacity is a hard bound: a push that does not fit fails at once with
 * -EAGAIN, it never blocks an event loop. The high-water mark is the soft
 * bound that admission control reads (HTTP 429, gRPC RESOURCE_EXHAUSTED, UDP
 * drop) so that requests already admitted still find room below capacity.
 */
#ifndef INGEST_QUEUE_H
#define INGEST_QUEUE_H

#include <stddef.h>

typedef struct queue queue;

/*
 * A queue of at most `capacity` items, with its high-water mark at
 * `high_water` items (1 <= high_water <= capacity). NULL on bad arguments
 * or no memory.
 */
queue *queue_new(size_t capacity, size_t high_water);

/* Free the queue; items still in it are not freed. NULL is a no-op. */
void queue_free(queue *q);

/*
 * Append all `n` items or none: a request is all or nothing. Returns 0,
 * -EAGAIN when fewer than n places are free, -EPIPE once the queue is closed,
 * -EINVAL when n exceeds the capacity.
 */
int queue_push_n(queue *q, void *const *items, size_t n);

static inline int queue_push(queue *q, void *item)
{
    return queue_push_n(q, &item, 1);
}

/*
 * Take up to `max` items, oldest first, into `items`. Waits up to
 * `timeout_ms` for the first one (-1: without limit, 0: not at all).
 * Returns the count taken: 0 on timeout, or when the queue is closed and empty.
 */
size_t queue_pop_n(queue *q, void **items, size_t max, int timeout_ms);

/*
 * Like queue_pop_n, but a consumer that would block waits "lazily": a push
 * wakes it only once `wake_batch` items are queued (queue_new sets 64), and
 * otherwise it takes what has accumulated when timeout_ms runs out. For
 * consumers that batch anyway (librdkafka lingers 5 ms): one wake-up per
 * batch instead of one per item. timeout_ms must be > 0.
 */
size_t queue_pop_lazy(queue *q, void **items, size_t max, int timeout_ms);

/* True once the queue is closed and empty: a consumer can stop. */
int queue_drained(queue *q);

/*
 * Close: pushes fail with -EPIPE from now on, and pops return what is left,
 * then 0 without waiting. Wakes every waiter.
 */
void queue_close(queue *q);

size_t queue_depth(const queue *q);
size_t queue_capacity(const queue *q);
size_t queue_high_water(const queue *q);

/* True when depth >= high-water mark: admission control says no. */
int queue_above_high_water(const queue *q);

#endif
