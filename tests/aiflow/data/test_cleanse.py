"""Cleansing functions: de-duplication (latest wins), target derivation, rule violations, clipping, the silver/rejected split."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest

from aiflow.data.cleanse import cleanse, clip_outliers, deduplicate, derive_target, flag_violations, silver_columns
from aiflow.spec import DatasetSpec, parse_spec
from tests.aiflow.tiny import utc

SCHEMA = {
    "trip_id": pl.Int64, "carrier": pl.String, "origin": pl.String, "distance": pl.Float64, "seats": pl.Int32,
    "refundable": pl.Boolean, "booked": pl.Date, "delay": pl.Float64, "ts": pl.Datetime("us", "UTC"),
    "event_date": pl.Date, "_source_file": pl.String, "_source_sha256": pl.String, "_source_row": pl.Int64,
    "_batch_id": pl.String, "_ingested_at": pl.Datetime("us", "UTC"),
}

T0 = utc(2024, 5, 1, 12)


def bronze(*rows: dict) -> pl.LazyFrame:
    """Bronze-shaped rows: defaults for every column, overridden per row."""
    out = []
    for i, r in enumerate(rows):
        ts = r.get("ts", utc(2013, 1, 1, 10))
        out.append(
            {"trip_id": i + 1, "carrier": "AA", "origin": "JFK", "distance": 100.0, "seats": 100, "refundable": None,
             "booked": None, "delay": 0.0, "ts": ts, "event_date": ts.date() if ts else None, "_source_file": "a.csv",
             "_source_sha256": "sha-a", "_source_row": i + 1, "_batch_id": "b1", "_ingested_at": T0} | r
        )
    return pl.LazyFrame(out, schema=SCHEMA)


# ---------------------------------------------------------------------------------- deduplicate
@pytest.mark.parametrize("newest_first", [True, False])
def test_deduplicate_keeps_the_latest_ingested_row(tiny_spec, newest_first):
    old = {"trip_id": 7, "delay": 1.0, "_ingested_at": T0, "_source_file": "z-old.csv"}
    new = {"trip_id": 7, "delay": 99.0, "_ingested_at": T0 + dt.timedelta(hours=1), "_source_file": "a-new.csv"}
    other = {"trip_id": 8, "delay": 5.0}
    rows = [new, old, other] if newest_first else [other, old, new]
    out = deduplicate(bronze(*rows), tiny_spec).collect()
    assert dict(zip(out["trip_id"], out["delay"], strict=True)) == {7: 99.0, 8: 5.0}


def test_deduplicate_ties_on_ingest_time_go_to_the_later_file_then_row(tiny_spec):
    rows = [
        {"trip_id": 1, "delay": 2.0, "_source_file": "b.csv", "_source_row": 1},
        {"trip_id": 1, "delay": 1.0, "_source_file": "a.csv", "_source_row": 9},
        {"trip_id": 2, "delay": 4.0, "_source_file": "a.csv", "_source_row": 5},
        {"trip_id": 2, "delay": 3.0, "_source_file": "a.csv", "_source_row": 2},
    ]
    out = deduplicate(bronze(*rows), tiny_spec).collect()
    assert dict(zip(out["trip_id"], out["delay"], strict=True)) == {1: 2.0, 2: 4.0}


def test_deduplicate_uses_the_whole_key(tiny_dict):
    tiny_dict["key"] = ["trip_id", "origin"]
    spec = parse_spec(tiny_dict)
    out = deduplicate(bronze({"trip_id": 1, "origin": "JFK"}, {"trip_id": 1, "origin": "EWR"}), spec).collect()
    assert out.height == 2


# -------------------------------------------------------------------------------- derive_target
@pytest.mark.parametrize(
    ("when_null", "expected_for_null"), [("positive", 1), ("negative", 0), ("quarantine", None)]
)
def test_threshold_target_and_null_rule(tiny_dict, when_null, expected_for_null):
    tiny_dict["target"]["when_null"] = when_null
    spec = parse_spec(tiny_dict)
    delays = [-5.0, 15.0, 15.5, 120.0, None]
    out = derive_target(bronze(*({"delay": d} for d in delays)), spec).collect()
    assert out.schema["late"] == pl.Int8
    assert out["late"].to_list() == [0, 0, 1, 1, expected_for_null]


def test_identity_target_is_the_value(tiny_dict):
    tiny_dict.update(problem_type="regression", target={"name": "minutes_late", "source": "delay", "kind": "identity"})
    spec = parse_spec(tiny_dict)
    out = derive_target(bronze({"delay": 12.5}, {"delay": None}), spec).collect()
    assert out["minutes_late"].to_list() == [12.5, None]
    assert out.schema["minutes_late"] == pl.Float64


# ------------------------------------------------------------------------------ flag_violations
@pytest.mark.parametrize(
    ("row", "rule", "reason_parts"),
    [
        pytest.param({"carrier": None}, "not_null:carrier", ["column 'carrier' is null"], id="null"),
        pytest.param({"distance": 0.5}, "range:distance", ["column 'distance' = 0.5", "outside [1.0, 10000.0]"], id="below-min"),
        pytest.param({"distance": 20000.0}, "range:distance", ["column 'distance' = 20000.0", "outside"], id="above-max"),
        pytest.param({"carrier": None, "distance": 0.0}, "not_null:carrier", ["'carrier'"], id="first-rule-wins"),
        pytest.param({"distance": 1.0}, None, None, id="min-is-inclusive"),
        pytest.param({"distance": 10000.0}, None, None, id="max-is-inclusive"),
        pytest.param({"distance": None}, None, None, id="null-is-not-out-of-range"),
    ],
)
def test_flag_violations_names_the_rule_and_reason(tiny_spec, row, rule, reason_parts):
    out = flag_violations(bronze(row), tiny_spec).collect().row(0, named=True)
    assert out["_rule"] == rule
    if reason_parts is None:
        assert out["_reason"] is None
    else:
        for part in reason_parts:
            assert part in out["_reason"]


def test_flag_violations_checks_the_target_when_given(tiny_dict):
    tiny_dict["target"]["when_null"] = "quarantine"
    spec = parse_spec(tiny_dict)
    lf = derive_target(bronze({"delay": None}, {"delay": 3.0}), spec)
    out = flag_violations(lf, spec, "late").collect()
    assert out["_rule"].to_list() == ["target_null:late", None]
    assert "target 'late'" in out["_reason"][0]


def test_flag_violations_without_rules_flags_nothing(tiny_dict):
    tiny_dict["quality"] = {}
    out = flag_violations(bronze({"carrier": None}), parse_spec(tiny_dict)).collect()
    assert out["_rule"].to_list() == [None] and out["_reason"].to_list() == [None]


# -------------------------------------------------------------------------------- clip_outliers
def test_clip_outliers_clips_into_bounds_and_keeps_the_type(tiny_spec):
    out = clip_outliers(bronze({"distance": 4999.0}, {"distance": 5000.0}, {"distance": 7500.0}, {"distance": None}), tiny_spec).collect()
    assert out["distance"].to_list() == [4999.0, 5000.0, 5000.0, None]
    assert out.schema["distance"] == pl.Float64
    assert out.height == 4


def test_clip_outliers_lower_bound_on_an_int_column(tiny_dict):
    tiny_dict["quality"]["clip"] = {"seats": {"min": 10, "max": 300}}
    out = clip_outliers(bronze({"seats": 2}, {"seats": 50}, {"seats": 900}), parse_spec(tiny_dict)).collect()
    assert out["seats"].to_list() == [10, 50, 300]
    assert out.schema["seats"] == pl.Int32


# -------------------------------------------------------------------------------------- cleanse
def test_cleanse_splits_valid_and_rejected_and_counts_add_up(tiny_spec: DatasetSpec):
    rows = [
        {"trip_id": 1, "delay": 30.0, "distance": 6000.0},  # valid, clipped, late
        {"trip_id": 2, "delay": None},  # valid: null delay is a positive label
        {"trip_id": 3, "carrier": None},  # rejected: not_null
        {"trip_id": 4, "distance": 0.0},  # rejected: range
        {"trip_id": 5, "delay": 1.0, "_ingested_at": T0},  # superseded by the next row
        {"trip_id": 5, "delay": 2.0, "_ingested_at": T0 + dt.timedelta(minutes=1)},
    ]
    result = cleanse(bronze(*rows), tiny_spec)
    valid, rejected = result.valid.collect(), result.rejected.collect()

    assert valid.columns == silver_columns(tiny_spec)
    assert sorted(valid["trip_id"].to_list()) == [1, 2, 5]
    by_id = {r["trip_id"]: r for r in valid.iter_rows(named=True)}
    assert by_id[1]["distance"] == 5000.0 and by_id[1]["late"] == 1
    assert by_id[2]["late"] == 1
    assert by_id[5]["delay"] == 2.0 and by_id[5]["late"] == 0

    assert sorted(zip(rejected["_source_row"], rejected["_rule"], strict=True)) == [(3, "not_null:carrier"), (4, "range:distance")]
    assert set(rejected["_stage"]) == {"cleanse"}
    record = json.loads(rejected.filter(pl.col("_source_row") == 4)["_record"][0])
    assert record["trip_id"] == "4" and record["distance"] == "0.0"
    assert rejected["_source_file"].to_list() == ["a.csv", "a.csv"]
    assert rejected["event_date"].to_list() == [dt.date(2013, 1, 1)] * 2

    superseded = len(rows) - valid.height - rejected.height
    assert superseded == 1
    assert valid.height + rejected.height == len({r["trip_id"] for r in rows})


def test_cleanse_quarantines_a_null_target_when_the_spec_says_so(tiny_dict):
    tiny_dict["target"]["when_null"] = "quarantine"
    result = cleanse(bronze({"trip_id": 1, "delay": None}, {"trip_id": 2, "delay": 20.0}), parse_spec(tiny_dict))
    assert result.valid.collect()["trip_id"].to_list() == [2]
    assert result.rejected.collect()["_rule"].to_list() == ["target_null:late"]


def test_cleanse_of_a_side_table_has_no_target(tiny_spec):
    weather = tiny_spec.side("weather")
    lf = pl.LazyFrame(
        {"origin": ["JFK", "JFK"], "temp": [1.0, 2.0], "ts": [utc(2013, 1, 1), utc(2013, 1, 1)],
         "event_date": [dt.date(2013, 1, 1)] * 2, "_source_file": ["w.csv", "w2.csv"], "_source_sha256": ["x", "y"],
         "_source_row": [1, 1], "_batch_id": ["b", "b"], "_ingested_at": [T0, T0]},
        schema_overrides={"ts": pl.Datetime("us", "UTC"), "_ingested_at": pl.Datetime("us", "UTC")},
    )
    result = cleanse(lf, weather)
    valid = result.valid.collect()
    assert valid.columns == ["origin", "temp", "ts", "event_date", "_source_file", "_source_sha256", "_source_row", "_batch_id", "_ingested_at"]
    assert valid["temp"].to_list() == [2.0]  # same key, same ingest time: the later file name wins


def test_cleanse_of_empty_input_is_empty_with_the_silver_schema(tiny_spec):
    result = cleanse(pl.LazyFrame(schema=SCHEMA), tiny_spec)
    valid, rejected = result.valid.collect(), result.rejected.collect()
    assert valid.height == rejected.height == 0
    assert valid.columns == silver_columns(tiny_spec)
    assert valid.schema["late"] == pl.Int8
