"""BOUNDARY test (no chart, no cluster here): the Kubernetes objects embedded in deploy/k8s/values.yaml validate STRICTLY, and the instance the chart renders from them equals deploy/k8s/dagster.yaml."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

pytestmark = pytest.mark.k8s_boundary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = kubernetes_validate.utils.latest_version()
NAMESPACE = "aiflow"  # the release namespace (jobNamespace ~ means this one)


def load_values() -> dict:
    return yaml.safe_load((K8S / "values.yaml").read_text())


def load_instance() -> dict:
    return yaml.safe_load((K8S / "dagster.yaml").read_text())


def snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def snake_keys(value):
    """Helm's camelCase keys as dagster.yaml spells them (lists and leaves untouched)."""
    return {snake(k): snake_keys(v) for k, v in value.items()} if isinstance(value, dict) else value


# --- (a) every Kubernetes object in the values, wrapped into a minimal Pod / Job, strictly -----------------------------


def embedded_objects(values: dict) -> dict[str, dict]:
    """The Kubernetes objects the chart builds from the values' fragments (name -> manifest), minimal around them."""
    objects = {}
    for deployment in values["dagster-user-deployments"]["deployments"]:
        image = deployment["image"]
        container = {
            "name": deployment["name"],
            "image": f"{image['repository']}:{image['tag']}",
            "imagePullPolicy": image["pullPolicy"],
            "ports": [{"containerPort": deployment["port"]}],
            "env": deployment["env"],
            "envFrom": [{"secretRef": secret} for secret in deployment["envSecrets"]],
            "resources": deployment["resources"],
            "securityContext": deployment.get("securityContext", {}),
        }
        spec = {"containers": [container], "securityContext": deployment.get("podSecurityContext", {})}
        spec |= {k: deployment[k] for k in ("nodeSelector", "tolerations", "affinity") if k in deployment}
        objects[f"code location {deployment['name']}"] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": spec}

    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run = launcher["runK8sConfig"]
    container = {
        "name": "dagster",
        "image": "registry.example.com/aiflow:0.1.0",
        "imagePullPolicy": launcher["imagePullPolicy"],
        "env": [dict(zip(("name", "value"), var.split("=", 1), strict=True)) for var in launcher["envVars"]],
        "envFrom": [{"secretRef": secret} for secret in launcher["envSecrets"]],
        **run.get("containerConfig", {}),
    }
    pod_spec = {"containers": [container], "restartPolicy": "Never", **run.get("podSpecConfig", {})}
    objects["run pod"] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "labels": launcher["labels"]}, "spec": pod_spec}
    objects["run Job"] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "x"},
        "spec": {"template": {"spec": pod_spec}, **run.get("jobSpecConfig", {})},
    }
    return objects


def test_every_kubernetes_object_in_the_values_validates_strictly():
    objects = embedded_objects(load_values())
    assert set(objects) == {"code location aiflow", "run pod", "run Job"}
    for name, manifest in objects.items():
        assert kubernetes_validate.validate(manifest, K8S_VERSION, strict=True), name
    run_pod = objects["run pod"]["spec"]
    assert run_pod["securityContext"]["runAsNonRoot"] and run_pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda v: v["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]["resources"].update(limit={}), "limit"),
        (lambda v: v["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"].update(nodeSelecter={}), "nodeSelecter"),
        (
            lambda v: v["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["jobSpecConfig"].update(ttlSecondAfterFinished=1),
            "ttlSecond",
        ),
        (lambda v: v["dagster-user-deployments"]["deployments"][0]["podSecurityContext"].update(runAsNonroot=True), "runAsNonroot"),
    ],
    ids=["container", "pod-spec", "job-spec", "code-location"],
)
def test_a_misspelled_field_in_the_values_is_rejected(edit, field):
    values = load_values()
    edit(values)
    with pytest.raises(kubernetes_validate.ValidationError, match=field):
        for manifest in embedded_objects(values).values():
            kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


# --- (b) one source of truth: the instance the chart renders from the values == deploy/k8s/dagster.yaml ---------------


def instance_differences(values: dict, instance: dict) -> list[str]:
    """Where the settings the values give the chart's dagster.yaml differ from deploy/k8s/dagster.yaml (empty: equal)."""
    differences = []

    def same(what: str, from_values, from_instance) -> None:
        if from_values != from_instance:
            differences.append(f"{what}: values.yaml {from_values!r} != dagster.yaml {from_instance!r}")

    daemon = values["dagsterDaemon"]
    queue = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    runs = instance["concurrency"]["runs"]
    same("max concurrent runs", queue["maxConcurrentRuns"], runs["max_concurrent_runs"])
    same("run tag limits", queue["tagConcurrencyLimits"], runs["tag_concurrency_limits"])  # applyLimitPerUniqueValue in both
    same("run monitoring", snake_keys(daemon["runMonitoring"]), instance["run_monitoring"])
    same("run retries", snake_keys(daemon["runRetries"]), instance["run_retries"])

    logs = values["computeLogManager"]
    same("compute log manager", logs["type"], instance["compute_logs"]["class"])
    same("compute logs", snake_keys(logs["config"]["s3ComputeLogManager"]), instance["compute_logs"]["config"])

    launcher, run_launcher = values["runLauncher"]["config"]["k8sRunLauncher"], instance["run_launcher"]["config"]
    same("run namespace", launcher["jobNamespace"] or NAMESPACE, run_launcher["job_namespace"])
    same("run pod service account", values["serviceAccount"]["name"], run_launcher["service_account_name"])
    for key in ("imagePullPolicy", "loadInclusterConfig", "envVars", "labels"):
        same(key, launcher[key], run_launcher[snake(key)])
    same("run pod secrets", [s["name"] for s in launcher["envSecrets"]], run_launcher["env_secrets"])
    same("run pod PostgreSQL secret", values["global"]["postgresqlSecretName"], run_launcher["postgres_password_secret"])
    same("storage", chart_storage(values), instance["storage"])
    same("run pod Job", run_job(launcher["runK8sConfig"]), run_job(run_launcher["run_k8s_config"]))
    return differences


def chart_storage(values: dict) -> dict:
    """``storage`` as the chart renders it from ``postgresql`` (helm/dagster templates/helpers/instance/_postgresql.tpl)."""
    pg = values["postgresql"]
    db = {"hostname": pg["postgresqlHost"], "username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
          "db_name": pg["postgresqlDatabase"], "port": pg["service"]["port"], "params": pg["postgresqlParams"],
          "scheme": pg["postgresqlScheme"]}  # fmt: skip
    return {"postgres": {"postgres_db": db}}


def run_job(run_k8s_config: dict) -> dict:
    """The run Job dagster-k8s builds with this run_k8s_config (camelCase or snake_case keys), serialized."""
    config = {snake(k): v for k, v in run_k8s_config.items()}
    job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(
            job_image="registry.example.com/aiflow:0.1.0",
            dagster_home="/opt/dagster/dagster_home",
            image_pull_policy="IfNotPresent",
            service_account_name="dagster",
        ),  # fmt: skip
        args=["dagster", "api", "execute_run"],
        job_name="dagster-run-0123",
        pod_name="dagster-run-0123",
        component="run_worker",
        user_defined_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config),
    )
    return {"apiVersion": "batch/v1", "kind": "Job", **kubernetes.client.ApiClient().sanitize_for_serialization(job)}


def test_the_chart_values_render_the_same_instance_as_dagster_yaml():
    values, instance = load_values(), load_instance()
    assert instance_differences(values, instance) == []
    job = run_job(instance["run_launcher"]["config"]["run_k8s_config"])
    assert kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    template = job["spec"]["template"]["spec"]
    assert template["securityContext"]["runAsUser"] == 10001 and job["spec"]["ttlSecondsAfterFinished"] == 86400
    retries = instance["run_retries"]
    assert retries["enabled"] and retries["max_retries"] >= 1 and retries["retry_on_asset_or_op_failure"] is False


@pytest.mark.parametrize(
    "edit, complaint",
    [
        (lambda v, i: v["dagsterDaemon"]["runRetries"].update(maxRetries=5), "run retries"),
        (lambda v, i: i["run_monitoring"].update(start_timeout_seconds=60), "run monitoring"),
        (lambda v, i: i["concurrency"]["runs"]["tag_concurrency_limits"][0].update(limit=4), "run tag limits"),
        (lambda v, i: v["computeLogManager"]["config"]["s3ComputeLogManager"].update(prefix="logs"), "compute logs"),
        (
            lambda v, i: v["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["jobSpecConfig"].update(ttlSecondsAfterFinished=60),
            "Job",
        ),
        (lambda v, i: i["run_launcher"]["config"]["env_secrets"].append("extra"), "secrets"),
        (lambda v, i: i["run_launcher"]["config"]["env_secrets"].append("aiflow-dagster-postgres"), "secrets"),
        (lambda v, i: v["postgresql"]["postgresqlParams"].update(sslmode="disable"), "storage"),
        (lambda v, i: v["global"].update(postgresqlSecretName="pg"), "PostgreSQL secret"),
    ],
    ids=["retries", "monitoring", "gpu-limit", "log-prefix", "job-ttl", "secret", "non-helm-secret", "sslmode", "pg-secret"],
)
def test_a_setting_changed_in_only_one_file_is_named(edit, complaint):
    values, instance = load_values(), load_instance()
    edit(values, instance)
    differences = instance_differences(values, instance)
    assert any(complaint in d for d in differences), differences


# --- (c) dagster.yaml against Dagster's own instance schema; PostgreSQL password never a literal -------------------------


def test_instance_yaml_passes_dagsters_schema_with_run_retries_and_monitoring(tmp_path):
    shutil.copy(K8S / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # raises on any schema error
    assert config["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}
    assert config["run_monitoring"]["enabled"] and config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    broken = copy.deepcopy(load_instance())
    broken["run_retries"]["max_retrys"] = 2
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(Exception, match="max_retrys"):
        dagster_instance_config(str(tmp_path))


def literal_passwords(tree, path: str = "") -> list[str]:
    """Keys that look like a password and hold a literal string."""
    found = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            names_a_secret = re.search(r"_secret$", str(key))  # postgres_password_secret: a Secret's name, not a password
            if re.search(r"password|secret_?key|token", str(key), re.I) and not names_a_secret and isinstance(value, str | int) \
                    and not isinstance(value, bool):
                found.append(f"{path}.{key}")
            found += literal_passwords(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found += literal_passwords(value, f"{path}[{i}]")
    return found


def test_postgresql_is_managed_and_its_password_comes_from_a_pre_created_secret():
    values = load_values()
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlHost"]
    assert values["generatePostgresqlPasswordSecret"] is False and values["global"]["postgresqlSecretName"]
    assert literal_passwords(values) == [] and literal_passwords(load_instance()) == []
    assert literal_passwords({"postgresql": {"postgresqlPassword": "test"}}) == [".postgresql.postgresqlPassword"]


def test_every_postgres_config_reads_the_password_from_the_environment_with_the_psycopg2_driver():
    """The chart's rendering (k8s dagster.yaml) and the single-machine PostgreSQL file: the password from DAGSTER_PG_PASSWORD,
    and the psycopg2 scheme (a bare postgresql:// makes SQLAlchemy 2 import psycopg 3, which dagster-postgres does not install)."""
    k8s = load_instance()["storage"]["postgres"]["postgres_db"]
    machine = yaml.safe_load((ROOT / "deploy" / "dagster.postgres.yaml").read_text())["storage"]["postgres"]["postgres_db"]
    assert k8s["password"] == machine["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert k8s["scheme"] == machine["scheme"] == load_values()["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert all(isinstance(v, dict) and v["env"].startswith("DAGSTER_PG_") for k, v in machine.items() if k != "scheme")
