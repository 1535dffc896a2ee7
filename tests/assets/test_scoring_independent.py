"""Scope: batch scoring does not depend on the gates — through real Dagster lifecycle runs on the tiny spec (relative
split, New York time zone): a first run promotes v1 ("champion: none -> v1") and scores; after new days land, a blocked
candidate leaves v1 the champion and the same lifecycle run still scores the new partitions with v1."""

from __future__ import annotations

import copy
import datetime as dt

import polars as pl
import pytest
import yaml
from dagster import AssetKey, AssetSelection, DagsterInstance, materialize

from aiflow.models.registry import Registry
from aiflow.storage.lake import Lake, Tables
from definitions import build_definitions
from resources.profiles import local_resources
from tests.aiflow.data.test_split import _landing
from tests.aiflow.tiny import TINY

pytestmark = pytest.mark.slow

LIFECYCLE = AssetSelection.groups("ingestion", "cleansing", "features", "training", "validation", "deployment")
SMALL = {"epochs": 1, "batch_size": 64, "hidden": [8], "embedding_dim": 2, "patience": 1, "baseline_max_rows": 500}
LENIENT = {"absolute": {}, "off": ["beats_baseline", "latency", "vs_champion", "slices_vs_champion"]}
BLOCKING = {"absolute": {"roc_auc": 0.9999}, "off": ["beats_baseline", "latency"]}
PRED, CAND, EVAL = "trips__predictions", "trips__candidate", "trips__evaluation"


def _run(defs, instance, gates: dict):
    config = {"ops": {CAND: {"config": SMALL}, EVAL: {"config": gates}}}
    return materialize(
        [*defs.assets, *defs.asset_checks], resources=defs.resources, instance=instance,
        selection=LIFECYCLE, run_config=config, raise_on_error=False,
    )  # fmt: skip


def _messages(instance, result) -> list[str]:
    return [e.user_message for e in instance.all_logs(result.run_id)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    home = root / "home"
    _landing(home / "landing", dt.date(2013, 1, 1), 30, seed=1)
    spec_path = root / "trips.yaml"
    spec_path.write_text(yaml.safe_dump({**copy.deepcopy(TINY), "split": {"kind": "relative", "valid_days": 6, "test_days": 6}}))
    defs, instance = build_definitions(spec_path, resources=local_resources(str(home))), DagsterInstance.ephemeral()
    first = _run(defs, instance, LENIENT)
    scored_first = Lake(home / "lake").scan(Tables.predictions("trips")).collect()
    _landing(home / "landing", dt.date(2013, 1, 31), 5, seed=2)  # five new days land
    blocked = _run(defs, instance, BLOCKING)
    return dict(home=home, instance=instance, first=first, blocked=blocked, scored_first=scored_first)


def test_the_first_run_promotes_and_scores_and_says_none_to_v1(runs):
    first = runs["first"]
    assert first.success, [str(e.event_specific_data.error) for e in first.all_events if e.is_step_failure]
    assert "trips champion: none -> v1" in _messages(runs["instance"], first)
    assert not any("vNone" in m for m in _messages(runs["instance"], first))
    scored = runs["scored_first"]
    assert scored.height == 30 * 40 and set(scored["model_version"]) == {1}


def test_a_blocked_candidate_leaves_the_champion_scoring_new_partitions_in_the_same_run(runs):
    blocked, registry, lake = runs["blocked"], Registry(Lake(runs["home"] / "lake")), Lake(runs["home"] / "lake")
    assert not blocked.success  # the gate blocked the candidate...
    failed = [c.check_name for c in blocked.get_asset_check_evaluations() if not c.passed]
    # the blocking minimums fail whatever the model; how it compares with the champion depends on the model trained
    assert "absolute_minimums" in failed and set(failed) <= {"absolute_minimums", "no_regression_vs_champion"}
    materialized = {e.asset_key for e in blocked.get_asset_materialization_events()}
    assert AssetKey(["trips", "registered_model"]) not in materialized and AssetKey(["trips", "champion"]) not in materialized
    assert registry.alias("trips", "champion") == 1 and registry.versions("trips").height == 1
    # ...and the same run still scored the new days, with the champion that stays
    assert AssetKey(["trips", "predictions"]) in materialized
    meta = blocked.asset_materializations_for_node(PRED)[0].metadata
    assert meta["model_version"].value == 1 and meta["dates_scored"].value == 5
    predictions = lake.scan(Tables.predictions("trips")).collect()
    new = predictions.filter(pl.col("event_date") >= dt.date(2013, 1, 31))
    assert new.height == 5 * 40 and set(new["model_version"]) == {1}
    assert predictions.height == lake.scan(Tables.features("trips")).collect().height
