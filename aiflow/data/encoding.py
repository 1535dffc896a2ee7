"""The one encoder: every rule that turns a row into model inputs, used by every path that builds them.

Two steps, each implemented once:

1. **Raw values → encoded feature columns** (:func:`encode`, :func:`add_calendar`, :func:`clip_outliers`,
   with a fitted :class:`FeatureState`): a categorical value becomes its vocabulary code (1.. in order
   of frequency; unseen, rare or null → 0, the unknown code), a numeric value is standardised with the
   stored mean and standard deviation (null or NaN → 0.0, the mean), the event time gives calendar
   codes in the dataset's timezone. The features stage writes these columns (``cat_*``, ``num_*``,
   ``cal_*``) to the features table.
2. **Encoded feature columns → model input arrays** (:func:`to_arrays`): ``cat`` (int64, n x c) in the
   model's categorical column order, a code outside ``[0, cardinality)`` or null → 0; ``num``
   (float32, n x m) in the model's numeric column order, null, NaN or ±inf → 0.0. Training streams
   pyarrow record batches through it; evaluation and batch scoring pass Polars frames (through
   :meth:`~aiflow.models.bundle.LoadedModel.predict`); online serving passes raw records through
   :func:`raw_to_arrays`, which is step 1 then step 2.

Why here, in ``aiflow.data``: the features stage (``aiflow.data.features``) must call step 1, and the
import layers (``cli > serving | monitoring | train > evaluation > models > data > storage > spec``)
only let a module be used by ``data`` and everything above it if it lives in ``data`` or lower. It
imports only :mod:`aiflow.spec` and :mod:`aiflow.data.parse` (typing raw values), so serving may use it
without reaching the data plane's refresh code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from aiflow.data.parse import ROW, split_typed, with_row_numbers
from aiflow.spec import DatasetSpec, TableSpec

CAT, NUM, CAL = "cat_", "num_", "cal_"
#: Code of an unseen, rare or null category (and of any code outside a column's cardinality).
UNKNOWN = 0
#: Embedding sizes of calendar codes (largest code + 1): hour 0-23, weekday 1-7, month 1-12, day 1-366.
CALENDAR_CARDINALITY = {"hour": 24, "weekday": 8, "month": 13, "day_of_year": 367}

STATE_SCHEMA = {
    "kind": pl.String(),
    "column": pl.String(),
    "value": pl.String(),
    "index": pl.Int32(),
    "mean": pl.Float64(),
    "std": pl.Float64(),
    "count": pl.Int64(),
}


# ------------------------------------------------------------------------------------ columns
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


# -------------------------------------------------------------------------------- fitted state
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


@dataclass(frozen=True)
class ModelInputs:
    """The model's input columns (features-table names) in the order of the arrays, with cardinalities."""

    categorical: list[str]  # vocabulary codes, then calendar codes
    cardinalities: list[int]  # embedding rows per categorical column (codes 0..cardinality-1; 0 = unknown)
    numeric: list[str]


def model_inputs(spec: DatasetSpec, state: FeatureState) -> ModelInputs:
    """Input columns and cardinalities of a model trained on features encoded with ``state``."""
    cols = feature_columns(spec)
    cards = [len(state.vocab.get(c, [])) + 1 for c in spec.features.categorical]
    cards += [CALENDAR_CARDINALITY[c.removeprefix(CAL)] for c in cols.calendar]
    return ModelInputs([*cols.categorical, *cols.calendar], cards, cols.numeric)


# ------------------------------------------------------------------- raw values → feature columns
def clip_outliers(lf: pl.LazyFrame, table: TableSpec) -> pl.LazyFrame:
    """Clip numeric columns into the spec's bounds (outliers are kept, not removed)."""
    exprs = [
        pl.col(column).clip(bounds.min, bounds.max).cast(lf.collect_schema()[column])
        for column, bounds in table.quality.clip.items()
    ]
    return lf.with_columns(exprs) if exprs else lf


def add_calendar(lf: pl.LazyFrame, spec: DatasetSpec) -> pl.LazyFrame:
    """Calendar features of the event time, in the dataset's timezone."""
    event = pl.col(spec.event_time)
    if spec.columns[spec.event_time].type == "date":  # a calendar day has no timezone to convert
        event = event.cast(pl.Datetime("us")).dt.replace_time_zone(spec.timezone)
    local = event.dt.convert_time_zone(spec.timezone)
    parts = {"hour": local.dt.hour(), "weekday": local.dt.weekday(), "month": local.dt.month(), "day_of_year": local.dt.ordinal_day()}
    return lf.with_columns(parts[name].cast(pl.Int16).alias(CAL + name) for name in spec.features.calendar)


def encode(lf: pl.LazyFrame, state: FeatureState, spec: DatasetSpec) -> pl.LazyFrame:
    """Apply a fitted state: categorical indices (0 = unknown) and standardised numerics."""
    exprs = []
    for column in spec.features.categorical:
        vocab = state.vocab.get(column, [])
        mapping = pl.DataFrame({"v": vocab, "i": pl.int_range(1, len(vocab) + 1, eager=True, dtype=pl.Int32)})
        exprs.append(
            pl.col(column)
            .cast(pl.String)
            .replace_strict(mapping["v"], mapping["i"], default=UNKNOWN, return_dtype=pl.Int32)
            .alias(CAT + column)
        )
    for column in numeric_inputs(spec):
        mean, std = state.stats.get(column, (0.0, 1.0))
        exprs.append(((pl.col(column).cast(pl.Float64) - mean) / (std or 1.0)).fill_null(0.0).fill_nan(0.0).cast(pl.Float32).alias(NUM + column))
    return lf.with_columns(exprs)


# --------------------------------------------------------------- feature columns → model inputs
Rows = pl.DataFrame | pa.RecordBatch | pa.Table


def to_arrays(
    rows: Rows, categorical: Sequence[str], cardinalities: Sequence[int], numeric: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Encoded feature columns → ``(cat int64 n x c, num float32 n x m)``, C-contiguous, columns in the given order.

    A code that is null, negative or ``>= cardinality`` becomes 0 (unknown); a numeric that is null,
    NaN or ±inf becomes 0.0 (the standardised mean). ``rows`` is a pyarrow record batch or table, or a
    Polars frame (its input columns handed over to Arrow without copying); the rules run once, on Arrow
    columns copied straight into the output arrays (the training stream's hot path).

    Raises:
        ValueError: an input column is missing from ``rows``, or the cardinalities do not match.
    """
    if len(categorical) != len(cardinalities):
        raise ValueError(f"{len(categorical)} categorical columns but {len(cardinalities)} cardinalities")
    names = rows.columns if isinstance(rows, pl.DataFrame) else rows.schema.names
    missing = [c for c in [*categorical, *numeric] if c not in names]
    if missing:
        raise ValueError(f"features lack the model input column(s) {missing}")
    table = rows.select(*categorical, *numeric).to_arrow() if isinstance(rows, pl.DataFrame) else rows
    n = table.num_rows
    cat = np.zeros((n, len(categorical)), dtype=np.int64)
    for i, (name, card) in enumerate(zip(categorical, cardinalities, strict=True)):
        column = table.column(name)
        if column.null_count:
            column = pc.fill_null(column, UNKNOWN)
        cat[:, i] = column.to_numpy(zero_copy_only=False)
        np.putmask(cat[:, i], (cat[:, i] < 0) | (cat[:, i] >= card), UNKNOWN)
    num = np.zeros((n, len(numeric)), dtype=np.float32)
    for i, name in enumerate(numeric):
        num[:, i] = table.column(name).to_numpy(zero_copy_only=False)  # nulls arrive as NaN
    np.nan_to_num(num, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return cat, num


# ------------------------------------------------------------------------------ raw → model inputs
def typed_raw(records: pl.DataFrame | Sequence[Mapping[str, object]], spec: DatasetSpec) -> pl.DataFrame:
    """Raw records (values as typed Python/Polars values or as text) typed to the spec, side columns as floats.

    Columns the spec declares but a record lacks are null, as at ingestion; a side-table column
    (``<table>_<column>``, the value the as-of join would bring) that is absent is null too.

    Raises:
        ValueError: a value does not fit its column's type, or the event time is missing.
    """
    frame = records if isinstance(records, pl.DataFrame) else pl.DataFrame(list(records), infer_schema_length=None)
    sides = [c for c in numeric_inputs(spec) if c not in spec.columns]
    raw = frame.select([c for c in frame.columns if c in spec.columns])
    good, bad, _ = split_typed(with_row_numbers(raw), spec)
    if bad.height:
        reasons = "; ".join(f"record {row - 1}: {reason}" for row, reason in bad.select(ROW, "_reason").iter_rows())
        raise ValueError(f"cannot encode raw records: {reasons}")
    side_values = [
        (frame[c].cast(pl.Float64) if c in frame.columns else pl.Series(c, [None] * frame.height, pl.Float64)).alias(c) for c in sides
    ]
    return good.drop(ROW).with_columns(side_values)


def encode_raw(records: pl.DataFrame | Sequence[Mapping[str, object]], state: FeatureState, spec: DatasetSpec) -> pl.DataFrame:
    """Raw records → the features table's feature columns (typed, clipped as cleansing does, calendar, encoded)."""
    lf = clip_outliers(typed_raw(records, spec).lazy(), spec)
    return encode(add_calendar(lf, spec), state, spec).select(feature_columns(spec).all).collect()


def raw_to_arrays(
    records: pl.DataFrame | Sequence[Mapping[str, object]],
    state: FeatureState,
    spec: DatasetSpec,
    inputs: ModelInputs | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw records → model input arrays, exactly as training saw the same rows (default inputs: from ``state``)."""
    inputs = inputs or model_inputs(spec, state)
    return to_arrays(encode_raw(records, state, spec), inputs.categorical, inputs.cardinalities, inputs.numeric)
