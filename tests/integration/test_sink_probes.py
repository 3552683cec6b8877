"""The sink's probes while Postgres hangs: /healthz never waits, /readyz says so, nothing is lost.

A small TCP proxy stands between a private sink and the stack's Postgres.
Frozen, it keeps every connection open and forwards no byte either way (a
Postgres that hangs, a network that black-holes): the sink's writer is then
stuck in a query that never ends, and whatever asks Postgres inline would
be stuck too.
"""

import socket
import threading
import time
import urllib.parse

import pytest
import requests

from test_sink import Envelopes, Stream, assert_exactly_once, caught_up, row_count, wait_until


@pytest.fixture(scope="module")
def envelopes(pb):
    return Envelopes(pb)


class FreezingProxy:
    """Forwards TCP connections to upstream until freeze(); resumes on unfreeze().

    Frozen, connections stay open (new ones are accepted too) and bytes read
    from either side are held, not forwarded, until unfreeze().
    """

    def __init__(self, upstream):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.addr = self.listener.getsockname()[:2]
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.lock = threading.Lock()
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self):
        self.flowing.clear()

    def unfreeze(self):
        self.flowing.set()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.closed:
                    client.close()
                    server.close()
                    return
                self.socks += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait()
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the other side went, or close()

    def close(self):
        with self.lock:
            self.closed = True
            socks, self.socks = self.socks, []
        self.listener.close()
        self.flowing.set()
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


def through(dsn, addr):
    """dsn with its host and port replaced by addr."""
    u = urllib.parse.urlsplit(dsn)
    userinfo = u.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{addr[0]}:{addr[1]}" if userinfo else f"{addr[0]}:{addr[1]}"
    return urllib.parse.urlunsplit(u._replace(netloc=netloc))


PROBE_TIMEOUT = 0.5  # a probe that waits longer waited on something: no probe may


def probe(url, since):
    """(seconds since `since` at the start, status or None when no answer came in PROBE_TIMEOUT, body, seconds taken)."""
    t0 = time.monotonic()
    try:
        r = requests.get(url, timeout=PROBE_TIMEOUT)
        status, body = r.status_code, r.text.strip()
    except requests.exceptions.RequestException as e:
        status, body = None, type(e).__name__
    return round(t0 - since, 2), status, body, round(time.monotonic() - t0, 3)


def test_frozen_postgres_leaves_healthz_at_once_readyz_503_and_every_event_once(
        envelopes, start_sink, make_topic, pg_schema, kafka_bootstrap):
    topic = make_topic("sink-probes", partitions=3)
    _, dsn = pg_schema
    u = urllib.parse.urlsplit(dsn)
    proxy = FreezingProxy((u.hostname, u.port or 5432))
    sink = None
    try:
        sink = start_sink(f"--kafka-topic={topic}", f"--pg-dsn={through(dsn, proxy.addr)}",
                          "--pg-retry-max=1s")
        assert sink.admin_url, "this sink build has no admin port"
        wait_until("/readyz 200 before the freeze",
                   lambda: requests.get(sink.admin_url + "/readyz", timeout=2).status_code == 200, 30,
                   sinks=[sink])
        # 40,000 events over about sixteen seconds: they still flow when Postgres freezes and while it is frozen.
        stream = Stream(kafka_bootstrap, topic, envelopes, 40_000, 250, 0.1).start()
        wait_until("the first rows", lambda: row_count(dsn) > 0, 30, sinks=[sink])

        proxy.freeze()
        frozen_at = time.monotonic()
        assert stream.running(), "the stream ended before the freeze: make it longer"
        health, ready = [], []
        while time.monotonic() - frozen_at < 6:
            health.append(probe(sink.admin_url + "/healthz", frozen_at))
            ready.append(probe(sink.admin_url + "/readyz", frozen_at))
            time.sleep(0.05)
        assert sink.alive(), sink.log_tail()
        late = [h for h in health if h[1] != 200 or h[3] > PROBE_TIMEOUT]
        assert not late, (f"/healthz must answer 200 within {PROBE_TIMEOUT} s on every probe, Postgres frozen or "
                          f"not; {len(late)} of {len(health)} did not (at, status, body, took): {late[:5]}")
        assert len(health) >= 10, health
        late = [r for r in ready if r[1] is None or r[3] > PROBE_TIMEOUT]
        assert not late, f"/readyz waited on something: {len(late)} of {len(ready)} probes {late[:5]}"
        unready = [i for i, r in enumerate(ready) if r[1] == 503]
        assert unready, f"/readyz stayed 200 for 6 s with Postgres frozen: {ready[-3:]}"
        first = ready[unready[0]]
        assert first[0] <= 3, f"/readyz said 503 only {first[0]} s after the freeze: {first}"
        assert "Postgres" in first[2], first
        assert all(r[1] == 200 for r in ready[:unready[0]]), ready[:unready[0]]
        # Once it said so, it keeps saying so while Postgres stays frozen.
        assert all(r[1] == 503 for r in ready[unready[0]:]), ready[unready[0]:]

        proxy.unfreeze()
        wait_until("/readyz 200 after the freeze",
                   lambda: requests.get(sink.admin_url + "/readyz", timeout=2).status_code == 200, 30,
                   sinks=[sink])
        stream.join()
        wait_until("40,000 rows and the end offsets stored",
                   lambda: row_count(dsn) == 40_000 and caught_up(dsn, kafka_bootstrap, topic), 90,
                   sinks=[sink], interval=0.5)
        assert_exactly_once(dsn, kafka_bootstrap, topic, stream.source, 40_000)
        assert sink.stop() == 0, sink.log_tail()
    finally:
        proxy.unfreeze()
        if sink:
            sink.stop()
        proxy.close()
