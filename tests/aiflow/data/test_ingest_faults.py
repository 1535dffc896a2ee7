"""Scope: ingestion under faults, with real processes: a kill -9 at each commit point, two ingestions at once (on a local lake
and on an S3 lake, where the conflict check rests on the store's conditional put), a killed Dagster run.

The kills are placed with the engine's test hook (``AIFLOW_TEST_KILL_AFTER=<commit>``: the process sends
itself SIGKILL right after that commit); the hook is there only to place the kill deterministically.
The concurrency test uses the other hook (``AIFLOW_TEST_BARRIER``) only to make both processes commit
from the same snapshot, so that the race is certain rather than likely. What is checked is what any
Delta reader sees: plain ``pl.read_delta`` and DuckDB's ``delta_scan``.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest
from duckdb_extensions import import_extension

from aiflow.data.ingest import BARRIER_ENV, DUPLICATE, INGESTED, KILL_AFTER_ENV, QuarantineLost, commit_entries, ingest
from aiflow.data.quarantine_stage import STAGING
from aiflow.spec import parse_spec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.tiny import TINY, csv_bytes, write_file

ROOT = Path(__file__).resolve().parents[3]

#: A regression dataset with other column names and another time zone than the tiny spec.
METERS = {
    "name": "meters",
    "landing": {"uri": "landing/meters"},
    "columns": {"meter": {"type": "string"}, "kwh": {"type": "float64"}, "taken_at": {"type": "datetime"}},
    "key": ["meter", "taken_at"],
    "event_time": "taken_at",
    "timezone": "Asia/Tokyo",
    "problem_type": "regression",
    "target": {"name": "load", "source": "kwh", "kind": "identity", "when_null": "quarantine"},
    "known_after_event": ["kwh"],
    "features": {"categorical": ["meter"], "numeric": [], "calendar": ["hour"]},
    "split": {"valid_from": "2024-03-01", "test_from": "2024-03-15"},
}


def _without_quarantine_limit(spec: dict) -> dict:
    """The spec with ``max_quarantined_share: 1`` on every table: these tests put files of mostly or only bad rows through the
    commit protocol (a file with no bronze row is owned by the first commit recording it), which the limit would reject."""
    spec = copy.deepcopy(spec)
    for table in [spec, *spec.get("side_tables", [])]:
        table["landing"]["max_quarantined_share"] = 1.0
    return spec


SPECS = {"trips": _without_quarantine_limit(TINY), "meters": _without_quarantine_limit(METERS)}

#: The same work in a child process: python -c RUNNER <spec> <table> <lake> <zone> <chunk_rows>.
RUNNER = """
import copy, json, os, sys
from aiflow.data.ingest import ingest
from aiflow.spec import parse_spec
from aiflow.storage.lake import Lake
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.data.test_ingest_faults import SPECS
name, table, lake, zone, chunk = sys.argv[1:]
spec = parse_spec(copy.deepcopy(SPECS[name]), name)
options = json.loads(os.environ.get("AIFLOW_TEST_LAKE_OPTIONS", "{}"))  # an S3 lake's storage options
report = ingest(Lake(lake, options), LocalLandingZone(zone), spec.side(table) if table != spec.name else spec, chunk_rows=int(chunk))
print(json.dumps({f.file: f.outcome for f in report.files}))
"""


def _files(name: str, table: str) -> dict[str, bytes]:
    """Landing files of one table: clean ones, mixed good and bad rows, and one whose rows are all bad."""
    if name == "meters":
        header = "meter,kwh,taken_at"
        files = {
            f"m{i:02d}.csv": [f"M{i},{i}.5,2024-03-{i % 28 + 1:02d}T0{j}:00:00", f"M{i},1.{j},2024-03-{i % 28 + 1:02d}T1{j}:00:00"]
            for i in range(6)
            for j in [i % 9]
        }
        files["a_mixed.csv"] = ["M9,1.0,2024-03-02T01:00:00", "M9,lots,2024-03-02T02:00:00", "M9,2.0,never"]
        files["z_bad.csv"] = ["M8,x,2024-03-03T01:00:00", "M8,y,2024-03-03T02:00:00"]
    elif table == "weather":
        header = "origin,temp,ts"
        files = {
            f"w{i:02d}.csv": [f"JFK,{i}.5,2013-01-{i % 28 + 1:02d}T0{i % 10}:00:00Z", f"EWR,{i},2013-01-{i % 28 + 1:02d}T1{i % 10}:00:00Z"]
            for i in range(17)
        }
        files["a_mixed.csv"] = ["LGA,1.0,2013-02-01T00:00:00Z", "LGA,warm,2013-02-01T01:00:00Z"]
        files["z_bad.csv"] = ["LGA,hot,2013-02-02T00:00:00Z", "LGA,cold,2013-02-02T01:00:00Z"]
    else:
        header = "trip_id,carrier,origin,distance,delay,ts"
        files = {
            f"t{i:02d}.csv": [f"{10 * i + j},AA,JFK,{100 + j},1.0,2013-01-{i % 28 + 1:02d}T0{j}:00:00Z" for j in range(3)]
            for i in range(17)
        }
        files["a_mixed.csv"] = ["900,UA,EWR,500,,2013-02-01T12:00:00Z", "901,DL,EWR,far,,2013-02-01T13:00:00Z", "902,B6,JFK,900,,NA"]
        files["z_bad.csv"] = ["903,UA,EWR,near,,2013-02-02T12:00:00Z", "904,UA,EWR,close,,2013-02-02T13:00:00Z"]
    return {n: csv_bytes(rows, header) for n, rows in files.items()}


def _table(name: str, table: str):
    spec = parse_spec(copy.deepcopy(SPECS[name]), name)
    return spec if table == spec.name else spec.side(table)


def _land(folder: Path, files: dict[str, bytes]) -> LocalLandingZone:
    for n, data in files.items():
        write_file(folder, n, data)
    return LocalLandingZone(folder)


def _run(name: str, table: str, lake: Path | str, zone: Path, chunk_rows: int, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, name, table, str(lake), str(zone), str(chunk_rows)],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _polars(lake: Lake, name: str) -> pl.DataFrame:
    return pl.read_delta(lake.uri(name), storage_options=lake.storage_options or None) if lake.exists(name) else pl.DataFrame()


@functools.cache
def _load_duckdb_delta() -> None:
    import_extension("delta")  # offline, from the duckdb-extension-delta package


def _duckdb(lake: Lake, name: str) -> pl.DataFrame:
    if not lake.exists(name):
        return pl.DataFrame()
    _load_duckdb_delta()
    with duckdb.connect() as con:
        frame = con.sql(f"SELECT * FROM delta_scan('{lake.uri(name)}')").pl()
    return frame.with_columns(pl.col(pl.Datetime("us", "Etc/UTC")).dt.convert_time_zone("UTC"))  # DuckDB names UTC Etc/UTC


def _recorded(lake: Lake, table: str) -> dict[tuple[str, str], tuple[str, int, int]]:
    """(batch, file) → (outcome, rows ingested, rows quarantined) as bronze's commits record them."""
    found = {}
    for commit in lake.history(Tables.bronze(table)):
        entries = commit_entries(commit)
        for e in entries.iter_rows(named=True) if entries is not None else []:
            found[(e["batch_id"], e["file"])] = (e["outcome"], e["rows_ingested"], e["rows_quarantined"])
    return found


def _assert_only_recorded_rows_visible(lake: Lake, table: str, readers=(_polars, _duckdb)) -> None:
    """Every row any reader sees belongs to a batch whose bronze commit records its file, with that count."""
    recorded = _recorded(lake, table)
    for read in readers:
        for name, column in ((Tables.bronze(table), 1), (Tables.quarantine(table), 2)):
            frame = read(lake, name)
            if not frame.height:
                continue
            for batch, file, n in frame.group_by("_batch_id", "_source_file").len().iter_rows():
                assert (batch, file) in recorded, (
                    f"{read.__name__}: {n} rows of {file} in {name} from batch {batch}, which no commit records"
                )
                assert recorded[(batch, file)][0] == INGESTED and recorded[(batch, file)][column] == n, (read.__name__, name, file)


def _content(lake: Lake, table: str, duckdb_too: bool = True) -> dict[str, list]:
    """What a clean run must leave: rows per table without run-specific columns, ledger entries per file."""
    drop = ["_batch_id", "_ingested_at", "_quarantined_at"]
    out = {}
    for name in (Tables.bronze(table), Tables.quarantine(table)):
        frame = _polars(lake, name).drop(drop, strict=False)
        out[name] = sorted(map(repr, frame.select(sorted(frame.columns)).rows()))
        assert not duckdb_too or sorted(map(repr, _duckdb(lake, name).drop(drop, strict=False).select(sorted(frame.columns)).rows())) == out[name]
    ledger = _polars(lake, Tables.ledger(table)).filter(pl.col("outcome") == INGESTED)
    out["ledger"] = sorted(ledger.select("file", "rows_ingested", "rows_quarantined").rows())
    return out


def _reference(tmp_path: Path, name: str, table: str, files: dict[str, bytes]) -> dict[str, list]:
    lake = Lake(tmp_path / "reference-lake")
    ingest(lake, _land(tmp_path / "reference-landing", files), _table(name, table))
    return _content(lake, table)


@pytest.mark.parametrize(
    ("name", "point"),
    [("trips", "bronze"), ("trips", "quarantine"), ("trips", "ledger"), ("meters", "bronze")],
)
def test_kill_at_each_commit_point_shows_no_unrecorded_rows_and_the_next_run_ingests_each_file_once(tmp_path, name, point):
    files = _files(name, name)
    zone = _land(tmp_path / "landing", files)
    lake = Lake(tmp_path / "lake")
    # a first batch commits whole; the mixed file (good and bad rows) is in the batch that gets killed
    ingest(lake, zone, _table(name, name), files=[n for n in files if n.startswith(("t0", "m0"))])
    proc = _run(name, name, tmp_path / "lake", tmp_path / "landing", 1, **{KILL_AFTER_ENV: point})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err

    _assert_only_recorded_rows_visible(lake, name)
    report = ingest(lake, zone, _table(name, name))
    assert report.batches_repaired == (0 if point == "ledger" else 1)
    _assert_only_recorded_rows_visible(lake, name)
    assert _content(lake, name) == _reference(tmp_path, name, name, files)
    ledger = _polars(lake, Tables.ledger(name))
    assert ledger.filter(pl.col("outcome") == INGESTED)["sha256"].is_duplicated().sum() == 0
    assert set(ledger["file"]) == set(files)
    assert ArtifactStore(f"{lake.root}/{STAGING}").list(name) == []  # no staged copy left, even after a kill past the ledger


def test_kill_after_the_bronze_commit_then_the_landing_file_moved_away_loses_no_quarantined_row(tmp_path):
    """Issue 22 item 3: the rerun rebuilt the killed batch's quarantine from the landing file, which was gone: its rows were in
    neither table while the ledger counted them, and the run was green. The rows are now staged in the lake before the commit."""
    files = _files("trips", "trips")
    zone = _land(tmp_path / "landing", files)
    lake = Lake(tmp_path / "lake")
    ingest(lake, zone, _table("trips", "trips"), files=[n for n in files if n.startswith("t0")])
    proc = _run("trips", "trips", tmp_path / "lake", tmp_path / "landing", 1, **{KILL_AFTER_ENV: "bronze"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    # one file a batch, by name: the killed batch is the mixed file's (good rows in bronze, bad ones not yet in quarantine)
    (killed,) = {batch for batch, file in _recorded(lake, "trips") if file == "a_mixed.csv"}
    assert not lake.exists(Tables.quarantine("trips"))
    (tmp_path / "elsewhere").mkdir()
    shutil.move(tmp_path / "landing" / "a_mixed.csv", tmp_path / "elsewhere" / "a_mixed.csv")

    # with the staged copy gone as well the rows are nowhere: the run fails naming the file, and finishes nothing
    staging = Path(lake.root, STAGING, "trips", killed)
    shutil.move(staging, tmp_path / "staged")
    with pytest.raises(QuarantineLost, match=r"batch .* is in bronze, but the quarantined rows of a_mixed\.csv \(2 rows"):
        ingest(lake, zone, _table("trips", "trips"))
    assert not lake.exists(Tables.quarantine("trips")) and "a_mixed.csv" not in set(_polars(lake, Tables.ledger("trips"))["file"])

    shutil.move(tmp_path / "staged", staging)
    report = ingest(lake, zone, _table("trips", "trips"))
    assert report.batches_repaired == 1
    _assert_only_recorded_rows_visible(lake, "trips")
    assert _content(lake, "trips") == _reference(tmp_path, "trips", "trips", files)  # a_mixed.csv's 2 bad rows included
    assert not staging.exists()  # removed once the batch is in the ledger


@pytest.mark.parametrize(("name", "table"), [("trips", "trips"), ("trips", "weather")])
def test_two_concurrent_ingestions_commit_each_file_once(tmp_path, name, table):
    files = _files(name, table)
    zone = _land(tmp_path / "landing", files)
    lake = Lake(tmp_path / "lake")
    # the tables exist: the two runs race on commits to existing tables, not on creating them
    ingest(lake, zone, _table(name, table), files=[sorted(files)[-2]])
    (tmp_path / "barrier").mkdir()
    barrier = {BARRIER_ENV: f"{tmp_path / 'barrier'}:2"}
    procs = [_run(name, table, tmp_path / "lake", tmp_path / "landing", 4, **barrier) for _ in range(2)]  # ~2 files a batch
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]

    outcomes = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    # each file was ingested by exactly one of the two; the race was real (both took the first file)
    for file in sorted(files)[:-2] + sorted(files)[-1:]:
        assert sorted(o.get(file) for o in outcomes if file in o).count(INGESTED) == 1, (file, outcomes)
    assert any(DUPLICATE in o.values() for o in outcomes)
    # the loser's rows were never committed (Delta's conflict check refused them), rather than removed after
    assert "DELETE" not in {c.get("operation") for c in lake.history(Tables.bronze(table))}
    _assert_only_recorded_rows_visible(lake, table)
    assert _content(lake, table) == _reference(tmp_path, name, table, files)
    ledger = _polars(lake, Tables.ledger(table)).filter(pl.col("outcome") == INGESTED)
    assert ledger.height == len(files) and ledger["sha256"].n_unique() == len(files)


@pytest.mark.s3
def test_two_concurrent_ingestions_into_an_s3_lake_commit_each_file_once(tmp_path, s3_server, s3_prefix):
    """The same race with the lake on S3 (SeaweedFS): Delta's commit there is a conditional put, no lock table."""
    files = _files("meters", "meters")
    zone = _land(tmp_path / "landing", files)
    lake = Lake(f"{s3_prefix}/lake", s3_server.storage_options)
    ingest(lake, zone, _table("meters", "meters"), files=[sorted(files)[-2]])
    (tmp_path / "barrier").mkdir()
    env = {BARRIER_ENV: f"{tmp_path / 'barrier'}:2", "AIFLOW_TEST_LAKE_OPTIONS": json.dumps(s3_server.storage_options)}
    procs = [_run("meters", "meters", lake.root, tmp_path / "landing", 4, **env) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]

    outcomes = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    for file in sorted(files)[:-2] + sorted(files)[-1:]:
        assert sorted(o.get(file) for o in outcomes if file in o).count(INGESTED) == 1, (file, outcomes)
    assert any(DUPLICATE in o.values() for o in outcomes)  # the race was real
    assert "DELETE" not in {c.get("operation") for c in lake.history(Tables.bronze("meters"))}
    _assert_only_recorded_rows_visible(lake, "meters", readers=(_polars,))  # DuckDB's S3 reader needs httpfs (not offline)
    assert _content(lake, "meters", duckdb_too=False) == _reference(tmp_path, "meters", "meters", files)
    # the quarantined rows staged on S3 before each bronze commit were there, and are gone once their batch is in the ledger
    staging = ArtifactStore(f"{lake.root}/{STAGING}", s3_server.storage_options)
    assert _polars(lake, Tables.quarantine("meters")).height > 0 and staging.list("meters") == []


def test_two_concurrent_ingestions_of_a_file_with_only_bad_rows_quarantine_it_once(tmp_path):
    """No bronze rows to conflict on: the first bronze commit that records the hash owns the file (the other run's commit,
    made exactly on the version it read, is refused; it re-reads the claims and records the file as a duplicate)."""
    files = _files("meters", "meters")
    zone = _land(tmp_path / "landing", {"m00.csv": files["m00.csv"]})
    lake = Lake(tmp_path / "lake")
    ingest(lake, zone, _table("meters", "meters"))
    write_file(tmp_path / "landing", "z_bad.csv", files["z_bad.csv"])
    (tmp_path / "barrier").mkdir()
    barrier = {BARRIER_ENV: f"{tmp_path / 'barrier'}:2"}
    procs = [_run("meters", "meters", tmp_path / "lake", tmp_path / "landing", 1, **barrier) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]

    outcomes = sorted(json.loads(out.strip().splitlines()[-1])["z_bad.csv"] for out, _ in outputs)
    assert outcomes == [DUPLICATE, INGESTED]
    # one claim reached bronze's log: the later commit was refused and re-read before claiming
    claims = [k for k, v in _recorded(lake, "meters").items() if k[1] == "z_bad.csv" and v[0] == INGESTED]
    assert len(claims) == 1
    quarantine = _polars(lake, Tables.quarantine("meters"))
    assert quarantine.height == 2 and quarantine["_batch_id"].n_unique() == 1
    ledger = _polars(lake, Tables.ledger("meters")).filter(pl.col("file") == "z_bad.csv")
    assert sorted(ledger["outcome"]) == [DUPLICATE, INGESTED]
    assert ledger.filter(pl.col("outcome") == INGESTED)["batch_id"].to_list() == quarantine["_batch_id"].unique().to_list()
