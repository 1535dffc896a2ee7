"""Parse one landed file into typed rows and quarantined rows, driven by a table spec.

A file that cannot be read at all, or that lacks a required column, raises :class:`RejectedFile`
with the parser's error or the missing column's name. A row whose value does not fit its column's
type is not dropped: it comes back in ``bad`` with the column, the value and the expected type.
A line that cannot be read (a CSV row with the wrong number of fields or a stray quote, a JSON line
that is not a JSON object; found by :mod:`aiflow.data.bad_lines`) is not dropped either, nor does it
sink its file: it comes back in ``bad`` with its line number and the problem, its raw text as the
record, and the file's good lines are kept. Text files are decoded first (:mod:`aiflow.data.text_files`).

Columns declared with a ``source`` are renamed on read; a table with a ``row_identity`` gets its
generated ``row_id`` here (see :mod:`aiflow.spec`).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import polars as pl

from aiflow.data.bad_lines import BadLine, csv_bad_lines, jsonl_bad_lines
from aiflow.data.text_files import RejectedFile, as_utf8, check_unique_columns, csv_header
from aiflow.spec import EVENT_DATE, LINEAGE_COLUMNS, POLARS_TYPES, ROW_ID, DatasetSpec, TableSpec

ROW = "_source_row"
RULE = "_rule"
REASON = "_reason"
RECORD = "_record"

#: Raw frames of a file with unreadable lines carry these two columns (null on the good rows): the
#: problem, already naming the line, and the line's text. :func:`split_typed` turns them into bad rows.
LINE_ERROR = "__line_error"
LINE_TEXT = "__line_text"
#: Rule of a quarantined line that could not be read.
MALFORMED = "malformed_line"
#: Columns the engine writes itself: a landing file may only bring them under another name (``source``).
ENGINE_COLUMNS = {EVENT_DATE, *LINEAGE_COLUMNS, RULE, REASON, RECORD, "_stage", "_quarantined_at", LINE_ERROR, LINE_TEXT}

_INT_TYPES = {"int32", "int64"}
_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]


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
        spec = table.columns.get(table.renames.get(column, column))
        overrides[column] = POLARS_TYPES[spec.type] if spec and spec.type not in ("datetime", "date", "bool") else pl.String()
    try:
        return pl.read_csv(data, schema_overrides=overrides, null_values=table.landing.null_values, infer_schema=False)
    except pl.exceptions.PolarsError:
        return None


#: ISO-8601 shapes parsed value by value, so a value's type never depends on the other values of its column: without
#: a format, Polars takes the format of the first value, and files typed together (same columns) then quarantined each
#: other's rows (one file of "2013-06-01 05:00:00" made every "2013-01-02T03:00:00Z" of the batch unparseable).
_WITH_OFFSET = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z",
                "%Y-%m-%dT%H:%M%:z", "%Y-%m-%d %H:%M%:z")  # fmt: skip
_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M")


def _text_datetime(text: pl.Expr) -> pl.Expr:
    """Text → UTC datetime: each ISO-8601 shape tried on each value (``Z`` or an offset converted to UTC, naive taken as
    UTC, a bare date at midnight); other shapes by Polars' inference as the last resort."""
    zulu = text.str.replace(r"[zZ]$", "+00:00")
    return pl.coalesce(
        *(zulu.str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC") for f in _WITH_OFFSET),
        *(text.str.to_datetime(f, strict=False, time_unit="us").dt.replace_time_zone("UTC") for f in _NAIVE),
        text.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        text.str.to_datetime(time_zone="UTC", strict=False, time_unit="us"),
    )


def _convert(column: str, dtype: pl.DataType, target: str) -> pl.Expr:
    """Expression casting ``column`` to the spec type; failures become null (checked by the caller)."""
    c = pl.col(column)
    if target == "datetime":
        if dtype == pl.String:
            return _text_datetime(c.str.strip_chars())
        if isinstance(dtype, pl.Datetime):
            return (c.dt.replace_time_zone("UTC") if dtype.time_zone is None else c.dt.convert_time_zone("UTC")).dt.cast_time_unit("us")
        if dtype == pl.Date:
            return c.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        return pl.lit(None, pl.Datetime("us", "UTC"))
    if target == "date":
        if dtype == pl.String:
            text = c.str.strip_chars()
            return pl.coalesce(text.str.to_date("%Y-%m-%d", strict=False), text.str.to_date(strict=False))
        if isinstance(dtype, pl.Datetime):
            return c.cast(pl.Date, strict=False)
        # a number is not a date (Polars would read it as days since 1970: 20121201 a day in the year 57059)
        return pl.lit(None, pl.Date)
    if target == "bool":
        if dtype == pl.String:
            low = c.str.strip_chars().str.to_lowercase()
            return pl.when(low.is_in(_TRUE)).then(True).when(low.is_in(_FALSE)).then(False).otherwise(None)
        if dtype.is_numeric():  # 1 and 0 as the text "1" and "0" are; Polars would make 2, -1 and NaN true
            return pl.when(c == 1).then(True).when(c == 0).then(False).otherwise(None)
        return pl.lit(None, pl.Boolean)
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
    lines = LINE_ERROR in raw.columns
    raw_columns = [c for c in raw.columns if c not in (ROW, LINE_ERROR, LINE_TEXT) and c not in keep]
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
    line_failed = pl.col(LINE_ERROR).is_not_null() if lines else pl.lit(False)
    frame = (raw.with_columns(conversions) if conversions else raw).with_columns(
        (type_failed | event.is_null() | line_failed).alias("__bad")
    )
    good_rows, bad_rows = frame.filter(~pl.col("__bad")), frame.filter(pl.col("__bad"))

    good = good_rows.select(
        *(expr.alias(column) for column, expr in final.items()),
        *(pl.col(c).cast(pl.String) for c in new_columns),
        event_date,
        ROW,
        *keep,
    )
    if table.row_identity == "content_hash":
        good = good.with_columns(content_hashes(good, table))
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
    record = pl.struct([pl.col(c).cast(pl.String) for c in raw_columns]).struct.json_encode()
    if lines:  # a line that could not be read: its own problem and its raw text
        rule = pl.when(line_failed).then(pl.lit(MALFORMED)).otherwise(rule)
        reason = pl.when(line_failed).then(pl.col(LINE_ERROR)).otherwise(reason)
        record = pl.when(line_failed).then(pl.col(LINE_TEXT)).otherwise(record)
    bad = bad_rows.select(
        ROW,
        rule.alias(RULE),
        reason.alias(REASON),
        record.alias(RECORD),
        event_date,
        *keep,
    )
    return good, bad, new_columns


def _with_bad_lines(raw: pl.DataFrame, bad: list[BadLine]) -> pl.DataFrame:
    """``raw`` (the good records) with the bad ones back in their places, as rows of nulls with the problem and the text."""
    if not bad:
        return raw
    taken = {b.position for b in bad}
    total = raw.height + len(bad)
    good_positions = [i for i in range(total) if i not in taken]
    good = raw.with_columns(pl.Series("__pos", good_positions, pl.Int64))
    lines = pl.DataFrame(
        {"__pos": [b.position for b in bad], LINE_ERROR: [b.reason for b in bad], LINE_TEXT: [b.text for b in bad]},
        schema={"__pos": pl.Int64, LINE_ERROR: pl.String, LINE_TEXT: pl.String},
    )
    return pl.concat([good, lines], how="diagonal").sort("__pos").drop("__pos")


def _renamed(columns: list[str], table: TableSpec, name: str) -> dict[str, str]:
    """The renames to apply to a file with these columns; reject a file that brings an engine column or a column twice."""
    renames = {src: col for src, col in table.renames.items() if src in columns}
    for src, col in renames.items():
        if col in columns:
            raise RejectedFile(f"{name}: has both column {src!r} (read as {col!r}) and column {col!r}: keep one")
    reserved = ENGINE_COLUMNS | ({ROW_ID} if table.row_identity else set())  # the spec reserves them as column names
    clash = [c for c in columns if c not in renames and c in reserved]
    if clash:
        first = clash[0]
        raise RejectedFile(
            f"{name}: column {first!r} is reserved for the engine: declare a column for it with source: {first!r} "
            f"(it is then renamed on read)"
        )
    return renames


def read_file(data: bytes, fmt: str, table: TableSpec, name: str) -> pl.DataFrame:
    """Read a file (typed by the CSV reader when every value fits; as text otherwise) and check its columns.

    Columns declared with a ``source`` come back under their spec names. Records that cannot be read
    come back in place as rows carrying :data:`LINE_ERROR` and :data:`LINE_TEXT` (see :func:`split_typed`),
    so row numbers counted over the result are the records' numbers in the file.

    Text files are read as UTF-8 after :func:`~aiflow.data.text_files.as_utf8` (byte-order marks, CR-only line ends).

    Raises:
        RejectedFile: the format is not accepted, the file cannot be parsed, no line of it can, it is not
            UTF-8 (nor text with a byte-order mark), its header names a column twice, a required column is
            missing, or an engine column arrives unmapped.
    """
    if fmt not in table.landing.formats:
        raise RejectedFile(f"{name}: format {fmt!r} is not accepted for table {table.name!r} ({table.landing.formats})")
    typed = None
    bad_lines: list[BadLine] = []
    if fmt in ("csv", "jsonl"):
        data = as_utf8(data, name)
    if fmt == "csv":
        try:
            header = pl.read_csv(data, n_rows=0, infer_schema=False).columns
        except pl.exceptions.PolarsError as exc:
            raise RejectedFile(f"{name}: cannot parse as csv: {str(exc).splitlines()[0]}") from exc
        check_unique_columns(csv_header(data), name)
        renames = _renamed(header, table, name)
        _check_required([renames.get(c, c) for c in header], table, name)
        data, bad_lines = csv_bad_lines(data, name)
        typed = _read_csv_typed(data, table, header)
    if typed is not None:
        raw = typed
    elif fmt == "jsonl":
        try:
            raw = _read_raw(data, fmt, table, name)
        except RejectedFile:
            good, bad_lines = jsonl_bad_lines(data)
            if not bad_lines or len(good) <= 1:
                raise  # nothing to keep: the file is rejected with the parser's error
            raw = _read_raw(good, fmt, table, name)
    else:
        raw = _read_raw(data, fmt, table, name)
    renames = _renamed(raw.columns, table, name)
    raw = raw.rename(renames) if renames else raw
    _check_required(raw.columns, table, name)
    raw = _with_bad_lines(raw, bad_lines)
    if table.row_identity == "source_row":
        raw = raw.with_columns(pl.format("{}#{}", pl.lit(name), pl.int_range(1, pl.len() + 1)).alias(ROW_ID))
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


def content_hashes(good: pl.DataFrame, table: TableSpec) -> pl.Series:
    """The ``content_hash`` row identity: a digest of every declared column's typed value (stable across formats)."""
    columns = [c for c in table.columns if c != ROW_ID]
    texts = good.select(
        pl.concat_str([pl.col(c).cast(pl.String).fill_null("\\x00") for c in columns], separator="\\x1f").alias(ROW_ID)
    ).to_series()
    return pl.Series(ROW_ID, [hashlib.blake2b(t.encode(), digest_size=16).hexdigest() for t in texts], pl.String)


def _check_required(columns: list[str], table: TableSpec, name: str) -> None:
    missing = [c for c in table.required_columns if c not in columns]
    if missing:
        target = table.target.source if isinstance(table, DatasetSpec) else None
        sources = {col: src for src, col in table.renames.items()}

        def named(column: str) -> str:
            text = f"{sources[column]!r} (read as {column!r})" if column in sources else repr(column)
            return text + (" (the target's source: a file must bring it, null values are labelled by when_null)" if column == target else "")

        raise RejectedFile(f"{name}: " + "; ".join(f"missing required column {named(c)}" for c in missing))
