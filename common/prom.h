/*
 * Prometheus text exposition (format 0.0.4) for the admin port's /metrics.
 *
 * Counters are plain atomics owned by the component that counts; nothing is
 * registered. At scrape time each component writes its families with these
 * helpers. A histogram has fixed buckets and lock-free observation, so a
 * request path pays a few relaxed atomic adds.
 */
#ifndef INGEST_PROM_H
#define INGEST_PROM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* "# HELP" and "# TYPE" lines of one family; type is "counter", "gauge" or "histogram". */
void prom_family(struct evbuffer *out, const char *name, const char *type, const char *help);

/*
 * One sample. `labels` is the text between the braces, already escaped
 * (label values here are our own constants), or NULL for none.
 */
void prom_sample_u64(struct evbuffer *out, const char *name, const char *labels, uint64_t v);
void prom_sample_f64(struct evbuffer *out, const char *name, const char *labels, double v);

/* Latency buckets in seconds: 0.5 ms .. 10 s, the request path's span. */
#define PROM_LATENCY_BUCKETS 14

typedef struct prom_histogram {
    atomic_uint_fast64_t bucket[PROM_LATENCY_BUCKETS + 1]; /* the last one is +Inf */
    atomic_uint_fast64_t sum_ns;
} prom_histogram;

/* Zeroed memory is an empty histogram. Record one duration (any thread). */
void prom_histogram_observe(prom_histogram *h, uint64_t ns);
/* n observations of the same duration at once (a batch handled together). */
void prom_histogram_observe_n(prom_histogram *h, uint64_t ns, uint64_t n);

/* Its _bucket, _sum and _count samples (cumulative buckets, as Prometheus wants). */
void prom_histogram_write(struct evbuffer *out, const char *name, const char *labels,
                          const prom_histogram *h);

/* CLOCK_MONOTONIC in ns, for durations. */
uint64_t prom_now_ns(void);

#endif
