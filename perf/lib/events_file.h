/* The benchmarks' shared corpus: an NDJSON file of CloudEvents, read and parsed once. */
#ifndef INGEST_PERF_EVENTS_FILE_H
#define INGEST_PERF_EVENTS_FILE_H

#include <stddef.h>

#include "event.h"

/*
 * Read `path` and parse it as NDJSON into `out` (initialized by the caller)
 * with json_parse_events(). 0, or -1 with the reason in err (an empty file
 * is an error: a benchmark needs events).
 */
int perf_load_events(const char *path, const ing_event_limits *lim, ing_event_batch *out, char *err,
                     size_t errlen);

#endif
