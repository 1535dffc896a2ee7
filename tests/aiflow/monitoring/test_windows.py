"""Data-time windows: Monday-aligned weeks and other lengths, event times read from logged records (every ISO
shape, escapes and decoys), complete windows, the serving version of a window."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl

from aiflow.monitoring.windows import complete_windows, event_texts, parse_times, serving_version, window_expr


def window_start(day: dt.date, window_days: int) -> dt.date:
    """The window start the monitoring computes (its Polars expression) for one date."""
    return pl.select(window_expr(pl.lit(day), window_days)).item()


def test_weeks_start_on_monday_and_other_lengths_tile_the_calendar():
    assert window_start(dt.date(2013, 4, 7), 7) == dt.date(2013, 4, 1)  # a Sunday → its Monday
    assert [window_start(dt.date(2013, 4, d), 7) for d in (1, 7, 8)] == [dt.date(2013, 4, 1)] * 2 + [dt.date(2013, 4, 8)]
    days = [dt.date(2024, 2, 25) + dt.timedelta(days=i) for i in range(9)]
    starts = [window_start(d, 3) for d in days]
    assert all((b - a).days in (0, 3) for a, b in zip(starts, starts[1:], strict=False))  # contiguous 3-day windows
    assert all(0 <= (d - s).days < 3 for d, s in zip(days, starts, strict=True))


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
