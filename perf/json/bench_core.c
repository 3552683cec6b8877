/*
 * One library's half of the JSON benchmark (see bench.h): the corpus, the
 * strictness catalogue and the timing loop, printed as tab-separated rows
 * for bench_json to tabulate. Every catalogue case runs in a forked child,
 * so a library that crashes on one input is reported, not fatal.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* ---- a growable byte buffer for building inputs ---- */

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static void buf_add(buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        if ((b->p = realloc(b->p, b->cap)) == NULL) {
            perror("realloc");
            exit(2);
        }
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void buf_str(buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_fmt(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_fmt(buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    buf_add(b, tmp, (size_t)n);
}

static void buf_repeat(buf *b, const char *s, size_t times)
{
    for (size_t i = 0; i < times; i++)
        buf_str(b, s);
}

/* ---- the corpus: what clients actually send ---- */

/* A typical sensor CloudEvent, about 330 bytes. */
static void small_event(buf *b, unsigned i)
{
    buf_fmt(b,
            "{\"specversion\":\"1.0\",\"id\":\"0190a8f2-6b1c-7d3e-9f4a-%012u\","
            "\"source\":\"/sensors/building-7/floor-%u\",\"type\":\"com.example.sensor.reading.v1\","
            "\"subject\":\"room-%u\",\"time\":\"2024-06-01T12:34:%02u.789Z\","
            "\"datacontenttype\":\"application/json\",\"partitionkey\":\"room-%u\",\"sequence\":%u,"
            "\"data\":{\"temperature\":%u.%u,\"humidity\":%u,\"co2\":%u,\"ok\":true,\"tags\":[\"hvac\","
            "\"east\"]}}",
            i, i % 9, 100 + i % 400, i % 60, 100 + i % 400, i, 18 + i % 8, i % 10, 30 + i % 40,
            400 + i % 900);
}

/* An order event with a nested 4 KB payload: objects, arrays, text with escapes and non-ASCII. */
static void large_event(buf *b, unsigned i)
{
    buf_fmt(b,
            "{\"specversion\":\"1.0\",\"id\":\"order-%u\",\"source\":\"https://shop.example.com/orders\","
            "\"type\":\"com.example.order.created\",\"time\":\"2024-06-01T12:34:56Z\","
            "\"datacontenttype\":\"application/json\",\"tenant\":\"acme\",\"data\":{\"order\":%u,"
            "\"customer\":{\"name\":\"Zo\xc3\xab M\xc3\xbcller\",\"email\":\"zoe@example.com\","
            "\"address\":\"Stra\xc3\x9f"
            "e 1\\n10115 Berlin\"},\"items\":[",
            i, i);
    for (unsigned k = 0; k < 30; k++)
        buf_fmt(b,
                "%s{\"sku\":\"SKU-%05u\",\"title\":\"Item %u \\\"deluxe\\\" \xe2\x80\x93 caf\xc3\xa9\","
                "\"qty\":%u,\"price\":%u.%02u,\"gift\":%s,\"dims\":[%u.5,%u.25,%u]}",
                k ? "," : "", k * 7 + i, k, 1 + k % 4, 3 + k, k * 13 % 100, k % 3 ? "false" : "true", k,
                k + 1, k + 2);
    buf_str(b, "],\"note\":\"");
    buf_repeat(b, "Leave at the door \xe2\x80\x94 thanks! \\u00e9\\t", 12);
    buf_str(b, "\",\"total\":1234.56,\"currency\":\"EUR\",\"coupon\":null}}");
}

/* One event whose data is a 1 MiB string, mostly ASCII with some multi-byte text. */
static void huge_string_event(buf *b)
{
    buf_str(b, "{\"source\":\"/logs\",\"type\":\"com.example.log\",\"data\":\"");
    while (b->n < (1u << 20))
        buf_str(b, "2024-06-01 12:34:56 INFO r\xc3\xa9sum\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac request served in "
                   "3 ms\\n");
    buf_str(b, "\"}");
}

typedef struct corpus {
    const char *name;
    buf doc;
    long events;
} corpus;

static void build_corpus(corpus *c)
{
    c[0].name = "event-330B";
    small_event(&c[0].doc, 7);
    c[0].events = 1;

    c[1].name = "event-4KB";
    large_event(&c[1].doc, 7);
    c[1].events = 1;

    c[2].name = "batch-1000";
    buf_str(&c[2].doc, "[");
    for (unsigned i = 0; i < 1000; i++) {
        if (i)
            buf_str(&c[2].doc, ",\n");
        if (i % 50 == 49)
            large_event(&c[2].doc, i);
        else
            small_event(&c[2].doc, i);
    }
    buf_str(&c[2].doc, "]");
    c[2].events = 1000;

    c[3].name = "data-1MB-string";
    huge_string_event(&c[3].doc);
    c[3].events = 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Best of several runs, each long enough (~0.2 s) for the clock to be honest. */
static int bench_corpus(const bench_lib *lib, const corpus *c, int runs)
{
    size_t sink = 0;
    long iters = 1;
    double best = 1e30;

    if (lib->walk(c->doc.p, c->doc.n, &sink) != c->events) {
        printf("perf\t%s\t%zu\t%ld\tFAILED\n", c->name, c->doc.n, c->events);
        return -1;
    }
    for (;;) {
        double t0 = now();
        for (long i = 0; i < iters; i++)
            lib->walk(c->doc.p, c->doc.n, &sink);
        if (now() - t0 > 0.2)
            break;
        iters *= 2;
    }
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        for (long i = 0; i < iters; i++)
            lib->walk(c->doc.p, c->doc.n, &sink);
        double t = (now() - t0) / (double)iters;
        if (t < best)
            best = t;
    }
    printf("perf\t%s\t%zu\t%ld\t%.9f\t%zu\n", c->name, c->doc.n, c->events, best, sink % 10);
    return 0;
}

/* ---- the strictness catalogue ---- */

typedef enum want {
    WANT_REJECT,         /* not JSON, or not representable: must be refused */
    WANT_KEEP,           /* must be accepted and come back exactly as `keep` */
    WANT_KEEP_OR_REJECT, /* either exactly kept or refused; anything else corrupts data */
} want;

typedef struct bcase {
    const char *name;
    const char *in; /* NULL: built by make_input() */
    size_t len;     /* 0: strlen(in) */
    want want;
    const char *keep; /* expected output when kept; NULL: the input itself */
} bcase;

#define RAW(s) s, sizeof(s) - 1

static const bcase cases[] = {
    {"valid: mixed values", "{\"a\":\"b\",\"n\":[1,2.5,true,false,null]}", 0, WANT_KEEP, NULL},
    {"valid: non-ASCII text", "[\"\xc3\xa9 \xc3\xbc \xe4\xb8\xad \xf0\x9f\x98\x80\"]", 0, WANT_KEEP, NULL},
    {"valid: escaped slash, tab", "[\"a\\/b\\tc\"]", 0, WANT_KEEP, "[\"a/b\\tc\"]"},
    {"valid: surrogate pair escape", "[\"\\ud83d\\ude00\"]", 0, WANT_KEEP, "[\"\xf0\x9f\x98\x80\"]"},
    {"valid: nesting 100 deep", NULL, 0, WANT_KEEP, NULL},
    {"valid: 1 MiB string", NULL, 0, WANT_KEEP, NULL},
    {"utf8: stray continuation 80", "[\"\x80\"]", 0, WANT_REJECT, NULL},
    {"utf8: byte FF", "[\"\xff\"]", 0, WANT_REJECT, NULL},
    {"utf8: truncated C3", "[\"\xc3\"]", 0, WANT_REJECT, NULL},
    {"utf8: overlong C0 AF", "[\"\xc0\xaf\"]", 0, WANT_REJECT, NULL},
    {"utf8: overlong E0 80 AF", "[\"\xe0\x80\xaf\"]", 0, WANT_REJECT, NULL},
    {"utf8: surrogate ED A0 80", "[\"\xed\xa0\x80\"]", 0, WANT_REJECT, NULL},
    {"utf8: above U+10FFFF", "[\"\xf4\x90\x80\x80\"]", 0, WANT_REJECT, NULL},
    {"utf8: invalid in a key", "{\"\xff\":1}", 0, WANT_REJECT, NULL},
    {"escape: lone \\ud800", "[\"\\ud800\"]", 0, WANT_REJECT, NULL},
    {"escape: lone \\udc00", "[\"\\udc00x\"]", 0, WANT_REJECT, NULL},
    {"escape: \\ud800 then \\u0041", "[\"\\ud800\\u0041\"]", 0, WANT_REJECT, NULL},
    {"escape: invalid \\x41", "[\"\\x41\"]", 0, WANT_REJECT, NULL},
    {"string: \\u0000 in a value", "[\"a\\u0000b\"]", 0, WANT_KEEP, NULL},
    {"string: \\u0000 in a key", "{\"a\\u0000b\":1}", 0, WANT_KEEP_OR_REJECT, NULL},
    {"string: raw control 01",
     "[\"a\x01"
     "b\"]",
     0, WANT_REJECT, NULL},
    {"string: raw NUL byte", RAW("[\"a\0b\"]"), WANT_REJECT, NULL},
    {"string: single quotes", "['a']", 0, WANT_REJECT, NULL},
    {"syntax: NUL after the value", RAW("{}\0"), WANT_REJECT, NULL},
    {"syntax: trailing comma [1,2,]", "[1,2,]", 0, WANT_REJECT, NULL},
    {"syntax: trailing comma {..,}", "{\"a\":1,}", 0, WANT_REJECT, NULL},
    {"syntax: trailing garbage", "{\"a\":1} x", 0, WANT_REJECT, NULL},
    {"syntax: two documents {}{}", "{}{}", 0, WANT_REJECT, NULL},
    {"syntax: comment /* */", "[1/* c */]", 0, WANT_REJECT, NULL},
    {"syntax: comment //", "[1]// c", 0, WANT_REJECT, NULL},
    {"syntax: missing comma [1 2]", "[1 2]", 0, WANT_REJECT, NULL},
    {"syntax: mismatched [1}", "[1}", 0, WANT_REJECT, NULL},
    {"syntax: unquoted key", "{a:1}", 0, WANT_REJECT, NULL},
    {"syntax: single-quoted key", "{'a':1}", 0, WANT_REJECT, NULL},
    {"syntax: True", "[True]", 0, WANT_REJECT, NULL},
    {"syntax: empty input", "", 0, WANT_REJECT, NULL},
    {"syntax: whitespace only", " \n\t ", 0, WANT_REJECT, NULL},
    {"syntax: UTF-8 BOM", "\xef\xbb\xbf{}", 0, WANT_KEEP_OR_REJECT, "{}"},
    {"syntax: duplicate key", "{\"a\":1,\"a\":2}", 0, WANT_REJECT, NULL},
    {"truncated: {\"a\":", "{\"a\":", 0, WANT_REJECT, NULL},
    {"truncated: in a string", "{\"a\":\"bc", 0, WANT_REJECT, NULL},
    {"truncated: [1,2", "[1,2", 0, WANT_REJECT, NULL},
    {"truncated: in \\u escape", "[\"\\u12", 0, WANT_REJECT, NULL},
    {"number: NaN", "[NaN]", 0, WANT_REJECT, NULL},
    {"number: Infinity", "[Infinity]", 0, WANT_REJECT, NULL},
    {"number: -Infinity", "[-Infinity]", 0, WANT_REJECT, NULL},
    {"number: leading zero 01", "[01]", 0, WANT_REJECT, NULL},
    {"number: leading zero -01", "[-01]", 0, WANT_REJECT, NULL},
    {"number: +1", "[+1]", 0, WANT_REJECT, NULL},
    {"number: .5", "[.5]", 0, WANT_REJECT, NULL},
    {"number: 1.", "[1.]", 0, WANT_REJECT, NULL},
    {"number: 1e", "[1e]", 0, WANT_REJECT, NULL},
    {"number: 1.5.3", "[1.5.3]", 0, WANT_REJECT, NULL},
    {"number: hex 0x1F", "[0x1F]", 0, WANT_REJECT, NULL},
    {"number: 0.1 round trip", "[0.1]", 0, WANT_KEEP, NULL},
    {"number: 1.10 (text kept)", "[1.10,-0.0,2.5E+3]", 0, WANT_KEEP, NULL},
    {"number: 2^63-1", "[9223372036854775807]", 0, WANT_KEEP, NULL},
    {"number: -2^63", "[-9223372036854775808]", 0, WANT_KEEP, NULL},
    {"number: 2^63", "[9223372036854775808]", 0, WANT_KEEP_OR_REJECT, NULL},
    {"number: 2^64", "[18446744073709551616]", 0, WANT_KEEP_OR_REJECT, NULL},
    {"number: -2^63-1", "[-9223372036854775809]", 0, WANT_KEEP_OR_REJECT, NULL},
    {"number: 10^30", "[1000000000000000000000000000000]", 0, WANT_KEEP_OR_REJECT, NULL},
    {"number: 1e400", "[1e400]", 0, WANT_KEEP_OR_REJECT, NULL},
    {"number: 30 significant digits", "[3.14159265358979323846264338328]", 0, WANT_KEEP_OR_REJECT, NULL},
    {"depth: 100k [", NULL, 0, WANT_REJECT, NULL},
    {"depth: 100k {\"a\":", NULL, 0, WANT_REJECT, NULL},
    {"depth: 100k [ unterminated", NULL, 0, WANT_REJECT, NULL},
};

/* The inputs too big to write out. */
static void make_input(const bcase *c, buf *b)
{
    if (strcmp(c->name, "valid: nesting 100 deep") == 0) {
        buf_repeat(b, "[", 100);
        buf_repeat(b, "]", 100);
    } else if (strcmp(c->name, "valid: 1 MiB string") == 0) {
        buf_str(b, "[\"");
        buf_repeat(b, "abcdefgh\xc3\xa9", (1u << 20) / 10);
        buf_str(b, "\"]");
    } else if (strcmp(c->name, "depth: 100k [") == 0) {
        buf_repeat(b, "[", 100000);
        buf_repeat(b, "]", 100000);
    } else if (strcmp(c->name, "depth: 100k {\"a\":") == 0) {
        buf_repeat(b, "{\"a\":", 100000);
        buf_str(b, "1");
        buf_repeat(b, "}", 100000);
    } else if (strcmp(c->name, "depth: 100k [ unterminated") == 0) {
        buf_repeat(b, "[", 100000);
    }
}

/* Printable, short, one line: for the table. */
static void show(buf *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n && out->n < 40; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            buf_fmt(out, "\\x%02x", c);
        else
            buf_add(out, (const char *)&c, 1);
    }
    if (out->n >= 40)
        buf_str(out, "...");
}

/* Run one case in a child; print "case <name> <verdict> <good> <want> <detail>". */
static void run_case(const bench_lib *lib, const bcase *c)
{
    int fd[2];
    pid_t pid;
    int status;
    char res[512] = "";
    ssize_t got = 0;

    fflush(stdout);
    if (pipe(fd) != 0 || (pid = fork()) < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        buf in = {0}, line = {0};
        const char *p = c->in;
        size_t n = c->len;
        char *out = NULL, msg[200];
        size_t out_len = 0;

        close(fd[0]);
        if (p == NULL) {
            make_input(c, &in);
            p = in.p, n = in.n;
        } else if (n == 0) {
            n = strlen(p);
        }
        const char *keep = c->keep ? c->keep : p;
        size_t keep_len = c->keep ? strlen(c->keep) : n;
        if (lib->roundtrip(p, n, &out, &out_len, msg, sizeof(msg)) != 0) {
            buf_fmt(&line, "%s\t%d\t", c->want == WANT_KEEP ? "REJECTS" : "rejects", c->want != WANT_KEEP);
            show(&line, msg, strlen(msg));
        } else if (out_len == keep_len && memcmp(out, keep, out_len) == 0) {
            buf_fmt(&line, "%s\t%d\t", c->want == WANT_REJECT ? "ACCEPTS" : "keeps", c->want != WANT_REJECT);
        } else {
            buf_fmt(&line, "%s\t0\t", c->want == WANT_REJECT ? "ACCEPTS" : "CHANGES");
            show(&line, out, out_len);
        }
        if (write(fd[1], line.p, line.n) < 0)
            _exit(3);
        free(out);
        free(in.p);
        free(line.p);
        _exit(0);
    }
    close(fd[1]);
    for (;;) {
        ssize_t r = read(fd[0], res + got, sizeof(res) - 1 - (size_t)got);
        if (r > 0) {
            got += r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        break;
    }
    res[got] = '\0';
    close(fd[0]);
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status))
        snprintf(res, sizeof(res), "CRASHES\t0\tsignal %d", WTERMSIG(status));
    else if (got == 0)
        snprintf(res, sizeof(res), "CRASHES\t0\texit %d", WEXITSTATUS(status));
    char *tab = strchr(res, '\t');
    char *tab2 = tab ? strchr(tab + 1, '\t') : NULL;
    if (tab2 != NULL) {
        static const char *const wants[] = {"reject", "keep", "keep-or-reject"};
        *tab2 = '\0';
        printf("case\t%s\t%s\t%s\t%s\n", c->name, res, wants[c->want], tab2 + 1);
    }
}

/*
 * Peak memory of one parse of 1 MiB made of many small values, measured in a
 * child (ru_maxrss only grows): what a hostile request can make the gateway
 * hold, before any limit of ours applies.
 */
static void bench_memory(const bench_lib *lib, const char *name, const char *unit)
{
    pid_t pid;
    int status;

    fflush(stdout);
    if ((pid = fork()) < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        buf doc = {0};
        struct rusage before, after;
        size_t sink = 0;

        buf_str(&doc, "[");
        while (doc.n < (1u << 20)) {
            buf_str(&doc, unit);
            buf_str(&doc, ",");
        }
        doc.p[doc.n - 1] = ']';
        getrusage(RUSAGE_SELF, &before);
        lib->walk(doc.p, doc.n, &sink);
        getrusage(RUSAGE_SELF, &after);
        printf("mem\t%s\t%zu\t%ld\n", name, doc.n, after.ru_maxrss - before.ru_maxrss);
        fflush(stdout);
        _exit(0);
    }
    waitpid(pid, &status, 0);
}

int main(int argc, char **argv)
{
    const bench_lib *lib = &bench_lib_under_test;
    corpus corp[4] = {{0}};
    int runs = 5, do_perf = 1, do_cases = 1;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            runs = 1;
        else if (strcmp(argv[i], "--cases") == 0)
            do_perf = 0;
        else if (strcmp(argv[i], "--perf") == 0)
            do_cases = 0;
    }
    printf("lib\t%s\t%s\n", lib->name, lib->config);
    if (do_cases)
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
            run_case(lib, &cases[i]);
    if (do_perf) {
        build_corpus(corp);
        for (int i = 0; i < 4; i++)
            bench_corpus(lib, &corp[i], runs);
        if (lib->walk_is_library) {
            bench_memory(lib, "1 MiB of [{},{},...]", "{}");
            bench_memory(lib, "1 MiB of [[],[],...]", "[]");
            bench_memory(lib, "1 MiB of [1,1,...]", "1");
            bench_memory(lib, "1 MiB of [\"\",\"\",...]", "\"\"");
        }
    }
    for (int i = 0; i < 4; i++)
        free(corp[i].doc.p);
    return 0;
}
