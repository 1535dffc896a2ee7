"""The scikit-learn baseline: it learns a planted signal (numeric and categorical) and beats a constant, for
classification and regression, on the tiny spec's features shape read from a real Delta table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aiflow.data.encoding import FeatureState, model_inputs
from aiflow.evaluation.metrics import compute_metrics
from aiflow.spec import DatasetSpec
from aiflow.storage.lake import Lake, Tables
from aiflow.train.baseline import fit_sklearn
from aiflow.train.contract import TrainParams
from aiflow.train.data import FeatureData
from aiflow.train.request import pinned_request
from tests.aiflow.train.tiny_features import event_times, features_frame, regression_spec


def fit_baseline(data, problem_type, *, max_rows, seed):
    """The scikit-learn family's validation metrics."""
    return fit_sklearn(data, problem_type, max_rows=max_rows, seed=seed)[1]


ROWS = 3000
CARRIER_EFFECT = {1: 0.0, 2: 3.0, 3: -1.0, 4: 0.5}  # cat_carrier code → effect on the target


def write_features(root: Path, spec: DatasetSpec, signal: str, seed: int = 0) -> FeatureData:
    """A features table of the spec's shape whose target depends on ``signal`` (numeric, categorical, none; single: one class)."""
    rng = np.random.default_rng(seed)
    state = FeatureState(vocab={"carrier": ["AA", "UA", "DL", "B6"], "origin": ["JFK", "EWR", "LGA"]},
                         stats={"distance": (0.0, 1.0), "seats": (0.0, 1.0), "weather_temp": (0.0, 1.0)}, rows=ROWS)  # fmt: skip
    ts = event_times(rng, ROWS)
    distance = rng.normal(size=ROWS)
    carrier = rng.integers(1, 5, ROWS)
    score = {"numeric": 2.0 * distance, "categorical": np.vectorize(CARRIER_EFFECT.get)(carrier)}.get(signal, np.zeros(ROWS))
    if signal == "single":
        target = np.zeros(ROWS, dtype=np.int8)
    elif spec.problem_type == "classification":
        target = (score + 0.3 * rng.normal(size=ROWS) > np.median(score) if signal != "none" else rng.random(ROWS) < 0.3).astype(np.int8)
    else:
        target = 20.0 + 10.0 * score + rng.normal(size=ROWS)
    frame = features_frame(spec, rng, ts, target, carrier=carrier, distance=distance)
    lake = Lake(root / "lake")
    lake.overwrite(Tables.feature_state(spec.name), state.to_frame())
    lake.overwrite(Tables.features(spec.name), frame, metadata={"state_version": str(lake.version(Tables.feature_state(spec.name)))})
    request = pinned_request(lake, spec, TrainParams(), str(root / "artifacts"), "baseline", "test")
    data = FeatureData(request, spec)
    assert data.inputs.categorical == model_inputs(spec, state).categorical
    return data


def valid_target(data: FeatureData) -> np.ndarray:
    return np.concatenate([b.y for b in data.batches("valid", 4096)])


def constant_metrics(data: FeatureData, problem_type: str) -> dict[str, float]:
    """The best constant: the training mean (the positive rate, or the mean value) for every validation row."""
    train_mean = float(np.concatenate([b.y for b in data.batches("train", 4096)]).mean())
    y = valid_target(data)
    return compute_metrics(y, np.full(len(y), train_mean), problem_type)


@pytest.mark.parametrize("signal", ["numeric", "categorical"])
def test_classifier_learns_the_signal_and_beats_a_constant(tiny_spec, tmp_path, signal):
    data = write_features(tmp_path, tiny_spec, signal)
    metrics = fit_baseline(data, "classification", max_rows=2000, seed=1)
    constant = constant_metrics(data, "classification")
    assert constant["roc_auc"] == pytest.approx(0.5)
    assert metrics["roc_auc"] > 0.9  # the planted signal is nearly separable
    assert metrics["log_loss"] < constant["log_loss"] - 0.1


def test_classifier_without_signal_stays_near_chance(tiny_spec, tmp_path):
    data = write_features(tmp_path, tiny_spec, "none")
    metrics = fit_baseline(data, "classification", max_rows=2000, seed=1)
    assert 0.35 < metrics["roc_auc"] < 0.65  # nothing to learn: a high score here would mean leakage


@pytest.mark.parametrize("signal", ["numeric", "categorical"])
def test_regressor_learns_the_signal_and_beats_a_constant(tmp_path, signal):
    spec = regression_spec()
    data = write_features(tmp_path, spec, signal)
    metrics = fit_baseline(data, "regression", max_rows=2000, seed=1)
    constant = constant_metrics(data, "regression")
    y = valid_target(data)
    assert metrics["rmse"] < 0.3 * constant["rmse"]  # noise is 1 minute; the signal's spread is ~10-20
    assert metrics["rmse"] < 3.0 and metrics["mae"] < constant["mae"]
    assert constant["rmse"] == pytest.approx(float(np.sqrt(np.mean((y - y.mean()) ** 2))), rel=0.1)


def test_the_baseline_is_seeded_and_honours_max_rows(tiny_spec, tmp_path):
    data = write_features(tmp_path, tiny_spec, "numeric")
    first = fit_baseline(data, "classification", max_rows=300, seed=3)
    assert fit_baseline(data, "classification", max_rows=300, seed=3) == first
    assert fit_baseline(data, "classification", max_rows=2000, seed=3)["roc_auc"] >= first["roc_auc"] - 0.02


def test_a_single_class_cannot_be_fitted(tiny_spec, tmp_path):
    data = write_features(tmp_path, tiny_spec, "single")
    with pytest.raises(ValueError, match="single class"):
        fit_baseline(data, "classification", max_rows=500, seed=1)
