/*
 * The JSON library benchmark's seam: one adapter per candidate library.
 *
 * json-c and jansson export functions of the same name (json_object_get,
 * json_object_iter_next, ...), so one program cannot link both. Each adapter
 * is linked into its own worker (bench_json_<lib>), which prints
 * tab-separated results; bench_json runs the workers and prints the table.
 */
#ifndef BENCH_JSON_H
#define BENCH_JSON_H

#include <stddef.h>

/* The deepest nesting each adapter is configured to accept (json-c's is a parameter). */
#define BENCH_MAX_DEPTH 128

typedef struct bench_lib {
    const char *name;   /* "json-c" */
    const char *config; /* the flags the gateway would use, for the report */

    /*
     * Parse one whole document strictly, as the gateway would, and serialize
     * it back compactly. 0 with a malloc'd *out, or -1 with msg filled.
     */
    int (*roundtrip)(const char *buf, size_t len, char **out, size_t *out_len, char *msg, size_t msglen);

    /*
     * Do what the gateway does with a request: parse one CloudEvent or an
     * array of them, walk every member, copy attributes out as strings and
     * re-serialize `data`. Returns the number of events, or -1. Adds the
     * bytes produced to *sink so the work cannot be optimized away.
     */
    long (*walk)(const char *buf, size_t len, size_t *sink);

    /* 1 when walk() parses a whole array as one tree (a library), so its peak memory means something. */
    int walk_is_library;
} bench_lib;

extern const bench_lib bench_lib_under_test;

#endif
