"""gateway/openapi.yaml against a live gateway, with schemathesis.

schemathesis generates requests from the document (its explicit examples,
its coverage scenarios of boundaries and missing or wrong values, and
property-based fuzzing), sends them to a private gateway (the same binary as
the stack's, its own topic so that fuzzed events stay out of `events` and
Postgres) and checks every answer against the document: no 5xx, a documented
status, content type, body and headers.
"""

import os
import pathlib
import subprocess
import sys
import uuid

import pytest
import yaml

OPENAPI = pathlib.Path(__file__).resolve().parents[2] / "gateway" / "openapi.yaml"

CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance"]

# Fuzzed cases per operation: enough to reach every content mode and
# parameter many times over, few enough to finish within a minute or two.
MAX_EXAMPLES = 300
# Fixed, so that a run is repeatable (and a failure reproducible); change it
# by hand to explore other inputs.
SEED = 20261126

# schemathesis has no serializer for NDJSON: the document gives it as a
# string, which goes on the wire as UTF-8 text. Loaded by the CLI through
# SCHEMATHESIS_HOOKS.
HOOKS = """
import schemathesis


@schemathesis.serializer("application/x-ndjson", "application/ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")
"""


@pytest.fixture(scope="module")
def openapi_gateway(start_gateway, make_topic):
    g = start_gateway(f"--kafka-topic={make_topic('openapi')}", f"--gateway-id=it-openapi-{uuid.uuid4().hex[:8]}")
    yield g
    g.stop()


def test_gateway_conforms_to_openapi(openapi_gateway, tmp_path):
    # The CLI rather than the pytest plugin: schemathesis 4.32's plugin does
    # not run under pytest 9 (it reads the removed Node._nodeid).
    (tmp_path / "it_schemathesis_hooks.py").write_text(HOOKS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    env.update(SCHEMATHESIS_HOOKS="it_schemathesis_hooks",
               PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    cmd = [str(pathlib.Path(sys.executable).with_name("schemathesis")), "run", str(OPENAPI),
           "--url", openapi_gateway.url,
           "--checks", ",".join(CHECKS),
           "--phases", "examples,coverage,fuzzing",
           "--max-examples", str(MAX_EXAMPLES),
           "--seed", str(SEED),
           "--generation-database", "none",
           "--request-timeout", "30",
           "--workers", "2",
           "--no-color",
           "--report", "junit", "--report-dir", str(tmp_path / "report")]
    # cwd: no schemathesis.toml of anyone else's is picked up.
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-20000:]
    assert openapi_gateway.proc.poll() is None, f"the gateway died:\n{openapi_gateway.log_tail()}"
    # It did test something: the summary counts the generated cases.
    assert "test cases" in out.lower() or "passed" in out.lower(), out[-5000:]


def test_document_describes_every_status_and_error_code():
    """The document itself: every status and code the contract names is in it, with its headers."""
    doc = yaml.safe_load(OPENAPI.read_text())
    assert doc["openapi"].startswith("3.")
    op = doc["paths"]["/v1/events"]["post"]
    assert set(op["responses"]) == {"200", "202", "400", "401", "408", "413", "415", "429", "431", "503", "505"}
    assert set(op["requestBody"]["content"]) >= {
        "application/cloudevents+json", "application/cloudevents-batch+json", "application/json",
        "application/x-ndjson", "application/ndjson", "application/octet-stream"}
    params = {(p["in"], p["name"].lower()) for p in op["parameters"]}
    assert {("query", "ack"), ("header", "ingest-ack"), ("header", "ce-specversion"), ("header", "ce-id"),
            ("header", "ce-source"), ("header", "ce-type"), ("header", "ce-subject"), ("header", "ce-time"),
            ("header", "ce-dataschema")} <= params
    codes = set(doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
    assert codes == {"malformed_json", "invalid_event", "bad_request", "bad_encoding", "unauthorized",
                     "request_timeout", "not_found",
                     "method_not_allowed", "too_large", "too_many_events", "unsupported_media_type",
                     "unsupported_encoding", "headers_too_large", "overloaded", "ack_timeout", "kafka_error",
                     "shutting_down"}
    responses = doc["components"]["responses"]
    assert responses["Overloaded"]["headers"]["Retry-After"]
    assert responses["Unavailable"]["headers"]["Retry-After"]
    assert responses["Unauthorized"]["headers"]["WWW-Authenticate"]["required"]
    assert responses["MethodNotAllowed"]["headers"]["Allow"]["required"]


def test_document_describes_preflight_and_webhook_handshake():
    """OPTIONS /v1/events: the CORS preflight's and the webhook handshake's answers, with their headers."""
    doc = yaml.safe_load(OPENAPI.read_text())
    op = doc["paths"]["/v1/events"]["options"]
    assert {"200", "204", "400", "401", "405"} <= set(op["responses"])
    ok = op["responses"]["200"]["headers"]
    assert ok["WebHook-Allowed-Origin"]["required"] and ok["WebHook-Allowed-Rate"]["required"]
    assert ok["Allow"]["required"]
    assert op["responses"]["204"]["headers"]["Vary"]["required"]
    params = {(p["in"], p["name"].lower()) for p in op["parameters"]}
    assert {("header", "origin"), ("header", "access-control-request-method"),
            ("header", "access-control-request-headers"), ("header", "webhook-request-origin"),
            ("header", "webhook-request-rate")} <= params
    post = doc["paths"]["/v1/events"]["post"]["responses"]
    for status in ("200", "202"):
        assert "Access-Control-Allow-Origin" in post[status]["headers"]
