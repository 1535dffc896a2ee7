"""The inference log's buffering on real Delta tables: a flush by size before the interval, a flush by time, a failed append
that keeps its rows (counted) and lands them at the next flush, one table per dataset, rows partitioned by UTC date."""

from __future__ import annotations

import datetime as dt
import shutil
import time

import polars as pl

from aiflow.serving.inference_log import InferenceLog, log_rows, log_table
from aiflow.storage.lake import Lake


def rows(n: int, dataset: str = "trips", start: int = 0, now: dt.datetime | None = None) -> list[dict]:
    return log_rows(request_ids=[f"r{start + i}" for i in range(n)], inputs=['{"x": 1}'] * n, dataset=dataset, version=3,
                    variant="champion", predictions=[1.0] * n, probabilities=[0.75] * n, latency_ms=2.5, now=now)  # fmt: skip


def ids(lake: Lake, dataset: str = "trips") -> set[str]:
    table = log_table(dataset)
    return set(lake.scan(table).collect()["request_id"].to_list()) if lake.exists(table) else set()


def wait_until(condition, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_flushes_by_size_before_the_interval_and_by_time_after_it(tmp_path):
    lake = Lake(tmp_path / "lake")
    log = InferenceLog(lake, interval=60, batch_rows=5)
    log.start()
    try:
        log.add(rows(3))
        time.sleep(0.5)
        assert ids(lake) == set() and log.pending() == 3  # under the size, long before the interval
        log.add(rows(2, start=3))
        assert wait_until(lambda: ids(lake) == {f"r{i}" for i in range(5)})  # the size triggered it
    finally:
        log.close()
    timed = InferenceLog(Lake(tmp_path / "lake2"), interval=0.3, batch_rows=1000)
    timed.start()
    try:
        timed.add(rows(2, dataset="fares"))
        assert wait_until(lambda: ids(timed.lake, "fares") == {"r0", "r1"}, timeout=5)  # the interval triggered it
    finally:
        timed.close()


def test_a_failed_append_keeps_its_rows_and_the_next_flush_lands_them(tmp_path):
    lake = Lake(tmp_path / "lake")
    events: list[tuple[int, Exception | None]] = []
    log = InferenceLog(lake, interval=60, batch_rows=10_000, on_flush=lambda n, e: events.append((n, e)))
    blocker = tmp_path / "lake" / "inference_log" / "trips"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a Delta table")  # a file where the table's folder must go: the append fails
    log.add(rows(4))
    log.add(rows(2, dataset="fares", start=10))
    assert log.flush() == 2  # fares landed, trips did not
    assert log.pending() == 4 and [n for n, e in events if e is not None] == [0] and events[-1] == (2, None)
    blocker.unlink()
    shutil.rmtree(blocker, ignore_errors=True)
    assert log.close() == 4
    assert ids(lake) == {"r0", "r1", "r2", "r3"} and ids(lake, "fares") == {"r10", "r11"}


def test_rows_are_partitioned_by_their_utc_date(tmp_path):
    lake = Lake(tmp_path / "lake")
    log = InferenceLog(lake)
    late = dt.datetime(2026, 3, 1, 23, 59, tzinfo=dt.UTC)
    log.add(rows(2, now=late) + rows(1, start=5, now=late + dt.timedelta(minutes=2)))
    assert log.close() == 3
    table = lake.scan(log_table("trips")).collect().sort("request_id")
    assert table["date"].to_list() == [dt.date(2026, 3, 1)] * 2 + [dt.date(2026, 3, 2)]
    assert table.schema["time"] == pl.Datetime("us", "UTC") and table["probability"].to_list() == [0.75] * 3
    assert lake.table(log_table("trips")).metadata().partition_columns == ["date"]
