/*
 * gateway/grpc: the server's channel arguments, as the core will read them.
 * Every limit a hostile client is held to is there with its setting's value
 * (metadata, streams, connections, the message, the resource quota, the read
 * buffer, pings, idle and age), BDP probing is off, and an age of 0 sets no
 * age at all.
 *
 * gateway/grpc_probe: a listener that takes connections but never answers
 * (gRPC 1.51 after EMFILE: the kernel's backlog still completes handshakes)
 * makes the gateway not ready within a few checks; once it answers with
 * SETTINGS, ready again. Over TLS: a completed handshake without SETTINGS
 * is no answer, nor is a plaintext server; under --tls-client-auth=require
 * a server asking for the certificate the check does not have is one.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cmocka.h>

#include "grpc_int.h"

static gateway_config cfg;
static gateway gw;
static grpc_arg args[GW_GRPC_SERVER_ARGS];

static const grpc_arg *find(size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(args[i].key, key) == 0)
            return &args[i];
    return NULL;
}

static int int_value(size_t n, const char *key)
{
    const grpc_arg *a = find(n, key);

    assert_non_null(a);
    assert_int_equal(a->type, GRPC_ARG_INTEGER);
    return a->value.integer;
}

static int setup(void **state)
{
    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    memset(&gw, 0, sizeof(gw));
    cfg.max_connections = 8192;
    cfg.grpc_max_connection_idle_ms = 300000;
    cfg.grpc_max_connection_age_ms = 0;
    cfg.grpc_handshake_timeout_ms = 10000;
    cfg.tls_cert = (char *)""; /* plaintext; as the settings table leaves it */
    cfg.tls_client_auth = (char *)"none";
    gw.cfg = &cfg;
    gw.lim.max_request_bytes = 8 << 20;
    return 0;
}

static void test_every_limit_is_set_from_the_settings(void **state)
{
    int quota;
    size_t n = gw_grpc_server_args(&gw, (grpc_resource_quota *)&quota, args);

    (void)state;
    assert_int_equal(int_value(n, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH), 8 << 20);
    assert_int_equal(int_value(n, GRPC_ARG_ALLOW_REUSEPORT), 0);
    assert_int_equal(int_value(n, GRPC_ARG_ABSOLUTE_MAX_METADATA_SIZE), GW_GRPC_MAX_METADATA_HARD);
    assert_true(int_value(n, GRPC_ARG_MAX_METADATA_SIZE) <= GW_GRPC_MAX_METADATA_HARD);
    assert_int_equal(int_value(n, GRPC_ARG_MAX_CONCURRENT_STREAMS), GW_GRPC_MAX_STREAMS);
    assert_int_equal(int_value(n, GRPC_ARG_MAX_ALLOWED_INCOMING_CONNECTIONS), 8192);
    assert_int_equal(int_value(n, GRPC_ARG_HTTP2_BDP_PROBE), 0);
    assert_int_equal(int_value(n, GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES), GW_GRPC_STREAM_WINDOW);
    assert_int_equal(int_value(n, GRPC_ARG_TCP_MAX_READ_BUFFER_SIZE), GW_GRPC_READ_BUFFER);
    assert_true(int_value(n, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS) > 0);
    assert_true(int_value(n, GRPC_ARG_HTTP2_MAX_PING_STRIKES) > 0);
    assert_int_equal(int_value(n, GRPC_ARG_MAX_CONNECTION_IDLE_MS), 300000);
    assert_int_equal(int_value(n, GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS), 10000);
    const grpc_arg *q = find(n, GRPC_ARG_RESOURCE_QUOTA);
    assert_non_null(q);
    assert_int_equal(q->type, GRPC_ARG_POINTER);
    assert_ptr_equal(q->value.pointer.p, &quota);
    assert_ptr_equal(q->value.pointer.vtable, grpc_resource_quota_arg_vtable());
}

static void test_no_age_unless_asked(void **state)
{
    size_t n = gw_grpc_server_args(&gw, NULL, args);

    (void)state;
    assert_null(find(n, GRPC_ARG_MAX_CONNECTION_AGE_MS));
    assert_null(find(n, GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS));
    cfg.grpc_max_connection_age_ms = 60000;
    n = gw_grpc_server_args(&gw, NULL, args);
    assert_int_equal(int_value(n, GRPC_ARG_MAX_CONNECTION_AGE_MS), 60000);
    assert_int_equal(int_value(n, GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS), GW_GRPC_AGE_GRACE_MS);
}

static void test_large_settings_are_capped_not_wrapped(void **state)
{
    (void)state;
    gw.lim.max_request_bytes = (size_t)1 << 40;
    cfg.max_connections = 1048576;
    size_t n = gw_grpc_server_args(&gw, NULL, args);
    assert_int_equal(int_value(n, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH), INT32_MAX);
    assert_int_equal(int_value(n, GRPC_ARG_MAX_ALLOWED_INCOMING_CONNECTIONS), 1048576);
}

/* A TCP listener on 127.0.0.1 that accepts nothing (yet): its port in *port. */
static int silent_listener(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 64), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static atomic_int serving;

/* From the first accept on, answer every connection with an empty SETTINGS frame, as the core does. */
static void *answer_settings(void *arg)
{
    static const char settings[] = "\0\0\0\4\0\0\0\0\0";
    int lfd = *(int *)arg;

    while (atomic_load(&serving)) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            break;
        (void)!write(fd, settings, sizeof(settings) - 1);
        close(fd);
    }
    return NULL;
}

static int wait_stalled(gateway *g, int want, int ms)
{
    for (; ms > 0 && atomic_load(&g->grpc_stalled) != want; ms -= 50)
        usleep(50000);
    return atomic_load(&g->grpc_stalled);
}

static void test_probe_reports_a_listener_that_does_not_answer(void **state)
{
    static gw_grpc_front front;
    char addr[64], err[128];
    pthread_t tid;
    int port, lfd = silent_listener(&port);

    (void)state;
    memset(&front, 0, sizeof(front));
    front.gw = &gw;
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    assert_int_equal(gw_grpc_probe_start(&front, addr, port, err, sizeof(err)), 0);
    assert_int_equal(wait_stalled(&gw, 1, 5000), 1);
    atomic_store(&serving, 1);
    assert_int_equal(pthread_create(&tid, NULL, answer_settings, &lfd), 0);
    assert_int_equal(wait_stalled(&gw, 0, 5000), 0);
    gw_grpc_probe_stop(&front);
    atomic_store(&serving, 0);
    shutdown(lfd, SHUT_RDWR);
    pthread_join(tid, NULL);
    close(lfd);
}

/* A TLS server context with a throwaway self-signed P-256 certificate; require: it wants a client's. */
static SSL_CTX *server_ctx(int require)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();

    assert_non_null(ctx);
    assert_non_null(key);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"probe",
                               -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, key);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
    if (require) {
        X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), x);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    X509_free(x);
    EVP_PKEY_free(key);
    return ctx;
}

typedef struct tls_server {
    int lfd;
    SSL_CTX *ctx;        /* NULL: plaintext */
    atomic_int settings; /* send SETTINGS after the handshake */
    atomic_int stop;
} tls_server;

/* Accept, handshake (as far as the client gets), then SETTINGS or nothing; one connection at a time. */
static void *serve_tls(void *arg)
{
    static const char settings[] = "\0\0\0\4\0\0\0\0\0";
    tls_server *t = arg;
    char buf[256];

    while (!atomic_load(&t->stop)) {
        int fd = accept(t->lfd, NULL, NULL);
        if (fd < 0)
            break;
        struct timeval tv = {.tv_sec = 2};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (t->ctx == NULL) {
            (void)!write(fd, settings, sizeof(settings) - 1);
        } else {
            SSL *ssl = SSL_new(t->ctx);
            SSL_set_fd(ssl, fd);
            if (SSL_accept(ssl) == 1) {
                if (atomic_load(&t->settings))
                    SSL_write(ssl, settings, sizeof(settings) - 1);
                while (SSL_read(ssl, buf, sizeof(buf)) > 0) /* until the check lets go */
                    ;
            }
            SSL_free(ssl);
        }
        close(fd);
    }
    return NULL;
}

/* The check against t's server with --tls-client-auth=mode: stalled, once it settled (within 5 s). */
static int tls_probe_stalled(tls_server *t, const char *mode, int want)
{
    static gw_grpc_front front;
    char addr[64], err[128];
    pthread_t tid;
    int port, got;

    t->lfd = silent_listener(&port);
    atomic_store(&t->stop, 0);
    assert_int_equal(pthread_create(&tid, NULL, serve_tls, t), 0);
    memset(&front, 0, sizeof(front));
    front.gw = &gw;
    cfg.tls_cert = (char *)"server.pem"; /* only whether there is one matters to the check */
    cfg.tls_client_auth = (char *)mode;
    atomic_store(&gw.grpc_stalled, !want);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    assert_int_equal(gw_grpc_probe_start(&front, addr, port, err, sizeof(err)), 0);
    got = wait_stalled(&gw, want, 5000);
    gw_grpc_probe_stop(&front);
    atomic_store(&t->stop, 1);
    shutdown(t->lfd, SHUT_RDWR);
    pthread_join(tid, NULL);
    close(t->lfd);
    return got;
}

static void test_probe_over_tls(void **state)
{
    tls_server t = {.ctx = server_ctx(0)};

    (void)state;
    atomic_store(&t.settings, 1);
    assert_int_equal(tls_probe_stalled(&t, "none", 0), 0);
    /* A handshake that completes proves the accept, not the transport. */
    atomic_store(&t.settings, 0);
    assert_int_equal(tls_probe_stalled(&t, "none", 1), 1);
    SSL_CTX_free(t.ctx);
    /* A plaintext server on a TLS port: its SETTINGS is no ServerHello. */
    t.ctx = NULL;
    assert_int_equal(tls_probe_stalled(&t, "optional", 1), 1);
    /* require: the server asks for the certificate the check does not have, and refuses it: answered. */
    t.ctx = server_ctx(1);
    assert_int_equal(tls_probe_stalled(&t, "require", 0), 0);
    /* ...but that leniency is require's alone. */
    assert_int_equal(tls_probe_stalled(&t, "optional", 1), 1);
    SSL_CTX_free(t.ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_every_limit_is_set_from_the_settings, setup),
        cmocka_unit_test_setup(test_no_age_unless_asked, setup),
        cmocka_unit_test_setup(test_large_settings_are_capped_not_wrapped, setup),
        cmocka_unit_test_setup(test_probe_reports_a_listener_that_does_not_answer, setup),
        cmocka_unit_test_setup(test_probe_over_tls, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
