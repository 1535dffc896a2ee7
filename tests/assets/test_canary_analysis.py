"""Scope: the monitoring assets through Dagster: canary analysis promotes, rolls back or waits on logged traffic; log and labels observed."""

from __future__ import annotations

import datetime as dt
import warnings

import pytest
from dagster import DagsterInstance, DefaultSensorStatus, Definitions, RunRequest, SkipReason, build_sensor_context, materialize

from aiflow.models.registry import Registry
from aiflow.serving.inference_log import log_table
from aiflow.storage.lake import Lake
from assets.keys import canary_analysis_key, inference_log_key, labels_key
from assets.monitoring import monitoring_assets
from definitions import dataset_definitions
from resources.notify import NotifierResource
from resources.profiles import local_resources
from resources.reports import ReportLinksResource
from resources.storage import ArtifactsResource, LocalLakeResource
from sensors.canary import canary_sensor
from sensors.jobs import canary_job_name
from tests.aiflow.models.test_registry import register
from tests.aiflow.serving.conftest import tiny_spec
from tests.aiflow.serving.test_canary import T0, traffic, write

CONFIG = {"min_requests": 100, "min_labels": 50}
TRIPS = tiny_spec()  # classification, New York
FARES = tiny_spec("fares", "regression", "Asia/Tokyo")


@pytest.fixture(autouse=True)
def _quiet_beta():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def with_canary(tmp_path, name: str) -> tuple[Lake, Registry]:
    lake = Lake(tmp_path / "lake")
    registry = Registry(lake)
    for seed in ("a", "b"):
        register(registry, seed, name=name)
    registry.promote(name, 1, reason="first", actor="test", at=T0 - dt.timedelta(hours=2))
    registry.promote(name, 2, reason="try v2", actor="test", alias="canary", at=T0)
    return lake, registry


def log_traffic(lake: Lake, name: str, *, champion: dict, canary: dict, regression: bool = False) -> None:
    champ, champ_labels = traffic("champion", 1, regression=regression, seed=1, **champion)
    can, can_labels = traffic("canary", 2, regression=regression, seed=2, **canary)
    write(lake, name, champ + can, champ_labels + can_labels)


def run_analysis(tmp_path, spec, config=CONFIG):
    result = materialize(
        monitoring_assets(spec),
        resources={
            "lake": LocalLakeResource(root=str(tmp_path / "lake")), "notifier": NotifierResource(),
            "artifacts": ArtifactsResource(root=str(tmp_path / "artifacts")), "reports": ReportLinksResource(),
        },  # fmt: skip
        selection=[canary_analysis_key(spec)],
        run_config={"ops": {f"{spec.name}__canary_analysis": {"config": config}}},
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node(f"{spec.name}__canary_analysis")
    return {k: v.value for k, v in mat.metadata.items()}


def test_better_canary_is_promoted(tmp_path):
    lake, registry = with_canary(tmp_path, TRIPS.name)
    log_traffic(lake, TRIPS.name, champion={"n": 300, "quality": 0.7}, canary={"n": 300, "quality": 0.95})
    meta = run_analysis(tmp_path, TRIPS)
    assert meta["decision"] == "promote" and meta["applied"] is True
    assert meta["canary_requests"] == 300 and meta["champion_labels"] == 300 and meta["canary_roc_auc"] > meta["champion_roc_auc"]
    assert registry.aliases(TRIPS.name) == {"champion": 2}
    event = registry.history(TRIPS.name, "champion").row(0, named=True)
    assert event["action"] == "promote" and event["reason"].startswith("canary analysis: canary as good as champion")
    assert event["set_by"].startswith("dagster run ")


def test_worse_canary_is_rolled_back_champion_unchanged(tmp_path):
    """Regression shape (RMSE), another dataset and time zone."""
    lake, registry = with_canary(tmp_path, FARES.name)
    log_traffic(lake, FARES.name, champion={"n": 300, "quality": 2.0}, canary={"n": 300, "quality": 0.2}, regression=True)
    meta = run_analysis(tmp_path, FARES)
    assert meta["decision"] == "rollback" and "rmse" in meta["reason"]
    assert meta["canary_rmse"] > meta["champion_rmse"]
    assert registry.aliases(FARES.name) == {"champion": 1}
    event = registry.history(FARES.name, "canary").row(0, named=True)
    assert event["action"] == "remove" and event["version"] is None and "rmse" in event["reason"]
    assert registry.history(FARES.name, "champion").height == 1  # the champion was never touched


def test_too_few_samples_waits_and_dry_run_changes_nothing(tmp_path):
    lake, registry = with_canary(tmp_path, TRIPS.name)
    log_traffic(lake, TRIPS.name, champion={"n": 300, "quality": 0.95}, canary={"n": 40, "quality": 0.5})
    meta = run_analysis(tmp_path, TRIPS)
    assert meta["decision"] == "wait" and "too few records" in meta["reason"] and meta["canary_requests"] == 40
    assert registry.aliases(TRIPS.name) == {"canary": 2, "champion": 1}
    meta = run_analysis(tmp_path, TRIPS, {"min_requests": 20, "min_labels": 20, "dry_run": True})
    assert meta["decision"] == "rollback" and meta["applied"] is False
    assert registry.aliases(TRIPS.name) == {"canary": 2, "champion": 1}


def test_no_canary_says_so(tmp_path):
    lake = Lake(tmp_path / "lake")
    register(Registry(lake), "a", name=TRIPS.name)
    Registry(lake).promote(TRIPS.name, 1, reason="first", actor="test")
    meta = run_analysis(tmp_path, TRIPS)
    assert meta["decision"] == "none" and "no canary" in meta["reason"] and meta["applied"] is False
    assert Registry(lake).aliases(TRIPS.name) == {"champion": 1}


def observed_version(instance: DagsterInstance, key) -> str | None:
    record = instance.fetch_observations(key, limit=1).records[0]
    return record.asset_observation.data_version


def test_canary_job_observes_the_delta_versions(tmp_path):
    """The dataset's canary job (as wired in definitions) observes log and labels, data version = Delta version."""
    lake, registry = with_canary(tmp_path, FARES.name)
    log_traffic(lake, FARES.name, champion={"n": 150, "quality": 2.0}, canary={"n": 150, "quality": 2.0}, regression=True)
    write(lake, FARES.name, traffic("champion", 1, 5, quality=2.0, regression=True, seed=7)[0], [])  # log at v1, labels at v0
    defs = Definitions.merge(dataset_definitions(FARES), Definitions(resources=local_resources(str(tmp_path))))
    instance = DagsterInstance.ephemeral()
    result = defs.resolve_job_def(canary_job_name(FARES)).execute_in_process(
        instance=instance, run_config={"ops": {"fares__canary_analysis": {"config": CONFIG}}}
    )
    assert result.success
    assert lake.version(log_table(FARES.name)) == 1
    versions = {key: observed_version(instance, key) for key in (inference_log_key(FARES), labels_key(FARES))}
    assert versions == {inference_log_key(FARES): "v1", labels_key(FARES): "v0"}
    assert registry.aliases(FARES.name) == {"champion": 2}  # equal quality within tolerance: promoted


def test_canary_sensor_requests_runs_only_while_a_canary_is_set(tmp_path):
    lake, registry = with_canary(tmp_path, TRIPS.name)
    sensor_def = canary_sensor(TRIPS)
    assert sensor_def.default_status == DefaultSensorStatus.STOPPED and sensor_def.minimum_interval_seconds == 15 * 60
    resources = {"lake": LocalLakeResource(root=str(tmp_path / "lake"))}
    request = sensor_def(build_sensor_context(resources=resources))
    assert isinstance(request, RunRequest) and request.tags["aiflow/canary_version"] == "2"
    registry.remove_alias(TRIPS.name, "canary", reason="test", actor="test")
    assert isinstance(sensor_def(build_sensor_context(resources=resources)), SkipReason)
