"""Scope: the sweep job trains each variant through the real launcher on one pinned version, records the best as a
candidate of its run (registry/candidates) and materializes it; the evaluation takes it by candidate_id."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
import yaml
from dagster import AssetKey, AssetSelection, DagsterInstance, FloatMetadataValue, TableMetadataValue, materialize

from aiflow.data.demo import write_landing
from aiflow.models.candidates import Handoffs
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
    metadata = dict(event.asset_materialization.metadata)
    candidate = Handoffs(lake).resolve_candidate("flights", run_ids=[result.run_id]).record
    assert candidate.source == "sweep" and candidate.artifact_sha256 == best.artifact_sha256
    assert candidate.valid_metrics["roc_auc"] == pytest.approx(best.metrics["roc_auc"]) and "train_loss" not in candidate.valid_metrics
    assert result.output_for_node("flights_select_best") == candidate.candidate_id == metadata["candidate_id"].value
    assert metadata["artifact_sha256"].value == best.artifact_sha256
    assert isinstance(metadata["valid_roc_auc"], FloatMetadataValue)
    assert metadata["valid_roc_auc"].value == pytest.approx(best.metrics["roc_auc"], abs=1e-6)
    assert metadata["selected_by"].value == "roc_auc"
    # every variant trained both families; the best variant's winning family is recorded with both families' metrics
    assert all(set(r.family_metrics) == {"pytorch", "sklearn"} for r in results)
    assert candidate.family == best.family == metadata["family"].value and candidate.family_metrics == best.family_metrics
    assert metadata["naive_roc_auc"].value == pytest.approx(best.naive_metrics["roc_auc"], abs=1e-6)
    for family in ("pytorch", "sklearn"):
        assert metadata[f"{family}_valid_roc_auc"].value == pytest.approx(best.family_metrics[family]["roc_auc"], abs=1e-6)
    table = metadata["sweep_candidates"]
    assert isinstance(table, TableMetadataValue) and len(table.records) == 2  # one row per variant, inline in the UI
    assert lake.scan(Tables.features("flights")).select(pl.len()).collect().item() > 0

    # a separate evaluation run takes the sweep's candidate by its id (it did not train one itself)
    evaluation = materialize(
        [*defs.assets, *defs.asset_checks], resources=defs.resources, instance=instance,
        selection=AssetSelection.assets(AssetKey(["flights", "evaluation"])),
        run_config={"ops": {"flights__evaluation": {"config": {"candidate_id": candidate.candidate_id, "absolute": {}}}}},
        raise_on_error=False,
    )  # fmt: skip
    evaluated = dict(evaluation.asset_materializations_for_node("flights__evaluation")[0].metadata)
    assert evaluated["candidate_id"].value == candidate.candidate_id and evaluated["artifact_sha256"].value == best.artifact_sha256
    recorded = Handoffs(lake).resolve_evaluation("flights", run_ids=[evaluation.run_id]).record
    assert recorded.candidate_id == candidate.candidate_id


def test_an_evaluation_without_a_candidate_of_its_own_refuses_unless_told(tmp_path):
    """No candidate in the run, no candidate_id, no use_latest: the step fails and says how to choose one."""
    home = tmp_path / "home"
    defs = build_definitions(demo_spec_path(), resources=local_resources(str(home)))
    result = materialize(
        [*defs.assets, *defs.asset_checks], resources=defs.resources, instance=DagsterInstance.ephemeral(),
        selection=AssetSelection.assets(AssetKey(["flights", "evaluation"])), raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    errors = " ".join(str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure)
    assert "recorded no candidate" in errors and "candidate_id" in errors and "use_latest" in errors
