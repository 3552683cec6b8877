/* UUIDv7 (RFC 9562): time-ordered ids, so Kafka keys and Postgres indexes stay local. */
#ifndef INGEST_UUID_H
#define INGEST_UUID_H

#define UUID_STR_LEN 37 /* 36 characters and the NUL */

/*
 * Write a new UUIDv7 as lower-case text into out[UUID_STR_LEN]. Ids made by
 * one thread are strictly increasing, also within a millisecond (a 42-bit
 * counter after the timestamp, RFC 9562 method 1). Thread-safe, lock-free.
 */
void uuid_v7(char *out);

/* The same as 16 raw bytes. */
void uuid_v7_bytes(unsigned char out[16]);

#endif
