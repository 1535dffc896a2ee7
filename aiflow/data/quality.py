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
    passed: bool
    description: str
    metadata: dict[str, object] = field(default_factory=dict)


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
    assert list(schema) == silver_columns(table), "silver schema out of step with cleanse.silver_columns"
    return schema


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
    return Verdict(
        passed,
        "; ".join(parts) or "schema matches the spec",
        {"missing": missing, "wrong_types": json.dumps(wrong), "extra": extra},
    )


def check_key_unique(lf: pl.LazyFrame, key: list[str]) -> Verdict:
    """No two rows share a key."""
    counts = lf.group_by(key).agg(pl.len().alias("n")).filter(pl.col("n") > 1)
    dupes = counts.select(pl.len(), pl.col("n").sum()).collect()
    keys, rows = dupes.row(0)
    sample = counts.head(5).collect().to_dicts() if keys else []
    return Verdict(
        keys == 0,
        f"{keys} duplicated keys over {rows or 0} rows" if keys else f"key {key} is unique",
        {"duplicated_keys": int(keys), "sample": json.dumps(sample, default=str)},
    )


def check_null_rates(lf: pl.LazyFrame, limits: dict[str, float]) -> Verdict:
    """Null share of each column at or under its limit."""
    if not limits:
        return Verdict(True, "no null-rate limits in the spec")
    rates = lf.select(pl.col(c).null_count() / pl.len().clip(1) for c in limits).collect().row(0, named=True)
    over = {c: round(r, 6) for c, r in rates.items() if r > limits[c]}
    return Verdict(
        not over,
        f"null rate over the limit: {over}" if over else "null rates within limits",
        {"null_rates": json.dumps({c: round(r, 6) for c, r in rates.items()}), "limits": json.dumps(limits)},
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


def silver_checks(lake: Lake, table: TableSpec) -> dict[str, Verdict]:
    """Checks on ``silver/<table>``: schema, key uniqueness, null rates, row counts against bronze."""
    silver = Tables.silver(table.name)
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
    silver_rows = lf.select(pl.len()).collect().item()
    quarantined = (
        lake.scan(Tables.quarantine(table.name)).filter(pl.col("_stage") == "cleanse").select(pl.len()).collect().item()
        if lake.exists(Tables.quarantine(table.name))
        else 0
    )
    consistent = silver_rows > 0 and silver_rows + quarantined == counts["keys"]
    out["row_counts"] = Verdict(
        consistent,
        (
            f"silver {silver_rows} + quarantined {quarantined} == distinct bronze keys {counts['keys']}"
            if consistent
            else f"silver {silver_rows} + quarantined {quarantined} != distinct bronze keys {counts['keys']} (or silver is empty)"
        ),
        {
            "silver_rows": silver_rows,
            "quarantined_rows": quarantined,
            "bronze_rows": counts["rows"],
            "bronze_distinct_keys": counts["keys"],
            "superseded_rows": counts["rows"] - counts["keys"],
        },
    )
    return out


def features_checks(lake: Lake, spec: DatasetSpec) -> dict[str, Verdict]:
    """Checks on ``features/<dataset>``: schema, key uniqueness, null rates, one row per silver row."""
    features = Tables.features(spec.name)
    lf = lake.scan(features)
    schema = dict(lf.collect_schema())
    out = {
        "schema_matches_spec": check_schema(schema, output_schema(spec)),
        "key_unique": check_key_unique(lf, spec.key),
        "null_rates": check_null_rates(lf, null_limits(spec)),
    }
    silver_version = _pinned(lake, features, "silver_version")
    silver_rows = lake.scan(Tables.silver(spec.name), silver_version).select(pl.len()).collect().item()
    rows = lf.select(pl.len()).collect().item()
    ok = rows > 0 and rows == silver_rows
    out["row_counts"] = Verdict(
        ok,
        f"features {rows} rows, silver {silver_rows} rows at version {silver_version}",
        {"features_rows": rows, "silver_rows": silver_rows, "silver_version": silver_version},
    )
    lineage = [c for c in LINEAGE_COLUMNS if c in schema]
    if lineage:
        out["schema_matches_spec"].passed = False
        out["schema_matches_spec"].description += f"; lineage columns leaked into features: {lineage}"
    return out
