/*
 * A ring of pointers under one mutex. With a handful of producer and consumer
 * threads, and consumers taking items in batches, the lock is held for a few
 * pointer copies per batch: simpler to prove right than a lock-free ring,
 * and not where the time goes (see perf/README.md).
 */
#include "queue.h"
#include "mono.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

struct queue {
    pthread_mutex_t lock;
    pthread_cond_t nonempty; /* consumers that want any item */
    pthread_cond_t batch;    /* lazy consumers: only a batch is worth waking for */
    void **ring;
    size_t capacity;
    size_t high_water;
    size_t head; /* next to pop */
    size_t count;
    atomic_size_t depth; /* mirror of count, read without the lock */
    int closed;
    unsigned waiters;      /* consumers waiting on nonempty */
    unsigned lazy_waiters; /* consumers waiting on batch */
    size_t wake_batch;
};

queue *queue_new(size_t capacity, size_t high_water)
{
    queue *q;

    if (capacity == 0 || high_water == 0 || high_water > capacity)
        return NULL;
    if ((q = calloc(1, sizeof(*q))) == NULL)
        return NULL;
    if ((q->ring = calloc(capacity, sizeof(*q->ring))) == NULL)
        goto fail;
    q->capacity = capacity;
    q->high_water = high_water;
    atomic_init(&q->depth, 0);
    pthread_mutex_init(&q->lock, NULL);
    /* Timed waits on the monotonic clock: a wall-clock step must not stall consumers. */
    mono_cond_init(&q->nonempty);
    mono_cond_init(&q->batch);
    q->wake_batch = capacity < 64 ? capacity : 64;
    return q;

fail:
    free(q);
    return NULL;
}

void queue_free(queue *q)
{
    if (q == NULL)
        return;
    pthread_cond_destroy(&q->nonempty);
    pthread_cond_destroy(&q->batch);
    pthread_mutex_destroy(&q->lock);
    free(q->ring);
    free(q);
}

int queue_push_n(queue *q, void *const *items, size_t n)
{
    int rc = 0;

    if (n > q->capacity)
        return -EINVAL;
    if (n == 0)
        return 0;
    pthread_mutex_lock(&q->lock);
    if (q->closed) {
        rc = -EPIPE;
    } else if (q->capacity - q->count < n) {
        rc = -EAGAIN;
    } else {
        size_t tail = (q->head + q->count) % q->capacity;
        for (size_t i = 0; i < n; i++) {
            q->ring[tail] = items[i];
            if (++tail == q->capacity)
                tail = 0;
        }
        q->count += n;
        atomic_store_explicit(&q->depth, q->count, memory_order_relaxed);
        /* Wake one consumer per item, at most as many as wait. */
        if (q->waiters > 0) {
            if (n >= q->waiters)
                pthread_cond_broadcast(&q->nonempty);
            else
                for (size_t i = 0; i < n; i++)
                    pthread_cond_signal(&q->nonempty);
        } else if (q->lazy_waiters > 0 && q->count >= q->wake_batch && q->count - n < q->wake_batch) {
            pthread_cond_signal(&q->batch);
        }
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

static size_t pop(queue *q, void **items, size_t max, int timeout_ms, int lazy)
{
    struct timespec deadline;
    size_t n = 0;

    if (max == 0)
        return 0;
    if (timeout_ms > 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&q->lock);
    while (!q->closed && timeout_ms != 0 && (lazy ? q->count < q->wake_batch : q->count == 0)) {
        int rc;
        if (lazy) {
            q->lazy_waiters++;
            rc = pthread_cond_timedwait(&q->batch, &q->lock, &deadline);
            q->lazy_waiters--;
        } else {
            q->waiters++;
            if (timeout_ms < 0)
                rc = pthread_cond_wait(&q->nonempty, &q->lock);
            else
                rc = pthread_cond_timedwait(&q->nonempty, &q->lock, &deadline);
            q->waiters--;
        }
        if (rc == ETIMEDOUT)
            break;
    }
    while (n < max && q->count > 0) {
        items[n++] = q->ring[q->head];
        if (++q->head == q->capacity)
            q->head = 0;
        q->count--;
    }
    atomic_store_explicit(&q->depth, q->count, memory_order_relaxed);
    pthread_mutex_unlock(&q->lock);
    return n;
}

size_t queue_pop_n(queue *q, void **items, size_t max, int timeout_ms)
{
    return pop(q, items, max, timeout_ms, 0);
}

size_t queue_pop_lazy(queue *q, void **items, size_t max, int timeout_ms)
{
    return pop(q, items, max, timeout_ms > 0 ? timeout_ms : 1, 1);
}

int queue_drained(queue *q)
{
    int drained;

    pthread_mutex_lock(&q->lock);
    drained = q->closed && q->count == 0;
    pthread_mutex_unlock(&q->lock);
    return drained;
}

void queue_close(queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = 1;
    pthread_cond_broadcast(&q->nonempty);
    pthread_cond_broadcast(&q->batch);
    pthread_mutex_unlock(&q->lock);
}

size_t queue_depth(const queue *q)
{
    return atomic_load_explicit(&((queue *)q)->depth, memory_order_relaxed);
}

size_t queue_capacity(const queue *q)
{
    return q->capacity;
}

size_t queue_high_water(const queue *q)
{
    return q->high_water;
}

int queue_above_high_water(const queue *q)
{
    return queue_depth(q) >= q->high_water;
}
