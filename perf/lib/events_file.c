#include "events_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long size;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out;
    if ((buf = malloc((size_t)size + 1)) == NULL)
        goto out;
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
        goto out;
    }
    buf[size] = '\0';
    *len = (size_t)size;
out:
    fclose(f);
    return buf;
}

int perf_load_events(const char *path, const ing_event_limits *lim, ing_event_batch *out, char *err,
                     size_t errlen)
{
    ing_event_error e;
    size_t len = 0;
    char *text = read_file(path, &len);
    int rc = -1;

    if (text == NULL) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    if (json_parse_events(text, len, JSON_FORM_NDJSON, lim, out, &e) != 0)
        snprintf(err, errlen, "%s: %s", path, e.message);
    else if (out->n == 0)
        snprintf(err, errlen, "%s: no events", path);
    else
        rc = 0;
    free(text);
    return rc;
}
