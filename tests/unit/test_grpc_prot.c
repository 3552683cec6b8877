/*
 * gateway/grpc_prot: a PublishRequest into validated events or the list of
 * what is wrong, the PublishResponse on the wire, the peer and the bearer
 * token as the C core hands them, and the in-seq-order release of a
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

static int setup(void **state)
{
    (void)state;
    ing_event_limits_default(&lim);
    return 0;
}

static void ce_init(Ingest__V1__CloudEvent *ce, const char *id, const char *source, const char *type)
{
    ingest__v1__cloud_event__init(ce);
    ce->id = (char *)id;
    ce->source = (char *)source;
    ce->type = (char *)type;
}

/* gw_grpc_prot_events() on the request as it comes off the wire: packed by protobuf-c, read by wire.c. */
static int events_of(const Ingest__V1__PublishRequest *req, const ing_event_limits *l, ing_event_batch *b,
                     gw_grpc_event_errors *errs, ing_event_error *req_err)
{
    size_t n = ingest__v1__publish_request__get_packed_size(req);
    uint8_t *buf = malloc(n ? n : 1);
    wire_request w;
    int rc;

    assert_non_null(buf);
    assert_int_equal(ingest__v1__publish_request__pack(req, buf), n);
    assert_int_equal(publish_request_from_wire(buf, n, &w), 0);
    assert_int_equal(w.n_events, req->n_events);
    rc = gw_grpc_prot_events(&w, l, b, errs, req_err);
    free(buf);
    return rc;
}

static void test_events_valid_get_ids_in_order(void **state)
{
    Ingest__V1__CloudEvent ces[3], *ptrs[3];
    Ingest__V1__PublishRequest req = INGEST__V1__PUBLISH_REQUEST__INIT;
    gw_grpc_event_errors errs = {0};
    ing_event_error req_err;
    ing_event_batch b;
    (void)state;

    ce_init(&ces[0], "", "/s", "t");
    ce_init(&ces[1], "given", "/s", "t");
    ce_init(&ces[2], "", "/s", "t");
    for (int i = 0; i < 3; i++)
        ptrs[i] = &ces[i];
    req.n_events = 3;
    req.events = ptrs;
    ing_event_batch_init(&b);
    assert_int_equal(events_of(&req, &lim, &b, &errs, &req_err), 0);
    assert_int_equal(b.n, 3);
    assert_int_equal(errs.n, 0);
    assert_int_equal(strlen(b.ev[0].id), EVENT_ID_LEN);
    assert_string_equal(b.ev[1].id, "given");
    assert_int_equal(strlen(b.ev[2].id), EVENT_ID_LEN);
    /* UUIDv7: assigned in time order. */
    assert_true(strcmp(b.ev[0].id, b.ev[2].id) < 0);
    ing_event_batch_clear(&b);
    gw_grpc_event_errors_clear(&errs);
}

static void test_events_every_bad_one_is_listed(void **state)
{
    Ingest__V1__CloudEvent ces[5], *ptrs[5];
    Ingest__V1__PublishRequest req = INGEST__V1__PUBLISH_REQUEST__INIT;
    gw_grpc_event_errors errs = {0};
    ing_event_error req_err;
    ing_event_batch b;
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
    ing_event_batch_init(&b);
    assert_int_equal(events_of(&req, &lim, &b, &errs, &req_err), -EINVAL);
    assert_int_equal(errs.n, 3);
    assert_int_equal(errs.e[0].index, 1);
    assert_int_equal(errs.e[1].index, 3);
    assert_int_equal(errs.e[2].index, 4);
    for (size_t i = 0; i < errs.n; i++)
        assert_string_equal(errs.e[i].code, EVENT_ERR_INVALID);
    assert_non_null(strstr(errs.e[0].message, "type"));
    assert_non_null(strstr(errs.e[1].message, "source"));
    assert_non_null(strstr(errs.e[2].message, "specversion"));
    ing_event_batch_clear(&b);
    gw_grpc_event_errors_clear(&errs);
    gw_grpc_event_errors_clear(&errs); /* cleared twice: harmless */
}

static void test_events_too_many_is_the_request_s_fault(void **state)
{
    Ingest__V1__CloudEvent ces[3], *ptrs[3];
    Ingest__V1__PublishRequest req = INGEST__V1__PUBLISH_REQUEST__INIT;
    gw_grpc_event_errors errs = {0};
    ing_event_error req_err;
    ing_event_limits small = lim;
    ing_event_batch b;
    (void)state;

    for (int i = 0; i < 3; i++) {
        ce_init(&ces[i], "", "/s", "t");
        ptrs[i] = &ces[i];
    }
    small.max_batch_events = 2;
    req.n_events = 3;
    req.events = ptrs;
    ing_event_batch_init(&b);
    assert_int_equal(events_of(&req, &small, &b, &errs, &req_err), -EINVAL);
    assert_int_equal(errs.n, 0);
    assert_int_equal(b.n, 0);
    assert_string_equal(req_err.code, EVENT_ERR_TOO_MANY);
    assert_int_equal(req_err.index, -1);
    ing_event_batch_clear(&b);
}

static void test_response_round_trip(void **state)
{
    ing_event_batch b;
    gw_grpc_event_errors errs = {0};
    uint8_t *buf;
    size_t len;
    (void)state;

    ing_event_batch_init(&b);
    ing_event *ev = ing_event_batch_add(&b);
    ev->id = strdup("id-1");
    ev = ing_event_batch_add(&b);
    ev->id = strdup("id-2");
    assert_int_equal(gw_grpc_prot_response(42, &b, NULL, &buf, &len), 0);
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

    errs.e = calloc(2, sizeof(*errs.e));
    errs.n = errs.cap = 2;
    errs.e[0] = (gw_grpc_event_error){.index = 3, .code = EVENT_ERR_INVALID, .message = "source: required"};
    errs.e[1] = (gw_grpc_event_error){.index = 7, .code = EVENT_ERR_TOO_LARGE, .message = "too big"};
    assert_int_equal(gw_grpc_prot_response(9, NULL, &errs, &buf, &len), 0);
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
    gw_grpc_event_errors_clear(&errs);

    /* Nothing at all (seq 0, an empty request's ack): an empty message, still a buffer to free. */
    assert_int_equal(gw_grpc_prot_response(0, NULL, NULL, &buf, &len), 0);
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

static void test_bearer(void **state)
{
    (void)state;
#define OK(v) gw_grpc_prot_bearer_ok(v, strlen(v), "tok3n")
    assert_true(OK("Bearer tok3n"));
    assert_true(OK("bearer tok3n"));
    assert_true(OK("BEARER tok3n"));
    assert_false(OK("Bearer tok3"));
    assert_false(OK("Bearer tok3n!"));
    assert_false(OK("Bearer Tok3n"));
    assert_false(OK("tok3n"));
    assert_false(OK("Basic tok3n"));
    assert_false(OK("Bearer "));
    assert_false(OK(""));
#undef OK
    /* Not NUL-terminated: only len bytes count. */
    assert_true(gw_grpc_prot_bearer_ok("Bearer tok3nXYZ", 12, "tok3n"));
    assert_false(gw_grpc_prot_bearer_ok(NULL, 0, "tok3n"));
    /* An empty token matches nothing (auth is off then, and never asked). */
    assert_false(gw_grpc_prot_bearer_ok("Bearer ", 7, ""));
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
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_acks_leave_in_seq_order),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
