#include "writer.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "backoff.h"
#include "log.h"
#include "pg.h"
#include "mono.h"

struct sink_writer {
    const char *pg_dsn;
    const char *topic;
    sink_dlq *dlq;
    sink_metrics *metrics;
    backoff retry;
    PGconn *pg; /* the writer thread's own */

    pthread_t tid;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* on CLOCK_MONOTONIC: the consumer waits on it with a timeout */
    batch wb;            /* the writer thread's while wb_full, else empty and the consumer's to swap */
    int wb_full;         /* under lock: wb waits or is being written */
    int quit;            /* under lock */

    atomic_int failing;  /* the last attempt failed: Postgres down or failing */
    atomic_int one_shot; /* a failed attempt drops the batch instead of retrying (drain) */
    atomic_int stopping; /* the same, for good (stop) */
    atomic_int dropped;  /* a batch was dropped: every later one holding the same partitions must go too */
};

/* One attempt at the writer's batch, on the writer thread. 0 when written, -EIO to retry. */
static int write_once(void *arg)
{
    sink_writer *w = arg;
    char err[512];
    PGconn *pg;
    int rc = -EIO;

    if ((pg = sink_pg_connect(&w->pg, w->pg_dsn)) != NULL) {
        if (sink_pg_write_batch(pg, w->topic, &w->wb, sink_dlq_send, w->dlq, err, sizeof(err)) == 0) {
            LOG_DEBUG("sink", "wrote batch records=%zu rows=%zu", w->wb.n, w->wb.rows);
            return 0;
        }
        LOG_WARN("pg", "batch of %zu not written: %s", w->wb.n, err);
    }
    atomic_fetch_add(&w->metrics->failures, 1);
    atomic_store(&w->failing, 1);
    return rc;
}

static int gives_up(void *arg)
{
    sink_writer *w = arg;

    return atomic_load(&w->one_shot) || atomic_load(&w->stopping);
}

/* A committed batch: count it, and move each of its partitions' next offset on. */
static void count_written(sink_metrics *m, const batch *b, uint64_t started_ns)
{
    size_t dead = 0, live = 0;

    for (size_t i = 0; i < b->n; i++) {
        dead += b->rec[i].dead != NULL;
        live += b->rec[i].line_len && !b->rec[i].dead;
    }
    atomic_fetch_add(&m->batches, 1);
    atomic_fetch_add(&m->records, b->n);
    atomic_fetch_add(&m->rows, b->inserted);
    atomic_fetch_add(&m->duplicates, live > b->inserted ? live - b->inserted : 0);
    atomic_fetch_add(&m->dead, dead);
    prom_histogram_observe(&m->batch_duration, prom_now_ns() - started_ns);
    /* A partition's records come in offset order: the end of each run of them moves its offset on. */
    for (size_t i = 0; i < b->n; i++)
        if (i + 1 == b->n || b->rec[i + 1].partition != b->rec[i].partition)
            sink_metrics_set_next(m, b->rec[i].partition, b->rec[i].offset + 1);
}

static void *writer_main(void *arg)
{
    sink_writer *w = arg;

    pthread_setname_np(pthread_self(), "sink-writer");
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->wb_full && !w->quit)
            pthread_cond_wait(&w->cond, &w->lock);
        if (!w->wb_full)
            break;
        pthread_mutex_unlock(&w->lock);

        uint64_t started = prom_now_ns();
        if (backoff_retry(&w->retry, write_once, gives_up, w) == 0) {
            count_written(w->metrics, &w->wb, started);
        } else {
            /* Dropped, not lost: its offsets were not stored, the next reader starts before it. */
            LOG_WARN("sink", "batch of %zu dropped; it will be read again", w->wb.n);
            atomic_store(&w->dropped, 1);
        }
        batch_clear(&w->wb);

        pthread_mutex_lock(&w->lock);
        w->wb_full = 0;
        atomic_store(&w->failing, 0);
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

sink_writer *sink_writer_new(const char *pg_dsn, const char *topic, int64_t retry_max_ms, sink_dlq *dlq,
                             sink_metrics *m, char *err, size_t errlen)
{
    sink_writer *w = calloc(1, sizeof(*w));
    int rc;

    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->pg_dsn = pg_dsn;
    w->topic = topic;
    w->dlq = dlq;
    w->metrics = m;
    batch_init(&w->wb);
    /* 100 ms first: a blip costs little; the cap is the operator's. */
    if ((rc = -backoff_init(&w->retry, retry_max_ms < 100 ? retry_max_ms : 100, retry_max_ms)) != 0)
        goto fail_free;
    if ((rc = mono_cond_init(&w->cond)) != 0)
        goto fail_backoff;
    if ((rc = pthread_mutex_init(&w->lock, NULL)) != 0)
        goto fail_cond;
    if ((rc = pthread_create(&w->tid, NULL, writer_main, w)) != 0)
        goto fail_lock;
    return w;

fail_lock:
    pthread_mutex_destroy(&w->lock);
fail_cond:
    pthread_cond_destroy(&w->cond);
fail_backoff:
    backoff_destroy(&w->retry);
fail_free:
    snprintf(err, errlen, "cannot start the writer thread: %s", strerror(rc));
    free(w);
    return NULL;
}

void sink_writer_free(sink_writer *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->quit = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->tid, NULL);
    if (w->pg)
        PQfinish(w->pg);
    batch_free(&w->wb);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    backoff_destroy(&w->retry);
    free(w);
}

/* Wait while the writer holds a batch: until it is idle (0), or timeout_ms (< 0: for ever). */
static int wait_idle(sink_writer *w, int timeout_ms)
{
    struct timespec deadline;
    int rc = 0;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_ms >= 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&w->lock);
    while (w->wb_full && rc != ETIMEDOUT)
        rc = timeout_ms < 0 ? pthread_cond_wait(&w->cond, &w->lock)
                            : pthread_cond_timedwait(&w->cond, &w->lock, &deadline);
    rc = w->wb_full ? -ETIMEDOUT : 0;
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int sink_writer_wait(sink_writer *w, int timeout_ms)
{
    return wait_idle(w, timeout_ms < 0 ? 0 : timeout_ms);
}

void sink_writer_submit(sink_writer *w, batch *b)
{
    if (b->n == 0)
        return;
    pthread_mutex_lock(&w->lock);
    batch tmp = w->wb; /* empty: cleared by the writer, its memory reused */
    w->wb = *b;
    *b = tmp;
    w->wb_full = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

void sink_writer_drain(sink_writer *w, batch *b)
{
    atomic_store(&w->one_shot, 1);
    backoff_wake(&w->retry);
    wait_idle(w, -1);
    /*
     * Never write past a dropped batch: its offsets were not stored, and a
     * later batch of the same partitions would store offsets beyond it.
     */
    if (atomic_exchange(&w->dropped, 0))
        batch_clear(b);
    sink_writer_submit(w, b);
    wait_idle(w, -1);
    atomic_store(&w->dropped, 0);
    atomic_store(&w->one_shot, 0);
}

int sink_writer_failing(const sink_writer *w)
{
    return atomic_load(&w->failing);
}

void sink_writer_stop(sink_writer *w)
{
    atomic_store(&w->stopping, 1);
    backoff_wake(&w->retry);
}
