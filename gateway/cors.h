/*
 * CORS for browsers posting to /v1/events (--cors-origins, --cors-credentials),
 * and the CloudEvents webhook validation handshake's header checks.
 *
 * CORS is the browser's protocol, not access control: these functions only
 * say which response headers let a page on a listed origin read (and, after
 * a preflight, send) a request. A request whose origin is not listed is still
 * served (curl sends what it likes); the browser is what withholds the answer
 * from the page. Authentication (--auth-token, --auth-file) is what refuses.
 *
 * Pure functions over a parsed list, read-only after gw_cors_init(): each HTTP
 * loop holds its own copy, so nothing here locks.
 */
#ifndef INGEST_GATEWAY_CORS_H
#define INGEST_GATEWAY_CORS_H

#include <stddef.h>

/* Longest origin accepted in --cors-origins (scheme://host:port; a DNS name is at most 253). */
#define GW_CORS_MAX_ORIGIN 280

/* How long a browser may cache a preflight's answer, in seconds (Chromium caps it at 7200). */
#define GW_CORS_MAX_AGE 600

typedef struct gw_cors {
    int on;          /* CORS headers are sent at all: --cors-origins is not empty */
    int any;         /* the list is `*` */
    int credentials; /* --cors-credentials */
    char **origins;
    size_t n;
} gw_cors;

/*
 * Parse --cors-origins (comma-separated origins such as https://app.example.com,
 * or `*` alone; empty: off). 0; or -1 with a one-line reason in err: an entry
 * that is not an origin (a path, a trailing slash, a user, no scheme), `*` in
 * a list, or `*` with credentials (it would let every site send with a user's
 * cookies and client certificate).
 */
int gw_cors_init(gw_cors *c, const char *list, int credentials, char *err, size_t errlen);
void gw_cors_free(gw_cors *c);

/*
 * The Access-Control-Allow-Origin value for a request's Origin header: the
 * origin itself when listed (schemes and hosts compared case-insensitively),
 * `*` when the list is `*` (credentials are then off), or NULL.
 */
const char *gw_cors_allow_origin(const gw_cors *c, const char *origin);

/*
 * Whether every name in a preflight's Access-Control-Request-Headers is one
 * POST /v1/events reads: Content-Type, Content-Encoding, Authorization,
 * Ingest-Ack, and the CloudEvents binary mode's ce-* headers. A malformed
 * list is not allowed.
 */
int gw_cors_headers_allowed(const char *list);

/*
 * The header lines (each ending in "\r\n") of an answer to a request from
 * `origin` (NULL: it sent none), into out (always terminated; cut lines are
 * dropped whole). A preflight (`preflight` set, with its
 * Access-Control-Request-Method and -Headers, either may be NULL) gets the
 * Allow-Methods, Allow-Headers and Max-Age lines too; any other answer the
 * Expose-Headers line. Nothing when CORS is off; only Vary when the origin is
 * not allowed. Returns the length written.
 */
size_t gw_cors_headers(const gw_cors *c, const char *origin, int preflight, const char *req_headers,
                       char *out, size_t size);

/*
 * Whether a webhook handshake's WebHook-Request-Origin looks like the spec's
 * "DNS expression" (eventemitter.example.com): 1 to 253 letters, digits and
 * ".-_:", so echoing it in WebHook-Allowed-Origin is safe and short.
 */
int gw_webhook_origin_ok(const char *origin);

/* A WebHook-Request-Rate value: a positive integer (requests a minute) into *rate; 0, or -1. */
int gw_webhook_rate_parse(const char *s, long long *rate);

#endif
