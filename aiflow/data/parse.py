"""Parse one landed file into typed rows and quarantined rows, driven by a table spec.

A file that cannot be read at all, or that lacks a required column, raises :class:`RejectedFile`
with the parser's error or the missing column's name. A row whose value does not fit its column's
type is not dropped: it comes back in ``bad`` with the column, the value and the expected type.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import polars as pl

from aiflow.spec import EVENT_DATE, POLARS_TYPES, TableSpec

ROW = "_source_row"
RULE = "_rule"
REASON = "_reason"
RECORD = "_record"

_INT_TYPES = {"int32", "int64"}
_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]


class RejectedFile(Exception):
    """The whole file is unusable; ``str(exc)`` says why (parser error or missing column)."""


@dataclass
class Parsed:
    good: pl.DataFrame  # spec columns typed, unknown columns as strings, event_date, _source_row
    bad: pl.DataFrame  # _source_row, _rule, _reason, _record, event_date (null when unknown)
    new_columns: list[str]

    @property
    def rows(self) -> int:
        return self.good.height + self.bad.height


def _read_raw(data: bytes, fmt: str, table: TableSpec, name: str) -> pl.DataFrame:
    """Read every column as text (Parquet keeps its own types); raise RejectedFile if unreadable."""
    try:
        if fmt == "csv":
            return pl.read_csv(data, infer_schema=False, null_values=table.landing.null_values)
        if fmt == "parquet":
            return pl.read_parquet(io.BytesIO(data))
        if fmt == "jsonl":
            if not data.strip():
                return pl.DataFrame()
            header = pl.read_ndjson(data, infer_schema_length=None, n_rows=None).columns
            return pl.read_ndjson(data, schema={c: pl.String for c in header})
    except pl.exceptions.PolarsError as exc:
        raise RejectedFile(f"{name}: cannot parse as {fmt}: {str(exc).splitlines()[0]}") from exc
    except Exception as exc:
        raise RejectedFile(f"{name}: cannot parse as {fmt}: {type(exc).__name__}: {exc}") from exc
    raise RejectedFile(f"{name}: format {fmt!r} is not supported (csv, parquet, jsonl)")


def _read_csv_typed(data: bytes, table: TableSpec, header: list[str]) -> pl.DataFrame | None:
    """Fast path for clean CSV: let the reader type the columns. None when any value does not fit."""
    overrides: dict[str, pl.DataType] = {}
    for column in header:
        spec = table.columns.get(column)
        overrides[column] = POLARS_TYPES[spec.type] if spec and spec.type not in ("datetime", "date", "bool") else pl.String()
    try:
        return pl.read_csv(data, schema_overrides=overrides, null_values=table.landing.null_values, infer_schema=False)
    except pl.exceptions.PolarsError:
        return None


def _convert(column: str, dtype: pl.DataType, target: str) -> pl.Expr:
    """Expression casting ``column`` to the spec type; failures become null (checked by the caller)."""
    c = pl.col(column)
    if target == "datetime":
        if dtype == pl.String:
            return c.str.strip_chars().str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
        if isinstance(dtype, pl.Datetime):
            return (c.dt.replace_time_zone("UTC") if dtype.time_zone is None else c.dt.convert_time_zone("UTC")).dt.cast_time_unit("us")
        if dtype == pl.Date:
            return c.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        return pl.lit(None, pl.Datetime("us", "UTC"))
    if target == "date":
        if dtype == pl.String:
            return c.str.strip_chars().str.to_date(strict=False)
        return c.cast(pl.Date, strict=False)
    if target == "bool":
        if dtype == pl.String:
            low = c.str.strip_chars().str.to_lowercase()
            return pl.when(low.is_in(_TRUE)).then(True).when(low.is_in(_FALSE)).then(False).otherwise(None)
        return c.cast(pl.Boolean, strict=False)
    polars_type = POLARS_TYPES[target]
    if target in _INT_TYPES and dtype.is_float():
        # a float only becomes an integer when it is a whole number: 1.5 is a bad value, not 1
        return pl.when(c == c.floor()).then(c).otherwise(None).cast(polars_type, strict=False)
    if dtype == pl.String and target in _INT_TYPES:
        # "12" and "12.0" are both 12 (as a Parquet float 12.0 is); "12.5" is a bad value
        text = c.str.strip_chars()
        number = text.cast(pl.Float64, strict=False)
        whole = pl.when(number == number.floor()).then(number).otherwise(None).cast(polars_type, strict=False)
        return pl.coalesce(text.cast(polars_type, strict=False), whole)
    if dtype == pl.String:
        return c.str.strip_chars().cast(polars_type, strict=False)
    return c.cast(polars_type, strict=False)


def split_typed(raw: pl.DataFrame, table: TableSpec, keep: tuple[str, ...] = ()) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Type ``raw`` (which carries ``_source_row``) to the spec and split good rows from bad ones.

    Each column is converted once; the reason and the raw record (JSON) are built for the bad rows
    only. Columns named in ``keep`` are carried through to both outputs.

    Returns:
        (good rows, bad rows with rule/reason/record, new unknown columns).
    """
    raw_columns = [c for c in raw.columns if c != ROW and c not in keep]
    schema = table.columns
    new_columns = [c for c in raw_columns if c not in schema]
    final: dict[str, pl.Expr] = {}
    conversions: list[pl.Expr] = []
    failures: list[tuple[str, str, pl.Expr]] = []
    for column, spec in schema.items():
        if column not in raw.columns:
            final[column] = pl.lit(None, POLARS_TYPES[spec.type]).alias(column)
            continue
        dtype = raw.schema[column]
        if dtype == POLARS_TYPES[spec.type]:
            final[column] = pl.col(column)
            continue
        converted = f"__conv_{column}"
        conversions.append(_convert(column, dtype, spec.type).alias(converted))
        final[column] = pl.col(converted).alias(column)
        failures.append((column, spec.type, pl.col(column).is_not_null() & pl.col(converted).is_null()))

    event = final[table.event_time].alias(table.event_time)
    event_date = (event.dt.date() if schema[table.event_time].type == "datetime" else event).alias(EVENT_DATE)
    type_failed = pl.any_horizontal([f for _, _, f in failures]) if failures else pl.lit(False)
    frame = (raw.with_columns(conversions) if conversions else raw).with_columns((type_failed | event.is_null()).alias("__bad"))
    good_rows, bad_rows = frame.filter(~pl.col("__bad")), frame.filter(pl.col("__bad"))

    good = good_rows.select(
        *(expr.alias(column) for column, expr in final.items()),
        *(pl.col(c).cast(pl.String) for c in new_columns),
        event_date,
        ROW,
        *keep,
    )
    texts = [
        pl.when(failed).then(pl.format(f"column '{column}': cannot parse '{{}}' as {kind}", pl.col(column).cast(pl.String)))
        for column, kind, failed in failures
    ]
    type_reason = pl.coalesce(texts) if texts else pl.lit(None, pl.String)
    reason = (
        pl.when(type_reason.is_null() & event.is_null())
        .then(pl.lit(f"event time column '{table.event_time}' is null"))
        .otherwise(type_reason)
    )
    rule = pl.when(type_reason.is_not_null()).then(pl.lit("type")).otherwise(pl.lit("event_time"))
    bad = bad_rows.select(
        ROW,
        rule.alias(RULE),
        reason.alias(REASON),
        pl.struct([pl.col(c).cast(pl.String) for c in raw_columns]).struct.json_encode().alias(RECORD),
        event_date,
        *keep,
    )
    return good, bad, new_columns


def read_file(data: bytes, fmt: str, table: TableSpec, name: str) -> pl.DataFrame:
    """Read a file (typed by the CSV reader when every value fits; as text otherwise) and check its columns.

    Raises:
        RejectedFile: the format is not accepted, the file cannot be parsed, or a required column is missing.
    """
    if fmt not in table.landing.formats:
        raise RejectedFile(f"{name}: format {fmt!r} is not accepted for table {table.name!r} ({table.landing.formats})")
    typed = None
    if fmt == "csv":
        try:
            header = pl.read_csv(data, n_rows=0, infer_schema=False).columns
        except pl.exceptions.PolarsError as exc:
            raise RejectedFile(f"{name}: cannot parse as csv: {str(exc).splitlines()[0]}") from exc
        _check_required(header, table, name)
        typed = _read_csv_typed(data, table, header)
    raw = typed if typed is not None else _read_raw(data, fmt, table, name)
    _check_required(raw.columns, table, name)
    return raw


def with_row_numbers(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))


def parse_file(data: bytes, fmt: str, table: TableSpec, name: str) -> Parsed:
    """Parse and type one file.

    Args:
        data: the file's bytes.
        fmt: ``csv``, ``parquet`` or ``jsonl``.
        table: the spec of the table it lands in.
        name: the file's name, used in every error message.

    Raises:
        RejectedFile: the file cannot be parsed, or lacks a required column.
    """
    good, bad, new_columns = split_typed(with_row_numbers(read_file(data, fmt, table, name)), table)
    return Parsed(good=good, bad=bad, new_columns=new_columns)


def _check_required(columns: list[str], table: TableSpec, name: str) -> None:
    missing = [c for c in table.required_columns if c not in columns]
    if missing:
        listed = ", ".join(repr(c) for c in missing)
        raise RejectedFile(f"{name}: missing required column{'s' if len(missing) > 1 else ''} {listed}")
