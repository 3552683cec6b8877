/*
 * The load of perf/grpc: a client of ingest.v1.Ingest on the gRPC C core,
 * in one thread on one completion queue, so that it costs the shared CPUs
 * as little as it can.
 *
 *   --mode stream  N PublishStream calls; each sends PublishRequests of
 *                  --batch events with seq 0, 1, 2, ... and keeps up to
 *                  --window of them unacknowledged (one SEND_MESSAGE in flight
 *                  at a time, as the core allows); every response must carry
 *                  the next seq in order, accepted = batch, batch ids and no
 *                  errors.
 *   --mode unary   N Publish calls at a time, each one batch; a call that
 *                  ends is followed by the next.
 *
 * Calls are spread round-robin over --connections channels, each with its
 * own subchannel pool, so each is an HTTP/2 connection of its own.
 *
 * --tls-ca FILE makes every connection TLS (the core's ssl credentials,
 * verifying the server against the CAs in FILE); --tls-name NAME checks the
 * server's certificate for NAME instead of --addr's host.
 *
 * The events come from an NDJSON file (perf/http's events, so the librdkafka
 * baseline produces the same ones), parsed with the gateway's own
 * json_parse_events() and turned into protobuf CloudEvents: attributes other
 * than id, source, specversion and type in the attributes map (all strings),
 * `data` as text_data, no id (the gateway assigns one, as for HTTP). Request
 * bodies are encoded once: body k holds events k*batch.. (mod the file's
 * count), so consecutive requests carry different subjects (Kafka keys).
 * Each request is its seq and ack level, a few bytes, in front of a body.
 *
 * Time: --warmup seconds of unmeasured load, then --duration measured ones:
 * events/s is the events acknowledged in that window over its length, and
 * p50/p99 are of the requests acknowledged in it (from the start of the
 * request's SEND_MESSAGE to its response). Then no new request is sent:
 * streams half-close and read every ack they are owed, unary calls finish;
 * whatever is still unanswered after --drain seconds is cancelled and
 * counted as unacked (its events may be in Kafka or not).
 *
 * The last line is machine-readable:
 *   RESULT mode=M tls=0|1 calls=N acked_events=A acked_requests=R measured_events=E
 *     measured_requests=Q seconds=S events_per_s=X req_per_s=Y p50_us=P
 *     p99_us=P bad_acks=B failed_calls=F unacked_events=U statuses=...
 * cpu: the cores this process used over the measured window.
 * acked_events counts every phase (warm-up and drain too): the topic must grow
 * by exactly that, plus at most unacked_events.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/credentials.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "event.h"
#include "ingest/v1/cloudevent.pb-c.h"
#include "ingest/v1/ingest.pb-c.h"
#include "events_file.h"

#define MAX_WINDOW 64
#define MAX_CONNS  64
#define N_STATUS   17 /* grpc_status_code 0..16 */

typedef enum tag_kind { T_START, T_SEND, T_RECV, T_STATUS, T_CLOSE, T_UNARY } tag_kind;

typedef struct lcall lcall;

typedef struct tag {
    tag_kind kind;
    lcall *c;
} tag;

/* One call: a stream, or a unary slot (which makes one grpc_call after another). */
struct lcall {
    grpc_call *call;
    grpc_channel *ch;
    tag t_start, t_send, t_recv, t_status, t_close, t_unary;
    unsigned ops; /* batches in flight */
    grpc_metadata_array md_initial, md_trailing;
    grpc_status_code status;
    grpc_slice status_details;
    grpc_byte_buffer *send_bb, *recv_bb;
    uint64_t seq_next, seq_acked;
    int64_t sent_ns[MAX_WINDOW];
    unsigned sending : 1, closing : 1, close_sent : 1, read_done : 1, done : 1;
};

typedef struct body {
    uint8_t *buf;
    size_t len;
} body;

/* Latencies of measured requests, microseconds. */
typedef struct lat {
    uint32_t *v;
    size_t n, cap;
} lat;

static struct {
    int unary;
    size_t batch;
    unsigned window;
    int ack; /* Ingest__V1__AckLevel */
    grpc_completion_queue *cq;
    body *bodies;
    size_t n_bodies;
    size_t next_body;
    grpc_slice method;
    gpr_timespec deadline;
    int64_t t_measure, t_stop; /* monotonic ns */
    int stopping;
    uint64_t acked_events, acked_requests, measured_events, measured_requests;
    uint64_t bad_acks, failed_calls;
    uint64_t statuses[N_STATUS + 1];
    char first_error[512];
    lat lat;
} L;

/* CPU time of the whole process (every gRPC thread too), ns. */
static int64_t cpu_ns(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void note_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The first thing that went wrong, for stderr: every one is counted, one is told. */
static void note_error(const char *fmt, ...)
{
    va_list ap;

    if (L.first_error[0] != '\0')
        return;
    va_start(ap, fmt);
    vsnprintf(L.first_error, sizeof(L.first_error), fmt, ap);
    va_end(ap);
}

/* --- the requests ---------------------------------------------------------------------------------- */

static size_t varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* One event as a packed CloudEvent (a new malloc'd buffer). */
static uint8_t *pack_event(const ing_event *ev, size_t *len)
{
    Ingest__V1__CloudEvent ce = INGEST__V1__CLOUD_EVENT__INIT;
    Ingest__V1__CloudEvent__CloudEventAttributeValue v[4 + 64];
    Ingest__V1__CloudEvent__AttributesEntry e[4 + 64], *ep[4 + 64];
    const char *names[4] = {"subject", "time", "datacontenttype", "dataschema"};
    const char *vals[4] = {ev->subject, ev->time, ev->datacontenttype, ev->dataschema};
    size_t n = 0;
    uint8_t *buf;

    ce.source = ev->source;
    ce.type = ev->type;
    ce.spec_version = ev->specversion ? ev->specversion : "1.0";
    for (size_t i = 0; i < 4 + ev->n_ext && n < 4 + 64; i++) {
        const char *k = i < 4 ? names[i] : ev->ext[i - 4].name;
        const char *val = i < 4 ? vals[i] : ev->ext[i - 4].value;
        if (val == NULL)
            continue;
        ingest__v1__cloud_event__cloud_event_attribute_value__init(&v[n]);
        v[n].attr_case = INGEST__V1__CLOUD_EVENT__CLOUD_EVENT_ATTRIBUTE_VALUE__ATTR_CE_STRING;
        v[n].ce_string = (char *)val;
        ingest__v1__cloud_event__attributes_entry__init(&e[n]);
        e[n].key = (char *)k;
        e[n].value = &v[n];
        ep[n] = &e[n];
        n++;
    }
    ce.n_attributes = n;
    ce.attributes = ep;
    if (ev->data_kind == EVENT_DATA_BINARY) {
        ce.data_case = INGEST__V1__CLOUD_EVENT__DATA_BINARY_DATA;
        ce.binary_data.data = ev->data;
        ce.binary_data.len = ev->data_len;
    } else if (ev->data_kind != EVENT_DATA_NONE) {
        ce.data_case = INGEST__V1__CLOUD_EVENT__DATA_TEXT_DATA;
        ce.text_data = (char *)ev->data;
    }
    *len = ingest__v1__cloud_event__get_packed_size(&ce);
    if ((buf = malloc(*len)) == NULL)
        return NULL;
    ingest__v1__cloud_event__pack(&ce, buf);
    return buf;
}

/*
 * The bodies: field 2 (events) repeated, `batch` events each, body k from
 * event k*batch on; enough of them to go once through the file.
 */
static int make_bodies(const ing_event_batch *evs, size_t *event_bytes)
{
    uint8_t **packed = calloc(evs->n, sizeof(*packed));
    size_t *plen = calloc(evs->n, sizeof(*plen)), total = 0;
    int rc = -1;

    if (!packed || !plen)
        goto out;
    for (size_t i = 0; i < evs->n; i++) {
        if ((packed[i] = pack_event(&evs->ev[i], &plen[i])) == NULL)
            goto out;
        total += plen[i];
    }
    *event_bytes = total / evs->n;
    L.n_bodies = (evs->n + L.batch - 1) / L.batch;
    if ((L.bodies = calloc(L.n_bodies, sizeof(*L.bodies))) == NULL)
        goto out;
    for (size_t k = 0; k < L.n_bodies; k++) {
        size_t len = 0;
        for (size_t i = 0; i < L.batch; i++)
            len += 1 + 10 + plen[(k * L.batch + i) % evs->n];
        if ((L.bodies[k].buf = malloc(len)) == NULL)
            goto out;
        uint8_t *p = L.bodies[k].buf;
        for (size_t i = 0; i < L.batch; i++) {
            size_t j = (k * L.batch + i) % evs->n;
            *p++ = 0x12; /* field 2, length-delimited */
            p += varint(p, plen[j]);
            memcpy(p, packed[j], plen[j]);
            p += plen[j];
        }
        L.bodies[k].len = (size_t)(p - L.bodies[k].buf);
    }
    rc = 0;
out:
    for (size_t i = 0; packed && i < evs->n; i++)
        free(packed[i]);
    free(packed);
    free(plen);
    return rc;
}

/* The next request: seq and ack level in front of the next body (referenced, not copied). */
static grpc_byte_buffer *request(uint64_t seq)
{
    uint8_t head[16];
    size_t n = 0;
    grpc_slice s[2];
    body *b = &L.bodies[L.next_body++ % L.n_bodies];
    grpc_byte_buffer *bb;

    head[n++] = 0x08; /* field 1, varint: seq */
    n += varint(head + n, seq);
    if (L.ack) {
        head[n++] = 0x18; /* field 3, varint: ack */
        head[n++] = (uint8_t)L.ack;
    }
    s[0] = grpc_slice_from_copied_buffer((const char *)head, n);
    s[1] = grpc_slice_from_static_buffer(b->buf, b->len);
    bb = grpc_raw_byte_buffer_create(s, 2);
    grpc_slice_unref(s[0]);
    grpc_slice_unref(s[1]);
    return bb;
}

/* --- acks ------------------------------------------------------------------------------------------ */

static void lat_add(uint32_t us)
{
    if (L.lat.n == L.lat.cap) {
        size_t cap = L.lat.cap ? L.lat.cap * 2 : 65536;
        uint32_t *v = realloc(L.lat.v, cap * sizeof(*v));
        if (v == NULL)
            return;
        L.lat.v = v;
        L.lat.cap = cap;
    }
    L.lat.v[L.lat.n++] = us;
}

/* Check one response against the request it acknowledges: 0 when it is right. */
static int check_ack(grpc_byte_buffer *bb, uint64_t seq)
{
    grpc_byte_buffer_reader r;
    grpc_slice s;
    Ingest__V1__PublishResponse *resp;
    int rc = -1;

    if (!grpc_byte_buffer_reader_init(&r, bb)) {
        note_error("cannot read a response");
        return -1;
    }
    s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    resp = ingest__v1__publish_response__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    if (resp == NULL) {
        note_error("a response is not a PublishResponse");
        return -1;
    }
    if (resp->seq != seq) {
        note_error("ack for seq %llu where seq %llu was due", (unsigned long long)resp->seq,
                   (unsigned long long)seq);
    } else if (resp->accepted != L.batch || resp->n_ids != L.batch || resp->n_errors != 0) {
        note_error("seq %llu: accepted=%u ids=%zu errors=%zu, not the batch of %zu", (unsigned long long)seq,
                   resp->accepted, resp->n_ids, resp->n_errors, L.batch);
    } else {
        rc = 0;
        for (size_t i = 0; i < resp->n_ids; i++)
            if (strlen(resp->ids[i]) != 36) {
                note_error("seq %llu: id '%s' is not a UUID", (unsigned long long)seq, resp->ids[i]);
                rc = -1;
                break;
            }
    }
    ingest__v1__publish_response__free_unpacked(resp, NULL);
    return rc;
}

/* A request acknowledged now, sent at sent_ns. */
static void acked(int64_t sent_ns)
{
    int64_t now = mono_ns();

    L.acked_events += L.batch;
    L.acked_requests++;
    if (now >= L.t_measure && now < L.t_stop) {
        L.measured_events += L.batch;
        L.measured_requests++;
        lat_add((uint32_t)((now - sent_ns) / 1000));
    }
}

/* --- calls ----------------------------------------------------------------------------------------- */

static int start(lcall *c, grpc_op *ops, size_t n, tag *t)
{
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, t, NULL);

    if (e != GRPC_CALL_OK) {
        note_error("grpc_call_start_batch: %s", grpc_call_error_to_string(e));
        grpc_call_cancel(c->call, NULL);
        return -1;
    }
    c->ops++;
    return 0;
}

static void new_call(lcall *c)
{
    c->call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, L.cq, L.method, NULL, L.deadline,
                                       NULL);
    grpc_metadata_array_init(&c->md_initial);
    grpc_metadata_array_init(&c->md_trailing);
    c->status_details = grpc_empty_slice();
}

static void end_call(lcall *c)
{
    L.statuses[c->status <= 16 ? (int)c->status : N_STATUS]++;
    if (c->status != GRPC_STATUS_OK) {
        L.failed_calls++;
        char *d = grpc_slice_to_c_string(c->status_details);
        note_error("a call ended with status %d: %s", (int)c->status, d);
        gpr_free(d);
    }
    grpc_metadata_array_destroy(&c->md_initial);
    grpc_metadata_array_destroy(&c->md_trailing);
    grpc_slice_unref(c->status_details);
    grpc_call_unref(c->call);
    c->call = NULL;
}

static void unary_start(lcall *c)
{
    grpc_op ops[6];

    memset(ops, 0, sizeof(ops));
    new_call(c);
    c->send_bb = request(0);
    c->sent_ns[0] = mono_ns();
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->md_initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &c->recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &c->md_trailing;
    ops[5].data.recv_status_on_client.status = &c->status;
    ops[5].data.recv_status_on_client.status_details = &c->status_details;
    if (start(c, ops, 6, &c->t_unary) != 0)
        c->done = 1;
}

static void unary_done(lcall *c)
{
    c->ops--;
    grpc_byte_buffer_destroy(c->send_bb);
    c->send_bb = NULL;
    if (c->status == GRPC_STATUS_OK) {
        if (c->recv_bb && check_ack(c->recv_bb, 0) == 0)
            acked(c->sent_ns[0]);
        else
            L.bad_acks++;
    }
    if (c->recv_bb)
        grpc_byte_buffer_destroy(c->recv_bb);
    c->recv_bb = NULL;
    end_call(c);
    if (L.stopping)
        c->done = 1;
    else
        unary_start(c);
}

/* A stream sends its next request, or half-closes once stopping, when nothing is being sent. */
static void stream_send(lcall *c)
{
    grpc_op op;

    if (c->sending || c->close_sent || c->done)
        return;
    memset(&op, 0, sizeof(op));
    if (L.stopping || c->closing) {
        op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        if (start(c, &op, 1, &c->t_close) == 0)
            c->close_sent = 1;
        return;
    }
    if (c->seq_next - c->seq_acked >= L.window)
        return;
    c->send_bb = request(c->seq_next);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = c->send_bb;
    c->sent_ns[c->seq_next % MAX_WINDOW] = mono_ns();
    if (start(c, &op, 1, &c->t_send) != 0) {
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
        c->closing = 1;
        return;
    }
    c->seq_next++;
    c->sending = 1;
}

static void stream_recv(lcall *c)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    if (start(c, &op, 1, &c->t_recv) != 0)
        c->read_done = 1;
}

static void stream_start(lcall *c)
{
    grpc_op ops[2];

    new_call(c);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &c->md_trailing;
    ops[0].data.recv_status_on_client.status = &c->status;
    ops[0].data.recv_status_on_client.status_details = &c->status_details;
    if (start(c, ops, 1, &c->t_status) != 0) {
        c->done = 1;
        return;
    }
    /* Without RECV_INITIAL_METADATA the call would wait for its deadline (STYLE.md). */
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &c->md_initial;
    start(c, ops, 2, &c->t_start);
    stream_recv(c);
    stream_send(c);
}

static void stream_maybe_done(lcall *c)
{
    if (c->ops == 0 && !c->done) {
        c->done = 1;
        end_call(c);
    }
}

static void on_event(tag *t, int ok)
{
    lcall *c = t->c;

    switch (t->kind) {
    case T_UNARY: unary_done(c); return;
    case T_START: c->ops--; break;
    case T_STATUS:
        c->ops--;
        c->read_done = 1;
        break;
    case T_CLOSE: c->ops--; break;
    case T_SEND:
        c->ops--;
        c->sending = 0;
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
        if (!ok)
            c->closing = 1; /* the call is over; its status says why */
        else
            stream_send(c);
        break;
    case T_RECV:
        c->ops--;
        if (!ok || c->recv_bb == NULL) {
            c->read_done = 1; /* the server is done: the status follows */
            c->closing = 1;
            break;
        }
        if (c->seq_acked >= c->seq_next || check_ack(c->recv_bb, c->seq_acked) != 0) {
            if (c->seq_acked >= c->seq_next)
                note_error("an ack past seq %llu, the last sent", (unsigned long long)c->seq_next);
            L.bad_acks++;
            grpc_call_cancel(c->call, NULL);
        } else {
            acked(c->sent_ns[c->seq_acked % MAX_WINDOW]);
        }
        c->seq_acked++;
        grpc_byte_buffer_destroy(c->recv_bb);
        c->recv_bb = NULL;
        stream_recv(c);
        stream_send(c);
        break;
    }
    stream_maybe_done(c);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: grpc_load --addr HOST:PORT --events FILE [--mode stream|unary] [--calls N]\n"
            "                 [--connections N] [--batch N] [--window N] [--ack committed|accepted]\n"
            "                 [--warmup S] [--duration S] [--drain S] [--tls-ca FILE [--tls-name NAME]]\n");
}

/* A whole PEM file as a string, or NULL. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, n;

    if (f == NULL)
        return NULL;
    do {
        if (cap - len < 4096) {
            char *nb = realloc(buf, cap + 65536);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap += 65536;
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    fclose(f);
    buf[len] = '\0';
    return buf;
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *events_path = NULL, *mode = "stream", *ack = "committed";
    const char *tls_ca = NULL, *tls_name = NULL;
    int calls = 8, conns = 4;
    double warmup = 2, duration = 10, drain = 30;
    char errbuf[512];
    size_t event_bytes = 0;
    ing_event_limits lim;
    ing_event_batch evs;
    grpc_channel *ch[MAX_CONNS];
    lcall *cs = NULL;

    L.batch = 100;
    L.window = 16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            usage();
            return 2;
        }
        if (strcmp(a, "--addr") == 0)
            addr = v;
        else if (strcmp(a, "--events") == 0)
            events_path = v;
        else if (strcmp(a, "--mode") == 0)
            mode = v;
        else if (strcmp(a, "--calls") == 0)
            calls = atoi(v);
        else if (strcmp(a, "--connections") == 0)
            conns = atoi(v);
        else if (strcmp(a, "--batch") == 0)
            L.batch = (size_t)atol(v);
        else if (strcmp(a, "--window") == 0)
            L.window = (unsigned)atoi(v);
        else if (strcmp(a, "--ack") == 0)
            ack = v;
        else if (strcmp(a, "--warmup") == 0)
            warmup = atof(v);
        else if (strcmp(a, "--duration") == 0)
            duration = atof(v);
        else if (strcmp(a, "--drain") == 0)
            drain = atof(v);
        else if (strcmp(a, "--tls-ca") == 0)
            tls_ca = v;
        else if (strcmp(a, "--tls-name") == 0)
            tls_name = v;
        else {
            usage();
            return 2;
        }
        i++;
    }
    L.unary = strcmp(mode, "unary") == 0;
    L.ack = strcmp(ack, "accepted") == 0    ? INGEST__V1__ACK_LEVEL__ACK_LEVEL_ACCEPTED
            : strcmp(ack, "committed") == 0 ? INGEST__V1__ACK_LEVEL__ACK_LEVEL_COMMITTED
                                            : -1;
    if (!addr || !events_path || (!L.unary && strcmp(mode, "stream") != 0) || L.ack < 0 || calls < 1 ||
        conns < 1 || conns > MAX_CONNS || L.batch < 1 || L.window < 1 || L.window > MAX_WINDOW ||
        duration <= 0 || warmup < 0 || (tls_name && !tls_ca)) {
        usage();
        return 2;
    }

    ing_event_limits_default(&lim);
    ing_event_batch_init(&evs);
    if (perf_load_events(events_path, &lim, &evs, errbuf, sizeof(errbuf)) != 0) {
        fprintf(stderr, "grpc_load: %s\n", errbuf);
        return 1;
    }
    if (make_bodies(&evs, &event_bytes) != 0) {
        fprintf(stderr, "grpc_load: out of memory\n");
        return 1;
    }

    grpc_init();
    L.cq = grpc_completion_queue_create_for_next(NULL);
    L.method = grpc_slice_from_static_string(L.unary ? "/ingest.v1.Ingest/Publish"
                                                     : "/ingest.v1.Ingest/PublishStream");
    {
        /* A subchannel pool per channel: otherwise channels to one target share one connection. */
        grpc_arg args[2];
        grpc_channel_args chargs = {1, args};
        grpc_channel_credentials *creds;
        args[0].type = GRPC_ARG_INTEGER;
        args[0].key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
        args[0].value.integer = 1;
        if (tls_ca) {
            char *roots = read_file(tls_ca);
            if (roots == NULL) {
                fprintf(stderr, "grpc_load: %s: %s\n", tls_ca, strerror(errno));
                return 1;
            }
            /* The core copies the roots; no client certificate (the run's gateway asks for none). */
            creds = grpc_ssl_credentials_create(roots, NULL, NULL, NULL);
            free(roots);
            if (tls_name) {
                args[1].type = GRPC_ARG_STRING;
                args[1].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
                args[1].value.string = (char *)tls_name;
                chargs.num_args = 2;
            }
        } else {
            creds = grpc_insecure_credentials_create();
        }
        for (int i = 0; i < conns; i++)
            ch[i] = grpc_channel_create(addr, creds, &chargs);
        grpc_channel_credentials_release(creds);
    }
    if ((cs = calloc((size_t)calls, sizeof(*cs))) == NULL)
        return 1;

    int64_t t0 = mono_ns();
    L.t_measure = t0 + (int64_t)(warmup * 1e9);
    L.t_stop = L.t_measure + (int64_t)(duration * 1e9);
    int64_t t_give_up = L.t_stop + (int64_t)(drain * 1e9);
    L.deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                     gpr_time_from_millis((int64_t)((warmup + duration + drain + 5) * 1000), GPR_TIMESPAN));
    for (int i = 0; i < calls; i++) {
        lcall *c = &cs[i];
        c->ch = ch[i % conns];
        c->t_start = (tag){T_START, c};
        c->t_send = (tag){T_SEND, c};
        c->t_recv = (tag){T_RECV, c};
        c->t_status = (tag){T_STATUS, c};
        c->t_close = (tag){T_CLOSE, c};
        c->t_unary = (tag){T_UNARY, c};
        if (L.unary)
            unary_start(c);
        else
            stream_start(c);
    }

    int cancelled = 0;
    int64_t cpu_measure = -1, cpu_stop = -1, at_measure = 0, at_stop = 0;
    for (;;) {
        int64_t now = mono_ns();
        int live = 0;
        /* The client's own CPU over the measured window, read when the loop comes by (every 20 ms at most).
         */
        if (cpu_measure < 0 && now >= L.t_measure) {
            cpu_measure = cpu_ns();
            at_measure = now;
        }
        if (cpu_stop < 0 && now >= L.t_stop) {
            cpu_stop = cpu_ns();
            at_stop = now;
        }
        if (!L.stopping && now >= L.t_stop) {
            L.stopping = 1;
            for (int i = 0; i < calls; i++)
                if (!L.unary && !cs[i].done)
                    stream_send(&cs[i]); /* half-close where nothing is being sent */
        }
        if (L.stopping && !cancelled && now >= t_give_up) {
            cancelled = 1;
            for (int i = 0; i < calls; i++)
                if (cs[i].call && !cs[i].done)
                    grpc_call_cancel(cs[i].call, NULL);
        }
        for (int i = 0; i < calls; i++)
            live += !cs[i].done;
        if (live == 0)
            break;
        grpc_event ev = grpc_completion_queue_next(
            L.cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(20, GPR_TIMESPAN)), NULL);
        if (ev.type == GRPC_OP_COMPLETE)
            on_event(ev.tag, ev.success);
    }

    uint64_t unacked = 0;
    for (int i = 0; i < calls; i++)
        unacked += L.unary ? 0 : (cs[i].seq_next - cs[i].seq_acked) * L.batch;
    /* A unary call that failed: its events may have gone in before the failure. */
    if (L.unary)
        unacked = (L.failed_calls + L.bad_acks) * L.batch;
    qsort(L.lat.v, L.lat.n, sizeof(*L.lat.v), cmp_u32);
    uint32_t p50 = L.lat.n ? L.lat.v[L.lat.n / 2] : 0, p99 = L.lat.n ? L.lat.v[L.lat.n * 99 / 100] : 0;
    if (L.first_error[0])
        fprintf(stderr, "grpc_load: first error: %s\n", L.first_error);
    printf("RESULT mode=%s tls=%d calls=%d connections=%d batch=%zu window=%u ack=%s event_bytes=%zu "
           "acked_events=%llu acked_requests=%llu measured_events=%llu measured_requests=%llu seconds=%.3f "
           "events_per_s=%.0f req_per_s=%.1f p50_us=%u p99_us=%u cpu=%.2f bad_acks=%llu failed_calls=%llu "
           "unacked_events=%llu statuses=",
           mode, tls_ca != NULL, calls, conns, L.batch, L.window, ack, event_bytes,
           (unsigned long long)L.acked_events, (unsigned long long)L.acked_requests,
           (unsigned long long)L.measured_events, (unsigned long long)L.measured_requests, duration,
           (double)L.measured_events / duration, (double)L.measured_requests / duration, p50, p99,
           at_stop > at_measure ? (double)(cpu_stop - cpu_measure) / (double)(at_stop - at_measure) : 0.0,
           (unsigned long long)L.bad_acks, (unsigned long long)L.failed_calls, (unsigned long long)unacked);
    int first = 1;
    for (int s = 0; s <= N_STATUS; s++)
        if (L.statuses[s]) {
            printf("%s%d:%llu", first ? "" : ",", s, (unsigned long long)L.statuses[s]);
            first = 0;
        }
    printf("%s\n", first ? "-" : "");

    for (int i = 0; i < conns; i++)
        grpc_channel_destroy(ch[i]);
    grpc_completion_queue_shutdown(L.cq);
    while (grpc_completion_queue_next(L.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(L.cq);
    grpc_shutdown();
    return L.bad_acks || L.failed_calls ? 1 : 0;
}
