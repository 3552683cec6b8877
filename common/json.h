/*
 * JSON in all the contract's forms: one event, an array (batch), NDJSON; data
 * as `data` (any JSON value) or `data_base64` (bytes). Strict: malformed JSON,
 * invalid UTF-8, wrong types and trailing garbage are errors, never crashes.
 */
#ifndef INGEST_JSON_H
#define INGEST_JSON_H

#include <stddef.h>

#include "event.h"

typedef enum json_form {
    JSON_FORM_EVENT,  /* exactly one object */
    JSON_FORM_BATCH,  /* an array of objects */
    JSON_FORM_ANY,    /* an object or an array (application/json) */
    JSON_FORM_NDJSON, /* one object per line; blank lines are skipped */
} json_form;

/*
 * Parse `len` bytes of `buf` in `form`, appending events to `out` (which the
 * caller owns and clears). Events are parsed, not validated: call
 * ing_event_validate() on each. A JSON null for an attribute means unset, as the
 * CloudEvents JSON format says; `data: null` means no data.
 * Returns 0, or -EINVAL with err filled:
 * ING_ERR_MALFORMED_JSON (with index when inside one event of a batch),
 * ING_ERR_INVALID_EVENT (a wrong type: `source` a number, `data_base64` not
 * base64, both `data` and `data_base64`, a duplicate member),
 * ING_ERR_TOO_MANY_EVENTS (more than lim->max_batch_events), or
 * ING_ERR_TOO_LARGE (one event's text over lim->max_event_bytes, or more
 * objects in it than that allows for: a bound on the memory a consumer that
 * builds a tree of it spends, hundreds of bytes an object in common libraries).
 * -ENOMEM on allocation failure. On failure `out` is left as it came.
 */
int json_parse_events(const char *buf, size_t len, json_form form, const ing_event_limits *lim,
                      ing_event_batch *out, ing_event_error *err);

/*
 * Check that `len` bytes are exactly one JSON value under the same strict
 * rules, as an event's data (binary-mode HTTP bodies with a JSON content type,
 * protobuf text_data said to be JSON): as for a `data` member, integers need
 * not fit 64 bits, and what Postgres's jsonb refuses is refused (a number
 * beyond its numeric, \u0000 in a string). 0, or -EINVAL with err filled
 * (ING_ERR_MALFORMED_JSON, or ING_ERR_INVALID_EVENT for what is JSON but
 * cannot be stored).
 */
int json_check(const char *buf, size_t len, const ing_event_limits *lim, ing_event_error *err);

#endif
