"""The memory budget (--memory-budget) holds against clients that would grow the gateway.

Each test runs one attack from the hostile-clients catalogue against a
gateway of its own with a small budget, samples its resident set the whole
time, and checks it stays under the budget plus a fixed margin, that what
was acknowledged reached Kafka, and that /metrics says what was refused.

The margin: what the process holds besides the budget's shares (threads'
stacks and arenas, librdkafka's and the gRPC core's own state, the
allocator's slack), measured here at 40-70 MiB over the idle baseline with
a 64 MiB budget; the bound is baseline + budget + 96 MiB. Before the budget,
the same attacks took the gateway to 1.1 GB (large events) and 1.3 GB (acks
owed).
"""
import json
import os
import pathlib
import select
import socket
import struct
import subprocess
import threading
import time
import uuid

import pytest
import requests

from procstat import RssPeak, rss_bytes

BUDGET_MIB = 64
MARGIN_MIB = 96


def mib(n):
    return n / (1 << 20)


def report(attack, base, rss, bound, **figures):
    """One line of figures per attack, for perf/hostile/run's before-and-after table (pytest -s shows it)."""
    extra = "".join(f" {k}={v}" for k, v in figures.items())
    print(f"\nHOSTILE {attack}: base_mib={mib(base):.0f} rss_mib={mib(rss):.0f} bound_mib={mib(bound):.0f}{extra}")


def small_gateway(start_gateway, gateway_help, topic, *flags):
    # A build without the budget (INGEST_TEST_GATEWAY_BIN, for the before-and-after figures) runs without it.
    budget = [f"--memory-budget={BUDGET_MIB}MiB"] if "--memory-budget" in gateway_help else []
    return start_gateway(f"--kafka-topic={topic}", *budget, "--max-request-bytes=2MiB", "--max-event-bytes=1MiB",
                         *flags)


def kafka_ctl(*args):
    subprocess.run([str(pathlib.Path(__file__).parent / "kafka_ctl"), *args], check=True, timeout=60)


def warm_up(g):
    s = requests.Session()
    for i in range(20):
        r = s.post(g.events_url, timeout=10, headers={"Content-Type": "application/cloudevents+json"},
                   data=json.dumps({"source": "/it/budget", "type": "warm", "id": f"warm-{i}"}))
        assert r.status_code == 200, r.text
    time.sleep(0.5)
    return rss_bytes(g.proc.pid)


def test_large_events_fast_stay_within_the_budget_and_every_acknowledged_one_arrives(
        start_gateway, gateway_help, make_topic, topic_reader):
    """~700 kB events from 4 clients as fast as they go, ack=accepted: librdkafka's buffer and the queue
    are bounded by their shares, the excess is refused 429 overloaded, and RSS falls back afterwards."""
    topic = make_topic("budget-big")
    # The broker throttles this gateway's producer to 8 MB/s (a quota, as an operator sets one; or a slow or
    # distant cluster), against ~60 MB/s sent: what Kafka cannot take yet piles up in the gateway.
    client_id = f"it-throttled-{uuid.uuid4().hex[:8]}"
    kafka_ctl("quota", client_id, str(8_000_000))
    g = small_gateway(start_gateway, gateway_help, topic, f"--kafka.client.id={client_id}")
    reader = topic_reader(topic)
    mark = reader.mark()
    base = warm_up(g)
    body = json.dumps({"source": "/it/budget", "type": "big", "datacontenttype": "text/plain",
                       "data": os.urandom(350_000).hex()})
    stop = time.monotonic() + 6
    counts = {"accepted": 0, "overloaded": 0}
    lock = threading.Lock()
    errors = []

    def client():
        s = requests.Session()
        try:
            while time.monotonic() < stop:
                r = s.post(g.events_url, params={"ack": "accepted"}, data=body, timeout=30,
                           headers={"Content-Type": "application/cloudevents+json"})
                with lock:
                    if r.status_code == 202:
                        counts["accepted"] += 1
                    elif r.status_code == 429:
                        assert r.json()["error"]["code"] == "overloaded", r.text
                        counts["overloaded"] += 1
                    else:
                        errors.append(f"{r.status_code}: {r.text[:200]}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    with RssPeak(g.proc.pid) as rss:
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:5]
    bound = base + (BUDGET_MIB + MARGIN_MIB) * (1 << 20)
    report("large events, Kafka throttled", base, rss.peak, bound, accepted=counts["accepted"],
           overloaded=counts["overloaded"])
    assert counts["accepted"] > 0 and counts["overloaded"] > 0
    assert rss.peak < bound, f"RSS peaked at {mib(rss.peak):.0f} MiB over a bound of {mib(bound):.0f} MiB"

    # Every event answered 202 is in Kafka, exactly once (the warm-up's 20 too), once the throttled backlog
    # has drained.
    kafka_ctl("quota", client_id, "0")
    deadline = time.monotonic() + 60
    while reader.count_since(mark) < counts["accepted"] + 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert reader.count_since(mark) == counts["accepted"] + 20
    # The queue's byte share is given back as records go to librdkafka.
    assert g.metric("ingest_memory_used_bytes", share="queued") == 0
    # Freed memory goes back to the system: RSS falls back near the baseline once the burst is over.
    deadline = time.monotonic() + 20
    while rss_bytes(g.proc.pid) > base + 48 * (1 << 20) and time.monotonic() < deadline:
        time.sleep(0.5)
    after = rss_bytes(g.proc.pid)
    report("large events, after the burst", base, after, base + 48 * (1 << 20))
    assert after <= base + 48 * (1 << 20), f"RSS stayed at {mib(after):.0f} MiB after the burst"
    assert g.proc.poll() is None


# ---- gRPC: a client that never reads its acks --------------------------------------------------------

def grpc_frame(msg):
    return struct.pack(">BI", 0, len(msg)) + msg


def flush(sock, conn):
    out = conn.data_to_send()
    if out:
        sock.sendall(out)


def invalid_request(pb, seq, n):
    """A PublishRequest of n events without a type (6 B each): each refused, so its ack lists n errors (~36 B
    each: 360 kB for 10,000)."""
    r = pb.ingest_pb2.PublishRequest(seq=seq)
    for _ in range(n):
        r.events.add(source="/s")
    return r.SerializeToString()


def test_grpc_streams_that_never_read_their_acks_stay_within_the_budget(start_gateway, gateway_help, make_topic,
                                                                         pb):
    """Streams on connections whose window the client never opens (no WINDOW_UPDATE), each sending
    requests of 10,000 invalid events (60 kB asking for a 360 kB ack): the gateway stops reading
    them once they owe their share, and an ordinary client is still served meanwhile."""
    import grpc
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    topic = make_topic("budget-acks")
    g = small_gateway(start_gateway, gateway_help, topic)
    base = warm_up(g)
    host, port = g.addrs["--grpc-addr"].rsplit(":", 1)
    req = grpc_frame(invalid_request(pb, 1, 10_000))
    n_conns, n_streams, per_stream = 5, 20, 32
    body = req * per_stream
    conns = []
    sent = 0

    with RssPeak(g.proc.pid) as rss:
        for _ in range(n_conns):
            sock = socket.create_connection((host, int(port)), timeout=10)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            # Our receive window stays at the default 64 KiB and is never opened again.
            conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
            sock.sendall(conn.data_to_send())
            ids = []
            for _ in range(n_streams):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "gw"),
                                        (":path", "/ingest.v1.Ingest/PublishStream"),
                                        ("content-type", "application/grpc"), ("te", "trailers")])
                ids.append(sid)
            sock.sendall(conn.data_to_send())
            conns.append((sock, conn, ids, {sid: len(body) for sid in ids}))
        # Send as much of each stream's requests as the gateway's windows let through, for 10 s.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(sum(left.values()) for _, _, _, left in conns):
            progressed = False
            for sock, conn, ids, left in conns:
                for sid in ids:
                    while left[sid]:
                        room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                        if room <= 0:
                            break
                        off = len(body) - left[sid]
                        chunk = body[off:off + min(room, left[sid])]
                        conn.send_data(sid, chunk)
                        left[sid] -= len(chunk)
                        sent += len(chunk)
                        progressed = True
                flush(sock, conn)
                data = sock.recv(1 << 20) if select.select([sock], [], [], 0.02)[0] else b""
                if data:
                    conn.receive_data(data)  # window updates from the gateway; what it sends is never acked
                    flush(sock, conn)
            if not progressed:
                time.sleep(0.05)
        # An ordinary client is served while all that is owed.
        with grpc.insecure_channel(g.addrs["--grpc-addr"]) as ch:
            stub = pb.ingest_pb2_grpc.IngestStub(ch)
            lat = []
            for i in range(20):
                t0 = time.monotonic()
                stub.Publish(pb.ingest_pb2.PublishRequest(events=[pb.cloudevent_pb2.CloudEvent(
                    source="/it/budget", type="ok", id=f"ok-{i}")]), timeout=10)
                lat.append(time.monotonic() - t0)
        peak_inbound = g.metric("ingest_memory_inbound_peak_bytes")
    for sock, _, _, _ in conns:
        sock.close()
    bound = base + (BUDGET_MIB + MARGIN_MIB) * (1 << 20)
    lat.sort()
    report("gRPC acks never read", base, rss.peak, bound, sent_mib=round(mib(sent)),
           inbound_peak_mib=round(mib(peak_inbound), 1), other_client_p99_ms=round(lat[-1] * 1000))
    assert sent > 0
    assert rss.peak < bound, f"RSS peaked at {mib(rss.peak):.0f} MiB over a bound of {mib(bound):.0f} MiB"
    # What was owed is given back once the connections are gone.
    deadline = time.monotonic() + 10
    while g.metric("ingest_memory_used_bytes", share="inbound") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert g.metric("ingest_memory_used_bytes", share="inbound") == 0
    assert g.proc.poll() is None


@pytest.mark.parametrize("budget", ["16MiB", "100MiB"])
def test_a_budget_too_small_for_the_request_limit_is_refused_at_start(gateway_help, budget):
    import subprocess

    from conftest import GATEWAY_BIN

    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    r = subprocess.run([str(GATEWAY_BIN), f"--memory-budget={budget}", "--max-request-bytes=8MiB",
                        "--kafka-bootstrap=127.0.0.1:1"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "--memory-budget" in r.stderr and "at least 134217728" in r.stderr, r.stderr
