"""Scope: ``Lake.replace_dates`` through the engine's own rewrite (``aiflow.storage.rewrite``): the table holds what a
replace of those dates must hold, on every partitioning and on a schema change (the delta-rs path); a daily replace
touches only the previous day's small file, not the month's; the statistics it records are true bounds that Polars,
delta-rs and DuckDB prune with; two replacements made on the same version never both commit (whichever path each
takes: the engine's commit is made without retry, delta-rs's predicate sees the files it added); a writer killed with ``kill -9`` before its commit leaves the table as it was."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError
from duckdb_extensions import import_extension
from polars.testing import assert_frame_equal

from aiflow.spec import EVENT_DATE
from aiflow.storage import rewrite
from aiflow.storage.lake import Lake, dates_predicate, laid_out

START = dt.date(2031, 1, 1)
UTC = dt.UTC


def _day(k: int, n: int = 20, tag: str = "a") -> pl.DataFrame:
    """A daily batch: ``n`` rows on date k and ``n`` on date k+1 (a day's events fall on two UTC dates)."""
    dates = [START + dt.timedelta(days=k + i // n) for i in range(2 * n)]
    return pl.DataFrame(
        {
            EVENT_DATE: dates,
            "at": [dt.datetime.combine(d, dt.time(1, 2, 3, 456789), UTC) + dt.timedelta(minutes=i) for i, d in enumerate(dates)],
            "key": [f"{tag}-{k}-{i}" for i in range(2 * n)],
            "value": [float(i) if i % 7 else None for i in range(2 * n)],
            "count": list(range(2 * n)),
        },
        schema_overrides={EVENT_DATE: pl.Date},
    )


def _table(lake: Lake, name: str) -> pl.DataFrame:
    return lake.scan(name).collect().sort("key")


def _files(lake: Lake, name: str) -> pl.DataFrame:
    return pl.DataFrame(DeltaTable(lake.uri(name)).get_add_actions(flatten=True))


def _expected_after_days(days: int) -> pl.DataFrame:
    """What daily replaces of the dates of days 0..days-1 leave: every date from the latest batch that holds it."""
    holder: dict[dt.date, pl.DataFrame] = {}
    for k in range(days):
        batch = _day(k)
        for d in batch[EVENT_DATE].unique():
            holder[d] = batch.filter(pl.col(EVENT_DATE) == d)
    return pl.concat(holder.values()).sort("key")


@pytest.mark.parametrize("partitioning", ["month", "day", "none"])
def test_daily_replaces_hold_the_right_rows(tmp_path, partitioning):
    lake = Lake(tmp_path)
    for k in range(6):
        batch = _day(k)
        lake.replace_dates("t", batch, batch[EVENT_DATE].unique().to_list(), partitioning=partitioning)
    assert_frame_equal(_table(lake, "t"), _expected_after_days(6), check_column_order=False)
    # an empty replacement deletes the dates' rows, and still commits (callers' watermarks ride on it)
    before = lake.version("t")
    version = lake.replace_dates("t", _day(0).head(0), [START + dt.timedelta(days=3)], metadata={"note": "x"})
    assert version == before + 1 == lake.version("t")
    assert lake.last_metadata("t", "note") == "x"
    assert START + dt.timedelta(days=3) not in _table(lake, "t")[EVENT_DATE].to_list()


def test_a_daily_replace_touches_only_the_day_before_not_the_month(tmp_path):
    lake = Lake(tmp_path)
    batch = _day(0)
    lake.replace_dates("t", batch, batch[EVENT_DATE].unique().to_list(), partitioning="month")
    for k in range(1, 25):
        batch = _day(k)
        lake.replace_dates("t", batch, batch[EVENT_DATE].unique().to_list())
        commit = lake.history("t")[0]
        assert commit["version"] == k
    files = _files(lake, "t")
    # delta-rs's predicate overwrite would have left one file with the whole month (500 rows) by now
    assert files["num_records"].max() <= 40, files.select("path", "num_records")
    # and each commit removed at most the previous day's files (~40 rows), never the month's
    log = tmp_path / "t" / "_delta_log"
    for k in range(2, 25):
        actions = [json.loads(line) for line in (log / f"{k:020d}.json").read_text().splitlines()]
        removed = [a["remove"] for a in actions if "remove" in a]
        assert 1 <= len(removed) <= 2
        assert sum(a["size"] for a in removed) < 3 * max(a["add"]["size"] for a in actions if "add" in a)
    assert_frame_equal(_table(lake, "t"), _expected_after_days(25), check_column_order=False)


def test_statistics_are_true_bounds_and_prune_in_every_reader(tmp_path):
    lake = Lake(tmp_path)
    for k in range(3):
        batch = _day(k)
        lake.replace_dates("t", batch, batch[EVENT_DATE].unique().to_list(), partitioning="none")
    table = _table(lake, "t")
    for add in _files(lake, "t").iter_rows(named=True):
        path = lake.uri("t") + "/" + add["path"]
        rows = pl.read_parquet(path)
        assert add["num_records"] == rows.height
        assert add["null_count.value"] == rows["value"].null_count()
        for column in ("event_date", "at", "count", "value", "key"):
            low, high = add[f"min.{column}"], add[f"max.{column}"]
            assert low is not None and high is not None, column
            assert low <= rows[column].min() and high >= rows[column].max(), column
    # the microsecond timestamps' bounds are widened to the millisecond, never narrowed
    first = table["at"].min()
    assert first.microsecond % 1000 != 0
    assert_frame_equal(lake.scan("t").filter(pl.col("at") == first).collect(), table.filter(pl.col("at") == first))
    day = START + dt.timedelta(days=2)
    assert_frame_equal(lake.scan("t").filter(pl.col(EVENT_DATE) == day).collect().sort("key"), table.filter(pl.col(EVENT_DATE) == day))
    # delta-rs's own file pruning on the recorded statistics: only files that may hold the day
    assert len(DeltaTable(lake.uri("t")).file_uris([(EVENT_DATE, "=", day.isoformat())])) >= 1
    import_extension("delta")  # offline, from the duckdb-extension-delta package
    con = duckdb.connect()
    seen = con.execute(f"SELECT count(*) FROM delta_scan('{lake.uri('t')}') WHERE event_date = DATE '{day}'").fetchone()[0]
    assert seen == table.filter(pl.col(EVENT_DATE) == day).height


def test_a_schema_change_goes_through_delta_rs_and_is_merged(tmp_path):
    lake = Lake(tmp_path)
    batch = _day(0)
    lake.replace_dates("t", batch, batch[EVENT_DATE].unique().to_list())
    wider = _day(1).with_columns(pl.lit("new").alias("extra"))
    lake.replace_dates("t", wider, wider[EVENT_DATE].unique().to_list())
    table = _table(lake, "t")
    assert "extra" in table.columns
    assert table.filter(pl.col(EVENT_DATE) == START + dt.timedelta(days=1))["extra"].to_list() == ["new"] * 20
    assert table.filter(pl.col(EVENT_DATE) == START)["extra"].null_count() == 20
    # rows narrower than the table again: the engine's rewrite declines (None), delta-rs fills the nulls
    handle = DeltaTable(lake.uri("t"))
    assert rewrite.replace_dates_apart(handle, laid_out(_day(2), ["event_month"]), [START], storage_options=None, custom_metadata=None) is None


def _stale_handles(lake: Lake, name: str) -> tuple[DeltaTable, DeltaTable]:
    return DeltaTable(lake.uri(name)), DeltaTable(lake.uri(name))


def test_two_replacements_made_on_one_version_never_both_commit(tmp_path):
    lake = Lake(tmp_path)
    lake.replace_dates("t", _day(0), [START, START + dt.timedelta(days=1)], partitioning="month")
    new_dates = [START + dt.timedelta(days=5), START + dt.timedelta(days=6)]  # no file holds them: nothing to remove
    first, second = _stale_handles(lake, "t")
    rows = laid_out(_day(5, tag="one"), ["event_month"])
    assert rewrite.replace_dates_apart(first, rows, new_dates, storage_options=None, custom_metadata=None) == 1
    with pytest.raises(CommitFailedError):
        rewrite.replace_dates_apart(second, laid_out(_day(5, tag="two"), ["event_month"]), new_dates, storage_options=None, custom_metadata=None)
    # the delta-rs path from the same stale version is refused too: its predicate matches the files the first added
    third = DeltaTable(lake.uri("t"), version=0)
    with pytest.raises(CommitFailedError):
        write_deltalake(
            third,
            laid_out(_day(5, tag="three"), ["event_month"]).to_arrow(),
            mode="overwrite",
            predicate=dates_predicate(new_dates),
        )
    assert set(_table(lake, "t").filter(pl.col(EVENT_DATE).is_in(new_dates))["key"].str.split("-").list.first()) == {"one"}


def test_concurrent_lake_replacements_retry_and_leave_one_copy(tmp_path):
    import threading

    lake = Lake(tmp_path)
    lake.replace_dates("t", _day(0), [START, START + dt.timedelta(days=1)])
    dates = [START + dt.timedelta(days=3), START + dt.timedelta(days=4)]
    barrier, errors = threading.Barrier(4), []

    def writer(tag: str) -> None:
        mine = Lake(tmp_path)
        mine.version("t")
        barrier.wait()
        try:
            mine.replace_dates("t", _day(3, tag=tag), dates)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    rows = _table(lake, "t").filter(pl.col(EVENT_DATE).is_in(dates))
    assert rows.height == 40 and rows["key"].str.split("-").list.first().n_unique() == 1


def test_kill_9_before_the_commit_leaves_the_table_as_it_was(tmp_path):
    lake = Lake(tmp_path)
    for k in range(3):
        batch = _day(k)
        lake.replace_dates("t", batch, batch[EVENT_DATE].unique().to_list())
    before, version = _table(lake, "t"), lake.version("t")
    script = textwrap.dedent(
        f"""
        import datetime as dt, os, signal
        import polars as pl
        from deltalake import DeltaTable
        from aiflow.storage.lake import Lake
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)  # every data file is written; the commit is next
        DeltaTable.create_write_transaction = die
        day = dt.date(2031, 1, 3)
        rows = pl.DataFrame({{"event_date": [day], "at": [dt.datetime(2031, 1, 3, tzinfo=dt.UTC)], "key": ["killed"],
                              "value": [1.0], "count": [1]}})
        Lake({str(tmp_path)!r}).replace_dates("t", rows, [day, day + dt.timedelta(days=1)])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    parquet = [p for p in (tmp_path / "t").rglob("*.parquet") if "_delta_log" not in str(p)]
    assert len(parquet) > len(_files(lake, "t"))  # the dead writer's files are there, unreferenced
    assert Lake(tmp_path).version("t") == version
    assert_frame_equal(_table(Lake(tmp_path), "t"), before)
    assert_frame_equal(pl.read_delta(lake.uri("t")).drop("event_month").sort("key"), before, check_column_order=False)
    assert os.path.exists(tmp_path / "t" / "_delta_log")
