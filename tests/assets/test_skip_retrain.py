"""Scope: no retraining for nothing and no artifacts piling up — real Dagster runs on the tiny spec (relative split):
a second run on the same features version, code version and hyperparameters hands the existing candidate on (evaluation
and registration still work) instead of training; force_retrain, other hyperparameters or a dirty code version train and
say why; the maintenance job removes bundles, checkpoints and plots no registered version references after the retention."""

from __future__ import annotations

import copy
import datetime as dt
import os
from pathlib import Path

import pytest
import yaml
from dagster import AssetSelection, DagsterInstance, materialize

from aiflow.models.candidates import Handoffs
from aiflow.models.cleanup import clean_artifacts
from aiflow.models.registry import Registry
from aiflow.spec import parse_spec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake
from aiflow.train.contract import TrainParams
from aiflow.train.request import pinned_request, reusable_candidate
from definitions import build_definitions
from resources.profiles import local_resources
from tests.aiflow.data.test_split import _landing
from tests.aiflow.tiny import TINY

pytestmark = pytest.mark.slow

LIFECYCLE = AssetSelection.groups("ingestion", "cleansing", "features", "training", "validation", "deployment")
MODEL = AssetSelection.groups("training", "validation", "deployment")
SMALL = {"epochs": 1, "batch_size": 64, "hidden": [8], "embedding_dim": 2, "patience": 1, "baseline_max_rows": 500}
LENIENT = {"absolute": {}, "off": ["beats_baseline", "latency", "vs_champion", "slices_vs_champion"]}
BLOCKING = {"absolute": {"roc_auc": 0.9999}, "off": ["beats_baseline", "latency"]}
CAND, EVAL = "trips__candidate", "trips__evaluation"
SPEC = {**copy.deepcopy(TINY), "split": {"kind": "relative", "valid_days": 6, "test_days": 6}}


def _run(world, selection, train: dict, gates: dict):
    config = {"ops": {CAND: {"config": {**SMALL, **train}}, EVAL: {"config": gates}}}
    return materialize(
        [*world["defs"].assets, *world["defs"].asset_checks], resources=world["defs"].resources, instance=world["instance"],
        selection=selection, run_config=config, raise_on_error=False,
    )  # fmt: skip


def _meta(result, node: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def _folders(home: Path, area: str) -> set[str]:
    folder = home / "artifacts" / "trips" / area
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three runs: train (v1), the same again (skipped), forced with blocking gates (trained, not registered)."""
    saved = os.environ.get("AIFLOW_CODE_VERSION")
    os.environ["AIFLOW_CODE_VERSION"] = "test-sha-1"  # a clean, known code version (the work tree may be dirty)
    try:
        root = tmp_path_factory.mktemp("skip")
        home = root / "home"
        _landing(home / "landing", dt.date(2013, 1, 1), 30, seed=1)
        spec_path = root / "trips.yaml"
        spec_path.write_text(yaml.safe_dump(SPEC))
        world = {"home": home, "instance": DagsterInstance.ephemeral()}
        world["defs"] = build_definitions(spec_path, resources=local_resources(str(home)))
        world["first"] = _run(world, LIFECYCLE, {}, LENIENT)
        world["bundles_after_first"] = _folders(home, "candidates")
        world["again"] = _run(world, MODEL, {}, LENIENT)
        world["bundles_after_again"] = _folders(home, "candidates")
        world["forced"] = _run(world, MODEL, {"force_retrain": True}, BLOCKING)
        yield world
    finally:
        if saved is None:
            os.environ.pop("AIFLOW_CODE_VERSION", None)
        else:
            os.environ["AIFLOW_CODE_VERSION"] = saved


def test_same_data_code_and_params_hand_on_the_existing_candidate(world):
    first, again = world["first"], world["again"]
    assert first.success and again.success, [str(e.event_specific_data.error) for e in again.all_events if e.is_step_failure]
    trained, skipped = _meta(first, CAND), _meta(again, CAND)
    assert "training_skipped" not in trained
    assert skipped["training_skipped"] is True and "same data version, code and hyperparameters" in skipped["skip_reason"]
    assert skipped["reused_candidate_id"] == trained["candidate_id"] != skipped["candidate_id"]
    assert skipped["artifact_sha256"] == trained["artifact_sha256"]
    assert world["bundles_after_again"] == world["bundles_after_first"]  # nothing new in the artifact store
    logs = [e.user_message for e in world["instance"].all_logs(again.run_id)]
    assert any(m.startswith("training skipped:") for m in logs)
    # evaluation and registration work on the handed-on candidate
    assert _meta(again, EVAL)["candidate_id"] == skipped["candidate_id"]
    handed = Handoffs(Lake(world["home"] / "lake")).candidate(skipped["candidate_id"])
    assert handed.source == f"reused:{trained['candidate_id']}" and handed.artifact_uri.endswith(next(iter(world["bundles_after_first"])))


def test_force_other_params_or_unknown_code_retrain_and_say_why(world):
    forced = world["forced"]
    assert "training_skipped" not in _meta(forced, CAND)
    assert "retraining: forced (force_retrain)" in [e.user_message for e in world["instance"].all_logs(forced.run_id)]
    assert len(_folders(world["home"], "candidates")) == len(world["bundles_after_first"]) + 1
    lake, spec = Lake(world["home"] / "lake"), parse_spec(SPEC)
    request = pinned_request(lake, spec, TrainParams(**SMALL), str(world["home"] / "artifacts"), "probe", "test", code_version="test-sha-1")
    assert reusable_candidate(lake, request).candidate is not None
    other = request.model_copy(update={"params": TrainParams(**{**SMALL, "epochs": 2})})
    assert "hyperparameters differ" in reusable_candidate(lake, other).reason
    for code in ("test-sha-1-dirty", None, "test-sha-2"):
        reuse = reusable_candidate(lake, request.model_copy(update={"code_version": code}))
        assert reuse.candidate is None and reuse.reason


def test_cleanup_removes_only_what_no_registered_version_needs_after_the_retention(world):
    home = world["home"]
    lake, store = Lake(home / "lake"), ArtifactStore(home / "artifacts")
    v1 = Registry(lake).get("trips", 1)
    assert Registry(lake).versions("trips").height == 1  # the forced run was blocked: its bundle is unregistered
    young = clean_artifacts(lake, store, "trips", retention=dt.timedelta(days=1))
    assert young.removed == 0 and young.kept_recent > 0
    dry = clean_artifacts(lake, store, "trips", retention=dt.timedelta(0), dry_run=True)
    assert len(dry.bundles) == 1 and dry.checkpoints and len(dry.plots) == 1
    assert len(_folders(home, "candidates")) == 2  # a dry run removes nothing
    result = world["defs"].resolve_job_def("trips_maintenance_job").execute_in_process(
        run_config={"ops": {"trips_clean_artifacts": {"config": {"retention_hours": 0}}}}, instance=world["instance"]
    )
    assert result.success
    assert _folders(home, "candidates") == {Path(v1.artifact_uri).name} and _folders(home, "checkpoints") == set()
    evaluations = {e.evaluation_id: e for e in Handoffs(lake).evaluations("trips")}
    kept = {Path(evaluations[_meta(world[run], EVAL)["evaluation_id"]].plot_uri).name for run in ("first", "again")}
    assert _folders(home, "evaluations") == kept  # the plots of registered evaluations; the forced run's is gone
    assert ArtifactStore(v1.location(str(home / "artifacts"))).exists("manifest.json")
