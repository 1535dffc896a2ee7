"""Scope: the sweep job trains each variant through the real launcher on one pinned version and keeps the best."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from aiflow.data.demo import write_landing
from aiflow.spec import demo_spec_path, parse_spec
from aiflow.storage.lake import Lake, Tables
from definitions import build_definitions
from resources.profiles import local_resources
from tests.aiflow.train.conftest import run_data_plane

pytestmark = pytest.mark.slow

SMALL = {"batch_size": 256, "hidden": [16], "embedding_dim": 4, "patience": 2, "baseline_max_rows": 2000, "epochs": 2}


def test_sweep_records_every_candidate_and_materializes_the_best(tmp_path):
    home = tmp_path / "home"
    write_landing(home / "landing", days=20, start=dt.date(2013, 1, 1))
    data = yaml.safe_load(demo_spec_path().read_text())
    data["split"] = {"kind": "time", "valid_from": "2013-01-13", "test_from": "2013-01-17"}
    spec_path = tmp_path / "flights.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    lake = Lake(home / "lake")
    version = run_data_plane(lake, home / "landing", parse_spec(data, "flights"))

    defs = build_definitions(spec_path, resources=local_resources(str(home)))
    instance = DagsterInstance.ephemeral()
    variants = [{**SMALL, "learning_rate": 1e-3}, {**SMALL, "learning_rate": 3e-3, "hidden": [32, 16]}]
    result = defs.resolve_job_def("flights_sweep_job").execute_in_process(
        run_config={"ops": {"flights_plan_sweep": {"config": {"variants": variants}}}}, instance=instance
    )
    assert result.success
    trained = [o for o in result.output_for_node("flights_train_variant").values()]
    assert len(trained) == 2
    from aiflow.train.contract import TrainResult

    results = [TrainResult.model_validate_json(t) for t in trained]
    assert {r.data_version for r in results} == {version}  # one pinned version for every variant
    assert {tuple(r.params.hidden) for r in results} == {(16,), (32, 16)}
    best = max(results, key=lambda r: r.metrics["roc_auc"])

    event = instance.get_latest_materialization_event(AssetKey(["flights", "candidate"]))
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert metadata["artifact_sha256"] == best.artifact_sha256
    assert metadata["valid_roc_auc"] == pytest.approx(best.metrics["roc_auc"])
    assert metadata["selected_by"] == "roc_auc"
    assert metadata["sweep_candidates"].count("\n") >= 3  # header, rule, one row per candidate
    assert lake.scan(Tables.features("flights")).select(pl.len()).collect().item() > 0
