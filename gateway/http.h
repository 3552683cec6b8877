/*
 * The HTTP front end: POST /v1/events in every content mode of the contract,
 * parsed, validated and queued on one I/O thread's loop, answered when the
 * events are queued (ack=accepted) or in Kafka (ack=committed).
 */
#ifndef INGEST_HTTP_H
#define INGEST_HTTP_H

#include <stddef.h>

#include <event2/util.h>

#include "front.h"
#include "gateway.h"

struct event_base;
typedef struct gw_http_loop gw_http_loop;
typedef struct gw_http_front gw_http_front;

/*
 * The front end: --http-threads I/O threads on --http-addr, each an event
 * loop with its own SO_REUSEPORT socket (a port another process holds is an
 * error). Driven through gw_http_front_ops (front.h). NULL with the reason
 * in err.
 */
gw_http_front *gw_http_front_start(gateway *gw, char *err, size_t errlen);
extern const gw_front_ops gw_http_front_ops;

/* One loop of it, alone (tests drive one): */

/*
 * Serve HTTP on `base` from listening socket `fd` (taken). The loop must run
 * on one thread; everything of this front end happens there. NULL on failure.
 */
gw_http_loop *gw_http_loop_new(struct event_base *base, evutil_socket_t fd, gateway *gw);

/* From any thread: stop accepting connections (runs on the front's loop). */
void gw_http_loop_stop_accepting(gw_http_loop *f);

/* From any thread: answer every request still waiting for Kafka with 503 shutting_down (the stop's deadline).
 */
void gw_http_loop_stop_waiting(gw_http_loop *f);

/* Requests waiting for Kafka on this front (any thread; approximate). */
size_t gw_http_loop_pending(const gw_http_loop *f);

/* After its loop has stopped: abort what waits, answer nothing more, free. */
void gw_http_loop_close(gw_http_loop *f);

/* After the producer is gone (every delivery report has come): free the rest. NULL is a no-op. */
void gw_http_loop_free(gw_http_loop *f);

#endif
