#include "net.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sock_diag.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int net_parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen)
{
    char host[256];
    const char *port;
    struct addrinfo hints, *res = NULL;
    int rc;

    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - addr - 1) >= sizeof(host))
            goto bad;
        memcpy(host, addr + 1, (size_t)(end - addr - 1));
        host[end - addr - 1] = '\0';
        port = end + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (colon == NULL || (size_t)(colon - addr) >= sizeof(host) ||
            memchr(addr, ':', (size_t)(colon - addr)))
            goto bad;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
        port = colon + 1;
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (*port == '\0' || *end != '\0' || p < 0 || p > 65535)
        goto bad;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    /* No host: every address of both families, not whichever the resolver lists first. */
    if ((rc = getaddrinfo(host[0] ? host : "::", port, &hints, &res)) != 0) {
        snprintf(err, errlen, "'%s': %s", addr, gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;

bad:
    snprintf(err, errlen, "'%s' is not host:port, [ipv6]:port or :port", addr);
    return -EINVAL;
}

int net_bind(const char *addr, int type, int reuseport, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, one = 1, off = 0;

    if (net_parse_addr(addr, &ss, &len, err, errlen) != 0)
        return -1;
    if ((fd = socket(ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) {
        snprintf(err, errlen, "%s: socket: %s", addr, strerror(errno));
        return -1;
    }
    /*
     * Set, not left to net.ipv6.bindv6only, which some distributions and
     * containers turn on: "[::]" must take both families wherever it runs.
     * A specific IPv6 address is not changed by it (a v4-mapped one can
     * only be bound so); the gRPC core clears it on all its IPv6 sockets too.
     */
    if (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) != 0) {
        snprintf(err, errlen, "%s: IPV6_V6ONLY: %s", addr, strerror(errno));
        goto fail;
    }
    /*
     * TCP: rebind at once over connections in TIME_WAIT. Not UDP, where
     * SO_REUSEADDR lets two processes bind the same address and silently
     * split its datagrams (perf/udp found a gateway sharing a port this way).
     */
    if (type == SOCK_STREAM)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        snprintf(err, errlen, "%s: SO_REUSEPORT: %s", addr, strerror(errno));
        goto fail;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        snprintf(err, errlen, "%s: bind: %s", addr, strerror(errno));
        goto fail;
    }
    if (type == SOCK_STREAM && listen(fd, 1024) != 0) {
        snprintf(err, errlen, "%s: listen: %s", addr, strerror(errno));
        goto fail;
    }
    return fd;

fail:
    close(fd);
    return -1;
}

/*
 * 1 with the reason in `why` when a listener on [::] cannot work here, so
 * that 0.0.0.0 must do. Only a host without IPv6 counts (see net.h): any
 * other failure (no descriptor left, say) is for the real bind to report.
 */
static int ipv6_missing(int type, int flags, char *why, size_t size)
{
    struct sockaddr_in6 any = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT};
    struct sockaddr_in6 lo = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int fd, off = 0, missing = 0;

    if ((fd = socket(AF_INET6, type | SOCK_CLOEXEC, 0)) < 0) {
        if (errno != EAFNOSUPPORT)
            return 0;
        snprintf(why, size, "socket: %s", strerror(EAFNOSUPPORT));
        return 1;
    }
    /* Port 0: the address decides, and the listener's own port stays untouched. */
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
    if (bind(fd, (struct sockaddr *)&any, sizeof(any)) != 0 && errno == EADDRNOTAVAIL) {
        snprintf(why, size, "bind [::]: %s", strerror(errno));
        missing = 1;
    }
    close(fd);
    /* The core's own probe, as it makes it: any failure means no IPv6 to it. */
    if (!missing && (flags & NET_LISTEN_GRPC_CORE)) {
        if ((fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
            bind(fd, (struct sockaddr *)&lo, sizeof(lo)) != 0) {
            snprintf(why, size, "the gRPC core needs [::1]: %s", strerror(errno));
            missing = 1;
        }
        if (fd >= 0)
            close(fd);
    }
    return missing;
}

int net_listen_addr(const char *what, char **addr, int type, int flags, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char why[160], v4[sizeof("0.0.0.0:65535")], *s;

    if (net_parse_addr(*addr, &ss, &len, err, errlen) != 0)
        return -EINVAL;
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
    if (ss.ss_family != AF_INET6 || !IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ||
        !ipv6_missing(type, flags, why, sizeof(why)))
        return 0;
    snprintf(v4, sizeof(v4), "0.0.0.0:%u", ntohs(in6->sin6_port));
    if ((s = strdup(v4)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    LOG_INFO("net", "%s %s: no IPv6 on this host (%s); listening on %s, IPv4 only", what, *addr, why, s);
    free(*addr);
    *addr = s;
    return 0;
}

int net_socket_drops(int fd, uint32_t *drops)
{
    uint32_t mem[SK_MEMINFO_VARS];
    socklen_t len = sizeof(mem);

    if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) != 0)
        return -errno;
    /* An older kernel's array may end before the drops. */
    if (len < (SK_MEMINFO_DROPS + 1) * sizeof(mem[0]))
        return -ENOPROTOOPT;
    *drops = mem[SK_MEMINFO_DROPS];
    return 0;
}

int net_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

void net_format(const struct sockaddr *sa, char *buf, size_t size)
{
    char ip[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(buf, size, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        /*
         * An IPv4 client of a dual-stack socket arrives as ::ffff:a.b.c.d.
         * Named as it connected, so its Envelope's peer is what it was on
         * 0.0.0.0, and what the gRPC core writes for its own peers.
         */
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], ip, sizeof(ip));
            snprintf(buf, size, "%s:%u", ip, ntohs(in6->sin6_port));
            return;
        }
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, size, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, size, "unknown");
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t net_percent_decode(const char *s, char *out, size_t size)
{
    size_t n = 0;
    int hi, lo;

    if (size == 0)
        return 0;
    for (; *s && n + 1 < size; s++) {
        if (*s == '%' && (hi = hexval(s[1])) >= 0 && (lo = hexval(s[2])) >= 0) {
            out[n++] = (char)(hi << 4 | lo);
            s += 2;
        } else {
            out[n++] = *s;
        }
    }
    out[n] = '\0';
    return n;
}

int net_spare_fd(void)
{
    return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

int net_accept_shed(int listen_fd, int *spare)
{
    struct linger lg = {1, 0};
    int fd;

    if (*spare < 0 && (*spare = net_spare_fd()) < 0)
        return 0;
    close(*spare);
    fd = accept(listen_fd, NULL, NULL);
    if (fd >= 0) {
        /* A reset, not a FIN: nothing left in TIME_WAIT for each connection shed. */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
    }
    *spare = net_spare_fd();
    return fd >= 0;
}
