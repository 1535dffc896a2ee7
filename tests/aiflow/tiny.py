"""A tiny hand-written dataset spec and helpers to build small landing files for the engine tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

#: A small dataset spec (a main table and one side table) that exercises every engine feature.
TINY: dict = {
    "name": "trips",
    "landing": {"uri": "landing/trips", "null_values": ["NA", ""]},
    "columns": {
        "trip_id": {"type": "int64"},
        "carrier": {"type": "string"},
        "origin": {"type": "string"},
        "distance": {"type": "float64"},
        "seats": {"type": "int32", "required": False},
        "refundable": {"type": "bool", "required": False},
        "booked": {"type": "date", "required": False},
        "delay": {"type": "float64", "required": False},
        "ts": {"type": "datetime"},
    },
    "key": ["trip_id"],
    "event_time": "ts",
    "timezone": "America/New_York",
    "quality": {
        "not_null": ["carrier"],
        "ranges": {"distance": {"min": 1, "max": 10000}},
        "clip": {"distance": {"max": 5000}},
    },
    "problem_type": "classification",
    "target": {"name": "late", "source": "delay", "kind": "threshold", "threshold": 15, "when_null": "positive"},
    "known_after_event": ["delay"],
    "features": {
        "categorical": ["carrier", "origin"],
        "numeric": ["distance", "seats"],
        "calendar": ["hour", "weekday", "month", "day_of_year"],
    },
    "side_tables": [
        {
            "name": "weather",
            "landing": {"uri": "landing/weather"},
            "columns": {"origin": {"type": "string"}, "temp": {"type": "float64", "required": False}, "ts": {"type": "datetime"}},
            "key": ["origin", "ts"],
            "event_time": "ts",
        }
    ],
    "joins": [{"table": "weather", "by": ["origin"], "tolerance": "3h", "columns": ["temp"]}],
    "split": {"valid_from": "2013-10-01", "test_from": "2013-11-15"},
}

#: Header and rows of a clean CSV file for the tiny spec (two UTC dates).
TRIPS_HEADER = "trip_id,carrier,origin,distance,seats,refundable,booked,delay,ts"
TRIPS_ROWS = [
    "1,AA,JFK,100.5,120,yes,2012-12-01,3.0,2013-01-01T10:00:00Z",
    "2,UA,EWR,2000,180,no,2012-12-02,NA,2013-01-01T23:30:00Z",
    "3,AA,LGA,733,,,,45.5,2013-01-02T01:15:00Z",
]


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def csv_bytes(rows: list[str], header: str = TRIPS_HEADER) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def write_file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def frame_rows(df: pl.DataFrame, by: list[str]) -> list[dict]:
    """Rows of a frame in a stable order, for content comparisons (no rows: an empty list)."""
    return df.sort(by, nulls_last=True).to_dicts() if df.height else []
