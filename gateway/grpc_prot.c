#include "grpc_prot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "envelope.h"
#include "net.h"

void gw_grpc_event_errors_clear(gw_grpc_event_errors *errs)
{
    free(errs->e);
    memset(errs, 0, sizeof(*errs));
}

static int errors_add(gw_grpc_event_errors *errs, size_t index, const ing_event_error *err)
{
    if (errs->n == errs->cap) {
        size_t cap = errs->cap ? errs->cap * 2 : 8;
        gw_grpc_event_error *e = realloc(errs->e, cap * sizeof(*e));
        if (e == NULL)
            return -ENOMEM;
        errs->e = e;
        errs->cap = cap;
    }
    gw_grpc_event_error *e = &errs->e[errs->n++];
    e->index = (uint32_t)index;
    e->code = err->code ? err->code : EVENT_ERR_INVALID;
    snprintf(e->message, sizeof(e->message), "%s", err->message);
    return 0;
}

int gw_grpc_prot_events(const wire_request *req, const ing_event_limits *lim, ing_event_batch *out,
                        gw_grpc_event_errors *errs, ing_event_error *req_err)
{
    const uint8_t *bytes;
    size_t len, pos = 0;
    ing_event_error err;
    int rc;

    if (req->n_events > lim->max_batch_events)
        return ing_event_error_set(req_err, EVENT_ERR_TOO_MANY, -1, "events",
                                   "%zu events, at most %zu in a request", req->n_events,
                                   lim->max_batch_events);
    /* Every event is checked, so that a stream's client learns all that is wrong with a request at once. */
    for (size_t i = 0; wire_request_next_event(req, &pos, &bytes, &len); i++) {
        ing_event *ev = ing_event_batch_add(out);
        if (ev == NULL)
            return -ENOMEM;
        memset(&err, 0, sizeof(err));
        /* The request was read whole by publish_request_from_wire(): no event is malformed (-EBADMSG) here.
         */
        rc = ing_event_from_wire(bytes, len, ev, lim, &err);
        if (rc == 0)
            rc = ing_event_validate(ev, lim, (long)i, &err);
        if (rc == -ENOMEM)
            return rc;
        if (rc != 0 && errors_add(errs, i, &err) != 0)
            return -ENOMEM;
    }
    if (errs->n)
        return -EINVAL;
    for (size_t i = 0; i < out->n; i++)
        if (ing_event_assign_id(&out->ev[i]) != 0)
            return -ENOMEM;
    return 0;
}

int gw_grpc_prot_response(uint64_t seq, const ing_event_batch *accepted, const gw_grpc_event_errors *errs,
                          uint8_t **out, size_t *out_len)
{
    Ingest__V1__PublishResponse r = INGEST__V1__PUBLISH_RESPONSE__INIT;
    Ingest__V1__EventError *ee = NULL, **eps = NULL;
    char **ids = NULL;
    int rc = -ENOMEM;

    r.seq = seq;
    if (accepted && accepted->n) {
        if ((ids = malloc(accepted->n * sizeof(*ids))) == NULL)
            goto out;
        for (size_t i = 0; i < accepted->n; i++)
            ids[i] = accepted->ev[i].id;
        r.accepted = (uint32_t)accepted->n;
        r.n_ids = accepted->n;
        r.ids = ids;
    }
    if (errs && errs->n) {
        if ((ee = calloc(errs->n, sizeof(*ee))) == NULL || (eps = malloc(errs->n * sizeof(*eps))) == NULL)
            goto out;
        for (size_t i = 0; i < errs->n; i++) {
            ingest__v1__event_error__init(&ee[i]);
            ee[i].index = errs->e[i].index;
            ee[i].code = (char *)errs->e[i].code;
            ee[i].message = (char *)errs->e[i].message;
            eps[i] = &ee[i];
        }
        r.n_errors = errs->n;
        r.errors = eps;
    }
    size_t len = ingest__v1__publish_response__get_packed_size(&r);
    /* An empty message packs to nothing; malloc(0) may return NULL. */
    if ((*out = malloc(len ? len : 1)) == NULL)
        goto out;
    *out_len = ingest__v1__publish_response__pack(&r, *out);
    rc = 0;
out:
    free(ids);
    free(ee);
    free(eps);
    return rc;
}

void gw_grpc_prot_peer(const char *uri, char *out, size_t size)
{
    const char *s = uri ? uri : "";

    if (size == 0)
        return;
    if (strncmp(s, "ipv4:", 5) != 0 && strncmp(s, "ipv6:", 5) != 0) {
        snprintf(out, size, "%s", s);
        return;
    }
    /* The C core percent-encodes the brackets of an IPv6 address in the URI. */
    net_percent_decode(s + 5, out, size);
}

int gw_grpc_prot_bearer_ok(const char *value, size_t len, const char *token)
{
    size_t tlen = strlen(token);
    unsigned char diff;

    if (value == NULL || len < 7 || strncasecmp(value, "Bearer ", 7) != 0)
        return 0;
    value += 7;
    len -= 7;
    diff = (unsigned char)(len != tlen);
    for (size_t i = 0; i < len; i++)
        diff |= (unsigned char)(value[i] ^ (tlen ? token[i % tlen] : 0));
    return diff == 0 && tlen > 0;
}

void gw_grpc_ack_fifo_init(gw_grpc_ack_fifo *f)
{
    f->head = NULL;
    f->tail = &f->head;
    f->n = 0;
}

void gw_grpc_ack_fifo_push(gw_grpc_ack_fifo *f, gw_grpc_ack *a)
{
    a->next = NULL;
    *f->tail = a;
    f->tail = &a->next;
    f->n++;
}

gw_grpc_ack *gw_grpc_ack_fifo_pop(gw_grpc_ack_fifo *f)
{
    gw_grpc_ack *a = f->head;

    if (a == NULL)
        return NULL;
    if ((f->head = a->next) == NULL)
        f->tail = &f->head;
    a->next = NULL;
    f->n--;
    return a;
}

gw_grpc_ack *gw_grpc_ack_fifo_pop_ready(gw_grpc_ack_fifo *f)
{
    if (f->head == NULL || f->head->state == GW_GRPC_ACK_WAITING)
        return NULL;
    return gw_grpc_ack_fifo_pop(f);
}
