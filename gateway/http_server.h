/*
 * A small HTTP/1.1 server on one libevent loop: connections, keep-alive,
 * pipelining (one request at a time per connection), Content-Length and
 * chunked bodies, Expect: 100-continue, size limits, idle timeouts. The
 * parsing is Debian's http-parser; what to answer is the application's.
 *
 * Why not evhttp: it answers an over-long body with its own HTML page, so a
 * 413 could not carry the contract's error shape, and it frees a request
 * whose client went away under the feet of whoever still holds it. Here the
 * application hears of both (error and abort callbacks).
 */
#ifndef INGEST_HTTP_SERVER_H
#define INGEST_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>

struct event_base;
struct evbuffer;

typedef struct gw_http_server gw_http_server;

typedef struct gw_http_header {
    const char *name; /* lower-case */
    const char *value;
} gw_http_header;

typedef struct gw_http_request {
    int method;        /* enum http_method of http_parser.h */
    const char *path;  /* the target's path, as sent */
    const char *query; /* the target's query without '?', or NULL */
    const gw_http_header *headers;
    size_t n_headers;
    struct evbuffer *body; /* the whole body, de-chunked */
    const char *peer;      /* "ip:port" of the client */
    uint64_t started_ns;   /* CLOCK_MONOTONIC at its first byte */
    void *user;            /* the application's, while it handles the request */
} gw_http_request;

typedef struct gw_http_server_config {
    size_t max_body;         /* a longer body is answered 413 and the connection closed */
    size_t max_header_bytes; /* request line and headers; beyond: 431 */
    int idle_timeout_ms;     /* an idle or stalled connection is closed after this */
    /* A complete request: answer it now or later with gw_http_respond(), exactly once. */
    void (*handle)(gw_http_request *req, void *arg);
    /* The client went away before the answer: forget `req`, it is freed after this returns. */
    void (*abort)(gw_http_request *req, void *arg);
    /* Answer an error the server found (413, 431, 400 for broken HTTP) in the application's shape. */
    void (*error)(gw_http_request *req, int status, const char *code, const char *message, void *arg);
    void *arg;
} gw_http_server_config;

/* Serve connections accepted on listening socket `fd` (which it then owns). NULL on failure. */
gw_http_server *gw_http_server_new(struct event_base *base, evutil_socket_t fd,
                                   const gw_http_server_config *cfg);

/* Stop accepting; connections in progress go on. */
void gw_http_server_stop_accepting(gw_http_server *srv);

/* Requests handed to the application and not yet answered. */
size_t gw_http_server_pending(const gw_http_server *srv);

/* Close every connection (waiting requests get abort()) and free. NULL is a no-op. */
void gw_http_server_free(gw_http_server *srv);

/*
 * Answer `req`: status, Content-Type, optional extra header lines (each
 * ending in "\r\n"), and the body. After this `req` is gone. `close` asks
 * for the connection to be closed once the answer is written.
 */
void gw_http_respond(gw_http_request *req, int status, const char *content_type, const char *extra_headers,
                     const char *body, size_t len, int close);

/* The value of header `lname` (lower-case), or NULL. */
const char *gw_http_request_header(const gw_http_request *req, const char *lname);

#endif
