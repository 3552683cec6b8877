"""Browsers and webhooks on POST /v1/events: CORS (--cors-origins, --cors-credentials) and the
CloudEvents webhook validation handshake (OPTIONS with WebHook-Request-Origin).

Private gateways, each with its own topic; requests and curl speak to them as
a browser's preflight, a page's POST and a webhook sender's handshake would.
"""

import json
import subprocess
import uuid

import pytest
import requests

APP = "https://app.example.com"
OTHER = "https://evil.example.net"
EVENT_CT = {"Content-Type": "application/cloudevents+json"}
TOKEN = "s3cret-webhook-token"


def event(source="/it/cors"):
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": source, "type": "it.cors"}


def preflight(gw, origin, method="POST", headers=None, path="/v1/events", extra=None):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        h["Access-Control-Request-Headers"] = headers
    h.update(extra or {})
    return requests.options(gw.url + path, headers=h, timeout=10)


def refused(gw):
    """Every refusal the gateway counted, rejected or dropped, by reason."""
    return {dict(k[1]).get("reason"): v for k, v in gw.metrics().items()
            if k[0] in ("ingest_rejected_total", "ingest_dropped_total") and v}


@pytest.fixture(scope="module")
def cors_gw(start_gateway, make_topic):
    return start_gateway(f"--kafka-topic={make_topic('cors')}", f"--cors-origins={APP}, http://localhost:3000")


@pytest.fixture(scope="module")
def any_gw(start_gateway, make_topic):
    return start_gateway(f"--kafka-topic={make_topic('cors')}", "--cors-origins=*")


@pytest.fixture(scope="module")
def cred_gw(start_gateway, make_topic):
    return start_gateway(f"--kafka-topic={make_topic('cors')}", f"--cors-origins={APP}", "--cors-credentials",
                         f"--auth-token={TOKEN}")


@pytest.fixture(scope="module")
def plain_gw(start_gateway, make_topic):
    return start_gateway(f"--kafka-topic={make_topic('cors')}")


def topic_of(gw):
    return next(f.split("=", 1)[1] for f in gw.args if f.startswith("--kafka-topic="))


def test_preflight_from_listed_origin(cors_gw):
    before = refused(cors_gw)
    for origin in (APP, "http://localhost:3000"):
        r = preflight(cors_gw, origin, headers="content-type,ingest-ack")
        assert r.status_code == 204, r.text
        assert r.headers["Access-Control-Allow-Origin"] == origin
        assert "Access-Control-Allow-Credentials" not in r.headers
        assert [m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")] == ["POST", "OPTIONS"]
        assert r.headers["Access-Control-Allow-Headers"] == "content-type,ingest-ack"
        assert int(r.headers["Access-Control-Max-Age"]) > 0
        assert "Origin" in r.headers["Vary"]
        assert "Content-Length" not in r.headers and r.content == b""
    # CloudEvents binary mode's ce-* headers, gzip and a token are all things a page may send.
    asked = "authorization,ce-id,ce-source,ce-specversion,ce-type,content-encoding,content-type"
    r = preflight(cors_gw, APP, headers=asked)
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Headers"] == asked
    # Preflights are the browser's questions, never refusals.
    assert refused(cors_gw) == before


def test_preflight_from_unlisted_origin_gets_no_cors_headers(cors_gw):
    for origin in (OTHER, APP + "/", "https://APP.example.com.evil", "null"):
        r = preflight(cors_gw, origin, headers="content-type")
        assert r.status_code == 204
        assert not [h for h in r.headers if h.lower().startswith("access-control-")], r.headers
        assert "Origin" in r.headers["Vary"]


def test_preflight_origin_compared_case_insensitively(cors_gw):
    r = preflight(cors_gw, "HTTPS://App.Example.com")
    assert r.headers["Access-Control-Allow-Origin"] == "HTTPS://App.Example.com"


def test_preflight_asking_for_disallowed_headers(cors_gw):
    # The answer lists what is allowed, not what was asked: the browser then refuses the page's request.
    for asked in ("content-type,x-forwarded-for", "cookie", "content-type;bad", "ce-"):
        r = preflight(cors_gw, APP, headers=asked)
        assert r.status_code == 204
        assert r.headers["Access-Control-Allow-Origin"] == APP
        allowed = [h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")]
        assert allowed == ["content-type", "content-encoding", "authorization", "ingest-ack"]
    # A method other than POST: answered with the methods allowed, which do not include it.
    r = preflight(cors_gw, APP, method="PUT")
    assert r.status_code == 204 and "PUT" not in r.headers["Access-Control-Allow-Methods"]


def test_post_from_listed_origin_reaches_kafka(cors_gw, topic_reader):
    reader = topic_reader(topic_of(cors_gw))
    mark = reader.mark()
    ev = event("/it/cors/browser")
    r = requests.post(cors_gw.events_url, data=json.dumps(ev), headers={**EVENT_CT, "Origin": APP}, timeout=20)
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == APP
    assert r.headers["Vary"] == "Origin"
    exposed = [h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")]
    assert "Retry-After" in exposed and "WWW-Authenticate" in exposed
    assert "Access-Control-Allow-Credentials" not in r.headers
    assert list(reader.find_since(mark, [ev["id"]])) == [ev["id"]]
    # An error answer carries them too, so the page can read why.
    r = requests.post(cors_gw.events_url, data="{", headers={**EVENT_CT, "Origin": APP}, timeout=20)
    assert r.status_code == 400 and r.headers["Access-Control-Allow-Origin"] == APP
    assert r.json()["error"]["code"] == "malformed_json"


def test_post_from_unlisted_origin_is_served_without_cors_headers(cors_gw, topic_reader):
    # CORS is not access control: curl may send any Origin; only a browser withholds the answer.
    reader = topic_reader(topic_of(cors_gw))
    mark = reader.mark()
    ev = event("/it/cors/other")
    r = requests.post(cors_gw.events_url, data=json.dumps(ev), headers={**EVENT_CT, "Origin": OTHER}, timeout=20)
    assert r.status_code == 200, r.text
    assert "Access-Control-Allow-Origin" not in r.headers and r.headers["Vary"] == "Origin"
    assert list(reader.find_since(mark, [ev["id"]])) == [ev["id"]]


def test_any_origin(any_gw):
    r = preflight(any_gw, OTHER, headers="content-type")
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in r.headers
    r = requests.post(any_gw.events_url + "?ack=accepted", data=json.dumps(event()),
                      headers={**EVENT_CT, "Origin": OTHER}, timeout=20)
    assert r.status_code == 202, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_credentials(cred_gw, topic_reader):
    # The preflight carries no credentials (browsers never send them on one): not refused for its lack of a token.
    r = preflight(cred_gw, APP, headers="authorization,content-type")
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == APP
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    assert r.headers["Access-Control-Allow-Headers"] == "authorization,content-type"
    reader = topic_reader(topic_of(cred_gw))
    mark = reader.mark()
    ev = event("/it/cors/cred")
    r = requests.post(cred_gw.events_url, data=json.dumps(ev),
                      headers={**EVENT_CT, "Origin": APP, "Authorization": f"Bearer {TOKEN}"}, timeout=20)
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == APP
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    assert list(reader.find_since(mark, [ev["id"]])) == [ev["id"]]
    # Without the token: 401, readable by the page (WWW-Authenticate is exposed).
    r = requests.post(cred_gw.events_url, data=json.dumps(event()), headers={**EVENT_CT, "Origin": APP}, timeout=20)
    assert r.status_code == 401
    assert r.headers["Access-Control-Allow-Origin"] == APP and "WWW-Authenticate" in r.headers


def test_cors_off_keeps_options_405(plain_gw):
    r = preflight(plain_gw, APP, headers="content-type")
    assert r.status_code == 405
    assert r.headers["Allow"] == "POST"
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert not [h for h in r.headers if h.lower().startswith("access-control-") or h.lower() == "vary"]
    r = requests.post(plain_gw.events_url + "?ack=accepted", data=json.dumps(event()),
                      headers={**EVENT_CT, "Origin": APP}, timeout=20)
    assert r.status_code == 202
    assert not [h for h in r.headers if h.lower().startswith("access-control-") or h.lower() == "vary"]


def test_options_elsewhere(cors_gw, plain_gw):
    for gw in (cors_gw, plain_gw):
        # Unknown paths: 404, preflight or handshake or neither.
        for extra in ({"Origin": APP, "Access-Control-Request-Method": "POST"},
                      {"WebHook-Request-Origin": "eventemitter.example.com"}, {}):
            r = requests.options(gw.url + "/v1/other", headers=extra, timeout=10)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        # OPTIONS without a preflight's or a handshake's headers: 405, as any method but POST.
        r = requests.options(gw.events_url, headers={"Origin": APP}, timeout=10)
        assert r.status_code == 405 and r.headers["Allow"] == "POST"


def test_bad_origin_lists_exit_2(gateway_help):
    from conftest import GATEWAY_BIN

    for flags in (["--cors-origins=https://app.example.com/"], ["--cors-origins=app.example.com"],
                  ["--cors-origins=*,https://app.example.com"], ["--cors-origins=*", "--cors-credentials"],
                  ["--cors-origins=https://a.example.com/path"]):
        r = subprocess.run([str(GATEWAY_BIN), *flags, "--http-addr=127.0.0.1:1"], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode == 2, (flags, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "--cors-origins" in r.stderr, r.stderr


# ---- The CloudEvents webhook validation handshake -------------------------------------------------------------

def handshake(gw, origin="eventemitter.example.com", token=None, rate=None, path="/v1/events"):
    h = {"WebHook-Request-Origin": origin}
    if token:
        h["Authorization"] = f"Bearer {token}"
    if rate is not None:
        h["WebHook-Request-Rate"] = rate
    return requests.options(gw.url + path, headers=h, timeout=10)


def test_webhook_handshake_without_auth(plain_gw, cors_gw):
    for gw in (plain_gw, cors_gw):  # whether CORS is on or not
        r = handshake(gw)
        assert r.status_code == 200, r.text
        assert r.headers["WebHook-Allowed-Origin"] == "eventemitter.example.com"
        assert r.headers["WebHook-Allowed-Rate"] == "*"
        assert r.headers["Allow"] == "POST"
        # The rate asked for is answered (no quota: any rate).
        r = handshake(gw, rate="120")
        assert r.status_code == 200 and r.headers["WebHook-Allowed-Rate"] == "*"


def test_webhook_handshake_with_curl(plain_gw):
    r = subprocess.run(["curl", "-sS", "-X", "OPTIONS", "-D", "-", "-o", "/dev/null",
                        "-H", "WebHook-Request-Origin: eventgrid.azure.net", "-H", "WebHook-Request-Rate: 100",
                        plain_gw.events_url], capture_output=True, text=True, timeout=20)
    head = r.stdout.lower()
    assert head.startswith("http/1.1 200"), r.stdout + r.stderr
    assert "webhook-allowed-origin: eventgrid.azure.net\n" in head
    assert "webhook-allowed-rate: *\n" in head


def test_webhook_handshake_needs_the_deliveries_token(cred_gw):
    # Consent only to a sender whose deliveries would be let in: the handshake carries their token.
    for token in (None, "wrong"):
        r = handshake(cred_gw, token=token)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        assert "WebHook-Allowed-Origin" not in r.headers and "WebHook-Allowed-Rate" not in r.headers
    r = handshake(cred_gw, token=TOKEN, rate="60")
    assert r.status_code == 200, r.text
    assert r.headers["WebHook-Allowed-Origin"] == "eventemitter.example.com"
    assert r.headers["WebHook-Allowed-Rate"] == "*"


def test_webhook_handshake_bad_headers(plain_gw):
    for origin, rate in (("bad origin", None), ("x" * 300, None), ("a.example.com", "0"),
                         ("a.example.com", "-5"), ("a.example.com", "fast")):
        r = handshake(plain_gw, origin=origin, rate=rate)
        assert r.status_code == 400, (origin, rate, r.text)
        assert r.json()["error"]["code"] == "bad_request"
        assert "WebHook-Allowed-Origin" not in r.headers
