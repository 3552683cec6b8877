/*
 * The UDP front end: fire-and-forget datagrams, each one JSON event, NDJSON
 * (one event a line) or one protobuf CloudEvent (first non-blank byte '{' is
 * JSON). Parsed, validated and queued like HTTP's; nothing is answered.
 * Invalid, truncated and overload-dropped datagrams are counted by reason
 * (gateway/metrics.h) and logged at a limited rate.
 */
#ifndef INGEST_UDP_H
#define INGEST_UDP_H

#include "gateway.h"

typedef struct udp_front udp_front;

/*
 * Receive on --udp-addr with --udp-threads threads, each with its own
 * SO_REUSEPORT socket and recvmmsg batches. Every datagram is counted in
 * gw->metrics (protocol udp), dropped ones by reason. NULL with a message in err.
 */
udp_front *udp_front_start(gateway *gw, char *err, size_t errlen);

/* Stop receiving and join the threads; what was queued stays queued. NULL is a no-op. */
void udp_front_stop(udp_front *u);

#endif
