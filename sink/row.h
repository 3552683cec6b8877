/* One Kafka record as one line of COPY text for the `events` table. */
#ifndef INGEST_ROW_H
#define INGEST_ROW_H

#include <stddef.h>
#include <stdint.h>

/* The columns, in COPY order. */
#define ROW_COLUMNS                                                                                          \
    "source, id, type, subject, time, datacontenttype, dataschema, extensions, data, data_bytes, protocol, " \
    "peer, gateway_id, received_at, kafka_partition, kafka_offset, principal"

/*
 * Decode an Envelope and append its row, in COPY text format with a final
 * newline, to *buf (grown with realloc; *len and *cap track it). Returns 0,
 * -EINVAL with why[] filled when the bytes are not a usable Envelope (a dead
 * letter), -ENOMEM.
 */
int row_append(const uint8_t *value, size_t len, int32_t partition, int64_t offset, char **buf, size_t *blen,
               size_t *bcap, char *why, size_t whylen);

#endif
