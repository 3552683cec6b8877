"""The gateway's admin port: /healthz, /readyz with its reason, and /metrics
(parsed with prometheus_client) moving with the HTTP traffic that should move it.
UDP's counters are checked in test_udp.py."""
import json
import socket
import time
import uuid

import pytest
import requests


def dead_broker():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket is closed


def post(g, body, ctype="application/cloudevents+json", **params):
    return requests.post(g.events_url, data=body, params=params, headers={"Content-Type": ctype}, timeout=10)


@pytest.fixture(scope="module")
def agw(start_gateway, make_topic):
    g = start_gateway(f"--kafka-topic={make_topic('admin')}", "--auth-token=s3cret")
    yield g
    g.stop()


def test_probes(agw):
    r = requests.get(agw.admin_url + "/healthz", timeout=5)
    assert (r.status_code, r.text) == (200, "ok\n")
    deadline = time.monotonic() + 10
    while (r := requests.get(agw.admin_url + "/readyz", timeout=5)).status_code != 200:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)
    assert r.text == "ready\n"
    r = requests.get(agw.admin_url + "/nope", timeout=5)
    assert r.status_code == 404 and "/metrics" in r.text
    assert requests.post(agw.admin_url + "/metrics", timeout=5).status_code == 405


def test_http_counters_move_with_traffic(agw):
    auth = {"Authorization": "Bearer s3cret"}
    http = dict(protocol="http")
    before = agw.metrics()

    def delta(name, **labels):
        key = (name, frozenset(labels.items()))
        return agw.metrics().get(key, 0) - before.get(key, 0)

    batch = json.dumps([{"source": "/it/adm", "type": "t", "id": f"{uuid.uuid4()}-{i}"} for i in range(3)])
    r = requests.post(agw.events_url, data=batch, timeout=10,
                      headers={**auth, "Content-Type": "application/cloudevents-batch+json"})
    assert r.status_code == 200, r.text
    r = requests.post(agw.events_url, data='{"source":"/it/adm","type":"t"}', params={"ack": "accepted"},
                      headers={**auth, "Content-Type": "application/cloudevents+json"}, timeout=10)
    assert r.status_code == 202, r.text
    assert post(agw, '{"source":"/it/adm","type":"t"}').status_code == 401
    r = requests.post(agw.events_url, data='{"source":', timeout=10,
                      headers={**auth, "Content-Type": "application/cloudevents+json"})
    assert r.status_code == 400
    r = requests.post(agw.events_url, data='{"type":"t"}', timeout=10,
                      headers={**auth, "Content-Type": "application/cloudevents+json"})
    assert r.status_code == 400
    assert requests.get(agw.url + "/elsewhere", timeout=10).status_code == 404

    assert delta("ingest_requests_total", **http) == 6
    assert delta("ingest_events_received_total", **http) == 4
    assert delta("ingest_rejected_total", reason="unauthorized", **http) == 1
    assert delta("ingest_rejected_total", reason="malformed_json", **http) == 1
    assert delta("ingest_rejected_total", reason="invalid_event", **http) == 1
    assert delta("ingest_rejected_total", reason="not_found", **http) == 1
    assert delta("ingest_request_duration_seconds_count", **http) == 6
    assert delta("ingest_request_duration_seconds_bucket", le="+Inf", **http) == 6
    assert delta("ingest_request_duration_seconds_sum", **http) > 0
    # The ack=accepted event was answered before Kafka took it: its delivery may come a moment later.
    deadline = time.monotonic() + 10
    while delta("ingest_kafka_delivered_total") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert delta("ingest_kafka_delivered_total") >= 4
    m = agw.metrics()
    assert m[("ingest_queue_capacity", frozenset())] == 65536
    assert m[("ingest_kafka_failed_total", frozenset())] == 0


def test_not_ready_without_kafka_then_above_high_water(start_gateway):
    g = start_gateway(f"--kafka-bootstrap={dead_broker()}", "--queue-capacity=8", "--queue-high-water=4",
                      "--max-batch-events=8", "--kafka.queue.buffering.max.messages=1", "--shutdown-timeout=1s")
    r = requests.get(g.admin_url + "/readyz", timeout=10)
    assert (r.status_code, r.text) == (503, "not ready: Kafka not reachable\n")
    assert requests.get(g.admin_url + "/healthz", timeout=5).status_code == 200
    for i in range(12):
        post(g, json.dumps({"source": "/it/adm", "type": "t", "id": f"full-{i}"}), ack="accepted")
    r = requests.get(g.admin_url + "/readyz", timeout=10)
    assert (r.status_code, r.text) == (503, "not ready: the queue is above its high-water mark\n")
    assert g.metric("ingest_queue_depth") >= 4
    assert g.metric("ingest_dropped_total", protocol="http", reason="overloaded") >= 1
    g.stop()
