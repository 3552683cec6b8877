/*
 * common/net: address parsing, listening and bound sockets, peer formatting.
 * Real sockets on the loopback interface; IPv6 cases are skipped on a
 * machine without ::1. Hosts unlike this one are made in a child process:
 * a network namespace of its own (as root) with net.ipv6.bindv6only on or
 * IPv6 disabled, or a seccomp filter refusing IPv6 sockets as a kernel
 * without IPv6 does.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
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

    /* ":port" is every address of both families, "[::]", not whichever the resolver lists first. */
    assert_int_equal(net_parse_addr(":0", &ss, &len, err, sizeof(err)), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_memory_equal(&in6->sin6_addr, &in6addr_any, sizeof(in6addr_any));
    assert_int_equal(in6->sin6_port, 0);
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

/* The loopback address of `family` with `port`; its length. */
static socklen_t loopback(int family, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return sizeof(*in);
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    in6->sin6_addr = in6addr_loopback;
    return sizeof(*in6);
}

/*
 * Connect from the loopback of `family` and exchange a byte: 1 when the
 * listener really serves it. The peer it accepted, as net_format names it,
 * into `peer` when given. No cmocka assertion: child processes use it too.
 */
static int serves_tcp(int lfd, int family, int port, char *peer, size_t size)
{
    struct sockaddr_storage ss, from;
    socklen_t sl = loopback(family, port, &ss), fl = sizeof(from);
    int c = socket(family, SOCK_STREAM, 0), a = -1, ok = 0;
    char ch = 0;

    if (c < 0)
        return 0;
    if (connect(c, (struct sockaddr *)&ss, sl) == 0) {
        /* Non-blocking listener: the connection is queued already, accept may still need a moment. */
        for (int i = 0; i < 1000 && a < 0; i++) {
            a = accept(lfd, (struct sockaddr *)&from, &fl);
            if (a < 0)
                usleep(1000);
        }
        ok = a >= 0 && send(c, "x", 1, 0) == 1 && recv(a, &ch, 1, 0) == 1 && ch == 'x';
        if (ok && peer)
            net_format((struct sockaddr *)&from, peer, size);
    }
    if (a >= 0)
        close(a);
    close(c);
    return ok;
}

/* A datagram from the loopback of `family` arrives on the bound socket fd: 1 when it does. */
static int serves_udp(int fd, int family, int port)
{
    struct sockaddr_storage ss;
    socklen_t sl = loopback(family, port, &ss);
    int c = socket(family, SOCK_DGRAM, 0);
    char buf[8];
    ssize_t n = -1;

    if (c < 0)
        return 0;
    if (sendto(c, "ping", 4, 0, (struct sockaddr *)&ss, sl) == 4)
        for (int i = 0; i < 1000 && n < 0; i++) {
            n = recv(fd, buf, sizeof(buf), 0);
            if (n < 0)
                usleep(1000);
        }
    close(c);
    return n == 4 && memcmp(buf, "ping", 4) == 0;
}

static void check_serves_tcp(int lfd, int family, int port)
{
    assert_true(serves_tcp(lfd, family, port, NULL, 0));
}

/* IPV6_V6ONLY of a socket; -1 when it cannot be read. */
static int v6only(int fd)
{
    int on = -1;
    socklen_t l = sizeof(on);

    if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, &l) != 0)
        return -1;
    return on;
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

/* "[::]" takes IPv4 and IPv6 on one socket, and an IPv4 client is named as IPv4. */
static void test_bind_v6_any_takes_both_families(void **state)
{
    char err[256] = "", peer[64] = "";
    (void)state;

    if (!have_ipv6())
        skip();
    int fd = net_bind("[::]:0", SOCK_STREAM, 0, err, sizeof(err));
    check_socket(fd, SOCK_STREAM, AF_INET6);
    assert_int_equal(v6only(fd), 0);
    int port = net_local_port(fd);
    assert_true(serves_tcp(fd, AF_INET, port, peer, sizeof(peer)));
    assert_true(strncmp(peer, "127.0.0.1:", 10) == 0);
    assert_true(serves_tcp(fd, AF_INET6, port, peer, sizeof(peer)));
    assert_true(strncmp(peer, "[::1]:", 6) == 0);
    close(fd);

    fd = net_bind("[::]:0", SOCK_DGRAM, 0, err, sizeof(err));
    check_socket(fd, SOCK_DGRAM, AF_INET6);
    assert_int_equal(v6only(fd), 0);
    port = net_local_port(fd);
    assert_true(serves_udp(fd, AF_INET, port));
    assert_true(serves_udp(fd, AF_INET6, port));
    close(fd);

    /* ":port" is the same. */
    fd = net_bind(":0", SOCK_STREAM, 0, err, sizeof(err));
    check_socket(fd, SOCK_STREAM, AF_INET6);
    assert_int_equal(v6only(fd), 0);
    close(fd);
}

/* ---- hosts unlike this one, each made in a child process ---------------------------- */

/* What a child returns when it cannot make the host it needs (not root, another architecture). */
#define CHILD_SKIP 77

/*
 * Run `fn` in a child process, its stderr (the log) kept in `log` (may be
 * NULL). The child's exit status: 0 when every check passed, CHILD_SKIP,
 * else the number of the check that failed.
 */
static int in_child(int (*fn)(void), char *log, size_t logsize)
{
    FILE *f = tmpfile();
    int status = -1;

    assert_non_null(f);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fileno(f), STDERR_FILENO);
        _exit(fn());
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (log) {
        rewind(f);
        size_t n = fread(log, 1, logsize - 1, f);
        log[n] = '\0';
    }
    fclose(f);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void check_child(int (*fn)(void), char *log, size_t logsize)
{
    int rc = in_child(fn, log, logsize);
    if (rc == CHILD_SKIP)
        skip();
    if (rc != 0)
        fail_msg("check %d failed in the child; its log:\n%s", rc, log ? log : "");
}

static int write_file(const char *path, const char *value)
{
    FILE *f = fopen(path, "w");
    int ok = f && fputs(value, f) >= 0;

    if (f && fclose(f) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

/* A network namespace of the child's own with its loopback up: 0, or -1 (not root). */
static int own_netns(void)
{
    struct ifreq ifr;
    int fd, rc = -1;

    if (unshare(CLONE_NEWNET) != 0 || (fd = socket(AF_INET, SOCK_DGRAM, 0)) < 0)
        return -1;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP;
        rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
    }
    close(fd);
    return rc;
}

#if defined(__x86_64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/*
 * From here on, system call `nr` fails with `err` when the low 32 bits of
 * its argument `arg` are `value`: a seccomp filter, inherited by nothing but
 * this child. 0, or -1 where it cannot be set.
 */
static int refuse_syscall(long nr, int arg, uint32_t value, int err)
{
#if defined(TEST_AUDIT_ARCH) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TEST_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(offsetof(struct seccomp_data, args) + 8 * (size_t)arg)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, value, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((uint32_t)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = (unsigned short)(sizeof(f) / sizeof(f[0])), .filter = f};

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return -1;
    return 0;
#else
    (void)nr, (void)arg, (void)value, (void)err;
    return -1;
#endif
}

/* With net.ipv6.bindv6only=1, as some distributions and containers have it. */
static int child_bindv6only(void)
{
    char err[256];
    int fd;

    if (own_netns() != 0 || write_file("/proc/sys/net/ipv6/bindv6only", "1") != 0)
        return CHILD_SKIP;
    /* The sysctl took: an IPv6 socket left alone takes IPv6 only here. */
    if ((fd = socket(AF_INET6, SOCK_STREAM, 0)) < 0 || v6only(fd) != 1)
        return 1;
    close(fd);
    if ((fd = net_bind("[::]:0", SOCK_STREAM, 0, err, sizeof(err))) < 0 || v6only(fd) != 0)
        return 2;
    if (!serves_tcp(fd, AF_INET, net_local_port(fd), NULL, 0))
        return 3;
    if (!serves_tcp(fd, AF_INET6, net_local_port(fd), NULL, 0))
        return 4;
    close(fd);
    if ((fd = net_bind("[::]:0", SOCK_DGRAM, 0, err, sizeof(err))) < 0 || v6only(fd) != 0)
        return 5;
    if (!serves_udp(fd, AF_INET, net_local_port(fd)) || !serves_udp(fd, AF_INET6, net_local_port(fd)))
        return 6;
    close(fd);
    return 0;
}

static void test_bind_v6_any_whatever_bindv6only_says(void **state)
{
    char log[4096];
    (void)state;
    check_child(child_bindv6only, log, sizeof(log));
}

/* Every address net_listen_addr must leave as it is on a host with IPv6 (this one). */
static void test_listen_addr_as_given(void **state)
{
    static const char *const keep[] = {"127.0.0.1:0", "0.0.0.0:8080", "[::1]:0", "[::]:0", ":0", "[::]:8080"};
    char err[256] = "";
    (void)state;

    if (!have_ipv6())
        skip();
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        char *a = strdup(keep[i]), *before = a;
        assert_int_equal(net_listen_addr("--x-addr", &a, SOCK_STREAM, NET_LISTEN_GRPC_CORE, err, sizeof(err)),
                         0);
        assert_ptr_equal(a, before);
        assert_string_equal(a, keep[i]);
        free(a);
    }
    char *bad = strdup("nonsense");
    assert_int_equal(net_listen_addr("--x-addr", &bad, SOCK_DGRAM, 0, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "'nonsense'"));
    assert_string_equal(bad, "nonsense");
    free(bad);
}

/* As for the kernel booted with ipv6.disable=1: socket(AF_INET6) fails with EAFNOSUPPORT. */
static int child_no_af_inet6(void)
{
    char err[256], peer[64] = "";
    char *any = strdup("[::]:0"), *colon = strdup(":0"), *lo6 = strdup("[::1]:0"),
         *lo4 = strdup("127.0.0.1:0");
    char *given = lo6;
    int fd, rc = 0;

    if (refuse_syscall(SYS_socket, 0, AF_INET6, EAFNOSUPPORT) != 0)
        return CHILD_SKIP;
    if (socket(AF_INET6, SOCK_STREAM, 0) >= 0 || errno != EAFNOSUPPORT)
        return 1;
    if (net_listen_addr("--x-addr", &any, SOCK_STREAM, 0, err, sizeof(err)) != 0 ||
        strcmp(any, "0.0.0.0:0") != 0)
        return 2;
    if ((fd = net_bind(any, SOCK_STREAM, 0, err, sizeof(err))) < 0 ||
        !serves_tcp(fd, AF_INET, net_local_port(fd), peer, sizeof(peer)) ||
        strncmp(peer, "127.0.0.1:", 10) != 0)
        return 3;
    close(fd);
    if (net_listen_addr("--y-addr", &colon, SOCK_DGRAM, 0, err, sizeof(err)) != 0 ||
        strcmp(colon, "0.0.0.0:0") != 0)
        return 4;
    if ((fd = net_bind(colon, SOCK_DGRAM, 0, err, sizeof(err))) < 0 ||
        !serves_udp(fd, AF_INET, net_local_port(fd)))
        return 5;
    close(fd);
    /* An address the operator named is bound as given, and fails as it would. */
    if (net_listen_addr("--z-addr", &lo6, SOCK_STREAM, 0, err, sizeof(err)) != 0 || lo6 != given ||
        strcmp(lo6, "[::1]:0") != 0)
        return 6;
    if (net_bind(lo6, SOCK_STREAM, 0, err, sizeof(err)) != -1 || strstr(err, strerror(EAFNOSUPPORT)) == NULL)
        return 7;
    if (net_listen_addr("--z-addr", &lo4, SOCK_STREAM, 0, err, sizeof(err)) != 0 ||
        strcmp(lo4, "127.0.0.1:0") != 0)
        return 8;
    free(any);
    free(colon);
    free(lo6);
    free(lo4);
    return rc;
}

static void test_listen_addr_falls_back_without_af_inet6(void **state)
{
    char log[4096];
    (void)state;

    check_child(child_no_af_inet6, log, sizeof(log));
    /* One line for each fallback, naming the setting, what was given, why, and where it listens. */
    assert_non_null(strstr(log,
                           "level=info comp=net msg=\"--x-addr [::]:0: no IPv6 on this host (socket: "
                           "Address family not supported by protocol); listening on 0.0.0.0:0, IPv4 only\""));
    assert_non_null(strstr(log, "msg=\"--y-addr :0: no IPv6 on this host (socket: "));
    assert_null(strstr(log, "--z-addr"));
    const char *l = log;
    int lines = 0;
    while ((l = strstr(l, "comp=net")) != NULL) {
        lines++;
        l++;
    }
    assert_int_equal(lines, 2);
}

/* A host that refuses [::] itself: bind(2) of any IPv6 address fails with EADDRNOTAVAIL. */
static int child_no_v6_any(void)
{
    char err[256];
    char *any = strdup("[::]:0");
    int fd;

    if (refuse_syscall(SYS_bind, 2, sizeof(struct sockaddr_in6), EADDRNOTAVAIL) != 0)
        return CHILD_SKIP;
    if (net_bind("[::]:0", SOCK_DGRAM, 0, err, sizeof(err)) != -1 ||
        strstr(err, strerror(EADDRNOTAVAIL)) == NULL)
        return 1;
    if (net_listen_addr("--x-addr", &any, SOCK_DGRAM, 0, err, sizeof(err)) != 0 ||
        strcmp(any, "0.0.0.0:0") != 0)
        return 2;
    if ((fd = net_bind(any, SOCK_DGRAM, 0, err, sizeof(err))) < 0 ||
        !serves_udp(fd, AF_INET, net_local_port(fd)))
        return 3;
    close(fd);
    free(any);
    return 0;
}

static void test_listen_addr_falls_back_when_v6_any_is_refused(void **state)
{
    char log[4096];
    (void)state;

    check_child(child_no_v6_any, log, sizeof(log));
    assert_non_null(strstr(log,
                           "msg=\"--x-addr [::]:0: no IPv6 on this host (bind [::]: Cannot assign requested "
                           "address); listening on 0.0.0.0:0, IPv4 only\""));
}

/*
 * IPv6 disabled (net.ipv6.conf.*.disable_ipv6=1): [::] still binds and takes
 * IPv4, so it stays; but [::1] is gone, and the gRPC core listens on
 * 0.0.0.0 then, which NET_LISTEN_GRPC_CORE says.
 */
static int child_ipv6_disabled(void)
{
    char err[256];
    char *any = strdup("[::]:0"), *grpc = strdup("[::]:0"), *given = any;
    int fd;

    if (own_netns() != 0 || write_file("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1") != 0 ||
        write_file("/proc/sys/net/ipv6/conf/lo/disable_ipv6", "1") != 0)
        return CHILD_SKIP;
    if (have_ipv6())
        return 1;
    if (net_listen_addr("--x-addr", &any, SOCK_STREAM, 0, err, sizeof(err)) != 0 || any != given)
        return 2;
    if ((fd = net_bind(any, SOCK_STREAM, 0, err, sizeof(err))) < 0 || v6only(fd) != 0 ||
        !serves_tcp(fd, AF_INET, net_local_port(fd), NULL, 0))
        return 3;
    close(fd);
    if (net_listen_addr("--grpc-addr", &grpc, SOCK_STREAM, NET_LISTEN_GRPC_CORE, err, sizeof(err)) != 0 ||
        strcmp(grpc, "0.0.0.0:0") != 0)
        return 4;
    free(any);
    free(grpc);
    return 0;
}

static void test_listen_addr_ipv6_disabled(void **state)
{
    char log[4096];
    (void)state;

    check_child(child_ipv6_disabled, log, sizeof(log));
    assert_null(strstr(log, "--x-addr"));
    assert_non_null(strstr(log, "msg=\"--grpc-addr [::]:0: no IPv6 on this host (the gRPC core needs [::1]: "
                                "Cannot assign requested address); listening on 0.0.0.0:0, IPv4 only\""));
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

/*
 * A flood into a small receive buffer: what the kernel drops is what
 * net_socket_drops says, so every datagram sent is either received or
 * counted. Loopback delivers in sendto(), but a datagram may still be on
 * its way: retried for a second.
 */
static void test_socket_drops(void **state)
{
    enum { SENT = 2000 };
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char err[256], buf[64], payload[100] = {0};
    int small = 4096;
    uint32_t drops = 1;
    long received = 0;
    (void)state;

    int fd = net_bind("127.0.0.1:0", SOCK_DGRAM, 0, err, sizeof(err));
    assert_true(fd >= 0);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    assert_int_equal(net_socket_drops(fd, &drops), 0);
    assert_int_equal(drops, 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &sl), 0);
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    for (int i = 0; i < SENT; i++)
        assert_int_equal(sendto(c, payload, sizeof(payload), 0, (struct sockaddr *)&ss, sl), sizeof(payload));
    for (int i = 0; i < 1000; i++) {
        while (recv(fd, buf, sizeof(buf), 0) >= 0)
            received++;
        assert_int_equal(net_socket_drops(fd, &drops), 0);
        if (received + drops >= SENT)
            break;
        usleep(1000);
    }
    /* A few datagrams fit in 4 KiB (8 KiB as Linux counts it); most are dropped. */
    assert_true(received > 0 && drops > SENT / 2);
    assert_int_equal(received + (long)drops, SENT);
    close(c);
    close(fd);

    /* No descriptor; not a socket. */
    assert_int_equal(net_socket_drops(-1, &drops), -EBADF);
    int file = open("/dev/null", O_RDONLY);
    assert_int_equal(net_socket_drops(file, &drops), -ENOTSOCK);
    close(file);
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

    /* An IPv4 client of a dual-stack socket: named as it connected. */
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &in6.sin6_addr);
    in6.sin6_port = htons(8080);
    net_format((struct sockaddr *)&in6, buf, sizeof(buf));
    assert_string_equal(buf, "192.0.2.7:8080");
    /* Not to be confused with the IPv4-compatible or NAT64 forms, which stay IPv6. */
    inet_pton(AF_INET6, "64:ff9b::c000:207", &in6.sin6_addr);
    net_format((struct sockaddr *)&in6, buf, sizeof(buf));
    assert_string_equal(buf, "[64:ff9b::c000:207]:8080");

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

/*
 * Out of descriptors: accept() fails with EMFILE and the connection stays
 * queued; net_accept_shed() gives up the spare to take it off the queue,
 * resets it, and takes the spare back. In a child, whose limit may drop.
 */
static void test_accept_shed_on_emfile(void **state)
{
    (void)state;
    char err[256];
    int lfd = net_bind("127.0.0.1:0", SOCK_STREAM, 0, err, sizeof(err));
    assert_true(lfd >= 0);
    int port = net_local_port(lfd);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int cfd = socket(AF_INET, SOCK_STREAM, 0);
        if (cfd < 0 || connect(cfd, (struct sockaddr *)&a, sizeof(a)) != 0)
            _exit(10);
        int spare = net_spare_fd();
        if (spare < 0)
            _exit(11);
        /* Every descriptor taken. */
        struct rlimit rl = {64, 64};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(12);
        while (open("/dev/null", O_RDONLY) >= 0)
            ;
        if (errno != EMFILE || accept(lfd, NULL, NULL) >= 0 || errno != EMFILE)
            _exit(13);
        if (net_accept_shed(lfd, &spare) != 1 || spare < 0)
            _exit(14);
        /* The client was reset: its read fails at once. */
        char b;
        if (recv(cfd, &b, 1, 0) != -1 || errno != ECONNRESET)
            _exit(15);
        /* Nothing queued now: nothing shed, the spare kept. */
        fcntl(lfd, F_SETFL, O_NONBLOCK);
        if (net_accept_shed(lfd, &spare) != 0 || spare < 0)
            _exit(16);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(lfd);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_accept_shed_on_emfile),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_bind_tcp_v4),
        cmocka_unit_test(test_bind_tcp_v6),
        cmocka_unit_test(test_bind_udp_v4),
        cmocka_unit_test(test_bind_udp_v6),
        cmocka_unit_test(test_bind_v6_any_takes_both_families),
        cmocka_unit_test(test_bind_v6_any_whatever_bindv6only_says),
        cmocka_unit_test(test_listen_addr_as_given),
        cmocka_unit_test(test_listen_addr_falls_back_without_af_inet6),
        cmocka_unit_test(test_listen_addr_falls_back_when_v6_any_is_refused),
        cmocka_unit_test(test_listen_addr_ipv6_disabled),
        cmocka_unit_test(test_bind_in_use),
        cmocka_unit_test(test_bind_bad_address),
        cmocka_unit_test(test_reuseport),
        cmocka_unit_test(test_local_port_errors),
        cmocka_unit_test(test_socket_drops),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_parse_format_round_trip),
        cmocka_unit_test(test_percent_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
