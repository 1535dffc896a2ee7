"""A small monitored world for the loop's tests: a real lake, a really trained and registered champion (with its
reference profile), and an inference log + labels written as the server writes them.

Not the demo: the "rides" dataset has other column names, lives in Asia/Tokyo, comes in a classification and
a regression shape. Four reference weeks train the model; then each served week is drawn from the same
distribution, or shifted (longer rides, hotter weather, another carrier mix, more delays).
"""

from __future__ import annotations

import copy
import datetime as dt
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from aiflow.models.bundle import load_bundle
from aiflow.models.registry import Registry
from aiflow.serving.feedback import record_feedback
from aiflow.serving.inference_log import SCHEMA as LOG_SCHEMA
from aiflow.serving.inference_log import log_table
from aiflow.spec import DatasetSpec, parse_spec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables
from aiflow.train.contract import TrainParams
from aiflow.train.loop import train
from aiflow.train.request import pinned_request
from tests.aiflow.tiny import TINY
from tests.aiflow.train.conftest import run_data_plane

TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")
START = dt.date(2013, 1, 7)  # a Monday
REFERENCE_DAYS = 28
SERVED = START + dt.timedelta(days=REFERENCE_DAYS)  # the first served window (a Monday)
ROWS_PER_DAY = 150
FAST = dict(families=["sklearn"], baseline_max_rows=3000, sklearn_max_iter=40, epochs=1)
CARRIERS, ORIGINS = ["AA", "UA", "DL", "B6"], ["JFK", "EWR", "LGA"]


def rides_spec(problem_type: str = "classification", **monitoring) -> DatasetSpec:
    data = copy.deepcopy(TINY)
    data["name"], data["timezone"] = "rides", "Asia/Tokyo"
    data["landing"]["uri"] = "landing/rides"
    data["side_tables"][0] |= {"name": "rides_weather", "landing": {"uri": "landing/rides_weather"}}
    data["joins"][0]["table"] = "rides_weather"
    data["features"]["calendar"] = ["hour", "weekday"]
    valid_from = START + dt.timedelta(days=21)
    data["split"] = {"valid_from": valid_from.isoformat(), "test_from": (valid_from + dt.timedelta(days=4)).isoformat()}
    if problem_type == "regression":
        data["problem_type"] = "regression"
        data["target"] = {"name": "delay_minutes", "source": "delay", "kind": "identity", "when_null": "quarantine"}
    data["monitoring"] = {"window": "weekly", **monitoring}
    return parse_spec(data, f"rides {problem_type}")


def rides(day: dt.date, n: int, seed: int, *, shifted: bool = False) -> pl.DataFrame:
    """One day of rides (raw columns of the spec); ``shifted`` moves distances, the carrier mix and the delays."""
    rng = np.random.default_rng(seed)
    carrier_p = [0.1, 0.1, 0.1, 0.7] if shifted else [0.4, 0.3, 0.2, 0.1]
    carrier = rng.choice(CARRIERS, n, p=carrier_p)
    distance = rng.gamma(4.0, 300.0 if shifted else 150.0, n).round(1) + 50
    seats = rng.integers(50, 300, n)
    hour = rng.integers(0, 24, n)
    delay = rng.normal(5 + distance / 80 + (carrier == "UA") * 15 + (12 if shifted else 0), 12, n).round(1)
    # the rides happen on ``day`` in Tokyo (the dataset's timezone, where its calendar windows are cut), stored in UTC
    ts = [dt.datetime(day.year, day.month, day.day, int(h), tzinfo=TOKYO).astimezone(dt.UTC) for h in hour]
    return pl.DataFrame(
        {
            "trip_id": np.arange(n) + seed * 10_000, "carrier": carrier, "origin": rng.choice(ORIGINS, n), "distance": distance,
            "seats": seats, "refundable": rng.random(n) < 0.5, "booked": [day - dt.timedelta(days=3)] * n, "delay": delay, "ts": ts,
        }
    )  # fmt: skip


def weather(first: dt.date, days: int, *, shifted: bool = False) -> pl.DataFrame:
    hours = [dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC) + dt.timedelta(hours=h) for h in range(24 * days)]
    rows = [(o, (30.0 if shifted else 5.0) + (h % 24) / 3, t) for h, t in enumerate(hours) for o in ORIGINS]
    return pl.DataFrame(rows, schema=["origin", "temp", "ts"], orient="row")


@dataclass
class World:
    home: Path
    spec: DatasetSpec
    version: int  # the champion

    @property
    def lake(self) -> Lake:
        return Lake(self.home / "lake")

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    def model(self):
        mv = Registry(self.lake).get(self.spec.name, self.version)
        return load_bundle(ArtifactStore(self.artifacts), mv.location(str(self.artifacts)), mv.artifact_sha256, mv.bundle_files)


def build_world(home: Path, spec: DatasetSpec) -> World:
    """Land four reference weeks, run the data plane, train (scikit-learn, fast), register and promote."""
    landing = home / "landing"
    (landing / "rides").mkdir(parents=True, exist_ok=True)
    (landing / "rides_weather").mkdir(parents=True, exist_ok=True)
    for d in range(REFERENCE_DAYS):
        day = START + dt.timedelta(days=d)
        rides(day, ROWS_PER_DAY, seed=d).write_csv(landing / "rides" / f"{day}.csv")
    weather(START - dt.timedelta(days=1), REFERENCE_DAYS + 1).write_csv(landing / "rides_weather" / "reference.csv")
    lake = Lake(home / "lake")
    run_data_plane(lake, landing, spec)
    request = pinned_request(lake, spec, TrainParams(**FAST), str(home / "artifacts"), "world", "test")
    result = train(request, log=lambda _: None)
    registry = Registry(lake)
    mv = registry.register(
        spec.name, artifact_uri=result.artifact_uri, artifact_sha256=result.artifact_sha256,
        training_table=lake.uri(Tables.features(spec.name)), training_version=result.data_version, metrics=result.metrics,
        baseline_metrics=result.naive_metrics, params={}, gate_results={}, gates_passed=True, reason="test",
        artifact_root=str(home / "artifacts"), bundle_files=result.bundle_files, family=result.family,
    )  # fmt: skip
    registry.promote(spec.name, mv.version, reason="test", actor="test")
    return World(home, spec, mv.version)


def serve_week(world: World, week: int, *, shifted: bool, labels: bool = True, rows_per_day: int = ROWS_PER_DAY, version: int | None = None) -> list[str]:
    """Score one served week (``week`` = 0 for the first one) with the champion and log it as the server does;
    send the true labels as feedback. Returns the request ids."""
    model = world.model()
    first = SERVED + dt.timedelta(days=7 * week)
    frames = [rides(first + dt.timedelta(days=d), rows_per_day, seed=1000 + 7 * week + d, shifted=shifted) for d in range(7)]
    raw = pl.concat(frames)
    temps = weather(first - dt.timedelta(days=1), 8, shifted=shifted)
    records = (
        raw.sort("ts")
        .join_asof(temps.rename({"ts": "wts", "temp": "rides_weather_temp"}).sort("wts"), left_on="ts", right_on="wts", by="origin", check_sortedness=False)
        .drop("wts")
    )
    sent = records.drop("delay", "trip_id").with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"), pl.col("booked").cast(pl.String)).to_dicts()
    scores = model.predict_records(sent)
    classification = world.spec.problem_type == "classification"
    ids = [f"w{week}-{i}" for i in range(len(sent))]
    now = dt.datetime.now(dt.UTC)
    import json

    log = pl.DataFrame(
        {
            "request_id": ids, "time": [now] * len(ids), "date": [now.date()] * len(ids), "dataset": [world.spec.name] * len(ids),
            "model_version": [version or world.version] * len(ids), "variant": ["champion"] * len(ids),
            "input": [json.dumps(r) for r in sent], "prediction": [float(s >= 0.5) if classification else float(s) for s in scores],
            "probability": [float(s) for s in scores] if classification else [None] * len(ids),
            "latency_ms": [1.0] * len(ids), "status": ["ok"] * len(ids),
        },
        schema=LOG_SCHEMA,
    )  # fmt: skip
    world.lake.append(log_table(world.spec.name), log, partition_by=["date"])
    if labels:
        truth = records["delay"].to_list()
        pairs = [(rid, float(d > 15) if classification else float(d)) for rid, d in zip(ids, truth, strict=True)]
        record_feedback(world.lake, world.spec.name, pairs, known=lambda got: set(got))
    return ids
