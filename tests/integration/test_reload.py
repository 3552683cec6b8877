"""Reload without restart (issue 15): the TLS certificates and the --auth-file read again on SIGHUP and,
with --reload-interval, when their files change; real clients (Python's ssl, requests, grpcio, UDP
sockets) see the certificate each port serves and the principals in force.

The PKI is test_tls.py's (its session fixture, imported, not moved): every certificate made here is a
new leaf from its intermediate, so a client trusting the root trusts all of them, and tells them apart by
the subject's CN.
"""

import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import threading
import time
import uuid

import grpc
import pytest
import requests

from test_grpc import health_pb2  # noqa: F401 (a fixture)
from pki import openssl
from test_tls import EVENT_CT, event, grpc_creds, health, pki, wait_ready  # noqa: F401 (pki: a fixture)

RELOADS = "ingest_config_reloads_total"


class Certs:
    """Leaf certificates for 127.0.0.1/localhost, each with its own key and CN, made on demand."""

    def __init__(self, pki, d):
        self.pki, self.dir, self.n = pki, d, 0

    def new(self):
        self.n += 1
        name = f"gen{self.n}-{uuid.uuid4().hex[:6]}"
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=self.dir)
        (self.dir / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                              "extendedKeyUsage=serverAuth\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", self.pki.inter_pem, "-CAkey", self.pki.inter_key,
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=self.dir)
        chain = (self.dir / f"{name}.pem").read_text() + open(self.pki.inter_pem).read()
        return name, chain, (self.dir / f"{name}.key").read_text()


def replace(path, text):
    """Write a new file beside path and rename it over: a new inode, never a half-written file."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.rename(tmp, path)


class Live:
    """--tls-cert/--tls-key files rotated by renaming new files over them."""

    def __init__(self, d):
        self.cert, self.key = d / "tls.crt", d / "tls.key"

    def install(self, leaf):
        _, chain, key = leaf
        replace(self.key, key)
        replace(self.cert, chain)


class KubeSecret:
    """A Kubernetes Secret volume: tls.crt -> ..data/tls.crt, and ..data a symlink swapped whole."""

    def __init__(self, d):
        self.dir, self.n = d, 0
        self.cert, self.key = d / "tls.crt", d / "tls.key"

    def install(self, leaf):
        _, chain, key = leaf
        self.n += 1
        ts = self.dir / f"..2026_12_07_{self.n}"
        ts.mkdir()
        (ts / "tls.crt").write_text(chain)
        (ts / "tls.key").write_text(key)
        tmp = self.dir / "..data_tmp"
        os.symlink(ts.name, tmp)
        os.rename(tmp, self.dir / "..data")
        for f in ("tls.crt", "tls.key"):
            if not (self.dir / f).is_symlink():
                os.symlink(f"..data/{f}", self.dir / f)


def served_cn(pki, addr, alpn, cert=None):
    """The CN of the certificate a new TLS connection to addr is served (verified against the root)."""
    ctx = ssl.create_default_context(cafile=pki.ca_pem)
    ctx.set_alpn_protocols([alpn])
    if cert:
        ctx.load_cert_chain(getattr(pki, f"{cert}_pem"), getattr(pki, f"{cert}_key"))
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return dict(x[0] for x in t.getpeercert()["subject"])["commonName"]


def http_cn(gw, pki):
    return served_cn(pki, gw.http_addr, "http/1.1")


def grpc_cn(gw, pki):
    return served_cn(pki, gw.addrs["--grpc-addr"], "h2")


def reloads(gw, result):
    return gw.metric(RELOADS, result=result)


def wait_for(what, timeout=10):
    deadline = time.monotonic() + timeout
    while not (v := what()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return v


def hup(gw, result="ok"):
    """SIGHUP, and wait for the reload it makes to be counted."""
    before = reloads(gw, result)
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: reloads(gw, result) > before), gw.log_tail()


def post(url, pki, session=requests, cert=None):
    return session.post(url + "/v1/events?ack=accepted", data=json.dumps(event("/it/reload")), headers=EVENT_CT,
                        verify=pki.ca_pem, timeout=10,
                        cert=cert and (getattr(pki, f"{cert}_pem"), getattr(pki, f"{cert}_key")))


def https(gw):
    return "https://" + gw.http_addr


@pytest.fixture
def certs(pki, tmp_path):
    d = tmp_path / "made"
    d.mkdir()
    return Certs(pki, d)


def start(start_gateway, make_topic, files, *flags):
    return start_gateway(f"--kafka-topic={make_topic('reload')}", f"--tls-cert={files.cert}",
                         f"--tls-key={files.key}", *flags)


def test_sighup_new_connections_get_the_new_certificate(start_gateway, make_topic, pki, certs, tmp_path, pb):
    files = Live(tmp_path)
    a, b = certs.new(), certs.new()
    files.install(a)
    gw = start(start_gateway, make_topic, files)
    assert http_cn(gw, pki) == a[0] and grpc_cn(gw, pki) == a[0]
    assert reloads(gw, "ok") == 0 and reloads(gw, "failed") == 0

    # Connections opened before the rotation: one keep-alive HTTP connection, one gRPC channel.
    host, port = gw.http_addr.rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), timeout=10,
                                       context=ssl.create_default_context(cafile=pki.ca_pem))
    with grpc.secure_channel(gw.addrs["--grpc-addr"], grpc_creds(pki),
                             options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = pb.ingest_pb2_grpc.IngestStub(ch)

        def publish():
            ev = pb.cloudevent_pb2.CloudEvent(id=str(uuid.uuid4()), source="/it/reload", type="com.example.reload")
            return stub.Publish(pb.ingest_pb2.PublishRequest(events=[ev], ack=pb.ingest_pb2.ACK_LEVEL_ACCEPTED),
                                timeout=10).accepted

        def keepalive_post():
            conn.request("POST", "/v1/events?ack=accepted", body=json.dumps(event("/it/reload")), headers=EVENT_CT)
            r = conn.getresponse()
            r.read()
            return r.status

        assert keepalive_post() == 202
        assert publish() == 1
        sock = conn.sock
        assert dict(x[0] for x in sock.getpeercert()["subject"])["commonName"] == a[0]

        files.install(b)
        time.sleep(0.3)
        assert http_cn(gw, pki) == a[0], "no reload without a signal or --reload-interval"
        hup(gw)
        assert http_cn(gw, pki) == b[0] and grpc_cn(gw, pki) == b[0]
        assert "reloaded the TLS certificates from" in gw.log()

        # The connections opened before serve on, with the certificate they were opened with.
        for _ in range(3):
            assert keepalive_post() == 202
            assert conn.sock is sock, "the keep-alive connection was reused, not replaced"
            assert publish() == 1
        conn.close()
    assert reloads(gw, "ok") == 1 and reloads(gw, "failed") == 0
    # The gRPC listener's TLS self-check keeps the gateway ready across the rotation.
    time.sleep(2.5)
    assert wait_ready(gw).status_code == 200
    assert "gRPC listener" not in gw.log()


@pytest.mark.parametrize("layout", [Live, KubeSecret], ids=["rename", "kubernetes-symlink"])
def test_reload_interval_picks_a_change_up_without_a_signal(start_gateway, make_topic, pki, certs, tmp_path, layout):
    files = layout(tmp_path)
    a, b, c = certs.new(), certs.new(), certs.new()
    files.install(a)
    gw = start(start_gateway, make_topic, files, "--reload-interval=200ms")
    assert http_cn(gw, pki) == a[0]
    time.sleep(0.6)
    assert reloads(gw, "ok") == 0, "unchanged files are not reloaded"
    for leaf in (b, c):
        files.install(leaf)
        assert wait_for(lambda: http_cn(gw, pki) == leaf[0]), gw.log_tail()
        assert wait_for(lambda: grpc_cn(gw, pki) == leaf[0])
    time.sleep(0.6)
    # Rename: the key and then the certificate, which a check may see half done (a failed reload, nothing
    # changed, the next check loads the pair). Symlink swap: both at once.
    ok, failed = reloads(gw, "ok"), reloads(gw, "failed")
    assert ok == 2 and (failed == 0 or layout is Live), (ok, failed)


BROKEN = ["key-of-another-cert", "garbage-pem", "missing-cert", "missing-key"]


@pytest.mark.parametrize("broken", BROKEN)
@pytest.mark.parametrize("trigger", ["sighup", "interval"])
def test_a_failed_reload_keeps_the_old_certificate(start_gateway, make_topic, pki, certs, tmp_path, broken, trigger,
                                                   health_pb2):
    files = Live(tmp_path)
    a, b, c = certs.new(), certs.new(), certs.new()
    files.install(a)
    gw = start(start_gateway, make_topic, files, *(["--reload-interval=200ms"] if trigger == "interval" else []))
    if broken == "key-of-another-cert":
        replace(files.cert, b[1])  # b's certificate, a's key
    elif broken == "garbage-pem":
        replace(files.cert, open(pki.garbage_pem).read())
    elif broken == "missing-cert":
        files.cert.unlink()
    else:
        files.key.unlink()
    if trigger == "sighup":
        hup(gw, "failed")
    else:
        assert wait_for(lambda: reloads(gw, "failed") >= 1), gw.log_tail()
        time.sleep(0.6)
        assert reloads(gw, "failed") == 1, "a broken file is reported once, not at every check"
    assert reloads(gw, "ok") == 0
    assert gw.proc.poll() is None
    # The old certificate on both ports, and both serve.
    assert http_cn(gw, pki) == a[0] and grpc_cn(gw, pki) == a[0]
    assert post(https(gw), pki).status_code == 202
    assert health(gw.addrs["--grpc-addr"], grpc_creds(pki), health_pb2) == health_pb2.HealthCheckResponse.SERVING
    line = next(ln for ln in gw.log().splitlines() if "reload of the TLS certificates failed" in ln)
    assert "level=warn" in line and ("tls.crt" in line or "tls.key" in line), line
    # A good pair later loads.
    files.install(c)
    if trigger == "sighup":
        hup(gw)
    assert wait_for(lambda: http_cn(gw, pki) == c[0]) and wait_for(lambda: grpc_cn(gw, pki) == c[0])
    assert reloads(gw, "ok") >= 1


def test_rotating_the_client_ca_changes_which_client_certificates_are_accepted(start_gateway, make_topic, pki, certs,
                                                                             tmp_path, health_pb2):
    files = Live(tmp_path)
    files.install(certs.new())
    ca = tmp_path / "client-ca.pem"
    replace(ca, open(pki.ca_pem).read())
    gw = start(start_gateway, make_topic, files, f"--tls-client-ca={ca}", "--tls-client-auth=require")
    SERVING = health_pb2.HealthCheckResponse.SERVING
    target = gw.addrs["--grpc-addr"]

    def accepted(cert):
        try:
            http = post(https(gw), pki, cert=cert).status_code == 202
        except (requests.exceptions.SSLError, requests.exceptions.ConnectionError):
            http = False
        return http, health(target, grpc_creds(pki, cert), health_pb2) == SERVING

    assert accepted("client") == (True, True)
    assert accepted("stranger") == (False, False)
    replace(ca, open(pki.other_pem).read())  # the CA that signed "stranger"
    hup(gw)
    assert accepted("stranger") == (True, True)
    assert accepted("client") == (False, False)
    # Both CAs.
    replace(ca, open(pki.ca_pem).read() + open(pki.other_pem).read())
    hup(gw)
    assert accepted("client") == (True, True) and accepted("stranger") == (True, True)
    # A client CA file with no certificate in it fails the reload and keeps both.
    replace(ca, "not a certificate\n")
    hup(gw, "failed")
    assert accepted("client") == (True, True) and accepted("stranger") == (True, True)


def test_reload_under_load(start_gateway, make_topic, pki, certs, tmp_path, pb, health_pb2):
    """20 s of HTTP (new connections and keep-alive) and gRPC (new channels and one kept) while the certificate
    is rotated every second: no request fails (every certificate chains to the root the clients trust)."""
    files = Live(tmp_path)
    leaves = [certs.new() for _ in range(4)]
    files.install(leaves[0])
    gw = start(start_gateway, make_topic, files)
    stop = threading.Event()
    errors, done, seen = [], {"http-new": 0, "http-keepalive": 0, "grpc-new": 0, "grpc-kept": 0}, set()

    def run(kind, once):
        while not stop.is_set():
            try:
                once()
                done[kind] += 1
            except Exception as e:  # noqa: BLE001 (any failure is the test's finding)
                errors.append((kind, repr(e)))

    def http_new():
        with requests.Session() as s:
            assert post(https(gw), pki, s).status_code == 202
        seen.add(http_cn(gw, pki))

    keep = requests.Session()

    def http_keepalive():
        assert post(https(gw), pki, keep).status_code == 202

    def publish(ch):
        ev = pb.cloudevent_pb2.CloudEvent(id=str(uuid.uuid4()), source="/it/reload", type="com.example.reload")
        resp = pb.ingest_pb2_grpc.IngestStub(ch).Publish(
            pb.ingest_pb2.PublishRequest(events=[ev], ack=pb.ingest_pb2.ACK_LEVEL_ACCEPTED), timeout=10)
        assert resp.accepted == 1

    def grpc_new():
        with grpc.secure_channel(gw.addrs["--grpc-addr"], grpc_creds(pki),
                                 options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            publish(ch)

    kept = grpc.secure_channel(gw.addrs["--grpc-addr"], grpc_creds(pki), options=[("grpc.use_local_subchannel_pool", 1)])
    threads = [threading.Thread(target=run, args=(k, f)) for k, f in
               (("http-new", http_new), ("http-keepalive", http_keepalive), ("grpc-new", grpc_new),
                ("grpc-kept", lambda: publish(kept)))]
    for t in threads:
        t.start()
    try:
        end = time.monotonic() + 20
        i = 0
        while time.monotonic() < end:
            time.sleep(1)
            i += 1
            files.install(leaves[i % len(leaves)])
            gw.proc.send_signal(signal.SIGHUP)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        keep.close()
        kept.close()
    assert errors == [], errors[:5]
    assert all(n > 0 for n in done.values()), done
    # A SIGHUP that comes while another is pending merges with it (signals are not queued), so a loaded
    # machine may reload fewer times than it was signalled; each reload reads the files as they are then.
    assert wait_for(lambda: reloads(gw, "ok") >= 1), reloads(gw, "ok")
    assert reloads(gw, "ok") <= i
    assert reloads(gw, "failed") == 0
    assert len(seen) >= 2, seen
    assert gw.proc.poll() is None


def settled(gw, quiet=1.0):
    """The reload count unchanged over `quiet` seconds: no reload pending or running."""
    before = reloads(gw, "ok") + reloads(gw, "failed")
    time.sleep(quiet)
    return reloads(gw, "ok") + reloads(gw, "failed") == before


# ---- The auth file (--auth-file) as a reload item -----------------------------------------------------

TOKENS = {name: f"tok-{name}-{uuid.uuid4().hex}" for name in ("a", "b", "c", "d", "q")}


def sha(token):
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def principal(name, *lines):
    return f"principal {name}\n" + "".join(f"  {ln}\n" for ln in lines)


class LiveFile:
    """One file rotated by renaming a new one over it."""

    def __init__(self, d, name="auth.conf"):
        self.path = d / name

    def install(self, text):
        replace(self.path, text)


class KubeFile:
    """One file of a Kubernetes Secret volume: name -> ..data/name, and ..data a symlink swapped whole."""

    def __init__(self, d, name="auth.conf"):
        self.dir, self.name, self.n = d, name, 0
        self.path = d / name

    def install(self, text):
        self.n += 1
        ts = self.dir / f"..2026_12_07_auth_{self.n}"
        ts.mkdir()
        (ts / self.name).write_text(text)
        tmp = self.dir / "..data_tmp"
        os.symlink(ts.name, tmp)
        os.rename(tmp, self.dir / "..data")
        if not self.path.is_symlink():
            os.symlink(f"..data/{self.name}", self.path)


def send(gw, token, source, n=1, url=None, session=requests, verify=None):
    """POST n events (a batch) with this bearer token: the status."""
    body = [event(source) for _ in range(n)]
    headers = {"Content-Type": "application/cloudevents-batch+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    r = session.post((url or gw.url) + "/v1/events?ack=accepted", data=json.dumps(body), headers=headers,
                     timeout=10, verify=verify)
    return r.status_code


def grpc_code(stub, pb, token, source):
    """Publish one event with this bearer token over gRPC: the status code (OK or the error's)."""
    ev = pb.cloudevent_pb2.CloudEvent(id=str(uuid.uuid4()), source=source, type="com.example.reload")
    try:
        stub.Publish(pb.ingest_pb2.PublishRequest(events=[ev], ack=pb.ingest_pb2.ACK_LEVEL_ACCEPTED),
                     metadata=[("authorization", f"Bearer {token}")], timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def udp_send(gw, source):
    host, port = gw.addrs["--udp-addr"].rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(json.dumps(event(source)).encode(), (host, int(port)))


def start_auth(start_gateway, make_topic, path, *flags):
    return start_gateway(f"--kafka-topic={make_topic('reload-auth')}", f"--auth-file={path}", *flags)


AUTH_V1 = (principal("a", f"token {sha(TOKENS['a'])}", "source /a/")
           + principal("b", f"token {sha(TOKENS['b'])}", "source /b/")
           + principal("anonymous", "protocols udp", "source /pub/"))
# b gone (its token with it), d new, a moved from /a/ to /b/, anonymous from /pub/ to /pub2/.
AUTH_V2 = (principal("a", f"token {sha(TOKENS['a'])}", "source /b/")
           + principal("d", f"token {sha(TOKENS['d'])}")
           + principal("anonymous", "protocols udp", "source /pub2/"))

OK, DENIED, UNAUTH = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED


def test_sighup_reloads_the_auth_file(start_gateway, make_topic, tmp_path, pb):
    f = LiveFile(tmp_path)
    f.install(AUTH_V1)
    gw = start_auth(start_gateway, make_topic, f.path)
    T = TOKENS
    udp_forbidden = lambda: gw.metric("ingest_rejected_total", protocol="udp", reason="forbidden")  # noqa: E731
    udp_ok = lambda: gw.metric("ingest_principal_events_total", principal="anonymous")  # noqa: E731
    with grpc.insecure_channel(gw.addrs["--grpc-addr"]) as ch:
        stub = pb.ingest_pb2_grpc.IngestStub(ch)

        def v1_in_force():
            assert send(gw, T["a"], "/a/x") == 202 and send(gw, T["a"], "/b/x") == 403
            assert send(gw, T["b"], "/b/x") == 202 and send(gw, T["d"], "/d/x") == 401
            assert grpc_code(stub, pb, T["a"], "/a/x") == OK and grpc_code(stub, pb, T["a"], "/b/x") == DENIED
            assert grpc_code(stub, pb, T["b"], "/b/x") == OK and grpc_code(stub, pb, T["d"], "/d/x") == UNAUTH

        v1_in_force()
        f0, a0 = udp_forbidden(), udp_ok()
        udp_send(gw, "/pub/x")
        udp_send(gw, "/pub2/x")
        assert wait_for(lambda: udp_ok() == a0 + 1 and udp_forbidden() == f0 + 1), gw.log_tail()

        # Written, no signal, no --reload-interval: nothing changes.
        f.install(AUTH_V2)
        time.sleep(0.3)
        v1_in_force()
        assert reloads(gw, "ok") == 0

        hup(gw)
        assert reloads(gw, "ok") == 1 and reloads(gw, "failed") == 0
        assert "reloaded the auth file from" in gw.log()
        # Token added: accepted; token removed: 401; a's sources moved: 202 -> 403 and 403 -> 202.
        assert send(gw, T["d"], "/d/x") == 202 and send(gw, T["b"], "/b/x") == 401
        assert send(gw, T["a"], "/b/x") == 202 and send(gw, T["a"], "/a/x") == 403
        assert grpc_code(stub, pb, T["d"], "/d/x") == OK and grpc_code(stub, pb, T["b"], "/b/x") == UNAUTH
        assert grpc_code(stub, pb, T["a"], "/b/x") == OK and grpc_code(stub, pb, T["a"], "/a/x") == DENIED
        udp_send(gw, "/pub/x")
        udp_send(gw, "/pub2/x")
        assert wait_for(lambda: udp_ok() == a0 + 2 and udp_forbidden() == f0 + 2), gw.log_tail()

        # And back: the same gateway, the first file again.
        f.install(AUTH_V1)
        hup(gw)
        v1_in_force()
    assert reloads(gw, "ok") == 2 and reloads(gw, "failed") == 0
    # The counters of a principal that left and came back go on (one series per name).
    text = requests.get(gw.admin_url + "/metrics", timeout=5).text
    assert 'ingest_principal_events_total{principal="d"}' in text
    assert gw.stop() == 0


@pytest.mark.parametrize("layout", [LiveFile, KubeFile], ids=["rename", "kubernetes-symlink"])
def test_reload_interval_picks_an_auth_file_change_up(start_gateway, make_topic, tmp_path, layout):
    f = layout(tmp_path)
    f.install(AUTH_V1)
    gw = start_auth(start_gateway, make_topic, f.path, "--reload-interval=200ms")
    assert send(gw, TOKENS["b"], "/b/x") == 202 and send(gw, TOKENS["d"], "/d/x") == 401
    time.sleep(0.6)
    assert reloads(gw, "ok") == 0, "an unchanged file is not reloaded"
    f.install(AUTH_V2)
    assert wait_for(lambda: send(gw, TOKENS["d"], "/d/x") == 202), gw.log_tail()
    assert send(gw, TOKENS["b"], "/b/x") == 401 and send(gw, TOKENS["a"], "/a/x") == 403
    f.install(AUTH_V1)
    assert wait_for(lambda: send(gw, TOKENS["d"], "/d/x") == 401), gw.log_tail()
    assert send(gw, TOKENS["b"], "/b/x") == 202
    time.sleep(0.6)
    assert reloads(gw, "ok") == 2 and reloads(gw, "failed") == 0


BROKEN_AUTH = {
    "syntax-error": principal("a", f"token {sha(TOKENS['a'])}") + "principal\n",
    "duplicate-token": principal("a", f"token {sha(TOKENS['a'])}") + principal("d", f"token {sha(TOKENS['a'])}"),
    "missing": None,
}


@pytest.mark.parametrize("trigger", ["sighup", "interval"])
@pytest.mark.parametrize("broken", list(BROKEN_AUTH))
def test_a_broken_auth_file_keeps_the_old_principals(start_gateway, make_topic, tmp_path, pb, broken, trigger):
    f = LiveFile(tmp_path)
    f.install(AUTH_V1)
    gw = start_auth(start_gateway, make_topic, f.path, *(["--reload-interval=200ms"] if trigger == "interval" else []))
    if BROKEN_AUTH[broken] is None:
        f.path.unlink()
    else:
        f.install(BROKEN_AUTH[broken])
    if trigger == "sighup":
        hup(gw, "failed")
    else:
        assert wait_for(lambda: reloads(gw, "failed") >= 1), gw.log_tail()
        time.sleep(0.6)
        assert reloads(gw, "failed") == 1, "a broken file is reported once, not at every check"
    assert reloads(gw, "ok") == 0 and gw.proc.poll() is None
    # The old principals, on HTTP and gRPC.
    assert send(gw, TOKENS["a"], "/a/x") == 202 and send(gw, TOKENS["b"], "/b/x") == 202
    assert send(gw, TOKENS["a"], "/b/x") == 403 and send(gw, TOKENS["d"], "/d/x") == 401
    with grpc.insecure_channel(gw.addrs["--grpc-addr"]) as ch:
        stub = pb.ingest_pb2_grpc.IngestStub(ch)
        assert grpc_code(stub, pb, TOKENS["b"], "/b/x") == OK
    line = next(ln for ln in gw.log().splitlines() if "reload of the auth file failed" in ln)
    assert "level=warn" in line and str(f.path) in line, line
    # A good file later loads.
    f.install(AUTH_V2)
    if trigger == "sighup":
        hup(gw)
    assert wait_for(lambda: send(gw, TOKENS["d"], "/d/x") == 202), gw.log_tail()
    assert send(gw, TOKENS["b"], "/b/x") == 401
    assert reloads(gw, "ok") == 1 and gw.proc.poll() is None


def test_quota_buckets_survive_a_reload(start_gateway, make_topic, tmp_path):
    """A reload keeps each principal's bucket: one that used its burst is not refilled by it; a raised rate
    applies at once to the bucket it has."""
    f = LiveFile(tmp_path)
    quota = lambda rate: principal("q", f"token {sha(TOKENS['q'])}", f"rate {rate}/s burst {rate}")  # noqa: E731
    f.install(quota(5) + principal("a", f"token {sha(TOKENS['a'])}"))
    gw = start_auth(start_gateway, make_topic, f.path)
    limited = lambda: gw.metric("ingest_principal_refused_total", principal="q", reason="rate_limited")  # noqa: E731
    with requests.Session() as s:
        assert send(gw, TOKENS["q"], "/q/x", n=5, session=s) == 202  # the whole burst
        used = time.monotonic()
        assert send(gw, TOKENS["q"], "/q/x", n=5, session=s) == 429
        # The same rate, another principal changed: a reload, the bucket as it was.
        f.install(quota(5) + principal("a2", f"token {sha(TOKENS['a'])}"))
        hup(gw)
        status = send(gw, TOKENS["q"], "/q/x", n=5, session=s)
        # 5 events need the full burst back, which takes 1 s at 5/s: refused unless the reload refilled it.
        assert time.monotonic() - used < 0.9, "too slow to tell a refill from the bucket's own"
        assert status == 429, "the reload refilled the bucket"
        assert limited() == 2

        # Raised tenfold: within a second, far more than 5/s gets through.
        f.install(quota(500) + principal("a2", f"token {sha(TOKENS['a'])}"))
        hup(gw)
        accepted, end = 0, time.monotonic() + 1.0
        while time.monotonic() < end:
            if send(gw, TOKENS["q"], "/q/x", n=20, session=s) == 202:
                accepted += 20
            time.sleep(0.02)
    assert accepted >= 100, accepted  # 5/s would allow 5 + 5, at most
    assert reloads(gw, "ok") == 2 and reloads(gw, "failed") == 0
    assert gw.stop() == 0


LOAD_AUTH = [principal("A", f"token {sha(TOKENS['a'])}", "source /a/") + principal("B", f"token {sha(TOKENS['b'])}"),
             principal("C", f"token {sha(TOKENS['c'])}", "protocols grpc")
             + principal("A", f"token {sha(TOKENS['a'])}", "source /a/")]


def test_reload_of_certificates_and_auth_file_under_load(start_gateway, make_topic, topic_reader, pki, certs,
                                                          tmp_path, pb):
    """20 s of HTTPS (new connections and keep-alive) and gRPC over TLS (new channels and one kept), all with
    A's token, while the certificate and the auth file (two, alternating: both allow A's /a/ events) are
    rotated every second: no request fails, and every event accepted reaches Kafka."""
    files = Live(tmp_path)
    leaves = [certs.new() for _ in range(3)]
    files.install(leaves[0])
    auth = LiveFile(tmp_path)
    auth.install(LOAD_AUTH[0])
    topic = make_topic("reload-load")
    gw = start_gateway(f"--kafka-topic={topic}", f"--tls-cert={files.cert}", f"--tls-key={files.key}",
                       f"--auth-file={auth.path}")
    reader = topic_reader(topic)
    mark = reader.mark()
    md = [("authorization", f"Bearer {TOKENS['a']}")]
    headers = {**EVENT_CT, "Authorization": f"Bearer {TOKENS['a']}"}
    stop = threading.Event()
    errors, ids = [], set()
    done = {"http-new": 0, "http-keepalive": 0, "grpc-new": 0, "grpc-kept": 0}

    def run(kind, once):
        while not stop.is_set():
            try:
                once()
                done[kind] += 1
            except Exception as e:  # noqa: BLE001 (any failure is the test's finding)
                errors.append((kind, repr(e)))

    def http_post(session):
        ev = event("/a/load")
        r = session.post(https(gw) + "/v1/events?ack=accepted", data=json.dumps(ev), headers=headers,
                         verify=pki.ca_pem, timeout=10)
        assert r.status_code == 202, (r.status_code, r.text)
        ids.add(ev["id"])

    def http_new():
        with requests.Session() as s:
            http_post(s)

    keep = requests.Session()

    def publish(ch):
        ev = pb.cloudevent_pb2.CloudEvent(id=str(uuid.uuid4()), source="/a/load", type="com.example.reload")
        resp = pb.ingest_pb2_grpc.IngestStub(ch).Publish(
            pb.ingest_pb2.PublishRequest(events=[ev], ack=pb.ingest_pb2.ACK_LEVEL_ACCEPTED), metadata=md,
            timeout=10)
        assert resp.accepted == 1
        ids.add(ev.id)

    opts = [("grpc.use_local_subchannel_pool", 1)]

    def grpc_new():
        with grpc.secure_channel(gw.addrs["--grpc-addr"], grpc_creds(pki), options=opts) as ch:
            publish(ch)

    kept = grpc.secure_channel(gw.addrs["--grpc-addr"], grpc_creds(pki), options=opts)
    threads = [threading.Thread(target=run, args=(k, fn)) for k, fn in
               (("http-new", http_new), ("http-keepalive", lambda: http_post(keep)), ("grpc-new", grpc_new),
                ("grpc-kept", lambda: publish(kept)))]
    for t in threads:
        t.start()
    i = 0
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            time.sleep(1)
            i += 1
            files.install(leaves[i % len(leaves)])
            auth.install(LOAD_AUTH[i % 2])
            gw.proc.send_signal(signal.SIGHUP)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        keep.close()
        kept.close()
    assert errors == [], errors[:5]
    assert all(n > 0 for n in done.values()), done
    # Two items a reload: the certificates and the auth file. A SIGHUP sent while another is pending merges
    # with it (signals are not queued), so a loaded machine reloads up to i times, the last after the last
    # rotation: wait until the count stops moving.
    assert wait_for(lambda: reloads(gw, "ok") >= 2), (reloads(gw, "ok"), i)
    assert wait_for(lambda: settled(gw)), (reloads(gw, "ok"), i)
    assert reloads(gw, "ok") % 2 == 0 and reloads(gw, "ok") <= 2 * i, (reloads(gw, "ok"), i)
    assert reloads(gw, "failed") == 0
    # The file of the last rotation is in force.
    b_in = send(gw, TOKENS["b"], "/b/x", url=https(gw), verify=pki.ca_pem)
    assert b_in == (202 if i % 2 == 0 else 401), (i, b_in)
    assert gw.proc.poll() is None
    got = reader.find_since(mark, ids, timeout=60)
    assert len(got) == len(ids) and all(r.envelope.principal == "A" for r in got.values())
    assert gw.stop() == 0, gw.log_tail()
