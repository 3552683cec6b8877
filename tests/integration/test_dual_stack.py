"""Dual stack (issue 12): every listener of both programs takes IPv4 and IPv6 on one [::] socket.

A private gateway with every listener on [::] is reached over 127.0.0.1 and over ::1: HTTP, UDP and
gRPC events arrive in Kafka with the client's address as their peer (an IPv4 client named as IPv4,
not as ::ffff:a.b.c.d), Health/Check and the admin port answer; so does a sink's admin port. The
defaults are [::]. A port another process holds in either family is an error for every listener,
gRPC's too (its core would otherwise fall back to 0.0.0.0 by itself).

Then hosts unlike this one, each a network namespace of its own (root), where a gateway and a sink
run with their defaults and clients reach them from inside with nsenter (netns_client.py). Kafka and
Postgres are not reachable from there: the programs run not ready, which is enough to reach their
listeners. net.ipv6.bindv6only=1: the defaults still take both families. IPv6 disabled: [::] still
takes IPv4, but the gRPC core cannot have [::] without [::1] and listens on 0.0.0.0, which the
gateway says. A kernel without IPv6, made by a seccomp filter failing socket(AF_INET6) with
EAFNOSUPPORT as a kernel booted with ipv6.disable=1 does: every listener falls back to 0.0.0.0 and
says so in one line each.
"""
import ctypes
import errno
import http.client
import json
import os
import pathlib
import platform
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid

import grpc
import pytest
import requests

from conftest import GATEWAY_BIN, GATEWAY_LISTEN_FLAGS, SINK_BIN, free_port, host_port

FAMILIES = {"ipv4": "127.0.0.1", "ipv6": "::1"}
GATEWAY_DEFAULTS = {"--http-addr": 8080, "--udp-addr": 8090, "--grpc-addr": 50051, "--admin-addr": 8081}
SINK_DEFAULTS = {"--admin-addr": 8082}
CLIENT = pathlib.Path(__file__).resolve().parent / "netns_client.py"


def in_url(ip):
    return f"[{ip}]" if ":" in ip else ip


def peer_of(ip, port):
    """The Envelope's peer of a client at ip:port; port None: any port."""
    if port is None:
        return re.compile(rf"\[{re.escape(ip)}\]:\d+" if ":" in ip else rf"{re.escape(ip)}:\d+")
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}


def help_defaults(binary):
    """{flag: default} as `binary --help` lists them."""
    r = subprocess.run([str(binary), "--help"], env=clean_env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    defaults, flag = {}, None
    for line in r.stdout.splitlines():
        if m := re.match(r"^  (--[\w.-]+)=", line):
            flag = m.group(1)
        elif (m := re.match(r"^      env INGEST_\w+, default (.*)$", line)) and flag:
            defaults[flag] = m.group(1)
    return defaults


@pytest.mark.parametrize("binary,ports", [(GATEWAY_BIN, GATEWAY_DEFAULTS), (SINK_BIN, SINK_DEFAULTS)],
                         ids=["gateway", "sink"])
def test_defaults_are_every_address_of_both_families(binary, ports):
    defaults = help_defaults(binary)
    assert {f: defaults.get(f) for f in ports} == {f: f"[::]:{p}" for f, p in ports.items()}


# ---- a gateway and a sink on [::], reached over IPv4 and IPv6 ------------------------------------

@pytest.fixture(scope="module")
def dgw(start_gateway, make_topic, topic_reader):
    topic = make_topic("dual")
    listen = {flag: f"[::]:{free_port()}" for flag in GATEWAY_LISTEN_FLAGS}
    g = start_gateway(f"--kafka-topic={topic}", "--gateway-id=it-dual", *(f"{f}={a}" for f, a in listen.items()))
    g.port = {flag: host_port(a)[1] for flag, a in listen.items()}
    g.reader = topic_reader(topic)
    yield g
    g.stop()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_http(dgw, family, pb):
    ip, eid = FAMILIES[family], f"http-{family}-{uuid.uuid4().hex[:8]}"
    mark = dgw.reader.mark()
    conn = http.client.HTTPConnection(ip, dgw.port["--http-addr"], timeout=30)
    try:
        conn.connect()
        client = conn.sock.getsockname()[1]
        conn.request("POST", "/v1/events", json.dumps({"specversion": "1.0", "id": eid, "source": "/it/dual",
                                                      "type": "t"}),
                     {"Content-Type": "application/cloudevents+json"})
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 200, body
    assert json.loads(body)["ids"] == [eid]
    rec = dgw.reader.find_since(mark, {eid})[eid]
    assert rec.envelope.protocol == pb.envelope_pb2.PROTOCOL_HTTP
    assert rec.envelope.peer == peer_of(ip, client)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_udp(dgw, family, pb):
    ip, eid = FAMILIES[family], f"udp-{family}-{uuid.uuid4().hex[:8]}"
    mark = dgw.reader.mark()
    with socket.socket(socket.AF_INET6 if family == "ipv6" else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        s.sendto(json.dumps({"source": "/it/dual", "type": "t", "id": eid}).encode(), (ip, dgw.port["--udp-addr"]))
        client = s.getsockname()[1]
    rec = dgw.reader.find_since(mark, {eid})[eid]
    assert rec.envelope.protocol == pb.envelope_pb2.PROTOCOL_UDP
    assert rec.envelope.peer == peer_of(ip, client)


def health_check(target):
    with grpc.insecure_channel(target) as ch:
        raw = ch.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10)
    # HealthCheckResponse: field 1 (status), a varint; SERVING is 1.
    return {b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}.get(raw, raw)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_grpc(dgw, family, pb):
    ip, eid = FAMILIES[family], f"grpc-{family}-{uuid.uuid4().hex[:8]}"
    target = f"{family}:{in_url(ip)}:{dgw.port['--grpc-addr']}"
    mark = dgw.reader.mark()
    with grpc.insecure_channel(target) as ch:
        resp = pb.ingest_pb2_grpc.IngestStub(ch).Publish(pb.ingest_pb2.PublishRequest(
            seq=1, events=[pb.cloudevent_pb2.CloudEvent(id=eid, source="/it/dual", type="t")]), timeout=30)
    assert (resp.accepted, list(resp.ids)) == (1, [eid])
    rec = dgw.reader.find_since(mark, {eid})[eid]
    assert rec.envelope.protocol == pb.envelope_pb2.PROTOCOL_GRPC
    # The core names the peer; the client's port is not one grpcio tells.
    assert peer_of(ip, None).fullmatch(rec.envelope.peer), rec.envelope.peer
    assert health_check(target) == "SERVING"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gateway_admin(dgw, family):
    base = f"http://{in_url(FAMILIES[family])}:{dgw.port['--admin-addr']}"
    r = requests.get(base + "/healthz", timeout=5)
    assert (r.status_code, r.text.strip()) == (200, "ok")
    assert requests.get(base + "/readyz", timeout=5).status_code == 200


def test_sink_admin(start_sink):
    port = free_port()
    sink = start_sink(f"--admin-addr=[::]:{port}")
    for ip in FAMILIES.values():
        r = requests.get(f"http://{in_url(ip)}:{port}/healthz", timeout=5)
        assert (r.status_code, r.text.strip()) == (200, "ok"), ip
    assert sink.alive()


@pytest.mark.parametrize("holder", ["ipv4", "ipv6-only"])
@pytest.mark.parametrize("flag", GATEWAY_LISTEN_FLAGS)
def test_a_port_held_in_either_family_is_an_error(flag, holder, kafka_bootstrap):
    kind = socket.SOCK_DGRAM if flag == "--udp-addr" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET if holder == "ipv4" else socket.AF_INET6, kind) as held:
        if holder == "ipv4":
            held.bind(("0.0.0.0", 0))
        else:
            held.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            held.bind(("::", 0))
        if kind == socket.SOCK_STREAM:
            held.listen()
        listen = [f"{f}=127.0.0.1:0" for f in GATEWAY_LISTEN_FLAGS if f != flag]
        # A gateway that starts all the same never exits: the timeout fails the test.
        r = subprocess.run([str(GATEWAY_BIN), *listen, f"{flag}=[::]:{held.getsockname()[1]}",
                            f"--kafka-bootstrap={kafka_bootstrap}", "--shutdown-timeout=1s"],
                           env=clean_env(), capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert flag in r.stderr and "in use" in r.stderr, r.stderr


# ---- hosts unlike this one: network namespaces of their own ---------------------------------------

def _unshare_works():
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


needs_netns = pytest.mark.skipif(not _unshare_works(), reason="needs root and unshare --net")

# The seccomp filter of a kernel without IPv6: socket(AF_INET6, ...) fails with EAFNOSUPPORT.
_ARCH = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}  # AUDIT_ARCH_*, __NR_socket


def _no_af_inet6():
    """A preexec_fn installing the filter in the child, which keeps it across exec."""
    arch, nr_socket = _ARCH[platform.machine()]
    ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
    allow, refuse = 0x7FFF0000, 0x00050000 | errno.EAFNOSUPPORT  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO|errno
    insns = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, allow),          # seccomp_data.arch
             (ld, 0, 0, 0), (jeq, 0, 3, nr_socket),                         # .nr
             (ld, 0, 0, 16), (jeq, 0, 1, socket.AF_INET6),                  # .args[0], low half
             (ret, 0, 0, refuse), (ret, 0, 0, allow)]
    code = b"".join(struct.pack("HBBI", c, jt, jf, k) for c, jt, jf, k in insns)
    buf = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(insns), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)

    def install():
        # PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with SECCOMP_MODE_FILTER.
        if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:
            os._exit(97)
    install.keep = (buf, prog)
    return install


class Netns:
    """A gateway in a network namespace of its own (loopback up, `setup` run first), a sink beside it.

    Both run with their default listeners, Kafka and Postgres out of reach; `preexec` (a seccomp
    filter) applies to both. reach(ip) runs netns_client.py inside against every listener.
    """

    def __init__(self, tmp):
        self.procs = []
        self.gateway_log, self.sink_log = tmp / "gateway.log", tmp / "sink.log"

    def start(self, setup, preexec=None):
        self.preexec = preexec
        script = f'ip link set lo up && {setup} && exec "$0" "$@"'
        self.gateway = self._start(["unshare", "--net", "sh", "-c", script, str(GATEWAY_BIN),
                                    "--kafka-bootstrap=127.0.0.1:1", "--shutdown-timeout=1s"], self.gateway_log)
        self.ns = f"/proc/{self.gateway.pid}/ns/net"
        self._wait(self.gateway, self.gateway_log)
        self.sink = self._start(["nsenter", f"--net={self.ns}", str(SINK_BIN), "--kafka-bootstrap=127.0.0.1:1",
                                 "--pg-dsn=postgresql://127.0.0.1:1/none"], self.sink_log)
        self._wait(self.sink, self.sink_log)

    def _start(self, argv, log_path):
        with open(log_path, "wb") as log:
            p = subprocess.Popen(argv, env=clean_env(), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, preexec_fn=self.preexec)
        self.procs.append(p)
        return p

    def _wait(self, proc, log_path, timeout=20):
        deadline = time.monotonic() + timeout
        while 'msg="started' not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, f"{proc.args} exited {proc.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"{proc.args} did not start:\n{log_path.read_text()}"
            time.sleep(0.05)

    def reach(self, ip):
        ports = {"gateway": ["--admin", "8081", "--http", "8080", "--udp", "8090", "--grpc", "50051"],
                 "sink": ["--admin", "8082"]}
        out = {}
        for prog, args in ports.items():
            r = subprocess.run(["nsenter", f"--net={self.ns}", sys.executable, str(CLIENT), ip, *args],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            out[prog] = json.loads(r.stdout)
        return out

    def listening(self):
        """{(proto, port): local address as ss shows it}: "*" is [::] taking both families."""
        r = subprocess.run(["nsenter", f"--net={self.ns}", "ss", "-Hltun"], capture_output=True, text=True,
                           timeout=30, check=True)
        found = {}
        for line in r.stdout.splitlines():
            proto, local = line.split()[0], line.split()[4]
            host, port = host_port(local)
            found.setdefault((proto, port), set()).add(host)
        return {k: "|".join(sorted(v)) for k, v in found.items()}

    def fallback_lines(self, log_path):
        return [ln for ln in log_path.read_text(errors="replace").splitlines() if "no IPv6 on this host" in ln]

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture
def netns(tmp_path):
    made = []

    def make(setup, preexec=None):
        made.append(Netns(tmp_path))
        made[-1].start(setup, preexec)
        return made[-1]

    yield make
    for n in made:
        n.stop()


def every_listener(answer):
    """Whether a client's answers (Netns.reach) say every listener served it."""
    gw = answer["gateway"]
    return ((gw.get("admin"), gw.get("http"), gw.get("udp"), answer["sink"].get("admin")) == (200, 202, True, 200)
            and gw.get("grpc") in ("SERVING", "NOT_SERVING"))


DEFAULT_SOCKETS = {("tcp", 8080), ("udp", 8090), ("tcp", 50051), ("tcp", 8081), ("tcp", 8082)}


@needs_netns
def test_bindv6only_does_not_make_the_defaults_ipv6_only(netns):
    ns = netns("sysctl -qw net.ipv6.bindv6only=1")
    assert ns.listening() == {s: "*" for s in DEFAULT_SOCKETS}
    for family, ip in FAMILIES.items():
        answer = ns.reach(ip)
        assert every_listener(answer), (family, answer)
    assert ns.fallback_lines(ns.gateway_log) == [] and ns.fallback_lines(ns.sink_log) == []


@needs_netns
def test_ipv6_disabled(netns):
    ns = netns("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 "
               "net.ipv6.conf.lo.disable_ipv6=1")
    # [::] still binds and takes IPv4; the gRPC core wants [::1] for it, and falls back.
    assert ns.listening() == {**{s: "*" for s in DEFAULT_SOCKETS}, ("tcp", 50051): "0.0.0.0"}
    answer = ns.reach(FAMILIES["ipv4"])
    assert every_listener(answer), answer
    (line,) = ns.fallback_lines(ns.gateway_log)
    assert ('msg="--grpc-addr [::]:50051: no IPv6 on this host (the gRPC core needs [::1]: Cannot assign '
            'requested address); listening on 0.0.0.0:50051, IPv4 only"') in line
    assert ns.fallback_lines(ns.sink_log) == []


@needs_netns
@pytest.mark.skipif(platform.machine() not in _ARCH, reason=f"no seccomp filter written for {platform.machine()}")
def test_kernel_without_ipv6_falls_back_to_ipv4(netns):
    ns = netns("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 "
               "net.ipv6.conf.lo.disable_ipv6=1", preexec=_no_af_inet6())
    assert ns.listening() == {s: "0.0.0.0" for s in DEFAULT_SOCKETS}
    answer = ns.reach(FAMILIES["ipv4"])
    assert every_listener(answer), answer
    lines = {flag: [ln for ln in ns.fallback_lines(ns.gateway_log) if f'msg="{flag} ' in ln]
             for flag in GATEWAY_DEFAULTS}
    for flag, port in GATEWAY_DEFAULTS.items():
        (line,) = lines[flag]
        assert (f'msg="{flag} [::]:{port}: no IPv6 on this host (socket: Address family not supported by '
                f'protocol); listening on 0.0.0.0:{port}, IPv4 only"') in line
    assert len(ns.fallback_lines(ns.gateway_log)) == len(GATEWAY_DEFAULTS)
    (line,) = ns.fallback_lines(ns.sink_log)
    assert 'msg="--admin-addr [::]:8082: no IPv6 on this host (socket: ' in line
    assert "listening on 0.0.0.0:8082, IPv4 only" in line
