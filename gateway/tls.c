#include "tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/credentials.h>
#include <grpc/grpc_security.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* One loaded set: what both ports serve, from one reading of the files. */
typedef struct tls_set {
    SSL_CTX *http;
    grpc_ssl_server_certificate_config *grpc;
} tls_set;

struct gw_tls {
    const gateway_config *cfg;
    pthread_mutex_t lock; /* over both below: taken per accepted connection, and by the core's fetches */
    SSL_CTX *http;        /* in force for new HTTP connections */
    grpc_ssl_server_certificate_config *grpc_next; /* loaded, not yet fetched by the core; NULL: unchanged */
};

/* The last OpenSSL error's reason, and the queue emptied so it cannot mislead a later caller. */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();

    if (e == 0)
        snprintf(buf, len, "unknown error");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

/* A file OpenSSL cannot open says only "system lib": name the errno first. */
static int readable(const char *flag, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        snprintf(err, errlen, "%s %s: %s", flag, path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

/* An encrypted key must not make the gateway prompt on a terminal: it fails like a bad one. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

/*
 * ALPN: http/1.1 or nothing. A client that offers ALPN without http/1.1
 * (h2 only: a gRPC or HTTP/2 client on the wrong port) gets the fatal
 * no_application_protocol alert RFC 7301 asks for, a clean and immediate
 * failure rather than HTTP/1.1 bytes its HTTP/2 framing would choke on.
 * A client that offers no ALPN at all is served.
 */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;

    for (unsigned int i = 0; i < inlen;) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

int gw_tls_server_ctx(const gateway_config *cfg, struct ssl_ctx_st **out, char *err, size_t errlen)
{
    int need_ca = strcmp(cfg->tls_client_auth, "none") != 0;
    char why[256];
    SSL_CTX *ctx;

    *out = NULL;
    if (cfg->tls_cert[0] == '\0') {
        const char *stray = cfg->tls_key[0]         ? "--tls-key"
                            : cfg->tls_client_ca[0] ? "--tls-client-ca"
                            : need_ca               ? "--tls-client-auth"
                                                    : NULL;
        if (stray) {
            snprintf(err, errlen, "%s needs --tls-cert (TLS is off without a certificate)", stray);
            return -1;
        }
        return 0;
    }
    if (cfg->tls_key[0] == '\0') {
        snprintf(err, errlen, "--tls-cert needs --tls-key (the certificate's private key)");
        return -1;
    }
    if (need_ca && cfg->tls_client_ca[0] == '\0') {
        snprintf(
            err, errlen,
            "--tls-client-auth=%s needs --tls-client-ca (the CAs client certificates are checked against)",
            cfg->tls_client_auth);
        return -1;
    }
    if (readable("--tls-cert", cfg->tls_cert, err, errlen) != 0 ||
        readable("--tls-key", cfg->tls_key, err, errlen) != 0 ||
        (cfg->tls_client_ca[0] && readable("--tls-client-ca", cfg->tls_client_ca, err, errlen) != 0))
        return -1;

    ERR_clear_error();
    if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
        snprintf(err, errlen, "TLS: %s", ssl_reason(why, sizeof(why)));
        return -1;
    }
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        snprintf(err, errlen, "TLS: cannot require TLS 1.2: %s", ssl_reason(why, sizeof(why)));
        goto fail;
    }
    /*
     * The server's cipher order; no renegotiation (a client could make the
     * server redo the handshake's work at will); buffers released while a
     * connection is idle, 34 KiB each otherwise, times --max-connections.
     */
    SSL_CTX_set_options(ctx,
                        SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers) != 1) {
        snprintf(err, errlen, "--tls-ciphers %s: no TLS 1.2 cipher known by that list: %s", cfg->tls_ciphers,
                 ssl_reason(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        snprintf(err, errlen, "--tls-cert %s: not a PEM certificate (chain): %s", cfg->tls_cert,
                 ssl_reason(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
                                               ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH))
            snprintf(err, errlen, "--tls-key %s does not match the certificate of --tls-cert %s",
                     cfg->tls_key, cfg->tls_cert);
        else
            snprintf(err, errlen, "--tls-key %s: not a PEM private key (or one with a passphrase): %s",
                     cfg->tls_key, ssl_reason(why, sizeof(why)));
        ERR_clear_error();
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "--tls-key %s does not match the certificate of --tls-cert %s", cfg->tls_key,
                 cfg->tls_cert);
        ERR_clear_error();
        goto fail;
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    /* Resumed sessions with client certificates need a context id, or OpenSSL refuses them. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"ingest-http", 11);
    if (cfg->tls_client_ca[0]) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_client_ca);
        if (SSL_CTX_load_verify_locations(ctx, cfg->tls_client_ca, NULL) != 1 || names == NULL) {
            if (names)
                sk_X509_NAME_pop_free(names, X509_NAME_free);
            snprintf(err, errlen, "--tls-client-ca %s: no PEM certificate in it: %s", cfg->tls_client_ca,
                     ssl_reason(why, sizeof(why)));
            goto fail;
        }
        /* The CAs named in the CertificateRequest, so a client with several certificates picks the right one.
         */
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    /*
     * optional: a client may send no certificate, but one it sends must
     * verify (a bad one fails the handshake). require: no certificate, no
     * connection.
     */
    if (strcmp(cfg->tls_client_auth, "require") == 0)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    else if (strcmp(cfg->tls_client_auth, "optional") == 0)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    *out = ctx;
    return 0;

fail:
    SSL_CTX_free(ctx);
    return -1;
}

/* A PEM file's text, for the core (it takes text, not paths); NULL and err set when unreadable. */
static char *read_pem(const char *flag, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0, cap = 0, n;

    if (f == NULL) {
        snprintf(err, errlen, "%s %s: %s", flag, path, strerror(errno));
        return NULL;
    }
    do {
        if (cap - len < 4096) {
            char *nb = cap > (64u << 20) ? NULL : realloc(buf, cap = cap * 2 + 8192);
            if (nb == NULL) {
                snprintf(err, errlen, "%s %s: too large or out of memory", flag, path);
                goto fail;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    if (ferror(f)) {
        snprintf(err, errlen, "%s %s: %s", flag, path, strerror(errno));
        goto fail;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;

fail:
    fclose(f);
    free(buf);
    return NULL;
}

/* A key's text is wiped before its memory is given back. */
static void free_secret(char *s)
{
    if (s) {
        volatile char *v = s;
        while (*v)
            *v++ = '\0';
        free(s);
    }
}

/*
 * The texts the core is given, checked by OpenSSL first: the core would
 * refuse a broken pair only at the next handshake, with nothing said. The
 * HTTP context was read from the same paths just before: a certificate
 * that differs was replaced between the two reads, and the load fails
 * rather than put the ports on different certificates (the next check,
 * or SIGHUP, reads the files again).
 */
static int check_pem(const gateway_config *cfg, SSL_CTX *http, const char *chain, const char *key,
                     const char *roots, char *err, size_t errlen)
{
    BIO *b;
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    int ok = 0;

    if ((b = BIO_new_mem_buf(chain, -1)) != NULL)
        x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    if ((b = BIO_new_mem_buf(key, -1)) != NULL)
        k = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    if (x == NULL)
        snprintf(err, errlen, "--tls-cert %s: not a PEM certificate (chain)", cfg->tls_cert);
    else if (k == NULL)
        snprintf(err, errlen, "--tls-key %s: not a PEM private key (or one with a passphrase)", cfg->tls_key);
    else if (X509_check_private_key(x, k) != 1)
        snprintf(err, errlen, "--tls-key %s does not match the certificate of --tls-cert %s", cfg->tls_key,
                 cfg->tls_cert);
    else if (X509_cmp(x, SSL_CTX_get0_certificate(http)) != 0)
        snprintf(err, errlen, "--tls-cert %s changed while it was read", cfg->tls_cert);
    else
        ok = 1;
    X509_free(x);
    EVP_PKEY_free(k);
    if (ok && roots) {
        X509 *ca = NULL;
        if ((b = BIO_new_mem_buf(roots, -1)) != NULL)
            ca = PEM_read_bio_X509(b, NULL, NULL, NULL);
        BIO_free(b);
        if (ca == NULL) {
            snprintf(err, errlen, "--tls-client-ca %s: no PEM certificate in it", cfg->tls_client_ca);
            ok = 0;
        }
        X509_free(ca);
    }
    ERR_clear_error();
    return ok ? 0 : -1;
}

static void set_free(tls_set *s)
{
    if (s) {
        SSL_CTX_free(s->http);
        if (s->grpc)
            grpc_ssl_server_certificate_config_destroy(s->grpc);
        free(s);
    }
}

/* Both ports' TLS from one reading of the files, all of it checked; NULL with one line in err. */
static tls_set *set_load(const gateway_config *cfg, char *err, size_t errlen)
{
    tls_set *s = calloc(1, sizeof(*s));
    char *chain = NULL, *key = NULL, *roots = NULL;
    grpc_ssl_pem_key_cert_pair pair;

    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (gw_tls_server_ctx(cfg, &s->http, err, errlen) != 0)
        goto fail;
    if ((chain = read_pem("--tls-cert", cfg->tls_cert, err, errlen)) == NULL ||
        (key = read_pem("--tls-key", cfg->tls_key, err, errlen)) == NULL ||
        (cfg->tls_client_ca[0] &&
         (roots = read_pem("--tls-client-ca", cfg->tls_client_ca, err, errlen)) == NULL) ||
        check_pem(cfg, s->http, chain, key, roots, err, errlen) != 0)
        goto fail;
    pair.private_key = key;
    pair.cert_chain = chain;
    /* The config copies the PEM text. */
    if ((s->grpc = grpc_ssl_server_certificate_config_create(roots, &pair, 1)) == NULL) {
        snprintf(err, errlen, "--tls-cert %s: the gRPC core refuses the certificate or key", cfg->tls_cert);
        goto fail;
    }
    free(chain);
    free_secret(key);
    free(roots);
    return s;

fail:
    free(chain);
    free_secret(key);
    free(roots);
    set_free(s);
    return NULL;
}

int gw_tls_open(const gateway_config *cfg, gw_tls **out, char *err, size_t errlen)
{
    SSL_CTX *probe = NULL;
    tls_set *s;
    gw_tls *t;

    *out = NULL;
    /* The settings' own mistakes (a key without a certificate...), and plaintext. */
    if (gw_tls_server_ctx(cfg, &probe, err, errlen) != 0)
        return -1;
    if (probe == NULL)
        return 0;
    SSL_CTX_free(probe);
    if ((s = set_load(cfg, err, errlen)) == NULL)
        return -1;
    if ((t = calloc(1, sizeof(*t))) == NULL || pthread_mutex_init(&t->lock, NULL) != 0) {
        free(t);
        set_free(s);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    t->cfg = cfg;
    t->http = s->http;
    t->grpc_next = s->grpc; /* the core's first fetch, when the port is made */
    free(s);
    *out = t;
    return 0;
}

void gw_tls_free(gw_tls *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->http);
    if (t->grpc_next)
        grpc_ssl_server_certificate_config_destroy(t->grpc_next);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/*
 * SSL_new takes its own reference on the context, so a swap that frees the
 * old one right after leaves this connection's context alive; the lock only
 * keeps the swap from freeing it between the read and SSL_new.
 */
SSL *gw_tls_accept_ssl(gw_tls *t)
{
    SSL *ssl;

    pthread_mutex_lock(&t->lock);
    ssl = SSL_new(t->http);
    pthread_mutex_unlock(&t->lock);
    return ssl;
}

grpc_ssl_certificate_config_reload_status gw_tls_grpc_fetch(void *arg,
                                                            grpc_ssl_server_certificate_config **config)
{
    gw_tls *t = arg;
    grpc_ssl_server_certificate_config *next;

    pthread_mutex_lock(&t->lock);
    next = t->grpc_next;
    t->grpc_next = NULL;
    pthread_mutex_unlock(&t->lock);
    if (next == NULL)
        return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    *config = next; /* the core's now: it destroys it */
    return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
}

void *gw_tls_reload_load(void *arg, char *err, size_t errlen)
{
    gw_tls *t = arg;

    return set_load(t->cfg, err, errlen);
}

void gw_tls_reload_swap(void *arg, void *set)
{
    gw_tls *t = arg;
    tls_set *s = set;
    SSL_CTX *old;
    grpc_ssl_server_certificate_config *stale;

    pthread_mutex_lock(&t->lock);
    old = t->http;
    stale = t->grpc_next; /* a config loaded before but never fetched: superseded */
    t->http = s->http;
    t->grpc_next = s->grpc;
    pthread_mutex_unlock(&t->lock);
    SSL_CTX_free(old);
    if (stale)
        grpc_ssl_server_certificate_config_destroy(stale);
    free(s);
}

void gw_tls_files(const gw_tls *t, const char *files[4])
{
    size_t n = 0;

    files[n++] = t->cfg->tls_cert;
    files[n++] = t->cfg->tls_key;
    if (t->cfg->tls_client_ca[0])
        files[n++] = t->cfg->tls_client_ca;
    files[n] = NULL;
}
