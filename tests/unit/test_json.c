#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"

static ing_event_limits lim;

static int setup(void **state)
{
    (void)state;
    ing_event_limits_default(&lim);
    return 0;
}

static int parse_len(const char *buf, size_t len, json_form form, ing_event_batch *b, ing_event_error *err)
{
    memset(err, 0, sizeof(*err));
    err->index = -2;
    return json_parse_events(buf, len, form, &lim, b, err);
}

static int parse(const char *s, json_form form, ing_event_batch *b, ing_event_error *err)
{
    return parse_len(s, strlen(s), form, b, err);
}

/* Parse one event that must be accepted; the caller clears *b. */
static ing_event *one(const char *s, ing_event_batch *b)
{
    ing_event_error err;

    ing_event_batch_init(b);
    if (parse(s, JSON_FORM_EVENT, b, &err) != 0)
        fail_msg("rejected %s: %s: %s (field '%s')", s, ing_errcode_name(err.code), err.message, err.field);
    assert_int_equal(b->n, 1);
    return &b->ev[0];
}

static const char *ext(const ing_event *ev, const char *name)
{
    for (size_t i = 0; i < ev->n_ext; i++)
        if (strcmp(ev->ext[i].name, name) == 0)
            return ev->ext[i].value;
    return NULL;
}

/* The data text of a one-event document whose `data` is `json`. */
static void expect_data(const char *json, const char *want)
{
    ing_event_batch b;
    char doc[512];

    snprintf(doc, sizeof(doc), "{\"source\":\"s\",\"type\":\"t\",\"data\":%s}", json);
    ing_event *ev = one(doc, &b);
    assert_int_equal(ev->data_kind, EVENT_DATA_JSON);
    assert_int_equal(ev->data_len, strlen(want));
    assert_memory_equal(ev->data, want, ev->data_len);
    assert_int_equal(ev->data[ev->data_len], '\0');
    ing_event_batch_clear(&b);
}

typedef struct bad {
    const char *in;
    size_t len; /* 0: strlen(in) */
    json_form form;
    ing_errcode code;
    long index;
    const char *field;
} bad;

static void expect_bad(const bad *t)
{
    ing_event_batch b;
    ing_event_error err;
    size_t len = t->len ? t->len : strlen(t->in);

    ing_event_batch_init(&b);
    int rc = parse_len(t->in, len, t->form, &b, &err);
    if (rc != -EINVAL || err.code != t->code || err.index != t->index || strcmp(err.field, t->field) != 0)
        fail_msg("input %.80s (form %d): rc %d code %s index %ld field '%s' message '%s'; want %s index %ld "
                 "field '%s'",
                 t->in, (int)t->form, rc, err.code ? ing_errcode_name(err.code) : "(none)", err.index,
                 err.field, err.message, ing_errcode_name(t->code), t->index, t->field);
    assert_true(err.message[0] != '\0');
    assert_int_equal(b.n, 0);
    ing_event_batch_clear(&b);
}

#define MAL ING_ERR_MALFORMED_JSON
#define INV ING_ERR_INVALID_EVENT
#define EV  JSON_FORM_EVENT
#define BA  JSON_FORM_BATCH
#define ND  JSON_FORM_NDJSON
#define ANY JSON_FORM_ANY

static void test_event_all_attributes(void **state)
{
    ing_event_batch b;
    (void)state;

    ing_event *ev =
        one("{ \"specversion\" : \"1.0\", \"id\":\"A-1\", \"source\":\"/s\", \"type\":\"t.x\",\n"
            "  \"subject\":\"sub\", \"time\":\"2024-06-01T12:00:00Z\",\n"
            "  \"datacontenttype\":\"application/json\", \"dataschema\":\"https://x/s.json\",\n"
            "  \"tenant\":\"acme\", \"count\":42, \"ratio\":1.50, \"big\":-1e3, \"on\":true, \"off\":false,\n"
            "  \"data\" : { \"a\" : 1, \"b\" : [ true, null, \"x\" ] } }\r\n",
            &b);
    assert_string_equal(ev->specversion, "1.0");
    assert_string_equal(ev->id, "A-1");
    assert_string_equal(ev->source, "/s");
    assert_string_equal(ev->type, "t.x");
    assert_string_equal(ev->subject, "sub");
    assert_string_equal(ev->time, "2024-06-01T12:00:00Z");
    assert_string_equal(ev->datacontenttype, "application/json");
    assert_string_equal(ev->dataschema, "https://x/s.json");
    assert_int_equal(ev->n_ext, 6);
    assert_string_equal(ext(ev, "tenant"), "acme");
    /* Numbers travel as the JSON text that was sent. */
    assert_string_equal(ext(ev, "count"), "42");
    assert_string_equal(ext(ev, "ratio"), "1.50");
    assert_string_equal(ext(ev, "big"), "-1e3");
    assert_string_equal(ext(ev, "on"), "true");
    assert_string_equal(ext(ev, "off"), "false");
    assert_int_equal(ev->data_kind, EVENT_DATA_JSON);
    assert_string_equal((char *)ev->data, "{\"a\":1,\"b\":[true,null,\"x\"]}");
    assert_int_equal(ing_event_validate(ev, &lim, 0, &(ing_event_error){0}), 0);
    ing_event_batch_clear(&b);
}

static void test_forms(void **state)
{
    ing_event_batch b;
    ing_event_error err;
    (void)state;

    ing_event_batch_init(&b);
    /* A batch, with whitespace everywhere it may be. */
    assert_int_equal(
        parse(" [ {\"source\":\"a\"} ,\n{\"source\":\"b\"},{\"source\":\"c\"} ] \n", BA, &b, &err), 0);
    assert_int_equal(b.n, 3);
    assert_string_equal(b.ev[2].source, "c");
    ing_event_batch_clear(&b);

    /* The empty batch is valid CloudEvents; whether a request may be empty is the caller's rule. */
    assert_int_equal(parse("[ ]", BA, &b, &err), 0);
    assert_int_equal(b.n, 0);
    assert_int_equal(parse("[]", ANY, &b, &err), 0);
    assert_int_equal(b.n, 0);

    /* application/json: an object is one event, an array a batch. */
    assert_int_equal(parse("\n{\"source\":\"a\"}", ANY, &b, &err), 0);
    assert_int_equal(b.n, 1);
    ing_event_batch_clear(&b);
    assert_int_equal(parse("[{\"source\":\"a\"},{\"source\":\"b\"}]", ANY, &b, &err), 0);
    assert_int_equal(b.n, 2);
    ing_event_batch_clear(&b);

    /* Events are appended to what the caller already has. */
    assert_int_equal(parse("{\"source\":\"first\"}", EV, &b, &err), 0);
    assert_int_equal(parse("[{\"source\":\"second\"}]", BA, &b, &err), 0);
    assert_int_equal(b.n, 2);
    assert_string_equal(b.ev[1].source, "second");
    /* ...and a failure leaves them as they were. */
    assert_int_equal(parse("[{\"source\":\"x\"},{\"source\":1}]", BA, &b, &err), -EINVAL);
    assert_int_equal(b.n, 2);
    assert_string_equal(b.ev[1].source, "second");
    ing_event_batch_clear(&b);

    /* No buffer at all is an empty body. */
    assert_int_equal(json_parse_events(NULL, 0, JSON_FORM_EVENT, &lim, &b, &err), -EINVAL);
    assert_int_equal(err.code, ING_ERR_MALFORMED_JSON);
    assert_int_equal(json_parse_events(NULL, 0, JSON_FORM_NDJSON, &lim, &b, &err), 0);
    assert_int_equal(b.n, 0);
    /* No limits: the contract's defaults. */
    assert_int_equal(json_parse_events("{}", 2, JSON_FORM_EVENT, NULL, &b, &err), 0);
    ing_event_batch_clear(&b);
}

static void test_ndjson(void **state)
{
    ing_event_batch b;
    ing_event_error err;
    (void)state;

    ing_event_batch_init(&b);
    const char *in = "{\"source\":\"a\"}\n"
                     "\n"
                     "   \t \r\n"
                     "{\"source\":\"b\"}\r\n"
                     "  {\"source\":\"c\",\"data\":\"x\\ny\"}  \n"
                     "{\"source\":\"d\"}";
    assert_int_equal(parse(in, ND, &b, &err), 0);
    assert_int_equal(b.n, 4);
    assert_string_equal(b.ev[1].source, "b");
    assert_string_equal((char *)b.ev[2].data, "\"x\\ny\"");
    assert_string_equal(b.ev[3].source, "d");
    ing_event_batch_clear(&b);

    /* Blank lines take no index; the message names the line. */
    assert_int_equal(parse("\n{\"source\":\"a\"}\n\n{\"source\":\"b\"}\n{\"source\":\"c\",}\n", ND, &b, &err),
                     -EINVAL);
    assert_int_equal(err.code, ING_ERR_MALFORMED_JSON);
    assert_int_equal(err.index, 2);
    assert_non_null(strstr(err.message, "(line 5)"));
    assert_int_equal(b.n, 0);

    /* Errors from attribute rules get the index and line too. */
    assert_int_equal(parse("{}\n{\"Bad\":\"x\"}\n", ND, &b, &err), -EINVAL);
    assert_int_equal(err.code, ING_ERR_INVALID_EVENT);
    assert_int_equal(err.index, 1);
    assert_string_equal(err.field, "extensions.Bad");
    assert_non_null(strstr(err.message, "(line 2)"));

    /* Only blank lines: no events. */
    assert_int_equal(parse("\n \r\n\t\n", ND, &b, &err), 0);
    assert_int_equal(b.n, 0);
    ing_event_batch_clear(&b);
}

static void test_data_kinds(void **state)
{
    ing_event_batch b;
    ing_event *ev;
    (void)state;

    expect_data("{\"k\": [1, 2.5, \"x\"], \"n\": {}}", "{\"k\":[1,2.5,\"x\"],\"n\":{}}");
    expect_data("[ ]", "[]");
    expect_data("\"text\"", "\"text\"");
    expect_data("-12", "-12");
    expect_data("true", "true");
    expect_data("false", "false");
    /* Escapes and non-ASCII stay as written; only whitespace between tokens goes. */
    expect_data("\"a/b \\/ \\\" \\\\ \\b\\f\\n\\r\\t\"", "\"a/b \\/ \\\" \\\\ \\b\\f\\n\\r\\t\"");
    expect_data("\"\xc3\xa9 \\u00e9 \xe4\xb8\xad \\ud83d\\ude00\"",
                "\"\xc3\xa9 \\u00e9 \xe4\xb8\xad \\ud83d\\ude00\"");
    expect_data(" {\n\t\"a b\" : [ 1 ,\r\n 2 ] } ", "{\"a b\":[1,2]}");
    /* Other escaped controls are data Postgres's jsonb takes; \u0000 is not (test_storable_data). */
    expect_data("\"\\u001f\"", "\"\\u001f\"");
    /* Numbers in data are kept as written, within Postgres's numeric. */
    expect_data("18446744073709551616", "18446744073709551616");
    expect_data("[1e131071,-1E-16383,0e999999999,0.1e131072,1.0e+0,10e131070]",
                "[1e131071,-1E-16383,0e999999999,0.1e131072,1.0e+0,10e131070]");

    /* A string under a non-JSON content type is that text, not its JSON quotes; under JSON it stays JSON. */
    ev = one("{\"datacontenttype\":\"text/plain; charset=utf-8\",\"data\":\"h\\u00e9llo\\n\"}", &b);
    assert_int_equal(ev->data_kind, EVENT_DATA_TEXT);
    assert_string_equal((char *)ev->data, "h\xc3\xa9llo\n");
    ing_event_batch_clear(&b);
    ev = one("{\"datacontenttype\":\"application/octet-stream\",\"data\":\"a\\u0000b\"}", &b);
    assert_int_equal(ev->data_kind, EVENT_DATA_BINARY);
    assert_int_equal(ev->data_len, 3);
    assert_memory_equal(ev->data, "a\0b", 3);
    ing_event_batch_clear(&b);
    ev = one("{\"datacontenttype\":\"application/vnd.x+json\",\"data\":\"hello\"}", &b);
    assert_int_equal(ev->data_kind, EVENT_DATA_JSON);
    assert_string_equal((char *)ev->data, "\"hello\"");
    ing_event_batch_clear(&b);

    /* data: null is no data. */
    ev = one("{\"data\":null}", &b);
    assert_int_equal(ev->data_kind, EVENT_DATA_NONE);
    assert_null(ev->data);
    ing_event_batch_clear(&b);

    /* data_base64: padded, unpadded, empty. */
    ev = one("{\"data_base64\":\"AAEC/w==\"}", &b);
    assert_int_equal(ev->data_kind, EVENT_DATA_BINARY);
    assert_int_equal(ev->data_len, 4);
    assert_memory_equal(ev->data, "\x00\x01\x02\xff", 4);
    ing_event_batch_clear(&b);
    ev = one("{\"data_base64\":\"AAEC/w\"}", &b);
    assert_int_equal(ev->data_len, 4);
    assert_memory_equal(ev->data, "\x00\x01\x02\xff", 4);
    ing_event_batch_clear(&b);
    ev = one("{\"data_base64\":\"aGVsbG8gd29ybGQ=\"}", &b);
    assert_string_equal((char *)ev->data, "hello world");
    ing_event_batch_clear(&b);
    ev = one("{\"data_base64\":\"aGVsbG8gd29ybGQh\"}", &b);
    assert_string_equal((char *)ev->data, "hello world!");
    ing_event_batch_clear(&b);
    ev = one("{\"data_base64\":\"+/+/\"}", &b);
    assert_memory_equal(ev->data, "\xfb\xff\xbf", 3);
    ing_event_batch_clear(&b);
    ev = one("{\"data_base64\":\"\"}", &b);
    assert_int_equal(ev->data_kind, EVENT_DATA_BINARY);
    assert_int_equal(ev->data_len, 0);
    ing_event_batch_clear(&b);
    ev = one("{\"data_base64\":null}", &b);
    assert_int_equal(ev->data_kind, EVENT_DATA_NONE);
    ing_event_batch_clear(&b);
    /* A null data does not clash with data_base64. */
    ev = one("{\"data\":null,\"data_base64\":\"QQ==\"}", &b);
    assert_int_equal(ev->data_kind, EVENT_DATA_BINARY);
    assert_string_equal((char *)ev->data, "A");
    ing_event_batch_clear(&b);
}

static void test_attribute_types(void **state)
{
    ing_event_batch b;
    ing_event *ev;
    (void)state;

    /* null is unset, for every optional attribute (CloudEvents JSON format, 2.2). */
    ev = one(
        "{\"source\":\"s\",\"type\":\"t\",\"id\":null,\"specversion\":null,\"subject\":null,\"time\":null,"
        "\"datacontenttype\":null,\"dataschema\":null,\"unsetext\":null}",
        &b);
    assert_null(ev->id);
    assert_null(ev->subject);
    assert_null(ev->time);
    assert_int_equal(ev->n_ext, 0);
    ing_event_batch_clear(&b);
    /* ...and for source and type too, which validation then requires. */
    ev = one("{\"source\":null,\"type\":null}", &b);
    assert_null(ev->source);
    ing_event_error err;
    assert_int_equal(ing_event_validate(ev, &lim, 0, &err), -EINVAL);
    assert_string_equal(err.field, "source");
    ing_event_batch_clear(&b);

    /* Strings keep what JSON escapes meant. */
    ev = one("{\"source\":\"/a\\/b\\u00e9\",\"subject\":\"tab\\there\"}", &b);
    assert_string_equal(ev->source, "/a/b\xc3\xa9");
    assert_string_equal(ev->subject, "tab\there");
    ing_event_batch_clear(&b);

    /* Every context attribute must be a string. */
    static const bad cases[] = {
        {"{\"source\":1}", 0, EV, INV, -1, "source"},
        {"{\"type\":true}", 0, EV, INV, -1, "type"},
        {"{\"id\":{}}", 0, EV, INV, -1, "id"},
        {"{\"time\":[]}", 0, EV, INV, -1, "time"},
        {"{\"subject\":1.5}", 0, EV, INV, -1, "subject"},
        {"{\"specversion\":1.0}", 0, EV, INV, -1, "specversion"},
        {"{\"datacontenttype\":false}", 0, EV, INV, -1, "datacontenttype"},
        {"{\"dataschema\":0}", 0, EV, INV, -1, "dataschema"},
        {"[{},{\"source\":[\"a\"]}]", 0, BA, INV, 1, "source"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_bad(&cases[i]);

    ing_event_batch_init(&b);
    assert_int_equal(parse("{\"source\":5}", EV, &b, &err), -EINVAL);
    assert_string_equal(err.message, "source: must be a string");
    ing_event_batch_clear(&b);
}

static void test_extensions(void **state)
{
    ing_event_batch b;
    ing_event *ev;
    (void)state;

    ev =
        one("{\"s\":\"str\",\"i\":-7,\"u\":18446744073709551615,\"r\":0.1,\"e\":2.5E+3,\"z\":-0.0,\"t\":true,"
            "\"f\":false,\"ab1\":\"\\u00e9\"}",
            &b);
    assert_int_equal(ev->n_ext, 9);
    assert_string_equal(ext(ev, "s"), "str");
    assert_string_equal(ext(ev, "i"), "-7");
    assert_string_equal(ext(ev, "u"), "18446744073709551615");
    assert_string_equal(ext(ev, "r"), "0.1");
    assert_string_equal(ext(ev, "e"), "2.5E+3");
    assert_string_equal(ext(ev, "z"), "-0.0");
    assert_string_equal(ext(ev, "t"), "true");
    assert_string_equal(ext(ev, "f"), "false");
    assert_string_equal(ext(ev, "ab1"), "\xc3\xa9");
    ing_event_batch_clear(&b);

    static const bad cases[] = {
        {"{\"ext\":{}}", 0, EV, INV, -1, "extensions.ext"},
        {"{\"ext\":[1]}", 0, EV, INV, -1, "extensions.ext"},
        {"[{},{},{\"ext\":{\"a\":1}}]", 0, BA, INV, 2, "extensions.ext"},
        /* ing_event_set_attr's rules, with the batch index added. */
        {"{\"Upper\":\"x\"}", 0, EV, INV, -1, "extensions.Upper"},
        {"[{},{\"with-dash\":\"x\"}]", 0, BA, INV, 1, "extensions.with-dash"},
        {"{\"waytoolongextensionname\":1}", 0, EV, INV, -1, "extensions.waytoolongextensionname"},
        {"{\"e\":\"a\\u0000b\"}", 0, EV, INV, -1, "extensions.e"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_bad(&cases[i]);

    /* At most lim.max_extensions. */
    char doc[4096];
    size_t n = (size_t)snprintf(doc, sizeof(doc), "{");
    for (size_t i = 0; i <= lim.max_extensions; i++)
        n += (size_t)snprintf(doc + n, sizeof(doc) - n, "%s\"x%zu\":1", i ? "," : "", i);
    snprintf(doc + n, sizeof(doc) - n, "}");
    expect_bad(&(bad){doc, 0, EV, INV, -1, "extensions.x64"});
}

/* Strings are skipped by quote search: a quote ends a string only after an even run of backslashes. */
static void test_backslash_runs(void **state)
{
    ing_event_batch b;
    ing_event *ev;
    (void)state;

    ev = one("{\"a\":\"\",\"b\":\"x\\\\\",\"c\":\"\\\\\\\"q\\\\\",\"d\":\"\\\"\\\"\","
             "\"data\":{\"k\":\"v\\\\\",\"l\":[\"\\\"]\",\"}\"]},\"e\":\"end\"}",
             &b);
    assert_string_equal(ext(ev, "a"), "");
    assert_string_equal(ext(ev, "b"), "x\\");
    assert_string_equal(ext(ev, "c"), "\\\"q\\");
    assert_string_equal(ext(ev, "d"), "\"\"");
    assert_string_equal(ext(ev, "e"), "end");
    assert_int_equal(ev->data_kind, EVENT_DATA_JSON);
    assert_string_equal((const char *)ev->data, "{\"k\":\"v\\\\\",\"l\":[\"\\\"]\",\"}\"]}");
    ing_event_batch_clear(&b);
}

static void test_nul(void **state)
{
    (void)state;
    static const bad cases[] = {
        /* Attributes are C strings: ing_event_set_attr refuses NUL. */
        {"{\"source\":\"a\\u0000b\"}", 0, EV, INV, -1, "source"},
        {"[{},{\"type\":\"\\u0000\"}]", 0, BA, INV, 1, "type"},
        /* Member names too: json-c would cut them at the NUL. */
        {"{\"a\\u0000b\":\"x\"}", 0, EV, MAL, -1, ""},
        {"{\"data\":{\"k\\u0000\":1}}", 0, EV, MAL, -1, ""},
        /* A raw NUL byte is a control character, inside a string or out. */
        {"{\"a\":\"x\0y\"}", 11, EV, MAL, -1, ""},
        {"{\"a\":1}\0", 8, EV, MAL, -1, ""},
        {"{\"a\":1\0}", 8, EV, MAL, -1, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_bad(&cases[i]);
}

/* Thirty-odd inputs that must be refused, each with its code, index and field. */
/*
 * Data the sink stores in Postgres's jsonb must be what jsonb takes: the
 * same refusals as Postgres 15 gives (measured with psql: "value overflows
 * numeric format", "unsupported Unicode escape sequence"), as invalid_event
 * naming data, in every mode.
 */
static void test_storable_data(void **state)
{
    static const char *const refused[] = {
        "1e131072",    "-1e131072",    "1e-16384",      "0.000e-99999",  "123e-16400",
        "1e999999999", "0e1073741823", "0e-1073741822", "\"a\\u0000b\"", "{\"k\":[\"\\u0000\"]}",
    };
    ing_event_batch b;
    ing_event_error err;
    char doc[256];
    (void)state;

    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        snprintf(doc, sizeof(doc), "{\"source\":\"s\",\"type\":\"t\",\"data\":%s}", refused[i]);
        ing_event_batch_init(&b);
        if (parse(doc, JSON_FORM_EVENT, &b, &err) != -EINVAL || err.code != ING_ERR_INVALID_EVENT ||
            strcmp(err.field, "data") != 0)
            fail_msg("structured data %s: want invalid_event on data, got %s '%s'", refused[i],
                     ing_errcode_name(err.code), err.message);
        ing_event_batch_clear(&b);
        /* A binary-mode JSON body, or JSON text_data: the same rule. */
        if (json_check(refused[i], strlen(refused[i]), NULL, &err) != -EINVAL ||
            err.code != ING_ERR_INVALID_EVENT)
            fail_msg("json_check %s: want invalid_event, got %s '%s'", refused[i], ing_errcode_name(err.code),
                     err.message);
    }
    /* Binary mode takes what structured mode takes: integers need not fit 64 bits in data. */
    assert_int_equal(json_check("{\"n\":18446744073709551616}", 26, NULL, &err), 0);
    assert_int_equal(json_check("[1e131071,0e1073741822,1e-16383]", 32, NULL, &err), 0);
    /* A string under a non-JSON content type is text, and may hold U+0000 (stored as bytes). */
    ing_event *ev = one(
        "{\"source\":\"s\",\"type\":\"t\",\"datacontenttype\":\"text/plain\",\"data\":\"a\\u0000b\"}", &b);
    assert_int_equal(ev->data_kind, EVENT_DATA_BINARY);
    ing_event_batch_clear(&b);
}

static void test_bad_catalogue(void **state)
{
    (void)state;
    static const bad cases[] = {
        /* Not JSON at all, or cut short. */
        {"", 0, EV, MAL, -1, ""},
        {" \n\t", 0, EV, MAL, -1, ""},
        {"{", 0, EV, MAL, -1, ""},
        {"{\"source\":\"a\"", 0, EV, MAL, -1, ""},
        {"{\"source\":\"a", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\\u00", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\\", 0, EV, MAL, -1, ""},
        {"{\"a\":tru", 0, EV, MAL, -1, ""},
        {"{\"a\":-", 0, EV, MAL, -1, ""},
        /* Structure: json-c's part. */
        {"{\"source\":\"a\",}", 0, EV, MAL, -1, ""},
        {"{\"a\":[1,]}", 0, EV, MAL, -1, ""},
        {"{\"a\":[1 2]}", 0, EV, MAL, -1, ""},
        {"{\"a\" 1}", 0, EV, MAL, -1, ""},
        {"{\"a\":1 \"b\":2}", 0, EV, MAL, -1, ""},
        {"{\"a\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":}", 0, EV, MAL, -1, ""},
        {"{,}", 0, EV, MAL, -1, ""},
        {"{1:2}", 0, EV, MAL, -1, ""},
        {"{\"a\":[1}", 0, EV, MAL, -1, ""},
        {"{\"a\":1]", 0, EV, MAL, -1, ""},
        {"{\"a\":1]}", 0, EV, MAL, -1, ""},
        /* Anything after the value. */
        {"{\"source\":\"a\"} x", 0, EV, MAL, -1, ""},
        {"{}{}", 0, EV, MAL, -1, ""},
        {"{} {}", 0, EV, MAL, -1, ""},
        {"{}\n{}", 0, EV, MAL, -1, ""},
        /* Not JSON's: comments, quotes, literals, numbers. */
        {"{/*c*/\"a\":1}", 0, EV, MAL, -1, ""},
        {"{\"a\":1}//c", 0, EV, MAL, -1, ""},
        {"{\"source\":'a'}", 0, EV, MAL, -1, ""},
        {"{'source':\"a\"}", 0, EV, MAL, -1, ""},
        {"{source:\"a\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":True}", 0, EV, MAL, -1, ""},
        {"{\"a\":nul}", 0, EV, MAL, -1, ""},
        {"{\"a\":NaN}", 0, EV, MAL, -1, ""},
        {"{\"a\":Infinity}", 0, EV, MAL, -1, ""},
        {"{\"a\":-Infinity}", 0, EV, MAL, -1, ""},
        {"{\"a\":01}", 0, EV, MAL, -1, ""},
        {"{\"a\":-01}", 0, EV, MAL, -1, ""},
        {"{\"a\":00}", 0, EV, MAL, -1, ""},
        {"{\"a\":1.}", 0, EV, MAL, -1, ""},
        {"{\"a\":.5}", 0, EV, MAL, -1, ""},
        {"{\"a\":+1}", 0, EV, MAL, -1, ""},
        {"{\"a\":1e}", 0, EV, MAL, -1, ""},
        {"{\"a\":1e+}", 0, EV, MAL, -1, ""},
        {"{\"a\":0x1F}", 0, EV, MAL, -1, ""},
        {"{\"a\":1.5.3}", 0, EV, MAL, -1, ""},
        {"{\"a\":18446744073709551616}", 0, EV, MAL, -1, ""},
        {"{\"a\":-9223372036854775809}", 0, EV, MAL, -1, ""},
        {"{\"a\":100000000000000000000000000000}", 0, EV, MAL, -1, ""},
        /* Strings: escapes, controls, UTF-8 anywhere (data too). */
        {"{\"a\":\"x\\qy\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\\u12G4\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"tab\there\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"line\nbreak\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\\ud800\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\\udc00\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\\ud800\\u0041\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\\ud800\\ud800\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\xff\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\x80\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\xc0\xaf\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\xe0\x80\xaf\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\xed\xa0\x80\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\xf4\x90\x80\x80\"}", 0, EV, MAL, -1, ""},
        {"{\"a\":\"\xe2\x82\"}", 0, EV, MAL, -1, ""},
        {"{\"data\":\"\xc3\x28\"}", 0, EV, MAL, -1, ""},
        {"{\"data\":{\"\xff\":1}}", 0, EV, MAL, -1, ""},
        {"\xef\xbb\xbf{}", 0, EV, MAL, -1, ""},
        {"{\"a\":1}\xc2\xa0", 0, EV, MAL, -1, ""},
        {"{\"a\":1}\f", 0, EV, MAL, -1, ""},
        /* The wrong kind of value. */
        {"\"just a string\"", 0, EV, INV, -1, ""},
        {"42", 0, EV, INV, -1, ""},
        {"null", 0, EV, INV, -1, ""},
        {"[{\"source\":\"a\"}]", 0, EV, INV, -1, ""},
        {"{\"source\":\"a\"}", 0, BA, INV, -1, ""},
        {"\"x\"", 0, ANY, INV, -1, ""},
        {"true", 0, BA, INV, -1, ""},
        /* Payloads. */
        {"{\"data\":1,\"data_base64\":\"QQ==\"}", 0, EV, INV, -1, "data_base64"},
        {"{\"data_base64\":5}", 0, EV, INV, -1, "data_base64"},
        {"{\"data_base64\":\"!!!!\"}", 0, EV, INV, -1, "data_base64"},
        {"{\"data_base64\":\"QQ=\"}", 0, EV, INV, -1, "data_base64"},
        {"{\"data_base64\":\"Q\"}", 0, EV, INV, -1, "data_base64"},
        {"{\"data_base64\":\"QUFBQ\"}", 0, EV, INV, -1, "data_base64"},
        {"{\"data_base64\":\"QQ==QQ==\"}", 0, EV, INV, -1, "data_base64"},
        {"{\"data_base64\":\"Q===\"}", 0, EV, INV, -1, "data_base64"},
        {"{\"data_base64\":\"====\"}", 0, EV, INV, -1, "data_base64"},
        {"{\"data_base64\":\"QQ\\n==\"}", 0, EV, INV, -1, "data_base64"},
        {"{\"data_base64\":\"QU FB\"}", 0, EV, INV, -1, "data_base64"},
        {"{\"data_base64\":\"-_8=\"}", 0, EV, INV, -1, "data_base64"},
        /* One member name twice: which one counts would depend on the parser. */
        {"{\"source\":\"a\",\"source\":\"b\"}", 0, EV, INV, -1, ""},
        {"{\"data\":1,\"x\":1,\"data\":2}", 0, EV, INV, -1, ""},
        {"[{},{\"e\":1,\"e\":1}]", 0, BA, INV, 1, ""},
        /* Batches: the index of the event at fault, -1 between events. */
        {"[{\"source\":\"a\"}, 1]", 0, BA, INV, 1, ""},
        {"[null]", 0, BA, INV, 0, ""},
        {"[[{}]]", 0, ANY, INV, 0, ""},
        {"[{\"source\":\"a\"},{\"n\":NaN}]", 0, BA, MAL, 1, ""},
        {"[{},{},{\"a\":\"\xff\"}]", 0, BA, MAL, 2, ""},
        {"[{},{\"a\":", 0, BA, MAL, 1, ""},
        {"[{},]", 0, BA, MAL, -1, ""},
        {"[{} {}]", 0, BA, MAL, -1, ""},
        {"[{}", 0, BA, MAL, -1, ""},
        {"[{},", 0, BA, MAL, -1, ""},
        {"[", 0, BA, MAL, -1, ""},
        {"[,{}]", 0, BA, MAL, 0, ""},
        {"[{}] x", 0, BA, MAL, -1, ""},
        {"[{}]]", 0, ANY, MAL, -1, ""},
        /* NDJSON: the event's index, blank lines not counted. */
        {"{}\n{\n", 0, ND, MAL, 1, ""},
        {"{}\n\n[1]\n", 0, ND, INV, 1, ""},
        {"{}\r\n{} x\r\n", 0, ND, MAL, 1, ""},
        {"{}\n{\"a\":1}{}\n", 0, ND, MAL, 1, ""},
        {"\n\n\"x\"\n", 0, ND, INV, 0, ""},
        {"{}\n\f\n", 0, ND, MAL, 1, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_bad(&cases[i]);
}

static void test_messages(void **state)
{
    ing_event_batch b;
    ing_event_error err;
    (void)state;

    ing_event_batch_init(&b);
    assert_int_equal(parse("{\"a\": [1, 2, NaN]}", EV, &b, &err), -EINVAL);
    assert_string_equal(err.message, "NaN and Infinity are not JSON numbers, at byte 13");
    assert_int_equal(parse("[{}, {\"a\":\"\\ud83d\"}]", BA, &b, &err), -EINVAL);
    assert_string_equal(err.message, "unpaired surrogate \\ud83d at byte 11");
    assert_int_equal(parse("{\"a\":1,}", EV, &b, &err), -EINVAL);
    assert_non_null(strstr(err.message, "at byte 7"));
    assert_int_equal(parse("[1]", EV, &b, &err), -EINVAL);
    assert_string_equal(err.message, "expected one event (a JSON object), got an array");
    assert_int_equal(parse("{\"data_base64\":\"QUJD*\"}", EV, &b, &err), -EINVAL);
    assert_string_equal(err.message, "data_base64: not standard base64 (RFC 4648), at character 4");
    ing_event_batch_clear(&b);
}

/* Nesting is bounded: no stack overflow, a clear error, and 128 levels still fine. */
static void test_depth(void **state)
{
    size_t n = 100000;
    char *deep = malloc(2 * n + 64);
    ing_event_batch b;
    ing_event_error err;
    (void)state;

    ing_event_batch_init(&b);
    memset(deep, '[', n);
    assert_int_equal(parse_len(deep, n, ANY, &b, &err), -EINVAL);
    assert_int_equal(err.code, ING_ERR_MALFORMED_JSON);
    assert_non_null(strstr(err.message, "nested deeper than 128"));

    /* Object, data, then arrays: 128 levels in all is the most. */
    for (size_t levels = 128; levels <= 129; levels++) {
        size_t len = (size_t)sprintf(deep, "{\"data\":");
        memset(deep + len, '[', levels - 1);
        len += levels - 1;
        memset(deep + len, ']', levels - 1);
        len += levels - 1;
        deep[len++] = '}';
        int rc = parse_len(deep, len, EV, &b, &err);
        if (levels == 128) {
            assert_int_equal(rc, 0);
            assert_int_equal(b.ev[0].data_len, 2 * 127);
            ing_event_batch_clear(&b);
        } else {
            assert_int_equal(rc, -EINVAL);
            assert_int_equal(err.code, ING_ERR_MALFORMED_JSON);
        }
    }

    /* 100k objects deep inside the third event of a batch. */
    size_t len = (size_t)sprintf(deep, "[{},{},");
    while (len + 6 < 2 * n)
        len += (size_t)sprintf(deep + len, "{\"a\":");
    assert_int_equal(parse_len(deep, len, BA, &b, &err), -EINVAL);
    assert_int_equal(err.code, ING_ERR_MALFORMED_JSON);
    assert_int_equal(err.index, 2);
    ing_event_batch_clear(&b);
    free(deep);
}

static void test_large(void **state)
{
    size_t big = 900000;
    char *doc = malloc(big + 128);
    ing_event_batch b;
    ing_event_error err;
    (void)state;

    /* A 900 KB string in data, with multi-byte characters and escapes. */
    size_t len = (size_t)sprintf(doc, "{\"source\":\"s\",\"type\":\"t\",\"data\":\"");
    while (len < big) {
        memcpy(doc + len, "abc\xc3\xa9\\n", 7);
        len += 7;
    }
    len += (size_t)sprintf(doc + len, "\"}");
    ing_event_batch_init(&b);
    assert_int_equal(parse_len(doc, len, EV, &b, &err), 0);
    assert_int_equal(b.ev[0].data_kind, EVENT_DATA_JSON);
    assert_true(b.ev[0].data_len > 700000);
    assert_int_equal(ing_event_validate(&b.ev[0], &lim, 0, &err), 0);
    ing_event_batch_clear(&b);

    /* A 900 KB source parses (validation refuses it later: attributes have their own bound). */
    len = (size_t)sprintf(doc, "{\"source\":\"");
    memset(doc + len, 'x', big);
    len += big;
    len += (size_t)sprintf(doc + len, "\"}");
    assert_int_equal(parse_len(doc, len, EV, &b, &err), 0);
    assert_int_equal(strlen(b.ev[0].source), big);
    assert_int_equal(ing_event_validate(&b.ev[0], &lim, 0, &err), -EINVAL);
    assert_string_equal(err.field, "source");
    ing_event_batch_clear(&b);

    /* One event over the limit, as JSON text, is refused before it is built. */
    ing_event_limits saved = lim;
    lim.max_event_bytes = 1000;
    len = (size_t)sprintf(doc, "[{},{\"data\":\"");
    memset(doc + len, 'x', 2000);
    len += 2000;
    len += (size_t)sprintf(doc + len, "\"}]");
    assert_int_equal(parse_len(doc, len, BA, &b, &err), -EINVAL);
    assert_int_equal(err.code, ING_ERR_TOO_LARGE);
    assert_int_equal(err.index, 1);

    /* So is one with more objects than a tree of that size should need (json-c spends ~750 B on each). */
    len = (size_t)sprintf(doc, "{\"data\":[");
    for (int i = 0; i < 40; i++)
        len += (size_t)sprintf(doc + len, "%s{}", i ? "," : "");
    len += (size_t)sprintf(doc + len, "]}");
    assert_int_equal(parse_len(doc, len, EV, &b, &err), -EINVAL);
    assert_int_equal(err.code, ING_ERR_TOO_LARGE);
    assert_int_equal(err.index, -1);
    lim = saved;
    ing_event_batch_clear(&b);
    free(doc);
}

static void test_too_many(void **state)
{
    ing_event_batch b;
    ing_event_error err;
    (void)state;

    ing_event_limits saved = lim;
    lim.max_batch_events = 3;
    ing_event_batch_init(&b);
    assert_int_equal(parse("[{},{},{}]", BA, &b, &err), 0);
    assert_int_equal(b.n, 3);
    ing_event_batch_clear(&b);
    /* The fourth event is never looked at: what follows it does not matter. */
    assert_int_equal(parse("[{},{},{},{\"a\":NaN} garbage", BA, &b, &err), -EINVAL);
    assert_int_equal(err.code, ING_ERR_TOO_MANY_EVENTS);
    assert_int_equal(err.index, -1);
    assert_int_equal(b.n, 0);
    assert_int_equal(parse("{}\n\n{}\n{}\n{\n", ND, &b, &err), -EINVAL);
    assert_int_equal(err.code, ING_ERR_TOO_MANY_EVENTS);
    assert_int_equal(parse("{}\n\n{}\n{}\n\n  \n", ND, &b, &err), 0);
    assert_int_equal(b.n, 3);
    ing_event_batch_clear(&b);
    lim = saved;
}

/* Numbers in data keep their exact value and text, through a second parse too. */
static void test_number_fidelity(void **state)
{
    static const char *const nums[] = {
        "0",
        "-0",
        "0.1",
        "1.10",
        "-0.0",
        "2.5E+3",
        "1e-7",
        "1e400",
        "-1e-400",
        "3.14159265358979323846264338327950288",
        "123456789012345678901234567890.5",
        "9007199254740993",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "18446744073709551615",
    };
    (void)state;

    char list[1024] = "[";
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        /* As written, -0 and 20-digit integers included. */
        expect_data(nums[i], nums[i]);
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? "," : "", nums[i]);
    }
    strcat(list, "]");

    /* parse -> data text -> parse: the same text again. */
    ing_event_batch b;
    char doc[2048];
    snprintf(doc, sizeof(doc), "{\"data\":{\"n\":%s}}", list);
    ing_event *ev = one(doc, &b);
    char again[2048];
    snprintf(again, sizeof(again), "{\"data\":%s}", (char *)ev->data);
    ing_event_batch b2;
    ing_event *ev2 = one(again, &b2);
    assert_string_equal((char *)ev2->data, (char *)ev->data);
    snprintf(doc, sizeof(doc), "{\"n\":%s}", list);
    assert_string_equal((char *)ev->data, doc);
    ing_event_batch_clear(&b);
    ing_event_batch_clear(&b2);
}

static void test_duplicates_in_data(void **state)
{
    (void)state;
    /* Inside data, as written: Postgres jsonb and JavaScript then keep the last value. */
    expect_data("{\"a\":1,\"a\":2}", "{\"a\":1,\"a\":2}");
}

/* ---- fuzz: deterministic mutations of valid inputs never crash, leak or lie ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    /* xorshift64*: reproducible on every machine. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void check_outcome(int rc, const ing_event_error *err, const ing_event_batch *b, size_t before)
{
    if (rc == -EINVAL) {
        assert_true(err->code == ING_ERR_MALFORMED_JSON || err->code == ING_ERR_INVALID_EVENT ||
                    err->code == ING_ERR_TOO_MANY_EVENTS || err->code == ING_ERR_TOO_LARGE);
        assert_true(err->index >= -1);
        assert_true(err->message[0] != '\0');
        assert_int_equal(b->n, before);
        return;
    }
    assert_int_equal(rc, 0);
    /* Whatever was accepted gives data that is itself strict JSON, and stable. */
    for (size_t i = before; i < b->n; i++) {
        const ing_event *ev = &b->ev[i];
        if (ev->data_kind != EVENT_DATA_JSON)
            continue;
        assert_int_equal(strlen((const char *)ev->data), ev->data_len);
        size_t n = ev->data_len + 16;
        char *doc = malloc(n);
        snprintf(doc, n, "{\"data\":%s}", (const char *)ev->data);
        ing_event_batch again;
        ing_event_error e2;
        ing_event_batch_init(&again);
        if (json_parse_events(doc, strlen(doc), JSON_FORM_EVENT, &lim, &again, &e2) != 0)
            fail_msg("accepted data does not parse again: %s: %s", doc, e2.message);
        assert_string_equal((const char *)again.ev[0].data, (const char *)ev->data);
        ing_event_batch_clear(&again);
        free(doc);
    }
}

static void test_fuzz(void **state)
{
    static const char *const seeds[] = {
        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"ext\":42,\"b\":true,"
        "\"data\":{\"a\":[1,2.5,-3e2,\"x\\u00e9\\n\",null,false],\"o\":{\"k\":\"v\"}}}",
        "[{\"source\":\"a\",\"data\":\"\xc3\xa9\xe4\xb8\xad\\ud83d\\ude00\"},{\"source\":\"b\",\"data_"
        "base64\":"
        "\"AAEC/w==\"},{\"data\":[[[]]],\"n\":-0.0}]",
        "{\"source\":\"a\"}\n{\"source\":\"b\",\"data\":{\"x\":[0.1,1e400]}}\r\n\n{\"t\":false}\n",
        "{\"data\":\"\\u0000\\\"\\\\\\/\\b\\f\\n\\r\\t\",\"x\":\"18446744073709551615\"}",
    };
    static const char palette[] = "{}[]\",:\\/ \n\r\t0123456789-+.eEtrufalsnu'\xc3\xa9\xff\x80\x00";
    static const json_form forms[] = {JSON_FORM_EVENT, JSON_FORM_BATCH, JSON_FORM_ANY, JSON_FORM_NDJSON};
    char buf[1024];
    (void)state;

    for (int iter = 0; iter < 5000; iter++) {
        const char *seed = seeds[rng() % (sizeof(seeds) / sizeof(seeds[0]))];
        size_t len = strlen(seed);
        memcpy(buf, seed, len);
        int mutations = 1 + (int)(rng() % 4);
        for (int m = 0; m < mutations && len > 0; m++) {
            size_t at = rng() % len;
            switch (rng() % 6) {
            case 0: buf[at] = (char)(rng() & 0xff); break;
            case 1: buf[at] = palette[rng() % (sizeof(palette) - 1)]; break;
            case 2: /* insert */
                if (len < sizeof(buf) - 1) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = palette[rng() % (sizeof(palette) - 1)];
                    len++;
                }
                break;
            case 3: { /* delete a run */
                size_t n = 1 + rng() % 8;
                if (n > len - at)
                    n = len - at;
                memmove(buf + at, buf + at + n, len - at - n);
                len -= n;
                break;
            }
            case 4: len = at; break; /* truncate */
            default: {               /* duplicate a run */
                size_t n = 1 + rng() % 16;
                if (n > len - at)
                    n = len - at;
                if (len + n < sizeof(buf)) {
                    memmove(buf + at + n, buf + at, len - at);
                    len += n;
                }
                break;
            }
            }
        }
        /* An exact-size copy, so ASan sees any read past the end. */
        char *in = malloc(len ? len : 1);
        memcpy(in, buf, len);
        for (size_t f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
            ing_event_batch b;
            ing_event_error err;
            ing_event_batch_init(&b);
            /* One event already there, to check that failures leave it alone. */
            assert_non_null(ing_event_batch_add(&b));
            int rc = parse_len(in, len, forms[f], &b, &err);
            check_outcome(rc, &err, &b, 1);
            ing_event_batch_clear(&b);
        }
        free(in);
    }
}

/*
 * Strings are scanned eight bytes at a time while no byte needs a look, and
 * copied whole when they hold no escape: every kind of byte that needs one
 * (quote, backslash, control, non-ASCII, bad UTF-8) is put at every offset
 * of a 24-byte value, itself at every alignment, and must be seen.
 */
static void test_string_bytes_at_every_offset(void **state)
{
    static const struct {
        const char *put;  /* written into the JSON at the offset */
        const char *want; /* the value's byte there, NULL: refused as malformed_json */
    } kinds[] = {
        {"\\\"", "\""},
        {"\\\\", "\\"},
        {"\\u00e9", "\xc3\xa9"},
        {"\xc3\xa9", "\xc3\xa9"},
        {"\xe2\x82\xac", "\xe2\x82\xac"},
        {"\\/", "/"},
        {"\x01", NULL},
        {"\x1f", NULL},
        {"\xff", NULL},
        {"\xc3", NULL},
        {"\xed\xa0\x80", NULL},
    };
    (void)state;

    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        for (int pad = 0; pad < 8; pad++) {
            for (int at = 0; at <= 24; at++) {
                char json[128], want[64];
                ing_event_batch b;
                ing_event_error err;
                int n =
                    snprintf(json, sizeof(json), "%*s{\"type\":\"t\",\"source\":\"%.*s%s%.*s\"}", pad, "", at,
                             "abcdefghijklmnopqrstuvwx", kinds[k].put, 24 - at, "ABCDEFGHIJKLMNOPQRSTUVWX");
                ing_event_batch_init(&b);
                int rc = parse_len(json, (size_t)n, JSON_FORM_EVENT, &b, &err);
                if (kinds[k].want == NULL) {
                    assert_int_equal(rc, -EINVAL);
                    assert_int_equal(err.code, ING_ERR_MALFORMED_JSON);
                } else {
                    assert_int_equal(rc, 0);
                    snprintf(want, sizeof(want), "%.*s%s%.*s", at, "abcdefghijklmnopqrstuvwx", kinds[k].want,
                             24 - at, "ABCDEFGHIJKLMNOPQRSTUVWX");
                    assert_string_equal(b.ev[0].source, want);
                }
                ing_event_batch_clear(&b);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_all_attributes),
        cmocka_unit_test(test_forms),
        cmocka_unit_test(test_ndjson),
        cmocka_unit_test(test_data_kinds),
        cmocka_unit_test(test_storable_data),
        cmocka_unit_test(test_attribute_types),
        cmocka_unit_test(test_extensions),
        cmocka_unit_test(test_backslash_runs),
        cmocka_unit_test(test_nul),
        cmocka_unit_test(test_bad_catalogue),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_large),
        cmocka_unit_test(test_too_many),
        cmocka_unit_test(test_number_fidelity),
        cmocka_unit_test(test_duplicates_in_data),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_string_bytes_at_every_offset),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
