"""Landing → bronze: exactly-once ingestion with lineage, a ledger and a quarantine, safe under faults.

Each file is hashed (SHA-256); the same content ingested twice (re-dropped, renamed, or by two runs at
once) adds no row. Files are taken in chunks (about ``chunk_rows`` rows); each chunk is a *batch*.

**The commit point is the bronze commit.** A batch's rows are added to ``bronze/<table>`` in one Delta
commit whose commit metadata (``aiflow.ledger``) carries the batch's ledger entries: every file with its
SHA-256, size, outcome, row counts and event dates. Rows become visible to any Delta reader (Polars,
DuckDB, Spark) only through the commit that records them, so no reader ever sees rows of a batch that
did not commit. Two more writes follow, both keyed by the batch id and both "replace the batch's rows"
(idempotent): the batch's ingest-stage quarantine rows (``quarantine/<table>``), then its entries in
``ledger/<table>``. The ledger table is an index derived from bronze's log: if a process stops after
the bronze commit, the next ingestion (:func:`repair`) writes the missing quarantine rows from the copy
staged in the lake before the bronze commit (:mod:`aiflow.data.quarantine_stage`; a landing file moved,
deleted or rewritten since loses nothing) and the ledger entries from the commit metadata. Quarantine
rows are only written after their batch's bronze commit, so none exist for a batch that never committed.
Nothing is left to undo: a failure before the bronze commit wrote nothing a reader sees; one after it is
repaired, or, if rows truly cannot be found again, the ingestion fails naming the files.

**A file whose rows mostly go to quarantine is rejected whole** (the table's ``max_quarantined_share``,
:mod:`aiflow.data.quarantine_limit`): nothing of it is committed, and its content is not claimed, so it
can be landed again once fixed.

**Exactly once without any outside lock.** The bronze commit is a Delta overwrite whose predicate
(``event_date IN (…) AND _source_sha256 IN (…)``, the batch's dates and content hashes) matches no
existing row, made on top of the version the batch read; Delta's conflict check rejects it when another
writer committed rows with one of those hashes since (``CommitFailedError``). The loser re-reads the
commits it missed, marks the files they took as duplicates, drops their rows and tries again. Files
whose rows all went to quarantine add no bronze rows, so for them the rule is "the earliest bronze
commit that records a hash owns it": a later claim is recorded as a duplicate and writes no quarantine
row. A chunk with no ingested file (only duplicates or rejected files) makes no bronze commit: its
entries go straight to the ledger (there are no rows to make visible).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from deltalake.exceptions import CommitFailedError

from aiflow.data.parse import REASON, RECORD, ROW, RULE, RejectedFile, read_file, split_typed
from aiflow.data.quarantine_limit import over_limit
from aiflow.data.quarantine_stage import stage, staged, staged_batches, unstage
from aiflow.spec import EVENT_DATE, TableSpec
from aiflow.storage.lake import META, Lake, Tables, partition_columns
from aiflow.storage.landing import LandedFile, LandingZone

log = logging.getLogger(__name__)

INGESTED, DUPLICATE, REJECTED = "ingested", "duplicate", "rejected"

#: Bronze commit metadata key (``aiflow.ledger``) holding the batch's ledger entries as JSON records.
ENTRIES = "ledger"
#: Ledger commit metadata key: every bronze batch commit up to this version is in the ledger.
INDEXED_THROUGH = "indexed_through"
#: Attempts at committing a chunk while other ingestions take some of its files first.
CLAIM_ATTEMPTS = 20
#: Test hooks (see :func:`_after_commit` and :func:`_before_claim`); never set them in production.
KILL_AFTER_ENV = "AIFLOW_TEST_KILL_AFTER"
BARRIER_ENV = "AIFLOW_TEST_BARRIER"

LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String(),
    "uri": pl.String(),
    "sha256": pl.String(),
    "size_bytes": pl.Int64(),
    "modified": pl.Datetime("us", "UTC"),
    "format": pl.String(),
    "outcome": pl.String(),
    "rows_ingested": pl.Int64(),
    "rows_quarantined": pl.Int64(),
    "error": pl.String(),
    "new_columns": pl.List(pl.String()),
    "event_dates": pl.List(pl.Date()),
    "rejected_to": pl.String(),
    "duplicate_of": pl.String(),
    "batch_id": pl.String(),
    "ingested_at": pl.Datetime("us", "UTC"),
}

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "_stage": pl.String(),
    RULE: pl.String(),
    REASON: pl.String(),
    RECORD: pl.String(),
    "_source_file": pl.String(),
    "_source_sha256": pl.String(),
    ROW: pl.Int64(),
    "_batch_id": pl.String(),
    "_quarantined_at": pl.Datetime("us", "UTC"),
    EVENT_DATE: pl.Date(),
}


@dataclass
class FileOutcome:
    file: str
    sha256: str
    outcome: str
    rows_ingested: int = 0
    rows_quarantined: int = 0
    error: str | None = None
    new_columns: list[str] = field(default_factory=list)
    event_dates: list[dt.date] = field(default_factory=list)
    rejected_to: str | None = None
    duplicate_of: str | None = None
    #: Share of the file's rows that went (or, when it is over the limit, would have gone) to quarantine; None if not typed.
    quarantine_share: float | None = None

    @property
    def over_limit(self) -> bool:
        """Rejected because too many of its rows went to quarantine (see :mod:`aiflow.data.quarantine_limit`)."""
        return self.outcome == REJECTED and self.quarantine_share is not None


@dataclass
class IngestReport:
    table: str
    batch_id: str
    landing: str = ""
    files: list[FileOutcome] = field(default_factory=list)
    files_listed: int = 0
    bronze_version: int | None = None
    ledger_version: int | None = None
    quarantine_version: int | None = None
    batches_repaired: int = 0

    def count(self, outcome: str) -> int:
        return sum(f.outcome == outcome for f in self.files)

    @property
    def over_limit(self) -> list[FileOutcome]:
        """Files rejected because more of their rows than the table's ``max_quarantined_share`` went to quarantine."""
        return [f for f in self.files if f.over_limit]

    @property
    def rows_ingested(self) -> int:
        return sum(f.rows_ingested for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        return sum(f.rows_quarantined for f in self.files)

    @property
    def new_columns(self) -> list[str]:
        return sorted({c for f in self.files for c in f.new_columns})

    @property
    def event_dates(self) -> list[dt.date]:
        return sorted({d for f in self.files for d in f.event_dates})

    def summary(self) -> str:
        """One line saying what the run did and where it looked."""
        if not self.files_listed:
            return f"{self.table}: no files in landing zone {self.landing}: bronze unchanged"
        if not self.files:
            return f"{self.table}: {self.files_listed} file(s) in {self.landing}, none new: bronze unchanged"
        return (
            f"{self.table}: {len(self.files)} file(s) from {self.landing}: {self.count(INGESTED)} ingested "
            f"({self.rows_ingested} rows, {self.rows_quarantined} quarantined), {self.count(DUPLICATE)} duplicate, "
            f"{self.count(REJECTED)} rejected"
        )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recorded_files(lake: Lake, table: TableSpec) -> set[tuple[str, int, dt.datetime]]:
    """(name, size, modification time) of every file the ledger has recorded."""
    ledger = Tables.ledger(table.name)
    if not lake.exists(ledger):
        return set()
    frame = lake.scan(ledger).select("file", "size_bytes", "modified").unique().collect()
    return set(frame.iter_rows())


def unrecorded_files(lake: Lake, table: TableSpec, files: Sequence[LandedFile]) -> list[LandedFile]:
    """The ``files`` the ledger does not hold unchanged (new names, or known names with a new size or mtime).

    What the landing sensor asks before requesting a file: the ledger, not the sensor's cursor, is the
    record of every file ever seen.
    """
    known = recorded_files(lake, table)
    return [f for f in files if (f.name, f.size, f.modified) not in known]


# ------------------------------------------------------------------------- claims and the index
def _ledger_state(lake: Lake, table: TableSpec) -> tuple[dict[str, tuple[str, str]], set[str], int | None]:
    """What the ledger (the index) holds: sha256 → (file, batch) of ingested files, the batches indexed, and
    the bronze version through which every batch commit is known to be indexed (None: from the start)."""
    ledger = Tables.ledger(table.name)
    if not lake.exists(ledger):
        return {}, set(), None
    # one ledger version for both the entries and the marks: a mark committed after the entries were read
    # would claim bronze commits as indexed whose entries this reader never saw (a reasoned race, not observed;
    # the observed one was delta-rs mislabelling history, see Lake.history). Marks pushed out of the last 20
    # commits only make it re-read more.
    version = lake.version(ledger)
    recent = lake.history(ledger, since=max(version - 19, 0))  # first: the handle at the head then serves the scan
    frame = lake.read(ledger, version, ["sha256", "file", "batch_id", "outcome"])
    done = frame.filter(pl.col("outcome") == INGESTED)
    owners = {h: (f, b) for h, f, b in zip(done["sha256"], done["file"], done["batch_id"], strict=True)}
    marks = [int(c[META + INDEXED_THROUGH]) for c in recent if META + INDEXED_THROUGH in c and c["version"] <= version]
    return owners, set(frame["batch_id"]), max(marks) if marks else None


def commit_entries(commit: dict) -> pl.DataFrame | None:
    """The ledger entries a bronze commit recorded (its ``aiflow.ledger`` metadata); None for other commits."""
    raw = commit.get(META + ENTRIES)
    return None if raw is None else pl.read_json(io.StringIO(raw), schema=LEDGER_SCHEMA)


def _resolve(entries: pl.DataFrame, owners: dict[str, tuple[str, str]]) -> pl.DataFrame:
    """Apply "the earliest commit that records a content hash owns it" to one commit's entries.

    Commits are taken oldest first. An ``ingested`` entry whose hash another batch owns already becomes a
    ``duplicate`` of that file; the others are added to ``owners``.
    """
    rows = entries.to_dicts()
    for row in rows:
        if row["outcome"] != INGESTED:
            continue
        owner = owners.get(row["sha256"])
        if owner is None or owner[1] == row["batch_id"]:
            owners[row["sha256"]] = (row["file"], row["batch_id"])
            continue
        row.update(outcome=DUPLICATE, duplicate_of=owner[0], rows_ingested=0, rows_quarantined=0, event_dates=[], new_columns=[])
    return pl.DataFrame(rows, schema=LEDGER_SCHEMA)


class _Claims:
    """Content hashes owned by committed batches, as of bronze version ``through``."""

    def __init__(self, lake: Lake, table: TableSpec, owners: dict[str, tuple[str, str]], through: int | None):
        self.lake, self.table, self.owners, self.through = lake, table, owners, through

    @classmethod
    def load(cls, lake: Lake, table: TableSpec) -> _Claims:
        owners, _, through = _ledger_state(lake, table)
        return cls(lake, table, owners, through)

    def advance(self, until: int | None) -> list[tuple[int, str, pl.DataFrame]]:
        """Take in the bronze commits up to version ``until``; return (version, batch, resolved entries) of each."""
        if until is None or (self.through is not None and until <= self.through):
            return []
        found = []
        for commit in self.lake.commits(Tables.bronze(self.table.name), self.through, until):
            entries = commit_entries(commit)
            if entries is not None:
                found.append((commit["version"], commit[META + "batch_id"], _resolve(entries, self.owners)))
        self.through = until
        return found


def seen_hashes(lake: Lake, table: TableSpec) -> dict[str, str]:
    """sha256 → file name of every file already ingested (the ledger and bronze commits not yet in it).

    Rejected content is not in it: named again (say after the spec was fixed), it is parsed again.
    """
    claims = _Claims.load(lake, table)
    claims.advance(lake.version(Tables.bronze(table.name)))
    return {h: f for h, (f, _) in claims.owners.items()}


def repair(lake: Lake, landing: LandingZone, table: TableSpec) -> int:
    """Finish batches whose bronze commit happened but whose process stopped before its ledger commit.

    Writes each such batch's quarantine rows (staged in the lake before its bronze commit; for a batch
    committed without them, read again from its landing files, checked against their SHA-256) and its
    ledger entries (from the bronze commit's metadata). Both writes replace the batch's
    rows, so a repair racing the batch's own process, or another repair, leaves one copy.

    Returns:
        The number of batches repaired.

    Raises:
        QuarantineLost: a batch's quarantined rows are neither staged nor in its landing files any more.
    """
    return _repair(lake, landing, table)[0]


def _repair(lake: Lake, landing: LandingZone, table: TableSpec) -> tuple[int, int | None, _Claims | None]:
    """:func:`repair`; also returns the bronze version through which every batch is now in the ledger, and
    the claims read on the way (taken in through that version) when nothing was repaired, else None."""
    bronze = Tables.bronze(table.name)
    if not lake.exists(bronze):
        return 0, None, None
    current = lake.version(bronze)
    owners, indexed, through = _ledger_state(lake, table)
    claims = _Claims(lake, table, owners, through)
    repaired = 0
    for _, batch, entries in claims.advance(current):
        if batch in indexed:
            continue
        log.warning("%s: batch %s is in bronze but not in the ledger (its run stopped): repairing", table.name, batch)
        try:
            quarantine = _quarantine_again(lake, landing, table, batch, entries)
        except QuarantineLost:
            if batch in _ledger_state(lake, table)[1]:  # its own run (or another repair) finished it meanwhile
                continue
            raise
        _write_quarantine(lake, table, batch, quarantine)
        _write_ledger(lake, table, batch, entries, current)
        unstage(lake, table.name, batch)
        repaired += 1
    for batch in set(staged_batches(lake, table.name)) & indexed:  # a run stopped between its ledger commit and the unstage
        unstage(lake, table.name, batch)
    # a repair rewrote the ledger: the claims are read again from it (rare); otherwise the ledger is as read
    return repaired, current, None if repaired else claims


class QuarantineLost(RuntimeError):
    """Quarantined rows of a committed batch are neither staged in the lake nor in their landing files any more."""


def _quarantine_again(lake: Lake, landing: LandingZone, table: TableSpec, batch: str, entries: pl.DataFrame) -> pl.DataFrame | None:
    """The ingest-stage quarantine rows of a committed batch: those staged in the lake before its bronze commit (see
    :mod:`aiflow.data.quarantine_stage`), else (a batch committed before rows were staged) typed again from its landing files.

    Raises:
        QuarantineLost: some file's rows are in neither place; the batch stays unfinished (not in the ledger).
    """
    wanted = entries.filter((pl.col("outcome") == INGESTED) & (pl.col("rows_quarantined") > 0))
    if not wanted.height:
        return None
    frames, missing = [], wanted
    rows = staged(lake, table.name, batch)
    if rows is not None:
        counts = dict(rows.group_by("_source_sha256").len().iter_rows())
        complete = [h for h, n in zip(wanted["sha256"], wanted["rows_quarantined"], strict=True) if counts.get(h) == n]
        frames.append(rows.filter(pl.col("_source_sha256").is_in(complete)))
        missing = wanted.filter(~pl.col("sha256").is_in(complete))
    if missing.height:
        frames.append(_quarantine_from_landing(landing, table, batch, missing))
    frame = pl.concat(frames, how="vertical_relaxed").select(list(QUARANTINE_SCHEMA)).cast(QUARANTINE_SCHEMA)
    return frame if frame.height else None


def _quarantine_from_landing(landing: LandingZone, table: TableSpec, batch: str, wanted: pl.DataFrame) -> pl.DataFrame:
    """The quarantine rows of ``wanted`` files of a committed batch, typed again from the landing files (same SHA-256)."""
    chunk = _Chunk(None, table, batch, now=wanted["ingested_at"][0])
    listed = {f.name: f for f in landing.list()}
    lost = []
    for entry in wanted.iter_rows(named=True):
        file = listed.get(entry["file"])
        data = landing.read_bytes(file.name) if file is not None else None
        if data is None or sha256(data) != entry["sha256"]:
            lost.append(f"{entry['file']} ({entry['rows_quarantined']} rows, SHA-256 {entry['sha256']})")
            continue
        chunk.add_file(file, data, entry["sha256"], landing)
    if lost:
        raise QuarantineLost(
            f"{table.name}: batch {batch} is in bronze, but the quarantined rows of {', '.join(lost)} are neither staged in "
            f"the lake nor rebuildable from {landing.uri} (the file is gone or holds other bytes). Land each file again "
            f"with those bytes under its name and run the ingestion again; until then the batch stays unfinished."
        )
    chunk._type_pending()
    frame = chunk.quarantine_frame()  # None when the spec, changed since the batch, quarantines none of these rows now
    frame = pl.DataFrame(schema=QUARANTINE_SCHEMA) if frame is None else frame
    found = dict(frame.group_by("_source_sha256").len().iter_rows())
    changed = [
        f"{e['file']} ({found.get(e['sha256'], 0)} of {e['rows_quarantined']} rows)"
        for e in wanted.iter_rows(named=True)
        if found.get(e["sha256"], 0) != e["rows_quarantined"]
    ]
    if changed:
        log.warning(
            "%s: batch %s: typed again from %s under the current spec, these files give other quarantined rows than the "
            "batch recorded: %s",
            table.name, batch, landing.uri, ", ".join(changed),
        )  # fmt: skip
    return frame


def _write_quarantine(lake: Lake, table: TableSpec, batch: str, frame: pl.DataFrame | None) -> int | None:
    """Replace the batch's ingest-stage quarantine rows with ``frame`` (idempotent: a repeat leaves one copy)."""
    if frame is None or not frame.height:
        return None
    where = f"_stage = 'ingest' AND _batch_id = '{batch}'"
    return lake.replace_where(Tables.quarantine(table.name), frame, where, metadata={"batch_id": batch})


def _write_ledger(lake: Lake, table: TableSpec, batch: str, entries: pl.DataFrame, indexed_through: int | None) -> int:
    """Replace the batch's ledger entries (idempotent), recording how far the index is known complete."""
    metadata: dict[str, object] = {"batch_id": batch}
    if indexed_through is not None:
        metadata[INDEXED_THROUGH] = str(indexed_through)
    return lake.replace_where(Tables.ledger(table.name), entries, f"batch_id = '{batch}'", metadata=metadata)


def _after_commit(point: str) -> None:
    """Test hook: ``AIFLOW_TEST_KILL_AFTER=<point>`` kills this process with SIGKILL right after that commit.

    Only there so that fault tests can place a ``kill -9`` deterministically (points, in order: staged — the batch's
    quarantine rows written to the staging area, bronze not yet committed —, bronze, quarantine, ledger).
    """
    if os.environ.get(KILL_AFTER_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _before_claim() -> None:
    """Test hook: ``AIFLOW_TEST_BARRIER=<dir>:<n>`` waits before the first bronze commit until n processes got there.

    Only there so that a concurrency test makes two ingestions commit from the same snapshot.
    """
    spec = os.environ.pop(BARRIER_ENV, None)
    if not spec:
        return
    folder, count = spec.rsplit(":", 1)
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(Path(folder).iterdir())) < int(count) and time.monotonic() < deadline:
        time.sleep(0.01)


# ------------------------------------------------------------------------------------ ingestion
class IngestConflict(RuntimeError):
    """Other ingestions kept committing the same files first."""


def ingest(
    lake: Lake,
    landing: LandingZone,
    table: TableSpec,
    files: Sequence[str] | None = None,
    *,
    chunk_rows: int = 1_000_000,
    batch_id: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Ingest landed files into ``bronze/<table>``, each content exactly once (see the module docstring).

    Args:
        lake: where the tables live.
        landing: the zone the files are in.
        table: the table spec.
        files: names (relative to the zone) to ingest, even if seen before (the hash decides);
            None means every file in the zone that the ledger does not already hold unchanged.
        chunk_rows: rows buffered before a commit; bounds memory.
        batch_id: id recorded on every row and ledger entry; generated when None.
        on_progress: called with (files done, files total).

    Raises:
        FileNotFoundError: a named file is not in the landing zone.
        IngestConflict: other ingestions kept taking this chunk's files first (``CLAIM_ATTEMPTS`` times).
    """
    batch_id = batch_id or f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    report = IngestReport(table=table.name, batch_id=batch_id, landing=landing.uri)
    lake.prefetch(Tables.bronze(table.name), Tables.ledger(table.name), Tables.quarantine(table.name))
    report.batches_repaired, indexed, claims = _repair(lake, landing, table)
    listed = {f.name: f for f in landing.list()}
    report.files_listed = len(listed)
    if files is None:
        # every file, except those the ledger already holds unchanged (same name, size and mtime)
        known = recorded_files(lake, table)
        todo = [f for f in listed.values() if (f.name, f.size, f.modified) not in known]
    else:
        missing = [n for n in files if n not in listed]
        if missing:
            raise FileNotFoundError(f"not in landing zone {landing.uri}: {', '.join(missing)}")
        todo = [listed[n] for n in sorted(set(files))]
    if todo:
        # the claims the repair read (one ledger read per run, ~0.3 ms per ledger file), taken on to bronze's head
        claims = claims or _Claims.load(lake, table)
        claims.advance(lake.version(Tables.bronze(table.name)))
        limit = table.landing.max_quarantined_share
        chunk = _Chunk(lake, table, f"{batch_id}-0000", indexed_through=indexed, limit=limit)
        taken: dict[str, tuple[str, str]] = {}
        for i, file in enumerate(todo):
            data = landing.read_bytes(file.name)
            digest = sha256(data)
            owner = claims.owners.get(digest) or taken.get(digest)
            if owner is not None:
                chunk.add_outcome(file, FileOutcome(file.name, digest, DUPLICATE, duplicate_of=owner[0]))
            else:
                taken[digest] = (file.name, chunk.batch_id)  # a second copy in this run is a duplicate
                chunk.add_file(file, data, digest, landing)
            if chunk.rows >= chunk_rows:
                report.files += chunk.commit(report, claims)
                chunk = _Chunk(lake, table, f"{batch_id}-{len(report.files):04d}", indexed_through=indexed, limit=limit)
            if on_progress:
                on_progress(i + 1, len(todo))
        report.files += chunk.commit(report, claims)
    log.info("%s", report.summary())
    return report


class _Chunk:
    """Files buffered for one batch: one bronze commit (the commit point), then quarantine and ledger."""

    def __init__(
        self,
        lake: Lake | None,
        table: TableSpec,
        batch_id: str,
        now: dt.datetime | None = None,
        indexed_through: int | None = None,
        limit: float | None = None,
    ):
        """``limit``: the quarantine share over which a file is rejected whole (None: no limit, for rebuilding a batch)."""
        self.lake, self.table, self.batch_id, self.indexed_through, self.limit = lake, table, batch_id, indexed_through, limit
        self.landing: LandingZone | None = None
        self.now = now or dt.datetime.now(dt.UTC)
        self.good: list[pl.DataFrame] = []
        self.bad: list[pl.DataFrame] = []
        self.outcomes: list[tuple[LandedFile, FileOutcome | None]] = []
        self.pending: dict[tuple, list[tuple[int, LandedFile, str, pl.DataFrame]]] = {}
        self.rows = 0

    def add_outcome(self, file: LandedFile, outcome: FileOutcome) -> None:
        self.outcomes.append((file, outcome))

    def add_file(self, file: LandedFile, data: bytes, digest: str, landing: LandingZone) -> None:
        """Read the file now (rejecting it if unusable); type and validate it with its chunk at commit.

        Typing, validation and lineage run once per chunk, over every file of the same columns and
        types, rather than once per file: with daily files of ~1,000 rows the fixed cost of a
        per-file pass dominated ingestion (benchmarks/README.md).
        """
        fmt = file.format
        self.landing = landing
        try:
            if fmt is None:
                raise RejectedFile(f"{file.name}: unknown file type (expected .csv, .parquet or .jsonl)")
            raw = read_file(data, fmt, self.table, file.name)
        except RejectedFile as exc:
            where = landing.reject(file.name, self.batch_id, str(exc))
            log.warning("rejected %s: %s (kept at %s)", file.name, exc, where)
            self.add_outcome(file, FileOutcome(file.name, digest, REJECTED, error=str(exc), rejected_to=where))
            return
        slot = len(self.outcomes)
        self.outcomes.append((file, None))  # filled in by _type_pending, keeping the files' order
        self.pending.setdefault(tuple(raw.schema.items()), []).append((slot, file, digest, raw))
        self.rows += raw.height

    def _type_pending(self) -> None:
        """Type, validate and add lineage to the files read, one pass per group of identical schemas."""
        for entries in self.pending.values():
            frames = [raw for *_, raw in entries]
            index = pl.Series("__f", np.repeat(np.arange(len(frames), dtype=np.uint32), [f.height for f in frames]))
            raw = pl.concat(frames).with_columns(index).with_columns((pl.int_range(pl.len(), dtype=pl.Int64).over("__f") + 1).alias(ROW))
            good, bad, new_columns = split_typed(raw, self.table, keep=("__f",))
            names = pl.Series([file.name for _, file, _, _ in entries])
            digests = pl.Series([digest for _, _, digest, _ in entries])

            def lineage(frame: pl.DataFrame, names: pl.Series = names, digests: pl.Series = digests) -> pl.DataFrame:
                return frame.with_columns(
                    pl.lit(names).gather(pl.col("__f")).alias("_source_file"),
                    pl.lit(digests).gather(pl.col("__f")).alias("_source_sha256"),
                    pl.lit(self.batch_id).alias("_batch_id"),
                    pl.lit(self.now, pl.Datetime("us", "UTC")).alias("_ingested_at"),
                )

            good, bad = lineage(good), lineage(bad)
            stats: dict[int, dict] = {}
            for which, frame in (("good", good), ("bad", bad)):
                per_file = frame.group_by("__f").agg(pl.len().alias("n"), pl.col(EVENT_DATE).drop_nulls().unique().alias("dates"))
                for f, n, dates in per_file.iter_rows():
                    entry = stats.setdefault(f, {"good": 0, "bad": 0, "dates": set()})
                    entry[which] = n
                    entry["dates"].update(dates)
            self.good.append(good.drop("__f"))
            self.bad.append(
                bad.drop("__f", "_ingested_at").with_columns(
                    pl.lit("ingest").alias("_stage"), pl.lit(self.now, pl.Datetime("us", "UTC")).alias("_quarantined_at")
                )
            )
            if new_columns:
                log.warning("new column(s) %s kept as strings (in %s)", new_columns, ", ".join(names.to_list()))
            for i, (slot, file, digest, _) in enumerate(entries):
                st = stats.get(i, {"good": 0, "bad": 0, "dates": set()})
                total = st["good"] + st["bad"]
                share = st["bad"] / total if total else 0.0
                if self.limit is not None and share > self.limit:
                    self.outcomes[slot] = (file, self._reject_over_limit(file, digest, st["good"], bad.filter(pl.col("__f") == i), share))
                    continue
                self.outcomes[slot] = (
                    file,
                    FileOutcome(file.name, digest, INGESTED, st["good"], st["bad"], None, list(new_columns), sorted(st["dates"]),
                                quarantine_share=share),
                )  # fmt: skip
        self.pending = {}

    def _reject_over_limit(self, file: LandedFile, digest: str, good: int, bad: pl.DataFrame, share: float) -> FileOutcome:
        """Reject a file whose rows mostly went to quarantine: none of its rows is committed, it stays re-landable."""
        why = over_limit(file.name, good, bad, self.limit)
        where = self.landing.reject(file.name, self.batch_id, why)
        log.error("rejected %s: %s (kept at %s)", file.name, why, where)
        return FileOutcome(file.name, digest, REJECTED, error=why, rejected_to=where, quarantine_share=share)

    def ingested(self) -> list[str]:
        return [o.sha256 for _, o in self.outcomes if o.outcome == INGESTED]

    def bronze_frame(self) -> pl.DataFrame | None:
        """The rows of the files still to be ingested (None if there are none at all)."""
        if not self.good:
            return None
        frame = pl.concat(self.good, how="diagonal_relaxed")
        return frame.filter(pl.col("_source_sha256").is_in(self.ingested()))

    def quarantine_frame(self) -> pl.DataFrame | None:
        bad = [b for b in self.bad if b.height]
        if not bad:
            return None
        frame = pl.concat(bad, how="diagonal_relaxed").select(list(QUARANTINE_SCHEMA)).cast(QUARANTINE_SCHEMA)
        return frame.filter(pl.col("_source_sha256").is_in(self.ingested()))

    def _take_back(self, owners: dict[str, tuple[str, str]]) -> list[str]:
        """Mark files another batch owns as its duplicates; return their hashes."""
        lost = []
        for i, (file, o) in enumerate(self.outcomes):
            owner = owners.get(o.sha256)
            if o.outcome == INGESTED and owner is not None and owner[1] != self.batch_id:
                self.outcomes[i] = (file, FileOutcome(o.file, o.sha256, DUPLICATE, duplicate_of=owner[0]))
                lost.append(o.sha256)
        return lost

    def ledger_rows(self) -> pl.DataFrame:
        rows = [
            {
                "file": f.name,
                "uri": f.uri,
                "sha256": o.sha256,
                "size_bytes": f.size,
                "modified": f.modified,
                "format": f.format,
                "outcome": o.outcome,
                "rows_ingested": o.rows_ingested,
                "rows_quarantined": o.rows_quarantined,
                "error": o.error,
                "new_columns": o.new_columns,
                "event_dates": o.event_dates,
                "rejected_to": o.rejected_to,
                "duplicate_of": o.duplicate_of,
                "batch_id": self.batch_id,
                "ingested_at": self.now,
            }
            for f, o in self.outcomes
        ]
        return pl.DataFrame(rows, schema=LEDGER_SCHEMA)

    def _commit_bronze(self, report: IngestReport, claims: _Claims) -> None:
        """The commit point: add the rows with the batch's ledger entries, unless another writer took the files."""
        bronze = Tables.bronze(self.table.name)
        for _ in range(CLAIM_ATTEMPTS):
            snapshot = self.lake.version(bronze)
            claims.advance(snapshot)  # batches committed since this run read the ledger own their files
            self._take_back(claims.owners)
            if not self.ingested():
                return
            _before_claim()
            rows = self.bronze_frame()
            if rows is None:
                rows = pl.DataFrame(schema={"_source_sha256": pl.String(), EVENT_DATE: pl.Date()})
            dates = sorted(set(rows[EVENT_DATE].drop_nulls()))
            # the claim: rows with this batch's hashes on its dates (partitions or file statistics keep its read small)
            on_dates = f"{EVENT_DATE} IN ({', '.join(repr(d.isoformat()) for d in dates)})" if dates else "false"
            if rows[EVENT_DATE].null_count():
                on_dates = f"({on_dates} OR {EVENT_DATE} IS NULL)"
            claim = f"{on_dates} AND _source_sha256 IN ({', '.join(repr(h) for h in self.ingested())})"
            metadata = {"batch_id": self.batch_id, ENTRIES: self.ledger_rows().write_json(), "dates": [d.isoformat() for d in dates]}
            try:
                partition_by = partition_columns(self.table.partitioning)
                version = self.lake.add_claiming(bronze, rows, claim, read_version=snapshot, partition_by=partition_by, metadata=metadata)
            except CommitFailedError as exc:
                log.info(
                    "%s: another ingestion committed some of batch %s's files first (%s); re-reading", self.table.name, self.batch_id, exc
                )
                continue
            report.bronze_version = version
            self._settle(claims, snapshot, version)
            return
        raise IngestConflict(f"{self.table.name}: batch {self.batch_id} lost its files to other ingestions {CLAIM_ATTEMPTS} times")

    def _settle(self, claims: _Claims, snapshot: int | None, version: int) -> None:
        """After the commit: a batch that committed between ``snapshot`` and ``version`` without conflicting
        (files whose rows all went to quarantine) owns its hashes; this batch's claims on them become duplicates."""
        before = claims.through
        if version - 1 > (before if before is not None else -1):
            claims.advance(version - 1)
        lost = self._take_back(claims.owners)
        for digest in self.ingested():
            claims.owners[digest] = (next(o.file for _, o in self.outcomes if o.sha256 == digest), self.batch_id)
        claims.through = version
        if lost:
            # only possible when the two runs typed the same file differently (the spec changed between them)
            removed = self.lake.delete(
                Tables.bronze(self.table.name), f"_batch_id = '{self.batch_id}' AND _source_sha256 IN ({', '.join(repr(h) for h in lost)})"
            )
            log.warning(
                "%s: batch %s lost %d file(s) to an earlier batch; %d rows removed", self.table.name, self.batch_id, len(lost), removed
            )

    def commit(self, report: IngestReport, claims: _Claims) -> list[FileOutcome]:
        """Commit the batch: bronze (the commit point), then its quarantine rows, then its ledger entries.

        A failure before the bronze commit leaves every table as it was; one after it leaves a committed
        batch that the next ingestion's :func:`repair` completes.
        """
        if not self.outcomes:
            return []
        self._type_pending()
        quarantine = self.quarantine_frame()
        if self.ingested():
            if quarantine is not None:  # in the lake before the commit that claims them: no landing file needed after it
                stage(self.lake, self.table.name, self.batch_id, quarantine)
                _after_commit("staged")
            self._commit_bronze(report, claims)
            _after_commit("bronze")
            quarantine = self.quarantine_frame()  # files other ingestions took first are no longer this batch's
        version = _write_quarantine(self.lake, self.table, self.batch_id, quarantine)
        if version is not None:
            report.quarantine_version = version
        _after_commit("quarantine")
        report.ledger_version = _write_ledger(self.lake, self.table, self.batch_id, self.ledger_rows(), self.indexed_through)
        _after_commit("ledger")
        if quarantine is not None:
            unstage(self.lake, self.table.name, self.batch_id)
        return [o for _, o in self.outcomes]
