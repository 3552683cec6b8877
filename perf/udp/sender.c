/*
 * The load of perf/udp: sends COUNT datagrams, each one CloudEvent with an id
 * of its own, to ADDR at a fixed RATE, and says how many the kernel took.
 *
 * Pacing is by absolute time: batch k (of --batch datagrams, one sendmmsg)
 * is due at start + k * batch / rate, and the sender sleeps until then with
 * clock_nanosleep(TIMER_ABSTIME), so a late batch does not push the rest of
 * the schedule back: the rate holds over the run whenever the machine can
 * send that fast at all, and "behind" says by how much it could not.
 *
 * The datagrams go out round-robin (one batch each) from --sockets connected
 * sockets, each with its own source port: SO_REUSEPORT picks the receiving
 * socket by a hash of the addresses and ports, so one source port would put
 * the whole load on one of the receiver's threads.
 *
 * Every datagram is the same event but for its id (TAG-<10-digit sequence>),
 * unique so that Kafka can be checked, and its subject (sensor/<seq % 1000>),
 * which is the Kafka key and spreads the events over the partitions. Both are
 * written into a template in place, so building a datagram costs a copy.
 *
 *   udp_sender --addr HOST:PORT --rate R --count N [--batch 32] [--sockets 4]
 *              [--format json|proto] [--tag TAG]
 *
 * Prints one line to stdout:
 *   RESULT sent=N errors=N seconds=S rate=X behind_max_us=N bytes=B cpu=C
 * sent: datagrams sendmmsg took; rate: sent over the time the schedule took;
 * behind_max_us: the latest any batch went out after its due time; cpu: the
 * cores the sender used (on loopback its system time includes the kernel's
 * receive path up to the receiver's socket buffer).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ingest/v1/cloudevent.pb-c.h"
#include "net.h"

#define MAX_BATCH   1024
#define MAX_SOCKETS 64
#define ID_DIGITS   10
#define SUBJ_DIGITS 3
#define MAX_DGRAM   2048

/* Marker bytes written into the template where the id and subject go, located again in the encoded datagram.
 */
#define ID_MARK   "##########"
#define SUBJ_MARK "@@@"

typedef struct tmpl {
    unsigned char buf[MAX_DGRAM];
    size_t len;
    size_t id_off;
    size_t subj_off;
} tmpl;

static const char data_json[] = "{\"sensorId\":\"s-0042\",\"site\":\"plant-7\",\"temperature\":21.5,"
                                "\"humidity\":48.2,\"battery\":0.87,\"firmware\":\"2.4.1\"}";

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Locates the markers once; -1 if the encoding split or lost them. */
static int tmpl_mark(tmpl *t)
{
    unsigned char *id = memmem(t->buf, t->len, ID_MARK, ID_DIGITS);
    unsigned char *subj = memmem(t->buf, t->len, SUBJ_MARK, SUBJ_DIGITS);

    if (id == NULL || subj == NULL)
        return -1;
    t->id_off = (size_t)(id - t->buf);
    t->subj_off = (size_t)(subj - t->buf);
    return 0;
}

static int tmpl_json(tmpl *t, const char *tag)
{
    int n = snprintf((char *)t->buf, sizeof(t->buf),
                     "{\"specversion\":\"1.0\",\"id\":\"%s-" ID_MARK "\",\"source\":\"/perf/udp/sensors\","
                     "\"type\":\"com.example.sensor.reading\",\"subject\":\"sensor/" SUBJ_MARK "\","
                     "\"time\":\"2026-11-26T10:15:00.000Z\",\"datacontenttype\":\"application/json\","
                     "\"data\":%s}",
                     tag, data_json);

    if (n < 0 || (size_t)n >= sizeof(t->buf))
        return -1;
    t->len = (size_t)n;
    return tmpl_mark(t);
}

/* The same event as a protobuf CloudEvent, data as text_data. */
static int tmpl_proto(tmpl *t, const char *tag)
{
    Ingest__V1__CloudEvent ce = INGEST__V1__CLOUD_EVENT__INIT;
    Ingest__V1__CloudEvent__CloudEventAttributeValue v[3];
    Ingest__V1__CloudEvent__AttributesEntry e[3], *ep[3];
    const char *keys[3] = {"subject", "time", "datacontenttype"};
    const char *vals[3] = {"sensor/" SUBJ_MARK, "2026-11-26T10:15:00.000Z", "application/json"};
    char id[256];

    snprintf(id, sizeof(id), "%s-" ID_MARK, tag);
    ce.id = id;
    ce.source = "/perf/udp/sensors";
    ce.spec_version = "1.0";
    ce.type = "com.example.sensor.reading";
    for (int i = 0; i < 3; i++) {
        ingest__v1__cloud_event__cloud_event_attribute_value__init(&v[i]);
        v[i].attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_STRING;
        v[i].ce_string = (char *)vals[i];
        ingest__v1__cloud_event__attributes_entry__init(&e[i]);
        e[i].key = (char *)keys[i];
        e[i].value = &v[i];
        ep[i] = &e[i];
    }
    ce.n_attributes = 3;
    ce.attributes = ep;
    ce.data_case = INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA;
    ce.text_data = (char *)data_json;
    if (ingest__v1__cloud_event__get_packed_size(&ce) > sizeof(t->buf))
        return -1;
    t->len = ingest__v1__cloud_event__pack(&ce, t->buf);
    return tmpl_mark(t);
}

static void put_digits(unsigned char *p, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (unsigned char)('0' + v % 10);
        v /= 10;
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: udp_sender --addr HOST:PORT --rate R --count N [--batch N] [--sockets N]\n"
                    "                  [--format json|proto] [--tag TAG]\n");
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *format = "json", *tag = "perf-udp";
    double rate = 0;
    long long count = 0;
    int batch = 32, n_socks = 4, fds[MAX_SOCKETS];
    static tmpl t;
    static unsigned char bufs[MAX_BATCH][MAX_DGRAM];
    static struct mmsghdr msgs[MAX_BATCH];
    static struct iovec iov[MAX_BATCH];
    struct sockaddr_storage dst;
    socklen_t dst_len;
    char err[256];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            usage();
            return 2;
        }
        if (strcmp(a, "--addr") == 0)
            addr = v;
        else if (strcmp(a, "--rate") == 0)
            rate = atof(v);
        else if (strcmp(a, "--count") == 0)
            count = atoll(v);
        else if (strcmp(a, "--batch") == 0)
            batch = atoi(v);
        else if (strcmp(a, "--sockets") == 0)
            n_socks = atoi(v);
        else if (strcmp(a, "--format") == 0)
            format = v;
        else if (strcmp(a, "--tag") == 0)
            tag = v;
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (addr == NULL || rate <= 0 || count <= 0 || batch < 1 || batch > MAX_BATCH || n_socks < 1 ||
        n_socks > MAX_SOCKETS || strlen(tag) > 200) {
        usage();
        return 2;
    }
    if ((strcmp(format, "json") == 0    ? tmpl_json(&t, tag)
         : strcmp(format, "proto") == 0 ? tmpl_proto(&t, tag)
                                        : -2) != 0) {
        fprintf(stderr, "udp_sender: cannot build a %s datagram\n", format);
        return 2;
    }
    if (net_parse_addr(addr, &dst, &dst_len, err, sizeof(err)) != 0) {
        fprintf(stderr, "udp_sender: %s\n", err);
        return 2;
    }
    for (int i = 0; i < n_socks; i++) {
        /* Blocking: on loopback a send never waits for the receiver, whose full buffer drops instead. */
        if ((fds[i] = socket(dst.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0 ||
            connect(fds[i], (struct sockaddr *)&dst, dst_len) != 0) {
            fprintf(stderr, "udp_sender: %s: %s\n", addr, strerror(errno));
            return 1;
        }
    }
    for (int i = 0; i < batch; i++) {
        memcpy(bufs[i], t.buf, t.len);
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = t.len;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    long long sent = 0, errors = 0, seq = 0;
    int64_t behind_max = 0, last_len = 0;
    int64_t start = mono_ns(), due = start, end;
    for (long long k = 0; seq < count; k++) {
        int n = count - seq < batch ? (int)(count - seq) : batch;
        last_len = (int64_t)(n * 1e9 / rate);
        due = start + (int64_t)((double)k * batch * 1e9 / rate);
        int64_t now = mono_ns();
        if (now < due) {
            struct timespec ts = {(time_t)(due / 1000000000LL), (long)(due % 1000000000LL)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
        } else if (now - due > behind_max) {
            behind_max = now - due;
        }
        for (int i = 0; i < n; i++) {
            put_digits(bufs[i] + t.id_off, (uint64_t)(seq + i), ID_DIGITS);
            put_digits(bufs[i] + t.subj_off, (uint64_t)((seq + i) % 1000), SUBJ_DIGITS);
        }
        int fd = fds[k % n_socks], off = 0;
        while (off < n) {
            int r = sendmmsg(fd, msgs + off, (unsigned)(n - off), 0);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                /* e.g. ECONNREFUSED from an earlier ICMP: that datagram is lost, the rest still go. */
                errors++;
                off++;
                continue;
            }
            sent += r;
            off += r;
        }
        seq += n;
    }
    end = mono_ns();
    /* The schedule's length: to when a batch after the last would be due, or later if behind. */
    double secs = (double)((end > due + last_len ? end : due + last_len) - start) / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu =
        (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    printf("RESULT sent=%lld errors=%lld seconds=%.3f rate=%.0f behind_max_us=%lld bytes=%zu cpu=%.2f\n",
           sent, errors, secs, sent / secs, (long long)(behind_max / 1000), t.len, cpu / secs);
    for (int i = 0; i < n_socks; i++)
        close(fds[i]);
    return 0;
}
