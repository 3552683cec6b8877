"""A client run inside another network namespace: test_dual_stack.py starts it with nsenter.

    netns_client.py HOST [--admin PORT] [--http PORT] [--udp PORT] [--grpc PORT]

Reaches each listener named on HOST (an IP address) and prints one JSON object, what each answered:
"admin" the status of GET /healthz; "http" the status of one event POSTed with ?ack=accepted (202
once queued: Kafka is not reachable from the namespace); "udp" whether /metrics counted a datagram
sent (needs --admin); "grpc" what grpc.health.v1.Health/Check said (SERVING or NOT_SERVING: either
means the call went through). A listener that cannot be reached gives "error: ...".
"""
import argparse
import json
import socket
import time
import uuid

import grpc
import requests


def url(host, port, path):
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"


def udp_requests(host, admin):
    r = requests.get(url(host, admin, "/metrics"), timeout=5)
    r.raise_for_status()
    for line in r.text.splitlines():
        if line.startswith('ingest_requests_total{protocol="udp"}'):
            return float(line.split()[-1])
    return 0.0


def attempt(fn):
    try:
        return fn()
    except Exception as e:  # what failed is the answer
        return f"error: {type(e).__name__}: {e}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    for name in ("admin", "http", "udp", "grpc"):
        ap.add_argument(f"--{name}", type=int)
    a = ap.parse_args()
    event = {"specversion": "1.0", "id": uuid.uuid4().hex, "source": "/it/netns", "type": "t"}
    out = {}
    if a.admin:
        out["admin"] = attempt(lambda: requests.get(url(a.host, a.admin, "/healthz"), timeout=5).status_code)
    if a.http:
        out["http"] = attempt(lambda: requests.post(
            url(a.host, a.http, "/v1/events?ack=accepted"), data=json.dumps(event),
            headers={"Content-Type": "application/cloudevents+json"}, timeout=10).status_code)
    if a.udp:
        def udp():
            before = udp_requests(a.host, a.admin)
            family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.sendto(json.dumps(event).encode(), (a.host, a.udp))
            deadline = time.monotonic() + 10
            while udp_requests(a.host, a.admin) == before:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
            return True
        out["udp"] = attempt(udp)
    if a.grpc:
        def health():
            target = f"ipv6:[{a.host}]:{a.grpc}" if ":" in a.host else f"ipv4:{a.host}:{a.grpc}"
            with grpc.insecure_channel(target) as ch:
                raw = ch.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10)
            # HealthCheckResponse: field 1 (status), a varint; SERVING is 1, NOT_SERVING 2.
            return {b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}.get(raw, repr(raw))
        out["grpc"] = attempt(health)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
