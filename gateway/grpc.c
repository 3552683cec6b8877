/*
 * gRPC: Publish, PublishStream and Health/Check on the C core.
 *
 * Every call is a `gcall` with a lock of its own. Four things move it on:
 * its completion-queue events (the call's context is the tag, through one
 * `op` per kind, and at most one read and one write are in flight), the last
 * Kafka delivery report of one of its requests (on librdkafka's thread), the
 * timer thread (ack timeouts; streams parked until the queue has room), and
 * the stop. Each takes a reference on the call, locks it, changes its state,
 * and calls pump(), which starts whatever the new state allows: the next
 * ack in seq order, the final status, the next read.
 *
 * Lock order: a call's lock, then the front's. The timer thread and the stop
 * take calls off the front's lists under the front's lock, with a reference,
 * and lock each call only after letting go of the front's lock.
 */
#include "grpc.h"

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
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "admit.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc_prot.h"
#include "log.h"
#include "producer.h"
#include "status.h"
#include "prom.h"

/* Acks a stream may owe before it stops reading: bounds what a client that never reads them costs. */
#define STREAM_MAX_ACKS 32
/* Requested calls kept waiting in the core per method, so that a burst of new calls does not wait for us. */
#define ARMED_PER_METHOD 4
/* How often parked streams look at the queue again. */
#define PARK_POLL_MS 5

typedef enum method { M_PUBLISH, M_STREAM, M_HEALTH, M_OTHER, N_METHODS } method;

static const char *const method_paths[N_METHODS] = {
    "/ingest.v1.Ingest/Publish", "/ingest.v1.Ingest/PublishStream", "/grpc.health.v1.Health/Check", NULL};

typedef enum op_kind { OP_NEW, OP_CLOSE, OP_READ, OP_WRITE, OP_SHUTDOWN } op_kind;

typedef struct gcall gcall;

/* A completion-queue tag: what completed, for which call. */
typedef struct op {
    op_kind kind;
    gcall *call;
} op;

/* One request's acknowledgement, from the time its events are queued until it is sent. */
typedef struct gack {
    gw_grpc_ack a; /* first: FIFO link, state, seq */
    gcall *call;
    atomic_int refs;  /* the FIFO (or the held request), the ack_wait, the timer list */
    ack_wait *wait;   /* until the last delivery report */
    int err;          /* why FAILED: an rd_kafka_resp_err_t, or ACK_TIMED_OUT */
    long long due_ms; /* ack timeout, monotonic */
    struct gack *t_prev, *t_next;
    int in_timer; /* front lock */
    uint8_t *resp;
    size_t resp_len;
    uint64_t started_ns; /* the request's arrival, for the latency histogram */
} gack;

#define ACK_TIMED_OUT (-1)
#define ACK_STOPPED   (-2)

struct gcall {
    gw_grpc_front *g;
    method m;
    pthread_mutex_t lock;
    atomic_int refs;

    grpc_call *call;
    gpr_timespec deadline; /* the core enforces it: past it, the call is cancelled and RECV_CLOSE says so */
    grpc_metadata_array md;
    grpc_call_details details; /* M_OTHER only */
    grpc_byte_buffer *payload; /* the unary request, read by the core */
    grpc_byte_buffer *recv;    /* a stream's read in flight */
    int cancelled;             /* RECV_CLOSE_ON_SERVER's answer */
    op o_new, o_close, o_read, o_write;
    unsigned ops; /* batches in flight */
    unsigned close_done : 1, reading : 1, writing : 1, read_closed : 1, md_sent : 1, status_sent : 1,
        finished : 1;
    char peer[128];

    gw_grpc_ack_fifo acks;
    /* A request read whose events did not fit in the queue yet (streams): pushed again when there is room. */
    gw_admission *held;
    gack *held_ack;

    /* The status the call ends with, once decided; acks before it go out first. */
    int final_set;
    grpc_status_code final_code;
    char final_msg[300];

    /* Front lock: */
    int parked, active;
    gcall *p_prev, *p_next; /* parked until the queue has room */
    gcall *a_prev, *a_next; /* open calls, for the stop */
    gcall *r_next;          /* the timer thread's own list of parked calls it resumes */
};

typedef struct cq_thread {
    gw_grpc_front *g;
    pthread_t tid;
    int index;
    int started;
} cq_thread;

struct gw_grpc_front {
    gateway *gw;
    grpc_server *server;
    grpc_completion_queue *cq;
    void *reg[N_METHODS];
    cq_thread *threads;
    int n_threads;
    op shutdown_op;
    atomic_int shutting;

    pthread_mutex_t lock;
    pthread_cond_t cond;   /* the timer thread's wake-up */
    pthread_cond_t change; /* live, armed or shutdown_done changed */
    size_t live;           /* calls started and not finished */
    size_t armed;          /* requested calls not yet come */
    int shutdown_done;
    int timer_stop;
    pthread_t timer;
    int timer_started;
    gack *t_head, *t_tail;
    gcall *p_head;
    gcall *a_head;
    int closed;
};

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- references ---------------------------------------------------------------------------------- */

static void call_ref(gcall *c)
{
    atomic_fetch_add(&c->refs, 1);
}

static void call_unref(gcall *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    grpc_metadata_array_destroy(&c->md);
    if (c->m == M_OTHER)
        grpc_call_details_destroy(&c->details);
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->recv)
        grpc_byte_buffer_destroy(c->recv);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static void ack_unref(gack *a)
{
    if (atomic_fetch_sub(&a->refs, 1) != 1)
        return;
    free(a->resp);
    call_unref(a->call);
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
    call_ref(c);
    atomic_init(&a->refs, 1);
    return a;
}

/* --- the front's lists ----------------------------------------------------------------------------- */

static void timer_add(gw_grpc_front *g, gack *a)
{
    atomic_fetch_add(&a->refs, 1);
    pthread_mutex_lock(&g->lock);
    a->in_timer = 1;
    a->t_next = NULL;
    a->t_prev = g->t_tail;
    if (g->t_tail)
        g->t_tail->t_next = a;
    else
        g->t_head = a;
    g->t_tail = a;
    if (g->t_head == a)
        pthread_cond_signal(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static void timer_unlink_locked(gw_grpc_front *g, gack *a)
{
    if (a->t_prev)
        a->t_prev->t_next = a->t_next;
    else
        g->t_head = a->t_next;
    if (a->t_next)
        a->t_next->t_prev = a->t_prev;
    else
        g->t_tail = a->t_prev;
    a->t_prev = a->t_next = NULL;
    a->in_timer = 0;
}

/* Take a off the timer list; 1 when it was on it (the caller then owns the list's reference). */
static int timer_remove(gw_grpc_front *g, gack *a)
{
    int was;

    pthread_mutex_lock(&g->lock);
    if ((was = a->in_timer))
        timer_unlink_locked(g, a);
    pthread_mutex_unlock(&g->lock);
    return was;
}

static void park(gcall *c)
{
    gw_grpc_front *g = c->g;

    pthread_mutex_lock(&g->lock);
    if (!c->parked) {
        call_ref(c);
        c->parked = 1;
        c->p_prev = NULL;
        c->p_next = g->p_head;
        if (g->p_head)
            g->p_head->p_prev = c;
        g->p_head = c;
        pthread_cond_signal(&g->cond);
    }
    pthread_mutex_unlock(&g->lock);
}

/* Off the parked list; 1 when it was on it (the caller then owns that reference). */
static int unpark_locked(gw_grpc_front *g, gcall *c)
{
    if (!c->parked)
        return 0;
    if (c->p_prev)
        c->p_prev->p_next = c->p_next;
    else
        g->p_head = c->p_next;
    if (c->p_next)
        c->p_next->p_prev = c->p_prev;
    c->p_prev = c->p_next = NULL;
    c->parked = 0;
    return 1;
}

/* --- sending --------------------------------------------------------------------------------------- */

static void set_final(gcall *c, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_final(gcall *c, grpc_status_code code, const char *fmt, ...)
{
    va_list ap;

    if (c->final_set)
        return;
    c->final_set = 1;
    c->final_code = code;
    va_start(ap, fmt);
    vsnprintf(c->final_msg, sizeof(c->final_msg), fmt, ap);
    va_end(ap);
    LOG_DEBUG("grpc", "%s peer=%s status=%d: %s", method_paths[c->m] ? method_paths[c->m] : "?", c->peer,
              (int)code, c->final_msg);
}

/*
 * One write batch: initial metadata the first time, then the message
 * (`msg`, len bytes, copied) if any, then the status if `status`.
 */
static void start_write(gcall *c, const uint8_t *msg, size_t len, int has_msg, int status)
{
    grpc_op ops[3];
    size_t n = 0;
    grpc_byte_buffer *bb = NULL;
    grpc_slice details;

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
        n++;
    }
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->o_write, NULL);
    if (status)
        grpc_slice_unref(details);
    if (bb)
        grpc_byte_buffer_destroy(bb); /* the batch holds its own reference to the slices */
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("grpc", "cannot send on a call: %s", grpc_call_error_to_string(e));
        grpc_call_cancel(c->call, NULL);
        return;
    }
    c->md_sent = 1;
    c->writing = 1;
    c->ops++;
    if (status)
        c->status_sent = 1;
}

static void start_read(gcall *c)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv;
    grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, &c->o_read, NULL);
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("grpc", "cannot read on a call: %s", grpc_call_error_to_string(e));
        grpc_call_cancel(c->call, NULL);
        return;
    }
    c->reading = 1;
    c->ops++;
}

static void drop_held(gcall *c)
{
    if (c->held_ack == NULL)
        return;
    /* Read, never queued, never acknowledged: the client sends it again. */
    gw_admit_count_answered(c->g->gw, GW_GRPC, 0, 1);
    if (c->held_ack->wait) {
        /* Never queued: no report will come for it; the admission frees it. */
        c->held_ack->wait = NULL;
        ack_unref(c->held_ack);
    }
    gw_admission_clear(c->held);
    free(c->held);
    c->held = NULL;
    ack_unref(c->held_ack);
    c->held_ack = NULL;
}

static void drop_acks(gcall *c)
{
    gw_grpc_ack *a;

    /* Queued (or refused) but never acknowledged: the call ended first. */
    while ((a = gw_grpc_ack_fifo_pop(&c->acks)) != NULL) {
        gw_admit_count_answered(c->g->gw, GW_GRPC, 0, 1);
        ack_unref((gack *)a);
    }
}

/*
 * Start whatever the call's state allows: the oldest ack that no longer
 * waits (with the status when nothing can follow it), the final status, or
 * the next read. Under the call's lock.
 */
static void pump(gcall *c)
{
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
        gack *a = (gack *)gw_grpc_ack_fifo_pop_ready(&c->acks);
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
            else
                set_final(
                    c, GRPC_STATUS_UNAVAILABLE,
                    "%sKafka did not take every event: %s; the events may still arrive, a retry with the "
                    "same ids is safe",
                    seq, rd_kafka_err2str((rd_kafka_resp_err_t)a->err));
            gw_admit_count_refused(g->gw, GW_GRPC,
                                   a->err == ACK_TIMED_OUT ? GW_R_ack_timeout
                                   : a->err == ACK_STOPPED ? GW_R_shutting_down
                                                           : GW_R_kafka_error);
            gw_admit_count_answered(g->gw, GW_GRPC, a->started_ns, 1);
            ack_unref(a);
            drop_acks(c);
            drop_held(c);
            start_write(c, NULL, 0, 0, 1);
            return;
        }
        if (a) {
            int last = c->acks.n == 0 && c->held_ack == NULL && (c->read_closed || c->final_set);
            gw_admit_count_answered(g->gw, GW_GRPC, a->started_ns, 1);
            start_write(c, a->resp, a->resp_len, 1, last);
            ack_unref(a);
            if (last)
                return;
            /* And read on meanwhile: reads and writes overlap, one of each. */
        } else if (c->acks.n == 0 && c->held_ack == NULL && (c->final_set || c->read_closed)) {
            start_write(c, NULL, 0, 0, 1);
            return;
        }
    }
    if (c->m == M_STREAM && !c->reading && !c->read_closed && !c->final_set && c->held_ack == NULL &&
        c->acks.n < STREAM_MAX_ACKS) {
        if (queue_above_high_water(g->gw->q))
            park(c);
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

    call_ref(c);
    pthread_mutex_lock(&c->lock);
    a->wait = NULL;
    if (a->a.state == GW_GRPC_ACK_WAITING) {
        a->a.state = err ? GW_GRPC_ACK_FAILED : GW_GRPC_ACK_READY;
        a->err = err;
    }
    timer_ref = timer_remove(c->g, a);
    pump(c);
    pthread_mutex_unlock(&c->lock);
    ack_wait_free(w);
    if (timer_ref)
        ack_unref(a);
    ack_unref(a); /* the wait's */
    call_unref(c);
}

/* The request's events went into the queue: its ack goes into the FIFO, waiting for Kafka or not. */
static void queued(gcall *c, gack *a, int committed)
{
    if (committed) {
        a->a.state = GW_GRPC_ACK_WAITING;
        a->due_ms = mono_ms() + c->g->gw->cfg->ack_timeout_ms;
        timer_add(c->g, a);
    }
    gw_grpc_ack_fifo_push(&c->acks, &a->a);
}

/* Push the held request again. */
static void push_held(gcall *c)
{
    int rc = gw_admit_push(c->held, 1);

    if (rc == -EAGAIN) {
        park(c);
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
            ack_unref(p->a);
        }
        ack_unref(p->a);
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
    p->adm.done = on_delivered; /* no inbox: on librdkafka's thread, under the call's lock */
    p->adm.all_errors = 1;
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
        return;
    }
    if (gw_grpc_prot_response(pub.seq, &p->adm.batch, NULL, 0, &p->a->resp, &p->a->resp_len) != 0) {
        oom(p);
        return;
    }
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
    char msg[sizeof(c->final_msg)];

    gw_grpc_prot_status_message(r, n_errors, msg, sizeof(msg));
    set_final(c, (grpc_status_code)gw_reasons[r->reason].grpc_status, "%s", msg);
}

/* Queue what was prepared, and give its ack its place. Under the call's lock. */
static void commit(gcall *c, prepared *p)
{
    gw_grpc_front *g = c->g;
    int rc;

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
        gw_grpc_ack_fifo_push(&c->acks, &p->a->a);
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
        park(c);
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
    prepare(c, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), p);
    grpc_slice_unref(s);
}

/* Health/Check: SERVING while the gateway is ready (gateway/status.h), as /readyz says. */
static void handle_health(gcall *c, const uint8_t *data, size_t len)
{
    Grpc__Health__V1__HealthCheckRequest *req =
        grpc__health__v1__health_check_request__unpack(NULL, len, data);
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    gateway *gw = c->g->gw;
    uint8_t buf[16];

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

/*
 * Who the caller is and whether the gateway takes calls now, through the
 * admission stage, before any message is read. A unary call's request is
 * gated again with the queue when it is prepared; a stream waits for room
 * instead (it parks), so overload does not refuse it. Refused: counted as
 * one request (the call) and its final status set. Under the call's lock.
 */
static int gate(gcall *c)
{
    gw_credentials cred = {NULL, 0};
    gw_admission a;
    int rc;

    for (size_t i = 0; i < c->md.count; i++) {
        /* By address: a short slice holds its bytes inline, so a copy's would not outlive the loop. */
        const grpc_slice *k = &c->md.metadata[i].key, *v = &c->md.metadata[i].value;
        if (GRPC_SLICE_LENGTH(*k) == 13 && memcmp(GRPC_SLICE_START_PTR(*k), "authorization", 13) == 0) {
            cred.authorization = (const char *)GRPC_SLICE_START_PTR(*v);
            cred.authorization_len = GRPC_SLICE_LENGTH(*v);
            break;
        }
    }
    gw_admission_init(&a, c->g->gw, GW_GRPC, c->peer, 0);
    if ((rc = gw_admit_gate(&a, &cred, 1)) != 0) {
        gw_admit_count_answered(c->g->gw, GW_GRPC, 0, 1);
        end_refused(c, &a.refusal, 0);
    }
    gw_admission_clear(&a);
    return rc;
}

/* --- call life ------------------------------------------------------------------------------------- */

static gcall *call_new(gw_grpc_front *g, method m)
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

/* Ask the core for the next call of method m. */
static void arm(gw_grpc_front *g, method m)
{
    gcall *c = call_new(g, m);
    grpc_call_error e;

    if (c == NULL) {
        LOG_ERROR("grpc", "out of memory: cannot take more calls");
        return;
    }
    pthread_mutex_lock(&g->lock);
    g->armed++;
    pthread_mutex_unlock(&g->lock);
    if (m == M_OTHER)
        e = grpc_server_request_call(g->server, &c->call, &c->details, &c->md, g->cq, g->cq, &c->o_new);
    else
        e = grpc_server_request_registered_call(g->server, g->reg[m], &c->call, &c->deadline, &c->md,
                                                m == M_STREAM ? NULL : &c->payload, g->cq, g->cq, &c->o_new);
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("grpc", "cannot request a call: %s", grpc_call_error_to_string(e));
        pthread_mutex_lock(&g->lock);
        g->armed--;
        pthread_cond_broadcast(&g->change);
        pthread_mutex_unlock(&g->lock);
        call_unref(c);
    }
}

/* Once the core is done with the call (closed, nothing in flight): let go of it. Under its lock. */
static void maybe_finish(gcall *c)
{
    gw_grpc_front *g = c->g;
    int park_ref;

    if (c->finished || !c->close_done || c->ops > 0)
        return;
    c->finished = 1;
    drop_held(c);
    drop_acks(c);
    grpc_call_unref(c->call);
    c->call = NULL;
    pthread_mutex_lock(&g->lock);
    park_ref = unpark_locked(g, c);
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
    pthread_mutex_unlock(&g->lock);
    gw_front_changed(g->gw);
    if (park_ref)
        call_unref(c); /* the caller holds one more: not the last */
    call_unref(c);     /* the core's side */
}

static void on_new(gcall *c, int success)
{
    gw_grpc_front *g = c->g;
    char *peer;
    grpc_op op;

    /* Counted live in the same breath as no longer armed: the close never sees both at 0 while this goes on.
     */
    pthread_mutex_lock(&g->lock);
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
    pthread_mutex_unlock(&g->lock);
    if (!success) {
        /* The server is shutting down: no call came. */
        call_unref(c);
        return;
    }
    if (!atomic_load(&g->shutting))
        arm(g, c->m);

    call_ref(c);
    pthread_mutex_lock(&c->lock);

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
        c->read_closed = 1;
        grpc_slice hs;
        if (c->payload == NULL || message_bytes(c->payload, &hs) != 0) {
            set_final(c, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
        } else {
            handle_health(c, GRPC_SLICE_START_PTR(hs), GRPC_SLICE_LENGTH(hs));
            grpc_slice_unref(hs);
        }
        break;
    case M_PUBLISH:
    case M_STREAM:
        if (gate(c) != 0) {
            c->read_closed = 1;
        } else if (c->m == M_PUBLISH) {
            c->read_closed = 1;
            if (c->payload == NULL) {
                set_final(c, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
            } else {
                /* Under the lock: nothing but the stop can want this call yet, and it can wait. */
                prepared p;
                prepare_message(c, c->payload, &p);
                commit(c, &p);
            }
        }
        break;
    default: break;
    }
    if (c->payload) {
        grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
    }
    pump(c);
    pthread_mutex_unlock(&c->lock);
    call_unref(c);
}

/*
 * A stream's read completed. The request is prepared without the call's
 * lock; the read stays counted in `ops` (and `reading` set) meanwhile, so
 * the call can neither finish nor start another read before commit().
 */
static void on_read(gcall *c, int success)
{
    grpc_byte_buffer *msg;
    prepared p;

    pthread_mutex_lock(&c->lock);
    msg = success ? c->recv : NULL;
    if (c->recv && msg == NULL)
        grpc_byte_buffer_destroy(c->recv);
    c->recv = NULL;
    pthread_mutex_unlock(&c->lock);

    if (msg) {
        prepare_message(c, msg, &p);
        grpc_byte_buffer_destroy(msg);
    }

    pthread_mutex_lock(&c->lock);
    c->ops--;
    c->reading = 0;
    if (msg)
        commit(c, &p);
    else
        c->read_closed = 1; /* the client's half-close, or the call's end */
    pump(c);
    maybe_finish(c);
    pthread_mutex_unlock(&c->lock);
}

static void on_op(op *o, int success)
{
    gcall *c = o->call;

    call_ref(c);
    if (o->kind == OP_READ) {
        on_read(c, success);
        call_unref(c);
        return;
    }
    pthread_mutex_lock(&c->lock);
    c->ops--;
    if (o->kind == OP_CLOSE) {
        c->close_done = 1;
        if (c->cancelled)
            LOG_DEBUG("grpc", "%s peer=%s: cancelled (by the client, a deadline or a disconnect)",
                      method_paths[c->m] ? method_paths[c->m] : "?", c->peer);
    } else if (o->kind == OP_WRITE) {
        /* A failed write: the call is going; RECV_CLOSE tells the rest. */
        c->writing = 0;
    }
    pump(c);
    maybe_finish(c);
    pthread_mutex_unlock(&c->lock);
    call_unref(c);
}

static void *cq_main(void *arg)
{
    cq_thread *t = arg;
    gw_grpc_front *g = t->g;
    char name[16];

    snprintf(name, sizeof(name), "gw-grpc-%d", t->index);
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        op *o = ev.tag;
        if (o->kind == OP_SHUTDOWN) {
            pthread_mutex_lock(&g->lock);
            g->shutdown_done = 1;
            pthread_cond_broadcast(&g->change);
            pthread_mutex_unlock(&g->lock);
        } else if (o->kind == OP_NEW) {
            on_new(o->call, ev.success);
        } else {
            on_op(o, ev.success);
        }
    }
    return NULL;
}

/* --- the timer thread: ack timeouts, parked streams -------------------------------------------------- */

static void *timer_main(void *arg)
{
    gw_grpc_front *g = arg;

    long long resumed_at = 0;

    pthread_setname_np(pthread_self(), "gw-grpc-timer");
    pthread_mutex_lock(&g->lock);
    while (!g->timer_stop) {
        long long now = mono_ms();
        gack *expired = NULL, **tail = &expired;
        gcall *resume = NULL;

        while (g->t_head && g->t_head->due_ms <= now) {
            gack *a = g->t_head;
            timer_unlink_locked(g, a);
            *tail = a; /* the list's reference comes along */
            tail = &a->t_next;
        }
        /*
         * At most once a poll period: a held request may still not fit below the high-water mark, and
         * parks again at once.
         */
        if (g->p_head && now - resumed_at >= PARK_POLL_MS &&
            (!queue_above_high_water(g->gw->q) || atomic_load(&g->gw->stopping))) {
            resumed_at = now;
            /* Linked anew: once unparked, a call may park again (p_next) while this goes through them. */
            for (gcall *c = g->p_head, *next; c; c = next) {
                next = c->p_next;
                c->p_next = c->p_prev = NULL;
                c->parked = 0; /* its reference comes along */
                c->r_next = resume;
                resume = c;
            }
            g->p_head = NULL;
        }
        if (expired || resume) {
            pthread_mutex_unlock(&g->lock);
            while (expired) {
                gack *a = expired;
                gcall *c = a->call;
                expired = a->t_next;
                a->t_next = NULL;
                call_ref(c);
                pthread_mutex_lock(&c->lock);
                if (a->a.state == GW_GRPC_ACK_WAITING) {
                    a->a.state = GW_GRPC_ACK_FAILED;
                    a->err = ACK_TIMED_OUT;
                }
                pump(c);
                pthread_mutex_unlock(&c->lock);
                ack_unref(a);
                call_unref(c);
            }
            while (resume) {
                gcall *c = resume;
                resume = c->r_next;
                c->r_next = NULL;
                pthread_mutex_lock(&c->lock);
                if (c->held_ack && !c->close_done)
                    push_held(c);
                pump(c);
                pthread_mutex_unlock(&c->lock);
                call_unref(c);
            }
            pthread_mutex_lock(&g->lock);
            continue;
        }
        long long wait_ms = g->p_head ? PARK_POLL_MS : g->t_head ? g->t_head->due_ms - now : 1000;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += wait_ms / 1000;
        ts.tv_nsec += (wait_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&g->cond, &g->lock, &ts);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

/* --- the front ------------------------------------------------------------------------------------- */

/*
 * The core's own log lines, in the gateway's format (GRPC_VERBOSITY still
 * chooses which it writes: errors, by default). Its errors are warnings
 * here: what matters to an operator the gateway reports itself (a port in
 * use, a failed call).
 */
static void core_log(gpr_log_func_args *a)
{
    const char *file = a->file ? strrchr(a->file, '/') : NULL;

    LOG_AT(a->severity == GPR_LOG_SEVERITY_ERROR ? LOG_LEVEL_WARN : LOG_LEVEL_DEBUG, "grpc-core", "%s:%d: %s",
           file      ? file + 1
           : a->file ? a->file
                     : "?",
           a->line, a->message ? a->message : "");
}

gw_grpc_front *gw_grpc_front_start(gateway *gw, const char *addr, int threads, char *err, size_t errlen)
{
    gw_grpc_front *g = calloc(1, sizeof(*g));
    grpc_arg args[2];
    grpc_channel_args chargs = {2, args};
    pthread_condattr_t ca;

    if (g == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    gpr_set_log_function(core_log);
    grpc_init();
    g->gw = gw;
    pthread_mutex_init(&g->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cond, &ca);
    pthread_cond_init(&g->change, &ca);
    pthread_condattr_destroy(&ca);
    g->shutdown_op = (op){OP_SHUTDOWN, NULL};

    /* The request limit is the message limit; and no SO_REUSEPORT, so that a port in use is an error. */
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer =
        gw->lim.max_request_bytes > INT32_MAX ? INT32_MAX : (int)gw->lim.max_request_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[1].value.integer = 0;
    g->server = grpc_server_create(&chargs, NULL);
    g->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(g->server, g->cq, NULL);
    for (int m = 0; m < M_OTHER; m++) {
        g->reg[m] = grpc_server_register_method(
            g->server, method_paths[m], NULL,
            m == M_STREAM ? GRPC_SRM_PAYLOAD_NONE : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (g->reg[m] == NULL) {
            snprintf(err, errlen, "cannot register %s", method_paths[m]);
            goto fail;
        }
    }
    /* ":port" means every address, as for HTTP and UDP; the core's resolver wants a host: "[::]" is both
     * families. */
    char any[64];
    if (addr[0] == ':' && strlen(addr) < sizeof(any) - 4) {
        snprintf(any, sizeof(any), "[::]%s", addr);
        addr = any;
    }
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(g->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        snprintf(err, errlen, "%s: cannot listen (the address is in use or not valid)", addr);
        goto fail;
    }
    grpc_server_start(g->server);
    for (int m = 0; m < N_METHODS; m++)
        for (int i = 0; i < (m == M_PUBLISH || m == M_STREAM ? ARMED_PER_METHOD : 1); i++)
            arm(g, (method)m);

    if (pthread_create(&g->timer, NULL, timer_main, g) != 0) {
        snprintf(err, errlen, "cannot start the gRPC timer thread");
        goto fail;
    }
    g->timer_started = 1;
    if ((g->threads = calloc((size_t)threads, sizeof(*g->threads))) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (; g->n_threads < threads; g->n_threads++) {
        cq_thread *t = &g->threads[g->n_threads];
        t->g = g;
        t->index = g->n_threads;
        if (pthread_create(&t->tid, NULL, cq_main, t) != 0) {
            snprintf(err, errlen, "cannot start gRPC thread %d", t->index);
            goto fail;
        }
        t->started = 1;
    }
    return g;

fail:
    gw_grpc_front_close(g);
    gw_grpc_front_free(g);
    return NULL;
}

/* Calls open now, each with a reference; *n of them. NULL when none (or no memory). */
static gcall **open_calls(gw_grpc_front *g, size_t *n)
{
    gcall **open = NULL;

    *n = 0;
    pthread_mutex_lock(&g->lock);
    for (gcall *c = g->a_head; c; c = c->a_next)
        (*n)++;
    if (*n && (open = malloc(*n * sizeof(*open))) != NULL) {
        *n = 0;
        for (gcall *c = g->a_head; c; c = c->a_next) {
            call_ref(c);
            open[(*n)++] = c;
        }
    }
    pthread_mutex_unlock(&g->lock);
    if (open == NULL)
        *n = 0;
    return open;
}

/*
 * The stop's time is up: calls still waiting for Kafka are answered
 * UNAVAILABLE (their events may yet arrive; a retry with the same ids is
 * safe) rather than cut off.
 */
static void grpc_abort_waiting(void *self)
{
    gw_grpc_front *g = self;
    size_t n;
    gcall **open = open_calls(g, &n);

    for (size_t i = 0; i < n; i++) {
        gcall *c = open[i];
        pthread_mutex_lock(&c->lock);
        for (gw_grpc_ack *a = c->acks.head; a; a = a->next)
            if (a->state == GW_GRPC_ACK_WAITING) {
                a->state = GW_GRPC_ACK_FAILED;
                ((gack *)a)->err = ACK_STOPPED;
            }
        pump(c);
        pthread_mutex_unlock(&c->lock);
        call_unref(c);
    }
    free(open);
}

/* ... and get a moment to send it: until no call is live, or grace_ms. */
static void answer_waiting(gw_grpc_front *g, int grace_ms)
{
    struct timespec ts;

    grpc_abort_waiting(g);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += grace_ms / 1000;
    ts.tv_nsec += (long)(grace_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&g->lock);
    while (g->live > 0)
        if (pthread_cond_timedwait(&g->change, &g->lock, &ts) != 0)
            break;
    pthread_mutex_unlock(&g->lock);
}

void gw_grpc_front_stop_accepting(gw_grpc_front *g)
{
    gcall **open;
    size_t n;

    if (g == NULL || g->server == NULL || atomic_exchange(&g->shutting, 1))
        return;
    grpc_server_shutdown_and_notify(g->server, g->cq, &g->shutdown_op);
    /* Streams blocked in a read hear of the stop only if told: each sends what it owes, then its status. */
    open = open_calls(g, &n);
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&open[i]->lock);
        pump(open[i]);
        pthread_mutex_unlock(&open[i]->lock);
        call_unref(open[i]);
    }
    free(open);
}

size_t gw_grpc_front_pending(gw_grpc_front *g)
{
    size_t n;

    if (g == NULL)
        return 0;
    pthread_mutex_lock(&g->lock);
    n = g->live;
    pthread_mutex_unlock(&g->lock);
    return n;
}

void gw_grpc_front_close(gw_grpc_front *g)
{
    if (g == NULL || g->closed)
        return;
    g->closed = 1;
    if (g->server) {
        int threads_run = g->n_threads > 0;
        if (!atomic_load(&g->shutting)) {
            atomic_store(&g->shutting, 1);
            grpc_server_shutdown_and_notify(g->server, g->cq, &g->shutdown_op);
        }
        if (threads_run)
            answer_waiting(g, 500);
        grpc_server_cancel_all_calls(g->server);
        if (threads_run) {
            pthread_mutex_lock(&g->lock);
            while (!g->shutdown_done || g->live > 0 || g->armed > 0)
                pthread_cond_wait(&g->change, &g->lock);
            pthread_mutex_unlock(&g->lock);
        } else {
            /* Failed before any thread ran: drain the queue here. */
            for (;;) {
                grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
                if (ev.type != GRPC_OP_COMPLETE)
                    break;
                op *o = ev.tag;
                if (o->kind == OP_SHUTDOWN)
                    break;
                if (o->kind == OP_NEW)
                    on_new(o->call, 0);
            }
        }
        grpc_completion_queue_shutdown(g->cq);
    }
    for (int i = 0; i < g->n_threads; i++)
        if (g->threads[i].started)
            pthread_join(g->threads[i].tid, NULL);
    if (g->server) {
        if (g->n_threads == 0)
            while (grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
                   GRPC_QUEUE_SHUTDOWN)
                ;
        grpc_server_destroy(g->server);
        grpc_completion_queue_destroy(g->cq);
        g->server = NULL;
        g->cq = NULL;
    }
    if (g->timer_started) {
        pthread_mutex_lock(&g->lock);
        g->timer_stop = 1;
        pthread_cond_signal(&g->cond);
        pthread_mutex_unlock(&g->lock);
        pthread_join(g->timer, NULL);
        g->timer_started = 0;
    }
}

void gw_grpc_front_free(gw_grpc_front *g)
{
    if (g == NULL)
        return;
    /* Acks still on the timer list: their waits have all come back, the list holds the last reference. */
    while (g->t_head) {
        gack *a = g->t_head;
        timer_unlink_locked(g, a);
        ack_unref(a);
    }
    free(g->threads);
    pthread_cond_destroy(&g->cond);
    pthread_cond_destroy(&g->change);
    pthread_mutex_destroy(&g->lock);
    free(g);
    grpc_shutdown();
}

static void grpc_stop_accepting(void *self)
{
    gw_grpc_front_stop_accepting(self);
}

static size_t grpc_pending(void *self)
{
    return gw_grpc_front_pending(self);
}

static void grpc_close(void *self)
{
    gw_grpc_front_close(self);
}

static void grpc_free(void *self)
{
    gw_grpc_front_free(self);
}

const gw_front_ops gw_grpc_front_ops = {
    .name = "grpc",
    .stop_accepting = grpc_stop_accepting,
    .pending = grpc_pending,
    .abort_waiting = grpc_abort_waiting,
    .close = grpc_close,
    .free = grpc_free,
};
