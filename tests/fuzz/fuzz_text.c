/*
 * The text helpers of common/: RFC 3339 (parse and format), UTF-8
 * validation, base64 (envelope.c's encoder, json.c's decoder behind
 * data_base64), percent-decoding (ce-* headers, gRPC peers) and the JSON
 * media type test. The first byte chooses one; each is checked against a
 * plain reference written here from the RFC, or by a round trip.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <strings.h>

#include "envelope.h"
#include "event.h"
#include "fuzz.h"
#include "json.h"
#include "net.h"

/* The input as a C string of its own size (cut at a NUL, as a header or attribute is). */
static char *cstr(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);

    FUZZ_CHECK(s != NULL, "no memory");
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* A parsed time formats as RFC 3339 UTC that parses back to the same instant. */
static void fuzz_rfc3339(const uint8_t *p, size_t n)
{
    char *s = cstr(p, n), out[64];
    int64_t sec = 0, sec2 = 0;
    int32_t nsec = 0, nsec2 = 0;

    if (rfc3339_parse(s, &sec, &nsec) == 0) {
        FUZZ_CHECK(nsec >= 0 && nsec < 1000000000, "nanoseconds %d", (int)nsec);
        rfc3339_format(sec, nsec, out, sizeof(out));
        FUZZ_CHECK(rfc3339_parse(out, &sec2, &nsec2) == 0, "\"%s\" parsed, but its instant formats as \"%s\"",
                   s, out);
        FUZZ_CHECK(sec == sec2 && nsec == nsec2, "\"%s\" and \"%s\" differ", s, out);
    }
    free(s);
}

/* Any seconds and nanoseconds: formatted, either refused by the parser or read back exactly. */
static void fuzz_format(const uint8_t *p, size_t n)
{
    int64_t sec = 0, sec2;
    int32_t nsec = 0, nsec2;
    char out[48];

    memcpy(&sec, p, n < 8 ? n : 8);
    if (n > 8)
        memcpy(&nsec, p + 8, n - 8 < 4 ? n - 8 : 4);
    rfc3339_format(sec, nsec, out, sizeof(out));
    FUZZ_CHECK(memchr(out, '\0', sizeof(out)) != NULL, "not terminated");
    if (rfc3339_parse(out, &sec2, &nsec2) == 0)
        FUZZ_CHECK(sec == sec2 && nsec == nsec2, "%" PRId64 "s %" PRId32 "ns formats as \"%s\"", sec, nsec,
                   out);
    else
        FUZZ_CHECK(strncmp(out, "out of range", 12) == 0, "\"%s\" is refused", out);
}

/* UTF-8 as RFC 3629's ABNF says, a byte at a time: the reference for utf8_valid(). */
static int utf8_reference(const uint8_t *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint8_t c = s[i];
        uint8_t lo = 0x80, hi = 0xbf;
        size_t more;
        if (c <= 0x7f) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
            if (c == 0xe0)
                lo = 0xa0;
            if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
            if (c == 0xf0)
                lo = 0x90;
            if (c == 0xf4)
                hi = 0x8f;
        } else {
            return 0;
        }
        if (n - i - 1 < more)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= more; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return 0;
        i += more + 1;
    }
    return 1;
}

static void fuzz_utf8(const uint8_t *p, size_t n)
{
    int got = utf8_valid((const char *)p, n), want = utf8_reference(p, n);

    FUZZ_CHECK(got == want, "utf8_valid says %d, RFC 3629 %d, for %zu bytes", got, want, n);
}

/* Bytes to base64 and back through a JSON event's data_base64, as a client's would come. */
static void fuzz_base64(const uint8_t *p, size_t n)
{
    static const char head[] = "{\"source\":\"/s\",\"type\":\"t\",\"data_base64\":\"", tail[] = "\"}";
    size_t enc_cap = 4 * ((n + 2) / 3) + 1;
    char *json = malloc(sizeof(head) + enc_cap + sizeof(tail));
    ing_event_batch b;
    ing_event_error err;

    FUZZ_CHECK(json != NULL, "no memory");
    memcpy(json, head, sizeof(head) - 1);
    size_t m = base64_encode(p, n, json + sizeof(head) - 1);
    FUZZ_CHECK(m == 4 * ((n + 2) / 3), "%zu bytes encode to %zu characters", n, m);
    memcpy(json + sizeof(head) - 1 + m, tail, sizeof(tail) - 1);
    size_t len = sizeof(head) - 1 + m + sizeof(tail) - 1;

    ing_event_batch_init(&b);
    int rc = json_parse_events(json, len, JSON_FORM_EVENT, NULL, &b, &err);
    FUZZ_CHECK(rc == 0, "our own base64 refused: %s", err.message);
    FUZZ_CHECK(b.ev[0].data_kind == EVENT_DATA_BINARY && b.ev[0].data_len == n &&
                   (n == 0 || memcmp(b.ev[0].data, p, n) == 0),
               "%zu bytes came back as %zu", n, b.ev[0].data_len);
    ing_event_batch_reset(&b);

    /* Without its padding, the same bytes. */
    while (m > 0 && json[sizeof(head) - 1 + m - 1] == '=')
        m--;
    memcpy(json + sizeof(head) - 1 + m, tail, sizeof(tail) - 1);
    len = sizeof(head) - 1 + m + sizeof(tail) - 1;
    rc = json_parse_events(json, len, JSON_FORM_EVENT, NULL, &b, &err);
    FUZZ_CHECK(rc == 0 && b.ev[0].data_len == n && (n == 0 || memcmp(b.ev[0].data, p, n) == 0),
               "unpadded base64 of %zu bytes: %d", n, rc);
    ing_event_batch_clear(&b);
    free(json);
}

/* Any text as data_base64: refused, or bytes whose length the text's says. */
static void fuzz_base64_text(const uint8_t *p, size_t n)
{
    static const char head[] = "{\"source\":\"/s\",\"type\":\"t\",\"data_base64\":\"", tail[] = "\"}";
    char *json = malloc(sizeof(head) + n + sizeof(tail));
    ing_event_batch b;
    ing_event_error err;
    size_t k = 0;

    FUZZ_CHECK(json != NULL, "no memory");
    memcpy(json, head, sizeof(head) - 1);
    /* Characters that need no JSON escape, so that the text is what the decoder sees. */
    for (size_t i = 0; i < n; i++)
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
            json[sizeof(head) - 1 + k++] = (char)p[i];
    memcpy(json + sizeof(head) - 1 + k, tail, sizeof(tail) - 1);

    ing_event_batch_init(&b);
    if (json_parse_events(json, sizeof(head) - 1 + k + sizeof(tail) - 1, JSON_FORM_EVENT, NULL, &b, &err) ==
        0) {
        const char *t = json + sizeof(head) - 1;
        size_t chars = k;
        while (chars > 0 && t[chars - 1] == '=')
            chars--;
        for (size_t i = 0; i < chars; i++)
            FUZZ_CHECK(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", t[i]) !=
                           NULL,
                       "'%c' accepted as base64", t[i]);
        FUZZ_CHECK(k - chars <= 2 && (k == chars || k % 4 == 0), "padding of %zu accepted", k - chars);
        FUZZ_CHECK(b.ev[0].data_len == chars * 3 / 4, "%zu characters decoded to %zu bytes", chars,
                   b.ev[0].data_len);
        /* Encoded again: the same characters, but for bits past the last byte in the last one. */
        if (chars > 0) {
            char *again = malloc(4 * ((b.ev[0].data_len + 2) / 3) + 1);
            FUZZ_CHECK(again != NULL, "no memory");
            base64_encode(b.ev[0].data, b.ev[0].data_len, again);
            FUZZ_CHECK(memcmp(again, t, chars - 1) == 0, "base64 does not encode back");
            free(again);
        }
    }
    ing_event_batch_clear(&b);
    free(json);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The first byte is the output's size; the rest the text. */
static void fuzz_percent(const uint8_t *p, size_t n)
{
    if (n < 1)
        return;
    size_t size = p[0];
    char *s = cstr(p + 1, n - 1), *out = malloc(size ? size : 1), want[256];
    size_t w = 0;

    FUZZ_CHECK(out != NULL, "no memory");
    size_t got = net_percent_decode(s, out, size);
    /* The reference: %XX is the byte, anything else as it is, cut to fit. */
    for (const char *q = s; *q && w + 1 < size; q++) {
        if (q[0] == '%' && hexval((unsigned char)q[1]) >= 0 && hexval((unsigned char)q[2]) >= 0) {
            want[w++] = (char)(hexval((unsigned char)q[1]) << 4 | hexval((unsigned char)q[2]));
            q += 2;
        } else {
            want[w++] = *q;
        }
    }
    if (size == 0) {
        FUZZ_CHECK(got == 0, "%zu bytes into none", got);
    } else {
        FUZZ_CHECK(got == w && got < size && out[got] == '\0' && memcmp(out, want, w) == 0,
                   "decoded %zu bytes, the reference %zu", got, w);
    }
    free(out);
    free(s);
}

/* The reference: blank is JSON; else the type is everything before ';' or a blank, whatever its length. */
static void fuzz_media_type(const uint8_t *p, size_t n)
{
    char *s = cstr(p, n);
    const char *t = s;

    while (*t == ' ' || *t == '\t')
        t++;
    size_t len = strcspn(t, "; \t");
    int want = *t == '\0' || (len == 16 && strncasecmp(t, "application/json", 16) == 0) ||
               (len == 9 && strncasecmp(t, "text/json", 9) == 0) ||
               (len > 5 && strncasecmp(t + len - 5, "+json", 5) == 0);
    int got = media_type_is_json(s) != 0;
    FUZZ_CHECK(got == want, "media_type_is_json(\"%s\") is %d", s, got);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* The rest, copied to a buffer of its own exact size, so that ASan sees any read past it. */
    uint8_t *p = malloc(size - 1 ? size - 1 : 1);
    size_t n = size - 1;

    FUZZ_CHECK(p != NULL, "no memory");
    memcpy(p, data + 1, n);
    switch (data[0] % 7) {
    case 0: fuzz_rfc3339(p, n); break;
    case 1: fuzz_format(p, n); break;
    case 2: fuzz_utf8(p, n); break;
    case 3: fuzz_base64(p, n); break;
    case 4: fuzz_base64_text(p, n); break;
    case 5: fuzz_percent(p, n); break;
    case 6: fuzz_media_type(p, n); break;
    }
    free(p);
    return 0;
}
