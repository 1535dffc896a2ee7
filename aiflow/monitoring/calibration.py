"""Thresholds calibrated on the reference: how much the signals move between chunks of data the model was fine on.

The reference's train rows are cut into time chunks (by ``event_date``, equal row counts). Each chunk's weighted
drift share against the rest of the reference, and its metric, show the natural wobble of the signals; a threshold
is that wobble times ``k`` (NannyML's reference-chunk thresholds), floored so that a perfectly stable reference
does not give a threshold of zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import polars as pl

from aiflow.evaluation.metrics import compute_metrics
from aiflow.monitoring.performance import Calibrator, expected_roc_auc
from aiflow.monitoring.policy import Policy, Thresholds, fallback_thresholds

#: The metric monitored per problem type.
MONITORED = {"classification": "roc_auc", "regression": "rmse"}

DriftFn = Callable[[pl.DataFrame, pl.DataFrame], "float | Mapping[str, bool]"]


def weighted_drift_share(drifted: Mapping[str, bool], importance: Mapping[str, float] | None) -> float:
    """The importance-weighted share of drifted columns (equal weights when ``importance`` is None or all zero)."""
    if not drifted:
        return 0.0
    weights = {c: float((importance or {}).get(c, 0.0)) for c in drifted}
    total = sum(weights.values())
    if total <= 0:
        weights, total = dict.fromkeys(drifted, 1.0), float(len(drifted))
    return sum(w for c, w in weights.items() if drifted[c]) / total


def _share(result, importance: Mapping[str, float] | None) -> float:
    if isinstance(result, Mapping):
        return weighted_drift_share({str(k): bool(v) for k, v in result.items()}, importance)
    return float(result)


def _realized(frame: pl.DataFrame, problem_type: str, metric: str, threshold: float) -> float | None:
    if frame.height == 0:
        return None
    return compute_metrics(frame["label"].to_numpy(), frame["prediction"].to_numpy(), problem_type, threshold).get(metric)


def calibrate(
    reference: pl.DataFrame,
    *,
    problem_type: str,
    kinds: Mapping[str, str],
    drift_fn: DriftFn,
    importance: Mapping[str, float] | None = None,
    calibrator: Calibrator | None = None,
    chunks: int = 8,
    k: float = 3.0,
    policy: Policy | None = None,
    threshold: float = 0.5,
    min_chunk_rows: int = 100,
) -> Thresholds:
    """Thresholds for the retrain policy from the spread of the signals over reference chunks.

    Args:
        reference: the reference sample: ``event_date``, ``split`` (``"train"`` | ``"valid"``), the feature
            columns, ``label``, ``prediction`` (positive-class probability, or the value).
        problem_type: ``"classification"`` (metric ROC AUC) or ``"regression"`` (metric RMSE).
        kinds: the drift columns and their kinds; ``drift_fn`` sees only these columns.
        drift_fn: ``drift_fn(reference_rows, chunk_rows)`` → the weighted drift share, or a mapping column → drifted
            (then weighted here by ``importance``). The real drift engine in production, a simple one in tests.
        importance: column weights for a mapping result (equal weights when None).
        calibrator: maps probabilities to calibrated ones for CBPE (identity when None).
        chunks: how many time chunks the train rows are cut into.
        k: how many standard deviations of the chunk signal a threshold allows.
        policy: floors and fallback values (``Policy()`` when None).
        threshold: the classification threshold.
        min_chunk_rows: fewer train rows than ``chunks * min_chunk_rows``, or fewer valid rows than
            ``min_chunk_rows``, give the fallback thresholds (labelled ``"fallback"``).

    Returns:
        The thresholds: drift share = mean + k·std of the chunk shares; estimated / realized drop = k·std of the
        chunk metrics (relative to the reference metric for RMSE); the reference metric is realized on the valid rows.
    """
    if problem_type not in MONITORED:
        raise ValueError(f"problem_type must be one of {sorted(MONITORED)}, got {problem_type!r}")
    missing = [c for c in ("event_date", "split", "label", "prediction", *kinds) if c not in reference.columns]
    if missing:
        raise ValueError(f"the reference sample lacks column(s) {missing}; it has {reference.columns}")
    policy = policy or Policy()
    metric = MONITORED[problem_type]
    train = reference.filter(pl.col("split") == "train").sort("event_date", maintain_order=True)
    valid = reference.filter(pl.col("split") == "valid")
    if chunks < 2 or train.height < chunks * min_chunk_rows or valid.height < min_chunk_rows:
        usable = valid if valid.height else reference
        ref_metric = _realized(usable, problem_type, metric, threshold)
        # too few rows to calibrate on, enough to measure the metric's sampling noise: fixed thresholds never below it
        noise = _relative(bootstrap_std(usable, problem_type, metric, threshold), problem_type, ref_metric)
        fixed = fallback_thresholds(policy, metric, ref_metric)
        return dataclasses.replace(fixed, noise_std=noise, noise_rows=usable.height if noise else 0, noise_k=k)
    ref_metric = _realized(valid, problem_type, metric, threshold)
    cols = list(kinds)
    index = pl.int_range(pl.len(), dtype=pl.Int64)
    reference = reference.with_columns(_row=index)
    train_ids = reference.filter(pl.col("split") == "train").sort("event_date", maintain_order=True)["_row"].to_numpy()
    shares, estimated, realized = [], [], []
    previous = None
    for ids in np.array_split(train_ids, chunks):
        is_chunk = pl.col("_row").is_in(pl.Series(ids))
        chunk, rest = reference.filter(is_chunk), reference.filter(~is_chunk)
        verdict = drift_fn(rest.select(cols), chunk.select(cols))
        if isinstance(verdict, Mapping):  # per column: news as monitoring judges it, against the rest and the chunk before
            if previous is not None:
                near = drift_fn(previous.select(cols), chunk.select(cols))
                shares.append(_share({c: bool(v) and bool(near.get(c, True)) for c, v in verdict.items()}, importance))
        else:
            shares.append(_share(verdict, importance))
        previous = chunk
        realized.append(_realized(chunk, problem_type, metric, threshold))
        if problem_type == "classification":
            estimated.append(expected_roc_auc((calibrator or Calibrator()).apply(chunk["prediction"].to_numpy())))
    drift = min(max(float(np.mean(shares) + k * np.std(shares)), policy.min_drift_share), 1.0)

    def drop(values: list[float | None]) -> float:
        vals = np.array([v for v in values if v is not None], dtype=np.float64)
        if len(vals) < 2 or ref_metric is None:
            return policy.fallback_drop if problem_type == "classification" else policy.fallback_relative_increase
        spread = k * float(np.std(vals))
        if problem_type == "regression" and ref_metric > 0:
            spread /= ref_metric
        return max(spread, policy.min_drop)

    est = drop(estimated) if problem_type == "classification" else policy.fallback_relative_increase
    noise = _relative(bootstrap_std(valid, problem_type, metric, threshold), problem_type, ref_metric)
    return Thresholds(metric, drift, est, drop(realized), ref_metric, "calibrated", chunks, noise, valid.height, k)


def _relative(noise: float | None, problem_type: str, ref_metric: float | None) -> float | None:
    """RMSE / MAE drops are relative increases: their noise too."""
    if noise is not None and problem_type == "regression" and ref_metric:
        return noise / ref_metric
    return noise


def bootstrap_std(rows: pl.DataFrame, problem_type: str, metric: str, threshold: float, *, resamples: int = 200,
                  seed: int = 0) -> float | None:  # fmt: skip
    """The metric's standard deviation over bootstrap resamples of ``rows`` (its sampling noise at that many rows;
    seeded, so the same reference gives the same threshold); None below 30 rows or when the metric is undefined."""
    if rows.height < 30:
        return None
    y, p = rows["label"].to_numpy(), rows["prediction"].to_numpy()
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        i = rng.integers(0, rows.height, rows.height)
        value = compute_metrics(y[i], p[i], problem_type, threshold).get(metric)
        if value is not None and np.isfinite(value):
            values.append(value)
    return float(np.std(values)) if len(values) >= resamples // 2 else None
