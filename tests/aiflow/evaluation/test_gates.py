"""Scope: evaluation metrics (overall, per slice, calibration) and the model gates' verdicts and margins."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from aiflow.evaluation.gates import (
    GateConfig,
    absolute_gates,
    baseline_gate,
    champion_gate,
    latency_gate,
    schema_gate,
    slice_gate,
)
from aiflow.evaluation.metrics import calibration_error, classification_metrics, compute_metrics, regression_of, slice_metrics


def test_classification_metrics_match_known_cases():
    y = np.array([0, 0, 1, 1])
    perfect = classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect["roc_auc"] == 1.0 and perfect["f1"] == 1.0 and perfect["accuracy"] == 1.0
    inverted = classification_metrics(y, np.array([0.9, 0.8, 0.2, 0.1]))
    assert inverted["roc_auc"] == 0.0 and inverted["log_loss"] > perfect["log_loss"]
    single_class = classification_metrics(np.array([1, 1, 1]), np.array([0.2, 0.7, 0.9]))
    assert "roc_auc" not in single_class and "pr_auc" not in single_class  # undefined: absent, never 0
    assert math.isfinite(single_class["log_loss"])
    partial = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert partial["roc_auc"] == pytest.approx(0.75) and partial["accuracy"] == pytest.approx(0.75)


def test_calibration_error_is_zero_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = (rng.random(200_000) < p).astype(int)
    assert calibration_error(y, p) < 0.01
    assert calibration_error(y, np.clip(p + 0.3, 0, 1)) > 0.2


def test_regression_metrics():
    m = compute_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]), "regression")
    assert m["mae"] == pytest.approx(2 / 3) and m["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert m["r2"] == pytest.approx(1 - 4 / 2)
    with pytest.raises(ValueError, match="no rows"):
        compute_metrics(np.array([]), np.array([]), "regression")


def test_slice_metrics_per_value_and_small_slices_skipped():
    frame = pl.DataFrame(
        {"carrier": ["AA"] * 60 + ["UA"] * 60 + ["XX"] * 5, "y": [0, 1] * 62 + [1], "p": [0.2, 0.8] * 30 + [0.8, 0.2] * 30 + [0.5] * 5}
    )
    out = slice_metrics(frame, ["carrier"], "classification", target="y", score="p")
    by = {r["value"]: r for r in out.iter_rows(named=True)}
    assert set(by) == {"AA", "UA"}
    assert by["AA"]["roc_auc"] == 1.0 and by["UA"]["roc_auc"] == 0.0 and by["AA"]["rows"] == 60


def test_direction_aware_regression():
    assert regression_of("roc_auc", 0.70, 0.75) == pytest.approx(0.05)
    assert regression_of("rmse", 12.0, 10.0) == pytest.approx(2.0)
    assert regression_of("log_loss", 0.4, 0.5) == pytest.approx(-0.1)


def test_absolute_gates_floor_and_ceiling_with_the_miss():
    config = GateConfig(absolute={"roc_auc": 0.7, "log_loss": 0.6})
    results = {r.gate: r for r in absolute_gates({"roc_auc": 0.65, "log_loss": 0.5}, config)}
    assert not results["absolute:roc_auc"].passed and "misses by 0.0500" in results["absolute:roc_auc"].detail
    assert results["absolute:log_loss"].passed
    with pytest.raises(ValueError, match="unknown metric 'speed'"):
        absolute_gates({}, GateConfig(absolute={"speed": 1.0}))
    nan = absolute_gates({"roc_auc": math.nan}, GateConfig(absolute={"roc_auc": 0.5}))[0]
    assert not nan.passed


def test_champion_gate_tolerance_and_first_model():
    assert champion_gate("roc_auc", 0.70, None, 0.01).passed
    assert not champion_gate("roc_auc", None, 0.75, 0.01).passed
    assert champion_gate("roc_auc", 0.745, 0.75, 0.01).passed
    failed = champion_gate("roc_auc", 0.70, 0.75, 0.01)
    assert not failed.passed and "regresses by 0.0500" in failed.detail
    assert not champion_gate("rmse", 11.0, 10.0, 0.5).passed


def test_slice_gate_names_the_worst_slice():
    cand = pl.DataFrame({"slice": ["carrier", "carrier"], "value": ["AA", "UA"], "roc_auc": [0.70, 0.60]})
    champ = pl.DataFrame({"slice": ["carrier", "carrier"], "value": ["AA", "UA"], "roc_auc": [0.70, 0.70]})
    failed = slice_gate("roc_auc", cand, champ, 0.05)
    assert not failed.passed and "carrier=UA" in failed.detail and failed.value == pytest.approx(0.10)
    assert slice_gate("roc_auc", cand, champ, 0.2).passed
    assert slice_gate("roc_auc", cand, None, 0.0).passed


def test_baseline_latency_and_schema_gates():
    assert baseline_gate("roc_auc", 0.72, 0.70, True).passed
    assert not baseline_gate("roc_auc", 0.69, 0.70, True).passed
    assert not baseline_gate("rmse", 10.0, 9.0, True).passed
    assert baseline_gate("roc_auc", 0.1, 0.9, False).passed
    assert latency_gate(120.0, 250.0).passed
    assert "over by 50.0 ms" in latency_gate(300.0, 250.0).detail
    assert not schema_gate(["num_x"], [], False).passed
    assert not schema_gate([], ["cat_new"], False).passed
    assert schema_gate([], ["cat_new"], True).passed


def test_margins_are_signed_room_in_the_metrics_units():
    """Positive margin: passed with that much to spare; negative: missed by that much; direction-aware."""
    floor, ceiling = absolute_gates({"roc_auc": 0.62, "rmse": 12.0}, GateConfig(absolute={"roc_auc": 0.6, "rmse": 10.0}))
    assert floor.passed and floor.margin == pytest.approx(0.02)
    assert not ceiling.passed and ceiling.margin == pytest.approx(-2.0)  # lower is better: 2 over the ceiling
    worse = champion_gate("rmse", 10.3, 10.0, tolerance=0.5)
    assert worse.passed and worse.margin == pytest.approx(0.2)
    assert champion_gate("roc_auc", 0.70, None, 0.01).margin is None  # no champion: nothing to measure
    beats = baseline_gate("rmse", 9.0, 9.5, required=True)
    assert beats.passed and beats.margin == pytest.approx(0.5)
    assert latency_gate(300.0, 250.0).margin == pytest.approx(-50.0)
    assert schema_gate([], [], False).margin is None


def test_a_switched_off_gate_says_it_is_not_configured():
    off = baseline_gate("roc_auc", 0.6, 0.7, required=False)
    assert off.passed and not off.configured and off.detail == "Not configured: must_beat_baseline is off."
    assert baseline_gate("roc_auc", 0.6, 0.7, required=True).configured
    assert absolute_gates({"roc_auc": 0.9}, GateConfig(absolute={})) == []
