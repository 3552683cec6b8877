"""Principals (--auth-file), end to end with real clients: who a caller is
(a bearer token over HTTP and gRPC, a verified client certificate over TLS,
nobody: anonymous), what it may do (protocols, source prefixes), the
answers (401, 403 `forbidden` naming the event, PERMISSION_DENIED, UDP
drops), the principal in the Envelope on Kafka and in Postgres through a
sink, the metrics, and the start-up errors (exit 2, one line).
"""

import hashlib
import json
import socket
import subprocess
import time
import uuid

import grpc
import pytest
import requests

from conftest import pg_query
from pki import client_cert, make_pki
from test_sink import caught_up, wait_until
from test_tls import run_gateway

CT = {"Content-Type": "application/cloudevents+json"}
TOKENS = {"billing": "billing-t0ken", "shop": "shop-t0ken", "ops": "ops-t0ken"}


def sha(token):
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


AUTH_FILE = f"""# the integration test's principals
principal billing
  token {sha(TOKENS["billing"])}
  cert subject CN=billing,O=Acme
  source /billing/
principal shop               # gRPC only; known by its token or its certificate's URI
  token {sha(TOKENS["shop"])}
  cert san URI:spiffe://acme/shop
  protocols grpc
principal ops
  token {sha(TOKENS["ops"])}
  protocols udp
principal anonymous
  protocols http udp
  source /public/
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = make_pki(tmp_path_factory.mktemp("pki-principals"))
    client_cert(p.dir, "billing", "/O=Acme/CN=billing", "DNS:billing.acme.internal")
    client_cert(p.dir, "shopcert", "/CN=shop-workload", "URI:spiffe://acme/shop")
    client_cert(p.dir, "nobody", "/CN=nobody")
    return p


@pytest.fixture(scope="module")
def auth_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "principals.conf"
    path.write_text(AUTH_FILE)
    return path


@pytest.fixture(scope="module")
def gw(start_gateway, make_topic, pki, auth_file):
    """TLS on HTTP and gRPC, client certificates optional; UDP plain."""
    topic = make_topic("principals")
    g = start_gateway(f"--kafka-topic={topic}", f"--tls-cert={pki.chain_pem}", f"--tls-key={pki.server_key}",
                      f"--tls-client-ca={pki.ca_pem}", "--tls-client-auth=optional", f"--auth-file={auth_file}")
    g.topic = topic
    g.https = "https://" + g.http_addr
    g.grpc = g.addrs["--grpc-addr"]
    return g


@pytest.fixture(scope="module")
def reader(gw, topic_reader):
    return topic_reader(gw.topic)


def event(source, **kw):
    return {"specversion": "1.0", "id": f"it-p-{uuid.uuid4()}", "source": source, "type": "com.example.p", **kw}


def post(gw, pki, body, token=None, cert=None):
    headers = dict(CT)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(gw.https + "/v1/events", data=json.dumps(body), headers=headers, verify=pki.ca_pem,
                         cert=(getattr(pki, f"{cert}_pem"), getattr(pki, f"{cert}_key")) if cert else None,
                         timeout=30)


def principals_of(reader, mark, ids):
    return {i: r.envelope.principal for i, r in reader.find_since(mark, ids).items()}


def refused(gw, principal, reason="forbidden"):
    return gw.metric("ingest_principal_refused_total", principal=principal, reason=reason)


# ---- HTTP: tokens, anonymous, sources ----------------------------------------------------------------

def test_http_tokens_sources_and_anonymous(gw, pki, reader):
    mark = reader.mark()
    before = refused(gw, "billing")
    ok = event("/billing/invoices")
    r = post(gw, pki, ok, token=TOKENS["billing"])
    assert r.status_code == 200, r.text
    # Accepted without waiting for Kafka: 202.
    ok202 = event("/billing/eu")
    r = requests.post(gw.https + "/v1/events?ack=accepted", data=json.dumps(ok202), verify=pki.ca_pem,
                      headers={**CT, "Authorization": f"Bearer {TOKENS['billing']}"}, timeout=30)
    assert r.status_code == 202, r.text

    # A batch whose event 1 has a source billing may not use: 403 naming it, and nothing of the batch goes.
    batch = [event("/billing/a"), event("/shop/b"), event("/billing/c")]
    r = requests.post(gw.https + "/v1/events", data=json.dumps(batch), verify=pki.ca_pem,
                      headers={"Content-Type": "application/cloudevents-batch+json",
                               "Authorization": f"Bearer {TOKENS['billing']}"}, timeout=30)
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "forbidden" and err["index"] == 1 and "/shop/b" in err["message"], err
    # A single event names no index.
    r = post(gw, pki, event("/shop/x"), token=TOKENS["billing"])
    assert r.status_code == 403 and "index" not in r.json()["error"], r.text
    assert refused(gw, "billing") == before + 2

    # A token matching nobody: 401, even where anonymous may post.
    r = post(gw, pki, event("/public/x"), token="not-a-known-token")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    # ops may not use HTTP.
    r = post(gw, pki, event("/public/x"), token=TOKENS["ops"])
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    assert "ops" in r.json()["error"]["message"] and "HTTP" in r.json()["error"]["message"]

    # No token: anonymous, which may post /public/ sources over HTTP, and nothing else.
    anon = event("/public/hello")
    r = post(gw, pki, anon)
    assert r.status_code == 200, r.text
    r = post(gw, pki, event("/billing/sneaky"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text

    # curl too, with its own TLS stack.
    cev = event("/billing/curl")
    out = subprocess.run(["curl", "-sS", "--cacert", pki.ca_pem, "-H", "Content-Type: application/cloudevents+json",
                          "-H", f"Authorization: Bearer {TOKENS['billing']}", "-d", json.dumps(cev), "-o",
                          "/dev/null", "-w", "%{http_code}", gw.https + "/v1/events"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == "200", (out.stdout, out.stderr)
    out = subprocess.run(["curl", "-sS", "--cacert", pki.ca_pem, "-H", "Content-Type: application/cloudevents+json",
                          "-H", "Authorization: Bearer wrong", "-d", json.dumps(event("/public/c")),
                          "-w", "\n%{http_code}", gw.https + "/v1/events"], capture_output=True, text=True, timeout=30)
    assert out.stdout.endswith("\n401") and '"unauthorized"' in out.stdout, out.stdout

    got = principals_of(reader, mark, [ok["id"], ok202["id"], anon["id"], cev["id"]])
    assert got == {ok["id"]: "billing", ok202["id"]: "billing", anon["id"]: "anonymous", cev["id"]: "billing"}
    assert gw.metric("ingest_principal_events_total", principal="billing") >= 3
    assert gw.metric("ingest_rejected_total", protocol="http", reason="forbidden") >= 4


def test_http_client_certificates_identify(gw, pki, reader):
    mark = reader.mark()
    # billing's certificate (subject CN=billing,O=Acme), no token.
    ev = event("/billing/by-cert")
    r = post(gw, pki, ev, cert="billing")
    assert r.status_code == 200, r.text
    r = post(gw, pki, event("/public/by-cert"), cert="billing")
    assert r.status_code == 403, r.text  # billing's sources, not anonymous's
    # A token decides over the certificate.
    r = post(gw, pki, event("/public/x"), cert="billing", token="unknown")
    assert r.status_code == 401, r.text
    # shop's certificate (by its URI SAN): shop may not use HTTP.
    r = post(gw, pki, event("/shop/x"), cert="shopcert")
    assert r.status_code == 403 and "shop" in r.json()["error"]["message"], r.text
    # A valid certificate of nobody in the file: anonymous.
    anon = event("/public/nobody")
    r = post(gw, pki, anon, cert="nobody")
    assert r.status_code == 200, r.text
    # curl's client certificate (--cert/--key) identifies billing the same way.
    by_curl = event("/billing/by-curl")
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", pki.ca_pem,
                        "--cert", pki.billing_pem, "--key", pki.billing_key, "-H", f"Content-Type: {CT['Content-Type']}",
                        "--data-binary", json.dumps(by_curl), gw.https + "/v1/events"],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout == "200", (r.stdout, r.stderr)
    # Several requests on one connection keep the connection's identity.
    with requests.Session() as s:
        s.cert = (pki.billing_pem, pki.billing_key)
        ids = []
        for _ in range(3):
            e = event("/billing/session")
            r = s.post(gw.https + "/v1/events", data=json.dumps(e), headers=CT, verify=pki.ca_pem, timeout=30)
            assert r.status_code == 200, r.text
            ids.append(e["id"])
    got = principals_of(reader, mark, [ev["id"], anon["id"], by_curl["id"], *ids])
    assert got == {ev["id"]: "billing", anon["id"]: "anonymous", by_curl["id"]: "billing",
                   **{i: "billing" for i in ids}}


# ---- gRPC --------------------------------------------------------------------------------------------

def grpc_stub(gw, pki, pb, cert=None):
    read = lambda name: open(getattr(pki, name), "rb").read()  # noqa: E731
    creds = grpc.ssl_channel_credentials(
        root_certificates=read("ca_pem"), private_key=read(f"{cert}_key") if cert else None,
        certificate_chain=read(f"{cert}_pem") if cert else None)
    ch = grpc.secure_channel(gw.grpc, creds, options=[("grpc.ssl_target_name_override", "localhost")])
    return ch, pb.ingest_pb2_grpc.IngestStub(ch)


def ce(pb, source):
    return pb.cloudevent_pb2.CloudEvent(id=f"it-pg-{uuid.uuid4()}", source=source, spec_version="1.0",
                                        type="com.example.p")


def test_grpc_tokens_certificates_and_permission_denied(gw, pki, pb, reader):
    mark = reader.mark()
    tok = lambda name: [("authorization", f"Bearer {TOKENS[name]}")]  # noqa: E731
    ch, stub = grpc_stub(gw, pki, pb)
    with ch:
        e1 = ce(pb, "/shop/orders")
        r = stub.Publish(pb.ingest_pb2.PublishRequest(events=[e1]), metadata=tok("shop"), timeout=30)
        assert r.accepted == 1
        # billing over gRPC (its default protocols), a batch with a source it may not use at index 1.
        bad = [ce(pb, "/billing/a"), ce(pb, "/elsewhere"), ce(pb, "/billing/b")]
        with pytest.raises(grpc.RpcError) as e:
            stub.Publish(pb.ingest_pb2.PublishRequest(events=bad), metadata=tok("billing"), timeout=30)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, e.value
        # A stream: the refused request is answered event by event, `forbidden` at index 1.
        acks = list(stub.PublishStream(iter([pb.ingest_pb2.PublishRequest(seq=1, events=bad)]),
                                       metadata=tok("billing"), timeout=30))
        assert [(x.index, x.code) for x in acks[0].errors] == [(1, "forbidden")], acks
        # ops may not use gRPC; an unknown token is nobody; anonymous may not use gRPC.
        for md, code in ((tok("ops"), grpc.StatusCode.PERMISSION_DENIED),
                         ([("authorization", "Bearer nope")], grpc.StatusCode.UNAUTHENTICATED),
                         (None, grpc.StatusCode.UNAUTHENTICATED)):
            with pytest.raises(grpc.RpcError) as e:
                stub.Publish(pb.ingest_pb2.PublishRequest(events=[ce(pb, "/public/x")]), metadata=md, timeout=30)
            assert e.value.code() == code, (md, e.value)
    # shop by its certificate's URI SAN, no token.
    ch, stub = grpc_stub(gw, pki, pb, cert="shopcert")
    with ch:
        e2 = ce(pb, "/shop/by-cert")
        assert stub.Publish(pb.ingest_pb2.PublishRequest(events=[e2]), timeout=30).accepted == 1
    # billing by its certificate's subject; its sources hold.
    ch, stub = grpc_stub(gw, pki, pb, cert="billing")
    with ch:
        e3 = ce(pb, "/billing/grpc")
        assert stub.Publish(pb.ingest_pb2.PublishRequest(events=[e3]), timeout=30).accepted == 1
        with pytest.raises(grpc.RpcError) as e:
            stub.Publish(pb.ingest_pb2.PublishRequest(events=[ce(pb, "/shop/x")]), timeout=30)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    got = principals_of(reader, mark, [e1.id, e2.id, e3.id])
    assert got == {e1.id: "shop", e2.id: "shop", e3.id: "billing"}
    assert gw.metric("ingest_rejected_total", protocol="grpc", reason="forbidden") >= 4


# ---- UDP ---------------------------------------------------------------------------------------------

def test_udp_is_anonymous_and_forbidden_sources_are_dropped(gw, reader):
    host, port = gw.addrs["--udp-addr"].rsplit(":", 1)
    before = gw.metric("ingest_rejected_total", protocol="udp", reason="forbidden")
    before_anon = refused(gw, "anonymous")
    mark = reader.mark()
    ok, bad = event("/public/udp"), event("/billing/udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(json.dumps(bad).encode(), (host, int(port)))
        s.sendto(json.dumps(ok).encode(), (host, int(port)))
    assert principals_of(reader, mark, [ok["id"]]) == {ok["id"]: "anonymous"}
    deadline = time.monotonic() + 10
    while gw.metric("ingest_rejected_total", protocol="udp", reason="forbidden") < before + 1:
        assert time.monotonic() < deadline, "the forbidden datagram was not counted"
        time.sleep(0.05)
    assert refused(gw, "anonymous") >= before_anon + 1
    assert bad["id"] not in {r.event.id for r in reader.read_since(mark, reader.count_since(mark))}
    # The dropped datagram's reason is logged with its peer.
    assert "forbidden" in gw.log()


# ---- without anonymous; the shorthand; Postgres; start-up errors --------------------------------------

def test_without_anonymous_no_token_is_401(start_gateway, make_topic, tmp_path):
    f = tmp_path / "auth.conf"
    f.write_text(f"principal only\n  token {sha('only-token')}\n  protocols http grpc udp\n")
    g = start_gateway(f"--kafka-topic={make_topic('p-noanon')}", f"--auth-file={f}")
    r = requests.post(g.url + "/v1/events", data=json.dumps(event("/x")), headers=CT, timeout=30)
    assert r.status_code == 401, r.text
    r = requests.post(g.url + "/v1/events", data=json.dumps(event("/x")), timeout=30,
                      headers={**CT, "Authorization": "Bearer only-token"})
    assert r.status_code == 200, r.text
    # UDP: anonymous is not in the file, so nothing gets in, counted as unauthorized.
    host, port = g.addrs["--udp-addr"].rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(json.dumps(event("/x")).encode(), (host, int(port)))
    deadline = time.monotonic() + 10
    while g.metric("ingest_rejected_total", protocol="udp", reason="unauthorized") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    text = requests.get(g.admin_url + "/metrics", timeout=5).text
    assert 'ingest_principal_events_total{principal="only"} 1' in text
    assert 'ingest_principal_refused_total{principal="only",reason="forbidden"} 0' in text


def test_auth_token_shorthand(start_gateway, make_topic, topic_reader):
    topic = make_topic("p-token")
    g = start_gateway(f"--kafka-topic={topic}", "--auth-token=sh0rt")
    reader = topic_reader(topic)
    mark = reader.mark()
    ev = event("/any/source")
    r = requests.post(g.url + "/v1/events", data=json.dumps(ev), timeout=30,
                      headers={**CT, "Authorization": "Bearer sh0rt"})
    assert r.status_code == 200, r.text
    assert requests.post(g.url + "/v1/events", data=json.dumps(event("/a")), headers=CT,
                         timeout=30).status_code == 401
    uev = event("/udp/any")
    host, port = g.addrs["--udp-addr"].rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(json.dumps(uev).encode(), (host, int(port)))
    assert principals_of(reader, mark, [ev["id"], uev["id"]]) == {ev["id"]: "default", uev["id"]: "anonymous"}


def test_principal_reaches_postgres(start_gateway, start_sink, make_topic, make_pg_schema, kafka_bootstrap,
                                    auth_file):
    topic = make_topic("p-sink")
    schema, dsn = make_pg_schema()
    g = start_gateway(f"--kafka-topic={topic}", f"--auth-file={auth_file}")
    sink = start_sink(f"--kafka-topic={topic}", f"--pg-dsn={dsn}", f"--dlq-topic={make_topic('p-sink-dlq')}")
    mine, anon = event("/billing/pg"), event("/public/pg")
    r = requests.post(g.url + "/v1/events", data=json.dumps(mine), timeout=30,
                      headers={**CT, "Authorization": f"Bearer {TOKENS['billing']}"})
    assert r.status_code == 200, r.text
    assert requests.post(g.url + "/v1/events", data=json.dumps(anon), headers=CT, timeout=30).status_code == 200
    wait_until("the sink to store the topic", lambda: caught_up(dsn, kafka_bootstrap, topic), 30, sinks=[sink])
    rows = pg_query(dsn, "SELECT id, principal FROM events WHERE id = ANY(%s)", ([mine["id"], anon["id"]],))
    assert dict(rows) == {mine["id"]: "billing", anon["id"]: "anonymous"}
    # Migration 002 is recorded, and the column is nullable (older rows have none).
    mig = pg_query(dsn, "SELECT version FROM ingest_schema_migrations ORDER BY version")
    assert [m[0] for m in mig][:2] == [1, 2]
    sink.stop()
    g.stop()


@pytest.mark.parametrize("text,message", [
    ("principal a\n  token sha256:1234\n", "{path}:2: token: expected sha256: and 64 hex digits"),
    ("# ok\nprincipal a b\n", "{path}:2: principal: expected one name"),
    ("principal x\n cert subject CN=x\n rate fast\n", "{path}:3: rate: expected events a period"),
    ("principal x\n cert subject CN=x\nprincipal x\n cert subject CN=y\n", "{path}:3: principal 'x' is defined twice"),
])
def test_bad_auth_file_exits_2_with_one_line(tmp_path, text, message):
    f = tmp_path / "auth.conf"
    f.write_text(text)
    r = run_gateway(f"--auth-file={f}")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(path=f) in lines[0], r.stderr


def test_auth_file_and_token_together_exit_2(tmp_path):
    f = tmp_path / "auth.conf"
    f.write_text("principal anonymous\n")
    r = run_gateway(f"--auth-file={f}", "--auth-token=x")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--auth-file and --auth-token" in r.stderr
    r = run_gateway(f"--auth-file={tmp_path}/missing.conf")
    assert r.returncode == 2 and "missing.conf: No such file or directory" in r.stderr, r.stderr
