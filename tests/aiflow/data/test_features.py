"""Feature functions: calendar features in the dataset timezone, as-of side joins, fitted encoders, no leakage."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from aiflow.data.features import (
    FeatureState,
    add_calendar,
    build_features,
    encode,
    feature_columns,
    fit_state,
    join_side_tables,
    numeric_inputs,
    output_columns,
    side_dates_affected,
    side_window,
    training_window,
)
from aiflow.spec import DatasetSpec, parse_spec
from aiflow.storage.lake import Tables
from tests.aiflow.tiny import utc

UTC_TS = pl.Datetime("us", "UTC")


def silver(rows: list[dict]) -> pl.LazyFrame:
    """Silver-shaped rows of the tiny spec (only the columns features use)."""
    full = [
        {"trip_id": i + 1, "carrier": "AA", "origin": "JFK", "distance": 100.0, "seats": 100, "late": 0}
        | r
        | {"event_date": r.get("ts", utc(2013, 1, 1)).date()}
        for i, r in enumerate(rows)
    ]
    for r in full:
        r.setdefault("ts", utc(2013, 1, 1))
    schema = {"trip_id": pl.Int64, "carrier": pl.String, "origin": pl.String, "distance": pl.Float64, "seats": pl.Int32,
              "late": pl.Int8, "ts": UTC_TS, "event_date": pl.Date}
    return pl.LazyFrame(full, schema=schema)


def weather(rows: list[tuple[str, dt.datetime, float | None]]) -> pl.LazyFrame:
    return pl.LazyFrame(
        {"origin": [r[0] for r in rows], "ts": [r[1] for r in rows], "temp": [r[2] for r in rows],
         "event_date": [r[1].date() for r in rows]},
        schema={"origin": pl.String, "ts": UTC_TS, "temp": pl.Float64, "event_date": pl.Date},
    )


# ------------------------------------------------------------------------------------- calendar
def test_calendar_uses_the_dataset_timezone(tiny_spec):
    out = add_calendar(silver([{"ts": utc(2013, 1, 1, 10)}]), tiny_spec).collect()
    assert out["cal_hour"].to_list() == [5]  # 10:00 UTC is 05:00 in New York


@pytest.mark.parametrize("timezone", ["America/New_York", "UTC", "Asia/Kolkata"])
@pytest.mark.parametrize(
    "ts",
    [utc(2013, 1, 1, 10), utc(2013, 1, 1, 3), utc(2013, 7, 1, 3, 30), utc(2013, 3, 10, 7), utc(2012, 12, 31, 23, 59)],
    ids=["morning", "previous-local-day", "summer-time", "dst-switch", "year-end"],
)
def test_calendar_parts_match_the_local_clock(tiny_dict, timezone, ts):
    tiny_dict["timezone"] = timezone
    spec = parse_spec(tiny_dict)
    out = add_calendar(silver([{"ts": ts}]), spec).collect().row(0, named=True)
    local = ts.astimezone(zoneinfo.ZoneInfo(timezone))
    assert out["cal_hour"] == local.hour
    assert out["cal_weekday"] == local.isoweekday()
    assert out["cal_month"] == local.month
    assert out["cal_day_of_year"] == local.timetuple().tm_yday


def test_calendar_crossing_midnight_in_new_york(tiny_spec):
    out = add_calendar(silver([{"ts": utc(2013, 1, 1, 3)}]), tiny_spec).collect().row(0, named=True)
    # 03:00 UTC on 1 January is 22:00 on Monday 31 December 2012 in New York
    assert (out["cal_hour"], out["cal_weekday"], out["cal_month"], out["cal_day_of_year"]) == (22, 1, 12, 366)


# --------------------------------------------------------------------------------- as-of join
WEATHER = [
    ("EWR", utc(2013, 1, 1, 8), 10.0),
    ("EWR", utc(2013, 1, 1, 9), 11.0),
    ("JFK", utc(2013, 1, 1, 9, 30), 20.0),
]

# (origin, departure, expected temp)
ASOF_CASES = [
    ("EWR", utc(2013, 1, 1, 9, 45), 11.0),  # latest row before
    ("EWR", utc(2013, 1, 1, 9), 11.0),  # a row at the same instant counts
    ("EWR", utc(2013, 1, 1, 8, 30), 10.0),
    ("EWR", utc(2013, 1, 1, 11, 59), 11.0),  # within 3h
    ("EWR", utc(2013, 1, 1, 12, 1), None),  # beyond 3h
    ("EWR", utc(2013, 1, 1, 7, 59), None),  # nothing before
    ("JFK", utc(2013, 1, 1, 9, 15), None),  # the JFK row is later; EWR's rows are another group
    ("JFK", utc(2013, 1, 1, 12, 29), 20.0),
    ("LGA", utc(2013, 1, 1, 10), None),  # no weather at all for this origin
]


def test_asof_join_takes_the_latest_side_row_within_tolerance(tiny_spec):
    rows = [{"trip_id": i, "origin": o, "ts": t} for i, (o, t, _) in enumerate(ASOF_CASES)]
    out = join_side_tables(silver(rows), {"weather": weather(WEATHER)}, tiny_spec).collect()
    got = dict(zip(out["trip_id"], out["weather_temp"], strict=True))
    assert got == {i: expected for i, (_, _, expected) in enumerate(ASOF_CASES)}
    assert out.height == len(ASOF_CASES)
    assert "_side_event_time" not in out.columns


def test_unmatched_side_values_become_zero_after_scaling(tiny_spec):
    rows = [{"trip_id": i, "origin": o, "ts": t} for i, (o, t, _) in enumerate(ASOF_CASES)]
    sides = {"weather": weather(WEATHER)}
    joined = join_side_tables(silver(rows), sides, tiny_spec)
    state = fit_state(joined, tiny_spec)
    out = build_features(silver(rows), sides, state, tiny_spec).collect()
    by_id = dict(zip(out["trip_id"], out["num_weather_temp"], strict=True))
    mean, std = state.stats["weather_temp"]
    for i, (_, _, expected) in enumerate(ASOF_CASES):
        if expected is None:
            assert by_id[i] == 0.0
        else:
            assert by_id[i] == pytest.approx((expected - mean) / std, abs=1e-5)
    assert out.columns == output_columns(tiny_spec)


# ----------------------------------------------------------------------------- fitted encoders
@pytest.fixture
def fit_rows() -> pl.LazyFrame:
    carriers = ["UA", "AA", "UA", "DL", "UA", "AA", None]
    distances = [100.0, 250.0, 400.0, 1000.0, 75.0, 3000.0, 640.0]
    return silver([{"carrier": c, "distance": d, "seats": 50 + 10 * i} for i, (c, d) in enumerate(zip(carriers, distances, strict=True))]).with_columns(
        pl.lit(5.0).alias("weather_temp")
    )


def test_vocabulary_is_ordered_by_frequency_and_unknown_or_null_encode_to_zero(tiny_spec, fit_rows):
    state = fit_state(fit_rows, tiny_spec)
    assert state.vocab["carrier"] == ["UA", "AA", "DL"]
    assert state.rows == 7
    new = silver([{"carrier": c} for c in ["UA", "AA", "DL", "ZZ", None]]).with_columns(pl.lit(1.0).alias("weather_temp"))
    out = encode(new, state, tiny_spec).collect()
    assert out["cat_carrier"].to_list() == [1, 2, 3, 0, 0]
    assert out.schema["cat_carrier"] == pl.Int32


def test_rare_categories_are_left_out_of_the_vocabulary(tiny_dict, fit_rows):
    tiny_dict["features"]["min_category_count"] = 2
    spec = parse_spec(tiny_dict, "tiny")
    state = fit_state(fit_rows, spec)
    assert state.vocab["carrier"] == ["UA", "AA"]  # DL was seen once
    out = encode(silver([{"carrier": "DL"}]).with_columns(pl.lit(1.0).alias("weather_temp")), state, spec).collect()
    assert out["cat_carrier"].to_list() == [0]


def test_fit_state_standardises_numeric_columns_on_the_fit_data(tiny_spec, fit_rows):
    state = fit_state(fit_rows, tiny_spec)
    out = encode(fit_rows, state, tiny_spec).collect()
    for column in ["num_distance", "num_seats"]:
        values = out[column].cast(pl.Float64)
        assert values.mean() == pytest.approx(0.0, abs=1e-6)
        assert values.std() == pytest.approx(1.0, abs=1e-6)
    raw = fit_rows.collect()["distance"]
    assert state.stats["distance"] == pytest.approx((raw.mean(), raw.std()))


def test_constant_and_null_numerics_encode_to_zero(tiny_spec, fit_rows):
    state = fit_state(fit_rows, tiny_spec)
    assert state.stats["weather_temp"] == (5.0, 1.0)  # zero spread: divide by one, never by zero
    rows = silver([{"distance": None, "seats": None}]).with_columns(pl.lit(5.0).alias("weather_temp"))
    out = encode(rows, state, tiny_spec).collect().row(0, named=True)
    assert (out["num_distance"], out["num_seats"], out["num_weather_temp"]) == (0.0, 0.0, 0.0)


def test_feature_state_round_trips_through_a_frame(tiny_spec, fit_rows):
    state = fit_state(fit_rows, tiny_spec)
    frame = state.to_frame()
    assert FeatureState.from_frame(frame) == state
    assert FeatureState.from_frame(frame.reverse()) == state  # row order does not matter


def test_feature_state_round_trips_through_the_lake(lake, tiny_spec, fit_rows):
    state = fit_state(fit_rows, tiny_spec)
    name = Tables.feature_state(tiny_spec.name)
    lake.overwrite(name, state.to_frame())
    restored = FeatureState.from_frame(lake.scan(name).collect())
    assert restored == state
    new = silver([{"carrier": "DL", "distance": 999.0}]).with_columns(pl.lit(7.0).alias("weather_temp"))
    assert_frame_equal(encode(new, restored, tiny_spec).collect(), encode(new, state, tiny_spec).collect())


def test_empty_feature_state_round_trips():
    assert FeatureState.from_frame(FeatureState().to_frame()) == FeatureState()


# -------------------------------------------------------------------------------- no leakage
def test_no_column_known_after_the_event_is_a_feature(spec: DatasetSpec):
    columns = feature_columns(spec)
    outputs = output_columns(spec)
    forbidden = [*spec.known_after_event, spec.target.source]
    for name in forbidden:
        assert name not in outputs
        for prefix in ("cat_", "num_", "cal_"):
            assert prefix + name not in columns.all
        assert name not in [*spec.features.categorical, *numeric_inputs(spec)]
    assert spec.target.name in outputs and spec.target.name not in columns.all
    assert columns.all == [*columns.categorical, *columns.numeric, *columns.calendar]
    assert "num_weather_temp" in columns.numeric and "cat_carrier" in columns.categorical


def test_build_features_outputs_exactly_the_declared_columns_in_order(tiny_spec):
    rows = [
        {"trip_id": 2, "origin": "EWR", "ts": utc(2013, 1, 2, 9)},
        {"trip_id": 1, "origin": "EWR", "ts": utc(2013, 1, 1, 9)},
        {"trip_id": 3, "origin": "EWR", "ts": utc(2013, 1, 1, 8), "delay": 99.0},
    ]
    lf = silver(rows).with_columns(pl.lit(99.0).alias("delay"))
    sides = {"weather": weather(WEATHER)}
    state = fit_state(join_side_tables(lf, sides, tiny_spec), tiny_spec)
    out = build_features(lf, sides, state, tiny_spec).collect()
    assert out.columns == output_columns(tiny_spec)
    assert "delay" not in out.columns
    assert out["trip_id"].to_list() == [3, 1, 2]


# ------------------------------------------------------------------------------ date windows
def test_training_window_stops_before_validation(tiny_spec):
    rows = [{"ts": utc(2013, 9, 30, 23)}, {"ts": utc(2013, 10, 1)}, {"ts": utc(2013, 12, 1)}]
    out = training_window(silver(rows), tiny_spec).collect()
    assert out["event_date"].to_list() == [dt.date(2013, 9, 30)]


@pytest.mark.parametrize(("tolerance", "reach"), [("3h", 1), ("24h", 1), ("25h", 2), ("2d", 2)])
def test_side_dates_reach_back_by_the_join_tolerance(tiny_dict, tolerance, reach):
    tiny_dict["joins"][0]["tolerance"] = tolerance
    spec = parse_spec(tiny_dict)
    d = dt.date(2013, 1, 10)
    assert side_window([d, d + dt.timedelta(days=2)], spec, "weather") == (d - dt.timedelta(days=reach), d + dt.timedelta(days=2))
    assert side_dates_affected([d], spec, "weather") == [d + dt.timedelta(days=k) for k in range(reach + 1)]


@pytest.mark.parametrize("split", [None, {"kind": "relative", "train_days": 40, "valid_days": 20, "test_days": 10}, {"valid_from": "2012-01-01", "test_from": "2012-02-01"}])
def test_fit_on_training_window_fits_what_joining_everything_then_filtering_fits(tiny_dict, split):
    """The state is fitted on silver's training rows joined to the side tables, instead of on all rows joined and then
    filtered: same windows, same rows, same vocabularies and statistics, for a fixed split, a relative one (windows
    from the newest event date) and a window that holds no row (every row fits, as before)."""
    from aiflow.data.features import fit_on_training_window
    from aiflow.data.split import frame_windows

    if split is not None:
        tiny_dict["split"] = split
    spec = parse_spec(tiny_dict)
    carriers, origins = ["AA", "UA", "DL", "B6"], ["JFK", "EWR", "LGA"]
    start = utc(2013, 8, 1, 3)
    rows = [
        {"ts": start + dt.timedelta(hours=7 * i), "carrier": carriers[(i * 7) % 4 if i < 300 else 3], "origin": origins[i % 3],
         "distance": 100.0 + (i * 37) % 900, "seats": 50 + i % 120}
        for i in range(520)
    ]  # fmt: skip
    readings = [(o, start + dt.timedelta(hours=2 * k), None if k % 11 == 0 else 10.0 + (k * 13) % 25) for k in range(1900) for o in origins[: 1 + k % 3]]
    s, sides = silver(rows), {"weather": weather(readings)}

    base = join_side_tables(s, sides, spec)
    window = training_window(base, spec)
    expected = fit_state(window if window.select(pl.len()).collect().item() else base, spec)
    state, windows = fit_on_training_window(s, sides, spec)

    assert windows == frame_windows(base, spec.split)
    assert state.rows == expected.rows and state.vocab == expected.vocab
    assert state.stats.keys() == expected.stats.keys() and "weather_temp" in state.stats
    for column, stats in expected.stats.items():
        assert state.stats[column] == pytest.approx(stats, rel=1e-12), column
    if split and split.get("valid_from") == "2012-01-01":
        assert state.rows == len(rows)  # no training row: fitted on every row, as before
    else:
        assert 0 < state.rows < len(rows)
