"""Scope: ingestion's exact outcomes, written to kill the survivors of its mutation run (issue 22): a batch repaired from
its staged quarantine rows or from its landing files (and the message when neither holds them), the quarantine limit's
outcome and log line, ``repair`` / ``seen_hashes`` / ``unrecorded_files`` called directly. Real Delta tables, real
Polars, real files in tmp_path; the only stand-in is a write made to fail (a process stopped after the bronze commit).
No Polars at import: mutmut's forked children hang in Polars otherwise (scripts/mutation)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import polars as pl
import pytest

from aiflow.data.ingest import (
    DUPLICATE,
    INGESTED,
    REJECTED,
    QuarantineLost,
    ingest,
    recorded_files,
    repair,
    seen_hashes,
    unrecorded_files,
)
from aiflow.data.quarantine_stage import staged, staged_batches, unstage
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import REJECTED_DIR, LocalLandingZone
from tests.aiflow.tiny import TRIPS_ROWS, csv_bytes, write_file

BRONZE, QUARANTINE, LEDGER = Tables.bronze("trips"), Tables.quarantine("trips"), Tables.ledger("trips")

#: Three good rows and three bad ones (a text distance, a fractional int, a null event time).
DAY2 = [
    "4,UA,JFK,500,100,,,,2013-01-02T12:00:00Z",
    "5,DL,EWR,far,100,,,,2013-01-02T13:00:00Z",
    "6,DL,LGA,800,1.5,,,,2013-01-03T14:00:00Z",
    "7,B6,JFK,900,100,,,,NA",
    "10,AA,EWR,300,100,,,,2013-01-02T15:00:00Z",
    "11,UA,LGA,400,,,,,2013-01-03T16:00:00Z",
]
#: Exactly one bad row (the second) among four.
DAY3 = [
    "20,AA,JFK,100,,,,,2013-01-05T01:00:00Z",
    "21,AA,JFK,near,,,,,2013-01-05T02:00:00Z",
    "22,AA,JFK,120,,,,,2013-01-05T03:00:00Z",
    "23,AA,JFK,130,,,,,2013-01-05T04:00:00Z",
]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rows(lake: Lake, table: str) -> pl.DataFrame:
    return lake.scan(table).collect()


def quarantined(lake: Lake) -> list[tuple]:
    """(file, row, rule, sha256, batch) of every quarantine row, sorted."""
    frame = rows(lake, QUARANTINE).select("_source_file", "_source_row", "_rule", "_source_sha256", "_batch_id", "_stage")
    return sorted(frame.iter_rows())


def stop_after_bronze(lake: Lake, zone: LocalLandingZone, spec, monkeypatch) -> str:
    """Ingest with the quarantine write failing (a process stopped right after the bronze commit); return the batch id."""
    original = Lake.replace_where

    def failing(self, table, *args, **kwargs):
        if table == QUARANTINE:
            raise OSError(f"disk full while writing {table}")
        return original(self, table, *args, **kwargs)

    monkeypatch.setattr(Lake, "replace_where", failing)
    with pytest.raises(OSError, match="disk full"):
        ingest(lake, zone, spec, batch_id="b1")
    monkeypatch.undo()
    assert not lake.exists(LEDGER) and not lake.exists(QUARANTINE)
    (batch,) = set(rows(lake, BRONZE)["_batch_id"])
    return batch


def expected_quarantine(batch: str, day2: bytes, day3: bytes) -> list[tuple]:
    return sorted(
        [("day2.csv", 2, "type", sha(day2), batch, "ingest"), ("day2.csv", 3, "type", sha(day2), batch, "ingest"),
         ("day2.csv", 4, "event_time", sha(day2), batch, "ingest"), ("day3.csv", 2, "type", sha(day3), batch, "ingest")]
    )  # fmt: skip


def land_three(landing_dir: Path) -> tuple[bytes, bytes, bytes]:
    day1, day2, day3 = csv_bytes(TRIPS_ROWS), csv_bytes(DAY2), csv_bytes(DAY3)
    write_file(landing_dir, "day1.csv", day1)
    write_file(landing_dir, "day2.csv", day2)
    write_file(landing_dir, "day3.csv", day3)
    return day1, day2, day3


# ------------------------------------------------------------------------------------------ repair
def test_repair_takes_the_staged_rows_when_every_landing_file_is_gone(lake, zone, landing_dir, tiny_spec, monkeypatch):
    """Staged rows are enough: a clean file (no quarantined row) and both files with bad rows (one of them with exactly
    one) are all gone from the landing zone, and the repair still writes each quarantined row once."""
    _, day2, day3 = land_three(landing_dir)
    batch = stop_after_bronze(lake, zone, tiny_spec, monkeypatch)
    assert staged_batches(lake, "trips") == [batch]
    shutil.rmtree(landing_dir)
    landing_dir.mkdir()

    assert repair(lake, zone, tiny_spec) == 1
    assert quarantined(lake) == expected_quarantine(batch, day2, day3)
    entries = {r["file"]: r for r in rows(lake, LEDGER).iter_rows(named=True)}
    assert {f: (e["outcome"], e["rows_ingested"], e["rows_quarantined"]) for f, e in entries.items()} == {
        "day1.csv": (INGESTED, 3, 0),
        "day2.csv": (INGESTED, 3, 3),
        "day3.csv": (INGESTED, 3, 1),
    }
    assert staged_batches(lake, "trips") == []  # unstaged once the ledger holds the batch
    assert repair(lake, zone, tiny_spec) == 0
    assert len(quarantined(lake)) == 4


def test_repair_rebuilds_from_the_landing_files_when_nothing_was_staged(lake, zone, landing_dir, tiny_spec, monkeypatch):
    """A batch committed without staged rows (before staging existed) is typed again from its landing files: the same
    rows, reasons and quarantine time as the run that stopped would have written."""
    _, day2, day3 = land_three(landing_dir)
    batch = stop_after_bronze(lake, zone, tiny_spec, monkeypatch)
    reference = staged(lake, "trips", batch)
    unstage(lake, "trips", batch)
    assert staged(lake, "trips", batch) is None

    report = ingest(lake, zone, tiny_spec)
    assert report.batches_repaired == 1 and report.files == []
    assert quarantined(lake) == expected_quarantine(batch, day2, day3)
    key = ["_source_file", "_source_row"]
    got = rows(lake, QUARANTINE).sort(key)
    want = reference.sort(key)
    assert got.select(reference.columns).equals(want)  # reasons, records, event dates and _quarantined_at included
    (ingested_at,) = set(rows(lake, LEDGER)["ingested_at"])
    assert set(got["_quarantined_at"]) == {ingested_at}


def test_repair_mixes_staged_rows_and_landing_files_per_file(lake, zone, landing_dir, tiny_spec, monkeypatch):
    """Staged rows are taken file by file when their count matches the commit's entry; a file whose staged rows are
    incomplete is typed again from the landing zone (here day3's staged row is dropped and day2's landing file is gone)."""
    from aiflow.data.quarantine_stage import stage

    _, day2, day3 = land_three(landing_dir)
    batch = stop_after_bronze(lake, zone, tiny_spec, monkeypatch)
    stage(lake, "trips", batch, staged(lake, "trips", batch).filter(pl.col("_source_file") == "day2.csv"))
    (landing_dir / "day2.csv").unlink()

    assert repair(lake, zone, tiny_spec) == 1
    assert quarantined(lake) == expected_quarantine(batch, day2, day3)


@pytest.mark.parametrize("change", ["deleted", "rewritten"])
def test_a_batch_whose_quarantined_rows_are_nowhere_fails_naming_the_file_and_stays_unfinished(
    lake, zone, landing_dir, tiny_spec, monkeypatch, change
):
    _, day2, day3 = land_three(landing_dir)
    batch = stop_after_bronze(lake, zone, tiny_spec, monkeypatch)
    unstage(lake, "trips", batch)
    lost = f"day2.csv (3 rows, SHA-256 {sha(day2)})"
    if change == "deleted":  # both files with quarantined rows: both named
        (landing_dir / "day2.csv").unlink()
        (landing_dir / "day3.csv").unlink()
        lost += f", day3.csv (1 rows, SHA-256 {sha(day3)})"
    else:
        (landing_dir / "day2.csv").write_bytes(day2 + b"12,AA,JFK,10,,,,,2013-01-02T17:00:00Z\n")

    with pytest.raises(QuarantineLost) as exc:
        repair(lake, zone, tiny_spec)
    assert str(exc.value) == (
        f"trips: batch {batch} is in bronze, but the quarantined rows of {lost} are neither "
        f"staged in the lake nor rebuildable from {landing_dir} (the file is gone or holds other bytes). Land each file "
        f"again with those bytes under its name and run the ingestion again; until then the batch stays unfinished."
    )
    assert not lake.exists(LEDGER) and not lake.exists(QUARANTINE)
    write_file(landing_dir, "day2.csv", day2)  # the bytes are back: the next run finishes the batch
    write_file(landing_dir, "day3.csv", day3)
    assert repair(lake, zone, tiny_spec) == 1
    assert quarantined(lake) == expected_quarantine(batch, day2, day3)


def test_repair_of_a_lake_without_bronze_is_nothing(lake, zone, tiny_spec):
    assert repair(lake, zone, tiny_spec) == 0
    assert not lake.exists(LEDGER)


# ------------------------------------------------------------------------------ what has been seen
def test_seen_hashes_names_ingested_content_including_bronze_commits_the_ledger_lacks(lake, zone, landing_dir, tiny_spec, monkeypatch):
    assert seen_hashes(lake, tiny_spec) == {}
    day1, day2, day3 = land_three(landing_dir)
    write_file(landing_dir, "all_bad.csv", csv_bytes(["30,AA,JFK,far,,,,,2013-01-06T00:00:00Z"]))
    stop_after_bronze(lake, zone, tiny_spec, monkeypatch)  # bronze committed, the ledger not written
    # a rejected file is not seen (named again, it is parsed again); the three committed files are, from bronze's log
    assert seen_hashes(lake, tiny_spec) == {sha(day1): "day1.csv", sha(day2): "day2.csv", sha(day3): "day3.csv"}
    ingest(lake, zone, tiny_spec)  # repairs: now from the ledger
    assert seen_hashes(lake, tiny_spec) == {sha(day1): "day1.csv", sha(day2): "day2.csv", sha(day3): "day3.csv"}


def test_unrecorded_files_are_new_names_or_known_names_with_a_new_size_or_mtime(lake, zone, landing_dir, tiny_spec):
    import os

    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    write_file(landing_dir, "day2.csv", csv_bytes(DAY2))
    assert [f.name for f in unrecorded_files(lake, tiny_spec, zone.list())] == ["day1.csv", "day2.csv"]
    ingest(lake, zone, tiny_spec)
    listed = {f.name: f for f in zone.list()}
    assert recorded_files(lake, tiny_spec) == {(f.name, f.size, f.modified) for f in listed.values()}
    assert unrecorded_files(lake, tiny_spec, zone.list()) == []
    write_file(landing_dir, "day3.csv", csv_bytes(DAY3))
    stat = (landing_dir / "day1.csv").stat()
    os.utime(landing_dir / "day1.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert [f.name for f in unrecorded_files(lake, tiny_spec, zone.list())] == ["day1.csv", "day3.csv"]


# ---------------------------------------------------------------------------- the quarantine limit
def test_a_file_over_the_limit_is_rejected_with_its_exact_outcome_ledger_entry_and_log_line(lake, zone, landing_dir, tiny_spec, caplog):
    caplog.set_level(logging.INFO, logger="aiflow.data.ingest")
    bad = csv_bytes(["40,AA,JFK,100,,,,,2013-01-07T00:00:00Z", "41,AA,JFK,far,,,,,2013-01-07T01:00:00Z",
                     "42,AA,JFK,near,,,,,2013-01-07T02:00:00Z", "43,AA,JFK,x,,,,,2013-01-07T03:00:00Z"])  # fmt: skip
    write_file(landing_dir, "mostly_bad.csv", bad)
    report = ingest(lake, zone, tiny_spec, batch_id="b9")

    (outcome,) = report.files
    kept = landing_dir / REJECTED_DIR / "b9-0000" / "mostly_bad.csv"
    assert (outcome.file, outcome.sha256, outcome.outcome) == ("mostly_bad.csv", sha(bad), REJECTED)
    assert (outcome.rows_ingested, outcome.rows_quarantined, outcome.quarantine_share) == (0, 0, 0.75)
    assert outcome.rejected_to == str(kept) and kept.read_bytes() == bad
    assert outcome.error.startswith("mostly_bad.csv: quarantine limit: 3 of 4 rows (75%) would go to quarantine")
    assert (outcome.new_columns, outcome.event_dates, outcome.duplicate_of) == ([], [], None)
    assert report.over_limit == [outcome]
    entry = rows(lake, LEDGER).row(0, named=True)
    assert (entry["file"], entry["sha256"], entry["outcome"], entry["error"], entry["rejected_to"]) == (
        "mostly_bad.csv", sha(bad), REJECTED, outcome.error, str(kept)
    )  # fmt: skip
    assert (kept.parent / "mostly_bad.csv.reason.txt").read_text() == outcome.error + "\n"
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == f"rejected mostly_bad.csv: {outcome.error} (kept at {kept})"
    assert not lake.exists(BRONZE) and not lake.exists(QUARANTINE)


def test_a_file_exactly_at_the_limit_is_ingested_with_its_share(lake, zone, landing_dir, tiny_spec):
    write_file(landing_dir, "half.csv", csv_bytes(["50,AA,JFK,100,,,,,2013-01-08T00:00:00Z", "51,AA,JFK,far,,,,,2013-01-08T01:00:00Z"]))
    (outcome,) = ingest(lake, zone, tiny_spec).files
    assert (outcome.outcome, outcome.rows_ingested, outcome.rows_quarantined, outcome.quarantine_share) == (INGESTED, 1, 1, 0.5)
    assert not outcome.over_limit and rows(lake, BRONZE)["trip_id"].to_list() == [50]
    assert rows(lake, QUARANTINE)["_source_row"].to_list() == [2]


# ------------------------------------------------------------------------- another ingestion first
def test_a_run_that_loses_a_file_to_another_ingestion_records_it_as_that_file_s_duplicate(
    lake, zone, landing_dir, tmp_path, tiny_spec, monkeypatch, caplog
):
    """Another ingestion commits the same bytes (under another name, from another zone) between this run's read of bronze
    and its commit: Delta refuses this run's commit, it re-reads the commits it missed, records its copy as a duplicate of
    the other's file and commits its other files; no row of the lost file is this run's, in bronze or in quarantine."""
    import aiflow.data.ingest as module

    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    ingest(lake, zone, tiny_spec, batch_id="b0")  # the tables exist: the race is on a commit, not a creation
    day2 = csv_bytes(DAY2)
    write_file(landing_dir, "day2.csv", day2)
    write_file(landing_dir, "day3.csv", csv_bytes(DAY3))
    write_file(tmp_path / "other", "copy-of-day2.csv", day2)
    hook, calls = module._before_claim, []

    def other_ingestion_first() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            monkeypatch.setattr(module, "_before_claim", hook)
            ingest(lake, LocalLandingZone(tmp_path / "other"), tiny_spec, batch_id="other")
            monkeypatch.setattr(module, "_before_claim", other_ingestion_first)

    monkeypatch.setattr(module, "_before_claim", other_ingestion_first)
    caplog.set_level(logging.INFO, logger="aiflow.data.ingest")
    report = ingest(lake, zone, tiny_spec, batch_id="mine")
    assert calls == [0, 1]  # refused once, then committed
    (refused,) = [m for m in caplog.messages if "another ingestion" in m]
    head, tail = "trips: another ingestion committed some of batch mine-0000's files first (", "); re-reading"
    assert refused.startswith(head) and refused.endswith(tail)
    assert refused[len(head) : -len(tail)] not in ("", "None")  # Delta's reason

    assert [(f.file, f.sha256, f.outcome, f.duplicate_of, f.rows_ingested, f.rows_quarantined) for f in report.files] == [
        ("day2.csv", sha(day2), DUPLICATE, "copy-of-day2.csv", 0, 0),
        ("day3.csv", sha(csv_bytes(DAY3)), INGESTED, None, 3, 1),
    ]
    bronze = rows(lake, BRONZE)
    assert sorted(bronze.group_by("_source_file", "_batch_id").len().iter_rows()) == [
        ("copy-of-day2.csv", "other-0000", 3),
        ("day1.csv", "b0-0000", 3),
        ("day3.csv", "mine-0000", 3),
    ]
    assert sorted(rows(lake, QUARANTINE).group_by("_source_file", "_batch_id").len().iter_rows()) == [
        ("copy-of-day2.csv", "other-0000", 3),
        ("day3.csv", "mine-0000", 1),
    ]
    ledger = sorted(rows(lake, LEDGER).select("file", "outcome", "batch_id", "duplicate_of").iter_rows())
    assert ledger == [
        ("copy-of-day2.csv", INGESTED, "other-0000", None),
        ("day1.csv", INGESTED, "b0-0000", None),
        ("day2.csv", DUPLICATE, "mine-0000", "copy-of-day2.csv"),
        ("day3.csv", INGESTED, "mine-0000", None),
    ]
    # bronze's log holds one claim per content: the refused commit never reached it
    history = sorted(c["version"] for c in lake.history(BRONZE))
    assert history == [0, 1, 2]


# -------------------------------------------------------------- the rule over bronze's commit entries
def test_the_earliest_commit_that_records_a_content_owns_it(tmp_path, tiny_spec):
    """``_resolve`` over two bronze commits (real ones, from two lakes) that both record the same bytes as ingested: the
    first owns the content, the second's entry becomes its duplicate with nothing ingested; a commit's own entries and
    entries of other outcomes are left as they are."""
    from aiflow.data.ingest import _resolve, commit_entries

    data = csv_bytes(
        ["70,AA,JFK,100,,2013-01-05T12:00:00Z,A1", "71,AA,JFK,far,,2013-01-05T13:00:00Z,A2", "72,AA,JFK,110,,2013-01-05T14:00:00Z,A3"], GATE
    )
    entries = []
    for name, batch in (("first.csv", "a"), ("second.csv", "b")):
        write_file(tmp_path / batch, name, data)
        write_file(tmp_path / batch, "notes.txt", b"hello")  # rejected: never owned
        lake = Lake(tmp_path / f"lake-{batch}")
        ingest(lake, LocalLandingZone(tmp_path / batch), tiny_spec, batch_id=batch)
        (commit,) = [c for c in lake.history(BRONZE) if commit_entries(c) is not None]
        entries.append(commit_entries(commit))
    assert commit_entries({"version": 3, "operation": "OPTIMIZE"}) is None

    owners: dict[str, tuple[str, str]] = {}
    first = _resolve(entries[0], owners)
    assert first.equals(entries[0])
    assert owners == {sha(data): ("first.csv", "a-0000")}
    again = _resolve(entries[0], owners)  # the owner's own commit read again: unchanged
    assert again.equals(entries[0])
    second = _resolve(entries[1], owners)
    assert owners == {sha(data): ("first.csv", "a-0000")}
    assert second.schema == entries[1].schema
    assert second.filter(pl.col("file") == "notes.txt").equals(entries[1].filter(pl.col("file") == "notes.txt"))
    row = second.filter(pl.col("file") == "second.csv").row(0, named=True)
    assert (row["outcome"], row["duplicate_of"], row["rows_ingested"], row["rows_quarantined"], row["event_dates"], row["new_columns"]) == (
        DUPLICATE, "first.csv", 0, 0, [], []
    )  # fmt: skip
    assert (row["sha256"], row["batch_id"], row["size_bytes"]) == (sha(data), "b-0000", len(data))
    before = entries[1].filter(pl.col("file") == "second.csv").row(0, named=True)  # what the duplicate's entry had
    assert (before["rows_ingested"], before["rows_quarantined"], before["new_columns"]) == (2, 1, ["gate"])
    assert before["event_dates"] == [__import__("datetime").date(2013, 1, 5)]


def test_the_entries_of_a_bronze_commit_are_its_ledger_rows(lake, zone, landing_dir, tiny_spec):
    from aiflow.data.ingest import LEDGER_SCHEMA, commit_entries

    land_three(landing_dir)
    ingest(lake, zone, tiny_spec)
    (commit,) = lake.history(BRONZE)
    entries = commit_entries(commit)
    assert json.loads(commit["aiflow.dates"]) == ["2013-01-01", "2013-01-02", "2013-01-03", "2013-01-05"]
    assert entries.schema == pl.Schema(LEDGER_SCHEMA)
    assert entries.sort("file").equals(rows(lake, LEDGER).select(list(LEDGER_SCHEMA)).sort("file"))


# ------------------------------------------------------------------------------- the barrier hook
def test_the_barrier_hook_waits_for_the_other_process_then_is_used_up(tmp_path, monkeypatch):
    """``AIFLOW_TEST_BARRIER=<dir>:<n>`` (a folder whose name holds a colon): the process leaves its pid there and waits
    until n processes did; the variable is consumed, so a second commit does not wait again."""
    import os
    import threading
    import time

    from aiflow.data.ingest import BARRIER_ENV, _before_claim

    folder = tmp_path / "bar:rier"
    folder.mkdir()
    monkeypatch.setenv(BARRIER_ENV, f"{folder}:2")
    other = threading.Timer(0.3, lambda: (folder / "other-process").touch())
    other.start()
    started = time.monotonic()
    _before_claim()
    waited = time.monotonic() - started
    other.join()
    assert 0.3 <= waited < 30  # released by the second process, not by the 60 s deadline
    assert sorted(p.name for p in folder.iterdir()) == sorted([str(os.getpid()), "other-process"])
    assert BARRIER_ENV not in os.environ
    _before_claim()  # used up: returns at once, touches nothing
    assert len(list(folder.iterdir())) == 2


# ---------------------------------------------------------------------------------- the kill hook
@pytest.mark.parametrize(("point", "killed"), [("bronze", True), ("ledger", False)])
def test_the_kill_hook_sends_sigkill_only_at_its_point(monkeypatch, point, killed):
    """``AIFLOW_TEST_KILL_AFTER=bronze``: the process kills itself with SIGKILL right after the bronze commit, at no other
    point (checked in a forked child, which touches no Polars)."""
    import os
    import signal

    from aiflow.data.ingest import KILL_AFTER_ENV, _after_commit

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.environ[KILL_AFTER_ENV] = point
            for other in ("staged", "quarantine"):
                _after_commit(other)
            _after_commit("bronze")
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    if killed:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    else:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3
    monkeypatch.delenv(KILL_AFTER_ENV, raising=False)
    _after_commit("bronze")  # unset: nothing happens here


# ------------------------------------------------- the same bytes typed differently by two runs at once
#: Two good rows and a bad one; the event time is ``ts`` for the tiny spec and ``booked`` for the changed one, so the two
#: runs claim different dates and Delta's conflict check lets both commits through.
TWICE = [
    "60,AA,JFK,100,,,2012-12-05,,2013-01-07T02:00:00Z",
    "61,AA,JFK,110,,,2012-12-05,,2013-01-07T03:00:00Z",
    "62,AA,JFK,far,,,2012-12-05,,2013-01-07T04:00:00Z",
]
GATE = "trip_id,carrier,origin,distance,delay,ts,gate"


def race_with_a_changed_spec(lake, zone, landing_dir, tmp_path, tiny_dict, monkeypatch, *, fail_ledger: bool):
    """This run (the tiny spec) ingests ``twice.csv`` and ``gate.csv`` (a new column: its claim is a Delta overwrite with
    a predicate); between its read of bronze and its commit, another run with ``booked`` as event time commits the same
    bytes as ``copy.csv``. Returns this run's report (None when its ledger write was made to fail) and the bytes."""
    import aiflow.data.ingest as module
    from aiflow.spec import parse_spec

    tiny = parse_spec(tiny_dict, "tiny")
    changed = {**tiny_dict, "event_time": "booked"}
    changed["columns"] = {**tiny_dict["columns"], "booked": {"type": "date"}}
    changed["features"] = {**tiny_dict["features"], "calendar": ["weekday", "month"]}
    other_spec = parse_spec(changed, "tiny")
    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS[:1]))
    ingest(lake, zone, tiny, batch_id="b0")
    data, gate = csv_bytes(TWICE), csv_bytes(["70,AA,JFK,100,,2013-01-05T12:00:00Z,A1"], GATE)
    write_file(landing_dir, "twice.csv", data)
    write_file(landing_dir, "gate.csv", gate)
    write_file(tmp_path / "other", "copy.csv", data)
    hook = module._before_claim

    def other_run_first() -> None:
        monkeypatch.setattr(module, "_before_claim", hook)
        ingest(lake, LocalLandingZone(tmp_path / "other"), other_spec, batch_id="other")

    monkeypatch.setattr(module, "_before_claim", other_run_first)
    if not fail_ledger:
        return ingest(lake, zone, tiny, batch_id="mine"), data, gate
    original = Lake.replace_where

    def failing(self, table, frame, where, **kwargs):
        if table == LEDGER and "mine" in where:
            raise OSError("disk full while writing the ledger")
        return original(self, table, frame, where, **kwargs)

    monkeypatch.setattr(Lake, "replace_where", failing)
    with pytest.raises(OSError, match="disk full"):
        ingest(lake, zone, tiny, batch_id="mine")
    monkeypatch.setattr(Lake, "replace_where", original)
    return None, data, gate


def test_a_file_two_runs_typed_differently_is_owned_by_the_earlier_commit(
    lake, zone, landing_dir, tmp_path, tiny_dict, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="aiflow.data.ingest")
    report, data, gate = race_with_a_changed_spec(lake, zone, landing_dir, tmp_path, tiny_dict, monkeypatch, fail_ledger=False)

    assert [(f.file, f.outcome, f.duplicate_of, f.rows_ingested, f.rows_quarantined) for f in report.files] == [
        ("gate.csv", INGESTED, None, 1, 0),
        ("twice.csv", DUPLICATE, "copy.csv", 0, 0),
    ]
    assert report.bronze_version == 2
    assert [c["operation"] for c in sorted(lake.history(BRONZE), key=lambda c: c["version"])] == ["WRITE", "WRITE", "WRITE", "DELETE"]
    assert "trips: batch mine-0000 lost 1 file(s) to an earlier batch; 2 rows removed" in caplog.messages
    bronze = rows(lake, BRONZE)
    assert sorted(bronze.select("_source_file", "_batch_id", "trip_id").iter_rows()) == [
        ("copy.csv", "other-0000", 60),
        ("copy.csv", "other-0000", 61),
        ("day1.csv", "b0-0000", 1),
        ("gate.csv", "mine-0000", 70),
    ]
    assert quarantined(lake) == [("copy.csv", 3, "type", sha(data), "other-0000", "ingest")]
    assert sorted(rows(lake, LEDGER).select("file", "outcome", "batch_id", "duplicate_of").iter_rows()) == [
        ("copy.csv", INGESTED, "other-0000", None),
        ("day1.csv", INGESTED, "b0-0000", None),
        ("gate.csv", INGESTED, "mine-0000", None),
        ("twice.csv", DUPLICATE, "mine-0000", "copy.csv"),
    ]
    # a later chunk of the same content is a duplicate of the owner, whatever its name
    write_file(landing_dir, "again.csv", data)
    (again,) = ingest(lake, zone, spec_of(tiny_dict)).files
    assert (again.outcome, again.duplicate_of) == (DUPLICATE, "copy.csv")


def spec_of(tiny_dict):
    from aiflow.spec import parse_spec

    return parse_spec(tiny_dict, "tiny")


def test_bronze_s_log_read_again_gives_the_file_to_the_earlier_commit(lake, zone, landing_dir, tmp_path, tiny_dict, monkeypatch):
    """The later batch stopped before its ledger entries: its bronze commit still records ``twice.csv`` as ingested. Read
    again (``seen_hashes``, the repair), the earlier commit owns the bytes: the repair records the later entry as a
    duplicate with nothing ingested, and writes none of its quarantine rows."""
    _, data, gate = race_with_a_changed_spec(lake, zone, landing_dir, tmp_path, tiny_dict, monkeypatch, fail_ledger=True)
    spec = spec_of(tiny_dict)
    assert seen_hashes(lake, spec) == {
        sha(csv_bytes(TRIPS_ROWS[:1])): "day1.csv",
        sha(data): "copy.csv",
        sha(gate): "gate.csv",
    }
    assert repair(lake, zone, spec) == 1
    entries = {(r["file"], r["batch_id"]): r for r in rows(lake, LEDGER).iter_rows(named=True)}
    mine = entries[("twice.csv", "mine-0000")]
    assert (mine["outcome"], mine["duplicate_of"], mine["rows_ingested"], mine["rows_quarantined"]) == (DUPLICATE, "copy.csv", 0, 0)
    assert (mine["event_dates"], mine["new_columns"], mine["sha256"]) == ([], [], sha(data))
    assert entries[("gate.csv", "mine-0000")]["outcome"] == INGESTED
    assert entries[("copy.csv", "other-0000")]["outcome"] == INGESTED
    assert quarantined(lake) == [("copy.csv", 3, "type", sha(data), "other-0000", "ingest")]
    assert staged_batches(lake, "trips") == []


# ------------------------------------------------------------------------------------- the index
def test_the_ledger_marks_how_far_bronze_s_log_is_indexed(lake, zone, landing_dir, tiny_spec, monkeypatch):
    """Every ledger commit after the first run records the bronze version through which every batch is in the ledger; the
    next run reads bronze's log only after it. A ledger created by a repair carries the mark in its very first commit."""
    from aiflow.data.ingest import _ledger_state

    assert _ledger_state(lake, tiny_spec) == ({}, set(), None)
    day1, day2, day3 = land_three(landing_dir)
    stop_after_bronze(lake, zone, tiny_spec, monkeypatch)  # bronze v0; no ledger yet
    assert repair(lake, zone, tiny_spec) == 1  # ledger v0, written by the repair: bronze is indexed through v0
    assert lake.version(LEDGER) == 0
    owners, batches, through = _ledger_state(lake, tiny_spec)
    assert (batches, through) == ({"b1-0000"}, 0)
    assert owners == {sha(day1): ("day1.csv", "b1-0000"), sha(day2): ("day2.csv", "b1-0000"), sha(day3): ("day3.csv", "b1-0000")}

    write_file(landing_dir, "day4.csv", csv_bytes(["80,AA,JFK,100,,,,,2013-01-09T00:00:00Z"]))
    ingest(lake, zone, tiny_spec, batch_id="b2")  # bronze v1, ledger v1 marked through bronze v0 (its repair's view)
    assert _ledger_state(lake, tiny_spec)[2] == 0
    write_file(landing_dir, "day5.csv", csv_bytes(["81,AA,JFK,100,,,,,2013-01-10T00:00:00Z"]))
    read = []
    original = Lake.commits

    def recording(self, table, after, until=None):
        read.append((table, after, until))
        return original(self, table, after, until)

    monkeypatch.setattr(Lake, "commits", recording)
    ingest(lake, zone, tiny_spec, batch_id="b3")  # bronze v2
    monkeypatch.undo()
    assert read == [(BRONZE, 0, 1)]  # only bronze v1 read again, once (the claims then start at it)
    assert _ledger_state(lake, tiny_spec)[2] == 1


# --------------------------------------------------------------------------- writes and chunks
def test_each_batch_replaces_only_its_own_quarantine_and_ledger_rows_and_says_so_in_its_commits(lake, zone, landing_dir, tiny_spec):
    day2, day3 = csv_bytes(DAY2), csv_bytes(DAY3)
    write_file(landing_dir, "day2.csv", day2)
    ingest(lake, zone, tiny_spec, batch_id="b1")
    write_file(landing_dir, "day3.csv", day3)
    ingest(lake, zone, tiny_spec, batch_id="b2")
    assert [(f, r, b) for f, r, _, _, b, _ in quarantined(lake)] == [
        ("day2.csv", 2, "b1-0000"),
        ("day2.csv", 3, "b1-0000"),
        ("day2.csv", 4, "b1-0000"),
        ("day3.csv", 2, "b2-0000"),
    ]
    assert sorted(rows(lake, LEDGER).select("file", "batch_id").iter_rows()) == [("day2.csv", "b1-0000"), ("day3.csv", "b2-0000")]
    (quarantine_commit,) = [c for c in lake.history(QUARANTINE) if c["version"] == 1]
    assert quarantine_commit["aiflow.batch_id"] == "b2-0000"
    ledger_commits = {c["version"]: c for c in lake.history(LEDGER)}
    assert ledger_commits[0]["aiflow.batch_id"] == "b1-0000" and "aiflow.indexed_through" not in ledger_commits[0]
    assert (ledger_commits[1]["aiflow.batch_id"], ledger_commits[1]["aiflow.indexed_through"]) == ("b2-0000", "0")


@pytest.mark.parametrize("chunk_rows", [3, 4])
def test_a_chunk_commits_as_soon_as_it_holds_chunk_rows_rows(lake, zone, landing_dir, tiny_spec, chunk_rows):
    """Files of 2 rows: 4 rows reach 3 and 4, 2 rows reach neither."""
    for i in range(3):
        write_file(landing_dir, f"f{i}.csv", csv_bytes([f"{90 + 2 * i + j},AA,JFK,100,,,,,2013-01-1{i}T0{j}:00:00Z" for j in range(2)]))
    progress = []
    report = ingest(
        lake, zone, tiny_spec, chunk_rows=chunk_rows, batch_id="c", on_progress=lambda done, total: progress.append((done, total))
    )
    batches = dict(rows(lake, LEDGER).select("file", "batch_id").iter_rows())
    assert batches == {"f0.csv": "c-0000", "f1.csv": "c-0000", "f2.csv": "c-0002"}  # 2 + 2 rows reach 4: commit
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert report.bronze_version == 1 and lake.version(BRONZE) == 1


def test_batch_times_are_utc_on_a_machine_in_another_time_zone(lake, zone, landing_dir, tiny_spec, monkeypatch):
    import datetime as dt
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        write_file(landing_dir, "day2.csv", csv_bytes(DAY2))
        before = dt.datetime.now(dt.UTC)
        ingest(lake, zone, tiny_spec)
        after = dt.datetime.now(dt.UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    (ingested_at,) = set(rows(lake, BRONZE)["_ingested_at"])
    assert before <= ingested_at <= after
    assert set(rows(lake, QUARANTINE)["_quarantined_at"]) == {ingested_at}
    assert set(rows(lake, LEDGER)["ingested_at"]) == {ingested_at}


def test_an_unreadable_file_is_rejected_with_its_name_in_the_reason_and_the_log(lake, zone, landing_dir, tiny_spec, caplog):
    caplog.set_level(logging.INFO, logger="aiflow.data.ingest")
    write_file(landing_dir, "notes.txt", b"hello")
    write_file(landing_dir, "short.csv", b"trip_id,carrier,origin,ts\n1,AA,JFK,2013-01-01T00:00:00Z\n")
    report = ingest(lake, zone, tiny_spec, batch_id="r")
    errors = {f.file: f.error for f in report.files}
    assert [(f.file, f.sha256, f.outcome) for f in report.files] == [
        ("notes.txt", sha(b"hello"), REJECTED),
        ("short.csv", sha(b"trip_id,carrier,origin,ts\n1,AA,JFK,2013-01-01T00:00:00Z\n"), REJECTED),
    ]
    assert errors["notes.txt"] == "notes.txt: unknown file type (expected .csv, .parquet or .jsonl)"
    assert errors["short.csv"].startswith("short.csv: ")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    kept = landing_dir / REJECTED_DIR / "r-0000"
    assert warnings == [
        f"rejected notes.txt: {errors['notes.txt']} (kept at {kept / 'notes.txt'})",
        f"rejected short.csv: {errors['short.csv']} (kept at {kept / 'short.csv'})",
    ]


# ------------------------------------------------------------------------- typing, file by file
def test_a_header_only_file_is_ingested_with_nothing_in_it(lake, zone, landing_dir, tiny_spec):
    from tests.aiflow.tiny import TRIPS_HEADER

    write_file(landing_dir, "a_empty.csv", (TRIPS_HEADER + "\n").encode())
    write_file(landing_dir, "b_day1.csv", csv_bytes(TRIPS_ROWS))  # the same columns: typed in one pass with it
    report = ingest(lake, zone, tiny_spec)
    outcomes = [(f.file, f.outcome, f.rows_ingested, f.rows_quarantined, f.quarantine_share, f.event_dates) for f in report.files]
    assert outcomes[0] == ("a_empty.csv", INGESTED, 0, 0, 0.0, [])
    assert outcomes[1][:5] == ("b_day1.csv", INGESTED, 3, 0, 0.0)
    entry = rows(lake, LEDGER).filter(pl.col("file") == "a_empty.csv").row(0, named=True)
    assert (entry["uri"], entry["rows_ingested"], entry["rows_quarantined"], entry["event_dates"]) == (
        str(landing_dir / "a_empty.csv"),
        0,
        0,
        [],
    )


def test_a_file_whose_every_row_is_quarantined_is_ingested_when_the_limit_is_off(lake, zone, landing_dir, tiny_dict):
    from aiflow.spec import parse_spec

    tiny_dict["landing"]["max_quarantined_share"] = 1.0
    data = csv_bytes(["30,AA,JFK,far,,,,,2013-01-06T00:00:00Z", "31,AA,JFK,near,,,,,2013-01-06T01:00:00Z"])
    write_file(landing_dir, "all_bad.csv", data)
    (outcome,) = ingest(lake, zone, parse_spec(tiny_dict, "tiny")).files
    assert (outcome.outcome, outcome.rows_ingested, outcome.rows_quarantined, outcome.quarantine_share) == (INGESTED, 0, 2, 1.0)
    assert outcome.event_dates == [__import__("datetime").date(2013, 1, 6)] and not outcome.over_limit
    assert [(f, r) for f, r, *_ in quarantined(lake)] == [("all_bad.csv", 1), ("all_bad.csv", 2)]
    assert rows(lake, BRONZE).height == 0


def test_a_file_over_the_limit_leaves_the_files_typed_with_it_ingested(lake, zone, landing_dir, tiny_spec):
    bad = ["40,AA,JFK,100,,,,,2013-01-07T00:00:00Z", "41,AA,JFK,far,,,,,2013-01-07T01:00:00Z", "42,AA,JFK,near,,,,,2013-01-07T02:00:00Z"]
    write_file(landing_dir, "a_mostly_bad.csv", csv_bytes(bad))
    write_file(landing_dir, "b_day1.csv", csv_bytes(TRIPS_ROWS))
    write_file(landing_dir, "c_day3.csv", csv_bytes(DAY3))
    report = ingest(lake, zone, tiny_spec)
    assert [(f.file, f.outcome, f.rows_ingested, f.rows_quarantined) for f in report.files] == [
        ("a_mostly_bad.csv", REJECTED, 0, 0),
        ("b_day1.csv", INGESTED, 3, 0),
        ("c_day3.csv", INGESTED, 3, 1),
    ]
    assert report.files[0].quarantine_share == pytest.approx(2 / 3) and report.files[2].quarantine_share == 0.25
    assert sorted(set(rows(lake, BRONZE)["_source_file"])) == ["b_day1.csv", "c_day3.csv"]
    assert [(f, r) for f, r, *_ in quarantined(lake)] == [("c_day3.csv", 2)]


def test_files_of_two_schemas_in_one_batch_keep_every_quarantined_row_and_name_the_new_column(lake, zone, landing_dir, tiny_spec, caplog):
    caplog.set_level(logging.INFO, logger="aiflow.data.ingest")
    write_file(landing_dir, "a_day3.csv", csv_bytes(DAY3))
    gate = ["70,AA,JFK,100,,2013-01-05T12:00:00Z,A1", "71,AA,JFK,far,,2013-01-05T13:00:00Z,A2", "72,AA,JFK,110,,2013-01-05T14:00:00Z,A3"]
    write_file(landing_dir, "b_gate.csv", csv_bytes(gate, GATE))
    more = ["73,AA,JFK,100,,2013-01-05T15:00:00Z,B1", "74,AA,JFK,near,,2013-01-05T16:00:00Z,B2", "75,AA,JFK,120,,2013-01-05T17:00:00Z,B3"]
    write_file(landing_dir, "c_gate.csv", csv_bytes(more, GATE))  # text in distance too: read with b_gate.csv's schema
    report = ingest(lake, zone, tiny_spec)
    assert [(f.file, f.rows_ingested, f.rows_quarantined, f.new_columns) for f in report.files] == [
        ("a_day3.csv", 3, 1, []),
        ("b_gate.csv", 2, 1, ["gate"]),
        ("c_gate.csv", 2, 1, ["gate"]),
    ]
    assert [(f, r, rule) for f, r, rule, *_ in quarantined(lake)] == [
        ("a_day3.csv", 2, "type"),
        ("b_gate.csv", 2, "type"),
        ("c_gate.csv", 2, "type"),
    ]
    assert "new column(s) ['gate'] kept as strings (in b_gate.csv, c_gate.csv)" in caplog.messages


# ------------------------------------------------------------------------------- the run's report
def test_the_summary_counts_each_outcome_and_is_the_run_s_last_log_line(lake, zone, landing_dir, tiny_spec, caplog, monkeypatch):
    import datetime as dt
    import re
    import time

    caplog.set_level(logging.INFO, logger="aiflow.data.ingest")
    data = csv_bytes(TRIPS_ROWS)
    write_file(landing_dir, "a.csv", data)
    write_file(landing_dir, "b.csv", data)
    write_file(landing_dir, "c.txt", b"hello")
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # the batch id's time is UTC on a machine in another time zone
    time.tzset()
    try:
        before = dt.datetime.now(dt.UTC).replace(microsecond=0)
        report = ingest(lake, zone, tiny_spec)
        after = dt.datetime.now(dt.UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{8}", report.batch_id)
    assert before <= dt.datetime.strptime(report.batch_id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC) <= after
    assert report.summary() == (f"trips: 3 file(s) from {landing_dir}: 1 ingested (3 rows, 0 quarantined), 1 duplicate, 1 rejected")
    assert caplog.records[-1].getMessage() == report.summary()
    duplicate = report.files[1]
    assert (duplicate.file, duplicate.sha256, duplicate.outcome, duplicate.duplicate_of) == ("b.csv", sha(data), DUPLICATE, "a.csv")
    entry = rows(lake, LEDGER).filter(pl.col("file") == "b.csv").row(0, named=True)
    assert (entry["sha256"], entry["outcome"]) == (sha(data), DUPLICATE)
    with pytest.raises(FileNotFoundError) as exc:
        ingest(lake, zone, tiny_spec, files=["a.csv", "x.csv", "y.csv"])
    assert str(exc.value) == f"not in landing zone {landing_dir}: x.csv, y.csv"


def test_a_batch_commits_in_order_staged_bronze_quarantine_ledger(lake, zone, landing_dir, tiny_spec, monkeypatch):
    """The commit points the fault tests place their kill -9 after, in order (recorded through the hook's calls), and
    the versions the report gives for each table."""
    import aiflow.data.ingest as module

    points = []
    monkeypatch.setattr(module, "_after_commit", points.append)
    write_file(landing_dir, "day1.csv", csv_bytes(TRIPS_ROWS))
    first = ingest(lake, zone, tiny_spec)
    assert points == ["bronze", "quarantine", "ledger"]  # nothing quarantined: nothing staged
    assert (first.bronze_version, first.quarantine_version, first.ledger_version) == (0, None, 0)
    points.clear()
    write_file(landing_dir, "day2.csv", csv_bytes(DAY2))
    second = ingest(lake, zone, tiny_spec)
    assert points == ["staged", "bronze", "quarantine", "ledger"]
    assert (second.bronze_version, second.quarantine_version, second.ledger_version) == (1, 0, 1)


# ------------------------------------------------------------------------------------ more repairs
def test_a_lost_ledger_is_rebuilt_from_bronze_s_log_batch_by_batch(lake, zone, landing_dir, tiny_spec, tmp_path, caplog):
    """The ledger is an index derived from bronze's log: with its table gone, the next repair writes every batch's entries
    again (and their quarantine rows, typed again from the landing files, replacing the same rows)."""
    caplog.set_level(logging.INFO, logger="aiflow.data.ingest")
    for name, lines in (("day1.csv", TRIPS_ROWS), ("day3.csv", DAY3)):
        write_file(landing_dir, name, csv_bytes(lines))
        ingest(lake, zone, tiny_spec, batch_id=name[:4])
    ledger = rows(lake, LEDGER).sort("file")
    shutil.rmtree(Path(lake.root) / LEDGER)
    fresh = Lake(lake.root)
    assert repair(fresh, zone, tiny_spec) == 2
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "trips: batch day1-0000 is in bronze but not in the ledger (its run stopped): repairing",
        "trips: batch day3-0000 is in bronze but not in the ledger (its run stopped): repairing",
    ]
    assert rows(fresh, LEDGER).sort("file").equals(ledger)
    assert [(f, r, b) for f, r, _, _, b, _ in quarantined(fresh)] == [("day3.csv", 2, "day3-0000")]


def test_rows_left_staged_by_a_run_stopped_after_its_ledger_commit_are_removed_by_the_next(lake, zone, landing_dir, tiny_spec):
    from aiflow.data.quarantine_stage import stage

    write_file(landing_dir, "day2.csv", csv_bytes(DAY2))
    ingest(lake, zone, tiny_spec, batch_id="b1")
    stage(lake, "trips", "b1-0000", rows(lake, QUARANTINE))  # as if the run had stopped before its unstage
    stage(lake, "trips", "never-committed", rows(lake, QUARANTINE))  # a batch that never reached bronze: left alone
    assert staged_batches(lake, "trips") == ["b1-0000", "never-committed"]
    assert ingest(lake, zone, tiny_spec).batches_repaired == 0
    assert staged_batches(lake, "trips") == ["never-committed"]


def test_every_chunk_of_a_run_applies_the_limit_and_marks_the_index(lake, zone, landing_dir, tiny_spec):
    write_file(landing_dir, "a.csv", csv_bytes(TRIPS_ROWS))
    ingest(lake, zone, tiny_spec, batch_id="first")  # bronze v0, so that this run's ledger commits carry a mark
    for i in range(2):
        write_file(landing_dir, f"b{i}.csv", csv_bytes([f"{90 + 2 * i + j},AA,JFK,100,,,,,2013-01-1{i}T0{j}:00:00Z" for j in range(2)]))
    write_file(landing_dir, "c_mostly_bad.csv", csv_bytes(["95,AA,JFK,100,,,,,2013-01-12T00:00:00Z", "96,AA,JFK,far,,,,,2013-01-12T01:00:00Z",
                                                        "97,AA,JFK,near,,,,,2013-01-12T02:00:00Z"]))  # fmt: skip
    report = ingest(lake, zone, tiny_spec, chunk_rows=4, batch_id="c")
    assert [(f.file, f.outcome) for f in report.files] == [("b0.csv", INGESTED), ("b1.csv", INGESTED), ("c_mostly_bad.csv", REJECTED)]
    marks = {c["aiflow.batch_id"]: c.get("aiflow.indexed_through") for c in lake.history(LEDGER) if c["version"] > 0}
    assert marks == {"c-0000": "0", "c-0002": "0"}


def test_a_repair_from_landing_files_the_changed_spec_no_longer_quarantines_completes_and_says_so(
    lake, zone, landing_dir, tiny_dict, tiny_spec, monkeypatch, caplog
):
    """Bug found by this mutation run: a batch with nothing staged, whose landing files the current spec types with no
    quarantined row at all (here ``seats`` became a float), made the repair fail inside ``pl.concat`` (TypeError on a
    None frame) — and with it every later ingestion, which repairs first. It now completes, writes the rows the current
    spec quarantines (none) and names the file whose count differs from the batch's record."""
    from aiflow.spec import parse_spec

    caplog.set_level(logging.INFO, logger="aiflow.data.ingest")
    data = csv_bytes(
        ["20,AA,JFK,100,,,,,2013-01-05T01:00:00Z", "21,AA,JFK,110,1.5,,,,2013-01-05T02:00:00Z", "22,AA,JFK,120,,,,,2013-01-05T03:00:00Z"]
    )
    write_file(landing_dir, "d.csv", data)
    two = ["30,AA,JFK,100,,,,,2013-01-06T01:00:00Z", "31,AA,JFK,110,2.5,,,,2013-01-06T02:00:00Z",
           "32,AA,JFK,far,,,,,2013-01-06T03:00:00Z", "33,AA,JFK,120,,,,,2013-01-06T04:00:00Z"]  # fmt: skip
    write_file(landing_dir, "e.csv", csv_bytes(two))  # two quarantined rows; one of them still is under the new spec
    batch = stop_after_bronze(lake, zone, tiny_spec, monkeypatch)
    unstage(lake, "trips", batch)
    tiny_dict["columns"]["seats"]["type"] = "float64"

    assert repair(lake, zone, parse_spec(tiny_dict, "tiny")) == 1
    entries = sorted(rows(lake, LEDGER).select("file", "rows_ingested", "rows_quarantined").iter_rows())
    assert entries == [("d.csv", 2, 1), ("e.csv", 2, 2)]  # as the batch recorded them
    assert [(f, r) for f, r, *_ in quarantined(lake)] == [("e.csv", 3)]
    assert (
        f"trips: batch {batch}: typed again from {landing_dir} under the current spec, these files give other quarantined "
        f"rows than the batch recorded: d.csv (0 of 1 rows), e.csv (1 of 2 rows)"
    ) in caplog.messages
