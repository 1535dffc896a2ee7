"""Scope: the ingestion fault matrix (issue 22) — a kill -9 at every commit point of a batch × what the landing zone does
to the killed batch's file before the rerun (nothing; moved away; deleted; rewritten with other bytes; re-landed under
another name). After the kill and after the rerun, Polars and DuckDB see only rows whose bronze commit records them; after
the rerun every row of every content the lake claims is in bronze or in quarantine (with its rule and reason) exactly
once, no other row is there, and the counts and the ledger are exactly the ones stated per case in ``EXPECTED``.

The kills are real: the child process gets SIGKILL. They are placed with the engine's test hook
(``AIFLOW_TEST_KILL_AFTER=<point>``) and, for the point inside the bronze commit (its Parquet files written, its log entry
not), by making the child's Delta transaction call kill it, as ``tests/aiflow/storage/test_rewrite.py`` does.
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
import tempfile
from pathlib import Path

import polars as pl
import pytest

from aiflow.data.ingest import DUPLICATE, INGESTED, KILL_AFTER_ENV, ingest, sha256
from aiflow.data.parse import REASON, ROW, RULE
from aiflow.data.quarantine_stage import STAGING
from aiflow.spec import parse_spec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.data.test_ingest_faults import SPECS, _assert_only_recorded_rows_visible, _content, _files, _land, _polars
from tests.aiflow.tiny import csv_bytes

pytestmark = pytest.mark.slow  # 25 cases, each a killed child process and 2-3 ingestions: ~50 s of CPU, 80-180 s here

ROOT = Path(__file__).resolve().parents[3]
TABLE = "trips"
HEADER = "trip_id,carrier,origin,distance,delay,ts"
#: The file whose batch is killed: the first the killed run takes (sorted by name), 1 clean row and 2 bad ones.
TARGET = "a_mixed.csv"
#: Its rewrite under the same name: other bytes, 2 clean rows and 1 bad one.
REWRITTEN = csv_bytes(
    ["950,UA,EWR,500,,2013-02-03T12:00:00Z", "951,DL,EWR,600,,2013-02-03T13:00:00Z", "952,B6,JFK,far,,2013-02-03T14:00:00Z"], HEADER
)
#: The name its same bytes are landed again under.
RELANDED = "b_relanded.csv"
#: Ingested before the killed run, in a clean first run (3 clean rows each).
FIRST = ["t00.csv", "t01.csv"]
#: Landed with the target, taken by the killed run after it: 3 clean rows; 2 bad rows (no bronze row at all).
LATER = ["t02.csv", "z_bad.csv"]

#: Kill points in the order a batch reaches them; the first two are before the bronze commit (the commit point).
POINTS = {
    "staged": False,  # the batch's quarantine rows written to the lake's staging area; nothing committed
    "bronze-files": False,  # inside the bronze commit: its Parquet files written, its Delta log entry not
    "bronze": True,  # right after the bronze commit (rows and ledger entries in one Delta commit)
    "quarantine": True,  # right after the quarantine commit; the ledger table not written
    "ledger": True,  # right after the ledger commit; the staged copy not yet removed
}
ACTIONS = ["nothing", "moved", "deleted", "rewritten", "relanded"]
_ING = [INGESTED]

#: (bronze committed when killed, landing action) → (bronze rows, quarantine rows, ledger outcomes of the target's contents)
#: after the rerun. Every case also holds the first run's 6 clean rows, t02.csv's 3 and z_bad.csv's 2 bad rows (9 + 2).
EXPECTED: dict[tuple[bool, str], tuple[int, int, dict[str, list[str]]]] = {
    # never committed: the kill left nothing claimed, so the rerun takes the landing zone as it is by then
    (False, "nothing"): (10, 4, {TARGET: _ING}),
    (False, "moved"): (9, 2, {}),  # never claimed, so none of its rows is in the lake: they are wherever the file went
    (False, "deleted"): (9, 2, {}),  # likewise: the lake never held the file
    (False, "rewritten"): (11, 3, {TARGET: _ING}),  # only the new bytes are ever claimed: 2 clean rows, 1 bad
    (False, "relanded"): (10, 4, {RELANDED: _ING}),  # the same rows, now under the new name
    # committed in bronze: that claim stands whatever happens to the file afterwards
    (True, "nothing"): (10, 4, {TARGET: _ING}),
    (True, "moved"): (10, 4, {TARGET: _ING}),  # its 2 bad rows come from the copy staged before the bronze commit
    (True, "deleted"): (10, 4, {TARGET: _ING}),
    (True, "rewritten"): (12, 5, {TARGET: [INGESTED, INGESTED]}),  # a new content: the old rows stay, the new ones once
    (True, "relanded"): (10, 4, {TARGET: _ING, RELANDED: [DUPLICATE]}),  # the same bytes: a duplicate, no row added
}

#: The killed run: python -c RUNNER <spec JSON> <lake> <zone> <kill inside the bronze commit: 0|1>, the kill hook in the environment.
RUNNER = """
import json, os, signal, sys
from deltalake import DeltaTable
from aiflow.data.ingest import ingest
from aiflow.spec import parse_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
spec, lake, zone, inside = sys.argv[1:]
if inside == "1":
    commit = DeltaTable.create_write_transaction
    def die_in_bronze_commit(self, *args, **kwargs):
        if self.table_uri.rstrip("/").endswith(Tables.bronze("trips")):
            os.kill(os.getpid(), signal.SIGKILL)  # the batch's Parquet files are written; its log entry is next
        return commit(self, *args, **kwargs)
    DeltaTable.create_write_transaction = die_in_bronze_commit
ingest(Lake(lake), LocalLandingZone(zone), parse_spec(json.loads(spec), "trips"), chunk_rows=1)
"""


def _spec():
    return parse_spec(copy.deepcopy(SPECS[TABLE]), TABLE)


def _landed() -> dict[str, bytes]:
    files = _files(TABLE, TABLE)
    return {n: files[n] for n in [*FIRST, TARGET, *LATER]}


def _act(action: str, zone: Path, elsewhere: Path) -> None:
    """What the landing zone does to the target between the kill and the rerun."""
    target = zone / TARGET
    if action == "moved":
        elsewhere.mkdir(exist_ok=True)
        shutil.move(target, elsewhere / TARGET)
    elif action == "deleted":
        target.unlink()
    elif action == "rewritten":
        target.write_bytes(REWRITTEN)  # other bytes under the same name (so another size and mtime)
    elif action == "relanded":
        target.rename(zone / RELANDED)  # the same bytes under another name
    else:
        assert action == "nothing"


def _claimed(committed: bool, action: str, landed: dict[str, bytes]) -> dict[str, tuple[str, bytes]]:
    """sha256 → (file name, bytes) of every content the lake must hold after the rerun."""
    files = [(n, landed[n]) for n in [*FIRST, *LATER]]
    if committed or action == "nothing":
        files.append((TARGET, landed[TARGET]))
    if action == "rewritten":
        files.append((TARGET, REWRITTEN))
    if action == "relanded" and not committed:
        files.append((RELANDED, landed[TARGET]))
    return {sha256(data): (name, data) for name, data in files}


def _assert_every_row_once(lake: Lake, claimed: dict[str, tuple[str, bytes]]) -> None:
    """Each claimed content's data rows are in bronze or quarantine exactly once, under its name; nothing else is there."""
    bronze, quarantine = _polars(lake, Tables.bronze(TABLE)), _polars(lake, Tables.quarantine(TABLE))
    assert quarantine[RULE].null_count() == 0 and quarantine[REASON].null_count() == 0 and (quarantine[REASON] != "").all()
    assert set(bronze["_source_sha256"]) | set(quarantine["_source_sha256"]) <= set(claimed)
    for digest, (name, data) in claimed.items():
        mine = [frame.filter(pl.col("_source_sha256") == digest) for frame in (bronze, quarantine)]
        rows = sorted(pl.concat([m[ROW] for m in mine]).to_list())
        assert rows == list(range(1, data.count(b"\n"))), (name, rows)  # one header line, one newline a row
        assert {f for m in mine for f in m["_source_file"]} == {name}


@functools.cache
def _reference(committed: bool, action: str) -> dict[str, list]:
    """The same history without the kill: what the rerun must have left, row for row (built once per case of ``EXPECTED``)."""
    folder = Path(tempfile.mkdtemp(prefix="fault-matrix-reference-"))
    try:
        return _history_without_kill(folder, committed, action)
    finally:
        shutil.rmtree(folder)


def _history_without_kill(tmp_path: Path, committed: bool, action: str) -> dict[str, list]:
    lake, zone = Lake(tmp_path / "reference-lake"), tmp_path / "reference-landing"
    _land(zone, _landed())
    ingest(lake, LocalLandingZone(zone), _spec(), files=FIRST)
    if committed:
        ingest(lake, LocalLandingZone(zone), _spec(), files=[TARGET])
    _act(action, zone, tmp_path / "reference-elsewhere")
    ingest(lake, LocalLandingZone(zone), _spec(), chunk_rows=1)
    return _content(lake, TABLE, duckdb_too=False)


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("point", list(POINTS))
def test_kill_at_each_commit_point_then_a_landing_change_loses_and_doubles_no_row(tmp_path, point, action):
    committed = POINTS[point]
    landed = _landed()
    zone = _land(tmp_path / "landing", landed)
    lake = Lake(tmp_path / "lake")
    ingest(lake, zone, _spec(), files=FIRST)
    env = {**os.environ, KILL_AFTER_ENV: "" if point == "bronze-files" else point}
    inside = "1" if point == "bronze-files" else "0"
    command = [sys.executable, "-c", RUNNER, json.dumps(SPECS[TABLE]), str(lake.root), str(zone.root), inside]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    # what any reader sees right after the kill: the first run, plus the target's clean row once its bronze commit is made
    _assert_only_recorded_rows_visible(lake, TABLE)
    bronze = _polars(lake, Tables.bronze(TABLE))
    assert bronze.height == 6 + committed and (bronze["_source_file"] == TARGET).sum() == committed
    staging = Path(lake.root, STAGING, TABLE)
    killed = set(os.listdir(staging)) if staging.exists() else set()  # the killed batch's staged rows (the first run had none)
    if point == "bronze-files":  # the dead writer's Parquet files are there, referenced by no commit
        assert (
            len(list(Path(lake.uri(Tables.bronze(TABLE))).rglob("*.parquet"))) > lake.table(Tables.bronze(TABLE)).get_add_actions().num_rows
        )

    _act(action, Path(zone.root), tmp_path / "elsewhere")
    report = ingest(lake, zone, _spec(), chunk_rows=1)
    assert report.batches_repaired == (point in ("bronze", "quarantine"))

    _assert_only_recorded_rows_visible(lake, TABLE, readers=(_polars,))  # DuckDB: row for row the same content, below
    _assert_every_row_once(lake, _claimed(committed, action, landed))
    bronze_rows, quarantined, target_outcomes = EXPECTED[(committed, action)]
    assert _polars(lake, Tables.bronze(TABLE)).height == bronze_rows
    assert _polars(lake, Tables.quarantine(TABLE)).height == quarantined
    ledger = _polars(lake, Tables.ledger(TABLE))
    outcomes = {n: sorted(ledger.filter(pl.col("file") == n)["outcome"]) for n in set(ledger["file"])}
    assert outcomes == {**{n: _ING for n in [*FIRST, *LATER]}, **target_outcomes}
    done = ledger.filter(pl.col("outcome") == INGESTED)
    assert done["sha256"].n_unique() == done.height
    assert done.group_by().agg(pl.sum("rows_ingested", "rows_quarantined")).row(0) == (bronze_rows, quarantined)
    assert _content(lake, TABLE) == _reference(committed, action)  # Polars and DuckDB read the same, as without the kill
    # no staged copy of a committed batch is left (a batch that never committed may leave its own, which nothing reads)
    left = {p.split("/")[1] for p in ArtifactStore(f"{lake.root}/{STAGING}").list(TABLE)}
    assert left <= (killed if not committed else set()), left
