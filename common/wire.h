/*
 * CloudEvents protobuf straight from the wire into the event model: the
 * mirror of envelope_write(). gRPC requests and UDP datagrams are decoded
 * here without protobuf-c's message structs (an allocation per field and
 * string, then a second copy into the event).
 *
 * The result is what protobuf-c's unpack followed by ing_event_from_proto()
 * gives for the same bytes, malformed input included; tests/unit/test_wire.c
 * compares the two on many thousands of messages and mutations of them.
 */
#ifndef INGEST_WIRE_H
#define INGEST_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"

/*
 * The bytes of one ingest.v1.CloudEvent into `ev` (initialized by the
 * caller; ing_event_clear() it whatever the result). Not validated: call
 * ing_event_validate(). Returns 0, -ENOMEM, -EBADMSG when the bytes are not a
 * protobuf CloudEvent (protobuf-c's unpack would return NULL), or -EINVAL
 * with err filled as ing_event_from_proto() fills it (an attribute given twice
 * or without a value, proto_data, a bad extension name, ...).
 * With ev NULL, only checks the bytes: 0 or -EBADMSG.
 */
int ing_event_from_wire(const uint8_t *buf, size_t len, ing_event *ev, const ing_event_limits *lim,
                        ing_event_error *err);

/* An ingest.v1.PublishRequest's fields; its events stay bytes in the request's buffer. */
typedef struct wire_request {
    uint64_t seq;
    int32_t ack; /* an AckLevel, or any other number the client sent */
    size_t n_events;
    const uint8_t *buf; /* the request's bytes, borrowed */
    size_t len;
} wire_request;

/*
 * Read a PublishRequest. Every event is checked to be a well-formed
 * CloudEvent (ing_event_from_wire(..., NULL, ...)), so that -EBADMSG means
 * exactly what protobuf-c's NULL meant: nothing of the request is usable.
 * Returns 0 or -EBADMSG. `req` borrows `buf`.
 */
int publish_request_from_wire(const uint8_t *buf, size_t len, wire_request *req);

/*
 * The next event of a request read by publish_request_from_wire(): its
 * bytes in *ev and *ev_len. `pos` starts at 0. Returns 1, or 0 after the last.
 */
int wire_request_next_event(const wire_request *req, size_t *pos, const uint8_t **ev, size_t *ev_len);

#endif
