#include "batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "row.h"

void batch_init(batch *b)
{
    memset(b, 0, sizeof(*b));
}

static void *dup_bytes(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);

    if (q && n)
        memcpy(q, p, n);
    return q;
}

int batch_add(batch *b, int32_t partition, int64_t offset, const void *key, size_t key_len, const void *value,
              size_t value_len)
{
    char why[256];

    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        batch_rec *r = realloc(b->rec, cap * sizeof(*r));
        if (r == NULL)
            return -ENOMEM;
        b->rec = r;
        b->cap = cap;
    }
    batch_rec *r = &b->rec[b->n];
    memset(r, 0, sizeof(*r));
    r->partition = partition;
    r->offset = offset;
    r->key_len = key ? key_len : 0;
    r->value_len = value ? value_len : 0;
    if ((r->key = dup_bytes(key, r->key_len)) == NULL ||
        (r->value = dup_bytes(value, r->value_len)) == NULL) {
        free(r->key);
        return -ENOMEM;
    }
    r->line_off = b->copy_len;
    int rc = row_append(r->value, r->value_len, partition, offset, &b->copy, &b->copy_len, &b->copy_cap, why,
                        sizeof(why));
    if (rc == -ENOMEM) {
        free(r->key);
        free(r->value);
        return rc;
    }
    if (rc != 0) {
        /* Without its reason it would be neither a row nor a dead letter: its offset would pass it by. */
        if ((r->dead = strdup(why)) == NULL) {
            free(r->key);
            free(r->value);
            return -ENOMEM;
        }
        LOG_WARN("sink", "dead letter partition=%d offset=%lld: %s", (int)partition, (long long)offset, why);
    } else {
        r->line_len = b->copy_len - r->line_off;
        b->rows++;
    }
    b->n++;
    return 0;
}

void batch_clear(batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->rec[i].key);
        free(b->rec[i].value);
        free(b->rec[i].dead);
    }
    b->n = 0;
    b->rows = 0;
    b->inserted = 0;
    b->copy_len = 0;
}

void batch_free(batch *b)
{
    batch_clear(b);
    free(b->rec);
    free(b->copy);
    batch_init(b);
}
