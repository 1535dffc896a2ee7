"""BOUNDARY test (no cluster, no GPU here): the multi-GPU training pod dagster-k8s builds for ``gpus=N`` validates STRICTLY
(kubernetes-validate) and runs the entrypoint under torchrun with N GPUs and a memory-backed /dev/shm."""

from __future__ import annotations

import copy

import kubernetes
import kubernetes_validate
import pytest
from dagster_k8s.pipes import build_pod_body
from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, DAGSTER_PIPES_MESSAGES_ENV_VAR

from resources.k8s_security import SCRATCH_VOLUME
from resources.k8s_tags import GPU_RESOURCE
from resources.k8s_training import CONTAINER_NAME, SHM_VOLUME, K8sTrainingLauncher

pytestmark = pytest.mark.k8s_boundary

K8S_VERSION = kubernetes_validate.utils.latest_version()


def pod_manifest(launcher: K8sTrainingLauncher) -> dict:
    """The pod exactly as ``PipesK8sClient.run`` would create it (same ``build_pod_body``, same command)."""
    pod = build_pod_body(
        pod_name="dagster-0123456789abcdef01-model-4242424242",
        image=launcher.image,
        command=launcher.pod_command(),
        env_vars={DAGSTER_PIPES_CONTEXT_ENV_VAR: "eJw=", DAGSTER_PIPES_MESSAGES_ENV_VAR: "eJw="},
        base_pod_meta=launcher.base_pod_meta(),
        base_pod_spec=launcher.base_pod_spec(),
    )
    return {"apiVersion": "v1", "kind": "Pod", **kubernetes.client.ApiClient().sanitize_for_serialization(pod)}


@pytest.mark.parametrize("gpus", [2, 4])
def test_multi_gpu_pod_runs_torchrun_with_n_gpus_and_shared_memory(gpus):
    launcher = K8sTrainingLauncher(image="registry.example.com/aiflow:0.1.0-cuda", gpus=gpus, shm_size_limit="4Gi")
    manifest = pod_manifest(launcher)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)

    spec = manifest["spec"]
    (container,) = spec["containers"]
    assert container["name"] == CONTAINER_NAME
    assert container["command"] == ["torchrun", "--standalone", "--nnodes=1", f"--nproc-per-node={gpus}", "-m", "aiflow.train"]
    assert container["resources"]["limits"][GPU_RESOURCE] == str(gpus)
    assert {"name": SHM_VOLUME, "mountPath": "/dev/shm"} in container["volumeMounts"]  # besides the /tmp scratch
    assert {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}} in spec["volumes"]
    assert spec["restartPolicy"] == "Never" and spec["tolerations"]  # the GPU placement of the one-GPU pod is kept
    env = {e["name"] for e in container["env"]}
    assert DAGSTER_PIPES_CONTEXT_ENV_VAR in env  # torchrun passes it to every rank; rank 0 alone opens Pipes


@pytest.mark.parametrize("gpus", [0, 1])
def test_zero_or_one_gpu_keeps_the_plain_entrypoint_and_no_shm(gpus):
    launcher = K8sTrainingLauncher(image="aiflow:cpu", gpus=gpus)
    manifest = pod_manifest(launcher)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    (container,) = manifest["spec"]["containers"]
    assert container["command"] == ["python", "-m", "aiflow.train"]
    assert [v["name"] for v in manifest["spec"]["volumes"]] == [SCRATCH_VOLUME]  # the /tmp scratch only, no shm
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]


def test_unlimited_shm_and_a_custom_interpreter_still_validate():
    launcher = K8sTrainingLauncher(image="aiflow:gpu", gpus=2, shm_size_limit=None, command=["/opt/venv/bin/python", "-m", "aiflow.train"])
    manifest = pod_manifest(launcher)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    assert {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}} in manifest["spec"]["volumes"]
    assert manifest["spec"]["containers"][0]["command"][-2:] == ["-m", "aiflow.train"]


def test_a_misspelled_volume_field_is_rejected_by_the_strict_schema():
    """Proves the validation covers the new parts: a typo in the shm mount passes the lax schema only."""
    manifest = pod_manifest(K8sTrainingLauncher(image="aiflow:gpu", gpus=2))
    broken = copy.deepcopy(manifest)
    broken["spec"]["containers"][0]["volumeMounts"][-1]["mountpath"] = broken["spec"]["containers"][0]["volumeMounts"][-1].pop("mountPath")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_several_nodes_or_a_non_module_command_are_refused_before_any_pod():
    with pytest.raises(ValueError, match="nodes=2.*indexed Job or a Kubeflow PyTorchJob"):
        K8sTrainingLauncher(image="aiflow:gpu", gpus=2, nodes=2).pod_command()
    with pytest.raises(ValueError, match=r"gpus=2 runs the entrypoint under torchrun.*\['/entry.sh'\]"):
        K8sTrainingLauncher(image="aiflow:gpu", gpus=2, command=["/entry.sh"]).pod_command()
