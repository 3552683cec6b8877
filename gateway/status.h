/*
 * What the gateway reports: readiness, for the admin port's /readyz and
 * gRPC's Health/Check alike, and its metrics for /metrics.
 *
 * Ready while it is not stopping, its queue is below the high-water mark,
 * Kafka answers and the gRPC listener answers a new client. Kafka and the
 * listener are asked by watcher threads once a second, so that a probe never
 * waits on the network (a Health/Check runs on a gRPC thread).
 */
#ifndef INGEST_GATEWAY_STATUS_H
#define INGEST_GATEWAY_STATUS_H

#include "gateway.h"
#include "producer.h"
#include "watch.h"

typedef struct gateway_status {
    gateway *gw;
    producer *prod;
    int timeout_ms; /* longest wait for Kafka's answer */
    watch *watcher;
    size_t record_max; /* the largest record --max-event-bytes allows (producer_max_message_bytes()) */
    size_t topic_max;  /* the topic's max.message.bytes as last told; 0 before (the watcher's) */
    unsigned rounds;   /* the watcher's checks so far */
} gateway_status;

/*
 * Ask Kafka once now (at most timeout_ms), then keep asking from a thread.
 * gw->kafka_reachable follows; transitions are logged. 0, or -1 when the
 * thread cannot start (the first answer still stands).
 */
int gateway_status_watch(gateway_status *st, int timeout_ms);
/* Stop the watcher. No-op when it never started. */
void gateway_status_unwatch(gateway_status *st);

/* Why the gateway is not ready, or NULL. Never blocks. */
const char *gateway_not_ready(gateway *gw);

/* admin_handlers.not_ready and .metrics for a gateway_status. */
const char *gateway_status_not_ready(void *gateway_status);
void gateway_status_metrics(void *gateway_status, struct evbuffer *out);

#endif
