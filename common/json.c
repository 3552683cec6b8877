/*
 * CloudEvents from JSON, strictly: see json.h.
 *
 * No JSON library on this path, by measurement (perf/json/README.md,
 * perf/README.md). json_scan() checks every value against RFC 8259 (grammar,
 * strings, escapes, UTF-8, numbers) without allocating, finds where it ends
 * and bounds its depth and size; build_event() then walks the event's
 * members, unescaping attribute strings and keeping numbers as written, and
 * copies `data` as the client wrote it, less the blanks between tokens.
 *
 * The rules are RFC 8259's and the contract's, and each refusal says which:
 * what a client sends either arrives as written or is refused with its
 * byte offset, never quietly changed on the way (no U+FFFD for a lone
 * surrogate, no clamped integer, no name cut at \u0000, no last-of-two
 * duplicate members).
 */
#include "json.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uuid.h"

/* Nesting levels in one event, the event object included. */
#define JSON_MAX_DEPTH 128
/*
 * At most one JSON object per this many bytes of the event limit (32768 for
 * 1 MiB): a bound on how much structure one event brings to whoever builds a
 * tree of it downstream (a tree library spends ~750 bytes on an empty object).
 */
#define JSON_BYTES_PER_OBJECT 32

/* Working memory of one json_parse_events() call, reused from event to event. */
typedef struct jtmp {
    char *p;
    size_t cap;
} jtmp;

typedef struct jctx {
    const char *buf;
    size_t len;
    const ing_event_limits *lim;
    ing_event_batch *out;
    ing_event_error *err;
    long line; /* NDJSON: the 1-based line being parsed, for messages; else 0 */
    jtmp *tmp;
    int all_data; /* the whole value is an event's data (json_check): data's rules everywhere */
} jctx;

/* What json_scan() learned about one value. */
typedef struct scan_info {
    size_t end;                  /* one past the value's last byte */
    size_t objects;              /* JSON objects in it, the outermost included */
    size_t members;              /* members of the outermost object, duplicates counted */
    size_t data_start, data_end; /* the outer object's "data" value, as written; 0, 0 when none */
    int data_count;              /* how many "data" members it has */
    size_t data_nul;             /* one past a data string with \u0000 in it (fine as text, not as JSON); 0 */
} scan_info;

static int fail(const jctx *c, ing_errcode code, long index, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(const jctx *c, ing_errcode code, long index, const char *field, const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->line > 0)
        return ing_event_error_set(c->err, code, index, field, "%s (line %ld)", msg, c->line);
    return ing_event_error_set(c->err, code, index, field, "%s", msg);
}

/* ing_event_set_attr() knows nothing of batches: give its errors their event and line. */
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

/* Bytes of a 64-bit word: all 0x01, all 0x80. */
#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Some byte of w is below n (n <= 128; bytes with the high bit set are not counted). */
static uint64_t has_below(uint64_t w, unsigned n)
{
    return (w - ONES * n) & ~w & HIGHS;
}

/* Some byte of w is a quote, a backslash, a control character, or has its high bit set. */
static int needs_look(uint64_t w)
{
    return ((w & HIGHS) | has_below(w, 0x20) | has_below(w ^ (ONES * '"'), 1) |
            has_below(w ^ (ONES * '\\'), 1)) != 0;
}

/* A string at *pp (its opening quote); moves *pp past the closing quote. */
static int scan_string(const jctx *c, size_t *pp, size_t limit, long index, int *has_nul)
{
    const unsigned char *s = (const unsigned char *)c->buf;
    size_t start = *pp, p = start + 1;
    int non_ascii = 0;

    *has_nul = 0;
    for (;;) {
        /*
         * Eight bytes at a time while none needs a look: no quote, backslash,
         * control character or non-ASCII byte (each handled one by one below).
         */
        uint64_t w;
        while (limit - p >= 8 && (memcpy(&w, s + p, 8), !needs_look(w)))
            p += 8;
        if (p >= limit)
            return fail(c, ING_ERR_MALFORMED_JSON, index, "",
                        "truncated JSON: string at byte %zu is not closed", start);
        unsigned char b = s[p];
        if (b == '"')
            break;
        if (b < 0x20)
            return fail(c, ING_ERR_MALFORMED_JSON, index, "",
                        "control character 0x%02x in a string must be escaped, at byte %zu", b, p);
        if (b != '\\') {
            non_ascii |= b >= 0x80;
            p++;
            continue;
        }
        if (p + 1 >= limit)
            return fail(c, ING_ERR_MALFORMED_JSON, index, "",
                        "truncated JSON: string at byte %zu is not closed", start);
        b = s[p + 1];
        if (b != 'u') {
            if (memchr("\"\\/bfnrt", b, 8) == NULL)
                return fail(c, ING_ERR_MALFORMED_JSON, index, "", "invalid escape '\\%c' at byte %zu",
                            b >= 0x20 && b < 0x7f ? b : '?', p);
            p += 2;
            continue;
        }
        unsigned int cp, lo;
        if (hex4(s, p + 2, limit, &cp) != 0)
            return fail(c, ING_ERR_MALFORMED_JSON, index, "", "truncated or invalid \\u escape at byte %zu",
                        p);
        if (cp == 0)
            *has_nul = 1;
        /* UTF-8 cannot carry half a surrogate pair: refused, not replaced by U+FFFD behind the client's back.
         */
        if (cp >= 0xdc00 && cp <= 0xdfff)
            return fail(c, ING_ERR_MALFORMED_JSON, index, "", "unpaired surrogate \\u%04x at byte %zu", cp,
                        p);
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (limit - p < 12 || s[p + 6] != '\\' || s[p + 7] != 'u' || hex4(s, p + 8, limit, &lo) != 0 ||
                lo < 0xdc00 || lo > 0xdfff)
                return fail(c, ING_ERR_MALFORMED_JSON, index, "", "unpaired surrogate \\u%04x at byte %zu",
                            cp, p);
            p += 6;
        }
        p += 6;
    }
    /* Escapes are ASCII, so checking the raw bytes checks every decoded one. */
    if (non_ascii && !utf8_valid(c->buf + start + 1, p - start - 1))
        return fail(c, ING_ERR_MALFORMED_JSON, index, "", "invalid UTF-8 in the string at byte %zu", start);
    *pp = p + 1;
    return 0;
}

/* Postgres's numeric (what jsonb keeps a number as): src/backend/utils/adt/numeric.c's limits. */
#define PG_NUMERIC_MAX_WEIGHT10 131071 /* the first digit's power of ten at most: below 10^131072 */
#define PG_NUMERIC_MAX_DSCALE   16383  /* digits after the point, as written less the exponent */
#define PG_NUMERIC_MAX_EXPONENT                                                                              \
    1073741822LL /* |exponent| (INT_MAX / 2 and beyond: refused whatever the value) */

/*
 * Whether Postgres's jsonb takes the number of s[start, end) that scan_number
 * found well formed: int_digits before the point, frac at the point (or
 * end), exp at the 'e' (or end). Measured against Postgres 15: 1e131071 and
 * 1e-16383 are taken; 1e131072, 1e-16384, 0.000e-99999 and 0e1073741823
 * are "value overflows numeric format".
 */
static const char *pg_numeric_refusal(const unsigned char *s, size_t digits, size_t int_end, size_t frac_end,
                                      size_t end)
{
    long long e = 0;
    size_t p = frac_end;
    int e_neg = 0;

    if (p < end) {
        p++; /* 'e' */
        if (s[p] == '+' || s[p] == '-')
            e_neg = s[p++] == '-';
        for (; p < end; p++)
            if ((e = e * 10 + (s[p] - '0')) > PG_NUMERIC_MAX_EXPONENT)
                return "its exponent is beyond what Postgres's numeric reads";
        if (e_neg)
            e = -e;
    }
    long long frac_digits = frac_end > int_end ? (long long)(frac_end - int_end - 1) : 0;
    if (frac_digits - e > PG_NUMERIC_MAX_DSCALE)
        return "it has more digits after the point than Postgres's numeric holds (16383)";
    /* The power of ten of its first non-zero digit, if it has one. */
    long long weight;
    size_t q = digits;
    while (q < int_end && s[q] == '0')
        q++;
    if (q < int_end) {
        weight = (long long)(int_end - q) - 1;
    } else {
        for (q = int_end + 1; q < frac_end && s[q] == '0'; q++)
            ;
        if (frac_end <= int_end || q >= frac_end)
            return NULL; /* zero */
        weight = -(long long)(q - int_end);
    }
    if (weight + e > PG_NUMERIC_MAX_WEIGHT10)
        return "it is beyond what Postgres's numeric holds (10^131072)";
    return NULL;
}

/*
 * RFC 8259's number. An attribute's integer must fit in 64 bits (RFC 8259,
 * 6: beyond that, readers disagree or clamp), so that what consumers read is
 * what the client sent. A number in data must be one Postgres's jsonb takes
 * (pg): the sink stores data there, and what the gateway acknowledges must
 * be storable.
 */
static int scan_number(const jctx *c, size_t *pp, size_t limit, long index, int fit64, int pg)
{
    const unsigned char *s = (const unsigned char *)c->buf;
    size_t start = *pp, p = start, digits, int_end, frac_end;
    int neg = 0, integer = 1;

    if (s[p] == '-') {
        neg = 1;
        p++;
    }
    if (p >= limit || !is_digit(s[p])) {
        if (p < limit && s[p] == 'I')
            return fail(c, ING_ERR_MALFORMED_JSON, index, "", "-Infinity is not a JSON number, at byte %zu",
                        start);
        return fail(c, ING_ERR_MALFORMED_JSON, index, "", "invalid number at byte %zu", start);
    }
    digits = p;
    if (s[p] == '0') {
        p++;
        if (p < limit && is_digit(s[p]))
            return fail(c, ING_ERR_MALFORMED_JSON, index, "", "number with a leading zero at byte %zu",
                        start);
    } else {
        while (p < limit && is_digit(s[p]))
            p++;
    }
    size_t n_digits = p - digits;
    int_end = p;
    if (p < limit && s[p] == '.') {
        integer = 0;
        if (++p >= limit || !is_digit(s[p]))
            return fail(c, ING_ERR_MALFORMED_JSON, index, "", "number without digits after '.' at byte %zu",
                        start);
        while (p < limit && is_digit(s[p]))
            p++;
    }
    frac_end = p;
    if (p < limit && (s[p] == 'e' || s[p] == 'E')) {
        integer = 0;
        if (++p < limit && (s[p] == '+' || s[p] == '-'))
            p++;
        if (p >= limit || !is_digit(s[p]))
            return fail(c, ING_ERR_MALFORMED_JSON, index, "",
                        "number without digits in its exponent at byte %zu", start);
        while (p < limit && is_digit(s[p]))
            p++;
    }
    if (integer && fit64) {
        /* The widest integers most readers keep exactly: int64_t and uint64_t. */
        const char *max = neg ? "9223372036854775808" : "18446744073709551615";
        size_t max_len = strlen(max);
        if (n_digits > max_len || (n_digits == max_len && memcmp(s + digits, max, max_len) > 0))
            return fail(
                c, ING_ERR_MALFORMED_JSON, index, "",
                "integer at byte %zu does not fit in 64 bits (send it as a string, or with a fraction "
                "or an exponent)",
                start);
    }
    const char *why;
    if (pg && !integer && (why = pg_numeric_refusal(s, digits, int_end, frac_end, p)) != NULL)
        return fail(c, ING_ERR_INVALID_EVENT, index, "data",
                    "data: the number at byte %zu cannot be stored: %s", start, why);
    if (pg && integer && n_digits > PG_NUMERIC_MAX_WEIGHT10 + 1)
        return fail(
            c, ING_ERR_INVALID_EVENT, index, "data",
            "data: the number at byte %zu cannot be stored: it is beyond what Postgres's numeric holds "
            "(10^131072)",
            start);
    *pp = p;
    return 0;
}

static int nul_in_data(const jctx *c, long index, size_t p)
{
    return fail(
        c, ING_ERR_INVALID_EVENT, index, "data",
        "data: \\u0000 in the string before byte %zu cannot be stored as JSON (Postgres's jsonb refuses "
        "it); send such data as data_base64",
        p);
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
    return fail(c, ING_ERR_MALFORMED_JSON, index, "",
                "invalid literal at byte %zu (true, false and null only)", p);
}

static int unexpected(const jctx *c, size_t p, long index)
{
    unsigned char b = (unsigned char)c->buf[p];

    if (b == 'N' || b == 'I')
        return fail(c, ING_ERR_MALFORMED_JSON, index, "",
                    "NaN and Infinity are not JSON numbers, at byte %zu", p);
    if (b == '\'')
        return fail(c, ING_ERR_MALFORMED_JSON, index, "", "single quotes at byte %zu: JSON strings use \"",
                    p);
    if (b == '/')
        return fail(c, ING_ERR_MALFORMED_JSON, index, "", "comments are not JSON, at byte %zu", p);
    if (b == 0xef && c->len - p >= 3 && memcmp(c->buf + p, "\xef\xbb\xbf", 3) == 0)
        return fail(c, ING_ERR_MALFORMED_JSON, index, "", "a byte order mark at byte %zu is not allowed", p);
    if (b > 0x20 && b < 0x7f)
        return fail(c, ING_ERR_MALFORMED_JSON, index, "", "unexpected '%c' at byte %zu", b, p);
    return fail(c, ING_ERR_MALFORMED_JSON, index, "", "unexpected byte 0x%02x at byte %zu", b, p);
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
        return fail(c, ING_ERR_MALFORMED_JSON, index, "", "no JSON value: the input is empty or blank");
    for (;;) {
        if (p >= limit)
            return fail(c, ING_ERR_MALFORMED_JSON, index, "",
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
                return fail(c, ING_ERR_MALFORMED_JSON, index, "", "nested deeper than %d levels at byte %zu",
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
                /* Names are C strings here and text in Postgres (which refuses NUL): "a\u0000b" cannot
                 * travel. */
                if (has_nul)
                    return fail(c, ING_ERR_MALFORMED_JSON, index, "",
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
            /*
             * Postgres's jsonb refuses \u0000 (22P05): data stored as JSON
             * cannot hold it (data that is one string under a non-JSON
             * content type is text, and may); an attribute's is a control
             * character, refused by validation.
             */
            if (has_nul && c->all_data)
                return nul_in_data(c, index, p);
            if (has_nul && in_data && !si->data_nul)
                si->data_nul = p;
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
            /* Only attributes must fit 64 bits: `data` is copied as written, its numbers untouched. */
            if ((rc = scan_number(c, &p, limit, index, !(in_data || c->all_data), in_data || c->all_data)) !=
                0)
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

/* One of the context attributes; every member of every event asks, so by length first. */
static int is_core_attr(const char *name, size_t len)
{
    switch (len) {
    case 2: return memcmp(name, "id", 2) == 0;
    case 4: return memcmp(name, "type", 4) == 0 || memcmp(name, "time", 4) == 0;
    case 6: return memcmp(name, "source", 6) == 0;
    case 7: return memcmp(name, "subject", 7) == 0;
    case 10: return memcmp(name, "dataschema", 10) == 0;
    case 11: return memcmp(name, "specversion", 11) == 0;
    case 15: return memcmp(name, "datacontenttype", 15) == 0;
    default: return 0;
    }
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

/*
 * Past the closing quote of the string whose opening quote is at p (valid
 * JSON: it is closed). memchr-speed search for each quote, instead of a
 * byte at a time (perf/udp: the byte loop was ~60% of build_event): a quote
 * is escaped when an odd run of backslashes precedes it.
 */
static size_t string_end(const char *s, size_t p)
{
    const char *q = s + p + 1;

    for (;;) {
        q = rawmemchr(q, '"');
        size_t bs = 0;
        while (q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if (bs % 2 == 0)
            return (size_t)(q - s) + 1;
        q++;
    }
}

/* Where the value at p (valid JSON, checked by json_scan) ends. */
static size_t value_end(const char *s, size_t p)
{
    size_t depth = 0;

    do {
        switch (s[p]) {
        case '"': p = string_end(s, p); break;
        case '{':
        case '[': depth++, p++; break;
        case '}':
        case ']': depth--, p++; break;
        case ',':
        case ':':
        case ' ':
        case '\t':
        case '\r':
        case '\n': p++; break;
        default:
            /* A number or a literal: up to the next delimiter. */
            while (s[p] != ',' && s[p] != '}' && s[p] != ']' && s[p] != ' ' && s[p] != '\t' && s[p] != '\r' &&
                   s[p] != '\n' && s[p] != ':' && s[p] != '\0')
                p++;
            break;
        }
    } while (depth > 0);
    return p;
}

/*
 * Unescape the string whose opening quote is at s[p] (valid, checked by
 * json_scan) into out, which has room for its raw length. Returns the
 * length; *end is set past the closing quote.
 */
static size_t unescape(const char *s, size_t p, char *out, size_t *end)
{
    size_t n = 0;
    const char *q = rawmemchr(s + p + 1, '"');

    /* No backslash before the first quote: that quote closes the string, and the bytes are as written. */
    if (memchr(s + p + 1, '\\', (size_t)(q - (s + p + 1))) == NULL) {
        n = (size_t)(q - (s + p + 1));
        memcpy(out, s + p + 1, n);
        out[n] = '\0';
        *end = (size_t)(q - s) + 1;
        return n;
    }

    for (p++; s[p] != '"'; p++) {
        if (s[p] != '\\') {
            out[n++] = s[p];
            continue;
        }
        p++;
        switch (s[p]) {
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            unsigned int cp, lo;
            hex4((const unsigned char *)s, p + 1, p + 5, &cp);
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                hex4((const unsigned char *)s, p + 3, p + 7, &lo);
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }
            if (cp < 0x80) {
                out[n++] = (char)cp;
            } else if (cp < 0x800) {
                out[n++] = (char)(0xc0 | cp >> 6);
                out[n++] = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                out[n++] = (char)(0xe0 | cp >> 12);
                out[n++] = (char)(0x80 | (cp >> 6 & 0x3f));
                out[n++] = (char)(0x80 | (cp & 0x3f));
            } else {
                out[n++] = (char)(0xf0 | cp >> 18);
                out[n++] = (char)(0x80 | (cp >> 12 & 0x3f));
                out[n++] = (char)(0x80 | (cp >> 6 & 0x3f));
                out[n++] = (char)(0x80 | (cp & 0x3f));
            }
            break;
        }
        default: out[n++] = s[p]; break; /* " \ / */
        }
    }
    out[n] = '\0';
    *end = p + 1;
    return n;
}

/* One attribute member: `v` is where its (valid) value starts, `vend` where it ends. */
static int set_member(const jctx *c, ing_event *ev, const char *name, size_t nlen, size_t v, size_t vend,
                      char *scratch, long index)
{
    const char *s = c->buf;
    int core = is_core_attr(name, nlen);
    char field[64];
    size_t len, end;

    if (s[v] == 'n')
        return 0; /* CloudEvents JSON format 2.2: a null attribute MUST be treated as unset. */
    if (s[v] == '"') {
        len = unescape(s, v, scratch, &end);
        return locate(c, index, ing_event_set_attr(ev, name, nlen, scratch, len, c->lim, c->err));
    }
    if (!core && s[v] != '{' && s[v] != '[')
        /* A number or a boolean: its JSON text, as written. */
        return locate(c, index, ing_event_set_attr(ev, name, nlen, s + v, vend - v, c->lim, c->err));
    /* A wrong type: only now is the field's name worth formatting. */
    if (core)
        snprintf(field, sizeof(field), "%s", name);
    else
        snprintf(field, sizeof(field), "extensions.%.40s", name);
    if (core)
        return fail(c, ING_ERR_INVALID_EVENT, index, field, "%s: must be a string", field);
    return fail(c, ING_ERR_INVALID_EVENT, index, field, "%s: must be a string, number or boolean, not %s",
                field, kind_name((unsigned char)s[v]));
}

/*
 * One event object, checked by json_scan: walk its members in order. Strings
 * are unescaped into one scratch buffer as large as the event; `data` is
 * copied as written, less the blanks between tokens.
 */
static int build_event(const jctx *c, size_t start, const scan_info *si, long index)
{
    const char *s = c->buf;
    size_t size = si->end - start, max_objects = c->lim->max_event_bytes / JSON_BYTES_PER_OBJECT;
    /* Core attributes, data and data_base64 besides the extensions: past that, no need to look. */
    size_t max_members = c->lim->max_extensions + 10, n_names = 0;
    size_t data_at = 0, data_end = 0, b64_at = 0, p;
    char *scratch, *names;
    size_t *name_off, names_len = 0;
    ing_event *ev;
    int rc = 0;

    if (size > c->lim->max_event_bytes)
        return fail(c, ING_ERR_TOO_LARGE, index, "", "event is %zu bytes of JSON, over the %zu-byte limit",
                    size, c->lim->max_event_bytes);
    if (si->objects > max_objects)
        return fail(c, ING_ERR_TOO_LARGE, index, "", "event holds more than %zu JSON objects", max_objects);
    if (si->members > max_members)
        return fail(c, ING_ERR_INVALID_EVENT, index, "extensions", "extensions: more than %zu",
                    c->lim->max_extensions);
    /*
     * Working memory, kept from event to event: a scratch string (unescaping
     * never grows one), and the names so far, to find one given twice.
     */
    size_t need = (si->members + 2) * sizeof(size_t) + 2 * (size + 1);
    if (c->tmp->cap < need) {
        char *t = realloc(c->tmp->p, need);
        if (t == NULL)
            return -ENOMEM;
        c->tmp->p = t;
        c->tmp->cap = need;
    }
    name_off = (size_t *)(void *)c->tmp->p;
    names = c->tmp->p + (si->members + 2) * sizeof(size_t);
    scratch = names + size + 1;
    /*
     * The event's strings are parts of its text, each no longer unescaped or
     * compacted, each taking a NUL where the text had at least a quote: one
     * block as large as the text, and the id the gateway may give it, holds them.
     */
    if ((ev = ing_event_batch_add(c->out)) == NULL || ing_event_reserve(ev, size + UUID_STR_LEN) != 0)
        return -ENOMEM;

    p = skip_ws(c, start + 1, si->end);
    while (s[p] != '}') {
        size_t after_name, v, vend;
        char *name = names + names_len;
        size_t nlen = unescape(s, p, name, &after_name);

        for (size_t i = 0; i < n_names; i++) {
            if (name_off[i + 1] - name_off[i] == nlen + 1 && memcmp(names + name_off[i], name, nlen) == 0) {
                rc = fail(c, ING_ERR_INVALID_EVENT, index, "",
                          "a member name appears twice in the event object: %.40s", name);
                goto out;
            }
        }
        name_off[n_names++] = names_len;
        names_len += nlen + 1;
        name_off[n_names] = names_len;

        v = skip_ws(c, skip_ws(c, after_name, si->end) + 1, si->end); /* past ':' */
        vend = value_end(s, v);
        if (nlen == 4 && memcmp(name, "data", 4) == 0) {
            data_at = v, data_end = vend;
        } else if (nlen == 11 && memcmp(name, "data_base64", 11) == 0) {
            b64_at = v;
        } else if ((rc = set_member(c, ev, name, nlen, v, vend, scratch, index)) != 0) {
            goto out;
        }
        p = skip_ws(c, vend, si->end);
        if (s[p] == ',')
            p = skip_ws(c, p + 1, si->end);
    }

    /* A null payload is no payload, like any null attribute. */
    if (data_at && s[data_at] == 'n')
        data_at = 0;
    if (b64_at && s[b64_at] == 'n')
        b64_at = 0;
    if (data_at && b64_at) {
        rc = fail(c, ING_ERR_INVALID_EVENT, index, "data_base64",
                  "data_base64: not allowed together with data (one event has one payload)");
    } else if (data_at && s[data_at] == '"' && ev->datacontenttype &&
               !media_type_is_json(ev->datacontenttype)) {
        /*
         * A string under a non-JSON content type is that text itself (CloudEvents
         * JSON format 3.1): "hello" as text/plain is hello, not its JSON quotes.
         */
        size_t end, n = unescape(s, data_at, scratch, &end);
        unsigned char *copy = ing_event_alloc(ev, n + 1);
        if (copy == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        memcpy(copy, scratch, n + 1);
        ing_event_set_data(ev, memchr(copy, '\0', n) ? EVENT_DATA_BINARY : EVENT_DATA_TEXT, copy, n);
    } else if (data_at && si->data_nul) {
        rc = nul_in_data(c, index, si->data_nul);
    } else if (data_at) {
        unsigned char *copy = ing_event_alloc(ev, data_end - data_at + 1);
        if (copy == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        size_t n = compact(s + data_at, data_end - data_at, (char *)copy);
        copy[n] = '\0';
        ing_event_set_data(ev, EVENT_DATA_JSON, copy, n);
    } else if (b64_at) {
        unsigned char *bytes = NULL;
        size_t len, bad, end;
        if (s[b64_at] != '"') {
            rc = fail(c, ING_ERR_INVALID_EVENT, index, "data_base64", "data_base64: must be a string");
            goto out;
        }
        len = unescape(s, b64_at, scratch, &end);
        rc = base64_decode(scratch, len, &bytes, &len, &bad);
        if (rc == -EINVAL)
            rc = fail(c, ING_ERR_INVALID_EVENT, index, "data_base64",
                      "data_base64: not standard base64 (RFC 4648), at character %zu", bad);
        if (rc == 0)
            ing_event_set_data(ev, EVENT_DATA_BINARY, bytes, len);
    }
out:
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
        return fail(c, ING_ERR_MALFORMED_JSON, index, "", "unexpected data after the JSON value, at byte %zu",
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
        return fail(c, ING_ERR_INVALID_EVENT, index, "", "expected %s, got %s", want,
                    kind_name((unsigned char)c->buf[p]));
    return build_event(c, p, &si, index);
}

static int too_many(const jctx *c)
{
    return fail(c, ING_ERR_TOO_MANY_EVENTS, -1, "", "more than %zu events in one request",
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
        return fail(c, ING_ERR_INVALID_EVENT, -1, "", "expected a JSON array of events, got %s",
                    kind_name((unsigned char)c->buf[p]));
    }
    p = skip_ws(c, p + 1, c->len);
    if (p < c->len && c->buf[p] == ']')
        goto done;
    for (long i = 0;; i++) {
        if (p >= c->len)
            return fail(c, ING_ERR_MALFORMED_JSON, -1, "", "truncated JSON: the batch ends without ']'");
        if ((size_t)i >= c->lim->max_batch_events)
            return too_many(c);
        if ((rc = json_scan(c, p, c->len, i, &si)) != 0)
            return rc;
        if (c->buf[p] != '{')
            return fail(c, ING_ERR_INVALID_EVENT, i, "", "an event must be a JSON object, got %s",
                        kind_name((unsigned char)c->buf[p]));
        if ((rc = build_event(c, p, &si, i)) != 0)
            return rc;
        p = skip_ws(c, si.end, c->len);
        if (p >= c->len)
            return fail(c, ING_ERR_MALFORMED_JSON, -1, "", "truncated JSON: the batch ends without ']'");
        if (c->buf[p] == ']')
            break;
        if (c->buf[p] != ',')
            return fail(c, ING_ERR_MALFORMED_JSON, -1, "", "expected ',' or ']' after event %ld, at byte %zu",
                        i, p);
        p = skip_ws(c, p + 1, c->len);
        if (p < c->len && c->buf[p] == ']')
            return fail(c, ING_ERR_MALFORMED_JSON, -1, "", "trailing comma after event %ld, at byte %zu", i,
                        p);
    }
done:
    p = skip_ws(c, p + 1, c->len);
    if (p < c->len)
        return fail(c, ING_ERR_MALFORMED_JSON, -1, "", "unexpected data after the batch, at byte %zu", p);
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

int json_parse_events(const char *buf, size_t len, json_form form, const ing_event_limits *lim,
                      ing_event_batch *out, ing_event_error *err)
{
    ing_event_limits defaults;
    size_t first = out->n;
    jtmp tmp = {NULL, 0};
    jctx c = {.buf = buf ? buf : "", .len = buf ? len : 0, .lim = lim, .out = out, .err = err, .tmp = &tmp};
    size_t p;
    int rc;

    if (lim == NULL) {
        ing_event_limits_default(&defaults);
        c.lim = &defaults;
    }

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
    default: rc = fail(&c, ING_ERR_INVALID_EVENT, -1, "", "unknown JSON form %d", (int)form); break;
    }
    if (rc != 0) {
        /* All or nothing: leave `out` as it came. */
        for (size_t i = first; i < out->n; i++)
            ing_event_clear(&out->ev[i]);
        out->n = first;
    }
    free(tmp.p);
    return rc;
}

int json_check(const char *buf, size_t len, const ing_event_limits *lim, ing_event_error *err)
{
    ing_event_limits defaults;
    jctx c = {.buf = buf ? buf : "", .len = buf ? len : 0, .lim = lim, .err = err, .all_data = 1};
    scan_info si;
    size_t first;

    if (lim == NULL) {
        ing_event_limits_default(&defaults);
        c.lim = &defaults;
    }
    return scan_document(&c, 0, c.len, -1, &first, &si);
}
