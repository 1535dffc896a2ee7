"""The monitoring history of a dataset, as Delta tables any reader can query (Polars, DuckDB, Spark).

* ``monitoring/<dataset>/drift``: one row per (source, window, column): the Evidently method, score,
  threshold and verdict, the column's importance, the model version whose reference it was compared with.
  A window's rows are replaced when it is computed again (same source and model version).
* ``monitoring/<dataset>/performance``: one row per (window, model version): rows, labelled rows, label
  delay, realized and estimated metrics. Rewritten whole on each computation (labels keep arriving, so
  a window's realized metric changes); small (windows × versions).
* ``monitoring/<dataset>/performance_daily``: the same per (event date, model version).
* ``monitoring/<dataset>/thresholds``: the alarm thresholds calibrated on each model version's reference.
* ``monitoring/<dataset>/decisions``: every evaluation of the retraining policy, fired or skipped, with
  the signal values, the thresholds and the reason; one row per window (re-judged: replaced).
* ``monitoring/<dataset>/retrain_outcomes``: what each retrain a window asked for ended in (promoted at once on decisive
  offline evidence, a challenger in shadow, an earlier champion reinstated), written by the retrain run when its
  champion step flips the alias; append-only (a separate table: a retrain ends while the window's monitoring may be
  re-judging it). :func:`read_decisions` shows the latest outcome of each window beside its decision.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from aiflow.storage.lake import Lake, dates_predicate

DRIFT_SCHEMA = {
    "source": pl.String, "window_start": pl.Date, "window_end": pl.Date, "model_version": pl.Int64, "column": pl.String,
    "kind": pl.String, "method": pl.String, "score": pl.Float64, "threshold": pl.Float64, "drifted": pl.Boolean,
    "importance": pl.Float64, "reference_rows": pl.Int64, "current_rows": pl.Int64, "computed_at": pl.Datetime("us", "UTC"),
    # drifted = drifted against the reference and (where a recent range was compared) against the recent range
    "drifted_reference": pl.Boolean, "recent_score": pl.Float64, "recent_drifted": pl.Boolean, "recent_rows": pl.Int64,
}  # fmt: skip
THRESHOLDS_SCHEMA = {
    "model_version": pl.Int64, "metric": pl.String, "drift_share": pl.Float64, "estimated_drop": pl.Float64,
    "realized_drop": pl.Float64, "reference_metric": pl.Float64, "source": pl.String, "chunks": pl.Int64,
    "noise_std": pl.Float64, "noise_rows": pl.Int64, "noise_k": pl.Float64, "computed_at": pl.Datetime("us", "UTC"),
}  # fmt: skip
#: ``aiflow.monitoring.policy.Decision.to_row()`` plus how and when it was evaluated and the run it requested.
DECISIONS_SCHEMA = {
    "window_start": pl.Date, "window_end": pl.Date, "model_version": pl.Int64, "action": pl.String, "reason": pl.String,
    "fired": pl.String, "signal_drift_share": pl.Float64, "signal_estimated_drop": pl.Float64, "signal_realized_drop": pl.Float64,
    "threshold_metric": pl.String, "threshold_drift_share": pl.Float64, "threshold_estimated_drop": pl.Float64,
    "threshold_realized_drop": pl.Float64, "reference_metric": pl.Float64, "threshold_source": pl.String,
    "run_key": pl.String, "evaluator": pl.String, "labelled": pl.Int64, "evaluated_at": pl.Datetime("us", "UTC"),
    # the challenger in shadow after this window (aiflow.monitoring.shadow): null without one
    "challenger_version": pl.Int64, "challenger_action": pl.String, "challenger_reason": pl.String, "challenger_gain": pl.Float64,
    "challenger_gain_low": pl.Float64, "challenger_gain_high": pl.Float64, "challenger_rows": pl.Int64, "challenger_windows": pl.Int64,
}  # fmt: skip

#: One row per retrain run that a window asked for, as its champion step left the aliases.
OUTCOMES_SCHEMA = {
    "window_start": pl.Date, "run_id": pl.String, "registered_version": pl.Int64, "alias": pl.String, "served_version": pl.Int64,
    "outcome": pl.String, "outcome_reason": pl.String, "recorded_at": pl.Datetime("us", "UTC"),
}  # fmt: skip
#: The outcome columns :func:`read_decisions` adds to each decision (null: no retrain, or not ended yet).
OUTCOME_COLUMNS = {"retrain_outcome": "outcome", "retrain_version": "registered_version", "retrain_served_version": "served_version",
                   "retrain_outcome_reason": "outcome_reason"}  # fmt: skip


def drift_table(dataset: str) -> str:
    return f"monitoring/{dataset}/drift"


def performance_table(dataset: str) -> str:
    return f"monitoring/{dataset}/performance"


def thresholds_table(dataset: str) -> str:
    return f"monitoring/{dataset}/thresholds"


def decisions_table(dataset: str) -> str:
    return f"monitoring/{dataset}/decisions"


def outcomes_table(dataset: str) -> str:
    return f"monitoring/{dataset}/retrain_outcomes"


def reports_path(dataset: str, source: str, window_start: dt.date, model_version: int) -> str:
    """Where a window's Evidently HTML report goes, relative to the lake root."""
    return f"monitoring/{dataset}/reports/{source}-{window_start.isoformat()}-v{model_version}.html"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def read(lake: Lake, table: str, schema: dict) -> pl.DataFrame:
    """The whole table (empty with ``schema`` when it does not exist yet)."""
    return lake.scan_or_empty(table, schema).collect()


def replace_drift(lake: Lake, dataset: str, rows: pl.DataFrame) -> int:
    """Write one window's per-column drift rows (``DRIFT_SCHEMA`` without ``computed_at``, one source, window and
    model version), replacing that window's earlier rows for the same source and version in one commit."""
    frame = rows.with_columns(pl.lit(_now()).alias("computed_at")).select(
        [pl.col(c).cast(t) for c, t in DRIFT_SCHEMA.items()]
    )
    (source, start, version), *more = frame.select("source", "window_start", "model_version").unique().rows()
    if more:
        raise ValueError("replace_drift writes one (source, window, model version) at a time")
    predicate = f"source = '{source}' AND {window_predicate(start)} AND model_version = {int(version)}"
    return lake.replace_where(drift_table(dataset), frame, predicate, metadata={"writer": "aiflow monitoring"})


def window_predicate(start: dt.date) -> str:
    return dates_predicate([start], "window_start")


def replace_performance(lake: Lake, dataset: str, start: dt.date, frame: pl.DataFrame, *, daily: bool = False) -> int | None:
    """Replace one window's rows of the performance table (per window, or ``daily`` rows of its dates) by ``frame``."""
    table = performance_table(dataset) + ("_daily" if daily else "")
    if not frame.height and not lake.exists(table):
        return None
    if daily:
        dates = frame["event_date"].to_list() if frame.height else []
        if not dates:
            return None
        predicate = dates_predicate(dates, "event_date")
    else:
        predicate = window_predicate(start)
    return lake.replace_where(table, frame, predicate, metadata={"writer": "aiflow monitoring"})


def computed_windows(lake: Lake, dataset: str, source: str) -> set[tuple[dt.date, int]]:
    """(window_start, model_version) pairs already in the drift table for ``source``."""
    done = read(lake, drift_table(dataset), DRIFT_SCHEMA).filter(pl.col("source") == source)
    return set(done.select("window_start", "model_version").unique().iter_rows())


def drift_summary(lake: Lake, dataset: str, importance: dict[int, dict[str, float]] | None = None) -> pl.DataFrame:
    """Per (source, window, model version): columns, drifted columns, share and importance-weighted share."""
    drift = read(lake, drift_table(dataset), DRIFT_SCHEMA).filter(~pl.col("column").is_in(["prediction", "label"]))
    return (
        drift.group_by("source", "window_start", "window_end", "model_version")
        .agg(
            pl.len().alias("columns"),
            pl.col("drifted").sum().alias("drifted"),
            pl.col("drifted").mean().alias("drift_share"),
            pl.when(pl.col("importance").sum() > 0)
            .then((pl.col("importance") * pl.col("drifted").cast(pl.Float64)).sum() / pl.col("importance").sum())
            .otherwise(pl.col("drifted").mean())
            .alias("weighted_drift_share"),
            pl.col("current_rows").max().alias("rows"),
        )
        .sort("source", "window_start", "model_version")
    )


def write_performance(lake: Lake, dataset: str, frame: pl.DataFrame, *, daily: bool = False) -> int:
    """Replace the performance table (per window, or ``daily``) by ``frame`` (one commit)."""
    table = performance_table(dataset) + ("_daily" if daily else "")
    if not lake.exists(table):
        return lake.append(table, frame, metadata={"writer": "aiflow monitoring"})
    return lake.overwrite(table, frame, metadata={"writer": "aiflow monitoring"})


def read_performance(lake: Lake, dataset: str, *, daily: bool = False) -> pl.DataFrame:
    table = performance_table(dataset) + ("_daily" if daily else "")
    return lake.scan(table).collect() if lake.exists(table) else pl.DataFrame()


def save_thresholds(lake: Lake, dataset: str, model_version: int, thresholds: dict) -> int:
    row = {**{k: thresholds.get(k) for k in THRESHOLDS_SCHEMA}, "model_version": model_version, "computed_at": _now()}
    return lake.append(thresholds_table(dataset), pl.DataFrame([row], schema=THRESHOLDS_SCHEMA), metadata={"writer": "aiflow monitoring"})


def read_thresholds(lake: Lake, dataset: str, model_version: int) -> dict | None:
    """The thresholds calibrated for ``model_version`` (the latest computation), or None."""
    rows = read(lake, thresholds_table(dataset), THRESHOLDS_SCHEMA).filter(pl.col("model_version") == model_version)
    return rows.sort("computed_at").row(-1, named=True) if rows.height else None


def append_decisions(lake: Lake, dataset: str, rows: list[dict]) -> int | None:
    """Append policy evaluations (``DECISIONS_SCHEMA`` fields) in one commit."""
    if not rows:
        return None
    now = _now()
    frame = pl.DataFrame([{k: r.get(k) for k in DECISIONS_SCHEMA} | {"evaluated_at": r.get("evaluated_at") or now} for r in rows], schema=DECISIONS_SCHEMA)
    return lake.append(decisions_table(dataset), frame, metadata={"writer": "aiflow monitoring"})


def replace_decision(lake: Lake, dataset: str, row: dict) -> int:
    """Record the decision on one window, replacing an earlier decision on it (a window re-judged when its labels arrive)."""
    frame = pl.DataFrame([{k: row.get(k) for k in DECISIONS_SCHEMA} | {"evaluated_at": row.get("evaluated_at") or _now()}], schema=DECISIONS_SCHEMA)
    return lake.replace_where(decisions_table(dataset), frame, window_predicate(row["window_start"]), metadata={"writer": "aiflow monitoring"})


def record_outcome(lake: Lake, dataset: str, window_start: dt.date, *, run_id: str, registered_version: int, alias: str,
                   served_version: int, outcome: str, reason: str) -> int:  # fmt: skip
    """Record what the retrain the window starting ``window_start`` asked for ended in (``outcome``: ``promoted``,
    ``challenger``, ``reinstated`` or ``canary``)."""
    row = {"window_start": window_start, "run_id": run_id, "registered_version": registered_version, "alias": alias,
           "served_version": served_version, "outcome": outcome, "outcome_reason": reason, "recorded_at": _now()}  # fmt: skip
    return lake.append(outcomes_table(dataset), pl.DataFrame([row], schema=OUTCOMES_SCHEMA), metadata={"writer": "aiflow retrain"})


def read_outcomes(lake: Lake, dataset: str) -> pl.DataFrame:
    return read(lake, outcomes_table(dataset), OUTCOMES_SCHEMA).sort("window_start", "recorded_at")


def read_decisions(lake: Lake, dataset: str) -> pl.DataFrame:
    """Every decision, oldest window first; a table written before a column existed reads it as nulls. Beside each, the
    latest outcome of the retrain it asked for (``OUTCOME_COLUMNS``; null without one)."""
    frame = read(lake, decisions_table(dataset), DECISIONS_SCHEMA)
    missing = [pl.lit(None, t).alias(c) for c, t in DECISIONS_SCHEMA.items() if c not in frame.columns]
    decided = frame.with_columns(missing).select(list(DECISIONS_SCHEMA))
    latest = (
        read_outcomes(lake, dataset).group_by("window_start").agg(pl.all().sort_by("recorded_at").last())
        .select("window_start", *(pl.col(source).alias(name) for name, source in OUTCOME_COLUMNS.items()))
    )  # fmt: skip
    return decided.join(latest, on="window_start", how="left").sort("window_start", "evaluated_at")
