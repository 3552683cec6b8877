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
 * With --kafka BOOTSTRAP --topic T it is perf/udp's "forwarder" instead: the
 * least any gateway must do. Each datagram received (not truncated) becomes
 * one Kafka record, handed to librdkafka by the receive thread itself (no
 * queue, no parsing, no encoding): the datagram's bytes as the value
 * (RD_KAFKA_MSG_F_COPY), a key and the four headers the gateway sends, of the
 * same sizes (forward() says how). The producer is the gateway's
 * (gateway/producer.c): kafka_producer_defaults, delivery reports counted by
 * one thread in rd_kafka_poll(), a 1 ms wait for room on a full local queue.
 * Its highest rate without loss is the ceiling of any gateway that produces
 * each datagram to librdkafka on this machine.
 *
 * Usage: udp_bare_receiver [--addr 127.0.0.1:PORT] [--threads N] [--rcvbuf BYTES]
 *                          [--kafka BOOTSTRAP --topic T]
 * Logs its set-up when listening; stops on SIGTERM or SIGINT and logs, like
 * the gateway's stop line,
 *   udp_bare stopped datagrams=N truncated=N
 * or, forwarding, once librdkafka has flushed (up to 30 s),
 *   udp_fwd stopped datagrams=N truncated=N produced=N delivered=N failed=N
 * to stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "kafka.h"
#include "net.h"

#define MAX_THREADS 64
/* As in gateway/udp.c. */
#define UDP_BATCH        32
#define UDP_MAX_DATAGRAM 65535

/* How long the stop waits for librdkafka to deliver what it holds, as the gateway's. */
#define FLUSH_MS 30000
/* The gateway's ce_id is a 36-character UUID when it assigns one. */
#define ID_LEN  36
#define KEY_LEN 10

static atomic_int stop;
static atomic_ullong datagrams, truncated;
static const char *prog = "udp_bare";

/* The forwarding mode's producer, shared by the receive threads (librdkafka is thread-safe). */
typedef struct forwarder {
    rd_kafka_t *rk;
    rd_kafka_topic_t *topic;
    pthread_t poller;
    int poller_started;
    atomic_int poller_stop;
    atomic_llong give_up_at; /* monotonic ms after which a full local queue fails a record; 0: never */
    atomic_ullong produced, delivered, failed;
} forwarder;

/* One receive thread: its socket, and what makes its records' ce_id unique. */
typedef struct rx_thread {
    pthread_t tid;
    int fd;
    int index;
    forwarder *fwd; /* NULL: only count */
    uint64_t seq;
    char id[ID_LEN + 1];
} rx_thread;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put_hex(char *p, uint64_t v, int width)
{
    static const char hex[] = "0123456789abcdef";

    for (int i = width - 1; i >= 0; i--) {
        p[i] = hex[v & 15];
        v >>= 4;
    }
}

/*
 * A cheap hash of the whole datagram, 8 bytes at a time, with murmur3's
 * finalizer: the sender's datagrams differ only in a few digits (id, subject),
 * and every bit of those must reach the key, so that the keys spread over the
 * partitions as the gateway's subjects do.
 */
static uint64_t dgram_hash(const unsigned char *p, size_t len)
{
    uint64_t h = 0x9e3779b97f4a7c15u ^ len, w;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdu;
    }
    for (w = 0; i < len; i++)
        w = (w << 8) | p[i];
    h = (h ^ w) * 0xff51afd7ed558ccdu;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53u;
    h ^= h >> 33;
    return h;
}

/* Delivery reports, on the poller thread (or in rd_kafka_flush() at the stop). */
static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    forwarder *f = opaque;
    (void)rk;

    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
        atomic_fetch_add_explicit(&f->delivered, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&f->failed, 1, memory_order_relaxed);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)opaque;
    fprintf(stderr, "udp_fwd: kafka: %s: %s\n", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static void *poller_main(void *arg)
{
    forwarder *f = arg;

    pthread_setname_np(pthread_self(), "fwd-delivery");
    while (!atomic_load(&f->poller_stop))
        rd_kafka_poll(f->rk, 100);
    return NULL;
}

static void forwarder_free(forwarder *f)
{
    if (f == NULL)
        return;
    if (f->poller_started) {
        atomic_store(&f->poller_stop, 1);
        pthread_join(f->poller, NULL);
    }
    if (f->topic)
        rd_kafka_topic_destroy(f->topic);
    if (f->rk)
        rd_kafka_destroy(f->rk);
    free(f);
}

/* A producer configured as the gateway's, with its delivery-report thread; NULL with the reason in errbuf. */
static forwarder *forwarder_new(const char *bootstrap, const char *topic, char *errbuf, size_t errlen)
{
    forwarder *f = calloc(1, sizeof(*f));
    rd_kafka_conf_t *conf = NULL;

    if (f == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    if ((conf = kafka_conf_new(bootstrap, kafka_producer_defaults, NULL, errbuf, errlen)) == NULL)
        goto fail;
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, f);
    if ((f->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, errlen)) == NULL)
        goto fail;
    conf = NULL; /* rd_kafka_new took it */
    if ((f->topic = rd_kafka_topic_new(f->rk, topic, NULL)) == NULL) {
        snprintf(errbuf, errlen, "topic %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
        goto fail;
    }
    if (pthread_create(&f->poller, NULL, poller_main, f) != 0) {
        snprintf(errbuf, errlen, "cannot start the delivery report thread");
        goto fail;
    }
    f->poller_started = 1;
    return f;

fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    forwarder_free(f);
    return NULL;
}

/*
 * One datagram as one record, as gateway/producer.c's produce_one() hands an
 * Envelope over, but with the datagram's bytes as they came. The key is 10
 * characters, like the gateway's subjects ("sensor/123"); ce_id 36 (a
 * UUID-shaped counter); ce_source and ce_type are the sender's event's
 * values, which the gateway copies from the event.
 */
static void forward(rx_thread *t, const unsigned char *dgram, size_t len)
{
    forwarder *f = t->fwd;
    char key[KEY_LEN];

    put_hex(key, dgram_hash(dgram, len), KEY_LEN);
    put_hex(t->id + 24, t->seq++, 12);
    for (;;) {
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
        rd_kafka_header_add(hdrs, "ce_id", -1, t->id, ID_LEN);
        rd_kafka_header_add(hdrs, "ce_source", -1, "/perf/udp/sensors", -1);
        rd_kafka_header_add(hdrs, "ce_type", -1, "com.example.sensor.reading", -1);
        rd_kafka_header_add(hdrs, "content-type", -1, "application/x-protobuf", -1);
        rd_kafka_resp_err_t err =
            rd_kafka_producev(f->rk, RD_KAFKA_V_RKT(f->topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_VALUE((void *)dgram, len), RD_KAFKA_V_KEY(key, KEY_LEN),
                              RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            atomic_fetch_add_explicit(&f->produced, 1, memory_order_relaxed);
            return;
        }
        rd_kafka_headers_destroy(hdrs); /* not taken on failure */
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            long long give_up = atomic_load(&f->give_up_at);
            if (give_up == 0 || now_ms() < give_up) {
                usleep(1000); /* the poller serves the delivery reports that make room */
                continue;
            }
        }
        fprintf(stderr, "udp_fwd: produce refused: %s\n", rd_kafka_err2str(err));
        atomic_fetch_add_explicit(&f->failed, 1, memory_order_relaxed);
        return;
    }
}

static void *receive(void *arg)
{
    rx_thread *t = arg;
    int fd = t->fd;
    struct mmsghdr msgs[UDP_BATCH];
    struct iovec iov[UDP_BATCH];
    struct sockaddr_storage peers[UDP_BATCH];
    unsigned char *bufs = malloc((size_t)UDP_BATCH * UDP_MAX_DATAGRAM);
    char name[16];

    snprintf(name, sizeof(name), "%s-%d", t->fwd ? "fwd-udp" : "bare-udp", t->index);
    pthread_setname_np(pthread_self(), name);
    if (bufs == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
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
                fprintf(stderr, "%s: recvmmsg: %s\n", prog, strerror(errno));
            continue;
        }
        atomic_fetch_add_explicit(&datagrams, (unsigned)n, memory_order_relaxed);
        for (int i = 0; i < n; i++) {
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
                atomic_fetch_add_explicit(&truncated, 1, memory_order_relaxed);
            else if (t->fwd)
                forward(t, iov[i].iov_base, msgs[i].msg_len);
        }
    }
    free(bufs);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:18190", *bootstrap = NULL, *topic = NULL;
    int n_threads = 1, rcvbuf = 4 << 20, got = 0, started = 0, rc = 1;
    socklen_t got_len = sizeof(got);
    rx_thread th[MAX_THREADS];
    forwarder *fwd = NULL;
    struct timeval tv = {0, 200000};
    char err[512];
    sigset_t sigs;
    int sig;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--addr") == 0)
            addr = argv[i + 1];
        else if (strcmp(argv[i], "--threads") == 0)
            n_threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--rcvbuf") == 0)
            rcvbuf = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--kafka") == 0)
            bootstrap = argv[i + 1];
        else if (strcmp(argv[i], "--topic") == 0)
            topic = argv[i + 1];
    }
    if (argc % 2 == 0 || n_threads < 1 || n_threads > MAX_THREADS || rcvbuf < 4096 ||
        (bootstrap == NULL) != (topic == NULL)) {
        fprintf(stderr, "usage: udp_bare_receiver [--addr HOST:PORT] [--threads N] [--rcvbuf BYTES]\n"
                        "                         [--kafka BOOTSTRAP --topic T]\n");
        return 2;
    }
    if (bootstrap)
        prog = "udp_fwd";
    /* Only the main thread takes the stop signals; librdkafka's threads, started below, inherit the mask. */
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
        fprintf(stderr, "%s: %s\n", prog, err);
        return 2;
    }
    int probe = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (probe < 0 || bind(probe, (struct sockaddr *)&ss, ss_len) != 0) {
        fprintf(stderr, "%s: %s: bind: %s\n", prog, addr, strerror(errno));
        return 1;
    }
    close(probe);
    if (bootstrap && (fwd = forwarder_new(bootstrap, topic, err, sizeof(err))) == NULL) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 1;
    }
    for (int i = 0; i < n_threads; i++)
        th[i] = (rx_thread){.fd = -1, .index = i, .fwd = fwd, .id = "00000000-0000-4000-8000-000000000000"};
    for (int i = 0; i < n_threads; i++) {
        if ((th[i].fd = net_bind(addr, SOCK_DGRAM, 1, err, sizeof(err))) < 0) {
            fprintf(stderr, "%s: %s\n", prog, err);
            goto fail;
        }
        setsockopt(th[i].fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
        setsockopt(th[i].fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        fcntl(th[i].fd, F_SETFL, fcntl(th[i].fd, F_GETFL) & ~O_NONBLOCK);
        put_hex(th[i].id, (uint64_t)i, 8); /* the threads' ids differ here, their counters in the last 12 */
    }
    /* What the kernel granted (twice the request, capped by net.core.rmem_max): the gateway gets the same. */
    getsockopt(th[0].fd, SOL_SOCKET, SO_RCVBUF, &got, &got_len);
    for (; started < n_threads; started++) {
        if (pthread_create(&th[started].tid, NULL, receive, &th[started]) != 0) {
            fprintf(stderr, "%s: cannot start thread %d\n", prog, started);
            goto fail;
        }
    }
    if (fwd)
        fprintf(stderr, "udp_fwd listening addr=%s threads=%d rcvbuf=%d (kernel: %d) kafka=%s topic=%s\n",
                addr, n_threads, rcvbuf, got, bootstrap, topic);
    else
        fprintf(stderr, "udp_bare listening addr=%s threads=%d rcvbuf=%d (kernel: %d)\n", addr, n_threads,
                rcvbuf, got);

    while (sigwait(&sigs, &sig) != 0)
        ;
    rc = 0;

fail:
    /* A receive thread waiting for room in librdkafka's queue gives up FLUSH_MS after the stop. */
    if (fwd)
        atomic_store(&fwd->give_up_at, now_ms() + FLUSH_MS);
    atomic_store(&stop, 1);
    for (int i = 0; i < started; i++)
        pthread_join(th[i].tid, NULL);
    for (int i = 0; i < n_threads; i++)
        if (th[i].fd >= 0)
            close(th[i].fd);
    if (fwd) {
        rd_kafka_resp_err_t ferr = rd_kafka_flush(fwd->rk, FLUSH_MS);
        if (ferr != RD_KAFKA_RESP_ERR_NO_ERROR)
            fprintf(stderr, "udp_fwd: flush: %s (%d records not delivered)\n", rd_kafka_err2str(ferr),
                    rd_kafka_outq_len(fwd->rk));
    }
    if (rc == 0 && fwd)
        fprintf(stderr,
                "udp_fwd stopped datagrams=%llu truncated=%llu produced=%llu delivered=%llu failed=%llu\n",
                (unsigned long long)atomic_load(&datagrams), (unsigned long long)atomic_load(&truncated),
                (unsigned long long)atomic_load(&fwd->produced),
                (unsigned long long)atomic_load(&fwd->delivered),
                (unsigned long long)atomic_load(&fwd->failed));
    else if (rc == 0)
        fprintf(stderr, "udp_bare stopped datagrams=%llu truncated=%llu\n",
                (unsigned long long)atomic_load(&datagrams), (unsigned long long)atomic_load(&truncated));
    forwarder_free(fwd);
    return rc;
}
