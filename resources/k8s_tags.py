"""Kubernetes placement for GPU work: the defaults the training pod uses and ``GPU_OP_TAGS`` for whole steps.

Two ways to put training on a GPU node, both configured from here:

* **Pipes pod** (the k8s profile's default): the run stays on a small CPU pod and
  :class:`resources.k8s_training.K8sTrainingLauncher` starts one GPU pod per training; it uses
  :data:`DEFAULT_GPU_TOLERATIONS` and tells preemption from code errors.
* **Whole step on a GPU node**: run the job with ``dagster_k8s.k8s_job_executor`` and tag the
  training asset ``op_tags=GPU_OP_TAGS``; the step's Kubernetes Job then gets the GPU limit, the
  node selector and the tolerations below (``SubprocessTrainingLauncher`` then trains inside it).

Run-level limits: the run queue caps runs tagged :data:`GPU_RUN_TAGS` (``deploy/k8s/dagster.yaml``);
run tags are set on the job (``define_asset_job(..., tags=GPU_RUN_TAGS)``), op tags do not reach
the run queue.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from resources.k8s_security import (
    SCRATCH_ENV,
    container_security_context,
    pod_security_context,
    scratch_mount,
    scratch_volume,
)

#: Extended resource the NVIDIA device plugin advertises.
GPU_RESOURCE = "nvidia.com/gpu"
#: Run/op tag marking GPU work; the run queue limits concurrent runs carrying it.
GPU_TAG_KEY = "aiflow/gpu"
GPU_RUN_TAGS: dict[str, str] = {GPU_TAG_KEY: "true"}

#: GPU node pools are tainted ``nvidia.com/gpu:NoSchedule`` (GKE, AKS, EKS managed GPU AMIs);
#: spot/preemptible pools carry their provider's taint. Tolerating a taint a node does not have is
#: harmless, so one list serves GKE and AKS.
DEFAULT_GPU_TOLERATIONS: list[dict[str, str]] = [
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
    {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
    {"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal", "value": "spot", "effect": "NoSchedule"},
]
#: The reference deployment's GPU pool (GKE, T4). Elsewhere use the pool's label, e.g.
#: ``{"nvidia.com/gpu.product": "Tesla-T4"}`` (NVIDIA GPU feature discovery) or an AKS/EKS pool label.
DEFAULT_GPU_NODE_SELECTOR: dict[str, str] = {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}

#: Training pods ask the autoscalers not to move them (a move costs the epochs since the last checkpoint).
DO_NOT_DISRUPT_ANNOTATIONS: dict[str, str] = {
    "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
    "karpenter.sh/do-not-disrupt": "true",
}


def gpu_op_tags(
    gpus: int = 1,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    requests: Mapping[str, str] | None = None,
    limits: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Op tags that run a whole step as a Kubernetes Job on a GPU node (with ``k8s_job_executor``).

    ``node_selector=None`` means :data:`DEFAULT_GPU_NODE_SELECTOR`; pass ``{}`` for none.

    ``dagster-k8s/config`` is read by ``dagster_k8s.job.get_user_defined_k8s_config`` for the step.

    ``gpus`` > 1 only reserves the GPUs: the step's ``SubprocessTrainingLauncher`` starts one training
    process, which uses one GPU. For data-parallel training on N GPUs use the Pipes pod
    (``K8sTrainingLauncher(gpus=N)``), which runs the entrypoint under torchrun with /dev/shm mounted.
    """
    resources: dict[str, dict[str, str]] = {
        "requests": dict(requests if requests is not None else {"cpu": "3", "memory": "12Gi"}),
        "limits": dict(limits if limits is not None else {"memory": "12Gi"}),
    }
    if gpus:
        resources["limits"][GPU_RESOURCE] = str(gpus)
    pod_spec_config: dict[str, Any] = {
        "tolerations": copy.deepcopy(list(tolerations if tolerations is not None else DEFAULT_GPU_TOLERATIONS)),
        # the restricted profile, as on every pod aiflow builds (resources/k8s_security.py)
        "security_context": pod_security_context(),
        "volumes": [scratch_volume(None)],
    }
    node_selector = DEFAULT_GPU_NODE_SELECTOR if node_selector is None else node_selector
    if node_selector:
        pod_spec_config["node_selector"] = dict(node_selector)
    return {
        "dagster-k8s/config": {
            "container_config": {
                "resources": resources,
                "security_context": container_security_context(),
                "volume_mounts": [scratch_mount()],
                "env": [{"name": name, "value": value} for name, value in SCRATCH_ENV.items()],
            },
            "pod_spec_config": pod_spec_config,
            "pod_template_spec_metadata": {"annotations": dict(DO_NOT_DISRUPT_ANNOTATIONS)},
        },
        **GPU_RUN_TAGS,
    }


#: One NVIDIA GPU on the default GPU pool, with the default tolerations.
GPU_OP_TAGS: dict[str, Any] = gpu_op_tags()
