/*
 * A batch of consumed records on its way into Postgres: their rows as COPY
 * text, and those that became dead letters (undecodable, or refused by
 * Postgres for their data).
 */
#ifndef INGEST_BATCH_H
#define INGEST_BATCH_H

#include <stddef.h>
#include <stdint.h>

typedef struct batch_rec {
    int32_t partition;
    int64_t offset;
    void *key;
    size_t key_len;
    void *value;
    size_t value_len;
    size_t line_off, line_len; /* its row in `copy`; line_len 0: no row */
    char *dead;                /* why it is a dead letter, or NULL */
} batch_rec;

typedef struct batch {
    batch_rec *rec;
    size_t n, cap;
    char *copy; /* COPY text, one line per row */
    size_t copy_len, copy_cap;
    size_t rows;     /* records with a row */
    size_t inserted; /* set by sink_pg_write_batch(): rows new to `events` (not there already) */
} batch;

void batch_init(batch *b);
/* Add a record (copied); decodes its row or marks it dead. 0 or -ENOMEM. */
int batch_add(batch *b, int32_t partition, int64_t offset, const void *key, size_t key_len, const void *value,
              size_t value_len);
void batch_clear(batch *b); /* empty, keeping memory */
void batch_free(batch *b);

#endif
