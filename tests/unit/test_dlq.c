/*
 * sink/dlq: the dead-letter producer takes the operator's kafka.* properties
 * as the consumer does (a cluster that wants TLS or SASL wants it for dead
 * letters too). No broker is needed: a property is checked when the
 * producer is made, so a bad one names itself and a good one is taken.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dlq.h"

static void test_properties_reach_the_dead_letter_producer(void **state)
{
    char err[512] = "";
    char *keys[] = {"compression.type"}, *bad[] = {"no-such-codec"}, *good[] = {"zstd"};
    config_props props = {keys, bad, 1};
    (void)state;

    assert_null(sink_dlq_new("127.0.0.1:1", &props, "events.dlq", "events", err, sizeof(err)));
    assert_non_null(strstr(err, "compression.type"));
    props.values = good;
    sink_dlq *d = sink_dlq_new("127.0.0.1:1", &props, "events.dlq", "events", err, sizeof(err));
    assert_non_null(d);
    sink_dlq_free(d);
    /* None given: the defaults alone. */
    assert_non_null(d = sink_dlq_new("127.0.0.1:1", NULL, "events.dlq", "events", err, sizeof(err)));
    sink_dlq_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_properties_reach_the_dead_letter_producer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
