"""Scope: the data-plane assets and their blocking checks, materialized through Dagster on real Delta tables."""

from __future__ import annotations

import shutil

import polars as pl
import yaml
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    FloatMetadataValue,
    IntMetadataValue,
    PathMetadataValue,
    TableMetadataValue,
    materialize,
)

from aiflow.spec import demo_spec_path
from aiflow.storage.lake import Lake, Tables
from assets.ingestion import QUARANTINE_CHECK
from assets.metadata import PREVIEW_ROWS
from tests.dagster_helpers import DATA_PLANE, local_defs, local_home


def _assets_and_checks(defs):
    return [*defs.assets, *defs.asset_checks]


def test_materialize_data_plane_reports_metadata_and_passes_checks(tmp_path, demo_landing):
    home = local_home(tmp_path, demo_landing)
    defs = local_defs(home)
    result = materialize(_assets_and_checks(defs), resources=defs.resources, instance=DagsterInstance.ephemeral(), selection=DATA_PLANE)
    assert result.success

    landed = pl.concat([pl.read_csv(p, infer_schema=False) for p in sorted((home / "landing" / "flights").glob("*.csv"))])
    bronze = result.asset_materializations_for_node("flights__bronze_flights")[0].metadata
    assert bronze["run_rows_in"].value == landed.height
    assert bronze["run_rows_out"].value == landed.height
    assert bronze["run_files_ingested"].value == 5
    assert bronze["delta_version"].value == 0
    assert bronze["dagster/row_count"].value == landed.height
    assert bronze["table_files_in_ledger"].value == 5
    assert bronze["landing_zone"].value == str((home / "landing" / "flights").resolve())
    assert "files_not_ingested" not in bronze  # every file ingested: no empty table

    silver = result.asset_materializations_for_node("flights__silver_flights")[0].metadata
    assert silver["run_rows_in"].value == landed.height
    assert silver["run_rows_out"].value + silver["run_rows_quarantined"].value + silver["run_rows_superseded"].value == landed.height
    # tabular metadata renders inline: a table value, not Markdown
    assert isinstance(silver["preview"], TableMetadataValue) and len(silver["preview"].records) == PREVIEW_ROWS
    columns = {c.name: c for c in silver["dagster/column_schema"].schema.columns}
    assert columns["sched_dep_time"].description == "scheduled departure (HHMM local)"  # the spec's column description
    assert isinstance(silver["quarantine_table"], PathMetadataValue)
    assert silver["run_first_date"].value == "2013-01-01"

    features = result.asset_materializations_for_node("flights__features")[0].metadata
    assert features["run_rows_out"].value == silver["run_rows_out"].value
    assert features["run_state_refitted"].value is True
    roles = {r.data["role"] for r in features["features"].records}
    assert roles == {"categorical", "numeric", "calendar", "target"}

    checks = result.get_asset_check_evaluations()
    assert {(c.asset_key, c.check_name) for c in checks} >= {
        (AssetKey(["flights", "silver_flights"]), "row_counts"),
        (AssetKey(["flights", "silver_weather"]), "key_unique"),
        (AssetKey(["flights", "features"]), "schema_matches_spec"),
    }
    assert all(c.passed for c in checks), [c.description for c in checks if not c.passed]
    for c in checks:  # numbers the UI can plot on every check result
        assert {"observed", "threshold", "margin"} <= set(c.metadata), (c.check_name, c.metadata)
        assert all(isinstance(c.metadata[k], IntMetadataValue | FloatMetadataValue) for k in ("observed", "threshold", "margin"))
    data_plane_keys = {c.asset_key for c in checks}
    specs = [s for checks_def in defs.asset_checks for s in checks_def.check_specs if s.asset_key in data_plane_keys]
    assert len(specs) == 12 and all(s.description for s in specs)  # no "No description provided" in the UI

    # the lake holds what the metadata says
    lake = Lake(home / "lake")
    assert lake.scan(Tables.features("flights")).select(pl.len()).collect().item() == features["run_rows_out"].value == features["dagster/row_count"].value


def test_second_run_with_one_new_day_is_incremental(tmp_path, demo_landing):
    home = local_home(tmp_path, demo_landing)
    held_back = home / "held" / "2013-01-05.csv"
    held_back.parent.mkdir()
    shutil.move(home / "landing" / "flights" / "2013-01-05.csv", held_back)
    defs = local_defs(home)
    instance = DagsterInstance.ephemeral()
    assert materialize(_assets_and_checks(defs), resources=defs.resources, instance=instance, selection=DATA_PLANE).success

    shutil.move(held_back, home / "landing" / "flights" / "2013-01-05.csv")
    result = materialize(_assets_and_checks(defs), resources=defs.resources, instance=instance, selection=DATA_PLANE)
    assert result.success
    bronze = result.asset_materializations_for_node("flights__bronze_flights")[0].metadata
    assert bronze["run_files_ingested"].value == 1
    assert bronze["run_files_duplicate"].value == 0
    silver = result.asset_materializations_for_node("flights__silver_flights")[0].metadata
    # the day's flights span two UTC dates (evening departures fall on the next UTC day)
    assert 1 <= silver["run_dates_rewritten"].value <= 2
    assert silver["run_last_date"].value >= "2013-01-05"
    assert silver["dagster/row_count"].value > silver["run_rows_out"].value  # the table's total vs this run's rows

    # the same file again under a new name: a duplicate, listed inline with its outcome; silver has nothing to do
    shutil.copy(home / "landing" / "flights" / "2013-01-05.csv", home / "landing" / "flights" / "copy.csv")
    result = materialize(_assets_and_checks(defs), resources=defs.resources, instance=instance, selection=DATA_PLANE)
    bronze = result.asset_materializations_for_node("flights__bronze_flights")[0].metadata
    assert [(r.data["file"], r.data["outcome"]) for r in bronze["files_not_ingested"].records] == [("copy.csv", "duplicate")]
    silver = result.asset_materializations_for_node("flights__silver_flights")[0].metadata
    assert silver["run_dates_rewritten"].value == 0 and "run_first_date" not in silver


def test_failing_quality_check_blocks_downstream_features(tmp_path, demo_landing):
    """tailnum has nulls in the demo; a spec demanding none must stop features from being built."""
    home = local_home(tmp_path, demo_landing)
    data = yaml.safe_load(demo_spec_path().read_text())
    data["quality"]["max_null_rate"]["tailnum"] = 0.0
    data["slices"].append("tailnum")  # a null-rate limit needs its column carried into features (checked there too)
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump(data))
    defs = local_defs(home, strict)
    result = materialize(
        _assets_and_checks(defs), resources=defs.resources, instance=DagsterInstance.ephemeral(), raise_on_error=False,
        selection=DATA_PLANE,
    )
    assert not result.success
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert [(c.asset_key, c.check_name) for c in failed] == [(AssetKey(["flights", "silver_flights"]), "null_rates")]
    assert "tailnum" in failed[0].description
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    # silver itself was written (the check judges it); the block protects everything downstream
    assert AssetKey(["flights", "silver_flights"]) in materialized
    assert AssetKey(["flights", "features"]) not in materialized
    assert not Lake(home / "lake").exists(Tables.features("flights"))


def test_maintenance_job_compacts_without_changing_content(tmp_path, demo_landing):
    home = local_home(tmp_path, demo_landing)
    defs = local_defs(home)
    instance = DagsterInstance.ephemeral()
    assert materialize(_assets_and_checks(defs), resources=defs.resources, instance=instance, selection=DATA_PLANE).success
    # a second batch of appends leaves many small files per partition
    extra = home / "landing" / "flights" / "copy.csv"
    frame = pl.read_csv(home / "landing" / "flights" / "2013-01-02.csv", infer_schema=False)
    frame.with_columns(pl.col("flight") + "0").write_csv(extra)
    assert materialize(_assets_and_checks(defs), resources=defs.resources, instance=instance, selection=DATA_PLANE).success

    lake = Lake(home / "lake")
    bronze = Tables.bronze("flights")
    before_rows = lake.scan(bronze).sort("_source_file", "_source_row").collect()
    before_files = len(lake.table(bronze).file_uris())
    job = defs.resolve_job_def("flights_maintenance_job")
    result = job.execute_in_process(instance=instance, run_config={"ops": {"flights_compact_and_vacuum": {"config": {"retention_hours": 0, "hot_days": None}}}})
    assert result.success
    after_rows = lake.scan(bronze).sort("_source_file", "_source_row").collect()
    assert after_rows.equals(before_rows)
    assert len(lake.table(bronze).file_uris()) < before_files
    # the nightly default leaves the dates daily runs still replace alone: the demo's few days all are
    compacted = len(lake.table(bronze).file_uris())
    lake.append(bronze, lake.scan(bronze).head(3).collect())  # one more small file on the newest dates
    assert job.execute_in_process(instance=instance).success
    assert len(lake.table(bronze).file_uris()) == compacted + 1


def test_empty_landing_zone_is_a_clean_no_op_that_says_where_it_looked(tmp_path):
    """Nothing landed yet: every asset materializes, the checks warn (not block) naming the missing table."""
    home = tmp_path / "home"
    (home / "landing").mkdir(parents=True)
    defs = local_defs(home)
    result = materialize(_assets_and_checks(defs), resources=defs.resources, instance=DagsterInstance.ephemeral(), selection=DATA_PLANE)
    assert result.success
    bronze = result.asset_materializations_for_node("flights__bronze_flights")[0].metadata
    assert bronze["run_files_ingested"].value == 0 and bronze["table_exists"].value is False
    assert "delta_version" not in bronze and "ledger_version" not in bronze  # no -1 sentinels
    features = result.asset_materializations_for_node("flights__features")[0]
    assert features.tags["dagster/data_version"] == "absent"
    limits = [c for c in result.get_asset_check_evaluations() if c.check_name == QUARANTINE_CHECK]
    assert len(limits) == 2 and all(c.passed for c in limits)  # one per bronze table: no file, none over the limit
    checks = [c for c in result.get_asset_check_evaluations() if c.check_name != QUARANTINE_CHECK]
    assert len(checks) == 12
    assert all(not c.passed and c.severity == AssetCheckSeverity.WARN for c in checks)
    silver_uri = str(Lake(home / "lake").uri(Tables.silver("flights")))
    assert any(silver_uri in c.description for c in checks if c.asset_key == AssetKey(["flights", "silver_flights"]))


# A real Dagster run in its own process, killed with SIGKILL right after its bronze commit. The kill is
# placed by the engine's test hook (AIFLOW_TEST_KILL_AFTER), which is there only to place it deterministically.
RUN_BRONZE = """
import sys
from pathlib import Path
from dagster import AssetKey, AssetsDefinition, DagsterInstance, materialize
from tests.dagster_helpers import local_defs
defs = local_defs(Path(sys.argv[1]))
bronze = [a for a in defs.assets if isinstance(a, AssetsDefinition) and AssetKey(["flights", "bronze_flights"]) in a.keys]
config = {"ops": {"flights__bronze_flights": {"config": {"chunk_rows": 1000}}}}
result = materialize(bronze, resources=defs.resources, instance=DagsterInstance.get(), run_config=config)
sys.exit(0 if result.success else 1)
"""


def test_killed_run_does_not_block_the_next_and_every_file_lands_once(tmp_path, demo_landing):
    """kill -9 of a run in its bronze step: the next run (same instance, shipped dagster.yaml) completes it."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from dagster import DagsterRunStatus

    from aiflow.data.ingest import INGESTED, KILL_AFTER_ENV
    from tests.aiflow.data.test_ingest_faults import _assert_only_recorded_rows_visible

    root = Path(__file__).resolve().parents[2]
    home = local_home(tmp_path, demo_landing)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(root / "deploy" / "dagster.local.yaml", dagster_home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    command = [sys.executable, "-c", RUN_BRONZE, str(home)]

    killed = subprocess.run(command, cwd=root, env={**env, KILL_AFTER_ENV: "bronze"}, capture_output=True, text=True, timeout=180)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    instance = DagsterInstance.from_config(str(dagster_home))
    assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds > 0
    assert [r.status for r in instance.get_runs()] == [DagsterRunStatus.STARTED]  # dead, still marked started

    lake = Lake(home / "lake")
    _assert_only_recorded_rows_visible(lake, "flights")
    # no pool slot to wait for: the next run starts at once and completes the stopped batch
    after = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=180)
    assert after.returncode == 0, after.stderr
    assert [r.status for r in instance.get_runs()] == [DagsterRunStatus.SUCCESS, DagsterRunStatus.STARTED]

    _assert_only_recorded_rows_visible(lake, "flights")
    bronze = pl.read_delta(lake.uri(Tables.bronze("flights")))
    landed = pl.concat([pl.read_csv(p, infer_schema=False) for p in sorted((home / "landing" / "flights").glob("*.csv"))])
    assert bronze.height == landed.height and bronze.select("_source_file", "_source_row").is_duplicated().sum() == 0
    ledger = pl.read_delta(lake.uri(Tables.ledger("flights"))).filter(pl.col("outcome") == INGESTED)
    assert sorted(ledger["file"]) == sorted(p.name for p in (home / "landing" / "flights").glob("*.csv"))
