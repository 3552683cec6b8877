/*
 * The event model: one CloudEvents 1.0 event as every front end (HTTP, UDP,
 * gRPC) hands it to validation, and as the Envelope encoder reads it.
 *
 * Front ends parse into an ing_event, call ing_event_validate(), then encode.
 * Validation and normalization live here once, so the three protocols accept
 * and refuse exactly the same events with the same messages.
 */
#ifndef INGEST_EVENT_H
#define INGEST_EVENT_H

#include <stddef.h>
#include <stdint.h>

/* Fixed by the contract. */
#define EVENT_EXT_NAME_MAX 20   /* bytes in an extension name */
#define EVENT_ATTR_MAX     1024 /* bytes in source and type */
#define EVENT_ID_LEN       36   /* textual UUID, as assigned by the gateway */

/* Configurable limits; ing_event_limits_default() gives the contract's. */
typedef struct ing_event_limits {
    size_t max_event_bytes;   /* one event, attributes and data: 1 MiB */
    size_t max_request_bytes; /* one decoded request body: 8 MiB */
    size_t max_batch_events;  /* events in one request: 10,000 */
    size_t max_extensions;    /* extensions in one event: 64 */
} ing_event_limits;

void ing_event_limits_default(ing_event_limits *lim);

typedef enum ing_event_data_kind {
    EVENT_DATA_NONE = 0,
    EVENT_DATA_JSON,   /* data holds JSON text (a JSON `data` member) */
    EVENT_DATA_TEXT,   /* data holds UTF-8 text (protobuf text_data) */
    EVENT_DATA_BINARY, /* data holds bytes (data_base64, binary mode) */
} ing_event_data_kind;

typedef struct ing_event_ext {
    char *name;  /* lower-case a-z0-9, 1..20 bytes */
    char *value; /* strings, numbers and booleans all travel as strings */
} ing_event_ext;

/*
 * One event. Every string is NUL-terminated, owned by the event, and NULL
 * when the attribute is absent. ing_event_clear() frees them all. A parser that
 * knows how many bytes the event's strings take can give it one block for
 * them all first (ing_event_reserve()), instead of an allocation per attribute.
 */
typedef struct ing_event {
    char *id;
    char *source;
    char *specversion;
    char *type;
    char *subject;
    char *time; /* RFC 3339, as given */
    char *datacontenttype;
    char *dataschema;

    ing_event_ext *ext;
    size_t n_ext;
    size_t cap_ext;

    ing_event_data_kind data_kind;
    unsigned char *data; /* owned; NUL-terminated for convenience */
    size_t data_len;

    /*
     * Set by ing_event_validate(): `time` as seconds since the epoch and nanoseconds
     * in [0, 1e9), as a protobuf Timestamp holds it. Not one int64 of
     * nanoseconds: that reaches only 1677 to 2262, and RFC 3339 years 1 to 9999.
     */
    int64_t time_sec;
    int32_t time_nsec;

    /* ing_event_reserve()'s block: strings placed in it are not freed one by one. */
    char *store;
    size_t store_len, store_cap;
} ing_event;

/*
 * What is wrong with an event or a request, as every protocol names it to
 * clients (the HTTP error code, gRPC's EventError.code, the UDP drop reason).
 * An enum, not strings: the gateway maps each to its statuses by table.
 */
typedef enum ing_errcode {
    ING_ERR_NONE = 0,
    ING_ERR_MALFORMED_JSON,
    ING_ERR_MALFORMED_PROTOBUF,
    ING_ERR_INVALID_EVENT,
    ING_ERR_TOO_LARGE,
    ING_ERR_TOO_MANY_EVENTS,
} ing_errcode;

/* Why an event or a request was refused. */
typedef struct ing_event_error {
    ing_errcode code; /* what clients are told, by name (ing_errcode_name()) */
    long index;       /* event index in its request, -1 when not one event's fault */
    char field[64];   /* the attribute at fault ("source", "extensions.foo"), or "" */
    char message[256];
} ing_event_error;

/* The error code machine-readable by name, "invalid_event", ...; NULL for none. */
const char *ing_errcode_name(ing_errcode code);

/* Fill err; returns -EINVAL so callers can `return ing_event_error_set(...)`. */
int ing_event_error_set(ing_event_error *err, ing_errcode code, long index, const char *field,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));

void ing_event_init(ing_event *ev);
void ing_event_clear(ing_event *ev); /* frees every member; the event may be reused after ing_event_init() */

/*
 * Set an attribute by its CloudEvents name ("id", "source", "subject", ...).
 * Unknown names are extensions. Copies `len` bytes of `value`.
 * Returns 0, -ENOMEM, or -EINVAL (filling err) for a duplicate attribute,
 * an invalid extension name, too many extensions or an embedded NUL.
 */
int ing_event_set_attr(ing_event *ev, const char *name, size_t name_len, const char *value, size_t len,
                       const ing_event_limits *lim, ing_event_error *err);

/*
 * Give the event one block of `bytes` for the strings set from now on (each
 * takes its length + 1); what does not fit is allocated alone. For an event
 * without a block yet; 0 or -ENOMEM.
 */
int ing_event_reserve(ing_event *ev, size_t bytes);

/* `len` bytes for the event's own use (data, say): from its block while it has room, else malloc'd. */
unsigned char *ing_event_alloc(ing_event *ev, size_t len);

/* Take ownership of data of the given kind: malloc'd, or from ing_event_alloc(). */
void ing_event_set_data(ing_event *ev, ing_event_data_kind kind, unsigned char *data, size_t len);

/*
 * Check every rule of the contract: required source and type (non-empty, at
 * most 1024 bytes, valid UTF-8), specversion "1.0" when given, RFC 3339 time,
 * extension names and count, the per-event size limit. Sets time_sec and time_nsec.
 * Returns 0 or -EINVAL with err filled (index set to `index`).
 */
int ing_event_validate(ing_event *ev, const ing_event_limits *lim, long index, ing_event_error *err);

/* Assign a fresh UUIDv7 id when the event has none. 0 or -ENOMEM. */
int ing_event_assign_id(ing_event *ev);

/* Replace the event's id, if any, with a fresh UUIDv7 (a benchmark replaying one event). 0 or -ENOMEM. */
int ing_event_new_id(ing_event *ev);

/* Approximate encoded size of the event, for the per-event limit. */
size_t ing_event_size(const ing_event *ev);

/*
 * True when a Content-Type or datacontenttype names JSON: application/json,
 * text/json, or any type ending in "+json"; parameters are ignored. NULL or ""
 * counts as JSON too (the CloudEvents JSON format's default).
 */
int media_type_is_json(const char *ct);

/* True when `s` (len bytes) is well-formed UTF-8 (no overlongs, no surrogates). */
int utf8_valid(const char *s, size_t len);

/* Parse RFC 3339 (years 1 to 9999) into seconds since the epoch and nanoseconds in [0, 1e9). 0 or -EINVAL. */
int rfc3339_parse(const char *s, int64_t *sec, int32_t *nsec);

/* A growable array of events: one request's worth. */
typedef struct ing_event_batch {
    ing_event *ev;
    size_t n;
    size_t cap;
} ing_event_batch;

void ing_event_batch_init(ing_event_batch *b);
/* Append a fresh initialized event; NULL on -ENOMEM. */
ing_event *ing_event_batch_add(ing_event_batch *b);
void ing_event_batch_clear(ing_event_batch *b); /* clears every event, keeps nothing */
void ing_event_batch_reset(ing_event_batch *b); /* clears every event, keeps the array for the next request */

#endif
