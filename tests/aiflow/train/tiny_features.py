"""The tiny spec's features shape for training tests: its regression variant, and feature rows built from planted
signals (shared by the baseline and layout-independence tests)."""

from __future__ import annotations

import copy
import datetime as dt

import numpy as np
import polars as pl

from aiflow.data.features import output_schema
from aiflow.spec import DatasetSpec, parse_spec
from tests.aiflow.tiny import TINY

START = dt.date(2013, 9, 1)  # the tiny split: train before 1 October, valid until 15 November
DAYS = 75


def regression_spec() -> DatasetSpec:
    data = copy.deepcopy(TINY)
    data["problem_type"] = "regression"
    data["target"] = {"name": "delay_minutes", "source": "delay", "kind": "identity", "when_null": "quarantine"}
    return parse_spec(data, "tiny regression")


def event_times(rng: np.random.Generator, rows: int) -> list[dt.datetime]:
    """``rows`` sorted UTC event times over the tiny split's ``DAYS`` days from ``START``."""
    minutes = np.sort(rng.integers(0, DAYS * 1440, rows))
    return [dt.datetime.combine(START, dt.time(), dt.UTC) + dt.timedelta(minutes=int(m)) for m in minutes]


def features_frame(
    spec: DatasetSpec, rng: np.random.Generator, ts: list[dt.datetime], target, *, carrier: np.ndarray, distance: np.ndarray
) -> pl.DataFrame:
    """Features rows of the spec's output schema; the other inputs (origin, seats, temperature) are drawn from ``rng``."""
    rows = len(ts)
    columns = {
        "trip_id": np.arange(rows), "ts": ts, spec.target.name: target,
        "cat_carrier": carrier, "cat_origin": rng.integers(0, 4, rows), "num_distance": distance,
        "num_seats": rng.normal(size=rows), "num_weather_temp": rng.normal(size=rows),
        "cal_hour": [t.hour for t in ts], "cal_weekday": [t.isoweekday() for t in ts], "cal_month": [t.month for t in ts],
        "cal_day_of_year": [t.timetuple().tm_yday for t in ts], "event_date": [t.date() for t in ts],
    }  # fmt: skip
    schema = output_schema(spec)
    return pl.DataFrame({name: pl.Series(name, values).cast(schema[name]) for name, values in columns.items()}).select(list(schema))
