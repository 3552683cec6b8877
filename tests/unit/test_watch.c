#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "watch.h"

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* A check whose answer the test sets, that counts its calls and can be made to hang. */
typedef struct probe {
    _Atomic(const char *) answer;
    atomic_int calls;
    pthread_t first_thread;
    atomic_int hang; /* while set, the check does not return */
} probe;

static const char *check(void *arg)
{
    probe *p = arg;

    if (atomic_fetch_add(&p->calls, 1) == 0)
        p->first_thread = pthread_self();
    while (atomic_load(&p->hang))
        sleep_ms(5);
    return atomic_load(&p->answer);
}

/* Polls watch_reason() until it is `want` (compared as strings, NULL included); 0 when it was within ms. */
static int reason_becomes(watch *w, const char *want, int ms)
{
    long long deadline = mono_ms() + ms;

    for (;;) {
        const char *r = watch_reason(w);
        if (r == want || (r && want && strcmp(r, want) == 0))
            return 0;
        if (mono_ms() > deadline)
            return -1;
        sleep_ms(5);
    }
}

static void test_the_first_answer_is_there_when_start_returns(void **state)
{
    probe p = {0};
    char err[128];
    (void)state;

    atomic_store(&p.answer, "Kafka not reachable");
    watch *w = watch_start("test-watch", 3600000, 0, check, &p, err, sizeof(err));
    assert_non_null(w);
    /* Asked on this thread, before start returned: a probe at once reads a real answer. */
    assert_int_equal(atomic_load(&p.calls), 1);
    assert_true(pthread_equal(p.first_thread, pthread_self()));
    assert_string_equal(watch_reason(w), "Kafka not reachable");
    watch_stop(w);
}

static void test_answers_follow_the_check(void **state)
{
    probe p = {0};
    char err[128];
    (void)state;

    watch *w = watch_start("test-watch", 10, 0, check, &p, err, sizeof(err));
    assert_non_null(w);
    assert_null(watch_reason(w));
    atomic_store(&p.answer, "Postgres not reachable");
    assert_int_equal(reason_becomes(w, "Postgres not reachable", 30000), 0);
    atomic_store(&p.answer, NULL);
    assert_int_equal(reason_becomes(w, NULL, 30000), 0);
    /* Asked again and again, from the watcher's thread. */
    int before = atomic_load(&p.calls);
    assert_true(before >= 3);
    sleep_ms(100);
    assert_true(atomic_load(&p.calls) > before);
    watch_stop(w);
}

static void test_reading_never_waits_for_a_check_that_hangs(void **state)
{
    probe p = {0};
    char err[128];
    (void)state;

    atomic_store(&p.answer, NULL);
    watch *w = watch_start("test-watch", 10, 0, check, &p, err, sizeof(err));
    assert_non_null(w);
    atomic_store(&p.hang, 1);
    /* Let the watcher get stuck inside the check. */
    int calls = atomic_load(&p.calls);
    while (atomic_load(&p.calls) == calls)
        sleep_ms(5);
    /* Many reads while the check hangs, each answered with the last answer at once (no lock, no wait). */
    for (int i = 0; i < 1000; i++)
        assert_null(watch_reason(w));
    atomic_store(&p.hang, 0);
    watch_stop(w);
}

static void test_an_answer_too_old_reads_as_not_ready(void **state)
{
    probe p = {0};
    char err[128];
    (void)state;

    atomic_store(&p.answer, NULL);
    watch *w = watch_start("test-watch", 10, 200, check, &p, err, sizeof(err));
    assert_non_null(w);
    assert_null(watch_reason(w));
    /* The check hangs past its bound: the last answer ("ready") must not stand for ever. */
    atomic_store(&p.hang, 1);
    assert_int_equal(reason_becomes(w, WATCH_STALE_REASON, 30000), 0);
    /* Answering again makes it fresh. */
    atomic_store(&p.hang, 0);
    assert_int_equal(reason_becomes(w, NULL, 30000), 0);
    watch_stop(w);
}

static void test_stop_wakes_the_watcher_at_once(void **state)
{
    probe p = {0};
    char err[128];
    (void)state;

    /* An hour between checks: stop must not wait for the next one. */
    watch *w = watch_start("test-watch", 3600000, 0, check, &p, err, sizeof(err));
    assert_non_null(w);
    sleep_ms(50); /* the thread is in its wait */
    long long t0 = mono_ms();
    watch_stop(w);
    assert_true(mono_ms() - t0 < 60000);
    /* And it never asked again. */
    assert_int_equal(atomic_load(&p.calls), 1);
    watch_stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_first_answer_is_there_when_start_returns),
        cmocka_unit_test(test_answers_follow_the_check),
        cmocka_unit_test(test_reading_never_waits_for_a_check_that_hangs),
        cmocka_unit_test(test_an_answer_too_old_reads_as_not_ready),
        cmocka_unit_test(test_stop_wakes_the_watcher_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
