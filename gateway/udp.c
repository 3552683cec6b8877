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

#include "envelope.h"
#include "json.h"
#include "log.h"
#include "net.h"
#include "producer.h"
#include "prom.h"
#include "wire.h"

/* Datagrams taken per recvmmsg. */
#define UDP_BATCH 32

typedef struct udp_thread {
    udp_front *u;
    pthread_t tid;
    int started;
    int fd;
    int index;
} udp_thread;

struct udp_front {
    gateway *gw;
    udp_thread *threads;
    int n_threads;
    size_t max_datagram; /* each receive buffer; a longer datagram is truncated and dropped */
    atomic_int stop;
    atomic_llong last_log_ms;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Count a dropped datagram under its reason, and log it at most once a
 * second with the totals so far: a flood must not flood the log.
 */
static void drop(udp_front *u, const char *peer, const char *reason, const char *detail)
{
    gateway_metrics *m = &u->gw->metrics;
    long long now = now_ms(), last = atomic_load(&u->last_log_ms);

    gateway_metrics_refused(m, GW_UDP, reason);
    if (now - last < 1000 || !atomic_compare_exchange_strong(&u->last_log_ms, &last, now))
        return;
    LOG_WARN("udp",
             "dropped datagram peer=%s reason=%s: %s (dropped so far: invalid=%llu truncated=%llu "
             "overloaded=%llu)",
             peer, reason, detail,
             (unsigned long long)(gateway_metrics_refused_count(m, GW_UDP, GW_R_malformed_json) +
                                  gateway_metrics_refused_count(m, GW_UDP, GW_R_malformed_protobuf) +
                                  gateway_metrics_refused_count(m, GW_UDP, GW_R_invalid_event) +
                                  gateway_metrics_refused_count(m, GW_UDP, GW_R_too_large) +
                                  gateway_metrics_refused_count(m, GW_UDP, GW_R_empty)),
             (unsigned long long)gateway_metrics_refused_count(m, GW_UDP, GW_R_truncated),
             (unsigned long long)gateway_metrics_refused_count(m, GW_UDP, GW_R_overloaded));
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * One receive thread's scratch, reused from batch to batch so the steady
 * state allocates only what travels on (the messages).
 */
typedef struct udp_work {
    ing_event_batch b;  /* one datagram's events */
    produce_msg **msgs; /* this recvmmsg batch's messages, datagram after datagram */
    size_t n_msgs, cap_msgs;
    size_t first[UDP_BATCH + 1];  /* datagram k's messages are msgs[first[k] .. first[k + 1]) */
    const char *peer[UDP_BATCH];  /* for the log of a datagram dropped at the queue */
    int n_dgrams;                 /* datagrams with messages waiting in msgs */
    struct sockaddr_storage last; /* the peer formatted last, and how */
    socklen_t last_len;
    char last_peer[64];
    char peers[UDP_BATCH][64];
} udp_work;

static int reserve(udp_work *w, size_t more)
{
    if (w->n_msgs + more <= w->cap_msgs)
        return 0;
    size_t cap = w->cap_msgs ? w->cap_msgs : 64;
    while (cap < w->n_msgs + more)
        cap *= 2;
    produce_msg **m = realloc(w->msgs, cap * sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    w->msgs = m;
    w->cap_msgs = cap;
    return 0;
}

/*
 * One datagram: parse and validate all its events, and make their messages
 * (appended to w->msgs as datagram w->n_dgrams); any fault drops all of it.
 */
static void handle(udp_front *u, udp_work *w, const unsigned char *buf, size_t len, const char *peer,
                   int64_t received)
{
    gateway *gw = u->gw;
    ing_event_batch *b = &w->b;
    ing_event_error err;
    size_t p = 0, made = 0;
    int rc;

    ing_event_batch_reset(b);
    while (p < len && (buf[p] == ' ' || buf[p] == '\t' || buf[p] == '\r' || buf[p] == '\n'))
        p++;
    if (p == len) {
        drop(u, peer, "empty", "an empty datagram");
        return;
    }
    err.code = NULL;
    if (buf[p] == '{') {
        /* One JSON event is NDJSON of one line. */
        rc = json_parse_events((const char *)buf, len, JSON_FORM_NDJSON, &gw->lim, b, &err);
    } else {
        ing_event *ev = ing_event_batch_add(b);
        rc = ev ? ing_event_from_wire(buf, len, ev, &gw->lim, &err) : -ENOMEM;
        if (rc == -EBADMSG)
            rc = ing_event_error_set(&err, "malformed_protobuf", -1, "",
                                     "not JSON, and not a protobuf CloudEvent");
    }
    for (size_t i = 0; rc == 0 && i < b->n; i++)
        if ((rc = ing_event_validate(&b->ev[i], &gw->lim, b->n > 1 ? (long)i : -1, &err)) == 0)
            rc = ing_event_assign_id(&b->ev[i]);
    if (rc != 0) {
        drop(u, peer, rc == -ENOMEM ? "internal" : err.code, rc == -ENOMEM ? "out of memory" : err.message);
        return;
    }
    if (reserve(w, b->n) != 0)
        goto oom;
    for (; made < b->n; made++)
        if ((w->msgs[w->n_msgs + made] = produce_msg_new(&b->ev[made], received, ENVELOPE_UDP, peer,
                                                         gw->cfg->gateway_id, NULL)) == NULL)
            goto oom;
    w->peer[w->n_dgrams] = peer;
    w->first[w->n_dgrams] = w->n_msgs;
    w->n_msgs += made;
    w->first[++w->n_dgrams] = w->n_msgs;
    return;
oom:
    while (made > 0)
        produce_msg_free(w->msgs[w->n_msgs + --made]);
    drop(u, peer, "internal", "out of memory");
}

/* Datagrams [lo, hi) of the batch that the queue did not take: dropped, each under its reason. */
static void refuse(udp_front *u, udp_work *w, int lo, int hi, int rc)
{
    for (int k = lo; k < hi; k++) {
        for (size_t i = w->first[k]; i < w->first[k + 1]; i++)
            produce_msg_free(w->msgs[i]);
        drop(u, w->peer[k], rc == -EPIPE ? "shutting_down" : "overloaded",
             rc == -EPIPE ? "the gateway is stopping" : "the queue is above its high-water mark");
    }
}

/*
 * Queue what the batch's datagrams made: one push (one lock, at most one
 * producer wake-up) for the whole batch. Above the high-water mark nothing
 * is taken; when the queue has room for some but not all, each datagram is
 * tried alone, so a datagram is still all or nothing.
 */
static void flush(udp_front *u, udp_work *w)
{
    queue *q = u->gw->q;
    int rc = -EAGAIN;

    if (w->n_dgrams == 0)
        return;
    if (!queue_above_high_water(q))
        rc = queue_push_n(q, (void *const *)w->msgs, w->n_msgs);
    if (rc == 0) {
        gateway_metrics_events(&u->gw->metrics, GW_UDP, w->n_msgs);
    } else if (rc != -EPIPE && !queue_above_high_water(q)) {
        /* -EAGAIN (no room for all) or -EINVAL (more than the whole queue holds) */
        for (int k = 0; k < w->n_dgrams; k++) {
            size_t n = w->first[k + 1] - w->first[k];
            if (!queue_above_high_water(q) &&
                (rc = queue_push_n(q, (void *const *)&w->msgs[w->first[k]], n)) == 0)
                gateway_metrics_events(&u->gw->metrics, GW_UDP, n);
            else
                refuse(u, w, k, k + 1, rc == 0 ? -EAGAIN : rc);
        }
    } else {
        refuse(u, w, 0, w->n_dgrams, rc);
    }
    w->n_msgs = 0;
    w->n_dgrams = 0;
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
    ing_event_batch_init(&w->b);
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
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                LOG_WARN("udp", "recvmmsg: %s", strerror(errno));
            continue;
        }
        uint64_t started = prom_now_ns();
        int64_t received = now_ns();
        for (int i = 0; i < n; i++) {
            const char *peer = peer_name(w, i, &peers[i], msgs[i].msg_hdr.msg_namelen);
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
                drop(u, peer, "truncated", "larger than --udp-max-datagram");
            else
                handle(u, w, iov[i].iov_base, msgs[i].msg_len, peer, received);
        }
        flush(u, w);
        gateway_metrics_requests(&u->gw->metrics, GW_UDP, started, (size_t)n);
    }
    ing_event_batch_clear(&w->b);
    free(w->msgs);
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
        if ((t->fd = net_bind(addr, SOCK_DGRAM, 1, err, errlen)) < 0)
            goto fail;
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
    udp_front_stop(u);
    return NULL;
}

void udp_front_stop(udp_front *u)
{
    if (u == NULL)
        return;
    atomic_store(&u->stop, 1);
    for (int i = 0; i < u->n_threads; i++) {
        if (u->threads[i].started)
            pthread_join(u->threads[i].tid, NULL);
        close(u->threads[i].fd);
    }
    const gateway_metrics *m = &u->gw->metrics;
    unsigned long long refused = 0;
    for (int r = 0; r < GW_N_REASONS; r++)
        refused += gateway_metrics_refused_count(m, GW_UDP, (gw_reason)r);
    LOG_INFO("udp", "stopped datagrams=%llu events=%llu dropped=%llu truncated=%llu overloaded=%llu",
             (unsigned long long)atomic_load(&m->requests[GW_UDP]),
             (unsigned long long)atomic_load(&m->events[GW_UDP]), refused,
             (unsigned long long)gateway_metrics_refused_count(m, GW_UDP, GW_R_truncated),
             (unsigned long long)gateway_metrics_refused_count(m, GW_UDP, GW_R_overloaded));
    free(u->threads);
    free(u);
}
