/*
 * CloudEvents protobuf straight into the event model: see wire.h.
 *
 * Every rule below is protobuf-c 1.4's, found in its unpacker and checked by
 * tests/unit/test_wire.c against it, where it differs from the protobuf spec:
 * - a one-byte tag of field 0 is refused (a longer one is an unknown field);
 * - a tag takes at most 5 bytes, a length prefix at most 5 (a 32-bit value),
 *   a varint at most 10; wire types 3, 4, 6 and 7 are refused;
 * - a known field with the wrong wire type refuses the message, except a
 *   bool, which is true when any byte after its tag has a low bit set;
 * - a oneof member given again replaces the earlier one whole, a message
 *   member included (no merge);
 * - a map entry's value given twice is merged field by field as protobuf-c's
 *   merge_messages() does: an unset later value keeps an earlier boolean,
 *   integer, timestamp or non-empty bytes, and loses an earlier string;
 * - strings end at their first NUL (ing_event_from_proto() reads them with strlen).
 */
#include "wire.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "uuid.h"

#define WT_VARINT 0
#define WT_64BIT  1
#define WT_LEN    2
#define WT_32BIT  5

/* One field as read: its number, wire type, and value. */
typedef struct wfield {
    uint32_t num;
    unsigned wt;
    uint64_t v;          /* a varint's value */
    const uint8_t *span; /* what follows the tag (a length's prefix included) */
    size_t span_len;
    const uint8_t *p; /* a length-delimited field's bytes */
    size_t len;
} wfield;

/* The next field of buf[*pos, end): 1, 0 at the end, -EBADMSG. */
static int next_field(const uint8_t *buf, size_t end, size_t *pos, wfield *f)
{
    size_t at = *pos, n = 1, rem;
    uint32_t tag;

    if (at >= end)
        return 0;
    rem = end - at;
    f->v = 0;
    f->p = NULL;
    f->len = 0;
    tag = (uint32_t)(buf[at] & 0x7f) >> 3;
    f->wt = buf[at] & 7;
    /* protobuf-c 1.4 refuses field number 0 in a one-byte tag, and takes it as unknown in a longer one. */
    if (tag == 0 && !(buf[at] & 0x80))
        return -EBADMSG;
    if (buf[at] & 0x80) {
        size_t max = rem < 5 ? rem : 5;
        unsigned shift = 4;
        for (;;) {
            if (n == max)
                return -EBADMSG;
            uint8_t b = buf[at + n++];
            tag |= (uint32_t)(b & 0x7f) << shift;
            if (!(b & 0x80))
                break;
            shift += 7;
        }
    }
    f->num = tag;
    at += n;
    rem -= n;
    f->span = buf + at;
    switch (f->wt) {
    case WT_VARINT: {
        size_t max = rem < 10 ? rem : 10, i = 0;
        for (;; i++) {
            if (i == max)
                return -EBADMSG;
            f->v |= (uint64_t)(buf[at + i] & 0x7f) << (7 * i);
            if (!(buf[at + i] & 0x80))
                break;
        }
        f->span_len = i + 1;
        break;
    }
    case WT_64BIT:
    case WT_32BIT:
        f->span_len = f->wt == WT_64BIT ? 8 : 4;
        if (rem < f->span_len)
            return -EBADMSG;
        break;
    case WT_LEN: {
        size_t max = rem < 5 ? rem : 5, i = 0;
        uint64_t l = 0;
        /* Most lengths take one byte. */
        if (rem > 0 && buf[at] < 0x80)
            l = buf[at];
        else
            for (;; i++) {
                if (i == max)
                    return -EBADMSG;
                l |= (uint64_t)(buf[at + i] & 0x7f) << (7 * i);
                if (!(buf[at + i] & 0x80))
                    break;
            }
        /*
         * protobuf-c keeps the length in 32 bits: one that wraps there makes
         * it read out of bounds. Refused here, as anything past the end is.
         */
        if (l > rem - (i + 1))
            return -EBADMSG;
        f->p = buf + at + i + 1;
        f->len = (size_t)l;
        f->span_len = i + 1 + f->len;
        break;
    }
    default: return -EBADMSG;
    }
    *pos = at + f->span_len;
    return 1;
}

/* Fields of ours are walked with this: `rc` ends as 0 (the end) or -EBADMSG. */
#define FOR_EACH_FIELD(buf, len, pos, f, rc)                                                                 \
    for (size_t pos = 0; ((rc) = next_field((buf), (len), &pos, &(f))) > 0;)

static int parse_timestamp(const uint8_t *buf, size_t len, envelope_attr *v)
{
    wfield f;
    int rc;

    v->sec = 0;
    v->nsec = 0;
    FOR_EACH_FIELD(buf, len, pos, f, rc)
    {
        if (f.num != 1 && f.num != 2)
            continue;
        if (f.wt != WT_VARINT)
            return -EBADMSG;
        if (f.num == 1)
            v->sec = (int64_t)f.v;
        else
            v->nsec = (int32_t)(uint32_t)f.v;
    }
    return rc;
}

static int parse_attr_value(const uint8_t *buf, size_t len, envelope_attr *v)
{
    wfield f;
    int rc;

    memset(v, 0, sizeof(*v));
    FOR_EACH_FIELD(buf, len, pos, f, rc)
    {
        switch (f.num) {
        case ATTR_BOOLEAN:
            /* Any wire type: protobuf-c reads a bool as "some byte has a low bit set". */
            v->boolean = 0;
            for (size_t i = 0; i < f.span_len; i++)
                v->boolean |= (f.span[i] & 0x7f) != 0;
            break;
        case ATTR_INTEGER:
            if (f.wt != WT_VARINT)
                return -EBADMSG;
            v->integer = (int32_t)(uint32_t)f.v;
            break;
        case ATTR_STRING:
        case ATTR_BYTES:
        case ATTR_URI:
        case ATTR_URI_REF:
            if (f.wt != WT_LEN)
                return -EBADMSG;
            v->str = (const char *)f.p;
            v->len = f.len;
            break;
        case ATTR_TIMESTAMP:
            if (f.wt != WT_LEN || parse_timestamp(f.p, f.len, v) != 0)
                return -EBADMSG;
            break;
        default: continue;
        }
        v->kind = (int)f.num;
    }
    return rc;
}

/* A map entry's value given again: protobuf-c's merge_messages() of an earlier `e` and a later `l`. */
static int merge_attr_value(envelope_attr *e, const envelope_attr *l)
{
    if (l->kind != ATTR_NONE) {
        *e = *l;
        return 0;
    }
    /* Both unset: protobuf-c looks the case up outside its field table, and refuses the message. */
    if (e->kind == ATTR_NONE)
        return -EBADMSG;
    /* A string's "unset" is its default "" and the later one holds NULL; bytes merge only when non-empty. */
    if (e->kind == ATTR_STRING || e->kind == ATTR_URI || e->kind == ATTR_URI_REF ||
        (e->kind == ATTR_BYTES && e->len == 0))
        e->kind = ATTR_NONE;
    return 0;
}

/* One attributes map entry: key (1) and value (2). A missing key is "", a missing value *has_value 0. */
static int parse_entry(const uint8_t *buf, size_t len, const char **key, size_t *klen, int *has_value,
                       envelope_attr *v)
{
    envelope_attr later;
    wfield f;
    int rc;

    *key = "";
    *klen = 0;
    *has_value = 0;
    FOR_EACH_FIELD(buf, len, pos, f, rc)
    {
        if (f.num == 1) {
            if (f.wt != WT_LEN)
                return -EBADMSG;
            *key = (const char *)f.p;
            *klen = f.len;
        } else if (f.num == 2) {
            if (f.wt != WT_LEN || parse_attr_value(f.p, f.len, &later) != 0)
                return -EBADMSG;
            if (!*has_value)
                *v = later;
            else if (merge_attr_value(v, &later) != 0)
                return -EBADMSG;
            *has_value = 1;
        }
    }
    return rc;
}

/* google.protobuf.Any: only its shape matters (proto_data is refused whatever it holds). */
static int check_any(const uint8_t *buf, size_t len)
{
    wfield f;
    int rc;

    FOR_EACH_FIELD(buf, len, pos, f, rc)
    {
        if ((f.num == 1 || f.num == 2) && f.wt != WT_LEN)
            return -EBADMSG;
    }
    return rc;
}

/* One attributes map entry as read: its key (cut at a first NUL) and its value, if it has one. */
typedef struct ce_entry {
    const char *key;
    size_t klen;
    int has_value;
    envelope_attr v;
} ce_entry;

/* Entries kept from the first read for the second; an event with more has the rest read again. */
#define KEPT_ENTRIES 16

/* The CloudEvent's fields: each as last given, and the first entries of the attributes map. */
typedef struct ce_scan {
    const char *core[4]; /* id, source, spec_version, type */
    size_t core_len[4];
    unsigned data_field; /* 6 binary, 7 text, 8 proto_data, 0 none */
    const uint8_t *data;
    size_t data_len;
    size_t text_bytes; /* what the event's strings take, for its block */
    size_t n_entries;
    ce_entry entries[KEPT_ENTRIES];
} ce_scan;

/* Bytes an entry's value takes as text, its NUL included (as ing_event_from_proto() sizes it). */
static size_t value_text_size(const envelope_attr *v)
{
    switch (v->kind) {
    case ATTR_STRING:
    case ATTR_URI:
    case ATTR_URI_REF: return strnlen(v->str, v->len) + 1;
    case ATTR_BYTES: return 4 * ((v->len + 2) / 3) + 1;
    default: return 64;
    }
}

static int scan_event(const uint8_t *buf, size_t len, ce_scan *s)
{
    ce_entry spare, *e;
    wfield f;
    int rc;

    memset(s, 0, offsetof(ce_scan, entries));
    FOR_EACH_FIELD(buf, len, pos, f, rc)
    {
        if (f.num < 1 || f.num > 8)
            continue;
        if (f.wt != WT_LEN)
            return -EBADMSG;
        switch (f.num) {
        case 5:
            e = s->n_entries < KEPT_ENTRIES ? &s->entries[s->n_entries] : &spare;
            if (parse_entry(f.p, f.len, &e->key, &e->klen, &e->has_value, &e->v) != 0)
                return -EBADMSG;
            e->klen = strnlen(e->key, e->klen);
            if (e->has_value)
                s->text_bytes += e->klen + 1 + value_text_size(&e->v);
            s->n_entries++;
            break;
        case 8:
            if (check_any(f.p, f.len) != 0)
                return -EBADMSG;
            /* fall through */
        case 6:
        case 7:
            s->data_field = f.num;
            s->data = f.p;
            s->data_len = f.len;
            break;
        default:
            s->core[f.num - 1] = (const char *)f.p;
            s->core_len[f.num - 1] = strnlen((const char *)f.p, f.len);
            break;
        }
    }
    return rc;
}

/* An entry into the event, as ing_event_from_proto() adds one. */
static int add_entry(ing_event *ev, const ce_entry *e, const ing_event_limits *lim, ing_event_error *err)
{
    char tbuf[ATTR_TEXT_BUF], *heap;
    const char *text;
    size_t tlen = 0;
    int rc;

    if (!e->has_value || e->v.kind == ATTR_NONE) {
        char field[sizeof(err->field)];
        snprintf(field, sizeof(field), "%.*s", (int)e->klen, e->key);
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, -1, field, "%.*s: attribute without a value",
                                   (int)e->klen, e->key);
    }
    if ((text = envelope_attr_format(&e->v, tbuf, &heap, &tlen)) == NULL)
        return -ENOMEM;
    rc = ing_event_set_attr(ev, e->key, e->klen, text, tlen, lim, err);
    free(heap);
    return rc;
}

int ing_event_from_wire(const uint8_t *buf, size_t len, ing_event *ev, const ing_event_limits *lim,
                        ing_event_error *err)
{
    static const char *const names[4] = {"id", "source", "specversion", "type"};
    ce_scan s;
    wfield f;
    int rc;

    /* The whole message is read first: protobuf-c refuses a malformed one before any of it is used. */
    if (scan_event(buf, len, &s) != 0)
        return -EBADMSG;
    if (ev == NULL)
        return 0;

    size_t block = UUID_STR_LEN + s.text_bytes;
    for (int i = 0; i < 4; i++)
        block += s.core_len[i] + 1;
    if (s.data_field == 6)
        block += s.data_len + 1;
    else if (s.data_field == 7)
        block += strnlen((const char *)s.data, s.data_len) + 1;
    if (ing_event_reserve(ev, block) != 0)
        return -ENOMEM;

    /* In ing_event_from_proto()'s order, so that the first fault found is the same one. */
    for (int i = 0; i < 4; i++) {
        if (s.core_len[i] == 0)
            continue;
        if ((rc = ing_event_set_attr(ev, names[i], strlen(names[i]), s.core[i], s.core_len[i], lim, err)) !=
            0)
            return rc;
    }
    for (size_t i = 0; i < s.n_entries && i < KEPT_ENTRIES; i++)
        if ((rc = add_entry(ev, &s.entries[i], lim, err)) != 0)
            return rc;
    if (s.n_entries > KEPT_ENTRIES) {
        size_t i = 0;
        FOR_EACH_FIELD(buf, len, pos, f, rc)
        {
            ce_entry e;
            if (f.num != 5 || i++ < KEPT_ENTRIES)
                continue;
            if (parse_entry(f.p, f.len, &e.key, &e.klen, &e.has_value, &e.v) != 0)
                return -EBADMSG; /* cannot happen: read whole above */
            e.klen = strnlen(e.key, e.klen);
            if ((rc = add_entry(ev, &e, lim, err)) != 0)
                return rc;
        }
    }
    switch (s.data_field) {
    case 6:
    case 7: {
        size_t dlen = s.data_field == 7 ? strnlen((const char *)s.data, s.data_len) : s.data_len;
        unsigned char *d = ing_event_alloc(ev, dlen + 1);
        if (d == NULL)
            return -ENOMEM;
        memcpy(d, s.data, dlen);
        d[dlen] = '\0';
        ing_event_set_data(ev, s.data_field == 7 ? EVENT_DATA_TEXT : EVENT_DATA_BINARY, d, dlen);
        break;
    }
    case 8:
        return ing_event_error_set(err, ING_ERR_INVALID_EVENT, -1, "data",
                                   "data: proto_data is not supported; send binary_data or text_data");
    default: break;
    }
    return 0;
}

int publish_request_from_wire(const uint8_t *buf, size_t len, wire_request *req)
{
    wfield f;
    int rc;

    memset(req, 0, sizeof(*req));
    req->buf = buf;
    req->len = len;
    FOR_EACH_FIELD(buf, len, pos, f, rc)
    {
        switch (f.num) {
        case 1:
            if (f.wt != WT_VARINT)
                return -EBADMSG;
            req->seq = f.v;
            break;
        case 2:
            if (f.wt != WT_LEN || ing_event_from_wire(f.p, f.len, NULL, NULL, NULL) != 0)
                return -EBADMSG;
            req->n_events++;
            break;
        case 3:
            if (f.wt != WT_VARINT)
                return -EBADMSG;
            req->ack = (int32_t)(uint32_t)f.v;
            break;
        default: break;
        }
    }
    return rc;
}

int wire_request_next_event(const wire_request *req, size_t *pos, const uint8_t **ev, size_t *ev_len)
{
    wfield f;

    /* The request was read whole by publish_request_from_wire(): no error is left to find. */
    while (next_field(req->buf, req->len, pos, &f) > 0) {
        if (f.num == 2) {
            *ev = f.p;
            *ev_len = f.len;
            return 1;
        }
    }
    return 0;
}
