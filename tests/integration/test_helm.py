"""The Helm chart (deploy/k8s/ingest) and the Dockerfile, without a cluster and without Docker.

helm lints and renders the chart with its default values and with tests/k8s/values-full.yaml (every
optional part switched the other way); every rendered object goes through tests/k8s's validator,
which decodes it strictly into its k8s.io/api type. The tests then assert what an operator relies
on: probes on the admin port, the security context, a drain that finishes before the kubelet kills
the pod, the Secret behind the Postgres DSN, what the HPA, PDB, Services and ServiceMonitor select.
The Dockerfile's package lists are checked against deploy/local/lib.sh and against what `ldd` says
the built programs load.

helm and the validator are in .local/bin: tests/run installs them (ensure_k8s_tools in
deploy/local/lib.sh). No stack is needed.
"""
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "k8s" / "ingest"
FULL_VALUES = ROOT / "tests" / "k8s" / "values-full.yaml"
HELM = ROOT / ".local" / "bin" / "helm"
VALIDATE = ROOT / ".local" / "bin" / "k8s-validate"
BIN = ROOT / "build" / "release" / "bin"
DOCKERFILE = ROOT / "Dockerfile"

# A helm built with `go install` assumes Kubernetes 1.20 unless told; a cluster tells `helm install`.
KUBE = "1.31.0"
VARIANTS = {"default": [], "full": ["-f", str(FULL_VALUES)]}


@pytest.fixture(scope="module", autouse=True)
def tools():
    for tool in (HELM, VALIDATE):
        if not tool.is_file():
            pytest.fail(f"{tool} missing: run tests/run, or: bash -c 'source deploy/local/lib.sh && "
                        "ensure_k8s_tools'", pytrace=False)


def helm(*args):
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)


def template(*args, kube=KUBE):
    return helm("template", "rel", str(CHART), "--namespace", "ingest", "--kube-version", kube, *args)


def validate(manifest):
    return subprocess.run([str(VALIDATE)], input=manifest, capture_output=True, text=True, timeout=60)


def render(*args):
    """helm template, every object validated; returns the objects parsed."""
    r = template(*args)
    assert r.returncode == 0, r.stderr
    v = validate(r.stdout)
    assert v.returncode == 0, v.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert v.stdout.count("ok ") == len(docs), v.stdout
    return docs


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request):
    return request.param


@pytest.fixture(scope="module")
def docs(variant):
    return render(*VARIANTS[variant])


def of_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def one(docs, kind, name_suffix):
    found = [d for n, d in of_kind(docs, kind).items() if n.endswith(name_suffix)]
    assert len(found) == 1, f"{kind} *{name_suffix}: {[d['metadata']['name'] for d in docs]}"
    return found[0]


def container(deploy):
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def port_number(c, port):
    """A probe's or Service's port (name or number) as the container port number."""
    if isinstance(port, int):
        return port
    (p,) = [p for p in c["ports"] if p["name"] == port]
    return p["containerPort"]


def addr_port(env, name):
    return int(env[name]["value"].rpartition(":")[2])


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


# ---- helm lint, and the validator itself ---------------------------------------

@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_lint_strict(name):
    r = helm("lint", "--strict", str(CHART), "--kube-version", KUBE, *VARIANTS[name])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in r.stdout + r.stderr
    # In lint mode helm reports a template's `fail` and `required` as an INFO line and passes.
    assert "Fail:" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_lint_rejects_values_the_schema_refuses():
    r = helm("lint", "--strict", str(CHART), "--kube-version", KUBE, "--set", "gatway.replicas=3",
             "--set", "log.level=loud")
    assert r.returncode != 0
    assert "'gatway' not allowed" in r.stdout and "'/log/level'" in r.stdout, r.stdout


@pytest.mark.parametrize("edit,message", [
    # A misspelt field would be dropped silently by kubectl's client-side apply.
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readynessProbe={}), 'unknown field'),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"].update(memory="256mb"),
     "quantities must match"),
    (lambda d: d["spec"]["template"]["metadata"]["labels"].update({"app.kubernetes.io/component": "other"}),
     "does not match template"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(name="a-name-far-too-long"),
     "ports[0].name"),
    (lambda d: d.update(apiVersion="extensions/v1beta1"), "unknown apiVersion/kind"),
])
def test_validator_rejects_what_the_api_server_would(edit, message):
    r = template()
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    gateway = one(docs, "Deployment", "-gateway")
    edit(gateway)
    v = validate(yaml.safe_dump_all(docs))
    assert v.returncode == 1
    assert "Deployment/" + gateway["metadata"]["name"] in v.stderr and message in v.stderr, v.stderr


def test_validator_checks_servicemonitor_shape():
    docs = [d for d in yaml.safe_load_all(template("-f", str(FULL_VALUES)).stdout) if d]
    sm = one(docs, "ServiceMonitor", "")
    sm["spec"]["endpoints"][0]["intervall"] = "5s"
    v = validate(yaml.safe_dump_all(docs))
    assert v.returncode == 1 and 'unknown field "intervall"' in v.stderr, v.stderr


def test_validator_refuses_empty_input():
    assert validate("---\n# nothing\n").returncode == 1


# ---- what each rendering holds ---------------------------------------------------

def test_objects_rendered(docs, variant):
    kinds = sorted(d["kind"] for d in docs)
    if variant == "default":
        assert kinds == ["Deployment", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret",
                         "Service", "Service", "Service", "Service", "ServiceAccount"]
    else:  # existingSecret, no ServiceAccount, no HPA, both PDBs, ServiceMonitor
        assert kinds == ["Deployment", "Deployment", "PodDisruptionBudget", "PodDisruptionBudget", "Service",
                         "Service", "Service", "Service", "ServiceMonitor"]


@pytest.mark.parametrize("component,admin", [("gateway", 8081), ("sink", 8082)])
def test_probes_on_admin_port(docs, variant, component, admin):
    c = container(one(docs, "Deployment", "-" + component))
    env = env_of(c)
    listen = addr_port(env, "INGEST_ADMIN_ADDR")
    if variant == "default":
        assert listen == admin
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")]:
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert port_number(c, get["port"]) == listen, probe


@pytest.mark.parametrize("component,listeners", [
    ("gateway", {"INGEST_HTTP_ADDR": "http", "INGEST_UDP_ADDR": "udp", "INGEST_GRPC_ADDR": "grpc",
                 "INGEST_ADMIN_ADDR": "admin"}),
    ("sink", {"INGEST_ADMIN_ADDR": "admin"}),
])
def test_listeners_take_ipv4_and_ipv6(docs, component, listeners):
    # [::] is both families in one socket (0.0.0.0 only on a node without IPv6): IPv6-only and
    # dual-stack clusters reach the pods as IPv4 ones do.
    c = container(one(docs, "Deployment", "-" + component))
    env = env_of(c)
    addrs = {k: v["value"] for k, v in env.items() if k.endswith("_ADDR")}
    assert set(addrs) == set(listeners)
    for name, port in listeners.items():
        assert addrs[name] == f"[::]:{port_number(c, port)}", name


def test_security_context(docs):
    for d in of_kind(docs, "Deployment").values():
        pod = d["spec"]["template"]["spec"]
        psc, csc = pod["securityContext"], container(d)["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert csc["readOnlyRootFilesystem"] is True
        assert csc["allowPrivilegeEscalation"] is False
        assert csc["capabilities"]["drop"] == ["ALL"]
        assert pod["automountServiceAccountToken"] is False
        # The writable places are emptyDirs, /tmp and the gateway's spool; any other mount (the
        # gateway's Secrets) is read-only.
        writable = {m["mountPath"]: m for m in container(d)["volumeMounts"] if not m.get("readOnly")}
        spool = env_of(container(d)).get("INGEST_SPOOL_DIR")
        assert sorted(writable) == sorted(["/tmp"] + ([spool["value"]] if spool else []))
        for mount in writable.values():
            (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            assert "emptyDir" in vol, vol
        for m in container(d)["volumeMounts"]:
            assert m in writable.values() or "secret" in [v for v in pod["volumes"] if v["name"] == m["name"]][0], m


def test_gateway_drains_before_it_is_killed(docs, variant):
    d = one(docs, "Deployment", "-gateway")
    c = container(d)
    shutdown = re.fullmatch(r"(\d+)s", env_of(c)["INGEST_SHUTDOWN_TIMEOUT"]["value"])
    assert shutdown, env_of(c)["INGEST_SHUTDOWN_TIMEOUT"]
    pre = c["lifecycle"]["preStop"]
    if variant == "default":
        sleep = pre["sleep"]["seconds"]
    else:
        assert pre["exec"]["command"][0] == "/bin/sleep"
        sleep = int(pre["exec"]["command"][1])
    assert sleep > 0
    grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > sleep + int(shutdown.group(1))
    # A rollout starts a new gateway before it drains an old one.
    assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_grace_period_shorter_than_the_drain_is_refused():
    r = template("--set", "gateway.terminationGracePeriodSeconds=30")
    assert r.returncode != 0
    assert "gateway.terminationGracePeriodSeconds (30) must exceed" in r.stderr and "(35)" in r.stderr, r.stderr


def test_prestop_sleep_needs_kubernetes_1_30():
    r = template(kube="1.29.0")
    assert r.returncode != 0 and "needs Kubernetes 1.30" in r.stderr, r.stderr
    pre = container(one(render_at("1.29.0", "--set", "gateway.preStop.type=exec"), "Deployment", "-gateway"))
    assert pre["lifecycle"]["preStop"] == {"exec": {"command": ["/bin/sleep", "5"]}}


def render_at(kube, *args):
    r = template(*args, kube=kube)
    assert r.returncode == 0, r.stderr
    assert validate(r.stdout).returncode == 0
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def test_services(docs, variant):
    gw = one(docs, "Deployment", "-gateway")
    c = container(gw)
    env = env_of(c)
    pod_labels = gw["spec"]["template"]["metadata"]["labels"]
    tcp = one(docs, "Service", "-gateway")
    udp = one(docs, "Service", "-gateway-udp")
    for svc in (tcp, udp, one(docs, "Service", "-gateway-admin")):
        assert selects(svc["spec"]["selector"], pod_labels), svc["metadata"]["name"]
    ports = {p["name"]: p for p in tcp["spec"]["ports"]}
    assert sorted(ports) == ["grpc", "http"]
    assert all(p["protocol"] == "TCP" for p in ports.values())
    assert port_number(c, ports["http"]["targetPort"]) == addr_port(env, "INGEST_HTTP_ADDR")
    assert port_number(c, ports["grpc"]["targetPort"]) == addr_port(env, "INGEST_GRPC_ADDR")
    (u,) = udp["spec"]["ports"]
    assert u["protocol"] == "UDP"
    assert port_number(c, u["targetPort"]) == addr_port(env, "INGEST_UDP_ADDR")
    (cu,) = [p for p in c["ports"] if p["name"] == u["targetPort"]]
    assert cu["protocol"] == "UDP"
    if variant == "default":
        assert (ports["http"]["port"], ports["grpc"]["port"], u["port"]) == (8080, 50051, 8090)
    else:
        assert tcp["spec"]["type"] == "LoadBalancer" and udp["spec"]["type"] == "NodePort"
    sink = one(docs, "Deployment", "-sink")
    assert selects(one(docs, "Service", "-sink-admin")["spec"]["selector"],
                   sink["spec"]["template"]["metadata"]["labels"])
    assert not selects(tcp["spec"]["selector"], sink["spec"]["template"]["metadata"]["labels"])


def test_secrets_come_from_the_secret(docs, variant):
    sink_env = env_of(container(one(docs, "Deployment", "-sink")))
    gw_env = env_of(container(one(docs, "Deployment", "-gateway")))
    ref = sink_env["INGEST_PG_DSN"]["valueFrom"]["secretKeyRef"]
    assert "value" not in sink_env["INGEST_PG_DSN"]
    assert "INGEST_PG_DSN" not in gw_env
    if variant == "default":
        secret = one(docs, "Secret", "")
        assert ref == {"name": secret["metadata"]["name"], "key": "pg-dsn"}
        assert secret["stringData"]["pg-dsn"].startswith("postgresql://")
        assert "INGEST_AUTH_TOKEN" not in gw_env and "INGEST_KAFKA__SASL_PASSWORD" not in gw_env
        # The pods roll when the Secret the chart made changes.
        for d in of_kind(docs, "Deployment").values():
            assert "checksum/secret" in d["spec"]["template"]["metadata"]["annotations"]
    else:
        assert ref == {"name": "ingest-credentials", "key": "pg-dsn"}
        assert gw_env["INGEST_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "ingest-credentials",
                                                                            "key": "auth-token"}
        for env in (gw_env, sink_env):
            assert env["INGEST_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
                "name": "ingest-credentials", "key": "kafka-sasl-password"}
    # No secret value in a pod spec.
    dumped = yaml.safe_dump([d for d in docs if d["kind"] == "Deployment"])
    assert "postgresql://" not in dumped


def test_chart_secret_holds_every_key_it_is_asked_for():
    docs = render("--set", "kafka.sasl.enabled=true", "--set", "kafka.sasl.username=u",
                  "--set", "kafka.sasl.password=p", "--set", "gateway.auth.enabled=true",
                  "--set", "gateway.auth.token=t")
    assert sorted(one(docs, "Secret", "")["stringData"]) == ["auth-token", "kafka-sasl-password", "pg-dsn"]
    r = template("--set", "gateway.auth.enabled=true")
    assert r.returncode != 0 and "gateway.auth.token is required" in r.stderr, r.stderr


def test_hpa_targets_the_gateway(docs, variant):
    gw = one(docs, "Deployment", "-gateway")
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    if variant == "full":
        assert not hpas and gw["spec"]["replicas"] == 3
        return
    (hpa,) = hpas.values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": gw["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The HPA owns the count: a replicas field would fight it on every upgrade.
    assert "replicas" not in gw["spec"]
    assert container(gw)["resources"]["requests"]["cpu"]


def test_hpa_needs_a_cpu_request():
    r = template("--set", "gateway.resources.requests=null")
    assert r.returncode != 0 and "gateway.resources.requests.cpu" in r.stderr, r.stderr


def test_pdb_selects_its_pods_only(docs):
    deployments = of_kind(docs, "Deployment")
    for pdb in of_kind(docs, "PodDisruptionBudget").values():
        assert pdb["apiVersion"] == "policy/v1"
        sel = pdb["spec"]["selector"]["matchLabels"]
        matched = [n for n, d in deployments.items() if selects(sel, d["spec"]["template"]["metadata"]["labels"])]
        assert matched == [pdb["metadata"]["name"]], (pdb["metadata"]["name"], matched)


def test_servicemonitor_only_when_enabled(docs, variant):
    monitors = of_kind(docs, "ServiceMonitor")
    if variant == "default":
        assert not monitors
        return
    (sm,) = monitors.values()
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["ingest"]}
    sel = sm["spec"]["selector"]["matchLabels"]
    scraped = sorted(n for n, s in of_kind(docs, "Service").items() if selects(sel, s["metadata"]["labels"]))
    assert scraped == ["ingest-prod-gateway-admin", "ingest-prod-sink-admin"]
    (ep,) = sm["spec"]["endpoints"]
    assert ep["path"] == "/metrics" and ep["interval"] == "15s"
    for name in scraped:
        svc = of_kind(docs, "Service")[name]
        assert ep["port"] in [p["name"] for p in svc["spec"]["ports"]]


def test_sink_replicas_bounded_by_partitions():
    r = template("--set", "sink.replicas=7")
    assert r.returncode != 0
    assert "sink.replicas (7) is above kafka.partitions (6)" in r.stderr, r.stderr
    docs = render("--set", "sink.replicas=6")
    assert one(docs, "Deployment", "-sink")["spec"]["replicas"] == 6


@pytest.mark.parametrize("prog", ["gateway", "sink"])
def test_env_names_are_settings_of_the_program(docs, prog):
    """Every INGEST_* the chart sets is one the program reads (its --help lists them)."""
    binary = BIN / prog
    assert binary.is_file(), f"{binary} missing: build Release first (tests/run does)"
    known = set(re.findall(r"env (INGEST_[A-Z0-9_]+)",
                           subprocess.run([str(binary), "--help"], capture_output=True, text=True).stdout))
    assert "INGEST_KAFKA_BOOTSTRAP" in known
    # The gRPC front end, and its --grpc-addr, come with their own issue.
    pending = {"INGEST_GRPC_ADDR"} - known if prog == "gateway" else set()
    names = set(env_of(container(one(docs, "Deployment", "-" + prog))))
    unknown = {n for n in names if n.startswith("INGEST_") and not n.startswith("INGEST_KAFKA__")} - known - pending
    assert_settings_known(unknown)


def assert_settings_known(unknown):
    assert not unknown, f"the chart sets settings the program does not have: {sorted(unknown)}"


def test_values_reach_the_programs():
    docs = render("-f", str(FULL_VALUES))
    gw = env_of(container(one(docs, "Deployment", "-gateway")))
    sink = env_of(container(one(docs, "Deployment", "-sink")))
    for env in (gw, sink):
        assert env["INGEST_KAFKA_BOOTSTRAP"]["value"] == "kafka-0.kafka:9093,kafka-1.kafka:9093"
        assert env["INGEST_KAFKA_TOPIC"]["value"] == "cloudevents"
        assert env["INGEST_KAFKA__SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["INGEST_KAFKA__MESSAGE_MAX_BYTES"]["value"] == "4194304"
        assert env["INGEST_LOG_LEVEL"]["value"] == "debug"
    assert gw["INGEST_QUEUE_CAPACITY"]["value"] == "131072"
    assert gw["INGEST_HTTP_THREADS"]["value"] == "4"
    assert sink["INGEST_BATCH_TIMEOUT"]["value"] == "500ms"
    assert sink["INGEST_KAFKA_GROUP"]["value"] == "ingest-sink-prod"
    assert sink["INGEST_DLQ_TOPIC"]["value"] == "cloudevents.dlq"
    assert container(one(docs, "Deployment", "-gateway"))["image"] == "ingest-gateway:1.2.3"
    assert container(one(docs, "Deployment", "-sink"))["image"] == "ingest-sink:1.2.3"


@pytest.mark.parametrize("args,message", [
    (["--set", "gateway.settings.admin-addr=0.0.0.0:1"], "gateway.settings.admin-addr: set by the chart"),
    (["--set", "sink.settings.pg-dsn=postgresql://x"], "sink.settings.pg-dsn: set by the chart"),
    (["--set", "secret.existingSecret=", "--set", "postgres.dsn="], "postgres.dsn is required"),
    (["--set", "kafka.properties.sasl_oauthbearer=x"], "holds an underscore"),
])
def test_bad_values_are_refused(args, message):
    r = template(*args)
    assert r.returncode != 0 and message in r.stderr, r.stderr


@pytest.mark.parametrize("args,budget", [
    ([], str(512 << 20)),  # the default 1Gi limit: half of it
    (["--set", "gateway.resources.limits.memory=3G"], str(1_500_000_000)),
    (["--set", "gateway.resources.limits.memory=805306368"], str(402653184)),
    (["--set", "gateway.settings.memory-budget=300MiB"], "300MiB"),  # the operator's own wins
])
def test_memory_budget_is_half_the_memory_limit(args, budget):
    env = env_of(container(one(render(*args), "Deployment", "-gateway")))
    assert env["INGEST_MEMORY_BUDGET"]["value"] == budget


def test_memory_budget_without_a_limit_is_the_programs_default():
    r = template("--set", "gateway.resources.limits=null")
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert "INGEST_MEMORY_BUDGET" not in env_of(container(one(docs, "Deployment", "-gateway")))


def test_memory_limit_in_a_form_the_chart_cannot_read_is_refused():
    r = template("--set", "gateway.resources.limits.memory=1.5Gi")
    assert r.returncode != 0 and 'memory quantity "1.5Gi"' in r.stderr, r.stderr


# ---- TLS and the auth file ------------------------------------------------------------

TLS = ["--set", "gateway.tls.enabled=true", "--set", "gateway.tls.secretName=gw-tls"]
AUTH_FILE = ["--set", "gateway.auth.fileSecret.name=ingest-auth", "--set", "gateway.auth.fileSecret.key=principals"]


def gateway_pod(docs):
    d = one(docs, "Deployment", "-gateway")
    return d, d["spec"]["template"]["spec"], container(d)


def secret_file(pod, c, path):
    """The (Secret name, key) a file path in the container comes from: through a whole-directory mount
    of a secret volume whose items project that key."""
    for m in c["volumeMounts"]:
        if path.startswith(m["mountPath"] + "/"):
            # subPath pins the file the kubelet first wrote: a renewed Secret would never arrive.
            assert "subPath" not in m and "subPathExpr" not in m, m
            assert m["readOnly"] is True, m
            (vol,) = [v for v in pod["volumes"] if v["name"] == m["name"]]
            name = path[len(m["mountPath"]) + 1:]
            (item,) = [i for i in vol["secret"]["items"] if i["path"] == name]
            return vol["secret"]["secretName"], item["key"]
    raise AssertionError(f"{path} is in no mount: {c['volumeMounts']}")


def assert_probes_plaintext_admin(c):
    listen = addr_port(env_of(c), "INGEST_ADMIN_ADDR")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert get.get("scheme", "HTTP") == "HTTP" and port_number(c, get["port"]) == listen, probe
        assert "grpc" not in c[probe]


def test_tls_and_auth_file_off_by_default():
    _, pod, c = gateway_pod(render())
    env = env_of(c)
    assert not [n for n in env if n.startswith("INGEST_TLS_")]
    assert "INGEST_AUTH_FILE" not in env and "INGEST_RELOAD_INTERVAL" not in env
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]


@pytest.mark.parametrize("mode", ["none", "optional", "require"])
def test_tls_from_a_kubernetes_io_tls_secret(mode):
    d, pod, c = gateway_pod(render(*TLS, "--set", f"gateway.tls.clientAuth={mode}"))
    env = env_of(c)
    assert secret_file(pod, c, env["INGEST_TLS_CERT"]["value"]) == ("gw-tls", "tls.crt")
    assert secret_file(pod, c, env["INGEST_TLS_KEY"]["value"]) == ("gw-tls", "tls.key")
    assert env["INGEST_TLS_CLIENT_AUTH"]["value"] == mode
    (vol,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    if mode == "none":
        assert "INGEST_TLS_CLIENT_CA" not in env
        assert [i["key"] for i in vol["secret"]["items"]] == ["tls.crt", "tls.key"]
    else:  # cert-manager's key for the issuing CA
        assert secret_file(pod, c, env["INGEST_TLS_CLIENT_CA"]["value"]) == ("gw-tls", "ca.crt")
    assert "INGEST_TLS_CIPHERS" not in env  # the gateway's own default
    # A renewed certificate is read by the running gateway: a reload interval, and no annotation that
    # would restart the pods when the TLS Secret changes (the chart's own Secret keeps its checksum).
    assert env["INGEST_RELOAD_INTERVAL"]["value"] == "10s"
    assert list(d["spec"]["template"]["metadata"]["annotations"]) == ["checksum/secret"]
    assert_probes_plaintext_admin(c)


def test_tls_values_reach_the_gateway():
    docs = render("-f", str(FULL_VALUES))
    _, pod, c = gateway_pod(docs)
    env = env_of(c)
    assert env["INGEST_TLS_CIPHERS"]["value"] == "ECDHE+AESGCM"
    assert env["INGEST_TLS_CLIENT_AUTH"]["value"] == "require"
    assert secret_file(pod, c, env["INGEST_TLS_CLIENT_CA"]["value"]) == ("ingest-gateway-tls", "ca.crt")
    assert env["INGEST_RELOAD_INTERVAL"]["value"] == "30s"
    # The bearer token and TLS go together.
    assert env["INGEST_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "auth-token"
    assert_probes_plaintext_admin(c)


def test_auth_file_from_a_secret():
    d, pod, c = gateway_pod(render(*AUTH_FILE, "--set", "gateway.reloadInterval=1m"))
    env = env_of(c)
    assert secret_file(pod, c, env["INGEST_AUTH_FILE"]["value"]) == ("ingest-auth", "principals")
    assert "INGEST_AUTH_TOKEN" not in env and not [n for n in env if n.startswith("INGEST_TLS_")]
    assert env["INGEST_RELOAD_INTERVAL"]["value"] == "1m"
    assert "checksum/secret" in d["spec"]["template"]["metadata"]["annotations"]


def test_auth_file_and_tls_settings_are_the_gateways():
    binary = BIN / "gateway"
    assert binary.is_file(), f"{binary} missing: build Release first (tests/run does)"
    known = set(re.findall(r"env (INGEST_[A-Z0-9_]+)",
                           subprocess.run([str(binary), "--help"], capture_output=True, text=True).stdout))
    _, _, c = gateway_pod(render(*TLS, *AUTH_FILE, "--set", "gateway.tls.clientAuth=optional",
                                 "--set", "gateway.tls.ciphers=ECDHE+AESGCM"))
    names = {n for n in env_of(c) if n.startswith("INGEST_") and not n.startswith("INGEST_KAFKA__")}
    assert {"INGEST_TLS_CERT", "INGEST_TLS_KEY", "INGEST_TLS_CLIENT_CA", "INGEST_TLS_CLIENT_AUTH",
            "INGEST_TLS_CIPHERS", "INGEST_AUTH_FILE", "INGEST_RELOAD_INTERVAL"} <= names
    assert_settings_known(names - known)


@pytest.mark.parametrize("args,message", [
    (["--set", "gateway.auth.enabled=true", "--set", "gateway.auth.token=t", *AUTH_FILE],
     "gateway.auth.enabled (one bearer token) and gateway.auth.fileSecret (an auth file) are exclusive"),
    (["--set", "gateway.tls.enabled=true"], "gateway.tls.enabled needs gateway.tls.secretName"),
    ([*TLS, "--set", "gateway.settings.tls-cert=/x"], "gateway.settings.tls-cert: set by the chart"),
    ([*TLS, "--set", "gateway.readinessProbe.httpGet=null", "--set", "gateway.readinessProbe.grpc.port=50051"],
     "gateway.readinessProbe: a grpc probe cannot do TLS"),
])
def test_tls_and_auth_file_misuse_is_refused(args, message):
    r = template(*args)
    assert r.returncode != 0 and message in r.stderr, r.stderr


@pytest.mark.parametrize("args,message", [
    (["--set", "gateway.tls.clientAuth=maybe"], "'/gateway/tls/clientAuth'"),
    (["--set-string", "gateway.tls.enabled=yes"], "'/gateway/tls/enabled'"),
    (["--set", "gateway.tls.secretName=Not_A_Name"], "'/gateway/tls/secretName'"),
    (["--set", "gateway.tls.cyphers=x"], "'cyphers' not allowed"),
    (["--set", "gateway.reloadInterval=10"], "'/gateway/reloadInterval'"),
    # 0 turns the gateway's reloading off: renewed certificates would never be read.
    (["--set", "gateway.reloadInterval=0s"], "'/gateway/reloadInterval'"),
    (["--set", "gateway.auth.fileSecret.nmae=x"], "'nmae' not allowed"),
    (["--set", "gateway.auth.fileSecret.key=a/b"], "'/gateway/auth/fileSecret/key'"),
    ([*AUTH_FILE, "--set", "gateway.auth.fileSecret.key="], "'/gateway/auth/fileSecret/key'"),
])
def test_schema_refuses_bad_tls_and_auth_file_values(args, message):
    r = template(*args)
    assert r.returncode != 0 and message in r.stderr, r.stderr


# ---- the spool -----------------------------------------------------------------------

SPOOL = ["--set", "gateway.spool.enabled=true"]
CLAIM = [*SPOOL, "--set", "gateway.spool.persistentVolumeClaim.claimName=gw-spool",
         "--set", "gateway.autoscaling.enabled=false", "--set", "gateway.replicas=1"]


def spool_volume(pod, c):
    """The volume mounted, writable, at INGEST_SPOOL_DIR."""
    path = env_of(c)["INGEST_SPOOL_DIR"]["value"]
    (m,) = [m for m in c["volumeMounts"] if m["mountPath"] == path]
    assert not m.get("readOnly") and "subPath" not in m, m
    (vol,) = [v for v in pod["volumes"] if v["name"] == m["name"]]
    return vol


def test_spool_off_by_default():
    d, pod, c = gateway_pod(render())
    assert not [n for n in env_of(c) if n.startswith("INGEST_SPOOL")]
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp"]
    assert d["spec"]["strategy"]["type"] == "RollingUpdate"


@pytest.mark.parametrize("args,max_bytes,size_limit", [
    ([], "1GiB", "1281Mi"),
    (["--set-string", "gateway.spool.maxBytes=100M"], "100M", "126Mi"),  # the gateway's M is MiB
    (["--set", "gateway.spool.maxBytes=65536"], "65536", "2Mi"),
    (["--set", "gateway.spool.maxBytes=4294967296"], "4294967296", "5121Mi"),  # a number, not 4.294967296e+09
])
def test_spool_in_an_emptydir_above_max_bytes(args, max_bytes, size_limit):
    d, pod, c = gateway_pod(render(*SPOOL, *args))
    env = env_of(c)
    assert env["INGEST_SPOOL"]["value"] == "always"
    assert env["INGEST_SPOOL_MAX_BYTES"]["value"] == max_bytes
    assert "INGEST_SPOOL_MAX_AGE" not in env  # the gateway's own default
    vol = spool_volume(pod, c)
    # Above maxBytes (which counts segment files only): the kubelet evicts a pod past its
    # emptyDir's limit, and the spool would go with it.
    assert vol == {"name": vol["name"], "emptyDir": {"sizeLimit": size_limit}}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # Each pod its own spool: the usual rollout and the HPA stay.
    assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "fsGroup" not in pod["securityContext"]


def test_spool_values_reach_the_gateway():
    d, pod, c = gateway_pod(render("-f", str(FULL_VALUES)))
    env = env_of(c)
    assert (env["INGEST_SPOOL"]["value"], env["INGEST_SPOOL_MAX_BYTES"]["value"],
            env["INGEST_SPOOL_MAX_AGE"]["value"]) == ("always", "2GiB", "24h")
    assert spool_volume(pod, c)["emptyDir"] == {"sizeLimit": "2561Mi"}


def test_spool_settings_are_the_gateways():
    binary = BIN / "gateway"
    assert binary.is_file(), f"{binary} missing: build Release first (tests/run does)"
    known = set(re.findall(r"env (INGEST_[A-Z0-9_]+)",
                           subprocess.run([str(binary), "--help"], capture_output=True, text=True).stdout))
    _, _, c = gateway_pod(render(*CLAIM, "--set", "gateway.spool.maxAge=30m"))
    names = {n for n in env_of(c) if n.startswith("INGEST_SPOOL")}
    assert names == {"INGEST_SPOOL", "INGEST_SPOOL_DIR", "INGEST_SPOOL_MAX_BYTES", "INGEST_SPOOL_MAX_AGE"}
    assert_settings_known(names - known)


def test_spool_on_an_existing_claim():
    d, pod, c = gateway_pod(render(*CLAIM))
    assert spool_volume(pod, c) == {"name": "spool", "persistentVolumeClaim": {"claimName": "gw-spool"}}
    assert d["spec"]["replicas"] == 1
    # The old gateway holds the spool's lock until it stops: a surge pod would never be ready.
    assert d["spec"]["strategy"] == {"type": "Recreate"}
    # The claim's root becomes the gateway's group; the rest of the pod's context stays.
    psc = pod["securityContext"]
    assert psc["fsGroup"] == psc["runAsGroup"] == 10001 and psc["fsGroupChangePolicy"] == "OnRootMismatch"
    assert psc["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # An fsGroup of the operator's own wins; the sink never gets one.
    docs = render(*CLAIM, "--set", "podSecurityContext.fsGroup=2000")
    assert gateway_pod(docs)[1]["securityContext"]["fsGroup"] == 2000
    assert "fsGroup" not in one(render(*CLAIM), "Deployment", "-sink")["spec"]["template"]["spec"]["securityContext"]
    # replicas 0 (scaled down) is one gateway at most too.
    assert gateway_pod(render(*CLAIM, "--set", "gateway.replicas=0"))[0]["spec"]["replicas"] == 0


@pytest.mark.parametrize("args,message", [
    ([*SPOOL, "--set", "gateway.spool.persistentVolumeClaim.claimName=gw-spool"],
     "claimName needs gateway.autoscaling.enabled=false: two gateways must never share one spool directory"),
    ([*CLAIM, "--set", "gateway.replicas=2"],
     "claimName needs gateway.replicas <= 1 (not 2): two gateways must never share one spool directory"),
    ([*SPOOL, "--set-string", "gateway.spool.maxBytes=32KiB"], 'gateway.spool.maxBytes "32KiB": the gateway takes'),
    ([*SPOOL, "--set-string", "gateway.spool.maxBytes=65535"], 'gateway.spool.maxBytes "65535": the gateway takes'),
    ([*SPOOL, "--set-string", "gateway.spool.maxBytes=2000000G"], 'gateway.spool.maxBytes "2000000G"'),
    ([*SPOOL, "--set", "gateway.settings.spool-dir=/tmp/spool"], "gateway.settings.spool-dir: set by the chart"),
    # Reserved with the spool off too: the spool goes through gateway.spool, with its volume.
    (["--set", "gateway.settings.spool=always"], "gateway.settings.spool: set by the chart"),
])
def test_spool_misuse_is_refused(args, message):
    r = template(*args)
    assert r.returncode != 0 and message in r.stderr, r.stderr


@pytest.mark.parametrize("args,message", [
    (["--set", "gateway.spool.mode=overflow"], "'/gateway/spool/mode'"),  # not in the gateway yet
    (["--set", "gateway.spool.mode=off"], "'/gateway/spool/mode'"),  # enabled says that
    (["--set-string", "gateway.spool.maxBytes=1Gi"], "'/gateway/spool/maxBytes'"),  # Kubernetes', not the gateway's
    (["--set-string", "gateway.spool.maxBytes=1.5GiB"], "'/gateway/spool/maxBytes'"),
    (["--set-string", "gateway.spool.maxBytes="], "'/gateway/spool/maxBytes'"),
    (["--set", "gateway.spool.maxBytes=1000"], "'/gateway/spool/maxBytes'"),
    (["--set", "gateway.spool.maxAge=1d"], "'/gateway/spool/maxAge'"),
    (["--set-string", "gateway.spool.enabled=yes"], "'/gateway/spool/enabled'"),
    (["--set", "gateway.spool.persistentVolumeClaim.claimName=Not_A_Claim"],
     "'/gateway/spool/persistentVolumeClaim/claimName'"),
    (["--set", "gateway.spool.sizeLimit=2Gi"], "'sizeLimit' not allowed"),
])
def test_schema_refuses_bad_spool_values(args, message):
    r = template(*args)
    assert r.returncode != 0 and message in r.stderr, r.stderr


@pytest.mark.parametrize("value", ["1GiB", "512MiB", "100M", "64KiB", "1073741824", "1G", "70000B"])
def test_spool_max_bytes_the_chart_takes_the_gateway_takes(value):
    """The chart's sizes are the gateway's: what the schema and the template let through,
    --spool-max-bytes parses and finds in its range (64KiB is its least)."""
    binary = BIN / "gateway"
    assert binary.is_file(), f"{binary} missing: build Release first (tests/run does)"
    _, pod, c = gateway_pod(render(*SPOOL, "--set-string", f"gateway.spool.maxBytes={value}"))
    r = subprocess.run([str(binary), "--spool-max-bytes=" + env_of(c)["INGEST_SPOOL_MAX_BYTES"]["value"],
                        "--spool-max-bytes=x"], capture_output=True, text=True, timeout=30)
    # The first is taken; only the second is refused.
    assert r.returncode != 0 and "'x' is not a valid BYTES" in r.stderr, r.stderr
    assert f"'{value}'" not in r.stderr and "out of range" not in r.stderr, r.stderr


# ---- the Dockerfile ------------------------------------------------------------------

def dockerfile_stages():
    """{stage: {"from": image or stage, "packages": [apt-get install arguments]}} of the Dockerfile."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)$", line, re.I)
        if m:
            current = m.group(2)
            stages[current] = {"from": m.group(1), "packages": [], "lines": []}
            continue
        if current is None or not line or line.startswith("#"):
            continue
        stages[current]["lines"].append(line)
        for cmd in re.split(r"&&|;", line):
            words = cmd.split()
            if "apt-get" in words and "install" in words:
                args = words[words.index("install") + 1:]
                stages[current]["packages"] += [w for w in args if not w.startswith("-")]
    return stages


def runtime_packages(stages, target):
    pkgs, stage = [], target
    while stage in stages:
        pkgs += stages[stage]["packages"]
        stage = stages[stage]["from"]
    return pkgs, stage


def lib_sh_packages():
    m = re.search(r"LOCAL_PACKAGES=\(([^)]*)\)", (ROOT / "deploy" / "local" / "lib.sh").read_text())
    return m.group(1).split()


def test_dockerfile_builds_with_the_packages_of_lib_sh():
    stages = dockerfile_stages()
    build = stages["build"]
    assert build["from"] == "debian:bookworm"
    # clang's runtimes are for tests/fuzz only: the image is built with gcc.
    dev = {p for p in lib_sh_packages() if p.endswith("-dev") and not p.startswith("libclang-rt-")}
    wanted = dev | {p for p in lib_sh_packages() if p in {
        "cmake", "ninja-build", "pkg-config", "gcc", "protobuf-c-compiler", "protobuf-compiler",
        # deploy/local/grpc-core's: a C++ compiler, make, and curl for the grpcio sdist.
        "g++", "make", "curl", "ca-certificates"}}
    assert set(build["packages"]) == wanted
    assert any("-DCMAKE_BUILD_TYPE=Release" in line and "-G Ninja" in line for line in build["lines"])


@pytest.mark.parametrize("prog", ["gateway", "sink"])
def test_dockerfile_runtime_image(prog):
    stages = dockerfile_stages()
    pkgs, base = runtime_packages(stages, prog)
    assert base == "debian:bookworm-slim"
    assert not [p for p in pkgs if p.endswith("-dev")]
    lines = stages[prog]["lines"]
    assert f"COPY --from=build /src/build/bin/{prog} /usr/local/bin/{prog}" in lines
    assert f'ENTRYPOINT ["/usr/local/bin/{prog}"]' in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    uid = users[-1].partition(":")[0]
    assert uid.isdigit() and int(uid) > 0, "the last USER must be a numeric non-root uid (runAsNonRoot)"
    # The chart runs as that uid.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)


def apt(*args):
    return subprocess.run(["apt-cache", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("prog", ["gateway", "sink"])
def test_dockerfile_runtime_packages_cover_what_the_program_loads(prog):
    """Every shared library `ldd` finds for the built program belongs to a package the image installs,
    or to one those pull in; and every package named exists in Debian 12."""
    binary = BIN / prog
    assert binary.is_file(), f"{binary} missing: build Release first (tests/run does)"
    pkgs, _ = runtime_packages(dockerfile_stages(), prog)
    for p in pkgs:
        r = apt("show", "--no-all-versions", p)
        assert r.returncode == 0 and f"Package: {p}" in r.stdout, f"{p}: not in apt-cache (apt-get update?)"
    r = apt("depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
            "--no-replaces", "--no-enhances", *pkgs)
    assert r.returncode == 0, r.stderr
    closure = {line.strip() for line in r.stdout.splitlines() if line and not line[0].isspace()}
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"=> (/\S+)", ldd)
    assert libs, ldd
    missing = {}
    for lib in libs:
        owner = dpkg_owner(Path(lib).resolve())
        assert owner, f"{lib}: no Debian package owns it"
        if owner not in closure:
            missing[lib] = owner
    assert not missing, f"{prog} loads libraries whose packages the image lacks: {missing}"


def dpkg_owner(path):
    """The package that owns a library; Debian 12 merged /lib into /usr/lib, dpkg knows either name."""
    s = str(path)
    for candidate in (s, s.removeprefix("/usr"), "/usr" + s):
        r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            if not line.startswith("diversion"):
                return line.partition(":")[0]
    return None
