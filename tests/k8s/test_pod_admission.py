"""BOUNDARY test (no API server here): deploy/k8s/pod-admission.yaml's ValidatingAdmissionPolicy, its CEL evaluated for real with
cel-python (tests/k8s/admission.py), admits the training pod the code launches and the run Job the values render, and refuses
each forbidden property, one at a time, by the rule its message names; its parameters are the names the code and values use."""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path

import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster_k8s.pipes import build_pod_body

from resources.k8s_training import K8sTrainingLauncher
from resources.profiles import resources_for
from tests.k8s.admission import AdmissionPolicy
from tests.k8s.test_deploy_matches_code import code_location_env
from tests.k8s.test_least_privilege import run_pod_spec

pytestmark = pytest.mark.k8s_boundary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
NS = "aiflow"
RUN_SA, LAUNCHER_SA = "system:serviceaccount:aiflow:aiflow-run", "system:serviceaccount:aiflow:dagster"
serialize = kubernetes.client.ApiClient().sanitize_for_serialization


def documents() -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / "pod-admission.yaml").read_text()) if d]


def values() -> dict:
    return yaml.safe_load((K8S / "values.yaml").read_text())


@functools.cache
def admission() -> AdmissionPolicy:
    docs = documents()
    (policy,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    (binding,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    params = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "ConfigMap"}
    return AdmissionPolicy(policy, binding, params)


def params() -> dict[str, str]:
    (config_map,) = [d for d in documents() if d["kind"] == "ConfigMap"]
    return config_map["data"]


def message(rule: str) -> str:
    (found,) = [v["message"] for v in admission().policy["spec"]["validations"] if f"[{rule}]" in v["message"]]
    return found


@pytest.fixture
def k8s_env(monkeypatch):
    """The code location's environment from values.yaml (S3 keys: dummies), as the k8s profile reads it at run time."""
    for name, value in {**code_location_env(), "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def profile_launcher(**overrides) -> K8sTrainingLauncher:
    """The k8s profile's training launcher (resources/profiles.py) with the values' environment, image resolved."""
    launcher = resources_for("k8s")["trainer"]
    fields = {name: getattr(launcher, name) for name in ("namespace", "env_from_secrets", "env", "gpus")}
    return K8sTrainingLauncher(image=code_location_env()["AIFLOW_TRAINING_IMAGE"], **{**fields, **overrides})


def training_pod(launcher: K8sTrainingLauncher) -> dict:
    """The Pod PipesK8sClient.run submits for this launcher (dagster_k8s.pipes.build_pod_body, as it calls it)."""
    pod = build_pod_body(pod_name="dagster-pipes-1", image=launcher.image, command=launcher.pod_command(),
                         env_vars={"DAGSTER_PIPES_CONTEXT": "x"}, base_pod_meta=launcher.base_pod_meta(),
                         base_pod_spec=launcher.base_pod_spec())  # fmt: skip
    return {"apiVersion": "v1", "kind": "Pod", **serialize(pod)}


def run_job() -> dict:
    """The run Job K8sRunLauncher creates from the values (tests/k8s/test_least_privilege.run_pod_spec: the launcher's
    config merged with the code location's container context), with the code location's image, as the chart passes it."""
    v = values()
    (deployment,) = v["dagster-user-deployments"]["deployments"]
    spec = run_pod_spec(v)
    for container in spec["containers"]:
        container["image"] = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "dagster-run-1", "namespace": NS},
            "spec": {"backoffLimit": 0, "template": {"metadata": {}, "spec": spec}}}  # fmt: skip


# --- the manifests ---------------------------------------------------------------------------------------------------


def test_the_policy_its_binding_and_parameters_validate_strictly():
    """v1 of ValidatingAdmissionPolicy is in Kubernetes 1.30 and later; the schemas of 1.30 and the newest known say so."""
    docs = documents()
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    for version in ("1.30.0", kubernetes_validate.utils.latest_version()):
        for doc in docs:
            assert kubernetes_validate.validate(doc, version, strict=True)
    binding = admission().binding["spec"]
    assert binding["validationActions"] == ["Deny"] and binding["paramRef"]["parameterNotFoundAction"] == "Deny"
    assert admission().policy["spec"]["failurePolicy"] == "Fail"
    guide = (ROOT / "deploy" / "README.md").read_text()
    assert guide.index("kubectl apply -f deploy/k8s/pod-admission.yaml") < guide.index("helm upgrade --install")


def test_every_account_that_may_create_pods_or_jobs_is_checked():
    """Each service account rbac.yaml lets create pods or Jobs matches the policy; a controller's pods do not."""
    rbac = [d for d in yaml.safe_load_all((K8S / "rbac.yaml").read_text()) if d]
    creators = {r["metadata"]["name"] for r in rbac if r["kind"] == "Role" for rule in r["rules"]
                if "create" in rule["verbs"] and {"pods", "jobs"} & set(rule["resources"])}  # fmt: skip
    accounts = {f"system:serviceaccount:{s['namespace']}:{s['name']}" for b in rbac if b["kind"] == "RoleBinding"
                and b["roleRef"]["name"] in creators for s in b["subjects"]}  # fmt: skip
    assert accounts == {RUN_SA, LAUNCHER_SA}
    for account in accounts:
        assert admission().review(run_job(), username=account, namespace=NS).matched
    # The Job controller creates a run Job's pod (the Job was checked); a ReplicaSet's pods are the chart's and ours.
    pod = training_pod(profile_launcher_default())
    for controller in ("system:serviceaccount:kube-system:job-controller", "system:serviceaccount:kube-system:replicaset-controller"):
        assert not admission().review(pod, username=controller, namespace=NS).matched
    assert not admission().review(pod, username=RUN_SA, namespace="default").matched


def profile_launcher_default() -> K8sTrainingLauncher:
    return K8sTrainingLauncher(image=code_location_env()["AIFLOW_TRAINING_IMAGE"], env_from_secrets=["aiflow-aws"])


def test_the_parameters_are_the_names_the_code_and_the_values_use(k8s_env):
    data, v = params(), values()
    (deployment,) = v["dagster-user-deployments"]["deployments"]
    assert data["imageRepository"] == deployment["image"]["repository"]
    assert code_location_env()["AIFLOW_TRAINING_IMAGE"].startswith(data["imageRepository"] + ":")
    assert data["trainingServiceAccount"] == profile_launcher().service_account_name
    assert data["runServiceAccount"] == v["dagster-user-deployments"]["serviceAccount"]["name"]
    training = {k.removeprefix("trainingSecret.") for k in data if k.startswith("trainingSecret.")}
    assert training == set(resources_for("k8s")["trainer"].env_from_secrets) == {code_location_env()["AIFLOW_TRAINING_SECRET"]}
    run = {k.removeprefix("runSecret.") for k in data if k.startswith("runSecret.")}
    assert run == secrets_read(run_job()["spec"]["template"]["spec"])


def secrets_read(spec: dict) -> set[str]:
    """Every Secret a pod spec reads (volumes, projected volumes, envFrom, env valueFrom)."""
    names = {v["secret"]["secretName"] for v in spec.get("volumes", []) if v.get("secret")}
    names |= {s["secret"]["name"] for v in spec.get("volumes", []) if v.get("projected") for s in v["projected"]["sources"] if s.get("secret")}  # fmt: skip
    for c in spec["containers"]:
        names |= {e["secretRef"]["name"] for e in c.get("envFrom") or [] if e.get("secretRef")}
        names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env") or [] if (e.get("valueFrom") or {}).get("secretKeyRef")}  # fmt: skip
    return names


# --- admitted: what the code and the values create --------------------------------------------------------------------


@pytest.mark.parametrize("gpus", [1, 4])
def test_the_training_pod_the_profile_builds_is_admitted(k8s_env, gpus):
    pod = training_pod(profile_launcher(gpus=gpus))
    assert kubernetes_validate.validate(pod, kubernetes_validate.utils.latest_version(), strict=True)
    decision = admission().review(pod, username=RUN_SA, namespace=NS)
    assert decision.matched and decision.refusals == []


def test_the_pod_the_real_launch_submits_is_admitted(tmp_path, kubeconfig, stand_in, k8s_env):
    """The whole PipesK8sClient flow on the stand-in API (tests/k8s/test_pipes_flow.py; only the API is replaced, because
    no cluster runs here): the Pod our launcher really posts is what the policy admits."""
    from tests.k8s.test_pipes_flow import SCRIPT, SECRETS, _run

    api = stand_in(secrets=SECRETS)
    # Only what the stand-in needs differs from the profile: the command (it runs locally) and the kubeconfig.
    launcher = profile_launcher(command=[sys.executable, str(SCRIPT)], kubeconfig_file=kubeconfig,
                                load_incluster_config=False, poll_interval=0.05)  # fmt: skip
    assert _run(tmp_path, launcher, "ok").success
    (pod,) = api.created
    pod = {"apiVersion": "v1", "kind": "Pod", **pod}
    assert pod["spec"]["containers"][0]["image"] == code_location_env()["AIFLOW_TRAINING_IMAGE"]
    assert admission().review(pod, username=RUN_SA, namespace=NS).refusals == []


@pytest.mark.parametrize("creator", [LAUNCHER_SA, RUN_SA], ids=["run Job (daemon)", "step Job (run pod)"])
def test_the_run_job_the_values_render_is_admitted(creator):
    job = run_job()
    assert kubernetes_validate.validate(job, kubernetes_validate.utils.latest_version(), strict=True)
    decision = admission().review(job, username=creator, namespace=NS)
    assert decision.matched and decision.refusals == []


# --- refused: each forbidden property alone ---------------------------------------------------------------------------


def _c(spec: dict) -> dict:
    return spec["containers"][0]


def _foreign_init(spec: dict) -> None:
    init = copy.deepcopy(_c(spec))
    spec["initContainers"] = [{**init, "name": "fetch", "image": "docker.io/library/busybox:1.36"}]


POD_EDITS = {
    "privileged": [lambda s: _c(s)["securityContext"].update(privileged=True)],
    "privilege-escalation": [
        lambda s: _c(s)["securityContext"].update(allowPrivilegeEscalation=True),
        lambda s: _c(s)["securityContext"].pop("allowPrivilegeEscalation"),
    ],
    "root": [
        lambda s: s["securityContext"].update(runAsNonRoot=False),
        lambda s: s["securityContext"].pop("runAsNonRoot"),
        lambda s: s["securityContext"].update(runAsUser=0),
        lambda s: _c(s)["securityContext"].update(runAsUser=0),
        lambda s: _c(s)["securityContext"].update(runAsNonRoot=False),
    ],
    "capabilities": [
        lambda s: _c(s)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
        lambda s: _c(s)["securityContext"]["capabilities"].update(add=["NET_BIND_SERVICE"]),
        lambda s: _c(s)["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
    ],
    "host-namespaces": [lambda s: s.update(hostNetwork=True), lambda s: s.update(hostPID=True), lambda s: s.update(hostIPC=True)],
    "host-path": [lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/var/run"}})],
    "secrets": [
        lambda s: s["volumes"].append({"name": "tls", "secret": {"secretName": "aiflow-serve-tls"}}),
        lambda s: s["volumes"].append({"name": "p", "projected": {"sources": [{"secret": {"name": "aiflow-oauth2-proxy"}}]}}),
        lambda s: _c(s).setdefault("envFrom", []).append({"secretRef": {"name": "aiflow-serve-tokens"}}),
        lambda s: _c(s)["env"].append({"name": "PW", "valueFrom": {"secretKeyRef": {"name": "dagster-postgresql-secret", "key": "postgresql-password"}}}),
    ],
    "image": [
        lambda s: _c(s).update(image="docker.io/library/python:3.11"),
        lambda s: _c(s).update(image="REGISTRY/aiflow-evil:0.1.0"),  # the repository as a prefix of another name
        _foreign_init,
    ],
    "service-account": [
        lambda s: s.update(serviceAccountName="dagster"),
        lambda s: s.update(serviceAccountName="aiflow-run"),
        lambda s: s.pop("serviceAccountName"),
        lambda s: s.update(serviceAccount="dagster"),  # the deprecated alias
    ],
    "service-account-token": [
        lambda s: s.update(automountServiceAccountToken=True),
        lambda s: s.pop("automountServiceAccountToken"),  # the account's default would decide
        lambda s: s["volumes"].append({"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}),
    ],
}  # fmt: skip
POD_CASES = [(rule, edit) for rule, edits in POD_EDITS.items() for edit in edits]
POD_IDS = [f"{rule}-{i}" for rule, edits in POD_EDITS.items() for i in range(len(edits))]


@pytest.mark.parametrize("rule, edit", POD_CASES, ids=POD_IDS)
def test_a_training_pod_with_one_forbidden_property_is_refused_by_that_rule(rule, edit):
    pod = training_pod(profile_launcher_default())
    edit(pod["spec"])
    assert admission().review(pod, username=RUN_SA, namespace=NS).refusals == [message(rule)]


JOB_EDITS = {
    "privileged": lambda s: _c(s)["securityContext"].update(privileged=True),
    "privilege-escalation": lambda s: _c(s)["securityContext"].update(allowPrivilegeEscalation=True),
    "root": lambda s: s["securityContext"].update(runAsUser=0),
    "capabilities": lambda s: _c(s)["securityContext"]["capabilities"].update(add=["SYS_PTRACE"]),
    "host-namespaces": lambda s: s.update(hostNetwork=True),
    "host-path": lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
    "secrets": lambda s: _c(s)["envFrom"].append({"secretRef": {"name": "aiflow-serve-tls"}}),
    "image": lambda s: _c(s).update(image="ghcr.io/someone/miner:latest"),
    "service-account": lambda s: s.update(serviceAccountName="dagster"),
}


@pytest.mark.parametrize("rule", list(JOB_EDITS))
def test_a_run_job_with_one_forbidden_property_is_refused_by_that_rule(rule):
    job = run_job()
    JOB_EDITS[rule](job["spec"]["template"]["spec"])
    for creator in (LAUNCHER_SA, RUN_SA):
        assert admission().review(job, username=creator, namespace=NS).refusals == [message(rule)]


def test_each_role_reads_only_its_own_secrets():
    """The run pods' PostgreSQL password is not a training pod's; a run pod keeps its token, a training pod may not."""
    pod = training_pod(profile_launcher_default())
    pod["spec"]["volumes"].append({"name": "ca", "secret": {"secretName": "aiflow-postgres-ca"}})
    assert admission().review(pod, username=RUN_SA, namespace=NS).refusals == [message("secrets")]
    job = run_job()
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is True  # the run pod creates training pods
    assert admission().review(job, username=RUN_SA, namespace=NS).refusals == []


def test_without_its_parameters_the_binding_refuses_everything():
    policy = admission()
    unbound = AdmissionPolicy(policy.policy, policy.binding, params={})
    (refusal,) = unbound.review(training_pod(profile_launcher_default()), username=RUN_SA, namespace=NS).refusals
    assert "no params found" in refusal
