"""Incremental bronze → silver → features: each run rewrites only the event-date partitions that changed.

Every silver and features commit records, in its Delta commit metadata, the upstream version it was
computed from and the dates it rewrote. The next run reads that watermark and recomputes only the
dates that changed upstream since, with an atomic replace of those partitions: incremental, and
idempotent when re-run. The data commit and its watermark are one commit, so a failed run leaves
nothing half-done.

The feature state (vocabularies, scaling) is fitted once, on the training window of the split policy
over the data present at that time (:mod:`aiflow.data.split`; the window is recorded as ``fit_window``
in the state's commit metadata), and then kept while a relative window moves on: the features
already written stay valid and a retrain on newer windows needs no re-encoding; categories first seen
later encode as unknown (0). ``refit=True`` fits again on the current training window and rebuilds
every partition.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field

import polars as pl
from deltalake.exceptions import DeltaError

from aiflow.data.cleanse import RECENCY, cleanse, silver_columns
from aiflow.data.features import (
    FeatureState,
    build_features,
    fit_on_training_window,
    side_dates_affected,
    side_window,
)
from aiflow.data.ingest import INGESTED, QUARANTINE_SCHEMA
from aiflow.spec import EVENT_DATE, DatasetSpec, TableSpec
from aiflow.storage.lake import META, Lake, Tables, dates_predicate
from aiflow.storage.lake import as_dates as _dates

log = logging.getLogger(__name__)

#: Rows read, transformed and committed together (bounds memory on large refreshes): whole event dates
#: are grouped until a batch would pass this many rows. Each batch is one commit (one file per partition it
#: touches), so small datasets take one batch and large ones few (benchmarks/README.md, partitioning).
BATCH_ROWS = 1_000_000
#: At most this many event dates per batch (None: no limit; the rows decide).
BATCH_DATES: int | None = None


@dataclass
class StageReport:
    table: str
    dates: list[dt.date] = field(default_factory=list)
    rows_in: int = 0
    rows_out: int = 0
    rows_quarantined: int = 0
    rows_superseded: int = 0
    version: int | None = None
    upstream: dict[str, int | None] = field(default_factory=dict)
    full_refresh: bool = False
    state_refitted: bool = False

    @property
    def skipped(self) -> bool:
        return not self.dates




# ------------------------------------------------------------------------------------------ silver
_WINNER = "__winner_date"


def cross_date_winners(bronze: pl.LazyFrame, keys: pl.LazyFrame, table: TableSpec) -> pl.DataFrame:
    """For the keys of ``keys`` found on more than one event date in ``bronze``: the date of their latest ingested row.

    A key that does not hold the event time can move: a correction re-lands it with another event time, on
    another date. De-duplication keeps the latest ingested row of a key, so its rows on other dates are
    superseded, and those dates must be rewritten without them.
    """
    return (
        bronze.select(*table.key, *RECENCY, EVENT_DATE)
        .join(keys, on=table.key, how="semi")
        .group_by(table.key)
        .agg(pl.col(EVENT_DATE).sort_by(RECENCY, nulls_last=False).last().alias(_WINNER), pl.col(EVENT_DATE).n_unique().alias("__n"))
        .filter(pl.col("__n") > 1)
        .select(*table.key, _WINNER)
        .collect()
    )


def drop_superseded_elsewhere(rows: pl.DataFrame, winners: pl.DataFrame, table: TableSpec) -> pl.DataFrame:
    """``rows`` without those of a key whose latest row is on another date (``winners`` from :func:`cross_date_winners`)."""
    if not winners.height:
        return rows
    kept = rows.join(winners, on=table.key, how="left")
    return kept.filter(pl.col(_WINNER).is_null() | (pl.col(_WINNER) == pl.col(EVENT_DATE))).drop(_WINNER)


def cleanse_rows(rows: pl.DataFrame, winners: pl.DataFrame, table: TableSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One batch of bronze rows → (valid rows, quarantine rows stamped now, in the quarantine schema).

    Rows of a key whose latest row is on another date (``winners``, :func:`moved_keys`) are superseded first.
    """
    result = cleanse(drop_superseded_elsewhere(rows, winners, table).lazy(), table)
    now = dt.datetime.now(dt.UTC)
    # one plan for both outputs: the de-duplication they share runs once
    valid, rejected = pl.collect_all(
        [result.valid, result.rejected.with_columns(pl.lit(now, pl.Datetime("us", "UTC")).alias("_quarantined_at"))],
        engine="in-memory",
    )
    return valid, rejected.select(list(QUARANTINE_SCHEMA)).cast(QUARANTINE_SCHEMA)


def moved_keys(source: pl.LazyFrame, table: TableSpec, dates: list[dt.date], extend: bool) -> tuple[list[dt.date], pl.DataFrame]:
    """The dates to rewrite and the cross-date winners of their keys (none when the key holds the event time).

    With ``extend`` (an incremental run), a key of the new dates that also has rows on other dates makes those
    dates part of the run: its old row there is superseded and must leave silver.
    """
    if table.event_time in table.key:  # the key fixes the event time, hence the date: no key spans two dates
        return dates, pl.DataFrame()

    def winners_of(on: list[dt.date]) -> pl.DataFrame:
        return cross_date_winners(source, source.filter(pl.col(EVENT_DATE).is_in(on)).select(table.key).unique(), table)

    winners = winners_of(dates)
    if extend and winners.height:
        spanned = source.join(winners.lazy().select(table.key), on=table.key, how="semi").select(EVENT_DATE).unique().collect()
        more = sorted(set(_dates(spanned.to_series())) - set(dates))
        if more:
            dates = sorted({*dates, *more})
            winners = winners_of(dates)
    return dates, winners


def _new_ledger_dates(lake: Lake, table: TableSpec, since: int | None, entries: pl.DataFrame) -> list[dt.date]:
    """Event dates of files ingested after ledger version ``since`` (exclusive), from ``entries``: the ledger's
    ``batch_id``, ``outcome`` and ``event_dates`` at the version the run reads (one read of the ledger per run)."""
    current = entries.lazy().filter(pl.col("outcome") == INGESTED)
    if since is not None:
        old = lake.read(Tables.ledger(table.name), since, ["batch_id"]).lazy().unique()
        current = current.join(old, on="batch_id", how="anti")
    return _dates(current.select(pl.col("event_dates").explode()).collect().to_series().to_list())


def refresh_silver(
    lake: Lake, table: TableSpec, *, full: bool = False, batch_dates: int | None = BATCH_DATES, batch_rows: int = BATCH_ROWS
) -> StageReport:
    """Cleanse the bronze partitions that changed since the last run into ``silver/<table>``.

    Rows failing a rule go to ``quarantine/<table>`` with the rule's name (stage ``cleanse``);
    duplicates on the key keep the latest ingested row. Dates are processed and committed in
    batches of whole dates (up to ``batch_rows`` rows, ``batch_dates`` dates); only the last commit
    advances the watermark, so a run that fails half-way is redone from the same dates next time.
    """
    bronze, silver, ledger = Tables.bronze(table.name), Tables.silver(table.name), Tables.ledger(table.name)
    report = StageReport(table=silver)
    lake.prefetch(bronze, ledger, silver, Tables.quarantine(table.name))
    if not lake.exists(bronze) or not lake.exists(ledger):
        return report
    ledger_version, bronze_version = lake.version(ledger), lake.version(bronze)
    report.upstream = {ledger: ledger_version, bronze: bronze_version}
    last = lake.last_metadata(silver, "ledger_version")
    report.full_refresh = full or last is None
    entries = lake.read(ledger, ledger_version, ["batch_id", "outcome", "event_dates"])
    if report.full_refresh:
        report.dates = _dates(lake.scan(bronze, bronze_version).select(pl.col(EVENT_DATE).unique()).collect().to_series())
    else:
        try:
            report.dates = _new_ledger_dates(lake, table, int(last), entries)
        except (FileNotFoundError, OSError, DeltaError) as exc:
            # the ledger version silver last read was vacuumed (maintenance with a short retention): redo every date
            log.warning("%s: ledger version %s is no longer readable (%s); refreshing every date", silver, last, exc)
            report.full_refresh = True
            report.dates = _dates(lake.scan(bronze, bronze_version).select(pl.col(EVENT_DATE).unique()).collect().to_series())
    if not report.dates:
        return report

    committed = entries["batch_id"].unique()
    source = lake.scan(bronze, bronze_version).filter(pl.col("_batch_id").is_in(committed.implode()))
    # de-duplication spans dates (and so batches and runs): a key corrected onto another date leaves its old one
    report.dates, winners = moved_keys(source, table, report.dates, extend=not report.full_refresh)
    batches = date_batches(lake, bronze, bronze_version, report.dates, batch_rows, batch_dates)
    for i, dates in enumerate(batches):
        rows = source.filter(pl.col(EVENT_DATE).is_in(dates)).collect()
        valid, rejected = cleanse_rows(rows, winners, table)
        report.rows_in += rows.height
        report.rows_out += valid.height
        report.rows_quarantined += rejected.height
        report.rows_superseded += rows.height - valid.height - rejected.height

        # quarantine first: the silver commit is the commit point; the last batch's carries the watermark
        quarantine = Tables.quarantine(table.name)
        if rejected.height or not lake.exists(quarantine) or lake.rows_bound(quarantine, lake.version(quarantine), dates) != 0:
            lake.replace_where(quarantine, rejected, f"_stage = 'cleanse' AND {dates_predicate(dates)}")
        # else: nothing to quarantine and nothing quarantined on these dates before: no empty commit
        metadata: dict[str, object] = {"dates": [d.isoformat() for d in dates]}
        if i == len(batches) - 1:
            metadata.update(
                ledger_version=str(ledger_version),
                bronze_version=str(bronze_version),
                rows_in=report.rows_in,
                rows_quarantined=report.rows_quarantined,
                rows_superseded=report.rows_superseded,
            )
        report.version = lake.replace_dates(
            silver, valid.select(silver_columns(table)), dates, partitioning=table.partitioning, metadata=metadata
        )
    return report


def date_batches(lake: Lake, table: str, version: int, dates: list[dt.date], max_rows: int, max_dates: int | None) -> list[list[dt.date]]:
    """:func:`row_batches` of ``table`` at ``version``; one batch of every date, without counting rows, when the
    Delta log shows the dates hold no more than ``max_rows`` rows (a daily run: no read of the table for it)."""
    bound = lake.rows_bound(table, version, dates)
    if bound is not None and 1 <= max_rows and bound <= max_rows and (max_dates is None or 1 <= len(dates) <= max_dates):
        return [list(dates)]
    return row_batches(dates, rows_per_date(lake.scan(table, version), dates), max_rows, max_dates)


def rows_per_date(frame: pl.LazyFrame, dates: list[dt.date]) -> dict[dt.date, int]:
    """Rows of each of ``dates`` in ``frame`` (one column read)."""
    counts = frame.filter(pl.col(EVENT_DATE).is_in(dates)).group_by(EVENT_DATE).len().collect()
    return dict(counts.iter_rows())


def row_batches(dates: list[dt.date], counts: dict[dt.date, int], max_rows: int, max_dates: int | None = None) -> list[list[dt.date]]:
    """Consecutive groups of whole dates, each of at most ``max_rows`` rows (a larger date alone) and
    ``max_dates`` dates: each is read, transformed and committed on its own, so memory is bounded by a
    batch, not by the whole table (a full refresh of 10M rows needed > 18 GB), while a small table is one
    commit (one file per partition) rather than one per few dates."""
    if max_rows < 1 or (max_dates is not None and max_dates < 1):
        raise ValueError("batch_rows and batch_dates must be at least 1")
    batches: list[list[dt.date]] = []
    rows = 0
    for date in dates:
        n = counts.get(date, 0)
        if batches and rows + n <= max_rows and (max_dates is None or len(batches[-1]) < max_dates):
            batches[-1].append(date)
            rows += n
        else:
            batches.append([date])
            rows = n
    return batches


# ---------------------------------------------------------------------------------------- features
def load_state(lake: Lake, spec: DatasetSpec, version: int | None = None) -> FeatureState | None:
    name = Tables.feature_state(spec.name)
    return FeatureState.from_frame(lake.scan(name, version).collect()) if lake.exists(name) else None


def refresh_features(
    lake: Lake, spec: DatasetSpec, *, refit: bool = False, batch_dates: int | None = BATCH_DATES, batch_rows: int = BATCH_ROWS
) -> StageReport:
    """Build features for the silver partitions that changed (or whose side-table rows changed).

    The encoders are fitted once (on the training window of the split) and stored; ``refit=True``
    fits them again and rebuilds every partition.
    """
    silver, features = Tables.silver(spec.name), Tables.features(spec.name)
    report = StageReport(table=features)
    lake.prefetch(silver, features, Tables.feature_state(spec.name), *(Tables.silver(j.table) for j in spec.joins))
    if not lake.exists(silver):
        return report
    silver_version = lake.version(silver)
    side_names = {j.table: Tables.silver(j.table) for j in spec.joins}
    missing = [name for name in side_names.values() if not lake.exists(name)]
    if missing:
        raise RuntimeError(f"features need side table(s) {missing}: ingest them first")
    side_versions = {t: lake.version(name) for t, name in side_names.items()}
    report.upstream = {silver: silver_version, **{side_names[t]: v for t, v in side_versions.items()}}

    def sides() -> dict[str, pl.LazyFrame]:
        return {t: lake.scan(side_names[t], side_versions[t]) for t in side_names}

    state_version = lake.version(Tables.feature_state(spec.name))
    state = None if refit else load_state(lake, spec, state_version)
    watermark = lake.last_commit(features, "silver_version")
    last = watermark.get(META + "silver_version") if watermark else None
    # the state of the last complete run differs (a refit that failed half-way, before its last
    # commit): every partition must be re-encoded with the stored state
    last_state = watermark.get(META + "state_version") if watermark else None
    state_changed = last_state is not None and last_state != str(state_version)
    # silver's log first: its handle at the head then serves the scans (one open, Lake._snapshot)
    dates = None if (state is None or last is None or state_changed) else lake.dates_since(silver, int(last))

    def present(among: list[dt.date] | None = None) -> list[dt.date]:
        """Silver's dates (``among`` those): a read of its ``event_date`` column, pruned by statistics when ``among`` is given."""
        frame = lake.scan(silver, silver_version).select(EVENT_DATE)
        if among is not None:
            frame = frame.filter(pl.col(EVENT_DATE).is_in(pl.Series(among, dtype=pl.Date).implode()))
        return _dates(frame.unique().collect().to_series())

    if dates is not None:
        last_sides = json.loads(watermark.get(META + "side_versions") or "{}")
        for table, name in side_names.items():
            changed = lake.dates_since(name, last_sides.get(table))
            if changed is None:
                dates = None
                break
            affected = side_dates_affected(changed, spec, table)
            # only the affected dates silver holds; no read at all when the side table did not change (a daily run)
            dates = sorted(set(dates) | set(present(affected) if affected else []))
    if dates is None:
        report.full_refresh = True
        dates = present()
    report.dates = dates
    if not dates:
        return report

    if state is None:
        # fitted once on the policy's training window of the data present now, then kept as the window moves
        # (see the module docstring): every partition written stays valid, training needs no re-encoding
        state, windows = fit_on_training_window(lake.scan(silver, silver_version), sides(), spec)
        state_version = lake.overwrite(
            Tables.feature_state(spec.name), state.to_frame(),
            metadata={"silver_version": str(silver_version), "fit_window": json.dumps(windows.as_dict())},
        )  # fmt: skip
        report.state_refitted = True

    batches = date_batches(lake, silver, silver_version, dates, batch_rows, batch_dates)
    for i, batch in enumerate(batches):
        rows = lake.scan(silver, silver_version).filter(pl.col(EVENT_DATE).is_in(batch))
        side_frames = {}
        for table, frame in sides().items():
            first, end = side_window(batch, spec, table)
            side_frames[table] = frame.filter(pl.col(EVENT_DATE).is_between(first, end))
        out = build_features(rows, side_frames, state, spec).collect(engine="in-memory")
        report.rows_in += out.height
        report.rows_out += out.height
        # every commit says which state encoded it; only the last one advances the watermarks
        metadata: dict[str, object] = {"state_version": str(state_version), "dates": [d.isoformat() for d in batch]}
        if i == len(batches) - 1:
            metadata.update(silver_version=str(silver_version), side_versions=json.dumps(side_versions), rows_out=report.rows_out)
        report.version = lake.replace_dates(features, out, batch, partitioning=spec.partitioning, metadata=metadata)
    return report
