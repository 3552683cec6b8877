/*
 * The Kafka record: an ingest.v1.Envelope (the event as a CloudEvents
 * protobuf message, plus when, how and from where it came in), its key and
 * its headers, as the contract gives them.
 */
#ifndef INGEST_ENVELOPE_H
#define INGEST_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "ingest/v1/envelope.pb-c.h"

typedef enum envelope_protocol {
    ENVELOPE_HTTP = INGEST__V1__PROTOCOL__PROTOCOL_HTTP,
    ENVELOPE_UDP = INGEST__V1__PROTOCOL__PROTOCOL_UDP,
    ENVELOPE_GRPC = INGEST__V1__PROTOCOL__PROTOCOL_GRPC,
} envelope_protocol;

typedef struct envelope_meta {
    int64_t received_unix_nanos;
    envelope_protocol protocol;
    const char *peer;       /* "ip:port"; NULL for none */
    const char *gateway_id; /* NULL for none */
    const char
        *principal; /* who sent it (gateway/auth.h), at most ENVELOPE_MAX_PRINCIPAL bytes; NULL for none */
} envelope_meta;

/* The longest principal name (gateway/auth.h's GW_AUTH_NAME_MAX): envelope_max_size() counts it. */
#define ENVELOPE_MAX_PRINCIPAL 64

/*
 * Encode a validated event (with its id assigned) and `meta` as an Envelope
 * into a new malloc'd buffer that the caller frees. 0, -EINVAL (no id,
 * source or type), -ENOMEM.
 */
int envelope_encode(const ing_event *ev, const envelope_meta *meta, uint8_t **out, size_t *out_len);

/*
 * The same in two steps, for a caller that places the bytes itself:
 * envelope_size() gives the Envelope's exact length (0 when the event has no
 * id, source or type) and, in *event_len, its CloudEvent's; envelope_write()
 * takes that event_len (the event is not measured twice) and writes the
 * Envelope's bytes to `out`.
 */
size_t envelope_size(const ing_event *ev, const envelope_meta *meta, size_t *event_len);
void envelope_write(const ing_event *ev, const envelope_meta *meta, size_t event_len, uint8_t *out);

/*
 * The most bytes envelope_size() can give for a valid event within
 * max_event_bytes (as ing_event_size() counts) and max_extensions, with a
 * peer and a gateway id at most this long, and any principal: what Kafka must take for every
 * event the limits let in. A bound, a little above the worst case (the
 * unit tests build that case and compare).
 */
size_t envelope_max_size(size_t max_event_bytes, size_t max_extensions, size_t peer_len,
                         size_t gateway_id_len);

/* Decode an Envelope; NULL when the bytes are not one. Free with envelope_free(). */
Ingest__V1__Envelope *envelope_decode(const uint8_t *buf, size_t len);
void envelope_free(Ingest__V1__Envelope *env);

/*
 * Convert a CloudEvents protobuf message, as protobuf-c unpacked it (a
 * decoded Envelope, say), into the event model: typed attribute values
 * become their canonical strings (booleans "true"/"false", integers in
 * decimal, bytes in base64, timestamps in RFC 3339). Not validated: call
 * ing_event_validate(). 0, -ENOMEM, or -EINVAL with err filled (an attribute
 * given twice, proto_data). The gateway reads requests with wire.c's
 * ing_event_from_wire() instead; this is the reference its test compares with.
 */
int ing_event_from_proto(const Ingest__V1__CloudEvent *ce, ing_event *ev, const ing_event_limits *lim,
                         ing_event_error *err);

/*
 * The canonical string of any typed attribute value (booleans "true"/"false",
 * integers in decimal, bytes in base64, timestamps in RFC 3339): a new
 * malloc'd string the caller frees, or NULL.
 */
char *envelope_attr_text(const Ingest__V1__CloudEvent__CloudEventAttributeValue *v, size_t *len);

/*
 * A typed attribute value apart from protobuf-c's structs, so that the
 * direct wire decoder (wire.c) and ing_event_from_proto() share one conversion.
 * `kind` is the CloudEventAttributeValue field number; 0 is none.
 */
enum attr_kind {
    ATTR_NONE = 0,
    ATTR_BOOLEAN = 1,
    ATTR_INTEGER = 2,
    ATTR_STRING = 3,
    ATTR_BYTES = 4,
    ATTR_URI = 5,
    ATTR_URI_REF = 6,
    ATTR_TIMESTAMP = 7,
};

typedef struct envelope_attr {
    int kind;
    int boolean;
    int32_t integer;
    const char *str; /* strings, URIs and bytes: `len` bytes, not NUL-terminated */
    size_t len;
    int64_t sec; /* a timestamp */
    int32_t nsec;
} envelope_attr;

#define ATTR_TEXT_BUF 48

/*
 * The canonical text of `v`: strings as given (cut at a first NUL, as
 * protobuf-c's strings are), booleans, integers and timestamps written into
 * `buf`, bytes in base64 in a new malloc'd *heap that the caller frees
 * (*heap is NULL otherwise). Sets *len; NULL for no value or -ENOMEM.
 */
const char *envelope_attr_format(const envelope_attr *v, char buf[ATTR_TEXT_BUF], char **heap, size_t *len);

/* The Kafka key: the `partitionkey` extension, else `subject`, else `source`. */
const char *ing_event_kafka_key(const ing_event *ev);

/*
 * Format seconds since the epoch and nanoseconds as RFC 3339 UTC into buf[48]:
 * "2026-11-26T10:00:00.123456789Z", the fraction left out when 0. Outside
 * years 1 to 9999, or nanoseconds outside [0, 1e9), a text saying so, which
 * rfc3339_parse() refuses.
 */
void rfc3339_format(int64_t sec, int32_t nsec, char *buf, size_t size);

/* Standard base64 with padding; out must hold 4*ceil(len/3)+1 bytes. Returns the length. */
size_t base64_encode(const unsigned char *in, size_t len, char *out);

#endif
