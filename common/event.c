/*
 * The event model's rules, once for every protocol: see event.h.
 */
#include "event.h"
#include "json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "uuid.h"

void ing_event_limits_default(ing_event_limits *lim)
{
    lim->max_event_bytes = 1u << 20;
    lim->max_request_bytes = 8u << 20;
    lim->max_batch_events = 10000;
    lim->max_extensions = 64;
}

const char *ing_errcode_name(ing_errcode code)
{
    switch (code) {
    case ING_ERR_MALFORMED_JSON: return "malformed_json";
    case ING_ERR_MALFORMED_PROTOBUF: return "malformed_protobuf";
    case ING_ERR_INVALID_EVENT: return "invalid_event";
    case ING_ERR_TOO_LARGE: return "too_large";
    case ING_ERR_TOO_MANY_EVENTS: return "too_many_events";
    case ING_ERR_NONE: break;
    }
    return NULL;
}

int ing_event_error_set(ing_event_error *err, ing_errcode code, long index, const char *field,
                        const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return -EINVAL;
    err->code = code;
    err->index = index;
    snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return -EINVAL;
}

void ing_event_init(ing_event *ev)
{
    memset(ev, 0, sizeof(*ev));
}

/*
 * Free a member unless it lives in the event's block. Without a block there
 * is nothing to compare with: store + store_cap would be arithmetic on NULL
 * (undefined even for + 0, and UBSan in clang says so on every binary-mode request).
 */
static void release(const ing_event *ev, void *p)
{
    if (p == NULL)
        return;
    if (ev->store != NULL && (char *)p >= ev->store && (char *)p < ev->store + ev->store_cap)
        return;
    free(p);
}

void ing_event_clear(ing_event *ev)
{
    if (ev == NULL)
        return;
    release(ev, ev->id);
    release(ev, ev->source);
    release(ev, ev->specversion);
    release(ev, ev->type);
    release(ev, ev->subject);
    release(ev, ev->time);
    release(ev, ev->datacontenttype);
    release(ev, ev->dataschema);
    for (size_t i = 0; i < ev->n_ext; i++) {
        release(ev, ev->ext[i].name);
        release(ev, ev->ext[i].value);
    }
    free(ev->ext);
    release(ev, ev->data);
    free(ev->store);
    ing_event_init(ev);
}

int ing_event_reserve(ing_event *ev, size_t bytes)
{
    if (ev->store != NULL || bytes == 0)
        return 0;
    if ((ev->store = malloc(bytes)) == NULL)
        return -ENOMEM;
    ev->store_len = 0;
    ev->store_cap = bytes;
    return 0;
}

unsigned char *ing_event_alloc(ing_event *ev, size_t len)
{
    if (ev->store != NULL && ev->store_cap - ev->store_len >= len) {
        unsigned char *p = (unsigned char *)ev->store + ev->store_len;
        ev->store_len += len;
        return p;
    }
    return malloc(len ? len : 1);
}

static char *dup_n(ing_event *ev, const char *s, size_t len)
{
    char *p = (char *)ing_event_alloc(ev, len + 1);

    if (p == NULL)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* The context attributes a struct event has a member for. */
static char **core_slot(ing_event *ev, const char *name, size_t len)
{
#define SLOT(n, m)                                                                                           \
    if (len == sizeof(n) - 1 && memcmp(name, n, len) == 0)                                                   \
        return &ev->m;
    SLOT("id", id)
    SLOT("source", source)
    SLOT("specversion", specversion)
    SLOT("type", type)
    SLOT("subject", subject)
    SLOT("time", time)
    SLOT("datacontenttype", datacontenttype)
    SLOT("dataschema", dataschema)
#undef SLOT
    return NULL;
}

/* Field names in errors: "source", or "extensions.<name>" cut to fit. */
static void ext_field(char *buf, size_t size, const char *name, size_t len)
{
    if (len > 40)
        len = 40;
    snprintf(buf, size, "extensions.%.*s", (int)len, name);
}

int ing_event_set_attr(ing_event *ev, const char *name, size_t name_len, const char *value, size_t len,
                       const ing_event_limits *lim, ing_event_error *err)
{
    char **slot = core_slot(ev, name, name_len);
    const char *why = NULL;
    char field[64];

    /* Every event's attributes pass here: the field's name is formatted only for an error. */
    if (slot != NULL) {
        if (*slot != NULL)
            why = "duplicate attribute";
        else if (memchr(value, '\0', len) != NULL)
            why = "must not contain NUL";
        if (why) {
            snprintf(field, sizeof(field), "%.*s", (int)name_len, name);
            return ing_event_error_set(err, ING_ERR_INVALID_EVENT, -1, field, "%s: %s", field, why);
        }
        if ((*slot = dup_n(ev, value, len)) == NULL)
            return -ENOMEM;
        return 0;
    }

    /* An extension: lower-case a-z0-9, 1..20 bytes; "data" is the payload's name in every format. */
    if (name_len == 0 || name_len > EVENT_EXT_NAME_MAX)
        why = "extension name must be 1 to 20 characters a-z0-9";
    for (size_t i = 0; why == NULL && i < name_len; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9')))
            why = "extension name must be lower-case a-z0-9 only";
    if (why == NULL && name_len == 4 && memcmp(name, "data", 4) == 0)
        why = "extension name 'data' is reserved";
    for (size_t i = 0; why == NULL && i < ev->n_ext; i++)
        if (strlen(ev->ext[i].name) == name_len && memcmp(ev->ext[i].name, name, name_len) == 0)
            why = "duplicate attribute";
    if (why == NULL && lim != NULL && ev->n_ext >= lim->max_extensions)
        why = "too many extensions";
    if (why == NULL && memchr(value, '\0', len) != NULL)
        why = "must not contain NUL";
    if (why) {
        ext_field(field, sizeof(field), name, name_len);
        if (strcmp(why, "too many extensions") == 0)
            return ing_event_error_set(err, ING_ERR_INVALID_EVENT, -1, field, "%s: more than %zu extensions",
                                       field, lim->max_extensions);
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, -1, field, "%s: %s", field, why);
    }

    if (ev->n_ext == ev->cap_ext) {
        size_t cap = ev->cap_ext ? ev->cap_ext * 2 : 4;
        ing_event_ext *ext = realloc(ev->ext, cap * sizeof(*ext));
        if (ext == NULL)
            return -ENOMEM;
        ev->ext = ext;
        ev->cap_ext = cap;
    }
    ing_event_ext *e = &ev->ext[ev->n_ext];
    if ((e->name = dup_n(ev, name, name_len)) == NULL)
        return -ENOMEM;
    if ((e->value = dup_n(ev, value, len)) == NULL) {
        release(ev, e->name);
        return -ENOMEM;
    }
    ev->n_ext++;
    return 0;
}

void ing_event_set_data(ing_event *ev, ing_event_data_kind kind, unsigned char *data, size_t len)
{
    release(ev, ev->data);
    ev->data_kind = kind;
    ev->data = data;
    ev->data_len = len;
}

int media_type_is_json(const char *ct)
{
    size_t n;

    if (ct == NULL)
        return 1;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (*ct == '\0')
        return 1;
    /*
     * Compared where it stands, however long: a copy cut to a buffer's size
     * judged a long vendor type by its first 127 bytes (tests/fuzz found it),
     * so that the gateway and the sink could disagree on whether data is JSON.
     */
    n = strcspn(ct, "; \t");
    return (n == 16 && strncasecmp(ct, "application/json", n) == 0) ||
           (n == 9 && strncasecmp(ct, "text/json", n) == 0) ||
           (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0);
}

int utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            /* Most text is ASCII: eight bytes at a time while no high bit is set. */
            uint64_t w;
            i++;
            while (len - i >= 8 && (memcpy(&w, s + i, 8), (w & 0x8080808080808080ULL) == 0))
                i += 8;
            continue;
        }
        size_t n;
        unsigned int cp, min;
        if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (len - i <= n)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* CloudEvents' String excludes the C0 and C1 controls. */
static int has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return 1;
        if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
            return 1;
    }
    return 0;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int rfc3339_parse(const char *s, int64_t *unix_sec, int32_t *unix_nsec)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, oh = 0, om = 0;
    int64_t frac = 0;
    size_t len = strlen(s), i;

    /* YYYY-MM-DDTHH:MM:SS is 19 bytes; then fraction, then Z or +HH:MM. */
    if (len < 20 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
        digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || digits(s + 11, 2, &h) || s[13] != ':' ||
        digits(s + 14, 2, &mi) || s[16] != ':' || digits(s + 17, 2, &sec))
        return -EINVAL;
    i = 19;
    if (s[i] == '.') {
        int nd = 0;
        i++;
        while (s[i] >= '0' && s[i] <= '9') {
            if (nd < 9)
                frac = frac * 10 + (s[i] - '0');
            nd++, i++;
        }
        if (nd == 0)
            return -EINVAL;
        for (; nd < 9; nd++)
            frac *= 10;
    }
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        int sign = s[i] == '-' ? -1 : 1;
        if (len - i != 6 || digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || digits(s + i + 4, 2, &om) ||
            oh > 23 || om > 59)
            return -EINVAL;
        oh *= sign, om *= sign;
        i += 6;
    } else {
        return -EINVAL;
    }
    if (i != len)
        return -EINVAL;

    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap) || h > 23 || mi > 59 || sec > 60)
        return -EINVAL;
    /* A leap second (:60) is kept as the next second: Unix time has none. */
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - (oh * 3600 + om * 60);
    /*
     * The instant, in UTC, within years 1 to 9999: what a protobuf Timestamp
     * may hold and rfc3339_format() writes. Not a day's slack past the end:
     * 9999-12-31T23:59:60Z or a negative offset on the last day was
     * accepted over JSON, refused as a protobuf Timestamp, and came to
     * Postgres as "out of range" text (tests/fuzz's round trip found it).
     */
    if (t < -62135596800LL || t > 253402300799LL)
        return -EINVAL;
    *unix_sec = t;
    *unix_nsec = (int32_t)frac;
    return 0;
}

size_t ing_event_size(const ing_event *ev)
{
    const char *attrs[] = {ev->id,      ev->source, ev->specversion,     ev->type,
                           ev->subject, ev->time,   ev->datacontenttype, ev->dataschema};
    size_t n = ev->data_len;

    for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++)
        if (attrs[i])
            n += strlen(attrs[i]);
    for (size_t i = 0; i < ev->n_ext; i++)
        n += strlen(ev->ext[i].name) + strlen(ev->ext[i].value);
    return n;
}

/* A string attribute's common checks: UTF-8, no controls, length. */
static int check_string(const char *v, const char *field, size_t max, long index, ing_event_error *err)
{
    size_t len = strlen(v);

    if (len == 0)
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, index, field, "%s: must not be empty", field);
    if (max && len > max)
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, index, field, "%s: longer than %zu bytes",
                                   field, max);
    if (!utf8_valid(v, len))
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, index, field, "%s: not valid UTF-8", field);
    if (has_control(v))
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, index, field,
                                   "%s: must not contain control characters", field);
    return 0;
}

/*
 * Protobuf text_data, as the sink will store it. Said to be JSON by
 * datacontenttype: it must be JSON that Postgres's jsonb takes, or it is
 * refused here rather than dead-lettered by the sink. Without a
 * datacontenttype the sink stores it as JSON when it is such JSON, else as
 * text in data_bytes (sink/row.c, envelope_text_data_is_json()): nothing to
 * refuse.
 */
static int check_text_data(const ing_event *ev, const ing_event_limits *lim, long index, ing_event_error *err)
{
    ing_event_error why;

    if (ev->datacontenttype == NULL || !media_type_is_json(ev->datacontenttype) ||
        json_check((const char *)ev->data, ev->data_len, lim, &why) == 0)
        return 0;
    const char *m = strncmp(why.message, "data: ", 6) == 0 ? why.message + 6 : why.message;
    return ing_event_error_set(
        err, ING_ERR_INVALID_EVENT, index, "data",
        "data: datacontenttype \"%.60s\" says JSON, but text_data is not JSON that can be "
        "stored: %s",
        ev->datacontenttype, m);
}

int ing_event_validate(ing_event *ev, const ing_event_limits *lim, long index, ing_event_error *err)
{
    int rc;

    if (ev->source == NULL)
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, index, "source", "source: required");
    if ((rc = check_string(ev->source, "source", EVENT_ATTR_MAX, index, err)) != 0)
        return rc;
    if (ev->type == NULL)
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, index, "type", "type: required");
    if ((rc = check_string(ev->type, "type", EVENT_ATTR_MAX, index, err)) != 0)
        return rc;
    /* id is half the primary key in Postgres: the same bound as source keeps the index happy. */
    if (ev->id && (rc = check_string(ev->id, "id", EVENT_ATTR_MAX, index, err)) != 0)
        return rc;
    if (ev->specversion && strcmp(ev->specversion, "1.0") != 0)
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, index, "specversion",
                                   "specversion: must be \"1.0\", got \"%.32s\"", ev->specversion);
    if (ev->subject && (rc = check_string(ev->subject, "subject", 0, index, err)) != 0)
        return rc;
    if (ev->datacontenttype &&
        (rc = check_string(ev->datacontenttype, "datacontenttype", 0, index, err)) != 0)
        return rc;
    if (ev->dataschema) {
        if ((rc = check_string(ev->dataschema, "dataschema", 0, index, err)) != 0)
            return rc;
        if (strpbrk(ev->dataschema, " \t") != NULL || strchr(ev->dataschema, ':') == NULL)
            return ing_event_error_set(err, ING_ERR_INVALID_EVENT, index, "dataschema",
                                       "dataschema: must be an absolute URI");
    }
    ev->time_sec = 0;
    ev->time_nsec = 0;
    if (ev->time && rfc3339_parse(ev->time, &ev->time_sec, &ev->time_nsec) != 0)
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, index, "time",
                                   "time: not an RFC 3339 timestamp: \"%.40s\"", ev->time);
    if (ev->n_ext > lim->max_extensions)
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, index, "extensions",
                                   "extensions: more than %zu", lim->max_extensions);
    for (size_t i = 0; i < ev->n_ext; i++) {
        const char *v = ev->ext[i].value;
        if (!utf8_valid(v, strlen(v)) || has_control(v)) {
            /* The field's name is formatted only for the error (perf/grpc: 1.5% of the gateway). */
            char field[64];
            ext_field(field, sizeof(field), ev->ext[i].name, strlen(ev->ext[i].name));
            return ing_event_error_set(err, ING_ERR_INVALID_EVENT, index, field,
                                       "%s: not valid UTF-8 or contains control characters", field);
        }
    }
    if ((ev->data_kind == EVENT_DATA_JSON || ev->data_kind == EVENT_DATA_TEXT) &&
        !utf8_valid((const char *)ev->data, ev->data_len))
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, index, "data", "data: not valid UTF-8");
    if (ev->data_kind == EVENT_DATA_TEXT && (rc = check_text_data(ev, lim, index, err)) != 0)
        return rc;
    if (ing_event_size(ev) > lim->max_event_bytes)
        return ing_event_error_set(err, ING_ERR_TOO_LARGE, index, "", "event larger than %zu bytes",
                                   lim->max_event_bytes);
    return 0;
}

int ing_event_new_id(ing_event *ev)
{
    release(ev, ev->id);
    ev->id = NULL;
    return ing_event_assign_id(ev);
}

int ing_event_assign_id(ing_event *ev)
{
    if (ev->id != NULL)
        return 0;
    if ((ev->id = (char *)ing_event_alloc(ev, UUID_STR_LEN)) == NULL)
        return -ENOMEM;
    uuid_v7(ev->id);
    return 0;
}

void ing_event_batch_init(ing_event_batch *b)
{
    memset(b, 0, sizeof(*b));
}

ing_event *ing_event_batch_add(ing_event_batch *b)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        ing_event *ev = realloc(b->ev, cap * sizeof(*ev));
        if (ev == NULL)
            return NULL;
        b->ev = ev;
        b->cap = cap;
    }
    ing_event_init(&b->ev[b->n]);
    return &b->ev[b->n++];
}

void ing_event_batch_reset(ing_event_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        ing_event_clear(&b->ev[i]);
    b->n = 0;
}

void ing_event_batch_clear(ing_event_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        ing_event_clear(&b->ev[i]);
    free(b->ev);
    ing_event_batch_init(b);
}
