/*
 * gateway/admit: the one admission stage. The gate (identity, stop,
 * overload), prepare with a front end's parser (validation, ids, records,
 * the index rule, every bad event listed), and the push, all or nothing per
 * unit; and that each step counts what it decides.
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

#include "admit.h"
#include "envelope.h"

static gateway_config cfg = {.default_ack = "accepted", .gateway_id = "gw-test", .auth_token = ""};
static gateway gw;

static int setup(void **state)
{
    (void)state;
    memset(&gw, 0, sizeof(gw));
    cfg.auth_token = "";
    gw.cfg = &cfg;
    ing_event_limits_default(&gw.lim);
    {
        char err[200];
        if (gw_budget_init(&gw.budget, (size_t)256 << 20, gw.lim.max_request_bytes, err, sizeof(err)) != 0)
            return -1;
    }
    gw.q = queue_new(8, 6);
    return gw.q ? 0 : -1;
}

static int teardown(void **state)
{
    void *items[16];
    size_t n;
    (void)state;

    queue_close(gw.q);
    while ((n = queue_pop_n(gw.q, items, 16, 0)) > 0)
        for (size_t i = 0; i < n; i++)
            produce_msg_free(items[i]);
    queue_free(gw.q);
    gw_auth_clear(&gw);
    gateway_metrics_principals_free(&gw.metrics);
    return 0;
}

/* Install the rules of this auth file text. */
static void rules(const char *text)
{
    char err[256];
    gw_auth *a = gw_auth_parse(text, strlen(text), "test", err, sizeof(err));
    if (a == NULL)
        fail_msg("%s", err);
    assert_int_equal(gw_auth_swap(&gw, a), 0);
}

static uint64_t refused(gw_protocol p, gw_reason r)
{
    return gateway_metrics_refused_count(&gw.metrics, p, r);
}

/* The gate of an HTTP request with this Authorization value (NULL: none). */
static int gate(const char *authorization, gw_admission *a)
{
    gw_credentials cred = {authorization, authorization ? strlen(authorization) : 0, NULL};

    gw_admission_init(a, &gw, GW_HTTP, "p", 0);
    return gw_admit_gate(a, &cred, 0);
}

static void test_gate_identity(void **state)
{
    gw_admission a;
    (void)state;

    char err[200];
    gw_auth *shorthand = gw_auth_from_token("tok3n", err, sizeof(err));
    assert_non_null(shorthand);
    assert_int_equal(gw_auth_swap(&gw, shorthand), 0);
    assert_int_equal(gate("Bearer tok3n", &a), 0);
    assert_string_equal(a.principal->name, "default");
    gw_admission_clear(&a);
    assert_int_equal(gate("bearer tok3n", &a), 0);
    gw_admission_clear(&a);
    assert_int_equal(gate("BEARER tok3n", &a), 0);
    gw_admission_clear(&a); /* lets go of the principal's reference */
    assert_int_equal(gate(NULL, &a), -1);
    assert_int_equal(a.refusal.reason, GW_R_unauthorized);
    assert_non_null(strstr(a.refusal.message, "required"));
    const char *wrong[] = {
        "Bearer tok3", "Bearer tok3n!", "Bearer Tok3n", "tok3n", "Basic tok3n", "Bearer ", ""};
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        assert_int_equal(gate(wrong[i], &a), -1);
        assert_int_equal(a.refusal.reason, GW_R_unauthorized);
        assert_non_null(strstr(a.refusal.message, "wrong"));
    }
    assert_int_equal(refused(GW_HTTP, GW_R_unauthorized), 8);
    /* Only len bytes count. */
    gw_admission_init(&a, &gw, GW_GRPC, "p", 0);
    assert_int_equal(gw_admit_gate(&a, &(gw_credentials){"Bearer tok3nXYZ", 12, NULL}, 0), 0);
    gw_admission_clear(&a);
    /* A protocol without identity (UDP) is anonymous, which the shorthand lets use UDP. */
    gw_admission_init(&a, &gw, GW_UDP, "p", 0);
    assert_int_equal(gw_admit_gate(&a, NULL, 0), 0);
    assert_string_equal(a.principal->name, "anonymous");
    gw_admission_clear(&a);
    /* Auth off: anything goes, and a token is no one's business. */
    rules("principal anonymous\n protocols http grpc udp\n");
    gw.auth.cur->ignore_tokens = 1;
    gw_admission_init(&a, &gw, GW_HTTP, "p", 0);
    assert_int_equal(gw_admit_gate(&a, &(gw_credentials){NULL, 0, NULL}, 0), 0);
    gw_admission_clear(&a);
    gw_admission_init(&a, &gw, GW_HTTP, "p", 0);
    assert_int_equal(gw_admit_gate(&a, &(gw_credentials){"Bearer x", 8, NULL}, 0), 0);
    assert_string_equal(a.principal->name, "anonymous");
    gw_admission_clear(&a);
}

/* A parser that makes n events from the arg's description: "ok", or a bad type at given indexes. */
typedef struct fake {
    int n;
    int multi;
    long bad[4];        /* indexes with no type, -1 ends */
    long undecodable;   /* an index the parser itself refuses (as gRPC's decode does), or -1 */
    const char *src[4]; /* the events' sources (NULL: "/s") */
} fake;

static int parse_fake(gw_admission *a, void *arg)
{
    const fake *f = arg;
    ing_event_error err;

    a->multi = f->multi;
    for (int i = 0; i < f->n; i++) {
        ing_event *ev = ing_event_batch_add(&a->batch);
        assert_non_null(ev);
        const char *src = i < 4 && f->src[i] ? f->src[i] : "/s";
        assert_int_equal(ing_event_set_attr(ev, "source", 6, src, strlen(src), &a->gw->lim, &err), 0);
        int bad = 0;
        for (int k = 0; k < 4 && f->bad[k] >= 0; k++)
            bad |= f->bad[k] == i;
        if (!bad)
            assert_int_equal(ing_event_set_attr(ev, "type", 4, "t", 1, &a->gw->lim, &err), 0);
        if (i == f->undecodable) {
            ing_event_error_set(&err, ING_ERR_TOO_LARGE, i, "", "too big to decode");
            if (!a->all_errors)
                return gw_admission_refuse_error(a, &err);
            assert_int_equal(gw_admission_event_error(a, (size_t)i, &err), 0);
        }
    }
    return 0;
}

/* Principals: protocols and sources refused as forbidden, the principal in the Envelope and its counters. */
static void test_principal_rules(void **state)
{
    gw_admission a;
    gw_peer_cert cert = {.subject = (char *)"CN=billing,O=Acme"};
    (void)state;

    /* (the token line: some token's hash; billing is identified by its certificate here) */
    rules("principal billing\n"
          "  token sha256:e8a77d4e6c8f2e5fa4c6e45d0e3a3e43e5f6a4d1c7b2b0b3f3c8b1a9f9e6b2f1\n"
          "  cert subject CN=billing,O=Acme\n"
          "  source /billing/\n"
          "  protocols grpc\n"
          "principal anonymous\n"
          "  protocols udp\n"
          "  source /open/\n");
    /* The certificate identifies billing, which may not use HTTP. */
    gw_admission_init(&a, &gw, GW_HTTP, "p", 0);
    assert_int_equal(gw_admit_gate(&a, &(gw_credentials){NULL, 0, &cert}, 0), -1);
    assert_int_equal(a.refusal.reason, GW_R_forbidden);
    assert_non_null(strstr(a.refusal.message, "billing"));
    assert_int_equal(refused(GW_HTTP, GW_R_forbidden), 1);
    gw_admission_clear(&a);
    /* Anonymous may not use HTTP either: nobody, so unauthorized. */
    gw_admission_init(&a, &gw, GW_HTTP, "p", 0);
    assert_int_equal(gw_admit_gate(&a, &(gw_credentials){NULL, 0, NULL}, 0), -1);
    assert_int_equal(a.refusal.reason, GW_R_unauthorized);
    gw_admission_clear(&a);

    /* Over gRPC: event 1 of 3 has a source billing may not use. */
    gw_admission_init(&a, &gw, GW_GRPC, "p", 0);
    assert_int_equal(gw_admit_gate(&a, &(gw_credentials){NULL, 0, &cert}, 0), 0);
    assert_string_equal(a.principal->name, "billing");
    fake f = {.n = 3,
              .multi = 1,
              .bad = {-1},
              .undecodable = -1,
              .src = {"/billing/a", "/elsewhere", "/billing/b"}};
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &f, 0), -1);
    assert_int_equal(a.refusal.reason, GW_R_forbidden);
    assert_int_equal(a.refusal.index, 1);
    assert_non_null(strstr(a.refusal.message, "/elsewhere"));
    /* A single-event form names no index. */
    fake one = {.n = 1, .multi = 0, .bad = {-1}, .undecodable = -1, .src = {"/elsewhere"}};
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &one, 0), -1);
    assert_int_equal(a.refusal.index, -1);
    /* With all_errors, each one listed as forbidden. */
    a.all_errors = 1;
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &f, 0), -1);
    assert_int_equal(a.n_errors, 1);
    assert_int_equal(a.errors[0].index, 1);
    assert_int_equal(a.errors[0].reason, GW_R_forbidden);
    a.all_errors = 0;
    /* Allowed sources go through, with the principal in each Envelope, and counted. */
    fake ok = {.n = 2, .multi = 1, .bad = {-1}, .undecodable = -1, .src = {"/billing/a", "/billing/b"}};
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &ok, 0), 0);
    for (size_t i = 0; i < a.n_msgs; i++) {
        Ingest__V1__Envelope *env = envelope_decode(a.msgs[i]->value, a.msgs[i]->value_len);
        assert_non_null(env);
        assert_string_equal(env->principal, "billing");
        envelope_free(env);
    }
    assert_int_equal(gw_admit_push(&a, 0), 0);
    const gw_principal_stats *st = a.principal->stats;
    assert_int_equal(atomic_load(&st->events), 2);
    assert_int_equal(atomic_load(&st->refused[GW_R_forbidden]), 4);
    /* The old rules stay with the admission across a swap; the counters stay with the name. */
    rules("principal billing\n  cert subject CN=billing,O=Acme\n");
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &f, 0), -1);
    assert_int_equal(a.refusal.reason, GW_R_forbidden);
    gw_admission_clear(&a);
    gw_admission_init(&a, &gw, GW_GRPC, "p", 0);
    assert_int_equal(gw_admit_gate(&a, &(gw_credentials){NULL, 0, &cert}, 0), 0);
    assert_ptr_equal(a.principal->stats, st);
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &f, 0), 0); /* no source lines now: any source */
    gw_admission_clear(&a);

    /* UDP: anonymous, its sources checked. */
    rules("principal anonymous\n  protocols udp\n  source /open/\n");
    gw_admission_init(&a, &gw, GW_UDP, "p", 0);
    assert_int_equal(gw_admit_gate(&a, NULL, 0), 0);
    fake udp = {.n = 1, .multi = 1, .bad = {-1}, .undecodable = -1, .src = {"/closed"}};
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &udp, 0), -1);
    assert_int_equal(a.refusal.reason, GW_R_forbidden);
    assert_int_equal(refused(GW_UDP, GW_R_forbidden), 1);
    gw_admission_clear(&a);
}

static void test_prepare_index_rule(void **state)
{
    gw_admission a;
    fake one_bad = {.n = 3, .multi = 1, .bad = {1, -1}, .undecodable = -1};
    (void)state;

    gw_admission_init(&a, &gw, GW_HTTP, "p", 0);
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &one_bad, 0), -1);
    assert_int_equal(a.refusal.reason, GW_R_invalid_event);
    assert_int_equal(a.refusal.index, 1);
    assert_non_null(strstr(a.refusal.message, "type"));
    assert_int_equal(a.n_msgs, 0);
    /* A single-event form names no index. */
    fake single = {.n = 1, .multi = 0, .bad = {0, -1}, .undecodable = -1};
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &single, 0), -1);
    assert_int_equal(a.refusal.index, -1);
    assert_int_equal(refused(GW_HTTP, GW_R_invalid_event), 2);
    /* No events: refused unless the protocol acknowledges empty requests. */
    fake none = {.n = 0, .bad = {-1}, .undecodable = -1};
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &none, 0), -1);
    assert_int_equal(a.refusal.reason, GW_R_invalid_event);
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &none, 1), 0);
    gw_admission_clear(&a);
}

static void test_prepare_lists_every_bad_event_in_order(void **state)
{
    gw_admission a;
    fake f = {.n = 6, .multi = 1, .bad = {4, 1, -1}, .undecodable = 2};
    (void)state;

    gw_admission_init(&a, &gw, GW_GRPC, "p", 0);
    a.all_errors = 1;
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &f, 1), -1);
    assert_int_equal(a.n_errors, 3);
    assert_int_equal(a.errors[0].index, 1);
    assert_int_equal(a.errors[0].reason, GW_R_invalid_event);
    assert_int_equal(a.errors[1].index, 2);
    assert_int_equal(a.errors[1].reason, GW_R_too_large);
    assert_int_equal(a.errors[2].index, 4);
    assert_int_equal(a.refusal.index, 1);
    assert_int_equal(a.n_msgs, 0);
    gw_admission_clear(&a);
}

static void test_prepare_ids_records_and_wait(void **state)
{
    gw_admission a;
    fake f = {.n = 3, .multi = 1, .bad = {-1}, .undecodable = -1};
    (void)state;

    gw_admission_init(&a, &gw, GW_HTTP, "[::1]:9", 0);
    assert_int_equal(a.committed, 0); /* --default-ack accepted */
    a.committed = 1;
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &f, 0), 0);
    assert_int_equal(a.n_msgs, 3);
    assert_int_equal(a.n_units, 1);
    assert_non_null(a.wait);
    assert_int_equal(atomic_load(&a.wait->remaining), 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(strlen(a.batch.ev[i].id), EVENT_ID_LEN);
        assert_ptr_equal(a.msgs[i]->wait, a.wait);
    }
    /* Never pushed: clear frees the records and the wait (ASan tells). */
    gw_admission_clear(&a);
}

static void test_gate_stop_and_overload(void **state)
{
    gw_admission a;
    fake f = {.n = 4, .multi = 1, .bad = {-1}, .undecodable = -1};
    (void)state;

    gw_admission_init(&a, &gw, GW_UDP, "p", 0);
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &f, 0), 0);
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &f, 0), 0);
    assert_int_equal(gw_admit_push(&a, 0), 0); /* 8 of 8: at capacity, above the high water of 6 */
    assert_int_equal(queue_depth(gw.q), 8);
    assert_int_equal(gw_admit_gate(&a, NULL, 0), -1);
    assert_int_equal(a.refusal.reason, GW_R_overloaded);
    assert_int_equal(gw_admit_gate(&a, NULL, 1), 0); /* a caller that waits for room itself */
    /* What an admission holds unpushed counts: three queued and three in hand reach the mark of six. */
    void *items[8];
    size_t got = queue_pop_n(gw.q, items, 5, 0);
    for (size_t i = 0; i < got; i++)
        produce_msg_free(items[i]);
    assert_int_equal(queue_depth(gw.q), 3);
    fake three = {.n = 3, .multi = 1, .bad = {-1}, .undecodable = -1};
    gw_admission_reset(&a, 0);
    assert_int_equal(gw_admit_gate(&a, NULL, 0), 0);
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &three, 0), 0);
    assert_int_equal(gw_admit_gate(&a, NULL, 0), -1);
    assert_int_equal(a.refusal.reason, GW_R_overloaded);
    assert_int_equal(refused(GW_UDP, GW_R_overloaded), 2);
    atomic_store(&gw.stopping, 1);
    assert_int_equal(gw_admit_gate(&a, NULL, 1), -1);
    assert_int_equal(a.refusal.reason, GW_R_shutting_down);
    atomic_store(&gw.stopping, 0);
    gw_admission_clear(&a);
}

static int drops_seen;
static char last_peer[32];

static void on_refused(gw_admission *a, const char *peer, const gw_refusal *r)
{
    (void)a;
    assert_int_equal(r->reason, GW_R_overloaded);
    drops_seen++;
    snprintf(last_peer, sizeof(last_peer), "%s", peer);
}

static void test_push_each_unit_all_or_nothing(void **state)
{
    gw_admission a;
    fake three = {.n = 3, .multi = 1, .bad = {-1}, .undecodable = -1};
    fake four = {.n = 4, .multi = 1, .bad = {-1}, .undecodable = -1};
    (void)state;

    gw_admission_init(&a, &gw, GW_UDP, NULL, 0);
    a.on_refused = on_refused;
    drops_seen = 0;
    a.peer = "first";
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &three, 0), 0);
    a.peer = "second";
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &four, 0), 0);
    a.peer = "third";
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &three, 0), 0);
    /* 8 places: not all 10 at once; then each alone: the first two fit (7), the third does not. */
    assert_int_equal(gw_admit_push(&a, 0), -1);
    assert_int_equal(queue_depth(gw.q), 7);
    assert_int_equal(drops_seen, 1);
    assert_string_equal(last_peer, "third");
    assert_int_equal(gateway_metrics_refused_count(&gw.metrics, GW_UDP, GW_R_overloaded), 1);
    assert_int_equal(atomic_load(&gw.metrics.events[GW_UDP]), 7);

    /* A caller that keeps a request that does not fit (a gRPC stream) gets it back. */
    gw_admission_reset(&a, 0);
    a.peer = "kept";
    assert_int_equal(gw_admit_prepare(&a, parse_fake, &three, 0), 0);
    assert_int_equal(gw_admit_push(&a, 1), -EAGAIN);
    assert_int_equal(a.n_msgs, 3);
    a.on_refused = NULL;
    queue_close(gw.q);
    assert_int_equal(gw_admit_push(&a, 1), -1);
    assert_int_equal(a.refusal.reason, GW_R_shutting_down);
    assert_int_equal(a.n_msgs, 0);
    gw_admission_clear(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_gate_identity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_principal_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_index_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_lists_every_bad_event_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_ids_records_and_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gate_stop_and_overload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_push_each_unit_all_or_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
