"""Dataset specification: the YAML file that tells the engine everything it knows about a dataset.

Nothing in the engine knows the demo dataset; another dataset is only another spec. A spec is
validated with pydantic and every error names the offending field (``features.categorical[2]``).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Literal

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

#: Partition column every table carries, derived from the event time (UTC calendar date).
EVENT_DATE = "event_date"
#: Lineage columns added at ingestion.
LINEAGE_COLUMNS = ["_source_file", "_source_sha256", "_source_row", "_batch_id", "_ingested_at"]


class SpecError(ValueError):
    """A dataset spec is invalid; the message names the file and every offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(_Strict):
    type: ColumnType = Field(description="Logical type; values that fail to parse go to quarantine.")
    required: bool = Field(True, description="A file without this column is rejected.")
    description: str = ""


class Landing(_Strict):
    uri: str = Field(description="Folder or s3:// prefix where raw files arrive (relative to AIFLOW_HOME if not absolute).")
    formats: list[FileFormat] = Field(default_factory=lambda: ["csv", "parquet", "jsonl"])
    null_values: list[str] = Field(default_factory=lambda: [""], description="CSV strings read as null.")


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
    key: list[str] = Field(min_length=1, description="Unique key; de-duplication keeps the latest ingested row.")
    event_time: str = Field(description="Timestamp column; its UTC date partitions every table.")
    quality: Quality = Field(default_factory=Quality)

    @model_validator(mode="after")
    def _columns_exist(self) -> TableSpec:
        known = set(self.columns)
        problems: list[str] = []

        def need(field: str, names: list[str]) -> None:
            for i, name in enumerate(names):
                if name not in known:
                    problems.append(f"{field}[{i}]: column {name!r} is not declared in columns")

        need("key", self.key)
        need("event_time", [self.event_time])
        need("quality.not_null", self.quality.not_null)
        need("quality.ranges", list(self.quality.ranges))
        need("quality.clip", list(self.quality.clip))
        need("quality.max_null_rate", [c for c in self.quality.max_null_rate if c not in ("key", "target")])
        if self.event_time in self.columns and self.columns[self.event_time].type not in ("datetime", "date"):
            problems.append(f"event_time: column {self.event_time!r} must be of type datetime or date")
        for name in self.columns:
            if name.startswith("_") or name == EVENT_DATE:
                problems.append(f"columns.{name}: names starting with '_' and {EVENT_DATE!r} are reserved")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def polars_schema(self) -> dict[str, pl.DataType]:
        return {name: POLARS_TYPES[c.type] for name, c in self.columns.items()}

    @property
    def required_columns(self) -> list[str]:
        return [name for name, c in self.columns.items() if c.required]


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
    latency_budget_ms_per_1k: float | None = Field(None, gt=0, description="Largest prediction time for 1,000 rows (ms).")
    allow_input_change: bool | None = Field(None, description="Allow inputs that differ from the champion's.")
    off: list[GateName] = Field(default_factory=list, description="Gates not required: recorded as 'not required', never 'passed'.")


class DatasetSpec(TableSpec):
    """The main table plus everything the lifecycle needs to learn from it."""

    problem_type: Literal["classification", "regression"]
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
        known = set(self.columns)
        problems: list[str] = []
        if self.target.source not in known:
            problems.append(f"target.source: column {self.target.source!r} is not declared in columns")
        if self.target.name in known:
            problems.append(f"target.name: {self.target.name!r} clashes with a declared column")
        if self.target.kind == "threshold" and self.problem_type != "classification":
            problems.append("target.kind: 'threshold' makes a classification target; set problem_type: classification")
        if self.target.kind == "identity" and self.problem_type != "regression":
            problems.append("target.kind: 'identity' makes a regression target; set problem_type: regression")
        for field in ("categorical", "numeric"):
            for i, name in enumerate(getattr(self.features, field)):
                where = f"features.{field}[{i}]"
                if name not in known:
                    problems.append(f"{where}: column {name!r} is not declared in columns")
                if name in self.known_after_event or name == self.target.source:
                    problems.append(f"{where}: column {name!r} is known only after the event (target leakage)")
        if "hour" in self.features.calendar and self.columns.get(self.event_time, None) and self.columns[self.event_time].type == "date":
            problems.append(f"features.calendar: 'hour' needs a datetime event_time; {self.event_time!r} is a date")
        for i, name in enumerate(self.known_after_event):
            if name not in known:
                problems.append(f"known_after_event[{i}]: column {name!r} is not declared in columns")
        for i, name in enumerate(self.slices):
            if name not in known:
                problems.append(f"slices[{i}]: column {name!r} is not declared in columns")
        sides = {t.name: t for t in self.side_tables}
        if self.name in sides:
            problems.append(f"side_tables: name {self.name!r} is the main table's name")
        for i, join in enumerate(self.joins):
            side = sides.get(join.table)
            if side is None:
                problems.append(f"joins[{i}].table: no side table named {join.table!r}")
                continue
            for name in join.by:
                if name not in known or name not in side.columns:
                    problems.append(f"joins[{i}].by: column {name!r} must be declared in both {self.name!r} and {side.name!r}")
            for name in join.columns:
                if name not in side.columns:
                    problems.append(f"joins[{i}].columns: column {name!r} is not declared in side table {side.name!r}")
            try:
                pl.Series([dt.datetime(2020, 1, 1)]).dt.offset_by(join.tolerance)
            except Exception:
                problems.append(f"joins[{i}].tolerance: {join.tolerance!r} is not a duration like '3h' or '90m'")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def tables(self) -> list[TableSpec]:
        """The main table followed by the side tables."""
        return [self, *self.side_tables]

    def side(self, name: str) -> TableSpec:
        return next(t for t in self.side_tables if t.name == name)


def _format_error(source: str, exc: ValidationError) -> str:
    lines = [f"invalid dataset spec {source}:"]
    for err in exc.errors():
        where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"]).replace(".[", "[")
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  - {where or '(root)'}: {msg}")
    return "\n".join(lines)


def parse_spec(data: dict, source: str = "<dict>") -> DatasetSpec:
    """Validate a spec given as a dict; raise :class:`SpecError` naming every bad field."""
    try:
        return DatasetSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_error(source, exc)) from None


def load_spec(path: str | os.PathLike) -> DatasetSpec:
    """Load and validate a dataset spec from a YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
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
    specs = [load_spec(p) for p in paths]
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
