/*
 * The gateway's memory budget (--memory-budget): one number, set from the
 * container's memory limit, split into shares for everything a client can
 * make the gateway hold, so no client can grow it past the limit:
 *
 *   kafka    1/4  librdkafka's own buffer (queue.buffering.max.kbytes)
 *   queued   1/4  records in the shared queue, not yet handed to librdkafka
 *   inbound  1/2  request bodies being read (HTTP), gRPC messages being
 *                 handled and acks owed to a client that does not read them
 *
 * and one connection or stream holds at most `conn_share` of the inbound
 * share. Past a share the gateway stops reading (TCP or HTTP/2 flow control)
 * or refuses as overloaded (429, RESOURCE_EXHAUSTED, a counted UDP drop)
 * instead of growing. The counters are atomics: any thread takes and gives.
 */
#ifndef INGEST_GATEWAY_BUDGET_H
#define INGEST_GATEWAY_BUDGET_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct gw_budget {
    size_t total, kafka, queued, inbound, conn_share; /* bytes, read-only after gw_budget_init() */
    atomic_size_t queued_used;
    atomic_size_t inbound_used;
    atomic_size_t inbound_peak; /* the most the inbound share held, for /metrics */
} gw_budget;

/*
 * Split `total` bytes. A request of `max_request` bytes must fit a
 * connection's share: -1 with a message in errbuf when total is too small.
 */
int gw_budget_init(gw_budget *b, size_t total, size_t max_request, char *errbuf, size_t errlen);

/* Take `n` bytes of the inbound share: 0, or -1 (nothing taken) when it would pass the share. */
int gw_budget_take_inbound(gw_budget *b, size_t n);
void gw_budget_give_inbound(gw_budget *b, size_t n);
/*
 * Count `n` bytes already held (an ack made for a client, a message the gRPC
 * core read): they may pass the share, and whoever would read more looks at
 * gw_budget_inbound_full() first. Given back with gw_budget_give_inbound().
 */
void gw_budget_hold_inbound(gw_budget *b, size_t n);
int gw_budget_inbound_full(const gw_budget *b);

/*
 * Records in the queue. Admission refuses new work while the queued share
 * is used up (gw_budget_queued_full); what passed the gate is added even if
 * it goes over, which bounds the excess by the requests in flight.
 */
void gw_budget_add_queued(gw_budget *b, size_t n);
void gw_budget_sub_queued(gw_budget *b, size_t n);
int gw_budget_queued_full(const gw_budget *b);

#endif
