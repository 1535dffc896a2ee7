"""Paired bootstrap evidence (aiflow.evaluation.paired): values against sklearn and numpy, bounds that cover the truth,
no verdict on one class, and the sample of a large window keeping the bounds around the whole rows' gain."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import mean_absolute_error, roc_auc_score

from aiflow.evaluation.paired import paired_evidence


def _world(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = (x + rng.normal(size=n) > 0).astype(float)
    return rng, x, y


def test_roc_auc_matches_sklearn_and_a_better_model_wins_with_confidence():
    rng, x, y = _world(3000)
    weak = x + rng.normal(scale=2, size=x.size)
    strong = np.round(x, 1)  # ties, averaged as sklearn does
    e = paired_evidence(y, weak, strong, "roc_auc")
    assert e.champion == pytest.approx(roc_auc_score(y, weak)) and e.challenger == pytest.approx(roc_auc_score(y, strong))
    assert e.gain == pytest.approx(e.challenger - e.champion)
    assert 0 < e.low < e.gain < e.high


def test_equal_models_give_bounds_around_zero():
    rng, x, y = _world(2000, 3)
    e = paired_evidence(y, x, x + rng.normal(scale=1e-3, size=x.size), "roc_auc")
    assert e.low < 0 < e.high or abs(e.gain) < 1e-3


def test_errors_are_relative_reductions():
    rng, x, _ = _world(2000, 4)
    y = 3 * x + rng.normal(size=x.size)
    e = paired_evidence(y, 2.0 * x, 3.0 * x, "mae")
    a, b = mean_absolute_error(y, 2.0 * x), mean_absolute_error(y, 3.0 * x)
    assert e.gain == pytest.approx((a - b) / a) and e.low > 0


def test_one_class_or_too_few_rows_has_no_verdict():
    assert paired_evidence(np.ones(50), np.arange(50.0), np.arange(50.0)[::-1], "roc_auc").gain is None
    assert paired_evidence([1.0], [0.5], [0.4], "rmse").gain is None
    with pytest.raises(ValueError, match="equal lengths"):
        paired_evidence([1.0, 0.0], [0.5], [0.4, 0.3], "roc_auc")


def test_non_finite_rows_are_dropped():
    _, x, y = _world(500, 5)
    x2 = x.copy()
    x2[:10] = np.nan
    e = paired_evidence(y, x2, x, "roc_auc")
    assert e.rows == 490


def test_a_large_window_is_sampled_around_the_whole_rows_gain():
    rng, x, y = _world(60_000, 6)
    e = paired_evidence(y, x + rng.normal(size=x.size), x, "roc_auc", max_rows=5_000)
    assert e.rows == 60_000 and e.low <= e.gain <= e.high


@settings(max_examples=25, deadline=None)
@given(st.integers(20, 400), st.integers(0, 10_000), st.sampled_from(["roc_auc", "accuracy", "rmse", "mae"]))
def test_bounds_always_hold_the_gain(n, seed, metric):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    e = paired_evidence(y, rng.random(n), rng.random(n), metric, resamples=100)
    if e.gain is not None and e.low is not None:
        assert e.low <= e.high and np.isfinite([e.low, e.high]).all()
