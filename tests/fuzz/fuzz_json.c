/*
 * common/json: the strict parser in each of its forms (one event, a batch,
 * either, NDJSON) and json_check() (binary-mode bodies with a JSON type).
 * The first byte chooses the form and the limits, the rest is the body.
 *
 * Beyond "no crash, no sanitizer report": a refusal leaves no event behind
 * and says why; every event that validates makes an Envelope that decodes
 * back (protobuf-c) to the same attributes, time and data, and a sink row.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "envelope.h"
#include "event.h"
#include "fuzz.h"
#include "json.h"
#include "row.h"

static void same_str(const char *what, const char *a, const char *b)
{
    FUZZ_CHECK((a == NULL) == (b == NULL) && (a == NULL || strcmp(a, b) == 0), "%s: \"%s\" then \"%s\"", what,
               a ? a : "(null)", b ? b : "(null)");
}

static const char *ext_value(const ing_event *ev, const char *name)
{
    for (size_t i = 0; i < ev->n_ext; i++)
        if (strcmp(ev->ext[i].name, name) == 0)
            return ev->ext[i].value;
    return NULL;
}

/* A validated event through the Envelope and back, and into a row, as the gateway and the sink do. */
static void round_trip(ing_event *ev, const ing_event_limits *lim)
{
    envelope_meta meta = {
        .received_unix_nanos = 1, .protocol = ENVELOPE_HTTP, .peer = "p", .gateway_id = "g"};
    /* The canonical time ("...00.100000000Z" for "...00.1Z") may be longer: the size limit is not the point.
     */
    ing_event_limits back_lim = *lim;
    ing_event back;
    ing_event_error err;
    uint8_t *buf;
    size_t len;

    back_lim.max_event_bytes = SIZE_MAX;
    FUZZ_CHECK(ing_event_assign_id(ev) == 0, "no memory");
    FUZZ_CHECK(ing_event_kafka_key(ev) != NULL, "no Kafka key");
    FUZZ_CHECK(envelope_encode(ev, &meta, &buf, &len) == 0, "a valid event was not encoded");
    Ingest__V1__Envelope *env = envelope_decode(buf, len);
    FUZZ_CHECK(env != NULL && env->event != NULL, "protobuf-c refused the Envelope of a valid event");

    ing_event_init(&back);
    memset(&err, 0, sizeof(err));
    FUZZ_CHECK(ing_event_from_proto(env->event, &back, &back_lim, &err) == 0, "back from the Envelope: %s",
               err.message);
    FUZZ_CHECK(ing_event_validate(&back, &back_lim, -1, &err) == 0, "invalid back from the Envelope: %s",
               err.message);
    same_str("id", ev->id, back.id);
    same_str("source", ev->source, back.source);
    same_str("type", ev->type, back.type);
    same_str("subject", ev->subject, back.subject);
    same_str("datacontenttype", ev->datacontenttype, back.datacontenttype);
    same_str("dataschema", ev->dataschema, back.dataschema);
    FUZZ_CHECK((ev->time == NULL) == (back.time == NULL), "time lost or made up");
    FUZZ_CHECK(ev->time_sec == back.time_sec && ev->time_nsec == back.time_nsec,
               "time %s is %lld.%09d, back %s is %lld.%09d", ev->time ? ev->time : "-",
               (long long)ev->time_sec, (int)ev->time_nsec, back.time ? back.time : "-",
               (long long)back.time_sec, (int)back.time_nsec);
    FUZZ_CHECK(ev->n_ext == back.n_ext, "%zu extensions, %zu back", ev->n_ext, back.n_ext);
    for (size_t i = 0; i < ev->n_ext; i++)
        same_str(ev->ext[i].name, ev->ext[i].value, ext_value(&back, ev->ext[i].name));
    FUZZ_CHECK(ev->data_len == back.data_len &&
                   (ev->data_len == 0 || memcmp(ev->data, back.data, ev->data_len) == 0),
               "data of %zu bytes, back %zu bytes", ev->data_len, back.data_len);
    FUZZ_CHECK((ev->data_kind == EVENT_DATA_NONE) == (back.data_kind == EVENT_DATA_NONE),
               "data kind %d, back %d", (int)ev->data_kind, (int)back.data_kind);

    char *rows = NULL, why[256];
    size_t rlen = 0, rcap = 0;
    FUZZ_CHECK(row_append(buf, len, 0, 0, &rows, &rlen, &rcap, why, sizeof(why)) == 0, "no row: %s", why);
    free(rows);
    ing_event_clear(&back);
    envelope_free(env);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const json_form forms[] = {JSON_FORM_EVENT, JSON_FORM_BATCH, JSON_FORM_ANY, JSON_FORM_NDJSON};
    ing_event_limits lim;
    ing_event_error err;
    ing_event_batch out;

    if (size < 1)
        return 0;
    /* The body is the input's own bytes, not a NUL-terminated copy: ASan sees any read past them. */
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    int mode = data[0] % 5;

    ing_event_limits_default(&lim);
    if (data[0] & 0x80) {
        /* Small limits, so that the fuzzer reaches each of them with small inputs. */
        lim.max_event_bytes = 512;
        lim.max_batch_events = 4;
        lim.max_extensions = 3;
    }
    memset(&err, 0, sizeof(err));
    if (mode == 4) {
        int rc = json_check(body, len, &lim, &err);
        /* Malformed, or JSON that Postgres's jsonb would refuse (invalid_event on data). */
        FUZZ_CHECK(rc == 0 || (rc == -EINVAL && err.message[0] &&
                               (err.code == ING_ERR_MALFORMED_JSON ||
                                (err.code == ING_ERR_INVALID_EVENT && strcmp(err.field, "data") == 0))),
                   "json_check: %d", rc);
        return 0;
    }

    ing_event_batch_init(&out);
    int rc = json_parse_events(body, len, forms[mode], &lim, &out, &err);
    if (rc != 0) {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOMEM, "unexpected %d", rc);
        FUZZ_CHECK(out.n == 0, "a refused request left %zu events", out.n);
        FUZZ_CHECK(rc != -EINVAL || (ing_errcode_name(err.code) != NULL && err.message[0]),
                   "refused without a reason");
    } else {
        FUZZ_CHECK(out.n <= lim.max_batch_events, "%zu events", out.n);
        if (forms[mode] == JSON_FORM_EVENT)
            FUZZ_CHECK(out.n == 1, "one event expected, %zu", out.n);
        for (size_t i = 0; i < out.n; i++) {
            memset(&err, 0, sizeof(err));
            if (ing_event_validate(&out.ev[i], &lim, (long)i, &err) == 0)
                round_trip(&out.ev[i], &lim);
            else
                FUZZ_CHECK(err.index == (long)i && err.message[0], "invalid without a reason");
        }
    }
    ing_event_batch_clear(&out);
    return 0;
}
