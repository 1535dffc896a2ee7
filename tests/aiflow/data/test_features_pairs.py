"""Scope: join_side_tables (as-of join on the distinct (by, event time) pairs, hash join back) and build_features (main
columns encoded before the sort, side columns after the as-of join) give exactly the values and row order of the
row-by-row pipeline they replaced; the numeric scaling's NaN/null/inf rules. Tiny spec in New York and in Kolkata with
another tolerance, rows shuffled, repeated pairs, null join keys, a gap in the side readings."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from aiflow.data.encoding import FeatureState, add_calendar, encode
from aiflow.data.features import build_features, fit_state, join_side_tables, output_columns
from aiflow.spec import DatasetSpec, parse_spec

UTC_TS = pl.Datetime("us", "UTC")
START = dt.datetime(2013, 3, 9, 18, tzinfo=dt.UTC)  # spans New York's switch to summer time


def _reference_join(lf: pl.LazyFrame, sides: dict[str, pl.LazyFrame], spec: DatasetSpec) -> pl.LazyFrame:
    """The engine's join before 2026-11-29: every row sorted, then as-of joined one by one."""
    time = spec.event_time
    lf = lf.sort(time, *spec.key)
    for join in spec.joins:
        side = (
            sides[join.table]
            .select(*join.by, pl.col(spec.side(join.table).event_time).alias("_t"), *(pl.col(c).alias(f"{join.table}_{c}") for c in join.columns))
            .sort("_t")
        )
        lf = lf.join_asof(side, left_on=time, right_on="_t", by=join.by, strategy="backward", tolerance=join.tolerance, check_sortedness=False).drop("_t")
    return lf


def _rows(n: int, seed: int) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Shuffled silver rows (many share an origin and hour; some have no origin) and hourly-ish weather."""
    rng = random.Random(seed)
    origins = ["JFK", "EWR", "LGA", None]
    silver = pl.LazyFrame(
        {
            "trip_id": rng.sample(range(1, 10 * n), n),
            "carrier": [rng.choice(["AA", "UA", "DL", None]) for _ in range(n)],
            "origin": [rng.choice(origins) for _ in range(n)],
            "distance": [rng.choice([None, float("nan"), rng.uniform(50, 3000)]) for _ in range(n)],
            "seats": [rng.randint(20, 300) for _ in range(n)],
            "late": [rng.randint(0, 1) for _ in range(n)],
            "ts": [START + dt.timedelta(minutes=30 * rng.randint(0, 40)) for _ in range(n)],
        },
        schema={"trip_id": pl.Int64, "carrier": pl.String, "origin": pl.String, "distance": pl.Float64, "seats": pl.Int32,
                "late": pl.Int8, "ts": UTC_TS},
    ).with_columns(pl.col("ts").dt.date().alias("event_date"))
    # readings every 47 min with a 5 h gap (beyond both tolerances), some rows without an origin
    times = [START + dt.timedelta(minutes=m) for m in [*range(-240, 400, 47), *range(700, 1300, 47)]]
    pairs = [(o, t) for t in times for o in ("JFK", "EWR", None) if o or rng.random() < 0.3]
    weather = pl.LazyFrame(
        {"origin": [o for o, _ in pairs], "ts": [t for _, t in pairs],
         "temp": [rng.choice([None, rng.uniform(-5, 30)]) for _ in pairs]},
        schema={"origin": pl.String, "ts": UTC_TS, "temp": pl.Float64},
    ).with_columns(pl.col("ts").dt.date().alias("event_date"))
    return silver, weather


@pytest.fixture(params=["new_york", "kolkata"])
def spec(request, tiny_dict) -> DatasetSpec:
    if request.param == "kolkata":
        tiny_dict["timezone"] = "Asia/Kolkata"
        tiny_dict["joins"][0]["tolerance"] = "50m"
    return parse_spec(tiny_dict)


@pytest.mark.parametrize("seed", [1, 2])
def test_join_equals_a_row_by_row_asof_join(spec, seed):
    silver, weather = _rows(300, seed)
    got = join_side_tables(silver, {"weather": weather}, spec).collect()
    want = _reference_join(silver, {"weather": weather}, spec).collect()
    assert_frame_equal(got, want)
    assert got["weather_temp"].is_not_null().sum() > 50  # the join matched rows, not only nulls


def test_build_features_equals_the_sorted_row_by_row_pipeline(spec):
    silver, weather = _rows(400, 3)
    sides = {"weather": weather}
    state = fit_state(join_side_tables(silver, sides, spec), spec)
    got = build_features(silver, sides, state, spec).collect()
    want = encode(_reference_join(add_calendar(silver, spec), sides, spec), state, spec).select(output_columns(spec)).collect()
    assert_frame_equal(got, want)
    assert got["ts"].is_sorted()


def test_numeric_scaling_maps_null_nan_and_overflow_like_the_float64_rule(tiny_spec):
    values = [None, float("nan"), float("inf"), -float("inf"), 1e300, -1e300, 0.1, 123.456, -7.0]
    frame = pl.LazyFrame({"distance": values, "seats": [1] * len(values), "weather_temp": values, "carrier": ["AA"] * len(values),
                          "origin": ["JFK"] * len(values)})
    state = FeatureState(vocab={}, stats={"distance": (3.0, 2.5), "seats": (0.0, 1.0), "weather_temp": (float("nan"), 1.0)})
    got = encode(frame, state, tiny_spec).select("num_distance", "num_weather_temp").collect()
    want = [0.0, 0.0, float("inf"), -float("inf"), float("inf"), -float("inf")]
    want += [pl.Series([(v - 3.0) / 2.5]).cast(pl.Float32)[0] for v in values[6:]]
    assert got["num_distance"].dtype == pl.Float32
    assert got["num_distance"].to_list() == want
    assert got["num_weather_temp"].to_list() == [0.0] * len(values)  # a NaN mean makes every value NaN → 0
