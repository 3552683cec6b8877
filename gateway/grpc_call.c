/* A gRPC call's state machine (grpc_int.h): requests, acks in seq order, the final status. */
#include "grpc_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>

#include "front.h"
#include "grpc/health/v1/health.pb-c.h"
#include "log.h"
#include "prom.h"
#include "status.h"
#include "mono.h"

/* --- references ---------------------------------------------------------------------------------- */

void gw_grpc_call_ref(gcall *c)
{
    atomic_fetch_add(&c->refs, 1);
}

void gw_grpc_call_unref(gcall *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    grpc_metadata_array_destroy(&c->md);
    if (c->m == M_OTHER)
        grpc_call_details_destroy(&c->details);
    if (c->recv)
        grpc_byte_buffer_destroy(c->recv);
    if (c->write_bytes)
        gw_budget_give_inbound(&c->g->gw->budget, c->write_bytes);
    gw_principal_release(c->who);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void gw_grpc_ack_unref(gack *a)
{
    if (atomic_fetch_sub(&a->refs, 1) != 1)
        return;
    if (a->resp)
        gw_budget_give_inbound(&a->call->g->gw->budget, a->resp_len);
    free(a->resp);
    gw_grpc_call_unref(a->call);
    free(a);
}

static gack *ack_new(gcall *c, uint64_t seq)
{
    gack *a = calloc(1, sizeof(*a));

    if (a == NULL)
        return NULL;
    a->a.seq = seq;
    a->a.state = GW_GRPC_ACK_READY;
    a->call = c;
    gw_grpc_call_ref(c);
    atomic_init(&a->refs, 1);
    return a;
}

/* An ack's place in the call's FIFO, and its bytes in what the call owes. @locks c->lock */
static void owe(gcall *c, gack *a)
{
    GW_GRPC_ASSERT_HELD(c);
    c->owed += a->resp_len;
    gw_grpc_ack_fifo_push(&c->acks, &a->a);
}

/* The oldest ack out of the FIFO (ready ones only when `ready`), or NULL. @locks c->lock */
static gack *unowe(gcall *c, int ready)
{
    GW_GRPC_ASSERT_HELD(c);
    gack *a = (gack *)(ready ? gw_grpc_ack_fifo_pop_ready(&c->acks) : gw_grpc_ack_fifo_pop(&c->acks));
    if (a)
        c->owed -= a->resp_len;
    return a;
}

/* --- sending --------------------------------------------------------------------------------------- */

static void set_final(gcall *c, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_final(gcall *c, grpc_status_code code, const char *fmt, ...)
{
    GW_GRPC_ASSERT_HELD(c);
    va_list ap;

    if (c->final_set)
        return;
    c->final_set = 1;
    c->final_code = code;
    va_start(ap, fmt);
    vsnprintf(c->final_msg, sizeof(c->final_msg), fmt, ap);
    va_end(ap);
    LOG_DEBUG("grpc", "%s peer=%s status=%d: %s",
              gw_grpc_method_paths[c->m] ? gw_grpc_method_paths[c->m] : "?", c->peer, (int)code,
              c->final_msg);
}

/* The C core's write batch (gw_grpc_call_io). */
static int core_write(gcall *c, const uint8_t *msg, size_t len, int has_msg, int status)
{
    grpc_op ops[3];
    size_t n = 0;
    grpc_byte_buffer *bb = NULL;
    grpc_slice details;
    grpc_metadata pushback;
    char ms[24];

    memset(ops, 0, sizeof(ops));
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n].data.send_initial_metadata.count = 0;
        n++;
    }
    if (has_msg) {
        grpc_slice s = grpc_slice_from_copied_buffer((const char *)msg, len);
        bb = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = bb;
        n++;
    }
    if (status) {
        grpc_status_code code = c->final_set ? c->final_code : GRPC_STATUS_OK;
        details = grpc_slice_from_copied_string(c->final_set ? c->final_msg : "");
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = code;
        ops[n].data.send_status_from_server.status_details = &details;
        ops[n].data.send_status_from_server.trailing_metadata_count = 0;
        if (c->final_set && c->final_retry_ms > 0) {
            /* gRFC A6's server pushback: a client's retry policy waits this long before trying again. */
            snprintf(ms, sizeof(ms), "%lld", c->final_retry_ms);
            pushback.key = grpc_slice_from_static_string("grpc-retry-pushback-ms");
            pushback.value = grpc_slice_from_copied_string(ms);
            ops[n].data.send_status_from_server.trailing_metadata_count = 1;
            ops[n].data.send_status_from_server.trailing_metadata = &pushback;
        }
        n++;
    }
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->o_write, NULL);
    if (status)
        grpc_slice_unref(details);
    if (status && c->final_set && c->final_retry_ms > 0)
        grpc_slice_unref(pushback.value);
    if (bb)
        grpc_byte_buffer_destroy(bb); /* the batch holds its own reference to the slices */
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("grpc", "cannot send on a call: %s", grpc_call_error_to_string(e));
        grpc_call_cancel(c->call, NULL);
        return -1;
    }
    return 0;
}

/* The C core's read (gw_grpc_call_io). */
static int core_read(gcall *c)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv;
    grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, &c->o_read, NULL);
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("grpc", "cannot read on a call: %s", grpc_call_error_to_string(e));
        grpc_call_cancel(c->call, NULL);
        return -1;
    }
    return 0;
}

const gw_grpc_call_io gw_grpc_core_io = {core_write, core_read};

/*
 * One write batch: initial metadata the first time, then the message
 * (`msg`, len bytes, copied) if any, then the status if `status`.
 * @locks c->lock
 */
static void start_write(gcall *c, const uint8_t *msg, size_t len, int has_msg, int status)
{
    GW_GRPC_ASSERT_HELD(c);
    if (c->g->io->write(c, msg, len, has_msg, status) != 0)
        return;
    if (has_msg) {
        /* The core holds a copy until the client reads it: counted until the write completes. */
        gw_budget_hold_inbound(&c->g->gw->budget, len);
        c->write_bytes = len;
    }
    c->md_sent = 1;
    c->writing = 1;
    c->ops++;
    if (status)
        c->status_sent = 1;
}

/* @locks c->lock */
static void start_read(gcall *c)
{
    GW_GRPC_ASSERT_HELD(c);
    if (c->g->io->read(c) != 0)
        return;
    c->reading = 1;
    c->ops++;
}

void gw_grpc_unary_read(gcall *c)
{
    GW_GRPC_ASSERT_HELD(c);
    if (!c->finished && !c->close_done && !c->final_set)
        start_read(c);
    if (!c->reading)
        gw_grpc_unary_done(c->g, c); /* ended while it waited, or the core refused: the next one's turn */
}

/* A unary call's one read: now, or once its turn comes (UNARY_READ_GRACE_MS). @locks c->lock */
static void start_unary_read(gcall *c)
{
    GW_GRPC_ASSERT_HELD(c);
    if (gw_grpc_unary_admit(c->g, c))
        gw_grpc_unary_read(c);
}

void gw_grpc_unary_cut(gcall *c, int reason)
{
    GW_GRPC_ASSERT_HELD(c);
    gateway *gw = c->g->gw;

    if (c->finished || c->close_done || c->read_done || c->final_set)
        return; /* its message came meanwhile, or the call ended */
    if (reason == GW_R_request_timeout)
        set_final(c, (grpc_status_code)gw_reasons[reason].grpc_status,
                  "the request message did not arrive within %lld ms (--grpc-message-timeout); send it again",
                  (long long)gw->cfg->grpc_message_timeout_ms);
    else
        set_final(c, (grpc_status_code)gw_reasons[reason].grpc_status,
                  "the request message had not arrived after %d ms while other calls waited for memory to "
                  "read theirs; send it again",
                  UNARY_READ_GRACE_MS);
    gw_admit_count_refused(gw, GW_GRPC, (gw_reason)reason);
    gw_admit_count_answered(gw, GW_GRPC, 0, 1);
    /* Its read (if one is in flight) comes back empty; the client hears this status. */
    grpc_call_cancel_with_status(c->call, c->final_code, c->final_msg, NULL);
    if (!c->reading)
        c->read_closed = 1; /* it waited: no read will tell */
}

static void drop_held(gcall *c)
{
    GW_GRPC_ASSERT_HELD(c);
    if (c->held_ack == NULL)
        return;
    /* Read, never queued, never acknowledged: the client sends it again. */
    gw_admit_count_answered(c->g->gw, GW_GRPC, 0, 1);
    if (c->held_ack->wait) {
        /* Never queued: no report will come for it; the admission frees it. */
        c->held_ack->wait = NULL;
        gw_grpc_ack_unref(c->held_ack);
    }
    gw_admission_clear(c->held);
    free(c->held);
    c->held = NULL;
    gw_grpc_ack_unref(c->held_ack);
    c->held_ack = NULL;
}

static void drop_acks(gcall *c)
{
    GW_GRPC_ASSERT_HELD(c);
    gack *a;

    /* Queued (or refused) but never acknowledged: the call ended first. */
    while ((a = unowe(c, 0)) != NULL) {
        gw_admit_count_answered(c->g->gw, GW_GRPC, 0, 1);
        gw_grpc_ack_unref(a);
    }
}

/*
 * Start whatever the call's state allows: the oldest ack that no longer
 * waits (with the status when nothing can follow it), the final status, or
 * the next read. Under the call's lock.
 */
void gw_grpc_pump(gcall *c)
{
    GW_GRPC_ASSERT_HELD(c);
    gw_grpc_front *g = c->g;

    if (c->close_done || c->status_sent || c->finished)
        return;
    if (c->m == M_STREAM && !c->read_closed && atomic_load(&g->gw->stopping))
        set_final(c, GRPC_STATUS_UNAVAILABLE,
                  "the gateway is shutting down; requests not acknowledged were "
                  "not taken, send them to another instance");

    if (c->final_set && c->held_ack)
        drop_held(c); /* never acknowledged: the client sends it again */

    if (!c->writing) {
        gack *a = unowe(c, 1);
        if (a && a->a.state == GW_GRPC_ACK_FAILED) {
            /* What follows it is not acknowledged: the client resends from this seq. */
            c->final_set = 0;
            char seq[32] = "";
            if (c->m == M_STREAM)
                snprintf(seq, sizeof(seq), "seq %llu: ", (unsigned long long)a->a.seq);
            if (a->err == ACK_TIMED_OUT)
                set_final(
                    c, GRPC_STATUS_UNAVAILABLE,
                    "%sKafka did not acknowledge within %lld ms; the events may still arrive, a retry with "
                    "the same ids is safe",
                    seq, (long long)g->gw->cfg->ack_timeout_ms);
            else if (a->err == ACK_STOPPED)
                set_final(
                    c, GRPC_STATUS_UNAVAILABLE,
                    "%sthe gateway stopped before Kafka acknowledged; the events may still arrive, a retry "
                    "with the same ids is safe",
                    seq);
            else if (a->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
                /* Not UNAVAILABLE: Kafka will never take it, and a client told to retry would forever. */
                char why[256];
                ack_wait_too_large_text(a->too_large, a->too_large_limit, why, sizeof(why));
                set_final(c, (grpc_status_code)gw_reasons[GW_R_too_large].grpc_status, "%s%s", seq, why);
            } else
                set_final(
                    c, GRPC_STATUS_UNAVAILABLE,
                    "%sKafka did not take every event: %s; the events may still arrive, a retry with the "
                    "same ids is safe",
                    seq, rd_kafka_err2str((rd_kafka_resp_err_t)a->err));
            gw_admit_count_refused(g->gw, GW_GRPC,
                                   a->err == ACK_TIMED_OUT                          ? GW_R_ack_timeout
                                   : a->err == ACK_STOPPED                          ? GW_R_shutting_down
                                   : a->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? GW_R_too_large
                                                                                    : GW_R_kafka_error);
            gw_admit_count_answered(g->gw, GW_GRPC, a->started_ns, 1);
            gw_grpc_ack_unref(a);
            drop_acks(c);
            drop_held(c);
            start_write(c, NULL, 0, 0, 1);
            return;
        }
        if (a) {
            int last = c->acks.n == 0 && c->held_ack == NULL && (c->read_closed || c->final_set);
            gw_admit_count_answered(g->gw, GW_GRPC, a->started_ns, 1);
            start_write(c, a->resp, a->resp_len, 1, last);
            gw_grpc_ack_unref(a);
            if (last)
                return;
            /* And read on meanwhile: reads and writes overlap, one of each. */
        } else if (c->acks.n == 0 && c->held_ack == NULL && (c->final_set || c->read_closed)) {
            start_write(c, NULL, 0, 0, 1);
            return;
        }
    }
    if (c->m == M_STREAM && !c->reading && !c->read_closed && !c->final_set && c->held_ack == NULL &&
        c->acks.n < STREAM_MAX_ACKS && c->owed < STREAM_MAX_OWED_BYTES) {
        /* Over its quota, a stream is held back, not failed: the timer thread resumes it. */
        if (gw_grpc_read_blocked(g->gw) || (c->quota_until_ms && mono_ms() < c->quota_until_ms))
            gw_grpc_park(c);
        else
            start_read(c);
    }
}

/* --- requests -------------------------------------------------------------------------------------- */

/* On the last delivery report of a committed request: any thread. */
static void on_delivered(ack_wait *w)
{
    gack *a = w->ctx;
    gcall *c = a->call;
    int err = atomic_load(&w->error), timer_ref;

    gw_grpc_call_ref(c);
    gw_grpc_call_lock(c);
    a->wait = NULL;
    if (a->a.state == GW_GRPC_ACK_WAITING) {
        a->a.state = err ? GW_GRPC_ACK_FAILED : GW_GRPC_ACK_READY;
        a->err = err;
        a->too_large = atomic_load(&w->too_large);
        a->too_large_limit = atomic_load(&w->too_large_limit);
    }
    timer_ref = gw_grpc_timer_remove(c->g, a);
    gw_grpc_pump(c);
    gw_grpc_call_unlock(c);
    ack_wait_free(w);
    if (timer_ref)
        gw_grpc_ack_unref(a);
    gw_grpc_ack_unref(a); /* the wait's */
    gw_grpc_call_unref(c);
}

/* The request's events went into the queue: its ack goes into the FIFO, waiting for Kafka or not. */
static void queued(gcall *c, gack *a, int committed)
{
    GW_GRPC_ASSERT_HELD(c);
    if (committed) {
        a->a.state = GW_GRPC_ACK_WAITING;
        a->due_ms = mono_ms() + c->g->gw->cfg->ack_timeout_ms;
        gw_grpc_timer_add(c->g, a);
    }
    owe(c, a);
}

/* Push the held request again. */
void gw_grpc_push_held(gcall *c)
{
    GW_GRPC_ASSERT_HELD(c);
    int rc = gw_admit_push(c->held, 1);

    if (rc == -EAGAIN) {
        gw_grpc_park(c);
        return;
    }
    if (rc != 0) {
        char msg[sizeof(c->final_msg)];
        gw_grpc_prot_status_message(&c->held->refusal, 0, msg, sizeof(msg));
        set_final(c, (grpc_status_code)gw_reasons[c->held->refusal.reason].grpc_status, "%s", msg);
        drop_held(c);
        return;
    }
    queued(c, c->held_ack, c->held->committed);
    c->held_ack = NULL;
    gw_admission_clear(c->held);
    free(c->held);
    c->held = NULL;
}

/*
 * One PublishRequest made ready to queue by the admission stage: parsed,
 * validated, encoded. That is the costly part (milliseconds for a big
 * batch), so a stream does it without its lock, and the delivery reports of
 * its earlier requests, which take that lock on librdkafka's one thread,
 * are not held up.
 */
typedef struct prepared {
    gw_admission adm; /* the request's records until they are queued */
    int refused;      /* the call ends with adm.refusal */
    gack *a;          /* the ack with its response; NULL when refused */
    int has_records;  /* 0: a stream's request refused event by event, or an empty one: acked, nothing queued
                       */
} prepared;

/* Let go of what was prepared and not queued. */
static void prepared_drop(prepared *p)
{
    if (p->a) {
        if (p->a->wait) {
            /* Never queued: no report will come for it; the admission frees it. */
            p->a->wait = NULL;
            gw_grpc_ack_unref(p->a);
        }
        gw_grpc_ack_unref(p->a);
        p->a = NULL;
    }
    gw_admission_clear(&p->adm);
}

static int oom(prepared *p)
{
    prepared_drop(p);
    gw_admit_count_refused(p->adm.gw, GW_GRPC, GW_R_internal);
    p->refused = 1;
    p->adm.refusal.reason = GW_R_internal;
    p->adm.refusal.index = -1;
    snprintf(p->adm.refusal.message, sizeof(p->adm.refusal.message), "out of memory");
    return -1;
}

/* Through the admission stage. Reads only what does not change after the call started: no lock needed. */
static void prepare(gcall *c, const uint8_t *data, size_t len, prepared *p)
{
    gw_grpc_front *g = c->g;
    int stream = c->m == M_STREAM;
    gw_grpc_publish pub = {data, len, 0};

    memset(p, 0, sizeof(*p));
    gw_admission_init(&p->adm, g->gw, GW_GRPC, c->peer, prom_now_ns());
    gw_admission_set_principal(&p->adm, gw_principal_hold(c->who)); /* the call's: not identified again */
    p->adm.done = on_delivered; /* no inbox: on librdkafka's thread, under the call's lock */
    p->adm.all_errors = 1;
    p->adm.quota_debt = stream;
    p->adm.request_bytes = len;
    if (!stream && gw_admit_gate(&p->adm, NULL, 0) != 0) {
        /* Admission before parsing: an overloaded gateway should not spend CPU on what it will refuse. */
        p->refused = 1;
        return;
    }
    if (gw_admit_prepare(&p->adm, gw_grpc_prot_parse, &pub, stream) != 0 &&
        (!stream || p->adm.n_errors == 0)) {
        p->refused = 1;
        return;
    }
    if ((p->a = ack_new(c, pub.seq)) == NULL) {
        oom(p);
        return;
    }
    p->a->started_ns = p->adm.started_ns;
    if (p->adm.n_errors) {
        /* A stream's request refused event by event: acknowledged in its turn, with what is wrong. */
        if (gw_grpc_prot_response(pub.seq, NULL, p->adm.errors, p->adm.n_errors, &p->a->resp,
                                  &p->a->resp_len) != 0)
            oom(p);
        else
            gw_budget_hold_inbound(&g->gw->budget, p->a->resp_len);
        return;
    }
    if (gw_grpc_prot_response(pub.seq, &p->adm.batch, NULL, 0, &p->a->resp, &p->a->resp_len) != 0) {
        oom(p);
        return;
    }
    gw_budget_hold_inbound(&g->gw->budget, p->a->resp_len);
    p->has_records = p->adm.batch.n > 0;
    if (p->adm.wait) {
        p->a->wait = p->adm.wait;
        p->adm.wait->ctx = p->a;
        atomic_fetch_add(&p->a->refs, 1);
    }
    ing_event_batch_reset(&p->adm.batch); /* the ids are in the response: only the records go on */
}

/* End the call with a refusal. Under the call's lock. */
static void end_refused(gcall *c, const gw_refusal *r, size_t n_errors)
{
    GW_GRPC_ASSERT_HELD(c);
    char msg[sizeof(c->final_msg)];

    gw_grpc_prot_status_message(r, n_errors, msg, sizeof(msg));
    if (!c->final_set)
        c->final_retry_ms = r->retry_after_s * 1000LL;
    set_final(c, (grpc_status_code)gw_reasons[r->reason].grpc_status, "%s", msg);
}

/* Queue what was prepared, and give its ack its place. Under the call's lock. */
static void commit(gcall *c, prepared *p)
{
    GW_GRPC_ASSERT_HELD(c);
    gw_grpc_front *g = c->g;
    int rc;

    if (p->adm.quota_wait_ns > 0)
        /* Charged into debt (a stream's quota): its next read waits until the bucket has room. */
        c->quota_until_ms = mono_ms() + (p->adm.quota_wait_ns + 999999) / 1000000;
    if (p->refused) {
        gw_admit_count_answered(g->gw, GW_GRPC, p->adm.started_ns, 1);
        end_refused(c, &p->adm.refusal, p->adm.n_errors);
        prepared_drop(p);
        return;
    }
    if (c->close_done || c->final_set) {
        /* The call is ending (cancelled, stopping, an earlier failure): not taken, not acknowledged. */
        gw_admit_count_answered(g->gw, GW_GRPC, 0, 1);
        prepared_drop(p);
        return;
    }
    if (!p->has_records) {
        /* Refused event by event (counted then), or empty: acked in its turn, with its errors. */
        owe(c, p->a);
        p->a = NULL;
        prepared_drop(p);
        return;
    }
    rc = gw_admit_push(&p->adm, c->m == M_STREAM);
    if (rc == -EAGAIN) {
        /* Read while there was room, and others took it meanwhile: hold it, read nothing more until it fits.
         */
        if ((c->held = malloc(sizeof(*c->held))) == NULL) {
            oom(p);
            gw_admit_count_answered(g->gw, GW_GRPC, p->adm.started_ns, 1);
            end_refused(c, &p->adm.refusal, 0);
            return;
        }
        *c->held = p->adm; /* the records move; p->adm is not cleared */
        c->held_ack = p->a;
        LOG_DEBUG("grpc", "stream peer=%s: seq %llu held, the queue has no room for its %zu events yet",
                  c->peer, (unsigned long long)p->a->a.seq, c->held->n_msgs);
        p->a = NULL;
        gw_grpc_park(c);
        return;
    }
    if (rc != 0) {
        gw_admit_count_answered(g->gw, GW_GRPC, p->adm.started_ns, 1);
        end_refused(c, &p->adm.refusal, 0);
        prepared_drop(p);
        return;
    }
    queued(c, p->a,
           p->adm.committed); /* a report may come at once: on_delivered waits for this call's lock */
    p->a = NULL;
    gw_admission_clear(&p->adm);
}

/* The bytes of a received message, in one slice the caller unrefs. */
static int message_bytes(grpc_byte_buffer *bb, grpc_slice *out)
{
    grpc_byte_buffer_reader r;

    if (!grpc_byte_buffer_reader_init(&r, bb))
        return -1;
    *out = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    return 0;
}

static void prepare_message(gcall *c, grpc_byte_buffer *bb, prepared *p)
{
    grpc_slice s;

    if (message_bytes(bb, &s) != 0) {
        memset(p, 0, sizeof(*p));
        gw_admission_init(&p->adm, c->g->gw, GW_GRPC, c->peer, prom_now_ns());
        oom(p);
        snprintf(p->adm.refusal.message, sizeof(p->adm.refusal.message), "cannot read the message");
        return;
    }
    /* Its bytes are held while it is handled: streams read no more past the inbound share. */
    gw_budget_hold_inbound(&c->g->gw->budget, GRPC_SLICE_LENGTH(s));
    prepare(c, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), p);
    gw_budget_give_inbound(&c->g->gw->budget, GRPC_SLICE_LENGTH(s));
    grpc_slice_unref(s);
}

/* Health/Check: SERVING while the gateway is ready (gateway/status.h), as /readyz says. Under the call's
 * lock. */
static void handle_health(gcall *c, grpc_byte_buffer *bb)
{
    Grpc__Health__V1__HealthCheckRequest *req = NULL;
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    gateway *gw = c->g->gw;
    uint8_t buf[16];
    grpc_slice s;

    GW_GRPC_ASSERT_HELD(c);
    if (message_bytes(bb, &s) == 0) {
        req = grpc__health__v1__health_check_request__unpack(NULL, GRPC_SLICE_LENGTH(s),
                                                             GRPC_SLICE_START_PTR(s));
        grpc_slice_unref(s);
    }
    if (req == NULL) {
        set_final(c, GRPC_STATUS_INVALID_ARGUMENT, "the message is not a grpc.health.v1.HealthCheckRequest");
        return;
    }
    if (req->service[0] != '\0' && strcmp(req->service, "ingest.v1.Ingest") != 0) {
        set_final(c, GRPC_STATUS_NOT_FOUND, "unknown service '%.100s'", req->service);
    } else {
        int ready = gateway_not_ready(gw) == NULL;
        resp.status = ready ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                            : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
        size_t n = grpc__health__v1__health_check_response__pack(&resp, buf);
        c->read_closed = 1;
        start_write(c, buf, n, 1, 1);
    }
    grpc__health__v1__health_check_request__free_unpacked(req, NULL);
}

static int push_prop(gw_peer_cert *pc, const char *kind, const grpc_auth_property *prop)
{
    size_t kl = strlen(kind);
    char **ns, *v;

    /* A name with a NUL inside would compare as its prefix: not an identity. */
    if (memchr(prop->value, '\0', prop->value_length))
        return 0;
    if ((ns = realloc(pc->sans, (pc->n_sans + 1) * sizeof(*ns))) == NULL)
        return -1;
    pc->sans = ns;
    if ((v = malloc(kl + prop->value_length + 1)) == NULL)
        return -1;
    memcpy(v, kind, kl);
    memcpy(v + kl, prop->value, prop->value_length);
    v[kl + prop->value_length] = '\0';
    ns[pc->n_sans++] = v;
    return 0;
}

/*
 * The verified client certificate of a TLS connection, as the core's
 * handshake read it (its x509_subject is OpenSSL's RFC 2253 form, as HTTP's):
 * NULL without one, or on no memory (then the call is anonymous).
 */
static gw_peer_cert *call_cert(gcall *c)
{
    static const struct {
        const char *prop, *kind;
    } sans[] = {{GRPC_PEER_DNS_PROPERTY_NAME, "DNS:"},
                {GRPC_PEER_URI_PROPERTY_NAME, "URI:"},
                {GRPC_PEER_EMAIL_PROPERTY_NAME, "email:"},
                {GRPC_PEER_IP_PROPERTY_NAME, "IP:"}};
    grpc_auth_context *ctx = c->call ? grpc_call_auth_context(c->call) : NULL;
    gw_peer_cert *pc = NULL;
    grpc_auth_property_iterator it;
    const grpc_auth_property *prop;

    if (ctx == NULL)
        return NULL;
    it = grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_SUBJECT_PROPERTY_NAME);
    if ((prop = grpc_auth_property_iterator_next(&it)) == NULL || (pc = calloc(1, sizeof(*pc))) == NULL ||
        (pc->subject = strndup(prop->value, prop->value_length)) == NULL)
        goto fail;
    for (size_t k = 0; k < sizeof(sans) / sizeof(sans[0]); k++) {
        it = grpc_auth_context_find_properties_by_name(ctx, sans[k].prop);
        while ((prop = grpc_auth_property_iterator_next(&it)) != NULL)
            if (push_prop(pc, sans[k].kind, prop) != 0)
                goto fail;
    }
    grpc_auth_context_release(ctx);
    return pc;

fail:
    gw_peer_cert_free(pc);
    grpc_auth_context_release(ctx);
    return NULL;
}

/*
 * Who the caller is and whether the gateway takes calls now, through the
 * admission stage, before any message is read. A unary call's request is
 * gated again with the queue when it is prepared; a stream waits for room
 * instead (it parks), so overload does not refuse it. Refused: counted as
 * one request (the call) and its final status set. Under the call's lock.
 */
static int gate(gcall *c)
{
    gw_credentials cred = {NULL, 0, NULL};
    gw_admission a;
    int rc, repeated = 0;

    for (size_t i = 0; i < c->md.count; i++) {
        /* By address: a short slice holds its bytes inline, so a copy's would not outlive the loop. */
        const grpc_slice *k = &c->md.metadata[i].key, *v = &c->md.metadata[i].value;
        if (GRPC_SLICE_LENGTH(*k) == 13 && memcmp(GRPC_SLICE_START_PTR(*k), "authorization", 13) == 0) {
            repeated = cred.authorization != NULL;
            cred.authorization = (const char *)GRPC_SLICE_START_PTR(*v);
            cred.authorization_len = GRPC_SLICE_LENGTH(*v);
        }
    }
    gw_peer_cert *pc = NULL;
    /* A token decides alone: the certificate is read only without one. */
    if (cred.authorization == NULL)
        cred.cert = pc = call_cert(c);
    gw_admission_init(&a, c->g->gw, GW_GRPC, c->peer, 0);
    a.quota_debt = c->m == M_STREAM; /* a stream over quota waits to read; it is not refused */
    if (repeated) {
        /* Which one counts is what a proxy in front of us may read differently: neither does. */
        gw_admission_refuse(&a, GW_R_unauthorized, -1, "more than one authorization metadata entry");
        gw_admit_count_refused(c->g->gw, GW_GRPC, GW_R_unauthorized);
        rc = -1;
    } else {
        rc = gw_admit_gate(&a, &cred, 1);
    }
    if (rc != 0) {
        gw_admit_count_answered(c->g->gw, GW_GRPC, 0, 1);
        end_refused(c, &a.refusal, 0);
    } else {
        c->who = gw_admission_take_principal(&a);
        if (a.quota_wait_ns > 0) /* a stream opened over its quota: its first read waits too */
            c->quota_until_ms = mono_ms() + (a.quota_wait_ns + 999999) / 1000000;
    }
    gw_admission_clear(&a);
    gw_peer_cert_free(pc);
    return rc;
}

/* --- call life ------------------------------------------------------------------------------------- */

gcall *gw_grpc_call_new(gw_grpc_front *g, method m)
{
    gcall *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->g = g;
    c->m = m;
    pthread_mutex_init(&c->lock, NULL);
    atomic_init(&c->refs, 1); /* the core's side of the call, until it is finished */
    grpc_metadata_array_init(&c->md);
    if (m == M_OTHER)
        grpc_call_details_init(&c->details);
    gw_grpc_ack_fifo_init(&c->acks);
    c->o_new = (op){OP_NEW, c};
    c->o_close = (op){OP_CLOSE, c};
    c->o_read = (op){OP_READ, c};
    c->o_write = (op){OP_WRITE, c};
    return c;
}

/* Once the core is done with the call (closed, nothing in flight): let go of it. Under its lock. */
static void maybe_finish(gcall *c)
{
    GW_GRPC_ASSERT_HELD(c);
    gw_grpc_front *g = c->g;
    int park_ref, wait_ref;

    if (c->finished || !c->close_done || c->ops > 0)
        return;
    c->finished = 1;
    drop_held(c);
    drop_acks(c);
    grpc_call_unref(c->call);
    c->call = NULL;
    gw_grpc_front_lock(g);
    park_ref = gw_grpc_unpark_locked(g, c);
    wait_ref = gw_grpc_unary_forget_locked(g, c);
    if (c->active) {
        if (c->a_prev)
            c->a_prev->a_next = c->a_next;
        else
            g->a_head = c->a_next;
        if (c->a_next)
            c->a_next->a_prev = c->a_prev;
        c->active = 0;
    }
    g->live--;
    pthread_cond_broadcast(&g->change);
    gw_grpc_front_unlock(g);
    gw_front_changed(g->gw);
    if (park_ref)
        gw_grpc_call_unref(c); /* the caller holds one more: not the last */
    if (wait_ref)
        gw_grpc_call_unref(c);
    gw_grpc_call_unref(c); /* the core's side */
}

void gw_grpc_on_new(gcall *c, int success)
{
    gw_grpc_front *g = c->g;
    char *peer;
    grpc_op op;

    /* Counted live in the same breath as no longer armed: the close never sees both at 0 while this goes on.
     */
    gw_grpc_front_lock(g);
    g->armed--;
    if (success) {
        g->live++;
        c->active = 1;
        c->a_prev = NULL;
        c->a_next = g->a_head;
        if (g->a_head)
            g->a_head->a_prev = c;
        g->a_head = c;
    }
    pthread_cond_broadcast(&g->change);
    gw_grpc_front_unlock(g);
    if (!success) {
        /* The server is shutting down: no call came. */
        gw_grpc_call_unref(c);
        return;
    }
    if (!atomic_load(&g->shutting))
        gw_grpc_arm(g, c->m);

    gw_grpc_call_ref(c);
    gw_grpc_call_lock(c);

    peer = grpc_call_get_peer(c->call);
    gw_grpc_prot_peer(peer, c->peer, sizeof(c->peer));
    gpr_free(peer);

    /* Tells when the call is over, however it ends: answered, cancelled, past its deadline, disconnected. */
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (grpc_call_start_batch(c->call, &op, 1, &c->o_close, NULL) == GRPC_CALL_OK) {
        c->ops++;
    } else {
        /* Cannot happen on a fresh call; without it the call could never finish, so stop here. */
        LOG_ERROR("grpc", "cannot wait for the close of a call");
        abort();
    }

    switch (c->m) {
    case M_OTHER:
        c->read_closed = 1;
        set_final(
            c, GRPC_STATUS_UNIMPLEMENTED, "no method %.*s",
            (int)(GRPC_SLICE_LENGTH(c->details.method) > 200 ? 200 : GRPC_SLICE_LENGTH(c->details.method)),
            (const char *)GRPC_SLICE_START_PTR(c->details.method));
        break;
    case M_HEALTH:
        /* Health needs no token: probes carry none. */
        start_unary_read(c);
        break;
    case M_PUBLISH:
    case M_STREAM:
        /* Who it is, before a byte of the message is read. */
        if (gate(c) != 0)
            c->read_closed = 1;
        else if (c->m == M_PUBLISH)
            start_unary_read(c);
        break;
    default: break;
    }
    gw_grpc_pump(c);
    gw_grpc_call_unlock(c);
    gw_grpc_call_unref(c);
}

/*
 * A read completed. A request is prepared without the call's lock; the read
 * stays counted in `ops` (and `reading` set) meanwhile, so the call can
 * neither finish nor start another read before commit(). A unary call reads
 * once: no message means none was sent, or the call was cut off or ended.
 */
static void on_read(gcall *c, int success)
{
    grpc_byte_buffer *msg;
    int unary = c->m != M_STREAM;
    prepared p;

    gw_grpc_call_lock(c);
    msg = success ? c->recv : NULL;
    if (c->recv && msg == NULL)
        grpc_byte_buffer_destroy(c->recv);
    c->recv = NULL;
    if (unary) {
        c->read_done = 1;
        gw_grpc_unary_done(c->g, c);
        if (msg && c->final_set) {
            /* Cut off (and counted) as it came: the client hears so, and sends it again. */
            grpc_byte_buffer_destroy(msg);
            msg = NULL;
        }
    }
    gw_grpc_call_unlock(c);

    if (msg && c->m != M_HEALTH)
        prepare_message(c, msg, &p);

    gw_grpc_call_lock(c);
    c->ops--;
    c->reading = 0;
    if (unary)
        c->read_closed = 1;
    if (msg && c->m == M_HEALTH)
        handle_health(c, msg);
    else if (msg)
        commit(c, &p);
    else if (unary && !c->close_done)
        set_final(c, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
    else
        c->read_closed = 1; /* the client's half-close, or the call's end */
    if (msg)
        grpc_byte_buffer_destroy(msg);
    gw_grpc_pump(c);
    maybe_finish(c);
    gw_grpc_call_unlock(c);
}

void gw_grpc_on_op(op *o, int success)
{
    gcall *c = o->call;

    gw_grpc_call_ref(c);
    if (o->kind == OP_READ) {
        on_read(c, success);
        gw_grpc_call_unref(c);
        return;
    }
    gw_grpc_call_lock(c);
    c->ops--;
    if (o->kind == OP_CLOSE) {
        c->close_done = 1;
        if (c->cancelled)
            LOG_DEBUG("grpc", "%s peer=%s: cancelled (by the client, a deadline or a disconnect)",
                      gw_grpc_method_paths[c->m] ? gw_grpc_method_paths[c->m] : "?", c->peer);
    } else if (o->kind == OP_WRITE) {
        /* A failed write: the call is going; RECV_CLOSE tells the rest. */
        c->writing = 0;
        gw_budget_give_inbound(&c->g->gw->budget, c->write_bytes);
        c->write_bytes = 0;
    }
    gw_grpc_pump(c);
    maybe_finish(c);
    gw_grpc_call_unlock(c);
    gw_grpc_call_unref(c);
}
