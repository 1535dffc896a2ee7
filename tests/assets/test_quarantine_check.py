"""Scope: the bronze assets' blocking quarantine check, through Dagster on real Delta tables: a run that lands a file whose
rows mostly go to quarantine fails, names the file and the reason, skips silver, and leaves the file re-landable."""

from __future__ import annotations

import shutil

import polars as pl
from dagster import AssetKey, DagsterInstance, materialize

from aiflow.storage.lake import Lake, Tables
from assets.ingestion import QUARANTINE_CHECK
from tests.dagster_helpers import local_defs, local_home

BRONZE, SILVER = AssetKey(["flights", "bronze_flights"]), AssetKey(["flights", "silver_flights"])


def _materialize(defs, instance):
    return materialize([*defs.assets, *defs.asset_checks], resources=defs.resources, instance=instance, selection=[BRONZE, SILVER], raise_on_error=False)


def test_a_file_quarantining_most_of_its_rows_fails_the_run_and_stays_re_landable(tmp_path, demo_landing):
    home = local_home(tmp_path, demo_landing)
    flights = home / "landing" / "flights"
    day = pl.read_csv(flights / "2013-01-05.csv", infer_schema=False)
    shutil.move(flights / "2013-01-05.csv", tmp_path / "2013-01-05.csv")  # held back: landed again below, fixed
    broken = day.with_columns(pl.format("{} mi", pl.col("distance")).alias("distance"))  # every row's distance unparseable
    broken.write_csv(flights / "2013-01-05.csv")
    defs, instance = local_defs(home), DagsterInstance.ephemeral()

    result = _materialize(defs, instance)
    assert not result.success
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == QUARANTINE_CHECK]
    assert not check.passed and check.asset_key == BRONZE
    assert "2013-01-05.csv: quarantine limit" in check.description and "type on 'distance'" in check.description
    assert check.metadata["observed"].value == 1.0 and check.metadata["threshold"].value == 0.5
    assert check.metadata["files_over_limit"].value == 1
    shares = {r.data["file"]: r.data["quarantine_share"] for r in check.metadata["file_shares"].records}
    assert shares["2013-01-05.csv"] == 1.0 and all(v == 0 for f, v in shares.items() if f != "2013-01-05.csv")
    # the blocking check stopped the run before silver; the good days are in bronze, the broken one nowhere
    assert not result.asset_materializations_for_node("flights__silver_flights")
    lake = Lake(home / "lake")
    bronze = lake.scan(Tables.bronze("flights")).collect()
    assert "2013-01-05.csv" not in set(bronze["_source_file"]) and bronze["_source_file"].n_unique() == 4
    assert not lake.exists(Tables.quarantine("flights"))

    # the fixed file landed again under the same name: ingested, and the run is green
    shutil.move(tmp_path / "2013-01-05.csv", flights / "2013-01-05.csv")
    result = _materialize(defs, instance)
    assert result.success
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == QUARANTINE_CHECK]
    assert check.passed and check.metadata["observed"].value == 0.0
    bronze = result.asset_materializations_for_node("flights__bronze_flights")[0].metadata
    assert bronze["run_files_ingested"].value == 1 and bronze["run_rows_out"].value == day.height
    assert result.asset_materializations_for_node("flights__silver_flights")
