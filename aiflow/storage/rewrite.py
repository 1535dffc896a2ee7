"""Delta commits the engine makes itself, from data files it writes and add/remove actions.

Three of them: :func:`replace_dates_apart` (replace the rows of some event dates, keeping the untouched rows in
files of their own), :func:`add_rows` (bronze's commit point: add files in a commit made exactly on the version
read) and :func:`compact_before` (maintenance of unpartitioned tables, leaving the recent dates' files alone).

Written by hand because delta-rs 1.6's predicate overwrite (``write_deltalake(mode="overwrite", predicate=...)``)
writes the rows it keeps from every file it touches into the *same* new file as the new rows: on a table
partitioned by month, each daily refresh read and rewrote the whole month's file, so day 31 cost 1.9x day 1
(benchmarks/README.md, "Day 31"). Here a touched file's kept rows go to a file of their own and the new rows
to theirs, all in one commit (add and remove actions through ``DeltaTable.create_write_transaction``); the
next day touches only the small file of the day before.

What makes the replacement as safe as the delta-rs path:

* **One commit.** Data files are written first, then one commit adds them and removes the touched files.
  A crash before the commit leaves only unreferenced files (no reader sees them; vacuum deletes them).
* **Conflicts.** The commit is made with no retry on top of the version read: if any other writer committed
  in between, it fails (``CommitFailedError``) and the caller starts again from the new head, reading the
  files again. A delta-rs predicate overwrite racing with it conflicts on the files this one adds (its
  predicate matches them), so the two paths never both commit a replacement of the same dates.
* **Only what it can do exactly.** Tables with column mapping, deletion vectors or CHECK constraints, rows
  whose columns or types differ from the table's (a schema change), and rows with a null partition value go
  to the delta-rs path (``None`` is returned).

Statistics (``numRecords``, ``nullCount``, ``minValues``/``maxValues`` of numbers, dates, timestamps and short
strings) are computed with Polars on each written file, so date filters keep skipping files.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable
from deltalake._internal import DeltaFileSystemHandler  # the object store delta-rs itself writes through
from deltalake.transaction import AddAction, RemoveAction

from aiflow.spec import EVENT_DATE, EVENT_MONTH

#: Strings longer than this get no min/max statistics (exact values only: nothing is truncated).
MAX_STAT_STRING = 128
#: Threads writing the files of one commit's partitions (each file is encoded and compressed by Polars without the GIL).
WRITERS = 2
#: Parquet compression of the files written here (delta-rs writes snappy; zstd reads as fast and is smaller).
COMPRESSION = "zstd"

_PLAIN = re.compile(r"[0-9A-Za-z_.:+-]*")
_NUMERIC = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64, pl.Float32, pl.Float64)


def table_schema(handle: DeltaTable) -> pl.Schema:
    """The table's columns as Polars types (what a scan of it gives)."""
    return pl.from_arrow(pa.schema(handle.schema().to_arrow()).empty_table()).schema


def supported(handle: DeltaTable) -> bool:
    """Whether this writer can replace rows of ``handle``'s table exactly (no column mapping, deletion vectors, constraints)."""
    configuration = handle.metadata().configuration
    if configuration.get("delta.columnMapping.mode", "none") != "none":
        return False
    if any(key.startswith("delta.constraints.") for key in configuration):
        return False
    features = set(handle.protocol().reader_features or []) | set(handle.protocol().writer_features or [])
    return not features & {"deletionVectors", "columnMapping", "checkConstraints", "generatedColumns", "invariants"}


def _partition_value(value) -> str:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else str(value)


def _timestamp(value: dt.datetime, up: bool) -> str:
    """A timestamp statistic in Delta's millisecond form: bounds widened (floored or ceiled) to the millisecond."""
    value = value.astimezone(dt.UTC) if value.tzinfo else value
    floor = value.replace(microsecond=value.microsecond // 1000 * 1000)
    if up and floor != value:
        floor += dt.timedelta(milliseconds=1)
    text = floor.strftime("%Y-%m-%dT%H:%M:%S.") + f"{floor.microsecond // 1000:03d}"
    return text + ("Z" if value.tzinfo else "")


def _stat_exprs(schema: pl.Schema) -> tuple[list[pl.Expr], list[str], list[str]]:
    """Aggregations giving a file's statistics (null counts; min/max, NaN and length checks), its flat and bounded columns."""
    flat = [c for c, t in schema.items() if not t.is_nested()]
    exprs = [pl.col(c).null_count().alias(f"n:{c}") for c in flat]
    bounded = []
    for column in flat:
        dtype = schema[column]
        if isinstance(dtype, _NUMERIC) or dtype == pl.Date or isinstance(dtype, pl.Datetime | pl.String):
            bounded.append(column)
            exprs += [pl.col(column).min().alias(f"lo:{column}"), pl.col(column).max().alias(f"hi:{column}")]
            if dtype.is_float():
                exprs.append(pl.col(column).is_nan().any().alias(f"nan:{column}"))
            if dtype == pl.String:
                exprs.append(pl.col(column).str.len_bytes().max().alias(f"len:{column}"))
    return exprs, flat, bounded


def _stats_json(row: dict, height: int, flat: list[str], bounded: list[str]) -> str:
    low: dict[str, object] = {}
    high: dict[str, object] = {}
    for column in bounded:
        lo, hi = row.get(f"lo:{column}"), row.get(f"hi:{column}")
        if lo is None or hi is None or row.get(f"nan:{column}") or (row.get(f"len:{column}") or 0) > MAX_STAT_STRING:
            continue
        if isinstance(lo, float) and not (math.isfinite(lo) and math.isfinite(hi)):
            continue
        if isinstance(lo, dt.datetime):
            lo, hi = _timestamp(lo, up=False), _timestamp(hi, up=True)
        elif isinstance(lo, dt.date):
            lo, hi = lo.isoformat(), hi.isoformat()
        low[column], high[column] = lo, hi
    nulls = {column: int(row.get(f"n:{column}") or 0) for column in flat}
    return json.dumps({"numRecords": height, "minValues": low, "maxValues": high, "nullCount": nulls})


def file_stats(df: pl.DataFrame) -> str:
    """Delta ``stats`` JSON of a data file holding ``df`` (every column's null count; min/max where exact)."""
    exprs, flat, bounded = _stat_exprs(df.schema)
    return _stats_json(df.select(exprs).row(0, named=True) if df.height else {}, df.height, flat, bounded)


def _grouped_stats(data: pl.DataFrame, partition_by: list[str]) -> dict[tuple, str]:
    """:func:`file_stats` of every partition's rows of ``data`` (partition columns left out), in one pass."""
    exprs, flat, bounded = _stat_exprs(data.drop(partition_by).schema)
    if not partition_by:
        return {(): file_stats(data)} if data.height else {}
    rows = data.group_by(partition_by).agg(*exprs, pl.len().alias("__rows")).iter_rows(named=True)
    return {tuple(r[k] for k in partition_by): _stats_json(r, r["__rows"], flat, bounded) for r in rows}


def _write_file(
    store: DeltaFileSystemHandler, df: pl.DataFrame, partition: dict[str, str | None], tag: str, data_change: bool = True, stats: str | None = None
) -> AddAction:
    """Write ``df`` (no partition columns) as one data file of the table; its add action (``stats``: computed if not given)."""
    folder = "/".join(f"{k}={v}" for k, v in partition.items())
    path = (folder + "/" if folder else "") + f"part-{tag}-{uuid.uuid4()}-c000.{COMPRESSION}.parquet"
    buffer = io.BytesIO()
    df.write_parquet(buffer, compression=COMPRESSION)
    data = buffer.getvalue()
    out = store.open_output_stream(path, None)
    try:
        out.write(data)
    finally:
        out.close()
    return AddAction(path, len(data), partition, int(time.time() * 1000), data_change, stats or file_stats(df))


def _read_file(handle: DeltaTable, store: DeltaFileSystemHandler, path: str) -> pl.DataFrame:
    uri = path if "://" in path else f"{handle.table_uri.rstrip('/')}/{unquote(path)}"
    if uri.startswith("file://") or "://" not in uri:
        return pl.read_parquet(uri.removeprefix("file://"))
    return pl.read_parquet(store.open_input_file(unquote(path)))


def replace_dates_apart(
    handle: DeltaTable,
    rows: pl.DataFrame,
    dates: list[dt.date],
    *,
    storage_options: dict[str, str] | None,
    custom_metadata: dict[str, str] | None,
) -> int | None:
    """Replace the rows of ``dates`` with ``rows`` in one commit on top of ``handle``'s version; the version committed.

    ``rows`` are laid out for the table (derived partition columns added). Returns None, having written
    nothing, when the table or the rows need the delta-rs path (see the module docstring).

    Raises:
        CommitFailedError: another writer committed since ``handle``'s version; retry from the new head.
    """
    partition_by = list(handle.metadata().partition_columns)
    schema = _fits(handle, rows) if EVENT_DATE in rows.columns else None
    if schema is None:
        return None
    tag = _tag(handle)
    wanted = pl.Series(dates, dtype=pl.Date).implode()
    actions: list[AddAction | RemoveAction] = []
    store = DeltaFileSystemHandler(handle.table_uri, storage_options or None)
    for file in _candidates(handle, dates):
        partition = {k: file["partition_values"].get(k) for k in partition_by}
        if EVENT_DATE not in partition_by:  # the file may also hold other dates: their rows are kept, in a file of their own
            found = _read_file(handle, store, file["path"])
            if EVENT_DATE not in found.columns:
                return None  # a file written before the table had event dates: let delta-rs decide
            hit = found[EVENT_DATE].is_in(wanted).fill_null(False)
            if not hit.any():
                continue
            kept = found.filter(~hit)
            if kept.height:
                actions.append(_write_file(store, kept, partition, tag))
        actions.append(RemoveAction(file["path"], True, int(time.time() * 1000), file["size"], partition))
    actions += _write_partitions(store, rows.select(list(schema)), partition_by, tag)
    return _commit(handle, actions, custom_metadata)


def _tag(handle: DeltaTable) -> str:
    """The version a commit made on ``handle`` will have, zero-padded: file names then sort in commit order."""
    return f"{handle.version() + 1:020d}"


def _commit(handle: DeltaTable, actions: list[AddAction | RemoveAction], custom_metadata: dict[str, str] | None) -> int:
    """Commit ``actions`` exactly on top of ``handle``'s version; the version committed.

    No retry inside the commit: it is that version + 1, or it raises ``CommitFailedError`` because another
    writer committed since (the handle stays at the version read).
    """
    read_version = handle.version()
    partition_by = list(handle.metadata().partition_columns)
    properties = CommitProperties(custom_metadata=custom_metadata, max_commit_retries=0)
    handle.create_write_transaction(actions, "append", handle.schema(), partition_by=partition_by or None, commit_properties=properties)
    return read_version + 1


def _fits(handle: DeltaTable, rows: pl.DataFrame) -> pl.Schema | None:
    """The table's schema when this writer can write ``rows`` into it exactly (same columns and types, plain
    partition values, a supported table); None otherwise (delta-rs's path: schema merge, escaping...)."""
    partition_by = list(handle.metadata().partition_columns)
    if not supported(handle):
        return None
    schema = table_schema(handle)
    if set(rows.columns) != set(schema) or any(rows.schema[c] != schema[c] for c in schema):
        return None
    if any(rows[c].null_count() for c in partition_by):
        return None  # Delta's null partition folder (__HIVE_DEFAULT_PARTITION__): delta-rs's business
    if any(not _PLAIN.fullmatch(_partition_value(v)) for c in partition_by for v in rows[c].unique().to_list()):
        return None  # values that need escaping in a path
    return schema


def _write_partitions(store: DeltaFileSystemHandler, data: pl.DataFrame, partition_by: list[str], tag: str) -> list[AddAction]:
    """One data file per partition of ``data`` (statistics in one pass; files written by :data:`WRITERS` threads)."""
    groups = data.partition_by(partition_by, as_dict=True, maintain_order=True) if partition_by else {(): data}
    stats = _grouped_stats(data, partition_by)

    def write(key: tuple, part: pl.DataFrame) -> AddAction:
        partition = {k: _partition_value(v) for k, v in zip(partition_by, key, strict=True)}
        return _write_file(store, part.drop(partition_by), partition, tag, stats=stats[key])

    todo = [(key, part) for key, part in groups.items() if part.height]
    if len(todo) > 1:  # a refresh writes many partitions: Polars encodes and compresses outside the GIL
        with ThreadPoolExecutor(max_workers=WRITERS) as pool:
            return list(pool.map(lambda item: write(*item), todo))
    return [write(*item) for item in todo]


def add_rows(handle: DeltaTable, rows: pl.DataFrame, *, storage_options: dict[str, str] | None, custom_metadata: dict[str, str] | None) -> int | None:
    """Add ``rows`` (laid out for the table) in one commit made exactly on top of ``handle``'s version; the version.

    No retry inside the commit: if any other writer committed since that version it raises
    ``CommitFailedError`` (stricter than a claim predicate, never looser). None, having written nothing,
    when the rows need delta-rs's path (:func:`_fits`).
    """
    schema = _fits(handle, rows)
    if schema is None:
        return None
    store = DeltaFileSystemHandler(handle.table_uri, storage_options or None)
    actions = _write_partitions(store, rows.select(list(schema)), list(handle.metadata().partition_columns), _tag(handle))
    return _commit(handle, actions, custom_metadata)


def may_hold(files: pl.DataFrame, dates: list[dt.date]) -> pl.Expr:
    """Which files of a flattened add-actions frame may hold rows of the sorted ``dates``: by the daily or monthly
    partition value, then by the ``event_date`` statistics (a file without a value or statistics may)."""
    keep = pl.lit(True)
    if f"partition.{EVENT_DATE}" in files.columns:
        keep &= pl.col(f"partition.{EVENT_DATE}").cast(pl.Date).is_in(pl.Series(dates, dtype=pl.Date).implode()).fill_null(True)
    elif f"partition.{EVENT_MONTH}" in files.columns:
        months = sorted({d.replace(day=1) for d in dates})
        keep &= pl.col(f"partition.{EVENT_MONTH}").cast(pl.Date).is_in(pl.Series(months, dtype=pl.Date).implode()).fill_null(True)
    low, high = f"min.{EVENT_DATE}", f"max.{EVENT_DATE}"
    if low in files.columns and high in files.columns:
        keep &= ~((pl.col(low).cast(pl.Date) > dates[-1]) | (pl.col(high).cast(pl.Date) < dates[0])).fill_null(False)
    return keep


def _candidates(handle: DeltaTable, dates: list[dt.date]) -> list[dict]:
    """The table's files that may hold rows of ``dates`` (:func:`may_hold`), with their partition values."""
    files = pl.DataFrame(handle.get_add_actions(flatten=True))
    if not files.height:
        return []
    chosen = files.filter(may_hold(files, dates))
    partitions = [c for c in chosen.columns if c.startswith("partition.")]
    return [
        {"path": f["path"], "size": f["size_bytes"], "partition_values": {c.removeprefix("partition."): _stat(f[c]) for c in partitions}}
        for f in chosen.iter_rows(named=True)
    ]


def _stat(value) -> str | None:
    return None if value is None else _partition_value(value)


def compact_before(
    handle: DeltaTable, before: dt.date, target_size: int, *, storage_options: dict[str, str] | None, custom_metadata: dict[str, str]
) -> dict[str, int]:
    """Compact the small files of an unpartitioned table whose rows all fall before ``before``; delta-rs-style metrics.

    By hand because delta-rs's ``optimize.compact`` can only leave out whole partitions, and an unpartitioned
    table has one: the files of recent dates, which daily runs still replace, would be merged with the rest
    and the next replace would rewrite the merged file. Here files whose ``event_date`` statistics end before
    ``before`` are taken in date order, packed into groups of about ``target_size`` bytes, and each group is
    rewritten as one file sorted by ``event_date`` (rows unchanged: ``dataChange`` false), all in one commit
    made without retry (a concurrent writer wins; the next night tries again).
    """
    files = pl.DataFrame(handle.get_add_actions(flatten=True))
    low, high = f"min.{EVENT_DATE}", f"max.{EVENT_DATE}"
    done = {"numFilesRemoved": 0, "numFilesAdded": 0}
    if not files.height or handle.metadata().partition_columns or high not in files.columns or not supported(handle):
        return done
    cold = files.filter((pl.col(high).cast(pl.Date) < before) & (pl.col("size_bytes") < target_size)).sort(low, "path")
    groups: list[list[dict]] = [[]]
    for file in cold.iter_rows(named=True):
        if groups[-1] and sum(f["size_bytes"] for f in groups[-1]) + file["size_bytes"] > target_size:
            groups.append([])
        groups[-1].append(file)
    groups = [g for g in groups if len(g) > 1]
    if not groups:
        return done
    store = DeltaFileSystemHandler(handle.table_uri, storage_options or None)
    tag = _tag(handle)
    actions: list[AddAction | RemoveAction] = []
    for group in groups:
        merged = pl.concat([_read_file(handle, store, f["path"]) for f in group], how="diagonal_relaxed")
        actions.append(_write_file(store, merged.sort(EVENT_DATE, maintain_order=True), {}, tag, data_change=False))
        actions += [RemoveAction(f["path"], False, int(time.time() * 1000), f["size_bytes"], {}) for f in group]
        done["numFilesRemoved"] += len(group)
        done["numFilesAdded"] += 1
    _commit(handle, actions, custom_metadata)
    return done
