/*
 * Token-bucket quotas (issue 15): a principal's events a second and bytes a
 * second, and the same per source address for `anonymous`.
 *
 * A bucket is GCRA, the "virtual scheduling" form of a token bucket: one
 * number, the theoretical arrival time (TAT) of the next event, in one
 * atomic int64 changed with compare-and-swap. Every thread of every front
 * end shares a principal's bucket with no lock, and a bucket takes 8 bytes.
 *
 * With T = 1 s / per_s (the time one event's token takes to come back) and
 * tau = burst * T: the bucket is full when TAT <= now; taking n events moves
 * TAT to max(TAT, now) + n * T, allowed when that is at most now + tau.
 * Time is the caller's (monotonic ns); a `now` older than another thread's
 * (threads read the clock at different moments) or going backwards is
 * harmless: max() only ever keeps the later TAT, so nothing is given back,
 * and a huge gap merely fills the bucket (to burst, never beyond).
 *
 * The admission stage gates before parsing and knows the event count only
 * after, so there are three operations:
 *   gw_bucket_gate():   before parsing: refuses when the bucket has no room
 *                       for even one event. Changes nothing.
 *   gw_bucket_take():   after parsing: n events, all or none.
 *   gw_bucket_charge(): n events, always: for what was read already and is
 *                       taken anyway (a gRPC stream's message). The bucket
 *                       goes into debt, and its gate refuses until paid:
 *                       the stream is held back, not failed.
 *
 * A request of more events than the burst could never fit: it is taken
 * when the bucket is full, and leaves it in debt for the excess (so the
 * average rate still holds, and such a client waits longer for its next
 * request). The alternative, refusing it forever, would make a client's
 * fixed batch size a permanent failure for a quota that allows its rate.
 */
#ifndef INGEST_GATEWAY_QUOTA_H
#define INGEST_GATEWAY_QUOTA_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A limit: per_s a second, up to burst at once. per_s <= 0: unlimited. burst < 1 counts as 1. */
typedef struct gw_rate {
    double per_s;
    double burst;
} gw_rate;

typedef struct gw_bucket {
    _Atomic int64_t tat; /* ns; 0 (or anything <= now): full */
} gw_bucket;

/* Starts full. */
void gw_bucket_init(gw_bucket *b);

/*
 * 1 when there is room for at least one event now; else 0 and, when
 * retry_after_ns is not NULL, how long until there is.
 */
int gw_bucket_gate(gw_bucket *b, const gw_rate *r, int64_t now_ns, int64_t *retry_after_ns);

/* Take n (> 0) events: 1 when taken; else 0, nothing taken, and how long until they fit. */
int gw_bucket_take(gw_bucket *b, const gw_rate *r, int64_t now_ns, double n, int64_t *retry_after_ns);

/* Take n events whether they fit or not; how long until the gate lets the next one in (0: at once). */
int64_t gw_bucket_charge(gw_bucket *b, const gw_rate *r, int64_t now_ns, double n);

/* Give back n events taken (never to more than full). */
void gw_bucket_refund(gw_bucket *b, const gw_rate *r, double n);

/* What to tell a client in Retry-After: whole seconds, rounded up, at least 1. */
long gw_retry_after_s(int64_t retry_after_ns);

/*
 * Buckets per source address, in fixed memory chosen at creation. An IPv6
 * address is keyed by its /64 (one host's usual share, and what a host can
 * rotate through at will); an IPv4 address by all of it.
 *
 * The table is set-associative: an address hashes (keyed with a random
 * seed, so senders cannot aim at one set) to a set of GW_IP_WAYS slots,
 * each set under its own tiny lock, held only for the few compares and the
 * bucket's update; there is no global lock. A slot whose bucket is full
 * again holds nothing worth keeping: it is reused for a new address then.
 *
 * When a new address finds every slot of its set active (not full: they
 * sent within the last burst/per_s seconds), no one's bucket is evicted,
 * so no one escapes a quota by pushing others out (an evicted flooder would
 * come back with a full bucket). The newcomers of that set share its one
 * overflow bucket instead, limited together at one address's rate, until a
 * slot falls idle. Memory stays bounded; a flooder stays limited, in its
 * own slot or the overflow; the cost of a table too small for the active
 * senders falls on newcomers to crowded sets.
 */
#define GW_IP_WAYS 8

typedef struct gw_ip_key {
    uint8_t b[16]; /* IPv4 as ::ffff:a.b.c.d; IPv6 with its low 64 bits zeroed */
} gw_ip_key;

typedef struct gw_ip_buckets gw_ip_buckets;

/* A table of about `slots` buckets (rounded up to a power of two sets of GW_IP_WAYS); NULL without memory. */
gw_ip_buckets *gw_ip_buckets_new(size_t slots);
void gw_ip_buckets_free(gw_ip_buckets *t);

/* The key of a socket address (AF_INET, AF_INET6; IPv4-mapped IPv6 is IPv4). 0, or -1 for another family. */
int gw_ip_key_of_sockaddr(const struct sockaddr *sa, gw_ip_key *k);
/* The key of a peer as the front ends write it: "1.2.3.4:5", "[::1]:5", or a bare address. 0 or -1. */
int gw_ip_key_of_peer(const char *peer, gw_ip_key *k);

/* gw_bucket_gate/take/charge on the address's bucket (found or made; see above when the set is full). */
int gw_ip_buckets_gate(gw_ip_buckets *t, const gw_ip_key *k, const gw_rate *r, int64_t now_ns,
                       int64_t *retry_after_ns);
int gw_ip_buckets_take(gw_ip_buckets *t, const gw_ip_key *k, const gw_rate *r, int64_t now_ns, double n,
                       int64_t *retry_after_ns);
int64_t gw_ip_buckets_charge(gw_ip_buckets *t, const gw_ip_key *k, const gw_rate *r, int64_t now_ns,
                             double n);
void gw_ip_buckets_refund(gw_ip_buckets *t, const gw_ip_key *k, const gw_rate *r, double n);

/* For tests and metrics: slots holding an address now (some may be idle, not yet reused); overflow uses. */
size_t gw_ip_buckets_used(gw_ip_buckets *t);
uint64_t gw_ip_buckets_overflows(gw_ip_buckets *t);

/*
 * One quota as the admission stage applies it: a shared bucket (a
 * principal's), or a table of them by source address (`anonymous`), with
 * its rate. Neither set, or per_s <= 0: no quota.
 */
typedef struct gw_limit {
    gw_bucket *bucket;
    gw_ip_buckets *ips;
    gw_rate rate;
} gw_limit;

static inline int gw_limit_active(const gw_limit *l)
{
    return (l->bucket || l->ips) && l->rate.per_s > 0;
}

/* The operations above on a limit; `k` is used with ips (NULL there: unlimited, nothing to key on). */
int gw_limit_gate(const gw_limit *l, const gw_ip_key *k, int64_t now_ns, int64_t *retry_after_ns);
int gw_limit_take(const gw_limit *l, const gw_ip_key *k, int64_t now_ns, double n, int64_t *retry_after_ns);
int64_t gw_limit_charge(const gw_limit *l, const gw_ip_key *k, int64_t now_ns, double n);
/* Give back n events just taken (a request refused on another limit after this one took it). */
void gw_limit_refund(const gw_limit *l, const gw_ip_key *k, double n);

/* CLOCK_MONOTONIC in ns, the clock the admission stage gives buckets. */
int64_t gw_quota_now_ns(void);

#endif
