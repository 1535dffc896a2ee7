"""Training on a Kubernetes GPU pod through Dagster Pipes, with retries for preemption only.

The run itself stays where it is (a small CPU pod under the K8sRunLauncher); each training is one
pod started by ``dagster_k8s.PipesK8sClient`` running ``python -m aiflow.train`` in our image.
When the pod fails, the pod status and events decide (``aiflow.train.preemption``):

* preempted / evicted / node lost: ``RetryRequested``; the retried step keeps the run id, hence
  the request's checkpoint key, and the training resumes from its last checkpoint;
* anything else (traceback, OOMKilled, image pull error): ``Failure`` at once, carrying the error
  the process reported through Pipes and the tail of the pod log.

The pod is deleted by this launcher, not by ``PipesK8sClient``: its status must be read before it
goes. Credentials reach the pod only as ``envFrom`` secret references (``env_from_secrets``).

**Several GPUs** (``gpus=N`` > 1): the container runs ``torchrun --standalone --nnodes=1
--nproc-per-node=N -m aiflow.train`` (DistributedDataParallel, one process per GPU, NCCL; rank 0
talks Pipes, see :mod:`aiflow.train.distributed`), requests ``nvidia.com/gpu: N`` and mounts a
memory-backed ``emptyDir`` at ``/dev/shm`` (NCCL moves data between the processes of a node through
shared memory; the container runtime's default 64 MiB makes it fail or crawl).

**Several nodes** (``nodes`` > 1) are refused: a multi-node run needs one pod per node started
together and a rendezvous every pod reaches (an indexed ``Job`` with ``completionMode: Indexed``,
``parallelism = completions = nodes``, a headless ``Service`` on the rank-0 pod and
``torchrun --nnodes=M --node-rank=$JOB_COMPLETION_INDEX --rdzv-backend=c10d --rdzv-endpoint=<service>:29400``,
or a Kubeflow ``PyTorchJob`` that does the same), while ``PipesK8sClient`` starts a single pod.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal, NoReturn

from dagster import Failure, PipesClientCompletedInvocation, RetryRequested
from dagster_k8s import PipesK8sClient
from dagster_k8s.client import DagsterK8sError, DagsterKubernetesClient
from kubernetes.client import ApiClient
from pydantic import Field

from aiflow.train.contract import TrainRequest
from aiflow.train.distributed import torchrun_args
from aiflow.train.preemption import PodFailure, diagnose_pod_failure, log_tail, pipes_error_from_logs
from resources.k8s_security import (
    IMAGE_UID,
    SCRATCH_ENV,
    container_security_context,
    pod_security_context,
    scratch_mount,
    scratch_volume,
)
from resources.k8s_tags import (
    DEFAULT_GPU_NODE_SELECTOR,
    DEFAULT_GPU_TOLERATIONS,
    DO_NOT_DISRUPT_ANNOTATIONS,
    GPU_RESOURCE,
)
from resources.training import ENTRYPOINT, TrainingLauncher

#: Name of the training container (the first container: the one that talks Pipes).
CONTAINER_NAME = "aiflow-training"
#: Label carrying a per-launch id, so the launcher finds its pod again (PipesK8sClient names it).
LAUNCH_ID_LABEL = "aiflow/launch-id"
#: Log lines kept in a failure's description.
FAILURE_LOG_LINES = 40
#: The memory-backed volume mounted at /dev/shm of a multi-GPU pod (NCCL's shared memory).
SHM_VOLUME = "dshm"


class K8sTrainingLauncher(TrainingLauncher):
    """``python -m aiflow.train`` in a Kubernetes GPU pod (Dagster Pipes); retries preemptions only."""

    image: str = Field(description="Training image (pin a tag or digest; built from deploy/Dockerfile with a CUDA torch).")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="When the node pulls the image (IfNotPresent suits pinned tags)."
    )
    command: list[str] = Field(
        default_factory=lambda: ["python", *ENTRYPOINT], description="Command of the training container."
    )
    namespace: str = Field("aiflow", description="Namespace the training pods run in.")
    service_account_name: str | None = Field(
        "aiflow-training", description="Service account of the training pod (None: the namespace default)."
    )
    gpus: int = Field(
        1,
        ge=0,
        description=f"Number of `{GPU_RESOURCE}` in the container's limits (0: CPU only). More than one: the "
        "entrypoint runs under torchrun, one DistributedDataParallel process per GPU, with /dev/shm mounted.",
    )
    nodes: int = Field(
        1,
        ge=1,
        description="Nodes of a training run. Only 1 is supported by this launcher (one pod); multi-node needs an "
        "indexed Job or a PyTorchJob (see the module docstring).",
    )
    shm_size_limit: str | None = Field(
        "2Gi",
        description="Size limit of the memory-backed /dev/shm of a multi-GPU pod (counts against the memory limit; "
        "None: no limit).",
    )
    run_as_user: int = Field(
        IMAGE_UID, ge=1, description="UID and GID the training container runs as (the image's non-root USER)."
    )
    scratch_size_limit: str | None = Field(
        "20Gi",
        description="Size limit of the /tmp emptyDir, the one writable path (the root filesystem is read-only); "
        "None: no limit.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_GPU_NODE_SELECTOR),
        description="Node labels the pod must match, e.g. {'cloud.google.com/gke-accelerator': 'nvidia-tesla-t4'} "
        "or {'nvidia.com/gpu.product': 'Tesla-T4'}.",
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [dict(t) for t in DEFAULT_GPU_TOLERATIONS],
        description="Pod tolerations (Kubernetes Toleration objects); default: the nvidia.com/gpu taint and the "
        "GKE / AKS spot taints.",
    )
    cpu_request: str | None = Field("3", description="CPU request of the training container.")
    cpu_limit: str | None = Field(None, description="CPU limit (None: no limit, no throttling).")
    memory_request: str | None = Field("12Gi", description="Memory request of the training container.")
    memory_limit: str | None = Field("12Gi", description="Memory limit; exceeding it is OOMKilled, a code error.")
    env_from_secrets: list[str] = Field(
        default_factory=list,
        description="Secrets whose keys become environment variables (envFrom secretRef), e.g. AWS_* credentials.",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Plain, non-secret environment variables.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the training pod.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra annotations on the training pod.")
    delete_pod_on_completion: bool = Field(True, description="Delete the pod when it ends (False: keep it to debug).")
    poll_interval: float = Field(5.0, gt=0, description="Seconds between pod status polls.")
    pod_wait_timeout: float = Field(86400.0, ge=0, description="Seconds to wait for the pod to finish (0: no limit).")
    load_incluster_config: bool | None = Field(
        None, description="Use the in-cluster service account (None: in-cluster when KUBERNETES_SERVICE_HOST is set)."
    )
    kubeconfig_file: str | None = Field(None, description="Kubeconfig to use outside the cluster.")
    kube_context: str | None = Field(None, description="Kubeconfig context to use outside the cluster.")
    max_preemption_retries: int = Field(3, ge=0, description="Times a preempted training is retried before failing.")
    preemption_retry_wait_s: float = Field(30.0, ge=0, description="Seconds to wait before retrying a preempted pod.")

    # --- pod manifest (pure) -------------------------------------------------------------------

    @property
    def distributed(self) -> bool:
        """True when the pod runs several training processes (torchrun + DDP)."""
        return self.gpus > 1 or self.nodes > 1

    def pod_command(self) -> list[str]:
        """``command``, or under torchrun for several GPUs: ``torchrun --standalone --nproc-per-node=N -m aiflow.train``.

        Raises:
            ValueError: ``nodes`` > 1 (one pod cannot hold several nodes), or a custom ``command`` that
                is not ``<python> -m <module> ...`` (torchrun needs the module to start it per GPU).
        """
        if self.nodes > 1:
            raise ValueError(
                f"K8sTrainingLauncher: nodes={self.nodes}, but this launcher starts one pod; multi-node training needs "
                "an indexed Job or a Kubeflow PyTorchJob (one pod per node and a c10d rendezvous, see "
                "resources/k8s_training.py). Use nodes=1 with gpus=N for one node with N GPUs."
            )
        if not self.distributed:
            return list(self.command)
        if len(self.command) < 3 or self.command[1] != "-m":
            raise ValueError(
                f"K8sTrainingLauncher: gpus={self.gpus} runs the entrypoint under torchrun, which needs command "
                f"['python', '-m', '<module>', ...]; got {self.command}"
            )
        return [*torchrun_args(self.gpus), *self.command[1:]]

    def _resources(self) -> dict[str, dict[str, str]]:
        requests = {k: v for k, v in (("cpu", self.cpu_request), ("memory", self.memory_request)) if v}
        limits = {k: v for k, v in (("cpu", self.cpu_limit), ("memory", self.memory_limit)) if v}
        if self.gpus:
            limits[GPU_RESOURCE] = str(self.gpus)
        return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}

    def base_pod_spec(self) -> dict[str, Any]:
        """PodSpec (camelCase) that ``PipesK8sClient`` completes with image, command and Pipes env.

        Hardened as the Pod Security "restricted" profile asks (``resources/k8s_security.py``): non-root,
        no escalation, no capabilities, seccomp RuntimeDefault, read-only root with ``/tmp`` an emptyDir.
        """
        env = {**SCRATCH_ENV, **self.env}  # scratch paths first: an explicit env wins
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "imagePullPolicy": self.image_pull_policy,
            "resources": self._resources(),
            "env": [{"name": name, "value": value} for name, value in env.items()],
            "securityContext": container_security_context(),
            "volumeMounts": [scratch_mount()],
        }
        if self.env_from_secrets:
            container["envFrom"] = [{"secretRef": {"name": name}} for name in self.env_from_secrets]
        # No service-account token: the pod talks to Dagster through Pipes (its log and environment), never the API.
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "containers": [container],
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(self.run_as_user),
            "volumes": [scratch_volume(self.scratch_size_limit)],
        }
        if self.distributed:
            shm: dict[str, Any] = {"medium": "Memory"}
            if self.shm_size_limit:
                shm["sizeLimit"] = self.shm_size_limit
            container["volumeMounts"].append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
            spec["volumes"].append({"name": SHM_VOLUME, "emptyDir": shm})
        if self.service_account_name:
            spec["serviceAccountName"] = self.service_account_name
        if self.node_selector:
            spec["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            spec["tolerations"] = [dict(t) for t in self.tolerations]
        return spec

    def base_pod_meta(self) -> dict[str, Any]:
        """ObjectMeta (labels, annotations) of the training pod; dagster-k8s adds its own labels and the name."""
        return {
            "labels": {"aiflow/component": "training", **self.labels},
            "annotations": {**DO_NOT_DISRUPT_ANNOTATIONS, **self.annotations},
        }

    # --- launch --------------------------------------------------------------------------------

    def launch(self, context, request: TrainRequest, env: dict[str, str] | None = None) -> PipesClientCompletedInvocation:
        command = self.pod_command()  # refuses a configuration it cannot launch before any pod exists
        launch_id = uuid.uuid4().hex
        meta = self.base_pod_meta()
        meta["labels"].update(
            {LAUNCH_ID_LABEL: launch_id, "aiflow/run-id": context.run_id, "aiflow/attempt": str(context.retry_number)}
        )
        client = PipesK8sClient(
            load_incluster_config=self.load_incluster_config,
            kubeconfig_file=self.kubeconfig_file,
            kube_context=self.kube_context,
            poll_interval=self.poll_interval,
        )
        try:
            return client.run(
                context=context,
                image=self.image,
                command=command,
                namespace=self.namespace,
                extras=self.extras(request),
                env=env or {},
                base_pod_spec=self.base_pod_spec(),
                base_pod_meta=meta,
                pod_wait_timeout=self.pod_wait_timeout,
                # We delete the pod ourselves below, after reading why it failed.
                delete_pod_on_completion=False,
            )
        except Exception as exc:  # the pod failed, vanished, or never started
            self._raise_for_failed_pod(context, launch_id, exc)
            raise  # unreachable: _raise_for_failed_pod always raises
        finally:
            if self.delete_pod_on_completion:
                self._delete_pods(context, launch_id)

    def _raise_for_failed_pod(self, context, launch_id: str, exc: Exception) -> NoReturn:
        """Read the failed pod (status, events, log) and raise RetryRequested or Failure."""
        k8s = DagsterKubernetesClient.production_client()
        serialize = ApiClient().sanitize_for_serialization
        pod: dict[str, Any] | None = None
        diagnosis: PodFailure | None = None
        events: list[dict[str, Any]] = []
        logs = ""
        try:
            pods = k8s.core_api.list_namespaced_pod(self.namespace, label_selector=f"{LAUNCH_ID_LABEL}={launch_id}").items
            pod = serialize(pods[0]) if pods else None
        except Exception as lookup_error:
            diagnosis = PodFailure("error", f"could not read the failed pod to classify it: {lookup_error}")
        else:
            if pod is None and not isinstance(exc, DagsterK8sError):
                # No pod, and not an error from waiting on one: creating it failed (quota, RBAC, namespace...).
                diagnosis = PodFailure("error", f"the training pod could not be created: {type(exc).__name__}")
        pod_name = ((pod or {}).get("metadata") or {}).get("name")
        if pod_name:
            try:
                found = k8s.core_api.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={pod_name}")
                events = [serialize(event) for event in found.items]
            except Exception as events_error:
                context.log.warning(f"Could not read the events of pod {pod_name}: {events_error}")
            try:
                logs = k8s.retrieve_pod_logs(pod_name, self.namespace, container_name=CONTAINER_NAME, tail_lines=200)
            except Exception:
                logs = ""
        if diagnosis is None:
            diagnosis = diagnose_pod_failure(pod, events)
        metadata = {
            "pod": pod_name or "",
            "namespace": self.namespace,
            "failure": diagnosis.reason,
            "attempt": context.retry_number + 1,
        }

        if diagnosis.kind == "preempted":
            if context.retry_number < self.max_preemption_retries:
                context.log.warning(
                    f"Training pod {pod_name or '?'} was preempted ({diagnosis.reason}); retry "
                    f"{context.retry_number + 1} of {self.max_preemption_retries} in {self.preemption_retry_wait_s:g} s, "
                    "resuming from the request's checkpoint key."
                )
                raise RetryRequested(
                    max_retries=self.max_preemption_retries, seconds_to_wait=self.preemption_retry_wait_s
                ) from exc
            raise Failure(
                description=f"Training pod preempted {context.retry_number + 1} times, giving up: {diagnosis.reason}",
                metadata=metadata,
                allow_retries=False,
            ) from exc

        text = logs or str(exc)
        error = pipes_error_from_logs(text)
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        details = f"{diagnosis.reason}; " if error else ""
        description = f"Training failed: {error or diagnosis.reason}\n({details}{type(exc).__name__}: {first_line})"
        tail = log_tail(text, FAILURE_LOG_LINES)
        if tail:
            description += f"\n\nLast log lines of pod {pod_name or '?'}:\n{tail}"
        raise Failure(description=description, metadata=metadata, allow_retries=False) from exc

    def _delete_pods(self, context, launch_id: str) -> None:
        core_api = DagsterKubernetesClient.production_client().core_api
        try:
            pods = core_api.list_namespaced_pod(self.namespace, label_selector=f"{LAUNCH_ID_LABEL}={launch_id}").items
            for pod in pods:
                core_api.delete_namespaced_pod(pod.metadata.name, self.namespace)
        except Exception as delete_error:
            context.log.warning(f"Could not delete the training pod (launch {launch_id}): {delete_error}")
