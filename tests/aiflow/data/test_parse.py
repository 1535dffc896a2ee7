"""File parsing: CSV, Parquet and JSONL files become typed rows, bad values go to ``bad``, unusable files are rejected."""

from __future__ import annotations

import datetime as dt
import io
import json

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from aiflow.data.parse import RejectedFile, parse_file
from aiflow.spec import TableSpec
from tests.aiflow.tiny import TINY, TRIPS_HEADER, TRIPS_ROWS, csv_bytes, utc

FORMATS = ["csv", "parquet", "jsonl"]

#: The logical content of TRIPS_ROWS, one dict per row (None = missing value).
RECORDS = [
    {"trip_id": 1, "carrier": "AA", "origin": "JFK", "distance": 100.5, "seats": 120, "refundable": True,
     "booked": dt.date(2012, 12, 1), "delay": 3.0, "ts": utc(2013, 1, 1, 10)},
    {"trip_id": 2, "carrier": "UA", "origin": "EWR", "distance": 2000.0, "seats": 180, "refundable": False,
     "booked": dt.date(2012, 12, 2), "delay": None, "ts": utc(2013, 1, 1, 23, 30)},
    {"trip_id": 3, "carrier": "AA", "origin": "LGA", "distance": 733.0, "seats": None, "refundable": None,
     "booked": None, "delay": 45.5, "ts": utc(2013, 1, 2, 1, 15)},
]

#: The column types the tiny spec declares, spelled out independently of the engine.
EXPECTED_SCHEMA = {
    "trip_id": pl.Int64, "carrier": pl.String, "origin": pl.String, "distance": pl.Float64, "seats": pl.Int32,
    "refundable": pl.Boolean, "booked": pl.Date, "delay": pl.Float64, "ts": pl.Datetime("us", "UTC"),
}


@pytest.fixture
def table() -> TableSpec:
    return TableSpec.model_validate({k: TINY[k] for k in ("name", "landing", "columns", "key", "event_time", "quality")})


def _jsonable(value):
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def encode(records: list[dict], fmt: str, schema: dict | None = None) -> bytes:
    """Write records as a file of the given format (Parquet keeps the given column types)."""
    if fmt == "csv":
        return pl.DataFrame(records, schema=schema, infer_schema_length=None).write_csv(null_value="NA").encode()
    if fmt == "jsonl":
        return "".join(json.dumps({k: _jsonable(v) for k, v in r.items()}) + "\n" for r in records).encode()
    buf = io.BytesIO()
    pl.DataFrame(records, schema=schema, infer_schema_length=None).write_parquet(buf)
    return buf.getvalue()


def expected_good(records: list[dict], rows: list[int]) -> pl.DataFrame:
    frame = pl.DataFrame(records, schema=EXPECTED_SCHEMA)
    return frame.with_columns(
        pl.Series("event_date", [r["ts"].date() for r in records], pl.Date),
        pl.Series("_source_row", rows, pl.Int64),
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_clean_file_parses_into_typed_rows(table, fmt):
    parsed = parse_file(encode(RECORDS, fmt, EXPECTED_SCHEMA), fmt, table, f"trips.{fmt}")
    assert parsed.bad.height == 0
    assert parsed.new_columns == []
    assert_frame_equal(parsed.good, expected_good(RECORDS, [1, 2, 3]))


def test_csv_text_is_parsed_with_spec_types_and_null_values(table):
    parsed = parse_file(csv_bytes(TRIPS_ROWS), "csv", table, "trips.csv")
    assert_frame_equal(parsed.good, expected_good(RECORDS, [1, 2, 3]))


def test_parquet_column_types_are_cast_to_the_spec(table):
    ny = pl.Datetime("us", "America/New_York")
    schema = {**EXPECTED_SCHEMA, "trip_id": pl.Int32, "seats": pl.Float64, "distance": pl.Int64, "ts": ny, "booked": pl.String}
    records = [{**r, "distance": int(r["distance"]), "seats": None if r["seats"] is None else float(r["seats"]),
                "booked": None if r["booked"] is None else r["booked"].isoformat()} for r in RECORDS]
    records[0]["distance"] = 100
    frame = pl.DataFrame(records, schema={**schema, "ts": pl.Datetime("us", "UTC")}).with_columns(pl.col("ts").dt.convert_time_zone("America/New_York"))
    buf = io.BytesIO()
    frame.write_parquet(buf)
    parsed = parse_file(buf.getvalue(), "parquet", table, "trips.parquet")
    assert parsed.bad.height == 0
    expected = [{**r, "distance": float(int(r["distance"]))} for r in RECORDS]
    expected[0]["distance"] = 100.0
    assert_frame_equal(parsed.good, expected_good(expected, [1, 2, 3]))


def test_parquet_naive_timestamps_are_taken_as_utc(table):
    frame = pl.DataFrame(RECORDS, schema=EXPECTED_SCHEMA).with_columns(pl.col("ts").dt.replace_time_zone(None).dt.cast_time_unit("ns"))
    buf = io.BytesIO()
    frame.write_parquet(buf)
    parsed = parse_file(buf.getvalue(), "parquet", table, "naive.parquet")
    assert parsed.good["ts"].to_list() == [r["ts"] for r in RECORDS]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2013-01-01T22:00:00-05:00", utc(2013, 1, 2, 3)),
        ("2013-01-01 10:00:00", utc(2013, 1, 1, 10)),
        ("2013-01-01T10:00:00Z", utc(2013, 1, 1, 10)),
    ],
)
def test_csv_timestamps_become_utc_and_partition_by_utc_date(table, text, expected):
    row = f"1,AA,JFK,100,,,,,{text}"
    parsed = parse_file(csv_bytes([row]), "csv", table, "t.csv")
    assert parsed.bad.height == 0, parsed.bad["_reason"].to_list()
    assert parsed.good["ts"].to_list() == [expected]
    assert parsed.good["event_date"].to_list() == [expected.date()]


# ------------------------------------------------------------------------------------ bad values
# (column, value written in the file, value as the reason prints it); the bad row is always row 2.
BAD_VALUES = [
    pytest.param("distance", "far", "far", id="float-holds-text"),
    pytest.param("seats", 1.5, "1.5", id="int-holds-fraction"),
    pytest.param("seats", "many", "many", id="int-holds-text"),
    pytest.param("trip_id", "x9", "x9", id="key-holds-text"),
    pytest.param("refundable", "maybe", "maybe", id="bool-holds-text"),
    pytest.param("booked", "someday", "someday", id="date-holds-text"),
    pytest.param("ts", "yesterday", "yesterday", id="datetime-holds-text"),
]


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(_jsonable(value))


def _with_bad_value(fmt: str, column: str, value) -> bytes:
    records = [dict(r) for r in RECORDS]
    records[1][column] = value
    if fmt == "jsonl":
        return encode(records, fmt)
    if fmt == "csv":
        text = [{k: _text(v) for k, v in r.items()} for r in records]
        return encode(text, fmt, dict.fromkeys(EXPECTED_SCHEMA, pl.String))
    # a Parquet column has one type: a text value makes the column text, a fraction makes it float
    if isinstance(value, str):
        for r in records:
            r[column] = _text(r[column])
    return encode(records, fmt, {**EXPECTED_SCHEMA, column: pl.String if isinstance(value, str) else pl.Float64})


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("column", "value", "shown"), BAD_VALUES)
def test_value_that_does_not_fit_its_type_goes_to_bad(table, fmt, column, value, shown):
    parsed = parse_file(_with_bad_value(fmt, column, value), fmt, table, f"bad.{fmt}")
    assert parsed.bad.height == 1
    bad = parsed.bad.row(0, named=True)
    assert bad["_rule"] == "type"
    assert bad["_source_row"] == 2
    assert f"column '{column}'" in bad["_reason"]
    assert f"'{shown}'" in bad["_reason"]
    assert json.loads(bad["_record"])[column] == shown
    # the good rows are kept, typed
    assert parsed.good["trip_id"].to_list() == [1, 3]
    assert parsed.good["_source_row"].to_list() == [1, 3]
    assert dict(parsed.good.schema)[column] == EXPECTED_SCHEMA[column]
    assert parsed.rows == 3


def test_whole_number_float_fits_an_int_column(table):
    records = [dict(r) for r in RECORDS]
    schema = {**EXPECTED_SCHEMA, "seats": pl.Float64}
    records[0]["seats"], records[1]["seats"] = 120.0, 180.0
    parsed = parse_file(encode(records, "parquet", schema), "parquet", table, "f.parquet")
    assert parsed.bad.height == 0
    assert parsed.good["seats"].to_list() == [120, 180, None]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_whole_number_text_fits_an_int_column_like_a_parquet_float_does(table, fmt):
    records = [dict(r) for r in RECORDS]
    text = [{k: _text(v) for k, v in r.items()} for r in records]
    text[0]["seats"], text[1]["seats"] = "120.0", " 180 "
    parsed = parse_file(encode(text, fmt, dict.fromkeys(EXPECTED_SCHEMA, pl.String)), fmt, table, f"f.{fmt}")
    assert parsed.bad.height == 0
    assert parsed.good["seats"].to_list() == [120, 180, None]


@pytest.mark.parametrize("fmt", FORMATS)
def test_null_event_time_goes_to_bad_with_rule_event_time(table, fmt):
    records = [dict(r) for r in RECORDS]
    records[2]["ts"] = None
    parsed = parse_file(encode(records, fmt, EXPECTED_SCHEMA), fmt, table, f"f.{fmt}")
    assert parsed.bad.height == 1
    bad = parsed.bad.row(0, named=True)
    assert bad["_rule"] == "event_time"
    assert "'ts'" in bad["_reason"] and "null" in bad["_reason"]
    assert bad["_source_row"] == 3
    assert bad["event_date"] is None
    assert parsed.good["trip_id"].to_list() == [1, 2]


def test_bad_row_keeps_its_event_date_when_the_time_parsed(table):
    rows = [*TRIPS_ROWS[:2], "3,AA,LGA,far,,,,,2013-01-02T01:15:00Z"]
    parsed = parse_file(csv_bytes(rows), "csv", table, "f.csv")
    assert parsed.bad["event_date"].to_list() == [dt.date(2013, 1, 2)]


# ----------------------------------------------------------------------------- rejected files
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "drop",
    [pytest.param(["distance"], id="one"), pytest.param(["origin", "ts"], id="two")],
)
def test_missing_required_column_rejects_the_file_naming_it(table, fmt, drop):
    records = [{k: v for k, v in r.items() if k not in drop} for r in RECORDS]
    schema = {k: v for k, v in EXPECTED_SCHEMA.items() if k not in drop}
    with pytest.raises(RejectedFile) as exc:
        parse_file(encode(records, fmt, schema), fmt, table, f"short.{fmt}")
    message = str(exc.value)
    assert message.startswith(f"short.{fmt}: missing required column")
    for column in drop:
        assert f"'{column}'" in message


def _polars_error(read) -> str:
    with pytest.raises(pl.exceptions.PolarsError) as exc:
        read()
    return str(exc.value).splitlines()[0]


UNREADABLE = [
    pytest.param("parquet", b"definitely not a parquet file" * 20, lambda d: pl.read_parquet(io.BytesIO(d)), id="garbage-parquet"),
    pytest.param("jsonl", b'{"trip_id": 2, "carrier": \n', lambda d: pl.read_ndjson(d, infer_schema_length=None), id="only-line-malformed"),
    pytest.param("jsonl", b"[1, 2, 3]\n", lambda d: pl.read_ndjson(d, infer_schema_length=None), id="json-not-objects"),
]


@pytest.mark.parametrize(("fmt", "data", "read"), UNREADABLE)
def test_unreadable_file_is_rejected_with_the_parser_error(table, fmt, data, read):
    parser_error = _polars_error(lambda: read(data))
    with pytest.raises(RejectedFile) as exc:
        parse_file(data, fmt, table, f"broken.{fmt}")
    assert str(exc.value).startswith(f"broken.{fmt}: cannot parse as {fmt}")
    assert parser_error in str(exc.value)


def test_format_not_accepted_by_the_table_is_rejected(table):
    csv_only = table.model_copy(update={"landing": table.landing.model_copy(update={"formats": ["csv"]})})
    with pytest.raises(RejectedFile, match="format 'parquet' is not accepted"):
        parse_file(encode(RECORDS, "parquet", EXPECTED_SCHEMA), "parquet", csv_only, "f.parquet")


def test_empty_jsonl_is_rejected_for_missing_columns(table):
    with pytest.raises(RejectedFile, match="missing required column 'trip_id'; missing required column 'carrier'"):
        parse_file(b"\n", "jsonl", table, "empty.jsonl")


def test_csv_with_only_a_header_gives_no_rows(table):
    parsed = parse_file(csv_bytes([]), "csv", table, "empty.csv")
    assert parsed.rows == 0
    assert dict(parsed.good.schema) == {**EXPECTED_SCHEMA, "event_date": pl.Date, "_source_row": pl.Int64}


# ------------------------------------------------------------------------- schema evolution
@pytest.mark.parametrize("fmt", FORMATS)
def test_new_unknown_column_is_kept_as_string_and_listed(table, fmt):
    records = [{**r, "gate": 7 + i} for i, r in enumerate(RECORDS)]
    parsed = parse_file(encode(records, fmt, {**EXPECTED_SCHEMA, "gate": pl.Int64}), fmt, table, f"new.{fmt}")
    assert parsed.new_columns == ["gate"]
    assert parsed.good.schema["gate"] == pl.String
    assert parsed.good["gate"].to_list() == ["7", "8", "9"]
    assert parsed.bad.height == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_optional_column_becomes_null_of_its_type(table, fmt):
    optional = ["seats", "refundable", "booked", "delay"]
    records = [{k: v for k, v in r.items() if k not in optional} for r in RECORDS]
    schema = {k: v for k, v in EXPECTED_SCHEMA.items() if k not in optional}
    parsed = parse_file(encode(records, fmt, schema), fmt, table, f"f.{fmt}")
    assert parsed.bad.height == 0
    for column in optional:
        assert parsed.good.schema[column] == EXPECTED_SCHEMA[column]
        assert parsed.good[column].null_count() == 3
    assert parsed.good["trip_id"].to_list() == [1, 2, 3]


def test_csv_columns_may_come_in_any_order(table):
    header = ",".join(reversed(TRIPS_HEADER.split(",")))
    rows = [",".join(reversed(r.split(","))) for r in TRIPS_ROWS]
    parsed = parse_file(csv_bytes(rows, header), "csv", table, "rev.csv")
    assert_frame_equal(parsed.good, expected_good(RECORDS, [1, 2, 3]))


def test_each_timestamp_in_a_column_is_read_by_its_own_shape(table):
    """ISO-8601 shapes mixed in one column each parse by their own shape, whatever the first value's shape is (Polars
    alone infers one format from the first value): offsets, Z and z, naive (taken as UTC), minutes only, a bare date,
    nanoseconds (truncated to microseconds); the column is microsecond UTC."""
    texts_and_times = [
        ("2013-01-01 10:00:00", utc(2013, 1, 1, 10)),
        ("2013-01-01T22:00:00-05:00", utc(2013, 1, 2, 3)),
        ("2013-01-01T10:00:00Z", utc(2013, 1, 1, 10)),
        ("2013-01-01T10:00:00z", utc(2013, 1, 1, 10)),
        ("2013-01-01 10:00:00.123456789+05:30", utc(2013, 1, 1, 4, 30, 0, 123456)),
        ("2013-01-01T10:00:00.5", utc(2013, 1, 1, 10, 0, 0, 500000)),
        ("2013-01-01T10:00+01:00", utc(2013, 1, 1, 9)),
        ("2013-01-01 10:00-0230", utc(2013, 1, 1, 12, 30)),
        ("2013-01-01T10:00", utc(2013, 1, 1, 10)),
        ("2013-01-01 10:00", utc(2013, 1, 1, 10)),
        ("2013-01-03", utc(2013, 1, 3)),
        ("2013-01-01T10:00:00.25Z", utc(2013, 1, 1, 10, 0, 0, 250000)),
    ]
    for order in (texts_and_times, texts_and_times[::-1]):  # a naive shape first, then an offset first
        rows = [f"{i + 1},AA,JFK,100,,,,,{text}" for i, (text, _) in enumerate(order)]
        parsed = parse_file(csv_bytes(rows), "csv", table, "mixed.csv")
        assert parsed.bad.height == 0, parsed.bad["_reason"].to_list()
        assert parsed.good.schema["ts"] == pl.Datetime("us", "UTC")
        assert parsed.good.sort("_source_row")["ts"].to_list() == [t for _, t in order]


def test_a_quarantined_record_keeps_the_values_as_they_landed(table):
    """The record of a bad row is its text as read, not a re-typed rendering of it ("1e3" stays "1e3", "007" "007")."""
    rows = ["1,007,JFK,1e3,12.5,yes,2012-12-01,3,2013-01-01T10:00:00Z"]
    parsed = parse_file(csv_bytes(rows), "csv", table, "landed.csv")
    assert parsed.good.height == 0
    assert json.loads(parsed.bad["_record"][0]) == {
        "trip_id": "1", "carrier": "007", "origin": "JFK", "distance": "1e3", "seats": "12.5", "refundable": "yes",
        "booked": "2012-12-01", "delay": "3", "ts": "2013-01-01T10:00:00Z"}  # fmt: skip
    assert parsed.bad["_reason"][0] == "column 'seats': cannot parse '12.5' as int32"


def test_a_json_lines_column_that_first_appears_late_in_the_file_is_kept(table):
    """Every line counts when a JSON-lines file's columns are listed, not only the first hundred."""
    records = [{"trip_id": str(i), "carrier": "AA", "origin": "JFK", "distance": "100", "ts": "2013-01-01T10:00:00Z"} for i in range(1, 151)]
    records[-1] = records[-1] | {"gate": "B7"}
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    parsed = parse_file(data, "jsonl", table, "late.jsonl")
    assert parsed.bad.height == 0 and parsed.new_columns == ["gate"]
    assert parsed.good.sort("_source_row")["gate"].to_list() == [None] * 149 + ["B7"]


def test_a_parquet_event_time_stored_as_a_date_or_a_number_is_typed_or_quarantined(table):
    """A Parquet event time stored as a calendar date becomes midnight UTC of that day; one stored as a number (no time
    type at all) is a bad value in every row, and the good rows keep the spec's microsecond UTC type."""
    dates = pl.DataFrame({"trip_id": [1, 2], "carrier": ["AA", "UA"], "origin": ["JFK", "EWR"], "distance": [1.0, 2.0],
                          "ts": [dt.date(2013, 1, 1), dt.date(2013, 1, 2)]})  # fmt: skip
    buf = io.BytesIO()
    dates.write_parquet(buf)
    parsed = parse_file(buf.getvalue(), "parquet", table, "dates.parquet")
    assert parsed.bad.height == 0 and parsed.good.schema["ts"] == pl.Datetime("us", "UTC")
    assert parsed.good["ts"].to_list() == [utc(2013, 1, 1), utc(2013, 1, 2)]
    buf = io.BytesIO()
    dates.with_columns(pl.Series("ts", [1357034400, 1357120800])).write_parquet(buf)
    parsed = parse_file(buf.getvalue(), "parquet", table, "numbers.parquet")
    assert parsed.good.height == 0 and parsed.good.schema["ts"] == pl.Datetime("us", "UTC")
    assert parsed.bad["_reason"].to_list() == [f"column 'ts': cannot parse '{n}' as datetime" for n in (1357034400, 1357120800)]


def test_timestamps_in_a_shape_outside_iso_8601_are_read_by_inference(table):
    """The last resort: a file whose timestamps share one non-ISO shape ("2013/01/02 03:04:05") is still read, as UTC."""
    rows = ["1,AA,JFK,100,,,,,2013/01/02 03:04:05", "2,AA,JFK,100,,,,,2013/01/03 23:59:59"]
    parsed = parse_file(csv_bytes(rows), "csv", table, "slashes.csv")
    assert parsed.bad.height == 0, parsed.bad["_reason"].to_list()
    assert parsed.good.schema["ts"] == pl.Datetime("us", "UTC")
    assert parsed.good.sort("_source_row")["ts"].to_list() == [utc(2013, 1, 2, 3, 4, 5), utc(2013, 1, 3, 23, 59, 59)]


def test_iso_dates_parse_whatever_the_first_date_of_the_column_looks_like(table):
    """An ISO date (2012-12-01) parses by its own shape even after a date of another shape (02/12/2012, which inference
    reads day first), after which inference alone would miss it."""
    rows = ["1,AA,JFK,100,,,02/12/2012,,2013-01-01T10:00:00Z", "2,AA,JFK,100,,,2012-12-01,,2013-01-01T10:00:00Z"]
    parsed = parse_file(csv_bytes(rows), "csv", table, "dates.csv")
    assert parsed.bad.height == 0, parsed.bad["_reason"].to_list()
    assert parsed.good.sort("_source_row")["booked"].to_list() == [dt.date(2012, 12, 2), dt.date(2012, 12, 1)]
