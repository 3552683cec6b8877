#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "spooler.h"

/* A record as produce_msg_new lays it out: key and headers NUL-terminated, then the value. */
static produce_msg *msg(const char *key, const char *id, const char *source, const char *type,
                        const void *value, size_t vlen)
{
    produce_msg *m =
        calloc(1, sizeof(*m) + strlen(key) + strlen(id) + strlen(source) + strlen(type) + 4 + vlen);
    char *p = m->strings;

    m->protocol = 2;
    m->key = strcpy(p, key), m->key_len = strlen(key), p += m->key_len + 1;
    m->ce_id = strcpy(p, id), m->ce_id_len = strlen(id), p += m->ce_id_len + 1;
    m->ce_source = strcpy(p, source), m->ce_source_len = strlen(source), p += m->ce_source_len + 1;
    m->ce_type = strcpy(p, type), m->ce_type_len = strlen(type), p += m->ce_type_len + 1;
    m->value = memcpy(p, value, vlen);
    m->value_len = vlen;
    return m;
}

static uint8_t *encode(const produce_msg *m, const char *topic, size_t *len)
{
    *len = gw_spool_encode(m, topic, NULL);
    uint8_t *buf = malloc(*len);
    assert_int_equal(gw_spool_encode(m, topic, buf), *len);
    return buf;
}

static void same(const produce_msg *a, const produce_msg *b)
{
    assert_int_equal(a->protocol, b->protocol);
    assert_string_equal(a->key, b->key);
    assert_string_equal(a->ce_id, b->ce_id);
    assert_string_equal(a->ce_source, b->ce_source);
    assert_string_equal(a->ce_type, b->ce_type);
    assert_int_equal(a->value_len, b->value_len);
    assert_memory_equal(a->value, b->value, a->value_len);
    assert_null(b->wait);
    assert_int_equal(b->spool_seq, 0);
}

/* A record comes back as the producer needs it; the gateway's own topic as NULL, another by name. */
static void test_round_trip(void **state)
{
    (void)state;
    static const uint8_t value[] = {0, 1, 2, 0xff, 0, 9};
    produce_msg *m = msg("src/key", "id-1", "src", "t.created", value, sizeof(value));
    size_t len;
    uint8_t *buf = encode(m, "events", &len);
    int malformed = -1;

    assert_int_equal(len, GW_SPOOL_HEAD + 6 + 7 + 4 + 3 + 9 + sizeof(value));
    produce_msg *back = gw_spool_decode(buf, len, "events", &malformed);
    assert_non_null(back);
    assert_int_equal(malformed, 0);
    same(m, back);
    assert_null(back->topic);
    produce_msg_free(back);

    back = gw_spool_decode(buf, len, "other", &malformed);
    assert_non_null(back);
    same(m, back);
    assert_string_equal(back->topic, "events");
    produce_msg_free(back);
    free(buf);
    free(m);
}

/* An empty value and key are records too. */
static void test_empty_parts(void **state)
{
    (void)state;
    produce_msg *m = msg("", "i", "s", "t", "", 0);
    size_t len;
    uint8_t *buf = encode(m, "events", &len);
    int malformed;
    produce_msg *back = gw_spool_decode(buf, len, "events", &malformed);

    assert_non_null(back);
    same(m, back);
    produce_msg_free(back);
    free(buf);
    free(m);
}

/* Every length that does not add up, a wrong version, a cut record: malformed, never read past the end. */
static void test_malformed(void **state)
{
    (void)state;
    produce_msg *m = msg("k", "id", "s", "t", "vv", 2);
    size_t len;
    uint8_t *buf = encode(m, "events", &len);
    int malformed = 0;

    for (size_t cut = 0; cut < len; cut++) {
        malformed = 0;
        assert_null(gw_spool_decode(buf, cut, "events", &malformed));
        assert_int_equal(malformed, 1);
    }
    buf[0] = 2;
    assert_null(gw_spool_decode(buf, len, "events", &malformed));
    assert_int_equal(malformed, 1);
    buf[0] = 1;
    buf[20] = 0xff; /* the value's length */
    assert_null(gw_spool_decode(buf, len, "events", &malformed));
    assert_int_equal(malformed, 1);
    buf[20] = 2;
    buf[2] = buf[3] = 0; /* no topic */
    assert_null(gw_spool_decode(buf, len, "events", &malformed));
    assert_int_equal(malformed, 1);
    free(buf);
    free(m);
}

/* The spool's figure `name` from /metrics' text. */
static unsigned long long spool_metric(gw_spooler *s, const char *name)
{
    struct evbuffer *out = evbuffer_new();
    char want[96];
    unsigned long long v = ~0ull;

    gw_spooler_metrics(s, out);
    evbuffer_add(out, "", 1);
    const char *text = (const char *)evbuffer_pullup(out, -1);
    snprintf(want, sizeof(want), "\n%s ", name);
    const char *at = strstr(text, want);
    if (at)
        sscanf(at + strlen(want), "%llu", &v);
    evbuffer_free(out);
    return v;
}

static void persisted_done(ack_wait *w)
{
    atomic_store((atomic_int *)w->ctx, 1);
    ack_wait_free(w);
}

/*
 * An ack that comes before its record is durable (Kafka can answer before
 * the group is synced, and a refused request's records are cancelled at
 * once) is done once it is: none is lost, the spool ends empty.
 */
static void test_early_acks_are_kept_until_durable(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_spooler.XXXXXX";
    assert_non_null(mkdtemp(dir));
    gateway_config cfg = {
        .kafka_topic = "events", .spool_dir = dir, .spool_mode = "always", .spool_max_bytes = 64u << 20};
    gateway gw = {.cfg = &cfg};
    gw_spooler *s = NULL;
    char err[256];
    produce_msg *m = msg("k", "id", "src", "type", "value", 5);
    uint64_t last = 0;

    assert_int_equal(gw_spooler_open(&gw, &s, err, sizeof(err)), 0);
    assert_non_null(s);
    for (int i = 0; i < 2000; i++) {
        assert_int_equal(gw_spooler_append(s, m), 0);
        assert_true(m->spool_seq > last);
        last = m->spool_seq;
        gw_spooler_cancel(s, last); /* most of them before the writer has them */
    }
    /* A persisted wait for the last: reported after the early acks up to it are done. */
    atomic_int done = 0;
    ack_wait *w = ack_wait_new(1, NULL, persisted_done, &done);
    w->persisted = 1;
    w->persist_seq = last;
    gw_spooler_wait(s, w);
    while (!atomic_load(&done))
        usleep(1000);
    assert_int_equal(spool_metric(s, "ingest_spool_records"), 0);
    assert_true(spool_metric(s, "ingest_spool_fsyncs_total") >= 1);
    gw_spooler_free(s);

    /* Reopened: nothing to replay. */
    assert_int_equal(gw_spooler_open(&gw, &s, err, sizeof(err)), 0);
    assert_int_equal(spool_metric(s, "ingest_spool_records"), 0);
    gw_spooler_free(s);
    free(m);
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/*
 * The stop's settle: every record appended so far is durable once it
 * returns 1 (a persisted wait for the last is reported at once), and
 * nothing is acked by it: all are there for the next start.
 */
static void test_settle_makes_the_appends_durable(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_spooler.XXXXXX";
    assert_non_null(mkdtemp(dir));
    gateway_config cfg = {
        .kafka_topic = "events", .spool_dir = dir, .spool_mode = "always", .spool_max_bytes = 64u << 20};
    gateway gw = {.cfg = &cfg};
    gw_spooler *s = NULL;
    char err[256];
    produce_msg *m = msg("k", "id", "src", "type", "value", 5);

    assert_int_equal(gw_spooler_open(&gw, &s, err, sizeof(err)), 0);
    assert_int_equal(gw_spooler_settle(s, 0), 1); /* nothing appended */
    for (int i = 0; i < 500; i++)
        assert_int_equal(gw_spooler_append(s, m), 0);
    assert_int_equal(gw_spooler_settle(s, 10000), 1);
    atomic_int done = 0;
    ack_wait *w = ack_wait_new(1, NULL, persisted_done, &done);
    w->persisted = 1;
    w->persist_seq = m->spool_seq;
    gw_spooler_wait(s, w);
    assert_int_equal(atomic_load(&done), 1); /* at once: durable already */
    assert_int_equal(gw_spooler_records(s), 500);
    gw_spooler_free(s);

    assert_int_equal(gw_spooler_open(&gw, &s, err, sizeof(err)), 0);
    assert_int_equal(gw_spooler_records(s), 500);
    gw_spooler_free(s);
    free(m);
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* --spool=always without a directory, and one whose parent is missing: refused with a sentence. */
static void test_open_refusals(void **state)
{
    (void)state;
    gateway_config cfg = {.kafka_topic = "events", .spool_dir = "", .spool_mode = "always"};
    gateway gw = {.cfg = &cfg};
    gw_spooler *s = (gw_spooler *)&cfg;
    char err[256] = "";

    assert_int_equal(gw_spooler_open(&gw, &s, err, sizeof(err)), -EINVAL);
    assert_null(s);
    assert_string_equal(err, "--spool=always needs --spool-dir");
    cfg.spool_dir = "/nonexistent-parent/spool";
    assert_true(gw_spooler_open(&gw, &s, err, sizeof(err)) < 0);
    assert_null(s);
    assert_non_null(strstr(err, "/nonexistent-parent"));
    cfg.spool_mode = "off";
    assert_int_equal(gw_spooler_open(&gw, &s, err, sizeof(err)), 0);
    assert_null(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_early_acks_are_kept_until_durable),
        cmocka_unit_test(test_settle_makes_the_appends_durable),
        cmocka_unit_test(test_open_refusals),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_empty_parts),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
