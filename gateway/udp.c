#include "udp.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admit.h"
#include "json.h"
#include "log.h"
#include "net.h"
#include "producer.h"
#include "prom.h"
#include "wire.h"
#include "mono.h"

/* Datagrams taken per recvmmsg. */
#define UDP_BATCH 32
/* How often a busy receive thread reads its socket's drop counter (an idle one: at each receive timeout). */
#define UDP_DROPS_POLL_MS 100

typedef struct udp_thread {
    udp_front *u;
    pthread_t tid;
    int started;
    int fd;
    int index;
    uint32_t drops_seen; /* the socket's kernel drop counter when last read */
    long long drops_read_ms;
} udp_thread;

struct udp_front {
    gateway *gw;
    udp_thread *threads;
    int n_threads;
    size_t max_datagram; /* each receive buffer; a longer datagram is truncated and dropped */
    atomic_int stop;
    atomic_llong last_log_ms;
};

/*
 * Log a dropped datagram at most once a second, with the totals so far: a
 * flood must not flood the log. (The admission stage counted it already.)
 * The kernel's drops have no peer (NULL).
 */
static void log_drop(udp_front *u, const char *peer, gw_reason reason, const char *detail)
{
    const gateway_metrics *m = &u->gw->metrics;
    long long now = mono_ms(), last = atomic_load(&u->last_log_ms);
    unsigned long long invalid = 0;

    if (now - last < 1000 || !atomic_compare_exchange_strong(&u->last_log_ms, &last, now))
        return;
    for (int r = 0; r < GW_N_REASONS; r++)
        if (!gw_reasons[r].dropped && r != GW_R_truncated && r != GW_R_rate_limited)
            invalid += gateway_metrics_refused_count(m, GW_UDP, (gw_reason)r);
    LOG_WARN("udp",
             "dropped %s%s reason=%s: %s (dropped so far: invalid=%llu truncated=%llu rate_limited=%llu "
             "overloaded=%llu socket_buffer=%llu)",
             peer ? "datagram peer=" : "datagrams", peer ? peer : "", gw_reasons[reason].name, detail,
             invalid, (unsigned long long)gateway_metrics_refused_count(m, GW_UDP, GW_R_truncated),
             (unsigned long long)gateway_metrics_refused_count(m, GW_UDP, GW_R_rate_limited),
             (unsigned long long)gateway_metrics_refused_count(m, GW_UDP, GW_R_overloaded),
             (unsigned long long)gateway_metrics_refused_count(m, GW_UDP, GW_R_socket_buffer));
}

/*
 * Count what the kernel dropped on this thread's socket since the last look
 * (its receive buffer full, nearly always) as socket_buffer drops. Polled
 * with SO_MEMINFO rather than read from SO_RXQ_OVFL's cmsg: that comes only
 * with the next datagram taken, so the drops of a flood's last burst would
 * wait for traffic that may never come, and each datagram would carry it.
 */
static void count_kernel_drops(udp_thread *t)
{
    uint32_t now, n;
    char detail[96];

    if (net_socket_drops(t->fd, &now) != 0)
        return;
    n = now - t->drops_seen; /* modulo 2^32: the counter wraps */
    t->drops_seen = now;
    if (n == 0)
        return;
    gateway_metrics_refused_n(&t->u->gw->metrics, GW_UDP, GW_R_socket_buffer, n);
    snprintf(detail, sizeof(detail), "%u by the kernel, the receive buffer full (--udp-rcvbuf)", n);
    log_drop(t->u, NULL, GW_R_socket_buffer, detail);
}

static void on_refused(gw_admission *a, const char *peer, const gw_refusal *r)
{
    log_drop(a->user, peer, r->reason, r->message);
}

/*
 * One receive thread's scratch, reused from batch to batch so the steady
 * state allocates only what travels on (the records).
 */
typedef struct udp_work {
    gw_admission adm;             /* the recvmmsg batch: one unit per datagram taken */
    struct sockaddr_storage last; /* the peer formatted last, and how */
    socklen_t last_len;
    char last_peer[64];
    char peers[UDP_BATCH][64];
} udp_work;

typedef struct datagram {
    const unsigned char *buf;
    size_t len;
} datagram;

/* The admission stage's parser for a datagram: JSON (NDJSON) when it starts with '{', else a protobuf
 * CloudEvent. */
static int parse_datagram(gw_admission *a, void *arg)
{
    const datagram *d = arg;
    const ing_event_limits *lim = &a->gw->lim;
    ing_event_error err;
    size_t p = 0;
    int rc;

    memset(&err, 0, sizeof(err));
    while (p < d->len && (d->buf[p] == ' ' || d->buf[p] == '\t' || d->buf[p] == '\r' || d->buf[p] == '\n'))
        p++;
    if (p == d->len)
        return gw_admission_refuse(a, GW_R_empty, -1, "an empty datagram");
    if (d->buf[p] == '{') {
        /* One JSON event is NDJSON of one line; NDJSON names its events by index. */
        a->multi = 1;
        rc = json_parse_events((const char *)d->buf, d->len, JSON_FORM_NDJSON, lim, &a->batch, &err);
    } else {
        ing_event *ev = ing_event_batch_add(&a->batch);
        if (ev == NULL)
            return -ENOMEM;
        rc = ing_event_from_wire(d->buf, d->len, ev, lim, &err);
        if (rc == -EBADMSG)
            return gw_admission_refuse(a, GW_R_malformed_protobuf, -1,
                                       "not JSON, and not a protobuf CloudEvent");
    }
    return rc == -EINVAL ? gw_admission_refuse_error(a, &err) : rc;
}

/* One datagram through the admission stage: refused before parsing when the gateway cannot take it. */
static void handle(udp_work *w, const unsigned char *buf, size_t len, const char *peer,
                   const struct sockaddr *sa)
{
    datagram d = {buf, len};

    w->adm.peer = peer;
    w->adm.request_bytes = len;
    gw_admission_set_source(&w->adm, sa); /* anonymous's quotas are per source address */
    if (gw_admit_gate(&w->adm, NULL, 0) == 0)
        gw_admit_prepare(&w->adm, parse_datagram, &d, 0);
}

/* "ip:port" of a peer; a sender usually sends many datagrams from one socket, so the last is kept. */
static const char *peer_name(udp_work *w, int k, const struct sockaddr_storage *sa, socklen_t len)
{
    if (len != w->last_len || memcmp(sa, &w->last, len) != 0) {
        net_format((const struct sockaddr *)sa, w->last_peer, sizeof(w->last_peer));
        memcpy(&w->last, sa, len);
        w->last_len = len;
    }
    /* The log of a drop at the queue names it after later datagrams were formatted: each keeps a copy. */
    memcpy(w->peers[k], w->last_peer, sizeof(w->peers[k]));
    return w->peers[k];
}

static void *udp_main(void *arg)
{
    udp_thread *t = arg;
    udp_front *u = t->u;
    struct mmsghdr msgs[UDP_BATCH];
    struct iovec iov[UDP_BATCH];
    struct sockaddr_storage peers[UDP_BATCH];
    unsigned char *bufs = malloc((size_t)UDP_BATCH * u->max_datagram);
    udp_work *w = calloc(1, sizeof(*w));
    char name[16];

    snprintf(name, sizeof(name), "gw-udp-%d", t->index);
    pthread_setname_np(pthread_self(), name);
    if (bufs == NULL || w == NULL) {
        LOG_ERROR("udp", "out of memory");
        free(bufs);
        free(w);
        return NULL;
    }
    gw_admission_init(&w->adm, u->gw, GW_UDP, NULL, 0);
    w->adm.committed = 0;
    w->adm.all_errors = 0;
    w->adm.on_refused = on_refused;
    w->adm.user = u;
    while (!atomic_load(&u->stop)) {
        for (int i = 0; i < UDP_BATCH; i++) {
            iov[i].iov_base = bufs + (size_t)i * u->max_datagram;
            iov[i].iov_len = u->max_datagram;
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &peers[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(peers[i]);
        }
        /* Blocks for the first (SO_RCVTIMEO bounds it, for the stop flag), then takes what is waiting. */
        int n = recvmmsg(t->fd, msgs, UDP_BATCH, MSG_WAITFORONE, NULL);
        long long now = mono_ms();
        if (n < 0 || now - t->drops_read_ms >= UDP_DROPS_POLL_MS) {
            t->drops_read_ms = now;
            count_kernel_drops(t);
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                LOG_WARN("udp", "recvmmsg: %s", strerror(errno));
            continue;
        }
        uint64_t started = prom_now_ns();
        gw_admission_reset(&w->adm, started);
        for (int i = 0; i < n; i++) {
            const char *peer = peer_name(w, i, &peers[i], msgs[i].msg_hdr.msg_namelen);
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                gw_admit_count_refused(u->gw, GW_UDP, GW_R_truncated);
                log_drop(u, peer, GW_R_truncated, "larger than --udp-max-datagram");
            } else {
                handle(w, iov[i].iov_base, msgs[i].msg_len, peer, (const struct sockaddr *)&peers[i]);
            }
        }
        /* The batch's datagrams in one queue operation: one lock, at most one producer wake-up. */
        gw_admit_push(&w->adm, 0);
        gw_admit_count_answered(u->gw, GW_UDP, started, (size_t)n);
    }
    gw_admission_clear(&w->adm);
    free(w);
    free(bufs);
    return NULL;
}

/*
 * The socket's receive buffer, as large as asked: past net.core.rmem_max when
 * the process may (CAP_NET_ADMIN), else as large as that sysctl allows, which
 * is said once: a buffer smaller than configured loses bursts without a word.
 */
static void set_rcvbuf(int fd, int bytes, int first)
{
    int got = 0;
    socklen_t len = sizeof(got);

    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes)) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
    /* Linux reports twice what was set (the rest is its bookkeeping). */
    if (first && getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) == 0 && got / 2 < bytes)
        LOG_WARN("udp",
                 "receive buffer is %d bytes, not the %d of --udp-rcvbuf: net.core.rmem_max caps it "
                 "(raise that sysctl, or give the gateway CAP_NET_ADMIN)",
                 got / 2, bytes);
}

static void udp_free(void *self);

udp_front *udp_front_start(gateway *gw, char *err, size_t errlen)
{
    const char *addr = gw->cfg->udp_addr;
    int threads = (int)gw->cfg->udp_threads;
    udp_front *u = calloc(1, sizeof(*u));
    struct timeval tv = {0, 200000};
    int rb = gw->cfg->udp_rcvbuf > (size_t)INT32_MAX ? INT32_MAX : (int)gw->cfg->udp_rcvbuf;

    if (u == NULL || (u->threads = calloc((size_t)threads, sizeof(*u->threads))) == NULL) {
        snprintf(err, errlen, "out of memory");
        free(u);
        return NULL;
    }
    u->gw = gw;
    u->max_datagram = gw->cfg->udp_max_datagram;
    /* As for HTTP: a port another process serves is an error, not silently shared. */
    int probe = net_bind(addr, SOCK_DGRAM, 0, err, errlen);
    if (probe < 0)
        goto fail;
    close(probe);
    for (; u->n_threads < threads; u->n_threads++) {
        udp_thread *t = &u->threads[u->n_threads];
        t->u = u;
        t->index = u->n_threads;
        if ((t->fd = net_bind(addr, SOCK_DGRAM, 1, err, errlen)) < 0) {
            t->fd = -1;
            goto fail;
        }
        /* Blocking with a timeout: the thread sleeps in the kernel, and sees the stop flag 5 times a second.
         */
        int flags = 0;
        set_rcvbuf(t->fd, rb, u->n_threads == 0);
        setsockopt(t->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        flags = fcntl(t->fd, F_GETFL);
        fcntl(t->fd, F_SETFL, flags & ~O_NONBLOCK);
        if (pthread_create(&t->tid, NULL, udp_main, t) != 0) {
            snprintf(err, errlen, "cannot start UDP thread %d", t->index);
            close(t->fd);
            goto fail;
        }
        t->started = 1;
    }
    return u;

fail:
    udp_free(u);
    return NULL;
}

/* Stop receiving: the threads see the flag within their receive timeout and end; what was queued stays. */
static void udp_stop_accepting(void *self)
{
    udp_front *u = self;

    atomic_store(&u->stop, 1);
    for (int i = 0; i < u->n_threads; i++) {
        if (u->threads[i].started)
            pthread_join(u->threads[i].tid, NULL);
        u->threads[i].started = 0;
        /* The last drops, up to the close: the thread is gone, and nobody reads the socket now. */
        if (u->threads[i].fd >= 0) {
            count_kernel_drops(&u->threads[i]);
            close(u->threads[i].fd);
        }
        u->threads[i].fd = -1;
    }
}

/* Nothing waits for Kafka: a datagram is answered by nobody. */
static size_t udp_pending(void *self)
{
    (void)self;
    return 0;
}

static void udp_nothing(void *self)
{
    (void)self;
}

static void udp_free(void *self)
{
    udp_front *u = self;

    if (u == NULL)
        return;
    udp_stop_accepting(u);
    const gateway_metrics *m = &u->gw->metrics;
    unsigned long long refused = 0;
    for (int r = 0; r < GW_N_REASONS; r++)
        refused += gateway_metrics_refused_count(m, GW_UDP, (gw_reason)r);
    /* datagrams are those read; socket_buffer ones the kernel dropped before: both are in dropped. */
    LOG_INFO("udp",
             "stopped datagrams=%llu events=%llu dropped=%llu truncated=%llu overloaded=%llu "
             "socket_buffer=%llu",
             (unsigned long long)atomic_load(&m->requests[GW_UDP]),
             (unsigned long long)atomic_load(&m->events[GW_UDP]), refused,
             (unsigned long long)gateway_metrics_refused_count(m, GW_UDP, GW_R_truncated),
             (unsigned long long)gateway_metrics_refused_count(m, GW_UDP, GW_R_overloaded),
             (unsigned long long)gateway_metrics_refused_count(m, GW_UDP, GW_R_socket_buffer));
    free(u->threads);
    free(u);
}

const gw_front_ops udp_front_ops = {
    .name = "udp",
    .stop_accepting = udp_stop_accepting,
    .pending = udp_pending,
    .abort_waiting = udp_nothing,
    .close = udp_nothing,
    .free = udp_free,
};
