#include "admit.h"
#include "spooler.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "envelope.h"
#include "log.h"

/* The Envelope's name for each protocol. */
static const int protocol_in_envelope[GW_N_PROTOCOLS] = {
    [GW_HTTP] = ENVELOPE_HTTP,
    [GW_UDP] = ENVELOPE_UDP,
    [GW_GRPC] = ENVELOPE_GRPC,
};

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void gw_admission_init(gw_admission *a, gateway *gw, gw_protocol p, const char *peer, uint64_t started_ns)
{
    memset(a, 0, sizeof(*a));
    a->gw = gw;
    a->protocol = p;
    a->peer = peer;
    a->started_ns = started_ns;
    a->received_ns = wall_ns();
    a->committed = gw_admit_default_committed(gw);
    a->refusal.index = -1;
    ing_event_batch_init(&a->batch);
}

/* Records of units [from, n_units) that were not queued, and their waits: no report will come for them. */
static void drop_units(gw_admission *a, size_t from)
{
    if (from >= a->n_units)
        return;
    for (size_t i = a->unit_first[from]; i < a->n_msgs; i++) {
        /* Spooled while held (a gRPC stream's -EAGAIN), then given up: not to be replayed. */
        if (a->msgs[i]->spool_seq)
            gw_spooler_cancel(a->gw->spooler, a->msgs[i]->spool_seq);
        produce_msg_free(a->msgs[i]);
    }
    for (size_t k = from; k < a->n_units; k++)
        if (a->unit_wait[k]) {
            if (a->unit_wait[k] == a->wait)
                a->wait = NULL;
            ack_wait_free(a->unit_wait[k]);
        }
    a->n_msgs = a->unit_first[from];
    a->n_units = from;
}

void gw_principal_release(const gw_principal *p)
{
    if (p)
        gw_auth_release(p->auth);
}

const gw_principal *gw_principal_hold(const gw_principal *p)
{
    if (p)
        gw_auth_hold(p->auth);
    return p;
}

/* The principal's quotas apply to what it sends (none when no rules are installed). */
static void apply_principal(gw_admission *a, const gw_principal *p)
{
    a->principal = p;
    gw_admission_set_quota(a, p ? &p->events : NULL, p ? &p->bytes : NULL);
}

void gw_admission_set_principal(gw_admission *a, const gw_principal *p)
{
    gw_principal_release(a->principal);
    apply_principal(a, p);
}

const gw_principal *gw_admission_take_principal(gw_admission *a)
{
    const gw_principal *p = a->principal;
    a->principal = NULL;
    return p;
}

void gw_admission_clear(gw_admission *a)
{
    gw_admission_set_principal(a, NULL);
    drop_units(a, 0);
    ing_event_batch_clear(&a->batch);
    free(a->msgs);
    free(a->unit_first);
    free(a->unit_peer);
    free(a->unit_wait);
    free(a->errors);
    a->msgs = NULL;
    a->unit_first = NULL;
    a->unit_peer = NULL;
    a->unit_wait = NULL;
    a->errors = NULL;
    a->n_msgs = a->cap_msgs = a->n_units = a->cap_units = a->n_errors = a->cap_errors = 0;
    a->wait = NULL;
}

void gw_admission_reset(gw_admission *a, uint64_t started_ns)
{
    /* The next batch is identified afresh: it sees a reload's rules. */
    gw_admission_set_principal(a, NULL);
    drop_units(a, 0);
    ing_event_batch_reset(&a->batch);
    a->n_errors = 0;
    a->wait = NULL;
    a->refusal.index = -1;
    a->started_ns = started_ns;
    a->received_ns = wall_ns();
}

/* --- refusals -------------------------------------------------------------------------------------- */

void gw_admit_count_refused(gateway *gw, gw_protocol p, gw_reason reason)
{
    gateway_metrics_refused(&gw->metrics, p, reason);
}

void gw_admit_count_answered(gateway *gw, gw_protocol p, uint64_t started_ns, size_t n)
{
    gateway_metrics_requests(&gw->metrics, p, started_ns, n);
}

static void vrefuse(gw_admission *a, gw_reason reason, long index, const char *fmt, va_list ap)
{
    a->refusal.reason = reason;
    a->refusal.index = index;
    a->refusal.retry_after_s = 0;
    vsnprintf(a->refusal.message, sizeof(a->refusal.message), fmt, ap);
}

int gw_admission_refuse(gw_admission *a, gw_reason reason, long index, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vrefuse(a, reason, index, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

int gw_admission_refuse_error(gw_admission *a, const ing_event_error *err)
{
    return gw_admission_refuse(a, gw_reason_of_errcode(err->code), err->index, "%s", err->message);
}

/* A refusal the stage decided: counted, and told to whoever listens. -1, for `return refused(a)`. */
static int refused(gw_admission *a, const char *peer)
{
    gw_admit_count_refused(a->gw, a->protocol, a->refusal.reason);
    if (a->principal)
        gateway_metrics_principal_refused(a->principal->stats, a->refusal.reason);
    if (a->on_refused)
        a->on_refused(a, peer, &a->refusal);
    return -1;
}

int gw_admission_event_error(gw_admission *a, size_t index, const ing_event_error *err)
{
    if (a->n_errors == a->cap_errors) {
        size_t cap = a->cap_errors ? a->cap_errors * 2 : 8;
        gw_event_error *e = realloc(a->errors, cap * sizeof(*e));
        if (e == NULL)
            return -ENOMEM;
        a->errors = e;
        a->cap_errors = cap;
    }
    gw_event_error *e = &a->errors[a->n_errors++];
    e->index = (uint32_t)index;
    e->reason = gw_reason_of_errcode(err->code);
    snprintf(e->message, sizeof(e->message), "%s", err->message);
    return 0;
}

/* --- 1. the gate ----------------------------------------------------------------------------------- */

static const char *const protocol_names[GW_N_PROTOCOLS] = {
    [GW_HTTP] = "HTTP", [GW_UDP] = "UDP", [GW_GRPC] = "gRPC"};

/*
 * Who the caller is (auth.h): a token decides alone (one that matches
 * nobody is refused, never taken for anonymous); without one, a verified
 * certificate; else anonymous, when the rules have it for this protocol.
 */
static int identify(gw_admission *a, const gw_credentials *cred)
{
    gw_auth *auth;
    const gw_principal *p = NULL;
    const char *v = cred ? cred->authorization : NULL;
    size_t len = cred ? cred->authorization_len : 0;

    if (a->principal)
        return 0;
    if ((auth = gw_auth_acquire(a->gw)) == NULL)
        return 0; /* no rules installed: everything goes */
    if (v && !auth->ignore_tokens) {
        if (len < 7 || strncasecmp(v, "Bearer ", 7) != 0 ||
            (p = gw_auth_by_token(auth, v + 7, len - 7)) == NULL) {
            gw_auth_release(auth);
            return gw_admission_refuse(a, GW_R_unauthorized, -1, "the bearer token is wrong");
        }
    } else if (cred && cred->cert) {
        p = gw_auth_by_cert(auth, cred->cert);
    }
    if (p == NULL && (p = auth->anonymous) != NULL && !gw_principal_may_use(p, a->protocol))
        p = NULL;
    if (p == NULL) {
        gw_auth_release(auth);
        return gw_admission_refuse(a, GW_R_unauthorized, -1,
                                   "an Authorization: Bearer token (or a client certificate) is required");
    }
    apply_principal(a, p); /* with the reference acquired */
    if (!gw_principal_may_use(p, a->protocol))
        return gw_admission_refuse(a, GW_R_forbidden, -1, "principal %s may not use %s", p->name,
                                   protocol_names[a->protocol]);
    return 0;
}

/* --- quotas --------------------------------------------------------------------------------------- */

void gw_admission_set_quota(gw_admission *a, const gw_limit *events, const gw_limit *bytes)
{
    memset(&a->q_events, 0, sizeof(a->q_events));
    memset(&a->q_bytes, 0, sizeof(a->q_bytes));
    if (events)
        a->q_events = *events;
    if (bytes)
        a->q_bytes = *bytes;
}

void gw_admission_set_source(gw_admission *a, const struct sockaddr *sa)
{
    a->q_has_ip = gw_ip_key_of_sockaddr(sa, &a->q_ip) == 0;
}

/* The key for per-address limits; NULL when there is none to be had (then they do not apply). */
static const gw_ip_key *source_key(gw_admission *a)
{
    if (!a->q_has_ip && (a->q_events.ips || a->q_bytes.ips))
        a->q_has_ip = gw_ip_key_of_peer(a->peer, &a->q_ip) == 0;
    return a->q_has_ip ? &a->q_ip : NULL;
}

static int rate_refused(gw_admission *a, const gw_limit *l, const char *what, int64_t wait_ns)
{
    long s = gw_retry_after_s(wait_ns);

    gw_admission_refuse(a, GW_R_rate_limited, -1,
                        "over the quota of %g %s a second (burst %g); retry in %ld s", l->rate.per_s, what,
                        l->rate.burst < 1 ? 1 : l->rate.burst, s);
    a->refusal.retry_after_s = s;
    return refused(a, a->peer);
}

int gw_admit_rate_gate(gw_admission *a)
{
    int64_t now, wait = 0;
    const gw_ip_key *k;

    a->quota_wait_ns = 0;
    if (!gw_limit_active(&a->q_events) && !gw_limit_active(&a->q_bytes))
        return 0;
    now = gw_quota_now_ns();
    k = source_key(a);
    if (!gw_limit_gate(&a->q_events, k, now, &wait)) {
        if (a->quota_debt)
            return a->quota_wait_ns = wait, 0;
        return rate_refused(a, &a->q_events, "events", wait);
    }
    if (!gw_limit_gate(&a->q_bytes, k, now, &wait)) {
        if (a->quota_debt)
            return a->quota_wait_ns = wait, 0;
        return rate_refused(a, &a->q_bytes, "bytes", wait);
    }
    return 0;
}

int gw_admit_rate_charge(gw_admission *a, size_t n_events)
{
    int64_t now, wait = 0, w2;
    const gw_ip_key *k;
    double bytes = (double)a->request_bytes;

    a->quota_wait_ns = 0;
    if ((!gw_limit_active(&a->q_events) && !gw_limit_active(&a->q_bytes)) || n_events == 0)
        return 0;
    now = gw_quota_now_ns();
    k = source_key(a);
    if (a->quota_debt) {
        /* Read already, and taken: the stream pays by waiting before its next read. */
        wait = gw_limit_charge(&a->q_events, k, now, (double)n_events);
        w2 = gw_limit_charge(&a->q_bytes, k, now, bytes);
        a->quota_wait_ns = wait > w2 ? wait : w2;
        return 0;
    }
    if (!gw_limit_take(&a->q_events, k, now, (double)n_events, &wait))
        return rate_refused(a, &a->q_events, "events", wait);
    if (!gw_limit_take(&a->q_bytes, k, now, bytes, &wait)) {
        /* All or none: the events taken go back, else a refused request would use up quota. */
        gw_limit_refund(&a->q_events, k, (double)n_events);
        return rate_refused(a, &a->q_bytes, "bytes", wait);
    }
    return 0;
}

int gw_admit_gate(gw_admission *a, const gw_credentials *cred, int may_wait)
{
    gateway *gw = a->gw;

    if (identify(a, cred) != 0)
        return refused(a, a->peer);
    if (gw_admit_rate_gate(a) != 0)
        return -1;
    if (atomic_load(&gw->stopping)) {
        gw_admission_refuse(a, GW_R_shutting_down, -1, "the gateway is shutting down");
        return refused(a, a->peer);
    }
    /* What this admission holds unpushed (earlier datagrams of a UDP batch) counts toward the mark too. */
    if (!may_wait && queue_depth(gw->q) + a->n_msgs >= queue_high_water(gw->q)) {
        gw_admission_refuse(a, GW_R_overloaded, -1,
                            "the gateway's queue is above its high-water mark; retry later");
        return refused(a, a->peer);
    }
    if (!may_wait && gw_budget_queued_full(&gw->budget)) {
        gw_admission_refuse(a, GW_R_overloaded, -1,
                            "the gateway's queue holds its share of the memory budget; retry later");
        return refused(a, a->peer);
    }
    return 0;
}

/* --- 2. parse, validate, ids, Envelopes ------------------------------------------------------------ */

static int reserve_msgs(gw_admission *a, size_t more)
{
    if (a->n_msgs + more <= a->cap_msgs)
        return 0;
    size_t cap = a->cap_msgs ? a->cap_msgs : 64;
    while (cap < a->n_msgs + more)
        cap *= 2;
    produce_msg **m = realloc(a->msgs, cap * sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    a->msgs = m;
    a->cap_msgs = cap;
    return 0;
}

static int reserve_unit(gw_admission *a)
{
    if (a->n_units + 1 < a->cap_units)
        return 0;
    size_t cap = a->cap_units ? a->cap_units * 2 : 4;
    size_t *first = realloc(a->unit_first, (cap + 1) * sizeof(*first));
    if (first == NULL)
        return -ENOMEM;
    a->unit_first = first;
    const char **peer = realloc(a->unit_peer, cap * sizeof(*peer));
    if (peer == NULL)
        return -ENOMEM;
    a->unit_peer = peer;
    ack_wait **wait = realloc(a->unit_wait, cap * sizeof(*wait));
    if (wait == NULL)
        return -ENOMEM;
    a->unit_wait = wait;
    a->cap_units = cap;
    return 0;
}

static int out_of_memory(gw_admission *a)
{
    gw_admission_refuse(a, GW_R_internal, -1, "out of memory");
    return refused(a, a->peer);
}

static int by_index(const void *x, const void *y)
{
    const gw_event_error *a = x, *b = y;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* Validate every event of the batch and give it its id; with all_errors, list every bad one. */
static int validate(gw_admission *a)
{
    const ing_event_limits *lim = &a->gw->lim;
    ing_event_batch *b = &a->batch;
    ing_event_error err;
    size_t e = 0; /* the next error the parser recorded, by index */
    int rc;

    for (size_t i = 0; i < b->n; i++) {
        if (e < a->n_errors && a->errors[e].index == i) {
            /* The parser refused it already. */
            while (e < a->n_errors && a->errors[e].index == i)
                e++;
            continue;
        }
        memset(&err, 0, sizeof(err));
        if ((rc = ing_event_validate(&b->ev[i], lim, a->multi ? (long)i : -1, &err)) == -ENOMEM)
            return rc;
        if (rc != 0) {
            if (!a->all_errors)
                return gw_admission_refuse_error(a, &err);
            if (gw_admission_event_error(a, i, &err) != 0)
                return -ENOMEM;
            continue;
        }
        if (a->principal && !gw_principal_source_allowed(a->principal, b->ev[i].source)) {
            long at = a->multi ? (long)i : -1;
            ing_event_error_set(&err, ING_ERR_INVALID_EVENT, at, "source",
                                "source: '%.100s' is not allowed for principal %s", b->ev[i].source,
                                a->principal->name);
            if (!a->all_errors)
                return gw_admission_refuse(a, GW_R_forbidden, at, "%s", err.message);
            if (gw_admission_event_error(a, i, &err) != 0)
                return -ENOMEM;
            a->errors[a->n_errors - 1].reason = GW_R_forbidden;
            continue;
        }
        if (ing_event_assign_id(&b->ev[i]) != 0)
            return -ENOMEM;
    }
    if (a->n_errors == 0)
        return 0;
    /* The parser's errors and ours, in index order: the first bad event names the refusal. */
    qsort(a->errors, a->n_errors, sizeof(*a->errors), by_index);
    a->refusal.reason = a->errors[0].reason;
    a->refusal.index = a->errors[0].index;
    snprintf(a->refusal.message, sizeof(a->refusal.message), "%s", a->errors[0].message);
    return -EINVAL;
}

int gw_admit_prepare(gw_admission *a, gw_parse_fn parse, void *arg, int may_be_empty)
{
    ing_event_batch *b = &a->batch;
    ack_wait *w = NULL;
    size_t made = 0;
    int rc;

    ing_event_batch_reset(b);
    a->n_errors = 0;
    a->wait = NULL;
    a->multi = 0;
    a->refusal.index = -1;
    if ((rc = parse(a, arg)) == -ENOMEM)
        return out_of_memory(a);
    if (rc != 0)
        return refused(a, a->peer);
    if ((rc = validate(a)) == -ENOMEM)
        return out_of_memory(a);
    if (rc != 0)
        return refused(a, a->peer);
    if (b->n == 0 && !may_be_empty) {
        gw_admission_refuse(a, GW_R_invalid_event, -1, "the request holds no event");
        return refused(a, a->peer);
    }
    /* Charged once the request is known good, before the costly encoding: a refused one costs no quota. */
    if (gw_admit_rate_charge(a, b->n) != 0)
        return -1;
    if (reserve_unit(a) != 0 || reserve_msgs(a, b->n) != 0)
        return out_of_memory(a);
    /* persisted with a spool: one report, from the spool, once the last record is durable; without,
     * committed. */
    int persisted = a->committed && a->persisted && a->gw->spooler;
    if (a->committed && b->n > 0 &&
        (w = ack_wait_new(persisted ? 1 : (unsigned)b->n, a->inbox, a->done, NULL)) == NULL)
        return out_of_memory(a);
    if (w)
        w->persisted = persisted;
    for (; made < b->n; made++)
        if ((a->msgs[a->n_msgs + made] =
                 produce_msg_new(&b->ev[made], a->received_ns, protocol_in_envelope[a->protocol], a->peer,
                                 a->gw->cfg->gateway_id, a->principal ? a->principal->name : NULL,
                                 persisted ? NULL : w)) == NULL)
            goto oom;
    if (a->n_units == 0)
        a->unit_first[0] = 0;
    a->unit_peer[a->n_units] = a->peer;
    a->unit_wait[a->n_units] = w;
    a->n_msgs += made;
    a->unit_first[++a->n_units] = a->n_msgs;
    a->wait = w;
    return 0;

oom:
    while (made > 0)
        produce_msg_free(a->msgs[a->n_msgs + --made]);
    if (w)
        ack_wait_free(w);
    return out_of_memory(a);
}

/* --- 3. the queue ---------------------------------------------------------------------------------- */

/* Units [lo, hi) did not go in: refused each, freed. */
static void refuse_units(gw_admission *a, size_t lo, size_t hi, int rc)
{
    for (size_t k = lo; k < hi; k++) {
        for (size_t i = a->unit_first[k]; i < a->unit_first[k + 1]; i++) {
            /* Refused: its spool record must not be replayed either. */
            if (a->msgs[i]->spool_seq)
                gw_spooler_cancel(a->gw->spooler, a->msgs[i]->spool_seq);
            produce_msg_free(a->msgs[i]);
            a->msgs[i] = NULL;
        }
        if (a->unit_wait[k]) {
            if (a->unit_wait[k] == a->wait)
                a->wait = NULL;
            ack_wait_free(a->unit_wait[k]);
            a->unit_wait[k] = NULL;
        }
        if (rc == -EPIPE)
            gw_admission_refuse(a, GW_R_shutting_down, -1, "the gateway is shutting down");
        else if (rc == -ENOSPC)
            gw_admission_refuse(a, GW_R_overloaded, -1, "the gateway's spool is full; retry later");
        else if (rc == -EAGAIN || rc == -EINVAL)
            gw_admission_refuse(a, GW_R_overloaded, -1, "the gateway's queue is full; retry later");
        else
            gw_admission_refuse(a, GW_R_overloaded, -1,
                                "the gateway's spool cannot be written (%s); retry later", strerror(-rc));
        refused(a, a->unit_peer[k]);
    }
}

/* Units [lo, hi) went in: the queue owns their records now. */
static void queued(gw_admission *a, size_t lo, size_t hi)
{
    size_t n = a->unit_first[hi] - a->unit_first[lo];

    for (size_t i = a->unit_first[lo]; i < a->unit_first[hi]; i++)
        a->msgs[i] = NULL;
    for (size_t k = lo; k < hi; k++) {
        /* Its records are the producer's (maybe freed already): persist_seq was noted at the append. */
        if (a->unit_wait[k] && a->unit_wait[k]->persisted)
            gw_spooler_wait(a->gw->spooler, a->unit_wait[k]);
        a->unit_wait[k] = NULL;
    }
    gateway_metrics_events(&a->gw->metrics, a->protocol, n);
    if (a->principal)
        gateway_metrics_principal_events(a->principal->stats, n);
}

/* Bytes of units [lo, hi)'s records: counted in the budget before the push (the producer may take them at
 * once). */
static size_t unit_bytes(const gw_admission *a, size_t lo, size_t hi)
{
    size_t n = 0;
    for (size_t i = a->unit_first[lo]; i < a->unit_first[hi]; i++)
        n += a->msgs[i]->held;
    return n;
}

/*
 * --spool=always: every record into the spool before the queue, unit by
 * unit. From the first unit that does not go in (full: -ENOSPC), that unit
 * and the rest are refused as overloaded. 0 when all went in, else -1.
 */
static int spool_units(gw_admission *a)
{
    gw_spooler *s = a->gw->spooler;
    int rc = 0;
    size_t k;

    for (k = 0; k < a->n_units && rc == 0; k++) {
        size_t i;
        for (i = a->unit_first[k]; i < a->unit_first[k + 1]; i++)
            if (a->msgs[i]->spool_seq == 0 && (rc = gw_spooler_append(s, a->msgs[i])) != 0)
                break;
        if (rc == 0 && a->unit_wait[k] && a->unit_wait[k]->persisted && i > a->unit_first[k])
            a->unit_wait[k]->persist_seq = a->msgs[i - 1]->spool_seq;
    }
    if (rc == 0)
        return 0;
    k--;
    refuse_units(a, k, a->n_units, rc == -EPIPE ? -EPIPE : rc);
    a->n_units = k;
    a->n_msgs = a->unit_first[k];
    return -1;
}

int gw_admit_push(gw_admission *a, int keep)
{
    queue *q = a->gw->q;
    gw_budget *b = &a->gw->budget;
    int rc, failed = 0;
    size_t bytes;

    if (a->n_units == 0)
        return 0;
    if (a->gw->spooler && spool_units(a) != 0) {
        if (a->n_units == 0)
            return -1;
        failed = 1;
    }
    gw_budget_add_queued(b, bytes = unit_bytes(a, 0, a->n_units));
    rc = queue_push_n(q, (void *const *)a->msgs, a->n_msgs);
    if (rc != 0)
        gw_budget_sub_queued(b, bytes);
    if (rc == 0) {
        queued(a, 0, a->n_units);
    } else if (rc == -EAGAIN && keep) {
        return -EAGAIN;
    } else if (rc != -EPIPE && a->n_units > 1) {
        /* No room for all (-EAGAIN), or more than the queue holds (-EINVAL): each unit alone. */
        for (size_t k = 0; k < a->n_units; k++) {
            size_t n = a->unit_first[k + 1] - a->unit_first[k];
            gw_budget_add_queued(b, bytes = unit_bytes(a, k, k + 1));
            if ((rc = queue_push_n(q, (void *const *)&a->msgs[a->unit_first[k]], n)) == 0) {
                queued(a, k, k + 1);
            } else {
                gw_budget_sub_queued(b, bytes);
                refuse_units(a, k, k + 1, rc);
                failed = 1;
            }
        }
    } else {
        refuse_units(a, 0, a->n_units, rc);
        failed = 1;
    }
    a->n_msgs = 0;
    a->n_units = 0;
    return failed ? -1 : 0;
}

int gw_admit_default_committed(const gateway *gw)
{
    return strcasecmp(gw->cfg->default_ack, "accepted") != 0;
}

int gw_admit_default_persisted(const gateway *gw)
{
    return strcasecmp(gw->cfg->default_ack, "persisted") == 0;
}
