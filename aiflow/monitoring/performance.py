"""Live performance of a served model: realized metrics from the labels that came back, estimated ones before they do.

The estimate is NannyML's confidence-based performance estimation (CBPE): once the model's probabilities are
calibrated (:class:`Calibrator`, fitted on the reference's valid split), each probability *is* the chance the row
is positive, so the confusion matrix, and every metric built on it, has an expected value that needs no label.

The inference log and the labels table are read by the caller (this module cannot import :mod:`aiflow.serving`:
the two are sibling layers); their column names are the serving ones (``request_id``, ``time``, ``status``,
``model_version``, ``prediction``, ``probability``; ``request_id``, ``label``, ``received_at``, ``known``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from aiflow.evaluation.metrics import compute_metrics

LOG_COLUMNS = ("request_id", "time", "status", "prediction", "probability")
LABEL_COLUMNS = ("request_id", "label", "received_at", "known")
#: Realized metrics reported per problem type (the estimated ones are ``estimated_<name>``).
METRICS = {"classification": ("roc_auc", "accuracy"), "regression": ("rmse", "mae")}
#: Each row's estimated loss (regression: direct loss estimation), when the caller adds it.
ESTIMATED_SQUARED_ERROR, ESTIMATED_ABSOLUTE_ERROR = "estimated_squared_error", "estimated_absolute_error"
#: Below this many rows, or with a single class, the calibrator is the identity.
MIN_CALIBRATION_ROWS = 50


def _require(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {frame.columns}")


def scored_with_labels(log: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """The successfully scored rows of the inference log, each with its label when it came back.

    Args:
        log: inference-log rows (``aiflow.serving.inference_log.SCHEMA``); only ``status == "ok"`` rows are kept.
        labels: the labels table (``aiflow.serving.feedback.SCHEMA``); only ``known`` rows count (a label sent for
            a request id the server never logged is not a label of any scored row).

    Returns:
        The kept log rows plus ``label`` (Float64, null while not back), ``label_received_at`` and
        ``label_delay_hours`` (``received_at - time``, null while not back).
    """
    _require(log, LOG_COLUMNS, "the inference log")
    _require(labels, LABEL_COLUMNS, "the labels table")
    known = (
        labels.filter(pl.col("known"))
        .select("request_id", pl.col("label").cast(pl.Float64), pl.col("received_at").alias("label_received_at"))
        .unique("request_id", keep="last", maintain_order=True)
    )
    out = log.filter(pl.col("status") == "ok").join(known, on="request_id", how="left", maintain_order="left")
    delay = (pl.col("label_received_at") - pl.col("time")).dt.total_microseconds() / 3.6e9
    return out.with_columns(label_delay_hours=delay.cast(pl.Float64))


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from the model's probabilities to calibrated ones (isotonic regression's breakpoints).

    Stored as plain numbers (``to_json``/``from_json``), applied by linear interpolation between the
    breakpoints (constant beyond them): no pickle. With no breakpoints it is the identity.
    """

    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    rows: int = 0

    @classmethod
    def fit(cls, probability, label, *, min_rows: int = MIN_CALIBRATION_ROWS) -> Calibrator:
        """Fit on (probability, 0/1 label) pairs, e.g. the reference's valid split.

        The identity when fewer than ``min_rows`` usable pairs or a single class (nothing to learn from).
        """
        from sklearn.isotonic import IsotonicRegression  # imported on use: loading the code location stays light

        p = np.asarray(probability, dtype=np.float64)
        y = np.asarray(label, dtype=np.float64)
        if p.shape != y.shape:
            raise ValueError(f"calibration needs one label per probability, got {p.shape} and {y.shape}")
        keep = np.isfinite(p) & np.isfinite(y)
        p, y = p[keep], y[keep]
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError(f"calibration labels must be 0 or 1, got {sorted(set(y.tolist()) - {0.0, 1.0})[:5]}")
        if len(p) < min_rows or len(np.unique(y)) < 2:
            return cls(rows=len(p))
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
        return cls(tuple(map(float, iso.X_thresholds_)), tuple(map(float, iso.y_thresholds_)), len(p))

    @property
    def identity(self) -> bool:
        return not self.x

    def apply(self, p) -> np.ndarray:
        """Calibrated probabilities of ``p`` (an array-like of probabilities)."""
        p = np.asarray(p, dtype=np.float64)
        if self.identity:
            return p.copy()
        return np.interp(p, self.x, self.y)

    def to_json(self) -> dict:
        return {"kind": "identity" if self.identity else "isotonic", "x": list(self.x), "y": list(self.y), "rows": self.rows}

    @classmethod
    def from_json(cls, data: Mapping) -> Calibrator:
        """The calibrator written by :meth:`to_json`; a malformed dict raises naming the bad field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"calibrator: expected a JSON object, got {type(data).__name__}")
        x, y = data.get("x", []), data.get("y", [])
        for name, v in (("x", x), ("y", y)):
            if not isinstance(v, list) or not all(isinstance(e, int | float) and np.isfinite(e) for e in v):
                raise ValueError(f"calibrator field {name!r}: expected a list of finite numbers, got {v!r:.80}")
        if len(x) != len(y):
            raise ValueError(f"calibrator fields 'x' and 'y' differ in length ({len(x)} vs {len(y)})")
        if any(b < a for a, b in zip(x, x[1:], strict=False)):
            raise ValueError("calibrator field 'x': breakpoints must be non-decreasing")
        return cls(tuple(map(float, x)), tuple(map(float, y)), int(data.get("rows", 0)))


def expected_accuracy(p_calibrated: np.ndarray, predicted: np.ndarray) -> float | None:
    """CBPE accuracy: the mean chance that each row's predicted class is right (``p`` if predicted 1, else ``1 - p``)."""
    if len(p_calibrated) == 0:
        return None
    return float(np.mean(np.where(predicted == 1, p_calibrated, 1.0 - p_calibrated)))


def expected_roc_auc(p_calibrated: np.ndarray) -> float | None:
    """CBPE ROC AUC: the area under the curve of expected FPR/TPR over the sorted calibrated probabilities.

    At each distinct threshold ``t`` (rows with ``p >= t`` predicted positive) the expected true positives are
    ``Σ p`` and false positives ``Σ (1 - p)`` over the predicted positives (false negatives ``Σ p``, true
    negatives ``Σ (1 - p)`` over the rest); the curve closes at (0, 0), the threshold above every probability.
    Rows are taken one at a time: the points inside a run of tied probabilities lie on the straight segment
    between the run's ends, so the area is the same as with one point per distinct threshold.
    None when the expected positives or negatives are zero (every ``p`` is 0, or every ``p`` is 1).
    """
    p = np.sort(np.asarray(p_calibrated, dtype=np.float64))[::-1]  # descending: lowering the threshold adds rows
    positives, negatives = p.sum(), (1.0 - p).sum()
    if len(p) == 0 or positives <= 0 or negatives <= 0:
        return None
    tpr = np.concatenate([[0.0], np.cumsum(p) / positives])
    fpr = np.concatenate([[0.0], np.cumsum(1.0 - p) / negatives])
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def _group_metrics(part: pl.DataFrame, problem_type: str, threshold: float, calibrator: Calibrator | None) -> dict:
    names = METRICS[problem_type]
    labelled = part.filter(pl.col("label").is_not_null())
    score = "probability" if problem_type == "classification" else "prediction"
    labelled = labelled.filter(pl.col(score).is_not_null())
    delays = labelled["label_delay_hours"].drop_nulls()
    out: dict = {"rows": part.height, "labelled": labelled.height, "label_delay_hours": float(delays.median()) if len(delays) else None}
    realized = {}
    if labelled.height:
        realized = compute_metrics(labelled["label"].to_numpy(), labelled[score].to_numpy(), problem_type, threshold)
    out.update({name: realized.get(name) for name in names})
    if problem_type == "classification":
        p = part[score].drop_nulls().to_numpy()
        calibrated = (calibrator or Calibrator()).apply(p)
        out["estimated_roc_auc"] = expected_roc_auc(calibrated)
        out["estimated_accuracy"] = expected_accuracy(calibrated, (p >= threshold).astype(np.int64))
    elif ESTIMATED_SQUARED_ERROR in part.columns:  # direct loss estimation (aiflow.monitoring.loss_estimation)
        squared, absolute = part[ESTIMATED_SQUARED_ERROR].drop_nulls(), part[ESTIMATED_ABSOLUTE_ERROR].drop_nulls()
        out["estimated_rmse"] = float(np.sqrt(squared.mean())) if len(squared) else None
        out["estimated_mae"] = float(absolute.mean()) if len(absolute) else None
    else:
        out.update({f"estimated_{name}": None for name in names})
    return out


def live_performance(
    scored: pl.DataFrame,
    problem_type: str,
    *,
    by: Sequence[str] = ("day", "model_version"),
    threshold: float = 0.5,
    calibrator: Calibrator | None = None,
) -> pl.DataFrame:
    """Realized and estimated metrics per group (e.g. per day of data time and model version).

    Args:
        scored: :func:`scored_with_labels` output plus the grouping columns (the caller adds the window or day
            from the record's event time).
        problem_type: ``"classification"`` or ``"regression"``.
        by: the grouping columns, in output order.
        threshold: the classification threshold on the positive-class probability.
        calibrator: maps the model's probabilities to calibrated ones for CBPE (identity when None).

    Returns:
        One row per group, sorted by ``by``: ``rows``, ``labelled`` (rows whose label is back), ``label_delay_hours``
        (median over the labelled rows), the realized metrics on the labelled rows (classification: ``roc_auc``, null
        unless both classes are present, and ``accuracy``; regression: ``rmse``, ``mae``; null with no labels) and
        the estimated ones (``estimated_roc_auc``, ``estimated_accuracy`` by CBPE over every row). For regression
        the estimated metrics come from each row's estimated loss when ``scored`` has the columns
        ``estimated_squared_error`` and ``estimated_absolute_error`` (direct loss estimation, filled in by the
        caller: :mod:`aiflow.monitoring.loss_estimation`), else they are null.
    """
    if problem_type not in METRICS:
        raise ValueError(f"problem_type must be one of {sorted(METRICS)}, got {problem_type!r}")
    by = list(by)
    _require(scored, [*by, "label", "label_delay_hours", "prediction", "probability"], "the scored frame")
    names = METRICS[problem_type]
    schema = {
        **{c: scored.schema[c] for c in by},
        "rows": pl.Int64,
        "labelled": pl.Int64,
        "label_delay_hours": pl.Float64,
        **{n: pl.Float64 for n in names},
        **{f"estimated_{n}": pl.Float64 for n in names},
    }
    rows = []
    for key, part in scored.group_by(by, maintain_order=True):
        rows.append({**dict(zip(by, key, strict=True)), **_group_metrics(part, problem_type, threshold, calibrator)})
    return pl.DataFrame(rows, schema=schema).sort(by, maintain_order=True)
