/*
 * Why a request is refused, and what each protocol says for it: one table,
 * so that HTTP, UDP and gRPC cannot drift apart, and no reason is ever a
 * string matched back with strcmp.
 */
#ifndef INGEST_GATEWAY_REASON_H
#define INGEST_GATEWAY_REASON_H

#include "event.h"

typedef enum gw_protocol { GW_HTTP, GW_UDP, GW_GRPC, GW_N_PROTOCOLS } gw_protocol;

/* gRPC status codes, numbered as the gRPC specification (and grpc/status.h) numbers them. */
typedef enum gw_grpc_status {
    GW_GRPC_OK = 0,
    GW_GRPC_INVALID_ARGUMENT = 3,
    GW_GRPC_DEADLINE_EXCEEDED = 4,
    GW_GRPC_NOT_FOUND = 5,
    GW_GRPC_PERMISSION_DENIED = 7,
    GW_GRPC_RESOURCE_EXHAUSTED = 8,
    GW_GRPC_UNIMPLEMENTED = 12,
    GW_GRPC_INTERNAL = 13,
    GW_GRPC_UNAVAILABLE = 14,
    GW_GRPC_UNAUTHENTICATED = 16,
} gw_grpc_status;

/*
 * Every reason: its name (the error code clients see, and the `reason` label
 * of the metrics), the HTTP status, the gRPC status, and whether a refusal for
 * it is the gateway's doing (dropped: 1) or the request's (rejected: 0).
 * Nobody is answered for too_many_connections (closed at accept) or
 * socket_buffer (a datagram the kernel dropped, UDP only): their statuses are
 * never sent. rate_limited is the caller's doing (over its quota), so it is
 * counted as rejected, not dropped, though a retry later will work.
 */
#define GW_REASONS(X)                                                                                        \
    X(malformed_json, 400, GW_GRPC_INVALID_ARGUMENT, 0)                                                      \
    X(malformed_protobuf, 400, GW_GRPC_INVALID_ARGUMENT, 0)                                                  \
    X(invalid_event, 400, GW_GRPC_INVALID_ARGUMENT, 0)                                                       \
    X(too_large, 413, GW_GRPC_INVALID_ARGUMENT, 0)                                                           \
    X(too_many_events, 413, GW_GRPC_INVALID_ARGUMENT, 0)                                                     \
    X(empty, 400, GW_GRPC_INVALID_ARGUMENT, 0)                                                               \
    X(truncated, 413, GW_GRPC_INVALID_ARGUMENT, 0)                                                           \
    X(unsupported_media_type, 415, GW_GRPC_INVALID_ARGUMENT, 0)                                              \
    X(unsupported_encoding, 415, GW_GRPC_INVALID_ARGUMENT, 0)                                                \
    X(bad_encoding, 400, GW_GRPC_INVALID_ARGUMENT, 0)                                                        \
    X(bad_request, 400, GW_GRPC_INVALID_ARGUMENT, 0)                                                         \
    X(headers_too_large, 431, GW_GRPC_INVALID_ARGUMENT, 0)                                                   \
    X(not_found, 404, GW_GRPC_UNIMPLEMENTED, 0)                                                              \
    X(method_not_allowed, 405, GW_GRPC_UNIMPLEMENTED, 0)                                                     \
    X(unauthorized, 401, GW_GRPC_UNAUTHENTICATED, 0)                                                         \
    X(forbidden, 403, GW_GRPC_PERMISSION_DENIED, 0)                                                          \
    X(request_timeout, 408, GW_GRPC_DEADLINE_EXCEEDED, 0)                                                    \
    X(rate_limited, 429, GW_GRPC_RESOURCE_EXHAUSTED, 0)                                                      \
    X(overloaded, 429, GW_GRPC_RESOURCE_EXHAUSTED, 1)                                                        \
    X(too_many_connections, 503, GW_GRPC_UNAVAILABLE, 1)                                                     \
    X(socket_buffer, 503, GW_GRPC_UNAVAILABLE, 1)                                                            \
    X(shutting_down, 503, GW_GRPC_UNAVAILABLE, 1)                                                            \
    X(ack_timeout, 503, GW_GRPC_UNAVAILABLE, 1)                                                              \
    X(kafka_error, 503, GW_GRPC_UNAVAILABLE, 1)                                                              \
    X(internal, 500, GW_GRPC_INTERNAL, 1)

#define GW_REASON_ENUM(name, http, grpc, dropped) GW_R_##name,
typedef enum gw_reason { GW_REASONS(GW_REASON_ENUM) GW_N_REASONS } gw_reason;
#undef GW_REASON_ENUM

typedef struct gw_reason_info {
    const char *name;
    int http_status;
    gw_grpc_status grpc_status;
    int dropped;
} gw_reason_info;

/* Indexed by gw_reason. */
extern const gw_reason_info gw_reasons[GW_N_REASONS];

/* The reason for what common/ found wrong with an event or a request. */
gw_reason gw_reason_of_errcode(ing_errcode code);

#endif
