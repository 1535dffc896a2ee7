"""A STAND-IN for the Kubernetes CoreV1Api (no cluster runs here): pods are local subprocesses.

Why: the training path must be proven through the real ``dagster_k8s.PipesK8sClient`` (pod body,
Pipes bootstrap env, pod-log message reader, ``wait_for_pod``, deletion) without a cluster. This
class implements only the CoreV1Api methods dagster-k8s and our launcher call:
``create_namespaced_pod``, ``read_namespaced_pod``, ``list_namespaced_pod``,
``read_namespaced_pod_log`` (snapshot and ``follow=True`` streaming, with ``timestamps``,
``since_seconds``, ``tail_lines``), ``delete_namespaced_pod`` and ``list_namespaced_event``.

``create_namespaced_pod`` EXECUTES the first container's ``command + args`` as a real subprocess
with the container's env (``env`` values plus ``envFrom`` secretRefs resolved from the stand-in's
``secrets``), so the real Pipes bootstrap env reaches the real process. Its stdout and stderr are the
pod log (RFC 3339 nanosecond timestamps, as the kubelet writes them); the pod phase and container
state follow the process. Answers are real ``kubernetes.client`` models, deserialized from the JSON
an API server would send. A :class:`Disruption` makes the stand-in act like the cluster taking the
pod away (spot shutdown, eviction, OOM kill) once a given line appears in the log.

What it does not emulate: scheduling, images (every image is this interpreter's environment),
``valueFrom``, volumes, init/sidecar containers, terminating (deleted pods vanish at once).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

_API = ApiClient()


def _model(data: Any, klass: str) -> Any:
    """A kubernetes.client model from API JSON, through the client's own deserializer."""

    class _Response:
        pass

    response = _Response()
    response.data = json.dumps(data)
    return _API.deserialize(response, klass)


def _rfc3339(ns: int) -> str:
    seconds, frac = divmod(ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def _not_found(name: str) -> ApiException:
    error = ApiException(status=404, reason="Not Found")
    error.body = json.dumps({"kind": "Status", "status": "Failure", "reason": "NotFound", "message": f'pods "{name}" not found'})
    return error


@dataclass
class Disruption:
    """What the cluster does to a pod once ``trigger`` appears in its log: kill it and set this status."""

    trigger: str
    pod_reason: str | None = None
    pod_message: str | None = None
    condition_reason: str | None = None  # DisruptionTarget condition, as Kubernetes >= 1.26 sets it
    container_reason: str = "Error"
    exit_code: int = 137
    event_reason: str | None = None
    event_message: str = ""


#: GKE spot VM reclaimed: graceful node shutdown (what a preempted T4 spot node looks like).
SPOT_SHUTDOWN = Disruption(
    trigger="checkpoint saved",
    pod_reason="Terminated",
    pod_message="Pod was terminated in response to imminent node shutdown.",
    condition_reason="TerminationByKubelet",
)
#: Scheduler preemption on an older cluster: no condition, only the "Preempted" event.
SCHEDULER_PREEMPTION_EVENT_ONLY = Disruption(
    trigger="checkpoint saved", event_reason="Preempted", event_message="Preempted by pod 6f1c... on node gpu-pool-1"
)
#: Kubelet eviction under node pressure.
EVICTED = Disruption(trigger="checkpoint saved", pod_reason="Evicted", pod_message="The node was low on resource: memory.")
#: The container exceeded its memory limit: a code/config error, not a preemption.
OOM_KILLED = Disruption(trigger="checkpoint saved", container_reason="OOMKilled")


@dataclass
class _Pod:
    manifest: dict[str, Any]
    process: subprocess.Popen
    created_ns: int
    disruption: Disruption | None
    lines: list[tuple[int, str]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    finished: bool = False
    deleted: bool = False
    disrupted: bool = False
    exit_code: int | None = None
    finished_ns: int | None = None
    reads: int = 0

    @property
    def name(self) -> str:
        return self.manifest["metadata"]["name"]


class StandInCoreV1Api:
    """STAND-IN for ``kubernetes.client.CoreV1Api``: each pod is a local subprocess (see module docstring)."""

    def __init__(
        self,
        workdir: Path,
        secrets: dict[str, dict[str, str]] | None = None,
        disruptions: dict[int, Disruption] | None = None,
        reject_create: int | None = None,
    ):
        self.workdir = Path(workdir)
        self.reject_create = reject_create
        self.secrets = secrets or {}
        self.disruptions = disruptions or {}
        self.created: list[dict[str, Any]] = []  # manifests, in creation order
        self.deleted: list[str] = []
        self.pod_env: list[dict[str, str]] = []  # the env each process got
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._lock = threading.Lock()
        self._last_ns = 0

    # --- helpers -------------------------------------------------------------------------------

    def _now_ns(self) -> int:
        with self._lock:
            self._last_ns = max(time.time_ns(), self._last_ns + 1000)  # strictly increasing, like distinct log lines
            return self._last_ns

    def _pod(self, name: str, namespace: str) -> _Pod:
        pod = self._pods.get((namespace, name))
        if pod is None:
            raise _not_found(name)
        return pod

    def _container_env(self, container: dict[str, Any]) -> dict[str, str]:
        env = {
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
            "HOME": str(self.workdir),
            "PYTHONUNBUFFERED": "1",
            "HOSTNAME": "stand-in-node",
        }
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                env.update(self.secrets[source["secretRef"]["name"]])  # a missing secret fails loudly
            else:
                raise NotImplementedError(f"stand-in: envFrom {source}")
        for var in container.get("env") or []:
            if "value" not in var:
                raise NotImplementedError(f"stand-in: env {var['name']} without a plain value")
            env[var["name"]] = var["value"]
        return env

    def _read_stream(self, pod: _Pod, stream) -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            with pod.cond:
                pod.lines.append((self._now_ns(), text))
                pod.cond.notify_all()
            if pod.disruption and not pod.disrupted and pod.disruption.trigger in text:
                pod.disrupted = True
                os.killpg(pod.process.pid, signal.SIGKILL)
        stream.close()

    def _watch(self, pod: _Pod, readers: list[threading.Thread]) -> None:
        code = pod.process.wait()
        for reader in readers:
            reader.join()
        with pod.cond:
            pod.exit_code = pod.disruption.exit_code if pod.disrupted else code
            pod.finished_ns = self._now_ns()
            pod.finished = True
            pod.cond.notify_all()

    def _pod_json(self, pod: _Pod, count_read: bool = True) -> dict[str, Any]:
        """The pod as the API returns it: Pending at the first read, then Running, then terminated."""
        manifest = json.loads(json.dumps(pod.manifest))
        container = manifest["spec"]["containers"][0]
        started = _rfc3339(pod.created_ns)
        status: dict[str, Any] = {"startTime": started, "hostIP": "10.0.0.7", "podIP": "10.4.0.12"}
        pod.reads += count_read
        base = {"name": container["name"], "image": container.get("image", ""), "imageID": "", "restartCount": 0}
        if pod.reads <= 1 and not pod.finished:
            status.update(phase="Pending", conditions=[{"type": "PodScheduled", "status": "True"}])
        elif not pod.finished:
            status["phase"] = "Running"
            status["containerStatuses"] = [{**base, "ready": True, "started": True, "state": {"running": {"startedAt": started}}}]
        else:
            failed = pod.exit_code != 0
            disruption = pod.disruption if pod.disrupted else None
            terminated = {
                "exitCode": pod.exit_code,
                "reason": disruption.container_reason if disruption else ("Error" if failed else "Completed"),
                "startedAt": started,
                "finishedAt": _rfc3339(pod.finished_ns),
            }
            status["phase"] = "Failed" if failed else "Succeeded"
            status["containerStatuses"] = [{**base, "ready": False, "started": False, "state": {"terminated": terminated}}]
            if disruption and disruption.pod_reason:
                status.update(reason=disruption.pod_reason, message=disruption.pod_message)
            if disruption and disruption.condition_reason:
                status["conditions"] = [
                    {"type": "DisruptionTarget", "status": "True", "reason": disruption.condition_reason,
                     "message": disruption.pod_message or "", "lastTransitionTime": _rfc3339(pod.finished_ns)}
                ]
        manifest["status"] = status
        manifest["metadata"].update(
            namespace=manifest["metadata"].get("namespace"), uid=str(uuid.uuid5(uuid.NAMESPACE_OID, pod.name)),
            creationTimestamp=started.split(".")[0] + "Z",
        )
        manifest["spec"]["nodeName"] = "stand-in-node"
        return manifest

    @staticmethod
    def _matches(pod: _Pod, field_selector: str | None, label_selector: str | None) -> bool:
        for clause in filter(None, (field_selector or "").split(",")):
            key, _, value = clause.partition("=")
            if key != "metadata.name":
                raise NotImplementedError(f"stand-in: field selector {clause}")
            if pod.name != value:
                return False
        labels = pod.manifest["metadata"].get("labels") or {}
        for clause in filter(None, (label_selector or "").split(",")):
            key, _, value = clause.partition("=")
            if labels.get(key) != value:
                return False
        return True

    # --- CoreV1Api -----------------------------------------------------------------------------

    def create_namespaced_pod(self, namespace: str, body: Any, **_: Any) -> Any:
        if self.reject_create:
            error = ApiException(status=self.reject_create, reason="Forbidden")
            error.body = 'pods is forbidden: User "system:serviceaccount:aiflow:dagster" cannot create resource "pods"'
            raise error
        manifest = _API.sanitize_for_serialization(body)
        manifest.setdefault("apiVersion", "v1")
        manifest.setdefault("kind", "Pod")
        manifest["metadata"]["namespace"] = namespace
        name = manifest["metadata"]["name"]
        if (namespace, name) in self._pods:
            raise ApiException(status=409, reason="AlreadyExists")
        container = manifest["spec"]["containers"][0]
        env = self._container_env(container)
        index = len(self.created)
        self.created.append(manifest)
        self.pod_env.append(env)
        process = subprocess.Popen(
            [*container["command"], *(container.get("args") or [])],
            env=env, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        pod = _Pod(manifest=manifest, process=process, created_ns=self._now_ns(), disruption=self.disruptions.get(index))
        self._pods[(namespace, name)] = pod
        readers = [threading.Thread(target=self._read_stream, args=(pod, s), daemon=True) for s in (process.stdout, process.stderr)]
        for reader in readers:
            reader.start()
        threading.Thread(target=self._watch, args=(pod, readers), daemon=True).start()
        return _model(self._pod_json(pod, count_read=False), "V1Pod")

    def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> Any:
        return _model(self._pod_json(self._pod(name, namespace)), "V1Pod")

    def list_namespaced_pod(self, namespace: str, field_selector: str | None = None, label_selector: str | None = None, **_: Any) -> Any:
        items = [
            self._pod_json(pod)
            for (ns, _name), pod in list(self._pods.items())
            if ns == namespace and self._matches(pod, field_selector, label_selector)
        ]
        return _model({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}, "V1PodList")

    def delete_namespaced_pod(self, name: str, namespace: str, **_: Any) -> Any:
        pod = self._pod(name, namespace)
        if pod.process.poll() is None:
            os.killpg(pod.process.pid, signal.SIGKILL)
        with pod.cond:
            pod.deleted = True
            pod.cond.notify_all()
        del self._pods[(namespace, name)]
        self.deleted.append(name)
        return _model({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}, "V1Status")

    def list_namespaced_event(self, namespace: str, field_selector: str | None = None, **_: Any) -> Any:
        items = []
        for (ns, name), pod in list(self._pods.items()):
            wanted = f"involvedObject.name={name}"
            if ns != namespace or (field_selector and field_selector != wanted):
                continue
            if pod.disrupted and pod.disruption.event_reason:
                items.append({
                    "metadata": {"name": f"{name}.1", "namespace": ns},
                    "involvedObject": {"kind": "Pod", "name": name, "namespace": ns},
                    "reason": pod.disruption.event_reason, "message": pod.disruption.event_message,
                    "type": "Warning", "count": 1,
                })
        return _model({"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": items}, "CoreV1EventList")

    def read_namespaced_pod_log(
        self,
        name: str,
        namespace: str,
        container: str | None = None,
        follow: bool = False,
        timestamps: bool = False,
        since_seconds: int | None = None,
        tail_lines: int | None = None,
        _preload_content: bool = True,
        **_: Any,
    ) -> Any:
        pod = self._pod(name, namespace)
        if container not in (None, pod.manifest["spec"]["containers"][0]["name"]):
            raise ApiException(status=400, reason=f"container {container} is not valid for pod {name}")
        since_ns = time.time_ns() - since_seconds * 1_000_000_000 if since_seconds else 0

        def render(line: tuple[int, str]) -> bytes:
            ns, text = line
            return (f"{_rfc3339(ns)} {text}\n" if timestamps else f"{text}\n").encode()

        if not follow:
            with pod.cond:
                lines = [line for line in pod.lines if line[0] >= since_ns]
            if tail_lines is not None:
                lines = lines[-tail_lines:] if tail_lines else []
            data = b"".join(render(line) for line in lines)
            return data.decode() if _preload_content else _LogResponse(iter([data]), data)

        def stream() -> Iterator[bytes]:
            index = 0
            while True:
                with pod.cond:
                    while index >= len(pod.lines) and not (pod.finished or pod.deleted):
                        pod.cond.wait(0.1)
                    batch = pod.lines[index:]
                    index += len(batch)
                    done = (pod.finished or pod.deleted) and index >= len(pod.lines)
                for line in batch:
                    if line[0] >= since_ns:
                        yield render(line)
                if done:
                    return

        return _LogResponse(stream())


class _LogResponse:
    """What ``read_namespaced_pod_log(..., _preload_content=False)`` returns: an urllib3-like response."""

    def __init__(self, chunks: Iterator[bytes], data: bytes | None = None):
        self._chunks = chunks
        self._data = data

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        return self._chunks

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = b"".join(self._chunks)
        return self._data

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass
