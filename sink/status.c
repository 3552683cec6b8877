#include "status.h"

#include <libpq-fe.h>

const char *sink_status_not_ready(void *arg)
{
    const sink_status *st = arg;
    const struct rd_kafka_metadata *md = NULL;

    if (!atomic_load(st->migrated))
        return "schema not migrated yet";
    if (atomic_load(st->failing))
        return "cannot write to Postgres";
    if (PQping(st->pg_dsn) != PQPING_OK)
        return "Postgres not reachable";
    if (rd_kafka_metadata(st->consumer, 0, NULL, &md, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return "Kafka not reachable";
    rd_kafka_metadata_destroy(md);
    return NULL;
}
