"""The scikit-learn family and the naive reference, on the same split the network trains on.

* :func:`fit_sklearn` fits histogram gradient boosting on (a sample of) the training rows and judges
  it on every validation row. Its inputs come from the one encoder (:func:`aiflow.data.encoding.to_arrays`,
  through :class:`~aiflow.train.data.FeatureData`), laid out by :func:`aiflow.models.families.sklearn_matrix`,
  exactly as :class:`~aiflow.models.bundle.LoadedModel` lays them out when the stored model scores.
* :func:`naive_reference` predicts one constant for every row: the training base rate (classification)
  or the training mean (regression). Every candidate must beat it (the ``beats_baseline`` gate).
"""

from __future__ import annotations

import numpy as np

from aiflow.evaluation.metrics import compute_metrics
from aiflow.models.families import categorical_mask, sklearn_matrix, sklearn_predict
from aiflow.train.data import FeatureData


def fit_sklearn(
    data: FeatureData, problem_type: str, *, max_rows: int, seed: int, hyper: dict | None = None, batch_size: int = 65_536
):
    """Fit on up to ``max_rows`` sampled training rows; return the model and its metrics on every validation row.

    Args:
        hyper: HistGradientBoosting hyperparameters (``TrainParams.sklearn_params()``); defaults when None.

    Raises:
        ValueError: the sampled training rows hold a single class (classification).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    train = data.sample("train", max_rows, seed)
    inputs = data.inputs
    common = {"categorical_features": categorical_mask(inputs.categorical, inputs.cardinalities, inputs.numeric), "random_state": seed}
    common.update(hyper or {})
    if problem_type == "classification" and len(np.unique(train.y)) < 2:
        raise ValueError(f"the scikit-learn model's {len(train)} training rows hold a single class: cannot fit a classifier")
    model = HistGradientBoostingClassifier(**common) if problem_type == "classification" else HistGradientBoostingRegressor(**common)
    model.fit(sklearn_matrix(train.cat, train.num), train.y)
    ys, predictions = [], []
    for batch in data.batches("valid", batch_size):
        predictions.append(sklearn_predict(model, batch.cat, batch.num, problem_type))
        ys.append(batch.y)
    return model, compute_metrics(np.concatenate(ys), np.concatenate(predictions), problem_type)


def naive_reference(data: FeatureData, problem_type: str, *, batch_size: int = 65_536) -> dict[str, float]:
    """Metrics on every validation row of one constant: the training base rate or mean."""
    constant, _ = data.target_stats()
    y = np.concatenate([batch.y for batch in data.batches("valid", batch_size)])
    return compute_metrics(y, np.full(len(y), constant, dtype=np.float64), problem_type)
