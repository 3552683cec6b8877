/*
 * CloudEvents from JSON, strictly: see json.h.
 *
 * Two layers. json_scan() is our own: it checks every value against RFC 8259
 * (grammar, strings, UTF-8, numbers) before a library sees it, finds where
 * the value ends, bounds its depth and size, and finds the `data` member.
 * `data` is then copied as written, less the whitespace between tokens: its
 * numbers, escapes and member order survive exactly. json-c builds the
 * attributes only (data cut out), unescapes their strings and keeps the text
 * of numbers as written.
 *
 * Why not json-c alone: even with JSON_TOKENER_STRICT | VALIDATE_UTF8 it
 * accepts NaN, Infinity, -01, 1., single-quoted keys, raw control characters,
 * overlong and surrogate UTF-8; it turns a lone \ud800 into U+FFFD, cuts a key
 * at \u0000, clamps integers past 64 bits to INT64/UINT64 limits, and lets a
 * duplicate key silently replace the first. An empty object costs it ~750
 * bytes, so 8 MiB of `[{},{},...]` would take 2 GB. perf/json/README.md has
 * the measurements and the catalogue behind the choice.
 */
#include "json.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* Nesting levels in one event, the event object included. */
#define JSON_MAX_DEPTH 128
/*
 * At most one JSON object per this many bytes of the event limit (32768 for
 * 1 MiB): json-c spends ~750 bytes per object, so this keeps one event's tree
 * near 25 MB however it is shaped. Arrays and scalars are cheaper and bounded
 * by the event's size.
 */
#define JSON_BYTES_PER_OBJECT 32

#define DATA_PRINT_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

typedef struct jctx {
    const char *buf;
    size_t len;
    const event_limits *lim;
    event_batch *out;
    event_error *err;
    json_tokener *tok;
    long line; /* NDJSON: the 1-based line being parsed, for messages; else 0 */
} jctx;

/* What json_scan() learned about one value. */
typedef struct scan_info {
    size_t end;                  /* one past the value's last byte */
    size_t objects;              /* JSON objects in it, the outermost included */
    size_t members;              /* members of the outermost object, duplicates counted */
    size_t data_start, data_end; /* the outer object's "data" value, as written; 0, 0 when none */
    int data_count;              /* how many "data" members it has */
} scan_info;

static int fail(const jctx *c, const char *code, long index, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(const jctx *c, const char *code, long index, const char *field, const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->line > 0)
        return event_error_set(c->err, code, index, field, "%s (line %ld)", msg, c->line);
    return event_error_set(c->err, code, index, field, "%s", msg);
}

/* event_set_attr() knows nothing of batches: give its errors their event and line. */
static int locate(const jctx *c, long index, int rc)
{
    if (rc == -EINVAL && c->err != NULL) {
        c->err->index = index;
        if (c->line > 0) {
            size_t n = strlen(c->err->message);
            snprintf(c->err->message + n, sizeof(c->err->message) - n, " (line %ld)", c->line);
        }
    }
    return rc;
}

static int is_ws(unsigned char b)
{
    return b == ' ' || b == '\t' || b == '\n' || b == '\r';
}

static int is_digit(unsigned char b)
{
    return b >= '0' && b <= '9';
}

static size_t skip_ws(const jctx *c, size_t p, size_t limit)
{
    while (p < limit && is_ws((unsigned char)c->buf[p]))
        p++;
    return p;
}

static int hex4(const unsigned char *s, size_t p, size_t limit, unsigned int *cp)
{
    *cp = 0;
    if (limit - p < 4)
        return -1;
    for (size_t i = p; i < p + 4; i++) {
        unsigned char h = s[i];
        unsigned int v;
        if (is_digit(h))
            v = h - '0';
        else if (h >= 'a' && h <= 'f')
            v = h - 'a' + 10;
        else if (h >= 'A' && h <= 'F')
            v = h - 'A' + 10;
        else
            return -1;
        *cp = (*cp << 4) | v;
    }
    return 0;
}

/* A string at *pp (its opening quote); moves *pp past the closing quote. */
static int scan_string(const jctx *c, size_t *pp, size_t limit, long index, int *has_nul)
{
    const unsigned char *s = (const unsigned char *)c->buf;
    size_t start = *pp, p = start + 1;
    int non_ascii = 0;

    *has_nul = 0;
    for (;;) {
        if (p >= limit)
            return fail(c, EVENT_ERR_MALFORMED, index, "", "truncated JSON: string at byte %zu is not closed",
                        start);
        unsigned char b = s[p];
        if (b == '"')
            break;
        if (b < 0x20)
            return fail(c, EVENT_ERR_MALFORMED, index, "",
                        "control character 0x%02x in a string must be escaped, at byte %zu", b, p);
        if (b != '\\') {
            non_ascii |= b >= 0x80;
            p++;
            continue;
        }
        if (p + 1 >= limit)
            return fail(c, EVENT_ERR_MALFORMED, index, "", "truncated JSON: string at byte %zu is not closed",
                        start);
        b = s[p + 1];
        if (b != 'u') {
            if (memchr("\"\\/bfnrt", b, 8) == NULL)
                return fail(c, EVENT_ERR_MALFORMED, index, "", "invalid escape '\\%c' at byte %zu",
                            b >= 0x20 && b < 0x7f ? b : '?', p);
            p += 2;
            continue;
        }
        unsigned int cp, lo;
        if (hex4(s, p + 2, limit, &cp) != 0)
            return fail(c, EVENT_ERR_MALFORMED, index, "", "truncated or invalid \\u escape at byte %zu", p);
        if (cp == 0)
            *has_nul = 1;
        /* UTF-8 cannot carry half a surrogate pair; json-c would quietly write U+FFFD. */
        if (cp >= 0xdc00 && cp <= 0xdfff)
            return fail(c, EVENT_ERR_MALFORMED, index, "", "unpaired surrogate \\u%04x at byte %zu", cp, p);
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (limit - p < 12 || s[p + 6] != '\\' || s[p + 7] != 'u' || hex4(s, p + 8, limit, &lo) != 0 ||
                lo < 0xdc00 || lo > 0xdfff)
                return fail(c, EVENT_ERR_MALFORMED, index, "", "unpaired surrogate \\u%04x at byte %zu", cp,
                            p);
            p += 6;
        }
        p += 6;
    }
    /* Escapes are ASCII, so checking the raw bytes checks every decoded one. */
    if (non_ascii && !utf8_valid(c->buf + start + 1, p - start - 1))
        return fail(c, EVENT_ERR_MALFORMED, index, "", "invalid UTF-8 in the string at byte %zu", start);
    *pp = p + 1;
    return 0;
}

/* RFC 8259's number; an integer must fit in 64 bits, or json-c would clamp it. */
static int scan_number(const jctx *c, size_t *pp, size_t limit, long index, int fit64)
{
    const unsigned char *s = (const unsigned char *)c->buf;
    size_t start = *pp, p = start, digits;
    int neg = 0, integer = 1;

    if (s[p] == '-') {
        neg = 1;
        p++;
    }
    if (p >= limit || !is_digit(s[p])) {
        if (p < limit && s[p] == 'I')
            return fail(c, EVENT_ERR_MALFORMED, index, "", "-Infinity is not a JSON number, at byte %zu",
                        start);
        return fail(c, EVENT_ERR_MALFORMED, index, "", "invalid number at byte %zu", start);
    }
    digits = p;
    if (s[p] == '0') {
        p++;
        if (p < limit && is_digit(s[p]))
            return fail(c, EVENT_ERR_MALFORMED, index, "", "number with a leading zero at byte %zu", start);
    } else {
        while (p < limit && is_digit(s[p]))
            p++;
    }
    size_t n_digits = p - digits;
    if (p < limit && s[p] == '.') {
        integer = 0;
        if (++p >= limit || !is_digit(s[p]))
            return fail(c, EVENT_ERR_MALFORMED, index, "", "number without digits after '.' at byte %zu",
                        start);
        while (p < limit && is_digit(s[p]))
            p++;
    }
    if (p < limit && (s[p] == 'e' || s[p] == 'E')) {
        integer = 0;
        if (++p < limit && (s[p] == '+' || s[p] == '-'))
            p++;
        if (p >= limit || !is_digit(s[p]))
            return fail(c, EVENT_ERR_MALFORMED, index, "",
                        "number without digits in its exponent at byte %zu", start);
        while (p < limit && is_digit(s[p]))
            p++;
    }
    if (integer && fit64) {
        /* json-c keeps integers as int64_t or uint64_t; past that it clamps. */
        const char *max = neg ? "9223372036854775808" : "18446744073709551615";
        size_t max_len = strlen(max);
        if (n_digits > max_len || (n_digits == max_len && memcmp(s + digits, max, max_len) > 0))
            return fail(
                c, EVENT_ERR_MALFORMED, index, "",
                "integer at byte %zu does not fit in 64 bits (send it as a string, or with a fraction "
                "or an exponent)",
                start);
    }
    *pp = p;
    return 0;
}

static int scan_literal(const jctx *c, size_t *pp, size_t limit, long index)
{
    static const char *const words[] = {"true", "false", "null"};
    size_t p = *pp;

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t n = strlen(words[i]);
        if (limit - p >= n && memcmp(c->buf + p, words[i], n) == 0) {
            *pp = p + n;
            return 0;
        }
    }
    return fail(c, EVENT_ERR_MALFORMED, index, "", "invalid literal at byte %zu (true, false and null only)",
                p);
}

static int unexpected(const jctx *c, size_t p, long index)
{
    unsigned char b = (unsigned char)c->buf[p];

    if (b == 'N' || b == 'I')
        return fail(c, EVENT_ERR_MALFORMED, index, "", "NaN and Infinity are not JSON numbers, at byte %zu",
                    p);
    if (b == '\'')
        return fail(c, EVENT_ERR_MALFORMED, index, "", "single quotes at byte %zu: JSON strings use \"", p);
    if (b == '/')
        return fail(c, EVENT_ERR_MALFORMED, index, "", "comments are not JSON, at byte %zu", p);
    if (b == 0xef && c->len - p >= 3 && memcmp(c->buf + p, "\xef\xbb\xbf", 3) == 0)
        return fail(c, EVENT_ERR_MALFORMED, index, "", "a byte order mark at byte %zu is not allowed", p);
    if (b > 0x20 && b < 0x7f)
        return fail(c, EVENT_ERR_MALFORMED, index, "", "unexpected '%c' at byte %zu", b, p);
    return fail(c, EVENT_ERR_MALFORMED, index, "", "unexpected byte 0x%02x at byte %zu", b, p);
}

/*
 * Check the value starting at p (after whitespace) against RFC 8259 and find
 * its end, without allocating: the grammar (a state machine over a stack of
 * open containers), the lexical rules (strings, escapes, UTF-8, numbers,
 * literals), nesting up to JSON_MAX_DEPTH, a count of objects and outer
 * members, and where the outer object's `data` value lies, so that it can be
 * copied as written instead of being built into a tree and printed again.
 */
static int json_scan(const jctx *c, size_t p, size_t limit, long index, scan_info *si)
{
    /* What may come next: a value, a value or ']', a member name or '}', a name, ':', ',' or a close. */
    enum { VALUE, VALUE_OR_CLOSE, NAME_OR_CLOSE, NAME, COLON, NEXT } state = VALUE;
    const unsigned char *s = (const unsigned char *)c->buf;
    char stack[JSON_MAX_DEPTH];
    size_t depth = 0;
    int rc, has_nul, outer_object = 0, data_next = 0, in_data = 0;

    memset(si, 0, sizeof(*si));
    p = skip_ws(c, p, limit);
    if (p >= limit)
        return fail(c, EVENT_ERR_MALFORMED, index, "", "no JSON value: the input is empty or blank");
    for (;;) {
        if (p >= limit)
            return fail(c, EVENT_ERR_MALFORMED, index, "",
                        "truncated JSON: the input ends inside %zu unclosed bracket(s), at byte %zu", depth,
                        p);
        size_t value_start = p;
        int value = 0; /* a whole value ended at p */
        if (data_next && depth == 1 && state == VALUE) {
            si->data_start = p;
            in_data = 1;
        }
        switch (s[p]) {
        case '{':
        case '[':
            if (state != VALUE && state != VALUE_OR_CLOSE)
                return unexpected(c, p, index);
            if (depth == JSON_MAX_DEPTH)
                return fail(c, EVENT_ERR_MALFORMED, index, "", "nested deeper than %d levels at byte %zu",
                            JSON_MAX_DEPTH, p);
            if (depth == 0)
                outer_object = s[p] == '{';
            if (s[p] == '{')
                si->objects++;
            stack[depth++] = (char)s[p];
            state = s[p] == '{' ? NAME_OR_CLOSE : VALUE_OR_CLOSE;
            p++;
            break;
        case '}':
        case ']':
            if (depth == 0 || stack[depth - 1] != (s[p] == '}' ? '{' : '[') ||
                (state != NEXT && state != (s[p] == '}' ? NAME_OR_CLOSE : VALUE_OR_CLOSE)))
                return unexpected(c, p, index);
            depth--;
            p++;
            value = 1;
            break;
        case ',':
            if (state != NEXT || depth == 0)
                return unexpected(c, p, index);
            state = stack[depth - 1] == '{' ? NAME : VALUE;
            p++;
            break;
        case ':':
            if (state != COLON)
                return unexpected(c, p, index);
            if (depth == 1 && outer_object)
                si->members++;
            state = VALUE;
            p++;
            break;
        case '"':
            if (state == NAME || state == NAME_OR_CLOSE) {
                if ((rc = scan_string(c, &p, limit, index, &has_nul)) != 0)
                    return rc;
                /* json-c keeps member names as C strings: "a\u0000b" would become "a". */
                if (has_nul)
                    return fail(c, EVENT_ERR_MALFORMED, index, "",
                                "a member name with \\u0000 is not supported, before byte %zu", p);
                if (depth == 1)
                    data_next =
                        outer_object && p - value_start == 6 && memcmp(s + value_start, "\"data\"", 6) == 0;
                state = COLON;
                break;
            }
            if (state != VALUE && state != VALUE_OR_CLOSE)
                return unexpected(c, p, index);
            if ((rc = scan_string(c, &p, limit, index, &has_nul)) != 0)
                return rc;
            value = 1;
            break;
        case '-':
        case '0':
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7':
        case '8':
        case '9':
            if (state != VALUE && state != VALUE_OR_CLOSE)
                return unexpected(c, p, index);
            /* Only what json-c builds must fit 64 bits: `data` is copied as written. */
            if ((rc = scan_number(c, &p, limit, index, !in_data)) != 0)
                return rc;
            value = 1;
            break;
        case 't':
        case 'f':
        case 'n':
            if (state != VALUE && state != VALUE_OR_CLOSE)
                return unexpected(c, p, index);
            if ((rc = scan_literal(c, &p, limit, index)) != 0)
                return rc;
            value = 1;
            break;
        default: return unexpected(c, p, index);
        }
        if (value) {
            state = NEXT;
            if (data_next && depth == 1) {
                si->data_end = p;
                si->data_count++;
                data_next = in_data = 0;
            }
        }
        if (depth == 0) {
            si->end = p;
            return 0;
        }
        p = skip_ws(c, p, limit);
    }
}

static const char *kind_name(unsigned char first)
{
    switch (first) {
    case '{': return "an object";
    case '[': return "an array";
    case '"': return "a string";
    case 't':
    case 'f': return "a boolean";
    case 'n': return "null";
    default: return "a number";
    }
}

static int is_core_attr(const char *name)
{
    static const char *const core[] = {"specversion", "id",   "source",          "type",
                                       "subject",     "time", "datacontenttype", "dataschema"};

    for (size_t i = 0; i < sizeof(core) / sizeof(core[0]); i++)
        if (strcmp(name, core[i]) == 0)
            return 1;
    return 0;
}

/* Standard alphabet (RFC 4648 section 4); -1 for anything else. */
static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (is_digit(ch))
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/*
 * RFC 4648 base64, standard alphabet. Padding may be given (then it must
 * complete the last quantum) or left out; no whitespace, no URL-safe
 * alphabet. Bits after the last whole byte are ignored, as most decoders do.
 * Returns 0, -ENOMEM, or -EINVAL with *bad at the offending offset.
 */
static int base64_decode(const char *s, size_t n, unsigned char **out, size_t *out_len, size_t *bad)
{
    size_t pad = 0, m, o = 0;
    unsigned int acc = 0;
    unsigned char *p;

    if (n >= 1 && s[n - 1] == '=')
        pad = (n >= 2 && s[n - 2] == '=') ? 2 : 1;
    m = n - pad;
    for (size_t i = 0; i < m; i++) {
        if (b64_value((unsigned char)s[i]) < 0) {
            *bad = i;
            return -EINVAL;
        }
    }
    /* Padding completes the last group of four; without it, a lone sixth of a byte is no byte. */
    *bad = m;
    if ((pad && n % 4 != 0) || m % 4 == 1)
        return -EINVAL;
    if ((p = malloc(m / 4 * 3 + 3)) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < m; i++) {
        acc = (acc << 6) | (unsigned int)b64_value((unsigned char)s[i]);
        if (i % 4 == 3) {
            p[o++] = (unsigned char)(acc >> 16);
            p[o++] = (unsigned char)(acc >> 8);
            p[o++] = (unsigned char)acc;
            acc = 0;
        }
    }
    if (m % 4 == 2) {
        p[o++] = (unsigned char)(acc >> 4);
    } else if (m % 4 == 3) {
        p[o++] = (unsigned char)(acc >> 10);
        p[o++] = (unsigned char)(acc >> 2);
    }
    p[o] = '\0';
    *out = p;
    *out_len = o;
    return 0;
}

static int set_member(const jctx *c, event *ev, const char *name, json_object *val, long index)
{
    int core = is_core_attr(name);
    const char *text;
    size_t len;
    char field[64];

    switch (json_object_get_type(val)) {
    case json_type_null:
        /* CloudEvents JSON format 2.2: a null attribute MUST be treated as unset. */
        return 0;
    case json_type_string:
        text = json_object_get_string(val);
        len = (size_t)json_object_get_string_len(val);
        return locate(c, index, event_set_attr(ev, name, strlen(name), text, len, c->lim, c->err));
    case json_type_int:
    case json_type_double:
    case json_type_boolean:
        if (core)
            break;
        /* The JSON text as written: json-c keeps it for reals; integers print back exactly. */
        if ((text = json_object_to_json_string_length(val, JSON_C_TO_STRING_PLAIN, &len)) == NULL)
            return -ENOMEM;
        return locate(c, index, event_set_attr(ev, name, strlen(name), text, len, c->lim, c->err));
    default: break;
    }
    /* A wrong type: only now is the field's name worth formatting. */
    if (core)
        snprintf(field, sizeof(field), "%s", name);
    else
        snprintf(field, sizeof(field), "extensions.%.40s", name);
    if (core || json_object_is_type(val, json_type_boolean) || json_object_is_type(val, json_type_int) ||
        json_object_is_type(val, json_type_double))
        return fail(c, EVENT_ERR_INVALID, index, field, "%s: must be a string", field);
    return fail(c, EVENT_ERR_INVALID, index, field, "%s: must be a string, number or boolean, not %s", field,
                json_object_is_type(val, json_type_object) ? "an object" : "an array");
}

static int set_data(const jctx *c, event *ev, json_object *data, json_object *b64, long index)
{
    unsigned char *copy;
    const char *text;
    size_t len, bad;
    int rc;

    if (data != NULL && b64 != NULL)
        return fail(c, EVENT_ERR_INVALID, index, "data_base64",
                    "data_base64: not allowed together with data (one event has one payload)");
    if (data != NULL) {
        if ((text = json_object_to_json_string_length(data, DATA_PRINT_FLAGS, &len)) == NULL ||
            (copy = malloc(len + 1)) == NULL)
            return -ENOMEM;
        memcpy(copy, text, len + 1);
        event_set_data(ev, EVENT_DATA_JSON, copy, len);
    } else if (b64 != NULL) {
        if (!json_object_is_type(b64, json_type_string))
            return fail(c, EVENT_ERR_INVALID, index, "data_base64", "data_base64: must be a string");
        rc = base64_decode(json_object_get_string(b64), (size_t)json_object_get_string_len(b64), &copy, &len,
                           &bad);
        if (rc == -EINVAL)
            return fail(c, EVENT_ERR_INVALID, index, "data_base64",
                        "data_base64: not standard base64 (RFC 4648), at character %zu", bad);
        if (rc != 0)
            return rc;
        event_set_data(ev, EVENT_DATA_BINARY, copy, len);
    }
    return 0;
}

/*
 * Copy valid JSON without the whitespace between tokens: `data` travels as
 * the client wrote it (numbers, escapes, member order), only compact.
 */
static size_t compact(const char *in, size_t len, char *out)
{
    size_t n = 0;
    int in_string = 0;

    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        if (in_string) {
            out[n++] = ch;
            if (ch == '\\')
                out[n++] = in[++i];
            else if (ch == '"')
                in_string = 0;
        } else if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') {
            out[n++] = ch;
            in_string = ch == '"';
        }
    }
    return n;
}

/* One event object, already scanned: let json-c build it, then copy it into a new event of c->out. */
static int build_event(const jctx *c, size_t start, const scan_info *si, long index)
{
    size_t size = si->end - start, max_objects = c->lim->max_event_bytes / JSON_BYTES_PER_OBJECT;
    json_object *root, *data = NULL, *b64 = NULL;
    struct json_object_iterator it, end;
    enum json_tokener_error jerr;
    event *ev;
    int rc = 0;

    if (size > c->lim->max_event_bytes || size > INT_MAX)
        return fail(c, EVENT_ERR_TOO_LARGE, index, "", "event is %zu bytes of JSON, over the %zu-byte limit",
                    size, c->lim->max_event_bytes);
    if (si->objects > max_objects)
        return fail(c, EVENT_ERR_TOO_LARGE, index, "", "event holds more than %zu JSON objects", max_objects);

    /*
     * json-c builds only the attributes: `data` is cut out (replaced by null)
     * and copied as written, checked already by json_scan. Building it into a
     * tree and printing it again was over a third of the time per event.
     */
    const char *text = c->buf + start;
    char *cut = NULL;
    size_t raw_len = 0;
    if (si->data_count == 1) {
        size_t head = si->data_start - start, tail = si->end - si->data_end;
        raw_len = si->data_end - si->data_start;
        if ((cut = malloc(head + 4 + tail)) == NULL)
            return -ENOMEM;
        memcpy(cut, text, head);
        memcpy(cut + head, "null", 4);
        memcpy(cut + head + 4, c->buf + si->data_end, tail);
        text = cut;
        size = head + 4 + tail;
    }
    json_tokener_reset(c->tok);
    root = json_tokener_parse_ex(c->tok, text, (int)size);
    if ((jerr = json_tokener_get_error(c->tok)) != json_tokener_success || root == NULL) {
        json_object_put(root);
        if (jerr == json_tokener_continue)
            jerr = json_tokener_error_parse_eof;
        rc = fail(c, EVENT_ERR_MALFORMED, index, "", "malformed JSON: %s in the event at byte %zu",
                  json_tokener_error_desc(jerr), start);
        free(cut);
        return rc;
    }
    if ((size_t)json_object_object_length(root) != si->members) {
        rc = fail(c, EVENT_ERR_INVALID, index, "", "a member name appears twice in the event object");
        goto out;
    }
    if ((ev = event_batch_add(c->out)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    it = json_object_iter_begin(root);
    end = json_object_iter_end(root);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *name = json_object_iter_peek_name(&it);
        json_object *val = json_object_iter_peek_value(&it);

        /* json-c gives a JSON null as NULL: a null payload is no payload, like any null attribute. */
        if (strcmp(name, "data") == 0)
            data = val;
        else if (strcmp(name, "data_base64") == 0)
            b64 = val;
        else if ((rc = set_member(c, ev, name, val, index)) != 0)
            goto out;
    }
    if (si->data_count == 1 && !(raw_len == 4 && memcmp(c->buf + si->data_start, "null", 4) == 0)) {
        if (b64 != NULL) {
            rc = fail(c, EVENT_ERR_INVALID, index, "data_base64",
                      "data_base64: not allowed together with data (one event has one payload)");
            goto out;
        }
        unsigned char *copy = malloc(raw_len + 1);
        if (copy == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        size_t n = compact(c->buf + si->data_start, raw_len, (char *)copy);
        copy[n] = '\0';
        event_set_data(ev, EVENT_DATA_JSON, copy, n);
    } else {
        rc = set_data(c, ev, data, b64, index);
    }
out:
    free(cut);
    json_object_put(root);
    return rc;
}

/* A document that must be one value and nothing after it but whitespace; *first is where it starts. */
static int scan_document(const jctx *c, size_t start, size_t limit, long index, size_t *first, scan_info *si)
{
    size_t p = skip_ws(c, start, limit), q;
    int rc;

    *first = p;
    if ((rc = json_scan(c, p, limit, index, si)) != 0)
        return rc;
    if ((q = skip_ws(c, si->end, limit)) < limit)
        return fail(c, EVENT_ERR_MALFORMED, index, "", "unexpected data after the JSON value, at byte %zu",
                    q);
    return 0;
}

static int parse_single(const jctx *c, size_t start, size_t limit, long index, const char *want)
{
    scan_info si;
    size_t p;
    int rc;

    if ((rc = scan_document(c, start, limit, index, &p, &si)) != 0)
        return rc;
    if (c->buf[p] != '{')
        return fail(c, EVENT_ERR_INVALID, index, "", "expected %s, got %s", want,
                    kind_name((unsigned char)c->buf[p]));
    return build_event(c, p, &si, index);
}

static int too_many(const jctx *c)
{
    return fail(c, EVENT_ERR_TOO_MANY, -1, "", "more than %zu events in one request",
                c->lim->max_batch_events);
}

/* `[ event, event, ... ]`: one event at a time, so memory holds one event's tree and a flood stops early. */
static int parse_batch(const jctx *c)
{
    size_t p = skip_ws(c, 0, c->len);
    scan_info si;
    int rc;

    if (p >= c->len || c->buf[p] != '[') {
        if ((rc = scan_document(c, 0, c->len, -1, &p, &si)) != 0)
            return rc;
        return fail(c, EVENT_ERR_INVALID, -1, "", "expected a JSON array of events, got %s",
                    kind_name((unsigned char)c->buf[p]));
    }
    p = skip_ws(c, p + 1, c->len);
    if (p < c->len && c->buf[p] == ']')
        goto done;
    for (long i = 0;; i++) {
        if (p >= c->len)
            return fail(c, EVENT_ERR_MALFORMED, -1, "", "truncated JSON: the batch ends without ']'");
        if ((size_t)i >= c->lim->max_batch_events)
            return too_many(c);
        if ((rc = json_scan(c, p, c->len, i, &si)) != 0)
            return rc;
        if (c->buf[p] != '{')
            return fail(c, EVENT_ERR_INVALID, i, "", "an event must be a JSON object, got %s",
                        kind_name((unsigned char)c->buf[p]));
        if ((rc = build_event(c, p, &si, i)) != 0)
            return rc;
        p = skip_ws(c, si.end, c->len);
        if (p >= c->len)
            return fail(c, EVENT_ERR_MALFORMED, -1, "", "truncated JSON: the batch ends without ']'");
        if (c->buf[p] == ']')
            break;
        if (c->buf[p] != ',')
            return fail(c, EVENT_ERR_MALFORMED, -1, "", "expected ',' or ']' after event %ld, at byte %zu", i,
                        p);
        p = skip_ws(c, p + 1, c->len);
        if (p < c->len && c->buf[p] == ']')
            return fail(c, EVENT_ERR_MALFORMED, -1, "", "trailing comma after event %ld, at byte %zu", i, p);
    }
done:
    p = skip_ws(c, p + 1, c->len);
    if (p < c->len)
        return fail(c, EVENT_ERR_MALFORMED, -1, "", "unexpected data after the batch, at byte %zu", p);
    return 0;
}

/* One event per line, `\n` or `\r\n`; blank lines are skipped and take no index. */
static int parse_ndjson(jctx *c)
{
    size_t p = 0;
    long index = 0, line = 0;
    int rc;

    while (p < c->len) {
        const char *nl = memchr(c->buf + p, '\n', c->len - p);
        size_t eol = nl ? (size_t)(nl - c->buf) : c->len;

        line++;
        if (skip_ws(c, p, eol) < eol) {
            if ((size_t)index >= c->lim->max_batch_events)
                return too_many(c);
            c->line = line;
            if ((rc = parse_single(c, p, eol, index, "one event (a JSON object) per line")) != 0)
                return rc;
            c->line = 0;
            index++;
        }
        p = eol + 1;
    }
    return 0;
}

int json_parse_events(const char *buf, size_t len, json_form form, const event_limits *lim, event_batch *out,
                      event_error *err)
{
    event_limits defaults;
    size_t first = out->n;
    jctx c = {.buf = buf ? buf : "", .len = buf ? len : 0, .lim = lim, .out = out, .err = err};
    size_t p;
    int rc;

    if (lim == NULL) {
        event_limits_default(&defaults);
        c.lim = &defaults;
    }
    /* Deeper than ours, so json-c never stops first with a vaguer message. */
    if ((c.tok = json_tokener_new_ex(JSON_MAX_DEPTH + 2)) == NULL)
        return -ENOMEM;
    json_tokener_set_flags(c.tok, JSON_TOKENER_STRICT);

    switch (form) {
    case JSON_FORM_EVENT: rc = parse_single(&c, 0, c.len, -1, "one event (a JSON object)"); break;
    case JSON_FORM_BATCH: rc = parse_batch(&c); break;
    case JSON_FORM_NDJSON: rc = parse_ndjson(&c); break;
    case JSON_FORM_ANY:
        p = skip_ws(&c, 0, c.len);
        if (p < c.len && c.buf[p] == '[')
            rc = parse_batch(&c);
        else
            rc = parse_single(&c, 0, c.len, -1, "an event object or an array of them");
        break;
    default: rc = fail(&c, EVENT_ERR_INVALID, -1, "", "unknown JSON form %d", (int)form); break;
    }
    json_tokener_free(c.tok);
    if (rc != 0) {
        /* All or nothing: leave `out` as it came. */
        for (size_t i = first; i < out->n; i++)
            event_clear(&out->ev[i]);
        out->n = first;
    }
    return rc;
}

int json_check(const char *buf, size_t len, const event_limits *lim, event_error *err)
{
    event_limits defaults;
    jctx c = {.buf = buf ? buf : "", .len = buf ? len : 0, .lim = lim, .err = err};
    scan_info si;
    size_t first;

    if (lim == NULL) {
        event_limits_default(&defaults);
        c.lim = &defaults;
    }
    return scan_document(&c, 0, c.len, -1, &first, &si);
}
