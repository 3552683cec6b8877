#include "backoff.h"
#include "mono.h"

#include <errno.h>
#include <limits.h>
#include <time.h>

int backoff_init(backoff *b, int64_t first_ms, int64_t max_ms)
{
    int rc;

    if (first_ms < 1 || max_ms < first_ms)
        return -EINVAL;
    b->first_ms = first_ms;
    b->max_ms = max_ms;
    if ((rc = mono_cond_init(&b->cond)) != 0)
        return -rc;
    if ((rc = pthread_mutex_init(&b->lock, NULL)) != 0) {
        pthread_cond_destroy(&b->cond);
        return -rc;
    }
    return 0;
}

void backoff_destroy(backoff *b)
{
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
}

int64_t backoff_delay_ms(const backoff *b, unsigned n)
{
    int64_t d = b->first_ms;

    /* Doubling stops at the cap, so no count of failures overflows. */
    for (unsigned i = 1; i < n && d < b->max_ms; i++)
        d *= 2;
    return d < b->max_ms ? d : b->max_ms;
}

/* Wait ms, or less once give_up(arg) says yes (asked under the lock, so a wake racing the wait is seen). */
static void wait_for(backoff *b, int64_t ms, int (*give_up)(void *arg), void *arg)
{
    struct timespec deadline;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&b->lock);
    while (!(give_up && give_up(arg)))
        if (pthread_cond_timedwait(&b->cond, &b->lock, &deadline) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&b->lock);
}

int backoff_retry(backoff *b, int (*attempt)(void *arg), int (*give_up)(void *arg), void *arg)
{
    unsigned n = 0;
    int rc;

    while ((rc = attempt(arg)) != 0) {
        if (n < UINT_MAX)
            n++;
        if (give_up && give_up(arg))
            break;
        wait_for(b, backoff_delay_ms(b, n), give_up, arg);
        if (give_up && give_up(arg))
            break;
    }
    return rc;
}

void backoff_wake(backoff *b)
{
    /* Under the lock: a waiter between asking give_up() and sleeping cannot miss it. */
    pthread_mutex_lock(&b->lock);
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}
