#include "envelope.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef Ingest__V1__CloudEvent CloudEvent;
typedef Ingest__V1__CloudEvent__CloudEventAttributeValue AttrValue;
typedef Ingest__V1__CloudEvent__AttributesEntry AttrEntry;

/*
 * The Envelope is written straight from the event, without protobuf-c's
 * message structs: building those cost three allocations per event and its
 * descriptor-driven packer a tenth of the UDP receive thread (perf/udp). The
 * bytes are what protobuf-c packs for the same Envelope (fields in number
 * order, proto3 defaults left out, map entries in the order below): the unit
 * tests compare the two on every kind of event.
 */

/* Wire types and tags: (field << 3) | wire type. */
#define WT_VARINT      0
#define WT_LEN         2
#define TAG(field, wt) ((uint8_t)((field) << 3 | (wt)))

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* A length-delimited field of `len` bytes: its tag, its length, and the bytes. */
static size_t len_field_size(size_t len)
{
    return 1 + varint_size(len) + len;
}

static uint8_t *put_bytes(uint8_t *p, uint8_t tag, const void *v, size_t len)
{
    *p++ = tag;
    p = put_varint(p, len);
    memcpy(p, v, len);
    return p + len;
}

/* A proto3 string: left out when empty. */
static size_t str_size(size_t len)
{
    return len ? len_field_size(len) : 0;
}

static uint8_t *put_str(uint8_t *p, uint8_t tag, const char *v, size_t len)
{
    return len ? put_bytes(p, tag, v, len) : p;
}

static size_t timestamp_size(int64_t sec, int32_t nsec)
{
    return (sec ? 1 + varint_size((uint64_t)sec) : 0) + (nsec ? 1 + varint_size((uint64_t)nsec) : 0);
}

/* One attributes map entry: key (1) and a CloudEventAttributeValue (2) of `vlen` bytes. */
static size_t entry_size(size_t klen, size_t vlen)
{
    return str_size(klen) + len_field_size(vlen);
}

/* CloudEventAttributeValue fields. */
#define AV_STRING    3
#define AV_URI       5
#define AV_TIMESTAMP 7

static uint8_t *put_string_attr(uint8_t *p, const char *key, const char *v, int field)
{
    size_t klen = strlen(key), vlen = strlen(v), av = len_field_size(vlen);

    *p++ = TAG(5, WT_LEN);
    p = put_varint(p, entry_size(klen, av));
    p = put_str(p, TAG(1, WT_LEN), key, klen);
    *p++ = TAG(2, WT_LEN);
    p = put_varint(p, av);
    return put_bytes(p, TAG(field, WT_LEN), v, vlen);
}

static size_t string_attr_size(const char *key, const char *v)
{
    return len_field_size(entry_size(strlen(key), len_field_size(strlen(v))));
}

/* The CloudEvent message's size (without its own tag and length). */
static size_t cloud_event_size(const ing_event *ev)
{
    size_t n =
        str_size(strlen(ev->id)) + str_size(strlen(ev->source)) + str_size(3) + str_size(strlen(ev->type));

    if (ev->subject)
        n += string_attr_size("subject", ev->subject);
    if (ev->time) {
        n += len_field_size(entry_size(4, len_field_size(timestamp_size(ev->time_sec, ev->time_nsec))));
    }
    if (ev->datacontenttype)
        n += string_attr_size("datacontenttype", ev->datacontenttype);
    if (ev->dataschema)
        n += string_attr_size("dataschema", ev->dataschema);
    for (size_t i = 0; i < ev->n_ext; i++)
        n += string_attr_size(ev->ext[i].name, ev->ext[i].value);
    /* A oneof member is written when set, even empty. */
    if (ev->data_kind != EVENT_DATA_NONE)
        n += len_field_size(ev->data_len);
    return n;
}

static size_t meta_size(const envelope_meta *meta)
{
    size_t n = 0;

    if (meta->received_unix_nanos)
        n += 1 + varint_size((uint64_t)meta->received_unix_nanos);
    if (meta->protocol)
        n += 1 + varint_size((uint64_t)meta->protocol);
    if (meta->peer)
        n += str_size(strlen(meta->peer));
    if (meta->gateway_id)
        n += str_size(strlen(meta->gateway_id));
    if (meta->principal && meta->principal[0])
        n += str_size(strlen(meta->principal));
    return n;
}

size_t envelope_size(const ing_event *ev, const envelope_meta *meta, size_t *event_len)
{
    if (ev->id == NULL || ev->source == NULL || ev->type == NULL)
        return 0;
    *event_len = cloud_event_size(ev);
    return len_field_size(*event_len) + meta_size(meta);
}

/*
 * Every byte ing_event_size() counts is written once; what comes on top is
 * a tag and a length for each field, and, for a map entry, its key (the
 * extension names are counted already, the other keys are not), "1.0" and
 * the binary timestamp. Each field is taken at its worst: present, with its
 * lengths at the widest the whole can need, and every extension allowed.
 */
static size_t envelope_overhead(size_t l, size_t max_extensions, size_t peer_len, size_t gateway_id_len)
{
    size_t entry = 1 + l + 2 + 1 + l + 1 + l; /* map entry: tag, length; key tag, length; value, string */
    size_t ts = 1 + 10 + 1 + 5;               /* seconds (negative: ten bytes), nanoseconds */
    size_t ce = 3 * (1 + l) + (2 + 3)         /* id, source, type; specversion "1.0" */
                + 3 * entry + 7 + 15 + 10     /* subject, datacontenttype, dataschema and their keys */
                + entry + 4 + ts              /* time */
                + max_extensions * entry      /* extensions (names counted) */
                + 1 + l;                      /* data */
    return 1 + l + ce + (1 + 10) + (1 + 1) + (1 + l + peer_len) + (1 + l + gateway_id_len) +
           (1 + 1 + ENVELOPE_MAX_PRINCIPAL);
}

size_t envelope_max_size(size_t max_event_bytes, size_t max_extensions, size_t peer_len,
                         size_t gateway_id_len)
{
    /* Lengths are at most the whole's: widen them until the whole needs no wider. */
    size_t l = varint_size(max_event_bytes), n;

    for (;;) {
        n = max_event_bytes + envelope_overhead(l, max_extensions, peer_len, gateway_id_len);
        if (varint_size(n) <= l)
            return n;
        l = varint_size(n);
    }
}

void envelope_write(const ing_event *ev, const envelope_meta *meta, size_t event_len, uint8_t *out)
{
    uint8_t *p = out;

    *p++ = TAG(1, WT_LEN);
    p = put_varint(p, event_len);
    p = put_str(p, TAG(1, WT_LEN), ev->id, strlen(ev->id));
    p = put_str(p, TAG(2, WT_LEN), ev->source, strlen(ev->source));
    p = put_str(p, TAG(3, WT_LEN), "1.0", 3);
    p = put_str(p, TAG(4, WT_LEN), ev->type, strlen(ev->type));
    if (ev->subject)
        p = put_string_attr(p, "subject", ev->subject, AV_STRING);
    if (ev->time) {
        int64_t sec = ev->time_sec;
        int32_t nsec = ev->time_nsec;
        size_t ts = timestamp_size(sec, nsec), av = len_field_size(ts);
        *p++ = TAG(5, WT_LEN);
        p = put_varint(p, entry_size(4, av));
        p = put_bytes(p, TAG(1, WT_LEN), "time", 4);
        *p++ = TAG(2, WT_LEN);
        p = put_varint(p, av);
        *p++ = TAG(AV_TIMESTAMP, WT_LEN);
        p = put_varint(p, ts);
        if (sec) {
            *p++ = TAG(1, WT_VARINT);
            p = put_varint(p, (uint64_t)sec);
        }
        if (nsec) {
            *p++ = TAG(2, WT_VARINT);
            p = put_varint(p, (uint64_t)nsec);
        }
    }
    if (ev->datacontenttype)
        p = put_string_attr(p, "datacontenttype", ev->datacontenttype, AV_STRING);
    if (ev->dataschema)
        p = put_string_attr(p, "dataschema", ev->dataschema, AV_URI);
    for (size_t i = 0; i < ev->n_ext; i++)
        p = put_string_attr(p, ev->ext[i].name, ev->ext[i].value, AV_STRING);
    switch (ev->data_kind) {
    case EVENT_DATA_JSON:
    case EVENT_DATA_TEXT: p = put_bytes(p, TAG(7, WT_LEN), ev->data, ev->data_len); break;
    case EVENT_DATA_BINARY: p = put_bytes(p, TAG(6, WT_LEN), ev->data, ev->data_len); break;
    case EVENT_DATA_NONE: break;
    }
    if (meta->received_unix_nanos) {
        *p++ = TAG(2, WT_VARINT);
        p = put_varint(p, (uint64_t)meta->received_unix_nanos);
    }
    if (meta->protocol) {
        *p++ = TAG(3, WT_VARINT);
        p = put_varint(p, (uint64_t)meta->protocol);
    }
    if (meta->peer)
        p = put_str(p, TAG(4, WT_LEN), meta->peer, strlen(meta->peer));
    if (meta->gateway_id)
        p = put_str(p, TAG(5, WT_LEN), meta->gateway_id, strlen(meta->gateway_id));
    if (meta->principal && meta->principal[0])
        p = put_str(p, TAG(6, WT_LEN), meta->principal, strlen(meta->principal));
}

int envelope_encode(const ing_event *ev, const envelope_meta *meta, uint8_t **out, size_t *out_len)
{
    size_t ce_len, len = envelope_size(ev, meta, &ce_len);
    uint8_t *buf;

    if (len == 0)
        return -EINVAL;
    if ((buf = malloc(len)) == NULL)
        return -ENOMEM;
    envelope_write(ev, meta, ce_len, buf);
    *out = buf;
    *out_len = len;
    return 0;
}

Ingest__V1__Envelope *envelope_decode(const uint8_t *buf, size_t len)
{
    return ingest__v1__envelope__unpack(NULL, len, buf);
}

void envelope_free(Ingest__V1__Envelope *env)
{
    if (env != NULL)
        ingest__v1__envelope__free_unpacked(env, NULL);
}

size_t base64_encode(const unsigned char *in, size_t len, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0, i = 0;

    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tbl[v >> 18];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = tbl[(v >> 6) & 63];
        out[o++] = tbl[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = tbl[v >> 18];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

void rfc3339_format(int64_t sec, int32_t nsec, char *buf, size_t size)
{
    struct tm tm;
    time_t t = (time_t)sec;

    /* Out of what RFC 3339 can say: a text that rfc3339_parse() refuses, for the caller's validation. */
    if (nsec < 0 || nsec >= 1000000000 || sec < -62135596800LL || sec > 253402300799LL ||
        gmtime_r(&t, &tm) == NULL) {
        snprintf(buf, size, "out of range: %" PRId64 "s %" PRId32 "ns", sec, nsec);
        return;
    }
    /* Not strftime's %Y: that writes year 1 as "1", and RFC 3339 wants four digits. */
    int n = snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (n > 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, nsec ? ".%09" PRId32 "Z" : "Z", nsec);
}

const char *envelope_attr_format(const envelope_attr *v, char buf[ATTR_TEXT_BUF], char **heap, size_t *len)
{
    *heap = NULL;
    switch (v->kind) {
    case ATTR_BOOLEAN:
        *len = (size_t)snprintf(buf, ATTR_TEXT_BUF, "%s", v->boolean ? "true" : "false");
        return buf;
    case ATTR_INTEGER: *len = (size_t)snprintf(buf, ATTR_TEXT_BUF, "%" PRId32, v->integer); return buf;
    case ATTR_STRING:
    case ATTR_URI:
    case ATTR_URI_REF:
        /* protobuf-c's strings end at their first NUL, and so did these. */
        *len = strnlen(v->str, v->len);
        return v->str;
    case ATTR_BYTES:
        if ((*heap = malloc(4 * ((v->len + 2) / 3) + 1)) == NULL)
            return NULL;
        *len = base64_encode((const unsigned char *)v->str, v->len, *heap);
        return *heap;
    case ATTR_TIMESTAMP:
        rfc3339_format(v->sec, v->nsec, buf, ATTR_TEXT_BUF);
        *len = strlen(buf);
        return buf;
    default: return NULL;
    }
}

/* protobuf-c's typed value as an envelope_attr; 0, or -1 for a timestamp case without its message. */
static int attr_of_proto(const AttrValue *a, envelope_attr *v)
{
    memset(v, 0, sizeof(*v));
    v->kind = (int)a->attr_case;
    switch (a->attr_case) {
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_BOOLEAN:
        v->boolean = a->ce_boolean;
        break;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_INTEGER:
        v->integer = a->ce_integer;
        break;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_STRING:
        v->str = a->ce_string, v->len = strlen(a->ce_string);
        break;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_URI:
        v->str = a->ce_uri, v->len = strlen(a->ce_uri);
        break;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_URI_REF:
        v->str = a->ce_uri_ref, v->len = strlen(a->ce_uri_ref);
        break;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_BYTES:
        v->str = (const char *)a->ce_bytes.data, v->len = a->ce_bytes.len;
        break;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_TIMESTAMP:
        if (a->ce_timestamp == NULL)
            return -1;
        v->sec = a->ce_timestamp->seconds, v->nsec = a->ce_timestamp->nanos;
        break;
    default: break;
    }
    return 0;
}

char *envelope_attr_text(const AttrValue *a, size_t *len)
{
    char buf[ATTR_TEXT_BUF], *heap;
    const char *s;
    envelope_attr v;

    if (attr_of_proto(a, &v) != 0 || (s = envelope_attr_format(&v, buf, &heap, len)) == NULL)
        return NULL;
    return heap ? heap : strndup(s, *len);
}

int ing_event_from_proto(const CloudEvent *ce, ing_event *ev, const ing_event_limits *lim,
                         ing_event_error *err)
{
    const struct {
        const char *name;
        const char *value;
    } core[] = {
        {"id", ce->id}, {"source", ce->source}, {"specversion", ce->spec_version}, {"type", ce->type}};
    int rc;

    /* proto3 strings have no "absent": empty means not given. */
    for (size_t i = 0; i < sizeof(core) / sizeof(core[0]); i++) {
        if (core[i].value == NULL || core[i].value[0] == '\0')
            continue;
        if ((rc = ing_event_set_attr(ev, core[i].name, strlen(core[i].name), core[i].value,
                                     strlen(core[i].value), lim, err)) != 0)
            return rc;
    }
    for (size_t i = 0; i < ce->n_attributes; i++) {
        const AttrEntry *e = ce->attributes[i];
        char buf[ATTR_TEXT_BUF], *heap;
        const char *s;
        size_t len = 0;
        envelope_attr v;
        if (e->key == NULL || e->value == NULL ||
            e->value->attr_case == INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR__NOT_SET)
            return ing_event_error_set(err, ING_ERR_INVALID_EVENT, -1, e->key ? e->key : "attributes",
                                       "%s: attribute without a value", e->key ? e->key : "attributes");
        if (attr_of_proto(e->value, &v) != 0 || (s = envelope_attr_format(&v, buf, &heap, &len)) == NULL)
            return -ENOMEM;
        rc = ing_event_set_attr(ev, e->key, strlen(e->key), s, len, lim, err);
        free(heap);
        if (rc != 0)
            return rc;
    }
    switch (ce->data_case) {
    case INGEST__V1__CLOUD_EVENT__DATA_BINARY_DATA:
    case INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA: {
        int text = ce->data_case == INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA;
        size_t len = text ? strlen(ce->text_data) : ce->binary_data.len;
        unsigned char *d = ing_event_alloc(ev, len + 1);
        if (d == NULL)
            return -ENOMEM;
        /* protobuf-c gives empty bytes a NULL data, which memcpy must not see even for 0 bytes. */
        if (len)
            memcpy(d, text ? (const void *)ce->text_data : (const void *)ce->binary_data.data, len);
        d[len] = '\0';
        ing_event_set_data(ev, text ? EVENT_DATA_TEXT : EVENT_DATA_BINARY, d, len);
        break;
    }
    case INGEST__V1__CLOUD_EVENT__DATA_PROTO_DATA:
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, -1, "data",
                                   "data: proto_data is not supported; send binary_data or text_data");
    default: break;
    }
    return 0;
}

const char *ing_event_kafka_key(const ing_event *ev)
{
    for (size_t i = 0; i < ev->n_ext; i++)
        if (strcmp(ev->ext[i].name, "partitionkey") == 0)
            return ev->ext[i].value;
    return ev->subject ? ev->subject : ev->source;
}
