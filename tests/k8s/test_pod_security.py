"""BOUNDARY test (no cluster here): every pod of deploy/ and every pod aiflow's code builds passes the Pod Security "restricted"
profile the namespace enforces, runs with a read-only root, and validates strictly; the checker itself refuses bad edits."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config
from dagster_k8s.pipes import build_pod_body

from resources.k8s_tags import GPU_OP_TAGS
from resources.k8s_training import K8sTrainingLauncher
from tests.k8s.pod_security import hardening_problems, restricted_violations
from tests.k8s.test_least_privilege import run_pod_spec

pytestmark = pytest.mark.k8s_boundary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
HOME = "/opt/dagster/dagster_home"
serialize = kubernetes.client.ApiClient().sanitize_for_serialization


def values() -> dict:
    return yaml.safe_load((K8S / "values.yaml").read_text())


def deployment_pod(name: str) -> dict:
    (deployment,) = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d and d["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]


def chart_pod(component: dict, image: str, *, init: bool = False, extra_mounts: bool = True) -> dict:
    """A pod of the chart's webserver / daemon / migrate Job from its values (helm/dagster templates: the instance
    ConfigMap mounted by subPath, the values' volumes, the component's pod and container securityContext, which the
    webserver's init containers - pg_isready and the code server's DNS wait - take too)."""
    mounts = [{"name": "dagster-instance", "mountPath": f"{HOME}/dagster.yaml", "subPath": "dagster.yaml"}]
    volumes = [{"name": "dagster-instance", "configMap": {"name": "dagster-instance"}}]
    if extra_mounts:
        mounts += component.get("volumeMounts", [])
        volumes += component.get("volumes", [])
    container = {"name": "dagster", "image": image, "securityContext": component["securityContext"], "volumeMounts": mounts}
    spec = {"securityContext": component["podSecurityContext"], "containers": [container], "volumes": volumes}
    if init:
        spec["initContainers"] = [
            {"name": "check-db-ready", "image": "postgres:16", "securityContext": component["securityContext"]},
            {"name": "init-user-deployment-aiflow", "image": "busybox:1.36", "securityContext": component["securityContext"]},
        ]
    return spec


def code_location_pod(v: dict) -> dict:
    (deployment,) = v["dagster-user-deployments"]["deployments"]
    container = {"name": "dagster-user-deployments", "image": "REGISTRY/aiflow:0.1.0",
                 "securityContext": deployment["securityContext"], "volumeMounts": deployment.get("volumeMounts", [])}  # fmt: skip
    return {"securityContext": deployment["podSecurityContext"], "containers": [container], "volumes": deployment.get("volumes", [])}


def training_pod(**options) -> dict:
    launcher = K8sTrainingLauncher(image="registry.example.com/aiflow:0.1.0-cuda", env_from_secrets=["aiflow-aws"], **options)
    pod = build_pod_body(pod_name="t", image=launcher.image, command=launcher.pod_command(), env_vars={},
                         base_pod_meta=launcher.base_pod_meta(), base_pod_spec=launcher.base_pod_spec())  # fmt: skip
    return serialize(pod)["spec"]


def gpu_step_pod() -> dict:
    job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(job_image="registry.example.com/aiflow:0.1.0-cuda", dagster_home=HOME, instance_config_map="dagster-instance"),
        args=["dagster", "api", "execute_step"], job_name="dagster-step-1", pod_name="dagster-step-1", component="step_worker",
        # op tags reach the step as strings (the execution plan serializes them), as tests/k8s/test_manifests.py shows
        user_defined_k8s_config=get_user_defined_k8s_config({k: json.dumps(v) if isinstance(v, dict) else v for k, v in GPU_OP_TAGS.items()}),
    )  # fmt: skip
    return serialize(job)["spec"]["template"]["spec"]


def every_pod() -> dict[str, dict]:
    """Each pod's spec (a fresh copy: tests may edit it)."""
    return copy.deepcopy(_every_pod())


@functools.cache
def _every_pod() -> dict[str, dict]:
    v = values()
    return {
        "webserver": chart_pod(v["dagsterWebserver"], "docker.io/dagster/dagster-celery-k8s:1.13.0", init=True),
        "daemon": chart_pod(v["dagsterDaemon"], "docker.io/dagster/dagster-celery-k8s:1.13.0"),
        "code location": code_location_pod(v),
        "run pod": run_pod_spec(v),
        "training pod": training_pod(),
        "training pod, 4 GPUs": training_pod(gpus=4),
        "GPU step Job": gpu_step_pod(),
        "server": deployment_pod("serving.yaml"),
        "oauth2-proxy": deployment_pod("oauth2-proxy.yaml"),
    }


@pytest.mark.parametrize("name", list(every_pod()))
def test_every_pod_passes_the_restricted_profile_with_a_read_only_root(name):
    spec = every_pod()[name]
    assert restricted_violations(spec) == []
    assert hardening_problems(spec) == []
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
    for container in spec.get("initContainers", []) + spec["containers"]:
        container.setdefault("image", "registry.example.com/aiflow:0.1.0")
    assert kubernetes_validate.validate(manifest, kubernetes_validate.utils.latest_version(), strict=True)


def test_the_writable_paths_are_emptydirs_where_the_code_writes():
    """Read-only roots need the scratch: TMPDIR/HOME point at a mounted emptyDir in the code's pods and the server's."""
    pods = every_pod()
    for name in ("training pod", "run pod", "server"):
        spec = pods[name]
        (container,) = [c for c in spec["containers"]]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        assert mounts[env["TMPDIR"]] in empty_dirs and env["HOME"] in mounts, name


def test_the_namespace_enforces_the_restricted_level():
    (namespace,) = [d for d in yaml.safe_load_all((K8S / "namespace.yaml").read_text()) if d]
    kubernetes_validate.validate(namespace, kubernetes_validate.utils.latest_version(), strict=True)
    labels = namespace["metadata"]["labels"]
    assert namespace["metadata"]["name"] == "aiflow" and labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "kubectl apply -f deploy/k8s/namespace.yaml" in (ROOT / "deploy" / "README.md").read_text()


def _container(spec: dict) -> dict:
    return spec["containers"][0]


@pytest.mark.parametrize(
    "edit, complaint",
    [
        (lambda s: _container(s)["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
        (lambda s: _container(s)["securityContext"]["capabilities"].update(drop=[]), "drop ALL"),
        (lambda s: _container(s)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "SYS_ADMIN"),
        (lambda s: s["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda s: s["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (lambda s: s["securityContext"].update(runAsUser=0), "runAsUser 0"),
        (lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda s: s.update(hostNetwork=True), "hostNetwork"),
        (lambda s: _container(s)["securityContext"].update(privileged=True), "privileged"),
        (lambda s: _container(s).setdefault("ports", []).append({"containerPort": 1, "hostPort": 1}), "hostPort"),
        (lambda s: _container(s)["securityContext"].update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
        (lambda s: s.update(volumes=[]), "no volume of the pod"),
    ],
    ids=["escalation", "caps", "cap-add", "root-ok", "no-seccomp", "uid-0", "host-path", "host-network", "privileged",
         "host-port", "writable-root", "dangling-mount"],  # fmt: skip
)
def test_the_checker_names_each_broken_rule_on_the_training_pod(edit, complaint):
    spec = copy.deepcopy(training_pod())
    edit(spec)
    problems = restricted_violations(spec) + hardening_problems(spec)
    assert any(complaint in p for p in problems), problems
