"""Scope: table maintenance on real Delta tables of the tiny spec: compaction reduces files, vacuum respects retention, rows and content
versions unchanged; compaction leaves the files of the dates daily runs still replace alone, on every partitioning (month, day,
none), so the next daily replace still rewrites only a small file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from aiflow.data.ingest import ingest
from aiflow.data.maintenance import HOT_DAYS, content_version, dataset_tables, maintain
from aiflow.data.refine import refresh_silver
from aiflow.spec import EVENT_DATE, EVENT_MONTH, DatasetSpec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.tiny import csv_bytes, write_file


def _data_files(lake: Lake, table: str) -> set[Path]:
    """Parquet files on disk under the table (referenced or not)."""
    return set(Path(lake.uri(table)).rglob("*.parquet"))


@pytest.fixture
def many_small_files(tmp_path: Path, lake: Lake, tiny_spec: DatasetSpec) -> Lake:
    """Six ingestions of one row each on the same event date: six small files in one bronze partition."""
    zone = tmp_path / "landing" / "trips"
    for i in range(6):
        write_file(zone, f"part-{i}.csv", csv_bytes([f"{i},AA,JFK,100,1,yes,2012-12-01,3.0,2013-01-01T1{i}:00:00Z"]))
        assert ingest(lake, LocalLandingZone(zone), tiny_spec, [f"part-{i}.csv"]).rows_ingested == 1
    refresh_silver(lake, tiny_spec)
    return lake


def _rows(lake: Lake, table: str) -> pl.DataFrame:
    return lake.scan(table).collect().sort("_source_file")


def test_compaction_reduces_files_keeps_rows_and_content_version(many_small_files, tiny_spec):
    lake = many_small_files
    bronze = Tables.bronze(tiny_spec.name)
    rows, referenced = _rows(lake, bronze), len(lake.table(bronze).file_uris())
    version, content = lake.version(bronze), content_version(lake, bronze)
    assert referenced == 6 and content == version

    results = {r.table: r for r in maintain(lake, tiny_spec, hot_days=None)}
    assert set(results) == {t for t in dataset_tables(tiny_spec) if lake.exists(t)}
    assert results[bronze].files_removed_by_compaction == 6 and results[bronze].files_added_by_compaction == 1
    assert len(lake.table(bronze).file_uris()) == 1
    assert _rows(lake, bronze).equals(rows)
    # maintenance commits moved the table version, not its content version (nor the data version assets report)
    assert lake.version(bronze) > version
    assert content_version(lake, bronze) == content


def test_vacuum_keeps_unreferenced_files_inside_the_retention_window(many_small_files, tiny_spec):
    lake = many_small_files
    bronze = Tables.bronze(tiny_spec.name)
    rows = _rows(lake, bronze)
    before = _data_files(lake, bronze)

    kept = {r.table: r for r in maintain(lake, tiny_spec, retention_hours=168, hot_days=None)}
    assert kept[bronze].files_vacuumed == 0
    assert before <= _data_files(lake, bronze)  # compacted-away files are still there for time travel
    assert lake.scan(bronze, version=0).collect().height == 1  # an old version still reads

    removed = {r.table: r for r in maintain(lake, tiny_spec, retention_hours=0, hot_days=None)}
    assert removed[bronze].files_vacuumed == 6
    assert _data_files(lake, bronze) == {Path(u.removeprefix("file://")) for u in lake.table(bronze).file_uris()}
    assert _rows(lake, bronze).equals(rows)


def test_content_version_follows_row_changes_only(lake, tiny_spec):
    table = "misc/t"
    assert content_version(lake, table) is None
    for i in range(3):
        lake.append(table, pl.DataFrame({"a": [i]}))
    lake.compact(table)
    lake.vacuum(table, retention_hours=0)
    assert lake.version(table) > 2 and content_version(lake, table) == 2
    lake.delete(table, "a = 0")
    deleted = lake.version(table)
    assert content_version(lake, table) == deleted
    # more maintenance commits than the first look-back window holds: the whole log is read
    for _ in range(3):
        lake.vacuum(table, retention_hours=0)
    assert lake.version(table) >= deleted + 2
    assert content_version(lake, table, look_back=2) == deleted


def test_incremental_silver_after_a_vacuum_with_zero_retention_refreshes_instead_of_failing(tmp_path, many_small_files, tiny_spec):
    """Vacuum at 0 h deletes the ledger files of the version silver's watermark names; the next run redoes every date."""
    lake = many_small_files
    maintain(lake, tiny_spec, retention_hours=0, hot_days=None)
    zone = tmp_path / "landing" / "trips"
    write_file(zone, "late.csv", csv_bytes(["99,UA,EWR,500,1,no,2012-12-01,40.0,2013-01-05T12:00:00Z"]))
    assert ingest(lake, LocalLandingZone(zone), tiny_spec, ["late.csv"]).rows_ingested == 1
    report = refresh_silver(lake, tiny_spec)
    assert report.full_refresh is True
    silver = lake.scan(Tables.silver(tiny_spec.name)).collect()
    assert sorted(silver["trip_id"].to_list()) == [0, 1, 2, 3, 4, 5, 99]


def _daily(lake: Lake, table: str, partitioning: str, days: int, start=dt.date(2031, 1, 10)) -> pl.DataFrame:
    """``days`` daily replaces (each day's rows on two dates, as a day of flights in UTC): the table's rows."""
    for k in range(days):
        dates = [start + dt.timedelta(days=k), start + dt.timedelta(days=k + 1)]
        rows = pl.DataFrame({EVENT_DATE: [d for d in dates for _ in range(5)], "key": [f"{k}-{i}" for i in range(10)], "v": float(k)})
        lake.replace_dates(table, rows, dates, partitioning=partitioning)
    return lake.scan(table).collect()


@pytest.mark.parametrize("partitioning", ["month", "day", "none"])
def test_compaction_leaves_the_hot_dates_files_alone(lake, partitioning):
    table = "silver/daily"
    _daily(lake, table, partitioning, days=40)  # 2031-01-10 .. 2031-02-19
    dates = [dt.date(2031, 1, 10) + dt.timedelta(days=k) for k in range(41)]
    lake.append(table, pl.DataFrame({EVENT_DATE: dates, "key": [f"late-{d}" for d in dates], "v": 0.5}))  # a second file per partition
    rows = lake.scan(table).collect()
    newest = lake.newest_date(table)
    assert newest == dt.date(2031, 2, 19)
    before = dt.date(2031, 2, 19) - dt.timedelta(days=HOT_DAYS)
    files = pl.DataFrame(lake.table(table).get_add_actions(flatten=True))
    hot_before = files.filter(pl.col(f"max.{EVENT_DATE}").cast(pl.Date) >= before) if f"max.{EVENT_DATE}" in files.columns else files
    content = content_version(lake, table)

    metrics = lake.compact(table, before=before)
    assert metrics["numFilesRemoved"] > metrics["numFilesAdded"] >= 1
    after = pl.DataFrame(lake.table(table).get_add_actions(flatten=True))
    # every file holding a date the daily runs still replace is the very same file
    hot_paths = set(hot_before["path"]) if partitioning == "none" else set(files.filter(_reaches(before, partitioning))["path"])
    assert hot_paths and hot_paths <= set(after["path"])
    # the cold dates now sit in few files; rows and content version unchanged
    cold_after = after.filter(~pl.col("path").is_in(list(hot_paths)))
    assert cold_after.height < files.height - len(hot_paths)
    assert_frame_equal(lake.scan(table).collect().sort("key"), rows.sort("key"), check_column_order=False)
    assert content_version(lake, table) == content
    # a replace of a hot date after the maintenance rewrites only that date's small files
    _daily(lake, table, partitioning, days=1, start=dt.date(2031, 2, 19))
    commit = [json.loads(line) for line in (Path(lake.uri(table)) / "_delta_log" / f"{lake.version(table):020d}.json").read_text().splitlines()]
    removed = {a["remove"]["path"] for a in commit if "remove" in a}
    assert removed and removed <= hot_paths


def _reaches(before: dt.date, partitioning: str) -> pl.Expr:
    """Files of partitions compaction must leave alone: the months (days) reaching ``before``."""
    if partitioning == "month":
        return pl.col(f"partition.{EVENT_MONTH}").cast(pl.Date) >= before.replace(day=1)
    return pl.col(f"partition.{EVENT_DATE}").cast(pl.Date) >= before


def test_maintain_compacts_the_cold_months_by_default(lake, tiny_spec):
    silver = Tables.silver(tiny_spec.name)
    rows = _daily(lake, silver, "month", days=40)
    files_before = len(lake.table(silver).file_uris())
    results = {r.table: r for r in maintain(lake, tiny_spec, retention_hours=168)}
    assert results[silver].files_removed_by_compaction > 1 and results[silver].files_added_by_compaction == 1  # January
    assert len(lake.table(silver).file_uris()) == files_before - results[silver].files_removed_by_compaction + 1
    assert_frame_equal(lake.scan(silver).collect().sort("key"), rows.sort("key"), check_column_order=False)
    everything = {r.table: r for r in maintain(lake, tiny_spec, hot_days=None)}
    assert everything[silver].files_added_by_compaction == 1 and len(lake.table(silver).file_uris()) == 2  # one per month
