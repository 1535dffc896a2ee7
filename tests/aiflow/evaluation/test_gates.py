"""Scope: evaluation metrics (overall, per slice, calibration) and the model gates' verdicts and margins; gate defaults by
problem type (classification and regression on the tiny spec), the spec's gates section under launchpad overrides, and
gates turned off recorded as "not required"."""

from __future__ import annotations

import copy
import math

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from aiflow.evaluation.gates import (
    GateConfig,
    LatencyReading,
    absolute_gates,
    apply_off,
    baseline_gate,
    champion_gate,
    effective_gates,
    latency_gate,
    schema_gate,
    slice_gate,
)
from aiflow.evaluation.metrics import calibration_error, classification_metrics, compute_metrics, regression_of, slice_metrics
from aiflow.evaluation.validation import paired_latency
from aiflow.spec import SpecError, parse_spec
from tests.aiflow.tiny import TINY


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


# ------------------------------------------------------- defaults by problem type, spec gates, not required
def _spec(problem: str, gates: dict | None = None):
    data = copy.deepcopy(TINY)
    if problem == "regression":
        data["problem_type"] = "regression"
        data["target"] = {"name": "delay_minutes", "source": "delay", "kind": "identity", "when_null": "quarantine"}
    if gates is not None:
        data["gates"] = gates
    return parse_spec(data, "tiny.yaml")


def test_default_gates_follow_the_problem_type():
    assert effective_gates(_spec("classification")).absolute == {"roc_auc": 0.6}
    regression = effective_gates(_spec("regression"))
    assert regression.absolute == {} and regression.must_beat_baseline is True and regression.off == []
    assert regression.champion_tolerance == 0.005 and regression.latency_budget_ms_per_1k == 250.0 and regression.latency_factor == 1.5


def test_a_regression_whose_level_shifted_passes_its_default_gates_when_it_beats_the_naive_reference():
    """Prices move up in the test window: R² on the test window is negative (its own mean is out of every training
    model's reach) although the model is 3x better than the naive reference. The default holds regression relative to
    the naive reference and the champion, so it passes; a model that does not beat the naive reference fails."""
    rng = np.random.default_rng(3)
    train_mean, y = 20.0, rng.normal(40, 3, 2000)  # the level moved from 20 to 40
    shifted = y - 14 + rng.normal(0, 1, 2000)  # follows the signal, still 14 too low on the new level
    metrics = compute_metrics(y, shifted, "regression")
    naive = compute_metrics(y, np.full(2000, train_mean), "regression")
    assert metrics["r2"] < 0 and metrics["rmse"] < naive["rmse"] / 1.3
    config = effective_gates(_spec("regression"))
    results = apply_off(
        [*absolute_gates(metrics, config), baseline_gate("rmse", metrics["rmse"], naive["rmse"], config.must_beat_baseline)], config
    )
    assert all(r.passed for r in results) and [r.state for r in results] == ["not required", "passed"]
    useless = baseline_gate("rmse", naive["rmse"] + 0.1, naive["rmse"], config.must_beat_baseline)
    assert not useless.passed and "does not beat" in useless.detail
    # the old one-size default judged a regression model by ROC AUC, which it does not have
    blocked = absolute_gates(metrics, GateConfig(absolute={"roc_auc": 0.6}))[0]
    assert not blocked.passed and "could not be computed" in blocked.detail


def test_spec_gates_apply_and_the_launchpad_overrides_them():
    spec = _spec("regression", {"absolute": {"rmse": 5.0}, "champion_tolerance": 0.5, "off": ["latency"]})
    from_spec = effective_gates(spec)
    assert from_spec.absolute == {"rmse": 5.0} and from_spec.champion_tolerance == 0.5 and from_spec.off == ["latency"]
    assert from_spec.slice_tolerance == 0.03  # unset in the spec: the default
    launched = effective_gates(spec, GateConfig(champion_tolerance=0.1, off=[]))
    assert launched.champion_tolerance == 0.1 and launched.off == [] and launched.absolute == {"rmse": 5.0}
    with pytest.raises(SpecError, match=r"gates\.off\[0\]"):
        _spec("classification", {"off": ["speed"]})
    with pytest.raises(ValidationError, match="unknown gate"):
        GateConfig(off=["speed"])


def test_gates_turned_off_are_recorded_as_not_required_never_passed():
    config = effective_gates(_spec("classification", {"absolute": {}, "off": ["latency"]}))
    results = apply_off([baseline_gate("roc_auc", 0.6, 0.7, required=False), latency_gate(900.0, 250.0), schema_gate([], [], False)], config)
    states = {r.gate: r.as_dict()["state"] for r in results}
    assert states == {"absolute": "not required", "beats_baseline": "not required", "latency": "not required", "input_schema": "passed"}
    latency = next(r for r in results if r.gate == "latency")
    assert latency.passed and not latency.configured and "switched off" in latency.detail  # does not block, says why
    assert latency_gate(900.0, 250.0).as_dict()["state"] == "failed"
    # the CLI shows the state, not "passed"
    from aiflow.cli.models import _gate

    assert _gate(latency.as_dict()) == "not required" and _gate(schema_gate([], [], False).as_dict()) == "passed"


class _Model:
    """A stand-in model whose prediction costs ``work`` units of real CPU (a busy loop), for the latency gate's timing."""

    def __init__(self, work: int):
        self.work = work

    def predict(self, rows):
        total = 0
        for i in range(self.work):
            total += i * i
        return total


def test_the_relative_latency_gate_states_its_noise_and_its_boundary():
    reading = LatencyReading(160.0, (150.0, 170.0), 110.0, (100.0, 120.0), 7, ratio=1.5)
    exactly = latency_gate(reading, budget=10.0, factor=1.5)  # 1.5x exactly: on the bound passes, however small the budget
    assert exactly.passed and exactly.margin == pytest.approx(0.0) and "fastest of 7 runs; median 160.0, range 150.0–170.0" in exactly.detail
    slower = latency_gate(LatencyReading(151.5, (151.0, 152.0), 100.0, (100.0, 101.0), 7, ratio=1.51), budget=10.0, factor=1.5)
    assert not slower.passed and "1.51x (median of the paired runs' ratios); allowed: at most 1.5x or within the budget of 10 ms" in slower.detail
    # a neighbour's burst moved the medians (4.4x apart) and the fastest runs, not the back-to-back ratios: judged on those
    burst = latency_gate(LatencyReading(400.0, (60.0, 1200.0), 90.0, (50.0, 95.0), 7, ratio=1.1), budget=10.0, factor=1.5)
    assert burst.passed, burst.detail
    # a candidate whose fastest run is within the budget passes whatever the ratio (the demo's retrain under load)
    loaded = latency_gate(LatencyReading(352.7, (58.1, 1195.7), 120.0, (40.0, 300.0), 7, ratio=2.9), budget=250.0, factor=1.5)
    assert loaded.passed, loaded.detail
    # a fast model of another family: 4x the champion's 2 ms, but far within the budget: not a reason to block it
    fast = latency_gate(LatencyReading(8.0, (7.0, 9.0), 2.0, (1.9, 2.2), 7, ratio=4.0), budget=250.0, factor=1.5)
    assert fast.passed
    first = latency_gate(LatencyReading(250.0, (250.0, 250.0)), budget=250.0)  # no champion: the budget, bound included
    assert first.passed and "no champion" in first.detail


def test_a_cpu_burner_does_not_make_an_equal_candidate_fail_and_a_three_times_slower_one_still_fails():
    import multiprocessing as mp

    rows = pl.DataFrame({"x": list(range(1000))})
    burners = [mp.get_context("spawn").Process(target=_burn, daemon=True) for _ in range(2)]  # both cores kept busy
    for b in burners:
        b.start()
    try:
        equal = latency_gate(paired_latency(_Model(200_000), _Model(200_000), rows, repeats=9), budget=0.001, factor=1.5)
        slower = latency_gate(paired_latency(_Model(600_000), _Model(200_000), rows, repeats=9), budget=0.001, factor=1.5)
    finally:
        for b in burners:
            b.terminate()
    assert equal.passed, equal.detail  # an absolute budget of 0.001 ms would have failed it: only the ratio counts
    assert not slower.passed, slower.detail


def _burn() -> None:
    while True:
        pass


def test_a_value_exactly_on_a_bound_or_tolerance_passes_and_the_next_step_fails():
    """The bounds are inclusive: a floor, a ceiling, a champion or slice tolerance, or a latency budget met exactly passes
    (margin 0); one binary step past it fails. Values are exact in binary so the boundary is the boundary."""
    floor, ceiling = absolute_gates({"roc_auc": 0.75, "rmse": 10.0}, GateConfig(absolute={"roc_auc": 0.75, "rmse": 10.0}))
    assert floor.passed and floor.margin == 0.0 and "misses" not in floor.detail
    assert ceiling.passed and ceiling.margin == 0.0
    below, above = absolute_gates({"roc_auc": 0.7499999, "rmse": 10.0000001}, GateConfig(absolute={"roc_auc": 0.75, "rmse": 10.0}))
    assert not below.passed and not above.passed

    on_tolerance = champion_gate("roc_auc", 0.5, 0.75, tolerance=0.25)
    assert on_tolerance.passed and on_tolerance.margin == 0.0 and "no regression beyond" in on_tolerance.detail
    assert champion_gate("rmse", 10.5, 10.0, tolerance=0.5).passed
    assert not champion_gate("roc_auc", 0.4999999, 0.75, tolerance=0.25).passed
    assert not champion_gate("rmse", 10.5000001, 10.0, tolerance=0.5).passed

    champ = pl.DataFrame({"slice": ["carrier"], "value": ["AA"], "roc_auc": [0.75]})
    on_slice = slice_gate("roc_auc", pl.DataFrame({"slice": ["carrier"], "value": ["AA"], "roc_auc": [0.5]}), champ, 0.25)
    assert on_slice.passed and on_slice.margin == 0.0
    assert not slice_gate("roc_auc", pl.DataFrame({"slice": ["carrier"], "value": ["AA"], "roc_auc": [0.4999999]}), champ, 0.25).passed

    assert latency_gate(250.0, 250.0).passed and not latency_gate(250.0001, 250.0).passed
    tie = baseline_gate("roc_auc", 0.75, 0.75, True)  # beating the naive reference is strict: a tie does not beat it
    assert not tie.passed and tie.margin == 0.0


def test_every_gate_reports_exactly_what_it_saw_its_threshold_margin_and_why():
    """The whole verdict of each gate, field for field (the Dagster check and the CLI show these): the value seen, the
    threshold, the signed margin, the sentence, and whether it is configured. Values are exact in binary. Written after
    mutation testing (scripts/mutation) showed that changing any of these fields, or skipping the metrics after one that
    could not be computed, left every other test green."""
    from aiflow.evaluation.gates import GateResult, not_required

    config = GateConfig(absolute={"roc_auc": 0.5, "pr_auc": 0.5, "rmse": 10.0})
    assert absolute_gates({"roc_auc": math.nan, "pr_auc": 0.75, "rmse": 12.0}, config)[1:] == [  # after a NaN, the others
        GateResult("absolute:pr_auc", True, 0.75, 0.5, "pr_auc 0.7500 must be at least 0.5.", 0.25),
        GateResult("absolute:rmse", False, 12.0, 10.0, "rmse 12.0000 must be at most 10.0, misses by 2.0000.", -2.0),
    ]
    assert absolute_gates({}, GateConfig(absolute={"roc_auc": 0.5})) == [
        GateResult("absolute:roc_auc", False, None, 0.5, "roc_auc could not be computed on the test rows")
    ]

    assert champion_gate("roc_auc", None, 0.75, 0.25) == GateResult(
        "vs_champion", False, None, 0.75, "The candidate's roc_auc could not be computed on the test rows."
    )
    assert champion_gate("roc_auc", 0.5, math.nan, 0.25) == GateResult(
        "vs_champion", True, 0.5, None, "No champion (or no champion metric) to compare with."
    )
    assert champion_gate("roc_auc", 0.5, 0.75, 0.25) == GateResult(
        "vs_champion", True, 0.5, 0.75, "roc_auc 0.5000 vs champion 0.7500 on the same rows: no regression beyond the tolerance 0.25.", 0.0
    )
    assert champion_gate("roc_auc", 0.25, 0.75, 0.25) == GateResult(
        "vs_champion", False, 0.25, 0.75, "roc_auc 0.2500 vs champion 0.7500 on the same rows: regresses by 0.5000, more than the tolerance 0.25.", -0.25
    )

    champ = pl.DataFrame({"slice": ["carrier"] * 3, "value": ["AA", "UA", "B6"], "roc_auc": [0.75, 0.75, None]})
    cand = pl.DataFrame({"slice": ["carrier"] * 3, "value": ["AA", "UA", "B6"], "roc_auc": [0.5, 0.25, 0.75]})
    assert slice_gate("roc_auc", cand, champ, 0.25) == GateResult(  # the worst is UA (B6 has no champion metric)
        "slices_vs_champion", False, 0.5, 0.25, "worst slice carrier=UA: roc_auc 0.2500 vs champion 0.7500 regresses beyond tolerance 0.25 (gap 0.5000).", -0.25
    )
    assert slice_gate("roc_auc", cand.head(1), champ, 0.25) == GateResult(
        "slices_vs_champion", True, 0.25, 0.25, "worst slice carrier=AA: roc_auc 0.5000 vs champion 0.7500 within tolerance 0.25 (gap 0.2500).", 0.0
    )
    no_slices = GateResult("slices_vs_champion", True, None, 0.25, "No champion slices to compare with.")
    assert slice_gate("roc_auc", cand, champ.clear(), 0.25) == no_slices == slice_gate("pr_auc", cand, champ, 0.25)
    assert slice_gate("roc_auc", cand.tail(1), champ, 0.25) == GateResult(
        "slices_vs_champion", True, None, 0.25, "No slice has a defined metric on both sides."
    )

    assert baseline_gate("roc_auc", 0.5, 0.75, False) == GateResult(
        "beats_baseline", True, 0.5, 0.75, "Not configured: must_beat_baseline is off.", configured=False
    )
    assert baseline_gate("roc_auc", None, 0.75, True) == GateResult(
        "beats_baseline", False, None, 0.75, "Validation roc_auc is missing for the model or the naive reference."
    )
    assert baseline_gate("roc_auc", 0.75, 0.5, True) == GateResult(
        "beats_baseline", True, 0.75, 0.5, "validation roc_auc 0.7500 vs the naive reference 0.5000: beats it.", 0.25
    )

    assert latency_gate(300.0, 250.0) == GateResult(
        "latency", False, 300.0, 250.0,
        "300.0 ms per 1,000 rows (fastest of 1 runs; median 300.0, range 300.0–300.0), budget 250 ms (no champion to compare "
        "with) (over by 50.0 ms).", -50.0,
    )  # fmt: skip
    no_champion = latency_gate(LatencyReading(200.0, (200.0, 200.0), champion_ms=0.0), 250.0)  # a champion timed at 0: none
    assert no_champion.passed and no_champion.threshold == 250.0 and no_champion.detail.endswith("(no champion to compare with).")
    slow = latency_gate(LatencyReading(400.0, (300.0, 500.0), 100.0, (100.0, 150.0), 3), budget=250.0, factor=2.0)  # ratio: 300/100
    assert slow == GateResult(
        "latency", False, 3.0, 2.0,
        "300.0 ms per 1,000 rows (fastest of 3 runs; median 400.0, range 300.0–500.0) vs the champion's 100.0 ms (median 100.0, "
        "range 100.0–150.0) measured interleaved in the same run: 3.00x (median of the paired runs' ratios); allowed: at most 2x "
        "or within the budget of 250 ms (over by 1.00x and 50.0 ms).", -1.0,
    )  # fmt: skip

    assert schema_gate(["num_x"], ["cat_new"], False) == GateResult(
        "input_schema", False, None, None,
        "Inputs missing from the features table: ['num_x']; inputs differ from the serving champion's: ['cat_new'].",
    )  # fmt: skip
    assert schema_gate([], ["cat_new"], True) == GateResult("input_schema", True, None, None, "Inputs match the features table and the champion.")

    off = apply_off([GateResult("absolute:roc_auc", False, 0.25, 0.5, "x", -0.25), champion_gate("roc_auc", 0.5, 0.75, 0.25)],
                    GateConfig(off=["absolute"]))  # fmt: skip
    assert off == [not_required("absolute:roc_auc", "switched off (gates.off: absolute)"), champion_gate("roc_auc", 0.5, 0.75, 0.25)]
    assert off[0] == GateResult("absolute:roc_auc", True, None, None, "Not required: switched off (gates.off: absolute).", configured=False)
    assert apply_off([], GateConfig())[0] == GateResult(
        "absolute", True, None, None, "Not required: no absolute bound is set (gates.absolute is empty).", configured=False
    )


def test_undefined_values_ties_and_fast_champions_in_the_gates():
    """The second round of survivors of scripts/mutation: a metric that came out NaN is shown as it was (n/a in the
    sentence, NaN as the value), an undefined slice anywhere does not stop the search for the worst one, equal gaps name
    the first slice, a champion timed under 1 ms is still compared with, and the default latency factor is 1.5."""
    nan_auc = baseline_gate("roc_auc", math.nan, 0.75, True)
    assert not nan_auc.passed and nan_auc.detail == "validation roc_auc n/a vs the naive reference 0.7500: does not beat it."
    assert math.isnan(nan_auc.value) and math.isnan(nan_auc.margin)
    assert baseline_gate("roc_auc", 0.5, None, True).value == 0.5  # what the model scored, though the reference is missing
    assert math.isnan(absolute_gates({"roc_auc": math.nan}, GateConfig(absolute={"roc_auc": 0.5}))[0].value)
    assert math.isnan(champion_gate("roc_auc", math.nan, 0.75, 0.25).value)

    champ = pl.DataFrame({"slice": ["carrier"] * 3, "value": ["B6", "AA", "UA"], "roc_auc": [None, 0.75, 0.75]})
    cand = pl.DataFrame({"slice": ["carrier"] * 3, "value": ["B6", "AA", "UA"], "roc_auc": [0.75, 0.5, 0.5]})
    tie = slice_gate("roc_auc", cand, champ, 0.25)  # B6 (first) is undefined; AA and UA regress by the same 0.25
    assert tie.passed and tie.value == 0.25 and tie.detail.startswith("worst slice carrier=AA:")

    fast = latency_gate(LatencyReading(2.0, (2.0, 2.0), 0.5, (0.5, 0.5), 3), budget=1.0)  # 4x a 0.5 ms champion, over 1 ms
    assert not fast.passed and fast.value == 4.0 and fast.threshold == 1.5  # compared with it, at the default factor
    assert not latency_gate(LatencyReading(2.0, (2.0, 2.0), 1.0, (1.0, 1.0), 3, ratio=2.0), budget=1.0).passed
    within = latency_gate(LatencyReading(100.0, (100.0, 100.0), 90.0, (90.0, 90.0), 3), budget=250.0)
    assert within.passed and within.detail.endswith("allowed: at most 1.5x or within the budget of 250 ms.")
