"""The lake: every table is a Delta table under one root (a local folder or an s3:// prefix).

Writes go through delta-rs (one atomic commit each); reads are lazy Polars scans. Overwrites retry on
commit conflicts, so concurrent runs never corrupt a table.

**Partitioning.** A table is created with the partitions its spec asks for (``partitioning``: ``month``
adds an ``event_month`` partition column, ``day`` partitions by ``event_date``, ``none`` has no partition
column); every later write follows what the table was created with, read from its Delta metadata, so
lakes written with daily partitions keep working. Unpartitioned tables get their rows sorted by
``event_date``, so each file's (and row group's) statistics cover a narrow date range and date filters
(Polars, delta-rs predicates) skip the others; partitioned tables are pruned by partition first. ``event_date`` is a regular column everywhere; ``event_month``
is a storage detail that :meth:`Lake.scan` leaves out.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from aiflow.spec import EVENT_DATE, EVENT_MONTH, Partitioning
from aiflow.storage import rewrite

#: Prefix of the custom commit metadata the engine writes (watermarks, dates touched).
META = "aiflow."
#: Metadata key (after :data:`META`) of the engine's own maintenance commits (rows unchanged).
MAINTENANCE = "maintenance"

#: Properties of every table the engine creates. A checkpoint every 10 commits (delta-rs: 100) keeps
#: opening a table cheap: each open replays the commits since the last checkpoint, and a daily
#: ingest + refresh opens ~30 tables (benchmarks/README.md, incremental cost).
TABLE_PROPERTIES = {"delta.checkpointInterval": "10"}

#: Partition columns of a table created with each ``partitioning`` of the spec.
PARTITION_COLUMNS: dict[str, list[str]] = {"none": [], "month": [EVENT_MONTH], "day": [EVENT_DATE]}
#: Partition columns the lake derives from ``event_date`` when it writes (never part of a stage's output).
DERIVED_COLUMNS = {EVENT_MONTH: lambda: pl.col(EVENT_DATE).dt.truncate("1mo")}
#: Threads :meth:`Lake.prefetch` opens tables with.
PREFETCH_THREADS = 4
#: Files maintenance compacts to (delta-rs ``optimize.compact(target_size=...)``).
TARGET_FILE_BYTES = 128 * 2**20

_retry_conflicts = retry(
    retry=retry_if_exception_type(CommitFailedError),
    stop=stop_after_attempt(8),
    wait=wait_random_exponential(multiplier=0.05, max=2),
    reraise=True,
)


class Tables:
    """Names of a dataset's tables under the lake root: one place, so no stage spells them twice."""

    @staticmethod
    def bronze(name: str) -> str:
        return f"bronze/{name}"

    @staticmethod
    def silver(name: str) -> str:
        return f"silver/{name}"

    @staticmethod
    def features(name: str) -> str:
        return f"features/{name}"

    @staticmethod
    def quarantine(name: str) -> str:
        return f"quarantine/{name}"

    @staticmethod
    def ledger(name: str) -> str:
        return f"ledger/{name}"

    @staticmethod
    def feature_state(name: str) -> str:
        return f"state/{name}_features"

    @staticmethod
    def predictions(name: str) -> str:
        return f"predictions/{name}"

    @staticmethod
    def model_versions() -> str:
        """The model registry's versions (all models): see aiflow.models.registry."""
        return "registry/model_versions"

    @staticmethod
    def alias_events() -> str:
        """The model registry's append-only alias log (all models)."""
        return "registry/alias_events"


def dates_predicate(dates: Iterable[dt.date], column: str = EVENT_DATE) -> str:
    """A Delta SQL predicate selecting the rows of the given event dates."""
    values = ", ".join(f"'{d.isoformat()}'" for d in sorted(set(dates)))
    return f"{column} IN ({values})"


def partition_columns(partitioning: Partitioning) -> list[str]:
    """The partition columns a new table gets for the spec's ``partitioning`` (``none``, ``month``, ``day``)."""
    try:
        return list(PARTITION_COLUMNS[partitioning])
    except KeyError:
        raise ValueError(f"partitioning {partitioning!r} is not one of {sorted(PARTITION_COLUMNS)}") from None


def laid_out(df: pl.DataFrame, partition_by: Iterable[str]) -> pl.DataFrame:
    """``df`` as written into a table partitioned by ``partition_by``: derived partition columns added; rows
    sorted by ``event_date`` when the table has no partition (so statistics prune date filters; a partitioned
    table is pruned by partition, and sorting 1M rows cost ~0.1 s per write for nothing)."""
    partition_by = list(partition_by)
    missing = [c for c in partition_by if c not in df.columns and c not in DERIVED_COLUMNS]
    if missing:
        raise ValueError(f"the rows lack the table's partition column(s) {missing}")
    derived = [DERIVED_COLUMNS[c]().alias(c) for c in partition_by if c in DERIVED_COLUMNS]
    if derived:
        if EVENT_DATE not in df.columns:
            raise ValueError(f"the table is partitioned by {partition_by}, derived from {EVENT_DATE!r}, which the rows lack")
        df = df.with_columns(derived)
    if EVENT_DATE in df.columns and not partition_by and df.height > 1:
        df = df.sort(EVENT_DATE, nulls_last=True)
    return df


def as_dates(values) -> list[dt.date]:
    """Sorted distinct dates from dates or ISO strings (None skipped)."""
    return sorted({v if isinstance(v, dt.date) else dt.date.fromisoformat(v) for v in values if v is not None})


#: Pinned table snapshots a :class:`Lake` keeps open per thread (see :meth:`Lake.scan`).
SNAPSHOTS_KEPT = 16

#: Rows up to which :meth:`Lake.read` keeps a read for the next one of the same version.
KEPT_READ_ROWS = 200_000

#: Commits :meth:`Lake.last_commit` reads first (then 4x more each time until found).
LAST_COMMIT_WINDOW = 8

#: Reads of a table's history before :func:`history_of` gives up on a log that keeps moving.
HISTORY_ATTEMPTS = 100


def history_of(handle: DeltaTable, since: int | None = None, *, at_head: bool = False) -> list[dict]:
    """The commits of ``handle``'s table, newest first (``since``: from that version on), each with its true version.

    delta-rs 1.6 ``DeltaTable.history()`` reads the newest commits of the log as it is when called, but numbers
    them down from the version the handle was *loaded* at: on a handle pinned to an older version, or overtaken
    by another writer's commit, every label is wrong (an ingestion then took another batch's claim for the one
    it missed and committed a file twice). So the handle is brought to the head of the log and a read is kept
    only if the head did not move during it. ``handle`` is left at the head. ``at_head``: the caller has just
    brought the handle to the head (saves one read of the log listing).
    """
    for attempt in range(HISTORY_ATTEMPTS):
        if attempt or not at_head:
            handle.update_incremental()
        head = handle.version()
        found = handle.history(None if since is None else max(head - since + 1, 1))
        handle.update_incremental()
        if handle.version() == head:
            return [c for c in found if since is None or c["version"] >= since]
    raise RuntimeError(f"{handle.table_uri}: the log kept moving while its history was read ({HISTORY_ATTEMPTS} attempts)")


class _Kept(threading.local):
    """What a :class:`Lake` keeps per thread: head handles, pinned snapshots and small reads (each thread gets its own)."""

    def __init__(self) -> None:
        self.heads: dict[str, DeltaTable] = {}
        self.snapshots: OrderedDict[tuple[str, int], DeltaTable] = OrderedDict()
        self.reads: OrderedDict[tuple[str, int, tuple[str, ...]], pl.DataFrame] = OrderedDict()


class Lake:
    """Delta tables under one root URI.

    Args:
        root: local folder or ``s3://bucket/prefix``.
        storage_options: delta-rs / object-store options (``AWS_ENDPOINT_URL``, keys, ``AWS_ALLOW_HTTP``...).
    """

    def __init__(self, root: str | os.PathLike, storage_options: dict[str, str] | None = None):
        root = str(root)
        if "://" not in root:
            Path(root).mkdir(parents=True, exist_ok=True)
            root = str(Path(root).resolve())
        self.root = root.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self._kept = _Kept()

    def __getstate__(self) -> dict:
        return {"root": self.root, "storage_options": self.storage_options}

    def __setstate__(self, state: dict) -> None:
        self.root, self.storage_options = state["root"], state["storage_options"]
        self._kept = _Kept()

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    def uri(self, table: str) -> str:
        return f"{self.root}/{table}"

    # ---------------------------------------------------------------- reading
    def exists(self, table: str) -> bool:
        """Whether the table exists (a table this thread holds open exists: its handle is moved forward, or reopened if it is gone)."""
        if table in self._kept.heads:
            return True
        return DeltaTable.is_deltatable(self.uri(table), storage_options=self.storage_options)

    def table(self, table: str, version: int | None = None) -> DeltaTable:
        try:
            return DeltaTable(self.uri(table), version=version, storage_options=self.storage_options)
        except TableNotFoundError:
            raise TableNotFoundError(f"no Delta table at {self.uri(table)}") from None

    def prefetch(self, *tables: str) -> None:
        """Open this thread's handles on ``tables`` (those not open yet) all at once: a stage opens its tables
        first. delta-rs opens a table outside the GIL, so 7 tables of a month of daily commits open in ~15 ms
        instead of ~25-35 ms one by one (benchmarks/README.md, day 31). A table that does not exist stays unopened.
        """
        heads = self._kept.heads
        todo = [t for t in dict.fromkeys(tables) if t not in heads]
        if len(todo) < 2:
            return

        def open_one(table: str) -> DeltaTable | None:
            try:
                return self.table(table)
            except TableNotFoundError:
                return None

        with ThreadPoolExecutor(max_workers=min(len(todo), PREFETCH_THREADS)) as pool:
            for table, handle in zip(todo, pool.map(open_one, todo), strict=True):
                if handle is not None:
                    heads.setdefault(table, handle)

    def _head(self, table: str) -> DeltaTable:
        """This thread's handle on ``table``, brought to the head of its log.

        Opening a table reads its last checkpoint and the commits since (3-7 ms on a table with a month of
        daily commits); bringing an open handle up to date reads only the new commits (~0.3 ms). A daily
        ingest + refresh asks ~20 times for the head of the same few tables (benchmarks/README.md, day 31).
        The handle is only ever moved forward (version, history, writes), never read through by a scan.
        """
        heads = self._kept.heads
        handle = heads.pop(table, None)
        if handle is not None:
            try:
                handle.update_incremental()
            except (DeltaError, OSError):
                handle = None  # the table was removed or rewritten under us: open it again
        if handle is None:
            handle = self.table(table)  # raises if the table is gone; then exists() asks the store again
        heads[table] = handle
        return handle

    def _snapshot(self, table: str, version: int) -> DeltaTable:
        """A handle pinned at ``version``, shared by this thread's scans of that version (never moved).

        The head handle, when it is at that version, becomes the snapshot (the next :meth:`_head` opens a new
        one): the usual order is ``version()`` then scans of that version, and the open is saved.
        """
        snapshots = self._kept.snapshots
        key = (table, version)
        handle = snapshots.pop(key, None)
        if handle is None:
            heads = self._kept.heads
            if table in heads and heads[table].version() == version:
                handle = heads.pop(table)
            else:
                handle = self.table(table, version=version)
        snapshots[key] = handle
        while len(snapshots) > SNAPSHOTS_KEPT:
            snapshots.popitem(last=False)
        return handle

    def version(self, table: str) -> int | None:
        """Current version, or None if the table does not exist yet."""
        return self._head(table).version() if self.exists(table) else None

    def scan(self, table: str, version: int | None = None) -> pl.LazyFrame:
        """A lazy scan of the table (at ``version`` when given: reads are pinned, never 'latest' by accident).

        Partition columns the lake derives (``event_month``) are left out: stages see the same columns
        whatever the table's partitioning. Scans of one version share one opened snapshot (:meth:`_snapshot`);
        a scan without ``version`` reads the version current when it is collected.
        """
        if version is None:
            frame = pl.scan_delta(self.uri(table), storage_options=self.storage_options or None)
        else:
            frame = pl.scan_delta(self._snapshot(table, version))
        return frame.drop(list(DERIVED_COLUMNS), strict=False)

    def read(self, table: str, version: int, columns: list[str]) -> pl.DataFrame:
        """``columns`` of ``table`` at ``version``, read once per thread while the version's rows stay few.

        A version never changes, so a small read (the ledger: one row per file) is kept and served again,
        from any kept read of that version with those columns (ingestion and the silver refresh read the
        same ledger version; each read costs ~0.2 ms per file of the table). Frames of more than
        ``KEPT_READ_ROWS`` rows are not kept. Callers must not modify the frame (Polars frames are immutable).
        """
        reads = self._kept.reads
        for (name, at, kept), frame in reversed(reads.items()):
            if name == table and at == version and set(columns) <= set(kept):
                return frame.select(columns)
        head = self._kept.heads.get(table)
        if head is not None and head.version() == version:  # read now, while nothing can move it: the head stays the head
            frame = pl.scan_delta(head).drop(list(DERIVED_COLUMNS), strict=False).select(columns).collect()
        else:
            frame = self.scan(table, version).select(columns).collect()
        if frame.height <= KEPT_READ_ROWS:
            reads[(table, version, tuple(columns))] = frame
            while len(reads) > SNAPSHOTS_KEPT:
                reads.popitem(last=False)
        return frame

    def rows_bound(self, table: str, version: int, dates: Iterable[dt.date]) -> int | None:
        """At least as many rows as ``table`` holds on ``dates`` at ``version``, from the Delta log alone (no data read).

        The rows of every file that may hold those dates (:func:`aiflow.storage.rewrite.may_hold`: partition value,
        then ``event_date`` statistics; a file without them counts whole); None when the log lacks row counts or
        ``event_date`` statistics.
        """
        dates = sorted(set(dates))
        if not dates:
            return 0
        files = pl.DataFrame(self._snapshot(table, version).get_add_actions(flatten=True))
        if not files.height:
            return 0
        dated = f"partition.{EVENT_DATE}" in files.columns or {f"min.{EVENT_DATE}", f"max.{EVENT_DATE}"} <= set(files.columns)
        if "num_records" not in files.columns or not dated or files["num_records"].null_count():
            return None
        return int(files.filter(rewrite.may_hold(files, dates))["num_records"].sum())

    def partition_columns(self, table: str) -> list[str]:
        """The partition columns ``table`` was created with (whatever the spec says now)."""
        return list(self.table(table).metadata().partition_columns)

    def scan_or_empty(self, table: str, schema: dict[str, pl.DataType]) -> pl.LazyFrame:
        return self.scan(table) if self.exists(table) else pl.LazyFrame(schema=schema)

    def history(self, table: str, since: int | None = None) -> list[dict]:
        """Commits newest first (``since``: only versions from it on), each with its true ``version``.

        The engine's own metadata keys start with ``aiflow.``. See :func:`history_of`.
        """
        return history_of(self._head(table), since, at_head=True) if self.exists(table) else []

    def commit_metadata(self, table: str, key: str) -> list[tuple[int, str]]:
        """(version, value) of every commit that carries ``aiflow.<key>``, oldest first."""
        found = [(c["version"], c[META + key]) for c in self.history(table) if META + key in c]
        return sorted(found)

    def last_commit(self, table: str, key: str) -> dict | None:
        """The newest commit whose metadata carries ``aiflow.<key>`` (e.g. a run's closing commit), or None.

        The log is read backwards in growing windows (the last 8 commits, then 32, 128...): the commit sought
        is usually among the last few, and each commit read costs ~0.1 ms (a year of daily commits: ~40 ms a call).
        """
        if not self.exists(table):
            return None
        window = LAST_COMMIT_WINDOW
        while True:
            since = max(self._head(table).version() - window + 1, 0)
            found = next((c for c in self.history(table, since=since) if META + key in c), None)
            if found is not None or since == 0:
                return found
            window *= 4

    def dates_since(self, table: str, since: int | None) -> list[dt.date] | None:
        """Dates rewritten in ``table`` by commits after version ``since``; None if the log no longer reaches back."""
        history = self.history(table, since=None if since is None else since + 1)  # only the commits after it
        if since is not None and history and min(c["version"] for c in history) > since + 1:
            return None
        key = META + "dates"
        return as_dates(d for c in history if key in c and (since is None or c["version"] > since) for d in json.loads(c[key]))

    def last_metadata(self, table: str, key: str) -> str | None:
        commit = self.last_commit(table, key)
        return commit[META + key] if commit else None

    # ---------------------------------------------------------------- writing
    @staticmethod
    def _props(metadata: dict[str, object] | None) -> CommitProperties | None:
        if not metadata:
            return None
        return CommitProperties(
            custom_metadata={META + k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in metadata.items()}
        )

    def _create(self, table: str, df: pl.DataFrame, partition_by: list[str] | None, metadata) -> int | None:
        """Create the table with ``df`` as version 0; None if another writer created it first."""
        partition_by = list(partition_by or [])
        try:
            write_deltalake(
                self.uri(table),
                laid_out(df, partition_by).to_arrow(),
                mode="error",
                partition_by=partition_by or None,
                configuration=TABLE_PROPERTIES,
                storage_options=self.storage_options,
                commit_properties=self._props(metadata),
            )
        except DeltaError as exc:
            if "already exists" not in str(exc):
                raise
            return None
        return 0

    def _write(self, table: str, df: pl.DataFrame, metadata, **options) -> int:
        """Write through a DeltaTable handle, so the version returned is the one this commit made."""
        handle = self._head(table)
        rows = laid_out(df, handle.metadata().partition_columns)
        try:
            write_deltalake(handle, rows.to_arrow(), commit_properties=self._props(metadata), **options)
        except BaseException:
            self._kept.heads.pop(table, None)  # whatever state the failed commit left it in
            raise
        return handle.version()

    def append(
        self,
        table: str,
        df: pl.DataFrame,
        *,
        partition_by: list[str] | None = None,
        metadata: dict[str, object] | None = None,
        merge_schema: bool = True,
    ) -> int:
        """Append rows in one commit (new columns merged into the schema); return the version committed."""
        if not self.exists(table):
            created = self._create(table, df, partition_by, metadata)
            if created is not None:
                return created
        return self._write(table, df, metadata, mode="append", schema_mode="merge" if merge_schema else None)

    @_retry_conflicts
    def replace_where(
        self,
        table: str,
        df: pl.DataFrame,
        predicate: str,
        *,
        partition_by: list[str] | None = None,
        metadata: dict[str, object] | None = None,
    ) -> int:
        """Atomically replace the rows matching ``predicate`` with ``df``; return the version committed.

        Creates the table when missing (if another writer creates it first, replaces in it instead).
        Retries on a concurrent-commit conflict.
        """
        if not self.exists(table):
            created = self._create(table, df, partition_by, metadata)
            if created is not None:
                return created
        return self._write(table, df, metadata, mode="overwrite", predicate=predicate, schema_mode="merge")

    @_retry_conflicts
    def replace_dates(
        self, table: str, df: pl.DataFrame, dates: Iterable[dt.date], *, partitioning: Partitioning = "month", metadata=None
    ) -> int:
        """Replace every row of the given event dates with ``df``, in one atomic commit: incremental and idempotent.

        Only the files whose partition or ``event_date`` statistics may hold those dates are read; the rows
        they keep are written to files of their own, apart from the new rows (:mod:`aiflow.storage.rewrite`),
        so a daily replace costs the same on day 31 of a month as on day 1. A change of schema goes through
        delta-rs's predicate overwrite (``event_date IN (...)``) instead. Retries on a concurrent-commit conflict.

        Args:
            table: the table.
            df: the new rows of those dates (each with an ``event_date`` among them).
            dates: the event dates replaced.
            partitioning: the spec's granularity, used only if this commit creates the table.
            metadata: ``aiflow.*`` commit metadata.
        """
        dates = sorted(set(dates))
        if not dates:
            raise ValueError("replace_dates needs at least one date")
        if not self.exists(table):
            created = self._create(table, df, partition_columns(partitioning), metadata)
            if created is not None:
                return created
        handle = self._head(table)
        custom = self._props(metadata).custom_metadata if metadata else None
        try:
            rows = laid_out(df, handle.metadata().partition_columns)
            version = rewrite.replace_dates_apart(handle, rows, dates, storage_options=self.storage_options, custom_metadata=custom)
        except BaseException:
            self._kept.heads.pop(table, None)  # whatever state the failed commit left it in
            raise
        if version is not None:
            return version
        # a schema change, or a table the engine's rewrite does not handle: delta-rs's predicate overwrite
        return self._write(table, df, metadata, mode="overwrite", predicate=dates_predicate(dates), schema_mode="merge")

    def add_claiming(
        self,
        table: str,
        df: pl.DataFrame,
        claim: str,
        *,
        read_version: int | None,
        partition_by: list[str] | None = None,
        metadata: dict[str, object] | None = None,
    ) -> int:
        """Add ``df`` in one commit made on top of ``read_version`` that fails if someone else claimed the same rows.

        The commit adds the rows' files with no retry on top of ``read_version``: any commit since refuses
        it (:func:`aiflow.storage.rewrite.add_rows`). Rows that change the table's schema go as a Delta
        overwrite with predicate ``claim`` instead, which the caller has checked matches no row at
        ``read_version`` (so nothing is deleted); Delta's conflict check rejects it when a commit since
        ``read_version`` added rows that may match ``claim``. No retry here: the caller re-reads what was
        claimed and decides what is left to commit.

        Args:
            table: the table.
            df: the rows (may be empty: the commit then only carries ``metadata``).
            claim: Delta SQL predicate every row of ``df`` satisfies.
            read_version: the version the caller read; None if the table did not exist then.
            partition_by: partition columns when this commit creates the table.
            metadata: ``aiflow.*`` commit metadata.

        Raises:
            CommitFailedError: a concurrent commit added rows matching ``claim``, or created the table.
        """
        if read_version is None:
            if self._create(table, df, partition_by, metadata) is None:
                raise CommitFailedError(f"{self.uri(table)} was created by another writer meanwhile")
            return 0
        heads = self._kept.heads
        # the head handle, when still at read_version, is that snapshot (and stays the head after the commit)
        handle = heads.pop(table) if table in heads and heads[table].version() == read_version else self.table(table, version=read_version)
        rows = laid_out(df, handle.metadata().partition_columns)
        custom = self._props(metadata).custom_metadata if metadata else None
        version = rewrite.add_rows(handle, rows, storage_options=self.storage_options, custom_metadata=custom)
        if version is not None:  # made exactly on read_version: any commit since, claiming or not, refuses it
            heads[table] = handle  # (at read_version: the next _head brings it forward)
            return version
        write_deltalake(  # a schema change: delta-rs merges it; its conflict check reads the claim
            handle, rows.to_arrow(), mode="overwrite", predicate=claim, schema_mode="merge", commit_properties=self._props(metadata)
        )
        heads[table] = handle
        return handle.version()

    def commits(self, table: str, after: int | None, until: int | None = None) -> list[dict]:
        """Commits with version in (``after``, ``until``], oldest first (``after`` None: from the first)."""
        if not self.exists(table):
            return []
        first = 0 if after is None else after + 1
        if until is not None and until < first:
            return []
        found = self.history(table, since=first)
        return sorted((c for c in found if until is None or c["version"] <= until), key=lambda c: c["version"])

    @_retry_conflicts
    def overwrite(self, table: str, df: pl.DataFrame, *, metadata: dict[str, object] | None = None) -> int:
        if not self.exists(table):
            created = self._create(table, df, None, metadata)
            if created is not None:
                return created
        return self._write(table, df, metadata, mode="overwrite", schema_mode="overwrite")

    @_retry_conflicts
    def delete(self, table: str, predicate: str) -> int:
        """Delete the matching rows; returns the number deleted."""
        if not self.exists(table):
            return 0
        metrics = self.table(table).delete(predicate)
        return int(metrics.get("num_deleted_rows", 0))

    def restore(self, table: str, version: int | None) -> None:
        """Put a table back to ``version`` (a new commit with that version's content).

        ``None`` means the table did not exist: its rows are deleted instead.
        """
        if not self.exists(table):
            return
        if version is None:
            self.table(table).delete()
        else:
            self.table(table).restore(version)

    # ------------------------------------------------------------ maintenance
    def compact(self, table: str, target_size: int = TARGET_FILE_BYTES, *, before: dt.date | None = None) -> dict:
        """Rewrite the small files of each partition into files of about ``target_size`` bytes (a maintenance
        commit: rows unchanged); returns delta-rs's metrics (``numFilesRemoved``, ``numFilesAdded``...).

        ``before``: only files whose rows all fall before that event date. The dates daily runs still replace
        are left alone: merged into a big file, the next replace of one of them would rewrite that file.
        Partitioned tables leave out the partitions (months, days) that reach ``before``; unpartitioned ones
        are compacted by :func:`aiflow.storage.rewrite.compact_before`.
        """
        handle = self.table(table)
        partitions = handle.metadata().partition_columns
        if before is None:
            return handle.optimize.compact(target_size=target_size)
        if EVENT_MONTH in partitions:
            return handle.optimize.compact(partition_filters=[(EVENT_MONTH, "<", before.replace(day=1).isoformat())], target_size=target_size)
        if EVENT_DATE in partitions:
            return handle.optimize.compact(partition_filters=[(EVENT_DATE, "<", before.isoformat())], target_size=target_size)
        metadata = {META + MAINTENANCE: "compact"}
        return rewrite.compact_before(handle, before, target_size, storage_options=self.storage_options, custom_metadata=metadata)

    def newest_date(self, table: str) -> dt.date | None:
        """The newest event date the table holds, from its Delta log (partition values or statistics); None if it has none."""
        files = pl.DataFrame(self._head(table).get_add_actions(flatten=True))
        for column in (f"partition.{EVENT_DATE}", f"max.{EVENT_DATE}"):
            if column in files.columns and files[column].drop_nulls().len():
                return files[column].cast(pl.Date).max()
        return None

    def vacuum(self, table: str, retention_hours: int = 168) -> list[str]:
        # the caller chose the retention; below Delta's 7-day default, readers pinned to older versions lose them
        removed = self.table(table).vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False)
        # and so do this thread's kept snapshots and reads: older versions read again fail as they would have
        for cache in (self._kept.snapshots, self._kept.reads):
            for key in [k for k in cache if k[0] == table]:
                del cache[key]
        return removed
