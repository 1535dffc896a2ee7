"""Cleansing: pure ``LazyFrame -> LazyFrame`` functions driven by a table spec (no I/O, no Dagster).

Order matters and is fixed by :func:`cleanse`: de-duplicate on the key (latest ingested row wins),
derive the target, flag rule violations (the failing rule's name and a readable reason), then clip
outliers on the rows that passed.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from aiflow.data.encoding import clip_outliers  # one clipping rule for silver and for raw rows at serving
from aiflow.data.parse import REASON, RECORD, RULE
from aiflow.spec import EVENT_DATE, LINEAGE_COLUMNS, DatasetSpec, TableSpec

#: Order that decides which of several rows with the same key is the latest.
RECENCY = ["_ingested_at", "_source_file", "_source_row"]


def deduplicate(lf: pl.LazyFrame, table: TableSpec) -> pl.LazyFrame:
    """Keep one row per key: the one ingested last (ties: later file name, later row).

    Picks the latest row per key with a window instead of sorting the whole table (every column)
    first, which was the cleansing stage's largest cost (benchmarks/README.md).
    """
    latest = pl.col("__i") == pl.col("__i").sort_by(RECENCY, nulls_last=False).last().over(table.key)
    return lf.with_row_index("__i").filter(latest).drop("__i")


def derive_target(lf: pl.LazyFrame, spec: DatasetSpec) -> pl.LazyFrame:
    """Add the target column named by the spec, following its rule for a null source."""
    t = spec.target
    source = pl.col(t.source)
    if t.kind == "identity":
        value = source.cast(pl.Float64)
    else:
        value = pl.when(source.is_null()).then(
            pl.lit(None if t.when_null == "quarantine" else t.when_null == "positive", pl.Boolean)
        ).otherwise(source > t.threshold)
        value = value.cast(pl.Int8)
    return lf.with_columns(value.alias(t.name))


def flag_violations(lf: pl.LazyFrame, table: TableSpec, target: str | None = None) -> pl.LazyFrame:
    """Add ``_rule`` and ``_reason``: the first rule a row breaks, null when it breaks none."""
    checks: list[tuple[pl.Expr, str, pl.Expr]] = []
    for column in table.quality.not_null:
        checks.append((pl.col(column).is_null(), f"not_null:{column}", pl.lit(f"column '{column}' is null")))
    for column, bounds in table.quality.ranges.items():
        c = pl.col(column)
        outside = pl.lit(False)
        if bounds.min is not None:
            outside = outside | (c < bounds.min)
        if bounds.max is not None:
            outside = outside | (c > bounds.max)
        reason = pl.format(f"column '{column}' = {{}} is outside [{bounds.min}, {bounds.max}]", c.cast(pl.String))
        checks.append((outside.fill_null(False), f"range:{column}", reason))
    if target is not None:
        checks.append((pl.col(target).is_null(), f"target_null:{target}", pl.lit(f"target '{target}' cannot be derived (source is null)")))
    if not checks:
        return lf.with_columns(pl.lit(None, pl.String).alias(RULE), pl.lit(None, pl.String).alias(REASON))
    rule = pl.coalesce([pl.when(cond).then(pl.lit(name)) for cond, name, _ in checks])
    reason = pl.coalesce([pl.when(cond).then(text) for cond, _, text in checks])
    return lf.with_columns(rule.alias(RULE), reason.alias(REASON))


@dataclass
class Cleansed:
    valid: pl.LazyFrame  # the silver rows
    rejected: pl.LazyFrame  # quarantine rows: _rule, _reason, _record, lineage, event_date


def silver_columns(table: TableSpec) -> list[str]:
    target = [table.target.name] if isinstance(table, DatasetSpec) else []
    return [*table.columns, *target, EVENT_DATE, *LINEAGE_COLUMNS]


def cleanse(bronze: pl.LazyFrame, table: TableSpec) -> Cleansed:
    """Bronze rows → silver rows plus rejected rows, each rejected row with its rule and reason."""
    lf = deduplicate(bronze, table)
    target = None
    if isinstance(table, DatasetSpec):
        lf = derive_target(lf, table)
        target = table.target.name
    lf = flag_violations(lf, table, target)
    ok = pl.col(RULE).is_null()
    valid = clip_outliers(lf.filter(ok), table).select(silver_columns(table))
    rejected = lf.filter(~ok).select(
        pl.lit("cleanse").alias("_stage"),
        RULE,
        REASON,
        pl.struct([pl.col(c).cast(pl.String) for c in table.columns]).struct.json_encode().alias(RECORD),
        "_source_file",
        "_source_sha256",
        "_source_row",
        "_batch_id",
        pl.lit(None, pl.Datetime("us", "UTC")).alias("_quarantined_at"),
        EVENT_DATE,
    )
    return Cleansed(valid=valid, rejected=rejected)
