"""Scope: the retrain policy's decisions on the newest monitoring window: each signal firing with its numbers in the
reason, each guardrail (too few rows, too few labels, hysteresis, cooldown, budget, a retrain running) blocking with
the right reason, determinism on data time, a regression policy on RMSE, and decisions surviving a table row."""

from __future__ import annotations

import dataclasses
import datetime as dt
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiflow.monitoring.policy import Decision, Policy, Thresholds, WindowSignals, decide, fallback_thresholds, metric_drop

D0 = dt.date(2024, 1, 1)
POLICY = Policy(min_rows=100, min_labels=50, hysteresis=2, cooldown_days=14, budget=2, budget_days=60)
AUC = Thresholds("roc_auc", drift_share=0.3, estimated_drop=0.05, realized_drop=0.05, reference_metric=0.8, source="calibrated", chunks=8)


def window(i: int, *, version: int = 1, rows: int = 1000, labelled: int = 0, drift: float | None = 0.1,
           estimated: float | None = 0.79, realized: float | None = None, days: int = 7) -> WindowSignals:  # fmt: skip
    """The i-th weekly window after D0."""
    start = D0 + dt.timedelta(days=days * i)
    return WindowSignals(start, start + dt.timedelta(days=days), version, rows, labelled, drift, estimated, realized)


def retrain_at(end: dt.date) -> Decision:
    return Decision(end - dt.timedelta(days=7), end, 1, "retrain", "retrain: earlier")


def test_drift_over_its_threshold_for_two_windows_retrains_with_its_numbers():
    d = decide(POLICY, AUC, [window(0, drift=0.5), window(1, drift=0.42)], [], running=False)
    assert d.action == "retrain"
    assert d.fired == ("drift",)
    assert "weighted drift share 0.420 > 0.300" in d.reason
    assert d.signals["drift_share"] == 0.42 and d.signals["estimated_drop"] == pytest.approx(0.01)
    assert (d.window_start, d.window_end, d.model_version, d.thresholds) == (D0 + dt.timedelta(days=7), D0 + dt.timedelta(days=14), 1, AUC)


def test_estimated_and_realized_drops_fire_together():
    history = [window(i, estimated=0.70, realized=0.72, labelled=80) for i in range(2)]
    d = decide(POLICY, AUC, history, [], running=False)
    assert d.action == "retrain" and d.fired == ("estimated", "realized")
    assert "estimated roc_auc drop 0.100 > 0.050" in d.reason and "realized roc_auc drop 0.080 > 0.050" in d.reason


def test_below_every_threshold_skips_saying_where_each_signal_stands():
    d = decide(POLICY, AUC, [window(0), window(1)], [], running=False)
    assert d.action == "skip" and d.fired == ()
    assert "no signal crossed" in d.reason and "weighted drift share 0.100 <= 0.300" in d.reason
    assert "estimated roc_auc drop 0.010 <= 0.050" in d.reason


def test_realized_metric_needs_enough_labels():
    history = [window(i, estimated=None, realized=0.6, labelled=10) for i in range(2)]
    d = decide(POLICY, AUC, history, [], running=False)
    assert d.action == "skip" and "realized roc_auc drop not counted (10 labels < 50)" in d.reason


def test_too_few_rows_skip_with_the_counts():
    d = decide(POLICY, AUC, [window(0, drift=0.9), window(1, rows=60, drift=0.9)], [], running=False)
    assert d.action == "skip" and "too few rows to judge (60 < 100)" in d.reason


def test_hysteresis_waits_for_windows_in_a_row_of_the_same_model_version():
    d = decide(POLICY, AUC, [window(0), window(1, estimated=0.7)], [], running=False)
    assert d.action == "skip" and "estimated held 1 of 2 windows" in d.reason and d.fired == ("estimated",)
    # the previous window crossed too, but under another model version: it does not count
    d = decide(POLICY, AUC, [window(0, version=1, estimated=0.7), window(1, version=2, estimated=0.7)], [], running=False)
    assert d.action == "skip" and "1 of 2" in d.reason
    three = Policy(min_rows=100, hysteresis=3)
    d = decide(three, AUC, [window(0), window(1, estimated=0.7), window(2, estimated=0.7)], [], running=False)
    assert d.action == "skip" and "estimated held 2 of 3 windows" in d.reason


def test_drift_is_news_at_its_onset_it_needs_no_hysteresis():
    d = decide(POLICY, AUC, [window(0), window(1, drift=0.5)], [], running=False)
    assert d.action == "retrain" and d.fired == ("drift",)


def test_cooldown_blocks_until_its_date_then_lets_through():
    history = [window(4, drift=0.5), window(5, drift=0.5)]  # ends D0 + 42
    past = [retrain_at(D0 + dt.timedelta(days=35))]
    d = decide(POLICY, AUC, history, past, running=False)
    assert d.action == "skip" and "cooldown until 2024-02-19" in d.reason  # 35 + 14 days after D0
    later = [window(6, drift=0.5), window(7, drift=0.5)]  # ends D0 + 56 >= the cooldown end
    assert decide(POLICY, AUC, later, past, running=False).action == "retrain"


def test_a_window_ending_exactly_cooldown_days_after_the_retrain_is_out_of_the_cooldown_the_day_before_is_in():
    retrained = D0 + dt.timedelta(days=35)
    past = [retrain_at(retrained)]

    def ending(days_after: int) -> list[WindowSignals]:
        end = retrained + dt.timedelta(days=days_after)
        return [WindowSignals(end - dt.timedelta(days=7), end, 1, 1000, 0, 0.5, 0.79, None)]

    on_the_day = decide(POLICY, AUC, ending(POLICY.cooldown_days), past, running=False)
    assert on_the_day.action == "retrain" and on_the_day.window_end == dt.date(2024, 2, 19)
    day_before = decide(POLICY, AUC, ending(POLICY.cooldown_days - 1), past, running=False)
    assert day_before.action == "skip" and "cooldown until 2024-02-19" in day_before.reason


def test_budget_blocks_when_k_retrains_fell_in_the_last_d_days():
    history = [window(10, drift=0.5), window(11, drift=0.5)]  # ends D0 + 84
    past = [retrain_at(D0 + dt.timedelta(days=30)), retrain_at(D0 + dt.timedelta(days=60))]
    d = decide(POLICY, AUC, history, past, running=False)
    assert d.action == "skip" and "budget exhausted (2 retrains in the last 60 days" in d.reason
    older = [retrain_at(D0 + dt.timedelta(days=20)), retrain_at(D0 + dt.timedelta(days=60))]  # one left the span
    assert decide(POLICY, AUC, history, older, running=False).action == "retrain"


def test_a_running_retrain_is_not_started_twice():
    d = decide(POLICY, AUC, [window(0, drift=0.5), window(1, drift=0.5)], [], running=True)
    assert d.action == "skip" and "a retrain is already running" in d.reason and d.fired == ("drift",)


def test_switched_off_signals_never_fire():
    quiet = Policy(min_rows=100, hysteresis=1, use_drift=False, use_estimated=False)
    d = decide(quiet, AUC, [window(0, drift=0.9, estimated=0.5)], [], running=False)
    assert d.action == "skip" and "drift" not in d.reason


def test_same_history_gives_the_same_decision_and_future_decisions_are_ignored():
    history = [window(4, drift=0.5), window(5, drift=0.5)]
    future = [retrain_at(D0 + dt.timedelta(days=100))]  # a decision about later data (a replay): not counted
    first = decide(POLICY, AUC, history, future, running=False)
    assert first == decide(POLICY, AUC, list(history), list(future), running=False)
    assert first.action == "retrain"


def test_regression_policy_judges_the_relative_rmse_increase():
    rmse = Thresholds("rmse", 0.3, 0.1, 0.1, reference_metric=2.0, source="calibrated", chunks=8)
    policy = Policy(min_rows=100, min_labels=50, hysteresis=1, use_drift=False)
    worse = decide(policy, rmse, [window(0, estimated=None, realized=2.3, labelled=60)], [], running=False)
    assert worse.action == "retrain" and "realized rmse drop 0.150 > 0.100" in worse.reason
    fine = decide(policy, rmse, [window(0, estimated=None, realized=2.1, labelled=60)], [], running=False)
    assert fine.action == "skip" and "realized rmse drop 0.050 <= 0.100" in fine.reason
    assert metric_drop("rmse", 2.0, 1.5) == pytest.approx(-0.25)  # better than the reference: negative drop


def test_decisions_survive_a_table_row_and_feed_the_cooldown():
    d = decide(POLICY, AUC, [window(0, drift=0.5), window(1, drift=0.5)], [], running=False)
    row = d.to_row()
    assert row["action"] == "retrain" and row["fired"] == "drift" and row["threshold_source"] == "calibrated"
    back = Decision.from_row(row)
    assert (back.window_end, back.action, back.fired) == (d.window_end, "retrain", ("drift",))
    nxt = decide(POLICY, AUC, [window(1, drift=0.5), window(2, drift=0.5)], [back], running=False)
    assert nxt.action == "skip" and "cooldown" in nxt.reason
    assert Thresholds.from_dict(AUC.to_dict()) == AUC


def test_fallback_thresholds_and_bad_policies():
    t = fallback_thresholds(POLICY, "rmse", 3.0)
    assert (t.source, t.chunks, t.realized_drop, t.reference_metric) == ("fallback", 0, POLICY.fallback_relative_increase, 3.0)
    assert fallback_thresholds(POLICY, "roc_auc").estimated_drop == POLICY.fallback_drop
    with pytest.raises(ValueError, match="'hysteresis' must be >= 1"):
        Policy(hysteresis=0)
    with pytest.raises(ValueError, match="'metric'"):
        Thresholds("f2", 0.3, 0.1, 0.1, None)
    with pytest.raises(ValueError, match="at least one monitoring window"):
        decide(POLICY, AUC, [], [], running=False)


def month(i: int, **kw) -> WindowSignals:
    """The i-th calendar month of 2024 as a monitoring window."""
    start = dt.date(2024, 1 + i, 1)
    end = dt.date(2024 + (i + 1) // 12, (i + 1) % 12 + 1, 1) - dt.timedelta(days=1)
    return WindowSignals(start, end, kw.pop("version", 1), 1000, 0, kw.pop("drift", 0.5), 0.79, None)


def test_a_cooldown_in_windows_blocks_the_next_month_where_28_days_blocked_nothing():
    days_only = Policy(min_rows=100, hysteresis=1, cooldown_days=28, budget=9, budget_days=365)
    retrained = decide(days_only, AUC, [month(0)], [], running=False)
    assert retrained.action == "retrain"
    # the hole: February ends 29 days after January, so a 28-day cooldown lets the next month retrain at once
    assert decide(days_only, AUC, [month(1)], [retrained], running=False).action == "retrain"
    windows = Policy(min_rows=100, hysteresis=1, cooldown_days=28, cooldown_windows=1, budget=9, budget_days=365)
    blocked = decide(windows, AUC, [month(1)], [retrained], running=False)
    assert blocked.action == "skip" and "cooldown, window 1 of 1 after the retrain for the window starting 2024-01-01" in blocked.reason
    feb = Decision(month(1).window_start, month(1).window_end, 1, "skip", blocked.reason)
    assert decide(windows, AUC, [month(2)], [retrained, feb], running=False).action == "retrain"


def test_the_cooldown_bound_in_windows_is_exact():
    two = Policy(min_rows=100, hysteresis=1, cooldown_windows=2, budget=9, budget_days=365)
    first = decide(two, AUC, [window(0, drift=0.5)], [], running=False)
    past = [first]
    verdicts = []
    for i in (1, 2, 3):
        d = decide(two, AUC, [window(i, drift=0.5)], past, running=False)
        verdicts.append(d.action)
        past.append(d)
    assert verdicts == ["skip", "skip", "retrain"]  # windows 1 and 2 of 2 blocked, the third after the retrain fires


@pytest.mark.parametrize(
    ("window", "days", "expected"), [("weekly", 28, 4), ("monthly", 28, 1), ("daily", 28, 28), ("weekly", 5, 1), ("monthly", 0, 0), ("monthly", 61, 3)]
)
def test_the_spec_converts_cooldown_days_to_windows(window, days, expected):
    from aiflow.spec import parse_spec
    from tests.aiflow.tiny import TINY

    spec = parse_spec({**TINY, "monitoring": {"window": window, "retrain": {"cooldown_days": days}}}, "tiny")
    assert spec.monitoring.cooldown_windows() == expected
    explicit = parse_spec({**TINY, "monitoring": {"window": window, "retrain": {"cooldown_days": days, "cooldown_windows": 2}}}, "tiny")
    assert explicit.monitoring.cooldown_windows() == 2


def test_a_metric_threshold_is_never_below_the_window_s_sampling_noise():
    """A calibration that came out at 0.012 (its 8 chunks happened to agree) would fire on a 0.04 wobble of a window with
    650 labels. The floor holds it: the drop compares the reference's metric (bootstrap std 0.005 on 6,500 rows) with the
    window's (0.005 · √10 on 650 rows), so k=3 gives 3 · 0.005 · √11 = 0.050; with 10x the labels, 3 · 0.005 · √2 = 0.021
    lets it through."""
    tight = Thresholds("roc_auc", 0.3, 0.012, 0.012, 0.8, "calibrated", 8, noise_std=0.005, noise_rows=6500, noise_k=3.0)
    policy = Policy(min_rows=100, min_labels=50, use_drift=False, use_estimated=False, hysteresis=1, budget=9, budget_days=365)
    few = decide(policy, tight, [window(0, realized=0.76, labelled=650)], [], running=False)
    assert few.action == "skip" and "realized roc_auc drop 0.040 <= 0.050" in few.reason
    many = decide(policy, tight, [window(0, realized=0.76, labelled=6500)], [], running=False)
    assert many.action == "retrain" and "realized roc_auc drop 0.040 > 0.021" in many.reason
    assert tight.noise_floor(650) == pytest.approx(3 * 0.005 * 11**0.5) and Thresholds("roc_auc", 0.3, 0.01, 0.01, 0.8).noise_floor(650) == 0.0
    # however many rows the window has, the reference's own noise stays: never below k · std
    assert tight.noise_floor(10**9) == pytest.approx(3 * 0.005, rel=1e-4)


def test_a_reference_of_a_few_dozen_rows_cannot_make_noise_look_like_a_drop():
    """Sparse labels leave a model 73 held-out labelled rows: too few to calibrate on (fixed fallback 0.03), and its
    reference metric is itself noisy (bootstrap std 0.04). A window of 300 labels 0.076 below it is within the noise of
    the two estimates (floor 3 · 0.04 · √(1 + 73/300) = 0.134); a changed concept (0.54 below) is not."""
    fallback = Thresholds("roc_auc", 0.3, 0.03, 0.03, 0.86, "fallback", 0, noise_std=0.04, noise_rows=73, noise_k=3.0)
    policy = Policy(min_rows=100, min_labels=200, use_drift=False, use_estimated=False, hysteresis=1, budget=9, budget_days=365)
    wobble = decide(policy, fallback, [window(0, realized=0.784, labelled=300)], [], running=False)
    assert wobble.action == "skip" and "realized roc_auc drop 0.076 <= 0.134" in wobble.reason
    change = decide(policy, fallback, [window(0, realized=0.32, labelled=300)], [], running=False)
    assert change.action == "retrain" and "realized roc_auc drop 0.540 > 0.134" in change.reason
    # read back from a thresholds row saved before the floor existed: no floor, no error
    old = Thresholds.from_dict({"metric": "roc_auc", "drift_share": 0.3, "estimated_drop": 0.05, "realized_drop": 0.05,
                                "reference_metric": 0.8, "noise_std": None, "noise_rows": None})  # fmt: skip
    assert old.noise_floor(100) == 0.0


def test_the_bootstrap_noise_shrinks_as_the_square_root_of_the_rows_and_is_seeded():
    import numpy as np
    import polars as pl

    from aiflow.monitoring.calibration import bootstrap_std

    rng = np.random.default_rng(1)

    def rows(n: int) -> pl.DataFrame:
        y = rng.integers(0, 2, n)
        return pl.DataFrame({"label": y.astype(float), "prediction": np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)})

    small, large = rows(400), rows(6400)
    s400, s6400 = bootstrap_std(small, "classification", "roc_auc", 0.5), bootstrap_std(large, "classification", "roc_auc", 0.5)
    assert 3.0 < s400 / s6400 < 5.5  # sqrt(16) = 4
    assert bootstrap_std(small, "classification", "roc_auc", 0.5) == s400  # the same reference gives the same threshold
    assert bootstrap_std(small.head(20), "classification", "roc_auc", 0.5) is None


def test_age_starts_a_retrain_once_the_champion_served_long_enough_since_it_started_or_the_last_retrain():
    import dataclasses as dc

    from aiflow.monitoring.policy import Policy, Thresholds, WindowSignals, decide

    t = Thresholds("roc_auc", 0.5, 0.05, 0.05, 0.75, "calibrated", 8)
    policy = Policy(min_rows=10, use_drift=False, use_estimated=False, use_realized=True, cooldown_windows=1, max_age_windows=3)
    start = dt.date(2024, 1, 1)
    weeks = [WindowSignals(start + dt.timedelta(days=7 * i), start + dt.timedelta(days=7 * i + 6), 1, 100, 100, realized_metric=0.75)
             for i in range(8)]  # fmt: skip
    past, actions = [], []
    for i in range(len(weeks)):
        d = decide(policy, t, weeks[: i + 1], past, running=False)
        past.append(d)
        actions.append(d.action)
    # a calm champion: the third window it served asks whether a fresh model does better, then three windows later again
    assert actions == ["skip", "skip", "retrain", "skip", "skip", "retrain", "skip", "skip"]
    assert past[2].fired == ("age",) and "age 3 windows >= 3" in past[2].reason
    assert "age 2 of 3 windows" in past[4].reason
    # a new version starts its age afresh; off when max_age_windows is None
    assert decide(policy, t, [dc.replace(w, model_version=2) for w in weeks[5:7]], past[:5], running=False).action == "skip"
    assert decide(dc.replace(policy, max_age_windows=None), t, weeks, [], running=False).action == "skip"


#: Follow-ups: metric signals that never fire here (the realized metric equals the reference), age after 5 windows,
#: a follow-up after 1, no cooldown.
FOLLOW_T = Thresholds("roc_auc", 0.5, 0.05, 0.05, 0.75, "calibrated", 8)
FOLLOW = Policy(min_rows=10, use_drift=False, use_estimated=False, use_realized=True, cooldown_windows=0, max_age_windows=5,
                follow_up_windows=1)  # fmt: skip


def follow_week(i: int, version: int) -> WindowSignals:
    start = D0 + dt.timedelta(days=7 * i)
    return WindowSignals(start, start + dt.timedelta(days=6), version, 100, 100, realized_metric=0.75)


def test_a_retrain_s_product_is_challenged_again_until_a_challenger_fails_to_win():
    t, policy, week = FOLLOW_T, FOLLOW, follow_week
    retrain = Decision(week(1, 1).window_start, week(1, 1).window_end, 1, "retrain", "retrain: realized drop")
    # v2 came out of the retrain at window 1 and serves from window 2: it is challenged at once
    d = decide(policy, t, [week(2, 2)], [retrain], running=False)
    assert d.action == "retrain" and d.fired == ("age",) and "retrain's product" in d.reason
    # its challenger lost (v2 still serves after the retrain at window 2): back to the normal age limit
    again = Decision(week(2, 2).window_start, week(2, 2).window_end, 2, "retrain", "retrain: age")
    d = decide(policy, t, [week(2, 2), week(3, 2)], [retrain, again], running=False)
    assert d.action == "skip" and "age 1 of 5 windows" in d.reason
    # the first model is no retrain's product: the normal limit; and off, the follow-up waits for the normal limit
    assert decide(policy, t, [week(0, 1)], [], running=False).action == "skip"
    off = dataclasses.replace(policy, follow_up_windows=None)
    assert decide(off, t, [week(2, 2)], [retrain], running=False).action == "skip"


def test_the_product_of_a_retrain_fired_by_age_alone_waits_the_normal_age_limit():
    """A follow-up answers a change a signal saw: after an age challenger won nothing was seen changing (on the demo
    year: 2 retrains fewer and a better worst week; benchmarks/README.md)."""
    t, policy, week = FOLLOW_T, FOLLOW, follow_week

    def retrain(i: int, version: int, *fired: str) -> Decision:
        w = week(i, version)
        return Decision(w.window_start, w.window_end, version, "retrain", f"retrain: {', '.join(fired)}", fired=fired)

    aged = retrain(1, 1, "age")
    d = decide(policy, t, [week(2, 2)], [aged], running=False)
    assert d.action == "skip" and "age 1 of 5 windows" in d.reason
    assert decide(policy, t, [week(i, 2) for i in range(2, 7)], [aged], running=False).action == "retrain"  # the normal limit
    # a drift or metric signal (with age or not) is a change: its product is followed up at once
    for fired in (("realized",), ("drift",), ("estimated", "age")):
        d = decide(policy, t, [week(2, 2)], [retrain(1, 1, *fired)], running=False)
        assert d.action == "retrain" and "retrain's product" in d.reason, fired
    # the follow-up of a change is itself a change: its product is followed up too, until a challenger fails to win
    chain = [retrain(1, 1, "realized"), retrain(2, 2, "age")]
    d = decide(policy, t, [week(3, 3)], chain, running=False)
    assert d.action == "retrain" and "retrain's product" in d.reason
    # an age retrain on the product of an age retrain is no follow-up: nothing changed in either
    plain = [aged, *(Decision(week(i, 2).window_start, week(i, 2).window_end, 2, "skip", "skip") for i in range(2, 6)),
             retrain(6, 2, "age")]  # fmt: skip
    d = decide(policy, t, [week(7, 3)], plain, running=False)
    assert d.action == "skip" and "age 1 of 5 windows" in d.reason


def test_the_cooldown_ends_once_the_retrain_s_product_serves():
    """The cooldown keeps a retrain from judging windows still served by the version it was decided on. Once its
    product serves, that hole is closed: the product's follow-up may challenge it at once (measured on the abrupt
    concept world through the real loop: under the 28-day default a product trained across the change served 4
    windows more at ROC AUC 0.71-0.74, where its follow-up won at 0.83-0.86)."""
    policy = Policy(min_rows=100, hysteresis=1, cooldown_windows=4, budget=9, budget_days=365, use_drift=False,
                    use_estimated=False, max_age_windows=5, follow_up_windows=1)  # fmt: skip
    retrained = decide(policy, AUC, [window(0, version=1, realized=0.5, labelled=1000)], [], running=False)
    assert retrained.action == "retrain"
    still_old = decide(policy, AUC, [window(1, version=1)], [retrained], running=False)
    assert still_old.action == "skip" and "cooldown, window 1 of 4" in still_old.reason
    product = decide(policy, AUC, [window(1, version=1), window(2, version=2)], [retrained, still_old], running=False)
    assert product.action == "retrain" and product.fired == ("age",) and "a retrain's product" in product.reason


# ------------------------------------------------------------------------------------------------ paced budget
PACED = Policy(min_rows=100, hysteresis=1, cooldown_days=0, budget=4, budget_days=120, budget_burst=2, use_estimated=False)


def test_the_paced_budget_allows_a_burst_then_one_retrain_per_budget_days_over_budget():
    """4 per 120 days, bursts of 2: after retrains at days 7 and 14 the bucket holds 1 - 1 + 7/30 tokens; the next
    whole token is there 23 days later (day 37), exactly: the window ending on day 36 is paced, day 37's retrains."""
    past = [retrain_at(D0 + dt.timedelta(days=7)), retrain_at(D0 + dt.timedelta(days=14))]

    def ending(day: int) -> WindowSignals:
        return WindowSignals(D0 + dt.timedelta(days=day - 7), D0 + dt.timedelta(days=day), 1, 1000, 0, 0.5, None, None)

    early = decide(PACED, AUC, [ending(36)], past, running=False)
    assert early.action == "skip"
    assert early.reason.startswith("skip: retrain budget paced (2 retrains in a burst, then 4 per 120 days of data time): "
                                   "the next retrain may come from the window ending 2024-02-07")  # fmt: skip
    assert early.fired == ("drift",)
    assert decide(PACED, AUC, [ending(37)], past, running=False).action == "retrain"
    # without pacing only the budget counts (2 of 4 spent): day 36 retrains
    assert decide(dataclasses.replace(PACED, budget_burst=None), AUC, [ending(36)], past, running=False).action == "retrain"
    # the bucket refills to the burst and no further: 200 quiet days later, two in a row again, not three
    late = [*past, retrain_at(D0 + dt.timedelta(days=214)), retrain_at(D0 + dt.timedelta(days=221))]
    assert decide(PACED, AUC, [ending(228)], late, running=False).action == "skip"
    assert decide(PACED, AUC, [ending(228)], late[:3], running=False).action == "retrain"
    with pytest.raises(ValueError, match="budget_burst"):
        Policy(budget_burst=0)


@settings(max_examples=80, deadline=None)
@given(
    budget=st.integers(1, 6), budget_days=st.integers(7, 120), burst=st.integers(1, 4),
    signals=st.lists(st.booleans(), min_size=1, max_size=120),
)  # fmt: skip
def test_paced_retrains_keep_the_token_bucket_bound_over_every_span_and_are_refused_only_when_one_more_breaks_it(
    budget, budget_days, burst, signals
):
    """Daily windows, a signal on the days drawn, decided one after another as the sensor does. A retrain happens
    exactly when, with it, every span of days [a, b] holds at most burst + (b - a) · budget / budget_days retrains
    (the token bucket's bound) and the last budget_days hold at most budget."""
    policy = Policy(min_rows=100, hysteresis=1, cooldown_days=0, budget=budget, budget_days=budget_days, budget_burst=burst,
                    use_estimated=False)  # fmt: skip
    past: list[Decision] = []
    for day, on in enumerate(signals, start=1):
        s = WindowSignals(D0 + dt.timedelta(days=day - 1), D0 + dt.timedelta(days=day), 1, 1000, 0, 0.5 if on else 0.1, None, None)
        d = decide(policy, AUC, [s], past, running=False)
        ends = [p.window_end for p in past if p.action == "retrain"]
        paced = all(1 + sum(a <= e for e in ends) <= burst + Fraction((s.window_end - a).days * budget, budget_days) for a in ends)
        budgeted = sum(e > s.window_end - dt.timedelta(days=budget_days) for e in ends) < budget
        assert (d.action == "retrain") == (on and paced and budgeted), (d.reason, ends)
        past.append(d)


def test_a_drop_decisive_times_its_threshold_fires_without_waiting_for_hysteresis():
    """A concept that flips back every few windows was served wrong a whole window more by the second window of
    hysteresis (the seasonal world: cost 0.83 -> 0.64 with this alone). Exactly on 3x the threshold fires."""
    policy = dataclasses.replace(POLICY, use_drift=False, use_estimated=False)  # hysteresis 2, decisive_drop 3 (default)
    assert policy.decisive_drop == 3.0
    exact = dataclasses.replace(AUC, realized_drop=0.125, reference_metric=0.75)  # binary fractions: 0.75 - 0.375 == 3 * 0.125
    on = decide(policy, exact, [window(0, realized=0.375, labelled=80)], [], running=False)
    assert on.action == "retrain", on.reason
    assert "decisive: at least 3 times its threshold, no hysteresis" in on.reason
    below = decide(policy, exact, [window(0, realized=0.376, labelled=80)], [], running=False)
    assert below.action == "skip" and "realized held 1 of 2 windows" in below.reason
    off = dataclasses.replace(policy, decisive_drop=None)
    assert decide(off, AUC, [window(0, realized=0.2, labelled=80)], [], running=False).action == "skip"
    # the second window of a smaller drop still retrains on hysteresis, saying so
    held = decide(policy, AUC, [window(0, realized=0.7, labelled=80), window(1, realized=0.7, labelled=80)], [], running=False)
    assert held.action == "retrain" and "held 2 window(s)" in held.reason


def test_a_decisive_drop_is_judged_against_the_noise_floor_not_only_the_threshold():
    """With few labelled rows the floor (the window's sampling noise) is above the calibrated threshold: 3x the floor."""
    noisy = dataclasses.replace(AUC, noise_std=0.02, noise_rows=400)  # floor on 100 rows: 3 * 0.02 * sqrt(5) = 0.134
    policy = dataclasses.replace(POLICY, use_drift=False, use_estimated=False)
    floor = noisy.noise_floor(100)
    assert floor == pytest.approx(0.1342, abs=1e-4)
    assert decide(policy, noisy, [window(0, realized=0.8 - 0.2, labelled=100)], [], running=False).action == "skip"  # 0.2 < 3 x floor
    assert decide(policy, noisy, [window(0, realized=0.8 - 0.41, labelled=100)], [], running=False).action == "retrain"


def test_decisive_drop_must_be_above_one():
    with pytest.raises(ValueError, match="'decisive_drop' must be > 1"):
        Policy(decisive_drop=1.0)


def test_a_challenger_retired_after_the_retrain_ends_its_cooldown_one_retired_before_it_does_not():
    policy = dataclasses.replace(POLICY, cooldown_windows=4, use_estimated=False)
    history = [window(5, drift=0.5), window(6, drift=0.5)]
    retrain = Decision(D0 + dt.timedelta(days=28), D0 + dt.timedelta(days=35), 1, "retrain", "retrain: age")  # window 4
    past = [retrain, Decision(D0 + dt.timedelta(days=35), D0 + dt.timedelta(days=42), 1, "skip", "skip")]
    assert decide(policy, AUC, history, past, running=False).action == "skip"  # window 2 of 4 of the cooldown
    retired_at = [D0 + dt.timedelta(days=42)]  # the challenger lost at window 5 (its end)
    d = decide(policy, AUC, history, past, running=False, retired=retired_at)
    assert d.action == "retrain", d.reason
    for stale in ([D0 + dt.timedelta(days=35)], [D0 + dt.timedelta(days=56)]):  # on the retrain's own window; after now
        assert decide(policy, AUC, history, past, running=False, retired=stale).action == "skip"
