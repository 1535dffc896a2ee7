"""Scope: each profile's step executor (in process locally, the instance's on Kubernetes), the override, the sweep's parallel steps."""

from __future__ import annotations

import pytest

from definitions import build_definitions
from resources.executors import executor_for
from resources.profiles import local_resources


def test_local_and_s3_run_steps_in_process_and_k8s_leaves_it_to_the_instance():
    assert executor_for("local").name == "in_process"
    assert executor_for("s3").name == "in_process"
    assert executor_for("k8s") is None
    assert executor_for("local", "forkserver").name == "forkserver_multiprocess"
    assert executor_for("k8s", "spawn").name == "spawn_multiprocess"
    with pytest.raises(ValueError, match="unknown AIFLOW_EXECUTOR 'threads'"):
        executor_for("local", "threads")


def test_jobs_use_the_profile_executor_and_the_sweep_keeps_parallel_steps(tmp_path, monkeypatch):
    monkeypatch.delenv("AIFLOW_EXECUTOR", raising=False)
    monkeypatch.setenv("AIFLOW_PROFILE", "local")
    defs = build_definitions(resources=local_resources(str(tmp_path)))
    executors = {j.name: j.executor_def.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
    assert executors.pop("flights_sweep_job") == "forkserver_multiprocess"
    assert executors.pop("flights_backfill_job") == "multiprocess"  # parallel slices (sensors/backfill.py)
    assert executors and set(executors.values()) == {"in_process"}, executors

    monkeypatch.setenv("AIFLOW_EXECUTOR", "spawn")
    defs = build_definitions(resources=local_resources(str(tmp_path)))
    assert defs.resolve_job_def("lifecycle_job").executor_def.name == "spawn_multiprocess"
