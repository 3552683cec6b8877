/*
 * The UDP front end: fire-and-forget datagrams, each one JSON event, NDJSON
 * (one event a line) or one protobuf CloudEvent (first non-blank byte '{' is
 * JSON). Parsed, validated and queued like HTTP's; nothing is answered.
 * Invalid, truncated and overload-dropped datagrams are counted by reason
 * (gateway/metrics.h) and logged at a limited rate.
 */
#ifndef INGEST_UDP_H
#define INGEST_UDP_H

#include "front.h"
#include "gateway.h"

typedef struct udp_front udp_front;

/*
 * Receive on --udp-addr with --udp-threads threads, each with its own
 * SO_REUSEPORT socket and recvmmsg batches. Every datagram is counted in
 * gw->metrics (protocol udp), dropped ones by reason. NULL with a message in err.
 */
udp_front *udp_front_start(gateway *gw, char *err, size_t errlen);

/* Its lifecycle (front.h): stop_accepting stops receiving and joins the threads; nothing ever waits. */
extern const gw_front_ops udp_front_ops;

#endif
