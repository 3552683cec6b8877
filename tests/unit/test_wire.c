/*
 * common/wire: the direct decoder against protobuf-c's unpack followed by
 * ing_event_from_proto(), on the same bytes. Messages are built with protobuf-c
 * (random fields, typed attributes of every kind, data kinds, empty strings
 * and NULs), put together field by field so that fields can be repeated,
 * reordered and mixed with unknown ones, then mutated (every truncation,
 * byte flips, inserted bytes, duplicated runs) with a fixed seed. For every
 * input both must refuse the bytes, or fail the same way (code, field,
 * message), or give the same event.
 */
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
#include "ingest/v1/ingest.pb-c.h"
#include "wire.h"

typedef Ingest__V1__CloudEvent CloudEvent;
typedef Ingest__V1__CloudEvent__CloudEventAttributeValue AttrValue;
typedef Ingest__V1__CloudEvent__AttributesEntry AttrEntry;

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    /* xorshift64*: a fixed seed, the same inputs on every run (no two draws unsequenced in one expression).
     */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static size_t rn(size_t n)
{
    return n ? (size_t)(rnd() % n) : 0;
}

/* A growable byte string. */
typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 16;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void put_varint(bytes *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (uint8_t)v;
    put(b, tmp, n);
}

static void put_packed(bytes *b, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *tmp = malloc(n ? n : 1);
    assert_non_null(tmp);
    assert_int_equal(protobuf_c_message_pack(m, tmp), n);
    put(b, tmp, n);
    free(tmp);
}

/* ---- random content -------------------------------------------------------- */

static char strbuf[64][80];
static size_t strbuf_i;

/* A random string: often empty or short, sometimes with a NUL, non-ASCII or a control byte. */
static char *rstr(void)
{
    static const char alpha[] = "abcxyz019/:.-_ TZ";
    char *s = strbuf[strbuf_i++ % 64];
    size_t n = rn(4) == 0 ? 0 : 1 + rn(12);
    for (size_t i = 0; i < n; i++) {
        switch (rn(30)) {
        case 0: s[i] = '\0'; break; /* ends the string for protobuf-c's pack: fine, still a string */
        case 1: s[i] = (char)0xc3; break;
        case 2: s[i] = '\n'; break;
        default: s[i] = alpha[rn(sizeof(alpha) - 1)]; break;
        }
    }
    s[n] = '\0';
    return s;
}

static const char *const keys[] = {"subject",
                                   "time",
                                   "datacontenttype",
                                   "dataschema",
                                   "id",
                                   "source",
                                   "type",
                                   "specversion",
                                   "partitionkey",
                                   "ext1",
                                   "ext2",
                                   "Bad",
                                   "data",
                                   "",
                                   "a23456789012345678901",
                                   "x-y",
                                   "e3"};

static void random_value(AttrValue *v, Google__Protobuf__Timestamp *ts, uint8_t *bin)
{
    ingest__v1__cloud_event__cloud_event_attribute_value__init(v);
    switch (rn(8)) {
    case 0:
        v->attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_BOOLEAN;
        v->ce_boolean = (protobuf_c_boolean)rn(2);
        break;
    case 1:
        v->attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_INTEGER;
        v->ce_integer = (int32_t)(uint32_t)(rn(3) ? rn(2000) : rnd());
        break;
    case 2:
        v->attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_STRING;
        v->ce_string = rstr();
        break;
    case 3:
        v->attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_BYTES;
        v->ce_bytes.len = rn(8);
        for (size_t i = 0; i < v->ce_bytes.len; i++)
            bin[i] = (uint8_t)rnd();
        v->ce_bytes.data = v->ce_bytes.len ? bin : NULL;
        break;
    case 4:
        v->attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_URI;
        v->ce_uri = rstr();
        break;
    case 5:
        v->attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_URI_REF;
        v->ce_uri_ref = rstr();
        break;
    case 6:
        google__protobuf__timestamp__init(ts);
        ts->seconds = rn(3) ? (int64_t)(1700000000 + rn(100000000)) : (int64_t)rnd();
        ts->nanos = rn(3) ? (int32_t)rn(1000000000) : (int32_t)(uint32_t)rnd();
        v->attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_TIMESTAMP;
        v->ce_timestamp = ts;
        break;
    default: break; /* no value at all */
    }
}

/* One random typed value's bytes (an AttrValue message), sometimes two values' run together. */
static void value_bytes(bytes *out)
{
    int n = rn(6) == 0 ? 2 : 1;
    for (int i = 0; i < n; i++) {
        AttrValue v;
        Google__Protobuf__Timestamp ts;
        uint8_t bin[8];
        random_value(&v, &ts, bin);
        put_packed(out, &v.base);
    }
}

/* A random unknown field (numbers past the message's, every valid wire type). */
static void unknown_field(bytes *out)
{
    static const uint8_t fixed[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint64_t num = 9 + rn(rn(4) == 0 ? 100000 : 20);
    unsigned wt = (unsigned[]){0, 1, 2, 5}[rn(4)];
    put_varint(out, num << 3 | wt);
    switch (wt) {
    case 0: {
        uint64_t v = rnd();
        put_varint(out, v >> rn(64));
        break;
    }
    case 1: put(out, fixed, 8); break;
    case 5: put(out, fixed, 4); break;
    default: {
        size_t n = rn(6);
        put_varint(out, n);
        put(out, "unknown", n);
    }
    }
}

/* One attributes map entry as a whole field 5: key and value(s), repeated or missing, unknowns mixed in. */
static void entry_field(bytes *out)
{
    bytes e = {0};
    int parts = 1 + (int)rn(3);

    for (int i = 0; i < parts; i++) {
        int what = (int)rn(7);
        if (what <= 2 || i == 0) {
            AttrEntry ke = INGEST__V1__CLOUD_EVENT__ATTRIBUTES_ENTRY__INIT;
            ke.key = (char *)(rn(8) ? keys[rn(sizeof(keys) / sizeof(keys[0]))] : rstr());
            put_packed(&e, &ke.base);
        }
        if (what <= 4 || i == 0) {
            bytes v = {0};
            if (rn(10)) {
                value_bytes(&v);
                put_varint(&e, 2 << 3 | 2);
                put_varint(&e, v.n);
                put(&e, v.p, v.n);
            }
            free(v.p);
        }
        if (what == 6)
            unknown_field(&e);
    }
    put_varint(out, 5 << 3 | 2);
    put_varint(out, e.n);
    put(out, e.p, e.n);
    free(e.p);
}

/* One top-level field of a CloudEvent, packed by protobuf-c alone or put together above. */
static void ce_field(bytes *out)
{
    CloudEvent ce = INGEST__V1__CLOUD_EVENT__INIT;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    uint8_t bin[16];

    switch (rn(16)) {
    case 0:
    case 1: ce.id = rstr(); break;
    case 2:
    case 3: ce.source = rn(3) ? "/src" : rstr(); break;
    case 4: ce.spec_version = rn(2) ? "1.0" : rstr(); break;
    case 5:
    case 6: ce.type = rn(3) ? "com.example.t" : rstr(); break;
    case 7:
        ce.data_case = INGEST__V1__CLOUD_EVENT__DATA_BINARY_DATA;
        ce.binary_data.len = rn(16);
        for (size_t i = 0; i < ce.binary_data.len; i++)
            bin[i] = (uint8_t)rnd();
        ce.binary_data.data = ce.binary_data.len ? bin : NULL;
        break;
    case 8:
        ce.data_case = INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA;
        ce.text_data = rstr();
        break;
    case 9:
        if (rn(4) == 0) {
            any.type_url = "type.googleapis.com/x";
            ce.data_case = INGEST__V1__CLOUD_EVENT__DATA_PROTO_DATA;
            ce.proto_data = &any;
            break;
        }
        /* fall through */
    case 10: unknown_field(out); return;
    default: entry_field(out); return;
    }
    put_packed(out, &ce.base);
    /* An empty proto3 string packs to nothing: write it anyway now and then, it is still one field. */
    if (ce.id && !*ce.id && rn(2))
        put(out, "\x0a\x00", 2);
}

/* An entry with a key of its own ("u1", "u2", ...) and one typed value. */
static void clean_entry_field(bytes *out, int k)
{
    AttrEntry e = INGEST__V1__CLOUD_EVENT__ATTRIBUTES_ENTRY__INIT;
    CloudEvent ce = INGEST__V1__CLOUD_EVENT__INIT;
    Google__Protobuf__Timestamp ts;
    AttrValue v;
    AttrEntry *ep = &e;
    uint8_t bin[8];
    char key[16];

    do
        random_value(&v, &ts, bin);
    while (v.attr_case == INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR__NOT_SET);
    snprintf(key, sizeof(key), "u%d", k);
    e.key = key;
    e.value = &v;
    ce.n_attributes = 1;
    ce.attributes = &ep;
    put_packed(out, &ce.base);
}

static void random_event(bytes *out)
{
    /* Now and then more attributes than wire.c keeps from its first read (16), most of them good. */
    if (rn(10) == 0) {
        size_t n = 17 + rn(30);
        for (size_t i = 0; i < n; i++) {
            if (rn(10) == 0)
                ce_field(out);
            else
                clean_entry_field(out, (int)i);
        }
        return;
    }
    size_t n = rn(12);
    for (size_t i = 0; i < n; i++)
        ce_field(out);
}

static void hexdump(const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        fprintf(stderr, "%02x%s", buf[i], i + 1 < len ? " " : "\n");
}

/* ---- the two paths ---------------------------------------------------------- */

static ing_event_limits lim_default, lim_small;
static size_t compared, refused_both, einval_both, ok_both, ok_many;

static void assert_same_str(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

static void assert_same_event(const ing_event *a, const ing_event *b)
{
    assert_same_str(a->id, b->id);
    assert_same_str(a->source, b->source);
    assert_same_str(a->specversion, b->specversion);
    assert_same_str(a->type, b->type);
    assert_same_str(a->subject, b->subject);
    assert_same_str(a->time, b->time);
    assert_same_str(a->datacontenttype, b->datacontenttype);
    assert_same_str(a->dataschema, b->dataschema);
    assert_int_equal(a->n_ext, b->n_ext);
    for (size_t i = 0; i < a->n_ext; i++) {
        assert_string_equal(a->ext[i].name, b->ext[i].name);
        assert_string_equal(a->ext[i].value, b->ext[i].value);
    }
    assert_int_equal(a->data_kind, b->data_kind);
    assert_int_equal(a->data_len, b->data_len);
    if (a->data_len)
        assert_memory_equal(a->data, b->data, a->data_len);
}

/* ing_event_from_proto() on a protobuf-c message and ing_event_from_wire() on its bytes agree. */
static void compare_event(const CloudEvent *ce, const uint8_t *buf, size_t len, const ing_event_limits *lim)
{
    ing_event a, b;
    ing_event_error ea, eb;
    int ra, rb;

    ing_event_init(&a);
    ing_event_init(&b);
    memset(&ea, 0, sizeof(ea));
    memset(&eb, 0, sizeof(eb));
    ra = ce ? ing_event_from_proto(ce, &a, lim, &ea) : -EBADMSG;
    rb = ing_event_from_wire(buf, len, &b, lim, &eb);
    if (ra != rb)
        hexdump(buf, len);
    if (ra != rb)
        fail_msg("protobuf-c path %d, wire %d (%zu bytes)", ra, rb, len);
    compared++;
    if (ra == -EBADMSG) {
        refused_both++;
    } else if (ra == -EINVAL) {
        einval_both++;
        assert_int_equal(ea.code, eb.code);
        assert_string_equal(ea.field, eb.field);
        assert_string_equal(ea.message, eb.message);
        assert_int_equal(ea.index, eb.index);
    } else {
        ok_both++;
        ok_many += a.n_ext > 16;
        assert_same_event(&a, &b);
    }
    ing_event_clear(&a);
    ing_event_clear(&b);
}

static void check_event_bytes(const uint8_t *buf, size_t len)
{
    const ing_event_limits *lim = rn(3) == 0 ? &lim_small : &lim_default;
    CloudEvent *ce = ingest__v1__cloud_event__unpack(NULL, len, buf);

    compare_event(ce, buf, len, lim);
    if (ce)
        ingest__v1__cloud_event__free_unpacked(ce, NULL);
}

static void check_request_bytes(const uint8_t *buf, size_t len)
{
    Ingest__V1__PublishRequest *req = ingest__v1__publish_request__unpack(NULL, len, buf);
    wire_request w;
    int rc = publish_request_from_wire(buf, len, &w);

    compared++;
    if ((req == NULL) != (rc == -EBADMSG))
        hexdump(buf, len);
    if (req == NULL) {
        if (rc != -EBADMSG)
            fail_msg("protobuf-c refused a request of %zu bytes, the wire decoder did not", len);
        refused_both++;
        return;
    }
    if (rc != 0)
        fail_msg("the wire decoder refused a request of %zu bytes that protobuf-c read", len);
    assert_int_equal(w.seq, req->seq);
    assert_int_equal(w.ack, (int32_t)req->ack);
    assert_int_equal(w.n_events, req->n_events);
    size_t pos = 0, i = 0, ev_len;
    const uint8_t *ev;
    while (wire_request_next_event(&w, &pos, &ev, &ev_len)) {
        assert_true(i < req->n_events);
        compare_event(req->events[i++], ev, ev_len, &lim_default);
    }
    assert_int_equal(i, req->n_events);
    ingest__v1__publish_request__free_unpacked(req, NULL);
}

/* ---- mutations ---------------------------------------------------------------- */

static void mutate_and_check(const bytes *base, void (*check)(const uint8_t *, size_t), int rounds)
{
    static const uint8_t special[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x0b, 0x0c, 0x12,
                                      0x2a, 0x2b, 0x2e, 0x2f, 0x32, 0x3a, 0x42, 0x45, 0x08};
    bytes m = {0};

    check(base->p, base->n);
    /* Every truncation. */
    for (size_t n = 0; n < base->n; n++) {
        /* A copy of exactly n bytes, so that ASan sees any read past them. */
        uint8_t *t = malloc(n ? n : 1);
        assert_non_null(t);
        if (n)
            memcpy(t, base->p, n);
        check(t, n);
        free(t);
    }
    for (int r = 0; r < rounds; r++) {
        m.n = 0;
        put(&m, base->p, base->n);
        int edits = 1 + (int)rn(3);
        for (int e = 0; e < edits; e++) {
            size_t at = rn(m.n + 1);
            switch (rn(5)) {
            case 0: /* flip bits */
                if (m.n) {
                    size_t i = rn(m.n);
                    m.p[i] ^= (uint8_t)(1u << rn(8));
                }
                break;
            case 1: /* a byte set to a value that means something to a parser */
                if (m.n) {
                    size_t i = rn(m.n);
                    m.p[i] = special[rn(sizeof(special))];
                }
                break;
            case 2: { /* inserted bytes */
                uint8_t ins[4];
                size_t k = 1 + rn(4);
                for (size_t i = 0; i < k; i++)
                    ins[i] = rn(2) ? special[rn(sizeof(special))] : (uint8_t)rnd();
                put(&m, ins, k);
                memmove(m.p + at + k, m.p + at, m.n - k - at);
                memcpy(m.p + at, ins, k);
                break;
            }
            case 3: { /* a run duplicated in place */
                if (m.n == 0)
                    break;
                size_t from = rn(m.n), k = 1 + rn(m.n - from);
                uint8_t *run = malloc(k);
                assert_non_null(run);
                memcpy(run, m.p + from, k);
                put(&m, run, k);
                memmove(m.p + from + 2 * k, m.p + from + k, m.n - 2 * k - from);
                memcpy(m.p + from + k, run, k);
                free(run);
                break;
            }
            default: /* bytes cut out */
                if (m.n) {
                    size_t k = 1 + rn(m.n - at > 3 ? 3 : (m.n - at ? m.n - at : 1));
                    if (at + k <= m.n) {
                        memmove(m.p + at, m.p + at + k, m.n - at - k);
                        m.n -= k;
                    }
                }
                break;
            }
        }
        uint8_t *t = malloc(m.n ? m.n : 1);
        assert_non_null(t);
        if (m.n)
            memcpy(t, m.p, m.n);
        check(t, m.n);
        free(t);
    }
    free(m.p);
}

/* ---- tests -------------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    ing_event_limits_default(&lim_default);
    ing_event_limits_default(&lim_small);
    lim_small.max_extensions = 2;
    return 0;
}

static void test_events_agree(void **state)
{
    (void)state;
    compared = refused_both = einval_both = ok_both = ok_many = 0;
    for (int i = 0; i < 2000; i++) {
        bytes b = {0};
        random_event(&b);
        mutate_and_check(&b, check_event_bytes, 250);
        free(b.p);
    }
    printf(
        "# CloudEvent: %zu inputs compared: %zu refused by both, %zu the same error, %zu the same event (%zu "
        "with more than 16 extensions)\n",
        compared, refused_both, einval_both, ok_both, ok_many);
    assert_true(ok_many > 100);
    assert_true(ok_both > 10000 && einval_both > 10000 && refused_both > 100000);
}

static void test_requests_agree(void **state)
{
    (void)state;
    compared = refused_both = einval_both = ok_both = ok_many = 0;
    for (int i = 0; i < 400; i++) {
        bytes b = {0};
        size_t n = rn(5);
        for (size_t k = 0; k < n; k++) {
            bytes ev = {0};
            switch (rn(6)) {
            case 0: {
                Ingest__V1__PublishRequest r = INGEST__V1__PUBLISH_REQUEST__INIT;
                r.seq = rn(2) ? rn(100) : rnd();
                put_packed(&b, &r.base);
                break;
            }
            case 1: {
                Ingest__V1__PublishRequest r = INGEST__V1__PUBLISH_REQUEST__INIT;
                r.ack = (Ingest__V1__AckLevel)(rn(4) ? rn(3) : rnd());
                put_packed(&b, &r.base);
                break;
            }
            case 2: unknown_field(&b); break;
            default:
                random_event(&ev);
                put_varint(&b, 2 << 3 | 2);
                put_varint(&b, ev.n);
                put(&b, ev.p, ev.n);
                break;
            }
            free(ev.p);
        }
        mutate_and_check(&b, check_request_bytes, 250);
        free(b.p);
    }
    printf(
        "# PublishRequest: %zu inputs compared (%zu refused by both); their events: %zu the same error, %zu "
        "the same event\n",
        compared, refused_both, einval_both, ok_both);
}

/* The cases worked out by hand from protobuf-c's unpacker, each pinned on its own. */
static void test_protobuf_c_s_corners(void **state)
{
    static const struct {
        const char *what;
        const char *bytes;
        size_t len;
    } cases[] = {
        {"a value given twice, both unset", "\x2a\x04\x12\x00\x12\x00", 6},
        {"a string value, then an unset one", "\x2a\x08\x0a\x00\x12\x02\x1a\x00\x12\x00", 10},
        {"a boolean value, then an unset one", "\x2a\x06\x12\x02\x08\x01\x12\x00", 8},
        {"empty bytes, then an unset value", "\x2a\x06\x12\x02\x22\x00\x12\x00", 8},
        {"a boolean sent as length-delimited", "\x2a\x07\x0a\x01x\x12\x02\x0a\x00", 9},
        {"a boolean as a 10-byte varint", "\x2a\x0f\x0a\x01x\x12\x0a\x08\x80\x80\x80\x80\x80\x80\x80\x80\x01",
         17},
        {"a varint of 11 bytes", "\x48\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 11},
        {"a tag of 5 bytes", "\x8a\x80\x80\x80\x00\x01x", 7},
        {"a tag of 6 bytes", "\x8a\x80\x80\x80\x80\x00\x01x", 8},
        {"a start group", "\x4b", 1},
        {"wire type 7", "\x4f\x00", 2},
        {"a string sent as a varint", "\x08\x01", 2},
        {"a timestamp twice in one value", "\x2a\x0e\x0a\x01t\x12\x09\x3a\x02\x08\x05\x3a\x03\x10\x80\x01",
         16},
        {"a string with a NUL", "\x12\x03\x61\x00\x62\x22\x01t", 8},
        {"an entry without key", "\x2a\x04\x12\x02\x08\x01", 6},
        {"an entry without value", "\x2a\x03\x0a\x01x", 5},
        {"a boolean as fixed64", "\x2a\x0e\x0a\x01x\x12\x09\x09\x00\x00\x00\x00\x00\x00\x00\x01", 16},
        {"a boolean as fixed32, all zero", "\x2a\x0a\x0a\x01x\x12\x05\x0d\x00\x00\x00\x00", 12},
        {"field 0 in a one-byte tag", "\x02\x00", 2},
        {"field 0 in a two-byte tag", "\x80\x00\x00", 3},
        {"a length past the end", "\x12\x05/s", 4},
        {"text_data, then binary_data", "\x3a\x01x\x32\x02\x00\x01", 7},
        {"proto_data, then text_data", "\x42\x00\x3a\x01x", 5},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        print_message("# %s\n", cases[i].what);
        check_event_bytes((const uint8_t *)cases[i].bytes, cases[i].len);
    }
}

/* A 5-byte length that wraps in 32 bits: protobuf-c reads out of bounds on it; refused here. */
static void test_length_wrapping_in_32_bits_is_refused(void **state)
{
    static const uint8_t b[] = {0x0a, 0xfc, 0xff, 0xff, 0xff, 0x0f, 'x', 'y'};
    wire_request w;
    ing_event ev;
    (void)state;

    ing_event_init(&ev);
    assert_int_equal(ing_event_from_wire(b, sizeof(b), &ev, &lim_default, NULL), -EBADMSG);
    /* The same length on a request's events (field 2). */
    uint8_t r[sizeof(b)];
    memcpy(r, b, sizeof(b));
    r[0] = 0x12;
    assert_int_equal(publish_request_from_wire(r, sizeof(r), &w), -EBADMSG);
    ing_event_clear(&ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protobuf_c_s_corners),
        cmocka_unit_test(test_length_wrapping_in_32_bits_is_refused),
        cmocka_unit_test(test_events_agree),
        cmocka_unit_test(test_requests_agree),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
