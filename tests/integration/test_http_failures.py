"""What the HTTP front end answers when Kafka is away or the queue is full.

- The real broker stopped (tests/integration/kafka_ctl, restarted whatever
  happens): a `committed` request answers 503 ack_timeout with Retry-After
  soon after the ack timeout; once the broker is back, the same gateway
  serves again with no restart, and what it had accepted meanwhile arrives.
- A broker that never answers (bootstrap on a closed port): 503 ack_timeout;
  with a tiny queue, 429 overloaded with Retry-After once the queue is above
  its high-water mark.
"""

import json
import time
import uuid

import pytest
import requests

ACK_TIMEOUT_S = 2


def event(eid, source="/it/failures"):
    return json.dumps({"id": eid, "source": source, "type": "com.example.failure"}).encode()


def post(url, eid, ack=None, timeout=30):
    return requests.post(url, data=event(eid), params={"ack": ack} if ack else None,
                         headers={"Content-Type": "application/cloudevents+json"}, timeout=timeout)


def check_retryable(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers.get("Content-Type", "").split(";")[0].strip().lower() == "application/json"
    err = r.json()["error"]
    assert err["code"] == code, err
    assert "index" not in err, err
    retry_after = r.headers.get("Retry-After", "")
    assert retry_after.isdigit(), f"Retry-After: {retry_after!r}"


def closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def readyz(program):
    r = requests.get(program.admin_url + "/readyz", timeout=10)
    return r.status_code, r.text


def wait_readyz(program, want, timeout=90):
    deadline = time.monotonic() + timeout
    while (got := readyz(program)) != want:
        assert time.monotonic() < deadline, f"/readyz is {got}, not {want}, after {timeout}s"
        time.sleep(0.5)


def test_broker_stopped_gives_503_then_recovers_without_restart(start_gateway, start_sink, make_topic,
                                                                topic_reader, pg_schema, kafka_broker):
    topic = make_topic("failures")
    gw = start_gateway(f"--kafka-topic={topic}", f"--ack-timeout={ACK_TIMEOUT_S}s")
    sink = start_sink(f"--kafka-topic={topic}", f"--pg-dsn={pg_schema[1]}")
    wait_readyz(gw, (200, "ready\n"), 30)
    wait_readyz(sink, (200, "ready\n"), 30)
    reader = topic_reader(topic)
    mark = reader.mark()
    # Warm: the producer knows the topic and has its idempotence id.
    assert post(gw.events_url, f"it-before-{uuid.uuid4()}").status_code == 200

    kafka_broker.stop()
    try:
        start = time.monotonic()
        r = post(gw.events_url, f"it-during-{uuid.uuid4()}", timeout=ACK_TIMEOUT_S + 20)
        elapsed = time.monotonic() - start
        check_retryable(r, 503, "ack_timeout")
        # Answered because the ack timeout ran out: not before it, and not long after.
        assert ACK_TIMEOUT_S - 0.5 <= elapsed <= ACK_TIMEOUT_S + 3, elapsed

        # `accepted` only needs the queue, which has room.
        queued = f"it-queued-{uuid.uuid4()}"
        r = post(gw.events_url, queued, ack="accepted", timeout=10)
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": 1, "ids": [queued]}

        assert gw.metric("ingest_dropped_total", protocol="http", reason="ack_timeout") == 1
        assert gw.metric("ingest_events_received_total", protocol="http") == 3

        # Both programs say why they are not ready, and stay alive (liveness is not readiness).
        wait_readyz(gw, (503, "not ready: Kafka not reachable\n"), 30)
        wait_readyz(sink, (503, "not ready: Kafka not reachable\n"), 30)
        assert requests.get(gw.admin_url + "/healthz", timeout=5).status_code == 200
    finally:
        kafka_broker.start()

    # Back: the same gateway process answers 200 again once it has reconnected.
    deadline = time.monotonic() + 90
    statuses = []
    while True:
        after = f"it-after-{uuid.uuid4()}"
        r = post(gw.events_url, after, timeout=ACK_TIMEOUT_S + 20)
        statuses.append(r.status_code)
        if r.status_code == 200:
            break
        assert r.status_code == 503, (r.status_code, r.text)
        assert time.monotonic() < deadline, f"no 200 within 90 s of the broker's return: {statuses}"
        time.sleep(1)
    assert gw.proc.poll() is None
    assert r.json() == {"accepted": 1, "ids": [after]}
    wait_readyz(gw, (200, "ready\n"))
    wait_readyz(sink, (200, "ready\n"))
    assert sink.alive()

    # What was accepted while Kafka was away was delivered once it came back.
    recs = reader.read_since(mark, reader.count_since(mark))
    ids = {rec.event.id for rec in recs}
    assert queued in ids and after in ids, sorted(ids)


def test_unreachable_kafka_gives_503_ack_timeout(start_gateway):
    gw = start_gateway(f"--kafka-bootstrap=127.0.0.1:{closed_port()}", "--ack-timeout=1s", "--shutdown-timeout=1s")
    for _ in range(2):
        start = time.monotonic()
        r = post(gw.events_url, f"it-{uuid.uuid4()}", timeout=20)
        check_retryable(r, 503, "ack_timeout")
        assert time.monotonic() - start <= 1 + 3
    assert gw.proc.poll() is None
    # A 503 is about Kafka, not the request: `accepted` still works.
    r = post(gw.events_url, f"it-{uuid.uuid4()}", ack="accepted", timeout=10)
    assert r.status_code == 202, r.text


def test_queue_above_high_water_gives_429(start_gateway):
    # A batch must fit in the queue, so the gateway wants --max-batch-events
    # at most --queue-capacity.
    gw = start_gateway(f"--kafka-bootstrap=127.0.0.1:{closed_port()}", "--queue-capacity=8",
                       "--queue-high-water=4", "--max-batch-events=8", "--kafka.queue.buffering.max.messages=1",
                       "--ack-timeout=5s", "--shutdown-timeout=1s")
    statuses = []
    r = None
    for i in range(40):
        r = post(gw.events_url, f"it-fill-{i}-{uuid.uuid4()}", ack="accepted", timeout=10)
        statuses.append(r.status_code)
        if r.status_code != 202:
            break
    assert statuses[-1] == 429, f"no 429 after {len(statuses)} requests: {statuses}"
    assert set(statuses[:-1]) == {202} and len(statuses) >= 2, statuses
    check_retryable(r, 429, "overloaded")

    # Nothing drains the queue: every new request is refused, at either ack level, at once.
    for ack in ("accepted", "committed", None):
        start = time.monotonic()
        r = post(gw.events_url, f"it-over-{uuid.uuid4()}", ack=ack, timeout=10)
        check_retryable(r, 429, "overloaded")
        assert time.monotonic() - start < 3, "a 429 must not wait for the ack timeout (5 s)"
    r = requests.post(gw.events_url, data=json.dumps([{"source": "/it/f", "type": "t"}] * 2).encode(),
                      headers={"Content-Type": "application/cloudevents-batch+json"}, timeout=10)
    check_retryable(r, 429, "overloaded")
    assert gw.proc.poll() is None


@pytest.fixture(autouse=True)
def _stack_broker_serves_after(request, kafka_bootstrap, events_topic):
    """After each test here, the stack's broker serves the events topic (the rest of the suite needs it)."""
    yield
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(events_topic, timeout=30)
    assert md.brokers, "the broker is not back"
    assert all(p.leader >= 0 for p in md.topics[events_topic].partitions.values())
