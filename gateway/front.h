/*
 * What every protocol front end (HTTP, UDP, gRPC) is to the gateway's life:
 * started, told to stop accepting, asked how many requests still wait for
 * Kafka, told to answer those at the stop's deadline, closed and freed. One
 * lifecycle in gateway/main.c runs over a list of them.
 *
 * The stop waits without polling: a front end calls gw_front_changed() when
 * its count of pending requests drops while the gateway is stopping, and
 * gw_fronts_wait_idle() sleeps on that.
 */
#ifndef INGEST_GATEWAY_FRONT_H
#define INGEST_GATEWAY_FRONT_H

#include <stddef.h>

#include "gateway.h"

typedef struct gw_front_ops {
    const char *name; /* "http", "udp", "grpc": for the log */
    /* Stop taking new work; work in progress goes on. Idempotent. */
    void (*stop_accepting)(void *self);
    /* Requests taken and not answered yet (waiting for Kafka, or calls open). Any thread. */
    size_t (*pending)(void *self);
    /* The stop's deadline: answer what still waits (503 / UNAVAILABLE: the events may yet arrive). */
    void (*abort_waiting)(void *self);
    /* Stop the threads and let go of the connections; nothing is answered after this. */
    void (*close)(void *self);
    /* Free, once no delivery report can reach it any more (the producer is freed). */
    void (*free)(void *self);
} gw_front_ops;

typedef struct gw_front {
    const gw_front_ops *ops;
    void *self;
} gw_front;

/* A front end's pending count dropped: wake the stop if it waits (any thread; cheap when not stopping). */
void gw_front_changed(gateway *gw);

/*
 * Wait until no front has anything pending, or `deadline_ms` (mono_ms())
 * passes. Returns the count still pending.
 */
size_t gw_fronts_wait_idle(gateway *gw, gw_front *fronts, size_t n, long long deadline_ms);

#endif
