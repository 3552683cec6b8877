#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_empty_parts),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
