/*
 * common/wire: the direct protobuf decoder against protobuf-c, as
 * tests/unit/test_wire.c compares them, on whatever bytes the fuzzer makes.
 * The first byte chooses a CloudEvent (default or small limits) or a
 * PublishRequest; for each input both must refuse the bytes, or fail the
 * same way (code, field, message, index), or give the same event.
 */
#include <errno.h>
#include <string.h>

#include "envelope.h"
#include "fuzz.h"
#include "ingest/v1/ingest.pb-c.h"
#include "wire.h"

static void same_str(const char *what, const char *a, const char *b)
{
    FUZZ_CHECK((a == NULL) == (b == NULL) && (a == NULL || strcmp(a, b) == 0),
               "%s: protobuf-c \"%s\", wire \"%s\"", what, a ? a : "(null)", b ? b : "(null)");
}

static void same_event(const ing_event *a, const ing_event *b)
{
    same_str("id", a->id, b->id);
    same_str("source", a->source, b->source);
    same_str("specversion", a->specversion, b->specversion);
    same_str("type", a->type, b->type);
    same_str("subject", a->subject, b->subject);
    same_str("time", a->time, b->time);
    same_str("datacontenttype", a->datacontenttype, b->datacontenttype);
    same_str("dataschema", a->dataschema, b->dataschema);
    FUZZ_CHECK(a->n_ext == b->n_ext, "extensions: protobuf-c %zu, wire %zu", a->n_ext, b->n_ext);
    for (size_t i = 0; i < a->n_ext; i++) {
        same_str("extension name", a->ext[i].name, b->ext[i].name);
        same_str("extension value", a->ext[i].value, b->ext[i].value);
    }
    FUZZ_CHECK(a->data_kind == b->data_kind, "data kind: protobuf-c %d, wire %d", (int)a->data_kind,
               (int)b->data_kind);
    FUZZ_CHECK(a->data_len == b->data_len && (a->data_len == 0 || memcmp(a->data, b->data, a->data_len) == 0),
               "data: protobuf-c %zu bytes, wire %zu", a->data_len, b->data_len);
}

static void compare_event(const Ingest__V1__CloudEvent *ce, const uint8_t *buf, size_t len,
                          const ing_event_limits *lim)
{
    ing_event a, b;
    ing_event_error ea, eb;

    ing_event_init(&a);
    ing_event_init(&b);
    memset(&ea, 0, sizeof(ea));
    memset(&eb, 0, sizeof(eb));
    int ra = ce ? ing_event_from_proto(ce, &a, lim, &ea) : -EBADMSG;
    int rb = ing_event_from_wire(buf, len, &b, lim, &eb);
    FUZZ_CHECK(ra == rb, "protobuf-c path %d, wire %d (%zu bytes)", ra, rb, len);
    if (ra == -EINVAL) {
        FUZZ_CHECK(ea.code == eb.code && ea.index == eb.index, "error code or index differ");
        same_str("error field", ea.field, eb.field);
        same_str("error message", ea.message, eb.message);
    } else if (ra == 0) {
        same_event(&a, &b);
        /* Validation sees the same event, so it must say the same. */
        int va = ing_event_validate(&a, lim, 0, &ea), vb = ing_event_validate(&b, lim, 0, &eb);
        FUZZ_CHECK(va == vb, "validation: protobuf-c %d, wire %d", va, vb);
    }
    /* Checking only (ev NULL) must agree with decoding. */
    FUZZ_CHECK((ing_event_from_wire(buf, len, NULL, lim, NULL) == -EBADMSG) == (rb == -EBADMSG),
               "the check and the decoder disagree");
    ing_event_clear(&a);
    ing_event_clear(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ing_event_limits lim;

    if (size < 1)
        return 0;
    const uint8_t *buf = data + 1;
    size_t len = size - 1;

    ing_event_limits_default(&lim);
    if (data[0] & 0x80) {
        lim.max_event_bytes = 512;
        lim.max_extensions = 3;
    }
    if ((data[0] & 1) == 0) {
        Ingest__V1__CloudEvent *ce = ingest__v1__cloud_event__unpack(NULL, len, buf);
        compare_event(ce, buf, len, &lim);
        if (ce)
            ingest__v1__cloud_event__free_unpacked(ce, NULL);
        return 0;
    }

    Ingest__V1__PublishRequest *req = ingest__v1__publish_request__unpack(NULL, len, buf);
    wire_request w;
    int rc = publish_request_from_wire(buf, len, &w);
    FUZZ_CHECK((req == NULL) == (rc == -EBADMSG), "request: protobuf-c %s, wire %d",
               req ? "read it" : "refused", rc);
    if (req == NULL)
        return 0;
    FUZZ_CHECK(rc == 0, "wire %d", rc);
    FUZZ_CHECK(w.seq == req->seq && w.ack == (int32_t)req->ack && w.n_events == req->n_events,
               "seq, ack or event count differ");
    size_t pos = 0, i = 0, ev_len;
    const uint8_t *ev;
    while (wire_request_next_event(&w, &pos, &ev, &ev_len)) {
        FUZZ_CHECK(i < req->n_events, "more events than protobuf-c's %zu", req->n_events);
        compare_event(req->events[i++], ev, ev_len, &lim);
    }
    FUZZ_CHECK(i == req->n_events, "%zu events, protobuf-c %zu", i, req->n_events);
    ingest__v1__publish_request__free_unpacked(req, NULL);
    return 0;
}
