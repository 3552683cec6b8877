/* gateway/cors: --cors-origins parsing, origin matching, the header lines, the webhook handshake's checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cors.h"

static void test_init_lists(void **state)
{
    gw_cors c;
    char err[256];
    (void)state;

    assert_int_equal(gw_cors_init(&c, "", 0, err, sizeof(err)), 0);
    assert_false(c.on);
    gw_cors_free(&c);
    assert_int_equal(gw_cors_init(&c, NULL, 1, err, sizeof(err)), 0);
    assert_false(c.on);
    gw_cors_free(&c);

    assert_int_equal(gw_cors_init(&c, " https://a.example.com ,http://localhost:3000,, http://[::1]:8080", 0,
                                  err, sizeof(err)),
                     0);
    assert_true(c.on);
    assert_false(c.any);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.origins[0], "https://a.example.com");
    assert_string_equal(c.origins[2], "http://[::1]:8080");
    gw_cors_free(&c);

    assert_int_equal(gw_cors_init(&c, "*", 0, err, sizeof(err)), 0);
    assert_true(c.on && c.any);
    gw_cors_free(&c);
}

static void test_init_refuses(void **state)
{
    gw_cors c;
    char err[256];
    char long_origin[GW_CORS_MAX_ORIGIN + 16];
    static const char *const bad[] = {
        "https://a.example.com/",
        "https://a.example.com/path",
        "a.example.com",
        "://a.example.com",
        "https://",
        "https://user@a.example.com",
        "https://a.example.com?x",
        "null",
        "*,https://a.example.com",
        "https://a.example.com,*",
        "1http://a.example.com",
    };
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(gw_cors_init(&c, bad[i], 0, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "--cors-origins"));
        assert_false(c.on);
        assert_null(c.origins);
    }
    /* Every site with its visitors' cookies: refused. */
    assert_int_equal(gw_cors_init(&c, "*", 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "--cors-credentials"));

    memcpy(long_origin, "https://", 8);
    memset(long_origin + 8, 'a', sizeof(long_origin) - 9);
    long_origin[sizeof(long_origin) - 1] = '\0';
    assert_int_equal(gw_cors_init(&c, long_origin, 0, err, sizeof(err)), -1);
}

static void test_allow_origin(void **state)
{
    gw_cors c;
    char err[256];
    (void)state;

    assert_int_equal(gw_cors_init(&c, "https://a.example.com,http://localhost:3000", 0, err, sizeof(err)), 0);
    assert_string_equal(gw_cors_allow_origin(&c, "https://a.example.com"), "https://a.example.com");
    assert_string_equal(gw_cors_allow_origin(&c, "HTTPS://A.example.COM"), "HTTPS://A.example.COM");
    assert_string_equal(gw_cors_allow_origin(&c, "http://localhost:3000"), "http://localhost:3000");
    assert_null(gw_cors_allow_origin(&c, "http://localhost:3001"));
    assert_null(gw_cors_allow_origin(&c, "http://a.example.com"));
    assert_null(gw_cors_allow_origin(&c, "https://a.example.com.evil.net"));
    assert_null(gw_cors_allow_origin(&c, "https://a.example.com/"));
    assert_null(gw_cors_allow_origin(&c, "null"));
    assert_null(gw_cors_allow_origin(&c, ""));
    assert_null(gw_cors_allow_origin(&c, NULL));
    gw_cors_free(&c);

    assert_int_equal(gw_cors_init(&c, "*", 0, err, sizeof(err)), 0);
    assert_string_equal(gw_cors_allow_origin(&c, "https://any.example"), "*");
    assert_null(gw_cors_allow_origin(&c, NULL));
    gw_cors_free(&c);
}

static void test_headers_allowed(void **state)
{
    (void)state;

    assert_true(gw_cors_headers_allowed(""));
    assert_true(gw_cors_headers_allowed("content-type"));
    assert_true(
        gw_cors_headers_allowed("authorization,ce-id,ce-source,content-encoding,content-type,ingest-ack"));
    assert_true(gw_cors_headers_allowed("Content-Type, Ingest-Ack , CE-Tenant"));
    assert_false(gw_cors_headers_allowed("content-type,x-forwarded-for"));
    assert_false(gw_cors_headers_allowed("cookie"));
    assert_false(gw_cors_headers_allowed("ce-"));
    assert_false(gw_cors_headers_allowed("content-type;x"));
    assert_false(gw_cors_headers_allowed("content type"));
    assert_false(gw_cors_headers_allowed("content-typex"));
}

static void test_header_lines(void **state)
{
    gw_cors c;
    char err[256], out[1024];
    size_t n;
    (void)state;

    /* Off: nothing at all. */
    assert_int_equal(gw_cors_init(&c, "", 0, err, sizeof(err)), 0);
    assert_int_equal(gw_cors_headers(&c, "https://a.example.com", 1, "content-type", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    gw_cors_free(&c);

    assert_int_equal(gw_cors_init(&c, "https://a.example.com", 1, err, sizeof(err)), 0);
    n = gw_cors_headers(&c, "https://a.example.com", 0, NULL, out, sizeof(out));
    assert_int_equal(n, strlen(out));
    assert_string_equal(out, "Vary: Origin\r\n"
                             "Access-Control-Allow-Origin: https://a.example.com\r\n"
                             "Access-Control-Allow-Credentials: true\r\n"
                             "Access-Control-Expose-Headers: Retry-After, WWW-Authenticate\r\n");
    gw_cors_headers(&c, "https://a.example.com", 1, "content-type,ce-id", out, sizeof(out));
    assert_string_equal(out, "Vary: Origin, Access-Control-Request-Headers\r\n"
                             "Access-Control-Allow-Origin: https://a.example.com\r\n"
                             "Access-Control-Allow-Credentials: true\r\n"
                             "Access-Control-Allow-Methods: POST, OPTIONS\r\n"
                             "Access-Control-Allow-Headers: content-type,ce-id\r\n"
                             "Access-Control-Max-Age: 600\r\n");
    /* Asked for more than is allowed: the fixed list. */
    gw_cors_headers(&c, "https://a.example.com", 1, "content-type,x-evil", out, sizeof(out));
    assert_non_null(strstr(
        out, "Access-Control-Allow-Headers: Content-Type, Content-Encoding, Authorization, Ingest-Ack\r\n"));
    /* No headers asked for: no Allow-Headers line. */
    gw_cors_headers(&c, "https://a.example.com", 1, NULL, out, sizeof(out));
    assert_null(strstr(out, "Allow-Headers"));
    /* Not listed, or no Origin: Vary only. */
    gw_cors_headers(&c, "https://b.example.com", 0, NULL, out, sizeof(out));
    assert_string_equal(out, "Vary: Origin\r\n");
    gw_cors_headers(&c, NULL, 1, "content-type", out, sizeof(out));
    assert_string_equal(out, "Vary: Origin, Access-Control-Request-Headers\r\n");
    /* A small buffer drops whole lines, never half of one. */
    n = gw_cors_headers(&c, "https://a.example.com", 0, NULL, out, 40);
    assert_string_equal(out, "Vary: Origin\r\n");
    assert_int_equal(n, 14);
    gw_cors_free(&c);

    assert_int_equal(gw_cors_init(&c, "*", 0, err, sizeof(err)), 0);
    gw_cors_headers(&c, "https://b.example.com", 0, NULL, out, sizeof(out));
    assert_non_null(strstr(out, "Access-Control-Allow-Origin: *\r\n"));
    assert_null(strstr(out, "Credentials"));
    gw_cors_free(&c);
}

static void test_webhook_checks(void **state)
{
    long long rate = 0;
    char long_name[300];
    (void)state;

    assert_true(gw_webhook_origin_ok("eventemitter.example.com"));
    assert_true(gw_webhook_origin_ok("eventgrid.azure.net"));
    assert_true(gw_webhook_origin_ok("sender-1.example.com:8443"));
    assert_false(gw_webhook_origin_ok(""));
    assert_false(gw_webhook_origin_ok("https://eventemitter.example.com/"));
    assert_false(gw_webhook_origin_ok("a b"));
    assert_false(gw_webhook_origin_ok("a\r\nSet-Cookie: x"));
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_false(gw_webhook_origin_ok(long_name));

    assert_int_equal(gw_webhook_rate_parse("120", &rate), 0);
    assert_int_equal(rate, 120);
    assert_int_equal(gw_webhook_rate_parse("1", &rate), 0);
    assert_int_equal(rate, 1);
    assert_int_equal(gw_webhook_rate_parse("0", &rate), -1);
    assert_int_equal(gw_webhook_rate_parse("", &rate), -1);
    assert_int_equal(gw_webhook_rate_parse("-5", &rate), -1);
    assert_int_equal(gw_webhook_rate_parse("12a", &rate), -1);
    assert_int_equal(gw_webhook_rate_parse(" 12", &rate), -1);
    assert_int_equal(gw_webhook_rate_parse("99999999999999999999999", &rate), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_lists),   cmocka_unit_test(test_init_refuses),
        cmocka_unit_test(test_allow_origin), cmocka_unit_test(test_headers_allowed),
        cmocka_unit_test(test_header_lines), cmocka_unit_test(test_webhook_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
