/*
 * jansson adapter: json_loadb with duplicate keys refused and \u0000 allowed
 * (the contract accepts it in data); jansson itself checks UTF-8 and EOF.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bench.h"

#define LOAD_FLAGS (JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY)
#define DUMP_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY)

static char *dump(const json_t *v, size_t *n)
{
    size_t size = json_dumpb(v, NULL, 0, DUMP_FLAGS);
    char *p = malloc(size + 1);

    *n = json_dumpb(v, p, size, DUMP_FLAGS);
    p[*n] = '\0';
    return p;
}

static int roundtrip(const char *buf, size_t len, char **out, size_t *out_len, char *msg, size_t msglen)
{
    json_error_t e;
    json_t *root = json_loadb(buf, len, LOAD_FLAGS, &e);

    if (root == NULL) {
        snprintf(msg, msglen, "%s at byte %d", e.text, e.position);
        return -1;
    }
    *out = dump(root, out_len);
    json_decref(root);
    return 0;
}

static void copy_out(const char *s, size_t n, size_t *sink)
{
    char *p = malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    *sink += n + (size_t)p[0];
    free(p);
}

static int walk_event(json_t *ev, size_t *sink)
{
    const char *key;
    json_t *val;
    char num[32];
    char *s;
    size_t n;

    if (!json_is_object(ev))
        return -1;
    json_object_foreach(ev, key, val)
    {
        if (strcmp(key, "data") == 0) {
            s = dump(val, &n);
            *sink += n;
            free(s);
            continue;
        }
        switch (json_typeof(val)) {
        case JSON_STRING: copy_out(json_string_value(val), json_string_length(val), sink); break;
        case JSON_INTEGER:
            n = (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(val));
            copy_out(num, n, sink);
            break;
        case JSON_REAL:
            s = dump(val, &n);
            copy_out(s, n, sink);
            free(s);
            break;
        case JSON_TRUE: copy_out("true", 4, sink); break;
        case JSON_FALSE: copy_out("false", 5, sink); break;
        default: return -1;
        }
    }
    return 0;
}

static long walk(const char *buf, size_t len, size_t *sink)
{
    json_error_t e;
    json_t *root = json_loadb(buf, len, LOAD_FLAGS, &e);
    long n = -1;

    if (root == NULL)
        return -1;
    if (json_is_array(root)) {
        size_t i;
        json_t *ev;
        json_array_foreach(root, i, ev)
        {
            if (walk_event(ev, sink) != 0)
                goto out;
        }
        n = (long)json_array_size(root);
    } else if (walk_event(root, sink) == 0) {
        n = 1;
    }
out:
    json_decref(root);
    return n;
}

const bench_lib bench_lib_under_test = {
    .name = "jansson " JANSSON_VERSION,
    .config = "json_loadb JSON_REJECT_DUPLICATES|JSON_ALLOW_NUL|JSON_DECODE_ANY; "
              "dump JSON_COMPACT|JSON_ENCODE_ANY",
    .roundtrip = roundtrip,
    .walk = walk,
    .walk_is_library = 1,
};
