"""Landing → bronze: idempotent, incremental ingestion with lineage, a ledger and a quarantine.

Each file is hashed; a ledger (a Delta table) records every file seen, its SHA-256, row counts and
outcome, so the same content ingested twice (re-dropped or renamed) adds no row. Files are taken in
chunks; each chunk is three Delta commits (bronze, quarantine, ledger). The ledger is the commit
point: readers only see rows of batches in the ledger; if anything fails before it, the chunk's
bronze and quarantine rows are deleted again, and rows left by a process killed mid-chunk are
removed by a later run once they are older than a grace period, so a re-run ingests every file
exactly once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from aiflow.data.parse import REASON, RECORD, ROW, RULE, RejectedFile, read_file, split_typed
from aiflow.spec import EVENT_DATE, TableSpec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LandedFile, LandingZone

log = logging.getLogger(__name__)

INGESTED, DUPLICATE, REJECTED = "ingested", "duplicate", "rejected"

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


@dataclass
class IngestReport:
    table: str
    batch_id: str
    files: list[FileOutcome] = field(default_factory=list)
    bronze_version: int | None = None
    ledger_version: int | None = None
    quarantine_version: int | None = None
    orphans_removed: int = 0

    def count(self, outcome: str) -> int:
        return sum(f.outcome == outcome for f in self.files)

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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seen_hashes(lake: Lake, table: TableSpec) -> dict[str, str]:
    """sha256 → file name of every file already ingested.

    Rejected content is not in it: named again (say after the spec was fixed), it is parsed again.
    """
    ledger = Tables.ledger(table.name)
    if not lake.exists(ledger):
        return {}
    done = lake.scan(ledger).filter(pl.col("outcome") == INGESTED).select("sha256", "file").collect()
    return dict(zip(done["sha256"], done["file"], strict=True))


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


#: A chunk whose bronze commit is older than this and still has no ledger entry was left by a killed
#: process. Younger ones may belong to an ingestion running right now, so they are left alone
#: (readers ignore rows of batches that are not in the ledger either way).
ORPHAN_GRACE = dt.timedelta(hours=1)


def remove_orphans(lake: Lake, table: TableSpec, older_than: dt.timedelta = ORPHAN_GRACE) -> int:
    """Delete bronze/quarantine rows of chunks that never reached the ledger (a killed process)."""
    ledger = Tables.ledger(table.name)
    committed = set()
    if lake.exists(ledger):
        committed = set(lake.scan(ledger).select("batch_id").unique().collect()["batch_id"])
    cutoff_ms = (dt.datetime.now(dt.UTC) - older_than).timestamp() * 1000
    removed = 0
    for name in (Tables.bronze(table.name), Tables.quarantine(table.name)):
        if not lake.exists(name):
            continue
        recent = lake.table(name).history(limit=50)
        stale = {c.get("aiflow.batch_id") for c in recent if c.get("timestamp", 0) <= cutoff_ms} - {None}
        for batch in sorted(stale - committed):
            count = lake.delete(name, f"_batch_id = '{batch}'")
            if count:
                log.warning("removed %d rows of unfinished batch %s from %s", count, batch, name)
            removed += count
    return removed


def ingest(
    lake: Lake,
    landing: LandingZone,
    table: TableSpec,
    files: Sequence[str] | None = None,
    *,
    chunk_rows: int = 1_000_000,
    batch_id: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    orphan_grace: dt.timedelta = ORPHAN_GRACE,
) -> IngestReport:
    """Ingest landed files into ``bronze/<table>``.

    Args:
        lake: where the tables live.
        landing: the zone the files are in.
        table: the table spec.
        files: names (relative to the zone) to ingest, even if seen before (the hash decides);
            None means every file in the zone that the ledger does not already hold unchanged.
        chunk_rows: rows buffered before a commit; bounds memory.
        batch_id: id recorded on every row and ledger entry; generated when None.
        on_progress: called with (files done, files total).
        orphan_grace: rows of un-ledgered chunks older than this are removed first (see ``remove_orphans``).
    """
    batch_id = batch_id or f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    report = IngestReport(table=table.name, batch_id=batch_id)
    report.orphans_removed = remove_orphans(lake, table, orphan_grace)
    listed = {f.name: f for f in landing.list()}
    if files is None:
        # every file, except those the ledger already holds unchanged (same name, size and mtime)
        known = recorded_files(lake, table)
        todo = [f for f in listed.values() if (f.name, f.size, f.modified) not in known]
    else:
        missing = [n for n in files if n not in listed]
        if missing:
            raise FileNotFoundError(f"not in landing zone {landing.uri}: {', '.join(missing)}")
        todo = [listed[n] for n in sorted(set(files))]
    seen = seen_hashes(lake, table)

    chunk: _Chunk = _Chunk(lake, table, f"{batch_id}-0000")
    for i, file in enumerate(todo):
        data = landing.read_bytes(file.name)
        digest = sha256(data)
        if digest in seen:
            outcome = FileOutcome(file.name, digest, DUPLICATE, duplicate_of=seen[digest])
            chunk.add_outcome(file, outcome)
        else:
            seen[digest] = file.name
            chunk.add_file(file, data, digest, landing)
        if chunk.rows >= chunk_rows:
            report.files += chunk.commit(report)
            chunk = _Chunk(lake, table, f"{batch_id}-{len(report.files):04d}")
        if on_progress:
            on_progress(i + 1, len(todo))
    report.files += chunk.commit(report)
    return report


class _Chunk:
    """Files buffered for one set of commits."""

    def __init__(self, lake: Lake, table: TableSpec, batch_id: str):
        self.lake, self.table, self.batch_id = lake, table, batch_id
        self.now = dt.datetime.now(dt.UTC)
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
                self.outcomes[slot] = (
                    file,
                    FileOutcome(file.name, digest, INGESTED, st["good"], st["bad"], None, list(new_columns), sorted(st["dates"])),
                )
        self.pending = {}

    def _ledger_rows(self) -> pl.DataFrame:
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

    def commit(self, report: IngestReport) -> list[FileOutcome]:
        """Write bronze, quarantine, then the ledger; undo the first two if anything fails.

        The undo restores the version before this chunk's commit when nothing was committed since
        (schema changes included); if another writer committed meanwhile, it deletes only this
        chunk's rows (by batch id), so the other writer's commit is never undone.
        """
        if not self.outcomes:
            return []
        self._type_pending()
        lake, name = self.lake, self.table.name
        written: list[tuple[str, int]] = []
        meta = {"batch_id": self.batch_id}
        try:
            if self.good:
                bronze = Tables.bronze(name)
                report.bronze_version = lake.append(
                    bronze, pl.concat(self.good, how="diagonal_relaxed"), partition_by=[EVENT_DATE], metadata=meta
                )
                written.append((bronze, report.bronze_version))
            bad = [b for b in self.bad if b.height]
            if bad:
                quarantine = Tables.quarantine(name)
                frame = pl.concat(bad, how="diagonal_relaxed").select(list(QUARANTINE_SCHEMA)).cast(QUARANTINE_SCHEMA)
                report.quarantine_version = lake.append(quarantine, frame, metadata=meta)
                written.append((quarantine, report.quarantine_version))
            report.ledger_version = lake.append(Tables.ledger(name), self._ledger_rows(), metadata=meta)
        except BaseException:
            for table_name, version in reversed(written):
                try:
                    if version > 0 and lake.version(table_name) == version:
                        lake.restore(table_name, version - 1)
                    else:
                        lake.delete(table_name, f"_batch_id = '{self.batch_id}'")
                except Exception:
                    log.exception("could not remove batch %s from %s", self.batch_id, table_name)
            raise
        return [o for _, o in self.outcomes]
