/*
 * gateway/grpc_prot: a PublishRequest into validated events or the list of
 * what is wrong (through the admission stage), the PublishResponse on the
 * wire, the peer as the C core hands it, and the in-seq-order release of a
 * stream's acks whatever order Kafka answers in.
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

#include "grpc_prot.h"

static ing_event_limits lim;
static gateway_config cfg = {.default_ack = "committed", .gateway_id = "gw-test", .auth_token = ""};
static gateway gw;

static int setup(void **state)
{
    (void)state;
    ing_event_limits_default(&lim);
    gw.cfg = &cfg;
    {
        char err[200];
        if (gw_budget_init(&gw.budget, (size_t)256 << 20, gw.lim.max_request_bytes, err, sizeof(err)) != 0)
            return -1;
    }
    gw.q = queue_new(64, 48);
    return gw.q ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    queue_free(gw.q);
    return 0;
}

static void ce_init(Ingest__V1__CloudEvent *ce, const char *id, const char *source, const char *type)
{
    ingest__v1__cloud_event__init(ce);
    ce->id = (char *)id;
    ce->source = (char *)source;
    ce->type = (char *)type;
}

/*
 * The request as it comes off the wire (packed by protobuf-c, read by
 * wire.c) through the admission stage with gw_grpc_prot_parse(), as a
 * stream's request goes: every bad event listed, none queued.
 */
static int events_of(const Ingest__V1__PublishRequest *req, const ing_event_limits *l, gw_admission *a)
{
    size_t n = ingest__v1__publish_request__get_packed_size(req);
    uint8_t *buf = malloc(n ? n : 1);
    int rc;

    assert_non_null(buf);
    assert_int_equal(ingest__v1__publish_request__pack(req, buf), n);
    gw.lim = *l;
    gw_admission_init(a, &gw, GW_GRPC, "[::1]:5", 0);
    a->all_errors = 1;
    gw_grpc_publish pub = {buf, n, 0};
    rc = gw_admit_prepare(a, gw_grpc_prot_parse, &pub, 1);
    assert_int_equal(pub.seq, req->seq);
    free(buf);
    return rc;
}

static void test_events_valid_get_ids_in_order(void **state)
{
    Ingest__V1__CloudEvent ces[3], *ptrs[3];
    Ingest__V1__PublishRequest req = INGEST__V1__PUBLISH_REQUEST__INIT;
    gw_admission a;
    (void)state;

    ce_init(&ces[0], "", "/s", "t");
    ce_init(&ces[1], "given", "/s", "t");
    ce_init(&ces[2], "", "/s", "t");
    for (int i = 0; i < 3; i++)
        ptrs[i] = &ces[i];
    req.n_events = 3;
    req.events = ptrs;
    req.seq = 77;
    req.ack = INGEST__V1__ACK_LEVEL__ACK_LEVEL_ACCEPTED;
    assert_int_equal(events_of(&req, &lim, &a), 0);
    assert_int_equal(a.batch.n, 3);
    assert_int_equal(a.n_errors, 0);
    assert_int_equal(a.n_msgs, 3);
    assert_int_equal(a.committed, 0);
    assert_null(a.wait);
    assert_int_equal(strlen(a.batch.ev[0].id), EVENT_ID_LEN);
    assert_string_equal(a.batch.ev[1].id, "given");
    assert_int_equal(strlen(a.batch.ev[2].id), EVENT_ID_LEN);
    /* UUIDv7: assigned in time order. */
    assert_true(strcmp(a.batch.ev[0].id, a.batch.ev[2].id) < 0);
    gw_admission_clear(&a); /* frees the records never queued */
}

static void test_events_every_bad_one_is_listed(void **state)
{
    Ingest__V1__CloudEvent ces[5], *ptrs[5];
    Ingest__V1__PublishRequest req = INGEST__V1__PUBLISH_REQUEST__INIT;
    gw_admission a;
    (void)state;

    ce_init(&ces[0], "a", "/s", "t");
    ce_init(&ces[1], "b", "/s", "");
    ce_init(&ces[2], "c", "/s", "t");
    ce_init(&ces[3], "d", "", "t");
    ce_init(&ces[4], "e", "/s", "t");
    ces[4].spec_version = "0.3";
    for (int i = 0; i < 5; i++)
        ptrs[i] = &ces[i];
    req.n_events = 5;
    req.events = ptrs;
    assert_int_equal(events_of(&req, &lim, &a), -1);
    assert_int_equal(a.n_errors, 3);
    assert_int_equal(a.n_msgs, 0);
    assert_int_equal(a.errors[0].index, 1);
    assert_int_equal(a.errors[1].index, 3);
    assert_int_equal(a.errors[2].index, 4);
    for (size_t i = 0; i < a.n_errors; i++)
        assert_int_equal(a.errors[i].reason, GW_R_invalid_event);
    assert_non_null(strstr(a.errors[0].message, "type"));
    assert_non_null(strstr(a.errors[1].message, "source"));
    assert_non_null(strstr(a.errors[2].message, "specversion"));
    /* The first bad event names the refusal: the index rule. */
    assert_int_equal(a.refusal.reason, GW_R_invalid_event);
    assert_int_equal(a.refusal.index, 1);
    char msg[300];
    gw_grpc_prot_status_message(&a.refusal, a.n_errors, msg, sizeof(msg));
    assert_non_null(strstr(msg, "invalid_event: event 1: "));
    assert_non_null(strstr(msg, "(and other events)"));
    gw_admission_clear(&a);
    gw_admission_clear(&a); /* cleared twice: harmless */
}

static void test_events_too_many_is_the_request_s_fault(void **state)
{
    Ingest__V1__CloudEvent ces[3], *ptrs[3];
    Ingest__V1__PublishRequest req = INGEST__V1__PUBLISH_REQUEST__INIT;
    ing_event_limits small = lim;
    gw_admission a;
    (void)state;

    for (int i = 0; i < 3; i++) {
        ce_init(&ces[i], "", "/s", "t");
        ptrs[i] = &ces[i];
    }
    small.max_batch_events = 2;
    req.n_events = 3;
    req.events = ptrs;
    assert_int_equal(events_of(&req, &small, &a), -1);
    assert_int_equal(a.n_errors, 0);
    assert_int_equal(a.batch.n, 0);
    assert_int_equal(a.refusal.reason, GW_R_too_many_events);
    assert_int_equal(a.refusal.index, -1);
    gw_admission_clear(&a);
}

static void test_response_round_trip(void **state)
{
    ing_event_batch b;
    gw_event_error errs[2];
    uint8_t *buf;
    size_t len;
    (void)state;

    ing_event_batch_init(&b);
    ing_event *ev = ing_event_batch_add(&b);
    ev->id = strdup("id-1");
    ev = ing_event_batch_add(&b);
    ev->id = strdup("id-2");
    assert_int_equal(gw_grpc_prot_response(42, &b, NULL, 0, &buf, &len), 0);
    Ingest__V1__PublishResponse *r = ingest__v1__publish_response__unpack(NULL, len, buf);
    assert_non_null(r);
    assert_int_equal(r->seq, 42);
    assert_int_equal(r->accepted, 2);
    assert_int_equal(r->n_ids, 2);
    assert_string_equal(r->ids[0], "id-1");
    assert_string_equal(r->ids[1], "id-2");
    assert_int_equal(r->n_errors, 0);
    ingest__v1__publish_response__free_unpacked(r, NULL);
    free(buf);
    ing_event_batch_clear(&b);

    errs[0] = (gw_event_error){.index = 3, .reason = GW_R_invalid_event, .message = "source: required"};
    errs[1] = (gw_event_error){.index = 7, .reason = GW_R_too_large, .message = "too big"};
    assert_int_equal(gw_grpc_prot_response(9, NULL, errs, 2, &buf, &len), 0);
    r = ingest__v1__publish_response__unpack(NULL, len, buf);
    assert_non_null(r);
    assert_int_equal(r->seq, 9);
    assert_int_equal(r->accepted, 0);
    assert_int_equal(r->n_ids, 0);
    assert_int_equal(r->n_errors, 2);
    assert_int_equal(r->errors[0]->index, 3);
    assert_string_equal(r->errors[0]->code, "invalid_event");
    assert_string_equal(r->errors[0]->message, "source: required");
    assert_int_equal(r->errors[1]->index, 7);
    assert_string_equal(r->errors[1]->code, "too_large");
    ingest__v1__publish_response__free_unpacked(r, NULL);
    free(buf);

    /* Nothing at all (seq 0, an empty request's ack): an empty message, still a buffer to free. */
    assert_int_equal(gw_grpc_prot_response(0, NULL, NULL, 0, &buf, &len), 0);
    assert_int_equal(len, 0);
    free(buf);
}

static void test_peer(void **state)
{
    char out[64];
    (void)state;

    gw_grpc_prot_peer("ipv4:127.0.0.1:5678", out, sizeof(out));
    assert_string_equal(out, "127.0.0.1:5678");
    gw_grpc_prot_peer("ipv6:%5B::1%5D:443", out, sizeof(out));
    assert_string_equal(out, "[::1]:443");
    gw_grpc_prot_peer("ipv6:[2001:db8::7]:9", out, sizeof(out));
    assert_string_equal(out, "[2001:db8::7]:9");
    gw_grpc_prot_peer("unix:/run/x.sock", out, sizeof(out));
    assert_string_equal(out, "unix:/run/x.sock");
    gw_grpc_prot_peer(NULL, out, sizeof(out));
    assert_string_equal(out, "");
    gw_grpc_prot_peer("ipv4:255.255.255.255:65535", out, 8);
    assert_string_equal(out, "255.255");
}

static void test_acks_leave_in_seq_order(void **state)
{
    gw_grpc_ack a[4];
    gw_grpc_ack_fifo f;
    (void)state;

    gw_grpc_ack_fifo_init(&f);
    assert_null(gw_grpc_ack_fifo_pop_ready(&f));
    for (int i = 0; i < 4; i++) {
        a[i] = (gw_grpc_ack){.state = GW_GRPC_ACK_WAITING, .seq = (uint64_t)i + 1};
        gw_grpc_ack_fifo_push(&f, &a[i]);
    }
    assert_int_equal(f.n, 4);
    /* Kafka answers 3 first: it waits for 1 and 2. */
    a[2].state = GW_GRPC_ACK_READY;
    assert_null(gw_grpc_ack_fifo_pop_ready(&f));
    a[0].state = GW_GRPC_ACK_READY;
    assert_ptr_equal(gw_grpc_ack_fifo_pop_ready(&f), &a[0]);
    assert_null(gw_grpc_ack_fifo_pop_ready(&f));
    /* A failure is released in its turn too (the stream ends there). */
    a[1].state = GW_GRPC_ACK_FAILED;
    assert_ptr_equal(gw_grpc_ack_fifo_pop_ready(&f), &a[1]);
    assert_ptr_equal(gw_grpc_ack_fifo_pop_ready(&f), &a[2]);
    assert_null(gw_grpc_ack_fifo_pop_ready(&f));
    assert_int_equal(f.n, 1);
    /* Pushed after the FIFO ran dry at its tail: still found. */
    gw_grpc_ack extra = {.state = GW_GRPC_ACK_READY, .seq = 9};
    gw_grpc_ack_fifo_push(&f, &extra);
    /* Tearing down takes them whatever their state, oldest first. */
    assert_ptr_equal(gw_grpc_ack_fifo_pop(&f), &a[3]);
    assert_ptr_equal(gw_grpc_ack_fifo_pop(&f), &extra);
    assert_null(gw_grpc_ack_fifo_pop(&f));
    assert_int_equal(f.n, 0);
    /* Empty again: usable again. */
    gw_grpc_ack_fifo_push(&f, &extra);
    assert_ptr_equal(gw_grpc_ack_fifo_pop_ready(&f), &extra);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_events_valid_get_ids_in_order),
        cmocka_unit_test(test_events_every_bad_one_is_listed),
        cmocka_unit_test(test_events_too_many_is_the_request_s_fault),
        cmocka_unit_test(test_response_round_trip),
        cmocka_unit_test(test_peer),
        cmocka_unit_test(test_acks_leave_in_seq_order),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
