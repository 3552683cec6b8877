/*
 * The gRPC front end's insides, shared by its parts:
 *   grpc_call.c   a call's state machine: requests through the admission
 *                 stage, acks in seq order, the final status (pump)
 *   grpc_timer.c  the timer thread: ack timeouts, streams parked for room
 *   grpc.c        the server: completion-queue threads, calls requested
 *                 from the core, the stop
 *
 * Every call is a `gcall` with a lock of its own. Four things move it on:
 * its completion-queue events (the call's context is the tag, through one
 * `op` per kind, and at most one read and one write are in flight), the last
 * Kafka delivery report of one of its requests (on librdkafka's thread), the
 * timer thread (ack timeouts; streams parked until the queue has room), and
 * the stop. Each takes a reference on the call, locks it, changes its state,
 * and calls gw_grpc_pump(), which starts whatever the new state allows: the
 * next ack in seq order, the final status, the next read.
 *
 * Lock order: a call's lock, then the front's. The timer thread and the stop
 * take calls off the front's lists under the front's lock, with a reference,
 * and lock each call only after letting go of the front's lock. Functions
 * that need a lock say so (@locks) and assert it in debug builds.
 */
#ifndef INGEST_GRPC_INT_H
#define INGEST_GRPC_INT_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "admit.h"
#include "grpc.h"
#include "grpc_prot.h"
#include "watch.h"
#include "producer.h"

/*
 * Acks a stream may owe before it stops reading, in count and in bytes: a
 * client that never reads them costs at most these plus the request being
 * handled (one ack of a 10,000-event request refused event by event is
 * ~380 kB; 32 of them on 100 streams were 1.3 GB before the byte bound).
 */
#define STREAM_MAX_ACKS       32
#define STREAM_MAX_OWED_BYTES (256 * 1024)
/* Requested calls kept waiting in the core per method, so that a burst of new calls does not wait for us. */
#define ARMED_PER_METHOD 4
/* How often parked streams look at the queue again. */
#define PARK_POLL_MS 5
/*
 * A unary call's request message is read by the gateway, not handed over by
 * the core with the call: once asked to read a message, the core opens the
 * stream's window to all of it (up to --max-request-bytes), so a call whose
 * message stalls holds that much of the core's memory. So at most
 * `unary_read_cap` reads are in flight (a quarter of the inbound share at
 * --max-request-bytes each); more calls wait their turn, their windows shut
 * at 64 KiB. While calls wait, reads in flight for UNARY_READ_GRACE_MS are
 * cut off, oldest first (RESOURCE_EXHAUSTED); and every call gets its message
 * within --grpc-message-timeout or DEADLINE_EXCEEDED. A well-behaved
 * client's message is in the core's buffer when the read starts, or a round
 * trip later.
 */
#define UNARY_READ_GRACE_MS 1000

/*
 * Streams read no further while this holds: overload (the queue), or the
 * budget's inbound share used up (acks owed, messages being handled, HTTP
 * bodies). They park, and the timer thread resumes them once it clears.
 */
static inline int gw_grpc_read_blocked(gateway *gw)
{
    return gw_overloaded(gw) || gw_budget_inbound_full(&gw->budget);
}

typedef enum method { M_PUBLISH, M_STREAM, M_HEALTH, M_OTHER, N_METHODS } method;

/* The path of each method (NULL for M_OTHER). */
extern const char *const gw_grpc_method_paths[N_METHODS];

typedef enum op_kind { OP_NEW, OP_CLOSE, OP_READ, OP_WRITE, OP_SHUTDOWN } op_kind;

typedef struct gcall gcall;

/*
 * What a call's state machine asks of the C core: one write batch (initial
 * metadata the first time, then the message if has_msg, then the status if
 * `status`), one read. 0, or -1 when the core refused (the call is then
 * cancelled). Tests drive the state machine with their own.
 */
typedef struct gw_grpc_call_io {
    int (*write)(gcall *c, const uint8_t *msg, size_t len, int has_msg, int status);
    int (*read)(gcall *c);
} gw_grpc_call_io;

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

    /* With MSG_SIZE_TOO_LARGE: the ack_wait's figures, the record's bytes and the limit. */
    size_t too_large, too_large_limit;

    struct gack *t_prev, *t_next;
    int in_timer; /* front lock */
    uint8_t *resp;
    size_t resp_len;     /* counted in the budget's inbound share while the ack lives */
    uint64_t started_ns; /* the request's arrival, for the latency histogram */
} gack;

#define ACK_TIMED_OUT (-1)
#define ACK_STOPPED   (-2)

struct gcall {
    gw_grpc_front *g;
    method m;
    pthread_mutex_t lock;
    atomic_uintptr_t lock_owner; /* the thread holding `lock`, for the debug builds' assertions */
    atomic_int refs;

    grpc_call *call;
    gpr_timespec deadline; /* the core enforces it: past it, the call is cancelled and RECV_CLOSE says so */
    grpc_metadata_array md;
    grpc_call_details details; /* M_OTHER only */
    grpc_byte_buffer *recv;    /* the read in flight */
    int cancelled;             /* RECV_CLOSE_ON_SERVER's answer */
    op o_new, o_close, o_read, o_write;
    unsigned ops; /* batches in flight */
    unsigned close_done : 1, reading : 1, writing : 1, read_closed : 1, md_sent : 1, status_sent : 1,
        finished : 1;
    char peer[128];
    const gw_principal *who; /* the gate's: a reference each message's admission holds again */

    gw_grpc_ack_fifo acks;
    size_t owed;        /* bytes of the acks in `acks` */
    size_t write_bytes; /* of the message being written, counted in the inbound share until it completes */
    /* A request read whose events did not fit in the queue yet (streams): pushed again when there is room. */
    gw_admission *held;
    gack *held_ack;

    /* The status the call ends with, once decided; acks before it go out first. */
    int final_set;
    grpc_status_code final_code;
    char final_msg[300];
    long long final_retry_ms; /* > 0: sent as grpc-retry-pushback-ms (a quota's wait) */
    /* A stream charged past its quota reads nothing more before this (mono_ms()); 0: no wait. */
    long long quota_until_ms;

    /* Front lock: */
    int parked, active;
    gcall *p_prev, *p_next; /* parked until the queue has room */
    gcall *a_prev, *a_next; /* open calls, for the stop */
    gcall *r_next;          /* the timer thread's own list of parked calls it resumes */
    /* Front lock: a unary call waiting for a read, or reading (UNARY_READ_GRACE_MS); oldest first. */
    gcall *u_prev, *u_next;
    int u_where; /* U_NONE, U_WAITING (the list holds a reference), U_READING */
    int u_cut;   /* 1 + the gw_reason the timer cuts it off for; 0 */
    long long arrived_ms, read_since_ms;
    gcall *t_link; /* the timer thread's own lists: calls it cuts off, calls whose read it starts */

    int read_done; /* call lock: a unary call's read came back (the timer then leaves it alone) */
};

enum { U_NONE, U_WAITING, U_READING };

typedef struct gw_grpc_ulist {
    gcall *head, *tail;
    size_t n;
} gw_grpc_ulist;

typedef struct cq_thread {
    gw_grpc_front *g;
    pthread_t tid;
    int index;
    int started;
} cq_thread;

/* The server's limits (gw_grpc_server_args, grpc.c). */
#define GW_GRPC_MAX_METADATA_SOFT 8192   /* the core's default */
#define GW_GRPC_MAX_METADATA_HARD 16384  /* a header block larger than this closes its stream */
#define GW_GRPC_MAX_STREAMS       100    /* per connection, as HTTP/2 servers commonly advertise */
#define GW_GRPC_STREAM_WINDOW     65536  /* HTTP/2's default initial window */
#define GW_GRPC_READ_BUFFER       262144 /* a connection's read buffer at most */
#define GW_GRPC_AGE_GRACE_MS      30000  /* after --grpc-max-connection-age's GOAWAY */
#define GW_GRPC_SERVER_ARGS       24     /* room for them all (18 now), checked by test_grpc under ASan */

/*
 * The server's channel arguments for gw's settings into args (room for
 * GW_GRPC_SERVER_ARGS); their count. args point at quota, not owning it.
 */
size_t gw_grpc_server_args(const gateway *gw, grpc_resource_quota *quota, grpc_arg *args);

struct gw_grpc_front {
    gateway *gw;
    grpc_server *server;
    grpc_completion_queue *cq;
    void *reg[N_METHODS];
    cq_thread *threads;
    int n_threads;
    op shutdown_op;
    atomic_int shutting;

    const gw_grpc_call_io *io; /* the C core's, but in tests */
    pthread_mutex_t lock;
    atomic_uintptr_t lock_owner;
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
    gw_grpc_ulist reading; /* unary calls whose read is in flight */
    gw_grpc_ulist waiting; /* unary calls waiting for a read */
    size_t n_unary_cut;    /* reads in flight being cut off */
    size_t unary_read_cap; /* reads in flight at most */
    int closed;

    /* The listener's self-check (grpc_probe.c): the watch and what it dials, on its thread alone. */
    watch *probe;
    struct sockaddr_storage probe_addr;
    socklen_t probe_len;
    int probe_misses;
    struct ssl_ctx_st *probe_tls; /* a TLS port's client context; NULL: plaintext */
    int probe_no_cert;            /* --tls-client-auth=require: the probe has no certificate to show */
};

/*
 * Check once a second, from a thread of its own, that the listener on `addr`
 * (port `port`, the one the core bound) answers a new client; gw->grpc_stalled
 * follows. 0, or -1 with the reason in err.
 */
int gw_grpc_probe_start(gw_grpc_front *g, const char *addr, int port, char *err, size_t errlen);
/* Stop the check. No-op when it never started. */
void gw_grpc_probe_stop(gw_grpc_front *g);

/* --- locks: taken and let go through these, so that debug builds can assert who holds them ----------- */

static inline void gw_grpc_lock_(pthread_mutex_t *m, atomic_uintptr_t *owner)
{
    pthread_mutex_lock(m);
    atomic_store_explicit(owner, (uintptr_t)pthread_self(), memory_order_relaxed);
}

static inline void gw_grpc_unlock_(pthread_mutex_t *m, atomic_uintptr_t *owner)
{
    atomic_store_explicit(owner, 0, memory_order_relaxed);
    pthread_mutex_unlock(m);
}

#define gw_grpc_call_lock(c)    gw_grpc_lock_(&(c)->lock, &(c)->lock_owner)
#define gw_grpc_call_unlock(c)  gw_grpc_unlock_(&(c)->lock, &(c)->lock_owner)
#define gw_grpc_front_lock(g)   gw_grpc_lock_(&(g)->lock, &(g)->lock_owner)
#define gw_grpc_front_unlock(g) gw_grpc_unlock_(&(g)->lock, &(g)->lock_owner)
#define GW_GRPC_ASSERT_HELD(x)                                                                               \
    assert(atomic_load_explicit(&(x)->lock_owner, memory_order_relaxed) == (uintptr_t)pthread_self())

/* Wait on `cond` under the front's lock (held), until `ts` (CLOCK_MONOTONIC) or for ever (NULL). */
static inline int gw_grpc_front_timedwait(gw_grpc_front *g, pthread_cond_t *cond, const struct timespec *ts)
{
    int rc;

    GW_GRPC_ASSERT_HELD(g);
    atomic_store_explicit(&g->lock_owner, 0, memory_order_relaxed);
    rc = ts ? pthread_cond_timedwait(cond, &g->lock, ts) : pthread_cond_wait(cond, &g->lock);
    atomic_store_explicit(&g->lock_owner, (uintptr_t)pthread_self(), memory_order_relaxed);
    return rc;
}

/* --- grpc_call.c ---------------------------------------------------------------------------------- */

/* A call for method m, to be requested from the core (one reference: the core's side). NULL on no memory. */
gcall *gw_grpc_call_new(gw_grpc_front *g, method m);
void gw_grpc_call_ref(gcall *c);
void gw_grpc_call_unref(gcall *c);
void gw_grpc_ack_unref(gack *a);
/* Start whatever the call's state allows. @locks c->lock */
void gw_grpc_pump(gcall *c);
/* A unary call's read, its turn come (gw_grpc_unary_admit). @locks c->lock */
void gw_grpc_unary_read(gcall *c);
/* Cut off a unary call whose message has not come, for reason (a gw_reason). @locks c->lock */
void gw_grpc_unary_cut(gcall *c, int reason);
/* A parked stream's held request, again. @locks c->lock */
void gw_grpc_push_held(gcall *c);
/* The completion-queue events of a call (a cq thread; they lock the call themselves). */
void gw_grpc_on_new(gcall *c, int success);
void gw_grpc_on_op(op *o, int success);
/* The C core's io, the front's default. */
extern const gw_grpc_call_io gw_grpc_core_io;

/* --- grpc_timer.c --------------------------------------------------------------------------------- */

/* Put a committed request's ack on the timer list (takes a reference). @locks g->lock not held */
void gw_grpc_timer_add(gw_grpc_front *g, gack *a);
/* Off the timer list; 1 when it was on it (the caller then owns the list's reference). */
int gw_grpc_timer_remove(gw_grpc_front *g, gack *a);
/* @locks g->lock */
void gw_grpc_timer_unlink_locked(gw_grpc_front *g, gack *a);
/* Park a stream until the queue has room (takes a reference). @locks c->lock (then g->lock inside) */
void gw_grpc_park(gcall *c);
/* Off the parked list; 1 when it was on it (the caller then owns that reference). @locks g->lock */
int gw_grpc_unpark_locked(gw_grpc_front *g, gcall *c);
/*
 * A unary call asks for a read: 1 when it may start now (it is then counted
 * as reading), 0 when it waits its turn (the timer starts it: gw_grpc_unary_read).
 * @locks c->lock (then g->lock inside)
 */
int gw_grpc_unary_admit(gw_grpc_front *g, gcall *c);
/* Its read came back, or will not start: its turn is over. @locks c->lock (then g->lock inside) */
void gw_grpc_unary_done(gw_grpc_front *g, gcall *c);
/* The call is finishing: off either list; 1 when it was waiting (the caller then owns that reference). @locks
 * g->lock */
int gw_grpc_unary_forget_locked(gw_grpc_front *g, gcall *c);
void *gw_grpc_timer_main(void *arg);

/* --- grpc.c --------------------------------------------------------------------------------------- */

/* Ask the core for the next call of method m. */
void gw_grpc_arm(gw_grpc_front *g, method m);

#endif
