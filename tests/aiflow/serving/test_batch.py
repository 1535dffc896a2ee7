"""Batch scoring: the first run scores every feature date, later runs only the dates rewritten since (or all with
rescore_all); every row names its model version; classification thresholds the score, regression keeps the value."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from aiflow.data.encoding import FeatureState, model_inputs
from aiflow.data.ingest import ingest
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.models.bundle import LoadedModel, load_bundle, save_bundle
from aiflow.models.network import ModelConfig, TabularModel
from aiflow.serving.batch import PREDICTION, SCORE, prediction_frame, score_new_partitions
from aiflow.spec import EVENT_DATE, DatasetSpec, parse_spec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.tiny import TINY

DAYS = [dt.date(2013, 1, 1) + dt.timedelta(days=d) for d in range(4)]


def tiny(problem_type: str = "classification") -> DatasetSpec:
    data = copy.deepcopy(TINY)
    data["split"] = {"valid_from": DAYS[2].isoformat(), "test_from": DAYS[3].isoformat()}
    if problem_type == "regression":
        data["problem_type"] = "regression"
        data["target"] = {"name": "delay_minutes", "source": "delay", "kind": "identity", "when_null": "quarantine"}
    return parse_spec(data, f"tiny {problem_type}")


def trips(day: dt.date, first_id: int, n: int = 12, distance: float = 300.0) -> list[str]:
    """CSV lines of ``n`` trips on ``day`` (UTC), ids from ``first_id``."""
    carriers, origins = ["AA", "UA", "DL"], ["JFK", "EWR", "LGA"]
    return [
        f"{first_id + i},{carriers[i % 3]},{origins[i % 3]},{distance + 37 * i},{100 + i},yes,2012-12-01,{(i * 7) % 40},"
        f"{day.isoformat()}T{6 + i:02d}:00:00Z"
        for i in range(n)
    ]


def land(landing: Path, name: str, lines: list[str]) -> None:
    header = "trip_id,carrier,origin,distance,seats,refundable,booked,delay,ts"
    (landing / "trips").mkdir(parents=True, exist_ok=True)
    (landing / "trips" / name).write_text("\n".join([header, *lines]) + "\n")


def refresh(lake: Lake, landing: Path, spec: DatasetSpec) -> None:
    """Ingest what landed and rebuild the stages incrementally (the data plane)."""
    weather = landing / "weather" / "weather.csv"
    if not weather.exists():  # hourly weather at the three airports over every day
        weather.parent.mkdir(parents=True, exist_ok=True)
        start = dt.datetime(2013, 1, 1, tzinfo=dt.UTC)
        lines = [f"{o},{5 + h % 9}.5,{(start + dt.timedelta(hours=h)).isoformat()}" for h in range(24 * len(DAYS)) for o in ("JFK", "EWR", "LGA")]
        weather.write_text("\n".join(["origin,temp,ts", *lines]) + "\n")
    for table in spec.tables:
        ingest(lake, LocalLandingZone(landing / table.name), table)
    for table in spec.tables:
        refresh_silver(lake, table)
    refresh_features(lake, spec)


def bundle(lake: Lake, spec: DatasetSpec, artifacts: Path, *, target_mean: float = 0.0, target_std: float = 1.0) -> LoadedModel:
    """A real bundle (saved, verified, loaded) sized from the lake's feature state; its weights are seeded, not trained."""
    state = FeatureState.from_frame(lake.scan(Tables.feature_state(spec.name)).collect())
    inputs = model_inputs(spec, state)
    config = ModelConfig(spec.problem_type, inputs.categorical, inputs.cardinalities, inputs.numeric, hidden=[8], embedding_dim=3,
                         dropout=0.0, target=spec.target.name, target_mean=target_mean, target_std=target_std)  # fmt: skip
    torch.manual_seed(0)
    store = ArtifactStore(artifacts)
    uri, sha = save_bundle(store, f"{spec.name}/bundle", model=TabularModel(config), config=config, params={}, state=state,
                           spec=spec, spec_dict=spec.model_dump(mode="json"), lineage={})  # fmt: skip
    return load_bundle(store, uri, sha)


def predictions(lake: Lake, spec: DatasetSpec) -> pl.DataFrame:
    return lake.scan(Tables.predictions(spec.name)).collect().sort("trip_id")


@pytest.fixture
def world(tmp_path):
    """A tiny lake with features for the first three days and a model for it."""
    spec, landing, lake = tiny(), tmp_path / "landing", Lake(tmp_path / "lake")
    for i, day in enumerate(DAYS[:3]):
        land(landing, f"{day}.csv", trips(day, 100 * (i + 1)))
    refresh(lake, landing, spec)
    return spec, landing, lake, bundle(lake, spec, tmp_path / "artifacts")


def test_first_run_scores_every_feature_date_with_the_model_that_made_it(world):
    spec, _, lake, model = world
    report = score_new_partitions(lake, spec, model, "trips", 1)
    features = lake.scan(Tables.features(spec.name)).collect().sort("trip_id")
    assert report.full_refresh and report.dates == DAYS[:3]
    assert report.rows_in == report.rows_out == features.height == 36
    assert report.upstream == {Tables.features(spec.name): lake.version(Tables.features(spec.name))}
    assert report.version == lake.version(Tables.predictions(spec.name))
    out = predictions(lake, spec)
    assert out["trip_id"].to_list() == features["trip_id"].to_list()
    assert out["model_name"].unique().to_list() == ["trips"] and out["model_version"].unique().to_list() == [1]
    np.testing.assert_array_equal(out[SCORE].to_numpy(), model.predict(features))  # the model's own scores
    assert out[PREDICTION].to_list() == (out[SCORE] >= 0.5).cast(pl.Int8).to_list()
    assert out[EVENT_DATE].to_list() == features[EVENT_DATE].to_list()


def test_next_run_scores_only_the_dates_rewritten_since(world):
    spec, landing, lake, model = world
    score_new_partitions(lake, spec, model, "trips", 1)
    first = predictions(lake, spec)

    land(landing, "correction.csv", trips(DAYS[1], 200, n=2, distance=2500.0))  # two trips of day 2 re-landed
    land(landing, f"{DAYS[3]}.csv", trips(DAYS[3], 400))  # a new day
    refresh(lake, landing, spec)
    report = score_new_partitions(lake, spec, model, "trips", 2)
    assert not report.full_refresh and report.dates == [DAYS[1], DAYS[3]]
    assert report.rows_out == 12 + 12

    out = predictions(lake, spec)
    assert out.height == 48
    by_date = {d: part for (d,), part in out.group_by(EVENT_DATE)}
    assert by_date[DAYS[1]]["model_version"].unique().to_list() == [2] and by_date[DAYS[3]]["model_version"].unique().to_list() == [2]
    untouched = pl.concat([by_date[DAYS[0]], by_date[DAYS[2]]]).sort("trip_id")
    assert untouched["model_version"].unique().to_list() == [1]
    assert untouched.equals(first.filter(pl.col(EVENT_DATE).is_in([DAYS[0], DAYS[2]])))  # not rewritten: same rows, same scored_at
    features = lake.scan(Tables.features(spec.name)).filter(pl.col(EVENT_DATE) == DAYS[1]).collect().sort("trip_id")
    np.testing.assert_array_equal(by_date[DAYS[1]].sort("trip_id")[SCORE].to_numpy(), model.predict(features))  # the corrected rows

    version = lake.version(Tables.predictions(spec.name))
    idle = score_new_partitions(lake, spec, model, "trips", 2)  # nothing rewritten since: nothing scored, no commit
    assert idle.dates == [] and idle.rows_out == 0 and idle.version is None and not idle.full_refresh
    assert lake.version(Tables.predictions(spec.name)) == version


def test_rescore_all_scores_every_date_again(world):
    spec, _, lake, model = world
    score_new_partitions(lake, spec, model, "trips", 1)
    report = score_new_partitions(lake, spec, model, "trips", 3, rescore_all=True)
    assert report.full_refresh and report.dates == DAYS[:3] and report.rows_out == 36
    out = predictions(lake, spec)
    assert out.height == 36 and out["model_version"].unique().to_list() == [3]  # replaced, not appended


def test_scoring_without_features_is_an_error(tmp_path):
    spec = tiny()
    with pytest.raises(RuntimeError, match="no features table"):
        score_new_partitions(Lake(tmp_path / "lake"), spec, None, "trips", 1)


def test_classification_decides_by_the_threshold_and_regression_keeps_the_value():
    rows = pl.DataFrame({"trip_id": [1, 2, 3], "ts": [dt.datetime(2013, 1, 1, h, tzinfo=dt.UTC) for h in (1, 2, 3)],
                         EVENT_DATE: [dt.date(2013, 1, 1)] * 3})  # fmt: skip
    scores = np.array([0.2, 0.5, 0.7])
    default = prediction_frame(rows, scores, tiny(), "trips", 4)
    assert default[PREDICTION].to_list() == [0, 1, 1] and default.schema[PREDICTION] == pl.Int8  # at the threshold: positive
    assert prediction_frame(rows, scores, tiny(), "trips", 4, threshold=0.6)[PREDICTION].to_list() == [0, 0, 1]
    regression = prediction_frame(rows, np.array([-3.5, 0.2, 41.0]), tiny("regression"), "trips", 4)
    assert regression[PREDICTION].to_list() == [-3.5, 0.2, 41.0] == regression[SCORE].to_list()
    assert regression.schema[PREDICTION] == pl.Float64
    assert default.columns == ["trip_id", "ts", EVENT_DATE, SCORE, PREDICTION, "model_name", "model_version", "scored_at"]
    assert default["model_version"].to_list() == [4, 4, 4]


def test_regression_model_scores_values_in_the_target_units(tmp_path):
    spec, landing, lake = tiny("regression"), tmp_path / "landing", Lake(tmp_path / "lake")
    for i, day in enumerate(DAYS[:3]):
        land(landing, f"{day}.csv", trips(day, 100 * (i + 1)))
    refresh(lake, landing, spec)
    model = bundle(lake, spec, tmp_path / "artifacts", target_mean=20.0, target_std=10.0)
    report = score_new_partitions(lake, spec, model, "trips", 7)
    out = predictions(lake, spec)
    assert report.rows_out == out.height == 36
    assert out[PREDICTION].to_list() == out[SCORE].to_list()
    assert not set(out[PREDICTION].to_list()) <= {0.0, 1.0}  # values, not decisions
    assert 0.0 < out[SCORE].mean() < 40.0  # de-standardised around the target mean (20), not around 0
    features = lake.scan(Tables.features(spec.name)).collect().sort("trip_id")
    np.testing.assert_array_equal(out[SCORE].to_numpy(), model.predict(features))
