"""Hostile HTTP clients must not take the gateway down (issue 13).

Each attack once broke it on loopback; each test replays a smaller copy
against a gateway of its own (the real binary, the real Kafka) and bounds
what the attack costs the gateway: RSS (/proc/<pid>/status), descriptors
(/proc/<pid>/fd), CPU, log lines, time; checks that an ordinary client
keeps being served meanwhile (its p99 latency is printed: run with -s to see
it); and that /metrics counts what was refused and why.

The gateways here run with --memory-budget=64MiB and --max-request-bytes=1MiB:
the inbound share (request bodies) is 32 MiB, so the bounds are cheap to test.
"""

import resource
import socket
import threading
import time

import pytest
import requests

from hostile_http import (OrdinaryClient, closed_by_peer, connect, event_body, log_lines, probe_ms, raw_exchange,
                          read_response, readable)
from procstat import cpu_seconds, fd_count, rss_kib

MiB = 1024 * 1024
BUDGET = ["--memory-budget=64MiB", "--max-request-bytes=1MiB", "--default-ack=accepted"]
INBOUND_KIB = 32 * 1024  # half the budget: what request bodies may hold


@pytest.fixture(autouse=True)
def enough_descriptors():
    """The attacks open hundreds of sockets from this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def refused(gw, reason, kind="ingest_rejected_total"):
    return gw.metric(kind, protocol="http", reason=reason)


def warm_up(gw):
    """A few requests, so the baseline RSS includes what serving at all costs."""
    for _ in range(20):
        r = requests.post(gw.events_url, data=event_body(), timeout=10,
                          headers={"Content-Type": "application/cloudevents+json"})
        assert r.status_code == 202, r.text
    return rss_kib(gw.proc.pid)


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


# ---- 1. connection floods --------------------------------------------------------------------------------


@pytest.mark.parametrize("flags,nofile,attack,cap", [
    # An explicit cap, far below the descriptor limit.
    (["--max-connections=100"], 4096, 400, 100),
    # The default cap (8192) cannot fit 1024 descriptors: lowered to (1024 - 256) / 2 at start, so the
    # flood meets the cap, not EMFILE (22,500 connections past a 20,000 limit once spun on EMFILE).
    ([], 1024, 700, 384),
], ids=["explicit-cap", "past-descriptor-limit"])
def test_connection_flood(start_gateway, make_topic, flags, nofile, attack, cap):
    gw = start_gateway(f"--kafka-topic={make_topic('hostile')}", *BUDGET, *flags,
                       wrap=("prlimit", f"--nofile={nofile}:{nofile}", "--"))
    pid = gw.proc.pid
    warm_up(gw)
    fds0, lines0 = fd_count(pid), log_lines(gw)
    client = OrdinaryClient(gw.http_addr)
    client.start()
    socks = []
    try:
        t0 = time.monotonic()
        for _ in range(attack):
            try:
                socks.append(connect(gw.http_addr))
            except OSError:
                pass  # a reset backlog: still refused, as wanted
        # Every connection past the cap is closed at accept and counted.
        deadline = time.monotonic() + 10
        while refused(gw, "too_many_connections", "ingest_dropped_total") < attack - cap:
            assert time.monotonic() < deadline, (refused(gw, "too_many_connections", "ingest_dropped_total"),
                                                 gw.log_tail())
            time.sleep(0.1)
        flood_s = time.monotonic() - t0
        cpu0 = cpu_seconds(pid)
        time.sleep(2)  # held open: an idle flood must cost no CPU
        cpu = cpu_seconds(pid) - cpu0
        fds = fd_count(pid)
        open_now = gw.metric("ingest_connections", protocol="http")
        probe = max(probe_ms(gw.admin_url) for _ in range(5))
    finally:
        client.stop()
        close_all(socks)
    lines = log_lines(gw) - lines0
    print(f"\nHOSTILE HTTP connection flood: {attack} connections, cap {cap}: refused in {flood_s:.2f}s, gateway fds {fds0} -> {fds}, "
          f"CPU {cpu:.2f}s over 2s held, open {open_now}, admin probe max {probe:.1f} ms, "
          f"{lines} log lines; {client.summary()}")
    assert open_now <= cap
    assert fds <= fds0 + cap + 8, (fds0, fds)
    assert cpu < 0.5, cpu
    assert probe < 500, probe
    assert lines <= 5, gw.log_tail()
    assert client.errors == [] and set(client.statuses) == {202}, client.summary()
    assert client.p99() < 0.5, client.summary()


# ---- 2. stalled bodies and the memory budget -------------------------------------------------------------


def stall_body(addr, headers, body_bytes, results, i):
    """Send a request's head and body_bytes of its body, then stall until the gateway answers or closes."""
    try:
        s = connect(addr, timeout=20)
    except OSError as e:
        results[i] = ("connect", repr(e))
        return
    try:
        s.sendall(headers)
        s.settimeout(3)
        try:
            s.sendall(b"x" * body_bytes)
        except socket.timeout:
            pass  # the gateway stopped reading: TCP flow control, as wanted
        status, hdrs, body = read_response(s, timeout=20)
        results[i] = (status, body[:200])
    except OSError as e:
        results[i] = ("error", repr(e))
    finally:
        s.close()


def test_stalled_bodies_take_the_budget_not_memory(start_gateway, make_topic):
    # 120 connections each sending a body of 1 MiB - 1 and stalling a byte short: the inbound share holds
    # 32 of them; the rest wait --http-overload-wait and get 429, unless a stalled one is evicted first
    # (408 after a second of silence while others wait). (500 such connections of 8 MiB once grew RSS
    # from 717 MB to 4.24 GB.)
    gw = start_gateway(f"--kafka-topic={make_topic('hostile')}", *BUDGET, "--http-overload-wait=1s",
                       "--http-idle-timeout=4s")
    pid = gw.proc.pid
    base = warm_up(gw)
    lines0 = log_lines(gw)
    n, size = 120, MiB - 1
    head = (f"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/cloudevents+json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    results = [None] * n
    client = OrdinaryClient(gw.http_addr)
    client.start()
    threads = [threading.Thread(target=stall_body, args=(gw.http_addr, head, size - 1, results, i))
               for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    peak = 0
    while any(t.is_alive() for t in threads) and time.monotonic() - t0 < 25:
        peak = max(peak, rss_kib(pid))
        time.sleep(0.1)
    for t in threads:
        t.join(timeout=5)
    attack_s = time.monotonic() - t0
    # Once every attacker is answered and gone, jemalloc's decay gives the bodies' memory back.
    time.sleep(3)
    after = rss_kib(pid)
    client.stop()
    statuses = [r[0] for r in results]
    lines = log_lines(gw) - lines0
    print(f"\nHOSTILE HTTP stalled bodies: {n} of {size} bytes: RSS {base} KiB -> peak {peak} KiB -> {after} KiB 3 s after, "
          f"answers {dict((s, statuses.count(s)) for s in set(statuses))} in {attack_s:.1f}s, "
          f"peak inbound {gw.metric('ingest_memory_inbound_peak_bytes')}, {lines} log lines; {client.summary()}")
    # Bound: the inbound share (32 MiB) plus 40 MiB for everything else the attack touches.
    assert peak - base <= INBOUND_KIB + 40 * 1024, (base, peak)
    assert after - base <= 24 * 1024, (base, after)
    assert statuses.count(429) >= 60, statuses
    assert statuses.count(408) >= 20, statuses
    assert set(statuses) <= {408, 429}, results
    assert refused(gw, "overloaded", "ingest_dropped_total") >= statuses.count(429)
    assert refused(gw, "request_timeout") >= statuses.count(408)
    assert lines <= 5, gw.log_tail()
    # The ordinary client shares the budget: the stalled bodies are evicted for it, so it is served
    # (a 429 only when it came just as fresh stalled bodies took the share: they are evicted after a
    # second of silence, and it waits a second), and never hangs.
    assert client.errors == [], client.summary()
    assert set(client.statuses) <= {202, 429}, client.summary()
    assert client.statuses[-1] == 202 and client.statuses.count(202) >= 10, client.summary()
    assert client.statuses.count(202) >= 0.9 * len(client.statuses), client.summary()
    assert max(client.latencies) < 3, client.summary()


def test_stalled_bodies_are_answered_at_the_header_timeout_not_the_idle_timeout(start_gateway, make_topic):
    # Bodies sent fast and then stalled keep a high average rate for hours: with the default 60 s idle
    # timeout they held the inbound share, and every other body got 429, for a whole minute. A pause in a
    # body as long as --http-header-timeout now ends it with 408 and gives its bytes back.
    gw = start_gateway(f"--kafka-topic={make_topic('hostile')}", *BUDGET, "--http-overload-wait=1s",
                       "--http-header-timeout=2s", "--http-idle-timeout=60s")
    warm_up(gw)
    n, size = 40, MiB - 1
    head = (f"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/cloudevents+json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    results = [None] * n
    threads = [threading.Thread(target=stall_body, args=(gw.http_addr, head, size - 1, results, i))
               for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    took = time.monotonic() - t0
    statuses = [r[0] for r in results]
    print(f"\nHOSTILE HTTP stalled bodies, long idle timeout: {n}, 2 s header timeout, 60 s idle timeout: answers "
          f"{dict((s, statuses.count(s)) for s in set(statuses))} in {took:.1f}s")
    assert set(statuses) <= {408, 429}, results
    assert statuses.count(408) >= 20, statuses
    assert took < 15, took
    assert gw.metric("ingest_memory_used_bytes", share="inbound") == 0
    # And the share is free again for ordinary bodies.
    r = requests.post(gw.events_url, data=event_body(), timeout=10,
                      headers={"Content-Type": "application/cloudevents+json"})
    assert r.status_code == 202, r.text


def test_unauthenticated_bodies_are_not_read(start_gateway, make_topic):
    # With --auth-token, 120 bodies without Authorization once held 1.03 GB, and 100 Continue was
    # answered before auth. Now: 401 at the headers, no 100 Continue, the body unread, the connection closed.
    gw = start_gateway(f"--kafka-topic={make_topic('hostile')}", *BUDGET, "--auth-token=tok")
    pid = gw.proc.pid
    r = requests.post(gw.events_url, data=event_body(), timeout=10,
                      headers={"Content-Type": "application/cloudevents+json", "Authorization": "Bearer tok"})
    assert r.status_code == 202, r.text
    base = rss_kib(pid)
    before = refused(gw, "unauthorized")
    client = OrdinaryClient(gw.http_addr, token="tok")
    client.start()
    size = MiB - 1
    socks, peak = [], 0
    try:
        for i in range(120):
            s = connect(gw.http_addr)
            socks.append(s)
            expect = "Expect: 100-continue\r\n" if i % 2 == 0 else ""
            s.sendall((f"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/cloudevents+json\r\n"
                       f"{expect}Content-Length: {size}\r\n\r\n").encode())
            if not expect:
                s.settimeout(0.2)
                try:
                    s.sendall(b"x" * (256 * 1024))  # what fits in the socket buffers, unread by the gateway
                except (socket.timeout, OSError):
                    pass
        for s in socks:
            status, hdrs, body = read_response(s)
            assert status == 401, (status, body)  # and so not "100 Continue" first
            assert b"unauthorized" in body
            assert hdrs.get("connection") == "close"
            assert closed_by_peer(s)
            peak = max(peak, rss_kib(pid))
        # Two Authorization headers: refused, not one of them picked.
        status, _, body = raw_exchange(
            gw.http_addr, b"POST /v1/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer tok\r\n"
            b"Authorization: Bearer other\r\nContent-Length: 2\r\n\r\n{}")
        assert status == 400 and b"more than one Authorization" in body, body
    finally:
        client.stop()
        close_all(socks)
    print(f"\nHOSTILE HTTP bodies without auth: 120 of them: RSS {base} KiB -> peak {peak} KiB; {client.summary()}")
    assert refused(gw, "unauthorized") - before == 120
    assert peak - base <= 16 * 1024, (base, peak)
    assert client.errors == [] and set(client.statuses) == {202}, client.summary()


# ---- 3. the admin port -----------------------------------------------------------------------------------


def test_admin_port_bounds(start_gateway, make_topic):
    # A 2 GiB body or an endless header line on the admin port once grew RSS to 2.42 GB with its thread
    # at 100% CPU. Now: 413 / 400 at once; and idle connections cannot lock the probes out.
    gw = start_gateway(f"--kafka-topic={make_topic('hostile')}", *BUDGET)
    pid = gw.proc.pid
    base, fds0 = warm_up(gw), fd_count(pid)
    admin = gw.admin_url[len("http://"):]
    t0 = time.monotonic()
    status, _, _ = raw_exchange(admin, b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 2147483648\r\n\r\n"
                                + b"x" * 65536)
    assert status == 413
    with connect(admin) as s:
        s.sendall(b"GET /" + b"a" * (256 * 1024))
        status, _, _ = read_response(s)
        assert status in (0, 400, 414, 431), status
    with connect(admin) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Long: " + b"a" * (256 * 1024))
        status, _, _ = read_response(s)
        assert status in (0, 400, 431), status
    refused_s = time.monotonic() - t0
    socks = []
    try:
        for _ in range(300):
            socks.append(connect(admin))
        time.sleep(0.5)
        probes = [probe_ms(gw.admin_url) for _ in range(10)]
        fds = fd_count(pid)
        peak = rss_kib(pid)
    finally:
        close_all(socks)
    print(f"\nHOSTILE admin port: oversize body and header refused in {refused_s:.2f}s; 300 idle connections: gateway fds "
          f"{fds0} -> {fds}, probes max {max(probes):.1f} ms; RSS {base} -> {peak} KiB")
    assert refused_s < 3
    assert fds <= fds0 + 64 + 8, (fds0, fds)
    assert max(probes) < 500, probes
    assert peak - base <= 16 * 1024, (base, peak)


# ---- 4. slowloris and slow bodies ------------------------------------------------------------------------


def test_slow_requests_get_408(start_gateway, make_topic):
    # One byte every 2 s on a 3 s idle timeout once kept every connection open for ever (the idle timer
    # restarts on each byte) and stalled requests were closed with no answer.
    gw = start_gateway(f"--kafka-topic={make_topic('hostile')}", *BUDGET, "--http-idle-timeout=3s",
                       "--http-header-timeout=2s", "--http-min-body-rate=1KiB")
    warm_up(gw)
    before = refused(gw, "request_timeout")
    lines0 = log_lines(gw)
    client = OrdinaryClient(gw.http_addr)
    client.start()
    head = b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/cloudevents+json\r\n"
    n = 30
    socks = [connect(gw.http_addr) for _ in range(n)]
    answered = {}
    t0 = time.monotonic()
    try:
        # Headers a byte at a time, every 0.5 s: faster than the idle timeout, slower than the deadline.
        for k in range(12):
            for i, s in enumerate(socks):
                if i in answered:
                    continue
                if readable(s):
                    status, _, body = read_response(s, timeout=5)
                    answered[i] = (status, time.monotonic() - t0)
                    assert status == 408 and b"request_timeout" in body, body
                else:
                    s.sendall(head[k:k + 1])
            time.sleep(0.5)
        for i, s in enumerate(socks):
            if i not in answered:
                status, _, body = read_response(s, timeout=5)
                answered[i] = (status, time.monotonic() - t0)
                assert status == 408 and b"request_timeout" in body, body
        # After the answer the connection is closed within the 2 s linger, bytes or not.
        t1 = time.monotonic()
        for s in socks:
            assert closed_by_peer(s, timeout=5)
        linger_s = time.monotonic() - t1
        # A body at 100 bytes a second, under --http-min-body-rate=1KiB: 408 after the grace (2 s).
        with connect(gw.http_addr) as s:
            s.sendall(head + b"Content-Length: 100000\r\n\r\n")
            t1 = time.monotonic()
            status = None
            for _ in range(80):
                try:
                    s.sendall(b"x" * 25)
                except OSError:
                    break
                s.settimeout(0.25)
                try:
                    data = s.recv(65536)
                    status = int(data.split()[1]) if data else 0
                    break
                except socket.timeout:
                    pass
            body_s = time.monotonic() - t1
    finally:
        client.stop()
        close_all(socks)
    slowest = max(t for _, t in answered.values())
    print(f"\nHOSTILE HTTP slowloris: {n} connections answered 408 by {slowest:.2f}s, all closed {linger_s:.2f}s later; slow "
          f"body answered {status} after {body_s:.2f}s; {client.summary()}")
    assert all(st == 408 for st, _ in answered.values()), answered
    assert slowest < 4.5, answered
    assert status == 408 and 2 <= body_s < 5, (status, body_s)
    assert refused(gw, "request_timeout") - before == n + 1
    assert log_lines(gw) - lines0 <= 5, gw.log_tail()
    assert client.errors == [] and set(client.statuses) == {202}, client.summary()
    assert client.p99() < 0.5, client.summary()


def test_idle_keep_alive_still_closed_silently(start_gateway, make_topic):
    gw = start_gateway(f"--kafka-topic={make_topic('hostile')}", *BUDGET, "--http-idle-timeout=1s")
    with connect(gw.http_addr) as s:
        s.sendall(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, _ = read_response(s)
        assert status == 404
        t0 = time.monotonic()
        s.settimeout(5)
        assert s.recv(65536) == b""  # closed, and no 408: no request was under way
        assert 0.8 < time.monotonic() - t0 < 3


# ---- 5. strict HTTP/1.1 ----------------------------------------------------------------------------------


LENIENT = [
    (b"POST /v1/events HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400, b"colon"),
    (b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length : 2\r\n\r\n{}", 400, b"colon"),
    (b"POST /v1/events HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n Content-Length: 2\r\n\r\n{}", 400, b"obs-fold"),
    (b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n 2\r\n\r\n{}", 400, b"obs-fold"),
    (b"POST /v1/events HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n0\r\n\r\n", 400,
     b"obs-fold"),
    (b"POST /v1/events HTTP/1.1\nHost: t\nContent-Length: 2\n\n{}", 400, b"bare LF"),
    (b"GET /v1/events HTTP/1.1\r\nHost: t\nX: y\r\n\r\n", 400, b"bare LF"),
    (b"GET /v1/events HTTP/1.1\r\nHost: t\r\nX Y: z\r\n\r\n", 400, b"colon"),
    (b"GET /v1/events HTTP/1.1\r\nHost: t\r\nX\x01Y: z\r\n\r\n", 400, b"token"),
    (b"GET /v1/events HTTP/1.1\r\nX: y\r\n\r\n", 400, b"Host"),
    (b"GET /v1/events HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, b"Host"),
    (b"GET /v1/events HTTP/2.0\r\nHost: t\r\n\r\n", 505, b"HTTP/2.0"),
    (b"GET /v1/events HTTP/9.9\r\nHost: t\r\n\r\n", 505, b"HTTP/9.9"),
]


@pytest.fixture(scope="module")
def strict_gw(start_gateway, make_topic):
    g = start_gateway(f"--kafka-topic={make_topic('hostile')}", *BUDGET)
    yield g
    g.stop()


@pytest.mark.parametrize("raw,status,why", LENIENT, ids=[
    "te-space-colon", "cl-space-colon", "obs-fold-line", "obs-fold-cl", "obs-fold-te", "bare-lf",
    "bare-lf-one-line", "space-in-name", "ctl-in-name", "no-host", "two-hosts", "http-2.0", "http-9.9"])
def test_lenient_http_refused(strict_gw, raw, status, why):
    with connect(strict_gw.http_addr) as s:
        s.sendall(raw)
        got, hdrs, body = read_response(s)
        assert (got, why in body) == (status, True), body
        assert b'"code":"bad_request"' in body
        assert hdrs.get("connection") == "close"
        assert closed_by_peer(s)


def test_strict_http_still_serves_ordinary_clients(strict_gw):
    import subprocess

    before = refused(strict_gw, "bad_request")
    # Pipelined requests, one send.
    one = (b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/cloudevents+json\r\n"
           b"Content-Length: %d\r\n\r\n")
    bodies = [event_body() for _ in range(3)]
    with connect(strict_gw.http_addr) as s:
        s.sendall(b"\r\n" + b"".join(one % len(b) + b for b in bodies))
        for _ in bodies:
            status, _, body = read_response(s)
            assert status == 202, body
    # HTTP/1.0 without Host, chunked, and python requests.
    status, _, _ = raw_exchange(strict_gw.http_addr, b"POST /v1/events HTTP/1.0\r\nContent-Type: "
                                b"application/cloudevents+json\r\nContent-Length: %d\r\n\r\n" % len(bodies[0])
                                + bodies[0])
    assert status == 202
    body = event_body()
    status, _, _ = raw_exchange(strict_gw.http_addr, b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: "
                                b"application/cloudevents+json\r\nTransfer-Encoding: chunked\r\n\r\n"
                                b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert status == 202
    r = requests.post(strict_gw.events_url, data=event_body(), timeout=10,
                      headers={"Content-Type": "application/cloudevents+json"})
    assert r.status_code == 202, r.text
    # curl, with its Expect: 100-continue on a large body.
    big = b'{"specversion":"1.0","id":"big","source":"/it","type":"t","data":"' + b"a" * 200000 + b'"}'
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                        "Content-Type: application/cloudevents+json", "--data-binary", "@-", strict_gw.events_url],
                       input=big, capture_output=True, timeout=20)
    assert r.stdout == b"202", (r.stdout, r.stderr)
    assert refused(strict_gw, "bad_request") == before
