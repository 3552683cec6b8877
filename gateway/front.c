#include "front.h"

#include "mono.h"

#include <time.h>

void gw_front_changed(gateway *gw)
{
    /* Only the stop waits for it: the hot path pays one atomic load. */
    if (!atomic_load_explicit(&gw->stopping, memory_order_relaxed))
        return;
    pthread_mutex_lock(&gw->idle_lock);
    gw->idle_gen++;
    pthread_cond_broadcast(&gw->idle);
    pthread_mutex_unlock(&gw->idle_lock);
}

size_t gw_fronts_wait_idle(gateway *gw, gw_front *fronts, size_t n, long long deadline_ms)
{
    for (;;) {
        /*
         * The count is read without idle_lock held: a front end's pending()
         * takes its own lock, under which it may call gw_front_changed(). The
         * generation tells a change that came in between.
         */
        pthread_mutex_lock(&gw->idle_lock);
        unsigned long gen = gw->idle_gen;
        pthread_mutex_unlock(&gw->idle_lock);
        size_t pending = 0;
        for (size_t i = 0; i < n; i++)
            pending += fronts[i].ops->pending(fronts[i].self);
        long long now = mono_ms();
        if (pending == 0 || now >= deadline_ms)
            return pending;
        /* Short sleeps at most: a front that forgot to tell still gets looked at. */
        long long until = deadline_ms - now > 200 ? now + 200 : deadline_ms;
        struct timespec ts = {(time_t)(until / 1000), (long)(until % 1000) * 1000000};
        pthread_mutex_lock(&gw->idle_lock);
        while (gw->idle_gen == gen)
            if (pthread_cond_timedwait(&gw->idle, &gw->idle_lock, &ts) != 0)
                break;
        pthread_mutex_unlock(&gw->idle_lock);
    }
}
