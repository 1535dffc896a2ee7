"""BOUNDARY test (no cluster, no AWS here): Kubernetes RBAC and the S3/KMS IAM policies give each component (run pods, training pods, server) only what its code uses."""

from __future__ import annotations

import copy
import datetime as dt
import fnmatch
import json
import re
from pathlib import Path

import dagster_k8s
import kubernetes
import pytest
import yaml
from dagster_k8s.pipes import build_pod_body

from aiflow.monitoring.history import decisions_table, reports_path
from aiflow.serving.feedback import labels_table
from aiflow.serving.inference_log import log_table
from aiflow.spec import demo_spec_path, load_spec
from aiflow.storage.lake import Tables
from aiflow.storage.landing import REJECTED_DIR
from aiflow.storage.settings import Settings
from resources.k8s_training import K8sTrainingLauncher

pytestmark = pytest.mark.k8s_boundary

ROOT = Path(__file__).resolve().parents[2]
K8S, AWS = ROOT / "deploy" / "k8s", ROOT / "deploy" / "aws"
NAMESPACE = "aiflow"
#: The chart's account (the daemon's: it launches run Jobs), the run pods' (they create training pods), and the
#: accounts that need no Kubernetes API at all.
CHART_SA, RUN_POD_SA, TRAINING_SA, SERVING_SA, PROXY_SA = "dagster", "aiflow-run", "aiflow-training", "aiflow-serving", "aiflow-oauth2-proxy"
#: The webserver's account (deploy/k8s/post-render puts the webserver on it): it terminates runs, creates nothing.
WEBSERVER_SA = "dagster-webserver"
#: Who may create what: the daemon run Jobs, the run pods training pods and step Jobs; nobody else anything.
CREATORS = {CHART_SA, RUN_POD_SA}
NO_API = (TRAINING_SA, SERVING_SA, PROXY_SA)


def manifests() -> list[dict]:
    names = ("rbac.yaml", "serving.yaml", "oauth2-proxy.yaml")
    return [d for name in names for d in yaml.safe_load_all((K8S / name).read_text()) if d]


# --- Kubernetes: every verb granted is one the code calls -------------------------------------------------------------

#: Kubernetes client method (without the namespace part) -> (API group, resource).
RESOURCES = {"pod": ("", "pods"), "pod_log": ("", "pods/log"), "event": ("", "events"), "job": ("batch", "jobs"),
             "job_status": ("batch", "jobs/status")}  # fmt: skip
VERBS = {"create": "create", "read": "get", "list": "list", "delete": "delete", "patch": "patch", "replace": "update"}
CALL = re.compile(r"\b(create|read|list|delete|patch|replace)_namespaced_([a-z_]+?)(?:_with_retries)?\b")


def api_calls() -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every namespaced call in dagster_k8s (run launcher, step Jobs, Pipes) and our resources/."""
    sources = [*Path(dagster_k8s.__file__).parent.rglob("*.py"), *(ROOT / "resources").rglob("*.py")]
    calls = set()
    for source in sources:
        for verb, kind in CALL.findall(source.read_text()):
            if kind in RESOURCES:
                calls.add((*RESOURCES[kind], VERBS[verb]))
    return calls


#: What the run pod cannot do without: our launcher (resources/k8s_training.py) and PipesK8sClient.
NEEDED = {("", "pods", v) for v in ("create", "get", "list", "delete")} | {("", "pods/log", "get"), ("", "events", "list")}
#: What K8sRunLauncher calls from the daemon and the webserver (launch, health check, debug info, terminate).
RUN_LAUNCHER_NEEDED = {("batch", "jobs", v) for v in ("create", "list", "delete")} | {("batch", "jobs/status", "get")} | {
    ("", "pods", "list"), ("", "pods", "delete"), ("", "pods/log", "get"), ("", "events", "list")}  # fmt: skip


def rbac_problems(documents: list[dict], used: set[tuple[str, str, str]]) -> list[str]:
    """Everything over-broad in the RBAC of aiflow's components (empty: fine)."""
    problems = []
    pod_creators = {d["metadata"]["name"] for d in documents if d["kind"] == "Role" and ("", "pods", "create") in granted([d])}
    creators = {d["metadata"]["name"] for d in documents if d["kind"] == "Role" and any(v == "create" for *_, v in granted([d]))}
    for doc in documents:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in ("ClusterRole", "ClusterRoleBinding"):
            problems.append(f"{kind} {name}: aiflow components get namespaced Roles only")
        if kind in ("Role", "RoleBinding", "ServiceAccount") and doc["metadata"].get("namespace") != NAMESPACE:
            problems.append(f"{kind} {name}: not in the namespace {NAMESPACE}")
        for rule in doc.get("rules", []) if kind == "Role" else []:
            for field in ("apiGroups", "resources", "verbs"):
                if "*" in rule.get(field, []):
                    problems.append(f"Role {name}: wildcard in {field}")
            if "nonResourceURLs" in rule:
                problems.append(f"Role {name}: nonResourceURLs")
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        if (group, resource, verb) not in used:
                            problems.append(f"Role {name}: {verb} {resource!r} (group {group!r}) is granted but no code calls it")
        if kind == "RoleBinding":
            for subject in doc["subjects"]:
                if subject["name"] in NO_API or subject["kind"] != "ServiceAccount":
                    problems.append(f"RoleBinding {name} binds {subject['kind']} {subject['name']}: it needs no API rights")
                if doc.get("roleRef", {}).get("name") in pod_creators and subject["name"] != RUN_POD_SA:
                    problems.append(f"RoleBinding {name}: {subject['name']} may create pods; only the run pods' {RUN_POD_SA} may")
                if doc.get("roleRef", {}).get("name") in creators and subject["name"] not in CREATORS:
                    problems.append(f"RoleBinding {name}: {subject['name']} may create; only {sorted(CREATORS)} may")
        # aiflow-run too: the code server's pod runs as it (the chart's doing) and must get no token; run pods opt in;
        # and the webserver's: only its own pod asks for the token
        if kind == "ServiceAccount" and name in (*NO_API, RUN_POD_SA, WEBSERVER_SA) and doc.get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount {name} mounts a token by default")
    return problems


def granted(documents: list[dict]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for d in documents
        if d["kind"] == "Role"
        for rule in d["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_rbac_grants_only_verbs_the_code_calls_and_nothing_to_training_or_serving():
    documents, used = manifests(), api_calls()
    assert NEEDED <= used  # the source scan sees the calls we know the launcher makes
    assert rbac_problems(documents, used) == []
    assert NEEDED <= granted(documents)  # ... and the run pod can make them
    accounts = {d["metadata"]["name"] for d in documents if d["kind"] == "ServiceAccount"}
    assert {TRAINING_SA, SERVING_SA} <= accounts


def bound_grants(documents: list[dict], account: str) -> set[tuple[str, str, str]]:
    """What the Roles bound to ``account`` grant."""
    roles = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Role"}
    return {
        grant
        for d in documents
        if d["kind"] == "RoleBinding" and any(s["name"] == account for s in d["subjects"])
        for grant in granted([roles[d["roleRef"]["name"]]])
    }


def test_the_chart_creates_no_role_and_each_account_gets_only_its_own():
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    assert values["rbacEnabled"] is False  # the chart's own Role is broader than what the code calls
    assert values["serviceAccount"]["name"] == CHART_SA
    assert values["dagster-user-deployments"]["serviceAccount"] == {"create": False, "name": RUN_POD_SA}
    documents = manifests()
    assert RUN_LAUNCHER_NEEDED <= bound_grants(documents, CHART_SA) and RUN_LAUNCHER_NEEDED <= api_calls()
    assert ("", "pods", "create") not in bound_grants(documents, CHART_SA)  # the daemon creates Jobs, not pods
    assert NEEDED <= bound_grants(documents, RUN_POD_SA)
    assert all(bound_grants(documents, account) == set() for account in NO_API)


def terminate_calls(kubeconfig: str) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of what the webserver's only Kubernetes work - the UI's Terminate on a started run,
    QueuedRunCoordinator.cancel_run -> K8sRunLauncher.terminate - calls, recorded on the real launcher."""
    from unittest import mock

    from dagster import DagsterInstance
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
    from dagster_k8s import K8sRunLauncher

    batch, core = mock.MagicMock(), mock.MagicMock()
    core.list_namespaced_pod.return_value.items = [mock.MagicMock()]  # the run Job's pod
    launcher = K8sRunLauncher(service_account_name=CHART_SA, instance_config_map="dagster-instance", dagster_home="/opt/dagster/dagster_home",
                              job_image="registry.example.com/aiflow:0.1.0", job_namespace=NAMESPACE, load_incluster_config=False,
                              kubeconfig_file=kubeconfig, k8s_client_batch_api=batch, k8s_client_core_api=core)  # fmt: skip
    with DagsterInstance.ephemeral() as instance:
        launcher.register_instance(instance)
        instance.add_run(DagsterRun(job_name="train", run_id="r1", status=DagsterRunStatus.STARTED))
        assert launcher.terminate("r1")
    calls = set()
    for method in (c[0] for c in [*batch.method_calls, *core.method_calls]):
        ((verb, kind),) = CALL.findall(method)
        calls.add((*RESOURCES[kind], VERBS[verb]))
    return calls


def test_the_webserver_may_terminate_runs_but_create_nothing_and_only_the_daemon_launches_them(kubeconfig, tmp_path):
    from dagster._core.instance.ref import InstanceRef

    documents = manifests()
    terminate = terminate_calls(kubeconfig)
    assert terminate == {("batch", "jobs", "delete"), ("", "pods", "list"), ("", "pods", "delete")}
    assert bound_grants(documents, WEBSERVER_SA) == terminate  # exactly what Terminate calls
    assert not {(g, r, v) for g, r, v in bound_grants(documents, WEBSERVER_SA) if v == "create"}
    assert ("batch", "jobs", "create") in bound_grants(documents, CHART_SA)  # the daemon launches the run Jobs
    assert ("", "pods", "create") not in bound_grants(documents, CHART_SA) | bound_grants(documents, WEBSERVER_SA)
    # ... because every run goes through the queue, which the daemon works off: the UI's "Launch run" only queues
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    (tmp_path / "dagster.yaml").write_text((K8S / "dagster.yaml").read_text())
    assert InstanceRef.from_dir(str(tmp_path)).run_coordinator_data.class_name == "QueuedRunCoordinator"
    # the accounts the post-renderer names are the ones RBAC knows
    kustomization = (K8S / "post-render" / "kustomization.yaml").read_text()
    assert f"value: {WEBSERVER_SA}\n" in kustomization and f"value: {CHART_SA}\n" in kustomization
    assert WEBSERVER_SA in {d["metadata"]["name"] for d in documents if d["kind"] == "ServiceAccount"}


def test_the_webserver_needs_its_token_because_its_run_launcher_loads_the_in_cluster_config(monkeypatch, tmp_path):
    """A webserver pod without a token (automountServiceAccountToken: false) could not even build K8sRunLauncher."""
    from dagster_k8s import K8sRunLauncher
    from kubernetes.config import incluster_config

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.10")  # what the kubelet sets in every pod
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "no-token"))
    saved = kubernetes.client.Configuration.get_default_copy()
    try:
        with pytest.raises(kubernetes.config.ConfigException, match="token file does not exist"):
            K8sRunLauncher(service_account_name=WEBSERVER_SA, instance_config_map="dagster-instance", dagster_home="/opt/dagster/dagster_home",
                           job_namespace=NAMESPACE, load_incluster_config=True)  # fmt: skip
    finally:
        kubernetes.client.Configuration.set_default(saved)


def run_pod_spec(values: dict) -> dict:
    """The run pod's spec as K8sRunLauncher builds it: the launcher's config merged with the code location's container
    context as the chart renders it (its account, token on), the code location's winning - dagster_k8s's own merge."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

    from tests.k8s.test_helm_values import snake

    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    from_launcher = K8sContainerContext(
        service_account_name=values["serviceAccount"]["name"],  # the chart renders the run launcher with its own account
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict({snake(k): v for k, v in launcher["runK8sConfig"].items()}),
    )
    # helm/dagster/charts/dagster-user-deployments/templates/helpers/_helpers.tpl, dagsterUserDeployments.k8sContainerContext
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    code_location = {
        "namespace": NAMESPACE,
        "service_account_name": values["dagster-user-deployments"]["serviceAccount"]["name"],
        "env_secrets": [s["name"] for s in deployment.get("envSecrets", [])],
        "env": deployment.get("env", []),
        "volume_mounts": deployment.get("volumeMounts", []),
        "volumes": deployment.get("volumes", []),
        "labels": deployment.get("labels", {}),
        "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }
    context = K8sContainerContext().merge(from_launcher).merge(K8sContainerContext.create_from_config({"k8s": code_location}))
    job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(
            job_image="registry.example.com/aiflow:0.1.0",
            dagster_home="/opt/dagster/dagster_home",
            instance_config_map="dagster-instance",
            postgres_password_secret=values["global"]["postgresqlSecretName"],
        ),
        args=["dagster", "api", "execute_run"],
        job_name="dagster-run-1",
        pod_name="dagster-run-1",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)["spec"]["template"]["spec"]


def test_run_pods_run_as_the_pod_creating_account_with_a_token_and_the_code_server_has_none():
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    spec = run_pod_spec(values)
    assert spec["serviceAccountName"] == RUN_POD_SA and spec["automountServiceAccountToken"] is True
    (account,) = [d for d in manifests() if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == RUN_POD_SA]
    assert account["automountServiceAccountToken"] is False  # the code server's pod (chart template: no override) has none
    values["dagster-user-deployments"]["serviceAccount"]["name"] = "aiflow-code-location"  # the trap: that one would win
    assert run_pod_spec(values)["serviceAccountName"] == "aiflow-code-location"


def test_each_account_names_its_components_iam_role_with_the_key_secret_as_fallback():
    """IRSA: every account that reaches S3 is annotated with the role whose policy deploy/aws/README.md creates for it."""
    readme = (AWS / "README.md").read_text()
    policy_of_role = dict(re.findall(r"--policy-name (\S+) +--policy-document file://deploy/aws/(\S+)", readme))
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    annotations = {CHART_SA: values["serviceAccount"]["annotations"]}
    annotations |= {d["metadata"]["name"]: d["metadata"].get("annotations", {}) for d in manifests() if d["kind"] == "ServiceAccount"}
    expected = {CHART_SA: POLICIES["dagster"], WEBSERVER_SA: POLICIES["dagster"], RUN_POD_SA: POLICIES["dagster"], TRAINING_SA: POLICIES["training"], SERVING_SA: POLICIES["serving"]}
    for account, policy in expected.items():
        role = annotations[account]["eks.amazonaws.com/role-arn"].rsplit("/", 1)[1]
        assert policy_of_role[role] == policy, account
    assert "eks.amazonaws.com/role-arn" not in annotations[PROXY_SA]  # the proxy reaches no AWS service


def test_the_training_and_serving_pods_mount_no_token():
    serving = next(d for d in manifests() if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert serving["serviceAccountName"] == SERVING_SA and serving["automountServiceAccountToken"] is False
    launcher = K8sTrainingLauncher(image="registry.example.com/aiflow:0.1.0")
    pod = build_pod_body(pod_name="train", image=launcher.image, command=launcher.command, env_vars={},
                         base_pod_meta=launcher.base_pod_meta(), base_pod_spec=launcher.base_pod_spec())  # fmt: skip
    spec = kubernetes.client.ApiClient().sanitize_for_serialization(pod)["spec"]
    assert spec["serviceAccountName"] == TRAINING_SA == launcher.service_account_name
    assert spec["automountServiceAccountToken"] is False  # on the pod itself, whatever the account says
    (account,) = [d for d in manifests() if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == TRAINING_SA]
    assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    "edit, complaint",
    [
        (lambda docs, role: role["rules"][0]["verbs"].append("*"), "wildcard in verbs"),
        (lambda docs, role: role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}), "'secrets'"),
        (lambda docs, role: role["rules"][0]["verbs"].append("watch"), "watch 'pods'"),
        (lambda docs, role: role.update(kind="ClusterRole"), "namespaced Roles only"),
        (
            lambda docs, role: docs.append(
                {
                    "kind": "RoleBinding",
                    "metadata": {"name": "x", "namespace": NAMESPACE},
                    "subjects": [{"kind": "ServiceAccount", "name": SERVING_SA}],
                }
            ),
            "needs no API rights",
        ),  # fmt: skip
        (
            lambda docs, role: [d.pop("automountServiceAccountToken") for d in docs if d["metadata"]["name"] == TRAINING_SA],
            "mounts a token",
        ),
        (
            lambda docs, role: [d.pop("automountServiceAccountToken") for d in docs if d["metadata"]["name"] == RUN_POD_SA],
            "mounts a token",
        ),
        (
            lambda docs, role: [
                d["subjects"].append({"kind": "ServiceAccount", "name": CHART_SA, "namespace": NAMESPACE})
                for d in docs
                if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == role["metadata"]["name"]
            ],
            "may create pods",
        ),
        (
            lambda docs, role: [
                d["subjects"].append({"kind": "ServiceAccount", "name": WEBSERVER_SA, "namespace": NAMESPACE})
                for d in docs
                if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == "aiflow-run-launcher"
            ],
            "dagster-webserver may create",
        ),
        (
            lambda docs, role: [d.pop("automountServiceAccountToken") for d in docs if d["metadata"]["name"] == WEBSERVER_SA],
            "mounts a token",
        ),
    ],
    ids=["wildcard-verb", "secrets", "unused-verb", "cluster-role", "bound-server", "training-token", "run-token", "daemon-pods",
         "webserver-launches", "webserver-token"],  # fmt: skip
)
def test_the_rbac_checker_rejects_an_over_broad_edit(edit, complaint):
    documents = copy.deepcopy(manifests())
    (role,) = [d for d in documents if d["kind"] == "Role" and d["metadata"]["name"] == "aiflow-training-launcher"]
    edit(documents, role)
    problems = rbac_problems(documents, api_calls())
    assert any(complaint in p for p in problems), problems


# --- S3 and KMS: one IAM policy per component, each action on the prefixes its code touches -----------------------------

POLICIES = {"dagster": "iam-policy.json", "training": "iam-policy-training.json", "serving": "iam-policy-serving.json"}
#: The actions each component may hold at all (Delete: vacuum, artifact cleanup, compute-log deletion; Delta's expired-log cleanup).
ALLOWED_ACTIONS = {
    "dagster": {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "kms:Decrypt", "kms:GenerateDataKey"},
    "training": {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "kms:Decrypt", "kms:GenerateDataKey"},
    "serving": {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "kms:Decrypt", "kms:GenerateDataKey"},
}  # fmt: skip


def policies() -> dict[str, dict]:
    return {component: json.loads((AWS / name).read_text()) for component, name in POLICIES.items()}


def configured_prefixes() -> tuple[str, list[str]]:
    """The bucket and the prefixes the deployment configures: the code location's URIs and the compute logs (values.yaml)."""
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    (code_location,) = values["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e["value"] for e in code_location["env"]}
    uris = [env[v] for v in ("AIFLOW_LAKE_URI", "AIFLOW_ARTIFACT_URI")]
    # landing: where the code resolves the specs' landing zones under AIFLOW_LANDING_URI (the demo's: landing/<table>)
    zones = Settings.from_env({**env, "AIFLOW_PROFILE": "k8s"})
    uris += sorted({zones.landing_uri_for(t).rsplit("/", 1)[0] for t in load_spec(demo_spec_path()).tables})
    logs = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    uris.append(f"s3://{logs['bucket']}/{logs['prefix']}")
    (bucket,) = {u.removeprefix("s3://").split("/")[0] for u in uris}
    return bucket, [u.removeprefix(f"s3://{bucket}/").rstrip("/") + "/" for u in uris]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def allows(policy: dict, action: str, resource: str, prefix: str | None = None) -> bool:
    """Whether ``policy`` allows ``action`` on ``resource`` (a ListBucket with ``prefix``): IAM's wildcard matching; only the
    condition operators our policies use are understood (any other raises, so nothing passes by being ignored)."""
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow" or not any(fnmatch.fnmatchcase(action, a) for a in as_list(statement["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in as_list(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {})
        unknown = set(conditions) - {"StringLike", "StringEquals"}
        if unknown or set(conditions.get("StringLike", {})) - {"s3:prefix"}:
            raise ValueError(f"statement {statement.get('Sid')}: conditions this checker does not model: {conditions}")
        patterns = conditions.get("StringLike", {}).get("s3:prefix")
        if patterns is not None and (prefix is None or not any(fnmatch.fnmatchcase(prefix, p) for p in as_list(patterns))):
            continue
        return True
    return False


def iam_problems(component: str, policy: dict, bucket: str, prefixes: list[str]) -> list[str]:
    """Everything over-broad in one component's policy (empty: fine)."""
    problems = []
    for statement in policy["Statement"]:
        sid = statement.get("Sid", "?")
        if statement["Effect"] != "Allow" or "NotAction" in statement or "NotResource" in statement:
            problems.append(f"{component} {sid}: only plain Allow statements (no NotAction/NotResource)")
        for action in as_list(statement.get("Action", [])):
            if "*" in action or "?" in action:
                problems.append(f"{component} {sid}: wildcard action {action!r}")
            elif action not in ALLOWED_ACTIONS[component]:
                problems.append(f"{component} {sid}: {action} is more than the {component} code needs")
        for resource in as_list(statement.get("Resource", [])):
            if resource.startswith("arn:aws:kms:"):
                if not re.fullmatch(r"arn:aws:kms:[a-z0-9-]+:\d{12}:key/[0-9a-f-]{36}", resource):
                    problems.append(f"{component} {sid}: {resource!r} is not one KMS key")
                if "kms:ViaService" not in statement.get("Condition", {}).get("StringEquals", {}):
                    problems.append(f"{component} {sid}: the KMS key must be usable only through S3 (kms:ViaService)")
                if any(not a.startswith("kms:") for a in as_list(statement["Action"])):
                    problems.append(f"{component} {sid}: S3 actions on a KMS key")
                continue
            if resource == f"arn:aws:s3:::{bucket}":
                listed = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
                if as_list(statement["Action"]) != ["s3:ListBucket"] or not listed:
                    problems.append(f"{component} {sid}: bucket-level access must be ListBucket with an s3:prefix condition")
                elif any(not any(p.startswith(c) for c in prefixes) for p in as_list(listed)):
                    problems.append(f"{component} {sid}: lists outside the configured prefixes {prefixes}: {listed}")
                continue
            key = resource.removeprefix(f"arn:aws:s3:::{bucket}/")
            if key == resource or not any(key.startswith(c) for c in prefixes):
                problems.append(f"{component} {sid}: {resource!r} lies outside the configured prefixes {prefixes} of {bucket}")
            elif any(a == "s3:ListBucket" for a in as_list(statement["Action"])):
                problems.append(f"{component} {sid}: ListBucket on objects")
    return problems


def test_iam_policies_stay_within_the_configured_prefixes_and_actions():
    bucket, prefixes = configured_prefixes()
    assert sorted(prefixes) == ["artifacts/", "dagster/compute-logs/", "lake/", "landing/"]
    for component, policy in policies().items():
        assert iam_problems(component, policy, bucket, prefixes) == [], component
        key_statements = [s for s in policy["Statement"] if any(a.startswith("kms:") for a in as_list(s["Action"]))]
        assert len(key_statements) == 1  # SSE-KMS: the lake's key, decrypt + data keys only


def test_each_component_can_do_what_its_code_does_and_no_more():
    """Real object keys of our own table and artifact layout, asked of the policies as IAM would evaluate them."""
    p = policies()
    lake, art, logs = "arn:aws:s3:::aiflow-lake/lake", "arn:aws:s3:::aiflow-lake/artifacts", "arn:aws:s3:::aiflow-lake/dagster/compute-logs"
    name, day = "trips", dt.date(2026, 1, 5)  # another dataset than the demo's flights
    data = "part-00000-0.parquet"
    log = f"{lake}/{log_table(name)}/date=2026-01-05/{data}"
    bundle, checkpoint = f"{art}/{name}/candidates/abc-v3/model.pt", f"{art}/{name}/checkpoints/abc-v3/state.pt"

    def can(component: str, action: str, resource: str, prefix: str | None = None) -> bool:
        return allows(p[component], action, resource, prefix)

    # run pods / user code: the whole data plane, vacuum, cleanup, rejected landing copies, compute logs
    for table in (Tables.bronze(name), Tables.silver(name), Tables.features(name), Tables.model_versions(), decisions_table(name)):
        assert all(can("dagster", a, f"{lake}/{table}/{data}") for a in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"))
        assert can("dagster", "s3:ListBucket", "arn:aws:s3:::aiflow-lake", f"lake/{table}/_delta_log/")
    assert can("dagster", "s3:PutObject", f"{lake}/{reports_path(name, 'log', day, 3)}")
    assert can("dagster", "s3:GetObject", f"arn:aws:s3:::aiflow-lake/landing/{name}/2026-01-05.csv")
    assert can("dagster", "s3:PutObject", f"arn:aws:s3:::aiflow-lake/landing/{name}/{REJECTED_DIR}/b1/2026-01-05.csv")
    assert not can("dagster", "s3:PutObject", f"arn:aws:s3:::aiflow-lake/landing/{name}/2026-01-05.csv")  # producers' files
    assert not can("dagster", "s3:DeleteObject", f"arn:aws:s3:::aiflow-lake/landing/{name}/2026-01-05.csv")
    assert can("dagster", "s3:DeleteObject", bundle) and can("dagster", "s3:PutObject", f"{logs}/run/step.out")

    # training pods: the pinned features and feature state; their own bundle and checkpoint
    assert can("training", "s3:GetObject", f"{lake}/{Tables.features(name)}/_delta_log/00000000000000000003.json")
    assert can("training", "s3:GetObject", f"{lake}/{Tables.feature_state(name)}/{data}")
    assert can("training", "s3:ListBucket", "arn:aws:s3:::aiflow-lake", f"lake/{Tables.features(name)}/_delta_log/")
    assert all(can("training", a, r) for a in ("s3:GetObject", "s3:PutObject") for r in (bundle, checkpoint))
    for table in (Tables.silver(name), Tables.model_versions(), log_table(name), labels_table(name)):
        assert not can("training", "s3:GetObject", f"{lake}/{table}/{data}"), table
    assert not can("training", "s3:PutObject", f"{lake}/{Tables.features(name)}/{data}")
    assert not any(can("training", "s3:DeleteObject", r) for r in (bundle, checkpoint, f"{lake}/{Tables.features(name)}/{data}"))
    assert not can("training", "s3:ListBucket", "arn:aws:s3:::aiflow-lake", "lake/")

    # server: reads the registry and champion bundles; appends the inference log; merges labels
    assert can("serving", "s3:GetObject", f"{lake}/{Tables.alias_events()}/_delta_log/00000000000000000001.json")
    assert can("serving", "s3:GetObject", bundle) and not can("serving", "s3:GetObject", checkpoint)
    assert can("serving", "s3:PutObject", log) and can("serving", "s3:PutObject", f"{lake}/{labels_table(name)}/{data}")
    assert can("serving", "s3:DeleteObject", f"{lake}/{log_table(name)}/_delta_log/00000000000000000001.json")  # expired-log cleanup
    assert not can("serving", "s3:DeleteObject", log)  # never a data file
    assert not can("serving", "s3:PutObject", f"{lake}/{Tables.alias_events()}/{data}")  # aliases move in run pods only
    assert not can("serving", "s3:GetObject", f"{lake}/{Tables.features(name)}/{data}")
    assert not can("serving", "s3:PutObject", bundle)
    assert not can("serving", "s3:ListBucket", "arn:aws:s3:::aiflow-lake", "landing/")


@pytest.mark.parametrize(
    "component, edit, complaint",
    [
        ("serving", lambda s: s[1].update(Action=["s3:*"]), "wildcard action"),
        ("training", lambda s: s[2]["Action"].append("s3:DeleteObject"), "more than the training code needs"),
        ("serving", lambda s: s[1].update(Resource="*"), "outside the configured prefixes"),
        ("dagster", lambda s: s[1].update(Resource="arn:aws:s3:::aiflow-lake/*"), "outside the configured prefixes"),
        ("dagster", lambda s: s[0].pop("Condition"), "s3:prefix condition"),
        ("training", lambda s: s[-1].update(Resource="arn:aws:kms:us-east-1:111122223333:key/*"), "not one KMS key"),
        ("serving", lambda s: s[-1].pop("Condition"), "kms:ViaService"),
    ],
    ids=["wildcard-action", "training-delete", "star-resource", "whole-bucket", "unconditional-list", "any-key", "kms-direct"],
)
def test_the_iam_checker_rejects_an_over_broad_edit(component, edit, complaint):
    policy = copy.deepcopy(policies()[component])
    edit(policy["Statement"])
    problems = iam_problems(component, policy, *configured_prefixes())
    assert any(complaint in p for p in problems), problems
