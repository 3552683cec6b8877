#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* Run fn with stderr sent to a temporary file; return what it wrote (malloc'd). */
static char *capture(void (*fn)(void))
{
    FILE *tmp = tmpfile();
    int saved = dup(STDERR_FILENO);
    char *buf = calloc(1, 8192);

    assert_non_null(tmp);
    dup2(fileno(tmp), STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    size_t n = fread(buf, 1, 8191, tmp);
    buf[n] = '\0';
    fclose(tmp);
    return buf;
}

static int evaluated;

static int side_effect(void)
{
    return ++evaluated;
}

static void write_lines(void)
{
    LOG_INFO("http", "listening addr=%s", "0.0.0.0:8080");
    LOG_DEBUG("http", "not shown %d", side_effect());
    LOG_ERROR("kafka", "say \"hi\"\nnext");
}

static void test_logfmt_and_levels(void **state)
{
    (void)state;
    log_set_format(LOG_FORMAT_LOGFMT);
    log_set_level(LOG_LEVEL_INFO);
    evaluated = 0;
    char *out = capture(write_lines);

    /* Arguments of a line below the level are never evaluated. */
    assert_int_equal(evaluated, 0);
    assert_non_null(strstr(out, " level=info comp=http msg=\"listening addr=0.0.0.0:8080\"\n"));
    assert_null(strstr(out, "not shown"));
    /* Quotes and newlines are escaped: one event, one line. */
    assert_non_null(strstr(out, "level=error comp=kafka msg=\"say \\\"hi\\\"\\nnext\"\n"));
    assert_true(strncmp(out, "ts=", 3) == 0);
    free(out);
}

static void test_json_and_debug(void **state)
{
    (void)state;
    log_set_format(LOG_FORMAT_JSON);
    log_set_level(LOG_LEVEL_DEBUG);
    evaluated = 0;
    char *out = capture(write_lines);

    assert_int_equal(evaluated, 1);
    assert_non_null(strstr(out, "\"level\":\"debug\",\"comp\":\"http\",\"msg\":\"not shown 1\"}\n"));
    assert_non_null(strstr(out, "\"msg\":\"say \\\"hi\\\"\\nnext\"}"));
    free(out);
    log_set_format(LOG_FORMAT_LOGFMT);
    log_set_level(LOG_LEVEL_INFO);
}

static void test_level_names(void **state)
{
    (void)state;
    assert_int_equal(log_level_parse("error"), LOG_LEVEL_ERROR);
    assert_int_equal(log_level_parse("warning"), LOG_LEVEL_WARN);
    assert_int_equal(log_level_parse("debug"), LOG_LEVEL_DEBUG);
    assert_int_equal(log_level_parse("loud"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logfmt_and_levels),
        cmocka_unit_test(test_json_and_debug),
        cmocka_unit_test(test_level_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
