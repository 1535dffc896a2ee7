"""What-if variants of engine functions, to measure proposed fixes without editing ``aiflow/``.

A worker given ``"whatif": [names]`` monkeypatches the engine in its own process only. Each variant
returns exactly what the engine function returns (checked by ``python -m benchmarks.whatif``):

* ``lean_parse``: ``parse_file`` that converts each column once, splits good and bad rows first and
  builds ``_reason`` / ``_record`` (the JSON of the raw row) for the bad rows only. The engine builds
  the JSON record and a formatted reason for every row of every file and converts the event-time
  column twice (once for the value, once for the failure test).
* ``chunk_parse``: ingestion reads each file (header + typed CSV read, as the engine does) but types,
  validates and adds lineage once per chunk of ~1M rows instead of once per file: the engine spends
  a fixed few milliseconds per file in ~25 small eager Polars operations, which dominate with
  daily files of ~900 rows.
* ``unpartitioned_bronze``: bronze appends without ``partition_by=[event_date]``: one Parquet file per
  chunk instead of one per event date (~1,100 files per 1M-row chunk of this data).
* ``checkpoint_interval_10``: tables created with ``delta.checkpointInterval = 10`` (delta-rs default:
  100), so opening a table replays at most ~10 JSON commits instead of up to 99. The engine opens
  ~30 Delta tables per daily ingest + refresh, so the daily cost grows with the log's length.
* ``fast_dedupe``: ``deduplicate`` keeping the latest row per key with a window over the key
  (``_i == _i.sort_by(recency).last().over(key)``) instead of sorting the whole frame, every column,
  by ``_ingested_at, _source_file, _source_row`` and then running ``unique(keep="last", maintain_order=True)``.
* ``collect_all``: collect the ``valid`` and ``rejected`` frames of ``cleanse`` together
  (``pl.collect_all``, in-memory engine) so the de-duplication runs once, not once per frame.
* ``single_sort``: ``build_features`` sorting once by ``(event_time, *key)`` before the as-of join
  (which only needs the event-time order) instead of sorting by event time and again, every
  column, by ``(event_date, event_time, *key)`` at the end. Same rows, same order.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from aiflow import cleanse as cleanse_mod
from aiflow import features as features_mod
from aiflow import ingest as ingest_mod
from aiflow.lake import Lake
from aiflow.parse import (
    REASON,
    RECORD,
    ROW,
    RULE,
    Parsed,
    RejectedFile,
    _check_required,
    _convert,
    _read_csv_typed,
    _read_raw,
)
from aiflow.spec import EVENT_DATE, POLARS_TYPES, DatasetSpec, TableSpec


def _split(raw: pl.DataFrame, table: TableSpec, keep: tuple[str, ...] = ()) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Type ``raw`` (which has ``_source_row``) and split good and bad rows, exactly as ``parse_file`` does.

    Columns named in ``keep`` are carried through to both outputs (the chunk-level variant's file index).
    """
    raw_columns = [c for c in raw.columns if c != ROW and c not in keep]
    schema = table.columns
    new_columns = [c for c in raw_columns if c not in schema]
    final: dict[str, pl.Expr] = {}
    conversions: list[pl.Expr] = []
    failures: list[tuple[str, str, pl.Expr]] = []
    for column, spec in schema.items():
        if column not in raw.columns:
            final[column] = pl.lit(None, POLARS_TYPES[spec.type]).alias(column)
            continue
        dtype = raw.schema[column]
        if dtype == POLARS_TYPES[spec.type]:
            final[column] = pl.col(column)
            continue
        tmp = f"__conv_{column}"
        conversions.append(_convert(column, dtype, spec.type).alias(tmp))
        final[column] = pl.col(tmp).alias(column)
        failures.append((column, spec.type, pl.col(column).is_not_null() & pl.col(tmp).is_null()))

    event = final[table.event_time].alias(table.event_time)
    event_date = (event.dt.date() if schema[table.event_time].type == "datetime" else event).alias(EVENT_DATE)
    type_failed = pl.any_horizontal([f for _, _, f in failures]) if failures else pl.lit(False)
    frame = (raw.with_columns(conversions) if conversions else raw).with_columns((type_failed | event.is_null()).alias("__bad"))
    good_rows = frame.filter(~pl.col("__bad"))
    bad_rows = frame.filter(pl.col("__bad"))

    good = good_rows.select(
        *(expr.alias(column) for column, expr in final.items()),
        *(pl.col(c).cast(pl.String) for c in new_columns),
        event_date,
        ROW,
        *keep,
    )
    texts = [
        pl.when(failed).then(pl.format(f"column '{column}': cannot parse '{{}}' as {kind}", pl.col(column).cast(pl.String)))
        for column, kind, failed in failures
    ]
    type_reason = pl.coalesce(texts) if texts else pl.lit(None, pl.String)
    reason = pl.when(type_reason.is_null() & event.is_null()).then(pl.lit(f"event time column '{table.event_time}' is null")).otherwise(type_reason)
    rule = pl.when(type_reason.is_not_null()).then(pl.lit("type")).otherwise(pl.lit("event_time"))
    bad = bad_rows.select(
        ROW,
        rule.alias(RULE),
        reason.alias(REASON),
        pl.struct([pl.col(c).cast(pl.String) for c in raw_columns]).struct.json_encode().alias(RECORD),
        event_date,
        *keep,
    )
    return good, bad, new_columns


def _read_checked(data: bytes, fmt: str, table: TableSpec, name: str) -> pl.DataFrame:
    if fmt not in table.landing.formats:
        raise RejectedFile(f"{name}: format {fmt!r} is not accepted for table {table.name!r} ({table.landing.formats})")
    typed = None
    if fmt == "csv":
        try:
            header = pl.read_csv(data, n_rows=0, infer_schema=False).columns
        except pl.exceptions.PolarsError as exc:
            raise RejectedFile(f"{name}: cannot parse as csv: {str(exc).splitlines()[0]}") from exc
        _check_required(header, table, name)
        typed = _read_csv_typed(data, table, header)
    raw = typed if typed is not None else _read_raw(data, fmt, table, name)
    _check_required(raw.columns, table, name)
    return raw


def lean_parse_file(data: bytes, fmt: str, table: TableSpec, name: str) -> Parsed:
    raw = _read_checked(data, fmt, table, name)
    raw = raw.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
    good, bad, new_columns = _split(raw, table)
    return Parsed(good=good, bad=bad, new_columns=new_columns)


class _ChunkParse:
    """``_Chunk.add_file`` / ``commit`` that read each file but type, validate and add lineage once per chunk.

    Files are read as the engine reads them (header, then the typed CSV read); files with the same
    header are concatenated and typed/validated/lineaged in one pass at commit time; per-file
    counts and dates come from one group-by. Anything unusual (non-CSV, a rejected file, a typed
    read that fails) goes through the engine's own per-file ``add_file``. Outcomes keep file order.
    """

    original_add_file = staticmethod(ingest_mod._Chunk.add_file)
    original_commit = staticmethod(ingest_mod._Chunk.commit)

    @staticmethod
    def add_file(self, file, data, digest, landing) -> None:
        pending = self.__dict__.setdefault("_pending", {})
        typed = None
        if file.format == "csv" and "csv" in self.table.landing.formats:
            try:
                header = pl.read_csv(data, n_rows=0, infer_schema=False).columns
                if all(c in header for c in self.table.required_columns):
                    typed = _read_csv_typed(data, self.table, header)
            except pl.exceptions.PolarsError:
                typed = None
        if typed is None:
            return _ChunkParse.original_add_file(self, file, data, digest, landing)
        slot = len(self.outcomes)
        self.outcomes.append((file, None))  # filled at commit
        pending.setdefault(tuple(typed.columns), []).append((slot, file, digest, typed))
        self.rows += typed.height

    @staticmethod
    def _finalize(self) -> None:
        pending = self.__dict__.pop("_pending", {})
        for entries in pending.values():
            frames = [typed for *_, typed in entries]
            heights = [f.height for f in frames]
            index = pl.Series("__f", np.repeat(np.arange(len(heights), dtype=np.uint32), heights))
            raw = pl.concat(frames).with_columns(index).with_columns(
                (pl.int_range(pl.len(), dtype=pl.Int64).over("__f") + 1).alias(ROW)
            )
            good, bad, new_columns = _split(raw, self.table, keep=("__f",))
            names = pl.Series([file.name for _, file, _, _ in entries])
            digests = pl.Series([digest for _, _, digest, _ in entries])

            def lineage(frame: pl.DataFrame) -> pl.DataFrame:
                return frame.with_columns(
                    pl.lit(names).gather(pl.col("__f")).alias("_source_file"),
                    pl.lit(digests).gather(pl.col("__f")).alias("_source_sha256"),
                    pl.lit(self.batch_id).alias("_batch_id"),
                    pl.lit(self.now, pl.Datetime("us", "UTC")).alias("_ingested_at"),
                )

            good, bad = lineage(good), lineage(bad)
            stats = {}
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
            for i, (slot, file, digest, _) in enumerate(entries):
                st = stats.get(i, {"good": 0, "bad": 0, "dates": set()})
                outcome = ingest_mod.FileOutcome(
                    file.name, digest, ingest_mod.INGESTED, st["good"], st["bad"], None, list(new_columns), sorted(st["dates"])
                )
                self.outcomes[slot] = (file, outcome)

    @staticmethod
    def commit(self, report):
        _ChunkParse._finalize(self)
        return _ChunkParse.original_commit(self, report)


def fast_deduplicate(lf: pl.LazyFrame, table: TableSpec) -> pl.LazyFrame:
    latest = pl.col("__i") == pl.col("__i").sort_by(cleanse_mod.RECENCY, nulls_last=False).last().over(table.key)
    return lf.with_row_index("__i").filter(latest).drop("__i")


def single_sort_build_features(silver, sides, state, spec: DatasetSpec) -> pl.LazyFrame:
    lf = features_mod.add_calendar(silver, spec).sort(spec.event_time, *spec.key)
    for join in spec.joins:
        side_spec = spec.side(join.table)
        side = (
            sides[join.table]
            .select(*join.by, pl.col(side_spec.event_time).alias("_side_event_time"), *(pl.col(c).alias(f"{join.table}_{c}") for c in join.columns))
            .sort("_side_event_time")
        )
        lf = lf.join_asof(
            side, left_on=spec.event_time, right_on="_side_event_time", by=join.by, strategy="backward",
            tolerance=join.tolerance, check_sortedness=False,
        ).drop("_side_event_time", strict=False)
    # event_date is the UTC date of the event time, so (event_time, key) order is (event_date, event_time, key) order
    return features_mod.encode(lf, state, spec).select(features_mod.output_columns(spec))


def _with_checkpoint_interval(original, interval: int):
    from deltalake import DeltaTable

    def write(table_or_uri, data, *args, **kwargs):
        if isinstance(table_or_uri, str) and not DeltaTable.is_deltatable(table_or_uri, storage_options=kwargs.get("storage_options")):
            kwargs["configuration"] = {"delta.checkpointInterval": str(interval), **(kwargs.get("configuration") or {})}
        return original(table_or_uri, data, *args, **kwargs)

    return write


def _unpartitioned_append(original):
    def append(self, table, df, *, partition_by=None, metadata=None, merge_schema=True):
        if table.startswith("bronze/"):
            partition_by = None
        return original(self, table, df, partition_by=partition_by, metadata=metadata, merge_schema=merge_schema)

    return append


def apply(names: list[str] | None) -> list[str]:
    """Monkeypatch the named variants into the engine (this process only); returns the names applied."""
    names = list(names or [])
    known = {"lean_parse", "chunk_parse", "unpartitioned_bronze", "checkpoint_interval_10", "fast_dedupe", "collect_all", "single_sort"}
    unknown = set(names) - known
    if unknown:
        raise ValueError(f"unknown what-if variant(s) {sorted(unknown)}; known: {sorted(known)}")
    if "lean_parse" in names:
        ingest_mod.parse_file = lean_parse_file
    if "chunk_parse" in names:
        ingest_mod._Chunk.add_file = _ChunkParse.add_file
        ingest_mod._Chunk.commit = _ChunkParse.commit
    if "unpartitioned_bronze" in names:
        Lake.append = _unpartitioned_append(Lake.append)
    if "checkpoint_interval_10" in names:
        import aiflow.lake as lake_mod

        lake_mod.write_deltalake = _with_checkpoint_interval(lake_mod.write_deltalake, 10)
    if "fast_dedupe" in names:
        cleanse_mod.deduplicate = fast_deduplicate
    if "single_sort" in names:
        features_mod.build_features = single_sort_build_features
    return names


def _check() -> None:
    """Each variant gives the engine's result: demo files, hand-made bad files, duplicated keys."""
    import datetime as dt

    from aiflow.demo import flights_csv
    from aiflow.parse import parse_file
    from aiflow.spec import demo_spec_path, load_spec

    spec = load_spec(demo_spec_path())
    full = flights_csv()
    header, *lines = full.decode().splitlines()
    cases = {
        "clean": "\n".join([header, *lines[:5000]]).encode(),
        "bad types": "\n".join([header, *lines[:50], lines[50].replace("2013,1,1,", "2013,1,x,", 1), lines[51].rsplit(",", 1)[0] + ",not-a-date", lines[52].rsplit(",", 1)[0] + ",NA"]).encode(),
        "bad time only": "\n".join([header, *lines[:50], lines[51].rsplit(",", 1)[0] + ",not-a-date", lines[52].rsplit(",", 1)[0] + ",NA"]).encode(),
        "extra column": "\n".join([header + ",extra", *(l + ",z" for l in lines[:20])]).encode(),
    }
    for label, data in cases.items():
        a, b = parse_file(data, "csv", spec, "f.csv"), lean_parse_file(data, "csv", spec, "f.csv")
        assert a.good.equals(b.good), label
        assert a.bad.equals(b.bad), (label, a.bad, b.bad)
        assert a.new_columns == b.new_columns, label
        print(f"lean_parse == parse_file on {label!r}: {a.good.height} good, {a.bad.height} bad")

    frame = parse_file(cases["clean"], "csv", spec, "f.csv").good
    now = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    bronze = pl.concat([
        frame.with_columns(pl.lit("a.csv").alias("_source_file"), pl.lit(now).alias("_ingested_at")),
        frame.head(700).with_columns(pl.lit("b.csv").alias("_source_file"), pl.lit(now).alias("_ingested_at"), pl.col("dep_delay") + 1),
        frame.slice(100, 300).with_columns(pl.lit("a.csv").alias("_source_file"), pl.lit(now + dt.timedelta(hours=1)).alias("_ingested_at"), pl.col("dep_delay") + 2),
    ]).sample(fraction=1.0, shuffle=True, seed=7)
    key = [*spec.key]
    a = cleanse_mod.deduplicate(bronze.lazy(), spec).collect().sort(key)
    b = fast_deduplicate(bronze.lazy(), spec).collect().sort(key)
    assert a.equals(b)
    print(f"fast_dedupe == deduplicate: {a.height} rows kept of {bronze.height}")


def _check_ingest() -> None:
    """chunk_parse ingests the same bronze rows, quarantine rows and ledger outcomes as the engine."""
    import tempfile
    from pathlib import Path

    from aiflow.demo import write_landing
    from aiflow.ingest import ingest
    from aiflow.landing import LocalLandingZone
    from aiflow.spec import demo_spec_path, load_spec

    spec = load_spec(demo_spec_path())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = write_landing(root / "land", days=6)
        text = files[2].read_text().splitlines()
        text[5] = text[5].rsplit(",", 1)[0] + ",not-a-date"  # one bad row in a file that stays on the fast path
        files[2].write_text("\n".join(text) + "\n")
        (root / "land" / "flights" / "extra.csv").write_text(files[0].read_text().splitlines()[0] + ",extra\n" + "\n".join(l + ",e" for l in files[0].read_text().splitlines()[1:4]) + "\n")
        (root / "land" / "flights" / "broken.csv").write_text("year,month\n2013,1\n")
        zone = LocalLandingZone(root / "land" / "flights")
        ignore_bronze = ["_batch_id", "_ingested_at"]
        ignore_ledger = ["batch_id", "ingested_at", "rejected_to"]
        frames = []
        for name in ("engine", "chunk_parse"):
            if name == "chunk_parse":
                apply(["chunk_parse"])
            lake = Lake(root / name)
            ingest(lake, zone, spec, batch_id="b")
            key = ["_source_file", "_source_row"]
            frames.append(
                (
                    lake.scan("bronze/flights").collect().drop(ignore_bronze).sort(key),
                    lake.scan("quarantine/flights").collect().drop("_batch_id", "_quarantined_at").sort(key),
                    lake.scan("ledger/flights").collect().drop(ignore_ledger).sort("file"),
                )
            )
        (b1, q1, l1), (b2, q2, l2) = frames
        assert b1.select(sorted(b1.columns)).equals(b2.select(sorted(b2.columns))), "bronze differs"
        assert q1.select(sorted(q1.columns)).equals(q2.select(sorted(q2.columns))), "quarantine differs"
        assert l1.equals(l2), (l1, l2)
        print(f"chunk_parse == engine ingest: {b1.height} bronze rows, {q1.height} quarantined, {l1.height} ledger rows")


if __name__ == "__main__":
    _check()
    _check_ingest()
