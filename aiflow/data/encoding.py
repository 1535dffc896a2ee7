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

For online serving the rules are also compiled (:class:`Encoder`, cached on the loaded model): a small batch of
raw records is encoded from the compiled lookups in plain Python and numpy, without the Polars path's fixed cost
per call (~10 ms). It is the same rules, not a second copy of them: where the fast path cannot type a value exactly
as the Polars path does, the batch takes the Polars path; the tests compare both on random records.

Why here, in ``aiflow.data``: the features stage (``aiflow.data.features``) must call step 1, and the
import layers (``cli > serving | monitoring | train > evaluation > models > data > storage > spec``)
only let a module be used by ``data`` and everything above it if it lives in ``data`` or lower. It
imports only :mod:`aiflow.spec` and :mod:`aiflow.data.parse` (typing raw values), so serving may use it
without reaching the data plane's refresh code.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from aiflow.data.parse import _FALSE, _TRUE, ROW, split_typed, with_row_numbers
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
    return lf.with_columns(encode_columns(state, spec.features.categorical, numeric_inputs(spec)))


def encode_columns(state: FeatureState, categorical: Sequence[str], numeric: Sequence[str]) -> list[pl.Expr]:
    """The expressions of :func:`encode` for some of the columns (``cat_<c>`` and ``num_<c>``)."""
    exprs = []
    for column in categorical:
        vocab = state.vocab.get(column, [])
        mapping = pl.DataFrame({"v": vocab, "i": pl.int_range(1, len(vocab) + 1, eager=True, dtype=pl.Int32)})
        exprs.append(
            pl.col(column)
            .cast(pl.String)
            .replace_strict(mapping["v"], mapping["i"], default=UNKNOWN, return_dtype=pl.Int32)
            .alias(CAT + column)
        )
    for column in numeric:
        mean, std = state.stats.get(column, (0.0, 1.0))
        scaled = ((pl.col(column).cast(pl.Float64) - mean) / (std or 1.0)).cast(pl.Float32)  # NaN stays NaN
        exprs.append(scaled.fill_nan(None).fill_null(0.0).alias(NUM + column))  # the fills run on float32 (half the bytes)
    return exprs


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
    """Raw records → model input arrays, exactly as training saw the same rows (default inputs: from ``state``).

    Small batches of records take the compiled :class:`Encoder`'s fast path (same rules, same arrays);
    a caller that encodes many batches with one model should keep an :class:`Encoder` (the loaded
    model does) instead of compiling one per call.
    """
    return Encoder.compile(spec, state, inputs).arrays(records)


def polars_raw_to_arrays(
    records: pl.DataFrame | Sequence[Mapping[str, object]], state: FeatureState, spec: DatasetSpec, inputs: ModelInputs
) -> tuple[np.ndarray, np.ndarray]:
    """The Polars path of :func:`raw_to_arrays` (step 1 with the features stage's expressions, then step 2)."""
    return to_arrays(encode_raw(records, state, spec), inputs.categorical, inputs.cardinalities, inputs.numeric)


# ------------------------------------------------------------------- the compiled small-input path
#: Batches up to this many records take the fast path (the Polars path's fixed cost is ~10 ms a call;
#: the fast path costs tens of microseconds a record: see ``benchmarks/encoder.py``).
FAST_PATH_MAX_RECORDS = 256

_SPACE = " \t\n\r\x0b\x0c"  # stripped like Polars' strip_chars; other leading/trailing characters → Polars path
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity)|nan", re.IGNORECASE)
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_DATE_TEXT = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_DATETIME_TEXT = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
_INT_RANGE = {"int32": (-(2**31), 2**31), "int64": (-(2**63), 2**63)}
#: Python value kinds (besides None) one column of a batch may mix and still be typed as the Polars path types it.
_KINDS = {
    "string": [{str}],
    "int32": [{str}, {int}, {int, str}],
    "int64": [{str}, {int}, {int, str}],
    "float64": [{str}, {int}, {float}, {int, float}, {int, str}],
    "float32": [{str}, {int}, {float}, {int, float}, {int, str}],
    "bool": [{str}, {bool}],
    "datetime": [{str}, {dt.datetime}],
    "date": [{str}, {dt.date}],
}
_SIDE_KINDS = [{int}, {float}, {int, float}]
_CALENDAR: dict[str, Callable[[dt.datetime], int]] = {
    "hour": lambda t: t.hour,
    "weekday": lambda t: t.isoweekday(),
    "month": lambda t: t.month,
    "day_of_year": lambda t: t.timetuple().tm_yday,
}


class _Unsure(Exception):
    """A value outside the fast path's envelope: the batch goes through the Polars path instead."""


def _kind(value: object) -> type:
    kind = type(value)
    return dt.date if kind is dt.date else kind  # datetime is a date subclass: exact types only


def _strip(text: str) -> str:
    stripped = text.strip(_SPACE)
    if stripped != text.strip():  # whitespace Polars may not strip (or may strip differently)
        raise _Unsure
    return stripped


def _float_text(text: str) -> float:
    stripped = _strip(text)
    if not _FLOAT_TEXT.fullmatch(stripped):
        raise _Unsure
    return float(stripped)


def _int_value(value: object, target: str) -> int:
    low, high = _INT_RANGE[target]
    if isinstance(value, str):
        stripped = _strip(value)
        if not _INT_TEXT.fullmatch(stripped):
            raise _Unsure  # "12.0", "1e3", "x": typed (or refused) by the Polars path
        value = int(stripped)
    if not low <= value < high:  # out of range: the Polars path refuses it
        raise _Unsure
    return value


def _float_value(value: object, target: str) -> float:
    if isinstance(value, str):
        number = _float_text(value)
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise _Unsure
        number = float(value)
    else:
        number = value
    return float(np.float32(number)) if target == "float32" else number


def _bool_value(value: object, target: str) -> bool:
    if isinstance(value, bool):
        return value
    low = _strip(value)
    if not low.isascii():
        raise _Unsure
    low = low.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _Unsure


def _date_value(value: object, target: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    match = _DATE_TEXT.fullmatch(_strip(value))
    if not match:
        raise _Unsure
    try:
        return dt.date(*map(int, match.groups()))
    except ValueError as exc:
        raise _Unsure from exc


def _datetime_value(value: object, target: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    match = _DATETIME_TEXT.fullmatch(_strip(value))
    if not match:
        raise _Unsure
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = dt.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
            int((fraction or "0")[:6].ljust(6, "0")), tzinfo=dt.UTC,
        )  # fmt: skip
    except ValueError as exc:
        raise _Unsure from exc
    if zone and zone != "Z":
        offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        moment -= offset if zone[0] == "+" else -offset
    return moment


def _datetime_shape(text: str) -> tuple:
    match = _DATETIME_TEXT.fullmatch(text.strip(_SPACE))
    if not match:
        raise _Unsure
    sep = text.strip(_SPACE)[10:11]
    return sep, match.group(4) is None, match.group(7) is None, (match.group(8) or "")[:1]


_TYPERS: dict[str, Callable[[object, str], object]] = {
    "string": lambda value, target: value,
    "int32": _int_value,
    "int64": _int_value,
    "float64": _float_value,
    "float32": _float_value,
    "bool": _bool_value,
    "date": _date_value,
    "datetime": _datetime_value,
}


@dataclass
class Encoder:
    """The one encoder compiled for one (spec, state, model inputs): raw records → model input arrays.

    :meth:`arrays` gives exactly what :func:`polars_raw_to_arrays` gives. Small batches of records
    (``FAST_PATH_MAX_RECORDS`` or fewer, as online serving sends) are encoded from tables compiled here
    once (vocabulary dicts, means and standard deviations, clip bounds, the timezone) with the same
    rules in plain Python and numpy; a value the fast path cannot type exactly as ingestion does (a
    value that does not parse, an unusual spelling, an out-of-range integer) sends the whole batch
    through the Polars path, which types it, or refuses it with the same error naming the field.
    Data frames and large batches always take the Polars path.
    """

    spec: DatasetSpec
    state: FeatureState
    inputs: ModelInputs
    fast: bool = field(init=False, default=True)  # False: this spec/state has a rule the fast path does not cover

    @classmethod
    def compile(cls, spec: DatasetSpec, state: FeatureState, inputs: ModelInputs | None = None) -> Encoder:
        """Compile the lookups of ``state`` for ``spec`` (default inputs: from ``state``)."""
        return cls(spec, state, inputs or model_inputs(spec, state))

    def __post_init__(self) -> None:
        spec, state, inputs = self.spec, self.state, self.inputs
        types = {c: col.type for c, col in spec.columns.items()}
        produced = set(feature_columns(spec).all)
        self._types = types
        self._sides = [c for c in numeric_inputs(spec) if c not in spec.columns]
        self._vocab = {c: {v: i + 1 for i, v in enumerate(state.vocab.get(c, []))} for c in spec.features.categorical}
        self._clip = {c: (r.min, r.max) for c, r in spec.quality.clip.items()}
        self._zone = zoneinfo.ZoneInfo(spec.timezone)
        self._event = spec.event_time
        self._event_is_date = types[spec.event_time] == "date"
        cards = dict(zip(inputs.categorical, inputs.cardinalities, strict=False))
        self._cat = [(name, cards.get(name, 0)) for name in inputs.categorical]
        self._num = []
        for name in inputs.numeric:
            mean, std = state.stats.get(name.removeprefix(NUM), (0.0, 1.0))
            self._num.append((name.removeprefix(NUM), mean, std or 1.0))
        self._calendar = [(CAL + c, _CALENDAR[c]) for c in spec.features.calendar]
        self.fast = (
            len(inputs.categorical) == len(inputs.cardinalities)
            and all(c in produced for c in [*inputs.categorical, *inputs.numeric])
            and all(types[c] in ("string", "int32", "int64", "bool") for c in spec.features.categorical)
            and all(types.get(c, "float64") in ("int32", "int64", "float32", "float64", "bool") for c in numeric_inputs(spec))
            and all(
                types[c] in ("int32", "int64", "float32", "float64")
                and (types[c] not in _INT_RANGE or all(b is None or float(b).is_integer() for b in bounds))
                for c, bounds in self._clip.items()
            )
        )

    def arrays(self, records: pl.DataFrame | Sequence[Mapping[str, object]]) -> tuple[np.ndarray, np.ndarray]:
        """Raw records → ``(cat int64 n x c, num float32 n x m)``, as :func:`to_arrays` gives for the features table.

        Raises:
            ValueError: a value does not fit its column's type (naming the record and the field), or the
                event time is missing.
        """
        fast = self.fast_arrays(records)
        return fast if fast is not None else polars_raw_to_arrays(records, self.state, self.spec, self.inputs)

    def fast_arrays(self, records: pl.DataFrame | Sequence[Mapping[str, object]]) -> tuple[np.ndarray, np.ndarray] | None:
        """The fast path's arrays, or None when this batch must take the Polars path (see the class)."""
        if not self.fast or isinstance(records, pl.DataFrame) or not 0 < len(records) <= FAST_PATH_MAX_RECORDS:
            return None
        if not all(isinstance(r, Mapping) for r in records):
            return None
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # overflow to ±inf is the rule (as in Polars' casts)
                return self._encode(records)
        except _Unsure:
            return None

    def _column(self, records: Sequence[Mapping[str, object]], name: str, allowed: list[set[type]]) -> list:
        values = [r.get(name) for r in records]
        kinds = {_kind(v) for v in values if v is not None}
        if kinds and kinds not in allowed:
            raise _Unsure  # a mix of value types the Polars path types by its own supertype rules
        return values

    def _encode(self, records: Sequence[Mapping[str, object]]) -> tuple[np.ndarray, np.ndarray]:
        n = len(records)
        typed: dict[str, list] = {}
        for name, target in self._types.items():
            values = self._column(records, name, _KINDS[target])
            if target == "datetime" and any(isinstance(v, dt.datetime) for v in values):
                if len({v.tzinfo for v in values if v is not None}) > 1:
                    raise _Unsure  # naive and aware datetimes, or several zones, together (Polars refuses the mix)
            if target == "datetime" and len({_datetime_shape(v) for v in values if isinstance(v, str)}) > 1:
                raise _Unsure  # Polars infers one format from the column's first text: other shapes may not parse
            typer = _TYPERS[target]
            typed[name] = [None if v is None else typer(v, target) for v in values]
        for name in self._sides:
            typed[name] = [None if v is None else float(v) for v in self._column(records, name, _SIDE_KINDS)]
        for name, (low, high) in self._clip.items():
            typed[name] = [_clipped(v, low, high, self._types[name]) for v in typed[name]]
        events = typed[self._event]
        if any(e is None for e in events):
            raise _Unsure  # the Polars path refuses the batch, naming the record
        cat = np.zeros((n, len(self._cat)), dtype=np.int64)
        codes = {CAT + c: [UNKNOWN if v is None else vocab.get(_category_text(v), UNKNOWN) for v in typed[c]] for c, vocab in self._vocab.items()}
        if self._calendar:
            local = [self._local(e) for e in events]
            codes.update({name: [part(t) for t in local] for name, part in self._calendar})
        for i, (name, card) in enumerate(self._cat):
            column = cat[:, i]
            column[:] = codes[name]
            np.putmask(column, (column < 0) | (column >= card), UNKNOWN)
        num = np.zeros((n, len(self._num)), dtype=np.float32)
        for i, (name, mean, std) in enumerate(self._num):
            if mean is None:
                continue  # the Polars path's arithmetic with a null mean gives null: 0.0
            raw = np.array([math.nan if v is None else float(v) for v in typed[name]], dtype=np.float64)
            num[:, i] = ((raw - mean) / std).astype(np.float32)
        np.nan_to_num(num, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return cat, num

    def _local(self, event: dt.date) -> dt.datetime:
        if not self._event_is_date:
            return event.astimezone(self._zone)
        midnight = dt.datetime(event.year, event.month, event.day, tzinfo=self._zone)
        other = midnight.replace(fold=1)
        if midnight.utcoffset() != other.utcoffset() or midnight.astimezone(dt.UTC).astimezone(self._zone).replace(tzinfo=None) != midnight.replace(tzinfo=None):
            raise _Unsure  # an ambiguous or missing local midnight: the Polars path's rule (it refuses it)
        return midnight


def _category_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _clipped(value: object, low: float | None, high: float | None, target: str) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return value
    if high is not None and value > high:
        value = high
    if low is not None and value < low:
        value = low
    if target in _INT_RANGE:
        return int(value)
    return float(np.float32(value)) if target == "float32" else float(value)
