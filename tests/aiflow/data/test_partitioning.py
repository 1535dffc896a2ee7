"""Scope: partitioning that fits the data (issue 9, item 9) — the spec's ``partitioning`` (month by default, day, none) sets how many files each table gets; existing day-partitioned lakes keep refreshing incrementally; incremental stages replace dates by predicate whatever the partitioning; unpartitioned files are sorted so statistics prune date filters; compaction to a target size. Tiny spec (America/New_York) over six years, not the demo."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from aiflow.data.ingest import ingest
from aiflow.data.maintenance import maintain
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.spec import DatasetSpec, SpecError, parse_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.tiny import TINY

ROWS = 50_000
FIRST, LAST = dt.date(2015, 1, 1), dt.date(2020, 12, 31)
MONTHS = 72
TRIPS, WEATHER = "trips", "weather"


def six_year_spec(partitioning: str | None) -> DatasetSpec:
    """The tiny spec over 2015–2020 (split moved there), with ``partitioning`` on both tables (None: the default)."""
    spec = copy.deepcopy(TINY)
    spec["split"] = {"valid_from": "2020-01-01", "test_from": "2020-07-01"}
    if partitioning is not None:
        spec["partitioning"] = partitioning
        spec["side_tables"][0]["partitioning"] = partitioning
    return parse_spec(spec, "six-years")


def trips(n: int, first: dt.date, last: dt.date, seed: int, start_id: int = 1) -> pl.DataFrame:
    """``n`` trips at random times between ``first`` and ``last`` (shuffled, as files arrive), UTC ISO strings."""
    rng = np.random.default_rng(seed)
    span = int((dt.datetime.combine(last, dt.time(23, 59)) - dt.datetime.combine(first, dt.time())).total_seconds())
    seconds = rng.integers(0, span, n)
    times = np.datetime64(first.isoformat(), "s") + seconds.astype("timedelta64[s]")
    return pl.DataFrame(
        {
            "trip_id": np.arange(start_id, start_id + n),
            "carrier": rng.choice(["AA", "UA", "DL", "B6"], n),
            "origin": rng.choice(["JFK", "EWR", "LGA"], n),
            "distance": rng.uniform(50, 3000, n).round(1),
            "seats": rng.integers(50, 300, n),
            "delay": rng.normal(10, 30, n).round(1),
            "ts": pl.Series(times.astype("datetime64[ms]")).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )


def write_trips(folder: Path, frame: pl.DataFrame) -> list[str]:
    """One CSV per calendar month of the trips (as a monthly export would land); returns the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    month = pl.col("ts").str.slice(0, 7)
    names = []
    for (key,), part in frame.with_columns(month.alias("_m")).partition_by("_m", as_dict=True).items():
        names.append(f"trips-{key}.csv")
        part.drop("_m").write_csv(folder / names[-1])
    return sorted(names)


def write_weather(folder: Path, first: dt.date = FIRST, last: dt.date = LAST) -> None:
    """Daily weather at each origin (over the six years: 6,576 rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    days = pl.date_range(first, last, "1d", eager=True)
    frame = pl.DataFrame({"origin": ["JFK", "EWR", "LGA"]}).join(pl.DataFrame({"day": days}), how="cross")
    frame = frame.with_columns(
        pl.col("day").dt.strftime("%Y-%m-%dT12:00:00Z").alias("ts"), (pl.col("day").dt.ordinal_day() / 10.0).alias("temp")
    )
    frame.select("origin", "temp", "ts").write_csv(folder / "weather.csv")


def run(lake: Lake, landing: Path, spec: DatasetSpec, files: list[str] | None = None) -> dict:
    """Ingest (all new files, or the named trip files), refresh silver and features; return the reports."""
    reports = {"ingest": ingest(lake, LocalLandingZone(landing / TRIPS), spec, files)}
    ingest(lake, LocalLandingZone(landing / WEATHER), spec.side(WEATHER))
    reports["silver"] = refresh_silver(lake, spec)
    refresh_silver(lake, spec.side(WEATHER))
    reports["features"] = refresh_features(lake, spec)
    return reports


def files(lake: Lake, table: str) -> pl.DataFrame:
    """The table's current data files with their event-date statistics."""
    actions = pl.DataFrame(lake.table(table).get_add_actions(flatten=True))
    if "partition.event_date" in actions.columns:  # no statistics on a partition column: its value is both bounds
        actions = actions.with_columns(
            pl.col("partition.event_date").alias("min.event_date"), pl.col("partition.event_date").alias("max.event_date")
        )
    return actions.select("path", "size_bytes", "num_records", "min.event_date", "max.event_date")


DATA_TABLES = [Tables.bronze(TRIPS), Tables.silver(TRIPS), Tables.features(TRIPS), Tables.bronze(WEATHER), Tables.silver(WEATHER)]


@pytest.fixture(scope="module")
def six_years(tmp_path_factory) -> Path:
    """50,000 trips over six years in 72 monthly files, and the daily weather."""
    root = tmp_path_factory.mktemp("six-years")
    write_trips(root / TRIPS, trips(ROWS, FIRST, LAST, seed=9))
    write_weather(root / WEATHER)
    return root


@pytest.fixture(scope="module", params=[None, "none"], ids=["default", "none"])
def six_year_lake(request, tmp_path_factory, six_years) -> tuple[Lake, DatasetSpec]:
    spec = six_year_spec(request.param)
    lake = Lake(tmp_path_factory.mktemp("lake"))
    reports = run(lake, six_years, spec)
    assert reports["silver"].rows_out == ROWS and reports["features"].rows_out == ROWS
    return lake, spec


def test_default_is_month(six_year_lake):
    lake, spec = six_year_lake
    if spec.partitioning != "month":
        pytest.skip("the 'none' lake")
    for table in DATA_TABLES:
        assert lake.partition_columns(table) == ["event_month"], table


def test_files_per_table_are_proportionate_to_the_data(six_year_lake):
    """Six years of 50k rows: at most one file per month (month) or a handful (none), not one per day (2,192)."""
    lake, spec = six_year_lake
    limit = {"month": MONTHS, "none": 2}[spec.partitioning]
    for table in DATA_TABLES:
        found = files(lake, table)
        assert 1 <= found.height <= limit, f"{table}: {found.height} files ({spec.partitioning})"
        # ... and the stages see exactly the event dates they wrote, without the storage column
        columns = lake.scan(table).collect_schema().names()
        assert "event_date" in columns and "event_month" not in columns
    assert lake.scan(Tables.features(TRIPS)).select(pl.len()).collect().item() == ROWS


def test_unpartitioned_files_are_sorted_so_statistics_prune_date_filters(six_year_lake):
    """With no partitions, rows are written in event-date order: every Parquet row group covers a narrow range."""
    lake, spec = six_year_lake
    if spec.partitioning != "none":
        pytest.skip("the 'month' lake")
    for table in (Tables.bronze(TRIPS), Tables.silver(TRIPS), Tables.features(TRIPS)):
        (path,) = files(lake, table)["path"]
        dates = pl.from_arrow(pq.read_table(Path(lake.uri(table)) / path, columns=["event_date"])).to_series()
        assert dates.is_sorted(), f"{table}: rows not sorted by event_date"  # the landing files were shuffled


def test_unpartitioned_date_filter_reads_few_files(tmp_path, six_years):
    """Yearly increments into an unpartitioned table: a one-day filter matches one file by its statistics."""
    spec = six_year_spec("none")
    lake = Lake(tmp_path / "lake")
    names = sorted(p.name for p in (six_years / TRIPS).glob("*.csv"))
    for year in range(FIRST.year, LAST.year + 1):
        reports = run(lake, six_years, spec, [n for n in names if n.startswith(f"trips-{year}")])
        assert not reports["features"].full_refresh or year == FIRST.year
    for table in (Tables.bronze(TRIPS), Tables.silver(TRIPS), Tables.features(TRIPS)):
        assert lake.partition_columns(table) == []
        found = files(lake, table)
        assert found.height == 6, table
        day = dt.date(2018, 5, 17)
        covering = found.filter((pl.col("min.event_date") <= day) & (pl.col("max.event_date") >= day))
        assert covering.height == 1, f"{table}: {covering.height} files may hold {day}"


def late_correction(landing: Path, day: dt.date) -> tuple[Path, int]:
    """A new file with 40 trips on ``day`` (new ids): a late arrival for one old date."""
    frame = trips(40, day, day, seed=3, start_id=10_000_000)
    path = landing / TRIPS / f"late-{day}.csv"
    frame.write_csv(path)
    return path, frame.height


@pytest.mark.parametrize("partitioning", ["month", "none"])
def test_a_late_date_is_replaced_by_predicate_in_place(tmp_path, six_years, partitioning):
    """An incremental run rewrites only the files that can hold the changed date; every other file stays."""
    import shutil

    landing = tmp_path / "landing"
    shutil.copytree(six_years, landing)
    spec = six_year_spec(partitioning)
    lake = Lake(tmp_path / "lake")
    run(lake, landing, spec)
    day = dt.date(2017, 3, 9)
    before = {t: files(lake, t) for t in (Tables.silver(TRIPS), Tables.features(TRIPS))}
    old_rows = lake.scan(Tables.silver(TRIPS)).collect()
    _, added = late_correction(landing, day)

    reports = run(lake, landing, spec)

    assert reports["silver"].dates == [day] and not reports["silver"].full_refresh
    assert day in reports["features"].dates and not reports["features"].full_refresh
    silver = lake.scan(Tables.silver(TRIPS)).collect()
    assert silver.height == old_rows.height + added
    assert silver.filter(pl.col("event_date") != day).sort("trip_id").equals(old_rows.filter(pl.col("event_date") != day).sort("trip_id"))
    for table, old in before.items():
        new = files(lake, table)
        kept = old.join(new, on="path", how="semi")
        gone = old.join(new, on="path", how="anti")
        # the files that could hold the date were rewritten, every other file is the same file
        assert gone.height >= 1, table
        assert ((gone["min.event_date"] <= day) & (gone["max.event_date"] >= day)).all(), table
        assert kept.height == old.height - gone.height
        if partitioning == "month":
            assert gone.height == 1 and kept.height == old.height - 1


def test_day_partitioning_is_still_available(tmp_path):
    spec = six_year_spec("day")
    landing = tmp_path / "landing"
    write_trips(landing / TRIPS, trips(300, dt.date(2016, 2, 27), dt.date(2016, 3, 3), seed=1))
    write_weather(landing / WEATHER, dt.date(2016, 2, 20), dt.date(2016, 3, 10))
    lake = Lake(tmp_path / "lake")
    run(lake, landing, spec)
    for table in (Tables.bronze(TRIPS), Tables.silver(TRIPS), Tables.features(TRIPS)):
        assert lake.partition_columns(table) == ["event_date"]
        found = files(lake, table)
        assert found.height == 6  # 2016-02-27 .. 2016-03-03, one file a date
        assert (found["min.event_date"].is_null() | (found["min.event_date"] == found["max.event_date"])).all()


def test_an_old_day_partitioned_lake_keeps_refreshing_incrementally(tmp_path):
    """Tables created with daily partitions keep them when the spec's default (month) is used afterwards."""
    landing = tmp_path / "landing"
    frame = trips(600, dt.date(2019, 6, 1), dt.date(2019, 6, 20), seed=4)
    names = write_trips(landing / TRIPS, frame.filter(pl.col("ts") < "2019-06-15"))
    write_weather(landing / WEATHER, dt.date(2019, 5, 25), dt.date(2019, 6, 25))
    lake = Lake(tmp_path / "lake")
    run(lake, landing, six_year_spec("day"), names)  # the lake as an older aiflow wrote it
    before = {t: files(lake, t) for t in (Tables.silver(TRIPS), Tables.features(TRIPS))}

    spec = six_year_spec(None)
    assert spec.partitioning == "month"
    later = frame.filter(pl.col("ts") >= "2019-06-15")
    later.write_csv(landing / TRIPS / "trips-2019-06-late.csv")
    reports = run(lake, landing, spec)

    new_dates = sorted({dt.date.fromisoformat(t[:10]) for t in later["ts"]})
    assert reports["silver"].dates == new_dates and not reports["silver"].full_refresh
    assert not reports["features"].full_refresh and not reports["features"].state_refitted
    for table in (Tables.bronze(TRIPS), Tables.silver(TRIPS), Tables.features(TRIPS)):
        assert lake.partition_columns(table) == ["event_date"], table
        assert "event_month" not in lake.table(table).schema().to_arrow().names, table
    for table, old in before.items():
        assert old.join(files(lake, table), on="path", how="anti").is_empty(), f"{table}: an old date's file was rewritten"
    assert lake.scan(Tables.silver(TRIPS)).select(pl.len()).collect().item() == frame.height


def test_compaction_reaches_the_target_size(tmp_path, six_years):
    """Monthly increments leave one small file per commit; maintenance folds each month's files into one."""
    spec = six_year_spec(None)
    lake = Lake(tmp_path / "lake")
    names = sorted(p.name for p in (six_years / TRIPS).glob("*.csv"))
    for chunk in (names[:24], names[24:48], names[48:]):
        run(lake, six_years, spec, chunk)
    bronze = Tables.bronze(TRIPS)
    # a second commit into three months of 2016 (late rows): those months now hold two files each
    late = trips(90, dt.date(2016, 1, 1), dt.date(2016, 3, 31), seed=5, start_id=20_000_000)
    landing = tmp_path / "late"
    write_trips(landing, late)
    ingest(lake, LocalLandingZone(landing), spec)
    assert files(lake, bronze).height == MONTHS + 3
    results = {r.table: r for r in maintain(lake, spec, retention_hours=0, target_file_bytes=64 * 2**20)}
    assert results[bronze].files_removed_by_compaction == 6 and results[bronze].files_added_by_compaction == 3
    assert files(lake, bronze).height == MONTHS
    assert lake.scan(bronze).select(pl.len()).collect().item() == ROWS + 90


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"partitioning": "week"}, ["partitioning", "none", "month", "day"]),
        ({"columns": {**TINY["columns"], "event_month": {"type": "string"}}}, ["columns.event_month", "reserved"]),
    ],
    ids=["unknown-granularity", "reserved-event-month"],
)
def test_spec_refuses_bad_partitioning(change, words):
    spec = {**copy.deepcopy(TINY), **change}
    with pytest.raises(SpecError) as caught:
        parse_spec(spec, "bad")
    for word in words:
        assert word in str(caught.value)
