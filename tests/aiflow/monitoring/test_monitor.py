"""The monitoring pass and the retrain decisions on a real world (lake, trained champion with its reference, an
inference log and labels as the server writes them): a shifted window drifts and a same-distribution one does not,
windows are monitored once and only when complete, history lands in Delta, live performance matches a hand
computation, thresholds are calibrated once per version, decisions are recorded once per window and replay the same.
Classification and regression ("rides": other column names, Asia/Tokyo)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from aiflow.evaluation.metrics import compute_metrics
from aiflow.monitoring import history
from aiflow.monitoring.monitor import References, online_pass, performance_pass
from aiflow.monitoring.retrain import evaluate_pending
from aiflow.monitoring.windows import scored_log
from aiflow.storage.artifacts import ArtifactStore
from tests.aiflow.monitoring.world import SERVED, World, build_world, rides_spec, serve_week

DRIFT_ONLY = {"retrain": {"signals": ["drift"], "hysteresis": 1, "min_rows": 300, "cooldown_days": 0}}


@pytest.fixture(scope="module")
def built_classification(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("world-classification"), rides_spec("classification", **DRIFT_ONLY))


@pytest.fixture(scope="module")
def built_regression(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("world-regression"), rides_spec("regression", **DRIFT_ONLY))


@pytest.fixture
def world(request, tmp_path) -> World:
    """A private copy of the classification world, or of the one named by ``indirect`` parametrization."""
    built: World = request.getfixturevalue(f"built_{getattr(request, 'param', 'classification')}")
    shutil.copytree(built.home, tmp_path / "home")
    return World(tmp_path / "home", built.spec, built.version)


BOTH = pytest.mark.parametrize("world", ["classification", "regression"], indirect=True)


def refs(world: World) -> References:
    return References(world.lake, world.spec.name, str(world.artifacts))


@BOTH
def test_a_shifted_window_drifts_and_a_same_distribution_window_does_not(world: World):
    serve_week(world, 0, shifted=False)
    serve_week(world, 1, shifted=True)
    serve_week(world, 2, shifted=False)  # makes week 1 complete; itself incomplete
    reports = ArtifactStore(world.lake.root)
    result = online_pass(world.lake, world.spec, refs(world), report_store=reports)
    assert [w.window_start for w in result.windows] == [SERVED, SERVED + dt.timedelta(days=7)]
    same, shifted = result.windows
    assert same.share <= 0.25, same.columns
    assert shifted.share >= 0.4, shifted.columns  # 3 of the 7 inputs move: carrier, distance, temperature
    drifted = set(shifted.columns.filter(pl.col("drifted"))["column"])
    assert {"num_distance", "num_rides_weather_temp", "cat_carrier", "prediction"} <= drifted
    assert "label" in set(shifted.columns["column"])  # labels came back: label drift is judged too
    assert shifted.weighted_share > same.weighted_share
    # the newest window's Evidently report is under the lake root and names the columns
    assert shifted.report_uri and same.report_uri is None
    html = (world.home / "lake" / "monitoring" / world.spec.name / "reports").glob("*.html")
    assert "num_distance" in next(html).read_text()
    # history in Delta: one row per (window, column), readable by any reader
    table = pl.read_delta(world.lake.uri(history.drift_table(world.spec.name)))
    assert table.group_by("window_start").len().sort("window_start")["len"].to_list() == [len(same.columns), len(shifted.columns)]
    assert set(table["model_version"]) == {world.version} and set(table["method"]) - {None}
    # thresholds calibrated on the reference, once per version
    saved = history.read_thresholds(world.lake, world.spec.name, world.version)
    assert saved["source"] == "calibrated" and saved["chunks"] == 8 and 0 < saved["drift_share"] < 1


def test_windows_are_monitored_once_and_only_when_complete(world: World):
    serve_week(world, 0, shifted=False)
    first = online_pass(world.lake, world.spec, refs(world))
    assert first.windows == [] and "no new complete window" in first.skipped[0]
    serve_week(world, 1, shifted=False)
    assert [w.window_start for w in online_pass(world.lake, world.spec, refs(world)).windows] == [SERVED]
    again = online_pass(world.lake, world.spec, refs(world))
    assert again.windows == []
    assert pl.read_delta(world.lake.uri(history.drift_table(world.spec.name)))["window_start"].unique().to_list() == [SERVED]


@BOTH
def test_live_performance_equals_a_hand_computation(world: World):
    serve_week(world, 0, shifted=False)
    serve_week(world, 1, shifted=True, labels=False)  # no label back yet for the second week
    frame, daily = performance_pass(world.lake, world.spec, refs(world))
    assert daily["event_date"].n_unique() == 14 and daily["rows"].sum() == frame["rows"].sum()
    assert frame["window_start"].to_list() == [SERVED, SERVED + dt.timedelta(days=7)]
    first, second = frame.row(0, named=True), frame.row(1, named=True)
    assert (first["rows"], first["labelled"], second["labelled"]) == (7 * 150, 7 * 150, 0)
    log = scored_log(world.lake, world.spec).filter(pl.col("window_start") == SERVED)
    labels = pl.read_delta(world.lake.uri(f"labels/{world.spec.name}"))
    joined = log.join(labels, on="request_id")
    classification = world.spec.problem_type == "classification"
    scores = joined["probability" if classification else "prediction"].to_numpy()
    expected = compute_metrics(joined["label"].to_numpy(), scores, world.spec.problem_type, 0.5)
    metric = "roc_auc" if classification else "rmse"
    assert first[metric] == pytest.approx(expected[metric], rel=1e-9)
    assert second[metric] is None
    if classification:  # before the labels, the estimate (CBPE) is there
        assert 0.5 < second["estimated_roc_auc"] <= 1.0
    else:  # ... and for regression, direct loss estimation: near the realized RMSE where the world did not change
        assert first["estimated_rmse"] == pytest.approx(first["rmse"], rel=0.25) and second["estimated_rmse"] > 0
        assert second["estimated_mae"] > 0
    assert pl.read_delta(world.lake.uri(history.performance_table(world.spec.name))).height == 2


@BOTH
def test_each_window_gets_one_recorded_decision_that_replays_the_same(world: World):
    serve_week(world, 0, shifted=False)
    serve_week(world, 1, shifted=True)
    serve_week(world, 2, shifted=False)
    online_pass(world.lake, world.spec, refs(world))
    performance_pass(world.lake, world.spec, refs(world))
    decisions = evaluate_pending(world.lake, world.spec, running=False, evaluator="test")
    assert [(d.window_start, d.action) for d in decisions] == [(SERVED, "skip"), (SERVED + dt.timedelta(days=7), "retrain")]
    assert decisions[1].run_key == f"rides-retrain-{SERVED + dt.timedelta(days=7)}" and decisions[0].run_key is None
    assert "drift" in decisions[1].reason and decisions[1].fired == ("drift",)
    assert evaluate_pending(world.lake, world.spec, running=False, evaluator="test") == []  # nothing new: nothing decided
    table = history.read_decisions(world.lake, world.spec.name)
    assert table["action"].to_list() == ["skip", "retrain"] and table["evaluator"].to_list() == ["test", "test"]
    assert np.isfinite(table["signal_drift_share"].to_numpy()).all()
    # same data, a fresh decisions table: the same decisions (data time, not the wall clock)
    world.lake.delete(history.decisions_table(world.spec.name), "true")
    replay = evaluate_pending(world.lake, world.spec, running=False, evaluator="test")
    assert [(d.window_start, d.action, d.reason) for d in replay] == [(d.window_start, d.action, d.reason) for d in decisions]


def test_a_running_retrain_and_too_few_rows_are_skips_with_their_reason(world: World):
    serve_week(world, 0, shifted=True, rows_per_day=20)  # 140 rows < min_rows 300
    serve_week(world, 1, shifted=True)
    serve_week(world, 2, shifted=True)
    online_pass(world.lake, world.spec, refs(world))
    decisions = evaluate_pending(world.lake, world.spec, running=True, evaluator="test")
    assert [d.action for d in decisions] == ["skip", "skip"]
    assert "too few rows" in decisions[0].reason and "140" in decisions[0].reason
    assert "running" in decisions[1].reason


def test_batch_scored_partitions_are_compared_with_the_reference_of_the_version_that_scored_them(world: World):
    from aiflow.monitoring.monitor import batch_pass
    from aiflow.serving.batch import score_new_partitions
    from tests.aiflow.monitoring.world import ROWS_PER_DAY, rides, weather
    from tests.aiflow.train.conftest import run_data_plane

    landing = world.home / "landing"
    for d in range(15):  # a same-distribution week, a shifted week, one day of the week after
        day = SERVED + dt.timedelta(days=d)
        rides(day, ROWS_PER_DAY, seed=500 + d, shifted=7 <= d < 14).write_csv(landing / "rides" / f"{day}.csv")
    weather(SERVED - dt.timedelta(days=1), 8).write_csv(landing / "rides_weather" / "same.csv")
    weather(SERVED + dt.timedelta(days=7), 8, shifted=True).write_csv(landing / "rides_weather" / "shifted.csv")
    run_data_plane(world.lake, landing, world.spec)
    score_new_partitions(world.lake, world.spec, world.model(), world.spec.name, world.version)
    result = batch_pass(world.lake, world.spec, refs(world))
    by_start = {w.window_start: w for w in result.windows}
    assert set(by_start) >= {SERVED, SERVED + dt.timedelta(days=7)} and max(by_start) < SERVED + dt.timedelta(days=14)
    same, shifted = by_start[SERVED], by_start[SERVED + dt.timedelta(days=7)]
    assert same.share <= 0.25 < 0.4 <= shifted.share
    assert {"label", "prediction", "num_distance"} <= set(shifted.columns.filter(pl.col("drifted"))["column"])
    assert batch_pass(world.lake, world.spec, refs(world)).windows == []  # each window once
    table = pl.read_delta(world.lake.uri(history.drift_table(world.spec.name)))
    assert set(table["source"]) == {"batch"}


def test_the_cbpe_calibrator_and_the_loss_estimator_are_fitted_on_the_reference_s_valid_rows(built_classification, built_regression):
    """Not the train rows: the model fits those too well, and a calibrator learnt there would trust it too much."""
    from aiflow.models.reference import LABEL, PREDICTION
    from aiflow.monitoring.loss_estimation import LossEstimator
    from aiflow.monitoring.performance import Calibrator

    context = refs(built_classification).get(built_classification.version)
    valid, train = context.reference.valid(), context.reference.train()
    assert valid.height >= 50 and train.height >= 50  # both splits could fit a calibrator: the test tells them apart
    assert context.calibrator == Calibrator.fit(valid[PREDICTION].to_numpy(), valid[LABEL].to_numpy())
    assert context.calibrator != Calibrator.fit(train[PREDICTION].to_numpy(), train[LABEL].to_numpy())
    assert context.calibrator.rows == valid.height and not context.calibrator.identity

    regression = refs(built_regression).get(built_regression.version)
    valid, train = regression.reference.valid(), regression.reference.train()
    columns = regression.reference.columns
    assert regression.calibrator is None and regression.loss_estimator is not None
    assert regression.loss_estimator.estimate(train) == LossEstimator.fit(valid, columns).estimate(train)  # same rows, same seed
    assert regression.loss_estimator.estimate(train) != LossEstimator.fit(train, columns).estimate(train)


def test_an_edited_reference_is_refused_naming_the_file(world: World):
    from aiflow.models.bundle import BundleIntegrityError
    from aiflow.models.registry import Registry

    serve_week(world, 0, shifted=False)
    serve_week(world, 1, shifted=False)
    mv = Registry(world.lake).get(world.spec.name, world.version)
    path = Path(mv.location(str(world.artifacts))) / "reference.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"reference\.parquet"):
        online_pass(world.lake, world.spec, refs(world))
    assert not world.lake.exists(history.drift_table(world.spec.name))  # nothing recorded against a tampered reference


def test_live_performance_is_recomputed_only_where_rows_or_labels_arrived_and_equals_a_full_pass(world: World):
    from aiflow.serving.feedback import record_feedback

    serve_week(world, 0, shifted=False)
    late = serve_week(world, 1, shifted=True, labels=False)
    first, _ = performance_pass(world.lake, world.spec, refs(world))
    assert first["labelled"].to_list() == [7 * 150, 0]
    stamp = first["computed_at"][0]
    # then the second week's labels come in (no margin: in the test nothing else is in flight)
    record_feedback(world.lake, world.spec.name, [(rid, 1.0 if i % 3 == 0 else 0.0) for i, rid in enumerate(late)], known=lambda ids: set(ids))
    second, daily = performance_pass(world.lake, world.spec, refs(world), margin=dt.timedelta(0))
    assert second["labelled"].to_list() == [7 * 150, 7 * 150]
    assert second["computed_at"].to_list()[0] == stamp != second["computed_at"].to_list()[1]  # the first week was not recomputed
    full, full_daily = performance_pass(world.lake, world.spec, refs(world), full=True)
    assert second.drop("computed_at").equals(full.drop("computed_at"))
    assert daily.drop("computed_at").equals(full_daily.drop("computed_at"))
