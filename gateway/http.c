/*
 * POST /v1/events: parse -> validate (common/) -> enqueue, then answer.
 * Everything here runs on one I/O thread's loop; delivery reports come back
 * through that loop's ack inbox (producer.h), so nothing here takes a lock.
 */
#include "http.h"

#include <ctype.h>
#include <pthread.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <http_parser.h>
#include <zlib.h>

#include "admit.h"
#include "cors.h"
#include "http_server.h"
#include "json.h"
#include "log.h"
#include "net.h"
#include "producer.h"
#include "mono.h"

struct gw_http_loop {
    struct event_base *base;
    gw_http_server *srv;
    ack_inbox *inbox;
    gateway *gw;
    atomic_size_t pending;
    struct ingest_wait *waiting;        /* every request waiting for Kafka, for the stop */
    struct held *held_head, *held_tail; /* requests read while the queue had no room, oldest first */
    struct event *room;                 /* looks for room while anything is held */
    gw_cors cors;                       /* --cors-origins, parsed for this loop */
};

/* What a request's `user` points to while this front end holds it. */
typedef enum wait_kind { WAIT_KAFKA, WAIT_ROOM } wait_kind;

/*
 * A request read while the queue was above its high-water mark: held,
 * unparsed, until there is room or --http-overload-wait passes (then 429).
 * Its connection reads nothing more meanwhile (one request at a time), so
 * the client meets TCP's flow control, and the gateway spends no CPU on
 * requests it would refuse: under overload, admission keeps pace with what
 * Kafka takes instead of burning the CPU Kafka needs on 429s.
 */
typedef struct held {
    wait_kind kind; /* WAIT_ROOM; first, as in ingest_wait */
    gw_http_request *req;
    int committed;
    const gw_principal *who; /* the gate's (held: a reference) */
    long long since_ms;
    struct held *next, *prev;
} held;

/* A request waiting for its delivery reports. */
typedef struct ingest_wait {
    wait_kind kind; /* WAIT_KAFKA */
    gw_http_loop *front;
    gw_http_request *req;
    ack_wait *wait;
    struct event *timer;
    char *body; /* the success answer, rendered before queueing */
    size_t len;
    struct ingest_wait *prev, *next; /* on front->waiting */
} ingest_wait;

typedef enum ack_level { ACK_COMMITTED, ACK_ACCEPTED, ACK_PERSISTED } ack_level;

/*
 * How often held requests look for room. The queue holds about 13,000
 * events between its high-water mark and its capacity (the defaults) and the
 * producer drains it at some 400,000 a second: a 2 ms look leaves it busy.
 */
#define ROOM_POLL_US 2000

/* --- answers ------------------------------------------------------------------------------------ */

/* Append `s` to `b` as the inside of a JSON string. */
static void json_escape(struct evbuffer *b, const char *s)
{
    const char *run = s;

    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch != '"' && ch != '\\' && ch >= 0x20)
            continue;
        evbuffer_add(b, run, (size_t)(s - run));
        if (ch == '"' || ch == '\\')
            evbuffer_add_printf(b, "\\%c", ch);
        else
            evbuffer_add_printf(b, "\\u%04x", ch);
        run = s + 1;
    }
    evbuffer_add(b, run, (size_t)(s - run));
}

/*
 * Every answer goes out here: with the CORS headers a page on a listed
 * origin needs to read it (cors.h), then `extra`. Preflights answer apart.
 */
static void answer(gw_http_loop *f, gw_http_request *req, int status, const char *extra, const char *body,
                   size_t len, int close)
{
    char h[1024];

    if (!f->cors.on) {
        gw_http_respond(req, status, "application/json", extra, body, len, close);
        return;
    }
    size_t n = gw_cors_headers(&f->cors, gw_http_request_header(req, "origin"), 0, NULL, h, sizeof(h));
    snprintf(h + n, sizeof(h) - n, "%s", extra ? extra : "");
    gw_http_respond(req, status, "application/json", h, body, len, close);
}

static void respond_buffer(gw_http_loop *f, gw_http_request *req, int status, const char *extra,
                           struct evbuffer *b, int close)
{
    size_t len = evbuffer_get_length(b);
    const char *body = (const char *)evbuffer_pullup(b, -1);

    answer(f, req, status, extra, body ? body : "", len, close);
}

/*
 * Answer a refusal in the contract's error shape, with the status the reason
 * table gives (or `status`, when not 0), Retry-After where a retry may work,
 * and count the answer.
 */
static void respond_refusal(gw_http_loop *f, gw_http_request *req, const gw_refusal *r, int status)
{
    struct evbuffer *b = evbuffer_new();
    const gw_reason_info *info = &gw_reasons[r->reason];
    char msg[sizeof(r->message)], headers[160] = "";

    if (status == 0)
        status = info->http_status;
    /* Messages quote request bytes (a path, a header), cut anywhere: keep the answer valid UTF-8. */
    memcpy(msg, r->message, sizeof(msg));
    if (!utf8_valid(msg, strlen(msg)))
        for (char *m = msg; *m; m++)
            if ((unsigned char)*m >= 0x80)
                *m = '?';
    evbuffer_add_printf(b, "{\"error\":{\"code\":\"%s\",\"message\":\"", info->name);
    json_escape(b, msg);
    if (r->index >= 0)
        evbuffer_add_printf(b, "\",\"index\":%ld}}", r->index);
    else
        evbuffer_add_printf(b, "\"}}");
    if (status == 429 || status == 503)
        /* A quota knows when its bucket has room; otherwise --retry-after guesses. */
        snprintf(headers, sizeof(headers), "Retry-After: %lld\r\n",
                 r->retry_after_s > 0 ? (long long)r->retry_after_s : (long long)f->gw->cfg->retry_after_s);
    else if (r->reason == GW_R_unauthorized)
        snprintf(headers, sizeof(headers), "WWW-Authenticate: Bearer realm=\"ingest\"\r\n");
    else if (r->reason == GW_R_method_not_allowed)
        snprintf(headers, sizeof(headers), "Allow: POST\r\n");
    LOG_DEBUG("http", "%d %s peer=%s: %s", status, info->name, req->peer, msg);
    gw_admit_count_answered(f->gw, GW_HTTP, req->started_ns, 1);
    respond_buffer(f, req, status, headers, b, status >= 500 && status != 503);
    evbuffer_free(b);
}

/* A refusal this front end decides itself, not the admission stage: counted, then answered. */
static void refuse(gw_http_loop *f, gw_http_request *req, gw_reason reason, int status, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void refuse(gw_http_loop *f, gw_http_request *req, gw_reason reason, int status, const char *fmt, ...)
{
    gw_refusal r = {.reason = reason, .index = -1};
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r.message, sizeof(r.message), fmt, ap);
    va_end(ap);
    gw_admit_count_refused(f->gw, GW_HTTP, reason);
    respond_refusal(f, req, &r, status);
}

/* --- request reading ---------------------------------------------------------------------------- */

/* The value of `key` in a query string, into out; 0 when found. */
static int query_param(const char *query, const char *key, char *out, size_t size)
{
    size_t klen = strlen(key);

    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
        if ((size_t)(end - p) > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            snprintf(out, size, "%.*s", (int)(end - p - (ptrdiff_t)klen - 1), p + klen + 1);
            return 0;
        }
        p = amp ? amp + 1 : NULL;
    }
    return -1;
}

static int parse_ack(const gw_http_request *req, const char *dflt, ack_level *ack, char *bad, size_t size)
{
    char v[32];
    const char *s = dflt;

    if (req->query && query_param(req->query, "ack", v, sizeof(v)) == 0)
        s = v;
    else if ((s = gw_http_request_header(req, "ingest-ack")) == NULL)
        s = dflt;
    if (strcasecmp(s, "committed") == 0) {
        *ack = ACK_COMMITTED;
    } else if (strcasecmp(s, "accepted") == 0) {
        *ack = ACK_ACCEPTED;
    } else if (strcasecmp(s, "persisted") == 0) {
        *ack = ACK_PERSISTED;
    } else {
        snprintf(bad, size, "%.40s", s);
        return -1;
    }
    return 0;
}

/* Inflate a gzip body into a new buffer of at most `max` bytes. 0, -E2BIG, -EINVAL, -ENOMEM. */
static int gunzip(const unsigned char *in, size_t len, size_t max, unsigned char **out, size_t *out_len)
{
    z_stream zs;
    size_t cap = len * 4 + 1024, n = 0;
    unsigned char *buf;
    int rc;

    if (cap > max + 1)
        cap = max + 1;
    if ((buf = malloc(cap)) == NULL)
        return -ENOMEM;
    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, 15 + 16) != Z_OK) {
        free(buf);
        return -ENOMEM;
    }
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (uInt)len;
    for (;;) {
        if (n == cap) {
            if (cap > max) {
                rc = -E2BIG;
                goto out;
            }
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            unsigned char *nb = realloc(buf, ncap);
            if (nb == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        zs.next_out = buf + n;
        zs.avail_out = (uInt)(cap - n);
        int z = inflate(&zs, Z_NO_FLUSH);
        n = cap - zs.avail_out;
        if (z == Z_STREAM_END) {
            /* Concatenated gzip members are one stream (RFC 1952). */
            if (zs.avail_in == 0)
                break;
            inflateReset(&zs);
            continue;
        }
        if (z == Z_BUF_ERROR && zs.avail_in == 0) {
            rc = -EINVAL; /* truncated */
            goto out;
        }
        if (z != Z_OK && z != Z_BUF_ERROR) {
            rc = -EINVAL;
            goto out;
        }
    }
    if (n > max) {
        rc = -E2BIG;
        goto out;
    }
    inflateEnd(&zs);
    *out = buf;
    *out_len = n;
    return 0;

out:
    inflateEnd(&zs);
    free(buf);
    return rc;
}

/* The media type of a Content-Type, lower-cased, without parameters; and whether its charset is UTF-8. */
static void media_type(const char *ct, char *out, size_t size, int *charset_ok)
{
    size_t n = 0;
    const char *p = ct;

    *charset_ok = 1;
    while (*p == ' ' || *p == '\t')
        p++;
    for (; *p && *p != ';' && *p != ' ' && *p != '\t' && n + 1 < size; p++)
        out[n++] = (char)tolower((unsigned char)*p);
    out[n] = '\0';
    const char *cs = strcasestr(p, "charset=");
    if (cs) {
        cs += 8;
        if (*cs == '"')
            cs++;
        *charset_ok = strncasecmp(cs, "utf-8", 5) == 0 || strncasecmp(cs, "utf8", 4) == 0;
    }
}

/* Binary mode: attributes from ce-* headers, the body as data, Content-Type as datacontenttype. */
static int parse_binary(const gw_http_request *req, const char *ctype, const char *mt,
                        const unsigned char *body, size_t len, const ing_event_limits *lim,
                        ing_event_batch *out, ing_event_error *err)
{
    ing_event *ev = ing_event_batch_add(out);
    int rc;

    if (ev == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < req->n_headers; i++) {
        const gw_http_header *h = &req->headers[i];
        if (strncmp(h->name, "ce-", 3) != 0)
            continue;
        char *v = malloc(strlen(h->value) + 1);
        if (v == NULL)
            return -ENOMEM;
        /* CloudEvents HTTP binding, 3.1.3.2: ce-* values are percent-encoded. */
        size_t vlen = net_percent_decode(h->value, v, strlen(h->value) + 1);
        rc = ing_event_set_attr(ev, h->name + 3, strlen(h->name + 3), v, vlen, lim, err);
        free(v);
        if (rc != 0)
            return rc;
    }
    if (ctype && *ctype &&
        (rc = ing_event_set_attr(ev, "datacontenttype", 15, ctype, strlen(ctype), lim, err)) != 0)
        return rc;
    if (ev->source == NULL && ev->type == NULL)
        return ing_event_error_set(
            err, ING_ERR_INVALID_EVENT, -1, "source",
            "source: required (binary mode takes attributes from ce-* headers; for a JSON "
            "event send Content-Type: application/cloudevents+json)");
    if (len > 0) {
        /* The whole Content-Type, not mt: that is cut to its buffer, and the sink judges the whole. */
        int json = mt[0] != '\0' && media_type_is_json(ctype);
        if (json && (rc = json_check((const char *)body, len, lim, err)) != 0)
            return rc;
        unsigned char *data = malloc(len + 1);
        if (data == NULL)
            return -ENOMEM;
        memcpy(data, body, len);
        data[len] = '\0';
        ing_event_set_data(ev, json ? EVENT_DATA_JSON : EVENT_DATA_BINARY, data, len);
    }
    return 0;
}

/* --- waiting for Kafka --------------------------------------------------------------------------- */

static void wait_finish(ingest_wait *iw)
{
    if (iw->prev)
        iw->prev->next = iw->next;
    else if (iw->front->waiting == iw)
        iw->front->waiting = iw->next;
    if (iw->next)
        iw->next->prev = iw->prev;
    if (iw->timer)
        event_free(iw->timer);
    free(iw->body);
    atomic_fetch_sub(&iw->front->pending, 1);
    gw_front_changed(iw->front->gw);
    free(iw);
}

/* On the loop, once every delivery report of the request has come. */
static void wait_done(ack_wait *w)
{
    ingest_wait *iw = w->ctx;
    int err = atomic_load(&w->error);

    if (iw != NULL) {
        gw_http_request *req = iw->req;
        req->user = NULL;
        if (err == 0) {
            gw_admit_count_answered(iw->front->gw, GW_HTTP, req->started_ns, 1);
            answer(iw->front, req, 200, NULL, iw->body, iw->len, 0);
        } else if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
            /* Not a 503: Kafka will never take it, and a client told to retry would forever. */
            char why[256];
            ack_wait_too_large_text(atomic_load(&w->too_large), atomic_load(&w->too_large_limit), why,
                                    sizeof(why));
            refuse(iw->front, req, GW_R_too_large, 0, "%s", why);
        } else {
            refuse(
                iw->front, req, GW_R_kafka_error, 0,
                "Kafka did not take every event: %s; the events may still arrive, a retry with the same ids "
                "is safe",
                rd_kafka_err2str((rd_kafka_resp_err_t)err));
        }
        wait_finish(iw);
    }
    ack_wait_free(w);
}

static void wait_timeout(evutil_socket_t fd, short what, void *arg)
{
    ingest_wait *iw = arg;
    gw_http_request *req = iw->req;
    (void)fd;
    (void)what;

    /* The wait lives on until its last report comes; nobody answers then. */
    iw->wait->ctx = NULL;
    req->user = NULL;
    refuse(iw->front, req, GW_R_ack_timeout, 0,
           "Kafka did not acknowledge within %lld ms; the events may still arrive, a retry with the same ids "
           "is safe",
           (long long)iw->front->gw->cfg->ack_timeout_ms);
    wait_finish(iw);
}

static void held_unlink(gw_http_loop *f, held *h)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        f->held_head = h->next;
    if (h->next)
        h->next->prev = h->prev;
    else
        f->held_tail = h->prev;
    h->req->user = NULL;
    atomic_fetch_sub(&f->pending, 1);
    gw_front_changed(f->gw);
    gw_principal_release(h->who);
    free(h);
}

static void on_abort(gw_http_request *req, void *arg)
{
    gw_http_loop *f = arg;
    ingest_wait *iw = req->user;

    if (iw == NULL)
        return;
    if (iw->kind == WAIT_ROOM) {
        held_unlink(f, (held *)req->user);
        return;
    }
    iw->wait->ctx = NULL;
    req->user = NULL;
    wait_finish(iw);
}

/* --- the handler -------------------------------------------------------------------------------- */

/* The success answer, {"accepted":N,"ids":[...]}, into a new buffer (NULL on no memory). */
static char *render_ids(const ing_event_batch *b, size_t *out_len)
{
    size_t cap = 48;
    char *out, *p;

    /* An escaped character takes at most 6 bytes (\u00XX). */
    for (size_t i = 0; i < b->n; i++)
        cap += strlen(b->ev[i].id) * 6 + 3;
    if ((out = malloc(cap)) == NULL)
        return NULL;
    p = out + snprintf(out, cap, "{\"accepted\":%zu,\"ids\":[", b->n);
    for (size_t i = 0; i < b->n; i++) {
        if (i)
            *p++ = ',';
        *p++ = '"';
        for (const char *s = b->ev[i].id; *s; s++) {
            unsigned char ch = (unsigned char)*s;
            if (ch == '"' || ch == '\\') {
                *p++ = '\\';
                *p++ = (char)ch;
            } else if (ch < 0x20) {
                p += sprintf(p, "\\u%04x", ch);
            } else {
                *p++ = (char)ch;
            }
        }
        *p++ = '"';
    }
    *p++ = ']';
    *p++ = '}';
    *out_len = (size_t)(p - out);
    return out;
}

/* What the parser of one request needs: the request, and its body once decoded. */
typedef struct http_body {
    gw_http_request *req;
    unsigned char *inflated;
} http_body;

/* The admission stage's parser for HTTP: Content-Encoding, then the content mode by Content-Type. */
static int parse_http(gw_admission *a, void *arg)
{
    http_body *hb = arg;
    gw_http_request *req = hb->req;
    const ing_event_limits *lim = &a->gw->lim;
    ing_event_error err;
    char mt[128];
    int charset_ok, rc;

    memset(&err, 0, sizeof(err));
    size_t len = evbuffer_get_length(req->body);
    const unsigned char *body = evbuffer_pullup(req->body, -1);
    if (body == NULL)
        body = (const unsigned char *)"";

    const char *enc = gw_http_request_header(req, "content-encoding");
    if (enc && *enc && strcasecmp(enc, "identity") != 0) {
        if (strcasecmp(enc, "gzip") != 0 && strcasecmp(enc, "x-gzip") != 0)
            return gw_admission_refuse(a, GW_R_unsupported_encoding, -1,
                                       "Content-Encoding '%.40s' is not supported; send gzip or identity",
                                       enc);
        size_t dlen;
        rc = gunzip(body, len, lim->max_request_bytes, &hb->inflated, &dlen);
        if (rc == -E2BIG)
            return gw_admission_refuse(a, GW_R_too_large, -1, "the decoded body is over %zu bytes",
                                       lim->max_request_bytes);
        if (rc == -ENOMEM)
            return rc;
        if (rc != 0)
            return gw_admission_refuse(a, GW_R_bad_encoding, -1, "the body is not valid gzip");
        body = hb->inflated;
        len = dlen;
    }

    const char *ctype = gw_http_request_header(req, "content-type");
    media_type(ctype ? ctype : "", mt, sizeof(mt), &charset_ok);
    int has_ce = gw_http_request_header(req, "ce-specversion") || gw_http_request_header(req, "ce-source") ||
                 gw_http_request_header(req, "ce-type");
    json_form form;
    if (strcmp(mt, "application/cloudevents+json") == 0) {
        form = JSON_FORM_EVENT;
    } else if (strcmp(mt, "application/cloudevents-batch+json") == 0) {
        form = JSON_FORM_BATCH;
    } else if (strncmp(mt, "application/cloudevents", 23) == 0) {
        return gw_admission_refuse(
            a, GW_R_unsupported_media_type, -1,
            "'%s' is not supported: structured mode takes application/cloudevents+json "
            "or application/cloudevents-batch+json",
            mt);
    } else if (strcmp(mt, "application/json") == 0 && !has_ce) {
        form = JSON_FORM_ANY;
    } else if ((strcmp(mt, "application/x-ndjson") == 0 || strcmp(mt, "application/ndjson") == 0) &&
               !has_ce) {
        form = JSON_FORM_NDJSON;
    } else {
        /* Binary mode: one event, so no index (the index rule, admit.h). */
        rc = parse_binary(req, ctype, mt, body, len, lim, &a->batch, &err);
        goto parsed;
    }
    if (!charset_ok)
        return gw_admission_refuse(a, GW_R_unsupported_media_type, -1, "only charset=utf-8 is supported");
    if (form == JSON_FORM_BATCH || form == JSON_FORM_NDJSON) {
        a->multi = 1;
    } else if (form == JSON_FORM_ANY) {
        size_t p = 0;
        while (p < len && (body[p] == ' ' || body[p] == '\t' || body[p] == '\r' || body[p] == '\n'))
            p++;
        a->multi = p < len && body[p] == '[';
    }
    rc = json_parse_events((const char *)body, len, form, lim, &a->batch, &err);
parsed:
    if (rc == -EINVAL)
        return gw_admission_refuse_error(a, &err);
    return rc;
}

/* Parse, validate and queue through the admission stage; answer now, or later from wait_done/wait_timeout. */
/* `who`: the gate's principal, whose reference the admission takes over. */
static void ingest(gw_http_loop *f, gw_http_request *req, int committed, const gw_principal *who)
{
    gw_admission a;
    http_body hb = {.req = req};
    ingest_wait *iw = NULL;
    char *ok = NULL;
    size_t ok_len = 0;

    gw_admission_init(&a, f->gw, GW_HTTP, req->peer, req->started_ns);
    gw_admission_set_principal(&a, who);
    a.committed = committed != 0;
    a.persisted = committed == 2; /* answered 200 as committed is, once the spool (or Kafka) has them */
    a.inbox = f->inbox;
    a.done = wait_done;
    a.request_bytes = req->body ? evbuffer_get_length(req->body) : 0;
    if (gw_admit_prepare(&a, parse_http, &hb, 0) != 0) {
        respond_refusal(f, req, &a.refusal, 0);
        goto out;
    }
    /* Everything that can fail for want of memory before the push: once queued, the events go. */
    if ((ok = render_ids(&a.batch, &ok_len)) == NULL ||
        (committed && ((iw = calloc(1, sizeof(*iw))) == NULL ||
                       (iw->timer = evtimer_new(f->base, wait_timeout, iw)) == NULL))) {
        refuse(f, req, GW_R_internal, 0, "out of memory");
        goto out;
    }
    if (committed)
        iw->wait = a.wait;
    if (gw_admit_push(&a, 0) != 0) {
        respond_refusal(f, req, &a.refusal, 0);
        goto out;
    }
    if (!committed) {
        gw_admit_count_answered(f->gw, GW_HTTP, req->started_ns, 1);
        answer(f, req, 202, NULL, ok, ok_len, 0);
        goto out;
    }
    struct timeval tv = {f->gw->cfg->ack_timeout_ms / 1000, (f->gw->cfg->ack_timeout_ms % 1000) * 1000};
    iw->front = f;
    iw->req = req;
    iw->len = ok_len;
    iw->body = ok;
    ok = NULL;
    atomic_fetch_add(&f->pending, 1);
    evtimer_add(iw->timer, &tv);
    iw->next = f->waiting;
    if (f->waiting)
        f->waiting->prev = iw;
    f->waiting = iw;
    req->user = iw;
    iw->wait->ctx =
        iw; /* reports may all have come already: wait_done runs on this loop, after this returns */
    iw = NULL;

out:
    if (iw) {
        if (iw->timer)
            event_free(iw->timer);
        free(iw);
    }
    free(ok);
    free(hb.inflated);
    gw_admission_clear(&a);
}

/* On the loop, every few milliseconds while anything is held: admit the oldest while there is room. */
static void room_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_http_loop *f = arg;
    long long now = mono_ms();
    (void)fd;
    (void)what;

    while (f->held_head) {
        held *h = f->held_head;
        gw_http_request *req = h->req;
        int committed = h->committed;
        if (atomic_load(&f->gw->stopping)) {
            held_unlink(f, h);
            refuse(f, req, GW_R_shutting_down, 0, "the gateway is shutting down");
        } else if (now - h->since_ms >= f->gw->cfg->http_overload_wait_ms) {
            held_unlink(f, h);
            refuse(f, req, GW_R_overloaded, 0,
                   "the gateway's queue stayed above its high-water mark for %lld ms; retry later",
                   (long long)f->gw->cfg->http_overload_wait_ms);
        } else if (!gw_overloaded(f->gw)) {
            const gw_principal *who = h->who;
            h->who = NULL;
            held_unlink(f, h);
            ingest(f, req, committed, who);
        } else {
            break;
        }
    }
    if (f->held_head) {
        struct timeval tv = {0, ROOM_POLL_US};
        evtimer_add(f->room, &tv);
    }
}

/* Hold a request until there is room; 0, or -ENOMEM (then it is refused as it would have been). */
static int hold(gw_http_loop *f, gw_http_request *req, int committed, const gw_principal *who)
{
    held *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return -ENOMEM;
    h->kind = WAIT_ROOM;
    h->req = req;
    h->committed = committed;
    h->who = who;
    h->since_ms = mono_ms();
    h->prev = f->held_tail;
    if (f->held_tail)
        f->held_tail->next = h;
    else
        f->held_head = h;
    f->held_tail = h;
    req->user = h;
    atomic_fetch_add(&f->pending, 1);
    if (!evtimer_pending(f->room, NULL)) {
        struct timeval tv = {0, ROOM_POLL_US};
        evtimer_add(f->room, &tv);
    }
    return 0;
}

/*
 * Who it is, and the stop: 0, or answered. A request whose headers already
 * decide its refusal is refused before its body is read (head()), so one
 * without a token costs no body memory; two Authorization headers are
 * refused, not one of them picked.
 */
static int gate_admission(gw_http_loop *f, gw_http_request *req, gw_admission *a)
{
    const char *auth = NULL;
    int n = 0;

    gw_admission_init(a, f->gw, GW_HTTP, req->peer, req->started_ns);
    for (size_t i = 0; i < req->n_headers; i++)
        if (strcmp(req->headers[i].name, "authorization") == 0 && n++ == 0)
            auth = req->headers[i].value;
    if (n > 1) {
        refuse(f, req, GW_R_bad_request, 0, "more than one Authorization header");
        return -1;
    }
    gw_credentials cred = {auth, auth ? strlen(auth) : 0, req->peer_cert};
    int rc = gw_admit_gate(a, &cred, 1);
    if (rc != 0)
        respond_refusal(f, req, &a->refusal, 0);
    return rc;
}

/* The gate alone; `who` (may be NULL) gets the principal it let in, a reference the caller gives back. */
static int gate(gw_http_loop *f, gw_http_request *req, const gw_principal **who)
{
    gw_admission a;
    int rc = gate_admission(f, req, &a);

    if (rc == 0 && who)
        *who = gw_admission_take_principal(&a);
    gw_admission_clear(&a);
    return rc;
}

/*
 * A CORS preflight: OPTIONS with Origin and Access-Control-Request-Method,
 * while CORS is on. Browsers send it without credentials (Fetch), so it is
 * never authenticated; it asks what the browser may send, and sends nothing.
 */
static int is_preflight(const gw_http_loop *f, const gw_http_request *req)
{
    return f->cors.on && req->method == HTTP_OPTIONS && gw_http_request_header(req, "origin") &&
           gw_http_request_header(req, "access-control-request-method");
}

/*
 * Always 204, CORS headers or not: a preflight is the browser's question,
 * and an origin not listed gets an answer without Access-Control-Allow-Origin,
 * which the browser takes as no (the Fetch spec's CORS check), as it does a
 * method or header not in the Allow lines. Not a refusal: nothing is counted.
 */
static void preflight(gw_http_loop *f, gw_http_request *req)
{
    char h[1536]; /* the longest origin and echoed header list fit; gw_http_respond's head takes 2 KiB */

    gw_cors_headers(&f->cors, gw_http_request_header(req, "origin"), 1,
                    gw_http_request_header(req, "access-control-request-headers"), h, sizeof(h));
    gw_http_respond(req, 204, NULL, h, "", 0, 0);
}

/*
 * The headers are in, the body not yet read: refuse now what the headers
 * already refuse. A preflight is answered here when it has a body (browsers
 * send none): unauthenticated, its body is never read, as no request without
 * a token gets its body read.
 */
static int head(gw_http_request *req, void *arg)
{
    gw_http_loop *f = arg;

    if (is_preflight(f, req) && strcmp(req->path, "/v1/events") == 0) {
        preflight(f, req);
        return 1;
    }
    return gate(f, req, NULL) != 0;
}

/*
 * WebHook-Allowed-Rate for the caller `a` identified, in requests a minute,
 * or -1 for `*` (no quota): its principal's event quota times 60, since a
 * request carries at least one event (for `anonymous`, each address's).
 */
static long long allowed_rate(const gw_admission *a)
{
    const gw_principal *p = a->principal;

    if (p == NULL || p->rate <= 0)
        return -1;
    return (long long)(p->rate * 60 + 0.5) > 0 ? (long long)(p->rate * 60 + 0.5) : 1;
}

/*
 * The CloudEvents webhook validation handshake (HTTP 1.1 Web Hooks for Event
 * Delivery, 4): OPTIONS with WebHook-Request-Origin asks whether its sender
 * may deliver here. The sender presents the credentials its deliveries will
 * carry, and the answer goes through the same gate: consent is given only to
 * a caller whose POSTs would be let in (otherwise 401, without the WebHook-
 * headers, which the spec reads as no). Every origin is welcome; the
 * callback (WebHook-Request-Callback) is not called: consent is given in the
 * answer, and the gateway makes no requests to addresses its callers name.
 */
static void webhook_handshake(gw_http_loop *f, gw_http_request *req, const char *origin)
{
    const char *want = gw_http_request_header(req, "webhook-request-rate");
    long long wanted, rate;
    gw_admission a;
    char h[512];

    if (!gw_webhook_origin_ok(origin)) {
        refuse(f, req, GW_R_bad_request, 0, "WebHook-Request-Origin '%.40s' is not a DNS name", origin);
        return;
    }
    if (want && gw_webhook_rate_parse(want, &wanted) != 0) {
        refuse(f, req, GW_R_bad_request, 0, "WebHook-Request-Rate '%.40s' is not a positive integer", want);
        return;
    }
    if (gate_admission(f, req, &a) == 0) {
        rate = allowed_rate(&a);
        char r[24] = "*";
        if (rate >= 0)
            snprintf(r, sizeof(r), "%lld", rate);
        snprintf(h, sizeof(h), "Allow: POST\r\nWebHook-Allowed-Origin: %s\r\nWebHook-Allowed-Rate: %s\r\n",
                 origin, r);
        gw_http_respond(req, 200, NULL, h, "", 0, 0);
    }
    gw_admission_clear(&a);
}

static void handle(gw_http_request *req, void *arg)
{
    gw_http_loop *f = arg;
    const gw_principal *who = NULL;
    ack_level ack;
    char bad[48];

    if (strcmp(req->path, "/v1/events") != 0) {
        refuse(f, req, GW_R_not_found, 0, "no such path: %.100s (events go to POST /v1/events)", req->path);
        return;
    }
    if (req->method == HTTP_OPTIONS) {
        const char *hook = gw_http_request_header(req, "webhook-request-origin");
        if (is_preflight(f, req)) {
            preflight(f, req);
            return;
        }
        if (hook) {
            webhook_handshake(f, req, hook);
            return;
        }
    }
    if (req->method != HTTP_POST) {
        refuse(f, req, GW_R_method_not_allowed, 0, "%s is not allowed; use POST",
               http_method_str((enum http_method)req->method));
        return;
    }
    /* Again for a request without a body (head() saw those with one): before parsing, so a refusal is cheap.
     */
    if (gate(f, req, &who) != 0)
        return;
    if (parse_ack(req, f->gw->cfg->default_ack, &ack, bad, sizeof(bad)) != 0) {
        gw_principal_release(who);
        refuse(f, req, GW_R_bad_request, 0, "ack: '%s' is not committed, accepted or persisted", bad);
        return;
    }
    /* No room: wait for it rather than refuse at once (struct held says why). */
    /* 0: accepted, 1: committed, 2: persisted (what ingest() and hold() take). */
    int level = ack == ACK_ACCEPTED ? 0 : ack == ACK_PERSISTED ? 2 : 1;
    if ((f->held_head || gw_overloaded(f->gw)) && hold(f, req, level, who) == 0)
        return;
    ingest(f, req, level, who);
}

static void on_error(gw_http_request *req, int status, const char *code, const char *message, void *arg)
{
    gw_http_loop *f = arg;
    (void)code;

    switch (status) {
    case 413:
        refuse(f, req, GW_R_too_large, 0, "the request body is over %zu bytes", f->gw->lim.max_request_bytes);
        break;
    case 431: refuse(f, req, GW_R_headers_too_large, 0, "%s", message); break;
    case 408: refuse(f, req, GW_R_request_timeout, 0, "%s", message); break;
    case 429: refuse(f, req, GW_R_overloaded, 0, "%s", message); break;
    case 500: refuse(f, req, GW_R_internal, 0, "%s", message); break;
    default: refuse(f, req, GW_R_bad_request, status, "%s", message); break;
    }
}

/* Request bodies are buffered against the memory budget's inbound share (budget.h). */
static int take_body(size_t n, void *arg)
{
    gw_http_loop *f = arg;

    return gw_budget_take_inbound(&f->gw->budget, n);
}

static void give_body(size_t n, void *arg)
{
    gw_http_loop *f = arg;

    gw_budget_give_inbound(&f->gw->budget, n);
}

static void refused_connection(void *arg)
{
    gw_http_loop *f = arg;

    gw_admit_count_refused(f->gw, GW_HTTP, GW_R_too_many_connections);
}

/* A TLS handshake on this port failed or timed out (http_server.c logs the reason at debug). */
static void tls_failed(const char *peer, const char *why, void *arg)
{
    gw_http_loop *f = arg;
    (void)peer;
    (void)why;

    atomic_fetch_add_explicit(&f->gw->metrics.tls_handshake_failures[GW_HTTP], 1, memory_order_relaxed);
}

gw_http_loop *gw_http_loop_new(struct event_base *base, evutil_socket_t fd, gateway *gw)
{
    gw_http_loop *f = calloc(1, sizeof(*f));
    const gateway_config *cfg = gw->cfg;
    gw_http_server_config sc = {
        .max_body = gw->lim.max_request_bytes,
        .max_header_bytes = 64 * 1024,
        .idle_timeout_ms = (int)cfg->http_idle_timeout_ms,
        .header_timeout_ms = (int)cfg->http_header_timeout_ms,
        .min_body_rate = cfg->http_min_body_rate,
        /* One count for the port, whichever thread's socket a connection came in on. */
        .max_connections = (size_t)cfg->max_connections,
        .open_conns = &gw->metrics.connections[GW_HTTP],
        .take_body = take_body,
        .give_body = give_body,
        .overload_wait_ms = (int)cfg->http_overload_wait_ms,
        /* A second of silence mid-body while others wait for room: well past a round trip, or a GC pause. */
        .stall_evict_ms = 1000,
        .body_waiters = &gw->http_body_waiters,
        .head = head,
        .tls = gw->tls,
        .tls_failed = tls_failed,
        .refused_connection = refused_connection,
        .handle = handle,
        .abort = on_abort,
        .error = on_error,
    };

    if (f == NULL) {
        evutil_closesocket(fd);
        return NULL;
    }
    f->base = base;
    f->gw = gw;
    /* main.c checked the list before anything started. */
    if (gw_cors_init(&f->cors, cfg->cors_origins, cfg->cors_credentials, NULL, 0) != 0) {
        evutil_closesocket(fd);
        free(f);
        return NULL;
    }
    atomic_init(&f->pending, 0);
    sc.arg = f;
    if ((f->room = evtimer_new(base, room_cb, f)) == NULL || (f->inbox = ack_inbox_new(base)) == NULL ||
        (f->srv = gw_http_server_new(base, fd, &sc)) == NULL) {
        if (f->srv == NULL)
            evutil_closesocket(fd);
        gw_http_loop_free(f);
        return NULL;
    }
    return f;
}

static void stop_accepting_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_http_loop *f = arg;
    (void)fd;
    (void)what;
    gw_http_server_stop_accepting(f->srv);
}

void gw_http_loop_stop_accepting(gw_http_loop *f)
{
    event_base_once(f->base, -1, EV_TIMEOUT, stop_accepting_cb, f, NULL);
}

/* On the loop: the stop's deadline came, answer every request still waiting for Kafka. */
static void stop_waiting_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_http_loop *f = arg;
    (void)fd;
    (void)what;

    while (f->held_head) {
        gw_http_request *req = f->held_head->req;
        held_unlink(f, f->held_head);
        refuse(f, req, GW_R_shutting_down, 0, "the gateway is shutting down");
    }
    while (f->waiting) {
        ingest_wait *iw = f->waiting;
        gw_http_request *req = iw->req;
        iw->wait->ctx = NULL; /* the wait lives on until its last report; nobody answers then */
        req->user = NULL;
        refuse(f, req, GW_R_shutting_down, 0,
               "the gateway stopped before Kafka acknowledged; the events may still arrive, a retry with the "
               "same ids is safe");
        wait_finish(iw);
    }
}

void gw_http_loop_stop_waiting(gw_http_loop *f)
{
    event_base_once(f->base, -1, EV_TIMEOUT, stop_waiting_cb, f, NULL);
}

size_t gw_http_loop_pending(const gw_http_loop *f)
{
    return atomic_load(&((gw_http_loop *)f)->pending);
}

void gw_http_loop_close(gw_http_loop *f)
{
    if (f == NULL)
        return;
    /* Waiting requests are aborted: their waits stay until their reports come, then are freed. */
    gw_http_server_free(f->srv);
    f->srv = NULL;
}

void gw_http_loop_free(gw_http_loop *f)
{
    if (f == NULL)
        return;
    gw_http_loop_close(f);
    if (f->inbox) {
        ack_inbox_drain(f->inbox);
        ack_inbox_free(f->inbox);
    }
    if (f->room)
        event_free(f->room);
    gw_cors_free(&f->cors);
    free(f);
}

static void http_front_close(void *self);
static void http_front_free(void *self);

/* --- the front end: --http-threads loops, each on a thread and a SO_REUSEPORT socket of its own ----------
 */

typedef struct http_thread {
    pthread_t tid;
    int index;
    int started;
    struct event_base *base;
    gw_http_loop *loop;
} http_thread;

struct gw_http_front {
    gateway *gw;
    http_thread *t;
    int n;
};

static void *http_main(void *arg)
{
    http_thread *t = arg;
    char name[16];

    /* Named, so top -H and perf tell the threads apart. */
    snprintf(name, sizeof(name), "gw-http-%d", t->index);
    pthread_setname_np(pthread_self(), name);
    event_base_loop(t->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

gw_http_front *gw_http_front_start(gateway *gw, char *err, size_t errlen)
{
    const char *addr = gw->cfg->http_addr;
    int threads = (int)gw->cfg->http_threads;
    gw_http_front *h = calloc(1, sizeof(*h));

    if (h == NULL || (h->t = calloc((size_t)threads, sizeof(*h->t))) == NULL) {
        snprintf(err, errlen, "out of memory");
        free(h);
        return NULL;
    }
    h->gw = gw;
    /* Loops are woken from the delivery report thread: libevent must know about threads. */
    evthread_use_pthreads();
    /*
     * SO_REUSEPORT would also let this process share a port that another
     * gateway already serves, silently splitting its traffic: bind once
     * without it first, so a port in use is an error at start.
     */
    int probe = net_bind(addr, SOCK_STREAM, 0, err, errlen);
    if (probe < 0)
        goto fail;
    evutil_closesocket(probe);
    for (; h->n < threads; h->n++) {
        http_thread *t = &h->t[h->n];
        int fd = net_bind(addr, SOCK_STREAM, 1, err, errlen);
        if (fd < 0)
            goto fail;
        t->index = h->n;
        if ((t->base = event_base_new()) == NULL || (t->loop = gw_http_loop_new(t->base, fd, gw)) == NULL) {
            snprintf(err, errlen, "cannot start HTTP I/O thread %d", t->index);
            h->n++;
            goto fail;
        }
    }
    for (int i = 0; i < h->n; i++) {
        if (pthread_create(&h->t[i].tid, NULL, http_main, &h->t[i]) != 0) {
            snprintf(err, errlen, "cannot start HTTP I/O thread %d", i);
            goto fail;
        }
        h->t[i].started = 1;
    }
    return h;

fail:
    http_front_close(h);
    http_front_free(h);
    return NULL;
}

static void http_front_stop_accepting(void *self)
{
    gw_http_front *h = self;

    for (int i = 0; i < h->n; i++)
        gw_http_loop_stop_accepting(h->t[i].loop);
}

static size_t http_front_pending(void *self)
{
    gw_http_front *h = self;
    size_t n = 0;

    for (int i = 0; i < h->n; i++)
        n += gw_http_loop_pending(h->t[i].loop);
    return n;
}

static void http_front_abort_waiting(void *self)
{
    gw_http_front *h = self;

    for (int i = 0; i < h->n; i++)
        gw_http_loop_stop_waiting(h->t[i].loop);
}

static void http_front_close(void *self)
{
    gw_http_front *h = self;

    /* A moment for answers written last (the stop's 503s) to leave before the loops end. */
    struct timeval flush = {0, 50000};
    for (int i = 0; i < h->n; i++)
        if (h->t[i].started) {
            event_base_loopexit(h->t[i].base, &flush);
            pthread_join(h->t[i].tid, NULL);
            h->t[i].started = 0;
        }
    /* Loops stopped: abort what still waits; the waits are freed when their last reports come. */
    for (int i = 0; i < h->n; i++)
        gw_http_loop_close(h->t[i].loop);
}

static void http_front_free(void *self)
{
    gw_http_front *h = self;

    if (h == NULL)
        return;
    for (int i = 0; i < h->n; i++) {
        gw_http_loop_free(h->t[i].loop);
        if (h->t[i].base)
            event_base_free(h->t[i].base);
    }
    free(h->t);
    free(h);
}

const gw_front_ops gw_http_front_ops = {
    .name = "http",
    .stop_accepting = http_front_stop_accepting,
    .pending = http_front_pending,
    .abort_waiting = http_front_abort_waiting,
    .close = http_front_close,
    .free = http_front_free,
};
