"""The sink, end to end: Envelopes from Kafka into Postgres rows, exactly once.

Every test runs sinks of its own (start_sink) on private topics, in a
consumer group of their own, writing into a private Postgres schema
(pg_schema), so what a test finds in `events` and `ingest_offsets` is
exactly what it sent. Events come either over HTTP through a private gateway
(what a client does) or as Envelopes produced straight to the topic with
confluent-kafka (what the sink must survive: garbage, bursts, crashes).
"""

import datetime
import http.client
import json
import threading
import time
import uuid

import psycopg
import pytest
import requests
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import pg_query

PROTOCOL_HTTP, PROTOCOL_UDP, PROTOCOL_GRPC = 1, 2, 3
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
COLUMNS = ("source", "id", "type", "subject", "time", "datacontenttype", "dataschema", "extensions", "data",
           "data_bytes", "protocol", "peer", "gateway_id", "received_at", "kafka_partition", "kafka_offset",
           "principal")


# ---- helpers -----------------------------------------------------------------

def new_id():
    return f"it-{uuid.uuid4()}"


def wait_until(what, check, timeout, sinks=(), interval=0.1):
    """Polls check() until it returns a true value, which it returns; fails after timeout seconds.

    The failure names what was awaited, the last value seen, and the tail of
    each sink's log; a sink that exits meanwhile fails the wait at once.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = check()
        except psycopg.Error as e:  # Postgres restarting, or the sink has not made its tables yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        dead = [s for s in sinks if not s.alive()]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"--- sink pid {s.pid} (exit {s.proc.poll()}):\n{s.log_tail()}" for s in sinks)
            why = "sink exited" if dead else f"not within {timeout}s"
            pytest.fail(f"waiting for {what}: {why}; last: {last!r}\n{logs}", pytrace=False)
        time.sleep(interval)


def optional_flags(sink_help, *flags):
    """Those of flags (--name=value) that this sink build knows."""
    return [f for f in flags if f.split("=", 1)[0] + "=" in sink_help]


def rows(dsn, where="true", params=None):
    """Rows of events as dicts, ordered by partition and offset."""
    got = pg_query(dsn, f"select {', '.join(COLUMNS)} from events where {where} "
                        "order by kafka_partition, kafka_offset", params)
    return [dict(zip(COLUMNS, r)) for r in got]


def row_count(dsn):
    return pg_query(dsn, "select count(*) from events")[0][0]


def stored_offsets(dsn, topic):
    """{partition: next_offset} from ingest_offsets for topic."""
    return dict(pg_query(dsn, "select kafka_partition, next_offset from ingest_offsets where topic = %s", (topic,)))


def end_offsets(bootstrap, topic):
    """{partition: high watermark} of every partition of topic."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"it-wm-{uuid.uuid4().hex[:8]}"})
    try:
        md = c.list_topics(topic, timeout=15)
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=15, cached=False)[1]
                for p in md.topics[topic].partitions}
    finally:
        c.close()


def caught_up(dsn, bootstrap, topic):
    """True once ingest_offsets holds every partition's end offset (end offsets of empty partitions may be absent)."""
    ends = end_offsets(bootstrap, topic)
    stored = stored_offsets(dsn, topic)
    return all(stored.get(p, 0) == end for p, end in ends.items())


def nanos_of(dt):
    """A timestamptz as integer nanoseconds since the epoch (it holds microseconds)."""
    delta = dt - EPOCH
    return ((delta.days * 86400 + delta.seconds) * 10**6 + delta.microseconds) * 1000


def assert_microseconds_of(dt, nanos):
    """dt is nanos at microsecond precision (truncated or rounded: within one microsecond)."""
    assert dt is not None and abs(nanos_of(dt) - nanos) < 1000, (dt, nanos)


def producer(bootstrap):
    """A fast, idempotent producer: each record lands once, so offsets count records."""
    return Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "compression.type": "lz4",
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
        "message.timeout.ms": 60000,
    })


def produce_all(p, topic, records):
    """Produces (key, value) pairs, serving delivery reports as it goes; fails on any error."""
    errors = []

    def report(err, msg):
        if err is not None:
            errors.append(err)

    for key, value in records:
        while True:
            try:
                p.produce(topic, key=key, value=value, on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0, "records still queued after 60 s"
    assert not errors, errors[:5]


def read_records(bootstrap, topic, n, timeout=30):
    """The first n records of topic (all partitions), raw confluent-kafka messages."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"it-read-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=15)
        c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            assert time.monotonic() < deadline, f"{len(got)} of {n} records on {topic} within {timeout}s: " \
                                                f"{[(m.offset(), m.key(), m.headers()) for m in got]}"
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, m.error()
            got.append(m)
        return got
    finally:
        c.close()


class Envelopes:
    """Builds serialized ingest.v1.Envelope values as the gateway would."""

    def __init__(self, pb):
        self.pb = pb

    def make(self, source, id, type="com.example.it", attrs=None, text=None, binary=None, received=None,
             protocol=PROTOCOL_HTTP, peer="127.0.0.1:40000", gateway_id="it-direct", time_ns=None, principal=None):
        env = self.pb.envelope_pb2.Envelope()
        ev = env.event
        ev.id, ev.source, ev.spec_version, ev.type = id, source, "1.0", type
        for name, value in (attrs or {}).items():
            ev.attributes[name].ce_string = value
        if time_ns is not None:
            ev.attributes["time"].ce_timestamp.seconds = time_ns // 10**9
            ev.attributes["time"].ce_timestamp.nanos = time_ns % 10**9
        if text is not None:
            ev.text_data = text
        if binary is not None:
            ev.binary_data = binary
        env.received_unix_nanos = received if received is not None else time.time_ns()
        env.protocol = protocol
        env.peer = peer
        env.gateway_id = gateway_id
        if principal is not None:
            env.principal = principal
        return env.SerializeToString()


@pytest.fixture(scope="module")
def envelopes(pb):
    return Envelopes(pb)


class Stream:
    """Produces count Envelopes (one source, ids <prefix>-<i>) to a topic from a thread, paced.

    chunk records every pause seconds, so that a test can act on the sink
    while the stream still flows. .join() waits and re-raises a failure.
    """

    def __init__(self, bootstrap, topic, envelopes, count, chunk, pause):
        self.source = f"/it/sink/stream/{uuid.uuid4().hex[:8]}"
        self.count = count
        self.produced = 0
        self.error = None
        self.topic = topic
        self._args = (bootstrap, envelopes, chunk, pause)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        bootstrap, envelopes, chunk, pause = self._args
        try:
            p = producer(bootstrap)
            for start in range(0, self.count, chunk):
                n = min(chunk, self.count - start)
                produce_all(p, self.topic, ((f"k{i % 101}".encode(),
                                             envelopes.make(self.source, f"e-{i}", text=f'{{"i":{i}}}'))
                                            for i in range(start, start + n)))
                self.produced += n
                if pause and start + n < self.count:
                    time.sleep(pause)
        except BaseException as e:  # reported by join()
            self.error = e

    def start(self):
        self.thread.start()
        return self

    def running(self):
        return self.thread.is_alive()

    def join(self, timeout=120):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the producer did not finish within {timeout}s"
        if self.error:
            raise self.error


def assert_exactly_once(dsn, bootstrap, topic, source, count):
    """Every one of the count events of source is one row, and each partition's offsets 0..end-1 are there once."""
    ends = end_offsets(bootstrap, topic)
    assert sum(ends.values()) == count, ends  # idempotent producer: one offset per record
    assert pg_query(dsn, "select count(*), count(distinct id) from events where source = %s",
                    (source,))[0] == (count, count)
    assert row_count(dsn) == count
    per_partition = {p: (n, lo, hi, distinct) for p, n, lo, hi, distinct in pg_query(
        dsn, "select kafka_partition, count(*), min(kafka_offset), max(kafka_offset), count(distinct kafka_offset)"
             " from events group by kafka_partition")}
    expected = {p: (end, 0, end - 1, end) for p, end in ends.items() if end > 0}
    assert per_partition == expected, "rows per partition (count, min offset, max offset, distinct offsets)"
    assert stored_offsets(dsn, topic) == {p: end for p, end in ends.items() if end > 0}


# ---- events over HTTP ------------------------------------------------------------------

@pytest.fixture(scope="module")
def http_pipeline(start_gateway, start_sink, make_topic, make_pg_schema, kafka_bootstrap):
    """A private gateway -> a private one-partition topic -> a private sink -> a private schema."""
    topic = make_topic("sink-http")
    schema, dsn = make_pg_schema()
    gateway_id = f"it-sink-{uuid.uuid4().hex[:8]}"
    gw = start_gateway(f"--kafka-topic={topic}", f"--gateway-id={gateway_id}")
    sink = start_sink(f"--kafka-topic={topic}", f"--pg-dsn={dsn}", f"--dlq-topic={make_topic('sink-http-dlq')}")
    yield type("Pipeline", (), dict(topic=topic, dsn=dsn, gw=gw, sink=sink, gateway_id=gateway_id,
                                    bootstrap=kafka_bootstrap))
    sink.stop()
    gw.stop()


def post(url, body, content_type="application/cloudevents+json", headers=None):
    h = {"Content-Type": content_type, **(headers or {})}
    r = requests.post(url, data=body if isinstance(body, bytes) else json.dumps(body).encode(), headers=h,
                      timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()["ids"]


def settle(pipe, timeout=30):
    """Waits until the sink has consumed everything on the pipeline's topic; returns its rows by (source, id)."""
    wait_until("the sink to store the topic's end offsets", lambda: caught_up(pipe.dsn, pipe.bootstrap, pipe.topic),
               timeout, sinks=[pipe.sink])
    return {(r["source"], r["id"]): r for r in rows(pipe.dsn)}


def test_http_events_become_rows_with_every_column(http_pipeline, topic_reader):
    pipe = http_pipeline
    reader = topic_reader(pipe.topic)
    mark = reader.mark()
    full = {
        "specversion": "1.0", "id": new_id(), "source": "/it/sink/http/full", "type": "com.example.sink.full",
        "subject": "orders/1001", "time": "2024-06-01T14:00:00.123456789+02:00",
        "datacontenttype": "application/json", "dataschema": "https://example.com/schemas/order.json",
        "tenant": "acme", "count": 42, "flag": True, "partitionkey": "pk-7",
        "data": {"amount": 42.5, "items": [1, "two", None, True, {"x": -0.5}], "note": "caf\u00e9 \u4e2d"},
    }
    # http.client, so the test knows its own address and can check the row's peer.
    host, port = pipe.gw.http_addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.connect()
    full_peer = "%s:%d" % conn.sock.getsockname()[:2]
    conn.request("POST", "/v1/events", body=json.dumps(full).encode(),
                 headers={"Content-Type": "application/cloudevents+json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    resp.read()
    conn.close()

    binary_id = new_id()
    binary_body = b"\x00\x01binary\xff"
    post(pipe.gw.events_url, binary_body, content_type="application/octet-stream",
         headers={"ce-specversion": "1.0", "ce-id": binary_id, "ce-source": "/it/sink/http/binary",
                  "ce-type": "com.example.sink.binary", "ce-tenantid": "t1"})
    batch = [
        {"id": new_id(), "source": "/it/sink/http/bare", "type": "t"},
        {"id": new_id(), "source": "/it/sink/http/b64", "type": "t", "data_base64": "AAEC/w=="},
        {"id": new_id(), "source": "/it/sink/http/plusjson", "type": "t",
         "datacontenttype": "application/vnd.example+json", "data": {"k": [1, 2]}},
        {"id": new_id(), "source": "/it/sink/http/string", "type": "t", "data": "just text"},
    ]
    post(pipe.gw.events_url, batch, content_type="application/cloudevents-batch+json")

    recs = reader.read_since(mark, 6)
    by_key = settle(pipe)
    assert len(by_key) == 6, sorted(by_key)

    def check(source, id, type, subject=None, time_ns=None, datacontenttype=None, dataschema=None,
              extensions=None, data=None, data_bytes=None):
        [rec] = [r for r in recs if (r.event.source, r.event.id) == (source, id)]
        row = by_key[(source, id)]
        assert (row["source"], row["id"], row["type"]) == (source, id, type)
        assert row["subject"] == subject
        if time_ns is None:
            assert row["time"] is None
        else:
            assert_microseconds_of(row["time"], time_ns)
        assert (row["datacontenttype"], row["dataschema"]) == (datacontenttype, dataschema)
        if extensions:
            assert row["extensions"] == extensions
        else:  # no extensions: the sink writes NULL; an empty object would do as well
            assert row["extensions"] in (None, {}), row["extensions"]
        assert (row["data"], row["data_bytes"]) == (data, data_bytes)
        assert row["protocol"] == "HTTP"
        assert row["peer"] == rec.envelope.peer
        assert row["gateway_id"] == pipe.gateway_id
        assert row["principal"] == rec.envelope.principal == "anonymous"  # no --auth-file: everyone is
        assert_microseconds_of(row["received_at"], rec.envelope.received_unix_nanos)
        assert (row["kafka_partition"], row["kafka_offset"]) == (rec.partition, rec.offset)
        return row

    row = check(full["source"], full["id"], full["type"], subject="orders/1001",
                time_ns=1717243200 * 10**9 + 123456789, datacontenttype="application/json",
                dataschema="https://example.com/schemas/order.json",
                extensions={"tenant": "acme", "count": "42", "flag": "true", "partitionkey": "pk-7"},
                data=full["data"])
    assert row["peer"] == full_peer
    check("/it/sink/http/binary", binary_id, "com.example.sink.binary", datacontenttype="application/octet-stream",
          extensions={"tenantid": "t1"}, data_bytes=binary_body)
    check("/it/sink/http/bare", batch[0]["id"], "t")
    check("/it/sink/http/b64", batch[1]["id"], "t", data_bytes=b"\x00\x01\x02\xff")
    check("/it/sink/http/plusjson", batch[2]["id"], "t", datacontenttype="application/vnd.example+json",
          data={"k": [1, 2]})
    check("/it/sink/http/string", batch[3]["id"], "t", data="just text")
    # The JSON is stored as jsonb, not as a string holding JSON.
    assert pg_query(pipe.dsn, "select jsonb_typeof(data), data->'items'->4->>'x' from events where id = %s",
                    (full["id"],)) == [("object", "-0.5")]


def test_same_event_twice_makes_one_row(http_pipeline):
    pipe = http_pipeline
    eid, other = new_id(), new_id()
    src = "/it/sink/dup"
    post(pipe.gw.events_url, {"id": eid, "source": src, "type": "t", "data": {"v": 1}})
    first = settle(pipe)[(src, eid)]
    # A client retry (a second request), and the same identity twice in one batch.
    post(pipe.gw.events_url, {"id": eid, "source": src, "type": "t", "data": {"v": 2}})
    post(pipe.gw.events_url, [{"id": other, "source": src, "type": "t"}, {"id": other, "source": src, "type": "t"}],
         content_type="application/cloudevents-batch+json")
    # The identity is (source, id): the same id from another source is another event.
    post(pipe.gw.events_url, {"id": eid, "source": src + "/elsewhere", "type": "t"})
    settle(pipe)
    assert pg_query(pipe.dsn, "select source, count(*) from events where id = %s group by source order by 1",
                    (eid,)) == [(src, 1), (src + "/elsewhere", 1)]
    assert pg_query(pipe.dsn, "select count(*) from events where id = %s", (other,)) == [(1,)]
    # The row that was there first stays as it was.
    [again] = rows(pipe.dsn, "source = %s and id = %s", (src, eid))
    assert again == first and again["data"] == {"v": 1}


# ---- dead letters ----------------------------------------------------------------------

GARBAGE = b"\x0f\xff\xfe not a protobuf message"  # field 1, wire type 7: no protobuf parser accepts it


def test_garbage_and_refused_rows_go_to_the_dlq_and_the_rest_of_the_batch_is_written(
        pb, envelopes, start_sink, make_topic, pg_schema, kafka_bootstrap):
    with pytest.raises(Exception):
        pb.envelope_pb2.Envelope().ParseFromString(GARBAGE)
    topic, dlq = make_topic("sink-dlq-src"), make_topic("sink-dlq")
    _, dsn = pg_schema
    src = "/it/sink/dlq"
    nul_json = '{"a":"x\\u0000y"}'  # JSON text Postgres' jsonb refuses: \u0000 cannot be text
    t_ns = 1700000000 * 10**9 + 987654321
    records = [
        (b"k-good-1", envelopes.make(src, "good-1", text='{"n":1}', protocol=PROTOCOL_UDP, peer="10.0.0.1:5000",
                                     gateway_id="gw-a", time_ns=t_ns, principal="billing")),
        (b"k-garbage", GARBAGE),
        # The same text with a non-JSON content type is bytes, which Postgres takes.
        (b"k-good-2", envelopes.make(src, "good-2", text=nul_json, attrs={"datacontenttype": "text/plain"},
                                     protocol=PROTOCOL_GRPC, peer="[::1]:6000")),
        (b"k-nul", envelopes.make(src, "nul", text=nul_json, attrs={"tenant": "acme"})),
        (b"k-good-3", envelopes.make(src, "good-3", binary=b"\x00raw", attrs={"datacontenttype": "image/png"})),
    ]
    # All five in Kafka before the sink starts: its first batch holds them all.
    produce_all(producer(kafka_bootstrap), topic, records)
    sink = start_sink(f"--kafka-topic={topic}", f"--pg-dsn={dsn}", f"--dlq-topic={dlq}")
    try:
        wait_until("ingest_offsets to reach 5", lambda: stored_offsets(dsn, topic) == {0: 5}, 30, sinks=[sink])
        got = {r["id"]: r for r in rows(dsn)}
        assert sorted(got) == ["good-1", "good-2", "good-3"]
        assert {i: (r["kafka_partition"], r["kafka_offset"]) for i, r in got.items()} == \
            {"good-1": (0, 0), "good-2": (0, 2), "good-3": (0, 4)}
        assert got["good-1"]["data"] == {"n": 1} and got["good-1"]["protocol"] == "UDP"
        assert (got["good-1"]["peer"], got["good-1"]["gateway_id"]) == ("10.0.0.1:5000", "gw-a")
        # The principal as the Envelope says; none (records from before principals): NULL.
        assert (got["good-1"]["principal"], got["good-2"]["principal"]) == ("billing", None)
        assert_microseconds_of(got["good-1"]["time"], t_ns)
        assert (got["good-2"]["data"], got["good-2"]["data_bytes"]) == (None, nul_json.encode())
        assert (got["good-2"]["protocol"], got["good-2"]["peer"]) == ("GRPC", "[::1]:6000")
        assert (got["good-3"]["data"], got["good-3"]["data_bytes"]) == (None, b"\x00raw")

        dead = read_records(kafka_bootstrap, dlq, 2)
        by_offset = {}
        for m in dead:
            headers = dict(m.headers() or [])
            assert set(headers) >= {"ingest_error", "ingest_topic", "ingest_partition", "ingest_offset"}, headers
            assert headers["ingest_error"], headers
            assert headers["ingest_topic"] == topic.encode()
            assert headers["ingest_partition"] == b"0"
            by_offset[int(headers["ingest_offset"])] = m
        assert sorted(by_offset) == [1, 3]
        assert (by_offset[1].key(), by_offset[1].value()) == records[1]
        assert (by_offset[3].key(), by_offset[3].value()) == records[3]
        assert end_offsets(kafka_bootstrap, dlq) == {0: 2}, "one dead letter each, no more"

        # The same events again (a redelivery, a client's retry): counted as duplicates, not rows.
        produce_all(producer(kafka_bootstrap), topic, [records[0], records[4]])
        wait_until("ingest_offsets to reach 7", lambda: stored_offsets(dsn, topic) == {0: 7}, 30, sinks=[sink])
        m = sink.metrics()
        assert m[("ingest_sink_records_total", frozenset())] == 7
        assert m[("ingest_sink_rows_written_total", frozenset())] == 3
        assert m[("ingest_sink_duplicates_total", frozenset())] == 2
        assert m[("ingest_sink_dead_letters_total", frozenset())] == 2
        assert m[("ingest_sink_batches_total", frozenset())] >= 2
        assert m[("ingest_sink_batch_duration_seconds_count", frozenset())] == \
            m[("ingest_sink_batches_total", frozenset())]
        assert m[("ingest_sink_write_failures_total", frozenset())] == 0
    finally:
        sink.stop()


def test_records_without_a_whole_event_and_invalid_json_go_to_the_dlq(
        pb, envelopes, start_sink, make_topic, pg_schema, kafka_bootstrap):
    topic, dlq = make_topic("sink-dlq2-src"), make_topic("sink-dlq2")
    _, dsn = pg_schema
    src = "/it/sink/dlq2"
    no_source = pb.envelope_pb2.Envelope()
    no_source.event.id, no_source.event.type = "no-source", "t"
    records = [
        (b"k-empty", b""),  # decodes as an Envelope with nothing in it
        (b"k-tombstone", None),
        (b"k-no-event", pb.envelope_pb2.Envelope(received_unix_nanos=1).SerializeToString()),
        (b"k-no-source", no_source.SerializeToString()),
        (b"k-bad-json", envelopes.make(src, "bad-json", text="{not json")),
        (b"k-good", envelopes.make(src, "good", text="[1]")),
    ]
    produce_all(producer(kafka_bootstrap), topic, records)
    sink = start_sink(f"--kafka-topic={topic}", f"--pg-dsn={dsn}", f"--dlq-topic={dlq}")
    try:
        wait_until("ingest_offsets to reach 6", lambda: stored_offsets(dsn, topic) == {0: 6}, 30, sinks=[sink])
        assert [(r["id"], r["data"], r["kafka_offset"]) for r in rows(dsn)] == [("good", [1], 5)]
        dead = {}
        for m in read_records(kafka_bootstrap, dlq, 5):
            headers = dict(m.headers() or [])
            assert headers["ingest_error"] and headers["ingest_topic"] == topic.encode(), headers
            assert headers["ingest_partition"] == b"0"
            dead[int(headers["ingest_offset"])] = m
        assert sorted(dead) == [0, 1, 2, 3, 4]
        for offset, m in dead.items():
            key, value = records[offset]
            assert m.key() == key
            assert (m.value() or b"") == (value or b"")  # a tombstone's dead letter may carry b"" or nothing
    finally:
        sink.stop()


def test_bad_rows_spread_through_a_big_batch_are_each_found(envelopes, start_sink, make_topic, pg_schema,
                                                             kafka_bootstrap):
    topic, dlq = make_topic("sink-split-src"), make_topic("sink-split")
    _, dsn = pg_schema
    src = "/it/sink/split"
    bad = {0, 1, 777, 2048, 2049, 4999}
    records = [(b"k", envelopes.make(src, f"e-{i}", text='{"s":"\\u0000"}' if i in bad else f'{{"i":{i}}}'))
               for i in range(5000)]
    # In Kafka before the sink starts, so they come in full batches, six rows refused among them.
    produce_all(producer(kafka_bootstrap), topic, records)
    sink = start_sink(f"--kafka-topic={topic}", f"--pg-dsn={dsn}", f"--dlq-topic={dlq}")
    try:
        wait_until("ingest_offsets to reach 5000", lambda: stored_offsets(dsn, topic) == {0: 5000}, 60,
                   sinks=[sink])
        written = pg_query(dsn, "select kafka_offset from events order by 1")
        assert [o for (o,) in written] == [i for i in range(5000) if i not in bad]
        dead = read_records(kafka_bootstrap, dlq, len(bad))
        assert sorted(int(dict(m.headers())["ingest_offset"]) for m in dead) == sorted(bad)
        assert end_offsets(kafka_bootstrap, dlq) == {0: len(bad)}
    finally:
        sink.stop()


def test_postgres_failing_for_other_reasons_is_retried_not_dead_lettered(
        envelopes, start_sink, sink_help, make_topic, pg_schema, kafka_bootstrap):
    topic, dlq = make_topic("sink-pg-fail-src"), make_topic("sink-pg-fail")
    _, dsn = pg_schema
    src = "/it/sink/pg-fail"
    sink = start_sink(f"--kafka-topic={topic}", f"--pg-dsn={dsn}", f"--dlq-topic={dlq}",
                      *optional_flags(sink_help, "--pg-retry-max=1s"))
    try:
        p = producer(kafka_bootstrap)
        produce_all(p, topic, [(b"k", envelopes.make(src, f"a-{i}", text="1")) for i in range(10)])
        wait_until("the first 10 rows", lambda: row_count(dsn) == 10, 30, sinks=[sink])
        # Refused for no fault of the rows: they must wait for Postgres, not go to the DLQ.
        pg_query(dsn, "revoke insert on events from current_user")
        try:
            produce_all(p, topic, [(b"k", envelopes.make(src, f"b-{i}", text="1")) for i in range(10)])
            wait_until("the sink to meet the refusal", lambda: "permission denied" in sink.log(), 30, sinks=[sink])
            time.sleep(1)
            assert row_count(dsn) == 10 and stored_offsets(dsn, topic) == {0: 10}
            # Behind by the 10 it cannot write, and counting its failed attempts.
            lag = {"topic": topic, "partition": "0"}
            wait_until("lag 10 in /metrics", lambda: sink.metric("ingest_sink_consumer_lag", **lag) == 10, 30,
                       sinks=[sink])
            assert sink.metric("ingest_sink_write_failures_total") >= 1
            assert sink.metric("ingest_sink_rows_written_total") == 10
        finally:
            pg_query(dsn, "grant insert on events to current_user")
        wait_until("all 20 rows", lambda: row_count(dsn) == 20 and caught_up(dsn, kafka_bootstrap, topic), 30,
                   sinks=[sink])
        assert end_offsets(kafka_bootstrap, dlq) == {0: 0}, "rows dead-lettered for Postgres' own failure"
        wait_until("lag 0", lambda: sink.metric("ingest_sink_consumer_lag", **lag) == 0, 30, sinks=[sink])
        assert sink.metric("ingest_sink_rows_written_total") == 20
        assert sink.metric("ingest_sink_records_total") == 20
        assert sink.metric("ingest_sink_dead_letters_total") == 0
    finally:
        sink.stop()


def test_partitions_start_where_ingest_offsets_says(envelopes, start_sink, make_topic, pg_schema,
                                                     kafka_bootstrap):
    topic = make_topic("sink-resume")
    _, dsn = pg_schema
    src = "/it/sink/resume"
    # A first sink, on an empty topic, only makes the tables.
    first = start_sink(f"--kafka-topic={topic}", f"--pg-dsn={dsn}")
    try:
        wait_until("the sink's tables", lambda: pg_query(dsn, "select count(*) from ingest_offsets") == [(0,)], 30,
                   sinks=[first])
    finally:
        first.stop()
    # Postgres, not the consumer group, says where to start: a new group would otherwise begin at 0.
    pg_query(dsn, "insert into ingest_offsets (topic, kafka_partition, next_offset, updated_at)"
                  " values (%s, 0, 3, now())", (topic,))
    produce_all(producer(kafka_bootstrap), topic,
                [(b"k", envelopes.make(src, f"e-{i}", text=str(i))) for i in range(5)])
    sink = start_sink(f"--kafka-topic={topic}", f"--pg-dsn={dsn}")
    try:
        wait_until("ingest_offsets to reach 5", lambda: stored_offsets(dsn, topic) == {0: 5}, 30, sinks=[sink])
        assert [(r["id"], r["kafka_offset"]) for r in rows(dsn)] == [("e-3", 3), ("e-4", 4)]
    finally:
        sink.stop()


# ---- crashes, outages, replicas ------------------------------------------------------------

def test_kill_9_mid_stream_then_restart_writes_each_event_exactly_once(
        envelopes, start_sink, make_topic, pg_schema, kafka_bootstrap):
    topic = make_topic("sink-kill", partitions=3)
    _, dsn = pg_schema
    group = f"it-sink-kill-{uuid.uuid4().hex[:8]}"
    # The killed member holds its partitions until its session times out: the broker's least, 6 s.
    flags = (f"--kafka-topic={topic}", f"--pg-dsn={dsn}", f"--kafka-group={group}",
             "--kafka.session.timeout.ms=6000")
    # 100,000 events over about four seconds: the sink is killed while they still flow.
    stream = Stream(kafka_bootstrap, topic, envelopes, 100_000, 2500, 0.1).start()
    first = start_sink(*flags)
    try:
        wait_until("the first rows", lambda: row_count(dsn) > 0, 60, sinks=[first], interval=0.02)
        first.kill()
        at_kill = row_count(dsn)
        assert stream.running() and at_kill < 100_000, (at_kill, stream.produced)
    finally:
        first.kill()
    second = start_sink(*flags)
    try:
        stream.join()
        wait_until("100,000 rows and the end offsets stored",
                   lambda: row_count(dsn) == 100_000 and caught_up(dsn, kafka_bootstrap, topic), 90,
                   sinks=[second], interval=0.5)
        assert_exactly_once(dsn, kafka_bootstrap, topic, stream.source, 100_000)
    finally:
        second.stop()


def test_postgres_outage_under_load_loses_nothing_and_the_sink_recovers_alone(
        envelopes, start_sink, sink_help, make_topic, pg_schema, pg_server, kafka_bootstrap):
    topic = make_topic("sink-pg-outage", partitions=3)
    _, dsn = pg_schema
    sink = start_sink(f"--kafka-topic={topic}", f"--pg-dsn={dsn}", *optional_flags(sink_help, "--pg-retry-max=1s"))
    # 30,000 events over about twelve seconds; Postgres is away for five of them.
    stream = Stream(kafka_bootstrap, topic, envelopes, 30_000, 250, 0.1).start()
    try:
        wait_until("the first rows", lambda: row_count(dsn) > 0, 30, sinks=[sink])
        pg_server.stop()
        try:
            if sink.admin_url:
                wait_until("/readyz to say not ready", lambda: requests.get(sink.admin_url + "/readyz",
                                                                            timeout=2).status_code == 503,
                           10, sinks=[sink])
            time.sleep(5)
            assert sink.alive(), f"the sink exited while Postgres was down:\n{sink.log_tail()}"
            assert stream.running(), "the stream ended before Postgres came back: make it longer"
        finally:
            pg_server.start()
        stream.join()
        wait_until("30,000 rows and the end offsets stored",
                   lambda: row_count(dsn) == 30_000 and caught_up(dsn, kafka_bootstrap, topic), 60,
                   sinks=[sink], interval=0.5)
        assert_exactly_once(dsn, kafka_bootstrap, topic, stream.source, 30_000)
        if sink.admin_url:
            wait_until("/readyz to say ready", lambda: requests.get(sink.admin_url + "/readyz",
                                                                    timeout=2).status_code == 200, 10, sinks=[sink])
    finally:
        sink.stop()


def group_assignment(bootstrap, group, topic):
    """[sorted partitions of topic] for each member of the consumer group (empty when it is rebalancing)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})  # held: a collected client never resolves its futures
    desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    return [sorted(tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic)
            for m in desc.members]


def test_two_sinks_in_one_group_split_the_partitions_and_write_each_event_once(
        envelopes, start_sink, make_topic, pg_schema, kafka_bootstrap):
    topic = make_topic("sink-pair", partitions=4)
    _, dsn = pg_schema
    group = f"it-sink-pair-{uuid.uuid4().hex[:8]}"
    flags = (f"--kafka-topic={topic}", f"--pg-dsn={dsn}", f"--kafka-group={group}")
    # Both start at once on an empty schema: the migrations run under the advisory lock, once.
    sinks = [start_sink(*flags, wait=False), start_sink(*flags, wait=False)]
    try:
        def split():
            a = group_assignment(kafka_bootstrap, group, topic)
            return a if len(a) == 2 and all(a) and sorted(a[0] + a[1]) == [0, 1, 2, 3] else None

        assignment = wait_until("two members with two partitions or so each", split, 60, sinks=sinks, interval=0.5)
        stream = Stream(kafka_bootstrap, topic, envelopes, 20_000, 20_000, 0).start()
        stream.join()
        wait_until("20,000 rows and the end offsets stored",
                   lambda: row_count(dsn) == 20_000 and caught_up(dsn, kafka_bootstrap, topic), 60,
                   sinks=sinks, interval=0.5)
        assert_exactly_once(dsn, kafka_bootstrap, topic, stream.source, 20_000)
        # Nobody moved meanwhile: each member wrote the partitions it held.
        assert sorted(group_assignment(kafka_bootstrap, group, topic)) == sorted(assignment)
        assert all(s.alive() for s in sinks)
        versions = pg_query(dsn, "select version, count(*) from ingest_schema_migrations group by version")
        assert versions and all(n == 1 for _, n in versions), versions
        assert sum("migrated" in s.log() for s in sinks) == 1, "each migration is applied by one sink"
    finally:
        for s in sinks:
            s.stop()


def test_sinks_joining_and_leaving_under_load_write_each_event_once(
        envelopes, start_sink, make_topic, pg_schema, kafka_bootstrap):
    topic = make_topic("sink-rebalance", partitions=4)
    _, dsn = pg_schema
    group = f"it-sink-rebalance-{uuid.uuid4().hex[:8]}"
    flags = (f"--kafka-topic={topic}", f"--pg-dsn={dsn}", f"--kafka-group={group}")
    # 60,000 events over about six seconds; the group changes twice while they flow.
    stream = Stream(kafka_bootstrap, topic, envelopes, 60_000, 1000, 0.1).start()
    a = start_sink(*flags)
    b = None
    try:
        wait_until("the first rows", lambda: row_count(dsn) > 0, 30, sinks=[a])
        b = start_sink(*flags)
        wait_until("both sinks to hold partitions",
                   lambda: sorted(len(m) > 0 for m in group_assignment(kafka_bootstrap, group, topic)) == [True, True],
                   30, sinks=[a, b], interval=0.2)
        time.sleep(1)
        assert stream.running(), "the stream ended before the second rebalance: make it longer"
        # A clean stop mid-stream: the leaver's partitions move to b, which resumes where Postgres says.
        assert a.stop() == 0, a.log_tail()
        stream.join()
        wait_until("60,000 rows and the end offsets stored",
                   lambda: row_count(dsn) == 60_000 and caught_up(dsn, kafka_bootstrap, topic), 60,
                   sinks=[b], interval=0.5)
        assert_exactly_once(dsn, kafka_bootstrap, topic, stream.source, 60_000)
        assert b.stop() == 0, b.log_tail()
    finally:
        a.stop()
        if b:
            b.stop()


# ---- the stack's own sink ------------------------------------------------------------------

def test_stack_sink_writes_what_the_stack_gateway_accepts(apps_running, http_url, pg_dsn):
    if not apps_running:
        pytest.skip("the stack runs without gateway and sink (INGEST_LOCAL_SKIP_APPS=1)")
    eid = new_id()
    post(http_url + "/v1/events", {"id": eid, "source": "/it/sink/stack", "type": "t", "data": {"via": "stack"}})
    found = wait_until("the stack's sink to write the event",
                       lambda: pg_query(pg_dsn, "select data, protocol from events where source = %s and id = %s",
                                        ("/it/sink/stack", eid)), 30)
    assert found == [({"via": "stack"}, "HTTP")]
