/*
 * The Kafka side of the gateway: worker threads drain the shared queue into
 * a librdkafka producer, and delivery reports find their way back to the
 * request that is waiting for them.
 *
 * A request that waits (ack=committed) owns an ack_wait. Each of its
 * messages carries a pointer to it; each delivery report counts it down on
 * librdkafka's thread, atomically; the last one posts it to the inbox of the
 * event loop that made it, which answers the client on its own thread. So
 * no lock is ever taken on loop-owned state, and the loop never blocks.
 *
 * A waiter without an event loop (gRPC: the C core's calls are thread-safe
 * and it polls its own sockets) makes its waits with no inbox: done() then
 * runs directly on the thread that counts the last report, and the waiter
 * guards its own state.
 */
#ifndef INGEST_PRODUCER_H
#define INGEST_PRODUCER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "budget.h"
#include "config.h"
#include "event.h"
#include "kafka.h"
#include "queue.h"

struct event_base;
typedef struct ack_inbox ack_inbox;

typedef struct ack_wait {
    atomic_uint remaining; /* delivery reports still to come */
    atomic_int error;      /* the first failure's rd_kafka_resp_err_t, or 0; MSG_SIZE_TOO_LARGE wins */
    /* With MSG_SIZE_TOO_LARGE: the refused record's bytes, and the limit it broke (0: not known). */
    atomic_size_t too_large, too_large_limit;
    ack_inbox *inbox; /* the loop that gets it back; NULL: done() runs on the reporting thread */
    /* ack=persisted with a spool: reported once this spool sequence number is durable, not by Kafka. */
    int persisted;
    uint64_t persist_seq;
    struct ack_wait *next; /* inbox link */
    /* Loop-owned from here on: only the inbox's loop touches these (or done(), without an inbox). */
    void (*done)(struct ack_wait *w); /* called on the loop when remaining reaches 0 */
    void *ctx;                        /* the waiter's; NULL once it stopped waiting */
} ack_wait;

/*
 * A wait for n delivery reports, handed back to `inbox`'s loop, where
 * done(w) runs once all have come. With inbox NULL, done(w) runs at once on
 * the thread that counts the last report (librdkafka's delivery report
 * thread, or a producer worker when librdkafka refuses a message): it must
 * be quick and take only its own locks. done() owns w and frees it with
 * ack_wait_free(). NULL on no memory.
 */
ack_wait *ack_wait_new(unsigned n, ack_inbox *inbox, void (*done)(ack_wait *w), void *ctx);
void ack_wait_free(ack_wait *w);

/*
 * Count one delivery report (any thread). On the last, posts w to its inbox, or runs done(w) without one.
 * A record too large for Kafka makes the wait's error MSG_SIZE_TOO_LARGE whatever else failed: a retry
 * can never take it, so the request must not be told to retry.
 */
void ack_wait_report(ack_wait *w, rd_kafka_resp_err_t err);
/* The same for a record refused for its size: `bytes` of it, over `limit` (0: not known). */
void ack_wait_report_too_large(ack_wait *w, size_t bytes, size_t limit);

/*
 * What a client is told about a wait that ended in MSG_SIZE_TOO_LARGE:
 * "an event is too large for the Kafka topic (...)", into buf.
 */
void ack_wait_too_large_text(size_t bytes, size_t limit, char *buf, size_t size);

/*
 * An inbox on an event loop (any thread may post; done() callbacks run on
 * the loop). NULL on failure. Free it only after every wait posted to it
 * has come back (the producer is destroyed).
 */
ack_inbox *ack_inbox_new(struct event_base *base);
void ack_inbox_free(ack_inbox *inbox);
/* Run done() for everything posted so far, on the calling (loop) thread. */
void ack_inbox_drain(ack_inbox *inbox);

/*
 * One Kafka record on its way: what the queue carries. One allocation holds
 * it all (the struct, key and header values, then the Envelope), freed once
 * librdkafka has copied what it keeps: a message costs the front end one
 * malloc, and nothing of it is freed on librdkafka's threads.
 */
typedef struct produce_msg {
    ack_wait *wait;     /* NULL when nobody waits (ack=accepted) */
    int protocol;       /* envelope_protocol: whose drop it is when nobody waits */
    uint64_t spool_seq; /* its record in the spool (spooler.h), acked on delivery; 0: not spooled */
    const char *topic;  /* a replayed record's topic when not the producer's; NULL: the producer's */
    uint8_t *value;     /* the Envelope, inside this allocation */
    size_t value_len;
    const char *key;
    const char *ce_id, *ce_source, *ce_type;
    size_t key_len, ce_id_len, ce_source_len, ce_type_len;
    size_t held;    /* bytes of the allocation: what it counts in the budget's queued share */
    char strings[]; /* key and header values, then the Envelope */
} produce_msg;

/*
 * A message for a validated event with an id: encodes the Envelope (with
 * the sender's principal name; NULL: none). NULL on no memory or an event
 * that cannot be encoded.
 */
produce_msg *produce_msg_new(const ing_event *ev, int64_t received_unix_nanos, int protocol, const char *peer,
                             const char *gateway_id, const char *principal, ack_wait *wait);
void produce_msg_free(produce_msg *m);

typedef struct producer producer;

typedef struct producer_stats {
    atomic_uint_fast64_t produced;  /* handed to librdkafka */
    atomic_uint_fast64_t delivered; /* acknowledged by Kafka */
    atomic_uint_fast64_t failed;    /* refused by librdkafka or not delivered */
} producer_stats;

/*
 * The message.max.bytes that lets every event within max_event_bytes and
 * max_extensions through librdkafka, from a gateway with this id: the
 * largest Envelope (envelope_max_size()), the key and headers (attributes of
 * the event, so within max_event_bytes again, the source perhaps twice),
 * and room for a record's and a batch's framing. The topic's
 * max.message.bytes must be at least as much.
 */
size_t producer_max_message_bytes(size_t max_event_bytes, size_t max_extensions, const char *gateway_id);

/*
 * Start `threads` workers draining `q` into a producer for `topic`, with the
 * contract's defaults and the operator's kafka.* properties, and a thread
 * serving delivery reports. message_max_bytes sets librdkafka's
 * message.max.bytes unless the operator did (0: librdkafka's default).
 * NULL with the reason in errbuf.
 */
producer *producer_new(queue *q, gw_budget *budget, const char *bootstrap, const char *topic,
                       const config_props *props, int threads, size_t message_max_bytes, char *errbuf,
                       size_t errlen);

/* The message.max.bytes librdkafka was given: the largest record it takes. */
size_t producer_message_max_bytes(const producer *p);

/*
 * A record nobody waited for (ack=accepted, UDP) refused for its size: the
 * gateway counts it as a drop. Runs on a producer or librdkafka thread; set
 * it before any message is queued.
 */
void producer_on_too_large(producer *p, void (*cb)(void *arg, int protocol), void *arg);

/*
 * With a spool: cb(arg, seq, err) for every delivery report (or refusal) of a
 * record with a spool_seq, on a producer or librdkafka thread. Set it before
 * any message is queued.
 */
void producer_on_spooled(producer *p, void (*cb)(void *arg, uint64_t seq, rd_kafka_resp_err_t err),
                         void *arg);

/*
 * Ask the broker for the topic's max.message.bytes, waiting timeout_ms at
 * most. Returns it (and keeps it for the messages of too_large refusals), or
 * 0 when no answer came. The caller compares it with
 * producer_message_max_bytes().
 */
size_t producer_topic_max_bytes(producer *p, int timeout_ms);

/*
 * Stop: the queue must be closed already. Workers hand what is left in it to
 * librdkafka, which then has until timeout_ms to deliver everything. Returns
 * the count of messages still undelivered (0 when all got through).
 */
int producer_stop(producer *p, int timeout_ms);
void producer_free(producer *p);

const producer_stats *producer_get_stats(const producer *p);
rd_kafka_t *producer_handle(producer *p);

#endif
