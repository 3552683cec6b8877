#include "grpc_prot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "envelope.h"
#include "net.h"

int gw_grpc_prot_parse(gw_admission *a, void *arg)
{
    gw_grpc_publish *pub = arg;
    const ing_event_limits *lim = &a->gw->lim;
    const uint8_t *bytes;
    size_t len, pos = 0;
    ing_event_error err;
    wire_request req;
    int rc;

    if (publish_request_from_wire(pub->data, pub->len, &req) != 0)
        return gw_admission_refuse(a, GW_R_malformed_protobuf, -1,
                                   "the message is not an ingest.v1.PublishRequest");
    pub->seq = req.seq;
    a->multi = 1; /* a request names its events by index, however many it holds */
    a->persisted = 0;
    switch (req.ack) {
    case INGEST__V1__ACK_LEVEL__ACK_LEVEL_UNSPECIFIED:
        a->committed = gw_admit_default_committed(a->gw);
        a->persisted = gw_admit_default_persisted(a->gw);
        break;
    case INGEST__V1__ACK_LEVEL__ACK_LEVEL_COMMITTED: a->committed = 1; break;
    case INGEST__V1__ACK_LEVEL__ACK_LEVEL_PERSISTED:
        a->committed = 1;
        a->persisted = 1;
        break;
    case INGEST__V1__ACK_LEVEL__ACK_LEVEL_ACCEPTED: a->committed = 0; break;
    default: return gw_admission_refuse(a, GW_R_bad_request, -1, "ack: %d is not an AckLevel", (int)req.ack);
    }
    if (req.n_events > lim->max_batch_events)
        return gw_admission_refuse(a, GW_R_too_many_events, -1, "%zu events, at most %zu in a request",
                                   req.n_events, lim->max_batch_events);
    /* Every event is decoded, so that a stream's client learns all that is wrong with a request at once. */
    for (size_t i = 0; wire_request_next_event(&req, &pos, &bytes, &len); i++) {
        ing_event *ev = ing_event_batch_add(&a->batch);
        if (ev == NULL)
            return -ENOMEM;
        memset(&err, 0, sizeof(err));
        /* The request was read whole by publish_request_from_wire(): no event is malformed (-EBADMSG) here.
         */
        if ((rc = ing_event_from_wire(bytes, len, ev, lim, &err)) == -ENOMEM)
            return rc;
        if (rc != 0 && gw_admission_event_error(a, i, &err) != 0)
            return -ENOMEM;
    }
    return 0;
}

void gw_grpc_prot_status_message(const gw_refusal *r, size_t n_errors, char *out, size_t size)
{
    const char *code = gw_reasons[r->reason].name;

    if (r->index >= 0)
        snprintf(out, size, "%s: event %ld: %s%s", code, r->index, r->message,
                 n_errors > 1 ? " (and other events)" : "");
    else
        snprintf(out, size, "%s: %s", code, r->message);
}

int gw_grpc_prot_response(uint64_t seq, const ing_event_batch *accepted, const gw_event_error *errs,
                          size_t n_errs, uint8_t **out, size_t *out_len)
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
    if (errs && n_errs) {
        if ((ee = calloc(n_errs, sizeof(*ee))) == NULL || (eps = malloc(n_errs * sizeof(*eps))) == NULL)
            goto out;
        for (size_t i = 0; i < n_errs; i++) {
            ingest__v1__event_error__init(&ee[i]);
            ee[i].index = errs[i].index;
            ee[i].code = (char *)gw_reasons[errs[i].reason].name;
            ee[i].message = (char *)errs[i].message;
            eps[i] = &ee[i];
        }
        r.n_errors = n_errs;
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
