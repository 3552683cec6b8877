"""HTTP ingest, end to end: every content mode of POST /v1/events, sent with
requests and with the CloudEvents SDK, read back from Kafka and decoded as
Envelopes, every attribute, the data, the key and the headers checked.

Most tests use a private gateway with a private single-partition topic, so
that what arrives is exactly what the test sent; one test goes through the
stack's own gateway and the `events` topic.
"""

import base64
import calendar
import datetime
import gzip
import http.client
import json
import re
import socket
import threading
import time
import uuid

import pytest
import requests

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
PROTOCOL_HTTP = 1


# ---- helpers -----------------------------------------------------------------

def ts(text):
    """RFC 3339 -> (seconds, nanos) since the epoch, with all nine fraction digits kept."""
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert m, text
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    if m.group(8) != "Z":
        sign = -1 if m.group(8)[0] == "-" else 1
        secs -= sign * (int(m.group(8)[1:3]) * 3600 + int(m.group(8)[4:6]) * 60)
    nanos = int((m.group(7) or "0")[:9].ljust(9, "0"))
    return secs, nanos


def attributes(event):
    """The protobuf attributes map as {name: (kind, value)}; timestamps as (kind, seconds, nanos)."""
    out = {}
    for name, v in event.attributes.items():
        kind = v.WhichOneof("attr")
        if kind == "ce_timestamp":
            out[name] = (kind, v.ce_timestamp.seconds, v.ce_timestamp.nanos)
        else:
            out[name] = (kind, getattr(v, kind))
    return out


def data_of(event):
    """("json", value) for text_data (parsed), ("bytes", b) for binary_data, (None, None) for no data."""
    kind = event.WhichOneof("data")
    if kind == "text_data":
        return "json", json.loads(event.text_data)
    if kind == "binary_data":
        return "bytes", event.binary_data
    assert kind is None, f"unexpected data kind {kind}"
    return None, None


def expect(rec, *, id, source, type, key=None, attrs=None, data=(None, None), gateway_id=None, peer=None,
           principal=None):
    """Checks one record: the event, the Kafka key and headers, and the Envelope's own fields."""
    ev = rec.event
    assert (ev.id, ev.source, ev.spec_version, ev.type) == (id, source, "1.0", type)
    assert attributes(ev) == (attrs or {})
    assert data_of(ev) == data
    assert rec.key == (key if key is not None else source).encode()
    assert rec.header("ce_id") == id.encode()
    assert rec.header("ce_source") == source.encode()
    assert rec.header("ce_type") == type.encode()
    assert rec.header("content-type") == b"application/x-protobuf"
    env = rec.envelope
    assert env.protocol == PROTOCOL_HTTP
    host, _, port = env.peer.rpartition(":")
    assert host == "127.0.0.1" and port.isdigit() and 0 < int(port) < 65536, env.peer
    if peer is not None:
        assert env.peer == peer
    if gateway_id is not None:
        assert env.gateway_id == gateway_id
    if principal is not None:
        assert env.principal == principal
    now = time.time_ns()
    assert now - 120 * 10**9 < env.received_unix_nanos <= now


def string(v):
    return ("ce_string", v)


def accepted_body(r, n):
    """The success body: exactly {"accepted": n, "ids": [n strings]}; returns the ids."""
    assert r.headers["Content-Type"].split(";")[0].strip().lower() == "application/json"
    body = r.json()
    assert set(body) == {"accepted", "ids"}, body
    assert body["accepted"] == n and len(body["ids"]) == n, body
    assert all(isinstance(i, str) and i for i in body["ids"]), body
    return body["ids"]


def post(url, body=b"", content_type=None, headers=None, params=None, session=None, timeout=30):
    h = dict(headers or {})
    if content_type is not None:
        h["Content-Type"] = content_type
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    return (session or requests).post(url, data=body, headers=h, params=params, timeout=timeout)


def new_id():
    return f"it-{uuid.uuid4()}"


# ---- fixtures ----------------------------------------------------------------

@pytest.fixture(scope="module")
def gw(start_gateway, make_topic):
    topic = make_topic("http")
    gateway_id = f"it-http-{uuid.uuid4().hex[:8]}"
    g = start_gateway(f"--kafka-topic={topic}", f"--gateway-id={gateway_id}")
    g.topic, g.gateway_id = topic, gateway_id
    yield g
    g.stop()


@pytest.fixture(scope="module")
def reader(gw, topic_reader):
    return topic_reader(gw.topic)


@pytest.fixture
def send(gw, reader):
    """send(n, status=200, **post_args) -> (response, {id: record}).

    Posts to the private gateway, checks the status and the success body,
    and returns the n records that arrived, keyed by id; a committed answer
    (200) must find them in Kafka already.
    """
    def do(n, status=200, **kw):
        mark = reader.mark()
        r = post(gw.events_url, **kw)
        assert r.status_code == status, (r.status_code, r.text)
        ids = accepted_body(r, n)
        if status == 200:
            assert reader.count_since(mark) == n, "200 (committed) before Kafka had every event"
        recs = reader.read_since(mark, n)
        assert reader.count_since(mark) == n
        by_id = {rec.event.id: rec for rec in recs}
        assert sorted(by_id) == sorted(ids), (ids, recs)
        return r, ids, by_id

    return do


# ---- structured mode ---------------------------------------------------------

def test_structured_event_every_attribute_reaches_kafka(gw, reader):
    eid = new_id()
    event = {
        "specversion": "1.0", "id": eid, "source": "/it/http/structured", "type": "com.example.it.created",
        "subject": "orders/1001", "time": "2024-06-01T14:00:00.123456789+02:00",
        "datacontenttype": "application/json", "dataschema": "https://example.com/schemas/order.json",
        "tenant": "acme", "count": 42, "ratio": 1.5, "flag": True, "off": False, "partitionkey": "pk-7",
        "data": {"amount": 42, "items": [1, "two", None, True, {"x": -0.5}], "note": "caf\u00e9 \u4e2d"},
    }
    # http.client, so the test knows its own port and can check the Envelope's peer.
    conn = http.client.HTTPConnection(gw.http_addr.split(":")[0], int(gw.http_addr.split(":")[1]), timeout=30)
    conn.connect()
    local = "%s:%d" % conn.sock.getsockname()[:2]
    mark = reader.mark()
    before = time.time_ns()
    conn.request("POST", "/v1/events", body=json.dumps(event).encode(),
                 headers={"Content-Type": "application/cloudevents+json"})
    resp = conn.getresponse()
    raw = resp.read()
    after = time.time_ns()
    conn.close()
    assert resp.status == 200, raw
    assert resp.getheader("Content-Type").split(";")[0].strip().lower() == "application/json"
    assert json.loads(raw) == {"accepted": 1, "ids": [eid]}
    assert reader.count_since(mark) == 1

    [rec] = reader.read_since(mark, 1)
    expect(rec, id=eid, source="/it/http/structured", type="com.example.it.created", key="pk-7",
           gateway_id=gw.gateway_id, peer=local, principal="anonymous",  # no --auth-file: everyone is
           attrs={
               "subject": string("orders/1001"),
               "time": ("ce_timestamp", *ts("2024-06-01T12:00:00.123456789Z")),
               "datacontenttype": string("application/json"),
               "dataschema": ("ce_uri", "https://example.com/schemas/order.json"),
               "tenant": string("acme"), "count": string("42"), "ratio": string("1.5"),
               "flag": string("true"), "off": string("false"), "partitionkey": string("pk-7"),
           },
           data=("json", event["data"]))
    # The client's JSON text, compact: what requests sent, less the blanks between tokens.
    assert rec.event.text_data == json.dumps(event["data"], separators=(",", ":"))
    assert before <= rec.envelope.received_unix_nanos <= after


@pytest.mark.parametrize("time_text", [
    "1985-04-12T23:20:50.52Z",
    "1996-12-19T16:39:57-08:00",
    "2024-02-29T00:00:00.000000001z",
    "2024-06-01t12:00:00Z",
    # RFC 3339's whole range: int64 nanoseconds (1677 to 2262) once overflowed here.
    "0001-01-01T00:00:00Z",
    "1500-06-01T00:00:00.5Z",
    "9999-12-31T23:59:59.999999999Z",
])
def test_time_becomes_a_timestamp(send, time_text):
    eid = new_id()
    _, _, by_id = send(1, content_type="application/cloudevents+json",
                       body={"id": eid, "source": "/it/time", "type": "t", "time": time_text})
    assert attributes(by_id[eid].event) == {"time": ("ce_timestamp", *ts(time_text.upper()))}


def test_absent_ids_get_uuidv7_in_request_order(send):
    given = new_id()
    _, ids, by_id = send(3, content_type="application/cloudevents-batch+json",
                         body=[{"source": "/it/ids", "type": "t"},
                               {"id": given, "source": "/it/ids", "type": "t"},
                               {"id": None, "source": "/it/ids", "type": "t"}])
    assert ids[1] == given
    for i in (0, 2):
        assert UUID7.match(ids[i]), ids[i]
    assert ids[0] != ids[2]
    for i in ids:
        assert by_id[i].header("ce_id") == i.encode()


@pytest.mark.parametrize("extra,key", [
    ({"partitionkey": "the-pk", "subject": "the-subject"}, "the-pk"),
    ({"subject": "the-subject"}, "the-subject"),
    ({}, "/it/key/source"),
])
def test_kafka_key_is_partitionkey_else_subject_else_source(send, extra, key):
    eid = new_id()
    _, _, by_id = send(1, content_type="application/cloudevents+json",
                       body={"id": eid, "source": "/it/key/source", "type": "t", **extra})
    assert by_id[eid].key == key.encode()


@pytest.mark.parametrize("data,expected", [
    ({"a": {"b": [1, 2.5, "x", None]}}, ("json", {"a": {"b": [1, 2.5, "x", None]}})),
    ([1, 2, 3], ("json", [1, 2, 3])),
    ("just text", ("json", "just text")),
    (-12, ("json", -12)),
    (True, ("json", True)),
    (None, (None, None)),
])
def test_json_data_travels_as_json_text(send, data, expected):
    eid = new_id()
    _, _, by_id = send(1, content_type="application/cloudevents+json",
                       body={"id": eid, "source": "/it/data", "type": "t", "data": data})
    assert data_of(by_id[eid].event) == expected


@pytest.mark.parametrize("b64,raw", [
    ("AAEC/w==", b"\x00\x01\x02\xff"),
    ("aGVsbG8gd29ybGQ=", b"hello world"),
    ("", b""),
])
def test_data_base64_travels_as_bytes(send, b64, raw):
    eid = new_id()
    _, _, by_id = send(1, content_type="application/cloudevents+json",
                       body={"id": eid, "source": "/it/b64", "type": "t", "data_base64": b64,
                             "datacontenttype": "application/octet-stream"})
    ev = by_id[eid].event
    assert ev.WhichOneof("data") == "binary_data" and ev.binary_data == raw
    assert attributes(ev) == {"datacontenttype": string("application/octet-stream")}


def test_null_attributes_are_unset(send):
    eid = new_id()
    _, _, by_id = send(1, content_type="application/cloudevents+json",
                       body={"id": eid, "source": "/it/null", "type": "t", "specversion": None, "subject": None,
                             "time": None, "datacontenttype": None, "dataschema": None, "ext": None,
                             "data": None})
    rec = by_id[eid]
    expect(rec, id=eid, source="/it/null", type="t", attrs={}, data=(None, None))


@pytest.mark.parametrize("content_type", [
    "Application/CloudEvents+JSON",
    "application/cloudevents+json; charset=utf-8",
    "application/cloudevents+json;charset=UTF-8",
])
def test_media_type_is_case_insensitive_and_takes_utf8_charset(send, content_type):
    eid = new_id()
    send(1, content_type=content_type, body={"id": eid, "source": "/it/mt", "type": "t"})


# ---- batches, application/json, NDJSON -----------------------------------------

def test_cloudevents_batch(send, gw):
    events = [{"id": new_id(), "source": f"/it/batch/{i}", "type": "com.example.batch", "n": i, "data": {"i": i}}
              for i in range(5)]
    events[2].pop("id")
    _, ids, by_id = send(5, content_type="application/cloudevents-batch+json", body=events)
    assert [ids[i] for i in (0, 1, 3, 4)] == [events[i]["id"] for i in (0, 1, 3, 4)]
    assert UUID7.match(ids[2])
    for i, eid in enumerate(ids):
        expect(by_id[eid], id=eid, source=f"/it/batch/{i}", type="com.example.batch", gateway_id=gw.gateway_id,
               attrs={"n": string(str(i))}, data=("json", {"i": i}))


def test_application_json_object_is_one_event(send):
    eid = new_id()
    _, _, by_id = send(1, content_type="application/json",
                       body={"id": eid, "source": "/it/json", "type": "t", "data": {"k": "v"}})
    expect(by_id[eid], id=eid, source="/it/json", type="t", data=("json", {"k": "v"}))


def test_application_json_array_is_a_batch(send):
    ids = [new_id(), new_id()]
    _, got, by_id = send(2, content_type="application/json; charset=utf-8",
                         body=[{"id": ids[0], "source": "/it/json/a", "type": "t"},
                               {"id": ids[1], "source": "/it/json/b", "type": "t", "data": [1]}])
    assert got == ids
    expect(by_id[ids[0]], id=ids[0], source="/it/json/a", type="t")
    expect(by_id[ids[1]], id=ids[1], source="/it/json/b", type="t", data=("json", [1]))


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/ndjson"])
def test_ndjson_one_event_per_line_blank_lines_skipped(send, content_type):
    ids = [new_id(), new_id(), new_id()]
    body = (json.dumps({"id": ids[0], "source": "/it/nd", "type": "t", "data": "x\ny"}) + "\n\n"
            + "   \r\n"
            + json.dumps({"id": ids[1], "source": "/it/nd", "type": "t", "subject": "s"}) + "\r\n"
            + json.dumps({"source": "/it/nd", "type": "t", "data_base64": "AQI="}))  # no final newline
    _, got, by_id = send(3, content_type=content_type, body=body)
    assert got[:2] == ids[:2] and UUID7.match(got[2])
    assert data_of(by_id[ids[0]].event) == ("json", "x\ny")
    assert attributes(by_id[ids[1]].event) == {"subject": string("s")}
    assert data_of(by_id[got[2]].event) == ("bytes", b"\x01\x02")


# ---- binary mode -----------------------------------------------------------------

def test_binary_mode_bytes_and_percent_decoded_headers(send, gw):
    eid = new_id()
    body = bytes(range(256)) + b"\x00\xff"
    headers = {
        "ce-specversion": "1.0", "ce-id": eid, "ce-source": "/it/bin%20ary", "ce-type": "com.example.binary",
        "ce-subject": "caf%C3%A9%20au%20lait", "ce-time": "2024-06-01T12:00:00Z",
        "ce-dataschema": "https://example.com/s.bin", "CE-TenantID": "acme", "ce-partitionkey": "p%25k",
    }
    _, _, by_id = send(1, content_type="application/octet-stream", headers=headers, body=body)
    expect(by_id[eid], id=eid, source="/it/bin ary", type="com.example.binary", key="p%k", gateway_id=gw.gateway_id,
           attrs={
               "subject": string("caf\u00e9 au lait"),
               "time": ("ce_timestamp", *ts("2024-06-01T12:00:00Z")),
               "dataschema": ("ce_uri", "https://example.com/s.bin"),
               "datacontenttype": string("application/octet-stream"),
               "tenantid": string("acme"), "partitionkey": string("p%k"),
           },
           data=("bytes", body))


@pytest.mark.parametrize("content_type", ["application/json", "application/vnd.example.order+json; charset=utf-8"])
def test_binary_mode_json_body_travels_as_json(send, content_type):
    eid = new_id()
    data = {"order": 1001, "lines": [{"sku": "A", "qty": 2}], "note": None}
    _, _, by_id = send(1, content_type=content_type, body=data,
                       headers={"ce-specversion": "1.0", "ce-id": eid, "ce-source": "/it/bin/json", "ce-type": "t"})
    expect(by_id[eid], id=eid, source="/it/bin/json", type="t",
           attrs={"datacontenttype": string(content_type)}, data=("json", data))


@pytest.mark.parametrize("trigger", [{"ce-source": "/it/trigger"}, {"ce-type": "t"}, {"ce-specversion": "1.0"}])
def test_any_of_specversion_source_type_headers_makes_application_json_binary(gw, trigger):
    # A body that would be a valid structured event: in binary mode it is only
    # data, and the headers alone lack an attribute, so the request fails,
    # naming the attribute the headers miss.
    r = post(gw.events_url, content_type="application/json", headers=trigger,
             body={"source": "/it/s", "type": "t", "specversion": "1.0"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_event"
    missing = "source" if "ce-source" not in trigger else "type"
    assert missing in err["message"]


def test_binary_mode_text_body_travels_as_bytes(send):
    eid = new_id()
    _, _, by_id = send(1, content_type="text/plain; charset=utf-8", body="h\u00e9llo\nworld".encode(),
                       headers={"ce-id": eid, "ce-source": "/it/bin/text", "ce-type": "t"})
    expect(by_id[eid], id=eid, source="/it/bin/text", type="t",
           attrs={"datacontenttype": string("text/plain; charset=utf-8")},
           data=("bytes", "h\u00e9llo\nworld".encode()))


def test_binary_mode_without_body_or_content_type_has_no_data(send):
    eid = new_id()
    _, _, by_id = send(1, headers={"ce-id": eid, "ce-source": "/it/bin/empty", "ce-type": "t", "ce-n": "1"})
    expect(by_id[eid], id=eid, source="/it/bin/empty", type="t", attrs={"n": string("1")}, data=(None, None))


def test_binary_mode_absent_id_gets_uuidv7(send):
    _, ids, by_id = send(1, content_type="application/octet-stream", body=b"\x01",
                         headers={"ce-source": "/it/bin/noid", "ce-type": "t"})
    assert UUID7.match(ids[0])
    assert by_id[ids[0]].header("ce_id") == ids[0].encode()


# ---- the CloudEvents SDK ---------------------------------------------------------

def sdk_time(value):
    """The SDK's time attribute (datetime or ISO text) as the expected timestamp attribute."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    value = value.astimezone(datetime.timezone.utc)
    return ("ce_timestamp", calendar.timegm(value.utctimetuple()), value.microsecond * 1000)


@pytest.mark.parametrize("mode", ["structured", "binary"])
@pytest.mark.parametrize("data,datacontenttype,expected", [
    ({"k": [1, 2, {"z": None}]}, "application/json", "json"),
    (b"\x00\x01bytes\xff", "application/octet-stream", "bytes"),
])
def test_cloudevents_sdk_http_helpers(send, mode, data, datacontenttype, expected):
    from cloudevents.v1.conversion import to_binary, to_structured
    from cloudevents.v1.http import CloudEvent

    event = CloudEvent({"source": "/it/sdk/v1", "type": "com.example.sdk", "subject": "sdk subject",
                        "datacontenttype": datacontenttype, "tenant": "acme"}, data)
    headers, body = (to_structured if mode == "structured" else to_binary)(event)
    if mode == "structured":
        assert headers["content-type"] == "application/cloudevents+json"
    else:
        assert "ce-source" in headers
    _, _, by_id = send(1, headers=headers, body=body)
    expect(by_id[event["id"]], id=event["id"], source="/it/sdk/v1", type="com.example.sdk", key="sdk subject",
           attrs={"subject": string("sdk subject"), "time": sdk_time(event["time"]),
                  "datacontenttype": string(datacontenttype), "tenant": string("acme")},
           data=("json", data) if expected == "json" else ("bytes", data))


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_cloudevents_sdk_core_bindings(send, mode):
    from cloudevents.core.bindings import http as ce_http
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    event = CloudEvent({"source": "/it/sdk/core", "type": "com.example.sdk.core", "subject": "caf\u00e9 au lait",
                        "datacontenttype": "application/json", "partitionkey": "pk 1", "count": 3},
                       {"hello": "world", "n": [1, 2]})
    msg = (ce_http.to_structured if mode == "structured" else ce_http.to_binary)(event, JSONFormat())
    if mode == "binary":
        assert msg.headers["ce-subject"] == "caf%C3%A9%20au%20lait"  # the SDK percent-encodes
    _, _, by_id = send(1, headers=msg.headers, body=msg.body)
    eid = event.get_id()
    expect(by_id[eid], id=eid, source="/it/sdk/core", type="com.example.sdk.core", key="pk 1",
           attrs={"subject": string("caf\u00e9 au lait"), "time": sdk_time(event.get_time()),
                  "datacontenttype": string("application/json"), "partitionkey": string("pk 1"),
                  "count": string("3")},
           data=("json", {"hello": "world", "n": [1, 2]}))


# ---- Content-Encoding ------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP", "identity"])
def test_content_encoding(send, encoding):
    ids = [new_id(), new_id()]
    body = json.dumps([{"id": i, "source": "/it/gzip", "type": "t", "data": "z" * 5000} for i in ids]).encode()
    if encoding != "identity":
        body = gzip.compress(body)
    _, got, by_id = send(2, content_type="application/cloudevents-batch+json",
                         headers={"Content-Encoding": encoding}, body=body)
    assert got == ids
    assert data_of(by_id[ids[1]].event) == ("json", "z" * 5000)


# ---- HTTP/1.1 framing --------------------------------------------------------------

def test_chunked_request_body(send):
    eid = new_id()
    body = json.dumps({"id": eid, "source": "/it/chunked", "type": "t", "data": "c" * 3000}).encode()
    # A generator makes requests send Transfer-Encoding: chunked.
    chunks = (body[i:i + 1000] for i in range(0, len(body), 1000))
    _, _, by_id = send(1, content_type="application/cloudevents+json", body=chunks)
    assert data_of(by_id[eid].event) == ("json", "c" * 3000)


def read_response(sock):
    """(status, headers, body) of one HTTP/1.1 response with a Content-Length, read from sock."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return status, headers, body[:length]


def test_expect_100_continue(gw, reader):
    eid = new_id()
    body = json.dumps({"id": eid, "source": "/it/expect", "type": "t"}).encode()
    host, port = gw.http_addr.split(":")
    mark = reader.mark()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: it\r\nContent-Type: application/cloudevents+json\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = s.recv(1)
            assert chunk, f"closed before 100 Continue: {interim!r}"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100"), interim
        s.sendall(body)
        status, _, answer = read_response(s)
    assert status == 200, answer
    assert json.loads(answer) == {"accepted": 1, "ids": [eid]}
    assert [r.event.id for r in reader.read_since(mark, 1)] == [eid]


# ---- acknowledgement levels -------------------------------------------------------

@pytest.mark.parametrize("params,headers,status", [
    (None, None, 200),
    ({"ack": "committed"}, None, 200),
    ({"ack": "accepted"}, None, 202),
    (None, {"Ingest-Ack": "committed"}, 200),
    (None, {"Ingest-Ack": "accepted"}, 202),
    ({"ack": "committed"}, {"Ingest-Ack": "accepted"}, 200),  # the query wins
    ({"ack": "accepted"}, {"Ingest-Ack": "committed"}, 202),
])
def test_ack_level(send, params, headers, status):
    eid = new_id()
    send(1, status=status, params=params, headers=headers, content_type="application/cloudevents+json",
         body={"id": eid, "source": "/it/ack", "type": "t"})


# ---- connections ------------------------------------------------------------------

def test_keep_alive_many_requests_on_one_connection(gw, reader):
    mark = reader.mark()
    ids = []
    with requests.Session() as s:
        for i in range(50):
            eid = new_id()
            r = post(gw.events_url, session=s, content_type="application/cloudevents+json",
                     body={"id": eid, "source": "/it/keepalive", "type": "t", "n": i})
            assert r.status_code == 200, r.text
            assert "close" not in r.headers.get("Connection", "").lower()
            assert accepted_body(r, 1) == [eid]
            ids.append(eid)
    recs = reader.read_since(mark, 50)
    assert sorted(rec.event.id for rec in recs) == sorted(ids)
    # One TCP connection for all fifty: one client port.
    assert len({rec.envelope.peer for rec in recs}) == 1


def test_many_concurrent_connections(gw, reader):
    threads, per_thread = 50, 4
    mark = reader.mark()
    barrier = threading.Barrier(threads)
    results, errors = [], []
    lock = threading.Lock()

    def client(t):
        try:
            with requests.Session() as s:
                barrier.wait(timeout=30)
                for i in range(per_thread):
                    eids = [new_id(), new_id()]
                    r = post(gw.events_url, session=s, content_type="application/cloudevents-batch+json",
                             body=[{"id": e, "source": f"/it/concurrent/{t}", "type": "t"} for e in eids])
                    with lock:
                        results.append((r.status_code, r.text, eids))
        except Exception as e:  # reported below, with the others
            with lock:
                errors.append(repr(e))

    pool = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    assert not errors, errors[:5]
    assert len(results) == threads * per_thread
    bad = [(s, txt) for s, txt, _ in results if s != 200]
    assert not bad, bad[:5]
    for _, txt, eids in results:
        assert json.loads(txt) == {"accepted": 2, "ids": eids}
    n = threads * per_thread * 2
    recs = reader.read_since(mark, n, timeout=60)
    assert reader.count_since(mark) == n
    assert sorted(r.event.id for r in recs) == sorted(e for _, _, eids in results for e in eids)
    assert len({r.envelope.peer for r in recs}) >= threads


def test_stalled_clients_do_not_hold_up_others(gw, reader):
    host, port = gw.http_addr.split(":")
    event = json.dumps({"source": "/it/stalled", "type": "t", "data": "x" * 200}).encode()
    stalled = []
    try:
        for i in range(10):
            # Connected, silent.
            stalled.append(socket.create_connection((host, int(port)), timeout=5))
            # Half the headers.
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: it\r\nContent-Type: application/cloudevents+json\r\n")
            stalled.append(s)
            # All the headers, half the body.
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: it\r\nContent-Type: application/cloudevents+json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(event) + event[:len(event) // 2])
            stalled.append(s)
        mark = reader.mark()
        ids = []
        with requests.Session() as sess:
            for i in range(20):
                eid = new_id()
                # A timeout, not a benchmark: a gateway held up by the stalled
                # connections would not answer at all.
                r = post(gw.events_url, session=sess, timeout=10, content_type="application/cloudevents+json",
                         body={"id": eid, "source": "/it/not-stalled", "type": "t"})
                assert r.status_code == 200, r.text
                ids.append(eid)
        for i in range(10):
            eid = new_id()
            r = post(gw.events_url, timeout=10, content_type="application/cloudevents+json",
                     body={"id": eid, "source": "/it/not-stalled", "type": "t"})
            assert r.status_code == 200, r.text
            ids.append(eid)
        recs = reader.read_since(mark, 30)
        assert sorted(r.event.id for r in recs) == sorted(ids)
        # The half-sent events never became events.
        assert reader.count_since(mark) == 30
    finally:
        for s in stalled:
            s.close()


# ---- the stack's own gateway -------------------------------------------------------

def test_stack_gateway_end_to_end(http_url, events_topic, topic_reader):
    reader = topic_reader(events_topic)
    mark = reader.mark()
    eids = [new_id(), new_id()]
    r = post(http_url + "/v1/events", content_type="application/cloudevents-batch+json",
             body=[{"id": eids[0], "source": "/it/stack", "type": "com.example.stack", "subject": "s1",
                    "data": {"via": "stack"}},
                   {"id": eids[1], "source": "/it/stack", "type": "com.example.stack",
                    "data_base64": base64.b64encode(b"\x00stack").decode()}])
    assert r.status_code == 200, r.text
    assert accepted_body(r, 2) == eids
    assert reader.count_since(mark) >= 2
    found = reader.find_since(mark, eids)
    expect(found[eids[0]], id=eids[0], source="/it/stack", type="com.example.stack", key="s1",
           gateway_id=socket.gethostname(), attrs={"subject": string("s1")}, data=("json", {"via": "stack"}))
    expect(found[eids[1]], id=eids[1], source="/it/stack", type="com.example.stack",
           gateway_id=socket.gethostname(), data=("bytes", b"\x00stack"))
