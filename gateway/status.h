/*
 * What the gateway reports on its admin port (common/admin.h): ready while
 * it is not stopping, its queue is below the high-water mark and Kafka
 * answers; and its metrics (gateway/metrics.h, the queue, the producer).
 */
#ifndef INGEST_GATEWAY_STATUS_H
#define INGEST_GATEWAY_STATUS_H

#include "gateway.h"
#include "producer.h"

typedef struct gateway_status {
    gateway *gw;
    producer *prod;
} gateway_status;

/* Why the gateway is not ready, or NULL: an admin_handlers.not_ready for a gateway_status. */
const char *gateway_status_not_ready(void *gateway_status);

/* Everything /metrics shows: an admin_handlers.metrics for a gateway_status. */
void gateway_status_metrics(void *gateway_status, struct evbuffer *out);

#endif
