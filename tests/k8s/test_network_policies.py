"""BOUNDARY test (no cluster, no CNI here): deploy/k8s/network-policies.yaml, evaluated against the labels the real pods carry,
lets exactly the flows the components need through and denies the rest; the webserver is reachable only via oauth2-proxy."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster_k8s.pipes import build_pod_body

from resources.k8s_training import K8sTrainingLauncher
from tests.k8s.netpol import Pod, allowed
from tests.k8s.test_helm_values import run_job

pytestmark = pytest.mark.k8s_boundary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
NS = "aiflow"


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


@functools.cache
def policies() -> list[dict]:
    return docs("network-policies.yaml")


def values() -> dict:
    return yaml.safe_load((K8S / "values.yaml").read_text())


def template_labels(name: str, kind: str = "Deployment") -> dict[str, str]:
    (deployment,) = [d for d in docs(name) if d["kind"] == kind]
    return deployment["spec"]["template"]["metadata"]["labels"]


# The chart's pod labels (helm/dagster: dagster.selectorLabels + component; the user-deployments subchart's name).
CHART = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": "dagster"}
WEBSERVER = Pod(NS, {**CHART, "component": "dagster-webserver"})
DAEMON = Pod(NS, {**CHART, "component": "dagster-daemon"})
CODE = Pod(NS, {"app.kubernetes.io/name": "dagster-user-deployments", "app.kubernetes.io/instance": "dagster",
                "component": "user-deployments", "deployment": "aiflow"})  # fmt: skip
INTRUDER = Pod(NS, {"app": "anything-else"})
OTHER_NAMESPACE = Pod("default", {"app": "x"})
INGRESS = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
POSTGRES, API, S3, METADATA, PRIVATE = "10.0.64.5", "10.0.0.10", "52.217.10.1", "169.254.169.254", "10.1.2.3"


@functools.cache
def run_pod() -> Pod:
    """A run pod as dagster-k8s labels it (the run Job of the values' runK8sConfig, plus the launcher's labels)."""
    launcher = values()["runLauncher"]["config"]["k8sRunLauncher"]
    labels = run_job(launcher["runK8sConfig"])["spec"]["template"]["metadata"]["labels"]
    return Pod(NS, {**labels, **launcher["labels"]})


@functools.cache
def training_pod() -> Pod:
    """The training pod the code builds (K8sTrainingLauncher through dagster-k8s's build_pod_body)."""
    launcher = K8sTrainingLauncher(image="registry.example.com/aiflow:0.1.0")
    pod = build_pod_body(pod_name="t", image=launcher.image, command=launcher.command, env_vars={},
                         base_pod_meta=launcher.base_pod_meta(), base_pod_spec=launcher.base_pod_spec())  # fmt: skip
    return Pod(NS, kubernetes.client.ApiClient().sanitize_for_serialization(pod)["metadata"]["labels"])


def serving_pod() -> Pod:
    return Pod(NS, template_labels("serving.yaml"), {"https": 8443})


def proxy_pod() -> Pod:
    return Pod(NS, template_labels("oauth2-proxy.yaml"))


def webserver_port() -> int:
    return values()["dagsterWebserver"]["service"]["port"]


MUST = [
    ("ingress controller -> oauth2-proxy", lambda: (INGRESS, proxy_pod(), 4180)),
    ("oauth2-proxy -> webserver", lambda: (proxy_pod(), WEBSERVER, webserver_port())),
    ("oauth2-proxy -> OIDC issuer", lambda: (proxy_pod(), S3, 443)),
    ("webserver -> code server", lambda: (WEBSERVER, CODE, 3030)),
    ("daemon -> code server", lambda: (DAEMON, CODE, 3030)),
    ("webserver -> PostgreSQL", lambda: (WEBSERVER, POSTGRES, 5432)),
    ("webserver -> S3 compute logs", lambda: (WEBSERVER, S3, 443)),
    ("webserver -> Kubernetes API (terminates runs)", lambda: (WEBSERVER, API, 443)),
    ("daemon -> PostgreSQL", lambda: (DAEMON, POSTGRES, 5432)),
    ("daemon -> Kubernetes API (launches runs)", lambda: (DAEMON, API, 443)),
    ("code server -> PostgreSQL", lambda: (CODE, POSTGRES, 5432)),
    ("code server -> S3 (landing sensor)", lambda: (CODE, S3, 443)),
    ("run pod -> PostgreSQL", lambda: (run_pod(), POSTGRES, 5432)),
    ("run pod -> S3", lambda: (run_pod(), S3, 443)),
    ("run pod -> Kubernetes API (training pods)", lambda: (run_pod(), API, 443)),
    ("training -> S3", lambda: (training_pod(), S3, 443)),
    ("clients -> server port", lambda: (OTHER_NAMESPACE, serving_pod(), 8443)),
    ("ingress controller -> server port", lambda: (INGRESS, serving_pod(), 8443)),
    ("server -> S3", lambda: (serving_pod(), S3, 443)),
    ("run pod -> DNS", lambda: (run_pod(), DNS, 53, "UDP")),
    ("training -> DNS", lambda: (training_pod(), DNS, 53, "UDP")),
    ("webserver -> DNS over TCP", lambda: (WEBSERVER, DNS, 53)),
]

MUST_NOT = [
    ("another namespace -> webserver", lambda: (OTHER_NAMESPACE, WEBSERVER, webserver_port())),
    ("ingress controller -> webserver (bypassing the proxy)", lambda: (INGRESS, WEBSERVER, webserver_port())),
    ("any pod of the namespace -> webserver", lambda: (INTRUDER, WEBSERVER, webserver_port())),
    ("run pod -> webserver", lambda: (run_pod(), WEBSERVER, webserver_port())),
    ("another namespace -> code server", lambda: (OTHER_NAMESPACE, CODE, 3030)),
    ("any pod of the namespace -> code server", lambda: (INTRUDER, CODE, 3030)),
    ("training -> code server", lambda: (training_pod(), CODE, 3030)),
    ("server -> code server", lambda: (serving_pod(), CODE, 3030)),
    ("oauth2-proxy -> code server", lambda: (proxy_pod(), CODE, 3030)),
    ("training -> PostgreSQL", lambda: (training_pod(), POSTGRES, 5432)),
    ("server -> PostgreSQL", lambda: (serving_pod(), POSTGRES, 5432)),
    ("any pod of the namespace -> PostgreSQL", lambda: (INTRUDER, POSTGRES, 5432)),
    ("training -> Kubernetes API", lambda: (training_pod(), API, 443)),
    ("server -> Kubernetes API", lambda: (serving_pod(), API, 443)),
    ("code server -> Kubernetes API", lambda: (CODE, API, 443)),
    ("training -> instance metadata", lambda: (training_pod(), METADATA, 80)),
    ("run pod -> instance metadata", lambda: (run_pod(), METADATA, 80)),
    ("server -> another private address", lambda: (serving_pod(), PRIVATE, 443)),
    ("server on another port", lambda: (OTHER_NAMESPACE, serving_pod(), 9090)),
    ("anyone -> training pod", lambda: (run_pod(), training_pod(), 8080)),
    ("anyone -> run pod", lambda: (DAEMON, run_pod(), 8080)),
    ("server -> any pod of the namespace", lambda: (serving_pod(), INTRUDER, 8080)),
    ("another namespace -> any pod of the namespace", lambda: (OTHER_NAMESPACE, INTRUDER, 8080)),
    ("training -> S3 over plain HTTP", lambda: (training_pod(), S3, 80)),
]


@pytest.mark.parametrize("flow", [f for _, f in MUST], ids=[n for n, _ in MUST])
def test_each_flow_the_components_need_is_allowed(flow):
    assert allowed(policies(), *flow())


@pytest.mark.parametrize("flow", [f for _, f in MUST_NOT], ids=[n for n, _ in MUST_NOT])
def test_every_other_flow_is_denied(flow):
    assert not allowed(policies(), *flow())


def test_without_the_default_deny_the_evaluator_lets_an_intruder_in():
    """The denials above come from the policies, not from the evaluator: drop default-deny and uncovered pods are open."""
    rest = [p for p in copy.deepcopy(policies()) if p["metadata"]["name"] != "default-deny-all"]
    assert allowed(rest, OTHER_NAMESPACE, INTRUDER, 8080) and not allowed(policies(), OTHER_NAMESPACE, INTRUDER, 8080)
    assert not allowed(rest, INTRUDER, POSTGRES, 5432)  # allow-dns still restricts every pod's egress to DNS
    assert not allowed(rest, INTRUDER, CODE, 3030)  # the code server's own policy still admits only webserver and daemon


def test_every_policy_and_the_proxy_validate_strictly_in_the_namespace():
    version = kubernetes_validate.utils.latest_version()
    for document in policies() + docs("oauth2-proxy.yaml"):
        assert document["metadata"]["namespace"] == NS
        kubernetes_validate.validate(document, version, strict=True)
    (deny,) = [p for p in policies() if p["metadata"]["name"] == "default-deny-all"]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_the_webserver_is_reachable_only_through_the_authenticating_proxy():
    v = values()
    assert v["dagsterWebserver"]["service"]["type"] == "ClusterIP" and v["ingress"]["enabled"] is False
    (proxy,) = [d for d in docs("oauth2-proxy.yaml") if d["kind"] == "Deployment"]
    args = proxy["spec"]["template"]["spec"]["containers"][0]["args"]
    (upstream,) = [a.split("=", 1)[1] for a in args if a.startswith("--upstream=")]
    # the chart names the webserver's Service <release>-webserver
    assert upstream.startswith(f"http://dagster-webserver.{NS}.svc") and f":{webserver_port()}/" in upstream
    assert v["dagsterWebserver"]["readinessProbe"]["httpGet"]["port"] == webserver_port()
    (service,) = [d for d in docs("oauth2-proxy.yaml") if d["kind"] == "Service"]
    assert service["spec"]["type"] == "ClusterIP"  # exposed by the cluster's Ingress, with TLS there
