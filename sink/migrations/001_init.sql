-- The contract's tables: one row per event identity, and the consumed
-- offsets that commit with the rows in one transaction.
CREATE TABLE IF NOT EXISTS events (
    source          text NOT NULL,
    id              text NOT NULL,
    type            text NOT NULL,
    subject         text,
    time            timestamptz,
    datacontenttype text,
    dataschema      text,
    extensions      jsonb,
    data            jsonb,
    data_bytes      bytea,
    protocol        text,
    peer            text,
    gateway_id      text,
    received_at     timestamptz,
    kafka_partition int,
    kafka_offset    bigint,
    PRIMARY KEY (source, id)
);

CREATE TABLE IF NOT EXISTS ingest_offsets (
    topic           text NOT NULL,
    kafka_partition int NOT NULL,
    next_offset     bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition)
);
