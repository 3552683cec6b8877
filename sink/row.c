#include "row.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "envelope.h"
#include "json.h"

typedef struct out {
    char *p;
    size_t len, cap;
    int oom;
} out;

static void reserve(out *o, size_t n)
{
    if (o->oom || o->len + n <= o->cap)
        return;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + n)
        cap *= 2;
    char *p = realloc(o->p, cap);
    if (p == NULL) {
        o->oom = 1;
        return;
    }
    o->p = p;
    o->cap = cap;
}

static void raw(out *o, const char *s, size_t n)
{
    reserve(o, n);
    if (!o->oom) {
        memcpy(o->p + o->len, s, n);
        o->len += n;
    }
}

/* A COPY text field: backslash, tab, newline and carriage return escaped. */
static void text(out *o, const char *s, size_t n)
{
    reserve(o, n * 2);
    if (o->oom)
        return;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        switch (c) {
        case '\\': o->p[o->len++] = '\\', o->p[o->len++] = '\\'; break;
        case '\t': o->p[o->len++] = '\\', o->p[o->len++] = 't'; break;
        case '\n': o->p[o->len++] = '\\', o->p[o->len++] = 'n'; break;
        case '\r': o->p[o->len++] = '\\', o->p[o->len++] = 'r'; break;
        default: o->p[o->len++] = c; break;
        }
    }
}

static void field_str(out *o, const char *s)
{
    if (s == NULL || *s == '\0')
        raw(o, "\\N", 2);
    else
        text(o, s, strlen(s));
}

static void sep(out *o)
{
    raw(o, "\t", 1);
}

/* A JSON string literal of s into the COPY field (so both JSON and COPY escaping apply). */
static void json_string(out *o, const char *s)
{
    char u[8];

    raw(o, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"')
            raw(o, "\\\\\"", 3); /* \" in JSON, its backslash doubled for COPY */
        else if (c == '\\')
            raw(o, "\\\\\\\\", 4);
        else if (c < 0x20) {
            snprintf(u, sizeof(u), "\\\\u%04x", c);
            raw(o, u, strlen(u));
        } else
            raw(o, (const char *)&c, 1);
    }
    raw(o, "\"", 1);
}

static void timestamp(out *o, int64_t sec, int32_t nsec)
{
    char ts[64];

    /* timestamptz keeps microseconds. */
    rfc3339_format(sec, nsec - nsec % 1000, ts, sizeof(ts));
    raw(o, ts, strlen(ts));
}

static const Ingest__V1__CloudEvent__CloudEventAttributeValue *attr(const Ingest__V1__CloudEvent *ce,
                                                                    const char *key)
{
    for (size_t i = 0; i < ce->n_attributes; i++)
        if (ce->attributes[i]->key && strcmp(ce->attributes[i]->key, key) == 0)
            return ce->attributes[i]->value;
    return NULL;
}

static const char *attr_str(const Ingest__V1__CloudEvent *ce, const char *key)
{
    const Ingest__V1__CloudEvent__CloudEventAttributeValue *v = attr(ce, key);

    if (v == NULL)
        return NULL;
    switch (v->attr_case) {
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_STRING: return v->ce_string;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_URI: return v->ce_uri;
    case INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_URI_REF: return v->ce_uri_ref;
    default: return NULL;
    }
}

/* Any attribute as its canonical string (booleans, integers, bytes, timestamps too); malloc'd or NULL. */
static char *attr_text(const Ingest__V1__CloudEvent *ce, const char *key)
{
    const Ingest__V1__CloudEvent__CloudEventAttributeValue *v = attr(ce, key);
    size_t len;

    return v ? envelope_attr_text(v, &len) : NULL;
}

static int is_core(const char *k)
{
    return strcmp(k, "subject") == 0 || strcmp(k, "time") == 0 || strcmp(k, "datacontenttype") == 0 ||
           strcmp(k, "dataschema") == 0;
}

/*
 * Whether text_data goes to the jsonb column. A JSON datacontenttype says so
 * (the gateway has checked it is JSON that jsonb takes). Without one, it is
 * JSON when it came from the JSON format (whose data member is JSON: the
 * gateway checked it too), and protobuf text_data is JSON only when it is
 * JSON that jsonb takes, else text: "hi" from a gRPC client is stored in
 * data_bytes, not refused by Postgres and dead-lettered. Over HTTP,
 * text_data without a type only ever comes from the JSON format; UDP and gRPC
 * take protobuf too, so theirs is looked at.
 */
static int text_data_is_json(const Ingest__V1__Envelope *env, const char *ct)
{
    const Ingest__V1__CloudEvent *ce = env->event;
    ing_event_limits lim;
    ing_event_error err;

    if (ct != NULL)
        return media_type_is_json(ct);
    if (env->protocol == INGEST__V1__PROTOCOL__PROTOCOL_HTTP)
        return 1;
    ing_event_limits_default(&lim);
    lim.max_event_bytes = SIZE_MAX / 2; /* the gateway's own limit held; here only JSON's rules count */
    return json_check(ce->text_data, strlen(ce->text_data), &lim, &err) == 0;
}

int row_append(const uint8_t *value, size_t len, int32_t partition, int64_t offset, char **buf, size_t *blen,
               size_t *bcap, char *why, size_t whylen)
{
    static const char *const protocols[] = {"", "HTTP", "UDP", "GRPC"};
    Ingest__V1__Envelope *env = envelope_decode(value, len);
    out o = {.p = *buf, .len = *blen, .cap = *bcap};
    char num[48];
    int rc = -EINVAL;

    if (env == NULL) {
        snprintf(why, whylen, "not an ingest.v1.Envelope: the bytes do not decode");
        return -EINVAL;
    }
    const Ingest__V1__CloudEvent *ce = env->event;
    if (ce == NULL || ce->source == NULL || !*ce->source || ce->id == NULL || !*ce->id || ce->type == NULL ||
        !*ce->type) {
        snprintf(why, whylen, "the Envelope has no event, or an event without source, id or type");
        goto done;
    }

    field_str(&o, ce->source);
    sep(&o);
    field_str(&o, ce->id);
    sep(&o);
    field_str(&o, ce->type);
    sep(&o);
    field_str(&o, attr_str(ce, "subject"));
    sep(&o);
    const Ingest__V1__CloudEvent__CloudEventAttributeValue *t = attr(ce, "time");
    if (t && t->attr_case == INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_TIMESTAMP &&
        t->ce_timestamp)
        timestamp(&o, t->ce_timestamp->seconds, t->ce_timestamp->nanos);
    else
        field_str(&o, t ? attr_str(ce, "time") : NULL);
    sep(&o);
    const char *ct = attr_str(ce, "datacontenttype");
    field_str(&o, ct);
    sep(&o);
    field_str(&o, attr_str(ce, "dataschema"));
    sep(&o);

    /* extensions: a JSON object of strings */
    int n_ext = 0;
    for (size_t i = 0; i < ce->n_attributes; i++) {
        const char *k = ce->attributes[i]->key;
        if (k == NULL || is_core(k))
            continue;
        char *v = attr_text(ce, k);
        if (v == NULL)
            continue;
        raw(&o, n_ext++ ? "," : "{", 1);
        json_string(&o, k);
        raw(&o, ":", 1);
        json_string(&o, v);
        free(v);
    }
    if (n_ext)
        raw(&o, "}", 1);
    else
        raw(&o, "\\N", 2);
    sep(&o);

    /* data jsonb, or data_bytes */
    if (ce->data_case == INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA && text_data_is_json(env, ct)) {
        text(&o, ce->text_data, strlen(ce->text_data));
        sep(&o);
        raw(&o, "\\N", 2);
    } else if (ce->data_case == INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA ||
               ce->data_case == INGEST__V1__CLOUD_EVENT__DATA_BINARY_DATA) {
        const uint8_t *d = ce->data_case == INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA
                               ? (const uint8_t *)ce->text_data
                               : ce->binary_data.data;
        size_t dl = ce->data_case == INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA ? strlen(ce->text_data)
                                                                             : ce->binary_data.len;
        static const char hex[] = "0123456789abcdef";
        raw(&o, "\\N\t\\\\x", 6); /* data NULL, then bytea hex: \\x... (its backslash doubled for COPY) */
        reserve(&o, dl * 2);
        if (!o.oom)
            for (size_t i = 0; i < dl; i++) {
                o.p[o.len++] = hex[d[i] >> 4];
                o.p[o.len++] = hex[d[i] & 15];
            }
    } else {
        raw(&o, "\\N\t\\N", 5);
    }
    sep(&o);
    field_str(&o, env->protocol >= 1 && env->protocol <= 3 ? protocols[env->protocol] : NULL);
    sep(&o);
    field_str(&o, env->peer);
    sep(&o);
    field_str(&o, env->gateway_id);
    sep(&o);
    if (env->received_unix_nanos) {
        /* Floor division: nanoseconds stay in [0, 1e9) before 1970 too. */
        int64_t sec = env->received_unix_nanos / 1000000000LL, nsec = env->received_unix_nanos % 1000000000LL;
        if (nsec < 0) {
            sec--;
            nsec += 1000000000LL;
        }
        timestamp(&o, sec, (int32_t)nsec);
    } else
        raw(&o, "\\N", 2);
    snprintf(num, sizeof(num), "\t%" PRId32 "\t%" PRId64 "\t", partition, offset);
    raw(&o, num, strlen(num));
    field_str(&o, env->principal); /* NULL before principals (an empty field) */
    raw(&o, "\n", 1);
    rc = o.oom ? -ENOMEM : 0;

done:
    envelope_free(env);
    if (rc != 0)
        o.len = *blen; /* nothing of this record stays */
    *buf = o.p;
    *blen = o.len;
    *bcap = o.cap;
    return rc;
}
