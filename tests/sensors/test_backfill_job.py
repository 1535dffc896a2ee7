"""Scope: `<dataset>_backfill_job` runs its slices as separate step processes (2 at a time, forkserver), leaves the tables
a full refresh leaves (a regression spec in Asia/Tokyo, unpartitioned) and reports silver and features as materialized
with a row per slice."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import polars as pl
import yaml
from dagster import (
    AssetKey,
    Definitions,
    TableMetadataValue,
    build_reconstructable_job,
    execute_job,
    instance_for_test,
)

from aiflow.spec import parse_spec
from aiflow.storage.lake import Lake, Tables
from resources.profiles import local_resources
from sensors.backfill import backfill_job, backfill_job_name
from tests.aiflow.data.test_backfill import METERS, assert_same, full_refresh, ingest_all, snapshot


def backfill_job_of(spec_path: str, home: str):
    """The backfill job of the spec at ``spec_path`` with local resources under ``home`` (rebuilt in each step process).

    Only the job, not the whole code location (``tests/test_definitions.py`` loads that): every step process rebuilds
    it, and loading every asset of the location there cost ~10 s per step."""
    spec = parse_spec(yaml.safe_load(Path(spec_path).read_text()), "meters")
    return Definitions(jobs=[backfill_job(spec)], resources=local_resources(home)).resolve_job_def(backfill_job_name(spec))


def test_backfill_job_runs_slices_in_parallel_processes_and_equals_a_full_refresh(tmp_path):
    raw = copy.deepcopy(METERS)
    spec_path, home = tmp_path / "meters.yaml", tmp_path / "home"
    spec_path.write_text(yaml.safe_dump(raw))
    spec, lake = parse_spec(raw, "meters"), Lake(home / "lake")
    landing = home / "landing" / "meters"
    landing.mkdir(parents=True)
    times = pl.datetime_range(dt.datetime(2024, 1, 1), dt.datetime(2024, 3, 31), "5h", eager=True, time_zone="UTC")
    frame = pl.DataFrame({"taken_at": times}).join(pl.DataFrame({"meter": ["m-a", "m-b"]}), how="cross")
    frame = frame.with_columns((pl.int_range(pl.len()) * 37 % 101 / 10).alias("kwh"), pl.col("taken_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    frame.select("meter", "kwh", "taken_at").write_csv(landing / "a.csv")
    ingest_all(lake, home / "landing", spec)
    expected = full_refresh(lake, spec)

    job = build_reconstructable_job(__name__, backfill_job_of.__name__, reconstructable_args=(str(spec_path), str(home)))
    # each step forks from a server that preloaded this module (else each imports for seconds); the forkserver is one per
    # process, so this holds when no earlier test of the session started it (correct either way, only slower)
    preload = ["dagster._core.executor.multiprocess", __name__]
    run_config = {
        "execution": {"config": {"max_concurrent": 2, "start_method": {"forkserver": {"preload_modules": preload}}}},
        "ops": {name: {"config": {"slices": 2}} for name in ("meters_plan_silver_backfill", "meters_plan_features_backfill")},
    }
    with instance_for_test() as instance:
        with execute_job(job, instance=instance, run_config=run_config) as result:
            assert result.success
            events = result.all_events
        steps = {e.step_key for e in events if e.event_type_value == "STEP_SUCCESS"}
        pids = {e.pid for e in events if e.step_key and "_slice[" in e.step_key}
        silver = instance.get_latest_materialization_event(AssetKey(["meters", "silver_meters"])).asset_materialization
        features = instance.get_latest_materialization_event(AssetKey(["meters", "features"])).asset_materialization
    assert {f"meters_{stage}_slice[{stage}_meters_{i}]" for stage in ("silver", "features") for i in (0, 1)} <= steps
    assert len(pids) >= 2  # slices ran in separate processes

    assert_same(expected, snapshot(lake, spec))
    table = silver.metadata["backfill_slices"]
    assert isinstance(table, TableMetadataValue) and len(table.records) == 2
    assert sum(r.data["rows_in"] for r in table.records) == frame.height
    assert features.metadata["run_rows_out"].value == expected[Tables.features("meters")].height == frame.height
    assert features.metadata["delta_version"].value == lake.version(Tables.features("meters"))
