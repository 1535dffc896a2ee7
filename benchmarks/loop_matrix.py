"""Models of a world's stream, their scores on every window once, and the retrospective oracle (issue 21).

"Model k" starts serving at window k. It is trained on the labelled rows of the last ``TRAIN_WINDOWS`` windows whose
labels have arrived by then (windows ``k - delay - N .. k - delay - 1``), less a held-out quarter of the newest
one's labelled rows (the offline evidence's rows, as the validation step holds out the newest days). Its scores on
every window are computed once, so every policy is judged on the same matrix without retraining.

A plain column check guards training: a window whose column is constant or holds a null is *broken* (an alert);
a model whose training windows include a broken one is not trained (the retrain is blocked).

The cost objective: ``loss[m, w]`` is the gain of the freshest trainable model on window ``w`` over model ``m``
(``gain_of``: ROC AUC points, or the relative error reduction for RMSE) on every row of ``w`` with its true label;
a policy's total cost is the sum of its serving models' losses plus ``cost`` per promotion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score

from aiflow.evaluation.paired import gain_of
from benchmarks.worlds import CLASSIFICATION, TRAIN_WINDOWS, Stream, World

HOLDOUT = 0.25


def broken_columns(X: np.ndarray) -> list[int]:
    """The columns of one window's rows that are constant or hold a null (the check before training)."""
    nulls = ~np.isfinite(X).all(axis=0)
    constant = np.nanstd(X, axis=0) == 0
    return [int(c) for c in np.flatnonzero(nulls | constant)]


def metric_of(task: str, y: np.ndarray, p: np.ndarray) -> float:
    if task == CLASSIFICATION:
        return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
    return float(np.sqrt(np.mean((p - y) ** 2)))


@dataclass
class Matrix:
    """Every model of one stream and its scores on every window."""

    world: World
    stream: Stream
    first: int  # the first monitored window (model ``first`` serves it)
    scores: dict[int, np.ndarray] = field(default_factory=dict)  # model k -> (windows, rows) scores; only trainable k
    train_windows: dict[int, list[int]] = field(default_factory=dict)
    holdout: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)  # model k -> (window, row indices)
    blocked: dict[int, list[int]] = field(default_factory=dict)  # model k -> its broken training windows
    broken: dict[int, list[int]] = field(default_factory=dict)  # window -> broken columns (the alerts)
    M: np.ndarray = field(default_factory=lambda: np.empty(0))  # true metric [model, window] on every row
    fresh: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))  # the freshest trainable model of window w
    loss: np.ndarray = field(default_factory=lambda: np.empty(0))  # [model, window]
    memo: dict = field(default_factory=dict)  # what policies compute once per model (calibrated thresholds)

    @property
    def windows(self) -> int:
        return self.world.windows

    def trainable(self, k: int) -> bool:
        return k in self.scores

    def seen(self, u: int, v: int) -> np.ndarray:
        """Indices of the rows of window ``u`` whose labels the loop has at decision time after window ``v``."""
        if u + self.world.label_delay > v:
            return np.empty(0, dtype=int)
        return np.flatnonzero(self.stream.labelled[u])

    def observed(self, k: int, u: int, v: int) -> tuple[float | None, int]:
        """Model ``k``'s metric on the labelled rows of window ``u`` the loop has after window ``v``, and their count."""
        rows = self.seen(u, v)
        if len(rows) < 2:
            return None, len(rows)
        value = metric_of(self.world.task, self.stream.y[u, rows], self.scores[k][u, rows])
        return (None if not np.isfinite(value) else value), len(rows)


def build_matrix(world: World, seed: int, train_windows: int = TRAIN_WINDOWS) -> Matrix:
    """Train every model of the seeded stream on ``train_windows`` windows and score it on every window.

    The first monitored window is ``TRAIN_WINDOWS + delay`` whatever ``train_windows``, so the same windows are judged."""
    stream = world.generate(seed)
    delay, N, T = world.label_delay, train_windows, world.windows
    m = Matrix(world, stream, first=TRAIN_WINDOWS + delay)
    m.broken = {w: cols for w in range(T) if (cols := broken_columns(stream.X[w]))}
    rng = np.random.default_rng(seed + 7919)
    for k in range(m.first, T):
        windows = list(range(max(k - delay - N, 0), k - delay))
        m.train_windows[k] = windows
        bad = [w for w in windows if w in m.broken]
        if bad:
            m.blocked[k] = bad
            continue
        newest = windows[-1]
        rows = np.flatnonzero(stream.labelled[newest])
        held = np.sort(rng.choice(rows, int(len(rows) * HOLDOUT), replace=False))
        m.holdout[k] = (newest, held)
        Xs, ys = [], []
        for w in windows:
            keep = stream.labelled[w].copy()
            if w == newest:
                keep[held] = False
            Xs.append(stream.X[w, keep])
            ys.append(stream.y[w, keep])
        X, y = np.concatenate(Xs), np.concatenate(ys)
        flat = stream.X.reshape(-1, stream.X.shape[-1])
        if world.task == CLASSIFICATION:
            model = LogisticRegression(max_iter=300).fit(X, y)
            m.scores[k] = model.predict_proba(flat)[:, 1].reshape(T, -1)
        else:
            m.scores[k] = Ridge(alpha=1.0).fit(X, y).predict(flat).reshape(T, -1)
    if m.first not in m.scores:
        raise ValueError(f"{world.name}: the first model (window {m.first}) cannot be trained")
    m.M = np.full((T, T), np.nan)
    for k in m.scores:
        for w in range(k, T):
            m.M[k, w] = metric_of(world.task, stream.y[w], m.scores[k][w])
    m.fresh = np.zeros(T, dtype=int)
    last = m.first
    for w in range(m.first, T):
        last = w if m.trainable(w) else last
        m.fresh[w] = last
    m.loss = np.full((T, T), np.nan)
    for k in m.scores:
        for w in range(max(k, m.first), T):
            m.loss[k, w] = float(gain_of(world.metric, m.M[k, w], m.M[m.fresh[w], w]))
    return m


def schedule_cost(loss: np.ndarray, serving: list[int], first: int, cost: float) -> float:
    """Total cost of serving ``serving[w - first]`` at each window ``w``: the losses plus ``cost`` per change of model."""
    switches = sum(1 for a, b in zip(serving, serving[1:], strict=False) if a != b)
    return float(sum(loss[s, first + i] for i, s in enumerate(serving)) + cost * switches)


def oracle(loss: np.ndarray, available: list[bool] | np.ndarray, first: int, cost: float) -> tuple[float, list[int]]:
    """The retrospective oracle: the cheapest serving schedule with hindsight, by dynamic programming.

    Model ``first`` serves window ``first``; before any later window ``w`` the oracle may promote any available model
    ``m'`` newer than the serving one and trained in time (``m' <= w``), at ``cost``. Every policy here lives in this
    space (a challenger trained at k and promoted later is such a promotion), so the oracle's cost is a lower bound.

    Args:
        loss: [model, window] losses (NaN where a model cannot serve).
        available: whether each model can be trained.
        first: the first window; ``loss.shape[1]`` windows in all.

    Returns:
        The minimal total cost and the serving model of each window ``first ..``.
    """
    T = loss.shape[1]
    # best[m] = minimal cost of windows w.. given model m served window w - 1; choice[w][m] = the model serving w
    best = {m: 0.0 for m in range(first, T) if available[m]}
    choice: list[dict[int, int]] = [{} for _ in range(T)]
    for w in range(T - 1, first, -1):
        nxt = {}
        options = [(cost + loss[m2, w] + best[m2], m2) for m2 in range(first, w + 1) if available[m2] and m2 in best]
        for m in best:
            if m >= w:
                continue
            keep = (loss[m, w] + best[m], m)
            newer = [o for o in options if o[1] > m]
            value, pick = min([keep, *newer])
            nxt[m], choice[w][m] = value, pick
        best = nxt
    total = float(loss[first, first] + best[first])
    serving = [first]
    for w in range(first + 1, T):
        serving.append(choice[w][serving[-1]])
    return total, serving
