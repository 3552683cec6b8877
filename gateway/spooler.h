/*
 * The spool in the gateway (issue 16), --spool=always: every Kafka record of
 * an admitted request is appended to the spool (spool.h) before it is
 * queued, carries its spool sequence number through the producer, and is
 * acked in the spool by its delivery report. What a crash or a stop left
 * unacked is replayed at the next start by a thread of its own, through the
 * shared queue, below half its high-water mark so new traffic keeps room.
 *
 * A spool record is the Kafka record again, in a framing of ours (little-
 * endian, as the spool's): u8 version 1, u8 protocol, u16 topic length, then
 * u32 lengths of key, ce_id, ce_source, ce_type and value; then those bytes
 * in that order, without terminators.
 *
 * ack=persisted: a request's wait (ack_wait.persisted) is reported once the
 * last of its records is durable in the spool (the spool's on_durable), not
 * by Kafka.
 *
 * Damaged ranges the spool reports (at open, or when replay meets one) go to
 * the dead-letter topic, `<--kafka-topic>.dlq`, with an ingest_error header
 * saying what and where.
 */
#ifndef INGEST_GATEWAY_SPOOLER_H
#define INGEST_GATEWAY_SPOOLER_H

#include <stddef.h>
#include <stdint.h>

#include "gateway.h"
#include "producer.h"

struct evbuffer;
typedef struct gw_spooler gw_spooler;

/* The framing's fixed part: version, protocol, topic length, five u32 lengths. */
#define GW_SPOOL_HEAD 24

/*
 * Open --spool-dir (nothing to do, 0 and *out NULL, with --spool=off). 0, or
 * a negative errno value with one sentence in err (the directory cannot be
 * used, or another process holds it).
 */
int gw_spooler_open(gateway *gw, gw_spooler **out, char *err, size_t errlen);

/* Deliver through `prod` from here on: dead letters found at open are sent, replay starts. 0 or -1. */
int gw_spooler_start(gw_spooler *s, producer *prod, queue *q, char *err, size_t errlen);

/* Append m's record: 0 and m->spool_seq set; -ENOSPC when full; the spool's error else. */
int gw_spooler_append(gw_spooler *s, produce_msg *m);

/* A spooled record that was never queued (its request was refused): nothing will replay it. */
void gw_spooler_cancel(gw_spooler *s, uint64_t seq);

/* Report w (ack_wait_report) once its persist_seq is durable; at once when it is already. */
void gw_spooler_wait(gw_spooler *s, ack_wait *w);

/* Why the spool makes the gateway not ready (its writer failed), or NULL. */
const char *gw_spooler_not_ready(gw_spooler *s);

void gw_spooler_metrics(gw_spooler *s, struct evbuffer *out);

/*
 * The stop, Kafka away: wait timeout_ms at most for every record appended so
 * far to be durable. 1 when it is (what is queued or in librdkafka's buffer
 * may then be left to the next start's replay), 0 when not (time is up, or
 * the writer failed).
 */
int gw_spooler_settle(gw_spooler *s, int timeout_ms);

/* Records in the spool Kafka has not acknowledged. */
uint64_t gw_spooler_records(gw_spooler *s);

/* Stop the replay thread (before the queue is freed). Any number of times. */
void gw_spooler_stop_replay(gw_spooler *s);

/* After the producer is freed (its last reports ack): close the spool. NULL: nothing. */
void gw_spooler_free(gw_spooler *s);

/* The framing, for tests: encode m (the bytes needed in *len, buf NULL: only the size) and decode back. */
size_t gw_spool_encode(const produce_msg *m, const char *topic, uint8_t *buf);
/* A new produce_msg from a spool record (topic NULL when it is `dflt_topic`); NULL when malformed or no
 * memory (*malformed says which). */
produce_msg *gw_spool_decode(const void *data, size_t len, const char *dflt_topic, int *malformed);

#endif
