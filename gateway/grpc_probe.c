/*
 * The gRPC listener's self-check, for /readyz. The core accepts on its own
 * threads and tells nobody when it stops: gRPC 1.51 stopped for good at the
 * first EMFILE (CVE-2023-4785) while the gateway still said ready. So a
 * watcher thread dials the listener on loopback once a second, as a client
 * would, and waits for the core's SETTINGS frame: that proves the accept, the
 * handshake and the transport. Two misses in a row make the gateway not ready
 * (one could be a moment's load), the next answer makes it ready again.
 *
 * Over TLS (--tls-cert) the check is a TLS client first: it offers h2, as
 * gRPC clients do, and verifies nothing (it dials its own listener, whose
 * certificate tls.c checked at start; the names in it need not include
 * loopback). With --tls-client-auth=require it has no certificate the
 * server would take, so there a handshake that got as far as the server
 * asking for one is the answer: by then the core accepted, ran its
 * handshaker and (TLS 1.3) proved its key with its Finished.
 */
#include "grpc_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "log.h"
#include "mono.h"
#include "net.h"

#define PROBE_PERIOD_MS  1000
#define PROBE_TIMEOUT_MS 1000
#define PROBE_MISSES     2

/* Wait for fd to be ready for `events` until deadline (mono_ms). 1, 0 on timeout, -1 on error. */
static int wait_fd(int fd, short events, long long deadline)
{
    struct pollfd p = {.fd = fd, .events = events};

    for (;;) {
        long long left = deadline - mono_ms();
        if (left <= 0)
            return 0;
        int rc = poll(&p, 1, (int)left);
        if (rc > 0)
            return 1;
        if (rc < 0 && errno != EINTR)
            return -1;
    }
}

/* OpenSSL asks for the probe's certificate: the server sent a CertificateRequest. None is sent. */
static int cert_asked(SSL *ssl, X509 **x509, EVP_PKEY **pkey)
{
    (void)x509;
    (void)pkey;
    *(int *)SSL_get_app_data(ssl) = 1;
    return 0;
}

/*
 * Wait for what OpenSSL's last call (which returned rc) on the non-blocking
 * socket wants. 1: call it again; 0: it failed, or the deadline passed.
 */
static int tls_again(SSL *ssl, int fd, int rc, long long deadline)
{
    switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ: return wait_fd(fd, POLLIN, deadline) == 1;
    case SSL_ERROR_WANT_WRITE: return wait_fd(fd, POLLOUT, deadline) == 1;
    default: return 0;
    }
}

/* NULL when the listener answered a client preface with SETTINGS in time; else why not. */
static const char *dial(const gw_grpc_front *g)
{
    /* The client preface and an empty SETTINGS frame: the core writes its own SETTINGS on any connection,
     * but a server may wait for the preface first. */
    static const char hello[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\4\0\0\0\0\0";
    long long deadline = mono_ms() + PROBE_TIMEOUT_MS;
    const char *why = NULL;
    unsigned char hdr[9];
    size_t got = 0;
    int fd, err = 0, asked = 0, rc;
    socklen_t elen = sizeof(err);
    SSL *ssl = NULL;
    ssize_t n;

    if ((fd = socket(g->probe_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        return errno == EMFILE || errno == ENFILE ? "the gRPC listener's check has no descriptor (EMFILE)"
                                                  : "the gRPC listener's check cannot make a socket";
    if (connect(fd, (const struct sockaddr *)&g->probe_addr, g->probe_len) != 0 && errno != EINPROGRESS) {
        why = "the gRPC listener refuses connections";
        goto out;
    }
    if (wait_fd(fd, POLLOUT, deadline) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 ||
        err) {
        why = "the gRPC listener does not take connections";
        goto out;
    }
    if (g->probe_tls) {
        if ((ssl = SSL_new(g->probe_tls)) == NULL || SSL_set_fd(ssl, fd) != 1) {
            why = "the gRPC listener's check cannot start TLS";
            goto out;
        }
        SSL_set_app_data(ssl, &asked);
        while ((rc = SSL_connect(ssl)) != 1 && tls_again(ssl, fd, rc, deadline))
            ;
        /* Whether the server then refuses the missing certificate or not (1.2: in the handshake; 1.3: after).
         */
        if (g->probe_no_cert && asked)
            goto out;
        if (rc != 1) {
            why = mono_ms() >= deadline ? "the gRPC listener does not finish the TLS handshake"
                                        : "the gRPC listener fails the TLS handshake";
            goto out;
        }
        while ((rc = SSL_write(ssl, hello, (int)sizeof(hello) - 1)) <= 0 && tls_again(ssl, fd, rc, deadline))
            ;
        n = rc;
    } else {
        n = send(fd, hello, sizeof(hello) - 1, MSG_NOSIGNAL);
    }
    if (n != (ssize_t)(sizeof(hello) - 1)) {
        why = "the gRPC listener closed the check's connection";
        goto out;
    }
    while (got < sizeof(hdr)) {
        if (ssl) {
            if ((rc = SSL_read(ssl, hdr + got, (int)(sizeof(hdr) - got))) > 0)
                got += (size_t)rc;
            else if (!tls_again(ssl, fd, rc, deadline))
                break;
            continue;
        }
        if (wait_fd(fd, POLLIN, deadline) != 1)
            break;
        n = recv(fd, hdr + got, sizeof(hdr) - got, 0);
        if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) {
            why = "the gRPC listener closed the check's connection";
            goto out;
        }
        if (n > 0)
            got += (size_t)n;
    }
    if (got < sizeof(hdr))
        why = mono_ms() >= deadline ? "the gRPC listener does not answer"
                                    : "the gRPC listener closed the check's connection";
    else if (hdr[3] != 4) /* the frame type: SETTINGS comes first from an HTTP/2 server */
        why = "the gRPC listener does not speak HTTP/2";
out:
    if (ssl) {
        SSL_free(ssl);
        ERR_clear_error(); /* this thread's queue: nothing left to mislead the next check */
    }
    close(fd);
    return why;
}

static const char *check_listener(void *arg)
{
    gw_grpc_front *g = arg;
    const char *why = dial(g);

    if (why == NULL) {
        g->probe_misses = 0;
        if (atomic_exchange(&g->gw->grpc_stalled, 0))
            LOG_INFO("grpc", "the listener answers again");
    } else if (++g->probe_misses >= PROBE_MISSES && !atomic_exchange(&g->gw->grpc_stalled, 1)) {
        LOG_WARN("grpc", "%s: the gateway reports not ready", why);
    }
    return why;
}

int gw_grpc_probe_start(gw_grpc_front *g, const char *addr, int port, char *err, size_t errlen)
{
    struct sockaddr_storage *ss = &g->probe_addr;

    if (net_parse_addr(addr, ss, &g->probe_len, err, errlen) != 0)
        return -1;
    /* A wildcard is dialled on loopback: IPv4's, which a dual-stack [::] listener takes as well. */
    if (ss->ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr)) {
            struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            memset(ss, 0, sizeof(*ss));
            memcpy(ss, &s4, sizeof(s4));
            g->probe_len = sizeof(s4);
        } else {
            s6->sin6_port = htons((uint16_t)port);
        }
    }
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        if (s4->sin_addr.s_addr == htonl(INADDR_ANY))
            s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        s4->sin_port = htons((uint16_t)port);
    }
    if (g->gw->cfg->tls_cert[0]) {
        /* h2, length-prefixed, as ALPN wants it. */
        static const unsigned char h2[] = "\x02h2";
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
            SSL_CTX_set_alpn_protos(ctx, h2, sizeof(h2) - 1) != 0) {
            SSL_CTX_free(ctx);
            ERR_clear_error();
            snprintf(err, errlen, "the gRPC listener's check cannot make a TLS context");
            return -1;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_client_cert_cb(ctx, cert_asked);
        g->probe_tls = ctx;
        g->probe_no_cert = strcmp(g->gw->cfg->tls_client_auth, "require") == 0;
    }
    g->probe = watch_start("gw-grpc-probe", PROBE_PERIOD_MS, 0, check_listener, g, err, errlen);
    return g->probe ? 0 : -1;
}

void gw_grpc_probe_stop(gw_grpc_front *g)
{
    watch_stop(g->probe);
    g->probe = NULL;
    SSL_CTX_free(g->probe_tls);
    g->probe_tls = NULL;
}
