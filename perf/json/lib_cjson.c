/*
 * cJSON adapter: cJSON_ParseWithLengthOpts plus a check that nothing but
 * whitespace follows the value; cJSON has no strictness switches.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "bench.h"

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static cJSON *parse(const char *buf, size_t len, char *msg, size_t msglen)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);

    if (root == NULL) {
        snprintf(msg, msglen, "parse error at byte %td", end ? end - buf : (ptrdiff_t)-1);
        return NULL;
    }
    for (const char *p = end; p < buf + len; p++) {
        if (!is_ws(*p)) {
            snprintf(msg, msglen, "trailing characters at byte %td", p - buf);
            cJSON_Delete(root);
            return NULL;
        }
    }
    return root;
}

static int roundtrip(const char *buf, size_t len, char **out, size_t *out_len, char *msg, size_t msglen)
{
    cJSON *root = parse(buf, len, msg, msglen);

    if (root == NULL)
        return -1;
    *out = cJSON_PrintUnformatted(root);
    *out_len = strlen(*out);
    cJSON_Delete(root);
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

static int walk_event(const cJSON *ev, size_t *sink)
{
    const cJSON *val;
    char *s;

    if (!cJSON_IsObject(ev))
        return -1;
    cJSON_ArrayForEach(val, ev)
    {
        if (strcmp(val->string, "data") == 0) {
            s = cJSON_PrintUnformatted(val);
            *sink += strlen(s);
            free(s);
        } else if (cJSON_IsString(val)) {
            copy_out(val->valuestring, strlen(val->valuestring), sink);
        } else if (cJSON_IsNumber(val)) {
            s = cJSON_PrintUnformatted(val);
            copy_out(s, strlen(s), sink);
            free(s);
        } else if (cJSON_IsTrue(val)) {
            copy_out("true", 4, sink);
        } else if (cJSON_IsFalse(val)) {
            copy_out("false", 5, sink);
        } else {
            return -1;
        }
    }
    return 0;
}

static long walk(const char *buf, size_t len, size_t *sink)
{
    char msg[128];
    cJSON *root = parse(buf, len, msg, sizeof(msg));
    long n = -1;

    if (root == NULL)
        return -1;
    if (cJSON_IsArray(root)) {
        const cJSON *ev;
        n = 0;
        cJSON_ArrayForEach(ev, root)
        {
            if (walk_event(ev, sink) != 0) {
                n = -1;
                break;
            }
            n++;
        }
    } else if (walk_event(root, sink) == 0) {
        n = 1;
    }
    cJSON_Delete(root);
    return n;
}

#define STR2(x) #x
#define STR(x)  STR2(x)
const bench_lib bench_lib_under_test = {
    .name = "cJSON " STR(CJSON_VERSION_MAJOR) "." STR(CJSON_VERSION_MINOR) "." STR(CJSON_VERSION_PATCH),
    .config = "cJSON_ParseWithLengthOpts + own trailing-garbage check; print cJSON_PrintUnformatted",
    .roundtrip = roundtrip,
    .walk = walk,
    .walk_is_library = 1,
};
