#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "envelope.h"

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

static const Ingest__V1__CloudEvent__CloudEventAttributeValue *attr(const Ingest__V1__CloudEvent *ce,
                                                                    const char *key)
{
    for (size_t i = 0; i < ce->n_attributes; i++)
        if (strcmp(ce->attributes[i]->key, key) == 0)
            return ce->attributes[i]->value;
    return NULL;
}

static void test_round_trip_full(void **state)
{
    ing_event ev, back;
    ing_event_error err;
    uint8_t *buf;
    size_t len;
    (void)state;

    ing_event_init(&ev);
    set(&ev, "id", "id-1");
    set(&ev, "source", "/src");
    set(&ev, "type", "t.created");
    set(&ev, "subject", "sub");
    set(&ev, "time", "2021-06-01T12:30:45.25Z");
    set(&ev, "datacontenttype", "application/json");
    set(&ev, "dataschema", "https://ex.com/schema");
    set(&ev, "tenant", "acme");
    set(&ev, "count", "42");
    unsigned char *data = (unsigned char *)strdup("{\"a\":1}");
    ing_event_set_data(&ev, EVENT_DATA_JSON, data, 7);
    assert_int_equal(ing_event_validate(&ev, &lim, 0, &err), 0);

    envelope_meta meta = {.received_unix_nanos = 1700000000123456789LL,
                          .protocol = ENVELOPE_HTTP,
                          .peer = "127.0.0.1:5555",
                          .gateway_id = "gw-1"};
    assert_int_equal(envelope_encode(&ev, &meta, &buf, &len), 0);

    Ingest__V1__Envelope *env = envelope_decode(buf, len);
    assert_non_null(env);
    assert_int_equal(env->received_unix_nanos, 1700000000123456789LL);
    assert_int_equal(env->protocol, INGEST__V1__PROTOCOL__PROTOCOL_HTTP);
    assert_string_equal(env->peer, "127.0.0.1:5555");
    assert_string_equal(env->gateway_id, "gw-1");
    const Ingest__V1__CloudEvent *ce = env->event;
    assert_string_equal(ce->id, "id-1");
    assert_string_equal(ce->source, "/src");
    assert_string_equal(ce->spec_version, "1.0");
    assert_string_equal(ce->type, "t.created");
    assert_int_equal(ce->data_case, INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA);
    assert_string_equal(ce->text_data, "{\"a\":1}");
    assert_int_equal(ce->n_attributes, 6);
    assert_string_equal(attr(ce, "subject")->ce_string, "sub");
    assert_string_equal(attr(ce, "datacontenttype")->ce_string, "application/json");
    assert_int_equal(attr(ce, "dataschema")->attr_case,
                     INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_URI);
    assert_string_equal(attr(ce, "dataschema")->ce_uri, "https://ex.com/schema");
    assert_int_equal(attr(ce, "time")->ce_timestamp->seconds, 1622550645);
    assert_int_equal(attr(ce, "time")->ce_timestamp->nanos, 250000000);
    assert_string_equal(attr(ce, "tenant")->ce_string, "acme");
    assert_string_equal(attr(ce, "count")->ce_string, "42");

    /* And back into the model, as the sink or a replay would. */
    ing_event_init(&back);
    assert_int_equal(ing_event_from_proto(ce, &back, &lim, &err), 0);
    assert_int_equal(ing_event_validate(&back, &lim, 0, &err), 0);
    assert_string_equal(back.id, "id-1");
    assert_string_equal(back.time, "2021-06-01T12:30:45.250000000Z");
    assert_true(back.time_sec == ev.time_sec && back.time_nsec == ev.time_nsec);
    assert_string_equal(back.dataschema, "https://ex.com/schema");
    assert_int_equal(back.n_ext, 2);
    assert_int_equal(back.data_kind, EVENT_DATA_TEXT);
    assert_memory_equal(back.data, "{\"a\":1}", 7);

    ing_event_clear(&back);
    envelope_free(env);
    free(buf);
    ing_event_clear(&ev);
}

static void test_binary_data_and_no_data(void **state)
{
    ing_event ev;
    uint8_t *buf;
    size_t len;
    envelope_meta meta = {.protocol = ENVELOPE_UDP};
    (void)state;

    ing_event_init(&ev);
    set(&ev, "id", "x");
    set(&ev, "source", "s");
    set(&ev, "type", "t");
    assert_int_equal(envelope_encode(&ev, &meta, &buf, &len), 0);
    Ingest__V1__Envelope *env = envelope_decode(buf, len);
    assert_non_null(env);
    assert_int_equal(env->event->data_case, INGEST__V1__CLOUD_EVENT__DATA__NOT_SET);
    assert_string_equal(env->peer, "");
    envelope_free(env);
    free(buf);

    unsigned char *bin = malloc(4);
    memcpy(bin, "\0\1\2\377", 4);
    ing_event_set_data(&ev, EVENT_DATA_BINARY, bin, 4);
    /* Before 1970: nanos stay non-negative. */
    set(&ev, "time", "1969-12-31T23:59:59.5Z");
    ing_event_error err;
    assert_int_equal(ing_event_validate(&ev, &lim, 0, &err), 0);
    assert_int_equal(envelope_encode(&ev, &meta, &buf, &len), 0);
    env = envelope_decode(buf, len);
    assert_int_equal(env->event->data_case, INGEST__V1__CLOUD_EVENT__DATA_BINARY_DATA);
    assert_int_equal(env->event->binary_data.len, 4);
    assert_memory_equal(env->event->binary_data.data, "\0\1\2\377", 4);
    assert_int_equal(attr(env->event, "time")->ce_timestamp->seconds, -1);
    assert_int_equal(attr(env->event, "time")->ce_timestamp->nanos, 500000000);
    envelope_free(env);
    free(buf);
    ing_event_clear(&ev);
}

static void test_refuses_incomplete_and_garbage(void **state)
{
    ing_event ev;
    uint8_t *buf = NULL;
    size_t len;
    envelope_meta meta = {.protocol = ENVELOPE_GRPC};
    (void)state;

    ing_event_init(&ev);
    set(&ev, "source", "s");
    set(&ev, "type", "t");
    assert_int_equal(envelope_encode(&ev, &meta, &buf, &len), -EINVAL); /* no id yet */
    ing_event_clear(&ev);

    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    assert_null(envelope_decode(garbage, sizeof(garbage)));
    const uint8_t truncated[] = {0x0a, 0x10, 0x0a, 0x02};
    assert_null(envelope_decode(truncated, sizeof(truncated)));
    envelope_free(NULL);
}

/* Field numbers are the CloudEvents protobuf format's: a hand-built message decodes. */
static void test_wire_compatibility(void **state)
{
    /* CloudEvent{id="a"(1) source="b"(2) spec_version="1.0"(3) type="c"(4) text_data="x"(7)} */
    const uint8_t wire[] = {0x0a, 1, 'a', 0x12, 1, 'b', 0x1a, 3, '1', '.', '0', 0x22, 1, 'c', 0x3a, 1, 'x'};
    Ingest__V1__CloudEvent *ce = ingest__v1__cloud_event__unpack(NULL, sizeof(wire), wire);
    (void)state;

    assert_non_null(ce);
    assert_string_equal(ce->id, "a");
    assert_string_equal(ce->source, "b");
    assert_string_equal(ce->spec_version, "1.0");
    assert_string_equal(ce->type, "c");
    assert_int_equal(ce->data_case, INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA);
    assert_string_equal(ce->text_data, "x");
    ingest__v1__cloud_event__free_unpacked(ce, NULL);
}

static void test_from_proto_typed_attributes(void **state)
{
    Ingest__V1__CloudEvent ce = INGEST__V1__CLOUD_EVENT__INIT;
    Ingest__V1__CloudEvent__CloudEventAttributeValue v[5];
    Ingest__V1__CloudEvent__AttributesEntry e[5], *ep[5];
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    uint8_t raw[] = {0xde, 0xad, 0xbe};
    ing_event ev;
    ing_event_error err;
    (void)state;

    for (int i = 0; i < 5; i++) {
        ingest__v1__cloud_event__cloud_event_attribute_value__init(&v[i]);
        ingest__v1__cloud_event__attributes_entry__init(&e[i]);
        e[i].value = &v[i];
        ep[i] = &e[i];
    }
    e[0].key = "flag";
    v[0].attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_BOOLEAN;
    v[0].ce_boolean = 1;
    e[1].key = "num";
    v[1].attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_INTEGER;
    v[1].ce_integer = -17;
    e[2].key = "blob";
    v[2].attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_BYTES;
    v[2].ce_bytes.data = raw;
    v[2].ce_bytes.len = 3;
    e[3].key = "time";
    ts.seconds = 86400;
    v[3].attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_TIMESTAMP;
    v[3].ce_timestamp = &ts;
    e[4].key = "ref";
    v[4].attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_URI_REF;
    v[4].ce_uri_ref = "../x";
    ce.source = "s";
    ce.type = "t";
    ce.id = "";
    ce.n_attributes = 5;
    ce.attributes = ep;

    ing_event_init(&ev);
    assert_int_equal(ing_event_from_proto(&ce, &ev, &lim, &err), 0);
    assert_null(ev.id); /* empty proto3 string: absent */
    assert_string_equal(ev.time, "1970-01-02T00:00:00Z");
    assert_int_equal(ev.n_ext, 4);
    assert_string_equal(ev.ext[0].value, "true");
    assert_string_equal(ev.ext[1].value, "-17");
    assert_string_equal(ev.ext[2].value, "3q2+");
    assert_string_equal(ev.ext[3].value, "../x");
    assert_int_equal(ing_event_validate(&ev, &lim, 0, &err), 0);
    ing_event_clear(&ev);

    /* An attribute given twice (as a field and in the map) is refused, naming it. */
    e[0].key = "source";
    ing_event_init(&ev);
    assert_int_equal(ing_event_from_proto(&ce, &ev, &lim, &err), -EINVAL);
    assert_string_equal(err.field, "source");
    ing_event_clear(&ev);

    e[0].key = "flag";
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    ce.data_case = INGEST__V1__CLOUD_EVENT__DATA_PROTO_DATA;
    ce.proto_data = &any;
    ing_event_init(&ev);
    assert_int_equal(ing_event_from_proto(&ce, &ev, &lim, &err), -EINVAL);
    assert_string_equal(err.field, "data");
    ing_event_clear(&ev);
}

static void test_key_and_helpers(void **state)
{
    ing_event ev;
    char out[64];
    (void)state;

    ing_event_init(&ev);
    set(&ev, "source", "src");
    assert_string_equal(ing_event_kafka_key(&ev), "src");
    set(&ev, "subject", "sub");
    assert_string_equal(ing_event_kafka_key(&ev), "sub");
    set(&ev, "partitionkey", "pk");
    assert_string_equal(ing_event_kafka_key(&ev), "pk");
    ing_event_clear(&ev);

    assert_int_equal(base64_encode((const unsigned char *)"", 0, out), 0);
    assert_int_equal(base64_encode((const unsigned char *)"f", 1, out), 4);
    assert_string_equal(out, "Zg==");
    base64_encode((const unsigned char *)"fo", 2, out);
    assert_string_equal(out, "Zm8=");
    base64_encode((const unsigned char *)"foobar", 6, out);
    assert_string_equal(out, "Zm9vYmFy");
    rfc3339_format(-1, 999999999, out, sizeof(out));
    assert_string_equal(out, "1969-12-31T23:59:59.999999999Z");
    rfc3339_format(-62135596800LL, 0, out, sizeof(out));
    assert_string_equal(out, "0001-01-01T00:00:00Z");
    rfc3339_format(253402300799LL, 1, out, sizeof(out));
    assert_string_equal(out, "9999-12-31T23:59:59.000000001Z");
    /* Beyond RFC 3339 (a protobuf Timestamp can hold anything): a text validation refuses. */
    int64_t s;
    int32_t ns;
    rfc3339_format(253402300800LL, 0, out, sizeof(out));
    assert_int_equal(rfc3339_parse(out, &s, &ns), -EINVAL);
    rfc3339_format(0, -1, out, sizeof(out));
    assert_int_equal(rfc3339_parse(out, &s, &ns), -EINVAL);
    rfc3339_format(INT64_MIN, 0, out, sizeof(out));
    assert_int_equal(rfc3339_parse(out, &s, &ns), -EINVAL);
}

/*
 * The Envelope is written by hand (common/envelope.c): its bytes must be
 * exactly what protobuf-c packs for the same message. protobuf-c reads them
 * back and packs them again; the two must be equal, byte for byte, and as
 * long as envelope_size() said. The cases reach every field, proto3's
 * left-out defaults, empty oneof members, times before 1970, and lengths
 * needing 1, 2 and 3 varint bytes.
 */
static void check_canonical(const ing_event *ev, const envelope_meta *meta)
{
    uint8_t *buf, *again;
    size_t len;

    assert_int_equal(envelope_encode(ev, meta, &buf, &len), 0);
    size_t ce_len;
    assert_int_equal(envelope_size(ev, meta, &ce_len), len);
    Ingest__V1__Envelope *env = envelope_decode(buf, len);
    assert_non_null(env);
    size_t len2 = ingest__v1__envelope__get_packed_size(env);
    assert_int_equal(len2, len);
    again = malloc(len2);
    ingest__v1__envelope__pack(env, again);
    assert_memory_equal(again, buf, len);
    assert_string_equal(env->event->id, ev->id);
    free(again);
    envelope_free(env);
    free(buf);
}

static void test_bytes_are_protobuf_c_s(void **state)
{
    static const char *const times[] = {NULL,
                                        "1970-01-01T00:00:00Z",
                                        "1970-01-01T00:00:01Z",
                                        "1970-01-01T00:00:00.5Z",
                                        "1969-12-31T23:59:59.999999999Z",
                                        "0001-01-01T00:00:00Z",
                                        "2026-11-26T10:00:00.123456789+02:00"};
    static const size_t sizes[] = {0, 1, 127, 128, 16383, 16384, 70000};
    static const int64_t received[] = {0, 1, -1, 1700000000123456789LL, INT64_MIN};
    const char *peers[] = {NULL, "", "[::1]:9"};
    ing_event_error err;
    (void)state;

    for (size_t t = 0; t < sizeof(times) / sizeof(times[0]); t++) {
        for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
            ing_event ev;
            char *big = malloc(sizes[z] + 1);
            memset(big, 'x', sizes[z]);
            big[sizes[z]] = '\0';
            ing_event_init(&ev);
            set(&ev, "id", "0192b5f0-0000-7000-8000-000000000001");
            set(&ev, "source", sizes[z] && sizes[z] <= EVENT_ATTR_MAX ? big : "/s");
            set(&ev, "type", "t");
            if (times[t])
                set(&ev, "time", times[t]);
            if (sizes[z])
                set(&ev, "subject", big);
            if (z % 2) {
                set(&ev, "datacontenttype", "text/plain");
                set(&ev, "dataschema", "urn:x");
                set(&ev, "partitionkey", "k");
                set(&ev, "n", "1");
            }
            /* The payload's kinds in turn, an empty one among them. */
            switch (z % 4) {
            case 0: ing_event_set_data(&ev, EVENT_DATA_JSON, (unsigned char *)strdup(big), sizes[z]); break;
            case 1: ing_event_set_data(&ev, EVENT_DATA_TEXT, (unsigned char *)strdup(""), 0); break;
            case 2: ing_event_set_data(&ev, EVENT_DATA_BINARY, (unsigned char *)strdup(big), sizes[z]); break;
            default: break;
            }
            lim.max_event_bytes = 1 << 20;
            assert_int_equal(ing_event_validate(&ev, &lim, -1, &err), 0);
            for (size_t r = 0; r < sizeof(received) / sizeof(received[0]); r++) {
                envelope_meta meta = {.received_unix_nanos = received[r],
                                      .protocol = (envelope_protocol)(r % 4),
                                      .peer = peers[r % 3],
                                      .gateway_id = r % 2 ? "gw" : NULL};
                check_canonical(&ev, &meta);
            }
            ing_event_clear(&ev);
            free(big);
        }
    }
}

/*
 * envelope_max_size() against the encoder's worst: events that every limit
 * lets through, built to make the most overhead (every attribute, every
 * extension allowed, the widest timestamp, lengths that need three varint
 * bytes), or none (one attribute holding it all). The bound must hold for
 * each, and stay close to the worst (it sets what Kafka must take).
 */
static size_t worst_case(size_t max_event_bytes, int n_ext, int fill, envelope_meta *meta)
{
    ing_event ev;
    ing_event_error err;
    size_t len, ce_len;

    ing_event_init(&ev);
    set(&ev, "id", "0192b5f0-0000-7000-8000-000000000001");
    set(&ev, "source", "/s");
    set(&ev, "type", "t");
    set(&ev, "specversion", "1.0");
    set(&ev, "time", "0001-01-01T00:00:00.999999999Z");
    set(&ev, "datacontenttype", "a/b");
    set(&ev, "dataschema", "u:x");
    set(&ev, "subject", "s");
    for (int i = 0; i < n_ext; i++) {
        char name[16];
        snprintf(name, sizeof(name), "e%d", i);
        set(&ev, name, "v");
    }
    size_t used = ing_event_size(&ev) + (fill ? 0 : 3); /* "big" */
    size_t rest = max_event_bytes > used ? max_event_bytes - used : 0;
    unsigned char *data = malloc(rest + 1);
    memset(data, 'd', rest);
    data[rest] = '\0';
    if (fill) /* all of it in the data */
        ing_event_set_data(&ev, EVENT_DATA_BINARY, data, rest);
    else { /* all of it in one extension's value */
        set(&ev, "big", (const char *)data);
        free(data);
        ing_event_set_data(&ev, EVENT_DATA_TEXT, (unsigned char *)strdup(""), 0);
    }
    lim.max_event_bytes = max_event_bytes;
    if (ing_event_validate(&ev, &lim, -1, &err) != 0)
        fail_msg("%zu bytes: %s", max_event_bytes, err.message);
    assert_true(ing_event_size(&ev) <= max_event_bytes);
    len = envelope_size(&ev, meta, &ce_len);
    ing_event_clear(&ev);
    return len;
}

static void test_max_size_bounds_the_worst(void **state)
{
    static const size_t limits[] = {1024, 16383, 16384, 2097151, 1 << 20, 8 << 20};
    char peer[129];
    (void)state;

    memset(peer, '9', 128);
    peer[128] = '\0';
    envelope_meta meta = {
        .received_unix_nanos = INT64_MIN, .protocol = ENVELOPE_GRPC, .peer = peer, .gateway_id = "gateway-7"};
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        size_t bound = envelope_max_size(limits[i], lim.max_extensions, 128, 9), worst = 0;
        for (int fill = 0; fill < 2; fill++) {
            /* "big" is an extension too: one fewer of the small ones then. */
            size_t n = worst_case(limits[i], (int)lim.max_extensions - (fill ? 0 : 1), fill, &meta);
            assert_true(n <= bound);
            if (n > worst)
                worst = n;
        }
        /* Within 1 KiB of the worst found, and never below max_event_bytes plus the peer and id. */
        print_message("max_event_bytes %zu: bound %zu, worst built %zu\n", limits[i], bound, worst);
        assert_true(bound - worst < 1024);
        assert_true(bound > limits[i] + 128 + 9);
    }
    lim.max_event_bytes = 1 << 20;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_full),
        cmocka_unit_test(test_binary_data_and_no_data),
        cmocka_unit_test(test_refuses_incomplete_and_garbage),
        cmocka_unit_test(test_wire_compatibility),
        cmocka_unit_test(test_from_proto_typed_attributes),
        cmocka_unit_test(test_key_and_helpers),
        cmocka_unit_test(test_bytes_are_protobuf_c_s),
        cmocka_unit_test(test_max_size_bounds_the_worst),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
