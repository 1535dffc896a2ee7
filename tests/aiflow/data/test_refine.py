"""Incremental bronze → silver → features on the demo data: only changed partitions are rewritten, latest wins, reads are pinned."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from aiflow.data.demo import write_landing
from aiflow.data.features import build_features, output_columns
from aiflow.data.ingest import ingest
from aiflow.data.refine import load_state, refresh_features, refresh_silver
from aiflow.spec import DatasetSpec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone

FLIGHTS, WEATHER = "flights", "weather"
NEW_DAY = dt.date(2013, 1, 6)


@pytest.fixture
def landing(demo_landing: Path, tmp_path: Path) -> Path:
    """A writable copy of the five demo days."""
    root = tmp_path / "landing"
    shutil.copytree(demo_landing, root)
    return root


@pytest.fixture
def day_spec(spec: DatasetSpec) -> DatasetSpec:
    """The demo spec with daily partitions: the tests that compare data files per date assume one partition a date."""
    sides = [t.model_copy(update={"partitioning": "day"}) for t in spec.side_tables]
    return spec.model_copy(update={"partitioning": "day", "side_tables": sides})


@pytest.fixture(scope="module")
def day6(tmp_path_factory) -> Path:
    """Demo landing files that also hold 2013-01-06."""
    root = tmp_path_factory.mktemp("day6")
    write_landing(root, days=6, start=dt.date(2013, 1, 1))
    return root


def run(lake: Lake, landing: Path, spec: DatasetSpec) -> dict[str, object]:
    """Ingest every table, refresh silver, refresh features; return the reports by name."""
    reports: dict[str, object] = {}
    for table in spec.tables:
        reports[f"ingest/{table.name}"] = ingest(lake, LocalLandingZone(landing / table.name), table)
    for table in spec.tables:
        reports[f"silver/{table.name}"] = refresh_silver(lake, table)
    reports["features"] = refresh_features(lake, spec)
    return reports


def utc_dates(csv: Path) -> set[dt.date]:
    """UTC dates of a landing file's time_hour values, read independently of the engine."""
    times = pl.read_csv(csv, infer_schema=False)["time_hour"].str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC")
    return set(times.dt.date().to_list())


def add_actions(lake: Lake, table: str) -> pl.DataFrame:
    """The table's data files with their partition date."""
    files = pl.DataFrame(lake.table(table).get_add_actions(flatten=True))
    return files.select("path", pl.col("partition.event_date").alias("event_date"), "num_records")


def files_outside(lake: Lake, table: str, dates: set[dt.date]) -> list[tuple]:
    frame = add_actions(lake, table).filter(~pl.col("event_date").is_in(sorted(dates)))
    return sorted(frame.iter_rows())


def table_rows(lake: Lake, table: str, version: int | None = None) -> pl.DataFrame:
    return lake.scan(table, version).collect()


def sort_rows(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    return frame.sort([*spec.key, "event_date"]).select(sorted(frame.columns))


def expected_features(lake: Lake, spec: DatasetSpec) -> pl.DataFrame:
    """All features rebuilt from scratch from the current silver tables and the stored state."""
    sides = {WEATHER: lake.scan(Tables.silver(WEATHER))}
    return build_features(lake.scan(Tables.silver(FLIGHTS)), sides, load_state(lake, spec), spec).collect()


def add_new_day(landing: Path, day6: Path) -> tuple[set[dt.date], set[dt.date]]:
    """Drop the 2013-01-06 flights file and that day's weather rows; return their UTC dates."""
    flights = day6 / FLIGHTS / f"{NEW_DAY.isoformat()}.csv"
    shutil.copy(flights, landing / FLIGHTS / flights.name)
    weather = pl.read_csv(next((day6 / WEATHER).glob("*.csv")), infer_schema=False).filter(pl.col("day") == str(NEW_DAY.day))
    target = landing / WEATHER / f"weather-{NEW_DAY.isoformat()}.csv"
    weather.write_csv(target, null_value="NA")
    return utc_dates(flights), utc_dates(target)


# ------------------------------------------------------------------------------------------- tests
def test_first_run_fills_every_layer_and_accounts_for_every_row(lake, landing, spec):
    reports = run(lake, landing, spec)
    landed = sum(pl.read_csv(p, infer_schema=False).height for p in (landing / FLIGHTS).glob("*.csv"))
    bronze = table_rows(lake, Tables.bronze(FLIGHTS))
    assert bronze.height + reports[f"ingest/{FLIGHTS}"].rows_quarantined == landed
    silver = table_rows(lake, Tables.silver(FLIGHTS))
    quarantined = table_rows(lake, Tables.quarantine(FLIGHTS)).filter(pl.col("_stage") == "cleanse").height
    unique_keys = bronze.select(spec.key).unique().height
    assert silver.height + quarantined == unique_keys
    silver_report = reports[f"silver/{FLIGHTS}"]
    assert silver_report.full_refresh and silver_report.rows_in == bronze.height
    assert silver.height + quarantined + silver_report.rows_superseded == bronze.height

    features = table_rows(lake, Tables.features(FLIGHTS))
    assert features.height == silver.height
    assert set(features.columns) == set(output_columns(spec))
    assert not set(features.columns) & set(spec.known_after_event)
    assert reports["features"].state_refitted and reports["features"].full_refresh
    assert reports["features"].dates == sorted(set(silver["event_date"]))
    assert_frame_equal(sort_rows(features, spec), sort_rows(expected_features(lake, spec), spec))


def test_new_day_rewrites_only_its_partitions(lake, landing, day6, day_spec):
    spec = day_spec
    run(lake, landing, spec)
    old_dates = set(table_rows(lake, Tables.silver(FLIGHTS))["event_date"])
    tables = [Tables.silver(FLIGHTS), Tables.silver(WEATHER), Tables.features(FLIGHTS)]
    before_files = {t: add_actions(lake, t) for t in tables}
    before_rows = {t: table_rows(lake, t) for t in tables}
    state_version = lake.version(Tables.feature_state(FLIGHTS))

    flight_dates, weather_dates = add_new_day(landing, day6)
    reports = run(lake, landing, spec)

    assert reports[f"silver/{FLIGHTS}"].dates == sorted(flight_dates)
    assert reports[f"silver/{WEATHER}"].dates == sorted(weather_dates)
    # features: the new flights' dates, plus dates whose 3h as-of join can reach a new weather row
    all_dates = old_dates | flight_dates
    reach = {d + dt.timedelta(days=k) for d in weather_dates for k in (0, 1)}
    expected_dates = sorted(flight_dates | (reach & all_dates))
    features = reports["features"]
    assert features.dates == expected_dates
    assert not features.full_refresh and not features.state_refitted
    assert lake.version(Tables.feature_state(FLIGHTS)) == state_version

    for table, rewritten in [(tables[0], flight_dates), (tables[1], weather_dates), (tables[2], set(expected_dates))]:
        untouched = sorted(old_dates - rewritten)
        assert untouched, "the scenario must leave some partitions alone"
        # the very same data files (same paths) still hold the untouched dates ...
        old = before_files[table].filter(pl.col("event_date").is_in(untouched)).sort("path")
        new = add_actions(lake, table).filter(pl.col("event_date").is_in(untouched)).sort("path")
        assert_frame_equal(old, new)
        # ... and their rows are unchanged
        keep = pl.col("event_date").is_in(untouched)
        assert_frame_equal(
            before_rows[table].filter(keep).sort(pl.all()), table_rows(lake, table).filter(keep).sort(pl.all())
        )

    new_rows = pl.read_csv(landing / FLIGHTS / f"{NEW_DAY.isoformat()}.csv", infer_schema=False).height
    assert table_rows(lake, Tables.silver(FLIGHTS)).height == before_rows[tables[0]].height + new_rows
    features_now = table_rows(lake, Tables.features(FLIGHTS))
    assert_frame_equal(sort_rows(features_now, spec), sort_rows(expected_features(lake, spec), spec))


def test_second_refresh_without_new_data_does_nothing(lake, landing, spec):
    run(lake, landing, spec)
    names = [Tables.silver(FLIGHTS), Tables.silver(WEATHER), Tables.features(FLIGHTS), Tables.quarantine(FLIGHTS)]
    versions = {n: lake.version(n) for n in names}
    reports = run(lake, landing, spec)
    for name in (f"silver/{FLIGHTS}", f"silver/{WEATHER}", "features"):
        assert reports[name].dates == [] and reports[name].skipped and reports[name].version is None
    assert reports[f"ingest/{FLIGHTS}"].rows_ingested == 0
    assert {n: lake.version(n) for n in names} == versions


def _correct_a_day(landing: Path, spec: DatasetSpec) -> tuple[dict, dict, Path]:
    """Re-drop 2013-01-02 under a new name with one corrected delay and one out-of-range row."""
    original = landing / FLIGHTS / "2013-01-02.csv"
    frame = pl.read_csv(original, infer_schema=False, null_values=["NA"])
    on_time = frame.with_row_index("i").filter(pl.col("arr_delay").cast(pl.Float64) < 0).row(0, named=True)
    broken = frame.with_row_index("i").filter(pl.col("i") != on_time["i"]).row(0, named=True)
    fixed = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == on_time["i"]).then(pl.lit("200")).otherwise(pl.col("arr_delay")).alias("arr_delay"),
        pl.when(pl.int_range(pl.len()) == broken["i"]).then(pl.lit("9999")).otherwise(pl.col("sched_dep_time")).alias("sched_dep_time"),
    )
    path = landing / FLIGHTS / "2013-01-02-corrected.csv"
    fixed.write_csv(path, null_value="NA")
    key = lambda row: {k: row[k] for k in spec.key}  # noqa: E731
    return key(on_time), key(broken), path


def _match(key: dict) -> pl.Expr:
    expr = pl.lit(True)
    for column, value in key.items():
        if column == "time_hour":
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif column == "flight":
            value = int(value)
        expr = expr & (pl.col(column) == value)
    return expr


def test_corrected_row_wins_and_every_bronze_row_is_accounted_for(lake, landing, spec):
    run(lake, landing, spec)
    corrected_key, broken_key, path = _correct_a_day(landing, spec)
    reports = run(lake, landing, spec)

    dates = utc_dates(path)
    silver_report = reports[f"silver/{FLIGHTS}"]
    assert silver_report.dates == sorted(dates)
    silver = table_rows(lake, Tables.silver(FLIGHTS))
    row = silver.filter(_match(corrected_key))
    assert row.height == 1
    assert row["arr_delay"][0] == 200.0 and row["is_delayed"][0] == 1
    assert row["_source_file"][0] == path.name
    assert silver.filter(_match(broken_key)).height == 0  # the latest version of that row breaks a rule

    quarantine = table_rows(lake, Tables.quarantine(FLIGHTS)).filter(pl.col("_stage") == "cleanse")
    broken = quarantine.filter(pl.col("_source_file") == path.name)
    assert broken["_rule"].to_list() == ["range:sched_dep_time"]
    assert "9999" in broken["_reason"][0]

    # silver + quarantine(cleanse) + superseded == bronze rows, for the processed dates
    on_dates = pl.col("event_date").is_in(sorted(dates))
    bronze = table_rows(lake, Tables.bronze(FLIGHTS)).filter(on_dates)
    superseded = bronze.height - bronze.select(spec.key).unique().height
    assert superseded == pl.read_csv(path, infer_schema=False).height  # every row of the re-drop replaced one
    in_silver = silver.filter(on_dates).height
    in_quarantine = quarantine.filter(on_dates).height
    assert in_silver + in_quarantine + superseded == bronze.height
    assert (silver_report.rows_in, silver_report.rows_out) == (bronze.height, in_silver)
    assert (silver_report.rows_quarantined, silver_report.rows_superseded) == (in_quarantine, superseded)

    features = table_rows(lake, Tables.features(FLIGHTS))
    assert reports["features"].dates == sorted(dates)
    assert features.filter(_match(corrected_key))["is_delayed"].to_list() == [1]
    assert features.filter(_match(broken_key)).height == 0

    # a full re-run is idempotent: same silver, no duplicated quarantine rows
    again = refresh_silver(lake, spec, full=True)
    assert again.full_refresh
    assert table_rows(lake, Tables.silver(FLIGHTS)).height == silver.height
    assert table_rows(lake, Tables.quarantine(FLIGHTS)).filter(pl.col("_stage") == "cleanse").height == quarantine.height


def test_weather_correction_rewrites_the_feature_dates_it_reaches(lake, landing, day_spec):
    spec = day_spec
    run(lake, landing, spec)
    flights = table_rows(lake, Tables.silver(FLIGHTS))
    day = dt.date(2013, 1, 3)
    flight = flights.filter((pl.col("event_date") == day) & (pl.col("origin") == "EWR")).sort("time_hour").row(0, named=True)
    weather = pl.read_csv(next((landing / WEATHER).glob("*.csv")), infer_schema=False)
    stamp = flight["time_hour"].strftime("%Y-%m-%dT%H:%M:%SZ")
    fix = weather.filter((pl.col("origin") == "EWR") & (pl.col("time_hour") == stamp))
    assert fix.height == 1
    fix = fix.with_columns(pl.lit("123.5").alias("temp"))
    fix.write_csv(landing / WEATHER / "weather-fix.csv", null_value="NA")
    features_before = table_rows(lake, Tables.features(FLIGHTS))
    files_before = add_actions(lake, Tables.features(FLIGHTS))

    reports = run(lake, landing, spec)
    assert reports[f"silver/{FLIGHTS}"].dates == []
    assert reports[f"silver/{WEATHER}"].dates == [day]
    assert reports["features"].dates == [day, day + dt.timedelta(days=1)]
    silver_weather = table_rows(lake, Tables.silver(WEATHER)).filter((pl.col("origin") == "EWR") & (pl.col("time_hour") == flight["time_hour"]))
    assert silver_weather["temp"].to_list() == [123.5]  # the newer row wins

    mean, std = load_state(lake, spec).stats["weather_temp"]
    features = table_rows(lake, Tables.features(FLIGHTS))
    joined = features.filter((pl.col("origin") == "EWR") & (pl.col("time_hour") == flight["time_hour"]))
    assert joined.height >= 1
    assert joined["num_weather_temp"].to_list() == pytest.approx([(123.5 - mean) / std] * joined.height, rel=1e-5)
    untouched = sorted(set(features_before["event_date"]) - {day, day + dt.timedelta(days=1)})
    keep = pl.col("event_date").is_in(untouched)
    assert_frame_equal(files_before.filter(keep).sort("path"), add_actions(lake, Tables.features(FLIGHTS)).filter(keep).sort("path"))
    assert_frame_equal(sort_rows(features, spec), sort_rows(expected_features(lake, spec), spec))


def test_refit_refits_the_state_and_rebuilds_every_date(lake, landing, day6, spec):
    run(lake, landing, spec)
    state_table = Tables.feature_state(FLIGHTS)
    first_state, state_version = load_state(lake, spec), lake.version(state_table)
    add_new_day(landing, day6)
    incremental = run(lake, landing, spec)["features"]
    assert not incremental.state_refitted and lake.version(state_table) == state_version

    report = refresh_features(lake, spec, refit=True)
    all_dates = sorted(set(table_rows(lake, Tables.silver(FLIGHTS))["event_date"]))
    assert report.state_refitted and report.full_refresh
    assert report.dates == all_dates
    assert lake.version(state_table) == state_version + 1
    refitted = load_state(lake, spec)
    assert refitted.rows > first_state.rows  # fitted again, now with the new day's rows
    assert json.loads(lake.last_metadata(Tables.features(FLIGHTS), "dates")) == [d.isoformat() for d in all_dates]
    features = table_rows(lake, Tables.features(FLIGHTS))
    assert_frame_equal(sort_rows(features, spec), sort_rows(expected_features(lake, spec), spec))


def test_failed_refit_is_completed_by_the_next_run(lake, landing, day6, spec, monkeypatch):
    run(lake, landing, spec)
    add_new_day(landing, day6)
    run(lake, landing, spec)
    original = Lake.replace_dates

    def failing(self, table, *args, **kwargs):
        if table.startswith("features/"):
            raise OSError("lost the connection while writing features")
        return original(self, table, *args, **kwargs)

    monkeypatch.setattr(Lake, "replace_dates", failing)
    with pytest.raises(OSError):
        refresh_features(lake, spec, refit=True)
    monkeypatch.setattr(Lake, "replace_dates", original)

    report = refresh_features(lake, spec)
    # the refit state was stored before the failure: the next run re-encodes every partition with it
    assert report.full_refresh and not report.state_refitted
    assert report.dates == sorted(set(table_rows(lake, Tables.silver(FLIGHTS))["event_date"]))
    features = table_rows(lake, Tables.features(FLIGHTS))
    assert_frame_equal(sort_rows(features, spec), sort_rows(expected_features(lake, spec), spec))


def test_reads_are_pinned_to_the_recorded_versions(lake, landing, day6, spec, monkeypatch):
    run(lake, landing, spec)
    add_new_day(landing, day6)
    for table in spec.tables:
        ingest(lake, LocalLandingZone(landing / table.name), table)
    scans: list[tuple[str, int | None]] = []
    original = Lake.scan

    def spy(self, table, version=None):
        scans.append((table, version))
        return original(self, table, version)

    monkeypatch.setattr(Lake, "scan", spy)
    silver_report = refresh_silver(lake, spec)
    bronze_scans = [v for t, v in scans if t == Tables.bronze(FLIGHTS)]
    assert bronze_scans and set(bronze_scans) == {silver_report.upstream[Tables.bronze(FLIGHTS)]}
    refresh_silver(lake, spec.side(WEATHER))

    scans.clear()
    report = refresh_features(lake, spec)
    silver_scans = [(t, v) for t, v in scans if t.startswith("silver/")]
    assert silver_scans
    for table, version in silver_scans:
        assert version is not None and version == report.upstream[table]
    features = Tables.features(FLIGHTS)
    assert lake.last_metadata(features, "silver_version") == str(report.upstream[Tables.silver(FLIGHTS)])
    assert json.loads(lake.last_metadata(features, "side_versions")) == {WEATHER: report.upstream[Tables.silver(WEATHER)]}


def test_rows_never_committed_to_the_ledger_do_not_reach_silver(lake, landing, spec):
    run(lake, landing, spec)
    bronze = table_rows(lake, Tables.bronze(FLIGHTS))
    orphan = bronze.head(5).with_columns(
        pl.lit("orphan-x").alias("_batch_id"),
        pl.lit(999.0).alias("arr_delay"),
        (pl.col("_ingested_at") + pl.duration(hours=1)).alias("_ingested_at"),
    )
    lake.append(Tables.bronze(FLIGHTS), orphan, metadata={"batch_id": "orphan-x"})
    refresh_silver(lake, spec, full=True)
    silver = table_rows(lake, Tables.silver(FLIGHTS))
    assert "orphan-x" not in set(silver["_batch_id"])
    assert silver.filter(pl.col("arr_delay") == 999.0).height == 0
    assert silver.height == bronze.height


def test_nothing_to_refresh_before_ingestion(lake, spec):
    assert refresh_silver(lake, spec).skipped
    assert refresh_features(lake, spec).skipped


def test_features_need_the_side_tables(lake, landing, spec):
    ingest(lake, LocalLandingZone(landing / FLIGHTS), spec)
    refresh_silver(lake, spec)
    with pytest.raises(RuntimeError, match="silver/weather"):
        refresh_features(lake, spec)


def test_shift_years_moves_year_and_time_hour_together():
    from aiflow.data.demo import shift_years

    frame = pl.DataFrame({"year": ["2013", "2013"], "time_hour": ["2013-01-01T10:00:00Z", "2014-01-01T02:00:00Z"]})
    shifted = shift_years(frame, 3)
    assert shifted.rows() == [("2016", "2016-01-01T10:00:00Z"), ("2016", "2017-01-01T02:00:00Z")]  # Dec 31, 21:00 local


def test_batched_refresh_equals_one_batch_and_a_failure_half_way_is_redone(lake, landing, spec, monkeypatch, tmp_path):
    """Dates are committed in batches (bounded memory); only the last commit moves the watermark."""
    for table in spec.tables:
        ingest(lake, LocalLandingZone(landing / table.name), table)
    whole = Lake(tmp_path / "whole")
    for table in spec.tables:
        ingest(whole, LocalLandingZone(landing / table.name), table)
        refresh_silver(whole, table)
    refresh_features(whole, spec)

    for table in spec.side_tables:
        refresh_silver(lake, table, batch_dates=2)
    original, calls = Lake.replace_dates, {"n": 0}

    def failing_second_refit_batch(self, table, *args, **kwargs):
        if table.startswith("features/"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError("lost the connection while writing features")
        return original(self, table, *args, **kwargs)

    silver = refresh_silver(lake, spec, batch_dates=2)
    assert len(lake.commit_metadata(Tables.silver(FLIGHTS), "dates")) == len(range(0, len(silver.dates), 2)) > 1
    monkeypatch.setattr(Lake, "replace_dates", failing_second_refit_batch)
    with pytest.raises(OSError):
        refresh_features(lake, spec, batch_dates=2)
    monkeypatch.setattr(Lake, "replace_dates", original)
    # the first batch committed without the watermark: the next run redoes every date, once
    report = refresh_features(lake, spec, batch_dates=2)
    assert report.full_refresh and report.dates == silver.dates  # no watermark yet: every date of silver, re-encoded
    for name in (Tables.silver(FLIGHTS), Tables.features(FLIGHTS)):
        assert_frame_equal(sort_rows(table_rows(lake, name).drop("_batch_id", "_ingested_at", strict=False), spec),
                           sort_rows(table_rows(whole, name).drop("_batch_id", "_ingested_at", strict=False), spec))  # fmt: skip
    assert refresh_features(lake, spec, batch_dates=2).dates == []
