#include "migrate.h"

#include <stdio.h>
#include <stdlib.h>

#include "log.h"

/* One lock for every sink of every deployment sharing the database: "ingest" in ASCII. */
#define MIGRATION_LOCK_KEY 0x696e67657374LL

static int exec_ok(PGconn *pg, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

    if (!ok)
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

int migrate(PGconn *pg, char *err, size_t errlen)
{
    char sql[160];
    int applied = 0, current = 0;
    PGresult *r;

    /* Session-level lock: held across the transactions below, released at the end or when we die. */
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%lld)", MIGRATION_LOCK_KEY);
    if (exec_ok(pg, sql, err, errlen) != 0)
        return -1;
    if (exec_ok(pg,
                "CREATE TABLE IF NOT EXISTS ingest_schema_migrations (version int PRIMARY KEY, name text NOT "
                "NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                err, errlen) != 0)
        goto fail;
    r = PQexec(pg, "SELECT coalesce(max(version), 0) FROM ingest_schema_migrations");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        PQclear(r);
        goto fail;
    }
    current = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);

    for (const migration *m = sink_migrations; m->sql; m++) {
        if (m->version <= current)
            continue;
        const char *params[2];
        char version[16];
        snprintf(version, sizeof(version), "%d", m->version);
        params[0] = version;
        params[1] = m->name;
        if (exec_ok(pg, "BEGIN", err, errlen) != 0)
            goto fail;
        if (exec_ok(pg, m->sql, err, errlen) != 0) {
            char why[400];
            snprintf(why, sizeof(why), "migration %s: %s", m->name, err);
            snprintf(err, errlen, "%s", why);
            PQclear(PQexec(pg, "ROLLBACK"));
            goto fail;
        }
        r = PQexecParams(pg, "INSERT INTO ingest_schema_migrations (version, name) VALUES ($1::int, $2)", 2,
                         NULL, params, NULL, NULL, 0);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        PQclear(r);
        if (!ok || exec_ok(pg, "COMMIT", err, errlen) != 0) {
            PQclear(PQexec(pg, "ROLLBACK"));
            goto fail;
        }
        LOG_INFO("pg", "migrated version=%d name=%s", m->version, m->name);
        applied++;
    }
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%lld)", MIGRATION_LOCK_KEY);
    exec_ok(pg, sql, err, errlen);
    return applied;

fail:
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%lld)", MIGRATION_LOCK_KEY);
    PQclear(PQexec(pg, sql));
    return -1;
}
