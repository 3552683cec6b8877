/*
 * A small HTTP/1.1 server on one libevent loop: connections, keep-alive,
 * pipelining (one request at a time per connection), Content-Length and
 * chunked bodies, Expect: 100-continue, size limits, idle timeouts. The
 * parsing is Debian's http-parser; what to answer is the application's.
 *
 * Hostile clients meet limits on everything they could make it hold: a cap
 * on connections (and a spare descriptor, so running out of them never makes
 * accept spin), a deadline on the request line and headers, a minimum body
 * rate, a memory budget for bodies (reading stops when it is used up), and a
 * strict reading of RFC 9112 where http-parser is lenient (bare LF, obs-fold,
 * whitespace before the colon, names outside tchar, Host, the version).
 *
 * Why not evhttp: it answers an over-long body with its own HTML page, so a
 * 413 could not carry the contract's error shape, and it frees a request
 * whose client went away under the feet of whoever still holds it. Here the
 * application hears of both (error and abort callbacks).
 */
#ifndef INGEST_HTTP_SERVER_H
#define INGEST_HTTP_SERVER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>

struct event_base;
struct evbuffer;
struct gw_tls;

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
    struct evbuffer *body;                /* the whole body, de-chunked */
    const char *peer;                     /* "ip:port" of the client */
    const struct gw_peer_cert *peer_cert; /* TLS: the client's verified certificate (auth.h); NULL: none */
    uint64_t started_ns;                  /* CLOCK_MONOTONIC at its first byte */
    void *user;                           /* the application's, while it handles the request */
} gw_http_request;

typedef struct gw_http_server_config {
    size_t max_body;         /* a longer body is answered 413 and the connection closed */
    size_t max_header_bytes; /* request line and headers; beyond: 431 */
    int idle_timeout_ms;     /* an idle connection is closed after this; a stalled request is answered 408 */
    int header_timeout_ms;   /* the request line and headers must all arrive within this (0: no limit): 408 */
    /* Slowest body, in bytes a second averaged over it after header_timeout_ms of grace (0: none): 408. */
    size_t min_body_rate;
    /*
     * Most connections open at once, counted in *open_conns when set (shared
     * by the servers of one port, on other threads), else in the server.
     * More are accepted and closed at once (0: no cap).
     */
    size_t max_connections;
    atomic_size_t *open_conns;
    /*
     * Bodies are buffered only against bytes take_body() granted (NULL: no
     * budget): all of a Content-Length at the headers, a chunked body in
     * steps; they are given back when the request is answered. Without room
     * the connection reads nothing more; after overload_wait_ms it is
     * answered 429 by error() and closed.
     */
    int (*take_body)(size_t n, void *arg); /* 0, or -1 when there is no room */
    void (*give_body)(size_t n, void *arg);
    int overload_wait_ms;
    /*
     * While a connection waits for room (on any server of the port when
     * body_waiters is shared, else on this one), a body that has sent nothing
     * for stall_evict_ms is answered 408 and closed to make room: otherwise
     * bodies sent fast and then stalled hold the budget until the header
     * timeout's pause rule ends them, and every other body meanwhile gets 429.
     * 0: never.
     */
    int stall_evict_ms;
    atomic_int *body_waiters;
    /*
     * The headers are complete and a body follows, not yet read: return 0 to
     * read it, or answer `req` now with gw_http_respond() and return 1 (the
     * connection is then closed, since the body stays unread). 100 Continue
     * is sent only after this and the body's budget said yes. NULL: read it.
     */
    int (*head)(gw_http_request *req, void *arg);
    /*
     * TLS (NULL: plaintext): every connection is an OpenSSL bufferevent
     * accepting on the context in force when it was accepted (tls.h: shared
     * by servers on other threads, swapped by a reload; a connection keeps
     * its own). Everything above acts on the decrypted bytes. The
     * handshake must finish within header_timeout_ms of the accept (and
     * without a pause of idle_timeout_ms), or the connection closes.
     */
    struct gw_tls *tls;
    /*
     * A TLS handshake failed or timed out (`why`: OpenSSL's reason, or
     * "timeout"); the connection is closed. A client that closed without
     * sending a byte (a TCP probe) is not reported. May be NULL.
     */
    void (*tls_failed)(const char *peer, const char *why, void *arg);
    /* A connection closed at accept: over max_connections, or out of descriptors. May be NULL. */
    void (*refused_connection)(void *arg);
    /* A complete request: answer it now or later with gw_http_respond(), exactly once. */
    void (*handle)(gw_http_request *req, void *arg);
    /* The client went away before the answer: forget `req`, it is freed after this returns. */
    void (*abort)(gw_http_request *req, void *arg);
    /*
     * Answer an error the server found in the application's shape: 413, 431,
     * 400 (broken or lenient HTTP), 505 (a version other than 1.0 and 1.1),
     * 408 (too slow), 429 (no room for the body), 500. The connection closes.
     */
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
 * Answer `req`: status, Content-Type (NULL: none, for an answer without
 * content), optional extra header lines (each ending in "\r\n"), and the
 * body (a 204 sends neither body nor Content-Length). After this `req` is
 * gone. `close` asks for the connection to be closed once the answer is
 * written.
 */
void gw_http_respond(gw_http_request *req, int status, const char *content_type, const char *extra_headers,
                     const char *body, size_t len, int close);

/* The value of header `lname` (lower-case), or NULL. */
const char *gw_http_request_header(const gw_http_request *req, const char *lname);

#endif
