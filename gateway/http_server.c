#include "http_server.h"

#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "auth.h"
#include "log.h"
#include "mono.h"
#include "net.h"
#include "prom.h"
#include "tls.h"

#define MAX_HEADERS 128

/* A chunked body takes its budget in steps of this (or what the input at hand needs). */
#define BODY_STEP (64 * 1024)
/* How often a server looks for stalled bodies to evict while connections wait for room (stall_evict_ms). */
#define STALL_POLL_MS 100
/* How often connections waiting for body budget look for room. */
#define ROOM_POLL_MS 5
/* Input read ahead of the parser (pipelined requests behind one being handled): beyond this, reading stops.
 */
#define READ_AHEAD (16 * 1024)

/*
 * The strict reading of a request's head, byte by byte, before http-parser
 * sees it: http-parser (as Debian builds it) takes bare LF line ends,
 * obs-fold, whitespace before the colon and spaces inside names, and two
 * parsers that disagree on where a header or a body ends are a request
 * smuggling hazard when a proxy sits in front (RFC 9112, 11.2).
 */
typedef enum head_state {
    H_START,       /* before the request line; one empty line (CRLF) is skipped (RFC 9112, 2.2) */
    H_START_LF,    /* CR seen before the request line */
    H_START_ONE,   /* the one empty line seen: more would let a client hold a connection on CRLFs */
    H_LINE,        /* in the request line */
    H_LINE_LF,     /* CR seen at the end of the request line */
    H_FIELD_START, /* at the start of a field line, or of the empty line that ends the head */
    H_NAME,        /* in a field name */
    H_VALUE,       /* after the colon */
    H_VALUE_LF,    /* CR seen at the end of a field line */
    H_END_LF,      /* CR of the empty line seen */
    H_BODY,        /* past the head: not scanned */
} head_state;

typedef struct hdr_span {
    size_t name_off, name_len, value_off, value_len;
} hdr_span;

typedef struct http_conn {
    gw_http_server *srv;
    struct bufferevent *bev;
    SSL *ssl;           /* TLS: the bufferevent's (it frees it); NULL in plaintext */
    int handshaking;    /* TLS: accepted, the handshake not finished */
    int tls_closed;     /* TLS: close_notify sent, or the session failed: nothing more to say */
    gw_peer_cert *cert; /* TLS: the client's verified certificate, read once at the handshake's end */
    http_parser parser;
    gw_http_request req;
    char peer[64];

    /* The request being read: URL and headers as spans of hbuf, copied to hcopy when complete. */
    char *hbuf;
    size_t hlen;
    size_t url_off, url_len;
    hdr_span spans[MAX_HEADERS];
    size_t n_spans;
    int in_value;
    char *hcopy;
    gw_http_header headers[MAX_HEADERS];
    int keep_alive;

    /* What stopped the parser: a complete request, or an error to answer. */
    int message_done;
    int err_status;
    const char *err_code;
    const char *err_message;

    /* The strict reading (head_state), and the request's progress. */
    head_state head;
    int in_request; /* its first byte came, the application does not have it yet */
    int in_body;    /* its headers are complete, its body is being read */
    int chunked;
    int expect_continue;  /* 100 Continue owed once the body's budget is there */
    size_t reserved;      /* bytes of the body budget this request holds */
    size_t want;          /* what it waits for, while on the server's room list */
    long long wait_since; /* mono_ms() when it began waiting */
    int waiting_room;
    struct http_conn *wprev, *wnext; /* on srv's room list, oldest first */
    uint64_t body_start_ns;          /* headers complete (moved on by time spent waiting for room) */
    uint64_t body_last_ns;           /* the last body bytes came (or the wait for room ended) */
    struct event *deadline;          /* the header deadline, then the body rate's */
    char err_buf[160];

    int busy;              /* a request is with the application */
    int close_after_write; /* closing once the output is written */
    int lingering;         /* answer written, write side shut, draining input until EOF */
    int closing;           /* freed when the outermost callback returns */
    int depth;             /* callbacks of this connection on the stack */
    struct http_conn *prev, *next;
} http_conn;

struct gw_http_server {
    struct event_base *base;
    struct evconnlistener *listener;
    gw_http_server_config cfg;
    http_conn *conns;
    size_t pending;
    atomic_size_t own_conns; /* cfg.open_conns when the configuration names none */
    http_conn *room_head, *room_tail;
    struct event *room_timer;
    atomic_int own_waiters;    /* cfg.body_waiters when the configuration names none */
    struct event *stall_timer; /* looks for stalled bodies to evict while connections wait for room */
    /*
     * Out of descriptors, accept fails and the listening socket stays
     * readable: a loop that only logs spins (and once wrote 26 million log
     * lines in 43 s). This spare is closed to accept and close one waiting
     * connection, then opened again; without it the listener rests a moment.
     */
    int spare_fd;
    struct event *resume_timer;
    long long accept_log_ms; /* when the last accept error was logged */
    unsigned long accept_errors;
};

static void conn_process(http_conn *c);
static void conn_fail(http_conn *c, int status, const char *code, const char *message);
static void body_reserved(http_conn *c);
static int body_reserve(http_conn *c, size_t n);

/* --- parser callbacks: record only; all acting is done after http_parser_execute returns ----------- */

static void parser_fail(http_conn *c, int status, const char *code, const char *message)
{
    if (c->err_status == 0) {
        c->err_status = status;
        c->err_code = code;
        c->err_message = message;
    }
    /* From a callback: stop the parser there. After it failed by itself, it is stopped already. */
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_OK)
        http_parser_pause(&c->parser, 1);
}

static int hbuf_append(http_conn *c, const char *at, size_t len)
{
    if (c->hlen + len > c->srv->cfg.max_header_bytes) {
        parser_fail(c, 431, "headers_too_large", "the request line and headers are too large");
        return -1;
    }
    memcpy(c->hbuf + c->hlen, at, len);
    c->hlen += len;
    return 0;
}

static int on_message_begin(http_parser *p)
{
    http_conn *c = p->data;

    c->hlen = 0;
    c->url_off = c->url_len = 0;
    c->n_spans = 0;
    c->in_value = 0;
    free(c->hcopy);
    c->hcopy = NULL;
    c->req.path = NULL;
    c->req.query = NULL;
    c->req.n_headers = 0;
    c->req.started_ns = prom_now_ns();
    evbuffer_drain(c->req.body, evbuffer_get_length(c->req.body));
    c->in_request = 1;
    c->in_body = 0;
    c->chunked = 0;
    c->expect_continue = 0;
    if (c->srv->cfg.header_timeout_ms > 0) {
        /* From the first byte, whatever the pace: the idle timeout restarts on each byte, this does not. */
        struct timeval tv = {c->srv->cfg.header_timeout_ms / 1000,
                             (c->srv->cfg.header_timeout_ms % 1000) * 1000};
        evtimer_add(c->deadline, &tv);
    }
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    http_conn *c = p->data;

    if (c->url_len == 0)
        c->url_off = c->hlen;
    if (hbuf_append(c, at, len) != 0)
        return 0;
    c->url_len += len;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    http_conn *c = p->data;

    if (c->n_spans == 0 || c->in_value) {
        if (c->n_spans == MAX_HEADERS) {
            parser_fail(c, 431, "headers_too_large", "more than 128 header fields");
            return 0;
        }
        c->spans[c->n_spans++] = (hdr_span){.name_off = c->hlen};
        c->in_value = 0;
    }
    if (hbuf_append(c, at, len) == 0)
        c->spans[c->n_spans - 1].name_len += len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    http_conn *c = p->data;
    hdr_span *s = &c->spans[c->n_spans - 1];

    if (!c->in_value) {
        s->value_off = c->hlen;
        c->in_value = 1;
    }
    if (hbuf_append(c, at, len) == 0)
        s->value_len += len;
    return 0;
}

/* Copy URL and headers out as NUL-terminated strings, names lower-cased. */
static int build_request(http_conn *c)
{
    size_t need = c->url_len + 2;
    char *p;

    for (size_t i = 0; i < c->n_spans; i++)
        need += c->spans[i].name_len + c->spans[i].value_len + 2;
    if ((c->hcopy = malloc(need)) == NULL)
        return -1;
    p = c->hcopy;

    /* The target: path, then the query after '?'. */
    memcpy(p, c->hbuf + c->url_off, c->url_len);
    p[c->url_len] = '\0';
    c->req.path = p;
    /* The absolute form (RFC 9112, 3.2.2), "http://host:port/v1/events": servers must take it. */
    if (strncasecmp(p, "http://", 7) == 0 || strncasecmp(p, "https://", 8) == 0) {
        char *slash = strchr(strstr(p, "//") + 2, '/');
        c->req.path = slash ? slash : "/";
    }
    c->req.query = NULL;
    char *q = strchr(p, '?');
    if (q) {
        *q = '\0';
        c->req.query = q + 1;
    }
    char *hash = strchr(q ? q + 1 : p, '#');
    if (hash)
        *hash = '\0';
    p += c->url_len + 1;

    for (size_t i = 0; i < c->n_spans; i++) {
        const hdr_span *s = &c->spans[i];
        c->headers[i].name = p;
        for (size_t k = 0; k < s->name_len; k++)
            *p++ = (char)tolower((unsigned char)c->hbuf[s->name_off + k]);
        *p++ = '\0';
        c->headers[i].value = p;
        /* Trailing blanks are not part of a field value (RFC 9110, 5.5); http-parser keeps them. */
        size_t vlen = s->value_len;
        while (vlen > 0 &&
               (c->hbuf[s->value_off + vlen - 1] == ' ' || c->hbuf[s->value_off + vlen - 1] == '\t'))
            vlen--;
        memcpy(p, c->hbuf + s->value_off, vlen);
        p += vlen;
        *p++ = '\0';
    }
    c->req.headers = c->headers;
    c->req.n_headers = c->n_spans;
    c->req.method = c->parser.method;
    return 0;
}

/* What RFC 9112 asks of a request's version and Host that http-parser does not check. 0, or failed. */
static int check_head(http_conn *c)
{
    const http_parser *p = &c->parser;
    size_t hosts = 0;

    if (p->http_major == 0) {
        /* No version at all ("GET /"): not a request line of any HTTP this server speaks. */
        parser_fail(c, 400, "bad_request", "the request line has no HTTP version: send HTTP/1.1");
        return -1;
    }
    if (p->http_major != 1 || p->http_minor > 1) {
        snprintf(c->err_buf, sizeof(c->err_buf), "HTTP/%u.%u is not supported: send HTTP/1.1 (or 1.0)",
                 p->http_major, p->http_minor);
        parser_fail(c, 505, "bad_request", c->err_buf);
        return -1;
    }
    for (size_t i = 0; i < c->req.n_headers; i++)
        if (strcmp(c->req.headers[i].name, "host") == 0)
            hosts++;
    /* RFC 9112, 3.2: exactly one Host in HTTP/1.1; one at most in 1.0. */
    if (hosts > 1 || (hosts == 0 && p->http_minor == 1)) {
        parser_fail(c, 400, "bad_request",
                    hosts ? "more than one Host header" : "an HTTP/1.1 request must carry a Host header");
        return -1;
    }
    return 0;
}

static void arm_body_deadline(http_conn *c);

static int on_headers_complete(http_parser *p)
{
    http_conn *c = p->data;
    gw_http_server *srv = c->srv;

    if (c->err_status)
        return 0;
    evtimer_del(c->deadline);
    if (build_request(c) != 0) {
        parser_fail(c, 500, "internal", "out of memory");
        return 0;
    }
    if (check_head(c) != 0)
        return 0;
    if (p->upgrade && p->method != HTTP_CONNECT) {
        /* We speak HTTP/1.1 only: answer the request as it is, ignore the upgrade. */
        p->upgrade = 0;
    }
    /* Refuse a declared oversize body before reading it. */
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > srv->cfg.max_body) {
        parser_fail(c, 413, "too_large", "the request body is over the size limit");
        return 0;
    }
    c->chunked = (p->flags & F_CHUNKED) != 0;
    /* Without Content-Length or chunked, a request has no body (RFC 9112, 6.3); http-parser says ULLONG_MAX.
     */
    int has_body = c->chunked || ((p->flags & F_CONTENTLENGTH) && p->content_length > 0);
    if (!has_body)
        return 0;
    c->in_body = 1;
    const char *expect = gw_http_request_header(&c->req, "expect");
    c->expect_continue =
        expect && strcasecmp(expect, "100-continue") == 0 && p->http_major == 1 && p->http_minor >= 1;
    /*
     * Who it is before its body: a request refused for what its headers say
     * (authentication) costs neither the body's memory nor its bytes, and
     * gets no 100 Continue. The body stays unread, so the connection closes.
     */
    if (srv->cfg.head) {
        c->keep_alive = 0;
        if (srv->cfg.head(&c->req, srv->cfg.arg) != 0) {
            http_parser_pause(p, 1);
            return 0;
        }
    }
    c->body_start_ns = c->body_last_ns = prom_now_ns();
    if (body_reserve(c, c->chunked ? (srv->cfg.max_body < BODY_STEP ? srv->cfg.max_body : BODY_STEP)
                                   : (size_t)p->content_length) != 0) {
        /* No room: stop here; reading goes on once there is (or 429). */
        http_parser_pause(p, 1);
        return 0;
    }
    body_reserved(c);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    http_conn *c = p->data;

    if (c->err_status)
        return 0;
    if (evbuffer_get_length(c->req.body) + len > c->srv->cfg.max_body) {
        parser_fail(c, 413, "too_large", "the request body is over the size limit");
        return 0;
    }
    evbuffer_add(c->req.body, at, len);
    c->body_last_ns = prom_now_ns();
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_conn *c = p->data;

    if (c->err_status)
        return 0;
    evtimer_del(c->deadline);
    c->in_request = 0;
    c->in_body = 0;
    c->head = H_START;
    c->keep_alive = http_should_keep_alive(p);
    c->message_done = 1;
    /* One request at a time: the next one waits in the input until this one is answered. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* --- connection life ---------------------------------------------------------------------------- */

/* Off the list of connections waiting for body budget. */
static void room_unlink(http_conn *c)
{
    gw_http_server *srv = c->srv;

    if (c->wprev)
        c->wprev->wnext = c->wnext;
    else
        srv->room_head = c->wnext;
    if (c->wnext)
        c->wnext->wprev = c->wprev;
    else
        srv->room_tail = c->wprev;
    atomic_fetch_sub(srv->cfg.body_waiters, 1);
}

/*
 * TLS: say close_notify before the FIN, so a client can tell our close from
 * a truncation. One try, never waited on; after a failed session OpenSSL
 * would refuse, so it is not asked.
 */
static void tls_close_notify(http_conn *c)
{
    if (c->ssl == NULL || c->handshaking || c->tls_closed)
        return;
    c->tls_closed = 1;
    SSL_shutdown(c->ssl);
    /* What it may have queued (a reset peer) is no later caller's error on this thread. */
    ERR_clear_error();
}

/* A TLS handshake that did not finish: reported (why NULL: the bufferevent's OpenSSL error), unless the
 * client closed without sending a byte (a TCP health check, a port scan). */
static void tls_handshake_failed(http_conn *c, const char *why)
{
    gw_http_server *srv = c->srv;
    unsigned long e = bufferevent_get_openssl_error(c->bev);

    c->handshaking = 0;
    c->tls_closed = 1;
    if (why == NULL && BIO_number_read(SSL_get_rbio(c->ssl)) == 0)
        return;
    if (why == NULL)
        why = e ? ERR_reason_error_string(e) : "the connection closed during the handshake";
    if (why == NULL)
        why = "unknown error";
    LOG_DEBUG("http", "TLS handshake failed peer=%s error=\"%s\"", c->peer, why);
    if (srv->cfg.tls_failed)
        srv->cfg.tls_failed(c->peer, why, srv->cfg.arg);
}

static void conn_free(http_conn *c)
{
    gw_http_server *srv = c->srv;

    if (c->busy) {
        /* The application still holds the request: tell it, then it is gone. */
        c->busy = 0;
        srv->pending--;
        if (srv->cfg.abort)
            srv->cfg.abort(&c->req, srv->cfg.arg);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->waiting_room)
        room_unlink(c);
    if (c->reserved && srv->cfg.give_body)
        srv->cfg.give_body(c->reserved, srv->cfg.arg);
    atomic_fetch_sub(srv->cfg.open_conns, 1);
    event_free(c->deadline);
    tls_close_notify(c);
    bufferevent_free(c->bev);
    evbuffer_free(c->req.body);
    gw_peer_cert_free(c->cert);
    free(c->hcopy);
    free(c->hbuf);
    free(c);
}

/* Every entry point brackets its work with these, so a connection is freed only when nothing is using it. */
static void conn_enter(http_conn *c)
{
    c->depth++;
}

static void conn_leave(http_conn *c)
{
    if (--c->depth == 0 && c->closing)
        conn_free(c);
}

/* --- the body's budget and deadlines ------------------------------------------------------------ */

static void room_list_add(http_conn *c)
{
    gw_http_server *srv = c->srv;

    c->waiting_room = 1;
    c->wait_since = mono_ms();
    c->wnext = NULL;
    c->wprev = srv->room_tail;
    if (srv->room_tail)
        srv->room_tail->wnext = c;
    else
        srv->room_head = c;
    srv->room_tail = c;
    atomic_fetch_add(srv->cfg.body_waiters, 1);
    if (!evtimer_pending(srv->room_timer, NULL)) {
        struct timeval tv = {0, ROOM_POLL_MS * 1000};
        evtimer_add(srv->room_timer, &tv);
    }
}

static void room_list_remove(http_conn *c)
{
    room_unlink(c);
    c->wprev = c->wnext = NULL;
    c->waiting_room = 0;
    /* The time spent waiting is the gateway's, not the client's: the body rate does not count it. */
    c->body_start_ns += (uint64_t)(mono_ms() - c->wait_since) * 1000000u;
    c->body_last_ns = prom_now_ns();
}

/*
 * Take n more bytes of body budget: 0 when granted (or there is no budget),
 * else the connection stops reading and waits on the room list (-1), or is
 * answered 429 at once when it may not wait (-2).
 */
static int body_reserve(http_conn *c, size_t n)
{
    gw_http_server *srv = c->srv;

    if (srv->cfg.take_body == NULL || n == 0 || srv->cfg.take_body(n, srv->cfg.arg) == 0) {
        if (srv->cfg.take_body)
            c->reserved += n;
        return 0;
    }
    if (srv->cfg.overload_wait_ms <= 0) {
        parser_fail(c, 429, "overloaded", "no room for the request body; retry later");
        return -2;
    }
    c->want = n;
    evtimer_del(c->deadline);
    bufferevent_disable(c->bev, EV_READ);
    room_list_add(c);
    return -1;
}

/* The body has budget: 100 Continue if owed, and its rate is watched from here. */
static void body_reserved(http_conn *c)
{
    if (c->expect_continue) {
        c->expect_continue = 0;
        bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    arm_body_deadline(c);
}

/* The answer is out (or the request gone): its body and its budget go. */
static void body_release(http_conn *c)
{
    gw_http_server *srv = c->srv;

    evbuffer_drain(c->req.body, evbuffer_get_length(c->req.body));
    if (c->reserved) {
        srv->cfg.give_body(c->reserved, srv->cfg.arg);
        c->reserved = 0;
        /* Room now: let waiting connections look at once rather than at the next poll. */
        if (srv->room_head)
            event_active(srv->room_timer, EV_TIMEOUT, 0);
    }
}

/*
 * The body rate's deadline: the moment the bytes received so far fall below
 * min_body_rate * (elapsed - grace), or no byte has come for the grace
 * (header_timeout) itself, whichever is first. Re-armed each time it fires while the
 * body keeps up, so a steady body costs one timer event per stretch, not
 * one per byte.
 */
static void arm_body_deadline(http_conn *c)
{
    const gw_http_server_config *cfg = &c->srv->cfg;

    if (cfg->min_body_rate == 0 || !c->in_body)
        return;
    uint64_t got = evbuffer_get_length(c->req.body);
    uint64_t due_ns = c->body_start_ns + (uint64_t)cfg->header_timeout_ms * 1000000u +
                      got * 1000000000u / cfg->min_body_rate + 1000000u;
    uint64_t stall_ns = c->body_last_ns + (uint64_t)cfg->header_timeout_ms * 1000000u + 1000000u;
    uint64_t now = prom_now_ns();
    if (stall_ns < due_ns)
        due_ns = stall_ns;
    uint64_t wait_us = due_ns > now ? (due_ns - now) / 1000u : 0;
    struct timeval tv = {(time_t)(wait_us / 1000000u), (suseconds_t)(wait_us % 1000000u)};
    evtimer_add(c->deadline, &tv);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    http_conn *c = arg;
    const gw_http_server_config *cfg = &c->srv->cfg;
    (void)fd;
    (void)what;

    conn_enter(c);
    if (c->lingering) {
        c->closing = 1;
    } else if (c->handshaking) {
        tls_handshake_failed(c, "timeout");
        c->closing = 1;
    } else if (c->busy || c->close_after_write || c->closing || !c->in_request) {
        /* Handed over or done meanwhile. */
    } else if (!c->in_body) {
        snprintf(c->err_buf, sizeof(c->err_buf), "the request line and headers took longer than %d ms",
                 cfg->header_timeout_ms);
        conn_fail(c, 408, "request_timeout", c->err_buf);
    } else {
        uint64_t got = evbuffer_get_length(c->req.body), now = prom_now_ns();
        uint64_t elapsed = now - c->body_start_ns, grace = (uint64_t)cfg->header_timeout_ms * 1000000u;
        if (now - c->body_last_ns > grace) {
            /*
             * A body sent fast and then stalled keeps a high average for
             * hours while it holds its share of the budget: a pause as long
             * as the header deadline ends it too.
             */
            snprintf(c->err_buf, sizeof(c->err_buf), "the request body stalled for %d ms",
                     cfg->header_timeout_ms);
            conn_fail(c, 408, "request_timeout", c->err_buf);
        } else if (elapsed > grace && got < (elapsed - grace) / 1000u * cfg->min_body_rate / 1000000u) {
            snprintf(c->err_buf, sizeof(c->err_buf), "the request body came slower than %zu bytes a second",
                     cfg->min_body_rate);
            conn_fail(c, 408, "request_timeout", c->err_buf);
        } else {
            arm_body_deadline(c);
        }
    }
    conn_leave(c);
}

/* On the loop while connections wait for body budget: the oldest first, as long as there is room. */
static void room_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_http_server *srv = arg;
    long long now = mono_ms();
    (void)fd;
    (void)what;

    while (srv->room_head) {
        http_conn *c = srv->room_head;
        if (srv->cfg.take_body(c->want, srv->cfg.arg) == 0) {
            conn_enter(c);
            c->reserved += c->want;
            c->want = 0;
            room_list_remove(c);
            body_reserved(c);
            bufferevent_enable(c->bev, EV_READ);
            conn_process(c);
            conn_leave(c);
        } else if (now - c->wait_since >= srv->cfg.overload_wait_ms) {
            conn_enter(c);
            room_list_remove(c);
            snprintf(c->err_buf, sizeof(c->err_buf),
                     "no room for the request body within %d ms (the gateway's memory budget for bodies is "
                     "in use); retry later",
                     srv->cfg.overload_wait_ms);
            conn_fail(c, 429, "overloaded", c->err_buf);
            conn_leave(c);
        } else {
            break;
        }
    }
    if (srv->room_head) {
        struct timeval tv = {0, ROOM_POLL_MS * 1000};
        evtimer_add(srv->room_timer, &tv);
    }
}

/*
 * Every STALL_POLL_MS: while connections wait for room on any server of the
 * port, bodies here that have sent nothing for stall_evict_ms give theirs up.
 */
static void stall_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_http_server *srv = arg;
    (void)fd;
    (void)what;

    if (atomic_load(srv->cfg.body_waiters) == 0)
        return;
    uint64_t now = prom_now_ns(), stall_ns = (uint64_t)srv->cfg.stall_evict_ms * 1000000u;
    for (http_conn *c = srv->conns, *next; c; c = next) {
        next = c->next;
        if (!c->in_body || c->reserved == 0 || c->waiting_room || c->busy || c->closing ||
            c->close_after_write || now - c->body_last_ns < stall_ns)
            continue;
        conn_enter(c);
        snprintf(c->err_buf, sizeof(c->err_buf),
                 "the request body stalled for %d ms while other requests waited for memory",
                 srv->cfg.stall_evict_ms);
        conn_fail(c, 408, "request_timeout", c->err_buf);
        conn_leave(c);
    }
}

static void set_idle_timeout(http_conn *c, int on)
{
    struct timeval tv = {c->srv->cfg.idle_timeout_ms / 1000, (c->srv->cfg.idle_timeout_ms % 1000) * 1000};

    /* While the application works on a request, silence from the client is expected. */
    bufferevent_set_timeouts(c->bev, on ? &tv : NULL, &tv);
}

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* Append `s` to the buffer at *p, bounded by end. */
static char *put(char *p, const char *end, const char *s, size_t n)
{
    if (n > (size_t)(end - p))
        n = (size_t)(end - p);
    memcpy(p, s, n);
    return p + n;
}

void gw_http_respond(gw_http_request *req, int status, const char *content_type, const char *extra_headers,
                     const char *body, size_t len, int close)
{
    http_conn *c = (http_conn *)((char *)req - offsetof(http_conn, req));
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char head[2048], num[24], *p = head, *end = head + sizeof(head);
    const char *why = reason(status);

    conn_enter(c);
    if (c->busy) {
        c->busy = 0;
        c->srv->pending--;
    }
    req->user = NULL;
    body_release(c);
    if (!c->keep_alive)
        close = 1;
    /* Built by hand, not printf: this is every answer's cost, and it showed in perf/http. */
    p = put(p, end, "HTTP/1.1 ", 9);
    num[0] = (char)('0' + status / 100), num[1] = (char)('0' + status / 10 % 10),
    num[2] = (char)('0' + status % 10);
    num[3] = ' ';
    p = put(p, end, num, 4);
    p = put(p, end, why, strlen(why));
    p = put(p, end, "\r\n", 2);
    if (content_type) {
        p = put(p, end, "Content-Type: ", 14);
        p = put(p, end, content_type, strlen(content_type));
        p = put(p, end, "\r\n", 2);
    }
    /* A 204 has no content, and says nothing of its length (RFC 9110, 8.6). */
    if (status != 204) {
        size_t k = sizeof(num);
        size_t v = len;
        do {
            num[--k] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        p = put(p, end, "Content-Length: ", 16);
        p = put(p, end, num + k, sizeof(num) - k);
        p = put(p, end, "\r\n", 2);
    } else {
        len = 0;
    }
    if (extra_headers)
        p = put(p, end, extra_headers, strlen(extra_headers));
    if (close)
        p = put(p, end, "Connection: close\r\n", 19);
    else if (c->parser.http_major == 1 && c->parser.http_minor == 0)
        p = put(p, end, "Connection: keep-alive\r\n", 24); /* 1.0 closes unless told otherwise */
    /* A HEAD answer has the head of the GET one, never its body (RFC 9110, 9.3.2). */
    if (req->method == HTTP_HEAD)
        len = 0;
    p = put(p, end, "\r\n", 2);
    /* Small answers go out in one piece with their head. */
    if (len <= (size_t)(end - p)) {
        p = put(p, end, body, len);
        evbuffer_add(out, head, (size_t)(p - head));
    } else {
        evbuffer_add(out, head, (size_t)(p - head));
        evbuffer_add(out, body, len);
    }
    if (close) {
        c->close_after_write = 1;
        /* No more requests from this one; what it sends now is read and dropped. */
    } else {
        set_idle_timeout(c, 1);
    }
    /* Called from the application later (not from conn_process): go on with pipelined input. */
    if (c->depth == 1 && !c->close_after_write)
        conn_process(c);
    conn_leave(c);
}

const char *gw_http_request_header(const gw_http_request *req, const char *lname)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (strcmp(req->headers[i].name, lname) == 0)
            return req->headers[i].value;
    return NULL;
}

/* tchar (RFC 9110, 5.6.2): what a field name is made of. */
static int is_tchar(unsigned char ch)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";

    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && memchr(extra, ch, sizeof(extra) - 1) != NULL);
}

/*
 * Scan the head bytes in `at` (see head_state): the number of them up to and
 * including the head's last LF (all of them when it goes on), or -1 with
 * *why set when the head breaks the strict rules.
 */
static long head_scan(head_state *st, const unsigned char *at, size_t len, const char **why)
{
    head_state s = *st;
    size_t i;

    for (i = 0; i < len && s != H_BODY; i++) {
        unsigned char ch = at[i];
        switch (s) {
        case H_START:
        case H_START_ONE:
            if (ch == '\r' && s == H_START) {
                s = H_START_LF;
            } else if (ch == '\r') {
                *why = "more than one empty line before the request line";
                return -1;
            } else if (ch == '\n') {
                goto bare_lf;
            } else if (!is_tchar(ch)) {
                /*
                 * A method is a token. Said at the first byte, so a TLS
                 * ClientHello (0x16) on a plaintext port fails at once
                 * instead of waiting for a line end that may never come.
                 */
                *why = ch == 0x16 ? "a TLS handshake on a plaintext HTTP port: use http://, not https://"
                                  : "the request line does not start with a method";
                return -1;
            } else {
                s = H_LINE;
            }
            break;
        case H_START_LF:
            if (ch != '\n')
                goto bare_cr;
            s = H_START_ONE;
            break;
        case H_LINE:
            if (ch == '\r')
                s = H_LINE_LF;
            else if (ch == '\n')
                goto bare_lf;
            break;
        case H_LINE_LF:
        case H_VALUE_LF:
            if (ch != '\n')
                goto bare_cr;
            s = H_FIELD_START;
            break;
        case H_FIELD_START:
            if (ch == '\r') {
                s = H_END_LF;
            } else if (ch == ' ' || ch == '\t') {
                *why = "a field line starts with whitespace (obs-fold is not accepted)";
                return -1;
            } else if (is_tchar(ch)) {
                s = H_NAME;
            } else {
                goto bad_name;
            }
            break;
        case H_NAME:
            if (ch == ':') {
                s = H_VALUE;
            } else if (ch == ' ' || ch == '\t') {
                *why = "whitespace between a header name and its colon";
                return -1;
            } else if (ch == '\r' || ch == '\n') {
                *why = "a header line without a colon";
                return -1;
            } else if (!is_tchar(ch)) {
                goto bad_name;
            }
            break;
        case H_VALUE:
            if (ch == '\r')
                s = H_VALUE_LF;
            else if (ch == '\n')
                goto bare_lf;
            break;
        case H_END_LF:
            if (ch != '\n')
                goto bare_cr;
            s = H_BODY;
            break;
        case H_BODY: break;
        }
    }
    *st = s;
    return (long)i;

bare_lf:
    *why = "a line ends in a bare LF: lines end in CRLF";
    return -1;
bare_cr:
    *why = "a CR not followed by LF";
    return -1;
bad_name:
    *why = "a header name holds a character outside RFC 9110's token characters";
    return -1;
}

/* Answer the error the connection is stopped at (c->err_*): the connection cannot be trusted past it. */
static void conn_answer_error(http_conn *c)
{
    gw_http_server *srv = c->srv;

    evtimer_del(c->deadline);
    c->in_request = 0;
    c->keep_alive = 0;
    c->busy = 1;
    srv->pending++;
    if (c->req.path == NULL) {
        c->req.path = "";
        c->req.headers = c->headers;
        c->req.n_headers = 0;
    }
    srv->cfg.error(&c->req, c->err_status, c->err_code, c->err_message, srv->cfg.arg);
}

/* An error found outside the parser (a deadline, no room): answer it and close. */
static void conn_fail(http_conn *c, int status, const char *code, const char *message)
{
    if (c->busy || c->close_after_write || c->closing)
        return;
    c->err_status = status;
    c->err_code = code;
    c->err_message = message;
    conn_answer_error(c);
}

/* Feed buffered input to the parser until a request is complete, input runs out, or an error. */
static void conn_process(http_conn *c)
{
    gw_http_server *srv = c->srv;
    struct evbuffer *in = bufferevent_get_input(c->bev);

    while (!c->busy && !c->close_after_write && !c->closing && !c->waiting_room) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            break;
        size_t len = v.iov_len;
        if (c->head != H_BODY) {
            /* The head is read strictly first, and only up to its end: the body is not the scan's. */
            const char *why = NULL;
            long k = head_scan(&c->head, v.iov_base, len, &why);
            if (k < 0) {
                parser_fail(c, 400, "bad_request", why);
                conn_answer_error(c);
                break;
            }
            len = (size_t)k;
        } else if (c->chunked && c->in_body && srv->cfg.take_body && c->reserved < srv->cfg.max_body) {
            /* A chunked body grows in steps of budget; the bytes fed bound the body bytes they hold. */
            size_t room = c->reserved - evbuffer_get_length(c->req.body);
            if (room < len) {
                size_t step = len - room > BODY_STEP ? len - room : BODY_STEP;
                if (step > srv->cfg.max_body - c->reserved)
                    step = srv->cfg.max_body - c->reserved;
                int rc = body_reserve(c, step);
                if (rc == -2) {
                    conn_answer_error(c);
                    break;
                }
                if (rc != 0) {
                    if (room == 0)
                        break; /* on the room list: reading goes on from room_cb */
                    /* Feed what the budget covers; the rest waits in the input. */
                    len = room;
                    room_list_remove(c);
                    c->want = 0;
                    bufferevent_enable(c->bev, EV_READ);
                    arm_body_deadline(c);
                }
            }
        }
        size_t n = http_parser_execute(&c->parser, &parser_settings, v.iov_base, len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        evbuffer_drain(in, n);

        if (e == HPE_PAUSED)
            http_parser_pause(&c->parser, 0);
        else if (e != HPE_OK && c->err_status == 0)
            parser_fail(c, 400, "bad_request", http_errno_description(e));

        if (c->err_status) {
            conn_answer_error(c);
            break;
        }
        if (c->message_done) {
            c->message_done = 0;
            c->busy = 1;
            srv->pending++;
            set_idle_timeout(c, 0);
            srv->cfg.handle(&c->req, srv->cfg.arg);
        }
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    http_conn *c = arg;
    (void)bev;

    conn_enter(c);
    if (c->close_after_write) {
        /* Answered and closing: whatever still comes is dropped. */
        struct evbuffer *in = bufferevent_get_input(c->bev);
        evbuffer_drain(in, evbuffer_get_length(in));
    } else {
        conn_process(c);
    }
    conn_leave(c);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    http_conn *c = arg;
    (void)bev;

    conn_enter(c);
    if (c->close_after_write && !c->lingering) {
        /*
         * Lingering close: a client still sending a body we refused would get
         * a reset, and lose our answer, if we closed with its data unread.
         * Shut our side, read and drop until it closes or 2 s pass: 2 s in
         * all (the deadline timer), not since the last byte, which a client
         * sending a byte a second would stretch for ever.
         */
        struct timeval tv = {2, 0};
        c->lingering = 1;
        tls_close_notify(c);
        shutdown(bufferevent_getfd(c->bev), SHUT_WR);
        bufferevent_set_timeouts(c->bev, &tv, NULL);
        evtimer_add(c->deadline, &tv);
        /* Reading may have stopped (a timeout, no room for a body): the drain needs it. */
        bufferevent_enable(c->bev, EV_READ);
    }
    conn_leave(c);
}

/*
 * The client certificate's identity, once per connection rather than per
 * request: only one that verified (with --tls-client-auth optional, a
 * client may send none).
 */
static void peer_identity(http_conn *c)
{
    X509 *x = SSL_get0_peer_certificate(c->ssl);

    if (x && SSL_get_verify_result(c->ssl) == X509_V_OK && (c->cert = gw_peer_cert_from_x509(x)) == NULL)
        LOG_WARN("http", "peer=%s out of memory reading the client certificate: the connection is anonymous",
                 c->peer);
    c->req.peer_cert = c->cert;
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    http_conn *c = arg;
    (void)bev;

    conn_enter(c);
    if (c->handshaking) {
        if (what & BEV_EVENT_CONNECTED) {
            /* The header deadline the handshake ran under; the request's own starts at its first byte. */
            c->handshaking = 0;
            evtimer_del(c->deadline);
            peer_identity(c);
        } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
            tls_handshake_failed(c, (what & BEV_EVENT_TIMEOUT) ? "timeout" : NULL);
            c->closing = 1;
        }
    } else if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) && c->in_request && !c->busy &&
               !c->close_after_write) {
        /* Stalled mid-request: the client hears why (408) rather than just losing the connection. */
        snprintf(c->err_buf, sizeof(c->err_buf), "nothing came for %d ms in the middle of a request",
                 c->srv->cfg.idle_timeout_ms);
        conn_fail(c, 408, "request_timeout", c->err_buf);
    } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        if ((what & BEV_EVENT_TIMEOUT) && !c->busy && !c->in_request)
            LOG_DEBUG("http", "idle connection closed peer=%s", c->peer);
        if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
            c->tls_closed = 1; /* a failed session takes no close_notify */
        c->closing = 1;
    }
    conn_leave(c);
}

/* A connection closed at accept, counted; its peer sees the close (or a reset) and may retry elsewhere. */
static void refuse_connection(gw_http_server *srv, evutil_socket_t fd)
{
    struct linger lg = {1, 0};

    /* A reset, not a FIN: no TIME_WAIT left behind for each connection refused. */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    evutil_closesocket(fd);
    if (srv->cfg.refused_connection)
        srv->cfg.refused_connection(srv->cfg.arg);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    gw_http_server *srv = arg;
    http_conn *c;
    int one = 1;
    (void)l;
    (void)salen;

    if (atomic_fetch_add(srv->cfg.open_conns, 1) >= srv->cfg.max_connections && srv->cfg.max_connections) {
        atomic_fetch_sub(srv->cfg.open_conns, 1);
        refuse_connection(srv, fd);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->hbuf = malloc(srv->cfg.max_header_bytes)) == NULL ||
        (c->req.body = evbuffer_new()) == NULL ||
        (c->deadline = evtimer_new(srv->base, deadline_cb, c)) == NULL ||
        (srv->cfg.tls && (c->ssl = gw_tls_accept_ssl(srv->cfg.tls)) == NULL) ||
        (c->bev = srv->cfg.tls ? bufferevent_openssl_socket_new(
                                     srv->base, fd, c->ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE)
                               : bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
        LOG_WARN("http", "out of memory: connection refused");
        /*
         * A failed bufferevent_openssl_socket_new may have freed the SSL and
         * closed the descriptor already (libevent 2.1 does on some of its
         * paths): a leak is better than closing a descriptor another thread
         * may have been given meanwhile.
         */
        int owned = !(c && c->ssl);
        if (srv->cfg.tls)
            ERR_clear_error();
        if (c) {
            if (c->deadline)
                event_free(c->deadline);
            if (c->req.body)
                evbuffer_free(c->req.body);
            free(c->hbuf);
            free(c);
        }
        atomic_fetch_sub(srv->cfg.open_conns, 1);
        if (owned)
            refuse_connection(srv, fd);
        else if (srv->cfg.refused_connection)
            srv->cfg.refused_connection(srv->cfg.arg);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->srv = srv;
    net_format(sa, c->peer, sizeof(c->peer));
    c->req.peer = c->peer;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;

    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    set_idle_timeout(c, 1);
    /*
     * Bound what a client can send ahead of the parser: input is parsed as it
     * comes (a body into its budgeted buffer), so only pipelined requests
     * behind one being handled wait here, and at most this much of them.
     * Under TLS too: a record's rest kept inside OpenSSL at the mark is read
     * once the input drains (tests/integration/test_tls.py pipelines past it).
     */
    bufferevent_setwatermark(c->bev, EV_READ, 0, READ_AHEAD);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (c->ssl) {
        /*
         * The handshake runs under the header deadline, counted from the
         * accept: the idle timeout restarts on every byte, so alone it would
         * let a client trickle a ClientHello for hours.
         */
        c->handshaking = 1;
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
        if (srv->cfg.header_timeout_ms > 0) {
            struct timeval tv = {srv->cfg.header_timeout_ms / 1000,
                                 (srv->cfg.header_timeout_ms % 1000) * 1000};
            evtimer_add(c->deadline, &tv);
        }
    }
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_http_server *srv = arg;
    (void)fd;
    (void)what;

    if (srv->listener)
        evconnlistener_enable(srv->listener);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    gw_http_server *srv = arg;
    int err = EVUTIL_SOCKET_ERROR();
    long long now = mono_ms();

    srv->accept_errors++;
    /* At most a line a second, with how many errors it stands for. */
    if (now - srv->accept_log_ms >= 1000) {
        LOG_WARN("http",
                 "accept: %s (%lu times since the last such line); connections are refused until "
                 "descriptors are free",
                 evutil_socket_error_to_string(err), srv->accept_errors);
        srv->accept_log_ms = now;
        srv->accept_errors = 0;
    }
    if ((err == EMFILE || err == ENFILE) && net_accept_shed(evconnlistener_get_fd(l), &srv->spare_fd)) {
        if (srv->cfg.refused_connection)
            srv->cfg.refused_connection(srv->cfg.arg);
        return;
    }
    /* No spare, or another error (ENOBUFS, ENOMEM): rest the listener 100 ms rather than spin. */
    struct timeval tv = {0, 100000};
    evconnlistener_disable(l);
    evtimer_add(srv->resume_timer, &tv);
}

gw_http_server *gw_http_server_new(struct event_base *base, evutil_socket_t fd,
                                   const gw_http_server_config *cfg)
{
    gw_http_server *srv = calloc(1, sizeof(*srv));

    if (srv == NULL)
        return NULL;
    srv->base = base;
    srv->cfg = *cfg;
    atomic_init(&srv->own_conns, 0);
    atomic_init(&srv->own_waiters, 0);
    if (srv->cfg.open_conns == NULL)
        srv->cfg.open_conns = &srv->own_conns;
    if (srv->cfg.body_waiters == NULL)
        srv->cfg.body_waiters = &srv->own_waiters;
    srv->spare_fd = net_spare_fd();
    if ((srv->room_timer = evtimer_new(base, room_cb, srv)) == NULL ||
        (srv->resume_timer = evtimer_new(base, resume_cb, srv)) == NULL ||
        (srv->stall_timer = event_new(base, -1, EV_PERSIST, stall_cb, srv)) == NULL ||
        (srv->listener = evconnlistener_new(base, accept_cb, srv, LEV_OPT_CLOSE_ON_FREE, -1, fd)) == NULL) {
        if (srv->room_timer)
            event_free(srv->room_timer);
        if (srv->stall_timer)
            event_free(srv->stall_timer);
        if (srv->resume_timer)
            event_free(srv->resume_timer);
        if (srv->spare_fd >= 0)
            close(srv->spare_fd);
        free(srv);
        return NULL;
    }
    evconnlistener_set_error_cb(srv->listener, accept_error_cb);
    if (srv->cfg.stall_evict_ms > 0 && srv->cfg.take_body) {
        struct timeval tv = {0, STALL_POLL_MS * 1000};
        evtimer_add(srv->stall_timer, &tv);
    }
    return srv;
}

void gw_http_server_stop_accepting(gw_http_server *srv)
{
    if (srv && srv->listener) {
        evconnlistener_free(srv->listener);
        srv->listener = NULL;
    }
}

size_t gw_http_server_pending(const gw_http_server *srv)
{
    return srv->pending;
}

void gw_http_server_free(gw_http_server *srv)
{
    if (srv == NULL)
        return;
    gw_http_server_stop_accepting(srv);
    while (srv->conns)
        conn_free(srv->conns);
    event_free(srv->room_timer);
    event_free(srv->stall_timer);
    event_free(srv->resume_timer);
    if (srv->spare_fd >= 0)
        close(srv->spare_fd);
    free(srv);
}
