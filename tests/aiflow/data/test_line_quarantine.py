"""Scope: line-level quarantine (a malformed JSON line or a CSV row with the wrong number of fields is quarantined with its line number, the file's good lines are kept) and the target's source column required at ingestion; tiny spec and demo shapes, parser and real Delta ingestion."""

from __future__ import annotations

import json

import polars as pl
import pytest

from aiflow.data.ingest import INGESTED, REJECTED, ingest
from aiflow.data.parse import MALFORMED, RejectedFile, parse_file
from aiflow.spec import TableSpec, demo_spec_path, load_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.tiny import TINY, TRIPS_HEADER, TRIPS_ROWS, csv_bytes, write_file

GOOD_JSON = [
    {"trip_id": 1, "carrier": "AA", "origin": "JFK", "distance": 100.5, "delay": 3.0, "ts": "2013-01-01T10:00:00Z"},
    {"trip_id": 2, "carrier": "UA", "origin": "EWR", "distance": 2000, "delay": None, "ts": "2013-01-01T23:30:00Z"},
    {"trip_id": 3, "carrier": "AA", "origin": "LGA", "distance": 733, "delay": 45.5, "ts": "2013-01-02T01:15:00Z"},
]

DEMO_HEADER = (
    "year,month,day,dep_time,sched_dep_time,dep_delay,arr_time,sched_arr_time,arr_delay,carrier,flight,tailnum,"
    "origin,dest,air_time,distance,hour,minute,time_hour"
)
DEMO_ROWS = [
    "2013,1,1,517,515,2,830,819,11,UA,1545,N14228,EWR,IAH,227,1400,5,15,2013-01-01T10:00:00Z",
    "2013,1,1,533,529,4,850,830,20,UA,1714,N24211,LGA,IAH,227,1416,5,29,2013-01-01T10:00:00Z",
    "2013,1,1,542,540,2,923,850,33,AA,1141,N619AA,JFK,MIA,160,1089,5,40,2013-01-01T10:00:00Z",
    "2013,1,1,544,545,-1,1004,1022,-18,B6,725,N804JB,JFK,BQN,183,1576,5,45,2013-01-01T10:00:00Z",
]


@pytest.fixture
def table() -> TableSpec:
    return TableSpec.model_validate({k: TINY[k] for k in ("name", "landing", "columns", "key", "event_time", "quality")})


def _jsonl(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _bad(parsed) -> list[dict]:
    return parsed.bad.select("_source_row", "_rule", "_reason", "_record").to_dicts()


# ----------------------------------------------------------------------------------------- JSON lines
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param('{"trip_id": 2, "carrier": ', "line 2: not valid JSON (Expecting value at column 27)", id="cut-short"),
        pytest.param("[2, \"UA\"]", "line 2: a JSON list, expected an object", id="not-an-object"),
    ],
)
def test_one_malformed_json_line_is_quarantined_and_the_others_kept(table, line, reason):
    lines = [json.dumps(GOOD_JSON[0]), line, json.dumps(GOOD_JSON[2])]
    parsed = parse_file(_jsonl(lines), "jsonl", table, "day.jsonl")
    assert parsed.good["trip_id"].to_list() == [1, 3]
    assert parsed.good["_source_row"].to_list() == [1, 3]
    assert _bad(parsed) == [{"_source_row": 2, "_rule": MALFORMED, "_reason": reason, "_record": line}]


def test_json_line_numbers_count_empty_lines_which_are_no_records(table):
    lines = [json.dumps(GOOD_JSON[0]), "", "{oops", json.dumps(GOOD_JSON[1]), "   ", json.dumps(GOOD_JSON[2])]
    parsed = parse_file(_jsonl(lines), "jsonl", table, "day.jsonl")
    assert parsed.good["trip_id"].to_list() == [1, 2, 3]
    assert parsed.good["_source_row"].to_list() == [1, 3, 4]
    bad = _bad(parsed)
    assert [(b["_source_row"], b["_reason"].split(":")[0], b["_record"]) for b in bad] == [(2, "line 3", "{oops")]


def test_json_file_with_no_readable_line_is_still_rejected(table):
    with pytest.raises(RejectedFile, match=r"^broken.jsonl: cannot parse as jsonl"):
        parse_file(_jsonl(["{oops", "[1]"]), "jsonl", table, "broken.jsonl")


# ---------------------------------------------------------------------------------------------- CSV
@pytest.mark.parametrize(
    ("row", "fields"),
    [
        pytest.param("2,UA,EWR,2000,180,no,2012-12-02,NA,2013-01-01T23:30:00Z,extra", 10, id="too-many"),
        pytest.param("2,UA,EWR,2000,180,no,2012-12-02,NA", 8, id="too-few"),
    ],
)
def test_csv_row_with_the_wrong_number_of_fields_is_quarantined_with_its_line(table, row, fields):
    parsed = parse_file(csv_bytes([TRIPS_ROWS[0], row, TRIPS_ROWS[2]]), "csv", table, "day.csv")
    assert parsed.good["trip_id"].to_list() == [1, 3]
    assert parsed.good["_source_row"].to_list() == [1, 3]
    # line 1 is the header: the second record is line 3
    assert _bad(parsed) == [{"_source_row": 2, "_rule": MALFORMED, "_reason": f"line 3: {fields} fields, expected 9", "_record": row}]


def test_short_csv_row_is_not_accepted_with_nulls_when_the_event_time_comes_first(table):
    """Today's trap: a short row read with nulls at the end passes when the event time is not the last column."""
    header = "ts," + TRIPS_HEADER.removesuffix(",ts")
    rows = [r.rsplit(",", 1)[1] + "," + r.rsplit(",", 1)[0] for r in TRIPS_ROWS]
    short = rows[1].rsplit(",", 3)[0]  # the last three fields (refundable, booked, delay) missing
    parsed = parse_file(csv_bytes([rows[0], short, rows[2]], header), "csv", table, "day.csv")
    assert parsed.good["trip_id"].to_list() == [1, 3]
    assert _bad(parsed)[0]["_reason"] == "line 3: 6 fields, expected 9"


def test_quoted_csv_with_a_bad_row_counts_fields_and_lines_like_a_csv_reader(table):
    rows = [
        '1,"AA, the big one",JFK,100.5,120,yes,2012-12-01,3.0,2013-01-01T10:00:00Z',
        '2,"UA\nline two",EWR,2000,180,no,2012-12-02,NA,2013-01-01T23:30:00Z',  # a quoted line break: lines 3-4
        '3,AA,"LGA",733,,,,45.5',  # line 5: too few
        '4,AA,JFK,733,,,,45.5,2013-01-02T01:15:00Z,"x,y"',  # line 6: too many
        "",
        '5,AA,JFK,12,,,,1,2013-01-02T02:00:00Z',  # line 8, record 5 (the empty line is no record)
    ]
    parsed = parse_file(csv_bytes(rows), "csv", table, "quoted.csv")
    assert parsed.good["carrier"].to_list() == ["AA, the big one", "UA\nline two", "AA"]
    assert parsed.good["_source_row"].to_list() == [1, 2, 5]
    assert [(b["_source_row"], b["_reason"]) for b in _bad(parsed)] == [
        (3, "line 5: 8 fields, expected 9"),
        (4, "line 6: 10 fields, expected 9"),
    ]
    assert _bad(parsed)[1]["_record"] == rows[3]


def test_clean_csv_is_read_unchanged_and_empty_lines_are_skipped(table):
    parsed = parse_file(csv_bytes([TRIPS_ROWS[0], "", TRIPS_ROWS[1], "\r", TRIPS_ROWS[2]]), "csv", table, "day.csv")
    assert parsed.bad.height == 0
    assert parsed.good["trip_id"].to_list() == [1, 2, 3]
    assert parsed.good["_source_row"].to_list() == [1, 2, 3]


def test_demo_shaped_csv_with_a_bad_row():
    spec = load_spec(demo_spec_path())
    broken = DEMO_ROWS[2].replace(",JFK,", ",JFK,extra,")
    parsed = parse_file(csv_bytes([DEMO_ROWS[0], DEMO_ROWS[1], broken, DEMO_ROWS[3]], DEMO_HEADER), "csv", spec, "2013-01-01.csv")
    assert parsed.good["flight"].to_list() == [1545, 1714, 725]
    assert _bad(parsed) == [{"_source_row": 3, "_rule": MALFORMED, "_reason": "line 4: 20 fields, expected 19", "_record": broken}]


# ------------------------------------------------------------------------------- through ingestion
def test_ingestion_keeps_the_good_lines_and_quarantines_the_bad_ones(tmp_path, lake: Lake, tiny_spec):
    landing = tmp_path / "landing" / "trips"
    write_file(landing, "a.csv", csv_bytes([TRIPS_ROWS[0], "2,UA,EWR", TRIPS_ROWS[2]]))
    json_rows = [{**r, "trip_id": r["trip_id"] + 10} for r in GOOD_JSON]
    write_file(landing, "b.jsonl", _jsonl([json.dumps(json_rows[0]), json.dumps(json_rows[1]), "{not json"]))
    report = ingest(lake, LocalLandingZone(landing), tiny_spec)
    assert [(f.file, f.outcome, f.rows_ingested, f.rows_quarantined) for f in report.files] == [
        ("a.csv", INGESTED, 2, 1),
        ("b.jsonl", INGESTED, 2, 1),
    ]
    bronze = lake.scan(Tables.bronze("trips")).collect()
    assert sorted(bronze["trip_id"].to_list()) == [1, 3, 11, 12]
    quarantine = lake.scan(Tables.quarantine("trips")).sort("_source_file").collect()
    assert quarantine.select("_stage", "_rule", "_reason", "_record", "_source_file", "_source_row").to_dicts() == [
        {"_stage": "ingest", "_rule": MALFORMED, "_reason": "line 3: 3 fields, expected 9", "_record": "2,UA,EWR",
         "_source_file": "a.csv", "_source_row": 2},
        {"_stage": "ingest", "_rule": MALFORMED, "_reason": "line 3: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
         "_record": "{not json", "_source_file": "b.jsonl", "_source_row": 3},
    ]


# ------------------------------------------------------------------- the target's source is required
def test_tiny_file_without_the_target_source_is_rejected_naming_it(tiny_spec):
    header = TRIPS_HEADER.replace(",delay", "")
    rows = [",".join(v for i, v in enumerate(r.split(",")) if i != 7) for r in TRIPS_ROWS]
    with pytest.raises(RejectedFile) as exc:
        parse_file(csv_bytes(rows, header), "csv", tiny_spec, "no-delay.csv")
    assert str(exc.value).startswith("no-delay.csv: missing required column 'delay' (the target's source")
    # a null value in a present column is what when_null is for: still accepted
    assert parse_file(csv_bytes(TRIPS_ROWS), "csv", tiny_spec, "ok.csv").good["delay"].null_count() == 1


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_demo_file_without_arr_delay_is_rejected_at_ingestion(tmp_path, lake: Lake, fmt):
    spec = load_spec(demo_spec_path())
    frame = pl.read_csv(csv_bytes(DEMO_ROWS, DEMO_HEADER), infer_schema=False).drop("arr_delay")
    data = frame.write_csv().encode() if fmt == "csv" else frame.write_ndjson().encode()
    landing = tmp_path / "landing" / "flights"
    write_file(landing, f"2013-01-01.{fmt}", data)
    report = ingest(lake, LocalLandingZone(landing), spec)
    assert [f.outcome for f in report.files] == [REJECTED]
    assert "missing required column 'arr_delay'" in report.files[0].error
    assert not lake.exists(Tables.bronze("flights"))


#: A regression dataset with other column names and another time zone than the tiny spec.
METERS = {
    "name": "meters",
    "landing": {"uri": "landing/meters"},
    "columns": {"meter": {"type": "string"}, "kwh": {"type": "float64", "required": False}, "taken_at": {"type": "datetime"}},
    "key": ["meter", "taken_at"],
    "event_time": "taken_at",
    "timezone": "Asia/Tokyo",
    "problem_type": "regression",
    "target": {"name": "load", "source": "kwh", "kind": "identity"},
    "known_after_event": ["kwh"],
    "features": {"categorical": ["meter"], "calendar": ["hour"]},
    "split": {"valid_from": "2024-03-01", "test_from": "2024-03-15"},
}


def test_regression_spec_requires_its_target_source_and_quarantines_bad_lines():
    from aiflow.spec import parse_spec

    spec = parse_spec(METERS, "meters")
    with pytest.raises(RejectedFile, match=r"^m.jsonl: missing required column 'kwh' \(the target's source"):
        parse_file(_jsonl(['{"meter": "M1", "taken_at": "2024-03-01T01:00:00+09:00"}']), "jsonl", spec, "m.jsonl")
    rows = ["M1,1.5,2024-03-01T01:00:00+09:00", "M1;2.5;2024-03-01T02:00:00+09:00", "M2,,2024-03-01T03:00:00+09:00"]
    parsed = parse_file(csv_bytes(rows, "meter,kwh,taken_at"), "csv", spec, "m.csv")
    assert parsed.good["meter"].to_list() == ["M1", "M2"] and parsed.good["kwh"].to_list() == [1.5, None]
    assert _bad(parsed) == [{"_source_row": 2, "_rule": MALFORMED, "_reason": "line 3: 1 field, expected 3", "_record": rows[1]}]
