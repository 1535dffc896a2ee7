"""Scope: the data-quality verdicts (schema, key, null rates, row counts): pass on clean data, fail with the right numbers on bad data, tiny spec and demo shapes."""

from __future__ import annotations

import polars as pl
import pytest

from aiflow.data import quality
from aiflow.data.ingest import ingest
from aiflow.data.quality import (
    CHECK_DESCRIPTIONS,
    SchemaDriftError,
    check_key_unique,
    check_null_rates,
    check_schema,
    expected_silver_schema,
    features_checks,
    silver_checks,
)
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.spec import DatasetSpec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.tiny import TRIPS_ROWS, csv_bytes, write_file

WEATHER = b"origin,temp,ts\nJFK,1.5,2013-01-01T09:00:00Z\nEWR,2.5,2013-01-01T23:00:00Z\nLGA,3.5,2013-01-02T01:00:00Z\n"


def _numbers(metadata: dict) -> tuple:
    observed, threshold, margin = metadata["observed"], metadata["threshold"], metadata["margin"]
    for value in (observed, threshold, margin):
        assert type(value) in (int, float), metadata  # plain numbers: the UI plots them
    return observed, threshold, margin


# ------------------------------------------------------------------------------------ single verdicts
def test_schema_verdict_counts_missing_and_mistyped_columns():
    expected = {"a": pl.Int64(), "b": pl.String(), "c": pl.Date()}
    clean = check_schema({"a": pl.Int64(), "b": pl.String(), "c": pl.Date(), "extra": pl.Int8()}, expected)
    assert clean.passed and _numbers(clean.metadata) == (0, 0, 0)
    assert clean.metadata["extra_columns"] == 1 and clean.metadata["extra"] == "extra"

    bad = check_schema({"a": pl.Float64(), "c": pl.Date()}, expected)
    assert not bad.passed
    assert _numbers(bad.metadata) == (2, 0, -2)
    assert (bad.metadata["missing_columns"], bad.metadata["wrong_type_columns"]) == (1, 1)
    assert "missing columns ['b']" in bad.description and "a" in bad.metadata["wrong_types"]


def test_key_verdict_counts_duplicated_keys_and_their_rows():
    clean = check_key_unique(pl.LazyFrame({"k": [1, 2, 3], "d": ["x", "x", "y"]}), ["k", "d"])
    assert clean.passed and _numbers(clean.metadata) == (0, 0, 0)

    lf = pl.LazyFrame({"k": [1, 1, 1, 2, 2, 3], "d": ["x"] * 6})
    bad = check_key_unique(lf, ["k", "d"])
    assert not bad.passed
    assert _numbers(bad.metadata) == (2, 0, -2)
    assert bad.metadata["rows_with_duplicated_keys"] == 5
    assert bad.description == "2 duplicated keys over 5 rows"


def test_null_rate_verdict_reports_the_column_closest_to_its_limit():
    lf = pl.LazyFrame({"a": [1, None, 3, 4], "b": [None, None, 1, 2], "c": [1, 2, 3, 4]})
    ok = check_null_rates(lf, {"a": 0.5, "b": 0.6, "c": 0.0})
    assert ok.passed
    observed, threshold, margin = _numbers(ok.metadata)
    # margins: a 0.25, b 0.1, c 0.0 → c is the closest
    assert (ok.metadata["worst_column"], observed, threshold, margin) == ("c", 0.0, 0.0, 0.0)
    assert ok.metadata["null_rate/b"] == 0.5

    bad = check_null_rates(lf, {"a": 0.5, "b": 0.2})
    assert not bad.passed
    observed, threshold, margin = _numbers(bad.metadata)
    assert bad.metadata["worst_column"] == "b"
    assert (observed, threshold) == (0.5, 0.2) and margin == pytest.approx(-0.3)
    assert bad.metadata["columns_over_limit"] == 1
    assert "'b': 0.5" in bad.description

    nothing = check_null_rates(lf, {})
    assert nothing.passed and nothing.metadata["columns_checked"] == 0


def test_out_of_step_silver_schema_is_an_error_not_an_assert(monkeypatch, tiny_spec):
    assert list(expected_silver_schema(tiny_spec)) == quality.silver_columns(tiny_spec)
    monkeypatch.setattr(quality, "silver_columns", lambda table: ["something", "else"])
    with pytest.raises(SchemaDriftError, match="out of step"):
        expected_silver_schema(tiny_spec)


# ------------------------------------------------------------------------- on real tables (tiny spec)
@pytest.fixture
def tiny_lake(tmp_path, lake: Lake, tiny_spec: DatasetSpec) -> Lake:
    """The tiny dataset ingested, cleansed and featurized on real Delta tables."""
    write_file(tmp_path / "landing" / "trips", "a.csv", csv_bytes(TRIPS_ROWS))
    write_file(tmp_path / "landing" / "weather", "w.csv", WEATHER)
    for table in tiny_spec.tables:
        assert ingest(lake, LocalLandingZone(tmp_path / "landing" / table.name), table).rows_ingested > 0
        refresh_silver(lake, table)
    assert refresh_features(lake, tiny_spec).rows_out == len(TRIPS_ROWS)
    return lake


def test_every_verdict_passes_on_clean_tiny_tables(tiny_lake, tiny_spec):
    for table in tiny_spec.tables:
        verdicts = silver_checks(tiny_lake, table)
        assert set(verdicts) == set(CHECK_DESCRIPTIONS)
        assert all(v.passed for v in verdicts.values()), {k: v.description for k, v in verdicts.items() if not v.passed}
        assert all(_numbers(v.metadata) for v in verdicts.values())
    silver = silver_checks(tiny_lake, tiny_spec)
    assert silver["row_counts"].metadata["silver_rows"] == len(TRIPS_ROWS)
    assert _numbers(silver["row_counts"].metadata) == (0, 0, 0)
    features = features_checks(tiny_lake, tiny_spec)
    assert all(v.passed for v in features.values()), {k: v.description for k, v in features.items() if not v.passed}
    assert features["row_counts"].metadata["features_rows"] == len(TRIPS_ROWS)


def test_a_duplicated_silver_row_fails_key_and_row_counts_with_the_numbers(tiny_lake, tiny_spec):
    silver = Tables.silver(tiny_spec.name)
    tiny_lake.append(silver, tiny_lake.scan(silver).head(1).collect())
    verdicts = silver_checks(tiny_lake, tiny_spec)
    assert not verdicts["key_unique"].passed and _numbers(verdicts["key_unique"].metadata) == (1, 0, -1)
    row_counts = verdicts["row_counts"]
    assert not row_counts.passed
    assert row_counts.metadata["difference"] == 1 and _numbers(row_counts.metadata) == (1, 0, -1)
    assert verdicts["schema_matches_spec"].passed and verdicts["null_rates"].passed


def test_features_with_a_missing_row_and_a_leaked_lineage_column_fail(tiny_lake, tiny_spec):
    features = Tables.features(tiny_spec.name)
    frame = tiny_lake.scan(features).collect()
    tiny_lake.overwrite(features, frame.head(frame.height - 1).with_columns(pl.lit("x").alias("_source_file")))
    verdicts = features_checks(tiny_lake, tiny_spec)
    assert not verdicts["row_counts"].passed
    assert verdicts["row_counts"].metadata["difference"] == -1 and _numbers(verdicts["row_counts"].metadata) == (1, 0, -1)
    schema = verdicts["schema_matches_spec"]
    assert not schema.passed and "lineage columns leaked" in schema.description
    assert schema.metadata["lineage_columns_leaked"] == 1 and _numbers(schema.metadata)[0] >= 1


def test_missing_tables_warn_where_they_looked_instead_of_crashing(lake, tiny_spec):
    for verdicts, table in ((silver_checks(lake, tiny_spec), Tables.silver("trips")), (features_checks(lake, tiny_spec), Tables.features("trips"))):
        assert set(verdicts) == set(CHECK_DESCRIPTIONS)
        for verdict in verdicts.values():
            assert not verdict.passed and verdict.warn_only
            assert lake.uri(table) in verdict.description


# --------------------------------------------------------------------------------- the demo shape
def test_demo_silver_passes_and_a_strict_null_limit_fails_on_tailnum(lake, demo_landing, spec):
    for table in spec.tables:
        ingest(lake, LocalLandingZone(demo_landing / table.name), table)
        refresh_silver(lake, table)
    verdicts = silver_checks(lake, spec)
    assert all(v.passed for v in verdicts.values()), {k: v.description for k, v in verdicts.items() if not v.passed}
    rates = check_null_rates(lake.scan(Tables.silver(spec.name)), {"tailnum": 0.0})
    assert not rates.passed and rates.metadata["observed"] > 0 and rates.metadata["margin"] < 0
