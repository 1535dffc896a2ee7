"""Synthetic worlds with the truth written down (issue 21): seeded streams of windows of rows for the loop's decisions.

Each world is a generator of ``windows`` windows of ``rows`` rows: features ``X`` (windows x rows x features), the
true label ``y`` and which rows' labels the loop ever sees (``labelled``; they arrive ``label_delay`` windows after
their window). The truth is written beside the data: the windows where the concept the metric sees changes
(``changed``), the first of them (``change_at``), and the window from which a column is broken (``broken_from``).

Classification: ``y ~ Bernoulli(sigmoid(X @ beta_w + b_w))`` (label shift: ``y`` first, then ``X | y``); regression:
``y = X @ beta_w + noise``. Inputs are standard normal unless the world moves them. The models trained on these
(logistic regression, ridge) are the right family for every concept, so covariate shift leaves them right.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

CLASSIFICATION, REGRESSION = "classification", "regression"
FEATURES = 5
BETA_A = np.array([1.5, -1.0, 0.8, 0.0, 0.5])
BETA_B = np.array([-0.5, 1.2, 0.8, 1.0, -0.8])  # the concept after the change: two signs flipped, a new column matters
SEASON = 4  # seasonal world: the concept alternates every SEASON windows
NOISE = 1.0  # regression noise std
SPARSE_FRACTION, SPARSE_DELAY = 0.3, 2
DAY0 = dt.date(2026, 1, 5)  # a Monday: window w is the week starting DAY0 + 7 w
TRAIN_WINDOWS = 3  # windows a model trains on (benchmarks.loop_matrix), and the span of a world's spec split


@dataclass(frozen=True)
class Stream:
    """One seeded draw of a world: arrays indexed [window, row(, feature)]."""

    X: np.ndarray
    y: np.ndarray
    labelled: np.ndarray  # bool: the loop ever sees this row's label (``label_delay`` windows after its window)


@dataclass(frozen=True)
class World:
    """A world and its truth.

    Attributes:
        name: ``<kind>`` for classification, ``<kind>_reg`` for regression.
        kind: no_drift, covariate_shift, abrupt_concept, gradual_concept, seasonal, label_shift, broken_feature,
            sparse_late_labels.
        task: classification (ROC AUC) or regression (RMSE).
        windows, rows: the stream's size.
        changed: per window, whether the concept the metric sees differs from the previous window's.
        change_at: the first changed window (None: nothing the metric sees ever changes).
        broken_from: the first window whose column ``BROKEN_COLUMN`` is constant (None: never).
        label_fraction, label_delay: the share of rows ever labelled, and how many windows late labels arrive.
        truth: one line saying what happens.
    """

    name: str
    kind: str
    task: str
    windows: int
    rows: int
    changed: tuple[bool, ...]
    change_at: int | None
    broken_from: int | None = None
    label_fraction: float = 1.0
    label_delay: int = 0
    truth: str = ""

    @property
    def metric(self) -> str:
        return "roc_auc" if self.task == CLASSIFICATION else "rmse"

    def generate(self, seed: int) -> Stream:
        return _generate(self, seed)


BROKEN_COLUMN = 0
KINDS = ("no_drift", "covariate_shift", "abrupt_concept", "gradual_concept", "seasonal", "label_shift", "broken_feature",
         "sparse_late_labels")  # fmt: skip
REGRESSION_KINDS = ("no_drift", "covariate_shift", "abrupt_concept")


def _beta(world: World, w: int) -> np.ndarray:
    """The concept of window ``w``."""
    T, kind = world.windows, world.kind
    if kind in ("abrupt_concept", "sparse_late_labels"):
        return BETA_B if w >= T // 2 else BETA_A
    if kind == "gradual_concept":
        a, b = T // 3, 2 * T // 3  # the ramp: windows a..b-1 move from A to B
        t = min(max((w - a + 1) / (b - a), 0.0), 1.0)
        return (1 - t) * BETA_A + t * BETA_B
    if kind == "seasonal":
        return BETA_A if (w // SEASON) % 2 == 0 else BETA_B
    return BETA_A


def make_world(kind: str, task: str = CLASSIFICATION, *, windows: int = 24, rows: int = 1000) -> World:
    """The world ``kind`` of ``task`` with its truth."""
    if kind not in KINDS:
        raise ValueError(f"unknown world {kind!r}; one of {KINDS}")
    if task == REGRESSION and kind not in REGRESSION_KINDS:
        raise ValueError(f"world {kind!r} has no regression variant (only {REGRESSION_KINDS})")
    name = kind if task == CLASSIFICATION else f"{kind}_reg"
    T = windows
    probe = World(name, kind, task, T, rows, (), None)
    changed = tuple(w > 0 and not np.allclose(_beta(probe, w), _beta(probe, w - 1)) for w in range(T))
    change_at = next((w for w, c in enumerate(changed) if c), None)
    extra: dict = {}
    truth = {
        "no_drift": "nothing changes",
        "covariate_shift": "inputs move (mean +1.5 on four columns, column 0's spread shrinks to 0.5), the concept stays: the model stays right",
        "abrupt_concept": f"the concept flips at window {change_at}",
        "gradual_concept": f"the concept moves linearly from window {T // 3} to {2 * T // 3 - 1}",
        "seasonal": f"the concept alternates every {SEASON} windows (first change at {change_at})",
        "label_shift": f"the positive share falls from 0.5 to 0.15 at window {T // 2}; P(x|y) fixed, so the ranking (ROC AUC) stays right",
        "broken_feature": f"column {BROKEN_COLUMN} turns constant (0.0) from window {T // 2}; the concept stays",
        "sparse_late_labels": f"the concept flips at window {change_at}; {SPARSE_FRACTION:.0%} of labels, {SPARSE_DELAY} windows late",
    }[kind]  # fmt: skip
    if kind == "broken_feature":
        extra["broken_from"] = T // 2
    if kind == "sparse_late_labels":
        extra.update(label_fraction=SPARSE_FRACTION, label_delay=SPARSE_DELAY)
    return World(name, kind, task, T, rows, changed, change_at, truth=truth, **extra)


def all_worlds(*, windows: int = 24, rows: int = 1000) -> list[World]:
    """Every classification world, then the regression variants."""
    out = [make_world(k, CLASSIFICATION, windows=windows, rows=rows) for k in KINDS]
    return out + [make_world(k, REGRESSION, windows=windows, rows=rows) for k in REGRESSION_KINDS]


def _generate(world: World, seed: int) -> Stream:
    # the seed and the world's name pick the stream, so two worlds never share their noise by accident
    rng = np.random.default_rng([seed, *world.name.encode()])
    T, n, d = world.windows, world.rows, FEATURES
    X = rng.standard_normal((T, n, d))
    y = np.empty((T, n))
    for w in range(T):
        if world.kind == "covariate_shift":
            t = w / max(T - 1, 1)
            X[w, :, 0] *= 1 - 0.5 * t
            X[w, :, 1:] += 1.5 * t
        if world.kind == "label_shift":
            prior = 0.5 if w < T // 2 else 0.15
            y[w] = rng.random(n) < prior
            mu = 0.5 * BETA_A  # X | y ~ N(±mu, I): the same likelihood ratio whatever the prior
            X[w] = X[w] + np.where(y[w][:, None] > 0, mu, -mu)
            continue
        signal = X[w] @ _beta(world, w)  # the concept is computed from the true values
        if world.broken_from is not None and w >= world.broken_from:
            X[w, :, BROKEN_COLUMN] = 0.0  # then the column breaks upstream
        if world.task == CLASSIFICATION:
            y[w] = rng.random(n) < 1 / (1 + np.exp(-signal))
        else:
            y[w] = signal + NOISE * rng.standard_normal(n)
    labelled = rng.random((T, n)) < world.label_fraction
    return Stream(X, y.astype(np.float64), labelled)


def world_spec(world: World) -> dict:
    """The dataset spec of a world: what a user would write, with the shipped defaults for everything the loop decides."""
    name = f"world_{world.name}"
    classification = world.task == CLASSIFICATION
    target = (
        {"name": "positive", "source": "y", "kind": "threshold", "threshold": 0.5, "when_null": "quarantine"}
        if classification
        else {"name": "value", "source": "y", "kind": "identity", "when_null": "quarantine"}
    )
    first_days = 7 * TRAIN_WINDOWS
    return {
        "name": name,
        "description": f"Synthetic world {world.name} ({world.truth}).",
        "landing": {"uri": f"landing/{name}"},
        "columns": {"row_id": {"type": "int64"}, "ts": {"type": "datetime"}, "y": {"type": "float64"},
                    **{f"x{j}": {"type": "float64"} for j in range(FEATURES)}},  # fmt: skip
        "key": ["row_id"],
        "event_time": "ts",
        "timezone": "UTC",
        "problem_type": world.task,
        "target": target,
        "known_after_event": ["y"],
        "features": {"numeric": [f"x{j}" for j in range(FEATURES)]},
        # the engine level's models train on 3 windows and hold out a quarter of the newest: the same span here
        "split": {"kind": "relative", "train_days": first_days - 7, "valid_days": 4, "test_days": 3},
        "monitoring": {"window": "weekly", "start": DAY0},
    }
