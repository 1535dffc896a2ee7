"""BOUNDARY test (no cluster here): deploy/ files pass Dagster's instance schema, K8sRunLauncher config and the Kubernetes schema."""

from __future__ import annotations

import shutil
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_k8s import K8sRunLauncher

from aiflow.storage.settings import Settings
from resources.k8s_tags import GPU_RUN_TAGS, GPU_TAG_KEY
from resources.k8s_training import K8sTrainingLauncher

pytestmark = pytest.mark.k8s_boundary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def test_instance_yaml_is_valid_dagster_config(tmp_path):
    shutil.copy(K8S / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # raises on any schema error

    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = validate_config(K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    assert launcher["config"]["job_namespace"] == K8sTrainingLauncher(image="x").namespace
    assert "aiflow-aws" in launcher["config"]["env_secrets"]
    assert validate_config(S3ComputeLogManager.config_type(), config["compute_logs"]["config"]).success

    (limit,) = [t for t in config["concurrency"]["runs"]["tag_concurrency_limits"] if t["key"] == GPU_TAG_KEY]
    assert limit["value"] == GPU_RUN_TAGS[GPU_TAG_KEY] and limit["limit"] >= 1


def test_helm_values_point_the_code_location_at_definitions_and_limit_gpu_runs():
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("-f") + 1] == "definitions.py" and (ROOT / "definitions.py").exists()
    assert {"name": "AIFLOW_PROFILE", "value": "k8s"} in deployment["env"]
    # the code location's environment is complete for the k8s profile (secrets aside: they come from envSecrets)
    env = {e["name"]: e["value"] for e in deployment["env"]}
    settings = Settings.from_env(env)
    assert (settings.profile, settings.lake_uri, settings.artifact_uri) == ("k8s", env["AIFLOW_LAKE_URI"], env["AIFLOW_ARTIFACT_URI"])
    assert {"name": "aiflow-aws"} in deployment["envSecrets"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    assert {"key": GPU_TAG_KEY, "value": "true", "limit": 2} in limits


def test_rbac_validates_strictly_and_grants_what_the_pipes_launcher_calls():
    documents = list(yaml.safe_load_all((K8S / "rbac.yaml").read_text()))
    for document in documents:
        kubernetes_validate.validate(document, kubernetes_validate.utils.latest_version(), strict=True)
    by_kind = {d["kind"]: d for d in documents}
    assert by_kind["ServiceAccount"]["metadata"]["name"] == K8sTrainingLauncher(image="x").service_account_name
    granted = {(r, v) for rule in by_kind["Role"]["rules"] for r in rule["resources"] for v in rule["verbs"]}
    needed = {("pods", v) for v in ("create", "get", "list", "delete")} | {("pods/log", "get"), ("events", "list")}
    assert needed <= granted


def test_dockerfile_copies_files_that_exist():
    lines = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    copied = [part for line in lines if line.startswith("COPY ") for part in line.split()[1:-1]]
    assert "constraints.txt" in copied and "definitions.py" in copied
    for path in copied:
        assert (ROOT / path).exists(), path
