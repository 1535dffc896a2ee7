"""Scope: model families through Dagster on a dataset that is not the demo (the tiny spec renamed, Tokyo time, a signal
trees find at once): both families train in the candidate step, scikit-learn wins and is the registered version's family,
batch predictions are its own scores and are made without unpickling anything, `aiflow models list` shows the family."""

from __future__ import annotations

import copy
import datetime as dt
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from dagster import AssetKey, AssetSelection, DagsterInstance, materialize

from aiflow.evaluation.validation import ModelRef, load_model
from aiflow.models.registry import Registry
from aiflow.storage.lake import Lake, Tables
from definitions import build_definitions
from resources.profiles import local_resources
from tests.aiflow.tiny import TINY

pytestmark = pytest.mark.slow

NAME = "rides"
DAYS = [dt.date(2014, 3, 1) + dt.timedelta(days=d) for d in range(10)]
ROWS_PER_DAY = 240
LIFECYCLE = AssetSelection.groups("ingestion", "cleansing", "features", "training", "validation", "deployment")
#: Both families; a network that cannot learn an interaction in one slow epoch against trees that find it at once.
WEAK_NET = {"epochs": 1, "batch_size": 512, "hidden": [4], "embedding_dim": 2, "learning_rate": 1e-4, "baseline_max_rows": 3000}
GATES = {"absolute": {"roc_auc": 0.8}, "must_beat_baseline": True, "latency_budget_ms_per_1k": 2000.0}
KEY = ["trip_id"]


def spec_dict() -> dict:
    """The tiny spec as another dataset: its own name and side table, Tokyo time, a split inside the ten days."""
    data = copy.deepcopy(TINY)
    side = f"{NAME}_weather"
    data.update(name=NAME, timezone="Asia/Tokyo", landing={"uri": f"landing/{NAME}", "null_values": ["NA", ""]})
    data["side_tables"][0] |= {"name": side, "landing": {"uri": f"landing/{side}"}}
    data["joins"][0]["table"] = side
    data["split"] = {"valid_from": DAYS[6].isoformat(), "test_from": DAYS[8].isoformat()}
    return data


def write_rides(landing: Path) -> None:
    """Ten daily files whose label is an interaction (a carrier group XOR a long distance), 5 % of labels flipped."""
    rng = np.random.default_rng(3)
    carriers, origins = ["AA", "UA", "DL", "B6"], ["JFK", "EWR", "LGA"]
    header = "trip_id,carrier,origin,distance,seats,refundable,booked,delay,ts"
    for d, day in enumerate(DAYS):
        lines = []
        for i in range(ROWS_PER_DAY):
            carrier, distance = carriers[rng.integers(4)], float(rng.uniform(100, 3000))
            late = (carrier in ("UA", "DL")) != (distance > 1500)
            late = late != (rng.random() < 0.05)
            at = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(minutes=int(rng.integers(0, 1440)))
            lines.append(
                f"{d * ROWS_PER_DAY + i},{carrier},{origins[i % 3]},{distance:.1f},{rng.integers(50, 300)},yes,2014-01-01,"
                f"{40.0 if late else 0.0},{at.isoformat().replace('+00:00', 'Z')}"
            )
        (landing / NAME).mkdir(parents=True, exist_ok=True)
        (landing / NAME / f"{day}.csv").write_text("\n".join([header, *lines]) + "\n")
    start = dt.datetime.combine(DAYS[0], dt.time(), dt.UTC)
    weather = [f"{o},{5 + h % 9}.5,{(start + dt.timedelta(hours=h)).isoformat()}" for h in range(24 * len(DAYS)) for o in origins]
    (landing / f"{NAME}_weather").mkdir(parents=True, exist_ok=True)
    (landing / f"{NAME}_weather" / "weather.csv").write_text("\n".join(["origin,temp,ts", *weather]) + "\n")


def _config(**predictions) -> dict:
    return {
        "ops": {
            f"{NAME}__candidate": {"config": WEAK_NET},
            f"{NAME}__evaluation": {"config": GATES},
            f"{NAME}__champion": {"config": {"policy": "direct", "reason": "test promotion"}},
            f"{NAME}__predictions": {"config": predictions},
        }
    }


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    """The whole lifecycle once on the rides home: (home, definitions, instance, result)."""
    root = tmp_path_factory.mktemp("families")
    home = root / "home"
    write_rides(home / "landing")
    spec_path = root / f"{NAME}.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict()))
    defs = build_definitions(spec_path, resources=local_resources(str(home)))
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [*defs.assets, *defs.asset_checks], resources=defs.resources, instance=instance, selection=LIFECYCLE,
        run_config=_config(), raise_on_error=False,
    )  # fmt: skip
    assert result.success, [str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure]
    return home, defs, instance, result


def _meta(result, node: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def test_both_families_train_and_the_better_one_is_registered(lifecycle):
    home, _, _, result = lifecycle
    candidate = _meta(result, f"{NAME}__candidate")
    trees, net, naive = candidate["sklearn_valid_roc_auc"], candidate["pytorch_valid_roc_auc"], candidate["naive_roc_auc"]
    assert trees > 0.9 and trees > net + 0.1 and naive == pytest.approx(0.5)  # the base rate ranks nothing
    assert candidate["family"] == "sklearn" and candidate["valid_roc_auc"] == pytest.approx(trees)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations() if c.asset_key == AssetKey([NAME, "evaluation"])}
    assert checks["beats_baseline"].passed and checks["absolute_minimums"].passed

    registry = Registry(Lake(home / "lake"))
    v1 = registry.get(NAME, 1)
    assert v1.family == "sklearn" and registry.alias(NAME, "champion") == 1
    assert v1.family_metrics["pytorch"]["roc_auc"] == pytest.approx(net, abs=1e-6)
    assert v1.family_metrics["sklearn"]["roc_auc"] == pytest.approx(trees, abs=1e-6)
    assert v1.artifact_sha256 == candidate["artifact_sha256"] and not v1.artifact_uri.startswith("/")
    assert {"model.skops", "manifest.json"} <= set(v1.bundle_files) and "weights.pt" not in v1.bundle_files
    assert _meta(result, f"{NAME}__registered_model")["family"] == "sklearn"


def test_predictions_are_scored_by_the_sklearn_champion_without_unpickling(lifecycle, monkeypatch):
    home, defs, instance, _ = lifecycle
    lake = Lake(home / "lake")

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was loaded")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    rescored = materialize(
        [*defs.assets, *defs.asset_checks], resources=defs.resources, instance=instance,
        selection=AssetSelection.assets(AssetKey([NAME, "predictions"])), run_config={"ops": {f"{NAME}__predictions": {"config": {"rescore_all": True}}}},
        raise_on_error=False,
    )  # fmt: skip
    assert rescored.success, [str(e.event_specific_data.error) for e in rescored.all_events if e.is_step_failure]
    assert _meta(rescored, f"{NAME}__predictions")["model_version"] == 1

    predictions = lake.scan(Tables.predictions(NAME)).collect()
    features = lake.scan(Tables.features(NAME)).collect()
    assert predictions.height == features.height == len(DAYS) * ROWS_PER_DAY and set(predictions["model_version"]) == {1}
    joined = features.join(predictions.select(*KEY, "score"), on=KEY)
    model = load_model(ModelRef.of(Registry(lake).get(NAME, 1), str(home / "artifacts")))
    assert model.family == "sklearn"
    np.testing.assert_allclose(joined["score"].to_numpy(), model.predict(joined), rtol=1e-9)
    # the scores rank the planted interaction (a constant or a network's near-random scores would not)
    late = joined.filter(pl.col("late") == 1)["score"].mean()
    on_time = joined.filter(pl.col("late") == 0)["score"].mean()
    assert late - on_time > 0.5


def test_models_list_shows_the_family(lifecycle):
    home = lifecycle[0]
    aiflow = str(Path(sys.executable).with_name("aiflow"))
    listed = subprocess.run([aiflow, "--home", str(home), "models", "list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    header = [c.strip() for c in listed.stdout.splitlines()[1].strip().strip("│").split("┆")]
    [row] = [[c.strip() for c in line.strip().strip("│").split("┆")] for line in listed.stdout.splitlines() if f"{NAME} " in line]
    assert dict(zip(header, row, strict=True))["family"] == "sklearn" and row[:2] == [NAME, "1"]


def test_a_concept_that_comes_back_reinstates_the_earlier_champion_through_dagster(lifecycle):
    """Runs last (it changes the champion). v1 (trees, the concept that holds) served; then v2, a model of another
    concept (the same rows with their labels shuffled), became the champion. A retrain under the spec's shadow promotion
    that is weaker than v1 (a one-epoch network) is registered, and v1 — scored on the retrain's held-out rows as an
    earlier champion, decisive and surer than the retrain — serves again."""
    from aiflow.train.contract import TrainParams
    from aiflow.train.loop import train
    from aiflow.train.request import pinned_request

    home, defs, instance, _ = lifecycle
    lake = Lake(home / "lake")
    registry = Registry(lake)
    v1 = registry.get(NAME, 1)
    from aiflow.spec import parse_spec

    request = pinned_request(lake, parse_spec(spec_dict(), NAME), TrainParams(**{**WEAK_NET, "families": ["sklearn"]}), str(home / "artifacts"), "other", "test")
    rows = lake.scan(Tables.features(NAME), request.data_version).collect()
    shuffled = f"features/{NAME}_other_concept"
    lake.overwrite(shuffled, rows.with_columns(pl.Series("late", np.random.default_rng(5).permutation(rows["late"].to_numpy()))),
                   metadata={"state_version": str(request.state_version)})  # fmt: skip
    other = train(request.model_copy(update={"features_uri": lake.uri(shuffled), "data_version": lake.version(shuffled)}), log=lambda _: None)
    v2 = registry.register(
        NAME, artifact_uri=other.artifact_uri, artifact_sha256=other.artifact_sha256, training_table=v1.training_table,
        training_version=v1.training_version, metrics=other.metrics, baseline_metrics=other.naive_metrics, params={}, gate_results={},
        gates_passed=True, reason="another concept", artifact_root=str(home / "artifacts"), bundle_files=other.bundle_files,
        family=other.family,
    )  # fmt: skip
    registry.promote(NAME, v2.version, reason="the world changed", actor="test")

    retrain = materialize(
        [*defs.assets, *defs.asset_checks], resources=defs.resources, instance=instance,
        selection=AssetSelection.groups("training", "validation", "deployment") - AssetSelection.assets(AssetKey([NAME, "predictions"])),
        run_config={"ops": {
            f"{NAME}__candidate": {"config": {**WEAK_NET, "families": ["pytorch"]}},
            f"{NAME}__evaluation": {"config": {"absolute": {"roc_auc": 0.5}, "must_beat_baseline": False, "latency_budget_ms_per_1k": 2000.0}},
            f"{NAME}__champion": {"config": {"policy": "spec", "reason": "retrain"}},
        }},
        raise_on_error=False, tags={"aiflow/window": "2024-05-06"},  # as the retrain sensor tags the window that asked
    )  # fmt: skip
    assert retrain.success, [str(e.event_specific_data.error) for e in retrain.all_events if e.is_step_failure]
    evaluation = _meta(retrain, f"{NAME}__evaluation")
    assert evaluation["champion_version"] == v2.version
    assert evaluation["test_v1_gain_vs_champion_low"] > evaluation["test_gain_vs_champion_low"] > -1, evaluation
    promoted = _meta(retrain, f"{NAME}__champion")
    v3 = promoted["registered_version"]
    assert (promoted["promoted_version"], promoted["reinstated"], v3) == (1, True, v2.version + 1), promoted
    assert "earlier champion v1 reinstated" in promoted["reason"]
    from aiflow.monitoring import history

    # the window that asked for the retrain shows what it ended in
    ended = history.read_outcomes(lake, NAME).row(-1, named=True)
    assert (ended["window_start"].isoformat(), ended["outcome"], ended["registered_version"], ended["served_version"]) == ("2024-05-06", "reinstated", v3, 1)
    assert ended["run_id"] == retrain.run_id and "earlier champion v1 reinstated" in ended["outcome_reason"]
    # and on that window's page of the decisions asset in the UI
    from dagster import AssetRecordsFilter

    seen = instance.fetch_observations(AssetRecordsFilter(asset_key=AssetKey([NAME, "decisions"]), asset_partitions=["2024-05-06"]), limit=1)
    observed = seen.records[0].asset_observation
    assert observed.metadata["retrain_outcome"].value == "reinstated" and observed.metadata["served_version"].value == 1
    assert observed.metadata["retrain_version"].value == v3 and "earlier champion v1 reinstated" in observed.description
    assert registry.alias(NAME, "champion") == 1 and registry.alias(NAME, "challenger") is None
    assert v3 not in registry.aliases(NAME).values() and registry.get(NAME, v3).family == "pytorch"
