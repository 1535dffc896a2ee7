"""Scope: a backfill in slices (aiflow.data.backfill) leaves the same silver, quarantine and features as one full refresh, on
the tiny spec (month partitions, a side table) and on a regression spec (other names, Asia/Tokyo, unpartitioned); a key
re-landed on a date in another slice keeps only its latest row; reads are pinned at the plan; the next incremental refresh
has nothing to do and then picks up a later landing file."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from aiflow.data import backfill as bf
from aiflow.data.ingest import ingest
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.spec import DatasetSpec, parse_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.data.test_ingest_faults import METERS as FAULT_METERS
from tests.aiflow.data.test_partitioning import trips, write_trips, write_weather
from tests.aiflow.tiny import TINY, TRIPS_HEADER

FIRST, LAST = dt.date(2015, 1, 1), dt.date(2015, 12, 31)
ROWS = 2400


def year_spec() -> DatasetSpec:
    raw = copy.deepcopy(TINY)
    raw["split"] = {"valid_from": "2015-10-01", "test_from": "2015-11-15"}
    return parse_spec(raw, "trips")


#: Regression, other column names, another time zone (the fault tests' meters), no partitions, a range rule, no side table.
METERS = {
    **FAULT_METERS,
    "partitioning": "none",
    "quality": {"ranges": {"kwh": {"min": 0}}},
    "features": {"categorical": ["meter"], "numeric": [], "calendar": ["hour", "weekday"]},
}


@pytest.fixture(scope="module")
def year(tmp_path_factory) -> Path:
    """A year of trips in monthly files (some with a null carrier: quarantined) and the daily weather."""
    root = tmp_path_factory.mktemp("year")
    frame = trips(ROWS, FIRST, LAST, seed=3)
    frame = frame.with_columns(pl.when(pl.col("trip_id") % 97 == 0).then(None).otherwise(pl.col("carrier")).alias("carrier"))
    write_trips(root / "trips", frame)
    write_weather(root / "weather", FIRST, LAST)
    return root


def ingest_all(lake: Lake, landing: Path, spec: DatasetSpec) -> None:
    for table in spec.tables:
        ingest(lake, LocalLandingZone(landing / table.name), table)


def full_refresh(lake: Lake, spec: DatasetSpec) -> dict[str, pl.DataFrame]:
    """One full refresh of every silver table and the features; the resulting tables."""
    for table in spec.tables:
        assert refresh_silver(lake, table, full=True).full_refresh
    refresh_features(lake, spec)
    return snapshot(lake, spec)


def snapshot(lake: Lake, spec: DatasetSpec) -> dict[str, pl.DataFrame]:
    names = [*(Tables.silver(t.name) for t in spec.tables), *(Tables.quarantine(t.name) for t in spec.tables), Tables.features(spec.name)]
    frames = {n: lake.scan(n).collect().drop("_quarantined_at", strict=False) for n in names if lake.exists(n)}
    return {n: f.select(sorted(f.columns)).sort(sorted(f.columns), nulls_last=True) for n, f in frames.items()}


def assert_same(expected: dict[str, pl.DataFrame], actual: dict[str, pl.DataFrame]) -> None:
    assert sorted(expected) == sorted(actual)
    for name in expected:
        assert_frame_equal(expected[name], actual[name])


def versions(lake: Lake, spec: DatasetSpec) -> dict[str, int | None]:
    return {n: lake.version(n) for n in [*(Tables.silver(t.name) for t in spec.tables), Tables.features(spec.name)]}


@pytest.mark.parametrize(("sizing", "processes"), [({"slices": 3}, 1), ({"rows_per_slice": 1000}, 1)], ids=["3-slices", "1000-rows"])
def test_slices_equal_one_full_refresh_on_the_tiny_spec(tmp_path, year, sizing, processes):
    spec, lake = year_spec(), Lake(tmp_path / "lake")
    ingest_all(lake, year, spec)
    expected = full_refresh(lake, spec)
    assert expected[Tables.quarantine("trips")].height > 0 and expected[Tables.features("trips")].height > 2000

    done = bf.backfill(lake, spec, processes=processes, **sizing)

    assert_same(expected, snapshot(lake, spec))
    silver = [r for r in done["silver"] if r.slice.table == "trips"]
    assert len(silver) >= 3 and sum(r.slice.rows for r in silver) == ROWS
    for r in done["features"]:
        assert r.commits == 1 and r.peak_rss_mb > 0
    # slices are whole months (the tables are month-partitioned), contiguous and disjoint
    months = [{d.replace(day=1) for d in r.slice.dates} for r in silver]
    assert all(not (a & b) for i, a in enumerate(months) for b in months[i + 1 :])
    assert sorted(d for r in silver for d in r.slice.dates) == [d for r in silver for d in r.slice.dates]


def test_a_key_relanded_on_a_date_of_another_slice_keeps_its_latest_row(tmp_path, year):
    spec, lake = year_spec(), Lake(tmp_path / "lake")
    ingest_all(lake, year, spec)
    # later corrections move trip 11's event from its month to December and trip 12's from its month to January
    first_rows = lake.scan(Tables.bronze("trips")).filter(pl.col("trip_id").is_in([11, 12])).collect().sort("trip_id")
    moved = {11: "2015-12-20T15:00:00Z", 12: "2015-01-03T15:00:00Z"}
    assert {r["event_date"].month for r in first_rows.iter_rows(named=True)}.isdisjoint({1, 12})
    correction = tmp_path / "corrections"
    correction.mkdir()
    (correction / "zz-corrections.csv").write_text(
        TRIPS_HEADER + "\n" + "".join(f"{k},DL,JFK,321.0,100,,,{k}.5,{ts}\n" for k, ts in moved.items())
    )
    ingest(lake, LocalLandingZone(correction), spec)
    expected = full_refresh(lake, spec)
    kept = expected[Tables.silver("trips")].filter(pl.col("trip_id").is_in([11, 12])).sort("trip_id")
    assert kept["event_date"].to_list() == [dt.date(2015, 12, 20), dt.date(2015, 1, 3)]  # one row each: the latest

    plan = bf.plan_silver(lake, spec, slices=2)
    first_half = [s for s in plan if s.table == "trips"][0].dates
    assert (dt.date(2015, 1, 3) in first_half) != (dt.date(2015, 12, 20) in first_half)  # the two dates in different slices
    done = bf.backfill(lake, spec, slices=2)

    assert_same(expected, snapshot(lake, spec))
    assert sum(r.rows_superseded for r in done["silver"]) == 2  # each old row superseded by the slice that held it


def test_slices_equal_one_full_refresh_on_an_unpartitioned_regression_spec_in_tokyo(tmp_path):
    spec, lake = parse_spec(copy.deepcopy(METERS), "meters"), Lake(tmp_path / "lake")
    landing = tmp_path / "landing" / "meters"
    landing.mkdir(parents=True)
    times = pl.datetime_range(dt.datetime(2024, 1, 1), dt.datetime(2024, 3, 31, 20), "7h", eager=True, time_zone="UTC")
    frame = pl.DataFrame({"taken_at": times}).join(pl.DataFrame({"meter": ["m-a", "m-b", "m-c"]}), how="cross")
    frame = frame.with_columns(
        ((pl.int_range(pl.len()) * 37 % 101) / 10 - (pl.int_range(pl.len()) % 50 == 0) * 20).alias("kwh"),  # a few negative: quarantined
        pl.col("taken_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    frame.select("meter", "kwh", "taken_at").write_csv(landing / "a.csv")
    frame.head(40).with_columns(pl.col("kwh") + 1).select("meter", "kwh", "taken_at").write_csv(landing / "b.csv")  # later duplicates
    ingest(lake, LocalLandingZone(landing), spec)
    expected = full_refresh(lake, spec)
    assert expected[Tables.quarantine("meters")].height > 0 and lake.partition_columns(Tables.silver("meters")) == []

    done = bf.backfill(lake, spec, slices=4)

    assert len(done["silver"]) == 4 and len(done["features"]) == 4
    assert sum(r.rows_superseded for r in done["silver"]) == 40
    assert_same(expected, snapshot(lake, spec))


def test_after_a_backfill_the_incremental_refresh_has_nothing_to_do_then_takes_a_new_file(tmp_path, year):
    spec, lake = year_spec(), Lake(tmp_path / "lake")
    ingest_all(lake, year, spec)
    plan = bf.plan_silver(lake, spec, slices=2)
    # a file landing while the backfill runs, on dates the slices rebuild: they read bronze and the ledger as pinned by
    # the plan, so its rows wait for the next refresh
    late = tmp_path / "late" / "trips"
    write_trips(late, trips(30, dt.date(2015, 6, 1), dt.date(2015, 6, 30), seed=4, start_id=10_000))
    ingest(lake, LocalLandingZone(late), spec)
    late_dates = sorted(set(lake.scan(Tables.bronze("trips")).filter(pl.col("trip_id") >= 10_000).collect()["event_date"]))
    bf.finish_silver(lake, spec, [bf.rebuild_silver_slice(lake, spec, s) for s in plan])
    assert lake.scan(Tables.silver("trips")).filter(pl.col("trip_id") >= 10_000).collect().height == 0
    bf.finish_features(lake, spec, [bf.rebuild_features_slice(lake, spec, s) for s in bf.plan_features(lake, spec, slices=2)])

    report = refresh_silver(lake, spec)  # only the late file's dates
    assert report.dates == late_dates and not report.full_refresh
    assert lake.scan(Tables.silver("trips")).filter(pl.col("trip_id") >= 10_000).collect().height == 30
    assert refresh_silver(lake, spec.side("weather")).skipped
    features = refresh_features(lake, spec)
    assert not features.state_refitted and features.dates == late_dates and not features.full_refresh

    before = versions(lake, spec)
    assert refresh_silver(lake, spec).skipped and refresh_features(lake, spec).skipped
    assert versions(lake, spec) == before

    # and right after a complete backfill, nothing at all
    bf.backfill(lake, spec, slices=3)
    before = versions(lake, spec)
    assert refresh_silver(lake, spec).skipped and refresh_features(lake, spec).skipped
    assert versions(lake, spec) == before
    newer = tmp_path / "newer" / "trips"
    write_trips(newer, trips(20, dt.date(2016, 2, 1), dt.date(2016, 2, 28), seed=5, start_id=20_000))
    ingest(lake, LocalLandingZone(newer), spec)
    report = refresh_silver(lake, spec)
    assert {d.month for d in report.dates} == {2} and report.rows_out == 20 and not report.full_refresh
    assert refresh_features(lake, spec).rows_out == 20


def test_an_incomplete_backfill_does_not_advance_the_watermark(tmp_path, year):
    spec, lake = year_spec(), Lake(tmp_path / "lake")
    ingest_all(lake, year, spec)
    for table in spec.tables:
        refresh_silver(lake, table)
    watermark = lake.last_metadata(Tables.silver("trips"), "ledger_version")
    plan = [s for s in bf.plan_silver(lake, spec, slices=3) if s.table == "trips"]
    reports = [bf.rebuild_silver_slice(lake, spec, s) for s in plan[:2]]
    with pytest.raises(ValueError, match=r"backfill of 'trips' is incomplete.*missing \[2\]"):
        bf.finish_silver(lake, spec, reports)
    assert lake.last_metadata(Tables.silver("trips"), "ledger_version") == watermark


def test_split_units_balances_rows_in_contiguous_groups():
    day = dt.date(2015, 1, 1)
    units = [([day + dt.timedelta(days=i)], rows) for i, rows in enumerate([10, 10, 10, 70, 10, 10, 10, 10])]
    groups = bf.split_units(units, slices=3)
    assert [len(g) for g in groups] == [3, 1, 4]  # 30 | 70 | 40 rows
    assert [d for g in groups for d in g] == [u[0][0] for u in units]
    assert bf.split_units(units, rows_per_slice=40) == [[u[0][0] for u in units[i:j]] for i, j in [(0, 3), (3, 4), (4, 8)]]
    assert bf.split_units(units[:2], slices=5) == [[day], [day + dt.timedelta(days=1)]]
    with pytest.raises(ValueError, match="either slices or rows_per_slice"):
        bf.split_units(units, slices=2, rows_per_slice=10)
    with pytest.raises(ValueError, match="slices must be at least 1"):
        bf.split_units(units, slices=0)
