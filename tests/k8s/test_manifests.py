"""BOUNDARY test (no cluster here): pod and Job manifests dagster-k8s builds for our GPU config validate STRICTLY (kubernetes-validate)."""

from __future__ import annotations

import copy

import kubernetes
import kubernetes_validate
import pytest
from dagster import Definitions, asset, define_asset_job
from dagster._core.execution.api import create_execution_plan
from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_k8s_job_name, get_user_defined_k8s_config
from dagster_k8s.pipes import build_pod_body
from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, DAGSTER_PIPES_MESSAGES_ENV_VAR
from packaging.version import Version

from resources.k8s_tags import GPU_OP_TAGS, GPU_RESOURCE, GPU_RUN_TAGS, GPU_TAG_KEY
from resources.k8s_training import CONTAINER_NAME, K8sTrainingLauncher

pytestmark = pytest.mark.k8s_boundary

#: Newest Kubernetes schema kubernetes-validate ships (1.37 with kubernetes-validate 1.37.0).
K8S_VERSION = kubernetes_validate.utils.latest_version()
NODE_SELECTOR = {"nvidia.com/gpu.product": "Tesla-T4"}


def validate_strict(manifest: dict) -> str:
    return kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def _serialize(model, api_version: str, kind: str) -> dict:
    # The client posts to /api/v1/.../pods, so dagster-k8s leaves apiVersion/kind unset on the V1Pod.
    return {"apiVersion": api_version, "kind": kind, **kubernetes.client.ApiClient().sanitize_for_serialization(model)}


@pytest.fixture
def launcher() -> K8sTrainingLauncher:
    return K8sTrainingLauncher(
        image="registry.example.com/aiflow:0.1.0-cuda",
        namespace="aiflow",
        service_account_name="aiflow-training",
        node_selector=NODE_SELECTOR,
        env_from_secrets=["aiflow-aws"],
        env={"AIFLOW_PROFILE": "k8s"},
        labels={"team": "ml"},
    )


@pytest.fixture
def pod_manifest(launcher) -> dict:
    pod = build_pod_body(
        pod_name="dagster-0123456789abcdef01-model-4242424242",
        image=launcher.image,
        command=launcher.command,
        env_vars={DAGSTER_PIPES_CONTEXT_ENV_VAR: "eJw=", DAGSTER_PIPES_MESSAGES_ENV_VAR: "eJw="},
        base_pod_meta=launcher.base_pod_meta(),
        base_pod_spec=launcher.base_pod_spec(),
    )
    return _serialize(pod, "v1", "Pod")


def test_schema_version_is_recent():
    assert Version(K8S_VERSION) >= Version("1.33")


def test_training_pod_validates_strictly_and_carries_the_gpu_placement(pod_manifest):
    assert validate_strict(pod_manifest) == ".".join(K8S_VERSION.split(".")[:2])

    spec = pod_manifest["spec"]
    (container,) = spec["containers"]
    assert container["name"] == CONTAINER_NAME
    assert container["command"] == ["python", "-m", "aiflow.train"]
    assert container["image"] == "registry.example.com/aiflow:0.1.0-cuda"
    assert container["resources"]["limits"][GPU_RESOURCE] == "1"
    assert container["resources"]["requests"] == {"cpu": "3", "memory": "12Gi"}
    assert container["envFrom"] == [{"secretRef": {"name": "aiflow-aws"}}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["AIFLOW_PROFILE"] == "k8s" and DAGSTER_PIPES_CONTEXT_ENV_VAR in env
    assert not any(e["name"].startswith("AWS_") for e in container["env"])  # credentials only via the secret
    assert spec["nodeSelector"] == NODE_SELECTOR
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert any(t["key"] == "cloud.google.com/gke-spot" for t in spec["tolerations"])
    assert spec["serviceAccountName"] == "aiflow-training"
    assert spec["restartPolicy"] == "Never"
    labels = pod_manifest["metadata"]["labels"]
    assert labels["aiflow/component"] == "training" and labels["team"] == "ml"
    assert labels["app.kubernetes.io/part-of"] == "dagster"  # dagster-k8s' own labels kept
    assert pod_manifest["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"


def test_cpu_only_launcher_has_no_gpu_limit_and_still_validates():
    cpu = K8sTrainingLauncher(image="aiflow:cpu", gpus=0, node_selector={}, tolerations=[], cpu_limit="4")
    pod = _serialize(build_pod_body("p", cpu.image, cpu.command, {}, cpu.base_pod_meta(), cpu.base_pod_spec()), "v1", "Pod")
    validate_strict(pod)
    assert GPU_RESOURCE not in pod["spec"]["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in pod["spec"] and "tolerations" not in pod["spec"]


def test_broken_manifest_is_rejected_only_by_the_strict_schema(pod_manifest):
    """Proves the validation is real: a misspelled toleration field passes the lax schema, not the strict one."""
    broken = copy.deepcopy(pod_manifest)
    broken["spec"]["tolerations"][0]["tolerationSecond"] = 30  # real field: tolerationSeconds
    kubernetes_validate.validate(broken, K8S_VERSION, strict=False)
    with pytest.raises(kubernetes_validate.ValidationError, match="tolerationSecond"):
        validate_strict(broken)

    wrong_type = copy.deepcopy(pod_manifest)
    wrong_type["spec"]["tolerations"] = {"key": GPU_RESOURCE}  # a mapping where a list belongs
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strict(wrong_type)


def _gpu_step_tags() -> dict[str, str]:
    """The step tags k8s_job_executor reads, from a real execution plan of a job holding a GPU asset."""

    @asset(op_tags=GPU_OP_TAGS)
    def model():
        """Stands in for the training asset."""

    defs = Definitions(assets=[model], jobs=[define_asset_job("train", selection=[model], tags=GPU_RUN_TAGS)])
    job = defs.resolve_job_def("train")
    assert job.tags[GPU_TAG_KEY] == "true"  # the run tag the run queue limits
    return create_execution_plan(job).get_step_by_key("model").tags


def test_step_job_for_gpu_op_tags_validates_strictly_and_lands_on_a_gpu_node():
    tags = _gpu_step_tags()
    user_defined = get_user_defined_k8s_config(tags)
    job_config = DagsterK8sJobConfig(
        job_image="registry.example.com/aiflow:0.1.0-cuda",
        dagster_home="/opt/dagster/dagster_home",
        image_pull_policy="IfNotPresent",
        service_account_name="dagster",
        instance_config_map="dagster-instance",
        env_secrets=["aiflow-aws"],
        env_vars=["AIFLOW_PROFILE=k8s"],
    )
    run_id = "0123abcd-0000-4000-8000-000000000001"
    job_name = f"dagster-step-{get_k8s_job_name(run_id, 'model')}"
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step"],
        job_name=job_name,
        pod_name=job_name,
        component="step_worker",
        user_defined_k8s_config=user_defined,
        labels={"dagster/job": "train", "dagster/op": "model", "dagster/run-id": run_id},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": "train"}, {"name": "DAGSTER_RUN_STEP_KEY", "value": "model"}],
    )
    manifest = _serialize(job, "batch/v1", "Job")
    validate_strict(manifest)

    template = manifest["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["resources"]["limits"][GPU_RESOURCE] == "1"
    assert template["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in template["spec"]["tolerations"]
    assert template["spec"]["restartPolicy"] == "Never"
    assert container["envFrom"] == [{"secretRef": {"name": "aiflow-aws"}}]
    assert template["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
