"""Direct loss estimation (DLE, after NannyML): a regression model's error, estimated before the labels come back.

On the reference's valid rows (which the model did not train on) two small gradient-boosted models learn the
model's squared and absolute error from the same inputs the drift is measured on, plus the model's prediction.
On a window of served records they predict each record's loss; the window's estimated RMSE is the square root of
the mean estimated squared error, its estimated MAE the mean estimated absolute error. Like CBPE for
classification it sees a change of the inputs (rows moving where the model errs more), not a change of the
concept itself: only the labels see that.

scikit-learn's ``HistGradientBoostingRegressor`` does the learning (it handles missing values and categories);
what is written here is only the frame-to-matrix step shared by fitting and estimating.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.ensemble import HistGradientBoostingRegressor

#: Below this many labelled reference rows there is no estimator (the estimate stays null).
MIN_ROWS = 200
MAX_CATEGORIES = 250
PARAMS = {"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 15, "min_samples_leaf": 20, "random_state": 0}


@dataclass(frozen=True)
class LossEstimator:
    """The fitted squared- and absolute-error models of one model version."""

    columns: dict[str, str]  # input column -> "numeric" | "categorical" (the reference's drift kinds)
    categories: dict[str, list[str]]
    squared: HistGradientBoostingRegressor
    absolute: HistGradientBoostingRegressor

    @classmethod
    def fit(cls, reference: pl.DataFrame, columns: Mapping[str, str], *, prediction: str = "prediction", label: str = "label") -> LossEstimator | None:
        """Fit on ``reference`` rows with the inputs ``columns``, the model's ``prediction`` and the true ``label``; None
        with fewer than :data:`MIN_ROWS` labelled rows."""
        rows = reference.filter(pl.col(label).is_not_null() & pl.col(prediction).is_not_null())
        if rows.height < MIN_ROWS:
            return None
        categories = {  # the most frequent values (the model bins at most 255 categories; the rest read as missing)
            c: sorted(str(v) for v in rows[c].drop_nulls().cast(pl.String).value_counts(sort=True)[c].head(MAX_CATEGORIES).to_list())
            for c, k in columns.items() if k == "categorical"
        }  # fmt: skip
        x = _matrix(rows, dict(columns), categories, prediction)
        error = (rows[label] - rows[prediction]).to_numpy().astype(np.float64)
        mask = [k == "categorical" for k in columns.values()] + [False]
        squared = HistGradientBoostingRegressor(categorical_features=mask or None, **PARAMS).fit(x, error**2)
        absolute = HistGradientBoostingRegressor(categorical_features=mask or None, **PARAMS).fit(x, np.abs(error))
        return cls(dict(columns), categories, squared, absolute)

    def losses(self, rows: pl.DataFrame, *, prediction: str = "prediction") -> tuple[np.ndarray, np.ndarray]:
        """Each row's estimated squared and absolute error (clipped at 0)."""
        x = _matrix(rows, self.columns, self.categories, prediction)
        return np.clip(self.squared.predict(x), 0, None), np.clip(self.absolute.predict(x), 0, None)

    def estimate(self, rows: pl.DataFrame, *, prediction: str = "prediction") -> dict[str, float | None]:
        """``estimated_rmse`` and ``estimated_mae`` of ``rows`` (None without rows)."""
        if not rows.height:
            return {"estimated_rmse": None, "estimated_mae": None}
        squared, absolute = self.losses(rows, prediction=prediction)
        return {"estimated_rmse": float(np.sqrt(squared.mean())), "estimated_mae": float(absolute.mean())}


def _matrix(rows: pl.DataFrame, columns: dict[str, str], categories: dict[str, list[str]], prediction: str) -> np.ndarray:
    """Inputs as a float matrix: numbers as they are, categories as their index among the reference's (unseen or
    missing: NaN, which the model routes on its own), and the prediction last."""
    out = []
    for column, kind in columns.items():
        values = rows[column]
        if kind == "categorical":
            known = {v: i for i, v in enumerate(categories[column])}
            out.append(np.array([known.get(str(v), np.nan) if v is not None else np.nan for v in values.to_list()], dtype=np.float64))
        else:
            out.append(values.cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy())
    out.append(rows[prediction].cast(pl.Float64).fill_null(np.nan).to_numpy())
    return np.column_stack(out)
