/*
 * gateway/quota: the GCRA bucket's arithmetic (rate, burst, retry-after, a
 * request over the burst, time going backwards, huge gaps), that threads
 * sharing one bucket lose no update, the table of buckets by source
 * address (distinct keys, idle slots reused, a full table bounded with a
 * flooder still limited), and the admission stage's quota steps.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "admit.h"
#include "grpc_prot.h"
#include "quota.h"

#define S  1000000000LL
#define MS 1000000LL

/* A start far from 0, as the monotonic clock is. */
#define T0 (1000 * S)

static void test_bucket_rate_and_burst(void **state)
{
    gw_rate r = {10, 5}; /* 10/s, burst 5 */
    gw_bucket b;
    int64_t wait = -1;
    int n = 0;
    (void)state;

    gw_bucket_init(&b);
    while (gw_bucket_take(&b, &r, T0, 1, &wait))
        n++;
    assert_int_equal(n, 5); /* full: the burst at once */
    assert_int_equal(wait, 100 * MS);
    assert_int_equal(gw_retry_after_s(wait), 1);
    assert_false(gw_bucket_gate(&b, &r, T0 + 99 * MS, &wait));
    assert_int_equal(wait, 1 * MS);
    assert_true(gw_bucket_gate(&b, &r, T0 + 100 * MS, NULL));
    /* One second: ten more, no more. */
    n = 0;
    for (int64_t t = T0; t <= T0 + S; t += MS)
        while (gw_bucket_take(&b, &r, t, 1, NULL))
            n++;
    assert_int_equal(n, 10);
    /* Three at once need 300 ms of tokens beyond what came back. */
    assert_false(gw_bucket_take(&b, &r, T0 + S, 3, &wait));
    assert_int_equal(wait, 300 * MS);
    assert_true(gw_bucket_take(&b, &r, T0 + S + 300 * MS, 3, NULL));
    /* A gate looks, never takes. */
    for (int i = 0; i < 100; i++)
        assert_true(gw_bucket_gate(&b, &r, T0 + 10 * S, NULL));
    n = 0;
    while (gw_bucket_take(&b, &r, T0 + 10 * S, 1, NULL))
        n++;
    assert_int_equal(n, 5);
}

static void test_bucket_over_burst_and_charge(void **state)
{
    gw_rate r = {100, 10};
    gw_bucket b;
    int64_t wait;
    (void)state;

    gw_bucket_init(&b);
    /* 50 > burst: taken only from a full bucket, leaving it 40 events in debt. */
    assert_true(gw_bucket_take(&b, &r, T0, 1, NULL));
    assert_false(gw_bucket_take(&b, &r, T0, 50, &wait));
    assert_int_equal(wait, 10 * MS); /* until full again */
    assert_true(gw_bucket_take(&b, &r, T0 + 10 * MS, 50, NULL));
    assert_false(gw_bucket_gate(&b, &r, T0 + 10 * MS, &wait));
    assert_int_equal(wait, 410 * MS); /* the 40 over, then one token */
    assert_true(gw_bucket_gate(&b, &r, T0 + 420 * MS, NULL));
    /* A charge always goes through, and says how long the next read waits. */
    gw_bucket_init(&b);
    assert_int_equal(gw_bucket_charge(&b, &r, T0, 5), 0);
    assert_int_equal(gw_bucket_charge(&b, &r, T0, 5), 10 * MS);
    assert_int_equal(gw_bucket_charge(&b, &r, T0, 30), 310 * MS);
    assert_false(gw_bucket_gate(&b, &r, T0 + 309 * MS, NULL));
    assert_true(gw_bucket_gate(&b, &r, T0 + 310 * MS, NULL));
    /* A refund gives back what was taken. */
    gw_bucket_init(&b);
    assert_true(gw_bucket_take(&b, &r, T0, 10, NULL));
    assert_false(gw_bucket_gate(&b, &r, T0, NULL));
    gw_bucket_refund(&b, &r, 4);
    assert_true(gw_bucket_take(&b, &r, T0, 4, NULL));
    assert_false(gw_bucket_gate(&b, &r, T0, NULL));
    /* Burst below 1 counts as 1. */
    gw_rate tiny = {0.5, 0};
    gw_bucket_init(&b);
    assert_true(gw_bucket_take(&b, &tiny, T0, 1, NULL));
    assert_false(gw_bucket_take(&b, &tiny, T0 + S, 1, &wait));
    assert_int_equal(wait, S);
    assert_int_equal(gw_retry_after_s(wait), 1);
    assert_int_equal(gw_retry_after_s(S + 1), 2);
    assert_int_equal(gw_retry_after_s(0), 1);
}

static void test_bucket_clock_oddities(void **state)
{
    gw_rate r = {10, 2};
    gw_bucket b;
    int n = 0;
    (void)state;

    gw_bucket_init(&b);
    assert_true(gw_bucket_take(&b, &r, T0 + S, 2, NULL));
    /* Time going backwards (another thread's older reading): nothing is given back. */
    for (int64_t t = T0 + S; t > T0; t -= 50 * MS)
        n += gw_bucket_take(&b, &r, t, 1, NULL);
    assert_int_equal(n, 0);
    /* A huge gap fills the bucket to its burst, never beyond. */
    n = 0;
    while (gw_bucket_take(&b, &r, T0 + 1000000 * S, 1, NULL))
        n++;
    assert_int_equal(n, 2);
    /* A huge request at a tiny rate saturates, it does not overflow. */
    gw_rate slow = {1e-6, 1};
    gw_bucket_init(&b);
    assert_true(gw_bucket_take(&b, &slow, T0, 1e12, NULL));
    int64_t wait;
    assert_false(gw_bucket_take(&b, &slow, T0, 1, &wait));
    assert_true(wait > 0);
    assert_true(gw_bucket_charge(&b, &slow, T0, 1e12) > 0);
}

/* --- threads on one bucket ------------------------------------------------------------------------- */

typedef struct hammer {
    gw_bucket *b;
    gw_rate r;
    int64_t end;
    int step;
    long admitted;
} hammer;

/* Walks simulated time in its own steps (threads read clocks at different moments), taking one at a time. */
static void *hammer_main(void *arg)
{
    hammer *h = arg;

    for (int64_t t = T0; t <= h->end; t += h->step)
        for (int k = 0; k < 3; k++)
            h->admitted += gw_bucket_take(h->b, &h->r, t, 1, NULL);
    /* Drain at the end: the bucket's last tokens go to whoever asks. */
    while (gw_bucket_take(h->b, &h->r, h->end, 1, NULL))
        h->admitted++;
    return NULL;
}

static void test_bucket_threads(void **state)
{
    gw_bucket b;
    hammer h[8];
    pthread_t tid[8];
    long total = 0;
    (void)state;

    for (int threads = 2; threads <= 8; threads *= 2) {
        gw_bucket_init(&b);
        total = 0;
        for (int i = 0; i < threads; i++) {
            h[i] = (hammer){&b, {1000, 50}, T0 + 20 * S, 97 * 1000 + 1000 * i, 0};
            assert_int_equal(pthread_create(&tid[i], NULL, hammer_main, &h[i]), 0);
        }
        for (int i = 0; i < threads; i++) {
            pthread_join(tid[i], NULL);
            total += h[i].admitted;
        }
        /* rate * time + burst: 1000/s * 20 s + 50, lost updates would add, rounding may take one. */
        assert_true(total <= 20050);
        assert_true(total >= 20049);
    }
}

/* --- the table by source address ------------------------------------------------------------------- */

static gw_ip_key key4(const char *a)
{
    gw_ip_key k;
    assert_int_equal(gw_ip_key_of_peer(a, &k), 0);
    return k;
}

static void test_ip_keys(void **state)
{
    gw_ip_key a, b;
    struct sockaddr_in sin = {.sin_family = AF_INET};
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    (void)state;

    a = key4("127.0.0.1:5000");
    b = key4("127.0.0.1");
    assert_memory_equal(&a, &b, sizeof(a));
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    assert_int_equal(gw_ip_key_of_sockaddr((struct sockaddr *)&sin, &b), 0);
    assert_memory_equal(&a, &b, sizeof(a));
    /* IPv4-mapped IPv6 is the IPv4 address. */
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6.sin6_addr);
    assert_int_equal(gw_ip_key_of_sockaddr((struct sockaddr *)&sin6, &b), 0);
    assert_memory_equal(&a, &b, sizeof(a));
    b = key4("127.0.0.2:5000");
    assert_memory_not_equal(&a, &b, sizeof(a));
    /* IPv6 by /64. */
    a = key4("[2001:db8::1]:443");
    b = key4("2001:db8::ffff:1");
    assert_memory_equal(&a, &b, sizeof(a));
    b = key4("[2001:db8:0:1::1]:443");
    assert_memory_not_equal(&a, &b, sizeof(a));
    assert_int_equal(gw_ip_key_of_peer("unknown", &a), -1);
    assert_int_equal(gw_ip_key_of_peer("[::1", &a), -1);
    assert_int_equal(gw_ip_key_of_peer(NULL, &a), -1);
    sin.sin_family = AF_UNIX;
    assert_int_equal(gw_ip_key_of_sockaddr((struct sockaddr *)&sin, &a), -1);
}

static void test_ip_distinct_and_reclaimed(void **state)
{
    gw_ip_buckets *t = gw_ip_buckets_new(4096), *one = gw_ip_buckets_new(GW_IP_WAYS);
    gw_rate r = {10, 2};
    char peer[64];
    gw_ip_key k;
    (void)state;

    assert_non_null(t);
    assert_non_null(one);
    /* 40 addresses, IPv4 and IPv6: each has its own burst. */
    for (int i = 0; i < 40; i++) {
        if (i % 2)
            snprintf(peer, sizeof(peer), "10.0.0.%d:1", i);
        else
            snprintf(peer, sizeof(peer), "[2001:db8:%x::1]:1", i);
        k = key4(peer);
        assert_true(gw_ip_buckets_gate(t, &k, &r, T0, NULL));
        assert_true(gw_ip_buckets_take(t, &k, &r, T0, 2, NULL));
        assert_false(gw_ip_buckets_take(t, &k, &r, T0, 1, NULL));
    }
    assert_int_equal(gw_ip_buckets_used(t), 40);
    assert_int_equal(gw_ip_buckets_overflows(t), 0);
    /* A gate does not make a slot. */
    k = key4("192.0.2.1:1");
    assert_true(gw_ip_buckets_gate(t, &k, &r, T0, NULL));
    assert_int_equal(gw_ip_buckets_used(t), 40);
    /* One set: its addresses' buckets full again, new addresses take their slots, none share the overflow. */
    for (int round = 0; round < 5; round++)
        for (int i = 0; i < GW_IP_WAYS; i++) {
            snprintf(peer, sizeof(peer), "10.1.%d.%d:1", round, i);
            k = key4(peer);
            assert_true(gw_ip_buckets_take(one, &k, &r, T0 + round * S, 2, NULL));
            assert_false(gw_ip_buckets_take(one, &k, &r, T0 + round * S, 1, NULL));
        }
    assert_int_equal(gw_ip_buckets_used(one), GW_IP_WAYS);
    assert_int_equal(gw_ip_buckets_overflows(one), 0);
    gw_ip_buckets_free(t);
    gw_ip_buckets_free(one);
}

static void test_ip_full_table_bounded_flooder_limited(void **state)
{
    gw_ip_buckets *t = gw_ip_buckets_new(GW_IP_WAYS); /* one set */
    gw_rate r = {10, 10};
    gw_ip_key flooder = key4("198.51.100.7:9"), k;
    char peer[64];
    long admitted = 0;
    (void)state;

    assert_non_null(t);
    assert_true(gw_ip_buckets_take(t, &flooder, &r, T0, 10, NULL));
    /* 1000 other active senders: the table stays at its size, the rest share the overflow. */
    for (int i = 0; i < 1000; i++) {
        snprintf(peer, sizeof(peer), "10.2.%d.%d:1", i / 250, i % 250);
        k = key4(peer);
        gw_ip_buckets_take(t, &k, &r, T0, 1, NULL);
    }
    assert_int_equal(gw_ip_buckets_used(t), GW_IP_WAYS);
    assert_true(gw_ip_buckets_overflows(t) > 0);
    /* The flooder kept its slot (never evicted while active): over 10 s it gets 10/s and no more. */
    for (int64_t ts = T0; ts <= T0 + 10 * S; ts += 10 * MS) {
        for (int j = 0; j < 10; j++)
            admitted += gw_ip_buckets_take(t, &flooder, &r, ts, 1, NULL);
        /* Newcomers keep the set crowded all along. */
        snprintf(peer, sizeof(peer), "10.3.%d.%d:1", (int)((ts / MS) % 250), (int)((ts / (10 * MS)) % 250));
        k = key4(peer);
        gw_ip_buckets_take(t, &k, &r, ts, 1, NULL);
    }
    assert_int_equal(admitted, 100); /* 10 s * 10/s; its burst was spent before */
    gw_ip_buckets_free(t);
}

/* --- the admission stage's quota steps ------------------------------------------------------------- */

static gateway_config cfg = {.default_ack = "accepted", .gateway_id = "gw-test", .auth_token = ""};
static gateway gw;

static int setup(void **state)
{
    (void)state;
    memset(&gw, 0, sizeof(gw));
    gw.cfg = &cfg;
    ing_event_limits_default(&gw.lim);
    gw.q = queue_new(64, 48);
    return gw.q ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    queue_close(gw.q);
    queue_free(gw.q);
    return 0;
}

static void test_admit_rate_gate_and_charge(void **state)
{
    gw_bucket events;
    gw_limit l = {.bucket = &events, .rate = {1, 3}}; /* 1/s: a retry-after of whole seconds */
    gw_admission a;
    (void)state;

    gw_bucket_init(&events);
    gw_admission_init(&a, &gw, GW_HTTP, "127.0.0.1:1", 0);
    gw_admission_set_quota(&a, &l, NULL);
    assert_int_equal(gw_admit_rate_gate(&a), 0);
    assert_int_equal(gw_admit_rate_charge(&a, 3), 0);
    assert_int_equal(gw_admit_rate_gate(&a), -1);
    assert_int_equal(a.refusal.reason, GW_R_rate_limited);
    assert_int_equal(a.refusal.index, -1);
    assert_true(a.refusal.retry_after_s >= 1 && a.refusal.retry_after_s <= 1);
    assert_non_null(strstr(a.refusal.message, "retry in 1 s"));
    assert_int_equal(gateway_metrics_refused_count(&gw.metrics, GW_HTTP, GW_R_rate_limited), 1);
    /* A charge that does not fit is refused, and takes nothing. */
    gw_bucket_init(&events);
    assert_int_equal(gw_admit_rate_charge(&a, 2), 0);
    assert_int_equal(gw_admit_rate_charge(&a, 2), -1);
    assert_int_equal(a.refusal.retry_after_s, 1);
    assert_int_equal(gw_admit_rate_charge(&a, 1), 0);
    /* With quota_debt (a stream): never refused; the wait comes back instead. */
    a.quota_debt = 1;
    assert_int_equal(gw_admit_rate_gate(&a), 0);
    assert_true(a.quota_wait_ns > 0);
    assert_int_equal(gw_admit_rate_charge(&a, 5), 0);
    assert_true(a.quota_wait_ns > 5 * S);
    assert_int_equal(gateway_metrics_refused_count(&gw.metrics, GW_HTTP, GW_R_rate_limited), 2);
    gw_admission_clear(&a);
}

/* What each protocol says for it: HTTP 429, gRPC RESOURCE_EXHAUSTED with the wait in its message. */
static void test_rate_limited_answers(void **state)
{
    gw_refusal r = {.reason = GW_R_rate_limited, .index = -1, .retry_after_s = 3};
    char msg[400];
    (void)state;

    assert_string_equal(gw_reasons[GW_R_rate_limited].name, "rate_limited");
    assert_int_equal(gw_reasons[GW_R_rate_limited].http_status, 429);
    assert_int_equal(gw_reasons[GW_R_rate_limited].grpc_status, 8);
    assert_int_equal(gw_reasons[GW_R_rate_limited].dropped, 0);
    snprintf(r.message, sizeof(r.message), "over the quota of 5 events a second (burst 5); retry in 3 s");
    gw_grpc_prot_status_message(&r, 0, msg, sizeof(msg));
    assert_string_equal(msg, "rate_limited: over the quota of 5 events a second (burst 5); retry in 3 s");
}

static void test_admit_bytes_all_or_none(void **state)
{
    gw_bucket events, bytes;
    gw_limit le = {.bucket = &events, .rate = {100, 100}}, lb = {.bucket = &bytes, .rate = {1000, 1000}};
    gw_admission a;
    (void)state;

    gw_bucket_init(&events);
    gw_bucket_init(&bytes);
    gw_admission_init(&a, &gw, GW_GRPC, "[::1]:1", 0);
    gw_admission_set_quota(&a, &le, &lb);
    a.request_bytes = 800;
    assert_int_equal(gw_admit_rate_charge(&a, 50), 0);
    /* Too many bytes: refused, and its events go back. */
    assert_int_equal(gw_admit_rate_charge(&a, 50), -1);
    assert_non_null(strstr(a.refusal.message, "bytes"));
    a.request_bytes = 200;
    assert_int_equal(gw_admit_rate_charge(&a, 50), 0);
    gw_admission_clear(&a);
}

static void test_admit_rate_per_source(void **state)
{
    gw_ip_buckets *t = gw_ip_buckets_new(1024);
    gw_limit l = {.ips = t, .rate = {1, 1}};
    gw_admission a;
    struct sockaddr_in one = {.sin_family = AF_INET}, two = {.sin_family = AF_INET};
    (void)state;

    inet_pton(AF_INET, "127.0.0.1", &one.sin_addr);
    inet_pton(AF_INET, "127.0.0.2", &two.sin_addr);
    gw_admission_init(&a, &gw, GW_UDP, NULL, 0);
    gw_admission_set_quota(&a, &l, NULL);
    gw_admission_set_source(&a, (struct sockaddr *)&one);
    assert_int_equal(gw_admit_rate_gate(&a), 0);
    assert_int_equal(gw_admit_rate_charge(&a, 1), 0);
    assert_int_equal(gw_admit_rate_gate(&a), -1);
    gw_admission_set_source(&a, (struct sockaddr *)&two);
    assert_int_equal(gw_admit_rate_gate(&a), 0);
    assert_int_equal(gw_admit_rate_charge(&a, 1), 0);
    /* A peer string is keyed when no address was set. */
    gw_admission_clear(&a);
    gw_admission_init(&a, &gw, GW_HTTP, "127.0.0.1:4444", 0);
    gw_admission_set_quota(&a, &l, NULL);
    assert_int_equal(gw_admit_rate_gate(&a), -1);
    assert_int_equal(a.refusal.reason, GW_R_rate_limited);
    gw_admission_clear(&a);
    gw_ip_buckets_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_rate_and_burst),
        cmocka_unit_test(test_bucket_over_burst_and_charge),
        cmocka_unit_test(test_bucket_clock_oddities),
        cmocka_unit_test(test_bucket_threads),
        cmocka_unit_test(test_ip_keys),
        cmocka_unit_test(test_ip_distinct_and_reclaimed),
        cmocka_unit_test(test_ip_full_table_bounded_flooder_limited),
        cmocka_unit_test_setup_teardown(test_admit_rate_gate_and_charge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admit_bytes_all_or_none, setup, teardown),
        cmocka_unit_test(test_rate_limited_answers),
        cmocka_unit_test_setup_teardown(test_admit_rate_per_source, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
