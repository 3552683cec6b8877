/*
 * The admin port both programs serve, on a thread and loop of its own so a
 * probe is answered however busy the data path is:
 *   GET /healthz  200 while the process runs;
 *   GET /readyz   200, or 503 with the reason the program gives;
 *   GET /metrics  the Prometheus text the program writes.
 */
#ifndef INGEST_ADMIN_H
#define INGEST_ADMIN_H

#include <stddef.h>

struct evbuffer;

typedef struct admin_handlers {
    const char *thread_name; /* at most 15 bytes */
    /*
     * Why the program is not ready, or NULL when it is. Runs on the admin
     * thread, which also answers /healthz: it must not block, so it reads
     * what a watcher (common/watch.h) keeps instead of asking the network.
     */
    const char *(*not_ready)(void *ctx);
    /* Append the metrics in the Prometheus text format. */
    void (*metrics)(void *ctx, struct evbuffer *out);
    void *ctx;
} admin_handlers;

typedef struct admin_server admin_server;

/* Serve on `addr` (host:port, [ipv6]:port). NULL with a message in err. */
admin_server *admin_start(const char *addr, const admin_handlers *h, char *err, size_t errlen);

/* Stop serving and join the thread. NULL is a no-op. */
void admin_stop(admin_server *a);

#endif
