#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

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

void gw_tls_ctx_free(struct ssl_ctx_st *ctx)
{
    SSL_CTX_free(ctx);
}
