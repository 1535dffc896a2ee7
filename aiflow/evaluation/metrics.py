"""Evaluation: metrics of a model's predictions, overall and per slice, on the held-out rows.

Pure functions over arrays and Polars frames, shared by training (validation metrics), the
baseline and the gates; loading the models and choosing the rows is the caller's job (see :mod:`aiflow.evaluation.validation`), so the candidate and the champion are scored on the
very same rows.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

#: The metric each problem type is judged by (early stopping, sweeps, gates), and whether higher is better.
PRIMARY = {"classification": ("roc_auc", True), "regression": ("rmse", False)}
#: Whether a higher value of each metric is better.
HIGHER_IS_BETTER = {
    "roc_auc": True,
    "pr_auc": True,
    "f1": True,
    "accuracy": True,
    "log_loss": False,
    "calibration_error": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the row-weighted gap between predicted and observed rates per bin.

    Written out here because scikit-learn's ``calibration_curve`` drops empty bins and their weights.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(p[mask].mean() - y[mask].mean())
    return float(total / len(y))


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """ROC AUC, PR AUC, F1 and accuracy at ``threshold``, log loss, calibration error.

    A metric undefined on the rows (the AUCs when only one class is present) is left out, never
    reported as zero.
    """
    from sklearn import metrics as skm  # imported on use: loading the code location stays light

    y = np.asarray(y).astype(np.int64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    predicted = (p >= threshold).astype(np.int64)
    out = {
        "log_loss": skm.log_loss(y, p, labels=[0, 1]),
        "accuracy": skm.accuracy_score(y, predicted),
        "f1": skm.f1_score(y, predicted, zero_division=0.0),
        "calibration_error": calibration_error(y, p),
    }
    if len(np.unique(y)) == 2:  # ranking metrics need both classes
        out["roc_auc"] = skm.roc_auc_score(y, p)
        out["pr_auc"] = skm.average_precision_score(y, p)
    return {k: float(v) for k, v in out.items()}


def regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as skm

    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    out = {"rmse": float(math.sqrt(skm.mean_squared_error(y, p))), "mae": float(skm.mean_absolute_error(y, p))}
    if len(y) > 1 and np.var(y) > 0:
        out["r2"] = float(skm.r2_score(y, p))
    return out


def compute_metrics(y, p, problem_type: str, threshold: float = 0.5) -> dict[str, float]:
    """Metrics for the problem type; ``p`` holds probabilities (classification) or values (regression)."""
    if len(y) == 0:
        raise ValueError("no rows to evaluate on")
    if problem_type == "classification":
        return classification_metrics(y, p, threshold)
    return regression_metrics(y, p)


def slice_metrics(
    frame: pl.DataFrame, slices: list[str], problem_type: str, *, target: str, score: str, threshold: float = 0.5, min_rows: int = 50
) -> pl.DataFrame:
    """Metrics per value of every slice column (slices with fewer than ``min_rows`` rows are skipped)."""
    rows = []
    for column in slices:
        for (value,), part in frame.group_by(column, maintain_order=True):
            if part.height < min_rows:
                continue
            m = compute_metrics(part[target].to_numpy(), part[score].to_numpy(), problem_type, threshold)
            rows.append({"slice": column, "value": str(value), "rows": part.height, **m})
    schema = {"slice": pl.String, "value": pl.String, "rows": pl.Int64}
    return pl.DataFrame(rows) if rows else pl.DataFrame(schema=schema)


def regression_of(metric: str, candidate: float, reference: float) -> float:
    """How much worse the candidate is than the reference (positive = worse, in the metric's units)."""
    return reference - candidate if HIGHER_IS_BETTER[metric] else candidate - reference
