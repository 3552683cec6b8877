#include "http_server.h"

#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <http_parser.h>

#include "log.h"
#include "net.h"
#include "prom.h"

#define MAX_HEADERS 128

typedef struct hdr_span {
    size_t name_off, name_len, value_off, value_len;
} hdr_span;

typedef struct http_conn {
    gw_http_server *srv;
    struct bufferevent *bev;
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
};

static void conn_process(http_conn *c);

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

static int on_headers_complete(http_parser *p)
{
    http_conn *c = p->data;

    if (c->err_status)
        return 0;
    if (build_request(c) != 0) {
        parser_fail(c, 500, "internal", "out of memory");
        return 0;
    }
    if (p->upgrade && p->method != HTTP_CONNECT) {
        /* We speak HTTP/1.1 only: answer the request as it is, ignore the upgrade. */
        p->upgrade = 0;
    }
    /* Refuse a declared oversize body before reading it. */
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->srv->cfg.max_body) {
        parser_fail(c, 413, "too_large", "the request body is over the size limit");
        return 0;
    }
    const char *expect = gw_http_request_header(&c->req, "expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && p->http_major == 1 && p->http_minor >= 1)
        bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
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
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_conn *c = p->data;

    if (c->err_status)
        return 0;
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
    bufferevent_free(c->bev);
    evbuffer_free(c->req.body);
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
    char head[1024], num[24], *p = head, *end = head + sizeof(head);
    const char *why = reason(status);

    conn_enter(c);
    if (c->busy) {
        c->busy = 0;
        c->srv->pending--;
    }
    req->user = NULL;
    if (!c->keep_alive)
        close = 1;
    /* Built by hand, not printf: this is every answer's cost, and it showed in perf/http. */
    p = put(p, end, "HTTP/1.1 ", 9);
    num[0] = (char)('0' + status / 100), num[1] = (char)('0' + status / 10 % 10),
    num[2] = (char)('0' + status % 10);
    num[3] = ' ';
    p = put(p, end, num, 4);
    p = put(p, end, why, strlen(why));
    p = put(p, end, "\r\nContent-Type: ", 16);
    p = put(p, end, content_type, strlen(content_type));
    p = put(p, end, "\r\nContent-Length: ", 18);
    size_t k = sizeof(num);
    size_t v = len;
    do {
        num[--k] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    p = put(p, end, num + k, sizeof(num) - k);
    p = put(p, end, "\r\n", 2);
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

/* Feed buffered input to the parser until a request is complete, input runs out, or an error. */
static void conn_process(http_conn *c)
{
    gw_http_server *srv = c->srv;
    struct evbuffer *in = bufferevent_get_input(c->bev);

    while (!c->busy && !c->close_after_write && !c->closing) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            break;
        size_t n = http_parser_execute(&c->parser, &parser_settings, v.iov_base, v.iov_len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        evbuffer_drain(in, n);

        if (e == HPE_PAUSED)
            http_parser_pause(&c->parser, 0);
        else if (e != HPE_OK && c->err_status == 0)
            parser_fail(c, 400, "bad_request", http_errno_description(e));

        if (c->err_status) {
            /* The connection cannot be trusted past a broken or refused request: answer and close. */
            c->keep_alive = 0;
            c->busy = 1;
            srv->pending++;
            if (c->req.path == NULL) {
                c->req.path = "";
                c->req.headers = c->headers;
                c->req.n_headers = 0;
            }
            srv->cfg.error(&c->req, c->err_status, c->err_code, c->err_message, srv->cfg.arg);
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
         * Shut our side, read and drop until it closes or 2 s pass.
         */
        struct timeval tv = {2, 0};
        c->lingering = 1;
        shutdown(bufferevent_getfd(c->bev), SHUT_WR);
        bufferevent_set_timeouts(c->bev, &tv, NULL);
    }
    conn_leave(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    http_conn *c = arg;
    (void)bev;

    conn_enter(c);
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        if ((what & BEV_EVENT_TIMEOUT) && !c->busy && evbuffer_get_length(c->req.body) == 0 && c->hlen == 0)
            LOG_DEBUG("http", "idle connection closed peer=%s", c->peer);
        c->closing = 1;
    }
    conn_leave(c);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    gw_http_server *srv = arg;
    http_conn *c = calloc(1, sizeof(*c));
    int one = 1;
    (void)l;
    (void)salen;

    if (c == NULL || (c->hbuf = malloc(srv->cfg.max_header_bytes)) == NULL ||
        (c->req.body = evbuffer_new()) == NULL ||
        (c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
        LOG_WARN("http", "out of memory: connection refused");
        if (c) {
            if (c->req.body)
                evbuffer_free(c->req.body);
            free(c->hbuf);
            free(c);
        }
        evutil_closesocket(fd);
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
    /* Bound what a client can pipeline ahead of its answers. */
    bufferevent_setwatermark(c->bev, EV_READ, 0, srv->cfg.max_header_bytes + srv->cfg.max_body + 4096);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    (void)l;
    (void)arg;
    /* EMFILE and the like: log and go on; the listener retries on the next readiness. */
    LOG_WARN("http", "accept: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

gw_http_server *gw_http_server_new(struct event_base *base, evutil_socket_t fd,
                                   const gw_http_server_config *cfg)
{
    gw_http_server *srv = calloc(1, sizeof(*srv));

    if (srv == NULL)
        return NULL;
    srv->base = base;
    srv->cfg = *cfg;
    if ((srv->listener = evconnlistener_new(base, accept_cb, srv, LEV_OPT_CLOSE_ON_FREE, -1, fd)) == NULL) {
        free(srv);
        return NULL;
    }
    evconnlistener_set_error_cb(srv->listener, accept_error_cb);
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
    free(srv);
}
