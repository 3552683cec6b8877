"""Tools for test_hostile_http.py: what a hostile client does, and what the gateway's process costs.

Everything here talks to 127.0.0.1 only, and every loop is bounded in count
and time.
"""

import http.client
import json
import select
import socket
import threading
import time
import uuid
import weakref


def log_lines(gw):
    return len(gw.log().splitlines())


def host_port(addr):
    host, port = addr.rsplit(":", 1)
    return host.strip("[]"), int(port)


def connect(addr, timeout=5):
    s = socket.create_connection(host_port(addr), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


# Bytes read past one response (pipelining), kept for the next read_response() on that socket.
_leftover = weakref.WeakKeyDictionary()


def read_response(s, timeout=10):
    """One HTTP response from a raw socket: (status, headers dict lower-cased, body bytes); (0, {}, b'')
    when the connection closed (or reset) first."""
    s.settimeout(timeout)
    buf = _leftover.pop(s, b"")
    try:
        while b"\r\n\r\n" not in buf:
            b = s.recv(65536)
            if not b:
                return 0, {}, b""
            buf += b
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(body) < n:
            b = s.recv(65536)
            if not b:
                break
            body += b
        if len(body) > n:
            _leftover[s] = body[n:]
        return status, headers, body[:n]
    except (ConnectionResetError, BrokenPipeError):
        return 0, {}, b""


def readable(s):
    """True when s has bytes (or EOF) to read now (poll: descriptors past 1024 are fine)."""
    if _leftover.get(s):
        return True
    p = select.poll()
    p.register(s, select.POLLIN)
    return bool(p.poll(0))


def raw_exchange(addr, data, timeout=10):
    """Send raw bytes, read one response."""
    with connect(addr, timeout) as s:
        s.sendall(data)
        return read_response(s, timeout)


def closed_by_peer(s, timeout=5):
    """True once the peer closed (EOF or reset) within timeout; what it sent first is read and dropped."""
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def event_body(source="/it/hostile"):
    return json.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "source": source,
                       "type": "com.example.hostile"}).encode()


class OrdinaryClient(threading.Thread):
    """A well-behaved client posting small events on one keep-alive connection while an attack runs.

    Records each request's latency and status; reconnects when the gateway
    closes the connection (a 429 closes it, for one). ack=accepted, so the
    latency is the gateway's, not Kafka's.
    """

    def __init__(self, addr, token=None, period=0.02, max_requests=2000):
        super().__init__(daemon=True)
        self.addr = addr
        self.headers = {"Content-Type": "application/cloudevents+json"}
        if token:
            self.headers["Authorization"] = "Bearer " + token
        self.period = period
        self.max_requests = max_requests
        self.latencies = []
        self.statuses = []
        self.errors = []
        self._halt = threading.Event()
        # Connected before the attack starts, as a long-lived client would be.
        self.conn = self._connect()

    def _connect(self):
        host, port = host_port(self.addr)
        c = http.client.HTTPConnection(host, port, timeout=10)
        c.connect()
        return c

    def run(self):
        while not self._halt.is_set() and len(self.statuses) < self.max_requests:
            t = time.monotonic()
            try:
                self.conn.request("POST", "/v1/events?ack=accepted", body=event_body(), headers=self.headers)
                r = self.conn.getresponse()
                r.read()
                self.statuses.append(r.status)
                self.latencies.append(time.monotonic() - t)
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = self._connect()
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(repr(e))
                self.conn.close()
                try:
                    self.conn = self._connect()
                except OSError as e2:
                    self.errors.append(repr(e2))
            self._halt.wait(self.period)

    def stop(self):
        self._halt.set()
        self.join(timeout=15)
        self.conn.close()

    def p99(self):
        if not self.latencies:
            return float("inf")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))]

    def summary(self):
        ok = sum(1 for s in self.statuses if s == 200 or s == 202)
        return (f"ordinary client: {len(self.statuses)} answers ({ok} accepted, others "
                f"{sorted(set(s for s in self.statuses if s not in (200, 202)))}), {len(self.errors)} errors, "
                f"p99 {self.p99() * 1000:.1f} ms, max {max(self.latencies, default=0) * 1000:.1f} ms")


def probe_ms(admin_url, path="/healthz", timeout=5):
    """One admin probe on a fresh connection: its latency in ms, asserting 200."""
    import requests

    t = time.monotonic()
    r = requests.get(admin_url + path, timeout=timeout)
    assert r.status_code == 200, (r.status_code, r.text)
    return (time.monotonic() - t) * 1000
