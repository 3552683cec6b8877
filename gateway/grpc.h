/*
 * The gRPC front end (ingest.v1.Ingest and grpc.health.v1.Health) on the
 * gRPC C core: completion-queue threads, one small state machine per call.
 *
 * Publish is one batch, all or nothing, like an HTTP request. PublishStream
 * acknowledges each request by its seq, in order; it reads the next request
 * only while the shared queue is below its high-water mark and the stream
 * has fewer than a few dozen acks outstanding, so a fast client, or one that
 * does not read its acks, is held back by HTTP/2 flow control, not errors.
 * Kafka's delivery results come back on librdkafka's thread (an ack_wait
 * without an inbox) and answer the call from there: every call has a lock
 * of its own, and grpc_call_start_batch is thread-safe.
 */
#ifndef INGEST_GRPC_H
#define INGEST_GRPC_H

#include <stddef.h>

#include "front.h"
#include "gateway.h"

typedef struct gw_grpc_front gw_grpc_front;

/*
 * Listen on `addr` (host:port, [ipv6]:port) and serve with `threads`
 * completion-queue threads. NULL with the reason in err (a port in use is
 * an error: the core's SO_REUSEPORT is turned off).
 */
gw_grpc_front *gw_grpc_front_start(gateway *gw, const char *addr, int threads, char *err, size_t errlen);

/*
 * Stop taking calls (the core refuses new ones); open streams send the acks
 * of what they took, then end with UNAVAILABLE; unary calls waiting for
 * Kafka get their answer. Idempotent; NULL is a no-op.
 */
void gw_grpc_front_stop_accepting(gw_grpc_front *g);

/* Calls not yet finished. */
size_t gw_grpc_front_pending(gw_grpc_front *g);

/*
 * Cancel the calls still open, wait until the core has let go of them, and
 * stop the threads. Delivery results arriving afterwards answer nobody.
 * NULL is a no-op.
 */
void gw_grpc_front_close(gw_grpc_front *g);

/* Free, once no delivery result can come any more (the producer is freed). NULL is a no-op. */
void gw_grpc_front_free(gw_grpc_front *g);

/* The above, and the stop's deadline (answer calls still waiting for Kafka UNAVAILABLE), as front.h's ops. */
extern const gw_front_ops gw_grpc_front_ops;

#endif
