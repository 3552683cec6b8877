#include "quota.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* --- the bucket ------------------------------------------------------------------------------------ */

/* Far ahead, but far from overflowing when now is added to it: a debt beyond ~146 years is still one. */
#define MAX_AHEAD_NS ((int64_t)1 << 62)

typedef enum step_mode { GATE, TAKE, CHARGE } step_mode;

static int64_t ns_of(double ns)
{
    if (!(ns < (double)MAX_AHEAD_NS))
        return MAX_AHEAD_NS;
    return ns <= 0 ? 0 : (int64_t)llround(ns);
}

/*
 * One step of GCRA from TAT t: whether it goes, the new TAT, and how long
 * until it would (GATE, TAKE) or until the gate opens after it (CHARGE).
 */
static int step(int64_t t, const gw_rate *r, int64_t now, double n, step_mode mode, int64_t *nt,
                int64_t *wait)
{
    double per_ns = 1e9 / r->per_s, burst = r->burst < 1 ? 1 : r->burst;
    int64_t tau = ns_of(burst * per_ns), one = ns_of(per_ns);
    int64_t base = t > now ? t : now, ahead = base - now;
    int64_t cost = ns_of((mode == GATE ? 1 : n) * per_ns);
    /* More than the burst fits only in a full bucket: what must fit is at most the burst. */
    int64_t fit = mode == GATE ? one : ns_of((n < burst ? n : burst) * per_ns);

    if (ahead > MAX_AHEAD_NS - cost)
        cost = MAX_AHEAD_NS - ahead;
    if (mode != CHARGE && ahead + fit > tau) {
        *wait = ahead + fit - tau;
        return 0;
    }
    *nt = base + cost;
    if (mode == CHARGE)
        *wait = ahead + cost + one > tau ? ahead + cost + one - tau : 0;
    else
        *wait = 0;
    return 1;
}

void gw_bucket_init(gw_bucket *b)
{
    atomic_init(&b->tat, INT64_MIN / 4);
}

/* The step, applied with compare-and-swap: no lock, and no update lost to another thread's. */
static int bucket_step(gw_bucket *b, const gw_rate *r, int64_t now, double n, step_mode mode, int64_t *wait)
{
    int64_t t = atomic_load_explicit(&b->tat, memory_order_relaxed), nt;

    for (;;) {
        if (!step(t, r, now, n, mode, &nt, wait))
            return 0;
        if (mode == GATE)
            return 1;
        if (atomic_compare_exchange_weak_explicit(&b->tat, &t, nt, memory_order_relaxed,
                                                  memory_order_relaxed))
            return 1;
    }
}

int gw_bucket_gate(gw_bucket *b, const gw_rate *r, int64_t now_ns, int64_t *retry_after_ns)
{
    int64_t wait;
    int ok = bucket_step(b, r, now_ns, 1, GATE, &wait);

    if (retry_after_ns)
        *retry_after_ns = wait;
    return ok;
}

int gw_bucket_take(gw_bucket *b, const gw_rate *r, int64_t now_ns, double n, int64_t *retry_after_ns)
{
    int64_t wait;
    int ok = bucket_step(b, r, now_ns, n, TAKE, &wait);

    if (retry_after_ns)
        *retry_after_ns = wait;
    return ok;
}

int64_t gw_bucket_charge(gw_bucket *b, const gw_rate *r, int64_t now_ns, double n)
{
    int64_t wait;

    bucket_step(b, r, now_ns, n, CHARGE, &wait);
    return wait;
}

void gw_bucket_refund(gw_bucket *b, const gw_rate *r, double n)
{
    int64_t t = atomic_load_explicit(&b->tat, memory_order_relaxed), cost = ns_of(n * 1e9 / r->per_s);

    /* Below now it is just full, as max(TAT, now) reads it. */
    while (!atomic_compare_exchange_weak_explicit(&b->tat, &t, t - cost, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

long gw_retry_after_s(int64_t retry_after_ns)
{
    int64_t s = retry_after_ns / 1000000000 + (retry_after_ns % 1000000000 > 0);
    return s < 1 ? 1 : (long)s;
}

int64_t gw_quota_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* --- buckets by source address --------------------------------------------------------------------- */

typedef struct ip_set {
    atomic_flag lock;
    uint8_t used; /* a bit per way: it holds an address */
    int64_t tat[GW_IP_WAYS];
    int64_t overflow_tat; /* the set's newcomers when every way is active */
    gw_ip_key key[GW_IP_WAYS];
} ip_set;

struct gw_ip_buckets {
    ip_set *sets;
    size_t mask; /* sets - 1 */
    uint64_t seed[2];
    atomic_uint_fast64_t overflows;
};

gw_ip_buckets *gw_ip_buckets_new(size_t slots)
{
    gw_ip_buckets *t = calloc(1, sizeof(*t));
    size_t n = 1;

    if (t == NULL)
        return NULL;
    while (n * GW_IP_WAYS < slots)
        n *= 2;
    if ((t->sets = calloc(n, sizeof(*t->sets))) == NULL) {
        free(t);
        return NULL;
    }
    t->mask = n - 1;
    for (size_t i = 0; i < n; i++) {
        atomic_flag_clear(&t->sets[i].lock);
        t->sets[i].overflow_tat = INT64_MIN / 4;
    }
    if (getrandom(t->seed, sizeof(t->seed), GRND_NONBLOCK) != (ssize_t)sizeof(t->seed)) {
        /* No entropy yet (early boot): the clock and an address still differ from run to run. */
        t->seed[0] = (uint64_t)gw_quota_now_ns();
        t->seed[1] = (uint64_t)(uintptr_t)t;
    }
    atomic_init(&t->overflows, 0);
    return t;
}

void gw_ip_buckets_free(gw_ip_buckets *t)
{
    if (t == NULL)
        return;
    free(t->sets);
    free(t);
}

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void key_v4(const struct in_addr *a, gw_ip_key *k)
{
    memcpy(k->b, v4_mapped, 12);
    memcpy(k->b + 12, a, 4);
}

static void key_v6(const struct in6_addr *a, gw_ip_key *k)
{
    memcpy(k->b, a, 16);
    if (memcmp(k->b, v4_mapped, 12) != 0)
        memset(k->b + 8, 0, 8); /* the /64 */
}

int gw_ip_key_of_sockaddr(const struct sockaddr *sa, gw_ip_key *k)
{
    if (sa->sa_family == AF_INET)
        key_v4(&((const struct sockaddr_in *)sa)->sin_addr, k);
    else if (sa->sa_family == AF_INET6)
        key_v6(&((const struct sockaddr_in6 *)sa)->sin6_addr, k);
    else
        return -1;
    return 0;
}

int gw_ip_key_of_peer(const char *peer, gw_ip_key *k)
{
    char host[INET6_ADDRSTRLEN];
    const char *start = peer, *end;
    struct in_addr v4;
    struct in6_addr v6;

    if (peer == NULL)
        return -1;
    if (peer[0] == '[') {
        start = peer + 1;
        if ((end = strchr(start, ']')) == NULL)
            return -1;
    } else if ((end = strchr(peer, ':')) == NULL || strchr(end + 1, ':') != NULL) {
        end = peer + strlen(peer); /* bare: an IPv4 address without port, or an IPv6 one */
    }
    if ((size_t)(end - start) >= sizeof(host))
        return -1;
    memcpy(host, start, (size_t)(end - start));
    host[end - start] = '\0';
    if (inet_pton(AF_INET, host, &v4) == 1)
        key_v4(&v4, k);
    else if (inet_pton(AF_INET6, host, &v6) == 1)
        key_v6(&v6, k);
    else
        return -1;
    return 0;
}

static size_t set_of(const gw_ip_buckets *t, const gw_ip_key *k)
{
    uint64_t a, b, h;

    memcpy(&a, k->b, 8);
    memcpy(&b, k->b + 8, 8);
    h = (a ^ t->seed[0]) * 0x9e3779b97f4a7c15ULL;
    h ^= h >> 32;
    h = (h ^ b ^ t->seed[1]) * 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 29;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 32;
    return (size_t)h & t->mask;
}

static void set_lock(ip_set *s)
{
    unsigned spins = 0;

    while (atomic_flag_test_and_set_explicit(&s->lock, memory_order_acquire))
        if (++spins % 64 == 0)
            sched_yield(); /* the holder may be preempted: the machine may have fewer cores than threads */
}

static void set_unlock(ip_set *s)
{
    atomic_flag_clear_explicit(&s->lock, memory_order_release);
}

/* The TAT the address's step works on, under the set's lock: its way, a reused idle way, or the overflow. */
static int64_t *slot_of(gw_ip_buckets *t, ip_set *s, const gw_ip_key *k, int64_t now, step_mode mode)
{
    int free_way = -1;

    for (int w = 0; w < GW_IP_WAYS; w++) {
        if (!(s->used & (1u << w))) {
            if (free_way < 0)
                free_way = w;
            continue;
        }
        if (memcmp(&s->key[w], k, sizeof(*k)) == 0)
            return &s->tat[w];
        if (free_way < 0 && s->tat[w] <= now)
            free_way = w; /* full again: its address loses nothing if it goes */
    }
    if (mode == GATE)
        return NULL; /* a full bucket, whichever it would be, lets one in: nothing to keep for a look */
    if (free_way >= 0) {
        s->used |= (uint8_t)(1u << free_way);
        s->key[free_way] = *k;
        s->tat[free_way] = INT64_MIN / 4;
        return &s->tat[free_way];
    }
    atomic_fetch_add_explicit(&t->overflows, 1, memory_order_relaxed);
    return &s->overflow_tat;
}

static int ip_step(gw_ip_buckets *t, const gw_ip_key *k, const gw_rate *r, int64_t now, double n,
                   step_mode mode, int64_t *wait)
{
    ip_set *s = &t->sets[set_of(t, k)];
    int64_t *tat, nt;
    int ok;

    set_lock(s);
    if ((tat = slot_of(t, s, k, now, mode)) == NULL) {
        /* Not in the table: a full bucket, unless its set is full of active ones and it would share the
         * overflow. */
        int active = 0;
        for (int w = 0; w < GW_IP_WAYS; w++)
            active += (s->used & (1u << w)) && s->tat[w] > now;
        ok = active < GW_IP_WAYS ? step(INT64_MIN / 4, r, now, n, mode, &nt, wait)
                                 : step(s->overflow_tat, r, now, n, mode, &nt, wait);
        set_unlock(s);
        return ok;
    }
    if ((ok = step(*tat, r, now, n, mode, &nt, wait)) && mode != GATE)
        *tat = nt;
    set_unlock(s);
    return ok;
}

int gw_ip_buckets_gate(gw_ip_buckets *t, const gw_ip_key *k, const gw_rate *r, int64_t now_ns,
                       int64_t *retry_after_ns)
{
    int64_t wait;
    int ok = ip_step(t, k, r, now_ns, 1, GATE, &wait);

    if (retry_after_ns)
        *retry_after_ns = wait;
    return ok;
}

int gw_ip_buckets_take(gw_ip_buckets *t, const gw_ip_key *k, const gw_rate *r, int64_t now_ns, double n,
                       int64_t *retry_after_ns)
{
    int64_t wait;
    int ok = ip_step(t, k, r, now_ns, n, TAKE, &wait);

    if (retry_after_ns)
        *retry_after_ns = wait;
    return ok;
}

int64_t gw_ip_buckets_charge(gw_ip_buckets *t, const gw_ip_key *k, const gw_rate *r, int64_t now_ns, double n)
{
    int64_t wait;

    ip_step(t, k, r, now_ns, n, CHARGE, &wait);
    return wait;
}

void gw_ip_buckets_refund(gw_ip_buckets *t, const gw_ip_key *k, const gw_rate *r, double n)
{
    ip_set *s = &t->sets[set_of(t, k)];

    set_lock(s);
    for (int w = 0; w < GW_IP_WAYS; w++)
        if ((s->used & (1u << w)) && memcmp(&s->key[w], k, sizeof(*k)) == 0) {
            s->tat[w] -= ns_of(n * 1e9 / r->per_s);
            break;
        }
    set_unlock(s);
}

size_t gw_ip_buckets_used(gw_ip_buckets *t)
{
    size_t n = 0;

    for (size_t i = 0; i <= t->mask; i++) {
        set_lock(&t->sets[i]);
        n += (size_t)__builtin_popcount(t->sets[i].used);
        set_unlock(&t->sets[i]);
    }
    return n;
}

uint64_t gw_ip_buckets_overflows(gw_ip_buckets *t)
{
    return atomic_load_explicit(&t->overflows, memory_order_relaxed);
}

/* --- a limit, as admission applies it -------------------------------------------------------------- */

int gw_limit_gate(const gw_limit *l, const gw_ip_key *k, int64_t now_ns, int64_t *retry_after_ns)
{
    if (!gw_limit_active(l) || (l->bucket == NULL && k == NULL))
        return 1;
    return l->bucket ? gw_bucket_gate(l->bucket, &l->rate, now_ns, retry_after_ns)
                     : gw_ip_buckets_gate(l->ips, k, &l->rate, now_ns, retry_after_ns);
}

int gw_limit_take(const gw_limit *l, const gw_ip_key *k, int64_t now_ns, double n, int64_t *retry_after_ns)
{
    if (!gw_limit_active(l) || (l->bucket == NULL && k == NULL) || n <= 0)
        return 1;
    return l->bucket ? gw_bucket_take(l->bucket, &l->rate, now_ns, n, retry_after_ns)
                     : gw_ip_buckets_take(l->ips, k, &l->rate, now_ns, n, retry_after_ns);
}

int64_t gw_limit_charge(const gw_limit *l, const gw_ip_key *k, int64_t now_ns, double n)
{
    if (!gw_limit_active(l) || (l->bucket == NULL && k == NULL) || n <= 0)
        return 0;
    return l->bucket ? gw_bucket_charge(l->bucket, &l->rate, now_ns, n)
                     : gw_ip_buckets_charge(l->ips, k, &l->rate, now_ns, n);
}

void gw_limit_refund(const gw_limit *l, const gw_ip_key *k, double n)
{
    if (!gw_limit_active(l) || (l->bucket == NULL && k == NULL) || n <= 0)
        return;
    if (l->bucket)
        gw_bucket_refund(l->bucket, &l->rate, n);
    else
        gw_ip_buckets_refund(l->ips, k, &l->rate, n);
}
