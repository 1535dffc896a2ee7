"""Paired comparison of two models on the same labelled rows: the gain of one over the other, with bootstrap bounds.

Used offline (the validation step: candidate and champion on the same held-out rows) and live (monitoring:
challenger in shadow and champion on the same labelled served records). The gain is ``b - a`` for a
higher-is-better metric (ROC AUC, accuracy) and the relative error reduction ``(a - b) / a`` for an error (RMSE,
MAE), so one cost reads the same way for both. Hand-written because no kept library offers a paired bootstrap of
ROC AUC and errors with this shape (scipy's ``bootstrap`` has no ROC AUC and calls the statistic once per resample: 1.7 s for
400 resamples of 2,000 rows with sklearn's AUC, against 0.1 s for the ranks of all resamples at once here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata

from aiflow.evaluation.metrics import HIGHER_IS_BETTER


@dataclass(frozen=True)
class Evidence:
    """The challenger against the champion on the same labelled rows."""

    metric: str
    rows: int
    champion: float | None = None
    challenger: float | None = None
    gain: float | None = None  # challenger better by this (absolute, or relative error reduction)
    low: float | None = None  # one-sided lower bound of the gain at ``confidence``
    high: float | None = None  # one-sided upper bound of the gain at ``confidence``
    confidence: float = 0.9

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.gain is None:
            return f"{self.rows:,} labelled rows scored by both: no {self.metric} comparison yet"
        unit = "" if HIGHER_IS_BETTER[self.metric] else " (relative error reduction)"
        return (
            f"{self.metric} {self.challenger:.4f} vs champion {self.champion:.4f} on {self.rows:,} labelled rows: "
            f"gain {self.gain:+.4f}{unit}, {self.confidence:.0%} bounds [{self.low:+.4f}, {self.high:+.4f}]"
        )


def _scores(metric: str, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The metric of each row of ``p`` (resamples x rows) against the same row of ``y``; ROC AUC by ranks (Mann-Whitney,
    ties averaged: the value sklearn gives), NaN where a resample holds one class."""
    if metric == "roc_auc":
        ranks = rankdata(p, axis=1)
        pos = y >= 0.5
        n1 = pos.sum(axis=1)
        n0 = y.shape[1] - n1
        with np.errstate(invalid="ignore", divide="ignore"):
            return ((ranks * pos).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    if metric == "accuracy":
        return ((p >= 0.5) == (y >= 0.5)).mean(axis=1)
    if metric == "rmse":
        return np.sqrt(((p - y) ** 2).mean(axis=1))
    if metric == "mae":
        return np.abs(p - y).mean(axis=1)
    raise ValueError(f"no paired comparison for metric {metric!r}; one of roc_auc, accuracy, rmse, mae")


def gain_of(metric: str, a, b):
    """How much better ``b`` is than ``a``: absolute for higher-is-better metrics, relative error reduction otherwise."""
    if HIGHER_IS_BETTER[metric]:
        return b - a
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.asarray(a) > 0, (np.asarray(a) - b) / np.where(np.asarray(a) > 0, a, 1), np.asarray(a) - b)


def paired_evidence(
    y, champion, challenger, metric: str, *, confidence: float = 0.9, resamples: int = 400, seed: int = 0, max_rows: int = 20_000
) -> Evidence:
    """Paired bootstrap of the gain of ``challenger`` over ``champion`` (scores of the same rows, labels ``y``).

    Every resample draws the same rows for both models, so what the rows share (an easy or a hard window) cancels
    out and only the difference between the models is left. ROC AUC needs both classes: with one class in the rows
    there is no comparison (gain None); a resample with one class is left out. Rows with a non-finite value are
    dropped first. Past ``max_rows`` rows the bounds come from a seeded sample of that many (wider than the whole
    rows' would be: a sure verdict stays sure; 20,000 rows cost about 2 s), the point values from every row.
    """
    y, a, b = (np.asarray(v, dtype=np.float64) for v in (y, champion, challenger))
    if not (len(y) == len(a) == len(b)):
        raise ValueError(f"paired evidence needs equal lengths, got {len(y)}, {len(a)}, {len(b)}")
    keep = np.isfinite(y) & np.isfinite(a) & np.isfinite(b)
    y, a, b = y[keep], a[keep], b[keep]
    n = len(y)
    if n < 2 or (metric == "roc_auc" and len(np.unique(y >= 0.5)) < 2):
        return Evidence(metric, n, confidence=confidence)
    champ, chall = (float(_scores(metric, y[None, :], p[None, :])[0]) for p in (a, b))
    rng = np.random.default_rng(seed)
    gain = float(gain_of(metric, champ, chall))
    centre = gain
    if n > max_rows:  # the sample's spread around its own gain, placed around the gain of every row
        pick = rng.choice(n, max_rows, replace=False)
        y, a, b = y[pick], a[pick], b[pick]
        centre = float(gain_of(metric, *(float(_scores(metric, y[None, :], p[None, :])[0]) for p in (a, b))))
    gains = []
    step = max(1, 2_000_000 // min(n, max_rows))  # resamples per block: bounded memory whatever the rows
    for done in range(0, resamples, step):
        idx = rng.integers(0, len(y), (min(step, resamples - done), len(y)))
        ys = y[idx]
        gains.append(gain_of(metric, _scores(metric, ys, a[idx]), _scores(metric, ys, b[idx])))
    g = np.concatenate(gains)
    g = g[np.isfinite(g)]
    if len(g) < resamples // 2:
        return Evidence(metric, n, champ, chall, confidence=confidence)
    low, high = np.quantile(g, [1 - confidence, confidence]) + (gain - centre)
    return Evidence(metric, n, champ, chall, gain, float(low), float(high), confidence)
