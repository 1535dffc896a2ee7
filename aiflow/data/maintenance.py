"""Table maintenance: compact small files and vacuum files no longer referenced.

Maintenance commits change a table's files, never its rows; :func:`content_version` is the version
of the newest commit that changed the rows, so maintenance leaves a table's data version alone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from aiflow.spec import DatasetSpec
from aiflow.storage.lake import MAINTENANCE, META, TARGET_FILE_BYTES, Lake, Tables

#: Delta operations that rewrite or delete files without changing a table's rows.
MAINTENANCE_OPERATIONS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES"})


def content_version(lake: Lake, table: str, *, look_back: int = 50) -> int | None:
    """The version of the newest commit of ``table`` that changed its rows; None if the table does not exist.

    Compaction and vacuum commits are skipped, so a table that was only maintained keeps its content
    version (and the asset that owns it its data version). Looks at the last ``look_back`` commits first,
    then at the whole log.
    """
    if not lake.exists(table):
        return None
    head = lake.version(table)
    for since in (max(head - look_back + 1, 0), None):
        history = lake.history(table, since=since)  # true versions (delta-rs mislabels an overtaken handle's history)
        for commit in history:  # newest first
            if commit.get("operation") not in MAINTENANCE_OPERATIONS and META + MAINTENANCE not in commit:
                return int(commit["version"])
        if since == 0:
            break
    return 0


@dataclass
class MaintenanceResult:
    table: str
    files_removed_by_compaction: int
    files_added_by_compaction: int
    files_vacuumed: int
    version: int | None


def dataset_tables(spec: DatasetSpec) -> list[str]:
    """Every Delta table the data plane keeps for a dataset."""
    names = []
    for t in spec.tables:
        names += [Tables.bronze(t.name), Tables.silver(t.name), Tables.quarantine(t.name), Tables.ledger(t.name)]
    names += [Tables.features(spec.name), Tables.feature_state(spec.name)]
    return names


#: Days before a table's newest event date that compaction leaves alone (daily runs and late files still replace them).
HOT_DAYS = 7


def maintain(
    lake: Lake,
    spec: DatasetSpec,
    *,
    retention_hours: int = 168,
    target_file_bytes: int = TARGET_FILE_BYTES,
    hot_days: int | None = HOT_DAYS,
) -> list[MaintenanceResult]:
    """Compact and vacuum every existing table of the dataset.

    Compaction rewrites the small files of each partition (each ``event_month`` by default; the whole table
    when unpartitioned) into files of about ``target_file_bytes`` (default 128 MiB): daily increments
    leave one small file per commit, compaction folds them back. Files holding the last ``hot_days`` days
    before a table's newest event date are left for a later night (None: compact everything): a daily
    replace of one of those dates would otherwise rewrite the whole merged file (``Lake.compact``).

    There are no rows of killed ingestions to remove: ingestion writes nothing a reader can see before
    its commit point, and the next ingestion completes a batch that was stopped after it
    (``aiflow.data.ingest``).

    ``retention_hours`` keeps files that readers pinned to a recent version may still need (Delta's
    default: 7 days); time travel to versions older than that stops working after a vacuum.
    """
    results = []
    for name in dataset_tables(spec):
        if not lake.exists(name):
            continue
        newest = lake.newest_date(name) if hot_days is not None else None
        before = newest - dt.timedelta(days=hot_days) if newest is not None else None  # None when hot_days is None
        metrics = lake.compact(name, target_size=target_file_bytes, before=before)
        vacuumed = lake.vacuum(name, retention_hours=retention_hours)
        results.append(
            MaintenanceResult(
                name,
                int(metrics.get("numFilesRemoved", 0)),
                int(metrics.get("numFilesAdded", 0)),
                len(vacuumed),
                lake.version(name),
            )
        )
    return results
