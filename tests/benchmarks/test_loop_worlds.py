"""Scope: benchmarks.loop_worlds on reduced worlds — the shipped loop's verdicts (no promotion without drift, abrupt drift
detected, nothing trained on a broken column) and the retrospective oracle (the DP against brute force, and no policy
below it)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiflow.monitoring.challenger import ChallengerPolicy
from benchmarks import loop_policies as lp
from benchmarks.loop_matrix import broken_columns, build_matrix, oracle, schedule_cost
from benchmarks.loop_worlds import measure, runs_of
from benchmarks.worlds import REGRESSION, make_world

SMALL = {"windows": 14, "rows": 600}
COST = ChallengerPolicy().cost


_MATRICES: dict = {}


def matrix(kind: str, seed: int = 0, task: str = "classification"):
    """One reduced world's matrix, built once for the module (the calibrated thresholds are kept on it)."""
    key = (kind, seed, task)
    if key not in _MATRICES:
        _MATRICES[key] = build_matrix(make_world(kind, task, **SMALL), seed)
    return _MATRICES[key]


@pytest.fixture(scope="module")
def abrupt():
    return matrix("abrupt_concept")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_default_never_promotes_without_drift(seed):
    m = matrix("no_drift", seed)
    run = lp.default(m)
    assert run.promotions == []
    assert run.serving == [m.first] * (m.windows - m.first)


def test_the_default_detects_abrupt_concept_drift_within_two_windows(abrupt):
    run = lp.default(abrupt)
    got = measure(abrupt, run, COST)
    assert abrupt.world.change_at == 7
    assert got["detection_delay_windows"] is not None and got["detection_delay_windows"] <= 2
    # before the change the age signal may ask (a challenger), but nothing is promoted on a world that did not change
    assert run.promotions and all(first > abrupt.world.change_at for first, _ in run.promotions), run.promotions


def test_under_late_labels_a_window_is_judged_when_it_completes_and_again_when_its_labels_arrive():
    """As the loop's partitions are: a window is decided when it completes (age and the guardrails count without labels)
    and re-judged when its labels arrive. The change is found on a re-judged window; the product of the change is
    followed up on the first window it serves, before that window's labels are back (judging only labelled windows
    followed it up two windows later: the quick world's cost 0.646 -> -0.016, live ROC AUC 0.725 -> 0.760)."""
    from benchmarks.loop_worlds import QUICK

    m = build_matrix(make_world("sparse_late_labels", windows=QUICK["windows"], rows=QUICK["rows"]), 0)
    delay, change = m.world.label_delay, m.world.change_at
    assert delay == 2
    run = lp.default(m)
    found = [v for v, u in run.asked if u == v - delay and u >= change]
    assert found and found[0] - change <= 2 + delay, run.log
    after = [first for first, _model in run.promotions if first > found[0]]
    assert after and (after[0], after[0]) in run.asked, (run.asked, run.promotions)  # judged on completion, no labels yet
    assert measure(m, run, COST)["detection_delay_windows"] <= 2 + delay


def test_abrupt_concept_drift_in_regression_is_detected_too():
    m = matrix("abrupt_concept", task=REGRESSION)
    got = measure(m, lp.default(m), COST)
    assert got["detection_delay_windows"] is not None and got["detection_delay_windows"] <= 2


@pytest.mark.parametrize(("kind", "task"), [("no_drift", "classification"), ("abrupt_concept", "classification"),
                                           ("broken_feature", "classification"), ("abrupt_concept", REGRESSION)])  # fmt: skip
def test_no_policy_costs_less_than_the_oracle(kind, task):
    m = matrix(kind, task=task)  # the worlds the other tests build (their thresholds are calibrated once)
    runs = runs_of(m, lp.default_policy(), ChallengerPolicy())
    costs = {r.policy: schedule_cost(m.loss, r.serving, m.first, COST) for r in runs}
    assert costs["oracle"] == pytest.approx(oracle(m.loss, [m.trainable(k) for k in range(m.windows)], m.first, COST)[0])
    assert all(costs["oracle"] <= c + 1e-12 for c in costs.values()), costs


def test_the_broken_feature_world_alerts_and_trains_nothing_on_broken_data():
    m = matrix("broken_feature")
    world = m.world
    assert min(m.broken) == world.broken_from and all(cols == [0] for cols in m.broken.values())
    for run in runs_of(m, lp.default_policy(), ChallengerPolicy()):
        got = measure(m, run, COST)
        assert got["trained_on_broken"] == 0, run.policy
        assert got["first_alert_window"] == world.broken_from
    every = lp.schedule(m, 1)  # every window wants a retrain: each one whose data holds the broken window is blocked
    assert every.blocked and all(v + 1 in m.blocked for v in every.blocked)


def test_the_column_check_finds_constant_and_null_columns():
    X = np.random.default_rng(0).standard_normal((50, 4))
    X[:, 1] = 3.0
    X[7, 3] = np.nan
    assert broken_columns(X) == [1, 3]


def _brute(loss, available, first, cost):
    """Every serving schedule: model ``first`` first, then at each window any available model no older and not newer
    than the window."""
    T = loss.shape[1]
    best = np.inf

    def walk(w, serving, total):
        nonlocal best
        if w == T:
            best = min(best, total)
            return
        m = serving
        walk(w + 1, m, total + loss[m, w])
        for m2 in range(m + 1, w + 1):
            if available[m2]:
                walk(w + 1, m2, total + cost + loss[m2, w])

    walk(first + 1, first, loss[first, first])
    return best


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(2, 7),
    first=st.integers(0, 2),
    seed=st.integers(0, 10_000),
    cost=st.sampled_from([0.0, 0.002, 0.05, 0.3]),
)
def test_the_oracle_dp_is_the_brute_force_optimum(T, first, seed, cost):
    T = max(T, first + 1)
    rng = np.random.default_rng(seed)
    loss = rng.normal(0, 0.1, (T, T))
    available = rng.random(T) < 0.7
    available[first] = True
    total, serving = oracle(loss, available, first, cost)
    assert total == pytest.approx(_brute(loss, available, first, cost))
    assert total == pytest.approx(schedule_cost(loss, serving, first, cost))
    assert serving[0] == first and all(a <= b <= first + i + 1 for i, (a, b) in enumerate(zip(serving, serving[1:], strict=False)))
    assert all(available[s] for s in serving)


def test_a_concept_that_comes_back_brings_its_earlier_champion_back():
    """The seasonal world (the concept alternates every 4 windows): the champion trained on the concept that returns
    is reinstated from the pool on the retrain's held-out rows, and the stream costs less than without the pool (the
    quick worlds: 0.83 -> 0.44 with the pool alone)."""
    from benchmarks.worlds import SEASON

    m = matrix("seasonal")
    run = lp.default(m)
    assert run.reinstated, run.log
    for first, model in run.reinstated:
        assert model < first - 1 and (first, model) in run.promotions
        concept = [w // SEASON % 2 for w in m.train_windows[model]]
        assert max(set(concept), key=concept.count) == first // SEASON % 2, (first, model, m.train_windows[model])
    without = lp.default(m, cp=ChallengerPolicy(pool=0))
    assert without.reinstated == []
    assert schedule_cost(m.loss, run.serving, m.first, COST) < schedule_cost(m.loss, without.serving, m.first, COST)
