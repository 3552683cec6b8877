#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

typedef struct test_config {
    char *kafka_bootstrap;
    char *log_level;
    char *log_format;
    char *name;
    int64_t count;
    size_t body;
    int64_t timeout_ms;
    int flag;
    config_props props;
} test_config;

static const config_entry entries[] = {
    CONFIG_COMMON_ENTRIES(test_config),
    {"name", CONFIG_STRING, "alpha", offsetof(test_config, name), "A name", 0, 0, NULL},
    {"count", CONFIG_INT, "10", offsetof(test_config, count), "A count", 1, 100, NULL},
    {"max-body", CONFIG_BYTES, "8MiB", offsetof(test_config, body), "A size", 0, 0, NULL},
    {"ack-timeout", CONFIG_DURATION, "5s", offsetof(test_config, timeout_ms), "A duration", 0, 0, NULL},
    {"flag", CONFIG_BOOL, "false", offsetof(test_config, flag), "A switch", 0, 0, NULL},
};

static const config_program prog = {
    .name = "testprog",
    .summary = "A program for the tests.",
    .entries = entries,
    .n_entries = sizeof(entries) / sizeof(entries[0]),
    .props_offset = offsetof(test_config, props),
};

static int load(test_config *cfg, char **argv, char **envp, char *err)
{
    int argc = 0;

    while (argv && argv[argc])
        argc++;
    memset(cfg, 0, sizeof(*cfg));
    return config_load(&prog, cfg, argc, argv, envp, stdout, err, 512);
}

static void test_defaults(void **state)
{
    test_config cfg;
    char err[512];
    char *argv[] = {"prog", NULL};
    (void)state;

    assert_int_equal(load(&cfg, argv, NULL, err), 0);
    assert_string_equal(cfg.name, "alpha");
    assert_string_equal(cfg.kafka_bootstrap, "127.0.0.1:9092");
    assert_string_equal(cfg.log_level, "info");
    assert_int_equal(cfg.count, 10);
    assert_int_equal(cfg.body, 8 << 20);
    assert_int_equal(cfg.timeout_ms, 5000);
    assert_int_equal(cfg.flag, 0);
    assert_int_equal(cfg.props.n, 0);
    config_free(&prog, &cfg);
}

static void test_env_then_flags(void **state)
{
    test_config cfg;
    char err[512];
    char *envp[] = {"INGEST_NAME=beta",
                    "INGEST_COUNT=20",
                    "INGEST_MAX_BODY=64KiB",
                    "INGEST_OTHER=ignored",
                    "PATH=/bin",
                    "INGEST_KAFKA__SECURITY_PROTOCOL=SASL_SSL",
                    "INGEST_KAFKA_BOOTSTRAP=k:1",
                    NULL};
    char *argv[] = {"prog",
                    "--count=30",
                    "--ack-timeout",
                    "250ms",
                    "--flag",
                    "--kafka.linger.ms=7",
                    "--kafka.security.protocol",
                    "SSL",
                    NULL};
    (void)state;

    assert_int_equal(load(&cfg, argv, envp, err), 0);
    assert_string_equal(cfg.name, "beta"); /* env over default */
    assert_int_equal(cfg.count, 30);       /* flag over env */
    assert_int_equal(cfg.body, 64 << 10);
    assert_int_equal(cfg.timeout_ms, 250);
    assert_int_equal(cfg.flag, 1);
    assert_string_equal(cfg.kafka_bootstrap, "k:1");
    assert_int_equal(cfg.props.n, 2);
    assert_string_equal(cfg.props.keys[0], "security.protocol");
    assert_string_equal(cfg.props.values[0], "SSL"); /* the flag replaced the env value */
    assert_string_equal(cfg.props.keys[1], "linger.ms");
    assert_string_equal(cfg.props.values[1], "7");
    config_free(&prog, &cfg);
    assert_null(cfg.name);
}

static void expect_error(char **argv, char **envp, const char *part)
{
    test_config cfg;
    char err[512];

    assert_int_equal(load(&cfg, argv, envp, err), -EINVAL);
    if (strstr(err, part) == NULL)
        fail_msg("error '%s' lacks '%s'", err, part);
    config_free(&prog, &cfg);
}

static void test_errors_name_the_setting(void **state)
{
    (void)state;
    expect_error((char *[]){"p", "--count=abc", NULL}, NULL, "--count: 'abc' is not a valid N");
    expect_error((char *[]){"p", "--count=101", NULL}, NULL, "--count: 101 is out of range 1..100");
    expect_error((char *[]){"p", "--count=5x", NULL}, NULL, "--count");
    expect_error((char *[]){"p", NULL}, (char *[]){"INGEST_COUNT=0", NULL},
                 "INGEST_COUNT: 0 is out of range");
    expect_error((char *[]){"p", "--max-body=8XB", NULL}, NULL, "--max-body: '8XB' is not a valid BYTES");
    expect_error((char *[]){"p", "--ack-timeout=soon", NULL}, NULL, "--ack-timeout");
    expect_error((char *[]){"p", "--flag=maybe", NULL}, NULL, "--flag: 'maybe'");
    expect_error((char *[]){"p", "--log-level=loud", NULL}, NULL, "--log-level: 'loud' is not one of: error");
    expect_error((char *[]){"p", "--nope=1", NULL}, NULL, "unknown setting '--nope'");
    expect_error((char *[]){"p", "stray", NULL}, NULL, "unexpected argument 'stray'");
    expect_error((char *[]){"p", "--name", NULL}, NULL, "--name: needs a value");
    expect_error((char *[]){"p", "--kafka.acks", NULL}, NULL, "needs a value");
}

static void test_value_parsers(void **state)
{
    size_t sz;
    int64_t ms;
    int b;
    (void)state;

    assert_int_equal(config_parse_bytes("0", &sz), 0);
    assert_int_equal(sz, 0);
    assert_int_equal(config_parse_bytes("1GiB", &sz), 0);
    assert_int_equal(sz, 1u << 30);
    assert_int_equal(config_parse_bytes("-1", &sz), -EINVAL);
    assert_int_equal(config_parse_bytes("", &sz), -EINVAL);
    assert_int_equal(config_parse_bytes("99999999999999999999", &sz), -EINVAL);
    assert_int_equal(config_parse_duration_ms("2m", &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(config_parse_duration_ms("1h", &ms), 0);
    assert_int_equal(ms, 3600000);
    assert_int_equal(config_parse_duration_ms("5 s", &ms), -EINVAL);
    assert_int_equal(config_parse_bool("ON", &b), 0);
    assert_int_equal(b, 1);
    assert_int_equal(config_parse_bool("no", &b), 0);
    assert_int_equal(b, 0);
    assert_int_equal(config_parse_bool("", &b), -EINVAL);
}

static void test_help_lists_everything(void **state)
{
    test_config cfg;
    char err[512], *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    char *argv[] = {"prog", "--help", NULL};
    (void)state;

    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(config_load(&prog, &cfg, 2, argv, NULL, out, err, sizeof(err)), 1);
    fclose(out);
    for (size_t i = 0; i < prog.n_entries; i++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s=", entries[i].key);
        assert_non_null(strstr(buf, flag));
    }
    assert_non_null(strstr(buf, "env INGEST_MAX_BODY, default 8MiB"));
    assert_non_null(strstr(buf, "env INGEST_ACK_TIMEOUT, default 5s"));
    assert_non_null(strstr(buf, "--kafka.<property>"));
    assert_non_null(strstr(buf, "one of: error warn info debug"));
    free(buf);
    config_free(&prog, &cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_env_then_flags),
        cmocka_unit_test(test_errors_name_the_setting),
        cmocka_unit_test(test_value_parsers),
        cmocka_unit_test(test_help_lists_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
