/*
 * Schema migrations: versioned SQL (sink/migrations/NNN_name.sql, built into
 * the binary), applied in order at start-up under a Postgres advisory lock,
 * so several sinks starting at once apply each exactly once.
 */
#ifndef INGEST_MIGRATE_H
#define INGEST_MIGRATE_H

#include <stddef.h>

#include <libpq-fe.h>

typedef struct migration {
    int version;
    const char *name;
    const char *sql;
} migration;

/* Ends with {0, 0, 0}. */
extern const migration sink_migrations[];

/* Apply what is missing. Returns the count applied, or -1 with a message in err. */
int migrate(PGconn *pg, char *err, size_t errlen);

#endif
