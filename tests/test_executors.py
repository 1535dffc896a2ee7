"""Scope: each profile's step executor (forkserver locally, the instance's on Kubernetes) and the override."""

from __future__ import annotations

import pytest

from definitions import build_definitions
from resources.executors import executor_for
from resources.profiles import local_resources


def test_local_and_s3_fork_steps_from_a_preloaded_server_and_k8s_leaves_it_to_the_instance():
    assert executor_for("local").name == "forkserver_multiprocess"
    assert executor_for("s3").name == "forkserver_multiprocess"
    assert executor_for("k8s") is None
    assert executor_for("local", "in_process").name == "in_process"
    assert executor_for("k8s", "spawn").name == "spawn_multiprocess"
    with pytest.raises(ValueError, match="unknown AIFLOW_EXECUTOR 'threads'"):
        executor_for("local", "threads")


def test_every_job_of_the_local_code_location_uses_the_profile_executor(tmp_path, monkeypatch):
    monkeypatch.delenv("AIFLOW_EXECUTOR", raising=False)
    monkeypatch.setenv("AIFLOW_PROFILE", "local")
    defs = build_definitions(resources=local_resources(str(tmp_path)))
    jobs = [j for j in defs.resolve_all_job_defs() if not j.name.startswith("__")]
    assert jobs and {j.executor_def.name for j in jobs if j.executor_def.name != "in_process"} <= {"forkserver_multiprocess"}
    asset_jobs = [j for j in jobs if j.name.endswith(("data_plane_job", "lifecycle_job"))]
    assert asset_jobs and all(j.executor_def.name == "forkserver_multiprocess" for j in asset_jobs)
