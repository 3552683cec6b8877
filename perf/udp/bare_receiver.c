/*
 * The UDP baseline of perf/udp: receives datagrams the way the gateway's UDP
 * front end does (gateway/udp.c) and only counts them. What it takes at a
 * given rate without loss is what this machine's loopback and kernel allow;
 * the gateway's figures are read against it.
 *
 * The same socket set-up as the gateway: N threads, each with its own socket
 * bound with SO_REUSEPORT by the project's net_bind(), the same SO_RCVBUF,
 * blocking with a 200 ms SO_RCVTIMEO, and recvmmsg(MSG_WAITFORONE) of up to
 * 32 datagrams into 64 KiB buffers each.
 *
 * Usage: udp_bare_receiver [--addr 127.0.0.1:PORT] [--threads N] [--rcvbuf BYTES]
 * Logs its set-up when listening; stops on SIGTERM or SIGINT and logs, like
 * the gateway's stop line,
 *   udp_bare stopped datagrams=N truncated=N
 * to stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"

#define MAX_THREADS 64
/* As in gateway/udp.c. */
#define UDP_BATCH        32
#define UDP_MAX_DATAGRAM 65535

static atomic_int stop;
static atomic_ullong datagrams, truncated;

static void *receive(void *arg)
{
    int fd = *(int *)arg;
    struct mmsghdr msgs[UDP_BATCH];
    struct iovec iov[UDP_BATCH];
    struct sockaddr_storage peers[UDP_BATCH];
    unsigned char *bufs = malloc((size_t)UDP_BATCH * UDP_MAX_DATAGRAM);

    if (bufs == NULL) {
        fprintf(stderr, "udp_bare: out of memory\n");
        exit(1);
    }
    while (!atomic_load(&stop)) {
        for (int i = 0; i < UDP_BATCH; i++) {
            iov[i].iov_base = bufs + (size_t)i * UDP_MAX_DATAGRAM;
            iov[i].iov_len = UDP_MAX_DATAGRAM;
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &peers[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(peers[i]);
        }
        int n = recvmmsg(fd, msgs, UDP_BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                fprintf(stderr, "udp_bare: recvmmsg: %s\n", strerror(errno));
            continue;
        }
        atomic_fetch_add_explicit(&datagrams, (unsigned)n, memory_order_relaxed);
        for (int i = 0; i < n; i++)
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
                atomic_fetch_add_explicit(&truncated, 1, memory_order_relaxed);
    }
    free(bufs);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:18190";
    int n_threads = 1, rcvbuf = 4 << 20, fds[MAX_THREADS], got = 0;
    socklen_t got_len = sizeof(got);
    pthread_t tids[MAX_THREADS];
    struct timeval tv = {0, 200000};
    char err[256];
    sigset_t sigs;
    int sig;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--addr") == 0)
            addr = argv[i + 1];
        else if (strcmp(argv[i], "--threads") == 0)
            n_threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--rcvbuf") == 0)
            rcvbuf = atoi(argv[i + 1]);
    }
    if (argc % 2 == 0 || n_threads < 1 || n_threads > MAX_THREADS || rcvbuf < 4096) {
        fprintf(stderr, "usage: udp_bare_receiver [--addr HOST:PORT] [--threads N] [--rcvbuf BYTES]\n");
        return 2;
    }
    /* Only the main thread takes the stop signals. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    /*
     * A port someone else serves is an error, not silently shared: a stale receiver would take part of the
     * load. The probe has neither SO_REUSEADDR nor SO_REUSEPORT, since with SO_REUSEADDR on both sockets
     * Linux lets a second UDP socket bind the same address (so net_bind() cannot be the probe).
     */
    struct sockaddr_storage ss;
    socklen_t ss_len;
    if (net_parse_addr(addr, &ss, &ss_len, err, sizeof(err)) != 0) {
        fprintf(stderr, "udp_bare: %s\n", err);
        return 2;
    }
    int probe = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (probe < 0 || bind(probe, (struct sockaddr *)&ss, ss_len) != 0) {
        fprintf(stderr, "udp_bare: %s: bind: %s\n", addr, strerror(errno));
        return 1;
    }
    close(probe);
    for (int i = 0; i < n_threads; i++) {
        if ((fds[i] = net_bind(addr, SOCK_DGRAM, 1, err, sizeof(err))) < 0) {
            fprintf(stderr, "udp_bare: %s\n", err);
            return 1;
        }
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) & ~O_NONBLOCK);
    }
    /* What the kernel granted (twice the request, capped by net.core.rmem_max): the gateway gets the same. */
    getsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &got, &got_len);
    for (int i = 0; i < n_threads; i++) {
        if (pthread_create(&tids[i], NULL, receive, &fds[i]) != 0) {
            fprintf(stderr, "udp_bare: cannot start thread %d\n", i);
            return 1;
        }
    }
    fprintf(stderr, "udp_bare listening addr=%s threads=%d rcvbuf=%d (kernel: %d)\n", addr, n_threads, rcvbuf,
            got);

    while (sigwait(&sigs, &sig) != 0)
        ;
    atomic_store(&stop, 1);
    for (int i = 0; i < n_threads; i++) {
        pthread_join(tids[i], NULL);
        close(fds[i]);
    }
    fprintf(stderr, "udp_bare stopped datagrams=%llu truncated=%llu\n",
            (unsigned long long)atomic_load(&datagrams), (unsigned long long)atomic_load(&truncated));
    return 0;
}
