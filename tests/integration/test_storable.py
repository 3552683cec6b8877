"""Accepted means storable (issue 14): through the whole stack (the stack's gateway, Kafka, the stack's sink,
Postgres), every event the gateway acknowledges over HTTP, UDP and gRPC is in Postgres and none is in the
dead-letter topic; every event it refuses is nowhere. The cases are the edges of what the sink stores:
numbers at Postgres's numeric limits, every escape, every Unicode plane, times at both ends, every attribute
type over gRPC, text_data with and without a type, and the README's two examples verbatim.
"""
import json
import re
import shlex
import socket
import subprocess
import time
import uuid

import grpc
import pytest
import requests

from conftest import REPO_ROOT, pg_query
from stackcheck import records_since, watermarks

# Data as written in the JSON; what Postgres's jsonb takes (measured with psql on Postgres 15).
GOOD_DATA = [
    "1e131071", "-1E-16383", "0e999999999", "0.1e131072", "18446744073709551616", "-0", "1.5e-300",
    '"\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u001f \\u00e9 \\u4e2d \\ud83d\\ude00 \\ud800\\udc00"',
    '"\u00e9 \u4e2d \U0001f600 \U00010348 \U0010ffff \u007f"',
    '{"a":[{},[],null,true,false,{"b":{"c":[1,2.5,-3e-7]}}]}',
]
BAD_DATA = ["1e131072", "1e-16384", "123e-16400", "1e999999999", '"a\\u0000b"', '{"k":["\\u0000"]}']
GOOD_TIMES = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "9999-12-31T23:59:59+00:00",
              "0001-01-01T00:30:00+00:30"]
BAD_TIMES = ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01", "9999-12-31T23:59:60Z"]


class Run:
    """Every event sent, with whether the gateway acknowledged it."""

    def __init__(self):
        self.source = f"/it/storable/{uuid.uuid4().hex[:10]}"
        self.acked, self.refused = {}, {}  # id -> what it was

    def id(self):
        return uuid.uuid4().hex

    def note(self, eid, ok, what):
        (self.acked if ok else self.refused)[eid] = what


def structured(run, http_url, eid, extra, what, expect_ok):
    body = '{"specversion":"1.0","source":%s,"type":"t.storable","id":%s%s}' % (
        json.dumps(run.source), json.dumps(eid), extra)
    r = requests.post(http_url + "/v1/events", data=body.encode(), timeout=30,
                      headers={"Content-Type": "application/cloudevents+json"})
    assert r.status_code in (200, 202, 400), (what, r.status_code, r.text)
    ok = r.status_code != 400
    assert ok == expect_ok, (what, r.status_code, r.text)
    if not ok:
        assert r.json()["error"]["code"] == "invalid_event", (what, r.text)
    run.note(eid, ok, what)


def test_acknowledged_means_stored(apps_running, http_url, udp_addr, grpc_target, pg_dsn, dlq_topic,
                                   kafka_bootstrap, pb):
    if not apps_running:
        pytest.skip("the stack runs without gateway and sink (INGEST_LOCAL_SKIP_APPS=1)")
    run = Run()
    dlq_mark = watermarks(kafka_bootstrap, dlq_topic)

    # HTTP, structured: data at the edges, times at both ends.
    for d in GOOD_DATA:
        structured(run, http_url, run.id(), f',"data":{d}', f"data {d}", True)
    for d in BAD_DATA:
        structured(run, http_url, run.id(), f',"data":{d}', f"data {d}", False)
    for t in GOOD_TIMES:
        structured(run, http_url, run.id(), f',"time":"{t}"', f"time {t}", True)
    for t in BAD_TIMES:
        structured(run, http_url, run.id(), f',"time":"{t}"', f"time {t}", False)
    # A string under a non-JSON type is text: U+0000 may be in it (stored as bytes); and base64 data.
    text_nul = run.id()
    structured(run, http_url, text_nul, ',"datacontenttype":"text/plain","data":"a\\u0000b"', "text NUL", True)
    structured(run, http_url, run.id(), ',"data_base64":"AAEC/w=="', "base64", True)

    # HTTP, binary mode: the same JSON rules as structured data.
    for body, ctype, ok in ((b'{"n":18446744073709551616}', "application/json", True),
                            (b"1e131072", "application/json", False),
                            (b'"a\\u0000b"', "application/json", False),
                            (b"a\x00b", "text/plain", True)):
        eid = run.id()
        r = requests.post(http_url + "/v1/events", data=body, timeout=30, headers={
            "Content-Type": ctype, "ce-specversion": "1.0", "ce-id": eid, "ce-source": run.source,
            "ce-type": "t.binary"})
        assert (r.status_code in (200, 202)) == ok, (body, r.status_code, r.text)
        run.note(eid, ok, f"binary {ctype} {body!r}")

    # UDP: a JSON event per datagram; a refused one is dropped (and counted), so it must be nowhere.
    host, port = udp_addr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d, ok in (("1e131071", True), ('"udp \\ud83d\\ude00"', True), ("1e131072", False), ('"\\u0000"', False)):
            eid = run.id()
            s.sendto(json.dumps({"specversion": "1.0", "source": run.source, "type": "t.udp", "id": eid})
                     .replace("}", f',"data":{d}}}').encode(), (host, port))
            run.note(eid, ok, f"udp data {d}")
            time.sleep(0.01)

    # gRPC: text_data with and without a type, bytes, every attribute type, times at both ends.
    CE = pb.cloudevent_pb2.CloudEvent
    AV = CE.CloudEventAttributeValue
    from google.protobuf.timestamp_pb2 import Timestamp

    def grpc_case(what, ok, **kw):
        eid = run.id()
        attrs = kw.pop("attributes", {})
        ev = CE(id=eid, source=run.source, spec_version="1.0", type="t.grpc", **kw)
        for k, v in attrs.items():
            ev.attributes[k].CopyFrom(v)
        with grpc.insecure_channel(grpc_target) as ch:
            try:
                resp = pb.ingest_pb2_grpc.IngestStub(ch).Publish(pb.ingest_pb2.PublishRequest(
                    seq=1, events=[ev], ack=pb.ingest_pb2.ACK_LEVEL_COMMITTED), timeout=30)
                got = resp.accepted == 1
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, e)
                got = False
        assert got == ok, what
        run.note(eid, ok, what)
        return eid

    hi = grpc_case("text_data hi, no type", True, text_data="hi")
    obj = grpc_case("text_data JSON, no type", True, text_data='{"a":1}')
    grpc_case("text_data not JSON, JSON type", False, text_data="not json",
              attributes={"datacontenttype": AV(ce_string="application/json")})
    grpc_case("text_data beyond numeric, JSON type", False, text_data="1e131072",
              attributes={"datacontenttype": AV(ce_string="application/json")})
    grpc_case("text_data JSON, JSON type", True, text_data='[1e131071]',
              attributes={"datacontenttype": AV(ce_string="application/json")})
    grpc_case("binary_data", True, binary_data=b"\x00\x01\xff")
    grpc_case("every attribute type", True, attributes={
        "flag": AV(ce_boolean=True), "count": AV(ce_integer=-2147483648), "name": AV(ce_string="\u4e2d\U0001f600"),
        "blob": AV(ce_bytes=b"\x00\xff"), "link": AV(ce_uri="https://example.com/a?b#c"),
        "ref": AV(ce_uri_ref="../x"), "when": AV(ce_timestamp=Timestamp(seconds=0, nanos=1))})
    for sec, nanos, ok in ((-62135596800, 0, True), (253402300799, 999999999, True), (253402300800, 0, False),
                           (-62135596801, 999999999, False)):
        grpc_case(f"time {sec}.{nanos}", ok, attributes={"time": AV(ce_timestamp=Timestamp(seconds=sec, nanos=nanos))})

    # The README's examples, verbatim (source /example, ids by the gateway).
    readme_ids = readme_examples(http_url, grpc_target)

    # Every acknowledged event arrives; then the refused ones and the dead letters are looked for.
    want = set(run.acked)
    deadline = time.monotonic() + 60
    while True:
        rows = {r[0]: r for r in pg_query(pg_dsn, "select id, data::text, data_bytes, datacontenttype from events "
                                                  "where source = %s", (run.source,))}
        stored = {r[0] for r in pg_query(pg_dsn, "select id from events where source = '/example' and "
                                                 "id = any(%s)", (list(readme_ids),))}
        if (want <= set(rows) and stored == readme_ids) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    missing = {run.acked[i] for i in want - set(rows)}
    assert not missing, f"acknowledged but not in Postgres after 60 s: {sorted(missing)}"
    assert stored == readme_ids, ("the README's examples", readme_ids, stored)
    time.sleep(2)
    rows = {r[0]: r for r in pg_query(pg_dsn, "select id, data::text, data_bytes, datacontenttype from events "
                                              "where source = %s", (run.source,))}
    leaked = {run.refused[i] for i in set(rows) & set(run.refused)}
    assert not leaked, f"refused but stored: {sorted(leaked)}"
    assert len(rows) == len(run.acked)

    # How each kind of data is stored (README, "What is stored").
    assert rows[hi][1] is None and bytes(rows[hi][2]) == b"hi"
    assert json.loads(rows[obj][1]) == {"a": 1} and rows[obj][2] is None
    assert rows[text_nul][1] is None and bytes(rows[text_nul][2]) == b"a\x00b"

    needles = [run.source.encode()] + [i.encode() for i in readme_ids]
    dead = [v[:200] for v, _ in records_since(kafka_bootstrap, dlq_topic, dlq_mark) if any(n in v for n in needles)]
    assert not dead, f"{len(dead)} acknowledged events dead-lettered: {dead[:3]}"
    print(f"\n[storable] {len(run.acked)} acknowledged, all in Postgres; {len(run.refused)} refused, none "
          f"stored; 0 dead letters; README examples {sorted(readme_ids)}")


def readme_examples(http_url, grpc_target):
    """The README's curl and grpcurl examples, run as written against the stack; the ids they got."""
    readme = (REPO_ROOT / "README.md").read_text()
    ids = set()
    curl = re.search(r"^(curl -X POST http://127\.0\.0\.1:8080/v1/events .*?\n.*?)\n# ", readme, re.M | re.S)
    assert curl, "the README's curl example"
    cmd = curl.group(1).replace("\\\n", " ").replace("http://127.0.0.1:8080", http_url)
    out = subprocess.run(shlex.split(cmd) + ["-sS"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    ids.update(json.loads(out.stdout)["ids"])
    grpcurl_cmd = re.search(r"^(grpcurl -plaintext -import-path proto -proto ingest/v1/ingest\.proto \\\n.*?"
                            r"ingest\.v1\.Ingest/Publish)\n", readme, re.M | re.S)
    assert grpcurl_cmd, "the README's grpcurl example"
    from test_grpc import grpcurl_bin
    argv = shlex.split(grpcurl_cmd.group(1).replace("\\\n", " ").replace("127.0.0.1:50051", grpc_target))
    out = subprocess.run([grpcurl_bin()] + argv[1:], capture_output=True, text=True, timeout=30, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    ids.update(json.loads(out.stdout)["ids"])
    return ids
