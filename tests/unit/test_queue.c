#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "queue.h"

static void test_bad_arguments(void **state)
{
    (void)state;
    assert_null(queue_new(0, 0));
    assert_null(queue_new(4, 0));
    assert_null(queue_new(4, 5));
    queue_free(NULL);
}

static void test_fifo_and_bounds(void **state)
{
    queue *q = queue_new(4, 3);
    void *items[8];
    (void)state;

    assert_non_null(q);
    assert_int_equal(queue_capacity(q), 4);
    assert_int_equal(queue_high_water(q), 3);
    for (uintptr_t i = 1; i <= 4; i++)
        assert_int_equal(queue_push(q, (void *)i), 0);
    assert_int_equal(queue_depth(q), 4);
    assert_true(queue_above_high_water(q));
    assert_int_equal(queue_push(q, (void *)5), -EAGAIN);

    assert_int_equal(queue_pop_n(q, items, 2, 0), 2);
    assert_ptr_equal(items[0], (void *)1);
    assert_ptr_equal(items[1], (void *)2);
    assert_false(queue_above_high_water(q));
    /* Wrap around the ring. */
    assert_int_equal(queue_push(q, (void *)5), 0);
    assert_int_equal(queue_push(q, (void *)6), 0);
    assert_int_equal(queue_pop_n(q, items, 8, 0), 4);
    for (uintptr_t i = 0; i < 4; i++)
        assert_ptr_equal(items[i], (void *)(i + 3));
    assert_int_equal(queue_depth(q), 0);
    queue_free(q);
}

static void test_push_n_all_or_nothing(void **state)
{
    queue *q = queue_new(5, 5);
    void *three[3] = {(void *)1, (void *)2, (void *)3}, *out[5];
    (void)state;

    assert_int_equal(queue_push_n(q, three, 3), 0);
    /* Two places left: a batch of three goes in whole or not at all. */
    assert_int_equal(queue_push_n(q, three, 3), -EAGAIN);
    assert_int_equal(queue_depth(q), 3);
    assert_int_equal(queue_push_n(q, three, 0), 0);
    void *six[6] = {0};
    assert_int_equal(queue_push_n(q, six, 6), -EINVAL);
    assert_int_equal(queue_pop_n(q, out, 5, 0), 3);
    queue_free(q);
}

static void test_timeout_and_close(void **state)
{
    queue *q = queue_new(2, 2);
    void *out[2];
    struct timespec a, b;
    (void)state;

    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(queue_pop_n(q, out, 2, 50), 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    /* It did wait (not a timing assertion on speed: only that it blocked at all). */
    assert_true((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) >= 40 * 1000000L);

    assert_int_equal(queue_push(q, (void *)7), 0);
    queue_close(q);
    assert_int_equal(queue_push(q, (void *)8), -EPIPE);
    /* What is left still comes out, then pops return at once. */
    assert_int_equal(queue_pop_n(q, out, 2, -1), 1);
    assert_ptr_equal(out[0], (void *)7);
    assert_int_equal(queue_pop_n(q, out, 2, -1), 0);
    queue_free(q);
}

struct lazy_arg {
    queue *q;
    size_t got;
};

static void *lazy_consumer(void *arg)
{
    struct lazy_arg *a = arg;
    void *items[128];

    a->got = queue_pop_lazy(a->q, items, 128, 20000);
    return NULL;
}

static void test_lazy_pop(void **state)
{
    queue *q = queue_new(256, 256);
    void *items[128];
    struct timespec a, b;
    (void)state;

    /* Fewer than a batch: it waits out its timeout, then takes what is there. */
    for (uintptr_t i = 1; i <= 3; i++)
        assert_int_equal(queue_push(q, (void *)i), 0);
    assert_int_equal(queue_pop_lazy(q, items, 128, 20), 3);
    assert_ptr_equal(items[2], (void *)3);

    /* A full batch wakes it long before its 20 s timeout. */
    pthread_t t;
    struct lazy_arg arg = {.q = q};
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(pthread_create(&t, NULL, lazy_consumer, &arg), 0);
    for (uintptr_t i = 1; i <= 64; i++)
        assert_int_equal(queue_push(q, (void *)i), 0);
    pthread_join(t, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_true(arg.got >= 64);
    assert_true(b.tv_sec - a.tv_sec < 10);

    /* Closing wakes it too, and drained says so once empty. */
    assert_false(queue_drained(q));
    arg.got = 99;
    assert_int_equal(pthread_create(&t, NULL, lazy_consumer, &arg), 0);
    queue_close(q);
    pthread_join(t, NULL);
    assert_int_equal(arg.got, 0);
    assert_true(queue_drained(q));
    queue_free(q);
}

/* Several producers and consumers: every item comes out exactly once. */
#define PRODUCERS    4
#define CONSUMERS    3
#define PER_PRODUCER 50000

struct mt {
    queue *q;
    int id;
    unsigned char *seen; /* PRODUCERS * PER_PRODUCER flags */
    size_t popped;
    size_t max_depth;
};

static void *producer(void *arg)
{
    struct mt *m = arg;
    uintptr_t next = 0;

    while (next < PER_PRODUCER) {
        /* Mix single pushes and batches of up to 8. */
        void *batch[8];
        size_t n = (next % 3 == 0) ? 1 : 8;
        if (n > PER_PRODUCER - next)
            n = PER_PRODUCER - next;
        for (size_t i = 0; i < n; i++)
            batch[i] = (void *)(uintptr_t)((uintptr_t)m->id * PER_PRODUCER + next + i + 1);
        int rc = queue_push_n(m->q, batch, n);
        if (rc == 0)
            next += n;
        else if (rc == -EAGAIN)
            sched_yield();
        else
            fail_msg("push failed: %d", rc);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    struct mt *m = arg;
    void *items[16];
    size_t n;

    while ((n = queue_pop_n(m->q, items, 16, -1)) > 0) {
        size_t d = queue_depth(m->q);
        if (d > m->max_depth)
            m->max_depth = d;
        for (size_t i = 0; i < n; i++) {
            uintptr_t v = (uintptr_t)items[i] - 1;
            /* Each slot written by one consumer only once; a second time means a duplicate. */
            if (__atomic_exchange_n(&m->seen[v], 1, __ATOMIC_RELAXED) != 0)
                fail_msg("item %lu popped twice", (unsigned long)v);
        }
        m->popped += n;
    }
    return NULL;
}

static void test_many_threads(void **state)
{
    pthread_t p[PRODUCERS], c[CONSUMERS];
    struct mt pm[PRODUCERS], cm[CONSUMERS];
    unsigned char *seen = calloc(PRODUCERS * PER_PRODUCER, 1);
    queue *q = queue_new(64, 48);
    size_t total = 0;
    (void)state;

    assert_non_null(seen);
    for (int i = 0; i < CONSUMERS; i++) {
        cm[i] = (struct mt){.q = q, .id = i, .seen = seen};
        assert_int_equal(pthread_create(&c[i], NULL, consumer, &cm[i]), 0);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        pm[i] = (struct mt){.q = q, .id = i, .seen = seen};
        assert_int_equal(pthread_create(&p[i], NULL, producer, &pm[i]), 0);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(p[i], NULL);
    queue_close(q);
    for (int i = 0; i < CONSUMERS; i++) {
        pthread_join(c[i], NULL);
        total += cm[i].popped;
        assert_true(cm[i].max_depth <= 64);
    }
    assert_int_equal(total, PRODUCERS * PER_PRODUCER);
    for (size_t i = 0; i < PRODUCERS * PER_PRODUCER; i++)
        if (!seen[i])
            fail_msg("item %zu lost", i);
    free(seen);
    queue_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_fifo_and_bounds),
        cmocka_unit_test(test_push_n_all_or_nothing),
        cmocka_unit_test(test_timeout_and_close),
        cmocka_unit_test(test_lazy_pop),
        cmocka_unit_test(test_many_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
