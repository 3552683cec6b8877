/*
 * The gRPC front end's protocol logic, apart from the C core so that it can
 * be tested alone: a PublishRequest into validated events (or the list of
 * what is wrong with them), the PublishResponse, the peer and bearer token
 * as the call gives them, and the in-order release of a stream's acks.
 */
#ifndef INGEST_GRPC_PROT_H
#define INGEST_GRPC_PROT_H

#include <stddef.h>
#include <stdint.h>

#include "admit.h"
#include "event.h"
#include "ingest/v1/ingest.pb-c.h"
#include "wire.h"

/* A PublishRequest as the admission stage's parser takes it; seq is set by the parse. */
typedef struct gw_grpc_publish {
    const uint8_t *data;
    size_t len;
    uint64_t seq;
} gw_grpc_publish;

/*
 * The admission stage's parser (admit.h) for a PublishRequest (`arg`, a
 * gw_grpc_publish): the request read straight from its bytes, its ack level
 * into a->committed, each event decoded into a->batch, and every event that
 * does not decode listed with gw_admission_event_error(). Refused as a whole
 * (index -1): malformed (malformed_protobuf), an unknown ack level
 * (bad_request), more than lim->max_batch_events events (too_many_events).
 */
int gw_grpc_prot_parse(gw_admission *a, void *arg);

/*
 * The status message of a refused call: "code: message", with "event N: "
 * when one event is at fault, and a note when others are too.
 */
void gw_grpc_prot_status_message(const gw_refusal *r, size_t n_errors, char *out, size_t size);

/*
 * A PublishResponse for request `seq`: the ids of `accepted` (NULL: none
 * accepted) and the refused events of `errs` (NULL: none), packed into a new
 * malloc'd buffer. 0 or -ENOMEM.
 */
int gw_grpc_prot_response(uint64_t seq, const ing_event_batch *accepted, const gw_event_error *errs,
                          size_t n_errs, uint8_t **out, size_t *out_len);

/*
 * The Envelope's peer from grpc_call_get_peer()'s URI: "ipv4:1.2.3.4:5" is
 * "1.2.3.4:5", "ipv6:%5B::1%5D:5" is "[::1]:5"; other schemes (unix:) are
 * kept whole. Always NUL-terminates out.
 */
void gw_grpc_prot_peer(const char *uri, char *out, size_t size);

/*
 * A stream's acks in the order of their requests. Each is appended when its
 * request has been read; it is released (popped) only once it and every
 * one before it are no longer waiting for Kafka, so acks leave in seq
 * order whatever order Kafka answers in.
 */
typedef enum gw_grpc_ack_state {
    GW_GRPC_ACK_WAITING, /* queued, ack=committed: Kafka has not answered yet */
    GW_GRPC_ACK_READY,   /* the response may go */
    GW_GRPC_ACK_FAILED,  /* Kafka refused or timed out: the stream ends UNAVAILABLE here */
} gw_grpc_ack_state;

typedef struct gw_grpc_ack {
    struct gw_grpc_ack *next;
    gw_grpc_ack_state state;
    uint64_t seq;
} gw_grpc_ack;

typedef struct gw_grpc_ack_fifo {
    gw_grpc_ack *head;
    gw_grpc_ack **tail;
    size_t n;
} gw_grpc_ack_fifo;

void gw_grpc_ack_fifo_init(gw_grpc_ack_fifo *f);
void gw_grpc_ack_fifo_push(gw_grpc_ack_fifo *f, gw_grpc_ack *a);
/* The oldest ack when it no longer waits (taken off the FIFO), else NULL. */
gw_grpc_ack *gw_grpc_ack_fifo_pop_ready(gw_grpc_ack_fifo *f);
/* The oldest ack whatever its state (taken off), else NULL: for tearing down. */
gw_grpc_ack *gw_grpc_ack_fifo_pop(gw_grpc_ack_fifo *f);

#endif
