/* The memory budget's shares and counters: see budget.h. */
#include "budget.h"

#include <stdio.h>

int gw_budget_init(gw_budget *b, size_t total, size_t max_request, char *errbuf, size_t errlen)
{
    b->total = total;
    b->kafka = total / 4;
    b->queued = total / 4;
    b->inbound = total - b->kafka - b->queued;
    b->conn_share = b->inbound / 8;
    if (b->conn_share < max_request) {
        snprintf(
            errbuf, errlen,
            "memory budget %zu is too small for requests of %zu bytes: a connection's share is 1/16 of it "
            "(raise --memory-budget to at least %zu, or lower --max-request-bytes)",
            total, max_request, max_request * 16);
        return -1;
    }
    atomic_init(&b->queued_used, 0);
    atomic_init(&b->inbound_used, 0);
    atomic_init(&b->inbound_peak, 0);
    return 0;
}

static void note_peak(gw_budget *b, size_t used)
{
    size_t peak = atomic_load_explicit(&b->inbound_peak, memory_order_relaxed);
    while (used > peak && !atomic_compare_exchange_weak_explicit(&b->inbound_peak, &peak, used,
                                                                 memory_order_relaxed, memory_order_relaxed))
        ;
}

int gw_budget_take_inbound(gw_budget *b, size_t n)
{
    size_t used = atomic_load_explicit(&b->inbound_used, memory_order_relaxed);

    do {
        /* Held bytes (gw_budget_hold_inbound) may have passed the share. */
        if (used >= b->inbound || n > b->inbound - used)
            return -1;
    } while (!atomic_compare_exchange_weak_explicit(&b->inbound_used, &used, used + n, memory_order_relaxed,
                                                    memory_order_relaxed));
    note_peak(b, used + n);
    return 0;
}

void gw_budget_hold_inbound(gw_budget *b, size_t n)
{
    note_peak(b, atomic_fetch_add_explicit(&b->inbound_used, n, memory_order_relaxed) + n);
}

int gw_budget_inbound_full(const gw_budget *b)
{
    return atomic_load_explicit(&b->inbound_used, memory_order_relaxed) >= b->inbound;
}

void gw_budget_give_inbound(gw_budget *b, size_t n)
{
    atomic_fetch_sub_explicit(&b->inbound_used, n, memory_order_relaxed);
}

void gw_budget_add_queued(gw_budget *b, size_t n)
{
    atomic_fetch_add_explicit(&b->queued_used, n, memory_order_relaxed);
}

void gw_budget_sub_queued(gw_budget *b, size_t n)
{
    atomic_fetch_sub_explicit(&b->queued_used, n, memory_order_relaxed);
}

int gw_budget_queued_full(const gw_budget *b)
{
    return atomic_load_explicit(&b->queued_used, memory_order_relaxed) >= b->queued;
}
