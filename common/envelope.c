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

/* Optional attributes that travel in the attributes map, besides extensions. */
#define MAX_CORE_ATTRS 4

int envelope_encode(const event *ev, const envelope_meta *meta, uint8_t **out, size_t *out_len)
{
    Ingest__V1__Envelope env = INGEST__V1__ENVELOPE__INIT;
    CloudEvent ce = INGEST__V1__CLOUD_EVENT__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    size_t n_attrs = ev->n_ext + MAX_CORE_ATTRS, n = 0;
    AttrEntry *entries = NULL, **entry_ptrs = NULL;
    AttrValue *values = NULL;
    uint8_t *buf = NULL;
    int rc = -ENOMEM;

    if (ev->id == NULL || ev->source == NULL || ev->type == NULL)
        return -EINVAL;

    /* Everything points into the event: no copies but the packed buffer. */
    entries = malloc(n_attrs * sizeof(*entries));
    entry_ptrs = malloc(n_attrs * sizeof(*entry_ptrs));
    values = malloc(n_attrs * sizeof(*values));
    if (entries == NULL || entry_ptrs == NULL || values == NULL)
        goto fail;

#define ADD_ATTR(k, field, member, v)                                                                        \
    do {                                                                                                     \
        ingest__v1__cloud_event__attributes_entry__init(&entries[n]);                                        \
        ingest__v1__cloud_event__cloud_event_attribute_value__init(&values[n]);                              \
        values[n].attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_##field;            \
        values[n].member = (v);                                                                              \
        entries[n].key = (char *)(k);                                                                        \
        entries[n].value = &values[n];                                                                       \
        entry_ptrs[n] = &entries[n];                                                                         \
        n++;                                                                                                 \
    } while (0)

    if (ev->subject)
        ADD_ATTR("subject", CE_STRING, ce_string, ev->subject);
    if (ev->time) {
        /* Floor division: nanos stay in [0, 1e9) for times before 1970 too. */
        int64_t sec = ev->time_unix_nanos / 1000000000LL, nsec = ev->time_unix_nanos % 1000000000LL;
        if (nsec < 0) {
            sec--;
            nsec += 1000000000LL;
        }
        ts.seconds = sec;
        ts.nanos = (int32_t)nsec;
        ADD_ATTR("time", CE_TIMESTAMP, ce_timestamp, &ts);
    }
    if (ev->datacontenttype)
        ADD_ATTR("datacontenttype", CE_STRING, ce_string, ev->datacontenttype);
    if (ev->dataschema)
        ADD_ATTR("dataschema", CE_URI, ce_uri, ev->dataschema);
    for (size_t i = 0; i < ev->n_ext; i++)
        ADD_ATTR(ev->ext[i].name, CE_STRING, ce_string, ev->ext[i].value);
#undef ADD_ATTR

    ce.id = ev->id;
    ce.source = ev->source;
    ce.spec_version = "1.0";
    ce.type = ev->type;
    ce.n_attributes = n;
    ce.attributes = entry_ptrs;
    switch (ev->data_kind) {
    case EVENT_DATA_JSON:
    case EVENT_DATA_TEXT:
        ce.data_case = INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA;
        ce.text_data = (char *)ev->data;
        break;
    case EVENT_DATA_BINARY:
        ce.data_case = INGEST__V1__CLOUD_EVENT__DATA_BINARY_DATA;
        ce.binary_data.data = ev->data;
        ce.binary_data.len = ev->data_len;
        break;
    case EVENT_DATA_NONE: break;
    }

    env.event = &ce;
    env.received_unix_nanos = meta->received_unix_nanos;
    env.protocol = (Ingest__V1__Protocol)meta->protocol;
    env.peer = (char *)(meta->peer ? meta->peer : "");
    env.gateway_id = (char *)(meta->gateway_id ? meta->gateway_id : "");

    size_t len = ingest__v1__envelope__get_packed_size(&env);
    if ((buf = malloc(len ? len : 1)) == NULL)
        goto fail;
    ingest__v1__envelope__pack(&env, buf);
    *out = buf;
    *out_len = len;
    rc = 0;

fail:
    free(entries);
    free(entry_ptrs);
    free(values);
    return rc;
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

void rfc3339_format(int64_t unix_nanos, char *buf, size_t size)
{
    int64_t sec = unix_nanos / 1000000000LL, nsec = unix_nanos % 1000000000LL;
    struct tm tm;
    time_t t;
    char date[32];

    if (nsec < 0) {
        sec--;
        nsec += 1000000000LL;
    }
    t = (time_t)sec;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    if (nsec)
        snprintf(buf, size, "%s.%09" PRId64 "Z", date, nsec);
    else
        snprintf(buf, size, "%sZ", date);
}

static int owned_case(const AttrValue *v);

/* The canonical string of a typed attribute value; a new malloc'd string, or NULL. */
static char *attr_string(const AttrValue *v, size_t *len)
{
    char tmp[48], *s;

    switch (v->attr_case) {
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_BOOLEAN:
        s = strdup(v->ce_boolean ? "true" : "false");
        break;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_INTEGER:
        snprintf(tmp, sizeof(tmp), "%" PRId32, v->ce_integer);
        s = strdup(tmp);
        break;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_STRING:
        *len = strlen(v->ce_string);
        return v->ce_string;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_URI:
        *len = strlen(v->ce_uri);
        return v->ce_uri;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_URI_REF:
        *len = strlen(v->ce_uri_ref);
        return v->ce_uri_ref;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_BYTES:
        if ((s = malloc(4 * ((v->ce_bytes.len + 2) / 3) + 1)) == NULL)
            return NULL;
        *len = base64_encode(v->ce_bytes.data, v->ce_bytes.len, s);
        return s;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_TIMESTAMP:
        if (v->ce_timestamp == NULL)
            return NULL;
        rfc3339_format(v->ce_timestamp->seconds * 1000000000LL + v->ce_timestamp->nanos, tmp, sizeof(tmp));
        s = strdup(tmp);
        break;
    default: return NULL;
    }
    if (s)
        *len = strlen(s);
    return s;
}

char *envelope_attr_text(const AttrValue *v, size_t *len)
{
    char *s = attr_string(v, len);

    /* Strings and URIs point into the message: hand out a copy of those too. */
    if (s && !owned_case(v))
        s = strndup(s, *len);
    return s;
}

static int owned_case(const AttrValue *v)
{
    return v->attr_case != INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_STRING &&
           v->attr_case != INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_URI &&
           v->attr_case != INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_URI_REF;
}

int event_from_proto(const CloudEvent *ce, event *ev, const event_limits *lim, event_error *err)
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
        if ((rc = event_set_attr(ev, core[i].name, strlen(core[i].name), core[i].value, strlen(core[i].value),
                                 lim, err)) != 0)
            return rc;
    }
    for (size_t i = 0; i < ce->n_attributes; i++) {
        const AttrEntry *e = ce->attributes[i];
        size_t len = 0;
        char *s;
        if (e->key == NULL || e->value == NULL ||
            e->value->attr_case == INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR__NOT_SET)
            return event_error_set(err, EVENT_ERR_INVALID, -1, e->key ? e->key : "attributes",
                                   "%s: attribute without a value", e->key ? e->key : "attributes");
        if ((s = attr_string(e->value, &len)) == NULL)
            return -ENOMEM;
        rc = event_set_attr(ev, e->key, strlen(e->key), s, len, lim, err);
        if (owned_case(e->value))
            free(s);
        if (rc != 0)
            return rc;
    }
    switch (ce->data_case) {
    case INGEST__V1__CLOUD_EVENT__DATA_BINARY_DATA:
    case INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA: {
        int text = ce->data_case == INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA;
        size_t len = text ? strlen(ce->text_data) : ce->binary_data.len;
        unsigned char *d = malloc(len + 1);
        if (d == NULL)
            return -ENOMEM;
        memcpy(d, text ? (const void *)ce->text_data : (const void *)ce->binary_data.data, len);
        d[len] = '\0';
        event_set_data(ev, text ? EVENT_DATA_TEXT : EVENT_DATA_BINARY, d, len);
        break;
    }
    case INGEST__V1__CLOUD_EVENT__DATA_PROTO_DATA:
        return event_error_set(err, EVENT_ERR_INVALID, -1, "data",
                               "data: proto_data is not supported; send binary_data or text_data");
    default: break;
    }
    return 0;
}

const char *event_kafka_key(const event *ev)
{
    for (size_t i = 0; i < ev->n_ext; i++)
        if (strcmp(ev->ext[i].name, "partitionkey") == 0)
            return ev->ext[i].value;
    return ev->subject ? ev->subject : ev->source;
}
