/* The gRPC front end's timer thread: acks whose Kafka answer is overdue, streams parked for room. */
#include "grpc_int.h"

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

/* --- the timer thread: ack timeouts, parked streams -------------------------------------------------- */

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
        if (expired || resume) {
            gw_grpc_front_unlock(g);
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
