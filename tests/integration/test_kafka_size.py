"""Events Kafka cannot take for their size: 413 too_large, never a 503 to retry forever (issue 14).

A private topic takes records of 40,000 bytes at most, far under what the
gateway's --max-event-bytes (1 MiB) lets in: the gateway warns at start-up,
and an event over the topic's limit is refused as too_large over HTTP, gRPC
and UDP, while one under it lands. And with the stack's topic settings an
event of the whole --max-event-bytes goes through.
"""
import base64
import json
import os
import socket
import time
import uuid

import grpc
import pytest
import requests

from conftest import TOPIC_MAX_MESSAGE_BYTES

TOPIC_LIMIT = 40000


def noise(n):
    """Bytes lz4 cannot shrink: the broker's limit is on the compressed batch."""
    return os.urandom(n)


def wait_for_log(gw, text, timeout=15):
    deadline = time.monotonic() + timeout
    while text not in gw.log():
        assert time.monotonic() < deadline, f"no {text!r} in the gateway's log:\n{gw.log_tail()}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def small(start_gateway, make_topic):
    topic = make_topic("ksize", config={"max.message.bytes": str(TOPIC_LIMIT)})
    g = start_gateway(f"--kafka-topic={topic}", "--gateway-id=it-ksize")
    g.topic = topic
    # The topic check runs in the background, a second or so after the start.
    wait_for_log(g, f"topic {topic} takes records up to {TOPIC_LIMIT} bytes")
    yield g
    g.stop()


def binary_post(gw, data, ack="committed", **headers):
    h = {"ce-specversion": "1.0", "ce-source": "/it/ksize", "ce-type": "com.example.ksize",
         "ce-id": f"ks-{uuid.uuid4()}", "Content-Type": "application/octet-stream", **headers}
    return requests.post(gw.events_url, data=data, headers=h, params={"ack": ack}, timeout=30), h["ce-id"]


def test_start_up_warning_names_both_numbers_and_the_fix(small):
    line = next(l for l in small.log().splitlines() if f"topic {small.topic} takes records" in l)
    assert "WARN" in line.upper(), line
    assert "--max-event-bytes=1048576" in line, line
    assert "Set the topic's max.message.bytes to at least" in line, line
    # The figure it asks for is what the producer was given: the topic's setting that fixes it.
    need = int(line.split("to at least ")[1].split(",")[0].split()[0].rstrip("."))
    assert 2 * 1048576 < need < 2 * 1048576 + 8192, line


def test_http_event_over_the_topic_limit_is_413_too_large(small, topic_reader):
    reader = topic_reader(small.topic)
    mark = reader.mark()
    before = small.metric("ingest_rejected_total", protocol="http", reason="too_large")
    r, _ = binary_post(small, noise(60000))
    assert r.status_code == 413, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == "too_large", err
    assert "too large for the Kafka topic" in err["message"], err
    assert f"more than the {TOPIC_LIMIT} it takes" in err["message"], err
    assert "Retry-After" not in r.headers
    assert small.metric("ingest_rejected_total", protocol="http", reason="too_large") == before + 1
    assert reader.count_since(mark) == 0


def test_event_under_the_topic_limit_lands(small, topic_reader):
    reader = topic_reader(small.topic)
    mark = reader.mark()
    # After the refusals above too: the producer did not get stuck on them.
    data = noise(30000)
    r, eid = binary_post(small, data)
    assert r.status_code == 200, (r.status_code, r.text)
    r2, eid2 = binary_post(small, noise(30000), ack="accepted")
    assert r2.status_code == 202, (r2.status_code, r2.text)
    found = reader.find_since(mark, {eid, eid2})
    assert found[eid].event.binary_data == data


def test_grpc_publish_over_the_topic_limit_is_invalid_argument(small, pb):
    ev = pb.cloudevent_pb2.CloudEvent(id=f"ks-{uuid.uuid4()}", source="/it/ksize", spec_version="1.0",
                                      type="com.example.ksize", binary_data=noise(60000))
    before = small.metric("ingest_rejected_total", protocol="grpc", reason="too_large")
    with grpc.insecure_channel(small.addrs["--grpc-addr"]) as ch:
        stub = pb.ingest_pb2_grpc.IngestStub(ch)
        with pytest.raises(grpc.RpcError) as ei:
            stub.Publish(pb.ingest_pb2.PublishRequest(events=[ev]), timeout=30)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ei.value
        assert "too large for the Kafka topic" in ei.value.details(), ei.value.details()
        # And the next one, under the limit, goes through on the same channel.
        ev.id, ev.binary_data = f"ks-{uuid.uuid4()}", b"g" * 100
        assert stub.Publish(pb.ingest_pb2.PublishRequest(events=[ev]), timeout=30).accepted == 1
    assert small.metric("ingest_rejected_total", protocol="grpc", reason="too_large") == before + 1


def test_udp_datagram_over_the_topic_limit_is_a_counted_drop(small):
    host, port = small.addrs["--udp-addr"].rsplit(":", 1)
    before = small.metric("ingest_rejected_total", protocol="udp", reason="too_large")
    ev = {"specversion": "1.0", "id": f"ks-{uuid.uuid4()}", "source": "/it/ksize", "type": "com.example.ksize",
          "data_base64": base64.b64encode(noise(45000)).decode()}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(json.dumps(ev).encode(), (host, int(port)))
    deadline = time.monotonic() + 15
    while small.metric("ingest_rejected_total", protocol="udp", reason="too_large") != before + 1:
        assert time.monotonic() < deadline, small.log_tail()
        time.sleep(0.1)
    wait_for_log(small, "dropped a record nobody waited for: an event is too large for the Kafka topic")


def test_stack_topic_settings_take_a_whole_max_event_bytes(start_gateway, make_topic, topic_reader):
    """Default gateway, topic made as deploy/local/up makes them: 1 MiB events go through, data or key."""
    topic = make_topic("ksize-full")  # max.message.bytes as deploy/local/up sets it
    g = start_gateway(f"--kafka-topic={topic}")
    wait_for_log(g, f"topic {topic} takes records up to {TOPIC_MAX_MESSAGE_BYTES} bytes")
    assert "Set the topic's max.message.bytes" not in g.log()
    reader = topic_reader(topic)
    mark = reader.mark()
    attrs = len("1.0") + len("/it/ksize") + len("com.example.ksize") + 36 + len("application/octet-stream")
    data = noise(1048576 - attrs)
    r, eid = binary_post(g, data, **{"ce-id": str(uuid.uuid4())})
    assert r.status_code == 200, (r.status_code, r.text)
    # The worst for the record: the subject is also the key, so it is there twice.
    sid = str(uuid.uuid4())
    # JSON counts its text (names, quotes) against the limit too: a little under 1 MiB of subject.
    subject = base64.b64encode(noise(1048576)).decode()[:1048576 - 200]
    big = {"specversion": "1.0", "id": sid, "source": "/it/ksize", "type": "com.example.ksize", "subject": subject}
    r2 = requests.post(g.events_url, data=json.dumps(big), params={"ack": "committed"},
                       headers={"Content-Type": "application/cloudevents+json"}, timeout=30)
    assert r2.status_code == 200, (r2.status_code, r2.text[:300])
    found = reader.find_since(mark, {eid, sid}, timeout=30)
    assert found[eid].event.binary_data == data
    assert found[sid].key == subject.encode()
    g.stop()
