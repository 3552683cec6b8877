/* common/prom.c (the text format, histograms) and gateway/metrics.c (reasons, families). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "metrics.h"
#include "prom.h"

/* The buffer's text, NUL-terminated, owned by the caller. */
static char *text_of(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_copyout(b, s, n);
    s[n] = '\0';
    return s;
}

static void test_samples(void **state)
{
    struct evbuffer *b = evbuffer_new();
    (void)state;

    prom_family(b, "x_total", "counter", "Things");
    prom_sample_u64(b, "x_total", NULL, 18446744073709551615u);
    prom_sample_u64(b, "x_total", "a=\"1\"", 0);
    prom_sample_f64(b, "y", "", 0.25);
    char *s = text_of(b);
    assert_string_equal(s, "# HELP x_total Things\n# TYPE x_total counter\nx_total 18446744073709551615\n"
                           "x_total{a=\"1\"} 0\ny 0.25\n");
    free(s);
    evbuffer_free(b);
}

static void test_histogram_buckets_are_cumulative(void **state)
{
    prom_histogram h;
    struct evbuffer *b = evbuffer_new();
    (void)state;

    memset(&h, 0, sizeof(h));
    prom_histogram_observe(&h, 500000);       /* exactly 0.5 ms: in le="0.0005" */
    prom_histogram_observe(&h, 500001);       /* just over: le="0.001" */
    prom_histogram_observe(&h, 3000000000u);  /* 3 s: le="5" */
    prom_histogram_observe(&h, 60000000000u); /* a minute: only +Inf */
    prom_histogram_write(b, "d_seconds", "p=\"x\"", &h);
    char *s = text_of(b);
    assert_non_null(strstr(s, "d_seconds_bucket{p=\"x\",le=\"0.0005\"} 1\n"));
    assert_non_null(strstr(s, "d_seconds_bucket{p=\"x\",le=\"0.001\"} 2\n"));
    assert_non_null(strstr(s, "d_seconds_bucket{p=\"x\",le=\"2.5\"} 2\n"));
    assert_non_null(strstr(s, "d_seconds_bucket{p=\"x\",le=\"5\"} 3\n"));
    assert_non_null(strstr(s, "d_seconds_bucket{p=\"x\",le=\"10\"} 3\n"));
    assert_non_null(strstr(s, "d_seconds_bucket{p=\"x\",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(s, "d_seconds_sum{p=\"x\"} 63.001000001\n"));
    assert_non_null(strstr(s, "d_seconds_count{p=\"x\"} 4\n"));
    free(s);
    evbuffer_free(b);
}

/* The one table: every reason has a name, an HTTP status and a gRPC status; codes from common/ map total. */
static void test_reasons(void **state)
{
    (void)state;
    for (int r = 0; r < GW_N_REASONS; r++) {
        assert_non_null(gw_reasons[r].name);
        assert_true(gw_reasons[r].http_status >= 400 && gw_reasons[r].http_status < 600);
        assert_true(gw_reasons[r].grpc_status != GW_GRPC_OK);
        for (int k = 0; k < r; k++)
            assert_string_not_equal(gw_reasons[r].name, gw_reasons[k].name);
    }
    assert_string_equal(gw_reasons[GW_R_malformed_protobuf].name, "malformed_protobuf");
    assert_int_equal(gw_reasons[GW_R_overloaded].http_status, 429);
    assert_int_equal(gw_reasons[GW_R_overloaded].grpc_status, GW_GRPC_RESOURCE_EXHAUSTED);
    assert_int_equal(gw_reasons[GW_R_unauthorized].grpc_status, GW_GRPC_UNAUTHENTICATED);
    assert_true(gw_reasons[GW_R_overloaded].dropped);
    assert_true(gw_reasons[GW_R_ack_timeout].dropped);
    assert_false(gw_reasons[GW_R_invalid_event].dropped);
    assert_false(gw_reasons[GW_R_unauthorized].dropped);
    /* Every code common/ gives has its reason, by the same name. */
    for (ing_errcode c = ING_ERR_MALFORMED_JSON; c <= ING_ERR_TOO_MANY_EVENTS; c++)
        assert_string_equal(gw_reasons[gw_reason_of_errcode(c)].name, ing_errcode_name(c));
}

static void test_gateway_families(void **state)
{
    gateway_metrics *m = calloc(1, sizeof(*m));
    struct evbuffer *b = evbuffer_new();
    (void)state;

    gateway_metrics_request(m, GW_UDP, 0);
    gateway_metrics_request(m, GW_UDP, prom_now_ns());
    gateway_metrics_events(m, GW_UDP, 7);
    gateway_metrics_refused(m, GW_UDP, GW_R_truncated);
    gateway_metrics_refused(m, GW_HTTP, GW_R_overloaded);
    gateway_metrics_refused(m, GW_GRPC, GW_R_not_found); /* not a gRPC reason, yet shown once it happened */
    /* The kernel's UDP drops come in bulk, and are not requests: the datagrams were never read. */
    gateway_metrics_refused_n(m, GW_UDP, GW_R_socket_buffer, 5000000000ull);
    gateway_metrics_write(m, b);
    char *s = text_of(b);
    assert_non_null(strstr(s, "ingest_requests_total{protocol=\"udp\"} 2\n"));
    assert_non_null(strstr(s, "ingest_events_received_total{protocol=\"udp\"} 7\n"));
    assert_non_null(strstr(s, "ingest_rejected_total{protocol=\"udp\",reason=\"truncated\"} 1\n"));
    assert_non_null(strstr(s, "ingest_rejected_total{protocol=\"udp\",reason=\"empty\"} 0\n"));
    assert_non_null(strstr(s, "ingest_dropped_total{protocol=\"http\",reason=\"overloaded\"} 1\n"));
    assert_non_null(strstr(s, "ingest_rejected_total{protocol=\"grpc\",reason=\"not_found\"} 1\n"));
    assert_non_null(
        strstr(s, "ingest_dropped_total{protocol=\"udp\",reason=\"socket_buffer\"} 5000000000\n"));
    /* Combinations that cannot happen are not listed at 0, and drops are never listed as rejections. */
    assert_null(strstr(s, "ingest_rejected_total{protocol=\"udp\",reason=\"method_not_allowed\"}"));
    assert_null(strstr(s, "ingest_rejected_total{protocol=\"http\",reason=\"overloaded\"}"));
    assert_null(strstr(s, "ingest_dropped_total{protocol=\"http\",reason=\"socket_buffer\"}"));
    /* Only the request with a start time is in the histogram. */
    assert_non_null(strstr(s, "ingest_request_duration_seconds_count{protocol=\"udp\"} 1\n"));
    free(s);
    evbuffer_free(b);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_samples),
        cmocka_unit_test(test_histogram_buckets_are_cumulative),
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_gateway_families),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
