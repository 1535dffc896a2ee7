"""Scope: the handles a Lake keeps per thread (a head brought up to date instead of reopened, snapshots shared by the
scans of one version) never show a stale head nor a moving snapshot; ``Lake.rows_bound`` and ``refine.date_batches``
(batches from the Delta log's statistics) give the batches counting the rows gives, on every partitioning;
``last_commit``/``dates_since``, which read only the end of the log, find what a read of the whole log finds; a read
kept by ``Lake.read`` is that version's content."""

from __future__ import annotations

import datetime as dt
import threading

import polars as pl
import pytest

from aiflow.data.refine import date_batches, row_batches, rows_per_date
from aiflow.spec import EVENT_DATE
from aiflow.storage.lake import LAST_COMMIT_WINDOW, META, Lake, partition_columns

D = [dt.date(2031, 3, 30) + dt.timedelta(days=i) for i in range(5)]  # crosses a month boundary


def _rows(dates: dict[dt.date, int], tag: str) -> pl.DataFrame:
    return pl.DataFrame({EVENT_DATE: [d for d, n in dates.items() for _ in range(n)], "tag": tag}, schema_overrides={EVENT_DATE: pl.Date})


def test_a_kept_head_sees_other_writers_and_a_scan_keeps_its_version(tmp_path):
    lake, other = Lake(tmp_path), Lake(tmp_path)
    assert lake.append("t", _rows({D[0]: 2}, "a")) == 0
    assert lake.version("t") == 0
    pinned = lake.scan("t", 0)  # built while the kept head is at version 0
    assert other.append("t", _rows({D[1]: 3}, "b")) == 1
    assert lake.version("t") == 1 and [c["version"] for c in lake.history("t")] == [1, 0]
    assert lake.append("t", _rows({D[2]: 1}, "c")) == 2  # writes through the kept head, on top of the other's commit
    assert other.version("t") == 2
    assert pinned.collect()["tag"].to_list() == ["a", "a"]
    assert lake.scan("t", 1).collect()["tag"].sort().to_list() == ["a", "a", "b", "b", "b"]
    assert lake.scan("t", 0).collect().height == 2
    assert lake.scan("t").collect().height == 6


def test_each_thread_keeps_its_own_handles(tmp_path):
    lake = Lake(tmp_path)
    lake.append("t", _rows({D[0]: 1}, "a"))
    seen: list[int | None] = []
    thread = threading.Thread(target=lambda: seen.append(lake.version("t")))
    thread.start()
    thread.join()
    lake.append("t", _rows({D[1]: 1}, "b"))
    assert seen == [0] and lake.version("t") == 1
    assert Lake.__new__(Lake).__setstate__(lake.__getstate__()) is None  # picklable state: root and options only


@pytest.mark.parametrize("partitioning", ["none", "month", "day"])
def test_batches_from_statistics_match_counted_batches(tmp_path, partitioning):
    lake = Lake(tmp_path)
    by = partition_columns(partitioning)
    lake.append("t", _rows({D[0]: 3, D[1]: 2}, "a"), partition_by=by)
    v = lake.append("t", _rows({D[3]: 4, D[4]: 1}, "b"))
    assert lake.rows_bound("t", v, [D[2]]) == 0  # between the two files' dates
    assert lake.rows_bound("t", v, [dt.date(2030, 1, 1)]) == 0
    assert lake.rows_bound("t", v, [D[0]]) >= 3 and lake.rows_bound("t", v, D) == 10
    for dates in ([D[0]], [D[0], D[1]], [D[3], D[4]], D):
        for max_rows, max_dates in ((10, None), (5, None), (4, None), (1, None), (10, 1), (10, 2)):
            counted = row_batches(dates, rows_per_date(lake.scan("t", v), dates), max_rows, max_dates)
            assert date_batches(lake, "t", v, dates, max_rows, max_dates) == counted, (dates, max_rows, max_dates)


@pytest.mark.parametrize("partitioning", ["none", "day"])
def test_rows_without_a_date_count_in_the_bound(tmp_path, partitioning):
    lake = Lake(tmp_path)
    nulls = pl.DataFrame({EVENT_DATE: [None, None], "tag": ["x", "y"]}, schema_overrides={EVENT_DATE: pl.Date})
    lake.append("t", nulls, partition_by=partition_columns(partitioning))
    v = lake.append("t", _rows({D[0]: 1}, "a"))
    assert lake.rows_bound("t", v, [D[0]]) == 3  # the all-null file has no date statistics: it counts whole
    assert date_batches(lake, "t", v, [D[0]], 2, None) == [[D[0]]]


def test_the_newest_marked_commit_is_found_however_far_back(tmp_path):
    lake = Lake(tmp_path)
    assert lake.last_commit("t", "mark") is None and lake.dates_since("t", None) == []
    commits = 4 * LAST_COMMIT_WINDOW + 3  # the marked commit lies past the first two windows
    for v in range(commits):
        marked = {"mark": f"m{v}"} if v in (1, 2) else {}
        lake.append("t", _rows({D[v % 5]: 1}, str(v)), metadata={"dates": [D[v % 5].isoformat()], **marked})
    whole = [c for c in lake.history("t") if META + "mark" in c][0]
    found = lake.last_commit("t", "mark")
    assert found["version"] == whole["version"] == 2 and found[META + "mark"] == "m2"
    assert lake.last_commit("t", "absent") is None
    assert lake.last_metadata("t", "dates") == f'["{D[(commits - 1) % 5].isoformat()}"]'
    assert lake.dates_since("t", commits - 3) == sorted({D[(commits - 2) % 5], D[(commits - 1) % 5]})
    assert lake.dates_since("t", commits - 1) == [] and lake.dates_since("t", None) == D


def test_a_kept_read_is_the_version_read(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    v = lake.append("t", _rows({D[0]: 2, D[1]: 1}, "a"))
    first = lake.read("t", v, [EVENT_DATE, "tag"])
    Lake(tmp_path).append("t", _rows({D[2]: 1}, "b"))  # the table moves on; version v does not
    scans: list[int] = []
    real_scan = Lake.scan
    monkeypatch.setattr(Lake, "scan", lambda self, table, version=None: scans.append(version) or real_scan(self, table, version))
    assert lake.read("t", v, ["tag"]).to_dict(as_series=False) == {"tag": ["a", "a", "a"]} and scans == []  # kept, no read
    assert lake.read("t", v + 1, ["tag"])["tag"].sort().to_list() == ["a", "a", "a", "b"] and scans == [v + 1]
    assert lake.read("t", v, [EVENT_DATE]).equals(first.select(EVENT_DATE)) and scans == [v + 1]
    monkeypatch.setattr("aiflow.storage.lake.KEPT_READ_ROWS", 1)
    other = Lake(tmp_path)  # keeps its own reads: none yet
    other.read("t", v, ["tag"])  # 3 rows: too many to keep
    other.read("t", v, ["tag"])
    assert scans == [v + 1, v, v]


def test_prefetch_opens_the_existing_tables_at_once_and_leaves_missing_ones_missing(tmp_path, monkeypatch):
    import deltalake

    lake = Lake(tmp_path)
    for name in ("a", "b", "c"):
        Lake(tmp_path).append(name, _rows({D[0]: 1}, name))
    opened_here: list[str] = []
    real_init = deltalake.DeltaTable.__init__

    def spy(self, uri, *args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            opened_here.append(str(uri))
        return real_init(self, uri, *args, **kwargs)

    monkeypatch.setattr(deltalake.DeltaTable, "__init__", spy)
    lake.prefetch("a", "b", "c", "missing")
    assert not opened_here  # opened by the pool's threads
    assert [lake.version(n) for n in ("a", "b", "c")] == [0, 0, 0] and not opened_here  # served by the prefetched heads
    assert not lake.exists("missing") and lake.version("missing") is None
    Lake(tmp_path).append("b", _rows({D[1]: 2}, "b2"))  # a prefetched head still sees other writers
    assert lake.version("b") == 1 and lake.scan("b", 1).collect().height == 3
