#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event.h"

static ing_event_limits lim;

static int setup(void **state)
{
    (void)state;
    ing_event_limits_default(&lim);
    return 0;
}

static int set(ing_event *ev, const char *name, const char *value, ing_event_error *err)
{
    return ing_event_set_attr(ev, name, strlen(name), value, strlen(value), &lim, err);
}

/* A valid event to break one rule at a time. */
static void make_valid(ing_event *ev)
{
    ing_event_error err;

    ing_event_init(ev);
    assert_int_equal(set(ev, "source", "/sensors/1", &err), 0);
    assert_int_equal(set(ev, "type", "reading.taken", &err), 0);
}

static void expect_invalid(ing_event *ev, const char *field, const char *msg_part)
{
    ing_event_error err;

    memset(&err, 0, sizeof(err));
    assert_int_equal(ing_event_validate(ev, &lim, 7, &err), -EINVAL);
    assert_string_equal(err.field, field);
    assert_int_equal(err.index, 7);
    if (strstr(err.message, msg_part) == NULL)
        fail_msg("message '%s' lacks '%s'", err.message, msg_part);
    ing_event_clear(ev);
}

static void test_valid_minimal_and_full(void **state)
{
    ing_event ev;
    ing_event_error err;
    (void)state;

    make_valid(&ev);
    assert_int_equal(ing_event_validate(&ev, &lim, 0, &err), 0);
    assert_null(ev.id);
    assert_int_equal(ing_event_assign_id(&ev), 0);
    assert_int_equal(strlen(ev.id), 36);
    ing_event_clear(&ev);

    make_valid(&ev);
    assert_int_equal(set(&ev, "id", "abc-1", &err), 0);
    assert_int_equal(set(&ev, "specversion", "1.0", &err), 0);
    assert_int_equal(set(&ev, "subject", "room/1", &err), 0);
    assert_int_equal(set(&ev, "time", "2024-02-29T23:59:60.5+01:00", &err), 0);
    assert_int_equal(set(&ev, "datacontenttype", "application/json", &err), 0);
    assert_int_equal(set(&ev, "dataschema", "https://example.com/s.json", &err), 0);
    assert_int_equal(set(&ev, "traceparent", "00-abc", &err), 0);
    assert_int_equal(set(&ev, "n1", "42", &err), 0);
    assert_int_equal(ing_event_validate(&ev, &lim, 0, &err), 0);
    /* 2024-02-29T23:59:60.5+01:00 is 23:00:00.5 UTC on 2024-02-29 (the leap second rolls over). */
    assert_true(ev.time_sec == 1709247600 && ev.time_nsec == 500000000);
    assert_int_equal(ing_event_assign_id(&ev), 0);
    assert_string_equal(ev.id, "abc-1");
    assert_int_equal(ev.n_ext, 2);
    ing_event_clear(&ev);
}

static void test_required_and_empty(void **state)
{
    ing_event ev;
    ing_event_error err;
    (void)state;

    ing_event_init(&ev);
    assert_int_equal(set(&ev, "type", "t", &err), 0);
    expect_invalid(&ev, "source", "required");

    ing_event_init(&ev);
    assert_int_equal(set(&ev, "source", "s", &err), 0);
    expect_invalid(&ev, "type", "required");

    ing_event_init(&ev);
    assert_int_equal(set(&ev, "source", "", &err), 0);
    assert_int_equal(set(&ev, "type", "t", &err), 0);
    expect_invalid(&ev, "source", "empty");

    make_valid(&ev);
    assert_int_equal(set(&ev, "id", "", &err), 0);
    expect_invalid(&ev, "id", "empty");
}

static void test_lengths_and_utf8(void **state)
{
    ing_event ev;
    ing_event_error err;
    char big[1026];
    (void)state;

    memset(big, 'a', 1024);
    big[1024] = '\0';
    ing_event_init(&ev);
    assert_int_equal(set(&ev, "source", big, &err), 0);
    assert_int_equal(set(&ev, "type", big, &err), 0);
    assert_int_equal(ing_event_validate(&ev, &lim, 0, &err), 0);
    ing_event_clear(&ev);

    big[1024] = 'a';
    big[1025] = '\0';
    ing_event_init(&ev);
    assert_int_equal(set(&ev, "source", big, &err), 0);
    assert_int_equal(set(&ev, "type", "t", &err), 0);
    expect_invalid(&ev, "source", "longer than 1024");

    ing_event_init(&ev);
    assert_int_equal(set(&ev, "source", "s", &err), 0);
    assert_int_equal(set(&ev, "type", big, &err), 0);
    expect_invalid(&ev, "type", "longer than 1024");

    ing_event_init(&ev);
    assert_int_equal(set(&ev, "source", "\xc3\x28", &err), 0);
    assert_int_equal(set(&ev, "type", "t", &err), 0);
    expect_invalid(&ev, "source", "UTF-8");

    ing_event_init(&ev);
    assert_int_equal(set(&ev, "source", "s", &err), 0);
    assert_int_equal(set(&ev, "type", "a\x01", &err), 0);
    expect_invalid(&ev, "type", "control");

    make_valid(&ev);
    assert_int_equal(set(&ev, "subject", "\xed\xa0\x80", &err), 0); /* a surrogate */
    expect_invalid(&ev, "subject", "UTF-8");

    make_valid(&ev);
    assert_int_equal(set(&ev, "region", "\xff", &err), 0);
    expect_invalid(&ev, "extensions.region", "UTF-8");
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(utf8_valid("", 0));
    assert_true(utf8_valid("plain", 5));
    assert_true(utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9)); /* é € 😀 */
    assert_false(utf8_valid("\xc0\xaf", 2));                            /* overlong / */
    assert_false(utf8_valid("\xe0\x80\xaf", 3));                        /* overlong */
    assert_false(utf8_valid("\xed\xbf\xbf", 3));                        /* surrogate */
    assert_false(utf8_valid("\xf4\x90\x80\x80", 4));                    /* > U+10FFFF */
    assert_false(utf8_valid("\xe2\x82", 2));                            /* truncated */
    assert_false(utf8_valid("\x80", 1));                                /* lone continuation */
    assert_false(utf8_valid("\xf8\x88\x80\x80\x80", 5));                /* 5-byte form */
}

static void test_media_type_is_json(void **state)
{
    char t[300];
    (void)state;

    assert_true(media_type_is_json(NULL));
    assert_true(media_type_is_json(" "));
    assert_true(media_type_is_json("Application/JSON; charset=utf-8"));
    assert_true(media_type_is_json("text/json"));
    assert_true(media_type_is_json("application/vnd.acme+json"));
    assert_false(media_type_is_json("application/jsonx"));
    assert_false(media_type_is_json("+json"));
    assert_false(media_type_is_json(";+json"));
    assert_false(media_type_is_json("text/plain; x=+json"));
    /* Judged whole, however long (tests/fuzz): not by a first 127 bytes. */
    snprintf(t, sizeof(t), "application/vnd.%0200d+json", 0);
    assert_true(media_type_is_json(t));
    snprintf(t, sizeof(t), "application/vnd.%0106d+jsonxxxxxxxxxx", 0); /* "+json" ends byte 127 */
    assert_false(media_type_is_json(t));
}

static void test_specversion_time_schema(void **state)
{
    ing_event ev;
    ing_event_error err;
    (void)state;

    make_valid(&ev);
    assert_int_equal(set(&ev, "specversion", "0.3", &err), 0);
    expect_invalid(&ev, "specversion", "1.0");

    const char *bad_times[] = {
        "2024-13-01T00:00:00Z",    "2023-02-29T00:00:00Z",  "2024-01-01 00:00:00Z",  "2024-01-01T00:00:00",
        "2024-01-01T24:00:00Z",    "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00+1", "yesterday",
        "2024-01-01T00:00:00Zjunk"};
    for (size_t i = 0; i < sizeof(bad_times) / sizeof(bad_times[0]); i++) {
        make_valid(&ev);
        assert_int_equal(set(&ev, "time", bad_times[i], &err), 0);
        expect_invalid(&ev, "time", "RFC 3339");
    }

    int64_t s;
    int32_t ns;
    assert_int_equal(rfc3339_parse("1970-01-01T00:00:00Z", &s, &ns), 0);
    assert_true(s == 0 && ns == 0);
    assert_int_equal(rfc3339_parse("1969-12-31T23:59:59.999999999z", &s, &ns), 0);
    assert_true(s == -1 && ns == 999999999);
    assert_int_equal(rfc3339_parse("2000-01-01T00:00:00.123456789123-00:30", &s, &ns), 0);
    assert_true(s == 946686600 && ns == 123456789);
    /* The whole of RFC 3339's range, far past what int64 nanoseconds reach (1677 to 2262). */
    assert_int_equal(rfc3339_parse("0001-01-01T00:00:00Z", &s, &ns), 0);
    assert_true(s == -62135596800LL && ns == 0);
    assert_int_equal(rfc3339_parse("9999-12-31T23:59:59.999999999Z", &s, &ns), 0);
    assert_true(s == 253402300799LL && ns == 999999999);
    assert_int_equal(rfc3339_parse("1500-06-01T00:00:00.5Z", &s, &ns), 0);
    assert_true(s == -14818723200LL && ns == 500000000);
    assert_int_equal(rfc3339_parse("0000-12-31T23:59:59Z", &s, &ns), -EINVAL);
    /* Past 9999 in UTC, whatever the local date says: a Timestamp could not hold it (tests/fuzz). */
    assert_int_equal(rfc3339_parse("9999-12-31T23:59:60Z", &s, &ns), -EINVAL);
    assert_int_equal(rfc3339_parse("9999-12-31T20:00:00-05:00", &s, &ns), -EINVAL);
    assert_int_equal(rfc3339_parse("9999-12-31T20:00:00-03:59", &s, &ns), 0);
    assert_true(s == 253402300740LL && ns == 0);
    assert_int_equal(rfc3339_parse("0001-01-01T00:59:59+01:00", &s, &ns), -EINVAL);

    make_valid(&ev);
    assert_int_equal(set(&ev, "dataschema", "not a uri", &err), 0);
    expect_invalid(&ev, "dataschema", "URI");
}

static void test_set_attr_rules(void **state)
{
    ing_event ev;
    ing_event_error err;
    char many[8];
    (void)state;

    make_valid(&ev);
    assert_int_equal(set(&ev, "source", "again", &err), -EINVAL);
    assert_string_equal(err.field, "source");
    assert_non_null(strstr(err.message, "duplicate"));

    assert_int_equal(set(&ev, "Upper", "x", &err), -EINVAL);
    assert_string_equal(err.field, "extensions.Upper");
    assert_int_equal(set(&ev, "with_underscore", "x", &err), -EINVAL);
    assert_int_equal(set(&ev, "abcdefghijklmnopqrstu", "x", &err), -EINVAL); /* 21 characters */
    assert_non_null(strstr(err.message, "1 to 20"));
    assert_int_equal(set(&ev, "abcdefghijklmnopqrst", "x", &err), 0); /* 20 */
    assert_int_equal(set(&ev, "data", "x", &err), -EINVAL);
    assert_non_null(strstr(err.message, "reserved"));
    assert_int_equal(ing_event_set_attr(&ev, "", 0, "x", 1, &lim, &err), -EINVAL);
    assert_int_equal(ing_event_set_attr(&ev, "nul", 3, "a\0b", 3, &lim, &err), -EINVAL);
    assert_non_null(strstr(err.message, "NUL"));
    assert_int_equal(ing_event_set_attr(&ev, "subject", 7, "a\0b", 3, &lim, &err), -EINVAL);
    assert_int_equal(set(&ev, "abcdefghijklmnopqrst", "y", &err), -EINVAL);
    assert_non_null(strstr(err.message, "duplicate"));

    /* 64 extensions at most: one is there already. */
    for (int i = 1; i < 64; i++) {
        snprintf(many, sizeof(many), "e%d", i);
        assert_int_equal(set(&ev, many, "v", &err), 0);
    }
    assert_int_equal(set(&ev, "e64", "v", &err), -EINVAL);
    assert_non_null(strstr(err.message, "more than 64"));
    assert_int_equal(ing_event_validate(&ev, &lim, 0, &err), 0);
    ing_event_clear(&ev);
}

static void test_event_size_limit(void **state)
{
    ing_event ev;
    ing_event_error err;
    (void)state;

    make_valid(&ev);
    size_t n = lim.max_event_bytes;
    unsigned char *data = malloc(n + 1);
    memset(data, 'x', n);
    data[n] = '\0';
    ing_event_set_data(&ev, EVENT_DATA_BINARY, data, n);
    assert_int_equal(ing_event_validate(&ev, &lim, 3, &err), -EINVAL);
    assert_int_equal(err.code, ING_ERR_TOO_LARGE);
    assert_int_equal(err.index, 3);
    ing_event_clear(&ev);

    make_valid(&ev);
    data = malloc(4);
    memcpy(data, "\xc3\x28", 3);
    ing_event_set_data(&ev, EVENT_DATA_TEXT, data, 2);
    expect_invalid(&ev, "data", "UTF-8");
}

static void test_batch(void **state)
{
    ing_event_batch b;
    ing_event_error err;
    (void)state;

    ing_event_batch_init(&b);
    for (int i = 0; i < 100; i++) {
        ing_event *ev = ing_event_batch_add(&b);
        assert_non_null(ev);
        assert_int_equal(set(ev, "source", "s", &err), 0);
    }
    assert_int_equal(b.n, 100);
    assert_string_equal(b.ev[99].source, "s");
    ing_event_batch_clear(&b);
    assert_int_equal(b.n, 0);
    ing_event_clear(NULL);
}

/*
 * ing_event_reserve(): strings go into the block while it has room, then are
 * allocated alone; clearing frees each kind rightly (ASan in CI would report
 * a free of a pointer inside the block, or a leak of one outside it).
 */
static void test_store(void **state)
{
    ing_event ev;
    ing_event_error err;
    (void)state;

    ing_event_init(&ev);
    assert_int_equal(ing_event_reserve(&ev, 16), 0);
    assert_int_equal(set(&ev, "source", "/abc", &err), 0); /* 5 bytes: in the block */
    assert_ptr_equal(ev.source, ev.store);
    assert_int_equal(set(&ev, "type", "t.long.enough", &err), 0); /* 14: past the 11 left, alone */
    assert_true(ev.type < ev.store || ev.type >= ev.store + ev.store_cap);
    assert_int_equal(set(&ev, "x", "123456", &err), 0); /* name 2 + value 7: the 9 still free, then alone */
    assert_ptr_equal(ev.ext[0].name, ev.store + 5);
    assert_ptr_equal(ev.ext[0].value, ev.store + 7);
    assert_int_equal(ing_event_reserve(&ev, 64), 0); /* one block per event: a no-op now */
    assert_int_equal(ev.store_cap, 16);
    unsigned char *d = ing_event_alloc(&ev, 2);
    memcpy(d, "{}", 2);
    ing_event_set_data(&ev, EVENT_DATA_JSON, d, 2);
    ing_event_set_data(&ev, EVENT_DATA_JSON, (unsigned char *)strdup("[]"), 2); /* releases the first */
    assert_int_equal(ing_event_assign_id(&ev), 0);
    char first[64];
    snprintf(first, sizeof(first), "%s", ev.id);
    assert_int_equal(ing_event_new_id(&ev), 0);
    assert_int_equal(strlen(ev.id), 36);
    assert_string_not_equal(ev.id, first); /* a new UUIDv7 (the allocator may hand back the same chunk) */
    assert_int_equal(ing_event_validate(&ev, &lim, -1, &err), 0);
    assert_string_equal(ev.source, "/abc");
    assert_string_equal(ev.type, "t.long.enough");
    assert_string_equal(ev.ext[0].value, "123456");
    ing_event_clear(&ev);
    assert_null(ev.store);

    /* An id in the block is replaced too. */
    ing_event_init(&ev);
    assert_int_equal(ing_event_reserve(&ev, 2 * 37), 0);
    assert_int_equal(ing_event_assign_id(&ev), 0);
    assert_ptr_equal(ev.id, ev.store);
    assert_int_equal(ing_event_new_id(&ev), 0);
    assert_ptr_equal(ev.id, ev.store + 37);
    ing_event_clear(&ev);
}

/*
 * An event without a block (binary-mode HTTP builds them so): everything is
 * malloc'd and freed one by one, and no pointer is ever compared against a
 * NULL block. gcc's UBSan lets NULL + 0 pass; clang's (tests/fuzz) does not.
 */
static void test_no_store(void **state)
{
    ing_event ev;
    ing_event_error err;
    (void)state;

    ing_event_init(&ev);
    assert_int_equal(set(&ev, "source", "/abc", &err), 0);
    assert_int_equal(set(&ev, "type", "t", &err), 0);
    assert_int_equal(set(&ev, "x", "1", &err), 0);
    ing_event_set_data(&ev, EVENT_DATA_BINARY, ing_event_alloc(&ev, 3), 3);
    ing_event_set_data(&ev, EVENT_DATA_BINARY, ing_event_alloc(&ev, 0), 0); /* releases the first */
    assert_null(ev.store);
    assert_int_equal(ing_event_new_id(&ev), 0);
    assert_int_equal(ing_event_validate(&ev, &lim, -1, &err), 0);
    ing_event_clear(&ev);
    assert_null(ev.source);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_minimal_and_full),
        cmocka_unit_test(test_required_and_empty),
        cmocka_unit_test(test_lengths_and_utf8),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_media_type_is_json),
        cmocka_unit_test(test_specversion_time_schema),
        cmocka_unit_test(test_set_attr_rules),
        cmocka_unit_test(test_event_size_limit),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_store),
        cmocka_unit_test(test_no_store),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
