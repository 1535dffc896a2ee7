"""BOUNDARY test (no cluster here): deploy/k8s/serving.yaml validates STRICTLY against the Kubernetes schema and fits the real server and CLI."""

from __future__ import annotations

import asyncio
import copy
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import uvicorn
import yaml

import aiflow.serving.online as online
from aiflow.cli.main import main as aiflow_main
from aiflow.serving.auth import TOKEN_ENV, TOKENS_FILE_ENV, TokenSource
from aiflow.serving.online import ServeConfig, create_app
from aiflow.storage.lake import Lake
from tests.aiflow.serving.conftest import free_port
from tests.aiflow.serving.test_online_tls import self_signed

pytestmark = pytest.mark.k8s_boundary

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "k8s" / "serving.yaml"
K8S_VERSION = kubernetes_validate.utils.latest_version()  # the version tests/k8s/test_manifests.py uses


def documents() -> list[dict]:
    return list(yaml.safe_load_all(MANIFEST.read_text()))


@pytest.fixture
def docs() -> dict[str, dict]:
    by_kind = {d["kind"]: d for d in documents()}
    assert set(by_kind) == {"ServiceAccount", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    return by_kind


def container_of(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def port_number(container: dict, port: int | str) -> int:
    """A probe's or Service's port (a name or a number) as the container's port number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.fixture
def app(tmp_path):
    """The real server's ASGI app (lifespan not started: no model is needed to see its routes and auth)."""
    return create_app(ServeConfig(lake=Lake(tmp_path / "lake"), artifact_root=str(tmp_path / "art"), datasets=["flights"],
                                  tokens=TokenSource(["a-real-token"])))  # fmt: skip


def status(app, path: str, headers: dict | None = None) -> int:
    """GET ``path`` from the app in process (real HTTP semantics through httpx's ASGI transport)."""

    async def get() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as client:
            return (await client.get(path, headers=headers)).status_code

    return asyncio.run(get())


def test_every_document_validates_strictly():
    for document in documents():
        assert kubernetes_validate.validate(document, K8S_VERSION, strict=True) == ".".join(K8S_VERSION.split(".")[:2])


def test_a_misspelled_field_is_rejected_by_the_strict_schema(docs):
    """Proves the validation is real: a typo in a probe passes the lax schema, not the strict one."""
    broken = copy.deepcopy(docs["Deployment"])
    container_of(broken)["readinessProbe"]["httpGet"]["paht"] = "/v2/health/ready"
    kubernetes_validate.validate(broken, K8S_VERSION, strict=False)
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_probes_and_scrape_point_at_routes_the_real_server_serves(docs, app):
    container = container_of(docs["Deployment"])
    routes = {getattr(r, "path", None) for r in app.routes}
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/v2/health/ready"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/v2/health/live"
    served_port = int(flag(container["command"], "--port"))
    for probe in probes.values():
        assert probe["path"] in routes, probe
        assert port_number(container, probe["port"]) == served_port
        # Kubelet probes carry no token: the probe paths must be open (no model loaded yet: ready says 503).
        assert status(app, probe["path"]) in (200, 503)
    assert status(app, "/v2/health/live") == 200

    annotations = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] in routes
    assert int(annotations["prometheus.io/port"]) == served_port
    # /metrics is behind the token (the manifest's comment tells the scrape job to send one).
    assert status(app, annotations["prometheus.io/path"]) == 401
    assert status(app, annotations["prometheus.io/path"], {"Authorization": "Bearer a-real-token"}) == 200


def test_container_command_runs_through_the_real_cli_with_the_manifest_env(docs, tmp_path, monkeypatch):
    """`aiflow serve ...` as the pod runs it: the real argparse parser, the k8s profile from the manifest's env, the token file."""
    deployment = docs["Deployment"]
    container = container_of(deployment)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["command"][:2] == ["aiflow", "serve"]

    # The token file, at the path the Secret volume puts it (re-rooted under tmp_path).
    token_path = env[TOKENS_FILE_ENV]
    local_tokens = tmp_path / token_path.lstrip("/")
    local_tokens.parent.mkdir(parents=True)
    local_tokens.write_text("# rotated by kubectl\ntoken-from-the-secret\n")
    for var in (TOKEN_ENV, "AIFLOW_DATASETS", "AIFLOW_DATASET", "AIFLOW_HOME"):
        monkeypatch.delenv(var, raising=False)
    for name, value in env.items():
        if name.startswith("AIFLOW_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv(TOKENS_FILE_ENV, str(local_tokens))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # what envFrom aiflow-aws supplies
        monkeypatch.setenv(var, "stand-in")

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.update(app=app, **kwargs))
    real_create_app = online.create_app
    monkeypatch.setattr(online, "create_app", lambda config: started.update(config=config) or real_create_app(config))

    assert aiflow_main(container["command"][1:]) == 0  # argparse exits 2 on an unknown flag
    config: ServeConfig = started["config"]
    assert started["host"] == "0.0.0.0"
    assert started["port"] == port_number(container, "https")
    assert (started["ssl_certfile"], started["ssl_keyfile"]) == (
        flag(container["command"], "--tls-cert"),
        flag(container["command"], "--tls-key"),
    )
    assert config.lake.root == env["AIFLOW_LAKE_URI"] and config.artifact_root == env["AIFLOW_ARTIFACT_URI"]
    assert config.tokens.valid("Bearer token-from-the-secret") and not config.tokens.valid("Bearer other")

    # SIGTERM comes after preStop; then uvicorn drains for timeout_graceful_shutdown and the log flushes once more.
    spec = deployment["spec"]["template"]["spec"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + started["timeout_graceful_shutdown"] + config.log_interval
    assert config.inference_log and config.log_interval == float(flag(container["command"], "--log-interval"))
    assert spec["terminationGracePeriodSeconds"] > needed + 5  # + a slow S3 append


def test_the_token_comes_from_a_rotatable_secret_file_never_a_literal(docs):
    container = container_of(docs["Deployment"])
    spec = docs["Deployment"]["spec"]["template"]["spec"]
    assert not any(e["name"] == TOKEN_ENV for e in container["env"])  # not even from secretKeyRef: rotation needs no restart
    assert not any(re.search(r"token", e["name"], re.I) and e["name"] != TOKENS_FILE_ENV for e in container["env"])
    assert all(d["kind"] != "Secret" for d in documents())  # the Secret is created by kubectl, never committed

    token_file = Path({e["name"]: e["value"] for e in container["env"]}[TOKENS_FILE_ENV])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == token_file.parent]
    assert "subPath" not in mount  # subPath mounts never see a Secret's update
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "aiflow-serve-tokens"
    assert [i["path"] for i in volume["secret"]["items"]] == [token_file.name]
    assert volume["secret"]["defaultMode"] == 0o440 and spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"]


def test_s3_credentials_come_from_the_training_secret(docs):
    """The same secret the run and training pods get (deploy/k8s/dagster.yaml and the Helm values)."""
    container = container_of(docs["Deployment"])
    instance = yaml.safe_load((ROOT / "deploy" / "k8s" / "dagster.yaml").read_text())
    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    (code_location,) = values["dagster-user-deployments"]["deployments"]
    (secret,) = [s["secretRef"]["name"] for s in container["envFrom"]]
    assert secret in instance["run_launcher"]["config"]["env_secrets"]
    assert {"name": secret} in code_location["envSecrets"]
    assert not any(e["name"].startswith("AWS_") for e in container["env"])


def test_pod_is_non_root_read_only_and_bounded(docs):
    spec = docs["Deployment"]["spec"]["template"]["spec"]
    container = container_of(docs["Deployment"])
    dockerfile_user = [line.split()[1] for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    assert [str(spec["securityContext"]["runAsUser"])] == dockerfile_user and spec["securityContext"]["runAsNonRoot"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    writable = {m["mountPath"] for m in container["volumeMounts"] for v in spec["volumes"] if v["name"] == m["name"] and "emptyDir" in v}
    env = {e["name"]: e["value"] for e in container["env"]}
    for var in ("TMPDIR", "HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR"):
        assert any(env[var] == w or env[var].startswith(w + "/") for w in writable), var
    for key in ("cpu", "memory"):
        assert container["resources"]["requests"][key] and container["resources"]["limits"][key]


def test_service_hpa_and_pdb_select_the_serving_pods(docs):
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = container_of(deployment)

    def selects(selector: dict) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    service = docs["Service"]["spec"]
    assert service["type"] == "ClusterIP" and selects(service["selector"])
    (port,) = service["ports"]
    assert port["name"] == "https" and port["port"] == 443 and port["appProtocol"] == "https"
    assert port_number(container, port["targetPort"]) == int(flag(container["command"], "--port"))

    hpa = docs["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the count; apply must not reset it

    pdb = docs["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1" and selects(pdb["spec"]["selector"]["matchLabels"])
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a node drain can always evict one
    assert spec_service_account(deployment) == docs["ServiceAccount"]["metadata"]["name"]


def spec_service_account(deployment: dict) -> str:
    return deployment["spec"]["template"]["spec"]["serviceAccountName"]


def _kubelet_writes(folder: Path, generation: str, tokens: str) -> None:
    """Update a Secret volume as the kubelet's atomic writer does: a new timestamped folder, then swap the ``..data`` symlink."""
    (folder / generation).mkdir()
    (folder / generation / "tokens").write_text(tokens)
    (folder / "..data_tmp").symlink_to(generation)
    (folder / "..data_tmp").rename(folder / "..data")  # rename(2) over the old symlink: atomic
    if not (folder / "tokens").is_symlink():
        (folder / "tokens").symlink_to("..data/tokens")


def test_a_token_rotated_in_the_mounted_secret_is_honoured_without_a_restart(docs, tmp_path):
    """The rotation the manifest promises: the server's token source follows the Secret volume's symlink swap."""
    container = container_of(docs["Deployment"])
    mounted = tmp_path / Path({e["name"]: e["value"] for e in container["env"]}[TOKENS_FILE_ENV]).relative_to("/")
    mounted.parent.mkdir(parents=True)
    _kubelet_writes(mounted.parent, "..2026_01_01_00_00_00.1", "old-token\n")
    tokens = TokenSource.from_env({TOKENS_FILE_ENV: str(mounted)})  # as `aiflow serve` builds it
    assert tokens.valid("Bearer old-token") and not tokens.valid("Bearer new-token")

    _kubelet_writes(mounted.parent, "..2026_01_01_00_01_00.2", "old-token\nnew-token\n")  # step 1: both valid
    assert tokens.valid("Bearer old-token") and tokens.valid("Bearer new-token")
    _kubelet_writes(mounted.parent, "..2026_01_01_00_02_00.3", "new-token\n")  # step 2: the old one dropped
    assert tokens.valid("Bearer new-token") and not tokens.valid("Bearer old-token")


# --- TLS: the server speaks HTTPS with the certificate of a kubernetes.io/tls Secret --------------------------------------

TLS_SECRET = "aiflow-serve-tls"
TLS_KEYS = {"--tls-cert": "tls.crt", "--tls-key": "tls.key"}  # the data keys of a kubernetes.io/tls Secret


def tls_problems(by_kind: dict[str, dict]) -> list[str]:
    """Everything that keeps the serving manifest from serving HTTPS end to end (empty: fine)."""
    problems = []
    deployment = by_kind["Deployment"]
    container, spec = container_of(deployment), deployment["spec"]["template"]["spec"]
    command = container["command"]
    for option, key in TLS_KEYS.items():
        if option not in command:
            problems.append(f"the server is not started with {option}")
            continue
        path = Path(flag(command, option))
        mounts = [m for m in container.get("volumeMounts", []) if Path(m["mountPath"]) == path.parent]
        volumes = [v for m in mounts for v in spec["volumes"] if v["name"] == m["name"] and "secret" in v]
        if not volumes or any("subPath" in m for m in mounts):
            problems.append(f"{option} {path}: no Secret volume is mounted (without subPath) at {path.parent}")
            continue
        secret = volumes[0]["secret"]
        if secret["secretName"] != TLS_SECRET or {"key": key, "path": path.name} not in secret.get("items", []):
            problems.append(f"{option} {path}: the mounted Secret does not put its {key!r} key at {path.name!r}")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if container[kind]["httpGet"].get("scheme") != "HTTPS":
            problems.append(f"{kind} does not use scheme HTTPS: the kubelet would speak plain HTTP to a TLS port")
    service_ports = by_kind["Service"]["spec"]["ports"]
    if [p["port"] for p in service_ports] != [443] or any(p.get("appProtocol") != "https" for p in service_ports):
        problems.append(f"the Service should expose 443 (appProtocol https), not {[p['port'] for p in service_ports]}")
    if deployment["spec"]["template"]["metadata"]["annotations"].get("prometheus.io/scheme") != "https":
        problems.append("the Prometheus scrape annotation still says http")
    return problems


def test_the_server_is_started_with_the_certificate_of_the_mounted_tls_secret(docs):
    assert tls_problems(docs) == []
    assert kubernetes_validate.validate(docs["Deployment"], K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    "edit, complaint",
    [
        (lambda c, spec: c["command"].__setitem__(slice(None), c["command"][: c["command"].index("--tls-cert")]), "--tls-cert"),
        (lambda c, spec: c["readinessProbe"]["httpGet"].pop("scheme"), "readinessProbe"),
        (lambda c, spec: c["volumeMounts"].__setitem__(slice(None), [m for m in c["volumeMounts"] if "tls" not in m["name"]]), "no Secret"),
        (lambda c, spec: [v for v in spec["volumes"] if v["name"] == "serve-tls"][0]["secret"].update(secretName="other"), "tls.crt"),
    ],
    ids=["no-tls-flags", "http-probe", "no-mount", "wrong-secret"],
)
def test_the_tls_checker_rejects_a_manifest_that_would_not_serve_https(docs, edit, complaint):
    broken = copy.deepcopy(docs)
    edit(container_of(broken["Deployment"]), broken["Deployment"]["spec"]["template"]["spec"])
    assert any(complaint in p for p in tls_problems(broken)), tls_problems(broken)


def test_the_manifest_command_serves_https_with_the_secret_files(docs, tmp_path):
    """The real `aiflow serve` run with the manifest's command line: the certificate at the paths the Secret mount
    provides (re-rooted under tmp_path), the probes' paths answer over HTTPS on the probe port, plain HTTP does not."""
    container = container_of(docs["Deployment"])
    command = list(container["command"])
    cert, key = (tmp_path / flag(command, option).lstrip("/") for option in TLS_KEYS)
    cert.parent.mkdir(parents=True)
    made_cert, made_key = self_signed(tmp_path)
    Path(made_cert).rename(cert), Path(made_key).rename(key)
    port = free_port()
    for option, value in (("--tls-cert", str(cert)), ("--tls-key", str(key)), ("--host", "127.0.0.1"), ("--port", str(port))):
        command[command.index(option) + 1] = value
    env = {"PATH": "/usr/bin:/bin", "AIFLOW_HOME": str(tmp_path / "home"), "AIFLOW_SERVE_TOKEN": "a-real-token", "TMPDIR": str(tmp_path)}
    server = subprocess.Popen([sys.executable, "-m", "aiflow.cli.main", *command[1:]], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        verify = ssl.create_default_context(cafile=str(cert))
        deadline, live = time.monotonic() + 30, None
        while live is None and time.monotonic() < deadline and server.poll() is None:
            try:
                live = httpx.get(f"https://127.0.0.1:{port}{container['livenessProbe']['httpGet']['path']}", verify=verify, timeout=1)
            except httpx.TransportError:
                time.sleep(0.1)
        assert live is not None and live.status_code == 200, server.stdout.read() if server.poll() is not None else "no answer"
        ready = httpx.get(f"https://127.0.0.1:{port}{container['readinessProbe']['httpGet']['path']}", verify=verify, timeout=5)
        assert ready.status_code == 503  # an empty home: no champion yet, so not ready - but answered over TLS
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=1)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
