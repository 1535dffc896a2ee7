"""The scikit-learn family's small-batch path (aiflow/models/sklearn_fast.py) gives bit for bit the estimator's own
``predict_proba`` / ``predict``: classification and regression, with and without categorical columns, on rows with
missing values and categories the model never saw, for every batch size it takes and the sizes it hands back."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from aiflow.models.families import categorical_mask, sklearn_predict
from aiflow.models.sklearn_fast import SMALL_BATCH, SklearnPredictor

CATS, CARDS, NUMS = ["cat_carrier", "cat_origin", "cal_hour"], [12, 5, 25], ["num_distance", "num_temp", "num_seats"]


def data(n: int, seed: int, unseen: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cat, num, y) with a signal in both kinds of columns; ``unseen``: codes the fit never saw, NaN and inf numerics."""
    rng = np.random.default_rng(seed)
    cat = np.stack([rng.integers(1, c - 2, n) for c in CARDS], axis=1).astype(np.int64)  # codes c-2, c-1 and 0 unseen in the fit
    num = rng.normal(size=(n, len(NUMS))).astype(np.float32)
    num[rng.random(n) < 0.2, 1] = np.nan  # the trees learn a direction for missing values
    y = ((cat[:, 0] % 3 == 0) ^ (num[:, 0] > 0.3) ^ (cat[:, 1] == 2)).astype(np.float64)
    if unseen:
        cat[::3, 0] = CARDS[0] - 1  # never seen
        cat[1::4, 1] = 0  # the encoder's UNKNOWN code, never seen in training
        cat[2::5, 2] = CARDS[2] - 2
        num[::7, :] = np.nan
        num[3::11, 2] = np.inf
        num[5::13, 0] = -1e30
    return cat, num, y


def fit(problem_type: str, categorical: bool = True):
    cat, num, y = data(3000, 1)
    mask = categorical_mask(CATS, CARDS, NUMS) if categorical else None
    common = {"categorical_features": mask, "random_state": 3, "max_iter": 40}
    if problem_type == "classification":
        return HistGradientBoostingClassifier(**common).fit(np.hstack([cat, num]).astype(np.float32), y)
    return HistGradientBoostingRegressor(**common).fit(np.hstack([cat, num]).astype(np.float32), y * 10 + num[:, 2].clip(-3, 3))


@pytest.fixture(scope="module", params=[("classification", True), ("regression", True), ("classification", False), ("regression", False)],
                ids=["classification", "regression", "classification-no-categorical", "regression-no-categorical"])  # fmt: skip
def fitted(request):
    problem_type, categorical = request.param
    return problem_type, fit(problem_type, categorical)


def test_the_compiled_path_equals_the_estimator_bit_for_bit(fitted):
    problem_type, model = fitted
    predictor = SklearnPredictor(model, problem_type, sklearn_predict)
    assert predictor.compiled  # the shape scikit-learn builds for this project's models is the one compiled
    cat, num, _ = data(SMALL_BATCH + 400, 2, unseen=True)
    for size in (1, 2, 7, 65, 256, SMALL_BATCH):
        for start in range(0, 400, max(size, 5)):
            c, x = cat[start : start + size], num[start : start + size]
            assert np.array_equal(predictor(c, x), sklearn_predict(model, c, x, problem_type)), (size, start)
    one = predictor(cat[:1], num[:1])
    assert one.dtype == np.float64 and one.shape == (1,)


def test_unknown_categories_and_missing_values_take_the_estimators_branches(fitted):
    """Rows that differ only in an unseen category (or a NaN) are scored as the estimator scores them, and differently
    from the seen value they replace (the trees split on these columns: a wrong code would show)."""
    problem_type, model = fitted
    predictor = SklearnPredictor(model, problem_type, sklearn_predict)
    cat, num, _ = data(64, 4)
    unseen, missing = cat.copy(), num.copy()
    unseen[:, 0], unseen[:, 1] = CARDS[0] - 1, 0
    missing[:, 0] = np.nan
    for c, x in ((unseen, num), (cat, missing)):
        ours = np.concatenate([predictor(c[i : i + 1], x[i : i + 1]) for i in range(64)])
        assert np.array_equal(ours, sklearn_predict(model, c, x, problem_type))
        assert not np.array_equal(ours, sklearn_predict(model, cat, num, problem_type))


def test_a_full_micro_batch_of_the_server_takes_the_compiled_path():
    """The server scores up to ``max_batch_records`` records in one call (256 by default): under load its batches are
    that large, and they must not fall back to the estimator's slower path (it did at 64 rows)."""
    from aiflow.serving.online import ServeConfig

    largest = next(f.default for f in dataclasses.fields(ServeConfig) if f.name == "max_batch_records")
    assert largest <= SMALL_BATCH
    model, calls = fit("classification"), []
    predictor = SklearnPredictor(model, "classification", lambda *args: calls.append(args) or sklearn_predict(*args))
    cat, num, _ = data(largest, 6, unseen=True)
    assert np.array_equal(predictor(cat, num), sklearn_predict(model, cat, num, "classification")) and not calls


def test_large_batches_and_other_shapes_go_to_the_estimator():
    model = fit("classification")
    calls = []

    def full(m, cat, num, problem_type):
        calls.append(len(cat))
        return sklearn_predict(m, cat, num, problem_type)

    predictor = SklearnPredictor(model, "classification", full)
    cat, num, _ = data(SMALL_BATCH + 1, 5, unseen=True)
    assert np.array_equal(predictor(cat, num), sklearn_predict(model, cat, num, "classification")) and calls == [SMALL_BATCH + 1]
    predictor(cat[:3], num[:3])
    assert calls == [SMALL_BATCH + 1]  # a small batch did not call the estimator
    with pytest.raises(ValueError):  # a wrong input width: the estimator's own error
        predictor(cat[:1, :2], num[:1])

    three = HistGradientBoostingClassifier(max_iter=5, categorical_features=categorical_mask(CATS, CARDS, NUMS)).fit(
        np.hstack([cat, num]).astype(np.float32), np.arange(len(cat)) % 3
    )
    multi = SklearnPredictor(three, "classification", sklearn_predict)
    assert not multi.compiled and np.array_equal(multi(cat[:2], num[:2]), sklearn_predict(three, cat[:2], num[:2], "classification"))
    assert not SklearnPredictor(model, "regression", sklearn_predict).compiled  # the problem type disagrees with the estimator
