"""Why did a training pod fail: preempted (retry, resume from the checkpoint) or a code error (fail now)?

Pure functions over the pod as the Kubernetes API returns it (``kubectl get pod -o json``, camelCase
keys) and its events; no Dagster or Kubernetes client import, so they are unit-tested directly.

Signals read, in this order:

1. No pod at all: it vanished while we waited (deleted with its lost node, or by the taint
   manager / pod GC): **preempted**.
2. A container terminated with reason ``OOMKilled``: the code asked for more memory than its
   limit; a retry would fail the same way: **error** (checked before the pod-level signals, which
   a node under memory pressure may add as well).
3. The ``DisruptionTarget`` pod condition with status ``True`` (Kubernetes >= 1.26 sets it on
   scheduler preemption ``PreemptionByScheduler``, taint-manager deletion ``DeletionByTaintManager``,
   API eviction / drain ``EvictionByEvictionAPI``, node shutdown or pressure ``TerminationByKubelet``,
   pod GC of a lost node ``DeletionByPodGC``): **preempted**.
4. ``status.reason`` set by the kubelet or node lifecycle: ``Evicted``, ``Preempted``,
   ``Preempting``, ``Shutdown``, ``NodeShutdown``, ``Terminated``, ``NodeLost``,
   ``UnexpectedAdmissionError``: **preempted**.
5. Events on the pod with reason ``Preempted``, ``Preempting``, ``Evicted``, ``TaintManagerEviction``,
   ``NodeShutdown``, ``Shutdown``: **preempted** (older clusters without the condition).
6. ``metadata.deletionTimestamp`` set (someone else deleted the pod: a drain, the spot-node
   handler) or ``status.phase == "Unknown"`` (node unreachable) or a container whose status was lost
   (``ContainerStatusUnknown``): **preempted**.
7. Anything else (non-zero exit code with a traceback, image pull errors, bad config): **error**.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

FailureKind = Literal["preempted", "error"]

#: ``DisruptionTarget`` condition reasons (documented ones; any reason with status True counts).
DISRUPTION_REASONS = frozenset(
    {
        "PreemptionByScheduler",
        "PreemptionByKubeScheduler",  # name used by Kubernetes 1.26
        "DeletionByTaintManager",
        "EvictionByEvictionAPI",
        "DeletionByPodGC",
        "TerminationByKubelet",
    }
)
#: ``status.reason`` values that mean the node or the cluster took the pod away.
PREEMPTED_POD_REASONS = frozenset(
    {
        "Evicted",
        "Preempted",
        "Preempting",
        "Shutdown",
        "NodeShutdown",
        "Terminated",
        "NodeLost",
        "UnexpectedAdmissionError",
    }
)
#: Event reasons on the pod that mean the same (for clusters without ``DisruptionTarget``).
PREEMPTED_EVENT_REASONS = frozenset(
    {"Preempted", "Preempting", "Evicted", "TaintManagerEviction", "NodeShutdown", "Shutdown"}
)


@dataclass(frozen=True)
class PodFailure:
    """The verdict and the signal it rests on (shown in the Dagster event log)."""

    kind: FailureKind
    reason: str


def _terminated_states(pod: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    status = pod.get("status") or {}
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        for key in ("state", "lastState"):
            terminated = ((container.get(key) or {}).get("terminated")) or None
            if terminated:
                yield container.get("name", "?"), terminated


def diagnose_pod_failure(
    pod: Mapping[str, Any] | None, events: Iterable[Mapping[str, Any]] = ()
) -> PodFailure:
    """Classify a failed training pod; see the module docstring for the signals and their order.

    Args:
        pod: The pod as JSON (camelCase keys, as the API returns it), or None when it no longer exists.
        events: The pod's events as JSON (``involvedObject.name`` = the pod), newest last.
    """
    if pod is None:
        return PodFailure("preempted", "pod vanished while running (node lost or pod deleted by the cluster)")

    for name, terminated in _terminated_states(pod):
        if terminated.get("reason") == "OOMKilled":
            return PodFailure("error", f"container {name!r} was OOMKilled (exit code {terminated.get('exitCode')})")

    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and str(condition.get("status")) == "True":
            return PodFailure(
                "preempted", f"DisruptionTarget: {condition.get('reason')}: {condition.get('message') or ''}".rstrip(": ")
            )

    if status.get("reason") in PREEMPTED_POD_REASONS:
        return PodFailure("preempted", f"pod {status['reason']}: {status.get('message') or ''}".rstrip(": "))

    for event in events:
        if event.get("reason") in PREEMPTED_EVENT_REASONS:
            return PodFailure("preempted", f"event {event['reason']}: {event.get('message') or ''}".rstrip(": "))

    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return PodFailure("preempted", "pod deleted by the cluster while running (deletionTimestamp set)")
    if status.get("phase") == "Unknown":
        return PodFailure("preempted", "pod phase Unknown (node unreachable)")
    for name, terminated in _terminated_states(pod):
        if terminated.get("reason") == "ContainerStatusUnknown":
            return PodFailure("preempted", f"container {name!r} status lost with its node")

    for name, terminated in _terminated_states(pod):
        if terminated.get("exitCode") not in (None, 0):
            return PodFailure("error", f"container {name!r} exited with code {terminated['exitCode']}")
    return PodFailure("error", f"pod failed (phase {status.get('phase')}, reason {status.get('reason')})")


def classify_pod_failure(pod: Mapping[str, Any] | None, events: Iterable[Mapping[str, Any]] = ()) -> FailureKind:
    """``"preempted"`` (retry from the checkpoint) or ``"error"`` (fail at once) for a failed pod."""
    return diagnose_pod_failure(pod, events).kind


def pipes_error_from_logs(logs: str) -> str | None:
    """The exception the training process reported through Dagster Pipes, from its pod logs.

    ``open_dagster_pipes()`` writes a ``closed`` message carrying the exception (name, message)
    on stderr, which is part of the pod log. Returns ``"Name: message"`` or None.
    """
    for line in reversed(logs.splitlines()):
        line = line.strip()
        if not line.startswith("{") or "__dagster_pipes_version" not in line:
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue
        exception = (message.get("params") or {}).get("exception") if message.get("method") == "closed" else None
        if exception:
            # ``message`` is ``traceback.format_exception_only`` output: usually already "Name: text".
            name, text = exception.get("name") or "Exception", (exception.get("message") or "").strip()
            if text.split(":", 1)[0].split(".")[-1] == name.split(".")[-1]:
                return text
            return f"{name}: {text}".rstrip(": ")
    return None


def log_tail(logs: str, lines: int = 40) -> str:
    """The last ``lines`` lines of a pod log without the Pipes protocol messages (the human part)."""
    human = [line for line in logs.splitlines() if "__dagster_pipes_version" not in line]
    return "\n".join(human[-lines:])
