"""Ingestion landing → bronze: lineage, idempotency, ledger, rejected files, quarantine, schema evolution, failure recovery."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from aiflow.data.ingest import DUPLICATE, INGESTED, REJECTED, ingest
from aiflow.data.quarantine_stage import STAGING
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import REJECTED_DIR, LocalLandingZone
from tests.aiflow.tiny import TRIPS_ROWS, csv_bytes, frame_rows, write_file

BRONZE, QUARANTINE, LEDGER = Tables.bronze("trips"), Tables.quarantine("trips"), Tables.ledger("trips")

DAY2 = [
    "4,UA,JFK,500,100,,,,2013-01-02T12:00:00Z",
    "5,DL,EWR,far,100,,,,2013-01-02T13:00:00Z",  # bad value: quarantined at ingestion
    "6,DL,LGA,800,1.5,,,,2013-01-03T14:00:00Z",  # int column holding a fraction
    "7,B6,JFK,900,100,,,,NA",  # null event time
    "10,AA,EWR,300,100,,,,2013-01-02T15:00:00Z",  # two more good rows: half the file is bad, within the quarantine limit
    "11,UA,LGA,400,,,,,2013-01-03T16:00:00Z",
]


def rows(lake: Lake, table: str) -> pl.DataFrame:
    return lake.scan(table).collect() if lake.exists(table) else pl.DataFrame()


def count(lake: Lake, table: str) -> int:
    return rows(lake, table).height


def ledger(lake: Lake) -> pl.DataFrame:
    return rows(lake, LEDGER)


def test_lineage_columns_name_the_file_its_hash_batch_and_row(lake, zone, landing_dir, tiny_spec):
    data = csv_bytes(TRIPS_ROWS)
    write_file(landing_dir, "2013/day1.csv", data)
    before = dt.datetime.now(dt.UTC)
    report = ingest(lake, zone, tiny_spec)
    after = dt.datetime.now(dt.UTC)

    bronze = rows(lake, BRONZE).sort("_source_row")
    assert bronze.height == 3
    assert set(bronze["_source_file"]) == {"2013/day1.csv"}
    assert set(bronze["_source_sha256"]) == {hashlib.sha256(data).hexdigest()}
    assert bronze["_source_row"].to_list() == [1, 2, 3]
    assert bronze["trip_id"].to_list() == [1, 2, 3]
    (batch,) = set(bronze["_batch_id"])
    assert batch.startswith(report.batch_id)
    assert ledger(lake)["batch_id"].to_list() == [batch]
    assert bronze.schema["_ingested_at"] == pl.Datetime("us", "UTC")
    (ingested_at,) = set(bronze["_ingested_at"])
    assert before <= ingested_at <= after
    entry = ledger(lake).row(0, named=True)
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert (entry["outcome"], entry["rows_ingested"], entry["rows_quarantined"]) == (INGESTED, 3, 0)
    assert entry["size_bytes"] == len(data) and entry["format"] == "csv"
    assert entry["event_dates"] == [dt.date(2013, 1, 1), dt.date(2013, 1, 2)]


def test_bronze_is_partitioned_by_event_date(lake, zone, landing_dir, tiny_spec):
    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    ingest(lake, zone, tiny_spec.model_copy(update={"partitioning": "day"}))
    table = lake.table(BRONZE)
    assert table.metadata().partition_columns == ["event_date"]
    partitions = {p["event_date"] for p in table.partitions()}
    assert partitions == {"2013-01-01", "2013-01-02"}
    files = pl.DataFrame(table.get_add_actions(flatten=True))
    for path, date in zip(files["path"], files["partition.event_date"], strict=True):
        assert path.startswith(f"event_date={date.isoformat()}/")


def test_same_folder_twice_adds_no_rows(lake, zone, landing_dir, tiny_spec):
    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    write_file(landing_dir, "day2.csv", csv_bytes(DAY2))
    first = ingest(lake, zone, tiny_spec)
    bronze, quarantine = rows(lake, BRONZE), rows(lake, QUARANTINE)
    second = ingest(lake, zone, tiny_spec)
    # named explicitly, files are hashed again: the hash finds them in the ledger
    third = ingest(lake, zone, tiny_spec, files=["day1.csv", "day2.csv"])

    assert first.count(INGESTED) == 2
    assert second.count(INGESTED) == 0 and second.rows_ingested == second.rows_quarantined == 0
    assert [(f.file, f.outcome, f.duplicate_of) for f in third.files] == [
        ("day1.csv", DUPLICATE, "day1.csv"),
        ("day2.csv", DUPLICATE, "day2.csv"),
    ]
    key = ["_source_file", "_source_row"]
    assert frame_rows(rows(lake, BRONZE), key) == frame_rows(bronze, key)
    assert frame_rows(rows(lake, QUARANTINE), key) == frame_rows(quarantine, key)
    assert ledger(lake).filter(pl.col("outcome") == INGESTED).height == 2


def test_touched_file_with_the_same_content_adds_no_rows(lake, zone, landing_dir, tiny_spec):
    path = write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    ingest(lake, zone, tiny_spec)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    report = ingest(lake, zone, tiny_spec)
    assert [(f.file, f.outcome) for f in report.files] == [("day1.csv", DUPLICATE)]
    assert count(lake, BRONZE) == len(TRIPS_ROWS)


def test_rewritten_file_with_new_content_is_ingested_again(lake, zone, landing_dir, tiny_spec):
    path = write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    ingest(lake, zone, tiny_spec)
    path.write_bytes(csv_bytes([*TRIPS_ROWS, "4,DL,JFK,10,,,,,2013-01-03T00:00:00Z"]))
    report = ingest(lake, zone, tiny_spec)
    assert [(f.file, f.outcome, f.rows_ingested) for f in report.files] == [("day1.csv", INGESTED, 4)]
    assert count(lake, BRONZE) == len(TRIPS_ROWS) + 4  # both versions land; silver keeps the latest per key


def test_renamed_copy_is_a_duplicate_of_the_original(lake, zone, landing_dir, tiny_spec):
    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    ingest(lake, zone, tiny_spec)
    before = count(lake, BRONZE)
    shutil.copy(landing_dir / "day1.csv", landing_dir / "day1-again.csv")
    report = ingest(lake, zone, tiny_spec)

    assert count(lake, BRONZE) == before
    (outcome,) = [f for f in report.files if f.file == "day1-again.csv"]
    assert outcome.outcome == DUPLICATE and outcome.duplicate_of == "day1.csv"
    entry = ledger(lake).filter(pl.col("file") == "day1-again.csv").row(0, named=True)
    assert entry["outcome"] == DUPLICATE
    assert entry["duplicate_of"] == "day1.csv"
    assert entry["rows_ingested"] == 0


def test_an_old_file_landed_again_on_a_third_run_is_a_duplicate(lake, zone, landing_dir, tiny_spec):
    """By the third run the ledger marks the earlier bronze commits as indexed: the owners of old content come from
    the ledger's entries, no longer from replaying bronze; an old file landed again under a new name still adds nothing."""
    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    ingest(lake, zone, tiny_spec)
    write_file(landing_dir, "day2.csv", csv_bytes(DAY2))
    ingest(lake, zone, tiny_spec)
    bronze, quarantine = rows(lake, BRONZE), rows(lake, QUARANTINE)
    shutil.copy(landing_dir / "day1.csv", landing_dir / "day1-again.csv")
    shutil.copy(landing_dir / "day2.csv", landing_dir / "day2-again.csv")
    third = ingest(lake, zone, tiny_spec)
    assert [(f.file, f.outcome, f.duplicate_of) for f in third.files] == [
        ("day1-again.csv", DUPLICATE, "day1.csv"),
        ("day2-again.csv", DUPLICATE, "day2.csv"),
    ]
    key = ["_source_file", "_source_row"]
    assert frame_rows(rows(lake, BRONZE), key) == frame_rows(bronze, key)
    assert frame_rows(rows(lake, QUARANTINE), key) == frame_rows(quarantine, key)
    fourth = ingest(lake, zone, tiny_spec, files=["day1.csv"])  # and named explicitly on a fourth
    assert [(f.file, f.outcome, f.duplicate_of) for f in fourth.files] == [("day1.csv", DUPLICATE, "day1.csv")]
    assert count(lake, BRONZE) == bronze.height


def test_two_copies_in_one_run_ingest_once(lake, zone, landing_dir, tiny_spec):
    write_file(landing_dir, "a.csv", csv_bytes(TRIPS_ROWS))
    write_file(landing_dir, "b.csv", csv_bytes(TRIPS_ROWS))
    report = ingest(lake, zone, tiny_spec)
    assert [(f.file, f.outcome, f.duplicate_of) for f in report.files] == [("a.csv", INGESTED, None), ("b.csv", DUPLICATE, "a.csv")]
    assert count(lake, BRONZE) == len(TRIPS_ROWS)


def _garbage_parquet_error() -> str:
    with pytest.raises(pl.exceptions.PolarsError) as exc:
        pl.read_parquet(io.BytesIO(b"not parquet" * 10))
    return str(exc.value).splitlines()[0]


def test_unreadable_file_is_rejected_ledgered_and_kept_with_its_reason(lake, zone, landing_dir, tiny_spec):
    garbage = b"not parquet" * 10
    write_file(landing_dir, "sub/broken.parquet", garbage)
    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    report = ingest(lake, zone, tiny_spec)

    (outcome,) = [f for f in report.files if f.outcome == REJECTED]
    assert outcome.file == "sub/broken.parquet"
    assert _garbage_parquet_error() in outcome.error
    entry = ledger(lake).filter(pl.col("file") == "sub/broken.parquet").row(0, named=True)
    assert entry["outcome"] == REJECTED
    assert entry["error"] == outcome.error
    kept = landing_dir / REJECTED_DIR / entry["batch_id"] / "sub" / "broken.parquet"
    assert entry["rejected_to"] == str(kept)
    assert kept.read_bytes() == garbage
    assert Path(str(kept) + ".reason.txt").read_text().strip() == outcome.error
    # the good file in the same run still lands, and the rejected area is never listed as new data
    assert count(lake, BRONZE) == len(TRIPS_ROWS)
    assert all(not f.name.startswith(REJECTED_DIR) for f in zone.list())
    ingest(lake, zone, tiny_spec)  # unchanged files are not looked at again
    assert ledger(lake).filter(pl.col("outcome") == REJECTED).height == 1
    assert len(list((landing_dir / REJECTED_DIR).iterdir())) == 1
    # named explicitly, rejected content is parsed again (the spec may have been fixed meanwhile)
    again = ingest(lake, zone, tiny_spec, files=["sub/broken.parquet"])
    assert [f.outcome for f in again.files] == [REJECTED]
    assert ledger(lake).filter(pl.col("outcome") == REJECTED).height == 2


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        pytest.param("bad.jsonl", b'{"trip_id": 1,\n', "cannot parse as jsonl", id="malformed-jsonl"),
        pytest.param("notes.txt", b"hello", "unknown file type", id="unknown-extension"),
        pytest.param("short.csv", b"trip_id,carrier,origin,ts\n1,AA,JFK,2013-01-01T00:00:00Z\n", "missing required column 'distance'", id="missing-column"),
    ],
)
def test_unusable_files_are_rejected_with_the_reason(lake, zone, landing_dir, tiny_spec, name, data, expected):
    write_file(landing_dir, name, data)
    report = ingest(lake, zone, tiny_spec)
    (outcome,) = report.files
    assert outcome.outcome == REJECTED
    assert expected in outcome.error
    assert expected in ledger(lake)["error"][0]
    assert not lake.exists(BRONZE)  # a batch with no ingested file makes no bronze commit: a first run creates no table
    reason = landing_dir / REJECTED_DIR / ledger(lake)["batch_id"][0] / (name + ".reason.txt")
    assert expected in reason.read_text()


def test_rejected_file_is_ingested_when_named_again_after_the_spec_is_fixed(lake, zone, landing_dir, tiny_dict):
    from aiflow.spec import parse_spec

    data = b"trip_id,carrier,origin,delay,ts\n1,AA,JFK,,2013-01-01T00:00:00Z\n"
    write_file(landing_dir, "short.csv", data)
    strict = parse_spec(tiny_dict, "tiny")
    assert [f.outcome for f in ingest(lake, zone, strict).files] == [REJECTED]
    tiny_dict["columns"]["distance"]["required"] = False
    tiny_dict["quality"]["not_null"] = [c for c in tiny_dict["quality"].get("not_null", []) if c != "distance"]
    tiny_dict["quality"]["ranges"].pop("distance", None)
    fixed = parse_spec(tiny_dict, "tiny")
    report = ingest(lake, zone, fixed, files=["short.csv"])
    assert [f.outcome for f in report.files] == [INGESTED]
    assert count(lake, BRONZE) == 1
    assert ledger(lake).sort("ingested_at")["outcome"].to_list() == [REJECTED, INGESTED]


def test_bad_rows_go_to_quarantine_and_every_input_row_is_accounted_for(lake, zone, landing_dir, tiny_spec):
    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    write_file(landing_dir, "day2.csv", csv_bytes(DAY2))
    report = ingest(lake, zone, tiny_spec)

    bronze, quarantine = rows(lake, BRONZE), rows(lake, QUARANTINE)
    assert bronze.height + quarantine.height == len(TRIPS_ROWS) + len(DAY2)
    assert (report.rows_ingested, report.rows_quarantined) == (bronze.height, quarantine.height)
    q = quarantine.sort("_source_row")
    assert q["_source_file"].to_list() == ["day2.csv"] * 3
    assert q["_source_row"].to_list() == [2, 3, 4]
    assert q["_rule"].to_list() == ["type", "type", "event_time"]
    assert "column 'distance'" in q["_reason"][0] and "'far'" in q["_reason"][0]
    assert "column 'seats'" in q["_reason"][1] and "'1.5'" in q["_reason"][1]
    assert "'ts'" in q["_reason"][2]
    assert set(q["_stage"]) == {"ingest"}
    assert q["event_date"].to_list() == [dt.date(2013, 1, 2), dt.date(2013, 1, 3), None]
    assert set(q["_source_sha256"]) == {hashlib.sha256(csv_bytes(DAY2)).hexdigest()}
    assert '"far"' in q["_record"][0]
    day2 = ledger(lake).filter(pl.col("file") == "day2.csv").row(0, named=True)
    assert (day2["rows_ingested"], day2["rows_quarantined"]) == (3, 3)
    assert day2["event_dates"] == [dt.date(2013, 1, 2), dt.date(2013, 1, 3)]
    # the copy of the quarantined rows staged before the bronze commit is gone once the batch is in the ledger
    assert not list(Path(lake.root, STAGING).rglob("*.parquet"))


def test_new_unknown_column_is_merged_into_bronze_and_reported(lake, zone, landing_dir, tiny_spec):
    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    first = ingest(lake, zone, tiny_spec)
    assert first.new_columns == []
    header = "trip_id,carrier,origin,distance,delay,ts,gate"
    write_file(landing_dir, "day2.csv", csv_bytes(["8,AA,JFK,10,,2013-01-05T00:00:00Z,A7"], header))
    report = ingest(lake, zone, tiny_spec)

    assert report.new_columns == ["gate"]
    assert ledger(lake).filter(pl.col("file") == "day2.csv")["new_columns"].to_list() == [["gate"]]
    bronze = rows(lake, BRONZE)
    assert bronze.schema["gate"] == pl.String
    assert dict(zip(bronze["trip_id"], bronze["gate"], strict=True)) == {1: None, 2: None, 3: None, 8: "A7"}


def test_only_the_named_files_are_ingested(lake, zone, landing_dir, tiny_spec):
    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    write_file(landing_dir, "day2.csv", csv_bytes(DAY2))
    report = ingest(lake, zone, tiny_spec, files=["day2.csv"])
    assert [f.file for f in report.files] == ["day2.csv"]
    assert set(rows(lake, BRONZE)["_source_file"]) == {"day2.csv"}
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        ingest(lake, zone, tiny_spec, files=["nope.csv"])


def test_small_chunks_commit_separately_and_count_exactly(lake, zone, landing_dir, tiny_spec):
    for i in range(3):
        rows_i = [f"{10 * i + j},AA,JFK,{100 + j},,,,,2013-01-0{i + 1}T0{j}:00:00Z" for j in range(3)]
        write_file(landing_dir, f"day{i}.csv", csv_bytes(rows_i))
    report = ingest(lake, zone, tiny_spec, chunk_rows=2)
    assert len(set(ledger(lake)["batch_id"])) == 3
    assert lake.version(BRONZE) == 2
    assert count(lake, BRONZE) == report.rows_ingested == 9


def test_empty_landing_zone_writes_nothing(lake, zone, tiny_spec):
    report = ingest(lake, zone, tiny_spec)
    assert report.files == []
    assert not lake.exists(BRONZE) and not lake.exists(LEDGER)


# --------------------------------------------------------------------------- failure injection
@pytest.mark.parametrize("existing", [True, False], ids=["tables-exist", "first-run"])
def test_failed_bronze_commit_changes_nothing_and_rerun_ingests_once(lake, zone, landing_dir, tiny_spec, monkeypatch, existing):
    if existing:
        write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
        write_file(landing_dir, "day0.csv", csv_bytes(["99,AA,JFK,far,,,,,2013-01-01T00:00:00Z"]))
        ingest(lake, zone, tiny_spec)
    key = ["_source_file", "_source_row"]
    versions = {t: lake.version(t) for t in (BRONZE, QUARANTINE, LEDGER)}
    write_file(landing_dir, "day2.csv", csv_bytes(DAY2))  # good rows and bad rows
    header = "trip_id,carrier,origin,distance,delay,ts,gate"
    write_file(landing_dir, "day3.csv", csv_bytes(["8,AA,JFK,10,,2013-01-05T00:00:00Z,A7"], header))  # a schema change

    def failing(self, *args, **kwargs):
        raise OSError("disk full while writing bronze")

    monkeypatch.setattr(Lake, "add_claiming", failing)
    with pytest.raises(OSError, match="disk full"):
        ingest(lake, zone, tiny_spec)
    monkeypatch.undo()
    # the bronze commit is the first write of a batch: nothing was written anywhere
    assert {t: lake.version(t) for t in versions} == versions

    report = ingest(lake, zone, tiny_spec)
    assert report.count(INGESTED) == 2 and report.batches_repaired == 0
    bronze = rows(lake, BRONZE)
    assert dict(bronze.group_by("_source_file").len().iter_rows()) == ({"day1.csv": 3} if existing else {}) | {"day2.csv": 3, "day3.csv": 1}
    assert bronze.select(key).is_duplicated().sum() == 0
    assert rows(lake, QUARANTINE).filter(pl.col("_source_file") == "day2.csv").height == 3
    assert ledger(lake).filter(pl.col("file").is_in(["day2.csv", "day3.csv"]))["outcome"].to_list() == [INGESTED, INGESTED]


@pytest.mark.parametrize("failing", ["quarantine/", "ledger/"])
def test_failure_after_the_bronze_commit_is_completed_by_the_next_run(lake, zone, landing_dir, tiny_spec, monkeypatch, failing):
    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    ingest(lake, zone, tiny_spec)
    write_file(landing_dir, "day2.csv", csv_bytes(DAY2))
    original = Lake.replace_where

    def failing_write(self, table, *args, **kwargs):
        if table.startswith(failing):
            raise OSError(f"disk full while writing {table}")
        return original(self, table, *args, **kwargs)

    monkeypatch.setattr(Lake, "replace_where", failing_write)
    with pytest.raises(OSError, match="disk full"):
        ingest(lake, zone, tiny_spec)
    monkeypatch.undo()
    # the batch committed (bronze is its commit point); its ledger entry is not in the ledger yet
    assert set(rows(lake, BRONZE)["_source_file"]) == {"day1.csv", "day2.csv"}
    assert "day2.csv" not in set(ledger(lake)["file"])

    report = ingest(lake, zone, tiny_spec)
    assert report.batches_repaired == 1 and report.files == []  # day2.csv is recorded by the repair, not read again
    assert rows(lake, BRONZE).group_by("_source_file").len().sort("_source_file").rows() == [("day1.csv", 3), ("day2.csv", 3)]
    quarantine = rows(lake, QUARANTINE)
    assert sorted(quarantine["_source_row"]) == [2, 3, 4] and set(quarantine["_source_file"]) == {"day2.csv"}
    entry = ledger(lake).filter(pl.col("file") == "day2.csv").row(0, named=True)
    assert (entry["outcome"], entry["rows_ingested"], entry["rows_quarantined"]) == (INGESTED, 3, 3)
    assert ingest(lake, zone, tiny_spec).batches_repaired == 0


def test_empty_landing_zone_says_where_it_looked(lake, zone, landing_dir, tiny_spec, caplog):
    caplog.set_level("INFO", logger="aiflow.data.ingest")
    report = ingest(lake, zone, tiny_spec)
    assert report.files == [] and report.landing == str(landing_dir)
    assert f"no files in landing zone {landing_dir}" in report.summary()
    assert report.summary() in caplog.text
    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    ingest(lake, zone, tiny_spec)
    again = ingest(lake, zone, tiny_spec)
    assert again.summary() == f"trips: 1 file(s) in {landing_dir}, none new: bronze unchanged"


SPACED = ["8,AA,JFK,300,100,,,,2013-06-01 05:00:00", "9,UA,EWR,310,100,,,,2013-06-01 06:30:00"]


@pytest.mark.parametrize("order", [("a_iso.csv", "b_spaced.csv"), ("b_spaced.csv", "a_iso.csv")])
def test_a_file_s_rows_are_typed_alone_whatever_else_lands_with_it(lake, zone, landing_dir, tiny_spec, tmp_path, order):
    """Files with the same columns are typed together; a datetime format must not travel from one file to another
    (one small file of '2013-06-01 05:00:00' quarantined every ISO row of the batch, and the run was green)."""
    files = {"a_iso.csv": csv_bytes(TRIPS_ROWS), "b_spaced.csv": csv_bytes(SPACED)}
    for name in order:
        write_file(landing_dir, name, files[name])
    report = ingest(lake, zone, tiny_spec)
    assert report.rows_quarantined == 0 and report.rows_ingested == len(TRIPS_ROWS) + len(SPACED)
    together = rows(lake, BRONZE).select("trip_id", "ts").sort("trip_id")
    # the same bytes ingested file by file give the same rows
    alone = []
    for name, data in files.items():
        own = tmp_path / f"alone-{name}"
        write_file(own, name, data)
        other = Lake(tmp_path / f"lake-{name}")
        ingest(other, LocalLandingZone(own), tiny_spec)
        alone.append(rows(other, BRONZE).select("trip_id", "ts"))
    assert together.equals(pl.concat(alone).sort("trip_id"))
    assert together.filter(pl.col("trip_id") == 8)["ts"].item() == dt.datetime(2013, 6, 1, 5, tzinfo=dt.UTC)  # naive text is UTC
