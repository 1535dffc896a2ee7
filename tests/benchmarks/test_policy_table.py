"""Scope: the pure parts of benchmarks.policy_table — the split a week's model trains on, the replay's deployment lag, schedule and drift verdicts, and a table row (no lake, no training)."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from types import SimpleNamespace

import numpy as np
import pytest

from aiflow.monitoring.challenger import challenger_policy_of
from aiflow.monitoring.monitor import policy_of
from aiflow.monitoring.policy import Thresholds, WindowSignals
from aiflow.spec import demo_spec_path, load_spec, parse_spec
from benchmarks.policy_table import LOOP_START, Candidate, Measured, Outcome, candidates, longest_stale_run, replay, week_split
from tests.aiflow.tiny import TINY

D = dt.date


@pytest.fixture(scope="module")
def spec():
    return load_spec(demo_spec_path())


def test_week_split_resolves_the_demo_relative_split_at_the_sunday_before(spec):
    split = week_split(spec, LOOP_START)
    assert (split.kind, split.train_from, split.valid_from, split.test_from) == ("fixed", D(2013, 1, 1), D(2013, 3, 4), D(2013, 3, 18))
    later = week_split(spec, D(2013, 9, 2))  # data through Sunday 1 September: test = the 14 days ending then
    assert (later.train_from, later.valid_from, later.test_from) == (D(2013, 6, 4), D(2013, 8, 5), D(2013, 8, 19))


def test_week_split_follows_another_spec_s_day_counts():
    data = copy.deepcopy(TINY)
    data["split"] = {"kind": "relative", "train_days": 10, "valid_days": 3, "test_days": 2}
    split = week_split(parse_spec(data, "tiny relative"), D(2013, 2, 4))
    # newest date Sunday 3 February: test 2-3 Feb, valid 30 Jan - 1 Feb, train the 10 days before
    assert (split.train_from, split.valid_from, split.test_from) == (D(2013, 1, 20), D(2013, 1, 30), D(2013, 2, 2))


class FakeModels:
    """Every model starts at ROC AUC 0.75 on its own week and loses 0.02 a week after (a drifting world)."""

    def __init__(self):
        self.asked: list[dt.date] = []

    def get(self, week: dt.date):
        self.asked.append(week)
        thresholds = Thresholds(
            "roc_auc", drift_share=0.5, estimated_drop=0.05, realized_drop=0.05, reference_metric=0.75, source="calibrated", chunks=8
        )
        return SimpleNamespace(week=week, version=(week - LOOP_START).days // 7 + 1, thresholds=thresholds)


class FakeWindows:
    def __init__(self, weeks: int = 10):
        self.starts = [LOOP_START + dt.timedelta(days=7 * i) for i in range(weeks)]

    def measure(self, start: dt.date, served) -> Measured:
        realized = 0.75 - 0.02 * ((start - served.week).days // 7)
        signals = WindowSignals(start, start + dt.timedelta(days=6), served.version, rows=1000, labelled=1000, drift_share=0.4,
                                estimated_metric=0.75, realized_metric=realized)  # fmt: skip
        return Measured(signals, realized)


def test_a_retrain_deploys_the_next_week_s_model_from_the_next_window_under_the_guardrails(spec):
    realized_only = dataclasses.replace(policy_of(spec), use_drift=False, use_estimated=False, use_realized=True, max_age_windows=None, follow_up_windows=None)
    models = FakeModels()
    outcome = replay(Candidate("realized only", realized_only), models, FakeWindows(), spec)
    # the drop passes 0.05 at three weeks old and holds a second window (hysteresis 2): retrain at the 5th window;
    # the next one fires again 4 weeks later, past the 28-day cooldown
    assert outcome.retrains == [D(2013, 4, 29), D(2013, 6, 3)]
    assert [w["model_week"] for w in outcome.windows] == [LOOP_START] * 5 + [D(2013, 5, 6)] * 5
    assert models.asked == [LOOP_START, D(2013, 5, 6)]  # the last window's retrain has no window left to serve: not trained


def test_the_monthly_schedule_retrains_at_each_month_s_first_window_but_the_first_model_s(spec):
    outcome = replay(Candidate("monthly", None, schedule=True), FakeModels(), FakeWindows(), spec)
    assert outcome.retrains == [D(2013, 5, 6), D(2013, 6, 3)]
    assert [w["model_week"] for w in outcome.windows[5:7]] == [LOOP_START, D(2013, 5, 13)]


def test_drift_is_judged_by_the_calibrated_threshold_unless_a_fixed_one_is_given(spec):
    by_name = {c.name: c for c in candidates(spec)}
    calibrated = replay(by_name["drift only"], FakeModels(), FakeWindows(), spec)
    fixed = replay(by_name["drift only, fixed threshold 0.3 (not calibrated)"], FakeModels(), FakeWindows(), spec)
    assert not any(w["drift_fired"] for w in calibrated.windows) and calibrated.retrains == []  # 0.4 <= calibrated 0.5
    assert all(w["drift_fired"] for w in fixed.windows)  # 0.4 > 0.3 every window
    assert fixed.retrains[0] == D(2013, 4, 1)  # drift is news at once (no hysteresis)


def test_a_table_row_weights_the_mean_by_rows_and_names_the_worst_window():
    windows = [
        {"window_start": D(2013, 4, 1), "rows": 100, "roc_auc": 0.6, "drift_fired": True, "action": "retrain"},
        {"window_start": D(2013, 4, 8), "rows": 300, "roc_auc": 0.8, "drift_fired": False, "action": "skip"},
        {"window_start": D(2013, 4, 15), "rows": 300, "roc_auc": None, "drift_fired": False, "action": "skip"},
    ]
    row = Outcome(Candidate("x", None), windows).row()
    assert row["mean ROC AUC"] == pytest.approx(0.75)  # (100 * 0.6 + 300 * 0.8) / 400, the unscored window left out
    assert row["worst window ROC AUC"] == "0.6000 (04-01)"
    assert (row["retrains"], row["retrain windows"], row["drift fired"]) == (1, "04-01", "33%")


def test_the_schedule_adds_its_retrains_to_the_sensor_s(spec):
    realized_only = dataclasses.replace(policy_of(spec), use_drift=False, use_estimated=False, use_realized=True, max_age_windows=None, follow_up_windows=None)
    outcome = replay(Candidate("realized + monthly", realized_only, schedule=True), FakeModels(), FakeWindows(), spec)
    # the sensor at 29 April (as alone); the schedule on 6 May and 3 June, its models served from the week after
    assert outcome.retrains == [D(2013, 4, 29), D(2013, 5, 6), D(2013, 6, 3)]
    assert [w["reason"] for w in outcome.windows if w["action"] == "retrain"][1:] == ["monthly schedule"] * 2
    assert [w["model_week"] for w in outcome.windows][4:7] == [LOOP_START, D(2013, 5, 6), D(2013, 5, 13)]


class ShadowWindows(FakeWindows):
    """FakeWindows with rows: labels alternate; a model ``good`` from its week on scores them perfectly, else at random."""

    def __init__(self, good_from: dt.date | None, weeks: int = 10):
        super().__init__(weeks)
        self.good_from = good_from

    def labels(self, start):
        return np.tile([0.0, 1.0], 300)

    def scores(self, start, served):
        rng = np.random.default_rng(served.version * 100 + start.toordinal() % 97)
        if self.good_from is not None and served.week >= self.good_from:
            return self.labels(start) * 0.8 + rng.random(600) * 0.2
        return rng.random(600)

    def news_share(self, start, served):
        return 0.4


def test_the_shipped_loop_promotes_a_challenger_only_on_evidence(spec):
    realized = dataclasses.replace(policy_of(spec), use_drift=False, use_estimated=False, use_realized=True, max_age_windows=None, follow_up_windows=None)
    shadow = challenger_policy_of(spec)
    # fresh models are better: the first retrain (29 April) is promoted at once on its offline rows
    better = replay(Candidate("shipped", realized, shadow=shadow, news=True), FakeModels(), ShadowWindows(D(2013, 5, 6)), spec)
    assert better.retrains[0] == D(2013, 4, 29) and better.promotions[0] == D(2013, 4, 29)
    assert better.windows[5]["model_week"] == D(2013, 5, 6)
    # fresh models are no better: every challenger is retired on live evidence, the first model serves throughout
    same = replay(Candidate("shipped", realized, shadow=shadow, news=True), FakeModels(), ShadowWindows(None), spec)
    assert same.retrains and same.promotions == []
    assert {w["model_week"] for w in same.windows} == {LOOP_START}
    assert any(w["challenger"] and w["challenger"].startswith("retire") for w in same.windows)


def test_the_longest_run_below_a_fresh_model_counts_labelled_windows_in_a_row_beyond_the_gap():
    days = [D(2013, 4, 1) + dt.timedelta(days=7 * i) for i in range(7)]
    served = [0.60, 0.60, 0.60, 0.76, None, 0.60, 0.60]
    windows = [{"window_start": d, "rows": 100, "roc_auc": v, "drift_fired": False, "action": "skip"} for d, v in zip(days, served, strict=True)]
    fresh = dict(zip(days, [0.66, 0.70, 0.651, 0.80, 0.9, 0.7, 0.64], strict=True))
    # gaps 0.06, 0.10, 0.051 (a run of 3 from 04-01), 0.04, an unlabelled window, 0.10 and 0.04
    assert longest_stale_run(windows, fresh) == (3, D(2013, 4, 1))
    assert longest_stale_run(windows, fresh, gap=0.08) == (1, D(2013, 4, 8))
    assert longest_stale_run(windows, {d: 0.5 for d in days}) == (0, None)
    row = Outcome(Candidate("x", None), windows, fresh).row()
    assert row["longest run > 0.05 below fresh"] == "3 (from 04-01)"
