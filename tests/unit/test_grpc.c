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
 * SETTINGS, ready again.
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_every_limit_is_set_from_the_settings, setup),
        cmocka_unit_test_setup(test_no_age_unless_asked, setup),
        cmocka_unit_test_setup(test_large_settings_are_capped_not_wrapped, setup),
        cmocka_unit_test_setup(test_probe_reports_a_listener_that_does_not_answer, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
