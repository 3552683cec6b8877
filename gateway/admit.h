/*
 * One admission stage for every protocol. Each request (an HTTP request, a
 * UDP datagram, a gRPC message) goes through it in this order:
 *
 *   1. gw_admit_gate():    can we take it at all: the caller's identity (the
 *                          hook where quotas will go too), the stop, overload.
 *                          Nothing is parsed yet, so a refusal here is cheap.
 *   2. gw_admit_prepare(): the front end's parser turns the bytes into events;
 *                          then every event is validated (common/), given an
 *                          id, and encoded into its Envelope and Kafka record.
 *   3. gw_admit_push():    into the shared queue, all or nothing per request.
 *
 * and every step counts what it decides in the metrics, so the front ends
 * hold no validation, id, encoding or metrics code of their own: they read
 * bytes, call these, and answer in their protocol.
 *
 * The event index rule, the same on every protocol: in a request whose form
 * can carry several events (an HTTP batch or NDJSON body, a UDP JSON
 * datagram, which is NDJSON, any gRPC PublishRequest), a refusal that is one
 * event's fault names it by its 0-based position in the request; a form
 * that carries exactly one event (HTTP's single-event and binary modes, a
 * UDP protobuf datagram) names none, and neither does a refusal of the
 * request as a whole (index -1).
 *
 * A gw_admission is one request on its way in, owned by the thread that
 * handles it (no lock): HTTP's I/O loop, a UDP receive thread, a gRPC call
 * under its lock. UDP puts a whole recvmmsg batch in one admission, one
 * "unit" per datagram, and pushes them with one queue operation; each unit
 * is still all or nothing.
 */
#ifndef INGEST_GATEWAY_ADMIT_H
#define INGEST_GATEWAY_ADMIT_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "event.h"
#include "gateway.h"
#include "producer.h"
#include "quota.h"
#include "reason.h"

/* Why a request was refused: what the front end tells its client. */
typedef struct gw_refusal {
    gw_reason reason;
    long index;         /* the event at fault (the index rule above), or -1 */
    long retry_after_s; /* when to retry, from a quota's bucket; 0: none of its own (--retry-after) */
    char message[300];
} gw_refusal;

/* One event refused, where a protocol lists them all (gRPC's PublishResponse.errors). */
typedef struct gw_event_error {
    uint32_t index;
    gw_reason reason;
    char message[256];
} gw_event_error;

/* What the caller showed of who it is; NULL members: not shown. */
typedef struct gw_credentials {
    const char *authorization; /* the Authorization header or metadata value */
    size_t authorization_len;
    const gw_peer_cert *cert; /* the verified TLS client certificate */
} gw_credentials;

typedef struct gw_admission gw_admission;

/*
 * A front end's parser: the request's events into a->batch (added with
 * ing_event_batch_add(), in request order), reading gw->lim for the limits.
 * It sets a->multi when the request's form can carry several events (the
 * index rule), and may set a->committed (the request's ack level). Returns 0; -ENOMEM;
 * or -EINVAL after gw_admission_refuse() / gw_admission_refuse_error() for a
 * fault of the request (or of one event, when it stops at the first). A
 * protocol that reports every bad event (a->all_errors) records each with
 * gw_admission_event_error() and returns 0.
 */
typedef int (*gw_parse_fn)(gw_admission *a, void *arg);

struct gw_admission {
    gateway *gw;
    gw_protocol protocol;
    const char *peer; /* the client's "ip:port", into the Envelope; the caller keeps it alive */
    /*
     * Who the caller is, set by the gate (or by gw_admission_set_principal()):
     * holds a reference on its gw_auth until the admission is cleared or
     * reset, so a reload does not change the rules of a request in flight.
     * NULL: no auth installed (everything allowed).
     */
    const gw_principal *principal;
    uint64_t started_ns; /* prom_now_ns() at the request's arrival, for the latency histogram */
    int64_t received_ns; /* wall clock at arrival, into the Envelope */

    /* Set by the caller before gw_admit_prepare(): */
    int committed;    /* make an ack_wait for the records (the parser may change it) */
    int persisted;    /* with committed: ack=persisted, the wait ends once the spool has them (spooler.h) */
    ack_inbox *inbox; /* the ack_wait's loop (NULL: done runs on the reporting thread) */
    void (*done)(ack_wait *w);
    int all_errors; /* validate every event and list each bad one in errors */
    int multi;      /* set by the parser: the request's form can carry several events (index rule) */
    /* Called for every refusal the stage decides (UDP logs drops with it); may be NULL. */
    void (*on_refused)(gw_admission *a, const char *peer, const gw_refusal *r);
    void *user;

    /*
     * Quotas (quota.h): set with gw_admission_set_quota() once the caller is
     * known; inactive limits (the default) cost nothing. The gate refuses
     * (rate_limited) when a bucket has no room for one more event or byte;
     * prepare takes the request's events and bytes after parsing, all or
     * none. With quota_debt (a gRPC stream, which holds back its reads
     * instead of failing) neither refuses: prepare charges the bucket into
     * debt and quota_wait_ns says how long the next read should wait.
     */
    gw_limit q_events, q_bytes;
    gw_ip_key q_ip;        /* the source address, for per-address limits */
    int q_has_ip;          /* q_ip is set (gw_admission_set_source(), or parsed from peer at the gate) */
    int quota_debt;        /* set by the caller: charge, never refuse, for quotas */
    size_t request_bytes;  /* set by the caller before prepare: the body's or message's bytes, for q_bytes */
    int64_t quota_wait_ns; /* result, with quota_debt: hold the next read this long (0: read on) */

    /* Results: */
    gw_refusal refusal;     /* when a step returned -1: why */
    ing_event_batch batch;  /* the last prepared unit's events, valid and with ids */
    ack_wait *wait;         /* the last prepared unit's, when committed: set w->ctx before pushing */
    gw_event_error *errors; /* with all_errors: every bad event of the last unit, by index */
    size_t n_errors, cap_errors;

    /* The records made so far, unit after unit; what was not queued is freed by gw_admission_clear(). */
    produce_msg **msgs;
    size_t n_msgs, cap_msgs;
    size_t *unit_first; /* unit k's records are msgs[unit_first[k] .. unit_first[k + 1]) */
    const char **unit_peer;
    ack_wait **unit_wait;
    size_t n_units, cap_units;
};

/* A new admission for one request (or, for UDP, one batch of datagrams). */
void gw_admission_init(gw_admission *a, gateway *gw, gw_protocol p, const char *peer, uint64_t started_ns);
/* Free everything not queued: the events, records, waits. The admission may be initialized again. */
void gw_admission_clear(gw_admission *a);
/* Drop what was not queued and start the next request, keeping the memory (a UDP thread's next batch). */
void gw_admission_reset(gw_admission *a, uint64_t started_ns);

/*
 * A principal identified earlier (a gRPC call's, for each of its messages;
 * an HTTP request's, from its headers to its body): the admission takes
 * over the reference. Take it back (the caller then releases it) with
 * gw_admission_take_principal().
 */
void gw_admission_set_principal(gw_admission *a, const gw_principal *p);
const gw_principal *gw_admission_take_principal(gw_admission *a);
/* Let go of a principal's reference (NULL: nothing). */
void gw_principal_release(const gw_principal *p);
/* Another reference on p's gw_auth; returns p. */
const gw_principal *gw_principal_hold(const gw_principal *p);

/*
 * 1. Can the gateway take this request at all. First who the caller is
 * (auth.h): its token, else its certificate, else `anonymous`; `cred` NULL:
 * the protocol carries no identity (UDP: always anonymous). Skipped when the
 * admission has its principal already. Unknown token or nobody: unauthorized;
 * a protocol the principal may not use: forbidden.
 * `may_wait`: the caller holds the request back itself while the queue is
 * above its high-water mark (a gRPC stream parks), so overload is no
 * refusal here. 0, or -1 with a->refusal set (unauthorized, forbidden,
 * shutting_down, overloaded) and counted.
 */
int gw_admit_gate(gw_admission *a, const gw_credentials *cred, int may_wait);

/*
 * 2. Parse with `parse`, then validate, give ids and encode every event:
 * a new unit of records, all of the request's or none. An event whose
 * source the principal may not use is refused as forbidden (the index rule). 0; or -1 with
 * a->refusal set and counted (with all_errors, a->errors lists every bad
 * event and refusal names the first). A request without events is refused
 * unless `may_be_empty` (a stream's empty request is acknowledged empty).
 */
int gw_admit_prepare(gw_admission *a, gw_parse_fn parse, void *arg, int may_be_empty);

/*
 * 3. Queue every unit prepared, each all or nothing, with one queue
 * operation when they all fit. 0 when all went in (counted); -EAGAIN when
 * the queue had no room and `keep` asked to keep them for another try
 * (a gRPC stream holds its request); else -1: the units that did not fit
 * are refused (overloaded, shutting_down), counted and freed, each reported
 * to on_refused, and a->refusal says why (for a single unit).
 */
int gw_admit_push(gw_admission *a, int keep);

/*
 * The caller's quotas: an event limit and a byte limit (either NULL or
 * inactive: none). For a principal, its shared buckets; for `anonymous`,
 * its tables by source address. Before gw_admit_gate() (or, from the
 * identification inside it, before its quota step).
 */
void gw_admission_set_quota(gw_admission *a, const gw_limit *events, const gw_limit *bytes);
/* The source address, for per-address limits (UDP, a datagram at a time); else parsed from a->peer. */
void gw_admission_set_source(gw_admission *a, const struct sockaddr *sa);

/*
 * The quota steps, called by gw_admit_gate() and gw_admit_prepare() (exposed
 * for tests and for a front end that must check again, e.g. a held request):
 * the gate (room for one more event and byte?) and the charge of n events
 * and a->request_bytes after parsing. 0; or -1 with a->refusal set
 * (rate_limited, retry_after_s from the bucket) and counted.
 */
int gw_admit_rate_gate(gw_admission *a);
int gw_admit_rate_charge(gw_admission *a, size_t n_events);

/* For a front end's parser: refuse the request (index -1) or one event. Returns -EINVAL. */
int gw_admission_refuse(gw_admission *a, gw_reason reason, long index, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int gw_admission_refuse_error(gw_admission *a, const ing_event_error *err);
/* For a front end's parser, with all_errors: event `index` is bad. 0 or -ENOMEM. */
int gw_admission_event_error(gw_admission *a, size_t index, const ing_event_error *err);

/*
 * Counting what the front end found or finished itself: a refusal it
 * decided (404, 405, an ack timeout, a Kafka error...), and the answer of a
 * request (its latency, from started_ns; 0 for none). Every request is
 * answered exactly once; a refusal is counted once, by whoever decides it.
 */
void gw_admit_count_refused(gateway *gw, gw_protocol p, gw_reason reason);
void gw_admit_count_answered(gateway *gw, gw_protocol p, uint64_t started_ns, size_t n);

/* The ack level a request gets when it names none (--default-ack): committed (or persisted), and persisted.
 */
int gw_admit_default_committed(const gateway *gw);
int gw_admit_default_persisted(const gateway *gw);

#endif
