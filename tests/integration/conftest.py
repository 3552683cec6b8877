"""Fixtures for the integration tests: where the running local stack listens.

The stack is the one deploy/local/up started (tests/run does that); its
endpoints come from the .local/env file it writes, or from the file named by
INGEST_LOCAL_ENV. A missing stack is a test failure, not a skip: these tests
exist to prove that the real parts work.
"""

import os
import pathlib
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
    futures = admin.create_topics([NewTopic(unique_name, num_partitions=1, replication_factor=1)],
                                  operation_timeout=30, request_timeout=30)
    futures[unique_name].result(timeout=30)
    yield unique_name
    admin.delete_topics([unique_name], operation_timeout=30)[unique_name].result(timeout=30)
