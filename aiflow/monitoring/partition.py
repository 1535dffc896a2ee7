"""One monitoring window, computed whole: what a partition run of the drift, live-performance and decisions assets does.

A window (``spec.monitoring.window``, keyed by its first date: the Dagster partition key) is computed
again from scratch whenever it is asked for: its rows in the history tables are replaced, never
appended, so a re-run (late labels, a backfill, a retried run) leaves one set of rows and one
decision per window. :func:`window_status` is what the monitoring sensor reads to know which windows
are complete in data time and what they hold (served rows, labels), so it can ask for a window again
when its labels change.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import polars as pl

from aiflow.monitoring import history, shadow, windows
from aiflow.monitoring.drift import drift_report_html
from aiflow.monitoring.monitor import (
    BATCH,
    LABEL,
    MIN_RECENT_ROWS,
    ONLINE,
    PREDICTION,
    References,
    WindowDrift,
    _compare,
    _drift_options,
    _scored,
    performance,
    policy_of,
    served_frame,
    thresholds_for,
)
from aiflow.monitoring.policy import Decision, Thresholds, decide, rejudged, superseding_drops
from aiflow.monitoring.retrain import _thresholds, run_key, window_signals
from aiflow.serving.batch import SCORE
from aiflow.spec import EVENT_DATE, DatasetSpec, window_start_of
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables


@dataclass
class WindowDriftResult:
    """The drift of one window: the served records (online) and the batch-scored rows of its dates."""

    online: WindowDrift | None = None
    batch: list[WindowDrift] = field(default_factory=list)
    thresholds: Thresholds | None = None
    skipped: list[str] = field(default_factory=list)


def window_status(lake: Lake, spec: DatasetSpec) -> pl.DataFrame:
    """Per window of the champion's served records: ``window_start``, ``rows``, ``labelled`` and ``complete``
    (data time moved past it: a later window holds records), oldest first. Windows before the spec's
    ``monitoring.start`` are left out (they have no partition)."""
    scored = _scored(lake, spec)
    if not scored.height:
        return pl.DataFrame(schema={"window_start": pl.Date, "rows": pl.UInt32, "labelled": pl.UInt32, "complete": pl.Boolean})
    placed = scored.filter(pl.col("window_start").is_not_null())
    newest = placed["window_start"].max()
    first = windows.first_window(spec)
    return (
        placed.group_by("window_start")
        .agg(pl.len().alias("rows"), pl.col(LABEL).is_not_null().sum().cast(pl.UInt32).alias("labelled"))
        .with_columns((pl.col("window_start") < newest).alias("complete"))
        .filter(pl.col("window_start") >= first)
        .sort("window_start")
    )


def window_drift(lake: Lake, spec: DatasetSpec, refs: References, start: dt.date, *, report_store: ArtifactStore | None = None) -> WindowDriftResult:
    """Drift of the window starting ``start``: its served records against the reference of the champion version
    that served most of them, and its batch-scored rows against the reference of each version that scored them.

    Args:
        report_store: where Evidently's HTML report of the served records goes (the lake root); None: no report.
    """
    result = WindowDriftResult()
    rows = _scored(lake, spec, start)
    if rows.height:
        version = windows.serving_version(rows)
        ctx = refs.get(version)
        if ctx is None:
            result.skipped.append(f"window {start}: model version {version} has no reference profile (trained before profiles existed)")
        else:
            result.thresholds = thresholds_for(lake, spec, ctx)
            current = served_frame(rows.filter(pl.col("model_version") == version), spec, ctx)
            result.online = _compare(lake, spec, ctx, start, current, ONLINE, report_store, recent=recent_frame(lake, spec, ctx, start))
    else:
        result.skipped.append(f"window {start}: no served record of '{spec.name}' in it")
    result.batch = _batch_window(lake, spec, refs, start, result.skipped)
    return result


def recent_frame(lake: Lake, spec: DatasetSpec, ctx, start: dt.date) -> pl.DataFrame:
    """The recent range the window starting ``start`` is compared with: the served records of the window before it
    (whatever version served them, encoded by ``ctx``'s encoder), or, with fewer than ``MIN_RECENT_ROWS``, the reference's
    valid rows (the newest rows the model saw)."""
    before = window_start_of(start - dt.timedelta(days=1), spec.monitoring.window)
    rows = _scored(lake, spec, before) if before >= windows.first_window(spec) else pl.DataFrame()
    if rows.height >= MIN_RECENT_ROWS:
        return served_frame(rows, spec, ctx)
    return ctx.reference.valid()


def _batch_window(lake: Lake, spec: DatasetSpec, refs: References, start: dt.date, skipped: list[str]) -> list[WindowDrift]:
    predictions, features = Tables.predictions(spec.name), Tables.features(spec.name)
    if not lake.exists(predictions):
        return []
    first, last = spec.monitoring.window_bounds(start)
    ids = [*dict.fromkeys([*spec.key, EVENT_DATE])]
    scored = lake.scan(predictions).filter(pl.col(EVENT_DATE).is_between(first, last)).select(*ids, SCORE, "model_version").collect()
    out = []
    for (version,), part in sorted(scored.partition_by("model_version", as_dict=True).items()):
        ctx = refs.get(int(version))
        if ctx is None:
            skipped.append(f"batch window {start}: model version {version} has no reference profile")
            continue
        rows = (
            lake.scan(features).filter(pl.col(EVENT_DATE).is_between(first, last))
            .select(*ids, *ctx.reference.columns, pl.col(spec.target.name).cast(pl.Float64).alias(LABEL)).collect()
            .join(part.drop("model_version"), on=ids, how="inner")
        )  # fmt: skip
        current = rows.select(*ctx.reference.columns, pl.col(SCORE).alias(PREDICTION), LABEL)
        out.append(_compare(lake, spec, ctx, start, current, BATCH, None))
    return out


def window_performance(lake: Lake, spec: DatasetSpec, refs: References, start: dt.date) -> pl.DataFrame:
    """Live performance of the window starting ``start`` per model version (realized from the labels back so far,
    estimated before they come), written over the window's earlier rows (and its days' rows in the daily table)."""
    rows = _scored(lake, spec, start)
    if not rows.height:
        return pl.DataFrame()
    now = dt.datetime.now(dt.UTC)
    frame = performance(rows, spec, refs).with_columns(pl.lit(now, pl.Datetime("us", "UTC")).alias("computed_at"))
    daily = performance(rows, spec, refs, by=("event_date", "model_version")).with_columns(pl.lit(now, pl.Datetime("us", "UTC")).alias("computed_at"))
    history.replace_performance(lake, spec.name, start, frame)
    history.replace_performance(lake, spec.name, start, daily, daily=True)
    return frame


@dataclass(frozen=True)
class WindowDecision:
    decision: Decision
    labelled: int
    run_key: str | None
    challenger: shadow.ShadowOutcome | None = None


def decide_window(lake: Lake, spec: DatasetSpec, start: dt.date, *, running: bool, evaluator: str) -> WindowDecision:
    """The policy's verdict on the window starting ``start``, from its drift and performance rows and the decisions on
    earlier windows (hysteresis, cooldown and budget), recorded over any earlier decision on the same window.

    With ``monitoring.retrain.promotion: shadow``, the challenger (if one scored in this window) is judged first on its
    live evidence (:mod:`aiflow.monitoring.shadow`: promoted, retired or kept in shadow, applied to the aliases as
    ``evaluator``); a retrain verdict waits while a challenger stays in shadow or was just promoted, and a retired
    challenger ends the cooldown of the retrain that trained it. A decisive metric drop (``decisive_drop`` times its
    threshold) on a window after the one the challenger's retrain was decided on supersedes it (retired): the world
    moved past its training data, and this window's retrain replaces it.

    Raises:
        LookupError: the window has no drift row yet (its drift has to be computed first).
    """
    signals = [s for s in window_signals(lake, spec) if s.window_start <= start]
    if not signals or signals[-1].window_start != start:
        raise LookupError(f"window {start} of '{spec.name}' has no drift row: compute its drift first")
    window = signals[-1]
    own = [s for s in signals if s.model_version == window.model_version]  # a new champion starts its hysteresis afresh
    decided = history.read_decisions(lake, spec.name)
    past = [Decision.from_row(r) for r in decided.filter(pl.col("window_start") < start).iter_rows(named=True)]
    before = decided.filter(pl.col("window_start") == start)
    # the challenger first: a retire now (or recorded on this or an earlier window) ends its retrain's cooldown
    outcome = shadow.judge_window(lake, spec, start, actor=evaluator)
    policy, thresholds = policy_of(spec), _thresholds(lake, spec, window.model_version)
    drops = superseding_drops(policy, thresholds, window, past)
    if outcome is not None and outcome.verdict.action == "wait" and drops:  # the world moved past its training data
        retrained_on = max(d.window_start for d in past if d.action == "retrain")
        why = f"a decisive {' and '.join(drops)} drop in window {start} (after the window {retrained_on} its retrain was decided on)"
        outcome = shadow.supersede(lake, spec, outcome, why, actor=evaluator)
    retire = decided.filter((pl.col("window_start") <= start) & (pl.col("challenger_action") == "retire"))["window_end"].to_list()
    if outcome is not None and outcome.verdict.action == "retire":
        retire.append(window.window_end)
    later = decided.filter((pl.col("window_start") > start) & (pl.col("action") == "retrain"))["window_start"]
    earlier = Decision.from_row(before.row(-1, named=True)) if before.height else None
    decision = rejudged(decide(policy, thresholds, own, past, running=running, retired=retire), earlier,
                        later.min() if later.len() else None, labelled=window.labelled)  # fmt: skip
    asked = earlier is not None and earlier.action == "retrain"
    if outcome is not None and decision.action == "retrain" and not asked and outcome.verdict.action in ("wait", "promote"):
        why = "stays in shadow" if outcome.verdict.action == "wait" else "was just promoted"
        decision = replace(decision, action="skip", reason=f"skip: challenger v{outcome.challenger} {why} ({decision.reason})")
    key = run_key(spec.name, decision) if decision.action == "retrain" else None
    # a window re-judged after its verdict on the challenger was applied keeps that verdict (the alias moved on since)
    kept = before.select(shadow.COLUMNS).row(-1, named=True) if before.height and before["challenger_action"][-1] else {}
    row = decision.to_row() | {"run_key": key, "evaluator": evaluator, "labelled": window.labelled} | (outcome.row() if outcome else kept)
    history.replace_decision(lake, spec.name, row)
    return WindowDecision(decision, window.labelled, key, outcome)


def window_report(lake: Lake, spec: DatasetSpec, refs: References, start: dt.date, store: ArtifactStore) -> str | None:
    """Write Evidently's HTML drift report of the window starting ``start`` (its served records against the serving
    version's reference) under ``store``, headed by the dataset, the window, the model version and aiflow's drifted
    count (input features only; Evidently's table also lists the prediction); its URI, or None without served records."""
    rows = _scored(lake, spec, start)
    if not rows.height:
        return None
    version = windows.serving_version(rows)
    ctx = refs.get(version)
    if ctx is None:
        return None
    rows = rows.filter(pl.col("model_version") == version)
    current = served_frame(rows, spec, ctx).drop(LABEL)
    kinds = {**ctx.reference.columns, PREDICTION: "numeric"}
    html = drift_report_html(ctx.reference.train(), current, kinds, **_drift_options(spec) | {"max_rows": 20_000})
    first, last = spec.monitoring.window_bounds(start)
    drifted = history.drift_summary(lake, spec.name).filter(
        (pl.col("source") == "online") & (pl.col("window_start") == start) & (pl.col("model_version") == version)
    )
    count = f"{int(drifted['drifted'][0])} of {int(drifted['columns'][0])} input features drifted (aiflow)" if drifted.height else ""
    header = (
        f'<div style="font-family:sans-serif;padding:8px;border-bottom:1px solid #ccc"><b>{spec.name}</b> — window {first} to {last} '
        f"({spec.monitoring.window}, {spec.timezone}) — model v{version} — {rows.height:,} served records. {count}</div>"
    )
    html = html.replace("<body>", "<body>" + header, 1) if "<body>" in html else header + html
    return store.put_bytes(history.reports_path(spec.name, "online", start, version), html.encode())
