"""Monitoring windows in data time: the inference log cut by the event time of the records it scored.

A window is a calendar day, week (Monday to Sunday) or month of event time in the dataset's timezone
(``spec.monitoring.window``); it is keyed by its first date, which is also its Dagster partition key.
Decisions are keyed on these windows, never on the wall clock, so replaying the same data gives the
same windows. A window is *complete* once the log holds a record of a later window (data time moved
past it); only complete windows are monitored.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re

import polars as pl

from aiflow.data.encoding import encode_raw, feature_columns
from aiflow.serving.feedback import SCHEMA as LABEL_SCHEMA
from aiflow.serving.feedback import labels_table
from aiflow.serving.inference_log import SCHEMA as LOG_SCHEMA
from aiflow.serving.inference_log import log_table
from aiflow.spec import DatasetSpec, window_start_of
from aiflow.storage.lake import Lake

EVENT = "event_time"


def window_expr(date: pl.Expr, window: str) -> pl.Expr:
    """Polars: the start of the calendar window (``daily``, ``weekly``: Monday, ``monthly``: the 1st) of each date."""
    if window == "daily":
        return date
    if window == "weekly":
        return date.dt.truncate("1w")
    if window == "monthly":
        return date.dt.month_start()
    raise ValueError(f"unknown monitoring window {window!r}: daily, weekly or monthly")


def first_window(spec: DatasetSpec) -> dt.date:
    """The first monitored window: the one holding ``spec.monitoring.start`` (the partitions' first key)."""
    return window_start_of(spec.monitoring.start, spec.monitoring.window)


def window_end_expr(start: pl.Expr, window: str) -> pl.Expr:
    """Polars: the last date of the window starting at ``start``."""
    if window == "daily":
        return start
    if window == "weekly":
        return start + pl.duration(days=6)
    return start.dt.month_end()


def scored_log(
    lake: Lake, spec: DatasetSpec, *, variants: tuple[str, ...] | None = None, window: dt.date | None = None
) -> pl.DataFrame:
    """The successful rows of the inference log with their event time, event date and window.

    Columns: the log's (``aiflow.serving.inference_log.SCHEMA``) plus ``event_time`` (UTC), ``event_date`` (in the
    dataset's timezone),
    ``window_start`` and ``window_end``. A record whose event time cannot be read has nulls there: it cannot be
    placed in data time and is not monitored. Delta versions never change,
    so the frame of one log version is computed once per process (the drift and the performance steps of a
    run share it). With ``window`` (a window start), only that window's rows: the scan drops every row whose event
    date text lies outside the window (a day of margin for the timezone) before anything is parsed or joined, so a
    window costs what its rows cost, not what the whole history costs.
    """
    table = log_table(spec.name)
    if not lake.exists(table):
        return pl.DataFrame(schema={**LOG_SCHEMA, EVENT: pl.Datetime("us", "UTC"), "event_date": pl.Date, "window_start": pl.Date, "window_end": pl.Date})
    options = tuple(sorted((lake.storage_options or {}).items()))
    bounds = None
    if window is not None:
        first, last = spec.monitoring.window_bounds(window)
        bounds = (first - dt.timedelta(days=1), last + dt.timedelta(days=1))
    frame = _scored_log(
        lake.uri(table), lake.version(table), options, spec.event_time, spec.monitoring.window, spec.timezone, variants, bounds
    )
    return frame.filter(pl.col("window_start") == window) if window is not None else frame


@functools.lru_cache(maxsize=8)
def _scored_log(
    uri: str, version: int, options: tuple, event_time: str, window: str, timezone: str, variants: tuple[str, ...] | None,
    bounds: tuple[dt.date, dt.date] | None,
) -> pl.DataFrame:  # fmt: skip
    lf = pl.scan_delta(uri, version=version, storage_options=dict(options) or None).filter(pl.col("status") == "ok")
    if variants:
        lf = lf.filter(pl.col("variant").is_in(list(variants)))
    if bounds is not None:  # the event date as text (ISO): a cheap pre-filter, exact placement below; unreadable rows kept
        day = pl.col("input").str.extract(rf'{re.escape(json.dumps(event_time))}\s*:\s*"(\d{{4}}-\d{{2}}-\d{{2}})')
        lf = lf.filter(day.is_null() | day.is_between(pl.lit(bounds[0].isoformat()), pl.lit(bounds[1].isoformat())))
    frame = lf.collect()
    text = event_texts(frame["input"], event_time)
    return (
        frame.with_columns(parse_times(text).alias(EVENT))
        .with_columns(pl.col(EVENT).dt.convert_time_zone(timezone).dt.date().alias("event_date"))  # the dataset's calendar
        .with_columns(window_expr(pl.col("event_date"), window).alias("window_start"))
        .with_columns(window_end_expr(pl.col("window_start"), window).alias("window_end"))
    )


def event_texts(inputs: pl.Series, event_time: str) -> pl.Series:
    """The event time (text) of each logged record (flat JSON objects, as the server writes them).

    A regex reads the string value in one pass (6x faster than a JSON path on 250k records); a record it
    cannot read (a number, escapes, an odd layout) goes through Polars' JSON path, so both agree.
    """
    key = re.escape(json.dumps(event_time))
    found = inputs.str.extract(rf'{key}\s*:\s*"([^"\\]*)"')
    missed = found.is_null() & inputs.is_not_null()
    if not missed.any():
        return found
    return found.scatter(missed.arg_true(), inputs.filter(missed).str.json_path_match(f"$.{event_time}"))


def parse_times(text: pl.Series) -> pl.Series:
    """ISO-8601 text → UTC datetimes: with an offset or ``Z`` (the common case, parsed first), naive (taken as UTC,
    as at ingestion), or a date; null when unreadable. Only the rows the first format misses take the slow path."""
    t = text.str.replace(r"Z$", "+00:00")
    parsed = t.str.to_datetime(format="%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_zone="UTC")
    missed = parsed.is_null() & t.is_not_null()
    if not missed.any():
        return parsed
    rest = pl.DataFrame({"t": t.filter(missed)}).select(_parse_time(pl.col("t")))["t"]
    return parsed.scatter(missed.arg_true(), rest)


def _parse_time(text: pl.Expr) -> pl.Expr:
    """ISO-8601 text → UTC datetime: with an offset or ``Z``, naive (taken as UTC, as at ingestion), or a date."""
    t = text.str.replace(r"Z$", "+00:00")
    return pl.coalesce(
        t.str.to_datetime(format="%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_zone="UTC"),
        t.str.to_datetime(format="%Y-%m-%dT%H:%M:%S%.f", strict=False).dt.replace_time_zone("UTC"),
        t.str.to_datetime(format="%Y-%m-%d %H:%M:%S%.f", strict=False).dt.replace_time_zone("UTC"),
        t.str.to_date(format="%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
    )


def complete_windows(log: pl.DataFrame) -> list[dt.date]:
    """Window starts the log has moved past (a later window holds records), oldest first."""
    placed = log.filter(pl.col(EVENT).is_not_null())
    if not placed.height:
        return []
    newest = placed["window_start"].max()
    return sorted(w for w in placed["window_start"].unique().to_list() if w < newest)


def serving_version(rows: pl.DataFrame) -> int:
    """The champion version that scored most of ``rows`` (the one whose reference they are compared with)."""
    champion = rows.filter(pl.col("variant") == "champion")
    counts = (champion if champion.height else rows).group_by("model_version").len().sort(["len", "model_version"], descending=True)
    return int(counts["model_version"][0])


def features_of(rows: pl.DataFrame, spec: DatasetSpec, state) -> pl.DataFrame:
    """The logged records (their ``input`` JSON) → the features-table columns the model saw (the one encoder).

    Raises:
        ValueError: a logged record no longer fits the spec's types (named by its position).
    """
    if not rows.height:
        return pl.DataFrame(schema={c: pl.Float64 for c in feature_columns(spec).all})
    records = pl.read_ndjson("\n".join(rows["input"].to_list()).encode(), infer_schema_length=None)
    return encode_raw(records, state, spec)


def labels_frame(lake: Lake, spec: DatasetSpec, request_ids: pl.Series | None = None) -> pl.DataFrame:
    """The labels table, or its rows for ``request_ids`` (empty with its schema when no label came yet)."""
    lf = lake.scan_or_empty(labels_table(spec.name), LABEL_SCHEMA)
    if request_ids is not None:
        lf = lf.filter(pl.col("request_id").is_in(request_ids.implode()))
    return lf.collect()
