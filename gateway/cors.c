/* CORS and webhook handshake headers for the HTTP front end (cors.h). */
#include "cors.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* What a browser may send with a preflighted POST: what the ingest path reads, and no more. */
static const char *const allowed_headers[] = {"content-type", "content-encoding", "authorization",
                                              "ingest-ack"};

/* Sent when a preflight asks for more than is allowed: the browser then refuses the page's request. */
#define ALLOWED_HEADERS_LINE "Content-Type, Content-Encoding, Authorization, Ingest-Ack"

/* What a page may read of an answer beyond the safelisted headers: when to retry, how to authenticate. */
#define EXPOSED_HEADERS_LINE "Retry-After, WWW-Authenticate"

/* An echoed Access-Control-Request-Headers longer than this is answered with the fixed list instead. */
#define MAX_ECHO 512

/*
 * An origin as browsers serialize it (the Fetch spec's ASCII serialization):
 * scheme "://" host [":" port], nothing after. A trailing slash or a path is
 * the usual slip, and would never match: say so at start, not by silence.
 */
static int origin_valid(const char *o, size_t n, char *err, size_t errlen)
{
    size_t i = 0;

    if (n == 0 || n > GW_CORS_MAX_ORIGIN) {
        snprintf(err, errlen, "--cors-origins: an origin must be 1 to %d characters", GW_CORS_MAX_ORIGIN);
        return -1;
    }
    if (!isalpha((unsigned char)o[0]))
        goto bad;
    while (i < n && (isalnum((unsigned char)o[i]) || o[i] == '+' || o[i] == '-' || o[i] == '.'))
        i++;
    if (n - i < 4 || strncmp(o + i, "://", 3) != 0)
        goto bad;
    for (i += 3; i < n; i++) {
        unsigned char ch = (unsigned char)o[i];
        if (!isalnum(ch) && ch != '.' && ch != '-' && ch != '_' && ch != ':' && ch != '[' && ch != ']')
            goto bad;
    }
    return 0;
bad:
    snprintf(err, errlen,
             "--cors-origins: '%.*s' is not an origin (scheme://host[:port], no path or trailing slash)",
             (int)(n > 100 ? 100 : n), o);
    return -1;
}

int gw_cors_init(gw_cors *c, const char *list, int credentials, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    c->credentials = credentials;
    for (const char *p = list ? list : ""; *p;) {
        const char *comma = strchr(p, ','), *end = comma ? comma : p + strlen(p);
        const char *s = p, *e = end;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        p = comma ? comma + 1 : end;
        if (s == e)
            continue;
        if (e - s == 1 && *s == '*') {
            c->any = 1;
            continue;
        }
        if (origin_valid(s, (size_t)(e - s), err, errlen) != 0)
            goto fail;
        char **o = realloc(c->origins, (c->n + 1) * sizeof(*o));
        if (o == NULL)
            goto nomem;
        c->origins = o;
        if ((o[c->n] = strndup(s, (size_t)(e - s))) == NULL)
            goto nomem;
        c->n++;
    }
    if (c->any && c->n > 0) {
        snprintf(err, errlen, "--cors-origins: '*' stands alone, not in a list of origins");
        goto fail;
    }
    if (c->any && credentials) {
        snprintf(err, errlen, "%s",
                 "--cors-origins '*' with --cors-credentials would let every web site send with its "
                 "visitors' cookies and client certificates: list the origins");
        goto fail;
    }
    c->on = c->any || c->n > 0;
    return 0;
nomem:
    snprintf(err, errlen, "--cors-origins: out of memory");
fail:
    gw_cors_free(c);
    return -1;
}

void gw_cors_free(gw_cors *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->origins[i]);
    free(c->origins);
    c->origins = NULL;
    c->n = 0;
    c->on = 0;
}

const char *gw_cors_allow_origin(const gw_cors *c, const char *origin)
{
    if (!c->on || origin == NULL || *origin == '\0')
        return NULL;
    if (c->any)
        return "*";
    /* Schemes and hosts are case-insensitive: browsers send lower case, people may list otherwise. */
    for (size_t i = 0; i < c->n; i++)
        if (strcasecmp(c->origins[i], origin) == 0)
            return origin;
    return NULL;
}

static int header_allowed(const char *name, size_t n)
{
    if (n > 3 && strncasecmp(name, "ce-", 3) == 0)
        return 1;
    for (size_t i = 0; i < sizeof(allowed_headers) / sizeof(allowed_headers[0]); i++)
        if (strlen(allowed_headers[i]) == n && strncasecmp(allowed_headers[i], name, n) == 0)
            return 1;
    return 0;
}

static int is_tchar(unsigned char ch)
{
    return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

int gw_cors_headers_allowed(const char *list)
{
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (is_tchar((unsigned char)*p))
            p++;
        if (p > s && !header_allowed(s, (size_t)(p - s)))
            return 0;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p && *p != ',')
            return 0; /* not a list of field names */
    }
    return 1;
}

/* Append one header line to out if it fits whole; the new length. */
static size_t line(char *out, size_t size, size_t n, const char *name, const char *value)
{
    size_t need = strlen(name) + 2 + strlen(value) + 2;

    if (n + need + 1 > size)
        return n;
    n += (size_t)snprintf(out + n, size - n, "%s: %s\r\n", name, value);
    return n;
}

size_t gw_cors_headers(const gw_cors *c, const char *origin, int preflight, const char *req_headers,
                       char *out, size_t size)
{
    size_t n = 0;
    const char *allow;

    if (size == 0)
        return 0;
    out[0] = '\0';
    if (!c->on)
        return 0;
    /* The answer depends on Origin (and a preflight's on the headers asked for): caches must not mix them. */
    n = line(out, size, n, "Vary", preflight ? "Origin, Access-Control-Request-Headers" : "Origin");
    if ((allow = gw_cors_allow_origin(c, origin)) == NULL)
        return n;
    n = line(out, size, n, "Access-Control-Allow-Origin", allow);
    if (c->credentials)
        n = line(out, size, n, "Access-Control-Allow-Credentials", "true");
    if (!preflight)
        return line(out, size, n, "Access-Control-Expose-Headers", EXPOSED_HEADERS_LINE);
    n = line(out, size, n, "Access-Control-Allow-Methods", "POST, OPTIONS");
    if (req_headers && *req_headers) {
        /* Echoed when all of it is allowed (so ce-* names are listed one by one), else the fixed list. */
        int echo = strlen(req_headers) <= MAX_ECHO && gw_cors_headers_allowed(req_headers);
        n = line(out, size, n, "Access-Control-Allow-Headers", echo ? req_headers : ALLOWED_HEADERS_LINE);
    }
    char age[16];
    snprintf(age, sizeof(age), "%d", GW_CORS_MAX_AGE);
    return line(out, size, n, "Access-Control-Max-Age", age);
}

int gw_webhook_origin_ok(const char *origin)
{
    size_t n = 0;

    for (; origin[n]; n++) {
        unsigned char ch = (unsigned char)origin[n];
        if (!isalnum(ch) && ch != '.' && ch != '-' && ch != '_' && ch != ':')
            return 0;
    }
    return n > 0 && n <= 253;
}

int gw_webhook_rate_parse(const char *s, long long *rate)
{
    long long v = 0;

    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 1000000000000LL)
            return -1;
        v = v * 10 + (*s - '0');
    }
    if (v <= 0)
        return -1;
    *rate = v;
    return 0;
}
