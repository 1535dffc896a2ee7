"""The k8s profile hands the S3 encryption settings on to the training pods (bundles and checkpoints are written there), and
only when they are set; the pod manifest carrying them validates strictly; the pods' GPU count comes from the environment."""

from __future__ import annotations

import pytest

from aiflow.storage import settings as cfg
from resources.profiles import resources_for
from tests.k8s.test_manifests import validate_strict


@pytest.fixture
def k8s_env(monkeypatch):
    for name, value in {"AIFLOW_LAKE_URI": "s3://b/lake", "AIFLOW_LANDING_URI": "s3://b", "AIFLOW_ARTIFACT_URI": "s3://b/artifacts",
                        "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AIFLOW_TRAINING_IMAGE": "r/aiflow:1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(cfg.SSE, raising=False)
    monkeypatch.delenv(cfg.SSE_KMS_KEY_ID, raising=False)
    return monkeypatch


def _pod_env(trainer) -> dict[str, str]:
    spec = trainer.base_pod_spec()
    validate_strict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"}, "spec": {**spec, "containers": [
        {"name": "c", "image": "r/aiflow:1", **spec["containers"][0]}]}})  # fmt: skip
    return {e["name"]: e["value"] for e in spec["containers"][0].get("env", [])}


def test_training_pods_get_the_encryption_settings_of_the_profile(k8s_env):
    k8s_env.setenv(cfg.SSE, "aws:kms")
    k8s_env.setenv(cfg.SSE_KMS_KEY_ID, "alias/aiflow-lake")
    env = _pod_env(resources_for("k8s")["trainer"])
    assert env[cfg.SSE] == "aws:kms" and env[cfg.SSE_KMS_KEY_ID] == "alias/aiflow-lake"


def test_without_encryption_settings_the_pods_get_none(k8s_env):
    env = _pod_env(resources_for("k8s")["trainer"])
    assert cfg.SSE not in env and cfg.SSE_KMS_KEY_ID not in env


def test_training_gpus_come_from_the_environment_and_more_than_one_runs_torchrun(k8s_env):
    k8s_env.setenv("AIFLOW_TRAINING_GPUS", "4")
    trainer = resources_for("k8s")["trainer"]
    spec = trainer.base_pod_spec()
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert trainer.pod_command()[0] == "torchrun" and "--nproc-per-node=4" in trainer.pod_command()
    assert any(m["mountPath"] == "/dev/shm" for m in spec["containers"][0]["volumeMounts"])
    k8s_env.setenv("AIFLOW_TRAINING_GPUS", "four")
    with pytest.raises(ValueError, match="AIFLOW_TRAINING_GPUS='four'"):
        resources_for("k8s")
