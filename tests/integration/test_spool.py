"""The gateway's spool (--spool=always) against the real broker.

Kafka is taken away from a private gateway without stopping the shared
broker: it is started with a --kafka-bootstrap where nothing listens, and
started again with the real one; the spool directory carries the records
across a kill -9.
"""
import json
import os
import signal
import subprocess
import time
import uuid

import pytest
import requests

from conftest import GATEWAY_BIN, free_port


def closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def nowhere():
    return f"--kafka-bootstrap=127.0.0.1:{closed_port()}"


def batch(ids, data=None):
    evs = [{"id": i, "source": "/it/spool", "type": "com.example.spool", "specversion": "1.0"} for i in ids]
    if data is not None:
        for e in evs:
            e["data"] = data
    return json.dumps(evs).encode()


def post(gw, ids, ack, data=None, timeout=30):
    return requests.post(gw.events_url, data=batch(ids, data), params={"ack": ack},
                         headers={"Content-Type": "application/cloudevents-batch+json"}, timeout=timeout)


@pytest.fixture
def spool_topic(make_topic, kafka_bootstrap):
    """A fresh topic and its dead-letter topic, <topic>.dlq (the broker makes no topic by itself)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = make_topic("spool")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic + ".dlq", num_partitions=1, replication_factor=1)],
                        operation_timeout=30)[topic + ".dlq"].result(timeout=30)
    yield topic
    admin.delete_topics([topic + ".dlq"], operation_timeout=30)


def kill9(gw):
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait(timeout=10)


def wait_metric(gw, name, want, timeout=60, **labels):
    deadline = time.monotonic() + timeout
    while (got := gw.metric(name, **labels)) != want:
        assert time.monotonic() < deadline, f"{name} is {got}, not {want}, after {timeout}s:\n{gw.log_tail()}"
        time.sleep(0.2)


def read_ids(reader, mark, n, timeout=40):
    """The ids of every record since mark, once at least n have come (and a moment more, for duplicates)."""
    recs = reader.read_since(mark, n, timeout=timeout)
    time.sleep(1)
    recs = reader.read_since(mark, reader.count_since(mark), timeout=timeout)
    return [r.event.id for r in recs], recs


def test_persisted_without_kafka_survives_kill9(start_gateway, spool_topic, topic_reader, tmp_path, pb):
    spool = tmp_path / "spool"
    flags = [f"--kafka-topic={spool_topic}", "--spool=always", f"--spool-dir={spool}", "--ack-timeout=1s"]
    gw = start_gateway(*flags, nowhere())
    persisted = []
    for _ in range(5):
        ids = [f"it-spool-{uuid.uuid4()}" for _ in range(20)]
        r = post(gw, ids, "persisted")
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 20, "ids": ids}
        persisted += ids
    # The header says it too.
    ids = [f"it-spool-{uuid.uuid4()}"]
    r = requests.post(gw.events_url, data=batch(ids), timeout=30,
                      headers={"Content-Type": "application/cloudevents-batch+json", "Ingest-Ack": "persisted"})
    assert r.status_code == 200, r.text
    persisted += ids
    # gRPC's ACK_LEVEL_PERSISTED.
    import grpc

    with grpc.insecure_channel(gw.addrs["--grpc-addr"]) as ch:
        stub = pb.ingest_pb2_grpc.IngestStub(ch)
        ids = [f"it-spool-g-{uuid.uuid4()}" for _ in range(3)]
        evs = [pb.cloudevent_pb2.CloudEvent(id=i, source="/it/spool", type="com.example.spool", spec_version="1.0")
               for i in ids]
        resp = stub.Publish(pb.ingest_pb2.PublishRequest(seq=7, events=evs, ack=pb.ingest_pb2.ACK_LEVEL_PERSISTED),
                            timeout=30)
        assert resp.seq == 7 and resp.accepted == 3 and list(resp.ids) == ids and not resp.errors
    persisted += ids
    # committed still waits for Kafka, which is not there: it times out as without a spool.
    late = [f"it-spool-late-{uuid.uuid4()}"]
    r = post(gw, late, "committed")
    assert r.status_code == 503 and r.json()["error"]["code"] == "ack_timeout", r.text
    assert gw.metric("ingest_spool_records") == len(persisted) + 1
    assert gw.metric("ingest_spool_fsync_seconds_count") >= 1
    kill9(gw)

    reader = topic_reader(spool_topic)
    mark = reader.mark()
    gw = start_gateway(*flags)
    want = set(persisted) | set(late)
    got, _ = read_ids(reader, mark, len(want))
    # Every persisted event once, and the committed one too (it was in the spool): nothing else, no twice.
    assert sorted(got) == sorted(want)
    wait_metric(gw, "ingest_spool_records", 0)
    assert gw.metric("ingest_spool_replayed_total") == len(want)
    assert gw.metric("ingest_spool_replay_delivered_total") == len(want)
    # New traffic goes through the spool too, and is acked by Kafka.
    ids = [f"it-spool-new-{uuid.uuid4()}" for _ in range(3)]
    assert post(gw, ids, "committed").status_code == 200
    wait_metric(gw, "ingest_spool_records", 0)
    assert gw.stop() == 0


def test_persisted_without_a_spool_is_committed(start_gateway, spool_topic, topic_reader):
    gw = start_gateway(f"--kafka-topic={spool_topic}", "--default-ack=persisted")
    reader = topic_reader(spool_topic)
    mark = reader.mark()
    ids = [f"it-spool-n-{uuid.uuid4()}" for _ in range(2)]
    r = requests.post(gw.events_url, data=batch(ids), timeout=30,
                      headers={"Content-Type": "application/cloudevents-batch+json"})
    assert r.status_code == 200, r.text
    # In Kafka before the answer, as committed.
    assert reader.count_since(mark) == 2
    assert "ingest_spool_bytes" not in requests.get(gw.admin_url + "/metrics", timeout=5).text


def test_a_locked_spool_is_one_line_and_exit_2(start_gateway, spool_topic, tmp_path):
    spool = tmp_path / "spool"
    first = start_gateway(f"--kafka-topic={spool_topic}", "--spool=always", f"--spool-dir={spool}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    args = [str(GATEWAY_BIN), f"--kafka-topic={spool_topic}", "--spool=always", f"--spool-dir={spool}", nowhere()]
    args += [f"{f}=127.0.0.1:{free_port()}" for f in ("--http-addr", "--udp-addr", "--grpc-addr", "--admin-addr")]
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--spool-dir" in lines[0] and str(first.proc.pid) in lines[0], r.stderr
    # A directory whose parent is missing: the same, at start.
    args[3] = f"--spool-dir={tmp_path / 'missing' / 'spool'}"
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (r.returncode, r.stderr)
    # --spool=always without a directory.
    r = subprocess.run(args[:3] + args[4:], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--spool-dir" in r.stderr, (r.returncode, r.stderr)
    assert first.proc.poll() is None


def test_a_corrupt_segment_is_dead_lettered_and_the_rest_replayed(start_gateway, spool_topic, topic_reader,
                                                                  kafka_bootstrap, tmp_path):
    spool = tmp_path / "spool"
    # 1 MiB: 64 KiB segments, so 300 events of ~1 KiB fill several.
    flags = [f"--kafka-topic={spool_topic}", "--spool=always", f"--spool-dir={spool}", "--spool-max-bytes=1MiB"]
    gw = start_gateway(*flags, nowhere())
    sent = []
    for _ in range(15):
        ids = [f"it-spool-c-{uuid.uuid4()}" for _ in range(20)]
        assert post(gw, ids, "persisted", data="x" * 900).status_code == 200
        sent += ids
    kill9(gw)
    segs = sorted(spool.glob("*.seg"))
    assert len(segs) >= 3, segs
    # Flip an 8-aligned run of 8 bytes in the middle of the first (closed) segment: one frame damaged.
    seg = segs[0]
    raw = bytearray(seg.read_bytes())
    at = (len(raw) // 2) & ~7
    raw[at:at + 8] = bytes(b ^ 0xA5 for b in raw[at:at + 8])
    seg.write_bytes(bytes(raw))

    reader = topic_reader(spool_topic)
    dlq = topic_reader(spool_topic + ".dlq")
    mark, dmark = reader.mark(), dlq.mark()
    gw = start_gateway(*flags)
    got, _ = read_ids(reader, mark, len(sent) - 1)
    assert len(got) == len(set(got)) == len(sent) - 1 and set(got) < set(sent), (len(got), len(sent))
    wait_metric(gw, "ingest_spool_records", 0)
    assert gw.metric("ingest_spool_corrupt_records_total") == 1
    assert gw.metric("ingest_spool_dead_letters_total", result="sent") == 1
    # A dead letter holds the damaged bytes, not an Envelope: read raw.
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"it-{uuid.uuid4().hex}",
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(spool_topic + ".dlq", 0, dmark[0])])
        msg = None
        deadline = time.monotonic() + 20
        while msg is None or msg.error():
            assert time.monotonic() < deadline, "no dead letter"
            msg = c.poll(0.5)
        headers = dict(msg.headers())
        why = headers["ingest_error"].decode()
        assert why.startswith("spool: ") and seg.name in why and "offset " in why, why
        assert headers["ingest_spool_segment"].decode() == seg.name
        assert len(msg.value()) > 0
    finally:
        c.close()
    assert gw.stop() == 0


def test_a_full_spool_refuses_as_overloaded(start_gateway, spool_topic, tmp_path):
    gw = start_gateway(f"--kafka-topic={spool_topic}", "--spool=always", "--spool-max-bytes=64KiB",
                       f"--spool-dir={tmp_path / 'spool'}", nowhere())
    statuses = []
    for _ in range(100):
        r = post(gw, [f"it-spool-f-{uuid.uuid4()}" for _ in range(10)], "accepted", data="y" * 900)
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
        assert r.status_code == 202, r.text
    assert statuses[-1] == 429, statuses
    err = r.json()["error"]
    assert err["code"] == "overloaded" and "spool is full" in err["message"], err
    assert r.headers.get("Retry-After", "").isdigit()
    assert gw.metric("ingest_dropped_total", protocol="http", reason="overloaded") == 1
    assert gw.metric("ingest_spool_bytes") <= 64 * 1024
    assert gw.proc.poll() is None
    assert requests.get(gw.admin_url + "/healthz", timeout=5).status_code == 200


def test_a_write_error_keeps_the_gateway_up_not_ready_and_refusing(start_gateway, spool_topic, tmp_path):
    # A file size limit under the segment size: the first segment's write past it fails (EFBIG).
    gw = start_gateway(f"--kafka-topic={spool_topic}", "--spool=always", "--spool-max-bytes=1MiB",
                       f"--spool-dir={tmp_path / 'spool'}", nowhere(), "--ack-timeout=2s",
                       wrap=("prlimit", "--fsize=40000", "--"))
    statuses = []
    for _ in range(60):
        r = post(gw, [f"it-spool-w-{uuid.uuid4()}" for _ in range(10)], "persisted", data="z" * 900)
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
        # Durable, or caught by the failed write (its wait ends with the ack timeout: a retry is safe).
        assert r.status_code in (200, 503), r.text
    assert statuses[-1] == 429 and 200 in statuses, statuses
    err = r.json()["error"]
    assert err["code"] == "overloaded" and "spool cannot be written" in err["message"], err
    r = requests.get(gw.admin_url + "/readyz", timeout=5)
    assert r.status_code == 503 and "the spool cannot be written: File too large" in r.text, r.text
    assert requests.get(gw.admin_url + "/healthz", timeout=5).status_code == 200
    assert gw.metric("ingest_spool_healthy") == 0
    assert gw.proc.poll() is None


def test_the_spool_empties_as_kafka_acknowledges(start_gateway, spool_topic, tmp_path):
    """More records than the spool holds go through it: acked, their segments go (an ack lost would leave
    them, to be sent twice at the next start; test_spooler.c's early-ack test is the race's own)."""
    from concurrent.futures import ThreadPoolExecutor

    gw = start_gateway(f"--kafka-topic={spool_topic}", "--spool=always", f"--spool-dir={tmp_path / 'spool'}",
                       "--spool-max-bytes=4MiB")

    def client(_):
        with requests.Session() as s:
            for _ in range(15):
                ids = [f"it-spool-r-{uuid.uuid4()}" for _ in range(100)]
                r = s.post(gw.events_url, data=batch(ids, data="r" * 200), params={"ack": "committed"},
                           headers={"Content-Type": "application/cloudevents-batch+json"}, timeout=30)
                assert r.status_code == 200, r.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(8)))
    # 12,000 records, about 4 MiB through a 4 MiB spool: its segments had to go as they were acked.
    wait_metric(gw, "ingest_spool_records", 0, timeout=30)
    assert gw.metric("ingest_spool_segments") <= 2
    assert gw.metric("ingest_dropped_total", protocol="http", reason="overloaded") == 0


def test_a_stop_without_kafka_leaves_the_rest_to_the_spool(start_gateway, spool_topic, topic_reader, tmp_path):
    """SIGTERM with Kafka away: every accepted record is durable in the spool, so the gateway does not wait
    out --shutdown-timeout for deliveries that cannot happen; the next start sends each record once."""
    import threading

    spool = tmp_path / "spool"
    flags = [f"--kafka-topic={spool_topic}", "--spool=always", f"--spool-dir={spool}"]
    gw = start_gateway(*flags, nowhere(), "--shutdown-timeout=30s", "--ack-timeout=60s")
    sent = []
    for ack, code in (("accepted", 202), ("persisted", 200), ("accepted", 202), ("persisted", 200)):
        ids = [f"it-spool-s-{uuid.uuid4()}" for _ in range(25)]
        r = post(gw, ids, ack)
        assert r.status_code == code, r.text
        sent += ids
    # A committed request waits for Kafka: the stop answers it as at the deadline, without waiting for it.
    late = [f"it-spool-s-late-{uuid.uuid4()}"]
    answer = {}
    t = threading.Thread(target=lambda: answer.update(r=post(gw, late, "committed", timeout=60)))
    t.start()
    wait_metric(gw, "ingest_spool_records", len(sent) + 1)
    began = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    rc = gw.proc.wait(timeout=40)
    took = time.monotonic() - began
    t.join(timeout=10)
    assert rc == 0, gw.log_tail()
    # A behaviour bound, not a speed: without the early stop it takes the whole 30 s.
    assert took < 10, f"took {took:.1f}s:\n{gw.log_tail()}"
    r = answer["r"]
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down", r.text
    assert "left to the spool" in gw.log(), gw.log_tail()

    reader = topic_reader(spool_topic)
    mark = reader.mark()
    gw = start_gateway(*flags)
    want = set(sent) | set(late)
    got, _ = read_ids(reader, mark, len(want))
    # Each exactly once: nothing acked in the spool at the stop, nothing sent twice.
    assert sorted(got) == sorted(want)
    wait_metric(gw, "ingest_spool_records", 0)
    assert gw.metric("ingest_spool_replayed_total") == len(want)
    assert gw.stop() == 0
