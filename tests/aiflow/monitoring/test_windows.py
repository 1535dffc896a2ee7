"""Data-time windows: calendar days, Monday-aligned weeks and months in the dataset's timezone, event times read from logged records (every ISO
shape, escapes and decoys), complete windows, the serving version of a window."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest

from aiflow.monitoring.windows import complete_windows, event_texts, parse_times, scored_log, serving_version, window_expr
from aiflow.spec import SpecError, parse_spec, window_start_of
from tests.aiflow.tiny import TINY


def window_start(day: dt.date, window: str) -> dt.date:
    """The window start the monitoring computes (its Polars expression) for one date."""
    return pl.select(window_expr(pl.lit(day), window)).item()


def test_windows_are_calendar_days_weeks_from_monday_and_months():
    assert window_start(dt.date(2013, 4, 7), "weekly") == dt.date(2013, 4, 1)  # a Sunday → its Monday
    assert [window_start(dt.date(2013, 4, d), "weekly") for d in (1, 7, 8)] == [dt.date(2013, 4, 1)] * 2 + [dt.date(2013, 4, 8)]
    assert [window_start(d, "monthly") for d in (dt.date(2024, 2, 29), dt.date(2024, 3, 1), dt.date(2024, 12, 31))] == [
        dt.date(2024, 2, 1), dt.date(2024, 3, 1), dt.date(2024, 12, 1),
    ]  # fmt: skip
    assert window_start(dt.date(2024, 2, 29), "daily") == dt.date(2024, 2, 29)
    # the engine's expression and the spec's calendar (the partitions' keys) agree on every day of a leap year
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(366)]
    for window in ("daily", "weekly", "monthly"):
        assert [window_start(d, window) for d in days[::17]] == [window_start_of(d, window) for d in days[::17]]
    spec = parse_spec({**TINY, "monitoring": {"window": "monthly"}}, "tiny")
    assert spec.monitoring.window_bounds(dt.date(2024, 2, 1)) == (dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    assert spec.monitoring.window_bounds(dt.date(2024, 12, 1)) == (dt.date(2024, 12, 1), dt.date(2024, 12, 31))


def test_a_window_that_is_not_a_calendar_period_is_refused_with_the_fix():
    with pytest.raises(SpecError, match=r"window_days: 28 is not a calendar window; write monitoring.window"):
        parse_spec({**TINY, "monitoring": {"window_days": 28}}, "tiny")
    assert parse_spec({**TINY, "monitoring": {"window_days": 7}}, "tiny").monitoring.window == "weekly"  # the old spelling still reads


def test_windows_follow_the_dataset_timezone_not_utc(tmp_path):
    """A record at 23:30 UTC on a Sunday is Monday morning in Tokyo: it belongs to the next week there."""
    from aiflow.serving.inference_log import SCHEMA, log_table
    from aiflow.storage.lake import Lake

    spec = parse_spec({**TINY, "timezone": "Asia/Tokyo"}, "tiny")
    lake = Lake(tmp_path / "lake")
    times = ["2013-04-07T14:00:00Z", "2013-04-07T23:30:00Z"]  # Sunday UTC: Sunday 23:00 and Monday 08:30 in Tokyo
    now = dt.datetime.now(dt.UTC)
    rows = pl.DataFrame(
        {
            "request_id": ["a", "b"], "time": [now] * 2, "date": [now.date()] * 2, "dataset": ["trips"] * 2, "model_version": [1] * 2,
            "variant": ["champion"] * 2, "input": [json.dumps({"ts": t}) for t in times], "prediction": [0.0] * 2,
            "probability": [0.1] * 2, "latency_ms": [1.0] * 2, "status": ["ok"] * 2,
        },
        schema=SCHEMA,
    )  # fmt: skip
    lake.append(log_table("trips"), rows)
    log = scored_log(lake, spec)
    assert log["window_start"].to_list() == [dt.date(2013, 4, 1), dt.date(2013, 4, 8)]
    assert log["event_date"].to_list() == [dt.date(2013, 4, 7), dt.date(2013, 4, 8)]


def test_event_times_are_read_from_records_whatever_their_shape():
    records = [
        {"a": 1, "ts": "2013-04-01T10:00:00Z"},
        {"ts": "2013-04-01T10:00:00+02:00"},
        {"ts": "2013-04-01T10:00:00"},
        {"ts": "2013-04-01 10:00:00.5"},
        {"ts": "2013-04-01"},
        {"note": '"ts": "1999-01-01"', "ts": "2013-04-02T00:00:00Z"},  # a decoy inside another value
        {"ts": 20130401},  # not a string: read by the JSON path, unplaceable
        {"ts": "junk"},
        {"other": 1},
    ]
    texts = event_texts(pl.Series([json.dumps(r) for r in records]), "ts")
    assert texts.to_list() == [
        "2013-04-01T10:00:00Z", "2013-04-01T10:00:00+02:00", "2013-04-01T10:00:00", "2013-04-01 10:00:00.5", "2013-04-01",
        "2013-04-02T00:00:00Z", "20130401", "junk", None,
    ]  # fmt: skip
    utc = dt.UTC
    assert parse_times(texts).to_list() == [
        dt.datetime(2013, 4, 1, 10, tzinfo=utc), dt.datetime(2013, 4, 1, 8, tzinfo=utc), dt.datetime(2013, 4, 1, 10, tzinfo=utc),
        dt.datetime(2013, 4, 1, 10, 0, 0, 500000, tzinfo=utc), dt.datetime(2013, 4, 1, tzinfo=utc), dt.datetime(2013, 4, 2, tzinfo=utc),
        None, None, None,
    ]  # fmt: skip


def test_a_window_is_complete_once_a_later_one_has_data_and_the_champion_serving_most_is_its_version():
    log = pl.DataFrame(
        {
            "event_time": [dt.datetime(2013, 4, d, tzinfo=dt.UTC) for d in (1, 2, 9, 16)] + [None],
            "window_start": [dt.date(2013, 4, 1)] * 2 + [dt.date(2013, 4, 8), dt.date(2013, 4, 15), None],
        }
    )
    assert complete_windows(log) == [dt.date(2013, 4, 1), dt.date(2013, 4, 8)]
    rows = pl.DataFrame({"variant": ["champion", "champion", "champion", "canary"], "model_version": [2, 3, 3, 4]})
    assert serving_version(rows) == 3
