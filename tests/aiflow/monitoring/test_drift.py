"""Scope: the drift engine (aiflow.monitoring.drift): verdicts on shifted vs same-distribution windows (numeric,
categorical, a category's share moving), agreement with Evidently's DataDriftPreset on several shapes (demo-like
mixed columns over 1,000 rows; regression-style all-numeric columns under 1,000 rows; the tiny spec's real encoded
features in America/New_York), Evidently's null handling, seeded sampling, method/threshold overrides, errors,
weighted_share, and the HTML report."""

from __future__ import annotations

import copy
import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from aiflow.data.encoding import FeatureState, encode_raw, feature_columns
from aiflow.monitoring.drift import (
    NO_VALUES,
    DriftResult,
    detect_drift,
    drift_report_html,
    preset_verdicts,
    weighted_share,
)
from aiflow.spec import parse_spec
from tests.aiflow.tiny import TINY

DEMO_KINDS = {
    "cat_carrier": "categorical",
    "cat_origin": "categorical",
    "cal_hour": "categorical",
    "num_distance": "numeric",
    "num_dep_delay": "numeric",
    "num_seats": "numeric",
}


def demo_like(rows: int, seed: int, *, shifted: bool = False, share_moves: bool = False) -> pl.DataFrame:
    """Features-table-like frame; ``shifted`` moves num_distance and cal_hour, ``share_moves`` moves cat_carrier's shares."""
    rng = np.random.default_rng(seed)
    carrier_p = [0.4, 0.3, 0.2, 0.1] if not share_moves else [0.2, 0.3, 0.2, 0.3]
    hours = rng.integers(5, 23, rows) if not shifted else rng.integers(12, 24, rows)
    return pl.DataFrame(
        {
            "cat_carrier": (rng.choice(4, rows, p=carrier_p) + 1).astype(np.int32),
            "cat_origin": (rng.integers(0, 4, rows)).astype(np.int32),
            "cal_hour": hours.astype(np.int16),
            "num_distance": rng.normal(0.8 if shifted else 0.0, 1.0, rows).astype(np.float32),
            "num_dep_delay": rng.exponential(1.0, rows).astype(np.float32),
            "num_seats": rng.choice([-1.0, 0.0, 1.0], rows).astype(np.float32),  # low-cardinality numeric
        }
    )


REG_KINDS = {"x_temp": "numeric", "x_pressure": "numeric", "x_wind": "numeric", "region": "categorical", "flag": "categorical"}


def regression_like(rows: int, seed: int, *, shifted: bool = False) -> pl.DataFrame:
    """Small all-numeric regression-style frame with other names and a string category (Evidently's K-S / chi-square regime)."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "x_temp": rng.normal(15.0 + (6.0 if shifted else 0.0), 5.0, rows),
            "x_pressure": rng.normal(1013.0, 8.0, rows),
            "x_wind": rng.gamma(2.0, 3.0, rows),
            "region": rng.choice(["north", "south", "east"], rows, p=[0.2, 0.2, 0.6] if shifted else [0.5, 0.3, 0.2]),
            "flag": rng.choice(["y", "n"], rows),
            "target": rng.normal(0, 1, rows),  # not a drift column: ignored
        }
    )


def verdicts(result: DriftResult) -> dict[str, bool]:
    return dict(zip(result.columns["column"], result.columns["drifted"], strict=True))


@pytest.fixture(scope="module")
def demo_frames() -> dict[str, pl.DataFrame]:
    return {
        "reference": demo_like(6_000, 1),
        "same": demo_like(6_000, 2),
        "shifted": demo_like(6_000, 3, shifted=True),
        "share": demo_like(6_000, 4, share_moves=True),
    }


def test_shifted_window_flags_the_moved_columns_and_a_same_window_flags_none(demo_frames):
    same = detect_drift(demo_frames["reference"], demo_frames["same"], DEMO_KINDS)
    assert same.drifted_columns == [] and same.share == 0.0
    shifted = detect_drift(demo_frames["reference"], demo_frames["shifted"], DEMO_KINDS)
    assert shifted.drifted_columns == ["cal_hour", "num_distance"]
    assert shifted.share == pytest.approx(2 / 6)
    methods = dict(zip(shifted.columns["column"], shifted.columns["method"], strict=True))
    # Evidently's defaults over 1,000 reference rows: JS for categorical and low-cardinality numeric, normed Wasserstein else.
    assert methods == {
        "cat_carrier": "jensenshannon",
        "cat_origin": "jensenshannon",
        "cal_hour": "jensenshannon",
        "num_distance": "wasserstein",
        "num_dep_delay": "wasserstein",
        "num_seats": "jensenshannon",
    }
    assert shifted.columns["threshold"].to_list() == [0.1] * 6
    assert (shifted.reference_rows, shifted.current_rows, shifted.current_rows_total, shifted.sampled) == (6000, 6000, 6000, False)


def test_only_a_category_share_moving_is_flagged(demo_frames):
    result = detect_drift(demo_frames["reference"], demo_frames["share"], DEMO_KINDS)
    assert result.drifted_columns == ["cat_carrier"]  # same categories, different shares


@pytest.mark.parametrize("window", ["same", "shifted", "share"])
def test_fast_path_agrees_with_evidently_preset_on_demo_like_frames(demo_frames, window):
    ours = detect_drift(demo_frames["reference"], demo_frames[window], DEMO_KINDS, max_rows=None)
    assert verdicts(ours) == preset_verdicts(demo_frames["reference"], demo_frames[window], DEMO_KINDS)


@pytest.mark.parametrize("shifted", [False, True])
def test_small_regression_frames_use_evidently_small_sample_tests_and_agree_with_preset(shifted):
    reference, current = regression_like(400, 12), regression_like(300, 13, shifted=shifted)
    result = detect_drift(reference, current, REG_KINDS)
    methods = dict(zip(result.columns["column"], result.columns["method"], strict=True))
    # Under 1,000 reference rows Evidently switches to p-value tests: K-S, chi-square, and Z for two categories.
    assert methods == {"x_temp": "ks", "x_pressure": "ks", "x_wind": "ks", "region": "chisquare", "flag": "z"}
    assert result.columns["threshold"].to_list() == [0.05] * 5
    assert result.drifted_columns == (["x_temp", "region"] if shifted else [])
    assert verdicts(result) == preset_verdicts(reference, current, REG_KINDS)


def test_tiny_spec_encoded_features_in_another_time_zone():
    spec = parse_spec(copy.deepcopy(TINY), "tiny")
    state = FeatureState(vocab={"carrier": ["AA", "DL", "UA"], "origin": ["EWR", "JFK", "LGA"]}, stats={"distance": (1000.0, 500.0)})
    rng = np.random.default_rng(5)

    def records(n: int, start_hour: int) -> pl.DataFrame:
        base = dt.datetime(2013, 3, 1, tzinfo=dt.UTC)
        return pl.DataFrame(
            {
                "trip_id": np.arange(n),
                "carrier": rng.choice(["AA", "DL", "UA", "ZZ"], n),
                "origin": rng.choice(["EWR", "JFK", "LGA"], n),
                "distance": rng.uniform(100, 3000, n),
                "seats": rng.integers(50, 300, n),
                "ts": [
                    base + dt.timedelta(days=int(d), hours=start_hour + int(h))
                    for d, h in zip(rng.integers(0, 60, n), rng.integers(0, 6, n), strict=True)
                ],
            }
        )

    reference = encode_raw(records(3_000, 10), state, spec)  # 10:00-15:59 UTC = morning in New York
    current = encode_raw(records(2_000, 20), state, spec)  # 20:00-01:59 UTC = evening in New York
    columns = feature_columns(spec)
    kinds = {c: "categorical" for c in [*columns.categorical, *columns.calendar]} | {c: "numeric" for c in columns.numeric}
    result = detect_drift(reference, current, kinds)
    assert set(result.columns["column"]) == set(kinds)
    # The evening shift moves the local hour (and, past midnight in New York only for some rows, nothing else systematically).
    assert "cal_hour" in result.drifted_columns
    assert "cat_carrier" not in result.drifted_columns and "num_distance" not in result.drifted_columns
    assert verdicts(result) == preset_verdicts(reference, current, kinds)


def test_nulls_nan_and_inf_are_dropped_as_evidently_does(demo_frames):
    reference = demo_frames["reference"]
    current = demo_frames["shifted"].with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.col("cat_carrier")).alias("cat_carrier"),
        pl.when(pl.int_range(pl.len()) % 4 == 0).then(float("nan")).otherwise(pl.col("num_distance")).alias("num_distance"),
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(float("inf")).otherwise(pl.col("num_dep_delay")).alias("num_dep_delay"),
    )
    result = detect_drift(reference, current, DEMO_KINDS)
    # A third of the carriers missing and 20 % of delays infinite: not drift once dropped (as in Evidently).
    assert result.drifted_columns == ["cal_hour", "num_distance"]
    assert verdicts(result) == preset_verdicts(reference, current, DEMO_KINDS)
    # A column with no values left is reported as not tested instead of failing the whole window.
    empty = current.with_columns(pl.lit(None, dtype=pl.Float32).alias("num_seats"))
    row = detect_drift(reference, empty, DEMO_KINDS).columns.row(5, named=True)
    assert (row["column"], row["method"], row["score"], row["drifted"]) == ("num_seats", NO_VALUES, None, False)


def test_current_is_sampled_to_max_rows_with_a_seed(demo_frames):
    big = pl.concat([demo_frames["shifted"]] * 5)  # 30,000 rows
    first = detect_drift(demo_frames["reference"], big, DEMO_KINDS, max_rows=2_500, seed=7)
    again = detect_drift(demo_frames["reference"], big, DEMO_KINDS, max_rows=2_500, seed=7)
    other = detect_drift(demo_frames["reference"], big, DEMO_KINDS, max_rows=2_500, seed=8)
    full = detect_drift(demo_frames["reference"], big, DEMO_KINDS, max_rows=None)
    assert (first.reference_rows, first.current_rows, first.current_rows_total, first.sampled, first.seed) == (2500, 2500, 30000, True, 7)
    assert first.columns.equals(again.columns)
    assert not first.columns["score"].equals(other.columns["score"])  # the seed is really used
    assert full.current_rows == 30000 and not full.sampled
    assert first.drifted_columns == full.drifted_columns == ["cal_hour", "num_distance"]


def test_method_and_threshold_overrides(demo_frames):
    reference, current = demo_frames["reference"], demo_frames["same"]
    result = detect_drift(reference, current, DEMO_KINDS, stattests={"num_distance": "psi", "cat_origin": "chisquare"})
    rows = {r["column"]: r for r in result.columns.iter_rows(named=True)}
    assert rows["num_distance"]["method"] == "psi" and rows["num_distance"]["threshold"] == 0.1
    assert rows["cat_origin"]["method"] == "chisquare" and rows["cat_origin"]["threshold"] == 0.05
    assert rows["num_dep_delay"]["method"] == "wasserstein"  # others keep Evidently's choice

    everywhere = detect_drift(reference, current, DEMO_KINDS, stattest="psi", stattests={"cal_hour": "jensenshannon"})
    assert everywhere.columns["method"].to_list() == ["psi", "psi", "jensenshannon", "psi", "psi", "psi"]

    strict = detect_drift(reference, current, DEMO_KINDS, threshold=0.0)
    assert strict.columns["threshold"].to_list() == [0.0] * 6
    assert strict.share == 1.0  # any distance >= 0 drifts


def test_unknown_method_names_the_column_and_lists_valid_names(demo_frames):
    with pytest.raises(ValueError, match=r"column 'num_distance' \(numeric\): unknown drift method 'wassersten'.*wasserstein"):
        detect_drift(demo_frames["reference"], demo_frames["same"], DEMO_KINDS, stattests={"num_distance": "wassersten"})
    with pytest.raises(ValueError, match=r"column 'cat_carrier' .*unknown drift method 'bogus'.*jensenshannon"):
        detect_drift(demo_frames["reference"], demo_frames["same"], DEMO_KINDS, stattest="bogus")
    with pytest.raises(ValueError, match=r"\['num_nope'\] that are not drift columns"):
        detect_drift(demo_frames["reference"], demo_frames["same"], DEMO_KINDS, stattests={"num_nope": "psi"})


def test_missing_column_empty_current_and_bad_kinds_are_clear_errors(demo_frames):
    reference = demo_frames["reference"]
    with pytest.raises(ValueError, match=r"\['num_seats'\] missing from the current data"):
        detect_drift(reference, demo_frames["same"].drop("num_seats"), DEMO_KINDS)
    with pytest.raises(ValueError, match=r"\['cal_hour'\] missing from the reference data"):
        detect_drift(reference.drop("cal_hour"), demo_frames["same"], DEMO_KINDS)
    with pytest.raises(ValueError, match="current data has no rows"):
        detect_drift(reference, demo_frames["same"].head(0), DEMO_KINDS)
    with pytest.raises(ValueError, match=r"unknown column kind.*'cal_hour': 'calendar'"):
        detect_drift(reference, demo_frames["same"], {**DEMO_KINDS, "cal_hour": "calendar"})
    with pytest.raises(ValueError, match=r"column 'region' in the reference data is String, a numeric column must be numeric"):
        detect_drift(regression_like(50, 1), regression_like(50, 2), {"region": "numeric"})


def test_weighted_share_by_hand():
    table = pl.DataFrame(
        {
            "column": ["a", "b", "c", "d"],
            "kind": ["numeric"] * 4,
            "method": ["wasserstein"] * 4,
            "score": [0.3, 0.01, 0.2, 0.0],
            "threshold": [0.1] * 4,
            "drifted": [True, False, True, False],
        }
    )
    result = DriftResult(columns=table, share=0.5, reference_rows=10, current_rows=10, current_rows_total=10, sampled=False, seed=0)
    # a (0.5) and c (0.1) drifted out of 0.5 + 0.3 + 0.1 + 0 (d has no importance): 0.6 / 0.9.
    assert weighted_share(result, {"a": 0.5, "b": 0.3, "c": 0.1, "zz": 5.0}) == pytest.approx(0.6 / 0.9)
    assert weighted_share(result, {"b": 1.0}) == 0.0
    assert weighted_share(result, {}) == 0.5  # all-zero importance: the plain share
    assert weighted_share(result, {"a": 0.0, "b": 0.0}) == 0.5
    assert math.isclose(weighted_share(result, {"a": 1.0, "c": 1.0}), 1.0)


def test_html_report_is_evidently_and_names_the_columns(demo_frames):
    html = drift_report_html(
        demo_frames["reference"], demo_frames["shifted"], DEMO_KINDS, stattests={"num_distance": "psi"}, max_rows=2_000
    )
    assert html.lstrip().lower().startswith("<!doctype html>") and "DATA DRIFT" in html
    for column in DEMO_KINDS:
        assert column in html
    assert '"column_name": "num_distance", "column_type": "num", "stattest_name": "PSI"' in html  # the override reached the report
    with pytest.raises(ValueError, match="column 'num_distance'"):
        drift_report_html(demo_frames["reference"], demo_frames["shifted"], DEMO_KINDS, stattests={"num_distance": "nope"})
