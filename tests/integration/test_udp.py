"""UDP ingest: datagrams from a plain Python socket arrive in Kafka as Envelopes, protocol UDP.

Bad datagrams are dropped one by one, each counted in /metrics under its
reason (read with prometheus_client's parser), and the gateway keeps
receiving. IPv6 works as IPv4 does.
"""
import json
import pathlib
import re
import socket
import subprocess
import time
import uuid

import pytest


def udp_target(g):
    host, port = g.addrs["--udp-addr"].rsplit(":", 1)
    return host.strip("[]"), int(port)


@pytest.fixture(scope="module")
def ugw(start_gateway, make_topic):
    # Small limits, so that oversize events, long NDJSON lines, too many lines
    # and truncated datagrams fit in a datagram.
    topic = make_topic("udp")
    g = start_gateway(f"--kafka-topic={topic}", "--gateway-id=it-udp", "--max-event-bytes=4096",
                      "--max-batch-events=5", "--udp-max-datagram=16384")
    g.topic = topic
    g.udp = udp_target(g)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def ureader(ugw, topic_reader):
    return topic_reader(ugw.topic)


def send(addr, *datagrams, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((addr[0], 0))  # so getsockname() names the address the gateway sees
    try:
        for d in datagrams:
            s.sendto(d, addr)
        host, port = s.getsockname()[:2]
        return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    finally:
        s.close()


def event(run, n, **more):
    return json.dumps({"source": "/udp/it", "type": "t", "id": f"{run}-{n}", **more})


def test_json_ndjson_and_protobuf_datagrams_reach_kafka(ugw, ureader, pb):
    run = uuid.uuid4().hex[:8]
    mark = ureader.mark()
    before = ugw.metrics()
    # Year 1, as a Timestamp: far past int64 nanoseconds, once an overflow on this path.
    ce = pb.cloudevent_pb2.CloudEvent(id=f"p-{run}", source="/udp/pb", type="t.pb", binary_data=b"\x00\x01",
                                      attributes={"time": _attr(pb, ce_timestamp={"seconds": -62135596800,
                                                                                  "nanos": 5})})
    peer = send(ugw.udp,
                json.dumps({"specversion": "1.0", "source": "/udp/json", "type": "t.json", "id": f"j-{run}",
                            "data": {"n": 1}}).encode(),
                (json.dumps({"source": "/udp/nd", "type": "t", "id": f"n1-{run}"}) + "\n" +
                 json.dumps({"source": "/udp/nd", "type": "t", "id": f"n2-{run}", "tenant": "acme"}) + "\n").encode(),
                ce.SerializeToString())
    recs = {r.envelope.event.id: r for r in ureader.read_since(mark, 4)}
    assert set(recs) == {f"j-{run}", f"n1-{run}", f"n2-{run}", f"p-{run}"}
    for r in recs.values():
        assert r.envelope.protocol == pb.envelope_pb2.PROTOCOL_UDP
        assert r.envelope.peer == peer
        assert r.envelope.gateway_id == "it-udp"
        assert dict(r.headers)["ce_id"] == r.envelope.event.id.encode()
    assert json.loads(recs[f"j-{run}"].envelope.event.text_data) == {"n": 1}
    assert recs[f"n2-{run}"].envelope.event.attributes["tenant"].ce_string == "acme"
    assert recs[f"p-{run}"].envelope.event.binary_data == b"\x00\x01"
    t = recs[f"p-{run}"].envelope.event.attributes["time"].ce_timestamp
    assert (t.seconds, t.nanos) == (-62135596800, 5)
    assert recs[f"p-{run}"].key == b"/udp/pb"
    after = ugw.metrics()
    udp = frozenset({("protocol", "udp")})
    assert after[("ingest_requests_total", udp)] - before[("ingest_requests_total", udp)] == 3
    assert after[("ingest_events_received_total", udp)] - before[("ingest_events_received_total", udp)] == 4


def _pb(pb, **fields):
    return pb.cloudevent_pb2.CloudEvent(**fields).SerializeToString()


def _attr(pb, **value):
    return pb.cloudevent_pb2.CloudEvent.CloudEventAttributeValue(**value)


# (name, reason, datagram or a function of the generated protobuf module)
BAD = [
    ("empty", "empty", b""),
    ("blanks only", "empty", b"  \r\n\t "),
    ("bytes that are no protobuf", "malformed_protobuf", b"\xff\xfe\xfd"),
    ("protobuf field longer than the datagram", "malformed_protobuf", b"\x0a\x05ab"),
    ("protobuf varint cut short", "malformed_protobuf", b"\x08"),
    ("a JSON batch (not one event)", "malformed_protobuf", b'[{"source":"/udp/bad","type":"t"}]'),
    ("JSON cut short", "malformed_json", b'{"source":"/udp/bad","type":'),
    ("JSON not an object", "malformed_json", b"{]"),
    ("JSON trailing comma", "malformed_json", b'{"source":"/udp/bad","type":"t",}'),
    ("JSON NaN", "malformed_json", b'{"source":"/udp/bad","type":"t","data":NaN}'),
    ("NDJSON with a broken line", "malformed_json", b'{"source":"/udp/bad","type":"t"}\n{"source":\n'),
    ("missing source", "invalid_event", b'{"type":"t"}'),
    ("empty type", "invalid_event", b'{"source":"/udp/bad","type":""}'),
    ("specversion 0.3", "invalid_event", b'{"source":"/udp/bad","type":"t","specversion":"0.3"}'),
    ("extension name with capitals", "invalid_event", b'{"source":"/udp/bad","type":"t","Bad_Name":"x"}'),
    ("time not RFC 3339", "invalid_event", b'{"source":"/udp/bad","type":"t","time":"yesterday"}'),
    ("duplicate attribute", "invalid_event", b'{"source":"/udp/bad","type":"t","type":"u"}'),
    ("NDJSON with one invalid line", "invalid_event", b'{"source":"/udp/bad","type":"t"}\n{"source":"","type":"t"}\n'),
    ("protobuf without source", "invalid_event", lambda pb: _pb(pb, id="x", type="t")),
    ("protobuf with spec_version 2.0", "invalid_event",
     lambda pb: _pb(pb, id="x", source="/udp/bad", type="t", spec_version="2.0")),
    ("protobuf with proto_data", "invalid_event",
     lambda pb: _pb(pb, id="x", source="/udp/bad", type="t", proto_data={"type_url": "x/y", "value": b"z"})),
    ("protobuf time after year 9999", "invalid_event",
     lambda pb: _pb(pb, id="x", source="/udp/bad", type="t",
                    attributes={"time": _attr(pb, ce_timestamp={"seconds": 253402300800})})),
    ("protobuf time with negative nanos", "invalid_event",
     lambda pb: _pb(pb, id="x", source="/udp/bad", type="t",
                    attributes={"time": _attr(pb, ce_timestamp={"seconds": 1, "nanos": -1})})),
    ("protobuf with a bad extension name", "invalid_event",
     lambda pb: _pb(pb, id="x", source="/udp/bad", type="t", attributes={"Bad": _attr(pb, ce_string="v")})),
    ("event over --max-event-bytes", "too_large",
     json.dumps({"source": "/udp/bad", "type": "t", "data": "x" * 8000}).encode()),
    ("NDJSON line over --max-event-bytes", "too_large",
     (event("big", 0) + "\n" + event("big", 1, data="y" * 8000) + "\n").encode()),
    ("NDJSON over --max-batch-events", "too_many_events",
     "".join(event("many", i) + "\n" for i in range(6)).encode()),
    ("datagram over --udp-max-datagram", "truncated",
     json.dumps({"source": "/udp/bad", "type": "t", "data": "z" * 20000}).encode()),
]


def test_bad_datagrams_are_counted_by_reason_and_the_gateway_keeps_receiving(ugw, ureader, pb):
    assert len(BAD) >= 20
    run = uuid.uuid4().hex[:8]
    mark = ureader.mark()
    udp = frozenset({("protocol", "udp")})
    for name, reason, d in BAD:
        datagram = d(pb) if callable(d) else d
        before = ugw.metrics()
        send(ugw.udp, datagram)
        # Datagrams are handled in order: once the count moved, this one was.
        deadline = time.monotonic() + 10
        while True:
            after = ugw.metrics()
            if after[("ingest_requests_total", udp)] > before[("ingest_requests_total", udp)]:
                break
            assert time.monotonic() < deadline, f"{name}: the gateway never counted the datagram"
            time.sleep(0.01)
        moved = {k[1]: after[k] - before.get(k, 0) for k in after
                 if k[0] in ("ingest_rejected_total", "ingest_dropped_total") and after[k] != before.get(k, 0)}
        assert moved == {frozenset({("protocol", "udp"), ("reason", reason)}): 1}, name
        assert after[("ingest_events_received_total", udp)] == before[("ingest_events_received_total", udp)], name
    send(ugw.udp, event(run, "after").encode())
    recs = ureader.read_since(mark, 1)
    assert [r.envelope.event.id for r in recs] == [f"{run}-after"]
    time.sleep(1)
    # Nothing of the bad ones arrived, not even the good lines of half-bad NDJSON datagrams.
    assert ureader.count_since(mark) == 1
    assert ugw.proc.poll() is None
    log = ugw.log()
    # Logged, at a limited rate: far fewer lines than drops.
    lines = [ln for ln in log.splitlines() if "dropped datagram" in ln]
    assert 1 <= len(lines) < len(BAD), lines
    assert "reason=" in lines[0]


def test_ipv6(start_gateway, make_topic, topic_reader, pb):
    topic = make_topic("udp6")
    port = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    port.bind(("::1", 0))
    addr = f"[::1]:{port.getsockname()[1]}"
    port.close()
    g = start_gateway(f"--kafka-topic={topic}", f"--udp-addr={addr}")
    reader = topic_reader(topic)
    mark = reader.mark()
    run = uuid.uuid4().hex[:8]
    peer = send(udp_target(g), event(run, 6).encode(), family=socket.AF_INET6)
    (rec,) = reader.read_since(mark, 1)
    assert rec.envelope.event.id == f"{run}-6"
    assert rec.envelope.peer == peer and peer.startswith("[::1]:")
    assert rec.envelope.protocol == pb.envelope_pb2.PROTOCOL_UDP
    g.stop()


def test_overload_drops_are_counted(start_gateway, make_topic):
    # No broker: nothing leaves the queue, so it fills and datagrams are dropped as overloaded.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    g = start_gateway(f"--kafka-bootstrap={dead}", "--queue-capacity=8", "--queue-high-water=4",
                      "--max-batch-events=8", "--kafka.queue.buffering.max.messages=1", "--shutdown-timeout=1s")
    target = udp_target(g)
    run = uuid.uuid4().hex[:8]
    send(target, *[event(run, i).encode() for i in range(20)])
    deadline = time.monotonic() + 10
    while g.metric("ingest_requests_total", protocol="udp") < 20:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # The queue takes 4 before its high-water mark; the producer may hold a couple more in hand.
    received = g.metric("ingest_events_received_total", protocol="udp")
    overloaded = g.metric("ingest_dropped_total", protocol="udp", reason="overloaded")
    assert received + overloaded == 20 and 4 <= received <= 8, (received, overloaded)
    assert "reason=overloaded" in g.log()
    assert g.proc.poll() is None
    g.stop()


def _rcvbuf(port):
    """The receive buffer the kernel gave the socket on this UDP port (ss's skmem rb), in bytes."""
    out = subprocess.run(["ss", "-Hulnm", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    return int(re.search(r"\brb(\d+)", out).group(1))


def _rmem_max():
    return int(pathlib.Path("/proc/sys/net/core/rmem_max").read_text())


def test_receive_buffer_past_rmem_max_with_cap_net_admin(start_gateway):
    # Root here has CAP_NET_ADMIN: the buffer is what --udp-rcvbuf asks, whatever the sysctl says.
    want = 2 * _rmem_max()
    g = start_gateway(f"--udp-rcvbuf={want}")
    assert _rcvbuf(udp_target(g)[1]) == 2 * want  # Linux counts twice what was set
    assert "receive buffer is" not in g.log()
    g.stop()


def test_receive_buffer_capped_by_rmem_max_is_said(start_gateway):
    # Without CAP_NET_ADMIN the kernel caps the buffer at net.core.rmem_max, and the gateway says so.
    want = 2 * _rmem_max()
    g = start_gateway(f"--udp-rcvbuf={want}", wrap=("setpriv", "--bounding-set=-net_admin", "--"))
    assert _rcvbuf(udp_target(g)[1]) == 2 * _rmem_max()
    log = g.log()
    assert f"receive buffer is {_rmem_max()} bytes, not the {want} of --udp-rcvbuf" in log
    assert "net.core.rmem_max" in log and log.count("receive buffer is") == 1
    g.stop()


def _udp_totals(g):
    """(datagrams read, kernel drops, read ones accounted for: events + every other refusal) from /metrics."""
    m = g.metrics()
    udp = frozenset({("protocol", "udp")})
    refused = {dict(k[1])["reason"]: v for k, v in m.items()
               if k[0] in ("ingest_rejected_total", "ingest_dropped_total") and ("protocol", "udp") in k[1]}
    kernel = refused.pop("socket_buffer", 0)
    return int(m[("ingest_requests_total", udp)]), int(kernel), int(m[("ingest_events_received_total", udp)]
                                                                   + sum(refused.values()))


def test_socket_buffer_drops_are_counted(start_gateway, make_topic):
    # One receive thread with the smallest buffer (4 KiB, a handful of datagrams): a flood overflows it,
    # and what the kernel drops must show in /metrics, so that every datagram sent is read or counted.
    topic = make_topic("udpflood")
    g = start_gateway(f"--kafka-topic={topic}", "--udp-threads=1", "--udp-rcvbuf=4096")
    target = udp_target(g)
    d = event("flood", 0).encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent, deadline = 0, time.monotonic() + 20
    try:
        while sent < 200_000 and time.monotonic() < deadline:
            for _ in range(1000):
                s.sendto(d, target)
            sent += 1000
    finally:
        s.close()
    # Read ones are counted at once, the kernel's drops within its poll (0.1-0.2 s): wait for them to settle.
    last, stable_since = None, time.monotonic()
    deadline = time.monotonic() + 15
    while True:
        totals = _udp_totals(g)
        if totals != last:
            last, stable_since = totals, time.monotonic()
        elif time.monotonic() - stable_since > 1 and totals[0] + totals[1] >= sent:
            break
        assert time.monotonic() < deadline, (sent, totals)
        time.sleep(0.1)
    read, kernel, accounted = last
    print(f"flood: sent={sent} read={read} socket_buffer={kernel}")
    assert kernel > 0, (sent, last)
    assert read + kernel == sent, (sent, last)
    # Each datagram holds one event: every read one went into the queue or was refused for a reason.
    assert accounted == read, (sent, last)
    assert "reason=socket_buffer" in g.log()
    assert g.stop() == 0
    stopped = [ln for ln in g.log().splitlines() if "stopped datagrams=" in ln]
    assert len(stopped) == 1 and f"datagrams={read} " in stopped[0] and f"socket_buffer={kernel}" in stopped[0], \
        stopped
