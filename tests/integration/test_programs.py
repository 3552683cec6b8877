"""The two programs as an operator meets them: settings, --help, bad settings, a clean stop."""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "build" / "release" / "bin"


def run(prog, *args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    e.update(env or {})
    return subprocess.run([str(BIN / prog), *args], env=e, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("prog", ["gateway", "sink"])
def test_help_lists_every_setting_with_env_and_default(prog):
    r = run(prog, "--help")
    assert r.returncode == 0, r.stderr
    for flag, env in [("--kafka-bootstrap=", "INGEST_KAFKA_BOOTSTRAP"), ("--log-level=", "INGEST_LOG_LEVEL"),
                      ("--log-format=", "INGEST_LOG_FORMAT"), ("--kafka.<property>", "INGEST_KAFKA__")]:
        assert flag in r.stdout and env in r.stdout
    assert "default 127.0.0.1:9092" in r.stdout
    assert run(prog, "--version").stdout.startswith(prog + " ")


@pytest.mark.parametrize("prog,args,env,message", [
    ("gateway", ["--queue-capacity=lots"], {}, "--queue-capacity: 'lots' is not a valid N"),
    ("gateway", [], {"INGEST_QUEUE_CAPACITY": "0"}, "INGEST_QUEUE_CAPACITY: 0 is out of range"),
    ("gateway", ["--queue-capacity=10", "--queue-high-water=11"], {}, "--queue-high-water (11) must not exceed"),
    ("gateway", ["--shutdown-timeout=soon"], {}, "--shutdown-timeout: 'soon' is not a valid DURATION"),
    ("gateway", ["--kafka.no.such.property=1"], {}, "--kafka.no.such.property: No such configuration property"),
    ("gateway", [], {"INGEST_KAFKA__ACKS": "several"}, "--kafka.acks"),
    ("gateway", ["--log-level=loud"], {}, "--log-level: 'loud' is not one of"),
    ("gateway", ["--bogus"], {}, "unknown setting '--bogus'"),
    ("gateway", ["--http-addr=nonsense"], {}, "--http-addr 'nonsense' is not host:port"),
    ("gateway", ["--grpc-addr=nonsense"], {}, "--grpc-addr 'nonsense' is not host:port"),
    ("gateway", ["--grpc-threads=0"], {}, "--grpc-threads: 0 is out of range"),
    ("gateway", ["--max-event-bytes=2MiB", "--max-request-bytes=1MiB"], {}, "--max-event-bytes (2097152) must not exceed"),
    ("gateway", ["--default-ack=maybe"], {}, "--default-ack: 'maybe' is not one of: committed accepted persisted"),
    ("gateway", ["--spool=overflow"], {}, "--spool: 'overflow' is not one of: off always"),
    ("gateway", ["--spool-max-bytes=1KiB"], {}, "--spool-max-bytes: 1KiB is out of range 65536.."),
    ("sink", ["--log-format=xml"], {}, "--log-format: 'xml' is not one of"),
    ("sink", ["--kafka.bogus=1"], {}, "--kafka.bogus"),
    ("gateway", ["--udp-addr=127.0.0.1:99999"], {}, "--udp-addr '127.0.0.1:99999' is not host:port"),
    ("gateway", [], {"INGEST_ADMIN_ADDR": "admin"}, "--admin-addr 'admin' is not host:port"),
    ("gateway", ["--udp-max-datagram=100"], {}, "--udp-max-datagram: 100 is out of range 512..65535"),
    ("sink", ["--pg-dsn=not a dsn"], {}, "--pg-dsn: missing \"=\" after \"not\""),
    ("sink", ["--admin-addr=:x"], {}, "--admin-addr ':x' is not host:port"),
])
def test_bad_settings_are_refused_naming_the_setting(prog, args, env, message):
    r = run(prog, *args, env=env)
    assert r.returncode == 2
    assert message in r.stderr, r.stderr


@pytest.mark.parametrize("args,status", [(["--help"], 0), (["--version"], 0), (["--bogus"], 2),
                                         (["--pg-dsn=not a dsn"], 2), (["--kafka.bogus=1"], 2)])
def test_a_sink_that_never_started_does_not_log_that_it_stopped(args, status):
    r = run("sink", *args)
    assert r.returncode == status, r.stderr
    # Only the answer asked for, or the one line naming the bad setting: no log line at all.
    assert "stopped" not in r.stderr and "msg=" not in r.stderr, r.stderr
    if status == 0:
        assert r.stderr == "", r.stderr


@pytest.mark.parametrize("prog", ["gateway", "sink"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_starts_reaches_kafka_and_stops_cleanly(prog, sig, stack_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    env.update({"INGEST_KAFKA_BOOTSTRAP": stack_env["INGEST_KAFKA_BOOTSTRAP"], "INGEST_PG_DSN": stack_env["INGEST_PG_DSN"],
                "INGEST_LOG_FORMAT": "json"})
    # Port 0: a private listener, whatever the stack's gateway holds.
    args = (["--http-addr=127.0.0.1:0", "--http-threads=1", "--udp-addr=127.0.0.1:0", "--grpc-addr=127.0.0.1:0",
             "--admin-addr=127.0.0.1:0"]
            if prog == "gateway"
            else ["--admin-addr=127.0.0.1:0"])
    p = subprocess.Popen([str(BIN / prog), *args], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        lines = []
        while time.time() < deadline:
            line = p.stderr.readline()
            if not line:
                break
            lines.append(line)
            # The sink checks Postgres after Kafka: wait for the last line each program writes at start.
            if ('"comp":"pg","msg":"' if prog == "sink" else '"comp":"kafka","msg":"') in line:
                break
        assert any('"comp":"kafka","msg":"reachable brokers=1"' in l for l in lines), lines
        if prog == "sink":
            assert any('"comp":"pg","msg":"connected server_version=15' in l for l in lines), lines
        p.send_signal(sig)
        assert p.wait(timeout=30) == 0
        rest = p.stderr.read()
        assert '"msg":"stopping signal=' in rest
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize("flag,kind,opts", [
    ("--http-addr", socket.SOCK_STREAM, [socket.SO_REUSEADDR]),
    ("--udp-addr", socket.SOCK_DGRAM, []),
    # SO_REUSEADDR on UDP would let a second process bind the port and split its datagrams.
    ("--udp-addr", socket.SOCK_DGRAM, [socket.SO_REUSEADDR]),
    ("--udp-addr", socket.SOCK_DGRAM, [socket.SO_REUSEADDR, socket.SO_REUSEPORT]),
    ("--admin-addr", socket.SOCK_STREAM, []),
])
def test_a_port_another_process_holds_is_an_error(flag, kind, opts, stack_env):
    with socket.socket(socket.AF_INET, kind) as held:
        for o in opts:
            held.setsockopt(socket.SOL_SOCKET, o, 1)
        held.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            held.listen()
        addr = f"127.0.0.1:{held.getsockname()[1]}"
        flags = {"--http-addr": "127.0.0.1:0", "--udp-addr": "127.0.0.1:0", "--admin-addr": "127.0.0.1:0",
                 "--grpc-addr": "127.0.0.1:0"}
        flags[flag] = addr
        listeners = [f"{k}={v}" for k, v in flags.items() if k != "--grpc-addr" or "--grpc-addr=" in run(
            "gateway", "--help").stdout]
        r = run("gateway", *listeners, f"--kafka-bootstrap={stack_env['INGEST_KAFKA_BOOTSTRAP']}")
        assert r.returncode != 0
        assert flag in r.stderr and "in use" in r.stderr, r.stderr
