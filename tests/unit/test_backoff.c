#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "backoff.h"

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An attempt that fails `failures` times with `code`, then succeeds; and when to give up. */
typedef struct trial {
    int failures, code;
    int attempts;
    atomic_int give_up;
    int give_up_after; /* set give_up once this many attempts were made; 0: never */
    int asked;         /* give_up() calls */
} trial;

static int attempt(void *arg)
{
    trial *t = arg;

    t->attempts++;
    if (t->give_up_after && t->attempts >= t->give_up_after)
        atomic_store(&t->give_up, 1);
    return t->attempts > t->failures ? 0 : t->code;
}

static int give_up(void *arg)
{
    trial *t = arg;

    t->asked++;
    return atomic_load(&t->give_up);
}

static void test_bad_bounds(void **state)
{
    backoff b;
    (void)state;

    assert_int_equal(backoff_init(&b, 0, 10), -EINVAL);
    assert_int_equal(backoff_init(&b, 100, 99), -EINVAL);
    assert_int_equal(backoff_init(&b, -5, 10), -EINVAL);
}

static void test_delays_double_up_to_the_cap(void **state)
{
    backoff b;
    (void)state;

    assert_int_equal(backoff_init(&b, 100, 5000), 0);
    const int64_t want[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000};
    for (unsigned n = 1; n <= 8; n++)
        assert_int_equal(backoff_delay_ms(&b, n), want[n - 1]);
    /* However many failures: capped, never overflowing into a short or negative wait. */
    assert_int_equal(backoff_delay_ms(&b, 64), 5000);
    assert_int_equal(backoff_delay_ms(&b, 4000000000u), 5000);
    /* n 0 (no failure yet) reads as the first. */
    assert_int_equal(backoff_delay_ms(&b, 0), 100);
    backoff_destroy(&b);

    /* A cap that is not a doubling of the first is reached exactly. */
    assert_int_equal(backoff_init(&b, 3, 10), 0);
    assert_int_equal(backoff_delay_ms(&b, 1), 3);
    assert_int_equal(backoff_delay_ms(&b, 2), 6);
    assert_int_equal(backoff_delay_ms(&b, 3), 10);
    backoff_destroy(&b);

    assert_int_equal(backoff_init(&b, 7, 7), 0);
    assert_int_equal(backoff_delay_ms(&b, 1), 7);
    assert_int_equal(backoff_delay_ms(&b, 9), 7);
    backoff_destroy(&b);
}

static void test_retries_until_the_attempt_succeeds(void **state)
{
    backoff b;
    trial t = {.failures = 4, .code = -EIO};
    (void)state;

    assert_int_equal(backoff_init(&b, 1, 4), 0);
    long long t0 = mono_ms();
    assert_int_equal(backoff_retry(&b, attempt, give_up, &t), 0);
    assert_int_equal(t.attempts, 5);
    /* It waited between attempts: 1 + 2 + 4 + 4 ms. */
    assert_true(mono_ms() - t0 >= 11);
    backoff_destroy(&b);
}

static void test_no_give_up_callback_means_never(void **state)
{
    backoff b;
    trial t = {.failures = 3, .code = -EAGAIN};
    (void)state;

    assert_int_equal(backoff_init(&b, 1, 1), 0);
    assert_int_equal(backoff_retry(&b, attempt, NULL, &t), 0);
    assert_int_equal(t.attempts, 4);
    backoff_destroy(&b);
}

static void test_gives_up_after_a_failure_with_its_code(void **state)
{
    backoff b;
    trial t = {.failures = 1000, .code = -ECONNREFUSED, .give_up_after = 1};
    (void)state;

    /* An hour between attempts: only giving up ends this test. */
    assert_int_equal(backoff_init(&b, 3600000, 3600000), 0);
    assert_int_equal(backoff_retry(&b, attempt, give_up, &t), -ECONNREFUSED);
    assert_int_equal(t.attempts, 1);

    /* Already told to give up: the first attempt is still made, and is the only one. */
    trial u = {.failures = 1000, .code = -EIO};
    atomic_store(&u.give_up, 1);
    assert_int_equal(backoff_retry(&b, attempt, give_up, &u), -EIO);
    assert_int_equal(u.attempts, 1);

    /* And a first attempt that succeeds needs no permission. */
    trial v = {.failures = 0};
    atomic_store(&v.give_up, 1);
    assert_int_equal(backoff_retry(&b, attempt, give_up, &v), 0);
    assert_int_equal(v.asked, 0);
    backoff_destroy(&b);
}

typedef struct waker {
    backoff *b;
    trial *t;
    int delay_ms;
} waker;

static void *wake_later(void *arg)
{
    waker *w = arg;
    struct timespec ts = {w->delay_ms / 1000, (w->delay_ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
    atomic_store(&w->t->give_up, 1);
    backoff_wake(w->b);
    return NULL;
}

static void test_a_wake_ends_a_long_wait_at_once(void **state)
{
    backoff b;
    trial t = {.failures = 1000, .code = -EIO};
    pthread_t tid;
    (void)state;

    /* A day's wait: only the wake can end it before ctest's timeout. */
    assert_int_equal(backoff_init(&b, 86400000, 86400000), 0);
    waker w = {&b, &t, 100};
    assert_int_equal(pthread_create(&tid, NULL, wake_later, &w), 0);
    long long t0 = mono_ms();
    assert_int_equal(backoff_retry(&b, attempt, give_up, &t), -EIO);
    long long took = mono_ms() - t0;
    pthread_join(tid, NULL);
    /* No attempt after the wake: the one before it was the last. */
    assert_int_equal(t.attempts, 1);
    assert_true(took >= 90);
    assert_true(took < 60000);
    backoff_destroy(&b);
}

static void test_a_wake_without_a_reason_to_give_up_does_not_end_the_wait(void **state)
{
    backoff b;
    trial t = {.failures = 1, .code = -EIO};
    (void)state;

    /* Woken before the wait starts, with nothing to give up for: the wait runs its course. */
    assert_int_equal(backoff_init(&b, 200, 200), 0);
    backoff_wake(&b);
    long long t0 = mono_ms();
    assert_int_equal(backoff_retry(&b, attempt, give_up, &t), 0);
    assert_true(mono_ms() - t0 >= 190);
    assert_int_equal(t.attempts, 2);
    backoff_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_bounds),
        cmocka_unit_test(test_delays_double_up_to_the_cap),
        cmocka_unit_test(test_retries_until_the_attempt_succeeds),
        cmocka_unit_test(test_no_give_up_callback_means_never),
        cmocka_unit_test(test_gives_up_after_a_failure_with_its_code),
        cmocka_unit_test(test_a_wake_ends_a_long_wait_at_once),
        cmocka_unit_test(test_a_wake_without_a_reason_to_give_up_does_not_end_the_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
