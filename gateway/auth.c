#include "auth.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "gateway.h"

#define ALL_PROTOCOLS  ((1u << GW_HTTP) | (1u << GW_UDP) | (1u << GW_GRPC))
#define MAX_FILE_BYTES ((size_t)16 << 20)

static const char *const protocol_words[GW_N_PROTOCOLS] = {
    [GW_HTTP] = "http", [GW_UDP] = "udp", [GW_GRPC] = "grpc"};

/* --- the object ------------------------------------------------------------------------------------ */

static void free_strs(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void auth_free(gw_auth *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->n; i++) {
        gw_principal *p = &a->principals[i];
        free_strs(p->subjects, p->n_subjects);
        free_strs(p->sans, p->n_sans);
        free_strs(p->sources, p->n_sources);
    }
    free(a->principals);
    free(a->hashes);
    free(a->owners);
    free(a);
}

void gw_auth_hold(gw_auth *a)
{
    atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
}

void gw_auth_release(gw_auth *a)
{
    if (a && atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
        auth_free(a);
}

static void slot_lock(gw_auth_slot *s)
{
    int unlocked = 0;
    while (!atomic_compare_exchange_weak_explicit(&s->lock, &unlocked, 1, memory_order_acquire,
                                                  memory_order_relaxed)) {
        unlocked = 0;
        sched_yield();
    }
}

static void slot_unlock(gw_auth_slot *s)
{
    atomic_store_explicit(&s->lock, 0, memory_order_release);
}

/*
 * The pointer's read and the reference's increment under one short lock: a
 * swap between them could otherwise free what was just read.
 */
gw_auth *gw_auth_acquire(gateway *gw)
{
    gw_auth *a;

    slot_lock(&gw->auth);
    if ((a = gw->auth.cur) != NULL)
        gw_auth_hold(a);
    slot_unlock(&gw->auth);
    return a;
}

/*
 * A principal's counters and buckets, from the registry by name; its limits
 * point at them. `anonymous`'s quotas apply per source address: its tables
 * are made the first time a rule sets them, and kept from then on.
 */
static int link_stats(gateway *gw, gw_principal *p, int anonymous)
{
    gw_principal_stats *s = gateway_metrics_principal(&gw->metrics, p->name);

    if ((p->stats = s) == NULL)
        return -1;
    p->events = (gw_limit){.rate = {p->rate, p->rate_burst}};
    p->bytes = (gw_limit){.rate = {p->bytes_rate, p->bytes_burst}};
    if (!anonymous) {
        p->events.bucket = &s->events_bucket;
        p->bytes.bucket = &s->bytes_bucket;
        return 0;
    }
    if (p->rate > 0 && s->events_ips == NULL && (s->events_ips = gw_ip_buckets_new(GW_AUTH_IP_SLOTS)) == NULL)
        return -1;
    if (p->bytes_rate > 0 && s->bytes_ips == NULL &&
        (s->bytes_ips = gw_ip_buckets_new(GW_AUTH_IP_SLOTS)) == NULL)
        return -1;
    p->events.ips = s->events_ips;
    p->bytes.ips = s->bytes_ips;
    return 0;
}

int gw_auth_link(gateway *gw, gw_auth *next)
{
    /* Not shared yet: its principals may still be written. */
    for (size_t i = 0; i < next->n; i++)
        if (link_stats(gw, &next->principals[i], &next->principals[i] == next->anonymous) != 0)
            return -ENOMEM;
    return 0;
}

int gw_auth_swap(gateway *gw, gw_auth *next)
{
    gw_auth *old;

    if (gw_auth_link(gw, next) != 0) {
        gw_auth_release(next);
        return -ENOMEM;
    }
    slot_lock(&gw->auth);
    old = gw->auth.cur;
    gw->auth.cur = next;
    slot_unlock(&gw->auth);
    gw_auth_release(old);
    return 0;
}

void gw_auth_clear(gateway *gw)
{
    gw_auth *old;

    slot_lock(&gw->auth);
    old = gw->auth.cur;
    gw->auth.cur = NULL;
    slot_unlock(&gw->auth);
    gw_auth_release(old);
}

/* --- lookups --------------------------------------------------------------------------------------- */

int gw_auth_ct_equal(const unsigned char *x, const unsigned char *y, size_t n)
{
    /* CRYPTO_memcmp: 0 when equal, else nonzero (which value depends on the build), in constant time. */
    unsigned d = (unsigned)CRYPTO_memcmp(x, y, n);

    /* d | -d has its top bit set exactly when d is not 0: turned into 1/0 without a branch. */
    return (int)(1u ^ ((d | (0u - d)) >> (sizeof(unsigned) * 8 - 1)));
}

const gw_principal *gw_auth_by_token(const gw_auth *a, const char *token, size_t len)
{
    unsigned char h[GW_AUTH_HASH_LEN];
    size_t found = 0; /* 1 + the matching entry's index, 0: none */

    SHA256((const unsigned char *)token, len, h);
    /* Every entry compared, the match selected with a mask: the time tells nothing of which (or whether). */
    for (size_t i = 0; i < a->n_hashes; i++) {
        size_t mask = (size_t)0 - (size_t)gw_auth_ct_equal(h, a->hashes[i], sizeof(h));
        found = (found & ~mask) | ((i + 1) & mask);
    }
    OPENSSL_cleanse(h, sizeof(h));
    return found ? a->owners[found - 1] : NULL;
}

const gw_principal *gw_auth_by_cert(const gw_auth *a, const gw_peer_cert *c)
{
    if (c == NULL)
        return NULL;
    for (size_t i = 0; i < a->n; i++) {
        const gw_principal *p = &a->principals[i];
        for (size_t k = 0; k < p->n_subjects; k++)
            if (c->subject && strcmp(p->subjects[k], c->subject) == 0)
                return p;
        for (size_t k = 0; k < p->n_sans; k++)
            for (size_t j = 0; j < c->n_sans; j++)
                if (strcmp(p->sans[k], c->sans[j]) == 0)
                    return p;
    }
    return NULL;
}

int gw_principal_source_allowed(const gw_principal *p, const char *source)
{
    if (p->n_sources == 0)
        return 1;
    for (size_t i = 0; i < p->n_sources; i++)
        if (strncmp(source, p->sources[i], strlen(p->sources[i])) == 0)
            return 1;
    return 0;
}

/* --- the parser ------------------------------------------------------------------------------------ */

typedef struct parser {
    gw_auth *a;
    size_t cap;
    const char *name;
    int line;
    char *err;
    size_t errlen;
    /* Per principal, what was given already (no line twice, defaults after its last line). */
    int seen_protocols, seen_rate, seen_bytes;
    int *token_line; /* line of each hash, for the duplicate's message */
} parser;

__attribute__((format(printf, 2, 3))) static int fail(parser *ps, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(ps->err, ps->errlen, "%s:%d: %s", ps->name, ps->line, msg);
    return -1;
}

static int push_str(char ***v, size_t *n, const char *s, size_t len)
{
    char **nv = realloc(*v, (*n + 1) * sizeof(*nv));
    if (nv == NULL)
        return -ENOMEM;
    *v = nv;
    if ((nv[*n] = strndup(s, len)) == NULL)
        return -ENOMEM;
    (*n)++;
    return 0;
}

static int valid_name(const char *s, size_t len)
{
    if (len == 0 || len > GW_AUTH_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return 0;
    return 1;
}

/* The next whitespace-separated word of [*p, end): its start and length; 0 length at the end. */
static const char *word(const char **p, const char *end, size_t *len)
{
    const char *s = *p;
    while (s < end && isspace((unsigned char)*s))
        s++;
    const char *e = s;
    while (e < end && !isspace((unsigned char)*e))
        e++;
    *len = (size_t)(e - s);
    *p = e;
    return s;
}

static const char *rest(const char **p, const char *end, size_t *len)
{
    const char *s = *p;
    while (s < end && isspace((unsigned char)*s))
        s++;
    *len = (size_t)(end - s);
    *p = end;
    return s;
}

static int is(const char *w, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(w, lit, len) == 0;
}

/* Defaults of the principal just finished, and whether it can be anybody. */
static int finish_principal(parser *ps)
{
    if (ps->a->n == 0)
        return 0;
    gw_principal *p = &ps->a->principals[ps->a->n - 1];
    int anon = strcmp(p->name, "anonymous") == 0;

    if (!ps->seen_protocols)
        p->protocols = anon ? 0 : (1u << GW_HTTP) | (1u << GW_GRPC);
    ps->seen_protocols = ps->seen_rate = ps->seen_bytes = 0;
    return 0;
}

static int has_token(const gw_auth *a, const gw_principal *p)
{
    for (size_t i = 0; i < a->n_hashes; i++)
        if (a->owners[i] == p)
            return 1;
    return 0;
}

static int new_principal(parser *ps, const char *w, size_t len)
{
    gw_auth *a = ps->a;

    if (!valid_name(w, len))
        return fail(ps, "principal name '%.*s' is not 1 to %d of A-Z a-z 0-9 . _ -",
                    (int)(len > 80 ? 80 : len), w, GW_AUTH_NAME_MAX);
    for (size_t i = 0; i < a->n; i++)
        if (is(w, len, a->principals[i].name))
            return fail(ps, "principal '%.*s' is defined twice", (int)len, w);
    finish_principal(ps);
    if (a->n == ps->cap) {
        /* Owners point into the array: a principal's address must not move, so it grows before any hash. */
        return fail(ps, "more than %zu principals", ps->cap);
    }
    gw_principal *p = &a->principals[a->n++];
    memset(p, 0, sizeof(*p));
    memcpy(p->name, w, len);
    p->name[len] = '\0';
    p->auth = a;
    if (strcmp(p->name, "anonymous") == 0)
        a->anonymous = p;
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int add_hash(parser *ps, const gw_principal *p, const unsigned char *h)
{
    gw_auth *a = ps->a;

    for (size_t i = 0; i < a->n_hashes; i++)
        if (memcmp(a->hashes[i], h, GW_AUTH_HASH_LEN) == 0)
            return fail(ps, "this token hash is already %s's (line %d)", a->owners[i]->name,
                        ps->token_line[i]);
    unsigned char(*nh)[GW_AUTH_HASH_LEN] = realloc(a->hashes, (a->n_hashes + 1) * sizeof(*nh));
    if (nh == NULL)
        return fail(ps, "out of memory");
    a->hashes = nh;
    const gw_principal **no = realloc(a->owners, (a->n_hashes + 1) * sizeof(*no));
    if (no == NULL)
        return fail(ps, "out of memory");
    a->owners = no;
    int *nl = realloc(ps->token_line, (a->n_hashes + 1) * sizeof(*nl));
    if (nl == NULL)
        return fail(ps, "out of memory");
    ps->token_line = nl;
    memcpy(a->hashes[a->n_hashes], h, GW_AUTH_HASH_LEN);
    a->owners[a->n_hashes] = p;
    ps->token_line[a->n_hashes] = ps->line;
    a->n_hashes++;
    return 0;
}

static int parse_token(parser *ps, gw_principal *p, const char *w, size_t len)
{
    unsigned char h[GW_AUTH_HASH_LEN];

    if (len != 7 + 2 * GW_AUTH_HASH_LEN || strncmp(w, "sha256:", 7) != 0)
        return fail(ps, "token: expected sha256: and 64 hex digits (the SHA-256 of the token)");
    for (size_t i = 0; i < GW_AUTH_HASH_LEN; i++) {
        int hi = hexval((unsigned char)w[7 + 2 * i]), lo = hexval((unsigned char)w[8 + 2 * i]);
        if (hi < 0 || lo < 0)
            return fail(ps, "token: expected sha256: and 64 hex digits (the SHA-256 of the token)");
        h[i] = (unsigned char)(hi << 4 | lo);
    }
    return add_hash(ps, p, h);
}

/* A SAN as the certificate side writes it: "DNS:", "URI:", "email:" and "IP:" (an address in inet_ntop's
 * form). */
static int parse_san(parser *ps, gw_principal *p, const char *w, size_t len)
{
    static const char *const kinds[] = {"DNS:", "URI:", "email:", "IP:"};
    char buf[512];

    if (len == 0 || len >= sizeof(buf))
        return fail(ps, "cert san: expected DNS:, URI:, email: or IP: and a value");
    memcpy(buf, w, len);
    buf[len] = '\0';
    for (size_t k = 0; k < 4; k++) {
        size_t kl = strlen(kinds[k]);
        if (len <= kl || strncasecmp(buf, kinds[k], kl) != 0)
            continue;
        memcpy(buf, kinds[k], kl); /* the canonical spelling of the kind */
        if (k == 3) {
            unsigned char addr[16];
            char text[INET6_ADDRSTRLEN];
            int fam = strchr(buf + kl, ':') ? AF_INET6 : AF_INET;
            if (inet_pton(fam, buf + kl, addr) != 1 || inet_ntop(fam, addr, text, sizeof(text)) == NULL)
                return fail(ps, "cert san: '%s' is not an IP address", buf + kl);
            snprintf(buf + kl, sizeof(buf) - kl, "%s", text);
            len = strlen(buf);
        }
        return push_str(&p->sans, &p->n_sans, buf, len) == 0 ? 0 : fail(ps, "out of memory");
    }
    return fail(ps, "cert san: expected DNS:, URI:, email: or IP: and a value");
}

/* "1000" (events), or with bytes "10MiB": the amount in *out. 0, or -1. */
static int parse_amount(const char *w, size_t len, int bytes, double *out)
{
    char buf[64];

    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, w, len);
    buf[len] = '\0';
    if (bytes) {
        size_t n;
        if (config_parse_bytes(buf, &n) != 0)
            return -1;
        *out = (double)n;
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (errno || end == buf || *end || !(v >= 0) || v > 1e12)
        return -1;
    *out = v;
    return 0;
}

/* "1000/s", "60/m", "3600/h" (events), or with bytes "10MiB/s": per second in *out. */
static int parse_rate(const char *w, size_t len, int bytes, double *out)
{
    const char *slash = memchr(w, '/', len);
    size_t unit;
    double per;

    if (slash == NULL)
        return -1;
    unit = len - (size_t)(slash - w);
    if (unit == 2 && slash[1] == 's')
        per = 1;
    else if (unit == 2 && slash[1] == 'm')
        per = 60;
    else if (unit == 2 && slash[1] == 'h')
        per = 3600;
    else
        return -1;
    if (parse_amount(w, (size_t)(slash - w), bytes, out) != 0)
        return -1;
    *out /= per;
    return 0;
}

/* "rate 1000/s [burst 2000]" or "bytes 10MiB/s [burst 20MiB]": the rest of the line after the keyword. */
static int parse_quota(parser *ps, const char *kw, const char *s, const char *end, int bytes, double *rate,
                       double *burst)
{
    size_t len;
    const char *w = word(&s, end, &len);

    if (parse_rate(w, len, bytes, rate) != 0)
        return fail(ps, "%s: expected %s", kw,
                    bytes ? "bytes a period, like 10MiB/s (/s, /m, /h)"
                          : "events a period, like 1000/s (/s, /m, /h)");
    w = word(&s, end, &len);
    if (len == 0) {
        *burst = *rate < 1 ? 1 : *rate;
        return 0;
    }
    if (!is(w, len, "burst"))
        return fail(ps, "%s: expected 'burst' after the rate, not '%.*s'", kw, (int)(len > 40 ? 40 : len), w);
    w = word(&s, end, &len);
    if (parse_amount(w, len, bytes, burst) != 0 || *burst < 1)
        return fail(ps, "%s: burst: expected %s of at least 1", kw, bytes ? "a size (20MiB)" : "a number");
    word(&s, end, &len);
    if (len)
        return fail(ps, "%s: unexpected words after the burst", kw);
    return 0;
}

static int parse_line(parser *ps, const char *s, const char *end)
{
    gw_auth *a = ps->a;
    gw_principal *p = a->n ? &a->principals[a->n - 1] : NULL;
    size_t len, vlen;
    const char *kw = word(&s, end, &len), *v;

    if (len == 0)
        return 0;
    if (is(kw, len, "principal")) {
        v = word(&s, end, &vlen);
        word(&s, end, &len);
        if (vlen == 0 || len)
            return fail(ps, "principal: expected one name");
        return new_principal(ps, v, vlen);
    }
    if (p == NULL)
        return fail(ps, "'%.*s' before any 'principal' line", (int)(len > 40 ? 40 : len), kw);
    int anon = p == a->anonymous;
    if (is(kw, len, "token")) {
        v = word(&s, end, &vlen);
        word(&s, end, &len);
        if (len)
            return fail(ps, "token: expected one sha256:... value");
        if (anon)
            return fail(ps, "anonymous has no token: it is who shows none");
        return parse_token(ps, p, v, vlen);
    }
    if (is(kw, len, "cert")) {
        v = word(&s, end, &vlen);
        if (anon)
            return fail(ps, "anonymous has no certificate: it is who shows none");
        if (is(v, vlen, "subject")) {
            v = rest(&s, end, &vlen);
            if (vlen == 0)
                return fail(ps, "cert subject: expected a subject in RFC 2253 form, like CN=billing,O=Acme");
            return push_str(&p->subjects, &p->n_subjects, v, vlen) == 0 ? 0 : fail(ps, "out of memory");
        }
        if (is(v, vlen, "san")) {
            v = word(&s, end, &vlen);
            word(&s, end, &len);
            if (len)
                return fail(ps, "cert san: expected one value");
            return parse_san(ps, p, v, vlen);
        }
        return fail(ps, "cert: expected 'subject' or 'san'");
    }
    if (is(kw, len, "source")) {
        v = rest(&s, end, &vlen);
        if (vlen == 0)
            return fail(ps, "source: expected a source prefix");
        return push_str(&p->sources, &p->n_sources, v, vlen) == 0 ? 0 : fail(ps, "out of memory");
    }
    if (is(kw, len, "protocols")) {
        if (ps->seen_protocols++)
            return fail(ps, "a second 'protocols' line for %s", p->name);
        p->protocols = 0;
        while ((v = word(&s, end, &vlen)), vlen) {
            int k;
            for (k = 0; k < GW_N_PROTOCOLS; k++)
                if (is(v, vlen, protocol_words[k]))
                    break;
            if (k == GW_N_PROTOCOLS)
                return fail(ps, "protocols: '%.*s' is not http, grpc or udp", (int)(vlen > 40 ? 40 : vlen),
                            v);
            p->protocols |= 1u << k;
        }
        if (p->protocols == 0)
            return fail(ps, "protocols: expected one or more of http, grpc, udp");
        return 0;
    }
    if (is(kw, len, "rate")) {
        if (ps->seen_rate++)
            return fail(ps, "a second 'rate' line for %s", p->name);
        return parse_quota(ps, "rate", s, end, 0, &p->rate, &p->rate_burst);
    }
    if (is(kw, len, "bytes")) {
        if (ps->seen_bytes++)
            return fail(ps, "a second 'bytes' line for %s", p->name);
        return parse_quota(ps, "bytes", s, end, 1, &p->bytes_rate, &p->bytes_burst);
    }
    return fail(ps, "unknown keyword '%.*s' (principal, token, cert, source, protocols, rate, bytes)",
                (int)(len > 40 ? 40 : len), kw);
}

/* Principals in the text: counted first, so the array never moves once hashes point into it. */
static size_t count_principals(const char *text, size_t len)
{
    size_t n = 0;
    const char *p = text, *end = text + len;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end, *s = p;
        size_t wl;
        const char *w = word(&s, e, &wl);
        if (is(w, wl, "principal"))
            n++;
        p = nl ? nl + 1 : end;
    }
    return n;
}

gw_auth *gw_auth_parse(const char *text, size_t len, const char *name, char *err, size_t errlen)
{
    parser ps = {.name = name, .err = err, .errlen = errlen};
    const char *p = text, *end = text + len;
    int rc = 0;

    if ((ps.a = calloc(1, sizeof(*ps.a))) == NULL) {
        snprintf(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    atomic_init(&ps.a->refs, 1);
    ps.cap = count_principals(text, len);
    if (ps.cap && (ps.a->principals = calloc(ps.cap, sizeof(*ps.a->principals))) == NULL) {
        snprintf(err, errlen, "%s: out of memory", name);
        auth_free(ps.a);
        return NULL;
    }
    while (rc == 0 && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        ps.line++;
        /* A comment: '#' at the line's start or after a blank (a '#' inside a word is the word's). */
        for (const char *c = p; c < e; c++)
            if (*c == '#' && (c == p || isspace((unsigned char)c[-1]))) {
                e = c;
                break;
            }
        while (e > p && isspace((unsigned char)e[-1]))
            e--;
        if (memchr(p, '\0', (size_t)(e - p)))
            rc = fail(&ps, "a NUL byte");
        else
            rc = parse_line(&ps, p, e);
        p = nl ? nl + 1 : end;
    }
    if (rc == 0) {
        finish_principal(&ps);
        /* A principal nobody can be is a mistake (a token line lost in an edit), not a rule. */
        for (size_t i = 0; i < ps.a->n; i++) {
            gw_principal *q = &ps.a->principals[i];
            if (q != ps.a->anonymous && q->n_subjects == 0 && q->n_sans == 0 && !has_token(ps.a, q)) {
                snprintf(err, errlen, "%s: principal '%s' has no token or cert line: nobody can be it", name,
                         q->name);
                rc = -1;
                break;
            }
        }
    }
    free(ps.token_line);
    if (rc != 0) {
        auth_free(ps.a);
        return NULL;
    }
    return ps.a;
}

gw_auth *gw_auth_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, n;

    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    do {
        if (len == cap) {
            char *nb = cap >= MAX_FILE_BYTES ? NULL : realloc(buf, cap = cap ? cap * 2 : 4096);
            if (nb == NULL) {
                snprintf(err, errlen, "%s: %s", path,
                         cap > MAX_FILE_BYTES ? "larger than 16 MiB" : "out of memory");
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    if (ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    gw_auth *a = gw_auth_parse(buf ? buf : "", len, path, err, errlen);
    free(buf);
    return a;
}

gw_auth *gw_auth_from_token(const char *token, char *err, size_t errlen)
{
    unsigned char h[GW_AUTH_HASH_LEN];
    char text[200] = "principal default\n  token sha256:";
    size_t at = strlen(text);

    SHA256((const unsigned char *)token, strlen(token), h);
    for (size_t i = 0; i < sizeof(h); i++)
        at += (size_t)snprintf(text + at, sizeof(text) - at, "%02x", h[i]);
    snprintf(text + at, sizeof(text) - at, "\n  protocols http grpc\nprincipal anonymous\n  protocols udp\n");
    OPENSSL_cleanse(h, sizeof(h));
    gw_auth *a = gw_auth_parse(text, strlen(text), "--auth-token", err, errlen);
    OPENSSL_cleanse(text, sizeof(text));
    return a;
}

gw_auth *gw_auth_open(char *err, size_t errlen)
{
    static const char text[] = "principal anonymous\n  protocols http grpc udp\n";
    gw_auth *a = gw_auth_parse(text, sizeof(text) - 1, "(no auth)", err, errlen);

    if (a)
        a->ignore_tokens = 1;
    return a;
}

gw_auth *gw_auth_from_config(const gateway_config *cfg, char *err, size_t errlen)
{
    int file = cfg->auth_file && cfg->auth_file[0], token = cfg->auth_token && cfg->auth_token[0];

    if (file && token) {
        snprintf(err, errlen, "--auth-file and --auth-token: give one (the file can hold the token's hash)");
        return NULL;
    }
    if (file)
        return gw_auth_load(cfg->auth_file, err, errlen);
    if (token)
        return gw_auth_from_token(cfg->auth_token, err, errlen);
    return gw_auth_open(err, errlen);
}

/* --- certificates ---------------------------------------------------------------------------------- */

void gw_peer_cert_free(gw_peer_cert *c)
{
    if (c == NULL)
        return;
    free(c->subject);
    free_strs(c->sans, c->n_sans);
    free(c);
}

static int push_san(gw_peer_cert *c, const char *kind, const char *v, size_t len)
{
    size_t kl = strlen(kind);
    char **ns = realloc(c->sans, (c->n_sans + 1) * sizeof(*ns));
    char *s;

    if (ns == NULL)
        return -ENOMEM;
    c->sans = ns;
    if ((s = malloc(kl + len + 1)) == NULL)
        return -ENOMEM;
    memcpy(s, kind, kl);
    memcpy(s + kl, v, len);
    s[kl + len] = '\0';
    ns[c->n_sans++] = s;
    return 0;
}

gw_peer_cert *gw_peer_cert_from_x509(void *x509)
{
    X509 *x = x509;
    gw_peer_cert *c = calloc(1, sizeof(*c));
    BIO *bio = BIO_new(BIO_s_mem());
    GENERAL_NAMES *names = NULL;
    char *mem;
    long n;

    if (c == NULL || bio == NULL || X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) < 0)
        goto fail;
    n = BIO_get_mem_data(bio, &mem);
    if ((c->subject = strndup(mem ? mem : "", (size_t)(n > 0 ? n : 0))) == NULL)
        goto fail;
    names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        const ASN1_STRING *s = NULL;
        const char *kind = NULL;
        int rc = 0;
        switch (g->type) {
        case GEN_DNS: kind = "DNS:", s = g->d.dNSName; break;
        case GEN_URI: kind = "URI:", s = g->d.uniformResourceIdentifier; break;
        case GEN_EMAIL: kind = "email:", s = g->d.rfc822Name; break;
        case GEN_IPADD: {
            char text[INET6_ADDRSTRLEN];
            int len = ASN1_STRING_length(g->d.iPAddress);
            int fam = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
            if (fam && inet_ntop(fam, ASN1_STRING_get0_data(g->d.iPAddress), text, sizeof(text)))
                rc = push_san(c, "IP:", text, strlen(text));
            break;
        }
        default: break;
        }
        if (s) {
            const char *v = (const char *)ASN1_STRING_get0_data(s);
            size_t len = (size_t)ASN1_STRING_length(s);
            /* A name with a NUL inside would compare as its prefix: not an identity. */
            if (memchr(v, '\0', len) == NULL)
                rc = push_san(c, kind, v, len);
        }
        if (rc != 0)
            goto fail;
    }
    GENERAL_NAMES_free(names);
    BIO_free(bio);
    return c;

fail:
    GENERAL_NAMES_free(names);
    BIO_free(bio);
    gw_peer_cert_free(c);
    return NULL;
}
