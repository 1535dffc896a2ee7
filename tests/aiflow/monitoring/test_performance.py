"""Scope: live performance of a served model: the inference log joined to its labels, realized metrics and the
CBPE-estimated ones per group (written-out hand computations on tiny fixtures, classification and regression, days in
two time zones), CBPE against realized metrics on simulated labels, and the isotonic calibrator (fit, JSON round trip)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest

from aiflow.monitoring.performance import (
    Calibrator,
    expected_accuracy,
    expected_roc_auc,
    live_performance,
    scored_with_labels,
)

UTC = dt.UTC
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _log(rows: list[tuple]) -> pl.DataFrame:
    """Inference-log rows (request_id, time, model_version, prediction, probability, status) in the serving schema."""
    return pl.DataFrame(
        [
            {"request_id": r, "time": t, "date": t.date(), "dataset": "trips", "model_version": v, "variant": "champion",
             "input": "{}", "prediction": pred, "probability": prob, "latency_ms": 1.0, "status": s}
            for r, t, v, pred, prob, s in rows
        ],
        schema={"request_id": pl.String, "time": pl.Datetime("us", "UTC"), "date": pl.Date, "dataset": pl.String,
                "model_version": pl.Int64, "variant": pl.String, "input": pl.String, "prediction": pl.Float64,
                "probability": pl.Float64, "latency_ms": pl.Float64, "status": pl.String},
    )  # fmt: skip


def _labels(rows: list[tuple]) -> pl.DataFrame:
    """Labels-table rows (request_id, label, received_at, known) in the feedback schema."""
    return pl.DataFrame(
        [{"request_id": r, "label": y, "received_at": t, "known": k} for r, y, t, k in rows],
        schema={"request_id": pl.String, "label": pl.Float64, "received_at": pl.Datetime("us", "UTC"), "known": pl.Boolean},
    )


def test_scored_with_labels_keeps_ok_rows_and_known_labels_with_their_delay():
    log = _log([
        ("a", T0, 1, 0.0, 0.2, "ok"),
        ("b", T0, 1, 1.0, 0.6, "ok"),
        ("c", T0, 1, 1.0, 0.9, "ok"),
        ("d", T0, 1, 0.0, None, "error"),
    ])  # fmt: skip
    labels = _labels([
        ("a", 0.0, T0 + dt.timedelta(hours=3), True),
        ("b", 1.0, T0 + dt.timedelta(minutes=90), True),
        ("c", 1.0, T0 + dt.timedelta(hours=1), False),  # not a served id: not a label
        ("d", 1.0, T0 + dt.timedelta(hours=1), True),  # the error row is dropped anyway
    ])  # fmt: skip
    out = scored_with_labels(log, labels)
    assert out["request_id"].to_list() == ["a", "b", "c"]
    assert out["label"].to_list() == [0.0, 1.0, None]
    assert out["label_delay_hours"].to_list() == [3.0, 1.5, None]


def test_scored_with_labels_names_the_missing_column():
    with pytest.raises(ValueError, match=r"labels table lacks column\(s\) \['known'\]"):
        scored_with_labels(_log([("a", T0, 1, 0.0, 0.2, "ok")]), _labels([]).drop("known"))


def _classification_fixture(tz: str) -> pl.DataFrame:
    day1, day2 = T0, T0 + dt.timedelta(days=1)
    log = _log([
        ("a", day1, 1, 0.0, 0.2, "ok"), ("b", day1, 1, 1.0, 0.6, "ok"), ("c", day1, 1, 1.0, 0.9, "ok"),
        ("d", day2, 2, 0.0, 0.3, "ok"), ("e", day2, 2, 1.0, 0.8, "ok"),
    ])  # fmt: skip
    labels = _labels([
        ("a", 1.0, day1 + dt.timedelta(hours=1), True),
        ("b", 0.0, day1 + dt.timedelta(hours=2), True),
        ("c", 1.0, day1 + dt.timedelta(hours=6), True),
        ("e", 1.0, day2 + dt.timedelta(hours=4), True),
    ])  # fmt: skip
    scored = scored_with_labels(log, labels)
    return scored.with_columns(day=pl.col("time").dt.convert_time_zone(tz).dt.date())


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Tokyo"])
def test_live_performance_classification_equals_the_hand_computation(tz):
    perf = live_performance(_classification_fixture(tz), "classification")
    assert perf.columns == ["day", "model_version", "rows", "labelled", "label_delay_hours",
                            "roc_auc", "accuracy", "estimated_roc_auc", "estimated_accuracy"]  # fmt: skip
    first, second = perf.row(0, named=True), perf.row(1, named=True)
    assert (first["day"], first["model_version"], first["rows"], first["labelled"]) == (dt.date(2024, 3, 1), 1, 3, 3)
    assert first["label_delay_hours"] == 2.0  # median of 1, 2, 6 hours
    # positives {0.2, 0.9} vs negative {0.6}: one pair of two ranked right
    assert first["roc_auc"] == pytest.approx(0.5)
    # predicted [0, 1, 1] vs labels [1, 0, 1]
    assert first["accuracy"] == pytest.approx(1 / 3)
    # CBPE: mean of 1 - 0.2, 0.6, 0.9
    assert first["estimated_accuracy"] == pytest.approx(2.3 / 3)
    # expected positives 1.7, negatives 1.3; thresholds 0.9, 0.6, 0.2 give (FPR, TPR) = (1/13, 9/17), (5/13, 15/17), (1, 1)
    # area from (0, 0): (1/13)(9/17)/2 + (4/13)(24/17)/2 + (8/13)(32/17)/2 = 361/442
    assert first["estimated_roc_auc"] == pytest.approx(361 / 442)
    assert (second["model_version"], second["rows"], second["labelled"], second["label_delay_hours"]) == (2, 2, 1, 4.0)
    assert second["roc_auc"] is None  # one class only
    assert second["accuracy"] == pytest.approx(1.0)
    assert second["estimated_accuracy"] == pytest.approx((0.7 + 0.8) / 2)
    # positives 1.1, negatives 0.9: (FPR, TPR) = (2/9, 8/11), (1, 1) → (2/9)(8/11)/2 + (7/9)(19/11)/2 = 149/198
    assert second["estimated_roc_auc"] == pytest.approx(149 / 198)


def test_live_performance_uses_the_calibrator_for_the_estimate():
    scored = _classification_fixture("UTC")
    halve = Calibrator(x=(0.0, 1.0), y=(0.0, 0.5))  # calibrated p = raw p / 2
    perf = live_performance(scored, "classification", calibrator=halve).row(0, named=True)
    # predicted classes still come from the raw probabilities [0, 1, 1]; the expectation from [0.1, 0.3, 0.45]
    assert perf["estimated_accuracy"] == pytest.approx((0.9 + 0.3 + 0.45) / 3)
    assert perf["accuracy"] == pytest.approx(1 / 3)  # realized metrics ignore the calibrator


def test_live_performance_regression_by_window_has_no_estimate_without_estimated_losses():
    t = T0
    log = _log([("a", t, 7, 1.0, None, "ok"), ("b", t, 7, 2.0, None, "ok"), ("c", t, 7, 4.0, None, "ok"), ("d", t, 7, 9.0, None, "ok")])
    labels = _labels([("a", 2.0, t, True), ("b", 2.0, t, True), ("c", 1.0, t, True)])
    scored = scored_with_labels(log, labels).with_columns(window=pl.lit("2024-W09"))
    perf = live_performance(scored, "regression", by=("window",)).row(0, named=True)
    assert (perf["rows"], perf["labelled"]) == (4, 3)
    # errors -1, 0, 3
    assert perf["rmse"] == pytest.approx((10 / 3) ** 0.5)
    assert perf["mae"] == pytest.approx(4 / 3)
    assert perf["estimated_rmse"] is None and perf["estimated_mae"] is None


def test_live_performance_of_no_rows_and_bad_arguments():
    empty = _classification_fixture("UTC").head(0)
    assert live_performance(empty, "classification").height == 0
    with pytest.raises(ValueError, match="problem_type"):
        live_performance(empty, "ranking")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['window'\]"):
        live_performance(empty, "classification", by=("window",))


def _simulate(rng: np.random.Generator, n: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities (how sure the model is scales with ``spread``) and labels drawn from them."""
    p = 1 / (1 + np.exp(-spread * rng.normal(0, 2, n)))
    return p, (rng.uniform(size=n) < p).astype(np.float64)


def test_cbpe_matches_realized_metrics_when_calibrated_and_falls_when_confidence_drops():
    from sklearn.metrics import accuracy_score, roc_auc_score

    rng = np.random.default_rng(7)
    p, y = _simulate(rng, 20_000)
    assert expected_roc_auc(p) == pytest.approx(roc_auc_score(y, p), abs=0.01)
    assert expected_accuracy(p, (p >= 0.5).astype(int)) == pytest.approx(accuracy_score(y, p >= 0.5), abs=0.01)
    unsure, y_unsure = _simulate(rng, 20_000, spread=0.3)
    assert expected_roc_auc(unsure) < expected_roc_auc(p) - 0.1
    assert expected_roc_auc(unsure) == pytest.approx(roc_auc_score(y_unsure, unsure), abs=0.015)


def test_cbpe_roc_auc_with_ties_and_degenerate_probabilities():
    # ties: p = [0.8, 0.8, 0.4]; positives 2.0, negatives 1.0; thresholds 0.8, 0.4 give (FPR, TPR) = (0.4, 0.8), (1, 1)
    # area from (0, 0): 0.4 * 0.8 / 2 + 0.6 * (0.8 + 1) / 2 = 0.16 + 0.54
    assert expected_roc_auc(np.array([0.8, 0.4, 0.8])) == pytest.approx(0.70)
    assert expected_roc_auc(np.full(4, 0.3)) == pytest.approx(0.5)  # no ranking information: the diagonal
    assert expected_roc_auc(np.ones(3)) is None and expected_roc_auc(np.array([])) is None
    assert expected_accuracy(np.array([]), np.array([])) is None


def test_calibrator_repairs_an_overconfident_model_and_round_trips_through_json():
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(3)
    p, y = _simulate(rng, 10_000)
    raw = p**3  # the model's probabilities are off; the labels follow p
    calibrator = Calibrator.fit(raw[:5000], y[:5000])
    assert not calibrator.identity
    realized = accuracy_score(y[5000:], raw[5000:] >= 0.5)
    predicted = (raw[5000:] >= 0.5).astype(int)
    assert abs(expected_accuracy(raw[5000:], predicted) - realized) > 0.05  # uncalibrated: misleading
    assert expected_accuracy(calibrator.apply(raw[5000:]), predicted) == pytest.approx(realized, abs=0.02)
    again = Calibrator.from_json(json.loads(json.dumps(calibrator.to_json())))
    assert again == calibrator
    np.testing.assert_array_equal(again.apply(raw[:100]), calibrator.apply(raw[:100]))


def test_calibrator_is_the_identity_without_enough_rows_or_classes():
    p = np.linspace(0.1, 0.9, 20)
    assert Calibrator.fit(p, (p > 0.5).astype(float)).identity  # 20 rows < 50
    assert Calibrator.fit(np.linspace(0, 1, 200), np.ones(200)).identity  # one class
    np.testing.assert_array_equal(Calibrator().apply(p), p)
    assert Calibrator.from_json(Calibrator().to_json()).identity


@pytest.mark.parametrize(
    ("data", "field"),
    [({"x": [0, "a"], "y": [0, 1]}, "'x'"), ({"x": [0, 1], "y": [0]}, "differ in length"), ({"x": [1, 0], "y": [0, 1]}, "non-decreasing")],
)
def test_calibrator_from_bad_json_names_the_field(data, field):
    with pytest.raises(ValueError, match=field):
        Calibrator.from_json(data)


def test_calibrator_rejects_labels_that_are_not_binary():
    with pytest.raises(ValueError, match="must be 0 or 1"):
        Calibrator.fit(np.linspace(0, 1, 100), np.full(100, 2.0))
