#include "pg.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "row.h"
#include "mono.h"

/* Server notices ("relation already exists, skipping") at debug level, not on stderr. */
static void notice(void *arg, const char *message)
{
    (void)arg;
    LOG_DEBUG("pg", "%s", message);
}

PGconn *sink_pg_connect(PGconn **slot, const char *dsn)
{
    if (*slot && PQstatus(*slot) == CONNECTION_OK)
        return *slot;
    if (*slot)
        PQfinish(*slot);
    *slot = PQconnectdb(dsn);
    if (PQstatus(*slot) != CONNECTION_OK) {
        LOG_WARN("pg", "not reachable: %s", *slot ? PQerrorMessage(*slot) : "out of memory");
        return NULL;
    }
    PQsetNoticeProcessor(*slot, notice, NULL);
    LOG_INFO("pg", "connected server_version=%d", PQserverVersion(*slot));
    return *slot;
}

/* libpq's message, one line, without its final newline. */
static void one_line(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg && *msg ? msg : "connection failed");
    err[strcspn(err, "\n")] = '\0';
}

int sink_pg_ping(const char *dsn, int timeout_ms, char *err, size_t errlen)
{
    long long deadline = mono_ms() + timeout_ms;
    PGconn *c = PQconnectStart(dsn);
    /* As libpq says: poll as if writing first. */
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    int rc = -EIO;

    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (PQstatus(c) == CONNECTION_BAD) {
        one_line(err, errlen, PQerrorMessage(c));
        goto out;
    }
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED) {
            one_line(err, errlen, PQerrorMessage(c));
            goto out;
        }
        long long left = deadline - mono_ms();
        if (left <= 0) {
            snprintf(err, errlen, "no answer within %d ms", timeout_ms);
            rc = -ETIMEDOUT;
            goto out;
        }
        /* The socket may change between polls (another address of the host): asked each time. */
        struct pollfd p = {.fd = PQsocket(c), .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int n = poll(&p, 1, (int)left);
        if (n < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            goto out;
        }
        if (n > 0)
            st = PQconnectPoll(c);
    }
    rc = 0;
out:
    PQfinish(c);
    return rc;
}

/* A result we expect to be `want`; else the message into err. */
static int expect(PGresult *r, ExecStatusType want, char *err, size_t errlen)
{
    int ok = PQresultStatus(r) == want;

    if (!ok)
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

static int exec(PGconn *pg, const char *sql, char *err, size_t errlen)
{
    return expect(PQexec(pg, sql), PGRES_COMMAND_OK, err, errlen);
}

/* A row-level refusal: the data is wrong (class 22), or breaks a constraint (class 23). */
static int data_error(const PGresult *r)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

    return state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0);
}

/* COPY records [lo, hi) with rows into the staging table. 0, 1 on a data error, -1 otherwise. */
static int copy_into(PGconn *pg, const char *table, batch *b, size_t lo, size_t hi, char *err, size_t errlen)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "COPY %s (" ROW_COLUMNS ") FROM STDIN", table);
    PGresult *r = PQexec(pg, sql);
    int rc = 0;

    if (expect(r, PGRES_COPY_IN, err, errlen) != 0)
        return -1;
    for (size_t i = lo; i < hi; i++) {
        const batch_rec *rec = &b->rec[i];
        if (rec->line_len && !rec->dead &&
            PQputCopyData(pg, b->copy + rec->line_off, (int)rec->line_len) != 1) {
            snprintf(err, errlen, "%s", PQerrorMessage(pg));
            return -1;
        }
    }
    if (PQputCopyEnd(pg, NULL) != 1) {
        snprintf(err, errlen, "%s", PQerrorMessage(pg));
        return -1;
    }
    r = PQgetResult(pg);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        rc = data_error(r) ? 1 : -1;
        /* The dead letter's reason: Postgres's own words and code, without libpq's "ERROR:" framing. */
        if (primary)
            snprintf(err, errlen, "%s (SQLSTATE %s)", primary, state ? state : "?");
        else
            snprintf(err, errlen, "%s", PQresultErrorMessage(r));
    }
    PQclear(r);
    while ((r = PQgetResult(pg)) != NULL)
        PQclear(r);
    return rc;
}

static size_t live_rows(const batch *b, size_t lo, size_t hi)
{
    size_t n = 0;

    for (size_t i = lo; i < hi; i++)
        n += b->rec[i].line_len && !b->rec[i].dead;
    return n;
}

/*
 * Write [lo, hi) under a savepoint; on a data error, undo and split, until
 * the refused rows stand alone and become dead letters. Binary splitting
 * finds k bad rows among n in about 2k log2(n/k) COPYs, not n.
 */
static int write_range(PGconn *pg, batch *b, size_t lo, size_t hi, char *err, size_t errlen)
{
    int rc;

    if (live_rows(b, lo, hi) == 0)
        return 0;
    if (exec(pg, "SAVEPOINT part", err, errlen) != 0)
        return -1;
    rc = copy_into(pg, "ingest_stage", b, lo, hi, err, errlen);
    if (rc == 0)
        return exec(pg, "RELEASE SAVEPOINT part", err, errlen);
    char why[512];
    snprintf(why, sizeof(why), "%s", err);
    if (exec(pg, "ROLLBACK TO SAVEPOINT part", err, errlen) != 0 || rc < 0) {
        if (rc < 0)
            snprintf(err, errlen, "%s", why);
        return -1;
    }
    if (live_rows(b, lo, hi) == 1) {
        for (size_t i = lo; i < hi; i++) {
            batch_rec *rec = &b->rec[i];
            if (rec->line_len && !rec->dead) {
                /* Postgres's message, one line, as the dead letter's reason. */
                char *nl = strchr(why, '\n');
                if (nl)
                    *nl = '\0';
                if ((rec->dead = strdup(why)) == NULL) {
                    snprintf(err, errlen, "out of memory");
                    return -1;
                }
                LOG_WARN("sink", "dead letter partition=%" PRId32 " offset=%" PRId64 ": %s", rec->partition,
                         rec->offset, why);
            }
        }
        return 0;
    }
    size_t mid = lo + (hi - lo) / 2;
    if (write_range(pg, b, lo, mid, err, errlen) != 0)
        return -1;
    return write_range(pg, b, mid, hi, err, errlen);
}

static int store_offsets(PGconn *pg, const char *topic, const batch *b, char *err, size_t errlen)
{
    /* Next offset per partition: one past the last record of it in the batch. */
    for (size_t i = 0; i < b->n; i++) {
        int32_t p = b->rec[i].partition;
        int64_t next = b->rec[i].offset + 1;
        int later = 0;
        for (size_t j = i + 1; j < b->n && !later; j++)
            later = b->rec[j].partition == p;
        if (later)
            continue;
        char ps[16], ns[24];
        const char *params[3] = {topic, ps, ns};
        snprintf(ps, sizeof(ps), "%" PRId32, p);
        snprintf(ns, sizeof(ns), "%" PRId64, next);
        /* GREATEST: a late writer (a sink that lost the partition) never moves it back. */
        if (expect(
                PQexecParams(pg,
                             "INSERT INTO ingest_offsets (topic, kafka_partition, next_offset) VALUES ($1, "
                             "$2::int, $3::bigint) ON CONFLICT (topic, kafka_partition) DO UPDATE SET "
                             "next_offset = GREATEST(ingest_offsets.next_offset, EXCLUDED.next_offset), "
                             "updated_at = now()",
                             3, NULL, params, NULL, NULL, 0),
                PGRES_COMMAND_OK, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int sink_pg_write_batch(PGconn *pg, const char *topic, batch *b, sink_pg_dead_fn dead, void *arg, char *err,
                        size_t errlen)
{
    size_t n_dead = 0;

    if (PQstatus(pg) != CONNECTION_OK) {
        snprintf(err, errlen, "not connected: %s", PQerrorMessage(pg));
        return -EIO;
    }
    if (exec(pg, "BEGIN", err, errlen) != 0)
        goto fail;
    /*
     * The common case first: the whole batch straight into events, written
     * once (perf/sink: the staging table doubled Postgres's work per row). A
     * row already there (a redelivery, a client's retry) or one Postgres
     * refuses fails it; then the batch is written again the careful way: a
     * staging table, split to find refused rows, ON CONFLICT DO NOTHING.
     */
    b->inserted = live_rows(b, 0, b->n);
    int direct = b->inserted ? copy_into(pg, "events", b, 0, b->n, err, errlen) : 0;
    if (direct < 0)
        goto fail;
    if (direct > 0) {
        PQclear(PQexec(pg, "ROLLBACK"));
        if (exec(pg, "BEGIN", err, errlen) != 0)
            goto fail;
        /* Per session, emptied at each commit; LIKE copies the NOT NULLs but not the primary key. */
        if (exec(pg, "CREATE TEMP TABLE IF NOT EXISTS ingest_stage (LIKE events) ON COMMIT DELETE ROWS", err,
                 errlen) != 0)
            goto fail;
        if (write_range(pg, b, 0, b->n, err, errlen) != 0)
            goto fail;
        PGresult *r =
            PQexec(pg, "INSERT INTO events SELECT * FROM ingest_stage ON CONFLICT (source, id) DO NOTHING");
        b->inserted = r ? strtoull(PQcmdTuples(r), NULL, 10) : 0;
        if (expect(r, PGRES_COMMAND_OK, err, errlen) != 0)
            goto fail;
    }
    if (store_offsets(pg, topic, b, err, errlen) != 0)
        goto fail;
    for (size_t i = 0; i < b->n; i++)
        n_dead += b->rec[i].dead != NULL;
    if (n_dead && dead(b, arg) != 0) {
        snprintf(err, errlen, "dead letters could not be produced");
        goto fail;
    }
    if (exec(pg, "COMMIT", err, errlen) != 0)
        goto fail;
    return 0;

fail:
    PQclear(PQexec(pg, "ROLLBACK"));
    /* Rows refused so far are judged again on the retry. */
    for (size_t i = 0; i < b->n; i++) {
        if (b->rec[i].dead && b->rec[i].line_len) {
            free(b->rec[i].dead);
            b->rec[i].dead = NULL;
        }
    }
    return -EIO;
}

int sink_pg_load_offsets(PGconn *pg, const char *topic, int64_t *next, int n_partitions, char *err,
                         size_t errlen)
{
    const char *params[1] = {topic};
    PGresult *r;

    for (int i = 0; i < n_partitions; i++)
        next[i] = -1;
    r = PQexecParams(pg, "SELECT kafka_partition, next_offset FROM ingest_offsets WHERE topic = $1", 1, NULL,
                     params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        PQclear(r);
        return -EIO;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        int p = atoi(PQgetvalue(r, i, 0));
        if (p >= 0 && p < n_partitions)
            next[p] = strtoll(PQgetvalue(r, i, 1), NULL, 10);
    }
    PQclear(r);
    return 0;
}
