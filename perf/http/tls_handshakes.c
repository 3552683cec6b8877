/*
 * The full-handshake load of perf/http/run --tls: every request on a new TLS
 * connection. Connect, a full handshake (no session resumption: the client
 * keeps no session cache, offers no ticket and uses a fresh SSL each time,
 * and counts any handshake the server resumed anyway), one POST of one
 * CloudEvent with "Connection: close", read the answer, close; again, on N
 * connections at once, from one thread (epoll, non-blocking sockets).
 *
 * wrk cannot do this: it reuses each connection's SSL object after
 * SSL_clear(), which keeps the session, so its reconnections resume.
 *
 * Prints the RESULT line of perf/http/wrk.lua (same keys), plus resumed=N
 * and client_cpu_us=N (its own user + system time: on a small machine the
 * client's half of each handshake competes with the server's), so
 * perf/http/run reads both the same way. Latency: from connect() to the
 * answer's last byte.
 *
 * Usage: http_tls_handshakes --addr 127.0.0.1:PORT --events FILE [--path /v1/events?ack=accepted]
 *                            [--connections N] [--duration S]
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net.h"

#define MAX_CONNS  1024
#define MAX_STATUS 600

typedef struct conn {
    int fd;
    SSL *ssl;
    enum { TCP_CONNECT, HANDSHAKE, WRITE, READ } phase;
    uint64_t start_us;
    const char *req;
    size_t req_len, req_off;
    char in[4096];
    size_t in_len;
} conn;

typedef struct requests {
    char **text;
    size_t *len;
    size_t n, next;
} requests;

static SSL_CTX *ctx;
static int ep;
static struct sockaddr_storage server; /* net_parse_addr()'s */
static socklen_t server_len;
static requests reqs;
static unsigned long statuses[MAX_STATUS], resumed, requests_sent;
static unsigned long err_connect, err_read, err_write;
static uint32_t *lat;
static size_t nlat, caplat;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* One request per line of the events file, formatted once. */
static int load_requests(const char *path, const char *target, const char *addr)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    if (f == NULL)
        return -1;
    while ((n = getline(&line, &cap, f)) > 0) {
        char *r;
        int len;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        len = asprintf(&r,
                       "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/cloudevents+json\r\n"
                       "Content-Length: %zd\r\nConnection: close\r\n\r\n%s",
                       target, addr, n, line);
        if (len < 0)
            break;
        reqs.text = realloc(reqs.text, (reqs.n + 1) * sizeof(*reqs.text));
        reqs.len = realloc(reqs.len, (reqs.n + 1) * sizeof(*reqs.len));
        if (reqs.text == NULL || reqs.len == NULL)
            abort();
        reqs.text[reqs.n] = r;
        reqs.len[reqs.n++] = (size_t)len;
    }
    free(line);
    fclose(f);
    return reqs.n > 0 ? 0 : -1;
}

static void watch(conn *c, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, op, c->fd, &ev);
}

static void conn_close(conn *c)
{
    if (c->ssl)
        SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0)
        close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
}

static int conn_open(conn *c)
{
    int one = 1;

    c->fd = socket(server.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->start_us = now_us();
    c->in_len = 0;
    c->req_off = 0;
    c->req = reqs.text[reqs.next];
    c->req_len = reqs.len[reqs.next];
    reqs.next = (reqs.next + 1) % reqs.n;
    if ((c->ssl = SSL_new(ctx)) == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
        return -1;
    SSL_set_connect_state(c->ssl);
    c->phase = TCP_CONNECT;
    if (connect(c->fd, (struct sockaddr *)&server, server_len) != 0 && errno != EINPROGRESS)
        return -1;
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
    return 0;
}

/* The answer is whole once its headers and Content-Length bytes are in. Returns the status, 0: not yet. */
static int answer_complete(conn *c)
{
    char *end, *cl;
    size_t head, body = 0;

    c->in[c->in_len] = '\0';
    if ((end = strstr(c->in, "\r\n\r\n")) == NULL)
        return 0;
    head = (size_t)(end - c->in) + 4;
    for (cl = c->in; (cl = strcasestr(cl, "\r\ncontent-length:")) != NULL && cl < end; cl += 2) {
        body = strtoul(cl + 17, NULL, 10);
        break;
    }
    if (c->in_len < head + body)
        return 0;
    return strncmp(c->in, "HTTP/1.", 7) == 0 ? atoi(c->in + 9) : -1;
}

/* Drives a connection as far as it goes; returns 1 once it is finished (answered or failed). */
static int conn_step(conn *c)
{
    int r, e;

    for (;;) {
        switch (c->phase) {
        case TCP_CONNECT: {
            int soerr = 0;
            socklen_t len = sizeof(soerr);
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
                err_connect++;
                return 1;
            }
            c->phase = HANDSHAKE;
            break;
        }
        case HANDSHAKE:
            if ((r = SSL_connect(c->ssl)) != 1)
                goto want;
            if (SSL_session_reused(c->ssl))
                resumed++;
            c->phase = WRITE;
            break;
        case WRITE: {
            size_t n;
            if ((r = SSL_write_ex(c->ssl, c->req + c->req_off, c->req_len - c->req_off, &n)) != 1)
                goto want;
            c->req_off += n;
            if (c->req_off == c->req_len) {
                requests_sent++;
                c->phase = READ;
            }
            break;
        }
        case READ: {
            size_t n;
            int status;
            if ((r = SSL_read_ex(c->ssl, c->in + c->in_len, sizeof(c->in) - 1 - c->in_len, &n)) != 1)
                goto want;
            c->in_len += n;
            if ((status = answer_complete(c)) == 0) {
                if (c->in_len == sizeof(c->in) - 1) {
                    err_read++;
                    return 1;
                }
                break;
            }
            if (status > 0 && status < MAX_STATUS)
                statuses[status]++;
            else
                err_read++;
            if (nlat == caplat) {
                caplat = caplat ? caplat * 2 : 65536;
                if ((lat = realloc(lat, caplat * sizeof(*lat))) == NULL)
                    abort();
            }
            lat[nlat++] = (uint32_t)(now_us() - c->start_us);
            return 1;
        }
        }
    }
want:
    e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        watch(c, EPOLLIN, EPOLL_CTL_MOD);
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        watch(c, EPOLLOUT, EPOLL_CTL_MOD);
        return 0;
    }
    ERR_clear_error();
    if (c->phase == HANDSHAKE)
        err_connect++;
    else if (c->phase == WRITE)
        err_write++;
    else
        err_read++;
    return 1;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t percentile(double p)
{
    if (nlat == 0)
        return 0;
    return lat[(size_t)((double)(nlat - 1) * p / 100.0 + 0.5)];
}

int main(int argc, char **argv)
{
    char errbuf[128];
    const char *addr = NULL, *events = NULL, *target = "/v1/events?ack=accepted";
    int nconns = 64;
    double duration = 10;
    static conn conns[MAX_CONNS];
    struct epoll_event evs[MAX_CONNS];
    uint64_t t0, deadline, t1;
    unsigned long ok = 0, non2xx = 0;
    struct rusage ru;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc)
            addr = argv[++i];
        else if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
            events = argv[++i];
        else if (strcmp(argv[i], "--path") == 0 && i + 1 < argc)
            target = argv[++i];
        else if (strcmp(argv[i], "--connections") == 0 && i + 1 < argc)
            nconns = atoi(argv[++i]);
        else if (strcmp(argv[i], "--duration") == 0 && i + 1 < argc)
            duration = atof(argv[++i]);
        else {
            addr = NULL;
            break;
        }
    }
    if (addr == NULL || events == NULL || nconns < 1 || nconns > MAX_CONNS || duration <= 0 ||
        net_parse_addr(addr, &server, &server_len, errbuf, sizeof(errbuf)) != 0) {
        fprintf(stderr,
                "usage: %s --addr 127.0.0.1:PORT --events FILE [--path TARGET] [--connections 1..%d] "
                "[--duration S]\n",
                argv[0], MAX_CONNS);
        return 2;
    }
    if (load_requests(events, target, addr) != 0) {
        fprintf(stderr, "tls_handshakes: no events in %s\n", events);
        return 1;
    }
    /* No resumption: no client session cache, no tickets asked for, a new SSL per connection. */
    if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
        return 1;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        return 1;

    t0 = now_us();
    deadline = t0 + (uint64_t)(duration * 1e6);
    for (int i = 0; i < nconns; i++)
        if (conn_open(&conns[i]) != 0) {
            fprintf(stderr, "tls_handshakes: cannot connect to %s: %s\n", addr, strerror(errno));
            return 1;
        }
    while ((t1 = now_us()) < deadline) {
        int n = epoll_wait(ep, evs, MAX_CONNS, (int)((deadline - t1) / 1000 + 1));
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c->fd < 0 || !conn_step(c))
                continue;
            conn_close(c);
            if (now_us() < deadline && conn_open(c) != 0) {
                err_connect++;
                conn_close(c);
            }
        }
    }
    t1 = now_us();
    for (int i = 0; i < nconns; i++)
        conn_close(&conns[i]);

    qsort(lat, nlat, sizeof(*lat), cmp_u32);
    printf("RESULT duration_us=%llu requests=%lu ok=", (unsigned long long)(t1 - t0), requests_sent);
    for (int s = 0; s < MAX_STATUS; s++)
        if (s >= 200 && s < 300)
            ok += statuses[s];
        else
            non2xx += statuses[s];
    printf("%lu non2xx=%lu statuses=", ok, non2xx);
    for (int s = 0, first = 1; s < MAX_STATUS; s++)
        if (statuses[s]) {
            printf("%s%d:%lu", first ? "" : ",", s, statuses[s]);
            first = 0;
        }
    if (ok + non2xx == 0)
        printf("none");
    printf(" errors_connect=%lu errors_read=%lu errors_write=%lu errors_timeout=0 p50_us=%u p90_us=%u "
           "p99_us=%u max_us=%u events_per_request=1 resumed=%lu",
           err_connect, err_read, err_write, percentile(50), percentile(90), percentile(99),
           nlat ? lat[nlat - 1] : 0, resumed);
    getrusage(RUSAGE_SELF, &ru);
    printf(" client_cpu_us=%lld\n", (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
                                        (long long)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec));
    SSL_CTX_free(ctx);
    return 0;
}
