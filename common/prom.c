#include "prom.h"

#include <inttypes.h>
#include <time.h>

#include <event2/buffer.h>

/* Upper bounds in ns, and as Prometheus reads them. */
static const uint64_t bucket_ns[PROM_LATENCY_BUCKETS] = {
    500000,    1000000,   2500000,   5000000,    10000000,   25000000,   50000000,
    100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};
static const char *const bucket_le[PROM_LATENCY_BUCKETS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "10",
};

void prom_family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void prom_sample_u64(struct evbuffer *out, const char *name, const char *labels, uint64_t v)
{
    if (labels && *labels)
        evbuffer_add_printf(out, "%s{%s} %" PRIu64 "\n", name, labels, v);
    else
        evbuffer_add_printf(out, "%s %" PRIu64 "\n", name, v);
}

void prom_sample_f64(struct evbuffer *out, const char *name, const char *labels, double v)
{
    if (labels && *labels)
        evbuffer_add_printf(out, "%s{%s} %.9g\n", name, labels, v);
    else
        evbuffer_add_printf(out, "%s %.9g\n", name, v);
}

void prom_histogram_observe_n(prom_histogram *h, uint64_t ns, uint64_t n)
{
    int i = 0;

    while (i < PROM_LATENCY_BUCKETS && ns > bucket_ns[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], n, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns * n, memory_order_relaxed);
}

void prom_histogram_observe(prom_histogram *h, uint64_t ns)
{
    prom_histogram_observe_n(h, ns, 1);
}

void prom_histogram_write(struct evbuffer *out, const char *name, const char *labels, const prom_histogram *h)
{
    const char *sep = labels && *labels ? "," : "";
    uint64_t cum = 0;

    if (labels == NULL)
        labels = "";
    /*
     * Buckets, sum and count are read one by one while others may observe:
     * make the count the buckets' total, so a scrape is never inconsistent
     * within itself (at worst the sum is one observation ahead).
     */
    for (int i = 0; i < PROM_LATENCY_BUCKETS; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", name, labels, sep, bucket_le[i],
                            cum);
    }
    cum += atomic_load_explicit(&h->bucket[PROM_LATENCY_BUCKETS], memory_order_relaxed);
    evbuffer_add_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, cum);
    evbuffer_add_printf(out, "%s_sum%s%s%s %.9f\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
                        (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9);
    evbuffer_add_printf(out, "%s_count%s%s%s %" PRIu64 "\n", name, *labels ? "{" : "", labels,
                        *labels ? "}" : "", cum);
}

uint64_t prom_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
