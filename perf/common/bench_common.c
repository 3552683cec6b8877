/*
 * Micro-benchmarks of the hot paths every protocol shares, each against a
 * baseline measured in the same run on the same machine:
 *
 *   queue:    items/s through the shared queue with 2 producer and 2 consumer
 *             threads (batches of 64 popped), against one thread pushing and
 *             popping alone (the lock without contention).
 *   envelope: validate + assign id + encode a typical event, against
 *             protobuf-c packing the same Envelope already built (the cost
 *             of the serializer alone).
 *
 * Usage: bench_common [seconds-per-case]   (default 2)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envelope.h"
#include "queue.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define QCAP               65536
#define ITEMS_PER_PRODUCER 2000000

static void *q_producer(void *arg)
{
    queue *q = arg;
    void *batch[16];

    for (uintptr_t i = 0; i < ITEMS_PER_PRODUCER;) {
        for (int k = 0; k < 16; k++)
            batch[k] = (void *)(i + (uintptr_t)k + 1);
        if (queue_push_n(q, batch, 16) == 0)
            i += 16;
        else
            sched_yield();
    }
    return NULL;
}

static void *q_consumer(void *arg)
{
    queue *q = arg;
    void *items[64];
    size_t n, total = 0;

    while ((n = queue_pop_n(q, items, 64, -1)) > 0)
        total += n;
    return (void *)total;
}

static double bench_queue_threads(void)
{
    queue *q = queue_new(QCAP, QCAP);
    pthread_t p[2], c[2];
    size_t total = 0;
    double t0 = now();

    for (int i = 0; i < 2; i++)
        pthread_create(&c[i], NULL, q_consumer, q);
    for (int i = 0; i < 2; i++)
        pthread_create(&p[i], NULL, q_producer, q);
    for (int i = 0; i < 2; i++)
        pthread_join(p[i], NULL);
    queue_close(q);
    for (int i = 0; i < 2; i++) {
        void *r;
        pthread_join(c[i], &r);
        total += (size_t)r;
    }
    double dt = now() - t0;
    queue_free(q);
    if (total != 2 * ITEMS_PER_PRODUCER) {
        fprintf(stderr, "queue lost items: %zu\n", total);
        exit(1);
    }
    return (double)total / dt;
}

static double bench_queue_alone(void)
{
    queue *q = queue_new(QCAP, QCAP);
    void *batch[16], *items[64];
    size_t total = 0;
    double t0 = now();

    for (uintptr_t i = 0; i < 2 * ITEMS_PER_PRODUCER; i += 64) {
        for (int r = 0; r < 4; r++) {
            for (int k = 0; k < 16; k++)
                batch[k] = (void *)(i + 1);
            queue_push_n(q, batch, 16);
        }
        total += queue_pop_n(q, items, 64, 0);
    }
    double dt = now() - t0;
    queue_free(q);
    return (double)total / dt;
}

static void make_event(ing_event *ev, const ing_event_limits *lim)
{
    static const char *const attrs[][2] = {
        {"source", "/sensors/building-7/floor-3"},
        {"type", "com.example.reading.taken"},
        {"subject", "room-301"},
        {"time", "2026-11-26T10:00:00.123Z"},
        {"datacontenttype", "application/json"},
        {"tenant", "acme"},
        {"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    };
    static const char data[] = "{\"temperature\":21.5,\"humidity\":40,\"unit\":\"C\",\"ok\":true}";
    ing_event_error err;

    ing_event_init(ev);
    for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++)
        ing_event_set_attr(ev, attrs[i][0], strlen(attrs[i][0]), attrs[i][1], strlen(attrs[i][1]), lim, &err);
    ing_event_set_data(ev, EVENT_DATA_JSON, (unsigned char *)strdup(data), sizeof(data) - 1);
}

static double bench_envelope(double seconds, size_t *bytes)
{
    ing_event_limits lim;
    ing_event_error err;
    envelope_meta meta = {.protocol = ENVELOPE_HTTP, .peer = "127.0.0.1:40000", .gateway_id = "bench"};
    size_t n = 0;
    double t0 = now(), t;

    ing_event_limits_default(&lim);
    do {
        for (int i = 0; i < 1000; i++) {
            ing_event ev;
            uint8_t *buf;
            size_t len;
            make_event(&ev, &lim);
            if (ing_event_validate(&ev, &lim, 0, &err) != 0 || ing_event_assign_id(&ev) != 0 ||
                envelope_encode(&ev, &meta, &buf, &len) != 0) {
                fprintf(stderr, "envelope bench: %s\n", err.message);
                exit(1);
            }
            *bytes = len;
            free(buf);
            ing_event_clear(&ev);
        }
        n += 1000;
    } while ((t = now()) - t0 < seconds);
    return (double)n / (t - t0);
}

static double bench_pack_only(double seconds)
{
    ing_event_limits lim;
    ing_event_error err;
    ing_event ev;
    envelope_meta meta = {.protocol = ENVELOPE_HTTP, .peer = "127.0.0.1:40000", .gateway_id = "bench"};
    uint8_t *buf;
    size_t len, n = 0;
    double t0, t;

    ing_event_limits_default(&lim);
    make_event(&ev, &lim);
    ing_event_validate(&ev, &lim, 0, &err);
    ing_event_assign_id(&ev);
    envelope_encode(&ev, &meta, &buf, &len);
    Ingest__V1__Envelope *env = envelope_decode(buf, len);
    uint8_t *out = malloc(len);
    t0 = now();
    do {
        for (int i = 0; i < 1000; i++) {
            ingest__v1__envelope__pack(env, out);
            __asm__ volatile("" ::"r"(out) : "memory");
        }
        n += 1000;
    } while ((t = now()) - t0 < seconds);
    free(out);
    free(buf);
    envelope_free(env);
    ing_event_clear(&ev);
    return (double)n / (t - t0);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    size_t bytes = 0;

    double qt = bench_queue_threads(), qa = bench_queue_alone();
    printf("%-44s %14.0f items/s\n", "queue: 2 producers x 2 consumers", qt);
    printf("%-44s %14.0f items/s\n", "baseline: 1 thread, no contention", qa);
    printf("%-44s %14.2f\n", "ratio", qt / qa);

    double ev = bench_envelope(seconds, &bytes), pk = bench_pack_only(seconds);
    printf("%-44s %14.0f events/s (%zu B each)\n", "envelope: build+validate+id+encode", ev, bytes);
    printf("%-44s %14.0f events/s\n", "baseline: protobuf-c pack of a built one", pk);
    printf("%-44s %14.2f\n", "ratio", ev / pk);
    return 0;
}
