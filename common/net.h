/* Addresses and listening sockets, for every front end. */
#ifndef INGEST_NET_H
#define INGEST_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * Parse "host:port", "[v6]:port" or ":port" into `ss`. ":port" is every
 * address, the same as "[::]:port" (both families, see net_bind).
 * 0, or -EINVAL with a message in err.
 */
int net_parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen);

/*
 * A non-blocking socket of `type` (SOCK_STREAM listens, SOCK_DGRAM is just
 * bound) on `addr`, with SO_REUSEADDR for TCP only, and SO_REUSEPORT when
 * asked so that several threads can each have their own. An IPv6 socket has
 * IPV6_V6ONLY cleared, whatever net.ipv6.bindv6only says, so that "[::]"
 * takes IPv4 clients too (as ::ffff:a.b.c.d; net_format names them as
 * IPv4). The fd, or -1 with a message.
 */
int net_bind(const char *addr, int type, int reuseport, char *err, size_t errlen);

/* Flags of net_listen_addr. */
enum {
    /*
     * The listener is the gRPC core's (1.51 and 1.85 alike). Given a
     * wildcard ("[::]" or "0.0.0.0" alike) the core listens on one dual-stack [::] socket only
     * if it can bind [::1] (probe_ipv6_once, socket_utils_common_posix.cc),
     * else on 0.0.0.0 alone, and says so below its default verbosity. With
     * this flag that case falls back too, and is said like the others.
     */
    NET_LISTEN_GRPC_CORE = 1,
};

/*
 * Where a listener given `*addr` binds, decided once at start: `*addr`
 * itself, unless it is the IPv6 wildcard ("[::]:port" or ":port", every
 * listener's default) and the host has no IPv6: socket(AF_INET6) fails with
 * EAFNOSUPPORT or binding [::] with EADDRNOTAVAIL. Then it becomes
 * "0.0.0.0:port", IPv4 alone, and one line in the log says so, naming
 * `what` (the setting, e.g. "--udp-addr"). Any other address is left as the
 * operator gave it, to fail at its bind if the host cannot have it.
 * `*addr` is a malloc'd string (a setting's value); when replaced, the old
 * one is freed. 0; -EINVAL when it does not parse, -ENOMEM; a message in err.
 */
int net_listen_addr(const char *what, char **addr, int type, int flags, char *err, size_t errlen);

/*
 * How many datagrams the kernel has dropped for a socket since it was made
 * (/proc/net/udp's "drops"; for UDP nearly always a full receive buffer,
 * else a bad checksum), read with SO_MEMINFO so it can be polled at any
 * time. A 32-bit counter that wraps: callers take differences modulo 2^32.
 * 0, or -errno (-ENOPROTOOPT when the kernel does not report it).
 */
int net_socket_drops(int fd, uint32_t *drops);

/* The port a bound socket got (for ":0"); 0 on error. */
int net_local_port(int fd);

/*
 * Out of descriptors, accept() fails and the listening socket stays
 * readable, so a loop that retries spins. A program keeps one spare
 * descriptor (*spare, from net_spare_fd()) per listener; after EMFILE or
 * ENFILE this closes it, accepts one waiting connection and closes that at
 * once (a reset), and opens the spare again. 1 when a connection was shed,
 * 0 when none could be (the caller should rest the listener a moment).
 */
int net_spare_fd(void);
int net_accept_shed(int listen_fd, int *spare);

/*
 * "ip:port", or "[ip6]:port", of a peer. An IPv4-mapped IPv6 address (an
 * IPv4 client of a dual-stack socket) is written as the IPv4 one.
 */
void net_format(const struct sockaddr *sa, char *buf, size_t size);

/*
 * Percent-decode `s` (%XX, either case; a '%' not followed by two hex digits
 * stays as it is) into `out` of `size` bytes, NUL-terminated, cut to fit.
 * Returns the decoded length. Used for ce-* header values and gRPC peers.
 */
size_t net_percent_decode(const char *s, char *out, size_t size);

#endif
