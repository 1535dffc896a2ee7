"""The scikit-learn baseline: histogram gradient boosting on the same training rows, judged on the same
validation rows. Only its metrics are kept; the model is not persisted."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from aiflow.data.features import CAT
from aiflow.evaluation.metrics import compute_metrics
from aiflow.train.data import FeatureData

#: HistGradientBoosting takes categorical codes below its bin count; larger vocabularies go in as ordinal
#: codes (the vocabulary is ordered by frequency, so the code is a frequency rank).
MAX_CATEGORIES = 255


def _matrix(cat: np.ndarray, num: np.ndarray) -> np.ndarray:
    return np.hstack([cat.astype(np.float32), num]) if cat.size or num.size else np.zeros((len(cat), 0), np.float32)


def fit_baseline(data: FeatureData, problem_type: str, *, max_rows: int, seed: int, batch_size: int = 65_536) -> dict[str, float]:
    """Fit on up to ``max_rows`` sampled training rows, return its metrics on every validation row."""
    train = data.sample("train", max_rows, seed)
    inputs = data.inputs
    categorical = [
        name.startswith(CAT) and card <= MAX_CATEGORIES for name, card in zip(inputs.categorical, inputs.cardinalities, strict=True)
    ] + [False] * len(inputs.numeric)
    common = {"categorical_features": np.array(categorical, dtype=bool), "random_state": seed}
    if problem_type == "classification" and len(np.unique(train.y)) < 2:
        raise ValueError(f"the baseline's {len(train)} training rows hold a single class: cannot fit a classifier")
    model = HistGradientBoostingClassifier(**common) if problem_type == "classification" else HistGradientBoostingRegressor(**common)
    model.fit(_matrix(train.cat, train.num), train.y)
    ys, predictions = [], []
    for batch in data.batches("valid", batch_size):
        x = _matrix(batch.cat, batch.num)
        predictions.append(model.predict_proba(x)[:, 1] if problem_type == "classification" else model.predict(x))
        ys.append(batch.y)
    return compute_metrics(np.concatenate(ys), np.concatenate(predictions), problem_type)
