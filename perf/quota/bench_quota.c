/*
 * ns per gw_bucket_take() (gateway/quota.h) with 1, 2, 4 and 8 threads:
 *
 *   shared:   every thread on one bucket (a principal's, taken by every
 *             front-end thread): the compare-and-swap's cache line moves
 *             between cores, and a lost race retries.
 *   own:      each thread its own bucket, a cache line apart: no sharing,
 *             the arithmetic alone.
 *   by ip:    each thread its own source addresses in one gw_ip_buckets
 *             table (anonymous's quota): the set's lock and the lookup.
 *
 * The rate is high enough that every take succeeds and writes (the worst
 * case for sharing: a refused take only reads). The clock is read once per
 * 4096 operations, so its cost (clock_gettime, ~20 ns) is not in the
 * figures, and the threads' clocks stay within microseconds of each other.
 *
 * The figure is CPU time per operation (CLOCK_THREAD_CPUTIME_ID), so that
 * more threads than cores do not count the time a thread waits for a core;
 * what sharing costs (the cache line moving, CAS retries, a set's lock
 * spinning) is CPU time and shows. The ratio is against 1 thread of the
 * same case: 1.00 means sharing costs nothing.
 *
 * Usage: bench_quota [seconds-per-case]   (default 1)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "quota.h"

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_s(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

typedef enum kind { SHARED, OWN, BY_IP } kind;

typedef struct padded {
    gw_bucket b;
    char pad[64 - sizeof(gw_bucket)];
} padded;

typedef struct worker {
    kind k;
    int index;
    gw_bucket *b;
    gw_ip_buckets *t;
    double seconds;
    long ops, admitted;
    double elapsed, cpu;
    char pad[64];
} worker;

static const gw_rate fast = {1e9, 1e9}; /* 1 ns a token, a second's burst: never refused here */

static void *run(void *arg)
{
    worker *w = arg;
    int64_t t;
    gw_ip_key keys[16];
    double start = now_s(), end = start + w->seconds, last = start, cpu = clock_s(CLOCK_THREAD_CPUTIME_ID);

    for (int i = 0; i < 16; i++) {
        char peer[32];
        snprintf(peer, sizeof(peer), "10.%d.%d.1:1", w->index, i);
        gw_ip_key_of_peer(peer, &keys[i]);
    }
    while ((last = now_s()) < end) {
        t = gw_quota_now_ns();
        for (int i = 0; i < 4096; i++) {
            if (w->k == BY_IP)
                w->admitted += gw_ip_buckets_take(w->t, &keys[i & 15], &fast, t, 1, NULL);
            else
                w->admitted += gw_bucket_take(w->b, &fast, t, 1, NULL);
            w->ops++;
        }
    }
    w->elapsed = last - start;
    w->cpu = clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu;
    return NULL;
}

typedef struct result {
    double cpu_ns; /* CPU time per operation, averaged over the threads */
    double mops;   /* operations a second, all threads together (wall clock) */
} result;

static result measure(kind k, int threads, double seconds)
{
    padded *own = aligned_alloc(64, sizeof(padded) * 8);
    gw_ip_buckets *tab = gw_ip_buckets_new(65536);
    worker w[8];
    pthread_t tid[8];
    result r = {0, 0};

    for (int i = 0; i < 8; i++)
        gw_bucket_init(&own[i].b);
    for (int i = 0; i < threads; i++) {
        w[i] = (worker){
            .k = k, .index = i, .b = k == SHARED ? &own[0].b : &own[i].b, .t = tab, .seconds = seconds};
        pthread_create(&tid[i], NULL, run, &w[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        if (w[i].admitted != w[i].ops)
            fprintf(stderr, "warning: %ld of %ld takes refused\n", w[i].ops - w[i].admitted, w[i].ops);
        r.cpu_ns += w[i].cpu * 1e9 / (double)w[i].ops / threads;
        r.mops += (double)w[i].ops / w[i].elapsed / 1e6;
    }
    free(own);
    gw_ip_buckets_free(tab);
    return r;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 1;
    static const char *names[] = {"shared bucket", "own bucket", "by ip (table)"};

    printf("%-16s %8s %14s %12s %14s\n", "case", "threads", "CPU ns/op", "vs 1 thread", "Mops/s total");
    for (int k = SHARED; k <= BY_IP; k++) {
        double one = 0;
        for (int threads = 1; threads <= 8; threads *= 2) {
            result r = measure((kind)k, threads, seconds);
            if (threads == 1)
                one = r.cpu_ns;
            printf("%-16s %8d %14.1f %11.2fx %14.1f\n", names[k], threads, r.cpu_ns, r.cpu_ns / one, r.mops);
        }
    }
    return 0;
}
