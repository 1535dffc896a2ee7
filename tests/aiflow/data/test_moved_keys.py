"""Scope: de-duplication on a key that does not hold the event time spans dates, batches and runs. A correction that re-lands
a key with another event time (on another date, in a later run) leaves one row, the latest, in silver — incrementally, in a
full refresh split into several batches, and on the regression spec with other names in Asia/Tokyo; a key that holds the
event time costs no extra scan."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from aiflow.data import refine
from aiflow.data.ingest import ingest
from aiflow.data.refine import refresh_silver
from aiflow.spec import parse_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.data.test_backfill import METERS, year_spec
from tests.aiflow.data.test_partitioning import trips, write_trips, write_weather
from tests.aiflow.tiny import TRIPS_HEADER

FIRST, LAST = dt.date(2015, 1, 1), dt.date(2015, 6, 30)


def _silver(lake: Lake, table: str) -> pl.DataFrame:
    frame = lake.scan(Tables.silver(table)).collect()
    return frame.select(sorted(frame.columns)).sort(sorted(frame.columns), nulls_last=True)


@pytest.fixture
def landed(tmp_path) -> tuple[Path, Lake]:
    root = tmp_path / "landing"
    write_trips(root / "trips", trips(600, FIRST, LAST, seed=5))
    write_weather(root / "weather", FIRST, LAST)
    spec, lake = year_spec(), Lake(tmp_path / "lake")
    for table in spec.tables:
        ingest(lake, LocalLandingZone(root / table.name), table)
    return root, lake


def _correct(lake: Lake, folder: Path, moved: dict[int, str]) -> None:
    """Land a correction file re-stating trips ``moved`` with new event times."""
    folder.mkdir()
    (folder / "zz-corrections.csv").write_text(TRIPS_HEADER + "\n" + "".join(f"{k},DL,JFK,321.0,100,,,{k}.5,{ts}\n" for k, ts in moved.items()))
    ingest(lake, LocalLandingZone(folder), year_spec())


def test_a_key_moved_to_another_date_by_a_later_run_leaves_its_old_date(landed, tmp_path):
    _, lake = landed
    refresh_silver(lake, year_spec())
    before = lake.scan(Tables.silver("trips")).filter(pl.col("trip_id").is_in([7, 8])).collect().sort("trip_id")
    moved = {7: "2015-06-20T15:00:00Z", 8: "2015-01-03T15:00:00Z"}
    assert set(before["event_date"].to_list()).isdisjoint({dt.date(2015, 6, 20), dt.date(2015, 1, 3)}) and before.height == 2
    _correct(lake, tmp_path / "corrections", moved)

    report = refresh_silver(lake, year_spec())  # incremental: the new dates, and the dates the moved keys leave

    assert not report.full_refresh and set(before["event_date"]) <= set(report.dates)
    after = lake.scan(Tables.silver("trips")).filter(pl.col("trip_id").is_in([7, 8])).collect().sort("trip_id")
    assert after["event_date"].to_list() == [dt.date(2015, 6, 20), dt.date(2015, 1, 3)]  # one row each: the latest
    assert report.rows_superseded >= 2
    incremental = _silver(lake, "trips")
    refresh_silver(lake, year_spec(), full=True)
    assert_frame_equal(incremental, _silver(lake, "trips"))  # the same as recomputing everything


def test_a_full_refresh_in_several_batches_keeps_one_row_per_key(landed, tmp_path):
    _, lake = landed
    _correct(lake, tmp_path / "corrections", {7: "2015-06-20T15:00:00Z", 8: "2015-01-03T15:00:00Z"})
    refresh_silver(lake, year_spec(), full=True)
    one_batch = _silver(lake, "trips")
    assert one_batch["trip_id"].is_duplicated().sum() == 0
    refresh_silver(lake, year_spec(), full=True, batch_rows=50)  # January and June in different batches
    assert_frame_equal(one_batch, _silver(lake, "trips"))


def test_a_regression_spec_in_tokyo_whose_key_moves(tmp_path):
    raw = copy.deepcopy(METERS)
    raw["key"] = ["meter"]  # one reading per meter, restated with a new time: the key does not hold the event time
    spec, lake = parse_spec(raw, "meters"), Lake(tmp_path / "lake")
    zone = tmp_path / "landing"
    zone.mkdir()
    (zone / "a.csv").write_text("meter,kwh,taken_at\nm1,1.5,2024-02-01T10:30:00+09:00\nm2,2.0,2024-02-02T08:00:00+09:00\n")
    ingest(lake, LocalLandingZone(zone), spec)
    refresh_silver(lake, spec)
    (zone / "b.csv").write_text("meter,kwh,taken_at\nm1,1.7,2024-02-05T00:30:00+09:00\n")
    ingest(lake, LocalLandingZone(zone), spec)
    refresh_silver(lake, spec)
    silver = lake.scan(Tables.silver("meters")).collect().sort("meter")
    assert silver["meter"].to_list() == ["m1", "m2"] and silver["kwh"].to_list() == [1.7, 2.0]
    assert silver["event_date"].to_list() == [dt.date(2024, 2, 4), dt.date(2024, 2, 1)]  # UTC dates of the Tokyo times


def test_a_key_holding_the_event_time_needs_no_cross_date_scan(tmp_path, monkeypatch):
    spec, lake = parse_spec(copy.deepcopy(METERS), "meters"), Lake(tmp_path / "lake")
    zone = tmp_path / "landing"
    zone.mkdir()
    (zone / "a.csv").write_text("meter,kwh,taken_at\nm1,1.5,2024-02-01T23:30:00+09:00\n")
    ingest(lake, LocalLandingZone(zone), spec)

    def scan(*args, **kwargs):
        raise AssertionError("the key holds the event time: no key spans two dates")

    monkeypatch.setattr(refine, "cross_date_winners", scan)
    assert refresh_silver(lake, spec).rows_out == 1
