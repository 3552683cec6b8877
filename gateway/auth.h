/*
 * Principals: who a caller is (a bearer token, a verified client
 * certificate, or nobody: `anonymous`), and what it may do (protocols,
 * CloudEvents source prefixes, quota numbers), from --auth-file or the
 * --auth-token shorthand. docs/security.md describes the file.
 *
 * A gw_auth is immutable once loaded and reference-counted: the gateway
 * holds the current one behind a pointer that gw_auth_swap() replaces (a
 * reload), and every admission holds the one it started with until it ends,
 * so a swap never changes the rules under a request in flight. What must
 * outlive a swap, the per-principal counters, lives in the metrics'
 * registry (metrics.h), keyed by name; each principal points at its entry.
 */
#ifndef INGEST_GATEWAY_AUTH_H
#define INGEST_GATEWAY_AUTH_H

#include <stdatomic.h>
#include <stddef.h>

#include "metrics.h"
#include "reason.h"

#define GW_AUTH_NAME_MAX 64
#define GW_AUTH_HASH_LEN 32 /* SHA-256 */
/* Slots of `anonymous`'s per-source-address quota tables (quota.h): ~1.7 MB each, made only with a quota. */
#define GW_AUTH_IP_SLOTS 65536

struct gateway;
struct gateway_config;
typedef struct gw_auth gw_auth;

typedef struct gw_principal {
    char name[GW_AUTH_NAME_MAX + 1];
    gw_auth *auth;      /* the object it belongs to: holding a principal is holding a reference on it */
    unsigned protocols; /* bit (1u << gw_protocol) per protocol it may use */
    char **subjects;    /* `cert subject`, RFC 2253 */
    size_t n_subjects;
    char **sans; /* `cert san`, "DNS:name", "URI:...", "email:...", "IP:addr" */
    size_t n_sans;
    char **sources; /* allowed source prefixes; none: any source */
    size_t n_sources;
    /* Quotas, read by the token buckets (0 rate: unlimited); events a second and bytes a second. */
    double rate, rate_burst, bytes_rate, bytes_burst;
    gw_principal_stats *stats; /* the registry's entry, set by gw_auth_swap(); NULL before */
    /* Its quotas as the admission applies them (set by gw_auth_swap(): the buckets are the stats'). */
    gw_limit events, bytes;
} gw_principal;

/* What a verified client certificate says of its holder. */
typedef struct gw_peer_cert {
    char *subject; /* RFC 2253 (XN_FLAG_RFC2253) */
    char **sans;   /* "DNS:...", "URI:...", "email:...", "IP:..." */
    size_t n_sans;
} gw_peer_cert;

struct gw_auth {
    atomic_int refs;
    gw_principal *principals; /* in file order */
    size_t n;
    const gw_principal *anonymous; /* NULL: callers without identity are refused */
    int ignore_tokens;             /* no auth configured: a token identifies nobody and refuses nobody */
    /* Every token hash of every principal, and whose it is, for the constant-time lookup. */
    unsigned char (*hashes)[GW_AUTH_HASH_LEN];
    const gw_principal **owners;
    size_t n_hashes;
};

/* The gateway's current gw_auth: what gw_auth_acquire() reads and gw_auth_swap() replaces. */
typedef struct gw_auth_slot {
    atomic_int lock; /* a spin lock over the pointer read and the reference taken; zero is unlocked */
    gw_auth *cur;
} gw_auth_slot;

/*
 * Read an auth file. NULL with one line "PATH:LINE: what is wrong" (or
 * "PATH: why" when it cannot be read) in err.
 */
gw_auth *gw_auth_load(const char *path, char *err, size_t errlen);
/* The same from text in memory; `name` is what errors call it. */
gw_auth *gw_auth_parse(const char *text, size_t len, const char *name, char *err, size_t errlen);
/* --auth-token T: `default` (the token, http grpc) and `anonymous` (udp). */
gw_auth *gw_auth_from_token(const char *token, char *err, size_t errlen);
/* Neither: everyone is `anonymous`, every protocol and source, tokens ignored. */
gw_auth *gw_auth_open(char *err, size_t errlen);
/* What the settings ask for: --auth-file, --auth-token, or neither (both: an error). */
gw_auth *gw_auth_from_config(const struct gateway_config *cfg, char *err, size_t errlen);

/* The current object with a reference taken (NULL when none was installed); any thread. */
gw_auth *gw_auth_acquire(struct gateway *gw);
void gw_auth_hold(gw_auth *a);
void gw_auth_release(gw_auth *a);
/*
 * The part of gw_auth_swap() that can fail: each principal's counters and
 * buckets from the registry (the same entry again for a name already
 * linked). 0, or -ENOMEM with `next` still the caller's. A reload links
 * when it loads, so that its swap cannot fail.
 */
int gw_auth_link(struct gateway *gw, gw_auth *next);
/*
 * Install `next` (the gateway takes its reference) and let go of the old
 * one: requests holding it finish with it. Binds next's principals to the
 * gateway's per-principal counters first. -ENOMEM (next not installed, and
 * released) or 0; always 0 once linked.
 */
int gw_auth_swap(struct gateway *gw, gw_auth *next);
/* At the gateway's end: drop the current object. */
void gw_auth_clear(struct gateway *gw);

/* The principal whose token this is (the bearer token's bytes); NULL: nobody's. Constant time in the table.
 */
const gw_principal *gw_auth_by_token(const gw_auth *a, const char *token, size_t len);
/* The first principal, in file order, whose cert lines match this certificate; NULL: none. */
const gw_principal *gw_auth_by_cert(const gw_auth *a, const gw_peer_cert *c);
/* May p publish an event with this source (a prefix matches, or p lists none). */
int gw_principal_source_allowed(const gw_principal *p, const char *source);
static inline int gw_principal_may_use(const gw_principal *p, gw_protocol proto)
{
    return (p->protocols >> proto) & 1u;
}

/*
 * 1 when the n bytes at x and y are equal, 0 otherwise, in time that
 * depends on n only: no early exit, no branch on the data.
 */
int gw_auth_ct_equal(const unsigned char *x, const unsigned char *y, size_t n);

/* A verified certificate's identity; NULL on no memory. `x509` is an X509 *. */
gw_peer_cert *gw_peer_cert_from_x509(void *x509);
void gw_peer_cert_free(gw_peer_cert *c);

#endif
