/*
 * The gRPC front end's timer thread: acks whose Kafka answer is overdue,
 * streams parked for room, unary calls whose message does not come.
 */
#include "grpc_int.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "front.h"
#include "mono.h"

/* --- the front's lists ----------------------------------------------------------------------------- */

void gw_grpc_timer_add(gw_grpc_front *g, gack *a)
{
    atomic_fetch_add(&a->refs, 1);
    gw_grpc_front_lock(g);
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
    gw_grpc_front_unlock(g);
}

void gw_grpc_timer_unlink_locked(gw_grpc_front *g, gack *a)
{
    GW_GRPC_ASSERT_HELD(g);
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
int gw_grpc_timer_remove(gw_grpc_front *g, gack *a)
{
    int was;

    gw_grpc_front_lock(g);
    if ((was = a->in_timer))
        gw_grpc_timer_unlink_locked(g, a);
    gw_grpc_front_unlock(g);
    return was;
}

void gw_grpc_park(gcall *c)
{
    GW_GRPC_ASSERT_HELD(c);
    gw_grpc_front *g = c->g;

    gw_grpc_front_lock(g);
    if (!c->parked) {
        gw_grpc_call_ref(c);
        c->parked = 1;
        c->p_prev = NULL;
        c->p_next = g->p_head;
        if (g->p_head)
            g->p_head->p_prev = c;
        g->p_head = c;
        pthread_cond_signal(&g->cond);
    }
    gw_grpc_front_unlock(g);
}

/* Off the parked list; 1 when it was on it (the caller then owns that reference). */
int gw_grpc_unpark_locked(gw_grpc_front *g, gcall *c)
{
    GW_GRPC_ASSERT_HELD(g);
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

/* --- unary calls' reads (UNARY_READ_GRACE_MS) --------------------------------------------------------- */

static void ulist_push(gw_grpc_ulist *l, gcall *c)
{
    c->u_next = NULL;
    c->u_prev = l->tail;
    if (l->tail)
        l->tail->u_next = c;
    else
        l->head = c;
    l->tail = c;
    l->n++;
}

static void ulist_unlink(gw_grpc_ulist *l, gcall *c)
{
    if (c->u_prev)
        c->u_prev->u_next = c->u_next;
    else
        l->head = c->u_next;
    if (c->u_next)
        c->u_next->u_prev = c->u_prev;
    else
        l->tail = c->u_prev;
    c->u_prev = c->u_next = NULL;
    l->n--;
}

/* @locks g->lock */
static void start_reading_locked(gw_grpc_front *g, gcall *c, long long now)
{
    c->u_where = U_READING;
    c->read_since_ms = now;
    ulist_push(&g->reading, c);
}

int gw_grpc_unary_admit(gw_grpc_front *g, gcall *c)
{
    GW_GRPC_ASSERT_HELD(c);
    int now_ok;

    gw_grpc_front_lock(g);
    c->arrived_ms = mono_ms();
    now_ok = g->reading.n < g->unary_read_cap;
    if (now_ok) {
        start_reading_locked(g, c, c->arrived_ms);
    } else {
        gw_grpc_call_ref(c);
        c->u_where = U_WAITING;
        ulist_push(&g->waiting, c);
    }
    /* The timer sleeps up to a second when it has nothing else to do: it learns of the first one now. */
    if (!now_ok || g->reading.n == 1)
        pthread_cond_signal(&g->cond);
    gw_grpc_front_unlock(g);
    return now_ok;
}

void gw_grpc_unary_done(gw_grpc_front *g, gcall *c)
{
    GW_GRPC_ASSERT_HELD(c);
    gw_grpc_front_lock(g);
    if (c->u_where == U_READING) {
        ulist_unlink(&g->reading, c);
        c->u_where = U_NONE;
        if (c->u_cut)
            g->n_unary_cut--;
        if (g->waiting.n)
            pthread_cond_signal(&g->cond); /* the next one's turn */
    }
    gw_grpc_front_unlock(g);
}

int gw_grpc_unary_forget_locked(gw_grpc_front *g, gcall *c)
{
    GW_GRPC_ASSERT_HELD(g);
    int where = c->u_where;

    if (where == U_NONE)
        return 0;
    ulist_unlink(where == U_WAITING ? &g->waiting : &g->reading, c);
    c->u_where = U_NONE;
    if (where == U_READING && c->u_cut)
        g->n_unary_cut--;
    return where == U_WAITING;
}

/*
 * The unary calls to cut off now and those whose read starts now, each with
 * a reference, on lists through t_link; *next_ms: when to look again (left
 * alone if never). Reads in flight past --grpc-message-timeout, or past
 * UNARY_READ_GRACE_MS while calls wait for more than the reads being cut off
 * would free; calls that waited past the timeout; then calls whose turn came.
 * @locks g->lock
 */
static void unary_turns(gw_grpc_front *g, long long now, gcall **cut, gcall **start, long long *next_ms)
{
    GW_GRPC_ASSERT_HELD(g);
    long long timeout = g->gw->cfg->grpc_message_timeout_ms, due;
    gcall *c, *next;

    for (c = g->reading.head; c; c = c->u_next) {
        if (c->u_cut)
            continue;
        int short_of_room = g->waiting.n > g->n_unary_cut;
        long long age = now - c->read_since_ms;
        if (age >= timeout) {
            c->u_cut = 1 + GW_R_request_timeout;
        } else if (short_of_room && age >= UNARY_READ_GRACE_MS) {
            c->u_cut = 1 + GW_R_overloaded;
        } else {
            /* The rest are younger. */
            due = c->read_since_ms + (short_of_room ? UNARY_READ_GRACE_MS : timeout);
            if (due < *next_ms)
                *next_ms = due;
            break;
        }
        g->n_unary_cut++;
        gw_grpc_call_ref(c);
        c->t_link = *cut;
        *cut = c;
    }
    for (c = g->waiting.head; c; c = next) {
        next = c->u_next;
        if (now - c->arrived_ms < timeout) {
            if (c->arrived_ms + timeout < *next_ms)
                *next_ms = c->arrived_ms + timeout;
            break;
        }
        ulist_unlink(&g->waiting, c); /* its reference comes along */
        c->u_where = U_NONE;
        c->u_cut = 1 + GW_R_request_timeout;
        c->t_link = *cut;
        *cut = c;
    }
    /*
     * Newest first: while calls wait, reads are scarce, and the calls that
     * waited longest are those most likely stalled (or given up on by their
     * clients); a client that just called gets its turn at the next free read.
     */
    while (g->waiting.tail && g->reading.n < g->unary_read_cap) {
        c = g->waiting.tail;
        ulist_unlink(&g->waiting, c); /* its reference comes along */
        start_reading_locked(g, c, now);
        c->t_link = *start;
        *start = c;
    }
}

/* --- the timer thread: ack timeouts, parked streams, unary reads -------------------------------------- */

void *gw_grpc_timer_main(void *arg)
{
    gw_grpc_front *g = arg;

    long long resumed_at = 0;

    pthread_setname_np(pthread_self(), "gw-grpc-timer");
    gw_grpc_front_lock(g);
    while (!g->timer_stop) {
        long long now = mono_ms();
        gack *expired = NULL, **tail = &expired;
        gcall *resume = NULL;

        while (g->t_head && g->t_head->due_ms <= now) {
            gack *a = g->t_head;
            gw_grpc_timer_unlink_locked(g, a);
            *tail = a; /* the list's reference comes along */
            tail = &a->t_next;
        }
        /*
         * At most once a poll period: a held request may still not fit below the high-water mark, and
         * parks again at once.
         */
        if (g->p_head && now - resumed_at >= PARK_POLL_MS &&
            (!gw_grpc_read_blocked(g->gw) || atomic_load(&g->gw->stopping))) {
            resumed_at = now;
            /* Linked anew: once unparked, a call may gw_grpc_park again (p_next) while this goes through
             * them. */
            for (gcall *c = g->p_head, *next; c; c = next) {
                next = c->p_next;
                c->p_next = c->p_prev = NULL;
                c->parked = 0; /* its reference comes along */
                c->r_next = resume;
                resume = c;
            }
            g->p_head = NULL;
        }
        long long next_ms = LLONG_MAX;
        gcall *cut = NULL, *start = NULL;
        unary_turns(g, now, &cut, &start, &next_ms);
        if (expired || resume || cut || start) {
            gw_grpc_front_unlock(g);
            while (cut) {
                gcall *c = cut;
                cut = c->t_link;
                c->t_link = NULL;
                gw_grpc_call_lock(c);
                gw_grpc_unary_cut(c, c->u_cut - 1);
                gw_grpc_call_unlock(c);
                gw_grpc_call_unref(c);
            }
            while (start) {
                gcall *c = start;
                start = c->t_link;
                c->t_link = NULL;
                gw_grpc_call_lock(c);
                gw_grpc_unary_read(c);
                gw_grpc_call_unlock(c);
                gw_grpc_call_unref(c);
            }
            while (expired) {
                gack *a = expired;
                gcall *c = a->call;
                expired = a->t_next;
                a->t_next = NULL;
                gw_grpc_call_ref(c);
                gw_grpc_call_lock(c);
                if (a->a.state == GW_GRPC_ACK_WAITING) {
                    a->a.state = GW_GRPC_ACK_FAILED;
                    a->err = ACK_TIMED_OUT;
                }
                gw_grpc_pump(c);
                gw_grpc_call_unlock(c);
                gw_grpc_ack_unref(a);
                gw_grpc_call_unref(c);
            }
            while (resume) {
                gcall *c = resume;
                resume = c->r_next;
                c->r_next = NULL;
                gw_grpc_call_lock(c);
                if (c->held_ack && !c->close_done)
                    gw_grpc_push_held(c);
                gw_grpc_pump(c);
                gw_grpc_call_unlock(c);
                gw_grpc_call_unref(c);
            }
            gw_grpc_front_lock(g);
            continue;
        }
        long long wait_ms = g->p_head ? PARK_POLL_MS : g->t_head ? g->t_head->due_ms - now : 1000;
        if (next_ms - now < wait_ms)
            wait_ms = next_ms - now;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += wait_ms / 1000;
        ts.tv_nsec += (wait_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        gw_grpc_front_timedwait(g, &g->cond, &ts);
    }
    gw_grpc_front_unlock(g);
    return NULL;
}
