"""The stack's dead-letter topic, watched: what came onto it since a mark, and waiting for the stack's sink
to have written everything on the events topic (test_storable.py; conftest's check of the whole run)."""
import time
import uuid

from confluent_kafka import Consumer, TopicPartition


def watermarks(bootstrap, topic):
    """{partition: end offset} of topic now."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"stackcheck-{uuid.uuid4().hex}"})
    try:
        parts = c.list_topics(topic, timeout=15).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=15, cached=False)[1] for p in parts}
    finally:
        c.close()


def records_since(bootstrap, topic, mark, timeout=30):
    """The records on topic after mark, as (value, headers dict)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"stackcheck-{uuid.uuid4().hex}",
                  "enable.auto.commit": False})
    got = []
    try:
        end = watermarks(bootstrap, topic)
        c.assign([TopicPartition(topic, p, mark.get(p, 0)) for p in end])
        left = sum(end[p] - mark.get(p, 0) for p in end)
        deadline = time.monotonic() + timeout
        while left > 0 and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            left -= 1
            got.append((msg.value() or b"", {k: v for k, v in (msg.headers() or [])}))
    finally:
        c.close()
    return got


def wait_sink_caught_up(bootstrap, topic, pg_query, dsn, timeout=60):
    """Waits until the stack's sink has written (or dead-lettered) every record now on topic: its offsets
    in ingest_offsets reach the topic's end. True when they did within timeout."""
    end = watermarks(bootstrap, topic)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = dict(pg_query(dsn, "select kafka_partition, next_offset from ingest_offsets where topic = %s",
                                 (topic,)))
        except Exception:  # noqa: BLE001 - Postgres restarting: ask again
            done = {}
        if all(done.get(p, 0) >= off for p, off in end.items() if off > 0):
            return True
        time.sleep(0.5)
    return False
