/*
 * The UDP front end: fire-and-forget datagrams, each one JSON event, NDJSON
 * (one event a line) or one protobuf CloudEvent (first non-blank byte '{' is
 * JSON). Parsed, validated and queued like HTTP's; nothing is answered.
 * Invalid, truncated and overload-dropped datagrams are counted by reason.
 */
#ifndef INGEST_UDP_H
#define INGEST_UDP_H

#include <stdatomic.h>

#include "gateway.h"

typedef struct udp_stats {
    atomic_uint_fast64_t datagrams;  /* received */
    atomic_uint_fast64_t events;     /* queued */
    atomic_uint_fast64_t invalid;    /* malformed or invalid events: the whole datagram is dropped */
    atomic_uint_fast64_t truncated;  /* larger than the receive buffer (MSG_TRUNC) */
    atomic_uint_fast64_t overloaded; /* the queue was above its high-water mark */
} udp_stats;

typedef struct udp_front udp_front;

/*
 * Receive on `addr` with `threads` threads, each with its own SO_REUSEPORT
 * socket and recvmmsg batches. NULL with a message in err.
 */
udp_front *udp_front_start(gateway *gw, const char *addr, int threads, size_t rcvbuf, char *err,
                           size_t errlen);

/* Stop receiving and join the threads; what was queued stays queued. NULL is a no-op. */
void udp_front_stop(udp_front *u);

const udp_stats *udp_front_stats(const udp_front *u);

#endif
