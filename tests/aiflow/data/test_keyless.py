"""Scope: data without a natural key (row_identity source_row / content_hash) honoured end to end — ingestion gives each row its row_id, silver de-duplicates as documented, features build and pass their key check — and source-column mapping (reserved and awkward file headers) flowing to features; tiny spec in another time zone."""

from __future__ import annotations

import os

import polars as pl
import pytest

from aiflow.data.ingest import ingest
from aiflow.data.parse import parse_file
from aiflow.data.quality import features_checks, silver_checks
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.spec import ROW_ID, DatasetSpec, parse_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.tiny import TRIPS_HEADER, TRIPS_ROWS, csv_bytes, write_file

#: The tiny trips without trip ids: nothing in a row identifies it.
HEADER = TRIPS_HEADER.removeprefix("trip_id,")
ROWS = [r.split(",", 1)[1] for r in TRIPS_ROWS]


def _keyless(tiny_dict: dict, identity: str) -> DatasetSpec:
    d = tiny_dict
    del d["key"], d["columns"]["trip_id"]
    d["row_identity"] = identity
    d["timezone"] = "Asia/Kolkata"
    d["side_tables"], d["joins"] = [], []
    d["quality"]["max_null_rate"] = {"key": 0.0}
    return parse_spec(d, "keyless")


def _land(folder, name: str, rows: list[str], mtime: int) -> None:
    path = write_file(folder, name, csv_bytes(rows, HEADER))
    os.utime(path, (mtime, mtime))


def _run(lake: Lake, landing, spec: DatasetSpec) -> pl.DataFrame:
    ingest(lake, LocalLandingZone(landing), spec)
    refresh_silver(lake, spec)
    refresh_features(lake, spec)
    for verdicts in (silver_checks(lake, spec), features_checks(lake, spec)):
        failed = {k: v.description for k, v in verdicts.items() if not v.passed}
        assert not failed, failed
    return lake.scan(Tables.silver(spec.name)).collect().sort(ROW_ID)


def test_source_row_identity_is_file_and_row_and_a_relanded_file_replaces_its_rows(tmp_path, lake: Lake, tiny_dict):
    spec = _keyless(tiny_dict, "source_row")
    landing = tmp_path / "landing" / "trips"
    _land(landing, "a.csv", ROWS, 1_000_000)
    _land(landing, "b.csv", ROWS[:1], 1_000_000)  # the same row in another file: another row
    silver = _run(lake, landing, spec)
    assert silver[ROW_ID].to_list() == ["a.csv#1", "a.csv#2", "a.csv#3", "b.csv#1"]
    assert silver["distance"].to_list() == [100.5, 2000.0, 733.0, 100.5]

    # a corrected a.csv under the same name: its rows replace the earlier ones, row by row
    _land(landing, "a.csv", [ROWS[0], ROWS[1].replace("2000", "2100"), ROWS[2]], 2_000_000)
    silver = _run(lake, landing, spec)
    assert silver[ROW_ID].to_list() == ["a.csv#1", "a.csv#2", "a.csv#3", "b.csv#1"]
    assert silver["distance"].to_list() == [100.5, 2100.0, 733.0, 100.5]
    features = lake.scan(Tables.features(spec.name)).collect()
    assert sorted(features[ROW_ID].to_list()) == silver[ROW_ID].to_list()
    assert features.schema[ROW_ID] == pl.String


def test_content_hash_identity_merges_identical_rows_wherever_they_come_from(tmp_path, lake: Lake, tiny_dict):
    spec = _keyless(tiny_dict, "content_hash")
    landing = tmp_path / "landing" / "trips"
    _land(landing, "a.csv", ROWS, 1_000_000)
    new = "AA,JFK,50,,,,1.0,2013-01-03T08:00:00Z"
    _land(landing, "b.csv", [ROWS[2], new], 1_000_000)  # one row identical to a.csv's third, one new
    silver = _run(lake, landing, spec)
    assert silver.height == 4
    assert sorted(silver["distance"].to_list()) == [50.0, 100.5, 733.0, 2000.0]
    assert silver[ROW_ID].n_unique() == 4 and silver[ROW_ID].str.len_chars().to_list() == [32] * 4
    features = lake.scan(Tables.features(spec.name)).collect()
    assert features.height == 4


def test_content_hash_is_the_same_for_the_same_values_in_any_format(tiny_dict):
    spec = _keyless(tiny_dict, "content_hash")
    csv = parse_file(csv_bytes(ROWS, HEADER), "csv", spec, "a.csv").good
    frame = pl.read_csv(csv_bytes(ROWS, HEADER), null_values=["NA", ""])
    jsonl = parse_file(frame.write_ndjson().encode(), "jsonl", spec, "b.jsonl").good
    assert csv[ROW_ID].to_list() == jsonl[ROW_ID].to_list()
    assert csv[ROW_ID].n_unique() == 3



def test_content_hash_tells_columns_apart_and_keeps_its_values_across_releases(tiny_dict):
    """Values that concatenate to the same text in different columns ("AA" + "JFK" vs "AAJ" + "FK") are different rows;
    the digests are pinned, a row with a null among them (they are stored: rows landed before a release must keep their
    identity after it); a file with no good row still gives a text ``row_id`` column."""
    spec = _keyless(tiny_dict, "content_hash")
    rows = ["AA,JFK,100,120,yes,2012-12-01,3,2013-01-01T10:00:00Z", "AAJ,FK,100,120,yes,2012-12-01,3,2013-01-01T10:00:00Z",
            "NA,JFK,100,120,yes,2012-12-01,3,2013-01-01T10:00:00Z"]  # fmt: skip
    good = parse_file(csv_bytes(rows, HEADER), "csv", spec, "a.csv").good.sort("_source_row")
    assert good[ROW_ID].n_unique() == 3
    assert good[ROW_ID].gather([0, 2]).to_list() == ["7697dcf7c3072b63e1cb6073e8e974a7", "2301bc5f704b7a0f6d920b38d51de020"]
    empty = parse_file(csv_bytes(["AA,JFK,far,120,yes,2012-12-01,3,2013-01-01T10:00:00Z"], HEADER), "csv", spec, "b.csv")
    assert empty.good.height == 0 and empty.good.schema[ROW_ID] == pl.String


def test_a_file_bringing_its_own_row_id_column_is_rejected_when_the_engine_generates_it(tiny_dict):
    spec = _keyless(tiny_dict, "source_row")
    rows = [f"{i},{r}" for i, r in enumerate(ROWS)]
    with pytest.raises(Exception, match=r"column 'row_id' is reserved for the engine: declare a column for it with source: 'row_id'"):
        parse_file(csv_bytes(rows, f"row_id,{HEADER}"), "csv", spec, "ids.csv")


# ------------------------------------------------------------------------------ source-column mapping
def test_mapped_reserved_and_awkward_headers_ingest_and_flow_to_features(tmp_path, lake: Lake, tiny_dict):
    tiny_dict["columns"]["service_day"] = {"type": "date", "source": "event_date"}
    tiny_dict["columns"]["speed_mph"] = {"type": "float64", "source": "Speed (mph)"}
    tiny_dict["features"]["numeric"].append("speed_mph")
    tiny_dict["slices"] = ["service_day"]
    tiny_dict["timezone"] = "Europe/Berlin"
    spec = parse_spec(tiny_dict, "mapped")
    header = TRIPS_HEADER + ",event_date,Speed (mph)"
    rows = [TRIPS_ROWS[0] + ",2013-01-01,31.5", TRIPS_ROWS[1] + ",2013-01-01,40", TRIPS_ROWS[2] + ",2013-01-02,NA"]
    landing = tmp_path / "landing"
    write_file(landing / "trips", "a.csv", csv_bytes(rows, header))
    write_file(landing / "weather", "w.csv", b"origin,temp,ts\nJFK,1.5,2013-01-01T09:00:00Z\n")
    for table in spec.tables:
        report = ingest(lake, LocalLandingZone(landing / table.name), table)
        assert report.new_columns == []  # renamed on read: nothing unknown
        refresh_silver(lake, table)
    refresh_features(lake, spec)
    assert all(v.passed for v in features_checks(lake, spec).values())
    features = lake.scan(Tables.features(spec.name)).sort("trip_id").collect()
    assert [str(d) for d in features["service_day"].to_list()] == ["2013-01-01", "2013-01-01", "2013-01-02"]
    speed = features["num_speed_mph"].to_list()
    assert speed[0] < speed[1] and speed[2] == 0.0  # standardised; the null is the mean
    bronze = lake.scan(Tables.bronze("trips")).collect()
    assert "Speed (mph)" not in bronze.columns and bronze["speed_mph"].to_list().count(None) == 1


def test_a_file_with_both_the_source_and_the_spec_name_is_rejected(tiny_dict):
    tiny_dict["columns"]["speed_mph"] = {"type": "float64", "required": False, "source": "Speed (mph)"}
    spec = parse_spec(tiny_dict, "mapped")
    rows = [r + ",1,2" for r in TRIPS_ROWS]
    with pytest.raises(Exception, match=r"has both column 'Speed \(mph\)' \(read as 'speed_mph'\) and column 'speed_mph'"):
        parse_file(csv_bytes(rows, TRIPS_HEADER + ",Speed (mph),speed_mph"), "csv", spec, "both.csv")


def test_unmapped_event_date_column_in_a_file_is_rejected_with_the_fix(tiny_spec):
    rows = [r + ",2013-01-01" for r in TRIPS_ROWS]
    with pytest.raises(Exception, match=r"column 'event_date' is reserved for the engine: declare a column for it with source: 'event_date'"):
        parse_file(csv_bytes(rows, TRIPS_HEADER + ",event_date"), "csv", tiny_spec, "dated.csv")
