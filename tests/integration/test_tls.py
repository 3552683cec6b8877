"""TLS on the HTTP and gRPC ports (issue 15): real clients (curl, requests, openssl s_client, Python's
ssl, grpcio, grpcurl) against private gateways started with --tls-cert and its companions.

The certificates are made with the openssl CLI once per session: a root CA and an intermediate that
signs the server's certificate (so --tls-cert holds a chain: leaf, then intermediate), a client
certificate from the root, one from another CA, and one of the root's that expired in 2020.
"""

import json
import os
import re
import shlex
import ssl
import subprocess
import time
import uuid

import grpc
import pytest
import requests

from conftest import GATEWAY_BIN, REPO_ROOT, free_port
from hostile_http import closed_by_peer, connect, read_response
from pki import make_pki
from test_grpc import grpcurl_bin, health_pb2  # noqa: F401 (health_pb2 is a fixture)

EVENT_CT = {"Content-Type": "application/cloudevents+json"}
FAILURES = "ingest_tls_handshake_failures_total"


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_flags(pki, *more):
    return (f"--tls-cert={pki.chain_pem}", f"--tls-key={pki.server_key}", *more)


def https(gw, host="127.0.0.1"):
    return "https://" + gw.http_addr.replace("127.0.0.1", host)


def event(source="/it/tls"):
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": source, "type": "com.example.tls"}


def client_context(pki, cert=None, alpn=None):
    ctx = ssl.create_default_context(cafile=pki.ca_pem)
    if cert:
        ctx.load_cert_chain(getattr(pki, f"{cert}_pem"), getattr(pki, f"{cert}_key"))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def client_hello(pki):
    """The bytes of a real TLS ClientHello, as Python's ssl sends it first."""
    ctx = client_context(pki)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16 and len(hello) > 100, hello[:8]
    return hello


def failures(gw):
    return gw.metric(FAILURES, protocol="http")


def wait_metric(gw, want, timeout=5):
    deadline = time.monotonic() + timeout
    while failures(gw) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    return failures(gw)


@pytest.fixture(scope="module")
def tls_gw(start_gateway, make_topic, pki):
    return start_gateway(f"--kafka-topic={make_topic('tls')}", *tls_flags(pki))


def test_curl_and_requests_post_over_tls(tls_gw, pki, topic_reader):
    topic = next(f.split("=", 1)[1] for f in tls_gw.args if f.startswith("--kafka-topic="))
    reader = topic_reader(topic)
    mark = reader.mark()
    ids = []
    for host in ("127.0.0.1", "localhost"):  # the certificate names both
        ev = event("/it/tls/curl")
        ids.append(ev["id"])
        r = subprocess.run(["curl", "-sS", "--cacert", pki.ca_pem, "-H", "Content-Type: application/cloudevents+json",
                            "--data-binary", json.dumps(ev), "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                            https(tls_gw, host) + "/v1/events?ack=accepted"],
                           capture_output=True, text=True, timeout=20)
        assert r.stdout == "202 1.1", (r.stdout, r.stderr)
    with requests.Session() as s:  # one keep-alive TLS connection, several requests
        for _ in range(3):
            ev = event("/it/tls/requests")
            ids.append(ev["id"])
            r = s.post(https(tls_gw) + "/v1/events", data=json.dumps(ev), headers=EVENT_CT, verify=pki.ca_pem,
                       timeout=20)
            assert r.status_code == 200, r.text  # ack=committed: in Kafka already
            assert r.json()["ids"] == [ev["id"]]
    found = reader.find_since(mark, ids)
    assert sorted(found) == sorted(ids)
    # A client that does not trust the CA refuses the gateway (the gateway counts the failed handshake).
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(https(tls_gw) + "/v1/events", data=json.dumps(event()), headers=EVENT_CT, timeout=10)


def test_large_bodies_and_pipelining_over_tls(tls_gw, pki):
    # Bodies many records long, and pipelined requests past the 16 KiB read-ahead: what arrives inside
    # OpenSSL must not wait there (the read-ahead watermark, http_server.c).
    batch = [event("/it/tls/big") | {"data": "x" * 1000} for _ in range(300)]
    with requests.Session() as s:
        for _ in range(2):
            r = s.post(https(tls_gw) + "/v1/events?ack=accepted", data=json.dumps(batch),
                       headers={"Content-Type": "application/cloudevents-batch+json"}, verify=pki.ca_pem, timeout=20)
            assert r.status_code == 202, r.text
            assert r.json()["accepted"] == 300
    one = json.dumps([event("/it/tls/pipe") | {"data": "y" * 6000}]).encode()
    req = (b"POST /v1/events?ack=accepted HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents-batch+json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(one)) + one
    with client_context(pki).wrap_socket(connect(tls_gw.http_addr), server_hostname="localhost") as s:
        s.sendall(req * 8)
        for i in range(8):
            status, _, body = read_response(s, timeout=10)
            assert status == 202, (i, status, body)


def test_versions(tls_gw, pki):
    before = failures(tls_gw)
    for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        r = subprocess.run(["openssl", "s_client", "-connect", tls_gw.http_addr, flag, "-CAfile", pki.ca_pem,
                            "-servername", "localhost"], input="", capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        assert f"New, {version}," in r.stdout, r.stdout
        assert "Verify return code: 0 (ok)" in r.stdout
    for flag in ("-tls1_1", "-tls1"):
        # Debian's OpenSSL will not even offer TLS 1.0/1.1 at its default security level: SECLEVEL=0 makes
        # the client offer them, so the refusal seen is the gateway's (its protocol_version alert).
        r = subprocess.run(["openssl", "s_client", "-connect", tls_gw.http_addr, flag, "-cipher",
                            "DEFAULT:@SECLEVEL=0", "-CAfile", pki.ca_pem], input="", capture_output=True, text=True,
                           timeout=20)
        assert r.returncode != 0, r.stdout
        assert "alert protocol version" in r.stderr, r.stderr
    assert wait_metric(tls_gw, before + 2) == before + 2


def test_alpn(tls_gw, pki):
    for offer in (["http/1.1"], ["h2", "http/1.1"], None):
        with client_context(pki, alpn=offer).wrap_socket(connect(tls_gw.http_addr), server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == ("http/1.1" if offer else None)
            s.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[0] == 404
    # h2 only (an HTTP/2 or gRPC client on the wrong port): the fatal no_application_protocol alert.
    before = failures(tls_gw)
    with pytest.raises(ssl.SSLError, match="no application protocol"):
        client_context(pki, alpn=["h2"]).wrap_socket(connect(tls_gw.http_addr), server_hostname="localhost")
    assert wait_metric(tls_gw, before + 1) == before + 1


def test_plaintext_http_on_the_tls_port_fails_at_once(tls_gw):
    before = failures(tls_gw)
    t0 = time.monotonic()
    with connect(tls_gw.http_addr) as s:
        s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert closed_by_peer(s, timeout=2)
    assert time.monotonic() - t0 < 2
    assert wait_metric(tls_gw, before + 1) == before + 1
    # A TCP connection closed without a byte (a health check, the fixture's own readiness probe) is no failure.
    connect(tls_gw.http_addr).close()
    time.sleep(0.3)
    assert failures(tls_gw) == before + 1


def test_tls_on_the_plaintext_port_fails_at_once(start_gateway, make_topic, pki):
    gw = start_gateway(f"--kafka-topic={make_topic('tls')}")
    t0 = time.monotonic()
    with connect(gw.http_addr) as s:
        s.sendall(client_hello(pki))
        status, _, body = read_response(s, timeout=2)
    assert status == 400 and b"TLS handshake on a plaintext" in body, (status, body)
    assert time.monotonic() - t0 < 2
    t0 = time.monotonic()
    with pytest.raises(ssl.SSLError):
        client_context(pki).wrap_socket(connect(gw.http_addr, timeout=2), server_hostname="localhost")
    assert time.monotonic() - t0 < 2
    assert failures(gw) == 0  # no TLS here: nothing of TLS counted


@pytest.mark.parametrize("mode", ["require", "optional"])
def test_client_certificates(start_gateway, make_topic, pki, mode):
    gw = start_gateway(f"--kafka-topic={make_topic('tls')}",
                       *tls_flags(pki, f"--tls-client-ca={pki.ca_pem}", f"--tls-client-auth={mode}"))

    def post(cert):
        return requests.post(https(gw) + "/v1/events?ack=accepted", data=json.dumps(event()), headers=EVENT_CT,
                             verify=pki.ca_pem, cert=cert and (getattr(pki, f"{cert}_pem"), getattr(pki, f"{cert}_key")),
                             timeout=10)

    assert post("client").status_code == 202
    before = failures(gw)
    refused = ["stranger", "expired"] + (["none"] if mode == "require" else [])
    for cert in refused:
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            post(None if cert == "none" else cert)
    if mode == "optional":
        assert post(None).status_code == 202
    assert wait_metric(gw, before + len(refused)) == before + len(refused)
    assert post("client").status_code == 202


def test_handshake_stopped_half_way_is_closed_at_the_header_timeout(start_gateway, make_topic, pki):
    # The idle timeout restarts on every byte; the header timeout, counted from the accept, does not.
    gw = start_gateway(f"--kafka-topic={make_topic('tls')}", *tls_flags(pki), "--http-header-timeout=1s",
                       "--http-idle-timeout=30s")
    hello = client_hello(pki)
    before = failures(gw)
    t0 = time.monotonic()
    with connect(gw.http_addr) as half, connect(gw.http_addr) as silent, connect(gw.http_addr) as trickle:
        half.sendall(hello[: len(hello) // 2])
        # A byte every 0.2 s: never idle, never done. Sending fails once the gateway closed.
        try:
            for b in hello:
                trickle.sendall(bytes([b]))
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        for s in (half, silent, trickle):
            assert closed_by_peer(s, timeout=3)
            assert time.monotonic() - t0 < 3
    assert time.monotonic() - t0 > 0.9
    assert wait_metric(gw, before + 3) == before + 3


def test_limits_hold_over_tls(start_gateway, make_topic, pki):
    gw = start_gateway(f"--kafka-topic={make_topic('tls')}", *tls_flags(pki), "--max-request-bytes=1KiB",
                       "--max-event-bytes=1KiB", "--http-header-timeout=1s")
    big = json.dumps(event() | {"data": "z" * 4000})
    r = requests.post(https(gw) + "/v1/events", data=big, headers=EVENT_CT, verify=pki.ca_pem, timeout=10)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "too_large"
    # After a finished handshake, the request's head has its own header deadline: 408 over TLS.
    with client_context(pki).wrap_socket(connect(gw.http_addr), server_hostname="localhost") as s:
        time.sleep(0.6)  # the handshake's deadline is over; the request's starts at its first byte
        s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        status, _, body = read_response(s, timeout=5)
        assert status == 408, body
        assert 0.8 < time.monotonic() - t0 < 3
    # Strict parsing: a bare LF is refused over TLS as in plaintext.
    with client_context(pki).wrap_socket(connect(gw.http_addr), server_hostname="localhost") as s:
        s.sendall(b"GET /healthz HTTP/1.1\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 400


def run_gateway(*flags):
    listen = [f"--{n}-addr=127.0.0.1:{free_port()}" for n in ("http", "udp", "grpc", "admin")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    return subprocess.run([str(GATEWAY_BIN), *listen, "--kafka-bootstrap=127.0.0.1:1", *flags], env=env,
                          capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("flags,message", [
    (lambda p: (f"--tls-cert={p.chain_pem}", f"--tls-key={p.client_key}"),
     lambda p: f"--tls-key {p.client_key} does not match the certificate of --tls-cert {p.chain_pem}"),
    (lambda p: (f"--tls-cert={p.dir}/missing.pem", f"--tls-key={p.server_key}"),
     lambda p: f"--tls-cert {p.dir}/missing.pem: No such file or directory"),
    (lambda p: (f"--tls-cert={p.garbage_pem}", f"--tls-key={p.server_key}"),
     lambda p: f"--tls-cert {p.garbage_pem}: not a PEM certificate"),
    (lambda p: (f"--tls-cert={p.chain_pem}", f"--tls-key={p.ca_pem}"),
     lambda p: f"--tls-key {p.ca_pem}: not a PEM private key"),
    (lambda p: tls_flags(p, "--tls-client-auth=require"),
     lambda p: "--tls-client-auth=require needs --tls-client-ca"),
    (lambda p: tls_flags(p, "--tls-client-auth=optional"),
     lambda p: "--tls-client-auth=optional needs --tls-client-ca"),
    (lambda p: tls_flags(p, "--tls-client-auth=maybe"),
     lambda p: "--tls-client-auth: 'maybe' is not one of: none optional require"),
    (lambda p: tls_flags(p, f"--tls-client-ca={p.dir}/nope.pem", "--tls-client-auth=require"),
     lambda p: f"--tls-client-ca {p.dir}/nope.pem: No such file or directory"),
    (lambda p: (f"--tls-key={p.server_key}",), lambda p: "--tls-key needs --tls-cert"),
    (lambda p: tls_flags(p, "--tls-ciphers=NOTHING-KNOWN"), lambda p: "--tls-ciphers NOTHING-KNOWN"),
])
def test_bad_tls_settings_exit_2_with_one_line(pki, flags, message):
    r = run_gateway(*flags(pki))
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message(pki) in lines[0], r.stderr



# ---- gRPC over TLS -----------------------------------------------------------------------------------

def grpc_target(gw, host="127.0.0.1"):
    return gw.addrs["--grpc-addr"].replace("127.0.0.1", host)


def grpc_creds(pki, cert=None):
    """grpcio's TLS credentials: trust the root CA; with cert, show that client certificate."""
    read = lambda name: open(getattr(pki, name), "rb").read()  # noqa: E731
    if cert is None:
        return grpc.ssl_channel_credentials(root_certificates=read("ca_pem"))
    return grpc.ssl_channel_credentials(root_certificates=read("ca_pem"), private_key=read(f"{cert}_key"),
                                        certificate_chain=read(f"{cert}_pem"))


def health(target, creds, health_pb2, timeout=5):
    """Health/Check over TLS (creds) or plaintext (None): the status, or the grpc.RpcError raised."""
    # A connection of its own each time: grpcio would otherwise share one between channels to a target.
    opts = [("grpc.use_local_subchannel_pool", 1)]
    ch = grpc.secure_channel(target, creds, options=opts) if creds else grpc.insecure_channel(target, options=opts)
    with ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                               response_deserializer=health_pb2.HealthCheckResponse.FromString)
        try:
            return check(health_pb2.HealthCheckRequest(), timeout=timeout).status
        except grpc.RpcError as e:
            return e


def wait_ready(gw, timeout=30):
    """/readyz until 200 (Kafka may be a moment away); the last answer."""
    deadline = time.monotonic() + timeout
    while (r := requests.get(gw.admin_url + "/readyz", timeout=5)).status_code != 200:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return r


@pytest.fixture(scope="module")
def tls_ggw(start_gateway, make_topic, pki):
    topic = make_topic("tls-grpc")
    gw = start_gateway(f"--kafka-topic={topic}", *tls_flags(pki))
    gw.topic = topic
    return gw


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plaintext"])
def test_grpc_handshake_stopped_half_way_is_closed_at_the_handshake_timeout(start_gateway, make_topic, pki, tls):
    # The core's own default is 120 s (60 s measured for a silent plaintext connection).
    flags = tls_flags(pki) if tls else []
    gw = start_gateway(f"--kafka-topic={make_topic('tls-grpc')}", *flags, "--grpc-handshake-timeout=1s")
    addr = gw.addrs["--grpc-addr"]
    start = client_hello(pki) if tls else b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    t0 = time.monotonic()
    with connect(addr) as half, connect(addr) as silent:
        half.sendall(start[: len(start) // 2])
        for s in (half, silent):
            assert closed_by_peer(s, timeout=5)
    took = time.monotonic() - t0
    assert 0.9 < took < 5, took
    assert gw.proc.poll() is None, gw.log_tail()


def test_grpc_publish_and_stream_over_tls(tls_ggw, pki, pb, topic_reader):
    reader = topic_reader(tls_ggw.topic)
    mark = reader.mark()
    ids = []
    committed = pb.ingest_pb2.ACK_LEVEL_COMMITTED

    def ce(tag):
        ids.append(f"tls-grpc-{tag}-{uuid.uuid4().hex[:8]}")
        return pb.cloudevent_pb2.CloudEvent(id=ids[-1], source="/it/tls/grpc", type="com.example.tls")

    for host in ("127.0.0.1", "localhost"):  # the certificate names both
        with grpc.secure_channel(grpc_target(tls_ggw, host), grpc_creds(pki)) as ch:
            stub = pb.ingest_pb2_grpc.IngestStub(ch)
            resp = stub.Publish(pb.ingest_pb2.PublishRequest(seq=1, events=[ce(host)], ack=committed), timeout=20)
            assert resp.accepted == 1 and list(resp.ids) == ids[-1:]
    with grpc.secure_channel(grpc_target(tls_ggw), grpc_creds(pki)) as ch:
        stub = pb.ingest_pb2_grpc.IngestStub(ch)
        reqs = [pb.ingest_pb2.PublishRequest(seq=s, events=[ce(f"s{s}"), ce(f"s{s}b")], ack=committed)
                for s in (1, 2, 3)]
        acks = list(stub.PublishStream(iter(reqs), timeout=30))
        assert [a.seq for a in acks] == [1, 2, 3]
        assert [i for a in acks for i in a.ids] == ids[2:]
    assert sorted(reader.find_since(mark, ids)) == sorted(ids)
    # The Envelope says gRPC: TLS changes the transport, not what the sink sees.
    assert all(r.envelope.protocol == pb.envelope_pb2.PROTOCOL_GRPC for r in reader.read_since(mark, len(ids)))


def test_grpc_versions_alpn_and_ciphers(tls_ggw, pki):
    target = tls_ggw.addrs["--grpc-addr"]

    def s_client(*flags):
        return subprocess.run(["openssl", "s_client", "-connect", target, "-alpn", "h2", "-CAfile", pki.ca_pem,
                               "-servername", "localhost", *flags], input="", capture_output=True, text=True,
                              errors="replace", timeout=20)  # the core's SETTINGS frame is printed too

    for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        r = s_client(flag)
        assert r.returncode == 0, r.stderr
        assert f"New, {version}," in r.stdout and "ALPN protocol: h2" in r.stdout, r.stdout
        assert "Verify return code: 0 (ok)" in r.stdout
    for flag in ("-tls1_1", "-tls1"):
        r = s_client(flag, "-cipher", "DEFAULT:@SECLEVEL=0")
        assert "New, (NONE), Cipher is (NONE)" in r.stdout, r.stdout
    # --tls-ciphers reaches the core (as GRPC_SSL_CIPHER_SUITES): ChaCha20 is in the gateway's default list
    # and not in the core's own; a CBC suite is in neither.
    r = s_client("-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305")
    assert "Cipher is ECDHE-ECDSA-CHACHA20-POLY1305" in r.stdout, r.stdout + r.stderr
    r = s_client("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256")
    assert "New, (NONE), Cipher is (NONE)" in r.stdout, r.stdout


def test_plaintext_grpc_on_the_tls_port_fails_at_once(tls_ggw, pki, health_pb2):
    SERVING = health_pb2.HealthCheckResponse.SERVING
    http_failures = failures(tls_ggw)
    for _ in range(3):
        t0 = time.monotonic()
        e = health(grpc_target(tls_ggw), None, health_pb2, timeout=5)
        assert isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.UNAVAILABLE, e
        assert time.monotonic() - t0 < 4
    # The gateway serves on.
    assert health(grpc_target(tls_ggw), grpc_creds(pki), health_pb2) == SERVING
    # The core tells the gateway nothing of failed handshakes: the counter is the HTTP port's alone.
    assert failures(tls_ggw) == http_failures
    assert FAILURES + '{protocol="grpc"}' not in requests.get(tls_ggw.admin_url + "/metrics", timeout=5).text


def test_tls_grpc_client_on_a_plaintext_port_fails_at_once(start_gateway, make_topic, pki, health_pb2):
    gw = start_gateway(f"--kafka-topic={make_topic('tls')}")
    t0 = time.monotonic()
    e = health(grpc_target(gw), grpc_creds(pki), health_pb2, timeout=5)
    assert isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.UNAVAILABLE, e
    assert time.monotonic() - t0 < 4
    assert health(grpc_target(gw), None, health_pb2) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("mode", ["none", "optional", "require"])
def test_grpc_client_certificates_and_readiness(start_gateway, make_topic, pki, pb, health_pb2, mode):
    SERVING = health_pb2.HealthCheckResponse.SERVING
    gw = start_gateway(f"--kafka-topic={make_topic('tls')}",
                       *tls_flags(pki, f"--tls-client-ca={pki.ca_pem}", f"--tls-client-auth={mode}"))
    target = grpc_target(gw)
    # The listener's self-check copes with TLS in every mode, without a certificate of its own.
    r = wait_ready(gw)
    assert r.status_code == 200, r.text
    time.sleep(2.5)  # two of the check's rounds: a check that failed would have made the gateway not ready
    r = requests.get(gw.admin_url + "/readyz", timeout=5)
    assert r.status_code == 200, r.text
    assert "gRPC listener" not in gw.log()

    accepted = {"none": [None, "client", "stranger", "expired"], "optional": [None, "client"],
                "require": ["client"]}[mode]
    refused = {"none": [], "optional": ["stranger", "expired"], "require": [None, "stranger", "expired"]}[mode]
    for cert in accepted:
        assert health(target, grpc_creds(pki, cert), health_pb2) == SERVING, cert
    for cert in refused:
        t0 = time.monotonic()
        e = health(target, grpc_creds(pki, cert), health_pb2)
        assert isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.UNAVAILABLE, (cert, e)
        assert time.monotonic() - t0 < 4
    # Publishing with an accepted certificate, after the refusals: the listener serves on.
    with grpc.secure_channel(target, grpc_creds(pki, "client")) as ch:
        ev = pb.cloudevent_pb2.CloudEvent(id=str(uuid.uuid4()), source="/it/tls/grpc", type="com.example.tls")
        resp = pb.ingest_pb2_grpc.IngestStub(ch).Publish(pb.ingest_pb2.PublishRequest(events=[ev]), timeout=20)
        assert list(resp.ids) == [ev.id]
    assert requests.get(gw.admin_url + "/readyz", timeout=5).status_code == 200


def test_grpcurl_readme_example_over_tls(tls_ggw, pki, topic_reader):
    """The README's grpcurl example with TLS, run as written but for the CA's path and the port."""
    readme = (REPO_ROOT / "README.md").read_text()
    m = re.search(r"^(grpcurl -cacert ca\.pem -import-path proto -proto ingest/v1/ingest\.proto \\\n.*?"
                  r"ingest\.v1\.Ingest/Publish)\n", readme, re.M | re.S)
    assert m, "the README's grpcurl example with TLS"
    argv = shlex.split(m.group(1).replace("\\\n", " ").replace("127.0.0.1:50051", grpc_target(tls_ggw)))
    argv[argv.index("ca.pem")] = pki.ca_pem
    reader = topic_reader(tls_ggw.topic)
    mark = reader.mark()
    r = subprocess.run([grpcurl_bin(), *argv[1:]], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["accepted"] == 1 and len(out["ids"]) == 1
    assert sorted(reader.find_since(mark, out["ids"])) == out["ids"]
    # Without the CA grpcurl refuses the gateway's certificate; with -plaintext the gateway refuses grpcurl.
    for flags in ([], ["-plaintext"]):
        r = subprocess.run([grpcurl_bin(), "-max-time", "5", *flags, "-import-path", "proto", "-proto",
                            "grpc/health/v1/health.proto", grpc_target(tls_ggw), "grpc.health.v1.Health/Check"],
                           capture_output=True, text=True, timeout=30, cwd=REPO_ROOT)
        assert r.returncode != 0, (flags, r.stdout)
