"""Scope: the parser's exact outputs for `read_file`, `split_typed`, `_with_bad_lines`, `_renamed`, `_check_required` and
`_convert` (every column type from text and from Parquet types, values exactly on a bound, the exact reasons and
messages naming the file, line and field, column order of both outputs); tiny spec, real files through Polars.

No Polars work at import (mutation testing forks a child per mutant: a child forked after Polars started its thread
pool hangs), so the specs are built inside the tests."""

from __future__ import annotations

import copy
import datetime as dt
import io

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from aiflow.data.bad_lines import BadLine
from aiflow.data.parse import (
    LINE_ERROR,
    LINE_TEXT,
    MALFORMED,
    RejectedFile,
    _with_bad_lines,
    parse_file,
    read_file,
    split_typed,
    with_row_numbers,
)
from aiflow.spec import ROW_ID, TableSpec, parse_spec
from tests.aiflow.tiny import TINY, TRIPS_HEADER, TRIPS_ROWS, csv_bytes, utc

UTC_US = pl.Datetime("us", "UTC")


def _table(**changes) -> TableSpec:
    d = {k: copy.deepcopy(TINY[k]) for k in ("name", "landing", "columns", "key", "event_time", "quality")}
    d.update(changes)
    return TableSpec.model_validate(d)


def _parquet(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


def _rejected(data: bytes, fmt: str, table, name: str) -> str:
    with pytest.raises(RejectedFile) as exc:
        read_file(data, fmt, table, name)
    return str(exc.value)


# ------------------------------------------------------------------------------------------- read_file
def test_a_format_the_table_does_not_accept_is_rejected_naming_file_format_table_and_formats():
    table = _table(landing={"uri": "landing/trips", "formats": ["csv", "jsonl"]})
    assert _rejected(b"x", "parquet", table, "f.parquet") == (
        "f.parquet: format 'parquet' is not accepted for table 'trips' (['csv', 'jsonl'])"
    )


def test_an_empty_csv_file_is_rejected_with_the_readers_words():
    with pytest.raises(pl.exceptions.PolarsError) as polars_error:
        pl.read_csv(b"", n_rows=0, infer_schema=False)
    first_line = str(polars_error.value).splitlines()[0]
    assert _rejected(b"", "csv", _table(), "empty.csv") == f"empty.csv: cannot parse as csv: {first_line}"


def test_a_csv_header_a_strict_reader_refuses_is_rejected_naming_the_file_and_line():
    data = b'trip_id,carrier,origin,distance,ts,"x"y\n1,AA,JFK,1,2013-01-01,2\n'
    assert _rejected(data, "csv", _table(), "h.csv") == "h.csv: cannot parse as csv: line 1 (the header): ',' expected after '\"'"


def test_json_lines_whose_good_lines_still_cannot_be_read_together_are_rejected_naming_the_file():
    good = b'{"trip_id": 1}\n{"trip_id": {"a": 1}}\n'
    with pytest.raises(pl.exceptions.PolarsError) as polars_error:
        pl.read_ndjson(good, infer_schema_length=None, n_rows=None)
    first_line = str(polars_error.value).splitlines()[0]
    data = b'{"trip_id": 1}\n{oops\n{"trip_id": {"a": 1}}\n'
    assert _rejected(data, "jsonl", _table(), "j.jsonl") == f"j.jsonl: cannot parse as jsonl: {first_line}"


def test_a_csv_file_is_read_as_text_when_one_value_does_not_fit_and_typed_otherwise():
    table = _table()
    typed = read_file(csv_bytes(TRIPS_ROWS), "csv", table, "t.csv")
    assert typed.columns == TRIPS_HEADER.split(",")
    assert typed.schema["trip_id"] == pl.Int64 and typed.schema["seats"] == pl.Int32 and typed.schema["distance"] == pl.Float64
    assert typed.schema["ts"] == pl.String and typed.schema["refundable"] == pl.String and typed.schema["booked"] == pl.String
    assert typed["seats"].to_list() == [120, 180, None] and typed["delay"].to_list() == [3.0, None, 45.5]
    text = read_file(csv_bytes([*TRIPS_ROWS, "4,AA,JFK,far,,,,,2013-01-02T01:15:00Z"]), "csv", table, "t.csv")
    assert set(text.schema.values()) == {pl.String}
    assert text["distance"].to_list() == ["100.5", "2000", "733", "far"]
    assert text["delay"].to_list() == ["3.0", None, "45.5", None]  # NA and "" are the table's null values


def test_a_csv_file_with_bad_lines_keeps_them_in_place_with_problem_and_text():
    rows = ["1,AA,JFK,1,,,,,2013-01-01T10:00:00Z", "2,AA", "3,AA,JFK,3,,,,,2013-01-01T10:00:00Z", "4,x,y"]
    raw = read_file(csv_bytes(rows), "csv", _table(), "b.csv")
    assert raw.columns == [*TRIPS_HEADER.split(","), LINE_ERROR, LINE_TEXT]
    assert raw["trip_id"].to_list() == [1, None, 3, None]
    assert raw[LINE_ERROR].to_list() == [None, "line 3: 2 fields, expected 9", None, "line 5: 3 fields, expected 9"]
    assert raw[LINE_TEXT].to_list() == [None, "2,AA", None, "4,x,y"]


def test_a_json_lines_file_with_bad_lines_keeps_them_in_place():
    lines = ['{"trip_id": 1, "carrier": "AA", "origin": "JFK", "distance": 1, "ts": "2013-01-01T10:00:00Z"}', "{oops",
             '{"trip_id": 3, "carrier": "AA", "origin": "JFK", "distance": 3, "ts": "2013-01-01T10:00:00Z"}']  # fmt: skip
    raw = read_file(("\n".join(lines) + "\n").encode(), "jsonl", _table(), "b.jsonl")
    assert raw["trip_id"].to_list() == ["1", None, "3"]
    assert raw[LINE_ERROR].to_list()[0] is None and raw[LINE_ERROR].to_list()[1].startswith("line 2: not valid JSON")
    assert raw[LINE_TEXT].to_list() == [None, "{oops", None]


def test_a_json_lines_file_with_one_good_line_among_bad_ones_is_read():
    good = '{"trip_id": 7, "carrier": "AA", "origin": "JFK", "distance": 1, "ts": "2013-01-01T10:00:00Z"}'
    parsed = parse_file(f"[1]\n{good}\n".encode(), "jsonl", _table(), "one.jsonl")
    assert parsed.good["trip_id"].to_list() == [7] and parsed.good["_source_row"].to_list() == [2]
    assert parsed.bad.select("_source_row", "_rule", "_record").rows() == [(1, MALFORMED, "[1]")]


def test_a_parquet_file_is_not_decoded_as_text():
    frame = pl.DataFrame({"trip_id": [1], "carrier": ["\xe9"], "origin": ["JFK"], "distance": [1.0], "ts": [utc(2013, 1, 1)]})
    raw = read_file(_parquet(frame), "parquet", _table(), "p.parquet")
    assert raw.schema["trip_id"] == pl.Int64 and raw["carrier"].to_list() == ["\xe9"]


def test_source_row_identity_numbers_every_record_of_the_file_bad_lines_included():
    table = _table(key=[], row_identity="source_row", columns={k: v for k, v in TINY["columns"].items() if k != "trip_id"})
    header = TRIPS_HEADER.removeprefix("trip_id,")
    rows = [r.split(",", 1)[1] for r in TRIPS_ROWS]
    parsed = parse_file(csv_bytes([rows[0], "oops", rows[1], rows[2]], header), "csv", table, "day 1.csv")
    assert parsed.good[ROW_ID].to_list() == ["day 1.csv#1", "day 1.csv#3", "day 1.csv#4"]
    assert parsed.good["_source_row"].to_list() == [1, 3, 4]
    assert parsed.bad["_source_row"].to_list() == [2]


def test_without_a_row_identity_no_row_id_is_added_and_a_row_id_column_is_a_new_column():
    rows = [f"{i},{r}" for i, r in enumerate(TRIPS_ROWS)]
    parsed = parse_file(csv_bytes(rows, f"row_id,{TRIPS_HEADER}"), "csv", _table(), "ids.csv")
    assert parsed.new_columns == ["row_id"] and parsed.good["row_id"].to_list() == ["0", "1", "2"]
    plain = parse_file(csv_bytes(TRIPS_ROWS), "csv", _table(), "plain.csv")
    assert ROW_ID not in plain.good.columns


# ---------------------------------------------------------------------------------------------- _renamed
def _mapped_table() -> TableSpec:
    columns = copy.deepcopy(TINY["columns"])
    columns["carrier"]["source"] = "Airline"
    columns["service_day"] = {"type": "date", "required": False, "source": "event_date"}
    return _table(columns=columns)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_source_column_is_renamed_and_a_file_bringing_the_spec_name_itself_is_read_too(fmt):
    table = _mapped_table()
    for header in ("Airline", "carrier"):
        frame = pl.DataFrame({"trip_id": [1], header: ["AA"], "origin": ["JFK"], "distance": [1.0], "ts": ["2013-01-01T10:00:00Z"]})
        data = {"csv": lambda f: f.write_csv().encode(), "jsonl": lambda f: f.write_ndjson().encode(), "parquet": _parquet}[fmt](frame)
        parsed = parse_file(data, fmt, table, f"f.{fmt}")
        assert parsed.good["carrier"].to_list() == ["AA"] and parsed.new_columns == [] and parsed.bad.height == 0


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_file_with_both_a_source_column_and_its_spec_name_is_rejected_with_the_exact_message(fmt):
    frame = pl.DataFrame({"trip_id": [1], "Airline": ["AA"], "carrier": ["UA"], "origin": ["JFK"], "distance": [1.0], "ts": ["x"]})
    data = frame.write_csv().encode() if fmt == "csv" else frame.write_ndjson().encode()
    assert _rejected(data, fmt, _mapped_table(), "both") == (
        "both: has both column 'Airline' (read as 'carrier') and column 'carrier': keep one"
    )


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_first_unmapped_engine_column_is_named_with_the_fix(fmt):
    frame = pl.DataFrame({"trip_id": [1], "carrier": ["AA"], "_rule": ["r"], "origin": ["JFK"], "_source_row": [3],
                          "distance": [1.0], "ts": ["x"]})  # fmt: skip
    data = frame.write_csv().encode() if fmt == "csv" else frame.write_ndjson().encode()
    assert _rejected(data, fmt, _table(), "r") == (
        "r: column '_rule' is reserved for the engine: declare a column for it with source: '_rule' (it is then renamed on read)"
    )


def test_a_mapped_engine_column_is_read_under_its_spec_name():
    rows = [r + ",2013-01-05" for r in TRIPS_ROWS]
    header = TRIPS_HEADER.replace("carrier", "Airline") + ",event_date"
    parsed = parse_file(csv_bytes(rows, header), "csv", _mapped_table(), "m.csv")
    assert parsed.good["service_day"].to_list() == [dt.date(2013, 1, 5)] * 3
    assert parsed.good["event_date"].to_list() == [dt.date(2013, 1, 1), dt.date(2013, 1, 1), dt.date(2013, 1, 2)]


# --------------------------------------------------------------------------------------- _check_required
def test_missing_required_columns_are_named_in_spec_order_with_their_source():
    header = "trip_id,origin,ts"
    message = _rejected(csv_bytes(["1,JFK,2013-01-01T10:00:00Z"], header), "csv", _mapped_table(), "short.csv")
    assert message == "short.csv: missing required column 'Airline' (read as 'carrier'); missing required column 'distance'"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_dataset_file_without_the_targets_source_names_it_and_what_when_null_is_for(fmt):
    spec = parse_spec(copy.deepcopy(TINY), "tiny")
    frame = pl.DataFrame({"trip_id": [1], "carrier": ["AA"], "origin": ["JFK"], "distance": [1.0], "ts": ["2013-01-01T10:00:00Z"]})
    data = frame.write_csv().encode() if fmt == "csv" else frame.write_ndjson().encode()
    assert _rejected(data, fmt, spec, "d") == (
        "d: missing required column 'delay' (the target's source: a file must bring it, null values are labelled by when_null)"
    )
    side = spec.side("weather")  # a side table has no target: no such note
    assert _rejected(b"origin,temp\nJFK,1\n", "csv", side, "w.csv") == "w.csv: missing required column 'ts'"


def test_a_missing_target_source_read_from_another_name_is_named_by_both():
    d = copy.deepcopy(TINY)
    d["columns"]["delay"]["source"] = "Delay (min)"
    spec = parse_spec(d, "tiny")
    assert _rejected(csv_bytes(["1,AA,JFK,1,2013-01-01T10:00:00Z"], "trip_id,carrier,origin,distance,ts"), "csv", spec, "d.csv") == (
        "d.csv: missing required column 'Delay (min)' (read as 'delay') (the target's source: a file must bring it, null "
        "values are labelled by when_null)"
    )


def test_a_csv_file_missing_a_column_with_every_line_bad_is_rejected_for_the_column():
    rows = ["1,AA", "2"]
    header = "trip_id,carrier,origin,ts"
    assert _rejected(csv_bytes(rows, header), "csv", _table(), "bad.csv") == "bad.csv: missing required column 'distance'"


# ------------------------------------------------------------------------------------------ _with_bad_lines
def test_bad_lines_go_back_in_their_places_first_last_and_together():
    raw = pl.DataFrame({"a": ["x", "y"]})
    bad = [BadLine(0, 2, "line 2: first", "t0"), BadLine(2, 4, "line 4: middle", "t2"), BadLine(3, 5, "line 5: next", "t3"),
           BadLine(5, 7, "line 7: last", "t5")]  # fmt: skip
    out = _with_bad_lines(raw, bad)
    expected = pl.DataFrame(
        {
            "a": [None, "x", None, None, "y", None],
            LINE_ERROR: ["line 2: first", None, "line 4: middle", "line 5: next", None, "line 7: last"],
            LINE_TEXT: ["t0", None, "t2", "t3", None, "t5"],
        },  # fmt: skip
        schema={"a": pl.String, LINE_ERROR: pl.String, LINE_TEXT: pl.String},
    )
    assert_frame_equal(out, expected)
    assert _with_bad_lines(raw, []) is raw
    only_bad = _with_bad_lines(pl.DataFrame({"a": []}, schema={"a": pl.String}), [BadLine(0, 2, "e", "t")])
    assert only_bad.rows() == [(None, "e", "t")]


# --------------------------------------------------------------------------------------------- split_typed
def test_good_and_bad_rows_have_their_columns_in_order_and_keep_columns_in_both():
    raw = pl.DataFrame(
        {
            "gate": ["B7", "C1", None],
            "trip_id": ["1", "2", "3"],
            "carrier": ["AA", "UA", "AA"],
            "origin": ["JFK", "EWR", "LGA"],
            "distance": ["1", "far", "3"],
            "ts": ["2013-01-01T10:00:00Z", "2013-01-01T10:00:00Z", None],
            "__f": [7, 7, 8],
            "_source_row": [1, 2, 3],
        },  # fmt: skip
    )
    good, bad, new = split_typed(raw, _table(), keep=("__f",))
    assert new == ["gate"]
    assert good.columns == [*TRIPS_HEADER.split(","), "gate", "event_date", "_source_row", "__f"]
    assert good.schema["seats"] == pl.Int32 and good.schema["booked"] == pl.Date and good.schema["ts"] == UTC_US
    assert good.rows() == [(1, "AA", "JFK", 1.0, None, None, None, None, utc(2013, 1, 1, 10), "B7", dt.date(2013, 1, 1), 1, 7)]
    assert bad.columns == ["_source_row", "_rule", "_reason", "_record", "event_date", "__f"]
    assert bad.rows() == [
        (2, "type", "column 'distance': cannot parse 'far' as float64",
         '{"gate":"C1","trip_id":"2","carrier":"UA","origin":"EWR","distance":"far","ts":"2013-01-01T10:00:00Z"}', dt.date(2013, 1, 1), 7),
        (3, "event_time", "event time column 'ts' is null",
         '{"gate":null,"trip_id":"3","carrier":"AA","origin":"LGA","distance":"3","ts":null}', None, 8),
    ]  # fmt: skip


def test_a_row_with_several_bad_values_is_named_by_its_first_column_in_spec_order():
    rows = ["1,AA,JFK,far,many,maybe,someday,late,yesterday", "2,AA,JFK,1,,maybe,,,2013-01-01"]
    parsed = parse_file(csv_bytes(rows), "csv", _table(), "many.csv")
    assert parsed.bad.select("_source_row", "_rule", "_reason", "event_date").rows() == [
        (1, "type", "column 'distance': cannot parse 'far' as float64", None),
        (2, "type", "column 'refundable': cannot parse 'maybe' as bool", dt.date(2013, 1, 1)),
    ]


def test_an_unparseable_event_time_is_a_type_problem_and_a_typed_null_one_an_event_time_problem():
    rows = ["1,AA,JFK,1,,,,,yesterday", "2,AA,JFK,1,,,,,NA", "3,AA,JFK,1,,,,,"]
    parsed = parse_file(csv_bytes(rows), "csv", _table(), "ts.csv")
    assert parsed.bad.select("_source_row", "_rule", "_reason").rows() == [
        (1, "type", "column 'ts': cannot parse 'yesterday' as datetime"),
        (2, "event_time", "event time column 'ts' is null"),
        (3, "event_time", "event time column 'ts' is null"),
    ]


def test_a_malformed_line_is_its_own_rule_reason_and_record_beside_type_and_event_time_problems():
    rows = ["1,AA,JFK,far,,,,,2013-01-01T10:00:00Z", "2,AA,JFK", "3,AA,JFK,1,,,,,", "4,AA,JFK,1,,,,,2013-01-02T10:00:00Z"]
    parsed = parse_file(csv_bytes(rows), "csv", _table(), "mixed.csv")
    assert parsed.good["_source_row"].to_list() == [4]
    assert parsed.bad.rows() == [
        (1, "type", "column 'distance': cannot parse 'far' as float64",
         '{"trip_id":"1","carrier":"AA","origin":"JFK","distance":"far","seats":null,"refundable":null,"booked":null,'
         '"delay":null,"ts":"2013-01-01T10:00:00Z"}', dt.date(2013, 1, 1)),
        (2, MALFORMED, "line 3: 3 fields, expected 9", "2,AA,JFK", None),
        (3, "event_time", "event time column 'ts' is null",
         '{"trip_id":"3","carrier":"AA","origin":"JFK","distance":"1","seats":null,"refundable":null,"booked":null,'
         '"delay":null,"ts":null}', None),
    ]  # fmt: skip


def test_a_date_event_time_is_its_own_event_date():
    table = _table(columns={"trip_id": {"type": "int64"}, "day": {"type": "date"}}, event_time="day", quality={})
    parsed = parse_file(b"trip_id,day\n1,2013-01-05\n2,\n3,soon\n", "csv", table, "days.csv")
    assert parsed.good.rows() == [(1, dt.date(2013, 1, 5), dt.date(2013, 1, 5), 1)]
    assert parsed.bad.select("_source_row", "_rule", "_reason", "event_date").rows() == [
        (2, "event_time", "event time column 'day' is null", None),
        (3, "type", "column 'day': cannot parse 'soon' as date", None),
    ]


def test_columns_already_of_the_spec_type_pass_unchanged_and_absent_optional_ones_are_typed_nulls():
    frame = pl.DataFrame({"trip_id": [5], "carrier": ["AA"], "origin": ["JFK"], "distance": [2.5], "seats": pl.Series([3], dtype=pl.Int32),
                          "ts": [utc(2013, 1, 1, 1)]}).with_columns(pl.col("ts").dt.cast_time_unit("us"))  # fmt: skip
    good, bad, new = split_typed(with_row_numbers(frame), _table())
    assert bad.height == 0 and new == []
    assert good.rows() == [(5, "AA", "JFK", 2.5, 3, None, None, None, utc(2013, 1, 1, 1), dt.date(2013, 1, 1), 1)]
    assert dict(good.schema) == {"trip_id": pl.Int64, "carrier": pl.String, "origin": pl.String, "distance": pl.Float64,
                                 "seats": pl.Int32, "refundable": pl.Boolean, "booked": pl.Date, "delay": pl.Float64,
                                 "ts": UTC_US, "event_date": pl.Date, "_source_row": pl.Int64}  # fmt: skip


def test_the_content_hash_identity_is_added_to_the_good_rows_only():
    table = _table(key=[], row_identity="content_hash")
    parsed = parse_file(csv_bytes([TRIPS_ROWS[0], "2,UA,EWR,far,,,,,2013-01-01T10:00:00Z"]), "csv", table, "h.csv")
    assert parsed.good[ROW_ID].str.len_chars().to_list() == [32]
    assert ROW_ID not in parsed.bad.columns and parsed.bad.height == 1


# ------------------------------------------------------------------------------------------------ _convert
def _one_column(kind: str, values: pl.Series) -> tuple[list, list[str]]:
    table = _table(
        columns={"v": {"type": kind, "required": False}, "ts": {"type": "datetime"}}, key=[], row_identity="source_row", quality={}
    )
    frame = pl.DataFrame({"v": values, "ts": [utc(2013, 1, 1)] * len(values)})
    good, bad, _ = split_typed(with_row_numbers(frame), table)
    assert good.schema["v"] == {"bool": pl.Boolean, "int32": pl.Int32, "int64": pl.Int64, "float64": pl.Float64, "string": pl.String,
                                "date": pl.Date, "datetime": UTC_US}[kind]  # fmt: skip
    return good.sort("_source_row")["v"].to_list(), bad.sort("_source_row")["_reason"].to_list()


@pytest.mark.parametrize(
    ("kind", "values", "good", "bad"),
    [
        pytest.param(
            "bool",
            ["true", " T ", "Yes", "y", "1", "FALSE", "f", "no", "N", "0", None],
            [True] * 5 + [False] * 5 + [None],
            [],
            id="bool-text",
        ),
        pytest.param("bool", ["2", "yess", "-1"], [], ["'2' as bool", "'yess' as bool", "'-1' as bool"], id="bool-text-bad"),
        pytest.param(
            "int32",
            ["12", " 7 ", "12.0", "-3", "2147483647", "-2147483648", None],
            [12, 7, 12, -3, 2147483647, -2147483648, None],
            [],
            id="int32-text-bounds",
        ),
        pytest.param(
            "int32",
            ["2147483648", "-2147483649", "12.5", "1e400", "seven"],
            [],
            ["'2147483648' as int32", "'-2147483649' as int32", "'12.5' as int32", "'1e400' as int32", "'seven' as int32"],
            id="int32-text-past-bounds",
        ),
        pytest.param("int64", ["9223372036854775807", "1e3"], [9223372036854775807, 1000], [], id="int64-text-exact"),
        pytest.param("float64", [" 1.5 ", "1e3", "-0", None], [1.5, 1000.0, -0.0, None], [], id="float-text"),
        pytest.param("date", [" 2012-12-01 ", "2012-02-29"], [dt.date(2012, 12, 1), dt.date(2012, 2, 29)], [], id="date-text"),
        pytest.param("date", ["2013-02-29"], [], ["'2013-02-29' as date"], id="date-text-bad"),
        pytest.param("datetime", [" 2013-01-01T10:00:00Z "], [utc(2013, 1, 1, 10)], [], id="datetime-text-stripped"),
    ],
)
def test_text_values_are_converted_exactly(kind, values, good, bad):
    got, reasons = _one_column(kind, pl.Series(values, dtype=pl.String))
    assert got == good
    assert [r.split(": cannot parse ")[1] for r in reasons] == bad


@pytest.mark.parametrize(
    ("kind", "values", "good", "bad"),
    [
        pytest.param("bool", lambda: pl.Series([1, 0, None], dtype=pl.Int64), [True, False, None], [], id="bool-from-int"),
        pytest.param(
            "int32", lambda: pl.Series([1.0, -2.0, 2147483647.0], dtype=pl.Float64), [1, -2, 2147483647], [], id="int32-from-whole-float"
        ),
        pytest.param(
            "int32",
            lambda: pl.Series([1.5, 2147483648.0, float("nan")], dtype=pl.Float64),
            [],
            ["'1.5' as int32", "'2147483648.0' as int32", "'NaN' as int32"],
            id="int32-from-float-bad",
        ),
        pytest.param("int32", lambda: pl.Series([5, 2147483648], dtype=pl.Int64), [5], ["'2147483648' as int32"], id="int32-from-int64"),
        pytest.param("int64", lambda: pl.Series([3.0, 0.5], dtype=pl.Float32), [3], ["'0.5' as int64"], id="int64-from-float32"),
        pytest.param("float64", lambda: pl.Series([3, None], dtype=pl.Int32), [3.0, None], [], id="float-from-int"),
        pytest.param("string", lambda: pl.Series([3, None], dtype=pl.Int64), ["3", None], [], id="string-from-int"),
        pytest.param(
            "date",
            lambda: pl.Series([dt.datetime(2013, 1, 2, 23, 59)], dtype=pl.Datetime("ms")),
            [dt.date(2013, 1, 2)],
            [],
            id="date-from-datetime",
        ),
        pytest.param(
            "datetime",
            lambda: pl.Series([dt.datetime(2013, 1, 2, 3, 4, 5, 678000)], dtype=pl.Datetime("ms")),
            [utc(2013, 1, 2, 3, 4, 5, 678000)],
            [],
            id="datetime-from-naive-ms",
        ),
        pytest.param(
            "datetime",
            lambda: pl.Series([dt.datetime(2013, 1, 2, 3, 4, 5, 678000)], dtype=pl.Datetime("ns")).dt.replace_time_zone("Asia/Kolkata"),
            [utc(2013, 1, 1, 21, 34, 5, 678000)],
            [],
            id="datetime-from-zoned-ns",
        ),
    ],
)
def test_typed_values_are_converted_exactly(kind, values, good, bad):
    got, reasons = _one_column(kind, values())
    assert got == good
    assert [r.split(": cannot parse ")[1] for r in reasons] == bad


def test_a_converted_datetime_column_is_microsecond_utc():
    table = _table(columns={"ts": {"type": "datetime"}}, key=[], row_identity="source_row", quality={})
    for values in (pl.Series([dt.datetime(2013, 1, 2)], dtype=pl.Datetime("ns")), pl.Series(["2013-01-02"]),
                   pl.Series([dt.datetime(2013, 1, 2)], dtype=pl.Datetime("ms", "Europe/Paris")), pl.Series([dt.date(2013, 1, 2)])):  # fmt: skip
        good, bad, _ = split_typed(with_row_numbers(pl.DataFrame({"ts": values})), table)
        assert good.schema["ts"] == UTC_US and bad.height == 0


@pytest.mark.parametrize(
    ("kind", "values", "good", "bad"),
    [
        pytest.param(
            "bool",
            lambda: pl.Series([1, 0, 2, -1, None], dtype=pl.Int64),
            [True, False, None],
            ["'2' as bool", "'-1' as bool"],
            id="bool-from-int-only-1-and-0",
        ),
        pytest.param(
            "bool",
            lambda: pl.Series([1.0, 0.0, float("nan"), 0.5], dtype=pl.Float64),
            [True, False],
            ["'NaN' as bool", "'0.5' as bool"],
            id="bool-from-float-only-1-and-0",
        ),
        pytest.param("bool", lambda: pl.Series([dt.date(2013, 1, 1)]), [], ["'2013-01-01' as bool"], id="bool-from-date"),
        pytest.param(
            "date", lambda: pl.Series([20121201, 15706], dtype=pl.Int64), [], ["'20121201' as date", "'15706' as date"], id="date-from-int"
        ),
        pytest.param("date", lambda: pl.Series([15706.0]), [], ["'15706.0' as date"], id="date-from-float"),
        pytest.param("date", lambda: pl.Series([dt.time(1, 2)]), [], ["'01:02:00' as date"], id="date-from-time"),
    ],
)
def test_a_typed_value_that_is_no_bool_or_no_date_is_a_bad_value_as_its_text_is(kind, values, good, bad):
    """A number is a bool only as 1 or 0 (the text "2" is a bad value, so is the number 2; Polars alone casts 2, -1 and
    NaN to true) and never a date (Polars alone reads it as days since 1970: 20121201 became a day in the year 57059); a
    type with no cast (a date for a bool, a time for a date) is a bad value, not an error that sinks the file."""
    got, reasons = _one_column(kind, values())
    assert got == good
    assert [r.split(": cannot parse ")[1] for r in reasons] == bad


def test_a_renamed_csv_column_is_typed_by_the_reader_under_its_spec_type():
    columns = copy.deepcopy(TINY["columns"])
    columns["distance"]["source"] = "Distance (mi)"
    raw = read_file(csv_bytes(TRIPS_ROWS, TRIPS_HEADER.replace("distance", "Distance (mi)")), "csv", _table(columns=columns), "r.csv")
    assert raw.schema["distance"] == pl.Float64 and raw["distance"].to_list() == [100.5, 2000.0, 733.0]
