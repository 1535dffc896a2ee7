"""Scope: the retrain policy exactly on its bounds (aiflow.monitoring.policy, mutation testing, issue 22): each policy
field's smallest allowed value, each signal and guardrail at the value that just fires and the one that just does not,
the noise floor's cases, the thresholds and decisions round trips field by field, and the paced budget against a
token bucket written out day by day."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiflow.monitoring.policy import (
    Decision,
    Policy,
    Thresholds,
    WindowSignals,
    decide,
    fallback_thresholds,
    metric_drop,
    next_paced_retrain,
)

D0 = dt.date(2024, 1, 1)
AUC = Thresholds("roc_auc", drift_share=0.3, estimated_drop=0.05, realized_drop=0.05, reference_metric=0.8, source="calibrated", chunks=8)
ONE = Policy(min_rows=100, min_labels=50, hysteresis=1, cooldown_days=14, budget=9, budget_days=365)


def week(i: int, *, version: int = 1, rows: int = 1000, labelled: int = 0, drift: float | None = 0.1,
         estimated: float | None = 0.79, realized: float | None = None) -> WindowSignals:  # fmt: skip
    start = D0 + dt.timedelta(days=7 * i)
    return WindowSignals(start, start + dt.timedelta(days=7), version, rows, labelled, drift, estimated, realized)


def retrain_at(end: dt.date, version: int = 1) -> Decision:
    return Decision(end - dt.timedelta(days=7), end, version, "retrain", "retrain: earlier")


# ------------------------------------------------------------------------------------------------ the policy's fields
@pytest.mark.parametrize("name", ["min_rows", "min_labels", "cooldown_days"])
def test_fields_that_may_be_0_refuse_minus_1(name):
    assert getattr(Policy(**{name: 0}), name) == 0
    with pytest.raises(ValueError, match=rf"^policy field '{name}' must be >= 0, got -1$"):
        Policy(**{name: -1})


@pytest.mark.parametrize("name", ["hysteresis", "budget", "budget_days"])
def test_fields_that_must_be_1_refuse_0(name):
    assert getattr(Policy(**{name: 1}), name) == 1
    with pytest.raises(ValueError, match=rf"^policy field '{name}' must be >= 1, got 0$"):
        Policy(**{name: 0})


def test_a_burst_of_1_is_allowed():
    assert Policy(budget_burst=1).budget_burst == 1 and Policy(budget_burst=None).budget_burst is None
    with pytest.raises(ValueError, match=r"^policy field 'budget_burst' must be >= 1 or None, got 0$"):
        Policy(budget_burst=0)


@pytest.mark.parametrize("name", ["fallback_drift_share", "fallback_drop", "fallback_relative_increase", "min_drift_share", "min_drop"])
def test_thresholds_of_the_policy_must_be_positive(name):
    assert getattr(Policy(**{name: 1e-9}), name) == 1e-9
    with pytest.raises(ValueError, match=rf"^policy field '{name}' must be > 0, got 0$"):
        Policy(**{name: 0})
    with pytest.raises(ValueError, match=rf"^policy field '{name}' must be > 0, got nan$"):
        Policy(**{name: math.nan})


# ------------------------------------------------------------------------------------------------ thresholds
def test_the_noise_floor_is_k_std_sqrt_1_plus_n0_over_n_and_0_without_a_noise_or_rows():
    t = Thresholds("roc_auc", 0.3, 0.01, 0.01, 0.8, noise_std=0.01, noise_rows=300, noise_k=2.0)
    assert t.noise_floor(100) == pytest.approx(2 * 0.01 * 2.0)  # √(1 + 300/100) = 2
    assert t.noise_floor(300) == pytest.approx(2 * 0.01 * 2**0.5)
    assert t.noise_floor(1) == pytest.approx(2 * 0.01 * 301**0.5)
    assert t.noise_floor(0) == 0.0 and t.noise_floor(-5) == 0.0
    assert dataclasses.replace(t, noise_rows=0).noise_floor(100) == 0.0
    assert dataclasses.replace(t, noise_std=0.0).noise_floor(100) == 0.0
    assert dataclasses.replace(t, noise_std=None).noise_floor(100) == 0.0
    assert Thresholds("roc_auc", 0.3, 0.01, 0.01, 0.8, noise_std=0.01, noise_rows=300).noise_k == 3.0


def test_thresholds_refuse_an_unknown_metric_or_source_with_the_allowed_ones():
    for metric in ("roc_auc", "accuracy", "rmse", "mae"):
        assert Thresholds(metric, 0.3, 0.1, 0.1, None).source == "fallback"
    assert Thresholds("rmse", 0.3, 0.1, 0.1, None, "calibrated").source == "calibrated"
    with pytest.raises(ValueError, match=r"^thresholds field 'metric' must be one of \['accuracy', 'mae', 'rmse', 'roc_auc'\], got 'f1'$"):
        Thresholds("f1", 0.3, 0.1, 0.1, None)
    with pytest.raises(ValueError, match=r"^thresholds field 'source' must be 'calibrated' or 'fallback', got 'guessed'$"):
        Thresholds("roc_auc", 0.3, 0.1, 0.1, None, "guessed")


def test_thresholds_survive_a_dict_field_by_field_and_an_old_row_keeps_its_other_nulls():
    t = Thresholds("mae", 0.25, 0.07, 0.08, 3.5, "calibrated", 6, noise_std=0.02, noise_rows=400, noise_k=2.5)
    d = t.to_dict()
    assert d == {"metric": "mae", "drift_share": 0.25, "estimated_drop": 0.07, "realized_drop": 0.08, "reference_metric": 3.5,
                 "source": "calibrated", "chunks": 6, "noise_std": 0.02, "noise_rows": 400, "noise_k": 2.5}  # fmt: skip
    assert Thresholds.from_dict({**d, "extra": 1}) == t
    old = Thresholds.from_dict({**d, "reference_metric": None, "noise_std": None, "noise_rows": None, "noise_k": None})
    assert old == Thresholds("mae", 0.25, 0.07, 0.08, None, "calibrated", 6)


@pytest.mark.parametrize(("metric", "drop"), [("roc_auc", 0.04), ("accuracy", 0.04), ("rmse", 0.15), ("mae", 0.15)])
def test_fallback_thresholds_take_the_absolute_drop_for_scores_and_the_relative_increase_for_errors(metric, drop):
    policy = Policy(fallback_drift_share=0.35, fallback_drop=0.04, fallback_relative_increase=0.15)
    t = fallback_thresholds(policy, metric, 0.9)
    assert t == Thresholds(metric, 0.35, drop, drop, 0.9, "fallback", 0)
    assert fallback_thresholds(policy, metric).reference_metric is None


def test_metric_drop_is_absolute_for_scores_and_relative_for_errors_and_absolute_again_for_a_zero_reference():
    assert metric_drop("roc_auc", 0.8, 0.75) == pytest.approx(0.05)
    assert metric_drop("accuracy", 0.9, 0.95) == pytest.approx(-0.05)
    assert metric_drop("rmse", 2.0, 2.5) == pytest.approx(0.25)
    assert metric_drop("mae", 4.0, 3.0) == pytest.approx(-0.25)
    assert metric_drop("rmse", 0.0, 0.3) == pytest.approx(0.3)  # a perfect reference: the increase itself
    assert metric_drop("mae", 1e-12, 1e-12 + 1) == pytest.approx(1e12)


# ------------------------------------------------------------------------------------------------ decisions as rows
def test_a_decision_row_holds_every_column_and_reads_back():
    d = decide(ONE, AUC, [week(0, drift=0.5, estimated=0.7)], [], running=False)
    row = d.to_row()
    assert row == {
        "window_start": D0, "window_end": D0 + dt.timedelta(days=7), "model_version": 1, "action": "retrain", "reason": d.reason,
        "fired": "drift,estimated", "signal_drift_share": 0.5, "signal_estimated_drop": pytest.approx(0.1),
        "signal_realized_drop": None, "threshold_metric": "roc_auc", "threshold_drift_share": 0.3,
        "threshold_estimated_drop": 0.05, "threshold_realized_drop": 0.05, "reference_metric": 0.8,
        "threshold_source": "calibrated",
    }  # fmt: skip
    back = Decision.from_row({**row, "model_version": "1"})
    assert back == Decision(D0, D0 + dt.timedelta(days=7), 1, "retrain", d.reason, fired=("drift", "estimated"))
    bare = Decision(D0, D0, 2, "skip", "skip: nothing").to_row()
    assert bare["fired"] == "" and all(bare[k] is None for k in bare if k.startswith(("signal_", "threshold_")) or k == "reference_metric")
    assert Decision.from_row({"window_start": D0, "window_end": D0, "model_version": 2, "action": "skip", "fired": None}) == Decision(
        D0, D0, 2, "skip", ""
    )


# ------------------------------------------------------------------------------------------------ signals on their bounds
def test_a_window_of_exactly_min_rows_is_judged_one_fewer_is_not():
    assert decide(ONE, AUC, [week(0, rows=100, drift=0.5)], [], running=False).action == "retrain"
    fewer = decide(ONE, AUC, [week(0, rows=99, drift=0.5)], [], running=False)
    assert fewer.action == "skip" and fewer.reason == (
        f"skip: window {D0} to {D0 + dt.timedelta(days=7)} has too few rows to judge (99 < 100)."
    )
    assert fewer.signals == {"drift_share": 0.5, "estimated_drop": pytest.approx(0.01), "realized_drop": None}


def test_a_signal_exactly_at_its_threshold_does_not_fire():
    exact = Thresholds("roc_auc", 0.25, 0.25, 0.25, 0.75)  # 0.75 - 0.5 is 0.25 exactly in binary
    at = decide(ONE, exact, [week(0, drift=0.25, estimated=0.5, realized=0.5, labelled=60)], [], running=False)
    assert at.action == "skip" and at.fired == ()
    assert at.reason.endswith(
        "(weighted drift share 0.250 <= 0.250; estimated roc_auc drop 0.250 <= 0.250; realized roc_auc drop 0.250 <= 0.250)."
    )
    for signal, above in [("drift", {"drift": 0.2500001}), ("estimated", {"estimated": 0.4999999}), ("realized", {"realized": 0.4999999})]:
        d = decide(ONE, exact, [week(0, **{"drift": 0.25, "estimated": 0.5, "realized": 0.5, "labelled": 60, **above})], [], running=False)
        assert d.action == "retrain" and d.fired == (signal,)


def test_the_realized_metric_counts_from_exactly_min_labels():
    quiet = dataclasses.replace(ONE, use_drift=False, use_estimated=False)
    at = decide(quiet, AUC, [week(0, labelled=50, realized=0.7)], [], running=False)
    assert at.action == "retrain" and at.fired == ("realized",) and "realized roc_auc drop 0.100 > 0.050" in at.reason
    below = decide(quiet, AUC, [week(0, labelled=49, realized=0.7)], [], running=False)
    assert below.action == "skip" and "realized roc_auc drop not counted (49 labels < 50)" in below.reason


def test_every_signal_off_or_unavailable_says_so():
    off = Policy(min_rows=100, hysteresis=1, use_drift=False, use_estimated=False, use_realized=False)
    d = decide(off, AUC, [week(0, drift=0.9, estimated=0.1)], [], running=False)
    assert (
        d.reason == f"skip: no signal crossed its threshold in window {D0} to {D0 + dt.timedelta(days=7)} (every signal is switched off)."
    )
    missing = decide(ONE, AUC, [week(0, drift=None, estimated=None, labelled=60)], [], running=False)
    assert missing.reason.endswith(
        "(weighted drift share not available; estimated roc_auc drop not available; realized roc_auc drop not available)."
    )
    no_reference = decide(ONE, dataclasses.replace(AUC, reference_metric=None), [week(0, estimated=0.1)], [], running=False)
    assert no_reference.action == "skip" and no_reference.signals["estimated_drop"] is None


def test_the_estimated_drop_s_noise_floor_is_on_the_window_s_rows_and_the_realized_one_s_on_its_labels():
    """The same window, 10,000 rows and 100 labels, against a floor of k · std · √(1 + n₀/n) (std 0.01, n₀ 400, k 3):
    on its rows 3 · 0.01 · √1.04 = 0.0306, on its labels 3 · 0.01 · √5 = 0.0671."""
    t = Thresholds("roc_auc", 0.3, 0.01, 0.01, 0.8, noise_std=0.01, noise_rows=400, noise_k=3.0)
    policy = Policy(min_rows=100, min_labels=50, hysteresis=2, use_drift=False)
    d = decide(policy, t, [week(0, rows=10_000, labelled=100, estimated=0.76, realized=0.76)], [], running=False)
    assert d.fired == ("estimated",) and "estimated held 1 of 2 windows" in d.reason
    assert "estimated roc_auc drop 0.040 > 0.031" in d.reason and "realized roc_auc drop 0.040 <= 0.067" in d.reason


# ------------------------------------------------------------------------------------------------ hysteresis
def test_hysteresis_counts_only_judged_windows_of_the_version_in_a_row():
    three = Policy(min_rows=100, hysteresis=3, budget=9, budget_days=365)
    crossing = [week(i, estimated=0.7) for i in range(3)]
    d = decide(three, AUC, crossing, [], running=False)
    assert d.action == "retrain" and d.reason.endswith(", held 3 window(s).")
    # a window in the middle with too few rows breaks the run
    broken = [crossing[0], dataclasses.replace(crossing[1], rows=99), crossing[2]]
    d = decide(three, AUC, broken, [], running=False)
    assert d.action == "skip" and "estimated held 1 of 3 windows" in d.reason
    # a longer run than needed is counted up to the need only
    d = decide(three, AUC, [week(i, estimated=0.7) for i in range(6)], [], running=False)
    assert d.action == "retrain"
    # drift and age need a single window whatever the hysteresis; the waiting ones are named with their counts
    mixed = decide(three, AUC, [week(0), week(1, drift=0.5, estimated=0.7)], [], running=False)
    assert mixed.action == "retrain" and mixed.fired == ("drift",)
    waiting = decide(three, AUC, [week(0, estimated=0.7), week(1, estimated=0.7, realized=0.7, labelled=300)], [], running=False)
    assert "(estimated held 2 of 3 windows, realized held 1 of 3 windows; " in waiting.reason


# ------------------------------------------------------------------------------------------------ cooldown, budget, running
def test_the_cooldown_in_days_reason_and_its_version_rule():
    past = [retrain_at(D0 + dt.timedelta(days=7))]
    d = decide(ONE, AUC, [week(1, drift=0.5)], past, running=False)
    assert d.action == "skip" and d.fired == ("drift",)
    assert d.reason == ("skip: cooldown until 2024-01-22 after the retrain for the window ending 2024-01-08 (drift fired in "
                        "window 2024-01-08 to 2024-01-15).")  # fmt: skip
    # another version serves: the retrain's product, out of the cooldown
    assert decide(ONE, AUC, [week(1, version=2, drift=0.5)], past, running=False).action == "retrain"


def test_the_cooldown_in_windows_counts_monitored_windows_strictly_between():
    two = dataclasses.replace(ONE, cooldown_windows=2)
    first = retrain_at(D0 + dt.timedelta(days=7))  # window 0
    skipped = Decision(week(1).window_start, week(1).window_end, 1, "skip", "skip: cooldown")
    d = decide(two, AUC, [week(2, drift=0.5)], [first, skipped], running=False)
    assert d.action == "skip" and d.reason.startswith(
        "skip: cooldown, window 2 of 2 after the retrain for the window starting 2024-01-01 (drift fired in window"
    )
    # decisions of the same window (a re-judged one) count once; the window being judged and later ones do not count
    again = Decision(week(1).window_start, week(1).window_end, 1, "skip", "skip: re-judged")
    now_and_later = [Decision(week(i).window_start, week(i).window_end, 1, "skip", "x") for i in (2, 5)]
    d = decide(two, AUC, [week(2, drift=0.5)], [first, skipped, again, *now_and_later], running=False)
    assert "window 2 of 2" in d.reason
    assert decide(two, AUC, [week(3, drift=0.5)], [first, skipped, Decision(week(2).window_start, week(2).window_end, 1, "skip", "x")],
                  running=False).action == "retrain"  # fmt: skip


def test_the_budget_counts_a_retrain_exactly_budget_days_ago_out_and_the_day_after_in():
    policy = Policy(min_rows=100, hysteresis=1, cooldown_days=0, budget=1, budget_days=30)
    now = week(10, drift=0.5)
    out = retrain_at(now.window_end - dt.timedelta(days=30))
    assert decide(policy, AUC, [now], [out], running=False).action == "retrain"
    within = retrain_at(now.window_end - dt.timedelta(days=29))
    d = decide(policy, AUC, [now], [within], running=False)
    assert d.action == "skip" and d.fired == ("drift",)
    assert d.reason == ("skip: retrain budget exhausted (1 retrains in the last 30 days of data time, since 2024-02-17; budget 1) "
                        "although drift fired in window 2024-03-11 to 2024-03-18.")  # fmt: skip
    # only retrains count, and only those of windows ending by now
    skips = [dataclasses.replace(within, action="skip")]
    assert decide(policy, AUC, [now], skips, running=False).action == "retrain"
    assert decide(policy, AUC, [now], [retrain_at(now.window_end + dt.timedelta(days=1))], running=False).action == "retrain"


def test_a_running_retrain_blocks_with_the_fired_signals_only():
    d = decide(ONE, AUC, [week(0, drift=0.5)], [], running=True)
    assert (
        d.reason
        == f"skip: a retrain is already running (weighted drift share 0.500 > 0.300 in window {D0} to {D0 + dt.timedelta(days=7)})."
    )
    d = decide(ONE, AUC, [week(0, drift=0.5)], [], running=False)
    assert d.reason == f"retrain: weighted drift share 0.500 > 0.300 in window {D0} to {D0 + dt.timedelta(days=7)}, held 1 window(s)."


# ------------------------------------------------------------------------------------------------ age
def test_age_counts_the_version_s_windows_after_the_last_retrain_s_start():
    aged = Policy(min_rows=100, hysteresis=1, use_drift=False, use_estimated=False, cooldown_windows=0, max_age_windows=2)
    d = decide(aged, AUC, [week(0), week(1)], [], running=False)
    assert d.action == "retrain" and d.fired == ("age",)
    assert "age 2 windows >= 2 (served by v1 since it started or the last retrain)" in d.reason
    assert "age 1 of 2 windows" in decide(aged, AUC, [week(0)], [], running=False).reason
    # the retrain's own window does not count, the ones after it do; another version's windows never
    past = [Decision(week(1).window_start, week(1).window_end, 1, "retrain", "retrain: age")]
    assert "age 1 of 2 windows" in decide(aged, AUC, [week(0), week(1), week(2)], past, running=False).reason
    assert "age 1 of 2 windows" in decide(aged, AUC, [week(0, version=2), week(1)], [], running=False).reason
    # the follow-up limit is the smaller of the two
    follow = dataclasses.replace(aged, follow_up_windows=5)
    d = decide(follow, AUC, [week(2, version=2)], past, running=False)
    assert "age 1 of 2 windows" in d.reason
    d = decide(follow, AUC, [week(2, version=2), week(3, version=2)], past, running=False)
    assert "age 2 windows >= 2 (served by v2 since a retrain's product started: the world may still be changing)" in d.reason
    # a window with too few rows is not judged, age or not
    assert decide(aged, AUC, [week(0), week(1, rows=99)], [], running=False).action == "skip"


# ------------------------------------------------------------------------------------------------ the paced budget
def test_next_paced_retrain_is_none_when_off_or_nothing_spent():
    paced = Policy(budget=4, budget_days=120, budget_burst=2)
    assert next_paced_retrain(paced, []) is None
    assert next_paced_retrain(dataclasses.replace(paced, budget_burst=None), [D0]) is None
    # one retrain leaves a token of the two: the next may come at once
    assert next_paced_retrain(paced, [D0]) == D0
    # two on the same day: the next token is 30 days later (4 per 120 days)
    assert next_paced_retrain(paced, [D0, D0]) == D0 + dt.timedelta(days=30)
    # the order given does not matter
    assert next_paced_retrain(paced, [D0 + dt.timedelta(days=7), D0]) == next_paced_retrain(paced, [D0, D0 + dt.timedelta(days=7)])


def _bucket(budget: int, budget_days: int, burst: int, days: list[int]) -> int:
    """The token bucket written out day by day: the first day from which one more retrain keeps the tokens >= 0."""
    tokens, last = Fraction(burst), None
    for day in sorted(days):
        if last is not None:
            tokens = min(Fraction(burst), tokens + Fraction((day - last) * budget, budget_days))
        tokens -= 1
        last = day
    day = last
    while tokens + Fraction((day - last) * budget, budget_days) < 1:
        day += 1
    return day


@settings(max_examples=150, deadline=None)
@given(
    budget=st.integers(1, 8), budget_days=st.integers(1, 150), burst=st.integers(1, 5),
    days=st.lists(st.integers(0, 400), min_size=1, max_size=12),
)  # fmt: skip
def test_next_paced_retrain_is_the_first_day_the_bucket_holds_a_whole_token(budget, budget_days, burst, days):
    policy = Policy(budget=budget, budget_days=budget_days, budget_burst=burst)
    expected = D0 + dt.timedelta(days=_bucket(budget, budget_days, burst, days))
    assert next_paced_retrain(policy, [D0 + dt.timedelta(days=d) for d in days]) == expected


# ------------------------------------------------------------------------------------------------ second round of survivors
def test_a_reference_noise_measured_on_one_row_still_sets_a_floor():
    t = Thresholds("roc_auc", 0.3, 0.01, 0.01, 0.8, noise_std=0.01, noise_rows=1, noise_k=3.0)
    assert t.noise_floor(1) == pytest.approx(3 * 0.01 * 2**0.5)


def test_an_empty_history_is_refused_with_its_message():
    with pytest.raises(ValueError, match=r"^decide needs at least one monitoring window in history$"):
        decide(ONE, AUC, [], [], running=False)


def test_age_fires_on_a_window_of_exactly_min_rows():
    aged = Policy(min_rows=100, hysteresis=1, use_drift=False, use_estimated=False, max_age_windows=1)
    d = decide(aged, AUC, [week(0, rows=100)], [], running=False)
    assert d.action == "retrain" and d.fired == ("age",)


def test_a_window_re_judged_after_its_own_retrain_does_not_retrain_again():
    """The sensor may judge a window again (a late label, a re-run): the retrain already decided for that very window
    counts for the cooldown and the budget, so the second verdict is a skip, never a second retrain."""
    first = decide(ONE, AUC, [week(0, drift=0.5)], [], running=False)
    assert first.action == "retrain"
    again = decide(ONE, AUC, [week(0, drift=0.5)], [first], running=False)
    assert again.action == "skip" and again.reason.startswith(f"skip: cooldown until {D0 + dt.timedelta(days=21)}")
    in_windows = dataclasses.replace(ONE, cooldown_windows=1)
    assert decide(in_windows, AUC, [week(0, drift=0.5)], [first], running=False).reason.startswith("skip: cooldown, window 1 of 1")
    no_cooldown = dataclasses.replace(ONE, cooldown_days=0, budget=1, budget_days=30)
    assert decide(no_cooldown, AUC, [week(0, drift=0.5)], [first], running=False).reason.startswith(
        "skip: retrain budget exhausted (1 retrains"
    )


def test_two_signals_holding_are_named_together_in_every_guardrail_s_reason():
    both = [week(3, drift=0.5, estimated=0.7)]
    span = f"window {week(3).window_start} to {week(3).window_end}"
    fired_notes = "weighted drift share 0.500 > 0.300; estimated roc_auc drop 0.100 > 0.050"
    d = decide(ONE, AUC, both, [], running=False)
    assert d.reason == f"retrain: {fired_notes} in {span}, held 1 window(s)." and d.fired == ("drift", "estimated")
    assert decide(ONE, AUC, both, [], running=True).reason == f"skip: a retrain is already running ({fired_notes} in {span})."
    past = [retrain_at(week(2).window_end)]
    d = decide(ONE, AUC, both, past, running=False)
    assert d.reason.endswith(f"(drift, estimated fired in {span}).") and d.fired == ("drift", "estimated")
    d = decide(dataclasses.replace(ONE, cooldown_windows=1), AUC, both, past, running=False)
    assert d.reason.endswith(f"(drift, estimated fired in {span}).") and d.fired == ("drift", "estimated")
    d = decide(dataclasses.replace(ONE, cooldown_days=0, budget=1), AUC, both, past, running=False)
    assert d.reason.endswith(f"although drift, estimated fired in {span}.") and d.fired == ("drift", "estimated")
    d = decide(dataclasses.replace(ONE, cooldown_days=0, budget_burst=1), AUC, both, past, running=False)
    assert d.reason.startswith("skip: retrain budget paced (1 retrains in a burst, then 9 per 365 days of data time)")
    assert d.reason.endswith(f"although drift, estimated fired in {span}.") and d.fired == ("drift", "estimated")


def test_hysteresis_not_met_quotes_every_note():
    two = Policy(min_rows=100, min_labels=50, hysteresis=2)
    d = decide(two, AUC, [week(0, estimated=0.7, realized=0.79, labelled=60)], [], running=False)
    assert d.reason == (
        f"skip: signals crossed but hysteresis not yet met in window {D0} to {D0 + dt.timedelta(days=7)} (estimated held 1 of 2 "
        "windows; weighted drift share 0.100 <= 0.300; estimated roc_auc drop 0.100 > 0.050; realized roc_auc drop 0.010 <= 0.050)."
    )


# ------------------------------------------------------------------------------------------------ a window judged again
def test_a_window_judged_again_keeps_the_retrain_it_asked_for_and_never_asks_after_a_later_window():
    from aiflow.monitoring.policy import rejudged

    start = week(3).window_start
    asked = Decision(start, start + dt.timedelta(days=7), 1, "retrain", "retrain: age 5 windows >= 5.", fired=("age",))
    now_skip = Decision(start, start + dt.timedelta(days=7), 1, "skip", "skip: no signal crossed its threshold.")
    now_retrain = Decision(start, start + dt.timedelta(days=7), 1, "retrain", "retrain: realized roc_auc drop 0.2 > 0.1.", fired=("realized",))
    # asked before: still asked, the numbers of now, both reasons; the signals of now, or of before when none fires now
    got = rejudged(now_skip, asked, None, labelled=312)
    assert (got.action, got.fired) == ("retrain", ("age",))
    assert got.reason == "retrain: age 5 windows >= 5. Re-judged with 312 labels: skip: no signal crossed its threshold."
    assert rejudged(now_retrain, asked, week(5).window_start, labelled=0).fired == ("realized",)  # a later retrain changes nothing
    # asked only now, after a later window retrained: superseded, naming that window
    later = week(4).window_start
    got = rejudged(now_retrain, now_skip, later, labelled=312)
    assert (got.action, got.fired) == ("skip", ("realized",))
    assert got.reason == f"skip: superseded: the later window {later} already retrained (retrain: realized roc_auc drop 0.2 > 0.1.)"
    # otherwise the verdict of now stands, unchanged
    assert rejudged(now_retrain, now_skip, None, labelled=312) is now_retrain
    assert rejudged(now_skip, None, later, labelled=312) is now_skip
