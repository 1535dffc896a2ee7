"""Scope: the quarantine limit at ingestion (DESIGN convention 20): a file whose rows mostly go to quarantine is rejected
whole, named with its share and top reasons, and stays re-landable; a file at the limit, and the other files of its run,
are ingested as usual. Real Delta tables and real Polars in tmp_path."""

from __future__ import annotations

import copy

import polars as pl
import pytest

from aiflow.data.ingest import INGESTED, REJECTED, ingest
from aiflow.data.quarantine_limit import top_reasons
from aiflow.spec import parse_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.tiny import TINY, TRIPS_ROWS, csv_bytes, write_file

BRONZE, QUARANTINE, LEDGER = Tables.bronze("trips"), Tables.quarantine("trips"), Tables.ledger("trips")


def _spec(limit: float | None = None):
    data = copy.deepcopy(TINY)
    if limit is not None:
        data["landing"]["max_quarantined_share"] = limit
    return parse_spec(data, "tiny")


def _rows(good: int, bad: int, first_id: int = 100) -> list[str]:
    """``good`` clean rows then ``bad`` rows whose distance is not a number."""
    rows = [f"{first_id + i},AA,JFK,{100 + i},,,,,2013-01-04T0{i % 10}:00:00Z" for i in range(good)]
    return rows + [f"{first_id + good + i},UA,EWR,far,,,,,2013-01-04T1{i % 10}:00:00Z" for i in range(bad)]


def _count(lake: Lake, table: str, file: str) -> int:
    if not lake.exists(table):
        return 0
    return lake.scan(table).filter(pl.col("_source_file") == file).select(pl.len()).collect().item()


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(tmp_path / "lake")


def test_a_file_over_the_limit_is_rejected_whole_and_named_with_its_reasons(tmp_path, lake):
    landing = tmp_path / "landing"
    write_file(landing, "day1.csv", csv_bytes(TRIPS_ROWS))
    write_file(landing, "mostly_bad.csv", csv_bytes(_rows(good=1, bad=3)))
    report = ingest(lake, LocalLandingZone(landing), _spec())

    outcomes = {f.file: f for f in report.files}
    assert outcomes["day1.csv"].outcome == INGESTED and not outcomes["day1.csv"].over_limit
    bad = outcomes["mostly_bad.csv"]
    assert bad.outcome == REJECTED and bad.over_limit and bad.quarantine_share == 0.75
    assert report.over_limit == [bad]
    assert bad.error.startswith("mostly_bad.csv: quarantine limit: 3 of 4 rows (75%)")
    assert "max_quarantined_share 0.5" in bad.error and "type on 'distance': 3 rows" in bad.error and "'far'" in bad.error
    # nothing of it in bronze or quarantine; the other file of the same run is whole
    assert _count(lake, BRONZE, "mostly_bad.csv") == 0 and _count(lake, QUARANTINE, "mostly_bad.csv") == 0
    assert _count(lake, BRONZE, "day1.csv") == len(TRIPS_ROWS)
    entry = lake.scan(LEDGER).filter(pl.col("file") == "mostly_bad.csv").collect().row(0, named=True)
    assert (entry["outcome"], entry["rows_ingested"], entry["rows_quarantined"]) == (REJECTED, 0, 0)
    assert entry["error"] == bad.error and (landing / "_rejected").is_dir()


def test_a_rejected_file_is_re_landable_and_never_counted_as_a_duplicate(tmp_path, lake):
    landing = tmp_path / "landing"
    data = csv_bytes(_rows(good=0, bad=2))
    write_file(landing, "all_bad.csv", data)
    zone = LocalLandingZone(landing)
    assert [f.outcome for f in ingest(lake, zone, _spec()).files] == [REJECTED]
    # named again with the same bytes, it is read again (and rejected again), not taken as already ingested
    assert [f.outcome for f in ingest(lake, zone, _spec(), files=["all_bad.csv"]).files] == [REJECTED]
    # once the cause is dealt with (here: the owner of the table accepts the quarantine), the same bytes are ingested
    again = ingest(lake, zone, _spec(limit=1.0), files=["all_bad.csv"])
    assert [(f.outcome, f.rows_quarantined) for f in again.files] == [(INGESTED, 2)]
    assert _count(lake, QUARANTINE, "all_bad.csv") == 2


@pytest.mark.parametrize(("good", "bad", "limit", "rejected"), [(2, 2, 0.5, False), (1, 2, 0.5, True), (3, 1, 0.25, False), (0, 3, 1.0, False), (3, 0, 0.0, False), (3, 1, 0.0, True)])
def test_the_limit_is_a_share_strictly_exceeded(tmp_path, lake, good, bad, limit, rejected):
    write_file(tmp_path / "landing", "f.csv", csv_bytes(_rows(good, bad)))
    (outcome,) = ingest(lake, LocalLandingZone(tmp_path / "landing"), _spec(limit)).files
    assert outcome.over_limit is rejected
    assert outcome.outcome == (REJECTED if rejected else INGESTED)
    assert outcome.quarantine_share == pytest.approx(bad / (good + bad))


def test_top_reasons_group_by_rule_and_column_most_frequent_first():
    bad = pl.DataFrame(
        {
            "_rule": ["type", "event_time", "type", "type", "malformed_line"],
            "_reason": [
                "column 'a': cannot parse 'x' as int64",
                "event time column 'ts' is null",
                "column 'a': cannot parse 'y' as int64",
                "column 'b': cannot parse 'z' as float64",
                "line 9: 3 fields, expected 4",
            ],
        }
    )
    assert top_reasons(bad, n=2) == [
        "type on 'a': 2 rows (e.g. column 'a': cannot parse 'x' as int64)",
        "event_time: 1 row (e.g. event time column 'ts' is null)",
    ]
