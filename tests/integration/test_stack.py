"""The local stack's real parts work: Kafka and Postgres, as deploy/local/up
leaves them, driven by the same kinds of clients the product uses."""

import datetime
import json
import time
import uuid

import psycopg
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient


def test_kafka_message_round_trip(kafka_bootstrap, kafka_topic, unique_name):
    # The gateway's producer settings: idempotent, acks=all, lz4.
    producer = Producer({
        "bootstrap.servers": kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "message.timeout.ms": 30000,
    })
    key = f"key-{uuid.uuid4()}".encode()
    value = bytes(range(256)) * 4  # binary, with NULs: like a protobuf Envelope
    headers = [
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_source", b"/it/stack"),
        ("content-type", b"application/x-protobuf"),
    ]
    reports = []
    producer.produce(kafka_topic, key=key, value=value, headers=headers,
                     on_delivery=lambda err, msg: reports.append((err, msg)))
    assert producer.flush(30) == 0, "message still queued after 30 s"
    assert len(reports) == 1
    err, delivered = reports[0]
    assert err is None, f"delivery failed: {err}"

    consumer = Consumer({
        "bootstrap.servers": kafka_bootstrap,
        "group.id": unique_name,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    try:
        consumer.subscribe([kafka_topic])
        received = None
        deadline = time.monotonic() + 30
        while received is None and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, f"consumer error: {msg.error()}"
            received = msg
        assert received is not None, "nothing consumed within 30 s"
        assert received.key() == key
        assert received.value() == value
        assert received.headers() == headers
        assert (received.partition(), received.offset()) == (delivered.partition(), delivered.offset())

        # Committed offsets survive in the group, as the sink relies on
        # partition positions being stable.
        consumer.commit(message=received, asynchronous=False)
        committed = consumer.committed(consumer.assignment(), timeout=10)
        assert [tp.offset for tp in committed] == [received.offset() + 1]
    finally:
        consumer.close()


def test_local_topics_exist(kafka_bootstrap, events_topic, dlq_topic):
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=15)
    assert events_topic in metadata.topics, sorted(metadata.topics)
    assert dlq_topic in metadata.topics, sorted(metadata.topics)
    assert len(metadata.topics[events_topic].partitions) == 6
    assert len(metadata.topics[dlq_topic].partitions) >= 1
    assert len(metadata.brokers) == 1


def test_broker_does_not_auto_create_topics(kafka_bootstrap, unique_name):
    # A misspelt topic must fail loudly rather than quietly appear.
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique_name,
                         "allow.auto.create.topics": True})
    try:
        metadata = consumer.list_topics(topic=unique_name, timeout=15)
        topic = metadata.topics[unique_name]
        assert topic.error is not None
        assert topic.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    finally:
        consumer.close()
    assert unique_name not in AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=15).topics


def test_postgres_answers_as_the_ingest_role(pg_dsn):
    with psycopg.connect(pg_dsn, connect_timeout=10) as conn:
        version, user, database, encoding = conn.execute(
            "select version(), current_user, current_database(), pg_client_encoding()").fetchone()
    assert version.startswith("PostgreSQL ")
    assert (user, database, encoding) == ("ingest", "ingest", "UTF8")


def test_postgres_round_trip_with_copy(pg_dsn):
    # The sink writes with COPY into jsonb/bytea/timestamptz columns and relies
    # on the primary key to drop redeliveries; check all of that here.
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.timezone.utc)
    rows = [
        ("/it", "1", json.dumps({"hello": "world", "n": [1, 2.5, None]}), None, when),
        ("/it", "2", None, b"\x00\x01\xffbytes", when),
    ]
    with psycopg.connect(pg_dsn, connect_timeout=10) as conn:
        conn.execute("create temp table t (source text, id text, data jsonb, data_bytes bytea,"
                     " time timestamptz, primary key (source, id))")
        with conn.cursor() as cur:
            with cur.copy("copy t (source, id, data, data_bytes, time) from stdin") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute("insert into t (source, id) values ('/it', '1') on conflict do nothing")
            assert cur.rowcount == 0
            got = cur.execute("select source, id, data, data_bytes, time from t order by id").fetchall()
    assert got == [
        ("/it", "1", {"hello": "world", "n": [1, 2.5, None]}, None, when),
        ("/it", "2", None, b"\x00\x01\xffbytes", when),
    ]


def test_ingest_role_can_create_tables(pg_dsn, unique_name):
    # The sink creates and migrates its schema itself, as this role.
    table = unique_name.replace("-", "_")
    with psycopg.connect(pg_dsn, connect_timeout=10, autocommit=True) as conn:
        conn.execute(f"create table {table} (id bigint primary key)")
        try:
            conn.execute(f"insert into {table} values (1), (2)")
            assert conn.execute(f"select count(*) from {table}").fetchone() == (2,)
        finally:
            conn.execute(f"drop table {table}")
