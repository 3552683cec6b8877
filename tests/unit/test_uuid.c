#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "uuid.h"

static void test_format(void **state)
{
    char id[UUID_STR_LEN];
    (void)state;

    uuid_v7(id);
    assert_int_equal(strlen(id), 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(id[i], '-');
        else
            assert_non_null(strchr("0123456789abcdef", id[i]));
    }
    assert_int_equal(id[14], '7');           /* version */
    assert_non_null(strchr("89ab", id[19])); /* variant 10 */
}

static void test_timestamp_is_now(void **state)
{
    unsigned char b[16];
    struct timespec ts;
    (void)state;

    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    uuid_v7_bytes(b);
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++)
        ms = ms << 8 | b[i];
    assert_true(ms + 1000 >= now && ms <= now + 1000);
}

static void test_strictly_increasing(void **state)
{
    char prev[UUID_STR_LEN], cur[UUID_STR_LEN];
    (void)state;

    /* Far more ids than milliseconds pass: the counter keeps them ordered and distinct. */
    uuid_v7(prev);
    for (int i = 0; i < 200000; i++) {
        uuid_v7(cur);
        if (strcmp(prev, cur) >= 0)
            fail_msg("%s after %s", cur, prev);
        memcpy(prev, cur, sizeof(cur));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_timestamp_is_now),
        cmocka_unit_test(test_strictly_increasing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
