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

/* One datagram: parse, validate all, queue all or none. */
static void handle(udp_front *u, const unsigned char *buf, size_t len, const char *peer)
{
    gateway *gw = u->gw;
    event_batch b;
    event_error err;
    produce_msg **msgs = NULL;
    size_t n_msgs = 0, p = 0;
    int rc;

    event_batch_init(&b);
    memset(&err, 0, sizeof(err));
    while (p < len && (buf[p] == ' ' || buf[p] == '\t' || buf[p] == '\r' || buf[p] == '\n'))
        p++;
    if (p == len) {
        drop(u, peer, "empty", "an empty datagram");
        return;
    }
    if (buf[p] == '{') {
        /* One JSON event is NDJSON of one line. */
        rc = json_parse_events((const char *)buf, len, JSON_FORM_NDJSON, &gw->lim, &b, &err);
    } else {
        Ingest__V1__CloudEvent *ce = ingest__v1__cloud_event__unpack(NULL, len, buf);
        if (ce == NULL) {
            rc = event_error_set(&err, "malformed_protobuf", -1, "",
                                 "not JSON, and not a protobuf CloudEvent");
        } else {
            event *ev = event_batch_add(&b);
            rc = ev ? event_from_proto(ce, ev, &gw->lim, &err) : -ENOMEM;
            ingest__v1__cloud_event__free_unpacked(ce, NULL);
        }
    }
    for (size_t i = 0; rc == 0 && i < b.n; i++)
        if ((rc = event_validate(&b.ev[i], &gw->lim, b.n > 1 ? (long)i : -1, &err)) == 0)
            rc = event_assign_id(&b.ev[i]);
    if (rc != 0) {
        drop(u, peer, rc == -ENOMEM ? "internal" : err.code, rc == -ENOMEM ? "out of memory" : err.message);
        goto out;
    }
    if (queue_above_high_water(gw->q)) {
        drop(u, peer, "overloaded", "the queue is above its high-water mark");
        goto out;
    }
    if ((msgs = calloc(b.n, sizeof(*msgs))) == NULL)
        goto oom;
    int64_t received = now_ns();
    for (; n_msgs < b.n; n_msgs++)
        if ((msgs[n_msgs] = produce_msg_new(&b.ev[n_msgs], received, ENVELOPE_UDP, peer, gw->cfg->gateway_id,
                                            NULL)) == NULL)
            goto oom;
    if ((rc = queue_push_n(gw->q, (void *const *)msgs, n_msgs)) != 0) {
        drop(u, peer, rc == -EPIPE ? "shutting_down" : "overloaded", "the queue is full");
        goto out;
    }
    gateway_metrics_events(&gw->metrics, GW_UDP, n_msgs);
    n_msgs = 0;
    goto out;
oom:
    drop(u, peer, "internal", "out of memory");
out:
    for (size_t i = 0; i < n_msgs; i++)
        produce_msg_free(msgs[i]);
    free(msgs);
    event_batch_clear(&b);
}

static void *udp_main(void *arg)
{
    udp_thread *t = arg;
    udp_front *u = t->u;
    struct mmsghdr msgs[UDP_BATCH];
    struct iovec iov[UDP_BATCH];
    struct sockaddr_storage peers[UDP_BATCH];
    unsigned char *bufs = malloc((size_t)UDP_BATCH * u->max_datagram);
    char name[16], peer[64];

    snprintf(name, sizeof(name), "gw-udp-%d", t->index);
    pthread_setname_np(pthread_self(), name);
    if (bufs == NULL) {
        LOG_ERROR("udp", "out of memory");
        return NULL;
    }
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
        uint64_t received = prom_now_ns();
        for (int i = 0; i < n; i++) {
            net_format((struct sockaddr *)&peers[i], peer, sizeof(peer));
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
                drop(u, peer, "truncated", "larger than --udp-max-datagram");
            else
                handle(u, iov[i].iov_base, msgs[i].msg_len, peer);
            gateway_metrics_request(&u->gw->metrics, GW_UDP, received);
        }
    }
    free(bufs);
    return NULL;
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
        setsockopt(t->fd, SOL_SOCKET, SO_RCVBUF, &rb, sizeof(rb));
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
