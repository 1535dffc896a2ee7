"""Scope: thresholds calibrated on reference chunks: draws from the reference do not fire under them while a shifted
window (drifted inputs, or a model grown unsure) does, on a classification and a regression reference with other
column names; the fallback for a small reference; floors for a perfectly stable one; a drift function returning
per-column verdicts weighted by importance."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from aiflow.monitoring.calibration import calibrate, weighted_drift_share
from aiflow.monitoring.performance import expected_roc_auc
from aiflow.monitoring.policy import Policy, WindowSignals, decide

KINDS = {"num_distance": "numeric", "num_seats": "numeric", "cat_carrier": "categorical"}
IMPORTANCE = {"num_distance": 0.6, "num_seats": 0.1, "cat_carrier": 0.3}
POLICY = Policy(min_rows=100, min_labels=50, hysteresis=1)


def mean_shift_drift(reference: pl.DataFrame, current: pl.DataFrame) -> dict[str, bool]:
    """A simple stand-in for the drift engine: numeric columns drift when the mean moves a fifth of a standard
    deviation, categorical ones when the total variation distance of their frequencies exceeds 0.1."""
    out = {}
    for col, kind in KINDS.items():
        if kind == "numeric":
            sd = reference[col].std() or 1.0
            out[col] = abs(current[col].mean() - reference[col].mean()) / sd > 0.2
        else:
            ref = reference[col].value_counts(normalize=True, name="r")
            cur = current[col].value_counts(normalize=True, name="c")
            both = ref.join(cur, on=col, how="full", coalesce=True).fill_null(0.0)
            out[col] = 0.5 * (both["r"] - both["c"]).abs().sum() > 0.1
    return out


def classification_reference(rng: np.random.Generator, n_train: int = 2400, n_valid: int = 600) -> pl.DataFrame:
    n = n_train + n_valid
    distance = rng.normal(0, 1, n)
    seats = rng.normal(0, 1, n)
    carrier = rng.integers(1, 5, n)
    p = 1 / (1 + np.exp(-(1.5 * distance + 0.3 * (carrier == 2))))
    days = np.sort(rng.integers(0, 180, n))
    return pl.DataFrame({
        "event_date": [dt.date(2023, 1, 1) + dt.timedelta(days=int(d)) for d in days],
        "split": ["train"] * n_train + ["valid"] * n_valid,
        "num_distance": distance, "num_seats": seats, "cat_carrier": carrier,
        "label": (rng.uniform(size=n) < p).astype(np.float64), "prediction": p,
    })  # fmt: skip


def signals(reference: pl.DataFrame, window: pl.DataFrame, i: int = 0) -> WindowSignals:
    share = weighted_drift_share(mean_shift_drift(reference, window), IMPORTANCE)
    start = dt.date(2024, 1, 1) + dt.timedelta(days=7 * i)
    return WindowSignals(start, start + dt.timedelta(days=7), 1, window.height, 0, share, expected_roc_auc(window["prediction"].to_numpy()))


def test_reference_draws_stay_quiet_and_a_shifted_window_fires():
    rng = np.random.default_rng(11)
    reference = classification_reference(rng)
    t = calibrate(reference, problem_type="classification", kinds=KINDS, drift_fn=mean_shift_drift, importance=IMPORTANCE, policy=POLICY)
    assert (t.source, t.chunks, t.metric) == ("calibrated", 8, "roc_auc")
    assert 0.75 < t.reference_metric < 0.9
    assert POLICY.min_drift_share <= t.drift_share <= 1.0 and t.estimated_drop >= POLICY.min_drop
    half = calibrate(reference, problem_type="classification", kinds=KINDS, drift_fn=mean_shift_drift, importance=IMPORTANCE, k=1.5,
                     policy=POLICY)  # fmt: skip
    assert POLICY.min_drop < half.estimated_drop and t.estimated_drop == pytest.approx(2 * half.estimated_drop)  # k standard deviations
    assert t.realized_drop == pytest.approx(2 * half.realized_drop)
    for seed in range(5):
        draw = reference.sample(400, seed=seed)
        d = decide(POLICY, t, [signals(reference, draw, seed)], [], running=False)
        assert d.action == "skip", d.reason
    # inputs shift: distance moves by one standard deviation, and the model's outputs with it
    shifted = reference.sample(400, seed=99).with_columns(
        num_distance=pl.col("num_distance") + 1.0,
        prediction=1 / (1 + (-(1.5 * (pl.col("num_distance") + 1.0))).exp()),
    )
    d = decide(POLICY, t, [signals(reference, shifted)], [], running=False)
    assert d.action == "retrain" and "drift" in d.fired, d.reason
    # the model grows unsure (probabilities squeezed toward 0.5): the CBPE estimate drops
    unsure = reference.sample(400, seed=98).with_columns(prediction=0.5 + 0.2 * (pl.col("prediction") - 0.5))
    d = decide(POLICY, t, [signals(reference, unsure)], [], running=False)
    assert d.action == "retrain" and d.fired == ("estimated",), d.reason


def test_regression_reference_calibrates_the_relative_rmse_increase():
    rng = np.random.default_rng(5)
    n = 2000
    x = rng.normal(0, 1, n)
    y = 3.0 * x + rng.normal(0, 1.0, n)
    reference = pl.DataFrame({
        "event_date": [dt.date(2022, 6, 1) + dt.timedelta(days=i // 20) for i in range(n)],
        "split": ["train"] * 1600 + ["valid"] * 400,
        "num_load": x, "label": y, "prediction": 3.0 * x,
    })  # fmt: skip
    kinds = {"num_load": "numeric"}
    t = calibrate(reference, problem_type="regression", kinds=kinds, drift_fn=lambda r, c: 0.0, chunks=4, policy=POLICY)
    assert (t.source, t.metric, t.chunks) == ("calibrated", "rmse", 4)
    assert t.reference_metric == pytest.approx(1.0, abs=0.1)
    assert POLICY.min_drop <= t.realized_drop < 0.5
    tenfold = reference.with_columns(pl.col("label") * 10, pl.col("prediction") * 10)  # the same model in other units
    t10 = calibrate(tenfold, problem_type="regression", kinds=kinds, drift_fn=lambda r, c: 0.0, chunks=4, policy=POLICY)
    assert t10.reference_metric == pytest.approx(10 * t.reference_metric)
    assert t10.realized_drop == pytest.approx(t.realized_drop)  # a relative increase: free of units
    policy = Policy(min_rows=100, min_labels=50, hysteresis=1, use_drift=False)
    start = dt.date(2024, 1, 1)
    quiet = WindowSignals(start, start + dt.timedelta(days=7), 1, 400, 400, None, None, t.reference_metric * (1 + t.realized_drop / 2))
    assert decide(policy, t, [quiet], [], running=False).action == "skip"
    worse = WindowSignals(start, start + dt.timedelta(days=7), 1, 400, 400, None, None, 1.6)  # noise grew
    d = decide(policy, t, [worse], [], running=False)
    assert d.action == "retrain" and d.fired == ("realized",), d.reason


def test_a_small_reference_gets_the_labelled_fallback():
    reference = classification_reference(np.random.default_rng(1), n_train=300, n_valid=100)
    calls = []
    t = calibrate(reference, problem_type="classification", kinds=KINDS, drift_fn=lambda r, c: calls.append(1) or 0.0, policy=POLICY)
    assert (t.source, t.chunks) == ("fallback", 0)
    assert (t.drift_share, t.estimated_drop) == (POLICY.fallback_drift_share, POLICY.fallback_drop)
    assert t.reference_metric is not None and not calls
    # too few rows to calibrate on, enough to measure the reference metric's own noise: the fixed thresholds get its floor
    assert t.noise_rows == 100 and t.noise_std is not None and 0.005 < t.noise_std < 0.2
    assert t.noise_floor(300) > POLICY.fallback_drop


def test_a_perfectly_stable_reference_gets_floored_thresholds():
    n = 1600
    reference = pl.DataFrame({
        "event_date": [dt.date(2023, 1, 1) + dt.timedelta(days=i // 10) for i in range(n)],
        "split": ["train"] * 1200 + ["valid"] * 400,
        "num_distance": np.zeros(n), "label": np.tile([0.0, 1.0], n // 2), "prediction": np.full(n, 0.5),
    })  # fmt: skip
    t = calibrate(reference, problem_type="classification", kinds={"num_distance": "numeric"}, drift_fn=lambda r, c: 0.0, policy=POLICY)
    assert t.source == "calibrated"
    assert (t.drift_share, t.estimated_drop, t.realized_drop) == (POLICY.min_drift_share, POLICY.min_drop, POLICY.min_drop)


def test_the_drift_function_sees_only_the_drift_columns_and_the_rest_of_the_reference():
    reference = classification_reference(np.random.default_rng(2))
    seen = []

    def spy(ref: pl.DataFrame, cur: pl.DataFrame) -> float:
        seen.append((ref.columns, ref.height, cur.height))
        return 0.0

    calibrate(reference, problem_type="classification", kinds=KINDS, drift_fn=spy, chunks=6, policy=POLICY)
    assert len(seen) == 6 and all(cols == list(KINDS) for cols, _, _ in seen)
    assert all(r + c == reference.height for _, r, c in seen) and sum(c for _, _, c in seen) == 2400


def test_weighted_share_and_bad_input():
    assert weighted_drift_share({"a": True, "b": False}, {"a": 0.75, "b": 0.25}) == 0.75
    assert weighted_drift_share({"a": True, "b": False}, None) == 0.5
    assert weighted_drift_share({}, None) == 0.0
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['num_seats'\]"):
        calibrate(classification_reference(np.random.default_rng(0)).drop("num_seats"), problem_type="classification",
                  kinds=KINDS, drift_fn=mean_shift_drift)  # fmt: skip


def test_a_seasonal_column_does_not_push_the_drift_threshold_out_of_reach():
    """The most important column moves steadily through the training months (a season): every chunk drifts against the
    rest, so judged against the rest alone the threshold would be past 1 and drift could never fire; judged as monitoring
    judges a window (against the rest and the chunk before), the season is not news and the threshold stays low."""
    rng = np.random.default_rng(11)
    ref = classification_reference(rng)
    season = np.linspace(-0.5, 0.5, ref.height)  # rows are in date order: a gentle trend, an eighth of it per chunk
    ref = ref.with_columns((pl.col("num_distance") + season).alias("num_distance"))
    against_rest = calibrate(ref, problem_type="classification", kinds=KINDS, drift_fn=lambda r, c: weighted_drift_share(mean_shift_drift(r, c), IMPORTANCE),
                             importance=IMPORTANCE, policy=POLICY)  # fmt: skip
    as_news = calibrate(ref, problem_type="classification", kinds=KINDS, drift_fn=mean_shift_drift, importance=IMPORTANCE, policy=POLICY)
    assert against_rest.drift_share == 1.0
    assert as_news.drift_share < 0.5
