"""Scope: definitions.py loads under each profile, every job resolves, assets are grouped by lifecycle stage."""

from __future__ import annotations

import importlib
import os

import pytest
from dagster import AssetKey, EnvVar

from aiflow.storage.settings import Settings, SettingsError
from definitions import build_definitions
from resources.profiles import resources_for
from resources.storage import LocalLakeResource, S3Access, S3LakeResource


def test_module_loads_and_every_job_resolves():
    module = importlib.import_module("definitions")
    defs = module.defs
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"data_plane_job", "flights_maintenance_job"} <= jobs
    for name in jobs:
        assert defs.resolve_job_def(name) is not None
    assert defs.resolve_sensor_def("flights_landing_sensor").job_name == "flights_data_plane_job"
    assert defs.resolve_schedule_def("flights_maintenance_nightly").job_name == "flights_maintenance_job"


def test_assets_are_grouped_by_stage_and_tagged():
    defs = build_definitions(resources=resources_for("local"))
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    groups = {key: spec.group_name for key, spec in specs.items()}
    assert groups[AssetKey(["flights", "bronze_flights"])] == "ingestion"
    assert groups[AssetKey(["flights", "bronze_weather"])] == "ingestion"
    assert groups[AssetKey(["flights", "silver_flights"])] == "cleansing"
    assert groups[AssetKey(["flights", "features"])] == "features"
    assert {"delta", "polars"} <= set(specs[AssetKey(["flights", "features"])].kinds)
    assert all(spec.description for spec in specs.values())
    checks = {(k.asset_key, k.name) for k in defs.resolve_asset_graph().asset_check_keys}
    assert (AssetKey(["flights", "features"]), "row_counts") in checks


def test_profiles_pick_implementations_without_reading_secrets(monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AIFLOW_PROFILE", raising=False)
    monkeypatch.setenv("AIFLOW_HOME", str(tmp_path / "home"))
    local = resources_for("local")
    assert isinstance(local["lake"], LocalLakeResource)
    settings = Settings.from_env()  # the CLI's settings and the Dagster profile name the same roots
    assert os.path.abspath(local["lake"].root) == settings.lake_uri
    assert local["artifacts"].uri() == settings.artifact_uri
    assert os.path.abspath(local["landing"].root) == settings.landing_uri
    s3 = resources_for("s3")  # builds without the secret: EnvVar is resolved at run time only
    assert isinstance(s3["lake"], S3LakeResource)
    for name in ("lake", "artifacts"):  # the artifact store gets its credentials exactly like the lake
        assert isinstance(s3[name], S3Access)
        assert isinstance(s3[name].secret_access_key, EnvVar) and s3[name].secret_access_key.env_var_name == "AWS_SECRET_ACCESS_KEY"
        assert isinstance(s3[name].access_key_id, EnvVar) and s3[name].access_key_id.env_var_name == "AWS_ACCESS_KEY_ID"
    build_definitions(resources=s3)
    with pytest.raises(ValueError, match="unknown AIFLOW_PROFILE 'gpu-cluster'"):
        resources_for("gpu-cluster")
    monkeypatch.setenv("AIFLOW_HOME", "s3://bucket/team")  # not a folder named "s3:"
    with pytest.raises(SettingsError, match="AIFLOW_HOME must be a local folder, got 's3://bucket/team'"):
        resources_for("local")


def test_every_asset_has_its_owners_and_a_code_reference_and_the_monitoring_windows_are_partitions():
    defs = build_definitions(resources=resources_for("local"))
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    for key in (AssetKey(["flights", "features"]), AssetKey(["flights", "decisions"]), AssetKey(["flights", "predictions"])):
        assert specs[key].owners == ["team:ml-platform"], key  # from the spec's owners
        assert "dagster/code_references" in specs[key].metadata, key
    graph = defs.resolve_asset_graph()
    for stage in ("drift", "live_performance", "decisions"):
        partitions = graph.get(AssetKey(["flights", stage])).partitions_def
        assert partitions.get_first_partition_key() == "2012-12-31" and partitions.timezone == "America/New_York"  # a Monday, NY time
    assert graph.get(AssetKey(["flights", "predictions"])).automation_condition is not None
    sensors = {s.name: s for s in defs.sensors}
    from dagster import DefaultSensorStatus

    for name in ("flights_monitoring_sensor", "flights_retrain_sensor", "flights_automation_sensor", "flights_landing_sensor"):
        assert sensors[name].default_status == DefaultSensorStatus.RUNNING, name  # production is the daemon: on by default
