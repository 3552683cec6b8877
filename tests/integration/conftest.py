"""Fixtures for the integration tests: where the running local stack listens.

The stack is the one deploy/local/up started (tests/run does that); its
endpoints come from the .local/env file it writes, or from the file named by
INGEST_LOCAL_ENV. A missing stack is a test failure, not a skip: these tests
exist to prove that the real parts work.
"""

import os
import pathlib
import re
import uuid

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def read_env_file(path):
    """Parses KEY=value lines (as written by deploy/local/up) into a dict."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=value: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def host_port(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port)


def dial_host(host):
    """The host to reach a listener on `host` from this machine: brackets off, a wildcard's loopback."""
    host = host.strip("[]")
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


# ---- The whole run: nothing the stack's gateway acknowledged is dead-lettered (issue 14) ----------------
#
# Every test that sends to the stack's gateway (the HTTP, UDP and gRPC catalogues, good and bad) sends
# through the stack's sink into Postgres; no test puts a record on the stack's events topic any other
# way. So any record on the stack's dead-letter topic during the run is an event the gateway
# acknowledged and the sink could not store: the run fails, naming why.

_dlq_watch = {}


def pytest_sessionstart(session):
    path = pathlib.Path(os.environ.get("INGEST_LOCAL_ENV", REPO_ROOT / ".local" / "env"))
    try:
        env = read_env_file(path)
        if env.get("INGEST_LOCAL_APPS", "1") != "1":
            return
        from stackcheck import watermarks

        _dlq_watch.update(env=env, mark=watermarks(env["INGEST_KAFKA_BOOTSTRAP"], env["INGEST_DLQ_TOPIC"]))
    except Exception as e:  # noqa: BLE001 - no stack: the tests say so themselves
        print(f"\n[conftest] not watching the dead-letter topic: {e!r}")


def pytest_sessionfinish(session, exitstatus):
    if not _dlq_watch:
        return
    from stackcheck import records_since, wait_sink_caught_up

    env = _dlq_watch["env"]
    bootstrap, dlq = env["INGEST_KAFKA_BOOTSTRAP"], env["INGEST_DLQ_TOPIC"]
    try:
        caught_up = wait_sink_caught_up(bootstrap, env["INGEST_TOPIC"], pg_query, env["INGEST_PG_DSN"])
        dead = records_since(bootstrap, dlq, _dlq_watch["mark"])
    except Exception as e:  # noqa: BLE001 - the stack went away: nothing to judge
        print(f"\n[conftest] could not read the dead-letter topic at the end: {e!r}")
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    why = sorted({h.get("ingest_error", b"?").decode(errors="replace") for _, h in dead})
    line = (f"the stack's dead-letter topic got {len(dead)} record(s) during this run"
            f"{'' if caught_up else ' (the sink had not caught up after 60 s)'}: {why[:5]}")
    if reporter:
        reporter.write_line(("FAILED: " if dead else "") + line)
    if dead:
        session.exitstatus = 1


@pytest.fixture(scope="session")
def stack_env():
    path = pathlib.Path(os.environ.get("INGEST_LOCAL_ENV", REPO_ROOT / ".local" / "env"))
    if not path.is_file():
        pytest.fail(f"{path} not found: start the stack first (deploy/local/up -d)", pytrace=False)
    return read_env_file(path)


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_env):
    return stack_env["INGEST_KAFKA_BOOTSTRAP"]


@pytest.fixture(scope="session")
def events_topic(stack_env):
    return stack_env["INGEST_TOPIC"]


@pytest.fixture(scope="session")
def dlq_topic(stack_env):
    return stack_env["INGEST_DLQ_TOPIC"]


@pytest.fixture(scope="session")
def pg_dsn(stack_env):
    return stack_env["INGEST_PG_DSN"]


@pytest.fixture(scope="session")
def apps_running(stack_env):
    """True when up also started gateway and sink (not INGEST_LOCAL_SKIP_APPS=1)."""
    return stack_env.get("INGEST_LOCAL_APPS", "1") == "1"


@pytest.fixture(scope="session")
def http_url(stack_env):
    """Base URL of the gateway's HTTP front end, e.g. http://127.0.0.1:8080."""
    return "http://" + stack_env["INGEST_HTTP_ADDR"]


@pytest.fixture(scope="session")
def udp_addr(stack_env):
    """(host, port) of the gateway's UDP front end."""
    return host_port(stack_env["INGEST_UDP_ADDR"])


@pytest.fixture(scope="session")
def grpc_target(stack_env):
    """host:port of the gateway's gRPC front end."""
    return stack_env["INGEST_GRPC_ADDR"]


@pytest.fixture(scope="session")
def gateway_admin_url(stack_env):
    return "http://" + stack_env["INGEST_GATEWAY_ADMIN_ADDR"]


@pytest.fixture(scope="session")
def sink_admin_url(stack_env):
    return "http://" + stack_env["INGEST_SINK_ADMIN_ADDR"]


@pytest.fixture
def unique_name(request):
    """A name no earlier run has used, for topics, groups and ids."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"it-{base}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def kafka_topic(kafka_bootstrap, unique_name):
    """A fresh single-partition topic, deleted after the test.

    The broker does not auto-create topics, so this also proves the admin API.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    futures = admin.create_topics([NewTopic(unique_name, num_partitions=1, replication_factor=1,
                                            config={"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES)})],
                                  operation_timeout=30, request_timeout=30)
    futures[unique_name].result(timeout=30)
    yield unique_name
    admin.delete_topics([unique_name], operation_timeout=30)[unique_name].result(timeout=30)


# ---- Envelopes -----------------------------------------------------------------

@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """The Python modules of proto/ingest/v1, generated afresh by grpc_tools.protoc.

    pb.envelope_pb2, pb.cloudevent_pb2, pb.ingest_pb2 and pb.ingest_pb2_grpc,
    so that tests decode what the gateway writes with the schema as it is in
    this checkout. The well-known types (Timestamp, Any) come with grpcio-tools.
    """
    import importlib
    import sys
    import types

    import grpc_tools
    from grpc_tools import protoc

    proto_root = REPO_ROOT / "proto"
    out = tmp_path_factory.mktemp("pb")
    files = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto_root}", f"-I{well_known}", f"--python_out={out}",
                      f"--grpc_python_out={out}", *files])
    assert rc == 0, f"protoc failed on {files}"
    sys.path.insert(0, str(out))
    return types.SimpleNamespace(**{name: importlib.import_module(f"ingest.v1.{name}") for name in
                                    ("cloudevent_pb2", "envelope_pb2", "ingest_pb2", "ingest_pb2_grpc")})


@pytest.fixture(scope="session")
def decode_envelope(pb):
    """bytes -> ingest.v1.Envelope; fails the test on bytes that do not decode."""
    def decode(value):
        env = pb.envelope_pb2.Envelope()
        env.ParseFromString(value)
        return env
    return decode


# ---- Kafka: topics and what arrives on them -----------------------------------

def _topic_max_message_bytes():
    """deploy/local/lib.sh's TOPIC_MAX_MESSAGE_BYTES: what the stack's topics take, so ours take the same."""
    m = re.search(r"^TOPIC_MAX_MESSAGE_BYTES=(\d+)$", (REPO_ROOT / "deploy" / "local" / "lib.sh").read_text(), re.M)
    assert m, "deploy/local/lib.sh sets no TOPIC_MAX_MESSAGE_BYTES"
    return int(m.group(1))


TOPIC_MAX_MESSAGE_BYTES = _topic_max_message_bytes()


@pytest.fixture(scope="session")
def make_topic(kafka_bootstrap):
    """make_topic(prefix, partitions=1, config=None) -> the name of a fresh topic, deleted at the session's end.

    Its max.message.bytes is deploy/local/up's (TOPIC_MAX_MESSAGE_BYTES) unless config sets it.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    made = []

    def make(prefix="it", partitions=1, config=None):
        name = f"it-{prefix}-{uuid.uuid4().hex[:12]}"
        config = {"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES), **(config or {})}
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                                config=config)],
                                      operation_timeout=30, request_timeout=30)
        futures[name].result(timeout=30)
        made.append(name)
        return name

    yield make
    if made:
        for f in admin.delete_topics(made, operation_timeout=30).values():
            try:
                f.result(timeout=30)
            except Exception:  # a broker test may have left Kafka slow; the topics are throw-away
                pass


class Record:
    """One Kafka record, its Envelope decoded."""

    def __init__(self, msg, envelope):
        self.topic = msg.topic()
        self.partition = msg.partition()
        self.offset = msg.offset()
        self.key = msg.key()
        self.value = msg.value()
        self.headers = list(msg.headers() or [])
        self.envelope = envelope

    @property
    def event(self):
        return self.envelope.event

    def header(self, name):
        """The value of the one header called name (bytes); fails if it is missing or repeated."""
        values = [v for k, v in self.headers if k == name]
        assert len(values) == 1, f"header {name!r} appears {len(values)} times in {self.headers}"
        return values[0]

    def __repr__(self):
        return f"Record({self.topic}/{self.partition}@{self.offset} key={self.key!r} event={self.event})"


class TopicReader:
    """Reads what a topic received after a mark (its end offsets at one moment).

    mark() takes the end offsets; count_since(mark) says how many records came
    since (exact: the gateway's producer is not transactional, so every offset
    is one record); read_since(mark, n) returns them, decoded.
    """

    def __init__(self, bootstrap, topic, decode):
        from confluent_kafka import Consumer

        self.topic = topic
        self.decode = decode
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"it-reader-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 20,
        })
        md = self.consumer.list_topics(topic, timeout=15)
        assert topic in md.topics and md.topics[topic].error is None, f"topic {topic}: {md.topics.get(topic)}"
        self.partitions = sorted(md.topics[topic].partitions)

    def mark(self):
        import time

        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        # A topic just made answers "not leader" until its partitions' leaders are known: ask again.
        retriable = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                     KafkaError.UNKNOWN_TOPIC_OR_PART}
        deadline = time.monotonic() + 15
        while True:
            try:
                return {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=15,
                                                               cached=False)[1]
                        for p in self.partitions}
            except KafkaException as e:
                if e.args[0].code() not in retriable or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def count_since(self, mark):
        now = self.mark()
        return sum(now[p] - mark[p] for p in self.partitions)

    def read_since(self, mark, n, timeout=20.0):
        """The records after mark, at least n of them (fails after timeout with fewer), in offset order."""
        import time

        from confluent_kafka import TopicPartition

        self.consumer.assign([TopicPartition(self.topic, p, mark[p]) for p in self.partitions])
        got = []
        deadline = time.monotonic() + timeout
        try:
            while len(got) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(got)} of {n} records arrived on {self.topic} within {timeout}s: {got}"
                msg = self.consumer.poll(min(left, 0.5))
                if msg is None:
                    continue
                assert msg.error() is None, f"consumer error: {msg.error()}"
                got.append(Record(msg, self.decode(msg.value())))
        finally:
            self.consumer.unassign()
        return got

    def find_since(self, mark, ids, timeout=20.0):
        """{id: Record} of the events with these ids after mark, among others' (a shared topic)."""
        import time

        deadline = time.monotonic() + timeout
        found = {}
        while len(found) < len(ids):
            assert time.monotonic() < deadline, f"found only {sorted(found)} of {ids} on {self.topic}"
            for rec in self.read_since(mark, self.count_since(mark)):
                if rec.event.id in ids:
                    found[rec.event.id] = rec
        return found

    def close(self):
        self.consumer.close()


@pytest.fixture(scope="session")
def topic_reader(kafka_bootstrap, decode_envelope):
    """topic_reader(topic) -> a TopicReader, closed at the session's end."""
    readers = []

    def make(topic):
        r = TopicReader(kafka_bootstrap, topic, decode_envelope)
        readers.append(r)
        return r

    yield make
    for r in readers:
        r.close()


# ---- Private gateways ------------------------------------------------------------

# INGEST_TEST_GATEWAY_BIN runs the private gateways from another build (e.g.
# build/asan/bin/gateway); the default is the Release build the stack runs.
GATEWAY_BIN = pathlib.Path(os.environ.get("INGEST_TEST_GATEWAY_BIN", REPO_ROOT / "build" / "release" / "bin" / "gateway"))


_ports_handed_out = set()


def free_port():
    """A port on 127.0.0.1 free right now for both TCP and UDP (a gateway's --udp-addr takes one too, and
    a TCP-only check once handed out a port a UDP socket held), and never handed out before in this run:
    the kernel may give a port just closed again, and a gateway's ports are all asked for before it binds
    any (it once got the same one for --http-addr and --admin-addr)."""
    import socket

    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port in _ports_handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _ports_handed_out.add(port)
            return port
    raise RuntimeError("no port free for both TCP and UDP")


class _Admin:
    """What both programs serve on their admin port (self.admin_url)."""

    def metrics(self):
        """/metrics parsed by prometheus_client: {(sample name, frozenset of label items): value}."""
        import requests
        from prometheus_client.parser import text_string_to_metric_families

        r = requests.get(self.admin_url + "/metrics", timeout=5)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        return {(smp.name, frozenset(smp.labels.items())): smp.value
                for fam in text_string_to_metric_families(r.text) for smp in fam.samples}

    def metric(self, name, **labels):
        """One sample's value from /metrics; 0 when the series is not there yet."""
        return self.metrics().get((name, frozenset(labels.items())), 0)


class Gateway(_Admin):
    """A gateway process of our own: its addresses, its log, and a way to stop it."""

    def __init__(self, proc, args, addrs, log_path):
        self.proc = proc
        self.args = args
        self.addrs = addrs  # flag -> "127.0.0.1:port", e.g. addrs["--http-addr"]
        self.log_path = log_path
        self.http_addr = addrs["--http-addr"]
        self.url = "http://" + self.http_addr
        self.events_url = self.url + "/v1/events"
        self.admin_url = "http://" + addrs["--admin-addr"] if "--admin-addr" in addrs else None

    def log(self):
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines=40):
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL after timeout seconds. Returns the exit status."""
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def gateway_help():
    """The gateway's --help text: which settings this build knows."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    r = subprocess.run([str(GATEWAY_BIN), "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


# Listeners a private gateway gets a free port for, when its build has them
# (the stack's gateway holds the default ports).
GATEWAY_LISTEN_FLAGS = ("--http-addr", "--udp-addr", "--grpc-addr", "--admin-addr")


@pytest.fixture(scope="session")
def start_gateway(kafka_bootstrap, gateway_help, tmp_path_factory):
    """start_gateway(*flags, env=None, ready_timeout=20) -> a running Gateway.

    Starts build/release/bin/gateway with no INGEST_* variables but those in
    env, the stack's Kafka (unless flags name --kafka-bootstrap), and a free
    port on 127.0.0.1 for every listener the build has (--http-addr,
    --udp-addr, --grpc-addr, --admin-addr) that flags do not set. Returns
    once the gateway logged that it started (every listener up). Every gateway started is stopped
    at the session's end at the latest; Gateway.stop() stops one sooner.
    """
    import socket
    import subprocess
    import time

    started = []
    logs = tmp_path_factory.mktemp("gateways")

    def given(flags, name):
        return any(f == name or f.startswith(name + "=") for f in flags)

    def start(*flags, env=None, ready_timeout=20, wrap=()):
        """wrap: a command the gateway runs under (it must exec it), e.g. setpriv."""
        flags = list(flags)
        addrs = {}
        for name in GATEWAY_LISTEN_FLAGS:
            for f in flags:
                if f.startswith(name + "="):
                    addrs[name] = f.split("=", 1)[1]
            if name not in addrs and (name == "--http-addr" or f"{name}=" in gateway_help):
                addrs[name] = f"127.0.0.1:{free_port()}"
                flags.append(f"{name}={addrs[name]}")
        if not given(flags, "--kafka-bootstrap"):
            flags.append(f"--kafka-bootstrap={kafka_bootstrap}")
        e = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
        e.update(env or {})
        log_path = logs / f"gateway-{len(started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([*wrap, str(GATEWAY_BIN), *flags], env=e, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT)
        gw = Gateway(proc, flags, addrs, log_path)
        started.append(gw)
        host, port = host_port(addrs["--http-addr"])
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gateway {flags} exited with {proc.returncode}:\n{gw.log_tail()}", pytrace=False)
            # Listening sockets exist before their threads serve them: the log line says all are up.
            log = gw.log()
            if 'msg="started' in log or '"msg":"started' in log:
                socket.create_connection((dial_host(host), port), timeout=1).close()
                return gw
            if time.monotonic() > deadline:
                gw.stop()
                pytest.fail(f"gateway {flags}: nothing listens on {addrs['--http-addr']} after "
                            f"{ready_timeout}s:\n{gw.log_tail()}", pytrace=False)
            time.sleep(0.05)

    yield start
    for gw in started:
        gw.stop()


# ---- The real broker, stopped and started under a running stack -----------------

class _StackService:
    """A service of the local stack stopped and started by one of the *_ctl scripts beside this file."""

    CTL_NAME = None
    CTL_TIMEOUT = 120

    def _ctl(self, action):
        import subprocess

        ctl = pathlib.Path(__file__).resolve().parent / self.CTL_NAME
        r = subprocess.run([str(ctl), action], capture_output=True, text=True, timeout=self.CTL_TIMEOUT)
        assert r.returncode == 0, f"{self.CTL_NAME} {action} failed ({r.returncode}):\n{r.stdout}{r.stderr}"

    def stop(self):
        self._ctl("stop")


class KafkaBroker(_StackService):
    """The local stack's broker, driven by tests/integration/kafka_ctl."""

    CTL_NAME = "kafka_ctl"
    CTL_TIMEOUT = 180

    def __init__(self, bootstrap, topics):
        self.bootstrap = bootstrap
        self.topics = topics

    def start(self):
        """Starts the broker and waits until every topic of the stack has a leader again."""
        import time

        from confluent_kafka.admin import AdminClient

        self._ctl("start")
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + 60
        while True:
            try:
                md = admin.list_topics(timeout=5)
                if md.brokers and all(
                        t in md.topics and md.topics[t].error is None and md.topics[t].partitions and
                        all(p.leader >= 0 for p in md.topics[t].partitions.values()) for t in self.topics):
                    return
            except Exception:
                pass
            assert time.monotonic() < deadline, "the broker was started but its topics have no leader after 60 s"
            time.sleep(0.5)


@pytest.fixture
def kafka_broker(kafka_bootstrap, events_topic, dlq_topic):
    """The stack's real broker, for tests that stop it: .stop(), .start().

    Whatever the test does or however it fails, the broker runs again (with
    leaders for the stack's topics) before the next test starts.
    """
    broker = KafkaBroker(kafka_bootstrap, [events_topic, dlq_topic])
    try:
        yield broker
    finally:
        broker.start()


# ---- Postgres: queries, private schemas, the server stopped and started ------------

def pg_query(dsn, sql, params=None):
    """All rows of one statement (None for one that returns none), on a connection of its own, so that
    it works across a Postgres restart."""
    import psycopg

    with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description is not None else None


@pytest.fixture
def pg(pg_dsn):
    """A psycopg connection to the stack's database, autocommit, closed after the test."""
    import psycopg

    with psycopg.connect(pg_dsn, connect_timeout=10, autocommit=True) as conn:
        yield conn


def dsn_with_search_path(dsn, schema):
    """dsn, with the session's search_path set to schema (libpq's options parameter)."""
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options=-csearch_path%3D{schema}"


class SchemaMaker:
    """Makes fresh Postgres schemas and drops them, with their tables, on close()."""

    def __init__(self, dsn):
        self.dsn = dsn
        self.made = []

    def make(self):
        """(name, a DSN whose search_path is the new schema)."""
        name = f"it_{uuid.uuid4().hex[:16]}"
        pg_query(self.dsn, f"create schema {name}")
        self.made.append(name)
        return name, dsn_with_search_path(self.dsn, name)

    def close(self):
        import psycopg

        for name in self.made:
            try:
                pg_query(self.dsn, f"drop schema {name} cascade")
            except psycopg.Error:  # Postgres left down by a failed outage test: the schema is throw-away
                pass
        self.made = []


@pytest.fixture(scope="session")
def make_pg_schema(pg_dsn):
    """make_pg_schema() -> (name, dsn): a fresh schema, dropped at the session's end.

    A sink given that DSN creates its tables in the schema, so a test sees
    only its own rows and its own ingest_offsets.
    """
    maker = SchemaMaker(pg_dsn)
    yield maker.make
    maker.close()


@pytest.fixture
def pg_schema(pg_dsn):
    """(name, dsn) of a fresh schema (as make_pg_schema), dropped after the test."""
    maker = SchemaMaker(pg_dsn)
    yield maker.make()
    maker.close()


class PostgresServer(_StackService):
    """The local stack's Postgres, driven by tests/integration/pg_ctl."""

    CTL_NAME = "pg_ctl"

    def __init__(self, dsn):
        self.dsn = dsn

    def start(self):
        """Starts Postgres and waits until the stack's role can query its database."""
        import time

        import psycopg

        self._ctl("start")
        deadline = time.monotonic() + 30
        while True:
            try:
                pg_query(self.dsn, "select 1")
                return
            except psycopg.Error:
                assert time.monotonic() < deadline, "Postgres was started but does not answer after 30 s"
                time.sleep(0.2)


@pytest.fixture
def pg_server(pg_dsn):
    """The stack's real Postgres, for tests that stop it: .stop(), .start().

    Whatever the test does or however it fails, Postgres runs again before
    the next test starts.
    """
    server = PostgresServer(pg_dsn)
    try:
        yield server
    finally:
        server.start()


# ---- Private sinks -----------------------------------------------------------------

SINK_BIN = pathlib.Path(os.environ.get("INGEST_TEST_SINK_BIN", REPO_ROOT / "build" / "release" / "bin" / "sink"))


@pytest.fixture(scope="session")
def sink_help():
    """The sink's --help text: which settings this build knows."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    r = subprocess.run([str(SINK_BIN), "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


class Sink(_Admin):
    """A sink process of our own: its settings, its log, and ways to stop it."""

    def __init__(self, proc, args, log_path, admin_addr):
        self.proc = proc
        self.args = args
        self.log_path = log_path
        self.admin_addr = admin_addr
        self.admin_url = "http://" + admin_addr if admin_addr else None

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines=40):
        return "\n".join(self.log().splitlines()[-lines:])

    def kill(self):
        """SIGKILL: a crash, nothing flushed or committed on the way out."""
        import signal

        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return self.proc.returncode

    def stop(self, timeout=30):
        """SIGTERM, then SIGKILL after timeout seconds. Returns the exit status."""
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def start_sink(kafka_bootstrap, pg_dsn, sink_help, tmp_path_factory):
    """start_sink(*flags, env=None, start_timeout=0.5, wait=True) -> a running Sink.

    Starts build/release/bin/sink with no INGEST_* variables but those in
    env, the stack's Kafka and Postgres, a consumer group of its own (the
    stack's sink holds the default one) and, when the build has
    --admin-addr, a free port on 127.0.0.1 for it; flags override each of
    these. Returns once the admin port accepts connections or, in a build
    without one, once the process has lived start_timeout seconds; fails if
    it exits before. wait=False returns at once (sinks started together).
    Every sink started is stopped at the session's end at the
    latest; Sink.stop() and Sink.kill() end one sooner.
    """
    import socket
    import subprocess
    import time

    started = []
    logs = tmp_path_factory.mktemp("sinks")

    def given(flags, name):
        return any(f == name or f.startswith(name + "=") for f in flags)

    def start(*flags, env=None, start_timeout=0.5, wait=True):
        flags = list(flags)
        if not given(flags, "--kafka-bootstrap"):
            flags.append(f"--kafka-bootstrap={kafka_bootstrap}")
        if not given(flags, "--pg-dsn"):
            flags.append(f"--pg-dsn={pg_dsn}")
        if not given(flags, "--kafka-group"):
            flags.append(f"--kafka-group=it-sink-{uuid.uuid4().hex[:12]}")
        admin = None
        for f in flags:
            if f.startswith("--admin-addr="):
                admin = f.split("=", 1)[1]
        if admin is None and "--admin-addr=" in sink_help:
            admin = f"127.0.0.1:{free_port()}"
            flags.append(f"--admin-addr={admin}")
        e = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
        e.update(env or {})
        log_path = logs / f"sink-{len(started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([str(SINK_BIN), *flags], env=e, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT)
        sink = Sink(proc, flags, log_path, admin)
        started.append(sink)
        if not wait:
            return sink
        deadline = time.monotonic() + (20 if admin else start_timeout)
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sink {flags} exited with {proc.returncode}:\n{sink.log_tail()}", pytrace=False)
            if admin:
                try:
                    host, port = host_port(admin)
                    socket.create_connection((dial_host(host), port), timeout=1).close()
                    return sink
                except OSError:
                    pass
            if time.monotonic() > deadline:
                if not admin:
                    return sink
                sink.stop()
                pytest.fail(f"sink {flags}: nothing listens on {admin} after 20s:\n{sink.log_tail()}",
                            pytrace=False)
            time.sleep(0.05)

    yield start
    for s in started:
        s.stop()
