"""Direct loss estimation for regression (aiflow.monitoring.loss_estimation): equal to the same two scikit-learn
models fitted by hand, close to the realized RMSE / MAE on windows of another mix, higher where the model errs more,
and safe with unseen categories, missing values and a reference too small to learn from."""

import numpy as np
import polars as pl
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from aiflow.monitoring.loss_estimation import PARAMS, LossEstimator

COLUMNS = {"size_m2": "numeric", "district": "categorical"}


def frame(n: int, share_noisy: float, seed: int) -> pl.DataFrame:
    """Prices in two districts; the model (prediction = 3 * size) errs far more in the noisy one ("old town")."""
    rng = np.random.default_rng(seed)
    noisy = rng.random(n) < share_noisy
    size = rng.uniform(20, 120, n)
    price = 3 * size + rng.normal(0, 1, n) * np.where(noisy, 30.0, 5.0)
    return pl.DataFrame({"size_m2": size, "district": np.where(noisy, "old town", "harbour"), "prediction": 3 * size, "label": price})


def test_the_estimate_is_the_two_models_fitted_by_hand():
    reference, window = frame(3000, 0.3, 0), frame(800, 0.6, 1)
    est = LossEstimator.fit(reference, COLUMNS)
    codes = {"harbour": 0.0, "old town": 1.0}

    def matrix(f: pl.DataFrame) -> np.ndarray:
        return np.column_stack([f["size_m2"].to_numpy(), [codes[d] for d in f["district"]], f["prediction"].to_numpy()])

    error = (reference["label"] - reference["prediction"]).to_numpy()
    sq = HistGradientBoostingRegressor(categorical_features=[False, True, False], **PARAMS).fit(matrix(reference), error**2)
    ab = HistGradientBoostingRegressor(categorical_features=[False, True, False], **PARAMS).fit(matrix(reference), np.abs(error))
    got = est.estimate(window)
    assert got["estimated_rmse"] == pytest.approx(np.sqrt(np.clip(sq.predict(matrix(window)), 0, None).mean()), rel=1e-12)
    assert got["estimated_mae"] == pytest.approx(np.clip(ab.predict(matrix(window)), 0, None).mean(), rel=1e-12)


@pytest.mark.parametrize("share_noisy", [0.1, 0.5, 0.9])
def test_the_estimate_follows_the_realized_error_before_any_label(share_noisy):
    est = LossEstimator.fit(frame(4000, 0.3, 0), COLUMNS)
    window = frame(2000, share_noisy, 7)
    error = (window["label"] - window["prediction"]).to_numpy()
    got = est.estimate(window.drop("label"))
    assert got["estimated_rmse"] == pytest.approx(np.sqrt(np.mean(error**2)), rel=0.12)
    assert got["estimated_mae"] == pytest.approx(np.mean(np.abs(error)), rel=0.12)


def test_more_rows_where_the_model_errs_give_a_higher_estimate():
    est = LossEstimator.fit(frame(4000, 0.3, 0), COLUMNS)
    assert est.estimate(frame(1000, 0.8, 3))["estimated_rmse"] > 2 * est.estimate(frame(1000, 0.05, 4))["estimated_rmse"]


def test_unseen_categories_missing_values_and_a_tiny_reference():
    est = LossEstimator.fit(frame(1000, 0.3, 0), COLUMNS)
    odd = frame(10, 0.5, 5).with_columns(pl.lit("new district").alias("district"), pl.lit(None, pl.Float64).alias("size_m2"))
    squared, absolute = est.losses(odd)
    assert np.isfinite(squared).all() and (squared >= 0).all() and (absolute >= 0).all()
    assert est.estimate(odd.head(0)) == {"estimated_rmse": None, "estimated_mae": None}
    assert LossEstimator.fit(frame(100, 0.3, 0), COLUMNS) is None
