#include "spooler.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"
#include "prom.h"
#include "spool.h"

/* The most of a damaged range a dead letter carries: the rest is named by its offset and length. */
#define DLQ_MAX_BYTES (512u << 10)
/* Replay stops pushing while the queue is this deep (a fraction of the high-water mark): new traffic first.
 */
#define REPLAY_SHARE 2

/* A damaged range met at open, before there is a producer to send it with. */
typedef struct damage {
    struct damage *next;
    char segment[64], reason[24];
    uint64_t offset, length;
    size_t len; /* of bytes, at most DLQ_MAX_BYTES */
    uint8_t bytes[];
} damage;

/* A persisted request's wait until its sequence number is durable. */
typedef struct pwait {
    struct pwait *next;
    ack_wait *w;
} pwait;

struct gw_spooler {
    gateway *gw;
    spool *sp;
    producer *prod;
    queue *q;
    char dlq_topic[256];
    uint64_t boundary; /* the highest sequence number recovered at open: what replay sends */
    pthread_t replayer;
    int replaying;
    atomic_int stop;
    pthread_mutex_t lock; /* the damages and the persisted waits */
    damage *damaged;      /* met at open, oldest last; sent by gw_spooler_start */
    pwait *waits;
    /*
     * Acks of records not yet durable: the spool ignores an ack of a record
     * its writer has not written (Kafka may well answer first: it lingers
     * 5 ms, a group waits behind the one being synced). Done by on_durable.
     */
    uint64_t *early;
    size_t n_early, cap_early;
    char why[160];                 /* not ready: the writer's error */
    atomic_uint_fast64_t appended; /* the highest sequence number appended: what a stop waits to be durable */
    atomic_uint_fast64_t replayed, replay_acked, dead_letters, dead_letter_failures;
};

/* --- framing ------------------------------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void head(const produce_msg *m, size_t tlen, uint8_t h[GW_SPOOL_HEAD])
{
    uint16_t t = (uint16_t)tlen;

    h[0] = 1;
    h[1] = (uint8_t)m->protocol;
    memcpy(h + 2, &t, 2);
    put32(h + 4, (uint32_t)m->key_len);
    put32(h + 8, (uint32_t)m->ce_id_len);
    put32(h + 12, (uint32_t)m->ce_source_len);
    put32(h + 16, (uint32_t)m->ce_type_len);
    put32(h + 20, (uint32_t)m->value_len);
}

/* The record's parts, in framing order, into iov[7]. */
static void parts(const produce_msg *m, const char *topic, uint8_t *h, struct iovec iov[7])
{
    size_t tlen = strlen(topic);

    head(m, tlen, h);
    iov[0] = (struct iovec){h, GW_SPOOL_HEAD};
    iov[1] = (struct iovec){(void *)topic, tlen};
    iov[2] = (struct iovec){(void *)m->key, m->key_len};
    iov[3] = (struct iovec){(void *)m->ce_id, m->ce_id_len};
    iov[4] = (struct iovec){(void *)m->ce_source, m->ce_source_len};
    iov[5] = (struct iovec){(void *)m->ce_type, m->ce_type_len};
    iov[6] = (struct iovec){m->value, m->value_len};
}

size_t gw_spool_encode(const produce_msg *m, const char *topic, uint8_t *buf)
{
    uint8_t h[GW_SPOOL_HEAD];
    struct iovec iov[7];
    size_t n = 0;

    parts(m, topic, h, iov);
    for (int i = 0; i < 7; i++) {
        if (buf)
            memcpy(buf + n, iov[i].iov_base, iov[i].iov_len);
        n += iov[i].iov_len;
    }
    return n;
}

produce_msg *gw_spool_decode(const void *data, size_t len, const char *dflt_topic, int *malformed)
{
    const uint8_t *p = data;
    uint16_t tlen;
    size_t l[5], total = GW_SPOOL_HEAD;

    *malformed = 1;
    if (len < GW_SPOOL_HEAD || p[0] != 1)
        return NULL;
    memcpy(&tlen, p + 2, 2);
    total += tlen;
    for (int i = 0; i < 5; i++)
        total += l[i] = get32(p + 4 + 4 * i);
    if (total != len || tlen == 0)
        return NULL;
    *malformed = 0;
    const char *topic = (const char *)p + GW_SPOOL_HEAD;
    int own = strlen(dflt_topic) == tlen && memcmp(topic, dflt_topic, tlen) == 0;
    size_t held = sizeof(produce_msg) + l[0] + l[1] + l[2] + l[3] + 4 + l[4] + (own ? 0 : tlen + 1);
    produce_msg *m = malloc(held);
    if (m == NULL)
        return NULL;
    memset(m, 0, sizeof(*m));
    m->protocol = p[1];
    m->held = held;
    const uint8_t *src = p + GW_SPOOL_HEAD + tlen;
    char *dst = m->strings;
    const char **field[4] = {&m->key, &m->ce_id, &m->ce_source, &m->ce_type};
    size_t *flen[4] = {&m->key_len, &m->ce_id_len, &m->ce_source_len, &m->ce_type_len};
    for (int i = 0; i < 4; i++) {
        memcpy(dst, src, l[i]);
        dst[l[i]] = '\0';
        *field[i] = dst;
        *flen[i] = l[i];
        dst += l[i] + 1;
        src += l[i];
    }
    m->value = (uint8_t *)dst;
    m->value_len = l[4];
    memcpy(dst, src, l[4]);
    dst += l[4];
    if (!own) {
        memcpy(dst, topic, tlen);
        dst[tlen] = '\0';
        m->topic = dst;
    }
    return m;
}

/* --- dead letters ------------------------------------------------------------------------------------ */

static void send_dead_letter(gw_spooler *s, const char *segment, uint64_t offset, uint64_t length,
                             const void *bytes, size_t len, const char *reason)
{
    char why[256], off[24], lenbuf[24];

    snprintf(why, sizeof(why), "spool: %s in %s at offset %" PRIu64 ", %" PRIu64 " bytes%s", reason, segment,
             offset, length, len < length ? " (the first of them in this record)" : "");
    snprintf(off, sizeof(off), "%" PRIu64, offset);
    snprintf(lenbuf, sizeof(lenbuf), "%" PRIu64, length);
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "ingest_error", -1, why, -1);
    rd_kafka_header_add(h, "ingest_spool_segment", -1, segment, -1);
    rd_kafka_header_add(h, "ingest_spool_offset", -1, off, -1);
    rd_kafka_header_add(h, "ingest_spool_length", -1, lenbuf, -1);
    /* NULL opaque: its delivery report acks nothing (producer.c's struct spooled). */
    rd_kafka_resp_err_t err = rd_kafka_producev(
        producer_handle(s->prod), RD_KAFKA_V_TOPIC(s->dlq_topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_VALUE((void *)bytes, len), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(NULL), RD_KAFKA_V_END);
    if (err) {
        rd_kafka_headers_destroy(h);
        atomic_fetch_add(&s->dead_letter_failures, 1);
        LOG_WARN("spool", "dead letter for %s not sent: %s", why, rd_kafka_err2str(err));
        return;
    }
    atomic_fetch_add(&s->dead_letters, 1);
    LOG_WARN("spool", "%s: sent to %s", why, s->dlq_topic);
}

static void on_damage(void *ctx, const char *segment, uint64_t offset, uint64_t length, const void *bytes,
                      const char *reason)
{
    gw_spooler *s = ctx;
    size_t len = length < DLQ_MAX_BYTES ? (size_t)length : DLQ_MAX_BYTES;

    if (s->prod) {
        send_dead_letter(s, segment, offset, length, bytes, len, reason);
        return;
    }
    /* At open: kept until there is a producer. */
    damage *d = malloc(sizeof(*d) + len);
    if (d == NULL) {
        atomic_fetch_add(&s->dead_letter_failures, 1);
        LOG_WARN("spool", "%s in %s at offset %" PRIu64 ", %" PRIu64 " bytes: no memory for its dead letter",
                 reason, segment, offset, length);
        return;
    }
    snprintf(d->segment, sizeof(d->segment), "%s", segment);
    snprintf(d->reason, sizeof(d->reason), "%s", reason);
    d->offset = offset;
    d->length = length;
    d->len = len;
    memcpy(d->bytes, bytes, len);
    pthread_mutex_lock(&s->lock);
    d->next = s->damaged;
    s->damaged = d;
    pthread_mutex_unlock(&s->lock);
}

/* Counted by the spool (stats.expired_records): only logged here. */
static void on_drop(void *ctx, uint64_t seq, size_t length, const char *reason)
{
    (void)ctx;
    LOG_DEBUG("spool", "record %" PRIu64 " (%zu bytes) not replayed: %s", seq, length, reason);
}

/* --- persisted ------------------------------------------------------------------------------------- */

/* Ack seq now if it is durable, else once it is. An ack that finds no memory is lost: a replay at most. */
static void ack(gw_spooler *s, uint64_t seq)
{
    pthread_mutex_lock(&s->lock);
    if (spool_durable(s->sp) < seq) {
        if (s->n_early == s->cap_early) {
            size_t cap = s->cap_early ? 2 * s->cap_early : 1024;
            uint64_t *e = realloc(s->early, cap * sizeof(*e));
            if (e == NULL) {
                pthread_mutex_unlock(&s->lock);
                return;
            }
            s->early = e;
            s->cap_early = cap;
        }
        s->early[s->n_early++] = seq;
        pthread_mutex_unlock(&s->lock);
        return;
    }
    pthread_mutex_unlock(&s->lock);
    spool_ack(s->sp, seq);
}

static void on_durable(void *ctx, uint64_t seq)
{
    gw_spooler *s = ctx;
    pwait *done = NULL, **pp;
    size_t kept = 0;

    pthread_mutex_lock(&s->lock);
    /*
     * Ours, then the spool's inside it: the one order everywhere (on_damage
     * takes ours under the spool's only at open, when nothing else runs).
     */
    for (size_t i = 0; i < s->n_early; i++) {
        if (s->early[i] <= seq)
            spool_ack(s->sp, s->early[i]);
        else
            s->early[kept++] = s->early[i];
    }
    s->n_early = kept;
    for (pp = &s->waits; *pp;) {
        pwait *pw = *pp;
        if (pw->w->persist_seq <= seq) {
            *pp = pw->next;
            pw->next = done;
            done = pw;
        } else {
            pp = &pw->next;
        }
    }
    pthread_mutex_unlock(&s->lock);
    while (done) {
        pwait *next = done->next;
        ack_wait_report(done->w, RD_KAFKA_RESP_ERR_NO_ERROR);
        free(done);
        done = next;
    }
}

void gw_spooler_wait(gw_spooler *s, ack_wait *w)
{
    pwait *pw = malloc(sizeof(*pw));

    /* Under the lock: on_durable publishes before it takes it, so a wait is never missed. */
    pthread_mutex_lock(&s->lock);
    if (pw && spool_durable(s->sp) < w->persist_seq) {
        pw->w = w;
        pw->next = s->waits;
        s->waits = pw;
        pthread_mutex_unlock(&s->lock);
        return;
    }
    pthread_mutex_unlock(&s->lock);
    if (pw) {
        free(pw);
        ack_wait_report(w, RD_KAFKA_RESP_ERR_NO_ERROR);
    } else {
        /* No memory to wait: the wait ends with a failure now, the client may retry. */
        ack_wait_report(w, RD_KAFKA_RESP_ERR__FAIL);
    }
}

/* The writer failed: persisted waits will never be answered by it. */
static void fail_waits(gw_spooler *s)
{
    pwait *list;

    pthread_mutex_lock(&s->lock);
    list = s->waits;
    s->waits = NULL;
    pthread_mutex_unlock(&s->lock);
    while (list) {
        pwait *next = list->next;
        ack_wait_report(list->w, RD_KAFKA_RESP_ERR__FS);
        free(list);
        list = next;
    }
}

/* --- appends and acks --------------------------------------------------------------------------------- */

int gw_spooler_append(gw_spooler *s, produce_msg *m)
{
    uint8_t h[GW_SPOOL_HEAD];
    struct iovec iov[7];
    int rc;

    parts(m, m->topic ? m->topic : s->gw->cfg->kafka_topic, h, iov);
    if ((rc = spool_appendv(s->sp, iov, 7, &m->spool_seq)) != 0) {
        m->spool_seq = 0;
        if (rc != -ENOSPC && rc != -EPIPE)
            fail_waits(s);
        return rc;
    }
    /* Appends race: the highest wins. */
    uint_fast64_t seen = atomic_load(&s->appended);
    while (seen < m->spool_seq && !atomic_compare_exchange_weak(&s->appended, &seen, m->spool_seq))
        ;
    return 0;
}

int gw_spooler_settle(gw_spooler *s, int timeout_ms)
{
    uint64_t last = atomic_load(&s->appended);

    return last == 0 || spool_wait_durable(s->sp, last, timeout_ms) == 0;
}

uint64_t gw_spooler_records(gw_spooler *s)
{
    spool_stats st;

    spool_get_stats(s->sp, &st);
    return st.records;
}

void gw_spooler_cancel(gw_spooler *s, uint64_t seq)
{
    if (seq)
        ack(s, seq);
}

/*
 * A delivery report. Kafka has it, or will never take it (too large: the
 * client was told so, or nobody waited): acked. Anything else (timed out,
 * purged at a stop) stays, for the next start's replay.
 */
static void on_spooled(void *arg, uint64_t seq, rd_kafka_resp_err_t err)
{
    gw_spooler *s = arg;

    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
        return;
    ack(s, seq);
    if (seq <= s->boundary)
        atomic_fetch_add(&s->replay_acked, 1);
}

/* --- replay ----------------------------------------------------------------------------------------- */

static void *replay_main(void *arg)
{
    gw_spooler *s = arg;
    spool_record rec;
    const char *topic = s->gw->cfg->kafka_topic;
    size_t room = queue_high_water(s->q) / REPLAY_SHARE;
    int rc, malformed;

    pthread_setname_np(pthread_self(), "gw-replay");
    if (room == 0)
        room = 1;
    while (!atomic_load(&s->stop) && (rc = spool_next(s->sp, &rec, 0)) == 1) {
        if (rec.seq > s->boundary)
            break; /* appended since the start: its own request queued it */
        produce_msg *m = gw_spool_decode(rec.data, rec.len, topic, &malformed);
        if (m == NULL && malformed) {
            /* Its checksum held, so we wrote it so: still, one bad record must not stop the rest. */
            char seg[64];
            snprintf(seg, sizeof(seg), "record %" PRIu64, rec.seq);
            send_dead_letter(s, seg, 0, rec.len, rec.data, rec.len < DLQ_MAX_BYTES ? rec.len : DLQ_MAX_BYTES,
                             "bad-framing");
            spool_ack(s->sp, rec.seq);
            continue;
        }
        while (m == NULL && !atomic_load(&s->stop)) {
            usleep(10000); /* no memory: later */
            m = gw_spool_decode(rec.data, rec.len, topic, &malformed);
        }
        if (m == NULL)
            break;
        m->spool_seq = rec.seq;
        for (;;) {
            if (atomic_load(&s->stop)) {
                produce_msg_free(m);
                goto out;
            }
            if (queue_depth(s->q) < room && !gw_budget_queued_full(&s->gw->budget)) {
                gw_budget_add_queued(&s->gw->budget, m->held);
                if ((rc = queue_push(s->q, m)) == 0)
                    break;
                gw_budget_sub_queued(&s->gw->budget, m->held);
                if (rc == -EPIPE) {
                    produce_msg_free(m);
                    goto out;
                }
            }
            usleep(2000);
        }
        atomic_fetch_add(&s->replayed, 1);
    }
out:
    if (atomic_load(&s->replayed))
        LOG_INFO("spool", "replay done: %" PRIu64 " records queued again",
                 (uint64_t)atomic_load(&s->replayed));
    return NULL;
}

/* --- lifecycle ----------------------------------------------------------------------------------------- */

int gw_spooler_open(gateway *gw, gw_spooler **out, char *err, size_t errlen)
{
    const gateway_config *cfg = gw->cfg;
    gw_spooler *s;
    int rc;

    *out = NULL;
    if (strcasecmp(cfg->spool_mode, "off") == 0)
        return 0;
    if (cfg->spool_dir[0] == '\0') {
        snprintf(err, errlen, "--spool=%s needs --spool-dir", cfg->spool_mode);
        return -EINVAL;
    }
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->gw = gw;
    pthread_mutex_init(&s->lock, NULL);
    snprintf(s->dlq_topic, sizeof(s->dlq_topic), "%s.dlq", cfg->kafka_topic);
    spool_config sc = {.dir = cfg->spool_dir,
                       .max_bytes = cfg->spool_max_bytes,
                       /* 16 segments to the spool at least: acked space comes back a segment at a time. */
                       .segment_bytes =
                           cfg->spool_max_bytes / 16 < (64u << 20) ? cfg->spool_max_bytes / 16 : (64u << 20),
                       .max_age_ms = (uint64_t)cfg->spool_max_age_ms,
                       .on_durable = on_durable,
                       .on_damage = on_damage,
                       .on_drop = on_drop,
                       .ctx = s};
    if ((rc = spool_open(&sc, &s->sp, err, errlen)) != 0) {
        gw_spooler_free(s);
        return rc;
    }
    s->boundary = spool_durable(s->sp);
    spool_stats st;
    spool_get_stats(s->sp, &st);
    LOG_INFO("spool",
             "spool=%s dir=%s records=%" PRIu64 " bytes=%" PRIu64 " segments=%" PRIu64
             " damaged_ranges=%" PRIu64 " truncated_bytes=%" PRIu64,
             cfg->spool_mode, cfg->spool_dir, st.records, st.bytes, st.segments, st.corrupt_ranges,
             st.truncated_bytes);
    *out = s;
    return 0;
}

int gw_spooler_start(gw_spooler *s, producer *prod, queue *q, char *err, size_t errlen)
{
    damage *list, *rev = NULL;

    s->q = q;
    pthread_mutex_lock(&s->lock);
    s->prod = prod; /* from here on, a damage found by replay is sent at once */
    list = s->damaged;
    s->damaged = NULL;
    pthread_mutex_unlock(&s->lock);
    producer_on_spooled(prod, on_spooled, s);
    while (list) {
        damage *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev) {
        damage *next = rev->next;
        send_dead_letter(s, rev->segment, rev->offset, rev->length, rev->bytes, rev->len, rev->reason);
        free(rev);
        rev = next;
    }
    if (pthread_create(&s->replayer, NULL, replay_main, s) != 0) {
        snprintf(err, errlen, "cannot start the spool's replay thread");
        return -1;
    }
    s->replaying = 1;
    return 0;
}

const char *gw_spooler_not_ready(gw_spooler *s)
{
    spool_stats st;

    spool_get_stats(s->sp, &st);
    if (st.error == 0)
        return NULL;
    /* Written once by whichever probe sees it first; the error is sticky, the text the same. */
    pthread_mutex_lock(&s->lock);
    if (s->why[0] == '\0')
        snprintf(s->why, sizeof(s->why), "the spool cannot be written: %s",
                 strerror(st.error < 0 ? -st.error : st.error));
    pthread_mutex_unlock(&s->lock);
    return s->why;
}

void gw_spooler_metrics(gw_spooler *s, struct evbuffer *out)
{
    spool_stats st;

    spool_get_stats(s->sp, &st);
    prom_family(out, "ingest_spool_bytes", "gauge",
                "Bytes in the spool: segments on disk and groups pending");
    prom_sample_u64(out, "ingest_spool_bytes", NULL, st.bytes);
    prom_family(out, "ingest_spool_records", "gauge", "Spooled records Kafka has not acknowledged");
    prom_sample_u64(out, "ingest_spool_records", NULL, st.records);
    prom_family(out, "ingest_spool_segments", "gauge", "Segment files in the spool");
    prom_sample_u64(out, "ingest_spool_segments", NULL, st.segments);
    prom_family(out, "ingest_spool_oldest_seconds", "gauge", "Age of the oldest segment's first record");
    prom_sample_f64(out, "ingest_spool_oldest_seconds", NULL, (double)st.oldest_age_ms / 1000.0);
    prom_family(out, "ingest_spool_corrupt_records_total", "counter",
                "Damaged ranges found in the spool (each sent to the dead-letter topic)");
    prom_sample_u64(out, "ingest_spool_corrupt_records_total", NULL, st.corrupt_ranges);
    prom_family(out, "ingest_spool_corrupt_bytes_total", "counter", "Bytes of the damaged ranges");
    prom_sample_u64(out, "ingest_spool_corrupt_bytes_total", NULL, st.corrupt_bytes);
    prom_family(out, "ingest_spool_truncated_bytes_total", "counter", "Torn tails cut at start-up");
    prom_sample_u64(out, "ingest_spool_truncated_bytes_total", NULL, st.truncated_bytes);
    prom_family(out, "ingest_spool_expired_total", "counter",
                "Records older than --spool-max-age, not replayed");
    prom_sample_u64(out, "ingest_spool_expired_total", NULL, st.expired_records);
    prom_family(
        out, "ingest_spool_dead_letters_total", "counter",
        "Damaged ranges sent to the dead-letter topic (result: sent, or not, for want of memory or room)");
    prom_sample_u64(out, "ingest_spool_dead_letters_total", "result=\"sent\"", atomic_load(&s->dead_letters));
    prom_sample_u64(out, "ingest_spool_dead_letters_total", "result=\"failed\"",
                    atomic_load(&s->dead_letter_failures));
    prom_family(out, "ingest_spool_replayed_total", "counter",
                "Records left from an earlier run, queued again at start-up");
    prom_sample_u64(out, "ingest_spool_replayed_total", NULL, atomic_load(&s->replayed));
    prom_family(out, "ingest_spool_replay_delivered_total", "counter",
                "Records left from an earlier run that Kafka has now acknowledged");
    prom_sample_u64(out, "ingest_spool_replay_delivered_total", NULL, atomic_load(&s->replay_acked));
    prom_family(out, "ingest_spool_fsyncs_total", "counter", "Group commits (fdatasync) of the spool");
    prom_sample_u64(out, "ingest_spool_fsyncs_total", NULL, st.fsyncs);
    prom_family(out, "ingest_spool_fsync_seconds", "histogram", "Latency of the spool's fdatasync");
    prom_histogram_write(out, "ingest_spool_fsync_seconds", NULL, spool_fsync_histogram(s->sp));
    prom_family(out, "ingest_spool_healthy", "gauge", "1 while the spool's writer has no error");
    prom_sample_u64(out, "ingest_spool_healthy", NULL, st.error == 0);
}

void gw_spooler_stop_replay(gw_spooler *s)
{
    if (s == NULL || !s->replaying)
        return;
    atomic_store(&s->stop, 1);
    pthread_join(s->replayer, NULL);
    s->replaying = 0;
}

void gw_spooler_free(gw_spooler *s)
{
    if (s == NULL)
        return;
    gw_spooler_stop_replay(s);
    if (s->sp)
        spool_close(s->sp);
    fail_waits(s); /* what the last sync did not report: before the front ends' inboxes go */
    while (s->damaged) {
        damage *next = s->damaged->next;
        free(s->damaged);
        s->damaged = next;
    }
    free(s->early);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
