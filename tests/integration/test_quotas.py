"""Per-principal and per-source-address quotas (issue 15) against private gateways with an --auth-file.

A noisy principal floods at ten times its quota while a quiet one stays under its own: the quiet one
never sees 429, the noisy one gets its quota's rate (plus its burst) and 429 `rate_limited` with a
Retry-After computed from its bucket. The same per source address over UDP (127.0.0.1 against
127.0.0.2, as `anonymous`), counted from what reached Kafka. A gRPC stream over quota is slowed, not
ended; a unary call over quota is RESOURCE_EXHAUSTED with the wait in its message and in the trailing
metadata `grpc-retry-pushback-ms`.

Skipped, saying why, only while the gateway under test has no --auth-file (the quotas are reached
through principals).
"""

import hashlib
import json
import socket
import threading
import time
import uuid

import grpc
import pytest
import requests

from test_grpc import ce, channel, request


@pytest.fixture(scope="module", autouse=True)
def needs_auth_file(gateway_help):
    if "--auth-file" not in gateway_help:
        pytest.skip("this gateway has no --auth-file yet: quotas are reached through its principals")


def sha(token):
    return hashlib.sha256(token.encode()).hexdigest()


TOKENS = {name: f"tok-{name}-{uuid.uuid4().hex}" for name in ("noisy", "quiet", "slow", "streamer", "unary")}

AUTH_FILE = f"""
# two HTTP principals with the same quota: one floods, one does not
principal noisy
  token sha256:{sha(TOKENS['noisy'])}
  rate 50/s burst 50
principal quiet
  token sha256:{sha(TOKENS['quiet'])}
  rate 50/s burst 50
principal slow
  token sha256:{sha(TOKENS['slow'])}
  rate 1/s burst 4
principal streamer
  token sha256:{sha(TOKENS['streamer'])}
  protocols grpc
  rate 20/s burst 20
principal unary
  token sha256:{sha(TOKENS['unary'])}
  protocols grpc
  rate 5/s burst 5
principal anonymous
  protocols udp
  rate 50/s
"""


@pytest.fixture(scope="module")
def qgw(start_gateway, make_topic, tmp_path_factory):
    path = tmp_path_factory.mktemp("quotas") / "auth"
    path.write_text(AUTH_FILE)
    topic = make_topic("quotas")
    # --retry-after far from any bucket's wait: a Retry-After of 7 would be the flag's, not the bucket's.
    g = start_gateway(f"--kafka-topic={topic}", f"--auth-file={path}", "--retry-after=7",
                      "--gateway-id=it-quotas")
    g.topic = topic
    yield g
    g.stop()


def batch(source, n):
    return json.dumps([{"specversion": "1.0", "id": uuid.uuid4().hex, "source": source, "type": "t"}
                       for _ in range(n)])


def post(session, gw, who, source, n):
    return session.post(gw.events_url + "?ack=accepted", data=batch(source, n), timeout=10,
                        headers={"Content-Type": "application/cloudevents-batch+json",
                                 "Authorization": f"Bearer {TOKENS[who]}"})


def paced(period, duration, fn):
    """fn() every `period` seconds for `duration` seconds, on schedule (late calls are not bunched)."""
    start = time.monotonic()
    k = 0
    while True:
        due = start + k * period
        if due - start >= duration:
            return time.monotonic() - start
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        fn()
        k += 1


def test_http_noisy_principal_gets_its_quota_and_quiet_one_is_untouched(qgw):
    rate, burst, duration = 50, 50, 8.0
    noisy = {"202": 0, "429": 0, "other": [], "retry_after": set(), "first": None, "last": None}
    quiet = {"202": 0, "other": []}

    def flood():
        with requests.Session() as s:
            def one():
                r = post(s, qgw, "noisy", "/it/quota/noisy", 10)  # 50 requests/s x 10 = 10x the quota
                if r.status_code == 202:
                    noisy["202"] += 1
                    now = time.monotonic()
                    noisy["first"] = noisy["first"] or now
                    noisy["last"] = now
                elif r.status_code == 429:
                    noisy["429"] += 1
                    assert r.json()["error"]["code"] == "rate_limited", r.text
                    noisy["retry_after"].add(r.headers["Retry-After"])
                else:
                    noisy["other"].append((r.status_code, r.text))
            paced(1 / 50, duration, one)

    def calm():
        with requests.Session() as s:
            def one():
                r = post(s, qgw, "quiet", "/it/quota/quiet", 5)  # 10 events/s, a fifth of its quota
                if r.status_code == 202:
                    quiet["202"] += 1
                else:
                    quiet["other"].append((r.status_code, r.text))
            paced(0.5, duration, one)

    threads = [threading.Thread(target=flood), threading.Thread(target=calm)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert quiet["other"] == [], quiet["other"][:3]
    assert quiet["202"] >= duration / 0.5 - 1
    assert noisy["other"] == [], noisy["other"][:3]
    assert noisy["429"] > 0
    # A bucket of 50 with 10 taken a request and 50 back a second: a retry within the second works.
    assert noisy["retry_after"] == {"1"}, noisy["retry_after"]
    # The rate past the first burst, over the time it was measured: the quota's, within 10%.
    admitted = noisy["202"] * 10
    span = noisy["last"] - noisy["first"]
    measured = (admitted - burst) / span
    print(f"noisy: {admitted} events admitted in {span:.2f} s ({measured:.1f}/s past the burst), "
          f"{noisy['429']} refused")
    assert abs(measured - rate) <= 0.1 * rate, measured
    assert qgw.metric("ingest_rejected_total", protocol="http", reason="rate_limited") == noisy["429"]


def test_http_retry_after_is_the_buckets(qgw):
    """Retry-After says when the bucket has room: for one event when the gate finds it empty (the body is
    not parsed yet), for the request's events when they do not fit; never --retry-after (7 here)."""
    with requests.Session() as s:
        assert post(s, qgw, "slow", "/it/quota/slow", 4).status_code == 202  # the burst
        r = post(s, qgw, "slow", "/it/quota/slow", 1)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limited"
        assert r.headers["Retry-After"] == "1"  # empty: the next token within the second
        time.sleep(1.1)
        r = post(s, qgw, "slow", "/it/quota/slow", 4)  # about one token back: four need ~2.9 s more
        assert r.status_code == 429, r.text
        assert r.headers["Retry-After"] == "3"
        assert "retry in 3 s" in r.json()["error"]["message"]
        time.sleep(3.0)
        assert post(s, qgw, "slow", "/it/quota/slow", 4).status_code == 202
        # More than the burst at once: only from a full bucket, which then owes the rest.
        time.sleep(4.1)
        assert post(s, qgw, "slow", "/it/quota/slow", 6).status_code == 202
        r = post(s, qgw, "slow", "/it/quota/slow", 1)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "3"  # 2 owed, then 1


def test_udp_per_source_address(qgw, topic_reader):
    reader = topic_reader(qgw.topic)
    mark = reader.mark()
    host, port = qgw.addrs["--udp-addr"].rsplit(":", 1)
    target = (host, int(port))
    run = uuid.uuid4().hex[:8]
    rate, burst, duration = 50, 50, 6.0
    sent = {"noisy": 0, "quiet": 0}
    before = qgw.metric("ingest_rejected_total", protocol="udp", reason="rate_limited")
    kernel_before = qgw.metric("ingest_dropped_total", protocol="udp", reason="socket_buffer")

    def sender(name, src, period):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))

        def one():
            ev = {"source": f"/it/quota/udp/{run}/{name}", "type": "t", "id": f"{name}-{sent[name]}"}
            s.sendto(json.dumps(ev).encode(), target)
            sent[name] += 1
        try:
            return paced(period, duration, one)
        finally:
            s.close()

    spans = {}
    threads = [threading.Thread(target=lambda: spans.update(noisy=sender("noisy", "127.0.0.1", 1 / 500))),
               threading.Thread(target=lambda: spans.update(quiet=sender("quiet", "127.0.0.2", 1 / 20)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.5)  # the last datagrams read
    assert qgw.metric("ingest_dropped_total", protocol="udp", reason="socket_buffer") == kernel_before
    refused = qgw.metric("ingest_rejected_total", protocol="udp", reason="rate_limited") - before
    got = {"noisy": 0, "quiet": 0}
    want = sent["quiet"] + (sent["noisy"] - refused)
    for rec in reader.read_since(mark, int(want), timeout=30):
        for name in got:
            if rec.event.source == f"/it/quota/udp/{run}/{name}":
                got[name] += 1
    print(f"udp: sent {sent}, in Kafka {got}, refused {refused}")
    assert got["quiet"] == sent["quiet"]  # 127.0.0.2's own bucket: untouched by 127.0.0.1's flood
    assert got["noisy"] == sent["noisy"] - refused
    measured = (got["noisy"] - burst) / spans["noisy"]
    assert abs(measured - rate) <= 0.1 * rate, measured


def test_grpc_stream_over_quota_is_slowed_not_ended(qgw, pb):
    target = qgw.addrs["--grpc-addr"]
    md = (("authorization", f"Bearer {TOKENS['streamer']}"),)
    n, per = 12, 10  # 120 events against 20/s, burst 20

    def reqs():
        for k in range(n):
            yield request(pb, [ce(pb, id=uuid.uuid4().hex, source="/it/quota/stream") for _ in range(per)], seq=k,
                          ack=pb.ingest_pb2.ACK_LEVEL_ACCEPTED)

    start = time.monotonic()
    with channel(target) as ch:
        acks = list(pb.ingest_pb2_grpc.IngestStub(ch).PublishStream(reqs(), metadata=md, timeout=60))
    took = time.monotonic() - start
    print(f"stream: {n * per} events in {took:.2f} s against 20/s, burst 20")
    assert [a.seq for a in acks] == list(range(n))
    assert all(a.accepted == per and not a.errors for a in acks)
    # Taken at the quota: the burst, one request read ahead, then 20 a second.
    assert took >= (n * per - 20 - per) / 20 * 0.9, took
    assert qgw.metric("ingest_rejected_total", protocol="grpc", reason="rate_limited") == 0


def test_grpc_unary_over_quota_is_resource_exhausted_with_the_wait(qgw, pb):
    target = qgw.addrs["--grpc-addr"]
    md = (("authorization", f"Bearer {TOKENS['unary']}"),)
    with channel(target) as ch:
        stub = pb.ingest_pb2_grpc.IngestStub(ch)
        resp = stub.Publish(request(pb, [ce(pb, id=uuid.uuid4().hex) for _ in range(5)],
                                    ack=pb.ingest_pb2.ACK_LEVEL_ACCEPTED), metadata=md, timeout=30)
        assert resp.accepted == 5
        with pytest.raises(grpc.RpcError) as e:
            stub.Publish(request(pb, [ce(pb, id=uuid.uuid4().hex) for _ in range(5)],
                                 ack=pb.ingest_pb2.ACK_LEVEL_ACCEPTED), metadata=md, timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert e.value.details().startswith("rate_limited: "), e.value.details()
    assert "retry in 1 s" in e.value.details()
    pushback = dict(e.value.trailing_metadata() or ())
    assert pushback["grpc-retry-pushback-ms"] == "1000", pushback
