/*
 * json-c adapter: strict tokener with UTF-8 validation, bounded depth, and a
 * check that nothing but whitespace follows the value.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "bench.h"

#define FLAGS       (JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8)
#define PRINT_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* 0 with *root (NULL for a JSON null), or -1 with msg. */
static int parse(const char *buf, size_t len, json_object **root, char *msg, size_t msglen)
{
    json_tokener *tok;
    json_object *o;
    enum json_tokener_error e;
    size_t end;

    *root = NULL;
    if (len > INT_MAX) {
        snprintf(msg, msglen, "input too long");
        return -1;
    }
    if ((tok = json_tokener_new_ex(BENCH_MAX_DEPTH)) == NULL) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    json_tokener_set_flags(tok, FLAGS);
    o = json_tokener_parse_ex(tok, buf, (int)len);
    e = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    if (e == json_tokener_continue) {
        /* "42" may yet become "421": a NUL tells json-c the input has ended. */
        o = json_tokener_parse_ex(tok, "", 1);
        e = json_tokener_get_error(tok);
        end = len;
        if (e == json_tokener_continue)
            e = json_tokener_error_parse_eof;
    }
    if (e != json_tokener_success) {
        snprintf(msg, msglen, "%s at byte %zu", json_tokener_error_desc(e), end);
        json_object_put(o);
        json_tokener_free(tok);
        return -1;
    }
    json_tokener_free(tok);
    for (size_t i = end; i < len; i++) {
        if (!is_ws(buf[i])) {
            snprintf(msg, msglen, "trailing characters at byte %zu", i);
            json_object_put(o);
            return -1;
        }
    }
    *root = o;
    return 0;
}

static int roundtrip(const char *buf, size_t len, char **out, size_t *out_len, char *msg, size_t msglen)
{
    json_object *root;
    const char *s;
    size_t n;

    if (parse(buf, len, &root, msg, msglen) != 0)
        return -1;
    s = json_object_to_json_string_length(root, PRINT_FLAGS, &n);
    *out = malloc(n + 1);
    memcpy(*out, s, n + 1);
    *out_len = n;
    json_object_put(root);
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

static int walk_event(json_object *ev, size_t *sink)
{
    if (!json_object_is_type(ev, json_type_object))
        return -1;
    json_object_object_foreach(ev, key, val)
    {
        const char *s;
        size_t n;

        if (strcmp(key, "data") == 0) {
            s = json_object_to_json_string_length(val, PRINT_FLAGS, &n);
            copy_out(s, n, sink);
            continue;
        }
        switch (json_object_get_type(val)) {
        case json_type_string:
            copy_out(json_object_get_string(val), (size_t)json_object_get_string_len(val), sink);
            break;
        case json_type_int:
        case json_type_double:
        case json_type_boolean:
            s = json_object_to_json_string_length(val, PRINT_FLAGS, &n);
            copy_out(s, n, sink);
            break;
        default: return -1;
        }
    }
    return 0;
}

static long walk(const char *buf, size_t len, size_t *sink)
{
    json_object *root;
    char msg[128];
    long n = -1;

    if (parse(buf, len, &root, msg, sizeof(msg)) != 0)
        return -1;
    if (json_object_is_type(root, json_type_array)) {
        size_t count = json_object_array_length(root);
        for (size_t i = 0; i < count; i++)
            if (walk_event(json_object_array_get_idx(root, i), sink) != 0)
                goto out;
        n = (long)count;
    } else if (walk_event(root, sink) == 0) {
        n = 1;
    }
out:
    json_object_put(root);
    return n;
}

const bench_lib bench_lib_under_test = {
    .name = "json-c " JSON_C_VERSION,
    .config = "json_tokener_new_ex(128), JSON_TOKENER_STRICT|JSON_TOKENER_VALIDATE_UTF8; "
              "print JSON_C_TO_STRING_PLAIN|NOSLASHESCAPE",
    .roundtrip = roundtrip,
    .walk = walk,
    .walk_is_library = 1,
};
