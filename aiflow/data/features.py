"""Features: pure ``LazyFrame -> LazyFrame`` functions driven by the dataset spec.

* calendar features from the event time in the dataset's timezone,
* side tables joined as of the event time (the latest side row at or before it, within a tolerance),
* categorical columns encoded with a stored vocabulary (index 0 = unknown or null),
* numeric columns standardised with stored statistics (nulls become 0, the mean).

The vocabulary and the statistics form the :class:`FeatureState`, fitted once on the training
window of the split policy and stored, so a later day is encoded exactly like the first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from aiflow.spec import EVENT_DATE, POLARS_TYPES, DatasetSpec

CAT, NUM, CAL = "cat_", "num_", "cal_"
_SIDE_TIME = "_side_event_time"

STATE_SCHEMA = {
    "kind": pl.String(),
    "column": pl.String(),
    "value": pl.String(),
    "index": pl.Int32(),
    "mean": pl.Float64(),
    "std": pl.Float64(),
    "count": pl.Int64(),
}


def numeric_inputs(spec: DatasetSpec) -> list[str]:
    """Numeric input columns after the side-table joins (side columns are ``<table>_<column>``)."""
    return [*spec.features.numeric, *(f"{j.table}_{c}" for j in spec.joins for c in j.columns)]


@dataclass(frozen=True)
class FeatureColumns:
    categorical: list[str]
    numeric: list[str]
    calendar: list[str]

    @property
    def all(self) -> list[str]:
        return [*self.categorical, *self.numeric, *self.calendar]


def feature_columns(spec: DatasetSpec) -> FeatureColumns:
    """Names of the model inputs in the features table, by kind."""
    return FeatureColumns(
        categorical=[CAT + c for c in spec.features.categorical],
        numeric=[NUM + c for c in numeric_inputs(spec)],
        calendar=[CAL + c for c in spec.features.calendar],
    )


def output_columns(spec: DatasetSpec) -> list[str]:
    """Every column of the features table, in order."""
    ids = list(dict.fromkeys([*spec.key, spec.event_time, *spec.slices]))
    return [*ids, spec.target.name, *feature_columns(spec).all, EVENT_DATE]


def output_schema(spec: DatasetSpec) -> dict[str, pl.DataType]:
    """Expected type of every column of the features table."""
    cols = feature_columns(spec)
    schema: dict[str, pl.DataType] = {}
    for name in output_columns(spec):
        if name in spec.columns:
            schema[name] = POLARS_TYPES[spec.columns[name].type]
        elif name == spec.target.name:
            schema[name] = pl.Float64() if spec.target.kind == "identity" else pl.Int8()
        elif name in cols.categorical:
            schema[name] = pl.Int32()
        elif name in cols.numeric:
            schema[name] = pl.Float32()
        elif name in cols.calendar:
            schema[name] = pl.Int16()
        else:
            schema[name] = pl.Date()
    return schema


def add_calendar(lf: pl.LazyFrame, spec: DatasetSpec) -> pl.LazyFrame:
    """Calendar features of the event time, in the dataset's timezone."""
    event = pl.col(spec.event_time)
    if spec.columns[spec.event_time].type == "date":  # a calendar day has no timezone to convert
        event = event.cast(pl.Datetime("us")).dt.replace_time_zone(spec.timezone)
    local = event.dt.convert_time_zone(spec.timezone)
    parts = {"hour": local.dt.hour(), "weekday": local.dt.weekday(), "month": local.dt.month(), "day_of_year": local.dt.ordinal_day()}
    return lf.with_columns(parts[name].cast(pl.Int16).alias(CAL + name) for name in spec.features.calendar)


def join_side_tables(lf: pl.LazyFrame, sides: dict[str, pl.LazyFrame], spec: DatasetSpec) -> pl.LazyFrame:
    """As-of join every side table named in ``spec.joins``; columns come in as ``<table>_<column>``."""
    time = spec.event_time
    lf = lf.sort(time, *spec.key)
    for join in spec.joins:
        side_spec = spec.side(join.table)
        side = (
            sides[join.table]
            .select(
                *join.by,
                pl.col(side_spec.event_time).alias(_SIDE_TIME),
                *(pl.col(c).alias(f"{join.table}_{c}") for c in join.columns),
            )
            .sort(_SIDE_TIME)
        )
        lf = lf.join_asof(
            side, left_on=time, right_on=_SIDE_TIME, by=join.by, strategy="backward", tolerance=join.tolerance,
            check_sortedness=False,  # sorted above; polars cannot verify sortedness within by-groups
        ).drop(_SIDE_TIME, strict=False)
    return lf


@dataclass
class FeatureState:
    """Fitted encoders: a vocabulary per categorical column and (mean, std) per numeric column."""

    vocab: dict[str, list[str]] = field(default_factory=dict)
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)
    rows: int = 0

    def to_frame(self) -> pl.DataFrame:
        rows = [
            {"kind": "vocab", "column": c, "value": v, "index": i + 1, "mean": None, "std": None, "count": self.rows}
            for c, values in self.vocab.items()
            for i, v in enumerate(values)
        ]
        rows += [
            {"kind": "stats", "column": c, "value": None, "index": None, "mean": m, "std": s, "count": self.rows}
            for c, (m, s) in self.stats.items()
        ]
        return pl.DataFrame(rows, schema=STATE_SCHEMA)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> FeatureState:
        state = cls(rows=int(frame["count"].max() or 0) if frame.height else 0)
        vocab = frame.filter(pl.col("kind") == "vocab").sort("column", "index")
        for (column,), group in vocab.group_by("column", maintain_order=True):
            state.vocab[column] = group["value"].to_list()
        for row in frame.filter(pl.col("kind") == "stats").iter_rows(named=True):
            state.stats[row["column"]] = (row["mean"], row["std"])
        return state


def training_window(lf: pl.LazyFrame, spec: DatasetSpec) -> pl.LazyFrame:
    """Rows before the validation split: encoders are fitted on these only (no look-ahead)."""
    return lf.filter(pl.col(EVENT_DATE) < spec.split.valid_from)


def fit_state(lf: pl.LazyFrame, spec: DatasetSpec) -> FeatureState:
    """Fit vocabularies (most frequent first) and standardisation statistics on ``lf``.

    ``lf`` must already carry the joined side-table columns (see :func:`join_side_tables`).
    """
    cats, nums = spec.features.categorical, numeric_inputs(spec)
    frame = lf.select(*cats, *nums).collect()
    state = FeatureState(rows=frame.height)
    for column in cats:
        counts = frame[column].drop_nulls().value_counts(sort=True).filter(pl.col("count") >= spec.features.min_category_count)
        state.vocab[column] = counts.sort(["count", column], descending=[True, False])[column].cast(pl.String).to_list()
    for column in nums:
        values = frame[column].cast(pl.Float64)
        mean, std = values.mean(), values.std()
        state.stats[column] = (float(mean) if mean is not None else 0.0, float(std) if std else 1.0)
    return state


def encode(lf: pl.LazyFrame, state: FeatureState, spec: DatasetSpec) -> pl.LazyFrame:
    """Apply a fitted state: categorical indices (0 = unknown) and standardised numerics."""
    exprs = []
    for column in spec.features.categorical:
        vocab = state.vocab.get(column, [])
        mapping = pl.DataFrame({"v": vocab, "i": pl.int_range(1, len(vocab) + 1, eager=True, dtype=pl.Int32)})
        exprs.append(
            pl.col(column).cast(pl.String).replace_strict(mapping["v"], mapping["i"], default=0, return_dtype=pl.Int32).alias(CAT + column)
        )
    for column in numeric_inputs(spec):
        mean, std = state.stats.get(column, (0.0, 1.0))
        exprs.append(((pl.col(column).cast(pl.Float64) - mean) / (std or 1.0)).fill_null(0.0).fill_nan(0.0).cast(pl.Float32).alias(NUM + column))
    return lf.with_columns(exprs)


def build_features(
    silver: pl.LazyFrame, sides: dict[str, pl.LazyFrame], state: FeatureState, spec: DatasetSpec
) -> pl.LazyFrame:
    """Silver rows → model-ready rows (ids, target, features, event_date)."""
    lf = join_side_tables(add_calendar(silver, spec), sides, spec)
    # the join sorted by (event time, key); event_date is the UTC date of the event time, so that is
    # already (event_date, event time, key) order: no second sort of every column
    return encode(lf, state, spec).select(output_columns(spec))


def _reach_days(spec: DatasetSpec, join_table: str) -> int:
    """Whole days an as-of join with ``join_table`` can look back, rounded up."""
    join = next(j for j in spec.joins if j.table == join_table)
    start = dt.datetime(2000, 1, 1)
    reach = pl.Series([start]).dt.offset_by(join.tolerance)[0] - start
    return reach.days + (1 if reach.seconds or reach.microseconds else 0)


def side_window(dates: list[dt.date], spec: DatasetSpec, join_table: str) -> tuple[dt.date, dt.date]:
    """First and last side-table event dates needed to join the main-table rows of ``dates``."""
    return min(dates) - dt.timedelta(days=_reach_days(spec, join_table)), max(dates)


def side_dates_affected(side_dates: list[dt.date], spec: DatasetSpec, join_table: str) -> list[dt.date]:
    """Main-table dates whose features change when these side-table dates change."""
    reach = _reach_days(spec, join_table)
    return sorted({d + dt.timedelta(days=k) for d in side_dates for k in range(reach + 1)})
