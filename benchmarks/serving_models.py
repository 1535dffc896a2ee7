"""Homes serving the demo's real models, one per family, for the serving benchmark (issue 22, item "Serving fast on
real models").

The demo's first model (``./scripts/demo``, i.e. ``aiflow replay``) trains on the first 90 days of 2013 with the
demo spec (``aiflow/datasets/flights.yaml``: its relative split, 62 + 14 + 14 days) and the default
hyperparameters. Here the same data goes through the same engine steps the Dagster assets call (ingest, silver,
features; :func:`aiflow.train.loop.train` with ``TrainParams(families=[family])``, so the champion is of the family
asked for), and the bundle is registered and promoted champion, as the deployment assets do. Built once into
``<cache>/serving-<family>/`` (a local aiflow home: ``lake/``, ``artifacts/``, ``flights.yaml``) and reused.

    .venv/bin/python -m benchmarks.serving_models [--family sklearn] [--cache /tmp/aiflow-bench-cache]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the training entrypoint does

import argparse
import datetime as dt
import shutil
import time
from pathlib import Path

import polars as pl
import yaml

from tests.aiflow.serving.conftest import Home

DAYS = 90  # aiflow replay's --first-train default
CACHE = Path("/tmp/aiflow-bench-cache")


def demo_home(family: str, cache: Path = CACHE, log=print) -> Home:
    """A local aiflow home whose ``flights`` champion is the demo's first model trained as ``family`` (built once)."""
    from aiflow.data.demo import write_landing
    from aiflow.models.registry import Registry
    from aiflow.spec import demo_spec_path, load_spec
    from aiflow.train.contract import TrainParams
    from aiflow.train.loop import train
    from aiflow.train.request import pinned_request
    from benchmarks.train_bench import build_lake

    root = cache / f"serving-{family}"
    spec_file, done = root / "flights.yaml", root / ".serving-complete"
    spec = load_spec(demo_spec_path())
    if done.exists():
        return Home(root, {spec.name: spec}, [spec_file])
    shutil.rmtree(root, ignore_errors=True)
    landing = cache / f"serving-landing-{DAYS}d"
    if not (landing / ".complete").exists():
        log(f"landing the demo's first {DAYS} days into {landing}")
        write_landing(landing, days=DAYS)
        (landing / ".complete").touch()
    t = time.perf_counter()
    lake, _ = build_lake(root, landing, spec)  # the home's lake: <root>/lake
    log(f"data plane: {time.perf_counter() - t:.0f} s")
    artifacts = root / "artifacts"
    request = pinned_request(lake, spec, TrainParams(families=[family]), str(artifacts), f"serving-bench-{family}", "benchmark")
    t = time.perf_counter()
    result = train(request, log=lambda line: log(f"  {family}: {line}"))
    log(f"trained {family} in {time.perf_counter() - t:.0f} s: {result.metrics}")
    registry = Registry(lake)
    version = registry.register(
        spec.name, artifact_uri=result.artifact_uri, artifact_sha256=result.artifact_sha256, training_table=result.features_uri,
        training_version=result.data_version, metrics=result.metrics, baseline_metrics=result.naive_metrics, params=result.params,
        gate_results={}, gates_passed=True, reason="benchmark", family=result.family, family_metrics=result.family_metrics,
        bundle_files=result.bundle_files, artifact_root=str(artifacts),
    )  # fmt: skip
    registry.promote(spec.name, version.version, reason="benchmark", actor="benchmark")
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    done.touch()
    return Home(root, {spec.name: spec}, [spec_file])


def demo_records(home: Home, n: int = 500) -> list[dict]:
    """``n`` raw records as an application sends them: the demo's flights (spec columns and the weather values the
    join adds, ``weather_<column>``), the target's source and the columns known only after the event left out."""
    from aiflow.storage.lake import Tables

    spec = home.specs["flights"]
    side = spec.side_tables[0]
    drop = {*spec.known_after_event, spec.target.source}
    flights = home.lake.scan(Tables.silver(spec.name)).collect()
    flights = flights.gather_every(max(1, flights.height // n)).head(n)  # spread over the 90 days
    weather = home.lake.scan(Tables.silver(side.name)).collect()
    cols = spec.joins[0].columns
    joined = flights.sort("origin", "time_hour").join_asof(
        weather.select("origin", "time_hour", *cols).sort("origin", "time_hour").rename({c: f"{side.name}_{c}" for c in cols}),
        on="time_hour", by="origin", strategy="backward", check_sortedness=False,
    )  # fmt: skip
    keep = [c for c in spec.columns if c not in drop] + [f"{side.name}_{c}" for c in cols]
    out = joined.select(keep).with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return out.to_dicts()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=["pytorch", "sklearn"], action="append")
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()
    for family in args.family or ["sklearn", "pytorch"]:
        t = time.perf_counter()
        home = demo_home(family, args.cache, log=lambda m: print(f"[{dt.datetime.now():%H:%M:%S}] {m}", flush=True))
        print(f"{family}: {home.root} ({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
