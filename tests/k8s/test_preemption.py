"""Scope: aiflow.train.preemption, the pure verdict on a failed training pod (preempted vs code error)."""

from __future__ import annotations

import json

import pytest

from aiflow.train.preemption import (
    classify_pod_failure,
    diagnose_pod_failure,
    log_tail,
    pipes_error_from_logs,
)


def _pod(phase="Failed", reason=None, message=None, conditions=(), terminated=None, deletion=None):
    status = {"phase": phase, "conditions": list(conditions)}
    if reason:
        status.update(reason=reason, message=message or "")
    if terminated is not None:
        status["containerStatuses"] = [
            {"name": "aiflow-training", "ready": False, "restartCount": 0, "image": "i", "imageID": "",
             "state": {"terminated": terminated}}
        ]
    metadata = {"name": "dagster-run-model-1"}
    if deletion:
        metadata["deletionTimestamp"] = deletion
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "status": status}


KILLED = {"exitCode": 137, "reason": "Error"}
TRACEBACK = {"exitCode": 1, "reason": "Error"}


def _disruption(reason):
    return {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": "m"}


@pytest.mark.parametrize(
    "reason", ["PreemptionByScheduler", "DeletionByTaintManager", "EvictionByEvictionAPI", "TerminationByKubelet", "DeletionByPodGC"]
)
def test_disruption_target_condition_is_preemption(reason):
    pod = _pod(conditions=[{"type": "Ready", "status": "False"}, _disruption(reason)], terminated=KILLED)
    verdict = diagnose_pod_failure(pod)
    assert verdict.kind == "preempted" and reason in verdict.reason


def test_disruption_condition_that_is_false_does_not_count():
    pod = _pod(conditions=[{**_disruption("PreemptionByScheduler"), "status": "False"}], terminated=TRACEBACK)
    assert classify_pod_failure(pod) == "error"


@pytest.mark.parametrize("reason", ["Evicted", "Preempted", "Shutdown", "NodeShutdown", "Terminated", "NodeLost"])
def test_pod_status_reasons_of_the_node_are_preemption(reason):
    assert classify_pod_failure(_pod(reason=reason, message="node went away", terminated=KILLED)) == "preempted"


@pytest.mark.parametrize("reason", ["Preempted", "TaintManagerEviction", "Evicted"])
def test_events_alone_are_enough_on_older_clusters(reason):
    events = [{"reason": "Scheduled", "message": "ok"}, {"reason": reason, "message": "by pod x"}]
    assert classify_pod_failure(_pod(terminated=KILLED), events) == "preempted"


def test_vanished_pod_deleted_pod_unknown_phase_and_lost_status_are_preemption():
    assert classify_pod_failure(None) == "preempted"
    assert classify_pod_failure(_pod(terminated=KILLED, deletion="2026-01-01T00:00:00Z")) == "preempted"
    assert classify_pod_failure(_pod(phase="Unknown")) == "preempted"
    assert classify_pod_failure(_pod(terminated={"exitCode": 137, "reason": "ContainerStatusUnknown"})) == "preempted"


def test_traceback_exit_is_a_code_error():
    verdict = diagnose_pod_failure(_pod(terminated=TRACEBACK), [{"reason": "Started"}])
    assert verdict.kind == "error"
    assert "exited with code 1" in verdict.reason


def test_oom_killed_is_a_code_error_even_with_disruption_signals():
    oom = {"exitCode": 137, "reason": "OOMKilled"}
    assert classify_pod_failure(_pod(terminated=oom)) == "error"
    assert classify_pod_failure(_pod(reason="Evicted", conditions=[_disruption("TerminationByKubelet")], terminated=oom)) == "error"


def test_pod_that_never_started_is_a_code_error():
    pod = _pod(phase="Pending")
    pod["status"]["containerStatuses"] = [
        {"name": "aiflow-training", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}
    ]
    assert classify_pod_failure(pod) == "error"


def _pipes_line(method, params):
    return json.dumps({"__dagster_pipes_version": "0.1", "method": method, "params": params})


def test_pipes_error_is_read_from_the_closed_message():
    logs = "\n".join(
        [
            _pipes_line("opened", {}),
            "Traceback (most recent call last):",
            "ValueError: bad column",
            _pipes_line("closed", {"exception": {"name": "ValueError", "message": "ValueError: bad column\n", "stack": []}}),
        ]
    )
    assert pipes_error_from_logs(logs) == "ValueError: bad column"
    assert log_tail(logs) == "Traceback (most recent call last):\nValueError: bad column"


def test_pipes_error_adds_the_name_when_the_message_lacks_it_and_is_none_without_exception():
    closed = _pipes_line("closed", {"exception": {"name": "KeyError", "message": "'target'"}})
    assert pipes_error_from_logs(closed) == "KeyError: 'target'"
    assert pipes_error_from_logs(_pipes_line("closed", {}) + "\nnot json {") is None
    assert pipes_error_from_logs("") is None
