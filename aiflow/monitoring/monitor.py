"""One monitoring pass over a dataset's inference log: drift per new window, live performance, thresholds.

Each complete window (data time, :mod:`aiflow.monitoring.windows`) is compared once with the reference
profile of the champion version that served it (the reference moves when the champion changes): its
input features, its predictions and, where labels came back, its labels. Results go to the history
tables (:mod:`aiflow.monitoring.history`); the newest window also gets Evidently's HTML report under the
lake root. Live performance is recomputed over the whole log (labels arrive late). Alarm thresholds are
calibrated once per model version on its reference (:mod:`aiflow.monitoring.calibration`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from aiflow.data.encoding import FeatureState, feature_columns
from aiflow.models.bundle import PREPROCESSING, state_from_preprocessing, verify_bundle
from aiflow.models.reference import Reference, read_reference
from aiflow.models.registry import Registry, UnknownVersionError
from aiflow.monitoring import history, windows
from aiflow.monitoring.calibration import calibrate
from aiflow.monitoring.drift import columns_share, detect_drift, drift_report_html
from aiflow.monitoring.loss_estimation import LossEstimator
from aiflow.monitoring.performance import (
    ESTIMATED_ABSOLUTE_ERROR,
    ESTIMATED_SQUARED_ERROR,
    Calibrator,
    live_performance,
    scored_with_labels,
)
from aiflow.monitoring.policy import Policy, Thresholds
from aiflow.serving.batch import SCORE
from aiflow.spec import EVENT_DATE, DatasetSpec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables

log = logging.getLogger("aiflow.monitoring")

PREDICTION, LABEL = "prediction", "label"
ONLINE, BATCH = "online", "batch"
#: Labelled rows a window needs before its labels are compared with the reference's (label drift).
MIN_LABELS_FOR_DRIFT = 30


@dataclass(frozen=True)
class ModelContext:
    """What monitoring needs of one registered version: its reference profile and its fitted encoder state."""

    version: int
    reference: Reference
    state: FeatureState
    calibrator: Calibrator
    loss_estimator: LossEstimator | None = None  # regression: direct loss estimation (DLE) on the reference's valid rows


@dataclass
class WindowDrift:
    source: str
    window_start: dt.date
    window_end: dt.date
    model_version: int
    rows: int
    share: float
    weighted_share: float
    columns: pl.DataFrame  # column, kind, method, score, threshold, drifted, importance
    report_uri: str | None = None


@dataclass
class PassResult:
    """What one monitoring pass did, for the asset's metadata and log."""

    windows: list[WindowDrift] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one readable reason per window not computed
    thresholds: dict[int, Thresholds] = field(default_factory=dict)


class References:
    """Loads (verified) and caches each model version's monitoring context from the registry."""

    def __init__(self, lake: Lake, name: str, artifact_root: str, artifact_options: dict | None = None):
        self.registry = Registry(lake)
        self.name, self.root = name, artifact_root
        self.store = ArtifactStore(artifact_root, storage_options=artifact_options)

    @functools.lru_cache(maxsize=8)  # noqa: B019 — one References per pass; versions are immutable
    def get(self, version: int) -> ModelContext | None:
        """The context of ``version``; None when its bundle has no reference profile (trained before it existed)."""
        try:
            mv = self.registry.get(self.name, version)
        except UnknownVersionError:
            return None
        bundle = verify_bundle(self.store, mv.location(self.root), mv.artifact_sha256, mv.bundle_files or None)
        reference = read_reference(bundle.raw)
        if reference is None:
            return None
        state = state_from_preprocessing(json.loads(bundle.raw[PREPROCESSING]))
        valid = reference.valid()
        if reference.problem_type == "classification":
            return ModelContext(version, reference, state, Calibrator.fit(valid[PREDICTION].to_numpy(), valid[LABEL].to_numpy()))
        return ModelContext(version, reference, state, None, LossEstimator.fit(valid, reference.columns, prediction=PREDICTION, label=LABEL))


def stattests_by_column(spec: DatasetSpec) -> dict[str, str]:
    """The spec's per-feature stat tests, keyed by features-table column."""
    cols = feature_columns(spec)
    by_name = {c.split("_", 1)[1]: c for c in cols.all}
    return {by_name[name]: method for name, method in spec.monitoring.drift.stattests.items() if name in by_name}


def _label_kind(problem_type: str) -> str:
    return "categorical" if problem_type == "classification" else "numeric"


def _drift_fn(spec: DatasetSpec, importance: dict[str, float], kinds: dict[str, str]) -> Callable[[pl.DataFrame, pl.DataFrame], dict[str, bool]]:
    """Evidently's per-column verdicts (the calibration weighs them by importance and combines them as monitoring does:
    drifted against the rest of the reference and against the chunk before)."""

    def verdicts(reference: pl.DataFrame, current: pl.DataFrame) -> dict[str, bool]:
        result = detect_drift(reference, current, kinds, **_drift_options(spec))
        return dict(zip(result.columns["column"], result.columns["drifted"], strict=True))

    return verdicts


def _drift_options(spec: DatasetSpec) -> dict:
    d = spec.monitoring.drift
    return {"stattests": stattests_by_column(spec) or None, "stattest": d.stattest, "threshold": d.threshold, "max_rows": d.max_rows}


def policy_of(spec: DatasetSpec) -> Policy:
    """The spec's retrain settings as the policy the sensor applies."""
    r = spec.monitoring.retrain
    return Policy(
        min_rows=r.min_rows, min_labels=r.min_labels, use_drift="drift" in r.signals, use_estimated="estimated" in r.signals,
        use_realized="realized" in r.signals, hysteresis=r.hysteresis, decisive_drop=r.decisive_drop, cooldown_days=r.cooldown_days,
        cooldown_windows=spec.monitoring.cooldown_windows(), budget=r.budget,
        budget_days=r.budget_days, budget_burst=r.budget_burst, max_age_windows=spec.monitoring.max_age_windows() if "age" in r.signals else None,
        follow_up_windows=r.follow_up_windows,
    )  # fmt: skip


def thresholds_for(lake: Lake, spec: DatasetSpec, ctx: ModelContext) -> Thresholds:
    """The alarm thresholds of ``ctx``'s version: read back, or calibrated on its reference now and saved."""
    saved = history.read_thresholds(lake, spec.name, ctx.version)
    if saved is not None:
        return Thresholds.from_dict(saved)
    r = spec.monitoring.retrain
    feature_kinds = dict(ctx.reference.columns)
    found = calibrate(
        ctx.reference.sample, problem_type=ctx.reference.problem_type, kinds=feature_kinds,
        drift_fn=_drift_fn(spec, ctx.reference.importance, feature_kinds), importance=ctx.reference.importance,
        calibrator=ctx.calibrator, chunks=r.calibration_chunks, k=r.calibration_k, policy=policy_of(spec),
        threshold=ctx.reference.threshold or 0.5,
    )  # fmt: skip
    history.save_thresholds(lake, spec.name, ctx.version, found.to_dict())
    log.info("%s v%d: thresholds (%s on %d chunks): %s", spec.name, ctx.version, found.source, found.chunks, found.to_dict())
    return found


def online_pass(
    lake: Lake, spec: DatasetSpec, refs: References, *, report_store: ArtifactStore | None = None, max_windows: int | None = None
) -> PassResult:
    """Drift for every complete window of the inference log not computed yet (the oldest first).

    Args:
        report_store: where the newest window's Evidently HTML report is written (the lake root); None: no report.
        max_windows: compute at most this many; the rest wait for the next pass.
    """
    result = PassResult()
    scored = _scored(lake, spec)
    if not scored.height:
        result.skipped.append(f"the inference log of '{spec.name}' has no scored record yet")
        return result
    done = history.computed_windows(lake, spec.name, ONLINE)
    todo = []
    for start in windows.complete_windows(scored):
        rows = scored.filter(pl.col("window_start") == start)
        version = windows.serving_version(rows)
        if (start, version) not in done:
            todo.append((start, rows.filter(pl.col("model_version") == version), version))
    if not todo:
        result.skipped.append("no new complete window (a window is monitored once the log holds data from a later one)")
    for i, (start, rows, version) in enumerate(todo[:max_windows] if max_windows is not None else todo):
        ctx = refs.get(version)
        if ctx is None:
            result.skipped.append(f"window {start}: model version {version} has no reference profile (trained before profiles existed)")
            continue
        result.thresholds.setdefault(version, thresholds_for(lake, spec, ctx))
        newest = i == len(todo) - 1
        result.windows.append(_window_drift(lake, spec, ctx, start, rows, report_store if newest else None))
    return result


def batch_pass(lake: Lake, spec: DatasetSpec, refs: References, *, report_store: ArtifactStore | None = None) -> PassResult:
    """Drift of batch scoring: every complete window of ``predictions/<dataset>`` not computed yet, against the
    reference of the version that scored it (its feature rows, its scores and their labels from the features table)."""
    result = PassResult()
    predictions, features = Tables.predictions(spec.name), Tables.features(spec.name)
    if not lake.exists(predictions):
        result.skipped.append(f"no batch predictions of '{spec.name}' yet")
        return result
    ids = [*dict.fromkeys([*spec.key, EVENT_DATE])]
    scored = lake.scan(predictions).select(*ids, SCORE, "model_version").with_columns(
        windows.window_expr(pl.col(EVENT_DATE), spec.monitoring.window).alias("window_start")
    ).collect()
    if not scored.height:
        return result
    newest = scored["window_start"].max()
    done = history.computed_windows(lake, spec.name, BATCH)
    todo = sorted({(w, int(v)) for w, v in scored.select("window_start", "model_version").unique().iter_rows() if w < newest} - done)
    for i, (start, version) in enumerate(todo):
        ctx = refs.get(version)
        if ctx is None:
            result.skipped.append(f"batch window {start}: model version {version} has no reference profile")
            continue
        end = spec.monitoring.window_bounds(start)[1]
        part = scored.filter((pl.col("window_start") == start) & (pl.col("model_version") == version)).drop("window_start", "model_version")
        rows = (
            lake.scan(features).filter(pl.col(EVENT_DATE).is_between(start, end))
            .select(*ids, *ctx.reference.columns, pl.col(spec.target.name).cast(pl.Float64).alias(LABEL)).collect()
            .join(part, on=ids, how="inner")
        )  # fmt: skip
        current = rows.select(*ctx.reference.columns, pl.col(SCORE).alias(PREDICTION), LABEL)
        result.thresholds.setdefault(version, thresholds_for(lake, spec, ctx))
        newest_window = i == len(todo) - 1
        result.windows.append(_compare(lake, spec, ctx, start, current, BATCH, report_store if newest_window else None))
    return result


def _scored(lake: Lake, spec: DatasetSpec, window: dt.date | None = None) -> pl.DataFrame:
    """The champion's logged records (of one ``window``, or all) with their window and, where it came back, their label."""
    log_rows = windows.scored_log(lake, spec, variants=("champion",), window=window)
    if not log_rows.height:
        return log_rows
    labels = windows.labels_frame(lake, spec, log_rows["request_id"] if window is not None else None)
    return scored_with_labels(log_rows, labels)


#: A row logged, or a label received, this long before the previous computation still counts as new: log rows carry
#: their request time but reach the table up to a flush interval later (several servers: each its own).
RECOMPUTE_MARGIN = dt.timedelta(hours=1)


def performance_pass(
    lake: Lake, spec: DatasetSpec, refs: References, *, full: bool = False, margin: dt.timedelta = RECOMPUTE_MARGIN
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Live performance per (window, model version) and per (day, model version), written to the history tables
    (the sensor reads the windows; the daily table is for people and plots).

    Incremental: only windows with a log row or a label newer than the previous computation (less
    ``margin``, default :data:`RECOMPUTE_MARGIN`) are computed again; the others keep their rows. ``full``
    recomputes every window.
    """
    scored = _scored(lake, spec)
    previous = history.read_performance(lake, spec.name)
    previous_daily = history.read_performance(lake, spec.name, daily=True)
    now = dt.datetime.now(dt.UTC)
    changed = None
    if not full and previous.height and "computed_at" in previous.columns and previous_daily.height:
        since = previous["computed_at"].max() - margin  # the previous computation
        fresh = scored.filter((pl.col("time") >= since) | (pl.col("label_received_at") >= since))
        changed = set(fresh["window_start"].drop_nulls().to_list())
        scored = scored.filter(pl.col("window_start").is_in(list(changed)))
    frame = performance(scored, spec, refs)
    daily = performance(scored, spec, refs, by=("event_date", "model_version"))
    if changed is not None:  # keep the windows (and their days) nothing new reached
        keep = ~pl.col("window_start").is_in(list(changed))
        frame = pl.concat([previous.filter(keep), _stamped(frame, now)], how="diagonal_relaxed")
        days = windows.window_expr(pl.col("event_date"), spec.monitoring.window)
        daily = pl.concat([previous_daily.filter(~days.is_in(list(changed))), _stamped(daily, now)], how="diagonal_relaxed")
    else:
        frame, daily = _stamped(frame, now), _stamped(daily, now)
    frame, daily = frame.sort("window_start", "model_version"), daily.sort("event_date", "model_version")
    if frame.height:
        history.write_performance(lake, spec.name, frame)
        history.write_performance(lake, spec.name, daily, daily=True)
    return frame, daily


def _stamped(frame: pl.DataFrame, now: dt.datetime) -> pl.DataFrame:
    return frame.with_columns(pl.lit(now, pl.Datetime("us", "UTC")).alias("computed_at")) if frame.height else frame


def served_frame(rows: pl.DataFrame, spec: DatasetSpec, ctx: ModelContext) -> pl.DataFrame:
    """Logged records as the reference holds its rows: their inputs re-encoded by the serving version's encoder, the
    prediction (positive-class probability, or the value) and the label (null while not back)."""
    current = windows.features_of(rows, spec, ctx.state)
    prediction = rows["probability"] if ctx.reference.problem_type == "classification" else rows[PREDICTION]
    return current.with_columns(prediction.alias(PREDICTION), rows[LABEL].alias(LABEL))


def _window_drift(lake: Lake, spec: DatasetSpec, ctx: ModelContext, start: dt.date, rows: pl.DataFrame, report_store) -> WindowDrift:
    """Drift of one window of logged records (their inputs re-encoded by the serving version's encoder)."""
    return _compare(lake, spec, ctx, start, served_frame(rows, spec, ctx), ONLINE, report_store)


#: Rows a recent window needs to serve as the recent range of a column (fewer: the reference's valid rows serve).
MIN_RECENT_ROWS = 200


def _compare(
    lake: Lake, spec: DatasetSpec, ctx: ModelContext, start: dt.date, current: pl.DataFrame, source: str, report_store,
    recent: pl.DataFrame | None = None,
) -> WindowDrift:  # fmt: skip
    """Compare ``current`` (feature columns, ``prediction``, ``label``) with the reference; record and report it.

    With ``recent`` (the rows just before the window, encoded the same way), a column counts as drifted only when
    Evidently finds it drifted against the reference *and* against its recent range: a column that moves with the
    seasons every week has drifted from the training months but is not news this week; one that leaves its recent
    range is. Both verdicts are kept (``drifted_reference``, ``recent_drifted``, ``recent_score``).
    """
    end = spec.monitoring.window_bounds(start)[1]
    options = _drift_options(spec)
    kinds = {**ctx.reference.columns, PREDICTION: "numeric"}
    reference = ctx.reference.train()
    drift = detect_drift(reference, current, kinds, **options)
    frames = [drift.columns]
    labelled = current.filter(pl.col(LABEL).is_not_null())
    if labelled.height >= MIN_LABELS_FOR_DRIFT:  # label drift on the labelled rows only
        frames.append(detect_drift(reference, labelled, {LABEL: _label_kind(ctx.reference.problem_type)}, **options).columns)
    columns = pl.concat(frames, how="diagonal_relaxed").with_columns(
        pl.col("column").replace_strict(ctx.reference.importance, default=0.0, return_dtype=pl.Float64).alias("importance"),
        pl.col("drifted").alias("drifted_reference"),
    )
    recent_rows = 0
    if recent is not None and recent.height:
        near = detect_drift(recent, current, kinds, **options).columns
        recent_rows = recent.height
        columns = columns.join(near.select("column", pl.col("score").alias("recent_score"), pl.col("drifted").alias("recent_drifted")),
                               on="column", how="left")  # fmt: skip
        columns = columns.with_columns((pl.col("drifted") & pl.col("recent_drifted").fill_null(True)).alias("drifted"))
    else:
        columns = columns.with_columns(pl.lit(None, pl.Float64).alias("recent_score"), pl.lit(None, pl.Boolean).alias("recent_drifted"))
    features = columns.filter(~pl.col("column").is_in([PREDICTION, LABEL]))
    share = float(features["drifted"].mean() or 0.0)
    weighted = columns_share(features, ctx.reference.importance)
    history.replace_drift(
        lake, spec.name,
        columns.with_columns(
            pl.lit(source).alias("source"), pl.lit(start).alias("window_start"), pl.lit(end).alias("window_end"),
            pl.lit(ctx.version).alias("model_version"), pl.lit(reference.height).alias("reference_rows"),
            pl.lit(current.height).alias("current_rows"), pl.lit(recent_rows).alias("recent_rows"),
        ),
    )  # fmt: skip
    report_uri = None
    if report_store is not None:
        html = drift_report_html(reference, current, kinds, **options | {"max_rows": 20_000})
        report_uri = report_store.put_bytes(history.reports_path(spec.name, source, start, ctx.version), html.encode())
    log.info("%s %s window %s..%s (v%d, %d rows): drift share %.2f, weighted %.2f", spec.name, source, start, end, ctx.version, current.height, share, weighted)
    return WindowDrift(source, start, end, ctx.version, current.height, share, weighted, columns, report_uri)


def performance(
    scored: pl.DataFrame, spec: DatasetSpec, refs: References, by: tuple[str, ...] = ("window_start", "window_end", "model_version")
) -> pl.DataFrame:
    """Live performance per group (window or day, and model version): realized from labels, estimated (CBPE)."""
    parts = []
    for (version,), rows in scored.filter(pl.col("window_start").is_not_null()).partition_by("model_version", as_dict=True).items():
        ctx = refs.get(int(version))
        if ctx is not None and ctx.loss_estimator is not None:  # regression: each record's estimated loss (DLE)
            squared, absolute = ctx.loss_estimator.losses(served_frame(rows, spec, ctx), prediction=PREDICTION)
            rows = rows.with_columns(pl.Series(ESTIMATED_SQUARED_ERROR, squared), pl.Series(ESTIMATED_ABSOLUTE_ERROR, absolute))
        calibrator = ctx.calibrator if ctx else None
        threshold = (ctx.reference.threshold if ctx else None) or 0.5
        parts.append(
            live_performance(rows, spec.problem_type, by=by, threshold=threshold, calibrator=calibrator)
        )
    return pl.concat(parts, how="diagonal_relaxed").sort(by[0], "model_version") if parts else pl.DataFrame()
