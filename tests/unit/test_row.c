/* sink/row.c and sink/batch.c: an Envelope as one line of COPY text for `events`. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "batch.h"
#include "envelope.h"
#include "row.h"

static ing_event_limits lim;

static int setup(void **state)
{
    (void)state;
    ing_event_limits_default(&lim);
    return 0;
}

static void set(ing_event *ev, const char *name, const char *value)
{
    ing_event_error err;
    assert_int_equal(ing_event_set_attr(ev, name, strlen(name), value, strlen(value), &lim, &err), 0);
}

/* The principal line_of() writes into the Envelope (NULL: none, as in records from before principals). */
static const char *principal;

/* Encode ev and return its COPY line (malloc'd). */
static char *line_of(ing_event *ev, envelope_protocol proto, int32_t part, int64_t off)
{
    ing_event_error err;
    envelope_meta meta = {.received_unix_nanos = 1700000000123456789LL,
                          .protocol = proto,
                          .peer = "127.0.0.1:5000",
                          .gateway_id = "gw",
                          .principal = principal};
    uint8_t *buf;
    size_t len, blen = 0, bcap = 0;
    char *out = NULL, why[128];

    assert_int_equal(ing_event_validate(ev, &lim, 0, &err), 0);
    assert_int_equal(envelope_encode(ev, &meta, &buf, &len), 0);
    assert_int_equal(row_append(buf, len, part, off, &out, &blen, &bcap, why, sizeof(why)), 0);
    free(buf);
    char *line = strndup(out, blen);
    free(out);
    return line;
}

static void test_json_row_every_column(void **state)
{
    ing_event ev;
    (void)state;

    ing_event_init(&ev);
    set(&ev, "id", "id 1");
    set(&ev, "source", "/src\\x");
    set(&ev, "type", "t");
    set(&ev, "subject", "sub");
    set(&ev, "time", "2021-06-01T12:30:45.25Z");
    set(&ev, "dataschema", "https://ex.com/s");
    set(&ev, "tenant", "a\"b");
    unsigned char *data = (unsigned char *)strdup("{\"k\":\"v\\\\n\"}");
    ing_event_set_data(&ev, EVENT_DATA_JSON, data, strlen((char *)data));
    principal = "billing";
    char *line = line_of(&ev, ENVELOPE_HTTP, 3, 42);
    principal = NULL;

    /* Backslashes escaped for COPY; JSON escapes doubled; absent fields \N; the time in UTC. */
    assert_string_equal(line,
                        "/src\\\\x\tid 1\tt\tsub\t2021-06-01T12:30:45.250000000Z\t\\N\thttps://ex.com/s\t"
                        "{\"tenant\":\"a\\\\\"b\"}\t{\"k\":\"v\\\\\\\\n\"}\t\\N\tHTTP\t127.0.0.1:5000\tgw\t"
                        "2023-11-14T22:13:20.123456000Z\t3\t42\tbilling\n");
    free(line);
    ing_event_clear(&ev);
}

static void test_bytes_and_text_rows(void **state)
{
    ing_event ev;
    (void)state;

    /* Binary data: data NULL, data_bytes as bytea hex. */
    ing_event_init(&ev);
    set(&ev, "id", "1");
    set(&ev, "source", "s");
    set(&ev, "type", "t");
    unsigned char *bin = malloc(3);
    memcpy(bin, "\x00\xff\n", 3);
    ing_event_set_data(&ev, EVENT_DATA_BINARY, bin, 3);
    char *line = line_of(&ev, ENVELOPE_UDP, 0, 0);
    assert_non_null(strstr(line, "\t\\N\t\\N\t\\\\x00ff0a\tUDP\t"));
    /* No principal (an older record): NULL. */
    assert_non_null(strstr(line, "\t0\t0\t\\N\n"));
    free(line);
    ing_event_clear(&ev);

    /* Text with a non-JSON content type: bytes too. */
    ing_event_init(&ev);
    set(&ev, "id", "1");
    set(&ev, "source", "s");
    set(&ev, "type", "t");
    set(&ev, "datacontenttype", "text/plain");
    ing_event_set_data(&ev, EVENT_DATA_TEXT, (unsigned char *)strdup("hi"), 2);
    line = line_of(&ev, ENVELOPE_GRPC, 0, 0);
    assert_non_null(strstr(line, "\ttext/plain\t\\N\t\\N\t\\N\t\\\\x6869\tGRPC\t"));
    free(line);
    ing_event_clear(&ev);
}

static void test_dead_letters(void **state)
{
    char *out = NULL, why[128];
    size_t blen = 0, bcap = 0;
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    (void)state;

    assert_int_equal(row_append(garbage, sizeof(garbage), 0, 0, &out, &blen, &bcap, why, sizeof(why)),
                     -EINVAL);
    assert_non_null(strstr(why, "not an ingest.v1.Envelope"));
    assert_int_equal(blen, 0);
    /* An empty Envelope decodes but has no event. */
    assert_int_equal(row_append((const uint8_t *)"", 0, 0, 0, &out, &blen, &bcap, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "no event"));
    free(out);

    batch b;
    batch_init(&b);
    assert_int_equal(batch_add(&b, 1, 7, "k", 1, garbage, sizeof(garbage)), 0);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.rows, 0);
    assert_non_null(b.rec[0].dead);
    assert_memory_equal(b.rec[0].value, garbage, sizeof(garbage));
    batch_clear(&b);
    assert_int_equal(b.n, 0);
    batch_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_row_every_column),
        cmocka_unit_test(test_bytes_and_text_rows),
        cmocka_unit_test(test_dead_letters),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
