"""A catalogue of bad HTTP requests: each gets its exact status and error code
(and the index of the event at fault where there is one), nothing of it
reaches Kafka, and the gateway goes on serving.

Three gateways: a private one with small limits (so that over-limit bodies
stay small), the stack's own with the contract's default limits, and a
private one with --auth-token. For every case the test posts the bad request,
then a good one, and the topic must have grown by exactly the good event.
"""

import gzip
import json
import socket
import uuid
from dataclasses import dataclass, field

import pytest
import requests

SMALL_LIMITS = {"max_request_bytes": 64 * 1024, "max_event_bytes": 16 * 1024, "max_batch_events": 50}
TOKEN = "it-secret-token"

ABSENT = "absent"        # the error must carry no index: not one event's fault
ONE_EVENT = "one-event"  # a request of one event: index 0, or none


@dataclass
class Case:
    id: str
    status: int
    code: str
    body: bytes = b""
    content_type: str | None = "application/cloudevents+json"
    headers: dict = field(default_factory=dict)
    method: str = "POST"
    path: str = "/v1/events"
    params: dict | None = None
    index: object = ABSENT
    field: str | None = None  # the error message must name it
    target: str = "small"     # small | stack | auth


def ev(**attrs):
    e = {"source": "/it/bad", "type": "com.example.bad"}
    e.update(attrs)
    return e


def js(value):
    return json.dumps(value).encode()


def ok_line(**attrs):
    return json.dumps(ev(**attrs)).encode()


GOOD = js(ev())
BIN = {"ce-specversion": "1.0", "ce-source": "/it/bad/bin", "ce-type": "com.example.bad"}


def bin_headers(**changes):
    h = dict(BIN)
    for k, v in changes.items():
        name = "ce-" + k.replace("_", "-") if not k.startswith("raw:") else k[4:]
        if v is None:
            h.pop(name, None)
        else:
            h[name] = v
    return h


def valid_gzip(data):
    return gzip.compress(data)


big_data = "x" * (17 * 1024)  # over the small gateway's 16 KiB event limit, under its 64 KiB body limit

CASES = [
    # ---- malformed JSON -------------------------------------------------------------
    Case("empty-body", 400, "malformed_json", b"", index=ONE_EVENT),
    Case("truncated-object", 400, "malformed_json", b'{"source":"/it/bad","type":"t"', index=ONE_EVENT),
    Case("truncated-in-string", 400, "malformed_json", b'{"source":"/it/b', index=ONE_EVENT),
    Case("trailing-comma", 400, "malformed_json", b'{"source":"/it/bad","type":"t",}', index=ONE_EVENT),
    Case("trailing-garbage", 400, "malformed_json", GOOD + b" x", index=ONE_EVENT),
    Case("two-objects", 400, "malformed_json", GOOD + GOOD, content_type="application/json", index=ONE_EVENT),
    Case("nan", 400, "malformed_json", b'{"source":"/it/bad","type":"t","data":NaN}', index=ONE_EVENT),
    Case("single-quotes", 400, "malformed_json", b"{'source':'/it/bad','type':'t'}", index=ONE_EVENT),
    Case("comment", 400, "malformed_json", b'{/*c*/"source":"/it/bad","type":"t"}', index=ONE_EVENT),
    Case("bom", 400, "malformed_json", b"\xef\xbb\xbf" + GOOD, index=ONE_EVENT),
    Case("invalid-utf8-in-data", 400, "malformed_json", b'{"source":"/it/bad","type":"t","data":"\xff"}',
         index=ONE_EVENT),
    Case("invalid-utf8-in-source", 400, "malformed_json", b'{"source":"/it/\xc3\x28","type":"t"}',
         index=ONE_EVENT),
    Case("lone-surrogate-escape", 400, "malformed_json", b'{"source":"/it/bad","type":"t","data":"\\ud800"}',
         index=ONE_EVENT),
    Case("duplicate-member", 400, "invalid_event", b'{"source":"/it/a","source":"/it/b","type":"t"}',
         index=ONE_EVENT),
    Case("batch-nan-in-second", 400, "malformed_json",
         b"[" + GOOD + b',{"source":"/it/bad","type":"t","n":NaN}]',
         content_type="application/cloudevents-batch+json", index=1),
    Case("batch-truncated-in-third", 400, "malformed_json", b"[" + GOOD + b"," + GOOD + b',{"source":',
         content_type="application/cloudevents-batch+json", index=2),
    Case("ndjson-bad-line-after-blank", 400, "malformed_json", GOOD + b"\n\n" + GOOD + b"\n{\"source\":\n",
         content_type="application/x-ndjson", index=2),
    Case("ndjson-invalid-utf8", 400, "malformed_json", GOOD + b'\n{"source":"/it/\xff","type":"t"}\n',
         content_type="application/x-ndjson", index=1),
    Case("binary-json-body-malformed", 400, "malformed_json", b'{"a":', content_type="application/json",
         headers=BIN, index=ONE_EVENT),
    Case("binary-plus-json-body-malformed", 400, "malformed_json", b"[1,2", content_type="application/x.it+json",
         headers=BIN, index=ONE_EVENT),

    # ---- invalid events ---------------------------------------------------------------
    Case("missing-source", 400, "invalid_event", js({"type": "t"}), index=ONE_EVENT, field="source"),
    Case("empty-source", 400, "invalid_event", js(ev(source="")), index=ONE_EVENT, field="source"),
    Case("null-source", 400, "invalid_event", js(ev(source=None)), index=ONE_EVENT, field="source"),
    Case("missing-type", 400, "invalid_event", js({"source": "/it/bad"}), index=ONE_EVENT, field="type"),
    Case("empty-type", 400, "invalid_event", js(ev(type="")), index=ONE_EVENT, field="type"),
    Case("source-number", 400, "invalid_event", js(ev(source=5)), index=ONE_EVENT, field="source"),
    Case("type-boolean", 400, "invalid_event", js(ev(type=True)), index=ONE_EVENT, field="type"),
    Case("id-object", 400, "invalid_event", js(ev(id={})), index=ONE_EVENT, field="id"),
    Case("subject-array", 400, "invalid_event", js(ev(subject=["a"])), index=ONE_EVENT, field="subject"),
    Case("specversion-0.3", 400, "invalid_event", js(ev(specversion="0.3")), index=ONE_EVENT,
         field="specversion"),
    Case("specversion-number", 400, "invalid_event", js(ev(specversion=1.0)), index=ONE_EVENT,
         field="specversion"),
    Case("time-not-rfc3339", 400, "invalid_event", js(ev(time="yesterday")), index=ONE_EVENT, field="time"),
    Case("time-month-13", 400, "invalid_event", js(ev(time="2024-13-01T00:00:00Z")), index=ONE_EVENT,
         field="time"),
    Case("time-no-offset", 400, "invalid_event", js(ev(time="2024-06-01T12:00:00")), index=ONE_EVENT,
         field="time"),
    Case("extension-upper-case", 400, "invalid_event", js(ev(Tenant="x")), index=ONE_EVENT, field="Tenant"),
    Case("extension-underscore", 400, "invalid_event", js(ev(my_ext="x")), index=ONE_EVENT, field="my_ext"),
    Case("extension-21-chars", 400, "invalid_event", js(ev(abcdefghijklmnopqrstu="x")), index=ONE_EVENT,
         field="abcdefghijklmnopqrstu"),
    Case("extension-object-value", 400, "invalid_event", js(ev(ext={"a": 1})), index=ONE_EVENT, field="ext"),
    Case("65-extensions", 400, "invalid_event", js(ev(**{f"x{i}": i for i in range(65)})), index=ONE_EVENT,
         field="extensions"),
    Case("source-1025-bytes", 400, "invalid_event", js(ev(source="s" * 1025)), index=ONE_EVENT, field="source"),
    Case("source-513-two-byte-chars", 400, "invalid_event", js(ev(source="\u00e9" * 513)),
         index=ONE_EVENT, field="source"),
    Case("type-1025-bytes", 400, "invalid_event", js(ev(type="t" * 1025)), index=ONE_EVENT, field="type"),
    Case("id-1025-bytes", 400, "invalid_event", js(ev(id="i" * 1025)), index=ONE_EVENT, field="id"),
    Case("control-char-in-subject", 400, "invalid_event", js(ev(subject="a\u0001b")), index=ONE_EVENT,
         field="subject"),
    Case("c1-control-in-extension", 400, "invalid_event", js(ev(ext="a\u0085b")), index=ONE_EVENT, field="ext"),
    Case("nul-in-source", 400, "invalid_event", js(ev(source="a\u0000b")), index=ONE_EVENT, field="source"),
    Case("bad-data-base64", 400, "invalid_event", js(ev(data_base64="!!!!")), index=ONE_EVENT,
         field="data_base64"),
    Case("data-and-data-base64", 400, "invalid_event", js(ev(data=1, data_base64="QQ==")), index=ONE_EVENT,
         field="data_base64"),
    Case("empty-batch", 400, "invalid_event", b"[]", content_type="application/cloudevents-batch+json"),
    Case("ndjson-only-blank-lines", 400, "invalid_event", b"\n  \r\n\n", content_type="application/x-ndjson"),
    Case("structured-body-is-array", 400, "invalid_event", js([ev()]), index=ONE_EVENT),
    Case("structured-body-is-string", 400, "invalid_event", js("event"), index=ONE_EVENT),
    Case("batch-body-is-object", 400, "invalid_event", GOOD, content_type="application/cloudevents-batch+json",
         index=ONE_EVENT),
    Case("batch-third-missing-type", 400, "invalid_event", js([ev(), ev(), {"source": "/it/bad"}]),
         content_type="application/cloudevents-batch+json", index=2, field="type"),
    Case("batch-element-not-object", 400, "invalid_event", js([ev(), 1]),
         content_type="application/cloudevents-batch+json", index=1),
    Case("json-array-second-bad-specversion", 400, "invalid_event", js([ev(), ev(specversion="2.0")]),
         content_type="application/json", index=1, field="specversion"),
    Case("ndjson-second-bad-extension", 400, "invalid_event", ok_line() + b"\n\n" + ok_line(Bad="x") + b"\n",
         content_type="application/x-ndjson", index=1, field="Bad"),
    Case("binary-missing-source", 400, "invalid_event", b"data", content_type="application/octet-stream",
         headers=bin_headers(source=None), index=ONE_EVENT, field="source"),
    Case("binary-empty-type", 400, "invalid_event", b"data", content_type="application/octet-stream",
         headers=bin_headers(type=""), index=ONE_EVENT, field="type"),
    Case("binary-specversion-0.3", 400, "invalid_event", b"data", content_type="application/octet-stream",
         headers=bin_headers(specversion="0.3"), index=ONE_EVENT, field="specversion"),
    Case("binary-bad-time", 400, "invalid_event", b"data", content_type="application/octet-stream",
         headers=bin_headers(time="2024-06-01 12:00"), index=ONE_EVENT, field="time"),
    Case("binary-extension-data", 400, "invalid_event", b"data", content_type="application/octet-stream",
         headers=bin_headers(data="x"), index=ONE_EVENT, field="data"),
    Case("binary-extension-underscore", 400, "invalid_event", b"data", content_type="application/octet-stream",
         headers=bin_headers(**{"raw:ce-my_ext": "x"}), index=ONE_EVENT, field="my_ext"),
    Case("binary-extension-21-chars", 400, "invalid_event", b"data", content_type="application/octet-stream",
         headers=bin_headers(**{"raw:ce-abcdefghijklmnopqrstu": "x"}), index=ONE_EVENT,
         field="abcdefghijklmnopqrstu"),
    Case("binary-subject-invalid-utf8", 400, "invalid_event", b"data", content_type="application/octet-stream",
         headers=bin_headers(subject="%FF%FE"), index=ONE_EVENT, field="subject"),
    Case("binary-subject-control-char", 400, "invalid_event", b"data", content_type="application/octet-stream",
         headers=bin_headers(subject="a%01b"), index=ONE_EVENT, field="subject"),
    Case("binary-source-1025-bytes", 400, "invalid_event", b"data", content_type="application/octet-stream",
         headers=bin_headers(source="s" * 1025), index=ONE_EVENT, field="source"),

    # ---- over the limits (small gateway: 64 KiB body, 16 KiB event, 50 events) -------------
    Case("body-over-limit", 413, "too_large", js([ev(data="y" * 8000) for _ in range(9)]),
         content_type="application/cloudevents-batch+json"),
    Case("gzip-decoded-over-limit", 413, "too_large",
         valid_gzip(js([ev(data="y" * 8000) for _ in range(9)])),
         content_type="application/cloudevents-batch+json", headers={"Content-Encoding": "gzip"}),
    Case("batch-51-events", 413, "too_many_events", js([ev() for _ in range(51)]),
         content_type="application/cloudevents-batch+json"),
    Case("ndjson-51-events", 413, "too_many_events", b"\n".join(ok_line() for _ in range(51)),
         content_type="application/x-ndjson"),
    Case("event-over-limit-in-batch", 413, "too_large", js([ev(), ev(data=big_data)]),
         content_type="application/cloudevents-batch+json", index=1),
    Case("event-over-limit-single", 413, "too_large", js(ev(data=big_data)), index=ONE_EVENT),
    Case("binary-data-over-event-limit", 413, "too_large", b"z" * (17 * 1024),
         content_type="application/octet-stream", headers=BIN, index=ONE_EVENT),
    # ...and the contract's defaults, on the stack's gateway.
    Case("default-batch-10001-events", 413, "too_many_events",
         js([{"source": "s", "type": "t"} for _ in range(10001)]),
         content_type="application/cloudevents-batch+json", target="stack"),
    Case("default-event-over-1mib", 413, "too_large", js([ev(), ev(data="y" * (1024 * 1024))]),
         content_type="application/cloudevents-batch+json", index=1, target="stack"),
    Case("default-body-over-8mib", 413, "too_large", js([ev(data="y" * 900_000) for _ in range(10)]),
         content_type="application/cloudevents-batch+json", target="stack"),
    Case("default-gzip-decoded-over-8mib", 413, "too_large",
         valid_gzip(js([ev(data="y" * 900_000) for _ in range(10)])),
         content_type="application/cloudevents-batch+json", headers={"Content-Encoding": "gzip"}, target="stack"),

    # ---- content encoding ---------------------------------------------------------
    Case("gzip-garbage", 400, "bad_encoding", b"this is not gzip", headers={"Content-Encoding": "gzip"}),
    Case("gzip-truncated", 400, "bad_encoding", valid_gzip(GOOD * 20)[:-30], headers={"Content-Encoding": "gzip"}),
    Case("gzip-bad-crc", 400, "bad_encoding", valid_gzip(GOOD)[:-8] + b"\0\0\0\0" + valid_gzip(GOOD)[-4:],
         headers={"Content-Encoding": "x-gzip"}),
    Case("encoding-br", 415, "unsupported_encoding", GOOD, headers={"Content-Encoding": "br"}),
    Case("encoding-deflate", 415, "unsupported_encoding", GOOD, headers={"Content-Encoding": "deflate"}),
    Case("encoding-compress", 415, "unsupported_encoding", GOOD, headers={"Content-Encoding": "compress"}),

    # ---- media types --------------------------------------------------------------
    Case("cloudevents-xml", 415, "unsupported_media_type", b"<event/>", content_type="application/cloudevents+xml"),
    Case("cloudevents-protobuf", 415, "unsupported_media_type", b"\x0a\x01x",
         content_type="application/cloudevents+protobuf"),
    Case("cloudevents-batch-avro", 415, "unsupported_media_type", b"x",
         content_type="application/cloudevents-batch+avro"),
    Case("structured-latin1-charset", 415, "unsupported_media_type", GOOD,
         content_type="application/cloudevents+json; charset=iso-8859-1"),
    Case("json-utf16-charset", 415, "unsupported_media_type", GOOD.decode().encode("utf-16"),
         content_type="application/json; charset=utf-16"),
    Case("ndjson-latin1-charset", 415, "unsupported_media_type", GOOD, content_type="application/x-ndjson; charset=latin1"),

    # ---- headers ------------------------------------------------------------------------
    Case("headers-70k", 431, "headers_too_large", GOOD, headers={"X-Padding": "p" * 70_000}),
    Case("200-header-fields", 431, "headers_too_large", GOOD, headers={f"X-F{i}": "v" for i in range(200)}),

    # ---- methods and paths --------------------------------------------------------
    Case("get", 405, "method_not_allowed", method="GET", content_type=None),
    Case("put", 405, "method_not_allowed", GOOD, method="PUT"),
    Case("delete", 405, "method_not_allowed", method="DELETE", content_type=None),
    Case("patch", 405, "method_not_allowed", GOOD, method="PATCH"),
    Case("path-singular", 404, "not_found", GOOD, path="/v1/event"),
    Case("path-root", 404, "not_found", GOOD, path="/"),
    Case("path-below", 404, "not_found", GOOD, path="/v1/events/x"),
    Case("path-v2", 404, "not_found", GOOD, path="/v2/events"),
    Case("get-unknown-path", 404, "not_found", method="GET", path="/nope", content_type=None),

    # ---- acknowledgement level ------------------------------------------------------
    Case("ack-query-bogus", 400, "bad_request", GOOD, params={"ack": "sometimes"}),
    Case("ack-header-bogus", 400, "bad_request", GOOD, headers={"Ingest-Ack": "never"}),
    Case("ack-query-wins-bogus", 400, "bad_request", GOOD, params={"ack": "all"},
         headers={"Ingest-Ack": "accepted"}),

    # ---- auth (a gateway started with --auth-token) ---------------------------------
    Case("auth-missing", 401, "unauthorized", GOOD, target="auth"),
    Case("auth-wrong-token", 401, "unauthorized", GOOD, headers={"Authorization": "Bearer wrong"}, target="auth"),
    Case("auth-token-prefix", 401, "unauthorized", GOOD, headers={"Authorization": f"Bearer {TOKEN}x"},
         target="auth"),
    Case("auth-basic-scheme", 401, "unauthorized", GOOD, headers={"Authorization": "Basic aXQ6aXQ="},
         target="auth"),
    Case("auth-empty-bearer", 401, "unauthorized", GOOD, headers={"Authorization": "Bearer "}, target="auth"),
]


@pytest.fixture(scope="module")
def topic(make_topic):
    return make_topic("http-errors")


@pytest.fixture(scope="module")
def gateways(start_gateway, topic, http_url):
    small = start_gateway(f"--kafka-topic={topic}",
                          *(f"--{k.replace('_', '-')}={v}" for k, v in SMALL_LIMITS.items()))
    auth = start_gateway(f"--kafka-topic={topic}", f"--auth-token={TOKEN}")
    yield {"small": small.events_url, "auth": auth.events_url, "stack": http_url + "/v1/events"}
    small.stop()
    auth.stop()


@pytest.fixture(scope="module")
def readers(topic, events_topic, topic_reader):
    private = topic_reader(topic)
    return {"small": private, "auth": private, "stack": topic_reader(events_topic)}


def check_error(r, case):
    assert r.status_code == case.status, (r.status_code, r.headers, r.text[:500])
    assert r.headers.get("Content-Type", "").split(";")[0].strip().lower() == "application/json", r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) <= {"code", "message", "index"}, err
    assert err["code"] == case.code, err
    assert isinstance(err["message"], str) and err["message"], err
    if case.index == ABSENT:
        assert "index" not in err, err
    elif case.index == ONE_EVENT:
        assert err.get("index", 0) == 0, err
    else:
        assert err.get("index") == case.index, err
    if case.field:
        assert case.field in err["message"], err
    if case.status == 405:
        assert [m.strip() for m in r.headers.get("Allow", "").split(",")] == ["POST"], r.headers
    if case.status == 401:
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers


def test_catalogue_is_big_enough():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request(case, gateways, readers):
    url = gateways[case.target]
    reader = readers[case.target]
    base = url[: -len("/v1/events")]
    mark = reader.mark()

    headers = dict(case.headers)
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    try:
        r = requests.request(case.method, base + case.path, data=case.body, headers=headers, params=case.params,
                             timeout=30)
    except requests.ConnectionError as e:
        pytest.fail(f"no answer to the bad request, the connection failed: {e!r}")
    check_error(r, case)

    # The gateway still serves, on a new connection: a good event gets through...
    good_id = f"it-good-{uuid.uuid4()}"
    auth = {"Authorization": f"Bearer {TOKEN}"} if case.target == "auth" else {}
    g = requests.post(url, data=js(ev(id=good_id)),
                      headers={"Content-Type": "application/cloudevents+json", **auth}, timeout=30)
    assert g.status_code == 200, g.text
    assert g.json() == {"accepted": 1, "ids": [good_id]}
    # ...and it is the only thing that reached the topic.
    assert reader.count_since(mark) == 1
    [rec] = reader.read_since(mark, 1)
    assert rec.event.id == good_id


def test_bad_requests_on_one_keep_alive_connection_do_not_break_it(gateways, readers):
    """Error answers leave the connection usable (or close it cleanly): a session goes on."""
    reader = readers["small"]
    mark = reader.mark()
    good = []
    with requests.Session() as s:
        for i in range(5):
            r = s.post(gateways["small"], data=b'{"source":', headers={"Content-Type": "application/json"},
                       timeout=30)
            assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
            r = s.post(gateways["small"], data=js(ev(Tenant="x")),
                       headers={"Content-Type": "application/cloudevents+json"}, timeout=30)
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_event"
            good_id = f"it-good-{uuid.uuid4()}"
            r = s.post(gateways["small"], data=js(ev(id=good_id)),
                       headers={"Content-Type": "application/cloudevents+json"}, timeout=30)
            assert r.status_code == 200, r.text
            good.append(good_id)
    recs = reader.read_since(mark, 5)
    assert sorted(r.event.id for r in recs) == sorted(good)
    assert reader.count_since(mark) == 5


# Requests the HTTP parser itself refuses: 400 (405 for an unknown method is
# as good), or at least a closed connection; never a dead gateway.
RAW = [
    ("unknown-method", b"FOO /v1/events HTTP/1.1\r\nHost: it\r\n\r\n"),
    ("query-method", b"QUERY /v1/events HTTP/1.1\r\nHost: it\r\nContent-Length: 2\r\n\r\n{}"),
    ("garbage-request-line", b"GARBAGE\r\n\r\n"),
    ("tls-client-hello", bytes.fromhex("16030100a5010000a10303") + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00"),
    ("header-without-colon", b"POST /v1/events HTTP/1.1\r\nHost: it\r\nNoColonHere\r\n\r\n"),
    ("bad-content-length", b"POST /v1/events HTTP/1.1\r\nHost: it\r\nContent-Length: abc\r\n\r\n"),
    ("bad-chunk-size", b"POST /v1/events HTTP/1.1\r\nHost: it\r\nTransfer-Encoding: chunked\r\n"
                       b"Content-Type: application/cloudevents+json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    ("http-0.9", b"GET /v1/events\r\n\r\n"),
]


@pytest.mark.parametrize("raw", [r for _, r in RAW], ids=[i for i, _ in RAW])
def test_unparseable_http_does_not_kill_the_gateway(raw, start_gateway, topic, readers):
    # A gateway of its own: one that dies takes no other case with it.
    gw = start_gateway(f"--kafka-topic={topic}")
    reader = readers["small"]
    host, port = gw.http_addr.split(":")
    mark = reader.mark()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    if answer:
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split(b" ")[1] in (b"400", b"405"), answer[:300]
        body = json.loads(rest.partition(b"\r\n\r\n")[2])
        assert body["error"]["code"] in ("bad_request", "method_not_allowed"), body
    good_id = f"it-good-{uuid.uuid4()}"
    g = failure = None
    try:
        g = requests.post(gw.events_url, data=js(ev(id=good_id)),
                          headers={"Content-Type": "application/cloudevents+json"}, timeout=30)
    except requests.ConnectionError as e:
        failure = repr(e)
    if failure:
        try:
            gw.proc.wait(timeout=2)
        except Exception:
            pass
        pytest.fail(f"the gateway no longer serves ({failure}); exit status {gw.proc.poll()}:\n{gw.log_tail(1)}")
    assert gw.proc.poll() is None
    assert g.status_code == 200, g.text
    assert reader.count_since(mark) == 1
    gw.stop()
