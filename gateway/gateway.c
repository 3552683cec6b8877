/* The gateway's shared state: what gateway.h's struct needs set up and torn down. */
#include "gateway.h"
#include "mono.h"

#include <time.h>

int gateway_init(gateway *gw)
{

    atomic_init(&gw->stopping, 0);
    atomic_init(&gw->http_body_waiters, 0);
    gw->idle_gen = 0;
    if (pthread_mutex_init(&gw->idle_lock, NULL) != 0)
        return -1;
    if (mono_cond_init(&gw->idle) != 0) {
        pthread_mutex_destroy(&gw->idle_lock);
        return -1;
    }
    return 0;
}

void gateway_destroy(gateway *gw)
{
    gw_auth_clear(gw);
    gateway_metrics_principals_free(&gw->metrics);
    pthread_cond_destroy(&gw->idle);
    pthread_mutex_destroy(&gw->idle_lock);
}
