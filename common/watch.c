#include "watch.h"
#include "mono.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct watch {
    watch_check_fn check;
    void *ctx;
    int period_ms, stale_ms;
    char name[16];
    pthread_t tid;

    /* Published by the watcher, read by probes: each alone is enough, so two atomics and no lock. */
    _Atomic(const char *) reason;
    atomic_llong answered_ms; /* CLOCK_MONOTONIC time of the last answer */

    pthread_mutex_t lock;
    pthread_cond_t cond; /* on CLOCK_MONOTONIC, so a wall clock set back never stretches a period */
    int quit;            /* under lock */
};

static void answer(watch *w)
{
    atomic_store(&w->reason, w->check(w->ctx));
    atomic_store(&w->answered_ms, mono_ms());
}

static void *watch_main(void *arg)
{
    watch *w = arg;
    struct timespec next;

    pthread_setname_np(pthread_self(), w->name);
    pthread_mutex_lock(&w->lock);
    while (!w->quit) {
        clock_gettime(CLOCK_MONOTONIC, &next);
        next.tv_sec += w->period_ms / 1000;
        next.tv_nsec += (long)(w->period_ms % 1000) * 1000000L;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_sec++;
            next.tv_nsec -= 1000000000L;
        }
        while (!w->quit && pthread_cond_timedwait(&w->cond, &w->lock, &next) != ETIMEDOUT)
            ;
        if (w->quit)
            break;
        /* The check waits on the network: never under the lock watch_stop() takes. */
        pthread_mutex_unlock(&w->lock);
        answer(w);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

watch *watch_start(const char *thread_name, int period_ms, int stale_ms, watch_check_fn check, void *ctx,
                   char *err, size_t errlen)
{
    watch *w = calloc(1, sizeof(*w));
    int rc;

    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->check = check;
    w->ctx = ctx;
    w->period_ms = period_ms > 0 ? period_ms : 1;
    w->stale_ms = stale_ms > 0 ? stale_ms : 0;
    snprintf(w->name, sizeof(w->name), "%s", thread_name ? thread_name : "watch");
    if ((rc = mono_cond_init(&w->cond)) != 0)
        goto fail_free;
    if ((rc = pthread_mutex_init(&w->lock, NULL)) != 0)
        goto fail_cond;
    /* The first answer before anyone can ask: a probe right after start reads a real one. */
    answer(w);
    if ((rc = pthread_create(&w->tid, NULL, watch_main, w)) != 0)
        goto fail_lock;
    return w;

fail_lock:
    pthread_mutex_destroy(&w->lock);
fail_cond:
    pthread_cond_destroy(&w->cond);
fail_free:
    snprintf(err, errlen, "cannot start the %s thread: %s", w->name, strerror(rc));
    free(w);
    return NULL;
}

const char *watch_reason(watch *w)
{
    const char *why = atomic_load(&w->reason);

    if (w->stale_ms && mono_ms() - atomic_load(&w->answered_ms) > w->stale_ms)
        return WATCH_STALE_REASON;
    return why;
}

void watch_stop(watch *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->quit = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->tid, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
