"""UDP ingest: datagrams from a plain Python socket arrive in Kafka as Envelopes, protocol UDP.

A first cut of issue 5: the formats and the failure modes. The bad-datagram
catalogue by reason needs the metrics of the operability issue to count them
precisely; here the gateway must drop them and keep receiving.
"""
import json
import socket
import time
import uuid

import pytest


@pytest.fixture(scope="module")
def ugw(start_gateway, make_topic):
    topic = make_topic("udp")
    g = start_gateway(f"--kafka-topic={topic}", "--gateway-id=it-udp")
    g.topic = topic
    host, port = g.addrs["--udp-addr"].rsplit(":", 1)
    g.udp = (host, int(port))
    yield g
    g.stop()


@pytest.fixture(scope="module")
def ureader(ugw, topic_reader):
    return topic_reader(ugw.topic)


def send(addr, *datagrams):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for d in datagrams:
            s.sendto(d, addr)
        return "127.0.0.1:%d" % s.getsockname()[1]
    finally:
        s.close()


def test_json_ndjson_and_protobuf_datagrams_reach_kafka(ugw, ureader, pb):
    run = uuid.uuid4().hex[:8]
    mark = ureader.mark()
    ce = pb.cloudevent_pb2.CloudEvent(id=f"p-{run}", source="/udp/pb", type="t.pb", binary_data=b"\x00\x01")
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
    assert recs[f"p-{run}"].key == b"/udp/pb"


BAD = [
    ("empty", b""),
    ("blank", b"  \n "),
    ("garbage", b"\xff\xfe\xfd"),
    ("truncated json", b'{"source":"/udp/bad","type":'),
    ("json not an object", b"{]"),
    ("missing source", b'{"type":"t"}'),
    ("empty type", b'{"source":"/udp/bad","type":""}'),
    ("bad specversion", b'{"source":"/udp/bad","type":"t","specversion":"0.3"}'),
    ("bad extension name", b'{"source":"/udp/bad","type":"t","Bad_Name":"x"}'),
    ("invalid utf-8", b'{"source":"/udp/\xc3\x28","type":"t"}'),
    ("nan", b'{"source":"/udp/bad","type":"t","data":NaN}'),
    ("ndjson with one bad line", b'{"source":"/udp/bad","type":"t"}\n{"source":"","type":"t"}\n'),
    ("protobuf without source", None),
]


def test_bad_datagrams_are_dropped_and_the_gateway_keeps_receiving(ugw, ureader, pb):
    run = uuid.uuid4().hex[:8]
    mark = ureader.mark()
    bad = [d if d is not None else pb.cloudevent_pb2.CloudEvent(id="x", type="t").SerializeToString()
           for _, d in BAD]
    send(ugw.udp, *bad)
    send(ugw.udp, json.dumps({"source": "/udp/after", "type": "t", "id": f"after-{run}"}).encode())
    recs = ureader.read_since(mark, 1)
    assert [r.envelope.event.id for r in recs] == [f"after-{run}"]
    time.sleep(1)
    # Nothing of the bad ones arrived, not even the good line of the half-bad NDJSON datagram.
    assert ureader.count_since(mark) == 1
    assert ugw.proc.poll() is None
    log = open(ugw.log_path, encoding="utf-8").read()
    assert "dropped datagram" in log and "reason=invalid" in log
