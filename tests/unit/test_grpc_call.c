/*
 * gateway/grpc_call: a call's state machine (gw_grpc_pump) driven without a
 * network: its writes and reads go to a recorder instead of the C core. Acks
 * leave in seq order whatever order Kafka answers in, one write at a time; a
 * failed ack ends the stream UNAVAILABLE naming its seq and drops what
 * follows; a stream reads on only while the queue has room (else it parks);
 * the stop ends a stream once it owes nothing.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grpc_int.h"

static gateway_config cfg = {
    .default_ack = "committed", .gateway_id = "gw-test", .auth_token = "", .ack_timeout_ms = 1000};
static gateway gw;

/* What the state machine asked of the "core". */
static struct {
    int writes, reads, with_msg, with_status;
    char last_msg[32];
} io;

static int fake_write(gcall *c, const uint8_t *msg, size_t len, int has_msg, int status)
{
    (void)c;
    io.writes++;
    io.with_msg += has_msg != 0;
    io.with_status += status != 0;
    snprintf(io.last_msg, sizeof(io.last_msg), "%.*s", has_msg ? (int)len : 0,
             has_msg ? (const char *)msg : "");
    return 0;
}

static int fake_read(gcall *c)
{
    (void)c;
    io.reads++;
    return 0;
}

static const gw_grpc_call_io fake_io = {fake_write, fake_read};

static gw_grpc_front front;

static int setup(void **state)
{
    (void)state;
    memset(&gw, 0, sizeof(gw));
    memset(&io, 0, sizeof(io));
    memset(&front, 0, sizeof(front));
    gw.cfg = &cfg;
    ing_event_limits_default(&gw.lim);
    {
        char err[200];
        if (gw_budget_init(&gw.budget, (size_t)256 << 20, gw.lim.max_request_bytes, err, sizeof(err)) != 0)
            return -1;
    }
    if ((gw.q = queue_new(8, 4)) == NULL)
        return -1;
    front.gw = &gw;
    front.io = &fake_io;
    pthread_mutex_init(&front.lock, NULL);
    pthread_cond_init(&front.cond, NULL);
    pthread_cond_init(&front.change, NULL);
    return 0;
}

static int teardown(void **state)
{
    void *items[8];
    size_t n;
    (void)state;

    queue_close(gw.q);
    while ((n = queue_pop_n(gw.q, items, 8, 0)) > 0)
        for (size_t i = 0; i < n; i++)
            produce_msg_free(items[i]);
    queue_free(gw.q);
    pthread_cond_destroy(&front.cond);
    pthread_cond_destroy(&front.change);
    pthread_mutex_destroy(&front.lock);
    return 0;
}

/* An ack of the stream's, in its FIFO: its answer is `resp`. */
static gack *ack(gcall *c, uint64_t seq, gw_grpc_ack_state st, const char *resp)
{
    gack *a = calloc(1, sizeof(*a));

    assert_non_null(a);
    a->a.seq = seq;
    a->a.state = st;
    a->call = c;
    gw_grpc_call_ref(c);
    atomic_init(&a->refs, 1);
    a->resp = (uint8_t *)strdup(resp);
    a->resp_len = strlen(resp);
    /* As prepare() and owe() count it. */
    gw_budget_hold_inbound(&gw.budget, a->resp_len);
    c->owed += a->resp_len;
    gw_grpc_ack_fifo_push(&c->acks, &a->a);
    return a;
}

/* An ack of `len` bytes ('a's). */
static gack *big_ack(gcall *c, uint64_t seq, size_t len)
{
    char *resp = malloc(len + 1);

    assert_non_null(resp);
    memset(resp, 'a', len);
    resp[len] = '\0';
    gack *a = ack(c, seq, GW_GRPC_ACK_READY, resp);
    free(resp);
    return a;
}

static void pump(gcall *c)
{
    gw_grpc_call_lock(c);
    gw_grpc_pump(c);
    gw_grpc_call_unlock(c);
}

/* The core finished the write in flight (on_op's part of it). */
static void write_done(gcall *c)
{
    c->writing = 0;
    c->ops--;
    gw_budget_give_inbound(&gw.budget, c->write_bytes);
    c->write_bytes = 0;
}

static void test_acks_leave_in_seq_order_one_write_at_a_time(void **state)
{
    gcall *c = gw_grpc_call_new(&front, M_STREAM);
    (void)state;

    gack *one = ack(c, 1, GW_GRPC_ACK_WAITING, "one");
    ack(c, 2, GW_GRPC_ACK_READY, "two");
    pump(c);
    /* The first still waits for Kafka: nothing written, though the second is ready; the stream reads on. */
    assert_int_equal(io.writes, 0);
    assert_int_equal(io.reads, 1);
    assert_true(c->reading);
    one->a.state = GW_GRPC_ACK_READY;
    pump(c);
    assert_int_equal(io.writes, 1);
    assert_string_equal(io.last_msg, "one");
    assert_int_equal(io.with_status, 0);
    pump(c); /* a write is in flight: no second one */
    assert_int_equal(io.writes, 1);
    write_done(c);
    pump(c);
    assert_int_equal(io.writes, 2);
    assert_string_equal(io.last_msg, "two");
    write_done(c);
    /* The client half-closed, nothing is owed: the status, OK. */
    c->reading = 0;
    c->ops--;
    c->read_closed = 1;
    pump(c);
    assert_int_equal(io.writes, 3);
    assert_int_equal(io.with_status, 1);
    assert_true(c->status_sent);
    assert_false(c->final_set);
    assert_int_equal(atomic_load(&gw.metrics.requests[GW_GRPC]), 2);
    gw_grpc_call_unref(c);
}

static void test_a_failed_ack_ends_the_stream_naming_its_seq(void **state)
{
    gcall *c = gw_grpc_call_new(&front, M_STREAM);
    (void)state;

    gack *five = ack(c, 5, GW_GRPC_ACK_FAILED, "five");
    five->err = RD_KAFKA_RESP_ERR__MSG_TIMED_OUT;
    ack(c, 6, GW_GRPC_ACK_READY, "six");
    c->read_closed = 1;
    pump(c);
    /* No answer for 5 or 6: the status alone, and what follows 5 is the client's to send again. */
    assert_int_equal(io.writes, 1);
    assert_int_equal(io.with_msg, 0);
    assert_int_equal(io.with_status, 1);
    assert_int_equal(c->final_code, GRPC_STATUS_UNAVAILABLE);
    assert_non_null(strstr(c->final_msg, "seq 5: "));
    assert_int_equal(c->acks.n, 0);
    assert_int_equal(gateway_metrics_refused_count(&gw.metrics, GW_GRPC, GW_R_kafka_error), 1);
    gw_grpc_call_unref(c);
}

static void test_a_stream_parks_while_the_queue_is_full(void **state)
{
    gcall *c = gw_grpc_call_new(&front, M_STREAM);
    produce_msg *filler[4];
    ing_event ev;
    ing_event_error err;
    (void)state;

    /* Four records: the high-water mark of 4. */
    ing_event_init(&ev);
    assert_int_equal(ing_event_set_attr(&ev, "source", 6, "/s", 2, &gw.lim, &err), 0);
    assert_int_equal(ing_event_set_attr(&ev, "type", 4, "t", 1, &gw.lim, &err), 0);
    assert_int_equal(ing_event_validate(&ev, &gw.lim, -1, &err), 0);
    assert_int_equal(ing_event_assign_id(&ev), 0);
    for (int i = 0; i < 4; i++)
        assert_non_null(filler[i] = produce_msg_new(&ev, 0, 1, "p", "gw", NULL, NULL));
    ing_event_clear(&ev);
    assert_int_equal(queue_push_n(gw.q, (void *const *)filler, 4), 0);
    pump(c);
    assert_int_equal(io.reads, 0);
    assert_true(c->parked);
    /* Unparked (as the timer thread would, given room), it reads. */
    gw_grpc_front_lock(&front);
    assert_int_equal(gw_grpc_unpark_locked(&front, c), 1);
    gw_grpc_front_unlock(&front);
    gw_grpc_call_unref(c); /* the parked list's reference */
    void *items[4];
    assert_int_equal(queue_pop_n(gw.q, items, 4, 0), 4);
    for (int i = 0; i < 4; i++)
        produce_msg_free(items[i]);
    pump(c);
    assert_int_equal(io.reads, 1);
    gw_grpc_call_unref(c);
}

static void test_the_stop_ends_a_stream_once_it_owes_nothing(void **state)
{
    gcall *c = gw_grpc_call_new(&front, M_STREAM);
    (void)state;

    gack *one = ack(c, 1, GW_GRPC_ACK_WAITING, "one");
    atomic_store(&gw.stopping, 1);
    pump(c);
    /* It reads no more, and owes one ack: nothing yet. */
    assert_int_equal(io.reads, 0);
    assert_int_equal(io.writes, 0);
    assert_true(c->final_set);
    assert_int_equal(c->final_code, GRPC_STATUS_UNAVAILABLE);
    one->a.state = GW_GRPC_ACK_READY;
    pump(c);
    /* The ack it owed, with the status in the same batch. */
    assert_int_equal(io.writes, 1);
    assert_int_equal(io.with_msg, 1);
    assert_int_equal(io.with_status, 1);
    assert_string_equal(io.last_msg, "one");
    gw_grpc_call_unref(c);
}

static void test_a_stream_whose_client_reads_no_acks_stops_reading(void **state)
{
    gcall *c = gw_grpc_call_new(&front, M_STREAM);
    (void)state;

    /* 3 × 100 kB owed, the first being written and never read by the client. */
    for (uint64_t seq = 1; seq <= 4; seq++)
        big_ack(c, seq, 100 * 1024);
    pump(c);
    assert_int_equal(io.writes, 1);
    assert_int_equal(c->owed, 3 * 100 * 1024);
    assert_int_equal(io.reads, 0); /* past STREAM_MAX_OWED_BYTES: no more requests are read */
    assert_int_equal(atomic_load(&gw.budget.inbound_used), 4 * 100 * 1024);
    write_done(c);
    pump(c);
    /* 200 kB owed now, one write in flight: under the bound, it reads again. */
    assert_int_equal(c->owed, 2 * 100 * 1024);
    assert_int_equal(io.reads, 1);
    write_done(c);
    pump(c);
    write_done(c);
    pump(c);
    write_done(c);
    assert_int_equal(c->owed, 0);
    assert_int_equal(atomic_load(&gw.budget.inbound_used), 0); /* every byte given back */
    gw_grpc_call_unref(c);
}

static void test_a_stream_parks_while_the_inbound_share_is_used_up(void **state)
{
    gcall *c = gw_grpc_call_new(&front, M_STREAM);
    (void)state;

    gw_budget_hold_inbound(&gw.budget, gw.budget.inbound); /* e.g. HTTP bodies being read */
    pump(c);
    assert_int_equal(io.reads, 0);
    assert_true(c->parked);
    gw_budget_give_inbound(&gw.budget, gw.budget.inbound);
    gw_grpc_front_lock(&front);
    assert_int_equal(gw_grpc_unpark_locked(&front, c), 1);
    gw_grpc_front_unlock(&front);
    gw_grpc_call_unref(c); /* the parked list's reference */
    pump(c);
    assert_int_equal(io.reads, 1);
    gw_grpc_call_unref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_acks_leave_in_seq_order_one_write_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_failed_ack_ends_the_stream_naming_its_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_stream_parks_while_the_queue_is_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_stop_ends_a_stream_once_it_owes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_stream_whose_client_reads_no_acks_stops_reading, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_stream_parks_while_the_inbound_share_is_used_up, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
