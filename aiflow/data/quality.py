"""Data-quality checks on silver and features tables. Pure functions returning a verdict with evidence.

The Dagster layer turns each :class:`Verdict` into a blocking asset check, so a failure stops every
downstream asset; the engine stays free of Dagster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import polars as pl

from aiflow.data.cleanse import silver_columns
from aiflow.data.features import output_schema
from aiflow.data.ingest import INGESTED
from aiflow.spec import EVENT_DATE, LINEAGE_COLUMNS, POLARS_TYPES, DatasetSpec, TableSpec
from aiflow.storage.lake import Lake, Tables


@dataclass
class Verdict:
    """The outcome of one check, with its evidence.

    ``metadata`` holds numbers the UI can plot (ints and floats: the observed value, the threshold and
    the margin between them, ``margin < 0`` meaning the threshold was crossed) plus a few texts.
    ``warn_only`` marks a failure that must be seen but must not block (e.g. nothing to check yet).
    """

    passed: bool
    description: str
    metadata: dict[str, object] = field(default_factory=dict)
    warn_only: bool = False


#: What each check verifies (the asset check's description in the UI).
CHECK_DESCRIPTIONS = {
    "schema_matches_spec": "Every column of the spec is present with its type (extra columns are reported, not failed).",
    "key_unique": "No two rows share the table's key (observed: duplicated keys; threshold 0).",
    "null_rates": "The null share of each column with a limit in the spec's quality.max_null_rate is at or under it "
    "(observed: the column closest to its limit).",
    "row_counts": "No rows lost or invented between the stage and its pinned upstream version "
    "(observed: the difference in rows; threshold 0).",
}


class SchemaDriftError(RuntimeError):
    """The engine's own description of a table disagrees with itself (a programming error, not bad data)."""


def expected_silver_schema(table: TableSpec) -> dict[str, pl.DataType]:
    schema = {name: POLARS_TYPES[c.type] for name, c in table.columns.items()}
    if isinstance(table, DatasetSpec):
        schema[table.target.name] = pl.Float64() if table.target.kind == "identity" else pl.Int8()
    schema[EVENT_DATE] = pl.Date()
    schema.update(
        {
            "_source_file": pl.String(),
            "_source_sha256": pl.String(),
            "_source_row": pl.Int64(),
            "_batch_id": pl.String(),
            "_ingested_at": pl.Datetime("us", "UTC"),
        }
    )
    if list(schema) != silver_columns(table):
        raise SchemaDriftError(
            f"silver schema out of step with cleanse.silver_columns: {list(schema)} != {silver_columns(table)}"
        )
    return schema


def _measure(observed: float, threshold: float, *, higher_is_worse: bool = True) -> dict[str, object]:
    """The three numbers every verdict reports; ``margin`` is how far the observation is inside the threshold."""
    margin = threshold - observed if higher_is_worse else observed - threshold
    kind = float if isinstance(observed, float) or isinstance(threshold, float) else int
    return {"observed": kind(observed), "threshold": kind(threshold), "margin": kind(margin)}


def check_schema(actual: dict[str, pl.DataType], expected: dict[str, pl.DataType]) -> Verdict:
    """Every expected column is present with its type; extra columns are reported, not failed."""
    missing = [c for c in expected if c not in actual]
    wrong = {c: f"{actual[c]} (expected {t})" for c, t in expected.items() if c in actual and actual[c] != t}
    extra = [c for c in actual if c not in expected]
    passed = not missing and not wrong
    parts = []
    if missing:
        parts.append(f"missing columns {missing}")
    if wrong:
        parts.append(f"wrong types {wrong}")
    problems = len(missing) + len(wrong)
    return Verdict(
        passed,
        "; ".join(parts) or "schema matches the spec",
        {
            **_measure(problems, 0),
            "missing_columns": len(missing),
            "wrong_type_columns": len(wrong),
            "extra_columns": len(extra),
            "expected_columns": len(expected),
            "missing": ", ".join(missing),
            "wrong_types": json.dumps(wrong),
            "extra": ", ".join(extra),
        },
    )


def check_key_unique(lf: pl.LazyFrame, key: list[str]) -> Verdict:
    """No two rows share a key."""
    counts = lf.group_by(key).agg(pl.len().alias("n")).filter(pl.col("n") > 1)
    dupes = counts.select(pl.len(), pl.col("n").sum()).collect()
    keys, rows = dupes.row(0)
    keys, rows = int(keys), int(rows or 0)
    sample = counts.head(5).collect().to_dicts() if keys else []
    return Verdict(
        keys == 0,
        f"{keys} duplicated keys over {rows} rows" if keys else f"key {key} is unique",
        {**_measure(keys, 0), "duplicated_keys": keys, "rows_with_duplicated_keys": rows, "sample": json.dumps(sample, default=str)},
    )


def check_null_rates(lf: pl.LazyFrame, limits: dict[str, float]) -> Verdict:
    """Null share of each column at or under its limit.

    The headline numbers are those of the column closest to (or furthest over) its limit; every
    column's rate is reported too (``null_rate/<column>``).
    """
    if not limits:
        return Verdict(True, "no null-rate limits in the spec", {**_measure(0, 0), "columns_checked": 0, "columns_over_limit": 0})
    rates = lf.select(pl.col(c).null_count() / pl.len().clip(1) for c in limits).collect().row(0, named=True)
    rates = {c: float(r) for c, r in rates.items()}
    over = {c: round(r, 6) for c, r in rates.items() if r > limits[c]}
    worst = min(rates, key=lambda c: limits[c] - rates[c])
    return Verdict(
        not over,
        f"null rate over the limit: {over}" if over else "null rates within limits",
        {
            **_measure(rates[worst], float(limits[worst])),
            "worst_column": worst,
            "columns_checked": len(limits),
            "columns_over_limit": len(over),
            **{f"null_rate/{c}": round(r, 6) for c, r in rates.items()},
            "limits": json.dumps(limits),
        },
    )


def null_limits(table: TableSpec) -> dict[str, float]:
    """The spec's max_null_rate, with ``key`` and ``target`` expanded to column names."""
    limits: dict[str, float] = {}
    for name, limit in table.quality.max_null_rate.items():
        if name == "key":
            limits.update({c: limit for c in table.key})
        elif name == "target":
            if isinstance(table, DatasetSpec):
                limits[table.target.name] = limit
        else:
            limits[name] = limit
    return limits


def _pinned(lake: Lake, table: str, key: str) -> int | None:
    value = lake.last_metadata(table, key)
    return int(value) if value is not None else None


def _nothing_to_check(lake: Lake, table: str) -> dict[str, Verdict]:
    """Verdicts for a table that does not exist yet: not a pass (nothing was verified), but no block either."""
    text = f"no table at {lake.uri(table)} yet (nothing ingested?): nothing to check"
    return {name: Verdict(False, text, {"table_exists": False}, warn_only=True) for name in CHECK_DESCRIPTIONS}


def silver_checks(lake: Lake, table: TableSpec) -> dict[str, Verdict]:
    """Checks on ``silver/<table>``: schema, key uniqueness, null rates, row counts against bronze."""
    silver = Tables.silver(table.name)
    if not lake.exists(silver):
        return _nothing_to_check(lake, silver)
    lf = lake.scan(silver)
    out = {
        "schema_matches_spec": check_schema(dict(lf.collect_schema()), expected_silver_schema(table)),
        "key_unique": check_key_unique(lf, table.key),
        "null_rates": check_null_rates(lf, null_limits(table)),
    }
    # rows: every distinct bronze key (of committed batches) is in silver or in quarantine, none lost
    bronze_version, ledger_version = _pinned(lake, silver, "bronze_version"), _pinned(lake, silver, "ledger_version")
    committed = lake.scan(Tables.ledger(table.name), ledger_version).filter(pl.col("outcome") == INGESTED)
    batches = committed.select("batch_id").unique().collect().to_series().implode()
    bronze = lake.scan(Tables.bronze(table.name), bronze_version).filter(pl.col("_batch_id").is_in(batches))
    counts = bronze.select(pl.len().alias("rows"), pl.struct(table.key).n_unique().alias("keys")).collect().row(0, named=True)
    silver_rows = int(lf.select(pl.len()).collect().item())
    quarantined = int(
        lake.scan(Tables.quarantine(table.name)).filter(pl.col("_stage") == "cleanse").select(pl.len()).collect().item()
        if lake.exists(Tables.quarantine(table.name))
        else 0
    )
    keys = int(counts["keys"])
    difference = silver_rows + quarantined - keys
    consistent = silver_rows > 0 and difference == 0
    out["row_counts"] = Verdict(
        consistent,
        (
            f"silver {silver_rows} + quarantined {quarantined} == distinct bronze keys {keys}"
            if consistent
            else f"silver {silver_rows} + quarantined {quarantined} != distinct bronze keys {keys} (or silver is empty)"
        ),
        {
            "observed": abs(difference),
            "threshold": 0,
            "margin": -abs(difference),
            "difference": difference,
            "silver_rows": silver_rows,
            "quarantined_rows": quarantined,
            "bronze_rows": int(counts["rows"]),
            "bronze_distinct_keys": keys,
            "superseded_rows": int(counts["rows"]) - keys,
        },
    )
    return out


def features_checks(lake: Lake, spec: DatasetSpec) -> dict[str, Verdict]:
    """Checks on ``features/<dataset>``: schema, key uniqueness, null rates, one row per silver row."""
    features = Tables.features(spec.name)
    if not lake.exists(features):
        return _nothing_to_check(lake, features)
    lf = lake.scan(features)
    schema = dict(lf.collect_schema())
    out = {
        "schema_matches_spec": check_schema(schema, output_schema(spec)),
        "key_unique": check_key_unique(lf, spec.key),
        "null_rates": check_null_rates(lf, null_limits(spec)),
    }
    silver_version = _pinned(lake, features, "silver_version")
    silver_rows = int(lake.scan(Tables.silver(spec.name), silver_version).select(pl.len()).collect().item())
    rows = int(lf.select(pl.len()).collect().item())
    difference = rows - silver_rows
    ok = rows > 0 and difference == 0
    out["row_counts"] = Verdict(
        ok,
        f"features {rows} rows, silver {silver_rows} rows at version {silver_version}",
        {
            "observed": abs(difference),
            "threshold": 0,
            "margin": -abs(difference),
            "difference": difference,
            "features_rows": rows,
            "silver_rows": silver_rows,
            **({"silver_version": silver_version} if silver_version is not None else {}),
        },
    )
    lineage = [c for c in LINEAGE_COLUMNS if c in schema]
    if lineage:
        schema_verdict = out["schema_matches_spec"]
        schema_verdict.passed = False
        schema_verdict.description += f"; lineage columns leaked into features: {lineage}"
        schema_verdict.metadata["lineage_columns_leaked"] = len(lineage)
        schema_verdict.metadata.update(_measure(int(schema_verdict.metadata["observed"]) + len(lineage), 0))
    return out
