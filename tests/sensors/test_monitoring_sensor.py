"""The monitoring sensor evaluated by Dagster against a real instance on a real monitored world (a trained champion,
its inference log and labels written as the server writes them): one partitioned run request per window data time has
moved past, tagged with its window and trigger; nothing twice; a window asked for again when its labels change (once
they settle); observations of the inference log, the labels and the champion alias (a CLI promotion included). The
rollback job refuses to run without a reason."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, build_sensor_context

from aiflow.models.registry import Registry
from definitions import build_definitions
from resources.profiles import local_resources
from tests.aiflow.monitoring.world import SERVED, World, serve_week


@pytest.fixture
def world(drift_world: World, tmp_path) -> World:
    """A copy of the session's drift world (tests/conftest.py)."""
    shutil.copytree(drift_world.home, tmp_path / "home")
    return World(tmp_path / "home", drift_world.spec, drift_world.version)


def definitions_for(world: World):
    spec_path = world.home / "rides.yaml"
    spec_path.write_text(yaml.safe_dump(world.spec.model_dump(mode="json", exclude_none=True)))
    return build_definitions(spec_path, resources=local_resources(str(world.home)))


def test_one_partitioned_run_per_completed_window_and_again_when_its_labels_settle(world: World):
    defs = definitions_for(world)
    instance = DagsterInstance.ephemeral()
    sensor = defs.get_sensor_def("rides_monitoring_sensor")

    def tick(cursor):
        context = build_sensor_context(instance=instance, definitions=defs, sensor_name=sensor.name, resources=defs.resources, cursor=cursor)
        return sensor.evaluate_tick(context)

    serve_week(world, 0, shifted=False)
    first = tick(None)
    assert not first.run_requests  # the only window is the newest: data time has not moved past it
    observed = {e.asset_key for e in first.asset_events}
    assert {AssetKey(["rides", "inference_log"]), AssetKey(["rides", "labels"]), AssetKey(["rides", "champion"])} <= observed
    serve_week(world, 1, shifted=True, labels=False)  # week 0 completes; week 1's labels come later
    second = tick(first.cursor)
    assert [(r.partition_key, r.job_name or "rides_monitoring_job") for r in second.run_requests] == [(SERVED.isoformat(), "rides_monitoring_job")]
    (request,) = second.run_requests
    assert request.tags["aiflow/window"] == SERVED.isoformat() and request.tags["aiflow/trigger"] == "monitoring_sensor"
    assert request.tags["aiflow/monitoring"] == "rides" and request.run_key == f"rides-monitor-{SERVED}-1050-1050"
    assert {e.asset_key for e in second.asset_events} == {AssetKey(["rides", "inference_log"])}  # only what changed
    assert not tick(second.cursor).run_requests  # nothing new: nothing twice
    # week 2 makes week 1 complete, with no label yet; week 1's labels then arrive late, in one batch
    serve_week(world, 2, shifted=False, labels=False)
    third = tick(second.cursor)
    week1 = SERVED + dt.timedelta(days=7)
    assert [r.partition_key for r in third.run_requests] == [week1.isoformat()] and third.run_requests[0].run_key.endswith("-1050-0")
    from aiflow.serving.feedback import record_feedback

    ids = [f"w1-{i}" for i in range(1050)]
    record_feedback(world.lake, "rides", [(r, 1.0) for r in ids[:500]], known=lambda got: set(got))
    moving = tick(third.cursor)
    assert not moving.run_requests  # labels still arriving: wait for them to settle
    record_feedback(world.lake, "rides", [(r, 0.0) for r in ids[500:]], known=lambda got: set(got))
    still_moving = tick(moving.cursor)
    assert not still_moving.run_requests
    settled = tick(still_moving.cursor)
    assert [r.run_key for r in settled.run_requests] == [f"rides-monitor-{week1}-1050-1050"]  # the window is judged again


def test_the_champion_asset_follows_a_promotion_made_from_the_cli(world: World):
    defs = definitions_for(world)
    instance = DagsterInstance.ephemeral()
    sensor = defs.get_sensor_def("rides_monitoring_sensor")
    serve_week(world, 0, shifted=False)

    def tick(cursor):
        context = build_sensor_context(instance=instance, definitions=defs, sensor_name=sensor.name, resources=defs.resources, cursor=cursor)
        return sensor.evaluate_tick(context)

    first = tick(None)
    (seen,) = [e for e in first.asset_events if e.asset_key == AssetKey(["rides", "champion"])]
    assert seen.metadata["serving_version"].value == world.version
    registry = Registry(world.lake)
    v1 = registry.get("rides", world.version)
    v2 = registry.register(
        "rides", artifact_uri=v1.artifact_uri, artifact_sha256="f" * 64, training_table=v1.training_table,
        training_version=v1.training_version, metrics=v1.metrics, baseline_metrics=v1.baseline_metrics, params={}, gate_results={},
        gates_passed=True, reason="test",
    )  # fmt: skip
    env = {"AIFLOW_HOME": str(world.home), "AIFLOW_PROFILE": "local", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "aiflow.cli.main", "--spec", str(world.home / "rides.yaml"), "models", "promote", "rides", str(v2.version),
         "--reason", "better on the new carrier mix"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    after = tick(first.cursor)
    (seen,) = [e for e in after.asset_events if e.asset_key == AssetKey(["rides", "champion"])]
    assert seen.metadata["serving_version"].value == v2.version and seen.tags["dagster/data_version"] == f"v{v2.version}"
    assert not [e for e in tick(after.cursor).asset_events if e.asset_key == AssetKey(["rides", "champion"])]


def test_the_rollback_job_refuses_to_run_without_a_reason(world: World):
    defs = definitions_for(world)
    result = defs.resolve_job_def("rides_rollback_job").execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "rollback refused: give a reason" in failure.message + str(failure.event_specific_data.error)
    assert Registry(world.lake).alias("rides", "champion") == world.version  # nothing moved
