/*
 * common/net: address parsing, listening and bound sockets, peer formatting.
 * Real sockets on the loopback interface; IPv6 cases are skipped on a
 * machine without ::1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "net.h"

static int have_ipv6(void)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int fd = socket(AF_INET6, SOCK_STREAM, 0), ok;

    if (fd < 0)
        return 0;
    ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static void test_parse_good(void **state)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char err[256] = "";
    (void)state;

    assert_int_equal(net_parse_addr("127.0.0.1:80", &ss, &len, err, sizeof(err)), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    assert_int_equal(ntohs(in->sin_port), 80);
    assert_int_equal(ntohl(in->sin_addr.s_addr), INADDR_LOOPBACK);

    assert_int_equal(net_parse_addr("0.0.0.0:65535", &ss, &len, err, sizeof(err)), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(in->sin_port), 65535);
    assert_int_equal(in->sin_addr.s_addr, htonl(INADDR_ANY));

    assert_int_equal(net_parse_addr("[::1]:8080", &ss, &len, err, sizeof(err)), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(len, sizeof(struct sockaddr_in6));
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
    assert_int_equal(ntohs(in6->sin6_port), 8080);
    assert_memory_equal(&in6->sin6_addr, &in6addr_loopback, sizeof(in6addr_loopback));

    /* ":port" is every address, of whichever family the resolver puts first. */
    assert_int_equal(net_parse_addr(":0", &ss, &len, err, sizeof(err)), 0);
    if (ss.ss_family == AF_INET) {
        assert_int_equal(in->sin_addr.s_addr, htonl(INADDR_ANY));
        assert_int_equal(in->sin_port, 0);
    } else {
        assert_int_equal(ss.ss_family, AF_INET6);
        assert_memory_equal(&in6->sin6_addr, &in6addr_any, sizeof(in6addr_any));
        assert_int_equal(in6->sin6_port, 0);
    }
}

static void test_parse_bad(void **state)
{
    static const char *const bad[] = {
        "nonsense", "1.2.3.4",    "[::1]80",     "host:99999", "a:b:c:1", "",       ":",
        "1.2.3.4:", "1.2.3.4:-1", "1.2.3.4:80x", "[::1",       "[::1]",   "::1:80", "1.2.3.4:65536",
    };
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sockaddr_storage ss;
        socklen_t len = 0;
        char err[256] = "";
        if (net_parse_addr(bad[i], &ss, &len, err, sizeof(err)) != -EINVAL)
            fail_msg("'%s' was accepted", bad[i]);
        /* The message quotes what was given, so an operator sees which setting. */
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "'%s'", bad[i]);
        if (strstr(err, quoted) == NULL)
            fail_msg("'%s': message does not quote it: %s", bad[i], err);
    }
}

static void check_socket(int fd, int type, int family)
{
    int t = 0, fl;
    socklen_t tl = sizeof(t);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    assert_true(fd >= 0);
    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &tl), 0);
    assert_int_equal(t, type);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &sl), 0);
    assert_int_equal(ss.ss_family, family);
    /* Every front end runs it on an event loop: it must not block, nor leak into children. */
    fl = fcntl(fd, F_GETFL);
    assert_true(fl & O_NONBLOCK);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
}

static int stream_listening(int fd)
{
    int on = 0;
    socklen_t l = sizeof(on);
    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &l), 0);
    return on;
}

/* Connect to it and exchange a byte: the socket really serves. */
static void check_serves_tcp(int lfd, int family, int port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int c = socket(family, SOCK_STREAM, 0), a = -1;
    char ch = 0;

    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof(*in);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        in6->sin6_addr = in6addr_loopback;
        sl = sizeof(*in6);
    }
    assert_int_equal(connect(c, (struct sockaddr *)&ss, sl), 0);
    /* Non-blocking listener: the connection is queued already, accept may still need a moment. */
    for (int i = 0; i < 1000 && a < 0; i++) {
        a = accept(lfd, NULL, NULL);
        if (a < 0)
            usleep(1000);
    }
    assert_true(a >= 0);
    assert_int_equal(send(c, "x", 1, 0), 1);
    assert_int_equal(recv(a, &ch, 1, 0), 1);
    assert_int_equal(ch, 'x');
    close(a);
    close(c);
}

static void test_bind_tcp_v4(void **state)
{
    char err[256] = "";
    (void)state;

    int fd = net_bind("127.0.0.1:0", SOCK_STREAM, 0, err, sizeof(err));
    check_socket(fd, SOCK_STREAM, AF_INET);
    assert_true(stream_listening(fd));
    int port = net_local_port(fd);
    assert_true(port > 0 && port <= 65535);
    check_serves_tcp(fd, AF_INET, port);
    close(fd);
}

static void test_bind_tcp_v6(void **state)
{
    char err[256] = "";
    (void)state;

    if (!have_ipv6())
        skip();
    int fd = net_bind("[::1]:0", SOCK_STREAM, 0, err, sizeof(err));
    check_socket(fd, SOCK_STREAM, AF_INET6);
    assert_true(stream_listening(fd));
    int port = net_local_port(fd);
    assert_true(port > 0 && port <= 65535);
    check_serves_tcp(fd, AF_INET6, port);
    close(fd);
}

static void check_udp(const char *addr, int family)
{
    char err[256] = "", buf[8];
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = net_bind(addr, SOCK_DGRAM, 0, err, sizeof(err));

    check_socket(fd, SOCK_DGRAM, family);
    int port = net_local_port(fd);
    assert_true(port > 0 && port <= 65535);

    /* A datagram sent to the port arrives. */
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &sl), 0);
    int c = socket(family, SOCK_DGRAM, 0);
    assert_int_equal(sendto(c, "ping", 4, 0, (struct sockaddr *)&ss, sl), 4);
    ssize_t n = -1;
    for (int i = 0; i < 1000 && n < 0; i++) {
        n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0)
            usleep(1000);
    }
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "ping", 4);
    close(c);
    close(fd);
}

static void test_bind_udp_v4(void **state)
{
    (void)state;
    check_udp("127.0.0.1:0", AF_INET);
}

static void test_bind_udp_v6(void **state)
{
    (void)state;
    if (!have_ipv6())
        skip();
    check_udp("[::1]:0", AF_INET6);
}

static void test_bind_in_use(void **state)
{
    char err[256] = "", addr[64];
    (void)state;

    int a = net_bind("127.0.0.1:0", SOCK_STREAM, 0, err, sizeof(err));
    assert_true(a >= 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", net_local_port(a));

    err[0] = '\0';
    assert_int_equal(net_bind(addr, SOCK_STREAM, 0, err, sizeof(err)), -1);
    /* The message names the address and the reason. */
    assert_non_null(strstr(err, addr));
    assert_non_null(strstr(err, "bind"));
    assert_non_null(strstr(err, strerror(EADDRINUSE)));

    /* Asking for SO_REUSEPORT does not steal a port held without it. */
    err[0] = '\0';
    assert_int_equal(net_bind(addr, SOCK_STREAM, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, strerror(EADDRINUSE)));
    close(a);
}

static void test_bind_bad_address(void **state)
{
    char err[256] = "";
    (void)state;

    assert_int_equal(net_bind("nonsense", SOCK_STREAM, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "'nonsense'"));
    /* An address of no local interface. */
    err[0] = '\0';
    assert_int_equal(net_bind("192.0.2.1:0", SOCK_STREAM, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "192.0.2.1:0"));
    assert_non_null(strstr(err, strerror(EADDRNOTAVAIL)));
}

static void test_reuseport(void **state)
{
    char err[256] = "", addr[64];
    (void)state;

    /* Two listening sockets on one port, one per I/O thread, as the gateway makes them. */
    int a = net_bind("127.0.0.1:0", SOCK_STREAM, 1, err, sizeof(err));
    assert_true(a >= 0);
    int port = net_local_port(a);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    int b = net_bind(addr, SOCK_STREAM, 1, err, sizeof(err));
    if (b < 0)
        fail_msg("second SO_REUSEPORT bind: %s", err);
    assert_int_equal(net_local_port(b), port);

    /*
     * Without SO_REUSEPORT the port is busy: the gateway's start-up probe
     * relies on this to find another process serving the port.
     */
    err[0] = '\0';
    assert_int_equal(net_bind(addr, SOCK_STREAM, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, strerror(EADDRINUSE)));
    close(a);
    close(b);

    /* The same for UDP. */
    a = net_bind("127.0.0.1:0", SOCK_DGRAM, 1, err, sizeof(err));
    assert_true(a >= 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", net_local_port(a));
    b = net_bind(addr, SOCK_DGRAM, 1, err, sizeof(err));
    assert_true(b >= 0);
    close(a);
    close(b);
}

static void test_local_port_errors(void **state)
{
    int fds[2];
    (void)state;

    assert_int_equal(net_local_port(-1), 0);
    /* A socket of another family has no port. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    assert_int_equal(net_local_port(fds[0]), 0);
    close(fds[0]);
    close(fds[1]);
}

static void test_format(void **state)
{
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(8080)};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    char buf[64];
    (void)state;

    inet_pton(AF_INET, "192.168.1.20", &in.sin_addr);
    net_format((struct sockaddr *)&in, buf, sizeof(buf));
    assert_string_equal(buf, "192.168.1.20:8080");

    inet_pton(AF_INET6, "2001:db8::1", &in6.sin6_addr);
    net_format((struct sockaddr *)&in6, buf, sizeof(buf));
    assert_string_equal(buf, "[2001:db8::1]:443");

    in6.sin6_addr = in6addr_loopback;
    in6.sin6_port = htons(0);
    net_format((struct sockaddr *)&in6, buf, sizeof(buf));
    assert_string_equal(buf, "[::1]:0");

    /* The longest IPv6 text fits the size the HTTP server keeps (64). */
    memset(&in6.sin6_addr, 0xff, sizeof(in6.sin6_addr));
    in6.sin6_port = htons(65535);
    net_format((struct sockaddr *)&in6, buf, sizeof(buf));
    assert_string_equal(buf, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");

    net_format((struct sockaddr *)&un, buf, sizeof(buf));
    assert_string_equal(buf, "unknown");

    /* A short buffer truncates, NUL-terminated. */
    char small[8];
    memset(small, 'z', sizeof(small));
    inet_pton(AF_INET, "10.0.0.1", &in.sin_addr);
    net_format((struct sockaddr *)&in, small, sizeof(small));
    assert_string_equal(small, "10.0.0.");
}

/* What net_parse_addr gives, net_format prints back. */
static void test_parse_format_round_trip(void **state)
{
    static const char *const addrs[] = {"127.0.0.1:80", "10.1.2.3:65535", "[::1]:8080", "[fe80::1:2]:1"};
    (void)state;

    for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        char err[256] = "", buf[64];
        assert_int_equal(net_parse_addr(addrs[i], &ss, &len, err, sizeof(err)), 0);
        net_format((struct sockaddr *)&ss, buf, sizeof(buf));
        assert_string_equal(buf, addrs[i]);
    }
}

static void test_percent_decode(void **state)
{
    char out[16];
    (void)state;

    assert_int_equal(net_percent_decode("a%20b%2fc%2F", out, sizeof(out)), 6);
    assert_string_equal(out, "a b/c/");
    /* A '%' without two hex digits stays as it is. */
    assert_int_equal(net_percent_decode("100%", out, sizeof(out)), 4);
    assert_string_equal(out, "100%");
    assert_int_equal(net_percent_decode("%zz%4", out, sizeof(out)), 5);
    assert_string_equal(out, "%zz%4");
    assert_int_equal(net_percent_decode("%5B::1%5D:443", out, sizeof(out)), 9);
    assert_string_equal(out, "[::1]:443");
    /* Cut to fit, always terminated. */
    assert_int_equal(net_percent_decode("abcdef", out, 4), 3);
    assert_string_equal(out, "abc");
    assert_int_equal(net_percent_decode("abc", out, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),     cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_bind_tcp_v4),    cmocka_unit_test(test_bind_tcp_v6),
        cmocka_unit_test(test_bind_udp_v4),    cmocka_unit_test(test_bind_udp_v6),
        cmocka_unit_test(test_bind_in_use),    cmocka_unit_test(test_bind_bad_address),
        cmocka_unit_test(test_reuseport),      cmocka_unit_test(test_local_port_errors),
        cmocka_unit_test(test_format),         cmocka_unit_test(test_parse_format_round_trip),
        cmocka_unit_test(test_percent_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
