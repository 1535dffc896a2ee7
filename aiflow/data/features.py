"""Features: pure ``LazyFrame -> LazyFrame`` functions driven by the dataset spec.

* calendar features from the event time in the dataset's timezone,
* side tables joined as of the event time (the latest side row at or before it, within a tolerance),
* categorical columns encoded with a stored vocabulary (index 0 = unknown or null),
* numeric columns standardised with stored statistics (nulls become 0, the mean).

The vocabulary and the statistics form the :class:`FeatureState`, fitted here once on the training
window of the split policy and stored, so a later day is encoded exactly like the first. The encoding
rules themselves (calendar codes, vocabulary lookup, scaling) live in :mod:`aiflow.data.encoding`, the
one encoder that training, evaluation and serving also use; this module applies them to whole tables.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from aiflow.data.encoding import (
    CAL,
    CAT,
    NUM,
    STATE_SCHEMA,
    FeatureColumns,
    FeatureState,
    add_calendar,
    encode,
    encode_columns,
    feature_columns,
    numeric_inputs,
)
from aiflow.data.split import Windows, frame_windows
from aiflow.spec import EVENT_DATE, POLARS_TYPES, DatasetSpec

#: The encoding rules live in :mod:`aiflow.data.encoding`; re-exported here for the data-plane callers.
__all__ = [
    "CAL", "CAT", "NUM", "STATE_SCHEMA", "FeatureColumns", "FeatureState", "add_calendar", "build_features", "encode",
    "feature_columns", "fit_on_training_window", "fit_state", "join_side_tables", "numeric_inputs", "output_columns", "output_schema",
    "side_dates_affected", "side_window", "training_window",
]  # fmt: skip

_SIDE_TIME = "_side_event_time"


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


def join_side_tables(lf: pl.LazyFrame, sides: dict[str, pl.LazyFrame], spec: DatasetSpec) -> pl.LazyFrame:
    """As-of join every side table named in ``spec.joins``; columns come in as ``<table>_<column>``.

    Rows come out sorted by the event time, then the key.
    """
    return _join_in_place(lf, sides, spec).sort(spec.event_time, *spec.key)


def _join_sorted(lf: pl.LazyFrame, sides: dict[str, pl.LazyFrame], spec: DatasetSpec) -> pl.LazyFrame:
    """:func:`join_side_tables` by sorting the rows first, then one as-of join per side table (the cheaper
    order when every row is kept, as in :func:`build_features`; same values and order)."""
    time = spec.event_time
    lf = lf.sort(time, *spec.key)
    for join in spec.joins:
        lf = lf.join_asof(
            _side(sides, spec, join), left_on=time, right_on=_SIDE_TIME, by=join.by, strategy="backward",
            tolerance=join.tolerance, check_sortedness=False,  # sorted above; polars cannot verify sortedness within by-groups
        ).drop(_SIDE_TIME, strict=False)
    return lf


def _side(sides: dict[str, pl.LazyFrame], spec: DatasetSpec, join) -> pl.LazyFrame:
    """The side table of ``join``: its by columns, its event time and its joined columns as ``<table>_<column>``."""
    return (
        sides[join.table]
        .select(
            *join.by,
            pl.col(spec.side(join.table).event_time).alias(_SIDE_TIME),
            *(pl.col(c).alias(f"{join.table}_{c}") for c in join.columns),
        )
        .sort(_SIDE_TIME)
    )


def _join_in_place(lf: pl.LazyFrame, sides: dict[str, pl.LazyFrame], spec: DatasetSpec) -> pl.LazyFrame:
    """:func:`join_side_tables` without the sort: the rows of ``lf`` keep their order.

    The as-of join runs on the distinct ``(by, event time)`` pairs of ``lf`` only (585k for the demo
    benchmark's 10M flights), and a hash join brings the matched side values back to every row. Rows with the same pair
    get the same side row either way, so the values are those of a row-by-row as-of join, without sorting
    every column of ``lf`` first: :func:`build_features` sorts once at the end, on its narrow output.
    """
    time = spec.event_time
    for join in spec.joins:
        side = _side(sides, spec, join)
        points = lf.select(*join.by, time).unique().sort(time)
        matched = points.join_asof(
            side, left_on=time, right_on=_SIDE_TIME, by=join.by, strategy="backward", tolerance=join.tolerance,
            check_sortedness=False,  # sorted above; polars cannot verify sortedness within by-groups
        ).drop(_SIDE_TIME, strict=False)
        lf = lf.join(matched, on=[*join.by, time], how="left", nulls_equal=True, maintain_order="left")
    return lf


def training_window(lf: pl.LazyFrame, spec: DatasetSpec) -> pl.LazyFrame:
    """The training rows of the split policy over ``lf`` (:mod:`aiflow.data.split`): encoders are fitted on
    these only (no look-ahead). A relative policy counts back from the newest event date of ``lf``."""
    return lf.filter(frame_windows(lf, spec.split).train())


def fit_on_training_window(silver: pl.LazyFrame, sides: dict[str, pl.LazyFrame], spec: DatasetSpec) -> tuple[FeatureState, Windows]:
    """The state fitted on the split policy's training rows of ``silver`` (on every row when the window holds none),
    and the windows that chose them.

    The windows and the training rows come from silver's event dates, and the side tables are joined to those rows
    only: the as-of join keeps every row as it is, so these are the rows of joining everything first and filtering
    after, without joining (three times: windows, count, fit) the rows the filter drops.
    """
    windows = frame_windows(silver, spec.split)
    train = silver.filter(windows.train())
    rows = train if train.select(pl.len()).collect().item() else silver
    return fit_state(join_side_tables(rows, sides, spec), spec), windows


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


def build_features(
    silver: pl.LazyFrame, sides: dict[str, pl.LazyFrame], state: FeatureState, spec: DatasetSpec
) -> pl.LazyFrame:
    """Silver rows → model-ready rows (ids, target, features, event_date)."""
    # the main table's columns are encoded first and only the columns the output and the joins need are sorted
    # (narrow codes instead of every raw silver column); the side columns are encoded after the join, which
    # sorted by (event time, key): event_date is the UTC date of the event time, so that is already
    # (event_date, event time, key) order
    ids = [c for c in output_columns(spec) if c in silver.collect_schema()]
    by = [c for j in spec.joins for c in j.by]
    lf = add_calendar(silver, spec).with_columns(encode_columns(state, spec.features.categorical, spec.features.numeric))
    encoded = [CAT + c for c in spec.features.categorical] + [NUM + c for c in spec.features.numeric]
    lf = lf.select(list(dict.fromkeys([*ids, *encoded, *by, *(CAL + c for c in spec.features.calendar)])))
    lf = _join_sorted(lf, sides, spec)
    side_inputs = [c for c in numeric_inputs(spec) if c not in spec.features.numeric]
    return lf.with_columns(encode_columns(state, [], side_inputs)).select(output_columns(spec))


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


def serving_rows(silver: pl.LazyFrame, sides: dict[str, pl.LazyFrame], spec: DatasetSpec) -> pl.DataFrame:
    """Silver rows as an application sends them to the online server: the raw feature columns, the event
    time and each side value as of the event (``<table>_<column>``), plus the key and the target (to send
    back later as feedback). ``sides`` must cover the rows' event times back to the joins' tolerance."""
    cols = list(dict.fromkeys([*spec.key, spec.event_time, *spec.features.categorical, *spec.features.numeric]))
    joined = [f"{j.table}_{c}" for j in spec.joins for c in j.columns]
    return join_side_tables(silver, sides, spec).select(*cols, *joined, spec.target.name).collect()
